//! Test support: runs the real `strata` binary on a loopback port with a temporary data directory,
//! waits for the address it prints, and talks to it with the generated gRPC client. The broker and
//! server in this process instead (with a fault injector): [`inproc::InProc`].
#![allow(dead_code)] // each test file uses a different part of this module

pub mod chaos;
pub mod cli;
pub mod cluster;
pub mod faults;
pub mod files;
pub mod history;
pub mod hostile;
pub mod inproc;
pub mod metrics;
pub mod rng;
pub mod tls;

use bytes::Bytes;
use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
};
use strata::proto::{
    self, CreateTopicRequest, FetchRequest, ProduceRequest, StartPosition,
    start_position::Position, strata_client::StrataClient,
};
use strata::record::{BatchBuilder, Frame, decode_frame};
use tonic::transport::Channel;

/// `message` as a request bearing `token` (none: no `authorization` header).
pub fn with_token<T>(token: Option<&str>, message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(t) = token {
        let value = format!("Bearer {t}").parse().expect("a token is ASCII");
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// The generated client over a plain HTTP/2 channel.
pub type Client = StrataClient<Channel>;

/// A running `strata serve` child process.
pub struct Server {
    child: Option<Child>,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Server {
    /// Starts `strata serve` on 127.0.0.1:0 storing in `data_dir`, and waits until it listens.
    pub fn start(data_dir: &Path) -> Server {
        Self::start_with(data_dir, &[])
    }

    /// Like [`Server::start`], with extra `strata serve` arguments.
    pub fn start_with(data_dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Like [`Server::start_with`], with extra environment variables for the process. Listens
    /// on 127.0.0.1:0 unless `extra` names a `--listen` address (to come back on the same one).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let listen: &[&str] = if extra.contains(&"--listen") {
            &[]
        } else {
            &["--listen", "127.0.0.1:0"]
        };
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .args(listen)
            .args(extra)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the strata binary");
        let addr = listening_address(&mut child)
            .parse()
            .expect("a socket address");
        Server {
            child: Some(child),
            addr,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// A new client connection.
    pub async fn client(&self) -> Client {
        connect(self.addr).await
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: the process dies at once, with no chance to flush anything.
    pub fn kill(mut self) {
        let mut child = self.child.take().expect("running");
        child.kill().expect("SIGKILL strata");
        child.wait().expect("reap strata");
    }

    /// SIGTERM, then wait for the process to exit. Waits on a blocking thread so that the test's
    /// runtime keeps driving client connections, which the broker's graceful shutdown waits for.
    pub async fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        tokio::task::spawn_blocking(move || {
            let status = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill -TERM failed");
            child.wait().expect("reap strata")
        })
        .await
        .expect("wait for strata")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Waits until a `strata serve` child (its stdout piped) prints `listening on ADDR`, and returns
/// ADDR. Its stdout is drained from then on, so that it never blocks on (or dies of) a closed
/// pipe.
pub fn listening_address(child: &mut Child) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("strata exited before printing its address")
            .expect("read strata's stdout");
        if let Some(addr) = line.strip_prefix("listening on ") {
            break addr.to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    addr
}

/// A new client connection to a broker at `addr`, taking responses of up to 64 MiB.
pub async fn connect(addr: SocketAddr) -> Client {
    StrataClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to strata")
        .max_decoding_message_size(64 * 1024 * 1024)
}

/// A record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rec {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Decodes whole batches, keeping records at or after `from`, skipping control batches (a
/// replicated partition's Raft entries) as clients do. Panics on anything but whole, CRC-valid
/// batches: the broker must never send anything else.
pub fn decode(batches: &[u8], from: u64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut rest = batches;
    while !rest.is_empty() {
        let Frame::Batch(view) = decode_frame(rest) else {
            panic!(
                "the broker sent something that is not a whole batch: {:?}",
                decode_frame(rest)
            );
        };
        for rec in view.records().filter(|_| !view.header().is_control()) {
            let rec = rec.expect("a valid record");
            if rec.offset >= from {
                out.push(Rec {
                    offset: rec.offset,
                    timestamp_ms: rec.timestamp_ms,
                    key: rec.key.map(<[u8]>::to_vec),
                    value: rec.value.to_vec(),
                    headers: rec
                        .headers()
                        .map(|(n, v)| (n.to_vec(), v.to_vec()))
                        .collect(),
                });
            }
        }
        rest = &rest[view.bytes().len()..];
    }
    out
}

/// An encoded batch of keyless records with these values.
pub fn batch_of(values: &[Vec<u8>]) -> Bytes {
    let mut b = BatchBuilder::default();
    for (i, v) in values.iter().enumerate() {
        b.push_parts(1_000 + i as i64, None, v, []);
    }
    Bytes::from(b.finish(0))
}

/// Creates a topic with the broker's default config.
pub async fn create_topic(client: &mut Client, name: &str, partitions: u32) {
    create(client, name, partitions, None).await;
}

/// Creates a topic with these settings (the broker's defaults for those left unset).
pub async fn create_topic_with(
    client: &mut Client,
    name: &str,
    partitions: u32,
    config: proto::TopicConfig,
) {
    create(client, name, partitions, Some(config)).await;
}

async fn create(
    client: &mut Client,
    name: &str,
    partitions: u32,
    config: Option<proto::TopicConfig>,
) {
    client
        .create_topic(CreateTopicRequest {
            name: name.into(),
            partitions,
            config,
            replication_factor: 0,
        })
        .await
        .expect("create topic");
}

/// Produces plain keyless records with these values to one partition; returns the base offset.
pub async fn produce_values(
    client: &mut Client,
    topic: &str,
    partition: u32,
    values: &[Vec<u8>],
) -> u64 {
    try_produce_values(client, topic, partition, values)
        .await
        .expect("produce")
}

/// [`produce_values`], returning the refusal instead of panicking.
pub async fn try_produce_values(
    client: &mut Client,
    topic: &str,
    partition: u32,
    values: &[Vec<u8>],
) -> Result<u64, tonic::Status> {
    let resp = client
        .produce(ProduceRequest {
            topic: topic.into(),
            partition: Some(partition),
            records: values
                .iter()
                .map(|v| proto::Record {
                    value: Bytes::from(v.clone()),
                    ..proto::Record::default()
                })
                .collect(),
            batch: Bytes::new(),
        })
        .await?
        .into_inner();
    assert_eq!(resp.results.len(), 1);
    Ok(resp.results[0].base_offset)
}

/// A start position at an offset (as the request field wants it).
#[allow(clippy::unnecessary_wraps)]
pub fn at_offset(offset: u64) -> Option<StartPosition> {
    Some(StartPosition {
        position: Some(Position::Offset(offset)),
    })
}

/// A start position at a group's committed offset.
#[allow(clippy::unnecessary_wraps)]
pub fn at_group(group: &str) -> Option<StartPosition> {
    Some(StartPosition {
        position: Some(Position::Group(group.into())),
    })
}

/// Subscribes to `partitions` of `topic` (none: all) from `offset`, `max_bytes` a message (0: the
/// broker's default).
pub async fn subscribe_from(
    client: &mut Client,
    topic: &str,
    partitions: &[u32],
    offset: u64,
    max_bytes: u32,
) -> tonic::Streaming<proto::SubscribeResponse> {
    client
        .subscribe(proto::SubscribeRequest {
            topic: topic.into(),
            partitions: partitions.to_vec(),
            start: at_offset(offset),
            max_bytes,
        })
        .await
        .expect("subscribe")
        .into_inner()
}

/// Fetches every record of a partition from `from` up to the high watermark, without waiting.
pub async fn fetch_all(client: &mut Client, topic: &str, partition: u32, from: u64) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut next = from;
    loop {
        let resp = client
            .fetch(FetchRequest {
                topic: topic.into(),
                partition,
                start: at_offset(next),
                ..FetchRequest::default()
            })
            .await
            .expect("fetch")
            .into_inner();
        out.extend(decode(&resp.batches, next));
        if resp.next_fetch_offset >= resp.high_watermark || resp.batches.is_empty() {
            return out;
        }
        next = resp.next_fetch_offset;
    }
}

/// Every record of a partition from offset 0 to the high watermark: (offset, value).
pub async fn stored(client: &mut Client, topic: &str, partition: u32) -> Vec<(u64, Vec<u8>)> {
    fetch_all(client, topic, partition, 0)
        .await
        .into_iter()
        .map(|r| (r.offset, r.value))
        .collect()
}

/// `values` at the offsets from 0, as [`stored`] returns them.
pub fn at_offsets(values: &[Vec<u8>]) -> Vec<(u64, Vec<u8>)> {
    (0..).zip(values.iter().cloned()).collect()
}

/// `n` distinct values starting at `first`.
pub fn values(prefix: &str, first: usize, n: usize) -> Vec<Vec<u8>> {
    (first..first + n)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .collect()
}

/// A port free on 127.0.0.1 now, for a broker that must come back on the same address.
///
/// Taken below Linux's ephemeral range (32768-60999 by default), not from it: a port handed out
/// there and released can be given meanwhile to an outgoing connection as its own port (a
/// broker dialing another broker that is not up yet), and the broker meant to listen on it
/// then fails with "address in use".
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id()).wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mixed =
            (seed ^ n.wrapping_mul(0xbf58_476d_1ce4_e5b9)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let port = 20_000 + (mixed >> 33) % 12_000;
        let port = u16::try_from(port).expect("below 32000");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}
