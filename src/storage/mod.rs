//! The synchronous, durable partition log: segments, sparse offset and time indexes, recovery
//! checkpoints, group-commit fsync and retention. It knows nothing of tokio, gRPC or topics.
//!
//! A partition is a directory of segments (`{base_offset:020}.log`, `.index`, `.timeindex`), a
//! `recovery-point` checkpoint and, after a clean shutdown, a `clean-shutdown` marker.

mod checkpoint;
mod config;
mod error;
mod fault;
mod fs;
mod index;
mod log;
mod recovery;
mod retention;
mod segment;

pub use config::{FsyncPolicy, LogConfig};
pub use error::StorageError;
pub use fault::{FaultInjector, FileOp};
pub use log::{Appended, Log, LogStats, ReadChunk};

/// A record's position in a partition: the first record is 0, and each record gets the next one.
pub type Offset = u64;

/// Result type of the storage layer.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests;
