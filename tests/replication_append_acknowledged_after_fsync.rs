//! The most common bug of an openraft storage adapter is reporting an append flushed before it
//! is: a partition's Raft log store under `fsync always` calls the append callback only once an
//! fsync of the segment has finished after the entries were written, and in the order of the
//! appends; under `fsync never` it calls it once they are written, with no fsync at all.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use bytes::Bytes;
use common::storage::small_config;
use openraft::{
    EntryPayload, storage::IOFlushed, storage::RaftLogStorage, type_config::TypeConfigExt,
};
use std::{
    io,
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use strata::{
    record::BatchBuilder,
    replication::{Entry, EntryBatch, LogId, PartitionLogStore, PartitionRaft, open_partition},
    storage::{FaultInjector, FileOp, FsyncPolicy, IoEvent, Log, LogConfig},
};
use tokio::sync::oneshot;

/// Holds every fsync of a segment while closed, and counts the finished ones.
#[derive(Default)]
struct SyncGate {
    closed: Mutex<bool>,
    opened: Condvar,
    segment_syncs: AtomicUsize,
}

impl SyncGate {
    fn set_closed(&self, closed: bool) {
        *self.closed.lock().unwrap() = closed;
        self.opened.notify_all();
    }
}

fn is_segment(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "log")
}

impl FaultInjector for SyncGate {
    fn before(&self, op: FileOp, path: &Path, _: usize) -> io::Result<Option<usize>> {
        if op == FileOp::Sync && is_segment(path) {
            let mut closed = self.closed.lock().unwrap();
            while *closed {
                closed = self.opened.wait(closed).unwrap();
            }
        }
        Ok(None)
    }

    fn after(&self, event: &IoEvent<'_>) {
        if let IoEvent::SyncedData { path } = event
            && is_segment(path)
        {
            self.segment_syncs.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn entry(term: u64, index: u64, value: &str) -> Entry {
    let mut b = BatchBuilder::default();
    b.push_parts(1, None, value.as_bytes(), []);
    Entry {
        log_id: LogId::new_term_index(term, index),
        payload: EntryPayload::Normal(EntryBatch(Bytes::from(b.finish(0)))),
    }
}

fn store(dir: &Path, fsync: FsyncPolicy, gate: &Arc<SyncGate>) -> PartitionLogStore {
    let config = LogConfig {
        fsync,
        faults: Some(gate.clone()),
        ..small_config()
    };
    let log = Arc::new(Log::open(dir, config).unwrap());
    open_partition(log).unwrap().0
}

/// Appends `entries` and returns the receiver of its callback.
async fn append(
    store: &mut PartitionLogStore,
    entries: Vec<Entry>,
) -> oneshot::Receiver<Result<(), io::Error>> {
    let (tx, rx) = PartitionRaft::oneshot();
    store.append(entries, IOFlushed::signal(tx)).await.unwrap();
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fsync_always_the_callback_waits_for_the_fsync() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let mut store = store(dir.path(), FsyncPolicy::Always, &gate);

    gate.set_closed(true);
    let syncs_before = gate.segment_syncs.load(Ordering::SeqCst);
    let mut first = append(&mut store, vec![entry(1, 0, "a"), entry(1, 1, "b")]).await;
    let mut second = append(&mut store, vec![entry(1, 2, "c")]).await;
    // Written and readable at once, as openraft requires; not flushed while the fsync is held.
    let read = openraft::RaftLogReader::try_get_log_entries(&mut store, 0..3)
        .await
        .unwrap();
    assert_eq!(read.len(), 3);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        first.try_recv().is_err(),
        "flushed before any fsync finished"
    );
    assert!(
        second.try_recv().is_err(),
        "flushed before any fsync finished"
    );
    assert_eq!(gate.segment_syncs.load(Ordering::SeqCst), syncs_before);

    gate.set_closed(false);
    first.await.unwrap().unwrap();
    second.await.unwrap().unwrap();
    assert!(
        gate.segment_syncs.load(Ordering::SeqCst) > syncs_before,
        "reported flushed with no fsync of the segment"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_fsync_never_the_callback_fires_once_written() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(SyncGate::default());
    let mut store = store(dir.path(), FsyncPolicy::Never, &gate);
    gate.set_closed(true);
    let done = append(&mut store, vec![entry(1, 0, "a")]).await;
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("the callback waited under fsync never")
        .unwrap()
        .unwrap();
    gate.set_closed(false);
}
