//! Replication (issue 16): a partition's Raft group on openraft, whose Raft log IS the
//! partition's segment log (one entry = one stored batch, the entry's term and index in the
//! batch header). This layer adapts openraft's storage traits to [`crate::storage::Log`]; it
//! depends on storage and record only.
//!
//! - [`PartitionLogStore`]: the log storage (append with a flush callback that fires only once
//!   the batches are as durable as the fsync policy says, truncate after, purge, the vote).
//! - [`PartitionMachine`]: the state machine, which only moves the commit position (the high
//!   watermark); the records are the log's.
//! - [`RaftStateFile`]: the vote, the purged log id and the snapshot, in one atomically written
//!   file beside the segments.

mod error;
mod groups;
mod links;
mod log_store;
mod network;
mod partition;
pub mod quiet;
mod state_file;
mod state_machine;
mod types;

pub use error::ReplicationError;
pub use groups::{PartitionGroups, Raft};
pub use links::RaftLinks;
pub use log_store::{PartitionLogReader, PartitionLogStore};
pub use network::{Link, LinkFaults, RaftClients, RaftConnection, RaftService, serve_raft};
pub use partition::{ProduceError, ReplicatedPartition};
pub use state_file::{PartitionSnapshot, RAFT_STATE_FILE, RaftState, RaftStateFile};
pub use state_machine::{PartitionMachine, SnapshotPosition};
pub use types::{
    AppliedBatch, Entry, EntryBatch, LogId, PartitionRaft, SnapshotMeta, StoredMembership, Vote,
    raft_index, stored_index,
};

use crate::storage::Log;
use std::sync::Arc;

/// Opens the Raft storage of the partition whose log is `log`: its log store and state machine,
/// sharing the partition's Raft state file.
pub fn open_partition(
    log: Arc<Log>,
) -> Result<(PartitionLogStore, PartitionMachine), ReplicationError> {
    let state = Arc::new(RaftStateFile::open(log.dir(), log.io.clone())?);
    Ok((
        PartitionLogStore::new(log.clone(), state.clone()),
        PartitionMachine::new(log, state),
    ))
}

/// Entry points for the fuzz targets in `fuzz/` (not part of the API).
#[doc(hidden)]
pub mod fuzzing {
    use super::{state_file, types};
    use crate::record::{Frame, decode_frame, validate_stored_batch};
    use std::path::Path;

    /// Decodes a `raft-state` file and, if it is accepted, encodes it back as the replication
    /// layer would write it.
    pub fn reencode_raft_state(bytes: &[u8]) -> Option<Vec<u8>> {
        let state = state_file::decode(bytes, Path::new("raft-state")).ok()?;
        state_file::encode(&state).ok()
    }

    /// Reads `bytes` as a stored batch the way a replica reads its log for Raft: validated as a
    /// stored batch, then turned into an entry's payload. If that succeeds, returns the payload
    /// and the payload got by storing it again and reading it back (both as `Debug` text), which
    /// must be the same.
    pub fn roundtrip_entry(bytes: &[u8]) -> Option<(String, String)> {
        let valid = validate_stored_batch(bytes).ok()?;
        let first = valid.first()?;
        let whole = bytes::Bytes::copy_from_slice(first.bytes());
        let payload = types::entry_payload(first.header(), whole).ok()?;
        let back = match types::entry_bytes(&payload, 0) {
            Ok(again) => match decode_frame(&again) {
                Frame::Batch(view) => {
                    let header = *view.header();
                    match types::entry_payload(&header, again.clone()) {
                        Ok(p) => format!("{p:?}"),
                        Err(e) => format!("<does not read back: {e}>"),
                    }
                }
                other => format!("<stored again, not a batch: {other:?}>"),
            },
            Err(e) => format!("<does not encode: {e}>"),
        };
        Some((format!("{payload:?}"), back))
    }
}
