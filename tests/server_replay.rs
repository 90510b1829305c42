//! Replay after downtime, the core promise: a group commits, goes away, N records are produced
//! (and the broker restarts meanwhile); while away the group's lag is N; when it returns it
//! resumes from its committed offset and gets exactly those N, in order, nothing lost or repeated.

mod common;

use common::{Server, at_group, create_topic, decode, fetch_all, produce_values, values};
use strata::proto::{
    CommitOffsetsRequest, DescribeGroupRequest, FetchCommittedOffsetsRequest, FetchRequest,
    ListGroupsRequest, PartitionOffset,
};

const N: usize = 25;

#[tokio::test]
async fn a_returning_group_resumes_exactly_where_it_committed() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "payments", 1).await;
    produce_values(&mut client, "payments", 0, &values("before", 0, 10)).await;

    // The consumer reads everything there is and commits its position.
    let read = fetch_all(&mut client, "payments", 0, 0).await;
    assert_eq!(read.len(), 10);
    client
        .commit_offsets(CommitOffsetsRequest {
            group: "billing".into(),
            offsets: vec![PartitionOffset {
                topic: "payments".into(),
                partition: 0,
                offset: 10,
            }],
            ..CommitOffsetsRequest::default()
        })
        .await
        .unwrap();

    // It goes away; N records arrive in several produces.
    for chunk in 0..5 {
        produce_values(&mut client, "payments", 0, &values("away", chunk * 5, 5)).await;
    }
    let lag = |resp: strata::proto::DescribeGroupResponse| {
        assert_eq!(resp.partitions.len(), 1);
        let p = &resp.partitions[0];
        (p.committed_offset, p.next_offset, p.lag)
    };
    let described = client
        .describe_group(DescribeGroupRequest {
            group: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lag(described), (Some(10), 10 + N as u64, N as u64));

    // The broker restarts (clean shutdown) while the consumer is away.
    drop(client);
    let status = server.terminate().await;
    assert!(status.success(), "strata exited with {status}");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    let described = client
        .describe_group(DescribeGroupRequest {
            group: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lag(described), (Some(10), 10 + N as u64, N as u64));
    let groups = client
        .list_groups(ListGroupsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(groups.groups, vec!["billing".to_owned()]);
    let committed = client
        .fetch_committed_offsets(FetchCommittedOffsetsRequest {
            group: "billing".into(),
            topic: "payments".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(committed.offsets[0].offset, 10);

    // The consumer returns and starts from its committed offset.
    let resp = client
        .fetch(FetchRequest {
            topic: "payments".into(),
            partition: 0,
            start: at_group("billing"),
            ..FetchRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.start_offset, 10);
    let mut got = decode(&resp.batches, resp.start_offset);
    got.extend(fetch_all(&mut client, "payments", 0, resp.next_fetch_offset).await);
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, (10..10 + N as u64).collect::<Vec<_>>());
    let got_values: Vec<_> = got.into_iter().map(|r| r.value).collect();
    assert_eq!(got_values, values("away", 0, N));

    // It commits again: no lag left.
    client
        .commit_offsets(CommitOffsetsRequest {
            group: "billing".into(),
            offsets: vec![PartitionOffset {
                topic: "payments".into(),
                partition: 0,
                offset: 10 + N as u64,
            }],
            ..CommitOffsetsRequest::default()
        })
        .await
        .unwrap();
    let described = client
        .describe_group(DescribeGroupRequest {
            group: "billing".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(lag(described).2, 0);
}
