//! `strata bench produce|consume|e2e`: a load generator against a running broker. It reports
//! records/s, MB/s of record payload and latency percentiles from HDR histograms.
//!
//! It goes through the Rust client, as users do: producers send pre-encoded batches
//! ([`Producer::send_batch`]) to explicit partitions, each on its own connection; consumers read
//! whole pushed batches ([`BatchSubscription`]) and check every batch's CRC.

use super::common::{ClientArgs, Failure, Output, parse_bytes};
use crate::client::{
    Admin, BatchSubscription, ClientError, Consumer, ConsumerConfig, FsyncPolicy, Producer,
    ProducerConfig, PushedBatches, Seek, TopicSettings,
};
use crate::record::{BatchBuilder, Frame, decode_frame};
use bytes::Bytes;
use clap::{Args, Subcommand};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use std::{
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// `strata bench`.
#[derive(Debug, Args)]
#[command(
    after_help = "Each load uses --topic, or a topic of its own (created, then deleted unless \
    --keep), and prints a report when it ends: records/s, MB/s of payload, latency percentiles.\n\n\
    Examples:\n  strata bench produce --producers 4 --duration 15s\n  \
    strata bench consume --backlog-bytes 1GiB\n  \
    strata bench e2e --rate-mb 50 --output json\n  \
    strata bench rebalance --partitions 12 --joins 20"
)]
pub struct BenchArgs {
    /// Which load to run.
    #[command(subcommand)]
    pub mode: BenchMode,
}

/// The three loads.
#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// Producers send batches as fast as the broker acknowledges them.
    #[command(
        after_help = "Example:\n  strata bench produce --record-size 1024 --batch-size 1000 \
        --producers 4 --fsync always --duration 15s --output json"
    )]
    Produce(LoadArgs),
    /// Fill a topic with a backlog (unless it has one), then replay it from offset 0.
    #[command(after_help = "Example:\n  strata bench consume --backlog-bytes 1GiB --consumers 1")]
    Consume(LoadArgs),
    /// Produce at a fixed rate and measure produce-to-subscriber latency through the push stream.
    #[command(
        after_help = "Example:\n  strata bench e2e --rate-mb 50 --fsync never --duration 15s"
    )]
    E2e(LoadArgs),
    /// Three consumers in a group follow a topic under load; a fourth joins and leaves again,
    /// `--joins` times: how long until every partition is owned again, and how many records/s
    /// the group handled while it settled against before.
    #[command(
        after_help = "Example:\n  strata bench rebalance --partitions 12 --joins 20 --rate-mb 5 \
        --fsync never"
    )]
    Rebalance(RebalanceArgs),
}

/// `strata bench rebalance`.
#[derive(Debug, Clone, Args)]
pub struct RebalanceArgs {
    /// Load, topic and broker settings.
    #[command(flatten)]
    pub load: LoadArgs,
    /// How many times the fourth member joins (and leaves again).
    #[arg(long, default_value_t = 20)]
    pub joins: u32,
}

/// Settings shared by the three loads.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Broker and output format.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Topic to use. Default: a new topic `bench-<mode>-<pid>`, deleted at the end.
    #[arg(long)]
    pub topic: Option<String>,
    /// Partitions of the topic the bench creates.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Replicas of each partition of the topic the bench creates (on a cluster: its broker
    /// count).
    #[arg(long, default_value_t = 1)]
    pub replication_factor: u32,
    /// Concurrent producers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: u32,
    /// Concurrent consumers (consume mode), each reading the whole topic.
    #[arg(long, default_value_t = 1)]
    pub consumers: u32,
    /// Bytes of each record's value (incompressible).
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Records per batch (per produce request).
    #[arg(long, default_value_t = 1000)]
    pub batch_size: usize,
    /// Fsync policy of the topic the bench creates: always, never or interval:MS.
    #[arg(long, default_value = "always", value_parser = super::topic::parse_fsync)]
    pub fsync: (FsyncPolicy, Option<u64>),
    /// How long to produce (e.g. 15s, 1m). Ignored when --records is given.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Produce this many records in all instead of running for --duration.
    #[arg(long)]
    pub records: Option<u64>,
    /// Offered load in MB/s (e2e mode).
    #[arg(long, default_value_t = 50.0)]
    pub rate_mb: f64,
    /// Backlog to replay in consume mode, produced first if the topic holds less.
    #[arg(long, default_value = "1GiB", value_parser = parse_bytes)]
    pub backlog_bytes: u64,
    /// Bytes per pushed message at most (consume and e2e); 0: the broker's default (1 MiB,
    /// which is also the broker's cap).
    #[arg(long, default_value = "0", value_parser = parse_bytes)]
    pub message_bytes: u64,
    /// Keep the topic the bench created instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// What a run measured.
