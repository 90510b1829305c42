//! Recovery with damaged state files: a partition log of several segments is written and closed
//! once; each input then copies it to a fresh directory, keeps, removes, replaces with fuzzed
//! bytes or bit-flips each index file, the checkpoint and the clean-shutdown marker (the segments
//! themselves stay intact), and opens it. The open must succeed and every record must be read back
//! exactly as written, timestamp lookups must answer, and the next append must take the next
//! offset. Only a fuzzed checkpoint that passes its CRC yet lies may hide records (the checkpoint is
//! trusted by design): then whatever is read must still be what was written at that offset.

#![no_main]

use libfuzzer_sys::{
    arbitrary::{Result, Unstructured},
    fuzz_target,
};
use std::{collections::BTreeMap, path::Path, sync::OnceLock};
use strata::{
    record::{BatchBuilder, Frame, decode_frame, validate_batch},
    storage::{FsyncPolicy, Log, LogConfig, fuzzing::decode_checkpoint},
};

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 4096,
        segment_max_ms: None,
        retention_ms: None,
        retention_bytes: None,
        fsync: FsyncPolicy::Never,
        index_interval_bytes: 256,
        checkpoint_interval_bytes: 2048,
        cached_tail_bytes: None,
        ..LogConfig::default()
    }
}

/// The pristine log: its files, and the value of every offset.
struct Pristine {
    files: BTreeMap<String, Vec<u8>>,
    values: Vec<Vec<u8>>,
}

fn scratch_root() -> &'static Path {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm } else { Path::new("/tmp") }
}

fn pristine() -> &'static Pristine {
    static PRISTINE: OnceLock<Pristine> = OnceLock::new();
    PRISTINE.get_or_init(|| {
        let dir = tempfile::tempdir_in(scratch_root()).expect("temp dir");
        let log = Log::open(dir.path(), config()).expect("open a new log");
        let mut values = Vec::new();
        for b in 0..40u64 {
            let mut builder = BatchBuilder::default();
            for r in 0..1 + b % 4 {
                let value = vec![b as u8; (50 + 37 * (b + r) % 400) as usize];
                // Timestamps mostly grow, with a step back now and then.
                let ts = 1_000 * b as i64 + if b % 7 == 3 { -5_000 } else { r as i64 };
                builder.push_parts(ts, None, &value, []);
                values.push(value);
            }
            let bytes = builder.finish(0);
            let batches = validate_batch(&bytes, usize::MAX).expect("a valid batch");
            log.append_batches(&batches).expect("append");
        }
        log.close().expect("close");
        let mut files = BTreeMap::new();
        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            files.insert(name, std::fs::read(entry.path()).expect("read"));
        }
        assert!(files.keys().filter(|n| n.ends_with(".log")).count() > 3);
        Pristine { files, values }
    })
}

/// Writes the pristine files into `dir`, damaging the state files as the input says. Returns
/// whether a fuzzed checkpoint that decodes to something other than the real one was written.
fn damage(u: &mut Unstructured<'_>, dir: &Path) -> Result<bool> {
    let p = pristine();
    let mut lying_checkpoint = false;
    let mut names: Vec<&str> = p.files.keys().map(String::as_str).collect();
    names.push("clean-shutdown");
    for name in names {
        let original = p.files.get(name);
        let path = dir.join(name);
        if name.ends_with(".log") {
            std::fs::write(&path, original.expect("a segment")).expect("write");
            continue;
        }
        let content = match u.int_in_range(0..=5u8)? {
            0 => None,
            1 => {
                let len = u.int_in_range(0..=64)?;
                Some(u.bytes(len)?.to_vec())
            }
            2 => original.map(|o| {
                let mut o = o.clone();
                if let Ok(i) = u.choose_index(o.len().max(1)) {
                    if let Some(b) = o.get_mut(i) {
                        *b ^= 1 << (i % 8);
                    }
                }
                o
            }),
            3 => original.map(|o| o[..o.len() / 2].to_vec()),
            _ => original.cloned(),
        };
        if let Some(content) = content {
            if name == "recovery-point" && Some(&content) != original {
                lying_checkpoint |= decode_checkpoint(&content).is_some();
            }
            std::fs::write(&path, content).expect("write");
        }
    }
    Ok(lying_checkpoint)
}

fuzz_target!(|data: &[u8]| {
    let p = pristine();
    let dir = tempfile::tempdir_in(scratch_root()).expect("temp dir");
    let Ok(lying_checkpoint) = damage(&mut Unstructured::new(data), dir.path()) else {
        return;
    };
    let log = match Log::open(dir.path(), config()) {
        Ok(log) => log,
        Err(e) => panic!("the log did not open with intact segments: {e}"),
    };
    let next = log.next_offset();
    if !lying_checkpoint {
        assert_eq!(next, p.values.len() as u64, "records lost");
    }
    let mut at = log.earliest_offset();
    while at < next {
        let chunk = log.read(at, 1000).expect("a read of an intact segment");
        let mut rest = &chunk.batches[..];
        assert!(
            !rest.is_empty() && chunk.next_offset > at,
            "no progress at {at}"
        );
        while !rest.is_empty() {
            let Frame::Batch(batch) = decode_frame(rest) else {
                panic!("a read returned something that is not a whole batch")
            };
            for record in batch.records() {
                let record = record.expect("a valid record");
                if record.offset >= at {
                    assert_eq!(
                        record.value, p.values[record.offset as usize],
                        "offset {}",
                        record.offset
                    );
                }
            }
            rest = &rest[batch.bytes().len()..];
        }
        at = chunk.next_offset;
    }
    for ts in [-10_000, 0, 2_500, 17_000, 39_001, 1 << 40] {
        if let Some(offset) = log.offset_for_timestamp(ts).expect("a timestamp lookup") {
            assert!(offset <= next);
        }
    }
    let mut builder = BatchBuilder::default();
    builder.push_parts(1, None, b"after", []);
    let bytes = builder.finish(0);
    let appended = log
        .append_batches(&validate_batch(&bytes, usize::MAX).expect("valid"))
        .expect("an append after recovery");
    assert_eq!(appended[0].base_offset, next);
});
