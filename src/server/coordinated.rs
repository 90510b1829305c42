//! Requests that, in a cluster, the controller group's leader (the coordinator) serves: consumer
//! group requests and the creation, alteration and deletion of replicated topics, as the broker serves them
//! once the caller's token and ACLs are checked. The public service calls these for its
//! clients, and the coordinator's internal `Cluster` service for the requests other brokers
//! forward to it ([`on_coordinator`]).

use super::{RequestError, blocking, convert};
use crate::broker::{Broker, BrokerError, ClusterConfig, CommittedOffset};
use crate::proto::{self, raft::cluster_client::ClusterClient};
use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};
use tonic::{Response, Status, transport::Channel};

/// The metadata key of a forwarded request's answer that says how far the coordinator had
/// applied the controller's log (see [`on_coordinator`]).
const APPLIED_KEY: &str = "strata-controller-applied";

/// The coordinator's answer to a forwarded request, with how far it has applied the
/// controller's log.
pub(super) fn forwarded_answer<T>(broker: &Broker, answer: T) -> Response<T> {
    let mut response = Response::new(answer);
    if let Some(applied) = broker.controller_applied()
        && let Ok(v) = applied.to_string().parse()
    {
        response.metadata_mut().insert(APPLIED_KEY, v);
    }
    response
}

/// How long one forwarded request may take.
const FORWARD_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a request waits for a coordinator while the controller group elects one.
const COORDINATOR_WAIT: Duration = Duration::from_secs(5);

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
            .timeout(FORWARD_TIMEOUT)
            .connect_lazy();
        channels.insert(node, channel.clone());
        Ok(ClusterClient::new(channel))
    }
}

/// Runs a request here (`local`) and, if another broker coordinates groups, forwards it
/// there (`remote`, over the brokers' internal port) instead; while no broker is known to
/// coordinate (an election), asks again for up to [`COORDINATOR_WAIT`]. A forwarded request is
/// not forwarded again: a coordinator that moved on answers UNAVAILABLE and the client retries.
///
/// A forwarded request's answer carries how far the coordinator had applied the controller's
/// log when it answered ([`APPLIED_KEY`]); this broker waits until it has applied as far
/// (at most 10 s, the controller's apply wait) before answering, so that what the client asks it next (a produce
/// to the topic it created, a describe) sees the write.
pub(super) async fn on_coordinator<T, L, LF, R, RF>(
    broker: &Arc<Broker>,
    forwarder: Option<&Forwarder>,
    local: L,
    remote: R,
) -> Result<T, Status>
where
    L: Fn() -> LF,
    LF: Future<Output = Result<T, RequestError>>,
    R: FnOnce(ClusterClient<Channel>) -> RF,
    RF: Future<Output = Result<Response<T>, Status>>,
{
    let deadline = Instant::now() + COORDINATOR_WAIT;
    loop {
        match local().await {
            Err(
                e @ RequestError::Broker(BrokerError::NotCoordinator {
                    coordinator: Some(node),
                    ..
                }),
            ) => {
                let Some(forwarder) = forwarder else {
                    return Err(Status::from(e));
                };
                let answer = remote(forwarder.client(node)?).await?;
                let applied = answer
                    .metadata()
                    .get(APPLIED_KEY)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok());
                if let Some(offset) = applied {
                    let broker = broker.clone();
                    let caught_up = blocking(move || broker.wait_controller_applied(offset)).await;
                    if let Err(e) = caught_up {
                        tracing::warn!(error = %e, "answering a forwarded request before this broker applied it");
                    }
                }
                return Ok(answer.into_inner());
            }
            Err(RequestError::Broker(BrokerError::NotCoordinator {
                coordinator: None, ..
            })) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return other.map_err(Status::from),
        }
    }
}

pub(super) async fn commit_offsets(
    broker: Arc<Broker>,
    req: proto::CommitOffsetsRequest,
) -> Result<proto::CommitOffsetsResponse, RequestError> {
    let offsets = req
        .offsets
        .into_iter()
        .map(|o| CommittedOffset {
            topic: o.topic,
            partition: o.partition,
            offset: o.offset,
        })
        .collect();
    blocking(move || {
        let member = Some(req.member_id.as_str())
            .filter(|id| !id.is_empty())
            .map(|id| (id, req.member_epoch));
        broker.commit_offsets(&req.group, member, offsets)
    })
    .await?;
    Ok(proto::CommitOffsetsResponse {})
}

