//! `impl fuser::Filesystem`: each handler translates its arguments, calls the core through
//! `answer` (inline) or `UnionFs::serve` (a request that may block: copy-up, data I/O), and
//! shapes the reply (the longer reply bodies live in `reply` and `backing`). No union logic here.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem, FopenFlags, INodeNo,
    KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs,
    ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::answer::{answer, guard};
use super::convert::{attr, creds, kill_priv, time_arg};
use super::reply::{fill, statfs_reply, xattr_reply};
use super::{UnionFs, splice};
use crate::union::{SetAttr, read_at};

/// WRITEs up to this size are written on the session thread even while others wait.
const INLINE_WRITE: usize = 64 << 10;

thread_local! {
    /// Each answering thread's READ buffer, grown to the largest read it has served.
    static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Filesystem for UnionFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        self.negotiate(config);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_os_string();
        let run = move |fs: &super::Fs| {
            #[cfg(feature = "fault-injection")]
            if fs.panic_on.as_deref() == Some(name.as_os_str()) {
                panic!("debug_panic_on: lookup of {name:?}");
            }
            match fs.core.lookup(parent.0, &name) {
                Ok(found) => Ok((Some(found), name)),
                Err(e) if e.is(libc::ENOENT) => Ok((None, name)),
                Err(e) => Err(e),
            }
        };
        self.quick(
            "lookup",
            parent.0,
            reply,
            run,
            move |fs, reply, (found, name)| fs.lookup_reply(reply, parent.0, &name, found),
        );
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        // No reply to send, but a panic must not take the thread down either.
        let _ = guard(|| {
            self.core.forget(ino.0, nlookup);
            Ok(())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.quick(
            "getattr",
            ino.0,
            reply,
            move |fs| fs.core.getattr(ino.0, fh.map(|f| f.0).filter(|&f| f != 0)),
            move |fs, reply, st| {
                tracing::trace!(ino = ino.0, mode = st.st_mode, "getattr");
                reply.attr(&fs.ttl, &attr(&st))
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
        let mut set = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time_arg),
            mtime: mtime.map(time_arg),
            kill_priv: false,
        };
        set.kill_priv = kill_priv(&set, ctime.is_some(), req.uid());
        // Under the writeback cache the kernel keeps a regular file's mtime and ctime itself
        // and writes them back with a SETATTR of those alone, also after an unlink (which
        // changed the ctime). For a file whose last name is gone nobody will see them on disk:
        // the kernel shows its own, and after the last close the file is gone. Writing them
        // journals an inode being deleted (10% of the daemon's time in an rm -rf under
        // `-o noopen`, where every removed file is held), or would copy a lower file up.
        let times_only = set.mtime.is_some()
            && set.atime.is_none()
            && (set.mode, set.uid, set.gid, set.size) == (None, None, None, None)
            && !set.kill_priv
            && self.writeback.load(std::sync::atomic::Ordering::Relaxed);
        self.serve(
            "setattr",
            ino.0,
            reply,
            set.size.is_some() || self.core.copy_up_is_slow(ino.0),
            move |fs| {
                if times_only && fs.core.is_removed_file(ino.0) {
                    return fs.core.getattr(ino.0, None);
                }
                // A truncate through an fd the kernel opened itself (handle 0) goes through the
                // node's handle: the file may have lost its last name since.
                let own = match fh.map(|f| f.0) {
                    Some(0) if set.size.is_some() => Some(fs.fh(ino.0, 0, true)?),
                    _ => None,
                };
                let fh = match &own {
                    Some(h) => Some(h.fh),
                    None => fh.map(|f| f.0).filter(|&f| f != 0),
                };
                fs.core.setattr(ino.0, fh, set)
            },
            |fs, reply, st| reply.attr(&fs.ttl, &attr(&st)),
        );
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
        self.serve(
            "rename",
            parent.0,
            reply,
            // A lower file renamed is copied up first.
            self.core.dir_has_lowers(parent.0),
            move |fs| {
                fs.core
                    .rename(parent.0, &name, newparent.0, &newname, flags.bits())
            },
            |_, reply, ()| reply.ok(),
        );
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
        self.serve(
            "link",
            ino.0,
            reply,
            self.core.copy_up_is_slow(ino.0),
            move |fs| fs.core.link(ino.0, newparent.0, &newname),
            |fs, reply, (node, st)| fs.entry(reply, &node, &st),
        );
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if self.no_open() {
            // The kernel opens regular files itself from now on (see `init`).
            reply.error(Errno::ENOSYS);
            return;
        }
        let may_copy = crate::union::open_writes(flags.0) && self.core.copy_up_is_slow(ino.0);
        self.serve(
            "open",
            ino.0,
            reply,
            may_copy,
            move |fs| fs.core.open(ino.0, flags.0),
            move |fs, reply, fh| fs.opened(reply, ino.0, fh, flags.0),
        );
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Spliced from the file when it is large enough (`splice`); else into a buffer kept by
        // the thread that answers: a fresh one per READ (up to 1 MiB) would be zeroed and
        // faulted in every time. A lone READ (one sequential reader) is answered here: handing
        // it to a worker costs a wakeup per READ.
        let unique = req.unique().0;
        let busy = self.busy();
        self.serve(
            "read",
            ino.0,
            reply,
            busy,
            move |fs| {
                let h = fs.fh(ino.0, fh.0, false)?;
                let file = fs.core.read_file(h.fh)?;
                if let Some(dev) = fs.dev()
                    && splice::reply_read(dev, unique, file.as_fd(), offset, size as usize)?
                {
                    return Ok(None);
                }
                READ_BUF
                    .with_borrow_mut(|buf| {
                        buf.resize(buf.len().max(size as usize), 0);
                        read_at(file.as_fd(), offset, &mut buf[..size as usize])
                    })
                    .map(Some)
            },
            |_, reply, n| match n {
                Some(n) => READ_BUF.with_borrow(|buf| reply.data(&buf[..n])),
                None => splice::answered(reply),
            },
        );
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
        // The first write through a file the kernel opened itself may copy it up: a worker's.
        let may_copy = fh.0 == 0 && !self.core.in_upper(ino.0);
        if !may_copy && (data.len() <= INLINE_WRITE || !self.busy()) {
            // A small WRITE (the kernel's writeback of scattered pages), or nothing else
            // waiting (one writer: dd, tar, a compiler): write from the request buffer here,
            // without copying it for a worker; a WRITE into the upper's page cache is over in
            // microseconds, less than handing it over.
            let write = || {
                let h = self.fh(ino.0, fh.0, true)?;
                self.core.write(h.fh, offset, data, kill)
            };
            answer("write", ino.0, reply, write, |reply, n| {
                reply.written(n as u32)
            });
            return;
        }
        let data = data.to_vec();
        self.serve(
            "write",
            ino.0,
            reply,
            true,
            move |fs| {
                let h = fs.fh(ino.0, fh.0, true)?;
                fs.core.write(h.fh, offset, &data, kill)
            },
            |_, reply, n| reply.written(n as u32),
        );
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
        self.serve(
            "fsync",
            ino.0,
            reply,
            true,
            move |fs| {
                let h = fs.fh(ino.0, fh.0, false)?;
                fs.core.fsync(h.fh, datasync)
            },
            |_, reply, ()| reply.ok(),
        );
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        if self.no_opendir() {
            // The kernel opens directories itself from now on (see `init`), caching their
            // listings (FOPEN_CACHE_DIR and FOPEN_KEEP_CACHE, its defaults then).
            reply.error(Errno::ENOSYS);
            return;
        }
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
        let run = move |fs: &super::Fs| fs.listing(ino.0, fh.0, offset);
        self.quick("readdir", ino.0, reply, run, move |_, reply, entries| {
            fill(reply, &entries, offset)
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
        let run = move |fs: &super::Fs| fs.listing(ino.0, fh.0, offset);
        self.quick(
            "readdirplus",
            ino.0,
            reply,
            run,
            move |fs, reply, entries| fs.fill_plus(reply, ino.0, &entries, offset),
        );
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
        self.serve(
            "fsyncdir",
            ino.0,
            reply,
            true,
            move |fs| {
                if fs.no_opendir() {
                    fs.core.fsync_dir(ino.0, datasync)
                } else {
                    fs.core.fsync(fh.0, datasync)
                }
            },
            |_, reply, ()| reply.ok(),
        );
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        answer(
            "statfs",
            ino.0,
            reply,
            || self.core.statfs(),
            |reply, s| statfs_reply(reply, &s),
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
        self.serve(
            "setxattr",
            ino.0,
            reply,
            self.core.copy_up_is_slow(ino.0),
            move |fs| fs.core.setxattr(ino.0, &name, &value, flags),
            |_, reply, ()| reply.ok(),
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let name = name.to_os_string();
        self.quick(
            "getxattr",
            ino.0,
            reply,
            move |fs| fs.core.getxattr(ino.0, &name),
            move |_, reply, v| xattr_reply(reply, &v, size),
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
        self.serve(
            "removexattr",
            ino.0,
            reply,
            self.core.copy_up_is_slow(ino.0),
            move |fs| fs.core.removexattr(ino.0, &name),
            |_, reply, ()| reply.ok(),
        );
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
                // Once the kernel opens files itself it sends no RELEASE for a created file
                // either: the handle becomes the node's own, or goes now (handle 0).
                let fh = match self.no_open() && !self.core.adopt_own(fh) {
                    true => {
                        self.core.release(fh);
                        0
                    }
                    false => fh,
                };
                self.created(reply, (&node, &st, fh), flags)
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
        self.serve(
            "fallocate",
            ino.0,
            reply,
            true,
            move |fs| {
                let h = fs.fh(ino.0, fh.0, true)?;
                fs.core.fallocate(h.fh, mode, offset, length)
            },
            |_, reply, ()| reply.ok(),
        );
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
        // Under the writeback cache the kernel may hold data we have not seen, and it does not
        // write it back before asking: our SEEK_DATA/SEEK_HOLE could call fresh data a hole
        // (and a sparse-aware copy would skip it). ENOSYS makes the kernel answer itself from
        // its size: data up to EOF, the one hole there (docs/semantics.md, D15).
        if self.writeback.load(std::sync::atomic::Ordering::Relaxed) {
            reply.error(Errno::ENOSYS);
            return;
        }
        answer(
            "lseek",
            ino.0,
            reply,
            || {
                let h = self.fh(ino.0, fh.0, false)?;
                self.core.lseek(h.fh, offset, whence)
            },
            |reply, off| reply.offset(off),
        )
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.serve(
            "copy_file_range",
            ino_in.0,
            reply,
            true,
            move |fs| {
                let h_in = fs.fh(ino_in.0, fh_in.0, false)?;
                let h_out = fs.fh(ino_out.0, fh_out.0, true)?;
                fs.core
                    .copy_file_range(h_in.fh, offset_in, h_out.fh, offset_out, len)
            },
            |_, reply, n| reply.written(n as u32),
        );
    }
}
