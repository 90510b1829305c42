//! `Consumer`: follows a topic's partitions through push subscriptions and owns its position in
//! each.
//!
//! The position of a partition is the offset of the next record to hand out; it moves as records
//! are returned, not as they arrive. Each partition has its own `Subscribe` stream starting at the
//! position (all streams share the one HTTP/2 connection), so a seek reopens one stream and
//! nothing else. Every batch is CRC-checked as it is decoded; records are slices of the received
//! buffer, not copies. A consumer in a group starts at the group's committed offsets and commits
//! its positions on [`Consumer::commit`] or on an interval.

use super::{Channel, ClientError, member::Member, raw};
use crate::proto::{
    self, StartPosition, SubscribeResponse, start_position::Position, strata_client::StrataClient,
};
use crate::record::{Corruption, Frame, decode_frame};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::{
    collections::{BTreeMap, VecDeque},
    pin::Pin,
    time::Duration,
};
use tokio::time::Instant;
use tokio_stream::StreamMap;

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seek {
    /// This offset (it must lie between the partition's earliest and next offsets).
    Offset(u64),
    /// The earliest offset still stored.
    Earliest,
    /// The partition's next offset: only records appended from now on.
    Latest,
    /// The first record with a timestamp at or after this (ms since the Unix epoch); latest if
    /// there is none.
    Timestamp(i64),
}

impl Seek {
    /// The position in a request's terms.
    pub(super) fn start_position(self) -> StartPosition {
        let position = match self {
            Seek::Offset(offset) => Position::Offset(offset),
            Seek::Earliest => Position::Earliest(proto::Empty {}),
            Seek::Latest => Position::Latest(proto::Empty {}),
            Seek::Timestamp(ts) => Position::TimestampMs(ts),
        };
        StartPosition {
            position: Some(position),
        }
    }
}

/// What a [`Consumer`] follows and how it commits.
///
/// With a group and no explicit partitions the consumer is a *member* of the group: the broker
/// assigns it a share of the topic's partitions, and moves them between members as they come
/// and go (see [`Consumer`]).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group whose committed offsets the consumer starts at and commits to.
    pub group: Option<String>,
    /// The partitions to follow; empty: all of the topic's.
    pub partitions: Vec<u32>,
    /// Where to start in a partition the group has no committed offset for (or without a group).
    pub start: Seek,
    /// Commit the positions this often (checked whenever the consumer is used or waits); `None`:
    /// only on [`Consumer::commit`]. Needs a group.
    pub auto_commit: Option<Duration>,
    /// Bytes per pushed message at most (at least one whole batch); 0: the broker's default.
    pub max_bytes: u32,
    /// A static member's instance id (Kafka's `group.instance.id`): the same across restarts
    /// of one instance, so that a quick restart gets its partitions back and nothing moves.
    pub instance_id: Option<String>,
    /// The assignor to ask for (`uniform`, the default, or `range`); the group's first member
    /// decides.
    pub assignor: Option<String>,
    /// How long a partition's subscription may keep failing with transient errors (the broker
    /// restarting, a dropped connection) while the consumer reopens it with backoff, before the
    /// error is returned; `None`: forever; zero: no reconnecting (the first break is returned).
    pub reconnect_for: Option<Duration>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            partitions: Vec::new(),
            start: Seek::Earliest,
            auto_commit: None,
            max_bytes: 0,
            instance_id: None,
            assignor: None,
            reconnect_for: Some(Duration::from_secs(60)),
        }
    }
}

impl ConsumerConfig {
    /// A member of `group` that commits every second and starts at the earliest offset where the
    /// group has committed nothing.
    pub fn group(group: impl Into<String>) -> Self {
        ConsumerConfig {
            group: Some(group.into()),
            auto_commit: Some(Duration::from_secs(1)),
            ..ConsumerConfig::default()
        }
    }

