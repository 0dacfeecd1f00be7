//! What every service of a node shares: its identity, its Raft handle, its peers and its stores.

use std::sync::{Arc, RwLockReadGuard};
use std::time::Duration;

use duet::Status;
use metrics_exporter_prometheus::PrometheusHandle;
use openraft::error::{ClientWriteError, RaftError};

use crate::backend::VmBackend;
use crate::calls::CallLog;
use crate::images::ImageStore;
use crate::pb::orchestrator::v1::{ClusterStatusClient, GetRaftStatusRequest, RaftPayload, RaftServiceClient};
use crate::peers::Peers;
use crate::raft::{Member, Raft, StateMachineStore};
use crate::state::{ClusterState, Command, NodeId, Outcome, RejectKind};

/// Metadata key set on a write a follower forwarded, so the receiver never forwards it again.
pub const FORWARDED: &str = "x-orchestrator-forwarded";

/// A node's shared context.
pub struct Ctx {
    /// Raft node id.
    pub id: NodeId,
    /// Name for humans.
    pub name: String,
    /// The Raft handle.
    pub raft: Raft,
    /// The state machine (for event subscriptions).
    pub sm: StateMachineStore,
    /// The replicated state as this node applied it, read directly by the read-only calls.
    pub shared_state: Arc<std::sync::RwLock<ClusterState>>,
    /// The peer connector.
    pub peers: Arc<Peers>,
    /// Images held here.
    pub images: ImageStore,
    /// The hypervisor.
    pub backend: Arc<dyn VmBackend>,
    /// Calls this node made to peers.
    pub calls: CallLog,
    /// Prometheus recorder, if installed in this process.
    pub metrics: Option<PrometheusHandle>,
    /// Serializes membership changes on the leader (openraft takes one at a time).
    pub join_lock: tokio::sync::Mutex<()>,
    /// Deadline of calls to peers.
    pub rpc_timeout: Duration,
    /// When each member was last heard from.
    pub liveness: Arc<crate::liveness::Liveness>,
}

/// A write found no leader to go to: nothing was proposed.
struct NoLeader;

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("id", &self.id).field("name", &self.name).finish_non_exhaustive()
    }
}

