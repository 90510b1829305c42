//! `--max-connections`: with every slot taken, a new connection is closed as soon as the broker
//! accepts it (it gets no HTTP/2 settings, its calls fail), the connections already open keep
//! working, and once one of them closes a new client gets in.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::Server;
use std::time::Duration;
use strata::proto::ListTopicsRequest;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
/// A liveness bound, not a performance target: the broker answers on loopback in milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// Opens a raw HTTP/2 connection and reads what the broker sends back first: some bytes (its
/// SETTINGS frame: the connection was admitted) or none (closed: refused).
async fn raw_connection(addr: &str) -> (TcpStream, usize) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(PREFACE).await.unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the broker neither answered nor closed the connection")
        .unwrap_or(0);
    (stream, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_limit_are_closed_and_slots_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &["--max-connections", "3"]);
    let addr = server.addr.to_string();

    // Slot 1: a gRPC client.
    let mut client = server.client().await;
    client.list_topics(ListTopicsRequest {}).await.unwrap();
    // Slots 2 and 3: raw HTTP/2 connections the broker answers.
    let (second, n) = raw_connection(&addr).await;
    assert!(n > 0, "the second connection was refused");
    let (third, n) = raw_connection(&addr).await;
    assert!(n > 0, "the third connection was refused");

    // A fourth is closed at once, raw or gRPC.
    let (fourth, n) = raw_connection(&addr).await;
    assert_eq!(
        n, 0,
        "a fourth connection was admitted past --max-connections 3"
    );
    let refused =
        match strata::proto::strata_client::StrataClient::connect(format!("http://{addr}")).await {
            Ok(mut c) => c.list_topics(ListTopicsRequest {}).await.is_err(),
            Err(_) => true,
        };
    assert!(refused, "a gRPC call got through past the limit");

    // The admitted client still works.
    client.list_topics(ListTopicsRequest {}).await.unwrap();

    // One closes: its slot comes back.
    drop(second);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let (conn, n) = raw_connection(&addr).await;
        if n > 0 {
            drop(conn);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection was admitted after one of three closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop((client, third, fourth));
    assert!(server.terminate().await.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_without_the_http2_preface_are_closed_and_free_their_slots() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--max-connections", "3", "--handshake-timeout", "300ms"],
    );
    let addr = server.addr.to_string();
    let mut client = server.client().await;
    client.list_topics(ListTopicsRequest {}).await.unwrap();

    // Two connections that never send the HTTP/2 preface (one sends nothing, one a single byte
    // of it) take the other two slots...
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(&addr).await.unwrap());
    }
    silent[1].write_all(b"P").await.unwrap();
    // ...until the broker closes them: their reads end (after the broker's own HTTP/2 settings,
    // which it sends unasked).
    for stream in &mut silent {
        let closed = tokio::time::timeout(PATIENCE, async {
            let mut buf = [0u8; 1024];
            while let Ok(n) = stream.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "a silent connection was not closed");
    }
    // The client that spoke, idle for longer than the timeout, still works; the freed slots take
    // new connections.
    client.list_topics(ListTopicsRequest {}).await.unwrap();
    let (admitted, n) = raw_connection(&addr).await;
    assert!(
        n > 0,
        "a connection was refused after the silent ones were closed"
    );
    drop((client, admitted, silent));
    assert!(server.terminate().await.success());
}
