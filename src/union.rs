//! The union filesystem core: one `Result`-returning method per operation, on node ids and
//! names. It knows nothing of fuser's reply types; `fuse.rs` translates. The rules are kernel
//! overlayfs's (Documentation/filesystems/overlayfs.rst); deviations are in docs/semantics.md.
//!
//! Lock order: a node's `copy_lock` before any `dir_lock`; two `dir_lock`s in node id order.
//! Operations copy up what they need before taking a `dir_lock`, and every lock is released
//! before anything could touch the mountpoint.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::MutexGuard;

use crate::error::{Error, Result};
use crate::handle::{DirEntry, DirHandle, FileHandle, Handle, Handles};
use crate::idmap::{self, IdMapping};
use crate::inode::{Node, NodeTable, ROOT};
use crate::layer::{self, LayerIdx, LayerStack};
use crate::lookup::{self, Hit};
use crate::readdir;
use crate::sys::{self, Stat, Time};
use crate::whiteout::{self, Format};

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

/// What a create-like operation makes.
enum NewObject<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a CStr },
    Link { dir: Arc<OwnedFd>, name: CString },
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
    /// Passthrough is on: a write-only handle's file is opened read-write, so it can be the
    /// node's backing file too (one open instead of two per create).
    share_backing: AtomicBool,
    tmp_seq: AtomicU64,
}