pub(super) async fn fetch_committed_offsets(
    broker: Arc<Broker>,
    req: proto::FetchCommittedOffsetsRequest,
) -> Result<proto::FetchCommittedOffsetsResponse, RequestError> {
    let offsets = blocking(move || broker.committed_offsets(&req.group, &req.topic)).await?;
    Ok(proto::FetchCommittedOffsetsResponse {
        offsets: offsets
            .into_iter()
            .map(|c| proto::PartitionOffset {
                topic: c.topic,
                partition: c.partition,
                offset: c.offset,
            })
            .collect(),
    })
}

/// Every group, unfiltered (the caller leaves out what its client may not describe).
pub(super) async fn list_groups(
    broker: Arc<Broker>,
) -> Result<proto::ListGroupsResponse, RequestError> {
    let groups = blocking(move || broker.list_groups()).await?;
    Ok(proto::ListGroupsResponse { groups })
}

/// The group with every partition (the caller leaves out topics its client may not describe).
pub(super) async fn describe_group(
    broker: Arc<Broker>,
    req: proto::DescribeGroupRequest,
) -> Result<proto::DescribeGroupResponse, RequestError> {
    let described = blocking(move || broker.describe_group(&req.group)).await?;
    Ok(convert::group_out(described))
}

pub(super) async fn group_heartbeat(
    broker: Arc<Broker>,
    req: proto::GroupHeartbeatRequest,
    client_host: String,
) -> Result<proto::GroupHeartbeatResponse, RequestError> {
    let group = req.group.clone();
    let heartbeat = convert::heartbeat_in(req, client_host)?;
    let answer = blocking(move || broker.heartbeat(&group, heartbeat)).await?;
    Ok(proto::GroupHeartbeatResponse {
        member_id: answer.member_id,
        member_epoch: answer.member_epoch,
        heartbeat_interval_ms: u32::try_from(answer.heartbeat_interval.as_millis())
            .unwrap_or(u32::MAX),
        assignment: convert::assignment_out(&answer.assignment),
        pending_partitions: u32::try_from(answer.pending).unwrap_or(u32::MAX),
    })
}

pub(super) async fn delete_group(
    broker: Arc<Broker>,
    req: proto::DeleteGroupRequest,
) -> Result<proto::DeleteGroupResponse, RequestError> {
    blocking(move || broker.delete_group(&req.group)).await?;
    Ok(proto::DeleteGroupResponse {})
}

/// How long CreateTopic waits for the partitions' first leaders, and a broker that forwarded a
/// create or delete for applying it too.
pub(super) const TOPIC_WAIT: Duration = Duration::from_secs(10);

/// Creates a topic; a replicated one (through the controller group) is answered once every
/// partition's Raft group has a leader that committed its first entry, as Kafka's leaders are
/// elected when CreateTopics returns (the topic exists either way; a produce before its leader
/// is elected is UNAVAILABLE and retried).
pub(super) async fn create_topic(
    broker: Arc<Broker>,
    req: proto::CreateTopicRequest,
) -> Result<proto::CreateTopicResponse, RequestError> {
    let update = convert::config_update(req.config)?;
    let info = {
        let broker = broker.clone();
        blocking(move || {
            broker.create_replicated_topic(
                &req.name,
                req.partitions,
                &update,
                req.replication_factor,
            )
        })
        .await?
    };
    if info.replication_factor > 1 {
        wait_for_leaders(broker, info.name.clone()).await?;
    }
    Ok(proto::CreateTopicResponse {
        topic: Some(convert::topic_info(&info)),
    })
}

/// Waits up to [`TOPIC_WAIT`] for every partition of `topic` here to have a leader.
pub(super) async fn wait_for_leaders(
    broker: Arc<Broker>,
    topic: String,
) -> Result<(), RequestError> {
    let name = topic.clone();
    let leaderless = blocking(move || broker.wait_for_leaders(&name, TOPIC_WAIT)).await?;
    if leaderless > 0 {
        tracing::warn!(
            topic,
            leaderless,
            "created, but partitions have no leader yet"
        );
    }
    Ok(())
}

pub(super) async fn alter_topic_config(
    broker: Arc<Broker>,
    req: proto::AlterTopicConfigRequest,
) -> Result<proto::AlterTopicConfigResponse, RequestError> {
    let update = convert::config_update(req.config)?;
    let info = blocking(move || broker.alter_topic_config(&req.name, &update)).await?;
    Ok(proto::AlterTopicConfigResponse {
        topic: Some(convert::topic_info(&info)),
    })
}

pub(super) async fn delete_topic(
    broker: Arc<Broker>,
    req: proto::DeleteTopicRequest,
) -> Result<proto::DeleteTopicResponse, RequestError> {
    blocking(move || broker.delete_topic_everywhere(&req.name)).await?;
    Ok(proto::DeleteTopicResponse {})
}
