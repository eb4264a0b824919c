//! Process-level calls of the mount daemon: the fork into the background, the signal mask and
//! the wait for a signal, stdio redirection, and its own mount(2)/umount2(2) of a /dev/fuse fd.
//! Safe wrappers; the `unsafe` stays here.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

pub type SigSet = libc::sigset_t;

/// Block `signals` in this thread (threads spawned later inherit the mask) and return the set,
/// for `wait_signal`.
pub fn block_signals(signals: &[i32]) -> SigSet {
    // SAFETY: the set is initialised by sigemptyset before use; the mask applies to this
    // thread and is inherited by the threads spawned after it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait until one of the (blocked) signals in `set` arrives; returns it.
pub fn wait_signal(set: &SigSet) -> i32 {
    let mut sig = 0;
    // SAFETY: set is a valid, initialised signal set; sig is a valid out pointer.
    unsafe { libc::sigwait(set, &mut sig) };
    sig
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::last());
    }
    // SAFETY: fds were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

pub enum Forked {
    Child,
    Parent(libc::pid_t),
}

/// fork(2). Only while the process has a single thread: a child of a multi-threaded process
/// may inherit a lock held by a thread that does not exist in it.
pub fn fork() -> Result<Forked> {
    // SAFETY: the caller is single-threaded (documented above); the child continues with a
    // consistent copy of memory.
    match unsafe { libc::fork() } {
        -1 => Err(Error::last()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid)),
    }
}

/// Start a new session: detach from the controlling terminal's.
pub fn setsid() {
    // SAFETY: setsid takes no arguments; failing (already a group leader) is harmless here.
    unsafe { libc::setsid() };
}

/// Point stdin, stdout and stderr at `fd` (e.g. /dev/null).
pub fn redirect_stdio(fd: BorrowedFd<'_>) {
    for target in 0..3 {
        // SAFETY: dup2 onto the standard fds; `fd` is open for the duration of the call.
        unsafe { libc::dup2(fd.as_raw_fd(), target) };
    }
}

/// mount(2) of a filesystem of type `fstype` from `source` on `target` (the kernel parses
/// `data`). Errors carry the raw errno (EPERM: not allowed here, e.g. not root).
pub fn mount(source: &CStr, target: &CStr, fstype: &CStr, flags: u64, data: &CStr) -> Result<()> {
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags as libc::c_ulong,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(Error::last());
    }
    Ok(())
}

/// umount2(2) of `target` with `flags` (0, or MNT_DETACH).
pub fn umount(target: &CStr, flags: i32) -> Result<()> {
    // SAFETY: target is a valid NUL-terminated string for the duration of the call.
    if unsafe { libc::umount2(target.as_ptr(), flags) } != 0 {
        return Err(Error::last());
    }
    Ok(())
}
