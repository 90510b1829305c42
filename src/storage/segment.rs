//! One segment: a `{base_offset:020}.log` file of back-to-back batches, memory-mapped for reads,
//! with its sparse `.index` and `.timeindex`.
//!
//! Writes go through `pwrite`, never through the map: a full disk is then an `ENOSPC` error
//! rather than a `SIGBUS`. Reads borrow the map and hand out zero-copy [`Bytes`].

use super::page_cache::READ_AHEAD_BYTES;
use super::{
    Offset, Result, StorageError,
    fs::Io,
    index::{IndexFile, OffsetEntry, TimeEntry, offset_index_is_sane, time_index_is_sane},
};
use crate::record::{
    BATCH_HEADER_BYTES, BATCH_MAGIC, BatchHeader, Corruption, Frame, decode_frame,
};
use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};
use rustix::fs::Advice;
use std::num::NonZeroU64;
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
};

/// `{base_offset:020}.{ext}` in `dir`.
pub(crate) fn segment_path(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
}

/// The two sparse indexes of a segment.
#[derive(Debug)]
pub(crate) struct Indexes {
    pub offsets: IndexFile<OffsetEntry>,
    pub times: IndexFile<TimeEntry>,
}

impl Indexes {
    fn empty(dir: &Path, base: Offset) -> Self {
        Indexes {
            offsets: IndexFile::empty(segment_path(dir, base, "index")),
            times: IndexFile::empty(segment_path(dir, base, "timeindex")),
        }
    }

    fn load(dir: &Path, base: Offset) -> Result<Self> {
        Ok(Indexes {
            offsets: IndexFile::load(segment_path(dir, base, "index"))?,
            times: IndexFile::load(segment_path(dir, base, "timeindex"))?,
        })
    }

    pub(crate) fn persist(&mut self, io: &Io) -> Result<()> {
        self.offsets.persist(io)?;
        self.times.persist(io)
    }

    fn rewrite(&mut self, io: &Io) -> Result<()> {
        self.offsets.rewrite(io)?;
        self.times.rewrite(io)
    }
}

/// Decides where sparse index entries go; shared by appends and recovery scans so that both
/// build the same index.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Indexer {
    interval_bytes: u64,
    since_offset_entry: u64,
    since_time_entry: u64,
    max_timestamp_ms: i64,
    last_batch_rel: u32,
}

impl Indexer {
    pub(crate) fn new(interval_bytes: u32) -> Self {
        Indexer {
            interval_bytes: u64::from(interval_bytes.max(1)),
            since_offset_entry: 0,
            since_time_entry: u64::MAX,
            max_timestamp_ms: i64::MIN,
            last_batch_rel: 0,
        }
    }

    /// Continues after a checkpoint whose newest timestamp was `max_timestamp_ms`.
    pub(crate) fn resume(interval_bytes: u32, max_timestamp_ms: i64) -> Self {
        Indexer {
            max_timestamp_ms,
            ..Indexer::new(interval_bytes)
        }
    }

    pub(crate) fn max_timestamp_ms(&self) -> i64 {
        self.max_timestamp_ms
    }

    /// Records a batch of `len` bytes written at `position` of the segment based at `base`.
    pub(crate) fn on_batch(
        &mut self,
        idx: &mut Indexes,
        base: Offset,
        header: &BatchHeader,
        position: u64,
        len: u64,
    ) {
        let rel = (header.base_offset - base) as u32;
        self.last_batch_rel = rel;
        if self.since_offset_entry >= self.interval_bytes {
            idx.offsets.push(OffsetEntry {
                rel_offset: rel,
                position: position as u32,
            });
            self.since_offset_entry = 0;
        }
        self.since_offset_entry += len;
        if header.max_timestamp_ms > self.max_timestamp_ms {
            self.max_timestamp_ms = header.max_timestamp_ms;
            if self.since_time_entry >= self.interval_bytes {
                idx.times.push(TimeEntry {
                    timestamp_ms: self.max_timestamp_ms,
                    rel_offset: rel,
                });
                self.since_time_entry = 0;
            }
        }
        self.since_time_entry = self.since_time_entry.saturating_add(len);
    }

