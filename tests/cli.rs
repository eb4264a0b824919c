//! What a user of the command line sees: the log of a plain mount (no library warnings, colours
//! only on a terminal, `UNIONFUSE_LOG`, `--log-file` for a background mount), error messages
//! (printed once, naming /dev/fuse or the non-tar file), the `fuse.unionfuse` type with
//! `mount -t fuse.unionfuse` and fstab, and the install step. Mounted tests need root and
//! /dev/fuse: under CI=true their absence is a failure, elsewhere a skip.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mount::{UnmountOnDrop, binary, is_mounted, mount_fstype};
use common::{Stack, UnionMount, kernel_backend, require_fuse, write_file};

fn run(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run unionfuse")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Wait until `f` holds (a background daemon's doings), at most 10 s.
fn wait_for(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Open, write, read and close files through the mount: the requests every program makes.
fn use_files(mnt: &Path) {
    let f = mnt.join("f");
    std::fs::write(&f, b"new").expect("write through the mount");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut h| std::io::Write::write_all(&mut h, b" more"))
        .expect("append through the mount");
    assert_eq!(std::fs::read(&f).expect("read back"), b"new more");
    assert_eq!(std::fs::read(mnt.join("low")).expect("read lower"), b"low");
}

#[test]
fn foreground_mount_logs_nothing_for_plain_use() {
    if kernel_backend() || !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    write_file(&stack.lower(0).join("low"), b"low", 0o644);
    let m = UnionMount::new(&stack);
    use_files(m.mnt());
    // Closing files sends FLUSH, answered ENOSYS by design: nothing to log.
    let log = m.log_text();
    m.unmount();
    assert_eq!(
        log, "",
        "a plain mount logged something at the default level"
    );
}

#[test]
fn log_has_no_colours_when_not_a_terminal_and_follows_unionfuse_log() {
    if kernel_backend() || !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    write_file(&stack.lower(0).join("low"), b"low", 0o644);
    let log = stack.base.path().join("fg.log");
    let mut child = Command::new(binary())
        .args(stack.mount_args(&stack.new_workdir()))
        .arg("--foreground")
        .env("UNIONFUSE_LOG", "unionfuse=info")
        .stderr(std::fs::File::create(&log).expect("create log"))
        .spawn()
        .expect("spawn unionfuse");
    let guard = UnmountOnDrop(stack.mnt.clone());
    wait_for("the mount is live", || is_mounted(&stack.mnt));
    use_files(&stack.mnt);
    drop(guard);
    let status = child.wait().expect("reap unionfuse");
    assert!(status.success(), "{status}");
    let log = std::fs::read_to_string(&log).expect("read log");
    assert!(
        log.contains(" INFO unionfuse::mount: mounted"),
        "UNIONFUSE_LOG=info:\n{log}"
    );
    assert!(
        !log.contains('\x1b'),
        "ANSI escapes in a log that is a file:\n{log}"
    );
    assert!(
        !log.contains("fuser"),
        "the filter unionfuse=info let fuser's lines through"
    );
}

#[test]
fn background_mount_writes_its_log_to_log_file_and_shows_as_fuse_unionfuse() {
    if kernel_backend() || !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    write_file(&stack.lower(0).join("low"), b"low", 0o644);
    let log = stack.base.path().join("daemon.log");
    let mut args = stack.mount_args(&stack.new_workdir());
    args.extend(["-V".into(), "--log-file".into(), log.clone().into()]);
    let out = Command::new(binary())
        .args(&args)
        .output()
        .expect("run unionfuse");
    let _guard = UnmountOnDrop(stack.mnt.clone());
    assert!(out.status.success(), "mount failed: {}", text(&out.stderr));
    assert_eq!(
        text(&out.stderr),
        "",
        "a successful mount printed something"
    );
    assert_eq!(mount_fstype(&stack.mnt).as_deref(), Some("fuse.unionfuse"));
    use_files(&stack.mnt);
    let st = Command::new("umount")
        .arg(&stack.mnt)
        .status()
        .expect("umount");
    assert!(st.success());
    // The daemon logged after it detached from the terminal, into the file.
    wait_for("the daemon logs its start", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("mounted"))
    });
    let text = std::fs::read_to_string(&log).expect("read the log file");
    assert!(
        !text.contains('\x1b'),
        "ANSI escapes in the log file:\n{text}"
    );
    assert!(
        !text.contains("WARN"),
        "warnings in a plain mount's log:\n{text}"
    );
}

