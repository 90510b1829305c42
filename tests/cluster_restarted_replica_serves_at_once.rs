//! A replica keeps its group's commit position across a restart (`raft-committed`): all three
//! brokers of a cluster are SIGKILLed and one is started again alone, with no majority to elect
//! a leader or learn a commit from; it still serves, at once, every record it had seen committed.
//! (Before, its high watermark started at 0 until a leader's next commit reached it.)

mod common;

use common::cluster::Cluster;
use common::{try_produce_values, values};
use std::time::Duration;
use strata::proto::{FetchRequest, StartPosition, start_position::Position};

const TOPIC: &str = "orders";
const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_restarted_replica_serves_what_it_saw_committed() {
    let mut cluster = Cluster::start(3);
    cluster.create_topic(1, TOPIC, 1, 3).await;
    let leader = cluster.leader(TOPIC, 0, WITHIN).await;
    let sent = values("o", 0, 10);
    let base = try_produce_values(&mut cluster.client(leader).await, TOPIC, 0, &sent)
        .await
        .expect("produce");
    let end = base + 10;
    let lone = (1..=3).find(|&n| n != leader).expect("a follower");
    cluster
        .wait_for_high_watermark(lone, TOPIC, 0, end, WITHIN)
        .await;

    for node in 1..=3 {
        cluster.kill(node);
    }
    cluster.restart(lone);
    let got = cluster
        .client(lone)
        .await
        .fetch(FetchRequest {
            topic: TOPIC.into(),
            partition: 0,
            start: Some(StartPosition {
                position: Some(Position::Offset(base)),
            }),
            decode: true,
            max_wait_ms: 2000,
            ..FetchRequest::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let values: Vec<Vec<u8>> = got.records.iter().map(|r| r.value.to_vec()).collect();
    assert_eq!(values, sent, "node {lone} alone after a restart");
    assert_eq!(got.high_watermark, end);
}
