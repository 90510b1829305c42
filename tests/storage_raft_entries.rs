//! Raft entries in the log: a log written in format version 3 (terms, no Raft index) opens with
//! every batch at index 0; Raft entries appended after it keep the ids they are given, are found
//! by index, refuse an index that does not go up, survive a reopen, and a truncation back to an
//! entry leaves that entry's id as the log's last.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{read_all, segment_file, small_config, value};
use strata::{
    record::{BATCH_VERSION, BATCH_VERSION_V3, BatchBuilder, Frame, batch_crc, decode_frame},
    record::{validate_batch, validate_stored_batch},
    storage::{AppendWait, EntryId, Log, LogConfig, Offset, StorageError},
};

/// A batch of `values` at `base` in format `version`.
fn batch(base: Offset, values: &[Vec<u8>], version: u8) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(1000 + base as i64, None, v, []);
    }
    b.finish_in_version(base, version)
}

/// A version-3 batch as a broker of that version stored it: with a term (bytes 48..56).
fn stored_v3(base: Offset, values: &[Vec<u8>], term: u64) -> Vec<u8> {
    let mut b = batch(base, values, BATCH_VERSION_V3);
    b[48..56].copy_from_slice(&term.to_le_bytes());
    let crc = batch_crc(&b);
    b[0..4].copy_from_slice(&crc.to_le_bytes());
    b
}

fn id(term: u64, index: u64) -> EntryId {
    EntryId { term, index }
}

/// The (version, term, index) of the batch holding `offset`.
fn stored_ids(log: &Log, offset: Offset) -> (u8, u64, u64) {
    let chunk = log.read(offset, 1).unwrap();
    let Frame::Batch(b) = decode_frame(&chunk.batches) else {
        panic!("no whole batch at {offset}")
    };
    let h = b.header();
    (h.version, h.term, h.raft_index)
}

#[test]
fn raft_entries_follow_a_version_3_log_and_are_found_by_index() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partition-0");
    std::fs::create_dir(&path).unwrap();
    let config = LogConfig {
        segment_max_bytes: 1 << 20,
        ..small_config()
    };

    // Offsets 0..5 in version 3, terms 1, 1, 2.
    let mut old = Vec::new();
    let mut want: Vec<(Offset, Vec<u8>)> = Vec::new();
    for (base, n, term) in [(0u64, 2u64, 1u64), (2, 1, 1), (3, 2, 2)] {
        let values: Vec<Vec<u8>> = (base..base + n).map(value).collect();
        old.extend(stored_v3(base, &values, term));
        want.extend((base..).zip(values));
    }
    std::fs::write(segment_file(&path, 0, "log"), &old).unwrap();

    let log = Log::open(&path, config.clone()).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), want);
    assert_eq!(
        log.last_entry(),
        id(2, 0),
        "version 3 has no index: it reads as 0"
    );
    assert_eq!(stored_ids(&log, 4), (BATCH_VERSION_V3, 2, 0));
    assert_eq!(log.offset_of_entry(1).unwrap(), None);

    // Entries 1..=4 in terms 2 and 3, in two appends; one batch holds two records.
    let mut entries = Vec::new();
    for (k, n) in [(1u64, 1u64), (2, 2), (3, 1), (4, 1)] {
        let base = want.len() as u64;
        let values: Vec<Vec<u8>> = (base..base + n).map(|i| value(100 + i)).collect();
        entries.push((k, batch(0, &values, BATCH_VERSION)));
        want.extend((base..).zip(values));
    }
    let first: Vec<u8> = entries[..2].iter().flat_map(|(_, b)| b.clone()).collect();
    let a = log
        .append_entries(
            &[id(2, 1), id(3, 2)],
            &validate_batch(&first, 1 << 20).unwrap(),
            AppendWait::Written,
        )
        .unwrap();
    assert_eq!((a[0].base_offset, a[1].base_offset), (5, 6));
    log.sync_to(a[1].next_offset).unwrap();

    // The same index again, or one below, is refused and leaves the log as it was.
    let third = &entries[2].1;
    for stale in [id(3, 2), id(3, 1)] {
        let err = log
            .append_entries(
                &[stale],
                &validate_batch(third, 1 << 20).unwrap(),
                AppendWait::Policy,
            )
            .unwrap_err();
        assert!(
            matches!(err, StorageError::IndexBehind { index, last: 2, .. } if index == stale.index),
            "{err}"
        );
    }
    // A term below the last is refused too, and a count that does not match the batches.
    let err = log
        .append_entries(
            &[id(2, 3)],
            &validate_batch(third, 1 << 20).unwrap(),
            AppendWait::Policy,
        )
        .unwrap_err();
    assert!(matches!(err, StorageError::TermBehind { .. }), "{err}");
    let err = log
        .append_entries(
            &[id(3, 3), id(3, 4)],
            &validate_batch(third, 1 << 20).unwrap(),
            AppendWait::Policy,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::EntryCount {
                ids: 2,
                batches: 1,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(log.next_offset(), 8);

    // A follower stores what its leader stored: read back and validated as stored batches.
    let chunk = log.read(5, 1 << 20).unwrap();
    let stored = validate_stored_batch(&chunk.batches).unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|b| b.header().raft_index)
            .collect::<Vec<_>>(),
        [1, 2]
    );
    log.append_entries(
        &[id(3, 3)],
        &validate_batch(third, 1 << 20).unwrap(),
        AppendWait::Policy,
    )
    .unwrap();
    // An append that is not an entry continues the index and the term.
    log.append_batches(&validate_batch(&entries[3].1, 1 << 20).unwrap())
        .unwrap();
    assert_eq!(log.last_entry(), id(3, 4));
    assert_eq!(stored_ids(&log, 9), (BATCH_VERSION, 3, 4));
    log.close().unwrap();

    let log = Log::open(&path, config.clone()).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), want);
    assert_eq!(log.last_entry(), id(3, 4));
    let found: Vec<Option<Offset>> = (0..=5).map(|i| log.offset_of_entry(i).unwrap()).collect();
    assert_eq!(found, [Some(0), Some(5), Some(6), Some(8), Some(9), None]);

    // A follower's truncation of entries 3 and 4 leaves entry 2 as the last; a new leader's
    // entry 3 in term 4 follows it.
    let cut = log.offset_of_entry(3).unwrap().unwrap();
    log.truncate(cut).unwrap();
    assert_eq!(log.last_entry(), id(3, 2));
    let values = vec![value(500)];
    log.append_entries(
        &[id(4, 3)],
        &validate_batch(&batch(0, &values, BATCH_VERSION), 1 << 20).unwrap(),
        AppendWait::Policy,
    )
    .unwrap();
    drop(log);
    let log = Log::open(&path, config).unwrap();
    want.truncate(cut as usize);
    want.extend((cut..).zip(values));
    assert_eq!(read_all(&log, 0).unwrap(), want);
    assert_eq!(log.last_entry(), id(4, 3));
    assert_eq!(log.offset_of_entry(3).unwrap(), Some(cut));
}

#[test]
fn an_empty_log_takes_any_first_index() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 1 << 20,
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.last_entry(), id(0, 0));
    let bytes = batch(0, &[value(1)], BATCH_VERSION);
    log.append_entries(
        &[id(7, 40)],
        &validate_batch(&bytes, 1 << 20).unwrap(),
        AppendWait::Policy,
    )
    .unwrap();
    assert_eq!(log.last_entry(), id(7, 40));
    assert_eq!(log.offset_of_entry(40).unwrap(), Some(0));
    assert_eq!(log.offset_of_entry(39).unwrap(), None);
}