#[test]
fn background_mount_failure_is_printed_once() {
    if kernel_backend() || !require_fuse() {
        return;
    }
    // A work dir on another filesystem than the upper is refused by the daemon, after the
    // fork: the parent prints the daemon's error, once.
    let stack = Stack::new(1);
    let shm = tempfile::tempdir_in("/dev/shm").expect("temp dir in /dev/shm");
    let mut args = stack.mount_args(shm.path());
    let w = args
        .iter()
        .position(|a| a == "--workdir")
        .expect("mount_args gives a --workdir");
    args[w + 1] = shm.path().into();
    let out = Command::new(binary())
        .args(&args)
        .output()
        .expect("run unionfuse");
    let _guard = UnmountOnDrop(stack.mnt.clone());
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "not one line:\n{err}");
    assert!(
        err.starts_with(&format!(
            "unionfuse: {}: work dir must be on",
            shm.path().display()
        )),
        "{err}"
    );
    assert!(!is_mounted(&stack.mnt));
}

#[test]
fn missing_dev_fuse_is_named() {
    if kernel_backend() || !require_fuse() {
        return;
    }
    // A mount namespace whose /dev is an empty tmpfs: /dev/fuse does not exist there.
    let stack = Stack::new(1);
    let args = stack.mount_args(&stack.new_workdir());
    let script = "mount -t tmpfs tmpfs /dev && exec \"$0\" \"$@\"";
    let out = Command::new("unshare")
        .args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            binary(),
        ])
        .args(&args)
        .output()
        .expect("run unshare");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "unionfuse: /dev/fuse: cannot open the FUSE device: No such file or directory \
         (os error 2) (load the fuse module: modprobe fuse)"
    );
}

