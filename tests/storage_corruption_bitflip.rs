//! A bit flip inside a sealed segment: reading the damaged batch is a `Corrupt` error naming the
//! segment and the batch's position; the damaged bytes are never served; every other batch of
//! that segment and every other segment stays readable, also after a recovery that scans it.
#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod files;
    pub mod storage;
}

use common::files::{batches_in, flip, overwrite};
use common::storage::{fill, read_all, read_batch, segment_file, segments, small_config};
use std::path::Path;
use strata::{
    record::BatchHeader,
    storage::{Log, LogConfig, Offset, StorageError},
};

/// Byte positions inside a batch worth damaging: every header field and some of the records.
fn damage_points(len: u64) -> Vec<u64> {
    let mut points = vec![
        0, 3, 4, 7, 8, 12, 13, 16, 23, 24, 32, 40, 43, 44, 47, 48, 52,
    ];
    points.extend([len / 2, len - 1]);
    points.retain(|&p| p < len);
    points
}

/// Builds a closed log of several segments and returns its records and the sealed segment (by
/// base offset) whose middle batch the tests damage, with that batch's position and header.
fn setup(dir: &Path, config: &LogConfig) -> (Vec<(Offset, Vec<u8>)>, Offset, u64, BatchHeader) {
    let log = Log::open(dir, config.clone()).unwrap();
    let records = fill(&log, 400);
    log.close().unwrap();
    let segs = segments(dir);
    assert!(segs.len() >= 4, "the log must have several segments");
    let (base, path) = &segs[1];
    let batches = batches_in(path);
    let (pos, header) = batches[batches.len() / 2];
    (records, *base, pos, header)
}

fn assert_corrupt_at(result: Result<Vec<(Offset, Vec<u8>)>, StorageError>, path: &Path, pos: u64) {
    match result {
        Err(StorageError::Corrupt {
            segment, position, ..
        }) => {
            assert_eq!(segment, path, "the error names the damaged segment");
            assert_eq!(
                position, pos,
                "the error names the damaged batch's position"
            );
        }
        other => panic!("expected a Corrupt error at {pos}, got {other:?}"),
    }
}

#[test]
fn a_flipped_bit_is_a_corrupt_error_and_everything_else_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config(); // an index entry for every batch
    let (records, base, pos, header) = setup(dir.path(), &config);
    let path = segment_file(dir.path(), base, "log");
    let segs = segments(dir.path());
    let seg_end = segs[2].0;
    for at in damage_points(u64::from(header.length)) {
        for mask in [0x01, 0x80] {
            flip(&path, pos + at, mask);
            let log = Log::open(dir.path(), config.clone()).unwrap();
            let context = format!("flip {mask:#04x} at byte {at} of the batch at {pos}");
            assert_eq!(log.next_offset(), records.len() as u64, "{context}");
            for offset in header.base_offset..header.next_offset() {
                assert_corrupt_at(read_batch(&log, offset), &path, pos);
            }
            // Every other batch of the damaged segment, read alone.
            for (o, v) in &records[base as usize..seg_end as usize] {
                if (header.base_offset..header.next_offset()).contains(o) {
                    continue;
                }
                let got = read_batch(&log, *o).unwrap_or_else(|e| panic!("{context}: {e}"));
                assert!(got.contains(&(*o, v.clone())), "{context}: offset {o}");
            }
            // A read from the segment's start stops before the damaged batch.
            let chunk = log.read(base, 1 << 20).unwrap();
            assert_eq!(chunk.next_offset, header.base_offset, "{context}");
            // The other segments.
            assert_eq!(
                read_all(&log, seg_end).unwrap(),
                records[seg_end as usize..],
                "{context}"
            );
            assert_eq!(
                read_all(&log, 0).unwrap_err().to_string(),
                read_batch(&log, header.base_offset)
                    .unwrap_err()
                    .to_string(),
                "{context}: reading through the damage stops at it"
            );
            drop(log);
            flip(&path, pos + at, mask);
        }
    }
}

#[test]
fn with_a_sparse_index_a_flipped_bit_never_turns_into_wrong_records() {
    let dir = tempfile::tempdir().unwrap();
    let config = LogConfig {
        index_interval_bytes: 1024,
        ..small_config()
    };
    let (records, base, pos, header) = setup(dir.path(), &config);
    let path = segment_file(dir.path(), base, "log");
    let seg_end = segments(dir.path())[2].0;
    for at in damage_points(u64::from(header.length)) {
        for mask in [0x01, 0x02, 0x10, 0x80] {
            flip(&path, pos + at, mask);
            let log = Log::open(dir.path(), config.clone()).unwrap();
            let context = format!("flip {mask:#04x} at byte {at} of the batch at {pos}");
            for (o, v) in &records[base as usize..seg_end as usize] {
                match read_batch(&log, *o) {
                    Ok(got) => {
                        assert!(
                            *o < header.base_offset || *o >= header.next_offset(),
                            "{context}: the damaged batch was served"
                        );
                        assert!(got.contains(&(*o, v.clone())), "{context}: offset {o}");
                    }
                    // Batches after the damage and before the next index entry may be out of
                    // reach when the damage hides where they start; batches before it may not.
                    Err(StorageError::Corrupt { segment, .. }) => {
                        assert_eq!(segment, path, "{context}");
                        assert!(*o >= header.base_offset, "{context}: offset {o}");
                    }
                    Err(e) => panic!("{context}: offset {o}: {e}"),
                }
            }
            assert_eq!(
                read_all(&log, seg_end).unwrap(),
                records[seg_end as usize..],
                "{context}"
            );
            drop(log);
            flip(&path, pos + at, mask);
        }
    }
}

#[test]
fn a_recovery_that_scans_a_damaged_sealed_segment_keeps_the_segments_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 400);
    drop(log); // a crash
    let segs = segments(dir.path());
    // Without a checkpoint, recovery scans the last two segments from their start.
    std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
    let (base, path) = &segs[segs.len() - 2];
    let batches = batches_in(path);
    let (pos, header) = batches[batches.len() / 2];
    flip(path, pos + 60, 0x04);

    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(
        log.next_offset(),
        records.len() as u64,
        "nothing acknowledged is lost"
    );
    assert_corrupt_at(read_batch(&log, header.base_offset), path, pos);
    let after = header.next_offset() as usize;
    assert_eq!(read_all(&log, after as u64).unwrap(), records[after..]);
    assert_eq!(
        read_all(&log, *base).unwrap_err().to_string(),
        read_batch(&log, header.base_offset)
            .unwrap_err()
            .to_string()
    );
    // Appends continue after the last acknowledged record.
    let next = fill(&log, 5);
    assert_eq!(next[0].0, records.len() as u64);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.next_offset(), records.len() as u64 + 5);
    assert_eq!(
        read_all(&log, after as u64).unwrap()[..records.len() - after],
        records[after..]
    );
}

#[test]
fn a_damaged_record_count_never_serves_the_next_batch_in_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let config = small_config();
    let (_, base, pos, header) = setup(dir.path(), &config);
    let path = segment_file(dir.path(), base, "log");
    // One record fewer: a walk over the header alone would place the last record in the next
    // batch.
    let count = header.record_count - 1;
    overwrite(&path, pos + 40, &count.to_le_bytes());
    let log = Log::open(dir.path(), config).unwrap();
    assert_corrupt_at(read_batch(&log, header.next_offset() - 1), &path, pos);
    assert_corrupt_at(read_batch(&log, header.base_offset), &path, pos);
}
