//! `strata topic create | list | describe | alter | delete` against a real broker, in text and JSON.

mod common;

use common::Server;

#[test]
fn a_topic_is_created_listed_described_altered_and_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());

    let created = server.cli(&[
        "topic",
        "create",
        "orders",
        "-p",
        "3",
        "--retention-ms",
        "7d",
        "--segment-bytes",
        "1MiB",
        "--fsync",
        "interval:250",
    ]);
    assert_eq!(
        created.ok().trim(),
        "created topic 'orders' with 3 partitions"
    );
    server.cli(&["topic", "create", "audit"]).ok();

    // Text: one aligned row per topic, sorted by name.
    let list = server.cli(&["topic", "list"]).lines();
    assert_eq!(list.len(), 3, "{list:?}");
    assert!(list[0].starts_with("NAME"), "{list:?}");
    assert!(list[1].starts_with("audit "), "{list:?}");
    assert!(list[2].starts_with("orders "), "{list:?}");
    // Sizes and durations the way they were typed; JSON below keeps the numbers.
    let cells: Vec<&str> = list[2].split_whitespace().collect();
    assert_eq!(
        cells,
        ["orders", "3", "7d", "unlimited", "1MiB", "interval:250ms"],
        "{list:?}"
    );

    // JSON: one object per topic with the effective settings.
    let topics = server
        .cli(&["topic", "list", "--output", "json"])
        .json_lines();
    assert_eq!(topics.len(), 2);
    let orders = &topics[1];
    assert_eq!(orders["name"], "orders");
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["config"]["retention_ms"], 7 * 86_400_000);
    assert_eq!(orders["config"]["segment_max_bytes"], 1 << 20);
    assert_eq!(orders["config"]["fsync"], "interval");
    assert_eq!(orders["config"]["fsync_interval_ms"], 250);

    // Describe: settings, then a row per partition.
    server
        .cli_with_input(&["produce", "orders", "-p", "1"], "a\nb\n")
        .ok();
    let text = server.cli(&["topic", "describe", "orders"]).lines();
    assert!(
        text.iter()
            .any(|l| l == "fsync:              interval:250ms"),
        "{text:?}"
    );
    for line in [
        "retention.ms:       7d",
        "segment.bytes:      1MiB",
        "max.record.bytes:   1MiB",
    ] {
        assert!(text.iter().any(|l| l == line), "{line}: {text:?}");
    }
    let row = text
        .iter()
        .find(|l| l.starts_with("1 "))
        .unwrap_or_else(|| panic!("no row for partition 1: {text:?}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..4],
        ["1", "0", "2", "2"],
        "partition earliest next records"
    );
    let described = server
        .cli(&["topic", "describe", "orders", "--output", "json"])
        .json_lines();
    assert_eq!(described.len(), 1);
    let partitions = described[0]["partitions"].as_array().expect("partitions");
    assert_eq!(partitions.len(), 3);
    assert_eq!(partitions[1]["next_offset"], 2);
    assert_eq!(partitions[0]["next_offset"], 0);

    // Alter: changed keys take any spelling; the rest keep their value.
    let altered = server
        .cli(&[
            "topic",
            "alter",
            "orders",
            "--set",
            "retention.bytes=1GiB",
            "--set",
            "fsync=never",
            "--output",
            "json",
        ])
        .json_lines();
    assert_eq!(altered[0]["config"]["retention_bytes"], 1 << 30);
    assert_eq!(altered[0]["config"]["fsync"], "never");
    assert_eq!(altered[0]["config"]["retention_ms"], 7 * 86_400_000);
    let altered = server.cli(&["topic", "alter", "orders", "--set", "retention_ms=-1"]);
    assert!(
        altered.ok().contains("retention.ms:       forever"),
        "{}",
        altered.stdout
    );

    // Delete: gone from the list; describing it is an error with a hint.
    assert_eq!(
        server.cli(&["topic", "delete", "orders"]).ok().trim(),
        "deleted topic 'orders'"
    );
    let topics = server
        .cli(&["topic", "list", "--output", "json"])
        .json_lines();
    assert_eq!(topics.len(), 1);
    assert_eq!(topics[0]["name"], "audit");
    let gone = server.cli(&["topic", "describe", "orders"]);
    let err = gone.failed();
    assert!(err.contains("topic 'orders' does not exist"), "{err}");
    assert!(err.contains("hint: `strata topic list`"), "{err}");
}

#[test]
fn creating_a_topic_twice_or_with_a_bad_setting_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "orders"]).ok();

    let again = server.cli(&["topic", "create", "orders"]);
    let err = again.failed();
    // The gRPC code is said once, not "already exists: topic 'orders' already exists".
    assert!(
        err.starts_with("error: topic 'orders' already exists\n"),
        "{err}"
    );
    assert!(err.contains("strata topic describe orders"), "{err}");

    let bad = server.cli(&["topic", "create", "bad name"]);
    assert!(
        bad.failed().starts_with("error: invalid topic name"),
        "{}",
        bad.stderr
    );

    let bad = server.cli(&["topic", "alter", "orders", "--set", "colour=blue"]);
    assert!(
        bad.failed().contains("unknown setting 'colour'"),
        "{}",
        bad.stderr
    );

    let bad = server.cli(&["topic", "create", "other", "--fsync", "sometimes"]);
    assert!(bad.failed().contains("fsync"), "{}", bad.stderr);

    let empty = server
        .cli(&["topic", "list", "--output", "json"])
        .json_lines();
    assert_eq!(
        empty.len(),
        1,
        "nothing was created by the refused commands"
    );
}
