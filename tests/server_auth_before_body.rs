//! With a principals file, a request without valid credentials is refused UNAUTHENTICATED from
//! its headers, before its body is read: producers that announce huge messages without a token
//! (or with a wrong one) and then stall get their answer at once and hold none of the request
//! budget, while a principal with a token produces meanwhile.

#![allow(clippy::unwrap_used, clippy::float_cmp)] // a test; the compared samples are small integers

mod common;

use common::{
    cli, free_port,
    hostile::{half_sent_produce, start_server, wait_until},
    metrics::{scrape, value},
    with_token,
};
use strata::proto::{ProduceRequest, Record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_credentials_are_refused_before_their_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("principals.json");
    let file_arg = file.to_str().unwrap();
    let token = cli::add_superuser(&file, "alice");
    let port = free_port();
    let metrics = format!("127.0.0.1:{port}");
    // A 256 MiB limit: a stalled 250 MiB message would hold its room for 5 s + 1 s per MiB,
    // far longer than this test waits.
    let server = start_server(
        dir.path(),
        &[
            "--auth-file",
            file_arg,
            "--max-request-bytes",
            "268435456",
            "--metrics-listen",
            &metrics,
        ],
    );
    let announced = 250 << 20;
    let wrong = "Bearer strata_0000000000000000000000000000000000000000000000000000000000000000";
    let stalled = vec![
        half_sent_produce(server.addr, announced, 1024, &[]).await,
        half_sent_produce(server.addr, announced, 1024, &[("authorization", wrong)]).await,
    ];
    let refused = |s: &prometheus_parse::Scrape| {
        value(
            s,
            "strata_rpc_requests_total",
            &[("rpc", "Produce"), ("code", "UNAUTHENTICATED")],
        )
        .unwrap_or(0.0)
    };
    wait_until("both stalled producers refused", || {
        let s = scrape(port);
        (refused(&s) == 2.0, refused(&s))
    })
    .await;
    let s = scrape(port);
    assert_eq!(
        value(&s, "strata_request_budget_bytes_in_use", &[]),
        Some(0.0),
        "unauthenticated requests hold room in the budget"
    );

    // A principal with a token is served while the stalled connections stay open.
    let mut client = server.client().await;
    client
        .create_topic(with_token(
            Some(&token),
            strata::proto::CreateTopicRequest {
                name: "orders".into(),
                partitions: 1,
                config: None,
                replication_factor: 0,
            },
        ))
        .await
        .unwrap();
    let produced = client
        .produce(with_token(
            Some(&token),
            ProduceRequest {
                topic: "orders".into(),
                records: vec![Record {
                    value: b"v".to_vec().into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(produced.results[0].record_count, 1);
    drop(stalled);
}
