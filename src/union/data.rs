//! File handles and data: open, read, write, fsync, release, fallocate, lseek,
//! copy_file_range, and the backing file for passthrough. A handle's fd follows its node to the
//! upper copy after a copy-up (`file_fd`).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::handle::{FileHandle, Handle};
use crate::sys;

use super::Union;
use crate::layer::LayerIdx;

/// How many nodes may keep a handle of their own (`Union::node_handle`): an fd each, well
/// under the daemon's fd limit.
const OWN_HANDLES: usize = 4096;

/// The handle one request uses (`Union::node_handle`): the node's own, or one for this request
/// only, released when this goes.
pub struct NodeFh<'a> {
    core: &'a Union,
    pub fh: u64,
    once: bool,
}

impl<'a> NodeFh<'a> {
    /// A handle that outlives the request (the node's own, or one the kernel opened).
    pub fn kept(core: &'a Union, fh: u64) -> NodeFh<'a> {
        NodeFh {
            core,
            fh,
            once: false,
        }
    }
}

impl Drop for NodeFh<'_> {
    fn drop(&mut self) {
        if self.once {
            self.core.handles.remove(self.fh);
        }
    }
}

/// A file to back FUSE passthrough (`Union::backing_file`).
pub struct Backing {
    pub fd: Arc<OwnedFd>,
    /// The lower layer it was opened in, for a file not copied up: such a backing file serves
    /// readers only, and once the file is copied up no new open may join it (the kernel would
    /// give the opener the old data, or a writer the lower file).
    pub lower: Option<LayerIdx>,
}

impl Union {
    /// The flags to open a handle's real file with: the caller's, widened from write-only to
    /// read-write when that fd may also back passthrough or the kernel may read through it.
    pub(super) fn handle_flags(&self, flags: i32) -> i32 {
        let flags = open_flags(flags);
        if flags & libc::O_ACCMODE == libc::O_WRONLY
            && self.widen_write_only.load(Ordering::Relaxed)
        {
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
        match open_object(dir, name, wide | extra, mode) {
            Err(e) if wide != open_flags(flags) && e.is(libc::EACCES) => {
                let own = open_flags(flags);
                Ok((open_object(dir, name, own | extra, mode)?, own))
            }
            r => Ok((r?, wide)),
        }
    }

    pub fn open(&self, ino: u64, flags: i32) -> Result<u64> {
        let node = self.nodes.get(ino)?;
        if node.is_dir {
            return Err(Error::IsDir);
        }
        if open_writes(flags) {
            self.copy_up(&node)?;
        }
        let cgen = node.copy_gen.load(Ordering::Acquire);
        let (dir, name) = self.at(&node)?;
        // A file read from a lower keeps its atime (kernel overlay opens lowers O_NOATIME).
        let (fd, flags) = if self.has_upper(&node) {
            self.open_handle_fd(dir.as_fd(), &name, flags, libc::O_NOFOLLOW, 0)?
        } else {
            let flags = open_flags(flags);
            // O_NOATIME needs the owner or CAP_FOWNER (see `sys::openat_noatime`).
            let fd = match open_object(dir.as_fd(), &name, flags | libc::O_NOATIME, 0) {
                Err(e) if e.is(libc::EPERM) => open_object(dir.as_fd(), &name, flags, 0)?,
                r => r?,
            };
            (fd, flags)
        };
        let fd = Arc::new(fd);
        Ok(self.handles.insert(Handle::File(FileHandle {
            node,
            fd: parking_lot::RwLock::new((fd, cgen)),
            flags,
        })))
    }

    /// The handle for a request on a file the kernel opened without asking (handle 0; see
    /// `set_kernel_opens`): the node's own, opened on first use, read-only until a request
    /// writes. A writer's open copies the file up (an open for writing is where kernel overlay
    /// copies up; without OPEN the first change is: docs/semantics.md, D18) and replaces the
    /// read-only handle; handles follow later copy-ups themselves (`file_fd`).
    ///
    /// The kernel forgets a node only when it evicts the inode, long after the last close, so
    /// at most `OWN_HANDLES` nodes keep one (an fd each); past that a request gets a handle of
    /// its own, closed when the returned `NodeFh` goes.
    pub fn node_handle(&self, ino: u64, write: bool) -> Result<NodeFh<'_>> {
        let node = self.nodes.get(ino)?;
        let mut own = node.own.lock();
        let usable = |mode: i32| match write {
            true => mode != libc::O_RDONLY,
            false => mode != libc::O_WRONLY,
        };
        if let Some((fh, mode)) = *own
            && usable(mode)
        {
            return Ok(NodeFh::kept(self, fh));
        }
        let fh = match write {
            // Read-write, so the kernel's reads of partial pages can share it; write-only where
            // the file can't be read (mode 0200 and no DAC override).
            true => match self.open(ino, libc::O_RDWR) {
                Err(e) if e.is(libc::EACCES) => self.open(ino, libc::O_WRONLY)?,
                r => r?,
            },
            false => self.open(ino, libc::O_RDONLY)?,
        };
        let mode = self.handles.file(fh)?.as_file()?.flags & libc::O_ACCMODE;
        if own.is_none() && self.own_handles.load(Ordering::Relaxed) >= OWN_HANDLES {
            return Ok(NodeFh {
                core: self,
                fh,
                once: true,
            });
        }
        if let Some((old, _)) = own.replace((fh, mode)) {
            self.handles.remove(old);
        } else {
            self.own_handles.fetch_add(1, Ordering::Relaxed);
        }
        Ok(NodeFh::kept(self, fh))
    }

