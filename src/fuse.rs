//! The fuser adapter: each handler calls the core and replies. This is the only user of fuser's
//! reply types and the only place an [`Error`] becomes an errno. Every handler answers through
//! `answer`, which runs the core under the panic guard and logs and sends errors: a failure,
//! even a bug, is a reply.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, BackingId, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry,
    ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::error::Error;
use crate::handle::DirEntry;
use crate::inode::Node;
use crate::pool::Pool;
use crate::sys::{Stat, Time};
use crate::union::{Creds, SetAttr, Union};
use parking_lot::Mutex;

/// The filesystem fuser serves: the shared state, and the workers that take the requests
/// which may block (see `pool`). Handlers reach the state through `Deref`.
pub struct UnionFs {
    fs: Arc<Fs>,
    pool: Pool,
}

impl std::ops::Deref for UnionFs {
    type Target = Fs;
    fn deref(&self) -> &Fs {
        &self.fs
    }
}

pub struct Fs {
    pub core: Union,
    /// How long the kernel may cache entries and attributes. Only this daemon changes the
    /// tree while mounted, and it tells the kernel through its replies, so this can be long.
    pub ttl: Duration,
    /// Passthrough was asked for; `passthrough` says whether the kernel agreed.
    pub want_passthrough: bool,
    passthrough: AtomicBool,
    /// Fault injection (`-o debug_panic_on=NAME`): a lookup of NAME panics.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    panic_on: Option<std::ffi::OsString>,
    /// How the kernel does I/O on each open node. It allows one mode per inode at a time
    /// (cached, or passthrough to one backing file), so every open of a node follows the first.
    io: Mutex<IoState>,
}

#[derive(Default)]
struct IoState {
    nodes: HashMap<u64, IoMode>,
    /// Open handle -> its node and the backing file it pins (None when cached).
    handles: HashMap<u64, (u64, Option<Arc<BackingId>>)>,
}

enum IoMode {
    /// This many handles are open in cached mode.
    Cached(usize),
    /// Handles share this backing file (held strongly by each handle).
    Passthrough(Weak<BackingId>),
}

impl UnionFs {
    /// `workers`: threads for the requests that may block (at least one).
    pub fn new(
        core: Union,
        ttl: Duration,
        want_passthrough: bool,
        panic_on: Option<std::ffi::OsString>,
        workers: usize,
    ) -> std::io::Result<UnionFs> {
        Ok(UnionFs {
            fs: Arc::new(Fs {
                core,
                ttl,
                want_passthrough,
                passthrough: AtomicBool::new(false),
                panic_on,
                io: Mutex::new(IoState::default()),
            }),
            pool: Pool::new(workers)?,
        })
    }

    /// Run `job` with the shared state on a worker thread.
    fn offload(&self, job: impl FnOnce(&Fs) + Send + 'static) {
        let fs = self.fs.clone();
        self.pool.run(move || job(&fs));
    }

    /// Run `job` on a worker thread if it `may_block`, else here and now.
    fn run(&self, job: impl FnOnce(&Fs) + Send + 'static, may_block: bool) {
        if may_block {
            self.offload(job);
        } else {
            job(self);
        }
    }
}

