//! The node table: FUSE node id -> [`Node`]. A node knows where it lives (its aliases, as
//! parent id + name) and in which layers (top-down; one for a non-directory), never a path
//! string. Directory fds are opened on demand, one component at a time with O_NOFOLLOW, and
//! kept in a bounded LRU so the daemon's fd count does not grow with the kernel's cache.
//!
//! Node ids are derived from the real object, xino style: the layer's filesystem index in the
//! high 16 bits, the real inode number below. A merged directory takes its id from its topmost
//! lower, so creating its upper copy does not change it; a copied-up file keeps its origin's
//! id through an xattr (see `copyup`). Root is always 1.

use std::collections::HashMap;
use std::ffi::CString;
use std::num::NonZeroUsize;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lru::LruCache;
use parking_lot::{Mutex, RwLock};

use crate::error::{Error, Result};
use crate::layer::{LayerIdx, LayerStack, UPPER};
use crate::lookup::{LowerPath, Redirects};
use crate::sys;

pub const ROOT: u64 = 1;
const INO_BITS: u32 = 48;
/// Ids handed out when a real inode number does not fit below the fs index.
const FALLBACK_BASE: u64 = 1 << 63;

pub struct Node {
    pub ino: u64,
    /// The file type (`S_IFMT` bits); fixed for the node's life.
    pub ftype: u32,
    /// What stat reports as st_ino. Usually the node id; differs for a lower file with several
    /// links (each name is its own node, as kernel overlay without `index` has it, all with
    /// the lower's inode number) and after such a file's copy-up (it gets the copy's own).
    pub st_ino: AtomicU64,
    pub is_dir: bool,
    /// Lookups the kernel holds; the node leaves the table when `forget` brings it to 0.
    pub nlookup: AtomicU64,
    pub state: Mutex<NodeState>,
    /// Single-flight copy-up: two writers of one lower file copy it once.
    pub copy_lock: Mutex<()>,
    /// Serialises changes to the names in this directory (create, unlink, rename, copy-up).
    pub dir_lock: Mutex<()>,
    /// Bumped by every copy-up, so handles opened on a lower copy reopen the upper one.
    pub copy_gen: AtomicU64,
    /// The object was deleted (its last link in the upper, or an upper directory): its inode
    /// number may be reused by the filesystem at once, so its id must not be handed out for
    /// another object while the kernel still holds it.
    pub dead: AtomicBool,
    /// An O_PATH fd on the object, taken when its last known name is removed: an open file,
    /// an open directory or a cwd keeps working (stat, read, xattrs) as on kernel overlay.
    /// Dropped with the node, when the kernel forgets it.
    pub removed: Mutex<Option<Arc<OwnedFd>>>,
    /// File handles open on this node: a file nobody has open needs no `removed` fd.
    pub open_files: AtomicU64,
    /// The node's own file handle and its access mode, for requests on files the kernel
    /// opened without asking (`Union::node_handle`); released when the kernel forgets it.
    pub own: Mutex<Option<(u64, i32)>>,
}

#[derive(Clone, Debug)]
pub struct NodeState {
    /// Names this node is known by, as (parent node id, name). Empty for the root and for a
    /// node whose last known name was removed.
    pub aliases: Vec<(u64, CString)>,
    /// Layers holding this object, top-down. A directory lists every layer it merges from
    /// (stopping at an opaque one); anything else exactly one.
    pub layers: Vec<LayerIdx>,
    /// The xattr names of the top copy, once asked: most objects have none, and the kernel
    /// asks for `security.*` on every `ls -l`, so absent names are answered from here.
    /// Cleared by anything that may change them (setxattr, removexattr, setattr, copy-up).
    pub xattr_names: Option<Arc<Vec<CString>>>,
    /// For a directory of a deep stack: which lower copies hold which names.
    pub index: Option<Arc<crate::dirindex::DirIndex>>,
    /// The redirects on a directory's copies: where its lower copies are, per layer (see
    /// `lookup::Redirects`).
    pub lower: Option<Redirects>,
}

