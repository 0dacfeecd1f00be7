fn main() -> Result<(), Box<dyn std::error::Error>> {
    duet_codegen::configure()
        .compile(&["torture/type/async/names.proto", "torture/core/names.proto"], &["../proto"])?;
    Ok(())
}
