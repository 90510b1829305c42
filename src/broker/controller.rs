//! The controller group (issue 16, phase 3, first part): a Raft group with a replica on every
//! broker of the cluster whose log holds the cluster's shared state as commands: replicated
//! topics (every broker creates and deletes its replicas as it applies them) and the consumer
//! groups' committed offsets. Its leader is the coordinator: it takes replicated topic creates
//! and deletes, and coordinates every group (members' heartbeats, commits, offset reads), as
//! Kafka's group coordinator is the leader of a `__consumer_offsets` partition.
//!
//! The log lives in `DATA/cluster/` (a topic directory of its own, outside `DATA/topics/`, so no
//! client sees it as a topic; its Raft group is `@controller/0`, a name no topic can take). Its
//! fsync policy is `always`: a command is acknowledged once a majority has it on disk. Every
//! broker applies the committed commands, in order, to its own [`GroupStore`] (the same
//! journals a single broker keeps), so whichever broker leads next already holds every group's
//! offsets. `DATA/cluster/applied` keeps how far this broker has applied (written at most once a
//! second and when it stops, after the journals it covers are synced, and right after every
//! topic command); at start the applier goes on from there. Applying a group command again is
//! harmless, since they set values in log order; a topic command is never applied twice (a
//! create applied again after a later delete would bring the topic back).

use super::{
    Broker, BrokerConfig, BrokerError, Result, groups::CommittedOffset, groups::GroupStore,
};
use super::{TopicConfig, cluster::Replica, topic::Partition, topic::TOPIC_FILE, topic::TopicFile};
use crate::record::{BatchBuilder, Frame, Record, decode_frame};
use crate::storage::{Io, Offset};
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Condvar, Mutex, PoisonError, Weak,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// The name the controller log goes by in its topic file, errors and its Raft group.
pub(crate) const CONTROLLER: &str = "@controller";
/// How long a group request waits for the controller's commands to be applied here, and for a
/// read barrier.
const APPLY_WAIT: Duration = Duration::from_secs(10);
/// How often at most `applied` is written.
const SAVE_INTERVAL: Duration = Duration::from_secs(1);
/// The most bytes the applier reads at once.
const READ_BYTES: usize = 1 << 20;

/// One command in the controller's log (bincode 2, standard config, the value of a record).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Command {
    /// A group committed these offsets (all or nothing).
    Commit {
        /// The group.
        group: String,
        /// The offsets.
        offsets: Vec<CommittedOffset>,
    },
    /// A group's offsets were deleted.
    DeleteGroup {
        /// The group.
        group: String,
    },
    /// A replicated topic was created: every broker in its replica lists creates its replicas.
    CreateTopic {
        /// Its `topic.json`.
        file: Vec<u8>,
    },
    /// A replicated topic was deleted: every broker deletes its replicas.
    DeleteTopic {
        /// The topic.
        topic: String,
    },
    /// A replicated topic's settings changed: every broker sets them.
    AlterTopic {
        /// The topic.
        topic: String,
        /// Its whole new `TopicConfig`, as JSON (as in `topic.json`).
        config: Vec<u8>,
    },
}

impl Command {
    fn encode(&self) -> Result<Vec<u8>> {
        bincode::serde::encode_to_vec(self, bincode::config::standard())
            .map_err(|e| controller_error(format!("encoding a command: {e}")))
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Command, String> {
        bincode::serde::decode_from_slice::<Command, _>(bytes, bincode::config::standard())
            .map(|(c, _)| c)
            .map_err(|e| e.to_string())
    }
}

fn controller_error(reason: String) -> BrokerError {
    BrokerError::Replication {
        topic: CONTROLLER.to_owned(),
        partition: 0,
        reason,
    }
}

/// This broker's replica of the controller group and the thread applying its commands.
pub(crate) struct Controller {
    partition: Arc<Partition>,
    node_id: u64,
    groups: Arc<GroupStore>,
    io: Io,
    applied_path: PathBuf,
    runtime: tokio::runtime::Handle,
    /// The offset after the last command applied here, and its waiters.
    applied: Arc<(Mutex<Offset>, Condvar)>,
    stop: Arc<AtomicBool>,
    applier: Mutex<Option<JoinHandle<()>>>,
}

/// Where a group's requests go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Coordinator {
    /// This broker leads the controller group.
    Here,
    /// Another broker does, as far as this one knows.
    At(u64),
    /// No leader is known (an election is under way).
    Unknown,
}

