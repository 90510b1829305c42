//! File helpers: every write, fsync, rename and create goes through here, so that the fault seam
//! sees it and errors carry their path.

use super::{FaultInjector, FileOp, Result, StorageError};
use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The fault seam shared by every file of one log.
#[derive(Clone, Default)]
pub(crate) struct Io {
    faults: Option<Arc<dyn FaultInjector>>,
}

impl Io {
    pub(crate) fn new(faults: Option<Arc<dyn FaultInjector>>) -> Self {
        Io { faults }
    }

    fn check(&self, op: FileOp, path: &Path, len: usize) -> io::Result<Option<usize>> {
        match &self.faults {
            Some(f) => f.before(op, path, len),
            None => Ok(None),
        }
    }

    /// Writes all of `buf` at `pos`.
    pub(crate) fn write_all_at(
        &self,
        file: &File,
        path: &Path,
        buf: &[u8],
        pos: u64,
    ) -> Result<()> {
        let err = |e| StorageError::io("write", path, e);
        if let Some(n) = self.check(FileOp::Write, path, buf.len()).map_err(err)? {
            let n = n.min(buf.len());
            file.write_all_at(&buf[..n], pos).map_err(err)?;
            return Err(err(io::Error::other("injected torn write")));
        }
        file.write_all_at(buf, pos).map_err(err)
    }

    /// `fdatasync`: the file's data (and the metadata needed to read it back) is durable.
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        let err = |e| StorageError::io("fsync", path, e);
        self.check(FileOp::Sync, path, 0).map_err(err)?;
        file.sync_data().map_err(err)
    }

    /// Makes a directory's entries (created, renamed, deleted files) durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        let err = |e| StorageError::io("fsync directory", dir, e);
        self.check(FileOp::Sync, dir, 0).map_err(err)?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)
    }

    /// Opens `path` for reading and writing, creating it if needed.
    pub(crate) fn open_rw(&self, path: &Path, create: bool) -> Result<File> {
        let err = |e| StorageError::io("open", path, e);
        if create {
            self.check(FileOp::Create, path, 0).map_err(err)?;
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(err)
    }

    /// Allocates disk blocks for `[offset, offset + len)` of a file, so that later writes there
    /// skip the filesystem's block allocation (and a full disk shows up here, before any write).
    /// Filesystems without `fallocate` are left sparse.
    pub(crate) fn allocate(&self, file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
        let err = |e| StorageError::io("allocate", path, e);
        self.check(FileOp::Create, path, 0).map_err(err)?;
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => Ok(()),
            Err(e) => Err(err(e.into())),
        }
    }

    /// Sets a file's length (preallocating sparse space, or trimming a sealed segment).
    pub(crate) fn set_len(&self, file: &File, path: &Path, len: u64) -> Result<()> {
        let err = |e| StorageError::io("resize", path, e);
        self.check(FileOp::Create, path, 0).map_err(err)?;
        file.set_len(len).map_err(err)
    }

    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let err = |e| StorageError::io("rename", from, e);
        self.check(FileOp::Rename, from, 0).map_err(err)?;
        std::fs::rename(from, to).map_err(err)
    }

    /// Replaces `path` with `bytes` atomically: a crash leaves the old or the new content, never
    /// a mix (temp file, fsync, rename, fsync directory).
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = tmp_path(path);
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(|e| StorageError::io("create", &tmp, e))?;
        self.write_all_at(&file, &tmp, bytes, 0)?;
        self.sync_data(&file, &tmp)?;
        drop(file);
        self.rename(&tmp, path)?;
        self.sync_dir(parent(path))
    }
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

pub(crate) fn parent(path: &Path) -> &Path {
    path.parent().unwrap_or(Path::new("."))
}

/// Removes a file, treating "already gone" as success.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(StorageError::io("remove", path, e)),
        _ => Ok(()),
    }
}

/// Whether any byte in `[from, len)` of `file` was ever written (`SEEK_DATA`; blocks only
/// allocated ahead of writes read as holes). When unsure, says yes.
pub(crate) fn has_data_past(file: &File, path: &Path, from: u64, len: u64) -> bool {
    match rustix::fs::seek(file, rustix::fs::SeekFrom::Data(from)) {
        Ok(at) => at < len,
        Err(rustix::io::Errno::NXIO) => false,
        Err(e) => {
            tracing::debug!(path = %path.display(), error = %e, "SEEK_DATA failed");
            true
        }
    }
}
