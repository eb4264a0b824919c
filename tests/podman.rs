//! podman with unionfuse as containers-storage's `overlay.mount_program`, the way fuse-overlayfs
//! is used: import a busybox rootfs tarball (no registry), run a container that writes, chmods
//! and deletes lower files, `podman diff`, `podman commit`, run the committed image. The same
//! steps with fuse-overlayfs as the mount program give the reference results.
//!
//! Needs root, /dev/fuse, podman, runc and a static busybox (scripts/test.sh installs `podman
//! runc busybox-static`). Under CI=true anything missing fails the test; elsewhere it skips
//! with the reason. Every test uses a private `--root`/`--runroot`/`--tmpdir` in a temp dir and
//! on drop removes its containers and unmounts everything below that dir, even after a failure.
//!
//! podman on these machines runs with `--runtime runc --cgroup-manager cgroupfs --events-backend
//! file` (no systemd or journald to talk to) and explicit `--ulimit nofile=1024:1024 --ulimit
//! nproc=1024:1024`: podman's default RLIMIT_NOFILE (1048576) is above the sandbox's hard limit
//! and runc then fails with "error setting rlimit type 7: operation not permitted".

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BUSYBOX: &str = "/bin/busybox";
const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

/// What the container does to the image's files: one of each kind of change.
const CHANGES: &str = "echo hello > /newfile && rm /etc/lowerfile && chmod 600 /etc/chmodme \
                       && rm -r /lowerdir && mkdir /newdir && echo x > /newdir/f";

/// Checks run in the committed image: prints one line per fact.
const CHECKS: &str = "cat /newfile; cat /newdir/f; stat -c 'chmodme %a' /etc/chmodme; \
                      for p in /etc/lowerfile /lowerdir /lowerdir/f; do \
                      if [ -e $p ]; then echo \"present $p\"; else echo \"absent $p\"; fi; done";

/// The whole scenario's results, for comparison between mount programs.
#[derive(Debug, PartialEq)]
struct Outcome {
    /// `podman diff` of the container, sorted.
    diff: Vec<String>,
    /// Output of CHECKS in the committed image.
    committed: Vec<String>,
}

/// True when podman tests can run; see the module header for the CI rule.
fn require_podman() -> bool {
    if !common::require_fuse() {
        return false;
    }
    let missing: Vec<&str> = [("podman", "podman"), ("runc", "runc")]
        .iter()
        .filter(|(bin, _)| which(bin).is_none())
        .map(|(_, pkg)| *pkg)
        .chain((!Path::new(BUSYBOX).exists()).then_some("busybox-static"))
        .collect();
    if missing.is_empty() {
        return true;
    }
    let reason = format!("missing packages: {}", missing.join(" "));
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("podman tests cannot run under CI: {reason} (scripts/test.sh installs them)");
    }
    eprintln!("skipping podman test: {reason}");
    false
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// A private podman store whose overlay driver uses `mount_program`.
struct Podman {
    dir: tempfile::TempDir,
    mount_program: PathBuf,
}

