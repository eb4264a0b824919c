//! Mounted tests of extended attributes: overlay's private xattrs are hidden from the merged view,
//! and setting one through the mount escapes it as kernel overlayfs does.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use common::view::*;
use common::*;

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
    // trusted.* needs CAP_SYS_ADMIN in the initial namespace; elsewhere the overlay's own
    // namespace is user.overlay.* (`userxattr`) and there is no other trusted.* to keep.
    let root = mode() == Mode::Root;
    if root {
        set_xattr(&s.lower(0).join("d/f"), "trusted.other", b"t");
    }
    let opaque = format!("{}opaque", overlay_prefix());
    mounted(&s, |m| {
        let list = must(sys::llistxattr(&m.path("d")), "listxattr d");
        assert_eq!(
            list,
            ["user.visible"],
            "listxattr shows only non-private xattrs"
        );
        let f_list = must(sys::llistxattr(&m.path("d/f")), "listxattr d/f");
        let other: &[&str] = if root { &["trusted.other"] } else { &[] };
        assert_eq!(f_list, other, "other trusted.* xattrs stay visible to root");
        let r = sys::lgetxattr(&m.path("d"), &opaque);
        expect_errno(
            r,
            libc::ENODATA,
            &format!("getxattr {opaque} of an opaque dir"),
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
    let prefix = overlay_prefix();
    let opaque = format!("{prefix}opaque");
    mounted(&s, |m| {
        must(sys::lsetxattr(&m.path("d"), &opaque, b"y"), "setxattr");
        let v = must(sys::lgetxattr(&m.path("d"), &opaque), "getxattr");
        assert_eq!(v, b"y", "escaped xattr reads back unescaped");
        let list = must(sys::llistxattr(&m.path("d")), "listxattr");
        assert_eq!(list, [opaque.as_str()]);
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
    let v = sys::lgetxattr(&d, &format!("{prefix}overlay.opaque"));
    assert_eq!(v, Ok(b"y".to_vec()), "stored escaped in the upper");
}
