//! How a log rolls, retains and syncs.

use super::fault::FaultInjector;
use std::{sync::Arc, time::Duration};

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// An append returns only after its bytes are durable. Concurrent appenders share one
    /// `fdatasync` (group commit). Readers only see durable records.
    Always,
    /// Bytes are synced at least this often (by [`super::Log::tick`] or the next append);
    /// a crash can lose up to this window.
    Interval(Duration),
    /// The OS writes back when it likes; a machine crash can lose anything not yet written back.
    Never,
}

/// [`LogConfig::cached_tail_bytes`] unless set: a consumer up to this far behind reads from memory.
pub const DEFAULT_CACHED_TAIL_BYTES: u64 = 256 * 1024 * 1024;

/// The smallest [`LogConfig::segment_max_bytes`] a log uses: [`super::Log::open`] raises a
/// smaller one to it (the broker refuses a smaller one outright).
pub const MIN_SEGMENT_BYTES: u64 = 4096;

/// Default of [`LogConfig::producer_expiry_ms`]: a day, as Kafka's.
pub const DEFAULT_PRODUCER_EXPIRY_MS: u64 = 24 * 3600 * 1000;
/// Default of [`LogConfig::max_producers`].
pub const DEFAULT_MAX_PRODUCERS: usize = 10_000;

/// A partition log's settings.
#[derive(Clone)]
pub struct LogConfig {
    /// A segment rolls before it would grow past this many bytes (a single larger batch gets a
    /// segment of its own).
    pub segment_max_bytes: u64,
    /// A segment rolls once it has taken appends for this long. `None`: never by age.
    pub segment_max_ms: Option<u64>,
    /// Sealed segments whose newest record is older than this are deleted. `None`: keep.
    pub retention_ms: Option<u64>,
    /// Oldest sealed segments are deleted while the log is larger than this. `None`: no limit.
    pub retention_bytes: Option<u64>,
    /// Durability of appends.
    pub fsync: FsyncPolicy,
    /// Bytes between two sparse index entries.
    pub index_interval_bytes: u32,
    /// Bytes of new data after which [`super::Log::tick`] writes a recovery checkpoint.
    pub checkpoint_interval_bytes: u64,
    /// The newest bytes of the log the page cache keeps; older ones are written back and dropped
    /// from it as appends go on (reads of them then come from disk, with read-ahead). `None`:
    /// the kernel decides. See `page_cache.rs` for why.
    pub cached_tail_bytes: Option<u64>,
    /// An idempotent producer that appended nothing for this long is forgotten (a retry of its
    /// batches after that is appended again). Kafka's `producer.id.expiration.ms`.
    pub producer_expiry_ms: u64,
    /// The most producers a partition remembers; beyond it the least recently active one goes.
    pub max_producers: usize,
    /// A seam for tests that inject I/O faults; `None` in production.
    pub faults: Option<Arc<dyn FaultInjector>>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_max_bytes: 256 * 1024 * 1024,
            segment_max_ms: Some(7 * 24 * 3600 * 1000),
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            fsync: FsyncPolicy::Always,
            index_interval_bytes: 4096,
            checkpoint_interval_bytes: 64 * 1024 * 1024,
            cached_tail_bytes: Some(DEFAULT_CACHED_TAIL_BYTES),
            producer_expiry_ms: DEFAULT_PRODUCER_EXPIRY_MS,
            max_producers: DEFAULT_MAX_PRODUCERS,
            faults: None,
        }
    }
}

impl std::fmt::Debug for LogConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogConfig")
            .field("segment_max_bytes", &self.segment_max_bytes)
            .field("segment_max_ms", &self.segment_max_ms)
            .field("retention_ms", &self.retention_ms)
            .field("retention_bytes", &self.retention_bytes)
            .field("fsync", &self.fsync)
            .field("index_interval_bytes", &self.index_interval_bytes)
            .field("checkpoint_interval_bytes", &self.checkpoint_interval_bytes)
            .field("cached_tail_bytes", &self.cached_tail_bytes)
            .field("producer_expiry_ms", &self.producer_expiry_ms)
            .field("max_producers", &self.max_producers)
            .field("faults", &self.faults.is_some())
            .finish()
    }
}
