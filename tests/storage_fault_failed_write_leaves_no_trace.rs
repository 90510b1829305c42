//! A write of a segment that fails (EIO, ENOSPC, or torn: part written, then EIO) fails its
//! request and leaves no trace of it: the offsets do not move, nothing of the request is read
//! back, the next append takes the offset the failed one would have had and succeeds without a
//! reopen, the bytes the failed write left are cleared (so no longer batch's tail can follow a
//! shorter one), and a crash right after the failure recovers exactly what was acknowledged.
//! Under every fsync policy, for requests of one batch and of several.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
    pub mod files;
    pub mod storage;
}

use common::faults::{EIO, ENOSPC, Fault, Script};
use common::files::batches_in;
use common::storage::{append, read_all, segments, small_config};
use std::{path::Path, time::Duration};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{Appended, FileOp, FsyncPolicy, Log, LogConfig, Offset, StorageError},
};

type Records = Vec<(Offset, Vec<u8>)>;

const POLICIES: [FsyncPolicy; 3] = [
    FsyncPolicy::Always,
    FsyncPolicy::Interval(Duration::from_secs(3600)),
    FsyncPolicy::Never,
];

const FAULTS: [Fault; 5] = [
    Fault::Errno(EIO),
    Fault::Errno(ENOSPC),
    Fault::Torn(0),
    Fault::Torn(30),
    Fault::Torn(200),
];

fn config(script: &std::sync::Arc<Script>, fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        faults: Some(script.as_injector()),
        ..small_config()
    }
}

/// One request of `batches` batches of three 60-byte records each, values tagged `tag`.
fn request(log: &Log, batches: usize, tag: u8) -> (Result<Vec<Appended>, StorageError>, Records) {
    let mut bytes = Vec::new();
    let mut values = Vec::new();
    for _ in 0..batches {
        let mut b = BatchBuilder::default();
        for _ in 0..3 {
            let v = vec![tag; 60];
            b.push_parts(5_000, None, &v, []);
            values.push(v);
        }
        bytes.extend_from_slice(&b.finish(0));
    }
    let valid = validate_batch(&bytes, 1 << 20).unwrap();
    let next = log.next_offset();
    let result = log.append_batches(&valid);
    (result, (next..).zip(values).collect())
}

fn fill_small(log: &Log, count: u64) -> Records {
    (0..count)
        .map(|i| {
            let v = format!("acked-{i:04}").into_bytes();
            let a = append(log, std::slice::from_ref(&v), 1000).unwrap();
            (a.base_offset, v)
        })
        .collect()
}

/// The bytes of the active segment after its last whole batch are all zero.
fn tail_is_clear(dir: &Path) -> bool {
    let (_, path) = segments(dir).pop().unwrap();
    let end = batches_in(&path)
        .last()
        .map_or(0, |(pos, h)| pos + u64::from(h.length));
    std::fs::read(&path).unwrap()[end as usize..]
        .iter()
        .all(|&b| b == 0)
}

fn check_failure(result: &Result<Vec<Appended>, StorageError>, fault: Fault) {
    match (fault, result) {
        (Fault::Errno(ENOSPC), Err(StorageError::DiskFull { .. }))
        | (_, Err(StorageError::Io { op: "write", .. })) => {}
        _ => panic!("{fault:?}: {result:?}"),
    }
}

#[test]
fn a_failed_write_fails_its_request_and_the_next_append_takes_its_offset() {
    for fsync in POLICIES {
        for fault in FAULTS {
            for (batches, failing) in [(1, 0), (3, 0), (3, 2)] {
                let ctx = format!("{fsync:?} {fault:?}, batch {failing} of {batches} fails");
                let dir = tempfile::tempdir().unwrap();
                let script = Script::new();
                let log = Log::open(dir.path(), config(&script, fsync)).unwrap();
                let mut acked = fill_small(&log, 10);
                let before = log.last_entry();

                script.fail_after(FileOp::Write, ".log", fault, failing, 1);
                let (result, _) = request(&log, batches, b'F');
                assert_eq!(script.hit_count(), 1, "{ctx}");
                check_failure(&result, fault);
                assert_eq!(log.next_offset(), 10, "{ctx}");
                assert_eq!(
                    log.last_entry(),
                    before,
                    "{ctx}: the failed batches' ids stayed"
                );
                assert_eq!(read_all(&log, 0).unwrap(), acked, "{ctx}");
                assert!(
                    tail_is_clear(dir.path()),
                    "{ctx}: the failed write left bytes"
                );

                // Space is back: a shorter request succeeds at the failed one's offset, without
                // a reopen, and nothing of the longer failed one shows after it.
                script.heal();
                let (result, records) = request(&log, 1, b'N');
                let appended = result.unwrap_or_else(|e| panic!("{ctx}: {e}"));
                assert_eq!(appended[0].base_offset, 10, "{ctx}");
                assert_eq!(
                    log.last_entry().index,
                    before.index + 1,
                    "{ctx}: an index skipped"
                );
                acked.extend(records);
                assert_eq!(read_all(&log, 0).unwrap(), acked, "{ctx}");
                log.flush().unwrap();
                assert!(
                    tail_is_clear(dir.path()),
                    "{ctx}: stale bytes after the new batch"
                );
                drop(log); // a crash

                let log = Log::open(dir.path(), small_config()).unwrap();
                assert_eq!(read_all(&log, 0).unwrap(), acked, "{ctx}: after reopen");
                assert_eq!(log.next_offset(), acked.len() as u64, "{ctx}");
            }
        }
    }
}

#[test]
fn a_crash_right_after_a_failed_request_recovers_only_what_was_acknowledged() {
    for fsync in POLICIES {
        for fault in FAULTS {
            for (batches, failing) in [(1, 0), (3, 1), (3, 2)] {
                let ctx = format!("{fsync:?} {fault:?}, batch {failing} of {batches} fails");
                let dir = tempfile::tempdir().unwrap();
                let script = Script::new();
                let log = Log::open(dir.path(), config(&script, fsync)).unwrap();
                let acked = fill_small(&log, 10);
                log.flush().unwrap();
                script.fail_after(FileOp::Write, ".log", fault, failing, 1);
                let (result, _) = request(&log, batches, b'F');
                check_failure(&result, fault);
                drop(log); // a crash

                let log = Log::open(dir.path(), small_config()).unwrap();
                assert_eq!(read_all(&log, 0).unwrap(), acked, "{ctx}");
                assert_eq!(log.next_offset(), 10, "{ctx}");
            }
        }
    }
}

#[test]
fn a_request_that_does_not_fit_rolls_before_it_so_it_fails_whole() {
    // The active segment has room for one batch of the request but not three: the request
    // goes to a new segment whole, and its last batch failing takes back the first two.
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new();
    let log = Log::open(dir.path(), config(&script, FsyncPolicy::Always)).unwrap();
    let mut acked = Vec::new();
    while log.stats().bytes < 3200 {
        let (result, records) = request(&log, 1, b'A');
        result.unwrap();
        acked.extend(records);
    }
    assert_eq!(log.stats().segments, 1);
    script.fail_after(FileOp::Write, ".log", Fault::Errno(ENOSPC), 2, 1);
    let (result, _) = request(&log, 3, b'F');
    check_failure(&result, Fault::Errno(ENOSPC));
    assert_eq!(log.next_offset(), acked.len() as u64);
    assert_eq!(read_all(&log, 0).unwrap(), acked);
    script.heal();
    let (result, records) = request(&log, 3, b'G');
    assert_eq!(result.unwrap()[0].base_offset, acked.len() as u64);
    acked.extend(records);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), acked);
}