    /// Damaged bytes were skipped: the next batch gets an offset index entry, so that reads of
    /// it do not walk through the damage.
    pub(crate) fn skip_gap(&mut self) {
        self.since_offset_entry = self.interval_bytes;
    }

    /// Called when the segment is sealed: the time index's last entry carries the segment's
    /// largest timestamp, so retention and timestamp lookups need not scan it.
    pub(crate) fn seal(&self, idx: &mut Indexes) {
        let needs = idx
            .times
            .last()
            .is_none_or(|e| e.timestamp_ms < self.max_timestamp_ms);
        if needs && self.max_timestamp_ms != i64::MIN {
            idx.times.push(TimeEntry {
                timestamp_ms: self.max_timestamp_ms,
                rel_offset: self.last_batch_rel,
            });
        }
    }
}

/// A memory map kept alive by every [`Bytes`] handed out from it.
struct MapSlice {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// One segment file. Shared by `Arc`: a reader that holds one keeps its map alive even after the
/// segment is deleted by retention or replaced by truncation.
pub(crate) struct Segment {
    pub base_offset: Offset,
    dir: PathBuf,
    path: PathBuf,
    file: OnceLock<Arc<File>>,
    map: OnceLock<Arc<Mmap>>,
    /// Bytes readers may read: whole batches below the high watermark.
    readable_end: AtomicU64,
    /// The largest record timestamp among readable batches (`i64::MIN` if unknown yet).
    max_timestamp_ms: AtomicI64,
    /// Loaded on first use for sealed segments.
    indexes: Mutex<Option<Indexes>>,
    /// The indexes were rebuilt since the segment was opened (at most once on a read).
    rebuilt: AtomicBool,
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("base_offset", &self.base_offset)
            .field("readable_end", &self.readable_end())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Maps `len` bytes of `file` read-only.
#[allow(unsafe_code)]
fn map_file(file: &File, path: &Path, len: u64) -> Result<Mmap> {
    // SAFETY: the map is only ever read below `readable_end`, bytes that were fully written
    // before readable_end moved past them and that nothing in this process writes again (the log
    // is append-only; truncation writes a new file and renames it over the old one, so the old
    // inode this map holds keeps its bytes). No file of a live segment is shrunk below a byte a
    // reader may touch: sealing trims only the preallocated space past the last batch, which no
    // reader reads. Another process writing the file is outside what Strata supports (the data
    // directory is Strata's alone), as for every storage engine.
    unsafe { MmapOptions::new().len(len as usize).map(file) }
        .map_err(|e| StorageError::io("mmap", path, e))
}

/// Drops the page-table entries of `len` bytes of `map` from `start`, so that the page cache
/// can let the pages go (it keeps pages a process maps).
#[allow(unsafe_code)]
fn unmap_pages(map: &Mmap, start: usize, len: usize) {
    // SAFETY: the map is a shared, read-only map of a file. MADV_DONTNEED on it only removes
    // this process's page-table entries for the range: the next access faults the same file
    // bytes back in (from the page cache or the disk). It never changes what the memory reads
    // as (that is what makes it unsafe for private or anonymous maps, which are not used here),
    // and the range is below the segment's written end, bytes that are never written again
    // (see `map_file`). `start + len` is within the map (checked by the caller).
    let _ = unsafe { map.unchecked_advise_range(UncheckedAdvice::DontNeed, start, len) };
}

impl Segment {
    /// Creates a new, empty segment preallocated (sparsely) to `capacity` bytes.
    pub(crate) fn create(io: &Io, dir: &Path, base: Offset, capacity: u64) -> Result<Segment> {
        let path = segment_path(dir, base, "log");
        let file = io.open_rw(&path, true)?;
        io.set_len(&file, &path, capacity)?;
        io.sync_data(&file, &path)?;
        io.sync_dir(dir)?;
        let seg = Segment::new(dir, base, 0, Some(Indexes::empty(dir, base)));
        seg.install(file, capacity)?;
        Ok(seg)
    }

    /// A segment found on disk; its file, map and indexes are opened on first use.
    pub(crate) fn existing(dir: &Path, base: Offset, readable_end: u64) -> Segment {
        Segment::new(dir, base, readable_end, None)
    }

