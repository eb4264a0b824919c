//! The union filesystem core: one `Result`-returning method per operation, on node ids and
//! names. It knows nothing of fuser's reply types; `fuse/` translates. The rules are kernel
//! overlayfs's (Documentation/filesystems/overlayfs.rst); deviations are in docs/semantics.md.
//!
//! Lock order: a node's `copy_lock`, then its parent's `dir_lock`; two `dir_lock`s in node id
//! order. Operations copy up what they need before taking a `dir_lock`. Every other lock (the
//! node table's, `Node::state`, handles) is a leaf, and every lock is released before anything
//! could touch the mountpoint.
//!
//! This file holds the shared state and helpers; each family of operations is an `impl Union`
//! block in its own file.

mod attr;
mod copy;
mod create;
mod data;
mod dir;
mod remove;
mod rename;
mod xattr;

pub use data::{Backing, NodeFh, mode_has_privileges, open_writes, read_at};

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::handle::Handles;
use crate::idmap::IdMapping;
use crate::inode::{Node, NodeTable};
use crate::layer::{LayerIdx, LayerStack};
use crate::lookup::{self, Hit, LowerPath};
use crate::override_stat::{Override, apply_override, read_override_at};
use crate::sys::{self, Stat, Time};
use crate::whiteout::Format;

/// Behaviour switches fixed at mount time.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// fsync a copied-up file before it is linked into the upper (off with `volatile`).
    pub fsync: bool,
    /// Write overlay metadata as `user.overlay.*` (kernel overlay's `userxattr`).
    pub userxattr: bool,
    /// How owners show through the mount (fuse-overlayfs's uidmapping/squash options).
    pub ids: IdMapping,
    /// Directories report st_nlink 1 (fuse-overlayfs's `static_nlink`).
    pub static_nlink: bool,
    /// Also honour AUFS-style `.wh.` whiteout files in the layers.
    pub aufs_whiteouts: bool,
    /// Kernel overlay's `redirect_dir`: whether renaming a directory with lower copies
    /// records a redirect, and whether lookups follow redirects.
    pub redirect_dir: RedirectDir,
}

/// `redirect_dir=`: `on` creates and follows redirects; `follow` only follows them;
/// `nofollow` neither, and a lookup that meets one answers EPERM (kernel overlay's rule);
/// `off` is `follow`, as on a kernel built with `redirect_always_follow` (the default).
/// The library default creates none; the command lines default to `on` (see `config`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RedirectDir {
    On,
    #[default]
    Follow,
    NoFollow,
}

impl RedirectDir {
    pub fn parse(v: &str) -> Option<RedirectDir> {
        match v {
            "on" => Some(RedirectDir::On),
            "follow" | "off" => Some(RedirectDir::Follow),
            "nofollow" => Some(RedirectDir::NoFollow),
            _ => None,
        }
    }
}

/// Where the lookup of a merged directory's copies stands: the path the next layers are
/// looked up at, and the redirects met so far (see `lookup::Redirects`).
struct Walk {
    at: LowerPath,
    redirects: Vec<(LayerIdx, LowerPath)>,
}

impl Walk {
    /// The copy in layer `l` carries redirect `path`.
    fn redirect(&mut self, l: LayerIdx, path: LowerPath) {
        self.at = self.at.then(path);
        self.redirects.push((l, self.at.clone()));
    }

    /// A directory passed in layer `l` on the way along the absolute path, `post` components
    /// above its end, carries redirect `path`: it replaces the path up to that directory.
    fn redirect_within(&mut self, l: LayerIdx, post: usize, path: LowerPath) {
        let LowerPath::Abs(comps) = &self.at else {
            return;
        };
        let split = comps.len().saturating_sub(post);
        let (head, tail) = comps.split_at(split);
        let mut new = match LowerPath::Abs(head.to_vec()).then(path) {
            LowerPath::Abs(c) => c,
            LowerPath::Name(n) => vec![n],
        };
        new.extend_from_slice(tail);
        self.at = LowerPath::Abs(new);
        self.redirects.push((l, self.at.clone()));
    }
}

/// One layer's answer for a merged directory's copy.
enum Step {
    Absent,
    /// A whiteout or a non-directory: the merge ends.
    Stop,
    /// A directory: its parent directory and its stat.
    Dir(Arc<OwnedFd>, Stat),
}

