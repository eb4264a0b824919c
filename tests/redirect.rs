//! redirect_dir: renaming directories that have lower copies. The upper records each move in
//! kernel overlay's format (a whiteout at the old name, `overlay.redirect` holding the old
//! name or the absolute lower path, no opaque flag), lookups follow redirects (ours and the
//! kernel's), and each side mounts the other's upper with the same view. A forged redirect
//! never leads out of the layers.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use common::view::*;
use common::*;

/// Lower `a/{f,sub/g}` and an empty lower `d`, as in the kernel session the format was
/// read from.
fn build(s: &Stack) {
    write_file(&s.lower(0).join("a/f"), b"hi\n", 0o644);
    write_file(&s.lower(0).join("a/sub/g"), b"s\n", 0o644);
    mkdir(&s.lower(0).join("d"), 0o755);
}

/// `mv a b; mv b d/c; mv d e; mv e/c e/c2` under `mnt`.
fn moves(mnt: &Path) {
    for (from, to) in [("a", "b"), ("b", "d/c"), ("d", "e"), ("e/c", "e/c2")] {
        must(
            sys::renameat2(&mnt.join(from), &mnt.join(to), 0),
            &format!("rename {from} {to}"),
        );
    }
}

fn redirect_of(p: &Path) -> Option<Vec<u8>> {
    sys::lgetxattr_opt(p, &format!("{}redirect", overlay_prefix()))
}

fn ls(p: &Path) -> Vec<Vec<u8>> {
    let mut l = listing(p);
    l.retain(|n| n != b"." && n != b"..");
    l
}

fn view(mnt: &Path) -> Tree {
    Tree::snapshot(mnt, SnapOpts::VIEW)
}

/// What the kernel wrote on 6.18 for `moves` (redirect_dir=on), checked on our upper.
#[track_caller]
fn assert_kernel_format(upper: &Path) {
    assert!(is_whiteout(&upper.join("a")), "whiteout at a");
    assert!(is_whiteout(&upper.join("d")), "whiteout at d");
    assert_eq!(redirect_of(&upper.join("e")).as_deref(), Some(&b"d"[..]));
    assert_eq!(
        redirect_of(&upper.join("e/c2")).as_deref(),
        Some(&b"/a"[..])
    );
    assert_eq!(opaque_xattr(&upper.join("e")), None, "e is not opaque");
    assert_eq!(opaque_xattr(&upper.join("e/c2")), None, "c2 is not opaque");
    assert_eq!(
        list_rel(&upper.join("e/c2")),
        Vec::<std::path::PathBuf>::new()
    );
}

#[test]
fn renames_of_lower_dirs_write_kernel_overlays_redirects() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    build(&s);
    let digest = s.lower_digests();
    let ours = {
        let m = UnionMount::with_args(&s, &["-o", "redirect_dir=on"]);
        let ino_a = ino(&m.path("a"));
        moves(m.mnt());
        assert_eq!(ls(m.mnt()), names(&["e"]));
        assert_eq!(ls(&m.path("e/c2")), names(&["f", "sub"]));
        assert_eq!(read(&m.path("e/c2/sub/g")), b"s\n");
        assert_eq!(
            ino(&m.path("e/c2")),
            ino_a,
            "a moved directory keeps its st_ino"
        );
        expect_errno(sys::lstat(&m.path("a")), libc::ENOENT, "old name a");
        // Moved back under its own name: the absolute redirect stays.
        must(
            sys::renameat2(&m.path("e/c2"), &m.path("a"), 0),
            "mv e/c2 a",
        );
        assert_eq!(read(&m.path("a/f")), b"hi\n");
        must(
            sys::renameat2(&m.path("a"), &m.path("e/c2"), 0),
            "mv a e/c2",
        );
        view(m.mnt())
    };
    s.assert_lowers_unchanged(&digest);
    if !kernel_backend() {
        assert_kernel_format(s.upper());
    }
    // The redirects persist: a new mount shows the same (explicit option: in mode userns
    // the suites mount with nofollow, as the kernel there).
    let again = view(UnionMount::with_args(&s, &["-o", "redirect_dir=follow"]).mnt());
    assert_trees_eq("remount", &ours, &again, false);
    if mode() == Mode::Root && overlay_available() && !kernel_backend() {
        let k = KernelOverlay::with_opts(&s, "redirect_dir=on");
        assert_trees_eq(
            "kernel over unionfuse's upper",
            &ours,
            &view(k.mnt()),
            false,
        );
    }
}

