//! Thin safe wrappers over the `*at` syscalls the union needs; `process` has the daemon's
//! fork, signal and stdio calls. With `runtime::sys`, the only modules with `unsafe`.
//! Every call here is relative to a directory fd and never follows a symlink in the last
//! component unless the name says so (`reopen` goes through /proc on purpose, see there).

pub mod process;
mod xattr;

pub use xattr::{
    fhasxattr, fremovexattr, getxattrat_vec, lgetxattr_vec, listxattrat_vec, llistxattr_vec,
    removexattrat, setxattrat,
};

use std::ffi::{CStr, CString, OsStr};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use crate::error::{Error, Result};

pub type Stat = libc::stat;

fn check(ret: libc::c_int) -> Result<libc::c_int> {
    if ret < 0 { Err(Error::last()) } else { Ok(ret) }
}

fn check_size(ret: isize) -> Result<usize> {
    if ret < 0 {
        Err(Error::last())
    } else {
        Ok(ret as usize)
    }
}

/// A name as a C string. Names from the kernel never contain NUL; one that does is EINVAL.
pub fn cname(name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| Error::Sys(libc::EINVAL))
}

pub const DOT: &CStr = c".";
pub const EMPTY: &CStr = c"";

pub fn openat(dir: BorrowedFd<'_>, name: &CStr, flags: i32, mode: u32) -> Result<OwnedFd> {
    // SAFETY: name is NUL-terminated; the returned fd is fresh and owned by us.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    let fd = check(fd)?;
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat for reading without touching the file's atime (kernel overlay opens lower files with
/// O_NOATIME, so reads through the mount leave the lowers as they were). O_NOATIME needs the
/// file's owner or CAP_FOWNER: on EPERM the open is retried once without it.
pub fn openat_noatime(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<OwnedFd> {
    match openat(dir, name, flags | libc::O_NOATIME, 0) {
        Err(e) if e.is(libc::EPERM) && flags & libc::O_NOATIME == 0 => openat(dir, name, flags, 0),
        r => r,
    }
}

/// An O_PATH handle on a directory in a layer, refusing symlinks.
pub fn open_dir_path(dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    openat(
        dir,
        name,
        libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW,
        0,
    )
}

pub fn open_path(path: &CStr, flags: i32) -> Result<OwnedFd> {
    // SAFETY: as in openat.
    let fd = check(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })?;
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// mount_setattr(2) flags (linux/mount.h).
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOATIME: u64 = 0x10;
/// All the atime bits: to be cleared whenever one of them is set.
pub const MOUNT_ATTR_ATIME: u64 = 0x70;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// mount_setattr(2) on the mount `fd` is (an open_tree or O_PATH fd): set and clear mount
/// attributes only, so flags a user namespace may not clear (nosuid, nodev locked by the parent
/// namespace) stay as they are; `recursive`: on every mount below it too.
pub fn mount_setattr(fd: BorrowedFd<'_>, set: u64, clear: u64, recursive: bool) -> Result<()> {
    #[repr(C)]
    struct MountAttr {
        attr_set: u64,
        attr_clr: u64,
        propagation: u64,
        userns_fd: u64,
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as libc::c_uint | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: fd is valid, the path is the empty string, attr is a mount_attr of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    check(i32::try_from(r).unwrap_or(-1)).map(drop)
}

/// A private clone of the mount tree at `dir` (open_tree(2) with `OPEN_TREE_CLONE`, attached
/// nowhere), made read-only and `noatime`; the fd is the clone's root. Files opened through it
/// can't be written, and reads through them never touch an atime, whatever flags the opener
/// passes (the kernel opens a FUSE passthrough backing file with the reader's flags, so
/// O_NOATIME can't be relied on there). Needs CAP_SYS_ADMIN.
pub fn read_only_clone(dir: BorrowedFd<'_>) -> Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    let flags = flags | libc::AT_EMPTY_PATH as libc::c_uint | AT_RECURSIVE;
    // SAFETY: dir is a valid fd, the path is the empty string, flags are plain bits.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, dir.as_raw_fd(), EMPTY.as_ptr(), flags) };
    let fd = check(i32::try_from(fd).unwrap_or(-1))?;
    // SAFETY: a fresh fd returned by open_tree, owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOATIME;
    mount_setattr(fd.as_fd(), set, MOUNT_ATTR_ATIME, true)?;
    Ok(fd)
}

/// lstat of `dir/name`, or of `dir` itself when `name` is empty.
pub fn fstatat(dir: BorrowedFd<'_>, name: &CStr) -> Result<Stat> {
    let empty = if name.is_empty() {
        libc::AT_EMPTY_PATH
    } else {
        0
    };
    fstatat_flags(dir, name, libc::AT_SYMLINK_NOFOLLOW | empty)
}

/// fstatat that reports "no such entry" as None; every other failure is an error.
pub fn fstatat_opt(dir: BorrowedFd<'_>, name: &CStr) -> Result<Option<Stat>> {
    match fstatat(dir, name) {
        Ok(st) => Ok(Some(st)),
        Err(e) if e.is(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn fstat(fd: BorrowedFd<'_>) -> Result<Stat> {
    fstatat_flags(fd, EMPTY, libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW)
}

fn fstatat_flags(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<Stat> {
    let mut st = MaybeUninit::<Stat>::uninit();
    // SAFETY: as in fstatat.
    check(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    // SAFETY: initialised by the successful call.
    Ok(unsafe { st.assume_init() })
}

pub fn mkdirat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    // SAFETY: plain syscall on valid pointers.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32, rdev: u64) -> Result<()> {
    // SAFETY: plain syscall on valid pointers.
    check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlinkat(target: &CStr, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: plain syscall on valid pointers.
    check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn readlinkat(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: buf is writable for its whole length.
    let n = check_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn unlinkat(dir: BorrowedFd<'_>, name: &CStr, flags: i32) -> Result<()> {
    // SAFETY: plain syscall on valid pointers.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
    flags: u32,
) -> Result<()> {
    // SAFETY: plain syscall on valid pointers.
    check(unsafe {
        libc::renameat2(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn linkat(
    old_dir: BorrowedFd<'_>,
    old: &CStr,
    new_dir: BorrowedFd<'_>,
    new: &CStr,
) -> Result<()> {
    // SAFETY: plain syscall; flags 0 so a symlink is linked, not followed.
    check(unsafe {
        libc::linkat(
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            0,
        )
    })
    .map(drop)
}

pub fn fchownat(dir: BorrowedFd<'_>, name: &CStr, uid: u32, gid: u32) -> Result<()> {
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: plain syscall; -1 (u32::MAX) leaves an id unchanged as chown(2) defines.
    check(unsafe { libc::fchownat(dir.as_raw_fd(), name.as_ptr(), uid, gid, flags) }).map(drop)
}

/// chmod of a non-symlink named relative to `dir` (the callers never pass a symlink: the kernel
/// resolves them before SETATTR, and copy-up skips mode for symlinks).
/// An empty name is `dir` itself, which may be an O_PATH fd (fchmod would give EBADF): its
/// /proc magic link is followed to exactly that inode.
pub fn fchmodat(dir: BorrowedFd<'_>, name: &CStr, mode: u32) -> Result<()> {
    if name.is_empty() {
        let path = proc_path(dir, EMPTY);
        // SAFETY: plain syscall on a valid path.
        return check(unsafe { libc::chmod(path.as_ptr(), mode) }).map(drop);
    }
    // SAFETY: plain syscall on valid pointers.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) }).map(drop)
}

pub fn fchmod(fd: BorrowedFd<'_>, mode: u32) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

pub fn fchown(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) }).map(drop)
}

/// The timespec for utimensat: a time, now, or leave alone.
#[derive(Clone, Copy, Debug)]
pub enum Time {
    At(i64, i64),
    Now,
    Omit,
}

impl Time {
    fn spec(self) -> libc::timespec {
        match self {
            Time::At(s, ns) => libc::timespec {
                tv_sec: s,
                tv_nsec: ns,
            },
            Time::Now => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_NOW,
            },
            Time::Omit => libc::timespec {
                tv_sec: 0,
                tv_nsec: libc::UTIME_OMIT,
            },
        }
    }
}

/// An empty name is `dir` itself, which may be an O_PATH fd, as in `fchmodat`.
pub fn utimensat(dir: BorrowedFd<'_>, name: &CStr, atime: Time, mtime: Time) -> Result<()> {
    let ts = [atime.spec(), mtime.spec()];
    if name.is_empty() {
        let path = proc_path(dir, EMPTY);
        // SAFETY: ts holds two timespecs; the path is valid.
        return check(unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), ts.as_ptr(), 0) })
            .map(drop);
    }
    let flags = libc::AT_SYMLINK_NOFOLLOW
        | if name.is_empty() {
            libc::AT_EMPTY_PATH
        } else {
            0
        };
    // SAFETY: ts holds two timespecs as utimensat requires.
    check(unsafe { libc::utimensat(dir.as_raw_fd(), name.as_ptr(), ts.as_ptr(), flags) }).map(drop)
}

pub fn futimens(fd: BorrowedFd<'_>, atime: Time, mtime: Time) -> Result<()> {
    let ts = [atime.spec(), mtime.spec()];
    // SAFETY: ts holds two timespecs.
    check(unsafe { libc::futimens(fd.as_raw_fd(), ts.as_ptr()) }).map(drop)
}

/// "/proc/self/fd/N/name": lets the l*xattr calls act on an entry of a directory held as an
/// O_PATH fd. Only the magic link of our own fd is followed, never a link inside the layer,
/// because the l* calls do not follow the last component. With an empty name, the fd's own
/// object (see `is_fd_link`).
pub fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> CString {
    proc_path_raw(dir.as_raw_fd(), name)
}

fn proc_path_raw(dir: RawFd, name: &CStr) -> CString {
    let mut p = format!("/proc/self/fd/{dir}").into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.to_bytes());
    }
    // Built from a CStr and digits: no interior NUL.
    CString::new(p).unwrap_or_default()
}

pub fn pread(fd: BorrowedFd<'_>, buf: &mut [u8], off: u64) -> Result<usize> {
    // SAFETY: buf is writable for its length.
    check_size(unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

pub fn pwrite(fd: BorrowedFd<'_>, buf: &[u8], off: u64) -> Result<usize> {
    // SAFETY: buf is readable for its length.
    check_size(unsafe {
        libc::pwrite(
            fd.as_raw_fd(),
            buf.as_ptr().cast(),
            buf.len(),
            off as libc::off_t,
        )
    })
}

/// Spawn a background thread that never takes a process-directed signal: every signal is
/// blocked in it from its first instruction (a new thread inherits its creator's mask, so the
/// mask is blocked around the spawn and restored after). Otherwise a SIGTERM meant for the
/// daemon's signal thread could land there and kill the process with its default action.
pub fn spawn_signal_free(
    name: &str,
    f: impl FnOnce() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    // SAFETY: both sets are initialised (sigfillset, then written by pthread_sigmask) before
    // use; the calling thread's mask is restored before returning.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        let spawned = std::thread::Builder::new().name(name.into()).spawn(f);
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        spawned
    }
}

/// Give the free memory of malloc's arenas back to the OS (glibc keeps freed small blocks
/// for reuse, at the top of a heap and in the middle alike; `malloc_trim` releases the whole
/// free pages of both). Returns whether anything was released; a no-op elsewhere than glibc.
pub fn malloc_trim() -> bool {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions; it takes the arena locks itself.
    return unsafe { libc::malloc_trim(0) } != 0;
    #[cfg(not(target_env = "gnu"))]
    return false;
}

pub fn fsync(fd: BorrowedFd<'_>, data_only: bool) -> Result<()> {
    // SAFETY: plain syscall.
    let r = unsafe {
        if data_only {
            libc::fdatasync(fd.as_raw_fd())
        } else {
            libc::fsync(fd.as_raw_fd())
        }
    };
    check(r).map(drop)
}

pub fn page_size() -> usize {
    // SAFETY: plain sysconf.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => 4096,
    }
}

/// A pipe of at least `size` bytes: (read end, write end, its capacity in bytes, one page per
/// buffer). Past the limit an unprivileged process may set (`/proc/sys/fs/pipe-max-size`)
/// this fails with EPERM.
pub fn pipe(size: usize) -> Result<(OwnedFd, OwnedFd, usize)> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: two ints for the two fds.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: both fds were just made and are owned by nothing else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let size = libc::c_int::try_from(size).map_err(|_| Error::Sys(libc::EINVAL))?;
    // SAFETY: plain fcntl on our own fd.
    let cap = check(unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size) })?;
    Ok((r, w, cap as usize))
}

/// splice(2) of up to `len` bytes from `from` (at `*off` if given, which advances) to `to`;
/// `flags` as splice's (`SPLICE_F_NONBLOCK`: EAGAIN instead of waiting for room in a pipe).
pub fn splice(
    from: BorrowedFd<'_>,
    off: Option<&mut i64>,
    to: BorrowedFd<'_>,
    len: usize,
    flags: u32,
) -> Result<usize> {
    let off = off.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    // SAFETY: `off` is null or points to a live i64; the fds are borrowed for the call.
    check_size(unsafe {
        libc::splice(
            from.as_raw_fd(),
            off,
            to.as_raw_fd(),
            std::ptr::null_mut(),
            len,
            flags,
        )
    })
}

pub fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<usize> {
    // SAFETY: `buf` is valid for its length.
    check_size(unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })
}

pub fn write(fd: BorrowedFd<'_>, buf: &[u8]) -> Result<usize> {
    // SAFETY: `buf` is valid for its length.
    check_size(unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) })
}

