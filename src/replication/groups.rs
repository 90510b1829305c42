//! The Raft groups of one broker's partition replicas, by name: what its Raft service
//! dispatches other brokers' requests to.

use super::{ReplicationError, state_machine::PartitionMachine, types::PartitionRaft};
use openraft::{
    errors::RaftError,
    raft::{AppendEntriesRequest, AppendEntriesResponse},
};
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

/// openraft's handle on a partition's Raft group.
pub type Raft = openraft::Raft<PartitionRaft, PartitionMachine>;

/// What openraft answers an AppendEntries with.
pub(crate) type AppendAnswer =
    Result<AppendEntriesResponse<PartitionRaft>, RaftError<PartitionRaft>>;

/// A replica as the broker's Raft service sees it (`partition.rs` has the one kind).
#[tonic::async_trait]
pub(crate) trait GroupMember: Send + Sync {
    /// openraft's handle on the replica's Raft node running now.
    fn raft(&self) -> Raft;

    /// Whether its Raft node runs with its timer parked, started by `quiet::run` only when
    /// needed (partition groups), rather than always (the controller group).
    fn quiesces(&self) -> bool;

    /// Hands a leader's AppendEntries to the replica's Raft node, unless the replica must first
    /// start it again (an error then: the leader sends again).
    async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<PartitionRaft>,
    ) -> Result<AppendAnswer, ReplicationError>;
}

/// The Raft groups of one broker's replicas, by group name ("topic/partition"): what its Raft
/// service dispatches to.
#[derive(Clone, Default)]
pub struct PartitionGroups {
    groups: Arc<RwLock<HashMap<String, Arc<dyn GroupMember>>>>,
    /// Woken when a group is added.
    added: Arc<tokio::sync::Notify>,
}

impl PartitionGroups {
    /// The group named `group`, if this broker has a replica in it.
    pub(crate) fn get(&self, group: &str) -> Option<Arc<dyn GroupMember>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    /// Every group of this broker's, with its name.
    pub(crate) fn members(&self) -> Vec<(String, Arc<dyn GroupMember>)> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(name, member)| (name.clone(), member.clone()))
            .collect()
    }

    /// The group named `group`, waiting up to `within` for it to be added: a new topic's
    /// first replica asks for votes as soon as its broker made it, often before the other
    /// brokers have applied the topic's creation.
    pub(crate) async fn get_soon(
        &self,
        group: &str,
        within: std::time::Duration,
    ) -> Option<Arc<dyn GroupMember>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let added = self.added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(member) = self.get(group) {
                return Some(member);
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return self.get(group);
            }
        }
    }

    pub(crate) fn insert(&self, group: String, member: Arc<dyn GroupMember>) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group, member);
        self.added.notify_waiters();
    }

    pub(crate) fn remove(&self, group: &str) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
    }
}
