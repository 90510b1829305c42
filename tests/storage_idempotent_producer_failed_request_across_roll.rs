//! An idempotent producer's request that a roll splits and whose last batch then fails (ENOSPC):
//! the batches sealed by the roll stay, and so does what the producer table knows of them; the
//! ones after the roll are taken back, table included. The producer's resend of the whole
//! request is then stored exactly once: the sealed batches answered with their offsets, the
//! others appended. Both shapes: the roll by a batch before the failing one, and by the failing
//! batch itself.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common {
    pub mod faults;
    pub mod storage;
}

use common::faults::{ENOSPC, Fault, Script};
use common::storage::{read_all, small_config};
use strata::record::{BatchBuilder, ProducerStamp, validate_batch};
use strata::storage::{FileOp, Log, LogConfig};

/// Batch `i` of producer 1: one record of 1,500 bytes at sequence `i` (two fit in a 4 KiB
/// segment, a third does not).
fn batch(i: u32) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    let mut value = format!("record-{i}-").into_bytes();
    value.resize(1_500, b'x');
    b.push_parts(1, None, &value, []);
    b.finish_stamped(
        0,
        Some(ProducerStamp {
            producer_id: 1,
            epoch: 0,
            base_sequence: i,
        }),
    )
}

/// Sends `batches` as one request.
fn request(log: &Log, batches: &[Vec<u8>]) -> Result<Vec<u64>, strata::storage::StorageError> {
    let owned: Vec<u8> = batches.concat();
    let valid = validate_batch(&owned, 1 << 20).unwrap();
    log.append_batches(&valid)
        .map(|v| v.iter().map(|a| a.base_offset).collect())
}

fn values(log: &Log) -> Vec<String> {
    read_all(log, 0)
        .unwrap()
        .into_iter()
        .map(|(_, v)| {
            String::from_utf8(v).unwrap()[..9]
                .trim_end_matches('-')
                .to_string()
        })
        .collect()
}

/// A request of `count` batches whose write number `failing` (0-based) fails with ENOSPC; then
/// the same request again.
fn split_request_fails_then_resend_is_stored_once(count: u32, failing: usize, sealed: usize) {
    let dir = tempfile::tempdir().unwrap();
    let script = Script::new();
    let config = LogConfig {
        faults: Some(script.as_injector()),
        ..small_config()
    };
    let log = Log::open(dir.path(), config).unwrap();
    let batches: Vec<Vec<u8>> = (0..count).map(batch).collect();
    script.fail_after(FileOp::Write, ".log", Fault::Errno(ENOSPC), failing, 1);
    request(&log, &batches).unwrap_err();
    script.heal();
    assert_eq!(
        log.next_offset(),
        sealed as u64,
        "the batches sealed by the roll stay, the rest is taken back"
    );

    let offsets = request(&log, &batches).unwrap();
    assert_eq!(
        offsets,
        (0..u64::from(count)).collect::<Vec<_>>(),
        "each batch at the offset that follows"
    );
    let want: Vec<String> = (0..count).map(|i| format!("record-{i}")).collect();
    assert_eq!(values(&log), want, "every record once, in order");
    drop(log);
    let log = Log::open(dir.path(), small_config()).unwrap();
    assert_eq!(values(&log), want);
    // And the producer goes on at the next sequence.
    let next = request(&log, &[batch(count)]).unwrap();
    assert_eq!(next, [u64::from(count)]);
}

#[test]
fn a_roll_by_an_earlier_batch_then_a_failed_write() {
    // Batches 0 and 1 fill the first segment; batch 2 rolls and is written; batch 3 fails.
    split_request_fails_then_resend_is_stored_once(4, 3, 2);
}

#[test]
fn a_roll_by_the_failing_batch_itself() {
    // Batches 0 and 1 fill the first segment; batch 2 rolls, then its write fails.
    split_request_fails_then_resend_is_stored_once(3, 2, 2);
}
