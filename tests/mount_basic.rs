//! Mounted tests of the union rules: each test builds its own layer stack, mounts unionfuse on it,
//! checks what a user sees and what lands in the upper on disk, and (via `mounted`) that no lower
//! changed. Expected results are kernel overlayfs's: run with `UNIONFUSE_TEST_BACKEND=kernel` to
//! check the expectations against `mount -t overlay`.

mod common;

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

#[track_caller]
fn must<T>(r: Result<T, i32>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {}", sys::errno_name(e)))
}

#[track_caller]
fn expect_errno<T: std::fmt::Debug>(r: Result<T, i32>, want: i32, what: &str) {
    match r {
        Err(e) if e == want => {}
        Err(e) => panic!(
            "{what}: got {}, want {}",
            sys::errno_name(e),
            sys::errno_name(want)
        ),
        Ok(v) => panic!("{what}: succeeded ({v:?}), want {}", sys::errno_name(want)),
    }
}

fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

fn exists(p: &Path) -> bool {
    sys::lstat(p).is_ok()
}

fn ino(p: &Path) -> u64 {
    must(sys::lstat(p), &format!("lstat {}", p.display())).st_ino
}

/// Names in a directory including `.` and `..`, sorted.
fn listing(p: &Path) -> Vec<Vec<u8>> {
    let fd = must(
        sys::open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0),
        "open dir",
    );
    let mut names = must(sys::read_dir_names(&fd, true), "readdir");
    names.sort();
    names
}

fn names(list: &[&str]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = list.iter().map(|s| s.as_bytes().to_vec()).collect();
    v.sort();
    v
}

/// Compare an entry with the expected one; fields `want` leaves as None are not compared.
#[track_caller]
fn assert_entry(what: &str, got: Option<&Entry>, want: &Entry) {
    let mut got = got.unwrap_or_else(|| panic!("{what}: missing")).clone();
    if want.mtime.is_none() {
        got.mtime = None;
    }
    if want.nlink.is_none() {
        got.nlink = None;
    }
    let d = got.differences(want);
    assert!(
        d.is_empty(),
        "{what}: {}\n  got:  {got}\n  want: {want}",
        d.join("; ")
    );
}

// ---------------------------------------------------------------------------------------------
// Lookup, whiteouts, opaque directories, readdir
// ---------------------------------------------------------------------------------------------

#[test]
fn lookup_takes_topmost_layer_across_three_lowers_and_upper() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(3);
    for (i, name) in [
        (2, "a"),
        (2, "b"),
        (2, "c"),
        (2, "d"),
        (1, "b"),
        (1, "c"),
        (0, "c"),
    ] {
        write_file(
            &s.lower(i).join(name),
            format!("lower{i}").as_bytes(),
            0o644,
        );
    }
    write_file(&s.upper().join("d"), b"upper", 0o644);
    // A file hides a directory below it and a directory hides a file below it.
    write_file(&s.lower(1).join("x/inner"), b"lower1", 0o644);
    write_file(&s.lower(0).join("x"), b"lower0 file", 0o644);
    write_file(&s.lower(1).join("y"), b"lower1 file", 0o644);
    write_file(&s.lower(0).join("y/inner0"), b"lower0", 0o644);
    mounted(&s, |m| {
        assert_eq!(read(&m.path("a")), b"lower2");
        assert_eq!(read(&m.path("b")), b"lower1");
        assert_eq!(read(&m.path("c")), b"lower0");
        assert_eq!(read(&m.path("d")), b"upper");
        assert_eq!(read(&m.path("x")), b"lower0 file");
        expect_errno(
            sys::lstat(&m.path("x/inner")),
            libc::ENOTDIR,
            "x/inner under a file",
        );
        assert_eq!(listing(&m.path("y")), names(&[".", "..", "inner0"]));
    });
}

#[test]
fn whiteout_in_lower_hides_file_below() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(2);
    write_file(&s.lower(1).join("gone"), b"x", 0o644);
    write_file(&s.lower(1).join("kept"), b"x", 0o644);
    write_file(&s.lower(1).join("dir/gone"), b"x", 0o644);
    make_whiteout(s.lower(0), "gone");
    make_whiteout(&s.lower(0).join("dir"), "gone");
    mounted(&s, |m| {
        expect_errno(sys::lstat(&m.path("gone")), libc::ENOENT, "whited-out file");
        expect_errno(
            sys::lstat(&m.path("dir/gone")),
            libc::ENOENT,
            "whited-out file in dir",
        );
        assert!(exists(&m.path("kept")));
        assert_eq!(listing(m.mnt()), names(&[".", "..", "dir", "kept"]));
    });
}

#[test]
fn opaque_dir_hides_lower_content() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(2);
    write_file(&s.lower(1).join("d/below"), b"x", 0o644);
    write_file(&s.lower(1).join("u/below"), b"x", 0o644);
    write_file(&s.lower(0).join("d/top"), b"x", 0o644);
    set_opaque(&s.lower(0).join("d"));
    mkdir(&s.upper().join("u"), 0o755);
    set_opaque(&s.upper().join("u"));
    mounted(&s, |m| {
        assert_eq!(listing(&m.path("d")), names(&[".", "..", "top"]));
        expect_errno(
            sys::lstat(&m.path("d/below")),
            libc::ENOENT,
            "file under opaque lower",
        );
        assert_eq!(listing(&m.path("u")), names(&[".", ".."]));
        expect_errno(
            sys::lstat(&m.path("u/below")),
            libc::ENOENT,
            "file under opaque upper",
        );
    });
}

