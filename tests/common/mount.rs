//! Layer stacks in temp dirs and mount guards. `UnionMount` runs the unionfuse binary in the
//! foreground; `KernelOverlay` is `mount -t overlay`. Both unmount on Drop, even when the test
//! panics, and never leave a mount or a process behind. A guard borrows its `Stack`, so the temp
//! dirs cannot be deleted while still mounted.
//!
//! `UNIONFUSE_TEST_BACKEND=kernel` makes `UnionMount` mount kernel overlayfs instead: the suite
//! then checks itself against the reference implementation.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::tree::Tree;

pub const MOUNT_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// True when mounts can be made in this mode (see `mode`): as root of the initial namespace;
/// as an ordinary user with /dev/fuse open to users and fusermount3; as root of a user
/// namespace with /dev/fuse open to it. Otherwise: panics under CI=true, or prints why and
/// returns false so the test returns early.
pub fn require_fuse() -> bool {
    use super::mode::{Mode, dev_fuse_usable, mode};
    if !Path::new("/dev/fuse").exists() {
        return skip_or_fail_in_ci("/dev/fuse is missing");
    }
    match mode() {
        Mode::Root if super::sys::euid() != 0 => skip_or_fail_in_ci("not running as root"),
        Mode::Root => true,
        Mode::User if super::rootless::which("fusermount3").is_none() => {
            skip_or_fail_in_ci("fusermount3 is not installed (package fuse3)")
        }
        _ if !dev_fuse_usable() => skip_or_fail_in_ci(&format!(
            "/dev/fuse cannot be opened by uid {} (mode {})",
            super::sys::euid(),
            mode().name()
        )),
        _ => true,
    }
}

/// A test cannot run here for `reason`: under CI=true that is a failure (a CI that silently
/// skips every mounted test is worse than a red one); elsewhere print the reason and return
/// false so the test returns early.
#[track_caller]
pub fn skip_or_fail_in_ci(reason: &str) -> bool {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("test cannot run under CI: {reason}");
    }
    super::mode::note_skip(&format!("skipping: {reason}"));
    false
}

/// True when this kernel has overlayfs and this mode may mount it (for the tests that compare
/// with it): not as an ordinary user outside a user namespace (says so).
pub fn overlay_available() -> bool {
    if !super::mode::runs_in(
        &[super::mode::Mode::Root, super::mode::Mode::Userns],
        "kernel overlay (the reference) cannot be mounted by an ordinary user outside a user namespace",
    ) {
        return false;
    }
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| s.contains("\toverlay\n"))
}

/// True when `UNIONFUSE_TEST_BACKEND=kernel`: the "unionfuse" mounts are kernel overlayfs.
pub fn kernel_backend() -> bool {
    std::env::var("UNIONFUSE_TEST_BACKEND").as_deref() == Ok("kernel")
}

/// The unionfuse binary: `UNIONFUSE_BIN` when set (scripts/modes.sh copies it where the
/// unprivileged user can reach it), else the one cargo built for this test.
pub fn binary() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        std::env::var("UNIONFUSE_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_unionfuse").into())
    })
}

/// Undo mountinfo's octal escapes (`\040` for space etc).
fn unescape_mountinfo(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .and_then(|d| std::str::from_utf8(d).ok());
        if let (b'\\', Some(Ok(v))) = (b[i], octal.map(|d| u8::from_str_radix(d, 8))) {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Filesystem type of the topmost mount at exactly `p`, if `p` is a mount point.
pub fn mount_fstype(p: &Path) -> Option<String> {
    use std::os::unix::ffi::OsStrExt;
    let want = p.canonicalize().ok()?;
    let info = std::fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut found = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            continue;
        };
        if fields.len() > 4 && unescape_mountinfo(fields[4]) == want.as_os_str().as_bytes() {
            found = fields.get(sep + 1).map(|s| s.to_string());
        }
    }
    found
}

pub fn is_mounted(p: &Path) -> bool {
    mount_fstype(p).is_some()
}

