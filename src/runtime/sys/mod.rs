//! The runtime's syscall seam. `Sys` is what the plan's steps need from the kernel; `LinuxSys`
//! (linux.rs) does it for real, the test-only `RecordingSys` (fake.rs) writes the calls down so
//! the plan is unit-tested without privileges. The process, signal and terminal helpers of the
//! supervisor and the init are in process.rs. Every `unsafe` of the runtime lives in this
//! module; container paths are resolved inside the new root with `openat2(RESOLVE_IN_ROOT)`.

mod contain;
mod error;
#[cfg(test)]
mod fake;
mod linux;
mod process;

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub use contain::close_fds_from_except;
pub use error::{RunError, RunResult, errno_text, last_errno};
#[cfg(test)]
pub use fake::RecordingSys;
pub use linux::{LinuxSys, enter_userns, loopback_up, unshare};
pub use process::*;

use super::caps::{Caps, ProcessCaps};
use super::idmap::IdMap;
use super::seccomp::Insn;

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
    /// /dev/null over a file, an empty read-only tmpfs over a directory; absent: nothing.
    fn mask(&mut self, ctr: &Path) -> RunResult<()>;
    /// Bind onto itself, read-only; absent: nothing.
    fn read_only_path(&mut self, ctr: &Path) -> RunResult<()>;
    // The command's process, before exec.
    fn close_fds_from(&mut self, first: u32) -> RunResult<()>;
    /// Drop from the bounding set every capability not in `keep`.
    fn bounding(&mut self, keep: Caps) -> RunResult<()>;
    fn keep_caps(&mut self) -> RunResult<()>;
    fn set_ids(&mut self, uid: u32, gid: u32, groups: Option<&[u32]>) -> RunResult<()>;
    fn chdir(&mut self, dir: &Path) -> RunResult<()>;
    fn set_caps(&mut self, caps: &ProcessCaps) -> RunResult<()>;
    fn no_new_privs(&mut self) -> RunResult<()>;
    fn seccomp(&mut self, prog: &[Insn]) -> RunResult<()>;
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