    fn new(dir: &Path, base: Offset, readable_end: u64, indexes: Option<Indexes>) -> Segment {
        Segment {
            base_offset: base,
            dir: dir.to_owned(),
            path: segment_path(dir, base, "log"),
            file: OnceLock::new(),
            map: OnceLock::new(),
            readable_end: AtomicU64::new(readable_end),
            max_timestamp_ms: AtomicI64::new(i64::MIN),
            indexes: Mutex::new(indexes),
            rebuilt: AtomicBool::new(false),
        }
    }

    fn install(&self, file: File, len: u64) -> Result<()> {
        let map = if len == 0 {
            None
        } else {
            Some(map_file(&file, &self.path, len)?)
        };
        let _ = self.file.set(Arc::new(file));
        if let Some(map) = map {
            let _ = self.map.set(Arc::new(map));
        }
        Ok(())
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The segment's open file (opened on first use).
    pub(crate) fn file(&self) -> Result<Arc<File>> {
        if let Some(f) = self.file.get() {
            return Ok(f.clone());
        }
        self.open_and_map()?;
        self.file
            .get()
            .cloned()
            .ok_or_else(|| StorageError::io("open", &self.path, std::io::Error::other("no file")))
    }

    fn open_and_map(&self) -> Result<()> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| StorageError::io("open", &self.path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &self.path, e))?
            .len();
        self.install(file, len)
    }

    /// The whole mapped file (its length at open), or an empty slice for an empty file.
    fn mapped(&self) -> Result<Option<Arc<Mmap>>> {
        if self.map.get().is_none() && self.file.get().is_none() {
            self.open_and_map()?;
        }
        Ok(self.map.get().cloned())
    }

    /// Unmaps bytes `from..to` from this process's map, starts writing back those still dirty
    /// and drops the clean ones from the page cache (see `page_cache.rs`). Best effort: errors
    /// only leave more in the cache.
    pub(crate) fn drop_from_cache(&self, from: u64, to: u64) {
        let (Some(file), Some(len)) = (self.file.get(), NonZeroU64::new(to.saturating_sub(from)))
        else {
            return;
        };
        if let Some(map) = self.map.get() {
            let end = (to as usize).min(map.len());
            let start = (from as usize).min(end);
            if end > start {
                unmap_pages(map, start, end - start);
            }
        }
        // DONTNEED writes back dirty pages in the range (without waiting) and drops clean ones.
        let _ = rustix::fs::fadvise(&**file, from, Some(len), Advice::DontNeed);
    }

    pub(crate) fn readable_end(&self) -> u64 {
        self.readable_end.load(Ordering::Acquire)
    }

    /// Lets readers see bytes up to `end` (never moves back).
    pub(crate) fn publish(&self, end: u64) {
        self.readable_end.fetch_max(end, Ordering::AcqRel);
    }

    /// Sets the readable end outright (recovery, truncation).
    pub(crate) fn set_readable_end(&self, end: u64) {
        self.readable_end.store(end, Ordering::Release);
    }

    pub(crate) fn note_timestamp(&self, ts: i64) {
        self.max_timestamp_ms.fetch_max(ts, Ordering::AcqRel);
    }

    /// The largest timestamp noted so far (`i64::MIN` if none).
    pub(crate) fn max_timestamp(&self) -> i64 {
        self.max_timestamp_ms.load(Ordering::Acquire)
    }

    /// Takes back timestamps noted by appends that were undone. Only the writer notes the
    /// active segment's timestamps, so nothing else moves it meanwhile.
    pub(crate) fn reset_max_timestamp(&self, ts: i64) {
        self.max_timestamp_ms.store(ts, Ordering::Release);
    }

    /// Runs `f` on the indexes, loading (and if needed rebuilding) them first. `next_offset` is one
    /// past the segment's last record.
    pub(crate) fn with_indexes<R>(
        &self,
        io: &Io,
        next_offset: Offset,
        f: impl FnOnce(&mut Indexes) -> R,
    ) -> Result<R> {
        let mut guard = lock(&self.indexes);
        if guard.is_none() {
            *guard = Some(self.load_or_rebuild_indexes(io, next_offset)?);
        }
        match guard.as_mut() {
            Some(idx) => Ok(f(idx)),
            None => unreachable!("indexes were just loaded"),
        }
    }

