//! The offset and time index loaders on any bytes: loading, the sanity checks recovery runs, and
//! lookups never panic, and a lookup in an index that passed the checks lands on an entry at or
//! before what was asked. (`log_open_damaged_state` runs the same loaders inside a real open.)

#![no_main]

use libfuzzer_sys::fuzz_target;
use strata::storage::fuzzing::load_indexes;

fuzz_target!(|data: &[u8]| {
    if data.len() < 24 {
        return;
    }
    let (params, rest) = data.split_at(24);
    let word =
        |i: usize| u32::from_le_bytes([params[i], params[i + 1], params[i + 2], params[i + 3]]);
    let size = u64::from(word(0));
    let offsets = u64::from(word(4));
    let rel_offset = word(8);
    let timestamp_ms = i64::from(word(12) as i32) * i64::from(word(16) % 1000 + 1);
    let split = (word(20) as usize) % (rest.len() + 1);
    let (offset_index, time_index) = rest.split_at(split);

    let found = load_indexes(
        offset_index,
        time_index,
        size,
        offsets,
        rel_offset,
        timestamp_ms,
    );
    // Lookups binary-search: their answers are only meaningful in sorted indexes, which is what
    // the checks ensure (an index that fails them is rebuilt, never searched).
    if !found.sane {
        return;
    }
    if let Some((rel, position)) = found.floor {
        assert!(rel <= rel_offset, "floor({rel_offset}) gave entry {rel}");
        assert!(u64::from(position) < size);
    }
    if let Some((ts, _)) = found.scan_start {
        assert!(
            ts < timestamp_ms,
            "scan_start({timestamp_ms}) gave an entry at {ts}"
        );
    }
});
