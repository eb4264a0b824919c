//! The runtime's syscall seam. `Sys` is what the plan's steps need from the kernel; `LinuxSys`
//! does it for real, `RecordingSys` only writes the calls down so the plan can be unit-tested
//! without privileges. Every `unsafe` of the runtime lives in this file. Container paths are
//! resolved inside the new root with `openat2(RESOLVE_IN_ROOT)`, so a symlink in an image can
//! never redirect a mount onto the host.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::idmap::{self, IdMap};

/// A runtime failure: which step, on which path, and the errno or reason.
#[derive(Debug)]
pub struct RunError(pub String);

impl RunError {
    pub fn new(msg: impl Into<String>) -> RunError {
        RunError(msg.into())
    }

    /// `"{what}: EINVAL (invalid argument)"` from an errno.
    pub fn errno(what: impl fmt::Display, errno: i32) -> RunError {
        RunError(format!("{what}: {}", errno_text(errno)))
    }

    pub fn last(what: impl fmt::Display) -> RunError {
        RunError::errno(what, last_errno())
    }

    pub fn io(what: impl fmt::Display, e: &io::Error) -> RunError {
        match e.raw_os_error() {
            Some(n) => RunError::errno(what, n),
            None => RunError(format!("{what}: {e}")),
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

pub type RunResult<T> = std::result::Result<T, RunError>;

pub fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The errno's symbolic name and the C library's description, lower-cased.
pub fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::ENOTCONN => "ENOTCONN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EUSERS => "EUSERS",
        _ => "",
    };
    let desc = io::Error::from_raw_os_error(errno).to_string();
    let desc = desc.split(" (os error").next().unwrap_or("").to_lowercase();
    if name.is_empty() {
        format!("errno {errno} ({desc})")
    } else {
        format!("{name} ({desc})")
    }
}

fn cpath(p: &Path) -> RunResult<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| RunError::new(format!("{}: path contains a NUL byte", p.display())))
}

fn cstr(s: &OsStr) -> RunResult<CString> {
    CString::new(s.as_bytes())
        .map_err(|_| RunError::new(format!("{}: contains a NUL byte", s.to_string_lossy())))
}

/// Mount flags the plan uses, spelled as in mount(2).
pub const MS_RDONLY: u64 = libc::MS_RDONLY;
pub const MS_NOSUID: u64 = libc::MS_NOSUID;
pub const MS_NODEV: u64 = libc::MS_NODEV;
pub const MS_NOEXEC: u64 = libc::MS_NOEXEC;
pub const MS_STRICTATIME: u64 = libc::MS_STRICTATIME;

