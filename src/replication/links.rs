//! A broker's links to the other brokers' Raft ports, shared by all its Raft groups: a few
//! HTTP/2 connections per broker (every group's requests multiplex over them, instead of one
//! connection per group and broker), and when each broker was last heard from. Hearing from a
//! broker, by any reply or by a ping when nothing else went, stands in for the heartbeats of
//! every partition group it leads (`quiet.rs`).

use crate::proto::raft::{PingReply, PingRequest, raft_client::RaftClient};
use std::{
    collections::HashMap,
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime},
};
use tonic::transport::{Channel, Endpoint};

/// How many connections a broker keeps to each other broker: groups are spread over them by
/// name, so one connection's ordering and flow control do not hold up every group.
const CONNECTIONS_PER_BROKER: usize = 4;

/// How long a connection attempt to another broker may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// One broker's links to the others (cheap to clone; clones share them).
#[derive(Clone)]
pub struct RaftLinks {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: u64,
    incarnation: u64,
    liveness_window: Duration,
    channels: Mutex<HashMap<(u64, String), Vec<Channel>>>,
    heard: Mutex<HashMap<u64, Heard>>,
}

/// What this broker last heard from another.
#[derive(Debug, Clone, Copy)]
struct Heard {
    at: Instant,
    /// Its incarnation, once a ping told it.
    incarnation: Option<u64>,
    /// When it was last heard after a silence of a liveness window or more, or restarted: a
    /// leader sends heartbeats for a while after that, so its replicas learn who leads.
    back_at: Instant,
}

impl RaftLinks {
    /// The links of broker `node_id`, which draws its incarnation now; another broker counts as
    /// up while it was heard from within `liveness_window` (the shortest election timeout).
    pub fn new(node_id: u64, liveness_window: Duration) -> Self {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Truncation is fine: any change from one start to the next will do.
        #[allow(clippy::cast_possible_truncation)]
        let incarnation = (nanos as u64) ^ u64::from(std::process::id()).rotate_left(40);
        RaftLinks {
            inner: Arc::new(Inner {
                node_id,
                incarnation,
                liveness_window,
                channels: Mutex::default(),
                heard: Mutex::default(),
            }),
        }
    }

    /// This broker's node id.
    pub fn node_id(&self) -> u64 {
        self.inner.node_id
    }

    /// The number this broker drew when it started.
    pub fn incarnation(&self) -> u64 {
        self.inner.incarnation
    }

    /// A connection to broker `target` at `addr` for the requests of `group` (the same one for
    /// a group every time, so they stay in order), or for pings (`None`: a connection of their
    /// own). Connects on first use and again after a failure.
    pub(super) fn channel(
        &self,
        target: u64,
        addr: &str,
        group: Option<&str>,
    ) -> Result<Channel, String> {
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let key = (target, addr.to_owned());
        if !channels.contains_key(&key) {
            let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                .map_err(|e| format!("{addr}: {e}"))?
                .connect_timeout(CONNECT_TIMEOUT)
                .tcp_nodelay(true);
            // One more, of the pings' own: queued group requests never hold up a ping.
            let pool = (0..=CONNECTIONS_PER_BROKER)
                .map(|_| endpoint.connect_lazy())
                .collect();
            channels.insert(key.clone(), pool);
        }
        let pool = channels.get(&key).ok_or("no connection")?;
        let mut hasher = DefaultHasher::new();
        group.hash(&mut hasher);
        let which = usize::try_from(hasher.finish() % CONNECTIONS_PER_BROKER as u64).unwrap_or(0);
        pool.get(which)
            .cloned()
            .ok_or_else(|| "no connection".into())
    }

    /// Notes a reply from broker `target` (its `incarnation` if the reply told it).
    pub(super) fn heard_from(&self, target: u64, incarnation: Option<u64>) {
        let now = Instant::now();
        let window = self.liveness_window();
        let mut heard = self
            .inner
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = heard.entry(target).or_insert(Heard {
            at: now,
            incarnation,
            back_at: now,
        });
        let silent = now.duration_since(entry.at) >= window;
        let restarted = matches!((entry.incarnation, incarnation), (Some(a), Some(b)) if a != b);
        if silent || restarted {
            entry.back_at = now;
        }
        entry.at = now;
        if incarnation.is_some() {
            entry.incarnation = incarnation;
        }
    }

    /// How long a broker may go unheard and still count as up.
    pub fn liveness_window(&self) -> Duration {
        self.inner.liveness_window
    }

    /// Whether broker `node` was heard from within the liveness window (this broker always is).
    pub fn is_up(&self, node: u64) -> bool {
        if node == self.inner.node_id {
            return true;
        }
        let window = self.liveness_window();
        self.heard(node).is_some_and(|h| h.at.elapsed() < window)
    }

    /// Whether broker `node` came back (first heard, heard after a silence, or restarted)
    /// within `within`.
    pub fn came_back_within(&self, node: u64, within: Duration) -> bool {
        self.heard(node)
            .is_some_and(|h| h.back_at.elapsed() < within)
    }

    /// How long since `node` was last heard from, if ever.
    pub fn silent_for(&self, node: u64) -> Option<Duration> {
        self.heard(node).map(|h| h.at.elapsed())
    }

    fn heard(&self, node: u64) -> Option<Heard> {
        self.inner
            .heard
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&node)
            .copied()
    }

    /// Asks broker `target` at `addr` whether it is up; notes its answer.
    pub async fn ping(&self, target: u64, addr: &str, timeout: Duration) -> Result<(), String> {
        let channel = self.channel(target, addr, None)?;
        let mut request = tonic::Request::new(PingRequest {
            from: self.inner.node_id,
        });
        request.set_timeout(timeout);
        let PingReply {
            node_id,
            incarnation,
        } = RaftClient::new(channel)
            .ping(request)
            .await
            .map_err(|e| format!("node {target} at {addr}: {e}"))?
            .into_inner();
        if node_id != target {
            return Err(format!(
                "{addr} answers as node {node_id}, not node {target}: check --peers"
            ));
        }
        self.heard_from(target, Some(incarnation));
        Ok(())
    }
}
