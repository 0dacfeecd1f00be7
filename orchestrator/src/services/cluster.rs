//! Phase 2: cluster and Raft status, and joining the cluster.

use std::collections::BTreeSet;
use std::sync::Arc;

use duet::{PeerAddr, Request, Response, Status};
use openraft::ServerState;
use openraft::error::{ClientWriteError, RaftError};

use crate::ctx::{Ctx, is_forwarded};
use crate::pb::orchestrator::v1::{
    ClusterStatus, ClusterStatusClient, ClusterStatusReply, FollowerProgress, GetClusterStatusRequest,
    GetRaftStatusRequest, JoinClusterRequest, Member as MemberProto, RaftStatusReply,
};
use crate::raft::Member;

/// `orchestrator.v1.ClusterStatus`.
#[derive(Debug, Clone)]
pub struct ClusterStatusService(pub Arc<Ctx>);

/// The cluster as `ctx`'s node sees it.
pub(crate) fn cluster_status(ctx: &Ctx) -> ClusterStatusReply {
    let metrics = ctx.raft.metrics().borrow().clone();
    let leader = metrics.current_leader.unwrap_or(0);
    let members = ctx
        .members()
        .into_iter()
        .map(|(id, m, voter)| {
            let peer: Option<PeerAddr> = m.ticket.parse().ok();
            MemberProto {
                id,
                name: m.name.clone(),
                grpc_address: peer.as_ref().and_then(|p| p.grpc).map(|a| a.to_string()).unwrap_or_default(),
                iroh_id: peer.as_ref().and_then(|p| p.iroh.as_ref()).map(|a| a.id.to_string()).unwrap_or_default(),
                ticket: m.ticket,
                voter,
                leader: id == leader,
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

impl ClusterStatus for ClusterStatusService {
    async fn get_cluster_status(
        &self,
        _: Request<GetClusterStatusRequest>,
    ) -> Result<Response<ClusterStatusReply>, Status> {
        Ok(Response::new(cluster_status(&self.0)))
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
                    if forwarded {
                        return Err(Status::unavailable(format!("node {} is not the leader; retry", ctx.id)));
                    }
                    let Some(leader) = to.leader_node else {
                        return Err(Status::unavailable("no leader elected yet; retry shortly"));
                    };
                    let channel = ctx.peers.channel(&leader.ticket)?;
                    let client = ClusterStatusClient::new(channel).with_default_timeout(ctx.rpc_timeout * 4);
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
}
