//! `Admin`: topic and consumer-group calls, with plain Rust types in and out.

use super::{Channel, ClientError, Seek, raw};
use crate::proto::{self, strata_client::StrataClient};
use serde::Serialize;
use std::collections::BTreeMap;

/// When a topic's acknowledged appends reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// An append is acknowledged once it is on disk (concurrent appends share fsyncs).
    Always,
    /// The broker fsyncs every `fsync_interval_ms`; a crash can lose that window.
    Interval,
    /// The OS writes back when it likes.
    Never,
}

impl FsyncPolicy {
    fn to_proto(self) -> proto::FsyncPolicy {
        match self {
            FsyncPolicy::Always => proto::FsyncPolicy::Always,
            FsyncPolicy::Interval => proto::FsyncPolicy::Interval,
            FsyncPolicy::Never => proto::FsyncPolicy::Never,
        }
    }

    fn from_proto(raw: i32) -> Option<FsyncPolicy> {
        match proto::FsyncPolicy::try_from(raw) {
            Ok(proto::FsyncPolicy::Always) => Some(FsyncPolicy::Always),
            Ok(proto::FsyncPolicy::Interval) => Some(FsyncPolicy::Interval),
            Ok(proto::FsyncPolicy::Never) => Some(FsyncPolicy::Never),
            Ok(proto::FsyncPolicy::Unspecified) | Err(_) => None,
        }
    }
}

/// A topic's settings. In a create, unset fields take the broker's defaults; in an alter, they
/// keep their value. In a [`TopicInfo`] every field is set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TopicSettings {
    /// Sealed segments whose newest record is older than this are deleted; -1 keeps forever.
    pub retention_ms: Option<i64>,
    /// Oldest sealed segments are deleted while a partition holds more; -1 is no limit.
    pub retention_bytes: Option<i64>,
    /// A segment rolls before it would grow past this many bytes.
    pub segment_max_bytes: Option<u64>,
    /// A segment rolls once its first record is this old (ms); -1 never rolls by age.
    pub segment_max_ms: Option<i64>,
    /// Durability of an acknowledged append.
    pub fsync: Option<FsyncPolicy>,
    /// The fsync period under [`FsyncPolicy::Interval`].
    pub fsync_interval_ms: Option<u64>,
    /// The largest record (key, value, headers and framing) the topic accepts, in bytes.
    pub max_record_bytes: Option<u32>,
}

impl TopicSettings {
    fn to_proto(&self) -> proto::TopicConfig {
        proto::TopicConfig {
            retention_ms: self.retention_ms,
            retention_bytes: self.retention_bytes,
            segment_max_bytes: self.segment_max_bytes,
            segment_max_ms: self.segment_max_ms,
            fsync_policy: self.fsync.map(|f| f.to_proto().into()),
            fsync_interval_ms: self.fsync_interval_ms,
            max_record_bytes: self.max_record_bytes,
        }
    }

    fn from_proto(c: Option<proto::TopicConfig>) -> TopicSettings {
        let c = c.unwrap_or_default();
        TopicSettings {
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            segment_max_bytes: c.segment_max_bytes,
            segment_max_ms: c.segment_max_ms,
            fsync: c.fsync_policy.and_then(FsyncPolicy::from_proto),
            fsync_interval_ms: c.fsync_interval_ms,
            max_record_bytes: c.max_record_bytes,
        }
    }
}

/// A topic's name, partition count and effective settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// The topic's name.
    pub name: String,
    /// Number of partitions.
    pub partitions: u32,
    /// The effective settings, every field set.
    pub config: TopicSettings,
    /// Copies of each partition (1: not replicated).
    pub replication_factor: u32,
}

impl From<proto::TopicInfo> for TopicInfo {
    fn from(t: proto::TopicInfo) -> Self {
        TopicInfo {
            name: t.name,
            partitions: t.partitions,
            config: TopicSettings::from_proto(t.config),
            replication_factor: t.replication_factor.max(1),
        }
    }
}

/// The cluster as one broker sees it ([`Admin::metadata`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClusterMetadata {
    /// The node id of the broker that answered (0: a broker without cluster settings).
    pub node_id: u64,
    /// Every broker of the cluster.
    pub brokers: Vec<BrokerInfo>,
    /// The topics asked for, sorted by name.
    pub topics: Vec<TopicMetadata>,
    /// The broker that coordinates consumer groups, if the answering broker knows one (any
    /// broker takes group requests and forwards them there).
    pub group_coordinator: Option<u64>,
}

