//! Nodes run as separate `duet-orchestrator node` processes with `node.data_dir`: a SIGKILLed
//! follower restarted on the same config comes back as the same member with its Raft log and VMs,
//! without joining again; and after the whole cluster is SIGKILLed, a node started alone — with no
//! peer to learn anything from — still holds everything it had, and the cluster re-forms from disk.

use std::fs::File;
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use duet::TransportConfig;
use duet_orchestrator::client::{NodeChannel, Via};
use duet_orchestrator::pb::orchestrator::v1::{
    ClusterStatusClient, CreateVmRequest, GetClusterStatusRequest, GetRaftStatusRequest, ImageChunk, ImageHeader,
    ImageServiceClient, ListVmsRequest, RaftStatusReply, VmServiceClient,
};

const BIN: &str = env!("CARGO_BIN_EXE_duet-orchestrator");
const WAIT: Duration = Duration::from_secs(30);
/// How long a node of the restart test stays down.
const DOWNTIME: Duration = Duration::from_millis(1_500);

/// One node's process, config and output.
struct ProcNode {
    id: u64,
    config: PathBuf,
    dir: PathBuf,
    child: Option<Child>,
    starts: u32,
    ticket: String,
}

/// Every node process of a test; dropping it SIGKILLs those still running, so a failing test leaves
/// none behind.
struct Procs {
    nodes: Vec<ProcNode>,
    _dir: tempfile::TempDir,
}

impl Drop for Procs {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}

/// Three free ports of each kind, found by binding port 0 (all held at once, so no two are equal).
fn free_ports() -> (Vec<u16>, Vec<u16>) {
    let tcp: Vec<_> = (0..3).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
    let udp: Vec<_> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
    (
        tcp.iter().map(|s| s.local_addr().unwrap().port()).collect(),
        udp.iter().map(|s| s.local_addr().unwrap().port()).collect(),
    )
}

fn config_text(id: u64, grpc: &[u16], udp: &[u16], data_dir: &Path) -> String {
    let join = if id == 1 { String::new() } else { format!("join = [\"duet:grpc=127.0.0.1:{}\"]", grpc[0]) };
    format!(
        r#"[node]
id = {id}
name = "node-{id}"
bootstrap = {bootstrap}
{join}
data_dir = {data_dir:?}

[transport]
mode = "dual"

[transport.grpc]
bind_address = "127.0.0.1:{grpc_port}"

[transport.iroh]
enabled = true
home_relay = "disabled"
discovery_port = {udp_port}
connect_timeout_ms = 1000

[transport.migration]
prefer_iroh_for = ["health", "status", "monitoring", "vm"]
raft_transport = "adaptive"
fallback_to_grpc = true
breaker_cooldown_ms = 500
"#,
        bootstrap = id == 1,
        grpc_port = grpc[id as usize - 1],
        udp_port = udp[id as usize - 1],
    )
}

impl Procs {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (grpc, udp) = free_ports();
        let nodes = (1..=3)
            .map(|id| {
                let config = dir.path().join(format!("node-{id}.toml"));
                std::fs::write(&config, config_text(id, &grpc, &udp, &dir.path().join(format!("node-{id}-data"))))
                    .unwrap();
                ProcNode { id, config, dir: dir.path().to_owned(), child: None, starts: 0, ticket: String::new() }
            })
            .collect();
        Self { nodes, _dir: dir }
    }

    fn node(&mut self, id: u64) -> &mut ProcNode {
        &mut self.nodes[id as usize - 1]
    }
}

impl ProcNode {
    fn output(&self) -> PathBuf {
        self.dir.join(format!("node-{}.{}.log", self.id, self.starts))
    }

