//! The brokers' Raft traffic over gRPC (`proto/strata/raft/v1/raft.proto`), on a port of its
//! own: [`RaftClients`] makes openraft's connections to other brokers, and [`RaftService`]
//! answers them by handing each request to the partition's Raft group it names. Bodies are
//! openraft's messages in bincode (standard configuration, serde).

use super::{
    groups::{GroupMember, PartitionGroups, Raft},
    links::RaftLinks,
    state_machine::SnapshotPosition,
    types::{PartitionRaft, SnapshotMeta, Vote},
};
use crate::proto::raft::{
    PingReply, PingRequest, RaftReply, RaftRequest,
    raft_client::RaftClient,
    raft_server::{Raft as RaftRpc, RaftServer},
};
use openraft::{
    BasicNode, OptionalSend, RaftNetworkFactory, Snapshot,
    alias::SnapshotOf,
    errors::{
        Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable,
    },
    network::{RPCOption, RaftNetworkV2},
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Serialize, de::DeserializeOwned};
use std::{future::Future, sync::Arc, time::Duration};
use tonic::{Request, Response, Status};

/// How long a request for a group this broker does not have waits for it to be made (a new
/// topic's, which the controller's log makes on each broker when it applies it).
const WAIT_FOR_GROUP: Duration = Duration::from_millis(500);

/// How many requests one connection to the Raft port may have open at once.
const MAX_STREAMS_PER_CONNECTION: u32 = 16_384;

/// The least time a request may take, whatever openraft's budget: an AppendEntries is answered
/// after the follower's fsync, which on a loaded disk takes longer than a heartbeat interval.
const MIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How fast a request's body is assumed to travel, for its deadline (bytes per second).
const ASSUMED_BYTES_PER_SECOND: u64 = 50 << 20;

/// The deadline of a request of `body_len` bytes, given openraft's `ttl`.
fn request_timeout(ttl: Duration, body_len: usize) -> Duration {
    let transfer = Duration::from_millis(
        u64::try_from(body_len).unwrap_or(u64::MAX) / (ASSUMED_BYTES_PER_SECOND / 1000),
    );
    ttl.max(MIN_REQUEST_TIMEOUT) + transfer
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, String> {
    bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (value, used) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err("trailing bytes".into());
    }
    Ok(value)
}

/// A whole snapshot as sent: the leader's vote, the metadata, the position.
#[derive(serde::Serialize, serde::Deserialize)]
struct SnapshotMessage {
    vote: Vote,
    meta: SnapshotMeta,
    next_offset: u64,
}

/// What the network does with a request from one broker to another: the network's fault seam
/// (as `storage::FaultInjector` is the disk's), for tests that cut and slow links.
pub trait LinkFaults: Send + Sync {
    /// Called before each request from node `from` to node `to`.
    fn link(&self, from: u64, to: u64) -> Link;
}

/// The state of a link, as [`LinkFaults`] decides it for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// The request goes.
    Up,
    /// The request fails as an unreachable broker's would.
    Down,
    /// The request goes after this long.
    Delayed(Duration),
}

/// Makes openraft's connections from one partition's Raft group to the same group on other
/// brokers, addressed by the `addr` of their `BasicNode` (host:port of their Raft service),
/// over the broker's shared [`RaftLinks`].
#[derive(Clone)]
pub struct RaftClients {
    group: String,
    links: RaftLinks,
    faults: Option<Arc<dyn LinkFaults>>,
}

impl RaftClients {
    /// Connections for the Raft group `group` ("topic/partition") over `links` (the broker's).
    pub fn new(links: RaftLinks, group: impl Into<String>) -> Self {
        RaftClients {
            group: group.into(),
            links,
            faults: None,
        }
    }

    /// The same, with every request passed through `faults` first.
    #[must_use]
    pub fn with_faults(mut self, faults: Arc<dyn LinkFaults>) -> Self {
        self.faults = Some(faults);
        self
    }
}

impl RaftNetworkFactory<PartitionRaft> for RaftClients {
    type Network = RaftConnection;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> RaftConnection {
        RaftConnection {
            group: self.group.clone(),
            links: self.links.clone(),
            target,
            addr: node.addr.clone(),
            faults: self.faults.clone(),
        }
    }
}

