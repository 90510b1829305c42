//! Strata: a durable append-only log broker.
//!
//! The crate is layered, and each layer depends only on the ones above it in this list:
//!
//! - [`record`]: the record-batch wire and disk format (encode, decode, CRC). Shared by the
//!   storage engine, which stores batches as they are, and the client, which decodes them.
//! - [`storage`]: a synchronous, durable partition log: segments, indexes, recovery, retention.
//!   Knows nothing of tokio, gRPC or topics.
//! - [`broker`]: topics and partitions over storage logs, key routing, committed consumer-group
//!   offsets and the signals that wake waiting readers. Synchronous, shared behind an `Arc`.
//! - [`server`]: the async gRPC edge (tonic): `serve(listener, broker, config, shutdown)`,
//!   long-poll fetches, push subscriptions, and the one table that maps errors to gRPC status
//!   codes.
//! - [`client`]: the Rust client: a batching [`client::Producer`], a [`client::Consumer`] that
//!   owns its positions, and [`client::Admin`]. Needs only [`proto`] and [`record`].
//! - [`cli`]: the `strata` command line (`serve`, `topic`, `produce`, `consume`, `group`);
//!   `main.rs` only calls it.
//! - [`errors`]: what every layer's errors share ([`errors::error_chain`]).
//!
//! A record's path: a producer encodes records into a batch ([`record::BatchBuilder`]) and sends
//! it in a gRPC `Produce`; the [`server`] hands it to the [`broker`] on a blocking thread, which
//! checks it ([`record::validate_batch`]), picks the partition and appends it. The
//! partition's [`storage::Log`] assigns offsets, writes the batch to the active segment and makes
//! it durable according to its [`storage::FsyncPolicy`]; the broker then moves the partition's
//! high watermark, which wakes long-polling fetches and subscribers. Readers get whole batches back
//! as zero-copy slices of the memory-mapped segment, which the server sends as they are.

pub mod broker;
pub mod cli;
pub mod client;
pub mod errors;
pub mod record;
pub mod replication;
pub mod server;
pub mod storage;

/// Generated gRPC types and service stubs for `proto/strata/v1/strata.proto`.
#[allow(missing_docs, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("strata.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");

    /// Status metadata keys the broker sets and clients read: part of the wire contract as the
    /// messages are.
    pub mod keys {
        /// On a refusal by a replica that does not lead the partition (FAILED_PRECONDITION; any
        /// value), with [`LEADER_ID`] and [`LEADER_ADDRESS`] when it knows the leader.
        pub const NOT_LEADER: &str = "strata-not-leader";
        /// The partition leader's node id.
        pub const LEADER_ID: &str = "strata-leader-id";
        /// The partition leader's client address (`host:port`).
        pub const LEADER_ADDRESS: &str = "strata-leader-address";
    }

    /// Generated types and stubs for `proto/strata/raft/v1/raft.proto`: the brokers' internal
    /// Raft service.
    #[allow(missing_docs, clippy::pedantic)]
    pub mod raft {
        include!(concat!(env!("OUT_DIR"), "/raft/strata.raft.v1.rs"));
    }
}
