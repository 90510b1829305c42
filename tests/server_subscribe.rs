//! Push subscriptions: records produced after subscribing arrive without polling; two subscribers
//! on one topic each get every record; a subscriber from offset 0 gets the backlog, then live
//! records, with no gap and no duplicate at the seam.

mod common;

use common::{Rec, Server, create_topic, decode, produce_values, values};
use std::{collections::BTreeMap, time::Duration};
use strata::proto::{self, StartPosition, SubscribeRequest, start_position::Position};
use tonic::Streaming;

const PARTITIONS: u32 = 2;
const BACKLOG: usize = 50;
const LIVE: usize = 50;

fn subscribe_request(start: Position) -> SubscribeRequest {
    SubscribeRequest {
        topic: "feed".into(),
        partitions: vec![],
        start: Some(StartPosition {
            position: Some(start),
        }),
        max_bytes: 512, // small messages, so the backlog arrives in many pieces
    }
}

/// Reads from the stream until every partition has `want` records; checks each message continues
/// exactly where the previous one of its partition ended.
async fn collect(
    stream: &mut Streaming<proto::SubscribeResponse>,
    first: u64,
    want: usize,
) -> BTreeMap<u32, Vec<Rec>> {
    let mut got: BTreeMap<u32, Vec<Rec>> = BTreeMap::new();
    let mut next: BTreeMap<u32, u64> = (0..PARTITIONS).map(|p| (p, first)).collect();
    let done = |got: &BTreeMap<u32, Vec<Rec>>| {
        (0..PARTITIONS).all(|p| got.get(&p).map_or(0, Vec::len) >= want)
    };
    let read = async {
        while !done(&got) {
            let msg = stream
                .message()
                .await
                .expect("stream error")
                .expect("stream ended early");
            let expected = next[&msg.partition];
            assert_eq!(
                msg.start_offset, expected,
                "a gap or a repeat between messages"
            );
            let records = decode(&msg.batches, msg.start_offset);
            assert_eq!(records.first().map(|r| r.offset), Some(expected));
            assert_eq!(records.last().map(|r| r.offset + 1), Some(msg.next_offset));
            next.insert(msg.partition, msg.next_offset);
            got.entry(msg.partition).or_default().extend(records);
        }
    };
    // A safety net against a hang, far above any real wait.
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("the subscriber stopped receiving");
    got
}

fn assert_exact(got: &BTreeMap<u32, Vec<Rec>>, first: usize, n: usize) {
    for p in 0..PARTITIONS {
        let recs = &got[&p];
        let offsets: Vec<u64> = recs.iter().map(|r| r.offset).collect();
        let want: Vec<u64> = (first as u64..(first + n) as u64).collect();
        assert_eq!(offsets, want, "partition {p}");
        let got_values: Vec<_> = recs.iter().map(|r| r.value.clone()).collect();
        assert_eq!(
            got_values,
            values(&format!("p{p}"), first, n),
            "partition {p}"
        );
    }
}

#[tokio::test]
async fn subscribers_get_backlog_then_live_records_each() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "feed", PARTITIONS).await;
    for p in 0..PARTITIONS {
        for chunk in 0..5 {
            let vals = values(&format!("p{p}"), chunk * 10, 10);
            produce_values(&mut client, "feed", p, &vals).await;
        }
    }

    // Two subscribers from offset 0 and one from "latest", each on its own connection. The
    // response headers arrive once the start positions are fixed, so "latest" is settled here.
    let mut a = server.client().await;
    let mut a = a
        .subscribe(subscribe_request(Position::Offset(0)))
        .await
        .unwrap()
        .into_inner();
    let mut b = server.client().await;
    let mut b = b
        .subscribe(subscribe_request(Position::Earliest(proto::Empty {})))
        .await
        .unwrap()
        .into_inner();
    let mut c = server.client().await;
    let mut c = c
        .subscribe(subscribe_request(Position::Latest(proto::Empty {})))
        .await
        .unwrap()
        .into_inner();

    // Live records, produced while the subscribers are following.
    for p in 0..PARTITIONS {
        for chunk in 0..5 {
            let vals = values(&format!("p{p}"), BACKLOG + chunk * 10, 10);
            produce_values(&mut client, "feed", p, &vals).await;
        }
    }

    let all = BACKLOG + LIVE;
    assert_exact(&collect(&mut a, 0, all).await, 0, all);
    assert_exact(&collect(&mut b, 0, all).await, 0, all);
    assert_exact(&collect(&mut c, BACKLOG as u64, LIVE).await, BACKLOG, LIVE);

    // Nothing more is pending: one more record is the next message, on the next offset.
    produce_values(&mut client, "feed", 1, &[b"tail".to_vec()]).await;
    let msg = tokio::time::timeout(Duration::from_secs(60), a.message())
        .await
        .expect("no push")
        .unwrap()
        .unwrap();
    assert_eq!((msg.partition, msg.start_offset), (1, all as u64));
    assert_eq!(decode(&msg.batches, msg.start_offset)[0].value, b"tail");
}
