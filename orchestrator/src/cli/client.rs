//! The `client` subcommand: one call to a node, and how its answer is printed.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Arg, ArgMatches, FromArgMatches, Subcommand};
use duet_orchestrator::client::NodeChannel;
use duet_orchestrator::images::upload_chunks_from_file;
use duet_orchestrator::pb::grpc::health::v1::{HealthCheckRequest, HealthClient};
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusClient, CreateVmRequest, GetClusterStatusRequest, GetMetricsRequest, GetRaftStatusRequest,
    ImageServiceClient, ListImagesRequest, ListVmsRequest, MonitoringClient, PullImageRequest, RemoveMemberRequest,
    VmRef, VmServiceClient, WatchVmEventsRequest,
};

use super::output::{
    Answer, HealthOut, ImageChangeOut, ImagesOut, MetricsOut, Output, RaftOut, StatusOut, VmChangeOut, VmEventOut,
    VmsOut,
};

/// What `client` does: the call, and the `--output` flag that says how to print its answer.
///
/// `--output` belongs to `client` itself (`client --output json --node … status`), yet the `client`
/// command is declared in `main.rs`: this type adds the flag to it, through clap's [`Subcommand`]
/// hook that receives the parent command, and reads it back from the parent's matches.
#[derive(Debug)]
pub struct Call {
    /// How to print the answer.
    pub output: Output,
    /// The call.
    pub request: Request,
}

/// The flag's clap id.
const OUTPUT: &str = "output";

impl FromArgMatches for Call {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut matches.clone())
    }

    fn from_arg_matches_mut(matches: &mut ArgMatches) -> Result<Self, clap::Error> {
        let output = matches.get_one::<Output>(OUTPUT).copied().unwrap_or_default();
        Ok(Self { output, request: Request::from_arg_matches_mut(matches)? })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        self.update_from_arg_matches_mut(&mut matches.clone())
    }

    fn update_from_arg_matches_mut(&mut self, matches: &mut ArgMatches) -> Result<(), clap::Error> {
        if let Some(output) = matches.get_one::<Output>(OUTPUT) {
            self.output = *output;
        }
        self.request.update_from_arg_matches_mut(matches)
    }
}

impl Subcommand for Call {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        Request::augment_subcommands(cmd.arg(output_arg()))
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Request::augment_subcommands_for_update(cmd.arg(output_arg()))
    }

    fn has_subcommand(name: &str) -> bool {
        Request::has_subcommand(name)
    }
}

/// `--output text|json`.
fn output_arg() -> Arg {
    Arg::new(OUTPUT)
        .long(OUTPUT)
        .value_name("FORMAT")
        .value_parser(clap::value_parser!(Output))
        // Global, so it may follow the call too: `client --node … status --output json`. No clap
        // default: with one, the parent's default could mask a value given after the call.
        .global(true)
        .help("How to print the answer: text (for people, the default) or json (for scripts)")
        .long_help(
            "How to print the answer: text (tables and `key: value` lines, for people; the default) or json \
             (one JSON document on stdout, one object per line for watch-vms, for scripts). Errors go to \
             stderr as one `error: code: message` line either way, with exit status 1",
        )
}

/// One call to a node.
#[derive(Debug, Subcommand)]
pub enum Request {
    /// Cluster members (role, liveness, addresses), leader and term.
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
    /// Remove a member that is gone for good, so it stops counting toward the quorum.
    ///
    /// A member-only call: give the cluster token when the cluster has one, or call over gRPC with a
    /// certificate the cluster's CA signed.
    RemoveMember {
        /// The member's node id.
        id: u64,
        /// The cluster's `node.cluster_token`, sent in `x-cluster-token`.
        #[arg(long)]
        token: Option<String>,
    },
}

