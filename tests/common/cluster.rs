//! Three `strata serve` processes on 127.0.0.1 ports forming a cluster (issue 16, phase 2):
//! each with its own data directory, client port and Raft port, restartable on the same ones.

use super::{Client, Server, connect, free_port};
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};
use strata::proto::{self, CreateTopicRequest, MetadataRequest};
use tempfile::TempDir;
use tonic::Code;

/// Raft timings short enough for tests: heartbeats every 100 ms, elections after 600-1200 ms.
const RAFT_ARGS: [&str; 4] = [
    "--raft-heartbeat-interval",
    "100ms",
    "--raft-election-timeout",
    "600ms",
];

/// A cluster of broker processes, node ids 1..=n.
pub struct Cluster {
    dirs: Vec<TempDir>,
    client_ports: Vec<u16>,
    peers: String,
    /// The running brokers, by node id - 1 (`None`: killed).
    pub brokers: Vec<Option<Server>>,
    /// More `strata serve` arguments for every broker.
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` brokers.
    pub fn start(n: usize) -> Cluster {
        Cluster::start_with(n, &[])
    }

    /// Starts `n` brokers, each with `extra` arguments too.
    pub fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let raft_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let peers = raft_ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dirs: (0..n)
                .map(|_| tempfile::tempdir().expect("tempdir"))
                .collect(),
            client_ports: (0..n).map(|_| free_port()).collect(),
            peers,
            brokers: (0..n).map(|_| None).collect(),
            extra: extra.iter().map(|&a| a.to_owned()).collect(),
        };
        for node in 1..=n as u64 {
            cluster.restart(node);
        }
        cluster
    }

    /// Starts broker `node` (again) on its ports and data directory.
    pub fn restart(&mut self, node: u64) {
        let i = (node - 1) as usize;
        assert!(self.brokers[i].is_none(), "node {node} is running");
        let listen = format!("127.0.0.1:{}", self.client_ports[i]);
        let node_id = node.to_string();
        let mut args = vec![
            "--listen",
            listen.as_str(),
            "--node-id",
            node_id.as_str(),
            "--peers",
            self.peers.as_str(),
        ];
        args.extend(RAFT_ARGS);
        args.extend(self.extra.iter().map(String::as_str));
        self.brokers[i] = Some(Server::start_with(self.dirs[i].path(), &args));
    }

    /// Creates `topic` through broker `node` with `partitions` partitions of `replicas` each.
    pub async fn create_topic(&self, node: u64, topic: &str, partitions: u32, replicas: u32) {
        let created = self
            .client(node)
            .await
            .create_topic(CreateTopicRequest {
                name: topic.into(),
                partitions,
                config: None,
                replication_factor: replicas,
            })
            .await
            .expect("create a replicated topic")
            .into_inner();
        assert_eq!(
            created.topic.expect("the topic").replication_factor,
            replicas
        );
    }

    /// Stops broker `node` with SIGSTOP for `pause`, then lets it go on (SIGCONT).
    pub async fn pause(&self, node: u64, pause: Duration) {
        let pid = self.brokers[(node - 1) as usize]
            .as_ref()
            .expect("running")
            .pid()
            .to_string();
        let signal = |sig: &str| {
            let status = std::process::Command::new("kill")
                .args([sig, pid.as_str()])
                .status()
                .expect("run kill");
            assert!(status.success(), "kill {sig} {pid} failed");
        };
        signal("-STOP");
        tokio::time::sleep(pause).await;
        signal("-CONT");
    }

    /// SIGKILLs broker `node`.
    pub fn kill(&mut self, node: u64) {
        self.brokers[(node - 1) as usize]
            .take()
            .expect("running")
            .kill();
    }

    /// The client address of broker `node`.
    pub fn addr(&self, node: u64) -> SocketAddr {
        format!("127.0.0.1:{}", self.client_ports[(node - 1) as usize])
            .parse()
            .expect("address")
    }

    /// A client of broker `node`.
    pub async fn client(&self, node: u64) -> Client {
        connect(self.addr(node)).await
    }

    /// The node ids of the running brokers.
    pub fn running(&self) -> Vec<u64> {
        (1..=self.brokers.len() as u64)
            .filter(|n| self.brokers[(*n - 1) as usize].is_some())
            .collect()
    }

    /// Broker `node`'s metadata for `topic`, if it answers.
    pub async fn metadata(&self, node: u64, topic: &str) -> Option<proto::MetadataResponse> {
        let mut c = self.client(node).await;
        c.metadata(MetadataRequest {
            topics: vec![topic.to_owned()],
        })
        .await
        .ok()
        .map(tonic::Response::into_inner)
    }

    /// Waits until every running broker agrees on one leader for `partition` of `topic`, a
    /// running one; returns it.
    pub async fn leader(&self, topic: &str, partition: u32, within: Duration) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let mut seen = Vec::new();
            for node in self.running() {
                let leader = self.metadata(node, topic).await.and_then(|m| {
                    m.topics
                        .first()
                        .and_then(|t| t.partitions.get(partition as usize))
                        .and_then(|p| p.leader)
                });
                seen.push(leader);
            }
            if let Some(Some(l)) = seen.first()
                && seen.iter().all(|s| *s == Some(*l))
                && self.running().contains(l)
            {
                return *l;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader of {topic}/{partition} within {within:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Produces `values` to `partition` of `topic` through its leader, following leader changes
    /// until `within` has passed; the base offset they were acknowledged at.
    pub async fn produce_to_leader(
        &self,
        topic: &str,
        partition: u32,
        values: &[Vec<u8>],
        within: Duration,
    ) -> u64 {
        let deadline = Instant::now() + within;
        loop {
            let leader = self.leader(topic, partition, within).await;
            let mut c = self.client(leader).await;
            match super::try_produce_values(&mut c, topic, partition, values).await {
                Ok(base) => return base,
                Err(s) if is_failover(&s) && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(s) => panic!("produce to {topic}/{partition} on node {leader}: {s:?}"),
            }
        }
    }

    /// Waits until broker `node` serves `partition` of `topic` up to `high_watermark`.
    pub async fn wait_for_high_watermark(
        &self,
        node: u64,
        topic: &str,
        partition: u32,
        high_watermark: u64,
        within: Duration,
    ) {
        let deadline = Instant::now() + within;
        loop {
            let hw = self.metadata(node, topic).await.and_then(|m| {
                m.topics
                    .first()
                    .and_then(|t| t.partitions.get(partition as usize))
                    .map(|p| p.high_watermark)
            });
            if hw == Some(high_watermark) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {node}: {topic}/{partition} high watermark {hw:?}, waited for \
                 {high_watermark} for {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Whether a produce failure is one a client rides out by going to the (new) leader: not the
/// leader, or the broker gone.
pub fn is_failover(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::FailedPrecondition | Code::Unavailable)
}
