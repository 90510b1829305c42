//! The history checker of the chaos tests: everything the clients observe goes into a
//! [`History`] (every value handed to a producer, every acknowledged (topic, partition, offset,
//! value), every commit attempted and whether it was acknowledged, the committed offsets read back
//! after each restart, every record each consumer saw, and every partition as read back at the
//! end), and [`check`] verifies, per partition:
//!
//! - offsets start at 0 and have no gaps; every stored value is one a producer sent, stored once;
//! - each acknowledged record is present exactly once, at the offset it was acknowledged with
//!   (an unacknowledged send may or may not be there, but never twice or beside its ack), and no
//!   offset or value is acknowledged twice;
//! - committed offsets never go backwards: after a restart a group's offset is at least the last
//!   acknowledged commit and at most the last attempted one, and not below the one read at the
//!   restart before; within a round, acknowledged commits do not go back;
//! - each consumer resumed exactly at its group's committed offset, saw the records from there
//!   on without a gap and as stored, and so, over all rounds, saw every record of its partitions.
//!
//! A second history, [`OnceHistory`], is that of `tests/chaos_idempotent_producer.rs`: one
//! retrying (idempotent) producer sends keyed records across broker kills and one consumer group
//! follows without ever stopping; [`check_exactly_once`] verifies
//!
//! - every sent value is stored exactly once (offsets from 0 without a gap, nothing else stored):
//!   a retry never appends a record twice, and no record is lost;
//! - each acknowledgement names the offset that holds its value, and each value is acknowledged
//!   once;
//! - per key, the records are stored in one partition in the order they were sent;
//! - the group handed out every stored record at least once, each as stored, and a record it
//!   handed out again only from its uncommitted window (the rule is at [`check_exactly_once`]).
//!
//! Used through `mod common;`; its own tests are `tests/chaos_history_checker.rs`.
#![allow(dead_code)] // each test file uses a different part

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

/// A partition: (topic, partition).
pub type Key = (String, u32);

/// A record a producer was told is stored, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub value: Vec<u8>,
}

/// A group's commit of an offset in a partition, in the round it was made: once when attempted
/// (`acknowledged` false), and again once the broker acknowledged it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub round: usize,
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub acknowledged: bool,
}

/// A group's committed offset in a partition as read right after the broker (re)started for
/// `round`; `None`: the group had none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restart {
    pub round: usize,
    pub group: String,
    pub topic: String,
    pub partition: u32,
    pub offset: Option<u64>,
}

/// One consumer's life in one round: where it started in each partition and what it saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Session {
    pub consumer: usize,
    pub round: usize,
    pub group: String,
    pub topic: String,
    pub starts: BTreeMap<u32, u64>,
    /// (partition, offset, value) in the order the consumer got them.
    pub seen: Vec<(u32, u64, Vec<u8>)>,
}

/// Everything the clients of a chaos run observed.
#[derive(Debug, Default)]
pub struct History {
    /// Every value handed to a producer (each is unique).
    pub produced: HashSet<Vec<u8>>,
    pub acked: Vec<Ack>,
    /// In the order they were attempted; `acknowledged` is set once the broker answered.
    pub commits: Vec<Commit>,
    pub restarts: Vec<Restart>,
    pub sessions: Vec<Session>,
    /// Which consumer follows which partitions of which topic, by index.
    pub consumers: Vec<(String, Vec<u32>)>,
    /// Every partition as read back at the end: (offset, value).
    pub stored: BTreeMap<Key, Vec<(u64, Vec<u8>)>>,
}

/// A history shared by the tasks of a run.
pub type Shared = Arc<Mutex<History>>;

impl History {
    /// An empty history of consumers following these (topic, partitions), by index.
    pub fn new(consumers: Vec<(String, Vec<u32>)>) -> History {
        History {
            consumers,
            ..History::default()
        }
    }

    /// Records a group's commit of `positions` (partition -> next offset) in `topic`: attempted,
    /// or (`acknowledged`) answered by the broker.
    pub fn record_commits(
        &mut self,
        round: usize,
        group: &str,
        topic: &str,
        positions: &BTreeMap<u32, u64>,
        acknowledged: bool,
    ) {
        for (&partition, &offset) in positions {
            self.commits.push(Commit {
                round,
                group: group.to_string(),
                topic: topic.to_string(),
                partition,
                offset,
                acknowledged,
            });
        }
    }