fn not_dir(node: &Node) -> Result<()> {
    if node.is_dir {
        Ok(())
    } else {
        Err(Error::Sys(libc::ENOTDIR))
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
            share_backing: AtomicBool::new(false),
            tmp_seq: AtomicU64::new(0),
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

    /// Does directory `ino` have lower copies, so that an operation on its entries may copy a
    /// regular file up (a rename of a lower file)?
    pub fn dir_has_lowers(&self, ino: u64) -> bool {
        self.nodes
            .peek(ino)
            .is_some_and(|n| n.layers().iter().any(|l| !self.stack.is_upper(*l)))
    }

    /// Called once the kernel agreed to passthrough (see `share_backing`).
    pub fn set_share_backing(&self) {
        self.share_backing.store(self.privileged, Ordering::Relaxed);
    }

    /// The flags to open a handle's real file with: the caller's, widened from write-only to
    /// read-write when that fd may also back passthrough.
    fn handle_flags(&self, flags: i32) -> i32 {
        let flags = open_flags(flags);
        if flags & libc::O_ACCMODE == libc::O_WRONLY && self.share_backing.load(Ordering::Relaxed) {
            (flags & !libc::O_ACCMODE) | libc::O_RDWR
        } else {
            flags
        }
    }

    /// Open a handle's real file with `handle_flags`, or with the caller's own flags where the
    /// wider open is refused (root in a user namespace without DAC override on that file).
    fn open_handle_fd(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        flags: i32,
        extra: i32,
        mode: u32,
    ) -> Result<(OwnedFd, i32)> {
        let wide = self.handle_flags(flags);
        match sys::openat(dir, name, wide | extra, mode) {
            Err(e) if wide != open_flags(flags) && e.is(libc::EACCES) => {
                let own = open_flags(flags);
                Ok((sys::openat(dir, name, own | extra, mode)?, own))
            }
            r => Ok((r?, wide)),
        }
    }

    fn upper(&self) -> Result<LayerIdx> {
        self.stack.upper_idx().ok_or(Error::Sys(libc::EROFS))
    }

    fn work(&self) -> Result<BorrowedFd<'_>> {
        self.stack
            .work
            .as_ref()
            .map(|w| w.as_fd())
            .ok_or(Error::Sys(libc::EROFS))
    }

    fn tmp_name(&self) -> CString {
        let n = self.tmp_seq.fetch_add(1, Ordering::Relaxed);
        CString::new(format!("#{:x}.{n}", std::process::id())).unwrap_or_default()
    }

    fn dir_fd(&self, node: &Node, layer: LayerIdx) -> Result<Arc<OwnedFd>> {
        self.nodes.dir_fd(&self.stack, node, layer)
    }

    fn has_upper(&self, node: &Node) -> bool {
        self.stack.has_upper && node.top() == 0
    }

    /// Where a node's top copy is, as (directory fd, name) for the `*at` calls: a directory is
    /// (itself, "."), anything else (its parent's copy in the same layer, its name).
    fn at(&self, node: &Node) -> Result<(Arc<OwnedFd>, CString)> {
        let top = node.top();
        if node.is_dir {
            return Ok((self.dir_fd(node, top)?, c".".to_owned()));
        }
        let (parent, name) = match node.alias() {
            Ok(a) => a,
            // Unlinked while open: act on the open file itself (fstat of such a file works
            // on every local filesystem and on kernel overlay).
            Err(e) => {
                return node
                    .open_fd
                    .lock()
                    .upgrade()
                    .map(|fd| (fd, c"".to_owned()))
                    .ok_or(e);
            }
        };
        let parent = self.nodes.get(parent)?;
        Ok((self.dir_fd(&parent, top)?, name))
    }

    fn resolve(&self, parent: &Node, name: &CStr) -> Result<Hit> {
        let layers = parent.layers();
        let index = self.dir_index(parent, &layers)?;
        let absent = |l: LayerIdx| {
            !self.stack.is_upper(l) && index.as_ref().is_some_and(|ix| !ix.may_have(name, l))
        };
        lookup::resolve(&self.fmt, &layers, |l| self.dir_fd(parent, l), absent, name)
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
                Some(n) if !self.has_upper(&n) => (own, own),
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
            return Err(Error::Sys(libc::ENOENT));
        }
        Ok(st)
    }

    /// Owner and mode of a new object in `parent_fd` (an upper directory): the caller's ids,
    /// with BSD group semantics when the parent is setgid, as ext4 does.
    fn new_owner(
        &self,
        parent_fd: BorrowedFd<'_>,
        creds: Creds,
        mode: u32,
    ) -> Result<(u32, u32, u32)> {
        let pst = sys::fstat(parent_fd)?;
        if pst.st_mode & libc::S_ISGID != 0 {
            let mode = if is_dir_mode(mode) {
                mode | libc::S_ISGID
            } else {
                mode
            };
            return Ok((
                creds.uid,
                self.opts.ids.show(pst.st_uid, pst.st_gid).1,
                mode,
            ));
        }
        Ok((creds.uid, creds.gid, mode))
    }

    fn chown_new(&self, dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> Result<()> {
        // Caller ids are the mount's (container) ids; the layer stores mapped ones.
        let uid = self.opts.ids.store_uid(uid).unwrap_or(self.euid);
        let gid = self.opts.ids.store_gid(gid).unwrap_or(self.egid);
        if self.privileged && (uid != self.euid || gid != self.egid) {
            sys::fchownat(dir, name, uid, gid)?;
        }
        Ok(())
    }

    // ----- copy-up ---------------------------------------------------------------------------

    /// Make sure `node` has an upper copy, copying up its missing ancestors first (top-down).
    pub(crate) fn copy_up(&self, node: &Arc<Node>) -> Result<()> {
        self.upper()?;
        if node.ino == ROOT || self.has_upper(node) {
            return Ok(());
        }
        let mut chain = vec![node.clone()];
        loop {
            let (parent, _) = chain[chain.len() - 1].alias()?;
            let parent = self.nodes.get(parent)?;
            if parent.ino == ROOT || self.has_upper(&parent) {
                break;
            }
            chain.push(parent);
        }
        for n in chain.iter().rev() {
            self.copy_up_one(n)?;
        }
        Ok(())
    }

    /// Copy one object whose parent already has an upper copy: build it in the work dir with
    /// everything but its name, then rename it into place, so a crash leaves the old view or
    /// the whole copy and never a partial file.
    fn copy_up_one(&self, node: &Arc<Node>) -> Result<()> {
        let _copying = node.copy_lock.lock();
        if self.has_upper(node) {
            return Ok(());
        }
        let (parent_ino, name) = node.alias()?;
        let parent = self.nodes.get(parent_ino)?;
        let src_dir = self.dir_fd(&parent, node.top())?;
        let st = sys::fstatat(src_dir.as_fd(), &name)?;
        let work = self.work()?;
        let tmp = self.tmp_name();
        let built = crate::copyup::build_copy(
            &self.fmt,
            src_dir.as_fd(),
            &name,
            &st,
            work,
            &tmp,
            crate::copyup::CopyOpts {
                fsync: self.opts.fsync,
                chown: self.privileged,
                // A lower file with several links is split by its copy-up, as in kernel
                // overlay: the copy gets an inode number of its own, recorded nowhere.
                origin: (!node.is_dir && st.st_nlink == 1).then_some(node.ino),
            },
        );
        let result = built.and_then(|()| {
            let upper_parent = self.dir_fd(&parent, 0)?;
            let _names = parent.dir_lock.lock();
            // A copy-up changes nothing the user did: keep the parent's times, as kernel
            // overlay does.
            let pst = sys::fstat(upper_parent.as_fd())?;
            sys::renameat2(
                work,
                &tmp,
                upper_parent.as_fd(),
                &name,
                libc::RENAME_NOREPLACE,
            )?;
            let atime = Time::At(pst.st_atime, pst.st_atime_nsec);
            let mtime = Time::At(pst.st_mtime, pst.st_mtime_nsec);
            sys::utimensat(upper_parent.as_fd(), c".", atime, mtime)
        });
        if let Err(e) = result {
            let _ = layer::remove_tree(work, &tmp);
            return Err(e);
        }
        if !node.is_dir && st.st_nlink > 1 {
            let upper_parent = self.dir_fd(&parent, 0)?;
            let ust = sys::fstatat(upper_parent.as_fd(), &name)?;
            let own = self
                .nodes
                .id_for(self.stack.layers[0].fs_index, ust.st_dev, ust.st_ino);
            node.st_ino.store(own, Ordering::Relaxed);
        }
        {
            let mut state = node.state.lock();
            if node.is_dir {
                state.layers.insert(0, 0);
            } else {
                // The copy is a new file: other lower names of a lower hard link stay behind.
                state.layers = vec![0];
                state
                    .aliases
                    .retain(|(p, n)| *p == parent_ino && *n == name);
                if state.aliases.is_empty() {
                    state.aliases.push((parent_ino, name.clone()));
                }
            }
        }
        node.copy_gen.fetch_add(1, Ordering::Release);
        self.forget_xattr_names(node);
        tracing::debug!(ino = node.ino, name = ?name, "copied up");
        Ok(())
    }

    // ----- namespace -------------------------------------------------------------------------

    pub fn lookup(&self, parent_ino: u64, name: &OsStr) -> Result<(Arc<Node>, Stat)> {
        let parent = self.nodes.get(parent_ino)?;
        not_dir(&parent)?;
        let name = sys::cname(name)?;
        let Hit::Found(found) = self.resolve(&parent, &name)? else {
            return Err(Error::Sys(libc::ENOENT));
        };
        let parent_fd = self.dir_fd(&parent, found.top())?;
        let id = self.id_of(&parent, parent_fd.as_fd(), &name, &found);
        let st = self.overridden_at(found.top(), parent_fd.as_fd(), &name, found.stats[0]);
        let node = self.nodes.remember(
            id,
            st.st_mode & libc::S_IFMT,
            found.layers,
            (parent_ino, name),
        );
        Ok((node.clone(), self.finish_attr(&node, st)))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.nodes.forget(ino, n);
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Stat> {
        let node = self.nodes.get(ino)?;
        // Through an open file: works after its last name is gone, and costs no path walk.
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh).ok())
            && let Handle::File(f) = &*h
        {
            return Ok(self.attr_of(&node, sys::fstat(self.file_fd(f)?.as_fd())?));
        }
        self.stat_node(&node)
    }

    pub fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> Result<Stat> {
        let node = self.nodes.get(ino)?;
        self.copy_up(&node)?;
        // A chown, truncate or kill-priv may drop security.capability; a chmod or utimes
        // changes no xattr name (an ACL's value, at most).
        if set.uid.is_some() || set.gid.is_some() || set.size.is_some() || set.kill_priv {
            self.forget_xattr_names(&node);
        }
        let (fd, name) = self.at(&node)?;
        if let Some(size) = set.size {
            if node.is_dir {
                return Err(Error::Sys(libc::EISDIR));
            }
            let handle = fh.map(|fh| self.handles.file(fh)).transpose()?;
            let f = match handle.as_deref().map(Handle::as_file).transpose()? {
                Some(f) if f.flags & libc::O_ACCMODE != libc::O_RDONLY => self.file_fd(f)?,
                _ => Arc::new(sys::openat(
                    fd.as_fd(),
                    &name,
                    libc::O_WRONLY | libc::O_NOFOLLOW,
                    0,
                )?),
            };
            sys::ftruncate(f.as_fd(), size)?;
        }
        if set.kill_priv && node.ftype == libc::S_IFREG {
            kill_priv_at(fd.as_fd(), &name)?;
        }
        let ids = &self.opts.ids;
        let mut set = SetAttr {
            uid: set
                .uid
                .map(|u| ids.store_uid(u).ok_or(Error::Sys(libc::EINVAL)))
                .transpose()?,
            gid: set
                .gid
                .map(|g| ids.store_gid(g).ok_or(Error::Sys(libc::EINVAL)))
                .transpose()?,
            ..set
        };
        // In an override_stat layer, owner and mode live in the xattr, not on the file (which
        // may be a regular file standing in for a device: ask the disk, not `node.ftype`).
        let real = match set.uid.is_some() || set.gid.is_some() || set.mode.is_some() {
            true if self.stack.layers[node.top()].override_stat.is_some() => {
                Some(sys::fstatat(fd.as_fd(), &name)?)
            }
            _ => None,
        };
        if let Some(real) = real
            && let Some(x) = self.override_xattr(&node, real.st_mode)
        {
            let cur = read_override_at(fd.as_fd(), &name, x).unwrap_or(Override {
                uid: real.st_uid,
                gid: real.st_gid,
                mode: real.st_mode & 0o7777,
                special: None,
            });
            // A special type already recorded (a device standing in as a regular file) stays.
            let new = Override {
                uid: set.uid.unwrap_or(cur.uid),
                gid: set.gid.unwrap_or(cur.gid),
                mode: set.mode.map_or(cur.mode, |m| m & 0o7777),
                special: cur.special,
            };
            store_override(fd.as_fd(), &name, x, &new)?;
            (set.uid, set.gid, set.mode) = (None, None, None);
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::fchownat(
                fd.as_fd(),
                &name,
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(mode) = set.mode {
            sys::fchmodat(fd.as_fd(), &name, mode & 0o7777)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let (a, m) = (
                set.atime.unwrap_or(Time::Omit),
                set.mtime.unwrap_or(Time::Omit),
            );
            sys::utimensat(fd.as_fd(), &name, a, m)?;
        }
        Ok(self.attr_of(&node, sys::fstatat(fd.as_fd(), &name)?))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        let (fd, name) = self.at(&node)?;
        sys::readlinkat(fd.as_fd(), &name)
    }

    /// Create a new name in `parent`. Over an upper whiteout the object is built in the work
    /// dir and renamed into place (a directory then is opaque, hiding what the whiteout hid).
    fn create_entry(
        &self,
        parent_ino: u64,
        name: &OsStr,
        creds: Creds,
        what: NewObject<'_>,
    ) -> Result<(Arc<Node>, Stat, Option<OwnedFd>)> {
        self.upper()?;
        let parent = self.nodes.get(parent_ino)?;
        not_dir(&parent)?;
        let name = sys::cname(name)?;
        self.copy_up(&parent)?;
        let _names = parent.dir_lock.lock();
        let over_whiteout = match self.resolve(&parent, &name)? {
            Hit::Found(_) => return Err(Error::Sys(libc::EEXIST)),
            Hit::Absent { whiteout_layer } => whiteout_layer == Some(0),
        };
        let pfd = self.dir_fd(&parent, 0)?;
        let (dir, tmp) = if over_whiteout {
            (self.work()?, self.tmp_name())
        } else {
            (pfd.as_fd(), name.clone())
        };
        let file = self.make_object(dir, &tmp, pfd.as_fd(), creds, &what);
        let file = file.and_then(|file| {
            if !over_whiteout {
                return Ok(file);
            }
            if matches!(what, NewObject::Dir { .. }) {
                self.fmt.set_opaque(dir, &tmp)?;
                sys::renameat2(dir, &tmp, pfd.as_fd(), &name, libc::RENAME_EXCHANGE)?;
                // The whiteout now sits at the temporary name.
                let _ = sys::unlinkat(dir, &tmp, 0);
            } else {
                sys::renameat2(dir, &tmp, pfd.as_fd(), &name, 0)?;
            }
            Ok(file)
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                // Never remove a name someone else made (EEXIST: the name was taken).
                if over_whiteout || !e.is(libc::EEXIST) {
                    let _ = layer::remove_tree(dir, &tmp);
                }
                return Err(e);
            }
        };
        let st = sys::fstatat(pfd.as_fd(), &name)?;
        let is_dir = is_dir_mode(st.st_mode);
        // An override_stat upper records the apparent owner and mode of what is created, and
        // the type and device number of a special file made as a regular stand-in.
        if let Some(x) = self.override_xattr_in(0, st.st_mode) {
            let special = match what {
                NewObject::Link { .. } => None,
                NewObject::Node { mode, rdev } => Some(Some((mode & libc::S_IFMT, rdev))),
                _ => Some(None),
            };
            if let Some(special) = special {
                let o = Override {
                    uid: creds.uid,
                    gid: creds.gid,
                    mode: st.st_mode & 0o7777,
                    special,
                };
                store_override(pfd.as_fd(), &name, x, &o)?;
            }
        }
        let st = self.overridden_at(0, pfd.as_fd(), &name, st);
        let id = match &what {
            // A new link is another name of an existing node.
            NewObject::Link { .. } => {
                let found = lookup::Found {
                    layers: vec![0],
                    stats: vec![st],
                    is_dir,
                    opaque: false,
                };
                self.id_of(&parent, pfd.as_fd(), &name, &found)
            }
            _ => {
                let id = self
                    .nodes
                    .id_for(self.stack.layers[0].fs_index, st.st_dev, st.st_ino);
                (id, id)
            }
        };
        let node = self
            .nodes
            .remember(id, st.st_mode & libc::S_IFMT, vec![0], (parent_ino, name));
        Ok((node.clone(), self.finish_attr(&node, st), file))
    }

    fn make_object(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        parent_fd: BorrowedFd<'_>,
        creds: Creds,
        what: &NewObject<'_>,
    ) -> Result<Option<OwnedFd>> {
        let chown = |mode: u32| -> Result<()> {
            let (uid, gid, _) = self.new_owner(parent_fd, creds, mode)?;
            self.chown_new(dir, name, uid, gid)
        };
        match what {
            NewObject::File { mode, flags } => {
                let (uid, gid, mode) = self.new_owner(parent_fd, creds, libc::S_IFREG | mode)?;
                // A new file may be opened read-write whatever its mode: no fallback needed.
                let flags = self.handle_flags(*flags) | libc::O_CREAT | libc::O_EXCL;
                let fd = sys::openat(dir, name, flags, mode & 0o7777)?;
                self.chown_new(dir, name, uid, gid)?;
                Ok(Some(fd))
            }
            NewObject::Dir { mode } => {
                let (uid, gid, mode) = self.new_owner(parent_fd, creds, libc::S_IFDIR | mode)?;
                sys::mkdirat(dir, name, mode & 0o7777)?;
                self.chown_new(dir, name, uid, gid)?;
                if mode & libc::S_ISGID != 0 {
                    // mkdir(2) may drop S_ISGID when the creator is not in the group.
                    sys::fchmodat(dir, name, mode & 0o7777)?;
                }
                Ok(None)
            }
            NewObject::Node { mode, .. } if self.stands_in(*mode) => {
                // Kept as a regular file; create_entry records the type in override_stat.
                let (uid, gid, mode) = self.new_owner(parent_fd, creds, libc::S_IFREG | mode)?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                drop(sys::openat(dir, name, flags, mode & 0o7777)?);
                self.chown_new(dir, name, uid, gid)?;
                Ok(None)
            }
            NewObject::Node { mode, rdev } => {
                sys::mknodat(dir, name, *mode, *rdev)?;
                chown(*mode)?;
                Ok(None)
            }
            NewObject::Symlink { target } => {
                sys::symlinkat(target, dir, name)?;
                chown(libc::S_IFLNK)?;
                Ok(None)
            }
            NewObject::Link {
                dir: src_dir,
                name: src,
            } => {
                sys::linkat(src_dir.as_fd(), src, dir, name)?;
                Ok(None)
            }
        }
    }

    /// A device, FIFO or socket made in an override_stat upper is a regular file there, its
    /// type in the override xattr (containers-storage's `force_mask` rule): the daemon may not
    /// be allowed to make a device, and only files and directories carry `user.*` xattrs.
    fn stands_in(&self, mode: u32) -> bool {
        self.stack.layers[0].override_stat.is_some()
            && matches!(
                mode & libc::S_IFMT,
                libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK
            )
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        // A char device 0/0 would be a whiteout in the upper: refused, as by kernel overlay.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Error::Sys(libc::EPERM));
        }
        if mode & libc::S_IFMT == libc::S_IFREG {
            let (node, st, _) = self.create_entry(
                parent,
                name,
                creds,
                NewObject::File {
                    mode,
                    flags: libc::O_RDONLY,
                },
            )?;
            return Ok((node, st));
        }
        let (node, st, _) = self.create_entry(
            parent,
            name,
            creds,
            NewObject::Node {
                mode,
                rdev: rdev as u64,
            },
        )?;
        Ok((node, st))
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        let (node, st, _) = self.create_entry(parent, name, creds, NewObject::Dir { mode })?;
        Ok((node, st))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        let target = sys::cname(target)?;
        let (node, st, _) =
            self.create_entry(parent, name, creds, NewObject::Symlink { target: &target })?;
        Ok((node, st))
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<(Arc<Node>, Stat)> {
        let node = self.nodes.get(ino)?;
        if node.is_dir {
            return Err(Error::Sys(libc::EPERM));
        }
        self.copy_up(&node)?;
        let (dir, name) = self.at(&node)?;
        let creds = Creds {
            uid: sys::geteuid(),
            gid: sys::getegid(),
        };
        let (new, st, _) =
            self.create_entry(newparent, newname, creds, NewObject::Link { dir, name })?;
        Ok((new, st))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat, u64)> {
        let (node, st, fd) =
            self.create_entry(parent, name, creds, NewObject::File { mode, flags })?;
        let fd = Arc::new(fd.ok_or(Error::Sys(libc::EIO))?);
        *node.open_fd.lock() = Arc::downgrade(&fd);
        let cgen = node.copy_gen.load(Ordering::Acquire);
        let fh = self.handles.insert(Handle::File(FileHandle {
            node: node.clone(),
            fd: parking_lot::RwLock::new((fd, cgen)),
            flags: self.handle_flags(flags),
        }));
        Ok((node, st, fh))
    }

    pub fn unlink(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.remove(parent_ino, name, false)
    }

    pub fn rmdir(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.remove(parent_ino, name, true)
    }

    /// unlink/rmdir: remove the upper's entry, and leave a whiteout where a lower still has
    /// the name.
    fn remove(&self, parent_ino: u64, name: &OsStr, dir: bool) -> Result<()> {
        self.upper()?;
        let parent = self.nodes.get(parent_ino)?;
        not_dir(&parent)?;
        let name = sys::cname(name)?;
        self.copy_up(&parent)?;
        let _names = parent.dir_lock.lock();
        let Hit::Found(found) = self.resolve(&parent, &name)? else {
            return Err(Error::Sys(libc::ENOENT));
        };
        match (dir, found.is_dir) {
            (false, true) => return Err(Error::Sys(libc::EISDIR)),
            (true, false) => return Err(Error::Sys(libc::ENOTDIR)),
            _ => {}
        }
        let child = self.child_node(&parent, &name, &found);
        let pfd = self.dir_fd(&parent, 0)?;
        if found.is_dir {
            self.check_empty(&parent, &name, &found.layers)?;
        }
        let whiteout = found.layers.iter().any(|l| !self.stack.is_upper(*l))
            || (self.stack.is_upper(found.top()) && self.lower_positive(&parent, &name)?);
        // Mark the node dead *before* its inode number is freed: a create in another directory
        // may get that number the moment the unlink returns, and must not find this node live.
        let frees_inode =
            self.stack.is_upper(found.top()) && (found.is_dir || found.stats[0].st_nlink <= 1);
        if let Some(child) = &child
            && frees_inode
        {
            child.dead.store(true, Ordering::Release);
        }
        let removed = if self.stack.is_upper(found.top()) {
            self.remove_upper_entry(pfd.as_fd(), &name, found.is_dir, whiteout)
        } else {
            whiteout::make_whiteout(pfd.as_fd(), &name)
        };
        if let Err(e) = removed {
            if let Some(child) = &child {
                child.dead.store(false, Ordering::Release);
            }
            return Err(e);
        }
        if let Some(child) = child {
            child.remove_alias(parent_ino, &name);
            if child.is_dir {
                self.nodes.drop_dir_fds(child.ino);
            }
        }
        Ok(())
    }

    /// Remove `name` (in the upper directory `pfd`), replacing it with a whiteout if asked,
    /// atomically: the whiteout is made in the work dir and exchanged or renamed in.
    fn remove_upper_entry(
        &self,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        is_dir: bool,
        whiteout: bool,
    ) -> Result<()> {
        if !whiteout {
            if !is_dir {
                return sys::unlinkat(pfd, name, 0);
            }
            match sys::unlinkat(pfd, name, libc::AT_REMOVEDIR) {
                // It holds whiteouts only (it is empty in the merged view): clear it first.
                Err(e) if e.is(libc::ENOTEMPTY) => {
                    let sub = sys::open_dir_path(pfd, name)?;
                    layer::clear_dir(sub.as_fd())?;
                    return sys::unlinkat(pfd, name, libc::AT_REMOVEDIR);
                }
                r => return r,
            }
        }
        let work = self.work()?;
        let tmp = self.tmp_name();
        whiteout::make_whiteout(work, &tmp)?;
        let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
        if let Err(e) = sys::renameat2(work, &tmp, pfd, name, flags) {
            let _ = sys::unlinkat(work, &tmp, 0);
            return Err(e);
        }
        if is_dir {
            // The old directory (holding only whiteouts) is now in the work dir.
            layer::remove_tree(work, &tmp)?;
        }
        Ok(())
    }

    /// ENOTEMPTY unless the merged directory `parent/name` (copies in `layers`) lists nothing.
    fn check_empty(&self, parent: &Node, name: &CStr, layers: &[LayerIdx]) -> Result<()> {
        let child_fd = |l: LayerIdx| -> Result<Arc<OwnedFd>> {
            let pfd = self.dir_fd(parent, l)?;
            Ok(Arc::new(sys::open_dir_path(pfd.as_fd(), name)?))
        };
        if readdir::list(&self.fmt, layers, child_fd)?.is_empty() {
            Ok(())
        } else {
            Err(Error::Sys(libc::ENOTEMPTY))
        }
    }

    /// The node the kernel knows for `parent/name`, if it is in the table.
    fn child_node(&self, parent: &Node, name: &CStr, found: &lookup::Found) -> Option<Arc<Node>> {
        let pfd = self.dir_fd(parent, found.top()).ok()?;
        let (id, _) = self.id_of(parent, pfd.as_fd(), name, found);
        self.nodes.peek_object(id)
    }

    pub fn rename(
        &self,
        parent_ino: u64,
        name: &OsStr,
        newparent_ino: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.upper()?;
        let parent = self.nodes.get(parent_ino)?;
        let newparent = self.nodes.get(newparent_ino)?;
        not_dir(&parent)?;
        not_dir(&newparent)?;
        let name = sys::cname(name)?;
        let newname = sys::cname(newname)?;
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Error::Sys(libc::EINVAL));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if exchange && flags & libc::RENAME_NOREPLACE != 0 {
            return Err(Error::Sys(libc::EINVAL));
        }
        // Refuse what is bound to fail before copying anything up, as kernel overlay does: a
        // failed rename must not leave a copy-up behind (it would split a lower hard link).
        self.check_rename(&parent, &name, &newparent, &newname, flags)?;
        // Copy up first (before any directory lock): the source, the target when exchanging,
        // and both parents.
        let src = self
            .prepare_rename_side(&parent, &name)?
            .ok_or(Error::Sys(libc::ENOENT))?;
        let dst = if exchange {
            Some(
                self.prepare_rename_side(&newparent, &newname)?
                    .ok_or(Error::Sys(libc::ENOENT))?,
            )
        } else {
            None
        };
        self.copy_up(&newparent)?;
        let _locks = lock_two(&parent, &newparent);
        let Hit::Found(sfound) = self.resolve(&parent, &name)? else {
            return Err(Error::Sys(libc::ENOENT));
        };
        if !self.stack.is_upper(sfound.top()) || sfound.layers.len() > 1 {
            return Err(Error::Sys(libc::EXDEV));
        }
        if parent_ino == newparent_ino && name == newname {
            return Ok(());
        }
        let dhit = self.resolve(&newparent, &newname)?;
        let pfd = self.dir_fd(&parent, 0)?;
        let npfd = self.dir_fd(&newparent, 0)?;
        if exchange {
            let Hit::Found(dfound) = dhit else {
                return Err(Error::Sys(libc::ENOENT));
            };
            if !self.stack.is_upper(dfound.top()) || dfound.layers.len() > 1 {
                return Err(Error::Sys(libc::EXDEV));
            }
            // A directory arriving where a lower has the name must not merge with it.
            if sfound.is_dir && !sfound.opaque && self.lower_positive(&newparent, &newname)? {
                self.fmt.set_opaque(pfd.as_fd(), &name)?;
            }
            if dfound.is_dir && !dfound.opaque && self.lower_positive(&parent, &name)? {
                self.fmt.set_opaque(npfd.as_fd(), &newname)?;
            }
            sys::renameat2(
                pfd.as_fd(),
                &name,
                npfd.as_fd(),
                &newname,
                libc::RENAME_EXCHANGE,
            )?;
            let d = dst.ok_or(Error::Sys(libc::EIO))?;
            src.remove_alias(parent_ino, &name);
            d.remove_alias(newparent_ino, &newname);
            src.add_alias(newparent_ino, &newname);
            d.add_alias(parent_ino, &name);
            return Ok(());
        }
        let mut upper_whiteout_at_dst = false;
        let mut dst_node = None;
        match &dhit {
            Hit::Found(d) => {
                if flags & libc::RENAME_NOREPLACE != 0 {
                    return Err(Error::Sys(libc::EEXIST));
                }
                match (sfound.is_dir, d.is_dir) {
                    (true, false) => return Err(Error::Sys(libc::ENOTDIR)),
                    (false, true) => return Err(Error::Sys(libc::EISDIR)),
                    _ => {}
                }
                if d.is_dir {
                    self.check_empty(&newparent, &newname, &d.layers)?;
                    if self.stack.is_upper(d.top()) {
                        // Only whiteouts remain in the target's upper copy: clear them so the
                        // rename can replace it (the moved dir is made opaque below).
                        let sub = sys::open_dir_path(npfd.as_fd(), &newname)?;
                        layer::clear_dir(sub.as_fd())?;
                    } else {
                        // The target lives only in lowers: nothing in the upper to replace.
                    }
                }
                dst_node = self.child_node(&newparent, &newname, d);
                // The target's upper object is about to be replaced: if that was its last
                // link, its inode number is free for reuse.
                if let Some(n) = &dst_node
                    && self.stack.is_upper(d.top())
                    && (d.is_dir || d.stats[0].st_nlink <= 1)
                {
                    n.dead.store(true, Ordering::Release);
                }
            }
            Hit::Absent { whiteout_layer } => upper_whiteout_at_dst = *whiteout_layer == Some(0),
        }
        let src_whiteout = self.lower_positive(&parent, &name)?;
        if sfound.is_dir && !sfound.opaque && self.lower_positive(&newparent, &newname)? {
            self.fmt.set_opaque(pfd.as_fd(), &name)?;
        }
        if sfound.is_dir && upper_whiteout_at_dst {
            // A directory cannot replace the whiteout (a char device) by rename: exchange them,
            // then keep the whiteout at the old name if a lower still has it.
            sys::renameat2(
                pfd.as_fd(),
                &name,
                npfd.as_fd(),
                &newname,
                libc::RENAME_EXCHANGE,
            )?;
            if !src_whiteout {
                sys::unlinkat(pfd.as_fd(), &name, 0)?;
            }
        } else {
            let dst_in_upper = matches!(&dhit, Hit::Found(d) if self.stack.is_upper(d.top()));
            if !dst_in_upper && matches!(dhit, Hit::Found(_)) {
                // Target only in lowers: the moved object covers it in the upper.
            }
            let flags = if src_whiteout {
                libc::RENAME_WHITEOUT
            } else {
                0
            };
            sys::renameat2(pfd.as_fd(), &name, npfd.as_fd(), &newname, flags)?;
        }
        if let Some(d) = dst_node {
            d.remove_alias(newparent_ino, &newname);
            if d.is_dir {
                self.nodes.drop_dir_fds(d.ino);
            }
        }
        src.remove_alias(parent_ino, &name);
        src.add_alias(newparent_ino, &newname);
        Ok(())
    }

    /// The errors a rename can be told apart by from the names alone (they are checked again
    /// under the directory locks).
    fn check_rename(
        &self,
        parent: &Node,
        name: &CStr,
        newparent: &Node,
        newname: &CStr,
        flags: u32,
    ) -> Result<()> {
        let has_lower = |f: &lookup::Found| f.layers.iter().any(|l| !self.stack.is_upper(*l));
        let Hit::Found(src) = self.resolve(parent, name)? else {
            return Err(Error::Sys(libc::ENOENT));
        };
        if src.is_dir && has_lower(&src) {
            return Err(Error::Sys(libc::EXDEV));
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        match self.resolve(newparent, newname)? {
            Hit::Absent { .. } if exchange => Err(Error::Sys(libc::ENOENT)),
            Hit::Absent { .. } => Ok(()),
            Hit::Found(_) if flags & libc::RENAME_NOREPLACE != 0 => Err(Error::Sys(libc::EEXIST)),
            Hit::Found(dst) if exchange => {
                if dst.is_dir && has_lower(&dst) {
                    Err(Error::Sys(libc::EXDEV))
                } else {
                    Ok(())
                }
            }
            Hit::Found(dst) => match (src.is_dir, dst.is_dir) {
                (true, false) => Err(Error::Sys(libc::ENOTDIR)),
                (false, true) => Err(Error::Sys(libc::EISDIR)),
                (true, true) => self.check_empty(newparent, newname, &dst.layers),
                (false, false) => Ok(()),
            },
        }
    }

    /// The node at `parent/name`, copied up if it is a non-directory in a lower. A directory
    /// with lower copies is left alone (rename then answers EXDEV).
    fn prepare_rename_side(&self, parent: &Arc<Node>, name: &CString) -> Result<Option<Arc<Node>>> {
        let Hit::Found(found) = self.resolve(parent, name)? else {
            return Ok(None);
        };
        let pfd = self.dir_fd(parent, found.top())?;
        let ids = self.id_of(parent, pfd.as_fd(), name, &found);
        let id = ids.0;
        let node = match self.nodes.peek_object(id) {
            Some(n) => n,
            None => {
                // Not known to the kernel (rare: rename without a prior lookup); track it
                // without a kernel reference.
                let st = self.overridden_at(found.top(), pfd.as_fd(), name, found.stats[0]);
                let n = self.nodes.remember(
                    ids,
                    st.st_mode & libc::S_IFMT,
                    found.layers.clone(),
                    (parent.ino, name.clone()),
                );
                self.nodes.forget(n.ino, 1);
                n
            }
        };
        node.add_alias(parent.ino, name);
        if found.is_dir {
            if found.layers.iter().any(|l| !self.stack.is_upper(*l)) {
                return Err(Error::Sys(libc::EXDEV));
            }
        } else {
            self.copy_up(&node)?;
        }
        Ok(Some(node))
    }

    // ----- files -----------------------------------------------------------------------------

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let node = self.nodes.get(ino)?;
        if node.is_dir {
            return Err(Error::Sys(libc::EISDIR));
        }
        if open_writes(flags) {
            self.copy_up(&node)?;
        }
        let cgen = node.copy_gen.load(Ordering::Acquire);
        let (dir, name) = self.at(&node)?;
        let (fd, flags) = self.open_handle_fd(dir.as_fd(), &name, flags, libc::O_NOFOLLOW, 0)?;
        let fd = Arc::new(fd);
        *node.open_fd.lock() = Arc::downgrade(&fd);
        Ok(self.handles.insert(Handle::File(FileHandle {
            node,
            fd: parking_lot::RwLock::new((fd, cgen)),
            flags,
        })))
    }

    /// A file to back FUSE passthrough for `ino`: its upper copy, opened read-write so every
    /// handle of the node can share it. None for a file that is only in a lower, and for one
    /// with setuid/setgid bits or file capabilities: writes through passthrough bypass the
    /// daemon, which must drop those on a write by an unprivileged caller. The handle `fh`
    /// that asks lends its own fd when that is read-write and on the upper copy.
    pub fn backing_file(&self, ino: u64, fh: u64) -> Result<Option<Arc<OwnedFd>>> {
        let node = self.nodes.get(ino)?;
        if !self.has_upper(&node) {
            return Ok(None);
        }
        let own = self.handles.get(fh).ok().and_then(|h| match &*h {
            Handle::File(f) if f.flags & libc::O_ACCMODE == libc::O_RDWR => self.file_fd(f).ok(),
            _ => None,
        });
        let fd = match own {
            Some(fd) => fd,
            None => {
                let (dir, name) = self.at(&node)?;
                Arc::new(sys::openat(
                    dir.as_fd(),
                    &name,
                    libc::O_RDWR | libc::O_NOFOLLOW,
                    0,
                )?)
            }
        };
        if has_privileges(fd.as_fd())? {
            return Ok(None);
        }
        Ok(Some(fd))
    }

    /// The fd of a file handle, reopened on the upper copy if the file was copied up since.
    fn file_fd(&self, f: &FileHandle) -> Result<Arc<OwnedFd>> {
        let cgen = f.node.copy_gen.load(Ordering::Acquire);
        {
            let cur = f.fd.read();
            if cur.1 == cgen {
                return Ok(cur.0.clone());
            }
        }
        let (dir, name) = self.at(&f.node)?;
        let fd = Arc::new(sys::openat(
            dir.as_fd(),
            &name,
            f.flags | libc::O_NOFOLLOW,
            0,
        )?);
        *f.fd.write() = (fd.clone(), cgen);
        Ok(fd)
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let h = self.handles.file(fh)?;
        let fd = self.file_fd(h.as_file()?)?;
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            let n = sys::pread(fd.as_fd(), &mut buf[done..], off + done as u64)?;
            if n == 0 {
                break;
            }
            done += n;
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// `kill_priv`: the writer lacks CAP_FSETID, so setuid/setgid bits and file capabilities
    /// go, as on any local filesystem (the kernel leaves this to us: HANDLE_KILLPRIV_V2).
    pub fn write(&self, fh: u64, off: u64, data: &[u8], kill_priv: bool) -> Result<usize> {
        let h = self.handles.file(fh)?;
        let fd = self.file_fd(h.as_file()?)?;
        if kill_priv {
            kill_priv_fd(fd.as_fd())?;
        }
        let mut done = 0;
        while done < data.len() {
            done += sys::pwrite(fd.as_fd(), &data[done..], off + done as u64)?;
        }
        Ok(done)
    }

    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let h = self.handles.get(fh)?;
        match &*h {
            Handle::File(f) => sys::fsync(self.file_fd(f)?.as_fd(), datasync),
            Handle::Dir(d) => {
                let fd = self.dir_fd(&d.node, d.node.top())?;
                let real = sys::openat(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
                sys::fsync(real.as_fd(), datasync)
            }
        }
    }

    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
    }

    pub fn fallocate(&self, fh: u64, mode: i32, off: u64, len: u64) -> Result<()> {
        let h = self.handles.file(fh)?;
        sys::fallocate(self.file_fd(h.as_file()?)?.as_fd(), mode, off, len)
    }

    pub fn lseek(&self, fh: u64, off: i64, whence: i32) -> Result<i64> {
        let h = self.handles.file(fh)?;
        sys::lseek(self.file_fd(h.as_file()?)?.as_fd(), off, whence)
    }

    pub fn copy_file_range(
        &self,
        fh_in: u64,
        off_in: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
    ) -> Result<usize> {
        let hi = self.handles.file(fh_in)?;
        let ho = self.handles.file(fh_out)?;
        let fi = self.file_fd(hi.as_file()?)?;
        let fo = self.file_fd(ho.as_file()?)?;
        sys::copy_file_range(fi.as_fd(), off_in, fo.as_fd(), off_out, len as usize)
    }

    // ----- directories -----------------------------------------------------------------------

    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.nodes.get(ino)?;
        not_dir(&node)?;
        // The listing is built on the first readdir, not here: with a cached directory the
        // kernel opens and releases it without ever reading.
        Ok(self.handles.insert(Handle::Dir(DirHandle {
            node,
            entries: parking_lot::Mutex::new(None),
        })))
    }

    /// The snapshot a directory handle reads from; taken anew at offset 0 (opendir, rewinddir).
    pub fn dir_entries(&self, fh: u64, offset: u64) -> Result<Arc<Vec<DirEntry>>> {
        let h = self.handles.get(fh)?;
        let d = h.as_dir()?;
        let mut snap = d.entries.lock();
        if offset != 0
            && let Some(e) = &*snap
        {
            return Ok(e.clone());
        }
        let entries = Arc::new(self.list_dir(&d.node)?);
        *snap = Some(entries.clone());
        Ok(entries)
    }

    /// A merged listing ordered by cookie. Cookies are name hashes (as ext4's htree offsets),
    /// not positions: the kernel's directory cache may be filled from several handles'
    /// snapshots taken at different moments, and positions would shift between them.
    fn list_dir(&self, node: &Node) -> Result<Vec<DirEntry>> {
        let layers = node.layers();
        let entries = readdir::list(&self.fmt, &layers, |l| self.dir_fd(node, l))?;
        let mut out = Vec::with_capacity(entries.len() + 2);
        let parent = node.alias().map(|(p, _)| p).unwrap_or(ROOT);
        out.push(DirEntry {
            off: 1,
            name: c".".to_owned(),
            ino: node.ino,
            dtype: libc::DT_DIR,
        });
        out.push(DirEntry {
            off: 2,
            name: c"..".to_owned(),
            ino: parent,
            dtype: libc::DT_DIR,
        });
        for e in entries {
            let layer = &self.stack.layers[e.layer];
            // d_ino as the layer sees it, in node-id form (st_ino may differ for a merged
            // directory or a copied-up file; kernel overlay without xino has the same gap).
            let ino = self.nodes.id_for(layer.fs_index, 0, e.ino);
            let mut dtype = e.dtype;
            // A regular file may stand in for a special file: d_type says what lookup will.
            if dtype == libc::DT_REG
                && let Some(x) = layer.override_stat.as_deref()
                && let Some((kind, _)) =
                    read_override_at(self.dir_fd(node, e.layer)?.as_fd(), &e.name, x)
                        .and_then(|o| o.special)
            {
                dtype = readdir::dtype_of(kind);
            }
            out.push(DirEntry {
                off: name_cookie(&e.name),
                name: e.name,
                ino,
                dtype,
            });
        }
        out[2..].sort_by(|a, b| (a.off, &a.name).cmp(&(b.off, &b.name)));
        Ok(out)
    }

    pub fn dir_handle(&self, fh: u64) -> Result<Arc<Handle>> {
        let h = self.handles.get(fh)?;
        h.as_dir()?;
        Ok(h)
    }

    // ----- xattrs ------------------------------------------------------------------------------

    /// The `/proc/self/fd/N/NAME` path the `l*xattr` calls take for `node`, with the directory
    /// fd it names (keep it alive while the path is used: N could be reused once it closes).
    fn xattr_path(&self, node: &Node) -> Result<(Arc<OwnedFd>, CString)> {
        let (fd, name) = self.at(node)?;
        let path = sys::proc_path(fd.as_fd(), &name);
        Ok((fd, path))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        let real = self.fmt.escape(&sys::cname(name)?);
        // Most asks are for names the object lacks (`security.selinux` of every file in
        // `ls -l`): answered from the name cache, without building a path.
        if is_override_xattr(&real) || !self.xattr_names(&node)?.contains(&real) {
            return Err(Error::Sys(libc::ENODATA));
        }
        let (_fd, path) = self.xattr_path(&node)?;
        let value = sys::lgetxattr_vec(&path, &real)?.ok_or(Error::Sys(libc::ENODATA))?;
        if self.opts.ids.is_identity() || !idmap::is_acl_xattr(real.to_bytes()) {
            return Ok(value);
        }
        // ACL entries name owners: show them as stat shows owners. A layer's ACL the kernel
        // could not parse either is an I/O error, not something to pass on untranslated.
        self.opts
            .ids
            .show_acl(&value)
            .map_err(|_| Error::Sys(libc::EIO))
    }

    /// The node's stored xattr names, listed once and then cached (see `NodeState`).
    fn xattr_names(&self, node: &Node) -> Result<Arc<Vec<CString>>> {
        if let Some(names) = &node.state.lock().xattr_names {
            return Ok(names.clone());
        }
        let (_fd, path) = self.xattr_path(node)?;
        let names = Arc::new(sys::llistxattr_vec(&path)?);
        node.state.lock().xattr_names = Some(names.clone());
        Ok(names)
    }

    fn forget_xattr_names(&self, node: &Node) {
        node.state.lock().xattr_names = None;
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        let (_fd, path) = self.xattr_path(&node)?;
        let mut out = Vec::new();
        for name in sys::llistxattr_vec(&path)? {
            if is_override_xattr(&name) {
                continue;
            }
            if let Some(shown) = self.fmt.unescape(&name) {
                out.extend_from_slice(shown.to_bytes_with_nul());
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let name = sys::cname(name)?;
        if is_override_xattr(&name) {
            return Err(Error::Sys(libc::EPERM));
        }
        let real = self.fmt.escape(&name);
        // ACL entries name owners: store them as chown stores owners (EINVAL for an id the
        // mapping has no place for, or a value that is not an ACL), before any copy-up.
        let mapped;
        let value = if !self.opts.ids.is_identity() && idmap::is_acl_xattr(real.to_bytes()) {
            mapped = (self.opts.ids)
                .store_acl(value)
                .map_err(|_| Error::Sys(libc::EINVAL))?;
            &mapped[..]
        } else {
            value
        };
        let node = self.nodes.get(ino)?;
        self.copy_up(&node)?;
        self.forget_xattr_names(&node);
        let (_fd, path) = self.xattr_path(&node)?;
        sys::lsetxattr(&path, &real, value, flags)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        let node = self.nodes.get(ino)?;
        let real = self.fmt.escape(&sys::cname(name)?);
        // Removing a name the object lacks changes nothing, so it needs no copy-up.
        if sys::lgetxattr_vec(&self.xattr_path(&node)?.1, &real)?.is_none() {
            return Err(Error::Sys(libc::ENODATA));
        }
        self.copy_up(&node)?;
        self.forget_xattr_names(&node);
        let (_fd, path) = self.xattr_path(&node)?;
        sys::lremovexattr(&path, &real)
    }

    // ----- filesystem ----------------------------------------------------------------------------

    pub fn statfs(&self) -> Result<libc::statvfs> {
        sys::fstatfs(self.stack.root(0))
    }

    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }
}

