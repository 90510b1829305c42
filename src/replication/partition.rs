//! A partition replica: its log, its Raft storage, and the openraft node that drives them.

use super::{
    ReplicationError,
    error::blocking,
    groups::{AppendAnswer, GroupMember, PartitionGroups, Raft},
    network::RaftClients,
    open_partition,
    state_machine::PartitionMachine,
    types::{AppliedBatch, EntryBatch, PartitionRaft, stored_index},
};
use crate::{
    record::{MAX_BATCH_BYTES, validate_batch},
    storage::{FsyncPolicy, Log, LogEndListener},
};
use bytes::Bytes;
use openraft::{
    BasicNode,
    async_runtime::WatchReceiver,
    errors::{ClientWriteError, LinearizableReadError, RaftError},
    raft::AppendEntriesRequest,
};
use std::{
    collections::BTreeMap,
    sync::{Arc, PoisonError, RwLock},
};

/// One replica of a partition.
pub struct ReplicatedPartition {
    member: Arc<Member>,
}

/// A replica as its broker's Raft service sees it: the Raft node that answers other replicas,
/// which is started again (over the same log) when the replica has to drop entries it had seen
/// committed (see [`Member::append_entries`]).
struct Member {
    node_id: u64,
    group: String,
    log: Arc<Log>,
    config: Arc<openraft::Config>,
    network: RaftClients,
    groups: PartitionGroups,
    running: RwLock<Running>,
    /// Held while the Raft node is started again or shut down, so one happens at a time; `true`
    /// once it is shut down for good.
    restarting: tokio::sync::Mutex<bool>,
}