/// One group's connection to one other broker: one of the broker's shared links to it.
pub struct RaftConnection {
    group: String,
    links: RaftLinks,
    target: u64,
    addr: String,
    faults: Option<Arc<dyn LinkFaults>>,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    PreVote,
    Snapshot,
}

/// Why a call failed, before it is put in the error type its rpc returns.
enum CallError {
    /// No connection, or the broker's Raft group is gone or shut down: back off.
    Unreachable(String),
    /// The connection broke or the reply made no sense: retry.
    Network(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl<C: openraft::RaftTypeConfig> From<CallError> for RPCError<C> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(m) => RPCError::Unreachable(Unreachable::new(&Message(m))),
            CallError::Network(m) => RPCError::Network(NetworkError::new(&Message(m))),
        }
    }
}

impl<C: openraft::RaftTypeConfig> From<CallError> for StreamingError<C> {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable(m) => StreamingError::Unreachable(Unreachable::new(&Message(m))),
            CallError::Network(m) => StreamingError::Network(NetworkError::new(&Message(m))),
        }
    }
}

impl RaftConnection {
    async fn call(&mut self, rpc: Rpc, body: Vec<u8>, ttl: Duration) -> Result<Vec<u8>, CallError> {
        match self
            .faults
            .as_ref()
            .map(|f| f.link(self.links.node_id(), self.target))
        {
            Some(Link::Down) => {
                return Err(CallError::Unreachable(format!(
                    "link {} -> {} is down (injected)",
                    self.links.node_id(),
                    self.target
                )));
            }
            Some(Link::Delayed(d)) => tokio::time::sleep(d).await,
            Some(Link::Up) | None => {}
        }
        let channel = self
            .links
            .channel(self.target, &self.addr, Some(&self.group))
            .map_err(CallError::Unreachable)?;
        let mut client = RaftClient::new(channel);
        let timeout = request_timeout(ttl, body.len());
        let mut request = Request::new(RaftRequest {
            group: self.group.clone(),
            body: body.into(),
        });
        request.set_timeout(timeout);
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::PreVote => client.pre_vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        match reply {
            Ok(r) => {
                self.links.heard_from(self.target, None);
                Ok(r.into_inner().body.to_vec())
            }
            Err(status) => {
                let m = format!("node {} at {}: {status}", self.target, self.addr);
                // A group the broker does not have, a broker going away, or a message it cannot
                // decode (another build): back off. A deadline or a broken connection: retry.
                Err(match status.code() {
                    tonic::Code::NotFound
                    | tonic::Code::Unavailable
                    | tonic::Code::InvalidArgument
                    | tonic::Code::Unimplemented => CallError::Unreachable(m),
                    _ => CallError::Network(m),
                })
            }
        }
    }

    /// Sends `request` and decodes a `Result<T, RaftError>` reply; a remote `RaftError` (its
    /// Raft group shut down) counts as unreachable.
    async fn request<Q: Serialize, T: DeserializeOwned>(
        &mut self,
        rpc: Rpc,
        request: &Q,
        option: &RPCOption,
    ) -> Result<T, CallError> {
        let body = encode(request).map_err(CallError::Network)?;
        let reply = self.call(rpc, body, option.soft_ttl()).await?;
        let result: Result<T, RaftError<PartitionRaft>> =
            decode(&reply).map_err(CallError::Network)?;
        result.map_err(|e| CallError::Unreachable(format!("node {}: {e}", self.target)))
    }
}

impl RaftNetworkV2<PartitionRaft> for RaftConnection {
    type SnapshotData = SnapshotPosition;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Ok(self.request(Rpc::Append, &rpc, &option).await?)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Ok(self.request(Rpc::Vote, &rpc, &option).await?)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<PartitionRaft>,
        option: RPCOption,
    ) -> Result<VoteResponse<PartitionRaft>, RPCError<PartitionRaft>> {
        Ok(self.request(Rpc::PreVote, &rpc, &option).await?)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: SnapshotOf<PartitionRaft, SnapshotPosition>,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<PartitionRaft>, StreamingError<PartitionRaft>> {
        let message = SnapshotMessage {
            vote,
            meta: snapshot.meta,
            next_offset: snapshot.snapshot.next_offset,
        };
        let body = encode(&message).map_err(CallError::Network)?;
        let reply = self.call(Rpc::Snapshot, body, option.soft_ttl()).await?;
        let result: Result<SnapshotResponse<PartitionRaft>, Fatal<PartitionRaft>> =
            decode(&reply).map_err(CallError::Network)?;
        Ok(result.map_err(|e| CallError::Unreachable(format!("node {}: {e}", self.target)))?)
    }
}

