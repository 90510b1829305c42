//! The Raft types of one partition: an entry's data is one record batch, and its index in the
//! Raft log maps to the `raft_index` stored in the batch's header.

use crate::record::{BatchBuilder, BatchHeader};
use bytes::Bytes;
use openraft::{BasicNode, EntryPayload, Membership};
use serde::{Deserialize, Serialize};
use std::fmt;

openraft::declare_raft_types!(
    /// The Raft type configuration of a partition's Raft group.
    pub PartitionRaft:
        D = EntryBatch,
        R = AppliedBatch,
        NodeId = u64,
        Node = BasicNode,
        Term = u64,
        LeaderId = openraft::impls::leader_id_std::LeaderId<u64, u64>,
        AsyncRuntime = openraft_rt_tokio::TokioRuntime,
);

/// The payload of a partition's Raft entry.
pub type Payload = EntryPayload<EntryBatch, u64, BasicNode>;
/// A Raft entry of a partition.
pub type Entry = openraft::alias::EntryOf<PartitionRaft>;
/// A Raft log id (the leader's term and the entry's index) of a partition.
pub type LogId = openraft::alias::LogIdOf<PartitionRaft>;
/// A vote of a partition's Raft group.
pub type Vote = openraft::alias::VoteOf<PartitionRaft>;
/// The membership of a partition's Raft group, with the log id that set it.
pub type StoredMembership = openraft::alias::StoredMembershipOf<PartitionRaft>;
/// A partition's snapshot metadata.
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<PartitionRaft>;

/// The data of a normal entry: one whole record batch. On a leader, before it is stored, the batch
/// a producer sent (base offset 0); read back from a log, the batch as the leader stored it (its
/// offset, term and Raft index in the header), which followers store unchanged but for the
/// header. A zero-copy slice of the request or of the segment.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryBatch(pub Bytes);

impl fmt::Debug for EntryBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for EntryBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match BatchHeader::parse(&self.0) {
            Some(h) => write!(
                f,
                "EntryBatch({} bytes, {} records at {})",
                self.0.len(),
                h.record_count,
                h.base_offset
            ),
            None => write!(f, "EntryBatch({} bytes, no header)", self.0.len()),
        }
    }
}

/// What applying a normal entry answers: the offsets its records took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppliedBatch {
    /// The offset of the batch's first record.
    pub base_offset: u64,
    /// One past the batch's last record.
    pub next_offset: u64,
}

/// The `raft_index` stored in a batch's header for the entry at `index` of the Raft log. openraft
/// counts entries from 0 (its first is the initial membership); the header's 0 means "not a Raft
/// entry" (batches written before format version 4), so an entry is stored as its index plus 1.
pub fn stored_index(index: u64) -> u64 {
    index + 1
}

/// The Raft log index of a batch whose header holds `stored`, or `None` for a batch that is not a
/// Raft entry (`stored` 0).
pub fn raft_index(stored: u64) -> Option<u64> {
    stored.checked_sub(1)
}

/// The payload of a control batch (attribute bit 3): an entry of the Raft log that is not a
/// producer's batch. Stored as the bincode (standard configuration, serde) encoding of this enum
/// in the value of the batch's one record.
#[derive(Debug, Serialize, Deserialize)]
enum ControlPayload {
    /// A new leader's first entry.
    Blank,
    /// A membership change.
    Membership(Membership<u64, BasicNode>),
}

/// The batch that stores `payload`: a normal entry's batch as it is, a blank or a membership
/// entry as a control batch (one record, stamped `timestamp_ms`).
pub(crate) fn entry_bytes(payload: &Payload, timestamp_ms: i64) -> Result<Bytes, String> {
    let control = match payload {
        EntryPayload::Normal(batch) => return Ok(batch.0.clone()),
        EntryPayload::Blank => ControlPayload::Blank,
        EntryPayload::Membership(m) => ControlPayload::Membership(m.clone()),
    };
    let value = bincode::serde::encode_to_vec(&control, bincode::config::standard())
        .map_err(|e| format!("a control entry does not encode: {e}"))?;
    let mut b = BatchBuilder::default();
    b.push_parts(timestamp_ms, None, &value, []);
    Ok(Bytes::from(b.finish_control(0)))
}

/// The payload of the stored batch `bytes` (a whole batch whose header is `header`).
pub(crate) fn entry_payload(header: &BatchHeader, bytes: Bytes) -> Result<Payload, String> {
    if !header.is_control() {
        return Ok(EntryPayload::Normal(EntryBatch(bytes)));
    }
    let crate::record::Frame::Batch(view) = crate::record::decode_frame(&bytes) else {
        return Err("a control batch does not decode".into());
    };
    let value = match view.records().next() {
        Some(Ok(r)) => r.value,
        Some(Err(c)) => return Err(format!("a control batch's record is damaged: {c}")),
        None => return Err("a control batch has no record".into()),
    };
    // A membership is small: a damaged length is refused, not allocated.
    let config = bincode::config::standard().with_limit::<{ 1 << 20 }>();
    let (control, used): (ControlPayload, usize) = bincode::serde::decode_from_slice(value, config)
        .map_err(|e| format!("a control entry does not decode: {e}"))?;
    if used != value.len() {
        return Err("a control entry has trailing bytes".into());
    }
    Ok(match control {
        ControlPayload::Blank => EntryPayload::Blank,
        ControlPayload::Membership(m) => EntryPayload::Membership(m),
    })
}

impl fmt::Display for AppliedBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "offsets {}..{}", self.base_offset, self.next_offset)
    }
}
