//! One segment: a `{base_offset:020}.log` file of back-to-back batches, memory-mapped for reads,
//! with its sparse `.index` and `.timeindex`.
//!
//! Writes go through `pwrite`, never through the map: a full disk is then an `ENOSPC` error
//! rather than a `SIGBUS`. Reads borrow the map and hand out zero-copy [`Bytes`].

use super::{
    Offset, Result, StorageError,
    fs::Io,
    index::{IndexFile, OffsetEntry, TimeEntry, offset_index_is_sane, time_index_is_sane},
};
use crate::record::{BATCH_HEADER_BYTES, BATCH_MAGIC, BatchHeader, Frame, decode_frame};
use bytes::Bytes;
use memmap2::{Mmap, MmapOptions};
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicI64, AtomicU64, Ordering},
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
        let sane = offset_index_is_sane(idx.offsets.entries(), size, offsets)
            && time_index_is_sane(idx.times.entries(), offsets)
            && match idx.offsets.last() {
                None => size == 0 || idx.times.last().is_some(),
                Some(e) => self
                    .header_at(u64::from(e.position), size)?
                    .is_some_and(|h| h.base_offset == self.base_offset + u64::from(e.rel_offset)),
            };
        if sane {
            if let Some(t) = idx.times.last() {
                self.note_timestamp(t.timestamp_ms);
            }
            return Ok(idx);
        }
        tracing::warn!(segment = %self.path.display(), "index missing or stale; rebuilding");
        let mut idx = Indexes::empty(&self.dir, self.base_offset);
        let mut indexer = Indexer::new(4096);
        let mut pos = 0;
        while let Some(h) = self.header_at(pos, size)? {
            indexer.on_batch(&mut idx, self.base_offset, &h, pos, u64::from(h.length));
            pos += u64::from(h.length);
        }
        indexer.seal(&mut idx);
        self.note_timestamp(indexer.max_timestamp_ms());
        idx.rewrite(io)?;
        Ok(idx)
    }

    /// The plausible batch header at `pos` (magic and length fit inside `end`), without a CRC
    /// check. `None` if there is none.
    fn header_at(&self, pos: u64, end: u64) -> Result<Option<BatchHeader>> {
        let Some(map) = self.mapped()? else {
            return Ok(None);
        };
        let end = end.min(map.len() as u64) as usize;
        let pos = pos as usize;
        let Some(bytes) = map.get(pos..end) else {
            return Ok(None);
        };
        let Some(h) = BatchHeader::parse(bytes) else {
            return Ok(None);
        };
        let magic = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        let len = h.length as usize;
        if magic != BATCH_MAGIC || len < BATCH_HEADER_BYTES || len > bytes.len() {
            return Ok(None);
        }
        Ok(Some(h))
    }

    /// Whole batches from the one holding `offset`, at most `max_bytes` (but at least one).
    /// Returns the bytes and one past the last offset returned; `None` if `offset` is not below
    /// the readable end.
    pub(crate) fn read(
        &self,
        io: &Io,
        offset: Offset,
        max_bytes: usize,
        next_offset: Offset,
    ) -> Result<Option<(Bytes, Offset)>> {
        let end = self.readable_end();
        let rel = offset.saturating_sub(self.base_offset) as u32;
        let start = self
            .with_indexes(io, next_offset, |idx| idx.offsets.floor(rel))?
            .map_or(0, |e| u64::from(e.position));
        let Some(map) = self.mapped()? else {
            return Ok(None);
        };
        let end = (end as usize).min(map.len());
        // Find the batch holding `offset` by its headers alone.
        let mut pos = start as usize;
        loop {
            if pos >= end {
                return Ok(None);
            }
            let Some(h) = self.header_at(pos as u64, end as u64)? else {
                return Err(self.corrupt(pos, offset, &map[pos..end]));
            };
            if h.next_offset() > offset {
                break;
            }
            pos += h.length as usize;
        }
        let first = pos;
        let mut last_next = offset;
        while pos < end {
            match decode_frame(&map[pos..end]) {
                Frame::Batch(b) => {
                    let len = b.bytes().len();
                    if pos > first && pos - first + len > max_bytes {
                        break;
                    }
                    last_next = b.header().next_offset();
                    pos += len;
                }
                _ if pos > first => break,
                _ => return Err(self.corrupt(pos, offset, &map[pos..end])),
            }
        }
        let bytes = Bytes::from_owner(MapSlice {
            map: map.clone(),
            start: first,
            end: pos,
        });
        Ok(Some((bytes, last_next)))
    }

    fn corrupt(&self, pos: usize, offset: Offset, bytes: &[u8]) -> StorageError {
        let reason = match decode_frame(bytes) {
            Frame::Corrupt(c) => c,
            Frame::Incomplete { needed } => {
                crate::record::Corruption::BadLength(needed.min(u32::MAX as usize) as u32)
            }
            Frame::Zeroed | Frame::Batch(_) => crate::record::Corruption::BadMagic(0),
        };
        StorageError::Corrupt {
            segment: self.path.clone(),
            position: pos as u64,
            offset,
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
    /// `next_offset`, and indexes them. Stops at the first byte that is not such a batch and
    /// returns (end position, next offset, whether the stop was clean zeroes or the file's end).
    pub(crate) fn recover_from(
        &self,
        idx: &mut Indexes,
        indexer: &mut Indexer,
        mut pos: u64,
        mut next_offset: Offset,
    ) -> Result<(u64, Offset, bool)> {
        let Some(map) = self.mapped()? else {
            return Ok((0, next_offset, true));
        };
        loop {
            let Some(rest) = map.get(pos as usize..) else {
                return Ok((pos, next_offset, true));
            };
            match decode_frame(rest) {
                Frame::Batch(b) if b.header().base_offset == next_offset => {
                    let len = b.bytes().len() as u64;
                    indexer.on_batch(idx, self.base_offset, b.header(), pos, len);
                    pos += len;
                    next_offset = b.header().next_offset();
                }
                Frame::Zeroed => return Ok((pos, next_offset, true)),
                _ => return Ok((pos, next_offset, false)),
            }
        }
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

    /// The position of the batch holding `offset`, by headers alone.
    pub(crate) fn position_of(
        &self,
        io: &Io,
        offset: Offset,
        next_offset: Offset,
    ) -> Result<Option<(u64, Offset)>> {
        let end = self.readable_end();
        let rel = offset.saturating_sub(self.base_offset) as u32;
        let mut pos = self
            .with_indexes(io, next_offset, |idx| idx.offsets.floor(rel))?
            .map_or(0, |e| u64::from(e.position));
        while let Some(h) = self.header_at(pos, end)? {
            if h.next_offset() > offset {
                return Ok(Some((pos, h.base_offset)));
            }
            pos += u64::from(h.length);
        }
        Ok(None)
    }

    /// File length on disk.
    pub(crate) fn file_len(&self) -> Result<u64> {
        std::fs::metadata(&self.path)
            .map(|m| m.len())
            .map_err(|e| StorageError::io("stat", &self.path, e))
    }

    /// Removes the segment's files (the map stays valid for readers that hold it).
    pub(crate) fn remove_files(&self) -> Result<()> {
        for ext in ["log", "index", "timeindex"] {
            super::fs::remove_if_exists(&segment_path(&self.dir, self.base_offset, ext))?;
        }
        Ok(())
    }
}
