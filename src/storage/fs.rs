//! The one durable-file layer: every write, fsync, rename, create and removal the broker makes
//! (segments, indexes, checkpoints, topic metadata, group journals, the trash) goes through
//! [`Io`], so that the fault seam sees it and errors carry their path; atomic small-file writes
//! and durable directory creation live here once.

use super::{FaultInjector, FileOp, IoEvent, Result, StorageError};
use std::{
    fs::{File, OpenOptions},
    io,
    os::unix::fs::FileExt,
    path::{Path, PathBuf},
    sync::Arc,
};

/// The fault seam shared by every file of one broker (or one log opened on its own).
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

    fn done(&self, event: IoEvent<'_>) {
        if let Some(f) = &self.faults {
            f.after(&event);
        }
    }

    fn observed(&self) -> bool {
        self.faults.is_some()
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
            self.done(IoEvent::Wrote {
                path,
                pos,
                bytes: &buf[..n],
            });
            return Err(err(io::Error::other("injected torn write")));
        }
        file.write_all_at(buf, pos).map_err(err)?;
        self.done(IoEvent::Wrote {
            path,
            pos,
            bytes: buf,
        });
        Ok(())
    }

    /// `fdatasync`: the file's data (and the metadata needed to read it back) is durable.
    pub(crate) fn sync_data(&self, file: &File, path: &Path) -> Result<()> {
        let err = |e| StorageError::io("fsync", path, e);
        self.check(FileOp::Sync, path, 0).map_err(err)?;
        let started = std::time::Instant::now();
        file.sync_data().map_err(err)?;
        super::sync_times::record(started.elapsed());
        self.done(IoEvent::SyncedData { path });
        Ok(())
    }

    /// Makes a directory's entries (created, renamed, deleted files) durable.
    pub(crate) fn sync_dir(&self, dir: &Path) -> Result<()> {
        let err = |e| StorageError::io("fsync directory", dir, e);
        self.check(FileOp::Sync, dir, 0).map_err(err)?;
        let started = std::time::Instant::now();
        File::open(dir).and_then(|d| d.sync_all()).map_err(err)?;
        super::sync_times::record(started.elapsed());
        self.done(IoEvent::SyncedDir { path: dir });
        Ok(())
    }

    /// Opens `path` for reading and writing, creating it (empty) if `create` and it is missing.
    pub(crate) fn open_rw(&self, path: &Path, create: bool) -> Result<File> {
        let err = |e| StorageError::io("open", path, e);
        if create {
            self.check(FileOp::Create, path, 0).map_err(err)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(path)
            .map_err(err)?;
        if create {
            self.done(IoEvent::Opened { path });
        }
        Ok(file)
    }

    /// Allocates disk blocks for `[offset, offset + len)` of a file, so that later writes there
    /// skip the filesystem's block allocation (and a full disk shows up here, before any write).
    /// Filesystems without `fallocate` are left sparse.
    pub(crate) fn allocate(&self, file: &File, path: &Path, offset: u64, len: u64) -> Result<()> {
        let err = |e| StorageError::io("allocate", path, e);
        self.check(FileOp::Create, path, 0).map_err(err)?;
        match rustix::fs::fallocate(file, rustix::fs::FallocateFlags::empty(), offset, len) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::NOSYS => {}
            Err(e) => return Err(err(e.into())),
        }
        if self.observed() {
            let len = file.metadata().map_err(err)?.len();
            self.done(IoEvent::Resized { path, len });
        }
        Ok(())
    }

    /// Sets a file's length (preallocating sparse space, or trimming a sealed segment).
    pub(crate) fn set_len(&self, file: &File, path: &Path, len: u64) -> Result<()> {
        let err = |e| StorageError::io("resize", path, e);
        self.check(FileOp::Create, path, 0).map_err(err)?;
        file.set_len(len).map_err(err)?;
        self.done(IoEvent::Resized { path, len });
        Ok(())
    }

    /// Renames `from` to `to`, replacing what `to` named. Durable once both directories are
    /// synced.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let err = |e| StorageError::io("rename", from, e);
        self.check(FileOp::Rename, from, 0).map_err(err)?;
        std::fs::rename(from, to).map_err(err)?;
        self.done(IoEvent::Renamed { from, to });
        Ok(())
    }

    /// Removes a file, treating "already gone" as success. Durable once its directory is synced.
    pub(crate) fn remove_file(&self, path: &Path) -> Result<()> {
        let err = |e| StorageError::io("remove", path, e);
        self.check(FileOp::Remove, path, 0).map_err(err)?;
        match std::fs::remove_file(path) {
            Ok(()) => {
                self.done(IoEvent::Removed { path });
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Removes a directory and everything in it, treating "already gone" as success.
    pub(crate) fn remove_dir_all(&self, dir: &Path) -> Result<()> {
        let err = |e| StorageError::io("remove", dir, e);
        self.check(FileOp::Remove, dir, 0).map_err(err)?;
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {
                self.done(IoEvent::RemovedDir { path: dir });
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    /// Creates `dir` and any missing parents, each made durable in its parent (a directory
    /// entry survives a power cut only once its parent is synced).
    pub(crate) fn create_dir_durable(&self, dir: &Path) -> Result<()> {
        // A relative path's last ancestor is "": the current directory, which exists.
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .collect();
        for d in missing.into_iter().rev() {
            let err = |e| StorageError::io("create directory", d, e);
            self.check(FileOp::Create, d, 0).map_err(err)?;
            match std::fs::create_dir(d) {
                Ok(()) => self.done(IoEvent::CreatedDir { path: d }),
                // Another thread made it meanwhile: it still has to be made durable.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(err(e)),
            }
            self.sync_dir(parent(d))?;
        }
        Ok(())
    }

    /// Writes `bytes` to `tmp` (created or emptied first) and makes them durable: the first
    /// half of an atomic replace, before the rename.
    pub(crate) fn stage(&self, tmp: &Path, bytes: &[u8]) -> Result<()> {
        let file = self.open_rw(tmp, true)?;
        self.set_len(&file, tmp, 0)?;
        self.write_all_at(&file, tmp, bytes, 0)?;
        self.sync_data(&file, tmp)
    }

    /// Replaces `path` with `bytes` atomically: a crash leaves the old or the new content, never
    /// a mix (temp file, fsync, rename, fsync directory). A failure leaves the old file and
    /// removes the temp file if it can.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = tmp_path(path);
        let staged = self.stage(&tmp, bytes);
        if let Err(e) = staged.and_then(|()| self.rename(&tmp, path)) {
            // The old file is intact; a partial temporary one (a full disk) is only in the way.
            let _ = self.remove_file(&tmp);
            return Err(e);
        }
        self.sync_dir(parent(path))
    }
}

pub(crate) fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

pub(crate) fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::default();
        let path = dir.path().join("state.json");
        io.write_atomic(&path, b"one").unwrap();
        // The rename fails: a directory that is not empty holds the name.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::create_dir(blocked.join("x")).unwrap();
        assert!(io.write_atomic(&blocked, b"two").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"one");
        let mut names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["state.json", "sub"]);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::default();
        let path = dir.path().join("state.json");
        io.write_atomic(&path, b"one, longer").unwrap();
        io.write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_durable_directory_creates_every_missing_parent() {
        let dir = tempfile::tempdir().unwrap();
        let io = Io::default();
        let deep = dir.path().join("a/b/c");
        io.create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        io.create_dir_durable(&deep).unwrap();
    }

    #[test]
    fn a_durable_directory_may_be_relative_to_the_current_one() {
        let dir = tempfile::tempdir_in(".").unwrap();
        let name = dir.path().file_name().unwrap().to_owned();
        let io = Io::default();
        let relative = Path::new(&name).join("data");
        io.create_dir_durable(&relative).unwrap();
        assert!(relative.is_dir());
    }
}
