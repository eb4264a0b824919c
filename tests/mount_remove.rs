//! Mounted tests of unlink, rmdir and mkdir over a whiteout: what the merged view shows and which
//! whiteouts and opaque directories land in the upper on disk.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use std::path::Path;

use common::view::*;
use common::*;

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
