//! Mounted tests of copy-up: every first change of a lower file (write, append, truncate,
//! chmod, chown, utimes, setxattr, link) copies it and its parent chain up with their metadata,
//! keeps holes, and keeps inode numbers and hard links stable.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use common::view::*;
use common::*;

const LOWER_DATA: &[u8] = b"hello lower\n";

/// Build lower0 with `dir/f` (0640, 1000:1001, user.k=v, mtime 1e6) in `dir` (0751, 1002:1003,
/// user.dir=d), run `op`, then check `dir/f` in the merged view and in the upper against the lower
/// entry changed by `expect`; the parent must be copied up with its metadata.
fn copy_up_case(op: impl FnOnce(&UnionMount), expect: impl Fn(&mut Entry)) {
    if !require_fuse() || !common::can_chown() {
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
