//! Behaviour checked side by side with kernel overlayfs on copies of the same layers: reads
//! leave the lowers' atimes alone, an open file or directory keeps working after its last name
//! is gone (a reader after copy-up and unlink, fstat, a removed cwd, listing, f*xattr), a link
//! of a split lower hard link, the bare private xattr prefix, overlapping layers. Where FUSE
//! can't follow the kernel, the test pins the deviation documented in docs/semantics.md.
//! Kernel runs need root and overlayfs; without them only unionfuse's side is checked.

mod common;

use std::fmt::Debug;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::view::*;
use common::*;

/// Can this test also run kernel overlay? (Under `UNIONFUSE_TEST_BACKEND=kernel` both sides
/// would be the kernel.)
fn kernel_too() -> bool {
    sys::is_root() && overlay_available() && !kernel_backend()
}

/// Build layers with `build`, run `scenario` on unionfuse over them and, where it can, on
/// kernel overlay over a copy; both must give the same result, and neither may change a lower:
/// its digest (as `mounted` checks) nor its atimes (`lower_atimes`). Returns unionfuse's result.
#[track_caller]
fn side_by_side<T: Debug + PartialEq>(
    lowers: usize,
    build: impl Fn(&Stack),
    scenario: impl Fn(&Path) -> T,
) -> T {
    side_by_side_with(lowers, "", build, scenario)
}

/// As `side_by_side`, with unionfuse mounted with `-o OPTS` too (options of its own that
/// select the kernel's behaviour where the default differs).
#[track_caller]
fn side_by_side_with<T: Debug + PartialEq>(
    lowers: usize,
    opts: &str,
    build: impl Fn(&Stack),
    scenario: impl Fn(&Path) -> T,
) -> T {
    let s = Stack::new(lowers);
    build(&s);
    let k = kernel_too().then(|| s.duplicate());
    let kernel = k.as_ref().map(|k| {
        let before = lower_atimes(k);
        let m = KernelOverlay::new(k);
        let r = scenario(m.mnt());
        drop(m);
        assert_eq!(
            lower_paths(k).1,
            before.1,
            "kernel overlay changed a lower's atime"
        );
        r
    });
    // As `mounted`, with the atimes checked between the digests (which read the files).
    let digest = s.lower_digests();
    let before = lower_atimes(&s);
    let ours = {
        let m = match opts {
            // (Under the kernel backend both sides are the kernel: no options of ours.)
            "" => UnionMount::new(&s),
            _ if kernel_backend() => UnionMount::new(&s),
            o => UnionMount::with_args(&s, &["-o", o]),
        };
        scenario(m.mnt())
    };
    assert_eq!(
        lower_paths(&s).1,
        before.1,
        "unionfuse changed a lower's atime"
    );
    s.assert_lowers_unchanged(&digest);
    if let Some(kernel) = kernel {
        assert_eq!(
            ours, kernel,
            "unionfuse (left) differs from kernel overlay (right)"
        );
    }
    ours
}

/// Set the atime of everything in the stack's lowers far in the past (so relatime would update
/// it on any read), and return the paths with their atimes (`lower_paths`).
fn lower_atimes(s: &Stack) -> (Vec<PathBuf>, Vec<Time>) {
    let (paths, _) = lower_paths(s);
    for p in &paths {
        let st = must(sys::lstat(p), "lstat");
        let mtime = (st.st_mtime, st.st_mtime_nsec);
        must(
            sys::utimens(p, (1_000_000_000, 0), mtime, true),
            "age atime",
        );
    }
    lower_paths(s)
}

/// Every object in the stack's lowers, with its atime. The walk opens directories O_NOATIME
/// and stats with lstat, so it changes nothing itself. (Layer digests can't hold atimes: they
/// read the files.)
fn lower_paths(s: &Stack) -> (Vec<PathBuf>, Vec<Time>) {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let fd = must(
            sys::open(dir, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOATIME, 0),
            "open lower dir",
        );
        for name in must(sys::read_dir_names(&fd, false), "readdir lower") {
            let p = dir.join(std::ffi::OsStr::from_bytes(&name));
            let st = must(sys::lstat(&p), "lstat");
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                walk(&p, out);
            }
            out.push(p);
        }
    }
    let mut paths = Vec::new();
    for l in &s.lowers {
        walk(l, &mut paths);
        paths.push(l.clone());
    }
    let times = paths
        .iter()
        .map(|p| {
            let st = must(sys::lstat(p), "lstat");
            (st.st_atime, st.st_atime_nsec)
        })
        .collect();
    (paths, times)
}

