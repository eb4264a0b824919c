//! Attacks from inside `unionfuse run`, rootful and rootless: each is one raw syscall made by a
//! static probe (tests/containment/probe.rs, built here with rustc) in a busybox rootfs, and
//! each must fail with the errno the engines give. Where podman runs, the same probe runs in a
//! podman container too and both sides are compared (docs/security.md has the table).
//! Needs root and /dev/fuse: under CI=true their absence is a failure, elsewhere a skip.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::skip_or_fail_in_ci;

const BIN: &str = env!("CARGO_BIN_EXE_unionfuse");

/// The probe, built once per test binary.
fn probe() -> &'static Path {
    static PROBE: OnceLock<PathBuf> = OnceLock::new();
    PROBE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("uf-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("probe dir");
        let out = dir.join("probe");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/containment/probe.rs");
        let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
        let o = Command::new(rustc)
            .args(["-O", "-C", "target-feature=+crt-static", "-o"])
            .arg(&out)
            .arg(&src)
            .output()
            .expect("spawn rustc");
        assert!(
            o.status.success(),
            "rustc {}: {}",
            src.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        out
    })
}

fn busybox() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// A busybox rootfs with the probe at /bin/probe and a setuid-root copy at /bin/suid.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Option<World> {
        if !common::require_fuse() {
            return None;
        }
        let Some(bb) = busybox() else {
            skip_or_fail_in_ci("busybox-static is not installed");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("uf-contain-")
            .tempdir()
            .expect("tempdir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let w = World { dir };
        let root = w.lower();
        for d in ["bin", "etc", "tmp", "root", "proc", "sys", "dev"] {
            std::fs::create_dir_all(root.join(d)).expect("mkdir");
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .expect("chmod tmp");
        std::fs::copy(&bb, root.join("bin/busybox")).expect("copy busybox");
        for a in [
            "sh", "grep", "cat", "id", "touch", "mkdir", "chown", "stat", "ls", "readlink",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).expect("applet");
        }
        std::fs::copy(probe(), root.join("bin/probe")).expect("copy probe");
        std::fs::copy(probe(), root.join("bin/suid")).expect("copy suid");
        std::fs::set_permissions(
            root.join("bin/suid"),
            std::fs::Permissions::from_mode(0o4755),
        )
        .expect("chmod suid");
        std::fs::write(
            root.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000:A:/tmp:/bin/sh\n",
        )
        .expect("passwd");
        std::fs::write(root.join("etc/group"), "root:x:0:\nalice:x:1000:\n").expect("group");
        for f in ["hosts", "hostname", "resolv.conf"] {
            std::fs::write(root.join("etc").join(f), "").expect("init file");
        }
        std::fs::create_dir_all(w.tmp()).expect("tmp");
        Some(w)
    }

    fn lower(&self) -> PathBuf {
        self.dir.path().join("lower")
    }
    fn tmp(&self) -> PathBuf {
        self.dir.path().join("tmp")
    }

    fn run(&self, flags: &[&str], cmd: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("run")
            .args(flags)
            .arg(self.lower())
            .arg("--")
            .args(cmd)
            .env("TMPDIR", self.tmp())
            .stdin(Stdio::null());
        c
    }
}

