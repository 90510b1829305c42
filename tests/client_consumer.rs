//! The client's `Consumer` against a real broker: backlog then live records, positions, seeks,
//! commits and resuming from them, auto-commit, pause, and a deleted topic.

mod common;

use common::{Server, produce_values, values};
use std::time::Duration;
use strata::client::{
    self, Admin, Channel, Consumer, ConsumerConfig, ConsumerRecord, Seek, TopicSettings,
};
use tonic::Code;

async fn setup(server: &Server, partitions: u32) -> Channel {
    let channel = client::connect(&server.url()).await.expect("connect");
    Admin::new(channel.clone())
        .create_topic("t", partitions, &TopicSettings::default())
        .await
        .expect("create");
    channel
}

async fn take(consumer: &mut Consumer, n: usize) -> Vec<ConsumerRecord> {
    let mut out = Vec::new();
    while out.len() < n {
        out.push(consumer.next().await.expect("next").expect("a record"));
    }
    out
}

fn texts(records: &[ConsumerRecord]) -> Vec<Vec<u8>> {
    records.iter().map(|r| r.value.to_vec()).collect()
}

#[tokio::test]
async fn it_reads_the_backlog_then_records_as_they_are_appended() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = setup(&server, 2).await;
    let mut client = server.client().await;
    produce_values(&mut client, "t", 0, &values("old", 0, 3)).await;

    let mut consumer = Consumer::new(channel, "t", ConsumerConfig::default())
        .await
        .expect("consumer");
    assert_eq!(consumer.position(0), Some(0));
    let backlog = take(&mut consumer, 3).await;
    assert_eq!(texts(&backlog), values("old", 0, 3));
    assert_eq!(consumer.position(0), Some(3));

    produce_values(&mut client, "t", 1, &values("new", 0, 2)).await;
    let live = consumer.poll().await.expect("poll");
    let mut live = live;
    if live.len() < 2 {
        live.extend(take(&mut consumer, 2 - live.len()).await);
    }
    assert_eq!(texts(&live), values("new", 0, 2));
    assert!(live.iter().all(|r| r.partition == 1));
    assert_eq!(consumer.position(1), Some(2));
}

#[tokio::test]
async fn seek_moves_to_an_offset_the_ends_or_a_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = setup(&server, 1).await;
    let mut client = server.client().await;
    produce_values(&mut client, "t", 0, &values("v", 0, 10)).await;

    let mut consumer = Consumer::new(channel, "t", ConsumerConfig::default().start(Seek::Latest))
        .await
        .expect("consumer");
    assert_eq!(consumer.position(0), Some(10));

    assert_eq!(consumer.seek(0, Seek::Offset(7)).await.expect("seek"), 7);
    assert_eq!(texts(&take(&mut consumer, 3).await), values("v", 7, 3));

    assert_eq!(consumer.seek(0, Seek::Earliest).await.expect("seek"), 0);
    let first = take(&mut consumer, 2).await;
    assert_eq!(texts(&first), values("v", 0, 2));

    // Every record has a timestamp at or before now; a time in the past finds the first.
    assert_eq!(consumer.seek(0, Seek::Timestamp(0)).await.expect("seek"), 0);
    assert_eq!(
        consumer
            .seek(0, Seek::Timestamp(i64::MAX))
            .await
            .expect("seek"),
        10
    );
    assert_eq!(consumer.seek(0, Seek::Latest).await.expect("seek"), 10);
    produce_values(&mut client, "t", 0, &values("v", 10, 1)).await;
    assert_eq!(texts(&take(&mut consumer, 1).await), values("v", 10, 1));

    let beyond = consumer.seek(0, Seek::Offset(99)).await;
    assert_eq!(
        beyond.expect_err("out of range").code(),
        Some(Code::OutOfRange)
    );
}

#[tokio::test]
async fn a_group_resumes_from_its_commit_and_auto_commits_while_idle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = setup(&server, 1).await;
    let mut client = server.client().await;
    produce_values(&mut client, "t", 0, &values("v", 0, 10)).await;

    let manual = ConsumerConfig::group("g").auto_commit(None);
    let mut consumer = Consumer::new(channel.clone(), "t", manual.clone())
        .await
        .expect("consumer");
    take(&mut consumer, 4).await;
    consumer.commit().await.expect("commit");
    // A group consumer is a member: closing it leaves the group at once, so the next one owns
    // the partition from its start (a dropped one leaves too, a moment later).
    consumer.close().await.expect("close");

    let mut consumer = Consumer::new(channel.clone(), "t", manual)
        .await
        .expect("consumer");
    assert_eq!(consumer.position(0), Some(4));
    assert_eq!(texts(&take(&mut consumer, 2).await), values("v", 4, 2));
    drop(consumer); // not committed: the group stays at 4

    // Auto-commit: once idle (waiting for records), the consumer commits what it handed out.
    let auto = ConsumerConfig::group("g").auto_commit(Some(Duration::from_millis(20)));
    let mut consumer = Consumer::new(channel.clone(), "t", auto)
        .await
        .expect("consumer");
    assert_eq!(texts(&take(&mut consumer, 6).await), values("v", 4, 6));
    let waiting = tokio::spawn(async move { consumer.next().await.map(|r| r.map(|r| r.offset)) });
    let admin = Admin::new(channel);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let lag = admin.describe_group("g").await.expect("describe");
        if lag.partitions[0].committed_offset == Some(10) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never auto-committed: {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    produce_values(&mut client, "t", 0, &values("v", 10, 1)).await;
    assert_eq!(waiting.await.expect("task").expect("next"), Some(10));
}

#[tokio::test]
async fn paused_partitions_are_skipped_until_resumed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = setup(&server, 2).await;
    let mut client = server.client().await;
    produce_values(&mut client, "t", 0, &values("zero", 0, 2)).await;
    produce_values(&mut client, "t", 1, &values("one", 0, 2)).await;

    let mut consumer = Consumer::new(channel, "t", ConsumerConfig::default())
        .await
        .expect("consumer");
    consumer.pause(0);
    assert_eq!(texts(&take(&mut consumer, 2).await), values("one", 0, 2));
    assert_eq!(consumer.position(0), Some(0));
    consumer.resume(0).await.expect("resume");
    assert_eq!(texts(&take(&mut consumer, 2).await), values("zero", 0, 2));
    consumer.pause(0);
    consumer.pause(1);
    assert!(
        consumer.next().await.expect("next").is_none(),
        "nothing is followed"
    );
}

#[tokio::test]
async fn deleting_the_topic_ends_the_consumer_with_not_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let channel = setup(&server, 1).await;
    let mut consumer = Consumer::new(channel.clone(), "t", ConsumerConfig::default())
        .await
        .expect("consumer");
    let waiting = tokio::spawn(async move { consumer.next().await });
    Admin::new(channel).delete_topic("t").await.expect("delete");
    let err = waiting.await.expect("task").expect_err("topic deleted");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
}
