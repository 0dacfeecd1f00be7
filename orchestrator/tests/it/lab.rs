//! The orchestrator across a network lab (`duet_tests::lab`): three nodes on three hosts, one
//! public and two behind home NATs (no port forward), with the lab's relay. The cluster forms from
//! tickets, Raft runs over Iroh (through the relay, then hole-punched paths), a VM is created
//! through a follower, an image is pulled from one NATed node by the other, and when the leader is
//! killed a new one is elected. Needs root and `nft`; a lab that cannot be built fails.

use std::time::{Duration, Instant};

use bytes::Bytes;
use duet::PeerAddr;
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::config::NodeConfig;
use duet_orchestrator::images::{Image, hex};
use duet_orchestrator::node::{Node, NodeOptions};
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusClient, CreateVmRequest, GetRaftStatusRequest, ImageServiceClient, ListVmsRequest, PullImageRequest,
    RaftStatusReply, VmServiceClient,
};
use duet_tests::lab::{Device, NetLab, RouterPreset};
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(60);

/// The node config for a lab host: Dual, every service preferring Iroh (the NATed nodes cannot
/// reach each other's gRPC port), Raft always over Iroh, the lab relay as home relay.
fn config(lab: &NetLab, id: u64, host: &Device, join: Option<&PeerAddr>) -> NodeConfig {
    let ip = host.ip().expect("an IPv4 address");
    let mut config = NodeConfig::embedded(id);
    let transport = lab.config(
        "dual",
        "prefer_iroh_for = [\"health\", \"status\", \"monitoring\", \"vm\", \"images\"]\n\
         raft_transport = \"always_iroh\"\nfallback_to_grpc = true",
    );
    config.transport = transport.transport;
    config.transport.grpc.bind_address = (ip, 7001).into();
    config.transport.iroh.bind_ip = ip.into();
    config.node.bootstrap = join.is_none();
    config.node.join = join.map(|t| vec![t.to_string()]).unwrap_or_default();
    config
}

