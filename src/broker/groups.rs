//! Committed consumer-group offsets, one append-only file per group.
//!
//! `DATA/groups/<group>.offsets` starts with the 8-byte magic `STRAGRP1`, followed by entries:
//!
//! ```text
//! length: u32 LE | crc32: u32 LE (of the payload) | payload: `length` bytes (bincode 2, standard)
//! ```
//!
//! A payload is a [`GroupEntry`]. A commit appends one entry holding every offset of the request
//! (so a commit is all or nothing) and fsyncs the file before it is acknowledged. On open, entries
//! are replayed in order; a torn tail (a crash mid-append: zeroes, or an entry cut short) is cut
//! off, while a whole entry that fails its CRC is damage: the group goes offline (DATA_LOSS). Every
//! [`COMPACT_AFTER_ENTRIES`] entries the file is rewritten as one snapshot entry, atomically.

use super::{BrokerError, fs};
use crate::storage::Offset;
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{Read, Write},
    path::{Path, PathBuf},
    sync::{Arc, Mutex, RwLock},
};

const MAGIC: &[u8; 8] = b"STRAGRP1";
const FILE_SUFFIX: &str = ".offsets";
const ENTRY_HEADER_BYTES: usize = 8;
/// The largest entry accepted on replay; anything larger is a corrupt length field.
const MAX_ENTRY_BYTES: usize = 64 * 1024 * 1024;
/// Appended entries after which a group's file is rewritten as a snapshot.
pub(crate) const COMPACT_AFTER_ENTRIES: usize = 1000;

/// One entry of a group's offsets file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum GroupEntry {
    /// Offsets committed together.
    Commit(Vec<CommittedOffset>),
    /// The topic was deleted: forget the group's offsets in it.
    ForgetTopic(String),
}

/// A group's committed position in one partition: the next offset it will read.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CommittedOffset {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the group will read.
    pub offset: Offset,
}

type OffsetMap = BTreeMap<(String, u32), Offset>;

struct Group {
    path: PathBuf,
    file: File,
    /// Bytes of whole entries in the file (where the next entry goes).
    len: u64,
    offsets: OffsetMap,
    entries_since_snapshot: usize,
    poisoned: bool,
}

/// Every group's committed offsets, in memory and on disk.
pub(crate) struct GroupStore {
    dir: PathBuf,
    groups: RwLock<BTreeMap<String, Arc<Mutex<Group>>>>,
    /// Groups whose file could not be read at start, with why: neither served nor written (a
    /// commit would replace the file) until it is repaired or removed and the broker restarted.
    damaged: BTreeMap<String, String>,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode_entry(entry: &GroupEntry, out: &mut Vec<u8>) -> Result<(), BrokerError> {
    let payload = bincode::serde::encode_to_vec(entry, bincode_config()).map_err(|e| {
        BrokerError::BadStateFile {
            path: PathBuf::from("(group entry)"),
            reason: e.to_string(),
        }
    })?;
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(())
}

/// Decodes entries after the magic. Returns them and the byte length of the valid prefix.
fn decode_entries(buf: &[u8]) -> (Vec<GroupEntry>, usize) {
    let mut entries = Vec::new();
    let mut at = 0;
    while buf.len() - at >= ENTRY_HEADER_BYTES {
        let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
        let crc = u32::from_le_bytes([buf[at + 4], buf[at + 5], buf[at + 6], buf[at + 7]]);
        let start = at + ENTRY_HEADER_BYTES;
        if len > MAX_ENTRY_BYTES || buf.len() - start < len {
            break;
        }
        let payload = &buf[start..start + len];
        if crc32fast::hash(payload) != crc {
            break;
        }
        match bincode::serde::decode_from_slice::<GroupEntry, _>(payload, bincode_config()) {
            Ok((entry, used)) if used == len => entries.push(entry),
            _ => break,
        }
        at = start + len;
    }
    (entries, at)
}

/// Whether `rest`, the bytes after the last good entry, can be what a crash in the middle of an
/// append leaves: nothing but zeroes (blocks allocated, never written), less than an entry
/// header, or a header whose payload runs past the end of the file. Anything else (a whole entry
/// that fails its CRC or does not decode, whatever follows it) is damage: a commit that was
/// acknowledged, or a snapshot, which is written atomically and so is never torn.
fn is_torn_tail(rest: &[u8]) -> bool {
    if rest.iter().all(|&b| b == 0) || rest.len() < ENTRY_HEADER_BYTES {
        return true;
    }
    let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
    rest.len() - ENTRY_HEADER_BYTES < len
}

fn apply(offsets: &mut OffsetMap, entry: GroupEntry) {
    match entry {
        GroupEntry::Commit(list) => {
            for c in list {
                offsets.insert((c.topic, c.partition), c.offset);
            }
        }
        GroupEntry::ForgetTopic(topic) => offsets.retain(|(t, _), _| *t != topic),
    }
}

fn open_append(path: &Path) -> Result<File, BrokerError> {
    OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| BrokerError::io("open", path, e))
}

