//! A segment's two sparse indexes and what uses them: where entries go ([`Indexer`], shared by
//! appends, recovery and rebuilds), loading them and checking that loaded ones fit the segment,
//! rebuilding them from the batches when they do not, and finding the batch of an offset
//! through them (rebuilding once when a walk from an entry breaks).

use super::scan::{Broken, Scan, Scanned, data_end, plausible_header, scan_batches};
use super::{Segment, lock, segment_path};
use crate::record::BatchHeader;
use crate::storage::{
    Offset, Result,
    fs::Io,
    index::{IndexFile, OffsetEntry, TimeEntry, offset_index_is_sane, time_index_is_sane},
};
use std::{path::Path, sync::atomic::Ordering};

/// The two sparse indexes of a segment.
#[derive(Debug)]
pub(crate) struct Indexes {
    pub offsets: IndexFile<OffsetEntry>,
    pub times: IndexFile<TimeEntry>,
}

impl Indexes {
    pub(super) fn empty(dir: &Path, base: Offset) -> Self {
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

    /// Indexes what a scan of the segment based at `base` found.
    pub(super) fn on_scanned(&mut self, idx: &mut Indexes, base: Offset, found: Scanned<'_>) {
        match found {
            Scanned::Batch {
                header,
                position,
                len,
            } => self.on_batch(idx, base, header, position, len),
            Scanned::Gap => self.skip_gap(),
        }
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

impl Segment {
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
            let base = self.base_offset;
            let scan = scan_batches(&map[..end], 0, base, true, |found| {
                indexer.on_scanned(&mut idx, base, found);
            });
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

    /// Finds the batch holding `offset` (the segment holds offsets up to `next_offset`) in the
    /// first `end` bytes of `map`, by walking batch headers from the closest index entry. Returns
    /// its position and header; the CRC is not checked.
    pub(super) fn find_batch(
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
        let base = self.base_offset;
        Ok(scan_batches(
            &map[..end],
            pos as usize,
            next_offset,
            past_damage,
            |found| indexer.on_scanned(idx, base, found),
        ))
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
}

/// Bytes between two offset index entries of a rebuilt index.
const REBUILT_INDEX_INTERVAL_BYTES: u32 = 4096;
