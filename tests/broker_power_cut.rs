//! Power cuts: random workloads (produces under each fsync policy, group commits and their
//! journal compactions, rolls, retention, ticks, topic create and delete, restarts) run on a
//! broker whose every file operation goes through the power-cut simulator
//! (`tests/common/power_cut.rs`). At random file events a data directory is written out as the
//! kernel could leave it after a power cut, then opened by a fresh broker, which must open every
//! time, with no topic or group offline, and must hold:
//! - under `fsync always`, every acknowledged record at its offset; every acknowledged commit;
//! - under every policy, only records that were written, at their offsets, with no gap;
//! - no acknowledged topic missing, no acknowledged delete undone.
//!
//! `STRATA_POWER_CUT_ROUNDS` (default 2) and `STRATA_POWER_CUT_SEED` set the run; the seed is
//! printed, and a failure names the round, the cut and the file event it was taken at.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod power_cut;
    pub mod rng;
}

use bytes::Bytes;
use common::power_cut::PowerCut;
use common::rng::Rng;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, Mutex},
    time::Duration,
};
use strata::broker::{
    Broker, BrokerConfig, BrokerError, CommittedOffset, FsyncMode, ProduceInput, TopicConfigUpdate,
};
use strata::record::{Frame, Record, decode_frame};

const TOPIC_NAMES: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const GROUPS: [&str; 2] = ["billing", "audit"];
const OPS_PER_ROUND: usize = 160;
/// One file event in this many is a cut.
const CUT_ONE_IN: u64 = 12;

#[derive(Debug, Clone)]
struct TopicExpect {
    fsync: FsyncMode,
    /// Per partition, the value of every record written, by offset (acknowledged, plus the
    /// produce in flight if there is one).
    written: Vec<Vec<Vec<u8>>>,
    /// Per partition, how many of `written` were acknowledged.
    acked: Vec<usize>,
    /// Per partition, the earliest offset after the last finished operation.
    earliest: Vec<u64>,
}

#[derive(Debug, Clone, PartialEq)]
enum InFlight {
    None,
    Produce(String),
    Commit(String),
    Create(String),
    Delete(String),
    Tick,
    Restart,
}

#[derive(Debug, Clone)]
struct Expect {
    topics: BTreeMap<String, TopicExpect>,
    /// Topics whose delete was acknowledged (and not created again since).
    deleted: BTreeSet<String>,
    /// Acknowledged commits: group -> (topic, partition) -> offset.
    groups: BTreeMap<String, BTreeMap<(String, u32), u64>>,
    in_flight: InFlight,
}

type Cut = common::power_cut::Cut<Expect>;

fn config(dir: &Path, sim: Option<&Arc<PowerCut>>) -> BrokerConfig {
    let mut c = BrokerConfig::new(dir);
    // The workload ticks by hand, so that a seed replays the same run.
    c.tick_interval = Duration::from_secs(3600);
    c.group_compact_entries = 6;
    c.cached_tail_bytes = None;
    c.faults = sim.map(PowerCut::as_injector);
    c
}

fn value(rng: &mut Rng, topic: &str, partition: u32, offset: usize) -> Vec<u8> {
    let mut v = format!("{topic}/{partition}/{offset}/").into_bytes();
    let extra = rng.below(400) as usize;
    v.extend((0..extra).map(|i| (i as u8).wrapping_mul(31).wrapping_add(offset as u8)));
    v
}

fn record(v: &[u8]) -> Record {
    Record {
        key: None,
        value: Bytes::copy_from_slice(v),
        headers: Vec::new(),
        timestamp_ms: 1_700_000_000_000,
    }
}

