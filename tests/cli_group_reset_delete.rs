//! `strata group reset` moves a group's committed offsets (earliest, latest, an offset clamped
//! to what is stored, a time, N back), with a dry run that commits nothing; `strata group
//! delete` removes a group. Both are refused while the group has a live member, with a hint.

mod common;

use common::Server;
use strata::proto::GroupHeartbeatRequest;

fn lines(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{prefix}{i}"))
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// (partition, committed offset or None) from `group describe --output json`.
fn committed(server: &Server, group: &str) -> Vec<(u64, Option<u64>)> {
    server
        .cli(&["group", "describe", group, "--output", "json"])
        .json_lines()
        .iter()
        .filter(|l| l.get("partition").is_some())
        .map(|l| {
            (
                l["partition"].as_u64().unwrap_or(u64::MAX),
                l["committed_offset"].as_u64(),
            )
        })
        .collect()
}

/// The plan a reset printed: (partition, from, to).
fn plan(run: &common::cli::Run) -> Vec<(u64, Option<u64>, u64)> {
    run.json_lines()
        .iter()
        .map(|l| {
            (
                l["partition"].as_u64().unwrap_or(u64::MAX),
                l["from"].as_u64(),
                l["to"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[tokio::test]
async fn reset_moves_offsets_and_delete_removes_the_group_unless_it_has_members() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    server.cli(&["topic", "create", "t", "-p", "2"]).ok();
    server
        .cli_with_input(&["produce", "t", "-p", "0"], &lines("a", 10))
        .ok();
    server
        .cli_with_input(&["produce", "t", "-p", "1"], &lines("b", 5))
        .ok();
    server
        .cli(&["consume", "t", "-g", "billing", "-p", "0", "-n", "4"])
        .ok();
    assert_eq!(committed(&server, "billing"), [(0, Some(4))]);

    // A dry run prints the plan and commits nothing.
    let dry = server.cli(&[
        "group",
        "reset",
        "billing",
        "--topic",
        "t",
        "--to",
        "earliest",
        "--dry-run",
        "--output",
        "json",
    ]);
    assert_eq!(plan(&dry), [(0, Some(4), 0), (1, None, 0)]);
    assert_eq!(committed(&server, "billing"), [(0, Some(4))]);
    let text = server
        .cli(&[
            "group",
            "reset",
            "billing",
            "--topic",
            "t",
            "--to",
            "latest",
            "--dry-run",
        ])
        .lines();
    assert_eq!(
        text.last().map(String::as_str),
        Some("(dry run: nothing committed)")
    );

    // N back from the commit, one partition.
    let back = server.cli(&[
        "group", "reset", "billing", "--topic", "t", "--to", "-3", "-p", "0", "--output", "json",
    ]);
    assert_eq!(plan(&back), [(0, Some(4), 1)]);
    assert_eq!(committed(&server, "billing"), [(0, Some(1))]);

    // An offset past the end is clamped to it; latest; a time before every record is earliest.
    server
        .cli(&["group", "reset", "billing", "--topic", "t", "--to", "7"])
        .ok();
    assert_eq!(committed(&server, "billing"), [(0, Some(7)), (1, Some(5))]);
    server
        .cli(&["group", "reset", "billing", "--topic", "t", "--to", "@0"])
        .ok();
    assert_eq!(committed(&server, "billing"), [(0, Some(0)), (1, Some(0))]);
    server
        .cli(&[
            "group", "reset", "billing", "--topic", "t", "--to", "latest",
        ])
        .ok();
    assert_eq!(committed(&server, "billing"), [(0, Some(10)), (1, Some(5))]);
    let bad = server.cli(&["group", "reset", "billing", "--topic", "t", "--to", "-x"]);
    // A usage error: clap's exit code 2, with the reason.
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    assert!(bad.stderr.contains("number of records"), "{}", bad.stderr);

    // A live member: reset and delete are refused and say what to do.
    let mut client = server.client().await;
    let joined = client
        .group_heartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            topics: vec!["t".into()],
            ..GroupHeartbeatRequest::default()
        })
        .await
        .expect("join")
        .into_inner();
    for args in [
        &[
            "group", "reset", "billing", "--topic", "t", "--to", "earliest",
        ][..],
        &["group", "delete", "billing"][..],
    ] {
        let refused = server.cli(args);
        let err = refused.failed();
        assert!(
            err.contains("'billing'") && err.contains("live member"),
            "{err}"
        );
        assert!(err.contains("stop the group's consumers"), "{err}");
    }
    assert_eq!(committed(&server, "billing"), [(0, Some(10)), (1, Some(5))]);
    client
        .group_heartbeat(GroupHeartbeatRequest {
            group: "billing".into(),
            member_id: joined.member_id,
            member_epoch: -1,
            ..GroupHeartbeatRequest::default()
        })
        .await
        .expect("leave");

    // Without members it goes, for good (also across a restart).
    assert!(
        server
            .cli(&["group", "delete", "billing"])
            .ok()
            .contains("deleted consumer group 'billing'")
    );
    assert!(
        server
            .cli(&["group", "describe", "billing"])
            .failed()
            .contains("'billing'")
    );
    assert!(
        server
            .cli(&["group", "delete", "billing"])
            .failed()
            .contains("'billing'")
    );
    drop(client);
    let data = server.data_dir.clone();
    server.kill();
    let server = Server::start(&data);
    assert!(
        server
            .cli(&["group", "list"])
            .ok()
            .contains("no consumer groups yet")
    );
}