#[test]
fn readdir_lists_each_name_once_without_whiteouts() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(3);
    for i in 0..3 {
        write_file(&s.lower(i).join("d/common"), b"x", 0o644);
        write_file(&s.lower(i).join(format!("d/only{i}")), b"x", 0o644);
    }
    write_file(&s.lower(2).join("d/hidden"), b"x", 0o644);
    make_whiteout(&s.lower(1).join("d"), "hidden");
    write_file(&s.upper().join("d/common"), b"x", 0o644);
    write_file(&s.upper().join("d/mine"), b"x", 0o644);
    make_whiteout(&s.upper().join("d"), "only2");
    mounted(&s, |m| {
        assert_eq!(
            listing(&m.path("d")),
            names(&[".", "..", "common", "mine", "only0", "only1"])
        );
        assert_eq!(listing(m.mnt()), names(&[".", "..", "d"]));
    });
}

// ---------------------------------------------------------------------------------------------
// Copy-up
// ---------------------------------------------------------------------------------------------

const LOWER_DATA: &[u8] = b"hello lower\n";

/// Build lower0 with `dir/f` (0640, 1000:1001, user.k=v, mtime 1e6) in `dir` (0751, 1002:1003,
/// user.dir=d), run `op`, then check `dir/f` in the merged view and in the upper against the lower
/// entry changed by `expect`; the parent must be copied up with its metadata.
fn copy_up_case(op: impl FnOnce(&UnionMount), expect: impl Fn(&mut Entry)) {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let dir = s.lower(0).join("dir");
    let f = dir.join("f");
    mkdir(&dir, 0o751);
    chown(&dir, 1002, 1003);
    set_xattr(&dir, "user.dir", b"d");
    write_file_owned(&f, LOWER_DATA, 0o640, 1000, 1001);
    set_xattr(&f, "user.k", b"v");
    set_mtime(&f, 1_000_000);
    let lower = Tree::snapshot(s.lower(0), SnapOpts::VIEW);
    let mut want = lower.get("dir/f").expect("lower dir/f").clone();
    expect(&mut want);
    mounted(&s, |m| {
        op(m);
        let merged = Tree::snapshot(m.mnt(), SnapOpts::VIEW);
        assert_entry("merged dir/f", merged.get("dir/f"), &want);
    });
    let upper = Tree::snapshot(s.upper(), SnapOpts::VIEW);
    assert_entry("upper dir/f", upper.get("dir/f"), &want);
    let (ud, ld) = (
        upper.get("dir").expect("upper dir copied up"),
        lower.get("dir").unwrap(),
    );
    assert_eq!(
        (ud.mode, ud.uid, ud.gid, &ud.xattrs),
        (ld.mode, ld.uid, ld.gid, &ld.xattrs),
        "parent dir copied up with its mode, owner and xattrs"
    );
}

fn open_mnt(m: &UnionMount, rel: &str, flags: i32) -> std::os::fd::OwnedFd {
    must(
        sys::open(&m.path(rel), flags, 0o644),
        &format!("open {rel}"),
    )
}

fn changed_data(e: &mut Entry, data: &[u8]) {
    e.content = Some(content_hash(data));
    e.size = Some(data.len() as u64);
    e.mtime = None;
}

#[test]
fn copy_up_on_write_keeps_metadata() {
    copy_up_case(
        |m| {
            let fd = open_mnt(m, "dir/f", libc::O_WRONLY);
            must(sys::pwrite(&fd, b"HELLO", 0), "pwrite");
        },
        |e| changed_data(e, b"HELLO lower\n"),
    );
}

#[test]
fn copy_up_on_append_keeps_metadata() {
    copy_up_case(
        |m| {
            let fd = open_mnt(m, "dir/f", libc::O_WRONLY | libc::O_APPEND);
            must(sys::write(&fd, b"more\n"), "append");
        },
        |e| changed_data(e, b"hello lower\nmore\n"),
    );
}

#[test]
fn copy_up_on_truncate_keeps_metadata() {
    copy_up_case(
        |m| must(sys::truncate(&m.path("dir/f"), 5), "truncate"),
        |e| changed_data(e, b"hello"),
    );
}

#[test]
fn copy_up_on_chmod_keeps_data_and_mtime() {
    copy_up_case(
        |m| must(sys::chmod(&m.path("dir/f"), 0o600), "chmod"),
        |e| e.mode = 0o600,
    );
}

#[test]
fn copy_up_on_chown_keeps_data_and_mtime() {
    copy_up_case(
        |m| must(sys::lchown(&m.path("dir/f"), 2000, 2001), "chown"),
        |e| (e.uid, e.gid) = (2000, 2001),
    );
}

