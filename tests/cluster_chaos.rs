//! Chaos on three broker processes (the run is `tests/common/chaos.rs`, as for one broker in
//! `tests/chaos_idempotent_producer.rs`): a topic of 6 partitions with 3 replicas each (fsync
//! always); one idempotent `Producer` connected to broker 1 sends 100,000 keyed records with up
//! to 20,000 deliveries in flight, following leaders; a group of 3 member `Consumer`s, one
//! connected to each broker, follows and commits (through the group coordinator, the controller
//! group's leader). Three times, counted by answered deliveries, a broker is disrupted: the
//! leader of a random partition is stopped with SIGSTOP for 3 s (longer than the election
//! timeout) and let go on; the leader of a random partition is SIGKILLed and started again at
//! once; then the group coordinator is. After that a member crashes and a new one joins.
//!
//! Afterwards every delivery must have ended Ok, all three brokers must serve the same records at
//! the same offsets, and the history checker verifies that every record is stored exactly once
//! (no duplicate from a retry, none lost), in per-key order, at the offset its acknowledgement
//! named (offsets rise with gaps where control batches sit), and that the group handed out every
//! record, and again only from its uncommitted window (committed offsets never went back across
//! the coordinator's death).

mod common;

use common::chaos::{self, Brokers, DEADLINE, PARTITIONS, TOPIC};
use common::cluster::Cluster;
use common::rng::Rng;
use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};
use strata::proto::MetadataRequest;

/// How long the first disruption stops a leader.
const PAUSE: Duration = Duration::from_secs(3);

struct ThreeBrokers {
    cluster: Cluster,
}

impl Brokers for ThreeBrokers {
    fn producer_url(&self) -> String {
        format!("http://{}", self.cluster.addr(1))
    }

    fn consumer_url(&self, i: usize) -> String {
        format!("http://{}", self.cluster.addr(i as u64 % 3 + 1))
    }

    fn disruptions(&self) -> usize {
        3
    }

    async fn kill_and_restart(&mut self, kill: usize, rng: &mut Rng) -> String {
        let (node, what) = if kill < 2 {
            let partition = rng.below(u64::from(PARTITIONS)) as u32;
            let leader = self.cluster.leader(TOPIC, partition, DEADLINE).await;
            if kill == 0 {
                // Longer than an election timeout (600-1200 ms here): the others elect another
                // leader; the paused one, back, must step down and take nothing acknowledged.
                self.cluster.pause(leader, PAUSE).await;
                return format!(
                    "node {leader}, leading {TOPIC}/{partition}, paused (SIGSTOP) for {PAUSE:?}"
                );
            }
            (
                leader,
                format!("node {leader}, leading {TOPIC}/{partition},"),
            )
        } else {
            let mut c = self.cluster.client(1).await;
            let coordinator = c
                .metadata(MetadataRequest::default())
                .await
                .expect("metadata")
                .into_inner()
                .group_coordinator;
            let node = if coordinator == 0 { 1 } else { coordinator };
            (node, format!("node {node}, the group coordinator,"))
        };
        self.cluster.kill(node);
        self.cluster.restart(node);
        format!("{what} killed and restarted")
    }

    async fn read_back(&self) -> BTreeMap<u32, Vec<(u64, Vec<u8>)>> {
        // Followers may trail the leaders by a heartbeat: read until all three agree.
        let started = Instant::now();
        loop {
            let mut views = Vec::new();
            for node in 1..=3 {
                let mut client = self.cluster.client(node).await;
                let mut stored = BTreeMap::new();
                for partition in 0..PARTITIONS {
                    stored.insert(
                        partition,
                        common::stored(&mut client, TOPIC, partition).await,
                    );
                }
                views.push(stored);
            }
            if views.iter().all(|v| *v == views[0]) {
                return views.swap_remove(0);
            }
            assert!(
                started.elapsed() < DEADLINE,
                "the brokers serve different records after {DEADLINE:?}: {:?} records each",
                views
                    .iter()
                    .map(|v| v.values().map(Vec::len).sum::<usize>())
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn gaps(&self) -> bool {
        true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_brokers_lose_and_repeat_nothing_across_leader_and_coordinator_kills() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--group-heartbeat-interval",
            "250ms",
            "--group-session-timeout",
            "5s",
        ],
    );
    cluster.create_topic(1, TOPIC, PARTITIONS, 3).await;
    let mut brokers = ThreeBrokers { cluster };
    chaos::run("cluster_chaos", &mut brokers).await;
}
