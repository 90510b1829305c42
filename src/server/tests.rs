//! The server in-process: `serve` on 127.0.0.1:0 with a chosen `ServerConfig`, over a broker in a
//! temporary directory, called through the generated client.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use super::{ServerConfig, serve};
use crate::broker::{Broker, BrokerConfig};
use crate::proto::{self, strata_client::StrataClient};
use bytes::Bytes;
use std::{net::SocketAddr, sync::Arc};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::{Code, transport::Channel};

/// A broker served in-process until dropped or stopped.
pub(super) struct Running {
    pub addr: SocketAddr,
    pub broker: Arc<Broker>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), super::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    pub(super) async fn start(config: ServerConfig) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = tokio::spawn(serve(listener, broker.clone(), config, async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            broker,
            stop: Some(stop),
            served: Some(served),
            _dir: dir,
        }
    }

    pub(super) async fn client(&self) -> StrataClient<Channel> {
        StrataClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    /// Starts the shutdown and waits until `serve` returns.
    pub(super) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        self.broker.close().unwrap();
    }
}

pub(super) async fn create_topic(client: &mut StrataClient<Channel>, name: &str) {
    client
        .create_topic(proto::CreateTopicRequest {
            name: name.into(),
            partitions: 1,
            config: None,
            replication_factor: 0,
        })
        .await
        .unwrap();
}

#[tokio::test]
async fn a_request_over_max_request_bytes_is_resource_exhausted_naming_size_and_limit() {
    let config = ServerConfig {
        max_request_bytes: 64 * 1024,
        ..ServerConfig::default()
    };
    let server = Running::start(config).await;
    let mut client = server.client().await;
    create_topic(&mut client, "t").await;

    let produce = |value: usize| proto::ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![proto::Record {
            value: Bytes::from(vec![b'v'; value]),
            ..proto::Record::default()
        }],
        batch: Bytes::new(),
    };
    client.produce(produce(1000)).await.unwrap();
    let status = client.produce(produce(100 * 1024)).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().starts_with("the request is too large: ")
            && status
                .message()
                .contains("over the broker's limit of 65536 bytes"),
        "{status:?}"
    );
    // The health service has the same limit, and the same code for a request over it.
    let channel = Channel::from_shared(format!("http://{}", server.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    let status = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "x".repeat(100 * 1024),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    server.stop().await;
}
