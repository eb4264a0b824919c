//! Hostile layers: layers built by someone who wants the daemon to read or write
//! outside them, or to hang or panic. Symlinks pointing out of the layer (absolute, relative
//! with `..`, chains), a lower directory shadowed by a symlink, a lower directory swapped for a
//! symlink while mounted, names with every byte 0x01-0xff, 255-byte names, trees deeper than
//! PATH_MAX, malformed overlay xattrs, a char device that is not 0/0 (so not a whiteout),
//! fifos and devices. A canary directory next to the layers must never be read or written
//! through the daemon; every request is answered; the view matches kernel overlay's on a copy
//! of the same layers. Needs root and /dev/fuse (and kernel overlayfs for the comparisons).

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    KernelOverlay, SnapOpts, Stack, Tree, UnionMount, assert_trees_eq, content_hash, require_fuse,
    within,
};

const CANARY: &[u8] = b"CANARY: the daemon must never read this file";

/// A canary dir next to the layers: a secret file and a directory with one entry.
fn make_canary(stack: &Stack) -> PathBuf {
    let c = stack.base.path().join("canary");
    common::write_file(&c.join("secret"), CANARY, 0o644);
    common::write_file(&c.join("dir/inside"), CANARY, 0o644);
    c
}

#[track_caller]
fn assert_canary_untouched(canary: &Path, before: &Tree) {
    let now = Tree::layer_digest(canary);
    if let Some(d) = before.diff(&now, true) {
        panic!("the canary outside the layers changed:\n{d}");
    }
}

/// No regular file in a view (read without following symlinks) has the canary's content.
#[track_caller]
fn assert_no_canary_content(view: &Tree) {
    let h = content_hash(CANARY);
    for (p, e) in &view.entries {
        assert_ne!(
            e.content,
            Some(h),
            "{} reads the canary's content through the mount",
            p.display()
        );
    }
}

/// The merged view, comparable between unionfuse and kernel overlay (no mtimes of merged dirs:
/// both take the top layer's; st_ino is never compared).
fn view(root: &Path) -> Tree {
    Tree::snapshot(root, SnapOpts::VIEW)
}

fn build_symlink_layers(stack: &Stack, canary: &Path) {
    let (l0, l1, up) = (stack.lower(0), stack.lower(1), stack.upper());
    let secret = canary.join("secret");
    common::symlink(&secret, &l0.join("abs"));
    common::symlink("../canary/secret", &l0.join("rel"));
    common::symlink(
        "../../../../../../../../../../../../../etc/passwd",
        &l0.join("deep_rel"),
    );
    common::symlink("c2", &l0.join("c1"));
    common::symlink("c3", &l0.join("c2"));
    common::symlink("../canary/secret", &l1.join("c3"));
    common::symlink("loop2", &l0.join("loop1"));
    common::symlink("loop1", &l0.join("loop2"));
    // A directory in lower1 shadowed by a symlink in lower0 pointing at the canary dir: the
    // merged `shadowed` is the symlink; lower1's directory must not leak into the view.
    common::symlink(canary.join("dir"), &l0.join("shadowed"));
    common::write_file(&l1.join("shadowed/f"), b"lower1 file", 0o644);
    // The reverse: a lower directory below an upper symlink (upper has symlink `a`).
    common::symlink("../canary/dir", &up.join("a"));
    common::write_file(&l0.join("a/f"), b"lower a/f", 0o644);
    // A merged directory whose lowest copy is a symlink to the canary: merging stops there.
    common::write_file(&l0.join("m/own"), b"own", 0o644);
    common::symlink(canary.join("dir"), &l1.join("m"));
    // Symlinks inside a directory that is copied up.
    common::write_file(&l0.join("cu/file"), b"file", 0o644);
    common::symlink("../../canary/secret", &l0.join("cu/link"));
}