#[derive(Debug, Serialize)]
struct Report {
    mode: &'static str,
    topic: String,
    records: u64,
    payload_bytes: u64,
    seconds: f64,
    records_per_s: f64,
    mb_per_s: f64,
    /// What the latency figures time.
    latency_of: &'static str,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    max_ms: f64,
}

/// Runs the bench on a multi-threaded runtime.
pub fn run(args: BenchArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Failure::new(format!("could not start the async runtime: {e}")).report(),
    };
    let result = runtime.block_on(async move {
        match args.mode {
            BenchMode::Produce(a) => bench_produce(a).await,
            BenchMode::Consume(a) => bench_consume(a).await,
            BenchMode::E2e(a) => bench_e2e(a).await,
            BenchMode::Rebalance(a) => bench_rebalance(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => f.report(),
    }
}

fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One batch of `records` values of `size` pseudo-random bytes; the first 8 bytes of the first
/// value carry `stamp` (the e2e send time).
fn build_batch(records: usize, size: usize, seed: u64, stamp: u64) -> Bytes {
    let mut state = seed | 1;
    let mut value = vec![0u8; size];
    let mut b = BatchBuilder::with_capacity(records * (size + 32));
    let ts = crate::record::now_ms();
    for i in 0..records {
        for chunk in value.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        if i == 0 && size >= 8 {
            value[..8].copy_from_slice(&stamp.to_le_bytes());
        }
        b.push_parts(ts, None, &value, []);
    }
    Bytes::from(b.finish(0))
}

fn histogram() -> Result<Histogram<u64>, Failure> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3)
        .map_err(|e| Failure::new(format!("histogram: {e}")))
}

