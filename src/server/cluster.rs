//! The server's side of a cluster (issue 16): the brokers' internal port, which carries the Raft
//! traffic of the partitions and of the controller group, and the `Cluster` service: who a
//! broker is, and the requests other brokers forward to the coordinator (the controller group's
//! leader: replicated topic creation and deletion, consumer groups; see `coordinated.rs`).

use super::coordinated;
use crate::broker::{Broker, ClusterConfig};
use crate::proto::{
    self,
    raft::{
        DescribeReply, DescribeRequest, ForwardedHeartbeat,
        cluster_client::ClusterClient,
        cluster_server::{Cluster, ClusterServer},
    },
};
use crate::replication::{RaftService, serve_raft};
use std::{sync::Arc, time::Duration};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status, transport::Channel};

/// How long one internal request to another broker may take.
const PEER_TIMEOUT: Duration = Duration::from_secs(10);

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
    let routes = tonic::service::Routes::new(RaftService::new(
        cluster.groups.clone(),
        cluster.links.clone(),
    ))
    .add_service(service);
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

    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::CreateTopicResponse>, Status> {
        let answer = coordinated::create_topic(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn alter_topic_config(
        &self,
        request: Request<proto::AlterTopicConfigRequest>,
    ) -> Result<Response<proto::AlterTopicConfigResponse>, Status> {
        let answer =
            coordinated::alter_topic_config(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        let answer = coordinated::delete_topic(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn commit_offsets(
        &self,
        request: Request<proto::CommitOffsetsRequest>,
    ) -> Result<Response<proto::CommitOffsetsResponse>, Status> {
        let answer = coordinated::commit_offsets(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<proto::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<proto::FetchCommittedOffsetsResponse>, Status> {
        let answer =
            coordinated::fetch_committed_offsets(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn list_groups(
        &self,
        _request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let answer = coordinated::list_groups(self.broker.clone()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn describe_group(
        &self,
        request: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        let answer = coordinated::describe_group(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
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
        let answer =
            coordinated::group_heartbeat(self.broker.clone(), request, client_host).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }

    async fn delete_group(
        &self,
        request: Request<proto::DeleteGroupRequest>,
    ) -> Result<Response<proto::DeleteGroupResponse>, Status> {
        let answer = coordinated::delete_group(self.broker.clone(), request.into_inner()).await?;
        Ok(coordinated::forwarded_answer(&self.broker, answer))
    }
}
