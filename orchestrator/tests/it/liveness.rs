//! Member liveness: `status` shows who is live and over which transport, from any node; a killed
//! member turns not live within the window; new VMs are placed only on live members; a start on a
//! dead host is refused with the reason; a member gone for good is removed.

use std::time::Duration;

use duet::TransportConfig;
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::cluster::Cluster;
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusClient, ClusterStatusReply, CreateVmRequest, GetClusterStatusRequest, RemoveMemberRequest, VmRef,
    VmServiceClient,
};

const WAIT: Duration = Duration::from_secs(20);

async fn channel(cluster: &Cluster, id: u64) -> duet::Channel {
    let (ticket, config) = (cluster.node(id).ticket(), TransportConfig::default());
    NodeChannel::connect(&ticket, Via::Auto, &config).await.expect("client channel").channel
}

async fn status(cluster: &Cluster, id: u64) -> ClusterStatusReply {
    let client = ClusterStatusClient::new(channel(cluster, id).await).with_default_timeout(Duration::from_secs(5));
    client.get_cluster_status(GetClusterStatusRequest {}).await.expect("status").into_inner()
}

/// Polls `status` through node `via` until `done` holds for it.
async fn until(
    cluster: &Cluster,
    via: u64,
    what: &str,
    done: impl Fn(&ClusterStatusReply) -> bool,
) -> ClusterStatusReply {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = status(cluster, via).await;
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: never seen through node {via}: {s:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn live(s: &ClusterStatusReply, id: u64) -> bool {
    s.members.iter().any(|m| m.id == id && m.live)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn status_shows_liveness_and_placement_avoids_a_dead_member() {
    let mut cluster = Cluster::start(3, |_| {}, None).await.expect("cluster starts");
    let leader = cluster.leader(WAIT).await.expect("a leader");
    let follower = cluster.running().into_iter().find(|id| *id != leader).unwrap();
    let victim = cluster.running().into_iter().find(|id| *id != leader && *id != follower).unwrap();

    // Every member live, seen through the leader and through a follower (which asks the leader).
    for via in [leader, follower] {
        let s = until(&cluster, via, "every member live", |s| (1..=3).all(|id| live(s, id))).await;
        for m in &s.members {
            assert!(m.last_seen_ms.is_some(), "node {via} reports when it heard node {}: {m:?}", m.id);
            if m.id != via {
                assert!(["grpc", "iroh"].contains(&m.reachable_over.as_str()), "transport of node {}: {m:?}", m.id);
            }
        }
    }

    // A VM placed on the victim before it dies (the leader spreads VMs: three creates, one each).
    let vms = VmServiceClient::new(channel(&cluster, follower).await).with_default_timeout(Duration::from_secs(10));
    let mut on_victim = None;
    for i in 0..3 {
        let vm = vms
            .create_vm(CreateVmRequest { name: format!("before-{i}"), vcpus: 1, memory_mib: 64, image: String::new() })
            .await
            .expect("create")
            .into_inner();
        if vm.host_node == victim {
            on_victim = Some(vm.name);
        }
    }
    let on_victim = on_victim.expect("one of three VMs lands on each of three live members");

    cluster.kill(victim).await;
    let s = until(&cluster, follower, "the killed member not live", |s| !live(s, victim)).await;
    let dead = s.members.iter().find(|m| m.id == victim).unwrap();
    assert!(dead.last_seen_ms.is_some_and(|ms| ms >= 500), "silent for at least the window: {dead:?}");

    for i in 0..4 {
        let vm = vms
            .create_vm(CreateVmRequest { name: format!("after-{i}"), vcpus: 1, memory_mib: 64, image: String::new() })
            .await
            .expect("create")
            .into_inner();
        assert_ne!(vm.host_node, victim, "VM {} placed on the dead node", vm.name);
    }
    let refused = vms.start_vm(VmRef { name: on_victim.clone() }).await.expect_err("its host is dead");
    assert_eq!(refused.code(), duet::Code::FailedPrecondition, "{refused}");
    assert!(
        refused.message().contains(&format!("node {victim}")) && refused.message().contains("not live"),
        "the reason names the host: {refused}"
    );

    // Gone for good: removed through a follower (which forwards to the leader), it stops counting
    // toward the quorum; removing it again changes nothing.
    let admin =
        ClusterStatusClient::new(channel(&cluster, follower).await).with_default_timeout(Duration::from_secs(10));
    for _ in 0..2 {
        let after = admin.remove_member(RemoveMemberRequest { id: victim }).await.expect("remove").into_inner();
        assert!(after.members.iter().all(|m| m.id != victim), "{after:?}");
    }
    let s = until(&cluster, leader, "two members", |s| s.members.len() == 2).await;
    assert!(s.members.iter().all(|m| m.live), "{s:?}");
    cluster.shutdown().await;
}
