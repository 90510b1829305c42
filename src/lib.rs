//! Strata: a durable append-only log broker.
//!
//! The crate is layered, and each layer depends only on the ones above it in this list:
//!
//! - [`record`]: the record-batch wire and disk format (encode, decode, CRC). Shared by the
//!   storage engine, which stores batches as they are, and the client, which decodes them.
//! - [`storage`]: a synchronous, durable partition log: segments, indexes, recovery, retention.
//!   Knows nothing of tokio, gRPC or topics.
//!
//! A record's path: a producer encodes records into a batch ([`record::BatchBuilder`]); the
//! partition's [`storage::Log`] assigns offsets, checks the CRC, writes the batch to the active
//! segment and makes it durable according to its [`storage::FsyncPolicy`]; readers get whole
//! batches back as zero-copy slices of the memory-mapped segment.

pub mod record;
pub mod storage;

/// Generated gRPC types and service stubs for `proto/strata/v1/strata.proto`.
#[allow(missing_docs, clippy::pedantic)]
pub mod proto {
    tonic::include_proto!("strata.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("strata_descriptor");
}
