//! Property tests of the record-batch format: decoding arbitrary bytes never panics, and a built
//! batch decodes back to the records it was built from.
#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

use bytes::Bytes;
use proptest::prelude::*;
use strata::record::{
    BATCH_HEADER_BYTES, BATCH_HEADER_BYTES_V2, BATCH_MAGIC, BATCH_VERSION, BatchBuilder, Frame,
    Header, ProducerStamp, Record, batch_crc, decode_frame, header_bytes, validate_batch,
};

/// Walks everything a decoded buffer offers, the way the storage engine, the server and the
/// client do. Its only job is not to panic.
fn exercise(buf: &[u8]) {
    let mut rest = buf;
    while let Frame::Batch(b) = decode_frame(rest) {
        let h = *b.header();
        let _ = (h.last_offset(), h.next_offset());
        for r in b.records() {
            let Ok(r) = r else { break };
            let _ = (r.offset, r.timestamp_ms, r.key, r.value, r.encoded_len());
            let _ = r.headers().count();
        }
        rest = &rest[b.bytes().len()..];
    }
    if let Ok(batches) = validate_batch(buf, 1 << 20) {
        for v in batches {
            let _ = v.record_count();
            let mut restamped = v.restamped_header(12_345, 9, 77).to_vec();
            restamped.extend_from_slice(v.body());
            let Frame::Batch(stored) = decode_frame(&restamped) else {
                panic!("a validated batch no longer decodes once restamped");
            };
            assert_eq!((stored.header().term, stored.header().raft_index), (9, 77));
            assert_eq!(stored.records().count(), v.record_count() as usize);
        }
    }
}

/// Overwrites the CRC so that the bytes pass the checksum and decoding goes past it.
fn fix_crc(buf: &mut [u8]) {
    if buf.len() >= BATCH_HEADER_BYTES_V2 {
        let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
        let end = len.clamp(BATCH_HEADER_BYTES_V2, buf.len());
        let crc = batch_crc(&buf[..end]);
        buf[..4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A header with the right magic, version and length over an arbitrary body, and arbitrary
/// offsets, timestamps and record count: the CRC is fixed up so the records get walked.
fn plausible_batch() -> impl Strategy<Value = Vec<u8>> {
    (
        prop_oneof![any::<u64>(), (u64::MAX - 4)..=u64::MAX],
        any::<i64>(),
        any::<i64>(),
        prop_oneof![0..4u32, any::<u32>()],
        any::<u8>(),
        raw_records(),
        1..=BATCH_VERSION,
        any::<u64>(),
    )
        .prop_map(
            |(base, first_ts, max_ts, count, attributes, body, version, term)| {
                let header_len = header_bytes(version).unwrap();
                let mut buf = vec![0u8; header_len];
                if header_len == BATCH_HEADER_BYTES {
                    buf[48..56].copy_from_slice(&term.to_le_bytes());
                }
                buf.extend_from_slice(&body);
                let len = buf.len() as u32;
                buf[4..8].copy_from_slice(&len.to_le_bytes());
                buf[8..12].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
                buf[12] = version;
                buf[13] = attributes % 3;
                buf[16..24].copy_from_slice(&base.to_le_bytes());
                buf[24..32].copy_from_slice(&first_ts.to_le_bytes());
                buf[32..40].copy_from_slice(&max_ts.to_le_bytes());
                buf[40..44].copy_from_slice(&count.to_le_bytes());
                fix_crc(&mut buf);
                buf
            },
        )
}

/// A length field that is usually right and sometimes anything at all.
fn len_field(actual: usize) -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => Just(actual as u32),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
        1 => (0..8u32).prop_map(move |d| (actual as u32).wrapping_add(d).wrapping_sub(4)),
    ]
}

/// Record bodies laid out as the format says, with each length field possibly wrong.
fn raw_records() -> impl Strategy<Value = Vec<u8>> {
    let record = (
        prop_oneof![0..4u32, any::<u32>()],
        any::<i64>(),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::collection::vec(any::<u8>(), 0..16),
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<u8>(), 0..4),
                proptest::collection::vec(any::<u8>(), 0..4),
            ),
            0..3,
        ),
    )
        .prop_flat_map(|(delta, ts, key, value, headers)| {
            let key_len = key.as_ref().map_or(u32::MAX, |k| k.len() as u32);
            let header_bytes: usize = headers.iter().map(|(n, v)| 6 + n.len() + v.len()).sum();
            let body_len = 24 + key.as_ref().map_or(0, Vec::len) + value.len() + header_bytes;
            (
                len_field(body_len),
                Just(delta),
                Just(ts),
                prop_oneof![4 => Just(key_len), 1 => any::<u32>()],
                Just(key),
                len_field(value.len()),
                Just(value),
                len_field(headers.len()),
                Just(headers),
            )
        })
        .prop_map(
            |(rec_len, delta, ts, key_len, key, value_len, value, count, headers)| {
                let mut out = Vec::new();
                out.extend_from_slice(&rec_len.to_le_bytes());
                out.extend_from_slice(&delta.to_le_bytes());
                out.extend_from_slice(&ts.to_le_bytes());
                out.extend_from_slice(&key_len.to_le_bytes());
                out.extend_from_slice(key.as_deref().unwrap_or_default());
                out.extend_from_slice(&value_len.to_le_bytes());
                out.extend_from_slice(&value);
                out.extend_from_slice(&count.to_le_bytes());
                for (name, v) in headers {
                    out.extend_from_slice(&(name.len() as u16).to_le_bytes());
                    out.extend_from_slice(&name);
                    out.extend_from_slice(&(v.len() as u32).to_le_bytes());
                    out.extend_from_slice(&v);
                }
                out
            },
        );
    proptest::collection::vec(record, 0..4).prop_map(|v| v.concat())
}