    /// A file to back FUSE passthrough for `ino`. For a file in the upper: its upper copy,
    /// opened read-write so every handle of the node can share it; none for one with
    /// setuid/setgid bits or file capabilities (writes through passthrough bypass the daemon,
    /// which must drop those on a write by an unprivileged caller). The handle `fh` that asks
    /// lends its own fd when that is read-write and on the upper copy. For a file only in a
    /// lower, when the lowers are sealed (`LayerStack::seal_lowers`): the lower file, for
    /// readers only (see `Backing::lower`).
    pub fn backing_file(&self, ino: u64, fh: u64) -> Result<Option<Backing>> {
        let node = self.nodes.get(ino)?;
        let own = self.handles.get(fh).ok();
        let own = own.as_deref().and_then(|h| h.as_file().ok());
        if !self.has_upper(&node) {
            if !self.stack.lowers_sealed {
                return Ok(None);
            }
            // The handle's fd, still on the lower copy (only its path matters: the kernel opens
            // the backing file again with each reader's own flags).
            let cgen = node.copy_gen.load(Ordering::Acquire);
            let fd = match own.map(|f| f.fd.read().clone()) {
                Some((fd, g)) if g == cgen => fd,
                _ => {
                    let (dir, name) = self.at(&node)?;
                    Arc::new(sys::openat_noatime(dir.as_fd(), &name, libc::O_RDONLY)?)
                }
            };
            let lower = Some(node.top());
            return Ok(Some(Backing { fd, lower }));
        }
        let own = own.and_then(|f| match f.flags & libc::O_ACCMODE == libc::O_RDWR {
            true => self.file_fd(f).ok(),
            false => None,
        });
        let fd = match own {
            Some(fd) => fd,
            None => {
                let (dir, name) = self.at(&node)?;
                Arc::new(open_object(dir.as_fd(), &name, libc::O_RDWR, 0)?)
            }
        };
        if has_privileges(fd.as_fd())? {
            return Ok(None);
        }
        Ok(Some(Backing { fd, lower: None }))
    }

    /// Part node `ino` from its name: its open handles read the lower file `fd` (of layer
    /// `layer`) through passthrough, which the kernel can't move to a copy, and an open that
    /// needs the copy (a writer, or any open after a copy-up) is coming. The node becomes what
    /// a replaced file is: nameless, still the lower file for whoever holds it (its stat and
    /// xattrs are the lower's; a change answers as for a removed file), and dead, so a lookup
    /// of the name makes a new node (the caller answers ESTALE, the kernel looks up again).
    pub fn part_readers(&self, ino: u64, layer: LayerIdx, fd: Arc<OwnedFd>) -> Result<()> {
        let node = self.nodes.get(ino)?;
        node.dead.store(true, Ordering::Release);
        *node.removed.lock() = Some(fd);
        let mut st = node.state.lock();
        st.layers = vec![layer];
        st.aliases.clear();
        st.xattr_names = None;
        Ok(())
    }

    /// Is `ino` in the upper now (an open of it must not join a lower backing file)?
    pub fn in_upper(&self, ino: u64) -> bool {
        self.nodes.peek(ino).is_some_and(|n| self.has_upper(&n))
    }

    /// Does the file behind handle `fh` carry setuid/setgid bits or a file capability? A
    /// write must drop those, and only writes that reach the daemon through the page cache
    /// tell it when (the kernel sends no `KILL_SUIDGID` with a direct write).
    pub fn handle_has_privileges(&self, fh: u64) -> Result<bool> {
        let h = self.handles.file(fh)?;
        has_privileges(self.file_fd(h.as_file()?)?.as_fd())
    }

    /// The fd of a file handle, reopened on the upper copy if the file was copied up since.
    pub(super) fn file_fd(&self, f: &FileHandle) -> Result<Arc<OwnedFd>> {
        let cgen = f.node.copy_gen.load(Ordering::Acquire);
        {
            let cur = f.fd.read();
            if cur.1 == cgen {
                return Ok(cur.0.clone());
            }
        }
        let (dir, name) = self.at(&f.node)?;
        // Copied up, then maybe unlinked (log rotation): the reader goes on with the copy.
        let fd = Arc::new(open_object(dir.as_fd(), &name, f.flags, 0)?);
        *f.fd.write() = (fd.clone(), cgen);
        Ok(fd)
    }

