//! Property test: random sequences of appends (in the log's term, in a stated term, a later
//! one or a refused older one; waiting as the policy says, or only for the write and then
//! `sync_to`), reads, term lookups, rolls, reopens, retention, truncation, purges (whole
//! segments below an offset) and timestamp lookups on a small-segment log agree with a plain
//! in-memory model of the log.
//! Reopens may lose the checkpoint or the indexes first; any writing operation may have one of
//! its file operations fail (through the fault seam) and be followed by a crash, after which
//! the log must hold everything acknowledged and, of the interrupted operation, all or a prefix.
#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
}

use common::faults::Script;
use proptest::prelude::*;
use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use strata::{
    record::{BATCH_HEADER_BYTES, BatchBuilder, Frame, decode_frame, validate_batch},
    storage::{AppendWait, FsyncPolicy, Log, LogConfig, Offset, StorageError},
};

#[derive(Debug, Clone, PartialEq, Eq)]
struct ModelRecord {
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
}

#[derive(Debug, Clone)]
struct ModelBatch {
    base: Offset,
    term: u64,
    /// The batch's Raft index: one more than the batch before it's (1 in an empty log).
    index: u64,
    records: Vec<ModelRecord>,
}

impl ModelBatch {
    fn next(&self) -> Offset {
        self.base + self.records.len() as u64
    }

    fn bytes(&self) -> u64 {
        let records: usize = self
            .records
            .iter()
            .map(|r| 28 + r.key.as_ref().map_or(0, Vec::len) + r.value.len())
            .sum();
        (BATCH_HEADER_BYTES + records) as u64
    }

    fn max_timestamp_ms(&self) -> i64 {
        self.records.iter().map(|r| r.timestamp_ms).max().unwrap()
    }
}

/// The log as it should be: the batches from the earliest offset on, back to back.
#[derive(Debug, Default)]
struct Model {
    earliest: Offset,
    next: Offset,
    batches: Vec<ModelBatch>,
}

impl Model {
    fn records(&self) -> impl Iterator<Item = (Offset, &ModelRecord)> {
        self.batches
            .iter()
            .flat_map(|b| (b.base..).zip(b.records.iter()))
    }

    /// The log's term: its last batch's, 0 when it holds none.
    fn term(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.term)
    }

    /// The log's last Raft index: its last batch's, 0 when it holds none.
    fn index(&self) -> u64 {
        self.batches.last().map_or(0, |b| b.index)
    }

    /// Index of the batch holding `offset`.
    fn batch_index(&self, offset: Offset) -> Option<usize> {
        let i = self.batches.partition_point(|b| b.next() <= offset);
        (i < self.batches.len() && self.batches[i].base <= offset).then_some(i)
    }
}

#[derive(Debug, Clone)]
struct RecordSpec {
    timestamp_ms: i64,
    key_len: Option<usize>,
    value_len: usize,
}

/// The term an append asks for.
#[derive(Debug, Clone, Copy)]
enum TermChoice {
    /// None: `append_batches`, in the log's term.
    Inherit,
    /// `append_in_term` with the log's term.
    Same,
    /// `append_in_term` with a term this much later.
    Later(u64),
    /// `append_in_term` with a term one below the log's: refused, nothing stored.
    Behind,
}

#[derive(Debug, Clone)]
enum Op {
    /// One append call with these batches.
    Append {
        batches: Vec<Vec<RecordSpec>>,
        term: TermChoice,
        /// `AppendWait::Written` then `sync_to` the new end, rather than the policy's wait.
        written_then_sync: bool,
    },
    Read {
        at: u64,
        max_bytes: usize,
    },
    ReadAll {
        max_bytes: usize,
    },
    Roll,
    Reopen {
        close_first: bool,
        damage: Damage,
    },
    Tick,
    Flush,
    Retention {
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
        now_ms: i64,
    },
    Truncate {
        at: u64,
    },
    /// `purge_before` an offset picked by `at`.
    Purge {
        at: u64,
    },
    OffsetForTimestamp {
        timestamp_ms: i64,
    },
    /// `during` with its `at`-th file operation failing, then a crash (the log is dropped where
    /// it stands) and a reopen.
    Crash {
        at: usize,
        during: Box<Op>,
    },
}

