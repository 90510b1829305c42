//! A power-cut simulator on the broker's file seam, in the spirit of Jepsen's LazyFS and redb's
//! crash tests: a [`FaultInjector`] that fails nothing but hears every file operation
//! ([`IoEvent`]) and keeps a model of what the kernel has made durable: per file, the bytes as of
//! its last `fdatasync` and the writes since; per directory, which entry changes (creates,
//! renames, removals) a directory fsync covered. At any event it can write out a data directory
//! as a power cut could leave it:
//!
//! - a file's writes since its last sync are each, page by page (4 KiB, at file offsets), kept,
//!   dropped or torn within the page (a random prefix of it kept); resizes since the sync are
//!   kept or dropped;
//! - directory entry changes since the directory's last fsync are undone, except a random
//!   prefix of them in the order they were made (a journaling file system commits metadata in
//!   order); a rename is one change, kept or undone whole, and counts as synced once either of
//!   its directories is; a removed directory tree comes back whole if its removal is undone.
//!
//! Synced bytes and synced entries are never touched: so the broker must open every cut, and
//! under `fsync always` lose nothing it acknowledged. [`PowerCut::check_matches_disk`] compares
//! the model's current state with the real directory, which fails if any file was changed
//! without going through the seam.
#![allow(dead_code, clippy::unwrap_used)] // a failed unwrap is a failed test

use super::rng::Rng;
use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    io,
    path::{Component, Path, PathBuf},
    sync::{Arc, Mutex},
};
use strata::storage::{FaultInjector, FileOp, IoEvent};

const PAGE: u64 = 4096;

type NodeId = usize;

#[derive(Debug, Clone)]
enum DataOp {
    Write { pos: u64, bytes: Vec<u8> },
    Resize(u64),
}

#[derive(Debug, Clone, Default)]
struct Node {
    is_dir: bool,
    /// The file's bytes as the running process sees them.
    current: Vec<u8>,
    /// The bytes as of the last fdatasync.
    durable: Vec<u8>,
    /// Changes since the last fdatasync, in order.
    pending: Vec<DataOp>,
}

#[derive(Debug, Clone)]
enum Change {
    Link {
        dir: NodeId,
        name: OsString,
        node: NodeId,
    },
    Unlink {
        dir: NodeId,
        name: OsString,
        node: NodeId,
    },
    Rename {
        from_dir: NodeId,
        from_name: OsString,
        to_dir: NodeId,
        to_name: OsString,
        node: NodeId,
    },
}

impl Change {
    fn touches(&self, d: NodeId) -> bool {
        match self {
            Change::Link { dir, .. } | Change::Unlink { dir, .. } => *dir == d,
            Change::Rename {
                from_dir, to_dir, ..
            } => *from_dir == d || *to_dir == d,
        }
    }
}

#[derive(Debug, Default)]
struct Model {
    nodes: Vec<Node>,
    /// The namespace as the running process sees it: directory -> name -> node.
    entries: HashMap<NodeId, BTreeMap<OsString, NodeId>>,
    /// Every entry change since the start, in order, and whether a directory fsync covered it.
    changes: Vec<(Change, bool)>,
    /// Events naming a path the model does not know (a file outside the root, or one already
    /// unlinked): counted, not modelled.
    unresolved: usize,
    events: usize,
}

const ROOT: NodeId = 0;

impl Model {
    fn new() -> Model {
        let mut m = Model {
            nodes: vec![Node {
                is_dir: true,
                ..Node::default()
            }],
            ..Model::default()
        };
        m.entries.insert(ROOT, BTreeMap::new());
        m
    }

    /// Adds the tree under `path` (directory node `dir`) as durable: its files' bytes synced,
    /// its entries covered by a directory fsync.
    fn load(&mut self, dir: NodeId, path: &Path) {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            let is_dir = entry.file_type().unwrap().is_dir();
            let node = self.new_node(is_dir);
            let name = entry.file_name();
            self.entries
                .get_mut(&dir)
                .unwrap()
                .insert(name.clone(), node);
            self.changes.push((Change::Link { dir, name, node }, true));
            if is_dir {
                self.load(node, &entry.path());
            } else {
                let bytes = std::fs::read(entry.path()).unwrap();
                self.nodes[node].current.clone_from(&bytes);
                self.nodes[node].durable = bytes;
            }
        }
    }

    fn lookup(&self, parts: &[OsString]) -> Option<NodeId> {
        let mut at = ROOT;
        for part in parts {
            at = *self.entries.get(&at)?.get(part)?;
        }
        Some(at)
    }

    /// A write or resize of `node`'s data, not yet synced.
    fn change_data(&mut self, node: Option<NodeId>, op: DataOp) {
        match node {
            Some(node) => {
                apply(&mut self.nodes[node].current, &op);
                self.nodes[node].pending.push(op);
            }
            None => self.unresolved += 1,
        }
    }

    fn new_node(&mut self, is_dir: bool) -> NodeId {
        self.nodes.push(Node {
            is_dir,
            ..Node::default()
        });
        let id = self.nodes.len() - 1;
        if is_dir {
            self.entries.insert(id, BTreeMap::new());
        }
        id
    }
}

