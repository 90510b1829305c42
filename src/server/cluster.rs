//! The server's side of a cluster (issue 16, phase 2): the brokers' internal port, which carries
//! the partitions' Raft traffic and the `Cluster` service (who a broker is; create and delete a
//! replicated topic's replicas), and what this broker asks of the others through it.
//!
//! Until a controller group owns the topics (phase 3), the broker that takes a `CreateTopic` with
//! a replication factor creates its own replicas and then asks every other broker to create
//! theirs; a broker it cannot reach fails the request with UNAVAILABLE (creating again, once it
//! is back, completes the topic: the others answer an identical topic with success).

use super::{blocking, groups, status::to_status};
use crate::broker::{Broker, BrokerError, ClusterConfig};
use crate::proto::{
    self,
    raft::{
        DescribeReply, DescribeRequest, ForwardedHeartbeat, ReplicasReply, ReplicasRequest,
        cluster_client::ClusterClient,
        cluster_server::{Cluster, ClusterServer},
    },
};
use crate::replication::{RaftService, serve_raft};
use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Channel};

/// How long one internal request to another broker may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long CreateTopic waits, after every broker has its replicas, for the partitions' first
/// leaders.
pub(super) const FIRST_LEADER_WAIT: Duration = Duration::from_secs(10);
/// How often an unknown broker's client address is asked for.
const LEARN_INTERVAL: Duration = Duration::from_millis(500);
/// How often known addresses are asked for again (a broker restarted on another port).
const RELEARN_INTERVAL: Duration = Duration::from_secs(10);

/// Serves the brokers' internal port on `listener`: the Raft groups of `broker`'s replicas and
/// the `Cluster` service, until `shutdown` resolves. `address` is where clients reach this
/// broker. Also starts learning the other brokers' client addresses.
pub(super) fn start(
    listener: TcpListener,
    broker: Arc<Broker>,
    cluster: &ClusterConfig,
    address: String,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    cluster.directory.set(cluster.node_id, address.clone());
    let service = ClusterServer::new(ClusterService {
        broker,
        node_id: cluster.node_id,
        address,
    });
    let routes =
        tonic::service::Routes::new(RaftService::new(cluster.groups.clone())).add_service(service);
    tokio::spawn(async move {
        if let Err(e) = serve_raft(listener, routes, shutdown).await {
            tracing::error!(error = %e, "the Raft port failed");
        }
    });
    tokio::spawn(learn_addresses(cluster.clone()));
}

/// Asks every other broker for its client address until each is known, then again now and
/// then.
async fn learn_addresses(cluster: ClusterConfig) {
    loop {
        let mut all_known = true;
        for (&node, addr) in cluster.peers.iter().filter(|(n, _)| **n != cluster.node_id) {
            let known = cluster.directory.get(node).is_some();
            match describe(addr).await {
                Ok(reply) if reply.node_id == node => {
                    cluster.directory.set(node, reply.address);
                }
                Ok(reply) => {
                    tracing::error!(expected = node, answered = reply.node_id, %addr, "a peer's Raft address answers with another node id; check --peers");
                    all_known &= known;
                }
                Err(e) => {
                    tracing::debug!(node, %addr, error = %e, "peer not reachable yet");
                    all_known &= known;
                }
            }
        }
        tokio::time::sleep(if all_known {
            RELEARN_INTERVAL
        } else {
            LEARN_INTERVAL
        })
        .await;
    }
}

async fn connect(addr: &str) -> Result<ClusterClient<Channel>, String> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(1))
        .timeout(PEER_TIMEOUT)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    Ok(ClusterClient::new(channel))
}

async fn describe(addr: &str) -> Result<DescribeReply, String> {
    let mut client = connect(addr).await?;
    client
        .describe(DescribeRequest {})
        .await
        .map(Response::into_inner)
        .map_err(|s| s.message().to_owned())
}

/// Asks every other broker of the cluster to create (`topic_file` given) or delete its replicas
/// of `topic`; the first broker that fails the request fails the whole (after two more tries).
pub(super) async fn on_peers(
    cluster: &ClusterConfig,
    topic: &str,
    topic_file: Option<Vec<u8>>,
) -> Result<(), BrokerError> {
    for (&node_id, addr) in cluster.peers.iter().filter(|(n, _)| **n != cluster.node_id) {
        ask_peer(node_id, addr, topic, topic_file.as_deref()).await?;
    }
    Ok(())
}

/// Undoes a create that failed on some broker: deletes `topic` here and asks every other broker
/// to delete its replicas, going on past the ones that fail (logged), so that the same create can
/// be sent again once every broker is back.
pub(super) async fn undo_create(broker: Arc<Broker>, cluster: &ClusterConfig, topic: &str) {
    let name = topic.to_owned();
    if let Err(e) = blocking(move || broker.delete_topic(&name)).await {
        tracing::warn!(topic, error = %e, "undoing a failed create: not deleted here");
    }
    for (&node_id, addr) in cluster.peers.iter().filter(|(n, _)| **n != cluster.node_id) {
        if let Err(e) = ask_peer(node_id, addr, topic, None).await {
            tracing::warn!(topic, node_id, error = %e, "undoing a failed create: not deleted there");
        }
    }
}