    /// Every violation of the promises in the module doc; see [`check`].
    pub fn check(&self) -> Vec<String> {
        check(self)
    }
}

/// Every violation of the promises in the module doc, as sentences; empty if none.
pub fn check(h: &History) -> Vec<String> {
    let mut bad = Vec::new();

    // Partitions: no gap, only produced values, each value stored once.
    let mut stored_at: HashMap<&[u8], (&str, u32, u64)> = HashMap::new();
    for ((topic, partition), records) in &h.stored {
        for (i, (offset, value)) in records.iter().enumerate() {
            if *offset != i as u64 {
                bad.push(format!(
                    "{topic}/{partition}: offset {offset} at position {i}: a gap or a repeat"
                ));
                break;
            }
            if !h.produced.contains(value) {
                bad.push(format!(
                    "{topic}/{partition}@{offset}: {:?} was never produced",
                    String::from_utf8_lossy(value)
                ));
            }
            if let Some((t, p, o)) = stored_at.insert(value, (topic, *partition, *offset)) {
                bad.push(format!(
                    "{:?} is stored twice: {t}/{p}@{o} and {topic}/{partition}@{offset}",
                    String::from_utf8_lossy(value)
                ));
            }
        }
    }
    let value_at = |topic: &str, partition: u32, offset: u64| {
        h.stored
            .get(&(topic.to_string(), partition))
            .and_then(|r| r.get(offset as usize))
            .map(|(_, v)| v.as_slice())
    };

    // Acknowledgements: each at its offset, no offset or value acknowledged twice.
    let mut acked_offsets: HashMap<(&str, u32, u64), &[u8]> = HashMap::new();
    let mut acked_values = HashSet::new();
    for a in &h.acked {
        let at = (a.topic.as_str(), a.partition, a.offset);
        if let Some(other) = acked_offsets.insert(at, &a.value) {
            bad.push(format!(
                "{}/{}@{} was acknowledged twice: {:?} and {:?}",
                a.topic,
                a.partition,
                a.offset,
                String::from_utf8_lossy(other),
                String::from_utf8_lossy(&a.value)
            ));
        }
        if !acked_values.insert(a.value.as_slice()) {
            bad.push(format!(
                "{:?} was acknowledged twice",
                String::from_utf8_lossy(&a.value)
            ));
        }
        match value_at(&a.topic, a.partition, a.offset) {
            Some(v) if v == a.value.as_slice() => {}
            other => bad.push(format!(
                "acknowledged {}/{}@{} = {:?} is lost: the partition holds {:?} there",
                a.topic,
                a.partition,
                a.offset,
                String::from_utf8_lossy(&a.value),
                other.map(String::from_utf8_lossy)
            )),
        }
    }

    // Commits: never backwards across a restart, never beyond what was attempted.
    let mut restarts: BTreeMap<(&str, &str, u32), Vec<&Restart>> = BTreeMap::new();
    for r in &h.restarts {
        restarts
            .entry((r.group.as_str(), r.topic.as_str(), r.partition))
            .or_default()
            .push(r);
    }
    for ((group, topic, partition), seen) in &restarts {
        let mut previous: Option<u64> = None;
        for r in seen {
            let earlier = || {
                h.commits.iter().filter(|c| {
                    c.round < r.round
                        && c.group == *group
                        && c.topic == *topic
                        && c.partition == *partition
                })
            };
            let acknowledged = earlier().filter(|c| c.acknowledged).map(|c| c.offset).max();
            let attempted = earlier().map(|c| c.offset).max();
            let now = r.offset;
            if now < previous {
                bad.push(format!(
                    "{group} {topic}/{partition}: committed offset went back from {previous:?} \
                     to {now:?} at round {}",
                    r.round
                ));
            }
            if now < acknowledged {
                bad.push(format!(
                    "{group} {topic}/{partition}: committed offset {now:?} at round {} is below \
                     the acknowledged commit {acknowledged:?}",
                    r.round
                ));
            }
            if now > attempted {
                bad.push(format!(
                    "{group} {topic}/{partition}: committed offset {now:?} at round {} was never \
                     committed (last attempt {attempted:?})",
                    r.round
                ));
            }
            previous = now;
        }
    }
    let mut last_acked: HashMap<(usize, &str, &str, u32), u64> = HashMap::new();
    for c in h.commits.iter().filter(|c| c.acknowledged) {
        let key = (c.round, c.group.as_str(), c.topic.as_str(), c.partition);
        if last_acked.get(&key).is_some_and(|&o| o > c.offset) {
            bad.push(format!(
                "{} {}/{}: an acknowledged commit of {} follows one of {:?} in round {}",
                c.group, c.topic, c.partition, c.offset, last_acked[&key], c.round
            ));
        }
        last_acked.insert(key, c.offset);
    }

    // Consumers: each session starts at the committed offset and reads on without a gap.
    let committed_at = |round: usize, group: &str, topic: &str, partition: u32| {
        h.restarts
            .iter()
            .find(|r| {
                r.round == round && r.group == group && r.topic == topic && r.partition == partition
            })
            .and_then(|r| r.offset)
            .unwrap_or(0)
    };
    let mut covered: BTreeMap<(usize, u32), Vec<(u64, u64)>> = BTreeMap::new();
    for s in &h.sessions {
        for (&partition, &start) in &s.starts {
            let expected = committed_at(s.round, &s.group, &s.topic, partition);
            if start != expected {
                bad.push(format!(
                    "consumer {} ({}) {}/{partition} round {}: started at {start}, the group's \
                     committed offset was {expected}",
                    s.consumer, s.group, s.topic, s.round
                ));
            }
            let mut next = start;
            for (_, offset, value) in s.seen.iter().filter(|(p, _, _)| *p == partition) {
                if *offset != next {
                    bad.push(format!(
                        "consumer {} {}/{partition} round {}: got offset {offset}, expected {next}",
                        s.consumer, s.topic, s.round
                    ));
                    break;
                }
                if value_at(&s.topic, partition, *offset) != Some(value.as_slice()) {
                    bad.push(format!(
                        "consumer {} saw {:?} at {}/{partition}@{offset}, which holds {:?}",
                        s.consumer,
                        String::from_utf8_lossy(value),
                        s.topic,
                        value_at(&s.topic, partition, *offset).map(String::from_utf8_lossy)
                    ));
                }
                next += 1;
            }
            covered
                .entry((s.consumer, partition))
                .or_default()
                .push((start, next));
        }
    }
    // ... and over all rounds has seen every record of its partitions.
    for (consumer, (topic, partitions)) in h.consumers.iter().enumerate() {
        for &partition in partitions {
            let end = h
                .stored
                .get(&(topic.clone(), partition))
                .map_or(0, |r| r.len() as u64);
            let mut spans = covered
                .get(&(consumer, partition))
                .cloned()
                .unwrap_or_default();
            spans.sort_unstable();
            let mut reached = 0;
            for (from, to) in spans {
                if from > reached {
                    break;
                }
                reached = reached.max(to);
            }
            if reached < end {
                bad.push(format!(
                    "consumer {consumer} never saw {topic}/{partition}@{reached} (the partition \
                     ends at {end})"
                ));
            }
        }
    }
    bad
}