impl Ctx {
    /// The replicated state as this node has applied it.
    pub fn state(&self) -> RwLockReadGuard<'_, ClusterState> {
        self.shared_state.read().expect("state lock")
    }

    /// The leader this node knows of, with its addresses.
    pub fn leader(&self) -> Option<(NodeId, Member)> {
        let metrics = self.raft.metrics().borrow().clone();
        let id = metrics.current_leader?;
        let member = metrics.membership_config.membership().get_node(&id)?.clone();
        Some((id, member))
    }

    /// Whether this node is the leader, as far as it knows.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Members of the cluster and whether each votes.
    pub fn members(&self) -> Vec<(NodeId, Member, bool)> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: std::collections::BTreeSet<_> = membership.voter_ids().collect();
        membership.nodes().map(|(id, m)| (*id, m.clone(), voters.contains(id))).collect()
    }

    /// Commits `command` through Raft and returns its outcome: directly on the leader; on a follower by
    /// forwarding it to the leader over the peer connector, then waiting until this node has applied
    /// it too, so a client reads its own write from the node it wrote through. `forwarded` is true
    /// when this call is itself a forward, which is then never passed on again.
    pub async fn propose(&self, command: Command, forwarded: bool) -> Result<Outcome, Status> {
        Ok(self.propose_at(command, forwarded).await?.1)
    }

    /// [`Ctx::propose`], with the log index the command was committed at.
    pub async fn propose_at(&self, command: Command, forwarded: bool) -> Result<(u64, Outcome), Status> {
        match self.propose_once(command.clone(), forwarded).await {
            // An election under way (a leader just restarted, or stepped down for a higher term):
            // nothing was written, so the write waits for its outcome, once, instead of failing a
            // client whose cluster has a leader again within an election timeout or two.
            Err(NoLeader) => {
                self.raft
                    .wait(Some(self.rpc_timeout))
                    .metrics(|m| m.current_leader.is_some(), "a leader to be elected")
                    .await
                    .map_err(|_| Status::unavailable("no leader elected yet; retry shortly"))?;
                self.propose_once(command, forwarded)
                    .await
                    .map_err(|NoLeader| Status::unavailable("no leader elected yet; retry shortly"))?
            }
            Ok(result) => result,
        }
    }

    /// One attempt of [`Ctx::propose_at`]; `Err(NoLeader)` when this node knows of no leader, so
    /// nothing was proposed.
    async fn propose_once(
        &self,
        command: Command,
        forwarded: bool,
    ) -> Result<Result<(u64, Outcome), Status>, NoLeader> {
        // The leader hears every member, so it places VMs and judges starts; a follower forwards
        // the command as the client gave it.
        let command = if self.is_leader() {
            match crate::placement::at_leader(self, command) {
                Ok(command) => command,
                Err(status) => return Ok(Err(status)),
            }
        } else {
            command
        };
        Ok(match self.raft.client_write(command.clone()).await {
            Ok(reply) => Ok((reply.log_id.index, reply.data)),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                let (Some(leader), Some(member)) = (to.leader_id, to.leader_node) else {
                    return Err(NoLeader);
                };
                if forwarded {
                    return Ok(Err(Status::unavailable(format!(
                        "node {} is not the leader (node {leader} is); retry",
                        self.id
                    ))));
                }
                self.forward_and_apply(leader, &member, &command).await
            }
            Err(e) => Err(Status::unavailable(format!("raft write failed: {e}"))),
        })
    }

    async fn forward_and_apply(
        &self,
        leader: NodeId,
        member: &Member,
        command: &Command,
    ) -> Result<(u64, Outcome), Status> {
        let (index, outcome) = self.forward(leader, member, command).await?;
        self.applied(index, "a forwarded write").await?;
        Ok((index, outcome))
    }

    /// Waits until this node has applied everything the leader had applied when asked (a read
    /// index, over the peer connector): a read after it sees every write committed before it, even on
    /// a follower a heartbeat behind. On the leader, or with no leader known, returns at once.
    pub async fn catch_up(&self) -> Result<(), Status> {
        let Some((leader, member)) = self.leader().filter(|(id, _)| *id != self.id) else {
            return Ok(());
        };
        let channel = self.peers.channel(&member.ticket)?;
        let client = ClusterStatusClient::new(channel).with_default_timeout(self.rpc_timeout);
        let status = client.get_raft_status(GetRaftStatusRequest {});
        let index = self.calls.timed("4 peer connector", "ClusterStatus/GetRaftStatus", status).await?;
        let index = index.into_inner().last_applied_index;
        self.applied(index, &format!("catching up with leader {leader}")).await
    }

    /// Waits (up to the peer call deadline) until this node has applied the log up to `index`.
    async fn applied(&self, index: u64, what: &str) -> Result<(), Status> {
        self.raft
            .wait(Some(self.rpc_timeout))
            .applied_index_at_least(Some(index), what)
            .await
            .map(|_| ())
            .map_err(|e| Status::unavailable(format!("{what}: this node did not apply index {index} in time: {e}")))
    }

    async fn forward(&self, leader: NodeId, member: &Member, command: &Command) -> Result<(u64, Outcome), Status> {
        let channel = self.peers.channel(&member.ticket)?;
        let client = RaftServiceClient::new(channel).with_default_timeout(self.rpc_timeout);
        let payload =
            postcard::to_allocvec(command).map_err(|e| Status::internal(format!("encoding a command: {e}")))?;
        let request = forwarded(RaftPayload { postcard: payload.into() });
        let reply = self.calls.timed("4 peer connector", "RaftService/Propose", client.propose(request)).await;
        let reply =
            reply.map_err(|s| Status::new(s.code(), format!("forwarding to leader {leader}: {}", s.message())))?;
        postcard::from_bytes(&reply.into_inner().postcard)
            .map_err(|e| Status::internal(format!("leader {leader} sent an undecodable outcome: {e}")))
    }
}

/// A refused command as the status a client sees.
pub fn rejected(kind: RejectKind, message: String) -> Status {
    match kind {
        RejectKind::NotFound => Status::not_found(message),
        RejectKind::AlreadyExists => Status::already_exists(message),
        RejectKind::FailedPrecondition => Status::failed_precondition(message),
        RejectKind::InvalidArgument => Status::invalid_argument(message),
    }
}

/// A request marked as forwarded by a follower.
pub fn forwarded<T>(message: T) -> duet::Request<T> {
    let mut request = duet::Request::new(message);
    request.metadata_mut().insert(FORWARDED, "1".parse().expect("ascii"));
    request
}

/// Whether a request was forwarded by a follower.
pub fn is_forwarded<T>(request: &duet::Request<T>) -> bool {
    request.metadata().get(FORWARDED).is_some()
}
