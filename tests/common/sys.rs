//! Thin libc wrappers for the tests: every call returns `Result<_, i32>` with the raw errno, so a
//! test can assert on the exact errno kernel overlayfs would give. Paths are `&Path` (any bytes).

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A NUL-terminated copy of a path (panics only on an interior NUL, a bug in the test).
pub fn cpath(p: impl AsRef<OsStr>) -> CString {
    CString::new(p.as_ref().as_bytes()).expect("path contains a NUL byte")
}

pub fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// The raw errno inside a std error (0 if it carries none).
pub fn io_errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

pub fn egid() -> u32 {
    // SAFETY: getegid has no preconditions and cannot fail.
    unsafe { libc::getegid() }
}

/// Root of the initial user namespace (mode `root`): trusted.* xattrs, device nodes, any
/// owner. Root of a user namespace (mode `userns`) is not.
pub fn is_root() -> bool {
    euid() == 0 && super::mode::mode() == super::mode::Mode::Root
}

/// Turn a libc return value (-1 = error) into `Result` with the errno.
pub fn ck(ret: libc::c_int) -> Result<libc::c_int, i32> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn ck_size(ret: isize) -> Result<usize, i32> {
    if ret < 0 {
        Err(errno())
    } else {
        Ok(ret as usize)
    }
}

/// Name of an errno for messages ("ENOENT (2)").
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EIO => "EIO",
        libc::EBADF => "EBADF",
        libc::EACCES => "EACCES",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::EMLINK => "EMLINK",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ENOTEMPTY => "ENOTEMPTY",
        libc::ELOOP => "ELOOP",
        libc::ENODATA => "ENODATA",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ENXIO => "ENXIO",
        libc::ERANGE => "ERANGE",
        libc::ESTALE => "ESTALE",
        libc::EAGAIN => "EAGAIN",
        libc::ENOTCONN => "ENOTCONN",
        _ => "E?",
    };
    format!("{name} ({e})")
}

pub fn open(p: &Path, flags: libc::c_int, mode: libc::mode_t) -> Result<OwnedFd, i32> {
    let c = cpath(p);
    // SAFETY: valid NUL-terminated path; the returned fd is owned by the OwnedFd.
    let fd = ck(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::c_uint) })?;
    // SAFETY: fd was just returned by open and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// openat relative to a directory fd, `name` a single component or relative path.
pub fn openat(
    dir: &OwnedFd,
    name: &OsStr,
    flags: libc::c_int,
    mode: libc::mode_t,
) -> Result<OwnedFd, i32> {
    let c = cpath(name);
    // SAFETY: valid dir fd and NUL-terminated name.
    let fd = ck(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            flags | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    })?;
    // SAFETY: fd was just returned by openat.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub fn mkdirat(dir: &OwnedFd, name: &OsStr, mode: libc::mode_t) -> Result<(), i32> {
    let c = cpath(name);
    // SAFETY: valid dir fd and NUL-terminated name.
    ck(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) }).map(drop)
}

pub fn pwrite(fd: &OwnedFd, data: &[u8], off: i64) -> Result<usize, i32> {
    // SAFETY: buffer pointer and length come from a valid slice.
    ck_size(unsafe { libc::pwrite(fd.as_raw_fd(), data.as_ptr().cast(), data.len(), off) })
}

pub fn write(fd: &OwnedFd, data: &[u8]) -> Result<usize, i32> {
    // SAFETY: buffer pointer and length come from a valid slice.
    ck_size(unsafe { libc::write(fd.as_raw_fd(), data.as_ptr().cast(), data.len()) })
}

/// Read up to `len` bytes at `off`.
pub fn pread(fd: &OwnedFd, len: usize, off: i64) -> Result<Vec<u8>, i32> {
    let mut buf = vec![0u8; len];
    // SAFETY: buffer pointer and length come from a valid, writable Vec.
    let n = ck_size(unsafe { libc::pread(fd.as_raw_fd(), buf.as_mut_ptr().cast(), len, off) })?;
    buf.truncate(n);
    Ok(buf)
}

