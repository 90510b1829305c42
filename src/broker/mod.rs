//! The broker: topics and their partitions, produce routing, committed group offsets, and the
//! signals that wake long-polls and subscribers. Synchronous (every call may block on disk: call
//! it off the async runtime), shared behind an `Arc`.
//!
//! Data directory layout:
//!
//! ```text
//! DATA/.lock                         held (flock) while a broker runs
//! DATA/topics/<topic>/topic.json     name, partition count, config, replicas (written atomically)
//! DATA/topics/<topic>/<partition>/   one storage::Log (and, replicated, its raft-state)
//! DATA/groups/<group>.offsets        committed offsets, a storage journal (see groups.rs)
//! DATA/trash/                        deleted topics on their way out; emptied at start
//! ```

mod assignor;
mod cluster;
mod config;
mod controller;
mod error;
mod groups;
mod membership;
mod names;
pub mod partitioner;
mod produce;
mod producer_ids;
mod ticker;
mod topic;

pub use assignor::{Assignment, Assignor};
pub use cluster::{ClusterConfig, Directory, LeaderHint, RaftTimings};
pub use config::{
    BrokerConfig, FsyncMode, MAX_SEGMENT_BYTES, MIN_SEGMENT_BYTES, TopicConfig, TopicConfigUpdate,
};
pub use controller::Coordinator;
pub use error::BrokerError;
pub use groups::CommittedOffset;
pub use membership::{
    GroupMembers, GroupTimings, Heartbeat, HeartbeatAnswer, JOIN_EPOCH, LEAVE_EPOCH, MemberInfo,
    Refusal, STATIC_LEAVE_EPOCH,
};
pub use names::{MAX_NAME_LEN, validate_group_name, validate_topic_name};
pub use produce::{ProduceInput, Produced};
pub use topic::{PartitionHandle, PartitionInfo, ReplicaInfo, TopicInfo};

use crate::errors::error_chain;
use crate::storage::{Io, Log, LogConfig, Offset};
use std::{
    collections::BTreeMap,
    fs::File,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use topic::{TOPIC_FILE, Topic, TopicFile};

/// Result type of the broker layer.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;

/// Where a read starts in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// This offset.
    Offset(Offset),
    /// The earliest stored offset.
    Earliest,
    /// The next offset: only records appended from now on.
    Latest,
    /// The first record with a timestamp at or after this (ms); latest if none.
    Timestamp(i64),
    /// The group's committed offset; earliest if it has none.
    Group(String),
}

/// A group's progress in one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The committed offset, if the group has committed one here.
    pub committed_offset: Option<Offset>,
    /// The partition's next offset.
    pub next_offset: Offset,
    /// Records the group has yet to read: from the later of the committed offset and the
    /// earliest stored offset, to the next offset.
    pub lag: u64,
    /// The member that owns the partition now, if any.
    pub owner: Option<String>,
}

/// A partition's offsets, as [`Broker::list_offsets`] gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffsets {
    /// The partition.
    pub partition: u32,
    /// The earliest offset stored.
    pub earliest_offset: Offset,
    /// The next offset.
    pub next_offset: Offset,
    /// Where the position asked for resolves.
    pub offset: Offset,
}

/// What `describe_group` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group.
    pub group: String,
    /// Its live members and state, if it has any.
    pub members: Option<GroupMembers>,
    /// Per partition it has committed in or a member owns.
    pub partitions: Vec<GroupLag>,
}

/// The broker's state: every topic, every group, and the ticker doing periodic log work.
pub struct Broker {
    config: BrokerConfig,
    /// Every file operation of the broker's own goes through here (see `BrokerConfig::faults`).
    io: Io,
    topics_dir: PathBuf,
    trash_dir: PathBuf,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Topics whose metadata could not be read, or a partition of which could not be opened, at
    /// start, by name, with why: kept on disk and refused with DATA_LOSS (others are served)
    /// until repaired (and the broker restarted) or deleted.
    damaged: RwLock<BTreeMap<String, String>>,
    /// Serialises create, delete and alter, which touch files and the map together.
    admin: Mutex<()>,
    groups: Arc<groups::GroupStore>,
    /// This broker's replica of the controller group, in a cluster: it coordinates every group
    /// while it leads.
    controller: Option<controller::Controller>,
    producer_ids: producer_ids::ProducerIds,
    /// Live group members and their assignments (in memory; see membership.rs).
    membership: Mutex<membership::Membership>,
    /// In a cluster: the controller term in which this broker last coordinated; the membership
    /// is started afresh when it coordinates in a new one (see [`Broker::members`]).
    membership_term: AtomicU64,
    closed: AtomicBool,
    ticker: Mutex<Option<ticker::Ticker>>,
    /// In a cluster: the task that starts and parks the partition groups' Raft timers
    /// (`replication::quiet`).
    quiet: Option<tokio::task::AbortHandle>,
    /// Holds the data directory's lock for the broker's lifetime.
    _lock: File,
}