/// One random operation on the broker, with `expect` kept up to date.
fn step(
    slot: &mut Option<Arc<Broker>>,
    data: &Path,
    sim: &Arc<PowerCut>,
    rng: &mut Rng,
    expect: &Arc<Mutex<Expect>>,
) {
    let set = |f: InFlight| expect.lock().unwrap().in_flight = f;
    let broker = slot.as_ref().unwrap().clone();
    let live: Vec<String> = expect.lock().unwrap().topics.keys().cloned().collect();
    let roll = rng.below(100);
    if live.is_empty() || (roll < 8 && live.len() < 3) {
        let free: Vec<&str> = TOPIC_NAMES
            .iter()
            .copied()
            .filter(|n| !live.iter().any(|l| l == n))
            .collect();
        let name = free[rng.below(free.len() as u64) as usize].to_owned();
        let fsync =
            [FsyncMode::Always, FsyncMode::Interval, FsyncMode::Never][rng.below(3) as usize];
        let partitions = 1 + rng.below(2) as u32;
        let update = TopicConfigUpdate {
            fsync: Some(fsync),
            fsync_interval_ms: Some(1),
            segment_max_bytes: Some(4096),
            retention_bytes: Some(rng.one_in(2).then_some(12 * 1024)),
            ..TopicConfigUpdate::default()
        };
        set(InFlight::Create(name.clone()));
        broker.create_topic(&name, partitions, &update).unwrap();
        let mut e = expect.lock().unwrap();
        e.deleted.remove(&name);
        e.topics.insert(
            name,
            TopicExpect {
                fsync,
                written: vec![Vec::new(); partitions as usize],
                acked: vec![0; partitions as usize],
                earliest: vec![0; partitions as usize],
            },
        );
        e.in_flight = InFlight::None;
        return;
    }
    let topic = live[rng.below(live.len() as u64) as usize].clone();
    let partitions = expect.lock().unwrap().topics[&topic].written.len() as u32;
    let partition = rng.below(u64::from(partitions)) as u32;
    match roll {
        8..=57 => {
            let count = 1 + rng.below(8) as usize;
            let values: Vec<Vec<u8>> = {
                let mut e = expect.lock().unwrap();
                let t = e.topics.get_mut(&topic).unwrap();
                let first = t.written[partition as usize].len();
                let values: Vec<Vec<u8>> = (0..count)
                    .map(|i| value(rng, &topic, partition, first + i))
                    .collect();
                t.written[partition as usize].extend(values.iter().cloned());
                e.in_flight = InFlight::Produce(topic.clone());
                values
            };
            let records = values.iter().map(|v| record(v)).collect();
            let produced = broker
                .produce(&topic, Some(partition), ProduceInput::Records(records))
                .unwrap();
            let mut e = expect.lock().unwrap();
            let t = e.topics.get_mut(&topic).unwrap();
            assert_eq!(
                produced[0].base_offset as usize,
                t.acked[partition as usize]
            );
            t.acked[partition as usize] += count;
            e.in_flight = InFlight::None;
        }
        58..=74 => {
            let group = GROUPS[rng.below(2) as usize];
            let (_, parts) = broker.describe_topic(&topic).unwrap();
            let stats = parts[partition as usize].stats;
            let offset =
                stats.earliest_offset + rng.below(stats.next_offset - stats.earliest_offset + 1);
            set(InFlight::Commit(group.to_owned()));
            broker
                .commit_offsets(
                    group,
                    None,
                    vec![CommittedOffset {
                        topic: topic.clone(),
                        partition,
                        offset,
                    }],
                )
                .unwrap();
            let mut e = expect.lock().unwrap();
            e.groups
                .entry(group.to_owned())
                .or_default()
                .insert((topic, partition), offset);
            e.in_flight = InFlight::None;
        }
        75..=86 => {
            set(InFlight::Tick);
            broker.tick(strata::broker::now_ms());
            set(InFlight::None);
        }
        87..=92 => {
            set(InFlight::Delete(topic.clone()));
            broker.delete_topic(&topic).unwrap();
            let mut e = expect.lock().unwrap();
            e.topics.remove(&topic);
            for offsets in e.groups.values_mut() {
                offsets.retain(|(t, _), _| *t != topic);
            }
            e.deleted.insert(topic);
            e.in_flight = InFlight::None;
        }
        _ => {
            set(InFlight::Restart);
            broker.close().unwrap();
            drop(broker);
            // The data directory's lock goes with the last reference.
            *slot = None;
            *slot = Some(Broker::open(config(data, Some(sim))).unwrap());
            set(InFlight::None);
            return;
        }
    }
    // Retention may have moved the earliest offsets.
    let mut e = expect.lock().unwrap();
    for (name, t) in &mut e.topics {
        let (_, parts) = broker.describe_topic(name).unwrap();
        for p in parts {
            t.earliest[p.partition as usize] = p.stats.earliest_offset;
        }
    }
}

