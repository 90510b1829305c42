//! The `strata.v1.Strata` service: each rpc converts its request, runs the broker call on a
//! blocking thread, and converts the answer back.

use super::{
    ConnInfo, RequestError, ServerConfig, Shutdown,
    auth::{Auth, Operation, Principal, Resource},
    blocking, convert, coordinated,
    metrics::Metrics,
    subscribe,
    tail::Tail,
};
use crate::broker::{Broker, BrokerError, Coordinator, ProduceInput, StartPosition};
use crate::proto::{self, raft::ForwardedHeartbeat, strata_server::Strata};
use std::{sync::Arc, time::Duration};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// The service implementation, cloned per connection.
#[derive(Clone)]
pub(super) struct Service {
    /// Where clients reach this broker.
    pub address: String,
    pub broker: Arc<Broker>,
    /// In a cluster: how group requests reach the coordinator when it is another broker.
    pub forwarder: Option<Arc<coordinated::Forwarder>>,
    /// Who may do what.
    pub auth: Arc<Auth>,
    pub config: Arc<ServerConfig>,
    pub shutdown: Shutdown,
    /// Each subscription task holds a clone; `serve` waits until all are dropped.
    pub tasks: mpsc::Sender<()>,
    /// What the handlers count, when metrics are on.
    pub metrics: Option<Arc<Metrics>>,
}

impl Service {
    /// What ends a read of `topic` by `who` that waits (a subscription, a long poll) once a
    /// reload revokes it; `None` for an anonymous reader.
    fn revocation(
        &self,
        who: &Principal,
        topic: &str,
        credential: Option<[u8; 32]>,
    ) -> Option<subscribe::Guard> {
        match who {
            Principal::Named(name) => Some(
                subscribe::Access {
                    principals: self.auth.watch(),
                    principal: name.clone(),
                    topic: topic.to_owned(),
                }
                .with_credential(credential),
            ),
            Principal::Anonymous => None,
        }
    }

    /// The request's principal (UNAUTHENTICATED without a valid one, when the broker checks).
    /// The `Authenticate` layer put it in the extensions before the body was read; a request
    /// that did not pass it (none does, today) is authenticated here.
    fn who<T>(&self, request: &Request<T>) -> Result<Principal, Status> {
        let who = match request.extensions().get::<Principal>() {
            Some(who) => who.clone(),
            None => self
                .auth
                .authenticate(request.metadata(), request.extensions().get::<ConnInfo>())
                .map_err(Status::from)?,
        };
        tracing::Span::current().record("principal", who.name());
        Ok(who)
    }

    /// A start at a group's committed offset reads the group's commits: `describe` on it.
    fn check_start(
        &self,
        who: &Principal,
        start: Option<&proto::StartPosition>,
    ) -> Result<(), Status> {
        match start.and_then(|s| s.position.as_ref()) {
            Some(proto::start_position::Position::Group(group)) => {
                self.check(who, Operation::Describe, &Resource::group(group))
            }
            _ => Ok(()),
        }
    }

    /// PERMISSION_DENIED unless `who` may do `operation` on `resource`.
    fn check(
        &self,
        who: &Principal,
        operation: Operation,
        resource: &Resource<'_>,
    ) -> Result<(), Status> {
        tracing::Span::current().record("resource", tracing::field::display(resource));
        self.auth
            .authorize(who, operation, resource)
            .map_err(Status::from)
    }

    /// Whether `who` may see `topic`'s offsets (answers that list several topics filter by it).
    fn describes_topic(&self, who: &Principal, topic: &str) -> bool {
        self.auth
            .allows(who, Operation::Describe, &Resource::topic(topic))
    }
}

