//! An idempotent producer's resent batch is appended once, whatever happened to the log between
//! the first send and the resend: other producers' appends, segment rolls, a crash (the log
//! dropped without a close, so the producer snapshot is behind), a clean close, a damaged
//! snapshot. A gap in its sequences and an older epoch are refused and store nothing; a
//! truncation forgets what it cut, so a resend of a cut batch is appended again.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common {
    pub mod storage;
}

use common::storage::{read_all, small_config};
use strata::record::{BatchBuilder, ProducerStamp, validate_batch};
use strata::storage::{Appended, Log, SequenceError, StorageError};

/// A batch of `count` records from producer `id` at `epoch`, first sequence `seq`.
fn batch(id: u64, epoch: u16, seq: u32, count: u32) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for i in 0..count {
        let value = format!("p{id}/e{epoch}/s{}-{}", seq + i, "x".repeat(40));
        b.push_parts(1_000, Some(b"k"), value.as_bytes(), []);
    }
    b.finish_stamped(
        0,
        Some(ProducerStamp {
            producer_id: id,
            epoch,
            base_sequence: seq,
        }),
    )
}

fn send(log: &Log, bytes: &[u8]) -> Result<Appended, StorageError> {
    let valid = validate_batch(bytes, 1 << 20).unwrap();
    log.append(&valid[0])
}

/// Sends `bytes` again and checks it is answered with `first`, appending nothing.
fn resend_is_answered(log: &Log, bytes: &[u8], first: Appended, when: &str) {
    let end = log.next_offset();
    let again = send(log, bytes).unwrap();
    assert_eq!(
        again, first,
        "{when}: a resend gets the offsets of the first send"
    );
    assert_eq!(log.next_offset(), end, "{when}: a resend appends nothing");
}

#[test]
fn a_resent_batch_is_appended_once_across_rolls_crashes_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p");
    let log = Log::open(&path, small_config()).unwrap();

    // Producer 1 and producer 2 interleave; producer 1's batches keep count of sequences.
    let (mut p1_seq, mut p2_seq) = (0, 0);
    let mut sent: Vec<(Vec<u8>, Appended)> = Vec::new();
    for round in 0..80u32 {
        let count = 1 + round % 4;
        let bytes = batch(1, 0, p1_seq, count);
        let appended = send(&log, &bytes).unwrap();
        p1_seq += count;
        sent.push((bytes, appended));
        if round % 3 == 0 {
            send(&log, &batch(2, 0, p2_seq, 1)).unwrap();
            p2_seq += 1;
        }
    }
    assert!(log.stats().segments > 3, "the appends rolled segments");
    assert_eq!(log.stats().producers, 2);
    let (last, last_at) = sent.last().cloned().unwrap();
    resend_is_answered(&log, &last, last_at, "live");
    // An older batch of producer 1, among its last runs (the last few batches are in its last runs).
    let (older, older_at) = sent[sent.len() - 3].clone();
    resend_is_answered(&log, &older, older_at, "live, an older run");

    // A gap and an older epoch store nothing.
    let end = log.next_offset();
    let gap = send(&log, &batch(1, 0, p1_seq + 1, 1)).unwrap_err();
    assert!(
        matches!(
            gap,
            StorageError::Sequence(SequenceError::OutOfOrder { expected, found, .. })
                if expected == u64::from(p1_seq) && found == p1_seq + 1
        ),
        "{gap}"
    );
    assert_eq!(log.next_offset(), end);

    // A crash: the log is dropped without a close; the snapshot is from the last roll.
    drop(log);
    let log = Log::open(&path, small_config()).unwrap();
    resend_is_answered(&log, &last, last_at, "after a crash");
    let next = batch(1, 0, p1_seq, 2);
    let next_at = send(&log, &next).unwrap();
    assert_eq!(next_at.base_offset, end, "the next sequence follows on");
    p1_seq += 2;

    // A clean close: the snapshot is exact, and the open replays nothing.
    log.close().unwrap();
    let log = Log::open(&path, small_config()).unwrap();
    resend_is_answered(&log, &next, next_at, "after a clean close");

    // A new epoch fences the old one, and starts at sequence 0.
    send(&log, &batch(1, 1, 0, 1)).unwrap();
    let fenced = send(&log, &batch(1, 0, p1_seq, 1)).unwrap_err();
    assert!(
        matches!(
            fenced,
            StorageError::Sequence(SequenceError::Fenced { current: 1, .. })
        ),
        "{fenced}"
    );
    let epoch_1 = batch(1, 1, 1, 3);
    let epoch_1_at = send(&log, &epoch_1).unwrap();

    // A damaged snapshot: rebuilt from the active segment, which holds the newest batch.
    log.close().unwrap();
    let snapshot = path.join("producer-state");
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&snapshot, &bytes).unwrap();
    let log = Log::open(&path, small_config()).unwrap();
    resend_is_answered(&log, &epoch_1, epoch_1_at, "after a damaged snapshot");

    // A truncation into the batch forgets it: a resend is a new append.
    let cut = log.truncate(epoch_1_at.base_offset + 1).unwrap();
    assert_eq!(cut, epoch_1_at.base_offset, "the whole batch goes");
    let again = send(&log, &epoch_1).unwrap();
    assert_eq!(again, epoch_1_at, "appended again, at the offsets it had");
    let end = log.next_offset();
    drop(log);

    // After it all, the log holds each of producer 1's sequences at epoch 0 once.
    let log = Log::open(&path, small_config()).unwrap();
    assert_eq!(log.next_offset(), end);
    let values: Vec<String> = read_all(&log, 0)
        .unwrap()
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .filter(|v| v.starts_with("p1/e0/"))
        .collect();
    let mut unique = values.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        values.len(),
        "no record of producer 1 is stored twice"
    );
    assert_eq!(values.len(), p1_seq as usize);
}
