//! `strata dev cluster` starts three brokers as one cluster: a topic created with `-r 3` through
//! the first has a leader for each partition and a replica on each broker; SIGTERM stops all
//! three cleanly.

mod common;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// A port with the two after it free on 127.0.0.1 now.
fn three_free_ports() -> u16 {
    loop {
        let base = common::free_port();
        let free = (0..3).all(|i| {
            base.checked_add(i)
                .is_some_and(|p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        });
        if free {
            return base;
        }
    }
}

/// Stops `strata dev cluster` (and so its brokers) if the test ends early.
struct Stop(u32);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.to_string()])
            .status();
    }
}

#[test]
fn dev_cluster_starts_three_brokers_that_replicate_and_stop_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = three_free_ports();
    let raft_port = three_free_ports();
    let mut dev = Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(["dev", "cluster", "--data-dir"])
        .arg(dir.path())
        .args([
            "--port",
            &port.to_string(),
            "--raft-port",
            &raft_port.to_string(),
        ])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start strata dev cluster");
    let _stop = Stop(dev.id());
    let mut lines = BufReader::new(dev.stdout.take().expect("stdout")).lines();
    for node in 1..=3 {
        let line = lines.next().expect("a line").expect("read");
        assert!(
            line.starts_with(&format!("broker {node}: 127.0.0.1:{}", port + node - 1)),
            "{line}"
        );
    }
    std::thread::spawn(move || for _ in lines {});

    let broker = format!("http://127.0.0.1:{port}");
    let created = common::cli::run(
        Some(&broker),
        &["topic", "create", "orders", "-p", "2", "-r", "3"],
        b"",
    );
    assert!(created.ok().contains("3 replicas each"), "{}", created.ok());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = common::cli::run(
            Some(&broker),
            &["cluster", "status", "--output", "json"],
            b"",
        );
        let report = &status.json_lines()[0];
        let replicas = report["replicas"].as_array().expect("replicas").clone();
        let led = replicas
            .iter()
            .filter(|r| r["leader"].as_u64().is_some())
            .count();
        if replicas.len() == 6 && led == 6 {
            let nodes: std::collections::BTreeSet<u64> = replicas
                .iter()
                .filter_map(|r| r["node_id"].as_u64())
                .collect();
            assert_eq!(nodes.into_iter().collect::<Vec<_>>(), vec![1, 2, 3]);
            break;
        }
        assert!(Instant::now() < deadline, "no leaders: {report}");
        std::thread::sleep(Duration::from_millis(100));
    }

    let status = Command::new("kill")
        .args(["-TERM", &dev.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    let exited = dev.wait().expect("wait for strata dev");
    assert!(exited.success(), "{exited:?}");
    for node in 0..3 {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port + node)).is_err(),
            "broker {} still listens",
            node + 1
        );
    }
}
