fn main() -> Result<(), Box<dyn std::error::Error>> {
    duet_codegen::configure()
        // The orchestrator's config calls this service "status".
        .config_name("node.v1.NodeStatus", "status")
        .compile(&["grpc/health/v1/health.proto", "node/v1/status.proto"], &["../proto"])?;
    Ok(())
}