#[test]
fn import_of_a_file_that_is_not_a_tar_says_so() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "secret line one\nsecret line two\n".repeat(40)).expect("write");
    let store = dir.path().join("store");
    let out = run(&[
        "--root".as_ref(),
        store.as_os_str(),
        "image".as_ref(),
        "import".as_ref(),
        file.as_os_str(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err.starts_with(&format!("unionfuse: {}: not a tar archive", file.display())),
        "{err}"
    );
    assert!(
        !err.contains("secret"),
        "the file's content was printed:\n{err}"
    );
}

/// `make install PREFIX=P HELPERDIR=P/sbin PROFILE=dev CARGO_FLAGS=...` into the test target's
/// temp dir, once per test binary (the suite's own debug build: no release build needed).
fn installed() -> &'static Path {
    static PREFIX: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    PREFIX.get_or_init(|| {
        let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join("install");
        let _ = std::fs::remove_dir_all(&prefix);
        let out = Command::new("make")
            .arg("install")
            .arg(format!("PREFIX={}", prefix.display()))
            .arg(format!("HELPERDIR={}/sbin", prefix.display()))
            .arg("PROFILE=dev")
            // The build this suite runs with: target/debug/unionfuse is not rebuilt without
            // the test hooks under the other test binaries.
            .arg("CARGO_FLAGS=--features=fault-injection")
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .output()
            .expect("run make");
        assert!(
            out.status.success(),
            "make install failed:\n{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        prefix
    })
}

#[test]
fn make_install_puts_binary_helper_man_pages_and_completions_under_prefix() {
    use std::os::unix::fs::PermissionsExt;
    let p = installed();
    let mode = |rel: &str| {
        std::fs::metadata(p.join(rel))
            .unwrap_or_else(|e| panic!("{rel} not installed: {e}"))
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("bin/unionfuse"), 0o755);
    assert_eq!(mode("sbin/mount.fuse.unionfuse"), 0o755);
    for page in [
        "unionfuse",
        "unionfuse-run",
        "unionfuse-mount",
        "unionfuse-image-import",
    ] {
        let f = p.join(format!("share/man/man1/{page}.1"));
        let man = std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("{page}.1: {e}"));
        assert!(man.starts_with(".ie"), "{page}.1 is not a man page");
        assert!(
            man.contains(&format!(".TH {page} 1")),
            "{page}.1 has no .TH"
        );
        assert_eq!(mode(&format!("share/man/man1/{page}.1")), 0o644);
    }
    let run_page = std::fs::read_to_string(p.join("share/man/man1/unionfuse-run.1")).unwrap();
    assert!(run_page.contains("rootless"), "run's page lacks --rootless");
    for (rel, needle) in [
        ("share/bash-completion/completions/unionfuse", "complete -F"),
        ("share/zsh/site-functions/_unionfuse", "#compdef unionfuse"),
        (
            "share/fish/vendor_completions.d/unionfuse.fish",
            "complete -c unionfuse",
        ),
    ] {
        let c = std::fs::read_to_string(p.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert!(c.contains(needle), "{rel} lacks {needle:?}");
        assert!(c.contains("log-file"), "{rel} lacks mount's --log-file");
    }
    let helper = std::fs::read_to_string(p.join("sbin/mount.fuse.unionfuse")).unwrap();
    assert!(
        helper.contains(&format!("unionfuse='{}/bin/unionfuse'", p.display())),
        "the helper does not run the installed binary by its path"
    );
    let out = Command::new(p.join("bin/unionfuse"))
        .arg("--help")
        .output()
        .expect("run the installed unionfuse");
    assert!(out.status.success());
    let help = text(&out.stdout);
    assert!(
        help.starts_with("A union filesystem in userspace"),
        "{help}"
    );
    assert!(
        help.contains("Usage: unionfuse [OPTIONS] <COMMAND>"),
        "{help}"
    );
}

/// In a private mount namespace where /usr/sbin also holds the installed helper (a read-only
/// kernel overlay of the two: the host's /usr/sbin is not touched), run `mount -t
/// fuse.unionfuse` and `mount --fstab` with an fstab line as a user would, and check the
/// mount: its type, its contents, a write landing in the upper, `umount`.
#[test]
fn mount_t_fuse_unionfuse_and_an_fstab_line_mount_through_the_helper() {
    if kernel_backend() || !require_fuse() || !common::overlay_available() {
        return;
    }
    let p = installed();
    let stack = Stack::new(1);
    write_file(&stack.lower(0).join("low"), b"low", 0o644);
    let (work1, work2) = (stack.new_workdir(), stack.new_workdir());
    let (lower, upper, mnt) = (stack.lower(0), stack.upper(), &stack.mnt);
    let fstab = stack.base.path().join("fstab");
    std::fs::write(
        &fstab,
        format!(
            "# a union from fstab\nmyunion {} fuse.unionfuse noauto,nofail,_netdev,\
             x-systemd.automount,lowerdir={},upperdir={},workdir={} 0 0\n",
            mnt.display(),
            lower.display(),
            upper.display(),
            work2.display()
        ),
    )
    .unwrap();
    let script = r#"
        set -eu
        mount -t overlay overlay -o "lowerdir=$HELPERS:/usr/sbin" /usr/sbin
        trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
        mount -t fuse.unionfuse cmdline "$MNT" -o "lowerdir=$LOWER,upperdir=$UPPER,workdir=$WORK"
        grep " $MNT " /proc/self/mounts
        cat "$MNT/low"; echo
        echo one > "$MNT/one"
        umount "$MNT"
        mount --fstab "$FSTAB" "$MNT"
        grep " $MNT " /proc/self/mounts
        cat "$MNT/one"
        echo two > "$MNT/two"
        umount "$MNT"
    "#;
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "bash", "-c", script])
        .env("HELPERS", p.join("sbin"))
        .env("MNT", mnt)
        .env("LOWER", lower)
        .env("UPPER", upper)
        .env("WORK", &work1)
        .env("FSTAB", &fstab)
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    let _guard = UnmountOnDrop(mnt.clone());
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    let fields = |l: &str| l.split(' ').take(3).map(str::to_string).collect::<Vec<_>>();
    let m = mnt.display().to_string();
    assert_eq!(fields(lines[0]), ["cmdline", m.as_str(), "fuse.unionfuse"]);
    assert_eq!(lines[1], "low");
    assert_eq!(fields(lines[2]), ["myunion", m.as_str(), "fuse.unionfuse"]);
    assert_eq!(lines[3], "one");
    assert_eq!(std::fs::read(upper.join("one")).unwrap(), b"one\n");
    assert_eq!(std::fs::read(upper.join("two")).unwrap(), b"two\n");
    assert!(!lower.join("one").exists(), "a lower was written");
}

