fn main() -> Result<(), Box<dyn std::error::Error>> {
    duet_codegen::configure().compile(
        &["matrix/v1/kinds.proto", "cases/a/v1/common.proto", "cases/b/v1/uses.proto", "grpc/testing/test.proto"],
        &["../proto"],
    )?;
    Ok(())
}
