//! Deleting a topic ends the subscriptions and parked long-polls on it with NOT_FOUND, at once.

mod common;

use common::{Server, at_offset, create_topic, produce_values, subscribe_from, values};
use std::time::Duration;
use strata::proto::{DeleteTopicRequest, FetchRequest};
use tonic::Code;

#[tokio::test]
async fn readers_of_a_deleted_topic_get_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "doomed", 1).await;
    produce_values(&mut client, "doomed", 0, &values("v", 0, 2)).await;

    let mut sub = server.client().await;
    let mut stream = subscribe_from(&mut sub, "doomed", &[], 0, 0).await;
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.next_offset, 2);

    let mut poller = server.client().await;
    let parked = tokio::spawn(async move {
        poller
            .fetch(FetchRequest {
                topic: "doomed".into(),
                partition: 0,
                start: at_offset(2),
                max_wait_ms: 120_000,
                ..FetchRequest::default()
            })
            .await
    });

    client
        .delete_topic(DeleteTopicRequest {
            name: "doomed".into(),
        })
        .await
        .unwrap();

    let end = tokio::time::timeout(Duration::from_secs(60), stream.message())
        .await
        .expect("the subscription was not ended");
    assert_eq!(end.unwrap_err().code(), Code::NotFound);
    let polled = tokio::time::timeout(Duration::from_secs(60), parked)
        .await
        .expect("the long-poll was not woken")
        .unwrap();
    // The poll may also have arrived after the delete: NOT_FOUND either way.
    assert_eq!(polled.unwrap_err().code(), Code::NotFound);
}
