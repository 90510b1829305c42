//! The Raft state of a partition that is not in its log: the vote, the last purged log id and
//! the latest snapshot's metadata. One small file,
//! `raft-state` in the partition directory, replaced atomically on every change that must be
//! durable (docs/FORMAT.md); and the committed log id in `raft-committed`, which need not be.

use super::{
    ReplicationError,
    types::{LogId, SnapshotMeta, Vote},
};
use crate::storage::{Io, checked};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{Mutex, PoisonError},
};

/// The file's name inside a partition directory.
pub const RAFT_STATE_FILE: &str = "raft-state";
/// The committed log id's file, beside it.
pub const RAFT_COMMITTED_FILE: &str = "raft-committed";

const COMMITTED_MAGIC: u32 = u32::from_le_bytes(*b"SRCM");
/// The committed file's size: a u32 LE length, the checked encoding, zeroes.
const COMMITTED_BYTES: usize = 64;

const MAGIC: u32 = u32::from_le_bytes(*b"SRRS");
const VERSION: u16 = 1;

/// A snapshot of a partition: every entry up to `meta.last_log_id` is applied, and the records
/// they hold end at `next_offset`. The records themselves are the log's, so this is all of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionSnapshot {
    /// What openraft knows the snapshot by.
    pub meta: SnapshotMeta,
    /// The offset after the last record the snapshot covers.
    pub next_offset: u64,
}

/// What the file holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftState {
    /// The last vote saved; `None` before the first.
    pub vote: Option<Vote>,
    /// The last log id purged from the log (every entry up to it is gone or hidden).
    pub last_purged: Option<LogId>,
    /// The latest snapshot built or installed.
    pub snapshot: Option<PartitionSnapshot>,
}

pub(crate) fn encode(state: &RaftState) -> Result<Vec<u8>, bincode::error::EncodeError> {
    checked::encode(MAGIC, VERSION, state)
}

/// Decodes the file. Any damage is an error: a replica that forgot its vote could vote twice in
/// one term, so it must not start on a guess.
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<RaftState, ReplicationError> {
    checked::decode(bytes, MAGIC, VERSION).map_err(|reason| ReplicationError::BadStateFile {
        path: path.to_owned(),
        reason,
    })
}

/// The partition's Raft state, in memory and on disk: every change is written before it is
/// seen, so what is read is always durable. Beside it, the committed log id, noted without an
/// fsync (`raft-committed`: [`RaftStateFile::save_committed`]), which is only a head start: a
/// replica whose note is behind or lost learns the commit index again from its leader.
pub struct RaftStateFile {
    path: PathBuf,
    io: Io,
    /// Held by a writer across its write (and fsyncs), so that writes are one at a time, while
    /// readers only take `state` for a clone.
    writer: Mutex<()>,
    state: Mutex<RaftState>,
    /// `raft-committed`, once opened for writing.
    committed: Mutex<Option<std::fs::File>>,
}

impl RaftStateFile {
    /// Reads the file in `dir` (a fresh state when there is none; an error when it is damaged).
    pub(crate) fn open(dir: &Path, io: Io) -> Result<Self, ReplicationError> {
        let path = dir.join(RAFT_STATE_FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => decode(&bytes, &path)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => RaftState::default(),
            Err(e) => {
                return Err(crate::storage::StorageError::io("read", path, e).into());
            }
        };
        Ok(RaftStateFile {
            path,
            io,
            writer: Mutex::new(()),
            state: Mutex::new(state),
            committed: Mutex::new(None),
        })
    }

    fn committed_path(&self) -> PathBuf {
        self.path.with_file_name(RAFT_COMMITTED_FILE)
    }

