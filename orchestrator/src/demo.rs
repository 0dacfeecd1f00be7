//! The demo a newcomer runs first: drive a three-node cluster through every migration phase as a
//! client would, and tabulate which transport carried each call.

use std::time::{Duration, Instant};

use bytes::Bytes;
use duet::TransportConfig;
use futures_util::StreamExt;

use crate::client::{NodeChannel, Via};
use crate::cluster::Cluster;
use crate::images::{Image, hex};
use crate::pb::orchestrator::v1::{
    ClusterStatusClient, CreateVmRequest, GetClusterStatusRequest, GetMetricsRequest, GetRaftStatusRequest, ImageInfo,
    ImageServiceClient, ListVmsRequest, MonitoringClient, PullImageRequest, Vm, VmRef, VmServiceClient, VmState,
    WatchVmEventsRequest,
};
use crate::state::NodeId;
use duet_health::pb::health_check_response::ServingStatus;
use duet_health::pb::{HealthCheckRequest, HealthClient};

/// Why the demo failed: the step and what went wrong.
#[derive(Debug, thiserror::Error)]
#[error("demo step {step:?} failed: {message}")]
pub struct DemoError {
    /// The step.
    pub step: &'static str,
    /// What went wrong.
    pub message: String,
}

fn fail(step: &'static str, message: impl std::fmt::Display) -> DemoError {
    DemoError { step, message: message.to_string() }
}

/// What the demo did.
#[derive(Debug, Clone)]
pub struct DemoReport {
    /// The elected leader.
    pub leader: NodeId,
    /// Its term.
    pub term: u64,
    /// The VM created and started.
    pub vm: Vm,
    /// The image moved between nodes.
    pub image: ImageInfo,
    /// The per-phase call table.
    pub table: String,
}

