fn main() -> Result<(), Box<dyn std::error::Error>> {
    duet_codegen::configure().compile(&["grpc/health/v1/health.proto", "node/v1/status.proto"], &["../proto"])?;
    Ok(())
}
