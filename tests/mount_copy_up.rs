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

// ---- readers open across a copy-up -------------------------------------------------------

/// What a reader that opened `log` while it was only in the lower reads after a copy-up,
/// given the new content: the old with lower passthrough (root's default: it is passed through
/// to the lower file and keeps it, as after a rename over the file; D17), else the new one, as
/// on kernel overlay.
fn early_reader_sees<'a>(old: &'a [u8], new: &'a [u8]) -> &'a [u8] {
    if lower_passthrough() { old } else { new }
}

/// A reader holds a lower file open and a writer appends to it. fuse-overlayfs 2.0 hands the
/// appender the reader's lower backing file, so the append lands in the lower and the copy in
/// the upper keeps the old data. Here the append reaches the upper copy, the lower stays as
/// it was (`mounted` checks), later opens read the copy, and st_ino stays.
#[test]
fn an_append_while_a_reader_holds_the_lower_file_reaches_the_copy() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let (old, new) = (&b"lower-data\n"[..], &b"lower-data\nappended\n"[..]);
    write_file(&s.lower(0).join("log"), old, 0o644);
    mounted(&s, |m| {
        let p = m.path("log");
        let st_ino = must(sys::lstat(&p), "lstat").st_ino;
        let reader = must(sys::open(&p, libc::O_RDONLY, 0), "open reader");
        assert_eq!(must(sys::pread(&reader, 100, 0), "read"), old);
        let writer = must(
            sys::open(&p, libc::O_WRONLY | libc::O_APPEND, 0),
            "open appender",
        );
        must(sys::write(&writer, b"appended\n"), "append");
        drop(writer);
        assert_eq!(read(&p), new, "an open after the append reads the copy");
        let st = must(sys::lstat(&p), "lstat");
        assert_eq!(
            (st.st_ino, st.st_size),
            (st_ino, 20),
            "st_ino kept, new size"
        );
        let early = early_reader_sees(old, new);
        assert_eq!(must(sys::pread(&reader, 100, 0), "early reader"), early);
        let size = must(sys::fstat(&reader), "fstat early reader").st_size;
        assert_eq!(size as usize, early.len(), "early reader's size");
        let late = must(sys::open(&p, libc::O_RDONLY, 0), "open late reader");
        assert_eq!(must(sys::pread(&late, 100, 0), "late reader"), new);
        drop(reader);
        assert_eq!(must(sys::pread(&late, 100, 0), "late reader"), new);
        assert_eq!(read(&p), new);
    });
    assert_eq!(
        read(&s.upper().join("log")),
        new,
        "the upper copy has the append"
    );
}

/// A copy-up that is no open (truncate, chmod) while a reader holds the lower file: a later
/// open (read or write) gets the copy; the early reader keeps what `early_reader_sees` says.
/// Reopening the early reader's fd through /proc reads what it reads, and an open of it for
/// writing fails as for a lower file with no name left (EEXIST) when it was parted (D17).
#[test]
fn opens_after_a_truncate_while_a_reader_holds_the_lower_file_get_the_copy() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let old = &b"0123456789"[..];
    write_file(&s.lower(0).join("f"), old, 0o644);
    mounted(&s, |m| {
        let p = m.path("f");
        let reader = must(sys::open(&p, libc::O_RDONLY, 0), "open reader");
        must(sys::truncate(&p, 4), "truncate (copy-up)");
        must(sys::chmod(&p, 0o600), "chmod");
        assert_eq!(read(&p), b"0123", "an open after the truncate");
        let rw = must(sys::open(&p, libc::O_RDWR, 0), "open read-write");
        must(sys::pwrite(&rw, b"AB", 1), "pwrite");
        assert_eq!(must(sys::pread(&rw, 100, 0), "read back"), b"0AB3");
        drop(rw);
        let early = early_reader_sees(old, b"0AB3");
        assert_eq!(must(sys::pread(&reader, 100, 0), "early reader"), early);
        let proc = std::path::PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&reader)
        ));
        let again = must(sys::open(&proc, libc::O_RDONLY, 0), "reopen through /proc");
        assert_eq!(must(sys::pread(&again, 100, 0), "reopened"), early);
        // Parted from its name, the early reader's file can't be changed through /proc.
        let write = sys::open(&proc, libc::O_WRONLY, 0).map(drop);
        let want = if lower_passthrough() {
            Err(libc::EEXIST)
        } else {
            Ok(())
        };
        assert_eq!(write, want, "open for writing through /proc");
        drop((reader, again));
        let st = must(sys::lstat(&p), "lstat");
        assert_eq!((st.st_size, st.st_mode & 0o777), (4, 0o600));
        assert_eq!(read(&p), b"0AB3");
    });
    assert_eq!(read(&s.upper().join("f")), b"0AB3");
}

