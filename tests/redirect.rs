//! redirect_dir: renaming directories that have lower copies. The upper records each move in
//! kernel overlay's format (a whiteout at the old name, `overlay.redirect` holding the old
//! name or the absolute lower path, no opaque flag), lookups follow redirects (ours and the
//! kernel's) in every layer, so such an upper also works as a lower, and each side mounts the
//! other's layers with the same view. diff and commit export moved directories whole. A forged
//! redirect never leads out of the layers.

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

/// Can the kernel overlay oracle take part here (it follows redirects only outside a user
/// namespace: `userxattr` means `redirect_dir=nofollow`)?
fn kernel_oracle() -> bool {
    mode() == Mode::Root && overlay_available() && !kernel_backend()
}

/// unionfuse's view of `t`, checked against kernel overlay's (redirect_dir=on; `ro`
/// lowers-only stacks with follow) where it can take part.
fn compared_view(what: &str, t: &Stack) -> Tree {
    let ours = view(UnionMount::with_args(t, &["-o", "redirect_dir=on"]).mnt());
    if kernel_oracle() {
        let opts = if t.upper.is_some() {
            ""
        } else {
            "redirect_dir=follow"
        };
        let theirs = view(KernelOverlay::with_opts(t, opts).mnt());
        assert_trees_eq(what, &theirs, &ours, false);
    }
    ours
}

/// Run `ops` through unionfuse on `t` and through kernel overlay on a copy of it, compare
/// the views after, then each side's upper under the other.
fn compared_changes(what: &str, t: &Stack, ops: impl Fn(&Path)) {
    let digest = t.lower_digests();
    let k_stack = kernel_oracle().then(|| t.duplicate());
    let ours = {
        let m = UnionMount::with_args(t, &["-o", "redirect_dir=on"]);
        ops(m.mnt());
        view(m.mnt())
    };
    t.assert_lowers_unchanged(&digest);
    let Some(k) = k_stack else {
        return;
    };
    let theirs = {
        let km = KernelOverlay::with_opts(&k, "");
        ops(km.mnt());
        view(km.mnt())
    };
    // Two runs of the same changes: their times differ.
    let untimed = |t: &Tree| t.clone().normalize(|_, e| e.mtime = None);
    assert_trees_eq(
        &format!("{what}: after"),
        &untimed(&theirs),
        &untimed(&ours),
        false,
    );
    let ours_by_kernel = view(KernelOverlay::with_opts(t, "").mnt());
    assert_trees_eq(
        &format!("{what}: kernel over ours"),
        &ours,
        &ours_by_kernel,
        false,
    );
    let theirs_by_us = view(UnionMount::with_args(&k, &["-o", "redirect_dir=on"]).mnt());
    assert_trees_eq(
        &format!("{what}: ours over kernel's"),
        &theirs,
        &theirs_by_us,
        false,
    );
}

/// The writers of a first upper: unionfuse, and kernel overlay where it can make redirects.
fn writers() -> Vec<&'static str> {
    let mut w = vec!["unionfuse"];
    if kernel_oracle() {
        w.push("kernel");
    }
    w
}

/// `ops` on `s` through `writer` with redirect_dir=on.
fn write_with(writer: &str, s: &Stack, ops: impl Fn(&Path)) {
    if writer == "kernel" {
        ops(KernelOverlay::with_opts(s, "").mnt());
    } else {
        ops(UnionMount::with_args(s, &["-o", "redirect_dir=on"]).mnt());
    }
}

/// An upper written with redirect_dir=on (a relative and an absolute redirect, whiteouts at
/// the old names) used as the middle layer under a new upper: the same view as kernel
/// overlay's, and renames, rmdir, mkdir and listings through it agree with it too.
#[test]
fn an_upper_with_redirects_works_as_a_middle_lower() {
    if !require_fuse() {
        return;
    }
    for writer in writers() {
        let s = Stack::new(1);
        build(&s);
        write_with(writer, &s, moves);
        let t = s.upper_as_lower(true);
        compared_view(&format!("{writer}'s upper as a lower"), &t);
        let names_of = |st: &Stack| {
            let mut l = list_rel(UnionMount::with_args(st, &["-o", "redirect_dir=on"]).mnt());
            l.sort();
            l
        };
        assert_eq!(
            names_of(&t),
            names_of(&s),
            "the same names as over the first upper"
        );
        if mode() == Mode::Userns {
            // Kernel overlay under userxattr is nofollow: both refuse the moved directory.
            let m = UnionMount::new(&t);
            expect_errno(sys::lstat(&m.path("e")), libc::EPERM, "stat e (nofollow)");
            drop(m);
            if overlay_available() && !kernel_backend() {
                let k = KernelOverlay::new(&t);
                expect_errno(sys::lstat(&k.path("e")), libc::EPERM, "kernel: stat e");
            }
            continue;
        }
        compared_changes(&format!("{writer}'s upper as a lower"), &t, |mnt| {
            let p = |r: &str| mnt.join(r);
            assert_eq!(ls(&p("e/c2")), names(&["f", "sub"]));
            must(sys::mkdir(&p("p"), 0o755), "mkdir p");
            // The copy in the middle layer carries the redirect: moved again, from there.
            must(sys::renameat2(&p("e/c2"), &p("p/c3"), 0), "mv e/c2 p/c3");
            must(sys::renameat2(&p("e"), &p("e2"), 0), "mv e e2");
            expect_errno(sys::rmdir(&p("p/c3")), libc::ENOTEMPTY, "rmdir p/c3");
            must(sys::unlink(&p("p/c3/sub/g")), "rm p/c3/sub/g");
            must(sys::rmdir(&p("p/c3/sub")), "rmdir p/c3/sub");
            must(sys::mkdir(&p("p/c3/new"), 0o700), "mkdir p/c3/new");
            write_file(&p("e2/fresh"), b"fresh\n", 0o640);
            assert_eq!(ls(&p("p/c3")), names(&["f", "new"]));
            assert_eq!(read(&p("p/c3/f")), b"hi\n");
            assert_eq!(ls(&p("e2")), names(&["fresh"]));
            expect_errno(sys::lstat(&p("e/c2")), libc::ENOENT, "old name e/c2");
        });
    }
}

