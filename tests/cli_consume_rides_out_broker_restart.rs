//! `strata consume -g G -f` keeps running across a broker restart (SIGKILL, then the broker
//! comes back on the same address): the consumer reopens its subscriptions at its positions and
//! rejoins its group, and prints every record exactly once, those produced before, during and
//! after the outage.

mod common;

use common::{Server, create_topic, produce_values, values};
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_following_consumer_prints_every_record_once_across_a_broker_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let listen = format!("127.0.0.1:{}", common::free_port());
    let flags = [
        "--listen",
        listen.as_str(),
        "--group-heartbeat-interval",
        "100ms",
        "--group-session-timeout",
        "3s",
    ];
    let server = Server::start_with(dir.path(), &flags);
    let mut client = server.client().await;
    create_topic(&mut client, "t", 2).await;
    for p in 0..2 {
        produce_values(&mut client, "t", p, &values("before", 0, 100)).await;
    }

    let mut consumer = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args([
            "consume", "t", "-g", "g", "-f", "--output", "json", "--broker",
        ])
        .arg(server.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the consumer");
    let seen: Arc<Mutex<BTreeMap<(u64, u64), usize>>> = Arc::default();
    let stdout = consumer.stdout.take().expect("piped");
    let reader = {
        let seen = seen.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    let key = (
                        v["partition"].as_u64().unwrap_or(u64::MAX),
                        v["offset"].as_u64().unwrap_or(u64::MAX),
                    );
                    *seen
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .entry(key)
                        .or_default() += 1;
                }
            }
        })
    };
    let count = |seen: &Arc<Mutex<BTreeMap<(u64, u64), usize>>>| {
        seen.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    };
    let wait_for = |n: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while count(&seen) < n {
            assert!(Instant::now() < deadline, "{} of {n} printed", count(&seen));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(200);

    // The broker dies and comes back on the same address, twice.
    let mut server = server;
    for round in 0..2u64 {
        drop(client);
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = Server::start_with(dir.path(), &flags);
        client = server.client().await;
        for p in 0..2 {
            produce_values(&mut client, "t", p, &values("after", 0, 50)).await;
        }
        wait_for(200 + 100 * (round as usize + 1));
    }
    consumer.kill().expect("stop the consumer");
    consumer.wait().expect("reap it");
    reader.join().expect("reader");

    let seen = seen
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    for p in 0..2 {
        let offsets: Vec<u64> = seen
            .keys()
            .filter(|(q, _)| *q == p)
            .map(|(_, o)| *o)
            .collect();
        assert_eq!(offsets, (0..200).collect::<Vec<_>>(), "partition {p}");
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "printed twice: {twice:?}");
}
