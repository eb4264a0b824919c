//! Mounted tests of rename: whiteouts left at the old name, EXDEV for directories with lower
//! content without redirect_dir (tests/redirect.rs has them with it), RENAME_NOREPLACE and RENAME_EXCHANGE across layers.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use common::view::*;
use common::*;

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
fn rename_of_dir_with_lower_content_gives_exdev_without_redirects() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("d/f"), b"x", 0o644);
    {
        let m = UnionMount::with_args(&s, &["-o", "redirect_dir=nofollow"]);
        expect_errno(
            sys::renameat2(&m.path("d"), &m.path("e"), 0),
            libc::EXDEV,
            "rename d e",
        );
        assert!(exists(&m.path("d/f")));
    }
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
