//! A failed segment fsync under `fsync always`, in a broker served in-process with a fault
//! injector and seen over real gRPC: the produce that needed it is not acknowledged (UNAVAILABLE
//! for EIO, RESOURCE_EXHAUSTED for ENOSPC, naming the partition and the fsync); that partition then
//! refuses every write with FAILED_PRECONDITION saying it is poisoned and a restart recovers it,
//! also once the disk works again; what it had acknowledged is still served and the refused
//! records are not; the topic's other partition and another topic keep taking writes, also while
//! the failing disk still fails; and a restart brings the partition back with every acknowledged
//! record, the failed one whole or not at all, appending at the next offset.

#![allow(clippy::unwrap_used)] // a test: a failed unwrap is a failed test

mod common;

use common::faults::{EIO, ENOSPC, Fault, Script};
use common::inproc::InProc;
use common::{Client, at_offsets, create_topic_with, produce_values, stored, values};
use strata::proto::{DescribeTopicRequest, FsyncPolicy, ProduceRequest, Record, TopicConfig};
use strata::storage::FileOp;
use tonic::Code;

/// Partition 0 of topic `t`'s (only) segment.
const SEGMENT_OF_T0: &str = "/t/0/00000000000000000000.log";

async fn create_durable_topic(client: &mut Client, name: &str, partitions: u32) {
    let config = TopicConfig {
        fsync_policy: Some(FsyncPolicy::Always.into()),
        ..TopicConfig::default()
    };
    create_topic_with(client, name, partitions, config).await;
}

async fn produce(client: &mut Client, partition: u32, value: &[u8]) -> Result<u64, tonic::Status> {
    let resp = client
        .produce(ProduceRequest {
            topic: "t".into(),
            partition: Some(partition),
            records: vec![Record {
                value: value.to_vec().into(),
                ..Record::default()
            }],
            batch: bytes::Bytes::new(),
        })
        .await?;
    Ok(resp.into_inner().results[0].base_offset)
}

/// `t/0`, `t/1` and `other/0` hold exactly these values, from offset 0.
async fn assert_all_stored(client: &mut Client, parts: [&[Vec<u8>]; 3], ctx: &str) {
    for ((topic, partition), values) in [("t", 0), ("t", 1), ("other", 0)].into_iter().zip(parts) {
        let found = stored(client, topic, partition).await;
        assert_eq!(found, at_offsets(values), "{ctx}: {topic}/{partition}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fsync_poisons_only_its_partition_until_a_restart() {
    for (errno, code) in [(EIO, Code::Unavailable), (ENOSPC, Code::ResourceExhausted)] {
        let ctx = format!("errno {errno}");
        let script = Script::new();
        let server = InProc::start_with_faults(script.as_injector()).await;
        let mut client = server.client().await;
        create_durable_topic(&mut client, "t", 2).await;
        create_durable_topic(&mut client, "other", 1).await;
        let mut t0 = values("t0", 0, 5);
        let mut t1 = values("t1", 0, 3);
        let mut other = values("o", 0, 2);
        assert_eq!(produce_values(&mut client, "t", 0, &t0).await, 0);
        assert_eq!(produce_values(&mut client, "t", 1, &t1).await, 0);
        assert_eq!(produce_values(&mut client, "other", 0, &other).await, 0);

        // Partition 0's disk fails every fsync from now on.
        script.always(FileOp::Sync, SEGMENT_OF_T0, Fault::Errno(errno));
        let failed = produce(&mut client, 0, b"failed").await.unwrap_err();
        assert_eq!(failed.code(), code, "{ctx}: {failed:?}");
        let msg = failed.message();
        assert!(msg.contains("topic 't' partition 0"), "{ctx}: {msg}");
        assert!(msg.contains("fsync"), "{ctx}: {msg}");
        assert!(script.hit_count() >= 1, "{ctx}: the fault was not hit");

        // Poisoned: every later write is refused, and says what to do.
        let poisoned = |status: &tonic::Status| {
            status.code() == Code::FailedPrecondition
                && status.message().contains("topic 't' partition 0")
                && status.message().contains("poisoned")
                && status.message().contains("restart to recover")
        };
        for i in 0..3 {
            let refused = produce(&mut client, 0, format!("refused-{i}").as_bytes())
                .await
                .unwrap_err();
            assert!(poisoned(&refused), "{ctx}: {refused:?}");
        }
        // The other partition and the other topic take writes, while partition 0's disk still
        // fails.
        t1.push(b"t1-after".to_vec());
        assert_eq!(produce(&mut client, 1, &t1[3]).await.unwrap(), 3, "{ctx}");
        let more = values("o", 2, 2);
        assert_eq!(
            produce_values(&mut client, "other", 0, &more).await,
            2,
            "{ctx}"
        );
        other.extend(more);

        // The disk works again; what it holds is unknown: still refused.
        script.heal();
        let refused = produce(&mut client, 0, b"refused-healed")
            .await
            .unwrap_err();
        assert!(poisoned(&refused), "{ctx}: {refused:?}");
        // What was acknowledged is served, and nothing else.
        let described = client
            .describe_topic(DescribeTopicRequest { name: "t".into() })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(described.partitions[0].next_offset, 5, "{ctx}");
        assert_all_stored(&mut client, [&t0, &t1, &other], &ctx).await;

        // A restart recovers the partition: every acknowledged record, the failed one whole or
        // not at all, and appends at the next offset.
        drop(client);
        let (_closed, server) = server.restart_closing().await;
        let mut client = server.client().await;
        let kept = stored(&mut client, "t", 0).await;
        assert_eq!(kept[..5], at_offsets(&t0)[..], "{ctx}");
        assert!(
            kept.len() == 5 || kept[5..] == [(5, b"failed".to_vec())],
            "{ctx}: {kept:?}"
        );
        if kept.len() == 6 {
            t0.push(b"failed".to_vec());
        }
        let next = t0.len() as u64;
        assert_eq!(
            produce(&mut client, 0, b"recovered").await.unwrap(),
            next,
            "{ctx}"
        );
        t0.push(b"recovered".to_vec());
        assert_all_stored(&mut client, [&t0, &t1, &other], &ctx).await;
        drop(client);
        server.stop().await;
    }
}
