//! Three broker processes and three `strata consume -g shared -f` processes, each connected to
//! a different broker: they form one group (their heartbeats all reach the group coordinator)
//! and share a replicated topic's six partitions, every record handled exactly once. Then the
//! coordinator broker is SIGKILLed and restarted: another broker coordinates, the members join
//! it again, and every record produced after is handled.

mod common;

use common::cluster::Cluster;
use common::values;
use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use strata::proto::MetadataRequest;

const TOPIC: &str = "orders";
const PARTITIONS: u32 = 6;
const WITHIN: Duration = Duration::from_secs(60);

/// (partition, value) -> which members printed it.
type Seen = Arc<Mutex<BTreeMap<(u32, String), Vec<u64>>>>;

/// A `strata consume` member process connected to one broker, whose printed records land in
/// `seen`.
fn member(url: &str, node: u64, seen: &Seen) -> common::cli::Follower {
    let seen = seen.clone();
    let args = [
        TOPIC, "-g", "shared", "-f", "--output", "json", "--broker", url,
    ];
    common::cli::Follower::start(&args, move |v| {
        let key = (
            v["partition"].as_u64().unwrap_or(u64::MAX) as u32,
            v["value"].as_str().unwrap_or_default().to_owned(),
        );
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(key)
            .or_default()
            .push(node);
    })
}

/// Produces `n` records numbered from `first` to every partition, each through its leader.
async fn produce(cluster: &Cluster, first: usize, n: usize) {
    for partition in 0..PARTITIONS {
        let vals = values(&format!("p{partition}"), first, n);
        cluster
            .produce_to_leader(TOPIC, partition, &vals, WITHIN)
            .await;
    }
}

/// Waits until every record numbered below `upto` in every partition was printed.
fn wait_for_all(seen: &Seen, upto: usize, what: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let missing: Vec<(u32, String)> = {
            let seen = seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (0..PARTITIONS)
                .flat_map(|p| (0..upto).map(move |i| (p, format!("p{p}-{i}"))))
                .filter(|k| !seen.contains_key(k))
                .take(5)
                .collect()
        };
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not handled, among others: {missing:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The partition counts of the group's members, sorted, as broker `node` describes the group.
fn member_counts(cluster: &Cluster, node: u64) -> Vec<usize> {
    let Some(server) = cluster.brokers[(node - 1) as usize].as_ref() else {
        return Vec::new();
    };
    let run = server.cli(&["group", "describe", "shared", "--output", "json"]);
    if !run.status.success() {
        return Vec::new();
    }
    let mut counts: Vec<usize> = run
        .json_lines()
        .iter()
        .filter(|l| l.get("member_id").is_some())
        .map(|l| {
            l["assignment"].as_object().map_or(0, |a| {
                a.values().filter_map(|v| v.as_array()).map(Vec::len).sum()
            })
        })
        .collect();
    counts.sort_unstable();
    counts
}

fn wait_for_members(cluster: &Cluster, node: u64, counts: &[usize], what: &str) {
    let deadline = Instant::now() + WITHIN;
    loop {
        let got = member_counts(cluster, node);
        if got == counts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: members own {got:?}, not {counts:?} (as node {node} describes the group)"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_different_brokers_form_one_group() {
    let mut cluster = Cluster::start_with(
        3,
        &[
            "--group-heartbeat-interval",
            "100ms",
            "--group-session-timeout",
            "3s",
        ],
    );
    cluster.create_topic(1, TOPIC, PARTITIONS, 3).await;

    let seen: Seen = Arc::default();
    let urls: Vec<String> = (1..=3)
        .map(|n| format!("http://{}", cluster.addr(n)))
        .collect();
    let _members: Vec<common::cli::Follower> = (1..=3)
        .map(|n| member(&urls[(n - 1) as usize], n, &seen))
        .collect();
    // One group of three, whichever broker describes it.
    for node in 1..=3 {
        wait_for_members(&cluster, node, &[2, 2, 2], "three members, one per broker");
    }
    produce(&cluster, 0, 200).await;
    wait_for_all(&seen, 200, "three members");
    {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let twice: Vec<_> = seen.iter().filter(|(_, by)| by.len() > 1).take(5).collect();
        assert!(twice.is_empty(), "records handled twice: {twice:?}");
        // Each member handled some: the partitions were shared, not all taken by one.
        for node in 1..=3 {
            assert!(seen.values().any(|by| by.contains(&node)), "member {node}");
        }
    }

    // The coordinator dies and comes back: the group goes on under another coordinator.
    let mut c = cluster.client(1).await;
    let coordinator = c
        .metadata(MetadataRequest { topics: vec![] })
        .await
        .expect("metadata")
        .into_inner()
        .group_coordinator;
    assert!((1..=3).contains(&coordinator), "{coordinator}");
    cluster.kill(coordinator);
    produce(&cluster, 200, 100).await;
    cluster.restart(coordinator);
    produce(&cluster, 300, 100).await;
    wait_for_all(&seen, 400, "after the coordinator's death");
    let other = (1..=3).find(|&n| n != coordinator).expect("another broker");
    wait_for_members(&cluster, other, &[2, 2, 2], "after the coordinator's death");
}
