fn main() -> Result<(), Box<dyn std::error::Error>> {
    duet_codegen::configure().compile(&["bench/v1/bench.proto"], &["../proto"])?;
    Ok(())
}
