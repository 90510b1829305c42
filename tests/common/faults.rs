//! The one scriptable fault injector of the tests: rules that fail matching file operations (by
//! operation and the end of the file's path, or the n-th operation of any kind) with an OS error
//! or a torn write, a given number of times or until healed; and counters of matching operations.
//! Used as `mod common { pub mod faults; }` (storage tests) or through `mod common;` (server
//! tests).
//!
//! (`power_cut.rs`'s `PowerCut` is not a fault injector of this kind: it models a disk.)
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use std::{
    io,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};
use strata::storage::{FaultInjector, FileOp};

pub const EIO: i32 = 5;
pub const ENOSPC: i32 = 28;

/// What a matching operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with this errno without doing anything.
    Errno(i32),
    /// (Writes only) writes the first `n` bytes, then fails with EIO.
    Torn(usize),
}

/// Which operations a rule or a counter matches: an operation (`None`: any) on files whose path
/// ends with `suffix`: the end of a file name (`".log"`), or more of the path
/// (`"/t/0/00000000000000000000.log"`: that segment of partition 0 of topic `t`); `""`: any file.
#[derive(Debug, Clone, Copy)]
struct Matcher {
    op: Option<FileOp>,
    suffix: &'static str,
}

impl Matcher {
    fn matches(&self, op: FileOp, path: &str) -> bool {
        self.op.is_none_or(|o| o == op) && path.ends_with(self.suffix)
    }
}

/// Lets `skip` matching operations pass, then fails the next `times` (`usize::MAX`: until
/// healed).
#[derive(Debug, Clone)]
struct Rule {
    matcher: Matcher,
    fault: Fault,
    skip: usize,
    times: usize,
}

/// How many operations a [`Script::count`] matched since it was made.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicUsize>);

impl Counter {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// The injector: a list of rules, the first that matches applies; and counters, every one that
/// matches counts.
#[derive(Default)]
pub struct Script {
    rules: Mutex<Vec<Rule>>,
    counters: Mutex<Vec<(Matcher, Counter)>>,
    /// Every operation failed so far: (operation, file name).
    pub hits: Mutex<Vec<(FileOp, String)>>,
}

impl Script {
    pub fn new() -> Arc<Script> {
        Arc::new(Script::default())
    }

    /// Fails the next `times` operations `op` on files whose path ends with `suffix`.
    pub fn fail(&self, op: FileOp, suffix: &'static str, fault: Fault, times: usize) {
        self.fail_after(op, suffix, fault, 0, times);
    }

    /// Fails every operation `op` on files whose path ends with `suffix` until [`Script::heal`].
    pub fn always(&self, op: FileOp, suffix: &'static str, fault: Fault) {
        self.fail(op, suffix, fault, usize::MAX);
    }

    /// Lets the next `skip` operations `op` on files whose path ends with `suffix` pass, then
    /// fails `times` of them.
    pub fn fail_after(
        &self,
        op: FileOp,
        suffix: &'static str,
        fault: Fault,
        skip: usize,
        times: usize,
    ) {
        let matcher = Matcher {
            op: Some(op),
            suffix,
        };
        self.add(matcher, fault, skip, times);
    }

    /// Fails the `n`-th file operation from now (0: the next one), whatever it is and on
    /// whatever file, with EIO, once.
    pub fn fail_nth(&self, n: usize) {
        let matcher = Matcher {
            op: None,
            suffix: "",
        };
        self.add(matcher, Fault::Errno(EIO), n, 1);
    }

    fn add(&self, matcher: Matcher, fault: Fault, skip: usize, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            matcher,
            fault,
            skip,
            times,
        });
    }

    /// Removes every rule: the disk works again. Counters go on counting.
    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// How many operations were failed.
    pub fn hit_count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    /// The last operation failed: (operation, file name).
    pub fn last_hit(&self) -> Option<(FileOp, String)> {
        self.hits.lock().unwrap().last().cloned()
    }

    /// Counts, from now on, the operations `op` on files whose path ends with `suffix` (also the
    /// ones that are failed).
    pub fn count(&self, op: FileOp, suffix: &'static str) -> Counter {
        let counter = Counter::default();
        self.counters.lock().unwrap().push((
            Matcher {
                op: Some(op),
                suffix,
            },
            counter.clone(),
        ));
        counter
    }

    pub fn as_injector(self: &Arc<Self>) -> Arc<dyn FaultInjector> {
        self.clone()
    }
}

impl FaultInjector for Script {
    fn before(&self, op: FileOp, path: &Path, _len: usize) -> io::Result<Option<usize>> {
        let path = path.to_string_lossy();
        for (matcher, counter) in self.counters.lock().unwrap().iter() {
            if matcher.matches(op, &path) {
                counter.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let mut rules = self.rules.lock().unwrap();
        let Some(i) = rules
            .iter()
            .position(|r| r.times > 0 && r.matcher.matches(op, &path))
        else {
            return Ok(None);
        };
        if rules[i].skip > 0 {
            rules[i].skip -= 1;
            return Ok(None);
        }
        if rules[i].times != usize::MAX {
            rules[i].times -= 1;
        }
        let fault = rules[i].fault;
        drop(rules);
        let name = path.rsplit('/').next().unwrap_or_default().to_owned();
        self.hits.lock().unwrap().push((op, name));
        match fault {
            Fault::Errno(errno) => Err(io::Error::from_raw_os_error(errno)),
            Fault::Torn(n) => Ok(Some(n)),
        }
    }
}