#[test]
fn copy_up_on_utimes_sets_given_mtime() {
    copy_up_case(
        |m| {
            must(
                sys::utimens(&m.path("dir/f"), (5, 0), (123_456, 789), false),
                "utimensat",
            )
        },
        |e| e.mtime = Some((123_456, 789)),
    );
}

#[test]
fn copy_up_on_setxattr_keeps_existing_xattrs() {
    copy_up_case(
        |m| {
            must(
                sys::lsetxattr(&m.path("dir/f"), "user.new", b"1"),
                "setxattr",
            )
        },
        |e| {
            e.xattrs.push(("user.new".into(), b"1".to_vec()));
            e.xattrs.sort();
        },
    );
}

#[test]
fn copy_up_on_link_links_in_upper() {
    copy_up_case(
        |m| {
            must(sys::link(&m.path("dir/f"), &m.path("dir/g")), "link");
            assert_eq!(
                ino(&m.path("dir/f")),
                ino(&m.path("dir/g")),
                "same st_ino via mount"
            );
        },
        |e| e.nlink = Some(2),
    );
}

#[test]
fn copy_up_keeps_sparse_holes() {
    if !require_fuse() {
        return;
    }
    const SIZE: u64 = 64 << 20;
    let s = Stack::new(1);
    let f = s.lower(0).join("sparse");
    {
        let file = std::fs::File::create(&f).expect("create sparse lower");
        file.set_len(SIZE).expect("set_len");
        std::os::unix::fs::FileExt::write_all_at(&file, b"start", 0).expect("write start");
        std::os::unix::fs::FileExt::write_all_at(&file, b"end", SIZE - 3).expect("write end");
    }
    mounted(&s, |m| {
        let fd = open_mnt(m, "sparse", libc::O_WRONLY | libc::O_APPEND);
        must(sys::write(&fd, b"+"), "append");
        drop(fd);
        let fd = open_mnt(m, "sparse", libc::O_RDONLY);
        assert_eq!(must(sys::pread(&fd, 5, 0), "pread"), b"start");
        assert_eq!(must(sys::pread(&fd, 4, SIZE as i64 - 3), "pread"), b"end+");
        assert_eq!(must(sys::pread(&fd, 4, 1 << 20), "pread"), [0; 4]);
    });
    // Kernel overlayfs copies in 1 MiB chunks and skips holes between them (so ~1 MiB here).
    let st = must(sys::lstat(&s.upper().join("sparse")), "lstat upper sparse");
    assert_eq!(st.st_size as u64, SIZE + 1);
    assert!(
        (st.st_blocks as u64) * 512 < 4 << 20,
        "copy-up filled the holes: {} bytes allocated for a 64 MiB sparse file",
        st.st_blocks * 512
    );
}

#[test]
fn inode_number_is_stable_across_copy_up() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    mounted(&s, |m| {
        let (before_f, before_d) = (ino(&m.path("d/f")), ino(&m.path("d")));
        must(sys::chmod(&m.path("d/f"), 0o600), "chmod (copy-up)");
        assert_eq!(
            ino(&m.path("d/f")),
            before_f,
            "st_ino of d/f changed by copy-up"
        );
        assert_eq!(
            ino(&m.path("d")),
            before_d,
            "st_ino of d changed by copy-up"
        );
    });
}

#[test]
fn lower_hard_links_share_inode_number() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("a"), b"x", 0o644);
    hardlink(&s.lower(0).join("a"), &s.lower(0).join("b"));
    mounted(&s, |m| {
        let (a, b) = (
            must(sys::lstat(&m.path("a")), "a"),
            must(sys::lstat(&m.path("b")), "b"),
        );
        assert_eq!(a.st_ino, b.st_ino, "lower hard links show one st_ino");
        assert_eq!((a.st_nlink, b.st_nlink), (2, 2));
        assert_eq!(read(&m.path("a")), b"x", "read lower hard link a");
        assert_eq!(read(&m.path("b")), b"x", "read lower hard link b");
    });
}

#[test]
fn hardlink_through_mount_has_nlink_two_and_one_inode() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        write_file(&m.path("new"), b"x", 0o644);
        must(sys::link(&m.path("new"), &m.path("other")), "link");
        let (a, b) = (
            must(sys::lstat(&m.path("new")), "new"),
            must(sys::lstat(&m.path("other")), "o"),
        );
        assert_eq!(a.st_ino, b.st_ino);
        assert_eq!((a.st_nlink, b.st_nlink), (2, 2));
        must(sys::unlink(&m.path("new")), "unlink");
        assert_eq!(must(sys::lstat(&m.path("other")), "other").st_nlink, 1);
    });
}

// ---------------------------------------------------------------------------------------------
// Deletion, whiteouts and opaque directories on disk
// ---------------------------------------------------------------------------------------------

#[test]
fn unlink_of_lower_file_leaves_char_0_0_whiteout_in_upper() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    mounted(&s, |m| {
        must(sys::unlink(&m.path("d/f")), "unlink");
        expect_errno(sys::lstat(&m.path("d/f")), libc::ENOENT, "after unlink");
        assert_eq!(listing(&m.path("d")), names(&[".", ".."]));
    });
    assert!(
        is_whiteout(&s.upper().join("d/f")),
        "upper d/f is not a 0/0 char device"
    );
}

