//! A partition log: the ordered list of segments, appends with group commit, reads.
//! Opening and recovery live in `recovery.rs`; retention and truncation in `retention.rs`.

use super::{
    FsyncPolicy, LogConfig, Offset, Result, StorageError,
    checkpoint::{self, RecoveryPoint},
    fs::Io,
    page_cache::{DropBehind, Range},
    producers::{ProducerTable, SequenceCheck},
    segment::{Indexer, Segment},
};
use crate::record::{BATCH_HEADER_BYTES, BatchHeader, ValidatedBatch};
use bytes::Bytes;
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Instant,
};

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

/// A batch's place in the partition's Raft log: the leader's term and the entry's index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryId {
    /// The term of the leader that appended the entry.
    pub term: u64,
    /// The entry's index: one more than the entry before it's.
    pub index: u64,
}

/// Which term and Raft index the batches of an append get.
#[derive(Debug, Clone, Copy)]
enum Stamp<'a> {
    /// The term of the log's last batch and the next indexes (a single broker's appends).
    Continue,
    /// The given term and the next indexes.
    Term(u64),
    /// One id per batch, as a Raft leader gave them.
    Entries(&'a [EntryId]),
}

/// When an append returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendWait {
    /// Once the batches are as durable as the log's fsync policy says: under `Always` fsynced
    /// (concurrent appends share one fsync), under `Interval` when a sync is due.
    Policy,
    /// Once they are written to the file and readable, not necessarily durable:
    /// [`Log::sync_to`] makes them durable (a replica reports an append to Raft only after that).
    /// Readers of the log see them at once, whatever the policy: a replicated partition shows
    /// consumers only what its Raft group committed, not the log end.
    Written,
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
    /// Idempotent producers the partition remembers.
    pub producers: u32,
}

/// The append side, behind one lock.
pub(crate) struct Writer {
    pub active: Arc<Segment>,
    /// Bytes written to the active segment (may be ahead of what readers see).
    pub size: u64,
    /// The offset the next appended record gets (may be ahead of the log end readers see).
    pub write_offset: Offset,
    pub indexer: Indexer,
    /// Wall-clock ms of the active segment's first append (for rolling by age).
    pub first_append_ms: Option<i64>,
    /// Bytes written since the last checkpoint.
    pub since_checkpoint: u64,
    /// Bytes of every sealed segment.
    pub sealed_bytes: u64,
    pub last_sync: Instant,
    /// The active segment file's (preallocated, sparse) length.
    pub capacity: u64,
    /// Bytes of the active segment with disk blocks allocated ahead of the writes.
    pub allocated: u64,
    /// What of the log's older bytes was asked to leave the page cache.
    pub drop_behind: DropBehind,
    /// The idempotent producers' last batches (`producers.rs`).
    pub producers: ProducerTable,
    /// Wall-clock ms after which [`Log::tick`] next expires idle producers.
    pub next_producer_expiry_ms: i64,
    /// The term and Raft index of the last batch written (0 and 0 in an empty log; index 0 for
    /// batches written before indexes): appends without a term of their own are in its term, no
    /// append may be in an older one, and the next batch's index is one more unless the append
    /// names its own.
    pub last: EntryId,
    /// Truncations so far: a sync that began before one publishes nothing.
    pub truncations: u64,
}

/// How often [`Log::tick`] looks for idle producers to forget.
const PRODUCER_EXPIRY_CHECK_MS: i64 = 60_000;

/// Blocks are allocated ahead of the write position by the segment's size so far, within these
/// bounds: a busy segment allocates in large steps, an idle partition's segment stays small.
const ALLOCATE_AHEAD_MIN: u64 = 64 * 1024;
const ALLOCATE_AHEAD_MAX: u64 = 16 * 1024 * 1024;

impl Writer {
    /// The active segment has taken appends for `segment_max_ms` by `now_ms`.
    fn active_segment_too_old(&self, config: &LogConfig, now_ms: i64) -> bool {
        match (self.first_append_ms, config.segment_max_ms) {
            (Some(first), Some(max)) => now_ms.saturating_sub(first) >= ms_as_i64(max),
            _ => false,
        }
    }
}

/// The writer's state before a request's first batch: what a failed request is undone to.
#[derive(Clone, Copy)]
struct Mark {
    base_offset: Offset,
    size: u64,
    write_offset: Offset,
    indexer: Indexer,
    first_append_ms: Option<i64>,
    since_checkpoint: u64,
    offset_entries: usize,
    time_entries: usize,
    max_timestamp_ms: i64,
    /// The term and Raft index of the last batch that stays.
    last: EntryId,
}

impl Mark {
    fn of(w: &Writer) -> Mark {
        let (offset_entries, time_entries) = w
            .active
            .indexes_mut(|idx| (idx.offsets.entries().len(), idx.times.entries().len()))
            .unwrap_or_default();
        Mark {
            base_offset: w.active.base_offset,
            size: w.size,
            write_offset: w.write_offset,
            indexer: w.indexer,
            first_append_ms: w.first_append_ms,
            since_checkpoint: w.since_checkpoint,
            offset_entries,
            time_entries,
            max_timestamp_ms: w.active.max_timestamp(),
            last: w.last,
        }
    }