fn progress(total: Option<u64>, what: &str) -> ProgressBar {
    let bar = match total {
        Some(n) => ProgressBar::new(n),
        None => ProgressBar::new_spinner(),
    };
    let template = if total.is_some() {
        "{elapsed_precise} [{bar:30}] {pos}/{len} {msg}"
    } else {
        "{elapsed_precise} {spinner} {msg}"
    };
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// The topic the run uses, and whether the bench created it (and so deletes it).
async fn prepare_topic(
    args: &LoadArgs,
    mode: &str,
    admin: &Admin,
) -> Result<(String, bool), Failure> {
    if let Some(t) = &args.topic {
        match admin.describe_topic(t).await {
            Ok(_) => return Ok((t.clone(), false)),
            Err(e) if e.code() == Some(tonic::Code::NotFound) => {}
            Err(e) => return Err(args.client.fail(&e, Some(t))),
        }
    }
    let name = args
        .topic
        .clone()
        .unwrap_or_else(|| format!("bench-{mode}-{}", std::process::id()));
    let (fsync, interval) = args.fsync;
    let settings = TopicSettings {
        fsync: Some(fsync),
        fsync_interval_ms: interval,
        retention_ms: Some(-1),
        max_record_bytes: Some((args.record_size + 1024).max(1 << 20) as u32),
        ..TopicSettings::default()
    };
    admin
        .create_replicated_topic(&name, args.partitions, args.replication_factor, &settings)
        .await
        .map_err(|e| args.client.fail(&e, Some(&name)))?;
    Ok((name, true))
}

async fn finish_topic(args: &LoadArgs, admin: &Admin, topic: &str, created: bool) {
    if created && !args.keep {
        let _ = admin.delete_topic(topic).await;
    }
}

/// Counters the producers share with the progress bar.
#[derive(Default)]
struct Totals {
    records: AtomicU64,
    stop: AtomicBool,
}

/// Runs `args.producers` producers until the duration or record count is reached. `rate` (bytes
/// per second in all) paces them; `None` runs flat out. Returns (records, elapsed, ack latency).
async fn produce_load(
    args: &LoadArgs,
    topic: &str,
    rate: Option<f64>,
    stamp: bool,
) -> Result<(u64, Duration, Histogram<u64>), Failure> {
    let totals = Arc::new(Totals::default());
    let batch_records = args.batch_size.max(1) as u64;
    let target = args.records;
    let producers = args.producers.max(1);
    let bar = progress(target, "records produced");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..producers {
        let channel = args.client.connect().await?;
        // Room for the largest batch the broker takes (64 MiB by default): it, not the client,
        // says when --batch-size and --record-size ask too much.
        let config = ProducerConfig {
            max_request_bytes: 64 << 20,
            connect: args.client.connect_options(),
            ..ProducerConfig::default()
        };
        let producer = Producer::new(channel, topic, config)
            .await
            .map_err(|e| args.client.fail(&e, Some(topic)))?;
        let totals = totals.clone();
        let (size, records) = (args.record_size, args.batch_size.max(1));
        let partitions = args.partitions.max(1);
        let duration = args.duration;
        let mut hist = histogram()?;
        let interval = rate.map(|r| {
            let batch_bytes = (size * records) as f64;
            Duration::from_secs_f64(batch_bytes / (r / f64::from(producers)))
        });
        tasks.push(tokio::spawn(async move {
            let fixed = build_batch(records, size, u64::from(p) + 1, 0);
            let mut next_send = Instant::now();
            let mut i = 0usize;
            loop {
                if totals.stop.load(Ordering::Relaxed)
                    || (target.is_none() && started.elapsed() >= duration)
                {
                    break;
                }
                if let Some(t) = target {
                    let done = totals.records.fetch_add(batch_records, Ordering::Relaxed);
                    if done >= t {
                        break;
                    }
                }
                if let Some(every) = interval {
                    tokio::time::sleep_until(next_send.into()).await;
                    next_send += every;
                }
                let batch = if stamp {
                    build_batch(records, size, u64::from(p) + 1, now_nanos())
                } else {
                    fixed.clone()
                };
                // Producer p cycles through p, p + producers, ...: with as many producers as
                // partitions each owns one; with fewer, each spreads over several.
                let partition =
                    ((p as usize + i * producers as usize) % partitions as usize) as u32;
                i += 1;
                let sent = Instant::now();
                producer.send_batch(partition, batch).await?.await?;
                let micros = sent.elapsed().as_micros() as u64;
                let _ = hist.record(micros.max(1));
                if target.is_none() {
                    totals.records.fetch_add(batch_records, Ordering::Relaxed);
                }
            }
            Ok::<_, ClientError>(hist)
        }));
    }
    let ticker = {
        let totals = totals.clone();
        let bar = bar.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                let n = totals.records.load(Ordering::Relaxed);
                bar.set_position(n);
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("records, {:.0} rec/s", n as f64 / secs));
                if totals.stop.load(Ordering::Relaxed) {
                    break;
                }
            }
        })
    };
    let mut merged = histogram()?;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(h)) => {
                let _ = merged.add(&h);
            }
            Ok(Err(e)) => {
                totals.stop.store(true, Ordering::Relaxed);
                first_err.get_or_insert_with(|| Failure::new(format!("produce failed: {e}")));
            }
            Err(e) => {
                first_err.get_or_insert_with(|| Failure::new(format!("producer task: {e}")));
            }
        }
    }
    let elapsed = started.elapsed();
    totals.stop.store(true, Ordering::Relaxed);
    let _ = ticker.await;
    bar.finish_and_clear();
    if let Some(f) = first_err {
        return Err(f);
    }
    let records = match target {
        Some(t) => t.min(totals.records.load(Ordering::Relaxed)),
        None => totals.records.load(Ordering::Relaxed),
    };
    Ok((records, elapsed, merged))
}