impl Controller {
    /// Opens (making it the first time) this broker's controller replica under `data_dir`,
    /// with a replica on every broker of the cluster; [`Controller::start`] then applies its
    /// commands. `None` on a broker without cluster settings.
    pub(crate) fn open(
        io: &Io,
        data_dir: &Path,
        config: &BrokerConfig,
        groups: Arc<GroupStore>,
    ) -> Result<Option<Controller>> {
        let Some(cluster) = &config.cluster else {
            return Ok(None);
        };
        let dir = data_dir.join("cluster");
        let nodes: Vec<u64> = cluster.peers.keys().copied().collect();
        let topic_config = TopicConfig {
            fsync: super::config::FsyncMode::Always,
            ..config.topic_defaults.clone()
        };
        let mut file = TopicFile::new(CONTROLLER, 1, topic_config);
        file.replicas = vec![nodes.clone()];
        if dir.join(TOPIC_FILE).exists() {
            let existing = TopicFile::read(&dir)?;
            if existing.replicas != file.replicas {
                tracing::warn!(
                    was = ?existing.replicas,
                    now = ?file.replicas,
                    "the controller group's replicas differ from --peers; its Raft membership \
                     (in its log) decides"
                );
            }
            file = existing;
        } else {
            io.create_dir_durable(&dir).map_err(BrokerError::file)?;
            file.write(io, &dir)?;
        }
        let log = super::open_log(&dir, CONTROLLER, 0, config.log_config(&file.config, true))?;
        let members = file.replicas.first().cloned().unwrap_or(nodes);
        let partition = Partition::replicated(0, log, |log, high_watermark| {
            Replica::open(cluster, CONTROLLER, 0, log, &members, high_watermark, false)
        })?;
        let partition = Arc::new(partition);
        let applied_path = dir.join("applied");
        let start = read_applied(&applied_path)?;
        Ok(Some(Controller {
            partition,
            node_id: cluster.node_id,
            groups,
            io: io.clone(),
            applied_path,
            runtime: cluster.runtime.clone(),
            applied: Arc::new((Mutex::new(start), Condvar::new())),
            stop: Arc::new(AtomicBool::new(false)),
            applier: Mutex::new(None),
        }))
    }