fn open(p: &Path, flags: i32) -> OwnedFd {
    must(sys::open(p, flags, 0o644), &format!("open {}", p.display()))
}

/// A shell command's stdout (trimmed) or its stderr as the error.
fn sh(script: &str, arg: &Path) -> Result<String, String> {
    let out = Command::new("sh")
        .args(["-c", script, "sh"])
        .arg(arg)
        .output()
        .expect("spawn sh");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

// ---- reads leave the lowers alone ------------------------------------------------------------

/// (seconds, nanoseconds).
type Time = (i64, i64);

/// Kernel overlay opens lower files and directories O_NOATIME: reading a file, listing a
/// directory, reading xattrs and copying a file up (its data is read) leave the lower's atime
/// as it was (`side_by_side` checks every lower's atimes).
#[test]
fn reads_leave_lower_atimes_alone() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side(
        2,
        |s| {
            write_file(&s.lower(0).join("f"), b"lower-data\n", 0o644);
            write_file(&s.lower(0).join("d/a"), b"a", 0o644);
            write_file(&s.lower(1).join("d/b"), b"b", 0o644);
            write_file(&s.lower(1).join("c"), b"copy me", 0o644);
            set_xattr(&s.lower(0).join("f"), "user.x", b"1");
        },
        |m| {
            // A copy-up reads the lower's data.
            must(sys::truncate(&m.join("c"), 4), "truncate c");
            (
                read(&m.join("f")),
                read(&m.join("d/a")),
                listing(&m.join("d")),
                listing(m),
                sys::lgetxattr(&m.join("f"), "user.x"),
                read(&m.join("c")),
            )
        },
    );
    assert_eq!(got.0, b"lower-data\n");
    assert_eq!(got.2, names(&[".", "..", "a", "b"]));
    assert_eq!(got.3, names(&[".", "..", "c", "d", "f"]));
    assert_eq!(got.4, Ok(b"1".to_vec()));
    assert_eq!(got.5, b"copy");
}

// ---- open but removed objects ----------------------------------------------------------------

/// Log rotation: a reader has a lower file open, a writer appends to it (a copy-up) and then
/// unlinks it. The reader's fd follows the copy and keeps reading it after the unlink. As root
/// that takes `nolowerpassthrough` (by default a reader passed through to the lower file keeps
/// the old data: D17, tests/mount_copy_up.rs).
#[test]
fn a_reader_follows_the_copy_after_copy_up_and_unlink() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side_with(
        1,
        "nolowerpassthrough",
        |s| write_file(&s.lower(0).join("log"), b"lower-data\n", 0o644),
        |m| {
            let reader = open(&m.join("log"), libc::O_RDONLY);
            let before = sys::pread(&reader, 100, 0);
            let writer = open(&m.join("log"), libc::O_WRONLY | libc::O_APPEND);
            must(sys::write(&writer, b"appended\n"), "append");
            drop(writer);
            must(sys::unlink(&m.join("log")), "unlink");
            let after = sys::pread(&reader, 100, 0);
            let size = sys::fstat(&reader).map(|st| st.st_size);
            (before, after, size)
        },
    );
    assert_eq!(
        got,
        (
            Ok(b"lower-data\n".to_vec()),
            Ok(b"lower-data\nappended\n".to_vec()),
            Ok(20)
        )
    );
}

/// A directory held open, or as a cwd, after rmdir: fstat works and reports st_nlink 0 (an
/// upper-only directory; 1, as before, for one with a lower copy), and listing it gives
/// nothing.
#[test]
fn a_removed_directory_held_open_can_be_stat_and_listed() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side(
        1,
        |s| {
            write_file(&s.lower(0).join("low/a"), b"a", 0o644);
            mkdir(&s.upper().join("up"), 0o755);
            mkdir(&s.upper().join("merged"), 0o755);
            mkdir(&s.lower(0).join("merged"), 0o755);
        },
        |m| {
            let mut out = Vec::new();
            must(sys::mkdir(&m.join("new"), 0o755), "mkdir new");
            for name in ["new", "up", "low", "merged"] {
                let fd = open(&m.join(name), libc::O_RDONLY | libc::O_DIRECTORY);
                if name == "low" {
                    must(sys::unlink(&m.join("low/a")), "unlink low/a");
                }
                must(sys::rmdir(&m.join(name)), "rmdir");
                let nlink = sys::fstat(&fd).map(|st| st.st_nlink);
                let list = sys::read_dir_names(&fd, false);
                out.push((name, nlink, list));
            }
            must(sys::mkdir(&m.join("cwd"), 0o755), "mkdir cwd");
            // A child process: the cwd is process-wide.
            let cwd = sh(
                r#"cd "$1" && rmdir "$1" && stat -c %h . && ls -a ."#,
                &m.join("cwd"),
            );
            (out, cwd)
        },
    );
    assert_eq!(got.0[0], ("new", Ok(0), Ok(vec![])));
    assert_eq!(got.0[1], ("up", Ok(0), Ok(vec![])));
    assert_eq!(got.0[2], ("low", Ok(1), Ok(vec![])));
    assert_eq!(got.0[3], ("merged", Ok(1), Ok(vec![])));
    assert_eq!(got.1, Ok("0".to_owned()));
}

