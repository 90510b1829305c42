//! Readers tailing the log while one thread appends, another rolls and a third applies
//! retention: every read returns whole batches holding the records appended at those offsets,
//! never a record past the high watermark, and an offset retention removed is
//! `OffsetOutOfRange`, never wrong data.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{append, small_config, value};
use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};
use strata::{
    record::{Frame, decode_frame},
    storage::{FsyncPolicy, Log, LogConfig, StorageError},
};

const RECORDS: u64 = 3_000;

struct SetFalseOnDrop(Arc<AtomicBool>);

impl Drop for SetFalseOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn run(fsync: FsyncPolicy) {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogConfig {
                fsync,
                retention_bytes: Some(64 * 1024),
                index_interval_bytes: 256,
                ..small_config()
            },
        )
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let appending = Arc::new(AtomicBool::new(true));

    let appender = {
        let (log, appending) = (log.clone(), appending.clone());
        std::thread::spawn(move || {
            // Readers waiting for more must learn when no more will come, even on a panic.
            let _stop = SetFalseOnDrop(appending);
            let mut i = 0;
            while i < RECORDS {
                let n = (1 + i % 4).min(RECORDS - i);
                let values: Vec<Vec<u8>> = (i..i + n).map(value).collect();
                let a = append(&log, &values, i as i64).unwrap();
                assert_eq!(a.base_offset, i);
                i += n;
            }
        })
    };
    let housekeeping = {
        let (log, done) = (log.clone(), done.clone());
        std::thread::spawn(move || {
            let mut rounds = 0u64;
            while !done.load(Ordering::Acquire) {
                if rounds.is_multiple_of(7) {
                    log.roll().unwrap();
                }
                log.apply_retention(0).unwrap();
                rounds += 1;
                std::thread::yield_now();
            }
        })
    };
    let readers: Vec<_> = (0..3)
        .map(|r| {
            let (log, appending) = (log.clone(), appending.clone());
            std::thread::spawn(move || {
                let mut at = 0;
                let mut checked = 0u64;
                while at < RECORDS {
                    let hw = log.next_offset();
                    match log.read(at, 300 * (r + 1)) {
                        Ok(chunk) => {
                            assert!(chunk.high_watermark >= hw);
                            assert!(
                                !chunk.batches.is_empty()
                                    || appending.load(Ordering::Acquire)
                                    || log.next_offset() > at,
                                "reader {r}: the appender stopped at {at}"
                            );
                            let mut rest = &chunk.batches[..];
                            let mut first = true;
                            while !rest.is_empty() {
                                let Frame::Batch(b) = decode_frame(rest) else {
                                    panic!("reader {r}: not whole batches at {at}")
                                };
                                if first {
                                    let h = b.header();
                                    assert!(h.base_offset <= at && at < h.next_offset());
                                    first = false;
                                }
                                for rec in b.records() {
                                    let rec = rec.unwrap();
                                    assert!(rec.offset < chunk.high_watermark);
                                    assert_eq!(
                                        rec.value,
                                        value(rec.offset),
                                        "offset {}",
                                        rec.offset
                                    );
                                    checked += 1;
                                }
                                rest = &rest[b.bytes().len()..];
                            }
                            at = chunk.next_offset;
                        }
                        Err(StorageError::OffsetOutOfRange { earliest, .. }) => {
                            assert!(
                                earliest > at,
                                "reader {r}: {at} out of range below {earliest}"
                            );
                            at = earliest;
                        }
                        Err(e) => panic!("reader {r} at {at}: {e}"),
                    }
                    std::thread::yield_now();
                }
                checked
            })
        })
        .collect();

    appender.join().unwrap();
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    done.store(true, Ordering::Release);
    housekeeping.join().unwrap();
    assert_eq!(log.next_offset(), RECORDS);
    assert!(log.earliest_offset() > 0, "retention ran");
}

#[test]
fn readers_see_only_whole_stored_batches_under_always() {
    run(FsyncPolicy::Always);
}

#[test]
fn readers_see_only_whole_stored_batches_under_never() {
    run(FsyncPolicy::Never);
}