fn report(
    args: &LoadArgs,
    mode: &'static str,
    topic: &str,
    records: u64,
    elapsed: Duration,
    hist: &Histogram<u64>,
    latency_of: &'static str,
) -> Result<(), Failure> {
    let secs = elapsed.as_secs_f64().max(1e-9);
    let payload = records * args.record_size as u64;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let r = Report {
        mode,
        topic: topic.to_owned(),
        records,
        payload_bytes: payload,
        seconds: secs,
        records_per_s: records as f64 / secs,
        mb_per_s: payload as f64 / 1e6 / secs,
        latency_of,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
    };
    let mut out = args.client.printer();
    match args.client.output {
        Output::Json => out.json(&r),
        Output::Text => out.line(&format!(
            "{mode}: {} records in {:.2} s: {:.0} records/s, {:.1} MB/s of payload\n\
             latency ({latency_of}): p50 {:.3} ms, p99 {:.3} ms, p99.9 {:.3} ms, max {:.3} ms",
            r.records,
            r.seconds,
            r.records_per_s,
            r.mb_per_s,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms
        )),
    }
}

async fn bench_produce(args: LoadArgs) -> Result<(), Failure> {
    let admin = Admin::new(args.client.connect().await?);
    let (topic, created) = prepare_topic(&args, "produce", &admin).await?;
    let result = produce_load(&args, &topic, None, false).await;
    finish_topic(&args, &admin, &topic, created).await;
    let (records, elapsed, hist) = result?;
    report(
        &args,
        "produce",
        &topic,
        records,
        elapsed,
        &hist,
        "produce request to acknowledgement",
    )
}

/// Opens a push subscription to every partition of `topic` from `start`.
async fn subscribe(
    args: &LoadArgs,
    topic: &str,
    start: Seek,
) -> Result<BatchSubscription, Failure> {
    let channel = args.client.connect().await?;
    let max_bytes = u32::try_from(args.message_bytes).unwrap_or(u32::MAX);
    BatchSubscription::open(channel, topic, &[], start, max_bytes)
        .await
        .map_err(|e| Failure::new(format!("subscribe failed: {e}")))
}

/// The next pushed message, or the failure to say.
async fn next_pushed(stream: &mut BatchSubscription) -> Result<Option<PushedBatches>, Failure> {
    stream
        .next()
        .await
        .map_err(|e| Failure::new(format!("subscription failed: {e}")))
}

/// Walks the batches of a pushed message, checking each CRC. Returns (records, first value of
/// each batch) through `each_batch`.
fn walk_batches(bytes: &[u8], mut each_batch: impl FnMut(u64, &[u8])) -> Result<(), Failure> {
    let mut rest = bytes;
    while !rest.is_empty() {
        match decode_frame(rest) {
            Frame::Batch(b) => {
                let first = b
                    .records()
                    .next()
                    .and_then(Result::ok)
                    .map_or(&[][..], |r| r.value);
                each_batch(u64::from(b.header().record_count), first);
                rest = &rest[b.bytes().len()..];
            }
            other => {
                return Err(Failure::new(format!(
                    "the broker sent a bad batch: {other:?}"
                )));
            }
        }
    }
    Ok(())
}

async fn bench_consume(args: LoadArgs) -> Result<(), Failure> {
    let admin = Admin::new(args.client.connect().await?);
    let (topic, created) = prepare_topic(&args, "consume", &admin).await?;
    let result = consume(&args, &admin, &topic).await;
    finish_topic(&args, &admin, &topic, created).await;
    let (records, elapsed, hist) = result?;
    report(
        &args,
        "consume",
        &topic,
        records,
        elapsed,
        &hist,
        "interval between pushed messages",
    )
}