/// What the kernel is asked to do. One call per method; paths inside the container are
/// relative to the root the `Sys` was given (`Ctr`), host paths are absolute.
pub trait Sys {
    fn unshare(&mut self, flags: i32) -> RunResult<()>;
    /// Enter a new user namespace (with `extra` namespaces in the same unshare) and map ids.
    fn enter_userns(&mut self, extra: i32, map: &IdMap) -> RunResult<()>;
    fn set_propagation(&mut self, host: &Path, flags: u64) -> RunResult<()>;
    /// Bind a host path onto a path in the container (`ctr`), recursively.
    fn bind(&mut self, host: &Path, ctr: &Path) -> RunResult<()>;
    /// Bind a host directory onto itself (the new root must be a mount point of its own).
    fn bind_self(&mut self, host: &Path) -> RunResult<()>;
    fn mount(
        &mut self,
        source: &str,
        ctr: &Path,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> RunResult<()>;
    fn set_read_only(&mut self, ctr: &Path, recursive: bool) -> RunResult<()>;
    fn mkdir_all(&mut self, ctr: &Path, mode: u32) -> RunResult<()>;
    /// Create an empty file if nothing is there (a bind mount target).
    fn touch(&mut self, ctr: &Path) -> RunResult<()>;
    fn symlink(&mut self, target: &Path, ctr: &Path) -> RunResult<()>;
    fn sethostname(&mut self, name: &str) -> RunResult<()>;
    fn loopback_up(&mut self) -> RunResult<()>;
    /// Switch the root to the container's and detach the old one.
    fn pivot_root(&mut self, host_new_root: &Path) -> RunResult<()>;
}

// ---------------------------------------------------------------------------------------------
// The recording fake.

/// Records each call as one line; never touches the kernel.
#[derive(Default, Debug)]
pub struct RecordingSys {
    pub calls: Vec<String>,
}

impl RecordingSys {
    fn rec(&mut self, s: String) -> RunResult<()> {
        self.calls.push(s);
        Ok(())
    }
}

impl Sys for RecordingSys {
    fn unshare(&mut self, flags: i32) -> RunResult<()> {
        self.rec(format!("unshare {}", clone_names(flags)))
    }
    fn enter_userns(&mut self, extra: i32, map: &IdMap) -> RunResult<()> {
        self.rec(format!(
            "unshare {} + map uid [{}] gid [{}] via {}",
            clone_names(libc::CLONE_NEWUSER | extra),
            map.uid_map_text().trim().replace('\n', ", "),
            map.gid_map_text().trim().replace('\n', ", "),
            if map.helper { "newuidmap" } else { "write" }
        ))
    }
    fn set_propagation(&mut self, host: &Path, flags: u64) -> RunResult<()> {
        let kind = if flags & libc::MS_SLAVE != 0 {
            "rslave"
        } else {
            "rprivate"
        };
        self.rec(format!("propagation {kind} {}", host.display()))
    }
    fn bind(&mut self, host: &Path, ctr: &Path) -> RunResult<()> {
        self.rec(format!("bind {} -> {}", host.display(), ctr.display()))
    }
    fn bind_self(&mut self, host: &Path) -> RunResult<()> {
        self.rec(format!("bind-self {}", host.display()))
    }
    fn mount(&mut self, s: &str, ctr: &Path, t: &str, flags: u64, data: &str) -> RunResult<()> {
        self.rec(format!(
            "mount {t} {s} -> {} [{}] {data}",
            ctr.display(),
            ms_names(flags)
        ))
    }
    fn set_read_only(&mut self, ctr: &Path, recursive: bool) -> RunResult<()> {
        let r = if recursive { "recursive " } else { "" };
        self.rec(format!("read-only {r}{}", ctr.display()))
    }
    fn mkdir_all(&mut self, ctr: &Path, mode: u32) -> RunResult<()> {
        self.rec(format!("mkdir {} {mode:o}", ctr.display()))
    }
    fn touch(&mut self, ctr: &Path) -> RunResult<()> {
        self.rec(format!("touch {}", ctr.display()))
    }
    fn symlink(&mut self, target: &Path, ctr: &Path) -> RunResult<()> {
        self.rec(format!("symlink {} -> {}", ctr.display(), target.display()))
    }
    fn sethostname(&mut self, name: &str) -> RunResult<()> {
        self.rec(format!("sethostname {name}"))
    }
    fn loopback_up(&mut self) -> RunResult<()> {
        self.rec("loopback up".into())
    }
    fn pivot_root(&mut self, new_root: &Path) -> RunResult<()> {
        self.rec(format!("pivot_root {}", new_root.display()))
    }
}

pub fn clone_names(flags: i32) -> String {
    let names = [
        (libc::CLONE_NEWUSER, "user"),
        (libc::CLONE_NEWNS, "mnt"),
        (libc::CLONE_NEWPID, "pid"),
        (libc::CLONE_NEWUTS, "uts"),
        (libc::CLONE_NEWIPC, "ipc"),
        (libc::CLONE_NEWNET, "net"),
    ];
    names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join("+")
}

fn ms_names(flags: u64) -> String {
    let names = [
        (MS_RDONLY, "ro"),
        (MS_NOSUID, "nosuid"),
        (MS_NODEV, "nodev"),
        (MS_NOEXEC, "noexec"),
        (MS_STRICTATIME, "strictatime"),
    ];
    names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}

// ---------------------------------------------------------------------------------------------
// The real thing.

/// Executes the steps on Linux. `root` is the host path of the container's root (the bind of
/// the union's mountpoint); container paths are resolved beneath it.
pub struct LinuxSys {
    pub root: PathBuf,
}

/// `/proc/self/fd/N`: mount(2) follows the magic link to exactly the object `fd` names.
fn fd_path(fd: &OwnedFd) -> CString {
    // A formatted integer never contains NUL.
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap_or_default()
}

#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_IN_ROOT: u64 = 0x10;
const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

fn openat2_in_root(root: BorrowedFd<'_>, rel: &Path, flags: i32) -> Result<OwnedFd, i32> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let c = CString::new(rel.as_os_str().as_bytes()).map_err(|_| libc::EINVAL)?;
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    // SAFETY: c is NUL-terminated, how is a valid open_how of the size passed; the fd returned
    // is fresh and owned here.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            root.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(last_errno());
    }
    // SAFETY: fresh fd from openat2.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The container path as a relative path (no `..` above the root survives RESOLVE_IN_ROOT).
fn rel(ctr: &Path) -> PathBuf {
    ctr.components()
        .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
        .collect()
}

impl LinuxSys {
    fn root_fd(&self) -> RunResult<OwnedFd> {
        let c = cpath(&self.root)?;
        // SAFETY: c is NUL-terminated; the fd is fresh.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(RunError::last(format!(
                "open the new root {}",
                self.root.display()
            )));
        }
        // SAFETY: fresh fd.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// An O_PATH fd on `ctr` resolved inside the root.
    fn resolve(&self, ctr: &Path, what: &str) -> RunResult<OwnedFd> {
        let root = self.root_fd()?;
        openat2_in_root(root.as_fd_b(), &rel(ctr), libc::O_PATH)
            .map_err(|e| RunError::errno(format!("{what}: resolve {}", ctr.display()), e))
    }

    /// The parent directory of `ctr` (created if missing) and the last name.
    fn parent(&mut self, ctr: &Path, what: &str) -> RunResult<(OwnedFd, CString)> {
        let r = rel(ctr);
        let name = r
            .file_name()
            .ok_or_else(|| RunError::new(format!("{what} {}: no file name", ctr.display())))?;
        let name = cstr(name)?;
        let parent = r.parent().unwrap_or(Path::new("")).to_path_buf();
        self.mkdir_all(&Path::new("/").join(&parent), 0o755)?;
        let root = self.root_fd()?;
        let fd = openat2_in_root(root.as_fd_b(), &parent, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| RunError::errno(format!("{what}: open parent of {}", ctr.display()), e))?;
        Ok((fd, name))
    }
}

