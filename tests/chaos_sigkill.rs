//! Chaos: a real `strata serve` is SIGKILLed at random moments while producers write to durable
//! topics (fsync always) and consumers in groups read and commit; it restarts on the same data
//! directory, round after round. The moments are chosen by counting acknowledgements and commits,
//! never by the clock.
//!
//! Everything the clients observe goes into a [`History`] (`tests/common/history.rs`). After the
//! last round the broker runs once more without a kill, the consumers catch up, and every
//! partition is read back; the history's checker then verifies that every acknowledged record
//! survived once at its offset, with no gap, duplicate or invented value, that committed offsets
//! never went back, and that every consumer resumed at its group's commit and saw every record
//! (the full list is in `history.rs`, and its own tests in `chaos_history_checker.rs`).
//!
//! `cargo test --test chaos_sigkill` runs a short version (12 rounds). `STRATA_CHAOS_ROUNDS=N`
//! sets the round count, `--ignored` runs the long version (40 rounds), and
//! `STRATA_CHAOS_SEED=S` replays a seed: it fixes the kill points, burst sizes, routing and
//! commit intervals, though not how the threads interleave.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::history::{Ack, History, Restart, Session, Shared};
use common::rng::Rng;
use common::{Server, stored};
use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};
use strata::client::{
    self, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicSettings,
};
use tokio::{sync::watch, task::JoinHandle};

const ROUNDS_ENV: &str = "STRATA_CHAOS_ROUNDS";
const SEED_ENV: &str = "STRATA_CHAOS_SEED";
const SHORT_ROUNDS: usize = 12;
const LONG_ROUNDS: usize = 40;

/// The topics and their partition counts. `orders` has small segments so that kills also land
/// in rolls and checkpoints.
const TOPICS: [(&str, u32, Option<u64>); 2] = [("orders", 3, Some(16 * 1024)), ("clicks", 2, None)];
const PRODUCERS: usize = 4;
/// A hang guard for every wait; the test never asserts on how long anything took.
const DEADLINE: Duration = Duration::from_secs(120);

/// A consumer: a group member following some partitions of one topic.
#[derive(Debug, Clone)]
struct ConsumerSpec {
    group: &'static str,
    topic: &'static str,
    partitions: Vec<u32>,
}

/// Two members of `billing` split `orders`; `audit` reads all of `orders` on its own; `stats`
/// reads `clicks`.
fn consumer_specs() -> Vec<ConsumerSpec> {
    vec![
        ConsumerSpec {
            group: "billing",
            topic: "orders",
            partitions: vec![0, 1],
        },
        ConsumerSpec {
            group: "billing",
            topic: "orders",
            partitions: vec![2],
        },
        ConsumerSpec {
            group: "audit",
            topic: "orders",
            partitions: vec![0, 1, 2],
        },
        ConsumerSpec {
            group: "stats",
            topic: "clicks",
            partitions: vec![0, 1],
        },
    ]
}

/// What the kill waits for.
#[derive(Debug, Default, Clone, Copy)]
struct Progress {
    acks: u64,
    commits: u64,
}

/// What every client task of a round shares.
#[derive(Clone)]
struct Round {
    number: usize,
    url: String,
    history: Shared,
    progress: Arc<watch::Sender<Progress>>,
    /// Set right after the kill: producers stop instead of reconnecting.
    stop: Arc<AtomicBool>,
}

/// Produces bursts of uniquely valued records to `topic` until the broker dies or `stop` is set;
/// records every acknowledgement. Returns the next sequence number.
async fn produce(round: Round, topic: &'static str, id: usize, mut seq: u64, mut rng: Rng) -> u64 {
    let Round {
        url,
        history,
        progress,
        stop,
        ..
    } = round;
    let Ok(channel) = client::connect(&url).await else {
        return seq;
    };
    let config = ProducerConfig {
        // Small batches keep every batch well inside `orders`'s 16 KiB segments.
        max_batch_bytes: 4096,
        // Batches are stamped (idempotent), but a failed one is not retried: the producer ends
        // at the kill (tests/chaos_idempotent_producer.rs is the one whose producer retries).
        max_retries: 0,
        ..ProducerConfig::default()
    };
    let Ok(producer) = Producer::new(channel, topic, config).await else {
        return seq;
    };
    while !stop.load(Ordering::Acquire) {
        let burst = rng.range(1, 30);
        let mut deliveries = Vec::new();
        for _ in 0..burst {
            let mut value = format!("{topic}/p{id}/{seq:08}/").into_bytes();
            seq += 1;
            value.resize(value.len() + rng.range(0, 200) as usize, b'x');
            // Explicit partition, by key, or keyless (sticky).
            let record = ProducerRecord::new(value.clone());
            let record = match rng.range(0, 2) {
                0 => record.partition(rng.range(0, u64::from(producer.partitions()) - 1) as u32),
                1 => record.key(format!("k{}", rng.range(0, 15))),
                _ => record,
            };
            history.lock().unwrap().produced.insert(value.clone());
            match producer.send(record).await {
                Ok(delivery) => deliveries.push((delivery, value)),
                Err(_) => return seq,
            }
        }
        let mut failed = false;
        for (delivery, value) in deliveries {
            match delivery.await {
                Ok(at) => {
                    history.lock().unwrap().acked.push(Ack {
                        topic: topic.to_string(),
                        partition: at.partition,
                        offset: at.offset,
                        value,
                    });
                    progress.send_modify(|p| p.acks += 1);
                }
                Err(_) => failed = true,
            }
        }
        if failed {
            break;
        }
    }
    seq
}

