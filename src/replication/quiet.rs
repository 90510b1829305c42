//! Quiet partition groups: thousands of idle Raft groups on a broker without thousands of
//! timers and heartbeats.
//!
//! openraft drives each group's heartbeats and elections from a timer that fires about five
//! times per heartbeat interval; with a heartbeat every 250 ms that is 20 wake-ups a second per
//! replica, and a heartbeat request per follower four times a second: at 4,000 replicas on a
//! broker, more than two cores at idle. Partition groups therefore run with openraft's timer
//! parked (`enable_tick = false` in their config) and one task per broker, [`run`], decides
//! for each group whether its timer must run, from what the broker hears of the others
//! ([`RaftLinks`]: any reply, or a ping every heartbeat interval when nothing else went). This
//! is CockroachDB's quiescence and TiKV's hibernated regions, with the broker-to-broker ping
//! as the one heartbeat that stands for all of them.
//!
//! Each pass, per group:
//! - a leader's timer (its heartbeats) runs while a follower that is up has not matched the
//!   leader's last entry, the leader has not committed all of its log, or a follower's broker
//!   came back (first heard, heard after a silence, or restarted) less than an election timeout
//!   ago: its heartbeats then tell that broker's replica who leads. Otherwise it is parked.
//! - a follower whose leader's broker is up is parked: the ping stands for the heartbeats.
//! - a follower with no leader, or whose leader's broker was not heard from within the
//!   liveness window (the shortest election timeout), after a grace of one (longest) election
//!   timeout from this broker's start for the leaders to tell it: one replica of the group
//!   stands for election (pre-vote first), chosen alike on every broker ([`candidate`]: the
//!   voters that are up, from a place drawn from the group's name, the next one at each try),
//!   so votes do not split and leaders spread; at most [`MAX_STANDING`] at once, so a whole
//!   cluster's restart does not start thousands of elections at once. A follower's timer never
//!   runs: with thousands of leaderless groups it would wake each 20 times a second (a first
//!   version fell back on it after four tries, and a whole-cluster restart with 4,000 groups
//!   did not settle, the brokers busy).
//!
//! Replication needs no timer: openraft sends new entries and the new commit position as they
//! come, and retries a follower that failed on its own.

use super::{groups::PartitionGroups, links::RaftLinks, types::PartitionRaft};
use openraft::{ServerState, async_runtime::WatchReceiver};
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::{DefaultHasher, Hash, Hasher},
    time::{Duration, Instant},
};
use tokio::task::JoinHandle;

/// How often the groups are looked at and quiet brokers are pinged.
#[derive(Debug, Clone, Copy)]
pub struct QuietTimings {
    /// How often: the partition groups' heartbeat interval.
    pub heartbeat: Duration,
    /// How long a broker's replicas wait for leaders to tell them who leads before they stand
    /// for election, and how long a leader heartbeats a broker that came back: the longest
    /// election timeout.
    pub grace: Duration,
}

/// Runs on `runtime` until it stops or the returned task is aborted: every heartbeat interval,
/// pings each broker of `peers` (node id to Raft address) not heard from within it, and starts
/// or parks the timer of each group in `groups` whose replica is configured to be quiet.
pub fn spawn(
    runtime: &tokio::runtime::Handle,
    groups: PartitionGroups,
    links: RaftLinks,
    peers: BTreeMap<u64, String>,
    timings: QuietTimings,
) -> JoinHandle<()> {
    runtime.spawn(run(groups, links, peers, timings))
}

/// How many of this broker's replicas may stand for election at once (told to, and not yet
/// seeing a leader, for up to a grace each): after a whole cluster restarts, thousands of
/// groups need leaders, and each election writes the vote durably on every replica; thousands
/// at once on a shared disk time out and start over.
const MAX_STANDING: usize = 64;

/// What [`run`] remembers of a group from one pass to the next.
#[derive(Debug, Default)]
struct Watch {
    /// Since when this replica has known no leader that is up.
    leaderless_since: Option<Instant>,
}