pub use crate::record::now_ms;

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Broker {
    /// Opens the broker in `config.data_dir`: recovers every topic and group, empties the trash,
    /// and starts the ticker.
    pub fn open(config: BrokerConfig) -> Result<Arc<Broker>> {
        let data_dir = config.data_dir.clone();
        let io = Io::new(config.faults.clone());
        io.create_dir_durable(&data_dir)
            .map_err(BrokerError::file)?;
        let lock = lock_data_dir(&io, &data_dir)?;
        let topics_dir = data_dir.join("topics");
        let trash_dir = data_dir.join("trash");
        io.create_dir_durable(&topics_dir)
            .map_err(BrokerError::file)?;
        io.remove_dir_all(&trash_dir).map_err(BrokerError::file)?;
        io.create_dir_durable(&trash_dir)
            .map_err(BrokerError::file)?;
        let (topics, damaged) = open_topics(&io, &topics_dir, &config)?;
        let groups =
            groups::GroupStore::open(&io, data_dir.join("groups"), config.group_compact_entries)?;
        // A crash between deleting a topic and forgetting its offsets leaves offsets behind.
        for topic in groups.topics() {
            if !topics.contains_key(&topic) && !damaged.contains_key(&topic) {
                groups.forget_topic(&topic)?;
            }
        }
        let groups = Arc::new(groups);
        let controller = controller::Controller::open(&io, &data_dir, &config, groups.clone())?;
        let producer_ids = producer_ids::ProducerIds::open(&data_dir)?;
        let known_groups = groups.list();
        tracing::info!(
            data_dir = %data_dir.display(),
            topics = topics.len(),
            "broker opened"
        );
        let tick_interval = config.tick_interval;
        let group_timings = config.group_timings;
        let quiet = config.cluster.as_ref().map(|c| {
            crate::replication::quiet::spawn(
                &c.runtime,
                c.groups.clone(),
                c.links.clone(),
                c.peers.clone(),
                c.timings.quiet(),
            )
            .abort_handle()
        });
        let broker = Arc::new(Broker {
            config,
            io,
            topics_dir,
            trash_dir,
            topics: RwLock::new(topics),
            damaged: RwLock::new(damaged),
            admin: Mutex::new(()),
            groups,
            controller,
            producer_ids,
            membership: Mutex::new(membership::Membership::new(
                group_timings,
                now_ms(),
                known_groups,
            )),
            membership_term: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            ticker: Mutex::new(None),
            quiet,
            _lock: lock,
        });
        if let Some(c) = &broker.controller {
            c.start(Arc::downgrade(&broker))?;
        }
        let ticker = ticker::Ticker::start(Arc::downgrade(&broker), tick_interval)?;
        *broker
            .ticker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(ticker);
        Ok(broker)
    }

    /// Runs every partition's periodic work once (interval fsync, checkpoint, roll by age,
    /// retention) as of `now_ms`: what the ticker does every `tick_interval`. A failure is
    /// logged; the partition's next tick tries again.
    pub fn tick(&self, now_ms: i64) {
        self.members().expire(now_ms);
        for topic in self.all_topics() {
            for p in &topic.partitions {
                if let Err(e) = p.log.tick(now_ms) {
                    tracing::warn!(topic = %topic.name, partition = p.id, error = %e, "periodic log work failed");
                }
            }
        }
    }

    /// The broker's settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// Stops the ticker, wakes every waiter, then closes every log (a clean-shutdown marker makes
    /// the next start scan nothing). A log still in use elsewhere is flushed instead. Every later
    /// call fails with [`BrokerError::ShuttingDown`].
    pub fn close(&self) -> Result<()> {
        self.closed.store(true, Ordering::SeqCst);
        let ticker = self
            .ticker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(ticker) = ticker {
            ticker.stop();
        }
        let _admin = self
            .admin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(q) = &self.quiet {
            q.abort();
        }
        if let Some(c) = &self.controller {
            c.stop();
        }
        let topics = std::mem::take(&mut *write_lock(&self.topics));
        let mut first_error = None;
        for (name, topic) in topics {
            for p in &topic.partitions {
                p.wake_all();
                if let Some(replica) = &p.replica {
                    replica.stop();
                }
            }
            let results: Vec<(u32, crate::storage::Result<()>)> = match Arc::try_unwrap(topic) {
                Ok(topic) => topic
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let topic::Partition {
                            id, log, replica, ..
                        } = p;
                        // The replica's Raft storage holds the log too: gone once it stopped.
                        drop(replica);
                        match Arc::try_unwrap(log) {
                            Ok(log) => (id, log.close()),
                            Err(log) => (id, log.flush()),
                        }
                    })
                    .collect(),
                // Still held by a reader that has not finished: make its data durable at least.
                Err(topic) => topic
                    .partitions
                    .iter()
                    .map(|p| (p.id, p.log.flush()))
                    .collect(),
            };
            for (partition, result) in results {
                if let Err(source) = result {
                    let e = BrokerError::Storage {
                        topic: name.clone(),
                        partition,
                        source,
                    };
                    tracing::error!(error = %error_chain(&e), "closing a log failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        tracing::info!("broker closed");
        first_error.map_or(Ok(()), Err)
    }

    /// Stops the Raft groups of every replicated partition (their logs stay open until
    /// [`Broker::close`]). Call it while the runtime in the cluster settings still runs, and
    /// not from it: `strata serve` does once it stops serving.
    pub fn stop_replication(&self) {
        if let Some(q) = &self.quiet {
            q.abort();
        }
        if let Some(c) = &self.controller {
            c.stop();
        }
        for topic in self.all_topics() {
            for p in &topic.partitions {
                if let Some(replica) = &p.replica {
                    replica.stop();
                }
            }
        }
    }

    /// This broker's node id (0 without cluster settings).
    pub fn node_id(&self) -> u64 {
        self.config.cluster.as_ref().map_or(0, |c| c.node_id)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(BrokerError::ShuttingDown);
        }
        Ok(())
    }

    fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        validate_topic_name(name)?;
        self.check_open()?;
        read_lock(&self.topics)
            .get(name)
            .cloned()
            .ok_or_else(|| self.missing(name))
    }

    /// The error for a topic that is not live: damaged, or not there at all.
    fn missing(&self, name: &str) -> BrokerError {
        match read_lock(&self.damaged).get(name) {
            Some(reason) => BrokerError::TopicDamaged {
                topic: name.to_owned(),
                reason: reason.clone(),
            },
            None => BrokerError::TopicNotFound {
                topic: name.to_owned(),
            },
        }
    }

    pub(crate) fn all_topics(&self) -> Vec<Arc<Topic>> {
        read_lock(&self.topics).values().cloned().collect()
    }

    /// Creates a topic with `partitions` partitions; unset config fields take the defaults.
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        update: &TopicConfigUpdate,
    ) -> Result<TopicInfo> {
        self.create_replicated_topic(name, partitions, update, 1)
    }

    /// Creates a topic whose partitions each have `replication_factor` replicas: 1 (or 0), a
    /// topic on this broker only; more, a replicated topic whose partitions are Raft groups
    /// over the cluster's brokers, created through the controller group (on its leader;
    /// [`BrokerError::NotCoordinator`] elsewhere): every broker creates its replicas as it
    /// applies the command, this one before the call returns.
    pub fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        update: &TopicConfigUpdate,
        replication_factor: u32,
    ) -> Result<TopicInfo> {
        validate_topic_name(name)?;
        self.check_partition_count(partitions)?;
        let config = self.config.topic_defaults.updated(update);
        config.validate(&self.config)?;
        let mut file = TopicFile::new(name, partitions, config);
        if replication_factor > 1 {
            let Some(cluster) = &self.config.cluster else {
                return Err(BrokerError::NotInCluster {
                    reason: format!(
                        "replication factor {replication_factor} needs a cluster: this broker was \
                         started without --node-id and --peers"
                    ),
                });
            };
            let nodes: Vec<u64> = cluster.peers.keys().copied().collect();
            if replication_factor as usize != nodes.len() {
                return Err(BrokerError::invalid(
                    "replication_factor",
                    format!(
                        "{replication_factor}: a replicated topic has a replica on every broker \
                         of the cluster ({} brokers) until replicas can be placed on some only",
                        nodes.len()
                    ),
                ));
            }
            file.replicas = cluster::place(&nodes, partitions, nodes.len());
            if let Some(c) = &self.controller {
                // Through the controller group: every broker creates its replicas as it applies
                // the command, a broker that is down when it returns.
                c.read_barrier()?;
                if read_lock(&self.topics).contains_key(name)
                    || read_lock(&self.damaged).contains_key(name)
                {
                    return Err(BrokerError::TopicExists {
                        topic: name.to_owned(),
                    });
                }
                c.propose(&controller::Command::CreateTopic {
                    file: file.to_json()?,
                })?;
                return Ok(self.topic(name)?.info());
            }
        }
        self.create_from_file(&file)
    }

    /// Deletes topic `name` everywhere it is: a replicated topic through the controller group
    /// (on its leader: [`BrokerError::NotCoordinator`] elsewhere), every broker deleting its
    /// replicas as it applies the command; any other as [`Broker::delete_topic`].
    pub fn delete_topic_everywhere(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        let Some(c) = &self.controller else {
            return self.delete_topic(name);
        };
        let here = read_lock(&self.topics).get(name).cloned();
        if let Some(topic) = here
            && topic.replicas().is_empty()
        {
            return self.delete_topic(name);
        }
        c.read_barrier()?;
        self.topic(name)?;
        c.propose(&controller::Command::DeleteTopic {
            topic: name.to_owned(),
        })
    }

    /// Creates this broker's replicas of a replicated topic, from the topic file the controller
    /// group's command holds. Creating one that is already here, the same, is a success (a
    /// command applied again after a restart).
    pub fn create_replicas(&self, topic_file: &[u8]) -> Result<TopicInfo> {
        let file = TopicFile::from_json(topic_file)?;
        validate_topic_name(&file.name)?;
        self.check_partition_count(file.partitions)?;
        file.config.validate(&self.config)?;
        let Some(cluster) = &self.config.cluster else {
            return Err(BrokerError::NotInCluster {
                reason: "asked to hold replicas, but this broker was started without cluster \
                         settings"
                    .into(),
            });
        };
        if !file.replicas.iter().any(|r| r.contains(&cluster.node_id)) {
            return Err(BrokerError::NotInCluster {
                reason: format!(
                    "topic '{}' has no replica on this broker (node {})",
                    file.name, cluster.node_id
                ),
            });
        }
        if let Ok(existing) = self.topic(&file.name) {
            let same = existing.file();
            if same.partitions == file.partitions && same.replicas == file.replicas {
                return Ok(existing.info());
            }
        }
        self.create_from_file(&file)
    }

    /// Node ids of the replicas of each of the topic's partitions (empty: not replicated).
    pub fn topic_replicas(&self, name: &str) -> Result<Vec<Vec<u64>>> {
        Ok(self.topic(name)?.replicas())
    }

    /// Waits, at most `within` in all, until every replicated partition of topic `name` on this
    /// broker has a leader that committed its first entry (so it takes produces, and its
    /// membership is on a majority). Returns how many partitions still had none. Blocks: not
    /// from the runtime's own threads.
    pub fn wait_for_leaders(&self, name: &str, within: Duration) -> Result<usize> {
        let topic = self.topic(name)?;
        let deadline = Instant::now() + within;
        Ok(topic
            .partitions
            .iter()
            .filter_map(|p| p.replica.as_ref())
            .filter(|r| !r.wait_first_leader(deadline.saturating_duration_since(Instant::now())))
            .count())
    }

    fn check_partition_count(&self, partitions: u32) -> Result<()> {
        let max = self.config.max_partitions_per_topic;
        if partitions == 0 || partitions > max {
            return Err(BrokerError::invalid(
                "partitions",
                format!(
                    "{partitions} is outside 1..={max} (the broker's max_partitions_per_topic)"
                ),
            ));
        }
        Ok(())
    }

    fn create_from_file(&self, file: &TopicFile) -> Result<TopicInfo> {
        let name = file.name.clone();
        let name = name.as_str();
        let partitions = file.partitions;
        let _admin = self
            .admin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check_open()?;
        if read_lock(&self.topics).contains_key(name) {
            return Err(BrokerError::TopicExists {
                topic: name.to_owned(),
            });
        }
        if read_lock(&self.damaged).contains_key(name) {
            return Err(self.missing(name));
        }
        let dir = self.topics_dir.join(name);
        let opened = create_topic_files(&self.io, &dir, file, &self.config);
        let topic = match opened {
            Ok(topic) => topic,
            Err(e) => {
                // Nothing was acknowledged: leave no half-created topic behind.
                if let Err(rm) = self.io.remove_dir_all(&dir) {
                    tracing::warn!(dir = %dir.display(), error = %rm, "could not remove a half-created topic");
                }
                return Err(e);
            }
        };
        let info = topic.info();
        write_lock(&self.topics).insert(name.to_owned(), Arc::new(topic));
        tracing::info!(topic = name, partitions, "topic created");
        Ok(info)
    }

    /// Deletes a topic: readers waiting on it are woken with `TopicNotFound`, its files are
    /// removed, and groups forget their offsets in it.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        validate_topic_name(name)?;
        let _admin = self
            .admin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.check_open()?;
        let removed = write_lock(&self.topics).remove(name);
        let Some(topic) = removed else {
            return self.delete_damaged_topic(name);
        };
        topic.mark_deleted();
        for p in &topic.partitions {
            if let Some(replica) = &p.replica {
                replica.stop();
            }
        }
        let trash = self.move_to_trash(name)?;
        drop(topic);
        self.empty_trash(&trash);
        self.groups.forget_topic(name)?;
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Renames a topic's directory into the trash, durably: the commit point of a delete. After
    /// it, a restart no longer sees the topic, even if removing the files is cut short.
    fn move_to_trash(&self, name: &str) -> Result<PathBuf> {
        let dir = self.topics_dir.join(name);
        let trash = self
            .trash_dir
            .join(format!("{name}.{}", now_ms().unsigned_abs()));
        self.io.rename(&dir, &trash).map_err(BrokerError::file)?;
        self.io
            .sync_dir(&self.topics_dir)
            .and_then(|()| self.io.sync_dir(&self.trash_dir))
            .map_err(BrokerError::file)?;
        Ok(trash)
    }

    /// Removes a deleted topic's files; what is left goes at the next start.
    fn empty_trash(&self, trash: &Path) {
        if let Err(e) = self.io.remove_dir_all(trash) {
            tracing::warn!(dir = %trash.display(), error = %e, "could not remove a deleted topic's files; they go at the next start");
        }
    }

    /// Deletes a topic left offline at start (damaged metadata, a partition that could not be
    /// opened): its files go to the trash like a live topic's. The caller holds the admin lock.
    fn delete_damaged_topic(&self, name: &str) -> Result<()> {
        if !read_lock(&self.damaged).contains_key(name) {
            return Err(self.missing(name));
        }
        let trash = self.move_to_trash(name)?;
        write_lock(&self.damaged).remove(name);
        self.empty_trash(&trash);
        self.groups.forget_topic(name)?;
        tracing::info!(topic = name, "damaged topic deleted");
        Ok(())
    }

    /// Every topic, sorted by name.
    pub fn list_topics(&self) -> Result<Vec<TopicInfo>> {
        self.check_open()?;
        Ok(self.all_topics().iter().map(|t| t.info()).collect())
    }

    /// A topic's config and the state of each partition.
    pub fn describe_topic(&self, name: &str) -> Result<(TopicInfo, Vec<PartitionInfo>)> {
        let topic = self.topic(name)?;
        let partitions = topic
            .partitions
            .iter()
            .map(|p| PartitionInfo {
                partition: p.id,
                stats: p.stats(),
                replication: p.replica_info(),
            })
            .collect();
        Ok((topic.info(), partitions))
    }

    /// Changes a topic's config. Retention under the new config is applied at once.
    pub fn alter_topic_config(&self, name: &str, update: &TopicConfigUpdate) -> Result<TopicInfo> {
        let topic = self.topic(name)?;
        let config = topic.config().updated(update);
        config.validate(&self.config)?;
        if let Some(c) = &self.controller
            && !topic.replicas().is_empty()
        {
            // A replicated topic's settings are the cluster's: through the controller group,
            // every broker setting them as it applies the command.
            c.read_barrier()?;
            let config = self.topic(name)?.config().updated(update);
            let json = serde_json::to_vec(&config).map_err(|e| BrokerError::BadStateFile {
                path: topic.dir.join(TOPIC_FILE),
                reason: format!("encoding the topic's config: {e}"),
            })?;
            c.propose(&controller::Command::AlterTopic {
                topic: name.to_owned(),
                config: json,
            })?;
            return Ok(self.topic(name)?.info());
        }
        self.set_topic_config(name, &config)
    }

    /// Sets topic `name`'s settings to `config` (checked), durably, and applies them to its logs.
    pub(crate) fn set_topic_config(&self, name: &str, config: &TopicConfig) -> Result<TopicInfo> {
        let _admin = self
            .admin
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let topic = self.topic(name)?;
        config.validate(&self.config)?;
        TopicFile {
            config: config.clone(),
            ..topic.file()
        }
        .write(&self.io, &topic.dir)?;
        *write_lock(&topic.config) = config.clone();
        let now = now_ms();
        for p in &topic.partitions {
            p.log
                .set_config(self.config.log_config(config, p.replica.is_some()));
            p.log
                .apply_retention(now)
                .map_err(topic.storage_error(p.id))?;
        }
        tracing::info!(topic = name, ?config, "topic config altered");
        Ok(topic.info())
    }

    /// A handle for reading and waiting on one partition.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<PartitionHandle> {
        let topic = self.topic(topic)?;
        topic.partition(partition)?;
        Ok(PartitionHandle { topic, partition })
    }

    /// Every partition number of a topic, checked against `wanted` (empty: all).
    pub fn partitions(&self, topic: &str, wanted: &[u32]) -> Result<Vec<PartitionHandle>> {
        let t = self.topic(topic)?;
        if wanted.is_empty() {
            return Ok((0..t.partitions.len() as u32)
                .map(|partition| PartitionHandle {
                    topic: t.clone(),
                    partition,
                })
                .collect());
        }
        let mut out: Vec<PartitionHandle> = Vec::with_capacity(wanted.len());
        for &partition in wanted {
            t.partition(partition)?;
            if out.iter().all(|h| h.partition != partition) {
                out.push(PartitionHandle {
                    topic: t.clone(),
                    partition,
                });
            }
        }
        Ok(out)
    }

    /// Per partition of `topic` (`wanted`, or all if empty): the earliest offset, the next offset
    /// and where `start` resolves. Reads no record (a timestamp reads the time index and at
    /// most the batches of one index interval).
    pub fn list_offsets(
        &self,
        topic: &str,
        wanted: &[u32],
        start: &StartPosition,
    ) -> Result<Vec<ListedOffsets>> {
        self.check_open()?;
        let mut handles = self.partitions(topic, wanted)?;
        handles.sort_by_key(|h| h.partition);
        handles
            .iter()
            .map(|h| {
                let log = &h.topic.partitions[h.partition as usize].log;
                Ok(ListedOffsets {
                    partition: h.partition,
                    offset: self.resolve_start(h, start)?,
                    earliest_offset: log.earliest_offset(),
                    next_offset: h.next_offset(),
                })
            })
            .collect()
    }

    /// Deletes a group's committed offsets (its file), durably. Refused while the group has live
    /// members; NOT_FOUND if it has nothing to delete.
    pub fn delete_group(&self, group: &str) -> Result<()> {
        validate_group_name(group)?;
        self.check_open()?;
        self.group_read()?;
        let members = self
            .members()
            .describe(group, now_ms())
            .map_or(0, |g| g.members.len());
        if members > 0 {
            return Err(BrokerError::Membership {
                group: group.to_owned(),
                refusal: membership::Refusal::HasMembers { members },
            });
        }
        if let Some(c) = &self.controller {
            self.groups
                .all(group)?
                .ok_or_else(|| BrokerError::GroupNotFound {
                    group: group.to_owned(),
                })?;
            return c.propose(&controller::Command::DeleteGroup {
                group: group.to_owned(),
            });
        }
        if !self.groups.delete(group)? {
            return Err(BrokerError::GroupNotFound {
                group: group.to_owned(),
            });
        }
        Ok(())
    }

    /// Before serving a group request in a cluster: [`BrokerError::NotCoordinator`] unless this
    /// broker coordinates groups, and there a read barrier (every commit acknowledged before is
    /// applied here). Nothing on a single broker.
    fn group_read(&self) -> Result<()> {
        match &self.controller {
            Some(c) => c.read_barrier(),
            None => Ok(()),
        }
    }

    /// The offset after the last controller command this broker applied (`None` without a
    /// cluster): what a broker that forwarded a write to the coordinator waits for, so that its
    /// own answers after it see the write.
    pub fn controller_applied(&self) -> Option<Offset> {
        self.controller
            .as_ref()
            .map(controller::Controller::applied)
    }

    /// Waits until this broker has applied the controller's commands below `offset`.
    pub fn wait_controller_applied(&self, offset: Offset) -> Result<()> {
        match &self.controller {
            Some(c) => c.wait_applied(offset),
            None => Ok(()),
        }
    }

    /// Which broker coordinates consumer groups: this one without a cluster.
    pub fn group_coordinator(&self) -> Coordinator {
        match &self.controller {
            Some(c) => c.coordinator(),
            None => Coordinator::Here,
        }
    }

    /// The offset `start` means in this partition, checked to lie in `[earliest, next]`
    /// ([`BrokerError::OffsetOutOfRange`] naming the range otherwise). May block on I/O.
    pub fn resolve_start(&self, handle: &PartitionHandle, start: &StartPosition) -> Result<Offset> {
        handle.check_live()?;
        let log = &handle.topic.partitions[handle.partition as usize].log;
        let offset = match start {
            StartPosition::Offset(o) => *o,
            StartPosition::Earliest => log.earliest_offset(),
            StartPosition::Latest => handle.next_offset(),
            StartPosition::Timestamp(ts) => match log
                .offset_for_timestamp(*ts)
                .map_err(handle.topic.storage_error(handle.partition))?
            {
                Some(o) => o.min(handle.next_offset()),
                None => handle.next_offset(),
            },
            StartPosition::Group(group) => {
                validate_group_name(group)?;
                match self
                    .groups
                    .committed(group, &handle.topic.name, handle.partition)?
                {
                    Some(o) => o,
                    None => log.earliest_offset(),
                }
            }
        };
        // Up to the log's end, not only the high watermark: a replica's commit position can trail
        // its log (a follower, or one just started whose saved position was behind), and a read
        // between the two waits for the commit to reach it, as Kafka serves consumers.
        let (earliest, next) = (log.earliest_offset(), handle.next_offset());
        let next = next.max(log.next_offset());
        if offset > next
            && let Some(replica) = &handle.topic.partitions[handle.partition as usize].replica
            && replica.leader() != Some(self.node_id())
        {
            return Err(BrokerError::ReplicaBehind {
                topic: handle.topic.name.clone(),
                partition: handle.partition,
                offset,
                next,
            });
        }
        if offset < earliest || offset > next {
            return Err(BrokerError::OffsetOutOfRange {
                topic: handle.topic.name.clone(),
                partition: handle.partition,
                offset,
                earliest,
                next,
            });
        }
        Ok(offset)
    }

    /// Commits a group's offsets durably; each must lie in [earliest, next] of its partition.
    /// `member` (id and epoch) must own every partition committed; without it the group must
    /// have no live members (consumers that pick their partitions themselves).
    pub fn commit_offsets(
        &self,
        group: &str,
        member: Option<(&str, i64)>,
        offsets: Vec<CommittedOffset>,
    ) -> Result<()> {
        validate_group_name(group)?;
        self.check_open()?;
        if offsets.is_empty() {
            return Err(BrokerError::invalid(
                "offsets",
                "there is nothing to commit",
            ));
        }
        if let Some(c) = &self.controller {
            c.check_here()?;
        }
        let now = now_ms();
        for c in &offsets {
            let topic = self.topic(&c.topic)?;
            let p = topic.partition(c.partition)?;
            self.members()
                .check_commit(group, member, &c.topic, c.partition, now)
                .map_err(|refusal| BrokerError::Membership {
                    group: group.to_owned(),
                    refusal,
                })?;
            let (earliest, next) = (p.log.earliest_offset(), p.high_watermark());
            // A replicated partition's high watermark on the coordinator (a follower of it, as
            // like as not) can trail its leader's, which the consumer read up to: only the
            // lower bound is checked there, as Kafka checks neither.
            let beyond = c.offset > next && p.replica.is_none();
            if c.offset < earliest || beyond {
                return Err(BrokerError::CommitOutOfRange {
                    topic: c.topic.clone(),
                    partition: c.partition,
                    offset: c.offset,
                    earliest,
                    next,
                });
            }
        }
        match &self.controller {
            Some(c) => c.propose(&controller::Command::Commit {
                group: group.to_owned(),
                offsets,
            }),
            None => self.groups.commit(group, offsets),
        }
    }

    /// One heartbeat of a group member (see `membership.rs`): joins, leaves, or reports what the
    /// member holds, and answers with what it may own now. Every topic it follows must exist.
    pub fn heartbeat(&self, group: &str, heartbeat: Heartbeat) -> Result<HeartbeatAnswer> {
        validate_group_name(group)?;
        self.check_open()?;
        if heartbeat.member_epoch >= 0 && heartbeat.topics.is_empty() {
            return Err(BrokerError::invalid(
                "topics",
                "a member follows at least one topic",
            ));
        }
        if let Some(c) = &self.controller {
            c.check_here()?;
        }
        for t in &heartbeat.topics {
            self.topic(t)?;
        }
        let partitions = |t: &str| self.topic(t).ok().map(|t| t.partitions.len() as u32);
        self.members()
            .heartbeat(group, heartbeat, now_ms(), &partitions)
            .map_err(|refusal| BrokerError::Membership {
                group: group.to_owned(),
                refusal,
            })
    }

    /// The group membership. In a cluster, a broker that coordinates in a controller term it did
    /// not coordinate in before starts it afresh, as a restarted broker does: what it knew from
    /// an earlier term is stale (members may have moved on under another coordinator), and every
    /// group with commits gets the restart grace, in which members join again claiming what
    /// they hold before anything is handed to others.
    fn members(&self) -> std::sync::MutexGuard<'_, membership::Membership> {
        // Every change to the membership is one assignment of plain data: a panic cannot leave
        // it half-made.
        let mut members = self
            .membership
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = &self.controller
            && c.coordinator() == Coordinator::Here
        {
            let term = c.term();
            if self.membership_term.swap(term, Ordering::SeqCst) != term {
                *members = membership::Membership::new(
                    self.config.group_timings,
                    now_ms(),
                    self.groups.list(),
                );
                tracing::info!(term, "coordinating the consumer groups from now on");
            }
        }
        members
    }

    /// A group's committed offsets in a topic (partitions without a commit are left out).
    pub fn committed_offsets(&self, group: &str, topic: &str) -> Result<Vec<CommittedOffset>> {
        validate_group_name(group)?;
        self.topic(topic)?;
        self.group_read()?;
        Ok(self
            .groups
            .all(group)?
            .unwrap_or_default()
            .into_iter()
            .filter(|c| c.topic == topic)
            .collect())
    }

    /// Groups with at least one committed offset, groups with live members, and groups whose
    /// offsets file is damaged, sorted.
    pub fn list_groups(&self) -> Result<Vec<String>> {
        self.check_open()?;
        self.group_read()?;
        let mut groups = self.groups.list();
        groups.extend(self.members().groups());
        groups.sort();
        groups.dedup();
        Ok(groups)
    }

    /// A group's members (if it has live ones) and, per partition it has committed in or a
    /// member owns, the committed offset, the partition's next offset and the lag. Lag counts
    /// from the later of the committed offset and the earliest stored offset: records that
    /// retention removed are not waiting for anyone.
    pub fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        validate_group_name(group)?;
        self.check_open()?;
        self.group_read()?;
        let offsets = self.groups.all(group)?.unwrap_or_default();
        let members = self.members().describe(group, now_ms());
        if offsets.is_empty() && members.is_none() {
            return Err(BrokerError::GroupNotFound {
                group: group.to_owned(),
            });
        }
        let mut committed: BTreeMap<(String, u32), Option<Offset>> = offsets
            .into_iter()
            .map(|c| ((c.topic, c.partition), Some(c.offset)))
            .collect();
        for m in members.iter().flat_map(|g| &g.members) {
            for (t, ps) in &m.assignment {
                for p in ps {
                    committed.entry((t.clone(), *p)).or_insert(None);
                }
            }
        }
        let mut partitions = Vec::with_capacity(committed.len());
        for ((topic_name, partition), committed_offset) in committed {
            let Ok(topic) = self.topic(&topic_name) else {
                continue;
            };
            let Ok(p) = topic.partition(partition) else {
                continue;
            };
            let next_offset = p.high_watermark();
            let earliest = p.log.earliest_offset();
            let from = committed_offset.unwrap_or(earliest).max(earliest);
            let owner = members.iter().flat_map(|g| &g.members).find(|m| {
                m.assignment
                    .get(&topic_name)
                    .is_some_and(|ps| ps.contains(&partition))
            });
            partitions.push(GroupLag {
                lag: next_offset.saturating_sub(from),
                owner: owner.map(|m| m.member_id.clone()),
                topic: topic_name,
                partition,
                committed_offset,
                next_offset,
            });
        }
        Ok(GroupDescription {
            group: group.to_owned(),
            members,
            partitions,
        })
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // The ticker holds only a weak reference; tell it to stop (it may be the one dropping us,
        // so do not join it here).
        let ticker = self
            .ticker
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(t) = ticker {
            t.signal_stop();
        }
    }
}

