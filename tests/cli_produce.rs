//! `strata produce` from stdin and from a file: one record per line, keys, headers, partitions,
//! and a summary of where the records went.

mod common;

use common::Server;
use strata::record::partition_for_key;

#[test]
fn lines_from_stdin_become_records_in_order() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "events", "-p", "2"]).ok();

    let produced = server.cli_with_input(&["produce", "events", "-p", "1"], "one\ntwo\r\n\nfour");
    let text = produced.lines();
    assert_eq!(text[0], "produced 4 records to topic 'events'", "{text:?}");
    assert!(text[2].starts_with("1 "), "{text:?}");
    assert!(text[2].ends_with("0..=3"), "{text:?}");

    let again = server
        .cli_with_input(
            &["produce", "events", "-p", "1", "--output", "json"],
            "five\n",
        )
        .json_lines();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0]["partition"], 1);
    assert_eq!(again[0]["records"], 1);
    assert_eq!(again[0]["first_offset"], 4);
    assert_eq!(again[0]["last_offset"], 4);

    let values = server.cli(&["consume", "events", "-p", "1"]).lines();
    assert_eq!(values, ["one", "two", "", "four", "five"]);
}

#[test]
fn a_file_of_key_value_lines_is_routed_by_key_with_headers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "signups", "-p", "4"]).ok();

    let file = dir.path().join("signups.txt");
    let users: Vec<String> = (0..20).map(|i| format!("user-{i}")).collect();
    let lines = users
        .iter()
        .map(|u| {
            format!(
                "{u}|{{\"id\":\"{u}\"}}
"
            )
        })
        .collect::<Vec<_>>()
        .concat();
    std::fs::write(&file, lines).expect("write the input file");
    let path = file.to_str().expect("a UTF-8 path");

    let landed = server
        .cli(&[
            "produce",
            "signups",
            "--file",
            path,
            "--key-separator",
            "|",
            "-H",
            "source=import",
            "-H",
            "version=2",
            "--output",
            "json",
        ])
        .json_lines();
    let total: u64 = landed
        .iter()
        .map(|l| l["records"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(total, 20);

    let records = server
        .cli(&["consume", "signups", "--output", "json"])
        .json_lines();
    assert_eq!(records.len(), 20);
    for r in &records {
        let key = r["key"].as_str().expect("a key");
        assert_eq!(r["value"], format!("{{\"id\":\"{key}\"}}"));
        // The client routes exactly as the broker's partitioner does.
        assert_eq!(r["partition"], partition_for_key(key.as_bytes(), 4));
        assert_eq!(
            r["headers"],
            serde_json::json!([
                {"name": "source", "value": "import"},
                {"name": "version", "value": "2"}
            ])
        );
    }
    // Each partition keeps the file's order.
    for p in 0..4 {
        let keys: Vec<&str> = records
            .iter()
            .filter(|r| r["partition"] == p)
            .filter_map(|r| r["key"].as_str())
            .collect();
        let expected: Vec<&str> = users
            .iter()
            .map(String::as_str)
            .filter(|u| partition_for_key(u.as_bytes(), 4) == p)
            .collect();
        assert_eq!(keys, expected, "partition {p}");
    }
}

#[test]
fn a_line_without_the_separator_or_a_missing_file_is_an_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t"]).ok();

    let bad = server.cli_with_input(
        &["produce", "t", "--key-separator", ":"],
        "a:1\nno-separator\n",
    );
    let err = bad.failed();
    assert!(err.contains("line 2 has no key separator ':'"), "{err}");
    // The line before the bad one was still produced, and said so.
    assert!(bad.stdout.contains("produced 1 record"), "{}", bad.stdout);

    let missing = server.cli(&["produce", "t", "--file", "/nonexistent/input.txt"]);
    assert!(
        missing
            .failed()
            .contains("cannot open /nonexistent/input.txt"),
        "{}",
        missing.stderr
    );

    let bad_header = server.cli_with_input(&["produce", "t", "-H", "novalue"], "x\n");
    assert!(
        bad_header.failed().contains("NAME=VALUE"),
        "{}",
        bad_header.stderr
    );
}