impl Fs {
    /// How to answer an open of `ino` as handle `fh`. Files in the upper go through
    /// passthrough (one read-write backing file per node). Lower files are cached instead: a
    /// copy-up would need to switch a live backing file to the copy, which the kernel can't,
    /// and kernel overlay's rule that read-only fds see later writes would break. A node
    /// already open in one mode stays in it until its last handle is released.
    ///
    /// The `io` lock is held only to read and update the maps: finding, opening and
    /// registering a backing file happen outside it, and an open that loses the race to
    /// settle the node's mode follows the winner and drops its own backing file.
    fn open_mode(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> (FopenFlags, Option<Arc<BackingId>>) {
        let joined = self.io.lock().join(ino, fh);
        let backing = match joined {
            Some(b) => b,
            None => {
                let fresh = self.new_backing(ino, fh, register);
                let mut io = self.io.lock();
                match io.join(ino, fh) {
                    // Another open settled the node first; `fresh` (if any) is unregistered
                    // when dropped, after the lock is released.
                    Some(b) => b,
                    None => {
                        let mode = match &fresh {
                            Some(b) => IoMode::Passthrough(Arc::downgrade(b)),
                            None => IoMode::Cached(1),
                        };
                        io.nodes.insert(ino, mode);
                        io.handles.insert(fh, (ino, fresh.clone()));
                        fresh
                    }
                }
            }
        };
        let flags = if backing.is_some() {
            FopenFlags::empty()
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        (flags, backing)
    }

    fn new_backing(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let fd = match self.core.backing_file(ino, fh) {
            Ok(Some(fd)) => fd,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(ino, error = %e, "no backing file; cached I/O");
                return None;
            }
        };
        match register(fd.as_fd()) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                // Most likely no CAP_SYS_ADMIN for the backing ioctl: say so once, carry on.
                if self.passthrough.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "passthrough unavailable; using the read/write path");
                }
                None
            }
        }
    }

    fn release_io(&self, fh: u64) {
        let backing = {
            let mut io = self.io.lock();
            let Some((ino, backing)) = io.handles.remove(&fh) else {
                return;
            };
            let last = match io.nodes.get_mut(&ino) {
                Some(IoMode::Cached(n)) if backing.is_none() => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                // Ours is the only reference left: no open can take another once the entry
                // is gone (they upgrade under this lock).
                Some(IoMode::Passthrough(w)) => w.strong_count() <= usize::from(backing.is_some()),
                _ => false,
            };
            if last {
                io.nodes.remove(&ino);
            }
            backing
        };
        // The last reference unregisters the backing file (an ioctl): outside the lock.
        drop(backing);
    }
}

impl IoState {
    /// Open `fh` in the mode `ino` already has, if it has one: `Some(backing)`, `Some(None)`
    /// meaning cached. `None` when the node's mode is still to be chosen.
    fn join(&mut self, ino: u64, fh: u64) -> Option<Option<Arc<BackingId>>> {
        let backing = match self.nodes.get_mut(&ino) {
            Some(IoMode::Cached(n)) if *n > 0 => {
                *n += 1;
                None
            }
            Some(IoMode::Passthrough(w)) => Some(w.upgrade()?),
            _ => return None,
        };
        self.handles.insert(fh, (ino, backing.clone()));
        Some(backing)
    }
}

/// Run a core operation, turning a panic into EIO so a bug answers one request with an error
/// instead of killing the worker thread (and, after enough of them, the mount).
fn guard<T>(f: impl FnOnce() -> crate::error::Result<T>) -> crate::error::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("a request handler panicked; answered EIO");
        Err(Error::Internal)
    })
}

/// The one way a handler answers: `run` (the core's part) under the panic guard; its value
/// goes to `ok` with the reply, its error is logged by `log_err` and sent. A panic in `ok`
/// drops the reply unsent, which fuser answers with EIO.
fn answer<R: ReplyError, T>(
    op: &'static str,
    ino: u64,
    reply: R,
    run: impl FnOnce() -> crate::error::Result<T>,
    ok: impl FnOnce(R, T),
) {
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match guard(run) {
        Ok(v) => ok(reply, v),
        Err(e) => reply.error(log_err(op, ino, &e)),
    }));
    if sent.is_err() {
        tracing::error!(op, ino, "a reply panicked; answered EIO");
    }
}

/// A reply that can carry an errno: every fuser reply type, whose own trait is private.
trait ReplyError {
    fn error(self, e: Errno);
}

macro_rules! reply_error {
    ($($t:ty),* $(,)?) => {
        $(impl ReplyError for $t {
            fn error(self, e: Errno) {
                <$t>::error(self, e)
            }
        })*
    };
}

reply_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

