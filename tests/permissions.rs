//! Permissions: with `allow_other` (the default for root), an unprivileged user (uid/gid 65534 via
//! `setpriv`) can read, write, chmod, chown, unlink, link and set xattrs exactly where kernel
//! overlay lets them, on a copy of the same layers; setuid/setgid bits are dropped on write by
//! a non-owner as on ext4; and copy-up never widens permissions, not even for a moment: a
//! watcher polling the upper and the work dir during copy-ups of 0600 files owned by another
//! user never sees a wider mode or another owner. Needs root, /dev/fuse, setpriv and overlay.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{Daemon, as_nobody, within};
use common::{KernelOverlay, Stack, UnionMount, require_fuse};

/// setpriv exists and may switch to uid 65534 (as root, of the initial or a user namespace).
fn setpriv_available() -> bool {
    common::runs_in(
        &[common::Mode::Root, common::Mode::Userns],
        "switching to uid 65534 needs root (CAP_SETUID)",
    ) && std::process::Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

const NOBODY: u32 = 65534;

/// The layers: files and directories with every interesting owner/mode combination.
fn build_perm_lower(l: &Path) {
    common::write_file_owned(&l.join("secret"), b"secret", 0o600, 0, 0);
    common::write_file_owned(&l.join("pub_ro"), b"pub_ro", 0o644, 0, 0);
    common::write_file_owned(&l.join("pub_rw"), b"pub_rw", 0o666, 0, 0);
    common::write_file_owned(&l.join("mine"), b"mine", 0o644, NOBODY, NOBODY);
    common::write_file_owned(&l.join("other"), b"other", 0o644, 1000, 1000);
    common::write_file_owned(&l.join("suid"), b"suid", 0o4777, 0, 0);
    common::write_file_owned(&l.join("sgid"), b"sgid", 0o2777, 0, 0);
    common::write_file_owned(&l.join("both"), b"both", 0o6777, 1000, 1000);
    common::write_file_owned(&l.join("dir700/f"), b"f", 0o644, 0, 0);
    common::chown(&l.join("dir700"), 0, 0);
    common::sys::chmod(&l.join("dir700"), 0o700).unwrap();
    common::write_file_owned(&l.join("sticky/rootfile"), b"r", 0o666, 0, 0);
    common::sys::chmod(&l.join("sticky"), 0o1777).unwrap();
    common::write_file_owned(&l.join("ro_dir/x"), b"x", 0o666, 0, 0);
    common::sys::chmod(&l.join("ro_dir"), 0o755).unwrap();
    common::mkdir(&l.join("nobody_dir"), 0o755);
    common::chown(&l.join("nobody_dir"), NOBODY, NOBODY);
    common::write_file_owned(&l.join("nobody_dir/rootfile"), b"r", 0o644, 0, 0);
}

/// What the unprivileged user tries, one line of output per check: name, exit status, and
/// the resulting mode where that matters. `cd` into the root first so paths are relative.
const CHECKS: &str = r#"
c() { name=$1; shift; if "$@" >/dev/null 2>&1; then echo "$name: ok"; else echo "$name: denied"; fi; }
cd "$1" || exit 1
c read-secret cat secret
c read-pub cat pub_ro
c append-pub-ro sh -c 'echo x >> pub_ro'
c append-pub-rw sh -c 'echo x >> pub_rw'
c trunc-pub-ro truncate -s 0 pub_ro
c chmod-not-owner chmod 777 pub_rw
c chmod-owner chmod 600 mine
c chown-other chown 65534 other
c chgrp-own-to-root chgrp 0 mine
c unlink-in-root-dir rm -f pub_ro
c mkdir-in-root-dir mkdir newdir
c list-dir700 ls dir700
c read-dir700 cat dir700/f
c unlink-sticky-other rm -f sticky/rootfile
c create-sticky sh -c 'echo m > sticky/m'
c unlink-sticky-own rm -f sticky/m
c append-ro-dir sh -c 'echo x >> ro_dir/x'
c unlink-ro-dir rm -f ro_dir/x
c rename-ro-dir mv ro_dir/x ro_dir/y
c unlink-root-file-in-own-dir rm -f nobody_dir/rootfile
c utimes-explicit-not-owner touch -d 2000-01-01 pub_rw
c utimes-now-writable touch pub_rw
c xattr-writable setfattr -n user.x -v 1 pub_rw
c xattr-readonly setfattr -n user.x -v 1 pub_ro
c xattr-trusted setfattr -n trusted.x -v 1 pub_rw
c hardlink-not-owned ln pub_ro link_pub
c hardlink-own ln mine link_mine
c write-suid sh -c 'echo x >> suid'
c write-sgid sh -c 'echo x >> sgid'
c write-both sh -c 'echo x >> both'
echo "suid-mode: $(stat -c %a suid)"
echo "sgid-mode: $(stat -c %a sgid)"
echo "both-mode: $(stat -c %a both)"
echo "pub_rw: $(stat -c '%a %u %g' pub_rw)"
echo "mine: $(stat -c '%a %u %g' mine)"
"#;

fn run_checks(root: &Path) -> String {
    let out = as_nobody(&format!(
        "set -- '{}'; {CHECKS}",
        root.display().to_string().replace('\'', "'\\''")
    ));
    assert!(
        out.status.success(),
        "check script failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Let uid 65534 reach the stack's directories (temp dirs are 0700).
fn open_up(stack: &Stack) {
    fs::set_permissions(stack.base.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn unprivileged_user_gets_what_kernel_overlay_allows() {
    if !require_fuse() || !setpriv_available() || !common::overlay_available() {
        return;
    }
    let stack = Stack::new(1);
    build_perm_lower(stack.lower(0));
    open_up(&stack);
    let kstack = stack.duplicate();
    open_up(&kstack);
    // The same checks on a plain ext4 copy: setuid/setgid dropping as on ext4.
    let plain = stack.base.path().join("plain");
    common::copy_tree(stack.lower(0), &plain);
    let before = stack.lower_digests();
    let u = {
        let m = UnionMount::with_args(&stack, &["-o", "allow_other"]);
        let mnt = m.mnt().to_path_buf();
        within(Duration::from_secs(60), "permission checks", move || {
            run_checks(&mnt)
        })
    };
    stack.assert_lowers_unchanged(&before);
    let k = {
        let k = KernelOverlay::new(&kstack);
        run_checks(k.mnt())
    };
    let e = run_checks(&plain);
    eprintln!("unionfuse:\n{u}");
    let diff: Vec<String> = u
        .lines()
        .zip(k.lines())
        .filter(|(a, b)| a != b)
        .map(|(a, b)| format!("unionfuse {a:?} vs kernel {b:?}"))
        .collect();
    assert!(
        diff.is_empty() && u.lines().count() == k.lines().count(),
        "permission checks differ from kernel overlay:\n{}",
        diff.join("\n")
    );
    for l in u.lines().filter(|l| l.contains("-mode:")) {
        assert!(e.lines().any(|x| x == l), "{l}: differs from ext4:\n{e}");
    }
    assert!(
        u.contains("suid-mode: 777"),
        "setuid kept after a non-owner write:\n{u}"
    );
    assert!(u.contains("read-secret: denied"), "{u}");
}

/// The watcher: polls the target names in the upper and everything in WORKDIR/work.
fn watch(
    upper_dir: PathBuf,
    work: PathBuf,
    names: Vec<String>,
    stop: Arc<AtomicBool>,
) -> (u64, u64, Vec<String>) {
    let (mut seen_upper, mut seen_work) = (0u64, 0u64);
    let mut bad = Vec::new();
    while !stop.load(Ordering::Relaxed) && bad.len() < 10 {
        for n in &names {
            if let Ok(st) = fs::symlink_metadata(upper_dir.join(n)) {
                seen_upper += 1;
                if st.mode() & 0o7777 != 0o600 || st.uid() != 1000 || st.gid() != 1000 {
                    bad.push(format!(
                        "upper {n}: mode {:o} owner {}:{}",
                        st.mode() & 0o7777,
                        st.uid(),
                        st.gid()
                    ));
                }
            }
        }
        if let Ok(st) = fs::symlink_metadata(&work)
            && st.mode() & 0o077 != 0
        {
            bad.push(format!("work dir mode {:o}", st.mode() & 0o7777));
        }
        if let Ok(rd) = fs::read_dir(&work) {
            for e in rd.flatten() {
                if let Ok(st) = fs::symlink_metadata(e.path()) {
                    seen_work += 1;
                    // Never more than the final 0600, and readable only by root or the owner.
                    if st.is_file() && st.mode() & 0o7777 & !0o600 != 0 {
                        bad.push(format!(
                            "work {:?}: mode {:o} owner {}",
                            e.file_name(),
                            st.mode() & 0o7777,
                            st.uid()
                        ));
                    }
                }
            }
        }
    }
    (seen_upper, seen_work, bad)
}

#[test]
fn copy_up_never_widens_permissions_even_for_a_moment() {
    if !require_fuse() || !common::can_chown() {
        return;
    }
    let stack = Stack::new(1);
    let files = 12;
    for i in 0..files {
        common::write_file_owned(
            &stack.lower(0).join(format!("w/p{i}")),
            &common::pattern(8 << 20, i),
            0o600,
            1000,
            1000,
        );
    }
    let before = stack.lower_digests();
    let work = stack.new_workdir();
    let log = stack.base.path().join("perm.log");
    let d = Daemon::start(
        &[stack.lower(0)],
        Some(stack.upper()),
        Some(&work),
        &stack.mnt,
        &["-o", "allow_other"],
        &log,
    );
    let stop = Arc::new(AtomicBool::new(false));
    let names: Vec<String> = (0..files).map(|i| format!("p{i}")).collect();
    let watcher = {
        let (u, w, s) = (stack.upper().join("w"), work.join("work"), stop.clone());
        std::thread::spawn(move || watch(u, w, names, s))
    };
    let mnt = stack.mnt.clone();
    within(Duration::from_secs(120), "copy-ups", move || {
        for i in 0..files {
            // Root opens for write: copy-up (the daemon builds the copy, then renames it in).
            let f = fs::OpenOptions::new()
                .write(true)
                .open(mnt.join(format!("w/p{i}")))
                .unwrap();
            drop(f);
        }
        // And one copy-up triggered by chmod to a narrower mode, one by an xattr.
        common::sys::lsetxattr(&mnt.join("w/p0"), "user.k", b"v").unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let (seen_upper, seen_work, bad) = watcher.join().unwrap();
    eprintln!("watcher: {seen_upper} upper observations, {seen_work} work-dir observations");
    assert!(bad.is_empty(), "wider permissions observed: {bad:#?}");
    for i in 0..files {
        let st = fs::metadata(stack.upper().join(format!("w/p{i}"))).unwrap();
        assert_eq!(
            (st.mode() & 0o7777, st.uid(), st.gid(), st.len()),
            (0o600, 1000, 1000, 8 << 20)
        );
    }
    let wst = fs::metadata(work.join("work")).unwrap();
    assert_eq!(wst.mode() & 0o777, 0o700, "WORKDIR/work mode");
    // The unprivileged user can't read the copied-up files through the mount either.
    fs::set_permissions(stack.base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    if setpriv_available() {
        let out = as_nobody(&format!("cat '{}'", stack.mnt.join("w/p1").display()));
        assert!(!out.status.success(), "nobody read a 0600 file of uid 1000");
    }
    d.unmount();
    stack.assert_lowers_unchanged(&before);
}

/// The daemon run by an ordinary user (uid 65534, no capabilities, no user namespace, mounted
/// through fusermount3): appending, creating and truncating work, and write's privilege drop
/// (setuid gone after a write) works without CAP_SETFCAP or CAP_FOWNER.
#[test]
fn daemon_run_by_an_ordinary_user_writes_appends_and_truncates() {
    // Mode `user` runs every mounted suite this way.
    if !common::needs_initial_root("starts the daemon as another user and opens /dev/fuse to it")
        || !require_fuse()
        || !setpriv_available()
    {
        return;
    }
    let Some(_fuse) = common::rootless::require_dev_fuse_for_users() else {
        return;
    };
    if common::rootless::which("fusermount3").is_none() {
        common::skip_or_fail_in_ci("fusermount3 is not installed (package fuse3)");
        return;
    }
    let stack = Stack::new(1);
    common::write_file(&stack.lower(0).join("a"), b"a\n", 0o644);
    common::write_file(&stack.lower(0).join("empty"), b"", 0o644);
    common::write_file(&stack.lower(0).join("suid"), b"s\n", 0o4755);
    let work = stack.new_workdir();
    common::rootless::chown_tree(stack.base.path(), NOBODY);
    // After the chown, which clears setuid.
    common::chmod(&stack.lower(0).join("suid"), 0o4755);
    open_up(&stack);
    let before = stack.lower_digests();
    let bin = common::mount::binary();
    let (l, u, m, w) = (stack.lower(0), stack.upper(), &stack.mnt, &work);
    let _unmount = common::mount::UnmountOnDrop(m.clone());
    let out = as_nobody(&format!(
        "set -e; '{bin}' mount '{}' '{}' '{}' --workdir '{}'
         cd '{}'
         echo x >> a; echo new > b; truncate -s 10 empty; echo y >> suid
         cat a b; stat -c '%n %s %a' empty suid",
        l.display(),
        u.display(),
        m.display(),
        w.display(),
        m.display()
    ));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "as uid 65534: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text, "a\nx\nnew\nempty 10 644\nsuid 4 755\n");
    // The upper holds the results, owned by the user who ran the daemon.
    let st = fs::metadata(u.join("a")).unwrap();
    assert_eq!((st.len(), st.uid()), (4, NOBODY));
    assert_eq!(fs::read(u.join("b")).unwrap(), b"new\n");
    drop(_unmount);
    stack.assert_lowers_unchanged(&before);
}

/// `cat` each of `names` under `root` as uid 65534: "NAME: ok" or "NAME: " plus the error.
fn cat_as_nobody(root: &Path, names: &[&str]) -> String {
    let mut script = String::new();
    for n in names {
        script += &format!(
            "if out=$(cat '{}' 2>&1 >/dev/null); then echo '{n}: ok'; else echo \"{n}: ${{out##*: }}\"; fi\n",
            root.join(n).display()
        );
    }
    String::from_utf8(as_nobody(&script).stdout).unwrap()
}

/// As root, `unionfuse mount` serves every user as kernel overlay does (allow_other with
/// default_permissions by default): the modes decide. `-o noallow_other` keeps the mount to
/// its owner: everyone else gets EACCES on everything.
#[test]
fn root_mount_serves_other_users_by_mode_unless_noallow_other() {
    if !require_fuse() || !setpriv_available() {
        return;
    }
    let stack = Stack::new(1);
    build_perm_lower(stack.lower(0));
    open_up(&stack);
    let names = ["pub_ro", "secret"];
    let expected = "pub_ro: ok\nsecret: Permission denied\n";
    {
        let m = UnionMount::new(&stack);
        assert_eq!(cat_as_nobody(m.mnt(), &names), expected, "default mount");
    }
    if common::overlay_available() {
        let kstack = stack.duplicate();
        open_up(&kstack);
        let k = KernelOverlay::new(&kstack);
        assert_eq!(cat_as_nobody(k.mnt(), &names), expected, "kernel overlay");
    }
    let m = UnionMount::with_args(&stack, &["-o", "noallow_other"]);
    assert_eq!(
        cat_as_nobody(m.mnt(), &names),
        "pub_ro: Permission denied\nsecret: Permission denied\n",
        "-o noallow_other"
    );
    // The owner (root) still uses it.
    assert_eq!(fs::read(m.path("secret")).unwrap(), b"secret");
}
