//! Producer ids for idempotent producers: unique for the life of the data directory. They are
//! handed out from blocks whose end is recorded durably (`producer-ids`) before the block's first
//! id is given, so a crash skips the rest of a block and never gives an id twice.

use super::{BrokerError, Result};
use crate::storage::Io;
use serde::{Deserialize, Serialize};
use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

/// The file in the data directory.
pub(crate) const PRODUCER_IDS_FILE: &str = "producer-ids";
const FILE_VERSION: u32 = 1;
/// Ids reserved per durable write.
const BLOCK: u64 = 1000;

#[derive(Debug, Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    /// Every id below this may have been given out.
    reserved_below: u64,
}

#[derive(Debug)]
struct Range {
    next: u64,
    reserved_below: u64,
}

/// The allocator (see the module docs).
#[derive(Debug)]
pub(crate) struct ProducerIds {
    path: PathBuf,
    range: Mutex<Range>,
}

impl ProducerIds {
    /// Reads the reservation in `data_dir`. A damaged file cannot say which ids were given: the
    /// ids then continue from the clock (microseconds since the epoch, far above any count of
    /// ids a broker gives), which no earlier id can have reached.
    pub(crate) fn open(data_dir: &Path) -> Result<ProducerIds> {
        let path = data_dir.join(PRODUCER_IDS_FILE);
        let reserved_below = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<OnDisk>(&bytes) {
                Ok(d) if d.version == FILE_VERSION && d.reserved_below >= 1 => d.reserved_below,
                Ok(_) | Err(_) => {
                    let from_clock = u64::try_from(crate::record::now_ms())
                        .unwrap_or(0)
                        .saturating_mul(1000);
                    tracing::error!(
                        path = %path.display(),
                        next_id = from_clock,
                        "damaged producer id reservation; continuing from the clock"
                    );
                    from_clock
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 1,
            Err(e) => return Err(BrokerError::io("read", &path, e)),
        };
        Ok(ProducerIds {
            path,
            range: Mutex::new(Range {
                next: reserved_below,
                reserved_below,
            }),
        })
    }

    /// A new producer id, never 0 and never given before.
    pub(crate) fn allocate(&self, io: &Io) -> Result<u64> {
        let mut range = self
            .range
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if range.next >= range.reserved_below {
            let reserved_below = range.next.saturating_add(BLOCK);
            let json = serde_json::to_vec(&OnDisk {
                version: FILE_VERSION,
                reserved_below,
            })
            .map_err(|e| BrokerError::BadStateFile {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            io.write_atomic(&self.path, &json)
                .map_err(BrokerError::file)?;
            range.reserved_below = reserved_below;
        }
        let id = range.next;
        range.next += 1;
        Ok(id)
    }

    /// Whether `id` may have been given out by this data directory.
    pub(crate) fn was_given(&self, id: u64) -> bool {
        let range = self
            .range
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        id != 0 && id < range.next.max(range.reserved_below)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_never_given_twice_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::new(None);
        let ids = ProducerIds::open(dir.path()).unwrap();
        let a = ids.allocate(&io).unwrap();
        let b = ids.allocate(&io).unwrap();
        assert_eq!((a, b), (1, 2));
        assert!(ids.was_given(2) && !ids.was_given(0));
        // A crash: the rest of the block is skipped.
        let again = ProducerIds::open(dir.path()).unwrap();
        let c = again.allocate(&io).unwrap();
        assert_eq!(c, 1 + BLOCK);
        std::fs::write(dir.path().join(PRODUCER_IDS_FILE), b"{garbage").unwrap();
        let damaged = ProducerIds::open(dir.path()).unwrap();
        assert!(damaged.allocate(&io).unwrap() > c);
    }
}
