//! Conversions between the generated protobuf types and the broker's types.

use super::RequestError;
use crate::broker::{
    Assignment, Assignor, FsyncMode, GroupDescription, Heartbeat, PartitionInfo, StartPosition,
    TopicConfig, TopicConfigUpdate, TopicInfo, now_ms,
};
use crate::proto;
use crate::record::{self, Frame, decode_frame};
use crate::storage::Offset;
use bytes::Bytes;

/// A limit where -1 means "none".
#[allow(clippy::option_option)]
fn limit(field: &'static str, value: Option<i64>) -> Result<Option<Option<u64>>, RequestError> {
    match value {
        None => Ok(None),
        Some(-1) => Ok(Some(None)),
        Some(v) => u64::try_from(v).map(|v| Some(Some(v))).map_err(|_| {
            RequestError::invalid(field, format!("{v} is negative; use -1 for no limit"))
        }),
    }
}

/// The changes a request's config asks for (unset fields: no change).
pub(super) fn config_update(
    config: Option<proto::TopicConfig>,
) -> Result<TopicConfigUpdate, RequestError> {
    let Some(c) = config else {
        return Ok(TopicConfigUpdate::default());
    };
    let fsync = match c.fsync_policy {
        None => None,
        Some(raw) => match proto::FsyncPolicy::try_from(raw) {
            Ok(proto::FsyncPolicy::Unspecified) => None,
            Ok(proto::FsyncPolicy::Always) => Some(FsyncMode::Always),
            Ok(proto::FsyncPolicy::Interval) => Some(FsyncMode::Interval),
            Ok(proto::FsyncPolicy::Never) => Some(FsyncMode::Never),
            Err(_) => {
                return Err(RequestError::invalid(
                    "fsync_policy",
                    format!("{raw} is not a known fsync policy"),
                ));
            }
        },
    };
    Ok(TopicConfigUpdate {
        retention_ms: limit("retention_ms", c.retention_ms)?,
        retention_bytes: limit("retention_bytes", c.retention_bytes)?,
        segment_max_bytes: c.segment_max_bytes,
        segment_max_ms: limit("segment_max_ms", c.segment_max_ms)?,
        fsync,
        fsync_interval_ms: c.fsync_interval_ms,
        max_record_bytes: c.max_record_bytes,
    })
}

fn to_i64(v: Option<u64>) -> i64 {
    v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX))
}

/// A topic's effective config, every field set.
pub(super) fn config(c: &TopicConfig) -> proto::TopicConfig {
    proto::TopicConfig {
        retention_ms: Some(to_i64(c.retention_ms)),
        retention_bytes: Some(to_i64(c.retention_bytes)),
        segment_max_bytes: Some(c.segment_max_bytes),
        segment_max_ms: Some(to_i64(c.segment_max_ms)),
        fsync_policy: Some(
            match c.fsync {
                FsyncMode::Always => proto::FsyncPolicy::Always,
                FsyncMode::Interval => proto::FsyncPolicy::Interval,
                FsyncMode::Never => proto::FsyncPolicy::Never,
            }
            .into(),
        ),
        fsync_interval_ms: Some(c.fsync_interval_ms),
        max_record_bytes: Some(c.max_record_bytes),
    }
}

pub(super) fn topic_info(t: &TopicInfo) -> proto::TopicInfo {
    proto::TopicInfo {
        name: t.name.clone(),
        partitions: t.partitions,
        config: Some(config(&t.config)),
        replication_factor: t.replication_factor,
    }
}

/// A topic's partitions as the Metadata rpc shows them.
pub(super) fn topic_metadata(t: &TopicInfo, partitions: &[PartitionInfo]) -> proto::TopicMetadata {
    proto::TopicMetadata {
        name: t.name.clone(),
        partitions: partitions
            .iter()
            .map(|p| {
                let r = p.replication.as_ref();
                proto::PartitionMetadata {
                    partition: p.partition,
                    replicas: r.map(|r| r.replicas.clone()).unwrap_or_default(),
                    leader: r.and_then(|r| r.leader),
                    term: r.map_or(0, |r| r.term),
                    high_watermark: p.stats.next_offset,
                    log_end_offset: r.map_or(p.stats.next_offset, |r| r.log_end_offset),
                }
            })
            .collect(),
    }
}

