//! A topic: its metadata file, its partitions (one [`Log`] each) and the signal that wakes readers
//! waiting for new data in a partition.

use super::{BrokerError, TopicConfig, cluster::Replica};
use crate::storage::{Io, Log, LogEndListener, LogStats, Offset, ReadChunk};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};
use tokio::sync::watch;

/// The name of a topic's metadata file, inside the topic's directory.
pub(crate) const TOPIC_FILE: &str = "topic.json";
const TOPIC_FILE_VERSION: u32 = 1;

/// What `topic.json` holds. Its presence is what makes a directory a topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TopicFile {
    pub version: u32,
    pub name: String,
    pub partitions: u32,
    pub config: TopicConfig,
    /// Per partition, the node ids of the brokers holding its replicas; empty for a topic that
    /// is not replicated (absent in files written before replication).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<Vec<u64>>,
}

impl TopicFile {
    pub(crate) fn new(name: &str, partitions: u32, config: TopicConfig) -> Self {
        TopicFile {
            version: TOPIC_FILE_VERSION,
            name: name.to_owned(),
            partitions,
            config,
            replicas: Vec::new(),
        }
    }

    pub(crate) fn to_json(&self) -> Result<Vec<u8>, BrokerError> {
        serde_json::to_vec_pretty(self).map_err(|e| BrokerError::BadStateFile {
            path: PathBuf::from(TOPIC_FILE),
            reason: e.to_string(),
        })
    }

    /// A topic file as the controller group's command holds it, checked as one read from disk.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<TopicFile, BrokerError> {
        let file: TopicFile =
            serde_json::from_slice(bytes).map_err(|e| BrokerError::BadStateFile {
                path: PathBuf::from(TOPIC_FILE),
                reason: e.to_string(),
            })?;
        file.check(Path::new(TOPIC_FILE))?;
        Ok(file)
    }

    fn check(&self, path: &Path) -> Result<(), BrokerError> {
        let bad = |reason: String| BrokerError::BadStateFile {
            path: path.to_path_buf(),
            reason,
        };
        if self.version != TOPIC_FILE_VERSION {
            return Err(bad(format!("unknown version {}", self.version)));
        }
        if !self.replicas.is_empty() && self.replicas.len() != self.partitions as usize {
            return Err(bad(format!(
                "lists replicas of {} partitions, not of its {}",
                self.replicas.len(),
                self.partitions
            )));
        }
        Ok(())
    }

    pub(crate) fn write(&self, io: &Io, topic_dir: &Path) -> Result<(), BrokerError> {
        let path = topic_dir.join(TOPIC_FILE);
        let json = self.to_json()?;
        io.write_atomic(&path, &json).map_err(BrokerError::file)
    }

    pub(crate) fn read(topic_dir: &Path) -> Result<TopicFile, BrokerError> {
        let path = topic_dir.join(TOPIC_FILE);
        let bytes = std::fs::read(&path).map_err(|e| BrokerError::io("read", &path, e))?;
        let file: TopicFile =
            serde_json::from_slice(&bytes).map_err(|e| BrokerError::BadStateFile {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        file.check(&path)?;
        Ok(file)
    }
}

/// A topic's name, partition count and effective config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// The name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// Effective config.
    pub config: TopicConfig,
    /// Copies of each partition (1: not replicated).
    pub replication_factor: u32,
}

/// The state of one partition's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// Offsets, bytes, segments.
    pub stats: LogStats,
    /// Its replication, if it is replicated.
    pub replication: Option<ReplicaInfo>,
}

/// A replicated partition as this broker's replica sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaInfo {
    /// Node ids of the brokers holding its replicas.
    pub replicas: Vec<u64>,
    /// The leader this replica knows of.
    pub leader: Option<u64>,
    /// The highest Raft term it has seen.
    pub term: u64,
    /// The end of its log (the high watermark is in the stats).
    pub log_end_offset: Offset,
}

