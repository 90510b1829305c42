//! Consumer group requests as the broker serves them once the caller's token and ACLs are
//! checked: the public service calls these for its clients, and, in a cluster, the coordinator's
//! internal `Cluster` service calls them for the requests other brokers forward to it
//! ([`on_coordinator`]).

use super::{RequestError, blocking, cluster::Forwarder, convert};
use crate::broker::{Broker, BrokerError, CommittedOffset};
use crate::proto::{self, raft::cluster_client::ClusterClient};
use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};
use tonic::{Response, Status, transport::Channel};

/// How long a group request waits for a coordinator while the controller group elects one.
const COORDINATOR_WAIT: Duration = Duration::from_secs(5);

/// Runs a group request here (`local`) and, if another broker coordinates groups, forwards it
/// there (`remote`, over the brokers' internal port) instead; while no broker is known to
/// coordinate (an election), asks again for up to [`COORDINATOR_WAIT`]. A forwarded request is
/// not forwarded again: a coordinator that moved on answers UNAVAILABLE and the client retries.
pub(super) async fn on_coordinator<T, L, LF, R, RF>(
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
                return remote(forwarder.client(node)?)
                    .await
                    .map(Response::into_inner);
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

pub(super) async fn commit(
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

pub(super) async fn fetch_committed(
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
pub(super) async fn list(broker: Arc<Broker>) -> Result<proto::ListGroupsResponse, RequestError> {
    let groups = blocking(move || broker.list_groups()).await?;
    Ok(proto::ListGroupsResponse { groups })
}

/// The group with every partition (the caller leaves out topics its client may not describe).
pub(super) async fn describe(
    broker: Arc<Broker>,
    req: proto::DescribeGroupRequest,
) -> Result<proto::DescribeGroupResponse, RequestError> {
    let described = blocking(move || broker.describe_group(&req.group)).await?;
    Ok(convert::group_out(described))
}

pub(super) async fn heartbeat(
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

pub(super) async fn delete(
    broker: Arc<Broker>,
    req: proto::DeleteGroupRequest,
) -> Result<proto::DeleteGroupResponse, RequestError> {
    blocking(move || broker.delete_group(&req.group)).await?;
    Ok(proto::DeleteGroupResponse {})
}
