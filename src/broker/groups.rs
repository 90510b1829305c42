//! Committed consumer-group offsets, one journal per group.
//!
//! `DATA/groups/<group>.offsets` is a [`Journal`] (docs/FORMAT.md) with the magic `STRAGRP1`
//! whose entries are [`GroupEntry`] values (bincode 2, standard config). A commit appends one
//! entry holding every offset of the request (so a commit is all or nothing), durable before it
//! is acknowledged. On open, entries are replayed in order; the journal cuts a torn tail, and a
//! damaged journal (or an entry that does not decode) takes only its group offline (DATA_LOSS).
//! Every `BrokerConfig::group_compact_entries` entries the journal is rewritten as one snapshot entry.

use super::BrokerError;
use crate::errors::error_chain;
use crate::storage::{Io, Offset, StorageError, journal::Journal};
use serde::{Deserialize, Serialize};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex, RwLock},
};

const MAGIC: [u8; 8] = *b"STRAGRP1";
const FILE_SUFFIX: &str = ".offsets";
/// Appended entries after which a group's file is rewritten as a snapshot, by default.
#[cfg(test)]
const COMPACT_AFTER_ENTRIES: usize = 1000;

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
    journal: Journal,
    offsets: OffsetMap,
    compact_entries: usize,
}

/// Every group's committed offsets, in memory and on disk.
pub(crate) struct GroupStore {
    io: Io,
    dir: PathBuf,
    groups: RwLock<BTreeMap<String, Arc<Mutex<Group>>>>,
    /// Groups whose file could not be read at start, with why: neither served nor written (a
    /// commit would replace the file) until it is repaired or removed and the broker restarted.
    damaged: BTreeMap<String, String>,
    compact_entries: usize,
}

fn bincode_config() -> bincode::config::Configuration {
    bincode::config::standard()
}