/// Writes a fresh file holding the magic and, if any, one snapshot entry of `offsets`. Returns
/// its length.
/// Whether `path` no longer names the file `file` is open on (it was replaced or removed), or that
/// cannot be told.
fn no_longer_appends_to(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(named), Ok(open)) => (named.dev(), named.ino()) != (open.dev(), open.ino()),
        _ => true,
    }
}

fn write_snapshot(path: &Path, offsets: &OffsetMap) -> Result<u64, BrokerError> {
    let mut buf = MAGIC.to_vec();
    if !offsets.is_empty() {
        let list = offsets
            .iter()
            .map(|((topic, partition), offset)| CommittedOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: *offset,
            })
            .collect();
        encode_entry(&GroupEntry::Commit(list), &mut buf)?;
    }
    fs::write_atomic(path, &buf)?;
    Ok(buf.len() as u64)
}

impl Group {
    fn load(path: PathBuf) -> Result<Group, BrokerError> {
        let mut bytes = Vec::new();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut bytes))
            .map_err(|e| BrokerError::io("read", &path, e))?;
        if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
            return Err(BrokerError::BadStateFile {
                path,
                reason: "not a group offsets file (bad magic)".into(),
            });
        }
        let (entries, valid) = decode_entries(&bytes[MAGIC.len()..]);
        let valid = MAGIC.len() + valid;
        if !is_torn_tail(&bytes[valid..]) {
            return Err(BrokerError::BadStateFile {
                path,
                reason: format!(
                    "the entry at byte {valid} is damaged (a whole entry that fails its CRC or \
                     does not decode, not a torn append)"
                ),
            });
        }
        if valid < bytes.len() {
            tracing::warn!(
                path = %path.display(),
                cut_bytes = bytes.len() - valid,
                "cutting a torn tail off a group offsets file (a crash interrupted a commit that was never acknowledged)"
            );
            let file = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| BrokerError::io("open", &path, e))?;
            file.set_len(valid as u64)
                .and_then(|()| file.sync_all())
                .map_err(|e| BrokerError::io("truncate", &path, e))?;
        }
        let entries_since_snapshot = entries.len();
        let mut offsets = OffsetMap::new();
        for entry in entries {
            apply(&mut offsets, entry);
        }
        let file = open_append(&path)?;
        Ok(Group {
            path,
            file,
            len: valid as u64,
            offsets,
            entries_since_snapshot,
            poisoned: false,
        })
    }

    fn append(&mut self, group: &str, entry: GroupEntry) -> Result<(), BrokerError> {
        if self.poisoned {
            return Err(BrokerError::GroupPoisoned {
                group: group.to_owned(),
            });
        }
        let mut buf = Vec::new();
        encode_entry(&entry, &mut buf)?;
        if let Err(e) = self.file.write_all(&buf) {
            // A full disk, most likely. Part of the entry may be in the file: cut it, and the
            // next commit goes where this one would have. If even that fails, the tail is
            // unknown: refuse further commits (replay cuts a torn tail at the next start).
            let cut = self
                .file
                .set_len(self.len)
                .and_then(|()| self.file.sync_data());
            if cut.is_err() {
                self.poisoned = true;
            }
            return Err(BrokerError::io("append to", &self.path, e));
        }
        if let Err(e) = self.file.sync_data() {
            // Whether the entry reached the disk is unknown (and a later fsync may not tell):
            // refuse further commits rather than acknowledge offsets on top of an unknown tail.
            self.poisoned = true;
            return Err(BrokerError::io("sync", &self.path, e));
        }
        self.len += buf.len() as u64;
        apply(&mut self.offsets, entry);
        self.entries_since_snapshot += 1;
        if self.entries_since_snapshot >= COMPACT_AFTER_ENTRIES {
            self.compact();
        }
        Ok(())
    }

    /// Rewrites the file as one snapshot entry. A failure leaves the old file, still valid.
    fn compact(&mut self) {
        let result = write_snapshot(&self.path, &self.offsets)
            .and_then(|len| Ok((open_append(&self.path)?, len)));
        match result {
            Ok((file, len)) => {
                self.file = file;
                self.len = len;
                self.entries_since_snapshot = 0;
            }
            Err(e) if no_longer_appends_to(&self.file, &self.path) => {
                // The snapshot was renamed over the file (so it may or may not survive a crash)
                // but what came after failed: appending to the old, unlinked file would lose
                // acknowledged commits. Refuse commits until a restart reloads the file.
                self.poisoned = true;
                tracing::error!(path = %self.path.display(), error = %super::error_chain(&e), "a group offsets compaction failed after its rename; refusing commits to the group until restart");
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %super::error_chain(&e), "could not compact a group offsets file");
            }
        }
    }
}

