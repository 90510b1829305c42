//! Garbage over part of a stopped broker's sealed segment (spanning batch boundaries), and a
//! sealed segment cut short: after a restart the records whose bytes were hit are reported as
//! DATA_LOSS naming the topic, the partition and their offsets, never served; every other record,
//! also in the same segment after the damage and in the segments after it, is served.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/damage.rs"]
mod damage;

use common::Server;
use common::files::{batches_in, files, garbage, truncate};
use damage::{check_all, partition_dir, populate};
use strata::record::BatchHeader;

/// The offsets of the batches (as `batches_in` lists them) that overlap `[from, to)`.
fn hit(batches: &[(u64, BatchHeader)], from: u64, to: u64) -> Vec<u64> {
    batches
        .iter()
        .filter(|(pos, h)| *pos < to && from < pos + u64::from(h.length))
        .flat_map(|(_, h)| h.base_offset..h.next_offset())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_or_a_cut_in_a_sealed_segment_loses_only_what_it_hit() {
    for (how, seed) in [("garbage", 7), ("garbage", 99), ("cut", 0)] {
        let dir = tempfile::tempdir().unwrap();
        let (server, acked) = populate(dir.path(), 40).await;
        assert!(server.terminate().await.success());

        let part = ("damaged".to_owned(), 1);
        let segments = files(&partition_dir(dir.path(), "damaged", 1), "log");
        let segment = &segments[1];
        let b = batches_in(segment);
        let (from, to) = (b[2].0 + 30, b[4].0 + 10); // from inside batch 2 into batch 4
        let mut may_lose = hit(&b, from, to);
        if how == "cut" {
            // Everything from the cut to the segment's end is gone.
            truncate(segment, from);
            may_lose = hit(&b, from, u64::MAX);
        } else {
            garbage(segment, from, (to - from) as usize, seed);
        }

        let server = Server::start(dir.path());
        let mut client = server.client().await;
        let lost = check_all(&mut client, &acked, &part, |o| may_lose.contains(&o)).await;
        assert_eq!(lost, may_lose, "{how} {seed}");
        drop(client);
        assert!(server.terminate().await.success());
    }
}