/// Many readers and writers of lower files at once: every write reaches the copy, no open
/// fails (an open that had to part a node from its readers is retried by the kernel).
#[test]
fn readers_and_writers_of_lower_files_race_without_errors() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    for i in 0..16 {
        write_file(&s.lower(0).join(format!("f{i}")), b"lower\n", 0o644);
    }
    mounted(&s, |m| {
        std::thread::scope(|t| {
            for r in 0..3 {
                t.spawn(move || {
                    for round in 0..20 {
                        for i in 0..16 {
                            let p = m.path(format!("f{}", (i + r + round) % 16));
                            let fd = must(sys::open(&p, libc::O_RDONLY, 0), "open reader");
                            let data = must(sys::pread(&fd, 4096, 0), "read");
                            assert!(data.starts_with(b"lower\n"), "{p:?}: {data:?}");
                        }
                    }
                });
            }
            t.spawn(move || {
                for i in 0..16 {
                    let p = m.path(format!("f{i}"));
                    let fd = must(sys::open(&p, libc::O_WRONLY | libc::O_APPEND, 0), "open");
                    must(sys::write(&fd, b"w\n"), "append");
                }
            });
        });
        for i in 0..16 {
            assert_eq!(read(&m.path(format!("f{i}"))), b"lower\nw\n", "f{i}");
        }
    });
    for i in 0..16 {
        assert_eq!(
            read(&s.upper().join(format!("f{i}"))),
            b"lower\nw\n",
            "upper f{i}"
        );
    }
}

/// `-o noopen` (D18): the kernel opens regular files without asking, so a lower file opened
/// for writing is copied up at its first change, not at the open. An open for writing that
/// writes nothing leaves no copy; the first write makes it, with the data, and the lower stays
/// as it was. A file opened and then unlinked while still only in a lower is read through its
/// fd and takes writes and a chmod there, as on kernel overlay (which copied it up at the
/// open): they land in an unnamed copy, and the upper ends with the whiteout alone.
#[test]
fn noopen_copies_up_at_the_first_change_not_at_the_open() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    for name in ["idle", "written", "gone"] {
        write_file(&s.lower(0).join(name), b"lower", 0o644);
    }
    let before = s.lower_digests();
    {
        let m = UnionMount::with_args(&s, &["-o", "nopassthrough,noopen"]);
        let idle = must(sys::open(&m.path("idle"), libc::O_RDWR, 0), "open idle");
        assert_eq!(must(sys::pread(&idle, 100, 0), "read idle"), b"lower");
        drop(idle);
        assert!(
            sys::lstat(&s.upper().join("idle")).is_err(),
            "an open for writing that wrote nothing copied the file up"
        );
        let w = must(sys::open(&m.path("written"), libc::O_WRONLY, 0), "open");
        must(sys::pwrite(&w, b"W", 0), "write");
        must(sys::fsync(&w), "fsync");
        drop(w);
        assert_eq!(read(&m.path("written")), b"Wower");
        assert_eq!(read(&s.upper().join("written")), b"Wower", "the copy");
        let r = must(sys::open(&m.path("gone"), libc::O_RDWR, 0), "open gone");
        must(sys::unlink(&m.path("gone")), "unlink");
        assert_eq!(must(sys::pread(&r, 100, 0), "read after unlink"), b"lower");
        must(sys::pwrite(&r, b"X", 0), "write after unlink");
        must(sys::fsync(&r), "fsync after unlink");
        must(sys::fchmod(&r, 0o600), "fchmod after unlink");
        assert_eq!(must(sys::pread(&r, 100, 0), "read back"), b"Xower");
        let st = must(sys::fstat(&r), "fstat after unlink");
        assert_eq!((st.st_mode & 0o7777, st.st_size), (0o600, 5));
        drop(r);
        assert!(sys::lstat(&m.path("gone")).is_err(), "unlinked");
        // Opened only for reading: the daemon can't tell, and a write through a reopen of its
        // /proc link succeeds too (kernel overlay: EEXIST).
        let r = must(sys::open(&m.path("idle"), libc::O_RDONLY, 0), "open idle");
        must(sys::unlink(&m.path("idle")), "unlink idle");
        let proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&r));
        // Its mtime alone (how the kernel writes back the times it keeps) is taken without a
        // copy; the kernel shows it.
        let omit = (0, libc::UTIME_OMIT);
        must(
            sys::utimens(proc.as_ref(), omit, (1234567, 0), false),
            "mtime",
        );
        assert_eq!(must(sys::fstat(&r), "fstat").st_mtime, 1234567);
        let w = must(
            sys::open(proc.as_ref(), libc::O_WRONLY, 0),
            "reopen for writing",
        );
        must(sys::pwrite(&w, b"I", 0), "write through the reopen");
        must(sys::fsync(&w), "fsync through the reopen");
        assert_eq!(must(sys::pread(&r, 100, 0), "read back"), b"Iower");
        drop((r, w));
        let mut names: Vec<_> = std::fs::read_dir(s.upper())
            .expect("read the upper")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        assert_eq!(names, ["gone", "idle", "written"], "upper");
        for name in ["gone", "idle"] {
            let wh = sys::lstat(&s.upper().join(name)).expect("the whiteout");
            assert_eq!(
                (wh.st_mode & libc::S_IFMT, wh.st_rdev),
                (libc::S_IFCHR, 0),
                "{name} in the upper is a whiteout"
            );
        }
    }
    s.assert_lowers_unchanged(&before);
}

