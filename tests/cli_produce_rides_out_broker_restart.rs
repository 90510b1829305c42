//! `strata produce` keeps going across broker restarts: lines stream into it while the broker is
//! SIGKILLed twice and comes back on the same address; the producer retries what was in flight
//! and what it read meanwhile, and when its input ends it exits 0 with every line stored exactly
//! once (a batch whose answer the kill swallowed is recognised by its producer id and sequence,
//! not appended again), each key's lines in the order they were read.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{Server, create_topic};
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use strata::proto::ListOffsetsRequest;

const LINES: usize = 6_000;
const KEYS: usize = 7;

/// Records stored in `t`, by the broker's own count.
async fn stored_count(client: &mut common::Client) -> u64 {
    client
        .list_offsets(ListOffsetsRequest {
            topic: "t".into(),
            partitions: Vec::new(),
            position: None,
        })
        .await
        .map_or(0, |r| {
            r.into_inner()
                .partitions
                .iter()
                .map(|p| p.next_offset)
                .sum()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_line_is_stored_once_across_two_broker_kills() {
    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", common::free_port());
    let flags = ["--listen", listen.as_str()];
    let mut server = Server::start_with(dir.path(), &flags);
    let mut client = server.client().await;
    create_topic(&mut client, "t", 3).await;

    let mut produce = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["produce", "t", "--key-separator", ":", "--broker"])
        .arg(server.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = produce.stdin.take().unwrap();
    // Lines go in steadily, a few at a time, until the input ends.
    let writer = std::thread::spawn(move || {
        for chunk in (0..LINES).collect::<Vec<_>>().chunks(20) {
            let mut text = String::new();
            for i in chunk {
                let _ = writeln!(text, "k{}:line-{i:05}", i % KEYS);
            }
            if stdin.write_all(text.as_bytes()).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    });

    // Kill the broker once a third, then two thirds, of the lines are stored.
    for round in 1..=2u64 {
        let target = LINES as u64 * round / 3;
        let deadline = Instant::now() + Duration::from_secs(60);
        while stored_count(&mut client).await < target {
            assert!(
                Instant::now() < deadline,
                "round {round}: the producer made no progress"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(client);
        server.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        server = Server::start_with(dir.path(), &flags);
        client = server.client().await;
    }
    writer.join().unwrap();
    let out = tokio::task::spawn_blocking(move || produce.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "strata produce failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("produced {LINES} records")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for p in 0..3 {
        for (_, value) in common::stored(&mut client, "t", p).await {
            let line = String::from_utf8(value).unwrap();
            *count.entry(line.clone()).or_default() += 1;
            let n: usize = line.trim_start_matches("line-").parse().unwrap();
            per_key.entry(format!("k{}", n % KEYS)).or_default().push(n);
        }
    }
    let twice: Vec<_> = count.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(count.len(), LINES, "every line is stored");
    for (key, lines) in per_key {
        assert!(
            lines.windows(2).all(|w| w[0] < w[1]),
            "{key}'s lines are out of order"
        );
    }
}