/// Who asks: the caller's ids from the FUSE request, used as the owner of new objects.
#[derive(Clone, Copy, Debug)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
}

/// Attribute changes of one SETATTR; `None` leaves a field alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<Time>,
    pub mtime: Option<Time>,
    /// A truncate by a caller without CAP_FSETID: drop setuid/setgid and capabilities.
    pub kill_priv: bool,
}

pub struct Union {
    pub stack: LayerStack,
    pub nodes: NodeTable,
    handles: Handles,
    fmt: Format,
    opts: Options,
    /// The daemon may chown (root in its namespace): new objects get the caller's ids.
    privileged: bool,
    /// The daemon's own ids: what a new object in the upper has before any chown.
    euid: u32,
    egid: u32,
    /// Write-only handles are opened read-write: with passthrough (root) so the fd can be the
    /// node's backing file too (one open instead of two per create); under the writeback cache
    /// because the kernel reads through them to fill the rest of a page it writes part of.
    widen_write_only: AtomicBool,
    /// The kernel opens regular files without asking (`set_kernel_opens`).
    kernel_opens: AtomicBool,
    /// Nodes holding a handle of their own (`node_handle`), at most `OWN_HANDLES`.
    own_handles: AtomicUsize,
    /// The host runs SELinux; if not, `security.selinux` of an object without one answers
    /// EOPNOTSUPP instead of ENODATA (docs/semantics.md, D16).
    selinux: bool,
    tmp_seq: AtomicU64,
    /// Directory listings between READDIRs when the kernel opens directories itself.
    listings: crate::listings::Listings,
}

/// ENOTDIR unless `node` is a directory.
fn require_dir(node: &Node) -> Result<()> {
    if node.is_dir {
        Ok(())
    } else {
        Err(Error::NotDir)
    }
}

fn is_dir_mode(mode: u32) -> bool {
    mode & libc::S_IFMT == libc::S_IFDIR
}

impl Union {
    pub fn new(stack: LayerStack, opts: Options, fd_cache: usize) -> Union {
        let nodes = NodeTable::new(&stack, fd_cache);
        Union {
            nodes,
            stack,
            handles: Handles::default(),
            fmt: Format::new(opts.userxattr, opts.aufs_whiteouts),
            opts,
            privileged: sys::geteuid() == 0,
            euid: sys::geteuid(),
            egid: sys::getegid(),
            widen_write_only: AtomicBool::new(false),
            kernel_opens: AtomicBool::new(false),
            own_handles: AtomicUsize::new(0),
            selinux: xattr::host_has_selinux(),
            tmp_seq: AtomicU64::new(0),
            listings: Default::default(),
        }
    }

    // ----- helpers -------------------------------------------------------------------------

    /// Would copying `ino` up copy file data (a regular file not in the upper yet)? Such
    /// requests go to a worker thread (see `pool`).
    pub fn copy_up_is_slow(&self, ino: u64) -> bool {
        self.nodes
            .peek(ino)
            .is_some_and(|n| n.ftype == libc::S_IFREG && !self.has_upper(&n))
    }

    /// Is `ino` a regular file whose last name was removed (still open, or held: see `at`)?
    pub fn is_removed_file(&self, ino: u64) -> bool {
        self.nodes
            .peek(ino)
            .is_some_and(|n| n.ftype == libc::S_IFREG && n.is_removed())
    }

    /// Does directory `ino` have lower copies, so that an operation on its entries may copy a
    /// regular file up (a rename of a lower file)?
    pub fn dir_has_lowers(&self, ino: u64) -> bool {
        self.nodes
            .peek(ino)
            .is_some_and(|n| n.layers().iter().any(|l| !self.stack.is_upper(*l)))
    }

    /// Called once the kernel agreed to passthrough (as root) or to the writeback cache (see
    /// `widen_write_only`).
    pub fn set_widen_write_only(&self) {
        self.widen_write_only.store(true, Ordering::Relaxed);
    }

    /// The kernel opens regular files itself (no OPEN or RELEASE): any of them may be open
    /// without a handle here, and requests on them come through `node_handle`.
    pub fn set_kernel_opens(&self) {
        self.kernel_opens.store(true, Ordering::Relaxed);
    }

    fn upper(&self) -> Result<LayerIdx> {
        self.stack.upper_idx().ok_or(Error::ReadOnly)
    }

