//! Produce: validate, route and append records to a topic's partitions.

use super::{Broker, BrokerError, Result, partitioner::partition_for_key, topic::Topic};
use crate::record::{BatchBuilder, FormatError, Record, validate_batch};
use crate::storage::Offset;
use bytes::Bytes;
use std::{collections::BTreeMap, sync::atomic::Ordering};

/// What a produce request carries.
#[derive(Debug, Clone)]
pub enum ProduceInput {
    /// One or more encoded batches back to back (docs/FORMAT.md), for one explicit partition.
    Batches(Bytes),
    /// Plain records, routed by the request's partition, else by key, else round-robin.
    Records(Vec<Record>),
}

impl ProduceInput {
    /// The bytes sent: the batches, or the records as a batch would hold them.
    pub fn bytes(&self) -> usize {
        match self {
            ProduceInput::Batches(b) => b.len(),
            ProduceInput::Records(records) => records.iter().map(Record::encoded_len).sum(),
        }
    }
}

/// Where one appended batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Produced {
    /// The partition.
    pub partition: u32,
    /// The offset of the batch's first record.
    pub base_offset: Offset,
    /// Records in the batch.
    pub record_count: u32,
}

impl Broker {
    /// Appends to `topic`. Returns once the appends are as durable as the topic's fsync policy
    /// says. Plain records bound for several partitions become one batch per partition; those
    /// appends are independent, so an error can leave some partitions appended and others not.
    pub fn produce(
        &self,
        topic: &str,
        partition: Option<u32>,
        input: ProduceInput,
    ) -> Result<Vec<Produced>> {
        let topic = self.topic(topic)?;
        let max_record_bytes = topic.config().max_record_bytes as usize;
        match input {
            ProduceInput::Batches(bytes) => {
                let Some(partition) = partition else {
                    return Err(BrokerError::invalid(
                        "partition",
                        "an encoded batch must name its partition",
                    ));
                };
                topic.partition(partition)?;
                append(&topic, partition, &bytes, max_record_bytes)
            }
            ProduceInput::Records(records) => {
                produce_records(&topic, partition, &records, max_record_bytes)
            }
        }
    }
}

/// Where a cluster broker's node id sits in the producer ids it gives (the top 8 bits).
const PRODUCER_ID_NODE_SHIFT: u32 = 56;

impl Broker {
    /// A new idempotent producer's id at epoch 0; or, given an id this broker gave out and its
    /// epoch, the next epoch (which starts its sequences at 0 again), or a new id once the epoch
    /// is exhausted.
    ///
    /// In a cluster, an id carries the node id of the broker that gave it in its top 8 bits, so
    /// that ids given by different brokers never meet in a replicated partition's table.
    pub fn init_producer(&self, current: Option<(u64, u16)>) -> Result<(u64, u16)> {
        let tag = (self.node_id() & 0xFF) << PRODUCER_ID_NODE_SHIFT;
        let ours = |id: u64| {
            id & !(0xFF << PRODUCER_ID_NODE_SHIFT) != 0
                && id >> PRODUCER_ID_NODE_SHIFT == tag >> PRODUCER_ID_NODE_SHIFT
                && self
                    .producer_ids
                    .was_given(id & !(0xFF << PRODUCER_ID_NODE_SHIFT))
        };
        match current {
            Some((id, epoch)) if !ours(id) => Err(BrokerError::invalid(
                "producer_id",
                format!("producer id {id} was never given out by this broker (epoch {epoch})"),
            )),
            Some((id, epoch)) if epoch < u16::MAX => Ok((id, epoch + 1)),
            _ => Ok((self.producer_ids.allocate(&self.io)? | tag, 0)),
        }
    }
}

fn bad_batch(topic: &Topic, source: FormatError) -> BrokerError {
    BrokerError::BadBatch {
        topic: topic.name.clone(),
        source,
    }
}

fn append(
    topic: &Topic,
    partition: u32,
    bytes: &Bytes,
    max_record_bytes: usize,
) -> Result<Vec<Produced>> {
    let batches = validate_batch(bytes, max_record_bytes).map_err(|e| bad_batch(topic, e))?;
    let part = topic.partition(partition)?;
    let base_offsets: Vec<Offset> = match &part.replica {
        // Through the partition's Raft group: each batch (a slice of the request's bytes, not a
        // copy) is one entry; the group's commit moves the high watermark.
        Some(replica) => replica.append(
            &topic.name,
            partition,
            batches.iter().map(|b| bytes.slice_ref(b.bytes())).collect(),
        )?,
        // The log moves the partition's high watermark (and wakes readers) as the batches
        // become readable: at once, or under `fsync always` once the group-commit fsync
        // covers them.
        None => part
            .log
            .append_batches(&batches)
            .map_err(topic.storage_error(partition))?
            .iter()
            .map(|a| a.base_offset)
            .collect(),
    };
    Ok(batches
        .iter()
        .zip(base_offsets)
        .map(|(batch, base_offset)| Produced {
            partition,
            base_offset,
            record_count: batch.record_count(),
        })
        .collect())
}

fn produce_records(
    topic: &Topic,
    partition: Option<u32>,
    records: &[Record],
    max_record_bytes: usize,
) -> Result<Vec<Produced>> {
    if records.is_empty() {
        return Err(bad_batch(topic, FormatError::Empty));
    }
    for (index, record) in (0u32..).zip(records) {
        let size = record.encoded_len();
        if size > max_record_bytes {
            return Err(bad_batch(
                topic,
                FormatError::RecordTooLarge {
                    index,
                    size,
                    max: max_record_bytes,
                },
            ));
        }
    }
    let partitions = topic.partitions.len() as u32;
    if let Some(p) = partition {
        topic.partition(p)?;
    }
    let keyless = records.iter().filter(|r| r.key.is_none()).count() as u64;
    let mut next_round_robin = if partition.is_none() && keyless > 0 {
        topic.round_robin.fetch_add(keyless, Ordering::Relaxed)
    } else {
        0
    };
    let mut builders: BTreeMap<u32, BatchBuilder> = BTreeMap::new();
    for record in records {
        let p = match (partition, &record.key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, partitions),
            (None, None) => {
                let p = (next_round_robin % u64::from(partitions)) as u32;
                next_round_robin += 1;
                p
            }
        };
        builders.entry(p).or_default().push(record);
    }
    let mut out = Vec::with_capacity(builders.len());
    for (p, builder) in builders {
        let bytes = Bytes::from(builder.finish(0));
        out.extend(append(topic, p, &bytes, max_record_bytes)?);
    }
    Ok(out)
}
