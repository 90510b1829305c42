//! Three broker processes on 127.0.0.1 ports, a topic of 3 partitions with 3 replicas each:
//! produces go to each partition's leader and are served by every broker; a follower refuses a
//! produce naming the leader's address; after the leader of a partition is SIGKILLed, another
//! broker leads it within seconds and takes produces; the killed broker, restarted, catches up,
//! and all three serve the same records at the offsets they were acknowledged at, none lost,
//! none twice. (The Raft log's own entries, a new leader's blank entry and the membership, take
//! an offset each as control batches that readers skip: data offsets rise, with gaps there.)

mod common;

use common::cluster::Cluster;
use common::try_produce_values as try_produce;
use common::{stored, values};

/// What one partition should hold: (offset, value), as acknowledged.
type Acked = Vec<(u64, Vec<u8>)>;

fn acked(base: u64, vals: Vec<Vec<u8>>) -> Acked {
    (base..).zip(vals).collect()
}
use std::time::{Duration, Instant};
use strata::proto::keys::{LEADER_ADDRESS, LEADER_ID, NOT_LEADER};
use tonic::Code;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;
const PER_ROUND: usize = 20;
const WITHIN: Duration = Duration::from_secs(30);

/// Produces `vals` to the partition's leader, following leader changes until `WITHIN` passes.
async fn produce_to_leader(cluster: &Cluster, partition: u32, vals: &[Vec<u8>]) -> u64 {
    cluster
        .produce_to_leader(TOPIC, partition, vals, WITHIN)
        .await
}

/// Waits until every broker serves each partition up to its last acknowledged record, then checks
/// that it serves exactly the acknowledged records.
async fn all_serve(cluster: &Cluster, expected: &[Acked], when: &str) {
    for node in 1..=3 {
        for (p, acked) in (0u32..).zip(expected) {
            let end = acked.last().map_or(0, |(o, _)| o + 1);
            cluster
                .wait_for_high_watermark(node, TOPIC, p, end, WITHIN)
                .await;
            let got = stored(&mut cluster.client(node).await, TOPIC, p).await;
            assert_eq!(&got, acked, "node {node}, partition {p}, {when}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_and_nothing_acknowledged_is_lost() {
    let mut cluster = Cluster::start(3);

    cluster.create_topic(1, TOPIC, PARTITIONS, 3).await;

    // Every broker has the topic, every partition a leader.
    let mut expected: Vec<Acked> = vec![Vec::new(); PARTITIONS as usize];
    for p in 0..PARTITIONS {
        let vals = values(&format!("p{p}-a"), 0, PER_ROUND);
        let base = produce_to_leader(&cluster, p, &vals).await;
        expected[p as usize].extend(acked(base, vals));
    }

    // A follower refuses, naming the leader.
    let leader = cluster.leader(TOPIC, 0, WITHIN).await;
    let follower = (1..=3).find(|n| *n != leader).expect("a follower");
    let refused = try_produce(
        &mut cluster.client(follower).await,
        TOPIC,
        0,
        &values("refused", 0, 1),
    )
    .await
    .expect_err("a follower takes no produce");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("not the partition's leader"),
        "{refused:?}"
    );
    assert!(refused.metadata().get(NOT_LEADER).is_some(), "{refused:?}");
    assert_eq!(
        refused
            .metadata()
            .get(LEADER_ID)
            .and_then(|v| v.to_str().ok()),
        Some(leader.to_string().as_str()),
        "{refused:?}"
    );
    // The follower learns the others' client addresses from their Raft ports.
    let hinted = refused
        .metadata()
        .get(LEADER_ADDRESS)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        hinted,
        Some(cluster.addr(leader).to_string()),
        "{refused:?}"
    );

    // Every broker serves what was acknowledged, followers too.
    all_serve(&cluster, &expected, "before the kill").await;

    // Kill partition 0's leader: another broker leads it and takes produces.
    let killed = cluster.leader(TOPIC, 0, WITHIN).await;
    let killed_at = Instant::now();
    cluster.kill(killed);
    let vals = values("p0-b", 0, PER_ROUND);
    let base = produce_to_leader(&cluster, 0, &vals).await;
    let failover = killed_at.elapsed();
    let before = expected[0].last().map_or(0, |(o, _)| o + 1);
    assert!(
        base >= before,
        "offsets go on after {before}, not at {base}"
    );
    expected[0].extend(acked(base, vals));
    let new_leader = cluster.leader(TOPIC, 0, WITHIN).await;
    assert_ne!(new_leader, killed);
    eprintln!("leader {killed} killed; node {new_leader} took a produce after {failover:?}");
    for p in 1..PARTITIONS {
        let vals = values(&format!("p{p}-b"), 0, PER_ROUND);
        let base = produce_to_leader(&cluster, p, &vals).await;
        expected[p as usize].extend(acked(base, vals));
    }

    // The killed broker comes back and catches up; all three hold the same records.
    cluster.restart(killed);
    all_serve(
        &cluster,
        &expected,
        &format!("after the restart of node {killed}"),
    )
    .await;
}