    pub fn read(&self, fh: u64, off: u64, size: u32) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let n = self.read_into(fh, off, &mut buf)?;
        buf.truncate(n);
        Ok(buf)
    }

    /// The file that reads on handle `fh` read from: its upper copy once there is one.
    pub fn read_file(&self, fh: u64) -> Result<Arc<OwnedFd>> {
        self.file_fd(self.handles.file(fh)?.as_file()?)
    }

    /// Read up to `buf.len()` bytes at `off` (fewer only at EOF) into `buf`.
    pub fn read_into(&self, fh: u64, off: u64, buf: &mut [u8]) -> Result<usize> {
        read_at(self.read_file(fh)?.as_fd(), off, buf)
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
            Handle::Dir(d) => self.fsync_dir_node(&d.node, datasync),
        }
    }

    pub fn release(&self, fh: u64) {
        // A node's own handle (a created file's, `adopt_own`) goes with the node: this RELEASE
        // came before the kernel stopped sending them. Only where the kernel opens files
        // itself can there be one; elsewhere a RELEASE costs no lookup for it.
        let own = self.kernel_opens.load(Ordering::Relaxed)
            && self.handles.file(fh).ok().is_some_and(|h| {
                h.as_file()
                    .is_ok_and(|f| f.node.own.lock().is_some_and(|(o, _)| o == fh))
            });
        if !own {
            self.handles.remove(fh);
        }
    }

    /// Keep handle `fh`, just opened by a CREATE, as its node's own (`node_handle`). Once the
    /// kernel opens files itself (`set_kernel_opens`) it sends no RELEASE for a created file
    /// either, so that handle must go when the kernel forgets the node. Only a read-write
    /// handle: `node_handle` never replaces one, which the kernel, holding its number, may
    /// still use. False when the handle is not, the node already has one or `OWN_HANDLES`
    /// nodes do: the caller releases `fh` and answers handle 0, and requests then come through
    /// `node_handle`.
    pub fn adopt_own(&self, fh: u64) -> bool {
        let Ok(h) = self.handles.file(fh) else {
            return false;
        };
        let Ok(f) = h.as_file() else {
            return false;
        };
        let mut own = f.node.own.lock();
        if f.flags & libc::O_ACCMODE != libc::O_RDWR
            || own.is_some()
            || self.own_handles.load(Ordering::Relaxed) >= OWN_HANDLES
        {
            return false;
        }
        *own = Some((fh, libc::O_RDWR));
        self.own_handles.fetch_add(1, Ordering::Relaxed);
        true
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
}

/// Open the object `Union::at` gave as (`dir`, `name`), never following a symlink in the layer:
/// `name` in `dir`, or with an empty name (a node whose last name is gone) the object `dir`
/// holds, through its /proc magic link (reopening /proc/self/fd/N opens exactly that inode).
pub(super) fn open_object(
    dir: BorrowedFd<'_>,
    name: &CStr,
    flags: i32,
    mode: u32,
) -> Result<OwnedFd> {
    if name.is_empty() {
        sys::reopen(dir, flags & !libc::O_NOFOLLOW)
    } else {
        sys::openat(dir, name, flags | libc::O_NOFOLLOW, mode)
    }
}

/// Flags for opening the real file: the caller's access mode and status flags, minus those the
/// kernel already handled (creation, truncation) and O_APPEND (the kernel sends the offset;
/// pwrite on an O_APPEND fd would ignore it).
pub(super) fn open_flags(flags: i32) -> i32 {
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

/// Does `mode` carry setuid, or setgid with group-exec (what a write must drop)?
pub fn mode_has_privileges(mode: u32) -> bool {
    without_privileges(mode) != mode
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

/// Read up to `buf.len()` bytes of `fd` at `off` (fewer only at EOF) into `buf`.
pub fn read_at(fd: BorrowedFd<'_>, off: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = sys::pread(fd, &mut buf[done..], off + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// `kill_priv_fd` for the regular file `dir/name`.
pub(super) fn kill_priv_at(dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    let f = sys::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0)?;
    kill_priv_fd(f.as_fd())
}

/// Drop setuid, setgid (when group-executable) and file capabilities, as `file_remove_privs`
/// does for a writer without CAP_FSETID. Acts only on what is there: removing
/// `security.capability` needs CAP_SETFCAP even when the file has none, which an unprivileged
/// daemon lacks, so a write to an ordinary file must not even try. A capability that is there
/// and cannot be removed fails the write (EPERM) rather than survive it.
fn kill_priv_fd(fd: BorrowedFd<'_>) -> Result<()> {
    let st = sys::fstat(fd)?;
    let mode = without_privileges(st.st_mode);
    if mode != st.st_mode {
        sys::fchmod(fd, mode & 0o7777)?;
    }
    if !sys::fhasxattr(fd, c"security.capability")? {
        return Ok(());
    }
    match sys::fremovexattr(fd, c"security.capability") {
        // Gone meanwhile (another writer dropped it).
        Err(e) if e.is(libc::ENODATA) => Ok(()),
        r => r,
    }
}
