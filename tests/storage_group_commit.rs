//! Group commit: under `FsyncPolicy::Always`, concurrent appenders share fsyncs. Counted through
//! the fault seam (every `FileOp::Sync` of a `.log` file), not timed.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

use std::{
    io,
    path::Path,
    sync::{
        Arc, Barrier,
        atomic::{AtomicUsize, Ordering},
    },
};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{FaultInjector, FileOp, FsyncPolicy, Log, LogConfig},
};

/// Counts fsyncs of segment files.
#[derive(Default)]
struct SyncCounter {
    segment_syncs: AtomicUsize,
}

impl FaultInjector for SyncCounter {
    fn before(&self, op: FileOp, path: &Path, _len: usize) -> io::Result<Option<usize>> {
        if op == FileOp::Sync && path.extension() == Some("log".as_ref()) {
            self.segment_syncs.fetch_add(1, Ordering::SeqCst);
        }
        Ok(None)
    }
}

const THREADS: usize = 8;
const APPENDS_PER_THREAD: usize = 200;

#[test]
fn concurrent_appenders_share_fsyncs() {
    let counter = Arc::new(SyncCounter::default());
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(
        Log::open(
            dir.path(),
            LogConfig {
                // Large enough that nothing rolls: every segment fsync is an append's.
                segment_max_bytes: 64 * 1024 * 1024,
                checkpoint_interval_bytes: 1 << 40,
                fsync: FsyncPolicy::Always,
                faults: Some(counter.clone() as Arc<dyn FaultInjector>),
                ..LogConfig::default()
            },
        )
        .unwrap(),
    );
    let before = counter.segment_syncs.load(Ordering::SeqCst);
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
    let syncs = counter.segment_syncs.load(Ordering::SeqCst) - before;
    assert_eq!(log.next_offset(), appends as u64);
    assert_eq!(log.stats().segments, 1, "nothing rolled");
    eprintln!("{appends} appends from {THREADS} threads, {syncs} segment fsyncs");
    assert!(syncs > 0, "Always must fsync");
    assert!(
        syncs < appends / 2,
        "{syncs} fsyncs for {appends} appends: concurrent appends do not share fsyncs"
    );
}
