//! Decoding: find a batch in a byte buffer and walk its records without copying.

use super::{
    BATCH_HEADER_BYTES, BATCH_HEADER_BYTES_V2, BATCH_HEADER_BYTES_V3, BATCH_MAGIC, BATCH_VERSION,
    BATCH_VERSION_V1, BATCH_VERSION_V3, MAX_BATCH_BYTES, RECORD_OVERHEAD_BYTES, batch_crc, field,
    header_bytes, read_i64, read_u16, read_u32, read_u64,
};
use std::fmt;

/// What a buffer holds at a batch boundary. Every state is named; decoding never panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// A whole batch whose CRC matches.
    Batch(BatchView<'a>),
    /// The bytes start a batch but end before it does: `needed` bytes in all would complete it.
    Incomplete {
        /// Total bytes needed to hold the batch (or at least its header).
        needed: usize,
    },
    /// Only zero bytes (at least a header's worth, or up to the end): no batch starts here. This is
    /// what a segment's preallocated space past its last batch looks like.
    Zeroed,
    /// The bytes are not a valid batch.
    Corrupt(Corruption),
}

/// Why bytes are not a valid batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// The magic number is wrong: these bytes are not a batch start.
    BadMagic(u32),
    /// A version this build does not read.
    UnsupportedVersion(u8),
    /// The length field is smaller than a header or larger than the format allows.
    BadLength(u32),
    /// The CRC does not match the bytes.
    CrcMismatch {
        /// The CRC stored in the batch.
        stored: u32,
        /// The CRC of the bytes as they are.
        computed: u32,
    },
    /// The header's record count or timestamps do not fit its records, or a record's lengths run
    /// past the batch.
    BadRecords,
    /// In a sequence of batches (a segment), the batch here does not start at the offset after
    /// the previous batch: it starts at `found`, or (`None`) no batch starts here at all.
    OutOfSequence {
        /// The base offset the batch should have.
        expected: u64,
        /// The base offset it has.
        found: Option<u64>,
    },
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadMagic(m) => write!(f, "bad magic number {m:#010x}"),
            Corruption::UnsupportedVersion(v) => write!(f, "unsupported batch version {v}"),
            Corruption::BadLength(l) => write!(f, "impossible batch length {l}"),
            Corruption::CrcMismatch { stored, computed } => {
                write!(
                    f,
                    "CRC mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
            Corruption::BadRecords => write!(f, "records do not match the batch header"),
            Corruption::OutOfSequence {
                expected,
                found: Some(found),
            } => write!(
                f,
                "a batch of offset {found} where the batch of offset {expected} should start"
            ),
            Corruption::OutOfSequence {
                expected,
                found: None,
            } => write!(
                f,
                "no batch where the batch of offset {expected} should start"
            ),
        }
    }
}

/// Who sent a batch, for the broker's duplicate detection: an idempotent producer's id and epoch
/// (from the broker) and the sequence number of the batch's first record in its partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerStamp {
    /// The producer id, never 0 (0 in the header means "no producer").
    pub producer_id: u64,
    /// The producer's epoch: a higher one starts the producer's sequences afresh.
    pub epoch: u16,
    /// Sequence number of the batch's first record; the records count up from it.
    pub base_sequence: u32,
}

impl ProducerStamp {
    /// The sequence number of the batch's last record, if it fits in a u32 (validation refuses
    /// batches whose sequences do not).
    pub fn last_sequence(&self, record_count: u32) -> Option<u32> {
        self.base_sequence.checked_add(record_count.checked_sub(1)?)
    }
}

/// The fixed header of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// The CRC stored in the batch.
    pub crc: u32,
    /// Total bytes of the batch, header included.
    pub length: u32,
    /// The format version (1 to 4).
    pub version: u8,
    /// Attribute bits (compression, reserved: 0).
    pub attributes: u8,
    /// Offset of the first record.
    pub base_offset: u64,
    /// The idempotent producer that sent the batch (version 2; `None` for version 1 and for
    /// batches with producer id 0).
    pub producer: Option<ProducerStamp>,
    /// The largest record timestamp in the batch.
    pub max_timestamp_ms: i64,
    /// Number of records; at least 1.
    pub record_count: u32,
    /// The term of the leader that appended the batch (versions 3 and 4; 0 for versions 1 and
    /// 2, and in a batch a producer sends).
    pub term: u64,
    /// The batch's index in the partition's Raft log: one more than the batch before it's
    /// (version 4; 0 for versions 1 to 3, and in a batch a producer sends).
    pub raft_index: u64,
}