#[test]
fn unionfuse_follows_kernel_overlays_redirects() {
    if !require_fuse()
        || !needs_initial_root("kernel overlay writes trusted.overlay.redirect")
        || !overlay_available()
        || kernel_backend()
    {
        return;
    }
    let s = Stack::new(1);
    build(&s);
    let theirs = {
        let k = KernelOverlay::with_opts(&s, "redirect_dir=on");
        moves(k.mnt());
        view(k.mnt())
    };
    assert_kernel_format(s.upper());
    let m = UnionMount::new(&s);
    assert_trees_eq(
        "unionfuse over the kernel's upper",
        &theirs,
        &view(m.mnt()),
        false,
    );
    // And moves on from there as the kernel would: e is relative, so a move to another parent
    // makes its redirect absolute.
    must(sys::mkdir(&m.path("p"), 0o755), "mkdir p");
    must(sys::renameat2(&m.path("e"), &m.path("p/e"), 0), "mv e p/e");
    assert_eq!(read(&m.path("p/e/c2/f")), b"hi\n");
    drop(m);
    assert_eq!(
        redirect_of(&s.upper().join("p/e")).as_deref(),
        Some(&b"/d"[..])
    );
}

#[test]
fn rmdir_of_a_moved_dir_counts_its_lower_entries() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    build(&s);
    let m = UnionMount::with_args(&s, &["-o", "redirect_dir=on"]);
    must(sys::renameat2(&m.path("a"), &m.path("b"), 0), "mv a b");
    expect_errno(sys::rmdir(&m.path("b")), libc::ENOTEMPTY, "rmdir b");
    must(sys::unlink(&m.path("b/sub/g")), "rm b/sub/g");
    must(sys::rmdir(&m.path("b/sub")), "rmdir b/sub");
    expect_errno(
        sys::rmdir(&m.path("b")),
        libc::ENOTEMPTY,
        "rmdir b (f left)",
    );
    must(sys::unlink(&m.path("b/f")), "rm b/f");
    must(sys::rmdir(&m.path("b")), "rmdir b");
    assert_eq!(ls(m.mnt()), names(&["d"]));
    // A directory made at the old name is new: the lower `a` stays hidden.
    must(sys::mkdir(&m.path("a"), 0o755), "mkdir a");
    assert_eq!(ls(&m.path("a")), names(&[]));
}

#[test]
fn follow_only_and_nofollow_as_kernel_overlay() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    build(&s);
    {
        let m = UnionMount::with_args(&s, &["-o", "redirect_dir=on"]);
        must(sys::renameat2(&m.path("a"), &m.path("b"), 0), "mv a b");
    }
    {
        // follow (and off): redirects are followed, none is made.
        let m = UnionMount::with_args(&s, &["-o", "redirect_dir=off"]);
        assert_eq!(read(&m.path("b/f")), b"hi\n");
        expect_errno(
            sys::renameat2(&m.path("d"), &m.path("d2"), 0),
            libc::EXDEV,
            "mv d d2 (off)",
        );
    }
    // nofollow: a lookup that meets a redirect is refused (EPERM), the rest works.
    let m = UnionMount::with_args(&s, &["-o", "redirect_dir=nofollow"]);
    expect_errno(sys::lstat(&m.path("b")), libc::EPERM, "stat b (nofollow)");
    assert_eq!(ls(&m.path("d")), names(&[]));
}

#[test]
fn forged_redirects_stay_inside_the_layers() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let (l0, up) = (s.lower(0), s.upper());
    write_file(&l0.join("real/inside"), b"in\n", 0o644);
    symlink("/etc", &l0.join("link"));
    let name = format!("{}redirect", overlay_prefix());
    for (dir, value) in [
        ("dotdot", &b"/../../etc"[..]),
        ("rel_dotdot", b".."),
        ("slash_rel", b"real/inside"),
        ("via_symlink", b"/link"),
        ("to_a_file", b"/real/inside"),
        ("relative", b"real"),
    ] {
        mkdir(&up.join(dir), 0o755);
        write_file(&up.join(dir).join("own"), b"own\n", 0o644);
        set_xattr(&up.join(dir), &name, value);
    }
    let m = UnionMount::with_args(&s, &["-o", "redirect_dir=on"]);
    // The errnos kernel overlay gives for these (6.18, *observed*).
    for (bad, errno) in [
        ("dotdot", libc::EACCES),
        ("rel_dotdot", libc::EACCES),
        ("slash_rel", libc::EINVAL),
    ] {
        expect_errno(sys::lstat(&m.path(bad)), errno, bad);
    }
    // A symlink or a file where the redirect leads adds nothing: only the upper copy shows.
    assert_eq!(ls(&m.path("via_symlink")), names(&["own"]));
    assert_eq!(ls(&m.path("to_a_file")), names(&["own"]));
    assert_eq!(ls(&m.path("relative")), names(&["inside", "own"]));
}

