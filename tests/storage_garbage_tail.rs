//! Bytes after the last batch of the active segment that are not a batch at the next offset
//! (random bytes, a header whose CRC fails, a whole batch with the wrong offset): recovery cuts
//! them, zeroes them out, and they are never served.
#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod files;
    pub mod storage;
}

use common::files::{batches_in, overwrite};
use common::storage::{fill, read_all, segments, small_config};
use strata::{record::BatchBuilder, storage::Log};

fn garbage_kinds(next_offset: u64) -> Vec<(&'static str, Vec<u8>)> {
    let mut random = vec![0u8; 300];
    let mut x: u32 = 0x9E37_79B9;
    for b in &mut random {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = (x >> 24) as u8;
    }
    let batch = |base: u64| {
        let mut b = BatchBuilder::default();
        b.push_parts(5, Some(b"key"), b"a batch that was never appended", []);
        b.finish(base)
    };
    let mut bad_crc = batch(next_offset);
    bad_crc[0] ^= 0xFF;
    let mut bad_length = batch(next_offset);
    bad_length[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    vec![
        ("random bytes", random),
        ("a batch whose CRC fails", bad_crc),
        ("a batch with an impossible length", bad_length),
        ("a whole batch at an earlier offset", batch(next_offset - 3)),
        ("a whole batch at a later offset", batch(next_offset + 1)),
        ("a torn header", batch(next_offset)[..20].to_vec()),
    ]
}

#[test]
fn garbage_after_the_last_batch_is_cut_and_never_served() {
    let config = small_config();
    for (kind, garbage) in garbage_kinds(40) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let records = fill(&log, 40);
        drop(log); // a crash
        let (_, path) = segments(dir.path()).pop().unwrap();
        let (pos, header) = *batches_in(&path).last().unwrap();
        let end = pos + u64::from(header.length);
        overwrite(&path, end, &garbage);

        let log = Log::open(dir.path(), config.clone()).unwrap();
        assert_eq!(log.next_offset(), 40, "{kind}");
        assert_eq!(read_all(&log, 0).unwrap(), records, "{kind}");
        // The cut bytes are zeroes now: nothing of them can come back as a batch.
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            bytes[end as usize..].iter().all(|&b| b == 0),
            "{kind}: garbage left past the cut"
        );
        let after = fill(&log, 4);
        assert_eq!(after[0].0, 40, "{kind}");
        drop(log);
        let log = Log::open(dir.path(), config.clone()).unwrap();
        let all = read_all(&log, 0).unwrap();
        assert_eq!(all[..40], records, "{kind}");
        assert_eq!(all[40..], after, "{kind}");
    }
}

#[test]
fn garbage_after_a_clean_shutdown_is_never_served() {
    let config = small_config();
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 40);
    log.close().unwrap();
    let (_, path) = segments(dir.path()).pop().unwrap();
    let (pos, header) = *batches_in(&path).last().unwrap();
    let end = pos + u64::from(header.length);
    let (_, garbage) = garbage_kinds(40).swap_remove(4);
    overwrite(&path, end, &garbage);

    let log = Log::open(dir.path(), config).unwrap();
    assert_eq!(log.next_offset(), 40);
    assert_eq!(read_all(&log, 0).unwrap(), records);
    let after = fill(&log, 4);
    assert_eq!(read_all(&log, 40).unwrap(), after);
}
