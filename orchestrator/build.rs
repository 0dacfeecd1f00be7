fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    duet_codegen::configure()
        // Config names as the orchestrator's `[transport.migration]` knows them.
        .config_name("orchestrator.v1.ClusterStatus", "status")
        .config_name("orchestrator.v1.Monitoring", "monitoring")
        .config_name("orchestrator.v1.VmService", "vm")
        .config_name("orchestrator.v1.ImageService", "images")
        .config_name("orchestrator.v1.RaftService", "raft")
        // For gRPC server reflection on the gRPC port.
        .file_descriptor_set_path(out.join("orchestrator_descriptor.bin"))
        .compile(
            &[
                "orchestrator/v1/cluster.proto",
                "orchestrator/v1/vm.proto",
                "orchestrator/v1/image.proto",
                "orchestrator/v1/raft.proto",
            ],
            &["../proto"],
        )?;
    Ok(())
}
