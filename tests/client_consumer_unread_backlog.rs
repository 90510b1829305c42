//! A consumer's calls must not wait behind records the broker pushed but the consumer has not
//! read yet. Subscriptions and calls share one HTTP/2 connection and its flow-control window: a
//! large backlog fills the window, and a commit (or a seek's fetch) whose response sits behind it
//! would wait forever if the consumer stopped reading its subscriptions while it waited. Found by
//! the chaos test, where a consumer with a backlog hung in `commit`.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::Server;
use std::time::Duration;
use strata::client::{
    self, Admin, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord, Seek,
    TopicSettings,
};

/// A hang guard: the calls below answer in milliseconds unless they deadlock.
const DEADLINE: Duration = Duration::from_secs(60);
/// Far more than any HTTP/2 window the client grants.
const BACKLOG_BYTES: usize = 48 * 1024 * 1024;

async fn backlog(url: &str) -> client::Channel {
    let channel = client::connect(url).await.unwrap();
    Admin::new(channel.clone())
        .create_topic("t", 2, &TopicSettings::default())
        .await
        .unwrap();
    let producer = Producer::new(channel.clone(), "t", ProducerConfig::default())
        .await
        .unwrap();
    let value = vec![b'x'; 64 * 1024];
    let mut last = None;
    for i in 0..BACKLOG_BYTES / value.len() {
        let partition = u32::from(i % 8 == 0);
        let record = ProducerRecord::new(value.clone()).partition(partition);
        last = Some(producer.send(record).await.unwrap());
    }
    producer.flush().await;
    last.unwrap().await.unwrap();
    channel
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_is_answered_while_pushed_records_wait_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = backlog(&server.url()).await;

    let config = ConsumerConfig::group("g").auto_commit(None);
    let mut consumer = Consumer::new(channel, "t", config).await.unwrap();
    for round in 0..20 {
        let record = consumer.next().await.unwrap().unwrap();
        tokio::time::timeout(DEADLINE, consumer.commit())
            .await
            .unwrap_or_else(|_| panic!("commit {round} (after offset {}) hung", record.offset))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seek_by_time_is_answered_while_pushed_records_wait_unread() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let channel = backlog(&server.url()).await;

    let mut consumer = Consumer::new(channel, "t", ConsumerConfig::default())
        .await
        .unwrap();
    for round in 0..20 {
        consumer.next().await.unwrap().unwrap();
        // A seek by time resolves the offset with a fetch on the shared connection.
        tokio::time::timeout(DEADLINE, consumer.seek(1, Seek::Timestamp(0)))
            .await
            .unwrap_or_else(|_| panic!("seek {round} hung"))
            .unwrap();
    }
}