pub fn ftruncate(fd: BorrowedFd<'_>, size: u64) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

pub fn fallocate(fd: BorrowedFd<'_>, mode: i32, off: u64, len: u64) -> Result<()> {
    // SAFETY: plain syscall.
    check(unsafe { libc::fallocate(fd.as_raw_fd(), mode, off as libc::off_t, len as libc::off_t) })
        .map(drop)
}

pub fn lseek(fd: BorrowedFd<'_>, off: i64, whence: i32) -> Result<i64> {
    // SAFETY: plain syscall.
    let r = unsafe { libc::lseek(fd.as_raw_fd(), off, whence) };
    if r < 0 { Err(Error::last()) } else { Ok(r) }
}

pub fn copy_file_range(
    fd_in: BorrowedFd<'_>,
    off_in: u64,
    fd_out: BorrowedFd<'_>,
    off_out: u64,
    len: usize,
) -> Result<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    // SAFETY: the offsets are valid in/out pointers for the duration of the call.
    check_size(unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len,
            0,
        )
    })
}

/// Share the source's extents with the destination (reflink); fails where the fs can't.
pub fn ficlone(dst: BorrowedFd<'_>, src: BorrowedFd<'_>) -> Result<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    check(unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) }).map(drop)
}

pub fn fstatfs(fd: BorrowedFd<'_>) -> Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: st is a valid out pointer.
    check(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    // SAFETY: initialised by the successful call.
    Ok(unsafe { st.assume_init() })
}

/// Reopen an O_PATH fd with real access flags through its /proc magic link. The link names
/// exactly the inode we hold, so nothing inside a layer is resolved again.
pub fn reopen(fd: BorrowedFd<'_>, flags: i32) -> Result<OwnedFd> {
    open_path(&proc_path(fd, EMPTY), flags)
}

/// One directory entry: name, inode number and d_type as the layer reports them.
pub struct RawDirent {
    pub name: CString,
    pub ino: u64,
    pub dtype: u8,
}

/// Every entry of a directory except `.` and `..`. `dir` may be an O_PATH fd. The listing leaves
/// the directory's atime alone (see `openat_noatime`). Read with getdents64 into a buffer each
/// thread keeps: `fdopendir` would add a stat, two fcntls and a 32 KiB allocation per listing.
pub fn read_dir(dir: BorrowedFd<'_>) -> Result<Vec<RawDirent>> {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let fd = openat_noatime(dir, DOT, libc::O_RDONLY | libc::O_DIRECTORY)?;
    BUF.with_borrow_mut(|buf| {
        buf.resize(32 << 10, 0);
        let mut out = Vec::new();
        loop {
            // SAFETY: buf is writable for its length.
            let n = unsafe {
                libc::syscall(
                    libc::SYS_getdents64,
                    fd.as_raw_fd() as libc::c_long,
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            let n = check_size(n as isize)?;
            if n == 0 {
                return Ok(out);
            }
            parse_dirents(&buf[..n], &mut out);
        }
    })
}

/// The records of one getdents64 answer (`struct linux_dirent64`: ino, off, reclen, type,
/// NUL-terminated name), `.` and `..` left out.
fn parse_dirents(mut buf: &[u8], out: &mut Vec<RawDirent>) {
    const NAME: usize = 19;
    while buf.len() > NAME {
        let ino = u64::from_ne_bytes(buf[..8].try_into().unwrap_or_default());
        let reclen = u16::from_ne_bytes([buf[16], buf[17]]) as usize;
        let dtype = buf[18];
        if reclen <= NAME || reclen > buf.len() {
            return;
        }
        let name = CStr::from_bytes_until_nul(&buf[NAME..reclen]).unwrap_or_default();
        if name != DOT && name != c".." {
            out.push(RawDirent {
                name: name.to_owned(),
                ino,
                dtype,
            });
        }
        buf = &buf[reclen..];
    }
}

pub fn geteuid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}

pub fn getegid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::getegid() }
}