/// An unlinked file open read-write still has its xattrs: fgetxattr reads them, flistxattr
/// lists them, fsetxattr adds one; fstat reports st_nlink 0.
#[test]
fn an_unlinked_open_file_keeps_its_xattrs() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side(
        1,
        |s| {
            write_file(&s.lower(0).join("low"), b"x", 0o644);
            set_xattr(&s.lower(0).join("low"), "user.a", b"lower");
        },
        |m| {
            let mut out = Vec::new();
            write_file(&m.join("new"), b"x", 0o644);
            must(sys::lsetxattr(&m.join("new"), "user.a", b"v"), "setxattr");
            for name in ["new", "low"] {
                let fd = open(&m.join(name), libc::O_RDWR);
                must(sys::unlink(&m.join(name)), "unlink");
                let set = sys::fsetxattr(&fd, "user.b", b"w");
                out.push((
                    sys::fstat(&fd).map(|st| st.st_nlink),
                    sys::fgetxattr(&fd, "user.a"),
                    set,
                    sys::flistxattr(&fd),
                    sys::fgetxattr(&fd, "user.b"),
                ));
            }
            out
        },
    );
    for (what, value) in [("new", &b"v"[..]), ("low", &b"lower"[..])] {
        let i = usize::from(what == "low");
        assert_eq!(
            got[i],
            (
                Ok(0),
                Ok(value.to_vec()),
                Ok(()),
                Ok(vec!["user.a".to_owned(), "user.b".to_owned()]),
                Ok(b"w".to_vec())
            ),
            "{what}"
        );
    }
}

/// An unlinked file can be opened again through /proc/self/fd/N (how a program hands a deleted
/// file to another), for reading its data and, once in the upper, for writing and chmod.
/// (With `noopen` a lower one takes those too, on an unnamed copy: D18, tested in
/// mount_copy_up.)
#[test]
fn an_unlinked_file_reopens_through_proc() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side_with(
        1,
        "open",
        |s| write_file(&s.lower(0).join("low"), b"lower", 0o644),
        |m| {
            write_file(&m.join("new"), b"upper", 0o644);
            let mut out = Vec::new();
            for name in ["new", "low"] {
                let fd = open(&m.join(name), libc::O_RDONLY);
                must(sys::unlink(&m.join(name)), "unlink");
                let proc = PathBuf::from(format!(
                    "/proc/self/fd/{}",
                    std::os::fd::AsRawFd::as_raw_fd(&fd)
                ));
                let data = sys::open(&proc, libc::O_RDONLY, 0).and_then(|f| sys::pread(&f, 100, 0));
                let write = sys::open(&proc, libc::O_WRONLY, 0).and_then(|f| sys::write(&f, b"W"));
                let chmod = sys::chmod(&proc, 0o600);
                out.push((name, data, write, chmod, sys::pread(&fd, 100, 0)));
            }
            out
        },
    );
    let new = (
        "new",
        Ok(b"upper".to_vec()),
        Ok(1),
        Ok(()),
        Ok(b"Wpper".to_vec()),
    );
    assert_eq!(got[0], new);
    // Still only in a lower, it can't be copied up without a name.
    let low = (
        "low",
        Ok(b"lower".to_vec()),
        Err(libc::EEXIST),
        Err(libc::EEXIST),
        Ok(b"lower".to_vec()),
    );
    assert_eq!(got[1], low);
}

// ---- hard links ------------------------------------------------------------------------------