/// What happens to the files between closing (or dropping) the log and opening it again.
#[derive(Debug, Clone, Copy)]
enum Damage {
    None,
    LoseCheckpoint,
    DeleteIndexes,
    GarbleIndexes,
}

fn record_spec() -> impl Strategy<Value = RecordSpec> {
    (
        -50..5_000i64,
        proptest::option::of(0..16usize),
        prop_oneof![12 => 0..300usize, 2 => 300..2_000usize, 1 => 3_000..6_000usize],
    )
        .prop_map(|(timestamp_ms, key_len, value_len)| RecordSpec {
            timestamp_ms,
            key_len,
            value_len,
        })
}

fn term_choice() -> impl Strategy<Value = TermChoice> {
    prop_oneof![
        4 => Just(TermChoice::Inherit),
        3 => Just(TermChoice::Same),
        2 => (1..3u64).prop_map(TermChoice::Later),
        1 => Just(TermChoice::Behind),
    ]
}

fn append_op() -> impl Strategy<Value = Op> {
    let batch = proptest::collection::vec(record_spec(), 1..6);
    (
        proptest::collection::vec(batch, 1..3),
        term_choice(),
        any::<bool>(),
    )
        .prop_map(|(batches, term, written_then_sync)| Op::Append {
            batches,
            term,
            written_then_sync,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => append_op(),
        4 => (any::<u64>(), prop_oneof![Just(1usize), 1..10_000usize])
            .prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => prop_oneof![Just(1usize), 1..20_000usize].prop_map(|max_bytes| Op::ReadAll { max_bytes }),
        2 => Just(Op::Roll),
        2 => (any::<bool>(), damage()).prop_map(|(close_first, damage)| Op::Reopen { close_first, damage }),
        1 => Just(Op::Tick),
        2 => (
            proptest::option::of(0..3_000u64),
            proptest::option::of(0..40_000u64),
            3_000..6_000i64,
        )
            .prop_map(|(retention_ms, retention_bytes, now_ms)| Op::Retention {
                retention_ms,
                retention_bytes,
                now_ms,
            }),
        1 => any::<u64>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u64>().prop_map(|at| Op::Purge { at }),
        2 => (-100..5_100i64).prop_map(|timestamp_ms| Op::OffsetForTimestamp { timestamp_ms }),
        3 => (0..24usize, crashing_op()).prop_map(|(at, during)| Op::Crash { at, during: Box::new(during) }),
    ]
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        6 => Just(Damage::None),
        1 => Just(Damage::LoseCheckpoint),
        1 => Just(Damage::DeleteIndexes),
        1 => Just(Damage::GarbleIndexes),
    ]
}

/// Operations that write, for a crash to interrupt.
fn crashing_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => append_op(),
        1 => Just(Op::Roll),
        1 => Just(Op::Tick),
        1 => Just(Op::Flush),
        1 => any::<bool>().prop_map(|close_first| Op::Reopen { close_first, damage: Damage::None }),
        1 => (
            proptest::option::of(0..3_000u64),
            proptest::option::of(0..40_000u64),
            3_000..6_000i64,
        )
            .prop_map(|(retention_ms, retention_bytes, now_ms)| Op::Retention {
                retention_ms,
                retention_bytes,
                now_ms,
            }),
        1 => any::<u64>().prop_map(|at| Op::Truncate { at }),
        1 => any::<u64>().prop_map(|at| Op::Purge { at }),
    ]
}