/// The tonic service that answers other brokers' Raft requests for the groups in `groups`, and
/// their pings.
#[derive(Clone)]
pub struct RaftService {
    groups: PartitionGroups,
    links: RaftLinks,
}

impl RaftService {
    /// A service over `groups` (the Raft groups of this broker's partition replicas), answering
    /// pings as the broker of `links`.
    pub fn new(groups: PartitionGroups, links: RaftLinks) -> RaftServer<Self> {
        RaftServer::new(RaftService { groups, links })
            .max_decoding_message_size(2 * crate::record::MAX_BATCH_BYTES)
    }

    async fn member(&self, group: &str) -> Result<Arc<dyn GroupMember>, Status> {
        self.groups
            .get_soon(group, WAIT_FOR_GROUP)
            .await
            .ok_or_else(|| Status::not_found(format!("no Raft group {group} on this broker")))
    }

    async fn raft(&self, group: &str) -> Result<Raft, Status> {
        self.member(group).await.map(|m| m.raft())
    }
}

fn reply<T: Serialize>(result: &T) -> Result<Response<RaftReply>, Status> {
    let body = encode(result).map_err(Status::internal)?;
    Ok(Response::new(RaftReply { body: body.into() }))
}

fn body<T: DeserializeOwned>(request: &RaftRequest) -> Result<T, Status> {
    decode(&request.body)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let member = self.member(&request.group).await?;
        let rpc: AppendEntriesRequest<PartitionRaft> = body(&request)?;
        match member.append_entries(rpc).await {
            Ok(answer) => reply(&answer),
            Err(e) => Err(Status::unavailable(e.to_string())),
        }
    }

    async fn vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = self.raft(&request.group).await?;
        let rpc: VoteRequest<PartitionRaft> = body(&request)?;
        reply(&raft.vote(rpc).await)
    }

    async fn pre_vote(&self, request: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = self.raft(&request.group).await?;
        let rpc: VoteRequest<PartitionRaft> = body(&request)?;
        reply(&raft.pre_vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let request = request.into_inner();
        let raft = self.raft(&request.group).await?;
        let m: SnapshotMessage = body(&request)?;
        let snapshot = Snapshot {
            meta: m.meta,
            snapshot: SnapshotPosition {
                next_offset: m.next_offset,
            },
        };
        reply(&raft.install_full_snapshot(m.vote, snapshot).await)
    }

    async fn ping(&self, request: Request<PingRequest>) -> Result<Response<PingReply>, Status> {
        tracing::trace!(from = request.get_ref().from, "ping");
        Ok(Response::new(PingReply {
            node_id: self.links.node_id(),
            incarnation: self.links.incarnation(),
        }))
    }
}

/// Serves `routes` (the brokers' Raft service, `RaftService::new(groups)`, and whatever else
/// shares its port) on `listener` until `shutdown` resolves. Every accepted connection has
/// `TCP_NODELAY`: AppendEntries replies are small, and Nagle's algorithm against the peer's
/// delayed ACK would hold each one for tens of milliseconds.
pub async fn serve_raft(
    listener: tokio::net::TcpListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    use tokio_stream::StreamExt as _;
    let accepted = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(error = %e, "could not set TCP_NODELAY on a Raft connection");
            }
        })
    });
    tonic::transport::Server::builder()
        // Every group's requests to this broker share a few connections (`RaftLinks`): an
        // election over thousands of groups sends as many requests at once.
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        // openraft drops a request it timed out, which resets its stream: after an election
        // storm over thousands of groups, more than h2's default of 20 reset streams can wait
        // to be accepted, and h2 then closes the connection that every group shares.
        .http2_max_pending_accept_reset_streams(Some(MAX_STREAMS_PER_CONNECTION as usize))
        .http2_max_local_error_reset_streams(Some(MAX_STREAMS_PER_CONNECTION as usize))
        .add_routes(routes)
        .serve_with_incoming_shutdown(accepted, shutdown)
        .await
}
