//! The openraft type configuration and the aliases the rest of the crate uses, so that nothing else
//! has to spell out openraft's generic parameters.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Command, NodeId, Outcome};

/// A cluster member as recorded in the Raft membership: how to reach it.
///
/// It travels inside membership log entries and snapshots, so every node learns how to reach a
/// new member from the log itself rather than from side-channel configuration.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Member {
    /// Human-readable node name, for logs and status pages.
    pub name: String,
    /// duet's peer address string, `duet:grpc=…;iroh=…`.
    pub ticket: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.name, self.ticket)
    }
}

openraft::declare_raft_types!(
    /// The orchestrator's Raft type configuration.
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A running Raft node.
pub type Raft = openraft::Raft<TypeConfig>;
/// A Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log entry's id (leader term and node, index).
pub type LogId = openraft::LogId<NodeId>;
/// A vote (term, candidate, committed).
pub type Vote = openraft::Vote<NodeId>;
/// A cluster membership configuration.
pub type Membership = openraft::Membership<NodeId, Member>;
/// A membership together with the log id that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
/// A snapshot's metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
/// A snapshot: metadata and data.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// Raft metrics, as published by [`Raft::metrics`].
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Member>;

/// The AppendEntries RPC request.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// The AppendEntries RPC reply.
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
/// The RequestVote RPC request.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// The RequestVote RPC reply.
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
/// The InstallSnapshot RPC request (one chunk).
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// The InstallSnapshot RPC reply.
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;
/// What [`Raft::client_write`] returns on success.
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;

/// An error from a [`Raft`] API call: the API's own error `E`, or a fatal one.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
/// A fatal error: the Raft node stopped or its storage failed.
pub type Fatal = openraft::error::Fatal<NodeId>;
/// An RPC to another member failed, locally or on the remote side.
pub type RPCError<E = openraft::error::Infallible> = openraft::error::RPCError<NodeId, Member, RaftError<E>>;
/// Why [`Raft::client_write`] refused a proposal.
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, Member>;
/// Why [`Raft::ensure_linearizable`] or [`Raft::is_leader`] failed.
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, Member>;
/// Why [`Raft::initialize`] failed.
pub type InitializeError = openraft::error::InitializeError<NodeId, Member>;
/// This node is not the leader; the leader, if known.
pub type ForwardToLeader = openraft::error::ForwardToLeader<NodeId, Member>;
/// Why an InstallSnapshot chunk was refused.
pub type InstallSnapshotError = openraft::error::InstallSnapshotError;