fn fsync_policy() -> impl Strategy<Value = FsyncPolicy> {
    prop_oneof![
        Just(FsyncPolicy::Always),
        Just(FsyncPolicy::Never),
        Just(FsyncPolicy::Interval(Duration::ZERO)),
        Just(FsyncPolicy::Interval(Duration::from_secs(3600))),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        prop_oneof![Just(4096u64), Just(8192), Just(16_384)],
        prop_oneof![Just(64u32), Just(256), Just(4096)],
        prop_oneof![Just(512u64), Just(4096), Just(1 << 30)],
        fsync_policy(),
        prop_oneof![Just(None), Just(Some(0u64)), Just(Some(4096))],
    )
        .prop_map(
            |(
                segment_max_bytes,
                index_interval_bytes,
                checkpoint_interval_bytes,
                fsync,
                cached_tail_bytes,
            )| {
                LogConfig {
                    segment_max_bytes,
                    segment_max_ms: None,
                    retention_ms: None,
                    retention_bytes: None,
                    fsync,
                    index_interval_bytes,
                    checkpoint_interval_bytes,
                    cached_tail_bytes,
                    ..LogConfig::default()
                }
            },
        )
}

/// Picks an offset around the model's range, a little outside it on both sides.
fn pick_offset(model: &Model, at: u64) -> Offset {
    let lo = model.earliest.saturating_sub(2);
    let hi = model.next + 2;
    lo + at % (hi - lo + 1)
}

/// Base offsets of the segment files in `dir`, in order.
fn segment_bases(dir: &Path) -> Vec<Offset> {
    let mut bases: Vec<Offset> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|s| s.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// A batch decoded from a read, owned.
#[derive(Debug)]
struct ReadBatch {
    base: Offset,
    version: u8,
    term: u64,
    index: u64,
    producer: Option<strata::record::ProducerStamp>,
    max_timestamp_ms: i64,
    len: u64,
    records: Vec<(Offset, ModelRecord)>,
}

fn decode_all(mut bytes: &[u8]) -> Vec<ReadBatch> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Frame::Batch(b) = decode_frame(bytes) else {
            panic!("a read returned bytes that are not whole batches")
        };
        let h = *b.header();
        let records = b
            .records()
            .map(|r| {
                let r = r.expect("records of a read batch decode");
                (
                    r.offset,
                    ModelRecord {
                        timestamp_ms: r.timestamp_ms,
                        key: r.key.map(<[u8]>::to_vec),
                        value: r.value.to_vec(),
                    },
                )
            })
            .collect();
        out.push(ReadBatch {
            base: h.base_offset,
            version: h.version,
            term: h.term,
            index: h.raft_index,
            producer: h.producer,
            max_timestamp_ms: h.max_timestamp_ms,
            len: u64::from(h.length),
            records,
        });
        bytes = &bytes[b.bytes().len()..];
    }
    out
}

/// Reads at `offset` and checks the answer against the model. Returns where the next read
/// should start.
fn check_read(log: &Log, model: &Model, offset: Offset, max_bytes: usize) -> Offset {
    let result = log.read(offset, max_bytes);
    if offset < model.earliest || offset > model.next {
        match result {
            Err(StorageError::OffsetOutOfRange {
                requested,
                earliest,
                next,
            }) => {
                assert_eq!(
                    (requested, earliest, next),
                    (offset, model.earliest, model.next)
                );
            }
            other => panic!("read at {offset} outside {model:?}: {other:?}"),
        }
        assert!(
            matches!(
                log.term_at(offset),
                Err(StorageError::OffsetOutOfRange { .. })
            ),
            "term at {offset} outside the log"
        );
        return offset;
    }
    let chunk = result.unwrap_or_else(|e| panic!("read at {offset}: {e}"));
    assert_eq!(chunk.high_watermark, model.next, "high watermark");
    assert_eq!(chunk.earliest_offset, model.earliest, "earliest offset");
    if offset == model.next {
        assert!(chunk.batches.is_empty(), "a read at the end returned data");
        assert!(
            matches!(
                log.term_at(offset),
                Err(StorageError::OffsetOutOfRange { .. })
            ),
            "term at the end {offset}"
        );
        assert_eq!(chunk.next_offset, offset);
        return offset;
    }
    let got = decode_all(&chunk.batches);
    assert!(
        !got.is_empty(),
        "a read at {offset} below {} was empty",
        model.next
    );
    let first = model.batch_index(offset).unwrap();
    assert_eq!(
        log.term_at(offset).unwrap(),
        model.batches[first].term,
        "term at {offset}"
    );
    let mut total = 0;
    for (i, b) in got.iter().enumerate() {
        let want = &model.batches[first + i];
        assert_eq!(b.base, want.base, "batch {i} of the read at {offset}");
        assert_eq!(b.len, want.bytes());
        assert_eq!(
            (b.version, b.term, b.index, b.producer),
            (strata::record::BATCH_VERSION, want.term, want.index, None),
            "version, term, index and producer of the batch at {}",
            b.base
        );
        assert_eq!(b.max_timestamp_ms, want.max_timestamp_ms());
        let want_records: Vec<(Offset, ModelRecord)> =
            (want.base..).zip(want.records.iter().cloned()).collect();
        assert_eq!(b.records, want_records, "records of batch at {}", b.base);
        total += b.len;
    }
    assert!(
        total <= (max_bytes as u64).max(got[0].len),
        "a read of at most {max_bytes} bytes returned {total}"
    );
    let last = got.last().unwrap();
    assert_eq!(chunk.next_offset, last.base + last.records.len() as u64);
    chunk.next_offset
}