pub(super) fn partition_info(p: &PartitionInfo) -> proto::PartitionInfo {
    proto::PartitionInfo {
        partition: p.partition,
        earliest_offset: p.stats.earliest_offset,
        next_offset: p.stats.next_offset,
        bytes: p.stats.bytes,
        segments: p.stats.segments,
    }
}

/// A request's start position; `default` when unset.
/// Partitions per topic, from the wire.
pub(super) fn assignment_in(parts: Vec<proto::TopicPartitions>) -> Assignment {
    let mut out = Assignment::new();
    for tp in parts.into_iter().filter(|tp| !tp.partitions.is_empty()) {
        out.entry(tp.topic).or_default().extend(tp.partitions);
    }
    out
}

/// Partitions per topic, for the wire.
pub(super) fn assignment_out(a: &Assignment) -> Vec<proto::TopicPartitions> {
    a.iter()
        .map(|(topic, ps)| proto::TopicPartitions {
            topic: topic.clone(),
            partitions: ps.iter().copied().collect(),
        })
        .collect()
}

/// A heartbeat from the wire; `client_host` is the peer the server saw.
pub(super) fn heartbeat_in(
    req: proto::GroupHeartbeatRequest,
    client_host: String,
) -> Result<Heartbeat, RequestError> {
    let assignor = Assignor::parse(&req.assignor).ok_or_else(|| RequestError::InvalidArgument {
        field: "assignor",
        reason: format!("'{}' is not an assignor (uniform or range)", req.assignor),
    })?;
    Ok(Heartbeat {
        member_id: req.member_id,
        member_epoch: req.member_epoch,
        instance_id: Some(req.instance_id).filter(|i| !i.is_empty()),
        client_host,
        topics: req.topics.into_iter().collect(),
        assignor,
        owned: assignment_in(req.owned),
    })
}

/// A group description for the wire.
pub(super) fn group_out(d: GroupDescription) -> proto::DescribeGroupResponse {
    let members = d.members.as_ref();
    proto::DescribeGroupResponse {
        group: d.group,
        state: members.map_or("empty", |m| m.state).to_string(),
        epoch: members.map_or(0, |m| m.epoch),
        assignor: members.map_or("", |m| m.assignor.name()).to_string(),
        members: members
            .into_iter()
            .flat_map(|g| &g.members)
            .map(|m| proto::GroupMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id.clone().unwrap_or_default(),
                client_host: m.client_host.clone(),
                member_epoch: m.member_epoch,
                topics: m.topics.iter().cloned().collect(),
                assignment: assignment_out(&m.assignment),
                away: m.away,
            })
            .collect(),
        partitions: d
            .partitions
            .into_iter()
            .map(|l| proto::GroupPartitionLag {
                topic: l.topic,
                partition: l.partition,
                committed_offset: l.committed_offset,
                next_offset: l.next_offset,
                lag: l.lag,
                owner: l.owner.unwrap_or_default(),
            })
            .collect(),
    }
}

pub(super) fn start_position(
    start: Option<proto::StartPosition>,
    default: StartPosition,
) -> StartPosition {
    use proto::start_position::Position;
    match start.and_then(|s| s.position) {
        None => default,
        Some(Position::Offset(o)) => StartPosition::Offset(o),
        Some(Position::Earliest(_)) => StartPosition::Earliest,
        Some(Position::Latest(_)) => StartPosition::Latest,
        Some(Position::TimestampMs(ts)) => StartPosition::Timestamp(ts),
        Some(Position::Group(g)) => StartPosition::Group(g),
    }
}

