//! The Raft state machine: applies committed [`Command`]s to the [`ClusterState`] and snapshots it.
//!
//! Like the log store it lives in memory and its clones share one inner state, so a node restarted
//! in-process on a clone resumes from what it had applied. [`StateMachineStore::open`] also keeps its
//! latest snapshot on disk (see [`super::snapshot_file`]), which is all a restarted process needs: the
//! committed log after the snapshot is re-applied by openraft.

use std::io::{self, Cursor};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, EntryPayload, OptionalSend, StorageError, StorageIOError};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::disk;
use super::snapshot_file::{SavedSnapshot, SnapshotFile};
use super::types::{Entry, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig};
use crate::state::{ClusterState, Command, NodeId, Outcome};

/// How many [`Applied`] events a subscriber may fall behind before it sees `Lagged`.
const APPLIED_CAPACITY: usize = 1024;

/// One applied log command and what it did, as published to [`StateMachineStore::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// The entry's log index.
    pub index: u64,
    /// The command.
    pub command: Command,
    /// What applying it did.
    pub outcome: Outcome,
}

/// The [`RaftStateMachine`], with its snapshot in memory or on disk as well; clones share the same
/// state.
#[derive(Clone, Debug)]
pub struct StateMachineStore {
    inner: Arc<Mutex<Inner>>,
    state: Arc<RwLock<ClusterState>>,
    applied: broadcast::Sender<Applied>,
    /// Where the snapshot is kept when the state machine is durable.
    file: Option<Arc<SnapshotFile>>,
}

#[derive(Debug, Default)]
struct Inner {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshot: Option<StoredSnapshot>,
    /// Makes snapshot ids unique even when two snapshots cover the same log id.
    snapshots_built: u64,
}

#[derive(Debug, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// A snapshot's data. It repeats what the metadata says so that the bytes alone can restore a node
/// (from a file, say) without openraft's metadata.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    state: ClusterState,
}

impl Default for StateMachineStore {
    fn default() -> Self {
        Self::new()
    }
}

impl StateMachineStore {
    /// An empty in-memory state machine: nothing applied, no snapshot.
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            state: Arc::default(),
            applied: broadcast::channel(APPLIED_CAPACITY).0,
            file: None,
        }
    }

    /// A state machine whose snapshots are kept in `dir` (created if missing), starting from the
    /// snapshot saved there, if any. A damaged snapshot file is an `InvalidData` error.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let (file, saved) = SnapshotFile::open(dir.as_ref())?;
        let store = Self { file: Some(Arc::new(file)), ..Self::new() };
        if let Some(saved) = saved {
            let payload: SnapshotData = disk::decode(&saved.data, "the saved snapshot's data")?;
            *store.state.write().unwrap_or_else(PoisonError::into_inner) = payload.state;
            let mut inner = store.inner();
            inner.last_applied = saved.meta.last_log_id;
            inner.membership = saved.meta.last_membership.clone();
            inner.snapshots_built = saved.built;
            inner.snapshot = Some(StoredSnapshot { meta: saved.meta, data: saved.data });
        }
        Ok(store)
    }

    /// Saves `snapshot` to disk if the store is durable, and hands it back. Runs on a blocking thread
    /// so the fsync does not stall the async workers.
    async fn save(&self, snapshot: SavedSnapshot, newer_only: bool) -> io::Result<SavedSnapshot> {
        let Some(file) = self.file.clone() else { return Ok(snapshot) };
        tokio::task::spawn_blocking(move || file.save(&snapshot, newer_only).map(|()| snapshot))
            .await
            .map_err(io::Error::other)?
    }

    /// The replicated state, for handlers to read. Only this store writes it.
    pub fn state(&self) -> Arc<RwLock<ClusterState>> {
        self.state.clone()
    }

    /// Every Normal entry applied from now on, in log order.
    ///
    /// Entries covered by an installed snapshot are not announced: a subscriber that must not miss
    /// a change should re-read [`Self::state`] after it sees `Lagged` or a jump in `index`.
    pub fn subscribe(&self) -> broadcast::Receiver<Applied> {
        self.applied.subscribe()
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so the poison flag carries no information.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError<NodeId>> {
        // openraft runs this in parallel with `apply`; holding `inner` (which `apply` also holds while
        // it writes) keeps last_applied, membership and state mutually consistent.
        let saved = {
            let mut inner = self.inner();
            let data = {
                let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
                let payload = SnapshotData {
                    last_applied: inner.last_applied,
                    membership: inner.membership.clone(),
                    state: state.clone(),
                };
                postcard::to_allocvec(&payload).map_err(|e| StorageIOError::write_snapshot(None, AnyError::new(&e)))?
            };
            inner.snapshots_built += 1;
            let snapshot_id = match inner.last_applied {
                Some(id) => format!("{}-{}-{}", id.leader_id, id.index, inner.snapshots_built),
                None => format!("--{}", inner.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: inner.last_applied,
                last_membership: inner.membership.clone(),
                snapshot_id,
            };
            inner.snapshot = Some(StoredSnapshot { meta: meta.clone(), data: data.clone() });
            SavedSnapshot { meta, data, built: inner.snapshots_built }
        };
        let signature = saved.meta.signature();
        let saved = self
            .save(saved, true)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(signature), AnyError::new(&e)))?;
        Ok(Snapshot { meta: saved.meta, snapshot: Box::new(Cursor::new(saved.data)) })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError<NodeId>> {
        let inner = self.inner();
        Ok((inner.last_applied, inner.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut outcomes = Vec::new();
        let mut events = Vec::new();
        {
            let mut inner = self.inner();
            let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
            for entry in entries {
                inner.last_applied = Some(entry.log_id);
                let outcome = match entry.payload {
                    EntryPayload::Blank => Outcome::None,
                    EntryPayload::Normal(command) => {
                        let outcome = state.apply(entry.log_id.index, &command);
                        events.push(Applied { index: entry.log_id.index, command, outcome: outcome.clone() });
                        outcome
                    }
                    EntryPayload::Membership(membership) => {
                        inner.membership = StoredMembership::new(Some(entry.log_id), membership);
                        Outcome::None
                    }
                };
                outcomes.push(outcome);
            }
        }
        // Published after the locks are released so a subscriber that reads the state on an event
        // sees at least that event's change; nobody listening is not an error.
        for event in events {
            let _ = self.applied.send(event);
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<NodeId>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<NodeId>> {
        let data = snapshot.into_inner();
        let payload: SnapshotData = postcard::from_bytes(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e)))?;
        let built = self.inner().snapshots_built;
        let saved = SavedSnapshot { meta: meta.clone(), data, built };
        let data = self
            .save(saved, false)
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), AnyError::new(&e)))?
            .data;
        let mut inner = self.inner();
        // openraft's metadata is authoritative for where the log resumes; the payload's copies of
        // these fields only matter when restoring without it.
        inner.last_applied = meta.last_log_id;
        inner.membership = meta.last_membership.clone();
        *self.state.write().unwrap_or_else(PoisonError::into_inner) = payload.state;
        inner.snapshot = Some(StoredSnapshot { meta: meta.clone(), data });
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError<NodeId>> {
        Ok(self.inner().snapshot.clone().map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}
