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
    LinkFaults, PartitionGroups, ProduceError, RaftClients, RaftLinks, ReplicatedPartition,
};
use crate::storage::{Log, LogEndListener};
use bytes::Bytes;
use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError, RwLock,
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
    /// The broker's connections to the others' Raft ports, and what it heard from them.
    pub links: RaftLinks,
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
    /// its Raft groups on `runtime` with `timings`.
    pub fn new(
        node_id: u64,
        peers: BTreeMap<u64, String>,
        runtime: tokio::runtime::Handle,
        timings: RaftTimings,
    ) -> Self {
        ClusterConfig {
            node_id,
            peers,
            timings,
            links: RaftLinks::new(node_id, timings.election_min),
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
    /// openraft's settings for the group `cluster_name`; a `quiet` group starts with its timer
    /// parked, for `replication::quiet` to start when it needs heartbeats or an election.
    fn openraft(&self, cluster_name: &str, quiet: bool) -> openraft::Config {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        openraft::Config {
            cluster_name: cluster_name.to_owned(),
            heartbeat_interval: ms(self.heartbeat),
            election_timeout_min: ms(self.election_min),
            election_timeout_max: ms(self.election_max),
            enable_tick: !quiet,
            ..openraft::Config::default()
        }
    }

    /// How the broker's quiet groups are watched (`replication::quiet`).
    pub(crate) fn quiet(&self) -> crate::replication::quiet::QuietTimings {
        crate::replication::quiet::QuietTimings {
            heartbeat: self.heartbeat,
            grace: self.election_max,
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

/// A producer batch's stamp: producer id, epoch, base sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct InFlight(u64, u16, u32);

/// How long a resent batch's answer waits for its earlier copy to be committed.
const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// The broker's side of one partition replica: openraft's replica and the runtime it runs on.
pub(crate) struct Replica {
    raft: Arc<ReplicatedPartition>,
    /// Stamps of producer batches on their way through the group from this replica.
    inflight: Mutex<HashSet<InFlight>>,
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
    /// before keeps its members), another one after a while without a leader. A `quiet` group
    /// heartbeats and elects only when `replication::quiet` sees the need (partitions); others
    /// always (the controller group, whose leader must keep its lease for read barriers).
    pub(crate) fn open(
        cluster: &ClusterConfig,
        topic: &str,
        partition: u32,
        log: Arc<Log>,
        nodes: &[u64],
        high_watermark: Arc<dyn LogEndListener>,
        quiet: bool,
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
        let mut network = RaftClients::new(cluster.links.clone(), group.clone());
        if let Some(faults) = &cluster.link_faults {
            network = network.with_faults(faults.clone());
        }
        let config = Arc::new(cluster.timings.openraft(&group, quiet));
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
        let replica = Arc::new(replica);
        if nodes.first() == Some(&cluster.node_id) {
            cluster
                .runtime
                .block_on(replica.initialize(members))
                .map_err(|e| failed(e.to_string()))?;
        } else {
            // The first replica's broker may be down (the controller group creates topics
            // with a majority up): a replica that has heard from no leader after a few election
            // timeouts makes the group itself. With the same members as the first replica's,
            // which openraft allows: the election decides who leads.
            let weak = Arc::downgrade(&replica);
            let wait = cluster.timings.election_max * 3;
            cluster.runtime.spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(replica) = weak.upgrade()
                    && let Err(e) = replica.initialize(members).await
                {
                    tracing::debug!(error = %e, "a replica could not make its group");
                }
            });
        }
        Ok(Replica {
            raft: replica,
            inflight: Mutex::default(),
            stopped: AtomicBool::new(false),
            runtime: cluster.runtime.clone(),
            node_id: cluster.node_id,
            directory: cluster.directory.clone(),
            nodes: nodes.to_vec(),
        })
    }

    /// Appends producer batches (each already validated) through the group, in order; returns
    /// each one's base offset once it is committed.
    ///
    /// Idempotent producers: every replica's log keeps the producer table from the batches it
    /// stores, so the leader asks it first, as an unreplicated log does under its lock. A batch
    /// stored before is answered with its offsets once they are committed, not stored again; a
    /// sequence gap or an old epoch is refused; a batch whose sequence is still on its way
    /// through the group (a resend racing its first send) is refused as unavailable, so the
    /// producer asks again and then finds it stored.
    pub(crate) fn append(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<Bytes>,
    ) -> Result<Vec<u64>> {
        let failed = |reason: String| BrokerError::Replication {
            topic: topic.to_owned(),
            partition,
            reason,
        };
        let (answers, claimed, committed_by) = self.check_producers(topic, partition, &batches)?;
        let release = || {
            let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
            for key in &claimed {
                inflight.remove(key);
            }
        };
        let writes = batches
            .into_iter()
            .zip(&answers)
            .filter(|(_, answer)| answer.is_none())
            .map(|(b, _)| self.raft.produce(b));
        let results = self
            .runtime
            .block_on(futures_util::future::join_all(writes));
        release();
        let mut written = results.into_iter();
        let mut out = Vec::with_capacity(answers.len());
        for answer in answers {
            let base = match answer {
                Some(base) => base,
                None => match written.next() {
                    Some(Ok(applied)) => applied.base_offset,
                    Some(Err(e)) => return Err(self.produce_error(topic, partition, e)),
                    None => return Err(failed("a write went unanswered".into())),
                },
            };
            out.push(base);
        }
        if committed_by > 0 {
            self.wait_committed(committed_by).map_err(failed)?;
        }
        Ok(out)
    }

    /// The producer-table check of [`Replica::append`]: per batch, its base offset if it was
    /// stored before; the stamps claimed as in flight; the offset the earlier copies end at.
    #[allow(clippy::type_complexity)]
    fn check_producers(
        &self,
        topic: &str,
        partition: u32,
        batches: &[Bytes],
    ) -> Result<(Vec<Option<u64>>, Vec<InFlight>, u64)> {
        let mut answers = vec![None; batches.len()];
        let mut claimed = Vec::new();
        let mut committed_by = 0;
        let mut inflight = self.inflight.lock().unwrap_or_else(PoisonError::into_inner);
        // A producer's later batches in one request follow its earlier ones, which the table
        // has not seen yet.
        let mut next_in_request: HashMap<(u64, u16), u32> = HashMap::new();
        let refuse = |inflight: &mut HashSet<InFlight>, claimed: &[InFlight], e: BrokerError| {
            for key in claimed {
                inflight.remove(key);
            }
            Err(e)
        };
        for (i, bytes) in batches.iter().enumerate() {
            let Some(header) = crate::record::BatchHeader::parse(bytes) else {
                continue;
            };
            let Some(stamp) = header.producer else {
                continue;
            };
            let key = InFlight(stamp.producer_id, stamp.epoch, stamp.base_sequence);
            if inflight.contains(&key) {
                return refuse(
                    &mut inflight,
                    &claimed,
                    BrokerError::Replication {
                        topic: topic.to_owned(),
                        partition,
                        reason: format!(
                            "producer {} epoch {} sequence {} is still being replicated; retry",
                            stamp.producer_id, stamp.epoch, stamp.base_sequence
                        ),
                    },
                );
            }
            let follows = next_in_request.get(&(stamp.producer_id, stamp.epoch))
                == Some(&stamp.base_sequence);
            let check = if follows {
                Ok(None)
            } else {
                self.raft.log().check_producer(&stamp, header.record_count)
            };
            match check {
                Ok(Some(earlier)) => {
                    answers[i] = Some(earlier.base_offset);
                    committed_by = committed_by.max(earlier.next_offset);
                }
                Ok(None) => {
                    next_in_request.insert(
                        (stamp.producer_id, stamp.epoch),
                        stamp.base_sequence.wrapping_add(header.record_count),
                    );
                    inflight.insert(key);
                    claimed.push(key);
                }
                Err(source) => {
                    return refuse(
                        &mut inflight,
                        &claimed,
                        BrokerError::Storage {
                            topic: topic.to_owned(),
                            partition,
                            source,
                        },
                    );
                }
            }
        }
        // An earlier copy is answered only by the leader (a follower's may not be committed,
        // and the producer must learn where to send).
        if committed_by > 0 && self.leader() != Some(self.node_id) {
            let e = self.not_leader(topic, partition, self.leader());
            return refuse(&mut inflight, &claimed, e);
        }
        Ok((answers, claimed, committed_by))
    }

    /// Waits until this replica's commit position reaches `offset`.
    fn wait_committed(&self, offset: u64) -> std::result::Result<(), String> {
        let deadline = std::time::Instant::now() + COMMIT_WAIT;
        while self.raft.committed_next_offset() < offset {
            if std::time::Instant::now() >= deadline {
                return Err(format!(
                    "the earlier copy of a resent batch (up to offset {offset}) is not committed \
                     after {COMMIT_WAIT:?}; retry"
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    fn not_leader(&self, topic: &str, partition: u32, leader: Option<u64>) -> BrokerError {
        BrokerError::NotLeader {
            topic: topic.to_owned(),
            partition,
            node_id: self.node_id,
            leader: leader.map(|node_id| LeaderHint {
                node_id,
                address: self.directory.get(node_id),
            }),
        }
    }

    fn produce_error(&self, topic: &str, partition: u32, e: ProduceError) -> BrokerError {
        match e {
            ProduceError::NotLeader { leader } => self.not_leader(
                topic,
                partition,
                leader.map(|(node_id, _raft_addr)| node_id),
            ),
            ProduceError::Invalid(reason) | ProduceError::Failed(reason) => {
                BrokerError::Replication {
                    topic: topic.to_owned(),
                    partition,
                    reason,
                }
            }
        }
    }

    /// A linearizable read barrier on the partition's group (see
    /// `ReplicatedPartition::read_barrier`): the commit position once this replica, still the
    /// leader, has applied everything committed before the call. Blocks: not from the runtime's
    /// own threads.
    pub(crate) fn read_barrier(
        &self,
        topic: &str,
        partition: u32,
        within: Duration,
    ) -> Result<u64> {
        self.runtime
            .block_on(self.raft.read_barrier(within))
            .map_err(|e| self.produce_error(topic, partition, e))
    }

    /// Waits at most `within` for the partition's group to have a leader that committed its
    /// first entry (not from the runtime's own threads); `false` if it took longer.
    pub(crate) fn wait_first_leader(&self, within: Duration) -> bool {
        self.runtime.block_on(self.raft.wait_first_leader(within))
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
