//! Which broker to send a partition's writes to, in a cluster (issue 16): the broker the client
//! was given until a refusal names the partition's leader, then that leader; when a broker goes
//! away, whichever of the cluster's brokers still answers says who leads now (`Metadata`).
//!
//! A broker without cluster settings never refuses for leadership, so a producer of a single
//! broker keeps its one connection.

use super::{Channel, ConnectOptions, connect_with, raw};
use crate::proto::{
    self,
    keys::{LEADER_ADDRESS, NOT_LEADER},
    strata_client::StrataClient,
};
use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
};
use tonic::{Code, Status};

/// What a failed write says about where to send it next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Redirect {
    /// Not a leadership matter.
    None,
    /// The replica does not lead the partition; the leader is at this address, if it said.
    NotLeader(Option<String>),
    /// The broker could not be reached or went away: ask the others who leads.
    Gone,
}

impl Redirect {
    pub(crate) fn of(status: &Status) -> Redirect {
        let metadata = status.metadata();
        if metadata.get(NOT_LEADER).is_some() {
            let address = metadata
                .get(LEADER_ADDRESS)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            return Redirect::NotLeader(address);
        }
        if status.code() == Code::Unavailable {
            return Redirect::Gone;
        }
        Redirect::None
    }
}

/// Whether a failed write may go again, after [`Leaders::redirect`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resend {
    /// At once, to the leader the refusal named (nothing was stored).
    Now,
    /// After a backoff: no leader was named (an election), nothing was stored.
    AfterBackoff,
    /// As the caller's own rules for a failure say (it may have been stored).
    IfSafe,
}

/// The connections of one topic's writes: the given broker's, and each partition's leader's
/// once known.
#[derive(Debug)]
pub(crate) struct Leaders {
    topic: String,
    given: StrataClient<Channel>,
    options: ConnectOptions,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Per partition, the address its writes go to (absent: the given broker).
    routes: HashMap<u32, String>,
    /// Connections by address.
    clients: HashMap<String, StrataClient<Channel>>,
    /// Every broker address learned from metadata, to ask when the routed one is gone.
    brokers: Vec<String>,
}

impl Leaders {
    pub(crate) fn new(topic: &str, given: StrataClient<Channel>, options: ConnectOptions) -> Self {
        Leaders {
            topic: topic.to_owned(),
            given,
            options,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connection to send `partition`'s writes on now.
    pub(crate) fn client(&self, partition: u32) -> StrataClient<Channel> {
        let state = self.state();
        state
            .routes
            .get(&partition)
            .and_then(|a| state.clients.get(a))
            .cloned()
            .unwrap_or_else(|| self.given.clone())
    }

    /// Learns the cluster's brokers (best effort: a broker without the rpc has none to tell).
    pub(crate) async fn learn(&self) {
        let mut given = self.given.clone();
        if let Ok(m) = given
            .metadata(proto::MetadataRequest {
                topics: vec![self.topic.clone()],
            })
            .await
        {
            self.remember(&m.into_inner());
        }
    }

    fn remember(&self, m: &proto::MetadataResponse) {
        let mut state = self.state();
        for b in m.brokers.iter().filter(|b| !b.address.is_empty()) {
            if !state.brokers.contains(&b.address) {
                state.brokers.push(b.address.clone());
            }
        }
    }

    /// After a write to `partition` failed with `status`: points the partition at its leader
    /// (as the refusal named it, or as any broker that answers says), and says whether the
    /// write may go again because of it.
    pub(crate) async fn redirect(&self, partition: u32, status: &Status) -> Resend {
        match Redirect::of(status) {
            Redirect::None => Resend::IfSafe,
            Redirect::NotLeader(Some(address)) => {
                if self.route(partition, &address).await {
                    Resend::Now
                } else {
                    Resend::AfterBackoff
                }
            }
            Redirect::NotLeader(None) => {
                // An election is on: whoever answers may know the winner soon.
                self.find_leader(partition).await;
                Resend::AfterBackoff
            }
            Redirect::Gone => {
                self.state().routes.remove(&partition);
                self.find_leader(partition).await;
                Resend::IfSafe
            }
        }
    }

    /// Routes `partition` to the broker at `address`; false if it cannot be reached.
    async fn route(&self, partition: u32, address: &str) -> bool {
        let known = self.state().clients.contains_key(address);
        if !known {
            match connect_with(address, &self.options).await {
                Ok(channel) => {
                    self.state()
                        .clients
                        .insert(address.to_owned(), raw(channel));
                }
                Err(e) => {
                    tracing::debug!(%address, error = %e, "cannot reach the partition's leader");
                    return false;
                }
            }
        }
        self.state().routes.insert(partition, address.to_owned());
        true
    }

    /// Asks the known brokers, in turn, who leads `partition`, and routes to it.
    async fn find_leader(&self, partition: u32) {
        let brokers = self.state().brokers.clone();
        for address in brokers {
            let Ok(channel) = connect_with(&address, &self.options).await else {
                continue;
            };
            let Ok(m) = raw(channel)
                .metadata(proto::MetadataRequest {
                    topics: vec![self.topic.clone()],
                })
                .await
            else {
                continue;
            };
            let m = m.into_inner();
            self.remember(&m);
            let leader = m
                .topics
                .iter()
                .find(|t| t.name == self.topic)
                .and_then(|t| t.partitions.iter().find(|p| p.partition == partition))
                .and_then(|p| p.leader);
            let address = leader.and_then(|l| {
                m.brokers
                    .iter()
                    .find(|b| b.node_id == l && !b.address.is_empty())
                    .map(|b| b.address.clone())
            });
            if let Some(address) = address
                && self.route(partition, &address).await
            {
                return;
            }
        }
    }
}
