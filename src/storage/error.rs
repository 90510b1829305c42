//! The storage layer's one error type.

use super::Offset;
use crate::record::Corruption;
use std::{io, path::PathBuf};

/// What went wrong in a partition log. Every variant says what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done ("write", "fsync", "open", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The disk is full. An append that fails with it stored nothing; retry once space is
    /// freed.
    #[error(
        "no space left on the device holding {path} (could not {op}): nothing was stored; \
         free space (delete a topic or lower its retention) and retry"
    )]
    DiskFull {
        /// What was being done ("write", "allocate", ...).
        op: &'static str,
        /// The file being written.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The requested offset is not stored.
    #[error("offset {requested} is out of range: this partition holds offsets {earliest}..{next}")]
    OffsetOutOfRange {
        /// The offset asked for.
        requested: Offset,
        /// The earliest stored offset.
        earliest: Offset,
        /// The next offset to be written.
        next: Offset,
    },
    /// Stored bytes fail their checks; they are never served as data.
    #[error(
        "offsets {offset}..{end} are damaged on disk and cannot be read ({reason}; \
         {segment} at byte {position}); the rest of the log is still readable, from offset {end} on"
    )]
    Corrupt {
        /// The segment file.
        segment: PathBuf,
        /// Byte position of the bad batch in the segment.
        position: u64,
        /// The first offset the damage covers (the batch the index pointed at).
        offset: Offset,
        /// One past the last offset the damage covers: the next readable batch starts here.
        end: Offset,
        /// What is wrong.
        reason: Corruption,
    },
    /// An fsync failed earlier, so what is on disk is unknown: the log refuses appends until it is
    /// reopened (restart the broker).
    #[error("the log at {path} is poisoned by a failed fsync ({cause}); restart to recover")]
    Poisoned {
        /// The partition directory.
        path: PathBuf,
        /// The original failure.
        cause: String,
    },
    /// A batch larger than the log can hold.
    #[error("batch of {size} bytes is larger than the segment limit of {max} bytes")]
    BatchTooLarge {
        /// The batch's size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A small state file (checkpoint) could not be decoded.
    #[error("invalid state file {path}: {reason}")]
    BadStateFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

impl StorageError {
    /// Wraps an I/O error, recognising a full disk.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            StorageError::DiskFull { op, path, source }
        } else {
            StorageError::Io { op, path, source }
        }
    }
}
