//! The async gRPC edge: [`serve`] runs the `strata.v1.Strata` service (plus gRPC health and server
//! reflection) on a listener until a shutdown future completes. Every broker call runs on a
//! blocking thread (`spawn_blocking`), so a slow disk never stalls the runtime's workers.
//!
//! Shutdown: stop accepting, end long-polls (they return what they have) and subscriptions (their
//! streams end cleanly), let in-flight requests finish, then return. Closing the broker (flushing
//! the logs) is the caller's next step.

pub mod auth;
mod authenticate;
mod budget;
mod cluster;
mod config;
mod connections;
mod convert;
mod coordinated;
mod error;
mod metrics;
mod observe;
mod service;
pub mod status;
mod subscribe;
mod tail;
#[cfg(test)]
mod tests;
mod tls;

pub use config::ServerConfig;
pub use connections::ConnInfo;
pub use error::RequestError;
pub use status::{request_status, to_status};
pub use tls::{TlsError, TlsFiles};

use crate::broker::Broker;
use crate::proto::{FILE_DESCRIPTOR_SET, strata_server::StrataServer};
use connections::Conn;
use std::{future::Future, pin::Pin, sync::Arc};
use tokio::{net::TcpListener, sync::mpsc, sync::watch};
use tokio_stream::{
    Stream, StreamExt,
    wrappers::{ReceiverStream, TcpListenerStream},
};

/// The accepted connections, ready for HTTP/2.
type Incoming = Pin<Box<dyn Stream<Item = std::io::Result<Conn>> + Send>>;

/// Flips to `true` when the server starts shutting down.
pub(crate) type Shutdown = watch::Receiver<bool>;

/// HTTP/2 flow-control windows: large enough that one stream can carry a replay at disk speed.
const STREAM_WINDOW_BYTES: u32 = 8 * 1024 * 1024;
const CONNECTION_WINDOW_BYTES: u32 = 16 * 1024 * 1024;
/// The largest HTTP/2 frame the server accepts: big produce requests arrive in few frames.
const MAX_FRAME_BYTES: u32 = 1024 * 1024;
/// The bytes of requests being received or handled, all together, are at most this many times
/// `max_request_bytes` (see `budget.rs`): two maximum-size requests at once, or many smaller ones.
const REQUEST_BUDGET_FACTOR: usize = 2;
/// How long shutdown waits for clients to finish and disconnect before it stops regardless.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The gRPC transport failed.
    #[error("the gRPC server failed")]
    Transport(#[source] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("could not build the gRPC reflection service")]
    Reflection(#[source] tonic_reflection::server::Error),
    /// The TLS certificate, key or client CA could not be used.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The principals file could not be used.
    #[error(transparent)]
    Auth(#[from] auth::AuthFileError),
    /// The metrics listen address could not be bound.
    #[error("could not listen for metrics on {addr}")]
    MetricsListen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics could not be set up.
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    /// The brokers' internal port could not be bound.
    #[error("could not listen for the brokers' Raft traffic on {addr}")]
    RaftListen {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The broker's node id has no entry in its peers and no Raft listen address was given.
    #[error("node {node_id} is not among the peers and no Raft listen address was given")]
    NoRaftAddress {
        /// The node id.
        node_id: u64,
    },
}

/// TLS handshakes of the accepted connections, each in its own task (a slow client delays no
/// other), bounded by the handshake timeout; the connections whose handshake succeeded.
fn tls_handshakes(
    accepted: impl Stream<Item = std::io::Result<connections::Counted>> + Send + 'static,
    tls: Arc<tls::Tls>,
    timeout: std::time::Duration,
    mut shutdown: Shutdown,
) -> Incoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let mut accepted = std::pin::pin!(accepted);
        loop {
            let next = tokio::select! {
                next = accepted.next() => next,
                _ = shutdown.wait_for(|&stopping| stopping) => None,
            };
            let Some(next) = next else { break };
            let counted = match next {
                Ok(c) => c,
                Err(e) => {
                    if tx.send(Err(e)).await.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let acceptor = tls.acceptor();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(counted)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(Conn::tls(stream))).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// Reloads the TLS files and the principals file on every SIGHUP until shutdown; a reload that
/// fails keeps what was there.
fn reload_on_sighup(tls: Option<Arc<tls::Tls>>, auth: Arc<auth::Auth>, mut shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: TLS and principals files will not be reloaded");
            return;
        }
    };
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hangups.recv() => if got.is_none() { break },
                _ = shutdown.wait_for(|&stopping| stopping) => break,
            }
            if let Some(tls) = &tls {
                match tls.reload() {
                    Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            "SIGHUP: TLS reload failed; keeping the old certificate"
                        );
                    }
                }
            }
            if auth.enabled() {
                match auth.reload() {
                    Ok(principals) => tracing::info!(principals, "SIGHUP: principals reloaded"),
                    Err(e) => {
                        tracing::error!(
                            error = %e,
                            "SIGHUP: principals file reload failed; keeping the old principals"
                        );
                    }
                }
            }
        }
    });
}