#[test]
fn symlinks_out_of_layers_are_never_followed_by_the_daemon() {
    if !require_fuse() || !common::overlay_available() {
        return;
    }
    let stack = Stack::new(2);
    let canary = make_canary(&stack);
    build_symlink_layers(&stack, &canary);
    let canary_before = Tree::layer_digest(&canary);
    let kstack = stack.duplicate();
    let kcanary = make_canary(&kstack);
    // Duplicated absolute links still point at the first canary: fine, both are checked.
    let uview;
    {
        let m = UnionMount::new(&stack);
        let mnt = m.mnt().to_path_buf();
        uview = within(Duration::from_secs(60), "symlink layers", move || {
            assert_no_canary_content(&view(&mnt));
            // readlink returns the target unchanged; lstat says symlink.
            for n in ["abs", "rel", "c1", "shadowed", "a", "loop1"] {
                let st = fs::symlink_metadata(mnt.join(n)).unwrap();
                assert!(st.file_type().is_symlink(), "{n} is not a symlink");
            }
            assert_eq!(
                fs::read_link(mnt.join("rel")).unwrap(),
                Path::new("../canary/secret")
            );
            // O_NOFOLLOW opens fail with ELOOP, as on any filesystem.
            for n in ["abs", "rel", "c1", "loop1"] {
                let e = fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(mnt.join(n))
                    .unwrap_err();
                assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{n}");
            }
            // Merging stops at the symlink: only lower0's entry.
            let names: Vec<_> = fs::read_dir(mnt.join("m"))
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![OsStr::new("own").to_owned()]);
            // Changes that copy up the directory holding symlinks, and the symlinks themselves.
            fs::write(mnt.join("cu/new"), b"new").unwrap();
            let e = std::process::Command::new("chown")
                .args(["-h", "1:1"])
                .arg(mnt.join("cu/link"))
                .status()
                .unwrap();
            assert!(e.success(), "chown -h of a lower symlink");
            assert_eq!(
                fs::read_link(mnt.join("cu/link")).unwrap(),
                Path::new("../../canary/secret")
            );
            // xattr calls on symlinks stay on the symlink (EPERM for user.* on a symlink).
            let r = common::sys::lsetxattr(&mnt.join("abs"), "user.x", b"1");
            assert_eq!(r, Err(libc::EPERM), "user xattr on a symlink");
            assert!(common::sys::lgetxattr(&mnt.join("abs"), "user.x").is_err());
            // Removing symlinks removes the links, not their targets.
            fs::remove_file(mnt.join("abs")).unwrap();
            fs::remove_file(mnt.join("c1")).unwrap();
            view(&mnt)
        });
        let log = m.log_text();
        assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
    }
    assert_canary_untouched(&canary, &canary_before);
    assert_no_canary_content(&uview);
    assert_eq!(
        fs::read_link(stack.upper().join("cu/link")).unwrap(),
        Path::new("../../canary/secret")
    );
    if common::overlay_available() {
        let kview = {
            let k = KernelOverlay::new(&kstack);
            let mnt = k.mnt().to_path_buf();
            fs::write(mnt.join("cu/new"), b"new").unwrap();
            let _ = std::process::Command::new("chown")
                .args(["-h", "1:1"])
                .arg(mnt.join("cu/link"))
                .status();
            fs::remove_file(mnt.join("abs")).unwrap();
            fs::remove_file(mnt.join("c1")).unwrap();
            view(&mnt)
        };
        let norm = |t: Tree| {
            t.normalize(|_, e| {
                e.mtime = None;
                if e.kind == common::Kind::Dir {
                    e.nlink = None;
                }
            })
        };
        assert_trees_eq(
            "unionfuse vs kernel overlay (symlink layers)",
            &norm(uview),
            &norm(kview),
            false,
        );
    }
    let _ = kcanary;
}