trait AsFdB {
    fn as_fd_b(&self) -> BorrowedFd<'_>;
}
impl AsFdB for OwnedFd {
    fn as_fd_b(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

fn sys_mount(
    src: Option<&CStr>,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: u64,
    data: Option<&CStr>,
) -> Result<(), i32> {
    let p = |c: Option<&CStr>| c.map(|c| c.as_ptr()).unwrap_or(std::ptr::null());
    // SAFETY: all pointers are NUL-terminated strings or null, valid for the call.
    let r = unsafe {
        libc::mount(
            p(src),
            target.as_ptr(),
            p(fstype),
            flags as libc::c_ulong,
            p(data) as *const libc::c_void,
        )
    };
    if r < 0 { Err(last_errno()) } else { Ok(()) }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const AT_RECURSIVE: u32 = 0x8000;

/// mount_setattr(2): change only the read-only bit, keeping the flags a user namespace may not
/// clear (nosuid, nodev locked by the parent namespace), which a MS_REMOUNT would have to repeat.
fn set_read_only_fd(fd: &OwnedFd, recursive: bool) -> Result<(), i32> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let flags = libc::AT_EMPTY_PATH as u32 | if recursive { AT_RECURSIVE } else { 0 };
    // SAFETY: fd is valid, the path is the empty string, attr is a valid mount_attr of the
    // size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r < 0 { Err(last_errno()) } else { Ok(()) }
}

pub fn unshare(flags: i32) -> RunResult<()> {
    // SAFETY: unshare takes only flags.
    if unsafe { libc::unshare(flags) } < 0 {
        return Err(RunError::last(format!("unshare {}", clone_names(flags))));
    }
    Ok(())
}

impl Sys for LinuxSys {
    fn unshare(&mut self, flags: i32) -> RunResult<()> {
        unshare(flags)
    }

    fn enter_userns(&mut self, extra: i32, map: &IdMap) -> RunResult<()> {
        enter_userns(extra, map)
    }

    fn set_propagation(&mut self, host: &Path, flags: u64) -> RunResult<()> {
        let c = cpath(host)?;
        sys_mount(None, &c, None, flags | libc::MS_REC, None).map_err(|e| {
            RunError::errno(
                format!("make {} private to this namespace", host.display()),
                e,
            )
        })
    }

    fn bind(&mut self, host: &Path, ctr: &Path) -> RunResult<()> {
        let src = cpath(host)?;
        let target = self.resolve(ctr, "bind mount")?;
        sys_mount(
            Some(&src),
            &fd_path(&target),
            None,
            libc::MS_BIND | libc::MS_REC,
            None,
        )
        .map_err(|e| {
            RunError::errno(
                format!("bind mount {} onto {}", host.display(), ctr.display()),
                e,
            )
        })
    }

    fn bind_self(&mut self, host: &Path) -> RunResult<()> {
        let c = cpath(host)?;
        sys_mount(Some(&c), &c, None, libc::MS_BIND | libc::MS_REC, None)
            .map_err(|e| RunError::errno(format!("bind {} onto itself", host.display()), e))
    }

    fn mount(
        &mut self,
        source: &str,
        ctr: &Path,
        fstype: &str,
        flags: u64,
        data: &str,
    ) -> RunResult<()> {
        let target = self.resolve(ctr, &format!("mount {fstype}"))?;
        let src = cstr(OsStr::new(source))?;
        let t = cstr(OsStr::new(fstype))?;
        let d = cstr(OsStr::new(data))?;
        let d = if data.is_empty() {
            None
        } else {
            Some(d.as_c_str())
        };
        sys_mount(Some(&src), &fd_path(&target), Some(&t), flags, d)
            .map_err(|e| RunError::errno(format!("mount {fstype} on {}", ctr.display()), e))
    }

    fn set_read_only(&mut self, ctr: &Path, recursive: bool) -> RunResult<()> {
        let fd = self.resolve(ctr, "make read-only")?;
        set_read_only_fd(&fd, recursive)
            .map_err(|e| RunError::errno(format!("make {} read-only", ctr.display()), e))
    }

    fn mkdir_all(&mut self, ctr: &Path, mode: u32) -> RunResult<()> {
        let root = self.root_fd()?;
        let mut cur = PathBuf::new();
        for comp in rel(ctr).components() {
            let name = comp.as_os_str();
            let dir = openat2_in_root(root.as_fd_b(), &cur, libc::O_PATH | libc::O_DIRECTORY)
                .map_err(|e| RunError::errno(format!("mkdir {}", ctr.display()), e))?;
            cur.push(name);
            if openat2_in_root(root.as_fd_b(), &cur, libc::O_PATH | libc::O_DIRECTORY).is_ok() {
                continue;
            }
            let c = cstr(name)?;
            // SAFETY: dir is a valid directory fd, c is NUL-terminated.
            let r = unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode) };
            if r < 0 && last_errno() != libc::EEXIST {
                return Err(RunError::last(format!("mkdir {}", ctr.display())));
            }
        }
        Ok(())
    }