/// Three writes stacked: `b` (relative `a`) and `top_r` (absolute `/q/r`) in layer 1, moved
/// again in layer 0 (`c` -> `b`, `z/r2` -> `/top_r`): each lookup follows the chain down to
/// the base, in a read-write and in a read-only (lowers only) mount.
#[test]
fn redirect_chains_across_lower_layers() {
    if !require_fuse()
        || !runs_in(
            &[Mode::Root, Mode::User],
            "kernel overlay with userxattr is nofollow (its EPERM is checked above)",
        )
    {
        return;
    }
    for writer in writers() {
        let s = Stack::new(1);
        write_file(&s.lower(0).join("a/f"), b"f\n", 0o644);
        write_file(&s.lower(0).join("a/deep/g"), b"g\n", 0o600);
        write_file(&s.lower(0).join("q/r/h"), b"h\n", 0o644);
        write_with(writer, &s, |m| {
            must(sys::renameat2(&m.join("a"), &m.join("b"), 0), "mv a b");
            must(
                sys::renameat2(&m.join("q/r"), &m.join("top_r"), 0),
                "mv q/r top_r",
            );
        });
        let s2 = s.upper_as_lower(true);
        write_with(writer, &s2, |m| {
            must(sys::renameat2(&m.join("b"), &m.join("c"), 0), "mv b c");
            must(sys::mkdir(&m.join("z"), 0o755), "mkdir z");
            must(
                sys::renameat2(&m.join("top_r"), &m.join("z/r2"), 0),
                "mv top_r z/r2",
            );
            write_file(&m.join("c/added"), b"+\n", 0o644);
        });
        assert_eq!(
            redirect_of(&s2.upper().join("z/r2")).as_deref(),
            Some(&b"/top_r"[..])
        );
        let what = format!("{writer}: two redirected layers");
        let t = s2.upper_as_lower(true);
        compared_view(&what, &t);
        let ro = s2.upper_as_lower(false);
        compared_view(&format!("{what}, read-only"), &ro);
        for st in [&t, &ro] {
            let m = UnionMount::new(st);
            assert_eq!(ls(&m.path("c")), names(&["added", "deep", "f"]));
            assert_eq!(read(&m.path("c/deep/g")), b"g\n");
            assert_eq!(read(&m.path("z/r2/h")), b"h\n");
            assert_eq!(ls(m.mnt()), names(&["c", "q", "z"]));
            assert_eq!(ls(&m.path("q")), names(&[]));
        }
        // nofollow: a redirect met in any layer is refused, as kernel overlay does.
        let m = UnionMount::with_args(&t, &["-o", "redirect_dir=nofollow"]);
        expect_errno(sys::lstat(&m.path("c")), libc::EPERM, "stat c (nofollow)");
        drop(m);
        if kernel_oracle() {
            let k = KernelOverlay::with_opts(&t, "redirect_dir=nofollow");
            expect_errno(
                sys::lstat(&k.path("c")),
                libc::EPERM,
                "kernel: stat c (nofollow)",
            );
        }
        compared_changes(&what, &t, |mnt| {
            let p = |r: &str| mnt.join(r);
            must(sys::renameat2(&p("c"), &p("z/c"), 0), "mv c z/c");
            must(sys::renameat2(&p("z/r2"), &p("r3"), 0), "mv z/r2 r3");
            must(
                sys::renameat2(&p("z/c/deep"), &p("r3/deep"), 0),
                "mv z/c/deep r3/deep",
            );
            assert_eq!(read(&p("r3/deep/g")), b"g\n");
            expect_errno(sys::rmdir(&p("z/c")), libc::ENOTEMPTY, "rmdir z/c");
            must(sys::mkdir(&p("z/c/m"), 0o755), "mkdir z/c/m");
            assert_eq!(ls(&p("z/c")), names(&["added", "f", "m"]));
        });
    }
}

