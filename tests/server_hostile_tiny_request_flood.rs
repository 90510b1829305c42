//! A flood of tiny requests: many connections, each with many requests in flight, sending
//! one-record produces, describes, one-byte fetches, commits and requests the broker must refuse.
//! Every request gets its right answer, a probe client keeps being served, the broker's memory
//! stays under the bound, and once the flood stops its sockets and memory return to what they
//! were.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::{
    at_offset, create_topic,
    hostile::{Baseline, Probe, assert_memory_bounded, start_server},
};
use futures_util::StreamExt;
use strata::proto::{
    self, CommitOffsetsRequest, DescribeTopicRequest, FetchRequest, PartitionOffset, ProduceRequest,
};
use tonic::Code;

const CONNECTIONS: usize = 8;
const REQUESTS_PER_CONNECTION: usize = 2_500;
const IN_FLIGHT_PER_CONNECTION: usize = 64;

fn record(value: &str) -> Vec<proto::Record> {
    vec![proto::Record {
        value: Bytes::from(value.to_string()),
        ..proto::Record::default()
    }]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_tiny_requests_is_answered_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let mut admin = server.client().await;
    create_topic(&mut admin, "flood", 4).await;
    let probe = Probe::start(&server).await;
    let baseline = Baseline::take(&server);

    let mut connections = Vec::new();
    for c in 0..CONNECTIONS {
        let client = server.client().await;
        connections.push(tokio::spawn(async move {
            futures_util::stream::iter(0..REQUESTS_PER_CONNECTION)
                .map(|i| {
                    let mut client = client.clone();
                    async move {
                        let partition = (i % 4) as u32;
                        match i % 5 {
                            0 => client
                                .produce(ProduceRequest {
                                    topic: "flood".into(),
                                    partition: Some(partition),
                                    records: record(&format!("c{c}-{i}")),
                                    batch: Bytes::new(),
                                })
                                .await
                                .map(|_| ()),
                            1 => client
                                .describe_topic(DescribeTopicRequest {
                                    name: "flood".into(),
                                })
                                .await
                                .map(|_| ()),
                            2 => client
                                .fetch(FetchRequest {
                                    topic: "flood".into(),
                                    partition,
                                    start: at_offset(0),
                                    max_bytes: 1,
                                    ..FetchRequest::default()
                                })
                                .await
                                .map(|_| ()),
                            3 => client
                                .commit_offsets(CommitOffsetsRequest {
                                    group: format!("g{c}"),
                                    offsets: vec![PartitionOffset {
                                        topic: "flood".into(),
                                        partition,
                                        offset: 0,
                                    }],
                                    ..CommitOffsetsRequest::default()
                                })
                                .await
                                .map(|_| ()),
                            _ => {
                                // Refused: a bad topic name.
                                let refused = client
                                    .produce(ProduceRequest {
                                        topic: "no such/topic".into(),
                                        partition: Some(0),
                                        records: record("x"),
                                        batch: Bytes::new(),
                                    })
                                    .await
                                    .unwrap_err();
                                assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
                                Ok(())
                            }
                        }
                    }
                })
                .buffer_unordered(IN_FLIGHT_PER_CONNECTION)
                .for_each(|answered| async move {
                    answered.unwrap();
                })
                .await;
        }));
    }
    probe.served(20).await;
    for c in connections {
        c.await.unwrap();
    }
    probe.served(5).await;
    assert_memory_bounded(
        &server,
        &format!(
            "{} tiny requests on {CONNECTIONS} connections",
            CONNECTIONS * REQUESTS_PER_CONNECTION
        ),
    );
    let described = admin
        .describe_topic(DescribeTopicRequest {
            name: "flood".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let stored: u64 = described.partitions.iter().map(|p| p.next_offset).sum();
    assert_eq!(stored, (CONNECTIONS * REQUESTS_PER_CONNECTION / 5) as u64);

    drop(admin);
    baseline.wait_for_return(&server, "the flood").await;
    probe.stop().await;
}