    fn touch(&mut self, ctr: &Path) -> RunResult<()> {
        let root = self.root_fd()?;
        if openat2_in_root(root.as_fd_b(), &rel(ctr), libc::O_PATH).is_ok() {
            return Ok(());
        }
        let (dir, name) = self.parent(ctr, "create")?;
        // O_NOFOLLOW|O_EXCL: a dangling symlink planted here must not be followed out.
        // SAFETY: dir is a valid fd, name NUL-terminated; the fd returned is closed at once.
        let fd = unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
                0o644 as libc::c_uint,
            )
        };
        if fd < 0 {
            return Err(RunError::last(format!("create {}", ctr.display())));
        }
        // SAFETY: fd is ours.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(())
    }

    fn symlink(&mut self, target: &Path, ctr: &Path) -> RunResult<()> {
        let (dir, name) = self.parent(ctr, "symlink")?;
        let t = cpath(target)?;
        // SAFETY: valid fd and NUL-terminated strings.
        if unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } < 0 {
            return Err(RunError::last(format!("symlink {}", ctr.display())));
        }
        Ok(())
    }

    fn sethostname(&mut self, name: &str) -> RunResult<()> {
        // SAFETY: the pointer and length describe `name`'s bytes.
        if unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) } < 0 {
            return Err(RunError::last(format!("sethostname {name}")));
        }
        Ok(())
    }

    fn loopback_up(&mut self) -> RunResult<()> {
        loopback_up()
    }

    fn pivot_root(&mut self, new_root: &Path) -> RunResult<()> {
        // pivot_root(".", "."): the old root ends up stacked on the new one, so no directory
        // for it is needed in the image; detaching "." then removes it.
        let c = cpath(new_root)?;
        // SAFETY: NUL-terminated path.
        if unsafe { libc::chdir(c.as_ptr()) } < 0 {
            return Err(RunError::last(format!("chdir into {}", new_root.display())));
        }
        // SAFETY: both arguments are the NUL-terminated string ".".
        if unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } < 0 {
            return Err(RunError::last(format!(
                "pivot_root into {}",
                new_root.display()
            )));
        }
        // The old root must not propagate its unmount anywhere (it is already rprivate).
        // SAFETY: "." is NUL-terminated.
        if unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) } < 0 {
            return Err(RunError::last("detach the old root"));
        }
        // SAFETY: "/" is NUL-terminated.
        if unsafe { libc::chdir(c"/".as_ptr()) } < 0 {
            return Err(RunError::last("chdir to the new root"));
        }
        self.root = PathBuf::from("/");
        Ok(())
    }
}

