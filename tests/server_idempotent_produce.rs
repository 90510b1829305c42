//! Idempotent produce over gRPC against the real binary: `InitProducer` gives ids never given
//! before (also after a SIGKILL), a batch sent twice is answered twice with the same offsets and
//! stored once (also after the broker was SIGKILLed between the sends), a gap in the sequences and
//! an older epoch are FAILED_PRECONDITION naming the producer and what comes next, and an id the
//! broker never gave is INVALID_ARGUMENT.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::{Client, Server, create_topic};
use strata::proto::{InitProducerRequest, ProduceRequest, ProduceResult};
use strata::record::{BatchBuilder, ProducerStamp};
use tonic::Code;

fn batch(id: u64, epoch: u16, seq: u32, values: &[&str]) -> Bytes {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push_parts(1, None, v.as_bytes(), []);
    }
    Bytes::from(b.finish_stamped(
        0,
        Some(ProducerStamp {
            producer_id: id,
            epoch,
            base_sequence: seq,
        }),
    ))
}

async fn produce(client: &mut Client, bytes: &Bytes) -> Result<ProduceResult, tonic::Status> {
    client
        .produce(ProduceRequest {
            topic: "t".into(),
            partition: Some(0),
            records: Vec::new(),
            batch: bytes.clone(),
        })
        .await
        .map(|r| r.into_inner().results[0])
}

async fn init(
    client: &mut Client,
    current: Option<(u64, u32)>,
) -> Result<(u64, u32), tonic::Status> {
    client
        .init_producer(InitProducerRequest {
            producer_id: current.map(|c| c.0),
            producer_epoch: current.map_or(0, |c| c.1),
        })
        .await
        .map(|r| {
            let r = r.into_inner();
            (r.producer_id, r.producer_epoch)
        })
}

async fn stored_values(client: &mut Client) -> Vec<String> {
    common::stored(client, "t", 0)
        .await
        .into_iter()
        .map(|(_, v)| String::from_utf8(v).unwrap())
        .collect()
}

#[tokio::test]
async fn a_resent_batch_is_stored_once_and_gaps_and_old_epochs_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "t", 1).await;

    let (id, epoch) = init(&mut client, None).await.unwrap();
    assert_ne!(id, 0);
    assert_eq!(epoch, 0);
    let (other, _) = init(&mut client, None).await.unwrap();
    assert_ne!(other, id, "each producer gets its own id");
    let e = init(&mut client, Some((id + 1_000_000, 0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");

    let first = batch(id, 0, 0, &["a", "b"]);
    let at = produce(&mut client, &first).await.unwrap();
    // Another producer's record between, then the first batch again.
    produce(&mut client, &batch(other, 0, 0, &["x"]))
        .await
        .unwrap();
    assert_eq!(produce(&mut client, &first).await.unwrap(), at);

    let gap = produce(&mut client, &batch(id, 0, 5, &["c"]))
        .await
        .unwrap_err();
    assert_eq!(gap.code(), Code::FailedPrecondition, "{gap:?}");
    assert!(
        gap.message().contains(&format!("producer {id}")) && gap.message().contains("2 comes next"),
        "{}",
        gap.message()
    );

    // The broker dies between a send and its resend (the answer was lost, say).
    let second = batch(id, 0, 2, &["c"]);
    let second_at = produce(&mut client, &second).await.unwrap();
    drop(client);
    server.kill();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    assert_eq!(
        produce(&mut client, &second).await.unwrap(),
        second_at,
        "after a SIGKILL the resend is still recognised"
    );
    let (after_kill, _) = init(&mut client, None).await.unwrap();
    assert!(
        after_kill > other,
        "ids are not given again after a SIGKILL"
    );

    // The next epoch starts at sequence 0 and fences the old one.
    let (same, next_epoch) = init(&mut client, Some((id, 0))).await.unwrap();
    assert_eq!((same, next_epoch), (id, 1));
    produce(&mut client, &batch(id, 1, 0, &["d"]))
        .await
        .unwrap();
    let fenced = produce(&mut client, &batch(id, 0, 3, &["e"]))
        .await
        .unwrap_err();
    assert_eq!(fenced.code(), Code::FailedPrecondition, "{fenced:?}");
    assert!(fenced.message().contains("fenced"), "{}", fenced.message());

    assert_eq!(stored_values(&mut client).await, ["a", "b", "x", "c", "d"]);
}
