//! Opening a log: find the segments, trust everything up to the recovery checkpoint, scan only
//! the tail after it, cut a torn or garbage tail, and rebuild the indexes that tail needs.
//!
//! The cost of opening is one directory listing plus the tail since the last checkpoint (nothing
//! at all after a clean shutdown); sealed segments are opened lazily on first read.

use super::log::{lock, now_ms};
use super::{
    LogConfig, MIN_SEGMENT_BYTES, Offset, Result, StorageError,
    checkpoint::{self, CLEAN_SHUTDOWN_FILE, RecoveryPoint},
    fs::{self, Io},
    log::{Log, Writer},
    page_cache::DropBehind,
    producers::ProducerTable,
    segment::{Indexer, Scan, Segment, segment_path},
};
use std::{path::Path, sync::Arc, time::Instant};

/// The largest segment the index format can address (positions are u32).
const MAX_SEGMENT_BYTES: u64 = u32::MAX as u64;

impl Log {
    /// Opens (or creates) the log in `dir`, recovering from a crash if there was one.
    pub fn open(dir: &Path, mut config: LogConfig) -> Result<Log> {
        config.segment_max_bytes = config
            .segment_max_bytes
            .clamp(MIN_SEGMENT_BYTES, MAX_SEGMENT_BYTES);
        let io = Io::new(config.faults.clone());
        io.create_dir_durable(dir)?;
        let bases = list_segments(dir, &io)?;
        if bases.is_empty() {
            return create_fresh(dir, io, config, 0);
        }
        let clean = dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let point = match checkpoint::read(dir) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "ignoring damaged checkpoint");
                None
            }
        };
        let log = recover(dir, &io, config, &bases, point, clean)?;
        log.resume_entry_ids(&mut lock(&log.writer))?;
        log.load_producers()?;
        if clean {
            // Removed (durably) before the first change; an idle log never pays for it.
            log.clean_marker
                .store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(log)
    }
}

impl Log {
    /// Loads the producer snapshot and replays the batch headers after it, up to the recovered
    /// end. Without a usable snapshot the table is rebuilt from the active segment alone (older
    /// producers' retries are then appended again): an upgrade from a log without one, or damage.
    fn load_producers(&self) -> Result<()> {
        let end = self.next_offset();
        let earliest = self.earliest_offset();
        let active_base = lock(&self.writer).active.base_offset;
        let (mut table, from) = match ProducerTable::read(&self.dir) {
            Ok(Some((mut table, upto))) => {
                if upto > end {
                    // Records the snapshot saw were lost (a crash under a lax fsync policy).
                    table.truncate(end);
                }
                (table, upto.min(end))
            }
            Ok(None) => (dirty(ProducerTable::default()), active_base),
            Err(e) => {
                tracing::warn!(
                    dir = %self.dir.display(),
                    error = %e,
                    "ignoring a damaged producer snapshot; rebuilding it from the active segment"
                );
                (dirty(ProducerTable::default()), active_base)
            }
        };
        if !self.replay_producers(&mut table, from.max(earliest), end)? {
            tracing::warn!(
                dir = %self.dir.display(),
                from,
                "cannot find the batch the producer snapshot ends at; rebuilding it from the \
                 active segment"
            );
            table = dirty(ProducerTable::default());
            self.replay_producers(&mut table, active_base.max(earliest), end)?;
        }
        lock(&self.writer).producers = table;
        Ok(())
    }
}

impl Log {
    /// Replays the headers of the batches from `from` to `end` into `table`. False when the
    /// batch at `from` cannot be found (the table is then as it was).
    fn replay_producers(
        &self,
        table: &mut ProducerTable,
        from: Offset,
        end: Offset,
    ) -> Result<bool> {
        let config = self.config();
        let now = now_ms();
        let segments = self.segments();
        let mut replayed = table.clone();
        for (i, seg) in segments.iter().enumerate() {
            let seg_next = segments.get(i + 1).map_or(end, |s| s.base_offset);
            if seg_next <= from {
                continue;
            }
            let pos = if from > seg.base_offset {
                match seg.position_of(&self.io, from, seg_next) {
                    Ok((pos, _)) => pos,
                    Err(_) => return Ok(false),
                }
            } else {
                0
            };
            seg.headers_from(pos, |h| {
                if h.next_offset() > from {
                    replayed.replay(h, now, config.max_producers);
                }
            })?;
        }
        *table = replayed;
        Ok(true)
    }
}