    /// Starts the process and waits until it prints its ticket, which it does once it has started
    /// Raft and, on a first start, bootstrapped or joined.
    async fn start(&mut self) {
        self.starts += 1;
        let out = File::create(self.output()).unwrap();
        let child = Command::new(BIN)
            .args(["--log-format", "json", "node"])
            .arg("--config")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the node binary starts");
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        loop {
            let text = std::fs::read_to_string(self.output()).unwrap_or_default();
            // Log lines (JSON, on stderr) may come between the two lines of the ticket's message.
            if let Some(ticket) = text.lines().skip_while(|l| !l.ends_with("ticket:")).find(|l| l.starts_with("duet:"))
            {
                self.ticket = ticket.trim().to_owned();
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("node {} exited with {status} before it was up:\n{text}", self.id);
            }
            assert!(Instant::now() < deadline, "node {} not up after {WAIT:?}:\n{text}", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (what systemd and Kubernetes send) and waits for the process to end.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let sent = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().expect("sh runs");
            assert!(sent.success(), "SIGTERM to node {}", self.id);
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM without waiting for the process to end.
    fn signal_term(&self) {
        let pid = self.child.as_ref().expect("running").id().to_string();
        let sent = Command::new("sh").args(["-c", &format!("kill -TERM {pid}")]).status().expect("sh runs");
        assert!(sent.success(), "SIGTERM to node {}", self.id);
    }

    /// Waits (up to `WAIT`) for the process to end and returns its exit status.
    async fn exited(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + WAIT;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(Instant::now() < deadline, "node {} still runs {WAIT:?} after SIGTERM", self.id);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The JSON log lines of the node's current run whose message is `message`.
    fn logged(&self, message: &str) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(self.output()).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("a log line is not JSON ({e}): {l}"))
            })
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// SIGKILLs the process, if it runs.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn channel(&self) -> duet::Channel {
        let ticket = self.ticket.parse().expect("the printed ticket parses");
        NodeChannel::connect(&ticket, Via::Grpc, &TransportConfig::default()).await.expect("a client channel").channel
    }

    async fn vm_names(&self) -> Vec<String> {
        let client = VmServiceClient::new(self.channel().await).with_default_timeout(Duration::from_secs(5));
        let vms = client.list_vms(ListVmsRequest {}).await.expect("ListVms").into_inner().vms;
        vms.into_iter().map(|vm| vm.name).collect()
    }

    async fn raft_status(&self) -> RaftStatusReply {
        let client = ClusterStatusClient::new(self.channel().await).with_default_timeout(Duration::from_secs(5));
        client.get_raft_status(GetRaftStatusRequest {}).await.expect("GetRaftStatus").into_inner()
    }

    /// Creates a VM through this node, retrying while there is no leader.
    async fn create_vm(&self, name: &str) {
        let client = VmServiceClient::new(self.channel().await).with_default_timeout(Duration::from_secs(5));
        let request = CreateVmRequest { name: name.into(), vcpus: 1, memory_mib: 64, image: String::new() };
        let deadline = Instant::now() + WAIT;
        loop {
            match client.create_vm(request.clone()).await {
                Ok(_) => return,
                // A retry after a commit whose reply was lost finds the VM there.
                Err(e) if e.code() == duet::Code::AlreadyExists => return,
                Err(e) if Instant::now() < deadline && e.code() == duet::Code::Unavailable => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("creating {name} through node {}: {e}", self.id),
            }
        }
    }