#[test]
fn unlink_of_upper_only_file_leaves_no_whiteout() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        write_file(&m.path("tmp"), b"x", 0o644);
        must(sys::unlink(&m.path("tmp")), "unlink");
    });
    assert_eq!(
        Tree::snapshot(s.upper(), SnapOpts::VIEW).paths(),
        [Path::new("")]
    );
}

#[test]
fn rmdir_of_merged_dir_leaves_whiteout() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(2);
    write_file(&s.lower(0).join("d/a"), b"x", 0o644);
    write_file(&s.lower(1).join("d/b"), b"x", 0o644);
    mounted(&s, |m| {
        expect_errno(
            sys::rmdir(&m.path("d")),
            libc::ENOTEMPTY,
            "rmdir non-empty merged dir",
        );
        must(sys::unlink(&m.path("d/a")), "unlink d/a");
        must(sys::unlink(&m.path("d/b")), "unlink d/b");
        must(sys::rmdir(&m.path("d")), "rmdir d");
        expect_errno(sys::lstat(&m.path("d")), libc::ENOENT, "after rmdir");
    });
    assert!(
        is_whiteout(&s.upper().join("d")),
        "upper d is not a whiteout"
    );
}

#[test]
fn mkdir_over_whiteout_makes_opaque_dir() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/old"), b"x", 0o644);
    mounted(&s, |m| {
        must(sys::unlink(&m.path("d/old")), "unlink d/old");
        must(sys::rmdir(&m.path("d")), "rmdir d");
        must(sys::mkdir(&m.path("d"), 0o755), "mkdir d");
        assert_eq!(listing(&m.path("d")), names(&[".", ".."]));
        let xattrs = must(sys::llistxattr(&m.path("d")), "listxattr d");
        assert!(
            xattrs.iter().all(|x| !x.starts_with("trusted.overlay.")),
            "{xattrs:?}"
        );
    });
    assert_eq!(
        opaque_xattr(&s.upper().join("d")).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(listing(&s.upper().join("d")), names(&[".", ".."]));
}

// ---------------------------------------------------------------------------------------------
// Rename
// ---------------------------------------------------------------------------------------------

#[test]
fn rename_of_lower_file_leaves_whiteout_at_old_name() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("old"), b"data", 0o640);
    mounted(&s, |m| {
        must(sys::renameat2(&m.path("old"), &m.path("new"), 0), "rename");
        expect_errno(sys::lstat(&m.path("old")), libc::ENOENT, "old name");
        assert_eq!(read(&m.path("new")), b"data");
    });
    assert!(
        is_whiteout(&s.upper().join("old")),
        "no whiteout at the old name"
    );
    assert_eq!(read(&s.upper().join("new")), b"data");
}

#[test]
fn rename_of_dir_with_lower_content_gives_exdev() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    mounted(&s, |m| {
        expect_errno(
            sys::renameat2(&m.path("d"), &m.path("e"), 0),
            libc::EXDEV,
            "rename d e",
        );
        assert!(exists(&m.path("d/f")));
    });
}

#[test]
fn rename_of_upper_only_dir_moves_it() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        write_file(&m.path("d/sub/f"), b"x", 0o644);
        must(sys::renameat2(&m.path("d"), &m.path("e"), 0), "rename d e");
        assert_eq!(read(&m.path("e/sub/f")), b"x");
        expect_errno(sys::lstat(&m.path("d")), libc::ENOENT, "old dir name");
    });
    assert!(
        !exists(&s.upper().join("d")),
        "upper-only dir needs no whiteout"
    );
    assert_eq!(read(&s.upper().join("e/sub/f")), b"x");
}

#[test]
fn rename_noreplace_onto_lower_file_gives_eexist() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("target"), b"lower", 0o644);
    mounted(&s, |m| {
        write_file(&m.path("src"), b"upper", 0o644);
        let r = sys::renameat2(&m.path("src"), &m.path("target"), libc::RENAME_NOREPLACE);
        expect_errno(r, libc::EEXIST, "RENAME_NOREPLACE");
        assert_eq!(read(&m.path("target")), b"lower");
        let r = sys::renameat2(&m.path("src"), &m.path("fresh"), libc::RENAME_NOREPLACE);
        must(r, "RENAME_NOREPLACE onto a free name");
    });
}

#[test]
fn rename_exchange_swaps_lower_and_upper_files() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("a"), b"lower a", 0o644);
    mounted(&s, |m| {
        write_file(&m.path("b"), b"upper b", 0o600);
        must(
            sys::renameat2(&m.path("a"), &m.path("b"), libc::RENAME_EXCHANGE),
            "exchange",
        );
        assert_eq!(read(&m.path("a")), b"upper b");
        assert_eq!(read(&m.path("b")), b"lower a");
        let r = sys::renameat2(&m.path("a"), &m.path("nope"), libc::RENAME_EXCHANGE);
        expect_errno(r, libc::ENOENT, "exchange with a missing name");
    });
    assert_eq!(read(&s.upper().join("a")), b"upper b");
    assert_eq!(read(&s.upper().join("b")), b"lower a");
}

