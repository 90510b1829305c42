//! Idempotent producers: what each producer last appended to this partition, so that a batch it
//! sends again (a retry after a lost answer) is answered with the offsets it got the first time
//! instead of being appended twice, and a gap in its sequence numbers is refused.
//!
//! Per producer id the table keeps its epoch and its last [`RUNS_KEPT`] *runs*: batches that
//! follow one another in both sequence numbers and offsets (a request of several batches from one
//! producer, or a producer alone on the partition, is one run however long). A retried batch lies
//! inside a run, and its offset follows from the run's. The table lives under the log's writer
//! lock, so checking a batch and appending it are one step.
//!
//! Durability: the table is written to `producer-state` (atomically, with a CRC) before every
//! recovery checkpoint and at a clean close, as of the log end then (`upto`). Opening loads it and
//! replays the batch headers from `upto` to the recovered end, so it holds what the log holds.
//! Bounded: a producer that has appended nothing for [`LogConfig::producer_expiry_ms`] is dropped,
//! and beyond [`LogConfig::max_producers`] the least recently active one is.
//!
//! [`LogConfig::producer_expiry_ms`]: super::LogConfig::producer_expiry_ms
//! [`LogConfig::max_producers`]: super::LogConfig::max_producers

use super::{Offset, Result, StorageError, fs::Io};
use crate::record::{BatchHeader, ProducerStamp};
use serde::{Deserialize, Serialize};
use std::{collections::HashMap, path::Path};

/// The snapshot's file name inside a partition directory.
pub(crate) const PRODUCERS_FILE: &str = "producer-state";
/// Runs kept per producer: retries of any of the last this many requests are recognised.
pub const RUNS_KEPT: usize = 5;

const MAGIC: u32 = u32::from_le_bytes(*b"SRPS");
const VERSION: u16 = 1;

/// Why a producer's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch carries an older epoch than the producer id's latest.
    #[error(
        "producer {producer_id} at epoch {epoch} is fenced: epoch {current} of the same producer \
         id has appended since; a producer must not go on after a newer one took over"
    )]
    Fenced {
        /// The producer id.
        producer_id: u64,
        /// The batch's epoch.
        epoch: u16,
        /// The newest epoch seen.
        current: u16,
    },
    /// The batch does not start where the producer's last one ended.
    #[error(
        "producer {producer_id} (epoch {epoch}) sent sequence {found} where {expected} comes \
         next: the batches in between are missing, and appending this one would leave a gap"
    )]
    OutOfOrder {
        /// The producer id.
        producer_id: u64,
        /// The batch's epoch.
        epoch: u16,
        /// The sequence the producer's next batch must start with.
        expected: u64,
        /// The batch's first sequence.
        found: u32,
    },
    /// The batch was appended before, too long ago for the broker to say at which offset.
    #[error(
        "producer {producer_id} (epoch {epoch}) sent sequences {first}..={last} again: they were \
         appended, but before the last {RUNS_KEPT} runs the broker remembers, so their offsets \
         are unknown"
    )]
    TooOld {
        /// The producer id.
        producer_id: u64,
        /// The batch's epoch.
        epoch: u16,
        /// The batch's first sequence.
        first: u32,
        /// The batch's last sequence.
        last: u32,
    },
}

/// Batches of one producer that follow one another in sequences and in offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Run {
    first_sequence: u32,
    last_sequence: u32,
    /// The offset of `first_sequence`'s record; sequence `s` is at `base_offset + s - first`.
    base_offset: Offset,
}

impl Run {
    fn next_offset(&self) -> Offset {
        self.base_offset + u64::from(self.last_sequence - self.first_sequence) + 1
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ProducerState {
    epoch: u16,
    /// Oldest first; at most [`RUNS_KEPT`].
    runs: Vec<Run>,
    /// Wall-clock ms of its last append (for expiry).
    last_append_ms: i64,
}

impl ProducerState {
    fn next_sequence(&self) -> u64 {
        self.runs
            .last()
            .map_or(0, |r| u64::from(r.last_sequence) + 1)
    }
}

/// What to do with a producer's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SequenceCheck {
    /// It is the producer's next batch (or its first one here): append it.
    Append,
    /// It was appended before, at these offsets: answer with them, append nothing.
    Duplicate {
        /// Offset of the batch's first record.
        base_offset: Offset,
        /// One past its last record.
        next_offset: Offset,
    },
}

/// The producers of one partition (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProducerTable {
    producers: HashMap<u64, ProducerState>,
    /// Changed since the last snapshot.
    dirty: bool,
    /// The `upto` of the snapshot on disk, if there is one.
    snapshot_upto: Option<Offset>,
    /// Wall-clock ms of the last snapshot written.
    snapshot_ms: i64,
    /// Write at the next checkpoint even if not dirty, or sooner than the interval.
    snapshot_forced: bool,
}

