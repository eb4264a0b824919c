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

use common::rootless::{ROOTLESS_UID, chown_tree, require_rootless, which};

const BUSYBOX: &str = "/bin/busybox";
const FUSE_OVERLAYFS: &str = "/usr/bin/fuse-overlayfs";

/// What the container does to the image's files: one of each kind of change.
const CHANGES: &str = "echo hello > /newfile && rm /etc/lowerfile && chmod 600 /etc/chmodme \
                       && rm -r /lowerdir && mkdir /newdir && echo x > /newdir/f";

/// Checks run in the committed image: prints one line per fact.
const CHECKS: &str = "cat /newfile; cat /newdir/f; stat -c 'chmodme %a' /etc/chmodme; \
                      for p in /etc/lowerfile /lowerdir /lowerdir/f; do \
                      if [ -e $p ]; then echo \"present $p\"; else echo \"absent $p\"; fi; done";

/// A build that installs (creates) files, deletes a file and a directory of the base image and
/// chmods a base file, one RUN step each, so each becomes its own layer.
const CONTAINERFILE: &str = "FROM localhost/bb\n\
RUN mkdir -p /opt/tool/bin && echo installed > /opt/tool/bin/tool && chmod 755 /opt/tool/bin/tool \
&& echo 'tool=1' > /etc/tool.conf\n\
RUN rm /etc/lowerfile && rm -r /lowerdir\n\
RUN chmod 640 /etc/chmodme\n";

/// Checks run in the built image: prints one line per fact.
const BUILD_CHECKS: &str = "cat /opt/tool/bin/tool /etc/tool.conf; \
                            stat -c '%n %a' /opt/tool/bin/tool /etc/chmodme; \
                            for p in /etc/lowerfile /lowerdir /lowerdir/f /etc/passwd; do \
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

/// A private podman store whose overlay driver uses `mount_program`; run as root, or as
/// `rootless` (a uid) through setpriv with HOME and XDG dirs inside the store.
struct Podman {
    dir: tempfile::TempDir,
    mount_program: PathBuf,
    rootless: Option<u32>,
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
            rootless: None,
        }
    }

    /// A store owned by `uid`, whose podman commands run as that user. The mount program is
    /// copied into the store (the build's target dir may not be readable by the user).
    fn rootless(mount_program: &Path, uid: u32) -> Podman {
        let mut p = Podman::new(mount_program);
        let d = p.dir.path().to_path_buf();
        let name = mount_program.file_name().expect("mount program file name");
        let prog = d.join("bin").join(name);
        std::fs::create_dir(d.join("bin")).expect("mkdir bin");
        std::fs::copy(mount_program, &prog).expect("copy the mount program");
        for sub in ["run", "home"] {
            std::fs::create_dir(d.join(sub)).expect("mkdir in the store");
        }
        chown_tree(&d, uid);
        p.mount_program = prog;
        p.rootless = Some(uid);
        p
    }

    fn cmd(&self) -> Command {
        let d = self.dir.path();
        let mut c = match self.rootless {
            None => Command::new("podman"),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .args(["--init-groups", "podman"])
                    .env_clear()
                    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
                    .env("HOME", d.join("home"))
                    .env("XDG_RUNTIME_DIR", d.join("run"))
                    .env("XDG_CONFIG_HOME", d.join("home/.config"))
                    .env("XDG_DATA_HOME", d.join("home/.local/share"))
                    .current_dir(d);
                c
            }
        };
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
        if self.rootless.is_some() {
            // Rootless networking needs slirp4netns; these containers need no network.
            args.extend_from_slice(&["--network", "none"]);
        }
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
        if let Some(uid) = self.rootless {
            chown_tree(&tar, uid);
        }
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