/// Flags for opening the real file: the caller's access mode and status flags, minus those the
/// kernel already handled (creation, truncation) and O_APPEND (the kernel sends the offset;
/// pwrite on an O_APPEND fd would ignore it).
fn open_flags(flags: i32) -> i32 {
    flags
        & !(libc::O_CREAT
            | libc::O_EXCL
            | libc::O_NOCTTY
            | libc::O_TRUNC
            | libc::O_APPEND
            | libc::O_DIRECT
            | libc::O_CLOEXEC)
}

/// Does an open with `flags` change the file (so that a lower file must be copied up first)?
pub fn open_writes(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

/// Does the file carry setuid/setgid-with-group-exec bits or a file capability?
fn has_privileges(fd: BorrowedFd<'_>) -> Result<bool> {
    let st = sys::fstat(fd)?;
    Ok(without_privileges(st.st_mode) != st.st_mode || sys::fhasxattr(fd, c"security.capability")?)
}

/// `mode` without setuid, and without setgid where it marks a group-executable file (a setgid
/// bit without group-exec is mandatory locking, which a write keeps).
fn without_privileges(mode: u32) -> u32 {
    let sgid_exec = libc::S_ISGID | libc::S_IXGRP;
    let mode = mode & !libc::S_ISUID;
    if mode & sgid_exec == sgid_exec {
        mode & !libc::S_ISGID
    } else {
        mode
    }
}

/// `kill_priv_fd` for the regular file `dir/name`.
fn kill_priv_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    let f = sys::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
    kill_priv_fd(f.as_fd())
}