// ---------------------------------------------------------------------------------------------
// Names and depth
// ---------------------------------------------------------------------------------------------

#[test]
fn non_utf8_and_255_byte_names_work() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let weird = non_utf8_name();
    let long = OsStr::from_bytes(&[b'L'; 255]).to_owned();
    write_file(&s.lower(0).join(weird), b"lower weird", 0o644);
    mounted(&s, |m| {
        assert_eq!(read(&m.path(weird)), b"lower weird");
        write_file(&m.path(&long), b"long", 0o644);
        let mut other = b"\x80new-".to_vec();
        other.extend_from_slice(&[b'x'; 250]);
        write_file(&m.path(OsStr::from_bytes(&other)), b"n", 0o644);
        let mut want = vec![
            b".".to_vec(),
            b"..".to_vec(),
            weird.as_bytes().to_vec(),
            other.clone(),
        ];
        want.push(long.as_bytes().to_vec());
        want.sort();
        assert_eq!(listing(m.mnt()), want);
        must(sys::unlink(&m.path(weird)), "unlink non-UTF-8 lower name");
        let too_long = OsStr::from_bytes(&[b'L'; 256]);
        let r = sys::open(&m.path(too_long), libc::O_CREAT | libc::O_WRONLY, 0o644);
        expect_errno(r, libc::ENAMETOOLONG, "256-byte name");
    });
    assert!(is_whiteout(&s.upper().join(weird)));
    assert_eq!(read(&s.upper().join(&long)), b"long");
}

/// Descend `depth` directories named `name` from `root` with openat (paths beyond PATH_MAX),
/// creating them if `create`.
fn descend(root: &Path, name: &OsStr, depth: usize, create: bool) -> std::os::fd::OwnedFd {
    let mut fd = must(
        sys::open(root, libc::O_RDONLY | libc::O_DIRECTORY, 0),
        "open root",
    );
    for level in 0..depth {
        if create {
            must(
                sys::mkdirat(&fd, name, 0o755),
                &format!("mkdirat level {level}"),
            );
        }
        let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;
        fd = must(
            sys::openat(&fd, name, flags, 0),
            &format!("openat level {level}"),
        );
    }
    fd
}

#[test]
fn tree_deeper_than_path_max_can_be_read_and_copied_up() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let name = OsStr::from_bytes(&[b'd'; 200]).to_owned();
    let depth = 30; // 30 * 201 bytes > PATH_MAX (4096)
    let bottom = descend(s.lower(0), &name, depth, true);
    let leaf = must(
        sys::openat(
            &bottom,
            OsStr::new("leaf"),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        ),
        "create deep leaf",
    );
    must(sys::write(&leaf, b"deep"), "write deep leaf");
    drop((leaf, bottom));
    mounted(&s, |m| {
        let bottom = descend(m.mnt(), &name, depth, false);
        let leaf = must(
            sys::openat(&bottom, OsStr::new("leaf"), libc::O_RDWR, 0),
            "open leaf",
        );
        assert_eq!(must(sys::pread(&leaf, 10, 0), "read leaf"), b"deep");
        must(
            sys::pwrite(&leaf, b"DEEP", 0),
            "write leaf (copy-up of a deep chain)",
        );
        let flags = libc::O_CREAT | libc::O_WRONLY;
        let new = must(
            sys::openat(&bottom, OsStr::new("new"), flags, 0o644),
            "create new",
        );
        must(sys::write(&new, b"new"), "write new");
    });
    let bottom = descend(s.upper(), &name, depth, false);
    let leaf = must(
        sys::openat(&bottom, OsStr::new("leaf"), libc::O_RDONLY, 0),
        "upper leaf",
    );
    assert_eq!(must(sys::pread(&leaf, 10, 0), "read upper leaf"), b"DEEP");
    let new = must(
        sys::openat(&bottom, OsStr::new("new"), libc::O_RDONLY, 0),
        "upper new",
    );
    assert_eq!(must(sys::pread(&new, 10, 0), "read upper new"), b"new");
}

// ---------------------------------------------------------------------------------------------
// Symlinks never lead out of a layer
// ---------------------------------------------------------------------------------------------

#[test]
fn upper_dir_shadows_lower_symlink_to_outside_dir() {
    if !require_fuse() {
        return;
    }
    let outside = tempfile::tempdir().expect("outside dir");
    write_file(&outside.path().join("secret"), b"outside", 0o644);
    let s = Stack::new(2);
    symlink(outside.path(), &s.lower(0).join("a"));
    write_file(&s.upper().join("a/mine"), b"upper", 0o644);
    // Same shape one level down: a lower dir over a lower symlink does not merge with its target.
    symlink(outside.path(), &s.lower(1).join("b"));
    write_file(&s.lower(0).join("b/lower0"), b"x", 0o644);
    let before = Tree::layer_digest(outside.path());
    mounted(&s, |m| {
        let st = must(sys::lstat(&m.path("a")), "lstat a");
        assert_eq!(
            st.st_mode & libc::S_IFMT,
            libc::S_IFDIR,
            "merged a is the upper dir"
        );
        assert_eq!(listing(&m.path("a")), names(&[".", "..", "mine"]));
        expect_errno(sys::lstat(&m.path("a/secret")), libc::ENOENT, "a/secret");
        assert_eq!(listing(&m.path("b")), names(&[".", "..", "lower0"]));
        write_file(&m.path("b/new"), b"x", 0o644);
        write_file(&m.path("a/new"), b"x", 0o644);
    });
    assert_trees_eq(
        "outside dir",
        &before,
        &Tree::layer_digest(outside.path()),
        true,
    );
}

