//! Process helpers for the mounted tests: a watchdog that turns a hang into a failure, /proc
//! probes of a daemon (fd count, RSS, where its threads wait), dropping the kernel's caches, and
//! running a shell command as nobody.

use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Run `f` on a thread and fail the test if it does not finish within `limit` (a hang is a
/// failure, not a stuck CI job). A timed-out thread is left behind; the mount guards' Drop
/// unmounts and kills the daemon, which makes its blocked syscalls return.
#[track_caller]
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => {
            let _ = h.join();
            v
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no answer within {limit:?} (hang)"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match h.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("sender dropped without sending"),
        },
    }
}

/// Number of open fds of a process.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// VmRSS of a process in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `echo 2 > /proc/sys/vm/drop_caches`: the kernel forgets dentries and inodes, so the daemon
/// gets FORGETs for every node it no longer needs.
pub fn drop_caches() {
    // SAFETY: sync has no preconditions.
    unsafe { libc::sync() };
    std::fs::write("/proc/sys/vm/drop_caches", "2").expect("write /proc/sys/vm/drop_caches");
}

/// Each thread of `pid`: name, state, kernel wait channel and kernel stack; plus the FUSE
/// connections still alive (requests waiting). For a daemon that does not exit.
pub fn thread_states(pid: u32) -> String {
    let read = |p: String| std::fs::read_to_string(p).unwrap_or_default();
    let mut out = format!("threads of {pid}:\n");
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten();
    for t in tasks.flatten() {
        let dir = t.path().display().to_string();
        let stat = read(format!("{dir}/stat"));
        // The state is the first field after the parenthesised name.
        let state = stat
            .rsplit(") ")
            .next()
            .unwrap_or("?")
            .chars()
            .next()
            .unwrap_or('?');
        out += &format!(
            "  {} {} wchan={}\n{}",
            read(format!("{dir}/comm")).trim(),
            state,
            read(format!("{dir}/wchan")),
            read(format!("{dir}/stack"))
        );
    }
    for c in std::fs::read_dir("/sys/fs/fuse/connections")
        .into_iter()
        .flatten()
        .flatten()
    {
        let waiting = read(format!("{}/waiting", c.path().display()));
        out += &format!("fuse connection {:?}: waiting {}", c.file_name(), waiting);
    }
    out
}

/// `sh -c script` as uid/gid 65534 with no supplementary groups.
pub fn as_nobody(script: &str) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("spawn setpriv")
}