/// Bring `lo` up in the current network namespace (SIOCSIFFLAGS; no `ip` needed).
pub fn loopback_up() -> RunResult<()> {
    // SAFETY: plain socket(2) call; the fd is owned below.
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if s < 0 {
        return Err(RunError::last("socket for the loopback interface"));
    }
    // SAFETY: fresh fd.
    let s = unsafe { OwnedFd::from_raw_fd(s) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: s is a socket, ifr a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    unsafe {
        if libc::ioctl(s.as_raw_fd(), libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            return Err(RunError::last("bring lo up: SIOCGIFFLAGS"));
        }
        ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(s.as_raw_fd(), libc::SIOCSIFFLAGS, &ifr) < 0 {
            return Err(RunError::last("bring lo up: SIOCSIFFLAGS"));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Process helpers used by the supervisor and the init.

pub fn getuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getuid() }
}
pub fn getgid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getgid() }
}
pub fn geteuid() -> u32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::geteuid() }
}
pub fn getpid() -> i32 {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

pub enum Fork {
    Child,
    Parent(i32),
}

/// fork(2). Callers must be single-threaded (the supervisor forks before any thread exists).
pub fn fork(what: &str) -> RunResult<Fork> {
    // SAFETY: the caller guarantees no other thread exists, so the child's copy of memory is
    // consistent (no lock held by a vanished thread).
    match unsafe { libc::fork() } {
        -1 => Err(RunError::last(format!("fork {what}"))),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid)),
    }
}

/// fork(2) into a new pid namespace: the child is its pid 1. A raw clone rather than
/// unshare(CLONE_NEWPID) + fork, because after such an unshare the kernel refuses to create
/// threads in the caller (EINVAL), and the supervisor still has to start the session threads.
pub fn fork_new_pid_ns(what: &str) -> RunResult<Fork> {
    // SAFETY: clone without CLONE_VM and with a null stack behaves as fork: the child gets a
    // copy of the address space. The caller guarantees no other thread exists.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    match r {
        -1 => Err(RunError::last(format!(
            "clone {what} into a new pid namespace"
        ))),
        0 => Ok(Fork::Child),
        pid => Ok(Fork::Parent(pid as i32)),
    }
}

