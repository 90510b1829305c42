//! A stopped broker's `topic.json` damaged (garbage, cut short, naming another topic, removed):
//! the broker still starts and serves every other topic whole; the damaged topic's requests are
//! DATA_LOSS naming it, its files and its groups' offsets are kept, and a topic of the same name
//! cannot be created over it. Restoring the file brings the topic back whole; deleting the
//! damaged topic removes it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/damage.rs"]
mod damage;

use common::files::{garbage, truncate};
use common::{Server, create_topic};
use damage::{check_all, damaged_topic_is_refused, only_intact_is_served, populate};
use strata::proto::{
    CommitOffsetsRequest, CreateTopicRequest, DeleteTopicRequest, FetchCommittedOffsetsRequest,
    PartitionOffset,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_topic_file_takes_only_its_topic_offline() {
    for how in ["garbage", "cut", "other name", "removed"] {
        let dir = tempfile::tempdir().unwrap();
        let (server, acked) = populate(dir.path(), 20).await;
        let mut client = server.client().await;
        client
            .commit_offsets(CommitOffsetsRequest {
                group: "g".into(),
                offsets: vec![PartitionOffset {
                    topic: "damaged".into(),
                    partition: 1,
                    offset: 9,
                }],
                ..CommitOffsetsRequest::default()
            })
            .await
            .unwrap();
        drop(client);
        assert!(server.terminate().await.success());

        let file = dir.path().join("topics/damaged/topic.json");
        let good = std::fs::read(&file).unwrap();
        match how {
            "garbage" => garbage(&file, 0, good.len(), 5),
            "cut" => truncate(&file, good.len() as u64 / 2),
            "other name" => std::fs::write(
                &file,
                String::from_utf8(good.clone())
                    .unwrap()
                    .replace("\"damaged\"", "\"intact\""),
            )
            .unwrap(),
            _ => std::fs::remove_file(&file).unwrap(),
        }

        let server = Server::start(dir.path());
        let mut client = server.client().await;
        damaged_topic_is_refused(&mut client, how).await;
        let status = client
            .create_topic(CreateTopicRequest {
                name: "damaged".into(),
                partitions: 1,
                config: None,
                replication_factor: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::DataLoss, "{how}: {status:?}");
        only_intact_is_served(&mut client, &acked, how).await;
        drop(client);
        assert!(server.terminate().await.success());

        // The file restored: the topic is back whole, with its group's offset.
        std::fs::write(&file, &good).unwrap();
        let server = Server::start(dir.path());
        let mut client = server.client().await;
        check_all(&mut client, &acked, &("none".to_owned(), 0), |_| false).await;
        let committed = client
            .fetch_committed_offsets(FetchCommittedOffsetsRequest {
                group: "g".into(),
                topic: "damaged".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .offsets;
        assert_eq!(committed.len(), 1, "{how}");
        assert_eq!(committed[0].offset, 9, "{how}");
        drop(client);
        assert!(server.terminate().await.success());

        // Damaged again, then deleted: gone, and its name free.
        std::fs::write(&file, b"{").unwrap();
        let server = Server::start(dir.path());
        let mut client = server.client().await;
        client
            .delete_topic(DeleteTopicRequest {
                name: "damaged".into(),
            })
            .await
            .unwrap();
        assert!(!dir.path().join("topics/damaged").exists(), "{how}");
        create_topic(&mut client, "damaged", 1).await;
        drop(client);
        assert!(server.terminate().await.success());
    }
}
