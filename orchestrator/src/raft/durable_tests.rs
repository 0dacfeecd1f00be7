//! The durable stores: openraft's storage suite, reopening after writes, compaction, a torn tail and
//! damaged files.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, EntryPayload, StorageError};
use tempfile::TempDir;

use super::log_file::{LOG, VOTE};
use super::snapshot_file::SNAPSHOT;
use super::*;
use crate::state::{Command, VmState};

/// Fresh durable stores in a directory of their own, removed when the suite drops the guard.
struct DurableBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for DurableBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError<NodeId>> {
        let dir = tempfile::tempdir().expect("a temp dir");
        let log = LogStore::open(dir.path()).expect("a new log opens");
        let sm = StateMachineStore::open(dir.path()).expect("a new state machine opens");
        Ok((dir, log, sm))
    }
}

#[test]
fn durable_stores_pass_the_openraft_suite() {
    let started = std::time::Instant::now();
    Suite::test_all(DurableBuilder).expect("suite passes");
    eprintln!("openraft Suite on the durable stores took {:?}", started.elapsed());
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// An entry carrying a command of about `pad` bytes.
fn entry(term: u64, index: u64, pad: usize) -> Entry {
    let name = format!("vm-{index}-{}", "x".repeat(pad));
    let command = Command::CreateVm { name, vcpus: 1, memory_mib: 64, image: String::new(), host: 1 };
    Entry { log_id: log_id(term, index), payload: EntryPayload::Normal(command) }
}

fn membership_entry(index: u64) -> Entry {
    let members = BTreeMap::from([(1, Member { name: "node-1".into(), ticket: "duet:grpc=127.0.0.1:1".into() })]);
    Entry {
        log_id: log_id(1, index),
        payload: EntryPayload::Membership(Membership::new(vec![BTreeSet::from([1])], members)),
    }
}

async fn all_entries(log: &mut LogStore) -> Vec<Entry> {
    log.try_get_log_entries(..).await.expect("entries read")
}

fn log_len(dir: &Path) -> u64 {
    fs::metadata(dir.join(LOG)).expect("the log file exists").len()
}

#[tokio::test]
async fn a_reopened_log_returns_the_vote_committed_and_entries_after_truncate_and_purge() {
    let dir = tempfile::tempdir().unwrap();
    let vote = Vote::new(4, 2);
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(3, 1)).await.unwrap();
        log.save_vote(&vote).await.unwrap();
        log.blocking_append([membership_entry(1)]).await.unwrap();
        log.blocking_append((2..=20).map(|i| entry(3, i, 10))).await.unwrap();
        log.truncate(log_id(3, 15)).await.unwrap();
        log.blocking_append((15..=16).map(|i| entry(4, i, 10))).await.unwrap();
        log.purge(log_id(3, 5)).await.unwrap();
        log.save_committed(Some(log_id(3, 12))).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(3, 12)));
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(3, 5)), Some(log_id(4, 16))));
    let expected: Vec<Entry> = (6..=14).map(|i| entry(3, i, 10)).chain((15..=16).map(|i| entry(4, i, 10))).collect();
    assert_eq!(all_entries(&mut log).await, expected);
}

#[tokio::test]
async fn purges_compact_the_log_file_and_it_still_reopens() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=1000).map(|i| entry(1, i, 2000))).await.unwrap();
        let before = log_len(dir.path());
        log.purge(log_id(1, 900)).await.unwrap();
        let after = log_len(dir.path());
        assert!(after < before / 5, "purging 90% of the entries left {after} of {before} bytes");
        log.blocking_append([entry(1, 1001, 10)]).await.unwrap();
    }
    let mut log = LogStore::open(dir.path()).unwrap();
    let state = log.get_log_state().await.unwrap();
    assert_eq!((state.last_purged_log_id, state.last_log_id), (Some(log_id(1, 900)), Some(log_id(1, 1001))));
    let expected: Vec<Entry> = (901..=1000).map(|i| entry(1, i, 2000)).chain([entry(1, 1001, 10)]).collect();
    assert_eq!(all_entries(&mut log).await, expected);
}