/// Attributes of "no such entry": node id 0 tells the kernel to cache a negative dentry.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind: FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn errno_of(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Log at a level that matches how surprising the errno is, then reply with it.
fn log_err(op: &str, ino: u64, e: &Error) -> Errno {
    match e.errno() {
        libc::ENOENT | libc::ENODATA | libc::EEXIST | libc::ENOTEMPTY | libc::ERANGE => {
            tracing::trace!(op, ino, error = %e)
        }
        libc::EIO | libc::ESTALE => tracing::warn!(op, ino, error = %e),
        _ => tracing::debug!(op, ino, error = %e),
    }
    errno_of(e)
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::new(sec.unsigned_abs(), 0) + Duration::from_nanos(nsec as u64)
    }
}

fn file_type(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn dtype_file_type(dtype: u8) -> FileType {
    match dtype {
        libc::DT_DIR => FileType::Directory,
        libc::DT_LNK => FileType::Symlink,
        libc::DT_CHR => FileType::CharDevice,
        libc::DT_BLK => FileType::BlockDevice,
        libc::DT_FIFO => FileType::NamedPipe,
        libc::DT_SOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

pub fn attr(st: &Stat) -> FileAttr {
    FileAttr {
        ino: INodeNo(st.st_ino),
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: file_type(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

fn time_arg(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::Now,
        TimeOrNow::SpecificTime(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Time::At(d.as_secs() as i64, d.subsec_nanos() as i64),
            Err(e) => {
                let d = e.duration();
                let (s, ns) = (d.as_secs() as i64, d.subsec_nanos() as i64);
                if ns == 0 {
                    Time::At(-s, 0)
                } else {
                    Time::At(-s - 1, 1_000_000_000 - ns)
                }
            }
        },
    }
}

fn creds(req: &Request) -> Creds {
    Creds {
        uid: req.uid(),
        gid: req.gid(),
    }
}

impl Fs {
    /// Reply to a lookup-like request. fuser takes the node id from `attr.ino`; when st_ino
    /// differs from the node id (a name of a lower hard link), the attributes are sent with
    /// no cache lifetime so the kernel's first stat asks getattr, whose reply sets st_ino.
    fn entry(&self, reply: ReplyEntry, node: &Node, st: &Stat) {
        let (a, attr_ttl) = self.entry_attr(node, st);
        reply.entry_with_ttls(&attr_ttl, &self.ttl, &a, Generation(0));
    }

    fn entry_attr(&self, node: &Node, st: &Stat) -> (FileAttr, Duration) {
        let mut a = attr(st);
        if a.ino.0 == node.ino {
            return (a, self.ttl);
        }
        a.ino = INodeNo(node.ino);
        (a, Duration::ZERO)
    }

    /// The readdirplus listing after cookie `offset`: each entry looked up (a reference the
    /// kernel keeps), or given back when the reply is full.
    fn fill_plus(
        &self,
        mut reply: ReplyDirectoryPlus,
        ino: u64,
        entries: &[DirEntry],
        offset: u64,
    ) {
        for e in after(entries, offset) {
            let name = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(e.name.to_bytes());
            let off = e.off;
            let full = if off <= 2 {
                // "." and "..": the kernel takes no reference on them, so neither do we.
                match guard(|| self.core.getattr(e.ino, None)) {
                    Ok(st) => reply.add(
                        INodeNo(e.ino),
                        off,
                        name,
                        &self.ttl,
                        &attr(&st),
                        Generation(0),
                    ),
                    Err(_) => reply.add(
                        INodeNo(0),
                        off,
                        name,
                        &self.ttl,
                        &negative_attr(),
                        Generation(0),
                    ),
                }
            } else {
                match guard(|| self.core.lookup(ino, name)) {
                    Ok((node, st)) => {
                        let (a, ttl) = self.entry_attr(&node, &st);
                        let full = reply.add(INodeNo(node.ino), off, name, &ttl, &a, Generation(0));
                        if full {
                            // Not sent: give back the reference the lookup took.
                            self.core.forget(node.ino, 1);
                        }
                        full
                    }
                    // Gone since opendir: skip it.
                    Err(_) => continue,
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each is an optimisation the kernel may refuse; the mount works without any of them.
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            // The kernel enforces POSIX ACLs (as on kernel overlay) and caches them, so
            // `ls -l` does not cost two getxattr round trips per file.
            InitFlags::FUSE_POSIX_ACL,
            // Dropping setuid bits and capabilities on write is ours to do (see
            // `Union::write`); otherwise the kernel asks for security.capability before
            // every single write, one round trip each.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            let _ = config.add_capabilities(flag);
        }
        if self.want_passthrough
            && crate::config::initial_ns_root()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
            self.core.set_share_backing();
        }
        tracing::info!(
            passthrough = self.passthrough.load(Ordering::Relaxed),
            "data path"
        );
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let run = || {
            #[cfg(feature = "fault-injection")]
            if self.panic_on.as_deref() == Some(name) {
                panic!("debug_panic_on: lookup of {name:?}");
            }
            match self.core.lookup(parent.0, name) {
                Ok(found) => Ok(Some(found)),
                Err(e) if e.is(libc::ENOENT) => Ok(None),
                Err(e) => Err(e),
            }
        };
        answer("lookup", parent.0, reply, run, |reply, found| match found {
            Some((node, st)) => {
                tracing::trace!(
                    parent = parent.0,
                    ?name,
                    node = node.ino,
                    mode = st.st_mode,
                    "lookup"
                );
                self.entry(reply, &node, &st)
            }
            // A negative entry the kernel may cache: names appear only through this daemon,
            // and the kernel replaces the negative dentry when one is created through it.
            None => reply.entry(&self.ttl, &negative_attr(), Generation(0)),
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // No reply to send, but a panic must not take the thread down either.
        let _ = guard(|| {
            self.core.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        answer(
            "getattr",
            ino.0,
            reply,
            || self.core.getattr(ino.0, fh.map(|f| f.0)),
            |reply, st| {
                tracing::trace!(ino = ino.0, mode = st.st_mode, "getattr");
                reply.attr(&self.ttl, &attr(&st))
            },
        )
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_arg),
            mtime: mtime.map(time_arg),
            // With HANDLE_KILLPRIV_V2 dropping privileges is ours: on a truncate by anyone but
            // root (the one caller with CAP_FSETID we can tell from a request), and on the
            // kernel's bare "kill suid/sgid" SETATTR (FATTR_KILL_SUIDGID, which fuser does not
            // pass on: it arrives as a request that changes nothing else).
            kill_priv: (size.is_some() && req.uid() != 0)
                || (mode.is_none()
                    && uid.is_none()
                    && gid.is_none()
                    && size.is_none()
                    && atime.is_none()
                    && mtime.is_none()
                    && ctime.is_none()),
        };
        let work = move |fs: &Fs| {
            answer(
                "setattr",
                ino.0,
                reply,
                || fs.core.setattr(ino.0, fh.map(|f| f.0), set),
                |reply, st| reply.attr(&fs.ttl, &attr(&st)),
            )
        };
        self.run(work, set.size.is_some() || self.core.copy_up_is_slow(ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        answer(
            "readlink",
            ino.0,
            reply,
            || self.core.readlink(ino.0),
            |reply, t| reply.data(&t),
        )
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        answer(
            "mknod",
            parent.0,
            reply,
            || self.core.mknod(parent.0, name, mode, rdev, creds(req)),
            |reply, (node, st)| self.entry(reply, &node, &st),
        )
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        answer(
            "mkdir",
            parent.0,
            reply,
            || self.core.mkdir(parent.0, name, mode, creds(req)),
            |reply, (node, st)| self.entry(reply, &node, &st),
        )
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(
            "unlink",
            parent.0,
            reply,
            || self.core.unlink(parent.0, name),
            |reply, ()| reply.ok(),
        )
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        answer(
            "rmdir",
            parent.0,
            reply,
            || self.core.rmdir(parent.0, name),
            |reply, ()| reply.ok(),
        )
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        answer(
            "symlink",
            parent.0,
            reply,
            || {
                self.core
                    .symlink(parent.0, link_name, target.as_os_str(), creds(req))
            },
            |reply, (node, st)| self.entry(reply, &node, &st),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_os_string(), newname.to_os_string());
        let work = move |fs: &Fs| {
            answer(
                "rename",
                parent.0,
                reply,
                || {
                    fs.core
                        .rename(parent.0, &name, newparent.0, &newname, flags.bits())
                },
                |reply, ()| reply.ok(),
            )
        };
        // A lower file renamed is copied up first.
        self.run(work, self.core.dir_has_lowers(parent.0));
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = newname.to_os_string();
        let work = move |fs: &Fs| {
            answer(
                "link",
                ino.0,
                reply,
                || fs.core.link(ino.0, newparent.0, &newname),
                |reply, (node, st)| fs.entry(reply, &node, &st),
            )
        };
        self.run(work, self.core.copy_up_is_slow(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let work = move |fs: &Fs| {
            answer(
                "open",
                ino.0,
                reply,
                || fs.core.open(ino.0, flags.0),
                |reply, fh| match fs.open_mode(ino.0, fh, |fd| reply.open_backing(fd)) {
                    (f, Some(b)) => reply.opened_passthrough(FileHandle(fh), f, &b),
                    (f, None) => reply.opened(FileHandle(fh), f),
                },
            )
        };
        let may_copy = crate::union::open_writes(flags.0) && self.core.copy_up_is_slow(ino.0);
        self.run(work, may_copy);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.offload(move |fs| {
            answer(
                "read",
                ino.0,
                reply,
                || fs.core.read(fh.0, offset, size),
                |reply, data| reply.data(&data),
            )
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        let data = data.to_vec();
        self.offload(move |fs| {
            answer(
                "write",
                ino.0,
                reply,
                || fs.core.write(fh.0, offset, &data, kill),
                |reply, n| reply.written(n as u32),
            )
        });
    }

    /// Nothing to write back at close (writes reach the upper file before they are answered,
    /// and POSIX locks stay in the kernel): ENOSYS makes the kernel stop sending FLUSH, one
    /// round trip per close(2) saved. Answered here rather than by fuser's default, which
    /// logs every one as a warning.
    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let run = || {
            self.core.release(fh.0);
            self.release_io(fh.0);
            Ok(())
        };
        answer("release", ino.0, reply, run, |reply, ()| reply.ok());
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.offload(move |fs| {
            answer(
                "fsync",
                ino.0,
                reply,
                || fs.core.fsync(fh.0, datasync),
                |reply, ()| reply.ok(),
            )
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        // The kernel may cache the listing: every change to a directory goes through this
        // daemon, and the kernel drops its cache on each such change itself.
        let cache = FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE;
        answer(
            "opendir",
            ino.0,
            reply,
            || self.core.opendir(ino.0),
            |reply, fh| reply.opened(FileHandle(fh), cache),
        );
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        let run = || self.core.dir_entries(fh.0, offset);
        answer("readdir", ino.0, reply, run, |mut reply, entries| {
            for e in after(&entries, offset) {
                let name = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(e.name.to_bytes());
                if reply.add(INodeNo(e.ino), e.off, dtype_file_type(e.dtype), name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        let run = || self.core.dir_entries(fh.0, offset);
        answer("readdirplus", ino.0, reply, run, |reply, entries| {
            self.fill_plus(reply, ino.0, &entries, offset)
        });
    }
    fn releasedir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        let run = || {
            self.core.release(fh.0);
            Ok(())
        };
        answer("releasedir", ino.0, reply, run, |reply, ()| reply.ok());
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.offload(move |fs| {
            answer(
                "fsyncdir",
                ino.0,
                reply,
                || fs.core.fsync(fh.0, datasync),
                |reply, ()| reply.ok(),
            )
        });
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        answer(
            "statfs",
            ino.0,
            reply,
            || self.core.statfs(),
            |reply, s| {
                reply.statfs(
                    s.f_blocks,
                    s.f_bfree,
                    s.f_bavail,
                    s.f_files,
                    s.f_ffree,
                    s.f_bsize as u32,
                    s.f_namemax as u32,
                    s.f_frsize as u32,
                )
            },
        )
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.to_os_string(), value.to_vec());
        let work = move |fs: &Fs| {
            answer(
                "setxattr",
                ino.0,
                reply,
                || fs.core.setxattr(ino.0, &name, &value, flags),
                |reply, ()| reply.ok(),
            )
        };
        self.run(work, self.core.copy_up_is_slow(ino.0));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        answer(
            "getxattr",
            ino.0,
            reply,
            || self.core.getxattr(ino.0, name),
            |reply, v| xattr_reply(reply, &v, size),
        )
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        answer(
            "listxattr",
            ino.0,
            reply,
            || self.core.listxattr(ino.0),
            |reply, v| xattr_reply(reply, &v, size),
        )
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_os_string();
        let work = move |fs: &Fs| {
            answer(
                "removexattr",
                ino.0,
                reply,
                || fs.core.removexattr(ino.0, &name),
                |reply, ()| reply.ok(),
            )
        };
        self.run(work, self.core.copy_up_is_slow(ino.0));
    }

    fn access(&self, _req: &Request, ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Only reached without default_permissions; existence is all we check then.
        answer(
            "access",
            ino.0,
            reply,
            || self.core.getattr(ino.0, None),
            |reply, _| reply.ok(),
        )
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        answer(
            "create",
            parent.0,
            reply,
            || self.core.create(parent.0, name, mode, flags, creds(req)),
            |reply, (node, st, fh)| {
                // fuser takes the node id from attr.ino, as for lookups (see `entry`); when
                // st_ino differs, nothing is cached so the next stat asks getattr.
                let (a, ttl) = self.entry_attr(&node, &st);
                match self.open_mode(node.ino, fh, |fd| reply.open_backing(fd)) {
                    (f, Some(b)) => {
                        reply.created_passthrough(&ttl, &a, Generation(0), FileHandle(fh), f, &b)
                    }
                    (f, None) => reply.created(&ttl, &a, Generation(0), FileHandle(fh), f),
                }
            },
        )
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // No ioctl means anything on a union file (isatty's TCGETS, say): the answer for a
        // regular file on any filesystem.
        reply.error(Errno::ENOTTY);
    }

    fn poll(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _ph: fuser::PollNotifier,
        _events: fuser::PollEvents,
        _flags: fuser::PollFlags,
        reply: fuser::ReplyPoll,
    ) {
        // ENOSYS makes the kernel answer poll itself from now on ("always ready"), which is
        // right for files in a union: they are regular files, fifos opened by the kernel, or
        // device nodes the kernel handles.
        reply.error(Errno::ENOSYS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.offload(move |fs| {
            answer(
                "fallocate",
                ino.0,
                reply,
                || fs.core.fallocate(fh.0, mode, offset, length),
                |reply, ()| reply.ok(),
            )
        });
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        answer(
            "lseek",
            ino.0,
            reply,
            || self.core.lseek(fh.0, offset, whence),
            |reply, off| reply.offset(off),
        )
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.offload(move |fs| {
            answer(
                "copy_file_range",
                ino_in.0,
                reply,
                || {
                    fs.core
                        .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
                },
                |reply, n| reply.written(n as u32),
            )
        });
    }
}

/// The entries of a cookie-ordered listing that come after cookie `offset`.
fn after(entries: &[DirEntry], offset: u64) -> &[DirEntry] {
    &entries[entries.partition_point(|e| e.off <= offset)..]
}

fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
