//! What a log keeps in the page cache: its newest bytes ("drop-behind"), and, for a reader that
//! is catching up, the bytes it will read next ("read-ahead").
//!
//! A log writes every byte once and most readers follow the tail, so older bytes in the page
//! cache are rarely read again while their pages keep growing the cache. Growing it is the
//! expensive part: each new page is memory the kernel has not used yet (on a VM that hands freed
//! memory back to its host, memory the host must fault in first), and a plain buffered write of
//! fresh data ran at 0.4-0.5 GB/s on the machine in docs/PERFORMANCE.md, against 1.5-2.7 GB/s
//! when the pages behind the writer are handed back and reused. So a log asks the kernel to write
//! back and drop what is more than `cached_tail_bytes` behind its end, and reads from there on
//! come from disk, with read-ahead so that a replay streams at the disk's speed.

use super::segment::Segment;
use std::{
    collections::VecDeque,
    sync::{Arc, Weak},
};

/// Drop-behind works in steps of an eighth of the cached tail, at most this many bytes (one pair
/// of syscalls per step appended) and at least a page.
pub(crate) const DROP_STEP_BYTES: u64 = 8 * 1024 * 1024;
const MIN_DROP_STEP_BYTES: u64 = 4096;

fn step(cached_tail_bytes: u64) -> u64 {
    (cached_tail_bytes / 8).clamp(MIN_DROP_STEP_BYTES, DROP_STEP_BYTES)
}

/// The writer's drop-behind state, per log: what is still cached, oldest first.
#[derive(Debug, Default)]
pub(crate) struct DropBehind {
    /// Bytes of the active segment below this were asked to leave the cache.
    dropped_to: u64,
    /// The parts of sealed segments not dropped yet, oldest first. Weak: retention or truncation
    /// may delete a segment meanwhile, and this must not keep its file open.
    sealed: VecDeque<Range>,
}

/// Bytes `from..to` of a segment, to drop from the page cache.
#[derive(Debug)]
pub(crate) struct Range {
    segment: Weak<Segment>,
    from: u64,
    to: u64,
}

impl Range {
    fn len(&self) -> u64 {
        self.to.saturating_sub(self.from)
    }

    /// Unmaps the bytes from this process, starts writing back those still dirty, and drops the
    /// clean ones from the page cache. Best effort: a page still being written back stays (the
    /// next step covers it again), and a failure only means more cache.
    pub(crate) fn drop_from_cache(&self) {
        if let Some(segment) = self.segment.upgrade()
            && self.to > self.from
        {
            segment.drop_from_cache(self.from, self.to);
        }
    }
}

impl DropBehind {
    /// After appends brought the active segment to `size` bytes: what to drop now, if anything,
    /// so that about `cached_tail_bytes` of the log's end stay cached (sealed segments' parts
    /// first, oldest first, then the active segment's start). The caller drops the ranges after
    /// it lets go of the writer lock.
    pub(crate) fn after_append(
        &mut self,
        active: &Arc<Segment>,
        size: u64,
        cached_tail_bytes: u64,
    ) -> Vec<Range> {
        let mut out = Vec::new();
        let step = step(cached_tail_bytes);
        self.sealed.retain(|r| r.segment.strong_count() > 0);
        let cached = self
            .sealed
            .iter()
            .map(Range::len)
            .fold(size.saturating_sub(self.dropped_to), u64::saturating_add);
        let mut excess = cached.saturating_sub(cached_tail_bytes);
        if excess < step {
            return out;
        }
        // Sealed segments were synced when they were sealed: their pages are clean.
        while excess > 0
            && let Some(oldest) = self.sealed.front_mut()
        {
            let take = excess.min(oldest.len());
            out.push(Range {
                segment: oldest.segment.clone(),
                from: oldest.from,
                to: oldest.from + take,
            });
            oldest.from += take;
            excess -= take;
            if oldest.len() == 0 {
                self.sealed.pop_front();
            }
        }
        if excess > 0 {
            let to = (self.dropped_to + excess).min(size);
            out.push(Range {
                segment: Arc::downgrade(active),
                // Two steps back again: pages that were dirty or being written back last time.
                from: self.dropped_to.saturating_sub(2 * step),
                to,
            });
            self.dropped_to = to;
        }
        out
    }

    /// The active segment was replaced by a new file at the same base offset (grown, or
    /// rewritten by truncation): none of it was dropped yet.
    pub(crate) fn reset_active(&mut self) {
        self.dropped_to = 0;
    }

