//! Mounted tests of lookup across layers: the topmost layer wins, whiteouts and opaque
//! directories hide what is below, readdir lists each name once, odd and long names and trees
//! deeper than PATH_MAX work, symlinks never lead out of a layer, and a 20-layer stack matches
//! kernel overlayfs.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use common::view::*;
use common::*;

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

/// The entries a listing returns with their attributes (READDIRPLUS: the kernel's first batch,
/// which looks each entry up starting at the layer the listing found it in) are the entries a
/// lookup by name finds: the topmost copy, a merged directory with the copies below it, and
/// nothing whited-out or under an opaque directory.
#[test]
fn entries_a_listing_looked_up_are_the_topmost_and_merged() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(3);
    for i in 0..3 {
        write_file(&s.lower(i).join("f"), format!("lower{i}").as_bytes(), 0o644);
        write_file(&s.lower(i).join(format!("m/only{i}")), b"x", 0o644);
        write_file(&s.lower(i).join(format!("o/only{i}")), b"x", 0o644);
    }
    write_file(&s.lower(2).join("g"), b"lower2", 0o644);
    write_file(&s.lower(2).join("gone"), b"lower2", 0o644);
    make_whiteout(s.lower(1), "gone");
    write_file(&s.lower(2).join("d2/in"), b"x", 0o644);
    set_opaque(&s.lower(1).join("o"));
    mounted(&s, |m| {
        let sizes: Vec<(Vec<u8>, u64)> = std::fs::read_dir(m.mnt())
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().as_bytes().to_vec(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        let mut got: Vec<_> = sizes.iter().map(|(n, _)| n.clone()).collect();
        got.sort();
        assert_eq!(got, names(&["d2", "f", "g", "m", "o"]));
        assert_eq!(read(&m.path("f")), b"lower0");
        assert_eq!(read(&m.path("g")), b"lower2");
        expect_errno(sys::lstat(&m.path("gone")), libc::ENOENT, "whited-out file");
        assert_eq!(
            listing(&m.path("m")),
            names(&[".", "..", "only0", "only1", "only2"])
        );
        assert_eq!(listing(&m.path("o")), names(&[".", "..", "only0", "only1"]));
        assert_eq!(listing(&m.path("d2")), names(&[".", "..", "in"]));
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

#[test]
fn readdir_resumed_after_a_change_lists_only_names_that_exist() {
    if !require_fuse() {
        return;
    }
    // Big enough that one getdents leaves most of it unread.
    let s = Stack::new(1);
    let all: Vec<String> = (0..3000)
        .map(|i| format!("entry-with-a-longish-name-{i:05}"))
        .collect();
    for n in &all {
        write_file(&s.lower(0).join("d").join(n), b"", 0o644);
    }
    mounted(&s, |m| {
        let d = m.path("d");
        let (first, pos) = must(sys::read_dir_from(&d, None, Some(10)), "readdir");
        assert_eq!(first.len(), 10);
        // Change the directory: every other name not read yet goes, new ones come. (Half
        // stay: a READDIRPLUS skips names that no longer look up, the plain READDIRs after it
        // would not.)
        let mut gone = Vec::new();
        for n in all.iter().step_by(2) {
            if !first.contains(&n.as_bytes().to_vec()) {
                std::fs::remove_file(d.join(n)).unwrap();
                gone.push(n.clone());
            }
        }
        for i in 0..50 {
            write_file(&d.join(format!("new-{i}")), b"", 0o644);
        }
        let (rest, _) = must(sys::read_dir_from(&d, Some(pos), None), "readdir");
        for n in &rest {
            let name = std::str::from_utf8(n).unwrap();
            assert!(
                name == "." || name == ".." || d.join(name).symlink_metadata().is_ok(),
                "readdir resumed after the change returned {name}, which was removed"
            );
        }
        // And a fresh listing is exactly what is there.
        let mut expect: Vec<String> = all.iter().filter(|n| !gone.contains(n)).cloned().collect();
        expect.extend((0..50).map(|i| format!("new-{i}")));
        expect.extend([".".into(), "..".into()]);
        let expect: Vec<&str> = expect.iter().map(|s| s.as_str()).collect();
        assert_eq!(listing(&d), names(&expect));
    });
}

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
    if !require_fuse() || !common::can_chown() {
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

/// Deep stacks use a per-directory index of the lower names (src/dirindex.rs) instead of
/// probing every layer: the view must still be kernel overlay's, whiteouts and opaque
/// directories at any depth included.
#[test]
fn deep_stack_of_twenty_layers_matches_kernel_overlay() {
    if !require_fuse() || kernel_backend() || !overlay_available() {
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