/// `umount p`, then `umount -l p` if that fails (`fusermount3 -u`, `-u -z` as an ordinary
/// user). Returns whether `p` is no longer mounted.
pub fn force_unmount(p: &Path) -> bool {
    let user = super::mode::mode() == super::mode::Mode::User;
    let (prog, tries) = match user {
        true => ("fusermount3", [&["-u"][..], &["-u", "-z"][..]]),
        false => ("umount", [&[][..], &["-l"][..]]),
    };
    for args in tries {
        if !is_mounted(p) {
            return true;
        }
        let _ = Command::new(prog)
            .args(args)
            .arg(p)
            .stderr(Stdio::null())
            .status();
    }
    !is_mounted(p)
}

/// Unmounts a path on drop: the guard for a mount made by hand (`mount -t overlay` on a layout
/// that is not a `Stack`), so a failing test does not leave it behind.
pub struct UnmountOnDrop(pub PathBuf);

impl Drop for UnmountOnDrop {
    fn drop(&mut self) {
        if !force_unmount(&self.0) {
            eprintln!("warning: could not unmount {}", self.0.display());
        }
    }
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A layer stack in one temp dir: `lower0` (topmost) .. `lowerN`, optional `upper`, `mnt`, and a
/// fresh work dir for each mount.
pub struct Stack {
    pub base: TempDir,
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub mnt: PathBuf,
}

impl Stack {
    /// `n` empty lowers (index 0 is the topmost) and an empty upper.
    pub fn new(n: usize) -> Stack {
        Stack::build(n, true)
    }

    /// `n` empty lowers and no upper: a read-only union.
    pub fn readonly(n: usize) -> Stack {
        Stack::build(n, false)
    }

    fn build(n: usize, with_upper: bool) -> Stack {
        let base = tempfile::Builder::new()
            .prefix("unionfuse-test-")
            .tempdir()
            .expect("create temp dir for layer stack");
        let mk = |name: &str| {
            let p = base.path().join(name);
            std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
            p
        };
        let lowers = (0..n).map(|i| mk(&format!("lower{i}"))).collect();
        let upper = with_upper.then(|| mk("upper"));
        let mnt = mk("mnt");
        Stack {
            base,
            lowers,
            upper,
            mnt,
        }
    }

    pub fn lower(&self, i: usize) -> &Path {
        &self.lowers[i]
    }

    pub fn upper(&self) -> &Path {
        self.upper.as_deref().expect("this stack has no upper")
    }

    /// A new empty work dir next to the upper (same filesystem).
    pub fn new_workdir(&self) -> PathBuf {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let p = self.base.path().join(format!("work{n}"));
        std::fs::create_dir(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        p
    }

    /// A copy of this stack's layers (cp -a, so whiteouts, xattrs, links and times survive).
    pub fn duplicate(&self) -> Stack {
        let new = Stack::build(0, false);
        let lowers = self
            .lowers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let to = new.base.path().join(format!("lower{i}"));
                super::layers::copy_tree(l, &to);
                to
            })
            .collect();
        let upper = self.upper.as_ref().map(|u| {
            let to = new.base.path().join("upper");
            super::layers::copy_tree(u, &to);
            to
        });
        Stack {
            lowers,
            upper,
            ..new
        }
    }

    /// A copy of this stack with its upper as the topmost lower (cp -a), as a container's
    /// upper becomes an image layer: a fresh empty upper on top, or none (`with_upper`).
    pub fn upper_as_lower(&self, with_upper: bool) -> Stack {
        let new = Stack::build(0, with_upper);
        let layers = std::iter::once(self.upper()).chain(self.lowers.iter().map(|l| l.as_path()));
        let lowers = layers
            .enumerate()
            .map(|(i, l)| {
                let to = new.base.path().join(format!("lower{i}"));
                super::layers::copy_tree(l, &to);
                to
            })
            .collect();
        Stack { lowers, ..new }
    }

    /// Digests of all lowers, to compare after the test with `assert_lowers_unchanged`.
    pub fn lower_digests(&self) -> Vec<Tree> {
        self.lowers.iter().map(|l| Tree::layer_digest(l)).collect()
    }

    #[track_caller]
    pub fn assert_lowers_unchanged(&self, before: &[Tree]) {
        for (i, (l, b)) in self.lowers.iter().zip(before).enumerate() {
            let now = Tree::layer_digest(l);
            if let Some(d) = b.diff(&now, true) {
                panic!("lower{i} ({}) was modified:\n{d}", l.display());
            }
        }
    }