/// `ln h3 h4` where h1..h3 are one lower file: h3 is copied up (a split link) and h4 links to
/// the copy. At once, without waiting for any cache, h3 and h4 show one st_ino and st_nlink 2,
/// and h1, h2 keep the lower's st_ino and st_nlink 3.
#[test]
fn link_of_a_split_lower_hard_link_shows_one_inode_at_once() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side(
        1,
        |s| {
            let l = s.lower(0);
            write_file(&l.join("h1"), b"hh\n", 0o644);
            hardlink(&l.join("h1"), &l.join("h2"));
            hardlink(&l.join("h1"), &l.join("h3"));
        },
        |m| {
            let st = |n: &str| must(sys::lstat(&m.join(n)), "lstat");
            // Cached in the kernel before the link.
            let old = st("h3").st_ino;
            must(sys::link(&m.join("h3"), &m.join("h4")), "link");
            let s: Vec<_> = ["h1", "h2", "h3", "h4"].iter().map(|n| st(n)).collect();
            (
                s[0].st_ino == s[1].st_ino && s[1].st_ino == old,
                s[2].st_ino == s[3].st_ino && s[2].st_ino != old,
                s.iter().map(|s| s.st_nlink).collect::<Vec<_>>(),
            )
        },
    );
    assert_eq!(got, (true, true, vec![3, 3, 2, 2]));
}

// ---- d_ino -----------------------------------------------------------------------------------

/// (name, d_ino == st_ino) of each entry of `dir`, sorted.
fn d_ino_matches(dir: &Path) -> Vec<(String, bool)> {
    use std::os::unix::fs::DirEntryExt;
    let mut out: Vec<(String, bool)> = std::fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| {
            let e = e.expect("dirent");
            let st = must(sys::lstat(&e.path()), "lstat");
            (
                e.file_name().to_string_lossy().into_owned(),
                e.ino() == st.st_ino,
            )
        })
        .collect();
    out.sort();
    out
}

/// readdir's d_ino is st_ino for a lower file, a merged directory, an upper file and a copied-up
/// file. A name of a lower file with several links is its own node (also once that name was
/// copied up), and FUSE's READDIRPLUS carries the node id as d_ino (docs/semantics.md, D13).
#[test]
fn d_ino_is_st_ino_but_for_names_of_a_multi_link_lower_file() {
    if !require_fuse() {
        return;
    }
    let build = |s: &Stack| {
        let l = s.lower(0);
        write_file(&l.join("f"), b"f", 0o644);
        write_file(&l.join("copied"), b"c", 0o644);
        write_file(&l.join("d/x"), b"x", 0o644);
        mkdir(&s.upper().join("d"), 0o755);
        write_file(&s.upper().join("up"), b"u", 0o644);
        write_file(&l.join("h1"), b"h", 0o644);
        hardlink(&l.join("h1"), &l.join("h2"));
        hardlink(&l.join("h1"), &l.join("h3"));
    };
    let scenario = |m: &Path| {
        must(sys::truncate(&m.join("copied"), 0), "copy up");
        must(sys::truncate(&m.join("h3"), 0), "split h3");
        d_ino_matches(m)
    };
    let all = |h: bool| {
        ["copied", "d", "f", "h1", "h2", "h3", "up"]
            .iter()
            .map(|n| (n.to_string(), h || !n.starts_with('h')))
            .collect::<Vec<_>>()
    };
    if kernel_too() {
        let s = Stack::new(1);
        build(&s);
        let k = KernelOverlay::new(&s);
        assert_eq!(scenario(k.mnt()), all(true), "kernel overlay");
    }
    let s = Stack::new(1);
    build(&s);
    let want = if kernel_backend() {
        all(true)
    } else {
        all(false)
    };
    mounted(&s, |m| assert_eq!(scenario(m.mnt()), want, "unionfuse"));
}

// ---- xattr names -----------------------------------------------------------------------------

/// The bare private prefix is no name: get, set and remove give EINVAL, and nothing is copied
/// up. (`user.overlay.` is an ordinary name in the default mode.)
#[test]
fn the_bare_private_xattr_prefix_is_einval() {
    if !require_fuse() {
        return;
    }
    let got = side_by_side(
        1,
        |s| write_file(&s.lower(0).join("f"), b"x", 0o644),
        |m| {
            let f = m.join("f");
            (
                sys::lgetxattr(&f, "trusted.overlay."),
                sys::lsetxattr(&f, "trusted.overlay.", b"v"),
                sys::lremovexattr(&f, "trusted.overlay."),
                sys::llistxattr(&f),
            )
        },
    );
    assert_eq!(
        got,
        (
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Err(libc::EINVAL),
            Ok(vec![])
        )
    );
}

// ---- what FUSE can't do (documented deviations) ----------------------------------------------

