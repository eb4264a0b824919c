//! Faults and load: the daemon SIGKILLed in the middle of copy-up, rename, unlink and
//! create (then remounted: no partial file, no lost file, lowers untouched, work dir emptied);
//! a full upper (ENOSPC, never EIO, no partial copy, recovery once space is freed; the same for
//! xattr space); mixed load from more threads than cores (cross-directory renames, readdir
//! while names are unlinked, racing copy-ups) with a hang timeout; and the never-hang rules
//! (layers below the mountpoint refused, `umount -l` with a process inside, a killed client).
//!
//! Long variants: `UNIONFUSE_CRASH_ITERS` (default 20 per scenario), `UNIONFUSE_LOAD_SECS`
//! (default 12; scripts/soak.sh runs 600), `UNIONFUSE_CRASH_MIB` (default 256).
//! Needs root and /dev/fuse (see `common::require_fuse`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::sys::io_errno;
use common::{Daemon, Rng, Stack, UnionMount, env_num, is_whiteout, pattern, require_fuse, within};

/// Entries of `WORK/work` (the daemon's scratch dir).
fn work_leftovers(work: &Path) -> Vec<PathBuf> {
    match fs::read_dir(work.join("work")) {
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Compare a file with expected bytes without holding both in memory twice.
fn same_content(p: &Path, want: &[u8]) -> bool {
    let Ok(mut f) = fs::File::open(p) else {
        return false;
    };
    let mut buf = vec![0u8; 8 << 20];
    let mut off = 0usize;
    loop {
        let n = match f.read(&mut buf) {
            Ok(n) => n,
            Err(_) => return false,
        };
        if n == 0 {
            return off == want.len();
        }
        if off + n > want.len() || buf[..n] != want[off..off + n] {
            return false;
        }
        off += n;
    }
}

// ===== crash safety =======================================================================

/// One crash scenario: a layer stack, an operation run through the mount until the daemon is
/// killed, and an on-disk check of the upper after the crash.
struct Crash<'a> {
    name: &'a str,
    /// Reset the upper (and build what the op needs in it) before each iteration.
    reset_upper: &'a dyn Fn(&Path),
    /// The operation; runs on its own thread and returns when the mount dies.
    op: fn(PathBuf),
    /// Check the upper on disk after the crash (no mount).
    check_upper: &'a dyn Fn(&Path, &str),
    /// Check the view through a fresh mount.
    check_view: &'a dyn Fn(&Path, &str),
    /// Max delay before the kill, ms; every 4th iteration uses `long_ms` instead.
    short_ms: u64,
    long_ms: u64,
}

fn crash_loop(stack: &Stack, c: &Crash) {
    let iters = env_num("UNIONFUSE_CRASH_ITERS", 20);
    let mut rng = Rng::from_env(c.name);
    let before = stack.lower_digests();
    let lowers: Vec<&Path> = stack.lowers.iter().map(PathBuf::as_path).collect();
    let upper = stack.upper();
    let work = stack.new_workdir();
    let mut leftovers_seen = 0;
    for i in 0..iters {
        (c.reset_upper)(upper);
        let log = stack.base.path().join(format!("{}-{i}.log", c.name));
        let mut d = Daemon::start(&lowers, Some(upper), Some(&work), &stack.mnt, &[], &log);
        let mnt = stack.mnt.clone();
        let op = c.op;
        let h = std::thread::spawn(move || op(mnt));
        let max = if i % 4 == 3 { c.long_ms } else { c.short_ms };
        std::thread::sleep(Duration::from_millis(rng.below(max + 1)));
        d.kill9();
        let what = format!("{} iteration {i}", c.name);
        within(Duration::from_secs(30), &what, move || {
            let _ = h.join();
        });
        (c.check_upper)(upper, &what);
        if !work_leftovers(&work).is_empty() {
            leftovers_seen += 1;
        }
        // The next mount cleans its own leftovers and shows a consistent view.
        let log = stack.base.path().join(format!("{}-{i}-check.log", c.name));
        let d = Daemon::start(&lowers, Some(upper), Some(&work), &stack.mnt, &[], &log);
        let left = work_leftovers(&work);
        assert!(
            left.is_empty(),
            "{what}: the next mount left {left:?} in WORKDIR/work"
        );
        (c.check_view)(&stack.mnt, &what);
        d.unmount();
    }
    eprintln!(
        "{}: {iters} kills, {leftovers_seen} left temporary files in the work dir (all cleaned)",
        c.name
    );
    stack.assert_lowers_unchanged(&before);
}

fn clear_dir(p: &Path) {
    for e in fs::read_dir(p).unwrap().flatten() {
        let path = e.path();
        if e.file_type().unwrap().is_dir() {
            fs::remove_dir_all(&path).unwrap();
        } else {
            fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn crash_during_copy_up_of_a_large_file_leaves_no_partial_copy() {
    if !require_fuse() {
        return;
    }
    let mib = env_num("UNIONFUSE_CRASH_MIB", 256) as usize;
    let stack = Stack::new(1);
    let data = Arc::new(pattern(mib << 20, 7));
    common::write_file(&stack.lower(0).join("dir/big"), &data, 0o640);
    common::write_file(&stack.lower(0).join("dir/other"), b"other", 0o644);
    let d2 = data.clone();
    crash_loop(
        &stack,
        &Crash {
            name: "copy-up",
            reset_upper: &clear_dir,
            op: |mnt| {
                // Opening for write copies up (the parent first), even with nothing written.
                let _ = OpenOptions::new().write(true).open(mnt.join("dir/big"));
            },
            check_upper: &move |upper, what| {
                let dir = upper.join("dir");
                if let Ok(st) = fs::symlink_metadata(&dir) {
                    assert!(st.is_dir(), "{what}: upper dir is not a directory");
                }
                let big = dir.join("big");
                if fs::symlink_metadata(&big).is_ok() {
                    let st = fs::metadata(&big).unwrap();
                    assert_eq!(st.mode() & 0o7777, 0o640, "{what}: copy has a wrong mode");
                    assert!(
                        same_content(&big, &d2),
                        "{what}: PARTIAL copy in the upper (size {} of {})",
                        st.len(),
                        d2.len()
                    );
                }
                for e in common::list_rel(upper) {
                    assert!(
                        e == Path::new("dir") || e == Path::new("dir/big"),
                        "{what}: unexpected {} in the upper",
                        e.display()
                    );
                }
            },
            check_view: &move |mnt, what| {
                assert!(
                    same_content(&mnt.join("dir/big"), &data),
                    "{what}: dir/big reads wrong"
                );
                assert_eq!(fs::read(mnt.join("dir/other")).unwrap(), b"other");
            },
            short_ms: 50,
            long_ms: 3000,
        },
    );
}

const RENAME_FILES: usize = 200;

fn rename_file_body(j: usize) -> Vec<u8> {
    format!("file {j} of the renamed directory\n")
        .repeat(j % 7 + 1)
        .into_bytes()
}

#[test]
fn crash_during_directory_renames_loses_no_file() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    // A lower file renamed too (copy-up + whiteout), next to upper-only directories.
    common::write_file(
        &stack.lower(0).join("lowerfile"),
        &pattern(1 << 20, 3),
        0o644,
    );
    let check = |root: &Path, what: &str, on_disk: bool| {
        let a = root.join("a").exists();
        let b = root.join("b").exists();
        assert!(
            a ^ b,
            "{what}: a exists {a}, b exists {b}: want exactly one"
        );
        let dir = root.join(if a { "a" } else { "b" });
        for j in 0..RENAME_FILES {
            let p = dir.join(format!("f{j}"));
            assert_eq!(
                fs::read(&p).unwrap_or_else(|e| panic!("{what}: {}: {e}", p.display())),
                rename_file_body(j),
                "{what}: {} wrong",
                p.display()
            );
        }
        // The lower file: under one of its names, complete; never lost.
        let names = ["lowerfile", "moved"];
        let want = pattern(1 << 20, 3);
        let mut complete = 0;
        for n in names {
            let p = root.join(n);
            if on_disk && is_whiteout(&p) {
                continue;
            }
            if fs::symlink_metadata(&p).is_ok() {
                assert!(same_content(&p, &want), "{what}: {n} is a partial copy");
                complete += 1;
            }
        }
        if !on_disk {
            assert!(complete >= 1, "{what}: the renamed lower file was lost");
            assert!(
                complete == 1,
                "{what}: the renamed lower file shows under both names"
            );
        }
    };
    crash_loop(
        &stack,
        &Crash {
            name: "dir-rename",
            reset_upper: &|upper| {
                clear_dir(upper);
                for j in 0..RENAME_FILES {
                    common::write_file(&upper.join(format!("a/f{j}")), &rename_file_body(j), 0o644);
                }
            },
            op: |mnt| {
                let _ = fs::rename(mnt.join("lowerfile"), mnt.join("moved"));
                for k in 0.. {
                    let (from, to) = if k % 2 == 0 { ("a", "b") } else { ("b", "a") };
                    if fs::rename(mnt.join(from), mnt.join(to)).is_err() {
                        return;
                    }
                    let (from, to) = if k % 2 == 0 {
                        ("moved", "lowerfile")
                    } else {
                        ("lowerfile", "moved")
                    };
                    if fs::rename(mnt.join(from), mnt.join(to)).is_err() {
                        return;
                    }
                }
            },
            check_upper: &move |upper, what| check(upper, what, true),
            check_view: &move |mnt, what| check(mnt, what, false),
            short_ms: 50,
            long_ms: 500,
        },
    );
}

const UNLINK_FILES: usize = 100;

fn unlink_body(j: usize) -> Vec<u8> {
    pattern(64 << 10, 1000 + j as u64)
}

#[test]
fn crash_during_unlink_over_lower_files_resurrects_and_loses_nothing() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    for j in 0..UNLINK_FILES {
        common::write_file(
            &stack.lower(0).join(format!("u/f{j}")),
            &unlink_body(j),
            0o644,
        );
    }
    crash_loop(
        &stack,
        &Crash {
            name: "unlink",
            reset_upper: &clear_dir,
            op: |mnt| {
                for j in 0..UNLINK_FILES {
                    // Half of them are written first (copy-up, then unlink of an upper copy).
                    if j % 2 == 0
                        && OpenOptions::new()
                            .append(true)
                            .open(mnt.join(format!("u/f{j}")))
                            .is_err()
                    {
                        return;
                    }
                    if fs::remove_file(mnt.join(format!("u/f{j}"))).is_err() {
                        return;
                    }
                }
            },
            check_upper: &|upper, what| {
                let u = upper.join("u");
                let Ok(rd) = fs::read_dir(&u) else { return };
                for e in rd.flatten() {
                    let p = e.path();
                    if is_whiteout(&p) {
                        continue;
                    }
                    let name = e.file_name();
                    let j: usize = name.to_str().unwrap()[1..]
                        .parse()
                        .unwrap_or_else(|_| panic!("{what}: stray {} in the upper", p.display()));
                    assert!(
                        same_content(&p, &unlink_body(j)),
                        "{what}: partial copy {}",
                        p.display()
                    );
                }
            },
            check_view: &|mnt, what| {
                let listed: BTreeSet<String> = fs::read_dir(mnt.join("u"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().into_string().unwrap())
                    .collect();
                let mut gone = 0;
                for j in 0..UNLINK_FILES {
                    let n = format!("f{j}");
                    match fs::read(mnt.join("u").join(&n)) {
                        Ok(d) => {
                            assert_eq!(d, unlink_body(j), "{what}: {n} reads wrong");
                            assert!(listed.contains(&n), "{what}: {n} readable, not listed");
                        }
                        Err(e) => {
                            assert_eq!(io_errno(&e), libc::ENOENT, "{what}: {n}: {e}");
                            assert!(!listed.contains(&n), "{what}: {n} listed, not readable");
                            gone += 1;
                        }
                    }
                }
                // Unlinks happen in order: the deleted ones are a prefix (no resurrection,
                // no lost file further on).
                for j in 0..gone {
                    assert!(
                        !mnt.join(format!("u/f{j}")).exists(),
                        "{what}: f{j} is back although f{} is gone",
                        gone - 1
                    );
                }
            },
            short_ms: 50,
            long_ms: 400,
        },
    );
}

#[test]
fn crash_during_creates_leaves_no_torn_file() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    common::write_file(&stack.lower(0).join("c/keep"), b"keep", 0o644);
    let body = |j: usize| format!("created {j}\n").repeat(300).into_bytes();
    crash_loop(
        &stack,
        &Crash {
            name: "create",
            reset_upper: &clear_dir,
            op: |mnt| {
                for j in 0..2000 {
                    let Ok(mut f) = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(mnt.join(format!("c/n{j}")))
                    else {
                        return;
                    };
                    if f.write_all(&format!("created {j}\n").repeat(300).into_bytes())
                        .is_err()
                    {
                        return;
                    }
                }
            },
            check_upper: &move |upper, what| {
                let c = upper.join("c");
                let Ok(rd) = fs::read_dir(&c) else { return };
                for e in rd.flatten() {
                    let name = e.file_name().into_string().unwrap();
                    let p = e.path();
                    let j: usize = name[1..]
                        .parse()
                        .unwrap_or_else(|_| panic!("{what}: stray {} in the upper", p.display()));
                    let st = fs::symlink_metadata(&p).unwrap();
                    assert!(st.is_file(), "{what}: {name} is not a regular file");
                    assert_eq!(st.mode() & 0o777, 0o600, "{what}: {name} mode");
                    // The writer's single write may not have happened; never a torn file.
                    let d = fs::read(&p).unwrap();
                    assert!(
                        d.is_empty() || d == body(j),
                        "{what}: {name} has {} bytes",
                        d.len()
                    );
                }
            },
            check_view: &|mnt, what| {
                assert_eq!(fs::read(mnt.join("c/keep")).unwrap(), b"keep", "{what}");
                // Every name is listed once and is readable.
                let names: Vec<_> = fs::read_dir(mnt.join("c"))
                    .unwrap()
                    .map(|e| e.unwrap().file_name())
                    .collect();
                let set: BTreeSet<_> = names.iter().collect();
                assert_eq!(set.len(), names.len(), "{what}: duplicate names");
                for n in &names {
                    fs::read(mnt.join("c").join(n)).unwrap();
                }
            },
            short_ms: 50,
            long_ms: 300,
        },
    );
}

// ===== full disk ==========================================================================

/// A small filesystem mounted on `dir` for the life of the guard.
struct SmallFs {
    dir: PathBuf,
}

impl SmallFs {
    fn tmpfs(dir: &Path, size: &str) -> SmallFs {
        fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(st.success(), "mount tmpfs");
        SmallFs {
            dir: dir.to_path_buf(),
        }
    }

    /// An ext4 image with 1 KiB blocks on a loop device (xattrs limited to one 1 KiB block).
    fn ext4(img: &Path, dir: &Path, size: &str) -> Option<SmallFs> {
        fs::create_dir_all(dir).unwrap();
        let ok = Command::new("truncate")
            .args(["-s", size])
            .arg(img)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new("mkfs.ext4")
                .args(["-q", "-F", "-b", "1024"])
                .arg(img)
                .status()
                .is_ok_and(|s| s.success())
            && Command::new("mount")
                .args(["-o", "loop"])
                .arg(img)
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot make an ext4 loop mount (mkfs.ext4 or loop devices missing)");
            return None;
        }
        Some(SmallFs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        common::mount::force_unmount(&self.dir);
    }
}

/// Write `data` at the end of a new file until ENOSPC; returns the errno seen.
fn fill(p: &Path) -> i32 {
    let mut f = fs::File::create(p).unwrap();
    let block = vec![0x5au8; 1 << 20];
    loop {
        if let Err(e) = f.write_all(&block).and_then(|_| f.sync_all()) {
            return io_errno(&e);
        }
    }
}

#[test]
fn full_upper_gives_enospc_and_recovers() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::readonly(1);
    let lower = stack.lower(0);
    let big = pattern(32 << 20, 11);
    common::write_file(&lower.join("d/big"), &big, 0o644);
    common::write_file(&lower.join("d/small"), &pattern(256 << 10, 12), 0o644);
    common::write_file(&lower.join("d/later2"), &pattern(1 << 20, 13), 0o644);
    let before = stack.lower_digests();
    let small = SmallFs::tmpfs(&stack.base.path().join("small"), "16m");
    let upper = small.dir.join("upper");
    let work = small.dir.join("work");
    fs::create_dir_all(&upper).unwrap();
    let log = stack.base.path().join("enospc.log");
    let d = Daemon::start(&[lower], Some(&upper), Some(&work), &stack.mnt, &[], &log);
    let m = stack.mnt.clone();

    // 1. A copy-up larger than the upper: ENOSPC to the writer, nothing partial left.
    let e = OpenOptions::new()
        .write(true)
        .open(m.join("d/big"))
        .expect_err("copy-up of 32 MiB into a 16 MiB upper");
    assert_eq!(io_errno(&e), libc::ENOSPC, "copy-up error: {e}");
    assert!(
        !upper.join("d/big").exists(),
        "partial copy left in the upper"
    );
    assert_eq!(work_leftovers(&work), Vec::<PathBuf>::new(), "work dir");
    assert!(same_content(&m.join("d/big"), &big), "lower view changed");

    // 2. The mount keeps working: a smaller copy-up fits.
    OpenOptions::new()
        .append(true)
        .open(m.join("d/small"))
        .unwrap()
        .write_all(b"tail")
        .unwrap();

    // 3. Filled up by a writer through the mount: ENOSPC (never EIO), then copy-up fails with
    //    ENOSPC too, then works once the filler is gone.
    let e = fill(&m.join("filler"));
    assert_eq!(e, libc::ENOSPC, "writer filling the upper got errno {e}");
    match OpenOptions::new().write(true).open(m.join("d/later2")) {
        Err(e) => assert_eq!(io_errno(&e), libc::ENOSPC, "copy-up on a full upper: {e}"),
        Ok(_) => panic!("copy-up of 1 MiB succeeded on a full upper"),
    }
    assert!(!upper.join("d/later2").exists(), "partial copy");
    assert_eq!(work_leftovers(&work), Vec::<PathBuf>::new(), "work dir");
    fs::remove_file(m.join("filler")).unwrap();
    let f = OpenOptions::new()
        .write(true)
        .open(m.join("d/later2"))
        .expect("copy-up after space was freed");
    f.write_all_at(b"X", 0).unwrap();
    drop(f);
    let mut want = pattern(1 << 20, 13);
    want[0] = b'X';
    assert!(same_content(&upper.join("d/later2"), &want));
    fs::write(m.join("after"), b"works").unwrap();
    assert_eq!(fs::read(m.join("after")).unwrap(), b"works");
    d.unmount();
    drop(small);
    stack.assert_lowers_unchanged(&before);
}

#[test]
fn full_xattr_space_gives_enospc_like_the_kernel() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::readonly(1);
    let lower = stack.lower(0);
    // 3000 bytes of xattr fit a 4 KiB-block ext4 lower but not a 1 KiB-block upper.
    common::write_file(&lower.join("fat"), b"data", 0o644);
    common::set_xattr(&lower.join("fat"), "user.big", &vec![b'x'; 3000]);
    common::write_file(&lower.join("thin"), b"data", 0o644);
    let before = stack.lower_digests();
    let Some(small) = SmallFs::ext4(
        &stack.base.path().join("img"),
        &stack.base.path().join("ext4"),
        "8M",
    ) else {
        return;
    };
    let run = |kernel: bool| -> Vec<i32> {
        let tag = if kernel { "k" } else { "u" };
        let upper = small.dir.join(format!("upper-{tag}"));
        let work = small.dir.join(format!("work-{tag}"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        let _d = if kernel {
            let st = Command::new("mount")
                .args(["-t", "overlay", "overlay", "-o"])
                .arg(format!(
                    "lowerdir={},upperdir={},workdir={},redirect_dir=off,index=off,metacopy=off",
                    lower.display(),
                    upper.display(),
                    work.display()
                ))
                .arg(&stack.mnt)
                .status()
                .unwrap();
            assert!(st.success());
            None
        } else {
            let log = stack.base.path().join("xattr.log");
            Some(Daemon::start(
                &[lower],
                Some(&upper),
                Some(&work),
                &stack.mnt,
                &[],
                &log,
            ))
        };
        let _kernel_mount = kernel.then(|| common::mount::UnmountOnDrop(stack.mnt.clone()));
        let m = &stack.mnt;
        let mut out = Vec::new();
        // Copy-up of a file whose xattrs don't fit.
        out.push(common::sys::chmod(&m.join("fat"), 0o600).err().unwrap_or(0));
        // A big xattr set through the mount on a copied-up file.
        out.push(
            common::sys::lsetxattr(&m.join("thin"), "user.big", &vec![b'y'; 3000])
                .err()
                .unwrap_or(0),
        );
        // Many small ones until the block is full.
        let mut last = 0;
        for i in 0..200 {
            if let Err(e) =
                common::sys::lsetxattr(&m.join("thin"), &format!("user.k{i}"), &[b'z'; 40])
            {
                last = e;
                break;
            }
        }
        out.push(last);
        // Still working afterwards.
        fs::write(m.join("new"), b"ok").unwrap();
        assert_eq!(fs::read(m.join("thin")).unwrap(), b"data");
        if !kernel {
            assert!(
                !upper.join("fat").exists() || out[0] == 0,
                "partial copy of fat in the upper"
            );
            assert_eq!(work_leftovers(&work), Vec::<PathBuf>::new());
        }
        common::mount::force_unmount(m);
        out
    };
    let u = run(false);
    let k = run(true);
    eprintln!("xattr space errnos: unionfuse {u:?}, kernel {k:?}");
    assert_eq!(
        u, k,
        "errnos differ from kernel overlay (unionfuse, kernel)"
    );
    assert!(u.iter().all(|&e| e != libc::EIO), "EIO: {u:?}");
    drop(small);
    stack.assert_lowers_unchanged(&before);
}

// ===== load ===============================================================================

const THREADS: usize = 8;
const SHARED_FILES: usize = 8;
const REGION: usize = 4096;
const KEEP: usize = 50;
const LOWER_CHURN: usize = 400;

fn build_load_lower(lower: &Path) {
    for k in 0..SHARED_FILES {
        common::write_file(
            &lower.join(format!("shared/s{k}")),
            &pattern(THREADS * REGION, 500 + k as u64),
            0o666,
        );
    }
    for t in 0..THREADS {
        for j in 0..4 {
            common::write_file(
                &lower.join(format!("A/r{t}_{j}")),
                format!("rename {t} {j}").as_bytes(),
                0o644,
            );
        }
    }
    common::mkdir(&lower.join("B"), 0o755);
    for k in 0..KEEP {
        common::write_file(&lower.join(format!("churn/keep{k}")), b"keep", 0o644);
    }
    for k in 0..LOWER_CHURN {
        common::write_file(&lower.join(format!("churn/low{k}")), b"low", 0o644);
    }
}

/// What one load worker did, for the final check.
#[derive(Default)]
struct LoadModel {
    /// shared file -> the last value this thread wrote in its region.
    regions: BTreeMap<usize, u64>,
    /// r{t}_{j} -> the directory it is in now.
    renamed: BTreeMap<usize, &'static str>,
    /// private files -> contents.
    private: BTreeMap<String, Vec<u8>>,
    errors: Vec<String>,
    ops: u64,
}

fn region_bytes(t: usize, v: u64) -> Vec<u8> {
    let mut b = format!("t{t} v{v} ").into_bytes();
    b.resize(REGION, b'.' + (v % 40) as u8);
    b
}

fn load_worker(t: usize, mnt: PathBuf, stop: Instant, seed: u64) -> LoadModel {
    let mut rng = Rng::new(seed);
    let mut m = LoadModel::default();
    for j in 0..4 {
        m.renamed.insert(j, "A");
    }
    let private = mnt.join(format!("p{t}"));
    if let Err(e) = fs::create_dir(&private) {
        m.errors.push(format!("mkdir p{t}: {e}"));
        return m;
    }
    let mut n = 0u64;
    macro_rules! bad {
        ($($arg:tt)*) => {{ m.errors.push(format!($($arg)*)); }};
    }
    let max_errors = env_num("UNIONFUSE_LOAD_MAX_ERRORS", 10) as usize;
    while Instant::now() < stop && m.errors.len() < max_errors {
        n += 1;
        m.ops += 1;
        match rng.below(9) {
            // Racing copy-ups / writes of the same lower files, each thread its own region.
            0 | 1 => {
                let k = rng.below(SHARED_FILES as u64) as usize;
                let p = mnt.join(format!("shared/s{k}"));
                match OpenOptions::new().write(true).open(&p) {
                    Ok(f) => match f.write_all_at(&region_bytes(t, n), (t * REGION) as u64) {
                        Ok(()) => {
                            m.regions.insert(k, n);
                        }
                        Err(e) => bad!("write {}: {e}", p.display()),
                    },
                    Err(e) => bad!("open {}: {e}", p.display()),
                }
            }
            // Cross-directory renames of own files (lower ones copy up and leave a whiteout).
            2 => {
                let j = rng.below(4) as usize;
                let from = m.renamed[&j];
                let to = *rng.pick(&["A", "B", "C"]);
                if to != from {
                    let a = mnt.join(format!("{from}/r{t}_{j}"));
                    let b = mnt.join(format!("{to}/r{t}_{j}"));
                    match fs::rename(&a, &b) {
                        Ok(()) => {
                            m.renamed.insert(j, to);
                        }
                        Err(e) => bad!("rename {} -> {}: {e}", a.display(), b.display()),
                    }
                }
            }
            // readdir of the churn dir while others unlink in it: no error, no duplicate, the
            // untouched names always there.
            3 => match fs::read_dir(mnt.join("churn")) {
                Ok(rd) => {
                    let mut seen = BTreeSet::new();
                    for e in rd {
                        match e {
                            Ok(e) => {
                                if !seen.insert(e.file_name()) {
                                    bad!("readdir churn: {:?} listed twice", e.file_name());
                                }
                            }
                            Err(e) => bad!("readdir churn: {e}"),
                        }
                    }
                    for k in 0..KEEP {
                        if !seen.contains(std::ffi::OsStr::new(&format!("keep{k}"))) {
                            bad!("readdir churn: keep{k} missing during unlinks");
                        }
                    }
                }
                Err(e) => bad!("opendir churn: {e}"),
            },
            // Create and unlink in the churn dir; unlink lower names (whiteouts).
            4 => {
                let p = mnt.join(format!("churn/c{t}_{}", n % 50));
                match fs::write(&p, b"c") {
                    Ok(()) => {
                        if let Err(e) = fs::remove_file(&p) {
                            bad!("unlink {}: {e}", p.display());
                        }
                    }
                    Err(e) => bad!("create {}: {e}", p.display()),
                }
                let k = rng.below(LOWER_CHURN as u64);
                if k as usize % THREADS == t {
                    match fs::remove_file(mnt.join(format!("churn/low{k}"))) {
                        Ok(()) => {}
                        Err(e) if io_errno(&e) == libc::ENOENT => {}
                        Err(e) => bad!("unlink churn/low{k}: {e}"),
                    }
                }
            }
            // Private data: create, overwrite, read back.
            5 | 6 => {
                let name = format!("f{}", rng.below(20));
                let body = pattern(rng.below(64 << 10) as usize, n);
                let p = private.join(&name);
                match fs::write(&p, &body) {
                    Ok(()) => {
                        m.private.insert(name, body);
                    }
                    Err(e) => bad!("write {}: {e}", p.display()),
                }
                if let Some((name, want)) =
                    m.private.iter().next().map(|(a, b)| (a.clone(), b.clone()))
                {
                    match fs::read(private.join(&name)) {
                        Ok(d) if d == want => {}
                        Ok(d) => bad!("p{t}/{name}: {} bytes, want {}", d.len(), want.len()),
                        Err(e) => bad!("read p{t}/{name}: {e}"),
                    }
                }
            }
            // Private metadata: mkdir/rename/rmdir, unlink, chmod.
            7 => {
                let d = private.join("sub");
                let d2 = private.join("sub2");
                let r = fs::create_dir(&d)
                    .and_then(|_| fs::write(d.join("x"), b"x"))
                    .and_then(|_| fs::rename(&d, &d2))
                    .and_then(|_| fs::remove_file(d2.join("x")))
                    .and_then(|_| fs::remove_dir(&d2));
                if let Err(e) = r {
                    bad!("private dir cycle in p{t}: {e}");
                }
            }
            _ => {
                if let Some(name) = m.private.keys().nth(rng.below(3) as usize).cloned() {
                    let p = private.join(&name);
                    let r = if n.is_multiple_of(2) {
                        fs::remove_file(&p).map(|_| {
                            m.private.remove(&name);
                        })
                    } else {
                        fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    };
                    if let Err(e) = r {
                        bad!("{}: {e}", p.display());
                    }
                }
            }
        }
    }
    m
}

fn check_load(mnt: &Path, models: &[LoadModel], what: &str) {
    for k in 0..SHARED_FILES {
        let d = fs::read(mnt.join(format!("shared/s{k}"))).unwrap();
        let orig = pattern(THREADS * REGION, 500 + k as u64);
        assert_eq!(d.len(), orig.len(), "{what}: shared/s{k} size");
        for (t, m) in models.iter().enumerate() {
            let r = &d[t * REGION..(t + 1) * REGION];
            match m.regions.get(&k) {
                Some(v) => assert_eq!(
                    r,
                    &region_bytes(t, *v)[..],
                    "{what}: lost write of thread {t} to s{k}"
                ),
                None => assert_eq!(r, &orig[t * REGION..(t + 1) * REGION], "{what}: s{k}"),
            }
        }
    }
    for (t, m) in models.iter().enumerate() {
        for (j, dir) in &m.renamed {
            for other in ["A", "B", "C"] {
                let p = mnt.join(format!("{other}/r{t}_{j}"));
                if other == *dir {
                    assert_eq!(
                        fs::read(&p).unwrap_or_else(|e| panic!("{what}: {}: {e}", p.display())),
                        format!("rename {t} {j}").as_bytes(),
                        "{what}: {}",
                        p.display()
                    );
                } else {
                    assert!(!p.exists(), "{what}: {} should be gone", p.display());
                }
            }
        }
        let names: BTreeSet<String> = fs::read_dir(mnt.join(format!("p{t}")))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        let want: BTreeSet<String> = m.private.keys().cloned().collect();
        assert_eq!(names, want, "{what}: p{t} listing");
        for (name, body) in &m.private {
            assert_eq!(
                &fs::read(mnt.join(format!("p{t}/{name}"))).unwrap(),
                body,
                "{what}: p{t}/{name}"
            );
        }
    }
    for k in 0..KEEP {
        assert!(
            mnt.join(format!("churn/keep{k}")).exists(),
            "{what}: keep{k}"
        );
    }
}

#[test]
fn load_mixed_with_cross_dir_renames_and_readdir_during_unlink() {
    if !require_fuse() {
        return;
    }
    let secs = env_num("UNIONFUSE_LOAD_SECS", 12);
    let stack = Stack::new(1);
    build_load_lower(stack.lower(0));
    let before = stack.lower_digests();
    let m = UnionMount::new(&stack);
    fs::create_dir(m.path("C")).unwrap();
    let pid = m.pid().unwrap_or(0);
    let (fd0, rss0) = (common::fd_count(pid), common::rss_kib(pid));
    let mnt = m.mnt().to_path_buf();
    let mut seeds = Rng::from_env("load");
    let seeds: Vec<u64> = (0..THREADS).map(|_| seeds.next()).collect();
    let models = within(
        Duration::from_secs(secs + 120),
        "mixed load (deadlock?)",
        move || {
            let stop = Instant::now() + Duration::from_secs(secs);
            let barrier = Arc::new(Barrier::new(THREADS));
            let hs: Vec<_> = (0..THREADS)
                .map(|t| {
                    let (mnt, b, seed) = (mnt.clone(), barrier.clone(), seeds[t]);
                    std::thread::spawn(move || {
                        b.wait();
                        load_worker(t, mnt, stop, seed)
                    })
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().expect("worker panicked"))
                .collect::<Vec<_>>()
        },
    );
    let ops: u64 = models.iter().map(|m| m.ops).sum();
    let mut errors: Vec<&String> = models.iter().flat_map(|m| &m.errors).collect();
    let (fd1, rss1) = (common::fd_count(pid), common::rss_kib(pid));
    eprintln!(
        "load: {ops} operations by {THREADS} threads in {secs} s; daemon fds {fd0} -> {fd1}, RSS {rss0} -> {rss1} KiB"
    );
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for e in &errors {
        let k = e.rsplit(": ").next().unwrap_or(e).to_string();
        *kinds.entry(k).or_default() += 1;
    }
    eprintln!(
        "load: {} unexpected errors by kind: {kinds:?}",
        errors.len()
    );
    errors.truncate(40);
    assert!(errors.is_empty(), "unexpected errors: {errors:#?}");
    check_load(m.mnt(), &models, "live mount");
    let log = m.log_text();
    assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
    drop(m);
    stack.assert_lowers_unchanged(&before);
    let m = UnionMount::new(&stack);
    check_load(m.mnt(), &models, "after remount");
}

// ===== never hang =========================================================================

#[test]
fn layers_below_the_mountpoint_are_refused_up_front() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    let mnt = &stack.mnt;
    let lower = stack.lower(0).to_path_buf();
    let upper = stack.upper().to_path_buf();
    let inside = mnt.join("inside");
    fs::create_dir(&inside).unwrap();
    let cases: Vec<(&str, Vec<std::ffi::OsString>)> = vec![
        (
            "upper below the mountpoint",
            vec![
                "mount".into(),
                lower.clone().into(),
                inside.clone().into(),
                mnt.into(),
            ],
        ),
        (
            "lower below the mountpoint",
            vec![
                "mount".into(),
                inside.clone().into(),
                upper.clone().into(),
                mnt.into(),
            ],
        ),
        (
            "mountpoint is the upper",
            vec!["mount".into(), lower.clone().into(), mnt.into(), mnt.into()],
        ),
        (
            "work dir below the mountpoint",
            vec![
                "mount".into(),
                lower.clone().into(),
                upper.clone().into(),
                mnt.into(),
                "--workdir".into(),
                inside.join("w").into(),
            ],
        ),
        (
            "fuse-overlayfs form, lower below the mountpoint",
            vec![
                "-o".into(),
                format!(
                    "lowerdir={},upperdir={},workdir={}",
                    inside.display(),
                    upper.display(),
                    stack.base.path().join("w").display()
                )
                .into(),
                mnt.into(),
            ],
        ),
    ];
    for (what, args) in cases {
        let out = within(Duration::from_secs(20), what, move || {
            Command::new(common::mount::binary())
                .args(&args)
                .arg("-f")
                .output()
                .unwrap()
        });
        assert!(!out.status.success(), "{what}: accepted");
        assert!(!common::mount::is_mounted(mnt), "{what}: mounted anyway");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("overlap"),
            "{what}: error does not say why: {err}"
        );
    }
}

/// A daemon on the stack's first lower and its upper, with a fresh work dir (returned) and
/// its log in the stack's temp dir.
fn start_daemon(stack: &Stack, log: &str) -> (Daemon, PathBuf) {
    let work = stack.new_workdir();
    let log = stack.base.path().join(log);
    let lowers = [stack.lower(0)];
    let d = Daemon::start(
        &lowers,
        Some(stack.upper()),
        Some(&work),
        &stack.mnt,
        &[],
        &log,
    );
    (d, work)
}

#[test]
fn lazy_unmount_with_a_process_inside_does_not_wedge() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    common::write_file(&stack.lower(0).join("d/f"), b"lower data", 0o644);
    let (mut d, work) = start_daemon(&stack, "lazy.log");
    let dir = stack.mnt.join("d");
    // A shell that lives in the mount, keeps working after the lazy unmount, then leaves.
    let mut sh = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && sleep 0.5 && cat f && ls && echo new > g && cat g && sleep 0.3")
        .arg("sh")
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let st = Command::new("umount")
        .arg("-l")
        .arg(&stack.mnt)
        .status()
        .unwrap();
    assert!(st.success(), "umount -l");
    let out = within(
        Duration::from_secs(20),
        "process inside a lazily unmounted mount",
        move || {
            let mut s = String::new();
            sh.stdout.take().unwrap().read_to_string(&mut s).unwrap();
            (sh.wait().unwrap(), s)
        },
    );
    assert!(out.0.success(), "process inside failed: {out:?}");
    assert_eq!(out.1, "lower dataf\nnew\n");
    // Once the last user is gone, the daemon exits.
    let st = d.wait_exit(Duration::from_secs(20));
    assert!(
        st.is_some_and(|s| s.success()),
        "daemon did not exit 0 after the lazy unmount: {st:?}\n{}",
        d.log_text()
    );
    assert_eq!(fs::read(stack.upper().join("d/g")).unwrap(), b"new\n");
    assert!(work_leftovers(&work).is_empty());
}