fn record() -> impl Strategy<Value = Record> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..32)),
        proptest::collection::vec(any::<u8>(), 0..256),
        proptest::collection::vec(
            ("\\PC{0,12}", proptest::collection::vec(any::<u8>(), 0..16)),
            0..4,
        ),
        any::<i64>(),
    )
        .prop_map(|(key, value, headers, timestamp_ms)| Record {
            key: key.map(Bytes::from),
            value: Bytes::from(value),
            headers: headers
                .into_iter()
                .map(|(name, value)| Header {
                    name,
                    value: Bytes::from(value),
                })
                .collect(),
            timestamp_ms,
        })
}

fn build(records: &[Record], base: u64) -> Vec<u8> {
    build_stamped(records, base, None)
}

fn build_stamped(records: &[Record], base: u64, producer: Option<ProducerStamp>) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for r in records {
        b.push(r);
    }
    b.finish_stamped(base, producer)
}

/// A producer stamp whose sequences fit the batch, or none.
fn stamp() -> impl Strategy<Value = Option<ProducerStamp>> {
    proptest::option::of((1..u64::MAX, any::<u16>(), 0..u32::MAX - 64).prop_map(
        |(producer_id, epoch, seq)| ProducerStamp {
            producer_id,
            epoch,
            base_sequence: seq,
        },
    ))
}