    /// The argv of `unionfuse mount` for this stack (without --foreground).
    pub fn mount_args(&self, work: &Path) -> Vec<OsString> {
        let lowers = self
            .lowers
            .iter()
            .map(|l| l.as_os_str().to_owned())
            .collect::<Vec<_>>()
            .join(std::ffi::OsStr::new(":"));
        let mut args: Vec<OsString> = vec!["mount".into(), lowers];
        if let Some(u) = &self.upper {
            args.push(u.into());
        }
        args.push(self.mnt.clone().into());
        args.push("--workdir".into());
        args.push(work.into());
        // As the kernel overlay the suites compare with: redirect_dir=on, or, with userxattr
        // (the reference in that mode), no redirects.
        args.push("-o".into());
        if super::mode::mode() == super::mode::Mode::Userns {
            args.push("redirect_dir=nofollow".into());
        } else {
            args.push("redirect_dir=on".into());
        }
        // A whole suite can run on another data path, e.g.
        // UNIONFUSE_TEST_OPTS=nopassthrough (read/write through the daemon, writeback cache).
        if let Ok(o) = std::env::var("UNIONFUSE_TEST_OPTS")
            && !o.is_empty()
        {
            args.push("-o".into());
            args.push(o.into());
        }
        args
    }
}

/// unionfuse mounted in the foreground on `stack.mnt`.
pub struct UnionMount<'a> {
    pub stack: &'a Stack,
    child: Option<Child>,
    kernel: Option<KernelOverlay<'a>>,
    pub log: PathBuf,
}

