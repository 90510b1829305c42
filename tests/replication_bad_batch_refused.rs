//! Bytes that are not one valid producer batch (garbage, a flipped byte, two batches at once, a
//! broker's control batch) are refused by `ReplicatedPartition::produce` before they reach the
//! Raft group, whose storage would otherwise fail on them and stop it: after each, a good batch
//! is still taken, at the next offset.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod power_cut;
    pub mod raft;
    pub mod rng;
    pub mod storage;
}

use bytes::Bytes;
use common::{
    raft::{batch, one_node},
    storage::{small_config, value},
};
use std::{sync::Arc, time::Duration};
use strata::{record::BatchBuilder, replication::ProduceError, storage::Log};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_batches_are_refused_and_the_group_keeps_going() {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), small_config()).unwrap());
    let replica = one_node(log, openraft::Config::default()).await;
    let good = |i: u64| batch(&[value(i)]);
    let mut next = loop {
        if let Ok(a) = replica.produce(good(0)).await {
            break a.next_offset;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };

    let mut flipped = good(1).to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 0x40;
    let mut two = good(2).to_vec();
    two.extend_from_slice(&good(3));
    let mut control = BatchBuilder::default();
    control.push_parts(1, None, b"not yours", []);
    let bad: Vec<(&str, Bytes)> = vec![
        (
            "garbage",
            Bytes::from_static(b"not a batch at all, not even close"),
        ),
        ("empty", Bytes::new()),
        ("a flipped byte", Bytes::from(flipped)),
        ("two batches", Bytes::from(two)),
        ("a control batch", Bytes::from(control.finish_control(0))),
    ];
    for (what, bytes) in bad {
        let err = replica.produce(bytes).await.unwrap_err();
        assert!(matches!(err, ProduceError::Invalid(_)), "{what}: {err}");
        let a = replica.produce(good(next)).await.unwrap();
        assert_eq!(a.base_offset, next, "after {what}");
        next = a.next_offset;
    }
    replica.shutdown().await.unwrap();
}
