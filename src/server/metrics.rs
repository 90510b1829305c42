//! Prometheus metrics: the text exposition at `http://ADDR/metrics` when
//! [`super::ServerConfig::metrics_listen`] is set (`strata serve --metrics-listen`).
//!
//! Two kinds, and where each is counted:
//! - **Counted as it happens**, cheaply (an atomic add per request, none per record): requests
//!   and their latency by rpc and status code (the [`Metered`] layer, which sees every rpc),
//!   bytes and records appended and bytes served (the handlers), open subscriptions.
//! - **Read at scrape time** from their owners, so the hot path pays nothing for them: each
//!   partition's offsets, bytes and segments (its log), each group's committed offsets and lag
//!   (the broker), open connections and the request budget (the server's limits), fsync times
//!   (storage's histogram), and the process (RSS, open files, CPU).
//!
//! Cardinality is bounded: the `rpc` label takes only the methods of the services this server
//! serves (read from their descriptors; anything else is `unknown`), `code` the 17 gRPC codes,
//! and the per-partition and per-group series together at most
//! [`super::ServerConfig::metrics_max_series`] per scrape (topics and groups in name order;
//! `strata_metrics_series_omitted` counts the rest).

use super::{budget::RequestBudget, connections::ConnectionLimit};
use crate::broker::Broker;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
    core::{Collector, Desc},
    proto::{self as pm, MetricFamily},
};
use prost::Message as _;
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Latency buckets of unary rpcs, in seconds: 100 µs to 10 s (long-polls end in the top ones).
const RPC_BUCKETS_SECONDS: [f64; 16] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// An rpc the server serves, as its metrics name it.
#[derive(Debug, Clone)]
pub(super) struct Rpc {
    /// The method's name (`Produce`): the `rpc` label.
    pub name: Arc<str>,
    /// Server-streaming (Subscribe, health's Watch, reflection): counted when the stream ends,
    /// and left out of the latency histogram (a stream's lifetime is not a latency).
    pub streaming: bool,
}

/// The metrics the server counts as it goes, and the registry that also reads the rest.
pub(super) struct Metrics {
    registry: Registry,
    /// Request path (`/strata.v1.Strata/Produce`) to its rpc.
    rpcs: HashMap<String, Rpc>,
    unknown: Rpc,
    requests: IntCounterVec,
    duration: HistogramVec,
    /// Bytes of batches and records accepted by Produce (as sent: encoded batches, or the keys,
    /// values and headers of plain records).
    pub appended_bytes: IntCounter,
    /// Records accepted by Produce.
    pub appended_records: IntCounter,
    /// Batch bytes sent to clients, by rpc (Fetch, Subscribe).
    pub served_bytes: IntCounterVec,
    /// Open Subscribe streams.
    pub subscriptions: IntGauge,
}