impl Podman {
    /// `podman build` of CONTAINERFILE on the imported busybox, then BUILD_CHECKS in the
    /// built image. `isolation` is podman's `--isolation` (`oci` runs RUN steps with runc).
    fn build(&self, isolation: &str) -> Vec<String> {
        let ctx = self.dir.path().join(format!("context-{isolation}"));
        std::fs::create_dir(&ctx).expect("mkdir build context");
        std::fs::write(ctx.join("Containerfile"), CONTAINERFILE).expect("write Containerfile");
        if let Some(uid) = self.rootless {
            chown_tree(&ctx, uid);
        }
        let tag = format!("localhost/built-{isolation}");
        let mut args = vec![
            "build",
            "-q",
            "--pull=never",
            "--no-cache",
            "--isolation",
            isolation,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        if self.rootless.is_some() {
            args.extend_from_slice(&["--network", "none"]);
        }
        args.extend_from_slice(&["-t", &tag, ctx.to_str().expect("utf-8 path")]);
        self.ok(&args);
        self.run(&["--rm"], &tag, BUILD_CHECKS)
            .lines()
            .map(String::from)
            .collect()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Containers first (their storage mounts go with them), then anything left below the
        // store: podman's own shm mounts, a mount program's mount that podman lost track of.
        let _ = self.output(&["rm", "-af", "-t", "0"]);
        let _ = self.output(&["rmi", "-af"]);
        let base = self.dir.path().to_path_buf();
        if let Some(uid) = self.rootless {
            // Rootless podman leaves a pause process holding its user and mount namespaces
            // (the containers' mounts live there, invisible from here); it ignores SIGTERM.
            let pid = std::fs::read_to_string(base.join("tmp/pause.pid")).unwrap_or_default();
            if let Ok(pid) = pid.trim().parse::<i32>()
                && proc_uid(pid) == Some(uid)
            {
                // SAFETY: kill has no memory preconditions; the pid is the store's pause
                // process, owned by the test user.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            // Its death ends the namespaces; the user's conmon and mount program processes
            // of this store then exit. Wait for them, so nothing outlives the test.
            let start = Instant::now();
            loop {
                let left = user_procs_under(&base, uid);
                if left.is_empty() {
                    break;
                }
                if start.elapsed() > Duration::from_secs(10) {
                    eprintln!("rootless processes {left:?} outlived their pause process; killing");
                    for pid in left {
                        // SAFETY: as above; a process of the test user running from the store.
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
fn podman_run_diff_and_commit_work_with_unionfuse() {
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

/// `podman build` rootful with unionfuse: the built image has the installed files, not the
/// deleted ones, and the new mode; with RUN steps run by runc (`oci`) and in a chroot.
#[test]
fn podman_build_works_with_unionfuse() {
    if !require_podman() {
        return;
    }
    let p = Podman::new(&unionfuse());
    p.import_busybox();
    for isolation in ["oci", "chroot"] {
        let out = p.build(isolation);
        for want in [
            "installed",
            "tool=1",
            "/opt/tool/bin/tool 755",
            "/etc/chmodme 640",
            "absent /etc/lowerfile",
            "absent /lowerdir",
            "absent /lowerdir/f",
            "present /etc/passwd",
        ] {
            assert_has(&out, want);
        }
    }
}

/// The same build through fuse-overlayfs gives the same image contents.
#[test]
fn podman_build_matches_fuse_overlayfs() {
    if !require_podman() || !require_fuse_overlayfs() {
        return;
    }
    let reference = Podman::new(Path::new(FUSE_OVERLAYFS));
    reference.import_busybox();
    let reference = reference.build("oci");
    assert_has(&reference, "absent /etc/lowerfile");
    let ours = Podman::new(&unionfuse());
    ours.import_busybox();
    assert_eq!(
        ours.build("oci"),
        reference,
        "built image differs from fuse-overlayfs's"
    );
}

fn require_fuse_overlayfs() -> bool {
    if Path::new(FUSE_OVERLAYFS).exists() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("fuse-overlayfs is not installed (scripts/test.sh installs it)");
    }
    eprintln!("skipping: fuse-overlayfs is not installed");
    false
}

/// Rootless podman with unionfuse: the scenario as an unprivileged user (import, run writing,
/// chmodding and deleting lower files, diff, commit, run the committed image), a chown to an
/// id of the user's subordinate range, and a build. Sets up the user (uid 4242 with a subuid
/// and subgid range; created if missing, left in place) and makes /dev/fuse usable by it for
/// the test's duration.
#[test]
fn podman_rootless_works_with_unionfuse() {
    if !require_podman() {
        return;
    }
    let Some(_setup) = require_rootless() else {
        return;
    };
    let (p, out) = retry_once(|| {
        let p = Podman::rootless(&unionfuse(), ROOTLESS_UID);
        let out = p.scenario();
        (p, out)
    });
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
    for want in [
        "hello",
        "x",
        "chmodme 600",
        "absent /etc/lowerfile",
        "absent /lowerdir",
        "absent /lowerdir/f",
    ] {
        assert_has(&out.committed, want);
    }
    // The container's root really is a unionfuse mount, and ownership inside is the
    // container's: root, and an id of the subordinate range after chown.
    let inside = p.run(
        &["--name", "c2"],
        "localhost/bb",
        "grep ' / ' /proc/mounts | cut -d' ' -f1; echo o > /owned; chown 1234:2345 /owned; \
         stat -c '%u:%g %n' /etc/passwd /owned",
    );
    let inside: Vec<String> = inside.lines().map(String::from).collect();
    assert_has(&inside, "unionfuse");
    assert_has(&inside, "0:0 /etc/passwd");
    assert_has(&inside, "1234:2345 /owned");
    p.ok(&["commit", "-q", "c2", "localhost/bb3"]);
    let committed = p.run(&["--rm"], "localhost/bb3", "stat -c '%u:%g %n' /owned");
    assert_eq!(committed.trim(), "1234:2345 /owned");
    let built = p.build("oci");
    for want in [
        "installed",
        "/opt/tool/bin/tool 755",
        "/etc/chmodme 640",
        "absent /etc/lowerfile",
        "absent /lowerdir",
    ] {
        assert_has(&built, want);
    }
}

/// Runs a rootless podman `attempt` once more if it panics: right after another rootless run,
/// podman's pause process of the previous store can still be exiting (seen once in 24 runs);
/// a second failure is a real one.
fn retry_once<T>(attempt: impl Fn() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(&attempt)) {
        Ok(v) => v,
        Err(_) => {
            eprintln!("rootless podman: first attempt failed (above); retrying once");
            attempt()
        }
    }
}

/// Everything the rootless comparison looks at, for one mount program.
#[derive(Debug, PartialEq)]
struct RootlessOutcome {
    scenario: Outcome,
    /// `podman diff` of a container that chowned and chmodded files, sorted.
    owned_diff: Vec<String>,
    /// Owners and modes (`ls -ln`: mode, uid, gid, name) in the image committed from it.
    owned: Vec<String>,
    /// BUILD_CHECKS in an image built with `--isolation oci`.
    build: Vec<String>,
}

/// Changes of ownership in a rootless container: ids of the user's subordinate range, a new
/// file and a lower one (copied up), a directory, and a mode with setgid.
const OWNERSHIP: &str = "echo o > /owned && chown 1234:2345 /owned && chown 1234:1234 /etc/chmodme \
                         && mkdir /odir && chown 2000:3000 /odir && chmod 2750 /odir";
const OWNERSHIP_CHECKS: &str =
    "ls -lnd /owned /etc/chmodme /odir /etc/passwd | awk '{print $1, $3, $4, $NF}'";

/// The rootless scenario, the ownership changes and a build, with `mount_program`.
fn rootless_outcome(mount_program: &Path) -> RootlessOutcome {
    let p = Podman::rootless(mount_program, ROOTLESS_UID);
    let scenario = p.scenario();
    p.run(&["--name", "own"], "localhost/bb", OWNERSHIP);
    let mut owned_diff: Vec<String> = p.ok(&["diff", "own"]).lines().map(String::from).collect();
    owned_diff.sort();
    p.ok(&["commit", "-q", "own", "localhost/owned"]);
    let owned = p
        .run(&["--rm"], "localhost/owned", OWNERSHIP_CHECKS)
        .lines()
        .map(String::from)
        .collect();
    let build = p.build("oci");
    RootlessOutcome {
        scenario,
        owned_diff,
        owned,
        build,
    }
}

/// Rootless podman (uid 4242, subordinate ranges) with fuse-overlayfs and with unionfuse as the
/// mount program: the same `podman diff`, committed images, owners and modes after chown and
/// chmod inside the container, and built image.
#[test]
fn podman_rootless_matches_fuse_overlayfs() {
    if !require_podman() || !require_fuse_overlayfs() {
        return;
    }
    let Some(_setup) = require_rootless() else {
        return;
    };
    let start = Instant::now();
    let reference = retry_once(|| rootless_outcome(Path::new(FUSE_OVERLAYFS)));
    for want in [
        "-rw-r--r-- 1234 2345 /owned",
        "-rw-r--r-- 1234 1234 /etc/chmodme",
        "drwxr-s--- 2000 3000 /odir",
    ] {
        assert_has(&reference.owned, want);
    }
    assert_has(&reference.scenario.committed, "absent /etc/lowerfile");
    let ours = retry_once(|| rootless_outcome(&unionfuse()));
    assert_eq!(
        ours, reference,
        "rootless podman with unionfuse differs from fuse-overlayfs"
    );
    eprintln!(
        "rootless comparison took {:?}; both gave {reference:#?}",
        start.elapsed()
    );
}

/// Live (not zombie) processes of `uid` with an argument below `dir`.
fn user_procs_under(dir: &Path, uid: u32) -> Vec<i32> {
    let want = dir.to_string_lossy().into_owned();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let zombie = status
            .lines()
            .any(|l| l.starts_with("State:") && l.contains('Z'));
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        if !zombie
            && proc_uid(pid) == Some(uid)
            && String::from_utf8_lossy(&cmdline).contains(&want)
        {
            out.push(pid);
        }
    }
    out
}

/// The real uid of a live process.
fn proc_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
