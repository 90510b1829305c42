//! Topic admin over gRPC: create, list, describe, alter and delete; topics and their config
//! survive a restart, a deleted topic's files are gone; health and reflection answer.

mod common;

use common::{Server, create_topic, produce_values, values};
use strata::proto::{
    AlterTopicConfigRequest, CreateTopicRequest, DeleteTopicRequest, DescribeTopicRequest,
    FsyncPolicy, ListTopicsRequest, TopicConfig,
};
use tonic::Code;

#[tokio::test]
async fn topics_are_managed_and_persist() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut c = server.client().await;

    let created = c
        .create_topic(CreateTopicRequest {
            name: "metrics".into(),
            partitions: 3,
            config: Some(TopicConfig {
                retention_ms: Some(3_600_000),
                fsync_policy: Some(FsyncPolicy::Never.into()),
                ..TopicConfig::default()
            }),
            replication_factor: 0,
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    assert_eq!(created.partitions, 3);
    let config = created.config.unwrap();
    assert_eq!(config.retention_ms, Some(3_600_000));
    assert_eq!(config.fsync_policy, Some(FsyncPolicy::Never.into()));
    assert_eq!(config.retention_bytes, Some(-1), "every field is filled in");
    assert!(config.max_record_bytes.unwrap() > 0);

    create_topic(&mut c, "audit", 1).await;
    let described = c
        .describe_topic(DescribeTopicRequest {
            name: "audit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.topic.unwrap().config.unwrap().fsync_policy,
        Some(FsyncPolicy::Always.into()),
        "new topics are durable by default"
    );
    produce_values(&mut c, "metrics", 1, &values("m", 0, 4)).await;

    let altered = c
        .alter_topic_config(AlterTopicConfigRequest {
            name: "metrics".into(),
            config: Some(TopicConfig {
                retention_ms: Some(-1),
                max_record_bytes: Some(4096),
                ..TopicConfig::default()
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap()
        .config
        .unwrap();
    assert_eq!(altered.retention_ms, Some(-1));
    assert_eq!(altered.max_record_bytes, Some(4096));
    assert_eq!(
        altered.fsync_policy,
        Some(FsyncPolicy::Never.into()),
        "unset fields keep their value"
    );

    // Restart: topics, config and data are back.
    drop(c);
    assert!(server.terminate().await.success());
    let server = Server::start(dir.path());
    let mut c = server.client().await;
    let listed = c
        .list_topics(ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner();
    let names: Vec<_> = listed.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["audit", "metrics"]);
    let described = c
        .describe_topic(DescribeTopicRequest {
            name: "metrics".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.topic.unwrap().config.unwrap().max_record_bytes,
        Some(4096)
    );
    assert_eq!(described.partitions.len(), 3);
    assert_eq!(described.partitions[1].next_offset, 4);
    assert_eq!(described.partitions[0].next_offset, 0);
    assert!(described.partitions[1].bytes > 0);
    assert!(described.partitions[1].segments >= 1);

    // Delete: gone from the API and from the disk, and the name can be used again.
    c.delete_topic(DeleteTopicRequest {
        name: "metrics".into(),
    })
    .await
    .unwrap();
    assert!(!dir.path().join("topics").join("metrics").exists());
    let trash = std::fs::read_dir(dir.path().join("trash")).unwrap().count();
    assert_eq!(trash, 0, "the deleted topic's files are removed");
    let err = c
        .describe_topic(DescribeTopicRequest {
            name: "metrics".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = c
        .delete_topic(DeleteTopicRequest {
            name: "metrics".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    create_topic(&mut c, "metrics", 1).await;
    let described = c
        .describe_topic(DescribeTopicRequest {
            name: "metrics".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        described.partitions[0].next_offset, 0,
        "a recreated topic starts empty"
    );
}

#[tokio::test]
async fn health_and_reflection_answer() {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = format!("http://{}", server.addr);

    let channel = tonic::transport::Endpoint::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    let status = health
        .check(HealthCheckRequest {
            service: "strata.v1.Strata".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.status(), ServingStatus::Serving);

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer {response:?}");
    };
    let services: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(services.contains(&"strata.v1.Strata"), "{services:?}");
    assert!(services.contains(&"grpc.health.v1.Health"), "{services:?}");
}
