//! Zeroes where batches could be: the preallocated space after the last batch is the log's end;
//! zeroes in the unflushed tail (pages that never reached the disk) cut the log there; zeroes
//! inside a sealed segment are damage, reported and never served.
#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod files;
    pub mod storage;
}

use common::files::{batches_in, overwrite};
use common::storage::{fill, read_all, read_batch, segments, small_config};
use strata::{
    record::Corruption,
    storage::{Log, LogConfig, StorageError},
};

#[test]
fn the_preallocated_zeroes_after_the_last_batch_are_the_end_of_the_log() {
    let config = LogConfig {
        segment_max_bytes: 64 * 1024,
        ..small_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 50);
    drop(log); // a crash
    let (_, path) = segments(dir.path()).pop().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 64 * 1024);

    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.next_offset(), 50);
    assert_eq!(read_all(&log, 0).unwrap(), records);
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        64 * 1024,
        "the active segment keeps its preallocated space"
    );
    assert_eq!(fill(&log, 1)[0].0, 50);
}

#[test]
fn zeroes_in_the_unflushed_tail_cut_the_log_where_they_start() {
    let config = LogConfig {
        segment_max_bytes: 64 * 1024,
        ..small_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 50);
    drop(log);
    // A page in the middle of the tail never reached the disk; later ones did.
    let (_, path) = segments(dir.path()).pop().unwrap();
    let batches = batches_in(&path);
    let (pos, header) = batches[batches.len() / 2];
    overwrite(&path, pos, &vec![0u8; header.length as usize]);

    let log = Log::open(dir.path(), config.clone()).unwrap();
    let cut = header.base_offset;
    assert_eq!(log.next_offset(), cut);
    assert_eq!(read_all(&log, 0).unwrap(), records[..cut as usize]);
    let after = fill(&log, 3);
    assert_eq!(after[0].0, cut);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    let all = read_all(&log, 0).unwrap();
    assert_eq!(all[..cut as usize], records[..cut as usize]);
    assert_eq!(
        all[cut as usize..],
        after,
        "the batches after the hole never come back"
    );
}

#[test]
fn zeroes_inside_a_sealed_segment_are_damage_and_the_rest_stays_readable() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 300);
    log.close().unwrap();
    // The second newest segment: sealed, and scanned by a recovery that lost its checkpoint.
    let segs = segments(dir.path());
    let (base, path) = &segs[segs.len() - 2];
    let next_base = segs[segs.len() - 1].0;
    let batches = batches_in(path);
    let (pos, header) = batches[batches.len() / 2];
    overwrite(path, pos, &vec![0u8; header.length as usize]);

    for lose_checkpoint in [false, true] {
        if lose_checkpoint {
            // Recovery then scans the damaged segment.
            std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
        }
        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.next_offset(), 300);
        match read_batch(&log, header.base_offset) {
            Err(StorageError::Corrupt {
                segment,
                position,
                reason,
                ..
            }) => {
                assert_eq!(segment, *path);
                assert_eq!(position, pos);
                assert_eq!(
                    reason,
                    Corruption::OutOfSequence {
                        expected: header.base_offset,
                        found: None
                    }
                );
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        for (o, v) in &records[*base as usize..next_base as usize] {
            if !(header.base_offset..header.next_offset()).contains(o) {
                let got = read_batch(&log, *o).unwrap();
                assert!(got.contains(&(*o, v.clone())));
            }
        }
        assert_eq!(
            read_all(&log, next_base).unwrap(),
            records[next_base as usize..]
        );
        drop(log);
    }
}
