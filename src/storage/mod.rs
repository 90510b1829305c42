//! The synchronous, durable partition log: segments, sparse offset and time indexes, recovery
//! checkpoints, group-commit fsync and retention. It knows nothing of tokio, gRPC or topics.
//!
//! A partition is a directory of segments (`{base_offset:020}.log`, `.index`, `.timeindex`), a
//! `recovery-point` checkpoint, a `producer-state` snapshot of its idempotent producers and, after
//! a clean shutdown, a `clean-shutdown` marker.

pub(crate) mod checked;
mod checkpoint;
mod config;
mod error;
mod fault;
mod fs;
mod index;
pub(crate) mod journal;
mod log;
mod page_cache;
mod producers;
mod recovery;
mod retention;
mod segment;
mod sync_times;

pub use config::{
    DEFAULT_CACHED_TAIL_BYTES, DEFAULT_MAX_PRODUCERS, DEFAULT_PRODUCER_EXPIRY_MS, FsyncPolicy,
    LogConfig, MIN_SEGMENT_BYTES,
};
pub use error::StorageError;
pub use fault::{FaultInjector, FileOp, IoEvent};
pub(crate) use fs::Io;
pub use log::{AppendWait, Appended, EntryId, Log, LogEndListener, LogStats, ReadChunk};
pub use producers::{RUNS_KEPT, SequenceError};
pub use sync_times::{SYNC_BUCKETS_SECONDS, SyncTimesSnapshot, sync_times};

/// A record's position in a partition: the first record is 0, and each record gets the next one.
pub type Offset = u64;

/// Result type of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;

/// Entry points for the fuzz targets in `fuzz/`: the index, checkpoint and producer-state
/// loaders on bytes, as recovery runs them on a file's contents. Not part of the API.
#[doc(hidden)]
pub mod fuzzing {
    use super::{checkpoint, index, journal, producers};
    use std::path::{Path, PathBuf};

    /// Decodes a `producer-state` file and, if it is accepted, encodes the table back: its
    /// `upto` and the bytes the storage layer would write for it.
    pub fn reencode_producer_state(bytes: &[u8]) -> Option<(u64, Vec<u8>)> {
        producers::reencode(bytes)
    }

    /// Decodes a `recovery-point` file: `(segment_base, position, next_offset, max_timestamp_ms)`,
    /// or `None` if it is refused as damaged.
    pub fn decode_checkpoint(bytes: &[u8]) -> Option<(u64, u64, u64, i64)> {
        let p = checkpoint::decode(bytes, Path::new("recovery-point")).ok()?;
        Some((
            p.segment_base,
            p.position,
            p.next_offset,
            p.max_timestamp_ms,
        ))
    }

    /// Encodes a checkpoint as the storage layer writes it.
    pub fn encode_checkpoint(
        segment_base: u64,
        position: u64,
        next_offset: u64,
        max_timestamp_ms: i64,
    ) -> Vec<u8> {
        checkpoint::encode(&checkpoint::RecoveryPoint {
            segment_base,
            position,
            next_offset,
            max_timestamp_ms,
        })
    }

    /// How a journal's bytes (after its magic) end, as replay sees them.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum JournalTail {
        /// After the last whole entry, nothing.
        Clean,
        /// What a crashed append leaves: replay cuts it.
        Torn,
        /// Damage: replay refuses the journal.
        Damaged,
    }

    /// Replays a journal's bytes after the magic: the entries' payloads, the bytes they take,
    /// and how the rest ends.
    pub fn decode_journal(bytes: &[u8]) -> (Vec<Vec<u8>>, usize, JournalTail) {
        let replay = journal::decode(bytes);
        let tail = match replay.tail {
            journal::Tail::Clean => JournalTail::Clean,
            journal::Tail::Torn => JournalTail::Torn,
            journal::Tail::Damaged { .. } => JournalTail::Damaged,
        };
        (
            replay.entries.iter().map(|e| e.to_vec()).collect(),
            replay.valid_len,
            tail,
        )
    }

    /// Frames `payload` as a journal entry.
    pub fn encode_journal_entry(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        journal::encode_entry(payload, &mut out);
        out
    }

    /// What [`load_indexes`] found.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct IndexLookup {
        /// The indexes passed the checks recovery runs before it trusts them.
        pub sane: bool,
        /// The offset index entry a read of the offset starts from: (relative offset, position).
        pub floor: Option<(u32, u32)>,
        /// The time index entry a timestamp search starts from: (timestamp, relative offset).
        pub scan_start: Option<(i64, u32)>,
    }

    /// Loads `.index` and `.timeindex` contents, checks them as recovery does against a segment
    /// of `size` bytes holding `offsets` records, and looks up `rel_offset` and `timestamp_ms`.
    pub fn load_indexes(
        offset_index: &[u8],
        time_index: &[u8],
        size: u64,
        offsets: u64,
        rel_offset: u32,
        timestamp_ms: i64,
    ) -> IndexLookup {
        let o = index::IndexFile::<index::OffsetEntry>::from_bytes(PathBuf::new(), offset_index);
        let t = index::IndexFile::<index::TimeEntry>::from_bytes(PathBuf::new(), time_index);
        let sane = index::offset_index_is_sane(o.entries(), size, offsets)
            && index::time_index_is_sane(t.entries(), offsets);
        IndexLookup {
            sane,
            floor: o.floor(rel_offset).map(|e| (e.rel_offset, e.position)),
            scan_start: t
                .scan_start(timestamp_ms)
                .map(|e| (e.timestamp_ms, e.rel_offset)),
        }
    }
}
