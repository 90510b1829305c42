//! The record-batch format: how records are framed on disk and on the wire (docs/FORMAT.md).
//!
//! A batch is a 64-byte header followed by its records; a CRC-32 covers every byte of the batch
//! after the CRC field itself, base offset, term, index and length included. The storage engine
//! stores the records exactly as produced (only the header's base offset, term, Raft index and
//! CRC are rewritten,
//! and an older version's header is stored as the current one), and the client decodes them.
//! Key routing ([`partition_for_key`]) is here too, so that broker and client agree on it.

mod builder;
mod frame;
mod partitioner;
mod validate;

pub use builder::{BatchBuilder, Header, Record};
pub use frame::{
    BatchHeader, BatchView, Corruption, Frame, ProducerStamp, RecordView, Records, decode_frame,
};
pub use partitioner::{murmur2, partition_for_key};
pub use validate::{FormatError, ValidatedBatch, validate_batch, validate_stored_batch};

/// The size in bytes of the header of a batch of the version written ([`BATCH_VERSION`]).
pub const BATCH_HEADER_BYTES: usize = 64;
/// The size in bytes of a version-3 header, which has a term but no Raft index.
pub const BATCH_HEADER_BYTES_V3: usize = 56;
/// The size in bytes of a version-1 or version-2 header, which has no term.
pub const BATCH_HEADER_BYTES_V2: usize = 48;
/// The magic number at byte 8 of every batch: `b"STRA"` read as a little-endian u32.
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"STRA");
/// The format version written: version 3 with the batch's Raft log index after the term (for
/// replication). Versions 1 (before idempotent producers: a first-record timestamp where version
/// 2 has the producer id, and zeroes where it has the epoch and sequence), 2 (no term: it reads
/// as term 0) and 3 (no index: it reads as index 0) are still read, so that logs written before
/// them stay readable.
pub const BATCH_VERSION: u8 = 4;
/// The version before Raft indexes.
pub const BATCH_VERSION_V3: u8 = 3;
/// The version before terms.
pub const BATCH_VERSION_V2: u8 = 2;
/// The oldest format version read.
pub const BATCH_VERSION_V1: u8 = 1;

/// Attribute bit 3: a control batch, written by the broker alone (a Raft leader's blank entry or
/// a membership change), never by a producer. Its one record carries the control payload;
/// consumers skip it (its offset is a gap in what they see).
pub const ATTRIBUTE_CONTROL: u8 = 0x08;

/// The header size of a batch of `version`, or `None` for a version this build does not read.
pub fn header_bytes(version: u8) -> Option<usize> {
    match version {
        BATCH_VERSION_V1 | BATCH_VERSION_V2 => Some(BATCH_HEADER_BYTES_V2),
        BATCH_VERSION_V3 => Some(BATCH_HEADER_BYTES_V3),
        BATCH_VERSION => Some(BATCH_HEADER_BYTES),
        _ => None,
    }
}
/// The largest batch the format allows (the length field is a u32; this leaves headroom).
pub const MAX_BATCH_BYTES: usize = 1 << 30;
/// Fixed bytes of one record besides its key, value and headers.
pub const RECORD_OVERHEAD_BYTES: usize = 28;

/// Byte offsets of the header fields.
pub(crate) mod field {
    pub const CRC: usize = 0;
    pub const LENGTH: usize = 4;
    pub const MAGIC: usize = 8;
    pub const VERSION: usize = 12;
    pub const ATTRIBUTES: usize = 13;
    /// Version 2: the producer's epoch (u16).
    pub const PRODUCER_EPOCH: usize = 14;
    pub const BASE_OFFSET: usize = 16;
    /// Version 2: the producer id (u64, 0 = no producer).
    pub const PRODUCER_ID: usize = 24;
    /// Version 1: the first record's timestamp (i64), where version 2 has the producer id.
    pub const FIRST_TIMESTAMP_V1: usize = 24;
    pub const MAX_TIMESTAMP: usize = 32;
    pub const RECORD_COUNT: usize = 40;
    /// Version 2: the sequence number of the batch's first record (u32).
    pub const BASE_SEQUENCE: usize = 44;
    /// Version 3: the term of the leader that appended the batch (u64).
    pub const TERM: usize = 48;
    /// Version 4: the batch's index in the partition's Raft log (u64).
    pub const RAFT_INDEX: usize = 56;
}

/// CRC-32 (the IEEE polynomial, as crc32fast computes it) of a batch: bytes 4 to the end.
pub fn batch_crc(batch: &[u8]) -> u32 {
    crc32fast::hash(&batch[field::LENGTH..])
}

pub(crate) fn read_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(crate) fn read_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([buf[at], buf[at + 1]])
}

pub(crate) fn read_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn read_i64(buf: &[u8], at: usize) -> i64 {
    read_u64(buf, at) as i64
}

/// Milliseconds since the Unix epoch by the system clock (0 before it): the one clock of record
/// timestamps, segment ages and retention, shared by storage, broker, client and CLI.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
