//! Push subscriptions: one task per followed partition takes chunks from its [`Tail`] and sends
//! them into the subscription's bounded channel. A full channel (a slow subscriber, held back by
//! its HTTP/2 window) stops the task from reading further; producers never wait for it.

use super::{
    Shutdown,
    auth::{Decision, Operation, Principals, Resource},
    metrics::Metrics,
    tail::Tail,
};
use crate::proto::SubscribeResponse;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tonic::Status;

/// A subscription's principal and topic, checked again at every reload of the principals file.
pub(super) struct Access {
    /// The principals, as reloads change them.
    pub principals: watch::Receiver<Arc<Principals>>,
    /// Who subscribed.
    pub principal: String,
    /// To what.
    pub topic: String,
}

impl Access {
    /// Completes, with the status the subscriber gets, once a reload takes away the principal or
    /// its right to read the topic; never, without a principals file (`None`).
    async fn revoked(access: &mut Option<Access>) -> Status {
        let Some(a) = access else {
            return std::future::pending().await;
        };
        loop {
            if a.principals.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = a.principals.borrow_and_update().clone();
            if !now.exists(&a.principal) {
                return Status::unauthenticated(format!("principal '{}' was revoked", a.principal));
            }
            if now.decide(&a.principal, Operation::Read, &Resource::topic(&a.topic))
                == Decision::Denied
            {
                return Status::permission_denied(format!(
                    "principal '{}' may no longer read topic:{}",
                    a.principal, a.topic
                ));
            }
        }
    }
}

/// Messages buffered per subscription, on top of one per partition. With the per-message byte
/// limit (`ServerConfig::push_bytes`) this bounds what a subscription holds.
pub(super) const BUFFERED_MESSAGES: usize = 4;

/// Follows one partition until the subscriber leaves, the server shuts down (the stream then
/// ends with OK, once every task has dropped its sender) or the topic is deleted (the subscriber
/// gets the error: NOT_FOUND).
pub(super) async fn follow(
    mut tail: Tail,
    tx: mpsc::Sender<Result<SubscribeResponse, Status>>,
    mut shutdown: Shutdown,
    _task: mpsc::Sender<()>,
    mut access: Option<Access>,
    counted: Option<Arc<Counted>>,
) {
    let partition = tail.partition();
    loop {
        let start_offset = tail.offset();
        let next = tokio::select! {
            next = tail.next() => next,
            () = tx.closed() => return,
            status = Access::revoked(&mut access) => {
                let _ = tx.send(Err(status)).await;
                return;
            }
        };
        let chunk = match next {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        if let Some(c) = &counted {
            c.served(&chunk.batches);
        }
        let message = SubscribeResponse {
            partition,
            batches: chunk.batches,
            start_offset,
            next_offset: chunk.next_offset,
            high_watermark: chunk.high_watermark,
        };
        tokio::select! {
            sent = tx.send(Ok(message)) => {
                if sent.is_err() {
                    return;
                }
            }
            // The sender's drop also means shutdown.
            _ = shutdown.changed() => return,
        }
    }
}

/// One open subscription, as the metrics count it: shared by its partitions' tasks, it is
/// counted open until the last of them ends.
pub(super) struct Counted {
    metrics: Arc<Metrics>,
    served: prometheus::IntCounter,
}

impl Counted {
    pub(super) fn new(metrics: Arc<Metrics>) -> Arc<Counted> {
        metrics.subscriptions.inc();
        let served = metrics.served_bytes.with_label_values(&["Subscribe"]);
        Arc::new(Counted { metrics, served })
    }

    fn served(&self, batches: &bytes::Bytes) {
        self.served.inc_by(batches.len() as u64);
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.subscriptions.dec();
    }
}