/// Drop setuid, setgid (when group-executable) and file capabilities, as `file_remove_privs`
/// does for a writer without CAP_FSETID.
fn kill_priv_fd(fd: BorrowedFd<'_>) -> Result<()> {
    let st = sys::fstat(fd)?;
    let mode = without_privileges(st.st_mode);
    if mode != st.st_mode {
        sys::fchmod(fd, mode & 0o7777)?;
    }
    match sys::fremovexattr(fd, c"security.capability") {
        Err(e) if e.is(libc::ENODATA) || e.is(libc::ENOTSUP) => Ok(()),
        r => r,
    }
}

/// A readdir cookie for a name: 63 bits of a fixed-key hash, above the cookies of "." and "..".
fn name_cookie(name: &CStr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.to_bytes().hash(&mut h);
    (h.finish() >> 1).max(3)
}

/// An override_stat value: `UID:GID:MODE[:TYPE]`, mode in octal (fuse-overlayfs writes the
/// whole st_mode, containers-storage the permission bits). TYPE, as containers-storage's
/// `FormatContainersOverrideXattrDevice` writes it, is `file`, `dir`, `symlink`, `pipe`,
/// `socket`, `block-MAJOR-MINOR` or `char-MAJOR-MINOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Override {
    uid: u32,
    gid: u32,
    /// Permission bits only (`0o7777`).
    mode: u32,
    /// A special file that a regular file stands in for: its `S_IFMT` type and rdev.
    special: Option<(u32, u64)>,
}

