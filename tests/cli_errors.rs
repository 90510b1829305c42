//! What the CLI says when something is wrong: an unknown topic, no broker, a bad flag; and that
//! every command's `--help` shows an example.

mod common;

use common::{Server, cli};

#[test]
fn an_unknown_topic_is_named_with_a_way_to_create_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Server::start(dir.path());
    for run in [
        server.cli(&["consume", "nope"]),
        server.cli_with_input(&["produce", "nope"], "x\n"),
        server.cli(&["topic", "describe", "nope"]),
        server.cli(&["topic", "delete", "nope"]),
    ] {
        let err = run.failed();
        assert!(
            // The code once: the broker's sentence says "does not exist" already.
            err.starts_with("error: topic 'nope' does not exist\n"),
            "{err}"
        );
        assert!(
            err.contains("hint: `strata topic list` shows the topics"),
            "{err}"
        );
        assert!(err.contains("`strata topic create nope`"), "{err}");
        assert!(run.stdout.is_empty(), "{}", run.stdout);
    }
}

#[test]
fn a_broker_that_is_not_running_is_named_with_a_hint() {
    // A port that was free a moment ago: nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for run in [
        cli::run(None, &["topic", "list", "--broker", &url], b""),
        cli::run(Some(&url), &["consume", "t"], b""),
        cli::run(Some(&url), &["group", "list"], b""),
        cli::run(Some(&url), &["produce", "t"], b"x\n"),
    ] {
        let err = run.failed();
        assert!(
            err.contains(&format!("cannot connect to the broker at {url}")),
            "{err}"
        );
        assert!(
            err.contains(&format!("is `strata serve` running at {url}?")),
            "{err}"
        );
    }
    let bad_url = cli::run(None, &["topic", "list", "--broker", "not a url"], b"");
    assert!(
        bad_url.failed().contains("'not a url' is not a broker URL"),
        "{}",
        bad_url.stderr
    );
}

#[test]
fn a_bad_flag_is_a_usage_error() {
    for (args, expected) in [
        (
            &["consume", "t", "--bogus"][..],
            "unexpected argument '--bogus'",
        ),
        (
            &["topic", "list", "--output", "yaml"][..],
            "invalid value 'yaml'",
        ),
        (
            &["consume", "t", "--from", "yesterday"][..],
            "is not a position",
        ),
        (&["topic", "create"][..], "required"),
        (&["topic", "frobnicate"][..], "unrecognized subcommand"),
    ] {
        let run = cli::run(None, args, b"");
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(expected), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains("--help"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn every_command_shows_an_example_in_its_help() {
    let commands: [&[&str]; 28] = [
        &[],
        &["serve"],
        &["topic"],
        &["topic", "create"],
        &["topic", "list"],
        &["topic", "describe"],
        &["topic", "delete"],
        &["topic", "alter"],
        &["produce"],
        &["consume"],
        &["group"],
        &["group", "list"],
        &["group", "describe"],
        &["completions"],
        &["serve"],
        &["consume"],
        &["produce"],
        &["bench"],
        &["bench", "produce"],
        &["bench", "consume"],
        &["bench", "e2e"],
        &["bench", "rebalance"],
        &["auth"],
        &["auth", "add"],
        &["auth", "allow"],
        &["auth", "revoke"],
        &["auth", "check"],
        &["auth", "list"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let run = cli::run(None, &args, b"");
        let help = run.ok();
        assert!(
            help.contains("Example"),
            "{command:?} --help has no example:\n{help}"
        );
        assert!(help.contains("strata "), "{command:?}:\n{help}");
    }
    let client_commands: [&[&str]; 4] = [
        &["topic", "list"],
        &["produce"],
        &["consume"],
        &["group", "describe"],
    ];
    for command in client_commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = cli::run(None, &args, b"").stdout;
        assert!(
            help.contains("--broker") && help.contains("STRATA_BROKER"),
            "{command:?}"
        );
        assert!(help.contains("--output"), "{command:?}");
    }
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let run = cli::run(None, &["completions", shell], b"");
        let script = run.ok();
        assert!(script.contains("strata"), "{shell}");
        assert!(script.contains("consume"), "{shell}");
    }
}