impl Podman {
    fn new(mount_program: &Path) -> Podman {
        let dir = tempfile::Builder::new()
            .prefix("unionfuse-podman-")
            .tempdir()
            .expect("temp dir for the podman store");
        Podman {
            dir,
            mount_program: mount_program.to_path_buf(),
        }
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("runroot"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args(["--storage-driver", "overlay", "--storage-opt"])
            .arg(format!(
                "overlay.mount_program={}",
                self.mount_program.display()
            ))
            .args([
                "--runtime",
                "runc",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .stdin(Stdio::null());
        c
    }

    fn output(&self, args: &[&str]) -> Output {
        let mut c = self.cmd();
        c.args(args);
        c.output().unwrap_or_else(|e| panic!("spawn {c:?}: {e}"))
    }

    /// Run podman, assert success, return stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman {} ({}) failed: {}\n{}",
            args.join(" "),
            self.mount_program.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run` with the limits these machines need.
    #[track_caller]
    fn run(&self, extra: &[&str], image: &str, script: &str) -> String {
        let mut args = vec![
            "run",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, "sh", "-c", script]);
        self.ok(&args)
    }

    /// A busybox rootfs tarball with the files the scenario changes, imported as `bb`.
    fn import_busybox(&self) {
        let rootfs = self.dir.path().join("rootfs");
        for d in ["bin", "etc", "tmp", "root", "lowerdir"] {
            std::fs::create_dir_all(rootfs.join(d)).expect("mkdir rootfs");
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).expect("copy busybox");
        let list = Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .expect("busybox --list");
        for applet in String::from_utf8_lossy(&list.stdout).lines() {
            if applet != "busybox" {
                // Relative links, so they resolve inside the container.
                std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet))
                    .expect("applet link");
            }
        }
        for (p, text) in [
            ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", "root:x:0:\n"),
            ("etc/lowerfile", "lower\n"),
            ("etc/chmodme", "mode\n"),
            ("lowerdir/f", "in a lower dir\n"),
        ] {
            std::fs::write(rootfs.join(p), text).expect("write rootfs file");
        }
        let tar = self.dir.path().join("rootfs.tar");
        let st = Command::new("tar")
            .arg("-C")
            .arg(&rootfs)
            .arg("-cf")
            .arg(&tar)
            .arg(".")
            .status()
            .expect("spawn tar");
        assert!(st.success(), "tar of the rootfs failed");
        self.ok(&[
            "import",
            "-q",
            tar.to_str().expect("utf-8 path"),
            "localhost/bb",
        ]);
    }

    /// The scenario: import, run CHANGES, diff, commit, run CHECKS in the committed image.
    fn scenario(&self) -> Outcome {
        self.import_busybox();
        self.run(&["--name", "c1"], "localhost/bb", CHANGES);
        let mut diff: Vec<String> = self.ok(&["diff", "c1"]).lines().map(String::from).collect();
        diff.sort();
        self.ok(&["commit", "-q", "c1", "localhost/bb2"]);
        let committed = self
            .run(&["--rm"], "localhost/bb2", CHECKS)
            .lines()
            .map(String::from)
            .collect();
        Outcome { diff, committed }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first (their storage mounts go with them), then anything left below the
        // store: podman's own shm mounts, a mount program's mount that podman lost track of.
        let _ = self.output(&["rm", "-af", "-t", "0"]);
        let _ = self.output(&["rmi", "-af"]);
        let base = self.dir.path().to_path_buf();
        for m in mounts_under(&base).into_iter().rev() {
            if !common::mount::force_unmount(&m) {
                eprintln!("warning: could not unmount {}", m.display());
            }
        }
        // Mount program daemons exit once unmounted; kill any that do not.
        let start = Instant::now();
        loop {
            let pids = daemons_under(&base);
            if pids.is_empty() {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("mount daemons {pids:?} outlived their mounts; killing them");
                for pid in pids {
                    // SAFETY: kill has no memory preconditions; the pid was just read from /proc.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Mount points at or below `dir`, in mount order.
fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_octal(m)))
        .filter(|m| m.starts_with(dir))
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        match rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            Some(b) => {
                out.push(b as char);
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out + rest
}

/// Live processes with an argument below `dir` (mount program daemons of this store).
fn daemons_under(dir: &Path) -> Vec<i32> {
    let want = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        let exe = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
        let is_podman = exe.ends_with(b"podman") || exe.ends_with(b"conmon");
        if !zombie && !is_podman && String::from_utf8_lossy(&cmdline).contains(&want) {
            out.push(pid);
        }
    }
    out
}

fn unionfuse() -> PathBuf {
    PathBuf::from(common::mount::binary())
}

#[track_caller]
fn assert_has(lines: &[String], want: &str) {
    assert!(
        lines.iter().any(|l| l == want),
        "missing {want:?} in {lines:#?}"
    );
}

#[test]
fn podman_run_diff_commit_with_unionfuse() {
    if !require_podman() {
        return;
    }
    let p = Podman::new(&unionfuse());
    let out = p.scenario();
    for want in [
        "A /newfile",
        "D /etc/lowerfile",
        "C /etc/chmodme",
        "D /lowerdir",
        "A /newdir",
        "A /newdir/f",
    ] {
        assert_has(&out.diff, want);
    }
    for want in ["hello", "x", "chmodme 600"] {
        assert_has(&out.committed, want);
    }
    // The mount program really was unionfuse: podman reports its version.
    let info = p.ok(&["info", "--format", "{{json .Store.GraphOptions}}"]);
    assert!(info.contains("unionfuse"), "podman info: {info}");
}

/// With a mount program, containers-storage stores image layers with AUFS-style whiteouts
/// (`.wh.NAME` files, `.wh..wh..opq`), as fuse-overlayfs reads them; deletions in a committed
/// layer are only seen if the mount program understands that format.
#[test]
fn podman_committed_image_keeps_deletions() {
    if !require_podman() {
        return;
    }
    let out = Podman::new(&unionfuse()).scenario();
    for want in [
        "absent /etc/lowerfile",
        "absent /lowerdir",
        "absent /lowerdir/f",
    ] {
        assert_has(&out.committed, want);
    }
}

/// The same scenario through fuse-overlayfs and through unionfuse: same `podman diff` (and,
/// once lower `.wh.` whiteouts are read, the same committed image).
#[test]
fn podman_results_match_fuse_overlayfs() {
    if !require_podman() {
        return;
    }
    if !Path::new(FUSE_OVERLAYFS).exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("fuse-overlayfs is not installed (scripts/test.sh installs it)");
        }
        eprintln!("skipping: fuse-overlayfs is not installed");
        return;
    }
    let reference = Podman::new(Path::new(FUSE_OVERLAYFS)).scenario();
    for want in ["absent /etc/lowerfile", "absent /lowerdir", "chmodme 600"] {
        assert_has(&reference.committed, want);
    }
    let ours = Podman::new(&unionfuse()).scenario();
    assert_eq!(
        ours.diff, reference.diff,
        "podman diff differs from fuse-overlayfs's"
    );
}