impl Node {
    /// `ftype`: the object's file type (`st_mode & S_IFMT`).
    pub fn new(ino: u64, ftype: u32, layers: Vec<LayerIdx>, alias: Option<(u64, CString)>) -> Node {
        Node {
            ino,
            st_ino: AtomicU64::new(ino),
            is_dir: ftype == libc::S_IFDIR,
            ftype,
            nlookup: AtomicU64::new(0),
            state: Mutex::new(NodeState {
                xattr_names: None,
                index: None,
                lower: None,
                aliases: alias.into_iter().collect(),
                layers,
            }),
            copy_lock: Mutex::new(()),
            dir_lock: Mutex::new(()),
            copy_gen: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            removed: Mutex::new(None),
            open_files: AtomicU64::new(0),
            own: Mutex::new(None),
        }
    }

    pub fn top(&self) -> LayerIdx {
        self.state.lock().layers.first().copied().unwrap_or(0)
    }

    pub fn layers(&self) -> Vec<LayerIdx> {
        self.state.lock().layers.clone()
    }

    /// The first known (parent, name) of this node.
    pub fn alias(&self) -> Result<(u64, CString)> {
        self.state
            .lock()
            .aliases
            .first()
            .cloned()
            .ok_or(Error::NotFound)
    }

    pub fn add_alias(&self, parent: u64, name: &CString) {
        let mut st = self.state.lock();
        if !st.aliases.iter().any(|(p, n)| *p == parent && n == name) {
            st.aliases.push((parent, name.clone()));
        }
    }

    /// Forget the name `parent/name`, which was removed. `obj`: an O_PATH fd on the object,
    /// kept if that was its last known name (see `removed`).
    pub fn remove_alias(&self, parent: u64, name: &CString, obj: Option<Arc<OwnedFd>>) {
        let mut st = self.state.lock();
        st.aliases.retain(|(p, n)| !(*p == parent && n == name));
        let last = st.aliases.is_empty();
        drop(st);
        if last && let Some(fd) = obj {
            *self.removed.lock() = Some(fd);
        }
    }

    /// Has this node lost every name it was known by (and is not the root)?
    pub fn is_removed(&self) -> bool {
        self.ino != ROOT && self.state.lock().aliases.is_empty()
    }
}

/// The id maps, under one lock so a lookup sees a redirect and the node it leads to together.
#[derive(Default)]
struct Ids {
    nodes: HashMap<u64, Arc<Node>>,
    /// Ids whose node is dead but still held by the kernel -> the id now used for the real
    /// object that took over that inode number; and a split hard link's copy -> the node of
    /// the name that was copied up (`adopt`).
    redirect: HashMap<u64, u64>,
}

impl Ids {
    /// The id that stands for the object whose derived id is `ino`.
    fn current(&self, ino: u64) -> u64 {
        self.redirect.get(&ino).copied().unwrap_or(ino)
    }
}

/// Locks: `ids`, `fallback`, `by_alias` and `dir_fds` are leaves (nothing else is taken while
/// one is held; `Node::state` is taken only after `ids` is released).
pub struct NodeTable {
    ids: RwLock<Ids>,
    fallback: Mutex<HashMap<(u64, u64), u64>>,
    by_alias: Mutex<HashMap<(u64, CString), u64>>,
    next_fallback: AtomicU64,
    dir_fds: Mutex<LruCache<(u64, LayerIdx), Arc<OwnedFd>>>,
    has_upper: bool,
    /// Nodes `forget` has removed so far, read by `mount`'s trim thread (it holds a `Weak`
    /// and stops once the table is gone).
    forgotten: Arc<AtomicU64>,
}

/// Below this many buckets the node table never shrinks (not worth a rehash).
const SHRINK_MIN: usize = 1024;