fn dirty(mut table: ProducerTable) -> ProducerTable {
    table.mark_dirty();
    table
}

/// Base offsets of the `.log` files in `dir`, sorted. Leftover temporary files are removed.
fn list_segments(dir: &Path, io: &Io) -> Result<Vec<Offset>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| StorageError::io("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| StorageError::io("list", dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if Path::new(name).extension().is_some_and(|ext| ext == "tmp") {
            io.remove_file(&entry.path())?;
        } else if let Some(stem) = name.strip_suffix(".log")
            && stem.len() == 20
            && let Ok(base) = stem.parse::<Offset>()
        {
            // A directory (or anything else) under a segment's name would read as an empty or
            // unreadable segment later; refuse to open rather than serve around it.
            // Following symlinks: a segment moved elsewhere and linked back is fine.
            let is_file = std::fs::metadata(entry.path())
                .map_err(|e| StorageError::io("stat", entry.path(), e))?
                .is_file();
            if !is_file {
                return Err(StorageError::BadStateFile {
                    path: entry.path(),
                    reason: "named as a segment, but not a regular file".into(),
                });
            }
            bases.push(base);
        } else if let Some(stem) = name
            .strip_suffix(".index")
            .or_else(|| name.strip_suffix(".timeindex"))
            && stem.len() == 20
            && let Ok(base) = stem.parse::<Offset>()
        {
            indexes.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    // Indexes whose segment is gone (a crash while segments were removed): a later segment of
    // the same base offset would load them as its own.
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            tracing::warn!(path = %path.display(), "removing an index whose segment is gone");
            io.remove_file(&path)?;
        }
    }
    Ok(bases)
}

fn create_fresh(dir: &Path, io: Io, config: LogConfig, base: Offset) -> Result<Log> {
    let seg = Arc::new(Segment::create(&io, dir, base, config.segment_max_bytes)?);
    let point = RecoveryPoint {
        segment_base: base,
        position: 0,
        next_offset: base,
        max_timestamp_ms: i64::MIN,
    };
    checkpoint::write(&io, dir, &point)?;
    let writer = Writer {
        active: seg.clone(),
        size: 0,
        write_offset: base,
        indexer: Indexer::new(config.index_interval_bytes),
        first_append_ms: None,
        since_checkpoint: 0,
        sealed_bytes: 0,
        last_sync: Instant::now(),
        capacity: config.segment_max_bytes,
        allocated: 0,
        drop_behind: DropBehind::default(),
        producers: ProducerTable::default(),
        next_producer_expiry_ms: 0,
        last: super::EntryId::default(),
        truncations: 0,
    };
    Ok(Log::assemble(dir.to_owned(), io, config, vec![seg], writer))
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| StorageError::io("stat", path, e))
}

