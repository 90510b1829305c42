//! One segment: a `{base_offset:020}.log` file of back-to-back batches, memory-mapped for reads,
//! with its sparse `.index` and `.timeindex`.
//!
//! Writes go through `pwrite`, never through the map: a full disk is then an `ENOSPC` error
//! rather than a `SIGBUS`. Reads borrow the map and hand out zero-copy [`Bytes`].
//!
//! This file owns the file, the map and reads; `indexes.rs` the sparse indexes (load, check,
//! rebuild, lookup) and `scan.rs` walking raw bytes and diagnosing damage. `scan` needs
//! nothing of `indexes`.

mod indexes;
mod scan;

pub(crate) use indexes::{Indexer, Indexes};
pub(crate) use scan::Scan;

use super::{Offset, Result, StorageError, fs::Io};
use crate::record::{Frame, decode_frame};
use bytes::Bytes;
use memmap2::{Mmap, MmapOptions, UncheckedAdvice};
use rustix::fs::Advice;
use scan::Broken;
use std::num::NonZeroU64;
use std::{
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering},
    },
};

/// A read that is not at the tail asks the kernel to start reading this far past it.
const READ_AHEAD_BYTES: u64 = 16 * 1024 * 1024;

/// `{base_offset:020}.{ext}` in `dir`.
pub(crate) fn segment_path(dir: &Path, base: Offset, ext: &str) -> PathBuf {
    dir.join(format!("{base:020}.{ext}"))
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

    /// The mapped bytes `[0, end)` (for truncation's copy).
    pub(crate) fn bytes_until(&self, end: u64) -> Result<Vec<u8>> {
        let Some(map) = self.mapped()? else {
            return Ok(Vec::new());
        };
        Ok(map.get(..end as usize).unwrap_or(&map[..]).to_vec())
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