/// The soak's crash loop once failed with "daemon exit after unmount: None" while CI ran
/// beside it. A mount namespace made while a mount is live (a container, rootless podman's
/// pause process) gets a copy of it; our umount then leaves the kernel's FUSE connection up
/// and the daemon must go on serving that copy, as kernel overlay stays mounted there.
/// `Daemon::unmount` names such holders and aborts the connection instead of failing.
#[test]
fn regression_umount_while_another_mount_namespace_holds_a_copy() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    common::write_file(&stack.lower(0).join("f"), b"lower data", 0o644);
    let (mut d, _work) = start_daemon(&stack, "ns.log");
    let dev = fs::metadata(&stack.mnt).unwrap().dev();
    // A private copy of our mount namespace; reads the file on each line of input.
    let mut holder = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("while read x; do cat \"$1/f\"; echo; done")
        .arg("sh")
        .arg(&stack.mnt)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn unshare");
    let start = Instant::now();
    while common::daemon::mount_holders(dev).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no namespace copy"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(common::mount::force_unmount(&stack.mnt), "umount");
    // Gone here, still served there.
    assert!(
        d.wait_exit(Duration::from_millis(500)).is_none(),
        "daemon left"
    );
    let mut input = holder.stdin.take().unwrap();
    let mut output = std::io::BufReader::new(holder.stdout.take().unwrap());
    input.write_all(b"\n").unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut output, &mut line).unwrap();
    assert_eq!(
        line, "lower data\n",
        "read through the other namespace's copy"
    );
    // The guard aborts the connection the copy holds; the daemon then exits 0.
    d.unmount();
    drop(input);
    let _ = holder.wait();
}