/// Opens the cut's data directory and checks it against what was acknowledged.
fn verify(cut: &Cut) -> Result<(), String> {
    let broker = Broker::open(config(&cut.dir, None))
        .map_err(|e| format!("the broker does not open: {e}"))?;
    let e = &cut.expect;
    let result = check(&broker, e);
    broker.close().map_err(|e| format!("close: {e}"))?;
    result
}

fn check(broker: &Broker, e: &Expect) -> Result<(), String> {
    let listed: BTreeSet<String> = broker
        .list_topics()
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|t| t.name)
        .collect();
    for name in TOPIC_NAMES {
        let expected = e.topics.contains_key(name);
        let in_flight =
            matches!(&e.in_flight, InFlight::Create(t) | InFlight::Delete(t) if t == name);
        match broker.describe_topic(name) {
            Err(BrokerError::TopicNotFound { .. }) if !expected || in_flight => {}
            Err(err) => return Err(format!("topic {name}: {err}")),
            Ok(_) if !expected && !in_flight => {
                return Err(format!(
                    "topic {name} is back (acknowledged delete: {})",
                    e.deleted.contains(name)
                ));
            }
            Ok(_) => {}
        }
        if expected != listed.contains(name) && !in_flight {
            return Err(format!(
                "topic {name}: listed {}, expected {expected}",
                listed.contains(name)
            ));
        }
    }
    for (name, t) in &e.topics {
        if !listed.contains(name) {
            continue; // a delete in flight
        }
        let (_, parts) = broker.describe_topic(name).map_err(|e| e.to_string())?;
        for p in parts {
            let i = p.partition as usize;
            let (earliest, next) = (p.stats.earliest_offset, p.stats.next_offset);
            if earliest > t.earliest[i] && e.in_flight != InFlight::Tick {
                return Err(format!(
                    "{name}/{i}: earliest offset {earliest}, was {}: records lost before retention took them",
                    t.earliest[i]
                ));
            }
            if t.fsync == FsyncMode::Always && (next as usize) < t.acked[i] {
                return Err(format!(
                    "{name}/{i} (fsync always): next offset {next}, but {} records were acknowledged",
                    t.acked[i]
                ));
            }
            if next as usize > t.written[i].len() {
                return Err(format!(
                    "{name}/{i}: next offset {next}, but only {} records were written",
                    t.written[i].len()
                ));
            }
            let handle = broker
                .partition(name, p.partition)
                .map_err(|e| e.to_string())?;
            let mut at = earliest;
            while at < next {
                let chunk = handle
                    .read(at, 1 << 20)
                    .map_err(|e| format!("{name}/{i} read at {at}: {e}"))?;
                let mut buf = &chunk.batches[..];
                while !buf.is_empty() {
                    let Frame::Batch(batch) = decode_frame(buf) else {
                        return Err(format!(
                            "{name}/{i}: a read returned something that is not a batch"
                        ));
                    };
                    for r in batch.records() {
                        let r = r.map_err(|e| format!("{name}/{i}: {e:?}"))?;
                        if r.offset < at {
                            continue;
                        }
                        if r.offset != at {
                            return Err(format!(
                                "{name}/{i}: offset {} where {at} was due",
                                r.offset
                            ));
                        }
                        if r.value != t.written[i][at as usize].as_slice() {
                            return Err(format!(
                                "{name}/{i}: offset {at} holds a value that was never written there"
                            ));
                        }
                        at += 1;
                    }
                    buf = &buf[batch.bytes().len()..];
                }
                if chunk.batches.is_empty() {
                    return Err(format!(
                        "{name}/{i}: an empty read at {at} below the high watermark {next}"
                    ));
                }
            }
        }
    }
    for (group, offsets) in &e.groups {
        if e.in_flight == InFlight::Commit(group.clone()) {
            continue;
        }
        for ((topic, partition), offset) in offsets {
            if !listed.contains(topic) {
                continue;
            }
            let committed = broker
                .committed_offsets(group, topic)
                .map_err(|e| format!("group {group}: {e}"))?;
            let found = committed
                .iter()
                .find(|c| c.partition == *partition)
                .map(|c| c.offset);
            if found != Some(*offset) {
                return Err(format!(
                    "group {group} {topic}/{partition}: committed {found:?}, acknowledged {offset}"
                ));
            }
        }
    }
    Ok(())
}