    /// The active segment `sealed`, `size` bytes long, was sealed (and synced) and a new one
    /// started: what of it is still cached joins the queue. Nothing is dropped here (the caller
    /// holds the writer lock); the next append does it.
    pub(crate) fn after_roll(&mut self, sealed: &Arc<Segment>, size: u64, cached_tail_bytes: u64) {
        self.sealed.push_back(Range {
            segment: Arc::downgrade(sealed),
            // Pages that were dirty at the last drop are clean now: cover them again.
            from: self
                .dropped_to
                .saturating_sub(2 * step(cached_tail_bytes))
                .min(size),
            to: size,
        });
        self.dropped_to = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn segment(base: u64) -> Arc<Segment> {
        Arc::new(Segment::existing(Path::new("/nonexistent"), base, 0))
    }

    fn spans(r: &[Range]) -> Vec<(u64, u64)> {
        r.iter().map(|r| (r.from, r.to)).collect()
    }

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn keeps_the_window_and_drops_in_steps() {
        let seg = segment(0);
        let mut d = DropBehind::default();
        let window = 64 * MIB;
        assert!(d.after_append(&seg, window, window).is_empty());
        assert!(
            d.after_append(&seg, window + DROP_STEP_BYTES - 1, window)
                .is_empty()
        );
        let r = d.after_append(&seg, window + DROP_STEP_BYTES, window);
        assert_eq!(spans(&r), [(0, DROP_STEP_BYTES)]);
        // The next step goes back over the last two.
        let r = d.after_append(&seg, window + 3 * DROP_STEP_BYTES, window);
        assert_eq!(spans(&r), [(0, 3 * DROP_STEP_BYTES)]);
        let r = d.after_append(&seg, window + 6 * DROP_STEP_BYTES, window);
        assert_eq!(spans(&r), [(DROP_STEP_BYTES, 6 * DROP_STEP_BYTES)]);
    }

    #[test]
    fn sealed_segments_stay_cached_while_they_are_within_the_window() {
        // 30 MiB segments, a 64 MiB window: about two segments stay cached, the oldest go first.
        let window = 64 * MIB;
        let segs: Vec<_> = (0..4).map(|i| segment(i * 1000)).collect();
        let base = |r: &Range| r.segment.upgrade().unwrap().base_offset;
        let mut d = DropBehind::default();
        assert!(d.after_append(&segs[0], 30 * MIB, window).is_empty());
        d.after_roll(&segs[0], 30 * MIB, window);
        assert!(d.after_append(&segs[1], 30 * MIB, window).is_empty());
        d.after_roll(&segs[1], 30 * MIB, window);
        let r = d.after_append(&segs[2], 30 * MIB, window);
        assert_eq!((base(&r[0]), r[0].from, r[0].to), (0, 0, 26 * MIB));
        assert_eq!(r.len(), 1);
        d.after_roll(&segs[2], 30 * MIB, window);
        let r = d.after_append(&segs[3], 30 * MIB, window);
        assert_eq!(r.len(), 2);
        assert_eq!((base(&r[0]), r[0].from, r[0].to), (0, 26 * MIB, 30 * MIB));
        assert_eq!((base(&r[1]), r[1].from, r[1].to), (1000, 0, 26 * MIB));
        // Below a step past the window: nothing more.
        assert!(d.after_append(&segs[3], 37 * MIB, window).is_empty());
    }

    #[test]
    fn a_large_window_never_drops() {
        let (a, b) = (segment(0), segment(10));
        let mut d = DropBehind::default();
        assert!(d.after_append(&a, 512 * MIB, u64::MAX).is_empty());
        d.after_roll(&a, 512 * MIB, u64::MAX);
        assert!(d.after_append(&b, 512 * MIB, u64::MAX).is_empty());
    }

    #[test]
    fn a_small_tail_drops_in_small_steps() {
        let seg = segment(0);
        let mut d = DropBehind::default();
        assert!(d.after_append(&seg, 4095, 0).is_empty());
        assert_eq!(spans(&d.after_append(&seg, 4096, 0)), [(0, 4096)]);
        assert_eq!(spans(&d.after_append(&seg, 5 * 4096, 0)), [(0, 5 * 4096)]);
        assert_eq!(
            spans(&d.after_append(&seg, 9 * 4096, 0)),
            [(3 * 4096, 9 * 4096)]
        );
    }

    #[test]
    fn a_deleted_segment_is_forgotten() {
        let mut d = DropBehind::default();
        let old = segment(0);
        d.after_roll(&old, 100 * MIB, 16 * MIB);
        drop(old);
        let new = segment(10);
        assert!(d.after_append(&new, MIB, 16 * MIB).is_empty());
        assert!(d.sealed.is_empty());
    }
}