/// What one consumer group did, as its members observed it, in the order it happened (the
/// members append under one lock, right after each call returned).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// Consumer `consumer` (any number naming one `Consumer` value) handed out this record.
    Seen {
        consumer: usize,
        partition: u32,
        offset: u64,
        value: Vec<u8>,
    },
    /// The broker acknowledged consumer `consumer`'s commit of `offset` (the next offset to read)
    /// in `partition`.
    Committed {
        consumer: usize,
        partition: u32,
        offset: u64,
    },
}

/// Everything the clients of `tests/chaos_idempotent_producer.rs` observed: one topic, one
/// producer, one consumer group. Checked by [`check_exactly_once`].
#[derive(Debug, Default, Clone)]
pub struct OnceHistory {
    pub topic: String,
    /// Every record handed to the producer, in the order it was: (key, value). Values are
    /// unique; the records of one key are its sequence, in this order.
    pub sent: Vec<(Vec<u8>, Vec<u8>)>,
    /// Every acknowledged delivery (of `topic`).
    pub acked: Vec<Ack>,
    /// The group's events, in order.
    pub group: Vec<GroupEvent>,
    /// Every partition of `topic` as read back at the end: (offset, value).
    pub stored: BTreeMap<u32, Vec<(u64, Vec<u8>)>>,
    /// Offsets may skip (a replicated partition's control batches take offsets no reader sees);
    /// they must still rise. Without it they run from 0 without a gap.
    pub gaps: bool,
}