    /// Follows only these partitions, chosen by the caller: the consumer is then no member of
    /// its group (it commits without membership, which the broker refuses while the group has
    /// members).
    #[must_use]
    pub fn partitions(mut self, partitions: Vec<u32>) -> Self {
        self.partitions = partitions;
        self
    }

    /// Sets where to start without a committed offset.
    #[must_use]
    pub fn start(mut self, start: Seek) -> Self {
        self.start = start;
        self
    }

    /// Sets how long a broken subscription is reopened before its error is returned (`None`:
    /// forever; zero: not at all).
    #[must_use]
    pub fn reconnect_for(mut self, limit: Option<Duration>) -> Self {
        self.reconnect_for = limit;
        self
    }

    /// Makes the member static, with this instance id.
    #[must_use]
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the auto-commit interval (`None`: commit only on [`Consumer::commit`]).
    #[must_use]
    pub fn auto_commit(mut self, every: Option<Duration>) -> Self {
        self.auto_commit = every;
        self
    }
}

/// A record as consumed. Key, value and header values share the received buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// The partition.
    pub partition: u32,
    /// The record's offset.
    pub offset: u64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key, if any.
    pub key: Option<Bytes>,
    /// The payload.
    pub value: Bytes,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
}

type Subscription =
    Pin<Box<dyn Stream<Item = Option<Result<SubscribeResponse, tonic::Status>>> + Send>>;

/// Follows one topic. Not `Clone`: a consumer is the one owner of its positions.
pub struct Consumer {
    client: StrataClient<Channel>,
    topic: String,
    config: ConsumerConfig,
    /// Next offset to hand out, per followed partition.
    positions: BTreeMap<u32, u64>,
    /// The partition's next offset as last seen.
    high_watermarks: BTreeMap<u32, u64>,
    /// What the group has committed, as far as this consumer knows.
    committed: BTreeMap<u32, u64>,
    /// Per partition: a stream of pushed messages, then `None` when the broker ends it.
    streams: StreamMap<u32, Subscription>,
    /// Decoded records not yet handed out, in arrival order.
    buffered: VecDeque<ConsumerRecord>,
    /// A subscription's error or end that arrived while a call was waiting; reported next.
    deferred: VecDeque<(u32, ClientError)>,
    next_commit: Option<Instant>,
    /// The group membership, for a member (see [`ConsumerConfig`]).
    member: Option<Member>,
    /// Partitions whose subscription broke on a transient error, to reopen at their position.
    reopening: BTreeMap<u32, Reopen>,
    /// A reconcile that failed on a transient error is tried again then.
    reconcile_retry: Option<Instant>,
}

/// A subscription to reopen.
#[derive(Debug)]
struct Reopen {
    due: Instant,
    backoff: Duration,
    /// When it first broke.
    since: Instant,
    last: ClientError,
}

/// The first wait before reopening a broken subscription, and the longest.
const REOPEN_FIRST: Duration = Duration::from_millis(50);
const REOPEN_MAX: Duration = Duration::from_secs(2);

impl std::fmt::Debug for Consumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("topic", &self.topic)
            .field("group", &self.config.group)
            .field("positions", &self.positions)
            .finish_non_exhaustive()
    }
}

impl Consumer {
    /// Starts following `topic`: at the group's committed offsets (clamped to what is still
    /// stored), else at `config.start`.
    pub async fn new(
        channel: Channel,
        topic: &str,
        config: ConsumerConfig,
    ) -> Result<Consumer, ClientError> {
        let member = match (&config.group, config.partitions.is_empty()) {
            (Some(group), true) => Some(
                Member::join(
                    channel.clone(),
                    group,
                    topic,
                    config.instance_id.as_deref(),
                    config.assignor.as_deref(),
                )
                .await?,
            ),
            _ => None,
        };
        let mut consumer = Consumer {
            client: raw(channel),
            topic: topic.to_string(),
            next_commit: config.auto_commit.map(|every| Instant::now() + every),
            config,
            positions: BTreeMap::new(),
            high_watermarks: BTreeMap::new(),
            committed: BTreeMap::new(),
            streams: StreamMap::new(),
            buffered: VecDeque::new(),
            deferred: VecDeque::new(),
            member,
            reopening: BTreeMap::new(),
            reconcile_retry: None,
        };
        if consumer.member.is_some() {
            consumer.reconcile().await?;
        } else {
            let wanted = consumer.config.partitions.clone();
            consumer.follow(&wanted).await?;
        }
        Ok(consumer)
    }