fn lock(group: &Mutex<Group>) -> std::sync::MutexGuard<'_, Group> {
    // A panic while holding the lock cannot leave the map half-updated (entries are applied
    // whole), so a poisoned mutex is still usable.
    group
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl GroupStore {
    /// Opens `dir`, loading every group's offsets (and cutting torn tails).
    pub(crate) fn open(dir: PathBuf) -> Result<GroupStore, BrokerError> {
        fs::create_dir_durable(&dir)?;
        let mut groups = BTreeMap::new();
        let mut damaged = BTreeMap::new();
        let entries = std::fs::read_dir(&dir).map_err(|e| BrokerError::io("list", &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| BrokerError::io("list", &dir, e))?;
            let file_name = entry.file_name();
            let Some(file_name) = file_name.to_str() else {
                continue;
            };
            if std::path::Path::new(file_name)
                .extension()
                .is_some_and(|ext| ext == "tmp")
            {
                // A snapshot or creation that a crash interrupted; the real file is intact.
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let Some(name) = file_name.strip_suffix(FILE_SUFFIX) else {
                continue;
            };
            if super::names::validate_group_name(name).is_err() {
                continue;
            }
            match Group::load(entry.path()) {
                Ok(group) => {
                    groups.insert(name.to_owned(), Arc::new(Mutex::new(group)));
                }
                Err(e) if super::is_environmental(&e) => return Err(e),
                Err(e) => {
                    let reason = super::error_chain(&e);
                    tracing::error!(group = name, error = %reason, "group offsets file damaged; serving the other groups without it");
                    damaged.insert(name.to_owned(), reason);
                }
            }
        }
        Ok(GroupStore {
            dir,
            groups: RwLock::new(groups),
            damaged,
        })
    }

    /// An error if `group`'s file was found damaged at start.
    fn check(&self, group: &str) -> Result<(), BrokerError> {
        match self.damaged.get(group) {
            Some(reason) => Err(BrokerError::GroupDamaged {
                group: group.to_owned(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn get(&self, name: &str) -> Option<Arc<Mutex<Group>>> {
        let groups = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        groups.get(name).cloned()
    }

    fn get_or_create(&self, name: &str) -> Result<Arc<Mutex<Group>>, BrokerError> {
        if let Some(g) = self.get(name) {
            return Ok(g);
        }
        let mut groups = self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(g) = groups.get(name) {
            return Ok(g.clone());
        }
        let path = self.dir.join(format!("{name}{FILE_SUFFIX}"));
        let len = write_snapshot(&path, &OffsetMap::new())?;
        let group = Arc::new(Mutex::new(Group {
            file: open_append(&path)?,
            len,
            path,
            offsets: OffsetMap::new(),
            entries_since_snapshot: 0,
            poisoned: false,
        }));
        groups.insert(name.to_owned(), group.clone());
        Ok(group)
    }

    /// Stores `offsets` for `group` durably (fsynced) before returning.
    pub(crate) fn commit(
        &self,
        group: &str,
        offsets: Vec<CommittedOffset>,
    ) -> Result<(), BrokerError> {
        self.check(group)?;
        let g = self.get_or_create(group)?;
        let mut g = lock(&g);
        g.append(group, GroupEntry::Commit(offsets))
    }

    /// The group's committed offset in one partition.
    pub(crate) fn committed(
        &self,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<Offset>, BrokerError> {
        self.check(group)?;
        let Some(g) = self.get(group) else {
            return Ok(None);
        };
        let g = lock(&g);
        Ok(g.offsets.get(&(topic.to_owned(), partition)).copied())
    }

    /// Every committed offset of the group, sorted by topic and partition; `None` if the group
    /// is unknown.
    pub(crate) fn all(&self, group: &str) -> Result<Option<Vec<CommittedOffset>>, BrokerError> {
        self.check(group)?;
        let Some(g) = self.get(group) else {
            return Ok(None);
        };
        let g = lock(&g);
        Ok(Some(
            g.offsets
                .iter()
                .map(|((topic, partition), offset)| CommittedOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        ))
    }

    /// Groups that hold at least one committed offset, and damaged ones, sorted.
    pub(crate) fn list(&self) -> Vec<String> {
        let groups = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut names: Vec<String> = groups
            .iter()
            .filter(|(_, g)| !lock(g).offsets.is_empty())
            .map(|(name, _)| name.clone())
            .chain(self.damaged.keys().cloned())
            .collect();
        names.sort();
        names
    }

    /// Drops every group's offsets in `topic` (after the topic is deleted).
    pub(crate) fn forget_topic(&self, topic: &str) -> Result<(), BrokerError> {
        let groups: Vec<(String, Arc<Mutex<Group>>)> = {
            let groups = self
                .groups
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            groups.iter().map(|(n, g)| (n.clone(), g.clone())).collect()
        };
        for (name, g) in groups {
            let mut g = lock(&g);
            if g.offsets.keys().any(|(t, _)| t == topic) {
                g.append(&name, GroupEntry::ForgetTopic(topic.to_owned()))?;
            }
        }
        Ok(())
    }

    /// Topics that some group has offsets in.
    pub(crate) fn topics(&self) -> Vec<String> {
        let groups = self
            .groups
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut topics: Vec<String> = groups
            .values()
            .flat_map(|g| {
                lock(g)
                    .offsets
                    .keys()
                    .map(|(t, _)| t.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        topics.sort();
        topics.dedup();
        topics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offset(topic: &str, partition: u32, offset: u64) -> CommittedOffset {
        CommittedOffset {
            topic: topic.into(),
            partition,
            offset,
        }
    }

    #[test]
    fn commits_survive_reopen_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        store
            .commit("g", vec![offset("t", 0, 5), offset("t", 1, 7)])
            .unwrap();
        store.commit("g", vec![offset("t", 0, 9)]).unwrap();
        drop(store);

        // A crash in the middle of a third commit leaves half an entry.
        let path = dir.path().join("g.offsets");
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(&[40, 0, 0, 0, 1, 2, 3, 4, 5]).unwrap();
        drop(file);

        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.committed("g", "t", 0).unwrap(), Some(9));
        assert_eq!(store.committed("g", "t", 1).unwrap(), Some(7));
        store.commit("g", vec![offset("t", 1, 8)]).unwrap();
        drop(store);
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.committed("g", "t", 1).unwrap(), Some(8));
        assert_eq!(store.list(), vec!["g".to_owned()]);
    }

    #[test]
    fn a_file_replaced_under_an_open_handle_is_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.offsets");
        std::fs::write(&path, b"old").unwrap();
        let file = open_append(&path).unwrap();
        assert!(!no_longer_appends_to(&file, &path));
        let tmp = dir.path().join("g.offsets.tmp");
        std::fs::write(&tmp, b"new").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert!(no_longer_appends_to(&file, &path));
        std::fs::remove_file(&path).unwrap();
        assert!(no_longer_appends_to(&file, &path));
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
    fn a_damaged_last_entry_or_snapshot_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        store.commit("g", vec![offset("t", 0, 5)]).unwrap();
        drop(store);
        // The file holds one entry (a commit, or after compaction a snapshot); flip its last byte.
        let path = dir.path().join("g.offsets");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        assert!(matches!(
            store.committed("g", "t", 0),
            Err(BrokerError::GroupDamaged { .. })
        ));
        drop(store);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);
    }

    #[test]
    fn a_damaged_file_takes_only_its_group_offline_and_is_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        for (i, group) in ["g", "h"].into_iter().enumerate() {
            for o in 1..=3 {
                store
                    .commit(group, vec![offset("t", 0, o + i as u64)])
                    .unwrap();
            }
        }
        drop(store);
        let path = dir.path().join("g.offsets");
        let good = std::fs::read(&path).unwrap();
        for how in ["a flipped byte in the middle entry", "bad magic"] {
            let mut bad = good.clone();
            if how == "bad magic" {
                bad[0] ^= 0xff;
            } else {
                // The file: magic, then three entries of equal length; flip one in the second.
                let entry = (bad.len() - MAGIC.len()) / 3;
                bad[MAGIC.len() + entry + ENTRY_HEADER_BYTES + 1] ^= 0x40;
            }
            std::fs::write(&path, &bad).unwrap();
            let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
            let damaged = |r: Result<(), BrokerError>| matches!(r, Err(BrokerError::GroupDamaged { ref group, .. }) if group == "g");
            assert!(damaged(store.committed("g", "t", 0).map(|_| ())), "{how}");
            assert!(damaged(store.all("g").map(|_| ())), "{how}");
            assert!(damaged(store.commit("g", vec![offset("t", 0, 9)])), "{how}");
            assert_eq!(store.committed("h", "t", 0).unwrap(), Some(4), "{how}");
            assert_eq!(store.list(), ["g", "h"], "{how}");
            drop(store);
            assert_eq!(
                std::fs::read(&path).unwrap(),
                bad,
                "{how}: the damaged file changed"
            );
            // Repaired: back whole.
            std::fs::write(&path, &good).unwrap();
            let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
            assert_eq!(store.committed("g", "t", 0).unwrap(), Some(3), "{how}");
            drop(store);
            std::fs::write(&path, &good).unwrap();
        }
    }

    #[test]
    fn compaction_keeps_the_latest_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        for i in 0..(COMPACT_AFTER_ENTRIES as u64 + 10) {
            store
                .commit("g", vec![offset("t", (i % 3) as u32, i)])
                .unwrap();
        }
        let size = std::fs::metadata(dir.path().join("g.offsets"))
            .unwrap()
            .len();
        assert!(size < 2000, "file was not compacted: {size} bytes");
        drop(store);
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        let all = store.all("g").unwrap().unwrap();
        assert_eq!(all.len(), 3);
        let last = COMPACT_AFTER_ENTRIES as u64 + 9;
        assert!(all.iter().any(|c| c.offset == last));
    }

    #[test]
    fn forgetting_a_topic_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        store
            .commit("g", vec![offset("a", 0, 1), offset("b", 0, 2)])
            .unwrap();
        store.forget_topic("a").unwrap();
        drop(store);
        let store = GroupStore::open(dir.path().to_path_buf()).unwrap();
        assert_eq!(store.all("g").unwrap().unwrap(), vec![offset("b", 0, 2)]);
        assert_eq!(store.topics(), vec!["b".to_owned()]);
    }
}
