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
        Baseline, Probe, assert_memory_bounded, fill_backlog, open_sockets, start_server,
        wait_until,
    },
    subscribe_from,
};
use std::net::SocketAddr;
use strata::proto::ProduceRequest;
use tokio::{io::AsyncWriteExt, net::TcpStream};

const ROUNDS: usize = 50;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// An HPACK literal header field without indexing, with a new name (short strings only).
fn header(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0, name.len() as u8];
    out.extend(name.as_bytes());
    out.push(value.len() as u8);
    out.extend(value.as_bytes());
    out
}

/// Opens a connection and starts a Produce request whose message announces `announced` bytes,
/// sending only `sent` of them (at most the 64 KiB the default stream window allows).
async fn half_sent_produce(addr: SocketAddr, announced: u32, sent: usize) -> TcpStream {
    let mut headers = Vec::new();
    for (name, value) in [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/strata.v1.Strata/Produce"),
        (":authority", "127.0.0.1"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
    ] {
        headers.extend(header(name, value));
    }
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    bytes.extend(frame(4, 0, 0, &[])); // SETTINGS
    bytes.extend(frame(1, 4, 1, &headers)); // HEADERS, END_HEADERS, stream 1
    let mut message = vec![0];
    message.extend(announced.to_be_bytes());
    message.resize(5 + sent, b'x');
    for chunk in message.chunks(16 * 1024) {
        bytes.extend(frame(0, 0, 1, chunk)); // DATA, not the end of the stream
    }
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket.write_all(&bytes).await.unwrap();
    socket
}

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
        let socket = half_sent_produce(server.addr, 32 << 20, 60 * 1024).await;
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
        half_sent_produce(server.addr, announced, 1024).await,
        half_sent_produce(server.addr, announced, 1024).await,
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
