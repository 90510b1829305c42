//! A group's committed offsets and lag belong to the topics they are in: a principal who may
//! describe a group but not one of its topics gets PERMISSION_DENIED asking for that topic's
//! commits, and the group's answers that span topics (DescribeGroup) leave that topic
//! out (the real broker with `--auth-file`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{Server, cli::add_superuser, cli::auth, with_token as with};
use strata::proto;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_groups_offsets_in_a_topic_are_described_only_with_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    let admin = add_superuser(&file, "admin");
    let auditor = auth(&file, &["add", "auditor"]);
    auth(&file, &["allow", "auditor", "describe", "group:billing"]);
    auth(&file, &["allow", "auditor", "describe", "topic:orders"]);
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--auth-file", file.to_str().unwrap()],
    );
    let mut client = server.client().await;
    for topic in ["orders", "payroll"] {
        client
            .create_topic(with(
                Some(&admin),
                proto::CreateTopicRequest {
                    name: topic.into(),
                    partitions: 1,
                    config: None,
                    replication_factor: 0,
                },
            ))
            .await
            .unwrap();
    }
    client
        .commit_offsets(with(
            Some(&admin),
            proto::CommitOffsetsRequest {
                group: "billing".into(),
                offsets: ["orders", "payroll"]
                    .map(|topic| proto::PartitionOffset {
                        topic: topic.into(),
                        partition: 0,
                        offset: 0,
                    })
                    .to_vec(),
                ..Default::default()
            },
        ))
        .await
        .unwrap();
    let committed = |token: &str, topic: &str| {
        with(
            Some(token),
            proto::FetchCommittedOffsetsRequest {
                group: "billing".into(),
                topic: topic.into(),
            },
        )
    };
    let topics = |r: proto::FetchCommittedOffsetsResponse| -> Vec<String> {
        r.offsets.into_iter().map(|o| o.topic).collect()
    };

    // The superuser sees both topics' commits.
    for topic in ["orders", "payroll"] {
        let got = client
            .fetch_committed_offsets(committed(&admin, topic))
            .await
            .unwrap();
        assert_eq!(topics(got.into_inner()), [topic]);
    }
    let described = client
        .describe_group(with(
            Some(&admin),
            proto::DescribeGroupRequest {
                group: "billing".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let lagging: Vec<_> = described
        .partitions
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(lagging, ["orders", "payroll"]);

    // The auditor: its topic's commits, a refusal naming the other, and answers without it.
    let orders = client
        .fetch_committed_offsets(committed(&auditor, "orders"))
        .await
        .unwrap();
    assert_eq!(topics(orders.into_inner()), ["orders"]);
    let refused = client
        .fetch_committed_offsets(committed(&auditor, "payroll"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    assert!(
        refused.message().contains("'auditor'")
            && refused.message().contains("describe")
            && refused.message().contains("topic:payroll"),
        "{}",
        refused.message()
    );
    let described = client
        .describe_group(with(
            Some(&auditor),
            proto::DescribeGroupRequest {
                group: "billing".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let lagging: Vec<_> = described
        .partitions
        .iter()
        .map(|p| p.topic.as_str())
        .collect();
    assert_eq!(lagging, ["orders"]);
}