#[test]
fn lower_directory_swapped_for_a_symlink_while_mounted_never_escapes() {
    if !require_fuse() || !common::needs_initial_root("drops the kernel's caches (drop_caches)") {
        return;
    }
    let stack = Stack::new(1);
    let canary = make_canary(&stack);
    let l0 = stack.lower(0).to_path_buf();
    common::write_file(&l0.join("d/sub/f"), b"lower d/sub/f", 0o644);
    common::write_file(&l0.join("e/g"), b"lower e/g", 0o644);
    let canary_before = Tree::layer_digest(&canary);
    let m = UnionMount::new(&stack);
    let mnt = m.mnt().to_path_buf();
    // Hold the merged directories open: the kernel keeps their nodes, and every name resolved
    // below them is resolved by the daemon (a path through the mount would be resolved by the
    // caller's kernel, which follows a symlink out of the mount, as on any filesystem).
    assert_eq!(fs::read(mnt.join("d/sub/f")).unwrap(), b"lower d/sub/f");
    assert_eq!(fs::read(mnt.join("e/g")).unwrap(), b"lower e/g");
    let dir =
        |p: &str| common::sys::open(&mnt.join(p), libc::O_RDONLY | libc::O_DIRECTORY, 0).unwrap();
    let held = vec![("d", dir("d")), ("e", dir("e")), ("d/sub", dir("d/sub"))];
    // Unsupported, but must not escape: swap lower dirs for symlinks to the canary.
    fs::rename(l0.join("d"), stack.base.path().join("d.old")).unwrap();
    common::symlink(canary.join("dir"), &l0.join("d"));
    fs::rename(l0.join("e"), stack.base.path().join("e.old")).unwrap();
    common::symlink("../canary/dir", &l0.join("e"));
    common::drop_caches();
    let mnt2 = mnt.clone();
    let canary2 = canary.clone();
    within(
        Duration::from_secs(60),
        "ops on swapped lower dirs",
        move || {
            for (p, fd) in &held {
                if let Ok(names) = common::sys::read_dir_names(fd, false) {
                    assert!(
                        !names.iter().any(|n| n == b"inside"),
                        "{p}: the daemon listed the canary dir"
                    );
                }
                for n in ["inside", "f", "g", "sub"] {
                    if let Ok(f) = common::sys::openat(fd, OsStr::new(n), libc::O_RDONLY, 0)
                        && let Ok(data) = common::sys::pread(&f, 4096, 0)
                    {
                        assert_ne!(data, CANARY, "{p}/{n} read the canary through the daemon");
                    }
                }
                // Writes that copy up the swapped directories.
                let _ = common::sys::openat(
                    fd,
                    OsStr::new("new"),
                    libc::O_WRONLY | libc::O_CREAT,
                    0o644,
                );
                let _ = common::sys::mkdirat(fd, OsStr::new("newdir"), 0o755);
            }
            assert!(
                !canary2.join("dir/new").exists(),
                "wrote into the canary dir"
            );
            assert!(
                !canary2.join("dir/newdir").exists(),
                "wrote into the canary dir"
            );
            // The mount still answers.
            fs::write(mnt2.join("alive"), b"alive").unwrap();
            assert_eq!(fs::read(mnt2.join("alive")).unwrap(), b"alive");
            drop(held);
        },
    );
    assert_canary_untouched(&canary, &canary_before);
    let log = m.log_text();
    assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
}

fn build_name_layers(stack: &Stack) {
    let l0 = stack.lower(0);
    // One file per byte value (never '/' or NUL), and one name holding all of them.
    let mut all = Vec::new();
    for b in 1u8..=255 {
        if b == b'/' {
            continue;
        }
        all.push(b);
        let name = [b'n', b];
        common::write_file(&common::at(l0, &name), &[b], 0o644);
    }
    common::write_file(&common::at(l0, &all), b"all bytes", 0o644);
    assert_eq!(all.len(), 254);
    let long = vec![b'L'; 255];
    common::write_file(&common::at(&l0.join("d"), &long), b"255", 0o644);
    common::mkdir(&common::at(l0, &long), 0o755);
    common::write_file(&common::at(&common::at(l0, &long), &long), b"deeper", 0o644);
    // Names that look special to overlay or to shells.
    for n in [
        &b".wh.x"[..],
        b".wh..wh..opq",
        b"-rf",
        b"a\nb",
        b"\xff\xfe",
        b" ",
        b"...",
    ] {
        common::write_file(&common::at(&l0.join("odd"), n), n, 0o644);
    }
}

#[test]
fn names_with_every_byte_and_255_bytes_match_the_kernel() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    build_name_layers(&stack);
    let kstack = stack.duplicate();
    let ops = |mnt: &Path| {
        // Copy-up and unlink of some odd names, create of 255-byte names through the mount.
        let long = vec![b'M'; 255];
        fs::write(common::at(mnt, &long), b"new long").unwrap();
        let too_long = vec![b'M'; 256];
        let e = fs::write(common::at(mnt, &too_long), b"x").unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENAMETOOLONG));
        fs::write(common::at(mnt, &[b'n', 0x01]), b"changed").unwrap();
        fs::remove_file(common::at(mnt, &[b'n', 0xff])).unwrap();
        fs::rename(common::at(mnt, b"n\n"), common::at(mnt, &[b'r', 0x80])).unwrap();
        fs::remove_file(mnt.join("odd/.wh..wh..opq")).unwrap();
        view(mnt)
    };
    let u = {
        let m = UnionMount::new(&stack);
        let mnt = m.mnt().to_path_buf();
        within(Duration::from_secs(60), "odd names", move || ops(&mnt))
    };
    assert!(u.get(OsStr::from_bytes(&[b'n', 0x01])).is_some());
    if common::overlay_available() {
        let k = {
            let k = KernelOverlay::new(&kstack);
            ops(k.mnt())
        };
        let norm = |t: Tree| t.normalize(|_, e| e.mtime = None);
        assert_trees_eq("odd names vs kernel", &norm(u), &norm(k), false);
    }
}

