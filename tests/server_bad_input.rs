//! Bad input gets the right gRPC code and a message that says what is wrong, and the broker keeps
//! serving everyone else.

mod common;

use bytes::Bytes;
use common::{Server, at_offset, batch_of, create_topic, produce_values, values};
use strata::proto::{
    self, AlterTopicConfigRequest, CommitOffsetsRequest, CreateTopicRequest, DescribeTopicRequest,
    FetchRequest, PartitionOffset, ProduceRequest, SubscribeRequest, TopicConfig,
};
use tonic::Code;

fn expect_code<T: std::fmt::Debug>(result: Result<T, tonic::Status>, code: Code, needle: &str) {
    let status = result.expect_err("the request should have failed");
    assert_eq!(status.code(), code, "message: {}", status.message());
    assert!(
        status.message().contains(needle),
        "message {:?} does not mention {needle:?}",
        status.message()
    );
}

fn fetch(topic: &str, partition: u32, offset: u64, max_bytes: i64) -> FetchRequest {
    FetchRequest {
        topic: topic.into(),
        partition,
        start: at_offset(offset),
        max_bytes,
        ..FetchRequest::default()
    }
}

fn records(topic: &str, values: Vec<Vec<u8>>) -> ProduceRequest {
    ProduceRequest {
        topic: topic.into(),
        partition: Some(0),
        records: values
            .into_iter()
            .map(|v| proto::Record {
                value: Bytes::from(v),
                ..proto::Record::default()
            })
            .collect(),
        batch: Bytes::new(),
    }
}