    /// The state of an active segment that a roll just started.
    fn empty(w: &Writer, config: &LogConfig) -> Mark {
        Mark {
            base_offset: w.active.base_offset,
            size: 0,
            write_offset: w.active.base_offset,
            indexer: Indexer::new(config.index_interval_bytes),
            first_append_ms: None,
            since_checkpoint: 0,
            offset_entries: 0,
            time_entries: 0,
            max_timestamp_ms: i64::MIN,
            // The batches before the roll stay: the ids are still theirs.
            last: w.last,
        }
    }
}

/// A duration in ms as an i64 for arithmetic with timestamps: a setting too large for an i64
/// is as good as forever (a plain cast would make it negative, i.e. already past).
pub(crate) fn ms_as_i64(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

#[derive(Debug, Default)]
struct SyncState {
    durable_next: Offset,
    syncing: bool,
}

/// Hears every move of a log's end (the offset below which its records are readable): the
/// broker's partition, which owns the high watermark readers see and wake on, implements it.
/// Called with the new end, under the log's locks: it must be quick and must not call the log.
pub trait LogEndListener: Send + Sync {
    /// The log end is now `end` (up after appends and syncs, down after a truncation).
    fn log_end_moved(&self, end: Offset);
}

/// A durable partition log. `Send + Sync`: share it behind an `Arc`; appends serialise on an
/// internal lock and share fsyncs, reads run concurrently.
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) io: Io,
    pub(crate) config: RwLock<LogConfig>,
    /// Ordered by base offset; contiguous; the last is the active segment.
    pub(crate) segments: RwLock<Vec<Arc<Segment>>>,
    pub(crate) writer: Mutex<Writer>,
    /// The log end: every offset below it is readable in this log (under `Always`, durable).
    /// Only [`Log::advance_end`] and [`Log::reset_end`] move it, and they tell the listener.
    pub(crate) end_offset: AtomicU64,
    /// Told every time the log end moves: the partition that owns the high watermark.
    listener: OnceLock<Arc<dyn LogEndListener>>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    pub(crate) poisoned: Mutex<Option<String>>,
    /// The clean-shutdown marker is still on disk: it must go (durably) before the log changes.
    /// Removing it lazily keeps an open after a clean shutdown free of any fsync.
    pub(crate) clean_marker: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) use crate::record::now_ms;

impl Log {
    pub(crate) fn assemble(
        dir: PathBuf,
        io: Io,
        config: LogConfig,
        segments: Vec<Arc<Segment>>,
        writer: Writer,
    ) -> Log {
        let next = writer.write_offset;
        Log {
            dir,
            io,
            config: RwLock::new(config),
            segments: RwLock::new(segments),
            writer: Mutex::new(writer),
            end_offset: AtomicU64::new(next),
            listener: OnceLock::new(),
            sync: Mutex::new(SyncState {
                durable_next: next,
                syncing: false,
            }),
            synced: Condvar::new(),
            poisoned: Mutex::new(None),
            clean_marker: AtomicBool::new(false),
        }
    }

    /// Sets the one listener told of every move of the log end (a second call is ignored).
    pub fn set_listener(&self, listener: Arc<dyn LogEndListener>) {
        let _ = self.listener.set(listener);
    }

    /// Moves the log end up to `end` (never down) and tells the listener if it moved.
    fn advance_end(&self, end: Offset) {
        let before = self.end_offset.fetch_max(end, Ordering::AcqRel);
        if end > before
            && let Some(l) = self.listener.get()
        {
            l.log_end_moved(end);
        }
    }

    /// Sets the log end to `end` (after a truncation) and tells the listener.
    fn reset_end(&self, end: Offset) {
        self.end_offset.store(end, Ordering::Release);
        if let Some(l) = self.listener.get() {
            l.log_end_moved(end);
        }
    }

