//! `Producer`: batches records per partition and sends encoded batches, one request in flight per
//! partition and every partition concurrently.
//!
//! A record goes into its partition's open batch (a [`BatchBuilder`]). The batch is sealed when it
//! reaches `max_batch_bytes`, when it has waited `linger`, or on [`Producer::flush`]. Each
//! partition has at most one produce request in flight, which keeps its records in the order they
//! were sent; what accumulates meanwhile goes out in the next request, several batches at once,
//! so a slow fsync makes requests larger rather than the producer slower. Partitions send
//! concurrently over the one HTTP/2 connection.
//!
//! Idempotent by default: the producer gets an id from the broker ([`ProducerConfig::idempotent`])
//! and stamps each batch, as it goes out, with the partition's next sequence number. A request
//! that fails in a way a retry may cure (the broker restarting, a dropped connection) is sent
//! again, the same bytes, with backoff, until [`ProducerConfig::delivery_timeout`]: the broker
//! appends a batch it already has no second time, and answers with the offsets it got first. Once
//! a request fails for good, the partition's epoch moves on (its sequences start at 0 again), so
//! that the batches after it are not refused for the gap.

use super::{
    Channel, ClientError, ConnectOptions,
    leaders::{Leaders, Resend},
    raw,
};
use crate::proto::{self, strata_client::StrataClient};
use crate::record::{
    BATCH_HEADER_BYTES, BatchBuilder, BatchHeader, ProducerStamp, RECORD_OVERHEAD_BYTES,
    partition_for_key,
};
use bytes::{Bytes, BytesMut};
use std::{
    collections::VecDeque,
    future::{Future, IntoFuture},
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Semaphore, SetOnce};

/// How a [`Producer`] batches and how much it may hold.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// How long a batch waits for more records before it is sent. Zero: as soon as the
    /// partition has no request in flight.
    pub linger: Duration,
    /// A batch is sent once it holds this many bytes (header included). A record must fit in
    /// one batch.
    pub max_batch_bytes: usize,
    /// The most bytes of batches one produce request carries (below the broker's
    /// `max_request_bytes`, 64 MiB by default).
    pub max_request_bytes: usize,
    /// The most bytes of records sent but not yet acknowledged; [`Producer::send`] waits for
    /// room beyond that. At least `max_batch_bytes`.
    pub max_buffered_bytes: usize,
    /// Stamp batches with a producer id and sequence numbers, so that the retries below never
    /// append a record twice. Off: no retries either (each record is sent at most once).
    pub idempotent: bool,
    /// How long a batch may take from its first send to an answer, retries included (each
    /// attempt ends by then too); a batch that fails transiently is retried until then (Kafka's
    /// `delivery.timeout.ms`).
    pub delivery_timeout: Duration,
    /// The first wait before a retry; it doubles up to [`MAX_RETRY_BACKOFF`].
    pub retry_backoff: Duration,
    /// The most times a request is sent again (Kafka's `retries`); the delivery timeout ends
    /// the retries first unless this is lower. 0: never again.
    pub max_retries: u32,
    /// How to reach the other brokers of a cluster (TLS material, token), when a partition's
    /// leader is another broker than the one the producer was given.
    pub connect: ConnectOptions,
}

/// The longest wait between two retries of a request.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(1);

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(2),
            max_batch_bytes: 1024 * 1024,
            max_request_bytes: 16 * 1024 * 1024,
            max_buffered_bytes: 64 * 1024 * 1024,
            idempotent: true,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            max_retries: u32::MAX,
            connect: ConnectOptions::default(),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Optional key: records with the same key go to the same partition (unless `partition` is
    /// set), by the broker's partitioner.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Application headers, in order; names may repeat.
    pub headers: Vec<(String, Bytes)>,
    /// Milliseconds since the Unix epoch; `None`: the producer's clock when it is sent.
    pub timestamp_ms: Option<i64>,
    /// The partition; `None`: by key, or (keyless) the partition the producer is filling.
    pub partition: Option<u32>,
}

