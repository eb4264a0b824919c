//! Process, signal, terminal and id helpers of the supervisor and the container's init: thin
//! wrappers that turn a failed call into a `RunError` naming the step.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::{RunError, RunResult, cpath, cstr, last_errno};

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
/// `userns`: the child gets a new user namespace too (owning its pid namespace), with no ids
/// mapped until the parent writes them (`write_child_maps`).
pub fn fork_new_pid_ns(what: &str, userns: bool) -> RunResult<Fork> {
    let user = if userns { libc::CLONE_NEWUSER } else { 0 };
    // SAFETY: clone without CLONE_VM and with a null stack behaves as fork: the child gets a
    // copy of the address space. The caller guarantees no other thread exists.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWPID | user | libc::SIGCHLD) as libc::c_ulong,
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

/// Write a child's uid_map and gid_map from the parent namespace (as host root any ranges are
/// allowed, and setgroups stays allowed in the child).
pub fn write_child_maps(pid: i32, map: &super::IdMap) -> RunResult<()> {
    for (file, text) in [
        ("uid_map", map.uid_map_text()),
        ("gid_map", map.gid_map_text()),
    ] {
        let p = format!("/proc/{pid}/{file}");
        std::fs::write(&p, &text).map_err(|e| {
            RunError::io(
                format!("write {p} ({})", text.trim().replace('\n', ", ")),
                &e,
            )
        })?;
    }
    Ok(())
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

/// Dumpable again after a change of ids (which clears the flag): /proc/PID of the process then
/// belongs to its uid, and the container may inspect its own init (with CAP_SYS_PTRACE).
pub fn set_dumpable() {
    // SAFETY: prctl with an integer argument.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1 as libc::c_ulong, 0, 0, 0) };
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
