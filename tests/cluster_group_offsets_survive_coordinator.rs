//! Three broker processes: a consumer group's committed offsets are the cluster's, not one
//! broker's. Commits sent to each broker in turn are forwarded to the group coordinator (the
//! controller group's leader) and every broker answers with the latest; after the coordinator
//! is SIGKILLed another broker coordinates within seconds and still has every acknowledged
//! commit (none regresses); after a second failover, with the first coordinator restarted and
//! caught up, the same.

mod common;

use common::cluster::{Cluster, is_failover};
use common::{try_produce_values, values};
use std::time::{Duration, Instant};
use strata::proto::{
    CommitOffsetsRequest, FetchCommittedOffsetsRequest, MetadataRequest, PartitionOffset,
};

const TOPIC: &str = "orders";
const GROUP: &str = "billing";
const PARTITIONS: u32 = 3;
const WITHIN: Duration = Duration::from_secs(30);

/// The group coordinator every running broker names, once they agree on a running one.
async fn coordinator(cluster: &Cluster) -> u64 {
    let deadline = Instant::now() + WITHIN;
    loop {
        let mut seen = Vec::new();
        for node in cluster.running() {
            let mut c = cluster.client(node).await;
            let named = c
                .metadata(MetadataRequest { topics: vec![] })
                .await
                .map_or(0, |m| m.into_inner().group_coordinator);
            seen.push(named);
        }
        if let Some(&first) = seen.first()
            && first != 0
            && seen.iter().all(|&n| n == first)
            && cluster.running().contains(&first)
        {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "no agreed group coordinator: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Commits `offset` in every partition through broker `node`, riding out a failover.
async fn commit(cluster: &Cluster, node: u64, offset: u64) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let mut c = cluster.client(node).await;
        let request = CommitOffsetsRequest {
            group: GROUP.into(),
            offsets: (0..PARTITIONS)
                .map(|partition| PartitionOffset {
                    topic: TOPIC.into(),
                    partition,
                    offset,
                })
                .collect(),
            ..Default::default()
        };
        match c.commit_offsets(request).await {
            Ok(_) => return,
            Err(s) if is_failover(&s) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("commit {offset} through node {node}: {s:?}"),
        }
    }
}

/// The group's committed offset per partition as broker `node` answers, riding out a failover.
async fn committed(cluster: &Cluster, node: u64) -> Vec<u64> {
    let deadline = Instant::now() + WITHIN;
    loop {
        let mut c = cluster.client(node).await;
        let request = FetchCommittedOffsetsRequest {
            group: GROUP.into(),
            topic: TOPIC.into(),
        };
        match c.fetch_committed_offsets(request).await {
            Ok(r) => {
                let mut offsets = r.into_inner().offsets;
                offsets.sort_by_key(|o| o.partition);
                return offsets.into_iter().map(|o| o.offset).collect();
            }
            Err(s) if is_failover(&s) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => panic!("fetch committed offsets through node {node}: {s:?}"),
        }
    }
}

/// Checks that every running broker answers `offset` in every partition.
async fn all_answer(cluster: &Cluster, offset: u64, when: &str) {
    for node in cluster.running() {
        assert_eq!(
            committed(cluster, node).await,
            vec![offset; PARTITIONS as usize],
            "node {node}, {when}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_the_coordinators_death() {
    let mut cluster = Cluster::start(3);
    cluster.create_topic(1, TOPIC, PARTITIONS, 3).await;
    for partition in 0..PARTITIONS {
        let leader = cluster.leader(TOPIC, partition, WITHIN).await;
        let mut c = cluster.client(leader).await;
        try_produce_values(&mut c, TOPIC, partition, &values("order", 0, 10))
            .await
            .expect("produce to the leader");
    }

    // Through every broker in turn: each commit is seen by all three.
    let first = coordinator(&cluster).await;
    for node in 1..=3 {
        commit(&cluster, node, node).await;
        all_answer(
            &cluster,
            node,
            &format!("after the commit through node {node}"),
        )
        .await;
    }

    // The coordinator dies: another takes over with every commit.
    cluster.kill(first);
    let second = coordinator(&cluster).await;
    assert_ne!(second, first);
    all_answer(&cluster, 3, "after the first coordinator's death").await;
    let survivor = cluster
        .running()
        .into_iter()
        .find(|&n| n != second)
        .expect("a survivor that does not coordinate");
    commit(&cluster, survivor, 7).await;
    all_answer(&cluster, 7, "after a commit to the second coordinator").await;

    // The first comes back and catches up; then the second dies, and whichever of the other
    // two coordinates has the last commit.
    cluster.restart(first);
    all_answer(&cluster, 7, "after the first coordinator's restart").await;
    commit(&cluster, first, 8).await;
    cluster.kill(second);
    let third = coordinator(&cluster).await;
    assert_ne!(third, second);
    all_answer(&cluster, 8, "after the second coordinator's death").await;
}
