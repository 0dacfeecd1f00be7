//! The durable side of [`super::StateMachineStore`]: its latest snapshot, in one file replaced
//! atomically.
//!
//! Applying an entry writes nothing: on restart the state machine resumes from the snapshot and
//! openraft re-applies the committed log after it. The snapshot must therefore be on disk before
//! openraft purges the entries it covers, which it does only after `build_snapshot` or
//! `install_snapshot` returned — by when this file holds it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::disk::{self, Magic};
use super::types::{LogId, SnapshotMeta};

/// The snapshot file's name in its directory.
pub const SNAPSHOT: &str = "raft-snapshot";
const SNAPSHOT_MAGIC: &Magic = b"duetsnp\x01";

/// A snapshot as kept on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedSnapshot {
    /// openraft's metadata: where the log resumes, the membership.
    pub meta: SnapshotMeta,
    /// The snapshot's bytes, as `build_snapshot` made them or `install_snapshot` received them.
    pub data: Vec<u8>,
    /// How many snapshots the node had built, so snapshot ids stay unique across restarts.
    pub built: u64,
}

/// A directory holding a state machine's snapshot.
#[derive(Debug)]
pub struct SnapshotFile {
    dir: PathBuf,
    /// The log id the file's snapshot covers; the lock also serializes writers.
    saved: Mutex<Option<LogId>>,
}

impl SnapshotFile {
    /// Opens `dir` (creating it if needed) and reads the snapshot it holds, if any.
    pub fn open(dir: &Path) -> io::Result<(Self, Option<SavedSnapshot>)> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(SNAPSHOT);
        let saved: Option<SavedSnapshot> = disk::read_value(&path, SNAPSHOT_MAGIC)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let covered = saved.as_ref().and_then(|s| s.meta.last_log_id);
        Ok((Self { dir: dir.to_owned(), saved: Mutex::new(covered) }, saved))
    }

    /// Replaces the saved snapshot, durably. Unless `newer_only` is false (an installed snapshot,
    /// which replaces the state whatever it was), a snapshot older than the saved one is skipped: a
    /// build that raced an install must not put back a state whose log may already be purged.
    pub fn save(&self, snapshot: &SavedSnapshot, newer_only: bool) -> io::Result<()> {
        let mut saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
        if newer_only && snapshot.meta.last_log_id < *saved {
            return Ok(());
        }
        disk::write_value(&self.dir, SNAPSHOT, SNAPSHOT_MAGIC, snapshot)?;
        *saved = snapshot.meta.last_log_id;
        Ok(())
    }
}
