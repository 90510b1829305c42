//! Push subscriptions: one task per followed partition reads from its position and sends whole
//! batches into the subscription's bounded channel. A full channel (a slow subscriber, held back by
//! its HTTP/2 window) stops the task from reading further; producers never wait for it.

use super::{Shutdown, blocking};
use crate::broker::PartitionHandle;
use crate::proto::SubscribeResponse;
use crate::storage::Offset;
use tokio::sync::mpsc;
use tonic::Status;

/// Messages buffered per subscription, on top of one per partition. With the per-message byte
/// limit this bounds what a subscription holds.
pub(super) const BUFFERED_MESSAGES: usize = 4;

/// Follows one partition from `offset` until the subscriber leaves, the server shuts down or the
/// topic is deleted (then the subscriber gets the error).
pub(super) async fn follow(
    handle: PartitionHandle,
    mut offset: Offset,
    max_bytes: usize,
    tx: mpsc::Sender<Result<SubscribeResponse, Status>>,
    mut shutdown: Shutdown,
    _task: mpsc::Sender<()>,
) {
    let partition = handle.partition();
    let mut high_watermark = handle.watch();
    loop {
        if *shutdown.borrow() {
            return;
        }
        high_watermark.borrow_and_update();
        let h = handle.clone();
        let chunk = match blocking(move || h.read(offset, max_bytes)).await {
            Ok(chunk) => chunk,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if chunk.batches.is_empty() {
            // Caught up: wait for an append, the subscriber leaving, or shutdown.
            tokio::select! {
                changed = high_watermark.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = tx.closed() => return,
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let message = SubscribeResponse {
            partition,
            batches: chunk.batches,
            start_offset: offset,
            next_offset: chunk.next_offset,
            high_watermark: chunk.high_watermark,
        };
        offset = chunk.next_offset;
        tokio::select! {
            sent = tx.send(Ok(message)) => {
                if sent.is_err() {
                    return;
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}
