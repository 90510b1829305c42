//! Removing data: retention deletes whole sealed segments, oldest first; truncation cuts the log
//! back to an offset (what a replica does when it diverged from its leader).

use super::{
    Offset, Result,
    checkpoint::{self, RecoveryPoint},
    fs,
    log::{Log, lock, ms_as_i64, now_ms},
    segment::{Indexer, Segment, segment_path},
};
use std::sync::{Arc, PoisonError};

impl Log {
    /// Deletes sealed segments past retention (by age of their newest record, and by the log's
    /// total size), oldest first. The active segment is never deleted. Returns how many went.
    pub fn apply_retention(&self, now_ms: i64) -> Result<usize> {
        let config = self.config();
        if config.retention_ms.is_none() && config.retention_bytes.is_none() {
            return Ok(0);
        }
        let w = lock(&self.writer);
        let segs = self.segments();
        let mut total = w.sealed_bytes + w.size;
        let mut doomed = 0;
        for (i, seg) in segs.iter().enumerate() {
            let Some(next) = segs.get(i + 1).map(|s| s.base_offset) else {
                break;
            };
            let size = seg.readable_end();
            let too_old = match config.retention_ms {
                Some(ms) => {
                    seg.max_timestamp_ms(&self.io, next)? < now_ms.saturating_sub(ms_as_i64(ms))
                }
                None => false,
            };
            let too_big = config
                .retention_bytes
                .is_some_and(|limit| total - size >= limit);
            if !too_old && !too_big {
                break;
            }
            total -= size;
            doomed += 1;
        }
        self.delete_oldest(w, &segs[..doomed], "retention")
    }

    /// Deletes the sealed segments every offset of which is below `offset` (what a replicated
    /// log purges once its state is snapshotted up to there): whole segments only, so the log's
    /// earliest offset becomes the base of the segment holding `offset`, at most `offset`. The
    /// active segment is never deleted. Returns how many went.
    pub fn purge_before(&self, offset: Offset) -> Result<usize> {
        self.check_poisoned()?;
        let w = lock(&self.writer);
        let segs = self.segments();
        let doomed = segs
            .windows(2)
            .take_while(|pair| pair[1].base_offset <= offset)
            .count();
        self.delete_oldest(w, &segs[..doomed], "purge")
    }

    /// Drops `doomed`, the oldest sealed segments, from the log and then deletes their files.
    fn delete_oldest(
        &self,
        mut w: std::sync::MutexGuard<'_, super::log::Writer>,
        doomed: &[Arc<Segment>],
        why: &str,
    ) -> Result<usize> {
        if doomed.is_empty() {
            return Ok(0);
        }
        let left = {
            let mut segs = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            segs.drain(..doomed.len());
            segs.first().map_or(w.write_offset, |s| s.base_offset)
        };
        w.sealed_bytes -= doomed.iter().map(|s| s.readable_end()).sum::<u64>();
        if left >= w.write_offset {
            // Nothing is left to carry a term or an index: an empty log's are 0, here as after a
            // reopen.
            w.last = super::EntryId::default();
        }
        drop(w);
        for seg in doomed {
            tracing::info!(segment = %seg.path().display(), why, "deleting segment");
            seg.remove_files(&self.io)?;
        }
        self.io.sync_dir(&self.dir)?;
        Ok(doomed.len())
    }

    /// Removes every batch holding an offset >= `offset`. Returns the new next offset (below
    /// `offset` when `offset` falls inside a batch: the whole batch goes). Cutting below the
    /// earliest offset empties the log, which then continues from its earliest offset.
    ///
    /// Readers that already hold data past the cut keep it; the old bytes are never overwritten
    /// in place (the cut segment is rewritten to a new file and renamed over the old one).
    pub fn truncate(&self, offset: Offset) -> Result<Offset> {
        self.check_poisoned()?;
        let config = self.config();
        let mut w = lock(&self.writer);
        if offset >= w.write_offset {
            return Ok(w.write_offset);
        }
        self.remove_clean_marker()?;
        // Make what is written readable, so the cut point is found among all of it.
        self.checkpoint_locked(&mut w)?;
        let segs = self.segments();
        let i = segs
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1);
        let seg = segs[i].clone();
        let seg_next = segs.get(i + 1).map_or(w.write_offset, |s| s.base_offset);
        let (cut, new_next) = if offset <= seg.base_offset {
            (0, seg.base_offset)
        } else {
            seg.position_of(&self.io, offset, seg_next)?
        };
        let base = seg.base_offset;
        // 0. The producers forget the batches that go (a snapshot that still had them would
        //    answer a retry with offsets that are no longer its records).
        w.producers.truncate(new_next);
        w.producers.write(&self.io, &self.dir, new_next)?;

        // 1. A checkpoint that makes recovery rescan segment i from its start, so a crash in
        //    the middle of the steps below can never join a shortened segment to later ones.
        checkpoint::write(
            &self.io,
            &self.dir,
            &RecoveryPoint {
                segment_base: base,
                position: 0,
                next_offset: base,
                max_timestamp_ms: i64::MIN,
            },
        )?;
        // 2. Later segments go, newest first, so that a crash part way leaves them contiguous.
        for later in segs[i + 1..].iter().rev() {
            later.remove_files(&self.io)?;
        }
        self.io.sync_dir(&self.dir)?;
        // 3. The kept prefix of segment i goes to a new file that replaces the old one.
        let capacity = config.segment_max_bytes.max(cut);
        let path = segment_path(&self.dir, base, "log");
        let tmp = fs::tmp_path(&path);
        let prefix = seg.bytes_until(cut)?;
        {
            let file = self.io.open_rw(&tmp, true)?;
            file.set_len(0)
                .map_err(|e| super::StorageError::io("resize", &tmp, e))?;
            self.io.write_all_at(&file, &tmp, &prefix, 0)?;
            self.io.set_len(&file, &tmp, capacity)?;
            self.io.sync_data(&file, &tmp)?;
        }
        self.io.rename(&tmp, &path)?;
        self.io.sync_dir(&self.dir)?;
        // 4. Index the kept prefix afresh and continue appending after it.
        let new = Arc::new(Segment::existing(&self.dir, base, 0));
        let mut idx = new.empty_indexes();
        let mut indexer = Indexer::new(config.index_interval_bytes);
        let scan = new.recover_from(&mut idx, &mut indexer, 0, base, false)?;
        let (end, next) = (scan.end, scan.next_offset);
        debug_assert_eq!((end, next), (cut, new_next));
        idx.offsets.rewrite(&self.io)?;
        idx.times.rewrite(&self.io)?;
        new.set_indexes(idx);
        new.set_readable_end(end);
        new.note_timestamp(indexer.max_timestamp_ms());
        // Lower the high watermark before the new segment is visible, so that a read that finds
        // the new segment short of its offset can tell it was truncated away.
        self.reset_durable(next);
        {
            let mut list = self
                .segments
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            list.truncate(i);
            list.push(new.clone());
        }
        w.sealed_bytes = segs[..i].iter().map(|s| s.readable_end()).sum();
        w.active = new;
        w.size = end;
        // The active segment is a new file: nothing of it was dropped yet.
        w.drop_behind.reset_active();
        w.capacity = capacity;
        w.allocated = end;
        w.write_offset = next;
        w.indexer = indexer;
        w.first_append_ms = (end > 0).then(now_ms);
        self.reset_durable(next);
        w.truncations += 1;
        self.resume_entry_ids(&mut w)?;
        self.checkpoint_locked(&mut w)?;
        Ok(next)
    }
}