/// Reads from the earliest offset to the end, and checks every record is there.
fn check_read_all(log: &Log, model: &Model, max_bytes: usize) {
    let mut at = model.earliest;
    while at < model.next {
        let next = check_read(log, model, at, max_bytes);
        assert!(next > at, "no progress reading at {at}");
        at = next;
    }
}

fn check_offsets(log: &Log, model: &Model, dir: &Path) {
    assert_eq!(log.next_offset(), model.next, "next offset");
    assert_eq!(log.earliest_offset(), model.earliest, "earliest offset");
    assert_eq!(log.last_term(), model.term(), "the log's term");
    assert_eq!(
        (log.last_entry().term, log.last_entry().index),
        (model.term(), model.index()),
        "the log's last entry"
    );
    for b in [model.batches.first(), model.batches.last()]
        .into_iter()
        .flatten()
    {
        assert_eq!(
            log.offset_of_entry(b.index).unwrap(),
            Some(b.base),
            "the batch of entry {}",
            b.index
        );
    }
    assert_eq!(log.offset_of_entry(model.index() + 1).unwrap(), None);
    let stats = log.stats();
    assert_eq!(
        stats.bytes,
        model.batches.iter().map(ModelBatch::bytes).sum::<u64>(),
        "stored bytes"
    );
    // Segments start at batch boundaries, the first at the earliest offset, the last at or
    // below the next offset.
    let bases = segment_bases(dir);
    assert_eq!(
        stats.segments as usize,
        bases.len(),
        "segment files {bases:?}"
    );
    assert_eq!(
        bases.first(),
        Some(&model.earliest),
        "segment files {bases:?}"
    );
    for &base in &bases {
        assert!(
            base == model.next || model.batches.iter().any(|b| b.base == base),
            "segment {base} does not start at a batch boundary"
        );
    }
}

/// Which sealed segments retention must delete: the oldest ones, while each is past the time
/// limit or the rest of the log is still at least the size limit.
fn expected_retention(
    model: &Model,
    bases: &[Offset],
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    now_ms: i64,
) -> usize {
    let mut total: u64 = model.batches.iter().map(ModelBatch::bytes).sum();
    let mut doomed = 0;
    for w in bases.windows(2) {
        let in_segment = || {
            model
                .batches
                .iter()
                .filter(move |b| b.base >= w[0] && b.base < w[1])
        };
        let size: u64 = in_segment().map(ModelBatch::bytes).sum();
        let max_ts = in_segment()
            .map(ModelBatch::max_timestamp_ms)
            .max()
            .unwrap_or(i64::MIN);
        let too_old = retention_ms.is_some_and(|ms| max_ts < now_ms - ms as i64);
        let too_big = retention_bytes.is_some_and(|limit| total - size >= limit);
        if !too_old && !too_big {
            break;
        }
        total -= size;
        doomed += 1;
    }
    doomed
}

