//! A flipped bit in a stopped broker's segment, in a sealed segment and in the active one, in
//! each field of a batch: after a restart every other record is served, the damaged batch's
//! offsets are reported as DATA_LOSS naming the topic, the partition and exactly those offsets,
//! nothing damaged is served, and the other partitions are served whole.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/damage.rs"]
mod damage;

use common::Server;
use common::files::{batches_in, files, flip};
use damage::{check_all, partition_dir, populate};

/// Byte positions inside a batch to flip: crc, length, magic, base offset, record count, a
/// record's length, a value byte.
const FIELDS: [(&str, u64); 7] = [
    ("crc", 1),
    ("length", 5),
    ("magic", 9),
    ("base offset", 17),
    ("record count", 41),
    ("record length", 49),
    ("value", 200),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_bit_loses_exactly_its_batch_and_nothing_else() {
    for (field, at) in FIELDS {
        let dir = tempfile::tempdir().unwrap();
        let (server, acked) = populate(dir.path(), 40).await;
        assert!(server.terminate().await.success());

        let part = ("damaged".to_owned(), 0);
        let pdir = partition_dir(dir.path(), "damaged", 0);
        let segments = files(&pdir, "log");
        assert!(segments.len() >= 4, "{segments:?}");
        // The third batch of the second (sealed) segment and the second of the active one.
        let mut hit = Vec::new();
        for (segment, index) in [(&segments[1], 2), (segments.last().unwrap(), 1)] {
            let (pos, header) = batches_in(segment)[index];
            flip(segment, pos + at, 0x10);
            hit.push(header.base_offset..header.next_offset());
        }

        let server = Server::start(dir.path());
        let mut client = server.client().await;
        let lost = check_all(&mut client, &acked, &part, |o| {
            hit.iter().any(|r| r.contains(&o))
        })
        .await;
        let want: Vec<u64> = hit.iter().flat_map(Clone::clone).collect();
        assert_eq!(lost, want, "{field}: lost exactly the damaged batches");
        drop(client);
        assert!(server.terminate().await.success());
    }
}
