//! The Rust client: [`Producer`], [`Consumer`] and [`Admin`] over one gRPC [`Channel`].
//!
//! It depends on the generated protocol ([`crate::proto`]) and the record format
//! ([`crate::record`]) only, never on the broker or storage. The producer encodes batches itself
//! and routes keys with the broker's own partitioner ([`crate::record::partition_for_key`]); the
//! consumer checks every batch's CRC as it decodes it.
//!
//! ```no_run
//! # async fn run() -> Result<(), strata::client::ClientError> {
//! use strata::client::{self, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, TopicSettings};
//!
//! let channel = client::connect("http://127.0.0.1:50051").await?;
//! Admin::new(channel.clone()).create_topic("signups", 3, &TopicSettings::default()).await?;
//!
//! let producer = Producer::new(channel.clone(), "signups", ProducerConfig::default()).await?;
//! let delivery = producer.send(ProducerRecord::new("hello").key("user-1")).await?;
//! let at = delivery.await?;
//! println!("partition {} offset {}", at.partition, at.offset);
//!
//! let mut consumer = Consumer::new(channel, "signups", ConsumerConfig::group("mailer")).await?;
//! if let Some(record) = consumer.next().await? {
//!     println!("{:?}", record.value);
//! }
//! consumer.commit().await?;
//! # Ok(()) }
//! ```

mod admin;
mod batches;
mod consumer;
mod error;
mod member;
mod producer;

pub use admin::{
    Admin, FsyncPolicy, GroupDescription, GroupLag, GroupMember, PartitionInfo, PartitionOffsets,
    TopicDescription, TopicInfo, TopicSettings,
};
pub use batches::{BatchSubscription, PushedBatches};
pub use consumer::{Consumer, ConsumerConfig, ConsumerRecord, Seek};
pub use error::ClientError;
pub use producer::{Delivery, Producer, ProducerConfig, ProducerRecord, RecordMetadata};

use crate::proto::strata_client::StrataClient;
use std::time::Duration;
use tonic::transport::Endpoint;

/// The broker URL used when none is given.
pub const DEFAULT_BROKER: &str = "http://127.0.0.1:50051";

/// The largest response the client decodes: the broker's largest fetch (16 MiB by default)
/// plus one oversized batch, with room to spare.
const MAX_RESPONSE_BYTES: usize = 1 << 30;

/// A connection to the broker (one HTTP/2 connection, shared by every clone), which sends the
/// bearer token of [`ConnectOptions::token`] with every call.
#[derive(Debug, Clone)]
pub struct Channel {
    inner: tonic::transport::Channel,
    authorization: Option<tonic::codegen::http::HeaderValue>,
}

impl tower::Service<tonic::codegen::http::Request<tonic::body::Body>> for Channel {
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = tonic::transport::Error;
    type Future = tonic::transport::channel::ResponseFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(
        &mut self,
        mut request: tonic::codegen::http::Request<tonic::body::Body>,
    ) -> Self::Future {
        if let Some(value) = &self.authorization {
            request
                .headers_mut()
                .insert(tonic::codegen::http::header::AUTHORIZATION, value.clone());
        }
        tower::Service::call(&mut self.inner, request)
    }
}

/// How to reach the broker beyond its URL: TLS material (with an `https://` URL) and a token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The bearer token sent with every call, for a broker with a principals file.
    pub token: Option<String>,
    /// PEM CA certificates the broker's certificate must chain to; `None` with `https://`: the
    /// system's roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate chain, for a broker that requires client certificates (mutual
    /// TLS); with `tls_key`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
}

impl ConnectOptions {
    /// True when any TLS material is set.
    pub fn has_tls(&self) -> bool {
        self.tls_ca.is_some() || self.tls_cert.is_some() || self.tls_key.is_some()
    }
}

/// `url` with a scheme: `host:port` alone gets `https://` when TLS material is set, else
/// `http://`.
pub fn broker_url(url: &str, options: &ConnectOptions) -> String {
    if url.contains("://") {
        url.to_string()
    } else if options.has_tls() {
        format!("https://{url}")
    } else {
        format!("http://{url}")
    }
}

/// Connects to the broker at `url` (`http://HOST:PORT`). Fails at once if nothing listens there.
/// The channel is cheap to clone; every clone shares one HTTP/2 connection, on which calls run
/// concurrently.
pub async fn connect(url: &str) -> Result<Channel, ClientError> {
    connect_with(url, &ConnectOptions::default()).await
}

/// [`connect`] with TLS: `https://` URLs use TLS, with `options`' CA (else the system's roots)
/// and, for mutual TLS, its client certificate. A URL without a scheme is taken as
/// [`broker_url`] says.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Channel, ClientError> {
    let given = url;
    let url = broker_url(url, options);
    let invalid = |reason: String| ClientError::InvalidUrl {
        url: given.to_string(),
        reason,
    };
    let mut endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| invalid(e.to_string()))?
        .connect_timeout(Duration::from_secs(5))
        .tcp_nodelay(true)
        // A connection that goes silent (the broker's host gone, a half-open socket) is found
        // within about 30 s and dropped, so that calls fail over to a fresh one.
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        // Windows large enough that one stream carries a replay at memory speed, and frames as
        // large as the broker accepts, so a 1 MiB batch crosses in one frame.
        .initial_stream_window_size(8 << 20)
        .initial_connection_window_size(16 << 20)
        .max_frame_size(1 << 20);
    if url.starts_with("https://") {
        endpoint = endpoint
            .tls_config(tls_config(options)?)
            .map_err(|e| invalid(e.to_string()))?;
    } else if options.has_tls() {
        return Err(invalid(
            "TLS files are given, but the URL is not https:// (use https://HOST:PORT)".into(),
        ));
    }
    let authorization = match &options.token {
        Some(token) => {
            let mut value = tonic::codegen::http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::BadToken {
                    reason: "it holds characters a header cannot carry".into(),
                })?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let inner = endpoint.connect().await.map_err(|e| ClientError::Connect {
        url: url.clone(),
        source: std::sync::Arc::new(e),
    })?;
    Ok(Channel {
        inner,
        authorization,
    })
}

fn tls_config(options: &ConnectOptions) -> Result<tonic::transport::ClientTlsConfig, ClientError> {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let read = |path: &std::path::Path, what: &'static str| {
        std::fs::read(path).map_err(|e| ClientError::Tls {
            reason: format!("cannot read the {what} {}: {e}", path.display()),
        })
    };
    let mut config = ClientTlsConfig::new();
    config = match &options.tls_ca {
        Some(ca) => config.ca_certificate(Certificate::from_pem(read(ca, "CA file")?)),
        None => config.with_native_roots(),
    };
    match (&options.tls_cert, &options.tls_key) {
        (Some(cert), Some(key)) => {
            config = config.identity(Identity::from_pem(
                read(cert, "client certificate")?,
                read(key, "client key")?,
            ));
        }
        (None, None) => {}
        _ => {
            return Err(ClientError::Tls {
                reason: "a client certificate needs its key, and a key its certificate \
                         (--tls-cert and --tls-key)"
                    .into(),
            });
        }
    }
    Ok(config)
}

/// The generated client over `channel`, with the response limit raised for large fetches.
fn raw(channel: Channel) -> StrataClient<Channel> {
    StrataClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES)
}