impl NodeTable {
    pub fn new(stack: &LayerStack, fd_cache: usize) -> NodeTable {
        let root = Node::new(ROOT, libc::S_IFDIR, (0..stack.len()).collect(), None);
        root.nlookup.store(1, Ordering::Relaxed);
        let mut ids = Ids::default();
        ids.nodes.insert(ROOT, Arc::new(root));
        let cap = NonZeroUsize::new(fd_cache.max(16)).unwrap_or(NonZeroUsize::MIN);
        NodeTable {
            ids: RwLock::new(ids),
            fallback: Mutex::new(HashMap::new()),
            by_alias: Mutex::new(HashMap::new()),
            next_fallback: AtomicU64::new(FALLBACK_BASE),
            dir_fds: Mutex::new(LruCache::new(cap)),
            has_upper: stack.has_upper,
            forgotten: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn get(&self, ino: u64) -> Result<Arc<Node>> {
        self.peek(ino).ok_or(Error::Stale)
    }

    pub fn peek(&self, ino: u64) -> Option<Arc<Node>> {
        self.ids.read().nodes.get(&ino).cloned()
    }

    /// The node that currently stands for the object whose derived id is `ino`: the id may
    /// have been redirected while a deleted object held it (see `remember`).
    pub fn peek_object(&self, ino: u64) -> Option<Arc<Node>> {
        let ids = self.ids.read();
        ids.nodes.get(&ids.current(ino)).cloned()
    }

    /// The node id of a real object (st_dev, st_ino) found in a layer on filesystem `fs_index`.
    pub fn id_for(&self, fs_index: u64, dev: u64, ino: u64) -> u64 {
        if ino < (1 << INO_BITS) && fs_index < (1 << (63 - INO_BITS)) {
            return (fs_index << INO_BITS) | ino;
        }
        let mut fb = self.fallback.lock();
        *fb.entry((dev, ino)).or_insert_with(|| {
            let id = self.next_fallback.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                dev,
                ino,
                id,
                "inode number too large for xino; using a table id"
            );
            id
        })
    }

    /// A node id for one name of a lower file with several links: kernel overlay (without
    /// `index`) gives each name its own inode, so a copy-up of one leaves the others alone.
    pub fn alias_id(&self, parent: u64, name: &CString) -> u64 {
        let mut m = self.by_alias.lock();
        *m.entry((parent, name.clone()))
            .or_insert_with(|| self.next_fallback.fetch_add(1, Ordering::Relaxed))
    }

    /// Let node `ino` stand for the object whose derived id is `derived` (a lower file with
    /// several links, whose name has its own node, after its copy-up): a later lookup of
    /// another name of the copy (a `link`) finds this node, so both names are one inode, as
    /// on kernel overlay. Nothing changes if a live node already stands for `derived`.
    pub fn adopt(&self, derived: u64, ino: u64) {
        let mut ids = self.ids.write();
        let cur = ids.current(derived);
        if cur == ino
            || ids
                .nodes
                .get(&cur)
                .is_some_and(|n| !n.dead.load(Ordering::Acquire))
        {
            return;
        }
        ids.redirect.insert(derived, ino);
    }

    /// Hand the kernel one more reference to node `ino`, creating it if it is new, and record
    /// that it is known as `alias` in the layers `layers`.
    pub fn remember(
        &self,
        (ino, st_ino): (u64, u64),
        ftype: u32,
        layers: Vec<LayerIdx>,
        alias: (u64, CString),
    ) -> Arc<Node> {
        let upper_present = self.has_upper;
        let derived = ino;
        let usable = |n: &Arc<Node>| n.ftype == ftype && !n.dead.load(Ordering::Acquire);
        let known = {
            let ids = self.ids.read();
            ids.nodes
                .get(&ids.current(derived))
                .filter(|n| usable(n))
                .cloned()
        };
        let node = match known {
            Some(n) => n,
            None => {
                let mut ids = self.ids.write();
                // Read again: another lookup may have made or redirected the node meanwhile.
                let ino = ids.current(derived);
                match ids.nodes.get(&ino) {
                    Some(n) if usable(n) => n.clone(),
                    Some(_) => {
                        // The kernel still holds a deleted object under this id and the
                        // filesystem reused its inode number: the newcomer gets a fresh id
                        // (still reporting its real st_ino).
                        let id = self.next_fallback.fetch_add(1, Ordering::Relaxed);
                        ids.redirect.insert(derived, id);
                        let n = Arc::new(Node::new(id, ftype, layers.clone(), None));
                        ids.nodes.insert(id, n.clone());
                        n
                    }
                    None => {
                        let n = Arc::new(Node::new(ino, ftype, layers.clone(), None));
                        ids.nodes.insert(ino, n.clone());
                        n
                    }
                }
            }
        };
        node.nlookup.fetch_add(1, Ordering::Relaxed);
        node.st_ino.store(st_ino, Ordering::Relaxed);
        let mut st = node.state.lock();
        // A lookup that raced with a copy-up may have seen the lower copy: never move a node
        // back down once it has an upper copy (only this daemon writes the upper).
        let had_upper = st.layers.first() == Some(&UPPER) && upper_present;
        if !had_upper || layers.first() == Some(&UPPER) {
            st.layers = layers;
        }
        if !st.aliases.contains(&alias) {
            st.aliases.push(alias);
        }
        drop(st);
        node
    }

    /// Drop `n` of the kernel's lookups of `ino`; the node, if that was the last.
    pub fn forget(&self, ino: u64, n: u64) -> Option<Arc<Node>> {
        if ino == ROOT {
            return None;
        }
        let mut ids = self.ids.write();
        let gone = match ids.nodes.get(&ino) {
            Some(node) => {
                let prev = node.nlookup.fetch_sub(
                    n.min(node.nlookup.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                prev <= n
            }
            None => false,
        };
        if !gone {
            return None;
        }
        let node = ids.nodes.remove(&ino);
        // The kernel can drop a million nodes at once (drop_caches, memory pressure), and a
        // HashMap never gives its buckets back by itself. Shrinking to twice the length
        // whenever it falls under a quarter of the capacity costs O(1) amortised per forget.
        let nodes = &mut ids.nodes;
        if nodes.capacity() > SHRINK_MIN && nodes.len() < nodes.capacity() / 4 {
            let keep = nodes.len() * 2;
            nodes.shrink_to(keep);
        }
        // A redirect lives as long as the node it leads to: once the deleted object that held
        // the derived id is forgotten, the id must still lead to the newcomer, or a lookup
        // would give the kernel a second inode for it (with its own cached size and pages).
        if !ids.redirect.is_empty() {
            ids.redirect.retain(|_, to| *to != ino);
        }
        drop(ids);
        // Only directories have cached fds; scanning the LRU for every file would make a
        // mass forget quadratic.
        if node.as_ref().is_some_and(|n| n.is_dir) {
            self.drop_dir_fds(ino);
        }
        self.forgotten.fetch_add(1, Ordering::Relaxed);
        node
    }

    /// How many nodes `forget` has removed so far (for returning memory to the OS in batches).
    pub fn forgotten(&self) -> std::sync::Weak<AtomicU64> {
        Arc::downgrade(&self.forgotten)
    }

    /// Forget cached directory fds of `ino` (it was removed, or forgotten by the kernel).
    pub fn drop_dir_fds(&self, ino: u64) {
        let mut cache = self.dir_fds.lock();
        let keys: Vec<_> = cache
            .iter()
            .map(|(k, _)| *k)
            .filter(|(i, _)| *i == ino)
            .collect();
        for k in keys {
            cache.pop(&k);
        }
    }

    pub fn cache_dir_fd(&self, ino: u64, layer: LayerIdx, fd: Arc<OwnedFd>) {
        self.dir_fds.lock().put((ino, layer), fd);
    }

    /// The directory `node` in layer `layer`, opened from the nearest cached ancestor downwards.
    pub fn dir_fd(&self, stack: &LayerStack, node: &Node, layer: LayerIdx) -> Result<Arc<OwnedFd>> {
        if node.ino == ROOT {
            return Ok(stack.layers[layer].root.clone());
        }
        if let Some(fd) = self.dir_fds.lock().get(&(node.ino, layer)) {
            return Ok(fd.clone());
        }
        // Walk up to a cached ancestor (or the root), then open back down: iterative, so trees
        // deeper than PATH_MAX cost no recursion. A directory whose copy in a layer above
        // this one carries a redirect is found where it says: under another name in its
        // parent, or from the layer's root.
        let mut chain: Vec<(u64, CString)> = Vec::new();
        let mut cur = node.ino;
        let mut base: Arc<OwnedFd> = loop {
            if cur == ROOT {
                break stack.layers[layer].root.clone();
            }
            if cur != node.ino
                && let Some(fd) = self.dir_fds.lock().get(&(cur, layer))
            {
                break fd.clone();
            }
            let n = self.get(cur)?;
            let redirect = n
                .state
                .lock()
                .lower
                .as_ref()
                .and_then(|r| r.for_layer(layer).cloned());
            match redirect {
                Some(LowerPath::Abs(comps)) => {
                    let mut fd = stack.layers[layer].root.clone();
                    for c in &comps {
                        fd = Arc::new(sys::open_dir_path(fd.as_fd(), c)?);
                    }
                    self.cache_dir_fd(cur, layer, fd.clone());
                    break fd;
                }
                Some(LowerPath::Name(name)) => {
                    chain.push((cur, name));
                    cur = n.alias()?.0;
                }
                None => {
                    let (parent, name) = n.alias()?;
                    chain.push((cur, name));
                    cur = parent;
                }
            }
        };
        for (ino, name) in chain.into_iter().rev() {
            let fd = Arc::new(sys::open_dir_path(base.as_fd(), &name)?);
            self.cache_dir_fd(ino, layer, fd.clone());
            base = fd;
        }
        Ok(base)
    }

    pub fn len(&self) -> usize {
        self.ids.read().nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.read().nodes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> NodeTable {
        let stack = LayerStack {
            layers: Vec::new(),
            has_upper: true,
            work: None,
            lowers_sealed: false,
        };
        NodeTable::new(&stack, 16)
    }

    /// A deleted file the kernel still holds keeps its id; a new file that got its inode
    /// number gets a fresh id, and keeps getting it after the deleted one is forgotten (else
    /// the kernel would be handed two inodes for one file).
    #[test]
    fn a_reused_inode_number_keeps_its_fresh_id_after_the_old_node_is_forgotten() {
        let t = table();
        let derived = 42;
        let file = libc::S_IFREG;
        let old = t.remember((derived, derived), file, vec![UPPER], (ROOT, c"a".into()));
        assert_eq!(old.ino, derived);
        old.dead.store(true, Ordering::Release);
        let new = t.remember((derived, derived), file, vec![UPPER], (ROOT, c"b".into()));
        assert_ne!(new.ino, derived, "the newcomer must not take the held id");
        t.forget(derived, 1);
        let again = t.remember((derived, derived), file, vec![UPPER], (ROOT, c"b".into()));
        assert_eq!(again.ino, new.ino, "a later lookup finds the same node");
        t.forget(new.ino, 2);
        assert!(t.peek(new.ino).is_none());
        let fresh = t.remember((derived, derived), file, vec![UPPER], (ROOT, c"c".into()));
        assert_eq!(
            fresh.ino, derived,
            "with both gone the derived id is free again"
        );
    }
}