pub fn fsync(fd: &OwnedFd) -> Result<(), i32> {
    // SAFETY: fsync on an fd we own.
    ck(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

pub fn fstat(fd: &OwnedFd) -> Result<libc::stat, i32> {
    // SAFETY: zeroed stat is a valid out-buffer for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid fd and out pointer.
    ck(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

pub fn fchmod(fd: &OwnedFd, mode: libc::mode_t) -> Result<(), i32> {
    // SAFETY: fchmod on an fd we own.
    ck(unsafe { libc::fchmod(fd.as_raw_fd(), mode) }).map(drop)
}

pub fn lstat(p: &Path) -> Result<libc::stat, i32> {
    let c = cpath(p);
    // SAFETY: zeroed stat is a valid out-buffer for lstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    ck(unsafe { libc::lstat(c.as_ptr(), &mut st) })?;
    Ok(st)
}

/// `lstat`, with "no such file" as `None`; any other error panics (a broken test setup).
#[track_caller]
pub fn lstat_opt(p: &Path) -> Option<libc::stat> {
    match lstat(p) {
        Ok(st) => Some(st),
        Err(libc::ENOENT) => None,
        Err(e) => panic!("lstat {}: {}", p.display(), errno_name(e)),
    }
}

pub fn fstatat(dir: &OwnedFd, name: &OsStr) -> Result<libc::stat, i32> {
    let c = cpath(name);
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid dir fd, name and out pointer.
    ck(unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

pub fn readlinkat(dir: &OwnedFd, name: &OsStr) -> Result<Vec<u8>, i32> {
    let c = cpath(name);
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: valid dir fd, name and writable buffer of the given length.
    let n = ck_size(unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            c.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(n);
    Ok(buf)
}

/// Names in a directory (without `.` and `..` unless `with_dots`), via fdopendir on a dup.
pub fn read_dir_names(dir: &OwnedFd, with_dots: bool) -> Result<Vec<Vec<u8>>, i32> {
    let dup = dir
        .try_clone()
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
    // Rewind: the dup shares the offset with `dir`.
    // SAFETY: valid fd.
    ck(unsafe { libc::lseek(dup.as_raw_fd(), 0, libc::SEEK_SET) } as libc::c_int)?;
    let raw = std::os::fd::IntoRawFd::into_raw_fd(dup);
    // SAFETY: raw is an open directory fd; on success the DIR owns it and closedir closes it.
    let d = unsafe { libc::fdopendir(raw) };
    if d.is_null() {
        let e = errno();
        // SAFETY: fdopendir failed, so we still own raw.
        unsafe { libc::close(raw) };
        return Err(e);
    }
    let mut names = Vec::new();
    loop {
        // SAFETY: d is a valid DIR*; errno is reset to detect errors vs end of stream.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: d is a valid DIR*.
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            let e = errno();
            // SAFETY: d is valid and closed exactly once.
            unsafe { libc::closedir(d) };
            return if e == 0 { Ok(names) } else { Err(e) };
        }
        // SAFETY: d_name is a NUL-terminated array inside the dirent returned by readdir.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }
            .to_bytes()
            .to_vec();
        if with_dots || (name != b"." && name != b"..") {
            names.push(name);
        }
    }
}

/// The names (`.` and `..` included) a `readdir(3)` stream of `dir` returns from `seekdir(pos)`
/// (`pos` from an earlier `telldir`), or from the start; with `stop_after`, only that many. Also
/// the `telldir` position where it stopped.
pub fn read_dir_from(
    dir: &Path,
    pos: Option<i64>,
    stop_after: Option<usize>,
) -> Result<(Vec<Vec<u8>>, i64), i32> {
    let c = cpath(dir);
    // SAFETY: a valid NUL-terminated path.
    let d = unsafe { libc::opendir(c.as_ptr()) };
    if d.is_null() {
        return Err(errno());
    }
    if let Some(p) = pos {
        // SAFETY: d is a valid DIR*.
        unsafe { libc::seekdir(d, p) };
    }
    let mut names = Vec::new();
    let mut err = 0;
    while stop_after.is_none_or(|n| names.len() < n) {
        // SAFETY: errno is reset to tell an error from the end of the stream.
        unsafe { *libc::__errno_location() = 0 };
        // SAFETY: d is a valid DIR*.
        let ent = unsafe { libc::readdir64(d) };
        if ent.is_null() {
            err = errno();
            break;
        }
        // SAFETY: d_name is a NUL-terminated array inside the dirent returned by readdir.
        let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) };
        names.push(name.to_bytes().to_vec());
    }
    // SAFETY: d is a valid DIR*.
    let at = unsafe { libc::telldir(d) };
    // SAFETY: d is valid and closed exactly once.
    unsafe { libc::closedir(d) };
    if err != 0 { Err(err) } else { Ok((names, at)) }
}

pub fn lsetxattr(p: &Path, name: &str, value: &[u8]) -> Result<(), i32> {
    let (c, n) = (cpath(p), cpath(name));
    // SAFETY: valid path, name and value buffer.
    ck(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}

pub fn lremovexattr(p: &Path, name: &str) -> Result<(), i32> {
    let (c, n) = (cpath(p), cpath(name));
    // SAFETY: valid path and name.
    ck(unsafe { libc::lremovexattr(c.as_ptr(), n.as_ptr()) }).map(drop)
}

pub fn lgetxattr(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (c, n) = (cpath(p), cpath(name));
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid path, name and writable buffer.
    let len = ck_size(unsafe {
        libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
    })?;
    buf.truncate(len);
    Ok(buf)
}

/// `lgetxattr`, with "no such attribute" as `None`; any other error panics.
#[track_caller]
pub fn lgetxattr_opt(p: &Path, name: &str) -> Option<Vec<u8>> {
    match lgetxattr(p, name) {
        Ok(v) => Some(v),
        Err(libc::ENODATA) => None,
        Err(e) => panic!("lgetxattr {name} on {}: {}", p.display(), errno_name(e)),
    }
}

/// All xattr names of a path (not following symlinks), sorted.
pub fn llistxattr(p: &Path) -> Result<Vec<String>, i32> {
    let c = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid path and writable buffer.
    let len = ck_size(unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) })?;
    let mut names: Vec<String> = buf[..len]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn mknod(p: &Path, mode: libc::mode_t, dev: libc::dev_t) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::mknod(c.as_ptr(), mode, dev) }).map(drop)
}

pub fn lchown(p: &Path, uid: u32, gid: u32) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::lchown(c.as_ptr(), uid, gid) }).map(drop)
}

