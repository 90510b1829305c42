//! A real process appending under `FsyncPolicy::Always` from several threads is killed with
//! SIGKILL at random moments, round after round; after each kill the log is reopened and every
//! append the child acknowledged is there, at its offset, in order, with no gap and no duplicate.
//!
//! The child is this test binary run again (`--exact` this test, with `STRATA_CRASH_CHILD` set
//! to the log directory). It prints `ack <offset> <value>` for each record once `append`
//! returned, and flushes. The parent kills it after a random number of acknowledgements (not
//! after a random time). Replay a failure with `STRATA_CRASH_SEED=<seed>` (printed first).

#![allow(clippy::unwrap_used)] // helpers of a test: a failed unwrap is a failed test

mod common {
    pub mod rng;
    pub mod storage;
}

use common::rng::Rng;
use common::storage::read_all;
use std::{
    collections::{BTreeMap, HashSet},
    io::{BufRead, BufReader, Write},
    path::Path,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{FsyncPolicy, Log, LogConfig, Offset},
};

const TEST_NAME: &str = "acknowledged_appends_survive_sigkill";
const CHILD_ENV: &str = "STRATA_CRASH_CHILD";
const ROUND_ENV: &str = "STRATA_CRASH_ROUND";
const SEED_ENV: &str = "STRATA_CRASH_SEED";
const THREADS: u64 = 4;
const ROUNDS: u64 = 8;

fn config() -> LogConfig {
    LogConfig {
        // Small segments and frequent checkpoints, so kills land in rolls and checkpoints too.
        segment_max_bytes: 16 * 1024,
        segment_max_ms: None,
        retention_ms: None,
        retention_bytes: None,
        fsync: FsyncPolicy::Always,
        index_interval_bytes: 512,
        checkpoint_interval_bytes: 4096,
        // Everything behind the writer leaves the page cache: kills land in drops too.
        cached_tail_bytes: Some(0),
        ..LogConfig::default()
    }
}

/// The child: appends from `THREADS` threads until killed (or until the parent goes away and
/// writing to stdout fails).
fn child(dir: &Path) {
    let round: u64 = std::env::var(ROUND_ENV).unwrap().parse().unwrap();
    let log = Arc::new(Log::open(dir, config()).unwrap());
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut rng = Rng::new(round * 1000 + t);
                for seq in 0.. {
                    let n = 1 + rng.below(3);
                    let values: Vec<String> = (0..n)
                        .map(|k| {
                            let pad = "x".repeat(rng.below(200) as usize);
                            format!("r{round}-t{t}-{seq}-{k}-{pad}")
                        })
                        .collect();
                    let mut b = BatchBuilder::default();
                    for v in &values {
                        b.push_parts(seq, None, v.as_bytes(), []);
                    }
                    let bytes = b.finish(0);
                    let batch = validate_batch(&bytes, 1 << 20).unwrap();
                    let appended = log.append(&batch[0]).unwrap();
                    if t == 0 && seq % 16 == 0 {
                        log.tick(0).unwrap(); // writes checkpoints now and then
                    }
                    let mut out = std::io::stdout().lock();
                    for (offset, v) in (appended.base_offset..).zip(&values) {
                        if writeln!(out, "ack {offset} {v}").is_err() {
                            std::process::exit(0);
                        }
                    }
                    if out.flush().is_err() {
                        std::process::exit(0);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Kills the child if the parent panics while it runs.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a child for `round`, waits for `acks` acknowledgements, kills it, and returns every
/// acknowledgement it printed before it died.
fn run_child(dir: &Path, round: u64, acks: u64) -> Vec<(Offset, String)> {
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(ROUND_ENV, round.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    let parse = |line: &str| {
        let rest = line.strip_prefix("ack ")?;
        let (offset, value) = rest.split_once(' ')?;
        Some((offset.parse::<Offset>().ok()?, value.to_owned()))
    };
    while (acked.len() as u64) < acks {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("round {round}: the child exited before it was killed"))
            .unwrap();
        if let Some(ack) = parse(&line) {
            acked.push(ack);
        }
    }
    child.0.kill().unwrap(); // SIGKILL
    // Lines the child wrote before it died are acknowledgements too.
    for line in lines {
        if let Some(ack) = parse(&line.unwrap()) {
            acked.push(ack);
        }
    }
    let status = child.0.wait().unwrap();
    assert!(!status.success(), "round {round}: the child was not killed");
    acked
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    let seed = std::env::var(SEED_ENV).map_or_else(
        |_| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        },
        |s| s.parse().unwrap(),
    );
    eprintln!("seed {seed} (replay with {SEED_ENV}={seed})");
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut acked: BTreeMap<Offset, String> = BTreeMap::new();
    for round in 0..ROUNDS {
        let wait_for = 1 + rng.below(1500);
        for (offset, value) in run_child(dir.path(), round, wait_for) {
            let previous = acked.insert(offset, value.clone());
            assert!(
                previous.is_none(),
                "seed {seed}: offset {offset} acknowledged twice ({previous:?}, {value})"
            );
        }

        let log = Log::open(dir.path(), config()).unwrap();
        let stored = read_all(&log, 0).unwrap();
        let context = format!("seed {seed}, round {round} (killed after {wait_for} acks)");
        // No gap: offsets 0, 1, 2, ... (read_all also checks every read made progress).
        for (i, (offset, _)) in stored.iter().enumerate() {
            assert_eq!(*offset, i as u64, "{context}: a gap in the offsets");
        }
        assert_eq!(log.next_offset(), stored.len() as u64, "{context}");
        // Every acknowledged record, at its offset.
        for (offset, value) in &acked {
            let found = stored.get(*offset as usize).map(|(_, v)| v.as_slice());
            assert_eq!(
                found,
                Some(value.as_bytes()),
                "{context}: acknowledged offset {offset} lost or changed"
            );
        }
        // No duplicate, and each thread's records in the order it appended them.
        let mut seen = HashSet::new();
        let mut last_seq: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (offset, value) in &stored {
            let value = String::from_utf8(value.clone()).unwrap();
            assert!(
                seen.insert(value.clone()),
                "{context}: {value} stored twice"
            );
            let mut parts = value.split('-');
            let (r, t, seq) = (
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().to_owned(),
                parts.next().unwrap().parse::<u64>().unwrap(),
            );
            if let Some(prev) = last_seq.insert((r, t), seq) {
                assert!(
                    prev <= seq,
                    "{context}: offset {offset} holds {value} after sequence {prev}"
                );
            }
        }
        eprintln!(
            "round {round}: killed after {wait_for} acks; {} acknowledged in all, {} stored",
            acked.len(),
            stored.len()
        );
        drop(log);
    }
    assert!(acked.len() as u64 >= ROUNDS, "seed {seed}");
}