#[test]
fn acknowledged_writes_survive_any_power_cut_and_the_broker_always_opens() {
    let rounds: usize = std::env::var("STRATA_POWER_CUT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let seed: u64 = std::env::var("STRATA_POWER_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| strata::broker::now_ms().unsigned_abs());
    println!(
        "power-cut simulation: seed {seed} (STRATA_POWER_CUT_SEED={seed} replays it), {rounds} rounds"
    );
    let mut cuts_total = 0;
    let mut events_total = 0;
    let mut signatures = BTreeSet::new();
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let cuts_dir = tmp.path().join("cuts");
        std::fs::create_dir(&cuts_dir).unwrap();
        let sim = PowerCut::new(&data);
        let expect = Arc::new(Mutex::new(Expect {
            topics: BTreeMap::new(),
            deleted: BTreeSet::new(),
            groups: BTreeMap::new(),
            in_flight: InFlight::None,
        }));
        let cuts = {
            let expect = expect.clone();
            sim.cut_at_random(
                Rng::new(seed ^ (round as u64).wrapping_mul(0x5851_f42d_4c95_7f2d) ^ 1),
                CUT_ONE_IN,
                cuts_dir,
                move || expect.lock().unwrap().clone(),
            )
        };
        let mut rng = Rng::new(seed.wrapping_add(round as u64));
        let mut broker = Some(Broker::open(config(&data, Some(&sim))).unwrap());
        for _ in 0..OPS_PER_ROUND {
            step(&mut broker, &data, &sim, &mut rng, &expect);
            sim.check_matches_disk();
        }
        broker.take().unwrap().close().unwrap();
        sim.check_matches_disk();
        assert_eq!(
            sim.unresolved(),
            0,
            "file events the simulator could not place"
        );
        events_total += sim.events();
        let cuts = std::mem::take(&mut *cuts.lock().unwrap());
        for (i, cut) in cuts.iter().enumerate() {
            if let Err(why) = verify(cut) {
                panic!(
                    "seed {seed} round {round} cut {i} (file event {} '{}', in flight {:?}): {why}",
                    cut.event, cut.signature, cut.expect.in_flight
                );
            }
            signatures.insert(format!(
                "{:?} / {}",
                std::mem::discriminant(&cut.expect.in_flight),
                cut.signature
            ));
        }
        cuts_total += cuts.len();
    }
    println!(
        "power-cut simulation: seed {seed}: {rounds} rounds, {events_total} file events, {cuts_total} cuts opened and checked, {} distinct cut points (operation in flight x file event)",
        signatures.len()
    );
    assert!(cuts_total > 0, "no cut was taken");
}