/// A partition's high watermark: readers see only offsets below it, and wait on it for more.
/// Its one writer is the partition's log, through [`LogEndListener`]: every path that makes
/// records readable (an append, a group-commit fsync, a roll, a checkpoint, a tick) moves it,
/// and waiters wake here and nowhere else. Today it is the log's end (the locally durable
/// offset under `fsync always`); replicated, it becomes the offset a quorum holds.
pub(crate) struct HighWatermark(watch::Sender<Offset>);

impl LogEndListener for HighWatermark {
    fn log_end_moved(&self, end: Offset) {
        self.0.send_if_modified(|hw| {
            let moved = *hw != end;
            *hw = end;
            moved
        });
    }
}

/// One partition: its log and its high watermark, which it owns, and, if the partition is
/// replicated, its replica in the partition's Raft group.
pub struct Partition {
    pub(crate) id: u32,
    pub(crate) log: Arc<Log>,
    /// Waiters hold receivers; a move (or a `send_modify` on delete) wakes them all.
    high_watermark: Arc<HighWatermark>,
    /// Set for a replicated partition: appends go through its Raft group, and the high
    /// watermark follows the group's commit position rather than the log's end.
    pub(crate) replica: Option<Replica>,
}

impl Partition {
    pub(crate) fn new(id: u32, log: Log) -> Self {
        let high_watermark = Arc::new(HighWatermark(watch::Sender::new(log.next_offset())));
        log.set_listener(high_watermark.clone());
        // An append between the first read of the log end and the listener's registration
        // would be missed: catch up once the listener is in place.
        high_watermark.log_end_moved(log.next_offset());
        Partition {
            id,
            log: Arc::new(log),
            high_watermark,
            replica: None,
        }
    }

    /// A replicated partition: `open` opens its replica given the log and the high watermark
    /// to feed (which starts at 0, until the replica applies up to its saved commit position).
    pub(crate) fn replicated(
        id: u32,
        log: Log,
        open: impl FnOnce(Arc<Log>, Arc<HighWatermark>) -> Result<Replica, BrokerError>,
    ) -> Result<Self, BrokerError> {
        let log = Arc::new(log);
        let high_watermark = Arc::new(HighWatermark(watch::Sender::new(0)));
        let replica = open(log.clone(), high_watermark.clone())?;
        Ok(Partition {
            id,
            log,
            high_watermark,
            replica: Some(replica),
        })
    }

    /// Its replication, if it is replicated.
    pub(crate) fn replica_info(&self) -> Option<ReplicaInfo> {
        self.replica.as_ref().map(|r| ReplicaInfo {
            replicas: r.nodes.clone(),
            leader: r.leader(),
            term: r.term(),
            log_end_offset: self.log.next_offset(),
        })
    }

    /// Every offset below this is readable.
    pub(crate) fn high_watermark(&self) -> Offset {
        *self.high_watermark.0.borrow()
    }

    /// The log's state, with the partition's high watermark as its next offset.
    pub(crate) fn stats(&self) -> LogStats {
        LogStats {
            next_offset: self.high_watermark(),
            ..self.log.stats()
        }
    }

    /// Reads whole batches below the high watermark; see [`Log::read`].
    pub(crate) fn read(
        &self,
        offset: Offset,
        max_bytes: usize,
    ) -> crate::storage::Result<ReadChunk> {
        self.log
            .read_below(offset, max_bytes, self.high_watermark())
    }

    /// A receiver notified whenever the high watermark moves (or [`Partition::wake_all`]).
    pub(crate) fn watch(&self) -> watch::Receiver<Offset> {
        self.high_watermark.0.subscribe()
    }

    /// Wakes every waiter without changing the high watermark (used on delete and shutdown).
    pub(crate) fn wake_all(&self) {
        self.high_watermark.0.send_modify(|_| {});
    }
}

