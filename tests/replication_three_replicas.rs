//! One partition replicated by three replicas over the brokers' real Raft service on 127.0.0.1
//! ports: produces through the leader are acknowledged once committed and land at the same
//! offsets, with the same terms and Raft indexes, in every replica's segment log; the leader
//! stops, a new one is elected and takes produces, and nothing acknowledged is lost; the old
//! leader restarts from its directory and catches up to an identical log.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod power_cut;
    pub mod raft;
    pub mod rng;
    pub mod storage;
}

use common::{
    raft::{Node, batches, ids, leader, produce, records, start_group, wait_committed},
    storage::{small_config, value},
};
use strata::storage::{LogConfig, Offset};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_agree_survive_a_leader_stop_and_catch_up() {
    let root = tempfile::tempdir().unwrap();
    let config = LogConfig {
        segment_max_bytes: 16 * 1024,
        ..small_config()
    };
    let mut nodes = Vec::new();
    for id in 1..=3 {
        nodes.push(Node::new(id, root.path(), config.clone()).await);
    }
    start_group(&mut nodes).await;

    // Acknowledged records, by offset.
    let mut acked: Vec<(Offset, Vec<u8>)> = Vec::new();
    let mut next_value = 0u64;
    let mut produce_some =
        async |nodes: &[Node], batches: u64, acked: &mut Vec<(Offset, Vec<u8>)>| {
            for k in 0..batches {
                let values: Vec<Vec<u8>> = (0..=k % 3)
                    .map(|_| {
                        next_value += 1;
                        value(next_value)
                    })
                    .collect();
                let a = produce(nodes, &values).await;
                assert_eq!(a.next_offset - a.base_offset, values.len() as u64);
                acked.extend((a.base_offset..).zip(values));
            }
        };
    produce_some(&nodes, 60, &mut acked).await;
    let end = acked.last().unwrap().0 + 1;
    for n in &nodes {
        wait_committed(n, end).await;
    }
    let first = batches(nodes[0].replica().log());
    for n in &nodes[1..] {
        let theirs = batches(n.replica().log());
        assert_eq!(
            ids(&theirs),
            ids(&first),
            "node {} differs from node 1",
            n.id
        );
        assert_eq!(records(&theirs), records(&first));
    }
    assert_eq!(
        records(&first),
        acked,
        "every acknowledged record at its offset"
    );
    assert!(
        first.iter().any(|b| b.control),
        "the leader's blank entry is a control batch"
    );

    // The leader stops; another is elected and takes more.
    let old = leader(&nodes).await;
    let old_term = nodes[old].replica().term();
    nodes[old].stop().await;
    produce_some(&nodes, 40, &mut acked).await;
    let new = leader(&nodes).await;
    assert_ne!(new, old);
    assert!(nodes[new].replica().term() > old_term);
    let end = acked.last().unwrap().0 + 1;
    for n in nodes.iter().filter(|n| n.running.is_some()) {
        wait_committed(n, end).await;
        assert_eq!(records(&batches(n.replica().log())), acked, "node {}", n.id);
    }

    // The old leader restarts from its directory and catches up.
    nodes[old].start().await;
    produce_some(&nodes, 5, &mut acked).await;
    let end = acked.last().unwrap().0 + 1;
    for n in &nodes {
        wait_committed(n, end).await;
    }
    let reference = batches(nodes[new].replica().log());
    assert_eq!(records(&reference), acked);
    for n in &nodes {
        let theirs = batches(n.replica().log());
        assert_eq!(
            ids(&theirs),
            ids(&reference),
            "node {} after the restart",
            n.id
        );
        assert_eq!(records(&theirs), acked, "node {} after the restart", n.id);
    }
    for n in &mut nodes {
        n.stop().await;
    }
}
