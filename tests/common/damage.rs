//! Support for the on-disk damage tests: a broker with known records in several segments, stopped
//! so its files can be damaged, and a reader that reads every partition past damage, checking
//! what it is served and what it is told is lost. Used as `mod common; #[path] mod damage;`.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use crate::common::{Client, Server};
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};
use strata::proto::{DescribeTopicRequest, FetchRequest, ProduceRequest, Record, TopicConfig};
use tonic::Code;

/// Topic, partition.
pub type Part = (String, u32);
/// Every acknowledged record: offset -> value, per partition.
pub type Acked = BTreeMap<Part, BTreeMap<u64, Vec<u8>>>;

/// The topics of a damage test: "damaged" (2 partitions) and "intact" (1), 4 KiB segments.
pub const TOPICS: [(&str, u32); 2] = [("damaged", 2), ("intact", 1)];

/// Starts a broker in `dir`, creates the topics and produces `batches` batches of 3 records to
/// every partition (about four segments each). Returns the broker and what it acknowledged.
pub async fn populate(dir: &Path, batches: usize) -> (Server, Acked) {
    let server = Server::start(dir);
    let mut client = server.client().await;
    let mut acked = Acked::new();
    for (topic, partitions) in TOPICS {
        let config = TopicConfig {
            segment_max_bytes: Some(4096),
            // The records carry old timestamps: keep them.
            retention_ms: Some(-1),
            ..TopicConfig::default()
        };
        crate::common::create_topic_with(&mut client, topic, partitions, config).await;
        for partition in 0..partitions {
            for k in 0..batches {
                let values: Vec<Vec<u8>> = (0..3)
                    .map(|j| {
                        let mut v = format!("{topic}/{partition}/{k}/{j}/").into_bytes();
                        v.resize(100, b'a' + (k % 26) as u8);
                        v
                    })
                    .collect();
                let resp = client
                    .produce(ProduceRequest {
                        topic: topic.into(),
                        partition: Some(partition),
                        records: values
                            .iter()
                            .map(|v| Record {
                                value: v.clone().into(),
                                timestamp_ms: Some(1_000_000 + k as i64),
                                ..Record::default()
                            })
                            .collect(),
                        batch: bytes::Bytes::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let base = resp.results[0].base_offset;
                let part = acked.entry((topic.to_owned(), partition)).or_default();
                for (i, v) in values.into_iter().enumerate() {
                    part.insert(base + i as u64, v);
                }
            }
        }
    }
    (server, acked)
}

/// A partition's directory.
pub fn partition_dir(data: &Path, topic: &str, partition: u32) -> PathBuf {
    data.join("topics").join(topic).join(partition.to_string())
}

/// What reading a partition from its start to its end found.
#[derive(Debug, Default)]
pub struct Read {
    /// Records served: offset -> value.
    pub served: BTreeMap<u64, Vec<u8>>,
    /// Offset ranges reported lost (DATA_LOSS), with the message.
    pub lost: Vec<(u64, u64, String)>,
    /// The partition's high watermark.
    pub high_watermark: u64,
}

impl Read {
    /// Offsets reported lost.
    pub fn lost_offsets(&self) -> Vec<u64> {
        self.lost.iter().flat_map(|(a, b, _)| *a..*b).collect()
    }
}

/// `offsets A..B` in a DATA_LOSS message.
fn lost_range(message: &str) -> Option<(u64, u64)> {
    let rest = &message[message.find("offsets ")? + "offsets ".len()..];
    let (a, rest) = rest.split_once("..")?;
    let b: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Reads a partition from offset 0 to its high watermark. A fetch refused with DATA_LOSS must name
/// the topic, the partition and a range holding the offset asked for; the read goes on after it.
pub async fn read_past_damage(client: &mut Client, topic: &str, partition: u32) -> Read {
    let described = client
        .describe_topic(DescribeTopicRequest { name: topic.into() })
        .await
        .unwrap()
        .into_inner();
    let p = &described.partitions[partition as usize];
    let mut read = Read {
        high_watermark: p.next_offset,
        ..Read::default()
    };
    let mut at = p.earliest_offset;
    while at < read.high_watermark {
        let fetched = client
            .fetch(FetchRequest {
                topic: topic.into(),
                partition,
                start: crate::common::at_offset(at),
                max_bytes: 1000,
                ..FetchRequest::default()
            })
            .await;
        match fetched {
            Ok(resp) => {
                let resp = resp.into_inner();
                for rec in crate::common::decode(&resp.batches, at) {
                    assert!(
                        read.served.insert(rec.offset, rec.value).is_none(),
                        "{topic}/{partition}: offset {} served twice",
                        rec.offset
                    );
                }
                assert!(
                    resp.next_fetch_offset > at,
                    "{topic}/{partition}: stuck at {at}"
                );
                at = resp.next_fetch_offset;
            }
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::DataLoss,
                    "{topic}/{partition}: {status:?}"
                );
                let msg = status.message().to_owned();
                assert!(
                    msg.contains(&format!("topic '{topic}' partition {partition}")),
                    "the message names no topic and partition: {msg}"
                );
                let (from, to) = lost_range(&msg)
                    .unwrap_or_else(|| panic!("the message names no offset range: {msg}"));
                assert!(
                    from <= at && at < to,
                    "{topic}/{partition}: a fetch at {at} reported {from}..{to} lost"
                );
                read.lost.push((at, to, msg));
                at = to;
            }
        }
    }
    read
}

/// Every record served is the one acknowledged at its offset; every acknowledged record is served
/// or reported lost; and only offsets `may_lose` allows are lost. Returns the lost offsets.
pub fn check(
    part: &Part,
    acked: &BTreeMap<u64, Vec<u8>>,
    read: &Read,
    may_lose: impl Fn(u64) -> bool,
) -> Vec<u64> {
    for (offset, value) in &read.served {
        assert!(
            acked.get(offset) == Some(value),
            "{part:?}: offset {offset} served with a value never acknowledged there"
        );
    }
    let lost = read.lost_offsets();
    for offset in acked.keys() {
        assert!(
            read.served.contains_key(offset) || lost.contains(offset),
            "{part:?}: acknowledged offset {offset} neither served nor reported lost ({:?})",
            read.lost
        );
    }
    for offset in &lost {
        assert!(
            may_lose(*offset),
            "{part:?}: offset {offset} reported lost, but its bytes were not damaged ({:?})",
            read.lost
        );
    }
    lost
}

/// Reads every partition of every topic: the ones `damaged` names may lose what `may_lose` allows,
/// the others must serve every acknowledged record.
pub async fn check_all(
    client: &mut Client,
    acked: &Acked,
    damaged: &Part,
    may_lose: impl Fn(u64) -> bool,
) -> Vec<u64> {
    let mut lost = Vec::new();
    for (part, records) in acked {
        let read = read_past_damage(client, &part.0, part.1).await;
        if part == damaged {
            lost = check(part, records, &read, &may_lose);
        } else {
            check(part, records, &read, |_| false);
        }
    }
    lost
}

/// With "damaged" offline: the broker lists only "intact" and serves every record acknowledged
/// to it.
pub async fn only_intact_is_served(client: &mut Client, acked: &Acked, how: &str) {
    let names: Vec<String> = client
        .list_topics(strata::proto::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .topics
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["intact"], "{how}");
    let intact: Acked = acked
        .iter()
        .filter(|(p, _)| p.0 == "intact")
        .map(|(p, r)| (p.clone(), r.clone()))
        .collect();
    check_all(client, &intact, &("none".to_owned(), 0), |_| false).await;
}

/// "damaged" is offline: describing it is DATA_LOSS naming it. Returns the message.
pub async fn damaged_topic_is_refused(client: &mut Client, how: &str) -> String {
    let status = client
        .describe_topic(DescribeTopicRequest {
            name: "damaged".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::DataLoss, "{how}: {status:?}");
    assert!(
        status.message().contains("topic 'damaged'"),
        "{how}: {status:?}"
    );
    status.message().to_owned()
}