/// What a replica does this pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    /// Whether openraft's timer runs.
    tick: bool,
    /// Whether it stands for election now.
    stand: bool,
}

async fn run(
    groups: PartitionGroups,
    links: RaftLinks,
    peers: BTreeMap<u64, String>,
    timings: QuietTimings,
) {
    let started = Instant::now();
    // Pings go from a task of their own, so a slow pass over the groups never delays them (a
    // broker that pinged late would think the others down).
    let _pings = AbortOnDrop(tokio::spawn(ping(links.clone(), peers, timings.heartbeat)));
    let mut watches: HashMap<String, Watch> = HashMap::new();
    let mut standing: HashMap<String, Instant> = HashMap::new();
    let mut interval = tokio::time::interval(timings.heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = Instant::now();
        let settled = now.duration_since(started) >= timings.grace;
        let members = groups.members();
        let names: HashSet<&str> = members.iter().map(|(n, _)| n.as_str()).collect();
        watches.retain(|name, _| names.contains(name.as_str()));
        standing.retain(|name, at: &mut Instant| {
            names.contains(name.as_str()) && now.duration_since(*at) < timings.grace
        });
        for (name, member) in members {
            if !member.quiesces() {
                continue;
            }
            let raft = member.raft();
            let watch = watches.entry(name.clone()).or_default();
            let step = {
                let metrics = raft.metrics();
                let m = metrics.borrow_watched();
                // A replica that stood lately (still in `standing`) waits out its election.
                let rested = !standing.contains_key(&name);
                step(
                    &m,
                    &name,
                    &links,
                    watch,
                    now,
                    settled,
                    rested,
                    timings.grace,
                )
            };
            raft.runtime_config().tick(step.tick);
            if watch.leaderless_since.is_none() {
                standing.remove(&name);
            }
            if step.stand && standing.len() < MAX_STANDING {
                standing.insert(name.clone(), now);
                tracing::debug!(group = %name, "standing for election");
                if let Err(e) = raft.trigger().elect(true).await {
                    tracing::debug!(group = %name, error = %e, "could not stand for election");
                }
            }
        }
    }
}

/// A task that ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every `heartbeat`, pings each broker of `peers` not heard from within it.
async fn ping(links: RaftLinks, peers: BTreeMap<u64, String>, heartbeat: Duration) {
    let mut pings: HashMap<u64, JoinHandle<()>> = HashMap::new();
    let mut interval = tokio::time::interval(heartbeat);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        for (&node, addr) in peers.iter().filter(|(n, _)| **n != links.node_id()) {
            let quiet = links.silent_for(node).is_none_or(|s| s >= heartbeat);
            let pinging = pings.get(&node).is_some_and(|p| !p.is_finished());
            if quiet && !pinging {
                let (links, addr) = (links.clone(), addr.clone());
                let timeout = links.liveness_window();
                pings.insert(
                    node,
                    tokio::spawn(async move {
                        if let Err(e) = links.ping(node, &addr, timeout).await {
                            tracing::trace!(node, error = %e, "no answer to a ping");
                        }
                    }),
                );
            }
        }
    }
}