/// The Raft node a replica runs now.
#[derive(Clone)]
struct Running {
    raft: Raft,
    machine: PartitionMachine,
    /// How many times the node was started again: a conflict found on one node is not acted on
    /// by the next.
    generation: u64,
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
/// leadership back without an election (its saved commit position may be behind, so it could
/// serve a stale high watermark until it learned the commit again); pre-vote, so that a replica cut off
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
        let raft = Raft::new(
            node_id,
            config.clone(),
            network.clone(),
            store,
            machine.clone(),
        )
        .await
        .map_err(|e| ReplicationError::Task(e.to_string()))?;
        let member = Arc::new(Member {
            node_id,
            group: group.clone(),
            log,
            config,
            network,
            groups: groups.clone(),
            running: RwLock::new(Running {
                raft,
                machine,
                generation: 0,
            }),
            restarting: tokio::sync::Mutex::new(false),
        });
        groups.insert(group, member.clone());
        Ok(ReplicatedPartition { member })
    }

    /// Makes a new group of `members` (node id to Raft service address). Call it on one member
    /// of a group that never had one; a group already made keeps its membership.
    pub async fn initialize(&self, members: BTreeMap<u64, String>) -> Result<(), ReplicationError> {
        let members: BTreeMap<u64, BasicNode> = members
            .into_iter()
            .map(|(id, addr)| (id, BasicNode::new(addr)))
            .collect();
        let raft = self.raft();
        match raft.initialize(members).await {
            Ok(()) => Ok(()),
            // Made before (a restart): fine if it has members. Not made, but not empty (a log
            // written before replication): an error, or the group would wait for members forever.
            Err(RaftError::APIError(openraft::errors::InitializeError::NotAllowed(e))) => {
                let made = raft
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
        let raft = self.raft();
        let mut renewed = false;
        loop {
            match raft.client_write(EntryBatch(batch.clone())).await {
                Ok(r) => return Ok(r.data),
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))
                    if f.leader_id.is_none() && !renewed && self.renew_lease(&raft).await =>
                {
                    renewed = true;
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                    return Err(ProduceError::NotLeader {
                        leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                    });
                }
                Err(e) => return Err(ProduceError::Failed(e.to_string())),
            }
        }
    }

    /// A leader that went quiet (`quiet.rs`: no heartbeats while nothing happens) lets its
    /// lease lapse, and openraft refuses writes without one: if this replica still leads, sends
    /// a heartbeat and waits (up to an election timeout) for a majority to answer it. Whether
    /// the lease was renewed.
    async fn renew_lease(&self, raft: &Raft) -> bool {
        let within = std::time::Duration::from_millis(self.member.config.election_timeout_min);
        let asked = <openraft_rt_tokio::TokioInstant as openraft::Instant>::now();
        if raft.metrics().borrow_watched().state != openraft::ServerState::Leader
            || raft.trigger().heartbeat().await.is_err()
        {
            return false;
        }
        raft.wait(Some(within))
            .metrics(
                |m| {
                    m.state != openraft::ServerState::Leader
                        || m.last_quorum_acked.as_ref().is_some_and(|t| **t >= asked)
                },
                "a majority answers the leader's heartbeat",
            )
            .await
            .is_ok_and(|m| m.state == openraft::ServerState::Leader)
    }

    /// A linearizable read barrier (openraft's read index): confirms with a majority that this
    /// replica still leads, waits until it has applied everything committed when the barrier
    /// was asked for, and returns its commit position then (the offset after the last
    /// committed batch). A state read after it sees every write acknowledged before the call.
    /// Fails with [`ProduceError::NotLeader`] on a follower, and after `within`.
    pub async fn read_barrier(&self, within: std::time::Duration) -> Result<u64, ProduceError> {
        let raft = self.raft();
        let asked = raft.ensure_linearizable(openraft::ReadPolicy::ReadIndex);
        match tokio::time::timeout(within, asked).await {
            Ok(Ok(_)) => Ok(self.committed_next_offset()),
            Ok(Err(RaftError::APIError(LinearizableReadError::ForwardToLeader(f)))) => {
                Err(ProduceError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                })
            }
            Ok(Err(e)) => Err(ProduceError::Failed(e.to_string())),
            Err(_) => Err(ProduceError::Failed(format!(
                "no majority confirmed this replica's leadership within {within:?}"
            ))),
        }
    }

    /// The offset after the last committed producer batch this replica applied: what it may
    /// serve to consumers.
    pub fn committed_next_offset(&self) -> u64 {
        self.member
            .with_running(|r| r.machine.committed_next_offset())
    }

    /// Tells `listener` the commit position (the offset after the last committed producer
    /// batch applied here) now and every time it moves: what feeds the partition's high
    /// watermark. It stays told across a restart of the Raft node.
    pub fn on_commit(&self, listener: Arc<dyn LogEndListener>) {
        self.member.with_running(|r| r.machine.on_commit(listener));
    }

    /// Waits at most `within` for the group's first leader to have committed its first entry
    /// and this replica to have applied it: the group then takes produces, and its membership
    /// is on a majority (synced under every policy). `false` if that took longer.
    pub async fn wait_first_leader(&self, within: std::time::Duration) -> bool {
        self.raft()
            .wait(Some(within))
            .applied_index_at_least(Some(1), "the group's first leader's first entry")
            .await
            .is_ok()
    }

    /// The leader this replica knows of, if any.
    pub fn leader(&self) -> Option<u64> {
        self.raft().metrics().borrow_watched().current_leader
    }

    /// The highest term this replica has seen.
    pub fn term(&self) -> u64 {
        self.raft().metrics().borrow_watched().current_term
    }

    /// openraft's handle (metrics, membership changes, waiting) on the Raft node running now.
    pub fn raft(&self) -> Raft {
        self.member.with_running(|r| r.raft.clone())
    }

    /// How many times this replica's Raft node was started again because the replica had to
    /// drop entries it had seen committed (possible only when the log does not fsync before
    /// acknowledging).
    pub fn restarts(&self) -> u64 {
        self.member.with_running(|r| r.generation)
    }

    /// The replica's log.
    pub fn log(&self) -> &Arc<Log> {
        &self.member.log
    }

    /// Stops the replica's Raft node and unregisters it; the log stays open until dropped.
    pub async fn shutdown(&self) -> Result<(), ReplicationError> {
        let mut stopped = self.member.restarting.lock().await;
        *stopped = true;
        self.member.groups.remove(&self.member.group);
        self.raft()
            .shutdown()
            .await
            .map_err(|e| ReplicationError::Task(e.to_string()))
    }
}

impl Member {
    /// Runs `f` on the Raft node running now, under the read lock (no handle cloned).
    fn with_running<T>(&self, f: impl FnOnce(&Running) -> T) -> T {
        f(&self.running.read().unwrap_or_else(PoisonError::into_inner))
    }

    fn running(&self) -> Running {
        self.with_running(Running::clone)
    }

