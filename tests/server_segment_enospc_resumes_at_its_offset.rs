//! A segment write refused with ENOSPC, in a broker served in-process with a fault injector and
//! seen over real gRPC: the produce fails with RESOURCE_EXHAUSTED naming the partition and saying
//! that the disk is full and nothing was stored; the partition's high watermark does not move and
//! every acknowledged record is still served; a request of two batches whose second write fails
//! stores neither; and once space is back the next produce takes the next offset, with no gap and
//! no duplicate, without a restart and also after one.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use bytes::Bytes;
use common::faults::{ENOSPC, Fault, Script};
use common::inproc::InProc;
use common::{Client, at_offsets, batch_of, create_topic, produce_values, stored, values};
use strata::proto::{DescribeTopicRequest, ProduceRequest, Record};
use strata::storage::FileOp;
use tonic::{Code, Status};

async fn next_offset(client: &mut Client, partition: u32) -> u64 {
    client
        .describe_topic(DescribeTopicRequest { name: "t".into() })
        .await
        .unwrap()
        .into_inner()
        .partitions[partition as usize]
        .next_offset
}

fn records(values: &[Vec<u8>]) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: values
            .iter()
            .map(|v| Record {
                value: Bytes::from(v.clone()),
                ..Record::default()
            })
            .collect(),
        batch: Bytes::new(),
    }
}

fn two_batches(first: &[Vec<u8>], second: &[Vec<u8>]) -> ProduceRequest {
    ProduceRequest {
        topic: "t".into(),
        partition: Some(0),
        records: vec![],
        batch: Bytes::from([batch_of(first), batch_of(second)].concat()),
    }
}

fn assert_disk_full(status: &Status, ctx: &str) {
    assert_eq!(status.code(), Code::ResourceExhausted, "{ctx}: {status:?}");
    let msg = status.message();
    for part in [
        "topic 't' partition 0",
        "no space left",
        "nothing was stored",
    ] {
        assert!(msg.contains(part), "{ctx}: '{part}' not in: {msg}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_segment_write_refused_for_space_loses_nothing_and_resumes_at_its_offset() {
    let script = Script::new();
    let server = InProc::start_with_faults(script.as_injector()).await;
    let mut client = server.client().await;
    create_topic(&mut client, "t", 2).await;
    let mut acked = values("a", 0, 10);
    assert_eq!(produce_values(&mut client, "t", 0, &acked[..4]).await, 0);
    assert_eq!(produce_values(&mut client, "t", 0, &acked[4..]).await, 4);
    let other = values("b", 0, 3);
    assert_eq!(produce_values(&mut client, "t", 1, &other).await, 0);

    // The disk is full for one segment write of each request: the first batch's, or the second
    // batch's after the first was written (the broker then clears what the request wrote, and
    // that write goes through). Right after, space is back.
    let refused = [
        (0, records(&values("x", 0, 1))),
        (0, records(&values("x", 1, 5))),
        (0, two_batches(&values("x", 6, 2), &values("x", 8, 2))),
        (1, two_batches(&values("x", 10, 2), &values("x", 12, 3))),
    ];
    for (i, (skip, request)) in refused.into_iter().enumerate() {
        let ctx = format!("refused request {i}");
        script.fail_after(FileOp::Write, ".log", Fault::Errno(ENOSPC), skip, 1);
        let status = client.produce(request).await.unwrap_err();
        assert_disk_full(&status, &ctx);
        assert_eq!(script.hit_count(), i + 1, "{ctx}: the fault was not hit");
        script.heal();
        // Nothing moved and nothing is lost.
        let next = acked.len() as u64;
        assert_eq!(next_offset(&mut client, 0).await, next, "{ctx}");
        assert_eq!(
            stored(&mut client, "t", 0).await,
            at_offsets(&acked),
            "{ctx}"
        );
        assert_eq!(
            stored(&mut client, "t", 1).await,
            at_offsets(&other),
            "{ctx}"
        );
        // The next produce takes the next offset.
        let one = values("a", acked.len(), 1);
        assert_eq!(
            produce_values(&mut client, "t", 0, &one).await,
            next,
            "{ctx}"
        );
        acked.extend(one);
    }

    // More, in both partitions, also a request of two batches: no gap, no duplicate.
    let more = values("a", acked.len(), 3);
    assert_eq!(produce_values(&mut client, "t", 0, &more).await, 14);
    acked.extend(more);
    let resp = client
        .produce(two_batches(&values("a", 17, 2), &values("a", 19, 1)))
        .await
        .unwrap()
        .into_inner();
    let bases: Vec<u64> = resp.results.iter().map(|r| r.base_offset).collect();
    assert_eq!(bases, [17, 19]);
    acked.extend(values("a", 17, 3));
    assert_eq!(
        produce_values(&mut client, "t", 1, &values("b", 3, 1)).await,
        3
    );
    assert_eq!(stored(&mut client, "t", 0).await, at_offsets(&acked));
    assert_eq!(next_offset(&mut client, 0).await, 20);

    // And a restart finds exactly that, and appends on from it.
    drop(client);
    let server = server.restart().await;
    let mut client = server.client().await;
    assert_eq!(stored(&mut client, "t", 0).await, at_offsets(&acked));
    assert_eq!(
        stored(&mut client, "t", 1).await,
        at_offsets(&values("b", 0, 4))
    );
    assert_eq!(
        produce_values(&mut client, "t", 0, &values("a", 20, 1)).await,
        20
    );
    drop(client);
    server.stop().await;
}