#[test]
fn killed_clients_do_not_wedge_the_daemon() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    common::write_file(&stack.lower(0).join("big"), &pattern(128 << 20, 5), 0o644);
    for i in (2..12).step_by(4) {
        common::write_file(
            &stack.lower(0).join(format!("big2_{i}")),
            &pattern(64 << 20, 6),
            0o644,
        );
    }
    let before = stack.lower_digests();
    let mut m = UnionMount::new(&stack);
    let mnt = m.mnt().to_path_buf();
    let mut rng = Rng::from_env("killed clients");
    for i in 0..12 {
        let cmd = match i % 4 {
            0 => format!("dd if={}/big of=/dev/null bs=1M", mnt.display()),
            1 => format!(
                "dd if=/dev/zero of={}/out{i} bs=1M count=4000",
                mnt.display()
            ),
            // Copy-up in progress when the client dies.
            2 => format!(
                "dd if=/dev/zero of={}/big2_{i} bs=4k count=1 conv=notrunc",
                mnt.display()
            ),
            _ => format!(
                "find {} -xdev > /dev/null; cat {}/big > /dev/null",
                mnt.display(),
                mnt.display()
            ),
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("exec {cmd} 2>/dev/null"))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        let _ = child.kill();
        let mnt2 = mnt.clone();
        within(
            Duration::from_secs(30),
            "reaping a killed client",
            move || {
                let _ = child.wait();
                // The mount still answers: stat, listing, a read, a write.
                fs::metadata(mnt2.join("big")).unwrap();
                fs::read_dir(&mnt2).unwrap().count();
                let mut f = fs::File::open(mnt2.join("big")).unwrap();
                let mut b = vec![0u8; 4096];
                f.read_exact(&mut b).unwrap();
                fs::write(mnt2.join(format!("alive{i}")), b"x").unwrap();
            },
        );
    }
    // A copy-up whose client was killed is complete or absent; the 4 KiB write all or nothing.
    let orig = pattern(64 << 20, 6);
    for i in (2..12).step_by(4) {
        let d = fs::read(mnt.join(format!("big2_{i}"))).unwrap();
        assert_eq!(d.len(), orig.len(), "big2_{i} size");
        assert!(
            d[4096..] == orig[4096..]
                && (d[..4096] == orig[..4096] || d[..4096].iter().all(|&b| b == 0)),
            "big2_{i} corrupted"
        );
        let up = stack.upper().join(format!("big2_{i}"));
        if up.exists() {
            assert_eq!(
                fs::metadata(&up).unwrap().len(),
                orig.len() as u64,
                "partial copy"
            );
        }
    }
    let log = m.log_text();
    assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
    let st = {
        assert!(common::mount::force_unmount(&mnt));
        m.wait_exit(Duration::from_secs(20))
    };
    assert!(
        st.is_some_and(|s| s.success()),
        "daemon exit after unmount: {st:?}"
    );
    drop(m);
    stack.assert_lowers_unchanged(&before);
}

