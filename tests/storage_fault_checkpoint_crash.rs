//! A crash in the middle of replacing the recovery checkpoint (or writing the clean-shutdown
//! marker): the temporary file written but not renamed, written torn, not synced, or renamed
//! without the directory synced. Wherever a checkpoint is written (flush, roll, tick, close),
//! the reopened log holds every acknowledged record, leaves no temporary file behind and takes
//! appends at the next offset. Without a crash, the log goes on and the next checkpoint works.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
    pub mod storage;
}

use common::faults::{EIO, Fault, Script};
use common::storage::{fill, read_all, small_config};
use strata::storage::{FileOp, Log, LogConfig};

#[derive(Debug, Clone, Copy)]
enum Site {
    Flush,
    Roll,
    Tick,
    Close,
}

/// Where the replace of the file stops.
fn faults(file: &'static str) -> Vec<(&'static str, FileOp, &'static str, Fault)> {
    vec![
        ("not renamed", FileOp::Rename, file, Fault::Errno(EIO)),
        ("written torn", FileOp::Write, file, Fault::Torn(3)),
        ("not written", FileOp::Write, file, Fault::Torn(0)),
        ("not synced", FileOp::Sync, file, Fault::Errno(EIO)),
    ]
}

fn run(site: Site, log: Log) -> Option<Log> {
    match site {
        Site::Flush => {
            assert!(log.flush().is_err(), "{site:?}");
            Some(log)
        }
        Site::Roll => {
            assert!(log.roll().is_err(), "{site:?}");
            Some(log)
        }
        Site::Tick => {
            assert!(log.tick(0).is_err(), "{site:?}");
            Some(log)
        }
        Site::Close => {
            assert!(log.close().is_err(), "{site:?}");
            None
        }
    }
}

#[test]
fn a_crash_while_replacing_the_checkpoint_loses_nothing() {
    for site in [Site::Flush, Site::Roll, Site::Tick, Site::Close] {
        let files: &[&'static str] = if matches!(site, Site::Close) {
            &["recovery-point.tmp", "clean-shutdown.tmp"]
        } else {
            &["recovery-point.tmp"]
        };
        for file in files {
            for (how, op, suffix, fault) in faults(file) {
                let ctx = format!("{site:?}: {file} {how}");
                let script = Script::new();
                let config = LogConfig {
                    faults: Some(script.as_injector()),
                    // A tick checkpoints after this much new data.
                    checkpoint_interval_bytes: 1,
                    ..small_config()
                };
                let dir = tempfile::tempdir().unwrap();
                let log = Log::open(dir.path(), config.clone()).unwrap();
                let mut acked = fill(&log, 15);
                log.flush().unwrap();
                acked.extend(fill(&log, 10));
                script.fail(op, suffix, fault, 1);
                let log = run(site, log);
                assert_eq!(script.hit_count(), 1, "{ctx}");
                script.heal();
                drop(log); // the crash

                let log = Log::open(dir.path(), small_config()).unwrap();
                assert_eq!(read_all(&log, 0).unwrap(), acked, "{ctx}");
                let tmp: Vec<_> = std::fs::read_dir(dir.path())
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .filter(|n| std::path::Path::new(n).extension() == Some("tmp".as_ref()))
                    .collect();
                assert!(tmp.is_empty(), "{ctx}: left {tmp:?}");
                let next = fill(&log, 3);
                assert_eq!(next[0].0, acked.len() as u64, "{ctx}");
                acked.extend(next);
                log.close().unwrap();
                let log = Log::open(dir.path(), small_config()).unwrap();
                assert_eq!(
                    read_all(&log, 0).unwrap(),
                    acked,
                    "{ctx}: after a clean close"
                );
            }
        }
    }
}

#[test]
fn after_a_failed_checkpoint_the_log_goes_on_and_the_next_one_works() {
    for (how, op, suffix, fault) in faults("recovery-point.tmp") {
        let script = Script::new();
        let config = LogConfig {
            faults: Some(script.as_injector()),
            ..small_config()
        };
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config).unwrap();
        let mut acked = fill(&log, 15);
        script.fail(op, suffix, fault, 1);
        assert!(log.flush().is_err(), "{how}");
        acked.extend(fill(&log, 40)); // rolls, with checkpoints that work
        log.flush().unwrap();
        assert_eq!(read_all(&log, 0).unwrap(), acked, "{how}");
        log.close().unwrap();
        let log = Log::open(dir.path(), small_config()).unwrap();
        assert_eq!(read_all(&log, 0).unwrap(), acked, "{how}");
    }
}
