//! Mounted tests of read-only unions: without an upper, or with `-o ro`, every change gives
//! EROFS and nothing is written.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use common::view::*;
use common::*;

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