/// `-o noopen`: a file the kernel opened without asking keeps a handle (an fd) in the daemon
/// until the kernel forgets it, which for a cached inode may be never; so at most a bounded
/// number do, and past that each request opens its own. Reading more files than the bound
/// works and leaves the daemon's fds bounded (before the bound, past the fd limit every open
/// answered EMFILE). So does creating as many: once the kernel opens files itself it sends
/// no RELEASE for a created file either (each one's handle leaked before).
#[test]
fn noopen_keeps_the_daemon_fds_bounded() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let n = 5000;
    for i in 0..n {
        write_file(&s.lower(0).join(format!("f{i}")), b"x", 0o644);
    }
    let m = UnionMount::with_args(&s, &["-o", "nopassthrough,noopen"]);
    let pid = m.pid().expect("the daemon's pid");
    let bounded = |what: &str| {
        let fds = common::process::fd_count(pid);
        assert!(
            fds > 0 && fds < 4096 + 256,
            "{fds} fds in the daemon after {what} {n} files"
        );
    };
    // The first open tells the kernel to stop asking; the created files' handles become their
    // nodes' own, up to the bound.
    assert_eq!(read(&m.path("f0")), b"x");
    for i in 0..n {
        std::fs::write(m.path(format!("new{i}")), format!("n{i}")).expect("create");
    }
    bounded("creating");
    for i in 0..n {
        assert_eq!(read(&m.path(format!("f{i}"))), b"x", "f{i}");
    }
    bounded("reading");
    for i in (0..n).step_by(97) {
        let want = format!("n{i}");
        assert_eq!(read(&m.path(format!("new{i}"))), want.as_bytes());
        assert_eq!(read(&s.upper().join(format!("new{i}"))), want.as_bytes());
    }
}

