//! Checking a batch that came from a client before it is stored, and restamping its offset.

use super::{
    BATCH_HEADER_BYTES, BATCH_HEADER_BYTES_V2, BATCH_VERSION, BATCH_VERSION_V1, BatchHeader,
    Corruption, Frame, MAX_BATCH_BYTES, field, frame::decode_frame_with, header_bytes, read_u16,
    read_u32,
};

/// Why a client's batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The bytes are not one whole, valid batch.
    #[error("invalid record batch: {0}")]
    Corrupt(Corruption),
    /// The bytes end before the batch does.
    #[error("truncated record batch: {have} of {needed} bytes")]
    Truncated {
        /// Bytes given.
        have: usize,
        /// Bytes the batch header announces.
        needed: usize,
    },
    /// The batch holds no record.
    #[error("empty record batch")]
    Empty,
    /// A record is larger than the topic allows.
    #[error("record at index {index} is {size} bytes, over the limit of {max} bytes")]
    RecordTooLarge {
        /// Index of the record in its batch.
        index: u32,
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// Attribute bits this build does not understand (such as compression).
    #[error("unsupported batch attributes {0:#04x}")]
    UnsupportedAttributes(u8),
    /// The producer fields of the header do not make sense.
    #[error("invalid producer fields in the batch header: {0}")]
    BadProducerStamp(&'static str),
}

/// A batch whose framing, CRC and records were all checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedBatch<'a> {
    header: BatchHeader,
    bytes: &'a [u8],
    /// CRC of the records alone, so restamping need not read them again.
    body_crc: u32,
}

impl<'a> ValidatedBatch<'a> {
    /// The header as sent.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch as sent.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Number of records.
    pub fn record_count(&self) -> u32 {
        self.header.record_count
    }

    /// The records, after the header as sent.
    pub fn body(&self) -> &'a [u8] {
        &self.bytes[self.header.header_len()..]
    }

    /// The batch's size as stored: the records after a current ([`BATCH_HEADER_BYTES`]) header.
    pub fn stored_len(&self) -> usize {
        BATCH_HEADER_BYTES + self.body().len()
    }

    /// The batch's header as stored: the current version's, with `base_offset`, `term` and
    /// `raft_index`, and the CRC recomputed over the new header and the unchanged records. The
    /// records need not be copied: write this header, then [`ValidatedBatch::body`]. A batch of
    /// versions 1 to 3 is stored as version 4 (a version 1's first timestamp gives way to
    /// producer id 0).
    pub fn restamped_header(
        &self,
        base_offset: u64,
        term: u64,
        raft_index: u64,
    ) -> [u8; BATCH_HEADER_BYTES] {
        let mut head = [0u8; BATCH_HEADER_BYTES];
        let sent = self.header.header_len();
        head[..sent].copy_from_slice(&self.bytes[..sent]);
        if self.header.version == BATCH_VERSION_V1 {
            head[field::PRODUCER_ID..field::PRODUCER_ID + 8].fill(0);
        }
        head[field::VERSION] = BATCH_VERSION;
        let stored_len = u32::try_from(self.stored_len()).unwrap_or(u32::MAX);
        head[field::LENGTH..field::LENGTH + 4].copy_from_slice(&stored_len.to_le_bytes());
        head[field::BASE_OFFSET..field::BASE_OFFSET + 8]
            .copy_from_slice(&base_offset.to_le_bytes());
        head[field::TERM..field::TERM + 8].copy_from_slice(&term.to_le_bytes());
        head[field::RAFT_INDEX..field::RAFT_INDEX + 8].copy_from_slice(&raft_index.to_le_bytes());
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&head[field::LENGTH..]);
        let body_len = self.body().len() as u64;
        hasher.combine(&crc32fast::Hasher::new_with_initial_len(
            self.body_crc,
            body_len,
        ));
        head[field::CRC..field::CRC + 4].copy_from_slice(&hasher.finalize().to_le_bytes());
        head
    }
}

