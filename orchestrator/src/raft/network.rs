//! Raft RPCs over an abstract transport.
//!
//! Requests and replies are postcard bytes. A reply carries the remote `Raft` call's whole
//! `Result`, so a refusal on the remote node (a higher vote, a fatal error) reaches the local
//! openraft as [`RPCError::RemoteError`] while transport failures become the local variants that
//! tell openraft whether to back off.

use std::sync::Arc;
use std::time::Duration;

use duet::{Code, Status};
use futures_util::future::BoxFuture;
use openraft::RPCTypes;
use openraft::error::{NetworkError, RPCError, RaftError, RemoteError, Timeout, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::types::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotError, InstallSnapshotRequest, InstallSnapshotResponse,
    Member, Raft, TypeConfig, VoteRequest, VoteResponse,
};
use crate::state::NodeId;

/// Which Raft RPC a payload carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaftRpc {
    /// Log replication and heartbeats.
    AppendEntries,
    /// Leader election.
    Vote,
    /// One chunk of a snapshot.
    InstallSnapshot,
}

impl RaftRpc {
    fn rpc_type(self) -> RPCTypes {
        match self {
            RaftRpc::AppendEntries => RPCTypes::AppendEntries,
            RaftRpc::Vote => RPCTypes::Vote,
            RaftRpc::InstallSnapshot => RPCTypes::InstallSnapshot,
        }
    }
}

/// Sends one Raft RPC (its request serialized with postcard) to a member and returns the reply payload.
///
/// The reply payload is whatever [`serve_rpc`] returned on the target. A transport failure should be
/// `UNAVAILABLE` when the target cannot be reached (openraft then backs off) and
/// `DEADLINE_EXCEEDED` when `timeout` passed.
pub trait RaftSender: Send + Sync + 'static {
    /// Sends `payload` as `rpc` to node `target`, reachable at `member`, giving up after `timeout`.
    fn send(
        &self,
        target: NodeId,
        member: &Member,
        rpc: RaftRpc,
        payload: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<Vec<u8>, Status>>;
}

/// openraft's [`RaftNetworkFactory`] over a [`RaftSender`].
#[derive(Clone)]
pub struct Network {
    id: NodeId,
    sender: Arc<dyn RaftSender>,
}

impl Network {
    /// A network for node `id` (named in the timeout errors it reports) sending through `sender`.
    pub fn new(id: NodeId, sender: Arc<dyn RaftSender>) -> Self {
        Self { id, sender }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = NetworkClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> NetworkClient {
        NetworkClient { id: self.id, target, member: node.clone(), sender: self.sender.clone() }
    }
}

/// openraft's [`RaftNetwork`] to one target; connects lazily, through the [`RaftSender`].
pub struct NetworkClient {
    id: NodeId,
    target: NodeId,
    member: Member,
    sender: Arc<dyn RaftSender>,
}

impl NetworkClient {
    async fn call<Req, Resp, E>(
        &self,
        rpc: RaftRpc,
        request: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = postcard::to_allocvec(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        // The soft TTL leaves time for the transport's own deadline error to arrive before openraft
        // drops the call at the hard TTL, so the failure is classified rather than anonymous.
        let timeout = option.soft_ttl();
        let reply = self
            .sender
            .send(self.target, &self.member, rpc, payload, timeout)
            .await
            .map_err(|status| status_error(rpc, self.id, self.target, timeout, status))?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            postcard::from_bytes(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, self.member.clone(), e)))
    }
}