/// diff and commit over lowers that hold redirects (an upper written with redirect_dir=on, used
/// as a lower): a directory moved again is exported with the content its lower copy's redirect
/// leads to, and the layer applied on the lowers' merged view gives the mounted view.
#[test]
fn diff_and_commit_follow_redirects_in_the_lowers() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("a/f1"), b"one\n", 0o644);
    write_file(&s.lower(0).join("a/sub/f2"), b"two\n", 0o600);
    write_file(&s.lower(0).join("keep/k"), b"k\n", 0o644);
    write_file(&s.lower(0).join("q/r/h"), b"h\n", 0o644);
    // A relative redirect (b) and an absolute one (rr) in the layer that becomes the middle.
    write_with("unionfuse", &s, |m| {
        must(sys::renameat2(&m.join("a"), &m.join("b"), 0), "mv a b");
        must(
            sys::renameat2(&m.join("q/r"), &m.join("rr"), 0),
            "mv q/r rr",
        );
    });
    let t = s.upper_as_lower(true);
    // The lowers' merged view as plain files, to apply the layer on.
    let applied = t.base.path().join("applied");
    {
        let ro = s.upper_as_lower(false);
        copy_tree(UnionMount::new(&ro).mnt(), &applied);
    }
    let merged = {
        let m = UnionMount::with_args(&t, &["-o", "redirect_dir=on"]);
        must(sys::renameat2(&m.path("b"), &m.path("c"), 0), "mv b c");
        write_file(&m.path("c/new"), b"new\n", 0o644);
        write_file(&m.path("keep/k2"), b"k2\n", 0o644);
        must(sys::mkdir(&m.path("z"), 0o755), "mkdir z");
        must(
            sys::renameat2(&m.path("rr"), &m.path("z/rr"), 0),
            "mv rr z/rr",
        );
        write_file(&m.path("z/rr/new2"), b"n2\n", 0o644);
        view(m.mnt())
    };
    let base = t.base.path();
    let list =
        std::ffi::OsString::from(format!("{}:{}", t.lower(0).display(), t.lower(1).display()));
    let up = t.upper().as_os_str();
    let o = unionfuse(base, &["diff".as_ref(), up, "--lower".as_ref(), &list]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "D /b\nA /c\nA /c/f1\nA /c/new\nA /c/sub\nA /c/sub/f2\nC /keep\nA /keep/k2\nD /rr\n\
         A /z\nA /z/rr\nA /z/rr/h\nA /z/rr/new2\n"
    );
    let layer = base.join("layer.tar");
    let o = unionfuse(
        base,
        &[
            "commit".as_ref(),
            up,
            "-o".as_ref(),
            layer.as_os_str(),
            "--lower".as_ref(),
            &list,
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    apply_layer(&layer, &applied);
    let no_mtime = |t: Tree| t.normalize(|_, e| e.mtime = None);
    assert_trees_eq(
        "merged lowers + committed layer vs the mounted view",
        &no_mtime(merged),
        &no_mtime(Tree::snapshot(&applied, SnapOpts::VIEW)),
        false,
    );
}

/// Forged redirects on a lower layer's directories (a read-only stack, so the top lower's
/// copies are the ones looked up): the same errnos as on the upper, kernel overlay's where it
/// can take part, and nothing outside the layers shows.
#[test]
fn forged_redirects_in_a_lower_stay_inside_the_layers() {
    if !require_fuse() {
        return;
    }
    let s = Stack::readonly(2);
    let (l0, l1) = (s.lower(0), s.lower(1));
    write_file(&l1.join("real/inside"), b"in\n", 0o644);
    symlink("/etc", &l1.join("link"));
    let name = format!("{}redirect", overlay_prefix());
    let cases: [(&str, &[u8], Option<i32>); 5] = [
        ("dotdot", b"/../../etc", Some(libc::EACCES)),
        ("slash_rel", b"real/inside", Some(libc::EINVAL)),
        ("via_symlink", b"/link", None),
        ("to_a_file", b"/real/inside", None),
        ("relative", b"real", None),
    ];
    for (dir, value, _) in &cases {
        mkdir(&l1.join(dir), 0o755);
        write_file(&l0.join(dir).join("own"), b"own\n", 0o644);
        set_xattr(&l0.join(dir), &name, value);
    }
    let look = |mnt: &Path| -> Vec<Result<Vec<Vec<u8>>, i32>> {
        cases
            .iter()
            .map(|(dir, _, _)| sys::lstat(&mnt.join(dir)).map(|_| ls(&mnt.join(dir))))
            .collect()
    };
    let ours = look(UnionMount::with_args(&s, &["-o", "redirect_dir=follow"]).mnt());
    for ((dir, _, errno), got) in cases.iter().zip(&ours) {
        match errno {
            Some(e) => assert_eq!(got.as_ref().err(), Some(e), "{dir}"),
            None if *dir == "relative" => {
                assert_eq!(got.as_ref().ok(), Some(&names(&["inside", "own"])), "{dir}")
            }
            None => assert_eq!(got.as_ref().ok(), Some(&names(&["own"])), "{dir}"),
        }
    }
    if kernel_oracle() {
        let theirs = look(KernelOverlay::with_opts(&s, "redirect_dir=follow").mnt());
        assert_eq!(ours, theirs, "unionfuse vs kernel overlay");
    }
}
