//! Unit tests of the log: append, read, roll, reopen, recovery of a torn tail.

use super::{log::now_ms, *};
use crate::record::{BatchBuilder, Frame, decode_frame, validate_batch};
use std::path::Path;

fn batch(values: &[&[u8]], ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(ts, None, v, []);
    }
    b.finish(0)
}

fn append(log: &Log, values: &[&[u8]], ts: i64) -> Appended {
    let bytes = batch(values, ts);
    let v = validate_batch(&bytes, 1 << 20).unwrap();
    log.append(&v[0]).unwrap()
}

fn small() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        index_interval_bytes: 256,
        ..LogConfig::default()
    }
}

/// Every record value from `from` to the high watermark.
fn read_all(log: &Log, from: Offset) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = from;
    while at < log.next_offset() {
        let chunk = log.read(at, 1000).unwrap();
        let mut rest = &chunk.batches[..];
        while let Frame::Batch(b) = decode_frame(rest) {
            for r in b.records() {
                let r = r.unwrap();
                if r.offset >= at {
                    out.push((r.offset, r.value.to_vec()));
                }
            }
            rest = &rest[b.bytes().len()..];
        }
        assert!(rest.is_empty());
        assert!(
            chunk.next_offset > at,
            "no progress reading at {at}: {chunk:?} {:?}",
            log.stats()
        );
        at = chunk.next_offset;
    }
    out
}

fn open(dir: &Path) -> Log {
    Log::open(dir, small()).unwrap()
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_across_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..200u32 {
        let v = format!("value-{i}");
        let a = append(&log, &[v.as_bytes(), b"second"], i64::from(i));
        assert_eq!(a.base_offset, u64::from(i) * 2);
        assert_eq!(a.next_offset, u64::from(i) * 2 + 2);
    }
    assert!(log.stats().segments > 1, "4 KiB segments must have rolled");
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 400);
    assert!(all.iter().enumerate().all(|(i, (o, _))| *o == i as u64));
    assert_eq!(all[10].1, b"value-5");
    // Reading from the middle of a batch starts at that batch.
    let from_odd = read_all(&log, 7);
    assert_eq!(from_odd[0].0, 7);
    assert!(matches!(
        log.read(401, 10),
        Err(StorageError::OffsetOutOfRange {
            requested: 401,
            earliest: 0,
            next: 400
        })
    ));
    assert_eq!(log.read(400, 10).unwrap().batches.len(), 0);
}

#[test]
fn a_clean_reopen_and_a_crash_reopen_keep_everything() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..50 {
        append(&log, &[b"x", b"x", b"x"], i);
    }
    log.close().unwrap();
    let log = open(dir.path());
    assert_eq!(log.next_offset(), 150);
    for i in 0..50 {
        append(&log, &[b"y"], i);
    }
    drop(log); // no close: like a crash after the appends returned
    let log = open(dir.path());
    assert_eq!(log.next_offset(), 200);
    assert_eq!(read_all(&log, 0).len(), 200);
    let a = append(&log, &[b"z"], 1);
    assert_eq!(a.base_offset, 200);
}

#[test]
fn a_torn_tail_is_cut_and_never_served() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    for i in 0..10 {
        append(&log, &[b"abcdefgh"], i);
    }
    let size = log.stats().bytes;
    drop(log);
    // Append half a batch by hand after the last whole one.
    let seg = dir.path().join(format!("{:020}.log", 0));
    let half = batch(&[b"torn"], 1);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&f, &half[..half.len() / 2], size).unwrap();
    let log = Log::open(dir.path(), LogConfig::default()).unwrap();
    assert_eq!(log.next_offset(), 10);
    let a = append(&log, &[b"after"], 2);
    assert_eq!(a.base_offset, 10);
    assert_eq!(read_all(&log, 0).last().unwrap().1, b"after");
}

