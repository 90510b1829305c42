//! Crash: the broker is SIGKILLed while several clients produce and a consumer group commits.
//! After a restart every acknowledged record is there at the offset it was acknowledged with, the
//! partitions have no gaps, and the group's offset is the last one acknowledged (or one whose
//! commit was in flight at the kill).

mod common;

use common::{Server, create_topic, fetch_all, produce_values, values};
use std::sync::{Arc, Mutex};
use strata::proto::{CommitOffsetsRequest, FetchCommittedOffsetsRequest, PartitionOffset};
use tokio::sync::watch;

const PRODUCERS: u32 = 4;
const PARTITIONS: u32 = 3;
/// Acknowledged batches after which the broker is killed.
const KILL_AFTER: usize = 120;

#[derive(Debug, Clone)]
struct Acked {
    partition: u32,
    base_offset: u64,
    values: Vec<Vec<u8>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Commits {
    acknowledged: Option<u64>,
    attempted: Option<u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_and_commits_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut admin = server.client().await;
    create_topic(&mut admin, "events", PARTITIONS).await;

    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let (progress_tx, mut progress) = watch::channel(0usize);
    let progress_tx = Arc::new(progress_tx);
    let mut tasks = Vec::new();
    for producer in 0..PRODUCERS {
        let mut client = server.client().await;
        let acked = acked.clone();
        let progress_tx = progress_tx.clone();
        tasks.push(tokio::spawn(async move {
            let partition = producer % PARTITIONS;
            for seq in 0.. {
                let vals = values(&format!("p{producer}-s{seq}"), 0, 10);
                let sent = client
                    .produce(strata::proto::ProduceRequest {
                        topic: "events".into(),
                        partition: Some(partition),
                        records: vals
                            .iter()
                            .map(|v| strata::proto::Record {
                                value: v.clone().into(),
                                ..Default::default()
                            })
                            .collect(),
                        batch: bytes::Bytes::new(),
                    })
                    .await;
                let Ok(resp) = sent else { return }; // the broker is gone
                let base_offset = resp.into_inner().results[0].base_offset;
                let total = {
                    let mut acked = acked.lock().unwrap();
                    acked.push(Acked {
                        partition,
                        base_offset,
                        values: vals,
                    });
                    acked.len()
                };
                progress_tx.send_replace(total);
            }
        }));
    }

    // A consumer group commits ever larger offsets in partition 0 as records arrive there.
    let commits: Arc<Mutex<Commits>> = Arc::default();
    {
        let mut client = server.client().await;
        let commits = commits.clone();
        let mut progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            let mut last = 0;
            while progress.changed().await.is_ok() {
                let Ok(resp) = client
                    .describe_topic(strata::proto::DescribeTopicRequest {
                        name: "events".into(),
                    })
                    .await
                else {
                    return;
                };
                let next = resp.into_inner().partitions[0].next_offset;
                if next <= last {
                    continue;
                }
                commits.lock().unwrap().attempted = Some(next);
                let done = client
                    .commit_offsets(CommitOffsetsRequest {
                        group: "auditors".into(),
                        offsets: vec![PartitionOffset {
                            topic: "events".into(),
                            partition: 0,
                            offset: next,
                        }],
                        ..CommitOffsetsRequest::default()
                    })
                    .await;
                if done.is_err() {
                    return;
                }
                commits.lock().unwrap().acknowledged = Some(next);
                last = next;
            }
        }));
    }

    progress
        .wait_for(|&n| n >= KILL_AFTER)
        .await
        .expect("producers stopped before the kill");
    server.kill();
    drop(progress_tx);
    for t in tasks {
        t.await.unwrap();
    }

    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);
    for partition in 0..PARTITIONS {
        let stored = fetch_all(&mut client, "events", partition, 0).await;
        for (i, r) in stored.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "partition {partition} has a gap");
        }
        for a in acked.iter().filter(|a| a.partition == partition) {
            for (i, v) in a.values.iter().enumerate() {
                let offset = a.base_offset + i as u64;
                let r = stored.get(offset as usize).unwrap_or_else(|| {
                    panic!("acknowledged offset {offset} of partition {partition} is lost")
                });
                assert_eq!(&r.value, v, "partition {partition} offset {offset}");
            }
        }
    }

    let commits = *commits.lock().unwrap();
    let acknowledged = commits
        .acknowledged
        .expect("at least one commit was acknowledged");
    let committed = client
        .fetch_committed_offsets(FetchCommittedOffsetsRequest {
            group: "auditors".into(),
            topic: "events".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let stored = committed.offsets[0].offset;
    assert!(
        stored == acknowledged || Some(stored) == commits.attempted,
        "committed offset {stored}, acknowledged {acknowledged}, attempted {:?}",
        commits.attempted
    );

    // The restarted broker takes new records after the recovered ones.
    let next = produce_values(&mut client, "events", 0, &values("after", 0, 1)).await;
    assert_eq!(
        next,
        fetch_all(&mut client, "events", 0, 0).await.len() as u64 - 1
    );
}