#[tokio::test]
async fn each_bad_request_gets_its_code_and_the_broker_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-request-bytes", "1048576"]);
    let mut c = server.client().await;
    create_topic(&mut c, "good", 1).await;
    produce_values(&mut c, "good", 0, &values("v", 0, 3)).await;

    // Topics.
    expect_code(
        c.fetch(fetch("missing", 0, 0, 0)).await,
        Code::NotFound,
        "topic 'missing' does not exist",
    );
    expect_code(
        c.fetch(fetch("good", 7, 0, 0)).await,
        Code::NotFound,
        "partition 7",
    );
    for name in ["", "bad name", "..", &"x".repeat(250), "a/b"] {
        expect_code(
            c.create_topic(CreateTopicRequest {
                name: name.into(),
                partitions: 1,
                config: None,
                replication_factor: 0,
            })
            .await,
            Code::InvalidArgument,
            "invalid topic name",
        );
    }
    expect_code(
        c.fetch(fetch("no/such", 0, 0, 0)).await,
        Code::InvalidArgument,
        "invalid topic name",
    );
    expect_code(
        c.create_topic(CreateTopicRequest {
            name: "good".into(),
            partitions: 1,
            config: None,
            replication_factor: 0,
        })
        .await,
        Code::AlreadyExists,
        "already exists",
    );
    for partitions in [0, 1_000_000] {
        expect_code(
            c.create_topic(CreateTopicRequest {
                name: "many".into(),
                partitions,
                config: None,
                replication_factor: 0,
            })
            .await,
            Code::InvalidArgument,
            "max_partitions_per_topic",
        );
    }
    expect_code(
        c.create_topic(CreateTopicRequest {
            name: "weird".into(),
            partitions: 1,
            config: Some(TopicConfig {
                retention_ms: Some(-5),
                ..TopicConfig::default()
            }),
            replication_factor: 0,
        })
        .await,
        Code::InvalidArgument,
        "retention_ms",
    );

    // Offsets: beyond the next offset, and below the earliest once retention has moved it.
    expect_code(
        c.fetch(fetch("good", 0, 4, 0)).await,
        Code::OutOfRange,
        "0..3",
    );
    c.create_topic(CreateTopicRequest {
        name: "short".into(),
        partitions: 1,
        config: Some(TopicConfig {
            segment_max_bytes: Some(4096),
            ..TopicConfig::default()
        }),
        replication_factor: 0,
    })
    .await
    .unwrap();
    for i in 0..20 {
        produce_values(&mut c, "short", 0, &[vec![b'a' + (i % 26) as u8; 300]]).await;
    }
    c.alter_topic_config(AlterTopicConfigRequest {
        name: "short".into(),
        config: Some(TopicConfig {
            retention_bytes: Some(2048),
            ..TopicConfig::default()
        }),
    })
    .await
    .unwrap();
    let described = c
        .describe_topic(DescribeTopicRequest {
            name: "short".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let earliest = described.partitions[0].earliest_offset;
    assert!(earliest > 0, "retention did not move the earliest offset");
    expect_code(
        c.fetch(fetch("short", 0, 0, 0)).await,
        Code::OutOfRange,
        "out of range",
    );
    expect_code(
        c.subscribe(SubscribeRequest {
            topic: "short".into(),
            partitions: vec![],
            start: at_offset(0),
            max_bytes: 0,
        })
        .await,
        Code::OutOfRange,
        "out of range",
    );
    expect_code(
        c.commit_offsets(CommitOffsetsRequest {
            group: "g".into(),
            offsets: vec![PartitionOffset {
                topic: "good".into(),
                partition: 0,
                offset: 99,
            }],
            ..CommitOffsetsRequest::default()
        })
        .await,
        Code::OutOfRange,
        "0..=3",
    );
    expect_code(
        c.commit_offsets(CommitOffsetsRequest {
            group: "bad group".into(),
            offsets: vec![],
            ..CommitOffsetsRequest::default()
        })
        .await,
        Code::InvalidArgument,
        "invalid group name",
    );

    // Records and requests too large, and empty produces.
    expect_code(
        c.produce(records("good", vec![vec![0; 1024 * 1024 + 1]]))
            .await,
        Code::ResourceExhausted,
        "too large",
    );
    c.alter_topic_config(AlterTopicConfigRequest {
        name: "good".into(),
        config: Some(TopicConfig {
            max_record_bytes: Some(1000),
            ..TopicConfig::default()
        }),
    })
    .await
    .unwrap();
    expect_code(
        c.produce(records("good", vec![vec![0; 2000]])).await,
        Code::ResourceExhausted,
        "over the limit of 1000 bytes",
    );
    expect_code(
        c.produce(ProduceRequest {
            topic: "good".into(),
            partition: Some(0),
            records: vec![],
            batch: Bytes::new(),
        })
        .await,
        Code::InvalidArgument,
        "empty",
    );
    let header_only = strata::record::BatchBuilder::default().finish(0);
    expect_code(
        c.produce(ProduceRequest {
            topic: "good".into(),
            partition: Some(0),
            records: vec![],
            batch: Bytes::from(header_only),
        })
        .await,
        Code::InvalidArgument,
        "invalid record batch",
    );
    let mut torn = batch_of(&values("t", 0, 2)).to_vec();
    torn.pop();
    expect_code(
        c.produce(ProduceRequest {
            topic: "good".into(),
            partition: Some(0),
            records: vec![],
            batch: Bytes::from(torn),
        })
        .await,
        Code::InvalidArgument,
        "truncated",
    );
    expect_code(
        c.produce(ProduceRequest {
            topic: "good".into(),
            partition: None,
            records: vec![],
            batch: batch_of(&values("t", 0, 2)),
        })
        .await,
        Code::InvalidArgument,
        "partition",
    );

    // max_bytes: negative is refused; absurd is capped to the broker's limit.
    expect_code(
        c.fetch(fetch("good", 0, 0, -1)).await,
        Code::InvalidArgument,
        "max_bytes",
    );
    let resp = c
        .fetch(fetch("good", 0, 0, i64::MAX))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(common::decode(&resp.batches, 0).len(), 3);

    // The broker still serves everyone: a fresh client produces and reads.
    let mut other = server.client().await;
    let base = produce_values(&mut other, "good", 0, &values("after", 0, 1)).await;
    assert_eq!(base, 3);
    let all = common::fetch_all(&mut other, "good", 0, 0).await;
    assert_eq!(all.len(), 4);
}