/// Runs a broker call on the blocking pool (the broker is synchronous and may block on disk).
pub(crate) async fn blocking<T, E, F>(f: F) -> Result<T, RequestError>
where
    T: Send + 'static,
    E: Into<RequestError> + Send + 'static,
    F: FnOnce() -> Result<T, E> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(e) => Err(RequestError::TaskFailed {
            reason: e.to_string(),
        }),
    }
}

/// Serves `broker` on `listener` with `config`'s limits until `shutdown` completes, then shuts
/// down gracefully. Does not close the broker. `config.listen` is not read: the listener is
/// already bound.
pub async fn serve(
    listener: TcpListener,
    broker: Arc<Broker>,
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (tasks_tx, mut tasks_rx) = mpsc::channel::<()>(1);
    let max_request_bytes = config.max_request_bytes;
    let limit = connections::ConnectionLimit::new(config.max_connections, config.handshake_timeout);
    let tls = config
        .tls
        .clone()
        .map(tls::Tls::load)
        .transpose()?
        .map(Arc::new);
    let handshake_timeout = config.handshake_timeout;
    let auth = Arc::new(match &config.auth_file {
        Some(path) => auth::Auth::load(path.clone())?,
        None => auth::Auth::disabled(),
    });
    // Always: without a handler, SIGHUP (which the docs tell operators to send) would kill the
    // process.
    reload_on_sighup(tls.clone(), auth.clone(), shutdown_rx.clone());
    let budget = budget::RequestBudget::new(
        REQUEST_BUDGET_FACTOR.saturating_mul(max_request_bytes),
        max_request_bytes,
    );
    let metrics = match &config.metrics_listen {
        None => None,
        Some(addr) => {
            let listener =
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| ServeError::MetricsListen {
                        addr: addr.clone(),
                        source,
                    })?;
            let metrics = Arc::new(metrics::Metrics::new(
                broker.clone(),
                limit.clone(),
                budget.clone(),
                config.metrics_max_series,
                &[
                    FILE_DESCRIPTOR_SET,
                    tonic_health::pb::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
                    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
                ],
            )?);
            if let Ok(bound) = listener.local_addr() {
                tracing::info!(addr = %bound, "serving metrics on http://{bound}/metrics");
            }
            tokio::spawn(metrics::serve_metrics(
                listener,
                metrics.clone(),
                shutdown_rx.clone(),
            ));
            Some(metrics)
        }
    };
    let address = match &config.advertise {
        Some(a) => a.clone(),
        None => listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
    };
    if let Some(cluster) = broker.config().cluster.clone() {
        let raft_listen =
            match &config.raft_listen {
                Some(a) => a.clone(),
                None => cluster.peers.get(&cluster.node_id).cloned().ok_or(
                    ServeError::NoRaftAddress {
                        node_id: cluster.node_id,
                    },
                )?,
            };
        let raft_listener =
            TcpListener::bind(&raft_listen)
                .await
                .map_err(|source| ServeError::RaftListen {
                    addr: raft_listen.clone(),
                    source,
                })?;
        tracing::info!(addr = %raft_listen, node_id = cluster.node_id, "serving the brokers' Raft port");
        let mut stopping = shutdown_rx.clone();
        cluster::start(
            raft_listener,
            broker.clone(),
            &cluster,
            address.clone(),
            async move {
                let _ = stopping.wait_for(|&s| s).await;
            },
        );
    }
    let forwarder = broker
        .config()
        .cluster
        .as_ref()
        .map(|c| Arc::new(coordinated::Forwarder::new(c)));
    let strata = StrataServer::new(service::Service {
        address,
        broker,
        forwarder,
        auth: auth.clone(),
        config: Arc::new(config),
        shutdown: shutdown_rx.clone(),
        tasks: tasks_tx,
        metrics: metrics.clone(),
    })
    // The budget layer refuses a larger message first (RESOURCE_EXHAUSTED): tonic's own check, at
    // the same limit, is a backstop that no request reaches.
    .max_decoding_message_size(max_request_bytes)
    .max_encoding_message_size(usize::MAX);

    let (health, health_service) = tonic_health::server::health_reporter();
    let health_service = health_service.max_decoding_message_size(max_request_bytes);
    health.set_serving::<StrataServer<service::Service>>().await;
    // Reflection v1 and v1alpha (grpcurl 1.8 and several GUI clients speak only v1alpha).
    let reflection_builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflection_builder()
        .build_v1()
        .map_err(ServeError::Reflection)?
        .max_decoding_message_size(max_request_bytes);
    let reflection_v1alpha = reflection_builder()
        .build_v1alpha()
        .map_err(ServeError::Reflection)?
        .max_decoding_message_size(max_request_bytes);

    let accepted = TcpListenerStream::new(listener).filter_map(move |accepted| match accepted {
        Ok(stream) => {
            // Small responses (acks, long-poll wake-ups) must not wait for Nagle.
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY");
            }
            limit.admit(stream).map(Ok)
        }
        Err(e) => Some(Err(e)),
    });
    let incoming: Incoming = match &tls {
        None => Box::pin(accepted.map(|c| c.map(Conn::plain))),
        Some(tls) => tls_handshakes(
            accepted,
            tls.clone(),
            handshake_timeout,
            shutdown_rx.clone(),
        ),
    };
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: no new connections; ending subscriptions and long-polls");
        health
            .set_not_serving::<StrataServer<service::Service>>()
            .await;
        // Receivers also treat the sender's drop at the end of this block as shutdown.
        let _ = shutdown_tx.send(true);
    };

    let mut shutdown_seen = shutdown_rx.clone();
    let server = tonic::transport::Server::builder()
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .layer(observe::Observe::new(metrics))
        .layer(authenticate::Authenticate::new(auth))
        .layer(budget)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(reflection_v1alpha)
        .add_service(strata)
        .serve_with_incoming_shutdown(incoming, signal);
    let drained = async {
        server.await.map_err(ServeError::Transport)?;
        // Every subscription task has ended once the last clone of the task sender is gone.
        let _ = tasks_rx.recv().await;
        Ok::<(), ServeError>(())
    };
    // A client that never closes its connection must not keep the broker from exiting.
    let drain_deadline = async {
        let _ = shutdown_seen.wait_for(|&stopping| stopping).await;
        tokio::time::sleep(DRAIN_TIMEOUT).await;
    };
    tokio::select! {
        drained = drained => drained?,
        () = drain_deadline => {
            tracing::warn!(timeout = ?DRAIN_TIMEOUT, "clients did not disconnect in time; stopping anyway");
        }
    }
    tracing::info!("server stopped");
    Ok(())
}
