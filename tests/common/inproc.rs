//! The broker and its real gRPC server in this process, on 127.0.0.1:0: beside the
//! binary-spawning [`super::Server`], for tests that need to reach inside the broker, above all to
//! give it a fault injector (`BrokerConfig::faults`) and see the broker's faults over real gRPC.
//! Used through `mod common;` as `common::inproc::InProc`.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use super::{Client, connect};
use std::{net::SocketAddr, path::PathBuf, sync::Arc};
use strata::broker::{Broker, BrokerConfig};
use strata::server::{ServeError, ServerConfig, serve};
use strata::storage::FaultInjector;
use tokio::{sync::oneshot, task::JoinHandle};

/// A broker served in-process until [`InProc::stop`] (or until dropped: the server is then told to
/// stop, and the broker is not closed).
pub struct InProc {
    /// The address the server listens on.
    pub addr: SocketAddr,
    /// The broker, to call directly beside the gRPC clients.
    pub broker: Arc<Broker>,
    /// What it was opened with (for [`InProc::restart`]).
    pub config: BrokerConfig,
    server_config: ServerConfig,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), ServeError>>>,
    /// The temporary data directory, when the harness made it.
    dir: Option<tempfile::TempDir>,
}

impl InProc {
    /// A broker with the default config in a new temporary directory.
    pub async fn start() -> InProc {
        Self::in_temp_dir(|config| config).await
    }

    /// Like [`InProc::start`], with every file operation of the broker going through `faults`.
    pub async fn start_with_faults(faults: Arc<dyn FaultInjector>) -> InProc {
        Self::in_temp_dir(|config| BrokerConfig {
            faults: Some(faults),
            ..config
        })
        .await
    }

    /// A broker opened with `config` (its data directory is the caller's), served with the
    /// default [`ServerConfig`].
    pub async fn start_with(config: BrokerConfig) -> InProc {
        Self::start_served(config, ServerConfig::default()).await
    }

    /// A broker opened with `config`, served with `server` (build it with
    /// `ServerConfig::default()` and set fields: it is `#[non_exhaustive]`).
    pub async fn start_served(config: BrokerConfig, server: ServerConfig) -> InProc {
        Self::open(config, server, None).await
    }

    async fn open(
        config: BrokerConfig,
        server: ServerConfig,
        dir: Option<tempfile::TempDir>,
    ) -> InProc {
        let broker = Broker::open(config.clone()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, broker.clone(), server.clone(), async {
            let _ = stopped.await;
        }));
        InProc {
            addr,
            broker,
            config,
            server_config: server,
            stop: Some(stop),
            served: Some(served),
            dir,
        }
    }

    async fn in_temp_dir(config: impl FnOnce(BrokerConfig) -> BrokerConfig) -> InProc {
        let dir = tempfile::tempdir().unwrap();
        let config = config(BrokerConfig::new(dir.path()));
        Self::open(config, ServerConfig::default(), Some(dir)).await
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The broker's URL, as `strata::client::connect` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A new client connection.
    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// Shuts the server down gracefully (its clients should be dropped first, or it waits for
    /// them up to its drain timeout), then closes the broker, which must succeed.
    pub async fn stop(self) {
        self.stop_closing().await.unwrap();
    }

    /// Like [`InProc::stop`], returning what closing the broker returned (a poisoned partition
    /// cannot be closed cleanly).
    pub async fn stop_closing(self) -> strata::broker::Result<()> {
        self.shut_down().await.0
    }

    /// Stops (closing the broker must succeed), then opens the same data directory with the same
    /// configs (and fault injector) again, on a new port.
    pub async fn restart(self) -> InProc {
        let (closed, restarted) = self.restart_closing().await;
        closed.unwrap();
        restarted
    }

    /// Like [`InProc::restart`], with what closing the broker returned.
    pub async fn restart_closing(self) -> (strata::broker::Result<()>, InProc) {
        let (config, server) = (self.config.clone(), self.server_config.clone());
        let (closed, dir) = self.shut_down().await;
        (closed, Self::open(config, server, dir).await)
    }

    async fn shut_down(mut self) -> (strata::broker::Result<()>, Option<tempfile::TempDir>) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        (self.broker.close(), self.dir.take())
    }
}

impl Drop for InProc {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
