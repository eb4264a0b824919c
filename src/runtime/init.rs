//! pid 1 of the container: applies the container's steps (mounts, pivot_root), starts the
//! command, then reaps every child, forwards signals to the command and, with `-t`, relays the
//! terminal. Exits with the command's status (128+N if signal N killed it). Runs in a forked
//! copy of the supervisor, so it leaves only through `exit_now` (no destructor runs twice).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::idmap::IdMap;
use super::plan::{self, RunPlan};
use super::rootfs;
use super::sys::{self, Fork, LinuxSys, RunError, RunResult};

/// Exit code for a failure of the runtime itself (docker's convention).
pub const EXIT_SETUP: i32 = 125;

/// The body of pid 1. Waits on `go` until the supervisor has mounted the union; never returns.
pub fn pid1(plan: &RunPlan, root: &Path, init_dir: &Path, map: &IdMap, go: OwnedFd) -> ! {
    // The caller's fds are not the container's: only --preserve-fds N's (for the command) and
    // the pipe from the supervisor stay.
    if let Err(e) = sys::close_fds_from_except(3 + plan.security.preserve_fds, go.as_raw_fd()) {
        eprintln!("unionfuse run: {e}");
        sys::exit_now(EXIT_SETUP);
    }
    // Die with the supervisor: without it the union is gone and nothing here can work.
    sys::set_pdeathsig(libc::SIGKILL);
    // Out of the caller's process group: terminal signals reach the supervisor only, which
    // forwards them once (instead of the command getting a Ctrl-C twice).
    sys::setsid();
    if sys::read_byte(&go) != Some(b'g') {
        sys::exit_now(EXIT_SETUP);
    }
    drop(go);
    match start(plan, root, init_dir, map) {
        Ok(code) => sys::exit_now(code),
        Err(e) => {
            eprintln!("unionfuse run: {e}");
            sys::exit_now(EXIT_SETUP)
        }
    }
}

fn start(plan: &RunPlan, root: &Path, init_dir: &Path, map: &IdMap) -> RunResult<i32> {
    let sigfd = sys::block_and_signalfd()?;
    let mut linux = LinuxSys {
        root: root.to_path_buf(),
    };
    plan::apply(&plan.container_steps(root, init_dir, map), &mut linux)?;
    if plan.container_ids.is_some() {
        // The switch from host root to the container's root made us non-dumpable, which would
        // leave /proc/1 to the host's root; we are the container's now.
        sys::set_dumpable();
    }

    // From here on we are inside: "/" is the union.
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let user = rootfs::resolve_user(plan.user.as_ref(), &passwd, &group)?;
    let env = plan.environment(&user.home);
    let path_env = env
        .iter()
        .rev()
        .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let workdir = plan.workdir.clone().unwrap_or_else(|| PathBuf::from("/"));
    if plan.workdir.is_some() {
        // As docker: a missing working directory is created (owned by root).
        std::fs::create_dir_all(&workdir).map_err(|e| {
            RunError::io(
                format!("create working directory {}", workdir.display()),
                &e,
            )
        })?;
    }
    let pty = if plan.tty {
        let (m, s) = sys::open_pty()?;
        if sys::isatty(0) {
            sys::copy_winsize(0, m.as_raw_fd());
        }
        Some((m, s))
    } else {
        None
    };
    // setgroups is denied in a user namespace mapped without the helper.
    let groups_allowed = std::fs::read_to_string("/proc/self/setgroups")
        .map(|s| s.trim() != "deny")
        .unwrap_or(true);

    match sys::fork("the command")? {
        Fork::Child => {
            sys::reset_signals();
            sys::setsid();
            let res = (|| -> RunResult<()> {
                if let Some((_, s)) = &pty {
                    sys::attach_tty(s)?;
                }
                let groups = groups_allowed.then_some(user.groups.as_slice());
                let steps = plan.exec_steps(user.uid, user.gid, groups, &workdir);
                plan::apply(&steps, &mut LinuxSys { root: "/".into() })
            })();
            if let Err(e) = res {
                eprintln!("unionfuse run: {e}");
                sys::exit_now(EXIT_SETUP);
            }
            let cmd = Path::new(&plan.cmd[0]);
            let Some(prog) = rootfs::find_program(cmd, &path_env) else {
                eprintln!(
                    "unionfuse run: exec {}: not found in PATH {path_env}",
                    cmd.display()
                );
                sys::exit_now(127);
            };
            let err = sys::execve(&prog, &plan.cmd, &env);
            eprintln!("unionfuse run: {err}");
            let enoent = err.0.contains("ENOENT");
            sys::exit_now(if enoent { 127 } else { 126 });
        }
        Fork::Parent(child) => {
            let master = pty.map(|(m, s)| {
                drop(s);
                m
            });
            Ok(supervise(child, &sigfd, master))
        }
    }
}

/// The init loop: reap, forward, relay. Returns the command's exit code.
fn supervise(child: i32, sigfd: &OwnedFd, master: Option<OwnedFd>) -> i32 {
    let mut code: Option<i32> = None;
    let mut stdin_open = master.is_some();
    let mut master_open = master.is_some();
    let mut buf = vec![0u8; 16384];
    let readable = libc::POLLIN | libc::POLLHUP | libc::POLLERR;
    loop {
        let mut fds: Vec<(i32, i16)> = vec![(sigfd.as_raw_fd(), libc::POLLIN)];
        if let Some(m) = &master
            && master_open
        {
            fds.push((m.as_raw_fd(), libc::POLLIN));
        }
        if stdin_open {
            fds.push((0, libc::POLLIN));
        }
        // Once the command is gone, give the pty a moment to drain, then leave.
        let timeout = if code.is_some() { 100 } else { -1 };
        let rev = sys::poll(&fds, timeout);
        if code.is_some() && rev.iter().all(|r| *r == 0) {
            break;
        }
        for (i, &(fd, _)) in fds.iter().enumerate() {
            if rev[i] & readable == 0 {
                continue;
            }
            if fd == sigfd.as_raw_fd() {
                for sig in sys::read_signals(sigfd) {
                    match sig {
                        libc::SIGCHLD => {
                            // Reap everything: orphans re-parented to us included.
                            while let Some((pid, status)) = sys::waitpid(-1, true) {
                                if pid == child {
                                    code = Some(sys::exit_code(status));
                                }
                            }
                        }
                        libc::SIGWINCH if master.is_some() => {
                            if let Some(m) = &master {
                                sys::copy_winsize(0, m.as_raw_fd());
                            }
                        }
                        s => sys::kill(child, s),
                    }
                }
            } else if fd == 0 {
                let n = sys::read_some(0, &mut buf);
                match (&master, n) {
                    (Some(m), n) if n > 0 => {
                        sys::write_all(m.as_raw_fd(), &buf[..n as usize]);
                    }
                    _ => stdin_open = false,
                }
            } else {
                let n = sys::read_some(fd, &mut buf);
                if n > 0 {
                    sys::write_all(1, &buf[..n as usize]);
                } else {
                    // EIO: no slave left open.
                    master_open = false;
                }
            }
        }
        if code.is_some() && !master_open {
            break;
        }
    }
    code.unwrap_or(1)
}

/// For messages: the command line as given.
pub fn describe(cmd: &[OsString]) -> String {
    cmd.iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
