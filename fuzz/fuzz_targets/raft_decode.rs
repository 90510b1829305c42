//! What a replica decodes for Raft, on any bytes: the `raft-state` file (refused or decoded
//! without panicking, and what it decodes encodes back to the same bytes), and a stored batch read
//! as an entry (a control batch's payload, a producer batch): refused or decoded, and a decoded
//! payload stored again reads back the same.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::replication::fuzzing::{reencode_raft_state, roundtrip_entry};

fuzz_target!(|data: &[u8]| {
    if let Some(again) = reencode_raft_state(data) {
        assert_eq!(
            again, data,
            "a raft-state decoded from bytes it would not write"
        );
    }
    if let Some((payload, back)) = roundtrip_entry(data) {
        assert_eq!(
            payload, back,
            "an entry's payload changed when stored again"
        );
    }
});
