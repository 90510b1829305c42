//! The client side of the chaos runs of `tests/chaos_idempotent_producer.rs` (one broker) and
//! `tests/cluster_chaos.rs` (three): one retrying idempotent `Producer` sends 100,000 keyed
//! records to a topic of 6 partitions while a group of 3 member `Consumer`s follows; the
//! brokers are SIGKILLed and restarted at points chosen by counting answered deliveries, and a
//! member crashes; the history goes to `check_exactly_once` (`history.rs`). What the brokers
//! are, and how one is killed, is the test's ([`Brokers`]).
#![allow(dead_code, clippy::unwrap_used)] // a test helper: a failed unwrap is a failed test

use super::history::{Ack, GroupEvent, OnceHistory, redeliveries};
use super::rng::Rng;
use std::{
    collections::{BTreeMap, HashSet},
    fmt::Write as _,
    future::Future,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use strata::client::{
    self, Admin, ClientError, Consumer, ConsumerConfig, ConsumerRecord, Delivery, Producer,
    ProducerConfig, ProducerRecord,
};
use tokio::sync::{mpsc, oneshot, watch};

pub const SEED_ENV: &str = "STRATA_CHAOS_SEED";
/// A file to write the group's events and the test's notes to, for a closer look.
pub const DUMP_ENV: &str = "STRATA_CHAOS_DUMP";
pub const TOPIC: &str = "events";
pub const GROUP: &str = "followers";
pub const PARTITIONS: u32 = 6;
const RECORDS: usize = 100_000;
const KEYS: u64 = 100;
const CONSUMERS: usize = 3;
/// Deliveries sent and not yet awaited, at most.
const IN_FLIGHT: usize = 20_000;
/// A hang guard for every wait; the test never asserts on how long anything took.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The brokers of a run, as the test sets them up.
pub trait Brokers {
    /// Where the producer (and the run's admin calls) connect.
    fn producer_url(&self) -> String;
    /// Where member `i` of the group (and whoever replaces it) connects.
    fn consumer_url(&self, i: usize) -> String;
    /// Kills a broker with SIGKILL (the `kill`th time) and starts it again; what it did, for
    /// the log and the summary.
    fn kill_and_restart(&mut self, kill: usize, rng: &mut Rng) -> impl Future<Output = String>;
    /// Every partition of the topic as read back at the end (checked to be the same on every
    /// broker, if there are several).
    fn read_back(&self) -> impl Future<Output = BTreeMap<u32, Vec<(u64, Vec<u8>)>>>;
    /// Whether offsets may skip (a replicated partition's control batches).
    fn gaps(&self) -> bool;
    /// How many times [`Brokers::kill_and_restart`] is called: spread over answered deliveries
    /// 15,000 to 65,000.
    fn disruptions(&self) -> usize {
        2
    }
}

/// Sends the records, keyed, each value `key-KK/SSSSS/` and a random tail, without waiting for
/// their deliveries: those go to the acker. Returns what it sent, in order: (key, value).
async fn produce(
    url: String,
    deliveries: mpsc::Sender<(Delivery, Vec<u8>)>,
    sends: Arc<AtomicUsize>,
    mut rng: Rng,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let config = ProducerConfig {
        delivery_timeout: Duration::from_secs(60),
        ..ProducerConfig::default()
    };
    assert!(config.idempotent, "the producer is idempotent by default");
    let producer = Producer::new(client::connect(&url).await.unwrap(), TOPIC, config)
        .await
        .unwrap();
    let mut sequences = [0u32; KEYS as usize];
    let mut sent = Vec::with_capacity(RECORDS);
    for _ in 0..RECORDS {
        let k = rng.below(KEYS) as usize;
        let key = format!("key-{k:02}");
        let mut value = format!("{key}/{:05}/", sequences[k]).into_bytes();
        sequences[k] += 1;
        value.resize(value.len() + rng.range(0, 64) as usize, b'.');
        sent.push((key.clone().into_bytes(), value.clone()));
        let record = ProducerRecord::new(value.clone()).key(key);
        let delivery = producer.send(record).await.expect("send");
        sends.fetch_add(1, Ordering::Relaxed);
        deliveries
            .send((delivery, value))
            .await
            .expect("the acker runs");
    }
    producer.close().await;
    sent
}

/// Awaits the deliveries in the order they were sent; counts each answer in `progress`.
/// Returns the acknowledgements and the failures.
async fn ack(
    mut deliveries: mpsc::Receiver<(Delivery, Vec<u8>)>,
    progress: watch::Sender<usize>,
) -> (Vec<Ack>, Vec<String>) {
    let mut acked = Vec::with_capacity(RECORDS);
    let mut failed = Vec::new();
    while let Some((delivery, value)) = deliveries.recv().await {
        match delivery.await {
            Ok(at) => acked.push(Ack {
                topic: TOPIC.to_string(),
                partition: at.partition,
                offset: at.offset,
                value,
            }),
            Err(e) => failed.push(format!("{}: {e}", String::from_utf8_lossy(&value))),
        }
        progress.send_modify(|n| *n += 1);
    }
    (acked, failed)
}

/// What the group's members share: the group's events in order, which records it has seen, and
/// any error that stopped a member.
#[derive(Debug, Default)]
struct GroupLog {
    events: Vec<GroupEvent>,
    distinct: HashSet<(u32, u64)>,
    errors: Vec<String>,
    /// What happened meanwhile, at the index of the next event: for a failure's dump.
    notes: Vec<(usize, String)>,
}

impl GroupLog {
    fn note(&mut self, note: String) {
        self.notes.push((self.events.len(), note));
    }
}

type Log = Arc<Mutex<GroupLog>>;

/// A new member of the group; the broker may be restarting, so a transient failure is retried.
async fn join(url: &str) -> Result<Consumer, String> {
    let started = Instant::now();
    loop {
        let joining = async {
            let channel = client::connect(url).await?;
            // Commits only where the test says (and records).
            let config = ConsumerConfig::group(GROUP).auto_commit(None);
            Consumer::new(channel, TOPIC, config).await
        };
        match joining.await {
            Ok(consumer) => return Ok(consumer),
            Err(e) if e.is_transient() && started.elapsed() < DEADLINE => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("could not join the group: {e}")),
        }
    }
}

