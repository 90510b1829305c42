//! Flow control: a subscriber that stops reading does not hold producers back; it is held back
//! itself, and when it reads again it gets every record, in order, from where it stopped.

mod common;

use common::{Server, batch_of, create_topic_with, decode, subscribe_from};
use std::time::Duration;
use strata::proto::{FsyncPolicy, ProduceRequest, TopicConfig};

const BATCHES: usize = 200;
const RECORDS_PER_BATCH: usize = 10;
const VALUE_BYTES: usize = 10 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_neither_blocks_producers_nor_loses_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let config = TopicConfig {
        fsync_policy: Some(FsyncPolicy::Never.into()),
        ..TopicConfig::default()
    };
    create_topic_with(&mut client, "firehose", 1, config).await;

    // Subscribed from the start, then not read while ~20 MB are produced: far more than the
    // stream's window and the broker's per-subscription buffer.
    let mut sub = server.client().await;
    let mut stream = subscribe_from(&mut sub, "firehose", &[], 0, 256 * 1024).await;
    for b in 0..BATCHES {
        let values: Vec<Vec<u8>> = (0..RECORDS_PER_BATCH)
            .map(|r| {
                let mut v = vec![0u8; VALUE_BYTES];
                v[..8].copy_from_slice(&((b * RECORDS_PER_BATCH + r) as u64).to_le_bytes());
                v
            })
            .collect();
        let resp = tokio::time::timeout(
            Duration::from_secs(60),
            client.produce(ProduceRequest {
                topic: "firehose".into(),
                partition: Some(0),
                records: vec![],
                batch: batch_of(&values),
            }),
        )
        .await
        .expect("a stalled subscriber blocked the producer")
        .unwrap();
        assert_eq!(
            resp.into_inner().results[0].base_offset,
            (b * RECORDS_PER_BATCH) as u64
        );
    }

    // Now it reads: everything arrives, in order, with no gap or repeat.
    let total = (BATCHES * RECORDS_PER_BATCH) as u64;
    let mut next = 0u64;
    let read = async {
        while next < total {
            let msg = stream.message().await.unwrap().expect("stream ended early");
            assert_eq!(msg.start_offset, next);
            for r in decode(&msg.batches, next) {
                assert_eq!(r.offset, next);
                assert_eq!(r.value[..8], next.to_le_bytes());
                next += 1;
            }
            assert_eq!(msg.next_offset, next);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), read)
        .await
        .expect("the subscriber did not catch up");
}