/// What runs after each event: the simulator, the event's index and its signature.
type Hook = Box<dyn FnMut(&PowerCut, usize, &str) + Send>;

/// The simulator. Share it as the broker's `BrokerConfig::faults`.
pub struct PowerCut {
    root: PathBuf,
    model: Mutex<Model>,
    /// Called after each event with its index; the test takes cuts from here.
    hook: Mutex<Option<Hook>>,
    /// Set by [`PowerCut::freeze`]: every operation fails.
    frozen: std::sync::atomic::AtomicBool,
}

/// How a path splits into the model: its parent's components and its own name.
fn split(root: &Path, path: &Path) -> Option<(Vec<OsString>, OsString)> {
    let rel = path.strip_prefix(root).ok()?;
    let mut parts: Vec<OsString> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(p) => parts.push(p.to_owned()),
            Component::CurDir => {}
            _ => return None,
        }
    }
    let name = parts.pop()?;
    Some((parts, name))
}

fn apply(data: &mut Vec<u8>, op: &DataOp) {
    match op {
        DataOp::Write { pos, bytes } => {
            let end = *pos as usize + bytes.len();
            if data.len() < end {
                data.resize(end, 0);
            }
            data[*pos as usize..end].copy_from_slice(bytes);
        }
        DataOp::Resize(len) => data.resize(*len as usize, 0),
    }
}

/// A data directory as a power cut left it, with what the test expected at that moment.
pub struct Cut<T> {
    pub dir: PathBuf,
    pub expect: T,
    /// The file event it was taken at, and a short signature of it (`wrote .log`).
    pub event: usize,
    pub signature: String,
}

