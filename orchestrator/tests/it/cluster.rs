//! Three-node clusters with Raft over Iroh, over gRPC, and in Dual with one node's Iroh side cut
//! mid-run: a leader is elected, a VM created through a follower is visible from every node, a killed
//! follower catches up when restarted, and a killed leader is replaced.

use std::time::Duration;

use duet::{Mode, RaftTransport, TransportConfig};
use duet_orchestrator::calls::CallLog;
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::cluster::Cluster;
use duet_orchestrator::pb::orchestrator::v1::{CreateVmRequest, VmRef, VmServiceClient, VmState};

const WAIT: Duration = Duration::from_secs(20);

fn everything_on(mode: Mode, raft: RaftTransport) -> impl Fn(&mut TransportConfig) {
    move |t| {
        t.mode = mode;
        t.migration.raft_transport = raft;
        t.migration.fallback_to_grpc = mode == Mode::Dual;
        t.migration.prefer_iroh_for = ["health", "status", "monitoring", "vm", "images"].map(String::from).to_vec();
        // Quick to notice a cut Iroh side, quick to retry it.
        t.migration.breaker_cooldown_ms = 500;
        t.iroh.connect_timeout_ms = 1_000;
    }
}

/// A client to node `id` over `via`.
async fn vms(cluster: &Cluster, id: u64, via: Via, transport: &TransportConfig) -> VmServiceClient {
    let conn = NodeChannel::connect(&cluster.node(id).ticket(), via, transport).await.expect("client channel");
    VmServiceClient::new(conn.channel).with_default_timeout(Duration::from_secs(10))
}

/// Creates a VM through node `via_node` (retrying while an election is under way).
async fn create(cluster: &Cluster, via_node: u64, name: &str, via: Via, transport: &TransportConfig) {
    let client = vms(cluster, via_node, via, transport).await;
    let request = CreateVmRequest { name: name.into(), vcpus: 1, memory_mib: 64, image: String::new() };
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match client.create_vm(request.clone()).await {
            Ok(vm) => {
                assert_eq!(vm.get_ref().state, VmState::Created as i32);
                return;
            }
            // A retry after a commit whose reply was lost finds the VM there: also success.
            Err(e) if e.code() == duet::Code::AlreadyExists => return,
            Err(e) if tokio::time::Instant::now() < deadline && e.code() == duet::Code::Unavailable => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("creating {name} through node {via_node}: {e}"),
        }
    }
}

/// Waits until every running node reports every VM in `names`, read over `via`.
async fn visible_everywhere(cluster: &Cluster, names: &[&str], via: Via, transport: &TransportConfig) {
    for id in cluster.running() {
        let client = vms(cluster, id, via, transport).await;
        for name in names {
            let deadline = tokio::time::Instant::now() + WAIT;
            loop {
                match client.get_vm(VmRef { name: (*name).into() }).await {
                    Ok(vm) => {
                        assert_eq!(vm.get_ref().name, *name);
                        break;
                    }
                    Err(e) if tokio::time::Instant::now() < deadline => {
                        assert!(
                            matches!(e.code(), duet::Code::NotFound | duet::Code::Unavailable),
                            "node {id}, VM {name}: {e}"
                        );
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) => panic!("node {id} never saw VM {name}: {e}"),
                }
            }
        }
    }
}