/// Damages the files of a closed log.
fn damage_files(dir: &Path, damage: Damage) {
    let files = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path());
    match damage {
        Damage::None => {}
        Damage::LoseCheckpoint => std::fs::remove_file(dir.join("recovery-point"))
            .unwrap_or_else(|e| panic!("no checkpoint to lose: {e}")),
        Damage::DeleteIndexes | Damage::GarbleIndexes => {
            for path in files {
                let ext = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .unwrap_or_default();
                if ext != "index" && ext != "timeindex" {
                    continue;
                }
                if matches!(damage, Damage::DeleteIndexes) {
                    std::fs::remove_file(&path).unwrap();
                } else {
                    let len = std::fs::metadata(&path).unwrap().len().max(36);
                    let garbage: Vec<u8> = (0..len).map(|i| (i * 37 % 251) as u8).collect();
                    std::fs::write(&path, garbage).unwrap();
                }
            }
        }
    }
}

/// What the log may hold after an operation that failed part way and a crash.
enum Outcome {
    /// What the model says.
    Exact,
    /// A prefix of these batches (planned at the model's next offset) was appended.
    AppendedPrefix(Vec<ModelBatch>),
    /// Retention deleted segments up to one of these (the earliest offset is one of them).
    RetainedFrom(Vec<Offset>),
    /// Truncation cut the log back to a batch boundary in `low..=high`.
    TruncatedTo { low: Offset, high: Offset },
}

struct Harness {
    dir: tempfile::TempDir,
    config: LogConfig,
    faults: Arc<Script>,
    log: Option<Log>,
    model: Model,
    /// Makes every record's value unique.
    counter: u64,
}

impl Harness {
    fn new(config: &LogConfig) -> Harness {
        let faults = Script::new();
        let config = LogConfig {
            faults: Some(faults.as_injector()),
            ..config.clone()
        };
        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(&Self::log_dir(dir.path()), config.clone()).unwrap();
        Harness {
            dir,
            config,
            faults,
            log: Some(log),
            model: Model::default(),
            counter: 0,
        }
    }

    fn log_dir(root: &Path) -> PathBuf {
        root.join("partition-0")
    }

    fn path(&self) -> PathBuf {
        Self::log_dir(self.dir.path())
    }

    fn log(&self) -> &Log {
        self.log.as_ref().unwrap()
    }

    fn record(&mut self, spec: &RecordSpec) -> ModelRecord {
        self.counter += 1;
        let mut value = self.counter.to_le_bytes().to_vec();
        value.resize(8 + spec.value_len, (self.counter % 251) as u8);
        ModelRecord {
            timestamp_ms: spec.timestamp_ms,
            key: spec.key_len.map(|n| vec![b'k'; n]),
            value,
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Append {
                batches,
                term,
                written_then_sync,
            } => self.append(batches, *term, *written_then_sync),
            Op::Read { at, max_bytes } => {
                let offset = pick_offset(&self.model, *at);
                check_read(self.log(), &self.model, offset, *max_bytes);
            }
            Op::ReadAll { max_bytes } => check_read_all(self.log(), &self.model, *max_bytes),
            Op::Roll => self.log().roll().unwrap(),
            Op::Reopen {
                close_first,
                damage,
            } => {
                let log = self.log.take().unwrap();
                if *close_first {
                    log.close().unwrap();
                } else {
                    drop(log);
                }
                damage_files(&self.path(), *damage);
                self.log = Some(Log::open(&self.path(), self.config.clone()).unwrap());
                check_offsets(self.log(), &self.model, &self.path());
                check_read_all(self.log(), &self.model, 4096);
            }
            Op::Tick => self.log().tick(0).unwrap(),
            Op::Flush => self.log().flush().unwrap(),
            Op::Crash { at, during } => self.crash(*at, during),
            Op::Retention {
                retention_ms,
                retention_bytes,
                now_ms,
            } => self.retention(*retention_ms, *retention_bytes, *now_ms),
            Op::Truncate { at } => self.truncate(*at),
            Op::Purge { at } => self.purge(*at),
            Op::OffsetForTimestamp { timestamp_ms } => {
                let want = self
                    .model
                    .records()
                    .find(|(_, r)| r.timestamp_ms >= *timestamp_ms)
                    .map(|(o, _)| o);
                assert_eq!(
                    self.log().offset_for_timestamp(*timestamp_ms).unwrap(),
                    want,
                    "offset for timestamp {timestamp_ms}"
                );
            }
        }
        check_offsets(self.log(), &self.model, &self.path());
    }

