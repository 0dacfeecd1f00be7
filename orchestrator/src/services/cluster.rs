//! Phase 2: cluster and Raft status, and joining the cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use duet::{PeerAddr, Request, Response, Status};
use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};

use crate::ctx::{Ctx, is_forwarded};
use crate::pb::orchestrator::v1::{
    ClusterStatus, ClusterStatusClient, ClusterStatusReply, FollowerProgress, GetClusterStatusRequest,
    GetRaftStatusRequest, JoinClusterRequest, Member as MemberProto, RaftStatusReply, RemoveMemberRequest,
};
use crate::raft::Member;

/// `orchestrator.v1.ClusterStatus`.
#[derive(Debug, Clone)]
pub struct ClusterStatusService(pub Arc<Ctx>);

/// The cluster as `ctx`'s node sees it; liveness as this node heard it (see [`with_leaders_liveness`]
/// for a follower's answer).
pub(crate) fn cluster_status(ctx: &Ctx) -> ClusterStatusReply {
    let metrics = ctx.raft.metrics().borrow().clone();
    let leader = metrics.current_leader.unwrap_or(0);
    let members = ctx
        .members()
        .into_iter()
        .map(|(id, m, voter)| {
            let peer: Option<PeerAddr> = m.ticket.parse().ok();
            let seen = ctx.liveness.last_seen(id);
            MemberProto {
                id,
                name: m.name.clone(),
                grpc_address: peer.as_ref().and_then(|p| p.grpc).map(|a| a.to_string()).unwrap_or_default(),
                iroh_id: peer.as_ref().and_then(|p| p.iroh.as_ref()).map(|a| a.id.to_string()).unwrap_or_default(),
                ticket: m.ticket,
                voter,
                leader: id == leader,
                live: id == ctx.id || seen.is_some_and(|s| s.live),
                last_seen_ms: if id == ctx.id {
                    Some(0)
                } else {
                    seen.map(|s| u64::try_from(s.ago.as_millis()).unwrap_or(u64::MAX))
                },
                reachable_over: seen.and_then(|s| s.over).map(|t| t.to_string()).unwrap_or_default(),
            }
        })
        .collect();
    ClusterStatusReply {
        members,
        leader_id: leader,
        term: metrics.current_term,
        commit_index: metrics.last_applied.map_or(0, |l| l.index),
        node_id: ctx.id,
    }
}

/// How long a follower waits for its leader's view of liveness.
const LEADERS_VIEW_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// A follower hears only its leader, so it answers with the leader's view of the other members'
/// liveness, asked over the peer connector (its own view when the leader does not answer).
async fn with_leaders_liveness(ctx: &Ctx, mut reply: ClusterStatusReply) -> ClusterStatusReply {
    let Some((leader, member)) = ctx.leader().filter(|(id, _)| *id != ctx.id) else { return reply };
    let Ok(channel) = ctx.peers.channel(&member.ticket) else { return reply };
    // Short: a follower whose leader is gone answers with its own view rather than wait.
    let client = ClusterStatusClient::new(channel).with_default_timeout(LEADERS_VIEW_TIMEOUT);
    let asked = ctx.calls.timed("4 peer connector", "ClusterStatus/GetClusterStatus", async {
        client.get_cluster_status(crate::ctx::forwarded(GetClusterStatusRequest {})).await
    });
    let view = match asked.await {
        Ok(view) => view.into_inner(),
        Err(status) => {
            tracing::debug!(leader, %status, "the leader's liveness view is unavailable; answering with this node's");
            return reply;
        }
    };
    for m in reply.members.iter_mut().filter(|m| m.id != ctx.id && m.id != leader) {
        if let Some(theirs) = view.members.iter().find(|v| v.id == m.id) {
            m.live = theirs.live;
            m.last_seen_ms = theirs.last_seen_ms;
            m.reachable_over = theirs.reachable_over.clone();
        }
    }
    reply
}

/// A client to the leader a refused membership change named, for a follower to pass the change on;
/// a change that was itself passed on is never passed again.
fn leader_client(
    ctx: &Ctx,
    to: openraft::error::ForwardToLeader<u64, Member>,
    forwarded: bool,
) -> Result<ClusterStatusClient, Status> {
    if forwarded {
        return Err(Status::unavailable(format!("node {} is not the leader; retry", ctx.id)));
    }
    let Some(leader) = to.leader_node else {
        return Err(Status::unavailable("no leader elected yet; retry shortly"));
    };
    let channel = ctx.peers.channel(&leader.ticket)?;
    Ok(ClusterStatusClient::new(channel).with_default_timeout(ctx.rpc_timeout * 4))
}

