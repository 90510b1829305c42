//! Long-poll fetch: at the end of the log a fetch waits, and returns as soon as a record arrives,
//! not when its wait runs out; with nothing arriving it returns empty at the deadline.

mod common;

use common::{Server, create_topic, decode, produce_values, values};
use std::time::{Duration, Instant};
use strata::proto::FetchRequest;

fn poll(offset: u64, max_wait_ms: u32, min_bytes: u32) -> FetchRequest {
    FetchRequest {
        topic: "events".into(),
        partition: 0,
        start: common::at_offset(offset),
        max_wait_ms,
        min_bytes,
        ..FetchRequest::default()
    }
}

#[tokio::test]
async fn a_waiting_fetch_returns_when_a_record_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "events", 1).await;

    // Nothing arrives: the fetch waits its full time and returns empty.
    let started = Instant::now();
    let resp = client.fetch(poll(0, 300, 0)).await.unwrap().into_inner();
    assert!(resp.batches.is_empty());
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it did not wait"
    );

    // A record arrives while a fetch with a one-minute wait is parked: it returns with it.
    let mut waiter = server.client().await;
    let started = Instant::now();
    let parked = tokio::spawn(async move { waiter.fetch(poll(0, 60_000, 0)).await });
    produce_values(&mut client, "events", 0, &values("v", 0, 1)).await;
    let resp = parked.await.unwrap().unwrap().into_inner();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the fetch ran to its timeout instead of waking on the append"
    );
    let got = decode(&resp.batches, 0);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].value, b"v-0");
    assert_eq!(resp.high_watermark, 1);
    assert_eq!(resp.next_fetch_offset, 1);

    // min_bytes not reached: the fetch returns what there is at the deadline.
    let resp = client
        .fetch(poll(0, 200, 1024 * 1024))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decode(&resp.batches, 0).len(), 1);

    // min_bytes reached by several appends: returns once enough bytes are there.
    let mut waiter = server.client().await;
    let parked = tokio::spawn(async move { waiter.fetch(poll(1, 60_000, 600)).await });
    for i in 1..=20 {
        produce_values(&mut client, "events", 0, &[vec![b'x'; 100 + i]]).await;
    }
    let resp = parked.await.unwrap().unwrap().into_inner();
    assert!(resp.batches.len() >= 600);
    assert!(!decode(&resp.batches, 1).is_empty());
}
