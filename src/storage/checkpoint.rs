//! The recovery point: how far a partition's log is known durable and indexed. Recovery scans
//! only what lies after it.

use super::{Offset, Result, StorageError, fs::Io};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The checkpoint file's name inside a partition directory.
pub(crate) const CHECKPOINT_FILE: &str = "recovery-point";
/// Present only after a clean shutdown: the checkpoint then covers the whole log.
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

const MAGIC: u32 = u32::from_le_bytes(*b"SRCP");
const VERSION: u16 = 1;

/// Everything below `position` in segment `segment_base` (and every segment before it) is durable,
/// and its offset and time indexes are written and synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RecoveryPoint {
    pub segment_base: Offset,
    pub position: u64,
    pub next_offset: Offset,
    pub max_timestamp_ms: i64,
}

pub(crate) fn encode(point: &RecoveryPoint) -> Vec<u8> {
    // Encoding plain integers into a Vec cannot fail; an empty file would read back as invalid.
    super::checked::encode(MAGIC, VERSION, point).unwrap_or_default()
}

/// Decodes a checkpoint; any damage is an error (the caller falls back to a wider scan).
pub(crate) fn decode(bytes: &[u8], path: &Path) -> Result<RecoveryPoint> {
    super::checked::decode(bytes, MAGIC, VERSION).map_err(|reason| StorageError::BadStateFile {
        path: path.to_owned(),
        reason,
    })
}

pub(crate) fn write(io: &Io, dir: &Path, point: &RecoveryPoint) -> Result<()> {
    io.write_atomic(&dir.join(CHECKPOINT_FILE), &encode(point))
}

/// Reads the checkpoint. `Ok(None)` if there is none; `Err` if it is damaged.
pub(crate) fn read(dir: &Path) -> Result<Option<RecoveryPoint>> {
    let path = dir.join(CHECKPOINT_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => decode(&bytes, &path).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StorageError::io("read", path, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_round_trips_and_any_flip_is_refused() {
        let p = RecoveryPoint {
            segment_base: 10,
            position: 4096,
            next_offset: 77,
            max_timestamp_ms: 123_456,
        };
        let bytes = encode(&p);
        assert_eq!(decode(&bytes, Path::new("x")).unwrap(), p);
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            assert_ne!(decode(&b, Path::new("x")).ok(), Some(p), "flip at {i}");
        }
        assert!(decode(&bytes[..bytes.len() - 1], Path::new("x")).is_err());
    }
}