pub fn pipe() -> RunResult<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is an array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(RunError::last("pipe"));
    }
    // SAFETY: both fds are fresh and owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub fn read_byte(fd: &OwnedFd) -> Option<u8> {
    let mut b = [0u8; 1];
    loop {
        // SAFETY: b is a valid 1-byte buffer.
        let n = unsafe { libc::read(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1) };
        match n {
            1 => return Some(b[0]),
            n if n < 0 && last_errno() == libc::EINTR => continue,
            _ => return None,
        }
    }
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> bool {
    while !buf.is_empty() {
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            if last_errno() == libc::EINTR {
                continue;
            }
            return false;
        }
        buf = &buf[n as usize..];
    }
    true
}

pub fn read_some(fd: RawFd, buf: &mut [u8]) -> isize {
    // SAFETY: buf is valid for its length.
    unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill takes plain integers; a stale pid only yields ESRCH.
    unsafe { libc::kill(pid, sig) };
}

/// waitpid; returns (pid, status) or None with WNOHANG and nothing ready / no children.
pub fn waitpid(pid: i32, nohang: bool) -> Option<(i32, i32)> {
    let mut status = 0;
    loop {
        let flags = if nohang { libc::WNOHANG } else { 0 } | libc::__WALL;
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, flags) };
        if r < 0 && last_errno() == libc::EINTR {
            continue;
        }
        return if r > 0 { Some((r, status)) } else { None };
    }
}

/// The shell's convention: the exit code, or 128+N when signal N killed it.
pub fn exit_code(status: i32) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    }
}

pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns; used in forked children so the parent's destructors (temp
    // dirs, the FUSE session) never run twice.
    unsafe { libc::_exit(code) }
}

/// The signals pid 1 forwards to the command (issue 4's list) plus SIGCHLD for reaping.
pub const FORWARDED: [i32; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: the set is initialised by sigemptyset before any use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Block the forwarded signals and SIGCHLD (inherited by threads and children created later)
/// and return a signalfd that reads them.
pub fn block_and_signalfd() -> RunResult<OwnedFd> {
    let mut all = FORWARDED.to_vec();
    all.push(libc::SIGCHLD);
    let set = sigset(&all);
    // SAFETY: set is initialised; the old mask is not needed.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    // SAFETY: set is initialised; the fd is fresh.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK) };
    if fd < 0 {
        return Err(RunError::last("signalfd"));
    }
    // SAFETY: fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// In a fresh child: default dispositions and an empty mask, as a command expects.
pub fn reset_signals() {
    // SAFETY: restoring defaults and unblocking all signals is always valid.
    unsafe {
        for s in 1..32 {
            if s != libc::SIGKILL && s != libc::SIGSTOP {
                libc::signal(s, libc::SIG_DFL);
            }
        }
        let set = sigset(&[]);
        libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    }
}

/// Drain the signalfd; returns the signals read.
pub fn read_signals(fd: &OwnedFd) -> Vec<i32> {
    let mut out = Vec::new();
    loop {
        // SAFETY: signalfd_siginfo is plain data.
        let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: info is a valid buffer of `size` bytes.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        if n as usize != size {
            return out;
        }
        out.push(info.ssi_signo as i32);
    }
}

/// poll(2) over (fd, events); returns the revents in the same order.
pub fn poll(fds: &[(RawFd, i16)], timeout_ms: i32) -> Vec<i16> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&(fd, events)| libc::pollfd {
            fd,
            events,
            revents: 0,
        })
        .collect();
    // SAFETY: p is a valid array of pollfd of the length passed.
    let r = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, timeout_ms) };
    if r < 0 {
        return vec![0; fds.len()];
    }
    p.iter().map(|p| p.revents).collect()
}

pub fn set_pdeathsig(sig: i32) {
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) };
}

pub fn getppid() -> i32 {
    // SAFETY: no arguments.
    unsafe { libc::getppid() }
}

pub fn setsid() {
    // SAFETY: no arguments; failure (already a leader) is harmless.
    unsafe { libc::setsid() };
}

pub fn isatty(fd: RawFd) -> bool {
    // SAFETY: isatty takes an int.
    unsafe { libc::isatty(fd) == 1 }
}

/// The terminal's settings, to restore after raw mode.
pub struct Termios(libc::termios);

