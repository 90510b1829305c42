//! Support for the hostile-client tests (`server_hostile_*`): the broker's memory and open sockets as
//! `/proc` shows them, a probe client that must keep being served while the abuse runs, and
//! polling a condition with a deadline. Used as `mod common; ` plus `use common::hostile`.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use super::{Client, Server, at_offset, batch_of, create_topic, create_topic_with, decode};
use bytes::Bytes;
use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use strata::proto::{self, FetchRequest, FsyncPolicy, ProduceRequest, TopicConfig};
use tokio::task::JoinHandle;

/// The broker's resident memory must stay below this while it is abused (docs/RELIABILITY.md).
pub const RSS_BOUND_BYTES: u64 = 256 * 1024 * 1024;
/// After the abusive clients are gone, the broker's resident memory may stay this much above
/// what it was before them (the allocator keeps some freed memory for reuse).
pub const RSS_SLACK_BYTES: u64 = 48 * 1024 * 1024;
/// A hang guard for waits: far longer than anything here should take.
pub const DEADLINE: Duration = Duration::from_secs(120);
pub const MIB: u64 = 1024 * 1024;

/// glibc's malloc keeps freed memory for reuse, and how much of it stays resident after a burst
/// depends on fragmentation, so a broker that holds nothing could still show the burst's RSS long
/// after. With a fixed mmap threshold every buffer of 64 KiB or more is its own mapping, returned
/// to the OS when freed: what stays resident after the abusive clients go is what the broker still
/// holds. (Without it, calling `malloc_trim` on the broker showed the same: nothing held.)
const ALLOCATOR_ENV: [(&str, &str); 1] = [(
    "GLIBC_TUNABLES",
    "glibc.malloc.mmap_threshold=65536:glibc.malloc.trim_threshold=131072",
)];

/// Creates the one-partition topic "backlog" (fsync `never`) and fills it with `mib` MiB.
pub async fn fill_backlog(client: &mut Client, mib: usize) {
    let config = TopicConfig {
        fsync_policy: Some(FsyncPolicy::Never.into()),
        ..TopicConfig::default()
    };
    create_topic_with(client, "backlog", 1, config).await;
    produce_backlog(client, mib).await;
}

/// Appends `mib` produce requests of 16 records of 64 KiB each to "backlog".
pub async fn produce_backlog(client: &mut Client, mib: usize) {
    let values: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8; 64 * 1024]).collect();
    for _ in 0..mib {
        client
            .produce(ProduceRequest {
                topic: "backlog".into(),
                partition: Some(0),
                records: vec![],
                batch: batch_of(&values),
            })
            .await
            .unwrap();
    }
}

/// Starts `strata serve` on `data_dir` (with `extra` arguments) for a hostile-client test.
pub fn start_server(data_dir: &std::path::Path, extra: &[&str]) -> Server {
    Server::start_with_env(data_dir, extra, &ALLOCATOR_ENV)
}

/// One `kB` field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable {line:?}"));
    kb * 1024
}