    /// Waits until this node lists every VM in `names`.
    async fn wait_for_vms(&self, names: &[&str]) {
        let deadline = Instant::now() + WAIT;
        loop {
            let listed = self.vm_names().await;
            if names.iter().all(|n| listed.iter().any(|l| l == n)) {
                return;
            }
            assert!(Instant::now() < deadline, "node {} lists {listed:?}, not all of {names:?}", self.id);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_restarted_from_their_data_dir_keep_their_log_and_state() {
    let started = Instant::now();
    let mut procs = Procs::new();
    for id in 1..=3 {
        procs.node(id).start().await;
    }
    procs.node(1).create_vm("before-kill").await;
    procs.node(3).wait_for_vms(&["before-kill"]).await;
    let before = procs.node(3).raft_status().await;

    // SIGKILL a follower; the other two go on without it.
    procs.node(3).kill();
    procs.node(1).create_vm("while-down").await;
    let ticket = procs.node(3).ticket.clone();
    procs.node(3).start().await;
    assert_eq!(procs.node(3).ticket, ticket, "same ports and Iroh key: the ticket its peers know it by");
    let after = procs.node(3).raft_status().await;
    assert!(after.last_log_index >= before.last_log_index, "log lost: {after:?} after {before:?}");
    assert!(after.term >= before.term, "vote lost: {after:?} after {before:?}");
    procs.node(3).wait_for_vms(&["before-kill", "while-down"]).await;
    let status = ClusterStatusClient::new(procs.node(1).channel().await).with_default_timeout(WAIT);
    let members = status.get_cluster_status(GetClusterStatusRequest {}).await.unwrap().into_inner().members;
    assert_eq!(members.iter().filter(|m| m.voter).map(|m| m.id).collect::<Vec<_>>(), vec![1, 2, 3]);

    // SIGKILL everyone. Node 3 started alone has no one to learn from: what it serves is its disk.
    let before = procs.node(3).raft_status().await;
    for id in 1..=3 {
        procs.node(id).kill();
    }
    procs.node(3).start().await;
    let alone = procs.node(3).raft_status().await;
    assert!(alone.last_log_index >= before.last_log_index, "log lost: {alone:?} after {before:?}");
    assert!(alone.last_applied_index >= before.last_applied_index, "committed entries not re-applied: {alone:?}");
    let mut listed = procs.node(3).vm_names().await;
    listed.sort();
    assert_eq!(listed, ["before-kill", "while-down"]);

    // The others come back from their own disks; the cluster elects a leader and takes writes.
    procs.node(1).start().await;
    procs.node(2).start().await;
    procs.node(2).create_vm("after-restart").await;
    for id in 1..=3 {
        procs.node(id).wait_for_vms(&["before-kill", "while-down", "after-restart"]).await;
    }
    eprintln!("process restart test took {:?}", started.elapsed());
}

/// The leader and term every running node agrees on, once they do.
async fn agreed_leader(procs: &mut Procs) -> (u64, u64) {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut seen = vec![];
        for id in 1..=3 {
            let s = procs.node(id).raft_status().await;
            seen.push((s.leader_id, s.term));
        }
        if seen[0].0 != 0 && seen.iter().all(|s| *s == seen[0]) {
            return seen[0];
        }
        assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `id` knows a leader; returns its status then.
async fn hears_leader(procs: &mut Procs, id: u64) -> RaftStatusReply {
    let deadline = Instant::now() + WAIT;
    loop {
        let s = procs.node(id).raft_status().await;
        if s.leader_id != 0 {
            return s;
        }
        assert!(Instant::now() < deadline, "node {id} heard no leader after its restart: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_restarts_start_no_election_while_the_leader_lives_and_lose_no_write() {
    let started = Instant::now();
    let mut procs = Procs::new();
    for id in 1..=3 {
        procs.node(id).start().await;
    }
    procs.node(1).create_vm("seed").await;
    let (mut follower_restarts, mut leader_restarts, mut follower_elections, mut failed_writes) = (0, 0, 0, vec![]);
    let mut heard_after = vec![];
    // A fixed pseudo-random sequence of victims and signals, so a failure can be replayed.
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    for round in 0..20 {
        let (leader, term) = agreed_leader(&mut procs).await;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let victim = seed % 3 + 1;
        let sigterm = (seed >> 8).is_multiple_of(2);
        if sigterm {
            procs.node(victim).terminate();
        } else {
            procs.node(victim).kill();
        }
        // Down long enough that the survivors' connections to it die and the leader's heartbeats
        // to it fail, as in a restart by hand or by a supervisor's back-off.
        tokio::time::sleep(DOWNTIME).await;
        procs.node(victim).start().await;
        let up = Instant::now();
        let status = hears_leader(&mut procs, victim).await;
        heard_after.push(up.elapsed());
        if victim == leader {
            leader_restarts += 1;
        } else {
            follower_restarts += 1;
            // The leader lived throughout: any election raised the term.
            let (now_leader, now_term) = agreed_leader(&mut procs).await;
            if now_term != term || now_leader != leader {
                follower_elections += 1;
                eprintln!(
                    "round {round}: node {victim} restarted; term {term} -> {now_term}, leader {leader} -> {now_leader}"
                );
            }
        }
        // Joined: every node, the restarted one included, names the same leader.
        agreed_leader(&mut procs).await;
        // One write through the restarted node, once it has joined: no retry.
        let client = VmServiceClient::new(procs.node(victim).channel().await).with_default_timeout(WAIT);
        let name = format!("after-restart-{round}");
        let request = CreateVmRequest { name: name.clone(), vcpus: 1, memory_mib: 64, image: String::new() };
        if let Err(e) = client.create_vm(request).await {
            failed_writes.push(format!("round {round} via node {victim} ({status:?}): {e}"));
        }
    }
    heard_after.sort();
    println!(
        "20 restarts: {follower_restarts} of a follower, {leader_restarts} of the leader; elections while the \
         leader lived: {follower_elections}; failed writes: {}; restarted node heard the leader after p50 {:?}, \
         max {:?}; took {:?}",
        failed_writes.len(),
        heard_after[heard_after.len() / 2],
        heard_after.last().unwrap(),
        started.elapsed()
    );
    assert_eq!(follower_elections, 0, "a restarted follower started an election while the leader lived");
    assert!(failed_writes.is_empty(), "writes through a restarted node failed: {failed_writes:#?}");
    assert!(follower_restarts > 0 && leader_restarts > 0, "the sequence restarts both kinds of node");
}

/// The first chunks of an upload, and the rest, for an upload held in flight across a signal.
fn upload_in_two_parts(name: &str) -> (Vec<ImageChunk>, Vec<ImageChunk>) {
    let data: Vec<u8> = (0..3 * CHUNK).map(|i| (i % 253) as u8).collect();
    let header = ImageHeader {
        name: name.into(),
        size: data.len() as u64,
        blake3: bytes::Bytes::copy_from_slice(blake3::hash(&data).as_bytes()),
    };
    let mut chunks: Vec<ImageChunk> = data
        .chunks(CHUNK)
        .enumerate()
        .map(|(i, part)| ImageChunk {
            header: (i == 0).then(|| header.clone()),
            offset: (i * CHUNK) as u64,
            data: bytes::Bytes::copy_from_slice(part),
            chunk_blake3: bytes::Bytes::copy_from_slice(blake3::hash(part).as_bytes()),
        })
        .collect();
    let rest = chunks.split_off(1);
    (chunks, rest)
}

const CHUNK: usize = 1 << 20;

/// SIGTERM on the leader with a call in flight: the call finishes, new calls are refused, leadership
/// passes to a follower without waiting out an election timeout, and the process exits 0. The JSON
/// logs tell the story, each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_leader_hands_over_and_exits_zero() {
    let mut procs = Procs::new();
    for id in 1..=3 {
        procs.node(id).start().await;
    }
    procs.node(2).create_vm("placed").await;
    let (leader, _) = agreed_leader(&mut procs).await;
    assert_eq!(leader, 1, "the bootstrap node leads a fresh cluster");

    // An upload through the leader, its first chunk sent, the rest held back until after SIGTERM.
    let images = ImageServiceClient::new(procs.node(1).channel().await).with_default_timeout(WAIT);
    let (first, rest) = upload_in_two_parts("drained");
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    for chunk in first {
        tx.send(chunk).await.unwrap();
    }
    let upload =
        tokio::spawn(async move { images.upload_image(tokio_stream::wrappers::ReceiverStream::new(rx)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    procs.node(1).signal_term();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let refused = ClusterStatusClient::new(procs.node(1).channel().await)
        .with_default_timeout(Duration::from_secs(5))
        .get_cluster_status(GetClusterStatusRequest {})
        .await
        .expect_err("a draining node takes no new calls");
    assert_eq!(refused.code(), duet::Code::Unavailable, "{refused}");

    for chunk in rest {
        tx.send(chunk).await.unwrap();
    }
    drop(tx);
    let info = upload.await.unwrap().expect("the call in flight finishes").into_inner();
    assert_eq!(info.holders, [1], "{info:?}");

    let status = procs.node(1).exited().await;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0: {status}");
    let node1 = &procs.nodes[0];
    for message in [
        "bootstrapped a new cluster",
        "elected leader",
        "draining: new client calls are refused",
        "handed leadership over",
        "stopped cleanly",
    ] {
        assert_eq!(
            node1.logged(message).len(),
            1,
            "node 1 logs {message:?} once:\n{}",
            std::fs::read_to_string(node1.output()).unwrap()
        );
    }
    assert_eq!(node1.logged("placing a new VM").len(), 1, "one VM, one placement");
    assert_eq!(node1.logged("holding a verified image").len(), 1, "one image transfer, one event");
    for id in [2, 3] {
        let node = &procs.nodes[id as usize - 1];
        assert_eq!(node.logged("joined the cluster").len(), 1, "node {id} joins once");
        let leaders: Vec<_> = node.logged("following a new leader").iter().map(|v| v["leader"].clone()).collect();
        assert!(leaders.windows(2).all(|w| w[0] != w[1]), "node {id} logs each leader change once: {leaders:?}");
        let memberships: Vec<_> =
            node.logged("cluster membership").iter().map(|v| (v["voters"].clone(), v["learners"].clone())).collect();
        assert!(memberships.windows(2).all(|w| w[0] != w[1]), "node {id} logs each membership once: {memberships:?}");
    }

    // The survivors agree on a new leader at once, not after an election timeout and a split vote.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let s = procs.node(2).raft_status().await;
        if s.leader_id != 0 && s.leader_id != 1 {
            break;
        }
        assert!(Instant::now() < deadline, "no new leader after the handover: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node told to join through a member that is not there says so while it keeps trying, naming the
/// seed and the reason, instead of staying silent until it gives up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_to_a_dead_member_warns_while_it_retries() {
    let dir = tempfile::tempdir().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = dir.path().join("node-2.toml");
    std::fs::write(
        &config,
        format!(
            "[node]\nid = 2\nname = \"node-2\"\njoin = [\"duet:grpc=127.0.0.1:{dead}\"]\n\
             [transport]\nmode = \"grpc\"\n[transport.grpc]\nbind_address = \"127.0.0.1:0\"\n"
        ),
    )
    .unwrap();
    let mut node =
        ProcNode { id: 2, config, dir: dir.path().to_owned(), child: None, starts: 1, ticket: String::new() };
    let out = File::create(node.output()).unwrap();
    node.child = Some(
        Command::new(BIN)
            .args(["--log-format", "json", "node", "--config"])
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("the node binary starts"),
    );
    let deadline = Instant::now() + WAIT;
    let warning = loop {
        if let Some(w) = node.logged("join failed; retrying").into_iter().next() {
            break w;
        }
        assert!(Instant::now() < deadline, "no join warning: {}", std::fs::read_to_string(node.output()).unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(node.child.as_mut().unwrap().try_wait().unwrap().is_none(), "it warns while it still tries");
    assert_eq!(warning["level"], "WARN");
    assert_eq!(warning["through"], format!("duet:grpc=127.0.0.1:{dead}"), "{warning}");
    assert_eq!(warning["code"], "Unavailable", "{warning}");
    assert!(warning["retrying_for_s"].as_u64().is_some_and(|s| s > 0), "{warning}");
    node.kill();
}