fn read_override_at(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr) -> Option<Override> {
    let v = sys::lgetxattr_vec(&sys::proc_path(dir, name), xattr).ok()??;
    parse_override(&v)
}

fn store_override(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr, o: &Override) -> Result<()> {
    let value = format_override(o);
    sys::lsetxattr(&sys::proc_path(dir, name), xattr, value.as_bytes(), 0)
}

/// Show `st` (a directory or regular file in an override_stat layer) as `o` records it. Only a
/// regular file takes a special type: a directory is never shown as anything else, and a
/// regular file is never shown as a directory or a symlink (it has no entries, no target).
fn apply_override(st: &mut Stat, o: &Override) {
    st.st_uid = o.uid;
    st.st_gid = o.gid;
    let mut kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFREG
        && let Some((special, rdev)) = o.special
    {
        kind = special;
        st.st_rdev = rdev;
    }
    st.st_mode = kind | o.mode;
}

/// Parse an override_stat value; None (no override) unless it has a numeric uid, gid and
/// octal mode. An unknown or malformed TYPE is ignored, owner and mode still apply (as
/// fuse-overlayfs, which reads the first three fields only); fields after TYPE are ignored.
fn parse_override(v: &[u8]) -> Option<Override> {
    let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
    let mut it = s.split(':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    Some(Override {
        uid,
        gid,
        mode: mode & 0o7777,
        special: it.next().and_then(parse_override_type),
    })
}

