//! A segment fsync that fails (EIO or ENOSPC) wherever the log syncs: an `Always` append's
//! group commit, an `Interval` append that finds a sync due, a roll, a checkpoint (flush, tick).
//! The call that hit it fails; the log is poisoned (every later append, roll, flush and tick
//! fails with `Poisoned`, also once the disk works again: what is on disk is unknown); what was
//! acknowledged before is still read, and a failed `Always` append never becomes visible; and a
//! reopen recovers every acknowledged record, the failed append whole or not at all, and takes
//! appends again.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
    pub mod storage;
}

use common::faults::{EIO, ENOSPC, Fault, Script};
use common::storage::{append, fill, read_all, small_config, value};
use std::time::Duration;
use strata::storage::{FileOp, FsyncPolicy, Log, LogConfig, StorageError};

#[derive(Debug, Clone, Copy)]
enum Site {
    AlwaysAppend,
    IntervalAppend,
    Roll,
    Flush,
    Tick,
}

fn fsync_failed(result: &Result<(), StorageError>, errno: i32) -> bool {
    match result {
        Err(StorageError::DiskFull { .. }) => errno == ENOSPC,
        Err(StorageError::Io { op, .. }) => *op == "fsync",
        _ => false,
    }
}

fn poisoned<T: std::fmt::Debug>(result: &Result<T, StorageError>) -> bool {
    matches!(result, Err(StorageError::Poisoned { .. }))
}

#[test]
fn a_failed_segment_fsync_anywhere_poisons_until_reopen() {
    for errno in [EIO, ENOSPC] {
        for site in [
            Site::AlwaysAppend,
            Site::IntervalAppend,
            Site::Roll,
            Site::Flush,
            Site::Tick,
        ] {
            let ctx = format!("{site:?}, errno {errno}");
            let script = Script::new();
            let fsync = match site {
                Site::IntervalAppend | Site::Tick => FsyncPolicy::Interval(Duration::ZERO),
                _ => FsyncPolicy::Always,
            };
            let config = LogConfig {
                fsync,
                faults: Some(script.as_injector()),
                ..small_config()
            };
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config).unwrap();
            let acked = fill(&log, 12);
            if matches!(site, Site::Tick) {
                // Written, not yet synced: the next tick syncs it.
                log.set_config(LogConfig {
                    fsync: FsyncPolicy::Never,
                    faults: Some(script.as_injector()),
                    ..small_config()
                });
                append(&log, &[value(12)], 1).unwrap();
                log.set_config(LogConfig {
                    fsync,
                    faults: Some(script.as_injector()),
                    ..small_config()
                });
            }

            script.fail(FileOp::Sync, ".log", Fault::Errno(errno), 1);
            let result = match site {
                Site::AlwaysAppend | Site::IntervalAppend => {
                    append(&log, &[value(100)], 1).map(|_| ())
                }
                Site::Roll => log.roll(),
                Site::Flush => log.flush(),
                Site::Tick => log.tick(0),
            };
            assert!(fsync_failed(&result, errno), "{ctx}: {result:?}");
            // The disk works again, but what it holds is unknown: appends stay refused.
            script.heal();
            for _ in 0..3 {
                let again = append(&log, &[value(101)], 1);
                assert!(poisoned(&again), "{ctx}: {again:?}");
            }
            assert!(poisoned(&log.roll()), "{ctx}");
            assert!(poisoned(&log.flush()), "{ctx}");
            assert!(poisoned(&log.tick(0)), "{ctx}");
            // What was acknowledged is still served. An `Always` append that failed never
            // became visible; an `Interval` one, and the record the tick was to sync, were
            // visible before their sync was due.
            let mut visible = acked.clone();
            match site {
                Site::AlwaysAppend | Site::Roll | Site::Flush => {}
                Site::IntervalAppend => visible.push((12, value(100))),
                Site::Tick => visible.push((12, value(12))),
            }
            assert_eq!(log.next_offset(), visible.len() as u64, "{ctx}");
            assert_eq!(read_all(&log, 0).unwrap(), visible, "{ctx}");
            drop(log);

            let log = Log::open(dir.path(), small_config()).unwrap();
            let kept = read_all(&log, 0).unwrap();
            assert_eq!(kept[..12], acked, "{ctx}");
            // What the failed call wrote may or may not be there, whole; nothing else is.
            assert!(
                kept.len() == 12
                    || kept[12..] == [(12, value(100))]
                    || kept[12..] == [(12, value(12))],
                "{ctx}: {kept:?}"
            );
            let next = fill(&log, 3);
            assert_eq!(next[0].0, kept.len() as u64, "{ctx}");
        }
    }
}

#[test]
fn a_failed_sync_of_a_checkpoint_or_index_file_does_not_poison() {
    // These files are rewritten whole (checkpoint) or from what memory holds (indexes) on the
    // next attempt, and the segment data they describe is already synced: an error is enough.
    for suffix in ["recovery-point.tmp", ".index", ".timeindex"] {
        for errno in [EIO, ENOSPC] {
            let script = Script::new();
            let config = LogConfig {
                faults: Some(script.as_injector()),
                ..small_config()
            };
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config).unwrap();
            let mut acked = fill(&log, 12);
            script.fail(FileOp::Sync, suffix, Fault::Errno(errno), 1);
            let result = log.flush();
            assert!(result.is_err(), "{suffix}: {result:?}");
            assert!(!poisoned(&result), "{suffix}");
            acked.extend(fill(&log, 3));
            log.flush().unwrap();
            drop(log);
            let log = Log::open(dir.path(), small_config()).unwrap();
            assert_eq!(read_all(&log, 0).unwrap(), acked, "{suffix}");
        }
    }
}