/// Minimal reproduction of an inode-number reuse race: one thread creates, reads and unlinks
/// files in one directory while another does the same (or mkdir/rmdir) in another directory.
/// The filesystem hands a just-freed inode number to the other thread's new object before the
/// daemon marks the deleted node dead (union.rs `unlink_or_rmdir`: `remove_upper_entry` runs
/// before `child.dead.store(true)`, and only the parent's dir_lock is held), so `remember`
/// reuses the dying node for the newcomer: reads then fail with EISDIR or ENOENT.
#[test]
fn regression_inode_reuse_race_between_directories() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    let m = UnionMount::new(&stack);
    let mnt = m.mnt().to_path_buf();
    let errors = within(Duration::from_secs(120), "inode reuse race", move || {
        let stop = Instant::now() + Duration::from_secs(8);
        let hs: Vec<_> = (0..4)
            .map(|t| {
                let d = mnt.join(format!("d{t}"));
                fs::create_dir(&d).unwrap();
                std::thread::spawn(move || {
                    let mut errs = Vec::new();
                    let mut i = 0u64;
                    while Instant::now() < stop && errs.len() < 5 {
                        i += 1;
                        if t % 2 == 0 {
                            let p = d.join(format!("f{}", i % 20));
                            let r = fs::write(&p, b"x").and_then(|_| fs::read(&p));
                            if let Err(e) = r {
                                errs.push(format!("{}: {e}", p.display()));
                            }
                            let _ = fs::remove_file(d.join(format!("f{}", (i * 7) % 20)));
                        } else {
                            let p = d.join("sub");
                            if let Err(e) = fs::create_dir(&p).and_then(|_| fs::remove_dir(&p)) {
                                errs.push(format!("{}: {e}", p.display()));
                            }
                        }
                    }
                    errs
                })
            })
            .collect();
        hs.into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(errors.is_empty(), "errors: {errors:#?}");
}
