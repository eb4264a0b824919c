//! Extended attributes of an entry `name` of a directory the daemon holds as an fd (usually
//! O_PATH), never following a symlink there; an empty name means the fd's own object.
//!
//! Linux 6.13 takes such a pair directly (`getxattrat` and friends). Before, and for an empty
//! name (the `*xattrat` calls refuse an O_PATH fd's own object), the path
//! `/proc/self/fd/N/name` stands in. That path costs a walk of /proc and a fresh /proc inode
//! per call: on a fresh mount's `find`, the opaque check of each directory made 11% of the CPU
//! time, most of it allocating those inodes.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicU8, Ordering};

use super::{check_size, proc_path_raw};
use crate::error::{Error, Result};

// The same numbers on every architecture (the unified syscall table); not in the libc crate yet.
const SYS_SETXATTRAT: libc::c_long = 463;
const SYS_GETXATTRAT: libc::c_long = 464;
const SYS_LISTXATTRAT: libc::c_long = 465;
const SYS_REMOVEXATTRAT: libc::c_long = 466;

/// Whether the `*xattrat` calls work here: `UNKNOWN` until the first call probes them, then
/// `YES` or `NO` (from then on every call goes through /proc).
static AT_CALLS: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
const YES: u8 = 1;
const NO: u8 = 2;

fn at_calls() -> bool {
    match AT_CALLS.load(Ordering::Relaxed) {
        YES => true,
        NO => false,
        _ => {
            let ok = probe();
            AT_CALLS.store(if ok { YES } else { NO }, Ordering::Relaxed);
            ok
        }
    }
}

/// Ask "/" for an xattr it can't have: a kernel with the calls answers ENODATA (or ENOTSUP).
/// One without them answers ENOSYS, and a seccomp profile that doesn't know them ENOSYS or,
/// in older engines' profiles, EPERM: that would fail every later call, so it means "no" too.
fn probe() -> bool {
    let args = XattrArgs {
        value: 0,
        size: 0,
        flags: 0,
    };
    let flags = libc::AT_SYMLINK_NOFOLLOW as libc::c_long;
    let dir = libc::AT_FDCWD as libc::c_long;
    // SAFETY: a zero-size query writes nothing.
    let r = unsafe { getxattrat_raw(dir, c"/".as_ptr(), flags, c"user.unionfuse.probe", &args) };
    r >= 0 || {
        let e = Error::last();
        e.is(libc::ENODATA) || e.is(libc::ENOTSUP)
    }
}

/// The `getxattrat` syscall itself.
///
/// # Safety
/// `name` is NUL-terminated and `args.value` writable for `args.size` bytes.
unsafe fn getxattrat_raw(
    dir: libc::c_long,
    name: *const libc::c_char,
    flags: libc::c_long,
    xattr: &CStr,
    args: &XattrArgs,
) -> libc::c_long {
    // SAFETY: as the caller promises.
    unsafe {
        libc::syscall(
            SYS_GETXATTRAT,
            dir,
            name,
            flags,
            xattr.as_ptr(),
            args as *const XattrArgs,
            size_of::<XattrArgs>(),
        )
    }
}

/// The value argument of `getxattrat` and `setxattrat` (`struct xattr_args`).
#[repr(C)]
struct XattrArgs {
    value: u64,
    size: u32,
    flags: u32,
}

/// The object an xattr call acts on: `name` in `dir`, or with `dir` = AT_FDCWD the path `name`.
#[derive(Clone, Copy)]
struct Target<'a> {
    dir: RawFd,
    name: &'a CStr,
}

