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
mod log_store;
mod network;
mod partition;
mod state_file;
mod state_machine;
mod types;

pub use error::ReplicationError;
pub use groups::{PartitionGroups, Raft};
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
