//! Durability completion: under `fsync never`, appends that wait only for the write
//! (`AppendWait::Written`, as a Raft log's append does before its flush callback) followed by
//! `Log::sync_to` must, once `sync_to` returns, survive any power cut. The log runs on the
//! power-cut simulator (`tests/common/power_cut.rs`); at random file events a directory is
//! written out as a cut could leave it, and each is opened afterwards: every offset below the
//! last completed `sync_to` is there, with its value and its term, and nothing past what was
//! written. The run must also see a cut lose something not yet synced, or the simulation
//! shows nothing.
//!
//! `STRATA_POWER_CUT_ROUNDS` (default 4) and `STRATA_POWER_CUT_SEED` set the run.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common {
    pub mod power_cut;
    pub mod rng;
    pub mod storage;
}

use common::power_cut::PowerCut;
use common::rng::{Rng, seed_from_env};
use common::storage::{read_all, small_config};
use std::sync::{Arc, Mutex};
use strata::{
    record::{BatchBuilder, validate_batch},
    storage::{AppendWait, FsyncPolicy, Log, LogConfig, Offset},
};

const OPS_PER_ROUND: usize = 80;
/// One file event in this many is a cut.
const CUT_ONE_IN: u64 = 5;

/// What the test knows at a moment: every record written (value and term, by offset) and
/// the end of the last `sync_to` that returned.
#[derive(Debug, Clone, Default)]
struct Expect {
    written: Vec<(Vec<u8>, u64)>,
    synced: Offset,
}

fn config(faults: Option<&Arc<PowerCut>>) -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Never,
        faults: faults.map(PowerCut::as_injector),
        ..small_config()
    }
}

#[test]
fn what_sync_to_returned_for_survives_any_power_cut() {
    let rounds: usize = std::env::var("STRATA_POWER_CUT_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let seed = seed_from_env("STRATA_POWER_CUT_SEED");
    println!("sync_to under power cuts: seed {seed} (STRATA_POWER_CUT_SEED), {rounds} rounds");
    let (mut cuts_total, mut lost_unsynced) = (0, 0);
    for round in 0..rounds {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let cuts_dir = tmp.path().join("cuts");
        std::fs::create_dir(&cuts_dir).unwrap();
        let sim = PowerCut::new(&data);
        let expect = Arc::new(Mutex::new(Expect::default()));
        let cuts = {
            let expect = expect.clone();
            sim.cut_at_random(
                Rng::new(seed ^ (round as u64).wrapping_mul(0x9e37_79b9) ^ 7),
                CUT_ONE_IN,
                cuts_dir,
                move || expect.lock().unwrap().clone(),
            )
        };
        let mut rng = Rng::new(seed.wrapping_add(round as u64));
        let path = data.join("partition-0");
        let log = Log::open(&path, config(Some(&sim))).unwrap();
        let mut term = 1;
        for _ in 0..OPS_PER_ROUND {
            match rng.below(8) {
                0..=4 => {
                    if rng.one_in(4) {
                        term += 1;
                    }
                    let next = log.next_offset();
                    let values: Vec<Vec<u8>> = (0..rng.range(1, 3))
                        .map(|i| {
                            let mut v = format!("r{round}-{}", next + i).into_bytes();
                            v.resize(v.len() + rng.below(900) as usize, b'x');
                            v
                        })
                        .collect();
                    let mut b = BatchBuilder::default();
                    for v in &values {
                        b.push_parts(0, None, v, []);
                    }
                    let bytes = b.finish(0);
                    // Written before the append: a cut during it may keep it.
                    expect
                        .lock()
                        .unwrap()
                        .written
                        .extend(values.into_iter().map(|v| (v, term)));
                    let valid = validate_batch(&bytes, 1 << 20).unwrap();
                    log.append_in_term(term, &valid, AppendWait::Written)
                        .unwrap();
                }
                5 | 6 => {
                    let next = log.next_offset();
                    log.sync_to(next).unwrap();
                    expect.lock().unwrap().synced = next;
                }
                _ => log.roll().unwrap(),
            }
        }
        drop(log);
        sim.on_event(|_, _, _| {});

        let cuts = std::mem::take(&mut *cuts.lock().unwrap());
        for cut in &cuts {
            let at = format!("round {round}, cut at event {} ({:?})", cut.event, cut.dir);
            let log = Log::open(&cut.dir.join("partition-0"), config(None))
                .unwrap_or_else(|e| panic!("{at}: the log does not open: {e}"));
            let next = log.next_offset();
            let Expect { written, synced } = &cut.expect;
            assert!(
                next >= *synced,
                "{at}: synced to {synced}, but the log ends at {next}"
            );
            assert!(
                next as usize <= written.len(),
                "{at}: {next} records, only {} written",
                written.len()
            );
            let got = read_all(&log, 0).unwrap();
            let want: Vec<(Offset, Vec<u8>)> = (0..)
                .zip(written.iter().map(|(v, _)| v.clone()))
                .take(next as usize)
                .collect();
            assert_eq!(got, want, "{at}: the records");
            for offset in 0..next {
                assert_eq!(
                    log.term_at(offset).unwrap(),
                    written[offset as usize].1,
                    "{at}: the term at {offset}"
                );
            }
            if (next as usize) < written.len() {
                lost_unsynced += 1;
            }
        }
        cuts_total += cuts.len();
    }
    println!("{cuts_total} cuts, {lost_unsynced} of them lost records not yet synced");
    assert!(cuts_total > 0, "no cut was taken");
    assert!(
        lost_unsynced > 0,
        "no cut lost an unsynced record: the simulation would not catch a sync_to that syncs nothing"
    );
}
