//! Tokens and allow rules on the real broker (`strata serve --auth-file`), the principals file
//! made with `strata auth`: every rpc but health asks for a principal (none or a wrong token:
//! UNAUTHENTICATED); an ACL matrix of principals x rpcs answered as the rules say
//! (PERMISSION_DENIED naming principal, operation and resource); list calls show only what the
//! principal may describe; a revoke applied by SIGHUP ends the principal's open subscription and
//! its later calls; an oversized `authorization` header and a burst of wrong tokens are refused
//! without being checked.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{Client, Server, cli, cli::auth, with_token as with};
use strata::proto::{self, Empty, StartPosition, start_position::Position};
use strata::record::BatchBuilder;
use tonic::{
    Code,
    Code::{Ok as Yes, PermissionDenied as No},
    Status,
};

fn batch() -> bytes::Bytes {
    let mut b = BatchBuilder::default();
    b.push_parts(1, None, b"v", []);
    bytes::Bytes::from(b.finish(0))
}

fn earliest() -> StartPosition {
    StartPosition {
        position: Some(Position::Earliest(Empty {})),
    }
}

/// Every rpc once, as `token`; the code each answered (OK on success).
async fn every_rpc(client: &mut Client, token: Option<&str>) -> Vec<(&'static str, Code)> {
    let code = |r: Result<(), Status>| r.err().map_or(Code::Ok, |s| s.code());
    let t = token;
    let mut out = Vec::new();
    out.push((
        "CreateTopic scratch",
        code(
            client
                .create_topic(with(
                    t,
                    proto::CreateTopicRequest {
                        name: "scratch".into(),
                        partitions: 1,
                        config: None,
                        replication_factor: 0,
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "AlterTopicConfig orders",
        code(
            client
                .alter_topic_config(with(
                    t,
                    proto::AlterTopicConfigRequest {
                        name: "orders".into(),
                        config: None,
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "DescribeTopic orders",
        code(
            client
                .describe_topic(with(
                    t,
                    proto::DescribeTopicRequest {
                        name: "orders".into(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "ListOffsets orders",
        code(
            client
                .list_offsets(with(
                    t,
                    proto::ListOffsetsRequest {
                        topic: "orders".into(),
                        partitions: vec![],
                        position: None,
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "Produce orders",
        code(
            client
                .produce(with(
                    t,
                    proto::ProduceRequest {
                        topic: "orders".into(),
                        partition: Some(0),
                        records: vec![],
                        batch: batch(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "Fetch orders",
        code(
            client
                .fetch(with(
                    t,
                    proto::FetchRequest {
                        topic: "orders".into(),
                        partition: 0,
                        start: Some(earliest()),
                        max_bytes: 0,
                        max_wait_ms: 0,
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "Subscribe orders",
        code(
            client
                .subscribe(with(
                    t,
                    proto::SubscribeRequest {
                        topic: "orders".into(),
                        partitions: vec![],
                        start: Some(earliest()),
                        max_bytes: 0,
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "CommitOffsets billing/orders",
        code(
            client
                .commit_offsets(with(
                    t,
                    proto::CommitOffsetsRequest {
                        group: "billing".into(),
                        offsets: vec![proto::PartitionOffset {
                            topic: "orders".into(),
                            partition: 0,
                            offset: 0,
                        }],
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "FetchCommittedOffsets billing",
        code(
            client
                .fetch_committed_offsets(with(
                    t,
                    proto::FetchCommittedOffsetsRequest {
                        group: "billing".into(),
                        topic: "orders".into(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "DescribeGroup billing",
        code(
            client
                .describe_group(with(
                    t,
                    proto::DescribeGroupRequest {
                        group: "billing".into(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "GroupHeartbeat audit",
        code(
            client
                .group_heartbeat(with(
                    t,
                    proto::GroupHeartbeatRequest {
                        group: "audit".into(),
                        topics: vec!["orders".into()],
                        ..Default::default()
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "DeleteGroup billing",
        code(
            client
                .delete_group(with(
                    t,
                    proto::DeleteGroupRequest {
                        group: "billing".into(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "InitProducer",
        code(
            client
                .init_producer(with(t, proto::InitProducerRequest::default()))
                .await
                .map(|_| ()),
        ),
    ));
    out.push((
        "DeleteTopic scratch",
        code(
            client
                .delete_topic(with(
                    t,
                    proto::DeleteTopicRequest {
                        name: "scratch".into(),
                    },
                ))
                .await
                .map(|_| ()),
        ),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_rules_decide_every_rpc_and_a_revoke_ends_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    let admin = auth(&file, &["add", "admin", "--superuser"]);
    let reader = auth(&file, &["add", "reader"]);
    let writer = auth(&file, &["add", "writer"]);
    auth(&file, &["allow", "reader", "read", "topic:orders"]);
    auth(&file, &["allow", "reader", "read", "group:audit"]);
    auth(&file, &["allow", "reader", "describe", "group:billing"]);
    auth(&file, &["allow", "writer", "write", "topic:ord*"]);
    auth(&file, &["allow", "writer", "all", "group:billing"]);
    auth(&file, &["allow", "writer", "create", "topic:scratch"]);
    auth(&file, &["allow", "writer", "delete", "topic:scratch"]);
    assert!(admin.starts_with("strata_") && admin != reader);
    // The file holds hashes, never a token.
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&reader) && !text.contains(&admin), "{text}");
    // `auth check` explains.
    let check = auth(&file, &["check", "writer", "describe", "topic:orders"]);
    assert!(
        check.contains("allowed") && check.contains("allow write topic:ord*"),
        "{check}"
    );
    let denied = cli::run(
        None,
        &[
            "auth",
            "check",
            "reader",
            "write",
            "topic:orders",
            "--file",
            file.to_str().unwrap(),
        ],
        b"",
    );
    assert!(denied.failed().contains("denied"), "{}", denied.stderr);

    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--auth-file", file.to_str().unwrap()]);
    let mut client = server.client().await;
    client
        .create_topic(with(
            Some(&admin),
            proto::CreateTopicRequest {
                name: "orders".into(),
                partitions: 1,
                config: None,
                replication_factor: 0,
            },
        ))
        .await
        .unwrap();
    client
        .create_topic(with(
            Some(&admin),
            proto::CreateTopicRequest {
                name: "payments".into(),
                partitions: 1,
                config: None,
                replication_factor: 0,
            },
        ))
        .await
        .unwrap();

    let expected: [(&str, Option<&str>, [Code; 14]); 5] = [
        // CreateTopic, Alter, DescribeTopic, ListOffsets, Produce, Fetch, Subscribe, Commit,
        // FetchCommitted, DescribeGroup, Heartbeat, DeleteGroup, InitProducer, DeleteTopic
        ("no token", None, [Code::Unauthenticated; 14]),
        (
            "a wrong token",
            Some("strata_0000"),
            [Code::Unauthenticated; 14],
        ),
        (
            "admin",
            Some(&admin),
            [
                Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes, Yes,
            ],
        ),
        (
            "reader",
            Some(&reader),
            [
                No, No, Yes, Yes, No, Yes, Yes, No, Yes, Yes, Yes, No, Yes, No,
            ],
        ),
        (
            "writer",
            Some(&writer),
            [
                Yes, No, Yes, Yes, Yes, No, No, No, Yes, Yes, No, Yes, Yes, Yes,
            ],
        ),
    ];
    for (who, token, codes) in expected {
        let got = every_rpc(&mut client, token).await;
        for ((rpc, code), want) in got.iter().zip(codes) {
            // Allowed is anything but the two refusals (a group deleted by an earlier row
            // answers NOT_FOUND, past the checks).
            let class = match code {
                Code::Unauthenticated | Code::PermissionDenied => *code,
                _ => Code::Ok,
            };
            assert_eq!(class, want, "{who}: {rpc} answered {code:?}");
        }
    }
    // A denial names principal, operation and resource.
    let denied = client
        .produce(with(
            Some(&reader),
            proto::ProduceRequest {
                topic: "orders".into(),
                partition: Some(0),
                records: vec![],
                batch: batch(),
            },
        ))
        .await
        .unwrap_err();
    assert!(
        denied.message().contains("'reader'")
            && denied.message().contains("write")
            && denied.message().contains("topic:orders"),
        "{}",
        denied.message()
    );
    // A start at a group's commit reads the group: describe on it is needed too.
    let at_group = |group: &str| proto::FetchRequest {
        topic: "orders".into(),
        partition: 0,
        start: Some(StartPosition {
            position: Some(Position::Group(group.into())),
        }),
        ..Default::default()
    };
    let other = client
        .fetch(with(Some(&reader), at_group("treasury")))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::PermissionDenied, "{other:?}");
    assert!(
        other.message().contains("group:treasury"),
        "{}",
        other.message()
    );
    client
        .fetch(with(Some(&reader), at_group("billing")))
        .await
        .unwrap();
    // Lists show what the principal may describe.
    let listed = |r: proto::ListTopicsResponse| -> Vec<String> {
        r.topics.into_iter().map(|t| t.name).collect()
    };
    let for_reader = client
        .list_topics(with(Some(&reader), proto::ListTopicsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(for_reader), ["orders"]);
    let for_admin = client
        .list_topics(with(Some(&admin), proto::ListTopicsRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed(for_admin), ["orders", "payments"]);
    // Health stays open.
    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Channel::from_shared(server.url())
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let serving = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(serving.status, 1, "SERVING");

    // The reader subscribes; then it is revoked, and the broker told by SIGHUP.
    let mut stream = client
        .subscribe(with(
            Some(&reader),
            proto::SubscribeRequest {
                topic: "orders".into(),
                partitions: vec![],
                start: Some(earliest()),
                max_bytes: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(
        stream.message().await.unwrap().is_some(),
        "it reads what is there"
    );
    // And long-polls past the end, for longer than the test runs.
    let long_poll = {
        let (mut client, reader) = (client.clone(), reader.clone());
        tokio::spawn(async move {
            client
                .fetch(with(
                    Some(&reader),
                    proto::FetchRequest {
                        topic: "orders".into(),
                        partition: 0,
                        start: Some(StartPosition {
                            position: Some(Position::Latest(Empty {})),
                        }),
                        max_wait_ms: 600_000,
                        ..Default::default()
                    },
                ))
                .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!long_poll.is_finished(), "the long poll waits");
    auth(&file, &["revoke", "reader"]);
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the revoked subscription did not end");
    let status = ended.expect("it ends with an error, not as if the broker shut down");
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());
    let polled = tokio::time::timeout(std::time::Duration::from_secs(10), long_poll)
        .await
        .expect("the revoked reader's long poll did not end")
        .unwrap()
        .expect_err("a revoked long poll ends with an error");
    assert_eq!(polled.code(), Code::Unauthenticated, "{polled:?}");
    assert!(polled.message().contains("revoked"), "{}", polled.message());
    let after = client
        .describe_topic(with(
            Some(&reader),
            proto::DescribeTopicRequest {
                name: "orders".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(after.code(), Code::Unauthenticated);

    // An oversized header is refused unread; a burst of wrong tokens runs out of tries, after
    // which even a right token from that address waits.
    let long = "x".repeat(4096);
    let oversized = client
        .list_topics(with(Some(&long), proto::ListTopicsRequest {}))
        .await
        .unwrap_err();
    assert_eq!(oversized.code(), Code::Unauthenticated);
    assert!(
        oversized.message().contains("bytes"),
        "{}",
        oversized.message()
    );
    let mut limited = None;
    for i in 0..100 {
        let e = client
            .list_topics(with(
                Some(&format!("strata_guess{i}")),
                proto::ListTopicsRequest {},
            ))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
        if e.message().contains("too many failed") {
            limited = Some(i);
            break;
        }
    }
    let limited = limited.expect("100 wrong tokens in a row were all checked");
    assert!(limited <= 25, "limited only after {limited} tries");
    let locked = client
        .list_topics(with(Some(&admin), proto::ListTopicsRequest {}))
        .await
        .unwrap_err();
    assert!(
        locked.message().contains("too many failed"),
        "{}",
        locked.message()
    );
}

/// Sends the broker SIGHUP: it reads the principals file again.
fn reload(server: &Server) {
    rustix::process::kill_process(
        rustix::process::Pid::from_raw(server.pid() as i32).unwrap(),
        rustix::process::Signal::HUP,
    )
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_token_ends_the_subscriptions_opened_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    let admin = auth(&file, &["add", "admin", "--superuser"]);
    let old = auth(&file, &["add", "reader"]);
    auth(&file, &["allow", "reader", "read", "topic:orders"]);
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--auth-file", file.to_str().unwrap()],
    );
    let mut client = server.client().await;
    client
        .create_topic(with(
            Some(&admin),
            proto::CreateTopicRequest {
                name: "orders".into(),
                partitions: 1,
                config: None,
                replication_factor: 0,
            },
        ))
        .await
        .unwrap();
    let subscribe = |token: &str| {
        with(
            Some(token),
            proto::SubscribeRequest {
                topic: "orders".into(),
                partitions: vec![],
                start: Some(earliest()),
                max_bytes: 0,
            },
        )
    };
    let mut by_old = client
        .subscribe(subscribe(&old))
        .await
        .unwrap()
        .into_inner();
    let new = auth(&file, &["add", "reader", "--rotate"]);
    reload(&server);
    let ended = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            match by_old.message().await {
                Ok(Some(_)) => {}
                Ok(None) => return None,
                Err(status) => return Some(status),
            }
        }
    })
    .await
    .expect("the old token's subscription did not end")
    .expect("it ends with an error");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(ended.message().contains("rotated"), "{}", ended.message());
    // The new token subscribes, and keeps its subscription over a reload that changes nothing.
    let mut by_new = client
        .subscribe(subscribe(&new))
        .await
        .unwrap()
        .into_inner();
    reload(&server);
    client
        .produce(with(
            Some(&admin),
            proto::ProduceRequest {
                topic: "orders".into(),
                partition: Some(0),
                records: vec![],
                batch: batch(),
            },
        ))
        .await
        .unwrap();
    let got = tokio::time::timeout(std::time::Duration::from_secs(10), by_new.message())
        .await
        .expect("the new token's subscription gets the record");
    assert!(got.unwrap().is_some());
}
