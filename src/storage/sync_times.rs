//! How long fsyncs take: every `fdatasync` and directory sync that [`super::Io`] makes is timed
//! into one process-wide histogram of fixed buckets (atomic counters: no lock, no allocation).
//! The server exports it (`strata_fsync_duration_seconds`); storage knows nothing of the format.
//! Process-wide because a process serves one broker; tests that run several see their sum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The buckets' upper bounds, in seconds: 100 µs to 10 s (then `+Inf`). A healthy NVMe disk syncs
/// in well under a millisecond; a stalled one shows in the upper buckets.
pub const SYNC_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

const BUCKETS: usize = SYNC_BUCKETS_SECONDS.len() + 1;

struct SyncTimes {
    /// Syncs per bucket (not cumulative); the last is above every bound.
    buckets: [AtomicU64; BUCKETS],
    sum_nanos: AtomicU64,
}

static SYNC_TIMES: SyncTimes = SyncTimes {
    buckets: [const { AtomicU64::new(0) }; BUCKETS],
    sum_nanos: AtomicU64::new(0),
};

/// Records one sync that took `took`.
pub(crate) fn record(took: Duration) {
    let seconds = took.as_secs_f64();
    let bucket = SYNC_BUCKETS_SECONDS
        .iter()
        .position(|&bound| seconds <= bound)
        .unwrap_or(BUCKETS - 1);
    SYNC_TIMES.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    SYNC_TIMES.sum_nanos.fetch_add(
        u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

/// The syncs so far, as a Prometheus histogram counts them.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncTimesSnapshot {
    /// Per bound of [`SYNC_BUCKETS_SECONDS`]: the syncs that took at most that long (cumulative).
    pub cumulative: [u64; SYNC_BUCKETS_SECONDS.len()],
    /// Every sync.
    pub count: u64,
    /// The time they took together.
    pub sum: Duration,
}

/// What the process's syncs took so far.
pub fn sync_times() -> SyncTimesSnapshot {
    let mut cumulative = [0; SYNC_BUCKETS_SECONDS.len()];
    let mut running = 0u64;
    for (i, slot) in cumulative.iter_mut().enumerate() {
        running += SYNC_TIMES.buckets[i].load(Ordering::Relaxed);
        *slot = running;
    }
    let count = running + SYNC_TIMES.buckets[BUCKETS - 1].load(Ordering::Relaxed);
    SyncTimesSnapshot {
        cumulative,
        count,
        sum: Duration::from_nanos(SYNC_TIMES.sum_nanos.load(Ordering::Relaxed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_lands_in_its_bucket_and_every_later_one() {
        let before = sync_times();
        record(Duration::from_micros(700)); // in the 1 ms bucket (index 3)
        record(Duration::from_secs(20)); // above every bound
        let after = sync_times();
        // Other tests in this process may sync meanwhile: only lower bounds hold exactly.
        assert!(after.count >= before.count + 2);
        assert!(after.cumulative[3] > before.cumulative[3]);
        assert!(after.sum >= before.sum + Duration::from_secs(20));
        assert!(after.count > after.cumulative[SYNC_BUCKETS_SECONDS.len() - 1]);
        assert!(after.cumulative.windows(2).all(|w| w[0] <= w[1]));
    }
}
