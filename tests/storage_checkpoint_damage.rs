//! A recovery-point checkpoint that is missing, damaged or old: opening falls back to a wider
//! scan and loses nothing that was acknowledged.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{fill, read_all, segments, small_config};
use std::path::Path;
use strata::storage::{Log, LogConfig};

const CHECKPOINT: &str = "recovery-point";

#[derive(Debug, Clone, Copy)]
enum Damage {
    Missing,
    Empty,
    Truncated,
    FlippedBit,
    Garbage,
    /// A checkpoint written earlier in the log's life (valid, but behind).
    Old,
}

fn damage(dir: &Path, damage: Damage, old: &[u8]) {
    let path = dir.join(CHECKPOINT);
    let bytes = std::fs::read(&path).unwrap();
    match damage {
        Damage::Missing => std::fs::remove_file(&path).unwrap(),
        Damage::Empty => std::fs::write(&path, []).unwrap(),
        Damage::Truncated => std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap(),
        Damage::FlippedBit => {
            let mut b = bytes;
            let at = b.len() / 2;
            b[at] ^= 0x08;
            std::fs::write(&path, b).unwrap();
        }
        Damage::Garbage => std::fs::write(&path, b"not a checkpoint at all").unwrap(),
        Damage::Old => std::fs::write(&path, old).unwrap(),
    }
}

/// Checkpoints now and then (every 2 KiB), so the newest one is well behind the tail.
fn config() -> LogConfig {
    LogConfig {
        checkpoint_interval_bytes: 2048,
        ..small_config()
    }
}

#[test]
fn a_damaged_checkpoint_falls_back_and_loses_nothing() {
    for kind in [
        Damage::Missing,
        Damage::Empty,
        Damage::Truncated,
        Damage::FlippedBit,
        Damage::Garbage,
        Damage::Old,
    ] {
        for clean_shutdown in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config()).unwrap();
            let mut records = fill(&log, 50);
            log.tick(0).unwrap();
            let old = std::fs::read(dir.path().join(CHECKPOINT)).unwrap();
            records.extend(fill(&log, 150));
            log.tick(0).unwrap();
            // The tail after the last checkpoint, in a segment of its own and in the one before.
            records.extend(fill(&log, 30));
            if clean_shutdown {
                log.close().unwrap();
            } else {
                drop(log);
            }
            assert!(segments(dir.path()).len() > 3);
            damage(dir.path(), kind, &old);

            let context = format!("{kind:?} checkpoint, clean shutdown {clean_shutdown}");
            let log = Log::open(dir.path(), config()).unwrap();
            assert_eq!(log.next_offset(), records.len() as u64, "{context}");
            assert_eq!(read_all(&log, 0).unwrap(), records, "{context}");
            let after = fill(&log, 10);
            assert_eq!(after[0].0, records.len() as u64, "{context}");
            records.extend(after);
            drop(log);
            // Opening wrote a sound checkpoint again.
            let log = Log::open(dir.path(), config()).unwrap();
            assert_eq!(read_all(&log, 0).unwrap(), records, "{context}, reopened");
        }
    }
}

#[test]
fn an_open_that_cannot_use_the_checkpoint_writes_a_new_one_also_after_a_clean_shutdown() {
    for kind in [Damage::Missing, Damage::Garbage] {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config()).unwrap();
        let records = fill(&log, 100);
        log.close().unwrap();
        damage(dir.path(), kind, &[]);
        let log = Log::open(dir.path(), config()).unwrap();
        let bytes = std::fs::read(dir.path().join(CHECKPOINT)).unwrap();
        assert_ne!(bytes, b"not a checkpoint at all", "{kind:?}");
        // The next crash recovers from the new checkpoint.
        drop(log);
        let log = Log::open(dir.path(), config()).unwrap();
        assert_eq!(read_all(&log, 0).unwrap(), records, "{kind:?}");
    }
}