impl ProducerRecord {
    /// A keyless record with this value.
    pub fn new(value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: value.into(),
            ..ProducerRecord::default()
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends to this partition, whatever the key.
    #[must_use]
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the Unix epoch).
    #[must_use]
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Bytes the record takes in a batch.
    pub fn encoded_len(&self) -> usize {
        RECORD_OVERHEAD_BYTES
            + self.key.as_ref().map_or(0, Bytes::len)
            + self.value.len()
            + self
                .headers
                .iter()
                .map(|(n, v)| 6 + n.len() + v.len())
                .sum::<usize>()
    }
}

/// Where an acknowledged record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct RecordMetadata {
    /// The partition.
    pub partition: u32,
    /// The record's offset in it.
    pub offset: u64,
}

/// The pending outcome of one sent record: await it (or call [`Delivery::wait`]) for its
/// offset, once the broker has acknowledged it as durably as the topic's fsync policy says.
#[derive(Debug)]
pub struct Delivery {
    slot: Arc<Slot>,
    partition: u32,
    index: u32,
}

impl Delivery {
    /// The partition the record was routed to.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Waits for the broker's acknowledgement of the record's batch.
    pub async fn wait(self) -> Result<RecordMetadata, ClientError> {
        let base = self.slot.result.wait().await.clone()?;
        Ok(RecordMetadata {
            partition: self.partition,
            offset: base + u64::from(self.index),
        })
    }
}

impl IntoFuture for Delivery {
    type Output = Result<RecordMetadata, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.wait())
    }
}

/// The outcome of one batch: its base offset, or why it failed.
#[derive(Debug, Default)]
struct Slot {
    result: SetOnce<Result<u64, ClientError>>,
}

impl Slot {
    fn set(&self, result: Result<u64, ClientError>) {
        // Each batch is answered once, by the one request that carried it.
        let _ = self.result.set(result);
    }
}

/// A producer bound to one topic. Cheap to clone: clones share batches and connection.
///
/// Records are sent only by the runtime the producer was created on; call [`Producer::flush`]
/// (or [`Producer::close`]) before the program exits so that nothing is left in a batch.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    client: StrataClient<Channel>,
    /// Where each partition's requests go: the given broker, or the partition's leader.
    leaders: Leaders,
    topic: String,
    partitions: u32,
    config: ProducerConfig,
    queues: Vec<Mutex<Queue>>,
    /// Permits are bytes of records sent but not yet acknowledged.
    buffer: Semaphore,
    /// The partition keyless records fill, until its batch is full.
    sticky: AtomicU32,
    closed: AtomicBool,
}

/// An idempotent producer's identity in one partition: the epoch moves on (and the sequences
/// start again) after a request failed for good.
#[derive(Debug, Clone, Copy)]
struct Identity {
    producer_id: u64,
    epoch: u16,
    next_sequence: u32,
}

impl Identity {
    /// A new producer id from the broker, at its first sequence.
    async fn fresh(client: &mut StrataClient<Channel>) -> Result<Identity, tonic::Status> {
        let r = client
            .init_producer(proto::InitProducerRequest::default())
            .await?
            .into_inner();
        Ok(Identity {
            producer_id: r.producer_id,
            epoch: u16::try_from(r.producer_epoch).unwrap_or(0),
            next_sequence: 0,
        })
    }
}

#[derive(Debug, Default)]
struct Queue {
    open: Option<OpenBatch>,
    sealed: VecDeque<SealedBatch>,
    /// A request for this partition is in flight (its drain task runs).
    sending: bool,
    /// The newest batch's outcome: when it is set, every earlier batch's is too.
    newest: Option<Arc<Slot>>,
    next_id: u64,
    /// `None`: not idempotent.
    identity: Option<Identity>,
}

#[derive(Debug)]
struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    slot: Arc<Slot>,
    opened: Instant,
    permits: usize,
}

#[derive(Debug)]
struct SealedBatch {
    body: Sealed,
    slot: Arc<Slot>,
    permits: usize,
}

/// A batch waiting to be sent.
#[derive(Debug)]
enum Sealed {
    /// Records to be finished (stamped with the producer's sequence) as they go out.
    Records(BatchBuilder),
    /// Bytes encoded by the caller ([`Producer::send_batch`]), sent as they are.
    Encoded(Bytes),
}

impl Sealed {
    fn len(&self) -> usize {
        match self {
            Sealed::Records(b) => b.encoded_len(),
            Sealed::Encoded(b) => b.len(),
        }
    }
}

