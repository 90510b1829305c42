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
use std::sync::Arc;

/// Drop-behind works in steps of an eighth of the cached tail, at most this many bytes (one pair
/// of syscalls per step appended) and at least a page.
pub(crate) const DROP_STEP_BYTES: u64 = 8 * 1024 * 1024;
const MIN_DROP_STEP_BYTES: u64 = 4096;

fn step(cached_tail_bytes: u64) -> u64 {
    (cached_tail_bytes / 8).clamp(MIN_DROP_STEP_BYTES, DROP_STEP_BYTES)
}
/// A read that is not at the tail asks the kernel to start reading this far past it.
pub(crate) const READ_AHEAD_BYTES: u64 = 16 * 1024 * 1024;

/// The writer's drop-behind position, per log.
#[derive(Debug, Default)]
pub(crate) struct DropBehind {
    /// Bytes of the active segment below this were asked to leave the cache.
    dropped_to: u64,
    /// The step of the last drop.
    step: u64,
    /// The previous (sealed) segment's part still cached: dropped once the active segment is
    /// `cached_tail_bytes` long.
    previous: Option<Range>,
}

/// Bytes `from..to` of a segment, to drop from the page cache.
#[derive(Debug)]
pub(crate) struct Range {
    segment: Arc<Segment>,
    from: u64,
    to: u64,
}

impl Range {
    /// Unmaps the bytes from this process, starts writing back those still dirty, and drops the
    /// clean ones from the page cache. Best effort: a page still being written back stays (the
    /// next step covers it again), and a failure only means more cache.
    pub(crate) fn drop_from_cache(&self) {
        if self.to > self.from {
            self.segment.drop_from_cache(self.from, self.to);
        }
    }
}

impl DropBehind {
    /// After appends brought the active segment to `size` bytes: what to drop now, if anything,
    /// to keep `cached_tail_bytes` of the log's end cached. The caller drops the ranges after it
    /// lets go of the writer lock.
    pub(crate) fn after_append(
        &mut self,
        active: &Arc<Segment>,
        size: u64,
        cached_tail_bytes: u64,
    ) -> Vec<Range> {
        let mut out = Vec::new();
        let step = step(cached_tail_bytes);
        if size
            < self
                .dropped_to
                .saturating_add(cached_tail_bytes)
                .saturating_add(step)
        {
            return out;
        }
        let to = size - cached_tail_bytes;
        out.push(Range {
            segment: active.clone(),
            // Two steps back again: pages that were dirty or being written back last time.
            from: self.dropped_to.saturating_sub(2 * step),
            to,
        });
        self.step = step;
        self.dropped_to = to;
        out.extend(self.previous.take());
        out
    }

    /// The active segment `sealed`, `size` bytes long, was sealed and a new one started. Returns
    /// an older sealed segment's remainder to drop now, if two rolls came within one window.
    pub(crate) fn after_roll(&mut self, sealed: &Arc<Segment>, size: u64) -> Option<Range> {
        let older = self.previous.replace(Range {
            segment: sealed.clone(),
            from: self.dropped_to.saturating_sub(2 * self.step),
            to: size,
        });
        self.dropped_to = 0;
        older
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn segment(base: u64) -> Arc<Segment> {
        Arc::new(Segment::existing(Path::new("/nonexistent"), base, 0))
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
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].from, r[0].to), (0, DROP_STEP_BYTES));
        // The next step goes back over the last two.
        let r = d.after_append(&seg, window + 3 * DROP_STEP_BYTES, window);
        assert_eq!((r[0].from, r[0].to), (0, 3 * DROP_STEP_BYTES));
        let r = d.after_append(&seg, window + 6 * DROP_STEP_BYTES, window);
        assert_eq!((r[0].from, r[0].to), (DROP_STEP_BYTES, 6 * DROP_STEP_BYTES));
    }

    #[test]
    fn a_sealed_segment_leaves_once_the_next_one_fills_the_window() {
        let (old, new) = (segment(0), segment(1000));
        let mut d = DropBehind::default();
        let window = 64 * MIB;
        let r = d.after_append(&old, 100 * MIB, window);
        assert_eq!((r[0].from, r[0].to), (0, 36 * MIB));
        assert!(d.after_roll(&old, 101 * MIB).is_none());
        assert!(d.after_append(&new, window, window).is_empty());
        let r = d.after_append(&new, window + DROP_STEP_BYTES, window);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].from, r[0].to), (0, DROP_STEP_BYTES));
        assert_eq!((r[1].from, r[1].to), (20 * MIB, 101 * MIB));
        assert_eq!(r[1].segment.base_offset, 0);
    }

    #[test]
    fn a_small_tail_drops_in_small_steps() {
        let seg = segment(0);
        let mut d = DropBehind::default();
        assert!(d.after_append(&seg, 4095, 0).is_empty());
        let r = d.after_append(&seg, 4096, 0);
        assert_eq!((r[0].from, r[0].to), (0, 4096));
        let r = d.after_append(&seg, 5 * 4096, 0);
        assert_eq!((r[0].from, r[0].to), (0, 5 * 4096));
        let r = d.after_append(&seg, 9 * 4096, 0);
        assert_eq!((r[0].from, r[0].to), (3 * 4096, 9 * 4096));
    }

    #[test]
    fn two_quick_rolls_drop_the_older_segment_at_once() {
        let (a, b) = (segment(0), segment(10));
        let mut d = DropBehind::default();
        assert!(d.after_append(&a, MIB, u64::MAX).is_empty());
        assert!(d.after_roll(&a, MIB).is_none());
        let older = d.after_roll(&b, MIB);
        assert_eq!(older.map(|r| r.segment.base_offset), Some(0));
    }
}
