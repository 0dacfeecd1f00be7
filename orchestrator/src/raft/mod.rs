//! openraft glue: the type configuration, the log and state-machine stores (in memory, or durable in
//! a directory), and Raft RPCs over an abstract [`RaftSender`] so the node can carry them on duet's
//! generated Raft service.

mod disk;
#[cfg(test)]
mod durable_tests;
mod log_file;
mod log_store;
mod network;
mod snapshot_file;
mod state_machine;
mod types;

use std::sync::Arc;
use std::time::Duration;

pub use log_store::LogStore;
pub use network::{Network, NetworkClient, RaftRpc, RaftSender, serve_rpc};
pub use state_machine::{Applied, StateMachineStore};
pub use types::*;

use crate::state::NodeId;

/// The default leader heartbeat interval.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(100);

/// The openraft configuration for a given heartbeat interval (see [`DEFAULT_HEARTBEAT`]).
///
/// Elections time out after 4–8 heartbeats: enough missed heartbeats that one slow round trip does
/// not depose a leader, and a wide enough spread that candidates rarely split the vote. The
/// heartbeat is rounded down to whole milliseconds, at least one.
pub fn raft_config(heartbeat: Duration) -> openraft::Config {
    let heartbeat_ms = u64::try_from(heartbeat.as_millis()).unwrap_or(u64::MAX).clamp(1, u64::MAX / 16);
    openraft::Config {
        cluster_name: "duet-orchestrator".into(),
        heartbeat_interval: heartbeat_ms,
        election_timeout_min: heartbeat_ms * 4,
        election_timeout_max: heartbeat_ms * 8,
        // A snapshot chunk crosses gRPC or Iroh, possibly through a relay: give it more than one
        // heartbeat's worth of time.
        install_snapshot_timeout: heartbeat_ms * 10,
        max_payload_entries: 256,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(500),
        ..Default::default()
    }
    .validate()
    .expect("min < max and heartbeat < min hold by construction")
}

/// Starts this node's Raft on the given stores, sending RPCs through `sender`.
///
/// Pass clones of the same stores to restart a node that was shut down: they keep what it had
/// logged and applied.
pub async fn start(
    id: NodeId,
    config: Arc<openraft::Config>,
    sender: Arc<dyn RaftSender>,
    log: LogStore,
    sm: StateMachineStore,
) -> Result<Raft, Fatal> {
    Raft::new(id, config, Network::new(id, sender), log, sm).await
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftStateMachine;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{CommittedLeaderId, EntryPayload, RaftSnapshotBuilder, StorageError};

    use super::*;
    use crate::state::{Command, Outcome, VmState};

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachineStore> for Builder {
        async fn build(&self) -> Result<((), LogStore, StateMachineStore), StorageError<NodeId>> {
            Ok(((), LogStore::new(), StateMachineStore::new()))
        }
    }

    #[test]
    fn stores_pass_the_openraft_suite() {
        let started = std::time::Instant::now();
        Suite::test_all(Builder).expect("suite passes");
        eprintln!("openraft Suite took {:?}", started.elapsed());
    }

    #[test]
    fn config_is_valid_for_small_and_default_heartbeats() {
        for heartbeat in [Duration::ZERO, Duration::from_micros(300), DEFAULT_HEARTBEAT, Duration::MAX] {
            let config = raft_config(heartbeat);
            assert!(config.election_timeout_min >= 4 * config.heartbeat_interval);
        }
        assert_eq!(raft_config(DEFAULT_HEARTBEAT).election_timeout_max, 800);
    }

    fn normal(index: u64, command: Command) -> Entry {
        Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), index), payload: EntryPayload::Normal(command) }
    }

    #[tokio::test]
    async fn applies_announce_and_snapshots_replace_the_state() {
        let mut sm = StateMachineStore::new();
        let mut events = sm.subscribe();
        let create = Command::CreateVm { name: "a".into(), vcpus: 1, memory_mib: 64, image: String::new(), host: 1 };
        let blank = Entry { log_id: LogId::new(CommittedLeaderId::new(1, 1), 1), payload: EntryPayload::Blank };
        let outcomes = sm.apply([blank, normal(2, create.clone()), normal(3, create.clone())]).await.unwrap();
        assert!(matches!(outcomes[..], [Outcome::None, Outcome::Vm(_), Outcome::Rejected { .. }]));
        let first = events.recv().await.unwrap();
        assert_eq!((first.index, &first.command), (2, &create));
        assert!(matches!(events.recv().await.unwrap().outcome, Outcome::Rejected { .. }));

        let snapshot = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        let restarted = sm.clone();
        assert_eq!(restarted.state().read().unwrap().vms["a"].state, VmState::Created);

        let mut other = StateMachineStore::new();
        other.apply([normal(1, Command::DeleteVm { name: "zzz".into() })]).await.unwrap();
        other.install_snapshot(&snapshot.meta, snapshot.snapshot).await.unwrap();
        assert_eq!(*other.state().read().unwrap(), *sm.state().read().unwrap());
        assert_eq!(other.applied_state().await.unwrap().0.map(|id| id.index), Some(3));
    }
}
