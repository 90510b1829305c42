//! Reading and damaging files on disk, for the storage and damage tests: the batches of a segment
//! file, a partition's files by extension, and bit flips, overwrites, garbage and cuts. Used as
//! `mod common { pub mod files; }` (storage tests) or through `mod common;` (server tests).
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a different part; a failed unwrap is a failed test

use std::{
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
};
use strata::record::{BatchHeader, Frame, decode_frame};

/// The whole batches at the start of a segment file, with their byte positions, read directly
/// from the file (up to the first thing that is not a whole, valid batch).
pub fn batches_in(path: &Path) -> Vec<(u64, BatchHeader)> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0;
    while let Frame::Batch(b) = decode_frame(&bytes[pos..]) {
        out.push((pos as u64, *b.header()));
        pos += b.bytes().len();
    }
    out
}

/// The files in `dir` with this extension, sorted (segments sort by base offset).
pub fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(ext.as_ref()))
        .collect();
    out.sort();
    out
}

/// XORs `mask` into the byte at `pos` of `path`.
pub fn flip(path: &Path, pos: u64, mask: u8) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, pos).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, pos).unwrap();
}

/// Overwrites bytes of `path` at `pos`.
pub fn overwrite(path: &Path, pos: u64, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(bytes, pos).unwrap();
}

/// Overwrites `len` bytes at `pos` with pseudo-random garbage from `seed`.
pub fn garbage(path: &Path, pos: u64, len: usize, seed: u64) {
    let mut x = seed | 1;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    overwrite(path, pos, &bytes);
}

/// Cuts the file to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}