async fn consume(
    args: &LoadArgs,
    admin: &Admin,
    topic: &str,
) -> Result<(u64, Duration, Histogram<u64>), Failure> {
    let described = admin
        .describe_topic(topic)
        .await
        .map_err(|e| args.client.fail(&e, Some(topic)))?;
    let have: u64 = described.partitions.iter().map(|p| p.bytes).sum();
    if have < args.backlog_bytes {
        let per_record = (args.record_size + 28) as u64;
        let mut fill = args.clone();
        fill.records = Some((args.backlog_bytes - have).div_ceil(per_record));
        produce_load(&fill, topic, None, false).await?;
    }
    let described = admin
        .describe_topic(topic)
        .await
        .map_err(|e| args.client.fail(&e, Some(topic)))?;
    let ends: Vec<(u32, u64, u64)> = described
        .partitions
        .iter()
        .map(|p| (p.partition, p.earliest_offset, p.next_offset))
        .collect();
    let total: u64 = ends.iter().map(|(_, e, n)| n - e).sum();
    let consumers = args.consumers.max(1);
    let bar = progress(Some(total * u64::from(consumers)), "records replayed");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..consumers {
        let mut stream = subscribe(args, topic, Seek::Earliest).await?;
        let ends = ends.clone();
        let bar = bar.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = histogram()?;
            let mut remaining: std::collections::HashMap<u32, u64> =
                ends.iter().map(|(p, _, n)| (*p, *n)).collect();
            remaining.retain(|p, n| ends.iter().any(|(q, e, _)| q == p && e < n));
            let mut records = 0u64;
            let mut last = Instant::now();
            while !remaining.is_empty() {
                let Some(msg) = next_pushed(&mut stream).await? else {
                    break;
                };
                let now = Instant::now();
                let _ = hist.record((now - last).as_micros().max(1) as u64);
                last = now;
                let mut n = 0;
                walk_batches(&msg.batches, |count, _| n += count)?;
                records += n;
                bar.inc(n);
                if let Some(end) = remaining.get(&msg.partition)
                    && msg.next_offset >= *end
                {
                    remaining.remove(&msg.partition);
                }
            }
            Ok::<_, Failure>((records, hist))
        }));
    }
    let mut merged = histogram()?;
    let mut records = 0;
    for t in tasks {
        let (n, h) = t
            .await
            .map_err(|e| Failure::new(format!("consumer task: {e}")))??;
        records += n;
        let _ = merged.add(&h);
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    Ok((records, elapsed, merged))
}

async fn bench_e2e(args: LoadArgs) -> Result<(), Failure> {
    if args.record_size < 8 {
        return Err(Failure::new(
            "e2e needs --record-size of at least 8 (the send time)",
        ));
    }
    let admin = Admin::new(args.client.connect().await?);
    let (topic, created) = prepare_topic(&args, "e2e", &admin).await?;
    let result = e2e(&args, &topic).await;
    finish_topic(&args, &admin, &topic, created).await;
    let (records, elapsed, hist) = result?;
    report(
        &args,
        "e2e",
        &topic,
        records,
        elapsed,
        &hist,
        "produce to subscriber, per batch",
    )
}