/// What a replica whose metrics are `m` does this pass (see the module's docs); `rested`: it
/// did not stand for election within the last `grace`.
#[allow(clippy::too_many_arguments)]
fn step(
    m: &openraft::RaftMetrics<PartitionRaft>,
    group: &str,
    links: &RaftLinks,
    watch: &mut Watch,
    now: Instant,
    settled: bool,
    rested: bool,
    grace: Duration,
) -> Step {
    let quiet = Step {
        tick: false,
        stand: false,
    };
    match m.state {
        ServerState::Leader => {
            watch.leaderless_since = None;
            let last = m.last_log_index;
            let all_committed = m.cluster_committed.as_ref().map(|c| c.index) == last;
            let matched = |node: u64| {
                m.replication
                    .as_ref()
                    .and_then(|r| r.get(&node))
                    .and_then(|l| l.as_ref().map(|l| l.index))
                    == last
            };
            let followers_settled = m
                .membership_config
                .membership()
                .voter_ids()
                .filter(|&n| n != m.id)
                .all(|n| !links.is_up(n) || (matched(n) && !links.came_back_within(n, grace)));
            Step {
                tick: !(all_committed && followers_settled),
                stand: false,
            }
        }
        ServerState::Shutdown => quiet,
        ServerState::Follower | ServerState::Learner | ServerState::Candidate => {
            let leader_up = m.state != ServerState::Candidate
                && m.current_leader
                    .is_some_and(|l| l != m.id && links.is_up(l));
            if leader_up || !settled {
                watch.leaderless_since = None;
                return quiet;
            }
            let since = *watch.leaderless_since.get_or_insert(now);
            let attempt =
                u32::try_from(now.duration_since(since).as_millis() / grace.as_millis().max(1))
                    .unwrap_or(u32::MAX);
            let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
            let candidate = candidate(group, &voters, |n| links.is_up(n), attempt);
            Step {
                tick: false,
                stand: candidate == Some(m.id) && rested,
            }
        }
    }
}

/// Which of a leaderless group's `voters` stands for election at its `attempt`-th try: the
/// voters that are up, in an order that starts at a place drawn from the group's name (so
/// that leaders spread over the brokers) and moves on by one each try. Every broker works it
/// out alike, so one replica stands and the votes do not split.
fn candidate(
    group: &str,
    voters: &[u64],
    is_up: impl Fn(u64) -> bool,
    attempt: u32,
) -> Option<u64> {
    let mut up: Vec<u64> = voters.iter().copied().filter(|&n| is_up(n)).collect();
    if up.is_empty() {
        return None;
    }
    up.sort_unstable();
    let mut hasher = DefaultHasher::new();
    group.hash(&mut hasher);
    let start = hasher.finish().wrapping_add(u64::from(attempt));
    let at = usize::try_from(start % up.len() as u64).unwrap_or(0);
    up.get(at).copied()
}

#[cfg(test)]
mod tests {
    use super::candidate;

    #[test]
    fn every_broker_picks_the_same_candidate_among_those_up() {
        let voters = [3, 1, 2];
        let up = |n: u64| n != 2;
        for group in ["orders/0", "orders/1", "payments/7"] {
            let picked = candidate(group, &voters, up, 0);
            assert!(matches!(picked, Some(1 | 3)), "{group}: {picked:?}");
            // Another broker lists the voters in another order: the same pick.
            assert_eq!(candidate(group, &[1, 2, 3], up, 0), picked);
        }
    }

    #[test]
    fn the_next_try_picks_the_next_voter() {
        let voters = [1, 2, 3];
        let first = candidate("t/0", &voters, |_| true, 0).unwrap();
        let second = candidate("t/0", &voters, |_| true, 1).unwrap();
        let third = candidate("t/0", &voters, |_| true, 2).unwrap();
        let mut all = vec![first, second, third];
        all.sort_unstable();
        assert_eq!(all, vec![1, 2, 3]);
        assert_eq!(candidate("t/0", &voters, |_| true, 3), Some(first));
    }

    #[test]
    fn leaders_spread_over_the_voters() {
        let voters = [1, 2, 3];
        let mut counts = [0u32; 3];
        for p in 0..300 {
            let c = candidate(&format!("t/{p}"), &voters, |_| true, 0).unwrap();
            counts[usize::try_from(c - 1).unwrap()] += 1;
        }
        assert!(counts.iter().all(|&c| c > 60), "{counts:?}");
    }

    #[test]
    fn no_candidate_when_none_is_up() {
        assert_eq!(candidate("t/0", &[1, 2, 3], |_| false, 0), None);
    }
}
