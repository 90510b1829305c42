//! What replication costs a produce, in one run: 1 KiB records in batches of 100 (100 KiB),
//! from 4 concurrent producers, under `fsync always`, into
//!
//! - `log`: the partition log alone (`Log::append_batches`, group commit): today's single broker;
//! - `raft-1`: a one-node Raft group over the same log (`ReplicatedPartition::produce`): what a
//!   single broker would pay if every produce went through openraft;
//! - `raft-3`: three replicas on 127.0.0.1 ports (the brokers' Raft service), produced to the
//!   leader: acknowledged once a majority has fsynced.
//!
//! Run with `cargo bench --bench replication` (`STRATA_BENCH_MB`, default 128, per case); figures
//! go to docs/PERFORMANCE.md beside `../shared/tools/disk-limit` from the same session.
#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/common/mod_raft.rs"]
mod common;

use common::{
    raft::{Node, start_group, try_produce},
    storage::small_config,
};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{FsyncPolicy, Log, LogConfig},
};

const RECORD_BYTES: usize = 1024;
const BATCH_RECORDS: usize = 100;
const PRODUCERS: usize = 4;

fn values(seed: u64) -> Vec<Vec<u8>> {
    let mut state = seed | 1;
    (0..BATCH_RECORDS)
        .map(|_| {
            (0..RECORD_BYTES)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect()
}

fn config() -> LogConfig {
    LogConfig {
        segment_max_bytes: 64 << 20,
        index_interval_bytes: 4096,
        cached_tail_bytes: None,
        fsync: FsyncPolicy::Always,
        ..small_config()
    }
}

struct Figures {
    mb_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn figures(bytes: usize, elapsed: Duration, mut latencies: Vec<Duration>) -> Figures {
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    Figures {
        mb_per_s: bytes as f64 / elapsed.as_secs_f64() / 1e6,
        p50_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn bench_log(batches: usize) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let log = Arc::new(Log::open(dir.path(), config()).unwrap());
    let start = Instant::now();
    let threads: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut b = BatchBuilder::default();
                for v in values(p as u64 + 1) {
                    b.push_parts(1, None, &v, []);
                }
                let bytes = b.finish(0);
                let mut lat = Vec::new();
                for _ in 0..batches / PRODUCERS {
                    let t = Instant::now();
                    log.append_batches(&validate_batch(&bytes, 1 << 20).unwrap())
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let lat: Vec<Duration> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    figures(
        lat.len() * BATCH_RECORDS * RECORD_BYTES,
        start.elapsed(),
        lat,
    )
}

async fn bench_raft(replicas: u64, batches: usize) -> Figures {
    let root = tempfile::tempdir().unwrap();
    let mut nodes = Vec::new();
    for id in 1..=replicas {
        nodes.push(Node::new(id, root.path(), config()).await);
    }
    start_group(&mut nodes).await;
    let nodes = Arc::new(nodes);
    // Warm up: a leader, its first entries committed.
    try_produce(&nodes, &values(99), Duration::from_secs(30))
        .await
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let nodes = nodes.clone();
            tokio::spawn(async move {
                let v = values(p as u64 + 1);
                let mut lat = Vec::new();
                for _ in 0..batches / PRODUCERS {
                    let t = Instant::now();
                    try_produce(&nodes, &v, Duration::from_secs(30))
                        .await
                        .unwrap();
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed();
    let mut nodes = Arc::into_inner(nodes).unwrap();
    for n in &mut nodes {
        n.stop().await;
    }
    figures(lat.len() * BATCH_RECORDS * RECORD_BYTES, elapsed, lat)
}

fn main() {
    let mb: usize = std::env::var("STRATA_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(128);
    let batches = mb * 1_000_000 / (BATCH_RECORDS * RECORD_BYTES);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "{mb} MB per case: {PRODUCERS} producers, batches of {BATCH_RECORDS} x {RECORD_BYTES} B, fsync always"
    );
    let log = bench_log(batches);
    let one = runtime.block_on(bench_raft(1, batches));
    let three = runtime.block_on(bench_raft(3, batches));
    for (name, f) in [("log", &log), ("raft-1", &one), ("raft-3", &three)] {
        println!(
            "{name:>7}: {:7.1} MB/s ({:.2}x log)  p50 {:6.2} ms  p99 {:6.2} ms",
            f.mb_per_s,
            f.mb_per_s / log.mb_per_s,
            f.p50_ms,
            f.p99_ms
        );
    }
}