async fn e2e(args: &LoadArgs, topic: &str) -> Result<(u64, Duration, Histogram<u64>), Failure> {
    let mut stream = subscribe(args, topic, Seek::Latest).await?;
    // Once the producers are done they publish how many records they sent; the subscriber
    // stops when it has seen them all.
    let (sent_tx, mut sent_rx) = tokio::sync::watch::channel(None::<u64>);
    let receiver = tokio::spawn(async move {
        let mut hist = histogram()?;
        let mut records = 0u64;
        loop {
            if sent_rx.borrow().is_some_and(|sent| records >= sent) {
                break;
            }
            let msg = tokio::select! {
                m = next_pushed(&mut stream) => m?,
                changed = sent_rx.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else {
                break;
            };
            let now = now_nanos();
            walk_batches(&msg.batches, |count, first| {
                records += count;
                if let Some(stamp) = first.get(..8) {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(stamp);
                    let sent = u64::from_le_bytes(b);
                    let _ = hist.record((now.saturating_sub(sent) / 1000).max(1));
                }
            })?;
        }
        Ok::<_, Failure>((records, hist))
    });
    let (produced, elapsed, _) = produce_load(args, topic, Some(args.rate_mb * 1e6), true).await?;
    let _ = sent_tx.send(Some(produced));
    let joined = tokio::time::timeout(Duration::from_secs(30), receiver)
        .await
        .map_err(|_| {
            Failure::new(format!(
                "the subscriber did not receive all {produced} records within 30 s"
            ))
        })?;
    let (received, hist) = joined.map_err(|e| Failure::new(format!("subscriber task: {e}")))??;
    if received < produced {
        return Err(Failure::new(format!(
            "the subscriber received {received} of {produced} records"
        )));
    }
    Ok((received, elapsed, hist))
}

/// What a rebalance run measured.
#[derive(Debug, Serialize)]
struct RebalanceReport {
    mode: &'static str,
    topic: String,
    partitions: u32,
    joins: u32,
    /// From the fourth member's join to every partition owned again, with it owning some.
    settle_p50_ms: f64,
    settle_p99_ms: f64,
    settle_max_ms: f64,
    /// Records/s the group handled while a join settled, and in the second before each join
    /// (a stop-the-world rebalance shows as a dip).
    group_records_per_s_settling: f64,
    group_records_per_s_before: f64,
    /// The same for the partitions that kept their owner through the join alone: the members
    /// whose partitions did not move (goal: no dip).
    unmoved_records_per_s_settling: f64,
    unmoved_records_per_s_before: f64,
}

/// Records handled per partition, by all members.
type Handled = Arc<Vec<AtomicU64>>;

fn counts(handled: &Handled) -> Vec<u64> {
    handled.iter().map(|c| c.load(Ordering::Relaxed)).collect()
}

/// Records handled between two `counts`, over the partitions `which` says.
fn handled_between(before: &[u64], after: &[u64], which: impl Fn(usize) -> bool) -> u64 {
    (0..before.len())
        .filter(|&p| which(p))
        .map(|p| after[p] - before[p])
        .sum()
}

/// Each partition's owner, as the group describes it now.
async fn owners(admin: &Admin, group: &str, partitions: u32) -> Vec<Option<String>> {
    let mut out = vec![None; partitions as usize];
    if let Ok(d) = admin.describe_group(group).await {
        for p in d.partitions {
            if let Some(slot) = out.get_mut(p.partition as usize) {
                *slot = p.owner;
            }
        }
    }
    out
}

/// Polls the group until every partition of `topic` has an owner and `members` are live and
/// the group is stable; returns when.
async fn settled(
    admin: &Admin,
    group: &str,
    partitions: u32,
    members: usize,
) -> Result<Instant, Failure> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(d) = admin.describe_group(group).await {
            let owned = d.partitions.iter().filter(|p| p.owner.is_some()).count();
            if d.members.len() == members && d.state == "stable" && owned == partitions as usize {
                return Ok(Instant::now());
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::new(format!(
                "group '{group}' did not settle with {members} members within 60 s"
            )));
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A group member that counts what it handles, per partition, until dropped.
fn spawn_member(
    channel: crate::client::Channel,
    topic: String,
    group: String,
    handled: Handled,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let config = ConsumerConfig::group(group).start(Seek::Latest);
        let Ok(mut consumer) = Consumer::new(channel, &topic, config).await else {
            return;
        };
        while let Ok(Some(r)) = consumer.next().await {
            if let Some(h) = handled.get(r.partition as usize) {
                h.fetch_add(1, Ordering::Relaxed);
            }
        }
    })
}

async fn bench_rebalance(args: RebalanceArgs) -> Result<(), Failure> {
    let load = &args.load;
    let admin = Admin::new(load.client.connect().await?);
    let (topic, created) = prepare_topic(load, "rebalance", &admin).await?;
    let group = format!("bench-rebalance-{}", std::process::id());
    let result = rebalance(&args, &admin, &topic, &group).await;
    // The members' leaves are on their way; the group goes once they have arrived.
    for _ in 0..50 {
        match admin.delete_group(&group).await {
            Err(e) if e.code() == Some(tonic::Code::FailedPrecondition) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => break,
        }
    }
    finish_topic(load, &admin, &topic, created).await;
    let r = result?;
    let mut out = load.client.printer();
    match load.client.output {
        Output::Json => out.json(&r),
        Output::Text => out.line(&format!(
            "rebalance: {} joins of a 4th member to 3 over {} partitions: settled in p50 {:.1} ms, \
             p99 {:.1} ms, max {:.1} ms\nthe group while settling: {:.0} records/s \
             (before: {:.0} records/s); the partitions that kept their owner: {:.0} records/s \
             (before: {:.0} records/s, {:.2}x)",
            r.joins,
            r.partitions,
            r.settle_p50_ms,
            r.settle_p99_ms,
            r.settle_max_ms,
            r.group_records_per_s_settling,
            r.group_records_per_s_before,
            r.unmoved_records_per_s_settling,
            r.unmoved_records_per_s_before,
            r.unmoved_records_per_s_settling / r.unmoved_records_per_s_before.max(1e-9)
        )),
    }
}

