//! The client's `Producer` against a real broker: batching, ordering per partition and key,
//! routing as the broker does, flush under a long linger, back-pressure, and per-record errors.

mod common;

use common::{Server, fetch_all};
use std::{collections::BTreeMap, time::Duration};
use strata::client::{
    self, Admin, ClientError, Producer, ProducerConfig, ProducerRecord, TopicSettings,
};
use strata::record::partition_for_key;
use tonic::Code;

#[tokio::test]
async fn concurrent_senders_get_contiguous_offsets_and_keep_each_keys_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = client::connect(&server.url()).await.expect("connect");
    Admin::new(channel.clone())
        .create_topic("t", 4, &TopicSettings::default())
        .await
        .expect("create");
    let config = ProducerConfig {
        linger: Duration::from_millis(1),
        max_batch_bytes: 4096,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(channel, "t", config).await.expect("producer");

    let mut tasks = Vec::new();
    for task in 0..4 {
        let producer = producer.clone();
        tasks.push(tokio::spawn(async move {
            let key = format!("key-{task}");
            let mut deliveries = Vec::new();
            for i in 0..500 {
                let record = ProducerRecord::new(format!("{key}/{i}")).key(key.clone());
                deliveries.push(producer.send(record).await.expect("send"));
            }
            let mut offsets = Vec::new();
            for d in deliveries {
                let at = d.await.expect("acknowledged");
                assert_eq!(at.partition, partition_for_key(key.as_bytes(), 4));
                offsets.push(at.offset);
            }
            offsets
        }));
    }
    for task in tasks {
        let offsets = task.await.expect("task");
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "a key's records stay in order"
        );
    }

    let mut client = server.client().await;
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut total = 0;
    for p in 0..4 {
        let records = fetch_all(&mut client, "t", p, 0).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets are contiguous");
            let value = String::from_utf8(r.value.clone()).expect("UTF-8");
            let (key, n) = value.split_once('/').expect("key/n");
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            per_key
                .entry(key.to_string())
                .or_default()
                .push(n.parse().expect("a number"));
        }
        total += records.len();
    }
    assert_eq!(total, 2000);
    for (key, ns) in per_key {
        assert_eq!(ns, (0..500).collect::<Vec<_>>(), "{key}");
    }
}

#[tokio::test]
async fn flush_sends_what_a_long_linger_holds_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = client::connect(&server.url()).await.expect("connect");
    Admin::new(channel.clone())
        .create_topic("t", 1, &TopicSettings::default())
        .await
        .expect("create");
    let config = ProducerConfig {
        linger: Duration::from_secs(3600),
        max_batch_bytes: 1024,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(channel, "t", config).await.expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..100 {
        let record = ProducerRecord::new(format!("record-{i:03}")).header("n", i.to_string());
        deliveries.push(producer.send(record).await.expect("send"));
    }
    producer.flush().await;
    for (i, d) in deliveries.into_iter().enumerate() {
        assert_eq!(d.await.expect("acknowledged").offset, i as u64);
    }
    let mut client = server.client().await;
    let records = fetch_all(&mut client, "t", 0, 0).await;
    assert_eq!(records.len(), 100);
    assert_eq!(records[42].value, b"record-042");
    assert_eq!(records[42].headers, [(b"n".to_vec(), b"42".to_vec())]);

    producer.close().await;
    assert!(matches!(
        producer.send(ProducerRecord::new("late")).await,
        Err(ClientError::Closed)
    ));
}

#[tokio::test]
async fn a_small_buffer_holds_senders_back_without_losing_anything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = client::connect(&server.url()).await.expect("connect");
    Admin::new(channel.clone())
        .create_topic("t", 2, &TopicSettings::default())
        .await
        .expect("create");
    let config = ProducerConfig {
        linger: Duration::ZERO,
        max_batch_bytes: 2048,
        max_buffered_bytes: 4096,
        ..ProducerConfig::default()
    };
    let producer = Producer::new(channel, "t", config).await.expect("producer");
    let mut deliveries = Vec::new();
    for i in 0..2000 {
        let record = ProducerRecord::new(vec![b'x'; 100]).partition(i % 2);
        deliveries.push(producer.send(record).await.expect("send"));
    }
    let mut counts = [0u64; 2];
    for d in deliveries {
        let at = d.await.expect("acknowledged");
        assert_eq!(at.offset, counts[at.partition as usize]);
        counts[at.partition as usize] += 1;
    }
    assert_eq!(counts, [1000, 1000]);
}

#[tokio::test]
async fn errors_name_the_problem_and_fail_only_the_records_concerned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = client::connect(&server.url()).await.expect("connect");
    let small = TopicSettings {
        max_record_bytes: Some(200),
        ..TopicSettings::default()
    };
    Admin::new(channel.clone())
        .create_topic("t", 2, &small)
        .await
        .expect("create");

    let missing = Producer::new(channel.clone(), "nope", ProducerConfig::default()).await;
    assert_eq!(
        missing.expect_err("no such topic").code(),
        Some(Code::NotFound)
    );

    let producer = Producer::new(channel, "t", ProducerConfig::default())
        .await
        .expect("producer");
    let too_big = producer
        .send(ProducerRecord::new(vec![0u8; 2 << 20]))
        .await
        .expect_err("larger than a batch");
    assert!(
        matches!(too_big, ClientError::RecordTooLarge { .. }),
        "{too_big}"
    );
    let no_partition = producer
        .send(ProducerRecord::new("x").partition(7))
        .await
        .expect_err("no partition 7");
    assert!(
        no_partition
            .to_string()
            .contains("partition 7 does not exist")
    );

    // Over the topic's record limit: the broker refuses that batch; the other partition's is fine.
    let refused = producer
        .send(ProducerRecord::new(vec![0u8; 500]).partition(0))
        .await
        .expect("queued");
    let fine = producer
        .send(ProducerRecord::new("small").partition(1))
        .await
        .expect("queued");
    let err = refused.await.expect_err("refused by the broker");
    assert_eq!(err.code(), Some(Code::ResourceExhausted), "{err}");
    assert_eq!(fine.await.expect("acknowledged").offset, 0);
}
