//! A partition replica: its log, its Raft storage, and the openraft node that drives them.

use super::{
    ReplicationError,
    groups::{PartitionGroups, Raft},
    network::RaftClients,
    open_partition,
    state_machine::PartitionMachine,
    types::{AppliedBatch, EntryBatch},
};
use crate::{
    record::{MAX_BATCH_BYTES, validate_batch},
    storage::{FsyncPolicy, Log, LogEndListener},
};
use bytes::Bytes;
use openraft::{
    BasicNode,
    async_runtime::WatchReceiver,
    errors::{ClientWriteError, RaftError},
};
use std::{collections::BTreeMap, sync::Arc};

/// One replica of a partition.
pub struct ReplicatedPartition {
    group: String,
    raft: Raft,
    machine: PartitionMachine,
    log: Arc<Log>,
    groups: PartitionGroups,
}

/// Why a produce to a replicated partition failed.
#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    /// This replica is not the leader; the leader, if known, is named.
    #[error("not the partition's leader (leader: {leader:?})")]
    NotLeader {
        /// The leader's node id and Raft address, if this replica knows them.
        leader: Option<(u64, String)>,
    },
    /// The bytes are not one valid producer batch (refused before they reach the group, whose
    /// storage would otherwise fail on them and stop).
    #[error("not one valid batch: {0}")]
    Invalid(String),
    /// Anything else: storage, a shut-down group.
    #[error("{0}")]
    Failed(String),
}

/// `config` as a partition replica must run: openraft never snapshots and purges on its own (the
/// log is the partition's data, which only retention removes); a leader that restarts does not take its
/// leadership back without an election (its commit position is not saved, so it would serve a
/// stale high watermark until it learned the commit again); pre-vote, so that a replica cut off
/// and back does not depose a working leader with the terms it counted up alone; and, unless
/// the log fsyncs before acknowledging (`always`), a follower whose power cut lost entries it
/// had reported written is taken back instead of stopping the leader (under `interval` and
/// `never` such a loss is what the policy allows).
fn replica_config(
    config: &openraft::Config,
    fsync: FsyncPolicy,
) -> Result<Arc<openraft::Config>, ReplicationError> {
    let config = openraft::Config {
        snapshot_policy: openraft::SnapshotPolicy::Never,
        enable_leader_restore: Some(false),
        enable_pre_vote: Some(true),
        allow_log_reversion: Some(!matches!(fsync, FsyncPolicy::Always)),
        ..config.clone()
    };
    config
        .validate()
        .map(Arc::new)
        .map_err(|e| ReplicationError::Config(e.to_string()))
}

impl ReplicatedPartition {
    /// Opens the replica of `group` whose log is `log` on node `node_id`, talking to the other
    /// replicas through `network` (`RaftClients::new(node_id, group)`), and registers its Raft
    /// group in `groups` (so the broker's Raft service answers for it).
    pub async fn open(
        node_id: u64,
        group: impl Into<String>,
        log: Arc<Log>,
        config: Arc<openraft::Config>,
        groups: PartitionGroups,
        network: RaftClients,
    ) -> Result<Self, ReplicationError> {
        let group = group.into();
        let config = replica_config(&config, log.config().fsync)?;
        let (store, machine) = open_partition(log.clone())?;
        let raft = Raft::new(node_id, config, network, store, machine.clone())
            .await
            .map_err(|e| ReplicationError::Task(e.to_string()))?;
        groups.insert(group.clone(), raft.clone());
        Ok(ReplicatedPartition {
            group,
            raft,
            machine,
            log,
            groups,
        })
    }

    /// Makes a new group of `members` (node id to Raft service address). Call it on one member
    /// of a group that never had one; a group already made keeps its membership.
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<(), ReplicationError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        match self.raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Made before (a restart): fine if it has members. Not made, but not empty (a log
            // written before replication): an error, or the group would wait for members forever.
            Err(RaftError::APIError(openraft::errors::InitializeError::NotAllowed(e))) => {
                let made = self
                    .raft
                    .metrics()
                    .borrow_watched()
                    .membership_config
                    .membership()
                    .voter_ids()
                    .next()
                    .is_some();
                if made {
                    Ok(())
                } else {
                    Err(ReplicationError::Task(format!(
                        "cannot make a Raft group over this log: {e}"
                    )))
                }
            }
            Err(e) => Err(ReplicationError::Task(e.to_string())),
        }
    }

    /// Appends a producer's batch (as validated by the broker: `validate_batch`) through the
    /// group: returns once a majority has it as durably as the fsync policy says and it is
    /// committed, with the offsets it took.
    pub async fn produce(&self, batch: Bytes) -> Result<AppliedBatch, ProduceError> {
        match validate_batch(&batch, MAX_BATCH_BYTES) {
            Ok(v) if v.len() == 1 => {}
            Ok(v) => return Err(ProduceError::Invalid(format!("{} batches", v.len()))),
            Err(e) => return Err(ProduceError::Invalid(e.to_string())),
        }
        match self.raft.client_write(EntryBatch(batch)).await {
            Ok(r) => Ok(r.data),
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ProduceError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Err(e) => Err(ProduceError::Failed(e.to_string())),
        }
    }

    /// The offset after the last committed producer batch this replica applied: what it may
    /// serve to consumers.
    pub fn committed_next_offset(&self) -> u64 {
        self.machine.committed_next_offset()
    }

    /// Tells `listener` the commit position (the offset after the last committed producer
    /// batch applied here) now and every time it moves: what feeds the partition's high
    /// watermark.
    pub fn on_commit(&self, listener: Arc<dyn LogEndListener>) {
        self.machine.on_commit(listener);
    }

    /// The leader this replica knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The highest term this replica has seen.
    pub fn term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    /// openraft's handle (metrics, membership changes, waiting).
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// The replica's log.
    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }

    /// Stops the replica's Raft node and unregisters it; the log stays open until dropped.
    pub async fn shutdown(&self) -> Result<(), ReplicationError> {
        self.groups.remove(&self.group);
        self.raft
            .shutdown()
            .await
            .map_err(|e| ReplicationError::Task(e.to_string()))
    }
}
