//! A small append-only journal of opaque entries, each CRC-framed and made durable before
//! [`Journal::append`] returns: the broker's committed group offsets use it (and the replication
//! log's vote and term state will). Everything goes through [`Io`].
//!
//! ```text
//! magic  8 bytes, chosen by the owner ("STRAGRP1" for group offsets)
//! entry* length: u32 LE (> 0) | crc32: u32 LE (crc32fast of the payload) | payload: `length` bytes
//! ```
//!
//! Replay tells a torn tail from damage. A crash in the middle of an append can leave only
//! zeroes (blocks allocated, never written), less than a header, or a header whose payload runs
//! past the end of the file: that tail is cut, as the append was never acknowledged. Anything
//! else (a whole entry that fails its CRC, whatever follows it, a wrong magic) is damage: an
//! acknowledged entry, or a snapshot, which is written atomically and so never torn. A journal
//! whose append or fsync failed is poisoned (its tail is unknown) until it is opened again.

use super::{Io, Result, StorageError, fs};
use std::{
    fs::File,
    path::{Path, PathBuf},
};

/// Bytes of an entry's header: length and CRC.
pub(crate) const ENTRY_HEADER_BYTES: usize = 8;
/// The largest entry accepted; a larger length field on replay is damage or a torn header.
pub(crate) const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;

/// How the bytes after a journal's last whole entry end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing follows the last entry.
    Clean,
    /// What a crashed append leaves: cut it.
    Torn,
    /// Bytes that no crash leaves: the journal is damaged at `at` (bytes after the magic).
    Damaged {
        /// Where the damage starts, counted from the end of the magic.
        at: usize,
        /// What is wrong there.
        reason: &'static str,
    },
}

/// The entries found in a journal's bytes (after the magic) and how they end.
#[derive(Debug)]
pub(crate) struct Replay<'a> {
    /// Every whole, CRC-checked payload, in order.
    pub entries: Vec<&'a [u8]>,
    /// Bytes of the whole entries: where the next append goes.
    pub valid_len: usize,
    /// What follows them.
    pub tail: Tail,
}

/// Decodes the entries of `buf`, the bytes after the magic. Never panics.
pub(crate) fn decode(buf: &[u8]) -> Replay<'_> {
    let mut entries = Vec::new();
    let mut at = 0;
    let tail = loop {
        let rest = &buf[at..];
        if rest.is_empty() {
            break Tail::Clean;
        }
        if rest.len() < ENTRY_HEADER_BYTES {
            break Tail::Torn;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        if rest.len() - ENTRY_HEADER_BYTES < len {
            // The payload runs past the end of the file: an append cut short.
            break Tail::Torn;
        }
        if len == 0 {
            // No entry is empty: zeroes from here on are blocks allocated but never written.
            break if rest.iter().all(|&b| b == 0) {
                Tail::Torn
            } else {
                Tail::Damaged {
                    at,
                    reason: "an entry of length 0",
                }
            };
        }
        if len > MAX_ENTRY_BYTES {
            break Tail::Damaged {
                at,
                reason: "an entry longer than the limit",
            };
        }
        let payload = &rest[ENTRY_HEADER_BYTES..ENTRY_HEADER_BYTES + len];
        if crc32fast::hash(payload) != crc {
            break Tail::Damaged {
                at,
                reason: "a whole entry that fails its CRC (not a torn append)",
            };
        }
        entries.push(payload);
        at += ENTRY_HEADER_BYTES + len;
    };
    Replay {
        entries,
        valid_len: at,
        tail,
    }
}

