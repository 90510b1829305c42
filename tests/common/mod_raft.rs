//! The replication test support as one module, for a bench that includes it by path
//! (`#[path = "../tests/common/mod_raft.rs"] mod common;`).
#![allow(dead_code)]

pub mod power_cut;
pub mod raft;
pub mod rng;
pub mod storage;