impl ClusterMetadata {
    /// The client address of broker `node_id`, if the answering broker knows it.
    pub fn address_of(&self, node_id: u64) -> Option<&str> {
        self.brokers
            .iter()
            .find(|b| b.node_id == node_id && !b.address.is_empty())
            .map(|b| b.address.as_str())
    }

    /// Partition `partition` of `topic`, if listed.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<&PartitionMetadata> {
        self.topics
            .iter()
            .find(|t| t.name == topic)?
            .partitions
            .iter()
            .find(|p| p.partition == partition)
    }
}

/// A broker of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BrokerInfo {
    /// Its node id.
    pub node_id: u64,
    /// Where clients reach it; empty while the answering broker has not learned it.
    pub address: String,
    /// Its Raft port; empty without cluster settings.
    pub raft_address: String,
}

/// A topic's partitions as one broker sees them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicMetadata {
    /// The topic.
    pub name: String,
    /// Its partitions, in order.
    pub partitions: Vec<PartitionMetadata>,
}

/// One partition's replicas and state on the answering broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionMetadata {
    /// The partition.
    pub partition: u32,
    /// Node ids of its replicas; empty when not replicated.
    pub replicas: Vec<u64>,
    /// The leader as the answering broker knows it.
    pub leader: Option<u64>,
    /// The highest Raft term the answering replica has seen.
    pub term: u64,
    /// Records below it are committed and served.
    pub high_watermark: u64,
    /// The end of the answering replica's log.
    pub log_end_offset: u64,
}

impl From<proto::MetadataResponse> for ClusterMetadata {
    fn from(m: proto::MetadataResponse) -> Self {
        ClusterMetadata {
            node_id: m.node_id,
            group_coordinator: Some(m.group_coordinator).filter(|&n| n != 0 || m.node_id == 0),
            brokers: m
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    node_id: b.node_id,
                    address: b.address,
                    raft_address: b.raft_address,
                })
                .collect(),
            topics: m
                .topics
                .into_iter()
                .map(|t| TopicMetadata {
                    name: t.name,
                    partitions: t
                        .partitions
                        .into_iter()
                        .map(|p| PartitionMetadata {
                            partition: p.partition,
                            replicas: p.replicas,
                            leader: p.leader,
                            term: p.term,
                            high_watermark: p.high_watermark,
                            log_end_offset: p.log_end_offset,
                        })
                        .collect(),
                })
                .collect(),
        }
    }
}

/// The state of one partition's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// Partition number.
    pub partition: u32,
    /// The first offset still stored.
    pub earliest_offset: u64,
    /// The offset the next record will get (everything below is readable).
    pub next_offset: u64,
    /// Bytes of record batches stored.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: u32,
}

/// A topic and the state of each of its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicDescription {
    /// Name, partition count and settings.
    pub topic: TopicInfo,
    /// One entry per partition, in partition order.
    pub partitions: Vec<PartitionInfo>,
}

/// A consumer group's progress in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The group's committed offset (the next record it will read), if it committed one.
    pub committed_offset: Option<u64>,
    /// The partition's next offset.
    pub next_offset: u64,
    /// Records the group has yet to read (from the later of the committed offset and the
    /// earliest stored offset).
    pub lag: u64,
    /// The member that owns the partition now.
    pub owner: Option<String>,
}

/// A live member of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupMember {
    /// Its id.
    pub member_id: String,
    /// A static member's instance id.
    pub instance_id: Option<String>,
    /// Where its heartbeats come from.
    pub client_host: String,
    /// Its epoch.
    pub member_epoch: i64,
    /// The topics it follows.
    pub topics: Vec<String>,
    /// What it owns, per topic.
    pub assignment: BTreeMap<String, Vec<u32>>,
    /// A static member away for a moment.
    pub away: bool,
}

/// A consumer group: its members and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GroupDescription {
    /// The group.
    pub group: String,
    /// `empty`, `reconciling` or `stable`.
    pub state: String,
    /// The group epoch.
    pub epoch: u64,
    /// The assignor (empty without members).
    pub assignor: String,
    /// Its live members.
    pub members: Vec<GroupMember>,
    /// Per partition it committed in or a member owns.
    pub partitions: Vec<GroupLag>,
}

