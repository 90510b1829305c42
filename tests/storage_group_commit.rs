//! Group commit: under `FsyncPolicy::Always`, concurrent appenders share fsyncs. Counted through
//! the fault seam (every `FileOp::Sync` of a `.log` file), not timed.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
}

use common::faults::Script;
use std::sync::{Arc, Barrier};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{FileOp, FsyncPolicy, Log, LogConfig},
};

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 200;

#[test]
fn concurrent_appenders_share_fsyncs() {
    let script = Script::new();
    // Counts fsyncs of segment files.
    let segment_syncs = script.count(FileOp::Sync, ".log");
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogConfig {
                // Large enough that nothing rolls: every segment fsync is an append's.
                segment_max_bytes: 64 * 1024 * 1024,
                checkpoint_interval_bytes: 1 << 40,
                fsync: FsyncPolicy::Always,
                faults: Some(script.as_injector()),
                ..LogConfig::default()
            },
        )
        .unwrap(),
    );
    let before = segment_syncs.get();
    let start = Arc::new(Barrier::new(THREADS));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (log, start) = (log.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                for i in 0..APPENDS_PER_THREAD {
                    let mut b = BatchBuilder::default();
                    b.push_parts(1, None, format!("t{t}-{i}").as_bytes(), []);
                    let bytes = b.finish(0);
                    let batch = validate_batch(&bytes, 1 << 20).unwrap();
                    let appended = log.append(&batch[0]).unwrap();
                    // Durable means visible: the append's own offset is below the watermark.
                    assert!(log.next_offset() >= appended.next_offset);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let appends = THREADS * APPENDS_PER_THREAD;
    let syncs = segment_syncs.get() - before;
    assert_eq!(log.next_offset(), appends as u64);
    assert_eq!(log.stats().segments, 1, "nothing rolled");
    eprintln!("{appends} appends from {THREADS} threads, {syncs} segment fsyncs");
    assert!(syncs > 0, "Always must fsync");
    assert!(
        syncs < appends / 2,
        "{syncs} fsyncs for {appends} appends: concurrent appends do not share fsyncs"
    );
}