impl PowerCut {
    /// A simulator for a data directory at `root`, which must exist (and is taken as durable).
    pub fn new(root: &Path) -> Arc<PowerCut> {
        Arc::new(PowerCut {
            root: root.to_path_buf(),
            model: Mutex::new(Model::new()),
            hook: Mutex::new(None),
            frozen: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A simulator for a data directory at `root` that already holds files (a cut a broker
    /// restarts from): everything in it is taken as durable.
    pub fn from_existing(root: &Path) -> Arc<PowerCut> {
        let sim = PowerCut::new(root);
        sim.model.lock().unwrap().load(ROOT, root);
        sim
    }

    /// From now on every file operation fails, as if the machine had lost power: nothing more
    /// becomes durable (take the cut after this, then stop the broker).
    pub fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn as_injector(self: &Arc<Self>) -> Arc<dyn FaultInjector> {
        self.clone()
    }

    /// Sets what runs after each event (with the event's index and a short signature of it, such
    /// as `wrote .log`).
    pub fn on_event(&self, hook: impl FnMut(&PowerCut, usize, &str) + Send + 'static) {
        *self.hook.lock().unwrap() = Some(Box::new(hook));
    }

    /// From now on, at one file event in `one_in` (chosen by `rng`), writes a cut into a fresh
    /// directory under `cuts_dir` and keeps it with what `expect` says the test knew then.
    /// Returns the cuts taken, in order.
    pub fn cut_at_random<T: Send + 'static>(
        &self,
        mut rng: Rng,
        one_in: u64,
        cuts_dir: PathBuf,
        expect: impl Fn() -> T + Send + 'static,
    ) -> Arc<Mutex<Vec<Cut<T>>>> {
        let cuts: Arc<Mutex<Vec<Cut<T>>>> = Arc::default();
        let taken = cuts.clone();
        self.on_event(move |sim, event, signature| {
            if !rng.one_in(one_in) {
                return;
            }
            let mut cuts = taken.lock().unwrap();
            let dir = cuts_dir.join(cuts.len().to_string());
            sim.cut(&mut rng, &dir);
            cuts.push(Cut {
                dir,
                expect: expect(),
                event,
                signature: signature.to_owned(),
            });
        });
        cuts
    }

    /// Events seen so far.
    pub fn events(&self) -> usize {
        self.model.lock().unwrap().events
    }

    /// Events about paths the model could not place.
    pub fn unresolved(&self) -> usize {
        self.model.lock().unwrap().unresolved
    }

    fn record(&self, event: &IoEvent<'_>) -> String {
        let mut guard = self.model.lock().unwrap();
        let m = &mut *guard;
        m.events += 1;
        let kind_of = |p: &Path| file_kind(p);
        let resolve = |m: &Model, p: &Path| -> Option<(NodeId, OsString, Option<NodeId>)> {
            let (parent, name) = split(&self.root, p)?;
            let dir = m.lookup(&parent)?;
            let node = m.entries.get(&dir)?.get(&name).copied();
            Some((dir, name, node))
        };
        match *event {
            IoEvent::Opened { path } => {
                match resolve(m, path) {
                    Some((dir, name, None)) => {
                        let node = m.new_node(false);
                        m.entries.get_mut(&dir).unwrap().insert(name.clone(), node);
                        m.changes.push((Change::Link { dir, name, node }, false));
                    }
                    Some((_, _, Some(_))) => {}
                    None => m.unresolved += 1,
                }
                format!("opened {}", kind_of(path))
            }
            IoEvent::CreatedDir { path } => {
                match resolve(m, path) {
                    Some((dir, name, None)) => {
                        let node = m.new_node(true);
                        m.entries.get_mut(&dir).unwrap().insert(name.clone(), node);
                        m.changes.push((Change::Link { dir, name, node }, false));
                    }
                    _ => m.unresolved += 1,
                }
                format!("created dir {}", kind_of(path))
            }
            IoEvent::Wrote { path, pos, bytes } => {
                let op = DataOp::Write {
                    pos,
                    bytes: bytes.to_vec(),
                };
                let node = resolve(m, path).and_then(|(_, _, n)| n);
                m.change_data(node, op);
                format!("wrote {}", kind_of(path))
            }
            IoEvent::Resized { path, len } => {
                let node = resolve(m, path).and_then(|(_, _, n)| n);
                m.change_data(node, DataOp::Resize(len));
                format!("resized {}", kind_of(path))
            }
            IoEvent::SyncedData { path } => {
                match resolve(m, path) {
                    Some((_, _, Some(node))) => {
                        let n = &mut m.nodes[node];
                        n.durable = n.current.clone();
                        n.pending.clear();
                    }
                    _ => m.unresolved += 1,
                }
                format!("synced {}", kind_of(path))
            }
            IoEvent::SyncedDir { path } => {
                let dir = if path == self.root {
                    Some(ROOT)
                } else {
                    resolve(m, path).and_then(|(_, _, n)| n)
                };
                match dir {
                    Some(d) => {
                        for (change, synced) in &mut m.changes {
                            if change.touches(d) {
                                *synced = true;
                            }
                        }
                    }
                    None => m.unresolved += 1,
                }
                format!("synced dir {}", kind_of(path))
            }
            IoEvent::Renamed { from, to } => {
                match (resolve(m, from), resolve(m, to)) {
                    (Some((from_dir, from_name, Some(node))), Some((to_dir, to_name, _))) => {
                        m.entries.get_mut(&from_dir).unwrap().remove(&from_name);
                        m.entries
                            .get_mut(&to_dir)
                            .unwrap()
                            .insert(to_name.clone(), node);
                        m.changes.push((
                            Change::Rename {
                                from_dir,
                                from_name,
                                to_dir,
                                to_name,
                                node,
                            },
                            false,
                        ));
                    }
                    _ => m.unresolved += 1,
                }
                format!("renamed {} to {}", kind_of(from), kind_of(to))
            }
            IoEvent::Removed { path } | IoEvent::RemovedDir { path } => {
                match resolve(m, path) {
                    Some((dir, name, Some(node))) => {
                        m.entries.get_mut(&dir).unwrap().remove(&name);
                        m.changes.push((Change::Unlink { dir, name, node }, false));
                    }
                    _ => m.unresolved += 1,
                }
                format!("removed {}", kind_of(path))
            }
        }
    }

    /// Writes into `out` (which must not exist) a data directory as a power cut now could leave
    /// it, choosing what survives with `rng`.
    pub fn cut(&self, rng: &mut Rng, out: &Path) {
        let m = self.model.lock().unwrap();
        // Entry changes: the synced ones, plus those before a random point.
        let first_unsynced = m.changes.iter().position(|(_, s)| !s);
        let keep_before = match first_unsynced {
            Some(i) => i + rng.below((m.changes.len() - i + 1) as u64) as usize,
            None => m.changes.len(),
        };
        let mut entries: HashMap<NodeId, BTreeMap<OsString, NodeId>> = HashMap::new();
        entries.insert(ROOT, BTreeMap::new());
        for (i, (change, synced)) in m.changes.iter().enumerate() {
            if !synced && i >= keep_before {
                continue;
            }
            match change {
                Change::Link { dir, name, node } => {
                    entries.entry(*dir).or_default().insert(name.clone(), *node);
                }
                Change::Unlink { dir, name, node } => {
                    let d = entries.entry(*dir).or_default();
                    if d.get(name) == Some(node) {
                        d.remove(name);
                    }
                }
                Change::Rename {
                    from_dir,
                    from_name,
                    to_dir,
                    to_name,
                    node,
                } => {
                    let d = entries.entry(*from_dir).or_default();
                    if d.get(from_name) == Some(node) {
                        d.remove(from_name);
                    }
                    entries
                        .entry(*to_dir)
                        .or_default()
                        .insert(to_name.clone(), *node);
                }
            }
        }
        std::fs::create_dir(out).unwrap();
        let mut stack = vec![(ROOT, out.to_path_buf())];
        while let Some((dir, path)) = stack.pop() {
            let Some(children) = entries.get(&dir) else {
                continue;
            };
            for (name, &node) in children {
                let child = path.join(name);
                let n = &m.nodes[node];
                if n.is_dir {
                    std::fs::create_dir(&child).unwrap();
                    stack.push((node, child));
                } else {
                    std::fs::write(&child, surviving_bytes(n, rng)).unwrap();
                }
            }
        }
    }

    /// Panics unless the model's current namespace and file contents equal what is on disk
    /// under the root: every change went through the seam.
    pub fn check_matches_disk(&self) {
        let m = self.model.lock().unwrap();
        let mut stack = vec![(ROOT, self.root.clone())];
        while let Some((dir, path)) = stack.pop() {
            let mut on_disk: Vec<OsString> = std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            on_disk.sort();
            let modelled: Vec<OsString> = m.entries[&dir].keys().cloned().collect();
            assert_eq!(
                on_disk,
                modelled,
                "{}: the files on disk are not what went through the seam",
                path.display()
            );
            for (name, &node) in &m.entries[&dir] {
                let child = path.join(name);
                if m.nodes[node].is_dir {
                    stack.push((node, child));
                } else {
                    let bytes = std::fs::read(&child).unwrap();
                    assert!(
                        bytes == m.nodes[node].current,
                        "{}: {} bytes on disk, {} modelled, or other contents: written around the seam",
                        child.display(),
                        bytes.len(),
                        m.nodes[node].current.len()
                    );
                }
            }
        }
    }
}

/// A file's bytes after a power cut: the synced bytes, then each change since, page by page
/// kept, dropped or torn.
fn surviving_bytes(n: &Node, rng: &mut Rng) -> Vec<u8> {
    let mut data = n.durable.clone();
    for op in &n.pending {
        match op {
            DataOp::Resize(_) => {
                if rng.one_in(2) {
                    apply(&mut data, op);
                }
            }
            DataOp::Write { pos, bytes } => {
                let mut at = *pos;
                let end = pos + bytes.len() as u64;
                while at < end {
                    let page_end = ((at / PAGE) + 1) * PAGE;
                    let chunk_end = page_end.min(end);
                    let chunk = &bytes[(at - pos) as usize..(chunk_end - pos) as usize];
                    let kept = match rng.below(4) {
                        0 => 0,
                        3 => rng.below(chunk.len() as u64 + 1) as usize,
                        _ => chunk.len(),
                    };
                    if kept > 0 {
                        apply(
                            &mut data,
                            &DataOp::Write {
                                pos: at,
                                bytes: chunk[..kept].to_vec(),
                            },
                        );
                    }
                    at = chunk_end;
                }
            }
        }
    }
    data
}

/// A path's kind for cut signatures: its extension or name, digits dropped
/// (`00000000000000000000.log` is `.log`, `recovery-point.tmp` is `recovery-point.tmp`).
fn file_kind(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let kind: String = name.chars().filter(|c| !c.is_ascii_digit()).collect();
    if kind.is_empty() || kind == "." {
        "dir".into()
    } else {
        kind
    }
}

impl FaultInjector for PowerCut {
    fn before(&self, _op: FileOp, _path: &Path, _len: usize) -> io::Result<Option<usize>> {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::Error::other("the power is off (PowerCut::freeze)"));
        }
        Ok(None)
    }

    fn after(&self, event: &IoEvent<'_>) {
        let signature = self.record(event);
        let index = self.events();
        if let Some(hook) = self.hook.lock().unwrap().as_mut() {
            hook(self, index, &signature);
        }
    }
}