pub fn set_umask(mask: u32) {
    // SAFETY: always succeeds.
    unsafe { libc::umask(mask) };
}

/// Raise the soft open-file limit to the hard one; returns the limit now in force.
pub fn raise_nofile() -> u64 {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is a valid out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return 1024;
    }
    rl.rlim_cur = rl.rlim_max;
    // SAFETY: rl is valid; failure leaves the old limit, which we then report.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
        // SAFETY: as above.
        unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) };
    }
    rl.rlim_cur
}

pub fn is_whiteout_stat(st: &Stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Is there input waiting on `fd` right now (poll(2) with no timeout)? For /dev/fuse: are
/// requests queued that no session thread has read yet?
pub fn has_input(fd: BorrowedFd<'_>) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, and its count.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A listing longer than one getdents64 buffer comes back whole, each name once, with
    /// its type and inode number, without `.` and `..`.
    #[test]
    fn read_dir_lists_past_one_buffer() {
        let tmp = tempfile::tempdir().unwrap();
        let mut want = std::collections::BTreeSet::new();
        for i in 0..1500 {
            let name = format!("entry-with-a-longish-name-{i:05}");
            match i % 3 {
                0 => std::fs::create_dir(tmp.path().join(&name)).unwrap(),
                _ => std::fs::write(tmp.path().join(&name), b"").unwrap(),
            }
            want.insert(name);
        }
        let root = std::fs::File::open(tmp.path()).unwrap();
        let dir = open_dir_path(root.as_fd(), DOT).unwrap();
        let got = read_dir(dir.as_fd()).unwrap();
        assert_eq!(got.len(), want.len());
        for e in &got {
            let name = e.name.to_str().unwrap();
            assert!(want.contains(name), "{name}");
            let st = fstatat(dir.as_fd(), &e.name).unwrap();
            assert_eq!(e.ino, st.st_ino);
            let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
            assert_eq!(e.dtype, if is_dir { libc::DT_DIR } else { libc::DT_REG });
        }
        let names: std::collections::BTreeSet<_> = got
            .iter()
            .map(|e| e.name.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, want);
    }
}