impl OnceHistory {
    /// Every violation; see [`check_exactly_once`].
    pub fn check(&self) -> Vec<String> {
        check_exactly_once(self)
    }
}

fn lossy(v: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(v)
}

/// Every violation of the promises for an [`OnceHistory`] (module doc), as sentences; empty if
/// none.
///
/// The uncommitted window. A `Consumer` hands out a partition's records one after another from
/// its position. That starts, when the consumer takes the partition up (on joining, or when the
/// group hands it the partition), at the group's committed offset, and a broken subscription is
/// reopened at the position, so a broker restart repeats nothing. A record is handed out again
/// only by a consumer that took the partition up at a committed offset at or below it. The
/// broker hands a partition to a member only once no other member holds it (the previous owner
/// commits it and lets go, or has left or died), so every commit acknowledged before that came
/// first, and the committed offset read then is at or above all of them; from then on only the
/// new owner commits there, its own position, which is past everything it handed out. Hence the
/// rule: a record `p@o` handed out again after the group's acknowledged commit of `c > o` in `p`
/// (by any member, earlier in the history) is a violation. It is one whenever two members hold a
/// partition at once, the one behind handing out what the other has committed. (The commits a
/// `Consumer` makes on its own, of a revoked partition or at `close`, need not be in the history;
/// they only raise the committed offset, so leaving them out makes the rule looser, never wrong.)
pub fn check_exactly_once(h: &OnceHistory) -> Vec<String> {
    let mut bad = Vec::new();
    let topic = h.topic.as_str();

    // What was sent: value -> (key, its place in the key's sequence).
    let mut sent: HashMap<&[u8], (&[u8], usize)> = HashMap::new();
    let mut per_key: BTreeMap<&[u8], Vec<&[u8]>> = BTreeMap::new();
    for (key, value) in &h.sent {
        let sequence = per_key.entry(key).or_default();
        if sent.insert(value, (key, sequence.len())).is_some() {
            bad.push(format!(
                "{:?} was sent twice (a bug in the test)",
                lossy(value)
            ));
        }
        sequence.push(value);
    }

    // Partitions: no gap (unless allowed), only sent values, each stored once; and every sent
    // value stored.
    let mut stored_at: HashMap<&[u8], (u32, u64)> = HashMap::new();
    for (&partition, records) in &h.stored {
        for (i, (offset, value)) in records.iter().enumerate() {
            let in_place = if h.gaps {
                i == 0 || *offset > records[i - 1].0
            } else {
                *offset == i as u64
            };
            if !in_place {
                bad.push(format!(
                    "{topic}/{partition}: offset {offset} at position {i}: a gap or a repeat"
                ));
                break;
            }
            if !sent.contains_key(value.as_slice()) {
                bad.push(format!(
                    "{topic}/{partition}@{offset}: {:?} was never sent",
                    lossy(value)
                ));
            }
            if let Some((p, o)) = stored_at.insert(value, (partition, *offset)) {
                bad.push(format!(
                    "{:?} is stored twice: {topic}/{p}@{o} and {topic}/{partition}@{offset}",
                    lossy(value)
                ));
            }
        }
    }
    let missing: Vec<&(Vec<u8>, Vec<u8>)> = h
        .sent
        .iter()
        .filter(|(_, v)| !stored_at.contains_key(v.as_slice()))
        .collect();
    if let Some((_, first)) = missing.first() {
        bad.push(format!(
            "{} sent records are not stored, the first {:?}",
            missing.len(),
            lossy(first)
        ));
    }
    let value_at = |partition: u32, offset: u64| {
        let records = h.stored.get(&partition)?;
        let i = records.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        Some(records[i].1.as_slice())
    };

    // Acknowledgements: each at the offset holding its value, each value once.
    let mut acked_values: HashSet<&[u8]> = HashSet::new();
    for a in &h.acked {
        if !acked_values.insert(&a.value) {
            bad.push(format!("{:?} was acknowledged twice", lossy(&a.value)));
        }
        match value_at(a.partition, a.offset) {
            Some(v) if v == a.value.as_slice() => {}
            other => bad.push(format!(
                "acknowledged {topic}/{}@{} = {:?}: the partition holds {:?} there",
                a.partition,
                a.offset,
                lossy(&a.value),
                other.map(lossy)
            )),
        }
    }
    let unacked = h
        .sent
        .iter()
        .filter(|(_, v)| !acked_values.contains(v.as_slice()))
        .count();
    if unacked > 0 {
        bad.push(format!("{unacked} sent records were never acknowledged"));
    }

    // Per key: one partition, offsets rising in the order sent.
    for (key, values) in &per_key {
        let mut previous: Option<(&[u8], u32, u64)> = None;
        for value in values {
            let Some(&(partition, offset)) = stored_at.get(value) else {
                continue;
            };
            if let Some((pv, pp, po)) = previous
                && (pp != partition || po >= offset)
            {
                bad.push(format!(
                    "key {:?}: {:?} is stored at {topic}/{partition}@{offset}, not after {:?} \
                     (sent before it) at {topic}/{pp}@{po}",
                    lossy(key),
                    lossy(value),
                    lossy(pv)
                ));
            }
            previous = Some((value, partition, offset));
        }
    }

    // The group: each record as stored; again only within the uncommitted window.
    let mut committed: BTreeMap<u32, (u64, usize)> = BTreeMap::new();
    let mut seen: HashSet<(u32, u64)> = HashSet::new();
    for event in &h.group {
        match event {
            GroupEvent::Committed {
                consumer,
                partition,
                offset,
            } => {
                let c = committed.entry(*partition).or_insert((0, *consumer));
                if *offset >= c.0 {
                    *c = (*offset, *consumer);
                }
            }
            GroupEvent::Seen {
                consumer,
                partition,
                offset,
                value,
            } => {
                if value_at(*partition, *offset) != Some(value.as_slice()) {
                    bad.push(format!(
                        "consumer {consumer} saw {:?} at {topic}/{partition}@{offset}, which \
                         holds {:?}",
                        lossy(value),
                        value_at(*partition, *offset).map(lossy)
                    ));
                }
                // Seen before, and the group has committed past it since.
                if !seen.insert((*partition, *offset))
                    && let Some(&(c, by)) = committed.get(partition).filter(|c| c.0 > *offset)
                {
                    bad.push(format!(
                        "consumer {consumer} saw {topic}/{partition}@{offset} again after \
                         consumer {by}'s acknowledged commit of {c}: a redelivery outside the \
                         uncommitted window"
                    ));
                }
            }
        }
    }
    for (&partition, records) in &h.stored {
        let unseen: Vec<u64> = records
            .iter()
            .map(|(o, _)| *o)
            .filter(|o| !seen.contains(&(partition, *o)))
            .collect();
        if let Some(first) = unseen.first() {
            bad.push(format!(
                "the group never saw {topic}/{partition}@{first} ({} of the partition's {} \
                 records unseen)",
                unseen.len(),
                records.len()
            ));
        }
    }
    bad
}

/// How many records the group handed out more than once (as counted by [`check_exactly_once`]).
pub fn redeliveries(h: &OnceHistory) -> usize {
    let mut seen = HashSet::new();
    h.group
        .iter()
        .filter(|e| match e {
            GroupEvent::Seen {
                partition, offset, ..
            } => !seen.insert((*partition, *offset)),
            GroupEvent::Committed { .. } => false,
        })
        .count()
}
