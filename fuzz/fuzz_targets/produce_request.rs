//! Request validation: any bytes decoded as a `ProduceRequest` go through name validation and
//! `Broker::produce` of a real broker (fsync never, in a scratch directory), as the server's
//! handler calls it. Names are accepted exactly when the naming rule says; a produce either fails
//! with an error or stores exactly what it acknowledges, readable back at its offsets.

#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::sync::{Arc, OnceLock};
use strata::{
    broker::{
        Broker, BrokerConfig, FsyncMode, MAX_NAME_LEN, ProduceInput, TopicConfigUpdate,
        validate_group_name, validate_topic_name,
    },
    proto::ProduceRequest,
    record::{Frame, Header, Record, decode_frame},
};

const PARTITIONS: u32 = 3;

fn broker() -> &'static Arc<Broker> {
    static BROKER: OnceLock<(tempfile::TempDir, Arc<Broker>)> = OnceLock::new();
    &BROKER
        .get_or_init(|| {
            let root = std::path::Path::new("/dev/shm");
            let dir = if root.is_dir() {
                tempfile::tempdir_in(root)
            } else {
                tempfile::tempdir()
            }
            .expect("temp dir");
            let mut config = BrokerConfig::new(dir.path());
            config.topic_defaults.fsync = FsyncMode::Never;
            // Keep the scratch directory small however long the run.
            config.topic_defaults.segment_max_bytes = 64 * 1024;
            config.topic_defaults.retention_bytes = Some(256 * 1024);
            config.topic_defaults.max_record_bytes = 4096;
            let broker = Broker::open(config).expect("open the broker");
            broker
                .create_topic("t", PARTITIONS, &TopicConfigUpdate::default())
                .expect("create the topic");
            (dir, broker)
        })
        .1
}

/// The naming rule, written out independently of the broker's.
fn name_is_valid(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    assert_eq!(
        validate_topic_name(&text).is_ok(),
        name_is_valid(&text),
        "{text:?}"
    );
    assert_eq!(
        validate_group_name(&text).is_ok(),
        name_is_valid(&text),
        "{text:?}"
    );

    let Ok(request) = ProduceRequest::decode(data) else {
        return;
    };
    let records: Vec<Record> = request
        .records
        .iter()
        .map(|r| Record {
            key: r.key.clone(),
            value: r.value.clone(),
            headers: r
                .headers
                .iter()
                .map(|h| Header {
                    name: h.name.clone(),
                    value: h.value.clone(),
                })
                .collect(),
            timestamp_ms: r.timestamp_ms.unwrap_or(0),
        })
        .collect();
    let input = match (records.is_empty(), request.batch.is_empty()) {
        (false, true) => ProduceInput::Records(records.clone()),
        (true, false) => ProduceInput::Batches(request.batch.clone()),
        _ => return, // the handler refuses these before the broker sees them
    };
    let broker = broker();
    let Ok(produced) = broker.produce(&request.topic, request.partition, input) else {
        return;
    };
    assert_eq!(
        request.topic, "t",
        "a produce to a topic that does not exist succeeded"
    );
    let mut values = Vec::new();
    for p in &produced {
        assert!(p.partition < PARTITIONS);
        if let Some(wanted) = request.partition {
            assert_eq!(p.partition, wanted);
        }
        let handle = broker.partition("t", p.partition).expect("the partition");
        let Ok(chunk) = handle.read(p.base_offset, 1) else {
            continue; // retention may already have removed it
        };
        let Frame::Batch(batch) = decode_frame(&chunk.batches) else {
            panic!("a read returned something that is not a whole batch")
        };
        assert_eq!(batch.header().base_offset, p.base_offset);
        assert_eq!(batch.header().record_count, p.record_count);
        values.extend(
            batch
                .records()
                .map(|r| r.expect("a stored record").value.to_vec()),
        );
    }
    let total: u32 = produced.iter().map(|p| p.record_count).sum();
    if !records.is_empty() {
        assert_eq!(total as usize, records.len());
        let mut sent: Vec<Vec<u8>> = records.iter().map(|r| r.value.to_vec()).collect();
        let mut got = values;
        sent.sort();
        got.sort();
        if got.len() == sent.len() {
            assert_eq!(got, sent, "stored values differ from the ones sent");
        }
    }
});
