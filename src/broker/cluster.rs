//! The broker's place in a cluster (issue 16, phase 2): its node id, every broker's Raft
//! address, and the partition replicas it hosts through [`crate::replication`].
//!
//! A replicated topic's `topic.json` lists each partition's replicas (node ids). On a broker in
//! that list the partition's log is the log of a Raft group (`ReplicatedPartition`): produces go
//! through the group and are acknowledged once a majority holds them as durably as the topic's
//! fsync policy says; the partition's high watermark follows the group's commit position instead
//! of the log's end. The broker is synchronous and openraft is not: the replica's calls run on
//! the runtime in [`ClusterConfig::runtime`] and broker calls wait for them (they already run on
//! the blocking pool).

use super::{BrokerError, Result};
use crate::replication::{
    LinkFaults, PartitionGroups, ProduceError, RaftClients, ReplicatedPartition,
};
use crate::storage::{Log, LogEndListener};
use bytes::Bytes;
use std::{
    collections::BTreeMap,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

/// A broker's cluster settings. Without them (`BrokerConfig::cluster` is `None`) the broker is
/// a cluster of one whose topics are not replicated.
#[derive(Clone)]
pub struct ClusterConfig {
    /// This broker's node id.
    pub node_id: u64,
    /// Every broker's Raft address (`host:port`) by node id, this one's included.
    pub peers: BTreeMap<u64, String>,
    /// Raft timings of every partition group.
    pub timings: RaftTimings,
    /// The runtime the Raft groups run on.
    pub runtime: tokio::runtime::Handle,
    /// The Raft groups of this broker's replicas, which its Raft service answers for.
    pub groups: PartitionGroups,
    /// Client addresses of the brokers, as the server learns them (for leader hints).
    pub directory: Directory,
    /// A seam for tests: every Raft request to another broker asks it first.
    pub link_faults: Option<Arc<dyn LinkFaults>>,
}

impl ClusterConfig {
    /// Node `node_id` of the cluster of `peers` (Raft addresses by node id, this one's too),
    /// its Raft groups on `runtime`, with the default timings.
    pub fn new(
        node_id: u64,
        peers: BTreeMap<u64, String>,
        runtime: tokio::runtime::Handle,
    ) -> Self {
        ClusterConfig {
            node_id,
            peers,
            timings: RaftTimings::default(),
            runtime,
            groups: PartitionGroups::default(),
            directory: Directory::default(),
            link_faults: None,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("node_id", &self.node_id)
            .field("peers", &self.peers)
            .field("timings", &self.timings)
            .field("link_faults", &self.link_faults.is_some())
            .finish_non_exhaustive()
    }
}

/// How often a partition's leader heartbeats, and how long a follower waits without one before
/// it stands for election (a random time in `election_min..election_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTimings {
    /// The leader's heartbeat interval.
    pub heartbeat: Duration,
    /// The shortest election timeout.
    pub election_min: Duration,
    /// The longest election timeout.
    pub election_max: Duration,
}

impl Default for RaftTimings {
    /// 250 ms heartbeats, elections after 1-2 s of silence: a follower's fsync on a loaded
    /// shared disk takes hundreds of milliseconds, and a leader must not be deposed for it.
    fn default() -> Self {
        RaftTimings {
            heartbeat: Duration::from_millis(250),
            election_min: Duration::from_secs(1),
            election_max: Duration::from_secs(2),
        }
    }
}

impl RaftTimings {
    fn openraft(&self, cluster_name: &str) -> openraft::Config {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            ..openraft::Config::default()
        }
    }
}

/// Client addresses of the cluster's brokers, by node id: filled by the server as it learns
/// them, read for the leader hint of a refused produce and for metadata.
#[derive(Debug, Clone, Default)]
pub struct Directory(Arc<RwLock<BTreeMap<u64, String>>>);

impl Directory {
    /// The client address of `node`, if known.
    pub fn get(&self, node: u64) -> Option<String> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .cloned()
    }

    /// Records the client address of `node`.
    pub fn set(&self, node: u64, address: String) {
        self.0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(node, address);
    }
}

/// Where a refused write should go instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderHint {
    /// The leader's node id.
    pub node_id: u64,
    /// Its client address, if this broker has learned it.
    pub address: Option<String>,
}

impl std::fmt::Display for LeaderHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.address {
            Some(a) => write!(f, "node {} at {a}", self.node_id),
            None => write!(f, "node {} (address not yet known)", self.node_id),
        }
    }
}

/// The replicas of each of a topic's partitions: partition `p`'s are `nodes` rotated by `p`,
/// the first `factor` of them (so each partition's first replica, which makes its group and
/// so usually leads it first, differs from its neighbours').
pub(crate) fn place(nodes: &[u64], partitions: u32, factor: usize) -> Vec<Vec<u64>> {
    (0..partitions as usize)
        .map(|p| (0..factor).map(|i| nodes[(p + i) % nodes.len()]).collect())
        .collect()
}

