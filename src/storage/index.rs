//! Sparse indexes of a segment: offset -> byte position (`.index`) and timestamp -> offset
//! (`.timeindex`). Kept in memory, appended to their files at checkpoints and when a segment is
//! sealed. Entries are fixed-size little-endian; a torn last entry is ignored on load.

use super::{Result, StorageError, fs::Io};
use std::path::PathBuf;

/// One fixed-size index entry.
pub(crate) trait Entry: Copy + std::fmt::Debug {
    const SIZE: usize;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(b: &[u8]) -> Self;
}

/// `.index` entry: the batch holding `base + rel_offset` starts at byte `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel_offset: u32,
    pub position: u32,
}

impl Entry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.rel_offset.to_le_bytes());
        out.extend_from_slice(&self.position.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        OffsetEntry {
            rel_offset: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            position: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }
}

/// `.timeindex` entry: no record before the batch starting at `base + rel_offset` has a timestamp
/// above `timestamp_ms`, which is the largest timestamp up to and including that batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub timestamp_ms: i64,
    pub rel_offset: u32,
}

impl Entry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.timestamp_ms.to_le_bytes());
        out.extend_from_slice(&self.rel_offset.to_le_bytes());
    }
    fn decode(b: &[u8]) -> Self {
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&b[..8]);
        TimeEntry {
            timestamp_ms: i64::from_le_bytes(ts),
            rel_offset: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        }
    }
}

/// An index file and its entries in memory.
#[derive(Debug)]
pub(crate) struct IndexFile<E: Entry> {
    path: PathBuf,
    entries: Vec<E>,
    /// How many leading entries are in the file.
    persisted: usize,
}

impl<E: Entry> IndexFile<E> {
    pub(crate) fn empty(path: PathBuf) -> Self {
        IndexFile {
            path,
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Loads the entries the file holds; a missing file is empty, a torn last entry is dropped.
    pub(crate) fn load(path: PathBuf) -> Result<Self> {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io("read", &path, e)),
        };
        Ok(Self::from_bytes(path, &bytes))
    }

    /// The entries `bytes` (a file's contents) hold; a torn last entry is dropped.
    pub(crate) fn from_bytes(path: PathBuf, bytes: &[u8]) -> Self {
        let entries: Vec<E> = bytes.chunks_exact(E::SIZE).map(E::decode).collect();
        let persisted = entries.len();
        IndexFile {
            path,
            entries,
            persisted,
        }
    }

    pub(crate) fn entries(&self) -> &[E] {
        &self.entries
    }

    pub(crate) fn last(&self) -> Option<&E> {
        self.entries.last()
    }

    pub(crate) fn push(&mut self, e: E) {
        self.entries.push(e);
    }

    /// Keeps the first `n` entries, in memory and (at the next `persist`) on disk.
    pub(crate) fn truncate(&mut self, n: usize) {
        self.entries.truncate(n);
        self.persisted = self.persisted.min(n);
    }

    /// Writes the entries not yet in the file and syncs it.
    pub(crate) fn persist(&mut self, io: &Io) -> Result<()> {
        let file = io.open_rw(&self.path, true)?;
        let len = (self.persisted * E::SIZE) as u64;
        // Drop anything past what we know is valid (stale entries of a truncated segment).
        let on_disk = file
            .metadata()
            .map_err(|e| StorageError::io("stat", &self.path, e))?
            .len();
        if on_disk != len {
            io.set_len(&file, &self.path, len)?;
        }
        if self.persisted < self.entries.len() {
            let mut buf = Vec::with_capacity((self.entries.len() - self.persisted) * E::SIZE);
            for e in &self.entries[self.persisted..] {
                e.encode(&mut buf);
            }
            io.write_all_at(&file, &self.path, &buf, len)?;
        }
        io.sync_data(&file, &self.path)?;
        self.persisted = self.entries.len();
        Ok(())
    }

    /// Rewrites the whole file from memory (after a rebuild), atomically.
    pub(crate) fn rewrite(&mut self, io: &Io) -> Result<()> {
        let mut buf = Vec::with_capacity(self.entries.len() * E::SIZE);
        for e in &self.entries {
            e.encode(&mut buf);
        }
        io.write_atomic(&self.path, &buf)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

impl IndexFile<OffsetEntry> {
    /// The last entry at or before `rel_offset`: where to start scanning for it.
    pub(crate) fn floor(&self, rel_offset: u32) -> Option<OffsetEntry> {
        let i = self.entries.partition_point(|e| e.rel_offset <= rel_offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

impl IndexFile<TimeEntry> {
    /// The entry before the first one whose timestamp reaches `timestamp_ms`: batches before its
    /// offset all have smaller timestamps. `None`: start from the segment's beginning.
    pub(crate) fn scan_start(&self, timestamp_ms: i64) -> Option<TimeEntry> {
        let i = self
            .entries
            .partition_point(|e| e.timestamp_ms < timestamp_ms);
        i.checked_sub(1).map(|i| self.entries[i])
    }
}

/// Checks an index file against the segment it indexes: entries strictly increasing, inside the
/// segment's bytes and offsets.
pub(crate) fn offset_index_is_sane(entries: &[OffsetEntry], size: u64, offsets: u64) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].rel_offset < w[1].rel_offset && w[0].position < w[1].position)
        && entries
            .last()
            .is_none_or(|e| u64::from(e.position) < size && u64::from(e.rel_offset) < offsets)
}

pub(crate) fn time_index_is_sane(entries: &[TimeEntry], offsets: u64) -> bool {
    entries
        .windows(2)
        .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms && w[0].rel_offset <= w[1].rel_offset)
        && entries
            .last()
            .is_none_or(|e| u64::from(e.rel_offset) < offsets)
}