#[tonic::async_trait]
impl Strata for Service {
    async fn create_topic(
        &self,
        request: Request<proto::CreateTopicRequest>,
    ) -> Result<Response<proto::CreateTopicResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Create, &Resource::topic(&req.name))?;
        let name = req.name.clone();
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::create_topic(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.create_topic(req).await }
            },
        )
        .await?;
        if self.forwarder.is_some() && req.replication_factor > 1 {
            // Made by the coordinator, and applied here too (see `on_coordinator`): answer once
            // this broker also sees every partition's leader.
            coordinated::wait_for_leaders(self.broker.clone(), name).await?;
        }
        Ok(Response::new(answer))
    }

    async fn delete_topic(
        &self,
        request: Request<proto::DeleteTopicRequest>,
    ) -> Result<Response<proto::DeleteTopicResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Delete, &Resource::topic(&req.name))?;
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::delete_topic(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.delete_topic(req).await }
            },
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn list_topics(
        &self,
        request: Request<proto::ListTopicsRequest>,
    ) -> Result<Response<proto::ListTopicsResponse>, Status> {
        let who = self.who(&request)?;
        let topics = self.broker.list_topics()?;
        Ok(Response::new(proto::ListTopicsResponse {
            topics: topics
                .iter()
                .filter(|t| self.describes_topic(&who, &t.name))
                .map(convert::topic_info)
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        request: Request<proto::DescribeTopicRequest>,
    ) -> Result<Response<proto::DescribeTopicResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Describe, &Resource::topic(&req.name))?;
        let broker = self.broker.clone();
        let (info, partitions) = blocking(move || broker.describe_topic(&req.name)).await?;
        Ok(Response::new(proto::DescribeTopicResponse {
            topic: Some(convert::topic_info(&info)),
            partitions: partitions.iter().map(convert::partition_info).collect(),
        }))
    }

    async fn alter_topic_config(
        &self,
        request: Request<proto::AlterTopicConfigRequest>,
    ) -> Result<Response<proto::AlterTopicConfigResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Alter, &Resource::topic(&req.name))?;
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::alter_topic_config(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.alter_topic_config(req).await }
            },
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn produce(
        &self,
        request: Request<proto::ProduceRequest>,
    ) -> Result<Response<proto::ProduceResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Write, &Resource::topic(&req.topic))?;
        let input = match (req.records.is_empty(), req.batch.is_empty()) {
            (false, true) => ProduceInput::Records(convert::records_in(req.records)),
            (true, false) => ProduceInput::Batches(req.batch),
            (true, true) => {
                return Err(RequestError::invalid(
                    "records",
                    "the request is empty: send `records` or an encoded `batch`",
                )
                .into());
            }
            (false, false) => {
                return Err(RequestError::invalid(
                    "batch",
                    "send either `records` or an encoded `batch`, not both",
                )
                .into());
            }
        };
        // Only counted when metrics are on: summing plain records' sizes walks the request.
        let sent_bytes = self.metrics.as_ref().map(|_| input.bytes());
        let broker = self.broker.clone();
        let produced = blocking(move || broker.produce(&req.topic, req.partition, input)).await?;
        if let (Some(m), Some(sent_bytes)) = (&self.metrics, sent_bytes) {
            m.appended_bytes.inc_by(sent_bytes as u64);
            m.appended_records
                .inc_by(produced.iter().map(|p| u64::from(p.record_count)).sum());
        }
        Ok(Response::new(proto::ProduceResponse {
            results: produced
                .iter()
                .map(|p| proto::ProduceResult {
                    partition: p.partition,
                    base_offset: p.base_offset,
                    record_count: p.record_count,
                })
                .collect(),
        }))
    }

    async fn fetch(
        &self,
        request: Request<proto::FetchRequest>,
    ) -> Result<Response<proto::FetchResponse>, Status> {
        let who = self.who(&request)?;
        let credential = super::auth::credential(request.metadata());
        let req = request.into_inner();
        self.check(&who, Operation::Read, &Resource::topic(&req.topic))?;
        self.check_start(&who, req.start.as_ref())?;
        let mut access = self.revocation(&who, &req.topic, credential);
        let broker = self.broker.clone();
        let max_bytes = self.config.fetch_bytes(req.max_bytes)?;
        let start = convert::start_position(req.start, StartPosition::Earliest);
        let handle = broker.partition(&req.topic, req.partition)?;
        let h = handle.clone();
        let offset = blocking(move || broker.resolve_start(&h, &start)).await?;
        let max_wait = Duration::from_millis(u64::from(req.max_wait_ms)).min(self.config.max_wait);
        let deadline = tokio::time::Instant::now() + max_wait;
        let min_bytes = (req.min_bytes as usize).max(1);
        // A long poll ends as a subscription does when a reload revokes the reader.
        let mut tail = Tail::new(handle, offset, max_bytes, self.shutdown.clone());
        let chunk = tokio::select! {
            chunk = tail.read_at_least(min_bytes, deadline) => chunk?,
            status = subscribe::Guard::revoked(&mut access) => return Err(status),
        };
        if let Some(m) = &self.metrics {
            m.served_bytes
                .with_label_values(&["Fetch"])
                .inc_by(chunk.batches.len() as u64);
        }
        let batches = chunk.batches.clone();
        let records = if req.decode {
            blocking(move || convert::decode_records(&batches, offset)).await?
        } else {
            Vec::new()
        };
        Ok(Response::new(proto::FetchResponse {
            next_fetch_offset: if chunk.batches.is_empty() {
                offset
            } else {
                chunk.next_offset
            },
            batches: chunk.batches,
            records,
            high_watermark: chunk.high_watermark,
            earliest_offset: chunk.earliest_offset,
            start_offset: offset,
        }))
    }

    type SubscribeStream = ReceiverStream<Result<proto::SubscribeResponse, Status>>;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let who = self.who(&request)?;
        let credential = super::auth::credential(request.metadata());
        let req = request.into_inner();
        self.check(&who, Operation::Read, &Resource::topic(&req.topic))?;
        self.check_start(&who, req.start.as_ref())?;
        let topic = req.topic.clone();
        let broker = self.broker.clone();
        let max_bytes = self.config.push_bytes(i64::from(req.max_bytes))?;
        let start = convert::start_position(req.start, StartPosition::Latest);
        let handles = broker.partitions(&req.topic, &req.partitions)?;
        // Resolved before the response is returned: once the caller has the stream's headers,
        // every record appended afterwards is delivered.
        let starts = blocking(move || {
            handles
                .into_iter()
                .map(|h| Ok((broker.resolve_start(&h, &start)?, h)))
                .collect::<Result<Vec<_>, BrokerError>>()
        })
        .await?;
        let (tx, rx) = mpsc::channel(subscribe::BUFFERED_MESSAGES + starts.len());
        let counted = self.metrics.clone().map(subscribe::Counted::new);
        for (offset, handle) in starts {
            let access = self.revocation(&who, &topic, credential);
            tokio::spawn(subscribe::follow(
                Tail::new(handle, offset, max_bytes, self.shutdown.clone()),
                tx.clone(),
                self.shutdown.clone(),
                self.tasks.clone(),
                access,
                counted.clone(),
            ));
        }
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn commit_offsets(
        &self,
        request: Request<proto::CommitOffsetsRequest>,
    ) -> Result<Response<proto::CommitOffsetsResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Read, &Resource::group(&req.group))?;
        for o in &req.offsets {
            self.check(&who, Operation::Read, &Resource::topic(&o.topic))?;
        }
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::commit_offsets(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.commit_offsets(req).await }
            },
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn fetch_committed_offsets(
        &self,
        request: Request<proto::FetchCommittedOffsetsRequest>,
    ) -> Result<Response<proto::FetchCommittedOffsetsResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Describe, &Resource::group(&req.group))?;
        self.check(&who, Operation::Describe, &Resource::topic(&req.topic))?;
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::fetch_committed_offsets(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.fetch_committed_offsets(req).await }
            },
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn list_groups(
        &self,
        request: Request<proto::ListGroupsRequest>,
    ) -> Result<Response<proto::ListGroupsResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        let mut answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::list_groups(self.broker.clone()),
            |mut c| async move { c.list_groups(req).await },
        )
        .await?;
        answer.groups.retain(|g| {
            self.auth
                .allows(&who, Operation::Describe, &Resource::group(g))
        });
        Ok(Response::new(answer))
    }

    async fn describe_group(
        &self,
        request: Request<proto::DescribeGroupRequest>,
    ) -> Result<Response<proto::DescribeGroupResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Describe, &Resource::group(&req.group))?;
        let mut described = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::describe_group(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.describe_group(req).await }
            },
        )
        .await?;
        // Offsets and lag of a topic are the topic's to describe: a group reading topics the
        // caller may not see is described without them (its members and their assignments stay).
        described
            .partitions
            .retain(|l| self.describes_topic(&who, &l.topic));
        Ok(Response::new(described))
    }

    async fn group_heartbeat(
        &self,
        request: Request<proto::GroupHeartbeatRequest>,
    ) -> Result<Response<proto::GroupHeartbeatResponse>, Status> {
        let client_host = request
            .extensions()
            .get::<super::ConnInfo>()
            .and_then(|c| c.remote_addr)
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Read, &Resource::group(&req.group))?;
        for t in &req.topics {
            self.check(&who, Operation::Read, &Resource::topic(t))?;
        }
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::group_heartbeat(self.broker.clone(), req.clone(), client_host.clone()),
            |mut c| {
                let forwarded = ForwardedHeartbeat {
                    request: Some(req.clone()),
                    client_host: client_host.clone(),
                };
                async move { c.group_heartbeat(forwarded).await }
            },
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn delete_group(
        &self,
        request: Request<proto::DeleteGroupRequest>,
    ) -> Result<Response<proto::DeleteGroupResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Delete, &Resource::group(&req.group))?;
        let answer = coordinated::on_coordinator(
            &self.broker,
            self.forwarder.as_deref(),
            || coordinated::delete_group(self.broker.clone(), req.clone()),
            |mut c| {
                let req = req.clone();
                async move { c.delete_group(req).await }
            },
        )
        .await?;
        Ok(Response::new(answer))
    }

    async fn metadata(
        &self,
        request: Request<proto::MetadataRequest>,
    ) -> Result<Response<proto::MetadataResponse>, Status> {
        // Any authenticated principal sees the brokers; topics only where it may describe them.
        let who = self.who(&request)?;
        let req = request.into_inner();
        let broker = self.broker.clone();
        let described = blocking(move || {
            let names: Vec<String> = if req.topics.is_empty() {
                broker.list_topics()?.into_iter().map(|t| t.name).collect()
            } else {
                req.topics
            };
            let mut out = Vec::with_capacity(names.len());
            for name in names {
                match broker.describe_topic(&name) {
                    Ok(d) => out.push(d),
                    Err(BrokerError::TopicNotFound { .. } | BrokerError::InvalidName { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok::<_, BrokerError>(out)
        })
        .await?;
        let mut topics: Vec<proto::TopicMetadata> = described
            .iter()
            .filter(|(info, _)| self.describes_topic(&who, &info.name))
            .map(|(info, partitions)| convert::topic_metadata(info, partitions))
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        let brokers = match &self.broker.config().cluster {
            Some(c) => c
                .peers
                .iter()
                .map(|(&node_id, raft)| proto::BrokerInfo {
                    node_id,
                    address: c.directory.get(node_id).unwrap_or_default(),
                    raft_address: raft.clone(),
                })
                .collect(),
            None => vec![proto::BrokerInfo {
                node_id: 0,
                address: self.address.clone(),
                raft_address: String::new(),
            }],
        };
        let group_coordinator = match self.broker.group_coordinator() {
            Coordinator::Here => self.broker.node_id(),
            Coordinator::At(node) => node,
            Coordinator::Unknown => 0,
        };
        Ok(Response::new(proto::MetadataResponse {
            node_id: self.broker.node_id(),
            brokers,
            topics,
            group_coordinator,
        }))
    }

    async fn init_producer(
        &self,
        request: Request<proto::InitProducerRequest>,
    ) -> Result<Response<proto::InitProducerResponse>, Status> {
        // Any authenticated principal may get a producer id.
        let _who = self.who(&request)?;
        let req = request.into_inner();

        let current = match req.producer_id {
            Some(id) => {
                let epoch = u16::try_from(req.producer_epoch).map_err(|_| {
                    RequestError::InvalidArgument {
                        field: "producer_epoch",
                        reason: format!("{} does not fit in a u16", req.producer_epoch),
                    }
                })?;
                Some((id, epoch))
            }
            None => None,
        };
        let broker = self.broker.clone();
        let (producer_id, epoch) = blocking(move || broker.init_producer(current)).await?;
        Ok(Response::new(proto::InitProducerResponse {
            producer_id,
            producer_epoch: u32::from(epoch),
        }))
    }

    async fn list_offsets(
        &self,
        request: Request<proto::ListOffsetsRequest>,
    ) -> Result<Response<proto::ListOffsetsResponse>, Status> {
        let who = self.who(&request)?;
        let req = request.into_inner();
        self.check(&who, Operation::Describe, &Resource::topic(&req.topic))?;
        self.check_start(&who, req.position.as_ref())?;
        let start = convert::start_position(req.position, StartPosition::Latest);
        let broker = self.broker.clone();
        let listed =
            blocking(move || broker.list_offsets(&req.topic, &req.partitions, &start)).await?;
        Ok(Response::new(proto::ListOffsetsResponse {
            partitions: listed
                .into_iter()
                .map(|l| proto::PartitionOffsets {
                    partition: l.partition,
                    earliest_offset: l.earliest_offset,
                    next_offset: l.next_offset,
                    offset: l.offset,
                })
                .collect(),
        }))
    }
}
