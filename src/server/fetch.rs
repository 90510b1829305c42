//! Fetch with long-poll: read, and if fewer than `min_bytes` are there, wait for the partition's
//! high watermark to move (or the deadline, or shutdown) and read again.

use super::{Shutdown, blocking};
use crate::broker::PartitionHandle;
use crate::storage::{Offset, ReadChunk};
use std::time::Duration;
use tokio::time::Instant;
use tonic::Status;

/// What one fetch asks for once its start position is resolved.
pub(super) struct FetchPlan {
    pub offset: Offset,
    pub max_bytes: usize,
    pub min_bytes: usize,
    pub max_wait: Duration,
}

/// Reads from `handle`, waiting up to `plan.max_wait` for `plan.min_bytes`. Returns what is there
/// at the deadline, or at once when the server shuts down.
pub(super) async fn long_poll(
    handle: PartitionHandle,
    plan: &FetchPlan,
    mut shutdown: Shutdown,
) -> Result<ReadChunk, Status> {
    let deadline = Instant::now() + plan.max_wait;
    // Subscribed before the first read, so an append between the read and the wait still wakes us.
    let mut high_watermark = handle.watch();
    loop {
        high_watermark.borrow_and_update();
        let h = handle.clone();
        let (offset, max_bytes) = (plan.offset, plan.max_bytes);
        let chunk = blocking(move || h.read(offset, max_bytes)).await?;
        if chunk.batches.len() >= plan.min_bytes || Instant::now() >= deadline || *shutdown.borrow()
        {
            return Ok(chunk);
        }
        tokio::select! {
            changed = high_watermark.changed() => {
                if changed.is_err() {
                    return Ok(chunk);
                }
            }
            () = tokio::time::sleep_until(deadline) => return Ok(chunk),
            _ = shutdown.changed() => return Ok(chunk),
        }
    }
}
