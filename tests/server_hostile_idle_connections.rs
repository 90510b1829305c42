//! A thousand idle connections: some never say a word (not even the HTTP/2 preface), some open an
//! HTTP/2 connection and send nothing more, some are real gRPC channels that make no call. The
//! broker accepts them all, keeps serving a probe client, stays under its memory bound, and once
//! they close holds no more open sockets than before and about the memory it had.
//!
//! 1,000 connections take 1,000 descriptors in this process and 1,000 in the broker; under an
//! open-file limit too low for that, the test uses fewer and says so.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::hostile::{
    Baseline, Probe, assert_memory_bounded, open_sockets, start_server, wait_until,
};
use strata::client;
use tokio::{io::AsyncWriteExt, net::TcpStream};

const SILENT: usize = 400;
const BARE_HTTP2: usize = 300;
const CHANNELS: usize = 300;
const TOTAL: usize = SILENT + BARE_HTTP2 + CHANNELS;

/// The HTTP/2 connection preface and an empty SETTINGS frame.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// How many connections this machine lets us open: each takes a descriptor in this process and
/// one in the broker (which inherits the limit), plus some room for everything else.
fn connections_allowed() -> usize {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    let allowed = soft.saturating_sub(256).min(TOTAL);
    if allowed < TOTAL {
        println!("note: the open-file limit is {soft}; using {allowed} connections, not {TOTAL}");
    }
    allowed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_cost_little_and_leave_nothing_behind() {
    let allowed = connections_allowed();
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let probe = Probe::start(&server).await;
    let baseline = Baseline::take(&server);

    let mut sockets = Vec::new();
    let silent = allowed * SILENT / TOTAL;
    let bare = allowed * BARE_HTTP2 / TOTAL;
    let channels_n = allowed - silent - bare;
    for _ in 0..silent {
        sockets.push(TcpStream::connect(server.addr).await.unwrap());
    }
    for _ in 0..bare {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        s.write_all(PREFACE).await.unwrap();
        sockets.push(s);
    }
    let mut channels = Vec::new();
    for _ in 0..channels_n {
        channels.push(client::connect(&server.url()).await.unwrap());
    }
    let pid = server.pid();
    wait_until("the broker accepting every connection", || {
        let open = open_sockets(pid);
        (open >= baseline.sockets + allowed, open)
    })
    .await;

    probe.served(50).await;
    assert_memory_bounded(&server, "1,000 idle connections");

    drop(sockets);
    drop(channels);
    baseline
        .wait_for_return(&server, "1,000 idle connections")
        .await;
    probe.served(10).await;
    probe.stop().await;
}
