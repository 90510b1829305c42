//! The Rust client: [`Producer`], [`Consumer`] and [`Admin`] over one gRPC [`Channel`].
//!
//! It depends on the generated protocol ([`crate::proto`]) and the record format
//! ([`crate::record`]) only, never on the broker or storage. The producer encodes batches itself
//! and routes keys with the broker's own partitioner ([`crate::record::partition_for_key`]); the
//! consumer checks every batch's CRC as it decodes it.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata::client::ClientError> {
//! use strata::client::{self, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicSettings};
//!
//! let channel = client::connect("http://127.0.0.1:50051").await?;
//! Admin::new(channel.clone()).create_topic("signups", 3, &TopicSettings::default()).await?;
//!
//! let producer = Producer::new(channel.clone(), "signups", ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::new("hello").key("user-1")).await?;
//! let at = delivery.await?;
//! println!("partition {} offset {}", at.partition, at.offset);
//!
//! let mut consumer = Consumer::new(channel, "signups", ConsumerConfig::group("mailer")).await?;
//! if let Some(record) = consumer.next().await? {
//!     println!("{:?}", record.value);
//! }
//! consumer.commit().await?;
//! # Ok(()) }
//! ```

mod admin;
mod batches;
mod consumer;
mod error;
mod member;
mod producer;

pub use admin::{
    Admin, FsyncPolicy, GroupDescription, GroupLag, GroupMember, PartitionInfo, PartitionOffsets,
    TopicDescription, TopicInfo, TopicSettings,
};
pub use batches::{BatchSubscription, PushedBatches};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Seek};
pub use error::ClientError;
pub use producer::{Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
pub use tonic::transport::Channel;

use crate::proto::strata_client::StrataClient;
use std::time::Duration;
use tonic::transport::Endpoint;

/// The broker URL used when none is given.
pub const DEFAULT_BROKER: &str = "http://127.0.0.1:50051";

/// The largest response the client decodes: the broker's largest fetch (16 MiB by default)
/// plus one oversized batch, with room to spare.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// Connects to the broker at `url` (`http://HOST:PORT`). Fails at once if nothing listens there.
/// The channel is cheap to clone; every clone shares one HTTP/2 connection, on which calls run
/// concurrently.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    let endpoint = Endpoint::from_shared(url.to_string())
        .map_err(|e| ClientError::InvalidUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // A connection that goes silent (the broker's host gone, a half-open socket) is found
        // within about 30 s and dropped, so that calls fail over to a fresh one.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        // Windows large enough that one stream carries a replay at memory speed, and frames as
        // large as the broker accepts, so a 1 MiB batch crosses in one frame.
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20);
    endpoint.connect().await.map_err(|e| ClientError::Connect {
        url: url.to_string(),
        source: std::sync::Arc::new(e),
    })
}

/// The generated client over `channel`, with the response limit raised for large fetches.
fn raw(channel: Channel) -> StrataClient<Channel> {
    StrataClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}