fn lock_data_dir(io: &Io, data_dir: &Path) -> Result<File> {
    let path = data_dir.join(".lock");
    let file = io.open_rw(&path, true).map_err(BrokerError::file)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(BrokerError::DataDirLocked {
            path: data_dir.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(BrokerError::io("lock", &path, e)),
    }
}

fn create_topic_files(
    io: &Io,
    dir: &Path,
    file: &TopicFile,
    broker: &BrokerConfig,
) -> Result<Topic> {
    io.create_dir_durable(dir).map_err(BrokerError::file)?;
    // The metadata file is the commit point: once it is there, a restart opens (and so creates)
    // every partition's log.
    file.write(io, dir)?;
    let replicated = !file.replicas.is_empty();
    let mut parts = Vec::with_capacity(file.partitions as usize);
    for id in 0..file.partitions {
        let log = open_log(
            dir,
            &file.name,
            id,
            broker.log_config(&file.config, replicated),
        )?;
        parts.push(partition(broker, file, id, log)?);
    }
    Ok(Topic {
        name: file.name.clone(),
        dir: dir.to_path_buf(),
        config: RwLock::new(file.config.clone()),
        partitions: parts,
        round_robin: AtomicU64::new(0),
        deleted: AtomicBool::new(false),
    })
}

/// Partition `id` of the topic `file` describes over its opened `log`: with its replica if the
/// topic is replicated.
fn partition(
    broker: &BrokerConfig,
    file: &TopicFile,
    id: u32,
    log: Log,
) -> Result<topic::Partition> {
    let Some(nodes) = file.replicas.get(id as usize) else {
        return Ok(topic::Partition::new(id, log));
    };
    let Some(cluster) = &broker.cluster else {
        return Err(BrokerError::NotInCluster {
            reason: format!(
                "topic '{}' is replicated over nodes {nodes:?}; start the broker with its \
                 --node-id and --peers",
                file.name
            ),
        });
    };
    topic::Partition::replicated(id, log, |log, high_watermark| {
        cluster::Replica::open(cluster, &file.name, id, log, nodes, high_watermark, true)
    })
}

fn open_log(topic_dir: &Path, topic: &str, partition: u32, config: LogConfig) -> Result<Log> {
    let dir = topic_dir.join(partition.to_string());
    Log::open(&dir, config).map_err(|source| BrokerError::Storage {
        topic: topic.to_owned(),
        partition,
        source,
    })
}

/// An error opening a partition that comes from the process or the system rather than from the
/// partition's files: out of descriptors (process or system) or memory, or no permission.
pub(crate) fn is_environmental(e: &BrokerError) -> bool {
    use rustix::io::Errno;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::OutOfMemory | std::io::ErrorKind::PermissionDenied
            ) || io.raw_os_error().is_some_and(|code| {
                [Errno::MFILE, Errno::NFILE, Errno::NOMEM]
                    .iter()
                    .any(|e| e.raw_os_error() == code)
            });
        }
        source = err.source();
    }
    false
}