/// Why the metrics could not be set up (a bug, not an operator's mistake: names are constants).
#[derive(Debug, thiserror::Error)]
#[error("could not set up the metrics")]
pub struct MetricsError(#[source] prometheus::Error);

impl From<prometheus::Error> for MetricsError {
    fn from(e: prometheus::Error) -> Self {
        MetricsError(e)
    }
}

impl Metrics {
    /// The metrics of a server of `broker` with these limits; `descriptors` are the encoded
    /// file descriptor sets of the services it serves (their methods become the `rpc` labels).
    pub(super) fn new(
        broker: Arc<Broker>,
        connections: ConnectionLimit,
        budget: RequestBudget,
        max_series: usize,
        descriptors: &[&[u8]],
    ) -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "strata_rpc_requests_total",
                "gRPC requests answered, by rpc and status code (streams when they end).",
            ),
            &["rpc", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "strata_rpc_duration_seconds",
                "Time from a unary request's arrival to its answer, by rpc and status code.",
            )
            .buckets(RPC_BUCKETS_SECONDS.to_vec()),
            &["rpc", "code"],
        )?;
        let appended_bytes = IntCounter::new(
            "strata_appended_bytes_total",
            "Bytes of batches and records accepted by Produce.",
        )?;
        let appended_records = IntCounter::new(
            "strata_appended_records_total",
            "Records accepted by Produce.",
        )?;
        let served_bytes = IntCounterVec::new(
            Opts::new(
                "strata_served_bytes_total",
                "Batch bytes sent to clients, by rpc (Fetch, Subscribe).",
            ),
            &["rpc"],
        )?;
        let subscriptions = IntGauge::new("strata_subscriptions_open", "Open Subscribe streams.")?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(appended_bytes.clone()))?;
        registry.register(Box::new(appended_records.clone()))?;
        registry.register(Box::new(served_bytes.clone()))?;
        registry.register(Box::new(subscriptions.clone()))?;
        registry.register(Box::new(BrokerCollector::new(
            broker,
            connections,
            budget,
            max_series,
        )?))?;
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            rpcs: rpcs_of(descriptors),
            unknown: Rpc {
                name: "unknown".into(),
                streaming: false,
            },
            requests,
            duration,
            appended_bytes,
            appended_records,
            served_bytes,
            subscriptions,
        })
    }

    /// The rpc a request path names (`unknown` for a path no service serves).
    pub(super) fn rpc(&self, path: &str) -> &Rpc {
        self.rpcs.get(path).unwrap_or(&self.unknown)
    }

    /// Counts one answered request (and, if unary, its latency).
    pub(super) fn answered(&self, rpc: &Rpc, code: tonic::Code, took: Duration) {
        let labels = [&*rpc.name, code_label(code)];
        self.requests.with_label_values(&labels).inc();
        if !rpc.streaming {
            self.duration
                .with_label_values(&labels)
                .observe(took.as_secs_f64());
        }
    }

    /// The text exposition of every metric.
    pub(super) fn render(&self) -> String {
        let families = self.registry.gather();
        let mut text = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut text) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        text
    }
}

/// Every method of the services in `descriptors`, by request path.
fn rpcs_of(descriptors: &[&[u8]]) -> HashMap<String, Rpc> {
    let mut rpcs = HashMap::new();
    for encoded in descriptors {
        let Ok(set) = prost_types::FileDescriptorSet::decode(*encoded) else {
            tracing::warn!(
                "a service descriptor set could not be decoded: its rpcs count as unknown"
            );
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                let full = match file.package() {
                    "" => service.name().to_owned(),
                    package => format!("{package}.{}", service.name()),
                };
                for method in &service.method {
                    rpcs.insert(
                        format!("/{full}/{}", method.name()),
                        Rpc {
                            name: method.name().into(),
                            streaming: method.server_streaming(),
                        },
                    );
                }
            }
        }
    }
    rpcs
}