/// A changed table is written at a checkpoint at most this often (a checkpoint comes every
/// second under `interval` fsync); rolls, truncations and close write it at once. What the
/// snapshot misses, an open replays from the log.
const SNAPSHOT_INTERVAL_MS: i64 = 30_000;

/// The entries a request may change, as they were before it: what a failed request restores.
pub(crate) struct Saved(Vec<(u64, Option<ProducerState>)>);

impl ProducerTable {
    /// Number of producers known.
    pub(crate) fn len(&self) -> usize {
        self.producers.len()
    }

    /// Makes the next checkpoint write the table even if it did not change.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
        self.snapshot_forced = true;
    }

    /// Whether the table changed since it was last written.
    pub(crate) fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// The `upto` of the snapshot on disk.
    pub(crate) fn snapshot_upto(&self) -> Option<Offset> {
        self.snapshot_upto
    }

    /// Makes the next checkpoint write the table if its snapshot is not as of `end`.
    pub(crate) fn snapshot_at_next_checkpoint(&mut self, end: Offset) {
        if self.snapshot_upto != Some(end) {
            self.snapshot_forced = true;
        }
    }

    /// Whether a checkpoint at log end `end` writes the table: when forced, or when it changed
    /// and the last snapshot is older than [`SNAPSHOT_INTERVAL_MS`].
    pub(crate) fn snapshot_due(&self, end: Offset) -> bool {
        if self.snapshot_upto == Some(end) && !self.dirty {
            return false;
        }
        self.snapshot_forced
            || (self.dirty
                && crate::record::now_ms().saturating_sub(self.snapshot_ms) >= SNAPSHOT_INTERVAL_MS)
    }

    /// Decides what to do with a batch from `stamp` of `record_count` records. Batches from a
    /// producer id the table does not know are appended whatever their sequence (a producer is
    /// forgotten only after it was idle past the expiry, and it may still go on).
    pub(crate) fn check(
        &self,
        stamp: &ProducerStamp,
        record_count: u32,
    ) -> Result<SequenceCheck, SequenceError> {
        let Some(state) = self.producers.get(&stamp.producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        let (producer_id, epoch) = (stamp.producer_id, stamp.epoch);
        if epoch < state.epoch {
            return Err(SequenceError::Fenced {
                producer_id,
                epoch,
                current: state.epoch,
            });
        }
        let first = stamp.base_sequence;
        let last = stamp.last_sequence(record_count).unwrap_or(u32::MAX);
        if epoch > state.epoch {
            // A new epoch starts its sequences at 0.
            return if first == 0 {
                Ok(SequenceCheck::Append)
            } else {
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    epoch,
                    expected: 0,
                    found: first,
                })
            };
        }
        let next = state.next_sequence();
        if u64::from(first) == next {
            return Ok(SequenceCheck::Append);
        }
        if u64::from(first) > next {
            return Err(SequenceError::OutOfOrder {
                producer_id,
                epoch,
                expected: next,
                found: first,
            });
        }
        if let Some(run) = state
            .runs
            .iter()
            .find(|r| r.first_sequence <= first && last <= r.last_sequence)
        {
            let base_offset = run.base_offset + u64::from(first - run.first_sequence);
            return Ok(SequenceCheck::Duplicate {
                base_offset,
                next_offset: base_offset + u64::from(record_count),
            });
        }
        Err(SequenceError::TooOld {
            producer_id,
            epoch,
            first,
            last,
        })
    }

    /// The entries of the producers in `stamps`, as they are now.
    pub(crate) fn save<'a>(&self, stamps: impl Iterator<Item = &'a ProducerStamp>) -> Saved {
        let mut saved: Vec<(u64, Option<ProducerState>)> = Vec::new();
        for s in stamps {
            if !saved.iter().any(|(id, _)| *id == s.producer_id) {
                saved.push((s.producer_id, self.producers.get(&s.producer_id).cloned()));
            }
        }
        Saved(saved)
    }

    /// Puts back what [`ProducerTable::save`] saved.
    pub(crate) fn restore(&mut self, saved: Saved) {
        for (id, state) in saved.0 {
            match state {
                Some(s) => self.producers.insert(id, s),
                None => self.producers.remove(&id),
            };
        }
    }

    /// Notes that the batch from `stamp` of `record_count` records was appended at
    /// `base_offset`, at wall-clock `now_ms`. Over `max_producers`, the least recently active
    /// other producer is forgotten.
    pub(crate) fn record(
        &mut self,
        stamp: &ProducerStamp,
        record_count: u32,
        base_offset: Offset,
        now_ms: i64,
        max_producers: usize,
    ) {
        let Some(last_sequence) = stamp.last_sequence(record_count) else {
            return; // validation refuses such batches
        };
        let batch = Run {
            first_sequence: stamp.base_sequence,
            last_sequence,
            base_offset,
        };
        let state = self
            .producers
            .entry(stamp.producer_id)
            .or_insert_with(|| ProducerState {
                epoch: stamp.epoch,
                runs: Vec::new(),
                last_append_ms: now_ms,
            });
        if stamp.epoch != state.epoch {
            state.epoch = stamp.epoch;
            state.runs.clear();
        }
        state.last_append_ms = state.last_append_ms.max(now_ms);
        match state.runs.last_mut() {
            Some(run)
                if u64::from(run.last_sequence) + 1 == u64::from(batch.first_sequence)
                    && run.next_offset() == base_offset =>
            {
                run.last_sequence = batch.last_sequence;
            }
            _ => {
                if state.runs.len() == RUNS_KEPT {
                    state.runs.remove(0);
                }
                state.runs.push(batch);
            }
        }
        self.dirty = true;
        if self.producers.len() > max_producers {
            let id = stamp.producer_id;
            if let Some(oldest) = self
                .producers
                .iter()
                .filter(|(other, _)| **other != id)
                .min_by_key(|(_, s)| s.last_append_ms)
                .map(|(other, _)| *other)
            {
                self.producers.remove(&oldest);
            }
        }
    }

    /// Replays a stored batch's header at open: as [`ProducerTable::record`], but a batch the
    /// table already covers (the snapshot was written after it) changes nothing. The open's time
    /// stands for when it was appended (record timestamps are the producer's, and may be old).
    pub(crate) fn replay(&mut self, header: &BatchHeader, now_ms: i64, max_producers: usize) {
        let Some(stamp) = header.producer else {
            return;
        };
        if let Some(state) = self.producers.get(&stamp.producer_id)
            && let Some(run) = state.runs.last()
            && (stamp.epoch < state.epoch || run.next_offset() > header.base_offset)
        {
            return;
        }
        self.record(
            &stamp,
            header.record_count,
            header.base_offset,
            now_ms,
            max_producers,
        );
    }

    /// Forgets producers idle for `expiry_ms` by `now_ms`. Returns how many.
    pub(crate) fn expire(&mut self, now_ms: i64, expiry_ms: u64) -> usize {
        let expiry = i64::try_from(expiry_ms).unwrap_or(i64::MAX);
        let before = self.producers.len();
        self.producers
            .retain(|_, s| now_ms.saturating_sub(s.last_append_ms) < expiry);
        let gone = before - self.producers.len();
        self.dirty |= gone > 0;
        gone
    }

    /// Forgets every batch at or past `offset` (after a truncation).
    pub(crate) fn truncate(&mut self, offset: Offset) {
        for state in self.producers.values_mut() {
            state.runs.retain(|r| r.base_offset < offset);
            if let Some(run) = state.runs.last_mut()
                && run.next_offset() > offset
            {
                // offset > base_offset, and the run's records are contiguous from it.
                let kept = u32::try_from(offset - run.base_offset).unwrap_or(u32::MAX);
                run.last_sequence = run.first_sequence + kept - 1;
            }
        }
        self.producers.retain(|_, s| !s.runs.is_empty());
        self.dirty = true;
    }

    /// Writes the table as of log end `upto` (every batch below it is in the table).
    pub(crate) fn write(&mut self, io: &Io, dir: &Path, upto: Offset) -> Result<()> {
        io.write_atomic(&dir.join(PRODUCERS_FILE), &self.encode(upto))?;
        self.dirty = false;
        self.snapshot_forced = false;
        self.snapshot_upto = Some(upto);
        self.snapshot_ms = crate::record::now_ms();
        Ok(())
    }

    fn encode(&self, upto: Offset) -> Vec<u8> {
        let mut producers: Vec<(u64, ProducerState)> = self
            .producers
            .iter()
            .map(|(id, s)| (*id, s.clone()))
            .collect();
        producers.sort_unstable_by_key(|(id, _)| *id);
        let body = Snapshot { upto, producers };
        // Encoding integers and vectors into a Vec cannot fail; an empty file reads as damaged.
        let bytes =
            bincode::serde::encode_to_vec(&body, bincode::config::standard()).unwrap_or_default();
        let mut out = Vec::with_capacity(bytes.len() + 10);
        out.extend_from_slice(&MAGIC.to_le_bytes());
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&crc32fast::hash(&bytes).to_le_bytes());
        out.extend_from_slice(&bytes);
        out
    }

    /// Reads the snapshot in `dir`: the table and its `upto`. `Ok(None)` if there is none;
    /// `Err` if it is damaged (the caller rebuilds from the log instead).
    pub(crate) fn read(dir: &Path) -> Result<Option<(ProducerTable, Offset)>> {
        let path = dir.join(PRODUCERS_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StorageError::io("read", path, e)),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    upto: Offset,
    producers: Vec<(u64, ProducerState)>,
}

