//! Subscribers that never read: each opens its own connection, subscribes from the start of a
//! large backlog asking for the largest messages the broker allows (16 MiB), and then reads
//! nothing. The broker keeps serving a probe client and its producers, its memory stays under the
//! bound, and when the subscribers go, their tasks, buffers and sockets go with them; a second
//! wave costs what the first did.
//!
//! Caught: each stalled subscriber pinned about two pushed messages of heap (the one tonic had
//! encoded, a copy, waiting for the subscriber's window), and a subscriber could ask for 16 MiB
//! messages: 64 of them took the broker to 2 GiB. Pushed messages are now capped at 1 MiB.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::{
    hostile::{
        Baseline, Probe, assert_memory_bounded, fill_backlog, open_sockets, produce_backlog,
        start_server, wait_until,
    },
    subscribe_from,
};

const STALLED: usize = 64;
const BACKLOG_MIB: usize = 32;
/// The broker's largest fetch (`--max-fetch-bytes` default): the most a subscriber may ask for.
const MAX_FETCH_BYTES: u32 = 16 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_subscribers_asking_for_the_largest_messages_stay_under_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let mut client = server.client().await;
    fill_backlog(&mut client, BACKLOG_MIB).await;
    let probe = Probe::start(&server).await;
    let baseline = Baseline::take(&server);

    for wave in 1..=2 {
        let mut stalled = Vec::new();
        for _ in 0..STALLED {
            let mut c = server.client().await;
            let stream = subscribe_from(&mut c, "backlog", &[0], 0, MAX_FETCH_BYTES).await;
            stalled.push((c, stream));
        }
        let pid = server.pid();
        wait_until("every subscriber connected", || {
            let open = open_sockets(pid);
            (open >= baseline.sockets + STALLED, open)
        })
        .await;
        // Producers and the probe are served while the subscribers hold their streams.
        produce_backlog(&mut client, 20).await;
        probe.served(50).await;
        assert_memory_bounded(
            &server,
            &format!("{STALLED} stalled subscribers, wave {wave}"),
        );

        drop(stalled);
        baseline
            .wait_for_return(
                &server,
                &format!("{STALLED} stalled subscribers, wave {wave}"),
            )
            .await;
    }
    println!("backlog {BACKLOG_MIB} MiB");
    probe.stop().await;
}
