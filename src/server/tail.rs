//! [`Tail`]: "read from here, then wait for more" on one partition, the loop every way of
//! following a partition shares: long-poll Fetch (read until `min_bytes` are there or a deadline)
//! and Subscribe (read, hand the chunk on, advance, forever), and later Server-Sent Events over
//! HTTP.
//!
//! It is its own module, not part of `fetch` or `subscribe`, because it is what they have in
//! common and none of what they do not: it names the broker's [`PartitionHandle`], storage's
//! [`ReadChunk`] and the server's shutdown signal, and no tonic or protobuf type, so another
//! transport can use it as it is (an SSE handler would wrap [`Tail::next`] in a stream). What a
//! transport adds stays with it: the subscription's bounded channel and flow control, the
//! response messages, the status codes.
//!
//! The rules it keeps:
//! - reads run on the blocking pool: the broker is synchronous and may block on disk;
//! - the high-watermark receiver is taken when the tail is made, before its first read, and
//!   marked seen before every read: an append that lands between a read and the wait after it
//!   still wakes the wait, so no record slips through;
//! - a wait ends when the high watermark moves, at the deadline, at shutdown, or when the topic
//!   is deleted (deletion wakes every waiter; the next read then fails with `TopicNotFound`).

use super::{RequestError, Shutdown, blocking};
use crate::broker::PartitionHandle;
use crate::storage::{Offset, ReadChunk};
use tokio::{sync::watch, time::Instant};

/// A position in one partition, and the signals that say when to read it again.
pub(crate) struct Tail {
    handle: PartitionHandle,
    offset: Offset,
    max_bytes: usize,
    high_watermark: watch::Receiver<Offset>,
    shutdown: Shutdown,
}

/// Why a wait ended.
#[derive(Debug, PartialEq, Eq)]
enum Woke {
    /// The high watermark moved, or the topic was deleted: read again.
    Moved,
    /// The deadline passed.
    Deadline,
    /// The server is shutting down.
    Shutdown,
    /// The partition's signal is gone (its topic was dropped): nothing more will come.
    Gone,
}

impl Tail {
    /// Follows `handle` from `offset`, each read carrying at most `max_bytes` (at least one batch).
    /// Subscribes to the high watermark now, before any read.
    pub(crate) fn new(
        handle: PartitionHandle,
        offset: Offset,
        max_bytes: usize,
        shutdown: Shutdown,
    ) -> Tail {
        let high_watermark = handle.watch();
        Tail {
            handle,
            offset,
            max_bytes,
            high_watermark,
            shutdown,
        }
    }

    /// The position: the offset the next read starts at.
    pub(crate) fn offset(&self) -> Offset {
        self.offset
    }

    /// The partition followed.
    pub(crate) fn partition(&self) -> u32 {
        self.handle.partition()
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Reads at the position without moving it. Marks the high watermark seen first, so that an
    /// append from now on wakes the next wait.
    async fn read(&mut self) -> Result<ReadChunk, RequestError> {
        self.high_watermark.borrow_and_update();
        let (handle, offset, max_bytes) = (self.handle.clone(), self.offset, self.max_bytes);
        blocking(move || handle.read(offset, max_bytes)).await
    }

    /// Waits for the high watermark to move, `deadline` (none: no deadline), or shutdown.
    async fn wait(&mut self, deadline: Option<Instant>) -> Woke {
        let deadline = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = self.high_watermark.changed() => {
                if changed.is_ok() { Woke::Moved } else { Woke::Gone }
            }
            () = deadline => Woke::Deadline,
            // The sender's drop also means shutdown.
            _ = self.shutdown.changed() => Woke::Shutdown,
        }
    }

    /// Long-poll: reads at the position until at least `min_bytes` are there, `deadline` passes
    /// or the server shuts down, and returns the last read (short, or empty, unless enough came).
    /// Returns as soon as enough bytes are there. Does not move the position.
    pub(crate) async fn read_at_least(
        &mut self,
        min_bytes: usize,
        deadline: Instant,
    ) -> Result<ReadChunk, RequestError> {
        loop {
            let chunk = self.read().await?;
            if chunk.batches.len() >= min_bytes
                || Instant::now() >= deadline
                || self.shutting_down()
            {
                return Ok(chunk);
            }
            if self.wait(Some(deadline)).await != Woke::Moved {
                return Ok(chunk);
            }
        }
    }

