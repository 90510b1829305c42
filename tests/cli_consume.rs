//! `strata consume`: `-n`, `--from` (offset, earliest, latest, time), partitions, JSON output,
//! a group that continues where it stopped, and `--follow`.

mod common;

use bytes::Bytes;
use common::Server;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use strata::proto::{self, ProduceRequest};

fn lines(n: usize) -> String {
    (0..n)
        .map(|i| format!("v{i}\n"))
        .collect::<Vec<_>>()
        .concat()
}

fn values(from: usize, to: usize) -> Vec<String> {
    (from..to).map(|i| format!("v{i}")).collect()
}

#[test]
fn max_and_from_pick_the_records() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();
    server.cli_with_input(&["produce", "t"], &lines(10)).ok();

    assert_eq!(server.cli(&["consume", "t"]).lines(), values(0, 10));
    assert_eq!(
        server.cli(&["consume", "t", "-n", "3"]).lines(),
        values(0, 3)
    );
    assert_eq!(
        server.cli(&["consume", "t", "--from", "7"]).lines(),
        values(7, 10)
    );
    assert_eq!(
        server
            .cli(&["consume", "t", "--from", "4", "-n", "2"])
            .lines(),
        values(4, 6)
    );
    assert_eq!(
        server
            .cli(&["consume", "t", "--from", "earliest", "-n", "1"])
            .lines(),
        ["v0"]
    );
    assert!(
        server
            .cli(&["consume", "t", "--from", "latest"])
            .ok()
            .is_empty()
    );
    assert!(
        server
            .cli(&["consume", "t", "--from", "10"])
            .ok()
            .is_empty()
    );

    let beyond = server.cli(&["consume", "t", "--from", "11"]);
    let err = beyond.failed();
    assert!(err.contains("out of range"), "{err}");
    assert!(err.contains("strata topic describe t"), "{err}");
}

#[test]
fn from_a_time_starts_at_the_first_record_at_or_after_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = server.client().await;
        client
            .produce(ProduceRequest {
                topic: "t".into(),
                partition: Some(0),
                records: (0..5)
                    .map(|i| proto::Record {
                        value: Bytes::from(format!("at-{}", 1_000 * (i + 1))),
                        timestamp_ms: Some(1_000 * (i + 1)),
                        ..proto::Record::default()
                    })
                    .collect(),
                batch: Bytes::new(),
            })
            .await
            .expect("produce");
    });
    assert_eq!(
        server.cli(&["consume", "t", "--from", "@2500"]).lines(),
        ["at-3000", "at-4000", "at-5000"]
    );
    assert_eq!(
        server
            .cli(&["consume", "t", "--from", "@1000", "-n", "1"])
            .lines(),
        ["at-1000"]
    );
    // RFC 3339 names the same instant; a time ago is after these 1970 records.
    assert_eq!(
        server
            .cli(&["consume", "t", "--from", "1970-01-01T00:00:02.5Z"])
            .lines(),
        ["at-3000", "at-4000", "at-5000"]
    );
    assert!(
        server
            .cli(&["consume", "t", "--from", "-1h"])
            .ok()
            .is_empty()
    );
    assert!(
        server
            .cli(&["consume", "t", "--from", "@9000"])
            .ok()
            .is_empty()
    );
}

#[test]
fn json_output_has_every_field_and_partitions_filter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t", "-p", "3"]).ok();
    for p in ["0", "1", "2"] {
        server
            .cli_with_input(
                &["produce", "t", "-p", p, "-k", &format!("k{p}"), "-H", "h=x"],
                "a\nb\n",
            )
            .ok();
    }
    let all = server
        .cli(&["consume", "t", "--output", "json"])
        .json_lines();
    assert_eq!(all.len(), 6);
    for r in &all {
        let p = r["partition"].as_u64().expect("partition");
        assert!(r["offset"].as_u64().is_some_and(|o| o < 2), "{r}");
        assert!(r["timestamp"].as_i64().is_some_and(|t| t > 0), "{r}");
        assert_eq!(r["key"], format!("k{p}"));
        assert!(r["value"] == "a" || r["value"] == "b", "{r}");
        assert_eq!(
            r["headers"],
            serde_json::json!([{"name": "h", "value": "x"}])
        );
    }

    let some = server
        .cli(&["consume", "t", "-p", "0", "-p", "2", "--output", "json"])
        .json_lines();
    assert_eq!(some.len(), 4);
    assert!(some.iter().all(|r| r["partition"] != 1));

    let bad = server.cli(&["consume", "t", "-p", "3"]);
    assert!(
        bad.failed().contains("partition 3 does not exist"),
        "{}",
        bad.stderr
    );
}

