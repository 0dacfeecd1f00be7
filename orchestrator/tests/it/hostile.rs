//! Bad input from the network gets a status, never a crash or an outsized allocation, and the node
//! keeps serving: garbage Raft payloads, a snapshot chunk claiming a huge offset, a join that would
//! change a member's address, an upload overwriting a held image with other bytes.

use std::time::Duration;

use bytes::Bytes;
use duet::{Code, Request};
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::cluster::Cluster;
use duet_orchestrator::config::NodeConfig;
use duet_orchestrator::images::{Image, ImageStore};
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusClient, FetchImageRequest, GetRaftStatusRequest, ImageServiceClient, JoinClusterRequest, RaftPayload,
    RaftServiceClient,
};
use duet_orchestrator::raft::{InstallSnapshotRequest, LogId, SnapshotMeta, StoredMembership, Vote};
use openraft::CommittedLeaderId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_raft_and_membership_calls_get_a_status_and_the_node_goes_on() {
    let (cluster, conn) = lone_node().await;
    let raft = RaftServiceClient::new(conn.channel.clone()).with_default_timeout(Duration::from_secs(5));

    let garbage = RaftPayload { postcard: Bytes::from_static(&[0xff; 40]) };
    let err = raft.append_entries(garbage).await.expect_err("garbage refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    // A chunk "at" 1 TiB, from a vote high enough that openraft would otherwise take it.
    let huge = InstallSnapshotRequest {
        vote: Vote::new_committed(u64::MAX / 2, 9),
        meta: SnapshotMeta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(u64::MAX / 2, 9), 1)),
            last_membership: StoredMembership::default(),
            snapshot_id: "x".into(),
        },
        offset: 1 << 40,
        data: vec![1; 16],
        done: false,
    };
    let payload = RaftPayload { postcard: postcard::to_allocvec(&huge).expect("encodes").into() };
    let err = raft.install_snapshot(payload).await.expect_err("huge offset refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    let status = ClusterStatusClient::new(conn.channel.clone()).with_default_timeout(Duration::from_secs(5));
    let moved = JoinClusterRequest { id: 1, name: "node-1".into(), ticket: "duet:grpc=127.0.0.1:1".into() };
    let err = status.join_cluster(Request::new(moved)).await.expect_err("a member's address is not replaced");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    assert!(err.message().contains("is a member reachable at"), "{err}");

    let raft_status = status.get_raft_status(GetRaftStatusRequest {}).await.expect("still serving").into_inner();
    assert_eq!((raft_status.role.as_str(), raft_status.leader_id), ("leader", 1));
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_bytes_under_a_held_image_name_are_refused_and_the_copy_kept() {
    let (cluster, conn) = lone_node().await;
    let images = ImageServiceClient::new(conn.channel).with_default_timeout(Duration::from_secs(30));
    let first = Image::new("base.img", Bytes::from(vec![1u8; 3 << 20]));
    images.upload_image(first.chunks()).await.expect("first upload");
    let impostor = Image::new("base.img", Bytes::from(vec![2u8; 3 << 20]));
    let err = images.upload_image(impostor.chunks()).await.expect_err("other bytes refused");
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");
    let stream =
        images.fetch_image(FetchImageRequest { name: "base.img".into(), offset: 0 }).await.expect("fetch").into_inner();
    let kept = ImageStore::new(1 << 30).receive(stream).await.expect("the held copy verifies");
    assert_eq!(kept.bytes, first.bytes);
    cluster.shutdown().await;
}

/// A one-node cluster that leads, and a gRPC channel to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_member_is_refused_raft_join_and_propose_calls_on_both_transports() {
    const TOKEN: &str = "s3cret";
    let cluster = Cluster::start_configured(2, |c| c.node.cluster_token = Some(TOKEN.into()), None)
        .await
        .expect("node 2 joins with the token");
    cluster.leader(Duration::from_secs(10)).await.expect("a leader");
    let transport = NodeConfig::embedded(1).transport;
    let garbage = || RaftPayload { postcard: Bytes::from_static(&[0xff; 40]) };
    let with_token = |payload: RaftPayload| {
        let mut req = Request::new(payload);
        req.metadata_mut().insert(duet_orchestrator::auth::TOKEN_KEY, TOKEN.parse().unwrap());
        req
    };
    for via in [Via::Grpc, Via::Iroh] {
        // A stranger: its own fresh endpoint, no certificate, no token.
        let conn = NodeChannel::connect(&cluster.node(1).ticket(), via, &transport).await.expect("channel");
        let raft = RaftServiceClient::new(conn.channel.clone()).with_default_timeout(Duration::from_secs(5));
        for (name, refused) in [
            ("AppendEntries", raft.append_entries(garbage()).await),
            ("Vote", raft.vote(garbage()).await),
            ("Propose", raft.propose(garbage()).await),
        ] {
            let err = refused.expect_err("a stranger");
            assert_eq!(err.code(), Code::PermissionDenied, "{via:?} {name}: {err}");
        }
        let status = ClusterStatusClient::new(conn.channel.clone()).with_default_timeout(Duration::from_secs(5));
        let join = JoinClusterRequest { id: 9, name: "intruder".into(), ticket: "duet:grpc=127.0.0.1:1".into() };
        let err = status.join_cluster(join).await.expect_err("no token, no join");
        assert_eq!(err.code(), Code::PermissionDenied, "{via:?} JoinCluster: {err}");
        // Other calls stay open to anyone.
        status.get_raft_status(GetRaftStatusRequest {}).await.expect("status is not guarded");
        // With the token the call is admitted, and the garbage is what it is refused for.
        let err = raft.append_entries(with_token(garbage())).await.expect_err("garbage");
        assert_eq!(err.code(), Code::InvalidArgument, "{via:?}: {err}");
        conn.close().await;
    }
    // The members themselves still replicate: a write through the follower is proposed to the leader.
    let follower = if cluster.leader(Duration::from_secs(10)).await == Some(1) { 2 } else { 1 };
    let conn = NodeChannel::connect(&cluster.node(follower).ticket(), Via::Auto, &transport).await.expect("channel");
    let vms = duet_orchestrator::pb::orchestrator::v1::VmServiceClient::new(conn.channel.clone())
        .with_default_timeout(Duration::from_secs(10));
    let request = duet_orchestrator::pb::orchestrator::v1::CreateVmRequest {
        name: "through-the-follower".into(),
        vcpus: 1,
        memory_mib: 64,
        image: String::new(),
    };
    vms.create_vm(request).await.expect("members admit each other");
    conn.close().await;
    cluster.shutdown().await;
}

async fn lone_node() -> (Cluster, NodeChannel) {
    let transport = NodeConfig::embedded(1).transport;
    let cluster = Cluster::start(1, |_| {}, None).await.expect("node starts");
    cluster.leader(Duration::from_secs(10)).await.expect("the lone node leads");
    let conn = NodeChannel::connect(&cluster.node(1).ticket(), Via::Grpc, &transport).await.expect("channel");
    (cluster, conn)
}