    /// Starts following `wanted` (all the topic's partitions if empty): at the group's committed
    /// offsets (clamped to what is still stored), else at `config.start`.
    async fn follow(&mut self, wanted: &[u32]) -> Result<(), ClientError> {
        let mut client = self.client.clone();
        let describing = client.describe_topic(proto::DescribeTopicRequest {
            name: self.topic.clone(),
        });
        let described = self.receiving_while(describing).await?.into_inner();
        let all: BTreeMap<u32, proto::PartitionInfo> = described
            .partitions
            .into_iter()
            .map(|p| (p.partition, p))
            .collect();
        let wanted: Vec<u32> = if wanted.is_empty() {
            all.keys().copied().collect()
        } else {
            wanted.to_vec()
        };
        if let Some(group) = self.config.group.clone() {
            let mut client = self.client.clone();
            let fetching = client.fetch_committed_offsets(proto::FetchCommittedOffsetsRequest {
                group,
                topic: self.topic.clone(),
            });
            let committed = self.receiving_while(fetching).await?.into_inner();
            for o in committed.offsets {
                if wanted.contains(&o.partition) {
                    self.committed.insert(o.partition, o.offset);
                }
            }
        }
        let mut started = Vec::with_capacity(wanted.len());
        for partition in wanted {
            let Some(info) = all.get(&partition) else {
                return Err(ClientError::NoSuchPartition {
                    topic: self.topic.clone(),
                    partition,
                    partitions: all.len() as u32,
                });
            };
            let position = match self.committed.get(&partition) {
                // Retention may have removed what the group had not read yet.
                Some(&c) => c.clamp(info.earliest_offset, info.next_offset),
                None => {
                    self.resolve(partition, self.config.start, Some(info))
                        .await?
                }
            };
            started.push((partition, position, info.next_offset));
        }
        let opening = futures_util::future::try_join_all(
            started
                .iter()
                .map(|&(p, offset, _)| self.subscribe(p, offset)),
        );
        let opened = self.receiving_while(opening).await?;
        for (partition, position, next) in started {
            self.positions.insert(partition, position);
            self.high_watermarks.insert(partition, next);
        }
        for (partition, stream) in opened {
            self.streams.insert(partition, stream);
        }
        Ok(())
    }

