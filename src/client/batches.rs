//! Whole batches as the broker pushes them, for tools that handle batches themselves (the
//! `bench`, a mirror, an archiver), where [`super::Consumer`] hands out records and owns
//! positions.

use super::{Channel, ClientError, Seek, raw};
use crate::proto;
use bytes::Bytes;

/// One pushed message: whole record batches of one partition, back to back, as stored. The
/// first batch may start before `start_offset`; skip records below it.
#[derive(Debug, Clone)]
pub struct PushedBatches {
    /// The partition.
    pub partition: u32,
    /// The batches, undecoded (decode with [`crate::record::decode_frame`], which checks CRCs).
    pub batches: Bytes,
    /// The first offset this message delivers.
    pub start_offset: u64,
    /// One past the last offset delivered.
    pub next_offset: u64,
    /// The partition's next offset when the message was sent.
    pub high_watermark: u64,
}

/// A push subscription to some partitions of a topic, yielding [`PushedBatches`].
#[derive(Debug)]
pub struct BatchSubscription {
    stream: tonic::Streaming<proto::SubscribeResponse>,
}

impl BatchSubscription {
    /// Subscribes to `partitions` of `topic` (all of them if empty), each from `start`, with
    /// messages of at most `max_bytes` (0: the broker's default; a batch larger than that still
    /// comes whole).
    pub async fn open(
        channel: Channel,
        topic: &str,
        partitions: &[u32],
        start: Seek,
        max_bytes: u32,
    ) -> Result<BatchSubscription, ClientError> {
        let stream = raw(channel)
            .subscribe(proto::SubscribeRequest {
                topic: topic.to_string(),
                partitions: partitions.to_vec(),
                start: Some(start.start_position()),
                max_bytes,
            })
            .await?
            .into_inner();
        Ok(BatchSubscription { stream })
    }

    /// The next pushed message; `None` once the broker ends the subscription (shutdown, topic
    /// deleted).
    pub async fn next(&mut self) -> Result<Option<PushedBatches>, ClientError> {
        Ok(self.stream.message().await?.map(|m| PushedBatches {
            partition: m.partition,
            batches: m.batches,
            start_offset: m.start_offset,
            next_offset: m.next_offset,
            high_watermark: m.high_watermark,
        }))
    }
}
