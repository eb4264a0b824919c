//! Mounted tests of the daemon's life: bad arguments are refused naming the path, SIGTERM and an
//! external umount end it with status 0, nothing of unionfuse appears in the upper, and a
//! panicking handler answers EIO while the mount keeps serving.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::view::*;
use common::*;

/// Run `unionfuse ARGS --foreground`; it must exit non-zero within 10 s without mounting and
/// name `path` on stderr. Cleans up any mount it made anyway.
fn expect_rejected(args: &[&OsStr], mnt: &Path, path: &Path) {
    let mounted_before = common::mount::is_mounted(mnt);
    let mut child = std::process::Command::new(common::mount::binary())
        .args(args)
        .arg("--foreground")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn unionfuse");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break Some(st);
        }
        if start.elapsed() > Duration::from_secs(10) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let cleanup = |child: &mut std::process::Child| {
        while !mounted_before && common::mount::is_mounted(mnt) {
            if !common::mount::force_unmount(mnt) {
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let Some(status) = status else {
        cleanup(&mut child);
        panic!(
            "unionfuse {args:?} did not exit: it should have rejected {}",
            path.display()
        );
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("read stderr");
    cleanup(&mut child);
    assert!(
        !status.success(),
        "unionfuse {args:?} exited 0; stderr: {stderr}"
    );
    let shown = path.display().to_string();
    assert!(
        stderr.contains(&shown),
        "stderr does not name {shown}: {stderr:?}"
    );
}

fn args_of(
    s: &Stack,
    lowers: &[&Path],
    upper: Option<&Path>,
    mnt: &Path,
) -> Vec<std::ffi::OsString> {
    let joined = lowers
        .iter()
        .map(|l| l.as_os_str().to_owned())
        .collect::<Vec<_>>()
        .join(OsStr::new(":"));
    let mut v = vec!["mount".into(), joined];
    v.extend(upper.map(|u| u.as_os_str().to_owned()));
    v.push(mnt.into());
    v.push("--workdir".into());
    v.push(s.new_workdir().into());
    v
}

fn run_rejected(s: &Stack, lowers: &[&Path], upper: Option<&Path>, mnt: &Path, bad: &Path) {
    let args = args_of(s, lowers, upper, mnt);
    let refs: Vec<&OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    expect_rejected(&refs, mnt, bad);
}

#[test]
fn bad_arguments_exit_nonzero_naming_the_path() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let (l, u, mnt) = (s.lower(0), s.upper(), s.mnt.as_path());
    let missing = s.base.path().join("no-such-layer");
    run_rejected(&s, &[&missing], Some(u), mnt, &missing);
    run_rejected(&s, &[l, &missing], Some(u), mnt, &missing);
    let file = s.base.path().join("a-file");
    write_file(&file, b"x", 0o644);
    run_rejected(&s, &[&file], Some(u), mnt, &file);
    run_rejected(&s, &[l], Some(&file), mnt, &file);
    let inside_lower = l.join("up");
    mkdir(&inside_lower, 0o755);
    run_rejected(&s, &[l], Some(&inside_lower), mnt, &inside_lower);
    let mnt_in_layer = u.join("m");
    mkdir(&mnt_in_layer, 0o755);
    run_rejected(&s, &[l], Some(u), &mnt_in_layer, &mnt_in_layer);
    let mnt_in_lower = l.join("m");
    mkdir(&mnt_in_lower, 0o755);
    run_rejected(&s, &[l], Some(u), &mnt_in_lower, &mnt_in_lower);
}

#[test]
fn mountpoint_that_is_already_a_mount_is_rejected() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let other = Stack::new(1);
    // Any mount will do; one of ours works in every mode.
    let _busy = UnionMount::new(&other);
    let mnt = other.mnt.as_path();
    run_rejected(&s, &[s.lower(0)], Some(s.upper()), mnt, mnt);
}

#[test]
fn sigterm_to_foreground_daemon_unmounts_and_exits_zero() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let s = Stack::new(1);
        write_file(&s.lower(0).join("f"), b"x", 0o644);
        let mut m = UnionMount::new(&s);
        assert_eq!(read(&m.path("f")), b"x");
        let pid = m.pid().expect("daemon pid") as libc::pid_t;
        // SAFETY: signalling our own child.
        must(sys::ck(unsafe { libc::kill(pid, sig) }), "kill");
        let st = m.wait_exit(Duration::from_secs(10));
        let st = st.unwrap_or_else(|| panic!("daemon did not exit on signal {sig}"));
        assert!(
            st.success(),
            "daemon exit status after signal {sig}: {st}\n{}",
            m.log_text()
        );
        assert!(
            !common::mount::is_mounted(&s.mnt),
            "still mounted after signal {sig}"
        );
    }
}

#[test]
fn external_umount_makes_foreground_daemon_exit_zero() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let m = UnionMount::new(&s);
    let st = m.unmount().expect("daemon exit status");
    assert!(st.success(), "daemon exit status after umount: {st}");
}

#[test]
fn nothing_of_unionfuse_appears_in_upper() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    write_file(&s.lower(0).join("g"), b"x", 0o644);
    mounted(&s, |m| {
        must(sys::chmod(&m.path("d/f"), 0o600), "chmod");
        must(sys::unlink(&m.path("g")), "unlink");
        write_file(&m.path("new"), b"n", 0o644);
    });
    let upper = Tree::snapshot(s.upper(), SnapOpts::VIEW);
    let want: Vec<PathBuf> = ["", "d", "d/f", "g", "new"]
        .iter()
        .map(PathBuf::from)
        .collect();
    assert_eq!(
        upper.paths(),
        want.iter().map(PathBuf::as_path).collect::<Vec<_>>()
    );
    let xattrs = Tree::snapshot(s.upper(), SnapOpts::DISK);
    for (p, e) in &xattrs.entries {
        for (name, _) in &e.xattrs {
            assert!(
                name.starts_with("trusted.overlay.") || name.starts_with("user.overlay."),
                "{}: unexpected xattr {name} in upper",
                tree::show(p)
            );
        }
    }
}

/// A panic in a request handler answers that request with EIO and nothing else: the worker
/// thread survives, so more panics than there are workers still leave the mount serving.
#[test]
#[cfg(feature = "fault-injection")]
fn a_panicking_handler_answers_eio_and_the_mount_keeps_serving() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let m = UnionMount::with_args(&s, &["-o", "debug_panic_on=boom"]);
    for i in 0..20 {
        expect_errno(
            sys::lstat(&m.path("boom")),
            libc::EIO,
            &format!("lookup #{i} of boom"),
        );
    }
    std::fs::write(m.path("after"), b"still here").expect("create after the panics");
    assert_eq!(read(&m.path("after")), b"still here");
    assert!(m.log_text().contains("panicked"), "the panic is logged");
}