fn recover(
    dir: &Path,
    io: &Io,
    config: LogConfig,
    bases: &[Offset],
    point: Option<RecoveryPoint>,
    clean: bool,
) -> Result<Log> {
    // Where to start scanning: the checkpoint if it names a segment we have and fits in it;
    // otherwise the last two segments (a crash can leave at most the newest one unsealed, plus
    // the one before it untrimmed if the crash hit a roll).
    let trusted = point.filter(|p| {
        p.next_offset >= p.segment_base
            && bases.binary_search(&p.segment_base).is_ok()
            && file_len(&segment_path(dir, p.segment_base, "log")).is_ok_and(|l| p.position <= l)
    });
    if let Some(p) = point
        && trusted.is_none()
    {
        // Either the checkpoint is damaged in a way its checksum missed, or the segment it names
        // was deleted or cut short by something other than Strata: then records it held are gone
        // and their offsets will be given again. Say so loudly.
        tracing::error!(
            dir = %dir.display(),
            checkpoint_segment = p.segment_base,
            checkpoint_position = p.position,
            checkpoint_next_offset = p.next_offset,
            "the recovery checkpoint names a segment that is missing or shorter than it says; \
             recovering from the segments that are there: records up to the checkpoint's next \
             offset may have been lost"
        );
    }
    let (start_index, start_pos, start_next, start_max_ts) = if let Some(p) = trusted {
        (
            bases.binary_search(&p.segment_base).unwrap_or(0),
            p.position,
            p.next_offset,
            p.max_timestamp_ms,
        )
    } else {
        let i = bases.len().saturating_sub(2);
        (i, 0, bases[i], i64::MIN)
    };

    let mut segments = Vec::with_capacity(bases.len());
    let mut sealed_bytes = 0;
    for &base in &bases[..start_index] {
        let len = file_len(&segment_path(dir, base, "log"))?;
        sealed_bytes += len;
        segments.push(Arc::new(Segment::existing(dir, base, len)));
    }

    let interval = config.index_interval_bytes;
    let mut next_offset = start_next;
    let mut active = None;
    // Whether recovery found or changed anything past the checkpoint: only then is there
    // something to make durable and a new checkpoint to write.
    let mut changed = trusted.is_none();
    for (i, &base) in bases.iter().enumerate().skip(start_index) {
        let path = segment_path(dir, base, "log");
        if i > start_index && base != next_offset {
            // Not following on (left behind by a cut or an unfinished truncation): these
            // segments hold nothing we can trust.
            tracing::warn!(segment = %path.display(), "removing segment after the recovered end");
            Segment::existing(dir, base, 0).remove_files(io)?;
            changed = true;
            continue;
        }
        let seg = Segment::existing(dir, base, 0);
        let mut from_checkpoint = i == start_index && start_pos > 0;
        let mut idx = seg.empty_indexes();
        if from_checkpoint {
            idx = seg.load_indexes_raw()?;
            let keep_o = idx
                .offsets
                .entries()
                .partition_point(|e| u64::from(e.position) < start_pos);
            idx.offsets.truncate(keep_o);
            let rel_next = start_next - base;
            let keep_t = idx
                .times
                .entries()
                .partition_point(|e| u64::from(e.rel_offset) < rel_next);
            idx.times.truncate(keep_t);
            if !seg.indexes_fit(&idx, start_pos, rel_next)? {
                // The indexes of the part the checkpoint vouches for are damaged: rescan the
                // segment from its start, which rebuilds them.
                tracing::warn!(segment = %path.display(), "index missing or stale; rebuilding");
                from_checkpoint = false;
                changed = true;
                idx = seg.empty_indexes();
                next_offset = base;
            }
        }
        let (pos, mut indexer) = if from_checkpoint {
            (start_pos, Indexer::resume(interval, start_max_ts))
        } else {
            (0, Indexer::new(interval))
        };
        let is_last = i + 1 == bases.len();
        let (end, next, scanned) = if clean && is_last && from_checkpoint && trusted.is_some() {
            // A clean shutdown: the checkpoint is the exact end.
            (start_pos, start_next, false)
        } else {
            let mut scan = seg.recover_from(&mut idx, &mut indexer, pos, next_offset, false)?;
            if let Some(&following) = bases.get(i + 1)
                && scan.next_offset < following
            {
                // A later segment exists, and a segment is synced before the next one is
                // created: this one is complete, so what stopped the scan is damage, not a
                // torn write. Keep all of it (reads of the damaged batches fail) and index on
                // past the damage.
                tracing::error!(
                    segment = %path.display(),
                    position = scan.end,
                    "damaged batch in a sealed segment; keeping the segment and the ones after it"
                );
                let rest =
                    seg.recover_from(&mut idx, &mut indexer, scan.end, scan.next_offset, true)?;
                scan = Scan {
                    end: if rest.clean {
                        rest.end
                    } else {
                        file_len(&path)?
                    },
                    next_offset: following,
                    clean: true,
                };
            }
            if !scan.clean || scan.end != pos || i != start_index {
                changed = true;
            }
            if !scan.clean {
                tracing::warn!(
                    segment = %path.display(),
                    position = scan.end,
                    "cutting a torn or corrupt tail"
                );
            }
            (scan.end, scan.next_offset, true)
        };
        let file_len = file_len(&path)?;
        let stale_past_end = scanned
            && end < file_len
            && (changed || fs::has_data_past(&*seg.file()?, &path, end, file_len));
        if stale_past_end {
            // Drop whatever follows the last good batch and re-extend with zeroes: stale bytes
            // past the cut must never be read back as batches. No reader exists yet.
            let file = io.open_rw(&path, false)?;
            io.set_len(&file, &path, end)?;
            io.set_len(&file, &path, file_len.max(config.segment_max_bytes))?;
            io.sync_data(&file, &path)?;
            changed = true;
        }
        next_offset = next;
        let seg = if stale_past_end {
            // The file changed length under the scan's map: map it afresh on first use.
            Arc::new(Segment::existing(dir, base, end))
        } else {
            // Keep the scan's open file and map: an idle partition opens its files once.
            seg.set_readable_end(end);
            Arc::new(seg)
        };
        seg.note_timestamp(indexer.max_timestamp_ms());
        seg.set_indexes(idx);
        if let Some((prev, prev_end, prev_indexer)) = active.replace((seg.clone(), end, indexer)) {
            seal_recovered(io, &prev, prev_end, &prev_indexer)?;
            sealed_bytes += prev_end;
        }
        segments.push(seg);
    }
    let Some((seg, end, indexer)) = active else {
        // Every segment from the checkpoint on was unusable: start a new one where the log ends.
        let base = next_offset;
        let fresh = Arc::new(Segment::create(io, dir, base, config.segment_max_bytes)?);
        segments.push(fresh.clone());
        let log = finish(
            dir,
            io,
            config,
            segments,
            fresh,
            0,
            base,
            Indexer::new(interval),
            sealed_bytes,
        )?;
        record_recovered(&log)?;
        return Ok(log);
    };
    let log = finish(
        dir,
        io,
        config,
        segments,
        seg,
        end,
        next_offset,
        indexer,
        sealed_bytes,
    )?;
    if changed {
        // Make what recovery found durable and record it, so the next crash scans from here
        // (also after a clean shutdown whose checkpoint was unusable). An open that found the
        // log exactly as the checkpoint says costs no fsync at all.
        record_recovered(&log)?;
    }
    Ok(log)
}

