//! Consumer processes in one group share a topic's partitions: three `strata consume -g shared
//! -f` over a 12-partition topic handle every record exactly once; a fourth joins mid-stream and
//! partitions move without a record lost or handled twice (revoked partitions are committed
//! before they move); a member is SIGKILLed and its partitions move to the others within the
//! session timeout, with records handled twice only in what it had not committed.

mod common;

use common::{Server, create_topic, produce_values, values};
use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

const PARTITIONS: u32 = 12;

/// (partition, offset) -> how many times members printed it, and by which member.
type Seen = Arc<Mutex<BTreeMap<(u32, u64), Vec<usize>>>>;

/// A `strata consume` member process whose printed records land in `seen`.
struct Member(common::cli::Follower);

impl Member {
    fn start(server: &Server, index: usize, seen: &Seen) -> Member {
        let seen = seen.clone();
        let url = server.url();
        let args = [
            "orders", "-g", "shared", "-f", "--output", "json", "--broker", &url,
        ];
        Member(common::cli::Follower::start(&args, move |v| {
            let key = (
                v["partition"].as_u64().unwrap_or(u64::MAX) as u32,
                v["offset"].as_u64().unwrap_or(u64::MAX),
            );
            seen.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .entry(key)
                .or_default()
                .push(index);
        }))
    }

    fn kill(&mut self) {
        self.0.kill();
    }
}

fn count(seen: &Seen) -> usize {
    seen.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len()
}

/// Waits until `n` distinct records were printed.
fn wait_for(seen: &Seen, n: usize, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(seen) < n {
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {n} records printed",
            count(seen)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Produces `per_partition` records to every partition, numbered from `first`.
async fn produce(client: &mut common::Client, first: usize, per_partition: usize) {
    for p in 0..PARTITIONS {
        for chunk in (0..per_partition).step_by(1000) {
            let n = 1000.min(per_partition - chunk);
            produce_values(client, "orders", p, &values("r", first + chunk, n)).await;
        }
    }
}

/// The member ids and their partition counts, from `group describe`.
fn members(server: &Server) -> Vec<(String, usize)> {
    let run = server.cli(&["group", "describe", "shared", "--output", "json"]);
    if !run.status.success() {
        // Not found: no member has joined yet.
        assert!(run.stderr.contains("not found"), "{}", run.stderr);
        return Vec::new();
    }
    let lines = run.json_lines();
    lines
        .iter()
        .filter(|l| l.get("member_id").is_some())
        .map(|l| {
            let n = l["assignment"].as_object().map_or(0, |a| {
                a.values().filter_map(|v| v.as_array()).map(Vec::len).sum()
            });
            (l["member_id"].as_str().unwrap_or_default().to_string(), n)
        })
        .collect()
}

fn wait_for_members(server: &Server, counts: &[usize]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut got: Vec<usize> = members(server).into_iter().map(|(_, n)| n).collect();
        got.sort_unstable();
        if got == counts {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members own {got:?}, not {counts:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_and_hand_them_over_on_join_and_death() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(
        dir.path(),
        &[
            "--group-heartbeat-interval",
            "100ms",
            "--group-session-timeout",
            "2s",
        ],
    );
    let mut client = server.client().await;
    create_topic(&mut client, "orders", PARTITIONS).await;
    produce(&mut client, 0, 2500).await;
    let seen: Seen = Arc::default();

    // Three members share the 30,000 records.
    let mut ms: Vec<Member> = (0..3).map(|i| Member::start(&server, i, &seen)).collect();
    wait_for_members(&server, &[4, 4, 4]);
    wait_for(&seen, 30_000, "three members");

    // A fourth joins while records keep coming: three partitions move to it.
    ms.push(Member::start(&server, 3, &seen));
    produce(&mut client, 2500, 1000).await;
    wait_for_members(&server, &[3, 3, 3, 3]);
    produce(&mut client, 3500, 1500).await;
    wait_for(&seen, 60_000, "four members");
    {
        let seen = seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let twice: Vec<_> = seen.iter().filter(|(_, by)| by.len() > 1).take(5).collect();
        assert!(twice.is_empty(), "records handled twice: {twice:?}");
        // The fourth member did handle some (its partitions moved to it).
        assert!(seen.values().any(|by| by.contains(&3)));
    }

    // One member dies: within the session timeout the others own every partition again.
    let before_kill: BTreeMap<(u32, u64), Vec<usize>> = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    ms[1].kill();
    let killed_at = Instant::now();
    produce(&mut client, 5000, 500).await;
    wait_for_members(&server, &[4, 4, 4]);
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "partitions moved only after {:?}",
        killed_at.elapsed()
    );
    wait_for(&seen, 66_000, "after a member died");

    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let dead_partitions: BTreeSet<u32> = before_kill
        .iter()
        .filter(|(_, by)| by.contains(&1))
        .map(|((p, _), _)| *p)
        .collect();
    for ((p, o), by) in seen.iter() {
        if by.len() > 1 {
            // Handled twice: only what the dead member printed and had not committed.
            assert!(
                dead_partitions.contains(p) && by.contains(&1),
                "partition {p} offset {o} handled by {by:?}"
            );
        }
    }
    let all: BTreeSet<(u32, u64)> = (0..PARTITIONS)
        .flat_map(|p| (0..5500u64).map(move |o| (p, o)))
        .collect();
    let printed: BTreeSet<(u32, u64)> = seen.keys().copied().collect();
    assert_eq!(printed, all, "every record printed at least once");
}