/// The special type of a TYPE field. containers-storage matches on the prefix (`pipe`,
/// `socket`) and splits devices on `-`, ignoring parts after the minor number.
fn parse_override_type(t: &str) -> Option<(u32, u64)> {
    if t.starts_with("pipe") {
        return Some((libc::S_IFIFO, 0));
    }
    if t.starts_with("socket") {
        return Some((libc::S_IFSOCK, 0));
    }
    let mut parts = t.split('-');
    let kind = match parts.next()? {
        "char" => libc::S_IFCHR,
        "block" => libc::S_IFBLK,
        _ => return None,
    };
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((kind, libc::makedev(major, minor)))
}

/// The value `parse_override` reads back: `UID:GID:0MODE`, then `:TYPE` for a special file
/// (files and directories keep the three-field form older fuse-overlayfs versions read).
fn format_override(o: &Override) -> String {
    let base = format!("{}:{}:0{:o}", o.uid, o.gid, o.mode & 0o7777);
    let Some((kind, rdev)) = o.special else {
        return base;
    };
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    match kind {
        libc::S_IFCHR => format!("{base}:char-{major}-{minor}"),
        libc::S_IFBLK => format!("{base}:block-{major}-{minor}"),
        libc::S_IFIFO => format!("{base}:pipe"),
        libc::S_IFSOCK => format!("{base}:socket"),
        _ => base,
    }
}