/// Commits the consumer's positions; records them once the broker acknowledged the commit. A
/// failure (the broker is restarting, or has not seen the member rejoin yet) is no error: the
/// next commit covers it.
async fn commit(consumer: &mut Consumer, id: usize, log: &Log) {
    let positions = consumer.positions().clone();
    // Unchanged partitions are not sent again: they are committed at these offsets already.
    let result = consumer.commit().await;
    let mut log = log.lock().unwrap();
    if let Err(e) = result {
        log.note(format!("consumer {id} commit of {positions:?} failed: {e}"));
        return;
    }
    for (partition, offset) in positions {
        log.events.push(GroupEvent::Committed {
            consumer: id,
            partition,
            offset,
        });
    }
}

enum Step {
    Record(Result<Option<ConsumerRecord>, ClientError>),
    Crash,
    Stop,
}

/// One member of the group, from joining until `stop`; on `crash` it is dropped without
/// committing and a new member takes its place. Every record handed out and every acknowledged
/// commit goes into the log.
async fn follow(
    url: String,
    ids: Arc<AtomicUsize>,
    log: Log,
    mut stop: watch::Receiver<bool>,
    mut crash: Option<oneshot::Receiver<()>>,
    crashed: Arc<AtomicBool>,
    mut rng: Rng,
) -> Result<(), String> {
    let mut consumer = join(&url).await?;
    let mut id = ids.fetch_add(1, Ordering::Relaxed);
    let mut held = consumer.positions().clone();
    log.lock()
        .unwrap()
        .note(format!("consumer {id} joined at {held:?}"));
    let mut every = rng.range(100, 3000);
    let mut since_commit = 0;
    let mut crashing = false;
    loop {
        let step = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => Step::Stop,
            Ok(()) = async { crash.as_mut().unwrap().await }, if crash.is_some() => Step::Crash,
            r = consumer.next() => Step::Record(r),
        };
        match step {
            Step::Record(Ok(Some(r))) => {
                let mut log = log.lock().unwrap();
                if !consumer.positions().keys().eq(held.keys()) {
                    let before = std::mem::replace(&mut held, consumer.positions().clone());
                    log.note(format!(
                        "consumer {id} held {before:?}, now {:?} (before handing out {}@{})",
                        held, r.partition, r.offset
                    ));
                }
                log.distinct.insert((r.partition, r.offset));
                log.events.push(GroupEvent::Seen {
                    consumer: id,
                    partition: r.partition,
                    offset: r.offset,
                    value: r.value.to_vec(),
                });
            }
            Step::Record(Ok(None)) => return Err(format!("consumer {id}: the consumer ended")),
            Step::Record(Err(e)) => return Err(format!("consumer {id}: {e}")),
            Step::Crash => {
                crash = None;
                crashing = true;
                continue;
            }
            Step::Stop => {
                // `close` commits, then leaves.
                let positions = consumer.positions().clone();
                let closing = tokio::time::timeout(DEADLINE, consumer.close()).await;
                if matches!(closing, Ok(Ok(()))) {
                    let mut log = log.lock().unwrap();
                    for (partition, offset) in positions {
                        log.events.push(GroupEvent::Committed {
                            consumer: id,
                            partition,
                            offset,
                        });
                    }
                }
                return Ok(());
            }
        }
        since_commit += 1;
        if crashing {
            // Right after handing out a record, before any commit: the group must read it again.
            crashing = false;
            crashed.store(true, Ordering::Relaxed);
            log.lock().unwrap().note(format!(
                "consumer {id} crashes at {:?}",
                consumer.positions()
            ));
            drop(consumer);
            consumer = join(&url).await?;
            id = ids.fetch_add(1, Ordering::Relaxed);
            held = consumer.positions().clone();
            log.lock()
                .unwrap()
                .note(format!("consumer {id} joined at {held:?}"));
            since_commit = 0;
            continue;
        }
        if since_commit >= every {
            commit(&mut consumer, id, &log).await;
            since_commit = 0;
            every = rng.range(100, 3000);
        }
    }
}

