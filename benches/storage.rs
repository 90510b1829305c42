//! Storage hot paths: append of 1 KiB records in batches of 1 and 100 (and 1,000 from 8
//! concurrent appenders under `Always`, the group-commit case), under each fsync policy, and
//! sequential read. Run with `cargo bench --bench storage`; figures go to docs/PERFORMANCE.md next
//! to `../shared/tools/disk-limit` run in the same session.
// criterion's macros generate undocumented items.
#![allow(missing_docs)]

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use std::{
    hint::black_box,
    sync::Arc,
    time::{Duration, Instant},
};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{FsyncPolicy, Log, LogConfig},
};

const RECORD_BYTES: usize = 1024;

/// A batch of `n` 1 KiB records of incompressible bytes.
fn batch(n: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut value = vec![0u8; RECORD_BYTES];
    let mut b = BatchBuilder::with_capacity(n * (RECORD_BYTES + 64));
    for i in 0..n {
        for chunk in value.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        b.push_parts(i as i64, None, &value, []);
    }
    b.finish(0)
}

fn bench_dir() -> tempfile::TempDir {
    // Next to target/, on the same disk as a local data/ directory.
    tempfile::Builder::new()
        .prefix("strata-bench")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .expect("create bench directory")
}

fn config(fsync: FsyncPolicy) -> LogConfig {
    LogConfig {
        fsync,
        segment_max_bytes: 64 << 20,
        retention_bytes: Some(256 << 20),
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn policies() -> [(&'static str, FsyncPolicy); 3] {
    [
        ("always", FsyncPolicy::Always),
        (
            "interval_100ms",
            FsyncPolicy::Interval(Duration::from_millis(100)),
        ),
        ("never", FsyncPolicy::Never),
    ]
}

fn append(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    for records in [1usize, 100] {
        let bytes = batch(records);
        let validated = validate_batch(&bytes, 1 << 20).expect("valid batch");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        for (name, policy) in policies() {
            let dir = bench_dir();
            let log = Log::open(dir.path(), config(policy)).expect("open log");
            let mut n = 0u64;
            group.bench_function(BenchmarkId::new(name, format!("batch_{records}")), |b| {
                b.iter(|| {
                    n += 1;
                    if n.is_multiple_of(4096) {
                        log.apply_retention(0).expect("retention");
                    }
                    black_box(log.append(&validated[0]).expect("append"))
                });
            });
        }
    }
    group.finish();
}

/// 8 threads appending 1,000-record batches under `Always`: group commit shares fsyncs.
fn append_concurrent(c: &mut Criterion) {
    const THREADS: usize = 8;
    let mut group = c.benchmark_group("append_concurrent");
    group.measurement_time(Duration::from_secs(6));
    group.warm_up_time(Duration::from_secs(1));
    group.sample_size(10);
    let bytes = Arc::new(batch(1000));
    group.throughput(Throughput::Bytes((bytes.len() * THREADS) as u64));
    let dir = bench_dir();
    let log = Arc::new(Log::open(dir.path(), config(FsyncPolicy::Always)).expect("open log"));
    group.bench_function("always/8x_batch_1000", |b| {
        b.iter_custom(|iters| {
            log.apply_retention(0).expect("retention");
            let start = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..THREADS {
                    let log = &log;
                    let bytes = &bytes;
                    s.spawn(move || {
                        let v = validate_batch(bytes, 1 << 20).expect("valid batch");
                        for _ in 0..iters {
                            log.append(&v[0]).expect("append");
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    group.finish();
}

fn read(c: &mut Criterion) {
    let mut group = c.benchmark_group("read");
    group.measurement_time(Duration::from_secs(4));
    group.warm_up_time(Duration::from_secs(1));
    let dir = bench_dir();
    let log = Log::open(dir.path(), config(FsyncPolicy::Never)).expect("open log");
    let bytes = batch(100);
    let validated = validate_batch(&bytes, 1 << 20).expect("valid batch");
    let total: u64 = 128 << 20;
    let mut written = 0;
    while written < total {
        log.append(&validated[0]).expect("append");
        written += bytes.len() as u64;
    }
    let end = log.next_offset();
    group.throughput(Throughput::Bytes(written));
    group.sample_size(10);
    group.bench_function("sequential_1MiB_chunks", |b| {
        b.iter(|| {
            let mut at = log.earliest_offset();
            let mut seen = 0usize;
            while at < end {
                let chunk = log.read(at, 1 << 20).expect("read");
                seen += chunk.batches.len();
                at = chunk.next_offset;
            }
            black_box(seen)
        });
    });
    group.finish();
}

fn validate(c: &mut Criterion) {
    let mut group = c.benchmark_group("validate");
    let bytes = batch(1000);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("batch_1000", |b| {
        b.iter(|| black_box(validate_batch(&bytes, 1 << 20).expect("valid").len()));
    });
    group.finish();
}

criterion_group!(benches, append, append_concurrent, read, validate);
criterion_main!(benches);
