//! openraft's log storage over a partition's [`Log`]: one Raft entry is one stored batch, whose
//! header carries the entry's term and index (docs/FORMAT.md). The vote and the purged log id
//! live in the partition's Raft state file.
//!
//! Durability is reported only when it is true: an append is written at once (readable, as
//! openraft requires) and its callback fires after `sync_to` has made it durable when the log's
//! fsync policy is `Always`; under `Interval` and `Never` it fires once written, as a single
//! broker acknowledges under those policies, except for a membership entry, which is synced
//! under every policy (as the vote is). Callbacks fire in the order of the appends, and a
//! truncation, a purge or a vote waits for the flushes before it.

use super::{
    ReplicationError,
    error::blocking,
    state_file::RaftStateFile,
    types::{
        Entry, LogId, PartitionRaft, Vote, entry_bytes, entry_payload, raft_index, stored_index,
    },
};
use crate::{
    record::{Frame, decode_frame, validate_stored_batch},
    storage::{AppendWait, EntryId, FsyncPolicy, Log},
};
use openraft::{
    EntryPayload, LogState, OptionalSend, RaftLogReader,
    storage::{IOFlushed, RaftLogStorage},
};
use std::{
    fmt::Debug,
    io,
    ops::{Bound, RangeBounds},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};
use tokio::task::JoinHandle;

/// How many bytes one read of the log asks for while collecting entries.
const READ_CHUNK_BYTES: usize = 1 << 20;

/// How many bytes of entries openraft's replication takes from the log for one AppendEntries
/// (at least one entry): a follower that is far behind catches up in requests of this size,
/// each sent well within its deadline, not in one of up to `max_payload_entries` whole batches.
pub const APPEND_PAYLOAD_BYTES: usize = 8 << 20;

/// Reads a partition's Raft entries and vote (shared by openraft's replication tasks).
#[derive(Clone)]
pub struct PartitionLogReader {
    log: Arc<Log>,
    state: Arc<RaftStateFile>,
}

/// openraft's [`RaftLogStorage`] for one partition.
pub struct PartitionLogStore {
    reader: PartitionLogReader,
    /// The last append's flush under way, which the next one (and any truncation, purge or
    /// vote) waits for, so that callbacks fire in order.
    flushing: Option<JoinHandle<()>>,
}

impl PartitionLogStore {
    /// A store over `log`, whose Raft state file is `state` (both in the partition directory).
    pub fn new(log: Arc<Log>, state: Arc<RaftStateFile>) -> Self {
        PartitionLogStore {
            reader: PartitionLogReader { log, state },
            flushing: None,
        }
    }

    /// Waits for the flush under way, if any.
    async fn drain(&mut self) {
        if let Some(f) = self.flushing.take() {
            // A flush task does not fail: it hands its result to openraft's callback.
            let _ = f.await;
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The half-open range of indexes `[start, end)` that `range` names.
fn index_range(range: &impl RangeBounds<u64>) -> (u64, u64) {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.saturating_add(1),
        Bound::Excluded(&e) => e,
        Bound::Unbounded => u64::MAX,
    };
    (start, end)
}

impl PartitionLogReader {
    /// The entries with indexes in `[start, end)` that the log holds and that are not purged,
    /// from the first it holds, stopping after the entry that reaches `max_bytes`. A hole (an
    /// index missing between two the log holds) is an error, never a shorter answer.
    fn entries(
        &self,
        start: u64,
        end: u64,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, ReplicationError> {
        let purged_next = self.state.get().last_purged.map_or(0, |p| p.index + 1);
        let start = start.max(purged_next);
        let mut out = Vec::new();
        if start >= end {
            return Ok(out);
        }
        let Some((mut offset, _)) = self.log.first_entry_from(stored_index(start))? else {
            return Ok(out);
        };
        let mut size = 0usize;
        while offset < self.log.next_offset() {
            let chunk = self.log.read(offset, READ_CHUNK_BYTES)?;
            if chunk.batches.is_empty() {
                break;
            }
            let mut at = 0;
            while at < chunk.batches.len() {
                let Frame::Batch(view) = decode_frame(&chunk.batches[at..]) else {
                    return Err(ReplicationError::BadEntry {
                        index: start + out.len() as u64,
                        reason: "a read of the log does not decode into whole batches".into(),
                    });
                };
                let header = *view.header();
                let bytes = chunk.batches.slice(at..at + view.bytes().len());
                at += bytes.len();
                let Some(index) = raft_index(header.raft_index) else {
                    continue; // a batch from before replication: no entry
                };
                if index < start || header.base_offset < offset {
                    continue;
                }
                if index >= end {
                    return Ok(out);
                }
                let expected = out.last().map_or(index, |e: &Entry| e.log_id.index + 1);
                if index != expected {
                    return Err(ReplicationError::BadEntry {
                        index: expected,
                        reason: format!("missing from the log (the next entry held is {index})"),
                    });
                }
                size += bytes.len();
                let payload = entry_payload(&header, bytes)
                    .map_err(|reason| ReplicationError::BadEntry { index, reason })?;
                out.push(Entry {
                    log_id: LogId::new_term_index(header.term, index),
                    payload,
                });
                if size >= max_bytes {
                    return Ok(out);
                }
            }
            offset = chunk.next_offset;
        }
        Ok(out)
    }
}

impl RaftLogReader<PartitionRaft> for PartitionLogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let (start, end) = index_range(&range);
        let reader = self.clone();
        Ok(blocking(move || reader.entries(start, end, usize::MAX)).await?)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        let reader = self.clone();
        Ok(blocking(move || reader.entries(start, end, APPEND_PAYLOAD_BYTES)).await?)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.state.get().vote)
    }
}

