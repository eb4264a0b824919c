//! A unionfuse daemon guard for the crash and resource tests: a fixed work dir, so a test can
//! SIGKILL the daemon and mount again on the same layers; Drop always unmounts and reaps. Unlike
//! `mount::UnionMount` it does not borrow a `Stack`, and it can name the mount namespaces still
//! holding a copy of its mount.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::mount::{MOUNT_TIMEOUT, binary, force_unmount, mount_fstype};
use super::process::thread_states;

/// A unionfuse daemon in the foreground with an explicit work dir, so a test can SIGKILL it and
/// mount again on the same layers and work dir. Drop always unmounts and reaps.
pub struct Daemon {
    pub mnt: PathBuf,
    child: Option<Child>,
    pub log: PathBuf,
    /// st_dev of the live mount (for finding its copies and its FUSE connection).
    dev: Option<u64>,
}

impl Daemon {
    /// `unionfuse mount LOWERS [UPPER] MNT --workdir WORK --foreground EXTRA...`; panics with
    /// the log if the mount is not live within the mount timeout.
    pub fn start(
        lowers: &[&Path],
        upper: Option<&Path>,
        work: Option<&Path>,
        mnt: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Daemon {
        let mut d = Daemon::spawn(lowers, upper, work, mnt, extra, log);
        d.wait_mounted();
        d
    }

    /// Spawn without waiting for the mount.
    pub fn spawn(
        lowers: &[&Path],
        upper: Option<&Path>,
        work: Option<&Path>,
        mnt: &Path,
        extra: &[&str],
        log: &Path,
    ) -> Daemon {
        let joined = lowers
            .iter()
            .map(|l| l.as_os_str().to_owned())
            .collect::<Vec<_>>()
            .join(std::ffi::OsStr::new(":"));
        let mut args: Vec<OsString> = vec!["mount".into(), joined];
        if let Some(u) = upper {
            args.push(u.into());
        }
        args.push(mnt.into());
        if let Some(w) = work {
            args.push("--workdir".into());
            args.push(w.into());
        }
        let logf = File::create(log).expect("create daemon log");
        let child = Command::new(binary())
            .args(&args)
            .arg("--foreground")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log"))
            .stderr(logf)
            .spawn()
            .expect("spawn unionfuse");
        Daemon {
            mnt: mnt.to_path_buf(),
            child: Some(child),
            log: log.to_path_buf(),
            dev: None,
        }
    }

    fn wait_mounted(&mut self) {
        let start = Instant::now();
        loop {
            if mount_fstype(&self.mnt).is_some_and(|t| t.starts_with("fuse")) {
                self.dev = std::fs::metadata(&self.mnt).ok().map(|m| m.dev());
                return;
            }
            if let Some(st) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                panic!(
                    "unionfuse exited with {st} before mounting\n{}",
                    self.log_text()
                );
            }
            assert!(
                start.elapsed() < MOUNT_TIMEOUT,
                "unionfuse did not mount {} in time\n{}",
                self.mnt.display(),
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Wait for the daemon to exit by itself; its status, or None on timeout.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let start = Instant::now();
        loop {
            let c = self.child.as_mut()?;
            if let Ok(Some(st)) = c.try_wait() {
                self.child = None;
                return Some(st);
            }
            if start.elapsed() > limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL the daemon, reap it, and lazily unmount the dead mount (as an admin would).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        assert!(
            force_unmount(&self.mnt),
            "{} still mounted after the daemon died",
            self.mnt.display()
        );
    }

    /// Unmount cleanly and require the daemon to exit 0 within 10 s. A mount namespace made
    /// while the mount was live (a container or rootless podman's pause process, from tests
    /// running at the same time) holds a copy of the mount, so the kernel keeps the FUSE
    /// connection and the daemon rightly keeps serving it after our umount: that case is named
    /// and the connection aborted. Otherwise a daemon that does not exit fails the test with
    /// where its threads wait.
    pub fn unmount(mut self) {
        assert!(
            force_unmount(&self.mnt),
            "cannot unmount {}",
            self.mnt.display()
        );
        let pid = self.pid();
        let mut st = self.wait_exit(Duration::from_secs(10));
        let mut threads = String::new();
        if st.is_none() {
            threads = thread_states(pid);
            let holders = self.dev.map(mount_holders).unwrap_or_default();
            if let (Some(dev), false) = (self.dev, holders.is_empty()) {
                eprintln!(
                    "{}: still mounted in other mount namespaces ({}); aborting the connection",
                    self.mnt.display(),
                    holders.join(", ")
                );
                abort_fuse_connection(dev);
                st = self.wait_exit(Duration::from_secs(10));
            }
        }
        assert!(
            st.is_some_and(|s| s.success()),
            "daemon exit after unmount: {st:?}\n{threads}\n{}",
            self.log_text()
        );
    }
}

/// Processes (as "pid comm") whose mount namespace still has a mount of the filesystem `dev`
/// (one per namespace).
pub fn mount_holders(dev: u64) -> Vec<String> {
    let want = format!(" {}:{} ", libc::major(dev), libc::minor(dev));
    let own = std::fs::read_link("/proc/self/ns/mnt").ok();
    let mut seen: std::collections::HashSet<_> = own.into_iter().collect();
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !p
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let dir = p.path();
        let info = std::fs::read_to_string(dir.join("mountinfo")).unwrap_or_default();
        let Ok(ns) = std::fs::read_link(dir.join("ns/mnt")) else {
            continue;
        };
        if info.lines().any(|l| l.contains(&want)) && seen.insert(ns) {
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            out.push(format!(
                "{} {}",
                p.file_name().to_string_lossy(),
                comm.trim()
            ));
        }
    }
    out
}

/// End the FUSE connection of the filesystem `dev` (/sys/fs/fuse/connections/N/abort): every
/// mount of it fails with ENOTCONN from then on and the daemon's session ends. Mounts fusectl
/// for the purpose if it is not mounted (and unmounts it again: the leak check counts it).
pub fn abort_fuse_connection(dev: u64) {
    let ctl = Path::new("/sys/fs/fuse/connections");
    let mounted_here = mount_fstype(ctl).is_none()
        && Command::new("mount")
            .args(["-t", "fusectl", "fusectl"])
            .arg(ctl)
            .status()
            .is_ok_and(|s| s.success());
    // The directory is named after the kernel's dev_t (major << 20 | minor).
    let n = (u64::from(libc::major(dev)) << 20) | u64::from(libc::minor(dev));
    if let Err(e) = std::fs::write(ctl.join(format!("{n}/abort")), "1") {
        eprintln!("cannot abort FUSE connection {n}: {e}");
    }
    if mounted_here {
        let _ = Command::new("umount").arg(ctl).status();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let unmounted = force_unmount(&self.mnt);
        if let Some(mut c) = self.child.take() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if !unmounted {
            let _ = force_unmount(&self.mnt);
        }
    }
}