    fn load_or_rebuild_indexes(&self, io: &Io, next_offset: Offset) -> Result<Indexes> {
        let size = self.readable_end();
        let offsets = next_offset.saturating_sub(self.base_offset);
        let idx = Indexes::load(&self.dir, self.base_offset)?;
        if self.indexes_fit(&idx, size, offsets)? && self.time_index_reaches_the_end(&idx, size)? {
            if let Some(t) = idx.times.last() {
                self.note_timestamp(t.timestamp_ms);
            }
            return Ok(idx);
        }
        tracing::warn!(segment = %self.path.display(), "index missing or stale; rebuilding");
        self.rebuilt.store(true, Ordering::Release);
        self.rebuild_indexes(io)
    }

    /// Whether `idx` plausibly indexes the first `size` bytes (`offsets` records) of this segment:
    /// entries in order and in range, and the last offset entry at a batch of its offset. This is
    /// cheap, so it cannot check every entry: reads check each entry they use (`find_batch`).
    pub(crate) fn indexes_fit(&self, idx: &Indexes, size: u64, offsets: u64) -> Result<bool> {
        Ok(offset_index_is_sane(idx.offsets.entries(), size, offsets)
            && time_index_is_sane(idx.times.entries(), offsets)
            && match idx.offsets.last() {
                None => size == 0 || idx.times.last().is_some(),
                Some(e) => self
                    .header_at(u64::from(e.position), size)?
                    .is_some_and(|h| h.base_offset == self.base_offset + u64::from(e.rel_offset)),
            })
    }

    /// Whether the time index's last entry carries the largest timestamp of the batches after the
    /// last offset index entry, as a sealed segment's does. A time index cut short does not, and
    /// would make timestamp lookups skip the segment. Walks at most one index interval.
    fn time_index_reaches_the_end(&self, idx: &Indexes, size: u64) -> Result<bool> {
        let Some(map) = self.mapped()? else {
            return Ok(true);
        };
        let bytes = &map[..(size as usize).min(map.len())];
        let mut pos = idx.offsets.last().map_or(0, |e| e.position as usize);
        let mut max = i64::MIN;
        while let Some(h) = plausible_header(bytes, pos) {
            max = max.max(h.max_timestamp_ms);
            pos += h.length as usize;
        }
        Ok(max == i64::MIN || idx.times.last().is_some_and(|t| t.timestamp_ms >= max))
    }

    /// Builds both indexes afresh from the readable batches (CRC-checked) and writes them. A
    /// damaged batch is left out and indexing carries on at the next whole batch after it, so
    /// that one bad batch does not hide the rest of the segment from readers.
    fn rebuild_indexes(&self, io: &Io) -> Result<Indexes> {
        let mut idx = Indexes::empty(&self.dir, self.base_offset);
        let mut indexer = Indexer::new(REBUILT_INDEX_INTERVAL_BYTES);
        if let Some(map) = self.mapped()? {
            let end = (self.readable_end() as usize).min(map.len());
            let scan = scan_batches(
                &map[..end],
                self.base_offset,
                &mut idx,
                &mut indexer,
                0,
                self.base_offset,
                true,
            );
            if !scan.clean {
                tracing::error!(
                    segment = %self.path.display(),
                    position = scan.end,
                    "damaged batches up to the segment's end are left out of its index"
                );
            }
        }
        indexer.seal(&mut idx);
        self.note_timestamp(indexer.max_timestamp_ms());
        idx.rewrite(io)?;
        Ok(idx)
    }

    /// Rebuilds the indexes unless this segment already did since it was opened; returns whether
    /// it did. Bounds the cost of reading a damaged batch again and again.
    fn rebuild_indexes_once(&self, io: &Io) -> Result<bool> {
        if self.rebuilt.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        tracing::warn!(
            segment = %self.path.display(),
            "an index entry leads to no batch of its offset; rebuilding the index"
        );
        let mut guard = lock(&self.indexes);
        *guard = Some(self.rebuild_indexes(io)?);
        Ok(true)
    }

    /// The plausible batch header at `pos` (magic and length fit inside `end`), without a CRC
    /// check. `None` if there is none.
    fn header_at(&self, pos: u64, end: u64) -> Result<Option<BatchHeader>> {
        let Some(map) = self.mapped()? else {
            return Ok(None);
        };
        let end = end.min(map.len() as u64) as usize;
        Ok(plausible_header(&map[..end], pos as usize))
    }

