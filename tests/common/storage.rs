//! Support for the storage scenario tests: small logs, appends of known values, whole-log reads
//! and a look at the files on disk. Used as `mod common { pub mod storage; }`.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use std::path::{Path, PathBuf};
use strata::{
    record::{BatchBuilder, Frame, decode_frame, validate_batch},
    storage::{Appended, FsyncPolicy, Log, LogConfig, Offset, StorageError},
};

/// 4 KiB segments, an index entry per batch, no retention, no roll by age, and everything behind
/// the writer dropped from the page cache (so reads of sealed segments fault from the file).
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        segment_max_ms: None,
        retention_ms: None,
        retention_bytes: None,
        fsync: FsyncPolicy::Always,
        index_interval_bytes: 1,
        checkpoint_interval_bytes: 1 << 30,
        cached_tail_bytes: Some(0),
        producer_expiry_ms: strata::storage::DEFAULT_PRODUCER_EXPIRY_MS,
        max_producers: strata::storage::DEFAULT_MAX_PRODUCERS,
        faults: None,
    }
}

/// The value of record `i` in these tests: unique, and of a size that varies with `i`.
pub fn value(i: u64) -> Vec<u8> {
    let mut v = format!("value-{i}-").into_bytes();
    v.resize(v.len() + (i as usize * 7) % 90, b'0' + (i % 10) as u8);
    v
}

/// Appends one batch of `values`, every record stamped `timestamp_ms`.
pub fn append(log: &Log, values: &[Vec<u8>], timestamp_ms: i64) -> Result<Appended, StorageError> {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(timestamp_ms, None, v, []);
    }
    let bytes = b.finish(0);
    let valid = validate_batch(&bytes, 1 << 20).unwrap();
    log.append(&valid[0])
}

/// Appends batches of 1 to 3 records with values `value(first..)` until the log holds `count`
/// more records; batch `k` gets timestamp `1000 + k`. Returns the values appended, by offset.
pub fn fill(log: &Log, count: u64) -> Vec<(Offset, Vec<u8>)> {
    let mut out = Vec::new();
    let start = log.next_offset();
    let mut i = start;
    while i < start + count {
        let n = (1 + i % 3).min(start + count - i);
        let values: Vec<Vec<u8>> = (i..i + n).map(value).collect();
        let a = append(log, &values, 1000 + i as i64).unwrap();
        assert_eq!(a.base_offset, i);
        out.extend((i..).zip(values));
        i += n;
    }
    out
}

/// Every record from `from` to the high watermark, reading `max_bytes` at a time.
pub fn read_all(log: &Log, from: Offset) -> Result<Vec<(Offset, Vec<u8>)>, StorageError> {
    let mut out = Vec::new();
    let mut at = from;
    while at < log.next_offset() {
        let chunk = log.read(at, 1000)?;
        let mut rest = &chunk.batches[..];
        while !rest.is_empty() {
            let Frame::Batch(b) = decode_frame(rest) else {
                panic!("a read returned bytes that are not whole batches")
            };
            for r in b.records() {
                let r = r.unwrap();
                if r.offset >= at {
                    out.push((r.offset, r.value.to_vec()));
                }
            }
            rest = &rest[b.bytes().len()..];
        }
        assert!(chunk.next_offset > at, "no progress reading at {at}");
        at = chunk.next_offset;
    }
    Ok(out)
}

/// The records of the batch holding `offset`, read alone; checks the read returned that batch.
pub fn read_batch(log: &Log, offset: Offset) -> Result<Vec<(Offset, Vec<u8>)>, StorageError> {
    let chunk = log.read(offset, 1)?;
    let Frame::Batch(b) = decode_frame(&chunk.batches) else {
        panic!("a read at {offset} returned no whole batch")
    };
    assert_eq!(b.bytes().len(), chunk.batches.len(), "one batch");
    let h = b.header();
    assert!(
        h.base_offset <= offset && offset < h.next_offset(),
        "a read at {offset} returned the batch {}..{}",
        h.base_offset,
        h.next_offset()
    );
    Ok(b.records()
        .map(|r| {
            let r = r.unwrap();
            (r.offset, r.value.to_vec())
        })
        .collect())
}

/// The segment files of a log directory, by base offset.
pub fn segments(dir: &Path) -> Vec<(Offset, PathBuf)> {
    let mut out: Vec<(Offset, PathBuf)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let stem = path.file_name()?.to_str()?.strip_suffix(".log")?;
            Some((stem.parse().ok()?, path))
        })
        .collect();
    out.sort();
    out
}

/// `{base:020}.{ext}` in `dir`.
pub fn segment_file(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}
