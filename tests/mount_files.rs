//! Mounted tests of file syscalls beyond read and write: mknod, statfs, fallocate and
//! SEEK_DATA/SEEK_HOLE, copy_file_range, flock and POSIX locks, fstat on an unlinked open file,
//! ioctl.
//! Expected results are kernel overlayfs's (`UNIONFUSE_TEST_BACKEND=kernel` checks them).

mod common;

use std::os::fd::AsRawFd;

use common::view::*;
use common::*;

#[test]
fn mknod_of_whiteout_char_device_through_mount_is_eperm() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        let r = sys::mknod(&m.path("wh"), libc::S_IFCHR | 0o600, sys::makedev(0, 0));
        expect_errno(r, libc::EPERM, "mknod char 0/0");
    });
    assert!(!exists(&s.upper().join("wh")));
}

#[test]
fn mknod_fifo_through_mount_lands_in_upper() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mkdir(&s.lower(0).join("d"), 0o755);
    mounted(&s, |m| {
        must(
            sys::mknod(&m.path("d/fifo"), libc::S_IFIFO | 0o640, 0),
            "mknod fifo",
        );
        let st = must(sys::lstat(&m.path("d/fifo")), "lstat fifo");
        assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFIFO);
    });
    let st = must(sys::lstat(&s.upper().join("d/fifo")), "lstat upper fifo");
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFIFO);
}

#[test]
fn statfs_reports_upper_filesystem() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let upper = must(sys::statfs(s.upper()), "statfs upper");
    mounted(&s, |m| {
        let st = must(sys::statfs(m.mnt()), "statfs mount");
        assert!(st.f_bsize > 0 && st.f_blocks > 0, "statfs: empty answer");
        assert_eq!(
            st.f_blocks * st.f_bsize as u64,
            upper.f_blocks * upper.f_bsize as u64
        );
        assert!(st.f_namelen >= 255, "f_namelen {}", st.f_namelen);
    });
}

#[test]
fn fallocate_and_seek_data_hole_work() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        let fd = open_mnt(m, "f", libc::O_CREAT | libc::O_RDWR);
        // SAFETY: valid fd.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), 0, 0, 1 << 20) };
        must(sys::ck(r), "fallocate 1 MiB");
        assert_eq!(must(sys::fstat(&fd), "fstat").st_size, 1 << 20);
        let keep = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        // SAFETY: valid fd.
        let r = unsafe { libc::fallocate(fd.as_raw_fd(), keep, 0, 1 << 20) };
        must(sys::ck(r), "punch hole");
        must(sys::pwrite(&fd, &[1; 4096], 0), "write first block");
        must(sys::pwrite(&fd, &[2; 4096], 2 << 20), "write at 2 MiB");
        // SAFETY: valid fd.
        let hole = unsafe { libc::lseek(fd.as_raw_fd(), 0, libc::SEEK_HOLE) };
        if common::mode::writeback_cache() {
            // D15: the kernel answers from its size: all data, the one hole at EOF.
            let end = (2 << 20) + 4096;
            assert_eq!(hole, end, "SEEK_HOLE from 0 under the writeback cache");
            // SAFETY: valid fd.
            let data = unsafe { libc::lseek(fd.as_raw_fd(), 4096, libc::SEEK_DATA) };
            assert_eq!(data, 4096, "SEEK_DATA from 4096 under the writeback cache");
            return;
        }
        assert_eq!(hole, 4096, "SEEK_HOLE from 0");
        // SAFETY: valid fd.
        let data = unsafe { libc::lseek(fd.as_raw_fd(), 4096, libc::SEEK_DATA) };
        assert_eq!(data, 2 << 20, "SEEK_DATA from 4096");
        // SAFETY: valid fd.
        let past = unsafe { libc::lseek(fd.as_raw_fd(), (2 << 20) + 4096, libc::SEEK_DATA) };
        assert_eq!(
            (past, sys::errno()),
            (-1, libc::ENXIO),
            "SEEK_DATA past the end"
        );
    });
}