#[tokio::test]
async fn a_torn_last_record_is_dropped_and_the_log_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let intact = {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.blocking_append((1..=5).map(|i| entry(1, i, 50))).await.unwrap();
        let intact = log_len(dir.path());
        log.blocking_append([entry(1, 6, 50)]).await.unwrap();
        intact
    };
    // A crash halfway through writing entry 6's record, then a few bytes of garbage for good measure.
    let whole = log_len(dir.path());
    let file = OpenOptions::new().write(true).open(dir.path().join(LOG)).unwrap();
    file.set_len(intact + (whole - intact) / 2).unwrap();
    drop(file);
    let mut log = LogStore::open(dir.path()).expect("a torn tail is not an error");
    assert_eq!(all_entries(&mut log).await, (1..=5).map(|i| entry(1, i, 50)).collect::<Vec<_>>());
    assert_eq!(log_len(dir.path()), intact, "the torn record is cut off");

    log.blocking_append([entry(1, 6, 50)]).await.unwrap();
    drop(log);
    let mut tail = OpenOptions::new().append(true).open(dir.path().join(LOG)).unwrap();
    io::Write::write_all(&mut tail, &[0xde, 0xad, 0xbe, 0xef, 7]).unwrap();
    drop(tail);
    let mut log = LogStore::open(dir.path()).expect("a short garbage tail is a torn header");
    assert_eq!(all_entries(&mut log).await, (1..=6).map(|i| entry(1, i, 50)).collect::<Vec<_>>());
}

#[tokio::test]
async fn damaged_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut log = LogStore::open(dir.path()).unwrap();
        log.save_vote(&Vote::new(1, 1)).await.unwrap();
        log.blocking_append((1..=20).map(|i| entry(1, i, 50))).await.unwrap();
    }
    let path = dir.path().join(LOG);
    let mut bytes = fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    let err = LogStore::open(dir.path()).expect_err("a damaged record in the middle of the log");
    assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    assert!(err.to_string().contains(LOG), "the error names the file: {err}");

    bytes[middle] ^= 0x10;
    fs::write(&path, &bytes).unwrap();
    LogStore::open(dir.path()).expect("undamaged again");
    let vote = dir.path().join(VOTE);
    let mut vote_bytes = fs::read(&vote).unwrap();
    *vote_bytes.last_mut().unwrap() ^= 1;
    fs::write(&vote, vote_bytes).unwrap();
    assert_eq!(LogStore::open(dir.path()).unwrap_err().kind(), io::ErrorKind::InvalidData);

    let sm_dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(sm_dir.path()).unwrap();
    sm.apply([membership_entry(1), entry(1, 2, 10)]).await.unwrap();
    sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    let snapshot = sm_dir.path().join(SNAPSHOT);
    let mut snapshot_bytes = fs::read(&snapshot).unwrap();
    let middle = snapshot_bytes.len() / 2;
    snapshot_bytes[middle] ^= 0x10;
    fs::write(&snapshot, snapshot_bytes).unwrap();
    assert_eq!(StateMachineStore::open(sm_dir.path()).unwrap_err().kind(), io::ErrorKind::InvalidData);
}

#[tokio::test]
async fn a_reopened_state_machine_resumes_from_its_latest_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let built = {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply([membership_entry(1), entry(1, 2, 0), entry(1, 3, 0)]).await.unwrap();
        let built = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
        // Applied but not in a snapshot: openraft re-applies it from the committed log on restart.
        sm.apply([entry(1, 4, 0)]).await.unwrap();
        built
    };
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(1, 3)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    assert_eq!(sm.state().read().unwrap().vms.len(), 2);
    assert_eq!(sm.state().read().unwrap().vms["vm-2-"].state, VmState::Created);
    let current = sm.get_current_snapshot().await.unwrap().expect("the saved snapshot");
    assert_eq!(current.meta, built.meta);
    assert_eq!(current.snapshot.into_inner(), built.snapshot.into_inner());

    // A snapshot built after a restart gets an id of its own.
    let rebuilt = sm.get_snapshot_builder().await.build_snapshot().await.unwrap();
    assert_ne!(rebuilt.meta.snapshot_id, built.meta.snapshot_id);

    // An installed snapshot replaces the saved one, even one covering a later log id.
    let other_dir = tempfile::tempdir().unwrap();
    let mut other = StateMachineStore::open(other_dir.path()).unwrap();
    other.apply((1..=9).map(|i| entry(1, i, 0))).await.unwrap();
    let later = other.get_snapshot_builder().await.build_snapshot().await.unwrap();
    other.install_snapshot(&rebuilt.meta, rebuilt.snapshot).await.unwrap();
    drop(other);
    let mut other = StateMachineStore::open(other_dir.path()).unwrap();
    assert_eq!(other.applied_state().await.unwrap().0, Some(log_id(1, 3)));
    assert_eq!(other.state().read().unwrap().vms.len(), 2);
    assert_ne!(later.meta.last_log_id, Some(log_id(1, 3)));
}