/// For the fuzz target: decodes a snapshot file and, if it is accepted, encodes it back.
pub(crate) fn reencode(bytes: &[u8]) -> Option<(Offset, Vec<u8>)> {
    let (table, upto) = decode(bytes, Path::new(PRODUCERS_FILE)).ok()?;
    Some((upto, table.encode(upto)))
}

fn decode(bytes: &[u8], path: &Path) -> Result<(ProducerTable, Offset)> {
    let bad = |reason: String| StorageError::BadStateFile {
        path: path.to_owned(),
        reason,
    };
    if bytes.len() < 10 {
        return Err(bad("shorter than its header".into()));
    }
    let magic = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if magic != MAGIC || version != VERSION {
        return Err(bad("wrong magic or version".into()));
    }
    let crc = u32::from_le_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
    let body = &bytes[10..];
    if crc32fast::hash(body) != crc {
        return Err(bad("checksum mismatch".into()));
    }
    let (snapshot, used): (Snapshot, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard())
            .map_err(|e| bad(e.to_string()))?;
    if used != body.len() {
        return Err(bad("trailing bytes".into()));
    }
    let runs_fit = snapshot.producers.iter().all(|(_, s)| {
        s.runs.len() <= RUNS_KEPT
            && s.runs
                .iter()
                .all(|r| r.first_sequence <= r.last_sequence && r.next_offset() <= snapshot.upto)
    });
    if !runs_fit {
        return Err(bad("a producer's runs do not fit the snapshot".into()));
    }
    if !snapshot.producers.windows(2).all(|w| w[0].0 < w[1].0) {
        return Err(bad("producer ids are not in ascending order".into()));
    }
    let table = ProducerTable {
        producers: snapshot.producers.into_iter().collect(),
        snapshot_upto: Some(snapshot.upto),
        ..ProducerTable::default()
    };
    Ok((table, snapshot.upto))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(id: u64, epoch: u16, seq: u32) -> ProducerStamp {
        ProducerStamp {
            producer_id: id,
            epoch,
            base_sequence: seq,
        }
    }

    #[test]
    fn a_retry_is_answered_with_its_first_offsets_and_a_gap_is_refused() {
        let mut t = ProducerTable::default();
        let p = stamp(7, 0, 0);
        assert_eq!(t.check(&p, 10), Ok(SequenceCheck::Append));
        t.record(&p, 10, 100, 1, 10);
        // A second request of two batches, contiguous: one run.
        t.record(&stamp(7, 0, 10), 5, 110, 2, 10);
        t.record(&stamp(7, 0, 15), 5, 115, 2, 10);
        assert_eq!(t.producers[&7].runs.len(), 1);
        assert_eq!(
            t.check(&stamp(7, 0, 10), 5),
            Ok(SequenceCheck::Duplicate {
                base_offset: 110,
                next_offset: 115
            })
        );
        assert_eq!(t.check(&stamp(7, 0, 20), 1), Ok(SequenceCheck::Append));
        assert!(matches!(
            t.check(&stamp(7, 0, 21), 1),
            Err(SequenceError::OutOfOrder {
                expected: 20,
                found: 21,
                ..
            })
        ));
        // Straddling a run's end is no retry of anything.
        assert!(matches!(
            t.check(&stamp(7, 0, 18), 5),
            Err(SequenceError::TooOld { .. })
        ));
        // Another producer between two batches: two runs, both still answered.
        t.record(&stamp(8, 0, 0), 1, 120, 3, 10);
        t.record(&stamp(7, 0, 20), 1, 121, 3, 10);
        assert_eq!(t.producers[&7].runs.len(), 2);
        assert_eq!(
            t.check(&stamp(7, 0, 20), 1),
            Ok(SequenceCheck::Duplicate {
                base_offset: 121,
                next_offset: 122
            })
        );
        assert_eq!(
            t.check(&stamp(7, 0, 0), 10),
            Ok(SequenceCheck::Duplicate {
                base_offset: 100,
                next_offset: 110
            })
        );
    }

    #[test]
    fn epochs_fence_older_ones_and_start_at_zero() {
        let mut t = ProducerTable::default();
        t.record(&stamp(1, 3, 0), 4, 0, 1, 10);
        assert!(matches!(
            t.check(&stamp(1, 2, 4), 1),
            Err(SequenceError::Fenced { current: 3, .. })
        ));
        assert!(matches!(
            t.check(&stamp(1, 4, 4), 1),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        assert_eq!(t.check(&stamp(1, 4, 0), 1), Ok(SequenceCheck::Append));
        t.record(&stamp(1, 4, 0), 1, 4, 2, 10);
        assert_eq!(t.producers[&1].epoch, 4);
        assert_eq!(t.producers[&1].runs.len(), 1);
    }

    #[test]
    fn only_the_last_runs_are_kept_and_older_retries_are_too_old() {
        let mut t = ProducerTable::default();
        for i in 0..8u32 {
            // Every batch at a gap in offsets: a run each.
            t.record(&stamp(1, 0, i), 1, u64::from(i) * 2, 1, 10);
        }
        assert_eq!(t.producers[&1].runs.len(), RUNS_KEPT);
        assert!(matches!(
            t.check(&stamp(1, 0, 2), 1),
            Err(SequenceError::TooOld { .. })
        ));
        assert!(matches!(
            t.check(&stamp(1, 0, 3), 1),
            Ok(SequenceCheck::Duplicate { base_offset: 6, .. })
        ));
    }

    #[test]
    fn idle_and_surplus_producers_are_forgotten() {
        let mut t = ProducerTable::default();
        t.record(&stamp(1, 0, 0), 1, 0, 1_000, 2);
        t.record(&stamp(2, 0, 0), 1, 1, 2_000, 2);
        t.record(&stamp(3, 0, 0), 1, 2, 3_000, 2);
        assert_eq!(t.len(), 2, "producer 1, the least recently active, went");
        assert!(!t.producers.contains_key(&1));
        assert_eq!(t.expire(3_500, 1_000), 1);
        assert!(t.producers.contains_key(&3));
    }

    #[test]
    fn truncation_cuts_runs_and_replay_skips_what_the_table_has() {
        let mut t = ProducerTable::default();
        t.record(&stamp(1, 0, 0), 10, 0, 1, 10);
        t.record(&stamp(2, 0, 0), 5, 10, 1, 10);
        t.truncate(4);
        assert_eq!(t.producers[&1].runs[0].last_sequence, 3);
        assert!(!t.producers.contains_key(&2));
        assert_eq!(t.check(&stamp(1, 0, 4), 6), Ok(SequenceCheck::Append));

        let mut builder = crate::record::BatchBuilder::default();
        builder.push_parts(5, None, b"v", []);
        let bytes = builder.finish_stamped(0, Some(stamp(1, 0, 0)));
        let mut header = BatchHeader::parse(&bytes).unwrap();
        let before = t.clone();
        t.replay(&header, 10, 10);
        assert_eq!(t.producers, before.producers, "offset 0 is already covered");
        header.base_offset = 4;
        header.producer = Some(stamp(1, 0, 4));
        t.replay(&header, 10, 10);
        assert_eq!(t.producers[&1].runs[0].last_sequence, 4);
    }

    #[test]
    fn a_snapshot_round_trips_and_any_flip_is_refused() {
        let mut t = ProducerTable::default();
        t.record(&stamp(1, 2, 0), 10, 0, 1, 10);
        t.record(&stamp(9, 0, 5), 1, 10, 1, 10);
        let bytes = t.encode(11);
        let (back, upto) = decode(&bytes, Path::new("x")).unwrap();
        assert_eq!((back.producers, upto), (t.producers.clone(), 11));
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert!(
                decode(&b, Path::new("x")).is_err(),
                "flip at byte {i} passed"
            );
        }
        // Runs past `upto` cannot be.
        assert!(decode(&t.encode(5), Path::new("x")).is_err());
    }
}
