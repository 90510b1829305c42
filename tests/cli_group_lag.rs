//! `strata group list | describe`: committed offset, next offset and lag per partition.

mod common;

use common::Server;

#[test]
fn describe_shows_the_lag_a_group_has_left() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "orders", "-p", "2"]).ok();
    let ten = (0..10)
        .map(|i| format!("{i}\n"))
        .collect::<Vec<_>>()
        .concat();
    server
        .cli_with_input(&["produce", "orders", "-p", "0"], &ten)
        .ok();
    server
        .cli_with_input(&["produce", "orders", "-p", "1"], "a\nb\n")
        .ok();

    assert!(
        server
            .cli(&["group", "list"])
            .ok()
            .contains("no consumer groups yet")
    );
    server
        .cli(&["consume", "orders", "-g", "billing", "-p", "0", "-n", "4"])
        .ok();
    server
        .cli(&["consume", "orders", "-g", "billing", "-p", "1"])
        .ok();

    let text = server.cli(&["group", "describe", "billing"]).lines();
    assert_eq!(text.len(), 3, "{text:?}");
    let cells = |line: &str| {
        line.split_whitespace()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        cells(&text[0]),
        ["TOPIC", "PARTITION", "COMMITTED", "NEXT", "LAG"]
    );
    assert_eq!(cells(&text[1]), ["orders", "0", "4", "10", "6"]);
    assert_eq!(cells(&text[2]), ["orders", "1", "2", "2", "0"]);

    server
        .cli_with_input(&["produce", "orders", "-p", "1"], "c\n")
        .ok();
    let json = server
        .cli(&["group", "describe", "billing", "--output", "json"])
        .json_lines();
    assert_eq!(json.len(), 2);
    assert_eq!(json[0]["group"], "billing");
    assert_eq!(json[0]["lag"], 6);
    assert_eq!(json[1]["committed_offset"], 2);
    assert_eq!(json[1]["next_offset"], 3);
    assert_eq!(json[1]["lag"], 1);

    let groups = server
        .cli(&["group", "list", "--output", "json"])
        .json_lines();
    assert_eq!(groups, [serde_json::json!({"group": "billing"})]);

    let unknown = server.cli(&["group", "describe", "nobody"]);
    let err = unknown.failed();
    assert!(err.contains("'nobody'"), "{err}");
    assert!(err.contains("strata group list"), "{err}");
}