/// Makes `call` on the node behind `conn` and prints its answer to stdout; a failed call is the
/// returned error (see [`super::render_error`]).
pub async fn client_call(conn: &NodeChannel, call: Call) -> Result<(), Box<dyn std::error::Error>> {
    let ch = conn.channel.clone();
    let t = Duration::from_secs(10);
    let output = call.output;
    match call.request {
        Request::Status => {
            let r = ClusterStatusClient::new(ch)
                .with_default_timeout(t)
                .get_cluster_status(GetClusterStatusRequest {})
                .await?;
            StatusOut::new(via(&r), r.into_inner()).print(output)?;
        }
        Request::Raft => {
            let r =
                ClusterStatusClient::new(ch).with_default_timeout(t).get_raft_status(GetRaftStatusRequest {}).await?;
            RaftOut::new(via(&r), r.into_inner()).print(output)?;
        }
        Request::Health => {
            let r = HealthClient::new(ch).with_default_timeout(t).check(HealthCheckRequest::default()).await?;
            HealthOut::new(via(&r), r.get_ref().status()).print(output)?;
        }
        Request::Metrics => {
            let r = MonitoringClient::new(ch).with_default_timeout(t).get_metrics(GetMetricsRequest {}).await?;
            MetricsOut { transport: via(&r), prometheus_text: r.into_inner().prometheus_text }.print(output)?;
        }
        Request::Vms => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).list_vms(ListVmsRequest {}).await?;
            let transport = via(&r);
            VmsOut { transport, vms: r.into_inner().vms.into_iter().map(Into::into).collect() }.print(output)?;
        }
        Request::CreateVm { name, vcpus, memory_mib, image } => {
            let r = VmServiceClient::new(ch)
                .with_default_timeout(t)
                .create_vm(CreateVmRequest { name, vcpus, memory_mib, image })
                .await?;
            VmChangeOut { transport: via(&r), vm: r.into_inner().into(), done: "created" }.print(output)?;
        }
        Request::StartVm { name } => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).start_vm(VmRef { name }).await?;
            VmChangeOut { transport: via(&r), vm: r.into_inner().into(), done: "started" }.print(output)?;
        }
        Request::StopVm { name } => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).stop_vm(VmRef { name }).await?;
            VmChangeOut { transport: via(&r), vm: r.into_inner().into(), done: "stopped" }.print(output)?;
        }
        Request::DeleteVm { name } => {
            let r = VmServiceClient::new(ch).with_default_timeout(t).delete_vm(VmRef { name }).await?;
            VmChangeOut { transport: via(&r), vm: r.into_inner().into(), done: "deleted" }.print(output)?;
        }
        Request::WatchVms => {
            let r = VmServiceClient::new(ch).watch_vm_events(WatchVmEventsRequest {}).await?;
            let transport = via(&r);
            // JSON output is events only, one object per line; the banner is for people.
            if output == Output::Text {
                println!("watching over {} (Ctrl-C to stop):", transport.as_deref().unwrap_or("an unknown transport"));
            }
            let mut events = r.into_inner();
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => break,
                    event = events.message() => match event? {
                        Some(e) => VmEventOut::new(transport.clone(), e).print(output)?,
                        None => break,
                    },
                }
            }
        }
        Request::Images => {
            let r = ImageServiceClient::new(ch).with_default_timeout(t).list_images(ListImagesRequest {}).await?;
            let transport = via(&r);
            ImagesOut { transport, images: r.into_inner().images.into_iter().map(Into::into).collect() }
                .print(output)?;
        }
        Request::UploadImage { name, file } => {
            // Read a chunk at a time as the upload goes: an image of any size takes bounded memory.
            let chunks = upload_chunks_from_file(&file, name).await?;
            let r = ImageServiceClient::new(ch).with_default_timeout(t * 30).upload_image(chunks).await?;
            ImageChangeOut { transport: via(&r), image: r.into_inner().into(), done: "uploaded" }.print(output)?;
        }
        Request::PullImage { name } => {
            let r =
                ImageServiceClient::new(ch).with_default_timeout(t * 30).pull_image(PullImageRequest { name }).await?;
            ImageChangeOut { transport: via(&r), image: r.into_inner().into(), done: "pulled" }.print(output)?;
        }
        Request::RemoveMember { id, token } => {
            let mut request = duet::Request::new(RemoveMemberRequest { id });
            if let Some(token) = token {
                let value = token.parse().map_err(|_| "the cluster token is not valid ASCII metadata")?;
                request.metadata_mut().insert(duet_orchestrator::auth::TOKEN_KEY, value);
            }
            let r = ClusterStatusClient::new(ch).with_default_timeout(t).remove_member(request).await?;
            StatusOut::new(via(&r), r.into_inner()).print(output)?;
        }
    }
    Ok(())
}

/// Which transport answered, if the channel recorded it.
fn via<T>(response: &duet::Response<T>) -> Option<String> {
    response.extensions().get::<duet::Transport>().map(ToString::to_string)
}