#[test]
fn lower_symlink_is_shown_as_symlink_with_its_target() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    symlink("/etc", &s.lower(0).join("etc-link"));
    symlink(non_utf8_name(), &s.lower(0).join("dangling"));
    mounted(&s, |m| {
        let t = std::fs::read_link(m.path("etc-link")).expect("readlink etc-link");
        assert_eq!(t, Path::new("/etc"));
        let t = std::fs::read_link(m.path("dangling")).expect("readlink dangling");
        assert_eq!(t.as_os_str(), non_utf8_name());
        // Changing the link's owner copies the link up as a link, not its target.
        must(sys::lchown(&m.path("etc-link"), 7, 7), "lchown symlink");
    });
    let t = std::fs::read_link(s.upper().join("etc-link")).expect("upper etc-link is a symlink");
    assert_eq!(t, Path::new("/etc"));
}

// ---------------------------------------------------------------------------------------------
// Read-only mounts, private xattrs, special files, statfs
// ---------------------------------------------------------------------------------------------

#[test]
fn mount_without_upper_is_read_only() {
    if !require_fuse() {
        return;
    }
    let s = Stack::readonly(2);
    write_file(&s.lower(1).join("f"), b"lower", 0o666);
    mkdir(&s.lower(0).join("d"), 0o777);
    mounted(&s, |m| {
        assert_eq!(read(&m.path("f")), b"lower");
        expect_errno(
            sys::open(&m.path("f"), libc::O_WRONLY, 0),
            libc::EROFS,
            "open for write",
        );
        let r = sys::open(&m.path("new"), libc::O_CREAT | libc::O_WRONLY, 0o644);
        expect_errno(r, libc::EROFS, "create");
        expect_errno(sys::mkdir(&m.path("d2"), 0o755), libc::EROFS, "mkdir");
        expect_errno(sys::unlink(&m.path("f")), libc::EROFS, "unlink");
        expect_errno(sys::rmdir(&m.path("d")), libc::EROFS, "rmdir");
        expect_errno(sys::chmod(&m.path("f"), 0o600), libc::EROFS, "chmod");
        expect_errno(
            sys::lsetxattr(&m.path("f"), "user.x", b"1"),
            libc::EROFS,
            "setxattr",
        );
    });
}

#[test]
fn ro_option_with_upper_gives_erofs() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("f"), b"lower", 0o644);
    let before = s.lower_digests();
    {
        let m = UnionMount::with_args(&s, &["-o", "ro"]);
        expect_errno(
            sys::truncate(&m.path("f"), 0),
            libc::EROFS,
            "truncate on -o ro",
        );
        let r = sys::open(&m.path("new"), libc::O_CREAT | libc::O_WRONLY, 0o644);
        expect_errno(r, libc::EROFS, "create on -o ro");
    }
    s.assert_lowers_unchanged(&before);
    assert_eq!(listing(s.upper()), names(&[".", ".."]));
}

#[test]
fn private_overlay_xattrs_are_hidden_in_merged_view() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(2);
    write_file(&s.lower(1).join("d/below"), b"x", 0o644);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    set_opaque(&s.lower(0).join("d"));
    set_xattr(&s.lower(0).join("d"), "user.visible", b"1");
    set_xattr(&s.lower(0).join("d/f"), "trusted.other", b"t");
    mounted(&s, |m| {
        let list = must(sys::llistxattr(&m.path("d")), "listxattr d");
        assert_eq!(
            list,
            ["user.visible"],
            "listxattr shows only non-private xattrs"
        );
        let f_list = must(sys::llistxattr(&m.path("d/f")), "listxattr d/f");
        assert_eq!(
            f_list,
            ["trusted.other"],
            "other trusted.* xattrs stay visible to root"
        );
        let r = sys::lgetxattr(&m.path("d"), "trusted.overlay.opaque");
        expect_errno(
            r,
            libc::ENODATA,
            "getxattr trusted.overlay.opaque of an opaque dir",
        );
    });
}