/// Splits `buf` into whole batches and validates each: framing, CRC, every record's bounds and
/// size. `buf` may hold several batches back to back; an empty `buf` is [`FormatError::Empty`].
/// For batches from producers: any attribute bit is refused.
pub fn validate_batch(
    buf: &[u8],
    max_record_bytes: usize,
) -> Result<Vec<ValidatedBatch<'_>>, FormatError> {
    validate(buf, max_record_bytes, 0)
}

/// As [`validate_batch`], for batches a partition's Raft leader stored and sent on (a
/// follower's append, or an entry read back from the log): the control bit
/// ([`super::ATTRIBUTE_CONTROL`]) is allowed, and records are as large as the leader took.
pub fn validate_stored_batch(buf: &[u8]) -> Result<Vec<ValidatedBatch<'_>>, FormatError> {
    validate(buf, MAX_BATCH_BYTES, super::ATTRIBUTE_CONTROL)
}

fn validate(
    buf: &[u8],
    max_record_bytes: usize,
    allowed_attributes: u8,
) -> Result<Vec<ValidatedBatch<'_>>, FormatError> {
    let mut out = Vec::new();
    let mut rest = buf;
    while !rest.is_empty() {
        let mut body_crc = 0;
        let frame = decode_frame_with(rest, |batch| {
            let header_len = header_bytes(batch[field::VERSION]).unwrap_or(BATCH_HEADER_BYTES_V2);
            let mut head = crc32fast::Hasher::new();
            head.update(&batch[field::LENGTH..header_len]);
            body_crc = crc32fast::hash(&batch[header_len..]);
            let body_len = (batch.len() - header_len) as u64;
            head.combine(&crc32fast::Hasher::new_with_initial_len(body_crc, body_len));
            head.finalize()
        });
        let view = match frame {
            Frame::Batch(v) => v,
            Frame::Incomplete { needed } => {
                return Err(FormatError::Truncated {
                    have: rest.len(),
                    needed,
                });
            }
            Frame::Zeroed => return Err(FormatError::Corrupt(Corruption::BadMagic(0))),
            Frame::Corrupt(c) => return Err(FormatError::Corrupt(c)),
        };
        let header = *view.header();
        let stored_len = BATCH_HEADER_BYTES + view.bytes().len() - header.header_len();
        if stored_len > MAX_BATCH_BYTES {
            // An older version's batch that would not fit the format once stored as the current.
            return Err(FormatError::Corrupt(Corruption::BadLength(header.length)));
        }
        if header.attributes & !allowed_attributes != 0 {
            return Err(FormatError::UnsupportedAttributes(header.attributes));
        }
        check_producer_stamp(&header, view.bytes())?;
        let v1_first_timestamp = BatchHeader::v1_first_timestamp_ms(view.bytes());
        let mut walked = header.header_len();
        let mut max_ts = i64::MIN;
        for (index, rec) in (0u32..).zip(view.records()) {
            let rec = rec.map_err(FormatError::Corrupt)?;
            let size = rec.encoded_len();
            if size > max_record_bytes {
                return Err(FormatError::RecordTooLarge {
                    index,
                    size,
                    max: max_record_bytes,
                });
            }
            if rec.offset != header.base_offset + u64::from(index) {
                return Err(FormatError::Corrupt(Corruption::BadRecords));
            }
            if index == 0 && v1_first_timestamp.is_some_and(|ts| ts != rec.timestamp_ms) {
                return Err(FormatError::Corrupt(Corruption::BadRecords));
            }
            if rec
                .headers()
                .any(|(name, _)| std::str::from_utf8(name).is_err())
            {
                return Err(FormatError::Corrupt(Corruption::BadRecords));
            }
            max_ts = max_ts.max(rec.timestamp_ms);
            walked += size;
        }
        if walked != view.bytes().len() || max_ts != header.max_timestamp_ms {
            return Err(FormatError::Corrupt(Corruption::BadRecords));
        }
        out.push(ValidatedBatch {
            header,
            bytes: view.bytes(),
            body_crc,
        });
        rest = &rest[view.bytes().len()..];
    }
    if out.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(out)
}