    /// The first index at or below this replica's commit position where `rpc` (its previous
    /// entry and its entries) names another entry than the replica's log holds.
    async fn first_conflict_below_commit(
        &self,
        raft: &Raft,
        rpc: &AppendEntriesRequest<PartitionRaft>,
    ) -> Result<Option<u64>, ReplicationError> {
        let (committed, purged, vote) = {
            let m = raft.metrics();
            let m = m.borrow_watched();
            (m.local_committed, m.purged, m.vote)
        };
        let Some(committed) = committed else {
            return Ok(None);
        };
        // Only a leader that openraft will listen to counts: a deposed one (a request delayed,
        // or a leader cut off that has not heard of the new term) may well name other entries,
        // and openraft refuses its request by its vote. A leader of the committed entry's term
        // or later has every committed entry (Raft's leader completeness), so a conflict from
        // it means committed entries were lost.
        let current = matches!(
            rpc.vote.partial_cmp(&vote),
            Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
        );
        if !current || rpc.vote.leader_id.term < committed.leader_id.term {
            return Ok(None);
        }
        let purged_next = purged.map_or(0, |p| p.index + 1);
        let ids = rpc
            .prev_log_id
            .iter()
            .copied()
            .chain(rpc.entries.iter().map(|e| e.log_id));
        for id in ids.filter(|id| (purged_next..=committed.index).contains(&id.index)) {
            let term = id.leader_id.term;
            // One leader per term: an entry of the committed entry's term at or below it is
            // the replica's own; one of a later term cannot be.
            if term == committed.leader_id.term {
                continue;
            }
            if term > committed.leader_id.term || self.term_of(id.index).await? != Some(term) {
                return Ok(Some(id.index));
            }
        }
        Ok(None)
    }

    /// The term of the entry at `index` in the replica's log, if the log holds it.
    async fn term_of(&self, index: u64) -> Result<Option<u64>, ReplicationError> {
        let log = self.log.clone();
        blocking(move || {
            let stored = stored_index(index);
            match log.first_entry_from(stored)? {
                Some((offset, found)) if found == stored => Ok(Some(log.header_at(offset)?.term)),
                _ => Ok(None),
            }
        })
        .await
    }

    /// Stops the Raft node of `generation`, drops the log's entries from `index` on, and starts
    /// a new node over the log (its commit position then comes from the leader again). Does
    /// nothing if the node was started again or shut down since.
    async fn restart_from(&self, index: u64, generation: u64) -> Result<(), ReplicationError> {
        let stopped = self.restarting.lock().await;
        let old = self.running();
        if *stopped || old.generation != generation {
            return Ok(());
        }
        tracing::warn!(
            group = %self.group,
            index,
            "a leader's entries contradict entries this replica saw committed (lost by a power cut \
             under a policy that does not fsync before acknowledging): dropping them and \
             starting the replica again"
        );
        old.raft
            .shutdown()
            .await
            .map_err(|e| ReplicationError::Task(e.to_string()))?;
        // Its state machine worker may still be applying entries that the cut removes.
        old.machine.retire();
        let log = self.log.clone();
        blocking(move || {
            if let Some((offset, _)) = log.first_entry_from(stored_index(index))? {
                log.truncate(offset)?;
            }
            Ok(())
        })
        .await?;
        let (store, machine) = open_partition(self.log.clone())?;
        machine.take_listener(&old.machine);
        let raft = Raft::new(
            self.node_id,
            self.config.clone(),
            self.network.clone(),
            store,
            machine.clone(),
        )
        .await
        .map_err(|e| ReplicationError::Task(e.to_string()))?;
        *self.running.write().unwrap_or_else(PoisonError::into_inner) = Running {
            raft,
            machine,
            generation: generation + 1,
        };
        Ok(())
    }
}

#[tonic::async_trait]
impl GroupMember for Member {
    /// openraft's handle on the Raft node running now.
    fn raft(&self) -> Raft {
        self.with_running(|r| r.raft.clone())
    }

    fn quiesces(&self) -> bool {
        !self.config.enable_tick
    }

    /// Hands a leader's AppendEntries to the Raft node, unless it contradicts what this replica
    /// saw committed.
    ///
    /// Raft assumes a committed entry is never lost, which holds when the log fsyncs before it
    /// acknowledges. Under `interval` and `never` two replicas can lose power and come back
    /// without entries the third saw committed, elect a leader between them and write new
    /// entries at those indexes. openraft cannot take back a commit (it would skip the leader's
    /// entries below its commit position and keep its own, so the logs would differ for good),
    /// so the replica drops its log from the first index in conflict, starts its Raft node
    /// again over what is left (which then catches up from the leader, as after a restart), and
    /// answers UNAVAILABLE: the leader sends again. Under `always` this never happens.
    async fn append_entries(
        &self,
        rpc: AppendEntriesRequest<PartitionRaft>,
    ) -> Result<AppendAnswer, ReplicationError> {
        let running = self.running();
        if let Some(index) = self
            .first_conflict_below_commit(&running.raft, &rpc)
            .await?
        {
            self.restart_from(index, running.generation).await?;
            return Err(ReplicationError::Resynced {
                group: self.group.clone(),
                index,
            });
        }
        Ok(running.raft.append_entries(rpc).await)
    }
}
