//! openraft's own storage test suite (`openraft::testing::log::Suite`, 40-odd scenarios: votes,
//! appends at any index, reads, truncation, purging past the end, initial state, membership,
//! snapshots) against a partition's Raft storage over a real segment log, with 4 KiB segments so
//! that purges delete files, under `fsync always` so that every append's callback waits for
//! `sync_to`.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::small_config;
use openraft::{
    StorageError,
    testing::log::{StoreBuilder, Suite},
};
use std::sync::Arc;
use strata::{
    replication::{PartitionLogStore, PartitionMachine, PartitionRaft, open_partition},
    storage::Log,
};
use tempfile::TempDir;

struct Partition;

impl StoreBuilder<PartitionRaft, PartitionLogStore, PartitionMachine, TempDir> for Partition {
    async fn build(
        &self,
    ) -> Result<(TempDir, PartitionLogStore, PartitionMachine), StorageError<PartitionRaft>> {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::open(dir.path(), small_config()).unwrap());
        let (store, machine) = open_partition(log).unwrap();
        Ok((dir, store, machine))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_a_partition_log() {
    Suite::test_all(Partition).await.unwrap();
}