#[test]
fn timestamps_find_the_first_record_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..100 {
        append(&log, &[b"a", b"b"], i * 10);
    }
    assert_eq!(log.offset_for_timestamp(0).unwrap(), Some(0));
    assert_eq!(log.offset_for_timestamp(5).unwrap(), Some(2));
    assert_eq!(log.offset_for_timestamp(500).unwrap(), Some(100));
    assert_eq!(log.offset_for_timestamp(990).unwrap(), Some(198));
    assert_eq!(log.offset_for_timestamp(991).unwrap(), None);
}

#[test]
fn retention_by_size_drops_the_oldest_segments() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(8192),
            retention_ms: None,
            ..small()
        },
    )
    .unwrap();
    for i in 0..300 {
        append(&log, &[&[1u8; 100]], i);
    }
    let before = log.stats();
    let gone = log.apply_retention(0).unwrap();
    assert!(gone > 0);
    let after = log.stats();
    assert!(after.bytes <= 8192 + 4096, "{after:?}");
    assert!(after.earliest_offset > before.earliest_offset);
    assert!(matches!(
        log.read(0, 10),
        Err(StorageError::OffsetOutOfRange { .. })
    ));
    assert_eq!(
        read_all(&log, after.earliest_offset).len() as u64,
        300 - after.earliest_offset
    );
}

#[test]
fn truncation_removes_the_batch_holding_the_offset_and_everything_after() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..100 {
        append(&log, &[b"a", b"b", b"c"], i);
    }
    assert_eq!(log.truncate(151).unwrap(), 150);
    assert_eq!(log.next_offset(), 150);
    assert_eq!(append(&log, &[b"new"], 1).base_offset, 150);
    drop(log);
    let log = open(dir.path());
    let all = read_all(&log, 0);
    assert_eq!(all.len(), 151);
    assert_eq!(all[150].1, b"new");
}

#[test]
fn a_batch_larger_than_an_empty_segment_grows_it_instead_of_rolling_onto_itself() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            retention_bytes: Some(1),
            retention_ms: None,
            ..small()
        },
    )
    .unwrap();
    let big = [7u8; 5000];
    assert_eq!(append(&log, &[&big], 1).base_offset, 0);
    log.roll().unwrap();
    assert_eq!(append(&log, &[&big], 2).base_offset, 1);
    assert_eq!(append(&log, &[b"small"], 3).base_offset, 2);
    let files = std::fs::read_dir(dir.path())
        .unwrap()
        .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
        .count();
    assert_eq!(log.stats().segments, 3);
    assert_eq!(files, 3);
    // Retention must not take the empty segment's stand-in for a sealed one and delete the
    // file the active segment writes to.
    log.apply_retention(0).unwrap();
    assert_eq!(log.earliest_offset(), 2);
    assert_eq!(read_all(&log, 2).len(), 1);
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.next_offset(), 3);
    assert_eq!(read_all(&log, 2), vec![(2, b"small".to_vec())]);
}

#[test]
fn a_read_never_returns_records_past_the_high_watermark_it_reports() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            fsync: FsyncPolicy::Never,
            ..small()
        },
    )
    .unwrap();
    for i in 0..3 {
        append(&log, &[b"a"], i);
    }
    // As a reader sees it when it loads the watermark just before an append publishes its
    // batch: the segment's readable bytes are already past that watermark.
    log.end_offset
        .store(1, std::sync::atomic::Ordering::Release);
    let chunk = log.read(0, 1 << 20).unwrap();
    assert_eq!(chunk.high_watermark, 1);
    assert_eq!(chunk.next_offset, 1);
    let Frame::Batch(b) = decode_frame(&chunk.batches) else {
        panic!("not a batch")
    };
    assert_eq!(
        b.bytes().len(),
        chunk.batches.len(),
        "only the batch below the watermark"
    );
}