impl ClusterStatus for ClusterStatusService {
    async fn get_cluster_status(
        &self,
        request: Request<GetClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let reply = cluster_status(&self.0);
        // A forwarded ask is answered from this node's own view, so two nodes never ask each other.
        if is_forwarded(&request) {
            return Ok(Response::new(reply));
        }
        Ok(Response::new(with_leaders_liveness(&self.0, reply).await))
    }

    async fn get_raft_status(&self, _: Request<GetRaftStatusRequest>) -> Result<Response<RaftStatusReply>, Status> {
        let m = self.0.raft.metrics().borrow().clone();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let followers = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != self.0.id)
            .map(|(id, log)| FollowerProgress { id: *id, matched_index: log.map_or(0, |l| l.index) })
            .collect();
        Ok(Response::new(RaftStatusReply {
            node_id: self.0.id,
            role: role.into(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map_or(0, |l| l.index),
            followers,
        }))
    }

    async fn join_cluster(&self, request: Request<JoinClusterRequest>) -> Result<Response<ClusterStatusReply>, Status> {
        let forwarded = is_forwarded(&request);
        let join = request.into_inner();
        if join.id == 0 {
            return Err(Status::invalid_argument("node id 0 is not a valid Raft node id"));
        }
        join.ticket
            .parse::<PeerAddr>()
            .map_err(|e| Status::invalid_argument(format!("ticket {:?}: {e}", join.ticket)))?;
        let ctx = &self.0;
        let member = Member { name: join.name.clone(), ticket: join.ticket.clone() };
        let _one_at_a_time = ctx.join_lock.lock().await;
        let known = ctx.members().into_iter().find(|(id, _, _)| *id == join.id);
        if let Some((_, m, voter)) = &known {
            if m.ticket != member.ticket {
                // openraft keeps a member's first address; a different one would never be used.
                return Err(Status::failed_precondition(format!(
                    "node {} is a member reachable at {}, not {}; restart it with that ticket (fixed \
                     ports and its data_dir, which keeps its Iroh key), or join under a new id",
                    join.id, m.ticket, member.ticket
                )));
            }
            if *voter {
                return Ok(Response::new(cluster_status(ctx)));
            }
        }
        let leader_only = |e: RaftError<u64, ClientWriteError<u64, Member>>| match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(to)) => Err(to),
            e => Ok(Status::unavailable(format!("membership change failed: {e}"))),
        };
        // Waits for the learner to catch up, but not forever: the join lock is held meanwhile.
        let added =
            tokio::time::timeout(ctx.rpc_timeout * 4, ctx.raft.add_learner(join.id, member, true)).await.map_err(
                |_| Status::unavailable(format!("node {} did not catch up with the log in time; join again", join.id)),
            )?;
        match added {
            Ok(_) => {}
            Err(e) => match leader_only(e) {
                Ok(status) => return Err(status),
                Err(to) => {
                    drop(_one_at_a_time);
                    let client = leader_client(ctx, to, forwarded)?;
                    return client.join_cluster(crate::ctx::forwarded(join)).await;
                }
            },
        }
        ctx.raft
            .change_membership(openraft::ChangeMembers::AddVoterIds(BTreeSet::from([join.id])), true)
            .await
            .map_err(|e| Status::unavailable(format!("promoting node {} to voter failed: {e}", join.id)))?;
        Ok(Response::new(cluster_status(ctx)))
    }

    async fn remove_member(
        &self,
        request: Request<RemoveMemberRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        let forwarded = is_forwarded(&request);
        let id = request.get_ref().id;
        let ctx = &self.0;
        let _one_at_a_time = ctx.join_lock.lock().await;
        let members = ctx.members();
        if !members.iter().any(|(m, _, _)| *m == id) {
            return Ok(Response::new(cluster_status(ctx)));
        }
        if members.iter().all(|(m, _, voter)| *m == id || !voter) {
            return Err(Status::failed_precondition(format!("node {id} is the last voter; a cluster needs one")));
        }
        let is_voter = members.iter().any(|(m, _, voter)| *m == id && *voter);
        let change = if is_voter {
            openraft::ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            openraft::ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        let removed = ctx.raft.change_membership(change, false).await;
        match removed {
            Ok(_) => {
                tracing::info!(node = ctx.id, removed = id, "removed a member from the cluster");
                Ok(Response::new(cluster_status(ctx)))
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(to))) => {
                drop(_one_at_a_time);
                let client = leader_client(ctx, to, forwarded)?;
                client.remove_member(crate::ctx::forwarded(RemoveMemberRequest { id })).await
            }
            Err(e) => Err(Status::unavailable(format!("removing node {id} failed: {e}"))),
        }
    }
}