/// The broker's side of one partition replica: openraft's replica and the runtime it runs on.
pub(crate) struct Replica {
    raft: Arc<ReplicatedPartition>,
    /// Set once its Raft node is stopped (or being stopped).
    stopped: AtomicBool,
    runtime: tokio::runtime::Handle,
    node_id: u64,
    directory: Directory,
    /// Node ids of the partition's replicas.
    pub(crate) nodes: Vec<u64>,
}

impl Replica {
    /// Opens the replica of `topic`/`partition` whose log is `log`, its high watermark fed by the
    /// group's commit position; the partition's first replica makes the group (a group made
    /// before keeps its members).
    pub(crate) fn open(
        cluster: &ClusterConfig,
        topic: &str,
        partition: u32,
        log: Arc<Log>,
        nodes: &[u64],
        high_watermark: Arc<dyn LogEndListener>,
    ) -> Result<Replica> {
        let group = format!("{topic}/{partition}");
        let failed = |reason: String| BrokerError::Replication {
            topic: topic.to_owned(),
            partition,
            reason,
        };
        let mut members = BTreeMap::new();
        for node in nodes {
            let addr = cluster.peers.get(node).ok_or_else(|| {
                failed(format!(
                    "replica node {node} is not among the cluster's peers ({:?})",
                    cluster.peers.keys().collect::<Vec<_>>()
                ))
            })?;
            members.insert(*node, addr.clone());
        }
        let mut network = RaftClients::new(cluster.node_id, group.clone());
        if let Some(faults) = &cluster.link_faults {
            network = network.with_faults(faults.clone());
        }
        let config = Arc::new(cluster.timings.openraft(&group));
        let replica = cluster
            .runtime
            .block_on(ReplicatedPartition::open(
                cluster.node_id,
                group,
                log,
                config,
                cluster.groups.clone(),
                network,
            ))
            .map_err(|e| failed(e.to_string()))?;
        replica.on_commit(high_watermark);
        if nodes.first() == Some(&cluster.node_id) {
            cluster
                .runtime
                .block_on(replica.initialize(members))
                .map_err(|e| failed(e.to_string()))?;
        }
        Ok(Replica {
            raft: Arc::new(replica),
            stopped: AtomicBool::new(false),
            runtime: cluster.runtime.clone(),
            node_id: cluster.node_id,
            directory: cluster.directory.clone(),
            nodes: nodes.to_vec(),
        })
    }

    /// Appends producer batches (each already validated) through the group, in order; returns
    /// each one's base offset once it is committed.
    pub(crate) fn append(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<Bytes>,
    ) -> Result<Vec<u64>> {
        let writes = batches.into_iter().map(|b| self.raft.produce(b));
        let results = self
            .runtime
            .block_on(futures_util::future::join_all(writes));
        results
            .into_iter()
            .map(|r| match r {
                Ok(applied) => Ok(applied.base_offset),
                Err(ProduceError::NotLeader { leader }) => Err(BrokerError::NotLeader {
                    topic: topic.to_owned(),
                    partition,
                    node_id: self.node_id,
                    leader: leader.map(|(node_id, _raft_addr)| LeaderHint {
                        node_id,
                        address: self.directory.get(node_id),
                    }),
                }),
                Err(ProduceError::Invalid(reason) | ProduceError::Failed(reason)) => {
                    Err(BrokerError::Replication {
                        topic: topic.to_owned(),
                        partition,
                        reason,
                    })
                }
            })
            .collect()
    }

    /// The leader this replica knows of.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.raft.leader()
    }

    /// The highest term this replica has seen.
    pub(crate) fn term(&self) -> u64 {
        self.raft.term()
    }

    /// Stops the replica's Raft node and waits for it (its log stays open until dropped). Not
    /// from the runtime's own threads.
    pub(crate) fn stop(&self) {
        if self.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        if let Err(e) = self.runtime.block_on(self.raft.shutdown()) {
            tracing::warn!(error = %e, "stopping a partition replica failed");
        }
    }
}

impl Drop for Replica {
    /// A replica dropped without [`Replica::stop`] (a topic whose other partition failed to
    /// open, the last reader of a deleted topic letting go) is stopped in the background: a drop
    /// may run on the runtime, where waiting would stall it.
    fn drop(&mut self) {
        if !self.stopped.swap(true, Ordering::SeqCst) {
            let replica = self.raft.clone();
            self.runtime.spawn(async move {
                if let Err(e) = replica.shutdown().await {
                    tracing::warn!(error = %e, "stopping a partition replica failed");
                }
            });
        }
    }
}