    /// Runs `during` with its `at`-th file operation failing, crashes, reopens, and settles the
    /// model on what the log may hold.
    fn crash(&mut self, at: usize, during: &Op) {
        self.faults.fail_nth(at);
        let outcome = self.try_apply(during);
        self.faults.heal();
        drop(self.log.take());
        let log = Log::open(&self.path(), self.config.clone())
            .unwrap_or_else(|e| panic!("reopening after a crash in {during:?}: {e}"));
        let next = log.next_offset();
        match outcome {
            Outcome::Exact => {}
            Outcome::AppendedPrefix(batches) => {
                for b in batches {
                    if b.next() <= next {
                        self.model.next = b.next();
                        self.model.batches.push(b);
                    }
                }
            }
            Outcome::RetainedFrom(candidates) => {
                let earliest = log.earliest_offset();
                assert!(
                    candidates.contains(&earliest),
                    "earliest {earliest} after a crash in retention, not one of {candidates:?}"
                );
                self.model.earliest = earliest;
                self.model.batches.retain(|b| b.base >= earliest);
            }
            Outcome::TruncatedTo { low, high } => {
                assert!(
                    (low..=high).contains(&next)
                        && (next == high || self.model.batches.iter().any(|b| b.base == next)),
                    "next offset {next} after a crash in truncation to {low} (from {high})"
                );
                self.model.batches.retain(|b| b.base < next);
                self.model.next = next;
            }
        }
        assert_eq!(
            next, self.model.next,
            "acknowledged records lost in a crash in {during:?}"
        );
        self.log = Some(log);
        check_read_all(self.log(), &self.model, 4096);
    }

    /// Applies a writing operation that may fail; returns what the log may hold afterwards.
    fn try_apply(&mut self, op: &Op) -> Outcome {
        match op {
            Op::Append {
                batches,
                term,
                written_then_sync,
            } => {
                let Ok(term) = self.term_for(*term) else {
                    // Refused before any file is touched, faults or not.
                    self.append(batches, TermChoice::Behind, *written_then_sync);
                    return Outcome::Exact;
                };
                let (bytes, planned) = self.build(batches, term.unwrap_or(self.model.term()));
                let valid = validate_batch(&bytes, 1 << 20).unwrap();
                if self.call_append(term, &valid, *written_then_sync).is_ok() {
                    for b in planned {
                        self.model.next = b.next();
                        self.model.batches.push(b);
                    }
                    Outcome::Exact
                } else {
                    Outcome::AppendedPrefix(planned)
                }
            }
            Op::Roll => {
                let _ = self.log().roll();
                Outcome::Exact
            }
            Op::Tick => {
                let _ = self.log().tick(0);
                Outcome::Exact
            }
            Op::Flush => {
                let _ = self.log().flush();
                Outcome::Exact
            }
            Op::Reopen { close_first, .. } => {
                let log = self.log.take().unwrap();
                if *close_first {
                    let _ = log.close();
                } else {
                    drop(log);
                }
                self.log = Log::open(&self.path(), self.config.clone()).ok();
                Outcome::Exact
            }
            Op::Retention {
                retention_ms,
                retention_bytes,
                now_ms,
            } => {
                let bases = segment_bases(&self.path());
                let want = if retention_ms.is_none() && retention_bytes.is_none() {
                    0
                } else {
                    expected_retention(
                        &self.model,
                        &bases,
                        *retention_ms,
                        *retention_bytes,
                        *now_ms,
                    )
                };
                let log = self.log();
                log.set_config(LogConfig {
                    retention_ms: *retention_ms,
                    retention_bytes: *retention_bytes,
                    ..self.config.clone()
                });
                let result = log.apply_retention(*now_ms);
                log.set_config(self.config.clone());
                match result {
                    Ok(deleted) => {
                        assert_eq!(deleted, want);
                        self.model.earliest = bases[want];
                        self.model.batches.retain(|b| b.base >= bases[want]);
                        Outcome::Exact
                    }
                    Err(_) => Outcome::RetainedFrom(bases[..=want].to_vec()),
                }
            }
            Op::Truncate { at } => {
                let offset = pick_offset(&self.model, *at);
                let want = self.truncation_point(offset);
                match self.log().truncate(offset) {
                    Ok(got) => {
                        assert_eq!(got, want, "truncate({offset})");
                        self.model.batches.retain(|b| b.base < want);
                        self.model.next = want;
                        Outcome::Exact
                    }
                    Err(_) => Outcome::TruncatedTo {
                        low: want,
                        high: self.model.next,
                    },
                }
            }
            Op::Purge { at } => {
                let offset = pick_offset(&self.model, *at);
                let bases = segment_bases(&self.path());
                let want = expected_purge(&bases, offset);
                match self.log().purge_before(offset) {
                    Ok(deleted) => {
                        assert_eq!(deleted, want, "purge_before({offset}) of {bases:?}");
                        self.model.earliest = bases[want];
                        self.model.batches.retain(|b| b.base >= bases[want]);
                        Outcome::Exact
                    }
                    Err(_) => Outcome::RetainedFrom(bases[..=want].to_vec()),
                }
            }
            other => unreachable!("{other:?} does not write"),
        }
    }

