//! `strata serve --log-format json --log-level ...`: one JSON object per line on stderr, each
//! answered request in its span with the rpc, the peer's address, the principal and the
//! resource; the token never appears. Text logs into a pipe carry no ANSI colours.

mod common;

use common::{cli, listening_address};
use std::{
    io::Read,
    process::{Command, Stdio},
};

fn serve(dir: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start strata")
}

/// SIGTERM, wait, and everything it logged.
fn stop(mut child: std::process::Child) -> String {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let mut logs = String::new();
    child
        .stderr
        .take()
        .expect("piped stderr")
        .read_to_string(&mut logs)
        .expect("read the logs");
    assert!(child.wait().expect("reap").success(), "{logs}");
    logs
}

#[test]
fn json_logs_carry_each_request_span_and_text_logs_no_colours() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("principals.json");
    let file_arg = file.to_str().expect("utf-8 path");
    let token = cli::add_superuser(&file, "alice");
    let mut child = serve(
        dir.path(),
        &[
            "--auth-file",
            file_arg,
            "--log-format",
            "json",
            "--log-level",
            "info,strata::server=debug",
        ],
    );
    let addr = listening_address(&mut child);
    let broker = Some(addr.as_str());
    cli::run(
        broker,
        &["topic", "create", "orders", "--token", &token],
        b"",
    )
    .ok();
    cli::run(
        broker,
        &["produce", "orders", "--token", &token],
        b"hello\n",
    )
    .ok();
    let denied = cli::run(broker, &["topic", "list", "--token", "strata_wrong"], b"");
    assert!(!denied.status.success());
    let logs = stop(child);

    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let answered = |rpc: &str| {
        lines
            .iter()
            .find(|l| l["fields"]["message"] == "answered" && l["span"]["rpc"] == rpc)
            .unwrap_or_else(|| panic!("no answered {rpc} in:\n{logs}"))
    };
    let produce = answered("Produce");
    assert_eq!(produce["fields"]["code"], "OK", "{produce}");
    assert_eq!(produce["span"]["principal"], "alice", "{produce}");
    assert_eq!(produce["span"]["resource"], "topic:orders", "{produce}");
    assert!(
        produce["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{produce}"
    );
    assert!(produce["fields"]["ms"].as_f64().is_some(), "{produce}");
    let list = answered("ListTopics");
    assert_eq!(list["fields"]["code"], "UNAUTHENTICATED", "{list}");
    assert!(!logs.contains(&token), "a token in the logs");
    assert!(!logs.contains("strata_wrong"), "a wrong token in the logs");

    // Text logs into a pipe: no colour codes.
    let mut child = serve(dir.path(), &["--auth-file", file_arg]);
    listening_address(&mut child);
    let logs = stop(child);
    assert!(logs.contains("INFO"), "{logs}");
    assert!(
        !logs.contains('\u{1b}'),
        "ANSI escapes in piped logs: {logs:?}"
    );
}