/// Classifies a transport failure the way openraft's retry logic expects.
fn status_error<E: std::error::Error>(
    rpc: RaftRpc,
    id: NodeId,
    target: NodeId,
    timeout: Duration,
    status: Status,
) -> RPCError<NodeId, Member, RaftError<NodeId, E>> {
    match status.code() {
        Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        Code::DeadlineExceeded => RPCError::Timeout(Timeout { action: rpc.rpc_type(), id, target, timeout }),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

impl RaftNetwork<TypeConfig> for NetworkClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RaftRpc::AppendEntries, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse, RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>> {
        self.call(RaftRpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest,
        option: RPCOption,
    ) -> Result<VoteResponse, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.call(RaftRpc::Vote, &rpc, &option).await
    }
}

/// Serves one Raft RPC received from another member: decodes `payload`, hands it to `raft`, and
/// returns the encoded `Result` of the call for [`RaftSender::send`] to return on the caller.
///
/// A payload that does not decode is `INVALID_ARGUMENT`; errors from `raft` itself are part of the
/// successful reply, so the caller's openraft sees them as the remote node's answer.
pub async fn serve_rpc(raft: &Raft, rpc: RaftRpc, payload: &[u8]) -> Result<Vec<u8>, Status> {
    match rpc {
        RaftRpc::AppendEntries => encode(&raft.append_entries(decode(rpc, payload)?).await),
        RaftRpc::Vote => encode(&raft.vote(decode(rpc, payload)?).await),
        RaftRpc::InstallSnapshot => {
            let req: InstallSnapshotRequest = decode(rpc, payload)?;
            // openraft writes the chunk at `offset` into an in-memory snapshot buffer: a peer's huge
            // offset would make it allocate that much. No snapshot larger than a disk record could
            // be kept anyway.
            let end = req.offset.checked_add(req.data.len() as u64);
            if end.is_none_or(|end| end > super::disk::MAX_RECORD as u64) {
                return Err(Status::invalid_argument(format!(
                    "snapshot chunk at offset {} runs past the {} MiB snapshot limit",
                    req.offset,
                    super::disk::MAX_RECORD >> 20
                )));
            }
            encode(&raft.install_snapshot(req).await)
        }
    }
}

fn decode<T: DeserializeOwned>(rpc: RaftRpc, payload: &[u8]) -> Result<T, Status> {
    postcard::from_bytes(payload).map_err(|e| Status::invalid_argument(format!("malformed Raft {rpc:?} request: {e}")))
}

fn encode<T: Serialize>(reply: &T) -> Result<Vec<u8>, Status> {
    postcard::to_allocvec(reply).map_err(|e| Status::internal(format!("cannot encode Raft reply: {e}")))
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Debug;

    use openraft::error::{Fatal, SnapshotMismatch};
    use openraft::{AnyError, CommittedLeaderId, EntryPayload, SnapshotSegmentId, StorageError, StorageIOError};

    use super::*;
    use crate::raft::types::{Entry, LogId, Membership, SnapshotMeta, StoredMembership, Vote};
    use crate::state::{Command, RejectKind};

    /// Encodes, decodes, and checks nothing was lost (via `Debug`, as openraft's requests lack `PartialEq`).
    fn round_trip<T: Serialize + DeserializeOwned + Debug>(value: &T) -> T {
        let bytes = postcard::to_allocvec(value).expect("encodes");
        let back: T = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(format!("{back:?}"), format!("{value:?}"));
        back
    }

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    fn member(name: &str) -> Member {
        Member { name: name.into(), ticket: format!("duet:grpc=http://{name}:7000;iroh=abc") }
    }

    fn membership() -> Membership {
        let nodes = BTreeMap::from([(1, member("a")), (2, member("b")), (3, member("c"))]);
        Membership::new(vec![BTreeSet::from([1, 2]), BTreeSet::from([2, 3])], nodes)
    }

    fn snapshot_meta() -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: Some(log_id(2, 9)),
            last_membership: StoredMembership::new(Some(log_id(1, 3)), membership()),
            snapshot_id: "2-9-1".into(),
        }
    }

    #[test]
    fn requests_round_trip() {
        let command = Command::CreateVm { name: "vm".into(), vcpus: 2, memory_mib: 256, image: "img".into(), host: 3 };
        let entries = vec![
            Entry { log_id: log_id(1, 1), payload: EntryPayload::Blank },
            Entry { log_id: log_id(1, 2), payload: EntryPayload::Normal(command) },
            Entry { log_id: log_id(1, 3), payload: EntryPayload::Membership(membership()) },
        ];
        round_trip(&AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            entries,
            leader_commit: Some(log_id(1, 1)),
        });
        round_trip(&VoteRequest::new(Vote::new(4, 2), Some(log_id(3, 17))));
        round_trip(&VoteRequest::new(Vote::new(1, 2), None));
        round_trip(&InstallSnapshotRequest {
            vote: Vote::new_committed(2, 1),
            meta: snapshot_meta(),
            offset: 4096,
            data: vec![0, 1, 2, 255],
            done: true,
        });
    }

    #[test]
    fn replies_round_trip_including_errors() {
        type Append = Result<AppendEntriesResponse, RaftError<NodeId>>;
        for reply in [
            Ok(AppendEntriesResponse::Success),
            Ok(AppendEntriesResponse::PartialSuccess(Some(log_id(1, 5)))),
            Ok(AppendEntriesResponse::Conflict),
            Ok(AppendEntriesResponse::HigherVote(Vote::new_committed(7, 3))),
            Err(RaftError::Fatal(Fatal::Stopped)),
            Err(RaftError::Fatal(Fatal::Panicked)),
            Err(RaftError::Fatal(Fatal::StorageError(StorageError::from(StorageIOError::write_logs(
                AnyError::error("disk full").add_context(|| "appending"),
            ))))),
        ] {
            let back: Append = round_trip(&reply);
            assert_eq!(back, reply);
        }

        type VoteReply = Result<VoteResponse, RaftError<NodeId>>;
        for reply in [Ok(VoteResponse::new(Vote::new(5, 2), Some(log_id(4, 30)), true)), Err(Fatal::Stopped.into())] {
            let back: VoteReply = round_trip(&reply);
            assert_eq!(back, reply);
        }

        type Install = Result<InstallSnapshotResponse, RaftError<NodeId, InstallSnapshotError>>;
        let mismatch = SnapshotMismatch {
            expect: SnapshotSegmentId { id: "2-9-1".into(), offset: 0 },
            got: SnapshotSegmentId { id: "2-9-1".into(), offset: 4096 },
        };
        for reply in [
            Ok(InstallSnapshotResponse { vote: Vote::new_committed(2, 1) }),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(mismatch))),
        ] {
            let back: Install = round_trip(&reply);
            assert_eq!(back, reply);
        }
    }

    #[test]
    fn app_types_round_trip() {
        let outcome = crate::state::Outcome::Rejected { kind: RejectKind::NotFound, message: "no VM \"x\"".into() };
        round_trip(&outcome);
        round_trip(&snapshot_meta());
    }

    #[test]
    fn malformed_requests_are_invalid_argument() {
        let status = decode::<AppendEntriesRequest>(RaftRpc::AppendEntries, &[0xff; 3]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        let status = decode::<VoteRequest>(RaftRpc::Vote, &[]).unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
    }

    #[test]
    fn transport_failures_map_to_what_openraft_retries_on() {
        let map = |code| {
            status_error::<openraft::error::Infallible>(
                RaftRpc::Vote,
                1,
                2,
                Duration::from_millis(75),
                Status::new(code, "x"),
            )
        };
        assert!(matches!(map(Code::Unavailable), RPCError::Unreachable(_)));
        let RPCError::Timeout(timeout) = map(Code::DeadlineExceeded) else { panic!("not a timeout") };
        assert_eq!((timeout.action, timeout.id, timeout.target), (RPCTypes::Vote, 1, 2));
        assert!(matches!(map(Code::Internal), RPCError::Network(_)));
    }
}
