//! A segment size below the storage's smallest segment is refused with the reason, at create and
//! at alter, instead of being silently raised to it.

mod common;

use common::Server;

#[test]
fn segment_bytes_below_the_storage_minimum_is_refused_not_raised() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());

    let small = server.cli(&["topic", "create", "t", "--segment-bytes", "1KiB"]);
    let err = small.failed();
    assert!(
        err.starts_with(
            "error: invalid segment_max_bytes: 1024 is below the smallest segment the storage \
             uses, 4096 bytes"
        ),
        "{err}"
    );
    let topics = server
        .cli(&["topic", "list", "--output", "json"])
        .json_lines();
    assert!(topics.is_empty(), "{topics:?}");

    // The minimum itself is taken as given.
    server
        .cli(&["topic", "create", "t", "--segment-bytes", "4KiB"])
        .ok();
    let alter = server.cli(&["topic", "alter", "t", "--set", "segment.bytes=1KiB"]);
    assert!(
        alter
            .failed()
            .contains("1024 is below the smallest segment"),
        "{}",
        alter.stderr
    );
    let topics = server
        .cli(&["topic", "list", "--output", "json"])
        .json_lines();
    assert_eq!(topics[0]["config"]["segment_max_bytes"], 4096, "{topics:?}");
}