    /// Finds the batch holding `offset` (the segment holds offsets up to `next_offset`) in the
    /// first `end` bytes of `map`, by walking batch headers from the closest index entry. Returns
    /// its position and header; the CRC is not checked.
    fn find_batch(
        &self,
        io: &Io,
        map: &[u8],
        end: usize,
        offset: Offset,
        next_offset: Offset,
    ) -> Result<(usize, BatchHeader)> {
        let rel = offset.saturating_sub(self.base_offset) as u32;
        let entry = self.with_indexes(io, next_offset, |idx| idx.offsets.floor(rel))?;
        match self.walk_checked(&map[..end], offset, entry) {
            Ok(found) => return Ok(found),
            // The walk found no batch of the offset it expected: the index is stale, or a batch
            // on the way is damaged (a bad length cannot be walked over). A rebuilt index tells
            // which: it leaves damaged batches out and has an entry at the first whole batch
            // after them, so offsets past the damage are found again.
            Err(broken) => {
                if !self.rebuild_indexes_once(io)? {
                    return Err(self.damage(&map[..end], broken, next_offset));
                }
            }
        }
        let entry = self.with_indexes(io, next_offset, |idx| idx.offsets.floor(rel))?;
        self.walk_checked(&map[..end], offset, entry)
            .map_err(|broken| self.damage(&map[..end], broken, next_offset))
    }

    /// [`Segment::walk`], and a batch found holding `offset` past its base offset must pass its
    /// CRC check: a damaged record count would otherwise claim offsets of the batches after it.
    fn walk_checked(
        &self,
        bytes: &[u8],
        offset: Offset,
        entry: Option<OffsetEntry>,
    ) -> Result<(usize, BatchHeader), Broken> {
        let (pos, h) = self.walk(bytes, offset, entry)?;
        if h.base_offset == offset || matches!(decode_frame(&bytes[pos..]), Frame::Batch(_)) {
            Ok((pos, h))
        } else {
            Err(Broken {
                at: pos,
                expected: h.base_offset,
                prev: None,
            })
        }
    }

    /// Walks batch headers from `entry` (or the segment's start) to the one holding `offset`.
    /// Each header must start at the offset after the one before: a header that does not, or
    /// bytes that are no header, break the walk rather than lead it astray.
    fn walk(
        &self,
        bytes: &[u8],
        offset: Offset,
        entry: Option<OffsetEntry>,
    ) -> Result<(usize, BatchHeader), Broken> {
        let (mut pos, mut expected) = entry.map_or((0, self.base_offset), |e| {
            (
                e.position as usize,
                self.base_offset + u64::from(e.rel_offset),
            )
        });
        let mut prev = None;
        loop {
            match plausible_header(bytes, pos) {
                Some(h) if h.base_offset == expected => {
                    if h.next_offset() > offset {
                        return Ok((pos, h));
                    }
                    prev = Some((pos, expected));
                    expected = h.next_offset();
                    pos += h.length as usize;
                }
                _ => {
                    return Err(Broken {
                        at: pos,
                        expected,
                        prev,
                    });
                }
            }
        }
    }

    /// The error for a walk that broke: the batch before the break when that one fails its
    /// checks (its own length or record count sent the walk astray), else the bytes at the break.
    /// The segment holds offsets below `next_offset`.
    fn damage(&self, bytes: &[u8], broken: Broken, next_offset: Offset) -> StorageError {
        if let Some((prev, prev_offset)) = broken.prev
            && let Frame::Corrupt(reason) = decode_frame(&bytes[prev..])
        {
            return self.corrupt(bytes, prev, prev_offset, reason, next_offset);
        }
        let reason = match bytes.get(broken.at..).map(decode_frame) {
            Some(Frame::Corrupt(c)) => c,
            Some(Frame::Batch(b)) => Corruption::OutOfSequence {
                expected: broken.expected,
                found: Some(b.header().base_offset),
            },
            Some(Frame::Incomplete { needed }) => {
                Corruption::BadLength(needed.min(u32::MAX as usize) as u32)
            }
            Some(Frame::Zeroed) | None => Corruption::OutOfSequence {
                expected: broken.expected,
                found: None,
            },
        };
        self.corrupt(bytes, broken.at, broken.expected, reason, next_offset)
    }