#[test]
fn copy_file_range_from_lower_file_copies_the_data() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    write_file(&s.lower(0).join("src"), &data, 0o644);
    mounted(&s, |m| {
        let src = open_mnt(m, "src", libc::O_RDONLY);
        let dst = open_mnt(m, "dst", libc::O_CREAT | libc::O_WRONLY);
        let mut done = 0usize;
        while done < data.len() {
            // SAFETY: valid fds; null offsets use and advance the file offsets.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    data.len() - done,
                    0,
                )
            };
            assert!(n > 0, "copy_file_range: {}", sys::errno_name(sys::errno()));
            done += n as usize;
        }
        drop(dst);
        assert!(read(&m.path("dst")) == data, "copied data differs");
    });
    assert!(read(&s.upper().join("dst")) == data);
    assert!(
        !exists(&s.upper().join("src")),
        "reading the source must not copy it up"
    );
}

#[test]
fn flock_and_posix_locks_conflict_as_on_ext4() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    write_file(&s.lower(0).join("f"), b"lock me", 0o644);
    mounted(&s, |m| {
        let a = open_mnt(m, "f", libc::O_RDWR);
        let b = open_mnt(m, "f", libc::O_RDWR);
        // SAFETY: valid fds.
        unsafe {
            must(
                sys::ck(libc::flock(a.as_raw_fd(), libc::LOCK_EX)),
                "flock a",
            );
            let r = sys::ck(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB));
            expect_errno(r, libc::EWOULDBLOCK, "flock b while a holds it");
            must(
                sys::ck(libc::flock(a.as_raw_fd(), libc::LOCK_UN)),
                "unlock a",
            );
            must(
                sys::ck(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
                "flock b",
            );
        }
        // OFD locks conflict with classic POSIX locks of the same process, so use disjoint ranges.
        let lock = |ty: i32, start: i64| libc::flock {
            l_type: ty as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: start,
            l_len: 10,
            l_pid: 0,
        };
        // SAFETY: valid fds and flock structs.
        unsafe {
            let mut l = lock(libc::F_WRLCK, 100);
            must(
                sys::ck(libc::fcntl(a.as_raw_fd(), libc::F_SETLK, &mut l)),
                "F_SETLK",
            );
            let mut l = lock(libc::F_WRLCK, 0);
            must(
                sys::ck(libc::fcntl(a.as_raw_fd(), libc::F_OFD_SETLK, &mut l)),
                "OFD a",
            );
            let mut l = lock(libc::F_WRLCK, 0);
            let r = sys::ck(libc::fcntl(b.as_raw_fd(), libc::F_OFD_SETLK, &mut l));
            expect_errno(r, libc::EAGAIN, "OFD lock b while a holds it");
            let mut l = lock(libc::F_WRLCK, 0);
            must(
                sys::ck(libc::fcntl(b.as_raw_fd(), libc::F_OFD_GETLK, &mut l)),
                "OFD getlk",
            );
            assert_eq!(
                l.l_type,
                libc::F_WRLCK as i16,
                "F_OFD_GETLK reports the conflict"
            );
        }
    });
}

/// apt's download code fstat()s files it has already unlinked; that gave ENOENT.
#[test]
fn regression_fstat_and_fchmod_after_unlink_while_open() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        use std::io::Write;
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let p = m.path("tmpfile");
        let mut f = std::fs::File::options()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&p)
            .expect("create");
        f.write_all(b"abc").expect("write");
        std::fs::remove_file(&p).expect("unlink");
        let md = f.metadata().expect("fstat after unlink");
        assert_eq!((md.len(), md.nlink()), (3, 0));
        f.set_permissions(std::fs::Permissions::from_mode(0o600))
            .expect("fchmod after unlink");
        assert_eq!(f.metadata().expect("fstat").mode() & 0o777, 0o600);
        assert!(!exists(&s.upper().join("tmpfile")));
    });
}

/// isatty() on a union file asked an ioctl the daemon didn't answer (logged as unimplemented).
#[test]
fn regression_ioctl_on_a_file_is_enotty() {
    if !require_fuse() {
        return;
    }
    let s = Stack::new(1);
    mounted(&s, |m| {
        let p = m.path("f");
        std::fs::write(&p, b"x").expect("create");
        let f = std::fs::File::open(&p).expect("open");
        // SAFETY: winsize is plain old data; all-zero is a valid value.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ writes a winsize into ws.
        let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, -1);
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOTTY)
        );
    });
}
