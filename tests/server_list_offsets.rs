//! `ListOffsets`: per partition the earliest and next offsets and where a position resolves
//! (earliest, latest, a timestamp, an offset, a group's commit), without reading a record; bad
//! input gets the usual codes.

mod common;

use common::{Server, create_topic, produce_values, values};
use strata::proto::{
    Empty, ListOffsetsRequest, PartitionOffsets, StartPosition, start_position::Position,
};
use tonic::Code;

async fn list(
    client: &mut common::Client,
    topic: &str,
    partitions: &[u32],
    position: Option<Position>,
) -> Result<Vec<PartitionOffsets>, tonic::Status> {
    client
        .list_offsets(ListOffsetsRequest {
            topic: topic.into(),
            partitions: partitions.to_vec(),
            position: position.map(|p| StartPosition { position: Some(p) }),
        })
        .await
        .map(|r| r.into_inner().partitions)
}

#[tokio::test]
async fn offsets_resolve_per_partition_and_bad_requests_are_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    let mut client = server.client().await;
    create_topic(&mut client, "t", 3).await;
    produce_values(&mut client, "t", 0, &values("a", 0, 7)).await;
    produce_values(&mut client, "t", 2, &values("c", 0, 2)).await;

    let latest = list(&mut client, "t", &[], None).await.expect("list");
    let got: Vec<(u32, u64, u64, u64)> = latest
        .iter()
        .map(|p| (p.partition, p.earliest_offset, p.next_offset, p.offset))
        .collect();
    assert_eq!(got, [(0, 0, 7, 7), (1, 0, 0, 0), (2, 0, 2, 2)]);

    let earliest = list(
        &mut client,
        "t",
        &[2, 0],
        Some(Position::Earliest(Empty {})),
    )
    .await
    .expect("list");
    assert_eq!(
        earliest
            .iter()
            .map(|p| (p.partition, p.offset))
            .collect::<Vec<_>>(),
        [(0, 0), (2, 0)]
    );
    // A time before every record is the first one; one after them all is the next offset.
    let before = list(&mut client, "t", &[0], Some(Position::TimestampMs(0)))
        .await
        .expect("list");
    assert_eq!(before[0].offset, 0);
    let after = list(
        &mut client,
        "t",
        &[0],
        Some(Position::TimestampMs(i64::MAX)),
    )
    .await
    .expect("list");
    assert_eq!(after[0].offset, 7);
    let at = list(&mut client, "t", &[0], Some(Position::Offset(3)))
        .await
        .expect("list");
    assert_eq!(at[0].offset, 3);
    // A group without commits is at the earliest offset.
    let group = list(&mut client, "t", &[0], Some(Position::Group("g".into())))
        .await
        .expect("list");
    assert_eq!(group[0].offset, 0);

    let code = |r: Result<Vec<PartitionOffsets>, tonic::Status>| r.map(|_| ()).unwrap_err().code();
    assert_eq!(
        code(list(&mut client, "nope", &[], None).await),
        Code::NotFound
    );
    assert_eq!(
        code(list(&mut client, "t", &[9], None).await),
        Code::NotFound
    );
    assert_eq!(
        code(list(&mut client, "t", &[0], Some(Position::Offset(8))).await),
        Code::OutOfRange
    );
}
