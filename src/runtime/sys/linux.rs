//! `LinuxSys`: the plan's steps done for real (mount, mount_setattr, pivot_root, ...), with
//! container paths resolved beneath the new root so a symlink in an image cannot redirect a
//! mount onto the host; and entering a user namespace with its id maps.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::process::{
    Fork, exit_code, exit_now, fork, getpid, pipe, read_byte, waitpid, write_all,
};
use super::{RunError, RunResult, Sys, clone_names, contain, cpath, cstr, last_errno};
use crate::runtime::caps::{Caps, ProcessCaps};
use crate::runtime::idmap::{self, IdMap};
use crate::runtime::seccomp::Insn;

// The real thing.

/// Executes the steps on Linux. `root` is the host path of the container's root (the bind of
/// the union's mountpoint); container paths are resolved beneath it.
pub struct LinuxSys {
    pub root: PathBuf,
}

/// `/proc/self/fd/N`: mount(2) follows the magic link to exactly the object `fd` names.
pub(super) fn fd_path(fd: &OwnedFd) -> CString {
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

    /// As `resolve`, but a missing path is None.
    fn resolve_opt(&self, ctr: &Path, what: &str) -> RunResult<Option<OwnedFd>> {
        let root = self.root_fd()?;
        match openat2_in_root(root.as_fd_b(), &rel(ctr), libc::O_PATH) {
            Ok(fd) => Ok(Some(fd)),
            Err(libc::ENOENT) => Ok(None),
            Err(e) => Err(RunError::errno(
                format!("{what}: resolve {}", ctr.display()),
                e,
            )),
        }
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

pub(super) fn sys_mount(
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

/// mount_setattr(2): change only the read-only bit, keeping the flags a user namespace may not
/// clear (nosuid, nodev locked by the parent namespace), which a MS_REMOUNT would have to repeat.
pub(super) fn set_read_only_fd(fd: &OwnedFd, recursive: bool) -> Result<(), i32> {
    use crate::sys::{MOUNT_ATTR_RDONLY, mount_setattr};
    mount_setattr(fd.as_fd(), MOUNT_ATTR_RDONLY, 0, recursive).map_err(|e| e.errno())
}

/// Bind the object `fd` names onto itself (a mount of its own, to be made read-only).
pub(super) fn bind_fd_onto_itself(fd: &OwnedFd) -> Result<(), i32> {
    let p = fd_path(fd);
    sys_mount(Some(&p), &p, None, libc::MS_BIND | libc::MS_REC, None)
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

    fn mask(&mut self, ctr: &Path) -> RunResult<()> {
        match self.resolve_opt(ctr, "mask")? {
            Some(fd) => contain::mask(&fd, ctr),
            None => Ok(()),
        }
    }

    fn read_only_path(&mut self, ctr: &Path) -> RunResult<()> {
        match self.resolve_opt(ctr, "make read-only")? {
            Some(fd) => contain::read_only_path(&fd, || self.resolve(ctr, "make read-only"), ctr),
            None => Ok(()),
        }
    }

    fn close_fds_from(&mut self, first: u32) -> RunResult<()> {
        contain::close_fds_from(first)
    }

    fn bounding(&mut self, keep: Caps) -> RunResult<()> {
        contain::bounding(keep)
    }

    fn keep_caps(&mut self) -> RunResult<()> {
        contain::keep_caps()
    }

    fn set_ids(&mut self, uid: u32, gid: u32, groups: Option<&[u32]>) -> RunResult<()> {
        super::process::set_ids(uid, gid, groups)
    }

    fn chdir(&mut self, dir: &Path) -> RunResult<()> {
        contain::chdir_checked(dir)
    }

    fn set_caps(&mut self, c: &ProcessCaps) -> RunResult<()> {
        contain::set_caps(c)
    }

    fn no_new_privs(&mut self) -> RunResult<()> {
        contain::no_new_privs()
    }

    fn seccomp(&mut self, prog: &[Insn]) -> RunResult<()> {
        contain::install_seccomp(prog)
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