/// Resident memory now (`VmRSS`).
pub fn rss(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// Resident anonymous memory now (`RssAnon`): the heap and stacks, without the pages of mapped
/// segment files, which are the page cache and stay mapped after a read touched them.
pub fn rss_anon(pid: u32) -> u64 {
    status_bytes(pid, "RssAnon:")
}

/// The peak resident memory since the process started (`VmHWM`).
pub fn peak_rss(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// Open sockets: the listener, client connections and the broker's own. Files are not counted:
/// a roll may rightly leave one more segment file open.
pub fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Asserts the broker's peak memory so far is below the bound.
pub fn assert_memory_bounded(server: &Server, during: &str) {
    let peak = peak_rss(server.pid());
    println!(
        "{during}: broker peak RSS {} MiB (now {} MiB, of which anonymous {} MiB)",
        peak / MIB,
        rss(server.pid()) / MIB,
        rss_anon(server.pid()) / MIB
    );
    assert!(
        peak < RSS_BOUND_BYTES,
        "{during}: the broker's resident memory reached {} MiB, over the bound of {} MiB",
        peak / MIB,
        RSS_BOUND_BYTES / MIB
    );
}

/// Polls `cond` until it holds; panics with `what` and the last `state` after [`DEADLINE`].
pub async fn wait_until<S: std::fmt::Debug>(what: &str, mut cond: impl FnMut() -> (bool, S)) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (done, state) = cond();
        if done {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: still {state:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the broker holds before the abuse: open sockets and memory.
#[derive(Debug, Clone, Copy)]
pub struct Baseline {
    pub sockets: usize,
    /// Anonymous resident memory ([`rss_anon`]).
    pub rss: u64,
}

impl Baseline {
    pub fn take(server: &Server) -> Baseline {
        Baseline {
            sockets: open_sockets(server.pid()),
            rss: rss_anon(server.pid()),
        }
    }

    /// Waits until the broker's open sockets are back to this baseline and its memory is within
    /// [`RSS_SLACK_BYTES`] of it: the abusive clients left nothing behind.
    pub async fn wait_for_return(&self, server: &Server, after: &str) {
        let pid = server.pid();
        let sockets = self.sockets;
        wait_until(
            &format!("open sockets after {after} (baseline {sockets})"),
            || {
                let now = open_sockets(pid);
                (now <= sockets, now)
            },
        )
        .await;
        let bound = self.rss + RSS_SLACK_BYTES;
        wait_until(
            &format!(
                "anonymous resident memory (MiB) after {after} (baseline {} MiB)",
                self.rss / MIB
            ),
            || {
                let now = rss_anon(pid);
                (now <= bound, now / MIB)
            },
        )
        .await;
        println!(
            "after {after}: {} open sockets (baseline {sockets}), anonymous RSS {} MiB (baseline {} MiB)",
            open_sockets(pid),
            rss_anon(pid) / MIB,
            self.rss / MIB
        );
    }
}

/// A well-behaved client on its own connection: produces a record and fetches it back, over
/// and over, until stopped. Each round trip must be answered (a hang guard, not a timing).
pub struct Probe {
    done: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Probe {
    /// Creates the topic `probe` and starts the loop.
    pub async fn start(server: &Server) -> Probe {
        let mut client = server.client().await;
        create_topic(&mut client, "probe", 1).await;
        let done = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(probe(client, done.clone(), stop.clone()));
        let probe = Probe { done, stop, task };
        probe.served(1).await;
        probe
    }

    /// Waits until the probe has completed `n` more round trips.
    pub async fn served(&self, n: u64) {
        let target = self.done.load(Ordering::Acquire) + n;
        let done = self.done.clone();
        wait_until("the probe client is not being served", || {
            let now = done.load(Ordering::Acquire);
            (now >= target, now)
        })
        .await;
    }

    /// Stops the loop; returns the number of round trips.
    pub async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        self.done.load(Ordering::Acquire)
    }
}

async fn probe(mut client: Client, done: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let mut n = 0u64;
    while !stop.load(Ordering::Acquire) {
        let value = format!("probe-{n}");
        let produced = tokio::time::timeout(
            DEADLINE,
            client.produce(ProduceRequest {
                topic: "probe".into(),
                partition: Some(0),
                records: vec![proto::Record {
                    value: Bytes::from(value.clone()),
                    ..proto::Record::default()
                }],
                batch: Bytes::new(),
            }),
        )
        .await
        .expect("a probe produce was not answered")
        .expect("a probe produce failed")
        .into_inner();
        let offset = produced.results[0].base_offset;
        let fetched = tokio::time::timeout(
            DEADLINE,
            client.fetch(FetchRequest {
                topic: "probe".into(),
                partition: 0,
                start: at_offset(offset),
                ..FetchRequest::default()
            }),
        )
        .await
        .expect("a probe fetch was not answered")
        .expect("a probe fetch failed")
        .into_inner();
        let records = decode(&fetched.batches, offset);
        assert_eq!(records[0].value, value.as_bytes(), "the probe read back");
        n += 1;
        done.store(n, Ordering::Release);
    }
}

/// One HTTP/2 frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK literal header field without indexing, with a new name (short strings only).
pub fn header(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0, name.len() as u8];
    out.extend(name.as_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    out
}

/// Opens a connection and starts a Produce request whose message announces `announced` bytes,
/// sending only `sent` of them (at most the 64 KiB the default stream window allows), with
/// `extra` headers (short ones) after gRPC's own.
pub async fn half_sent_produce(
    addr: std::net::SocketAddr,
    announced: u32,
    sent: usize,
    extra: &[(&str, &str)],
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/strata.v1.Strata/Produce"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        headers.extend(header(name, value));
    }
    for (name, value) in extra {
        headers.extend(header(name, value));
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(4, 0, 0, &[])); // SETTINGS
    bytes.extend(frame(1, 4, 1, &headers)); // HEADERS, END_HEADERS, stream 1
    let mut message = vec![0];
    message.extend(announced.to_be_bytes());
    message.resize(5 + sent, b'x');
    for chunk in message.chunks(16 * 1024) {
        bytes.extend(frame(0, 0, 1, chunk)); // DATA, not the end of the stream
    }
    let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
    socket.write_all(&bytes).await.unwrap();
    socket
}