impl Target<'_> {
    /// `at(dir, name, AT_SYMLINK_NOFOLLOW)` where the kernel has the `*xattrat` calls, else
    /// `by_path(path, follow)`: the l* call on the /proc path, or the plain call (`follow`)
    /// on a bare `/proc/self/fd/N`, whose one magic link lands on exactly the fd's object.
    fn call(
        self,
        at: impl FnOnce(libc::c_long, *const libc::c_char, libc::c_long) -> libc::c_long,
        by_path: impl FnOnce(&CStr, bool) -> isize,
    ) -> Result<usize> {
        if !self.name.is_empty() && at_calls() {
            // Widened here: syscall(2) reads every argument as a long.
            let flags = libc::AT_SYMLINK_NOFOLLOW as libc::c_long;
            let r = at(self.dir as libc::c_long, self.name.as_ptr(), flags);
            if r >= 0 {
                return Ok(r as usize);
            }
            let e = Error::last();
            if !e.is(libc::ENOSYS) {
                return Err(e);
            }
            AT_CALLS.store(NO, Ordering::Relaxed);
        }
        if self.dir == libc::AT_FDCWD {
            return check_size(by_path(self.name, false));
        }
        let path = proc_path_raw(self.dir, self.name);
        check_size(by_path(&path, self.name.is_empty()))
    }

    fn get(self, xattr: &CStr, buf: &mut [u8]) -> Result<usize> {
        let args = XattrArgs {
            value: buf.as_mut_ptr() as u64,
            size: buf.len().min(u32::MAX as usize) as u32,
            flags: 0,
        };
        self.call(
            // SAFETY: args points to a writable buffer of args.size bytes (zero asks the size).
            |dir, name, flags| unsafe { getxattrat_raw(dir, name, flags, xattr, &args) },
            |path, follow| {
                let get = if follow {
                    libc::getxattr
                } else {
                    libc::lgetxattr
                };
                // SAFETY: as above.
                unsafe {
                    get(
                        path.as_ptr(),
                        xattr.as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                }
            },
        )
    }

    fn get_vec(self, xattr: &CStr) -> Result<Option<Vec<u8>>> {
        loop {
            let size = match self.get(xattr, &mut []) {
                Ok(n) => n,
                Err(e) if e.is(libc::ENODATA) || e.is(libc::ENOTSUP) => return Ok(None),
                Err(e) => return Err(e),
            };
            let mut buf = vec![0u8; size];
            match self.get(xattr, &mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(Some(buf));
                }
                // Grew between the two calls: ask again.
                Err(e) if e.is(libc::ERANGE) => continue,
                Err(e) if e.is(libc::ENODATA) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
    }

    fn set(self, xattr: &CStr, value: &[u8], flags: i32) -> Result<()> {
        let args = XattrArgs {
            value: value.as_ptr() as u64,
            size: value.len().min(u32::MAX as usize) as u32,
            flags: flags as u32,
        };
        self.call(
            // SAFETY: args points to value, readable for its length.
            |dir, name, at| unsafe {
                libc::syscall(
                    SYS_SETXATTRAT,
                    dir,
                    name,
                    at,
                    xattr.as_ptr(),
                    &raw const args,
                    size_of::<XattrArgs>(),
                )
            },
            |path, follow| {
                let set = if follow {
                    libc::setxattr
                } else {
                    libc::lsetxattr
                };
                // SAFETY: as above.
                let r = unsafe {
                    set(
                        path.as_ptr(),
                        xattr.as_ptr(),
                        value.as_ptr().cast(),
                        value.len(),
                        flags,
                    )
                };
                r as isize
            },
        )
        .map(drop)
    }

    fn remove(self, xattr: &CStr) -> Result<()> {
        self.call(
            // SAFETY: plain syscall on valid strings.
            |dir, name, at| unsafe {
                libc::syscall(SYS_REMOVEXATTRAT, dir, name, at, xattr.as_ptr())
            },
            |path, follow| {
                let remove = if follow {
                    libc::removexattr
                } else {
                    libc::lremovexattr
                };
                // SAFETY: as above.
                unsafe { remove(path.as_ptr(), xattr.as_ptr()) as isize }
            },
        )
        .map(drop)
    }

    fn list(self, buf: &mut [u8]) -> Result<usize> {
        let (ptr, len) = (buf.as_mut_ptr(), buf.len());
        self.call(
            // SAFETY: ptr is writable for len bytes (zero asks the size).
            |dir, name, at| unsafe { libc::syscall(SYS_LISTXATTRAT, dir, name, at, ptr, len) },
            |path, follow| {
                let list = if follow {
                    libc::listxattr
                } else {
                    libc::llistxattr
                };
                // SAFETY: as above.
                unsafe { list(path.as_ptr(), ptr.cast(), len) }
            },
        )
    }

    /// All xattr names of the object (the NUL-separated list split into names).
    fn list_vec(self) -> Result<Vec<CString>> {
        // Most lists fit in a small buffer: one call, not a size query and then the list.
        let mut buf = vec![0u8; 256];
        loop {
            match self.list(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf
                        .split(|b| *b == 0)
                        .filter(|s| !s.is_empty())
                        .filter_map(|s| CString::new(s).ok())
                        .collect());
                }
                Err(e) if e.is(libc::ERANGE) => {
                    let size = self.list(&mut [])?;
                    buf = vec![0u8; size.max(buf.len() * 2)];
                }
                Err(e) if e.is(libc::ENOTSUP) => return Ok(Vec::new()),
                Err(e) => return Err(e),
            }
        }
    }
}

