//! The `client` subcommand: one call to a node, and how its answer is printed.

use std::path::PathBuf;
use std::time::Duration;

use clap::Subcommand;
use duet_orchestrator::client::NodeChannel;
use duet_orchestrator::images::Image;
use duet_orchestrator::pb::grpc::health::v1::{HealthCheckRequest, HealthClient};
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusClient, CreateVmRequest, GetClusterStatusRequest, GetMetricsRequest, GetRaftStatusRequest,
    ImageServiceClient, ListImagesRequest, ListVmsRequest, MonitoringClient, PullImageRequest, VmRef, VmServiceClient,
    WatchVmEventsRequest,
};

#[derive(Subcommand)]
pub enum Call {
    /// Cluster members, leader and term.
    Status,
    /// The node's Raft view.
    Raft,
    /// grpc.health.v1 Check.
    Health,
    /// The node's Prometheus metrics.
    Metrics,
    /// List VMs.
    Vms,
    /// Create a VM.
    CreateVm {
        /// Name.
        name: String,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory, MiB.
        #[arg(long, default_value_t = 256)]
        memory_mib: u32,
        /// Image name.
        #[arg(long, default_value = "")]
        image: String,
    },
    /// Start a VM.
    StartVm {
        /// Name.
        name: String,
    },
    /// Stop a VM.
    StopVm {
        /// Name.
        name: String,
    },
    /// Delete a VM.
    DeleteVm {
        /// Name.
        name: String,
    },
    /// Print VM lifecycle events as the node applies them, until Ctrl-C.
    WatchVms,
    /// List images and their holders.
    Images,
    /// Upload a file as an image.
    UploadImage {
        /// Image name.
        name: String,
        /// The file.
        file: PathBuf,
    },
    /// Make the node pull an image from a peer that holds it.
    PullImage {
        /// Image name.
        name: String,
    },
}

pub async fn client_call(conn: &NodeChannel, call: Call) -> Result<(), Box<dyn std::error::Error>> {
    let ch = conn.channel.clone();
    let t = Duration::from_secs(10);
    match call {
        Call::Status => {
            let r = ClusterStatusClient::new(ch)
                .with_default_timeout(t)
                .get_cluster_status(GetClusterStatusRequest {})
                .await?;
            let (via, s) = (via(&r), r.into_inner());
            println!(
                "answered by node {} over {via}: leader {} term {} applied {}",
                s.node_id, s.leader_id, s.term, s.commit_index
            );
            for m in s.members {
                println!("  {} {:<8} voter={} leader={} {}", m.id, m.name, m.voter, m.leader, m.ticket);
            }
        }
        Call::Raft => {
            let r =
                ClusterStatusClient::new(ch).with_default_timeout(t).get_raft_status(GetRaftStatusRequest {}).await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
        Call::Health => {
            let r = HealthClient::new(ch).with_default_timeout(t).check(HealthCheckRequest::default()).await?;
            println!("over {}: {:?}", via(&r), r.into_inner().status());
        }
        Call::Metrics => {
            let r = MonitoringClient::new(ch).with_default_timeout(t).get_metrics(GetMetricsRequest {}).await?;
            print!("{}", r.into_inner().prometheus_text);
        }
        Call::Vms => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).list_vms(ListVmsRequest {}).await?;
            println!("over {}:", via(&r));
            for vm in r.into_inner().vms {
                println!(
                    "  {:<12} {:?} on node {} ({} vCPU, {} MiB, image {:?})",
                    vm.name,
                    vm.state(),
                    vm.host_node,
                    vm.vcpus,
                    vm.memory_mib,
                    vm.image
                );
            }
        }
        Call::CreateVm { name, vcpus, memory_mib, image } => {
            let r = VmServiceClient::new(ch)
                .with_default_timeout(t)
                .create_vm(CreateVmRequest { name, vcpus, memory_mib, image })
                .await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
        Call::StartVm { name } => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).start_vm(VmRef { name }).await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
        Call::StopVm { name } => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).stop_vm(VmRef { name }).await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
        Call::DeleteVm { name } => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).delete_vm(VmRef { name }).await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
        Call::WatchVms => {
            let r = VmServiceClient::new(ch).watch_vm_events(WatchVmEventsRequest {}).await?;
            println!("watching over {} (Ctrl-C to stop):", via(&r));
            let mut events = r.into_inner();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    event = events.message() => match event? {
                        Some(e) => {
                            let vm = e.vm.unwrap_or_default();
                            println!("  {:<12} {:?} on node {} (revision {}, seen by node {})", vm.name, vm.state(), vm.host_node, vm.revision, e.observed_by);
                        }
                        None => break,
                    },
                }
            }
        }
        Call::Images => {
            let r = ImageServiceClient::new(ch).with_default_timeout(t).list_images(ListImagesRequest {}).await?;
            println!("over {}:", via(&r));
            for i in r.into_inner().images {
                println!("  {:<16} {} bytes blake3 {} holders {:?}", i.name, i.size, i.blake3_hex, i.holders);
            }
        }
        Call::UploadImage { name, file } => {
            let image = Image::new(name, std::fs::read(&file)?.into());
            let r = ImageServiceClient::new(ch).with_default_timeout(t * 30).upload_image(image.chunks()).await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
        Call::PullImage { name } => {
            let r =
                ImageServiceClient::new(ch).with_default_timeout(t * 30).pull_image(PullImageRequest { name }).await?;
            println!("over {}: {:?}", via(&r), r.into_inner());
        }
    }
    Ok(())
}

/// Which transport answered.
fn via<T>(response: &duet::Response<T>) -> String {
    response.extensions().get::<duet::Transport>().map_or_else(|| "?".into(), |t| t.to_string())
}