/// The `code` label: gRPC's own names for its codes.
pub(super) fn code_label(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// What is read from its owner at each scrape.
struct BrokerCollector {
    broker: Arc<Broker>,
    connections: ConnectionLimit,
    budget: RequestBudget,
    max_series: usize,
    /// The gauges, refilled at each scrape (so a deleted topic's series go away); the lock keeps
    /// two scrapes from filling them at once.
    gauges: Mutex<ScrapeGauges>,
    fsync_desc: Desc,
    descs: Vec<Desc>,
}

struct ScrapeGauges {
    next_offset: IntGaugeVec,
    earliest_offset: IntGaugeVec,
    bytes: IntGaugeVec,
    segments: IntGaugeVec,
    producers: IntGaugeVec,
    group_lag: IntGaugeVec,
    group_committed: IntGaugeVec,
    group_members: IntGaugeVec,
    topics: IntGauge,
    connections_open: IntGauge,
    connections_max: IntGauge,
    budget_in_use: IntGauge,
    budget_bytes: IntGauge,
    omitted: IntGauge,
}

const FSYNC_NAME: &str = "strata_fsync_duration_seconds";
const FSYNC_HELP: &str = "Time each fdatasync (segments, indexes, checkpoints, offsets) and \
                          directory sync took.";

impl BrokerCollector {
    fn new(
        broker: Arc<Broker>,
        connections: ConnectionLimit,
        budget: RequestBudget,
        max_series: usize,
    ) -> prometheus::Result<Self> {
        let partition = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["topic", "partition"])
        };
        let group = |name: &str, help: &str| {
            IntGaugeVec::new(Opts::new(name, help), &["group", "topic", "partition"])
        };
        let gauges = ScrapeGauges {
            next_offset: partition(
                "strata_partition_next_offset",
                "The partition's high watermark: the offset its next record gets.",
            )?,
            earliest_offset: partition(
                "strata_partition_earliest_offset",
                "The partition's earliest stored offset.",
            )?,
            bytes: partition(
                "strata_partition_bytes",
                "Bytes of batches the partition stores.",
            )?,
            segments: partition(
                "strata_partition_segments",
                "Segment files of the partition.",
            )?,
            producers: partition(
                "strata_partition_producers",
                "Idempotent producers the partition remembers.",
            )?,
            group_lag: group(
                "strata_group_lag",
                "Records a group has yet to read in a partition (from its committed offset, or \
                 the earliest stored one if later, to the next offset).",
            )?,
            group_committed: group(
                "strata_group_committed_offset",
                "The group's committed offset in the partition.",
            )?,
            group_members: IntGaugeVec::new(
                Opts::new("strata_group_members", "Live members of a consumer group."),
                &["group"],
            )?,
            topics: IntGauge::new("strata_topics", "Topics on the broker.")?,
            connections_open: IntGauge::new(
                "strata_connections_open",
                "Client connections open now.",
            )?,
            connections_max: IntGauge::new(
                "strata_connections_max",
                "The most client connections open at once (max_connections).",
            )?,
            budget_in_use: IntGauge::new(
                "strata_request_budget_bytes_in_use",
                "Bytes of the request memory budget held by requests being received or handled.",
            )?,
            budget_bytes: IntGauge::new(
                "strata_request_budget_bytes",
                "The request memory budget, in bytes.",
            )?,
            omitted: IntGauge::new(
                "strata_metrics_series_omitted",
                "Partition and group series left out of this scrape by the series cap.",
            )?,
        };
        let fsync_desc = Desc::new(
            FSYNC_NAME.to_owned(),
            FSYNC_HELP.to_owned(),
            Vec::new(),
            HashMap::new(),
        )?;
        let mut descs: Vec<Desc> = Vec::new();
        for c in gauges.collectors() {
            descs.extend(c.desc().into_iter().cloned());
        }
        Ok(BrokerCollector {
            broker,
            connections,
            budget,
            max_series,
            gauges: Mutex::new(gauges),
            fsync_desc,
            descs,
        })
    }
}

impl ScrapeGauges {
    fn collectors(&self) -> [&dyn Collector; 14] {
        [
            &self.next_offset,
            &self.earliest_offset,
            &self.bytes,
            &self.segments,
            &self.producers,
            &self.group_lag,
            &self.group_committed,
            &self.group_members,
            &self.topics,
            &self.connections_open,
            &self.connections_max,
            &self.budget_in_use,
            &self.budget_bytes,
            &self.omitted,
        ]
    }

    fn reset(&self) {
        for v in self.per_partition_and_group() {
            v.reset();
        }
    }

    /// The gauges whose series come and go with partitions and groups.
    fn per_partition_and_group(&self) -> [&IntGaugeVec; 8] {
        [
            &self.next_offset,
            &self.earliest_offset,
            &self.bytes,
            &self.segments,
            &self.producers,
            &self.group_lag,
            &self.group_committed,
            &self.group_members,
        ]
    }