impl Producer {
    /// A producer for `topic` over `channel`. Reads the topic's partition count once, so the
    /// topic must exist (NOT_FOUND otherwise).
    pub async fn new(
        channel: Channel,
        topic: &str,
        config: ProducerConfig,
    ) -> Result<Producer, ClientError> {
        let mut client = raw(channel);
        let described = client
            .describe_topic(proto::DescribeTopicRequest {
                name: topic.to_string(),
            })
            .await?
            .into_inner();
        let partitions = described
            .topic
            .map_or(described.partitions.len() as u32, |t| t.partitions)
            .max(1);
        let mut config = config;
        config.max_batch_bytes = config.max_batch_bytes.max(BATCH_HEADER_BYTES + 1);
        config.max_buffered_bytes = config.max_buffered_bytes.max(config.max_batch_bytes);
        config.max_request_bytes = config.max_request_bytes.max(config.max_batch_bytes);
        let buffer = Semaphore::new(config.max_buffered_bytes.min(Semaphore::MAX_PERMITS));
        let identity = if config.idempotent {
            match Identity::fresh(&mut client).await {
                Ok(identity) => Some(identity),
                Err(s) if s.code() == tonic::Code::Unimplemented => {
                    tracing::warn!("the broker has no idempotent producers: sending without");
                    config.idempotent = false;
                    None
                }
                Err(s) => return Err(s.into()),
            }
        } else {
            None
        };
        let leaders = Leaders::new(topic, client.clone(), config.connect.clone());
        leaders.learn().await;
        Ok(Producer {
            inner: Arc::new(Inner {
                client,
                leaders,
                topic: topic.to_string(),
                partitions,
                config,
                queues: (0..partitions)
                    .map(|_| {
                        Mutex::new(Queue {
                            identity,
                            ..Queue::default()
                        })
                    })
                    .collect(),
                buffer,
                sticky: AtomicU32::new(0),
                closed: AtomicBool::new(false),
            }),
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The topic's partition count.
    pub fn partitions(&self) -> u32 {
        self.inner.partitions
    }

    /// Adds a record to its partition's batch. Waits only while `max_buffered_bytes` are
    /// unacknowledged; the returned [`Delivery`] resolves once the batch is acknowledged.
    pub async fn send(&self, record: ProducerRecord) -> Result<Delivery, ClientError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        let len = record.encoded_len();
        if len + BATCH_HEADER_BYTES > inner.config.max_batch_bytes {
            return Err(ClientError::RecordTooLarge {
                bytes: len,
                max: inner.config.max_batch_bytes - BATCH_HEADER_BYTES,
            });
        }
        let partition = inner.route(&record)?;
        let wanted = u32::try_from(len).unwrap_or(u32::MAX);
        inner
            .buffer
            .acquire_many(wanted)
            .await
            .map_err(|_| ClientError::Closed)?
            .forget();
        Ok(inner.enqueue(partition, &record, wanted as usize))
    }

    /// Sends `batch`, one record batch already encoded (with [`BatchBuilder`]), to `partition`,
    /// after everything sent to that partition before. The path for tools that encode ahead of
    /// time (the bench); the broker checks the batch's CRC as it checks every batch. The
    /// [`Delivery`] resolves to the batch's first offset. The batch is sent as it is: unless the
    /// caller stamped it with a producer of its own, it is not idempotent, and not retried.
    pub async fn send_batch(&self, partition: u32, batch: Bytes) -> Result<Delivery, ClientError> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if partition >= inner.partitions {
            return Err(ClientError::NoSuchPartition {
                topic: inner.topic.clone(),
                partition,
                partitions: inner.partitions,
            });
        }
        match BatchHeader::parse(&batch) {
            Some(h) if h.length as usize == batch.len() => {}
            Some(h) => {
                return Err(ClientError::BadBatch {
                    reason: format!("its header says {} bytes, {} given", h.length, batch.len()),
                });
            }
            None => {
                return Err(ClientError::BadBatch {
                    reason: format!("{} bytes are too few for a batch header", batch.len()),
                });
            }
        }
        // The header's length is a u32, so the batch's length is one too.
        let permits = u32::try_from(batch.len()).unwrap_or(u32::MAX);
        let max = inner
            .config
            .max_request_bytes
            .min(inner.config.max_buffered_bytes);
        if batch.len() > max {
            return Err(ClientError::BadBatch {
                reason: format!(
                    "{} bytes are more than the producer sends at once (max_request_bytes and \
                     max_buffered_bytes: {max})",
                    batch.len()
                ),
            });
        }
        inner
            .buffer
            .acquire_many(permits)
            .await
            .map_err(|_| ClientError::Closed)?
            .forget();
        let slot = Arc::<Slot>::default();
        let start = {
            let mut q = inner.queue(partition);
            // Records batched before it go first.
            q.seal();
            q.newest = Some(slot.clone());
            q.sealed.push_back(SealedBatch {
                body: Sealed::Encoded(batch),
                slot: slot.clone(),
                permits: permits as usize,
            });
            q.start_sending()
        };
        if start {
            inner.spawn_drain(partition);
        }
        Ok(Delivery {
            slot,
            partition,
            index: 0,
        })
    }

    /// Sends everything batched so far and waits until the broker has answered for every record
    /// sent before this call. Failures are reported by each record's [`Delivery`].
    pub async fn flush(&self) {
        let inner = &self.inner;
        let mut newest = Vec::new();
        for partition in 0..inner.partitions {
            let start = {
                let mut q = inner.queue(partition);
                q.seal();
                newest.extend(q.newest.clone());
                q.start_sending()
            };
            if start {
                inner.spawn_drain(partition);
            }
        }
        for slot in newest {
            slot.result.wait().await;
        }
    }

    /// Flushes, then refuses further sends (on every clone).
    pub async fn close(&self) {
        self.flush().await;
        self.inner.closed.store(true, Ordering::Release);
    }
}

impl Queue {
    /// Seals the open batch, if any.
    fn seal(&mut self) {
        if let Some(open) = self.open.take() {
            self.sealed.push_back(SealedBatch {
                body: Sealed::Records(open.builder),
                slot: open.slot,
                permits: open.permits,
            });
        }
    }