/// Components of the deep tree: 40 x 120 bytes = 4,840 > PATH_MAX.
const DEEP: usize = 40;

fn deep_name(i: usize) -> Vec<u8> {
    let mut n = format!("level{i:03}-").into_bytes();
    n.resize(120, b'x');
    n
}

/// Walk `root/level000/.../levelN` with openat, creating dirs if `create`.
fn deep_fd(root: &Path, depth: usize, create: bool) -> Result<std::os::fd::OwnedFd, i32> {
    let mut fd = common::sys::open(root, libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    for i in 0..depth {
        let n = deep_name(i);
        if create {
            match common::sys::mkdirat(&fd, OsStr::from_bytes(&n), 0o755) {
                Ok(()) | Err(libc::EEXIST) => {}
                Err(e) => return Err(e),
            }
        }
        fd = common::sys::openat(
            &fd,
            OsStr::from_bytes(&n),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
    }
    Ok(fd)
}

fn write_at(dir: &std::os::fd::OwnedFd, name: &str, data: &[u8]) -> Result<(), i32> {
    let fd = common::sys::openat(
        dir,
        OsStr::new(name),
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC,
        0o644,
    )?;
    common::sys::write(&fd, data).map(|_| ())
}

fn read_at(dir: &std::os::fd::OwnedFd, name: &str) -> Result<Vec<u8>, i32> {
    let fd = common::sys::openat(dir, OsStr::new(name), libc::O_RDONLY, 0)?;
    common::sys::pread(&fd, 1 << 16, 0)
}

#[test]
fn trees_deeper_than_path_max_work_and_match_the_kernel() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    let bottom = deep_fd(stack.lower(0), DEEP, true).unwrap();
    write_at(&bottom, "f", b"bottom of a deep lower").unwrap();
    drop(bottom);
    let before = stack.lower_digests();
    {
        let m = UnionMount::new(&stack);
        let mnt = m.mnt().to_path_buf();
        within(Duration::from_secs(60), "deep tree", move || {
            let fd = deep_fd(&mnt, DEEP, false).expect("walk the deep tree through the mount");
            assert_eq!(read_at(&fd, "f").unwrap(), b"bottom of a deep lower");
            // A write at the bottom copies up 40 directories whose path exceeds PATH_MAX.
            write_at(&fd, "f", b"changed").unwrap();
            write_at(&fd, "g", b"new").unwrap();
            assert_eq!(read_at(&fd, "f").unwrap(), b"changed");
            drop(fd);
            // Deeper still, created through the mount.
            let fd = deep_fd(&mnt, DEEP + 10, true).expect("mkdir below the deep tree");
            write_at(&fd, "h", b"deepest").unwrap();
            let n = std::process::Command::new("find")
                .arg(&mnt)
                .output()
                .unwrap();
            assert!(n.status.success(), "find over the deep tree");
        });
    }
    stack.assert_lowers_unchanged(&before);
    let up = deep_fd(stack.upper(), DEEP, false).expect("deep upper copy");
    assert_eq!(read_at(&up, "f").unwrap(), b"changed");
    assert_eq!(read_at(&up, "g").unwrap(), b"new");
    let up = deep_fd(stack.upper(), DEEP + 10, false).expect("deepest upper dir");
    assert_eq!(read_at(&up, "h").unwrap(), b"deepest");
}

fn build_xattr_layers(stack: &Stack) {
    // The overlay namespace of this mode: trusted.overlay.* as root, user.overlay.* otherwise.
    let p = common::overlay_prefix();
    let (l0, l1, up) = (stack.lower(0), stack.lower(1), stack.upper());
    // Opaque values other than "y" do not make a directory opaque.
    for (i, v) in [
        &b"garbage"[..],
        b"",
        b"\0",
        b"yy",
        b"Y",
        b"x",
        &[b'y'; 3000][..],
    ]
    .iter()
    .enumerate()
    {
        let d = format!("op{i}");
        common::write_file(&l0.join(&d).join("top"), b"top", 0o644);
        common::write_file(&l1.join(&d).join("bottom"), b"bottom", 0o644);
        common::set_xattr(&l0.join(&d), &format!("{p}opaque"), v);
    }
    // Garbage in our own origin record and in the kernel's overlay xattrs.
    common::write_file(&up.join("origin_garbage"), b"o", 0o644);
    common::set_xattr(
        &up.join("origin_garbage"),
        &format!("{p}unionfuse.origin"),
        b"not a number",
    );
    common::write_file(&up.join("origin_huge"), b"o", 0o644);
    common::set_xattr(
        &up.join("origin_huge"),
        &format!("{p}unionfuse.origin"),
        b"18446744073709551615",
    );
    common::write_file(&up.join("origin_big"), b"o", 0o644);
    common::set_xattr(
        &up.join("origin_big"),
        &format!("{p}unionfuse.origin"),
        &[b'9'; 2000],
    );
    common::write_file(&l0.join("redirect"), b"r", 0o644);
    common::set_xattr(&l0.join("redirect"), &format!("{p}redirect"), b"/../../etc");
    // Oversized user values and many names.
    common::write_file(&l0.join("bigx"), b"b", 0o644);
    common::set_xattr(&l0.join("bigx"), "user.big", &[0xab; 3800]);
    common::write_file(&l0.join("manyx"), b"m", 0o644);
    for i in 0..100 {
        common::set_xattr(&l0.join("manyx"), &format!("user.n{i:03}"), b"v");
    }
    common::set_xattr(&l0.join("manyx"), "user.overlay.opaque", b"y");
    // Escaped private names in a lower (kernel 6.7+ escaping).
    common::set_xattr(&l0.join("manyx"), &format!("{p}overlay.esc"), b"e");
}

#[test]
fn malformed_overlay_xattrs_match_the_kernel() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(2);
    build_xattr_layers(&stack);
    let kstack = stack.duplicate();
    let ops = |mnt: &Path| {
        // Copy up files with big and many xattrs; getxattr with a too-small buffer.
        fs::write(mnt.join("bigx"), b"B").unwrap();
        let r = unsafe {
            let p = common::sys::cpath(mnt.join("manyx"));
            let mut buf = [0u8; 8];
            libc::lgetxattr(
                p.as_ptr(),
                c"user.n001".as_ptr(),
                buf.as_mut_ptr().cast(),
                0,
            )
        };
        assert_eq!(r, 1, "size query");
        fs::write(mnt.join("manyx"), b"M").unwrap();
        let mut names = common::sys::llistxattr(&mnt.join("manyx")).unwrap();
        names.sort();
        let big = common::sys::lgetxattr(&mnt.join("bigx"), "user.big").unwrap();
        assert_eq!(big.len(), 3800);
        for i in 0..7 {
            let _ = fs::read_dir(mnt.join(format!("op{i}"))).unwrap().count();
        }
        for n in ["origin_garbage", "origin_huge", "origin_big", "redirect"] {
            fs::metadata(mnt.join(n)).unwrap();
            fs::write(mnt.join(n), b"w").unwrap();
        }
        (view(mnt), names)
    };
    let (u, unames) = {
        let m = UnionMount::new(&stack);
        let mnt = m.mnt().to_path_buf();
        let r = within(Duration::from_secs(60), "malformed xattrs", move || {
            ops(&mnt)
        });
        let log = m.log_text();
        assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
        r
    };
    // Garbage opaque values merge.
    for i in 0..7 {
        assert!(
            u.get(format!("op{i}/bottom")).is_some(),
            "op{i} treated as opaque"
        );
    }
    // An ordinary xattr as root; the overlay's own (private, hidden) in the other modes.
    assert_eq!(
        unames.contains(&"user.overlay.opaque".to_string()),
        common::mode() == common::Mode::Root
    );
    if common::overlay_available() {
        let (k, knames) = {
            let k = KernelOverlay::new(&kstack);
            ops(k.mnt())
        };
        let norm = |t: Tree| t.normalize(|_, e| e.mtime = None);
        assert_trees_eq("malformed xattrs vs kernel", &norm(u), &norm(k), false);
        assert_eq!(unames, knames, "listxattr of a copied-up file");
    }
}

