//! One orchestrator node: its duet server (every service on gRPC and Iroh), its Raft, its peer
//! connector, and the tasks that tie them together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use duet::iroh::Connector;
use duet::{Mode, PeerAddr, Server, ServerHandle, Status, Transport};
use futures_util::future::BoxFuture;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::task::JoinHandle;

use crate::backend::{SimBackend, VmBackend};
use crate::calls::CallLog;
use crate::config::NodeConfig;
use crate::ctx::Ctx;
use crate::images::ImageStore;
use crate::liveness::Liveness;
use crate::pb::orchestrator::v1::{
    ClusterStatusClient, ClusterStatusServer, ImageServiceServer, JoinClusterRequest, MonitoringServer, RaftPayload,
    RaftServiceClient, RaftServiceServer, VmServiceServer,
};
use crate::raft::{Applied, LogStore, Member, Raft, RaftRpc, RaftSender, StateMachineStore};
use crate::services::{ClusterStatusService, ImageServiceImpl, MonitoringService, RaftServiceImpl, VmServiceImpl};
use crate::state::{NodeId, Outcome, VmRecord, VmState};
use duet_health::HealthReporter;
use duet_health::pb::health_check_response::ServingStatus;

/// Deadline of a call to a peer (Raft RPCs use openraft's own, shorter, per-RPC deadlines).
pub const PEER_RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The config is unusable.
    #[error(transparent)]
    Config(#[from] duet::ConfigError),
    /// A transport could not be set up.
    #[error(transparent)]
    Transport(#[from] duet::Error),
    /// Raft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// `node.data_dir` could not be opened, or holds damaged files.
    #[error("node.data_dir: {}: {source}", path.display())]
    Storage {
        /// The directory.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The node could not join the cluster.
    #[error("joining the cluster through {seeds}: {status}")]
    Join {
        /// The tickets tried.
        seeds: String,
        /// The last refusal.
        status: Status,
    },
}

/// What survives a node's crash: its Raft log and state machine, its images, its Iroh key and its
/// addresses — the node's disk, in memory (the in-process cluster keeps it to simulate a crash) or in
/// `node.data_dir` ([`NodeDisk::open`]). Pass it to [`Node::start`] to restart the node.
#[derive(Debug, Clone)]
pub struct NodeDisk {
    /// The Raft log.
    pub log: LogStore,
    /// The state machine.
    pub state_machine: StateMachineStore,
    /// Images.
    pub images: ImageStore,
    /// The gRPC address the node had, bound again on restart so its ticket stays valid.
    pub grpc_addr: Option<SocketAddr>,
    /// The Iroh UDP port the node had.
    pub iroh_port: Option<u16>,
    /// The Iroh secret key the node had, so its endpoint id (in its peers' Raft membership) stays.
    pub iroh_key: Option<iroh::SecretKey>,
    /// With `node.data_dir`: the directory's lock, held while any clone of this disk lives, so a
    /// second process started on the same directory is refused instead of corrupting the log.
    pub lock: Option<Arc<std::fs::File>>,
}

impl NodeDisk {
    /// A first start's disk for `config`: empty and in memory, or, with `node.data_dir`, what a
    /// previous run left there. The Iroh key is kept there too (unless `transport.iroh.secret_key_file`
    /// puts it elsewhere), so with fixed ports the node's ticket, which its peers know it by, survives
    /// a restart.
    pub fn open(config: &NodeConfig) -> Result<Self, NodeError> {
        let max_image_bytes = config.node.max_image_bytes;
        let Some(dir) = &config.node.data_dir else {
            return Ok(Self {
                log: LogStore::new(),
                state_machine: StateMachineStore::new(),
                images: ImageStore::new(max_image_bytes),
                grpc_addr: None,
                iroh_port: None,
                iroh_key: None,
                lock: None,
            });
        };
        let storage = |path: PathBuf| move |source| NodeError::Storage { path, source };
        std::fs::create_dir_all(dir).map_err(storage(dir.clone()))?;
        let lock = std::fs::File::create(dir.join("lock")).map_err(storage(dir.clone()))?;
        if let Err(e) = lock.try_lock() {
            let source = match e {
                std::fs::TryLockError::WouldBlock => std::io::Error::other(
                    "in use by another node process (its lock file is held); give each node its own data_dir",
                ),
                std::fs::TryLockError::Error(e) => e,
            };
            return Err(NodeError::Storage { path: dir.clone(), source });
        }
        check_node_id(dir, config.node.id).map_err(storage(dir.clone()))?;
        let (raft, images) = (dir.join("raft"), dir.join("images"));
        let iroh = &config.transport.iroh;
        let iroh_key = match config.transport.mode {
            Mode::Dual | Mode::Iroh if iroh.secret_key_file.is_none() => {
                let path = dir.join("iroh.key");
                let key = duet::iroh::endpoint::load_or_create_key(&path).map_err(|e| NodeError::Storage {
                    path: path.clone(),
                    source: std::io::Error::other(format!("{e}; restore the file, or delete it to take a new Iroh id")),
                })?;
                Some(key)
            }
            _ => None,
        };
        Ok(Self {
            log: LogStore::open(&raft).map_err(storage(raft.clone()))?,
            state_machine: StateMachineStore::open(&raft).map_err(storage(raft))?,
            images: ImageStore::open(&images, max_image_bytes).map_err(storage(images))?,
            grpc_addr: None,
            iroh_port: None,
            iroh_key,
            lock: Some(Arc::new(lock)),
        })
    }
}

/// Records which node a data directory belongs to on first use, and refuses it to any other node:
/// another node's vote and log would break Raft's guarantees.
fn check_node_id(dir: &std::path::Path, id: NodeId) -> std::io::Result<()> {
    let path = dir.join("node-id");
    match std::fs::read_to_string(&path) {
        Ok(text) if text.trim() == id.to_string() => Ok(()),
        Ok(text) => Err(std::io::Error::other(format!(
            "belongs to node {} (its node-id file), not node.id = {id}; give each node its own data_dir",
            text.trim()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::write(&path, format!("{id}\n")),
        Err(e) => Err(e),
    }
}

/// How to start a node beyond its config.
#[derive(Clone)]
pub struct NodeOptions {
    /// The hypervisor (default: [`SimBackend`]).
    pub backend: Arc<dyn VmBackend>,
    /// A previous run's disk, to restart the node with its state (default: [`NodeDisk::open`]).
    pub disk: Option<NodeDisk>,
    /// The process's Prometheus recorder, for the `Monitoring` service.
    pub metrics: Option<PrometheusHandle>,
    /// Where the node records the calls it makes (shared with the demo's table).
    pub calls: CallLog,
}

impl Default for NodeOptions {
    fn default() -> Self {
        Self { backend: Arc::new(SimBackend::default()), disk: None, metrics: None, calls: CallLog::default() }
    }
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions").field("disk", &self.disk).finish_non_exhaustive()
    }
}

/// A running node.
pub struct Node {
    ctx: Arc<Ctx>,
    drain: Arc<crate::drain::Drain>,
    server: ServerHandle,
    disk: NodeDisk,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.ctx.id).field("ticket", &self.ticket()).finish_non_exhaustive()
    }
}

/// Raft's RPCs over duet's generated client, through the peer connector.
struct DuetRaftSender {
    peers: Arc<crate::peers::Peers>,
    calls: CallLog,
    liveness: Arc<Liveness>,
}

impl RaftSender for DuetRaftSender {
    fn send(
        &self,
        target: NodeId,
        member: &Member,
        rpc: RaftRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, Status>> {
        let channel = self.peers.channel(&member.ticket);
        let calls = self.calls.clone();
        let liveness = self.liveness.clone();
        Box::pin(async move {
            let client = RaftServiceClient::new(channel?).with_default_timeout(timeout);
            let request = RaftPayload { postcard: payload.into() };
            let started = Instant::now();
            let (name, reply) = match rpc {
                RaftRpc::AppendEntries => ("AppendEntries", client.append_entries(request).await),
                RaftRpc::Vote => ("Vote", client.vote(request).await),
                RaftRpc::InstallSnapshot => ("InstallSnapshot", client.install_snapshot(request).await),
            };
            let took = started.elapsed();
            let transport = reply.as_ref().ok().and_then(|r| r.extensions().get::<Transport>().copied());
            if reply.is_ok() {
                liveness.heard(target, transport);
            }
            calls.record("5 raft", &format!("RaftService/{name}"), transport, took);
            let label = transport.map_or("failed", |t| if t == Transport::Iroh { "iroh" } else { "grpc" });
            metrics::histogram!("orchestrator_raft_rpc_seconds", "rpc" => name, "transport" => label)
                .record(took.as_secs_f64());
            Ok(reply?.into_inner().postcard.to_vec())
        })
    }
}

/// Full proto names of the services a node serves, for health.
const SERVICES: [&str; 6] = [
    "grpc.health.v1.Health",
    "orchestrator.v1.ClusterStatus",
    "orchestrator.v1.Monitoring",
    "orchestrator.v1.VmService",
    "orchestrator.v1.ImageService",
    "orchestrator.v1.RaftService",
];

impl Node {
    /// Starts a node: binds its transports, starts Raft, serves every service, then bootstraps a new
    /// cluster (`node.bootstrap`, first start only) or joins through `node.join` (retrying until a
    /// member lets it in or `join_timeout` passes).
    pub async fn start(config: &NodeConfig, options: NodeOptions) -> Result<Node, NodeError> {
        let disk = match options.disk.clone() {
            Some(disk) => disk,
            None => NodeDisk::open(config)?,
        };
        let mut transport = config.transport.clone();
        if let Some(addr) = disk.grpc_addr {
            transport.grpc.bind_address = addr;
        }
        if let Some(port) = disk.iroh_port {
            transport.iroh.bind_port = port;
        }
        let join = config.join_tickets()?;
        let endpoint = match (transport.mode, disk.iroh_key.clone()) {
            (Mode::Grpc, _) => None,
            (_, Some(key)) => Some(duet::iroh::endpoint::bind_from_config_with_key(&transport.iroh, key).await?),
            (_, None) => Some(duet::iroh::endpoint::bind_from_config(&transport.iroh).await?),
        };
        // A node behind a NAT is reached through its home relay: the ticket it joins with (and that
        // the cluster hands its peers) names the relay only once the endpoint has reached it.
        if let (Some(endpoint), Some(relay)) = (&endpoint, transport.iroh.relay_url())
            && tokio::time::timeout(RELAY_WAIT, endpoint.online()).await.is_err()
        {
            tracing::warn!(relay, "the home relay was not reached in {RELAY_WAIT:?}; the ticket names no relay");
        }
        let connector = endpoint.clone().map(|e| Connector::from_config(e, &transport.iroh));
        let peers = Arc::new(crate::peers::Peers::new(transport.clone(), connector, config.node.cluster_token.clone()));
        let liveness = Arc::new(Liveness::new(Duration::from_millis(config.node.heartbeat_ms)));
        let sender =
            Arc::new(DuetRaftSender { peers: peers.clone(), calls: options.calls.clone(), liveness: liveness.clone() });
        let raft_config = Arc::new(crate::raft::raft_config(Duration::from_millis(config.node.heartbeat_ms)));
        // Subscribed before Raft starts: starting re-applies the committed log.
        let applied = disk.state_machine.subscribe();
        let raft = crate::raft::start(
            config.node.id,
            raft_config.clone(),
            sender,
            disk.log.clone(),
            disk.state_machine.clone(),
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let quiet = quiet_start(&raft, config.node.id, &raft_config);
        let ctx = Arc::new(Ctx {
            id: config.node.id,
            name: config.node.name.clone(),
            raft: raft.clone(),
            sm: disk.state_machine.clone(),
            shared_state: disk.state_machine.state(),
            peers,
            images: disk.images.clone(),
            backend: options.backend.clone(),
            calls: options.calls.clone(),
            metrics: options.metrics.clone(),
            join_lock: tokio::sync::Mutex::new(()),
            rpc_timeout: PEER_RPC_TIMEOUT,
            liveness,
        });

        let (health, health_service) = duet_health::health_reporter();
        for service in std::iter::once("").chain(SERVICES) {
            health.set_not_serving(service);
        }
        // Both reflection versions: grpcurl speaks v1, Python grpcio's reflection client v1alpha.
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(crate::pb::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(duet_health::pb::FILE_DESCRIPTOR_SET)
        };
        let reflection_error = |e: tonic_reflection::server::Error| NodeError::Raft(format!("reflection: {e}"));
        let reflection_v1 = reflection().build_v1().map_err(reflection_error)?;
        let reflection_v1alpha = reflection().build_v1alpha().map_err(reflection_error)?;
        let admission = Arc::new(crate::auth::Admission::new(
            raft.clone(),
            config.node.cluster_token.clone(),
            transport.grpc.tls_enabled && transport.grpc.tls_client_auth,
        ));
        if admission.grpc_is_open() && transport.mode != Mode::Iroh {
            tracing::warn!(
                "node.cluster_token is not set and the gRPC port has no mutual TLS: Raft, Propose and JoinCluster \
                 calls over gRPC are admitted from anyone who reaches the port"
            );
        }
        let drain = Arc::new(crate::drain::Drain::default());
        let mut server =
            Server::from_config(&transport)?.interceptor(move |req| admission.check(req)).layer(drain.layer());
        if let Some(endpoint) = endpoint {
            server = server.iroh(endpoint);
        }
        let limits = transport.grpc.max_message_size;
        let server = server
            .add_service(health_service)
            .add_service(ClusterStatusServer::new(ClusterStatusService(ctx.clone())))
            .add_service(MonitoringServer::new(MonitoringService(ctx.clone())))
            .add_service(VmServiceServer::new(VmServiceImpl(ctx.clone())))
            .add_service(ImageServiceServer::new(ImageServiceImpl(ctx.clone())))
            .add_service(RaftServiceServer::new(RaftServiceImpl(ctx.clone())))
            .max_decoding_message_size(limits);
        let server = if transport.mode == Mode::Iroh {
            server
        } else {
            server.add_grpc_service(reflection_v1).add_grpc_service(reflection_v1alpha)
        };
        let server = server.serve().await?;
        let ticket = server.peer_addr();
        let disk = NodeDisk {
            grpc_addr: server.grpc_addr(),
            iroh_port: server.iroh_addr().and_then(|a| a.ip_addrs().next().map(|s| s.port())),
            iroh_key: server.endpoint().map(|e| e.secret_key().clone()),
            ..disk
        };

        let mut tasks = vec![
            tokio::spawn(health_task(raft.clone(), config.node.id, health)),
            tokio::spawn(applied_task(ctx.clone(), applied)),
            crate::events::spawn(raft.clone(), config.node.id),
        ];
        tasks.extend(quiet);
        let node = Node { ctx, drain, server, disk, tasks };
        if !raft.is_initialized().await.map_err(|e| NodeError::Raft(e.to_string()))? {
            if config.node.bootstrap {
                let me = Member { name: config.node.name.clone(), ticket: ticket.to_string() };
                raft.initialize(std::collections::BTreeMap::from([(config.node.id, me)]))
                    .await
                    .map_err(|e| NodeError::Raft(format!("bootstrap: {e}")))?;
                tracing::info!(node = config.node.id, "bootstrapped a new cluster");
            } else {
                node.join(&join, Duration::from_secs(30)).await?;
            }
        }
        Ok(node)
    }

    /// Asks the members in `seeds`, in turn, to add this node, until one does or `timeout` passes.
    async fn join(&self, seeds: &[PeerAddr], timeout: Duration) -> Result<(), NodeError> {
        let request =
            JoinClusterRequest { id: self.ctx.id, name: self.ctx.name.clone(), ticket: self.ticket().to_string() };
        let deadline = Instant::now() + timeout;
        let mut last = Status::unavailable("no seed tried");
        // Retries run every 200 ms; the log says why they fail once per seed every few seconds.
        let mut warned: Vec<Option<Instant>> = vec![None; seeds.len()];
        loop {
            for (seed, warned) in seeds.iter().zip(&mut warned) {
                let attempt = match self.ctx.peers.channel(&seed.to_string()) {
                    Ok(channel) => {
                        let client = ClusterStatusClient::new(channel).with_default_timeout(PEER_RPC_TIMEOUT * 4);
                        let join = client.join_cluster(request.clone());
                        self.ctx.calls.timed("4 peer connector", "ClusterStatus/JoinCluster", join).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                };
                match attempt {
                    Ok(()) => {
                        tracing::info!(node = self.ctx.id, through = %seed, "joined the cluster");
                        return Ok(());
                    }
                    Err(e) => {
                        if warned.is_none_or(|at| at.elapsed() >= JOIN_WARN_EVERY) {
                            *warned = Some(Instant::now());
                            let left = deadline.saturating_duration_since(Instant::now());
                            tracing::warn!(
                                node = self.ctx.id,
                                through = %seed,
                                code = ?e.code(),
                                error = e.message(),
                                retrying_for_s = left.as_secs(),
                                "join failed; retrying"
                            );
                        }
                        last = e;
                    }
                }
            }
            if Instant::now() >= deadline {
                let seeds = seeds.iter().map(|s| s.to_string()).collect::<Vec<_>>().join(", ");
                return Err(NodeError::Join { seeds, status: last });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The node's Raft id.
    pub fn id(&self) -> NodeId {
        self.ctx.id
    }

    /// The node's ticket: its gRPC address and Iroh endpoint.
    pub fn ticket(&self) -> PeerAddr {
        self.server.peer_addr()
    }

    /// The node's Raft handle.
    pub fn raft(&self) -> &Raft {
        &self.ctx.raft
    }

    /// The node's hypervisor.
    pub fn backend(&self) -> &Arc<dyn VmBackend> {
        &self.ctx.backend
    }

    /// A copy of the replicated state as this node has applied it.
    pub fn state(&self) -> crate::state::ClusterState {
        self.ctx.state().clone()
    }

    /// Cuts the node's Iroh side (its endpoint closes; calls to and from it over Iroh fail), leaving
    /// gRPC up: what an operator does to take Iroh out, and what the fallback tests do.
    pub async fn cut_iroh(&mut self) {
        self.server.stop_iroh().await;
    }

    /// Stops the node as SIGTERM asks: new client calls are refused (Raft's own go on, so writes in
    /// flight through this node can commit and apply); calls in flight get
    /// [`duet::DEFAULT_SHUTDOWN_GRACE`] to finish; a leader then hands leadership to its most
    /// caught-up live follower; the server closes; Raft shuts down, closing its log.
    pub async fn drain(self) -> NodeDisk {
        self.drain.start();
        let in_flight = self.drain.in_flight();
        tracing::info!(node = self.ctx.id, in_flight, "draining: new client calls are refused");
        let left = self.drain.idle(duet::DEFAULT_SHUTDOWN_GRACE).await;
        if left > 0 {
            tracing::warn!(node = self.ctx.id, left, "calls still in flight after the grace period are cut");
        }
        if self.ctx.is_leader() {
            self.hand_over().await;
        }
        self.server.shutdown().await;
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
        for task in &self.tasks {
            task.abort();
        }
        self.disk
    }

    /// Asks the follower that has replicated the most to stand for election, and waits (a few
    /// election timeouts at most) until another node leads.
    async fn hand_over(&self) {
        let ctx = &self.ctx;
        let metrics = ctx.raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = metrics.membership_config.membership().voter_ids().filter(|v| *v != ctx.id).collect();
        let matched = |id: &NodeId| {
            metrics.replication.as_ref().and_then(|r| r.get(id).copied().flatten()).map_or(0, |l| l.index)
        };
        let Some(heir) = voters.iter().filter(|v| ctx.liveness.is_live(**v)).max_by_key(|v| (matched(v), **v)) else {
            tracing::warn!(
                node = ctx.id,
                "no live follower to hand leadership to; the cluster will elect after a timeout"
            );
            return;
        };
        // Followers refuse votes while the leader's heartbeats keep their lease fresh: stop them, so
        // the heir can win even where this node's vote is not enough for a quorum.
        ctx.raft.runtime_config().heartbeat(false);
        let Some((_, member, _)) = ctx.members().into_iter().find(|(id, _, _)| id == heir) else { return };
        let asked = match ctx.peers.channel(&member.ticket) {
            Ok(channel) => RaftServiceClient::new(channel)
                .with_default_timeout(ctx.rpc_timeout)
                .trigger_election(RaftPayload::default())
                .await
                .map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = asked {
            tracing::warn!(node = ctx.id, heir, error = %e, "could not hand leadership over; the cluster will elect after a timeout");
            return;
        }
        let heartbeat = Duration::from_millis(ctx.raft.config().heartbeat_interval);
        let handed = ctx
            .raft
            .wait(Some(heartbeat * 40))
            .metrics(|m| m.current_leader.is_some_and(|l| l != ctx.id), "another node leads")
            .await;
        match handed {
            Ok(m) => tracing::info!(
                node = ctx.id,
                leader = m.current_leader,
                term = m.current_term,
                "handed leadership over"
            ),
            Err(e) => tracing::warn!(node = ctx.id, heir, error = %e, "leadership was not handed over in time"),
        }
    }

    /// Stops the node at once, as a crash would for its peers: Raft, then its server. Returns its
    /// disk, to restart it with [`Node::start`].
    pub async fn shutdown(self) -> NodeDisk {
        if let Err(e) = self.ctx.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
        for task in &self.tasks {
            task.abort();
        }
        self.server.shutdown().await;
        self.disk
    }
}

/// Keeps health at `SERVING`, for the node (`""`) and each of its services, while the node is a voter
/// that knows a leader.
async fn health_task(raft: Raft, id: NodeId, health: HealthReporter) {
    let set = |status: ServingStatus| {
        for service in std::iter::once("").chain(SERVICES) {
            health.set_service_status(service, status);
        }
    };
    let mut metrics = raft.metrics();
    let mut last = None;
    loop {
        let serving = {
            let m = metrics.borrow_and_update();
            m.current_leader.is_some() && m.membership_config.membership().voter_ids().any(|v| v == id)
        };
        let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
        if last != Some(status) {
            set(status);
            last = Some(status);
        }
        if metrics.changed().await.is_err() {
            set(ServingStatus::NotServing);
            return;
        }
    }
}

/// How often a failing join says so in the log, per seed.
const JOIN_WARN_EVERY: Duration = Duration::from_secs(5);

/// How long a starting node waits to reach its home relay before it joins without it.
const RELAY_WAIT: Duration = Duration::from_secs(10);

/// A restarted member stays out of elections until it hears a leader, or for this many of its
/// longest election timeouts if none speaks up (a whole cluster restarted), and at least 3 s.
const QUIET_TIMEOUTS: u64 = 4;

/// A member restarted from its disk does not stand for election before it has heard whether a
/// leader lives. A node that comes back and times out before the leader's heartbeats reach it would
/// otherwise raise the term, refuse the leader's lower-term appends and force a needless election
/// on the healthy majority. The others' leader lease (openraft refuses votes while a leader is
/// heard) does not stop this: the restarted node's own higher term deposes the leader when it
/// answers an append. Returns the task that turns elections back on.
fn quiet_start(raft: &Raft, id: NodeId, config: &openraft::Config) -> Option<JoinHandle<()>> {
    let m = raft.metrics().borrow().clone();
    let others = m.membership_config.membership().voter_ids().filter(|v| *v != id).count();
    if others == 0 || m.current_leader.is_some() {
        return None;
    }
    raft.runtime_config().elect(false);
    let quiet = Duration::from_millis(config.election_timeout_max * QUIET_TIMEOUTS).max(Duration::from_secs(3));
    let raft = raft.clone();
    Some(tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let heard = tokio::time::timeout(quiet, metrics.wait_for(|m| m.current_leader.is_some_and(|l| l != id))).await;
        match heard {
            Ok(Ok(m)) => tracing::info!(leader = ?m.current_leader, "heard the leader after the restart; elections on"),
            _ => tracing::info!(?quiet, "no leader heard since the restart; elections on"),
        }
        raft.runtime_config().elect(true);
    }))
}

/// How often the hypervisor is brought in line with the whole replicated state, besides each change.
const RECONCILE_EVERY: Duration = Duration::from_secs(5);

/// Hands every committed VM change placed on this node to its hypervisor, and every
/// [`RECONCILE_EVERY`] (and at start) the whole state: changes that arrive without an event (the
/// log re-applied at start, an installed snapshot, a lagging feed) reach the hypervisor too.
async fn applied_task(ctx: Arc<Ctx>, mut applied: tokio::sync::broadcast::Receiver<Applied>) {
    let mut every = tokio::time::interval(RECONCILE_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => reconcile_all(&ctx),
            next = applied.recv() => match next {
                Ok(a) => {
                    if let Outcome::Vm(vm) = &a.outcome
                        && vm.host == ctx.id
                        && let Err(e) = ctx.backend.reconcile(vm)
                    {
                        tracing::error!(vm = %vm.name, error = %e, "the hypervisor could not apply a committed change");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "applied-change feed lagged; reconciling from the full state");
                    reconcile_all(&ctx);
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Makes the hypervisor hold exactly the VMs the state places on this node, in their state.
fn reconcile_all(ctx: &Ctx) {
    let (here, gone): (Vec<VmRecord>, Vec<VmRecord>) = {
        let state = ctx.state();
        let here = state.vms.values().filter(|vm| vm.host == ctx.id).cloned().collect();
        let gone = ctx
            .backend
            .inventory()
            .into_keys()
            .filter(|name| state.vms.get(name).is_none_or(|vm| vm.host != ctx.id))
            .map(|name| VmRecord {
                name,
                vcpus: 0,
                memory_mib: 0,
                image: String::new(),
                state: VmState::Deleted,
                host: ctx.id,
                revision: 0,
            })
            .collect();
        (here, gone)
    };
    for vm in here.iter().chain(&gone) {
        if let Err(e) = ctx.backend.reconcile(vm) {
            tracing::error!(vm = %vm.name, error = %e, "the hypervisor could not reconcile a VM");
        }
    }
}