    /// Reads the broker's partitions and groups into the gauges, at most `max_series` of them.
    fn fill(&self, broker: &Broker, max_series: usize) {
        self.reset();
        let mut left = max_series;
        let mut omitted = 0usize;
        let topics = broker.list_topics().unwrap_or_default();
        self.topics.set(topics.len() as i64);
        for topic in &topics {
            let Ok((_, partitions)) = broker.describe_topic(&topic.name) else {
                continue; // deleted since it was listed
            };
            for p in partitions {
                if left == 0 {
                    omitted += 1;
                    continue;
                }
                left -= 1;
                let labels = [topic.name.as_str(), &p.partition.to_string()];
                let s = p.stats;
                self.next_offset
                    .with_label_values(&labels)
                    .set(gauge(s.next_offset));
                self.earliest_offset
                    .with_label_values(&labels)
                    .set(gauge(s.earliest_offset));
                self.bytes.with_label_values(&labels).set(gauge(s.bytes));
                self.segments
                    .with_label_values(&labels)
                    .set(i64::from(s.segments));
                self.producers
                    .with_label_values(&labels)
                    .set(i64::from(s.producers));
            }
        }
        for group in broker.list_groups().unwrap_or_default() {
            let Ok(described) = broker.describe_group(&group) else {
                continue; // deleted since it was listed, or its offsets are damaged
            };
            if let Some(members) = &described.members {
                self.group_members
                    .with_label_values(&[group.as_str()])
                    .set(members.members.len() as i64);
            }
            for p in &described.partitions {
                if left == 0 {
                    omitted += 1;
                    continue;
                }
                left -= 1;
                let labels = [group.as_str(), p.topic.as_str(), &p.partition.to_string()];
                self.group_lag.with_label_values(&labels).set(gauge(p.lag));
                if let Some(committed) = p.committed_offset {
                    self.group_committed
                        .with_label_values(&labels)
                        .set(gauge(committed));
                }
            }
        }
        self.omitted.set(omitted as i64);
    }
}

/// A count as a gauge's value (no count here comes near `i64::MAX`).
fn gauge(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for BrokerCollector {
    fn desc(&self) -> Vec<&Desc> {
        let mut descs: Vec<&Desc> = self.descs.iter().collect();
        descs.push(&self.fsync_desc);
        descs
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let gauges = self
            .gauges
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        gauges.fill(&self.broker, self.max_series);
        gauges
            .connections_open
            .set(gauge(self.connections.open() as u64));
        gauges
            .connections_max
            .set(gauge(self.connections.max() as u64));
        gauges.budget_in_use.set(gauge(self.budget.in_use() as u64));
        gauges.budget_bytes.set(gauge(self.budget.bytes() as u64));
        let mut families: Vec<MetricFamily> = gauges
            .collectors()
            .iter()
            .flat_map(|c| c.collect())
            .collect();
        families.push(fsync_family());
        families
    }
}

/// Storage's fsync histogram as a Prometheus histogram.
fn fsync_family() -> MetricFamily {
    let times = crate::storage::sync_times();
    let mut histogram = pm::Histogram::default();
    histogram.set_sample_count(times.count);
    histogram.set_sample_sum(times.sum.as_secs_f64());
    histogram.set_bucket(
        crate::storage::SYNC_BUCKETS_SECONDS
            .iter()
            .zip(times.cumulative)
            .map(|(&bound, count)| {
                let mut bucket = pm::Bucket::default();
                bucket.set_upper_bound(bound);
                bucket.set_cumulative_count(count);
                bucket
            })
            .collect(),
    );
    let mut metric = pm::Metric::default();
    metric.set_histogram(histogram);
    let mut family = MetricFamily::default();
    family.set_name(FSYNC_NAME.to_owned());
    family.set_help(FSYNC_HELP.to_owned());
    family.set_field_type(pm::MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}

/// Serves `GET /metrics` on `listener` until `shutdown`.
pub(super) async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: super::Shutdown,
) {
    use axum::{Router, http::header, routing::get};
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                // Reading every partition's stats takes their locks: off the runtime's workers.
                let text = tokio::task::spawn_blocking(move || metrics.render())
                    .await
                    .unwrap_or_default();
                ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], text)
            }
        }),
    );
    let stop = async move {
        let _ = shutdown.wait_for(|&stopping| stopping).await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await
    {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
