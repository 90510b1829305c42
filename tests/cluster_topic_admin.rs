//! Replicated topics are created and deleted on every broker of a cluster (through the
//! controller group, whichever broker takes the request), and what cannot be done is refused
//! with a clear status: a replication factor on a broker without cluster settings
//! (FAILED_PRECONDITION), one other than the cluster's size (INVALID_ARGUMENT), a topic that
//! exists (ALREADY_EXISTS). A config change through any broker reaches every broker. A create
//! while a broker is down succeeds, every partition led, and
//! that broker makes its replicas when it is back; `strata cluster status` shows every replica.

mod common;

use common::Server;
use common::cluster::Cluster;
use std::time::Duration;
use strata::proto::{
    AlterTopicConfigRequest, CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest,
    MetadataRequest, TopicConfig,
};
use tonic::Code;

const WITHIN: Duration = Duration::from_secs(30);

/// Checks that every broker of `cluster` has topic `name` with three replicas.
async fn on_every_broker(cluster: &Cluster, name: &str) {
    for node in 1..=3 {
        let d = cluster
            .client(node)
            .await
            .describe_topic(DescribeTopicRequest { name: name.into() })
            .await
            .unwrap_or_else(|e| panic!("node {node}: {e:?}"))
            .into_inner();
        assert_eq!(
            d.topic.expect("the topic").replication_factor,
            3,
            "node {node}"
        );
    }
}

fn create(name: &str, partitions: u32, replication_factor: u32) -> CreateTopicRequest {
    CreateTopicRequest {
        name: name.into(),
        partitions,
        config: None,
        replication_factor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_topics_are_made_and_removed_on_every_broker() {
    // A broker without cluster settings: a cluster of one, node 0, no replication.
    let dir = tempfile::tempdir().unwrap();
    let single = Server::start(dir.path());
    let refused = single
        .client()
        .await
        .create_topic(create("orders", 1, 3))
        .await
        .expect_err("no cluster");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("--node-id"), "{refused:?}");
    let m = single
        .client()
        .await
        .metadata(MetadataRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(m.node_id, 0);
    assert_eq!(m.brokers.len(), 1);
    assert_eq!(m.brokers[0].address, single.addr.to_string());
    drop(single);

    let mut cluster = Cluster::start(3);
    let mut c1 = cluster.client(1).await;
    let refused = c1
        .create_topic(create("orders", 2, 2))
        .await
        .expect_err("2 of 3");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("replication_factor"),
        "{refused:?}"
    );

    // Created through broker 2, the topic is on all three, each partition with a leader.
    cluster
        .client(2)
        .await
        .create_topic(create("orders", 2, 3))
        .await
        .expect("create");
    // CreateTopic answers once each partition's first leader committed its first entry: broker
    // 2 knows every leader at once, without waiting for an election.
    let m = cluster.metadata(2, "orders").await.expect("metadata");
    for p in &m.topics[0].partitions {
        assert!(p.leader.is_some(), "no leader when create answered: {p:?}");
    }
    on_every_broker(&cluster, "orders").await;
    for p in 0..2 {
        cluster.leader("orders", p, WITHIN).await;
    }
    let m = cluster.metadata(3, "orders").await.expect("metadata");
    assert_eq!(m.node_id, 3);
    let ids: Vec<u64> = m.brokers.iter().map(|b| b.node_id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    let partitions = &m.topics[0].partitions;
    assert_eq!(partitions.len(), 2);
    // Placement rotates: each partition's first replica differs.
    assert_eq!(partitions[0].replicas, vec![1, 2, 3]);
    assert_eq!(partitions[1].replicas, vec![2, 3, 1]);

    // `strata cluster status` lists every replica of every partition, with its role.
    let status = common::cli::run(
        Some(&format!("http://{}", cluster.addr(1))),
        &["cluster", "status", "--output", "json"],
        b"",
    );
    let report = &status.json_lines()[0];
    let replicas = report["replicas"].as_array().expect("replicas");
    assert_eq!(replicas.len(), 6, "{report}");
    for r in replicas {
        assert_eq!(r["topic"], "orders", "{r}");
        assert!(r["leader"].as_u64().is_some(), "{r}");
    }

    // Altered through broker 3 (which forwards it to the coordinator), every broker has the
    // new settings by the time it answers: its own describe at once, the others' soon after.
    cluster
        .client(3)
        .await
        .alter_topic_config(AlterTopicConfigRequest {
            name: "orders".into(),
            config: Some(TopicConfig {
                max_record_bytes: Some(4096),
                ..TopicConfig::default()
            }),
        })
        .await
        .expect("alter");
    let limit = |d: strata::proto::DescribeTopicResponse| {
        d.topic
            .and_then(|t| t.config)
            .and_then(|c| c.max_record_bytes)
    };
    let on_3 = cluster
        .client(3)
        .await
        .describe_topic(DescribeTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("describe")
        .into_inner();
    assert_eq!(limit(on_3), Some(4096), "node 3 right after its alter");
    for node in [1, 2] {
        let deadline = std::time::Instant::now() + WITHIN;
        loop {
            let d = cluster
                .client(node)
                .await
                .describe_topic(DescribeTopicRequest {
                    name: "orders".into(),
                })
                .await
                .expect("describe")
                .into_inner();
            if limit(d) == Some(4096) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node {node} never altered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Deleted through broker 3, it is gone everywhere.
    cluster
        .client(3)
        .await
        .delete_topic(DeleteTopicRequest {
            name: "orders".into(),
        })
        .await
        .expect("delete");
    for node in 1..=3 {
        let gone = cluster
            .client(node)
            .await
            .describe_topic(DescribeTopicRequest {
                name: "orders".into(),
            })
            .await
            .expect_err("deleted");
        assert_eq!(gone.code(), Code::NotFound, "node {node}: {gone:?}");
    }

    // With a broker down, a create goes on with the other two (the controller group has a
    // majority): every partition has a leader when it answers, and the broker that was down
    // creates its replicas when it is back and has caught up with the controller's log.
    cluster.kill(3);
    c1.create_topic(create("payments", 3, 3))
        .await
        .expect("a create with node 3 down");
    let m = cluster.metadata(1, "payments").await.expect("metadata");
    for p in &m.topics[0].partitions {
        assert!(p.leader.is_some(), "no leader when create answered: {p:?}");
    }
    cluster.restart(3);
    let deadline = std::time::Instant::now() + WITHIN;
    while cluster
        .metadata(3, "payments")
        .await
        .is_none_or(|m| m.topics.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "node 3 never made its replicas"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    on_every_broker(&cluster, "payments").await;
    // A topic that exists cannot be created again, through any broker.
    let again = cluster
        .client(3)
        .await
        .create_topic(create("payments", 3, 3))
        .await
        .expect_err("exists");
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
}
