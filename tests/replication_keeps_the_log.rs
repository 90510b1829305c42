//! A partition's Raft group never purges the partition's records on its own: openraft's default
//! (snapshot every 5,000 entries, then purge the log below it) would delete what consumers read.
//! A one-node group asked to snapshot every 5 entries, given 60 batches over 4 KiB segments,
//! still holds every record from offset 0.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod power_cut;
    pub mod raft;
    pub mod rng;
    pub mod storage;
}

use common::{
    raft::{batch, batches, one_node, records},
    storage::{small_config, value},
};
use std::sync::Arc;
use strata::storage::Log;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_does_not_purge_records_for_openraft_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_config()).unwrap());
    let config = openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(5),
        max_in_snapshot_log_to_keep: 0,
        ..openraft::Config::default()
    };
    let replica = one_node(log.clone(), config).await;
    let mut want = Vec::new();
    for i in 0..60u64 {
        let values = vec![value(i), value(i + 1000)];
        let a = loop {
            if let Ok(a) = replica.produce(batch(&values)).await {
                break a;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        want.extend((a.base_offset..).zip(values));
    }
    // Time for a snapshot and a purge to have run, had they been allowed.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(log.earliest_offset(), 0, "records purged");
    assert!(
        log.stats().segments > 3,
        "the test needs sealed segments to purge"
    );
    assert_eq!(records(&batches(&log)), want);
    replica.shutdown().await.unwrap();
}
