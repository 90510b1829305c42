//! A consumer given all three brokers of a cluster (`--broker A,B,C`: one channel spread over
//! those that answer) rides out the death of any one: `strata consume -g` follows a replicated
//! topic, the broker that leads its first partition (and maybe coordinates the group) is
//! SIGKILLed for good, and every record produced before and after is handed out.

mod common;

use common::cli::Follower;
use common::cluster::Cluster;
use common::values;
use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 3;
const WITHIN: Duration = Duration::from_secs(60);

/// Produces `n` records numbered from `first` to every partition, each through its leader.
async fn produce(cluster: &Cluster, first: usize, n: usize) {
    for partition in 0..PARTITIONS {
        let vals = values(&format!("p{partition}"), first, n);
        cluster
            .produce_to_leader(TOPIC, partition, &vals, WITHIN)
            .await;
    }
}

/// Waits until every record numbered below `upto` in every partition was handed out.
fn wait_for_all(seen: &Mutex<BTreeSet<String>>, upto: usize, what: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let missing: Vec<String> = {
            let seen = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..PARTITIONS)
                .flat_map(|p| (0..upto).map(move |i| format!("p{p}-{i}")))
                .filter(|v| !seen.contains(v))
                .take(5)
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not handed out, among others: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_given_every_broker_goes_on_when_one_dies() {
    let mut cluster = Cluster::start(3);
    cluster.create_topic(1, TOPIC, PARTITIONS, 3).await;
    let brokers = (1..=3)
        .map(|n| cluster.addr(n).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let seen: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let printed = seen.clone();
    let _consumer = Follower::start(
        &[
            TOPIC, "-g", "billing", "-f", "--output", "json", "--broker", &brokers,
        ],
        move |v| {
            if let Some(value) = v["value"].as_str() {
                printed
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(value.to_owned());
            }
        },
    );
    produce(&cluster, 0, 100).await;
    wait_for_all(&seen, 100, "with three brokers");

    let victim = cluster.leader(TOPIC, 0, WITHIN).await;
    cluster.kill(victim);
    produce(&cluster, 100, 100).await;
    wait_for_all(&seen, 200, &format!("after node {victim} died"));
}