/// Waits until every running node's hypervisor holds exactly the VMs its applied state places on it,
/// in their state: what a restarted node (whose simulated hypervisor starts empty) must rebuild.
async fn hypervisors_match_state(cluster: &Cluster) {
    for id in cluster.running() {
        let node = cluster.node(id);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let want: std::collections::BTreeMap<_, _> =
                node.state().vms.into_values().filter(|vm| vm.host == id).map(|vm| (vm.name, vm.state)).collect();
            let have = node.backend().inventory();
            if have == want {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {id}: hypervisor has {have:?}, state says {want:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The transports Raft's calls went over, as the nodes recorded them.
fn raft_transports(calls: &CallLog) -> Vec<(String, u64)> {
    calls.rows().into_iter().filter(|r| r.phase == "5 raft").map(|r| (r.transport, r.count)).collect()
}

/// Elect, replicate, kill and restart a follower, kill the leader.
async fn scenario(cluster: &mut Cluster, via: Via, transport: &TransportConfig) {
    let leader = cluster.leader(WAIT).await.expect("a leader");
    let follower = cluster.running().into_iter().find(|id| *id != leader).expect("a follower");
    create(cluster, follower, "vm-a", via, transport).await;
    visible_everywhere(cluster, &["vm-a"], via, transport).await;

    cluster.kill(follower).await;
    create(cluster, leader, "vm-b", via, transport).await;
    cluster.restart(follower).await.expect("follower restarts");
    visible_everywhere(cluster, &["vm-a", "vm-b"], via, transport).await;
    hypervisors_match_state(cluster).await;

    cluster.kill(leader).await;
    let new_leader = cluster.leader(WAIT).await.expect("a new leader after the old one died");
    assert_ne!(new_leader, leader);
    let survivor = cluster.running().into_iter().find(|id| *id != new_leader).expect("a second survivor");
    create(cluster, survivor, "vm-c", via, transport).await;
    visible_everywhere(cluster, &["vm-a", "vm-b", "vm-c"], via, transport).await;
    cluster.restart(leader).await.expect("old leader restarts");
    visible_everywhere(cluster, &["vm-a", "vm-b", "vm-c"], via, transport).await;
}

/// The scenario with every node and client on one transport; Raft must use only that one.
async fn on_one_transport(mode: Mode, raft: RaftTransport, via: Via, used: &str, unused: &str) {
    let setup = everything_on(mode, raft);
    let mut transport = TransportConfig::default();
    setup(&mut transport);
    let mut cluster = Cluster::start(3, &setup, None).await.expect("cluster starts");
    scenario(&mut cluster, via, &transport).await;
    let raft = raft_transports(cluster.calls());
    assert!(raft.iter().any(|(t, n)| t == used && *n > 10), "{raft:?}");
    assert!(!raft.iter().any(|(t, _)| t == unused), "{raft:?}");
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_over_iroh() {
    on_one_transport(Mode::Iroh, RaftTransport::AlwaysIroh, Via::Iroh, "iroh", "grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn raft_over_grpc() {
    on_one_transport(Mode::Grpc, RaftTransport::AlwaysGrpc, Via::Grpc, "grpc", "iroh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dual_keeps_committing_when_one_node_loses_iroh() {
    let setup = everything_on(Mode::Dual, RaftTransport::AlwaysIroh);
    let mut transport = TransportConfig::default();
    setup(&mut transport);
    let mut cluster = Cluster::start(3, &setup, None).await.expect("cluster starts");
    let leader = cluster.leader(WAIT).await.expect("a leader");
    create(&cluster, leader, "before-cut", Via::Auto, &transport).await;
    let before = raft_transports(cluster.calls());
    assert!(before.iter().any(|(t, _)| t == "iroh"), "Raft should ride Iroh before the cut: {before:?}");

    // Cut one follower's Iroh side: Raft to and from it must fall back to gRPC.
    let cut = cluster.running().into_iter().find(|id| *id != leader).expect("a follower");
    cluster.node_mut(cut).cut_iroh().await;
    for i in 0..5 {
        create(&cluster, leader, &format!("after-cut-{i}"), Via::Grpc, &transport).await;
    }
    let names: Vec<String> = (0..5).map(|i| format!("after-cut-{i}")).collect();
    let mut all: Vec<&str> = names.iter().map(String::as_str).collect();
    all.push("before-cut");
    // Read over gRPC: the cut node has no Iroh to answer on.
    visible_everywhere(&cluster, &all, Via::Grpc, &transport).await;
    let after = raft_transports(cluster.calls());
    let grpc_after = after.iter().filter(|(t, _)| t == "grpc").map(|(_, n)| n).sum::<u64>();
    assert!(grpc_after > 0, "Raft calls to the cut node should have fallen back to gRPC: {after:?}");
    cluster.shutdown().await;
}
