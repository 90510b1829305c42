//! Maximum-size requests: several clients, each on its own connection, send produce requests just
//! under the broker's 64 MiB request limit at the same time, and others send requests just over
//! it. The ones under are stored, the ones over are refused with RESOURCE_EXHAUSTED, a probe
//! client keeps being served, the broker's memory stays under the bound, and nothing is left
//! behind once the clients go.
//!
//! Caught: tonic buffers each whole request before its handler runs, and nothing limited how many
//! were buffered at once: six 64 MiB requests took the broker to ~400 MiB, and every further
//! client added its request's size. The server now keeps requests within a budget
//! (`src/server/budget.rs`).

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::hostile::{
    Baseline, Probe, assert_memory_bounded, open_sockets, start_server, wait_until,
};
use common::{Client, create_topic};
use strata::{
    proto::{DescribeTopicRequest, ProduceRequest},
    record::{BatchBuilder, validate_batch},
};
use tonic::Code;

/// The broker's default `--max-request-bytes`.
const MAX_REQUEST_BYTES: usize = 64 * 1024 * 1024;
/// Clients sending requests just under the limit, all at once.
const SENDERS: usize = 6;
/// Requests each of them sends, one after the other.
const REQUESTS_EACH: usize = 2;
/// Clients sending requests just over the limit.
const OVERSIZED: usize = 2;
const RECORD_BYTES: usize = 1000 * 1024;

/// A produce request carrying one batch whose encoded request is `size` bytes or a little less.
fn request_of(size: usize) -> ProduceRequest {
    let mut builder = BatchBuilder::default();
    let value = vec![b'v'; RECORD_BYTES];
    // Room for the protobuf framing of the request around the batch.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let budget = size - 64;
    while builder.encoded_len() + RECORD_BYTES + 64 <= budget {
        builder.push_parts(now_ms, None, &value, []);
    }
    let tail = budget - builder.encoded_len() - 64;
    builder.push_parts(now_ms, None, &vec![b't'; tail], []);
    ProduceRequest {
        topic: "big".into(),
        partition: Some(0),
        records: vec![],
        batch: Bytes::from(builder.finish(0)),
    }
}

async fn client(server: &common::Server) -> Client {
    server
        .client()
        .await
        .max_encoding_message_size(2 * MAX_REQUEST_BYTES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_maximum_size_requests_stay_under_the_memory_bound() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &[]);
    let mut admin = server.client().await;
    create_topic(&mut admin, "big", 1).await;
    let probe = Probe::start(&server).await;
    let baseline = Baseline::take(&server);

    let fits = request_of(MAX_REQUEST_BYTES);
    let over = request_of(MAX_REQUEST_BYTES + 64 * 1024);
    let mut tasks = Vec::new();
    for _ in 0..SENDERS {
        let mut c = client(&server).await;
        let request = fits.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..REQUESTS_EACH {
                c.produce(request.clone()).await.unwrap();
            }
            None
        }));
    }
    for _ in 0..OVERSIZED {
        let mut c = client(&server).await;
        let request = over.clone();
        tasks.push(tokio::spawn(async move {
            Some(c.produce(request).await.unwrap_err().code())
        }));
    }
    let pid = server.pid();
    wait_until("every sender connected", || {
        let open = open_sockets(pid);
        (open >= baseline.sockets + SENDERS + OVERSIZED, open)
    })
    .await;
    probe.served(20).await;
    for t in tasks {
        if let Some(code) = t.await.unwrap() {
            assert_eq!(code, Code::ResourceExhausted, "an oversized request");
        }
    }
    probe.served(5).await;
    assert_memory_bounded(&server, "concurrent maximum-size requests");

    let described = admin
        .describe_topic(DescribeTopicRequest { name: "big".into() })
        .await
        .unwrap()
        .into_inner();
    let records_each =
        u64::from(validate_batch(&fits.batch, usize::MAX).unwrap()[0].record_count());
    assert_eq!(
        described.partitions[0].next_offset,
        (SENDERS * REQUESTS_EACH) as u64 * records_each,
        "every request under the limit is stored whole"
    );

    drop(admin);
    baseline
        .wait_for_return(&server, "concurrent maximum-size requests")
        .await;
    probe.stop().await;
}
