//! The seam every file operation of the broker goes through (storage's own files and the
//! broker's: topic metadata, group journals, the trash): tests use it to inject I/O faults
//! (EIO, ENOSPC, torn writes) before an operation, and to observe what was done after it (the
//! power-cut simulation in `tests/` rebuilds what a power cut could leave from these events).

use std::{io, path::Path};

/// A file operation the storage layer is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// A positional write of `len` bytes.
    Write,
    /// An fsync / fdatasync of a file or directory.
    Sync,
    /// A rename (atomic replace of a state file, a segment rewritten by truncation, a deleted
    /// topic moved into the trash).
    Rename,
    /// Creating, resizing or preallocating a file, or creating a directory.
    Create,
    /// Removing a file or a directory tree.
    Remove,
}

/// What a file operation did, reported after it succeeded (a torn write reports the bytes it
/// wrote before failing). Paths are as the caller named them.
#[derive(Debug, Clone, Copy)]
pub enum IoEvent<'a> {
    /// `path` names a file: a new empty one if nothing was there, else the existing one.
    Opened {
        /// The file.
        path: &'a Path,
    },
    /// `bytes` were written at `pos`.
    Wrote {
        /// The file.
        path: &'a Path,
        /// Byte position in the file.
        pos: u64,
        /// What was written.
        bytes: &'a [u8],
    },
    /// The file's length was set to `len` (truncated or extended with zeroes).
    Resized {
        /// The file.
        path: &'a Path,
        /// The new length in bytes.
        len: u64,
    },
    /// The file's data (and the size needed to read it) is durable: `fdatasync`.
    SyncedData {
        /// The file.
        path: &'a Path,
    },
    /// The directory's entries (files created, renamed or removed in it) are durable.
    SyncedDir {
        /// The directory.
        path: &'a Path,
    },
    /// `from` was renamed to `to`, replacing what `to` named.
    Renamed {
        /// The old name.
        from: &'a Path,
        /// The new name.
        to: &'a Path,
    },
    /// The file was removed.
    Removed {
        /// The file.
        path: &'a Path,
    },
    /// An empty directory was created.
    CreatedDir {
        /// The directory.
        path: &'a Path,
    },
    /// The directory and everything in it was removed.
    RemovedDir {
        /// The directory.
        path: &'a Path,
    },
}

/// Decides, before each file operation, whether it fails; hears, after each, what it did.
pub trait FaultInjector: Send + Sync {
    /// `Ok(None)`: do the operation. `Ok(Some(n))` (writes only): write only the first `n` bytes,
    /// then fail with EIO, as a torn write does. `Err(e)`: fail with `e` without doing anything.
    fn before(&self, op: FileOp, path: &Path, len: usize) -> io::Result<Option<usize>>;

    /// Called after an operation changed the file system (nothing by default).
    fn after(&self, _event: &IoEvent<'_>) {}
}
