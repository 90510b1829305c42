//! The recovery checkpoint loader on any bytes: it refuses or decodes without panicking, and what
//! it decodes encodes back to the same bytes (no two files mean the same checkpoint).

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::fuzzing::{decode_checkpoint, encode_checkpoint};

fuzz_target!(|data: &[u8]| {
    if let Some((segment_base, position, next_offset, max_timestamp_ms)) = decode_checkpoint(data) {
        let again = encode_checkpoint(segment_base, position, next_offset, max_timestamp_ms);
        assert_eq!(
            again, data,
            "a checkpoint decoded from bytes it would not write"
        );
    }
});