pub fn chmod(p: &Path, mode: libc::mode_t) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::chmod(c.as_ptr(), mode) }).map(drop)
}

/// Set atime and mtime (seconds, nanoseconds) without following a final symlink if `nofollow`.
pub fn utimens(p: &Path, atime: (i64, i64), mtime: (i64, i64), nofollow: bool) -> Result<(), i32> {
    let c = cpath(p);
    let ts = [
        libc::timespec {
            tv_sec: atime.0,
            tv_nsec: atime.1,
        },
        libc::timespec {
            tv_sec: mtime.0,
            tv_nsec: mtime.1,
        },
    ];
    let flags = if nofollow {
        libc::AT_SYMLINK_NOFOLLOW
    } else {
        0
    };
    // SAFETY: valid path and a two-element timespec array.
    ck(unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) }).map(drop)
}

pub fn renameat2(from: &Path, to: &Path, flags: libc::c_uint) -> Result<(), i32> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid paths.
    ck(unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            flags,
        )
    })
    .map(drop)
}

pub fn link(from: &Path, to: &Path) -> Result<(), i32> {
    let (f, t) = (cpath(from), cpath(to));
    // SAFETY: valid paths.
    ck(unsafe { libc::link(f.as_ptr(), t.as_ptr()) }).map(drop)
}

pub fn symlink(target: &OsStr, p: &Path) -> Result<(), i32> {
    let (t, c) = (cpath(target), cpath(p));
    // SAFETY: valid strings.
    ck(unsafe { libc::symlink(t.as_ptr(), c.as_ptr()) }).map(drop)
}

pub fn unlink(p: &Path) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::unlink(c.as_ptr()) }).map(drop)
}

pub fn rmdir(p: &Path) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::rmdir(c.as_ptr()) }).map(drop)
}

pub fn mkdir(p: &Path, mode: libc::mode_t) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::mkdir(c.as_ptr(), mode) }).map(drop)
}

pub fn truncate(p: &Path, len: i64) -> Result<(), i32> {
    let c = cpath(p);
    // SAFETY: valid path.
    ck(unsafe { libc::truncate(c.as_ptr(), len) }).map(drop)
}

pub fn statfs(p: &Path) -> Result<libc::statfs, i32> {
    let c = cpath(p);
    // SAFETY: zeroed statfs is a valid out-buffer.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid path and out pointer.
    ck(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    Ok(st)
}

pub fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

pub fn umask(mask: libc::mode_t) -> libc::mode_t {
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(mask) }
}

/// `fgetxattr`, `flistxattr` (names sorted) and `fsetxattr` on an open file: they act on the
/// object even after its last name is gone.
pub fn fgetxattr(fd: &OwnedFd, name: &str) -> Result<Vec<u8>, i32> {
    let n = cpath(name);
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid fd, name and writable buffer.
    let len = ck_size(unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    })?;
    buf.truncate(len);
    Ok(buf)
}

pub fn flistxattr(fd: &OwnedFd) -> Result<Vec<String>, i32> {
    let mut buf = vec![0u8; 65536];
    // SAFETY: valid fd and writable buffer.
    let len =
        ck_size(unsafe { libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) })?;
    let mut names: Vec<String> = buf[..len]
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    Ok(names)
}

pub fn fsetxattr(fd: &OwnedFd, name: &str, value: &[u8]) -> Result<(), i32> {
    let n = cpath(name);
    // SAFETY: valid fd, name and value buffer.
    ck(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
    .map(drop)
}