    /// Whole batches from the one holding `offset`, at most `max_bytes` (but at least one), none
    /// at or past `next_offset` (one past the segment's last record, or the high watermark).
    /// Returns the bytes and one past the last offset returned. `offset` must be below
    /// `next_offset`.
    pub(crate) fn read(
        &self,
        io: &Io,
        offset: Offset,
        max_bytes: usize,
        next_offset: Offset,
    ) -> Result<Option<(Bytes, Offset)>> {
        let Some(map) = self.mapped()? else {
            return Ok(None);
        };
        let end = (self.readable_end() as usize).min(map.len());
        let (first, header) = self.find_batch(io, &map, end, offset, next_offset)?;
        let mut pos = first;
        let mut expected = header.base_offset;
        // Up to `next_offset` only: the active segment may already publish batches past the high
        // watermark the caller read, and a read must not return records past the one it reports.
        while pos < end && expected < next_offset {
            match decode_frame(&map[pos..end]) {
                Frame::Batch(b) if b.header().base_offset == expected => {
                    let len = b.bytes().len();
                    if pos > first && pos - first + len > max_bytes {
                        break;
                    }
                    expected = b.header().next_offset();
                    pos += len;
                }
                _ if pos > first => break,
                _ => {
                    return Err(self.damage(
                        &map[..end],
                        Broken {
                            at: pos,
                            expected,
                            prev: None,
                        },
                        next_offset,
                    ));
                }
            }
        }
        self.read_ahead(first, pos, end);
        let bytes = Bytes::from_owner(MapSlice {
            map: map.clone(),
            start: first,
            end: pos,
        });
        Ok(Some((bytes, expected)))
    }

    /// A read of `first..pos` that is not at the readable `end`: asks the kernel to start
    /// reading what comes next, up to [`READ_AHEAD_BYTES`] past this read, so that a reader
    /// catching up from disk streams rather than faulting page by page. Only the part a read
    /// that ended at `first` did not already ask for; nothing at all for a reader at the tail.
    fn read_ahead(&self, first: usize, pos: usize, end: usize) {
        let ahead = READ_AHEAD_BYTES as usize;
        let from = (first + ahead).max(pos);
        let to = (pos + ahead).min(end);
        if let (Some(file), Some(len)) = (
            self.file.get(),
            NonZeroU64::new((to.saturating_sub(from)) as u64),
        ) {
            let _ = rustix::fs::fadvise(&**file, from as u64, Some(len), Advice::WillNeed);
        }
    }

    /// The error for damage at `pos` of `bytes`, where the batch of `offset` should be. The
    /// damage ends at the next whole batch after it (as a rebuilt index finds it), or else with
    /// the segment, whose offsets end below `next_offset`.
    fn corrupt(
        &self,
        bytes: &[u8],
        pos: usize,
        offset: Offset,
        reason: Corruption,
        next_offset: Offset,
    ) -> StorageError {
        let end = resync(bytes, pos + 1, offset + 1)
            .map_or(next_offset, |(_, h)| h.base_offset)
            .clamp(offset + 1, next_offset.max(offset + 1));
        StorageError::Corrupt {
            segment: self.path.clone(),
            position: pos as u64,
            offset,
            end,
            reason,
        }
    }
    /// The first offset at or after `from` whose record timestamp is >= `timestamp_ms`.
    pub(crate) fn offset_for_timestamp(
        &self,
        io: &Io,
        timestamp_ms: i64,
        next_offset: Offset,
    ) -> Result<Option<Offset>> {
        let start_rel = self
            .with_indexes(io, next_offset, |idx| {
                idx.times.scan_start(timestamp_ms).map(|e| e.rel_offset)
            })?
            .unwrap_or(0);
        let mut offset = self.base_offset + u64::from(start_rel);
        while offset < next_offset {
            let Some((bytes, next)) = self.read(io, offset, 1 << 20, next_offset)? else {
                return Ok(None);
            };
            let mut rest = &bytes[..];
            while let Frame::Batch(b) = decode_frame(rest) {
                if b.header().max_timestamp_ms >= timestamp_ms {
                    for r in b.records() {
                        let r = r.map_err(|reason| StorageError::Corrupt {
                            segment: self.path.clone(),
                            position: 0,
                            offset: b.header().base_offset,
                            end: b.header().next_offset(),
                            reason,
                        })?;
                        if r.offset >= offset && r.timestamp_ms >= timestamp_ms {
                            return Ok(Some(r.offset));
                        }
                    }
                }
                rest = &rest[b.bytes().len()..];
            }
            offset = next;
        }
        Ok(None)
    }

