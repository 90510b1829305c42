//! Encoding: build a batch from records.

use super::{
    BATCH_HEADER_BYTES, BATCH_MAGIC, BATCH_VERSION, BATCH_VERSION_V1, ProducerStamp,
    RECORD_OVERHEAD_BYTES, field, header_bytes,
};
use bytes::Bytes;

/// A record header (name, value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    /// Header value.
    pub value: Bytes,
}

/// A record to encode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record {
    /// Optional key.
    pub key: Option<Bytes>,
    /// Payload.
    pub value: Bytes,
    /// Headers in order.
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

impl Record {
    /// Bytes this record takes in a batch.
    pub fn encoded_len(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|h| 6 + h.name.len() + h.value.len())
                .sum::<usize>()
    }
}

/// Builds one batch in a growing buffer. Offsets are relative until [`BatchBuilder::finish`]
/// stamps the base offset and CRC.
#[derive(Debug, Clone)]
pub struct BatchBuilder {
    buf: Vec<u8>,
    count: u32,
    max_timestamp_ms: i64,
    /// The first record's timestamp (version 1 carries it in the header).
    first_timestamp_ms: i64,
}

impl Default for BatchBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl BatchBuilder {
    /// An empty batch whose buffer has room for `bytes` of records.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(BATCH_HEADER_BYTES + bytes);
        buf.resize(BATCH_HEADER_BYTES, 0);
        BatchBuilder {
            buf,
            count: 0,
            max_timestamp_ms: i64::MIN,
            first_timestamp_ms: 0,
        }
    }

    /// Number of records pushed so far.
    pub fn len(&self) -> u32 {
        self.count
    }

    /// True when no record has been pushed.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes the batch would take if finished now.
    pub fn encoded_len(&self) -> usize {
        self.buf.len()
    }

    /// Appends a record. Header names longer than u16::MAX bytes are cut to fit, at a character
    /// boundary so that the name stays UTF-8 (validation refuses names that are not).
    pub fn push(&mut self, record: &Record) {
        self.push_parts(
            record.timestamp_ms,
            record.key.as_deref(),
            &record.value,
            record
                .headers
                .iter()
                .map(|h| (name_that_fits(&h.name), h.value.as_ref())),
        );
    }

    /// Appends a record from borrowed parts. Header names longer than u16::MAX bytes are cut to
    /// fit, byte-wise.
    pub fn push_parts<'h>(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value: &[u8],
        headers: impl IntoIterator<Item = (&'h [u8], &'h [u8])>,
    ) {
        self.max_timestamp_ms = self.max_timestamp_ms.max(timestamp_ms);
        if self.count == 0 {
            self.first_timestamp_ms = timestamp_ms;
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]); // record length, patched below
        self.buf.extend_from_slice(&self.count.to_le_bytes());
        self.buf.extend_from_slice(&timestamp_ms.to_le_bytes());
        match key {
            Some(k) => {
                self.buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
                self.buf.extend_from_slice(k);
            }
            None => self.buf.extend_from_slice(&u32::MAX.to_le_bytes()),
        }
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
        let count_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let mut header_count = 0u32;
        for (name, value) in headers {
            let name = &name[..name.len().min(usize::from(u16::MAX))];
            self.buf
                .extend_from_slice(&(name.len() as u16).to_le_bytes());
            self.buf.extend_from_slice(name);
            self.buf
                .extend_from_slice(&(value.len() as u32).to_le_bytes());
            self.buf.extend_from_slice(value);
            header_count += 1;
        }
        self.buf[count_at..count_at + 4].copy_from_slice(&header_count.to_le_bytes());
        let record_len = (self.buf.len() - start - 4) as u32;
        self.buf[start..start + 4].copy_from_slice(&record_len.to_le_bytes());
        self.count += 1;
    }

    /// Writes the header with `base_offset` and the CRC, and returns the batch's bytes.
    /// A builder with no records yields a header-only batch that decoders reject; check
    /// [`BatchBuilder::is_empty`] first.
    pub fn finish(self, base_offset: u64) -> Vec<u8> {
        self.finish_stamped(base_offset, None)
    }

    /// As [`BatchBuilder::finish`], with the idempotent producer's id, epoch and base sequence
    /// (`None`: no producer).
    pub fn finish_stamped(mut self, base_offset: u64, producer: Option<ProducerStamp>) -> Vec<u8> {
        let len = self.buf.len() as u32;
        let max_ts = if self.count == 0 {
            0
        } else {
            self.max_timestamp_ms
        };
        let h = &mut self.buf[..BATCH_HEADER_BYTES];
        h[field::LENGTH..field::LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        h[field::MAGIC..field::MAGIC + 4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
        h[field::VERSION] = BATCH_VERSION;
        h[field::ATTRIBUTES] = 0;
        h[field::BASE_OFFSET..field::BASE_OFFSET + 8].copy_from_slice(&base_offset.to_le_bytes());
        let stamp = producer.filter(|p| p.producer_id != 0);
        h[field::PRODUCER_EPOCH..field::PRODUCER_EPOCH + 2]
            .copy_from_slice(&stamp.map_or(0, |p| p.epoch).to_le_bytes());
        h[field::PRODUCER_ID..field::PRODUCER_ID + 8]
            .copy_from_slice(&stamp.map_or(0, |p| p.producer_id).to_le_bytes());
        h[field::BASE_SEQUENCE..field::BASE_SEQUENCE + 4]
            .copy_from_slice(&stamp.map_or(0, |p| p.base_sequence).to_le_bytes());
        h[field::MAX_TIMESTAMP..field::MAX_TIMESTAMP + 8].copy_from_slice(&max_ts.to_le_bytes());
        h[field::RECORD_COUNT..field::RECORD_COUNT + 4].copy_from_slice(&self.count.to_le_bytes());
        // The term and the Raft index are the broker's to write when it appends.
        h[field::TERM..field::TERM + 8].fill(0);
        h[field::RAFT_INDEX..field::RAFT_INDEX + 8].fill(0);
        let crc = super::batch_crc(&self.buf);
        self.buf[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        self.buf
    }

    /// As [`BatchBuilder::finish`], with the control bit ([`super::ATTRIBUTE_CONTROL`]) set:
    /// the broker's own Raft entries (a leader's blank entry, a membership change). Producers
    /// cannot send these: validation of their batches refuses the bit.
    pub fn finish_control(self, base_offset: u64) -> Vec<u8> {
        let mut b = self.finish(base_offset);
        b[field::ATTRIBUTES] = super::ATTRIBUTE_CONTROL;
        let crc = super::batch_crc(&b);
        b[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// As [`BatchBuilder::finish`], in an older format `version`, as brokers before it wrote
    /// batches and clients before it send them: 3 (no Raft index: a 56-byte header), 2 (no term
    /// either: a 48-byte header) or 1 (neither term nor producer: the first record's timestamp
    /// where version 2 has the producer id). For compatibility tests and tools; any other
    /// version is written as the current one.
    pub fn finish_in_version(self, base_offset: u64, version: u8) -> Vec<u8> {
        let first_timestamp_ms = self.first_timestamp_ms;
        let current = self.finish(base_offset);
        let Some(header_len) = header_bytes(version).filter(|_| version != BATCH_VERSION) else {
            return current;
        };
        let mut b = Vec::with_capacity(current.len());
        b.extend_from_slice(&current[..header_len]);
        b.extend_from_slice(&current[BATCH_HEADER_BYTES..]);
        b[field::VERSION] = version;
        let len = b.len() as u32;
        b[field::LENGTH..field::LENGTH + 4].copy_from_slice(&len.to_le_bytes());
        if version == BATCH_VERSION_V1 {
            b[field::FIRST_TIMESTAMP_V1..field::FIRST_TIMESTAMP_V1 + 8]
                .copy_from_slice(&first_timestamp_ms.to_le_bytes());
        }
        let crc = super::batch_crc(&b);
        b[field::CRC..field::CRC + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }
}

/// The longest prefix of `name` that fits a header name's u16 length and ends on a character
/// boundary.
fn name_that_fits(name: &str) -> &[u8] {
    let mut len = name.len().min(usize::from(u16::MAX));
    while !name.is_char_boundary(len) {
        len -= 1;
    }
    &name.as_bytes()[..len]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Frame, decode_frame};

    #[test]
    fn a_built_batch_decodes_to_the_same_records() {
        let mut b = BatchBuilder::default();
        let rec = Record {
            key: Some(Bytes::from_static(b"k")),
            value: Bytes::from_static(b"hello"),
            headers: vec![Header {
                name: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            timestamp_ms: 42,
        };
        b.push(&rec);
        b.push(&Record {
            value: Bytes::from_static(b"two"),
            timestamp_ms: 41,
            ..Record::default()
        });
        let bytes = b.finish(100);
        let Frame::Batch(view) = decode_frame(&bytes) else {
            panic!("not a batch")
        };
        assert_eq!(view.header().base_offset, 100);
        assert_eq!(view.header().record_count, 2);
        assert_eq!(view.header().max_timestamp_ms, 42);
        let recs: Vec<_> = view.records().collect::<Result<_, _>>().unwrap();
        assert_eq!(recs[0].offset, 100);
        assert_eq!(recs[0].key, Some(&b"k"[..]));
        assert_eq!(recs[0].value, b"hello");
        assert_eq!(
            recs[0].headers().collect::<Vec<_>>(),
            vec![(&b"h"[..], &b"v"[..])]
        );
        assert_eq!(recs[0].encoded_len(), rec.encoded_len());
        assert_eq!(recs[1].offset, 101);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].timestamp_ms, 41);
    }

    #[test]
    fn a_header_name_cut_to_fit_stays_utf8_and_validates() {
        // 32,768 two-byte characters: 65,536 bytes, one more than a name can hold.
        let name = "é".repeat(32_768);
        let mut b = BatchBuilder::default();
        b.push(&Record {
            headers: vec![Header {
                name,
                value: Bytes::from_static(b"v"),
            }],
            ..Record::default()
        });
        let bytes = b.finish(0);
        let batches = crate::record::validate_batch(&bytes, 1 << 20)
            .expect("a batch the builder made validates");
        let Frame::Batch(view) = decode_frame(batches[0].bytes()) else {
            panic!("not a batch")
        };
        let rec = view.records().next().unwrap().unwrap();
        let (cut, _) = rec.headers().next().unwrap();
        assert_eq!(cut.len(), 65_534);
        assert!(std::str::from_utf8(cut).is_ok());
    }

    #[test]
    fn a_flipped_bit_anywhere_is_caught() {
        let mut b = BatchBuilder::default();
        b.push_parts(1, None, b"payload", []);
        let bytes = b.finish(7);
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut copy = bytes.clone();
                copy[i] ^= 1 << bit;
                assert!(
                    !matches!(decode_frame(&copy), Frame::Batch(_)),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn zeros_are_zeroed_and_a_prefix_is_incomplete() {
        assert_eq!(decode_frame(&[0; 100]), Frame::Zeroed);
        assert_eq!(decode_frame(&[]), Frame::Zeroed);
        let mut b = BatchBuilder::default();
        b.push_parts(1, None, b"payload", []);
        let bytes = b.finish(0);
        assert_eq!(
            decode_frame(&bytes[..bytes.len() - 1]),
            Frame::Incomplete {
                needed: bytes.len()
            }
        );
    }
}
