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
    args.truncate(args.len() - 2); // the mount_args' own --workdir
    args.extend(["--workdir".into(), shm.path().into()]);
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