pub fn make_raw(fd: RawFd) -> Option<Termios> {
    // SAFETY: termios is plain data; tcgetattr fills it on success.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: t is a valid out pointer.
    if unsafe { libc::tcgetattr(fd, &mut t) } < 0 {
        return None;
    }
    let saved = Termios(t);
    // SAFETY: t is initialised; cfmakeraw edits it in place.
    unsafe {
        libc::cfmakeraw(&mut t);
        libc::tcsetattr(fd, libc::TCSADRAIN, &t);
    }
    Some(saved)
}

pub fn restore_termios(fd: RawFd, t: &Termios) {
    // SAFETY: t holds settings read by tcgetattr.
    unsafe { libc::tcsetattr(fd, libc::TCSADRAIN, &t.0) };
}

/// Copy the window size of `from` (the caller's terminal) to `to` (the pty master); the kernel
/// then sends SIGWINCH to the pty's foreground process group.
pub fn copy_winsize(from: RawFd, to: RawFd) {
    // SAFETY: winsize is plain data; both ioctls take a pointer to it.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(from, libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(to, libc::TIOCSWINSZ, &ws);
        }
    }
}

/// A new pty from the devpts at /dev/pts (inside the container): (master, slave).
pub fn open_pty() -> RunResult<(OwnedFd, OwnedFd)> {
    // SAFETY: NUL-terminated path; the fd is fresh.
    let m = unsafe {
        libc::open(
            c"/dev/ptmx".as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if m < 0 {
        return Err(RunError::last("open /dev/ptmx"));
    }
    // SAFETY: fresh fd.
    let m = unsafe { OwnedFd::from_raw_fd(m) };
    let unlock: libc::c_int = 0;
    // SAFETY: m is a pty master; TIOCSPTLCK takes an int pointer, TIOCGPTPEER flags.
    let s = unsafe {
        libc::ioctl(m.as_raw_fd(), libc::TIOCSPTLCK, &unlock);
        libc::ioctl(
            m.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if s < 0 {
        return Err(RunError::last("open the pty slave (TIOCGPTPEER)"));
    }
    // SAFETY: fresh fd.
    Ok((m, unsafe { OwnedFd::from_raw_fd(s) }))
}

/// In the command's process: make `slave` the controlling terminal and stdio.
pub fn attach_tty(slave: &OwnedFd) -> RunResult<()> {
    // SAFETY: slave is a tty fd; dup2 onto 0..2 is valid.
    unsafe {
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) < 0 {
            return Err(RunError::last("make the pty the controlling terminal"));
        }
        for fd in 0..3 {
            if libc::dup2(slave.as_raw_fd(), fd) < 0 {
                return Err(RunError::last("dup2 the pty"));
            }
        }
    }
    Ok(())
}

pub fn set_ids(uid: u32, gid: u32, groups: Option<&[u32]>) -> RunResult<()> {
    // SAFETY: setgroups reads `groups.len()` gids; setresgid/uid take plain ids.
    unsafe {
        if let Some(g) = groups
            && libc::setgroups(g.len(), g.as_ptr()) < 0
        {
            return Err(RunError::last("setgroups"));
        }
        if libc::setresgid(gid, gid, gid) < 0 {
            return Err(RunError::last(format!("setgid {gid}")));
        }
        if libc::setresuid(uid, uid, uid) < 0 {
            return Err(RunError::last(format!("setuid {uid}")));
        }
    }
    Ok(())
}

pub fn chdir(p: &Path) -> RunResult<()> {
    let c = cpath(p)?;
    // SAFETY: NUL-terminated.
    if unsafe { libc::chdir(c.as_ptr()) } < 0 {
        return Err(RunError::last(format!("chdir {}", p.display())));
    }
    Ok(())
}

/// execve(2); returns only on failure, with the errno.
pub fn execve(path: &Path, argv: &[OsString], env: &[OsString]) -> RunError {
    let conv = |v: &[OsString]| -> RunResult<Vec<CString>> { v.iter().map(|s| cstr(s)).collect() };
    let (p, a, e) = match (cpath(path), conv(argv), conv(env)) {
        (Ok(p), Ok(a), Ok(e)) => (p, a, e),
        (Err(x), _, _) | (_, Err(x), _) | (_, _, Err(x)) => return x,
    };
    let mut ap: Vec<*const libc::c_char> = a.iter().map(|c| c.as_ptr()).collect();
    ap.push(std::ptr::null());
    let mut ep: Vec<*const libc::c_char> = e.iter().map(|c| c.as_ptr()).collect();
    ep.push(std::ptr::null());
    // SAFETY: p, argv and envp are NUL-terminated arrays of NUL-terminated strings that outlive
    // the call.
    unsafe { libc::execve(p.as_ptr(), ap.as_ptr(), ep.as_ptr()) };
    RunError::last(format!("exec {}", path.display()))
}

pub fn mkdtemp(prefix: &Path) -> RunResult<PathBuf> {
    let mut t = prefix.as_os_str().as_bytes().to_vec();
    t.extend_from_slice(b"XXXXXX\0");
    // SAFETY: t is a NUL-terminated, writable template.
    let r = unsafe { libc::mkdtemp(t.as_mut_ptr().cast()) };
    if r.is_null() {
        return Err(RunError::last(format!(
            "create a temporary directory {}XXXXXX",
            prefix.display()
        )));
    }
    t.pop();
    Ok(PathBuf::from(OsStr::from_bytes(&t)))
}

/// Detach a mount (teardown of a mount that outlived its session).
pub fn umount_detach(p: &Path) {
    if let Ok(c) = cpath(p) {
        // SAFETY: NUL-terminated.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

pub fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n.div_ceil(2)];
    // SAFETY: b is valid for its length.
    let r = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if r < 0 {
        let seed = getpid() as u64
            ^ std::time::UNIX_EPOCH
                .elapsed()
                .map_or(0, |d| d.as_nanos() as u64);
        b = seed.to_le_bytes().to_vec();
    }
    let s: String = b.iter().map(|x| format!("{x:02x}")).collect();
    s[..n.min(s.len())].to_string()
}

/// unshare(CLONE_NEWUSER | extra) and write the maps. With the helpers, a process forked
/// *before* the unshare (so it stays in the host namespace, where the setuid bit counts) runs
/// newuidmap/newgidmap on us once we have unshared.
pub fn enter_userns(extra: i32, map: &IdMap) -> RunResult<()> {
    let flags = libc::CLONE_NEWUSER | extra;
    if !map.helper {
        unshare(flags)?;
        let write = |p: &str, s: &str| {
            std::fs::write(p, s).map_err(|e| RunError::io(format!("write {p} ({})", s.trim()), &e))
        };
        if write("/proc/self/setgroups", "deny").is_err() {
            // Kernels without the file (< 3.19) allow gid_map without it.
        }
        write("/proc/self/uid_map", &map.uid_map_text())?;
        write("/proc/self/gid_map", &map.gid_map_text())?;
        return Ok(());
    }
    let me = getpid();
    let (rd, wr) = pipe()?;
    match fork("the id map helper")? {
        Fork::Child => {
            drop(wr);
            if read_byte(&rd).is_none() {
                exit_now(1);
            }
            for (prog, r) in [("newuidmap", &map.uids), ("newgidmap", &map.gids)] {
                match std::process::Command::new(prog)
                    .args(idmap::helper_args(me, r))
                    .status()
                {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        eprintln!("unionfuse: {prog} {me} failed: {s}");
                        exit_now(1);
                    }
                    Err(e) => {
                        eprintln!("unionfuse: run {prog}: {e}");
                        exit_now(1);
                    }
                }
            }
            exit_now(0);
        }
        Fork::Parent(helper) => {
            drop(rd);
            let unshared = unshare(flags);
            if unshared.is_ok() {
                write_all(std::os::fd::AsRawFd::as_raw_fd(&wr), b"g");
            }
            drop(wr);
            let status = waitpid(helper, false).map(|(_, s)| s).unwrap_or(1);
            unshared?;
            if exit_code(status) != 0 {
                return Err(RunError::new(format!(
                    "map ids through newuidmap/newgidmap (uid [{}] gid [{}]): helper failed",
                    map.uid_map_text().trim().replace('\n', ", "),
                    map.gid_map_text().trim().replace('\n', ", ")
                )));
            }
            Ok(())
        }
    }
}