/// The records of a decoded batch, owned.
fn decoded(bytes: &[u8]) -> Vec<(u64, Record)> {
    let Frame::Batch(b) = decode_frame(bytes) else {
        panic!("a built batch does not decode: {:?}", decode_frame(bytes));
    };
    b.records()
        .map(|r| {
            let r = r.expect("a built record decodes");
            let record = Record {
                key: r.key.map(Bytes::copy_from_slice),
                value: Bytes::copy_from_slice(r.value),
                headers: r
                    .headers()
                    .map(|(name, value)| Header {
                        name: String::from_utf8(name.to_vec()).expect("a UTF-8 header name"),
                        value: Bytes::copy_from_slice(value),
                    })
                    .collect(),
                timestamp_ms: r.timestamp_ms,
            };
            (r.offset, record)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&buf);
    }

    #[test]
    fn arbitrary_bytes_with_a_matching_crc_never_panic(
        mut buf in proptest::collection::vec(any::<u8>(), 0..512),
        magic in any::<bool>(),
    ) {
        if magic && buf.len() >= BATCH_HEADER_BYTES_V2 {
            buf[8..12].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
            buf[12] = BATCH_VERSION;
        }
        fix_crc(&mut buf);
        exercise(&buf);
    }

    #[test]
    fn plausible_batches_with_wrong_fields_never_panic(
        batches in proptest::collection::vec(plausible_batch(), 1..3),
    ) {
        exercise(&batches.concat());
    }

    #[test]
    fn a_damaged_built_batch_never_panics_and_is_never_accepted_unchanged(
        records in proptest::collection::vec(record(), 1..6),
        base in any::<u64>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), 0..8u8), 1..4),
        refix_crc in any::<bool>(),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let original = build(&records, base);
        let mut buf = original.clone();
        for (at, bit) in &flips {
            let at = at.index(buf.len());
            buf[at] ^= 1 << bit;
        }
        if refix_crc {
            fix_crc(&mut buf);
        }
        if let Some(cut) = cut {
            buf.truncate(cut.index(buf.len()));
        }
        exercise(&buf);
        if !refix_crc && buf != original {
            prop_assert!(
                !matches!(decode_frame(&buf), Frame::Batch(_)),
                "damaged bytes passed the CRC"
            );
        }
    }

    #[test]
    fn a_batch_in_an_older_version_holds_the_same_records(
        records in proptest::collection::vec(record(), 1..8),
        base in 0..u64::MAX / 2,
        version in 1..BATCH_VERSION,
        term in any::<u64>(),
        index in any::<u64>(),
    ) {
        let mut b = BatchBuilder::default();
        for r in &records {
            b.push(r);
        }
        let old = b.finish_in_version(base, version);
        let current = build(&records, base);
        let Frame::Batch(view) = decode_frame(&old) else {
            panic!("a version-{version} batch does not decode");
        };
        let h = *view.header();
        prop_assert_eq!((h.version, h.term, h.raft_index, h.producer), (version, 0, 0, None));
        prop_assert_eq!(old.len(), current.len() - (BATCH_HEADER_BYTES - header_bytes(version).unwrap()));
        prop_assert_eq!(decoded(&old), decoded(&current));
        // Stored, it is the current version with the same records.
        let largest = records.iter().map(Record::encoded_len).max().unwrap();
        let valid = validate_batch(&old, largest).expect("an older batch validates");
        let mut stored = valid[0].restamped_header(base, term, index).to_vec();
        stored.extend_from_slice(valid[0].body());
        prop_assert_eq!(&stored[BATCH_HEADER_BYTES..], &current[BATCH_HEADER_BYTES..]);
        prop_assert_eq!(decoded(&stored), decoded(&current));
    }

    #[test]
    fn a_built_batch_round_trips(
        records in proptest::collection::vec(record(), 1..12),
        base in 0..u64::MAX / 2,
        restamp in 0..u64::MAX / 2,
        term in any::<u64>(),
        index in any::<u64>(),
        producer in stamp(),
    ) {
        let bytes = build_stamped(&records, base, producer);
        let Frame::Batch(view) = decode_frame(&bytes) else {
            panic!("a built batch does not decode");
        };
        let h = *view.header();
        prop_assert_eq!(h.base_offset, base);
        prop_assert_eq!(h.record_count as usize, records.len());
        prop_assert_eq!(h.length as usize, bytes.len());
        prop_assert_eq!(h.attributes, 0);
        prop_assert_eq!(h.version, BATCH_VERSION);
        prop_assert_eq!(h.producer, producer);
        prop_assert_eq!(
            h.max_timestamp_ms,
            records.iter().map(|r| r.timestamp_ms).max().unwrap()
        );
        prop_assert_eq!(h.next_offset(), base + records.len() as u64);
        prop_assert_eq!(
            bytes.len(),
            BATCH_HEADER_BYTES + records.iter().map(Record::encoded_len).sum::<usize>()
        );
        let got = decoded(&bytes);
        let offsets: Vec<u64> = got.iter().map(|(o, _)| *o).collect();
        let want_offsets: Vec<u64> = (base..base + records.len() as u64).collect();
        prop_assert_eq!(offsets, want_offsets);
        let got_records: Vec<Record> = got.into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(&got_records, &records);

        // The storage path: validate, restamp the header, store header + unchanged records.
        let largest = records.iter().map(Record::encoded_len).max().unwrap();
        let valid = validate_batch(&bytes, largest).expect("a built batch validates");
        prop_assert_eq!(valid.len(), 1);
        let mut stored = valid[0].restamped_header(restamp, term, index).to_vec();
        stored.extend_from_slice(valid[0].body());
        prop_assert_eq!(&stored[BATCH_HEADER_BYTES..], &bytes[BATCH_HEADER_BYTES..]);
        let restamped = decoded(&stored);
        prop_assert_eq!(restamped[0].0, restamp);
        let Frame::Batch(stored_view) = decode_frame(&stored) else {
            panic!("a restamped batch does not decode");
        };
        prop_assert_eq!(stored_view.header().producer, producer, "restamping keeps the producer");
        prop_assert_eq!((stored_view.header().term, stored_view.header().raft_index), (term, index));
        let restamped_records: Vec<Record> = restamped.into_iter().map(|(_, r)| r).collect();
        prop_assert_eq!(&restamped_records, &records);
        if largest > 0 {
            prop_assert!(validate_batch(&bytes, largest - 1).is_err());
        }
    }
}
