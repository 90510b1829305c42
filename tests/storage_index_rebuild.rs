//! Offset and time indexes that are missing, garbled or stale (from an earlier state of their
//! segment), for sealed segments and for the active one, after a clean shutdown and after a
//! crash: the log rebuilds them, and reads and timestamp lookups stay exact.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod files;
    pub mod storage;
}

use common::files::batches_in;
use common::storage::{fill, read_all, read_batch, segment_file, segments};
use std::path::Path;
use strata::storage::{Log, LogConfig, Offset};

/// Small segments and a sparse index, so that reads depend on the index entries.
fn config() -> LogConfig {
    LogConfig {
        index_interval_bytes: 300,
        ..common::storage::small_config()
    }
}

#[derive(Debug, Clone, Copy)]
enum Damage {
    Missing,
    /// The index files hold random bytes.
    Garbled,
    /// Every entry points a little off (positions and offsets still in order and in range).
    Shifted,
    /// An entry past the segment's end, as if the segment was cut and its index was not.
    TooLong,
}

fn damage_index(path: &Path, damage: Damage) {
    match damage {
        Damage::Missing => {
            let _ = std::fs::remove_file(path);
        }
        Damage::Garbled => {
            let len = std::fs::metadata(path).map_or(0, |m| m.len()).max(24);
            let mut x: u64 = len.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x >> 56) as u8
                })
                .collect();
            std::fs::write(path, bytes).unwrap();
        }
        Damage::Shifted => {
            let mut bytes = std::fs::read(path).unwrap_or_default();
            let entry = if path.extension() == Some("index".as_ref()) {
                8
            } else {
                12
            };
            for e in bytes.chunks_exact_mut(entry) {
                // The position (.index) or the offset (.timeindex) field, a little larger.
                let at = if entry == 8 { 4 } else { 8 };
                let v = u32::from_le_bytes(e[at..at + 4].try_into().unwrap());
                e[at..at + 4].copy_from_slice(&(v + 3).to_le_bytes());
            }
            std::fs::write(path, bytes).unwrap();
        }
        Damage::TooLong => {
            let mut bytes = std::fs::read(path).unwrap_or_default();
            if path.extension() == Some("index".as_ref()) {
                bytes.extend_from_slice(&1_000_000u32.to_le_bytes());
                bytes.extend_from_slice(&1_000_000u32.to_le_bytes());
            } else {
                bytes.extend_from_slice(&i64::MAX.to_le_bytes());
                bytes.extend_from_slice(&1_000_000u32.to_le_bytes());
            }
            std::fs::write(path, bytes).unwrap();
        }
    }
}

/// Checks every record reads back, batch by batch and from the start, and that timestamp
/// lookups find the first record at or after each batch's timestamp (every record here is
/// stamped 1000 + its batch's base offset).
fn check(log: &Log, dir: &Path, records: &[(Offset, Vec<u8>)], context: &str) {
    assert_eq!(log.next_offset(), records.len() as u64, "{context}");
    assert_eq!(read_all(log, 0).unwrap(), records, "{context}");
    for (o, v) in records {
        let got = read_batch(log, *o).unwrap_or_else(|e| panic!("{context}: offset {o}: {e}"));
        assert!(got.contains(&(*o, v.clone())), "{context}: offset {o}");
    }
    let batch_starts: Vec<Offset> = segments(dir)
        .iter()
        .flat_map(|(_, path)| batches_in(path))
        .map(|(_, h)| h.base_offset)
        .filter(|&b| b < log.next_offset())
        .collect();
    for (o, _) in records.iter().step_by(3) {
        let want = batch_starts.iter().copied().find(|&b| b >= *o);
        let found = log.offset_for_timestamp(1000 + *o as i64).unwrap();
        assert_eq!(found, want, "{context}: timestamp {}", 1000 + o);
    }
}

#[test]
fn damaged_indexes_are_rebuilt_and_reads_stay_exact() {
    for damage in [
        Damage::Missing,
        Damage::Garbled,
        Damage::Shifted,
        Damage::TooLong,
    ] {
        for clean_shutdown in [true, false] {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config()).unwrap();
            let records = fill(&log, 200);
            // Checkpoints are rare in this config: make the active segment's index persisted
            // (and so damageable) by one.
            log.flush().unwrap();
            let more = fill(&log, 7);
            if clean_shutdown {
                log.close().unwrap();
            } else {
                drop(log);
            }
            let segs = segments(dir.path());
            assert!(segs.len() > 3);
            for (base, _) in &segs {
                for ext in ["index", "timeindex"] {
                    damage_index(&segment_file(dir.path(), *base, ext), damage);
                }
            }
            let context = format!("{damage:?} indexes, clean shutdown {clean_shutdown}");
            let log = Log::open(dir.path(), config()).unwrap();
            let all: Vec<_> = records.iter().chain(&more).cloned().collect();
            check(&log, dir.path(), &all, &context);
            // Appends go on, and a reopen finds sound indexes.
            let after = fill(&log, 20);
            drop(log);
            let log = Log::open(dir.path(), config()).unwrap();
            let all: Vec<_> = all.into_iter().chain(after).collect();
            check(&log, dir.path(), &all, &format!("{context}, reopened"));
        }
    }
}

#[test]
fn a_stale_index_from_before_a_truncation_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config()).unwrap();
    let mut records = fill(&log, 200);
    log.close().unwrap();
    let segs = segments(dir.path());
    let (base, _) = segs[1];
    let saved: Vec<(String, Vec<u8>)> = ["index", "timeindex"]
        .iter()
        .map(|ext| {
            let path = segment_file(dir.path(), base, ext);
            (ext.to_string(), std::fs::read(path).unwrap())
        })
        .collect();

    // Cut back into that segment and fill it again with batches of other sizes.
    let log = Log::open(dir.path(), config()).unwrap();
    let cut = log.truncate(base + 2).unwrap();
    records.truncate(cut as usize);
    for i in 0..60u64 {
        let v = vec![b'a' + (i % 26) as u8; 10 + (i as usize * 13) % 150];
        let a =
            common::storage::append(&log, std::slice::from_ref(&v), 1000 + cut as i64 + i as i64)
                .unwrap();
        records.push((a.base_offset, v));
    }
    log.close().unwrap();
    assert!(
        segments(dir.path()).len() > 2,
        "the segment was sealed again"
    );
    for (ext, bytes) in &saved {
        std::fs::write(segment_file(dir.path(), base, ext), bytes).unwrap();
    }

    let log = Log::open(dir.path(), config()).unwrap();
    check(&log, dir.path(), &records, "stale index");
}