/// Asks broker `node_id` at `addr` to create (`topic_file` given) or delete its replicas of
/// `topic`, trying twice more after a broken link (a refusal will not change on a retry).
async fn ask_peer(
    node_id: u64,
    addr: &str,
    topic: &str,
    topic_file: Option<&[u8]>,
) -> Result<(), BrokerError> {
    let request = ReplicasRequest {
        topic: topic.to_owned(),
        topic_file: topic_file.map(<[u8]>::to_vec).unwrap_or_default().into(),
    };
    let mut last = String::new();
    for attempt in 0..3 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut client = match connect(addr).await {
            Ok(c) => c,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let answer = if topic_file.is_some() {
            client.create_replicas(request.clone()).await
        } else {
            client.delete_replicas(request.clone()).await
        };
        match answer {
            Ok(_) => return Ok(()),
            Err(s) if s.code() != tonic::Code::Unavailable => {
                s.message().clone_into(&mut last);
                break;
            }
            Err(s) => s.message().clone_into(&mut last),
        }
    }
    Err(BrokerError::PeerUnavailable {
        node_id,
        address: addr.to_owned(),
        reason: last,
    })
}

/// Clients of the other brokers' internal ports, for group requests forwarded to the
/// coordinator: one lazily connected channel per broker, kept.
pub(super) struct Forwarder {
    peers: BTreeMap<u64, String>,
    channels: Mutex<HashMap<u64, Channel>>,
}

impl Forwarder {
    pub(super) fn new(cluster: &ClusterConfig) -> Forwarder {
        Forwarder {
            peers: cluster.peers.clone(),
            channels: Mutex::default(),
        }
    }

    /// A client of broker `node`'s internal port (UNAVAILABLE for a node not among the peers).
    pub(super) fn client(&self, node: u64) -> Result<ClusterClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(&node) {
            return Ok(ClusterClient::new(c.clone()));
        }
        let addr = self.peers.get(&node).ok_or_else(|| {
            Status::unavailable(format!(
                "the group coordinator is node {node}, which is not among this broker's --peers"
            ))
        })?;
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| Status::internal(format!("node {node}'s address {addr}: {e}")))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(PEER_TIMEOUT)
            .connect_lazy();
        channels.insert(node, channel.clone());
        Ok(ClusterClient::new(channel))
    }
}

/// The `strata.raft.v1.Cluster` service.
struct ClusterService {
    broker: Arc<Broker>,
    node_id: u64,
    address: String,
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn describe(
        &self,
        _request: Request<DescribeRequest>,
    ) -> Result<Response<DescribeReply>, Status> {
        Ok(Response::new(DescribeReply {
            node_id: self.node_id,
            address: self.address.clone(),
        }))
    }

    async fn create_replicas(
        &self,
        request: Request<ReplicasRequest>,
    ) -> Result<Response<ReplicasReply>, Status> {
        let request = request.into_inner();
        let broker = self.broker.clone();
        blocking(move || broker.create_replicas(&request.topic_file)).await?;
        Ok(Response::new(ReplicasReply {}))
    }

    async fn delete_replicas(
        &self,
        request: Request<ReplicasRequest>,
    ) -> Result<Response<ReplicasReply>, Status> {
        let request = request.into_inner();
        let broker = self.broker.clone();
        match blocking(move || broker.delete_topic(&request.topic)).await {
            Ok(()) => Ok(Response::new(ReplicasReply {})),
            Err(super::RequestError::Broker(BrokerError::TopicNotFound { .. })) => {
                Ok(Response::new(ReplicasReply {}))
            }
            Err(super::RequestError::Broker(e)) => Err(to_status(&e)),
            Err(e) => Err(e.into()),
        }
    }

    async fn commit_offsets(
        &self,
        request: Request<proto::CommitOffsetsRequest>,
    ) -> Result<Response<proto::CommitOffsetsResponse>, Status> {
        let answer = groups::commit(self.broker.clone(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<proto::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<proto::FetchCommittedOffsetsResponse>, Status> {
        let answer = groups::fetch_committed(self.broker.clone(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn list_groups(
        &self,
        _request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let answer = groups::list(self.broker.clone()).await?;
        Ok(Response::new(answer))
    }

    async fn describe_group(
        &self,
        request: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        let answer = groups::describe(self.broker.clone(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }

    async fn group_heartbeat(
        &self,
        request: Request<ForwardedHeartbeat>,
    ) -> Result<Response<proto::GroupHeartbeatResponse>, Status> {
        let ForwardedHeartbeat {
            request,
            client_host,
        } = request.into_inner();
        let request =
            request.ok_or_else(|| Status::invalid_argument("a forwarded heartbeat without one"))?;
        let answer = groups::heartbeat(self.broker.clone(), request, client_host).await?;
        Ok(Response::new(answer))
    }

    async fn delete_group(
        &self,
        request: Request<proto::DeleteGroupRequest>,
    ) -> Result<Response<proto::DeleteGroupResponse>, Status> {
        let answer = groups::delete(self.broker.clone(), request.into_inner()).await?;
        Ok(Response::new(answer))
    }
}