impl BatchHeader {
    /// Reads the header fields without checking anything but the buffer's size.
    /// Returns `None` when `buf` is shorter than a header (of its version; a version this build
    /// does not read is taken for version 2's layout).
    pub fn parse(buf: &[u8]) -> Option<BatchHeader> {
        if buf.len() < BATCH_HEADER_BYTES_V2 {
            return None;
        }
        let version = buf[field::VERSION];
        let (term, raft_index) = match version {
            BATCH_VERSION => {
                let head = buf.get(..BATCH_HEADER_BYTES)?;
                (
                    read_u64(head, field::TERM),
                    read_u64(head, field::RAFT_INDEX),
                )
            }
            BATCH_VERSION_V3 => (read_u64(buf.get(..BATCH_HEADER_BYTES_V3)?, field::TERM), 0),
            _ => (0, 0),
        };
        let producer_id = read_u64(buf, field::PRODUCER_ID);
        let producer = (version != BATCH_VERSION_V1 && producer_id != 0).then(|| ProducerStamp {
            producer_id,
            epoch: read_u16(buf, field::PRODUCER_EPOCH),
            base_sequence: read_u32(buf, field::BASE_SEQUENCE),
        });
        Some(BatchHeader {
            crc: read_u32(buf, field::CRC),
            length: read_u32(buf, field::LENGTH),
            version,
            attributes: buf[field::ATTRIBUTES],
            base_offset: read_u64(buf, field::BASE_OFFSET),
            producer,
            max_timestamp_ms: read_i64(buf, field::MAX_TIMESTAMP),
            record_count: read_u32(buf, field::RECORD_COUNT),
            term,
            raft_index,
        })
    }

    /// The size of this header: 64 bytes for version 4, 56 for version 3, 48 for versions 1
    /// and 2.
    pub fn header_len(&self) -> usize {
        header_bytes(self.version).unwrap_or(BATCH_HEADER_BYTES_V2)
    }

    /// Version 1's first-record timestamp (validation checks it against the first record).
    pub(crate) fn v1_first_timestamp_ms(buf: &[u8]) -> Option<i64> {
        (buf.len() >= BATCH_HEADER_BYTES_V2 && buf[field::VERSION] == BATCH_VERSION_V1)
            .then(|| read_i64(buf, field::FIRST_TIMESTAMP_V1))
    }

    /// A control batch (a Raft leader's blank entry or a membership change), which consumers
    /// skip: see [`super::ATTRIBUTE_CONTROL`].
    pub fn is_control(&self) -> bool {
        self.attributes & super::ATTRIBUTE_CONTROL != 0
    }

    /// The offset of the last record in the batch. Saturates for a header whose offsets do not
    /// fit in a u64, which [`decode_frame`] refuses but [`BatchHeader::parse`] does not check.
    pub fn last_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count.saturating_sub(1)))
    }

    /// One past the last offset in the batch (saturating, as [`BatchHeader::last_offset`]).
    pub fn next_offset(&self) -> u64 {
        self.base_offset
            .saturating_add(u64::from(self.record_count))
    }
}

/// Checks the framing of the batch that starts at `buf[0]` and, when it is whole, its CRC.
/// Records are not walked: [`BatchView::records`] checks them as it goes, and
/// [`super::validate_batch`] checks them all up front for batches from clients.
pub fn decode_frame(buf: &[u8]) -> Frame<'_> {
    decode_frame_with(buf, batch_crc)
}

/// [`decode_frame`] with the CRC of the whole batch computed by `crc` (so that a caller can keep
/// partial CRCs it needs later).
pub(crate) fn decode_frame_with(buf: &[u8], crc: impl FnOnce(&[u8]) -> u32) -> Frame<'_> {
    if buf.len() < BATCH_HEADER_BYTES_V2 {
        if buf.iter().all(|&b| b == 0) {
            return Frame::Zeroed;
        }
        return Frame::Incomplete {
            needed: BATCH_HEADER_BYTES_V2,
        };
    }
    let head = &buf[..BATCH_HEADER_BYTES_V2];
    if head.iter().all(|&b| b == 0) {
        return Frame::Zeroed;
    }
    let magic = read_u32(buf, field::MAGIC);
    if magic != BATCH_MAGIC {
        return Frame::Corrupt(Corruption::BadMagic(magic));
    }
    let version = buf[field::VERSION];
    let Some(header_len) = header_bytes(version) else {
        return Frame::Corrupt(Corruption::UnsupportedVersion(version));
    };
    let length = read_u32(buf, field::LENGTH);
    let len = length as usize;
    if !(header_len..=MAX_BATCH_BYTES).contains(&len) {
        return Frame::Corrupt(Corruption::BadLength(length));
    }
    if buf.len() < len {
        return Frame::Incomplete { needed: len };
    }
    let bytes = &buf[..len];
    let stored = read_u32(bytes, field::CRC);
    let computed = crc(bytes);
    if stored != computed {
        return Frame::Corrupt(Corruption::CrcMismatch { stored, computed });
    }
    let Some(header) = BatchHeader::parse(bytes) else {
        return Frame::Incomplete { needed: header_len };
    };
    // A batch holds at least one record, and all its offsets (and the one after) fit in a u64.
    if header.record_count == 0
        || header
            .base_offset
            .checked_add(u64::from(header.record_count))
            .is_none()
    {
        return Frame::Corrupt(Corruption::BadRecords);
    }
    Frame::Batch(BatchView { header, bytes })
}

/// A whole, CRC-checked batch inside a borrowed buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchView<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
}

