//! A failed fsync poisons the log: the append that needed it fails, every later append fails
//! with `Poisoned` instead of pretending, reads of what was durable go on, and reopening the log
//! recovers and takes appends again.

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{append, fill, read_all, small_config, value};
use std::{
    io,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};
use strata::storage::{FaultInjector, FileOp, Log, LogConfig, StorageError};

/// Fails every fsync of a segment file while armed.
#[derive(Default)]
struct FailSegmentSyncs {
    armed: AtomicBool,
}

impl FaultInjector for FailSegmentSyncs {
    fn before(&self, op: FileOp, path: &Path, _len: usize) -> io::Result<Option<usize>> {
        if self.armed.load(Ordering::SeqCst)
            && op == FileOp::Sync
            && path.extension() == Some("log".as_ref())
        {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(None)
    }
}

#[test]
fn a_failed_fsync_poisons_appends_until_the_log_is_reopened() {
    let faults = Arc::new(FailSegmentSyncs::default());
    let config = LogConfig {
        faults: Some(faults.clone() as Arc<dyn FaultInjector>),
        ..small_config()
    };
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(dir.path(), config.clone()).unwrap();
    let records = fill(&log, 20);

    faults.armed.store(true, Ordering::SeqCst);
    let failed = append(&log, &[value(100)], 1);
    assert!(
        matches!(failed, Err(StorageError::Io { op: "fsync", .. })),
        "{failed:?}"
    );
    faults.armed.store(false, Ordering::SeqCst);
    // The disk works again, but what it holds is unknown: appends stay refused.
    for _ in 0..3 {
        let again = append(&log, &[value(101)], 1);
        assert!(
            matches!(again, Err(StorageError::Poisoned { .. })),
            "{again:?}"
        );
    }
    assert!(matches!(log.roll(), Err(StorageError::Poisoned { .. })));
    assert!(matches!(log.flush(), Err(StorageError::Poisoned { .. })));
    // What was acknowledged is still served; the failed append never became visible.
    assert_eq!(log.next_offset(), 20);
    assert_eq!(read_all(&log, 0).unwrap(), records);
    drop(log);

    let log = Log::open(dir.path(), config).unwrap();
    let kept = read_all(&log, 0).unwrap();
    assert_eq!(kept[..20], records);
    // The failed append may or may not have reached the disk; nothing else is there.
    assert!(
        kept.len() == 20 || kept[20..] == [(20, value(100))],
        "{kept:?}"
    );
    let next = fill(&log, 3);
    assert_eq!(next[0].0, kept.len() as u64);
}
