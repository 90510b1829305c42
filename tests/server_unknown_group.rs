//! A group nobody has used: FetchCommittedOffsets answers empty (a group with no commits has no
//! offsets), DescribeGroup answers NOT_FOUND (there is nothing to describe: no commits, no
//! members), as the proto's comments say.

mod common;

use common::Server;
use strata::proto::{
    CommitOffsetsRequest, DescribeGroupRequest, FetchCommittedOffsetsRequest, PartitionOffset,
};

#[test]
fn an_unknown_group_has_no_offsets_and_cannot_be_described() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = server.client().await;
        let offsets = client
            .fetch_committed_offsets(FetchCommittedOffsetsRequest {
                group: "nobody".into(),
                topic: "t".into(),
            })
            .await
            .expect("an unknown group's offsets are an answer, not an error")
            .into_inner();
        assert!(offsets.offsets.is_empty(), "{offsets:?}");

        let described = client
            .describe_group(DescribeGroupRequest {
                group: "nobody".into(),
            })
            .await
            .expect_err("an unknown group cannot be described");
        assert_eq!(described.code(), tonic::Code::NotFound, "{described:?}");

        // Once it has a commit, both answer.
        client
            .commit_offsets(CommitOffsetsRequest {
                group: "nobody".into(),
                offsets: vec![PartitionOffset {
                    topic: "t".into(),
                    partition: 0,
                    offset: 0,
                }],
                ..CommitOffsetsRequest::default()
            })
            .await
            .expect("commit");
        let offsets = client
            .fetch_committed_offsets(FetchCommittedOffsetsRequest {
                group: "nobody".into(),
                topic: "t".into(),
            })
            .await
            .expect("offsets")
            .into_inner();
        assert_eq!(offsets.offsets.len(), 1, "{offsets:?}");
        client
            .describe_group(DescribeGroupRequest {
                group: "nobody".into(),
            })
            .await
            .expect("a group with a commit is described");
    });
}