impl<'a> BatchView<'a> {
    /// The batch's header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch, header included.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The records in offset order. Each item is checked against the batch's bounds.
    pub fn records(&self) -> Records<'a> {
        Records {
            body: &self.bytes[self.header.header_len()..],
            base_offset: self.header.base_offset,
            remaining: self.header.record_count,
        }
    }
}

/// One record inside a batch, borrowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The record's offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The payload.
    pub value: &'a [u8],
    headers: &'a [u8],
    header_count: u32,
}

impl<'a> RecordView<'a> {
    /// The headers as (name, value) pairs, in order. Names that are not UTF-8 are skipped by
    /// validation before a batch is stored, so this yields raw bytes for both.
    pub fn headers(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut rest = self.headers;
        (0..self.header_count).map_while(move |_| {
            let (name, after) = take_len_prefixed(rest, 2)?;
            let (value, after) = take_len_prefixed(after, 4)?;
            rest = after;
            Some((name, value))
        })
    }

    /// Number of headers.
    pub fn header_count(&self) -> u32 {
        self.header_count
    }

    /// Bytes this record occupies in its batch.
    pub fn encoded_len(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.map_or(0, <[u8]>::len)
            + self.value.len()
            + self.headers.len()
    }
}

fn take_len_prefixed(buf: &[u8], width: usize) -> Option<(&[u8], &[u8])> {
    let len_bytes = buf.get(..width)?;
    let len = match width {
        2 => usize::from(u16::from_le_bytes([len_bytes[0], len_bytes[1]])),
        _ => read_u32(len_bytes, 0) as usize,
    };
    let rest = &buf[width..];
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// Iterator over a batch's records. Yields `Err(Corruption::BadRecords)` once, then stops, if a
/// record does not fit.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    body: &'a [u8],
    base_offset: u64,
    remaining: u32,
}

impl<'a> Records<'a> {
    fn next_record(&mut self) -> Option<RecordView<'a>> {
        let b = self.body;
        if b.len() < RECORD_OVERHEAD_BYTES {
            return None;
        }
        let record_len = read_u32(b, 0) as usize;
        let total = record_len.checked_add(4)?;
        if record_len < RECORD_OVERHEAD_BYTES - 4 || total > b.len() {
            return None;
        }
        let rec = &b[..total];
        let offset_delta = read_u32(rec, 4);
        let timestamp_ms = read_i64(rec, 8);
        let key_len = read_u32(rec, 16);
        let mut at: usize = 20;
        let key = if key_len == u32::MAX {
            None
        } else {
            let end = at.checked_add(key_len as usize)?;
            let k = rec.get(at..end)?;
            at = end;
            Some(k)
        };
        let value_len = read_u32(rec.get(at..at + 4)?, 0) as usize;
        at += 4;
        let value = rec.get(at..at.checked_add(value_len)?)?;
        at += value_len;
        let header_count = read_u32(rec.get(at..at + 4)?, 0);
        at += 4;
        let headers = &rec[at..];
        // Every header needs at least its two length fields.
        if (headers.len() as u64) < u64::from(header_count) * 6 {
            return None;
        }
        let view = RecordView {
            offset: self.base_offset.checked_add(u64::from(offset_delta))?,
            timestamp_ms,
            key,
            value,
            headers,
            header_count,
        };
        if view.headers().count() != header_count as usize {
            return None;
        }
        self.body = &b[total..];
        Some(view)
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = Result<RecordView<'a>, Corruption>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        if let Some(r) = self.next_record() {
            Some(Ok(r))
        } else {
            self.remaining = 0;
            Some(Err(Corruption::BadRecords))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BatchBuilder;

    fn two_records(base: u64) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        b.push_parts(1, None, b"a", []);
        b.push_parts(2, None, b"b", []);
        b.finish(base)
    }

    #[test]
    fn a_batch_whose_offsets_overflow_u64_is_corrupt_not_a_panic() {
        assert_eq!(
            decode_frame(&two_records(u64::MAX - 1)),
            Frame::Corrupt(Corruption::BadRecords)
        );
        let fits = two_records(u64::MAX - 2);
        let Frame::Batch(b) = decode_frame(&fits) else {
            panic!("offsets up to u64::MAX - 1 fit")
        };
        assert_eq!(b.header().next_offset(), u64::MAX);

        // A record whose offset delta runs past u64::MAX, under a valid CRC.
        let mut bytes = two_records(u64::MAX - 2);
        let delta_at = BATCH_HEADER_BYTES + 4;
        bytes[delta_at..delta_at + 4].copy_from_slice(&7u32.to_le_bytes());
        let crc = batch_crc(&bytes);
        bytes[..4].copy_from_slice(&crc.to_le_bytes());
        let Frame::Batch(b) = decode_frame(&bytes) else {
            panic!("the header is still valid")
        };
        assert_eq!(
            b.records().next(),
            Some(Err(Corruption::BadRecords)),
            "the record's offset does not fit"
        );

        // Headers parsed without checks saturate rather than overflow.
        let h = BatchHeader::parse(&two_records(u64::MAX - 1)).unwrap();
        assert_eq!((h.last_offset(), h.next_offset()), (u64::MAX, u64::MAX));
    }
}