fn build_special_layers(stack: &Stack) {
    let (l0, l1, up) = (stack.lower(0), stack.lower(1), stack.upper());
    // char 1/3 and 0/1 are devices, not whiteouts: they hide lower1's files of the same name.
    common::sys::mknod(
        &l0.join("c13"),
        libc::S_IFCHR | 0o644,
        common::sys::makedev(1, 3),
    )
    .unwrap();
    common::write_file(&l1.join("c13"), b"hidden by the device", 0o644);
    common::sys::mknod(
        &l0.join("c01"),
        libc::S_IFCHR | 0o600,
        common::sys::makedev(0, 1),
    )
    .unwrap();
    common::write_file(&l1.join("c01"), b"hidden", 0o644);
    common::sys::mknod(
        &up.join("upc"),
        libc::S_IFCHR | 0o644,
        common::sys::makedev(1, 3),
    )
    .unwrap();
    common::write_file(&l0.join("upc"), b"hidden by upper device", 0o644);
    // A real whiteout with an odd mode and link count still is one.
    common::make_whiteout(up, "wo");
    common::write_file(&l0.join("wo"), b"whited out", 0o644);
    common::sys::chmod(&up.join("wo"), 0o777).unwrap();
    common::hardlink(&up.join("wo"), &up.join("wo2"));
    common::write_file(&l0.join("wo2"), b"whited out too", 0o644);
    // Block device, fifos, a socket-like fifo in a dir that gets copied up.
    common::sys::mknod(
        &l0.join("blk"),
        libc::S_IFBLK | 0o600,
        common::sys::makedev(7, 200),
    )
    .unwrap();
    common::mkfifo(&l0.join("fifo"), 0o644);
    common::mkfifo(&l0.join("fd/fifo2"), 0o666);
    common::write_file(&l0.join("fd/file"), b"f", 0o644);
}