/// Writes the group's events, with the notes among them, one a line.
fn dump(name: &str, path: &str, h: &OnceHistory, notes: &[(usize, String)]) {
    let mut out = String::new();
    let mut notes = notes.iter().peekable();
    for (i, e) in h.group.iter().enumerate() {
        while let Some((_, n)) = notes.next_if(|(at, _)| *at <= i) {
            let _ = writeln!(out, "# {n}");
        }
        let _ = match e {
            GroupEvent::Seen {
                consumer,
                partition,
                offset,
                ..
            } => writeln!(out, "{i} seen c{consumer} {partition}@{offset}"),
            GroupEvent::Committed {
                consumer,
                partition,
                offset,
            } => writeln!(out, "{i} committed c{consumer} {partition}@{offset}"),
        };
    }
    for (_, n) in notes {
        let _ = writeln!(out, "# {n}");
    }
    std::fs::write(path, out).unwrap();
    println!("{name}: the group's events are in {path}");
}

/// Waits (with the hang guard) until `progress` reaches `target` answered deliveries.
async fn answered(progress: &mut watch::Receiver<usize>, target: usize) -> usize {
    let reached = tokio::time::timeout(DEADLINE, progress.wait_for(|n| *n >= target))
        .await
        .unwrap_or_else(|_| panic!("fewer than {target} deliveries answered"));
    *reached.unwrap()
}