/// How a consumer's round ends.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// When the broker dies.
    Killed,
    /// Once it has read up to these next offsets (the final round, nothing is produced).
    CaughtUp,
}

/// Resumes `spec`'s group, reads and commits every few records until `until`; records the session.
async fn consume(round: Round, index: usize, spec: ConsumerSpec, until: Until, mut rng: Rng) {
    let mut session = Session {
        consumer: index,
        round: round.number,
        group: spec.group.to_string(),
        topic: spec.topic.to_string(),
        ..Session::default()
    };
    run_consumer(&round, &spec, until, &mut rng, &mut session).await;
    round.history.lock().unwrap().sessions.push(session);
}

async fn run_consumer(
    round: &Round,
    spec: &ConsumerSpec,
    until: Until,
    rng: &mut Rng,
    session: &mut Session,
) {
    let Round {
        url,
        history,
        progress,
        ..
    } = round;
    let Ok(channel) = client::connect(url).await else {
        return;
    };
    let ends: BTreeMap<u32, u64> = match until {
        Until::Killed => BTreeMap::new(),
        Until::CaughtUp => Admin::new(channel.clone())
            .describe_topic(spec.topic)
            .await
            .unwrap()
            .partitions
            .iter()
            .map(|p| (p.partition, p.next_offset))
            .collect(),
    };
    // A session ends with the broker it started on (the next round starts a new one), so it
    // does not ride out the kill.
    let config = ConsumerConfig::group(spec.group)
        .partitions(spec.partitions.clone())
        .auto_commit(None)
        .reconnect_for(Some(Duration::ZERO));
    let Ok(mut consumer) = Consumer::new(channel, spec.topic, config).await else {
        return;
    };
    session.starts = consumer.positions().clone();
    let caught_up = |c: &Consumer| {
        matches!(until, Until::CaughtUp)
            && c.positions().iter().all(|(p, o)| ends.get(p) <= Some(o))
    };
    loop {
        let mut read = rng.range(1, 40);
        while read > 0 && !caught_up(&consumer) {
            match consumer.next().await {
                Ok(Some(r)) => session.seen.push((r.partition, r.offset, r.value.to_vec())),
                Ok(None) | Err(_) => return,
            }
            read -= 1;
        }
        let positions = consumer.positions().clone();
        let record = |acknowledged| {
            history.lock().unwrap().record_commits(
                session.round,
                spec.group,
                spec.topic,
                &positions,
                acknowledged,
            );
        };
        record(false);
        if consumer.commit().await.is_err() {
            return;
        }
        record(true);
        progress.send_modify(|p| p.commits += 1);
        if caught_up(&consumer) {
            return;
        }
    }
}

/// Reads every group's committed offsets right after a (re)start.
async fn record_restart(url: &str, round: usize, history: &Shared) {
    let admin = Admin::new(client::connect(url).await.unwrap());
    let mut seen = HashSet::new();
    for spec in consumer_specs() {
        if !seen.insert((spec.group, spec.topic)) {
            continue;
        }
        let committed = admin
            .committed_offsets(spec.group, spec.topic)
            .await
            .unwrap();
        let partitions = TOPICS.iter().find(|t| t.0 == spec.topic).unwrap().1;
        let mut h = history.lock().unwrap();
        for partition in 0..partitions {
            h.restarts.push(Restart {
                round,
                group: spec.group.to_string(),
                topic: spec.topic.to_string(),
                partition,
                offset: committed.get(&partition).copied(),
            });
        }
    }
}

async fn join_all(tasks: Vec<JoinHandle<()>>, what: &str) {
    for t in tasks {
        tokio::time::timeout(DEADLINE, t)
            .await
            .unwrap_or_else(|_| panic!("{what} did not end after the broker stopped"))
            .unwrap();
    }
}

fn rounds(default: usize) -> usize {
    std::env::var(ROUNDS_ENV).map_or(default, |s| {
        s.parse().expect("STRATA_CHAOS_ROUNDS is a count")
    })
}

