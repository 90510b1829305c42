//! A partition log: the ordered list of segments, appends with group commit, reads, retention,
//! truncation, recovery on open.

use super::{LogConfig, Offset, Result};
use crate::record::ValidatedBatch;
use bytes::Bytes;
use std::path::Path;

/// Where an appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Offset of the batch's first record.
    pub base_offset: Offset,
    /// One past the batch's last record.
    pub next_offset: Offset,
}

/// Whole batches read from one segment.
#[derive(Debug, Clone)]
pub struct ReadChunk {
    /// Whole, CRC-checked batches back to back, a zero-copy slice of the segment. The first may
    /// start before the offset asked for. Empty when the offset is the high watermark.
    pub batches: Bytes,
    /// One past the last record in `batches` (the offset asked for, when empty).
    pub next_offset: Offset,
    /// The log's high watermark when read: every offset below it is readable.
    pub high_watermark: Offset,
    /// The log's earliest offset when read.
    pub earliest_offset: Offset,
}

/// A summary of a log's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogStats {
    /// The first stored offset.
    pub earliest_offset: Offset,
    /// The high watermark.
    pub next_offset: Offset,
    /// Bytes of batches stored.
    pub bytes: u64,
    /// Number of segments.
    pub segments: u32,
}

/// A durable partition log. `Send + Sync`: share it behind an `Arc`; appends serialise on an
/// internal lock and share fsyncs, reads run concurrently.
pub struct Log {}

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from a crash if there was one.
    pub fn open(dir: &Path, config: LogConfig) -> Result<Log> {
        todo!("{dir:?} {config:?}")
    }
    /// Appends one batch; see [`Log::append_batches`].
    pub fn append(&self, batch: &ValidatedBatch<'_>) -> Result<Appended> {
        todo!("{batch:?}")
    }
    /// Appends batches in order, assigning consecutive offsets. Returns once they are as durable
    /// as the fsync policy says.
    pub fn append_batches(&self, batches: &[ValidatedBatch<'_>]) -> Result<Vec<Appended>> {
        todo!("{batches:?}")
    }
    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadChunk> {
        todo!("{offset} {max_bytes}")
    }
    /// The first offset whose record has a timestamp >= `timestamp_ms`; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        todo!("{timestamp_ms}")
    }
    /// The first stored offset.
    pub fn earliest_offset(&self) -> Offset {
        todo!()
    }
    /// The high watermark: every offset below it is readable (under `Always`, durable).
    pub fn next_offset(&self) -> Offset {
        todo!()
    }
    /// Offsets, bytes and segment count.
    pub fn stats(&self) -> LogStats {
        todo!()
    }
    /// Removes every batch holding an offset >= `offset`. Returns the new next offset
    /// (which is below `offset` when `offset` falls inside a batch).
    pub fn truncate(&self, offset: Offset) -> Result<Offset> {
        todo!("{offset}")
    }
    /// Seals the active segment and starts a new one.
    pub fn roll(&self) -> Result<()> {
        todo!()
    }
    /// Replaces the settings (retention, roll, fsync) from now on.
    pub fn set_config(&self, config: LogConfig) {
        todo!("{config:?}")
    }
    /// Periodic work: interval fsync, recovery checkpoint, roll by age, retention.
    pub fn tick(&self, now_ms: i64) -> Result<()> {
        todo!("{now_ms}")
    }
    /// Deletes sealed segments past retention; returns how many.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        todo!("{now_ms}")
    }
    /// Makes everything appended so far durable and writes a checkpoint.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }
    /// Flushes and leaves a clean-shutdown marker so the next open scans nothing.
    pub fn close(self) -> Result<()> {
        todo!()
    }
}