/// O_TMPFILE: kernel overlay makes the file; through FUSE it is EOPNOTSUPP, because fuser
/// answers the kernel's FUSE_TMPFILE request with ENOSYS (docs/semantics.md, D11).
#[test]
fn o_tmpfile_is_eopnotsupp() {
    // A deviation of unionfuse's: nothing to check on the kernel backend.
    if !require_fuse() || kernel_backend() {
        return;
    }
    let tmpfile = |m: &Path| sys::open(m, libc::O_TMPFILE | libc::O_RDWR, 0o600).map(drop);
    if kernel_too() {
        let s = Stack::new(1);
        let k = KernelOverlay::new(&s);
        assert_eq!(
            tmpfile(k.mnt()),
            Ok(()),
            "kernel overlay supports O_TMPFILE"
        );
    }
    let s = Stack::new(1);
    mounted(&s, |m| assert_eq!(tmpfile(m.mnt()), Err(libc::EOPNOTSUPP)));
}

/// fallocate's COLLAPSE_RANGE and INSERT_RANGE never reach the daemon: the kernel's FUSE
/// refuses them with EOPNOTSUPP (docs/semantics.md, D12); the other modes work.
#[test]
fn fallocate_collapse_and_insert_range_are_eopnotsupp() {
    // A deviation of unionfuse's: nothing to check on the kernel backend.
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        write_file(&m.path("f"), &vec![7u8; 65536], 0o644);
        let fd = open(&m.path("f"), libc::O_RDWR);
        let fallocate = |mode: i32| {
            // SAFETY: plain syscall on an fd this closure borrows.
            let r = unsafe { libc::fallocate(std::os::fd::AsRawFd::as_raw_fd(&fd), mode, 0, 4096) };
            if r == 0 { Ok(()) } else { Err(sys::errno()) }
        };
        assert_eq!(
            fallocate(libc::FALLOC_FL_COLLAPSE_RANGE),
            Err(libc::EOPNOTSUPP)
        );
        assert_eq!(
            fallocate(libc::FALLOC_FL_INSERT_RANGE),
            Err(libc::EOPNOTSUPP)
        );
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert_eq!(fallocate(punch), Ok(()));
        assert_eq!(
            &read(&m.path("f"))[..4097],
            &[&[0u8; 4096][..], &[7]].concat()[..]
        );
    });
}

// ---- overlapping layers ----------------------------------------------------------------------

/// A lower given twice or inside another lower is refused, as kernel overlay refuses it with
/// ELOOP ("conflicting lowerdir path", "overlapping lowerdir path"); both command lines name
/// both paths. Nothing is mounted.
#[test]
fn overlapping_lowers_are_refused_on_both_command_lines() {
    let s = Stack::new(1);
    let l = s.lower(0).to_path_buf();
    let sub = l.join("sub");
    mkdir(&sub, 0o755);
    let l_str = l.display().to_string();
    for lowers in [
        format!("{l_str}:{l_str}"),
        format!("{l_str}:{}", sub.display()),
    ] {
        if kernel_too() {
            let out = Command::new("mount")
                .args([
                    "-t",
                    "overlay",
                    "overlay",
                    "-o",
                    &format!("lowerdir={lowers}"),
                ])
                .arg(&s.mnt)
                .output()
                .expect("spawn mount");
            assert!(
                !out.status.success(),
                "kernel overlay mounted lowerdir={lowers}"
            );
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains("Too many levels of symbolic links"), "{err}");
        }
        let work = s.new_workdir();
        let native = Command::new(mount::binary())
            .args(["mount", &lowers])
            .arg(s.upper())
            .arg(&s.mnt)
            .arg("--workdir")
            .arg(&work)
            .output()
            .expect("spawn unionfuse mount");
        let compat = Command::new(mount::binary())
            .arg("-o")
            .arg(format!(
                "lowerdir={lowers},upperdir={},workdir={}",
                s.upper().display(),
                work.display()
            ))
            .arg(&s.mnt)
            .output()
            .expect("spawn unionfuse -o");
        for (form, out) in [("mount", native), ("-o", compat)] {
            assert!(!out.status.success(), "{form} {lowers} was accepted");
            let err = String::from_utf8_lossy(&out.stderr);
            let second = lowers.rsplit(':').next().expect("two lowers");
            assert!(
                err.contains(&l_str) && err.contains(second) && err.contains("lower layer"),
                "{form} {lowers}: {err}"
            );
        }
        assert!(!mount::is_mounted(&s.mnt));
    }
}
