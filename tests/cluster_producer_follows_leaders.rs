//! The Rust `Producer`, given one broker of a three-broker cluster, sends to each partition's
//! leader (following the refusals that name it), and rides out the SIGKILL of the broker it was
//! given, which leads a partition: every record it sent is acknowledged, and, once the killed
//! broker is back, every broker serves each acknowledged record exactly once, at the offset it
//! was acknowledged at (the idempotent producer's resends after the kill are not stored twice).

mod common;

use common::cluster::Cluster;
use common::stored;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use strata::client::{self, Producer, ProducerConfig, ProducerRecord};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 3;
const WITHIN: Duration = Duration::from_secs(30);

/// Sends `n` records, round robin over the partitions, waiting for each round's answers.
async fn send(
    producer: &Producer,
    from: usize,
    n: usize,
    acked: &mut BTreeMap<u32, Vec<(u64, Vec<u8>)>>,
) {
    let mut pending = Vec::new();
    for i in from..from + n {
        let partition = (i % PARTITIONS as usize) as u32;
        let value = format!("event-{i}").into_bytes();
        let delivery = producer
            .send(ProducerRecord::new(value.clone()).partition(partition))
            .await
            .expect("queue a record");
        pending.push((value, delivery));
    }
    for (value, delivery) in pending {
        let m = delivery
            .wait()
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", String::from_utf8_lossy(&value)));
        acked
            .entry(m.partition)
            .or_default()
            .push((m.offset, value));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_follows_leaders_through_a_kill_and_stores_nothing_twice() {
    let mut cluster = Cluster::start(3);
    cluster.create_topic(1, TOPIC, PARTITIONS, 3).await;
    for p in 0..PARTITIONS {
        cluster.leader(TOPIC, p, WITHIN).await;
    }
    // Broker 1 knows every broker's client address (what the producer learns from it).
    let deadline = Instant::now() + WITHIN;
    while cluster
        .metadata(1, TOPIC)
        .await
        .is_none_or(|m| m.brokers.iter().any(|b| b.address.is_empty()))
    {
        assert!(
            Instant::now() < deadline,
            "broker 1 never learned the others' addresses"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let channel = client::connect(&format!("http://{}", cluster.addr(1)))
        .await
        .expect("connect to broker 1");
    let producer = Producer::new(
        channel,
        TOPIC,
        ProducerConfig {
            delivery_timeout: Duration::from_secs(60),
            ..ProducerConfig::default()
        },
    )
    .await
    .expect("a producer");

    let mut acked = BTreeMap::new();
    send(&producer, 0, 300, &mut acked).await;

    // Kill broker 1 (the producer's own, and the first leader of partition 0) with records in
    // flight.
    let leader0 = cluster.leader(TOPIC, 0, WITHIN).await;
    eprintln!("partition 0 led by node {leader0}; killing node 1");
    let in_flight = {
        let producer = producer.clone();
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            send(&producer, 300, 300, &mut acked).await;
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    cluster.kill(1);
    let later = in_flight.await.expect("the sending task");
    for (p, records) in later {
        acked.entry(p).or_default().extend(records);
    }
    send(&producer, 600, 300, &mut acked).await;
    producer.flush().await;

    cluster.restart(1);
    for (p, records) in &mut acked {
        records.sort();
        let mut offsets: Vec<u64> = records.iter().map(|(o, _)| *o).collect();
        offsets.dedup();
        assert_eq!(
            offsets.len(),
            records.len(),
            "partition {p}: two records acknowledged at one offset"
        );
        let end = records.last().map_or(0, |(o, _)| o + 1);
        for node in 1..=3 {
            cluster
                .wait_for_high_watermark(node, TOPIC, *p, end, WITHIN)
                .await;
            let got = stored(&mut cluster.client(node).await, TOPIC, *p).await;
            assert_eq!(
                &got, records,
                "node {node}, partition {p}: what it serves is not what was acknowledged"
            );
        }
    }
    let total: usize = acked.values().map(Vec::len).sum();
    assert_eq!(total, 900);
}
