//! A first session against a running broker, with nothing but this crate: create a topic, produce
//! keyed records, read them through a push subscription from where the group left off, commit the
//! group's offset and show its lag.
//!
//! ```text
//! cargo run --release -- serve          # in one terminal
//! cargo run --example quickstart        # in another (optional argument: the broker's URL)
//! ```

use bytes::Bytes;
use strata::proto::{
    self, CommitOffsetsRequest, CreateTopicRequest, DescribeGroupRequest, PartitionOffset,
    ProduceRequest, StartPosition, SubscribeRequest, start_position::Position,
    strata_client::StrataClient,
};
use strata::record::{Frame, decode_frame};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:50051".into());
    let mut client = StrataClient::connect(url).await?;

    match client
        .create_topic(CreateTopicRequest {
            name: "quickstart".into(),
            partitions: 1,
            config: None,
            replication_factor: 0,
        })
        .await
    {
        Ok(_) => println!("created topic 'quickstart'"),
        Err(s) if s.code() == tonic::Code::AlreadyExists => println!("topic 'quickstart' exists"),
        Err(s) => return Err(s.into()),
    }

    let records = ["hello", "durable", "world"]
        .iter()
        .enumerate()
        .map(|(i, v)| proto::Record {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Bytes::from_static(v.as_bytes()),
            ..proto::Record::default()
        })
        .collect();
    let produced = client
        .produce(ProduceRequest {
            topic: "quickstart".into(),
            partition: Some(0),
            records,
            batch: Bytes::new(),
        })
        .await?
        .into_inner();
    let last = produced.results[0].base_offset + u64::from(produced.results[0].record_count);
    println!(
        "produced 3 records, offsets {}..{last}",
        produced.results[0].base_offset
    );

    let mut stream = client
        .subscribe(SubscribeRequest {
            topic: "quickstart".into(),
            partitions: vec![0],
            start: Some(StartPosition {
                // Where the group left off (the earliest offset on the first run).
                position: Some(Position::Group("quickstart-readers".into())),
            }),
            max_bytes: 0,
        })
        .await?
        .into_inner();
    let mut next = u64::MAX;
    while next == u64::MAX || next < last {
        let Some(msg) = stream.message().await? else {
            break;
        };
        let mut rest = &msg.batches[..];
        while let Frame::Batch(batch) = decode_frame(rest) {
            for record in batch.records() {
                let record = record.map_err(|c| format!("corrupt record: {c}"))?;
                if record.offset >= msg.start_offset {
                    println!(
                        "offset {} key {:?} value {:?}",
                        record.offset,
                        record.key.map(String::from_utf8_lossy),
                        String::from_utf8_lossy(record.value)
                    );
                }
            }
            rest = &rest[batch.bytes().len()..];
        }
        next = msg.next_offset;
    }

    client
        .commit_offsets(CommitOffsetsRequest {
            group: "quickstart-readers".into(),
            offsets: vec![PartitionOffset {
                topic: "quickstart".into(),
                partition: 0,
                offset: next,
            }],
            // No membership: this example picks its partition itself.
            ..CommitOffsetsRequest::default()
        })
        .await?;
    let group = client
        .describe_group(DescribeGroupRequest {
            group: "quickstart-readers".into(),
        })
        .await?
        .into_inner();
    for p in group.partitions {
        println!(
            "group 'quickstart-readers' committed {} of {} in {}/{}: lag {}",
            p.committed_offset.unwrap_or_default(),
            p.next_offset,
            p.topic,
            p.partition,
            p.lag
        );
    }
    Ok(())
}
