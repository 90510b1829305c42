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
    /// The same access, remembering what the subscription authenticated with
    /// (`auth::credential` of its request: the digest of its token, `None` for a client
    /// certificate): it then also ends once a reload no longer maps that token to the principal
    /// (the token was rotated).
    pub(super) fn with_credential(self, credential: Option<[u8; 32]>) -> Guard {
        Guard {
            access: self,
            credential,
            checked: false,
        }
    }
}

/// An [`Access`] as a subscription's tasks check it.
pub(super) struct Guard {
    access: Access,
    /// The digest of the token the subscription authenticated with.
    credential: Option<[u8; 32]>,
    /// Whether the principals as they were when the receiver was made have been checked.
    checked: bool,
}

impl From<Access> for Guard {
    /// Without the credential: a rotated token does not end the subscription.
    fn from(access: Access) -> Guard {
        Guard {
            access,
            credential: None,
            checked: false,
        }
    }
}

impl Guard {
    /// Completes, with the status the subscriber gets, once a reload takes away the principal,
    /// its token (rotated) or its right to read the topic; never, without a principals file
    /// (`None`).
    pub(super) async fn revoked(guard: &mut Option<Guard>) -> Status {
        let Some(g) = guard else {
            return std::future::pending().await;
        };
        // A reload between the request's check and the making of the receiver counts as seen
        // by the receiver: the principals it starts with are checked once, before any change.
        if !g.checked {
            g.checked = true;
            let now = g.access.principals.borrow_and_update().clone();
            if let Some(status) = g.check(&now) {
                return status;
            }
        }
        loop {
            if g.access.principals.changed().await.is_err() {
                return std::future::pending().await;
            }
            let now = g.access.principals.borrow_and_update().clone();
            if let Some(status) = g.check(&now) {
                return status;
            }
        }
    }

    /// Why `now` ends the subscription, if it does.
    fn check(&self, now: &Principals) -> Option<Status> {
        let a = &self.access;
        if !now.exists(&a.principal) {
            return Some(Status::unauthenticated(format!(
                "principal '{}' was revoked",
                a.principal
            )));
        }
        if let Some(digest) = &self.credential
            && !now.token_is(&a.principal, digest)
        {
            return Some(Status::unauthenticated(format!(
                "the token of principal '{}' was rotated or removed",
                a.principal
            )));
        }
        if now.decide(&a.principal, Operation::Read, &Resource::topic(&a.topic)) == Decision::Denied
        {
            return Some(Status::permission_denied(format!(
                "principal '{}' may no longer read topic:{}",
                a.principal, a.topic
            )));
        }
        None
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
    access: Option<impl Into<Guard>>,
    counted: Option<Arc<Counted>>,
) {
    let mut access = access.map(Into::into);
    let partition = tail.partition();
    loop {
        let start_offset = tail.offset();
        let next = tokio::select! {
            next = tail.next() => next,
            () = tx.closed() => return,
            status = Guard::revoked(&mut access) => {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::auth::{AuthFile, PrincipalEntry, Rule, token_digest, token_hash};
    use std::time::Duration;

    fn principals(token: &str, may_read: bool) -> Arc<Principals> {
        Arc::new(Principals::new(&AuthFile {
            version: 1,
            principals: vec![PrincipalEntry {
                name: "alice".into(),
                token_sha256: Some(token_hash(token)),
                superuser: false,
                allow: if may_read {
                    vec![Rule {
                        operation: Operation::Read,
                        resource: "topic:orders".into(),
                    }]
                } else {
                    Vec::new()
                },
            }],
        }))
    }

    fn access(rx: watch::Receiver<Arc<Principals>>) -> Access {
        Access {
            principals: rx,
            principal: "alice".into(),
            topic: "orders".into(),
        }
    }

    /// The status `revoked` completes with within a moment, if it does.
    async fn ends(guard: &mut Option<Guard>) -> Option<Status> {
        tokio::time::timeout(Duration::from_millis(200), Guard::revoked(guard))
            .await
            .ok()
    }

    #[tokio::test]
    async fn a_reload_before_the_receiver_was_made_is_noticed() {
        let tx = watch::Sender::new(principals("strata_a", true));
        // The request was checked against the first principals; a reload took the right away
        // before the subscription made its receiver.
        tx.send_replace(principals("strata_a", false));
        let mut guard = Some(Guard::from(access(tx.subscribe())));
        let status = ends(&mut guard).await.expect("the subscription ends");
        assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    }

    #[tokio::test]
    async fn an_unchanged_principal_keeps_its_subscription() {
        let tx = watch::Sender::new(principals("strata_a", true));
        let mut guard =
            Some(access(tx.subscribe()).with_credential(Some(token_digest("strata_a"))));
        assert!(ends(&mut guard).await.is_none());
        tx.send_replace(principals("strata_a", true));
        assert!(
            ends(&mut guard).await.is_none(),
            "a reload that changes nothing"
        );
        let mut none = None;
        assert!(ends(&mut none).await.is_none(), "no principals file");
    }

    #[tokio::test]
    async fn a_rotated_token_ends_the_subscriptions_opened_with_it() {
        let tx = watch::Sender::new(principals("strata_a", true));
        let mut by_token =
            Some(access(tx.subscribe()).with_credential(Some(token_digest("strata_a"))));
        let mut by_certificate = Some(access(tx.subscribe()).with_credential(None));
        assert!(ends(&mut by_token).await.is_none());
        assert!(ends(&mut by_certificate).await.is_none());
        tx.send_replace(principals("strata_b", true));
        let status = ends(&mut by_token)
            .await
            .expect("the old token's subscription ends");
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
        assert!(status.message().contains("rotated"), "{}", status.message());
        assert!(
            ends(&mut by_certificate).await.is_none(),
            "a certificate's subscription does not depend on the token"
        );
        // A rotation before the receiver was made counts too.
        let mut late = Some(access(tx.subscribe()).with_credential(Some(token_digest("strata_a"))));
        assert!(ends(&mut late).await.is_some());
    }
}
