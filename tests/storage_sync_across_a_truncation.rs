//! A group fsync that began before a truncation proves nothing about what is appended after
//! it. A Raft follower truncates an uncommitted suffix and takes the new leader's entries at the
//! same offsets while an fsync of the old ones may still be running: when that fsync returns,
//! the new entries must not count as durable, and `sync_to` must not return for them until an
//! fsync has run after they were written.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{read_all, small_config};
use std::{
    io,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
        mpsc,
    },
};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{AppendWait, FaultInjector, FileOp, FsyncPolicy, IoEvent, Log, LogConfig},
};

/// Holds the first segment fdatasync after it is armed until released, and counts them.
#[derive(Default)]
struct Gate {
    armed: AtomicBool,
    held: Mutex<Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>>,
    segment_syncs: AtomicUsize,
}

impl FaultInjector for Gate {
    fn before(&self, _: FileOp, _: &Path, _: usize) -> io::Result<Option<usize>> {
        Ok(None)
    }

    fn after(&self, event: &IoEvent<'_>) {
        let IoEvent::SyncedData { path } = event else {
            return;
        };
        if path.extension().is_none_or(|e| e != "log") {
            return;
        }
        self.segment_syncs.fetch_add(1, Ordering::SeqCst);
        if self.armed.swap(false, Ordering::SeqCst) {
            let (held, release) = self.held.lock().unwrap().take().unwrap();
            held.send(()).unwrap();
            release.recv().unwrap();
        }
    }
}

fn batch(values: &[&str]) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(0, None, v.as_bytes(), []);
    }
    b.finish(0)
}

#[test]
fn an_fsync_from_before_a_truncation_does_not_make_later_appends_durable() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let config = LogConfig {
        fsync: FsyncPolicy::Never,
        faults: Some(gate.clone()),
        ..small_config()
    };
    let log = Arc::new(Log::open(&dir.path().join("p"), config).unwrap());
    let mut old = batch(&["a0", "a1"]);
    old.extend(batch(&["a2", "a3"]));
    log.append_in_term(1, &validate_batch(&old, 1024).unwrap(), AppendWait::Written)
        .unwrap();

    // A sync of offsets 0..4, held inside its fdatasync.
    let (held_tx, held_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel();
    *gate.held.lock().unwrap() = Some((held_tx, release_rx));
    gate.armed.store(true, Ordering::SeqCst);
    let syncer = {
        let log = log.clone();
        std::thread::spawn(move || log.sync_to(4))
    };
    held_rx.recv().unwrap();

    // Meanwhile: the suffix from 2 goes, a new leader's entries take offsets 2..5.
    assert_eq!(log.truncate(2).unwrap(), 2);
    let new = batch(&["b2", "b3", "b4"]);
    log.append_in_term(2, &validate_batch(&new, 1024).unwrap(), AppendWait::Written)
        .unwrap();
    let syncs_before = gate.segment_syncs.load(Ordering::SeqCst);

    release_tx.send(()).unwrap();
    syncer.join().unwrap().unwrap();
    log.sync_to(4).unwrap();
    assert!(
        gate.segment_syncs.load(Ordering::SeqCst) > syncs_before,
        "sync_to(4) returned with offsets 2..4 rewritten after the last segment fsync began"
    );
    let values: Vec<Vec<u8>> = read_all(&log, 0)
        .unwrap()
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, [&b"a0"[..], b"a1", b"b2", b"b3", b"b4"]);
    assert_eq!((log.term_at(1).unwrap(), log.term_at(2).unwrap()), (1, 2));
}
