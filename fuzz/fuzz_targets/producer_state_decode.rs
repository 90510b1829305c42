//! The producer-state snapshot loader on any bytes: it refuses or decodes without panicking, and
//! what it decodes encodes back to the same bytes (no two files mean the same table).

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::fuzzing::reencode_producer_state;

fuzz_target!(|data: &[u8]| {
    if let Some((_, again)) = reencode_producer_state(data) {
        assert_eq!(
            again, data,
            "a producer snapshot decoded from bytes it would not write"
        );
    }
});