#[test]
fn a_group_continues_where_its_last_run_stopped() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t", "-p", "2"]).ok();
    server
        .cli_with_input(&["produce", "t", "-p", "0"], &lines(6))
        .ok();

    assert_eq!(
        server
            .cli(&["consume", "t", "-g", "readers", "-n", "4"])
            .lines(),
        values(0, 4)
    );
    assert_eq!(
        server.cli(&["consume", "t", "-g", "readers"]).lines(),
        values(4, 6)
    );
    assert!(
        server
            .cli(&["consume", "t", "-g", "readers"])
            .ok()
            .is_empty()
    );

    server
        .cli_with_input(&["produce", "t", "-p", "1"], "late\n")
        .ok();
    assert_eq!(
        server.cli(&["consume", "t", "-g", "readers"]).lines(),
        ["late"]
    );

    // Another group is independent; an explicit --from overrides the committed offsets.
    assert_eq!(
        server
            .cli(&["consume", "t", "-g", "others", "-p", "0"])
            .lines(),
        values(0, 6)
    );
    assert_eq!(
        server
            .cli(&["consume", "t", "-g", "readers", "-p", "0", "--from", "5"])
            .lines(),
        ["v5"]
    );
}

#[test]
fn follow_prints_records_appended_after_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();

    // The topic is empty, so the consumer starts at offset 0 whether it subscribes before or
    // after the records below are appended: no race, no sleep.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["consume", "t", "-f", "-n", "3", "-g", "live"])
        .env("STRATA_BROKER", server.url())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata consume");
    let stdout = follower.stdout.take().expect("piped stdout");
    server.cli_with_input(&["produce", "t"], "x\ny\n").ok();
    let mut seen = BufReader::new(stdout).lines();
    assert_eq!(seen.next().and_then(Result::ok).as_deref(), Some("x"));
    assert_eq!(seen.next().and_then(Result::ok).as_deref(), Some("y"));
    server.cli_with_input(&["produce", "t"], "z\nafter\n").ok();
    assert_eq!(seen.next().and_then(Result::ok).as_deref(), Some("z"));
    assert!(follower.wait().expect("wait for consume").success());
    // It committed what it printed, so the group continues after "z".
    assert_eq!(
        server.cli(&["consume", "t", "-g", "live"]).lines(),
        ["after"]
    );
}

#[test]
fn print_picks_the_text_fields_and_their_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();
    server
        .cli_with_input(
            &["produce", "t", "-p", "0", "--key-separator", ":"],
            "alice:a book\nbob:a lamp\n",
        )
        .ok();
    server
        .cli_with_input(&["produce", "t", "-p", "0"], "keyless\n")
        .ok();

    // The default is unchanged: values alone.
    assert_eq!(
        server.cli(&["consume", "t"]).lines(),
        ["a book", "a lamp", "keyless"]
    );
    assert_eq!(
        server
            .cli(&["consume", "t", "--print", "key,partition,offset,value"])
            .lines(),
        [
            "alice\t0\t0\ta book",
            "bob\t0\t1\ta lamp",
            "\t0\t2\tkeyless"
        ]
    );
    assert_eq!(
        server
            .cli(&["consume", "t", "-n", "1", "--print", "offset,key"])
            .lines(),
        ["0\talice"]
    );
    let bad = server.cli(&["consume", "t", "--print", "colour"]);
    assert_eq!(bad.status.code(), Some(2), "{}", bad.stderr);
}

#[test]
fn json_carries_bytes_that_are_not_utf8_as_base64_under_a_marked_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let mut client = server.client().await;
        client
            .produce(ProduceRequest {
                topic: "t".into(),
                partition: Some(0),
                records: vec![
                    proto::Record {
                        key: Some(Bytes::from_static(&[0xff, 0xfe, 0x00])),
                        value: Bytes::from_static(b"caf\xc3\xa9"),
                        headers: vec![proto::Header {
                            name: "h".into(),
                            value: Bytes::from_static(b"\x80"),
                        }],
                        ..proto::Record::default()
                    },
                    proto::Record {
                        key: Some(Bytes::from_static(b"k")),
                        value: Bytes::from_static(b"\xc3\x28"),
                        ..proto::Record::default()
                    },
                ],
                batch: Bytes::new(),
            })
            .await
            .expect("produce");
    });
    let records = server
        .cli(&["consume", "t", "--output", "json"])
        .json_lines();
    assert_eq!(records.len(), 2, "{records:?}");
    let first = records[0].as_object().expect("an object");
    assert_eq!(first["key_base64"], "//4A", "{first:?}");
    assert!(!first.contains_key("key"), "{first:?}");
    assert_eq!(first["value"], "café", "{first:?}");
    assert!(!first.contains_key("value_base64"), "{first:?}");
    assert_eq!(first["headers"][0]["name"], "h");
    assert_eq!(first["headers"][0]["value_base64"], "gA==");
    let second = records[1].as_object().expect("an object");
    assert_eq!(second["key"], "k");
    assert_eq!(second["value_base64"], "wyg=");
    assert!(!second.contains_key("value"), "{second:?}");
}