#[test]
fn devices_fifos_and_non_whiteout_char_devices_match_the_kernel() {
    if !require_fuse() || !common::needs_initial_root("creates device nodes (CAP_MKNOD)") {
        return;
    }
    let stack = Stack::new(2);
    build_special_layers(&stack);
    let kstack = stack.duplicate();
    let before = stack.lower_digests();
    // Never opens the fifos (an open would block the daemon forever).
    let ops = |mnt: &Path| {
        common::sys::chmod(&mnt.join("fifo"), 0o600).unwrap();
        common::sys::chmod(&mnt.join("c13"), 0o600).unwrap();
        common::sys::chmod(&mnt.join("blk"), 0o640).unwrap();
        fs::write(mnt.join("fd/new"), b"n").unwrap();
        let e = common::sys::lsetxattr(&mnt.join("fd/fifo2"), "user.x", b"1");
        let rm = fs::remove_file(mnt.join("c01")).map_err(|e| e.raw_os_error());
        let mk = common::sys::mknod(&mnt.join("newfifo"), libc::S_IFIFO | 0o600, 0);
        // A whiteout can't be made through the mount.
        let wo = common::sys::mknod(&mnt.join("fake_wo"), libc::S_IFCHR | 0o600, 0);
        // Opening a fifo non-blocking is handled by the kernel; the daemon must stay responsive.
        let f = fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(mnt.join("fifo"))
            .map(|_| ())
            .map_err(|e| e.raw_os_error());
        (view(mnt), vec![format!("{e:?} {rm:?} {mk:?} {wo:?} {f:?}")])
    };
    let (u, uerr) = {
        let m = UnionMount::with_args(&stack, &["-o", "allow_other"]);
        let mnt = m.mnt().to_path_buf();
        let r = within(Duration::from_secs(60), "special files", move || ops(&mnt));
        let log = m.log_text();
        assert!(!log.contains("panicked"), "daemon panicked:\n{log}");
        r
    };
    stack.assert_lowers_unchanged(&before);
    let c13 = u.get("c13").expect("c13 (char 1/3) is not a whiteout");
    assert_eq!(c13.kind, common::Kind::CharDev);
    assert!(u.get("wo").is_none() && u.get("wo2").is_none(), "whiteouts");
    assert!(u.get("c01").is_none(), "c01 removed");
    let up = fs::symlink_metadata(stack.upper().join("fifo")).unwrap();
    assert!(
        std::os::unix::fs::FileTypeExt::is_fifo(&up.file_type()),
        "fifo copied up as a fifo"
    );
    assert_eq!(up.mode() & 0o777, 0o600);
    if common::overlay_available() {
        let (k, kerr) = {
            let k = KernelOverlay::new(&kstack);
            ops(k.mnt())
        };
        let norm = |t: Tree| t.normalize(|_, e| e.mtime = None);
        assert_trees_eq("special files vs kernel", &norm(u), &norm(k), false);
        assert_eq!(
            uerr, kerr,
            "errnos (setxattr, unlink, mknod fifo, mknod 0/0, open fifo)"
        );
    }
}