    fn work(&self) -> Result<BorrowedFd<'_>> {
        self.stack
            .work
            .as_ref()
            .map(|w| w.as_fd())
            .ok_or(Error::ReadOnly)
    }

    fn tmp_name(&self) -> CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#{:x}.{n}", std::process::id())).unwrap_or_default()
    }

    fn dir_fd(&self, node: &Node, layer: LayerIdx) -> Result<Arc<OwnedFd>> {
        self.nodes.dir_fd(&self.stack, node, layer)
    }

    fn has_upper(&self, node: &Node) -> bool {
        self.stack.is_upper(node.top())
    }

    /// Where a node's top copy is, as (directory fd, name) for the `*at` calls: a directory is
    /// (itself, "."), anything else (its parent's copy in the same layer, its name).
    ///
    /// A node whose last name was removed is its kept O_PATH fd with an empty name: fstat,
    /// reads and xattrs of an open but removed object work on every local filesystem and on
    /// kernel overlay. Every change first copies up, which for a node that has no name fails
    /// (EEXIST) or makes an unnamed upper copy (`copy_up_removed`), so a lower object is never
    /// changed through one.
    fn at(&self, node: &Node) -> Result<(Arc<OwnedFd>, CString)> {
        let top = node.top();
        let found = match node.is_dir {
            true => self.dir_fd(node, top).map(|fd| (fd, c".".to_owned())),
            false => node.alias().and_then(|(parent, name)| {
                let parent = self.nodes.get(parent)?;
                Ok((self.dir_fd(&parent, top)?, name))
            }),
        };
        match found {
            Err(e) if node.is_removed() => {
                let held = node.removed.lock().clone();
                held.map(|fd| (fd, c"".to_owned())).ok_or(e)
            }
            r => r,
        }
    }

    /// An O_PATH fd on `node`'s top copy, taken before its name `parent/name` is removed, when
    /// that is its last known name (for `Node::removed`): always for a directory (it may be a
    /// cwd, and its fd is usually cached), for a file only while it is open (an unlink storm
    /// pays no extra open), which for a regular file the kernel opens itself means always.
    fn hold_before_remove(&self, node: &Node, parent: u64, name: &CStr) -> Option<Arc<OwnedFd>> {
        let maybe_open = node.open_files.load(Ordering::Relaxed) > 0
            || (node.ftype == libc::S_IFREG && self.kernel_opens.load(Ordering::Relaxed));
        if !node.is_dir && !maybe_open {
            return None;
        }
        let only = {
            let st = node.state.lock();
            st.aliases.len() == 1 && st.aliases[0].0 == parent && st.aliases[0].1.as_c_str() == name
        };
        if !only {
            return None;
        }
        let (fd, name) = self.at(node).ok()?;
        if node.is_dir {
            return Some(fd);
        }
        let flags = libc::O_PATH | libc::O_NOFOLLOW;
        sys::openat(fd.as_fd(), &name, flags, 0).ok().map(Arc::new)
    }

    fn resolve(&self, parent: &Node, name: &CStr) -> Result<Hit> {
        self.resolve_below(parent, name, None)
    }

    /// `resolve`, told that no lower above `top` holds `name` (see `lookup_listed`).
    fn resolve_below(&self, parent: &Node, name: &CStr, top: Option<LayerIdx>) -> Result<Hit> {
        let layers = parent.layers();
        let index = self.dir_index(parent, &layers)?;
        let absent = |l: LayerIdx| {
            !self.stack.is_upper(l)
                && (top.is_some_and(|t| l < t)
                    || index.as_ref().is_some_and(|ix| !ix.may_have(name, l)))
        };
        let hit = lookup::resolve(&self.fmt, &layers, |l| self.dir_fd(parent, l), absent, name)?;
        match hit {
            Hit::Found(f) if f.is_dir && !f.opaque => self.follow_redirects(parent, name, f),
            hit => Ok(hit),
        }
    }

    /// Any copy of a merged directory `parent/name` (upper or lower) that is not opaque and
    /// has layers below it may carry a redirect: the copies in the layers below it are then
    /// those at the redirect, not under `name`, and a copy found there may redirect the
    /// layers below it in turn (kernel overlay's `ovl_lookup`). `f` is the lookup by name.
    /// Costs one getxattr per copy with layers below it.
    fn follow_redirects(&self, parent: &Node, name: &CStr, mut f: lookup::Found) -> Result<Hit> {
        let bottom = self.stack.layers.len() - 1;
        let mut walk = Walk {
            at: LowerPath::Name(name.to_owned()),
            redirects: Vec::new(),
        };
        for i in 0..f.layers.len() {
            let l = f.layers[i];
            if l >= bottom {
                break;
            }
            let pfd = self.dir_fd(parent, l)?;
            let Some(raw) = self.fmt.redirect(pfd.as_fd(), name)? else {
                continue;
            };
            // An opaque copy ends the merge before its redirect is read (`ovl_lookup_single`);
            // only the last copy listed can be one (the top one was checked by the caller).
            if i > 0 && i + 1 == f.layers.len() && self.fmt.is_opaque(pfd.as_fd(), name) {
                break;
            }
            let path = self.parse_redirect(name, &raw)?;
            walk.redirect(l, path);
            f.layers.truncate(i + 1);
            f.stats.truncate(i + 1);
            self.copies_below(parent, l, &mut walk, &mut f)?;
            break;
        }
        if !walk.redirects.is_empty() {
            f.redirect = Some(lookup::Redirects(walk.redirects));
        }
        Ok(Hit::Found(f))
    }

    /// A redirect's value, unless following it is refused or it is malformed.
    fn parse_redirect(&self, name: &CStr, raw: &[u8]) -> Result<LowerPath> {
        if self.opts.redirect_dir == RedirectDir::NoFollow {
            tracing::warn!(
                ?name,
                "refusing to follow a redirect (redirect_dir=nofollow)"
            );
            return Err(Error::NotPermitted);
        }
        LowerPath::parse(raw).ok_or_else(|| {
            tracing::warn!(?name, value = %String::from_utf8_lossy(raw), "invalid redirect");
            // As kernel overlay (*observed*): a `.` or `..` component fails its lookup
            // (EACCES), anything else malformed is EINVAL.
            let dots = raw.split(|b| *b == b'/').any(|c| c == b"." || c == b"..");
            if dots {
                Error::Sys(libc::EACCES)
            } else {
                Error::Invalid
            }
        })
    }

    /// The copies of `parent`'s child below layer `from`, now at `walk.at`, appended to `f`:
    /// kernel overlay's lower-layer loop. A relative path is looked up in the parent's copies,
    /// an absolute one beneath every layer's root, one component at a time, following no
    /// symlink; a whiteout, a non-directory or an opaque copy ends the merge, and a copy's
    /// redirect applies to the layers below it.
    fn copies_below(
        &self,
        parent: &Node,
        from: LayerIdx,
        walk: &mut Walk,
        f: &mut lookup::Found,
    ) -> Result<()> {
        let bottom = self.stack.layers.len() - 1;
        let parent_layers = parent.layers();
        for x in from + 1..=bottom {
            let (step, mut stop) = match &walk.at {
                LowerPath::Name(n) if parent_layers.contains(&x) => {
                    let n = n.clone();
                    (self.step(self.dir_fd(parent, x)?, &n)?, false)
                }
                LowerPath::Name(_) => continue,
                LowerPath::Abs(_) => self.walk_abs(x, x < bottom, walk)?,
            };
            let (pfd, st) = match step {
                Step::Absent if stop => break,
                Step::Absent => continue,
                Step::Stop => break,
                Step::Dir(pfd, st) => (pfd, st),
            };
            f.layers.push(x);
            f.stats.push(st);
            let leaf = walk.at.leaf().to_owned();
            if x == bottom || self.fmt.is_opaque(pfd.as_fd(), &leaf) {
                break;
            }
            if let Some(raw) = self.fmt.redirect(pfd.as_fd(), &leaf)? {
                let path = self.parse_redirect(&leaf, &raw)?;
                // An absolute redirect goes on below an opaque directory passed on the way
                // (`ovl_check_redirect` resets `stop`).
                stop &= !matches!(path, LowerPath::Abs(_));
                walk.redirect(x, path);
            }
            if stop {
                break;
            }
        }
        Ok(())
    }

    /// What `dir` holds under `name`, for the merge of a directory.
    fn step(&self, dir: Arc<OwnedFd>, name: &CStr) -> Result<Step> {
        Ok(match sys::fstatat_opt(dir.as_fd(), name)? {
            None if self.fmt.has_aufs_whiteout(dir.as_fd(), name)? => Step::Stop,
            None => Step::Absent,
            Some(st) if is_dir_mode(st.st_mode) => Step::Dir(dir, st),
            Some(_) => Step::Stop,
        })
    }

    /// Walk the absolute `walk.at` beneath layer `x`'s root. As in kernel overlay's
    /// `ovl_lookup_layer`, each directory passed on the way may be opaque (the merge ends
    /// after this layer: the bool, unless an absolute redirect follows) or carry a redirect
    /// (`check`: there are layers below), which changes the path for the layers below this
    /// one, not the walk in this one.
    fn walk_abs(&self, x: LayerIdx, check: bool, walk: &mut Walk) -> Result<(Step, bool)> {
        let LowerPath::Abs(comps) = walk.at.clone() else {
            return Ok((Step::Absent, false));
        };
        let mut fd = self.stack.layers[x].root.clone();
        let mut stop = false;
        for (k, c) in comps.iter().enumerate() {
            let step = self.step(fd.clone(), c)?;
            if k + 1 == comps.len() {
                return Ok((step, stop));
            }
            let Step::Dir(..) = step else {
                return Ok((step, stop));
            };
            let sub = Arc::new(sys::open_dir_path(fd.as_fd(), c)?);
            if check {
                if self.fmt.is_opaque(fd.as_fd(), c) {
                    stop = true;
                } else if let Some(raw) = self.fmt.redirect(fd.as_fd(), c)? {
                    let path = self.parse_redirect(c, &raw)?;
                    stop &= !matches!(path, LowerPath::Abs(_));
                    walk.redirect_within(x, comps.len() - k - 1, path);
                }
            }
            fd = sub;
        }
        Ok((Step::Absent, stop))
    }

    /// The lower-name index of a directory with many lower copies, built on first use.
    fn dir_index(
        &self,
        dir: &Node,
        layers: &[LayerIdx],
    ) -> Result<Option<Arc<crate::dirindex::DirIndex>>> {
        // Every lookup passes here: count before allocating anything.
        let is_lower = |l: &LayerIdx| !self.stack.is_upper(*l);
        if layers.iter().filter(|l| is_lower(l)).count() < crate::dirindex::MIN_LOWERS {
            return Ok(None);
        }
        let lowers: Vec<LayerIdx> = layers.iter().copied().filter(is_lower).collect();
        if let Some(ix) = &dir.state.lock().index {
            return Ok(Some(ix.clone()));
        }
        let ix = Arc::new(crate::dirindex::DirIndex::build(
            &lowers,
            self.fmt.aufs,
            |l| self.dir_fd(dir, l),
        )?);
        dir.state.lock().index = Some(ix.clone());
        Ok(Some(ix))
    }

    fn lower_positive(&self, parent: &Node, name: &CStr) -> Result<bool> {
        let layers = parent.layers();
        lookup::lower_positive(
            &self.fmt,
            &layers,
            self.stack.upper_idx(),
            |l| self.dir_fd(parent, l),
            name,
        )
    }

    /// The node id and st_ino of an object found by lookup. See `inode` for the scheme.
    fn id_of(
        &self,
        parent: &Node,
        parent_fd: BorrowedFd<'_>,
        name: &CStr,
        found: &lookup::Found,
    ) -> (u64, u64) {
        // A merged directory takes the id of its topmost lower copy; anything else its top copy.
        let pos = if found.is_dir {
            found
                .layers
                .iter()
                .position(|l| !self.stack.is_upper(*l))
                .unwrap_or(0)
        } else {
            0
        };
        let (layer, st) = (found.layers[pos], &found.stats[pos]);
        let own = self
            .nodes
            .id_for(self.stack.layers[layer].fs_index, st.st_dev, st.st_ino);
        if found.is_dir {
            return (own, own);
        }
        if !self.stack.is_upper(layer) {
            if st.st_nlink > 1 {
                return (self.nodes.alias_id(parent.ino, &name.to_owned()), own);
            }
            return (own, own);
        }
        // A live node already stands for this very upper object (an unlink after readdirplus,
        // a lookup after the entry timed out): its origin was weighed when it was made, and
        // reading the xattr again (a getxattr through /proc) would change nothing.
        if let Some(n) = self.nodes.peek_object(own)
            && !n.dead.load(Ordering::Acquire)
            && n.ftype == st.st_mode & libc::S_IFMT
        {
            return (own, own);
        }
        // A copied-up file keeps the id of its origin, unless that id is live for an object
        // that is still in a lower.
        match self.fmt.origin(parent_fd, name) {
            Some(origin) => match self.nodes.peek(origin) {
                // (Not a node parted from its name: `part_readers`.)
                Some(n) if !self.has_upper(&n) && !n.dead.load(Ordering::Acquire) => (own, own),
                _ => (origin, origin),
            },
            None => (own, own),
        }
    }

    /// The override_stat xattr that holds this object's apparent owner and mode, if its top
    /// layer keeps one (fuse-overlayfs's `xattr_permissions`; directories and files only).
    fn override_xattr(&self, node: &Node, mode: u32) -> Option<&CStr> {
        self.override_xattr_in(node.top(), mode)
    }

    fn override_xattr_in(&self, layer: LayerIdx, mode: u32) -> Option<&CStr> {
        let kind = mode & libc::S_IFMT;
        if kind != libc::S_IFDIR && kind != libc::S_IFREG {
            return None;
        }
        self.stack.layers[layer].override_stat.as_deref()
    }

    /// What `node`'s override_stat xattr `xattr` records, if anything.
    fn read_override(&self, node: &Node, xattr: &CStr) -> Option<Override> {
        let (fd, name) = self.at(node).ok()?;
        read_override_at(fd.as_fd(), &name, xattr)
    }

    /// `st` of `name` in `dir` (a directory of `layer`) as the layer's override_stat shows it:
    /// owner, mode and, for a regular file standing in for a special file, its type and rdev.
    fn overridden_at(
        &self,
        layer: LayerIdx,
        dir: BorrowedFd<'_>,
        name: &CStr,
        mut st: Stat,
    ) -> Stat {
        if let Some(x) = self.override_xattr_in(layer, st.st_mode)
            && let Some(o) = read_override_at(dir, name, x)
        {
            apply_override(&mut st, &o);
        }
        st
    }

    fn attr_of(&self, node: &Node, mut st: Stat) -> Stat {
        if let Some(x) = self.override_xattr(node, st.st_mode)
            && let Some(o) = self.read_override(node, x)
        {
            apply_override(&mut st, &o);
        }
        self.finish_attr(node, st)
    }

    /// The rest of what `stat` shows of `node`, once its override (if any) is applied.
    fn finish_attr(&self, node: &Node, mut st: Stat) -> Stat {
        st.st_ino = node.st_ino.load(Ordering::Relaxed);
        // A merged directory's link count is not that of any one copy: report 1 ("unknown"),
        // as kernel overlay does, so tools like find don't trust it.
        if node.is_dir && (self.opts.static_nlink || node.state.lock().layers.len() > 1) {
            st.st_nlink = 1;
        }
        // A removed directory held open (or as a cwd): an upper-only one reports 0 (its kept
        // fd's count), one with a lower copy 1, as before (*observed* on kernel overlay); a
        // merged one got 1 above.
        if node.is_dir && node.is_removed() && !self.stack.is_upper(node.top()) {
            st.st_nlink = 1;
        }
        if !self.opts.ids.is_identity() {
            (st.st_uid, st.st_gid) = self.opts.ids.show(st.st_uid, st.st_gid);
        }
        st
    }

    fn stat_node(&self, node: &Node) -> Result<Stat> {
        let (fd, name) = self.at(node)?;
        let st = sys::fstatat(fd.as_fd(), &name)?;
        let st = self.finish_attr(node, self.overridden_at(node.top(), fd.as_fd(), &name, st));
        // The name was removed (and maybe reused) under a concurrent stat: the kernel must
        // not see the node change type (it would mark the inode bad, EIO). The type is the
        // shown one: a device standing in as a regular file keeps its device type.
        if st.st_mode & libc::S_IFMT != node.ftype {
            return Err(Error::NotFound);
        }
        Ok(st)
    }

    /// The node the kernel knows for `parent/name`, if it is in the table.
    fn child_node(&self, parent: &Node, name: &CStr, found: &lookup::Found) -> Option<Arc<Node>> {
        let pfd = self.dir_fd(parent, found.top()).ok()?;
        let (id, _) = self.id_of(parent, pfd.as_fd(), name, found);
        self.nodes.peek_object(id)
    }

    // ----- filesystem ----------------------------------------------------------------------------

    /// The top layer's filesystem: the upper's where new data goes, else the first lower's.
    pub fn statfs(&self) -> Result<libc::statvfs> {
        sys::fstatfs(self.stack.root(0))
    }
}
