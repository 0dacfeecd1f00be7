fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    duet_codegen::configure()
        .file_descriptor_set_path(out.join("health_descriptor.bin"))
        .compile(&["grpc/health/v1/health.proto"], &["proto"])?;
    Ok(())
}