/// Run `c` with a host file open as fd 3 (the fd a careless caller leaves open).
fn with_fd3(c: &mut Command) -> Output {
    let f = std::fs::File::open("/etc/hostname").expect("open /etc/hostname");
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: dup2 onto 3 of an fd alive in the parent; async-signal-safe, between fork and exec.
    unsafe {
        c.pre_exec(move || {
            // dup2 onto itself keeps O_CLOEXEC: clear it then.
            let r = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let o = c.output().expect("spawn");
    drop(f);
    o
}

fn results(o: &Output) -> BTreeMap<String, String> {
    assert!(
        o.status.success(),
        "probe failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// podman on `c` (podman itself, or podman run as a user) with a private vfs store in `store`.
fn podman_in(mut c: Command, store: &Path, args: &[&str]) -> Command {
    c.arg("--root")
        .arg(store.join("root"))
        .arg("--runroot")
        .arg(store.join("runroot"))
        .arg("--tmpdir")
        .arg(store.join("tmp"))
        .args(["--storage-driver", "vfs", "--runtime", "runc"])
        .args(["--cgroup-manager", "cgroupfs", "--events-backend", "file"])
        .args(args);
    c
}

/// Imports the probe's rootfs `tar` into podman and runs the probe there with fd 3 open, as the
/// attack tests run ours.
fn podman_probe(podman: &dyn Fn(&[&str]) -> Command, tar: &Path) -> BTreeMap<String, String> {
    let o = podman(&[
        "import",
        tar.to_str().expect("utf-8"),
        "localhost/uf-contain:probe",
    ])
    .output()
    .expect("podman import");
    assert!(
        o.status.success(),
        "podman import: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let me = std::process::id().to_string();
    let run = [
        "run",
        "--rm",
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "localhost/uf-contain:probe",
        "/bin/probe",
        "all",
        &me,
    ];
    results(&with_fd3(&mut podman(&run)))
}

/// What every attack must get from us. `rootless`: the container has a user namespace of its
/// own, where a nested one is allowed (as in rootless podman).
fn expected(rootless: bool) -> BTreeMap<&'static str, &'static str> {
    let sysrq = if Path::new("/proc/sysrq-trigger").exists() {
        "EROFS"
    } else {
        "ENOENT"
    };
    BTreeMap::from([
        ("read_fd_3", "EBADF"),
        ("mount_tmpfs_dev", "EPERM"),
        ("mknod_blockdev", "EPERM"),
        ("mount_blockdev", "EPERM"),
        ("init_module", "EPERM"),
        ("finit_module", "EPERM"),
        ("kexec_load", "EPERM"),
        ("kexec_file_load", "EPERM"),
        ("write_sysrq_trigger", sysrq),
        // Rootless: the file belongs to an unmapped id, the permission check answers first.
        ("write_proc_sys", if rootless { "EACCES" } else { "EROFS" }),
        ("keyctl", "EPERM"),
        ("add_key", "EPERM"),
        ("bpf", "EPERM"),
        ("perf_event_open", "EPERM"),
        ("open_by_handle_at", "EPERM"),
        ("ptrace_outside", "ESRCH"),
        ("unshare_user", if rootless { "ok" } else { "EPERM" }),
        ("swapon", "EPERM"),
        ("reboot", "EPERM"),
        ("read_proc_keys", "0 bytes"),
    ])
}

/// Names of the probe's results, aligned, ours beside theirs (shown with --nocapture).
fn print_side_by_side(
    title: &str,
    ours: &BTreeMap<String, String>,
    theirs: &BTreeMap<String, String>,
) {
    eprintln!("{:<22} {:<10} {title}", "attack", "unionfuse");
    for (k, v) in ours {
        eprintln!(
            "{k:<22} {v:<10} {}",
            theirs.get(k).map_or("-", String::as_str)
        );
    }
}

fn assert_expected(got: &BTreeMap<String, String>, rootless: bool) {
    let want = expected(rootless);
    let got: BTreeMap<&str, &str> = got.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(got, want, "attacks (left: seen, right: expected)");
}

fn status_line(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .unwrap_or_else(|| panic!("no {key} in {out}"))
        .trim()
        .to_string()
}

fn stdout(o: &Output) -> String {
    assert!(
        o.status.success(),
        "run failed: {}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn rootful_attacks_are_blocked_with_the_engines_errnos() {
    let Some(w) = World::new() else { return };
    let me = std::process::id().to_string();
    let got = results(&with_fd3(&mut w.run(&[], &["/bin/probe", "all", &me])));
    assert_expected(&got, false);
    // --preserve-fds hands fd 3 over on purpose.
    let kept = results(&with_fd3(
        &mut w.run(&["--preserve-fds", "1"], &["/bin/probe", "all", &me]),
    ));
    assert_eq!(kept["read_fd_3"], "ok");
}

#[test]
fn rootful_defaults_are_podmans_capabilities_with_no_new_privs_and_a_filter() {
    let Some(w) = World::new() else { return };
    let status = |flags: &[&str]| {
        stdout(
            &w.run(flags, &["cat", "/proc/self/status"])
                .output()
                .expect("run"),
        )
    };
    let root = status(&[]);
    for set in ["CapPrm", "CapEff", "CapBnd"] {
        assert_eq!(status_line(&root, set), "00000000800405fb", "{set}");
    }
    assert_eq!(status_line(&root, "CapInh"), "0000000000000000");
    assert_eq!(status_line(&root, "NoNewPrivs"), "1");
    assert_eq!(status_line(&root, "Seccomp"), "2");
    // A non-root user: nothing but what --cap-add names, bounding kept.
    let user = status(&["-u", "1000"]);
    assert_eq!(status_line(&user, "CapEff"), "0000000000000000");
    assert_eq!(status_line(&user, "CapBnd"), "00000000800405fb");
    let added = status(&["-u", "1000", "--cap-add", "NET_RAW"]);
    assert_eq!(status_line(&added, "CapEff"), "0000000000002000");
    assert_eq!(status_line(&added, "CapAmb"), "0000000000002000");
    let dropped = status(&["--cap-drop", "ALL", "--cap-add", "chown"]);
    assert_eq!(status_line(&dropped, "CapBnd"), "0000000000000001");
    let privileged = status(&["--privileged"]);
    assert_eq!(status_line(&privileged, "Seccomp"), "0");
    assert_eq!(
        u64::from_str_radix(&status_line(&privileged, "CapEff"), 16).expect("hex") & (1 << 21),
        1 << 21,
        "CAP_SYS_ADMIN under --privileged"
    );
    let unconfined = status(&["--security-opt", "seccomp=unconfined"]);
    assert_eq!(status_line(&unconfined, "Seccomp"), "0");
}

#[test]
fn a_setuid_binary_gains_nothing_under_no_new_privs() {
    let Some(w) = World::new() else { return };
    let euid = |flags: &[&str]| {
        let mut f = vec!["-u", "1000"];
        f.extend_from_slice(flags);
        stdout(&w.run(&f, &["/bin/suid", "euid"]).output().expect("run"))
    };
    assert_eq!(euid(&[]).trim(), "euid=1000");
    // The opt-out shows the binary would have gained root: the test can fail.
    assert_eq!(
        euid(&["--security-opt", "no-new-privileges=false"]).trim(),
        "euid=0"
    );
}

#[test]
fn a_seccomp_profile_file_replaces_the_default_filter() {
    let Some(w) = World::new() else { return };
    let prof = w.dir.path().join("profile.json");
    std::fs::write(
        &prof,
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["reboot"],"action":"SCMP_ACT_ERRNO","errnoRet":95}]}"#,
    )
    .expect("profile");
    let opt = format!("seccomp={}", prof.display());
    let o = w
        .run(&["--security-opt", &opt], &["/bin/probe", "all", "1"])
        .output()
        .expect("run");
    let got = results(&o);
    // The profile's errno, and the default deny list gone (keyctl allowed by this profile).
    assert_eq!(got["reboot"], "EOPNOTSUPP");
    assert_eq!(got["keyctl"], "ok");
    let bad = w.dir.path().join("bad.json");
    std::fs::write(&bad, "{\"syscalls\": []}").expect("bad");
    let o = w
        .run(
            &["--security-opt", &format!("seccomp={}", bad.display())],
            &["true"],
        )
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.json: defaultAction: missing"), "{err}");
}

#[test]
fn rootless_attacks_are_blocked_too() {
    let Some(w) = World::new() else { return };
    let Some(_setup) = common::rootless::require_rootless() else {
        return;
    };
    let uid = common::rootless::ROOTLESS_UID;
    common::rootless::chown_tree(&w.lower(), uid);
    // The setuid bit goes with chown: put it back (owned by the container's root now).
    std::fs::set_permissions(
        w.lower().join("bin/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod suid");
    std::os::unix::fs::chown(w.tmp(), Some(uid), Some(uid)).expect("chown tmp");
    let me = std::process::id().to_string();
    let as_user = |flags: &[&str], cmd: &[&str]| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--clear-groups", BIN, "run"])
            .args(flags)
            .arg(w.lower())
            .arg("--")
            .args(cmd)
            .env("TMPDIR", w.tmp())
            .current_dir("/")
            .stdin(Stdio::null());
        c
    };
    let got = results(&with_fd3(&mut as_user(&[], &["/bin/probe", "all", &me])));
    assert_expected(&got, true);
    let out = stdout(
        &as_user(&[], &["cat", "/proc/self/status"])
            .output()
            .expect("run"),
    );
    assert_eq!(status_line(&out, "CapEff"), "00000000800405fb");
    assert_eq!(status_line(&out, "NoNewPrivs"), "1");
    let o = as_user(&["-u", "1000"], &["/bin/suid", "euid"])
        .output()
        .expect("run");
    assert_eq!(stdout(&o).trim(), "euid=1000");
}

/// The single line of a uid_map/gid_map: (inside, outside, count).
fn map_line(text: &str) -> (u32, u32, u32) {
    let f: Vec<u32> = text
        .split_whitespace()
        .map(|x| x.parse().expect("number"))
        .collect();
    assert_eq!(f.len(), 3, "one range expected: {text:?}");
    (f[0], f[1], f[2])
}

#[test]
fn rootful_userns_auto_maps_root_to_an_unused_host_range() {
    let Some(w) = World::new() else { return };
    let maps = stdout(
        &w.run(
            &["--userns=auto"],
            &["cat", "/proc/self/uid_map", "/proc/self/gid_map"],
        )
        .output()
        .expect("run"),
    );
    let lines: Vec<&str> = maps.lines().collect();
    assert_eq!(lines.len(), 2, "{maps}");
    let (inside, outside, count) = map_line(lines[0]);
    assert_eq!((inside, count), (0, 65536), "{maps}");
    // Not the host's root, nor any id a user or another container holds (2^31 up, or the
    // `containers` range of /etc/subuid).
    assert!(outside > 65536, "{maps}");
    assert_eq!(map_line(lines[1]), (inside, outside, count), "{maps}");
    // Inside it the container's root can do what a rootless one can: the attacks fail the same.
    let me = std::process::id().to_string();
    let got = results(&with_fd3(
        &mut w.run(&["--userns=auto"], &["/bin/probe", "all", &me]),
    ));
    assert_expected(&got, true);
    let o = w
        .run(&["--userns=auto", "-u", "1000"], &["/bin/suid", "euid"])
        .output()
        .expect("run");
    assert_eq!(stdout(&o).trim(), "euid=1000");
    let o = w
        .run(
            &["--userns", "auto:size=1024"],
            &["cat", "/proc/self/uid_map"],
        )
        .output()
        .expect("run");
    assert_eq!(map_line(&stdout(&o)).2, 1024);
}

#[test]
fn rootful_userns_root_cannot_write_host_root_files() {
    let Some(w) = World::new() else { return };
    let ro = w.dir.path().join("host-root-644");
    let rw = w.dir.path().join("host-root-666");
    std::fs::write(&ro, "host\n").expect("file");
    std::fs::write(&rw, "host\n").expect("file");
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    std::fs::set_permissions(&rw, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let v1 = format!("{}:/ro", ro.display());
    let v2 = format!("{}:/rw", rw.display());
    let probe = |flags: &[&str], what: &str, path: &str| {
        let mut f = vec!["-v", &v1, "-v", &v2];
        f.extend_from_slice(flags);
        stdout(
            &w.run(&f, &["/bin/probe", what, path])
                .output()
                .expect("run"),
        )
        .trim()
        .to_string()
    };
    // The host's root owns them: unmapped inside, so CAP_DAC_OVERRIDE and CAP_FOWNER do not
    // apply to them.
    assert_eq!(probe(&["--userns=auto"], "write", "/ro"), "write=EACCES");
    assert_eq!(probe(&["--userns=auto"], "chmod", "/rw"), "chmod=EPERM");
    // What the mode grants to others still is granted.
    assert_eq!(probe(&["--userns=auto"], "write", "/rw"), "write=ok");
    // Without a user namespace the container's root is the host's: the tests can fail.
    assert_eq!(probe(&[], "write", "/ro"), "write=ok");
    assert_eq!(probe(&[], "chmod", "/rw"), "chmod=ok");
    assert_eq!(std::fs::read_to_string(&ro).expect("read"), "host\n");
}

#[test]
fn rootful_userns_files_are_stored_with_the_containers_ids() {
    let Some(w) = World::new() else { return };
    let upper = w.dir.path().join("upper");
    let up = upper.to_str().expect("utf-8");
    let script = "touch /f && mkdir /d && touch /g && chown 1000:1000 /g && \
                  stat -c '%u:%g %n' /f /d /g /bin/busybox";
    let o = w
        .run(&["--userns=auto", "--upper", up], &["sh", "-c", script])
        .output()
        .expect("run");
    // The container sees its own ids (the image's root files as its root's)...
    assert_eq!(
        stdout(&o),
        "0:0 /f\n0:0 /d\n1000:1000 /g\n0:0 /bin/busybox\n"
    );
    // ...and the container layer holds them as an image layer would: inside ids, not the
    // host range's.
    use std::os::unix::fs::MetadataExt;
    let owner = |n: &str| {
        let m = std::fs::symlink_metadata(upper.join(n)).expect("in the upper");
        (m.uid(), m.gid())
    };
    assert_eq!(owner("f"), (0, 0));
    assert_eq!(owner("d"), (0, 0));
    assert_eq!(owner("g"), (1000, 1000));
    // An explicit map: the lines as given, the gids their own.
    let o = w
        .run(
            &[
                "--uidmap",
                "0:3000000000:65536",
                "--gidmap",
                "0:3100000000:65536",
                "--upper",
                up,
            ],
            &[
                "sh",
                "-c",
                "cat /proc/self/uid_map /proc/self/gid_map; touch /e",
            ],
        )
        .output()
        .expect("run");
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(map_line(lines[0]), (0, 3_000_000_000, 65536), "{out}");
    assert_eq!(map_line(lines[1]), (0, 3_100_000_000, 65536), "{out}");
    assert_eq!(owner("e"), (0, 0));
    // A map without the container's root is refused before anything runs.
    let o = w
        .run(&["--uidmap", "1:3000000000:10"], &["true"])
        .output()
        .expect("run");
    assert_eq!(o.status.code(), Some(125), "{o:?}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("container id 0 must be mapped"),
        "{o:?}"
    );
}

/// pid 1's open fds as `N -> target` lines of `ls -l /proc/1/fd` (read with CAP_SYS_PTRACE).
fn init_fds(w: &World, flags: &[&str]) -> BTreeMap<u32, String> {
    let mut f = vec!["--cap-add", "SYS_PTRACE"];
    f.extend_from_slice(flags);
    let o = with_fd3(&mut w.run(&f, &["ls", "-l", "/proc/1/fd"]));
    stdout(&o)
        .lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.to_string()))
        })
        .collect()
}

#[test]
fn the_init_holds_none_of_the_callers_fds() {
    let Some(w) = World::new() else { return };
    for userns in [false, true] {
        let base: &[&str] = if userns { &["--userns=auto"] } else { &[] };
        let fds = init_fds(&w, base);
        let mut nums: Vec<u32> = fds.keys().copied().collect();
        nums.retain(|n| *n > 2);
        // Its signalfd only; the caller's fd 3 (/etc/hostname) is gone.
        assert_eq!(nums.len(), 1, "userns {userns}: {fds:?}");
        assert!(
            fds[&nums[0]].contains("signalfd"),
            "userns {userns}: {fds:?}"
        );
        assert!(
            !fds.values().any(|t| t.contains("hostname")),
            "userns {userns}: {fds:?}"
        );
        // --preserve-fds 1 keeps fd 3 for the command, so the init holds it too.
        let mut f = base.to_vec();
        f.extend_from_slice(&["--preserve-fds", "1"]);
        let fds = init_fds(&w, &f);
        assert_eq!(
            fds.get(&3).map(String::as_str),
            Some("/etc/hostname"),
            "userns {userns}: {fds:?}"
        );
    }
}

/// podman (runc) beside us on the same probe. Our side must match `expected`; podman's answers
/// are printed and must block the same attacks, except where its default profile allows the
/// call (keyctl, add_key's ENOSYS, a nested user namespace), as docs/security.md records.
#[test]
fn podman_blocks_the_same_attacks() {
    let Some(w) = World::new() else { return };
    if common::rootless::which("podman").is_none() {
        skip_or_fail_in_ci("podman is not installed");
        return;
    }
    let store = w.dir.path().join("podman");
    let podman = |args: &[&str]| {
        let mut c = podman_in(Command::new("podman"), &store, args);
        c.stdin(Stdio::null());
        c
    };
    let tar = w.dir.path().join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(w.lower())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    let theirs = podman_probe(&podman, &tar);
    let me = std::process::id().to_string();
    let ours = results(&with_fd3(&mut w.run(&[], &["/bin/probe", "all", &me])));
    print_side_by_side("podman", &ours, &theirs);
    assert_expected(&ours, false);
    let allowed_by_podman = ["keyctl", "add_key", "unshare_user"];
    for (k, v) in &theirs {
        if !allowed_by_podman.contains(&k.as_str()) {
            assert_eq!(ours.get(k), Some(v), "{k}: ours vs podman's");
        }
    }
    let _ = podman(&["rmi", "-a", "-f"]).output();
}

/// Rootless podman's pause process (it holds the user namespace and ignores SIGTERM), killed on
/// drop so that nothing outlives the test.
struct PauseGuard {
    pid_file: PathBuf,
    uid: u32,
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        let pid = std::fs::read_to_string(&self.pid_file).unwrap_or_default();
        let Ok(pid) = pid.trim().parse::<i32>() else {
            return;
        };
        let owner = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u32>().ok())
            });
        if owner == Some(self.uid) {
            // SAFETY: kill has no memory preconditions; the pid is this store's pause process,
            // owned by the test user.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Rootless podman (uid 4242 with its subordinate range, runc, vfs storage) beside rootless
/// unionfuse on the same probe, as the same user. Both must block the same attacks, except the
/// calls podman's default profile allows (keyctl; add_key answers ENOSYS there).
#[test]
fn rootless_podman_blocks_the_same_attacks() {
    let Some(w) = World::new() else { return };
    if common::rootless::which("podman").is_none() || common::rootless::which("runc").is_none() {
        skip_or_fail_in_ci("podman or runc is not installed");
        return;
    }
    let Some(_setup) = common::rootless::require_rootless() else {
        return;
    };
    let uid = common::rootless::ROOTLESS_UID;
    let store = w.dir.path().join("podman");
    for d in ["home", "run", "tmp"] {
        std::fs::create_dir_all(store.join(d)).expect("store dir");
    }
    let tar = store.join("rootfs.tar");
    let st = Command::new("tar")
        .arg("-C")
        .arg(w.lower())
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar");
    assert!(st.success());
    common::rootless::chown_tree(&store, uid);
    let _pause = PauseGuard {
        pid_file: store.join("tmp/pause.pid"),
        uid,
    };
    let as_user = |prog: &str| {
        let mut c = Command::new("setpriv");
        c.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .args(["--init-groups", prog])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", store.join("home"))
            .env("XDG_RUNTIME_DIR", store.join("run"))
            .env("TMPDIR", store.join("tmp"))
            .current_dir("/")
            .stdin(Stdio::null());
        c
    };
    let podman = |args: &[&str]| podman_in(as_user("podman"), &store, args);
    let theirs = podman_probe(&podman, &tar);
    let me = std::process::id().to_string();
    // Ours as the same user, in a lower it owns (its root is the container's root).
    common::rootless::chown_tree(&w.lower(), uid);
    std::fs::set_permissions(
        w.lower().join("bin/suid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .expect("chmod suid");
    common::rootless::chown_tree(&w.tmp(), uid);
    let mut ours_cmd = as_user(BIN);
    ours_cmd
        .arg("run")
        .arg(w.lower())
        .args(["--", "/bin/probe", "all", &me])
        .env("TMPDIR", w.tmp());
    let ours = results(&with_fd3(&mut ours_cmd));
    print_side_by_side("podman rootless", &ours, &theirs);
    assert_expected(&ours, true);
    let allowed_by_podman = ["keyctl", "add_key"];
    for (k, v) in &theirs {
        if !allowed_by_podman.contains(&k.as_str()) {
            assert_eq!(ours.get(k), Some(v), "{k}: ours vs rootless podman's");
        }
    }
    let _ = podman(&["rmi", "-a", "-f"]).output();
}
