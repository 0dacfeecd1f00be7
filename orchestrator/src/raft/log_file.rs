//! The durable side of [`super::LogStore`]: an append-only file of log operations, replayed into
//! memory on open, and the vote and committed log id in small files replaced atomically.
//!
//! Every write is fsynced before it returns, so by the time openraft hears an append is done (or a
//! vote is saved) it survives a crash. Purged entries stay in the file as dead records until they
//! outweigh the live ones; then the file is rewritten with only the live entries.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::disk::{self, Magic, Next, RecordReader};
use super::types::{Entry, LogId, Vote};

/// The log file's name in its directory.
pub const LOG: &str = "raft-log";
/// The vote file's name.
pub const VOTE: &str = "raft-vote";
/// The committed log id file's name.
pub const COMMITTED: &str = "raft-committed";
const LOG_MAGIC: &Magic = b"duetlog\x01";
const VOTE_MAGIC: &Magic = b"duetvot\x01";
const COMMITTED_MAGIC: &Magic = b"duetcmt\x01";

/// Dead bytes (records of purged or truncated entries, and the operations themselves) the file may
/// carry before it is rewritten, if they also outweigh the live records.
const COMPACT_AFTER_DEAD_BYTES: u64 = 1 << 20;

/// One record of the log file. `E` is `&Entry` when writing, to encode without cloning.
#[derive(Serialize, Deserialize)]
enum LogOp<E> {
    /// An entry appended (replacing any entry at its index, as the in-memory store does).
    Append(E),
    /// Entries from this index on removed.
    Truncate(u64),
    /// Entries up to and including this log id removed.
    Purge(LogId),
}

/// What a log directory held when opened.
#[derive(Debug, Default)]
pub struct Replayed {
    /// The live entries.
    pub logs: BTreeMap<u64, Entry>,
    /// The last purged log id.
    pub last_purged: Option<LogId>,
    /// The saved vote.
    pub vote: Option<Vote>,
    /// The saved committed log id.
    pub committed: Option<LogId>,
}

/// An open log directory.
#[derive(Debug)]
pub struct LogFile {
    dir: PathBuf,
    /// The log file, opened for appending.
    file: File,
    /// The length of the file: the end of the last whole record.
    len: u64,
    /// Each live entry's record size, to tell when compaction pays.
    live: BTreeMap<u64, u64>,
    /// Set when a write failed and its partial record could not be cut off: anything written after
    /// it would follow garbage and make the file unreadable.
    broken: bool,
}

impl LogFile {
    /// Opens (creating if needed) the log in `dir` and replays it. A torn last record — a crash in the
    /// middle of an append, which openraft never heard completed — is cut off; any other damage is an
    /// `InvalidData` error.
    pub fn open(dir: &Path) -> io::Result<(Self, Replayed)> {
        std::fs::create_dir_all(dir)?;
        let context = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", dir.join(what).display()));
        let mut replayed = Replayed {
            vote: disk::read_value(&dir.join(VOTE), VOTE_MAGIC).map_err(|e| context(VOTE, e))?,
            committed: disk::read_value::<Option<LogId>>(&dir.join(COMMITTED), COMMITTED_MAGIC)
                .map_err(|e| context(COMMITTED, e))?
                .flatten(),
            ..Replayed::default()
        };
        let path = dir.join(LOG);
        let mut live = BTreeMap::new();
        let len = match File::open(&path) {
            Ok(file) => replay(file, &mut replayed, &mut live).map_err(|e| context(LOG, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                disk::replace_file(dir, LOG, LOG_MAGIC)?;
                LOG_MAGIC.len() as u64
            }
            Err(e) => return Err(context(LOG, e)),
        };
        let file = OpenOptions::new().append(true).open(&path)?;
        if file.metadata()?.len() > len {
            tracing::warn!(path = %path.display(), keep = len, "dropping a torn record a crash left at the end of the Raft log");
            file.set_len(len)?;
            file.sync_all()?;
        }
        Ok((Self { dir: dir.to_owned(), file, len, live, broken: false }, replayed))
    }

    /// Appends entries, durably.
    pub fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut bytes = Vec::new();
        let mut sizes = Vec::with_capacity(entries.len());
        for entry in entries {
            let before = bytes.len();
            disk::encode_record(&mut bytes, &LogOp::Append(entry))?;
            sizes.push((entry.log_id.index, (bytes.len() - before) as u64));
        }
        self.write(&bytes)?;
        self.live.extend(sizes);
        Ok(())
    }

