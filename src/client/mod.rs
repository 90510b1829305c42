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
mod leaders;
mod member;
mod producer;

pub use admin::{
    Admin, BrokerInfo, ClusterMetadata, FsyncPolicy, GroupDescription, GroupLag, GroupMember,
    PartitionInfo, PartitionMetadata, PartitionOffsets, TopicDescription, TopicInfo, TopicMetadata,
    TopicSettings,
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
/// Its `Debug` shows whether a token is set, never the token.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    /// The bearer token sent with every call, for a broker with a principals file. Sent only
    /// over TLS (`https://`) or to a loopback address, unless `plaintext_token` says otherwise.
    pub token: Option<String>,
    /// Sends the token over plain `http://` to a host that is not loopback: for a network the
    /// caller trusts (a TLS-terminating sidecar on the same host), since anyone on the path can
    /// read it.
    pub plaintext_token: bool,
    /// PEM CA certificates the broker's certificate must chain to; `None` with `https://`: the
    /// system's roots.
    pub tls_ca: Option<std::path::PathBuf>,
    /// PEM client certificate chain, for a broker that requires client certificates (mutual
    /// TLS); with `tls_key`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("plaintext_token", &self.plaintext_token)
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .finish()
    }
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
///
/// Several brokers of a cluster, comma-separated (`HOST:PORT,HOST:PORT,...`), make one channel
/// that spreads calls over those that answer (tonic's balancing channel): any broker serves
/// reads and takes group requests, so a consumer on it rides out the death of any one of them.
/// At least one must answer now.
pub async fn connect_with(url: &str, options: &ConnectOptions) -> Result<Channel, ClientError> {
    let urls: Vec<&str> = url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect();
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
    let [one] = urls.as_slice() else {
        if urls.is_empty() {
            return Err(ClientError::InvalidUrl {
                url: url.to_string(),
                reason: "no broker address".into(),
            });
        }
        let endpoints = urls
            .iter()
            .map(|u| endpoint(u, options))
            .collect::<Result<Vec<_>, _>>()?;
        // Fail at once, as for one broker, if none answers.
        let mut last = None;
        for e in &endpoints {
            match e.connect().await {
                Ok(_) => {
                    last = None;
                    break;
                }
                Err(err) => last = Some(err),
            }
        }
        if let Some(e) = last {
            return Err(ClientError::Connect {
                url: url.to_string(),
                source: std::sync::Arc::new(e),
            });
        }
        return Ok(Channel {
            inner: tonic::transport::Channel::balance_list(endpoints.into_iter()),
            authorization,
        });
    };
    let endpoint = endpoint(one, options)?;
    let inner = endpoint.connect().await.map_err(|e| ClientError::Connect {
        url: broker_url(one, options),
        source: std::sync::Arc::new(e),
    })?;
    Ok(Channel {
        inner,
        authorization,
    })
}

/// The endpoint of one broker URL, with the client's settings, checked as [`connect_with`] says.
fn endpoint(given: &str, options: &ConnectOptions) -> Result<Endpoint, ClientError> {
    let url = broker_url(given, options);
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
    token_may_travel(&url, endpoint.uri().host(), options)?;
    Ok(endpoint)
}

/// A token goes only over TLS or to this machine, unless `options.plaintext_token` says the
/// network is trusted.
fn token_may_travel(
    url: &str,
    host: Option<&str>,
    options: &ConnectOptions,
) -> Result<(), ClientError> {
    if options.token.is_none()
        || options.plaintext_token
        || url.starts_with("https://")
        || host.is_some_and(is_loopback)
    {
        return Ok(());
    }
    Err(ClientError::BadToken {
        reason: format!(
            "{url} is plain http:// to a host that is not loopback, where anyone on the path \
             could read the token; use https:// (--tls-ca), or say the network is trusted \
             (--plaintext-token)"
        ),
    })
}

/// Whether a URL's host names this machine: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with_token() -> ConnectOptions {
        ConnectOptions {
            token: Some("strata_secret".into()),
            ..ConnectOptions::default()
        }
    }

    #[test]
    fn a_token_goes_over_tls_or_to_loopback_only() {
        let token = with_token();
        for (url, host) in [
            ("http://127.0.0.1:7000", "127.0.0.1"),
            ("http://127.8.9.10:7000", "127.8.9.10"),
            ("http://localhost:7000", "localhost"),
            ("http://[::1]:7000", "[::1]"),
            ("https://broker.example:7000", "broker.example"),
        ] {
            assert!(token_may_travel(url, Some(host), &token).is_ok(), "{url}");
        }
        for (url, host) in [
            ("http://broker.example:7000", "broker.example"),
            ("http://10.1.2.3:7000", "10.1.2.3"),
            ("http://[2001:db8::1]:7000", "[2001:db8::1]"),
        ] {
            let refused = token_may_travel(url, Some(host), &token).unwrap_err();
            assert!(refused.to_string().contains("plain http://"), "{refused}");
            let trusted = ConnectOptions {
                plaintext_token: true,
                ..with_token()
            };
            assert!(token_may_travel(url, Some(host), &trusted).is_ok(), "{url}");
            let tokenless = ConnectOptions::default();
            assert!(
                token_may_travel(url, Some(host), &tokenless).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let shown = format!("{:?}", with_token());
        assert!(!shown.contains("strata_secret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
}