/// A partition's offsets, from [`Admin::list_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionOffsets {
    /// The partition.
    pub partition: u32,
    /// The earliest offset still stored.
    pub earliest_offset: u64,
    /// The next offset.
    pub next_offset: u64,
    /// Where the position asked for resolves.
    pub offset: u64,
}

/// Topic and consumer-group administration.
#[derive(Debug, Clone)]
pub struct Admin {
    client: StrataClient<Channel>,
}

impl Admin {
    /// Admin calls over `channel` (see [`super::connect`]).
    pub fn new(channel: Channel) -> Admin {
        Admin {
            client: raw(channel),
        }
    }

    /// Creates a topic; unset settings take the broker's defaults. ALREADY_EXISTS if taken.
    pub async fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        settings: &TopicSettings,
    ) -> Result<TopicInfo, ClientError> {
        self.create_replicated_topic(name, partitions, 1, settings)
            .await
    }

    /// Creates a topic whose partitions have `replication_factor` replicas each (on a cluster:
    /// the broker's cluster settings decide where; 1: not replicated).
    pub async fn create_replicated_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u32,
        settings: &TopicSettings,
    ) -> Result<TopicInfo, ClientError> {
        let resp = self
            .client
            .clone()
            .create_topic(proto::CreateTopicRequest {
                name: name.to_string(),
                partitions,
                config: Some(settings.to_proto()),
                replication_factor,
            })
            .await?
            .into_inner();
        Ok(topic_or_name(resp.topic, name))
    }

    /// The cluster as the connected broker sees it: brokers and, for `topics` (empty: every
    /// topic), each partition's replicas, leader and offsets.
    pub async fn metadata(&self, topics: &[&str]) -> Result<ClusterMetadata, ClientError> {
        let resp = self
            .client
            .clone()
            .metadata(proto::MetadataRequest {
                topics: topics.iter().map(|t| (*t).to_owned()).collect(),
            })
            .await?
            .into_inner();
        Ok(resp.into())
    }

    /// Deletes a topic and its data. NOT_FOUND if there is no such topic.
    pub async fn delete_topic(&self, name: &str) -> Result<(), ClientError> {
        self.client
            .clone()
            .delete_topic(proto::DeleteTopicRequest {
                name: name.to_string(),
            })
            .await?;
        Ok(())
    }

    /// Every topic, sorted by name.
    pub async fn list_topics(&self) -> Result<Vec<TopicInfo>, ClientError> {
        let resp = self
            .client
            .clone()
            .list_topics(proto::ListTopicsRequest {})
            .await?
            .into_inner();
        Ok(resp.topics.into_iter().map(TopicInfo::from).collect())
    }

    /// A topic's settings and the offsets, size and segments of each partition.
    pub async fn describe_topic(&self, name: &str) -> Result<TopicDescription, ClientError> {
        let resp = self
            .client
            .clone()
            .describe_topic(proto::DescribeTopicRequest {
                name: name.to_string(),
            })
            .await?
            .into_inner();
        Ok(TopicDescription {
            topic: topic_or_name(resp.topic, name),
            partitions: resp
                .partitions
                .into_iter()
                .map(|p| PartitionInfo {
                    partition: p.partition,
                    earliest_offset: p.earliest_offset,
                    next_offset: p.next_offset,
                    bytes: p.bytes,
                    segments: p.segments,
                })
                .collect(),
        })
    }

    /// Changes the settings that are set in `settings`; returns the topic with its new settings.
    pub async fn alter_topic(
        &self,
        name: &str,
        settings: &TopicSettings,
    ) -> Result<TopicInfo, ClientError> {
        let resp = self
            .client
            .clone()
            .alter_topic_config(proto::AlterTopicConfigRequest {
                name: name.to_string(),
                config: Some(settings.to_proto()),
            })
            .await?
            .into_inner();
        Ok(topic_or_name(resp.topic, name))
    }

    /// Every consumer group that has committed an offset, sorted.
    pub async fn list_groups(&self) -> Result<Vec<String>, ClientError> {
        let resp = self
            .client
            .clone()
            .list_groups(proto::ListGroupsRequest {})
            .await?
            .into_inner();
        Ok(resp.groups)
    }

    /// A group's members and, per topic-partition, its committed offset, the next offset, the
    /// lag and the owner. NOT_FOUND if the group has neither commits nor members.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, ClientError> {
        let resp = self
            .client
            .clone()
            .describe_group(proto::DescribeGroupRequest {
                group: group.to_string(),
            })
            .await?
            .into_inner();
        Ok(GroupDescription {
            group: resp.group,
            state: resp.state,
            epoch: resp.epoch,
            assignor: resp.assignor,
            members: resp
                .members
                .into_iter()
                .map(|m| GroupMember {
                    member_id: m.member_id,
                    instance_id: Some(m.instance_id).filter(|i| !i.is_empty()),
                    client_host: m.client_host,
                    member_epoch: m.member_epoch,
                    topics: m.topics,
                    assignment: m
                        .assignment
                        .into_iter()
                        .map(|tp| (tp.topic, tp.partitions))
                        .collect(),
                    away: m.away,
                })
                .collect(),
            partitions: resp
                .partitions
                .into_iter()
                .map(|p| GroupLag {
                    topic: p.topic,
                    partition: p.partition,
                    committed_offset: p.committed_offset,
                    next_offset: p.next_offset,
                    lag: p.lag,
                    owner: Some(p.owner).filter(|o| !o.is_empty()),
                })
                .collect(),
        })
    }

    /// A group's committed offsets in a topic, by partition; partitions without a commit are
    /// absent.
    pub async fn committed_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<BTreeMap<u32, u64>, ClientError> {
        let resp = self
            .client
            .clone()
            .fetch_committed_offsets(proto::FetchCommittedOffsetsRequest {
                group: group.to_string(),
                topic: topic.to_string(),
            })
            .await?
            .into_inner();
        Ok(resp
            .offsets
            .into_iter()
            .map(|o| (o.partition, o.offset))
            .collect())
    }

    /// Commits a group's offsets in a topic (partition -> next offset to read), all or nothing,
    /// without membership: only while the group has no live members.
    pub async fn commit_offsets(
        &self,
        group: &str,
        topic: &str,
        offsets: &BTreeMap<u32, u64>,
    ) -> Result<(), ClientError> {
        self.client
            .clone()
            .commit_offsets(proto::CommitOffsetsRequest {
                group: group.to_string(),
                member_id: String::new(),
                member_epoch: 0,
                offsets: offsets
                    .iter()
                    .map(|(&partition, &offset)| proto::PartitionOffset {
                        topic: topic.to_string(),
                        partition,
                        offset,
                    })
                    .collect(),
            })
            .await?;
        Ok(())
    }

    /// Per partition (`partitions`, or all if empty): the earliest and next offsets and where
    /// `at` resolves (for a timestamp, the first record at or after it). Reads no record.
    pub async fn list_offsets(
        &self,
        topic: &str,
        partitions: &[u32],
        at: Seek,
    ) -> Result<Vec<PartitionOffsets>, ClientError> {
        let resp = self
            .client
            .clone()
            .list_offsets(proto::ListOffsetsRequest {
                topic: topic.to_string(),
                partitions: partitions.to_vec(),
                position: Some(at.start_position()),
            })
            .await?
            .into_inner();
        Ok(resp
            .partitions
            .into_iter()
            .map(|p| PartitionOffsets {
                partition: p.partition,
                earliest_offset: p.earliest_offset,
                next_offset: p.next_offset,
                offset: p.offset,
            })
            .collect())
    }

    /// Deletes a group's committed offsets; refused while the group has live members.
    pub async fn delete_group(&self, group: &str) -> Result<(), ClientError> {
        self.client
            .clone()
            .delete_group(proto::DeleteGroupRequest {
                group: group.to_string(),
            })
            .await?;
        Ok(())
    }
}

/// The topic in a response; a broker that left it out still gets its name shown.
fn topic_or_name(topic: Option<proto::TopicInfo>, name: &str) -> TopicInfo {
    topic.map_or_else(
        || TopicInfo {
            name: name.to_string(),
            partitions: 0,
            config: TopicSettings::default(),
            replication_factor: 1,
        },
        TopicInfo::from,
    )
}
