//! A scripted fault injector for the storage fault tests: rules that fail matching file
//! operations (by operation and file name) with an OS error or a torn write, a given number of
//! times. Used as `mod common { pub mod faults; pub mod storage; }`.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use std::{
    io,
    path::Path,
    sync::{Arc, Mutex},
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

/// Lets `skip` operations `op` on files whose name ends with `suffix` pass, then fails the
/// next `times`.
#[derive(Debug, Clone)]
pub struct Rule {
    pub op: FileOp,
    pub suffix: &'static str,
    pub fault: Fault,
    pub skip: usize,
    pub times: usize,
}

/// The injector: a list of rules, the first that matches applies.
#[derive(Default)]
pub struct Script {
    rules: Mutex<Vec<Rule>>,
    /// Every operation failed so far: (operation, file name).
    pub hits: Mutex<Vec<(FileOp, String)>>,
}

impl Script {
    pub fn new() -> Arc<Script> {
        Arc::new(Script::default())
    }

    /// Fails the next `times` operations `op` on files ending with `suffix`.
    pub fn fail(&self, op: FileOp, suffix: &'static str, fault: Fault, times: usize) {
        self.fail_after(op, suffix, fault, 0, times);
    }

    /// Lets the next `skip` operations `op` on files ending with `suffix` pass, then fails
    /// `times` of them.
    pub fn fail_after(
        &self,
        op: FileOp,
        suffix: &'static str,
        fault: Fault,
        skip: usize,
        times: usize,
    ) {
        self.rules.lock().unwrap().push(Rule {
            op,
            suffix,
            fault,
            skip,
            times,
        });
    }

    /// Removes every rule: the disk works again.
    pub fn heal(&self) {
        self.rules.lock().unwrap().clear();
    }

    /// How many operations were failed.
    pub fn hit_count(&self) -> usize {
        self.hits.lock().unwrap().len()
    }

    pub fn as_injector(self: &Arc<Self>) -> Arc<dyn FaultInjector> {
        self.clone()
    }
}

impl FaultInjector for Script {
    fn before(&self, op: FileOp, path: &Path, _len: usize) -> io::Result<Option<usize>> {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut rules = self.rules.lock().unwrap();
        let Some(i) = rules
            .iter()
            .position(|r| r.op == op && r.times > 0 && name.ends_with(r.suffix))
        else {
            return Ok(None);
        };
        if rules[i].skip > 0 {
            rules[i].skip -= 1;
            return Ok(None);
        }
        rules[i].times -= 1;
        let fault = rules[i].fault;
        drop(rules);
        self.hits.lock().unwrap().push((op, name));
        match fault {
            Fault::Errno(errno) => Err(io::Error::from_raw_os_error(errno)),
            Fault::Torn(n) => Ok(Some(n)),
        }
    }
}