/// fuse-overlayfs's override_stat xattrs are its metadata, never shown through the mount.
fn is_override_xattr(name: &CStr) -> bool {
    let n = name.to_bytes();
    [
        layer::OVERRIDE_PRIVILEGED,
        layer::OVERRIDE_CONTAINERS,
        layer::OVERRIDE_USER,
    ]
    .iter()
    .any(|o| o.as_bytes() == n)
}

fn lock_two<'a>(a: &'a Node, b: &'a Node) -> (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>) {
    if a.ino == b.ino {
        return (a.dir_lock.lock(), None);
    }
    let (first, second) = if a.ino < b.ino { (a, b) } else { (b, a) };
    let g1 = first.dir_lock.lock();
    let g2 = second.dir_lock.lock();
    (g1, Some(g2))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ov(uid: u32, gid: u32, mode: u32, special: Option<(u32, u64)>) -> Override {
        Override {
            uid,
            gid,
            mode,
            special,
        }
    }

    #[test]
    fn override_values_of_every_type_parse() {
        let dev = |kind, ma, mi| Some((kind, libc::makedev(ma, mi)));
        for (v, want) in [
            ("1234:1235:0644", ov(1234, 1235, 0o644, None)),
            // fuse-overlayfs 1.10's form: the whole st_mode.
            ("1234:1235:100644", ov(1234, 1235, 0o644, None)),
            ("0:0:4755:file", ov(0, 0, 0o4755, None)),
            ("1:2:0755:dir", ov(1, 2, 0o755, None)),
            ("1:2:0777:symlink", ov(1, 2, 0o777, None)),
            ("1:2:0666:pipe", ov(1, 2, 0o666, Some((libc::S_IFIFO, 0)))),
            (
                "1:2:0700:socket",
                ov(1, 2, 0o700, Some((libc::S_IFSOCK, 0))),
            ),
            (
                "0:0:0666:char-1-3",
                ov(0, 0, 0o666, dev(libc::S_IFCHR, 1, 3)),
            ),
            (
                "0:6:0660:block-8-1",
                ov(0, 6, 0o660, dev(libc::S_IFBLK, 8, 1)),
            ),
            // Large numbers need glibc's split encoding.
            (
                "0:0:0600:char-4095-1048575",
                ov(0, 0, 0o600, dev(libc::S_IFCHR, 4095, 1048575)),
            ),
            // containers-storage ignores device parts after the minor, and fields after TYPE.
            (
                "0:0:0600:block-3-4-future",
                ov(0, 0, 0o600, dev(libc::S_IFBLK, 3, 4)),
            ),
            (
                "0:0:0600:char-5-1:more",
                ov(0, 0, 0o600, dev(libc::S_IFCHR, 5, 1)),
            ),
            ("0:0:0644\0", ov(0, 0, 0o644, None)),
        ] {
            assert_eq!(parse_override(v.as_bytes()), Some(want), "{v:?}");
        }
    }

    #[test]
    fn malformed_override_values_are_ignored() {
        for v in ["", "1000:1001", "x:1:0644", "1:-2:0644", "1:2:0689", "1:2:"] {
            assert_eq!(parse_override(v.as_bytes()), None, "{v:?}");
        }
        // A malformed type field leaves owner and mode in force (fuse-overlayfs never reads
        // it); the file keeps its own type.
        for t in [
            "disk-1-2",
            "block800",
            "block-abc-0",
            "char-1-xyz",
            "char-1",
            "",
        ] {
            let v = format!("7:8:0640:{t}");
            assert_eq!(
                parse_override(v.as_bytes()),
                Some(ov(7, 8, 0o640, None)),
                "{v:?}"
            );
        }
        assert_eq!(parse_override(&[0xff, b':', b'1']), None);
    }

    #[test]
    fn override_values_round_trip() {
        for o in [
            ov(1234, 1234, 0o644, None),
            ov(0, 0, 0o2755, None),
            ov(1, 2, 0o666, Some((libc::S_IFIFO, 0))),
            ov(1, 2, 0o777, Some((libc::S_IFSOCK, 0))),
            ov(0, 0, 0o666, Some((libc::S_IFCHR, libc::makedev(1, 3)))),
            ov(
                0,
                0,
                0o660,
                Some((libc::S_IFBLK, libc::makedev(259, 70000))),
            ),
        ] {
            assert_eq!(parse_override(format_override(&o).as_bytes()), Some(o));
        }
        assert_eq!(
            format_override(&ov(1234, 1234, 0o644, None)),
            "1234:1234:0644"
        );
        let null = ov(0, 0, 0o666, Some((libc::S_IFCHR, libc::makedev(1, 3))));
        assert_eq!(format_override(&null), "0:0:0666:char-1-3");
    }

    /// A real stat (unsafe stays in sys.rs), its type and mode replaced.
    fn stat_of(mode: u32) -> Stat {
        let root = sys::open_path(c"/", libc::O_PATH).expect("open /");
        let mut st = sys::fstat(root.as_fd()).expect("fstat /");
        (st.st_mode, st.st_rdev) = (mode, 0);
        st
    }

    #[test]
    fn only_a_regular_file_takes_a_special_type() {
        let null = ov(0, 0, 0o666, Some((libc::S_IFCHR, libc::makedev(1, 3))));
        let mut st = stat_of(libc::S_IFREG | 0o600);
        apply_override(&mut st, &null);
        assert_eq!(st.st_mode, libc::S_IFCHR | 0o666);
        assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (1, 3));
        let mut st = stat_of(libc::S_IFDIR | 0o700);
        apply_override(&mut st, &null);
        assert_eq!((st.st_mode, st.st_rdev), (libc::S_IFDIR | 0o666, 0));
    }
}
