//! A member joining a group afresh right after a broker restart is not handed the partitions
//! the group's old member still reads: the broker found the group's commits on disk, so until
//! the old members have rejoined (or a session timeout passed) it hands out nothing they may
//! claim. Found by tests/chaos_idempotent_producer.rs: before, the fresh member got every
//! partition at once, read from the committed offsets and committed past records the old
//! member then handed out again (two owners of one partition).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::Server;
use std::{
    collections::{BTreeMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use strata::client::{self, Consumer, ConsumerConfig};

const RECORDS: u64 = 1000;

/// (consumer, partition, offset, is_commit): what the group did, in order.
type Events = Arc<Mutex<Vec<(usize, u32, u64, bool)>>>;

/// Reads and commits every 50 records until `until`, logging each record and acknowledged
/// commit.
async fn follow(mut consumer: Consumer, me: usize, events: Events, until: Instant) {
    let mut since_commit = 0;
    while Instant::now() < until {
        match tokio::time::timeout(Duration::from_millis(200), consumer.next()).await {
            Ok(Ok(Some(r))) => {
                events
                    .lock()
                    .unwrap()
                    .push((me, r.partition, r.offset, false));
                since_commit += 1;
            }
            Ok(Ok(None)) | Err(_) => {}
            Ok(Err(e)) => panic!("consumer {me}: {e}"),
        }
        if since_commit >= 50 && consumer.commit().await.is_ok() {
            let mut log = events.lock().unwrap();
            for (p, o) in consumer.positions() {
                log.push((me, *p, *o, true));
            }
            since_commit = 0;
        }
    }
    let _ = consumer.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_member_after_a_restart_does_not_take_what_an_old_one_reads() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let url = format!("http://{listen}");
    let flags = [
        "--listen",
        listen.as_str(),
        "--group-heartbeat-interval",
        "250ms",
        "--group-session-timeout",
        "5s",
    ];
    let server = Server::start_with(dir.path(), &flags);
    let mut c = server.client().await;
    common::create_topic(&mut c, "t", 2).await;
    for p in 0..2 {
        common::produce_values(&mut c, "t", p, &common::values("v", 0, RECORDS as usize)).await;
    }
    drop(c);
    let config = || ConsumerConfig::group("g").auto_commit(None);
    let events: Events = Arc::default();
    let mut a = Consumer::new(client::connect(&url).await.unwrap(), "t", config())
        .await
        .unwrap();
    for _ in 0..300 {
        let r = a.next().await.unwrap().unwrap();
        events
            .lock()
            .unwrap()
            .push((0, r.partition, r.offset, false));
    }
    a.commit().await.unwrap();
    for (p, o) in a.positions() {
        events.lock().unwrap().push((0, *p, *o, true));
    }
    // A has read further, and holds received records it has not handed out yet.
    for _ in 0..100 {
        let r = a.next().await.unwrap().unwrap();
        events
            .lock()
            .unwrap()
            .push((0, r.partition, r.offset, false));
    }

    server.kill();
    let _server = Server::start_with(dir.path(), &flags);
    // B joins first after the restart; A rejoins at its next heartbeat.
    let b = Consumer::new(client::connect(&url).await.unwrap(), "t", config())
        .await
        .unwrap();
    let until = Instant::now() + Duration::from_secs(8);
    let a = tokio::spawn(follow(a, 0, events.clone(), until));
    let b = tokio::spawn(follow(b, 1, events.clone(), until));
    a.await.unwrap();
    b.await.unwrap();

    // A record handed out again must not be below an acknowledged commit past it.
    let log = events.lock().unwrap();
    let mut seen = HashSet::new();
    let mut committed: BTreeMap<u32, (u64, usize)> = BTreeMap::new();
    let mut bad = Vec::new();
    for &(who, p, o, commit) in log.iter() {
        if commit {
            let c = committed.entry(p).or_insert((0, who));
            if o > c.0 {
                *c = (o, who);
            }
        } else if !seen.insert((p, o))
            && let Some((c, by)) = committed.get(&p).filter(|c| c.0 > o)
        {
            bad.push(format!(
                "consumer {who} handed out {p}@{o} again after consumer {by} committed {c}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} redeliveries past a commit, first: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    for p in 0..2 {
        let missing = (0..RECORDS).filter(|o| !seen.contains(&(p, *o))).count();
        assert_eq!(
            missing, 0,
            "partition {p}: {missing} records never handed out"
        );
    }
}