/// One run against `brokers`, whose topic [`TOPIC`] (of [`PARTITIONS`]) exists: everything
/// in the module doc, then the checks. `name` heads what it prints.
pub async fn run<B: Brokers>(name: &str, brokers: &mut B) {
    let seed = super::rng::seed_from_env(SEED_ENV);
    println!("{name}: seed {seed} (replay: {SEED_ENV}={seed})");
    let started = Instant::now();
    let mut rng = Rng::new(seed);
    let disruptions = brokers.disruptions();
    let kill_at: Vec<usize> = (0..disruptions)
        .map(|i| {
            let low = 15_000 + i as u64 * 40_000 / (disruptions as u64 - 1).max(1);
            rng.range(low, low + 10_000) as usize
        })
        .collect();
    let crash_at = rng.range(70_000, 90_000) as usize;
    let crashing = rng.below(CONSUMERS as u64) as usize;
    let url = brokers.producer_url();

    let log: Log = Arc::default();
    let ids = Arc::new(AtomicUsize::new(0));
    let crashed = Arc::new(AtomicBool::new(false));
    let (stop, stopped) = watch::channel(false);
    let mut crash = None;
    let mut consumers = Vec::new();
    for i in 0..CONSUMERS {
        let victim = (i == crashing).then(|| {
            let (tx, rx) = oneshot::channel();
            crash = Some(tx);
            rx
        });
        let task = follow(
            brokers.consumer_url(i),
            ids.clone(),
            log.clone(),
            stopped.clone(),
            victim,
            crashed.clone(),
            rng.fork(),
        );
        consumers.push(tokio::spawn(task));
    }

    // The group settles before anything is produced: every member holds its share.
    let admin = Admin::new(client::connect(&url).await.unwrap());
    let settling = Instant::now();
    loop {
        // NOT_FOUND until the first member joined.
        let g = admin.describe_group(GROUP).await;
        if g.as_ref().is_ok_and(|g| {
            g.state == "stable"
                && g.members.len() == CONSUMERS
                && g.members.iter().all(|m| !m.assignment.is_empty())
        }) {
            break;
        }
        assert!(
            settling.elapsed() < DEADLINE,
            "the group never settled: {g:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let settled_in = settling.elapsed();

    let (deliveries, to_ack) = mpsc::channel(IN_FLIGHT);
    let (progress, mut watched) = watch::channel(0usize);
    let sends = Arc::new(AtomicUsize::new(0));
    let producer = tokio::spawn(produce(url.clone(), deliveries, sends.clone(), rng.fork()));
    let acker = tokio::spawn(ack(to_ack, progress));

    let mut kills = Vec::new();
    for (kill, target) in kill_at.into_iter().enumerate() {
        let at = answered(&mut watched, target).await;
        let what = brokers.kill_and_restart(kill, &mut rng).await;
        // Sent and not answered yet (some answered, not yet counted): their batches go again.
        let in_flight = sends.load(Ordering::Relaxed) - at;
        log.lock()
            .unwrap()
            .note(format!("{what} at {at} answers, {in_flight} in flight"));
        kills.push((what, at, in_flight));
    }
    // A member crashes, after both kills and with the group settled again: the group must read
    // its uncommitted records again.
    answered(&mut watched, crash_at).await;
    crash.take().unwrap().send(()).unwrap();
    let sent = tokio::time::timeout(DEADLINE, producer)
        .await
        .expect("the producer did not finish")
        .unwrap();
    let (acked, failed) = tokio::time::timeout(DEADLINE, acker)
        .await
        .expect("the deliveries did not all end")
        .unwrap();
    let produced_in = started.elapsed();
    assert!(
        failed.is_empty(),
        "{} of {RECORDS} deliveries failed (seed {seed}), the first: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert_eq!(acked.len(), RECORDS, "every delivery is answered");

    // The group catches up on every record (the checker says what it missed, if it did not).
    // Counted from the acknowledgements, each of a record stored once (else the checker says
    // so): a replicated partition's offsets also number control batches no one is handed.
    let total = acked.len() as u64;
    let waiting = Instant::now();
    loop {
        let (seen, errors) = {
            let log = log.lock().unwrap();
            (log.distinct.len() as u64, log.errors.clone())
        };
        assert!(errors.is_empty(), "a consumer stopped: {errors:?}");
        if seen >= total || waiting.elapsed() > DEADLINE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.send(true).unwrap();
    for c in consumers {
        let ended = tokio::time::timeout(DEADLINE, c)
            .await
            .expect("a consumer did not stop")
            .unwrap();
        if let Err(e) = ended {
            log.lock().unwrap().errors.push(e);
        }
    }

    let mut history = OnceHistory {
        topic: TOPIC.to_string(),
        sent,
        acked,
        stored: brokers.read_back().await,
        gaps: brokers.gaps(),
        ..OnceHistory::default()
    };
    let log = std::mem::take(&mut *log.lock().unwrap());
    history.group = log.events;
    if let Ok(path) = std::env::var(DUMP_ENV) {
        dump(name, &path, &history, &log.notes);
    }
    let stored_records: usize = history.stored.values().map(Vec::len).sum();
    let commits = history
        .group
        .iter()
        .filter(|e| matches!(e, GroupEvent::Committed { .. }))
        .count();
    let again = redeliveries(&history);
    let crashed = crashed.load(Ordering::Relaxed);
    println!(
        "{name}: seed {seed}, {:.1?} (group settled in {settled_in:.1?}, \
         produced by {produced_in:.1?}): {kills:?} (what, answered, in flight), consumer \
         {crashing} {} at {crash_at}; {} sent, {} acknowledged, {stored_records} stored, {} \
         handed out ({again} again), {commits} partition commits acknowledged, {} members",
        started.elapsed(),
        if crashed { "crashed" } else { "told to crash" },
        history.sent.len(),
        history.acked.len(),
        history.group.len() - commits,
        ids.load(Ordering::Relaxed),
    );
    assert!(
        log.errors.is_empty(),
        "a consumer stopped: {:?}",
        log.errors
    );
    let bad = history.check();
    assert!(
        bad.is_empty(),
        "{} violations (seed {seed}), first ones:\n{}",
        bad.len(),
        bad.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    // It crashed right after handing out a record it did not commit: at least that one the
    // group read again.
    assert!(
        !crashed || again > 0,
        "consumer {crashing} crashed with a record uncommitted, and the group never read it again"
    );
}