    /// The next chunk from the position, waiting for appends as long as it takes, and moves the
    /// position past it. `None` once the server shuts down.
    pub(crate) async fn next(&mut self) -> Result<Option<ReadChunk>, RequestError> {
        loop {
            if self.shutting_down() {
                return Ok(None);
            }
            let chunk = self.read().await?;
            if !chunk.batches.is_empty() {
                self.offset = chunk.next_offset;
                return Ok(Some(chunk));
            }
            // Caught up.
            match self.wait(None).await {
                Woke::Moved => {}
                Woke::Deadline | Woke::Shutdown | Woke::Gone => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

    use super::*;
    use crate::broker::{Broker, BrokerConfig, BrokerError, FsyncMode, ProduceInput};
    use crate::broker::{TopicConfigUpdate, now_ms};
    use crate::record::Record;
    use std::{sync::Arc, time::Duration};

    struct Fixture {
        broker: Arc<Broker>,
        stop: watch::Sender<bool>,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let broker = Broker::open(BrokerConfig::new(dir.path())).unwrap();
        let update = TopicConfigUpdate {
            fsync: Some(FsyncMode::Never),
            ..TopicConfigUpdate::default()
        };
        broker.create_topic("t", 1, &update).unwrap();
        let (stop, _) = watch::channel(false);
        Fixture {
            broker,
            stop,
            _dir: dir,
        }
    }

    impl Fixture {
        fn tail(&self, offset: Offset, max_bytes: usize) -> Tail {
            let handle = self.broker.partition("t", 0).unwrap();
            Tail::new(handle, offset, max_bytes, self.stop.subscribe())
        }

        fn produce(&self, values: &[&[u8]]) {
            let records = values
                .iter()
                .map(|v| Record {
                    key: None,
                    value: bytes::Bytes::copy_from_slice(v),
                    headers: vec![],
                    timestamp_ms: now_ms(),
                })
                .collect();
            self.broker
                .produce("t", Some(0), ProduceInput::Records(records))
                .unwrap();
        }

        /// Produces after `delay`, from another thread.
        fn produce_later(&self, delay: Duration, value: &'static [u8]) {
            let broker = self.broker.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let record = Record {
                    key: None,
                    value: bytes::Bytes::from_static(value),
                    headers: vec![],
                    timestamp_ms: now_ms(),
                };
                broker
                    .produce("t", Some(0), ProduceInput::Records(vec![record]))
                    .unwrap();
            });
        }
    }

    #[tokio::test]
    async fn an_append_between_a_read_and_the_wait_still_wakes_the_wait() {
        let f = fixture();
        let mut tail = f.tail(0, 1 << 20);
        assert!(tail.read().await.unwrap().batches.is_empty());
        f.produce(&[b"slipped in"]);
        let woke = tokio::time::timeout(Duration::from_secs(10), tail.wait(None)).await;
        assert_eq!(woke.ok(), Some(Woke::Moved), "the append was missed");
    }

    #[tokio::test]
    async fn next_yields_the_backlog_then_waits_for_appends_and_advances() {
        let f = fixture();
        f.produce(&[b"a", b"b"]);
        let mut tail = f.tail(0, 1 << 20);
        let first = tail.next().await.unwrap().unwrap();
        assert_eq!(first.next_offset, 2);
        assert_eq!(tail.offset(), 2);
        assert_eq!(tail.partition(), 0);
        f.produce_later(Duration::from_millis(50), b"c");
        let second = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("woken by the append")
            .unwrap()
            .unwrap();
        assert_eq!(second.next_offset, 3);
        assert_eq!(tail.offset(), 3);
    }

    #[tokio::test]
    async fn a_long_poll_returns_as_soon_as_enough_bytes_are_there() {
        let f = fixture();
        f.produce(&[b"one"]);
        let mut tail = f.tail(0, 1 << 20);
        let have = tail.read().await.unwrap().batches.len();
        f.produce_later(Duration::from_millis(50), b"two");
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        let chunk = tokio::time::timeout(
            Duration::from_secs(20),
            tail.read_at_least(have + 1, deadline),
        )
        .await
        .expect("returned before the deadline")
        .unwrap();
        assert!(chunk.batches.len() > have);
        assert_eq!(chunk.next_offset, 2);
        assert_eq!(tail.offset(), 0, "a long-poll does not move the position");
    }

    #[tokio::test]
    async fn a_long_poll_returns_what_it_has_at_the_deadline() {
        let f = fixture();
        f.produce(&[b"one"]);
        let mut tail = f.tail(0, 1 << 20);
        let started = Instant::now();
        let chunk = tail
            .read_at_least(1 << 20, started + Duration::from_millis(200))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(chunk.next_offset, 1, "the short read is returned");
    }

    #[tokio::test]
    async fn shutdown_ends_a_wait() {
        let f = fixture();
        let mut tail = f.tail(0, 1 << 20);
        let stop = f.stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = stop.send(true);
        });
        let next = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("ended by the shutdown");
        assert!(next.unwrap().is_none());
        let started = Instant::now();
        let chunk = tail
            .read_at_least(1, started + Duration::from_secs(60))
            .await
            .unwrap();
        assert!(chunk.batches.is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "returned at once"
        );
    }

    #[tokio::test]
    async fn deleting_the_topic_ends_a_wait_with_topic_not_found() {
        let f = fixture();
        let mut tail = f.tail(0, 1 << 20);
        let broker = f.broker.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            broker.delete_topic("t").unwrap();
        });
        let next = tokio::time::timeout(Duration::from_secs(10), tail.next())
            .await
            .expect("woken by the delete");
        assert!(
            matches!(
                next,
                Err(RequestError::Broker(BrokerError::TopicNotFound { .. }))
            ),
            "{:?}",
            next.map(|c| c.map(|c| c.next_offset))
        );
    }
}