    /// Starts applying the committed commands to `broker` (its groups and topics).
    pub(crate) fn start(&self, broker: Weak<Broker>) -> Result<()> {
        let applier = Applier {
            partition: self.partition.clone(),
            broker,
            groups: self.groups.clone(),
            io: self.io.clone(),
            path: self.applied_path.clone(),
            applied: self.applied.clone(),
            stop: self.stop.clone(),
            runtime: self.runtime.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("strata-controller".into())
            .spawn(move || applier.run())
            .map_err(|e| {
                BrokerError::io("start the controller's applier", &self.applied_path, e)
            })?;
        *self.applier.lock().unwrap_or_else(PoisonError::into_inner) = Some(thread);
        Ok(())
    }

    fn replica(&self) -> Result<&Replica> {
        self.partition
            .replica
            .as_ref()
            .ok_or_else(|| controller_error("the controller log has no replica".into()))
    }

    /// Who coordinates groups now, as far as this broker knows.
    pub(crate) fn coordinator(&self) -> Coordinator {
        match self.replica().ok().and_then(Replica::leader) {
            Some(n) if n == self.node_id => Coordinator::Here,
            Some(n) => Coordinator::At(n),
            None => Coordinator::Unknown,
        }
    }

    /// The highest term of the controller group this broker has seen: while it coordinates, the
    /// term of its leadership.
    pub(crate) fn term(&self) -> u64 {
        self.replica().map_or(0, Replica::term)
    }

    /// Fails with [`BrokerError::NotCoordinator`] unless this broker leads the controller group.
    pub(crate) fn check_here(&self) -> Result<()> {
        match self.coordinator() {
            Coordinator::Here => Ok(()),
            Coordinator::At(n) => Err(BrokerError::NotCoordinator {
                node_id: self.node_id,
                coordinator: Some(n),
            }),
            Coordinator::Unknown => Err(BrokerError::NotCoordinator {
                node_id: self.node_id,
                coordinator: None,
            }),
        }
    }

    /// Before a group read on the coordinator: confirms with a majority that this broker still
    /// leads and waits until every command committed before the call is applied here, so the
    /// read sees every acknowledged commit. Blocks.
    pub(crate) fn read_barrier(&self) -> Result<()> {
        self.check_here()?;
        let committed = self
            .replica()?
            .read_barrier(CONTROLLER, 0, APPLY_WAIT)
            .map_err(|e| self.not_coordinator(e))?;
        self.wait_applied(committed)
    }

    /// Writes `command` through the controller group (this broker must lead it) and waits until
    /// a majority has it on disk and it is applied here. Blocks.
    pub(crate) fn propose(&self, command: &Command) -> Result<()> {
        self.check_here()?;
        let value = command.encode()?;
        let mut batch = BatchBuilder::with_capacity(value.len() + 128);
        batch.push(&Record {
            value: value.into(),
            timestamp_ms: super::now_ms(),
            ..Record::default()
        });
        let bases = self
            .replica()?
            .append(CONTROLLER, 0, vec![batch.finish(0).into()])
            .map_err(|e| self.not_coordinator(e))?;
        let base = bases
            .first()
            .copied()
            .ok_or_else(|| controller_error("a command went unanswered".into()))?;
        self.wait_applied(base + 1)
    }

    /// A refusal of the controller's Raft group because another broker leads it, as the
    /// group's error.
    fn not_coordinator(&self, e: BrokerError) -> BrokerError {
        match e {
            BrokerError::NotLeader { leader, .. } => BrokerError::NotCoordinator {
                node_id: self.node_id,
                coordinator: leader.map(|l| l.node_id),
            },
            other => other,
        }
    }

    /// The offset after the last command applied here.
    pub(crate) fn applied(&self) -> Offset {
        *self
            .applied
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the commands below `offset` are applied here.
    pub(crate) fn wait_applied(&self, offset: Offset) -> Result<()> {
        let (lock, moved) = &*self.applied;
        let deadline = Instant::now() + APPLY_WAIT;
        let mut applied = lock.lock().unwrap_or_else(PoisonError::into_inner);
        while *applied < offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(controller_error(format!(
                    "the controller's commands up to offset {offset} are not applied on this \
                     broker after {APPLY_WAIT:?} (applied up to {})",
                    *applied
                )));
            }
            applied = moved
                .wait_timeout(applied, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    /// Stops the applier and the controller's Raft node.
    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.partition.wake_all();
        let thread = self
            .applier
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        // The last `Arc<Broker>` may be let go on the applier itself (it holds one while it
        // applies a topic command): it cannot join itself, and it stops at its next check.
        if let Some(t) = thread
            && t.thread().id() != std::thread::current().id()
            && t.join().is_err()
        {
            tracing::error!("the controller's applier panicked");
        }
        if let Some(r) = &self.partition.replica {
            r.stop();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read_applied(path: &Path) -> Result<Offset> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let bytes: [u8; 8] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| BrokerError::BadStateFile {
                        path: path.to_path_buf(),
                        reason: format!(
                            "{} bytes, not 8 (delete it: the controller's commands are \
                             applied again from the start)",
                            bytes.len()
                        ),
                    })?;
            Ok(u64::from_le_bytes(bytes))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(BrokerError::io("read", path, e)),
    }
}

/// Applies the controller's committed commands to this broker's groups, in order.
struct Applier {
    partition: Arc<Partition>,
    broker: Weak<Broker>,
    groups: Arc<GroupStore>,
    io: Io,
    path: PathBuf,
    applied: Arc<(Mutex<Offset>, Condvar)>,
    stop: Arc<AtomicBool>,
    runtime: tokio::runtime::Handle,
}

impl Applier {
    fn run(self) {
        let mut watch = self.partition.watch();
        let mut next = *self
            .applied
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut saved = next;
        let mut saved_at = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let high_watermark = self.partition.high_watermark();
            if next < high_watermark {
                match self.apply_from(next) {
                    Ok(moved) => {
                        next = moved;
                        let (lock, cond) = &*self.applied;
                        *lock.lock().unwrap_or_else(PoisonError::into_inner) = next;
                        cond.notify_all();
                    }
                    Err(e) => {
                        tracing::error!(error = %e, offset = next, "applying the controller's commands failed; trying again");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            } else {
                // Wait for the high watermark to move, or for `stop` to wake us. No timer: a
                // timer on a runtime already shut down would panic here.
                if self.runtime.block_on(watch.changed()).is_err() {
                    break;
                }
            }
            if next != saved && saved_at.elapsed() >= SAVE_INTERVAL {
                self.save(next);
                saved = next;
                saved_at = Instant::now();
            }
        }
        if next != saved {
            self.save(next);
        }
    }

    /// Applies the committed commands from `offset`; returns the offset after the last one.
    fn apply_from(&self, offset: Offset) -> Result<Offset> {
        let chunk = self
            .partition
            .read(offset, READ_BYTES)
            .map_err(|e| controller_error(format!("reading the log: {e}")))?;
        let mut bytes = &chunk.batches[..];
        let mut next = offset;
        while !bytes.is_empty() {
            let Frame::Batch(batch) = decode_frame(bytes) else {
                break;
            };
            bytes = &bytes[batch.bytes().len()..];
            let header = batch.header();
            if header.next_offset() <= offset {
                continue;
            }
            if !header.is_control() {
                for record in batch.records() {
                    let record =
                        record.map_err(|e| controller_error(format!("a damaged command: {e}")))?;
                    if record.offset < offset {
                        continue;
                    }
                    match Command::decode(record.value) {
                        Ok(command) => {
                            let topical = matches!(
                                command,
                                Command::CreateTopic { .. }
                                    | Command::DeleteTopic { .. }
                                    | Command::AlterTopic { .. }
                            );
                            self.apply(command)?;
                            if topical {
                                // Applied once only: a create replayed after a delete would
                                // bring the topic back (see the module's notes).
                                self.save(record.offset + 1);
                            }
                        }
                        // A command this build does not know (a newer broker wrote it): skipped,
                        // loudly, rather than stopping every group on this broker.
                        Err(e) => {
                            tracing::error!(offset = record.offset, error = %e, "skipping a controller command that does not decode");
                        }
                    }
                }
            }
            next = header.next_offset();
        }
        Ok(next.max(chunk.next_offset))
    }

    fn apply(&self, command: Command) -> Result<()> {
        match command {
            Command::Commit { group, offsets } => self.groups.commit(&group, offsets),
            Command::DeleteGroup { group } => self.groups.delete(&group).map(|_| ()),
            // A topic command that fails here (a disk error, a topic of that name this broker
            // made alone) is logged and passed over: the cluster goes on, this broker lacks
            // the replicas until the topic is deleted and created again.
            Command::CreateTopic { file } => {
                let Some(broker) = self.broker.upgrade() else {
                    return Ok(());
                };
                if let Err(e) = broker.create_replicas(&file) {
                    tracing::error!(error = %crate::errors::error_chain(&e), "creating a topic's replicas as the controller said failed");
                }
                Ok(())
            }
            Command::AlterTopic { topic, config } => {
                let Some(broker) = self.broker.upgrade() else {
                    return Ok(());
                };
                let applied = serde_json::from_slice(&config)
                    .map_err(|e| {
                        controller_error(format!("a topic config that does not decode: {e}"))
                    })
                    .and_then(|config| broker.set_topic_config(&topic, &config));
                if let Err(e) = applied {
                    tracing::error!(topic, error = %crate::errors::error_chain(&e), "altering a topic as the controller said failed");
                }
                Ok(())
            }
            Command::DeleteTopic { topic } => {
                let Some(broker) = self.broker.upgrade() else {
                    return Ok(());
                };
                match broker.delete_topic(&topic) {
                    Ok(()) | Err(BrokerError::TopicNotFound { .. }) => {}
                    Err(e) => {
                        tracing::error!(topic, error = %crate::errors::error_chain(&e), "deleting a topic's replicas as the controller said failed");
                    }
                }
                Ok(())
            }
        }
    }

    /// Writes where the applier goes on after a restart.
    fn save(&self, next: Offset) {
        if let Err(e) = self.io.write_atomic(&self.path, &next.to_le_bytes()) {
            tracing::warn!(error = %e, "saving the controller's applied offset failed");
        }
    }
}
