//! Phase 5: openraft's network, served by duet; `raft_transport` decides how it travels.

use std::sync::Arc;

use duet::middleware::CallInfo;
use duet::{Request, Response, Status};

use crate::ctx::{Ctx, is_forwarded};
use crate::pb::orchestrator::v1::{RaftPayload, RaftService};
use crate::raft::{RaftRpc, serve_rpc};
use crate::state::Command;

/// `orchestrator.v1.RaftService`.
#[derive(Debug, Clone)]
pub struct RaftServiceImpl(pub Arc<Ctx>);

impl RaftServiceImpl {
    async fn rpc(&self, rpc: RaftRpc, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let transport = request.extensions().get::<CallInfo>().and_then(|c| c.transport);
        let payload = request.into_inner().postcard;
        let reply = serve_rpc(&self.0.raft, rpc, &payload).await?;
        // Heartbeats are how a follower hears its leader.
        if rpc == RaftRpc::AppendEntries
            && let Some(leader) = self.0.raft.metrics().borrow().current_leader
            && leader != self.0.id
        {
            self.0.liveness.heard(leader, transport);
        }
        Ok(Response::new(RaftPayload { postcard: reply.into() }))
    }
}

impl RaftService for RaftServiceImpl {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.rpc(RaftRpc::AppendEntries, request).await
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.rpc(RaftRpc::Vote, request).await
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        self.rpc(RaftRpc::InstallSnapshot, request).await
    }

    async fn trigger_election(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        tracing::info!(node = self.0.id, "asked to stand for election: the leader is handing over");
        self.0.raft.trigger().elect().await.map_err(|e| Status::unavailable(format!("raft: {e}")))?;
        Ok(Response::new(RaftPayload::default()))
    }

    async fn propose(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let forwarded = is_forwarded(&request);
        let command: Command = postcard::from_bytes(&request.into_inner().postcard)
            .map_err(|e| Status::invalid_argument(format!("not a command: {e}")))?;
        let committed = self.0.propose_at(command, forwarded).await?;
        let reply =
            postcard::to_allocvec(&committed).map_err(|e| Status::internal(format!("encoding outcome: {e}")))?;
        Ok(Response::new(RaftPayload { postcard: reply.into() }))
    }
}