/// A node running on its host until told to stop.
struct Running {
    ticket: PeerAddr,
    stop: oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

async fn start(host: &Device, config: NodeConfig) -> Running {
    let (ready, ticket) = oneshot::channel();
    let (stop, stopped) = oneshot::channel::<()>();
    let done = host
        .spawn(move |_| async move {
            let node = Node::start(&config, NodeOptions::default()).await.expect("the node starts");
            // Peers dial a NATed node by key and relay: wait until its ticket names the relay.
            let since = Instant::now();
            while node.ticket().iroh.as_ref().is_none_or(|a| a.relay_urls().next().is_none()) {
                assert!(since.elapsed() < WAIT, "node {} never reached its home relay", config.node.id);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let _ = ready.send(node.ticket());
            let _ = stopped.await;
            node.shutdown().await;
        })
        .expect("spawn on the node's host");
    let ticket = tokio::time::timeout(WAIT, ticket).await.expect("node up in time").expect("the node started");
    Running { ticket, stop, done }
}

impl Running {
    async fn kill(self) {
        let _ = self.stop.send(());
        let _ = self.done.await;
    }
}

/// Runs `f` with an Iroh channel to `ticket`, from the `client` host.
async fn on<T, F, Fut>(client: &Device, lab: &NetLab, ticket: &PeerAddr, f: F) -> T
where
    T: Send + 'static,
    F: FnOnce(duet::Channel) -> Fut + Send + 'static,
    Fut: Future<Output = T> + Send,
{
    let transport = lab.config("iroh", "fallback_to_grpc = false").transport;
    let ticket = ticket.clone();
    client
        .spawn(move |_| async move {
            let conn = NodeChannel::connect(&ticket, Via::Iroh, &transport).await.expect("a client channel");
            let out = f(conn.channel.clone()).await;
            conn.close().await;
            out
        })
        .expect("spawn on the client host")
        .await
        .expect("the client task")
}

async fn raft_status(client: &Device, lab: &NetLab, ticket: &PeerAddr) -> RaftStatusReply {
    on(client, lab, ticket, |ch| async move {
        let status = ClusterStatusClient::new(ch).with_default_timeout(Duration::from_secs(10));
        status.get_raft_status(GetRaftStatusRequest {}).await.expect("GetRaftStatus").into_inner()
    })
    .await
}

/// Waits until every node in `tickets` names the same leader, other than `gone`; returns it and its
/// term.
async fn agreed_leader(client: &Device, lab: &NetLab, tickets: &[&PeerAddr], gone: Option<u64>) -> (u64, u64) {
    let since = Instant::now();
    loop {
        let mut seen = vec![];
        for t in tickets {
            let s = raft_status(client, lab, t).await;
            seen.push((s.leader_id, s.term));
        }
        if seen[0].0 != 0 && Some(seen[0].0) != gone && seen.iter().all(|s| s.0 == seen[0].0) {
            return seen[0];
        }
        assert!(since.elapsed() < WAIT, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "network lab: needs root and nft; run with --ignored (CI does)"]
async fn a_cluster_across_nats_forms_from_tickets_moves_an_image_between_nated_nodes_and_survives_its_leader() {
    let lab = NetLab::new().await.unwrap_or_else(|e| panic!("{e}"));
    let (home_2, home_3) =
        (lab.router("home-2", RouterPreset::Home).await, lab.router("home-3", RouterPreset::Home).await);
    let hosts = [lab.host("n1", &lab.dc).await, lab.host("n2", &home_2).await, lab.host("n3", &home_3).await];
    let client = lab.host("operator", &lab.dc).await;

    let n1 = start(&hosts[0], config(&lab, 1, &hosts[0], None)).await;
    let n2 = start(&hosts[1], config(&lab, 2, &hosts[1], Some(&n1.ticket))).await;
    let n3 = start(&hosts[2], config(&lab, 3, &hosts[2], Some(&n1.ticket))).await;
    let mut nodes = vec![(1u64, n1), (2, n2), (3, n3)];
    let tickets: Vec<PeerAddr> = nodes.iter().map(|(_, n)| n.ticket.clone()).collect();
    let (leader, term) = agreed_leader(&client, &lab, &tickets.iter().collect::<Vec<_>>(), None).await;
    println!("lab cluster: leader {leader} in term {term}; tickets {tickets:?}");

    // A VM created through a NATed follower is seen by every node.
    let follower = if leader == 2 { 3 } else { 2 };
    let created = on(&client, &lab, &tickets[follower - 1], |ch| async move {
        let vms = VmServiceClient::new(ch).with_default_timeout(Duration::from_secs(20));
        let request = CreateVmRequest { name: "lab-vm".into(), vcpus: 1, memory_mib: 64, image: String::new() };
        vms.create_vm(request).await.map(|r| r.into_inner())
    })
    .await;
    created.expect("a VM created through a follower behind a NAT");
    for t in &tickets {
        let since = Instant::now();
        loop {
            let names = on(&client, &lab, t, |ch| async move {
                let vms = VmServiceClient::new(ch).with_default_timeout(Duration::from_secs(10));
                let listed = vms.list_vms(ListVmsRequest {}).await.expect("ListVms").into_inner().vms;
                listed.into_iter().map(|vm| vm.name).collect::<Vec<_>>()
            })
            .await;
            if names.iter().any(|n| n == "lab-vm") {
                break;
            }
            assert!(since.elapsed() < WAIT, "{t} does not list the VM: {names:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // An image uploaded to node 2 (behind one NAT) is pulled by node 3 (behind another) from it.
    let content: Vec<u8> = (0..(8usize << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let image = Image::new("lab.img", Bytes::from(content));
    let digest = hex(&image.blake3);
    let uploaded = on(&client, &lab, &tickets[1], {
        let image = image.clone();
        move |ch| async move {
            let images = ImageServiceClient::new(ch).with_default_timeout(Duration::from_secs(60));
            images.upload_image(image.chunks()).await.expect("upload to node 2").into_inner()
        }
    })
    .await;
    assert_eq!(uploaded.blake3_hex, digest);
    let pulled = on(&client, &lab, &tickets[2], |ch| async move {
        let images = ImageServiceClient::new(ch).with_default_timeout(Duration::from_secs(120));
        images.pull_image(PullImageRequest { name: "lab.img".into() }).await.expect("pull on node 3").into_inner()
    })
    .await;
    assert_eq!(pulled.blake3_hex, digest, "node 3 holds the same bytes");
    assert!(pulled.holders.contains(&2) && pulled.holders.contains(&3), "holders {:?}", pulled.holders);

    // The leader is killed; the other two elect a new one.
    let at = nodes.iter().position(|(id, _)| *id == leader).unwrap();
    let (_, dead) = nodes.remove(at);
    dead.kill().await;
    let killed = Instant::now();
    let rest: Vec<&PeerAddr> = nodes.iter().map(|(id, _)| &tickets[*id as usize - 1]).collect();
    let (new_leader, new_term) = agreed_leader(&client, &lab, &rest, Some(leader)).await;
    println!("leader {leader} killed: node {new_leader} leads in term {new_term} after {:?}", killed.elapsed());
    assert_ne!(new_leader, leader);
    assert!(new_term > term);
    for (_, node) in nodes {
        node.kill().await;
    }
}