/// Drives `cluster` (three nodes or more) through phases 2–5 from an outside client over `via`, with
/// an image of `image_bytes` bytes.
pub async fn run(
    cluster: &Cluster,
    transport: &TransportConfig,
    via: Via,
    image_bytes: usize,
) -> Result<DemoReport, DemoError> {
    let log = cluster.calls();
    let leader = cluster.leader(Duration::from_secs(15)).await.ok_or_else(|| fail("elect", "no leader within 15 s"))?;
    let ids = cluster.running();
    let followers: Vec<_> = ids.iter().copied().filter(|id| *id != leader).collect();
    if followers.len() < 2 {
        return Err(fail("elect", format!("need 3 running nodes, have {}", ids.len())));
    }
    let mut channels = std::collections::BTreeMap::new();
    for id in &ids {
        let ticket = cluster.node(*id).ticket();
        channels.insert(*id, NodeChannel::connect(&ticket, via, transport).await.map_err(|e| fail("connect", e))?);
    }
    let ch = |id: NodeId| channels[&id].channel.clone();

    // Phase 2: health, cluster status, monitoring, on every node.
    for id in &ids {
        let health = HealthClient::new(ch(*id)).with_default_timeout(Duration::from_secs(5));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = log
                .timed("2 health", "Health/Check", health.check(HealthCheckRequest::default()))
                .await
                .map_err(|e| fail("health", e))?
                .into_inner()
                .status;
            if status == ServingStatus::Serving as i32 {
                break;
            }
            if Instant::now() > deadline {
                return Err(fail("health", format!("node {id} is not SERVING after 10 s")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut watch = log
            .timed("2 health", "Health/Watch", health.watch(HealthCheckRequest::default()))
            .await
            .map_err(|e| fail("health watch", e))?
            .into_inner();
        let first = watch.next().await.ok_or_else(|| fail("health watch", "stream ended"))?;
        if first.map_err(|e| fail("health watch", e))?.status != ServingStatus::Serving as i32 {
            return Err(fail("health watch", format!("node {id} watch did not start at SERVING")));
        }
        let status = ClusterStatusClient::new(ch(*id)).with_default_timeout(Duration::from_secs(5));
        let cluster_status = log
            .timed("2 status", "ClusterStatus/GetClusterStatus", status.get_cluster_status(GetClusterStatusRequest {}))
            .await
            .map_err(|e| fail("cluster status", e))?
            .into_inner();
        if cluster_status.leader_id != leader || cluster_status.members.len() != ids.len() {
            return Err(fail(
                "cluster status",
                format!(
                    "node {id} reports leader {} and {} members",
                    cluster_status.leader_id,
                    cluster_status.members.len()
                ),
            ));
        }
        log.timed("2 status", "ClusterStatus/GetRaftStatus", status.get_raft_status(GetRaftStatusRequest {}))
            .await
            .map_err(|e| fail("raft status", e))?;
        let monitoring = MonitoringClient::new(ch(*id)).with_default_timeout(Duration::from_secs(5));
        let text = log
            .timed("2 monitoring", "Monitoring/GetMetrics", monitoring.get_metrics(GetMetricsRequest {}))
            .await
            .map(|r| r.into_inner().prometheus_text);
        if let Ok(text) = text {
            // The client's durations and the server's, as histograms (buckets aggregate across nodes).
            for wanted in ["duet_rpc_duration_seconds_bucket", "duet_server_rpc_duration_seconds_bucket"] {
                if !text.contains(wanted) {
                    return Err(fail("monitoring", format!("the metrics lack {wanted}")));
                }
            }
        }
    }
    let term = cluster.node(leader).raft().metrics().borrow().current_term;

    // Phase 3: an image uploaded to one follower, pulled by the other straight from it.
    let (holder, puller) = (followers[0], followers[1]);
    let content: Vec<u8> = (0..image_bytes).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let image = Image::new("debian-12.img", Bytes::from(content));
    let images = ImageServiceClient::new(ch(holder)).with_default_timeout(Duration::from_secs(60));
    let uploaded = log
        .timed("3 images", "ImageService/UploadImage", images.upload_image(image.chunks()))
        .await
        .map_err(|e| fail("upload image", e))?
        .into_inner();
    if uploaded.blake3_hex != hex(&image.blake3) {
        return Err(fail("upload image", "the node reports another hash"));
    }
    let images = ImageServiceClient::new(ch(puller)).with_default_timeout(Duration::from_secs(60));
    let pulled = log
        .timed("3 images", "ImageService/PullImage", images.pull_image(PullImageRequest { name: image.name.clone() }))
        .await
        .map_err(|e| fail("pull image", e))?
        .into_inner();
    if !pulled.holders.contains(&holder) || !pulled.holders.contains(&puller) {
        return Err(fail("pull image", format!("holders are {:?}", pulled.holders)));
    }

    // Phase 3: the VM lifecycle, written through a follower (forwarded to the leader), watched on another.
    let watch_client = VmServiceClient::new(ch(puller));
    let mut events = log
        .timed("3 vm", "VmService/WatchVmEvents", watch_client.watch_vm_events(WatchVmEventsRequest {}))
        .await
        .map_err(|e| fail("watch VMs", e))?
        .into_inner();
    let vms = VmServiceClient::new(ch(holder)).with_default_timeout(Duration::from_secs(10));
    let create = CreateVmRequest { name: "web-1".into(), vcpus: 2, memory_mib: 512, image: image.name.clone() };
    log.timed("3 vm", "VmService/CreateVm", vms.create_vm(create)).await.map_err(|e| fail("create VM", e))?;
    let vm = log
        .timed("3 vm", "VmService/StartVm", vms.start_vm(VmRef { name: "web-1".into() }))
        .await
        .map_err(|e| fail("start VM", e))?
        .into_inner();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .map_err(|_| fail("VM events", format!("saw {} of 2 events in 10 s", seen.len())))?
            .ok_or_else(|| fail("VM events", "stream ended"))?
            .map_err(|e| fail("VM events", e))?;
        seen.push(event.vm.map(|v| v.state).unwrap_or_default());
    }
    if seen != [VmState::Created as i32, VmState::Running as i32] {
        return Err(fail("VM events", format!("saw states {seen:?}")));
    }
    for id in &ids {
        let reader = VmServiceClient::new(ch(*id)).with_default_timeout(Duration::from_secs(5));
        let listed = log
            .timed("3 vm", "VmService/ListVms", reader.list_vms(ListVmsRequest {}))
            .await
            .map_err(|e| fail("list VMs", e))?
            .into_inner();
        // A node applies the start once the leader tells it the commit index, a heartbeat later at most.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut got = log.timed("3 vm", "VmService/GetVm", reader.get_vm(VmRef { name: "web-1".into() })).await;
        while got.as_ref().map_or(true, |r| r.get_ref().state != VmState::Running as i32) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
            got = log.timed("3 vm", "VmService/GetVm", reader.get_vm(VmRef { name: "web-1".into() })).await;
        }
        got.map_err(|e| fail("get VM", format!("node {id}: {e}")))?;
        if listed.vms.is_empty() {
            return Err(fail("list VMs", format!("node {id} lists no VM")));
        }
    }
    let host = cluster.node(vm.host_node).backend().inventory();
    if host.get("web-1") != Some(&crate::state::VmState::Running) {
        return Err(fail("hypervisor", format!("host node {} runs {host:?}", vm.host_node)));
    }
    for (_, channel) in channels {
        channel.close().await;
    }
    Ok(DemoReport { leader, term, vm, image: pulled, table: log.table() })
}