fn at<'a>(dir: BorrowedFd<'_>, name: &'a CStr) -> Target<'a> {
    Target {
        dir: dir.as_raw_fd(),
        name,
    }
}

fn path(path: &CStr) -> Target<'_> {
    Target {
        dir: libc::AT_FDCWD,
        name: path,
    }
}

/// The whole value of an xattr of `dir/name`, or None when the object does not have it.
pub fn getxattrat_vec(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr) -> Result<Option<Vec<u8>>> {
    at(dir, name).get_vec(xattr)
}

pub fn setxattrat(
    dir: BorrowedFd<'_>,
    name: &CStr,
    xattr: &CStr,
    value: &[u8],
    flags: i32,
) -> Result<()> {
    at(dir, name).set(xattr, value, flags)
}

pub fn removexattrat(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr) -> Result<()> {
    at(dir, name).remove(xattr)
}

/// All xattr names of `dir/name`.
pub fn listxattrat_vec(dir: BorrowedFd<'_>, name: &CStr) -> Result<Vec<CString>> {
    at(dir, name).list_vec()
}

/// `getxattrat_vec` of a path (not followed if it is a symlink), for tools outside a mount.
pub fn lgetxattr_vec(p: &CStr, xattr: &CStr) -> Result<Option<Vec<u8>>> {
    path(p).get_vec(xattr)
}

/// `listxattrat_vec` of a path (not followed if it is a symlink).
pub fn llistxattr_vec(p: &CStr) -> Result<Vec<CString>> {
    path(p).list_vec()
}

/// Does the open file `fd` have xattr `name`?
pub fn fhasxattr(fd: BorrowedFd<'_>, name: &CStr) -> Result<bool> {
    // SAFETY: a zero-size query writes nothing.
    let r = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), std::ptr::null_mut(), 0) };
    if r >= 0 {
        return Ok(true);
    }
    match Error::last() {
        e if e.is(libc::ENODATA) || e.is(libc::ENOTSUP) => Ok(false),
        e => Err(e),
    }
}

