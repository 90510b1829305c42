//! [`ServerConfig`]: the settings of the network edge, and the one rule for a read's byte limit.
//! The broker's own settings (data directory, topic defaults and limits) are
//! [`crate::broker::BrokerConfig`]: a change to how clients reach the broker touches this file,
//! not the broker.

use super::RequestError;
use std::time::Duration;

/// The network edge's settings: where it listens, what it accepts from clients, and how much one
/// read carries.
///
/// [`super::serve`] takes an already bound listener, so `listen` is for whoever binds it
/// (`strata serve`); tests bind `127.0.0.1:0` themselves.
///
/// Room for what comes next (none of it exists yet; each goes here as its own field, and the
/// struct is `#[non_exhaustive]` so that adding one breaks no caller: build it with
/// [`ServerConfig::default`] and set fields):
///
/// - **An HTTP listener** (Server-Sent Events for subscriptions): its own listen address, served
///   next to the gRPC listener; it reads partitions through the same `Tail` as Subscribe
///   (`server/tail.rs`), takes its
///   byte limits from [`ServerConfig::push_bytes`], and maps [`RequestError`] to HTTP codes.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The address `strata serve` binds (`host:port`; port 0: any free port).
    pub listen: String,
    /// The largest request message accepted, in bytes: a larger one is refused with
    /// RESOURCE_EXHAUSTED before it is read. The requests being received or handled hold at most
    /// twice this between them (the request memory budget).
    pub max_request_bytes: usize,
    /// The most client connections open at once; one more is closed as soon as it is accepted.
    pub max_connections: usize,
    /// A connection that has not sent the HTTP/2 preface this long after it is accepted is closed.
    pub handshake_timeout: Duration,
    /// The most bytes one fetch carries, whatever it asks for (a single larger batch still goes
    /// whole).
    pub max_fetch_bytes: usize,
    /// The bytes a fetch or subscription carries per read when it does not say (`max_bytes` 0);
    /// at most `max_fetch_bytes`.
    pub default_fetch_bytes: usize,
    /// The longest a fetch may long-poll.
    pub max_wait: Duration,
    /// The largest pushed message (unless a single batch is larger), whatever the subscriber
    /// asks for. The queued messages of a subscription are slices of the segment maps, but the
    /// one being sent is copied when it is encoded and held until the subscriber's HTTP/2 window
    /// takes it: a subscriber that stops reading pins about two messages of memory. Larger
    /// messages would not make a stream faster, only make each stalled subscriber cost more
    /// (16 MiB messages: ~30 MiB each).
    pub max_push_bytes: usize,
    /// TLS for the listener (and mutual TLS with a client CA); `None`: plaintext.
    pub tls: Option<super::TlsFiles>,
    /// The principals file (`server/auth`): every request is authenticated and checked against
    /// its rules. `None`: every client is anonymous and may do everything.
    pub auth_file: Option<std::path::PathBuf>,
    /// Where to serve Prometheus metrics (`http://ADDR/metrics`, `host:port`); `None`: off.
    pub metrics_listen: Option<String>,
    /// The most per-partition and per-group series one scrape carries (see `server/metrics.rs`).
    pub metrics_max_series: usize,
    /// Where to serve the brokers' internal port (Raft traffic and the `Cluster` service,
    /// `host:port`) when the broker has cluster settings; `None`: the broker's own entry in
    /// its peers.
    pub raft_listen: Option<String>,
    /// The address clients are told to reach this broker at (leader hints, metadata); `None`:
    /// the bound listen address.
    pub advertise: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:50051".into(),
            max_request_bytes: 64 * 1024 * 1024,
            max_connections: 4096,
            handshake_timeout: Duration::from_secs(10),
            max_fetch_bytes: 16 * 1024 * 1024,
            default_fetch_bytes: 1024 * 1024,
            max_wait: Duration::from_secs(5 * 60),
            max_push_bytes: 1024 * 1024,
            tls: None,
            auth_file: None,
            metrics_listen: None,
            metrics_max_series: 10_000,
            raft_listen: None,
            advertise: None,
        }
    }
}

impl ServerConfig {
    /// The bytes one read may carry for a request's `max_bytes`: 0 is the default, a negative
    /// value is [`RequestError::InvalidArgument`], anything above `max_fetch_bytes` is capped.
    /// The one rule for every read a client asks for (fetch, and through
    /// [`ServerConfig::push_bytes`] every pushed message).
    pub fn fetch_bytes(&self, requested: i64) -> Result<usize, RequestError> {
        let default = self.default_fetch_bytes.min(self.max_fetch_bytes);
        match requested {
            0 => Ok(default),
            n if n < 0 => Err(RequestError::invalid(
                "max_bytes",
                format!(
                    "{n} is negative; use 0 for the default ({default} bytes) or up to {}",
                    self.max_fetch_bytes
                ),
            )),
            n => Ok(usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(self.max_fetch_bytes)),
        }
    }

    /// The bytes one pushed message may carry: [`ServerConfig::fetch_bytes`]'s rule, then capped
    /// at `max_push_bytes`.
    pub fn push_bytes(&self, requested: i64) -> Result<usize, RequestError> {
        Ok(self.fetch_bytes(requested)?.min(self.max_push_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_the_default_negative_is_refused_and_larger_is_capped() {
        let config = ServerConfig::default();
        assert_eq!(config.fetch_bytes(0).ok(), Some(1024 * 1024));
        assert_eq!(config.fetch_bytes(10).ok(), Some(10));
        assert_eq!(config.fetch_bytes(i64::MAX).ok(), Some(16 * 1024 * 1024));
        let err = config.fetch_bytes(-1).expect_err("negative");
        assert!(
            matches!(
                err,
                RequestError::InvalidArgument {
                    field: "max_bytes",
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("-1 is negative"), "{err}");
    }

    #[test]
    fn pushed_messages_are_also_capped_at_the_push_cap() {
        let config = ServerConfig::default();
        assert_eq!(config.push_bytes(0).ok(), Some(1024 * 1024));
        assert_eq!(config.push_bytes(100).ok(), Some(100));
        assert_eq!(config.push_bytes(8 * 1024 * 1024).ok(), Some(1024 * 1024));
        assert!(config.push_bytes(-5).is_err());
    }

    #[test]
    fn the_default_is_never_above_the_maximum() {
        let config = ServerConfig {
            max_fetch_bytes: 1000,
            ..ServerConfig::default()
        };
        assert_eq!(config.fetch_bytes(0).ok(), Some(1000));
        assert_eq!(config.push_bytes(0).ok(), Some(1000));
    }
}
