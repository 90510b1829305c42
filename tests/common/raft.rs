//! Support for the replication tests: partition replicas on 127.0.0.1 ports, each with its own
//! log directory and its own Raft service, which a test stops and starts again. Used as
//! `mod common { pub mod power_cut; pub mod raft; pub mod rng; pub mod storage; }`.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use super::{power_cut::PowerCut, rng::Rng};
use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};
use strata::{
    record::{BatchBuilder, Frame, decode_frame},
    replication::{
        AppliedBatch, LinkFaults, PartitionGroups, ProduceError, RaftClients, RaftLinks,
        RaftService, ReplicatedPartition, serve_raft,
    },
    storage::{Log, LogConfig, Offset},
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// The Raft group name the tests use.
pub const GROUP: &str = "orders/0";

/// Timeouts short enough for tests, long enough for a loaded 2-core machine.
pub fn raft_config() -> Arc<openraft::Config> {
    Arc::new(
        openraft::Config {
            cluster_name: "strata-test".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            ..openraft::Config::default()
        }
        .validate()
        .unwrap(),
    )
}

/// One replica: its directory, its Raft service's address, and, while it runs, the replica and
/// its server.
pub struct Node {
    pub id: u64,
    pub dir: PathBuf,
    pub addr: SocketAddr,
    pub config: LogConfig,
    pub running: Option<Running>,
    /// The power-cut simulator of the node's directory, when power cuts are on.
    pub sim: Option<Arc<PowerCut>>,
    /// The network's fault seam for the node's requests, if any.
    pub links: Option<Arc<dyn LinkFaults>>,
    /// How many times the node lost power.
    pub cuts: u32,
}

pub struct Running {
    pub replica: ReplicatedPartition,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Node {
    /// A node with a fresh directory under `root` and a free port (kept for its restarts).
    pub async fn new(id: u64, root: &Path, config: LogConfig) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let dir = root.join(format!("node-{id}"));
        std::fs::create_dir_all(&dir).unwrap();
        Node {
            id,
            dir,
            addr,
            config,
            running: None,
            sim: None,
            links: None,
            cuts: 0,
        }
    }

    /// The same node with power cuts simulated on its directory and its requests passed through
    /// `links`.
    pub fn with_faults(mut self, links: Arc<dyn LinkFaults>) -> Node {
        self.sim = Some(PowerCut::new(&self.dir));
        self.links = Some(links);
        self
    }

    /// Opens the replica's log and Raft node and serves its Raft service.
    pub async fn start(&mut self) {
        assert!(self.running.is_none(), "node {} already runs", self.id);
        let config = LogConfig {
            faults: self.sim.as_ref().map(PowerCut::as_injector),
            ..self.config.clone()
        };
        let log = Arc::new(Log::open(&self.dir.join("partition"), config).unwrap());
        let groups = PartitionGroups::default();
        let links = RaftLinks::new(self.id, Duration::from_secs(1));
        let mut network = RaftClients::new(links.clone(), GROUP);
        if let Some(links) = &self.links {
            network = network.with_faults(links.clone());
        }
        let replica =
            ReplicatedPartition::open(self.id, GROUP, log, raft_config(), groups.clone(), network)
                .await
                .unwrap();
        // The port was free when the node was made; a restart binds it again.
        let listener = bind_again(self.addr).await;
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let routes = tonic::service::Routes::new(RaftService::new(groups, links));
            serve_raft(listener, routes, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        self.running = Some(Running {
            replica,
            stop,
            server,
        });
    }

    /// Stops the Raft node and the server, and closes the log (as a crash of the process would,
    /// but for what the page cache holds: it survives, as it does a SIGKILL).
    pub async fn stop(&mut self) {
        let running = self.running.take().expect("the node runs");
        let _ = running.stop.send(());
        running.server.abort();
        let _ = running.server.await;
        running.replica.shutdown().await.unwrap();
    }

    /// The machine loses power: from this instant nothing more of the node's becomes durable;
    /// the node stops, and its directory becomes what a power cut could leave (chosen by `rng`),
    /// from which [`Node::start`] starts it again.
    pub async fn power_cut(&mut self, rng: &mut Rng) {
        let sim = self.sim.clone().expect("power cuts are on");
        sim.freeze();
        self.cuts += 1;
        let image = self
            .dir
            .with_file_name(format!("node-{}-cut-{}", self.id, self.cuts));
        sim.cut(rng, &image);
        let running = self.running.take().expect("the node runs");
        let _ = running.stop.send(());
        running.server.abort();
        let _ = running.server.await;
        // Its storage fails from the cut on: the node may already have stopped itself.
        let _ = running.replica.shutdown().await;
        self.dir = image;
        self.sim = Some(PowerCut::from_existing(&self.dir));
    }

    pub fn replica(&self) -> &ReplicatedPartition {
        &self.running.as_ref().expect("the node runs").replica
    }
}

async fn bind_again(addr: SocketAddr) -> TcpListener {
    for _ in 0..100 {
        if let Ok(l) = TcpListener::bind(addr).await {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} stays taken");
}

/// Starts `nodes` and makes them one group: returns once a leader has committed its first
/// entry, so the membership is on a majority (a power cut of the first node before that could
/// take the group's only copy of it).
pub async fn start_group(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.start().await;
    }
    nodes[0].replica().initialize(members(nodes)).await.unwrap();
    let leader = find_leader(nodes, Duration::from_secs(30))
        .await
        .expect("the new group elects a leader in 30 s");
    nodes[leader]
        .replica()
        .raft()
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(1), "the leader's first entry")
        .await
        .unwrap();
}

/// A one-node group over `log` (no Raft service: it has no one to talk to), made and ready.
pub async fn one_node(log: Arc<Log>, config: openraft::Config) -> ReplicatedPartition {
    let replica = ReplicatedPartition::open(
        1,
        GROUP,
        log,
        Arc::new(config.validate().unwrap()),
        PartitionGroups::default(),
        RaftClients::new(RaftLinks::new(1, Duration::from_secs(1)), GROUP),
    )
    .await
    .unwrap();
    replica
        .initialize([(1, "127.0.0.1:1".to_string())].into())
        .await
        .unwrap();
    replica
}

/// The members of a group of `nodes`: id to Raft address.
pub fn members(nodes: &[Node]) -> BTreeMap<u64, String> {
    nodes.iter().map(|n| (n.id, n.addr.to_string())).collect()
}

/// Waits until some running node sees a leader among the running nodes, and returns its index.
pub async fn leader(nodes: &[Node]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        for n in nodes.iter().filter(|n| n.running.is_some()) {
            let leader = n.replica().leader();
            if let Some(i) = leader.and_then(|id| nodes.iter().position(|m| m.id == id))
                && nodes[i].running.is_some()
                && nodes[i].replica().leader() == Some(nodes[i].id)
            {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The running node that leads in its own eyes, in the highest term if several do (one cut off
/// from the others may not know it was replaced), if one shows up within `within`.
pub async fn find_leader(nodes: &[Node], within: Duration) -> Option<usize> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let newest = nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.running.is_some() && n.replica().leader() == Some(n.id))
            .max_by_key(|(_, n)| n.replica().term())
            .map(|(i, _)| i);
        if newest.is_some() || tokio::time::Instant::now() >= deadline {
            return newest;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Produces `values` through whoever leads, looking the leader up again while replicas answer
/// that they do not lead, for at most `within`: `None` if no leader took it in time (the records
/// may or may not be committed later).
pub async fn try_produce(
    nodes: &[Node],
    values: &[Vec<u8>],
    within: Duration,
) -> Option<AppliedBatch> {
    let deadline = tokio::time::Instant::now() + within;
    let bytes = batch(values);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let i = find_leader(nodes, left).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, nodes[i].replica().produce(bytes.clone())).await {
            Ok(Ok(a)) => return Some(a),
            Ok(Err(ProduceError::NotLeader { .. })) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(Err(_)) | Err(_) => return None,
        }
    }
}

/// A producer's batch of `values`.
pub fn batch(values: &[Vec<u8>]) -> bytes::Bytes {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(1, None, v, []);
    }
    bytes::Bytes::from(b.finish(0))
}

/// Produces `values` as one batch through the group's leader, retrying on another leader
/// while one is elected.
pub async fn produce(nodes: &[Node], values: &[Vec<u8>]) -> AppliedBatch {
    let bytes = batch(values);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let i = leader(nodes).await;
        match nodes[i].replica().produce(bytes.clone()).await {
            Ok(a) => return a,
            Err(ProduceError::NotLeader { .. }) => {}
            Err(e) => panic!("produce failed: {e}"),
        }
        assert!(tokio::time::Instant::now() < deadline, "no produce in 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A stored batch as the tests compare them across replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub base_offset: Offset,
    pub term: u64,
    pub raft_index: u64,
    pub control: bool,
    /// The records' values (a control batch's payload is the broker's).
    pub values: Vec<Vec<u8>>,
}

/// The producers' records of `batches` (control batches are the broker's), by offset.
pub fn records(batches: &[StoredBatch]) -> Vec<(Offset, Vec<u8>)> {
    batches
        .iter()
        .filter(|b| !b.control)
        .flat_map(|b| (b.base_offset..).zip(b.values.iter().cloned()))
        .collect()
}

/// Each batch's offset, term, Raft index and kind: what replicas must agree on (control batches
/// are each replica's own encoding of the same entries, so their bytes may differ).
pub fn ids(batches: &[StoredBatch]) -> Vec<(Offset, u64, u64, bool)> {
    batches
        .iter()
        .map(|b| (b.base_offset, b.term, b.raft_index, b.control))
        .collect()
}

/// Every batch of `log`, in order.
pub fn batches(log: &Log) -> Vec<StoredBatch> {
    let mut out = Vec::new();
    let mut at = log.earliest_offset();
    while at < log.next_offset() {
        let chunk = log.read(at, 1 << 20).unwrap();
        let mut rest = &chunk.batches[..];
        while !rest.is_empty() {
            let Frame::Batch(b) = decode_frame(rest) else {
                panic!("a read returned bytes that are not whole batches")
            };
            let h = b.header();
            if h.base_offset >= at {
                out.push(StoredBatch {
                    base_offset: h.base_offset,
                    term: h.term,
                    raft_index: h.raft_index,
                    control: h.is_control(),
                    values: if h.is_control() {
                        Vec::new()
                    } else {
                        b.records().map(|r| r.unwrap().value.to_vec()).collect()
                    },
                });
            }
            rest = &rest[b.bytes().len()..];
        }
        at = chunk.next_offset;
    }
    out
}

/// Waits until the running replica of `node` has applied everything below `next`.
pub async fn wait_committed(node: &Node, next: Offset) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while node.replica().committed_next_offset() < next {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {} applied only to {} of {next} in 30 s",
            node.id,
            node.replica().committed_next_offset()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