    /// Notes the committed log id in `raft-committed`, without an fsync: it only lets a
    /// restarted replica serve what it had seen committed at once, instead of after its
    /// group's next commit. A write the system loses leaves an older (still committed) id, or
    /// a file [`RaftStateFile::read_committed`] passes over.
    pub fn save_committed(&self, committed: LogId) -> Result<(), ReplicationError> {
        let path = self.committed_path();
        let body = checked::encode(COMMITTED_MAGIC, VERSION, &committed).map_err(|e| {
            ReplicationError::BadStateFile {
                path: path.clone(),
                reason: e.to_string(),
            }
        })?;
        let mut frame = vec![0u8; COMMITTED_BYTES];
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        if body.len() + 4 > COMMITTED_BYTES {
            return Err(ReplicationError::BadStateFile {
                path,
                reason: format!("{} bytes do not fit in {COMMITTED_BYTES}", body.len()),
            });
        }
        frame[..4].copy_from_slice(&len.to_le_bytes());
        frame[4..4 + body.len()].copy_from_slice(&body);
        let mut file = self
            .committed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if file.is_none() {
            *file = Some(self.io.open_rw(&path, true)?);
        }
        if let Some(f) = file.as_ref() {
            self.io.write_all_at(f, &path, &frame, 0)?;
        }
        Ok(())
    }

    /// The committed log id `raft-committed` holds, if it holds one whole (a torn or lost write
    /// is `None`, logged: the replica then learns its commit position from its leader).
    pub fn read_committed(&self) -> Option<LogId> {
        let path = self.committed_path();
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "the committed log id is not readable");
                return None;
            }
        };
        let len = bytes
            .get(..4)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map(|b| u32::from_le_bytes(b) as usize)?;
        let body = bytes.get(4..4usize.saturating_add(len))?;
        match checked::decode(body, COMMITTED_MAGIC, VERSION) {
            Ok(id) => Some(id),
            Err(reason) => {
                tracing::warn!(path = %path.display(), reason, "the committed log id is damaged; passing over it");
                None
            }
        }
    }

    /// The state as last written.
    pub fn get(&self) -> RaftState {
        self.lock().clone()
    }

    /// Changes the state and writes it (blocking: call it off the async runtime). On an error
    /// the state stays as it was, in memory and on disk.
    pub fn update(&self, change: impl FnOnce(&mut RaftState)) -> Result<(), ReplicationError> {
        let _writing = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let current = self.get();
        let mut next = current.clone();
        change(&mut next);
        if next == current {
            return Ok(());
        }
        let bytes = encode(&next).map_err(|e| ReplicationError::BadStateFile {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.io.write_atomic(&self.path, &bytes)?;
        *self.lock() = next;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RaftState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_round_trips_and_any_flip_is_refused() {
        let state = RaftState {
            vote: Some(Vote::new_committed(7, 2)),
            last_purged: Some(LogId::new_term_index(3, 40)),
            snapshot: None,
        };
        let bytes = encode(&state).unwrap();
        assert_eq!(decode(&bytes, Path::new("x")).unwrap(), state);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert_ne!(
                decode(&b, Path::new("x")).ok(),
                Some(state.clone()),
                "flip at {i}"
            );
        }
        assert!(decode(&bytes[..bytes.len() - 1], Path::new("x")).is_err());
    }

    #[test]
    fn an_update_is_on_disk_when_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let file = RaftStateFile::open(dir.path(), Io::default()).unwrap();
        assert_eq!(file.get(), RaftState::default());
        file.update(|s| s.vote = Some(Vote::new(4, 1))).unwrap();
        let again = RaftStateFile::open(dir.path(), Io::default()).unwrap();
        assert_eq!(again.get().vote, Some(Vote::new(4, 1)));
    }

    #[test]
    fn the_encoding_is_the_one_docs_format_shows() {
        let state = RaftState {
            vote: Some(Vote::new_committed(7, 2)),
            last_purged: Some(LogId::new_term_index(3, 300)),
            snapshot: None,
        };
        let want = [
            0xfc, 0x53, 0x52, 0x52, 0x53, 0x01, 0x01, 0x07, 0x01, 0x02, 0x01, 0x01, 0x03, 0xfb,
            0x2c, 0x01, 0x00, 0xfc, 0xc9, 0xdb, 0x2b, 0x4e,
        ];
        assert_eq!(encode(&state).unwrap(), want);
    }
}
