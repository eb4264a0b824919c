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

/// D16: on a host without SELinux, `security.selinux` of an object that has no label is "not
/// supported" (so `ls -l` stops asking, one round trip per file saved); a label that is there
/// in a layer is served, and one set through the mount is stored and read back.
#[test]
fn selinux_label_is_unsupported_where_absent_and_served_where_present() {
    if kernel_backend() || !require_fuse() {
        return;
    }
    if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        common::mode::note_skip(
            "skipping: this host runs SELinux, where labels are always answered",
        );
        return;
    }
    // security.* needs CAP_SYS_ADMIN in the initial namespace.
    if !needs_initial_root("sets security.selinux in a lower layer") {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("plain"), b"x", 0o644);
    write_file(&s.lower(0).join("labeled"), b"x", 0o644);
    let label = b"system_u:object_r:etc_t:s0";
    set_xattr(&s.lower(0).join("labeled"), "security.selinux", label);
    mounted(&s, |m| {
        let r = sys::lgetxattr(&m.path("plain"), "security.selinux");
        expect_errno(r, libc::EOPNOTSUPP, "getxattr security.selinux, no label");
        let r = sys::lgetxattr(&m.path("plain"), "security.other");
        expect_errno(
            r,
            libc::ENODATA,
            "getxattr of another absent security.* name",
        );
        let v = must(
            sys::lgetxattr(&m.path("labeled"), "security.selinux"),
            "getxattr security.selinux of a labeled lower file",
        );
        assert_eq!(v, label);
        must(
            sys::lsetxattr(&m.path("plain"), "security.selinux", label),
            "setxattr security.selinux through the mount",
        );
        let v = must(
            sys::lgetxattr(&m.path("plain"), "security.selinux"),
            "getxattr after setxattr",
        );
        assert_eq!(v, label);
        let up = must(
            sys::lgetxattr(&s.upper().join("plain"), "security.selinux"),
            "the label in the upper",
        );
        assert_eq!(up, label);
    });
}