async fn rebalance(
    args: &RebalanceArgs,
    admin: &Admin,
    topic: &str,
    group: &str,
) -> Result<RebalanceReport, Failure> {
    let load = &args.load;
    let partitions = load.partitions.max(1);
    let handled: Handled = Arc::new((0..partitions).map(|_| AtomicU64::new(0)).collect());
    let mut staying = Vec::new();
    for _ in 0..3 {
        let channel = load.client.connect().await?;
        staying.push(spawn_member(
            channel,
            topic.to_owned(),
            group.to_owned(),
            handled.clone(),
        ));
    }
    settled(admin, group, partitions, 3).await?;
    // Load for as long as the joins take.
    let mut producing = load.clone();
    producing.duration = Duration::from_secs(3600);
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let topic = topic.to_owned();
        let stop = stop.clone();
        let rate = load.rate_mb * 1e6;
        tokio::spawn(async move {
            tokio::select! {
                r = produce_load(&producing, &topic, Some(rate), false) => r.map(|_| ()),
                () = async { while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                } } => Ok(()),
            }
        })
    };
    let mut settle = histogram()?;
    let (mut settling_records, mut settling_time) = (0u64, Duration::ZERO);
    let (mut before_records, mut before_time) = (0u64, Duration::ZERO);
    let (mut unmoved_settling, mut unmoved_before) = (0u64, 0u64);
    for join in 0..args.joins {
        // Joins land at spread-out moments of the members' heartbeat cycles (a fixed pause
        // would line every join up just after their heartbeats, the worst case each time).
        let pause = Duration::from_millis(1000 + u64::from(join) * 379 % 1000);
        let start = counts(&handled);
        tokio::time::sleep(pause).await;
        let owned_before = owners(admin, group, partitions).await;
        let at_join = counts(&handled);
        before_time += pause;
        let channel = load.client.connect().await?;
        let joined_at = Instant::now();
        let fourth = spawn_member(channel, topic.to_owned(), group.to_owned(), handled.clone());
        let done = settled(admin, group, partitions, 4).await?;
        let settled_counts = counts(&handled);
        let owned_after = owners(admin, group, partitions).await;
        let unmoved = |p: usize| owned_before[p].is_some() && owned_before[p] == owned_after[p];
        before_records += handled_between(&start, &at_join, |_| true);
        settling_records += handled_between(&at_join, &settled_counts, |_| true);
        unmoved_before += handled_between(&start, &at_join, unmoved);
        unmoved_settling += handled_between(&at_join, &settled_counts, unmoved);
        settling_time += done - joined_at;
        let _ = settle.record((done - joined_at).as_micros().max(1) as u64);
        fourth.abort();
        let _ = fourth.await;
        settled(admin, group, partitions, 3).await?;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = producer.await;
    for m in staying {
        m.abort();
    }
    let ms = |q: f64| settle.value_at_quantile(q) as f64 / 1000.0;
    Ok(RebalanceReport {
        mode: "rebalance",
        topic: topic.to_owned(),
        partitions,
        joins: args.joins,
        settle_p50_ms: ms(0.5),
        settle_p99_ms: ms(0.99),
        settle_max_ms: settle.max() as f64 / 1000.0,
        group_records_per_s_settling: settling_records as f64
            / settling_time.as_secs_f64().max(1e-9),
        group_records_per_s_before: before_records as f64 / before_time.as_secs_f64().max(1e-9),
        unmoved_records_per_s_settling: unmoved_settling as f64
            / settling_time.as_secs_f64().max(1e-9),
        unmoved_records_per_s_before: unmoved_before as f64 / before_time.as_secs_f64().max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamped_batch_carries_its_send_time() {
        let b = build_batch(3, 16, 7, 0xDEAD_BEEF);
        let mut seen = Vec::new();
        walk_batches(&b, |n, first| seen.push((n, first[..8].to_vec()))).unwrap();
        assert_eq!(seen, vec![(3, 0xDEAD_BEEFu64.to_le_bytes().to_vec())]);
    }
}
