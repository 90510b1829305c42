//! Damage to the files that only speed reads and recovery up: the offset and time indexes of
//! sealed and active segments, and the recovery checkpoint (bit flips, garbage, truncation,
//! removal). After a restart of the stopped broker every record is served, timestamp lookups
//! find the right offsets, and appends go on at the next offset.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/damage.rs"]
mod damage;

use common::files::{files, flip, garbage, truncate};
use common::{Server, produce_values};
use damage::{check_all, partition_dir, populate};
use std::path::Path;
use strata::proto::{FetchRequest, StartPosition, start_position::Position};

#[derive(Debug, Clone, Copy)]
enum Harm {
    Flip,
    Garbage,
    Truncate,
    Remove,
}

fn harm(path: &Path, how: Harm) {
    let len = std::fs::metadata(path).unwrap().len();
    match how {
        Harm::Flip => flip(path, len / 2, 0x81),
        Harm::Garbage => garbage(path, 0, len.max(16) as usize, len),
        Harm::Truncate => truncate(path, len / 2 + 1),
        Harm::Remove => std::fs::remove_file(path).unwrap(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_indexes_and_checkpoints_lose_nothing() {
    for how in [Harm::Flip, Harm::Garbage, Harm::Truncate, Harm::Remove] {
        let dir = tempfile::tempdir().unwrap();
        let (server, acked) = populate(dir.path(), 40).await;
        assert!(server.terminate().await.success());

        let pdir = partition_dir(dir.path(), "damaged", 0);
        let mut targets = Vec::new();
        for ext in ["index", "timeindex"] {
            let all = files(&pdir, ext);
            targets.push(all[1].clone()); // a sealed segment's
            targets.push(all.last().unwrap().clone()); // the active segment's
        }
        targets.push(pdir.join("recovery-point"));
        targets.push(partition_dir(dir.path(), "damaged", 1).join("recovery-point"));
        for path in &targets {
            if std::fs::metadata(path).unwrap().len() > 0 || matches!(how, Harm::Remove) {
                harm(path, how);
            }
        }

        let server = Server::start(dir.path());
        let mut client = server.client().await;
        let part = ("damaged".to_owned(), 0);
        let lost = check_all(&mut client, &acked, &part, |_| false).await;
        assert!(lost.is_empty(), "{how:?}: {lost:?}");
        // Batch k's records carry timestamp 1_000_000 + k: a lookup finds offset 3k.
        for k in [0u64, 5, 17, 39] {
            let resp = client
                .fetch(FetchRequest {
                    topic: "damaged".into(),
                    partition: 0,
                    start: Some(StartPosition {
                        position: Some(Position::TimestampMs(1_000_000 + k as i64)),
                    }),
                    max_bytes: 1,
                    ..FetchRequest::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(resp.start_offset, 3 * k, "{how:?}: timestamp of batch {k}");
        }
        let next = produce_values(&mut client, "damaged", 0, &[b"after".to_vec()]).await;
        assert_eq!(next, acked[&part].len() as u64, "{how:?}");
        drop(client);
        assert!(server.terminate().await.success());
    }
}
