//! Rootless helpers shared by the mounted tests that run as an unprivileged user (rootless
//! podman, a mount program in a user namespace): the user (uid 4242) with subordinate id
//! ranges, /dev/fuse opened to it for the test's duration (restored on drop, under a lock
//! shared by every test process on the machine), and small process helpers.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The unprivileged user rootless tests run as.
pub const ROOTLESS_UID: u32 = 4242;
pub const ROOTLESS_NAME: &str = "podtest";

/// The first `bin` on PATH.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// What a rootless test changed on the machine and puts back on drop: /dev/fuse's mode. Holds
/// a lock so that two runs of the test never restore the mode under each other.
pub struct RootlessSetup {
    _lock: std::fs::File,
    fuse_mode: Option<u32>,
}

impl Drop for RootlessSetup {
    fn drop(&mut self) {
        if let Some(mode) = self.fuse_mode {
            use std::os::unix::fs::PermissionsExt;
            if let Err(e) =
                std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode))
            {
                eprintln!("warning: could not restore /dev/fuse to mode {mode:o}: {e}");
            }
        }
    }
}

/// Prepares a rootless test: the user, its subordinate ids, /dev/fuse open to it. None (after
/// printing why) when this machine cannot run it; under CI=true that is a failure instead.
/// Hold the result for the test's duration.
pub fn require_rootless() -> Option<RootlessSetup> {
    match prepare_rootless() {
        Ok(setup) => Some(setup),
        Err(reason) => {
            super::mount::skip_or_fail_in_ci(&format!("rootless: {reason}"));
            None
        }
    }
}

fn prepare_rootless() -> Result<RootlessSetup, String> {
    use std::os::unix::fs::PermissionsExt;
    let missing: Vec<&str> = ["newuidmap", "newgidmap", "setpriv"]
        .into_iter()
        .filter(|b| which(b).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing {} (packages uidmap, util-linux)",
            missing.join(" ")
        ));
    }
    let lock = std::fs::File::create("/tmp/unionfuse-podman-rootless.lock")
        .map_err(|e| format!("lock file: {e}"))?;
    // SAFETY: flock on an fd we own; no memory involved.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        return Err(format!("flock: {}", std::io::Error::last_os_error()));
    }
    let name = ensure_user()?;
    for file in ["/etc/subuid", "/etc/subgid"] {
        ensure_subids(file, &name)?;
    }
    // Rootless mounts need unprivileged user namespaces: try one as the user.
    let userns = Command::new("setpriv")
        .arg(format!("--reuid={ROOTLESS_UID}"))
        .arg(format!("--regid={ROOTLESS_UID}"))
        .args([
            "--init-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "true",
        ])
        .current_dir("/")
        .output()
        .map_err(|e| format!("spawn setpriv: {e}"))?;
    if !userns.status.success() {
        return Err(format!(
            "unprivileged user namespaces are not available: unshare --user as uid \
             {ROOTLESS_UID} failed: {}",
            String::from_utf8_lossy(&userns.stderr).trim()
        ));
    }
    // The mount program opens /dev/fuse as the user (root only in its user namespace).
    open_dev_fuse(lock)
}

/// /dev/fuse readable and writable by every user (as udev sets it on distributions; this
/// machine may have 0600) until the result is dropped: a FUSE daemon run by an ordinary user
/// opens it itself. None (after printing why, or failing under CI=true) when it can't be.
pub fn require_dev_fuse_for_users() -> Option<RootlessSetup> {
    let lock = std::fs::File::create("/tmp/unionfuse-podman-rootless.lock")
        .map_err(|e| format!("lock file: {e}"));
    // SAFETY: flock on an fd we own; no memory involved.
    let locked = lock.and_then(|l| {
        match unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&l), libc::LOCK_EX) } {
            0 => Ok(l),
            _ => Err(format!("flock: {}", std::io::Error::last_os_error())),
        }
    });
    match locked.and_then(open_dev_fuse) {
        Ok(setup) => Some(setup),
        Err(reason) => {
            super::mount::skip_or_fail_in_ci(&reason);
            None
        }
    }
}

fn open_dev_fuse(lock: std::fs::File) -> Result<RootlessSetup, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut setup = RootlessSetup {
        _lock: lock,
        fuse_mode: None,
    };
    let mode = std::fs::metadata("/dev/fuse")
        .map_err(|e| format!("/dev/fuse: {e}"))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o006 != 0o006 {
        std::fs::set_permissions("/dev/fuse", std::fs::Permissions::from_mode(mode | 0o666))
            .map_err(|e| format!("chmod /dev/fuse: {e}"))?;
        setup.fuse_mode = Some(mode);
    }
    Ok(setup)
}

/// The name of the user with ROOTLESS_UID, created (without a home) if there is none.
fn ensure_user() -> Result<String, String> {
    let by_uid = |passwd: &str| {
        passwd.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.get(2) == Some(&ROOTLESS_UID.to_string().as_str())).then(|| f[0].to_string())
        })
    };
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    if let Some(name) = by_uid(&passwd) {
        return Ok(name);
    }
    let out = Command::new("useradd")
        .args(["-M", "-s", "/usr/sbin/nologin", "-u"])
        .arg(ROOTLESS_UID.to_string())
        .arg(ROOTLESS_NAME)
        .output()
        .map_err(|e| format!("spawn useradd: {e}"))?;
    // A parallel run may have created it meanwhile: look again rather than trust the status.
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(|e| format!("/etc/passwd: {e}"))?;
    by_uid(&passwd).ok_or_else(|| {
        format!(
            "useradd {ROOTLESS_NAME} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )
    })
}

/// Gives `name` a range of 65536 subordinate ids in `file` unless it has one, after the
/// highest range in use.
fn ensure_subids(file: &str, name: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut end = 100_000u64;
    for l in text.lines() {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() != 3 {
            continue;
        }
        if f[0] == name || f[0] == ROOTLESS_UID.to_string() {
            if f[2].parse::<u64>().unwrap_or(0) >= 65536 {
                return Ok(());
            }
            continue;
        }
        if let (Ok(start), Ok(count)) = (f[1].parse::<u64>(), f[2].parse::<u64>()) {
            end = end.max(start + count);
        }
    }
    let mut text = text;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&format!("{name}:{end}:65536\n"));
    std::fs::write(file, text).map_err(|e| format!("write {file}: {e}"))
}

/// chown -R to `uid`:`uid`, not following symlinks.
pub fn chown_tree(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        for e in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&e.path(), uid);
        }
    }
}