fn encode(entry: &GroupEntry) -> Result<Vec<u8>, BrokerError> {
    bincode::serde::encode_to_vec(entry, bincode_config()).map_err(|e| BrokerError::BadStateFile {
        path: PathBuf::from("(group entry)"),
        reason: e.to_string(),
    })
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

/// The snapshot entry of `offsets`: one commit of all of them (`None` if there are none).
fn snapshot(offsets: &OffsetMap) -> Result<Option<Vec<u8>>, BrokerError> {
    if offsets.is_empty() {
        return Ok(None);
    }
    let list = offsets
        .iter()
        .map(|((topic, partition), offset)| CommittedOffset {
            topic: topic.clone(),
            partition: *partition,
            offset: *offset,
        })
        .collect();
    encode(&GroupEntry::Commit(list)).map(Some)
}

impl Group {
    fn load(io: &Io, path: PathBuf, compact_entries: usize) -> Result<Group, BrokerError> {
        let (journal, entries) = Journal::open(io, path, MAGIC).map_err(BrokerError::file)?;
        let mut offsets = OffsetMap::new();
        for (i, payload) in entries.iter().enumerate() {
            match bincode::serde::decode_from_slice::<GroupEntry, _>(payload, bincode_config()) {
                Ok((entry, used)) if used == payload.len() => apply(&mut offsets, entry),
                _ => {
                    return Err(BrokerError::BadStateFile {
                        path: journal.path().to_path_buf(),
                        reason: format!("entry {i} is not a group entry"),
                    });
                }
            }
        }
        Ok(Group {
            journal,
            offsets,
            compact_entries,
        })
    }

    fn append(&mut self, group: &str, entry: GroupEntry) -> Result<(), BrokerError> {
        let payload = encode(&entry)?;
        self.journal.append(&payload).map_err(|e| match e {
            StorageError::Poisoned { .. } => BrokerError::GroupPoisoned {
                group: group.to_owned(),
            },
            e => BrokerError::file(e),
        })?;
        apply(&mut self.offsets, entry);
        if self.journal.entries_since_snapshot() >= self.compact_entries {
            self.compact();
        }
        Ok(())
    }

    /// Rewrites the journal as one snapshot entry. A failure before the rename leaves the old
    /// file, still valid; one after it poisons the group (the journal says why).
    fn compact(&mut self) {
        let result = snapshot(&self.offsets).and_then(|snap| match snap {
            Some(snap) => self.journal.compact(&snap).map_err(BrokerError::file),
            None => Ok(()),
        });
        if let Err(e) = result {
            tracing::warn!(path = %self.journal.path().display(), error = %error_chain(&e), "could not compact a group offsets file");
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
    pub(crate) fn open(
        io: &Io,
        dir: PathBuf,
        compact_entries: usize,
    ) -> Result<GroupStore, BrokerError> {
        io.create_dir_durable(&dir).map_err(BrokerError::file)?;
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
                let _ = io.remove_file(&entry.path());
                continue;
            }
            let Some(name) = file_name.strip_suffix(FILE_SUFFIX) else {
                continue;
            };
            if super::names::validate_group_name(name).is_err() {
                continue;
            }
            match Group::load(io, entry.path(), compact_entries) {
                Ok(group) => {
                    groups.insert(name.to_owned(), Arc::new(Mutex::new(group)));
                }
                Err(e) if super::is_environmental(&e) => return Err(e),
                Err(e) => {
                    let reason = error_chain(&e);
                    tracing::error!(group = name, error = %reason, "group offsets file damaged; serving the other groups without it");
                    damaged.insert(name.to_owned(), reason);
                }
            }
        }
        Ok(GroupStore {
            io: io.clone(),
            dir,
            groups: RwLock::new(groups),
            damaged,
            compact_entries,
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
        let journal = Journal::create(&self.io, path, MAGIC, None).map_err(BrokerError::file)?;
        let group = Arc::new(Mutex::new(Group {
            journal,
            offsets: OffsetMap::new(),
            compact_entries: self.compact_entries,
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

    /// Removes the group and its file (durably: the directory is synced). False if the group
    /// has no file.
    pub(crate) fn delete(&self, group: &str) -> Result<bool, BrokerError> {
        self.check(group)?;
        let mut groups = self
            .groups
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(g) = groups.remove(group) else {
            return Ok(false);
        };
        let path = lock(&g).journal.path().to_path_buf();
        if let Err(e) = self.io.remove_file(&path) {
            // Still there: keep serving it.
            groups.insert(group.to_owned(), g);
            return Err(BrokerError::file(e));
        }
        // Gone from the directory; a failed sync means a crash could bring it back, which the
        // caller hears (the group is gone from memory either way: its file is unlinked).
        self.io.sync_dir(&self.dir).map_err(BrokerError::file)?;
        Ok(true)
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
    use crate::storage::journal::ENTRY_HEADER_BYTES;
    use std::{fs::OpenOptions, io::Write};

    fn open(dir: &std::path::Path) -> GroupStore {
        GroupStore::open(&Io::default(), dir.to_path_buf(), COMPACT_AFTER_ENTRIES).unwrap()
    }

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
        let store = open(dir.path());
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

        let store = open(dir.path());
        assert_eq!(store.committed("g", "t", 0).unwrap(), Some(9));
        assert_eq!(store.committed("g", "t", 1).unwrap(), Some(7));
        store.commit("g", vec![offset("t", 1, 8)]).unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.committed("g", "t", 1).unwrap(), Some(8));
        assert_eq!(store.list(), vec!["g".to_owned()]);
    }

    #[test]
    fn a_damaged_last_entry_or_snapshot_is_damage_not_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store.commit("g", vec![offset("t", 0, 5)]).unwrap();
        drop(store);
        // The file holds one entry (a commit, or after compaction a snapshot); flip its last byte.
        let path = dir.path().join("g.offsets");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let store = open(dir.path());
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
        let store = open(dir.path());
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
            let store = open(dir.path());
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
            let store = open(dir.path());
            assert_eq!(store.committed("g", "t", 0).unwrap(), Some(3), "{how}");
            drop(store);
            std::fs::write(&path, &good).unwrap();
        }
    }

    #[test]
    fn compaction_keeps_the_latest_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
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
        let store = open(dir.path());
        let all = store.all("g").unwrap().unwrap();
        assert_eq!(all.len(), 3);
        let last = COMPACT_AFTER_ENTRIES as u64 + 9;
        assert!(all.iter().any(|c| c.offset == last));
    }

    #[test]
    fn forgetting_a_topic_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .commit("g", vec![offset("a", 0, 1), offset("b", 0, 2)])
            .unwrap();
        store.forget_topic("a").unwrap();
        drop(store);
        let store = open(dir.path());
        assert_eq!(store.all("g").unwrap().unwrap(), vec![offset("b", 0, 2)]);
        assert_eq!(store.topics(), vec!["b".to_owned()]);
    }
}
