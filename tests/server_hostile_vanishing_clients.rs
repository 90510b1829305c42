//! Clients that vanish or stall mid-stream: subscribers that read a little of a backlog and drop
//! their connection; producers that announce a large request, send part of it and close the
//! socket; producers that announce a request and then stall with the socket open. The broker
//! keeps serving a probe client, stays under its memory bound, and gives back everything they
//! held: sockets, memory, and room in the request memory budget.
//!
//! The half-sent requests are written as raw HTTP/2 frames, so that the client stops exactly where
//! the test wants it to.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{
    batch_of,
    hostile::{
        Baseline, Probe, assert_memory_bounded, fill_backlog, half_sent_produce, open_sockets,
        start_server, wait_until,
    },
    subscribe_from,
};
use strata::proto::ProduceRequest;

const ROUNDS: usize = 50;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_and_producers_that_vanish_mid_stream_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let mut client = server.client().await;
    fill_backlog(&mut client, 16).await;
    let probe = Probe::start(&server).await;
    let baseline = Baseline::take(&server);

    for round in 0..ROUNDS {
        // A subscriber reads a message or two of the backlog and is gone.
        let mut c = server.client().await;
        let mut stream = subscribe_from(&mut c, "backlog", &[0], 0, 0).await;
        for _ in 0..=round % 2 {
            stream.message().await.unwrap().unwrap();
        }
        drop(stream);
        drop(c);
        // A producer announces 32 MiB, sends 60 KiB of it and closes the connection.
        let socket = half_sent_produce(server.addr, 32 << 20, 60 * 1024, &[]).await;
        drop(socket);
    }
    probe.served(20).await;
    assert_memory_bounded(&server, "clients vanishing mid-stream");
    baseline
        .wait_for_return(&server, "clients vanishing mid-stream")
        .await;
    // Every vanished request gave its room in the budget back: a large request still fits.
    let big: Vec<Vec<u8>> = (0..48).map(|_| vec![7u8; 1000 * 1024]).collect();
    client
        .produce(ProduceRequest {
            topic: "backlog".into(),
            partition: Some(0),
            records: vec![],
            batch: batch_of(&big),
        })
        .await
        .unwrap();
    probe.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producers_that_stall_mid_request_do_not_hold_the_request_budget() {
    // A 1 MiB request limit makes the budget 2 MiB: two stalled requests fill it.
    let max_request_bytes: u32 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(
        dir.path(),
        &["--max-request-bytes", &max_request_bytes.to_string()],
    );
    let probe = Probe::start(&server).await;
    let baseline = Baseline::take(&server);

    let announced = max_request_bytes - 5;
    let stalled = vec![
        half_sent_produce(server.addr, announced, 1024, &[]).await,
        half_sent_produce(server.addr, announced, 1024, &[]).await,
    ];
    let pid = server.pid();
    wait_until("the stalled producers connected", || {
        let open = open_sockets(pid);
        (open >= baseline.sockets + stalled.len(), open)
    })
    .await;
    // The probe's requests wait for room until the stalled requests time out (a few seconds),
    // then go on; without that timeout they would wait for ever.
    probe.served(10).await;
    assert_memory_bounded(&server, "producers stalled mid-request");
    drop(stalled);
    baseline
        .wait_for_return(&server, "producers stalled mid-request")
        .await;
    probe.stop().await;
}
