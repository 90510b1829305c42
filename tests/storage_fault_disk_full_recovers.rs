//! A full disk (ENOSPC) wherever the log asks for space: allocating blocks ahead of the writes,
//! trimming a sealed segment and creating the next one in a roll, writing index files and the
//! recovery checkpoint. Each failing append is `DiskFull` and stores nothing; the log is not
//! poisoned; once space is back the next append succeeds without a reopen; and a reopen (after a
//! crash) finds exactly the acknowledged records.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
    pub mod storage;
}

use common::faults::{ENOSPC, Fault, Script};
use common::storage::{append, fill, read_all, small_config, value};
use std::sync::Arc;
use strata::storage::{FileOp, Log, LogConfig, Offset, StorageError};

type Records = Vec<(Offset, Vec<u8>)>;

fn config(script: &Arc<Script>) -> LogConfig {
    LogConfig {
        faults: Some(script.as_injector()),
        ..small_config()
    }
}

/// Appends until the active segment has less room than one more 200-byte record needs.
fn fill_segment(log: &Log) -> Records {
    let mut out = Vec::new();
    let segments = log.stats().segments;
    loop {
        let next = log.next_offset();
        let v = vec![b'f'; 200];
        let before = log.stats();
        append(log, std::slice::from_ref(&v), 1000).unwrap();
        out.push((next, v));
        assert_eq!(
            log.stats().segments,
            segments,
            "rolled while filling: {before:?}"
        );
        if log.stats().bytes + 300 > 4096 * u64::from(segments) {
            return out;
        }
    }
}

/// Runs `op` with the disk full as `arm` sets up, checks it fails with `DiskFull` and stores
/// nothing, then frees the disk and checks appends go on, before and after a crash.
fn full_then_free(name: &str, setup: impl Fn(&Log) -> Records, arm: impl Fn(&Script)) {
    full_then_free_with(small_config(), name, setup, arm);
}

fn full_then_free_with(
    base: LogConfig,
    name: &str,
    setup: impl Fn(&Log) -> Records,
    arm: impl Fn(&Script),
) {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new();
    let config = LogConfig {
        faults: Some(script.as_injector()),
        ..base.clone()
    };
    let log = Log::open(dir.path(), config).unwrap();
    let mut acked = setup(&log);
    arm(&script);
    // Appends that still find space succeed, until one needs what is not there.
    for _ in 0..2000 {
        if script.hit_count() > 0 {
            break;
        }
        let v = vec![b'w'; 200];
        match append(&log, std::slice::from_ref(&v), 1500) {
            Ok(a) => acked.push((a.base_offset, v)),
            Err(e) => assert!(matches!(e, StorageError::DiskFull { .. }), "{name}: {e:?}"),
        }
    }
    for attempt in 0..3 {
        let failed = append(&log, &[vec![b'x'; 200]], 2000);
        assert!(
            matches!(failed, Err(StorageError::DiskFull { .. })),
            "{name}, attempt {attempt}: {failed:?}"
        );
        assert_eq!(log.next_offset(), acked.len() as u64, "{name}");
        assert_eq!(read_all(&log, 0).unwrap(), acked, "{name}");
    }
    assert!(script.hit_count() > 0, "{name}: the fault was never hit");

    script.heal();
    let v = vec![b'y'; 200];
    let a = append(&log, std::slice::from_ref(&v), 3000)
        .unwrap_or_else(|e| panic!("{name}: no append after space came back: {e}"));
    assert_eq!(a.base_offset, acked.len() as u64, "{name}");
    acked.push((a.base_offset, v));
    acked.extend(fill(&log, 20));
    assert_eq!(read_all(&log, 0).unwrap(), acked, "{name}");
    drop(log); // a crash

    let log = Log::open(dir.path(), base).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), acked, "{name}: after reopen");
    assert_eq!(log.next_offset(), acked.len() as u64, "{name}");
    let more = fill(&log, 5);
    assert_eq!(more[0].0, acked.len() as u64, "{name}");
}

