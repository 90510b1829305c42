//! openraft's state machine for a partition. The records are the log's, so applying an entry
//! only moves the partition's commit position: the offset after the last committed producer
//! batch, which is what consumers may read up to (the high watermark). A snapshot is that
//! position with openraft's metadata, kept in the Raft state file.

use super::{
    ReplicationError,
    error::blocking,
    state_file::{PartitionSnapshot, RaftStateFile},
    types::{AppliedBatch, LogId, PartitionRaft, SnapshotMeta, StoredMembership},
};
use crate::{
    record::BatchHeader,
    storage::{Log, LogEndListener},
};
use futures_util::{Stream, TryStreamExt};
use openraft::{
    EntryPayload, OptionalSend, RaftSnapshotBuilder, Snapshot,
    alias::SnapshotOf,
    storage::{EntryResponder, RaftStateMachine},
};
use std::{
    io,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

/// What a partition's snapshot carries besides its metadata: where its records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPosition {
    /// The offset after the last record the snapshot covers.
    pub next_offset: u64,
}

#[derive(Debug, Default)]
struct Applied {
    last: Option<LogId>,
    membership: StoredMembership,
}

/// openraft's [`RaftStateMachine`] (and snapshot builder) for one partition.
#[derive(Clone)]
pub struct PartitionMachine {
    log: Arc<Log>,
    state: Arc<RaftStateFile>,
    applied: Arc<Mutex<Applied>>,
    committed_next: Arc<AtomicU64>,
    /// Told every time the commit position moves (the partition's high watermark).
    listener: Arc<Mutex<Option<Arc<dyn LogEndListener>>>>,
    /// Set once another machine replaced this one (its Raft node stopped, the log may be cut
    /// back): an apply still under way fails rather than report entries it could not read.
    retired: Arc<AtomicBool>,
}

impl PartitionMachine {
    /// The machine of the partition whose log is `log` and Raft state `state`, as of the last
    /// snapshot.
    pub fn new(log: Arc<Log>, state: Arc<RaftStateFile>) -> Self {
        let (applied, next) = match state.get().snapshot {
            Some(s) => (
                Applied {
                    last: s.meta.last_log_id,
                    membership: s.meta.last_membership,
                },
                s.next_offset,
            ),
            None => (Applied::default(), 0),
        };
        PartitionMachine {
            log,
            state,
            applied: Arc::new(Mutex::new(applied)),
            committed_next: Arc::new(AtomicU64::new(next)),
            listener: Arc::default(),
            retired: Arc::default(),
        }
    }

    /// Tells `listener` the commit position now and every time it moves.
    pub fn on_commit(&self, listener: Arc<dyn LogEndListener>) {
        let mut slot = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        listener.log_end_moved(self.committed_next_offset());
        *slot = Some(listener);
    }

    /// Marks this machine replaced: its Raft node is stopped, and an apply still under way
    /// fails from now on.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }

    /// Takes over the listener `from` tells (a machine that replaces `from`) and tells it this
    /// machine's commit position.
    pub(crate) fn take_listener(&self, from: &PartitionMachine) {
        let taken = from
            .listener
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(l) = taken {
            self.on_commit(l);
        }
    }

    fn committed_moved(&self) {
        let slot = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(l) = slot.as_ref() {
            l.log_end_moved(self.committed_next_offset());
        }
    }

    /// The offset after the last committed producer batch applied: the partition's high
    /// watermark on this replica.
    pub fn committed_next_offset(&self) -> u64 {
        self.committed_next.load(Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Applied> {
        self.applied.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn current(&self) -> (SnapshotMeta, SnapshotPosition) {
        let a = self.lock();
        let meta = SnapshotMeta {
            last_log_id: a.last,
            last_membership: a.membership.clone(),
        };
        let position = SnapshotPosition {
            next_offset: self.committed_next_offset(),
        };
        (meta, position)
    }
}

impl RaftSnapshotBuilder<PartitionRaft> for PartitionMachine {
    type SnapshotData = SnapshotPosition;

    async fn build_snapshot(
        &mut self,
    ) -> Result<SnapshotOf<PartitionRaft, SnapshotPosition>, io::Error> {
        let (meta, position) = self.current();
        let state = self.state.clone();
        let stored = PartitionSnapshot {
            meta: meta.clone(),
            next_offset: position.next_offset,
        };
        blocking(move || state.update(|s| s.snapshot = Some(stored))).await?;
        Ok(Snapshot {
            meta,
            snapshot: position,
        })
    }
}

impl RaftStateMachine<PartitionRaft> for PartitionMachine {
    type SnapshotData = SnapshotPosition;
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let a = self.lock();
        Ok((a.last, a.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm:
            Stream<Item = Result<EntryResponder<PartitionRaft>, io::Error>> + Unpin + OptionalSend,
    {
        while let Some((entry, responder)) = entries.try_next().await? {
            let next = self.committed_next_offset();
            let response = match &entry.payload {
                EntryPayload::Normal(batch) => {
                    let header = BatchHeader::parse(&batch.0).ok_or_else(|| {
                        io::Error::from(ReplicationError::BadEntry {
                            index: entry.log_id.index,
                            reason: "a committed entry has no batch header".into(),
                        })
                    })?;
                    let applied = AppliedBatch {
                        base_offset: header.base_offset,
                        next_offset: header.next_offset(),
                    };
                    let before = self
                        .committed_next
                        .fetch_max(applied.next_offset, Ordering::AcqRel);
                    if applied.next_offset > before {
                        self.committed_moved();
                    }
                    applied
                }
                EntryPayload::Blank => AppliedBatch {
                    base_offset: next,
                    next_offset: next,
                },
                EntryPayload::Membership(m) => {
                    self.lock().membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    AppliedBatch {
                        base_offset: next,
                        next_offset: next,
                    }
                }
            };
            self.lock().last = Some(entry.log_id);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        if self.retired.load(Ordering::SeqCst) {
            return Err(io::Error::other(ReplicationError::Task(
                "the replica's Raft node was started again".into(),
            )));
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotPosition,
    ) -> Result<(), io::Error> {
        let log_next = self.log.next_offset();
        if snapshot.next_offset > log_next {
            return Err(ReplicationError::SnapshotPastLog {
                snapshot_next: snapshot.next_offset,
                log_next,
            }
            .into());
        }
        let state = self.state.clone();
        let stored = PartitionSnapshot {
            meta: meta.clone(),
            next_offset: snapshot.next_offset,
        };
        blocking(move || state.update(|s| s.snapshot = Some(stored))).await?;
        {
            let mut a = self.lock();
            a.last = meta.last_log_id;
            a.membership = meta.last_membership.clone();
        }
        self.committed_next
            .store(snapshot.next_offset, Ordering::Release);
        self.committed_moved();
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<SnapshotOf<PartitionRaft, SnapshotPosition>>, io::Error> {
        Ok(self.state.get().snapshot.map(|s| Snapshot {
            meta: s.meta,
            snapshot: SnapshotPosition {
                next_offset: s.next_offset,
            },
        }))
    }
}
