//! A seam for injecting I/O faults in tests: every write, fsync, rename and file creation of the
//! storage layer asks the configured [`FaultInjector`] first.

use std::{io, path::Path};

/// A file operation the storage layer is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileOp {
    /// A positional write of `len` bytes.
    Write,
    /// An fsync / fdatasync of a file or directory.
    Sync,
    /// A rename (atomic replace of a state file, or a segment rewritten by truncation).
    Rename,
    /// Creating or preallocating a file.
    Create,
}

/// Decides, before each file operation, whether it fails.
pub trait FaultInjector: Send + Sync {
    /// `Ok(None)`: do the operation. `Ok(Some(n))` (writes only): write only the first `n` bytes,
    /// then fail with EIO, as a torn write does. `Err(e)`: fail with `e` without doing anything.
    fn before(&self, op: FileOp, path: &Path, len: usize) -> io::Result<Option<usize>>;
}
