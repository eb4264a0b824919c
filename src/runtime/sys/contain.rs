//! What contains the command, for real: masking and read-only paths in the new root, closing
//! fds, the capability sets, no_new_privs and the seccomp filter (prctl, capset, seccomp).

use std::os::fd::AsRawFd;

use super::linux::{bind_fd_onto_itself, fd_path, set_read_only_fd, sys_mount};
use super::{RunError, RunResult, cstr, last_errno};
use crate::runtime::caps::{Caps, ProcessCaps};
use crate::runtime::seccomp::Insn;

/// /dev/null over a file, an empty read-only tmpfs over a directory.
pub fn mask(target: &std::os::fd::OwnedFd, shown: &std::path::Path) -> RunResult<()> {
    // SAFETY: stat is plain data filled by fstat on a valid fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: target is a valid (O_PATH) fd, st a valid out pointer.
    if unsafe { libc::fstat(target.as_raw_fd(), &mut st) } < 0 {
        return Err(RunError::last(format!("mask {}: stat", shown.display())));
    }
    let at = fd_path(target);
    let r = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        sys_mount(
            Some(c"tmpfs"),
            &at,
            Some(c"tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"size=0,mode=555"),
        )
    } else {
        sys_mount(Some(c"/dev/null"), &at, None, libc::MS_BIND, None)
    };
    r.map_err(|e| RunError::errno(format!("mask {}", shown.display()), e))
}

/// Bind onto itself, then read-only (recursively).
pub fn read_only_path(
    target: &std::os::fd::OwnedFd,
    reopen: impl FnOnce() -> RunResult<std::os::fd::OwnedFd>,
    shown: &std::path::Path,
) -> RunResult<()> {
    bind_fd_onto_itself(target)
        .map_err(|e| RunError::errno(format!("bind {} onto itself", shown.display()), e))?;
    // The fd still names the covered object: open the new mount on top.
    let top = reopen()?;
    set_read_only_fd(&top, true)
        .map_err(|e| RunError::errno(format!("make {} read-only", shown.display()), e))
}

pub fn close_fds_from(first: u32) -> RunResult<()> {
    // SAFETY: close_range takes integers; fds of this process above `first` are closed, and
    // nothing in this process uses them again before exec.
    let r = unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, 0u32) };
    if r < 0 {
        return fallback_close(first, None);
    }
    Ok(())
}

/// Close every fd from `first` up but `keep` (pid 1 keeps its pipe to the supervisor).
pub fn close_fds_from_except(first: u32, keep: i32) -> RunResult<()> {
    let Ok(keep) = u32::try_from(keep) else {
        return close_fds_from(first);
    };
    if keep < first {
        return close_fds_from(first);
    }
    if keep > first {
        // SAFETY: as in close_fds_from; `keep` stays open.
        let r = unsafe { libc::syscall(libc::SYS_close_range, first, keep - 1, 0u32) };
        if r < 0 {
            return fallback_close(first, Some(keep));
        }
    }
    if keep == u32::MAX {
        return Ok(());
    }
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_close_range, keep + 1, u32::MAX, 0u32) };
    if r < 0 {
        return fallback_close(first, Some(keep));
    }
    Ok(())
}

fn fallback_close(first: u32, keep: Option<u32>) -> RunResult<()> {
    if last_errno() != libc::ENOSYS {
        return Err(RunError::last(format!("close fds from {first}")));
    }
    // Kernels before 5.9: close what /proc lists.
    let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| RunError::io("list /proc/self/fd", &e))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first as i32 && Some(*fd as u32) != keep)
        .collect();
    for fd in fds {
        // SAFETY: closing an fd number; a stale one (the listing's own) yields EBADF.
        unsafe { libc::close(fd) };
    }
    Ok(())
}

fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

pub fn bounding(keep: Caps) -> RunResult<()> {
    for cap in 0..=last_cap() {
        if keep.has(cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } < 0 {
            return Err(RunError::last(format!(
                "drop {} from the bounding set",
                Caps(1 << cap).names()
            )));
        }
    }
    Ok(())
}

pub fn keep_caps() -> RunResult<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } < 0 {
        return Err(RunError::last(
            "keep capabilities across setuid (PR_SET_KEEPCAPS)",
        ));
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_V3: u32 = 0x2008_0522;

/// The permitted set this process holds (capget).
fn permitted_now() -> RunResult<Caps> {
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    let mut data = [CapData {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the header and two data structs are the v3 layout capget(2) writes.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    } < 0
    {
        return Err(RunError::last("read this process's capabilities"));
    }
    Ok(Caps(
        u64::from(data[0].permitted) | u64::from(data[1].permitted) << 32,
    ))
}

/// Capabilities this process does not hold itself (a caller whose bounding set lacks some,
/// `--privileged` naming every capability) are left out: none can be granted.
pub fn set_caps(c: &ProcessCaps) -> RunResult<()> {
    let held = permitted_now()?;
    let c = &ProcessCaps {
        bounding: c.bounding,
        effective: Caps(c.effective.0 & held.0),
        permitted: Caps(c.permitted.0 & held.0),
        inheritable: Caps(c.inheritable.0 & held.0),
        ambient: Caps(c.ambient.0 & held.0),
    };
    let half = |s: Caps, i: usize| (s.0 >> (32 * i)) as u32;
    let data: [CapData; 2] = std::array::from_fn(|i| CapData {
        effective: half(c.effective, i),
        permitted: half(c.permitted, i),
        inheritable: half(c.inheritable, i),
    });
    let mut hdr = CapHeader {
        version: CAP_V3,
        pid: 0,
    };
    // SAFETY: the header and two data structs are the v3 layout capset(2) reads.
    if unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) } < 0 {
        return Err(RunError::last(format!(
            "set capabilities (effective {})",
            c.effective.names()
        )));
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    for cap in (0..64).filter(|n| c.ambient.has(*n)) {
        // SAFETY: prctl with integer arguments.
        let r = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                cap as libc::c_ulong,
                0,
                0,
            )
        };
        if r < 0 {
            return Err(RunError::last(format!(
                "raise {} in the ambient set",
                Caps(1 << cap).names()
            )));
        }
    }
    Ok(())
}

pub fn no_new_privs() -> RunResult<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(RunError::last("set no_new_privs"));
    }
    Ok(())
}

pub fn install_seccomp(prog: &[Insn]) -> RunResult<()> {
    let filter: Vec<libc::sock_filter> = prog
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: fprog points at `filter`, alive for the call; the kernel copies the program.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0u32,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(RunError::last(format!(
            "install the seccomp filter ({} instructions)",
            prog.len()
        )));
    }
    Ok(())
}

pub fn chdir_checked(p: &std::path::Path) -> RunResult<()> {
    let c = cstr(p.as_os_str())?;
    // SAFETY: NUL-terminated path.
    if unsafe { libc::chdir(c.as_ptr()) } < 0 {
        return Err(RunError::last(format!("chdir {}", p.display())));
    }
    Ok(())
}