// ---- run's flags ----

/// A busybox-static rootfs in `dir/rootfs` (the lower), or None with the reason printed (under
/// CI=true: a failure).
fn busybox_rootfs(dir: &Path) -> Option<std::path::PathBuf> {
    if kernel_backend() || !require_fuse() {
        return None;
    }
    let Some(bb) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.is_file())
    else {
        common::skip_or_fail_in_ci("busybox-static is not installed");
        return None;
    };
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for a in ["sh", "cat", "echo", "touch", "grep", "ls", "env"] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    Some(root)
}

/// `unionfuse run ARGS` with TMPDIR=`tmp`, `stdin` as its input.
fn run_ctr(tmp: &Path, args: &[&str], stdin: &[u8], env: &[(&str, &str)]) -> Output {
    let mut child = Command::new(binary())
        .arg("run")
        .args(args)
        .env("TMPDIR", tmp)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn unionfuse run");
    let mut input = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut input, stdin).unwrap();
    drop(input);
    child.wait_with_output().expect("wait unionfuse run")
}

#[track_caller]
fn ok_out(o: &Output) -> String {
    assert!(o.status.success(), "run failed: {}", text(&o.stderr));
    text(&o.stdout)
}

#[test]
fn run_takes_env_file_tmpfs_read_only_tmpfs_rm_and_i() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = busybox_rootfs(dir.path()) else {
        return;
    };
    let r = root.to_str().unwrap();
    let t = dir.path();
    // -i and --rm: accepted; stdin reaches the command; nothing is left behind.
    let o = run_ctr(t, &["-i", "--rm", r, "--", "cat"], b"through stdin\n", &[]);
    assert_eq!(ok_out(&o), "through stdin\n");
    // --env-file: comments and blank lines skipped, KEY alone copied from here, -e wins.
    let envf = t.join("env");
    std::fs::write(&envf, "# comment\n\nA=1\nB=from file\nFROM_HOST\n").unwrap();
    let envf = envf.to_str().unwrap();
    let o = run_ctr(
        t,
        &[
            "--env-file",
            envf,
            "-e",
            "B=flag",
            r,
            "--",
            "sh",
            "-c",
            "echo $A/$B/$FROM_HOST",
        ],
        b"",
        &[("FROM_HOST", "host")],
    );
    assert_eq!(ok_out(&o), "1/flag/host\n");
    std::fs::write(t.join("bad-env"), "OK=1\nnot valid\n").unwrap();
    let bad = t.join("bad-env");
    let o = run_ctr(
        t,
        &["--env-file", bad.to_str().unwrap(), r, "--", "true"],
        b"",
        &[],
    );
    assert_eq!(o.status.code(), Some(125));
    assert_eq!(
        text(&o.stderr),
        format!(
            "unionfuse run: --env-file {}: line 2: expected KEY=VALUE or KEY\n",
            bad.display()
        )
    );
    // --read-only keeps /run, /tmp and /var/tmp writable (tmpfs), the rest is EROFS.
    let script = "for d in /run /tmp /var/tmp; do touch $d/x && echo $d ok; done; \
                  touch /y 2>/dev/null || echo root read-only";
    let o = run_ctr(t, &["--read-only", r, "--", "sh", "-c", script], b"", &[]);
    assert_eq!(
        ok_out(&o),
        "/run ok\n/tmp ok\n/var/tmp ok\nroot read-only\n"
    );
    let o = run_ctr(
        t,
        &[
            "--read-only",
            "--read-only-tmpfs=false",
            r,
            "--",
            "sh",
            "-c",
            "touch /tmp/x 2>/dev/null || echo tmp read-only",
        ],
        b"",
        &[],
    );
    assert_eq!(ok_out(&o), "tmp read-only\n");
    // --tmpfs: a fresh tmpfs with podman's default flags and the options given; its files do
    // not reach the container layer.
    let upper = t.join("upper");
    let o = run_ctr(
        t,
        &[
            "--upper",
            upper.to_str().unwrap(),
            "--tmpfs",
            "/scratch:size=1m,mode=700",
            r,
            "--",
            "sh",
            "-c",
            "echo data > /scratch/f && grep ' /scratch ' /proc/mounts",
        ],
        b"",
        &[],
    );
    assert_eq!(
        ok_out(&o),
        "tmpfs /scratch tmpfs rw,nosuid,nodev,noexec,relatime,size=1024k,mode=700 0 0\n"
    );
    assert!(
        upper.join("scratch").is_dir(),
        "the mountpoint is made in the upper"
    );
    assert!(
        !upper.join("scratch/f").exists(),
        "a tmpfs file reached the upper"
    );
    let o = run_ctr(t, &["--tmpfs", "relative", r, "--", "true"], b"", &[]);
    assert_eq!(
        text(&o.stderr),
        "unionfuse run: --tmpfs relative: must be an absolute path\n"
    );
}

