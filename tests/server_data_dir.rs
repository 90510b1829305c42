//! The data directory: a second broker on it refuses to start while the first runs; a topic
//! directory that lost its metadata is kept (not deleted) and refused with DATA_LOSS.

mod common;

use common::{Server, create_topic};
use std::process::{Command, Stdio};

fn serve_once(dir: &std::path::Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir)
        .args(["--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .output()
        .expect("run strata")
}

#[tokio::test]
async fn the_data_directory_is_guarded() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "kept", 1).await;

    let second = serve_once(dir.path());
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("in use by another broker"));
    assert!(!String::from_utf8_lossy(&second.stdout).contains("listening on"));

    drop(client);
    assert!(server.terminate().await.success());
    std::fs::remove_file(dir.path().join("topics/kept/topic.json")).unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let refused = client
        .describe_topic(strata::proto::DescribeTopicRequest {
            name: "kept".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::DataLoss);
    assert!(
        refused.message().contains("restore topic.json"),
        "{refused:?}"
    );
    drop(client);
    assert!(server.terminate().await.success());
    assert!(
        dir.path().join("topics/kept/0").exists(),
        "partition data was kept"
    );
}