    pub(crate) fn config(&self) -> LogConfig {
        self.config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The partition directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn check_poisoned(&self) -> Result<()> {
        match lock(&self.poisoned).as_ref() {
            Some(cause) => Err(StorageError::Poisoned {
                path: self.dir.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn poison(&self, cause: &StorageError) {
        let mut p = lock(&self.poisoned);
        if p.is_none() {
            tracing::error!(dir = %self.dir.display(), %cause, "log poisoned");
            *p = Some(cause.poison_cause());
        }
    }

    /// Appends one batch; see [`Log::append_batches`].
    pub fn append(&self, batch: &ValidatedBatch<'_>) -> Result<Appended> {
        let mut v = self.append_batches(std::slice::from_ref(batch))?;
        v.pop().ok_or_else(|| unreachable_empty(&self.dir))
    }

    /// Appends batches in order, assigning consecutive offsets, in the term of the log's last
    /// batch. Returns once they are as durable as the fsync policy says; under `Always`,
    /// concurrent callers share one fsync.
    pub fn append_batches(&self, batches: &[ValidatedBatch<'_>]) -> Result<Vec<Appended>> {
        self.append_with(Stamp::Continue, batches, AppendWait::Policy)
    }

    /// Appends batches as [`Log::append_batches`] does, stamped with the leader's `term`, and
    /// returns as `wait` says. A term below the last batch's is refused
    /// ([`StorageError::TermBehind`]): in a Raft log terms never go down.
    pub fn append_in_term(
        &self,
        term: u64,
        batches: &[ValidatedBatch<'_>],
        wait: AppendWait,
    ) -> Result<Vec<Appended>> {
        self.append_with(Stamp::Term(term), batches, wait)
    }

    /// Appends Raft entries: batch `i` with `ids[i]`, which a replica's Raft log gave it. Terms
    /// never go down ([`StorageError::TermBehind`]) and indexes always go up
    /// ([`StorageError::IndexBehind`]), from the log's last batch and from one entry to the next;
    /// a log with no batch takes any first index. Gaps in indexes are the caller's to prevent
    /// (a Raft log has none past its purged prefix). Returns as `wait` says.
    pub fn append_entries(
        &self,
        ids: &[EntryId],
        batches: &[ValidatedBatch<'_>],
        wait: AppendWait,
    ) -> Result<Vec<Appended>> {
        if ids.len() != batches.len() {
            return Err(StorageError::EntryCount {
                path: self.dir.clone(),
                ids: ids.len(),
                batches: batches.len(),
            });
        }
        self.append_with(Stamp::Entries(ids), batches, wait)
    }

    /// What the partition's idempotent-producer table says of a batch stamped `stamp` with
    /// `record_count` records, for a path that appends it without the table's check (a
    /// replicated partition's leader asks before its Raft group appends): `None`, append it;
    /// `Some`, it was stored before at these offsets; or the sequence error
    /// ([`StorageError::Sequence`]) the append would have failed with.
    pub fn check_producer(
        &self,
        stamp: &crate::record::ProducerStamp,
        record_count: u32,
    ) -> Result<Option<Appended>> {
        match lock(&self.writer).producers.check(stamp, record_count)? {
            SequenceCheck::Append => Ok(None),
            SequenceCheck::Duplicate {
                base_offset,
                next_offset,
            } => Ok(Some(Appended {
                base_offset,
                next_offset,
            })),
        }
    }

    /// The term and Raft index of the last batch written, readable or not (0 and 0 in an empty
    /// log).
    pub fn last_entry(&self) -> EntryId {
        lock(&self.writer).last
    }

    /// The first offset of the batch whose Raft index is `index`, if the log holds it (a
    /// binary search over the readable batches, whose indexes never go down).
    pub fn offset_of_entry(&self, index: u64) -> Result<Option<Offset>> {
        Ok(self
            .first_entry_from(index)?
            .and_then(|(offset, found)| (found == index).then_some(offset)))
    }

    /// The first offset and the Raft index of the first readable batch whose index is at least
    /// `index` (a binary search: indexes never go down along the offsets), if there is one.
    pub fn first_entry_from(&self, index: u64) -> Result<Option<(Offset, u64)>> {
        let (mut lo, mut hi) = (self.earliest_offset(), self.next_offset());
        // The first offset whose batch's index is >= `index`, in [lo, hi].
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let header = self.header_at(mid)?;
            if header.raft_index < index {
                lo = header.next_offset();
            } else {
                // `lo` is a batch boundary at or below `mid`: the batch starts at or after it.
                hi = header.base_offset;
            }
        }
        if lo >= self.next_offset() {
            return Ok(None);
        }
        let header = self.header_at(lo)?;
        Ok(Some((header.base_offset, header.raft_index)))
    }

    /// The header of the batch holding `offset` (a readable one).
    pub fn header_at(&self, offset: Offset) -> Result<BatchHeader> {
        let chunk = self.read(offset, 1)?;
        BatchHeader::parse(&chunk.batches).ok_or(StorageError::OffsetOutOfRange {
            requested: offset,
            earliest: chunk.earliest_offset,
            next: chunk.high_watermark,
        })
    }

    /// Blocks until every offset below `next` is durable, leading or joining a group fsync (at
    /// once if they are). Offsets not written, or truncated away while it waits, are
    /// [`StorageError::NotWritten`]: durability is never reported for what the log lacks.
    pub fn sync_to(&self, next: Offset) -> Result<()> {
        self.check_poisoned()?;
        self.wait_durable(next)
    }

    /// The term of the batch holding `offset`: 0 for batches written before terms (format
    /// versions 1 and 2). Only readable offsets have one ([`StorageError::OffsetOutOfRange`]).
    pub fn term_at(&self, offset: Offset) -> Result<u64> {
        Ok(self.header_at(offset)?.term)
    }

    /// The term of the last batch written, readable or not (0 in an empty log).
    pub fn last_term(&self) -> u64 {
        lock(&self.writer).last.term
    }

    /// The term and Raft index of the last readable batch (0 and 0 when there is none), for the
    /// writer after an open or a truncation. A damaged last batch (found by a read, not by
    /// recovery) does not stop the log: its ids count as 0, and reads of it report the damage.
    pub(crate) fn entry_of_end(&self) -> Result<EntryId> {
        let end = self.next_offset();
        let none = EntryId::default();
        if end == 0 || end <= self.earliest_offset() {
            return Ok(none);
        }
        match self.header_at(end - 1) {
            Ok(h) => Ok(EntryId {
                term: h.term,
                index: h.raft_index,
            }),
            Err(e @ StorageError::Corrupt { .. }) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "the last batch's term and index are unreadable; taking 0");
                Ok(none)
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the writer's term and Raft index from the last readable batch.
    pub(crate) fn resume_entry_ids(&self, w: &mut Writer) -> Result<()> {
        let end = self.entry_of_end()?;
        w.last = end;
        Ok(())
    }

    fn append_with(
        &self,
        ids: Stamp<'_>,
        batches: &[ValidatedBatch<'_>],
        wait: AppendWait,
    ) -> Result<Vec<Appended>> {
        self.check_poisoned()?;
        let config = self.config();
        let mut out = Vec::with_capacity(batches.len());
        let mut drop_later: Vec<Range> = Vec::new();
        let target = {
            let mut w = lock(&self.writer);
            self.check_stamp(&w, ids)?;
            self.remove_clean_marker()?;
            self.roll_before_request(&mut w, &config, batches)?;
            let stamps = || batches.iter().filter_map(|b| b.header().producer.as_ref());
            let mut mark = Mark::of(&w);
            let mut saved = w.producers.save(stamps());
            let now = now_ms();
            for (i, batch) in batches.iter().enumerate() {
                let stamp = batch.header().producer;
                let check = match (stamp, ids) {
                    // A replica stores what its leader stored: the leader checked the producer.
                    (_, Stamp::Entries(_)) | (None, _) => Ok(SequenceCheck::Append),
                    (Some(s), _) => w.producers.check(&s, batch.record_count()),
                };
                let written = match check {
                    Ok(SequenceCheck::Append) => {
                        let id = match ids {
                            Stamp::Continue => EntryId {
                                term: w.last.term,
                                index: w.last.index + 1,
                            },
                            Stamp::Term(term) => EntryId {
                                term,
                                index: w.last.index + 1,
                            },
                            Stamp::Entries(ids) => ids[i],
                        };
                        self.write_batch(&mut w, &config, batch, id)
                    }
                    Ok(SequenceCheck::Duplicate {
                        base_offset,
                        next_offset,
                    }) => {
                        // Appended before: answered with its offsets, once they are as durable
                        // as this request's (they are below the write offset waited for).
                        out.push(Appended {
                            base_offset,
                            next_offset,
                        });
                        continue;
                    }
                    Err(e) => Err(e.into()),
                };
                match written {
                    Ok(appended) => {
                        if w.active.base_offset != mark.base_offset {
                            // The batch rolled the segment before its write: what came before
                            // it is sealed and published; this batch and those after it, in the
                            // new segment, can still be undone, and the table with them.
                            mark = Mark::empty(&w, &config);
                            saved = w.producers.save(stamps());
                        }
                        if let Some(s) = stamp {
                            w.producers.record(
                                &s,
                                batch.record_count(),
                                appended.base_offset,
                                now,
                                config.max_producers,
                            );
                        }
                        out.push(appended);
                    }
                    Err(e) => {
                        // A roll by the failed batch sealed the request's earlier batches (the
                        // table already holds them, and not the failed one); a failed roll may
                        // have published them. Either way they stay, and so does the table.
                        let rolled = w.active.base_offset != mark.base_offset;
                        if self.undo_request(&mut w, &config, mark) && !rolled {
                            w.producers.restore(saved);
                        }
                        return Err(e);
                    }
                }
            }
            if config.fsync != FsyncPolicy::Always || wait == AppendWait::Written {
                w.active.publish(w.size);
                self.advance_end(w.write_offset);
            }
            if let Some(tail) = config.cached_tail_bytes {
                let active = w.active.clone();
                let size = w.size;
                let ranges = w.drop_behind.after_append(&active, size, tail);
                drop_later.extend(ranges);
            }
            w.write_offset
        };
        // Outside the writer lock: writing back and dropping pages takes a while.
        for range in drop_later {
            range.drop_from_cache();
        }
        match (wait, config.fsync) {
            (AppendWait::Written, _) | (AppendWait::Policy, FsyncPolicy::Never) => {}
            (AppendWait::Policy, FsyncPolicy::Always) => self.wait_durable(target)?,
            (AppendWait::Policy, FsyncPolicy::Interval(every)) => {
                let due = lock(&self.writer).last_sync.elapsed() >= every;
                if due {
                    self.wait_durable(target)?;
                }
            }
        }
        Ok(out)
    }

    /// Refuses ids that would make a term go down or an index not go up.
    fn check_stamp(&self, w: &Writer, stamp: Stamp<'_>) -> Result<()> {
        let term_behind = |term: u64, last: u64| StorageError::TermBehind {
            path: self.dir.clone(),
            term,
            last,
        };
        match stamp {
            Stamp::Term(t) if t < w.last.term => Err(term_behind(t, w.last.term)),
            Stamp::Continue | Stamp::Term(_) => Ok(()),
            Stamp::Entries(ids) => {
                let empty = w.write_offset <= self.earliest_offset();
                let mut last = w.last;
                for (i, id) in ids.iter().enumerate() {
                    if id.term < last.term {
                        return Err(term_behind(id.term, last.term));
                    }
                    let first_in_empty_log = i == 0 && empty;
                    if id.index <= last.index && !first_in_empty_log {
                        return Err(StorageError::IndexBehind {
                            path: self.dir.clone(),
                            index: id.index,
                            last: last.index,
                        });
                    }
                    last = *id;
                }
                Ok(())
            }
        }
    }

    fn write_batch(
        &self,
        w: &mut Writer,
        config: &LogConfig,
        batch: &ValidatedBatch<'_>,
        id: EntryId,
    ) -> Result<Appended> {
        let len = batch.stored_len() as u64;
        let now = now_ms();
        let too_old = w.active_segment_too_old(config, now);
        if w.size > 0 && (w.size + len > config.segment_max_bytes || too_old) {
            self.roll_locked(w, config, len)?;
        }
        if w.size + len > w.capacity {
            if w.size == 0 {
                // The active segment is empty but too small for this batch (the batch is larger
                // than segment_max_bytes, or segment_max_bytes grew): enlarge it in place. A roll
                // here would start a second segment at the same base offset, the same file.
                self.grow_empty_active_locked(w, config, len)?;
            } else {
                // A segment recovery found trimmed (a crash hit its roll) and that is full.
                self.roll_locked(w, config, len)?;
            }
        }
        let base = w.write_offset;
        let head = batch.restamped_header(base, id.term, id.index);
        let file = w.active.file()?;
        let path = w.active.path().to_owned();
        let pos = w.size;
        let end = pos + len;
        if end > w.allocated {
            let ahead = pos.clamp(ALLOCATE_AHEAD_MIN, ALLOCATE_AHEAD_MAX);
            let target = (end + ahead).min(w.capacity).max(end);
            match self
                .io
                .allocate(&file, &path, w.allocated, target - w.allocated)
            {
                Ok(()) => w.allocated = target,
                // Too little space to allocate ahead: take only what this batch needs, so the
                // disk is full when the batch does not fit, not when the step does not.
                Err(StorageError::DiskFull { .. }) if target > end => {
                    self.io
                        .allocate(&file, &path, w.allocated, end - w.allocated)?;
                    w.allocated = end;
                }
                Err(e) => return Err(e),
            }
        }
        let body = batch.body();
        let written = if body.len() <= 64 * 1024 {
            // One syscall for small batches.
            let mut buf = Vec::with_capacity(head.len() + body.len());
            buf.extend_from_slice(&head);
            buf.extend_from_slice(body);
            self.io.write_all_at(&file, &path, &buf, pos)
        } else {
            self.io
                .write_all_at(&file, &path, &head, pos)
                .and_then(|()| {
                    self.io
                        .write_all_at(&file, &path, body, pos + BATCH_HEADER_BYTES as u64)
                })
        };
        if let Err(e) = written {
            // Part of the batch may be in the file: clear it, so that no byte of it is read
            // back or found by recovery, and the next append starts from clean space.
            self.clear_written(&file, &path, pos, end);
            return Err(e);
        }
        let mut header = *batch.header();
        header.base_offset = base;
        header.term = id.term;
        header.raft_index = id.index;
        let active = w.active.clone();
        active.indexes_mut(|idx| {
            w.indexer
                .on_batch(idx, active.base_offset, &header, pos, len);
        });
        active.note_timestamp(header.max_timestamp_ms);
        w.size += len;
        w.since_checkpoint += len;
        w.write_offset = header.next_offset();
        w.last = id;
        w.first_append_ms.get_or_insert(now);
        Ok(Appended {
            base_offset: base,
            next_offset: w.write_offset,
        })
    }

    /// Rolls before a request of several batches that does not fit in the active segment but
    /// fits in a new one, rather than in its middle: a roll seals and publishes what precedes
    /// it, so a request split by one could not be undone if a later batch of it failed.
    fn roll_before_request(
        &self,
        w: &mut Writer,
        config: &LogConfig,
        batches: &[ValidatedBatch<'_>],
    ) -> Result<()> {
        let total: u64 = batches.iter().map(|b| b.stored_len() as u64).sum();
        if batches.len() > 1
            && w.size > 0
            && w.size + total > config.segment_max_bytes.min(w.capacity)
            && total <= config.segment_max_bytes
        {
            self.roll_locked(w, config, 0)?;
        }
        Ok(())
    }

    /// Takes back the batches a failed request wrote: the writer returns to `mark` and their
    /// bytes are cleared. Nothing of them was published (that happens only once the whole
    /// request is written), so no reader has seen them.
    /// Returns false when nothing could be undone because the bytes were already published (a
    /// roll that failed after publishing the segment it was sealing).
    fn undo_request(&self, w: &mut Writer, config: &LogConfig, mark: Mark) -> bool {
        let mark = if w.active.base_offset == mark.base_offset {
            mark
        } else {
            // The failed batch rolled the segment before its write.
            Mark::empty(w, config)
        };
        if w.active.readable_end() > mark.size {
            return false; // published bytes are never taken back
        }
        if w.size > mark.size
            && let Ok(file) = w.active.file()
        {
            let path = w.active.path().to_owned();
            self.clear_written(&file, &path, mark.size, w.size);
        }
        let active = w.active.clone();
        active.indexes_mut(|idx| {
            idx.offsets.truncate(mark.offset_entries);
            idx.times.truncate(mark.time_entries);
        });
        active.reset_max_timestamp(mark.max_timestamp_ms);
        w.size = mark.size;
        w.write_offset = mark.write_offset;
        w.indexer = mark.indexer;
        w.first_append_ms = mark.first_append_ms;
        w.since_checkpoint = mark.since_checkpoint;
        w.last = mark.last;
        true
    }

    /// Overwrites `[from, to)` of the active segment with zeroes and syncs them, after a failed
    /// write. The space is allocated, so this needs none. If it fails, what the file holds
    /// there is unknown: the log is poisoned, and recovery at the next open cuts the garbage.
    fn clear_written(&self, file: &std::fs::File, path: &Path, from: u64, to: u64) {
        static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut pos = from;
        let mut result = Ok(());
        while pos < to && result.is_ok() {
            let n = (to - pos).min(ZEROES.len() as u64);
            result = self.io.write_all_at(file, path, &ZEROES[..n as usize], pos);
            pos += n;
        }
        if let Err(e) = result.and_then(|()| self.io.sync_data(file, path)) {
            self.poison(&e);
        }
    }

    /// Blocks until every offset below `target` is durable, joining or leading a group fsync.
    fn wait_durable(&self, target: Offset) -> Result<()> {
        let mut st = lock(&self.sync);
        loop {
            if st.durable_next >= target {
                return Ok(());
            }
            self.check_poisoned()?;
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            st.syncing = true;
            drop(st);
            let result = self.sync_written();
            st = lock(&self.sync);
            st.syncing = false;
            if let Err(e) = &result {
                // Poisoned before anyone wakes: a second fsync after a failed one may succeed
                // without the lost pages.
                self.poison(e);
            }
            self.synced.notify_all();
            match result {
                Ok(Some(next)) if next < target => {
                    // What is waited for is not written (or a truncation took it).
                    return Err(StorageError::NotWritten {
                        path: self.dir.clone(),
                        next: target,
                        written: next,
                    });
                }
                // `None`: a truncation came between; the loop syncs what is there now.
                Ok(_) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// fdatasyncs the active segment up to what is written now and, unless a truncation came
    /// in between (`None`: what was synced may be gone), publishes it to readers and marks it
    /// durable. Returns the next offset now durable.
    fn sync_written(&self) -> Result<Option<Offset>> {
        let (seg, size, next, truncations) = {
            let mut w = lock(&self.writer);
            w.last_sync = Instant::now();
            (w.active.clone(), w.size, w.write_offset, w.truncations)
        };
        let file = seg.file()?;
        self.io.sync_data(&file, seg.path())?;
        let w = lock(&self.writer);
        if w.truncations != truncations {
            return Ok(None);
        }
        seg.publish(size);
        self.advance_end(next);
        {
            let mut st = lock(&self.sync);
            st.durable_next = st.durable_next.max(next);
        }
        drop(w);
        Ok(Some(next))
    }

    /// Marks everything up to `next` durable (after a roll's or checkpoint's fsync).
    pub(crate) fn mark_durable(&self, next: Offset) {
        let mut st = lock(&self.sync);
        st.durable_next = st.durable_next.max(next);
        self.synced.notify_all();
    }

    /// Resets durability bookkeeping after truncation.
    pub(crate) fn reset_durable(&self, next: Offset) {
        lock(&self.sync).durable_next = next;
        self.reset_end(next);
    }

    /// Seals the active segment and starts one at the next offset. The caller holds the writer.
    pub(crate) fn roll_locked(
        &self,
        w: &mut Writer,
        config: &LogConfig,
        min_capacity: u64,
    ) -> Result<()> {
        let old = w.active.clone();
        let file = old.file()?;
        if let Err(e) = self.io.sync_data(&file, old.path()) {
            self.poison(&e);
            return Err(e);
        }
        old.publish(w.size);
        self.advance_end(w.write_offset);
        self.mark_durable(w.write_offset);
        old.indexes_mut(|idx| {
            w.indexer.seal(idx);
            idx.persist(&self.io)
        })
        .transpose()?;
        // Give back the unused preallocated space; readers never read past the last batch.
        self.io.set_len(&file, old.path(), w.size)?;
        self.io.sync_data(&file, old.path())?;
        let capacity = config.segment_max_bytes.max(min_capacity);
        let new = Arc::new(Segment::create(
            &self.io,
            &self.dir,
            w.write_offset,
            capacity,
        )?);
        self.segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(new.clone());
        if let Some(tail) = config.cached_tail_bytes {
            w.drop_behind.after_roll(&old, w.size, tail);
        }
        w.sealed_bytes += w.size;
        w.active = new;
        w.capacity = capacity;
        w.allocated = 0;
        w.size = 0;
        w.indexer = Indexer::new(config.index_interval_bytes);
        w.first_append_ms = None;
        // The producer snapshot moves on at every roll, changed or not, so that what an open
        // replays after a crash stays within the active segment.
        w.producers.snapshot_at_next_checkpoint(w.write_offset);
        self.checkpoint_locked(w)
    }

    /// Replaces the empty active segment by one preallocated to hold at least `min_capacity`
    /// bytes, at the same base offset (and path). The caller holds the writer.
    fn grow_empty_active_locked(
        &self,
        w: &mut Writer,
        config: &LogConfig,
        min_capacity: u64,
    ) -> Result<()> {
        debug_assert_eq!(w.size, 0);
        debug_assert_eq!(w.active.base_offset, w.write_offset);
        let capacity = config.segment_max_bytes.max(min_capacity);
        let grown = Arc::new(Segment::create(
            &self.io,
            &self.dir,
            w.active.base_offset,
            capacity,
        )?);
        if let Some(last) = self
            .segments
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .last_mut()
        {
            *last = grown.clone();
        }
        w.active = grown;
        w.capacity = capacity;
        w.allocated = 0;
        w.drop_behind.reset_active();
        Ok(())
    }

    /// Syncs the active segment and its indexes, then records the recovery point. The caller
    /// holds the writer.
    pub(crate) fn checkpoint_locked(&self, w: &mut Writer) -> Result<()> {
        let file = w.active.file()?;
        if let Err(e) = self.io.sync_data(&file, w.active.path()) {
            self.poison(&e);
            return Err(e);
        }
        w.active.publish(w.size);
        self.advance_end(w.write_offset);
        self.mark_durable(w.write_offset);
        w.active
            .indexes_mut(|idx| idx.persist(&self.io))
            .transpose()?;
        if w.producers.snapshot_due(w.write_offset) {
            // Before the checkpoint: a snapshot ahead of it is replayed over harmlessly.
            let upto = w.write_offset;
            w.producers.write(&self.io, &self.dir, upto)?;
        }
        let point = RecoveryPoint {
            segment_base: w.active.base_offset,
            position: w.size,
            next_offset: w.write_offset,
            max_timestamp_ms: w.indexer.max_timestamp_ms(),
        };
        checkpoint::write(&self.io, &self.dir, &point)?;
        w.since_checkpoint = 0;
        w.last_sync = Instant::now();
        Ok(())
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (at least one
    /// batch), below the log end. Reads never cross a segment boundary: ask again from
    /// `next_offset`.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadChunk> {
        self.read_below(offset, max_bytes, Offset::MAX)
    }

    /// As [`Log::read`], but never returning a record at or past `high_watermark` (nor past the
    /// log end): the owner of the high watermark reads through this.
    pub fn read_below(
        &self,
        offset: Offset,
        max_bytes: usize,
        high_watermark: Offset,
    ) -> Result<ReadChunk> {
        let end = self.end_offset.load(Ordering::Acquire);
        let hw = end.min(high_watermark);
        let (seg, seg_next, earliest) = {
            let segs = self.segments.read().unwrap_or_else(PoisonError::into_inner);
            let earliest = segs.first().map_or(hw, |s| s.base_offset);
            // Offsets up to the log's end are in range; those at or above `high_watermark`
            // read as nothing yet (a replicated log's commit position can trail its end).
            if offset < earliest || offset > end {
                return Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    earliest,
                    next: end,
                });
            }
            let i = segs
                .partition_point(|s| s.base_offset <= offset)
                .saturating_sub(1);
            let seg_next = segs.get(i + 1).map_or(hw, |s| s.base_offset);
            (segs[i].clone(), seg_next, earliest)
        };
        let empty = ReadChunk {
            batches: Bytes::new(),
            next_offset: offset,
            high_watermark: hw,
            earliest_offset: earliest,
        };
        if offset >= hw {
            return Ok(empty);
        }
        match seg.read(&self.io, offset, max_bytes, seg_next) {
            Ok(Some((batches, next_offset))) => Ok(ReadChunk {
                batches,
                next_offset,
                ..empty
            }),
            Ok(None) => Ok(empty),
            // A segment deleted by retention between the lookup and the read.
            Err(StorageError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    earliest: self.earliest_offset(),
                    next: hw,
                })
            }
            // A truncation below `offset` between the lookup and the read: the offset is gone,
            // not damaged.
            Err(StorageError::Corrupt { .. }) if self.next_offset() <= offset => {
                Err(StorageError::OffsetOutOfRange {
                    requested: offset,
                    earliest: self.earliest_offset(),
                    next: self.next_offset(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// The first offset whose record has a timestamp >= `timestamp_ms`; `None` if there is none.
    pub fn offset_for_timestamp(&self, timestamp_ms: i64) -> Result<Option<Offset>> {
        let hw = self.end_offset.load(Ordering::Acquire);
        let segs = self.segments();
        for (i, seg) in segs.iter().enumerate() {
            let next = segs.get(i + 1).map_or(hw, |s| s.base_offset);
            if seg.base_offset >= hw {
                break;
            }
            if seg.max_timestamp_ms(&self.io, next)? < timestamp_ms {
                continue;
            }
            if let Some(o) = seg.offset_for_timestamp(&self.io, timestamp_ms, next)? {
                return Ok(Some(o));
            }
        }
        Ok(None)
    }

    /// The first stored offset.
    pub fn earliest_offset(&self) -> Offset {
        self.segments
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .first()
            .map_or_else(|| self.next_offset(), |s| s.base_offset)
    }

    /// The log end: one past the last readable record (under `Always`, durable). The broker's
    /// partition publishes it as the high watermark.
    pub fn next_offset(&self) -> Offset {
        self.end_offset.load(Ordering::Acquire)
    }

    /// Offsets, bytes and segment count.
    pub fn stats(&self) -> LogStats {
        let (bytes, segments, producers) = {
            let w = lock(&self.writer);
            let n = self
                .segments
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .len();
            (w.sealed_bytes + w.size, n as u32, w.producers.len())
        };
        LogStats {
            earliest_offset: self.earliest_offset(),
            next_offset: self.next_offset(),
            bytes,
            segments,
            producers: u32::try_from(producers).unwrap_or(u32::MAX),
        }
    }

    /// Seals the active segment and starts a new one (nothing happens if it is empty).
    pub fn roll(&self) -> Result<()> {
        self.check_poisoned()?;
        let config = self.config();
        let mut w = lock(&self.writer);
        if w.size == 0 {
            return Ok(());
        }
        self.roll_locked(&mut w, &config, 0)
    }

    /// Replaces the settings (retention, roll, fsync) from now on.
    pub fn set_config(&self, config: LogConfig) {
        *self.config.write().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Periodic work: interval fsync, roll by age, recovery checkpoint, retention.
    pub fn tick(&self, now_ms: i64) -> Result<()> {
        self.check_poisoned()?;
        let config = self.config();
        {
            let mut w = lock(&self.writer);
            if w.size > 0 && w.active_segment_too_old(&config, now_ms) {
                self.roll_locked(&mut w, &config, 0)?;
            }
            let interval_due = match config.fsync {
                FsyncPolicy::Interval(every) => w.last_sync.elapsed() >= every,
                _ => false,
            };
            if now_ms >= w.next_producer_expiry_ms {
                w.next_producer_expiry_ms = now_ms.saturating_add(PRODUCER_EXPIRY_CHECK_MS);
                let gone = w.producers.expire(now_ms, config.producer_expiry_ms);
                if gone > 0 {
                    tracing::debug!(dir = %self.dir.display(), gone, "idle producers forgotten");
                }
            }
            if w.since_checkpoint >= config.checkpoint_interval_bytes
                || (interval_due && w.since_checkpoint > 0)
            {
                self.checkpoint_locked(&mut w)?;
            }
        }
        self.apply_retention(now_ms)?;
        Ok(())
    }

    /// Makes everything appended so far durable and writes a checkpoint.
    pub fn flush(&self) -> Result<()> {
        self.check_poisoned()?;
        let mut w = lock(&self.writer);
        if w.since_checkpoint == 0 {
            // Nothing appended since the last checkpoint: it is exact, and durable.
            return Ok(());
        }
        self.checkpoint_locked(&mut w)
    }

    /// Syncs and writes a checkpoint even if nothing was appended since the last one (after
    /// recovery, whose findings the old checkpoint does not describe).
    pub(crate) fn checkpoint(&self) -> Result<()> {
        self.check_poisoned()?;
        let mut w = lock(&self.writer);
        self.checkpoint_locked(&mut w)
    }

    /// Removes the clean-shutdown marker left by the last close, before the first change since
    /// the open. Callers hold the writer.
    pub(crate) fn remove_clean_marker(&self) -> Result<()> {
        if self.clean_marker.load(Ordering::Acquire) {
            self.io
                .remove_file(&self.dir.join(checkpoint::CLEAN_SHUTDOWN_FILE))?;
            self.io.sync_dir(&self.dir)?;
            self.clean_marker.store(false, Ordering::Release);
        }
        Ok(())
    }

    /// Flushes and leaves a clean-shutdown marker so the next open scans nothing.
    pub fn close(self) -> Result<()> {
        self.flush()?;
        {
            // The producers as of the exact end, so that the next open replays nothing (also
            // after an open that rebuilt them and appended nothing).
            let mut w = lock(&self.writer);
            let upto = w.write_offset;
            if w.producers.is_dirty() || w.producers.snapshot_upto() != Some(upto) {
                w.producers.write(&self.io, &self.dir, upto)?;
            }
        }
        if self.clean_marker.load(Ordering::Acquire) {
            // Unchanged since a clean open: the marker from the last close still holds.
            return Ok(());
        }
        let marker = self.dir.join(checkpoint::CLEAN_SHUTDOWN_FILE);
        self.io.write_atomic(&marker, b"clean")
    }
}

fn unreachable_empty(dir: &Path) -> StorageError {
    StorageError::io(
        "append",
        dir,
        std::io::Error::other("append of one batch returned no result"),
    )
}
