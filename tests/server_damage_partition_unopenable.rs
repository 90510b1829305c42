//! A stopped broker's partition that cannot be opened at all (its directory replaced by a file,
//! or by a symlink to a directory that is not there, as on a disk that was not mounted; or one
//! of its segment files replaced by a directory): the broker still starts and serves every other
//! topic whole; the topic with that partition answers DATA_LOSS naming it and why. Repairing the
//! files and restarting brings the topic back whole.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
#[path = "common/damage.rs"]
mod damage;

use common::Server;
use common::files::files;
use damage::{check_all, damaged_topic_is_refused, only_intact_is_served, partition_dir, populate};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unopenable_partition_takes_only_its_topic_offline() {
    for how in [
        "directory is a file",
        "directory is a dangling symlink",
        "a segment is a directory",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (server, acked) = populate(dir.path(), 20).await;
        assert!(server.terminate().await.success());

        let part = partition_dir(dir.path(), "damaged", 1);
        let aside = dir.path().join("aside");
        std::fs::rename(&part, &aside).unwrap();
        match how {
            "directory is a file" => std::fs::write(&part, b"not a directory").unwrap(),
            "directory is a dangling symlink" => {
                std::os::unix::fs::symlink(dir.path().join("unmounted/disk"), &part).unwrap();
            }
            _ => {
                copy_dir(&aside, &part);
                let segment = files(&part, "log").remove(1);
                std::fs::remove_file(&segment).unwrap();
                std::fs::create_dir(&segment).unwrap();
            }
        }

        let server = Server::start(dir.path());
        let mut client = server.client().await;
        let message = damaged_topic_is_refused(&mut client, how).await;
        assert!(message.contains("partition 1"), "{how}: {message}");
        only_intact_is_served(&mut client, &acked, how).await;
        drop(client);
        assert!(server.terminate().await.success());

        // Repaired: the topic is back whole.
        if how == "a segment is a directory" {
            std::fs::remove_dir_all(&part).unwrap();
        } else {
            std::fs::remove_file(&part).unwrap();
        }
        std::fs::rename(&aside, &part).unwrap();
        let server = Server::start(dir.path());
        let mut client = server.client().await;
        check_all(&mut client, &acked, &("none".to_owned(), 0), |_| false).await;
        drop(client);
        assert!(server.terminate().await.success());
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}