#[test]
fn no_blocks_to_allocate() {
    // Large segments: blocks are allocated a step ahead of the writes, and the disk fills when
    // the writes reach the end of a step.
    let base = LogConfig {
        segment_max_bytes: 1 << 20,
        ..small_config()
    };
    full_then_free_with(
        base,
        "allocate",
        |log| fill(log, 7),
        |s| s.fail(FileOp::Create, ".log", Fault::Errno(ENOSPC), 1000),
    );
}

#[test]
fn no_room_for_the_sealed_segment_trim_or_the_next_segment() {
    full_then_free("trim in a roll", fill_segment, |s| {
        s.fail(FileOp::Create, ".log", Fault::Errno(ENOSPC), 1000);
    });
    full_then_free("next segment in a roll", fill_segment, |s| {
        // The trim of the sealed segment passes; creating the next one fails.
        s.fail_after(FileOp::Create, ".log", Fault::Errno(ENOSPC), 1, 1000);
    });
}

#[test]
fn no_room_for_index_files_or_the_checkpoint_in_a_roll() {
    full_then_free("index in a roll", fill_segment, |s| {
        s.fail(FileOp::Write, ".index", Fault::Errno(ENOSPC), 1000);
    });
    full_then_free("time index in a roll", fill_segment, |s| {
        s.fail(FileOp::Write, ".timeindex", Fault::Errno(ENOSPC), 1000);
    });
}

#[test]
fn no_room_for_the_checkpoint_in_a_roll() {
    // The roll itself completes; only its checkpoint fails, so the first append fails and the
    // next ones, in the new segment, need no checkpoint.
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new();
    let log = Log::open(dir.path(), config(&script)).unwrap();
    let mut acked = fill_segment(&log);
    script.fail(
        FileOp::Write,
        "recovery-point.tmp",
        Fault::Errno(ENOSPC),
        1000,
    );
    let failed = append(&log, &[vec![b'x'; 200]], 2000);
    assert!(
        matches!(failed, Err(StorageError::DiskFull { .. })),
        "{failed:?}"
    );
    assert_eq!(read_all(&log, 0).unwrap(), acked);
    acked.extend(fill(&log, 5));
    assert!(matches!(log.flush(), Err(StorageError::DiskFull { .. })));
    script.heal();
    log.flush().unwrap();
    acked.extend(fill(&log, 5));
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), acked);
}

#[test]
fn a_failed_checkpoint_does_not_poison_and_the_next_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new();
    let log = Log::open(dir.path(), config(&script)).unwrap();
    let mut acked = fill(&log, 10);
    script.fail(
        FileOp::Write,
        "recovery-point.tmp",
        Fault::Errno(ENOSPC),
        1000,
    );
    for _ in 0..3 {
        assert!(matches!(log.flush(), Err(StorageError::DiskFull { .. })));
        assert!(matches!(
            log.tick(0),
            Err(StorageError::DiskFull { .. }) | Ok(())
        ));
        acked.extend(fill(&log, 3));
    }
    script.heal();
    log.flush().unwrap();
    acked.extend(fill(&log, 3));
    assert_eq!(read_all(&log, 0).unwrap(), acked);
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log, 0).unwrap(), acked);
}

#[test]
fn too_little_room_to_allocate_ahead_still_takes_a_batch_that_fits() {
    // Only the step ahead fails; the blocks the batch itself needs are there.
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new();
    let log = Log::open(dir.path(), config(&script)).unwrap();
    script.fail(FileOp::Create, ".log", Fault::Errno(ENOSPC), 1);
    let a = append(&log, &[value(0)], 1000).unwrap();
    assert_eq!(a.base_offset, 0);
    assert_eq!(
        script.hit_count(),
        1,
        "the allocation ahead was asked for and refused"
    );
    assert_eq!(read_all(&log, 0).unwrap(), vec![(0, value(0))]);
}
