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
        "no space left on the device holding {path} (could not {op}): {}",
        disk_full_consequence(op)
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
    /// An fsync failed earlier (or clearing a failed write did), so what is on disk is unknown:
    /// the log refuses appends until it is reopened (restart the broker).
    #[error(
        "the log at {path} is poisoned: {cause}, so what is on disk is unknown and it takes no \
         writes; restart to recover (recovery finds what is really there)"
    )]
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
    /// An idempotent producer's batch does not follow its last one (see `producers.rs`).
    #[error(transparent)]
    Sequence(#[from] super::producers::SequenceError),
    /// An append in a term older than the log's last batch's: a replica that takes it would
    /// break Raft's log matching, so it is refused and nothing is stored.
    #[error(
        "an append in term {term} to the log at {path}, whose last batch is of term {last}, was \
         refused: terms in a log never go down"
    )]
    TermBehind {
        /// The partition directory.
        path: PathBuf,
        /// The append's term.
        term: u64,
        /// The term of the log's last batch.
        last: u64,
    },
    /// Raft entries whose index does not go up from the log's last batch (or from the entry
    /// before): storing them would put two entries at one index. Nothing is stored.
    #[error(
        "an append of the Raft entry at index {index} to the log at {path}, whose last batch is \
         at index {last}, was refused: indexes in a log always go up"
    )]
    IndexBehind {
        /// The partition directory.
        path: PathBuf,
        /// The entry's index.
        index: u64,
        /// The index of the log's last batch (or of the entry before).
        last: u64,
    },
    /// An append of Raft entries gave a different number of ids than of batches.
    #[error("an append to the log at {path} gave {ids} entry ids for {batches} batches")]
    EntryCount {
        /// The partition directory.
        path: PathBuf,
        /// Ids given.
        ids: usize,
        /// Batches given.
        batches: usize,
    },
    /// Durability was asked for offsets the log does not hold (never written, or truncated away
    /// during the wait): they are not durable, and are not reported so.
    #[error(
        "offsets below {next} cannot be made durable in the log at {path}: it holds offsets \
         only below {written}"
    )]
    NotWritten {
        /// The partition directory.
        path: PathBuf,
        /// One past the offsets asked for.
        next: Offset,
        /// One past the offsets the log holds.
        written: Offset,
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
    /// What poisoning says of this error: the operation and the OS error, without the advice a
    /// client gets with it (a poisoned log is not a retry).
    pub(crate) fn poison_cause(&self) -> String {
        match self {
            StorageError::DiskFull { op, path, source } | StorageError::Io { op, path, source } => {
                format!("{op} of {} failed ({source})", path.display())
            }
            other => other.to_string(),
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            StorageError::DiskFull { op, path, source }
        } else {
            StorageError::Io { op, path, source }
        }
    }
}

/// What a full disk meant for the operation that hit it.
fn disk_full_consequence(op: &str) -> &'static str {
    if op.starts_with("fsync") {
        "what was written may or may not be on disk, and the partition takes no writes until the \
         broker restarts; free space, then restart"
    } else {
        "nothing was stored; free space (delete a topic or lower its retention) and retry"
    }
}

#[cfg(test)]
mod tests {
    use super::StorageError;
    use std::io;

    fn enospc() -> io::Error {
        io::Error::from(io::ErrorKind::StorageFull)
    }

    #[test]
    fn a_full_disk_on_fsync_does_not_say_nothing_was_stored() {
        let write = StorageError::io("write", "/d/0.log", enospc()).to_string();
        assert!(
            write.contains("nothing was stored") && write.contains("retry"),
            "{write}"
        );
        let sync = StorageError::io("fsync", "/d/0.log", enospc()).to_string();
        assert!(!sync.contains("nothing was stored"), "{sync}");
        assert!(sync.contains("may or may not be on disk"), "{sync}");
    }

    #[test]
    fn poisoning_names_the_failure_without_the_advice_of_a_retry() {
        let cause = StorageError::io("write", "/d/0.log", enospc()).poison_cause();
        assert!(cause.starts_with("write of /d/0.log failed"), "{cause}");
        assert!(!cause.contains("retry"), "{cause}");
        let poisoned = StorageError::Poisoned {
            path: "/d".into(),
            cause,
        }
        .to_string();
        assert!(!poisoned.contains("fsync"), "{poisoned}");
        assert!(poisoned.contains("restart to recover"), "{poisoned}");
    }
}
