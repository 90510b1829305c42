//! The journal replay (group offsets) on any bytes: it never panics, the entries it returns are
//! exactly the bytes of the prefix it accepted (re-framed, they give that prefix back), and a
//! clean end means it accepted everything.

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::fuzzing::{JournalTail, decode_journal, encode_journal_entry};

fuzz_target!(|data: &[u8]| {
    let (entries, valid, tail) = decode_journal(data);
    assert!(valid <= data.len());
    let again: Vec<u8> = entries
        .iter()
        .flat_map(|e| encode_journal_entry(e))
        .collect();
    assert_eq!(
        again,
        &data[..valid],
        "entries do not re-frame to the accepted prefix"
    );
    assert!(
        entries.iter().all(|e| !e.is_empty()),
        "an empty entry was accepted"
    );
    if tail == JournalTail::Clean {
        assert_eq!(valid, data.len(), "a clean end left bytes unread");
    }
    if tail == JournalTail::Torn && data[valid..].iter().any(|&b| b != 0) {
        // A torn tail with data is a header, or a header with a short payload.
        let rest = &data[valid..];
        assert!(
            rest.len() < 8 || {
                let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                rest.len() - 8 < len
            },
            "a whole entry was called torn"
        );
    }
});