    /// True when a drain task must be started (and marks one as running).
    fn start_sending(&mut self) -> bool {
        let start = !self.sending && !self.sealed.is_empty();
        self.sending |= start;
        start
    }
}

impl Inner {
    fn queue(&self, partition: u32) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue consistent (each step is one push or
        // take), so a poisoned lock is used as it is.
        self.queues[partition as usize]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn route(&self, record: &ProducerRecord) -> Result<u32, ClientError> {
        match (record.partition, &record.key) {
            (Some(p), _) if p < self.partitions => Ok(p),
            (Some(p), _) => Err(ClientError::NoSuchPartition {
                topic: self.topic.clone(),
                partition: p,
                partitions: self.partitions,
            }),
            (None, Some(key)) => Ok(partition_for_key(key, self.partitions)),
            (None, None) => Ok(self.sticky.load(Ordering::Relaxed) % self.partitions),
        }
    }

    fn enqueue(self: &Arc<Self>, partition: u32, record: &ProducerRecord, len: usize) -> Delivery {
        let max = self.config.max_batch_bytes;
        let linger = self.config.linger;
        let mut guard = self.queue(partition);
        let q = &mut *guard;
        if q.open
            .as_ref()
            .is_some_and(|o| o.builder.encoded_len() + len > max)
        {
            q.seal();
            self.next_sticky(partition);
        }
        // A new batch gets an id, by which its linger timer knows whether it is still open.
        let mut new_batch = None;
        let open = match &mut q.open {
            Some(open) => open,
            empty @ None => {
                let id = q.next_id;
                q.next_id += 1;
                new_batch = Some(id);
                let slot = Arc::<Slot>::default();
                q.newest = Some(slot.clone());
                empty.insert(OpenBatch {
                    id,
                    builder: BatchBuilder::with_capacity(max.min(64 * 1024)),
                    slot,
                    opened: Instant::now(),
                    permits: 0,
                })
            }
        };
        let index = open.builder.len();
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(crate::record::now_ms);
        open.builder.push_parts(
            timestamp_ms,
            record.key.as_deref(),
            &record.value,
            record
                .headers
                .iter()
                .map(|(n, v)| (n.as_bytes(), v.as_ref())),
        );
        open.permits += len;
        let delivery = Delivery {
            slot: open.slot.clone(),
            partition,
            index,
        };
        if open.builder.encoded_len() >= max {
            q.seal();
            self.next_sticky(partition);
        } else if linger.is_zero() && !q.sending {
            q.seal();
        }
        let start = q.start_sending();
        let still_open = q.open.is_some();
        drop(guard);
        if let Some(id) = new_batch.filter(|_| still_open && !linger.is_zero()) {
            self.arm_linger(partition, id);
        }
        if start {
            self.spawn_drain(partition);
        }
        delivery
    }

    /// Keyless records move on to the next partition once the current one's batch is full.
    fn next_sticky(&self, partition: u32) {
        let next = (partition + 1) % self.partitions;
        let _ = self
            .sticky
            .compare_exchange(partition, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn arm_linger(self: &Arc<Self>, partition: u32, id: u64) {
        let inner = Arc::clone(self);
        tokio::spawn(async move {
            tokio::time::sleep(inner.config.linger).await;
            let start = {
                let mut q = inner.queue(partition);
                // While a request is in flight the batch keeps growing; the drain task takes it.
                if q.open.as_ref().is_some_and(|o| o.id == id) && !q.sending {
                    q.seal();
                }
                q.start_sending()
            };
            if start {
                inner.spawn_drain(partition);
            }
        });
    }

    fn spawn_drain(self: &Arc<Self>, partition: u32) {
        tokio::spawn(Arc::clone(self).drain(partition));
    }

    /// Sends the partition's sealed batches, a request at a time, until none is left.
    async fn drain(self: Arc<Self>, partition: u32) {
        let mut client = self.client.clone();
        loop {
            let (batches, body, stamped) = {
                let mut q = self.queue(partition);
                if q.open
                    .as_ref()
                    .is_some_and(|o| o.opened.elapsed() >= self.config.linger)
                {
                    q.seal();
                }
                let mut taken = Vec::new();
                let mut bytes = 0;
                while let Some(next) = q.sealed.front() {
                    if !taken.is_empty() && bytes + next.body.len() > self.config.max_request_bytes
                    {
                        break;
                    }
                    bytes += next.body.len();
                    taken.extend(q.sealed.pop_front());
                }
                if taken.is_empty() {
                    q.sending = false;
                    return;
                }
                let (body, stamped) = encode_request(&mut taken, &mut q.identity);
                (taken, body, stamped)
            };
            let result = self.send_with_retries(partition, body, stamped).await;
            match result {
                Ok(results) => {
                    for (i, batch) in batches.iter().enumerate() {
                        batch
                            .slot
                            .set(results.get(i).map(|r| r.base_offset).ok_or_else(|| {
                                ClientError::Status(tonic::Status::internal(format!(
                                    "the broker acknowledged {} batches of the {} sent",
                                    results.len(),
                                    batches.len()
                                )))
                            }));
                    }
                }
                Err(err) => {
                    // Stamped batches in it may or may not be appended.
                    self.next_epoch(&mut client, partition).await;
                    for batch in &batches {
                        batch.slot.set(Err(err.clone()));
                    }
                }
            }
            let permits: usize = batches.iter().map(|b| b.permits).sum();
            self.buffer.add_permits(permits);
        }
    }

    /// Sends one request; a stamped one is sent again after a transient failure, with backoff,
    /// until the delivery timeout.
    async fn send_with_retries(
        &self,
        partition: u32,
        body: Bytes,
        stamped: bool,
    ) -> Result<Vec<proto::ProduceResult>, ClientError> {
        let deadline = Instant::now() + self.config.delivery_timeout;
        let mut backoff = self.config.retry_backoff.max(Duration::from_millis(1));
        let mut attempt = 0u32;
        loop {
            let request = proto::ProduceRequest {
                topic: self.topic.clone(),
                partition: Some(partition),
                records: Vec::new(),
                batch: body.clone(),
            };
            // Each attempt ends by the deadline too: a connection that went silent (a half-open
            // socket) must not hold the partition past it.
            let left = deadline.saturating_duration_since(Instant::now());
            let mut routed = self.leaders.client(partition);
            let err = match tokio::time::timeout(left, routed.produce(request)).await {
                Ok(Ok(resp)) => return Ok(resp.into_inner().results),
                Ok(Err(status)) => ClientError::Status(status),
                Err(_) => ClientError::Status(tonic::Status::deadline_exceeded(format!(
                    "no answer from the broker within the delivery timeout of {:?}",
                    self.config.delivery_timeout
                ))),
            };
            attempt += 1;
            // A replica that does not lead the partition stored nothing: go to the leader,
            // stamped or not. A broker gone: find who leads now, then retry as below.
            let resend = match &err {
                ClientError::Status(status) => self.leaders.redirect(partition, status).await,
                _ => Resend::IfSafe,
            };
            if resend != Resend::IfSafe
                && attempt <= self.config.max_retries
                && Instant::now() + backoff < deadline
            {
                tracing::debug!(partition, attempt, error = %err, "not the leader; sending to the leader");
                if resend == Resend::AfterBackoff {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
                }
                continue;
            }
            if !stamped
                || !err.is_transient()
                || attempt > self.config.max_retries
                || Instant::now() + backoff >= deadline
            {
                return Err(err);
            }
            tracing::debug!(partition, attempt, error = %err, "produce failed; retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_RETRY_BACKOFF);
        }
    }

    /// After a stamped request failed for good (its batches may or may not be appended), the
    /// partition goes on at the next epoch, whose sequences start at 0: the broker then neither
    /// refuses the next batch for a gap nor takes a late copy of the failed one (its epoch is
    /// fenced). Past the last epoch, a new producer id.
    async fn next_epoch(&self, client: &mut StrataClient<Channel>, partition: u32) {
        let exhausted = {
            let mut q = self.queue(partition);
            match &mut q.identity {
                Some(id) if id.epoch < u16::MAX => {
                    id.epoch += 1;
                    id.next_sequence = 0;
                    false
                }
                Some(_) => true,
                None => false,
            }
        };
        if exhausted {
            let fresh = Identity::fresh(client).await;
            let mut q = self.queue(partition);
            q.identity = match fresh {
                Ok(identity) => Some(identity),
                Err(e) => {
                    tracing::warn!(partition, error = %e,
                        "no new producer id: the partition's batches go on without one");
                    None
                }
            };
        }
    }
}

/// Finishes the request's batches, stamping record batches with the partition's next sequences
/// (a new epoch when the sequences would run past a u32), and lays them back to back; one batch
/// goes without a copy. Returns the body and whether every batch in it is stamped.
fn encode_request(batches: &mut [SealedBatch], identity: &mut Option<Identity>) -> (Bytes, bool) {
    let mut stamped = identity.is_some();
    for batch in batches.iter_mut() {
        let Sealed::Records(builder) = &mut batch.body else {
            stamped = false;
            continue;
        };
        let builder = std::mem::take(builder);
        let count = builder.len();
        if identity
            .as_ref()
            .is_some_and(|id| id.next_sequence.checked_add(count).is_none() && id.epoch == u16::MAX)
        {
            // 2^48 records from one producer id in one partition: its stamps are used up.
            tracing::warn!("producer id exhausted in a partition: sending without one from now");
            *identity = None;
            stamped = false;
        }
        let stamp = identity.as_mut().map(|id| {
            if id.next_sequence.checked_add(count).is_none() {
                id.epoch += 1;
                id.next_sequence = 0;
            }
            let stamp = ProducerStamp {
                producer_id: id.producer_id,
                epoch: id.epoch,
                base_sequence: id.next_sequence,
            };
            id.next_sequence = id.next_sequence.saturating_add(count);
            stamp
        });
        batch.body = Sealed::Encoded(Bytes::from(builder.finish_stamped(0, stamp)));
    }
    let encoded = |b: &SealedBatch| match &b.body {
        Sealed::Encoded(bytes) => bytes.clone(),
        Sealed::Records(_) => Bytes::new(),
    };
    if let [one] = batches {
        return (encoded(one), stamped);
    }
    let mut body = BytesMut::with_capacity(batches.iter().map(|b| b.body.len()).sum());
    for b in batches.iter() {
        body.extend_from_slice(&encoded(b));
    }
    (body.freeze(), stamped)
}