/// Why a topic whose metadata cannot be read is not served.
fn metadata_damage(e: &BrokerError) -> String {
    format!("its topic.json is damaged ({})", error_chain(e))
}

/// A create writes `topic.json` (through `topic.json.tmp`) before any partition directory, so a
/// topic directory without `topic.json` holding nothing else is a create that crashed before its
/// commit point: it was never acknowledged and is removed. Anything more is not ours to delete.
fn remove_interrupted_create(io: &Io, dir: &Path) -> Result<()> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| BrokerError::io("list", dir, e))?
        .filter_map(std::result::Result::ok)
        .map(|e| e.file_name())
        .collect();
    let tmp = format!("{TOPIC_FILE}.tmp");
    if entries
        .iter()
        .any(|name| name.to_str() != Some(tmp.as_str()))
    {
        return Err(BrokerError::BadStateFile {
            path: dir.join(TOPIC_FILE),
            reason: "missing, but the directory holds other files; restore topic.json or move \
                     the directory out of the data directory"
                .into(),
        });
    }
    tracing::warn!(dir = %dir.display(), "removing an interrupted topic create (no topic.json)");
    io.remove_dir_all(dir).map_err(BrokerError::file)
}

/// Opens every topic under `topics_dir`, the partitions of all topics in parallel. A topic whose
/// `topic.json` cannot be read, or a partition of which cannot be opened because of what is on
/// disk, is left out (and on disk) and returned with why, by name. An error that says nothing
/// about the topic's files (out of descriptors or memory, no permission) fails the whole start,
/// as a restart may not fix it and serving DATA_LOSS would blame the data.
#[allow(clippy::type_complexity)]
fn open_topics(
    io: &Io,
    topics_dir: &Path,
    broker: &BrokerConfig,
) -> Result<(BTreeMap<String, Arc<Topic>>, BTreeMap<String, String>)> {
    let mut files = Vec::new();
    let mut damaged = BTreeMap::new();
    let entries =
        std::fs::read_dir(topics_dir).map_err(|e| BrokerError::io("list", topics_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BrokerError::io("list", topics_dir, e))?;
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        if !dir.join(TOPIC_FILE).exists() {
            if let Err(e) = remove_interrupted_create(io, &dir) {
                damaged.insert(name, metadata_damage(&e));
            }
            continue;
        }
        let file = TopicFile::read(&dir).and_then(|file| {
            if file.name == name {
                Ok(file)
            } else {
                Err(BrokerError::BadStateFile {
                    path: dir.join(TOPIC_FILE),
                    reason: format!("names topic '{}', not its directory", file.name),
                })
            }
        });
        match file {
            Ok(file) => files.push((dir, file)),
            Err(e) => {
                let reason = metadata_damage(&e);
                tracing::error!(topic = %name, error = %reason, "topic metadata damaged; serving the other topics without it");
                damaged.insert(name, reason);
            }
        }
    }

    let jobs: Vec<(usize, u32)> = files
        .iter()
        .enumerate()
        .flat_map(|(t, (_, f))| (0..f.partitions).map(move |p| (t, p)))
        .collect();
    let next_job = std::sync::atomic::AtomicUsize::new(0);
    let opened: Mutex<Vec<Option<Result<Log>>>> =
        Mutex::new((0..jobs.len()).map(|_| None).collect());
    let workers = std::thread::available_parallelism()
        .map_or(2, std::num::NonZero::get)
        .clamp(1, 8)
        .min(jobs.len().max(1));
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next_job.fetch_add(1, Ordering::Relaxed);
                    let Some(&(t, p)) = jobs.get(i) else { break };
                    let (dir, file) = &files[t];
                    let log = open_log(
                        dir,
                        &file.name,
                        p,
                        broker.log_config(&file.config, !file.replicas.is_empty()),
                    );
                    opened
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)[i] = Some(log);
                }
            });
        }
    });
    let mut logs = opened
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .into_iter();
    let mut topics = BTreeMap::new();
    for (dir, file) in files {
        let mut parts = Vec::with_capacity(file.partitions as usize);
        let mut failed = None;
        for id in 0..file.partitions {
            match logs.next() {
                Some(Some(Ok(log))) => match partition(broker, &file, id, log) {
                    Ok(p) => parts.push(p),
                    Err(e) => {
                        failed.get_or_insert_with(|| {
                            format!("partition {id} cannot be opened ({})", error_chain(&e))
                        });
                    }
                },
                Some(Some(Err(e))) if is_environmental(&e) => return Err(e),
                Some(Some(Err(e))) => {
                    failed.get_or_insert_with(|| {
                        format!("partition {id} cannot be opened ({})", error_chain(&e))
                    });
                }
                _ => {
                    failed.get_or_insert_with(|| format!("partition {id} was not opened"));
                }
            }
        }
        // A partition that cannot be opened takes its topic offline, not the broker: the other
        // topics are served, this one answers DATA_LOSS naming why until it is repaired (and
        // the broker restarted) or deleted. Its other partitions were opened, so recovered as
        // at any start (tails checked, checkpoints written), and are dropped without changes.
        if let Some(reason) = failed {
            tracing::error!(topic = %file.name, error = %reason, "a partition of the topic cannot be opened; serving the other topics without it");
            damaged.insert(file.name, reason);
            continue;
        }
        let topic = Topic {
            name: file.name.clone(),
            dir,
            config: RwLock::new(file.config),
            partitions: parts,
            round_robin: AtomicU64::new(0),
            deleted: AtomicBool::new(false),
        };
        topics.insert(file.name, Arc::new(topic));
    }
    Ok((topics, damaged))
}
