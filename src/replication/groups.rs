//! The Raft groups of one broker's partition replicas, by name: what its Raft service
//! dispatches other brokers' requests to.

use super::{partition::Member, state_machine::PartitionMachine, types::PartitionRaft};
use std::{
    collections::HashMap,
    sync::{Arc, PoisonError, RwLock},
};

/// openraft's handle on a partition's Raft group.
pub type Raft = openraft::Raft<PartitionRaft, PartitionMachine>;

/// The Raft groups of one broker's replicas, by group name ("topic/partition"): what its Raft
/// service dispatches to.
#[derive(Clone, Default)]
pub struct PartitionGroups {
    groups: Arc<RwLock<HashMap<String, Arc<Member>>>>,
}

impl PartitionGroups {
    /// The group named `group`, if this broker has a replica in it.
    pub(crate) fn get(&self, group: &str) -> Option<Arc<Member>> {
        self.groups
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(group)
            .cloned()
    }

    pub(crate) fn insert(&self, group: String, member: Arc<Member>) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(group, member);
    }

    pub(crate) fn remove(&self, group: &str) {
        self.groups
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(group);
    }
}
