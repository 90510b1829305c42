//! The batch decoder on any bytes: `decode_frame` names a state and never panics, a batch's
//! records either decode or report corruption, and whatever `validate_batch` accepts decodes
//! record by record and stays valid when restamped with a new base offset.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::record::{BATCH_HEADER_BYTES, Frame, decode_frame, validate_batch};

fuzz_target!(|data: &[u8]| {
    if let Frame::Batch(view) = decode_frame(data) {
        assert!(view.bytes().len() <= data.len());
        for record in view.records() {
            match record {
                Ok(r) => {
                    let _ = r.headers().count();
                    assert!(r.encoded_len() <= view.bytes().len());
                }
                Err(_) => break,
            }
        }
    }

    // The first byte picks the record size limit, so that the limit's checks are reached too.
    let max_record_bytes = data.first().map_or(0, |&b| usize::from(b) * 16);
    let Ok(batches) = validate_batch(data, max_record_bytes) else {
        return;
    };
    let total: usize = batches.iter().map(|b| b.bytes().len()).sum();
    assert_eq!(
        total,
        data.len(),
        "validated batches cover the buffer exactly"
    );
    for batch in &batches {
        let Frame::Batch(view) = decode_frame(batch.bytes()) else {
            panic!("a validated batch does not decode")
        };
        let records: Vec<_> = view.records().collect();
        assert_eq!(records.len(), batch.record_count() as usize);
        assert!(
            records.iter().all(Result::is_ok),
            "a validated batch has a bad record"
        );

        let mut restamped = batch.restamped_header(1_000_000, 7, 9).to_vec();
        restamped.extend_from_slice(batch.body());
        assert_eq!(restamped.len(), batch.stored_len());
        assert_eq!(restamped.len(), batch.body().len() + BATCH_HEADER_BYTES);
        let again = validate_batch(&restamped, max_record_bytes).expect("restamped batch valid");
        assert_eq!(again[0].header().base_offset, 1_000_000);
        assert_eq!(again[0].header().term, 7);
        assert_eq!(again[0].header().raft_index, 9);
        assert_eq!(again[0].record_count(), batch.record_count());
    }
});
