//! `strata bench produce|consume|e2e` against a real broker: each load runs to its record count,
//! through the Rust client, and reports what it did; what it produced is in the topic.

mod common;

use common::Server;

/// Produces `records` with `bench produce` into `topic` (kept) and returns its JSON report.
fn bench(server: &Server, args: &[&str]) -> serde_json::Value {
    let run = server.cli(args);
    let lines = run.json_lines();
    assert_eq!(lines.len(), 1, "one report: {}", run.ok());
    lines.into_iter().next().unwrap_or_default()
}

#[test]
fn produce_consume_and_e2e_run_to_their_record_counts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());

    let produced = bench(
        &server,
        &[
            "bench",
            "produce",
            "--topic",
            "load",
            "--partitions",
            "3",
            "--producers",
            "2",
            "--records",
            "3000",
            "--batch-size",
            "100",
            "--record-size",
            "64",
            "--keep",
            "--output",
            "json",
        ],
    );
    assert_eq!(produced["mode"], "produce");
    assert_eq!(produced["records"], 3000);
    assert_eq!(produced["payload_bytes"], 3000 * 64);
    assert!(produced["p50_ms"].as_f64().is_some_and(|ms| ms > 0.0));

    // The records are in the kept topic, spread over its partitions by the producers.
    let described = server.cli(&["topic", "describe", "load", "--output", "json"]);
    let described: serde_json::Value =
        serde_json::from_str(described.ok()).expect("describe prints JSON");
    let stored: u64 = described["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|p| {
            p["next_offset"].as_u64().unwrap_or(0) - p["earliest_offset"].as_u64().unwrap_or(0)
        })
        .sum();
    assert_eq!(stored, 3000);

    // Replaying the backlog the topic already has reads every record once per consumer.
    let consumed = bench(
        &server,
        &[
            "bench",
            "consume",
            "--topic",
            "load",
            "--consumers",
            "2",
            "--record-size",
            "64",
            "--backlog-bytes",
            "1KiB",
            "--keep",
            "--output",
            "json",
        ],
    );
    assert_eq!(consumed["mode"], "consume");
    assert_eq!(consumed["records"], 2 * 3000);

    let e2e = bench(
        &server,
        &[
            "bench",
            "e2e",
            "--records",
            "500",
            "--batch-size",
            "10",
            "--record-size",
            "64",
            "--rate-mb",
            "1",
            "--output",
            "json",
        ],
    );
    assert_eq!(e2e["mode"], "e2e");
    assert_eq!(e2e["records"], 500);

    // The e2e topic was the bench's own and is gone; the kept one stays.
    let topics = server.cli(&["topic", "list"]).ok().to_string();
    assert!(topics.contains("load"), "{topics}");
    assert!(!topics.contains("bench-e2e"), "{topics}");
}

#[test]
fn a_batch_larger_than_the_broker_takes_is_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--max-request-bytes", "1048576"]);
    let failed = server
        .cli(&[
            "bench",
            "produce",
            "--records",
            "2000",
            "--batch-size",
            "2000",
            "--record-size",
            "1024",
        ])
        .failed()
        .to_string();
    assert!(failed.contains("produce failed"), "{failed}");
}

#[test]
fn rebalance_measures_how_long_a_join_takes_to_settle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start_with(dir.path(), &["--group-heartbeat-interval", "100ms"]);
    let report = bench(
        &server,
        &[
            "bench",
            "rebalance",
            "--partitions",
            "12",
            "--joins",
            "2",
            "--rate-mb",
            "0.5",
            "--record-size",
            "128",
            "--batch-size",
            "10",
            "--fsync",
            "never",
            "--output",
            "json",
        ],
    );
    assert_eq!(report["mode"], "rebalance");
    assert_eq!(report["joins"], 2);
    let p50 = report["settle_p50_ms"].as_f64().unwrap_or(-1.0);
    let max = report["settle_max_ms"].as_f64().unwrap_or(-1.0);
    // It measured something, and a join settles within seconds, not a session timeout.
    assert!(p50 > 0.0 && max >= p50 && max < 5_000.0, "{report}");
    // Records flowed, and through partitions that kept their owner too (12 over 4 members: at
    // most 3 of 12 move per join).
    let unmoved = report["unmoved_records_per_s_before"]
        .as_f64()
        .unwrap_or(-1.0);
    let group = report["group_records_per_s_before"]
        .as_f64()
        .unwrap_or(-1.0);
    assert!(unmoved > 0.0 && unmoved <= group, "{report}");
    // The bench's topic and group are gone.
    let groups = server.cli(&["group", "list"]).ok().to_string();
    assert!(!groups.contains("bench-rebalance"), "{groups}");
}
