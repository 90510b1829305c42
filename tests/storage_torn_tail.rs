//! A crash in the middle of writing the last batch: recovery cuts the torn batch, never serves
//! any of its bytes, and appends continue at its offset.
#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod files;
    pub mod storage;
}

use common::files::{batches_in, overwrite, truncate};
use common::storage::{append, fill, read_all, segments, small_config};
use strata::storage::Log;

/// How the torn batch looks on disk.
#[derive(Debug, Clone, Copy)]
enum Tear {
    /// The file keeps its preallocated length; the batch's bytes from the tear on are zeroes.
    Zeroes,
    /// The file ends at the tear.
    Cut,
}

#[test]
fn a_torn_last_batch_is_cut_and_appends_continue_at_its_offset() {
    let config = small_config();
    for tear in [Tear::Zeroes, Tear::Cut] {
        for at in [1, 4, 8, 20, 47, 48, 60, 100] {
            let dir = tempfile::tempdir().unwrap();
            let log = Log::open(dir.path(), config.clone()).unwrap();
            let records = fill(&log, 40);
            let torn = append(&log, &[vec![b'T'; 64], vec![b'U'; 64]], 7).unwrap();
            drop(log); // a crash

            let (_, path) = segments(dir.path()).pop().unwrap();
            let (pos, header) = *batches_in(&path).last().unwrap();
            assert_eq!(header.base_offset, torn.base_offset);
            let len = u64::from(header.length);
            assert!(at < len);
            match tear {
                Tear::Zeroes => overwrite(&path, pos + at, &vec![0u8; (len - at) as usize]),
                Tear::Cut => truncate(&path, pos + at),
            }

            let context = format!("{tear:?} at byte {at} of the last batch");
            let log = Log::open(dir.path(), config.clone()).unwrap();
            assert_eq!(log.next_offset(), torn.base_offset, "{context}");
            assert_eq!(read_all(&log, 0).unwrap(), records, "{context}");
            let after = fill(&log, 3);
            assert_eq!(after[0].0, torn.base_offset, "{context}");
            let all = read_all(&log, 0).unwrap();
            assert_eq!(all[..records.len()], records, "{context}");
            assert_eq!(all[records.len()..], after, "{context}");
            drop(log);

            let log = Log::open(dir.path(), config.clone()).unwrap();
            assert_eq!(read_all(&log, 0).unwrap(), all, "{context}, reopened");
        }
    }
}

#[test]
fn a_torn_batch_at_a_segment_start_leaves_an_empty_active_segment() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 40);
    log.roll().unwrap();
    let torn = append(&log, &[vec![b'T'; 200]], 7).unwrap();
    drop(log);
    let (base, path) = segments(dir.path()).pop().unwrap();
    assert_eq!(base, torn.base_offset, "the torn batch starts its segment");
    overwrite(&path, 30, &[0u8; 100]);

    let log = Log::open(dir.path(), config.clone()).unwrap();
    assert_eq!(log.next_offset(), torn.base_offset);
    assert_eq!(read_all(&log, 0).unwrap(), records);
    assert!(log.read(torn.base_offset, 1000).unwrap().batches.is_empty());
    let after = fill(&log, 5);
    assert_eq!(after[0].0, torn.base_offset);
    drop(log);
    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(read_all(&log, torn.base_offset).unwrap(), after);
}