/// Apply an OCI layer tar on `root` as an applier does: `.wh..wh..opq` empties its directory of
/// what the layers below put there, `.wh.NAME` removes NAME, the rest is extracted.
fn apply_layer(tar_path: &Path, root: &Path) {
    let mut ar = tar::Archive::new(std::fs::File::open(tar_path).expect("open layer"));
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_unpack_xattrs(true);
    let mut fresh = std::collections::HashSet::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let rel = e.path().expect("path").into_owned();
        let parent = root.join(rel.parent().unwrap_or(Path::new("")));
        let name = rel.file_name().expect("name").as_encoded_bytes().to_vec();
        if name == b".wh..wh..opq" {
            for ent in std::fs::read_dir(&parent).expect("read opaque dir") {
                let p = ent.expect("entry").path();
                if !fresh.contains(&p) {
                    remove_any(&p);
                }
            }
        } else if let Some(hidden) = name.strip_prefix(b".wh.") {
            remove_any(&parent.join(std::ffi::OsStr::from_bytes(hidden)));
        } else {
            assert!(
                e.unpack_in(root).expect("unpack"),
                "{} escapes",
                rel.display()
            );
            fresh.insert(root.join(&rel));
        }
    }
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).expect("remove dir"),
        Ok(_) => std::fs::remove_file(p).expect("remove"),
        Err(_) => {}
    }
}

/// The CLI with its image store (and temp files) under `base`.
fn unionfuse(base: &Path, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(common::mount::binary())
        .arg("--root")
        .arg(base.join("store"))
        .args(args)
        .env("TMPDIR", base)
        .output()
        .expect("run unionfuse")
}

/// A moved lower directory is exported whole: `commit` writes it as an opaque directory with
/// its merged content (upper entries over the lower copy it was moved from), `diff` lists it as
/// new; without known lowers both refuse rather than lose that content.
#[test]
fn diff_and_commit_export_a_moved_dir_whole() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("a/f1"), b"one\n", 0o644);
    write_file(&s.lower(0).join("a/sub/f2"), b"two\n", 0o600);
    write_file(&s.lower(0).join("keep"), b"k\n", 0o644);
    write_file(&s.lower(0).join("x/y/z"), b"z\n", 0o644);
    let merged = {
        let m = UnionMount::with_args(&s, &["-o", "redirect_dir=on"]);
        must(sys::renameat2(&m.path("a"), &m.path("b"), 0), "mv a b");
        write_file(&m.path("b/f3"), b"new\n", 0o644);
        must(sys::unlink(&m.path("b/f1")), "rm b/f1");
        // Nested redirects: w/v gets the relative `y`, then b/v the absolute `/x/y`.
        for (from, to) in [("x", "w"), ("w/y", "w/v"), ("w/v", "b/v")] {
            must(
                sys::renameat2(&m.path(from), &m.path(to), 0),
                &format!("mv {from} {to}"),
            );
        }
        view(m.mnt())
    };
    assert_eq!(
        redirect_of(&s.upper().join("b")).as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        redirect_of(&s.upper().join("b/v")).as_deref(),
        Some(&b"/x/y"[..])
    );
    let (up, low) = (s.upper().as_os_str(), s.lower(0).as_os_str());
    let layer = s.base.path().join("layer.tar");
    let base = s.base.path();
    // The lower as an image, for commit --from (and diff --from).
    let o = unionfuse(
        base,
        &["commit".as_ref(), low, "--tag".as_ref(), "base:1".as_ref()],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for lowers in [["--lower", "L"], ["--from", "base:1"]] {
        let l = if lowers[1] == "L" {
            low
        } else {
            lowers[1].as_ref()
        };
        let o = unionfuse(base, &["diff".as_ref(), up, lowers[0].as_ref(), l]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "D /a\nA /b\nA /b/f3\nA /b/sub\nA /b/sub/f2\nA /b/v\nA /b/v/z\nA /w\nD /x\n",
            "diff {lowers:?}"
        );
    }
    let o = unionfuse(
        base,
        &[
            "commit".as_ref(),
            up,
            "-o".as_ref(),
            layer.as_os_str(),
            "--from".as_ref(),
            "base:1".as_ref(),
            "--tag".as_ref(),
            "moved:1".as_ref(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&layer).expect("layer"));
    for e in ar.entries().expect("entries") {
        names.push(
            e.expect("entry")
                .path()
                .expect("path")
                .display()
                .to_string(),
        );
    }
    for want in [
        "b/.wh..wh..opq",
        "b/sub/f2",
        "b/v/z",
        "w/.wh..wh..opq",
        ".wh.a",
        ".wh.x",
    ] {
        assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
    }
    let applied = s.base.path().join("applied");
    copy_tree(s.lower(0), &applied);
    apply_layer(&layer, &applied);
    let no_mtime = |t: Tree| t.normalize(|_, e| e.mtime = None);
    assert_trees_eq(
        "lower + committed layer vs the merged view",
        &no_mtime(merged),
        &no_mtime(Tree::snapshot(&applied, SnapOpts::VIEW)),
        false,
    );
    // Without lowers there is no content to export for b: a clear refusal, no layer.
    let lossy = s.base.path().join("lossy.tar");
    for args in [
        vec!["diff".as_ref(), up],
        vec!["commit".as_ref(), up, "-o".as_ref(), lossy.as_os_str()],
    ] {
        let o = unionfuse(base, &args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && err.contains("/b: has a redirect") && err.contains("--lower"),
            "{err}"
        );
    }
    assert!(!lossy.exists(), "a refused commit leaves no layer");
}
