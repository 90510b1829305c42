//! A read past the end of a replica's log: the partition's leader knows the offset does not
//! exist (OUT_OF_RANGE, naming the range), a follower cannot know (it may be behind the leader),
//! so it answers UNAVAILABLE, which clients retry, instead of a range error that would stop a
//! consumer that moved to it from the leader. A read between a follower's high watermark and its
//! log end is in range and waits.

mod common;

use common::cluster::Cluster;
use common::{try_produce_values, values};
use std::time::Duration;
use strata::proto::{FetchRequest, StartPosition, start_position::Position};
use tonic::Code;

const TOPIC: &str = "orders";
const WITHIN: Duration = Duration::from_secs(30);

fn fetch_at(offset: u64) -> FetchRequest {
    FetchRequest {
        topic: TOPIC.into(),
        partition: 0,
        start: Some(StartPosition {
            position: Some(Position::Offset(offset)),
        }),
        decode: true,
        ..FetchRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_answers_unavailable_past_its_log_and_the_leader_out_of_range() {
    let cluster = Cluster::start(3);
    cluster.create_topic(1, TOPIC, 1, 3).await;
    let leader = cluster.leader(TOPIC, 0, WITHIN).await;
    let base = try_produce_values(
        &mut cluster.client(leader).await,
        TOPIC,
        0,
        &values("o", 0, 10),
    )
    .await
    .expect("produce");
    let end = base + 10;
    let follower = (1..=3).find(|&n| n != leader).expect("a follower");
    cluster
        .wait_for_high_watermark(follower, TOPIC, 0, end, WITHIN)
        .await;

    let far = end + 1000;
    let refused = cluster
        .client(leader)
        .await
        .fetch(fetch_at(far))
        .await
        .expect_err("past the leader's log");
    assert_eq!(refused.code(), Code::OutOfRange, "{refused:?}");

    let refused = cluster
        .client(follower)
        .await
        .fetch(fetch_at(far))
        .await
        .expect_err("past the follower's log");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("catching up"), "{refused:?}");

    // At the end itself: in range on both, nothing yet.
    for node in [leader, follower] {
        let got = cluster
            .client(node)
            .await
            .fetch(fetch_at(end))
            .await
            .unwrap_or_else(|e| panic!("node {node}: {e:?}"))
            .into_inner();
        assert!(got.records.is_empty(), "node {node}: {got:?}");
    }
}