    /// Removes entries from `index` on, durably.
    pub fn truncate(&mut self, index: u64) -> io::Result<()> {
        self.write_op(&LogOp::<&Entry>::Truncate(index))?;
        self.live.split_off(&index);
        Ok(())
    }

    /// Removes entries up to and including `log_id`, durably. Returns whether the file now carries
    /// enough dead records that [`Self::compact`] should rewrite it.
    pub fn purge(&mut self, log_id: LogId) -> io::Result<bool> {
        self.write_op(&LogOp::<&Entry>::Purge(log_id))?;
        self.live = self.live.split_off(&(log_id.index + 1));
        let live: u64 = self.live.values().sum();
        let dead = self.len - live;
        Ok(dead > COMPACT_AFTER_DEAD_BYTES && dead > live)
    }

    /// Rewrites the file with only `entries` after `last_purged`, atomically: a crash leaves the old
    /// file or the new one.
    pub fn compact<'a>(
        &mut self,
        last_purged: Option<LogId>,
        entries: impl IntoIterator<Item = &'a Entry>,
    ) -> io::Result<()> {
        let mut bytes = LOG_MAGIC.to_vec();
        if let Some(log_id) = last_purged {
            disk::encode_record(&mut bytes, &LogOp::<&Entry>::Purge(log_id))?;
        }
        let mut live = BTreeMap::new();
        for entry in entries {
            let before = bytes.len();
            disk::encode_record(&mut bytes, &LogOp::Append(entry))?;
            live.insert(entry.log_id.index, (bytes.len() - before) as u64);
        }
        disk::replace_file(&self.dir, LOG, &bytes)?;
        self.file = OpenOptions::new().append(true).open(self.dir.join(LOG))?;
        self.len = bytes.len() as u64;
        self.live = live;
        self.broken = false;
        Ok(())
    }

    /// Saves the vote, durably.
    pub fn save_vote(&self, vote: &Vote) -> io::Result<()> {
        disk::write_value(&self.dir, VOTE, VOTE_MAGIC, vote)
    }

    /// Saves the committed log id, durably.
    pub fn save_committed(&self, committed: Option<LogId>) -> io::Result<()> {
        disk::write_value(&self.dir, COMMITTED, COMMITTED_MAGIC, &committed)
    }

    fn write_op(&mut self, op: &LogOp<&Entry>) -> io::Result<()> {
        let mut bytes = Vec::new();
        disk::encode_record(&mut bytes, op)?;
        self.write(&bytes)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.broken {
            return Err(io::Error::other("an earlier write to the Raft log failed and could not be undone"));
        }
        match self.file.write_all(bytes).and_then(|()| self.file.sync_data()) {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off what part of the records reached the file, so the next write doesn't land
                // after garbage.
                if self.file.set_len(self.len).and_then(|()| self.file.sync_data()).is_err() {
                    self.broken = true;
                }
                Err(e)
            }
        }
    }
}

/// Replays the log file into `replayed` and `live`; returns the length of its intact records.
fn replay(file: File, replayed: &mut Replayed, live: &mut BTreeMap<u64, u64>) -> io::Result<u64> {
    let mut records = RecordReader::new(file, LOG_MAGIC)?;
    loop {
        let start = records.good_len();
        let payload = match records.next()? {
            Next::Record(payload) => payload,
            Next::End | Next::Torn => return Ok(records.good_len()),
        };
        match disk::decode::<LogOp<Entry>>(&payload, "a Raft log record")? {
            LogOp::Append(entry) => {
                live.insert(entry.log_id.index, records.good_len() - start);
                replayed.logs.insert(entry.log_id.index, entry);
            }
            LogOp::Truncate(index) => {
                replayed.logs.split_off(&index);
                live.split_off(&index);
            }
            LogOp::Purge(log_id) => {
                replayed.logs = replayed.logs.split_off(&(log_id.index + 1));
                *live = live.split_off(&(log_id.index + 1));
                replayed.last_purged = Some(log_id);
            }
        }
    }
}