/// A live topic.
pub struct Topic {
    pub(crate) name: String,
    pub(crate) dir: PathBuf,
    pub(crate) config: RwLock<TopicConfig>,
    pub(crate) partitions: Vec<Partition>,
    /// Where the next keyless record goes (modulo the partition count).
    pub(crate) round_robin: AtomicU64,
    /// Set once the topic is deleted; waiters see it after their wake-up.
    pub(crate) deleted: AtomicBool,
}

impl Topic {
    pub(crate) fn info(&self) -> TopicInfo {
        TopicInfo {
            name: self.name.clone(),
            partitions: self.partitions.len() as u32,
            config: self.config(),
            replication_factor: self.replicas().first().map_or(1, |r| r.len() as u32),
        }
    }

    /// Per partition, the node ids of its replicas; empty if the topic is not replicated.
    pub(crate) fn replicas(&self) -> Vec<Vec<u64>> {
        self.partitions
            .iter()
            .filter_map(|p| p.replica.as_ref().map(|r| r.nodes.clone()))
            .collect()
    }

    /// The topic's metadata file as it stands.
    pub(crate) fn file(&self) -> TopicFile {
        TopicFile {
            replicas: self.replicas(),
            ..TopicFile::new(&self.name, self.partitions.len() as u32, self.config())
        }
    }

    pub(crate) fn config(&self) -> TopicConfig {
        match self.config.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub(crate) fn partition(&self, partition: u32) -> Result<&Partition, BrokerError> {
        self.partitions
            .get(partition as usize)
            .ok_or_else(|| BrokerError::PartitionNotFound {
                topic: self.name.clone(),
                partition,
                partitions: self.partitions.len() as u32,
            })
    }

    pub(crate) fn storage_error(
        &self,
        partition: u32,
    ) -> impl FnOnce(crate::storage::StorageError) -> BrokerError {
        let topic = self.name.clone();
        move |source| BrokerError::Storage {
            topic,
            partition,
            source,
        }
    }

    /// Marks the topic deleted and wakes every reader waiting on it.
    pub(crate) fn mark_deleted(&self) {
        self.deleted.store(true, Ordering::SeqCst);
        for p in &self.partitions {
            p.wake_all();
        }
    }
}

/// A handle on one partition of a live topic, for reading and waiting. Holding it keeps the topic's
/// logs open even if the topic is deleted meanwhile; [`PartitionHandle::check_live`] says so.
#[derive(Clone)]
pub struct PartitionHandle {
    pub(crate) topic: Arc<Topic>,
    pub(crate) partition: u32,
}

impl PartitionHandle {
    fn part(&self) -> &Partition {
        &self.topic.partitions[self.partition as usize]
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic.name
    }

    /// The partition number.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Reads whole batches from the one holding `offset`, up to `max_bytes` (at least one batch).
    /// May block on I/O: call it off the async runtime.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<ReadChunk, BrokerError> {
        self.check_live()?;
        self.part()
            .read(offset, max_bytes)
            .map_err(self.topic.storage_error(self.partition))
    }

    /// The earliest stored offset. May block briefly: call it off the async runtime.
    pub fn earliest_offset(&self) -> Offset {
        self.part().log.earliest_offset()
    }

    /// The high watermark: one past the last readable record.
    pub fn next_offset(&self) -> Offset {
        self.part().high_watermark()
    }

    /// A receiver that is notified whenever the partition's high watermark moves, or the topic is
    /// deleted. Take it *before* reading so that no append can slip between the read and the wait.
    pub fn watch(&self) -> watch::Receiver<Offset> {
        self.part().watch()
    }

    /// `TopicNotFound` once the topic has been deleted.
    pub fn check_live(&self) -> Result<(), BrokerError> {
        if self.topic.deleted.load(Ordering::SeqCst) {
            return Err(BrokerError::TopicNotFound {
                topic: self.topic.name.clone(),
            });
        }
        Ok(())
    }
}
