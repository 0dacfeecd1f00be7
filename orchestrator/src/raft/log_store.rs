//! The Raft log and vote store.
//!
//! [`LogStore::new`] keeps everything in memory: a process restart loses the log and the vote, so a
//! restarted node must rejoin as a fresh member. Clones share one inner state, so a test can shut a
//! `Raft` down and start a new one on a clone of the same store, which then plays the part of the
//! node's disk. [`LogStore::open`] adds a real disk (see [`super::log_file`]): every change is
//! fsynced before openraft hears it is done, and the memory copy serves reads.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::RangeBounds;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{AnyError, OptionalSend, StorageError, StorageIOError};

use super::log_file::LogFile;
use super::types::{Entry, LogId, TypeConfig, Vote};
use crate::state::NodeId;

/// A [`RaftLogStorage`] in memory, or on disk as well; clones share the same log.
#[derive(Clone, Debug, Default)]
pub struct LogStore {
    inner: Arc<Mutex<Inner>>,
    /// The files when the log is durable. A lock of its own so that readers of `inner` never wait
    /// for an fsync.
    file: Option<Arc<Mutex<LogFile>>>,
}

#[derive(Debug, Default)]
struct Inner {
    logs: BTreeMap<u64, Entry>,
    vote: Option<Vote>,
    committed: Option<LogId>,
    last_purged: Option<LogId>,
}

impl LogStore {
    /// An empty in-memory log: no entries, no vote.
    pub fn new() -> Self {
        Self::default()
    }

    /// A durable log kept in `dir` (created if missing), with what it held before.
    ///
    /// Damaged files are an `InvalidData` error, except a record a crash cut short at the end of the
    /// log, which is dropped: openraft was never told it was written.
    pub fn open(dir: impl AsRef<Path>) -> io::Result<Self> {
        let (file, replayed) = LogFile::open(dir.as_ref())?;
        let inner = Inner {
            logs: replayed.logs,
            vote: replayed.vote,
            committed: replayed.committed,
            last_purged: replayed.last_purged,
        };
        Ok(Self { inner: Arc::new(Mutex::new(inner)), file: Some(Arc::new(Mutex::new(file))) })
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves `Inner` consistent, so a panic elsewhere cannot have left it
        // half-written and the poison flag carries no information.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `write` on the log's files (see [`write_blocking`]); `None` if the log is in memory only.
    async fn on_disk<T: Send + 'static>(
        &self,
        write: impl FnOnce(&mut LogFile) -> io::Result<T> + Send + 'static,
    ) -> io::Result<Option<T>> {
        match self.file.clone() {
            Some(file) => write_blocking(file, write).await.map(Some),
            None => Ok(None),
        }
    }
}

/// Runs `write` on a blocking thread, so an fsync does not stall the async workers.
async fn write_blocking<T: Send + 'static>(
    file: Arc<Mutex<LogFile>>,
    write: impl FnOnce(&mut LogFile) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    // `LogFile` marks itself broken when a failed write leaves it inconsistent, so a poisoned lock
    // adds nothing.
    tokio::task::spawn_blocking(move || write(&mut file.lock().unwrap_or_else(PoisonError::into_inner)))
        .await
        .map_err(io::Error::other)?
}

fn write_error(e: io::Error) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError<NodeId>> {
        Ok(self.inner().logs.range(range).map(|(_, entry)| entry.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let inner = self.inner();
        let last_log_id = inner.logs.last_key_value().map(|(_, entry)| entry.log_id).or(inner.last_purged);
        Ok(LogState { last_purged_log_id: inner.last_purged, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError<NodeId>> {
        let saved = *vote;
        self.on_disk(move |file| file.save_vote(&saved))
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        self.inner().vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError<NodeId>> {
        Ok(self.inner().vote)
    }

    // Saving `committed` lets a restarted node re-apply committed entries at once instead of
    // waiting for the leader to tell it again.
    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError<NodeId>> {
        // openraft saves it on every commit, often unchanged on a follower; skip the fsyncs then.
        if self.inner().committed == committed {
            return Ok(());
        }
        self.on_disk(move |file| file.save_committed(committed)).await.map_err(write_error)?;
        self.inner().committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError<NodeId>> {
        Ok(self.inner().committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(file) = self.file.clone() {
            entries =
                write_blocking(file, move |file| file.append(&entries).map(|()| entries)).await.map_err(write_error)?;
        }
        {
            let mut inner = self.inner();
            for entry in entries {
                inner.logs.insert(entry.log_id.index, entry);
            }
        }
        // Written and fsynced above, or memory is this store's disk: flushed either way.
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        self.on_disk(move |file| file.truncate(log_id.index)).await.map_err(write_error)?;
        self.inner().logs.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError<NodeId>> {
        let compact = self.on_disk(move |file| file.purge(log_id)).await.map_err(write_error)?;
        let live = {
            let mut inner = self.inner();
            let kept = inner.logs.split_off(&(log_id.index + 1));
            inner.logs = kept;
            inner.last_purged = Some(log_id);
            // Cloned only when the file is due for a rewrite, which purges make rare.
            (compact == Some(true)).then(|| inner.logs.values().cloned().collect::<Vec<_>>())
        };
        if let Some(live) = live {
            // The purge itself is already durable; a failed rewrite only leaves the file bigger.
            let rewrite = self.on_disk(move |file| file.compact(Some(log_id), &live)).await;
            if let Err(e) = rewrite {
                tracing::warn!(error = %e, "could not compact the Raft log file; it keeps its purged records");
            }
        }
        Ok(())
    }
}