#[test]
fn run_work_dir_is_private_by_default_and_overlay_workdir_sets_it() {
    let dir = tempfile::tempdir().unwrap();
    let Some(root) = busybox_rootfs(dir.path()) else {
        return;
    };
    let r = root.to_str().unwrap();
    let t = dir.path();
    // TMPDIR on the upper's filesystem: the work dir is in the run's private directory.
    let upper = t.join("ctr");
    let o = run_ctr(
        t,
        &[
            "--upper",
            upper.to_str().unwrap(),
            r,
            "--",
            "sh",
            "-c",
            "echo x > /etc/f",
        ],
        b"",
        &[],
    );
    ok_out(&o);
    assert_eq!(std::fs::read(upper.join("etc/f")).unwrap(), b"x\n");
    let mut names: Vec<String> = std::fs::read_dir(t)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["ctr", "rootfs"],
        "something was left next to the upper"
    );
    // TMPDIR elsewhere: the default is next to the upper; where that cannot be made, the
    // message says which option helps, and --overlay-workdir does.
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let upper2 = t.join("ctr2");
    std::fs::write(t.join(".ctr2.unionfuse-work"), b"in the way").unwrap();
    let o = run_ctr(
        shm.path(),
        &["--upper", upper2.to_str().unwrap(), r, "--", "true"],
        b"",
        &[],
    );
    assert_eq!(o.status.code(), Some(125));
    let err = text(&o.stderr);
    assert!(
        err.trim_end()
            .ends_with("(give --overlay-workdir DIR, on the upper's filesystem)"),
        "{err}"
    );
    let work = t.join("mywork");
    let o = run_ctr(
        shm.path(),
        &[
            "--upper",
            upper2.to_str().unwrap(),
            "--overlay-workdir",
            work.to_str().unwrap(),
            r,
            "--",
            "sh",
            "-c",
            "echo y > /etc/f",
        ],
        b"",
        &[],
    );
    ok_out(&o);
    assert_eq!(std::fs::read(upper2.join("etc/f")).unwrap(), b"y\n");
    assert!(work.is_dir(), "--overlay-workdir was not used");
    // -w stays the container's working directory, as in podman.
    let o = run_ctr(
        t,
        &["-w", "/etc", r, "--", "sh", "-c", "echo $PWD"],
        b"",
        &[],
    );
    assert_eq!(ok_out(&o), "/etc\n");
}
