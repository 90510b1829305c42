//! Graceful shutdown: on SIGTERM the broker ends open subscriptions cleanly, answers parked
//! long-polls, exits 0, and a restart finds everything it had acknowledged.

mod common;

use common::{
    Server, at_offset, create_topic, decode, fetch_all, produce_values, subscribe_from, values,
};
use std::time::Duration;
use strata::proto::FetchRequest;

#[tokio::test]
async fn sigterm_ends_streams_cleanly_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "jobs", 1).await;
    produce_values(&mut client, "jobs", 0, &values("job", 0, 5)).await;

    let mut sub_client = server.client().await;
    let mut stream = subscribe_from(&mut sub_client, "jobs", &[0], 0, 0).await;
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(decode(&first.batches, 0).len(), 5);

    // A long-poll parked at the end of the log.
    let mut poller = server.client().await;
    let parked = tokio::spawn(async move {
        poller
            .fetch(FetchRequest {
                topic: "jobs".into(),
                partition: 0,
                start: at_offset(5),
                max_wait_ms: 120_000,
                ..FetchRequest::default()
            })
            .await
    });
    let status = server.terminate().await;
    assert!(status.success(), "strata exited with {status}");

    // The subscription ended without an error.
    let end = tokio::time::timeout(Duration::from_secs(30), stream.message())
        .await
        .expect("the stream did not end");
    assert!(matches!(end, Ok(None)), "the stream ended with {end:?}");
    // The long-poll either answered empty before the exit or saw the connection close; it did
    // not wait out its two minutes.
    let polled = tokio::time::timeout(Duration::from_secs(30), parked)
        .await
        .expect("the long-poll outlived the broker")
        .unwrap();
    if let Ok(resp) = polled {
        assert!(resp.into_inner().batches.is_empty());
    }

    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let got = fetch_all(&mut client, "jobs", 0, 0).await;
    assert_eq!(got.len(), 5);
}