    /// The largest timestamp in the segment (loads the time index of a sealed segment).
    pub(crate) fn max_timestamp_ms(&self, io: &Io, next_offset: Offset) -> Result<i64> {
        self.with_indexes(io, next_offset, |_| ())?;
        Ok(self.max_timestamp_ms.load(Ordering::Acquire))
    }

    /// Scans batches from `pos`, checking each CRC and that offsets follow on from
    /// `next_offset`, and indexes them. Stops at the first byte that is not such a batch, or
    /// with `past_damage` carries on at the next whole batch after it. See [`Scan`].
    pub(crate) fn recover_from(
        &self,
        idx: &mut Indexes,
        indexer: &mut Indexer,
        pos: u64,
        next_offset: Offset,
        past_damage: bool,
    ) -> Result<Scan> {
        let Some(map) = self.mapped()? else {
            return Ok(Scan {
                end: 0,
                next_offset,
                clean: true,
            });
        };
        // Past the file's last data the bytes are a hole (zeroes, where a scan stops): leave
        // them unread rather than touch them through the map, which on tmpfs allocates a page
        // for each, and on a full tmpfs kills the process with SIGBUS.
        let end = data_end(&*self.file()?, map.len() as u64) as usize;
        Ok(scan_batches(
            &map[..end],
            self.base_offset,
            idx,
            indexer,
            pos as usize,
            next_offset,
            past_damage,
        ))
    }

    /// Installs indexes built by recovery or an append path.
    pub(crate) fn set_indexes(&self, idx: Indexes) {
        *lock(&self.indexes) = Some(idx);
    }

    /// Loads the index files as they are, for recovery to trim and extend.
    pub(crate) fn load_indexes_raw(&self) -> Result<Indexes> {
        Indexes::load(&self.dir, self.base_offset)
    }

    pub(crate) fn empty_indexes(&self) -> Indexes {
        Indexes::empty(&self.dir, self.base_offset)
    }

    /// Runs `f` on the loaded indexes of the active segment.
    pub(crate) fn indexes_mut<R>(&self, f: impl FnOnce(&mut Indexes) -> R) -> Option<R> {
        lock(&self.indexes).as_mut().map(f)
    }

    /// The mapped bytes `[0, end)` (for truncation's copy).
    pub(crate) fn bytes_until(&self, end: u64) -> Result<Vec<u8>> {
        let Some(map) = self.mapped()? else {
            return Ok(Vec::new());
        };
        Ok(map.get(..end as usize).unwrap_or(&map[..]).to_vec())
    }

    /// The position and base offset of the batch holding `offset`, by headers alone.
    pub(crate) fn position_of(
        &self,
        io: &Io,
        offset: Offset,
        next_offset: Offset,
    ) -> Result<(u64, Offset)> {
        let Some(map) = self.mapped()? else {
            return Err(self.damage(
                &[],
                Broken {
                    at: 0,
                    expected: self.base_offset,
                    prev: None,
                },
                next_offset,
            ));
        };
        let end = (self.readable_end() as usize).min(map.len());
        let (pos, h) = self.find_batch(io, &map, end, offset, next_offset)?;
        Ok((pos as u64, h.base_offset))
    }

    /// File length on disk.
    pub(crate) fn file_len(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| StorageError::io("stat", &self.path, e))
    }

    /// Removes the segment's files (the map stays valid for readers that hold it).
    /// The indexes go first: a crash part way leaves a segment without indexes (rebuilt when
    /// read), never indexes without their segment, which a later segment of the same base
    /// offset would load as its own.
    pub(crate) fn remove_files(&self, io: &Io) -> Result<()> {
        for ext in ["index", "timeindex", "log"] {
            io.remove_file(&segment_path(&self.dir, self.base_offset, ext))?;
        }
        Ok(())
    }
}

