//! glibc's allocator settings for `strata serve` and the clients that move whole batches
//! (`bench`, `consume`, `produce`).
//!
//! Request and response buffers are up to a few MiB and short-lived. By default glibc hands such
//! blocks back to the kernel when they are freed (past its trim threshold, or as separate
//! mappings), so the next request lands in freshly faulted, zeroed pages; on a VM that returns
//! freed memory to its host, pages the host must fault in too. That halved replay throughput
//! (docs/PERFORMANCE.md). These settings keep blocks under 4 MiB in the heap for reuse (up to
//! 64 MiB of free heap top is kept) while larger ones (a 64 MiB produce request) still go back
//! to the kernel as soon as they are freed, so the memory bounds in docs/RELIABILITY.md hold.
//!
//! glibc reads them only at process start, from `GLIBC_TUNABLES`; setting it from inside the
//! process is too late, so `strata` re-executes itself once with the variable set. The process
//! keeps its PID, arguments and file descriptors.

use std::{ffi::OsString, os::unix::process::CommandExt, process::Command};

const TUNABLES: &str = "glibc.malloc.mmap_threshold=4194304:glibc.malloc.trim_threshold=67108864";
const VAR: &str = "GLIBC_TUNABLES";
/// Set in the re-executed process, so that it never re-executes again: glibc removes
/// `GLIBC_TUNABLES` from the environment of setuid or file-capability processes, which would
/// otherwise loop.
const MARKER: &str = "STRATA_MALLOC_TUNED";

/// Re-executes the process with [`TUNABLES`] unless they are in effect (or the user set glibc's
/// malloc tunables themselves). Returns only if they are, or if the re-exec failed (then the
/// process runs with glibc's defaults: slower, not wrong).
pub fn tune() {
    let current = std::env::var_os(VAR).unwrap_or_default();
    if std::env::var_os(MARKER).is_some() || current.to_string_lossy().contains("glibc.malloc.") {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut value = OsString::from(TUNABLES);
    if !current.is_empty() {
        value.push(":");
        value.push(&current);
    }
    // `exec` only returns on failure.
    let mut args = std::env::args_os();
    let mut command = Command::new(exe);
    if let Some(arg0) = args.next() {
        command.arg0(arg0);
    }
    let _ = command.args(args).env(VAR, value).env(MARKER, "1").exec();
}