/// Kernel overlayfs (>= 6.7) escapes rather than refuses `trusted.overlay.X` set through the
/// mount: stored as `trusted.overlay.overlay.X` on the upper, shown back unescaped, and the union
/// itself is unaffected (docs/semantics.md, "Extended attributes").
#[test]
fn private_overlay_xattr_set_through_mount_is_escaped() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    mounted(&s, |m| {
        must(
            sys::lsetxattr(&m.path("d"), "trusted.overlay.opaque", b"y"),
            "setxattr",
        );
        let v = must(
            sys::lgetxattr(&m.path("d"), "trusted.overlay.opaque"),
            "getxattr",
        );
        assert_eq!(v, b"y", "escaped xattr reads back unescaped");
        let list = must(sys::llistxattr(&m.path("d")), "listxattr");
        assert_eq!(list, ["trusted.overlay.opaque"]);
        assert_eq!(
            listing(&m.path("d")),
            names(&[".", "..", "f"]),
            "d must not turn opaque"
        );
    });
    let d = s.upper().join("d");
    assert_eq!(
        opaque_xattr(&d),
        None,
        "the real opaque xattr was set on the upper"
    );
    let v = sys::lgetxattr(&d, "trusted.overlay.overlay.opaque");
    assert_eq!(v, Ok(b"y".to_vec()), "stored escaped in the upper");
}

#[test]
fn mknod_of_whiteout_char_device_through_mount_is_eperm() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        let r = sys::mknod(&m.path("wh"), libc::S_IFCHR | 0o600, sys::makedev(0, 0));
        expect_errno(r, libc::EPERM, "mknod char 0/0");
    });
    assert!(!exists(&s.upper().join("wh")));
}

#[test]
fn mknod_fifo_through_mount_lands_in_upper() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mkdir(&s.lower(0).join("d"), 0o755);
    mounted(&s, |m| {
        must(
            sys::mknod(&m.path("d/fifo"), libc::S_IFIFO | 0o640, 0),
            "mknod fifo",
        );
        let st = must(sys::lstat(&m.path("d/fifo")), "lstat fifo");
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFIFO);
    });
    let st = must(sys::lstat(&s.upper().join("d/fifo")), "lstat upper fifo");
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFIFO);
}

#[test]
fn statfs_reports_upper_filesystem() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let upper = must(sys::statfs(s.upper()), "statfs upper");
    mounted(&s, |m| {
        let st = must(sys::statfs(m.mnt()), "statfs mount");
        assert!(st.f_bsize > 0 && st.f_blocks > 0, "statfs: empty answer");
        assert_eq!(
            st.f_blocks * st.f_bsize as u64,
            upper.f_blocks * upper.f_bsize as u64
        );
        assert!(st.f_namelen >= 255, "f_namelen {}", st.f_namelen);
    });
}

// ---------------------------------------------------------------------------------------------
// Data-path syscalls and locks
// ---------------------------------------------------------------------------------------------

#[test]
fn fallocate_and_seek_data_hole_work() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        let fd = open_mnt(m, "f", libc::O_CREAT | libc::O_RDWR);
        // SAFETY: valid fd.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, 1 << 20) };
        must(sys::ck(r), "fallocate 1 MiB");
        assert_eq!(must(sys::fstat(&fd), "fstat").st_size, 1 << 20);
        let keep = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: valid fd.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), keep, 0, 1 << 20) };
        must(sys::ck(r), "punch hole");
        must(sys::pwrite(&fd, &[1; 4096], 0), "write first block");
        must(sys::pwrite(&fd, &[2; 4096], 2 << 20), "write at 2 MiB");
        // SAFETY: valid fd.
        let hole = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
        assert_eq!(hole, 4096, "SEEK_HOLE from 0");
        // SAFETY: valid fd.
        let data = unsafe { libc::lseek(fd.as_raw_fd(), 4096, libc::SEEK_DATA) };
        assert_eq!(data, 2 << 20, "SEEK_DATA from 4096");
        // SAFETY: valid fd.
        let past = unsafe { libc::lseek(fd.as_raw_fd(), (2 << 20) + 4096, libc::SEEK_DATA) };
        assert_eq!(
            (past, sys::errno()),
            (-1, libc::ENXIO),
            "SEEK_DATA past the end"
        );
    });
}

#[test]
fn copy_file_range_from_lower_file_to_new_file() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write_file(&s.lower(0).join("src"), &data, 0o644);
    mounted(&s, |m| {
        let src = open_mnt(m, "src", libc::O_RDONLY);
        let dst = open_mnt(m, "dst", libc::O_CREAT | libc::O_WRONLY);
        let mut done = 0usize;
        while done < data.len() {
            // SAFETY: valid fds; null offsets use and advance the file offsets.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    data.len() - done,
                    0,
                )
            };
            assert!(n > 0, "copy_file_range: {}", sys::errno_name(sys::errno()));
            done += n as usize;
        }
        drop(dst);
        assert!(read(&m.path("dst")) == data, "copied data differs");
    });
    assert!(read(&s.upper().join("dst")) == data);
    assert!(
        !exists(&s.upper().join("src")),
        "reading the source must not copy it up"
    );
}

