//! Upgrade: a partition directory written by builds before terms (batch format versions 1 and
//! 2, a 48-byte header, no checkpoint or index yet) opens in this build. Its records read back
//! unchanged, their term is 0, and appends continue after them in the current format, in
//! the term they are given, across a reopen and a truncation back into the old batches.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{read_all, segment_file, small_config, value};
use strata::{
    record::{BATCH_VERSION, BatchBuilder, Frame, decode_frame, validate_batch},
    storage::{AppendWait, Log, LogConfig, Offset},
};

/// A batch of `values` at `base`, every record stamped `1000 + base`, in format `version`.
fn batch(base: Offset, values: &[Vec<u8>], version: u8) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(1000 + base as i64, None, v, []);
    }
    b.finish_in_version(base, version)
}

/// The format version of the batch holding `offset`, as stored.
fn stored_version(log: &Log, offset: Offset) -> u8 {
    let chunk = log.read(offset, 1).unwrap();
    let Frame::Batch(b) = decode_frame(&chunk.batches) else {
        panic!("no whole batch at {offset}")
    };
    b.header().version
}

#[test]
fn a_log_written_before_terms_reads_as_term_0_and_continues_in_the_current_format() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("partition-0");
    std::fs::create_dir(&path).unwrap();
    let config = LogConfig {
        segment_max_bytes: 1 << 20,
        ..small_config()
    };

    // Offsets 0..3 in version 1, 3..7 in version 2: a log upgraded once already.
    let mut old = Vec::new();
    let mut want: Vec<(Offset, Vec<u8>)> = Vec::new();
    for (base, n, version) in [(0u64, 3u64, 1u8), (3, 1, 2), (4, 3, 2)] {
        let values: Vec<Vec<u8>> = (base..base + n).map(value).collect();
        old.extend(batch(base, &values, version));
        want.extend((base..).zip(values));
    }
    std::fs::write(segment_file(&path, 0, "log"), &old).unwrap();

    let log = Log::open(&path, config.clone()).unwrap();
    assert_eq!(log.next_offset(), 7);
    assert_eq!(read_all(&log, 0).unwrap(), want);
    for offset in 0..7 {
        assert_eq!(log.term_at(offset).unwrap(), 0, "term at {offset}");
    }
    assert_eq!(log.last_term(), 0);
    assert_eq!((stored_version(&log, 0), stored_version(&log, 5)), (1, 2));
    assert_eq!(log.stats().bytes, old.len() as u64, "stored as they were");

    // An append in term 2 and one that inherits it, both after the old batches.
    let values: Vec<Vec<u8>> = (7..9).map(value).collect();
    let bytes = batch(7, &values, BATCH_VERSION);
    let a = log
        .append_in_term(
            2,
            &validate_batch(&bytes, 1 << 20).unwrap(),
            AppendWait::Policy,
        )
        .unwrap();
    assert_eq!((a[0].base_offset, a[0].next_offset), (7, 9));
    want.extend((7..).zip(values));
    let values: Vec<Vec<u8>> = vec![value(9)];
    let bytes = batch(9, &values, 2);
    log.append_batches(&validate_batch(&bytes, 1 << 20).unwrap())
        .unwrap();
    want.extend((9..).zip(values));
    assert_eq!((log.term_at(8).unwrap(), log.term_at(9).unwrap()), (2, 2));
    assert_eq!(
        stored_version(&log, 9),
        BATCH_VERSION,
        "a batch sent in version 2 is stored in the current one"
    );
    log.close().unwrap();

    let log = Log::open(&path, config.clone()).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), want);
    assert_eq!(log.last_term(), 2);
    assert_eq!(
        (0..10).map(|o| log.term_at(o).unwrap()).collect::<Vec<_>>(),
        [0, 0, 0, 0, 0, 0, 0, 2, 2, 2]
    );

    // Cutting back into the old batches leaves their term, 0, as the log's: a later term 1
    // is then accepted, as a Raft follower taking a new leader's entries must.
    assert_eq!(log.truncate(5).unwrap(), 4);
    assert_eq!(log.last_term(), 0);
    let values: Vec<Vec<u8>> = vec![value(100)];
    let bytes = batch(4, &values, BATCH_VERSION);
    log.append_in_term(
        1,
        &validate_batch(&bytes, 1 << 20).unwrap(),
        AppendWait::Written,
    )
    .unwrap();
    log.sync_to(5).unwrap();
    drop(log);
    let log = Log::open(&path, config).unwrap();
    want.truncate(4);
    want.extend((4..).zip(values));
    assert_eq!(read_all(&log, 0).unwrap(), want);
    assert_eq!((log.term_at(3).unwrap(), log.term_at(4).unwrap()), (0, 1));
    assert_eq!(log.last_term(), 1);
}