/// A plain record to encode; an unset timestamp is the broker's clock now.
pub(super) fn record_in(r: proto::Record, now_ms: i64) -> record::Record {
    record::Record {
        key: r.key,
        value: r.value,
        headers: r
            .headers
            .into_iter()
            .map(|h| record::Header {
                name: h.name,
                value: h.value,
            })
            .collect(),
        timestamp_ms: r.timestamp_ms.unwrap_or(now_ms),
    }
}

/// Plain records with the broker's clock for those without a timestamp.
pub(super) fn records_in(records: Vec<proto::Record>) -> Vec<record::Record> {
    let now = now_ms();
    records.into_iter().map(|r| record_in(r, now)).collect()
}

/// Decodes the records at or after `from` out of whole batches, sharing their bytes.
pub(super) fn decode_records(
    batches: &Bytes,
    from: Offset,
) -> Result<Vec<proto::Record>, RequestError> {
    let mut out = Vec::new();
    let mut rest: &[u8] = batches;
    while !rest.is_empty() {
        let Frame::Batch(view) = decode_frame(rest) else {
            // Storage only returns whole, checked batches; anything else is a bug worth reporting.
            return Err(RequestError::Undecodable {
                reason: "a fetched chunk does not decode into whole batches".into(),
            });
        };
        rest = &rest[view.bytes().len()..];
        if view.header().is_control() {
            continue; // the broker's own Raft entry: no record of the topic's
        }
        for rec in view.records() {
            let rec = rec.map_err(|c| RequestError::Undecodable {
                reason: c.to_string(),
            })?;
            if rec.offset < from {
                continue;
            }
            out.push(proto::Record {
                key: rec.key.map(|k| batches.slice_ref(k)),
                value: batches.slice_ref(rec.value),
                headers: rec
                    .headers()
                    .map(|(name, value)| proto::Header {
                        name: String::from_utf8_lossy(name).into_owned(),
                        value: batches.slice_ref(value),
                    })
                    .collect(),
                timestamp_ms: Some(rec.timestamp_ms),
                offset: rec.offset,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_is_no_limit_and_other_negatives_are_refused() {
        let update = config_update(Some(proto::TopicConfig {
            retention_ms: Some(-1),
            retention_bytes: Some(100),
            ..proto::TopicConfig::default()
        }))
        .unwrap();
        assert_eq!(update.retention_ms, Some(None));
        assert_eq!(update.retention_bytes, Some(Some(100)));
        assert_eq!(update.segment_max_bytes, None);
        assert!(
            config_update(Some(proto::TopicConfig {
                retention_ms: Some(-2),
                ..proto::TopicConfig::default()
            }))
            .is_err()
        );
    }

    #[test]
    fn decoding_skips_records_before_the_start() {
        let mut b = record::BatchBuilder::default();
        b.push_parts(1, Some(b"k"), b"a", [(&b"h"[..], &b"v"[..])]);
        b.push_parts(2, None, b"b", []);
        let batches = Bytes::from(b.finish(10));
        let recs = decode_records(&batches, 11).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].offset, 11);
        assert_eq!(&recs[0].value[..], b"b");
        let all = decode_records(&batches, 0).unwrap();
        assert_eq!(all[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(all[0].headers[0].name, "h");
    }

    #[test]
    fn decoding_skips_control_batches() {
        let mut control = record::BatchBuilder::default();
        control.push_parts(1, None, b"blank entry", []);
        let mut data = record::BatchBuilder::default();
        data.push_parts(2, None, b"user_signed_up", []);
        let mut bytes = control.finish_control(5);
        bytes.extend(data.finish(6));
        let recs = decode_records(&Bytes::from(bytes), 0).unwrap();
        assert_eq!(recs.len(), 1);
        assert_eq!(
            (recs[0].offset, &recs[0].value[..]),
            (6, &b"user_signed_up"[..])
        );
    }
}