impl RaftLogReader<PartitionRaft> for PartitionLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader.try_get_log_entries(range).await
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry>, io::Error> {
        self.reader.limited_get_log_entries(start, end).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.reader.read_vote().await
    }
}

impl RaftLogStorage<PartitionRaft> for PartitionLogStore {
    type LogReader = PartitionLogReader;

    async fn get_log_state(&mut self) -> Result<LogState<PartitionRaft>, io::Error> {
        let last_purged = self.reader.state.get().last_purged;
        let EntryId { term, index } = self.reader.log.last_entry();
        let last = raft_index(index).map(|i| LogId::new_term_index(term, i));
        Ok(LogState {
            last_log_id: last.max(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.reader.clone()
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        if let Some(committed) = committed {
            self.reader.state.save_committed(committed)?;
        }
        Ok(())
    }

    /// The committed log id saved before a restart, if the log still holds that entry as it was
    /// (same index, same term): openraft then applies up to it at start, so the partition's high
    /// watermark is back at once. Anything else (no file, a torn one, an entry since truncated
    /// or replaced, as a power cut under `fsync never` can leave) is `None`.
    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        let Some(committed) = self.reader.state.read_committed() else {
            return Ok(None);
        };
        let log = self.reader.log.clone();
        let found = blocking(move || {
            let Some(offset) = log.offset_of_entry(stored_index(committed.index))? else {
                return Ok(None);
            };
            let term = log.term_at(offset)?;
            Ok((term == committed.leader_id.term).then_some(committed))
        })
        .await;
        match found {
            Ok(found) => Ok(found),
            Err(e) => {
                tracing::warn!(error = %e, "checking the saved committed log id failed; passing over it");
                Ok(None)
            }
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.drain().await;
        let state = self.reader.state.clone();
        let vote = *vote;
        Ok(blocking(move || state.update(|s| s.vote = Some(vote))).await?)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<PartitionRaft>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // A membership entry is made durable under every policy, as the vote is: replicas that
        // all lost it to power cuts would no longer know their group, and none would lead it
        // again.
        let membership = entries
            .iter()
            .any(|e| matches!(e.payload, EntryPayload::Membership(_)));
        let log = self.reader.log.clone();
        let written = blocking(move || {
            let now = now_ms();
            let mut ids = Vec::with_capacity(entries.len());
            let mut owned = Vec::with_capacity(entries.len());
            for e in &entries {
                let index = e.log_id.index;
                ids.push(EntryId {
                    term: e.log_id.leader_id.term,
                    index: stored_index(index),
                });
                owned.push(
                    entry_bytes(&e.payload, now)
                        .map_err(|reason| ReplicationError::BadEntry { index, reason })?,
                );
            }
            let mut batches = Vec::with_capacity(owned.len());
            for (id, bytes) in ids.iter().zip(&owned) {
                let bad = |reason: String| ReplicationError::BadEntry {
                    index: id.index - 1,
                    reason,
                };
                let valid = validate_stored_batch(bytes).map_err(|e| bad(e.to_string()))?;
                if valid.len() != 1 {
                    return Err(bad(format!("{} batches in one entry", valid.len())));
                }
                batches.extend(valid);
            }
            let appended = log.append_entries(&ids, &batches, AppendWait::Written)?;
            Ok(appended.last().map(|a| a.next_offset))
        })
        .await?;
        let sync = membership || matches!(self.reader.log.config().fsync, FsyncPolicy::Always);
        let previous = self.flushing.take();
        match written {
            Some(next) if sync => {
                let log = self.reader.log.clone();
                self.flushing = Some(tokio::spawn(async move {
                    let synced = blocking(move || Ok(log.sync_to(next)?)).await;
                    if let Some(p) = previous {
                        let _ = p.await;
                    }
                    callback.io_completed(synced.map_err(io::Error::from));
                }));
            }
            _ => {
                if let Some(p) = previous {
                    let _ = p.await;
                }
                callback.io_completed(Ok(()));
            }
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        self.drain().await;
        let log = self.reader.log.clone();
        let first_gone = last_log_id.map_or(0, |l| l.index + 1);
        Ok(blocking(move || {
            if let Some((offset, _)) = log.first_entry_from(stored_index(first_gone))? {
                log.truncate(offset)?;
            }
            Ok(())
        })
        .await?)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.drain().await;
        let (log, state) = (self.reader.log.clone(), self.reader.state.clone());
        Ok(blocking(move || {
            // The purged id is durable first: a crash between the two leaves entries that reads
            // hide, never a log whose first entries are gone while the state file says otherwise.
            state.update(|s| s.last_purged = s.last_purged.max(Some(log_id)))?;
            let below = log
                .first_entry_from(stored_index(log_id.index + 1))?
                .map_or_else(|| log.next_offset(), |(offset, _)| offset);
            log.purge_before(below)?;
            Ok(())
        })
        .await?)
    }
}
