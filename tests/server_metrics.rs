//! `--metrics-listen`: the Prometheus text exposition, read with a real Prometheus text parser
//! (`prometheus-parse`), moves as records are produced, fetched and committed: partition
//! offsets and bytes, group lag and committed offsets, request counters by rpc and code, bytes
//! appended and served, open subscriptions, fsync times and the process collector.

// Prometheus samples are f64; every value compared here is a small integer, exact in f64.
#![allow(clippy::float_cmp)]

mod common;

use common::{
    Server, create_topic, free_port,
    metrics::{scrape, value},
    produce_values, subscribe_from, values,
};
use prometheus_parse::Scrape;
use strata::proto::{CommitOffsetsRequest, FetchRequest, PartitionOffset};
use tonic::Code;

fn requests(scrape: &Scrape, rpc: &str, code: &str) -> f64 {
    value(
        scrape,
        "strata_rpc_requests_total",
        &[("rpc", rpc), ("code", code)],
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn metrics_move_as_records_are_produced_consumed_and_committed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let server = Server::start_with(dir.path(), &["--metrics-listen", &listen]);
    let mut client = server.client().await;
    create_topic(&mut client, "orders", 2).await;

    let before = scrape(port);
    assert_eq!(
        value(
            &before,
            "strata_partition_next_offset",
            &[("topic", "orders"), ("partition", "0")]
        ),
        Some(0.0)
    );
    assert_eq!(
        value(&before, "strata_group_lag", &[("group", "billing")]),
        None
    );
    assert!(value(&before, "process_resident_memory_bytes", &[]).is_some_and(|v| v > 0.0));
    assert!(value(&before, "process_open_fds", &[]).is_some_and(|v| v > 0.0));

    produce_values(&mut client, "orders", 0, &values("o", 0, 10)).await;
    produce_values(&mut client, "orders", 1, &values("p", 0, 3)).await;
    client
        .commit_offsets(CommitOffsetsRequest {
            group: "billing".into(),
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 4,
            }],
            ..Default::default()
        })
        .await
        .expect("commit");
    let fetched = client
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: 0,
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let fetched_bytes = fetched.batches.len() as f64;
    let missing = client
        .fetch(FetchRequest {
            topic: "nope".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown topic");
    assert_eq!(missing.code(), Code::NotFound);
    let mut stream = subscribe_from(&mut client, "orders", &[0], 0, 0).await;
    let pushed = stream.message().await.expect("stream").expect("a message");
    assert!(!pushed.batches.is_empty());

    let after = scrape(port);
    let p0 = [("topic", "orders"), ("partition", "0")];
    let p1 = [("topic", "orders"), ("partition", "1")];
    assert_eq!(
        value(&after, "strata_partition_next_offset", &p0),
        Some(10.0)
    );
    assert_eq!(
        value(&after, "strata_partition_next_offset", &p1),
        Some(3.0)
    );
    assert_eq!(
        value(&after, "strata_partition_earliest_offset", &p0),
        Some(0.0)
    );
    assert!(value(&after, "strata_partition_bytes", &p0).is_some_and(|b| b > 0.0));
    assert_eq!(value(&after, "strata_partition_segments", &p0), Some(1.0));
    let g0 = [
        ("group", "billing"),
        ("topic", "orders"),
        ("partition", "0"),
    ];
    assert_eq!(
        value(&after, "strata_group_committed_offset", &g0),
        Some(4.0)
    );
    assert_eq!(value(&after, "strata_group_lag", &g0), Some(6.0));
    assert_eq!(
        requests(&after, "Produce", "OK") - requests(&before, "Produce", "OK"),
        2.0
    );
    assert_eq!(requests(&after, "CommitOffsets", "OK"), 1.0);
    assert_eq!(requests(&after, "Fetch", "OK"), 1.0);
    assert_eq!(requests(&after, "Fetch", "NOT_FOUND"), 1.0);
    assert_eq!(
        value(
            &after,
            "strata_rpc_duration_seconds",
            &[("rpc", "Fetch"), ("code", "OK")]
        ),
        Some(1.0),
        "one fetch in the latency histogram"
    );
    assert_eq!(
        value(&after, "strata_appended_records_total", &[]),
        Some(13.0)
    );
    assert!(value(&after, "strata_appended_bytes_total", &[]).is_some_and(|b| b > 0.0));
    assert!(
        value(&after, "strata_served_bytes_total", &[("rpc", "Fetch")])
            .is_some_and(|b| b >= fetched_bytes)
    );
    assert!(
        value(&after, "strata_served_bytes_total", &[("rpc", "Subscribe")])
            .is_some_and(|b| b > 0.0)
    );
    assert_eq!(value(&after, "strata_subscriptions_open", &[]), Some(1.0));
    assert!(value(&after, "strata_connections_open", &[]).is_some_and(|c| c >= 1.0));
    // A durable broker fsyncs every produce: the histogram counts them.
    assert!(
        value(&after, "strata_fsync_duration_seconds", &[]).unwrap_or(0.0)
            > value(&before, "strata_fsync_duration_seconds", &[]).unwrap_or(0.0)
    );

    // The group reads on: its lag goes down; the subscription ends: it is no longer open.
    client
        .commit_offsets(CommitOffsetsRequest {
            group: "billing".into(),
            offsets: vec![PartitionOffset {
                topic: "orders".into(),
                partition: 0,
                offset: 10,
            }],
            ..Default::default()
        })
        .await
        .expect("commit");
    drop(stream);
    let mut last = scrape(port);
    for _ in 0..50 {
        if value(&last, "strata_subscriptions_open", &[]) == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        last = scrape(port);
    }
    assert_eq!(value(&last, "strata_group_lag", &g0), Some(0.0));
    assert_eq!(value(&last, "strata_subscriptions_open", &[]), Some(0.0));
    assert_eq!(requests(&last, "Subscribe", "CANCELLED"), 1.0);
    server.terminate().await;
}
