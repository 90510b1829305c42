//! Produce then fetch over real gRPC: keys, headers and timestamps come back as sent, keyed
//! records land on the partition the shared partitioner names (every time), keyless records spread
//! round-robin, and encoded batches take the fast path.

mod common;

use bytes::Bytes;
use common::{Server, batch_of, create_topic, decode, fetch_all, values};
use std::collections::BTreeMap;
use strata::broker::partitioner::partition_for_key;
use strata::proto::{self, FetchRequest, ProduceRequest, StartPosition, start_position::Position};

fn keyed(key: &str, value: &str, ts: i64) -> proto::Record {
    proto::Record {
        key: Some(Bytes::from(key.to_owned())),
        value: Bytes::from(value.to_owned()),
        headers: vec![proto::Header {
            name: "trace-id".into(),
            value: Bytes::from(format!("t-{value}")),
        }],
        timestamp_ms: Some(ts),
        offset: 0,
    }
}

#[tokio::test]
async fn records_round_trip_with_keys_headers_and_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "orders", 4).await;

    // Two rounds with the same keys: each key must land on the same partition both times.
    let mut sent: BTreeMap<u32, Vec<proto::Record>> = BTreeMap::new();
    for round in 0..2 {
        let records: Vec<_> = (0..10)
            .map(|i| {
                keyed(
                    &format!("user-{i}"),
                    &format!("r{round}-{i}"),
                    1_700_000_000_000 + i,
                )
            })
            .collect();
        let resp = client
            .produce(ProduceRequest {
                topic: "orders".into(),
                partition: None,
                records: records.clone(),
                batch: Bytes::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let acked: u32 = resp.results.iter().map(|r| r.record_count).sum();
        assert_eq!(acked, 10);
        for r in records {
            let p = partition_for_key(r.key.as_ref().unwrap(), 4);
            sent.entry(p).or_default().push(r);
        }
    }

    for partition in 0..4 {
        let got = fetch_all(&mut client, "orders", partition, 0).await;
        let want = sent.remove(&partition).unwrap_or_default();
        assert_eq!(got.len(), want.len(), "partition {partition}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g.offset, i as u64, "offsets are dense from 0");
            assert_eq!(g.key.as_deref(), w.key.as_deref());
            assert_eq!(g.value, w.value.to_vec());
            assert_eq!(g.timestamp_ms, w.timestamp_ms.unwrap());
            assert_eq!(
                g.headers,
                vec![(b"trace-id".to_vec(), w.headers[0].value.to_vec())]
            );
        }
    }

    // `decode` returns the same records as plain messages, from the requested offset on.
    let p = partition_for_key(b"user-3", 4);
    let resp = client
        .fetch(FetchRequest {
            topic: "orders".into(),
            partition: p,
            start: common::at_offset(1),
            decode: true,
            ..FetchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.start_offset, 1);
    assert_eq!(resp.records[0].offset, 1);
    assert_eq!(resp.records.len() as u64, resp.high_watermark - 1);
    let raw = decode(&resp.batches, 1);
    assert_eq!(raw.len(), resp.records.len());
    assert_eq!(raw[0].value, resp.records[0].value.to_vec());
}

#[tokio::test]
async fn keyless_records_spread_and_batches_take_the_fast_path() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "logs", 3).await;

    let before = strata::broker::now_ms();
    let keyless: Vec<_> = values("line", 0, 9)
        .into_iter()
        .map(|v| proto::Record {
            value: Bytes::from(v),
            ..proto::Record::default()
        })
        .collect();
    let resp = client
        .produce(ProduceRequest {
            topic: "logs".into(),
            partition: None,
            records: keyless,
            batch: Bytes::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut per_partition = [0u32; 3];
    for r in &resp.results {
        per_partition[r.partition as usize] += r.record_count;
    }
    assert_eq!(per_partition, [3, 3, 3], "round-robin over 3 partitions");
    let got = fetch_all(&mut client, "logs", 0, 0).await;
    assert!(
        got[0].timestamp_ms >= before,
        "unset timestamps take the broker's clock"
    );

    // Encoded batches (two back to back) to an explicit partition.
    create_topic(&mut client, "fast", 1).await;
    let mut both = batch_of(&values("fast", 0, 5)).to_vec();
    both.extend_from_slice(&batch_of(&values("fast", 5, 5)));
    let resp = client
        .produce(ProduceRequest {
            topic: "fast".into(),
            partition: Some(0),
            records: vec![],
            batch: Bytes::from(both),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.results.len(), 2);
    assert_eq!(resp.results[0].base_offset, 0);
    assert_eq!(resp.results[1].base_offset, 5);
    let got = fetch_all(&mut client, "fast", 0, 0).await;
    let got_values: Vec<_> = got.iter().map(|r| r.value.clone()).collect();
    assert_eq!(got_values, values("fast", 0, 10));

    // Start positions: a timestamp and latest.
    let resp = client
        .fetch(FetchRequest {
            topic: "fast".into(),
            partition: 0,
            start: Some(StartPosition {
                position: Some(Position::TimestampMs(1_003)),
            }),
            ..FetchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    // Records of the first batch carry timestamps 1000..1004: 1003 is its fourth.
    assert_eq!(resp.start_offset, 3);
    let resp = client
        .fetch(FetchRequest {
            topic: "fast".into(),
            partition: 0,
            start: Some(StartPosition {
                position: Some(Position::Latest(proto::Empty {})),
            }),
            ..FetchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.start_offset, 10);
    assert!(resp.batches.is_empty());
    assert_eq!(resp.next_fetch_offset, 10);
}