    /// A member acts on its latest assignment: commits and lets go of the partitions it may no
    /// longer own (records received from them and not handed out are dropped: their new owner
    /// reads them from the commit), then follows the new ones, and reports what it holds.
    async fn reconcile(&mut self) -> Result<(), ClientError> {
        let Some(member) = &mut self.member else {
            return Ok(());
        };
        member.changed.borrow_and_update();
        let assigned = member.state().assigned;
        let revoked: Vec<u32> = self
            .positions
            .keys()
            .filter(|p| !assigned.contains(p))
            .copied()
            .collect();
        if !revoked.is_empty() {
            // Committed first, while still held (and still read: the application may go on with
            // them until the commit is through, and what it is handed meanwhile is committed at
            // the next try).
            match self.commit_partitions(&revoked).await {
                Ok(()) => {}
                // Not let go before their positions are committed, or their new owner would
                // read again what this one handed out: tried again shortly.
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "could not commit revoked partitions yet");
                    self.reconcile_retry = Some(Instant::now() + REOPEN_MAX / 4);
                    return Ok(());
                }
                // Refused (fenced): nothing this member commits counts any more.
                Err(e) => tracing::warn!(error = %e, "could not commit revoked partitions"),
            }
            // What was received from them and not handed out is their new owner's to read.
            for &p in &revoked {
                self.streams.remove(&p);
                self.reopening.remove(&p);
                self.forget_received(p);
            }
            for p in &revoked {
                self.positions.remove(p);
                self.high_watermarks.remove(p);
                self.committed.remove(p);
            }
            // Let go of them now, whatever following the new ones does.
            if let Some(member) = &self.member {
                member.set_owned(self.positions.keys().copied().collect(), true);
            }
        }
        let added: Vec<u32> = assigned
            .iter()
            .filter(|p| !self.positions.contains_key(p))
            .copied()
            .collect();
        if !added.is_empty() {
            self.follow(&added).await?;
        }
        if let Some(member) = &self.member {
            member.set_owned(self.positions.keys().copied().collect(), false);
        }
        Ok(())
    }

    /// Commits, then leaves the group (a static member leaves for a moment). Without a group
    /// it does nothing.
    pub async fn close(mut self) -> Result<(), ClientError> {
        let committed = if self.config.group.is_some() {
            self.commit().await
        } else {
            Ok(())
        };
        if let Some(member) = self.member.take() {
            member.leave().await;
        }
        committed
    }

    /// The member id and epoch, for a member.
    pub fn member(&self) -> Option<(String, i64)> {
        self.member.as_ref().map(|m| {
            let s = m.state();
            (s.member_id, s.epoch)
        })
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The group, if any.
    pub fn group(&self) -> Option<&str> {
        self.config.group.as_deref()
    }

    /// The next offset this consumer will hand out in `partition`, if it follows it.
    pub fn position(&self, partition: u32) -> Option<u64> {
        self.positions.get(&partition).copied()
    }

    /// The position in every followed partition.
    pub fn positions(&self) -> &BTreeMap<u32, u64> {
        &self.positions
    }

    /// True when records are received but not yet handed out (the next call will not wait).
    pub fn has_buffered(&self) -> bool {
        !self.buffered.is_empty() || !self.deferred.is_empty()
    }

    /// The partition's next offset as the broker last reported it.
    pub fn high_watermark(&self, partition: u32) -> Option<u64> {
        self.high_watermarks.get(&partition).copied()
    }

    /// The next record, waiting for one if none is buffered. `Ok(None)` once no partition is
    /// followed (every subscription has ended, each end first reported as an error, or every
    /// partition is paused). Commits on the auto-commit interval.
    pub async fn next(&mut self) -> Result<Option<ConsumerRecord>, ClientError> {
        if !self.fill().await? {
            return Ok(None);
        }
        let record = self.buffered.pop_front();
        if let Some(r) = &record {
            self.positions.insert(r.partition, r.offset + 1);
        }
        Ok(record)
    }

    /// The record [`Consumer::next`] would return, without moving the position.
    pub async fn peek(&mut self) -> Result<Option<&ConsumerRecord>, ClientError> {
        if !self.fill().await? {
            return Ok(None);
        }
        Ok(self.buffered.front())
    }

    /// Stops following `partition`: its subscription closes and the records received from it
    /// but not handed out are dropped. Its position stays, and is still committed.
    pub fn pause(&mut self, partition: u32) {
        self.streams.remove(&partition);
        self.reopening.remove(&partition);
        self.forget_received(partition);
    }

    /// Drops what was received from `partition`'s subscription and not handed out yet.
    fn forget_received(&mut self, partition: u32) {
        self.buffered.retain(|r| r.partition != partition);
        self.deferred.retain(|(p, _)| *p != partition);
    }

    /// Follows a paused partition again, from its position.
    pub async fn resume(&mut self, partition: u32) -> Result<(), ClientError> {
        let Some(&position) = self.positions.get(&partition) else {
            return Err(self.no_such_partition(partition));
        };
        if !self.streams.contains_key(&partition) {
            let subscribing = self.subscribe(partition, position);
            let (_, stream) = self.receiving_while(subscribing).await?;
            self.reopening.remove(&partition);
            self.streams.insert(partition, stream);
        }
        Ok(())
    }

    /// Waits until a record is buffered; false when nothing is followed any more.
    async fn fill(&mut self) -> Result<bool, ClientError> {
        loop {
            self.commit_if_due().await?;
            if !self.buffered.is_empty() {
                return Ok(true);
            }
            if let Some((_, error)) = self.deferred.pop_front() {
                return Err(error);
            }
            if self.streams.is_empty() && self.member.is_none() && self.reopening.is_empty() {
                return Ok(false);
            }
            let due = self.next_commit.filter(|_| self.has_uncommitted());
            let reopen = self
                .reopening
                .iter()
                .filter(|(p, _)| !self.streams.contains_key(p))
                .map(|(_, r)| r.due)
                .min();
            let retry = self.reconcile_retry;
            let far = Instant::now() + Duration::from_secs(3600);
            let event = tokio::select! {
                event = self.streams.next(), if !self.streams.is_empty() => event,
                changed = async {
                    match &mut self.member {
                        Some(m) => m.changed.changed().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => {
                    if changed {
                        self.reconcile_or_retry().await?;
                        continue;
                    }
                    // The membership task ended: the group is left.
                    return Ok(false);
                }
                () = tokio::time::sleep_until(due.unwrap_or(far)), if due.is_some() => continue,
                () = tokio::time::sleep_until(reopen.unwrap_or(far)), if reopen.is_some() => {
                    self.reopen_due().await?;
                    continue;
                }
                () = tokio::time::sleep_until(retry.unwrap_or(far)), if retry.is_some() => {
                    self.reconcile_retry = None;
                    self.reconcile_or_retry().await?;
                    continue;
                }
            };
            let Some((partition, event)) = event else {
                return Ok(false);
            };
            self.on_event(partition, event)?;
        }
    }

    /// What one partition's subscription delivered: a message to buffer, or a break (an error,
    /// or its end) that is reopened if transient. The error is the caller's to report.
    fn on_event(
        &mut self,
        partition: u32,
        event: Option<Result<SubscribeResponse, tonic::Status>>,
    ) -> Result<(), ClientError> {
        match event {
            Some(Ok(message)) => self.accept(&message),
            Some(Err(status)) => {
                self.streams.remove(&partition);
                self.broken(partition, ClientError::Status(status))
            }
            None => {
                self.streams.remove(&partition);
                let ended = ClientError::SubscriptionEnded {
                    topic: self.topic.clone(),
                    partition,
                };
                self.broken(partition, ended)
            }
        }
    }

    fn no_such_partition(&self, partition: u32) -> ClientError {
        ClientError::NoSuchPartition {
            topic: self.topic.clone(),
            partition,
            partitions: self.positions.len() as u32,
        }
    }

    /// Waits for at least one record and returns every record already received.
    pub async fn poll(&mut self) -> Result<Vec<ConsumerRecord>, ClientError> {
        let Some(first) = self.next().await? else {
            return Ok(Vec::new());
        };
        let mut records = Vec::with_capacity(1 + self.buffered.len());
        records.push(first);
        while let Some(record) = self.buffered.pop_front() {
            self.positions.insert(record.partition, record.offset + 1);
            records.push(record);
        }
        Ok(records)
    }

    /// The records as a stream; it ends once every subscription has ended.
    pub fn into_stream(self) -> impl Stream<Item = Result<ConsumerRecord, ClientError>> {
        futures_util::stream::unfold(self, |mut consumer| async move {
            match consumer.next().await {
                Ok(Some(record)) => Some((Ok(record), consumer)),
                Ok(None) => None,
                Err(e) => Some((Err(e), consumer)),
            }
        })
    }

    /// Moves the position in `partition`; the next record handed out from it is at the new
    /// position. Records already received from it are dropped; a paused partition is resumed.
    pub async fn seek(&mut self, partition: u32, to: Seek) -> Result<u64, ClientError> {
        if !self.positions.contains_key(&partition) {
            return Err(self.no_such_partition(partition));
        }
        let offset = self.resolve(partition, to, None).await?;
        let subscribing = self.subscribe(partition, offset);
        let (_, stream) = self.receiving_while(subscribing).await?;
        self.forget_received(partition);
        self.reopening.remove(&partition);
        self.streams.insert(partition, stream);
        self.positions.insert(partition, offset);
        Ok(offset)
    }

    /// [`Consumer::seek`] in every followed partition.
    pub async fn seek_all(&mut self, to: Seek) -> Result<(), ClientError> {
        let partitions: Vec<u32> = self.positions.keys().copied().collect();
        for partition in partitions {
            self.seek(partition, to).await?;
        }
        Ok(())
    }

    /// Commits the positions of the partitions that moved since the last commit to the group.
    /// A record handed out is committed; one still buffered is not. A member commits as itself
    /// (its id and epoch); the broker refuses partitions it no longer owns.
    pub async fn commit(&mut self) -> Result<(), ClientError> {
        if self.config.group.is_none() {
            return Err(ClientError::NoGroup);
        }
        if let Some(every) = self.config.auto_commit {
            self.next_commit = Some(Instant::now() + every);
        }
        let partitions: Vec<u32> = self.positions.keys().copied().collect();
        self.commit_partitions(&partitions).await
    }

    /// Commits the positions of `partitions` that moved since their last commit.
    async fn commit_partitions(&mut self, partitions: &[u32]) -> Result<(), ClientError> {
        let Some(group) = self.config.group.clone() else {
            return Err(ClientError::NoGroup);
        };
        let changed: Vec<proto::PartitionOffset> = partitions
            .iter()
            .filter_map(|p| self.positions.get(p).map(|o| (*p, *o)))
            .filter(|(p, o)| self.committed.get(p) != Some(o))
            .map(|(partition, offset)| proto::PartitionOffset {
                topic: self.topic.clone(),
                partition,
                offset,
            })
            .collect();
        if changed.is_empty() {
            return Ok(());
        }
        let (member_id, member_epoch) = self.member().unwrap_or_default();
        let mut client = self.client.clone();
        let committing = client.commit_offsets(proto::CommitOffsetsRequest {
            group,
            offsets: changed.clone(),
            member_id,
            member_epoch,
        });
        self.receiving_while(committing).await?;
        for o in changed {
            self.committed.insert(o.partition, o.offset);
        }
        Ok(())
    }

    fn has_uncommitted(&self) -> bool {
        self.config.group.is_some()
            && self
                .positions
                .iter()
                .any(|(p, o)| self.committed.get(p) != Some(o))
    }

    /// Commits on the auto-commit interval. A transient failure (the broker restarting) waits
    /// for the next interval; what was not committed is committed then.
    async fn commit_if_due(&mut self) -> Result<(), ClientError> {
        match self.next_commit {
            Some(at) if at <= Instant::now() && self.config.group.is_some() => {
                // A member refused (the broker restarted and does not know it yet) waits for its
                // rejoin, which the heartbeat task makes.
                let member = self.member.is_some();
                match self.commit().await {
                    Err(e)
                        if e.is_transient()
                            || (member && e.code() == Some(tonic::Code::FailedPrecondition)) =>
                    {
                        tracing::debug!(error = %e, "auto-commit failed; trying again later");
                        Ok(())
                    }
                    other => other,
                }
            }
            _ => Ok(()),
        }
    }

    /// A partition's subscription broke with `error`: a transient one is reopened with backoff
    /// (at the partition's position: nothing handed out is repeated, nothing is skipped) until
    /// `reconnect_for` has passed; anything else is returned.
    fn broken(&mut self, partition: u32, error: ClientError) -> Result<(), ClientError> {
        if !error.is_transient()
            || !self.positions.contains_key(&partition)
            || self.config.reconnect_for == Some(Duration::ZERO)
        {
            return Err(error);
        }
        let now = Instant::now();
        let give_up = self.config.reconnect_for;
        if let Some(r) = self.reopening.get_mut(&partition) {
            // It broke again before delivering anything: back off further, and give up once it
            // has kept failing for `reconnect_for`.
            if give_up.is_some_and(|d| r.since.elapsed() >= d) {
                self.reopening.remove(&partition);
                return Err(error);
            }
            r.backoff = (r.backoff * 2).min(REOPEN_MAX);
            r.due = now + r.backoff;
            r.last = error;
            return Ok(());
        }
        self.reopening.insert(
            partition,
            Reopen {
                due: now + REOPEN_FIRST,
                backoff: REOPEN_FIRST,
                since: now,
                last: error,
            },
        );
        Ok(())
    }

    /// Reopens the broken subscriptions that are due.
    async fn reopen_due(&mut self) -> Result<(), ClientError> {
        let now = Instant::now();
        let due: Vec<u32> = self
            .reopening
            .iter()
            .filter(|(p, r)| r.due <= now && !self.streams.contains_key(p))
            .map(|(p, _)| *p)
            .collect();
        for partition in due {
            let Some(&position) = self.positions.get(&partition) else {
                self.reopening.remove(&partition);
                continue;
            };
            let subscribing = self.subscribe(partition, position);
            match self.receiving_while(subscribing).await {
                // Kept in `reopening` until it delivers (see `accept`).
                Ok((_, stream)) => {
                    self.streams.insert(partition, stream);
                }
                Err(e) if e.is_transient() => {
                    let give_up = self.config.reconnect_for;
                    if let Some(r) = self.reopening.get_mut(&partition) {
                        if give_up.is_some_and(|d| r.since.elapsed() >= d) {
                            let last = self.reopening.remove(&partition).map(|r| r.last);
                            return Err(last.unwrap_or(e));
                        }
                        r.backoff = (r.backoff * 2).min(REOPEN_MAX);
                        r.due = Instant::now() + r.backoff;
                        r.last = e;
                    }
                }
                Err(e) => {
                    self.reopening.remove(&partition);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// [`Consumer::reconcile`]; a transient failure (the broker restarting) is tried again
    /// shortly.
    async fn reconcile_or_retry(&mut self) -> Result<(), ClientError> {
        match self.reconcile().await {
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "reconciling the assignment failed; retrying");
                self.reconcile_retry = Some(Instant::now() + REOPEN_MAX / 4);
                Ok(())
            }
            other => other,
        }
    }

    /// The offset a seek lands on. `info` is the partition's state if the caller has it.
    async fn resolve(
        &mut self,
        partition: u32,
        to: Seek,
        info: Option<&proto::PartitionInfo>,
    ) -> Result<u64, ClientError> {
        if let Seek::Offset(offset) = to {
            return Ok(offset);
        }
        if let (Some(info), Seek::Earliest | Seek::Latest) = (info, to) {
            return Ok(if to == Seek::Earliest {
                info.earliest_offset
            } else {
                info.next_offset
            });
        }
        let mut client = self.client.clone();
        let listing = client.list_offsets(proto::ListOffsetsRequest {
            topic: self.topic.clone(),
            partitions: vec![partition],
            position: Some(to.start_position()),
        });
        let resp = self.receiving_while(listing).await?.into_inner();
        resp.partitions
            .first()
            .map(|p| p.offset)
            .ok_or_else(|| self.no_such_partition(partition))
    }

    /// Waits for `call`, a request on the consumer's connection, while still receiving from the
    /// subscriptions. Pushed records and the call's response share the connection's HTTP/2
    /// flow-control window: a consumer that stopped reading while it waited could wait forever,
    /// the window full of unread records and the response queued behind them. What arrives
    /// meanwhile is buffered (a subscription's error or end is reported by the next read).
    async fn receiving_while<T>(&mut self, call: impl Future<Output = T>) -> T {
        let mut call = std::pin::pin!(call);
        loop {
            let (partition, event) = tokio::select! {
                biased;
                done = &mut call => return done,
                Some(event) = self.streams.next(), if !self.streams.is_empty() => event,
            };
            if let Err(e) = self.on_event(partition, event) {
                self.deferred.push_back((partition, e));
            }
        }
    }

    /// Opens the subscription of one partition at `offset`; returns once the broker has resolved
    /// it, so every record appended afterwards will be pushed.
    fn subscribe(
        &self,
        partition: u32,
        offset: u64,
    ) -> impl Future<Output = Result<(u32, Subscription), ClientError>> + use<> {
        let mut client = self.client.clone();
        let request = proto::SubscribeRequest {
            topic: self.topic.clone(),
            partitions: vec![partition],
            start: Some(Seek::Offset(offset).start_position()),
            max_bytes: self.config.max_bytes,
        };
        async move {
            let stream = client.subscribe(request).await?.into_inner();
            let stream: Subscription = Box::pin(
                stream
                    .map(Some)
                    .chain(futures_util::stream::once(async { None })),
            );
            Ok((partition, stream))
        }
    }

    /// Decodes a pushed message into the buffer, checking every batch's CRC and skipping records
    /// below the partition's position.
    fn accept(&mut self, message: &SubscribeResponse) -> Result<(), ClientError> {
        let partition = message.partition;
        // A reopened subscription is whole again once it delivers.
        self.reopening.remove(&partition);
        let Some(&position) = self.positions.get(&partition) else {
            return Ok(());
        };
        // Records already buffered for the partition come before this message's.
        let from = self
            .buffered
            .iter()
            .rev()
            .find(|r| r.partition == partition)
            .map_or(position, |r| r.offset + 1);
        self.high_watermarks
            .insert(partition, message.high_watermark);
        let buf = &message.batches;
        let mut at = 0;
        while at < buf.len() {
            let batch = match decode_frame(&buf[at..]) {
                Frame::Batch(batch) => batch,
                other => {
                    return Err(self.corrupt(partition, from, &other));
                }
            };
            at += batch.bytes().len();
            if batch.header().is_control() {
                continue; // the broker's own Raft entry: no record of the topic's
            }
            for record in batch.records() {
                let record = record.map_err(|reason| ClientError::Corrupt {
                    topic: self.topic.clone(),
                    partition,
                    offset: batch.header().base_offset,
                    reason,
                })?;
                if record.offset < from {
                    continue;
                }
                self.buffered.push_back(ConsumerRecord {
                    partition,
                    offset: record.offset,
                    timestamp_ms: record.timestamp_ms,
                    key: record.key.map(|k| buf.slice_ref(k)),
                    value: buf.slice_ref(record.value),
                    headers: record
                        .headers()
                        .map(|(n, v)| (String::from_utf8_lossy(n).into_owned(), buf.slice_ref(v)))
                        .collect(),
                });
            }
        }
        Ok(())
    }

    fn corrupt(&self, partition: u32, offset: u64, frame: &Frame<'_>) -> ClientError {
        let reason = match frame {
            Frame::Corrupt(c) => *c,
            // A message always holds whole batches; a cut or zeroed one is as bad as a bad CRC.
            Frame::Incomplete { .. } | Frame::Zeroed | Frame::Batch(_) => Corruption::BadRecords,
        };
        ClientError::Corrupt {
            topic: self.topic.clone(),
            partition,
            offset,
            reason,
        }
    }
}
