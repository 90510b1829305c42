//! Test support for the `strata` client commands: run the real binary against a [`Server`] and
//! capture what it prints.

use super::Server;
use std::{
    io::Write,
    process::{Command, ExitStatus, Stdio},
};

/// What one run of the CLI did.
#[derive(Debug)]
pub struct Run {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it printed on stdout.
    pub stdout: String,
    /// Everything it printed on stderr.
    pub stderr: String,
}

impl Run {
    /// Panics with both outputs unless the command succeeded; returns stdout.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(
            self.status.success(),
            "strata failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Panics unless the command failed with exit code 1; returns stderr.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert_eq!(
            self.status.code(),
            Some(1),
            "expected a failure:\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        &self.stderr
    }

    /// stdout's lines, each parsed as one JSON object.
    #[track_caller]
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.ok()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    /// stdout's lines.
    #[track_caller]
    pub fn lines(&self) -> Vec<String> {
        self.ok().lines().map(str::to_string).collect()
    }
}

/// Runs `strata ARGS` with `STRATA_BROKER` set to `broker` (if any) and `stdin` as its input.
pub fn run(broker: Option<&str>, args: &[&str], stdin: &[u8]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_strata"));
    command
        .args(args)
        .env_remove("STRATA_BROKER")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = broker {
        command.env("STRATA_BROKER", url);
    }
    let mut child = command.spawn().expect("start the strata binary");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    // Written from a thread so that a command that does not read its input cannot block us.
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let output = child.wait_with_output().expect("wait for strata");
    let _ = writer.join();
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

impl Server {
    /// The broker's URL, as `--broker` takes it.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Runs a client command against this server, with empty input.
    pub fn cli(&self, args: &[&str]) -> Run {
        run(Some(&self.url()), args, b"")
    }

    /// Runs a client command against this server, feeding it `stdin`.
    pub fn cli_with_input(&self, args: &[&str], stdin: &str) -> Run {
        run(Some(&self.url()), args, stdin.as_bytes())
    }
}

/// `strata auth ARGS --file FILE`.
pub fn auth_run(file: &std::path::Path, args: &[&str]) -> Run {
    let mut all = vec!["auth"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--file", file.to_str().expect("a UTF-8 path")]);
    run(None, &all, b"")
}

/// `strata auth ARGS --file FILE`: its stdout, trimmed (fails the test if it fails).
pub fn auth(file: &std::path::Path, args: &[&str]) -> String {
    auth_run(file, args).ok().trim().to_owned()
}

/// `strata auth add NAME --superuser --file FILE`: the principal's fresh token.
pub fn add_superuser(file: &std::path::Path, name: &str) -> String {
    auth(file, &["add", name, "--superuser"])
}

/// A long-running `strata consume ... --output json` process whose printed records each go to a
/// callback on a thread of their own; killed (SIGKILL) when dropped.
pub struct Follower {
    child: std::process::Child,
}

impl Follower {
    /// Starts `strata consume` with `args` (which should ask for `--output json`), calling
    /// `on_record` with each JSON line it prints.
    pub fn start(
        args: &[&str],
        mut on_record: impl FnMut(serde_json::Value) + Send + 'static,
    ) -> Follower {
        use std::io::{BufRead, BufReader};
        let mut child = Command::new(env!("CARGO_BIN_EXE_strata"))
            .arg("consume")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a consumer");
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    on_record(v);
                }
            }
        });
        Follower { child }
    }

    /// SIGKILLs the process and reaps it.
    pub fn kill(&mut self) {
        self.child.kill().expect("SIGKILL a consumer");
        self.child.wait().expect("reap it");
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