/// Makes what recovery found durable and checkpoints it. A full disk does not stop the open:
/// the segment is synced before anything that needs space, and without the new checkpoint the
/// next open scans from the old one again, to the same end.
fn record_recovered(log: &Log) -> Result<()> {
    match log.checkpoint() {
        Err(e @ StorageError::DiskFull { .. }) if log.check_poisoned().is_ok() => {
            tracing::warn!(
                dir = %log.dir().display(),
                error = %e,
                "disk full: could not checkpoint what recovery found; the next open scans it again"
            );
            Ok(())
        }
        result => result,
    }
}

/// A segment that recovery found complete but that is not the last: trim, index, seal.
fn seal_recovered(io: &Io, seg: &Segment, end: u64, indexer: &Indexer) -> Result<()> {
    let file = seg.file()?;
    io.set_len(&file, seg.path(), end)?;
    io.sync_data(&file, seg.path())?;
    seg.indexes_mut(|idx| {
        indexer.seal(idx);
        idx.persist(io)
    })
    .transpose()?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    dir: &Path,
    io: &Io,
    config: LogConfig,
    segments: Vec<Arc<Segment>>,
    active: Arc<Segment>,
    size: u64,
    next_offset: Offset,
    indexer: Indexer,
    sealed_bytes: u64,
) -> Result<Log> {
    let capacity = active.file_len()?.max(size);
    let writer = Writer {
        active,
        size,
        write_offset: next_offset,
        indexer,
        first_append_ms: (size > 0).then(super::log::now_ms),
        since_checkpoint: 0,
        sealed_bytes,
        last_sync: Instant::now(),
        capacity,
        allocated: size,
        drop_behind: DropBehind::default(),
        producers: ProducerTable::default(),
        next_producer_expiry_ms: 0,
        last: super::EntryId::default(),
        truncations: 0,
    };
    Ok(Log::assemble(
        dir.to_owned(),
        io.clone(),
        config,
        segments,
        writer,
    ))
}