/// Bytes between two offset index entries of a rebuilt index.
const REBUILT_INDEX_INTERVAL_BYTES: u32 = 4096;

/// Where a walk of batch headers stopped short of the offset it looked for.
#[derive(Debug, Clone, Copy)]
struct Broken {
    /// The position with no batch of the expected offset.
    at: usize,
    /// The offset the batch there should start at.
    expected: Offset,
    /// The batch walked over before (position, base offset), if any.
    prev: Option<(usize, Offset)>,
}

/// What a recovery or rebuild scan found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scan {
    /// One past the last whole batch indexed.
    pub end: u64,
    /// One past its last offset.
    pub next_offset: Offset,
    /// The scan stopped at zeroes or at the end of the bytes (not at damage).
    pub clean: bool,
}

/// One past the last byte of the first `len` bytes of `file` that is not in a hole (`len` if
/// the filesystem cannot tell). Every byte after it reads as zero.
fn data_end(file: &File, len: u64) -> u64 {
    use rustix::fs::{SeekFrom, seek};
    let mut end = 0;
    let mut at = 0;
    while at < len {
        let data = match seek(file, SeekFrom::Data(at)) {
            Ok(data) => data,
            // No data at or after `at`.
            Err(e) if e == rustix::io::Errno::NXIO => break,
            Err(_) => return len,
        };
        let Ok(hole) = seek(file, SeekFrom::Hole(data)) else {
            return len;
        };
        end = hole.min(len);
        at = hole;
    }
    end
}

/// The header at `pos` if its magic is right and its length fits in `bytes`; no CRC check.
fn plausible_header(bytes: &[u8], pos: usize) -> Option<BatchHeader> {
    let b = bytes.get(pos..)?;
    let h = BatchHeader::parse(b)?;
    let magic = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    let len = h.length as usize;
    (magic == BATCH_MAGIC && len >= BATCH_HEADER_BYTES && len <= b.len() && h.record_count > 0)
        .then_some(h)
}

/// Indexes the whole, CRC-checked batches of `bytes` from `pos`, each at the offset after the
/// one before, starting with `next_offset`. Stops at zeroes, at the end of `bytes`, or at the
/// first byte that is no such batch; with `past_damage`, it skips damage (and zeroes followed by
/// more data) to the next whole batch with a later offset, and indexes on from there.
fn scan_batches(
    bytes: &[u8],
    base: Offset,
    idx: &mut Indexes,
    indexer: &mut Indexer,
    mut pos: usize,
    mut next_offset: Offset,
    past_damage: bool,
) -> Scan {
    let mut end = pos;
    loop {
        let rest = bytes.get(pos..).unwrap_or_default();
        let stop = match decode_frame(rest) {
            Frame::Batch(b) if b.header().base_offset == next_offset => {
                let len = b.bytes().len();
                indexer.on_batch(idx, base, b.header(), pos as u64, len as u64);
                pos += len;
                end = pos;
                next_offset = b.header().next_offset();
                continue;
            }
            _ if rest.is_empty() => true,
            Frame::Zeroed if !past_damage || rest.iter().all(|&b| b == 0) => true,
            _ => false,
        };
        if stop {
            return Scan {
                end: end as u64,
                next_offset,
                clean: true,
            };
        }
        match past_damage
            .then(|| resync(bytes, pos + 1, next_offset))
            .flatten()
        {
            Some((at, h)) => {
                indexer.skip_gap();
                pos = at;
                next_offset = h.base_offset;
            }
            None => {
                return Scan {
                    end: end as u64,
                    next_offset,
                    clean: false,
                };
            }
        }
    }
}

/// The first whole batch at or after `from` whose base offset is at least `next_offset`: where
/// a scan carries on after damage.
fn resync(bytes: &[u8], from: usize, next_offset: Offset) -> Option<(usize, BatchHeader)> {
    let magic = BATCH_MAGIC.to_le_bytes();
    let mut at = from;
    loop {
        let found = bytes.get(at + 8..)?.windows(4).position(|w| w == magic)?;
        at += found;
        if let Frame::Batch(b) = decode_frame(&bytes[at..])
            && b.header().base_offset >= next_offset
        {
            return Some((at, *b.header()));
        }
        at += 1;
    }
}