#[test]
fn flock_and_posix_locks_conflict_as_on_ext4() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("f"), b"lock me", 0o644);
    mounted(&s, |m| {
        let a = open_mnt(m, "f", libc::O_RDWR);
        let b = open_mnt(m, "f", libc::O_RDWR);
        // SAFETY: valid fds.
        unsafe {
            must(
                sys::ck(libc::flock(a.as_raw_fd(), libc::LOCK_EX)),
                "flock a",
            );
            let r = sys::ck(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB));
            expect_errno(r, libc::EWOULDBLOCK, "flock b while a holds it");
            must(
                sys::ck(libc::flock(a.as_raw_fd(), libc::LOCK_UN)),
                "unlock a",
            );
            must(
                sys::ck(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
                "flock b",
            );
        }
        // OFD locks conflict with classic POSIX locks of the same process, so use disjoint ranges.
        let lock = |ty: i32, start: i64| libc::flock {
            l_type: ty as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: start,
            l_len: 10,
            l_pid: 0,
        };
        // SAFETY: valid fds and flock structs.
        unsafe {
            let mut l = lock(libc::F_WRLCK, 100);
            must(
                sys::ck(libc::fcntl(a.as_raw_fd(), libc::F_SETLK, &mut l)),
                "F_SETLK",
            );
            let mut l = lock(libc::F_WRLCK, 0);
            must(
                sys::ck(libc::fcntl(a.as_raw_fd(), libc::F_OFD_SETLK, &mut l)),
                "OFD a",
            );
            let mut l = lock(libc::F_WRLCK, 0);
            let r = sys::ck(libc::fcntl(b.as_raw_fd(), libc::F_OFD_SETLK, &mut l));
            expect_errno(r, libc::EAGAIN, "OFD lock b while a holds it");
            let mut l = lock(libc::F_WRLCK, 0);
            must(
                sys::ck(libc::fcntl(b.as_raw_fd(), libc::F_OFD_GETLK, &mut l)),
                "OFD getlk",
            );
            assert_eq!(
                l.l_type,
                libc::F_WRLCK as i16,
                "F_OFD_GETLK reports the conflict"
            );
        }
    });
}

// ---------------------------------------------------------------------------------------------
// The daemon: arguments and signals (unionfuse only, not meaningful for the kernel backend)
// ---------------------------------------------------------------------------------------------

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
    let _busy = KernelOverlay::new(&other);
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

// ---------------------------------------------------------------------------------------------
// Regressions
// ---------------------------------------------------------------------------------------------

/// apt's download code fstat()s files it has already unlinked; that gave ENOENT.
#[test]
fn regression_fstat_and_fchmod_after_unlink_while_open() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let p = m.path("tmpfile");
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .expect("create");
        f.write_all(b"abc").expect("write");
        std::fs::remove_file(&p).expect("unlink");
        let md = f.metadata().expect("fstat after unlink");
        assert_eq!((md.len(), md.nlink()), (3, 0));
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .expect("fchmod after unlink");
        assert_eq!(f.metadata().expect("fstat").mode() & 0o777, 0o600);
        assert!(!exists(&s.upper().join("tmpfile")));
    });
}

/// isatty() on a union file asked an ioctl the daemon didn't answer (logged as unimplemented).
#[test]
fn regression_ioctl_on_a_file_is_enotty() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        let p = m.path("f");
        std::fs::write(&p, b"x").expect("create");
        let f = std::fs::File::open(&p).expect("open");
        // SAFETY: winsize is plain old data; all-zero is a valid value.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into ws.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTTY)
        );
    });
}

/// Deep stacks use a per-directory index of the lower names (src/dirindex.rs) instead of
/// probing every layer: the view must still be kernel overlay's, whiteouts and opaque
/// directories at any depth included.
#[test]
fn deep_stack_of_twenty_layers_matches_kernel_overlay() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(20);
    for i in 0..20 {
        let l = s.lower(i);
        layers::write_file(
            &l.join(format!("d/only{i}")),
            format!("{i}").as_bytes(),
            0o644,
        );
        layers::write_file(&l.join("d/shared"), format!("shared{i}").as_bytes(), 0o644);
        layers::write_file(&l.join(format!("d/sub/f{i}")), b"x", 0o600);
    }
    // A whiteout in layer 5 hides layers 6.. for "only7"; an opaque sub in layer 10 hides
    // sub/f11..f19; a file in layer 3 hides a directory below it.
    layers::make_whiteout(&s.lower(5).join("d"), "only7");
    layers::set_opaque(&s.lower(10).join("d/sub"));
    layers::write_file(&s.lower(3).join("d/fd"), b"file wins", 0o644);
    layers::write_file(&s.lower(12).join("d/fd/inner"), b"hidden", 0o644);
    let dup = s.duplicate();
    let ours = {
        let m = UnionMount::new(&s);
        assert_eq!(read(&m.path("d/shared")), b"shared0");
        assert!(!exists(&m.path("d/only7")));
        assert!(!exists(&m.path("d/sub/f15")));
        assert!(exists(&m.path("d/sub/f10")));
        assert_eq!(read(&m.path("d/fd")), b"file wins");
        tree::Tree::snapshot(m.mnt(), tree::SnapOpts::VIEW)
    };
    let theirs = {
        let k = KernelOverlay::new(&dup);
        tree::Tree::snapshot(k.mnt(), tree::SnapOpts::VIEW)
    };
    if let Some(d) = ours.diff(&theirs, false) {
        panic!("unionfuse and kernel overlay differ on a 20-layer stack:\n{d}");
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