    /// The batches of one `append_batches` call, and how the model will see them.
    fn build(&mut self, batches: &[Vec<RecordSpec>], term: u64) -> (Vec<u8>, Vec<ModelBatch>) {
        let mut bytes = Vec::new();
        let mut planned = Vec::new();
        let mut base = self.model.next;
        for (index, specs) in (self.model.index() + 1..).zip(batches) {
            let records: Vec<ModelRecord> = specs.iter().map(|s| self.record(s)).collect();
            let mut b = BatchBuilder::default();
            for r in &records {
                b.push_parts(r.timestamp_ms, r.key.as_deref(), &r.value, []);
            }
            bytes.extend(b.finish(0));
            let batch = ModelBatch {
                base,
                term,
                index,
                records,
            };
            base = batch.next();
            planned.push(batch);
        }
        (bytes, planned)
    }

    /// Where `truncate(offset)` must cut the model's log.
    fn truncation_point(&self, offset: Offset) -> Offset {
        if offset >= self.model.next {
            self.model.next
        } else {
            self.model
                .batch_index(offset)
                .map_or(self.model.earliest, |i| self.model.batches[i].base)
        }
    }

    /// The term to pass to `append_in_term` (`Ok(None)`: call `append_batches`), or `Err` with
    /// a term behind the log's, which must be refused.
    fn term_for(&self, choice: TermChoice) -> Result<Option<u64>, u64> {
        let now = self.model.term();
        match choice {
            TermChoice::Inherit => Ok(None),
            TermChoice::Same => Ok(Some(now)),
            TermChoice::Later(n) => Ok(Some(now + n)),
            TermChoice::Behind if now == 0 => Ok(Some(0)),
            TermChoice::Behind => Err(now - 1),
        }
    }