pub fn fremovexattr(fd: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    // SAFETY: plain syscall on valid pointers.
    super::check(unsafe { libc::fremovexattr(fd.as_raw_fd(), name.as_ptr()) }).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The tests that set `AT_CALLS` run one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// Every call, through the `*xattrat` calls and through /proc, on a file, a directory
    /// (by "."), a symlink (not followed) and an fd's own object.
    #[test]
    fn both_paths_agree() {
        let _serial = SERIAL.lock();
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        std::fs::create_dir(tmp.path().join("d")).unwrap();
        std::os::unix::fs::symlink("f", tmp.path().join("l")).unwrap();
        let root = std::fs::File::open(tmp.path()).unwrap();
        let dir = root.as_fd();
        let d = super::super::open_dir_path(dir, c"d").unwrap();
        for via_at in [true, false] {
            AT_CALLS.store(if via_at { YES } else { NO }, Ordering::Relaxed);
            let v = format!("v{via_at}");
            for (fd, name) in [(dir, c"f"), (d.as_fd(), c"."), (d.as_fd(), c"")] {
                setxattrat(fd, name, c"user.t", v.as_bytes(), 0).unwrap();
                assert_eq!(
                    getxattrat_vec(fd, name, c"user.t").unwrap(),
                    Some(v.clone().into_bytes())
                );
                assert!(
                    listxattrat_vec(fd, name)
                        .unwrap()
                        .contains(&c"user.t".to_owned())
                );
                let e = setxattrat(fd, name, c"user.t", b"y", libc::XATTR_CREATE).unwrap_err();
                assert!(e.is(libc::EEXIST), "{e:?}");
                removexattrat(fd, name, c"user.t").unwrap();
                assert_eq!(getxattrat_vec(fd, name, c"user.t").unwrap(), None);
            }
            // A symlink is acted on itself: user.* can't go on one, and the target is untouched.
            let e = setxattrat(dir, c"l", c"user.t", b"y", 0).unwrap_err();
            assert!(e.is(libc::EPERM), "{e:?}");
            assert_eq!(getxattrat_vec(dir, c"l", c"user.t").unwrap(), None);
            let e = getxattrat_vec(dir, c"missing", c"user.t").unwrap_err();
            assert!(e.is(libc::ENOENT), "{e:?}");
        }
        AT_CALLS.store(UNKNOWN, Ordering::Relaxed);
    }

    /// This kernel (6.18) has the calls; under a seccomp filter that answers EPERM for them, as
    /// docker's profile before 20.10 did for syscalls it didn't know, the probe says no and the
    /// calls still work, through /proc.
    #[test]
    fn a_filter_refusing_the_calls_is_found_by_the_probe() {
        use crate::runtime::seccomp::{Action, Filter, Rule, compile};
        use crate::runtime::sys::{LinuxSys, Sys};
        let _serial = SERIAL.lock();
        assert!(probe(), "this kernel has getxattrat (Linux 6.13)");
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("f"), b"x").unwrap();
        // The filter stays with the thread that installs it: a thread of its own.
        let path = tmp.path().to_owned();
        std::thread::spawn(move || {
            let rule = |nr: libc::c_long| Rule {
                nr: nr as u32,
                conds: Vec::new(),
                action: Action::Errno(libc::EPERM as u16),
            };
            let filter = Filter {
                default: Action::Allow,
                rules: [
                    SYS_GETXATTRAT,
                    SYS_SETXATTRAT,
                    SYS_LISTXATTRAT,
                    SYS_REMOVEXATTRAT,
                ]
                .map(rule)
                .to_vec(),
            };
            let mut sys = LinuxSys { root: "/".into() };
            sys.no_new_privs().unwrap();
            sys.seccomp(&compile(&filter).unwrap()).unwrap();
            assert!(!probe());
            // What `at_calls` stores after that probe (another thread may have probed first).
            AT_CALLS.store(NO, Ordering::Relaxed);
            let root = std::fs::File::open(&path).unwrap();
            let dir = root.as_fd();
            setxattrat(dir, c"f", c"user.t", b"v", 0).unwrap();
            assert_eq!(
                getxattrat_vec(dir, c"f", c"user.t").unwrap(),
                Some(b"v".to_vec())
            );
            assert!(
                listxattrat_vec(dir, c"f")
                    .unwrap()
                    .contains(&c"user.t".to_owned())
            );
            removexattrat(dir, c"f", c"user.t").unwrap();
        })
        .join()
        .unwrap();
        AT_CALLS.store(UNKNOWN, Ordering::Relaxed);
    }
}
