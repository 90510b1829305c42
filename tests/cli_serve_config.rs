//! `strata serve --config FILE`: the file's settings apply, and flags win over them.

mod common;

use std::process::{Child, Command, Stdio};

/// Starts `strata serve ARGS` and returns it with the address it printed.
fn serve(args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
        .arg("serve")
        .args(args)
        .env("RUST_LOG", "warn")
        .env_remove("STRATA_DATA_DIR")
        .env_remove("STRATA_LISTEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata serve");
    let addr = common::listening_address(&mut child);
    (child, addr)
}

#[test]
fn the_config_file_sets_what_flags_leave_unset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("from-file");
    let config = dir.path().join("strata.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = {:?}\nlisten = \"not-an-address\"\nmax_partitions_per_topic = 2\n",
            data.to_str().expect("UTF-8 path")
        ),
    )
    .expect("write config");

    // --listen on the command line wins over the file's (unusable) address.
    let (mut child, addr) = serve(&[
        "--config",
        config.to_str().expect("UTF-8 path"),
        "--listen",
        "127.0.0.1:0",
    ]);
    let url = format!("http://{addr}");
    let ok = common::cli::run(Some(&url), &["topic", "create", "t", "-p", "2"], b"");
    ok.ok();
    // The file's partition limit applies.
    let refused = common::cli::run(Some(&url), &["topic", "create", "u", "-p", "3"], b"");
    assert!(
        refused.failed().contains("partitions"),
        "{}",
        refused.stderr
    );
    // And so does its data directory.
    assert!(data.join("topics").join("t").is_dir());
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_bad_config_file_is_refused_with_its_name() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("bad.toml");
    std::fs::write(&config, "data-dir = \"x\"\ncolour = \"blue\"\n").expect("write config");
    let run = common::cli::run(
        None,
        &[
            "serve",
            "--config",
            config.to_str().expect("UTF-8 path"),
            "--listen",
            "127.0.0.1:0",
        ],
        b"",
    );
    assert_eq!(run.status.code(), Some(2), "{}", run.stderr);
    assert!(run.stderr.contains("bad.toml"), "{}", run.stderr);
    assert!(run.stderr.contains("colour"), "{}", run.stderr);

    let missing = common::cli::run(
        None,
        &["serve", "--config", "/nonexistent/strata.toml"],
        b"",
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        missing.stderr.contains("cannot read the config file"),
        "{}",
        missing.stderr
    );
}
