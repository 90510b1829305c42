//! A stopped broker's group offsets file damaged (bad magic, or a flipped byte in an entry that
//! whole entries follow): the broker starts; that group's calls are DATA_LOSS naming it, its file
//! is not rewritten by a commit, and every other group is served. Restoring the file brings the
//! group's offsets back.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Server, create_topic, produce_values, values};
use strata::proto::{
    CommitOffsetsRequest, DescribeGroupRequest, FetchCommittedOffsetsRequest, PartitionOffset,
};
use tonic::Code;

fn commit(group: &str, offset: u64) -> CommitOffsetsRequest {
    CommitOffsetsRequest {
        group: group.into(),
        offsets: vec![PartitionOffset {
            topic: "t".into(),
            partition: 0,
            offset,
        }],
        ..CommitOffsetsRequest::default()
    }
}

fn fetch(group: &str) -> FetchCommittedOffsetsRequest {
    FetchCommittedOffsetsRequest {
        group: group.into(),
        topic: "t".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_group_file_takes_only_its_group_offline() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "t", 1).await;
    produce_values(&mut client, "t", 0, &values("v", 0, 10)).await;
    for offset in [2, 5, 7] {
        client
            .commit_offsets(commit("damaged", offset))
            .await
            .unwrap();
        client
            .commit_offsets(commit("intact", offset + 1))
            .await
            .unwrap();
    }
    drop(client);
    assert!(server.terminate().await.success());

    let path = dir.path().join("groups/damaged.offsets");
    let good = std::fs::read(&path).unwrap();
    // What "intact" has committed: 8, then 9 from the first round on.
    let mut intact_offset = 8;
    for how in ["bad magic", "a flipped byte in the first entry"] {
        let mut bad = good.clone();
        if how == "bad magic" {
            bad[1] ^= 0x20;
        } else {
            // 8 bytes of magic, then the first entry's 8-byte header and its payload.
            bad[8 + 8 + 2] ^= 0x01;
        }
        std::fs::write(&path, &bad).unwrap();

        let server = Server::start(dir.path());
        let mut client = server.client().await;
        for status in [
            client
                .fetch_committed_offsets(fetch("damaged"))
                .await
                .unwrap_err(),
            client
                .commit_offsets(commit("damaged", 9))
                .await
                .unwrap_err(),
            client
                .describe_group(DescribeGroupRequest {
                    group: "damaged".into(),
                })
                .await
                .unwrap_err(),
        ] {
            assert_eq!(status.code(), Code::DataLoss, "{how}: {status:?}");
            assert!(
                status.message().contains("group 'damaged'"),
                "{how}: {status:?}"
            );
        }
        let intact = client
            .fetch_committed_offsets(fetch("intact"))
            .await
            .unwrap()
            .into_inner()
            .offsets;
        assert_eq!(intact[0].offset, intact_offset, "{how}");
        client.commit_offsets(commit("intact", 9)).await.unwrap();
        intact_offset = 9;
        drop(client);
        assert!(server.terminate().await.success());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bad,
            "{how}: the damaged file was changed"
        );

        // Restored: the group's offsets are back.
        std::fs::write(&path, &good).unwrap();
        let server = Server::start(dir.path());
        let mut client = server.client().await;
        let offsets = client
            .fetch_committed_offsets(fetch("damaged"))
            .await
            .unwrap()
            .into_inner()
            .offsets;
        assert_eq!(offsets[0].offset, 7, "{how}");
        drop(client);
        assert!(server.terminate().await.success());
    }
}