/// Runs `rounds` kill rounds and the final one, then checks the history.
async fn chaos(rounds: usize) {
    let seed = common::rng::seed_from_env(SEED_ENV);
    println!(
        "chaos: {rounds} rounds, seed {seed} (replay: {SEED_ENV}={seed} {ROUNDS_ENV}={rounds})"
    );
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let history: Shared = Arc::new(Mutex::new(History::new(
        consumer_specs()
            .iter()
            .map(|s| (s.topic.to_string(), s.partitions.clone()))
            .collect(),
    )));
    let mut seqs = [0u64; PRODUCERS];
    let mut kills = Vec::new();

    for round in 0..=rounds {
        let server = Server::start(dir.path());
        let url = server.url();
        if round == 0 {
            let admin = Admin::new(client::connect(&url).await.unwrap());
            for (name, partitions, segment_max_bytes) in TOPICS {
                let settings = TopicSettings {
                    segment_max_bytes,
                    ..TopicSettings::default()
                };
                admin
                    .create_topic(name, partitions, &settings)
                    .await
                    .unwrap();
            }
        }
        record_restart(&url, round, &history).await;
        let (progress, mut watched) = watch::channel(Progress::default());
        let ctx = Round {
            number: round,
            url: url.clone(),
            history: history.clone(),
            progress: Arc::new(progress),
            stop: Arc::default(),
        };

        if round == rounds {
            // The final round: no producer, no kill; every consumer catches up.
            let mut tasks = Vec::new();
            for (i, spec) in consumer_specs().into_iter().enumerate() {
                let task = consume(ctx.clone(), i, spec, Until::CaughtUp, rng.fork());
                tasks.push(tokio::spawn(task));
            }
            join_all(tasks, "a catching-up consumer").await;
            let mut client = server.client().await;
            for (topic, partitions, _) in TOPICS {
                for partition in 0..partitions {
                    let stored = stored(&mut client, topic, partition).await;
                    history
                        .lock()
                        .unwrap()
                        .stored
                        .insert((topic.to_string(), partition), stored);
                }
            }
            break;
        }

        // Kill after a number of acknowledged records, or now and then after a number of
        // acknowledged commits.
        let ack_target = rng.range(20, 600);
        let commit_target = (rng.range(0, 3) == 0).then(|| rng.range(1, 30));
        let mut producers = Vec::new();
        for (id, seq) in seqs.iter().enumerate() {
            let topic = TOPICS[id % TOPICS.len()].0;
            let task = produce(ctx.clone(), topic, id, *seq, rng.fork());
            producers.push(tokio::spawn(task));
        }
        let mut consumers = Vec::new();
        for (i, spec) in consumer_specs().into_iter().enumerate() {
            let task = consume(ctx.clone(), i, spec, Until::Killed, rng.fork());
            consumers.push(tokio::spawn(task));
        }
        let reached = tokio::time::timeout(
            DEADLINE,
            watched.wait_for(|p| {
                p.acks >= ack_target || commit_target.is_some_and(|c| p.commits >= c)
            }),
        )
        .await
        .expect("the clients made no progress")
        .map(|p| *p)
        .unwrap();
        server.kill();
        ctx.stop.store(true, Ordering::Release);
        kills.push(reached);
        for (seq, p) in seqs.iter_mut().zip(producers) {
            *seq = tokio::time::timeout(DEADLINE, p)
                .await
                .expect("a producer did not end after the kill")
                .unwrap();
        }
        join_all(consumers, "a consumer").await;
    }

    let h = history.lock().unwrap();
    let records: usize = h.stored.values().map(Vec::len).sum();
    let mut summary = String::new();
    for k in &kills {
        let _ = write!(summary, " {}a/{}c", k.acks, k.commits);
    }
    println!(
        "chaos: {rounds} rounds in {:.1?}, seed {seed}: {} sent, {} acknowledged, {records} \
         stored, {} partition commits attempted, {} records consumed; killed at{summary}",
        started.elapsed(),
        h.produced.len(),
        h.acked.len(),
        h.commits.iter().filter(|c| !c.acknowledged).count(),
        h.sessions.iter().map(|s| s.seen.len()).sum::<usize>(),
    );
    assert!(!h.acked.is_empty(), "nothing was acknowledged");
    let bad = h.check();
    assert!(
        bad.is_empty(),
        "{} violations (seed {seed}, {rounds} rounds), first ones:\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_and_commits_survive_repeated_sigkill() {
    chaos(rounds(SHORT_ROUNDS)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "long: 40 kill rounds; run with --ignored"]
async fn acknowledged_records_and_commits_survive_many_sigkills() {
    chaos(rounds(LONG_ROUNDS)).await;
}