/// A batch without a producer has zero epoch and sequence; a producer's batch numbers its records
/// within a u32.
fn check_producer_stamp(header: &BatchHeader, bytes: &[u8]) -> Result<(), FormatError> {
    match header.producer {
        Some(stamp) if stamp.last_sequence(header.record_count).is_none() => Err(
            FormatError::BadProducerStamp("the records' sequence numbers run past 2^32 - 1"),
        ),
        None if read_u16(bytes, field::PRODUCER_EPOCH) != 0
            || read_u32(bytes, field::BASE_SEQUENCE) != 0 =>
        {
            Err(FormatError::BadProducerStamp(
                if header.version == BATCH_VERSION_V1 {
                    "a version-1 batch has no producer: its reserved bytes 14..16 and 44..48 must be 0"
                } else {
                    "epoch and sequence must be 0 when the producer id is 0"
                },
            ))
        }
        Some(_) | None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{BatchBuilder, decode_frame};

    fn batch(values: &[&[u8]]) -> Vec<u8> {
        batch_in(values, BATCH_VERSION)
    }

    /// A batch of `values` in format `version` (record `i` stamped `i` ms).
    fn batch_in(values: &[&[u8]], version: u8) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        for (i, v) in values.iter().enumerate() {
            b.push_parts(i as i64, Some(b"key"), v, [(&b"n"[..], &b"v"[..])]);
        }
        b.finish_in_version(0, version)
    }

    #[test]
    fn restamping_keeps_the_batch_valid() {
        let bytes = batch(&[b"a", b"bb"]);
        let v = validate_batch(&bytes, 1024).unwrap();
        let head = v[0].restamped_header(5000, 7, 12);
        let mut whole = head.to_vec();
        whole.extend_from_slice(v[0].body());
        assert_eq!(whole.len(), v[0].stored_len());
        let Frame::Batch(view) = decode_frame(&whole) else {
            panic!("restamped batch does not decode")
        };
        assert_eq!(view.header().base_offset, 5000);
        assert_eq!(view.header().term, 7);
        assert_eq!(view.header().raft_index, 12);
        let offsets: Vec<u64> = view.records().map(|r| r.unwrap().offset).collect();
        assert_eq!(offsets, vec![5000, 5001]);
    }

    #[test]
    fn older_versions_are_stored_as_the_current_one_with_their_records_unchanged() {
        let current = batch(&[b"a", b"bb"]);
        for version in [3, 2, 1] {
            let sent = batch_in(&[b"a", b"bb"], version);
            let v = validate_batch(&sent, 1024).unwrap();
            assert_eq!(v[0].header().version, version);
            assert_eq!(
                v[0].header().raft_index,
                0,
                "no Raft index before version 4"
            );
            if version < 3 {
                assert_eq!(v[0].header().term, 0, "no term before version 3");
            }
            assert_eq!(v[0].stored_len(), current.len(), "version {version}");
            let mut stored = v[0].restamped_header(40, 3, 9).to_vec();
            stored.extend_from_slice(v[0].body());
            let Frame::Batch(view) = decode_frame(&stored) else {
                panic!("a version-{version} batch restamped does not decode")
            };
            let h = view.header();
            assert_eq!(
                (h.version, h.term, h.raft_index, h.base_offset),
                (BATCH_VERSION, 3, 9, 40)
            );
            assert_eq!(h.producer, None, "version {version}");
            assert_eq!(
                &stored[BATCH_HEADER_BYTES..],
                &current[BATCH_HEADER_BYTES..]
            );
        }
    }

    #[test]
    fn a_flipped_bit_fails_validation() {
        let bytes = batch(&[b"abc", b"def"]);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x04;
            assert!(validate_batch(&b, 1024).is_err(), "flip at byte {i} passed");
        }
    }

    /// `batch` with `bytes` written at `at` and its CRC made right again.
    fn with_crc(mut batch: Vec<u8>, at: usize, bytes: &[u8]) -> Vec<u8> {
        batch[at..at + bytes.len()].copy_from_slice(bytes);
        let crc = super::super::batch_crc(&batch);
        batch[..4].copy_from_slice(&crc.to_le_bytes());
        batch
    }

    #[test]
    fn version_1_batches_still_read_and_validate_without_a_producer() {
        let v1 = batch_in(&[b"a", b"b"], BATCH_VERSION_V1);
        let valid = validate_batch(&v1, 1024).expect("a version-1 batch validates");
        assert_eq!(valid[0].header().version, 1);
        assert_eq!(valid[0].header().producer, None);
        let Frame::Batch(view) = decode_frame(&v1) else {
            panic!("a version-1 batch decodes")
        };
        assert_eq!(view.records().count(), 2);
        // Version 1's first timestamp must match its first record.
        assert_eq!(
            validate_batch(
                &with_crc(v1, field::FIRST_TIMESTAMP_V1, &5i64.to_le_bytes()),
                1024
            ),
            Err(FormatError::Corrupt(Corruption::BadRecords))
        );
    }

    #[test]
    fn producer_fields_that_do_not_add_up_are_refused() {
        use crate::record::ProducerStamp;
        let mut b = BatchBuilder::default();
        b.push_parts(1, None, b"a", []);
        b.push_parts(1, None, b"b", []);
        let overflowing = b.finish_stamped(
            0,
            Some(ProducerStamp {
                producer_id: 3,
                epoch: 0,
                base_sequence: u32::MAX,
            }),
        );
        assert!(matches!(
            validate_batch(&overflowing, 1024),
            Err(FormatError::BadProducerStamp(_))
        ));
        // No producer, but a sequence.
        let stray = with_crc(batch(&[b"a"]), field::BASE_SEQUENCE, &[1]);
        assert!(matches!(
            validate_batch(&stray, 1024),
            Err(FormatError::BadProducerStamp(_))
        ));
    }

    #[test]
    fn a_version_1_batch_with_reserved_bytes_set_is_refused() {
        let v1 = batch_in(&[b"a"], BATCH_VERSION_V1);
        for at in [field::PRODUCER_EPOCH, field::BASE_SEQUENCE + 3] {
            let b = with_crc(v1.clone(), at, &[1]);
            let err = validate_batch(&b, 1024).expect_err("reserved bytes set");
            assert!(
                matches!(err, FormatError::BadProducerStamp(m) if m.contains("reserved bytes")),
                "byte {at}: {err}"
            );
        }
    }

    #[test]
    fn the_record_limit_counts_the_encoded_record() {
        let record = crate::record::Record {
            timestamp_ms: 0,
            key: Some(bytes::Bytes::from_static(b"key")),
            value: bytes::Bytes::from_static(b"value"),
            headers: vec![crate::record::Header {
                name: "n".into(),
                value: bytes::Bytes::from_static(b"v"),
            }],
        };
        let size = record.encoded_len();
        assert_eq!(
            size,
            28 + 3 + 5 + (6 + 1 + 1),
            "docs/FORMAT.md's record size"
        );
        let mut b = BatchBuilder::default();
        b.push(&record);
        let bytes = b.finish(0);
        assert!(validate_batch(&bytes, size).is_ok());
        assert_eq!(
            validate_batch(&bytes, size - 1),
            Err(FormatError::RecordTooLarge {
                index: 0,
                size,
                max: size - 1
            })
        );
    }

    #[test]
    fn several_batches_back_to_back_are_split() {
        let mut both = batch(&[b"a"]);
        both.extend(batch(&[b"b", b"c"]));
        let v = validate_batch(&both, 1024).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].record_count(), 2);
    }

    #[test]
    fn oversized_empty_and_torn_batches_are_refused() {
        let bytes = batch(&[&[7u8; 100]]);
        assert!(matches!(
            validate_batch(&bytes, 50),
            Err(FormatError::RecordTooLarge { index: 0, .. })
        ));
        assert_eq!(validate_batch(&[], 50), Err(FormatError::Empty));
        assert!(matches!(
            validate_batch(&bytes[..bytes.len() - 3], 1000),
            Err(FormatError::Truncated { .. })
        ));
        assert!(matches!(
            validate_batch(&BatchBuilder::default().finish(0), 1000),
            Err(FormatError::Corrupt(Corruption::BadRecords))
        ));
    }
}