impl<'a> UnionMount<'a> {
    /// Mount the stack; panics (with the daemon's log) if it is not live within 10 s.
    pub fn new(stack: &'a Stack) -> UnionMount<'a> {
        UnionMount::with_args(stack, &[])
    }

    /// Mount with extra arguments (e.g. `["-o", "ro"]`) after the standard ones.
    pub fn with_args(stack: &'a Stack, extra: &[&str]) -> UnionMount<'a> {
        let log = stack.base.path().join(format!(
            "unionfuse-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if kernel_backend() {
            // Only `-o OPTS` has a kernel equivalent; other flags are unionfuse's own.
            let opts = match extra {
                ["-o", o] => *o,
                _ => "",
            };
            let kernel = Some(KernelOverlay::with_opts(stack, opts));
            return UnionMount {
                stack,
                child: None,
                kernel,
                log,
            };
        }
        assert!(
            !is_mounted(&stack.mnt),
            "{} is already a mount point",
            stack.mnt.display()
        );
        let work = stack.new_workdir();
        let logf = File::create(&log).expect("create unionfuse log file");
        let child = Command::new(binary())
            .args(stack.mount_args(&work))
            .arg("--foreground")
            .args(extra)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().expect("dup log file"))
            .stderr(logf)
            .spawn()
            .expect("spawn unionfuse");
        let mut m = UnionMount {
            stack,
            child: Some(child),
            kernel: None,
            log,
        };
        m.wait_mounted();
        m
    }

    fn wait_mounted(&mut self) {
        let start = Instant::now();
        loop {
            if let Some(fstype) = mount_fstype(&self.stack.mnt) {
                assert!(
                    fstype.starts_with("fuse"),
                    "{} is mounted with type {fstype}, expected fuse",
                    self.stack.mnt.display()
                );
                return;
            }
            let child = self.child.as_mut().expect("foreground child");
            if let Some(status) = child.try_wait().expect("try_wait unionfuse") {
                self.child = None;
                panic!(
                    "unionfuse exited with {status} before the mount was live\n--- log ---\n{}",
                    self.log_text()
                );
            }
            if start.elapsed() > MOUNT_TIMEOUT {
                panic!(
                    "unionfuse did not mount {} within {MOUNT_TIMEOUT:?}\n--- log ---\n{}",
                    self.stack.mnt.display(),
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn mnt(&self) -> &Path {
        &self.stack.mnt
    }

    /// `mnt/rel`.
    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.stack.mnt.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Wait for the daemon to exit by itself (after a signal or an external umount).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait unionfuse") {
                self.child = None;
                return Some(st);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmount now and return the daemon's exit status (None for the kernel backend).
    pub fn unmount(mut self) -> Option<ExitStatus> {
        if let Some(k) = self.kernel.take() {
            drop(k);
            return None;
        }
        let ok = force_unmount(&self.stack.mnt);
        assert!(ok, "could not unmount {}", self.stack.mnt.display());
        let st = self.wait_exit(EXIT_TIMEOUT);
        assert!(
            st.is_some(),
            "unionfuse did not exit after umount\n{}",
            self.log_text()
        );
        st
    }
}

/// Mount `stack` with unionfuse, run `f` on the live mount, unmount, then assert that no lower
/// layer changed (digest before vs after: contents, xattrs, whiteouts, mtimes, links).
pub fn mounted(stack: &Stack, f: impl FnOnce(&UnionMount)) {
    let before = stack.lower_digests();
    {
        let m = UnionMount::new(stack);
        f(&m);
    }
    stack.assert_lowers_unchanged(&before);
}

impl Drop for UnionMount<'_> {
    fn drop(&mut self) {
        if self.kernel.is_some() {
            return; // KernelOverlay's own Drop unmounts
        }
        let unmounted = force_unmount(&self.stack.mnt);
        if let Some(mut child) = self.child.take() {
            let start = Instant::now();
            let exited = loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break true,
                    Ok(None) if start.elapsed() > EXIT_TIMEOUT => break false,
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                }
            };
            if !exited {
                eprintln!("unionfuse did not exit after umount; killing it");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if !unmounted {
            // The daemon is gone now, so a lazy unmount cannot hang any more.
            let _ = force_unmount(&self.stack.mnt);
            eprintln!(
                "warning: {} needed a forced unmount",
                self.stack.mnt.display()
            );
        }
    }
}

/// Kernel overlayfs on a stack (fixed options, so the reference does not depend on module
/// defaults: redirect_dir=on, as the suites mount unionfuse, no index, no metacopy).
pub struct KernelOverlay<'a> {
    pub stack: &'a Stack,
}

impl<'a> KernelOverlay<'a> {
    pub fn new(stack: &'a Stack) -> KernelOverlay<'a> {
        KernelOverlay::with_opts(stack, "")
    }

    /// Mount with extra comma-separated mount options (e.g. "ro").
    pub fn with_opts(stack: &'a Stack, extra: &str) -> KernelOverlay<'a> {
        assert!(
            !is_mounted(&stack.mnt),
            "{} is already a mount point",
            stack.mnt.display()
        );
        let lowers = stack
            .lowers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let mut opts = format!("lowerdir={lowers}");
        if let Some(u) = &stack.upper {
            let work = stack.new_workdir();
            opts += &format!(",upperdir={},workdir={}", u.display(), work.display());
            // userxattr implies redirect_dir=nofollow and refuses "on" (renaming a merged
            // directory is EXDEV there; unionfuse is mounted with nofollow in that mode).
            if super::mode::mode() != super::mode::Mode::Userns {
                opts += ",redirect_dir=on";
            }
            opts += ",index=off,metacopy=off";
        }
        if !extra.is_empty() {
            opts += ",";
            opts += extra;
        }
        // Root of a user namespace: trusted.* is out of reach, as for rootless podman.
        if super::mode::mode() == super::mode::Mode::Userns {
            opts += ",userxattr";
        }
        let out = Command::new("mount")
            .args(["-t", "overlay", "overlay", "-o", &opts])
            .arg(&stack.mnt)
            .output()
            .expect("spawn mount -t overlay");
        assert!(
            out.status.success(),
            "mount -t overlay -o {opts} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        KernelOverlay { stack }
    }

    pub fn mnt(&self) -> &Path {
        &self.stack.mnt
    }

    pub fn path(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.stack.mnt.join(rel)
    }
}

impl Drop for KernelOverlay<'_> {
    fn drop(&mut self) {
        if !force_unmount(&self.stack.mnt) {
            eprintln!(
                "warning: could not unmount overlay at {}",
                self.stack.mnt.display()
            );
        }
    }
}