#[test]
fn time_limits_too_large_for_an_i64_mean_never_not_already_past() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(
        dir.path(),
        LogConfig {
            segment_max_ms: Some(u64::MAX),
            retention_ms: Some(u64::MAX),
            ..small()
        },
    )
    .unwrap();
    for i in 0..100 {
        append(&log, &[&[1u8; 100]], i);
    }
    // Rolled by size only (about 30 batches a segment), not at every append by age.
    assert!(log.stats().segments < 10, "{:?}", log.stats());
    log.tick(now_ms()).unwrap();
    assert_eq!(log.apply_retention(now_ms()).unwrap(), 0);
    assert_eq!(log.earliest_offset(), 0);
}

/// Counts every fsync the log asks for.
#[derive(Default)]
struct SyncCounter(std::sync::atomic::AtomicUsize);

impl FaultInjector for SyncCounter {
    fn before(&self, op: FileOp, _: &Path, _: usize) -> std::io::Result<Option<usize>> {
        if op == FileOp::Sync {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(None)
    }
}

#[test]
fn an_idle_log_opens_and_closes_without_a_single_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let log = open(dir.path());
    for i in 0..20 {
        append(&log, &[b"v"], i);
    }
    log.flush().unwrap();
    drop(log); // a crash with nothing past the checkpoint
    let counter = std::sync::Arc::new(SyncCounter::default());
    let counted = || LogConfig {
        faults: Some(counter.clone()),
        ..small()
    };
    let log = Log::open(dir.path(), counted()).unwrap();
    assert_eq!(log.next_offset(), 20);
    log.close().unwrap();
    let after_crash_open = counter.0.load(std::sync::atomic::Ordering::Relaxed);
    assert!(after_crash_open > 0, "the first close writes its marker");
    counter.0.store(0, std::sync::atomic::Ordering::Relaxed);
    // After a clean close, neither the open nor the next close needs to touch the disk.
    let log = Log::open(dir.path(), counted()).unwrap();
    assert_eq!(read_all(&log, 0).len(), 20);
    log.close().unwrap();
    assert_eq!(counter.0.load(std::sync::atomic::Ordering::Relaxed), 0);
    // The first append after a clean open removes the marker before writing: a crash after it
    // must recover the new record.
    let log = Log::open(dir.path(), small()).unwrap();
    assert_eq!(append(&log, &[b"new"], 1).base_offset, 20);
    assert!(!dir.path().join("clean-shutdown").exists());
    drop(log);
    let log = open(dir.path());
    assert_eq!(log.next_offset(), 21);
}

/// Regression (found once the seam saw removals: `storage_model_props`, a crash while truncation
/// removed a later segment): the segment's `.log` went but its `.index` stayed, and a segment
/// created later at the same base offset loaded the stale index as its own.
#[test]
fn a_crash_mid_segment_removal_leaves_no_stale_index_for_a_later_segment() {
    let dir = tempfile::tempdir().unwrap();
    let values: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 300]).collect();
    let log = open(dir.path());
    for v in &values[..20] {
        append(&log, &[v], 1);
    }
    let second = log.segments()[1].base_offset;
    drop(log);
    // What a crash between the two removals leaves: the second segment's data gone, its
    // indexes not, and the log ending where the first segment ends.
    let name = |ext: &str| dir.path().join(format!("{second:020}.{ext}"));
    std::fs::remove_file(name("log")).unwrap();
    std::fs::remove_file(dir.path().join("recovery-point")).unwrap();
    assert!(name("index").exists());
    let log = open(dir.path());
    assert_eq!(log.next_offset(), second);
    assert!(!name("index").exists(), "the orphaned index was kept");
    // Appends roll into a new segment at the same base offset.
    for v in &values[second as usize..] {
        append(&log, &[v], 1);
    }
    drop(log);
    let log = open(dir.path());
    let read = read_all(&log, 0);
    assert_eq!(read.len(), values.len());
    for (offset, value) in read {
        assert_eq!(value, values[offset as usize], "offset {offset}");
    }
}