/// Reads through the daemon (no passthrough, the rootless data path), large ones spliced from
/// the file into the reply: buffered (128 KiB READs), direct (up to 1 MiB), across the end of
/// the file, and after a write copied the file up, each gives the file's bytes.
#[test]
fn large_reads_through_the_daemon_return_the_files_bytes() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let len = 3 * 1024 * 1024 + 123;
    let mut want: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    write_file(&s.lower(0).join("big"), &want, 0o644);
    let before = s.lower_digests();
    let direct_reads = |m: &UnionMount, want: &[u8]| {
        let f = must(
            sys::open(&m.path("big"), libc::O_RDONLY | libc::O_DIRECT, 0),
            "open",
        );
        let ends = [
            0,
            4096,
            3 * 65536 + 4096,
            len - 200_000,
            len - 100,
            len - 1,
            len,
        ];
        for off in ends {
            for size in [32 * 1024, 128 * 1024, 1024 * 1024] {
                let got = must(sys::pread(&f, size, off as i64), "direct read");
                let end = (off + size).min(len);
                assert!(got == want[off..end], "direct read of {size} at {off}");
            }
        }
    };
    let m = UnionMount::with_args(&s, &["-o", "nopassthrough"]);
    assert!(
        read(&m.path("big")) == want,
        "buffered read of the lower file"
    );
    direct_reads(&m, &want);
    let w = must(
        sys::open(&m.path("big"), libc::O_WRONLY, 0),
        "open for writing",
    );
    must(sys::pwrite(&w, &[0xab; 65536], 1 << 20), "write");
    must(sys::fsync(&w), "fsync");
    drop(w);
    want[1 << 20..(1 << 20) + 65536].fill(0xab);
    assert!(read(&m.path("big")) == want, "buffered read of the copy");
    direct_reads(&m, &want);
    drop(m);
    assert!(
        read(&s.upper().join("big")) == want,
        "the copy in the upper"
    );
    s.assert_lowers_unchanged(&before);
}

/// Large writes through the daemon (no passthrough, the rootless data path): a new file
/// written 1 MiB at a time, appends (O_APPEND) of just over 1 MiB, a direct write at an offset
/// within a page, and a large write that copies a lower file up. Each file holds exactly what
/// was written, through the mount and in the upper.
#[test]
fn large_writes_through_the_daemon_land_whole() {
    if !require_fuse() || kernel_backend() {
        return;
    }
    let s = Stack::new(1);
    let lower = pattern(3 << 20, 1);
    write_file(&s.lower(0).join("low"), &lower, 0o644);
    let before = s.lower_digests();
    let mut want: Vec<(&str, Vec<u8>)> = Vec::new();
    let m = UnionMount::with_args(&s, &["-o", "nopassthrough"]);
    let create = libc::O_WRONLY | libc::O_CREAT;

    let data = pattern(6 << 20, 2);
    let f = must(sys::open(&m.path("seq"), create, 0o644), "create seq");
    for (i, chunk) in data.chunks(1 << 20).enumerate() {
        must(sys::pwrite(&f, chunk, (i << 20) as i64), "write seq");
    }
    must(sys::fsync(&f), "fsync seq");
    want.push(("seq", data));

    let data = pattern(3 * ((1 << 20) + 7), 3);
    let f = must(
        sys::open(&m.path("app"), create | libc::O_APPEND, 0o644),
        "create app",
    );
    for chunk in data.chunks((1 << 20) + 7) {
        must(sys::pwrite(&f, chunk, 0), "append");
    }
    must(sys::fsync(&f), "fsync app");
    want.push(("app", data));

    let data = pattern((2 << 20) + 100, 4);
    let at = 3 * 4096 + 17;
    let f = must(
        sys::open(&m.path("direct"), create | libc::O_DIRECT, 0o644),
        "create direct",
    );
    must(sys::pwrite(&f, &data, at as i64), "direct write");
    let mut d = vec![0; at];
    d.extend_from_slice(&data);
    want.push(("direct", d));

    let data = pattern(2 << 20, 5);
    let at = (512 << 10) + 5;
    let f = must(sys::open(&m.path("low"), libc::O_WRONLY, 0), "open low");
    must(sys::pwrite(&f, &data, at as i64), "write low");
    must(sys::fsync(&f), "fsync low");
    let mut d = lower.clone();
    d[at..at + data.len()].copy_from_slice(&data);
    want.push(("low", d));
    drop(f);

    for (name, data) in &want {
        assert!(read(&m.path(name)) == *data, "{name} through the mount");
    }
    drop(m);
    for (name, data) in &want {
        assert!(read(&s.upper().join(name)) == *data, "{name} in the upper");
    }
    s.assert_lowers_unchanged(&before);
}