/// Appends one framed entry to `out`.
pub(crate) fn encode_entry(payload: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// An open journal, positioned after its last whole entry.
pub(crate) struct Journal {
    io: Io,
    path: PathBuf,
    magic: [u8; 8],
    file: File,
    /// Bytes of the magic and whole entries: where the next entry goes.
    len: u64,
    /// Entries appended since the file was last rewritten as a snapshot (or opened).
    entries: usize,
    /// Why appends are refused, once an append or a compaction left the file unknown.
    poisoned: Option<String>,
}

impl Journal {
    /// Creates (or replaces, atomically) the journal at `path` holding `snapshot` as its one
    /// entry, or no entry.
    pub(crate) fn create(
        io: &Io,
        path: PathBuf,
        magic: [u8; 8],
        snapshot: Option<&[u8]>,
    ) -> Result<Journal> {
        let bytes = snapshot_bytes(magic, snapshot)?;
        io.write_atomic(&path, &bytes)?;
        let file = io.open_rw(&path, false)?;
        Ok(Journal {
            io: io.clone(),
            path,
            magic,
            file,
            len: bytes.len() as u64,
            entries: 0,
            poisoned: None,
        })
    }

    /// Opens the journal at `path`, cutting a torn tail, and returns its entries' payloads.
    /// A wrong magic or damage is `BadStateFile`, and the file is left as it is.
    pub(crate) fn open(io: &Io, path: PathBuf, magic: [u8; 8]) -> Result<(Journal, Vec<Vec<u8>>)> {
        let bytes = std::fs::read(&path).map_err(|e| StorageError::io("read", &path, e))?;
        let damaged = |reason: String| StorageError::BadStateFile {
            path: path.clone(),
            reason,
        };
        if bytes.len() < magic.len() || bytes[..magic.len()] != magic {
            return Err(damaged("not this kind of file (bad magic)".into()));
        }
        let replay = decode(&bytes[magic.len()..]);
        let valid = (magic.len() + replay.valid_len) as u64;
        match replay.tail {
            Tail::Clean => {}
            Tail::Damaged { at, reason } => {
                return Err(damaged(format!(
                    "the entry at byte {} is damaged: {reason}",
                    magic.len() + at
                )));
            }
            Tail::Torn => tracing::warn!(
                path = %path.display(),
                cut_bytes = bytes.len() as u64 - valid,
                "cutting a torn tail off a journal (a crash interrupted an append that was never acknowledged)"
            ),
        }
        let file = io.open_rw(&path, false)?;
        if replay.tail == Tail::Torn {
            io.set_len(&file, &path, valid)?;
            io.sync_data(&file, &path)?;
        }
        let entries: Vec<Vec<u8>> = replay.entries.iter().map(|e| e.to_vec()).collect();
        let journal = Journal {
            io: io.clone(),
            path,
            magic,
            file,
            len: valid,
            entries: entries.len(),
            poisoned: None,
        };
        Ok((journal, entries))
    }

    /// The journal's file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Entries appended since the last snapshot (or, after an open, entries replayed).
    pub(crate) fn entries_since_snapshot(&self) -> usize {
        self.entries
    }

    fn check_poisoned(&self) -> Result<()> {
        match &self.poisoned {
            Some(cause) => Err(StorageError::Poisoned {
                path: self.path.clone(),
                cause: cause.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, cause: &StorageError) {
        tracing::error!(path = %self.path.display(), %cause, "journal poisoned: refusing appends until it is reopened");
        self.poisoned.get_or_insert_with(|| cause.poison_cause());
    }

    /// Appends one entry (not empty) and makes it durable before returning. A failed write is
    /// cut off again, so the next append goes where this one would have; if even that fails,
    /// or the fsync fails, the tail is unknown and the journal is poisoned.
    pub(crate) fn append(&mut self, payload: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        if payload.is_empty() || payload.len() > MAX_ENTRY_BYTES {
            return Err(StorageError::BatchTooLarge {
                size: payload.len() as u64,
                max: MAX_ENTRY_BYTES as u64,
            });
        }
        let mut buf = Vec::with_capacity(ENTRY_HEADER_BYTES + payload.len());
        encode_entry(payload, &mut buf);
        if let Err(e) = self.io.write_all_at(&self.file, &self.path, &buf, self.len) {
            let cut = self
                .io
                .set_len(&self.file, &self.path, self.len)
                .and_then(|()| self.io.sync_data(&self.file, &self.path));
            if let Err(cut) = cut {
                self.poison(&cut);
            }
            return Err(e);
        }
        if let Err(e) = self.io.sync_data(&self.file, &self.path) {
            // Whether the entry reached the disk is unknown (and a later fsync may not tell).
            self.poison(&e);
            return Err(e);
        }
        self.len += buf.len() as u64;
        self.entries += 1;
        Ok(())
    }

    /// Rewrites the journal as the one entry `snapshot` (the state all entries add up to),
    /// atomically. A failure before the rename leaves the old file, still valid and still
    /// appended to; one after it poisons the journal, since appending to the old, unlinked file
    /// would lose entries.
    pub(crate) fn compact(&mut self, snapshot: &[u8]) -> Result<()> {
        self.check_poisoned()?;
        let bytes = snapshot_bytes(self.magic, Some(snapshot))?;
        let tmp = fs::tmp_path(&self.path);
        let staged = self.io.stage(&tmp, &bytes);
        if let Err(e) = staged.and_then(|()| self.io.rename(&tmp, &self.path)) {
            let _ = self.io.remove_file(&tmp);
            return Err(e);
        }
        let reopened = self
            .io
            .sync_dir(fs::parent(&self.path))
            .and_then(|()| self.io.open_rw(&self.path, false));
        match reopened {
            Ok(file) => {
                self.file = file;
                self.len = bytes.len() as u64;
                self.entries = 0;
                Ok(())
            }
            Err(e) => {
                self.poison(&e);
                Err(e)
            }
        }
    }
}

fn snapshot_bytes(magic: [u8; 8], snapshot: Option<&[u8]>) -> Result<Vec<u8>> {
    let mut bytes = magic.to_vec();
    if let Some(payload) = snapshot {
        if payload.is_empty() || payload.len() > MAX_ENTRY_BYTES {
            return Err(StorageError::BatchTooLarge {
                size: payload.len() as u64,
                max: MAX_ENTRY_BYTES as u64,
            });
        }
        encode_entry(payload, &mut bytes);
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{FaultInjector, FileOp};
    use std::{
        io,
        sync::{Arc, Mutex},
    };

    const MAGIC: [u8; 8] = *b"TESTJRN1";

    /// Fails the next `times` operations `op` on files whose name ends with `suffix`.
    #[derive(Default)]
    struct Fail(Mutex<Vec<(FileOp, &'static str, usize)>>);

    impl Fail {
        fn next(&self, op: FileOp, suffix: &'static str, times: usize) {
            self.0.lock().unwrap().push((op, suffix, times));
        }
    }

    impl FaultInjector for Fail {
        fn before(&self, op: FileOp, path: &Path, _len: usize) -> io::Result<Option<usize>> {
            let name = path.to_string_lossy();
            for rule in self.0.lock().unwrap().iter_mut() {
                if rule.0 == op && rule.2 > 0 && name.ends_with(rule.1) {
                    rule.2 -= 1;
                    return Err(io::Error::from_raw_os_error(5));
                }
            }
            Ok(None)
        }
    }

    fn setup() -> (tempfile::TempDir, Arc<Fail>, Io, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let fail = Arc::new(Fail::default());
        let io = Io::new(Some(fail.clone()));
        let path = dir.path().join("j.journal");
        (dir, fail, io, path)
    }

    fn reopen(io: &Io, path: &Path) -> Vec<Vec<u8>> {
        Journal::open(io, path.to_path_buf(), MAGIC).unwrap().1
    }

    fn is_torn_tail(rest: &[u8]) -> bool {
        !matches!(decode(rest).tail, Tail::Damaged { .. })
    }

    #[test]
    fn only_what_a_crashed_append_leaves_counts_as_a_torn_tail() {
        assert!(is_torn_tail(&[]));
        assert!(is_torn_tail(&[0; 4096]));
        assert!(is_torn_tail(&[40, 0, 0, 0, 1, 2, 3]));
        assert!(is_torn_tail(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7]));
        // A whole entry (length 3, three bytes of payload) that failed its CRC: damage.
        assert!(!is_torn_tail(&[3, 0, 0, 0, 9, 9, 9, 9, 1, 2, 3]));
        assert!(!is_torn_tail(&[0, 0, 0, 0, 9, 9, 9, 9, 0, 0]));
    }

    #[test]
    fn entries_survive_reopen_and_a_torn_tail_is_cut() {
        let (_dir, _fail, io, path) = setup();
        let mut j = Journal::create(&io, path.clone(), MAGIC, None).unwrap();
        j.append(b"one").unwrap();
        j.append(b"two").unwrap();
        drop(j);
        let good = std::fs::read(&path).unwrap();
        for torn in [&[7u8, 0, 0][..], &[40, 0, 0, 0, 1, 2, 3, 4, 5], &[0; 64]] {
            let mut bytes = good.clone();
            bytes.extend_from_slice(torn);
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(reopen(&io, &path), [b"one".to_vec(), b"two".to_vec()]);
            assert_eq!(std::fs::read(&path).unwrap(), good, "{torn:?} was not cut");
        }
    }

    #[test]
    fn a_whole_entry_that_fails_its_crc_is_damage_and_the_file_is_kept() {
        let (_dir, _fail, io, path) = setup();
        let mut j = Journal::create(&io, path.clone(), MAGIC, Some(b"snap")).unwrap();
        j.append(b"next").unwrap();
        drop(j);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Journal::open(&io, path.clone(), MAGIC),
            Err(StorageError::BadStateFile { .. })
        ));
        bytes[0] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Journal::open(&io, path.clone(), MAGIC),
            Err(StorageError::BadStateFile { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_failed_write_is_cut_and_the_next_append_takes_its_place() {
        let (_dir, fail, io, path) = setup();
        let mut j = Journal::create(&io, path.clone(), MAGIC, None).unwrap();
        j.append(b"one").unwrap();
        fail.next(FileOp::Write, ".journal", 1);
        assert!(j.append(b"lost").is_err());
        j.append(b"two").unwrap();
        drop(j);
        assert_eq!(reopen(&io, &path), [b"one".to_vec(), b"two".to_vec()]);
    }

    #[test]
    fn a_failed_fsync_poisons_until_reopened() {
        let (_dir, fail, io, path) = setup();
        let mut j = Journal::create(&io, path.clone(), MAGIC, None).unwrap();
        fail.next(FileOp::Sync, ".journal", 1);
        assert!(j.append(b"unknown").is_err());
        assert!(matches!(
            j.append(b"refused"),
            Err(StorageError::Poisoned { .. })
        ));
        drop(j);
        let (mut j, entries) = Journal::open(&io, path.clone(), MAGIC).unwrap();
        // The entry whose fsync failed is there or not; nothing after it is.
        assert!(entries.len() <= 1);
        j.append(b"after").unwrap();
    }

    #[test]
    fn compaction_failing_before_its_rename_keeps_the_old_file_and_after_it_poisons() {
        let (dir, fail, io, path) = setup();
        let mut j = Journal::create(&io, path.clone(), MAGIC, None).unwrap();
        j.append(b"a").unwrap();
        fail.next(FileOp::Rename, ".tmp", 1);
        assert!(j.compact(b"snap-a").is_err());
        j.append(b"b").unwrap();
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left"
        );
        assert_eq!(reopen(&io, &path), [b"a".to_vec(), b"b".to_vec()]);

        // The directory fsync after the rename fails: the new file may or may not survive.
        let dir_name: &'static str = Box::leak(
            dir.path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
                .into_boxed_str(),
        );
        fail.next(FileOp::Sync, dir_name, 1);
        assert!(j.compact(b"snap-ab").is_err());
        assert!(matches!(j.append(b"c"), Err(StorageError::Poisoned { .. })));
        drop(j);
        assert_eq!(reopen(&io, &path), [b"snap-ab".to_vec()]);
    }

    #[test]
    fn compaction_leaves_one_snapshot_entry() {
        let (_dir, _fail, io, path) = setup();
        let mut j = Journal::create(&io, path.clone(), MAGIC, None).unwrap();
        for i in 0..10u8 {
            j.append(&[i + 1]).unwrap();
        }
        assert_eq!(j.entries_since_snapshot(), 10);
        j.compact(b"all ten").unwrap();
        assert_eq!(j.entries_since_snapshot(), 0);
        j.append(b"eleven").unwrap();
        drop(j);
        assert_eq!(
            reopen(&io, &path),
            [b"all ten".to_vec(), b"eleven".to_vec()]
        );
    }
}
