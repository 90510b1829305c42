//! A crash at every step of a segment roll (sync, index persist, trim, new segment, directory
//! sync, checkpoint): reopening keeps every acknowledged record, appends continue at the next
//! offset, and no segment file is left that does not belong.
//!
//! The crash is simulated through the fault seam: the k-th file operation of the roll fails,
//! the log is dropped where it stands (nothing more is written), and it is opened again.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
    pub mod storage;
}

use common::faults::Script;
use common::storage::{append, fill, read_all, segments, small_config, value};
use std::sync::Arc;
use strata::storage::{Log, LogConfig, Offset};

fn config(faults: &Arc<Script>) -> LogConfig {
    LogConfig {
        faults: Some(faults.as_injector()),
        ..small_config()
    }
}

type Records = Vec<(Offset, Vec<u8>)>;

/// Runs `roll` with its `k`-th file operation failing; `roll` returns the records it appended
/// that were acknowledged, and those that were not (which a reopen may or may not find). Returns
/// whether the failure was hit (so the crash came before the roll and its append were done).
fn crash_and_check(k: usize, roll: impl Fn(&Log) -> (Records, Records)) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let faults = Script::new();
    let log = Log::open(dir.path(), config(&faults)).unwrap();
    let records = fill(&log, 30);
    faults.fail_nth(k);
    let (acknowledged, unacknowledged) = roll(&log);
    let hit = faults.last_hit();
    faults.heal();
    drop(log); // the crash

    let context = format!("failing operation {k} of the roll ({hit:?})");
    let log = Log::open(dir.path(), small_config()).unwrap();
    let mut want: Records = records.into_iter().chain(acknowledged).collect();
    let found = read_all(&log, 0).unwrap();
    if found.len() > want.len() {
        // An append that failed after its bytes were written may survive; all of it or none.
        want.extend(unacknowledged);
    }
    assert_eq!(found, want, "{context}");
    assert_eq!(log.next_offset(), want.len() as u64, "{context}");
    let after = fill(&log, 5);
    assert_eq!(after[0].0, want.len() as u64, "{context}");
    let segs = segments(dir.path());
    assert_eq!(segs[0].0, 0, "{context}");
    assert_eq!(
        log.stats().segments as usize,
        segs.len(),
        "{context}: {segs:?}"
    );
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    want.extend(after);
    assert_eq!(read_all(&log, 0).unwrap(), want, "{context}, reopened");
    assert!(
        !std::fs::read_dir(dir.path()).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")),
        "{context}: temporary files left behind"
    );
    hit.is_some()
}

#[test]
fn a_crash_at_any_step_of_an_explicit_roll_loses_nothing() {
    let mut k = 0;
    while crash_and_check(k, |log| {
        let _ = log.roll();
        (Vec::new(), Vec::new())
    }) {
        k += 1;
    }
    assert!(k >= 8, "a roll has at least 8 file operations, saw {k}");
}

#[test]
fn a_crash_at_any_step_of_a_roll_inside_an_append_loses_nothing() {
    let mut k = 0;
    // A batch too large for what is left of the active segment rolls it first.
    let batch = vec![(30, value(1_000)), (31, vec![b'x'; 3_000])];
    while crash_and_check(k, |log| {
        let values: Vec<Vec<u8>> = batch.iter().map(|(_, v)| v.clone()).collect();
        match append(log, &values, 1) {
            Ok(_) => (batch.clone(), Vec::new()),
            Err(_) => (Vec::new(), batch.clone()),
        }
    }) {
        k += 1;
    }
    assert!(k >= 8, "a roll has at least 8 file operations, saw {k}");
}
