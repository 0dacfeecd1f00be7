//! Who may make the calls that change the cluster: Raft's own (`AppendEntries`, `Vote`,
//! `InstallSnapshot`), `Propose` and `JoinCluster`. One server interceptor decides, the same on
//! gRPC and Iroh; every other call is admitted.
//!
//! - Over Iroh the caller's endpoint id is its public key, proven by the QUIC handshake: a member
//!   of the Raft membership (by the Iroh address in its ticket) is admitted.
//! - Over gRPC with mutual TLS (`transport.grpc.tls_client_auth`), a caller whose certificate the
//!   cluster's CA signed is admitted: the TLS handshake already checked it.
//! - On either transport, a caller that sends the cluster's shared secret (`node.cluster_token`) in
//!   [`TOKEN_KEY`] metadata is admitted: how a new node joins, and how members call each other over
//!   gRPC without TLS.
//!
//! Anyone else is refused `PERMISSION_DENIED` before the handler runs. Without a `cluster_token`,
//! a gRPC port without mutual TLS cannot tell members from strangers, so it admits every caller
//! there (the node says so at start), `JoinCluster` is open on both transports, and a node that has
//! not joined a cluster yet (it knows no members) takes Raft calls from any Iroh peer, since its
//! first leader is not a member it knows. With a token, members send it, so a joining node checks
//! its first leader too.

use std::collections::HashSet;
use std::sync::Mutex;

use duet::middleware::CallInfo;
use duet::{Peer, PeerAddr, Request, RequestExt, Status};
use iroh::EndpointId;

use crate::raft::Raft;

/// The metadata key carrying the cluster's shared secret.
pub const TOKEN_KEY: &str = "x-cluster-token";

/// Raft's own calls and writes: members only.
const MEMBERS_ONLY: [&str; 6] = [
    "/orchestrator.v1.RaftService/AppendEntries",
    "/orchestrator.v1.RaftService/TriggerElection",
    "/orchestrator.v1.RaftService/Vote",
    "/orchestrator.v1.RaftService/InstallSnapshot",
    "/orchestrator.v1.RaftService/Propose",
    "/orchestrator.v1.ClusterStatus/RemoveMember",
];

/// Joining: members (a node re-joining) and holders of the token.
const JOIN: &str = "/orchestrator.v1.ClusterStatus/JoinCluster";

/// The admission policy of one node.
pub struct Admission {
    raft: Raft,
    token: Option<String>,
    mutual_tls: bool,
    /// Member endpoint ids, with the log id of the membership they were read from.
    members: Mutex<(Option<Option<crate::raft::LogId>>, HashSet<EndpointId>)>,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("token", &self.token.is_some()).field("mutual_tls", &self.mutual_tls).finish()
    }
}

impl Admission {
    /// The policy of a node running `raft`, with the cluster's token (if any) and whether its gRPC
    /// port requires client certificates.
    pub fn new(raft: Raft, token: Option<String>, mutual_tls: bool) -> Self {
        Self { raft, token, mutual_tls, members: Mutex::new((None, HashSet::new())) }
    }

    /// Whether gRPC callers cannot be told apart (no token, no mutual TLS): the node warns at start.
    pub fn grpc_is_open(&self) -> bool {
        self.token.is_none() && !self.mutual_tls
    }

    /// The interceptor: admits or refuses one call's head.
    pub fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(info) = req.extensions().get::<CallInfo>() else { return Ok(req) };
        let join = info.path == JOIN;
        if !join && !MEMBERS_ONLY.contains(&&*info.path) {
            return Ok(req);
        }
        let has_token = self.token.as_deref().is_some_and(|t| req.metadata().get(TOKEN_KEY).is_some_and(|v| v == t));
        let admitted = has_token
            || match req.peer() {
                Peer::Iroh(id) => match self.members_include(&id) {
                    Some(member) => member || (join && self.token.is_none()),
                    // A node not yet in a cluster has no members to check against: without a token
                    // it takes its first leader's calls from whoever makes them.
                    None => self.token.is_none(),
                },
                Peer::Grpc(_) => (self.mutual_tls && req.peer_certs().is_some()) || self.grpc_is_open(),
            };
        if admitted {
            Ok(req)
        } else {
            let path: &str = &info.path;
            tracing::warn!(peer = ?req.peer(), path, "refused a call from a caller that is not a cluster member");
            Err(Status::permission_denied(format!(
                "{path} is for cluster members: call over Iroh from a member's endpoint, over gRPC with a \
                 certificate the cluster's CA signed, or with the cluster token in {TOKEN_KEY}"
            )))
        }
    }

    /// Whether `id` is a member's endpoint; `None` while this node knows no membership at all (it
    /// has not joined yet).
    fn members_include(&self, id: &EndpointId) -> Option<bool> {
        let watch = self.raft.metrics();
        let metrics = watch.borrow();
        let config = &metrics.membership_config;
        config.membership().nodes().next()?;
        let version = *config.log_id();
        let mut cache = self.members.lock().expect("members lock");
        if cache.0 != Some(version) {
            let ids = config
                .membership()
                .nodes()
                .filter_map(|(_, m)| m.ticket.parse::<PeerAddr>().ok()?.iroh.map(|a| a.id))
                .collect();
            *cache = (Some(version), ids);
        }
        Some(cache.1.contains(id))
    }
}
