//! File helpers for the broker's own small state files.

use super::BrokerError;
use std::{
    fs::{self, File},
    io::Write,
    path::Path,
};

/// Makes a directory's entries (files created, renamed or removed in it) durable.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), BrokerError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BrokerError::io("fsync directory", dir, e))
}

/// Creates `dir` and any missing parents, then makes the new entry durable in its parent.
pub(crate) fn create_dir_durable(dir: &Path) -> Result<(), BrokerError> {
    fs::create_dir_all(dir).map_err(|e| BrokerError::io("create directory", dir, e))?;
    if let Some(parent) = dir.parent() {
        fsync_dir(parent)?;
    }
    Ok(())
}

/// Replaces `path` with `contents` atomically: a reader (or a restart after a crash) sees the old
/// file or the new one, never a mix. Writes `path.tmp`, fsyncs it, renames it over `path`, then
/// fsyncs the directory.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<(), BrokerError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = Path::new(&tmp);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(tmp)?;
        file.write_all(contents)?;
        file.sync_all()
    };
    let replaced = write()
        .map_err(|e| BrokerError::io("write", tmp, e))
        .and_then(|()| {
            fs::rename(tmp, path).map_err(|e| BrokerError::io("rename into place", path, e))
        });
    if let Err(e) = replaced {
        // The old file is intact; a partial temporary one (a full disk) is only in the way.
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    match path.parent() {
        Some(dir) => fsync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_atomic_write_leaves_the_old_file_and_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        // The rename fails: a directory that is not empty holds the name.
        let blocked = dir.path().join("sub");
        fs::create_dir(&blocked).unwrap();
        fs::create_dir(blocked.join("x")).unwrap();
        assert!(write_atomic(&blocked, b"two").is_err());
        assert_eq!(fs::read(&path).unwrap(), b"one");
        let mut names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["state.json", "sub"]);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