    /// Appends as asked; with `written_then_sync`, waits for the write only and then syncs
    /// to the new end (with `append_batches`, which has no such choice, it syncs after).
    fn call_append(
        &self,
        term: Option<u64>,
        batches: &[strata::record::ValidatedBatch<'_>],
        written_then_sync: bool,
    ) -> Result<Vec<strata::storage::Appended>, StorageError> {
        let log = self.log();
        let wait = if written_then_sync {
            AppendWait::Written
        } else {
            AppendWait::Policy
        };
        let appended = match term {
            None => log.append_batches(batches)?,
            Some(t) => log.append_in_term(t, batches, wait)?,
        };
        if written_then_sync && let Some(last) = appended.last() {
            log.sync_to(last.next_offset)?;
        }
        Ok(appended)
    }

    fn append(&mut self, batches: &[Vec<RecordSpec>], choice: TermChoice, written_then_sync: bool) {
        let Ok(term) = self.term_for(choice) else {
            let last = self.model.term();
            let (bytes, _) = self.build(batches, last - 1);
            let valid = validate_batch(&bytes, 1 << 20).unwrap();
            match self
                .log()
                .append_in_term(last - 1, &valid, AppendWait::Policy)
            {
                Err(StorageError::TermBehind {
                    term, last: got, ..
                }) => {
                    assert_eq!((term, got), (last - 1, last), "the refusal's terms");
                }
                other => panic!("an append in term {} after {last}: {other:?}", last - 1),
            }
            return;
        };
        let (bytes, planned) = self.build(batches, term.unwrap_or(self.model.term()));
        let valid = validate_batch(&bytes, 1 << 20).unwrap();
        let appended = self.call_append(term, &valid, written_then_sync).unwrap();
        assert_eq!(appended.len(), planned.len());
        for (a, batch) in appended.iter().zip(planned) {
            assert_eq!(a.base_offset, batch.base, "offsets are consecutive");
            assert_eq!(a.next_offset, batch.next());
            self.model.next = batch.next();
            self.model.batches.push(batch);
        }
        // An append is readable as soon as it returns.
        let last = self.model.batches.last().unwrap().base;
        check_read(self.log(), &self.model, last, 1);
        // Nothing past the end can be synced: it is an error, not a wait.
        if written_then_sync {
            assert!(
                matches!(
                    self.log().sync_to(self.model.next + 1),
                    Err(StorageError::NotWritten { .. })
                ),
                "sync_to past the end"
            );
        }
    }

    fn retention(&mut self, retention_ms: Option<u64>, retention_bytes: Option<u64>, now_ms: i64) {
        let bases = segment_bases(&self.path());
        let want = if retention_ms.is_none() && retention_bytes.is_none() {
            0
        } else {
            expected_retention(&self.model, &bases, retention_ms, retention_bytes, now_ms)
        };
        let log = self.log();
        log.set_config(LogConfig {
            retention_ms,
            retention_bytes,
            ..self.config.clone()
        });
        let deleted = log.apply_retention(now_ms).unwrap();
        log.set_config(self.config.clone());
        assert_eq!(deleted, want, "segments deleted by retention of {bases:?}");
        let earliest = log.earliest_offset();
        assert!(earliest >= self.model.earliest, "earliest moved back");
        assert_eq!(earliest, bases[want]);
        self.model.earliest = earliest;
        self.model.batches.retain(|b| b.base >= earliest);
    }

    fn purge(&mut self, at: u64) {
        let offset = pick_offset(&self.model, at);
        let bases = segment_bases(&self.path());
        let want = expected_purge(&bases, offset);
        let deleted = self.log().purge_before(offset).unwrap();
        assert_eq!(deleted, want, "purge_before({offset}) of {bases:?}");
        let earliest = self.log().earliest_offset();
        assert_eq!(earliest, bases[want]);
        assert!(
            earliest <= offset.max(self.model.earliest),
            "purged past {offset}"
        );
        self.model.earliest = earliest;
        self.model.batches.retain(|b| b.base >= earliest);
    }

    fn truncate(&mut self, at: u64) {
        let offset = pick_offset(&self.model, at);
        let want = self.truncation_point(offset);
        let got = self.log().truncate(offset).unwrap();
        assert_eq!(got, want, "truncate({offset})");
        self.model.batches.retain(|b| b.base < want);
        self.model.next = want;
        // Appends continue from there.
        assert_eq!(self.log().next_offset(), want);
    }
}

/// How many of the segments starting at `bases` (oldest first, the active one last)
/// `purge_before(offset)` deletes: those whose successor starts at or below `offset`.
fn expected_purge(bases: &[Offset], offset: Offset) -> usize {
    bases
        .windows(2)
        .take_while(|pair| pair[1] <= offset)
        .count()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_log_agrees_with_a_model(
        config in config(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        let mut h = Harness::new(&config);
        for op in &ops {
            h.apply(op);
        }
        check_read_all(h.log(), &h.model, 1 << 20);
        // Whatever happened, a crash-like reopen keeps every record.
        drop(h.log.take());
        let log = Log::open(&h.path(), h.config.clone()).unwrap();
        check_offsets(&log, &h.model, &h.path());
        check_read_all(&log, &h.model, 1 << 20);
    }
}
