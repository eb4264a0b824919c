//! Checks on a mounted view for the mounted tests: errno expectations, directory listings with
//! `.` and `..`, and comparing a snapshot entry with an expected one. Every helper panics with
//! what it was checking.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::mount::UnionMount;
use super::sys;
use super::tree::Entry;

#[track_caller]
pub fn must<T>(r: Result<T, i32>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what}: {}", sys::errno_name(e)))
}

#[track_caller]
pub fn expect_errno<T: std::fmt::Debug>(r: Result<T, i32>, want: i32, what: &str) {
    match r {
        Err(e) if e == want => {}
        Err(e) => panic!(
            "{what}: got {}, want {}",
            sys::errno_name(e),
            sys::errno_name(want)
        ),
        Ok(v) => panic!("{what}: succeeded ({v:?}), want {}", sys::errno_name(want)),
    }
}

pub fn read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

pub fn exists(p: &Path) -> bool {
    sys::lstat(p).is_ok()
}

pub fn ino(p: &Path) -> u64 {
    must(sys::lstat(p), &format!("lstat {}", p.display())).st_ino
}

/// Names in a directory including `.` and `..`, sorted.
pub fn listing(p: &Path) -> Vec<Vec<u8>> {
    let fd = must(
        sys::open(p, libc::O_RDONLY | libc::O_DIRECTORY, 0),
        "open dir",
    );
    let mut names = must(sys::read_dir_names(&fd, true), "readdir");
    names.sort();
    names
}

pub fn names(list: &[&str]) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = list.iter().map(|s| s.as_bytes().to_vec()).collect();
    v.sort();
    v
}

/// Compare an entry with the expected one; fields `want` leaves as None are not compared.
#[track_caller]
pub fn assert_entry(what: &str, got: Option<&Entry>, want: &Entry) {
    let mut got = got.unwrap_or_else(|| panic!("{what}: missing")).clone();
    if want.mtime.is_none() {
        got.mtime = None;
    }
    if want.nlink.is_none() {
        got.nlink = None;
    }
    let d = got.differences(want);
    assert!(
        d.is_empty(),
        "{what}: {}\n  got:  {got}\n  want: {want}",
        d.join("; ")
    );
}

/// Open `rel` in the mount (mode 0644 if created); panics with the errno.
#[track_caller]
pub fn open_mnt(m: &UnionMount, rel: &str, flags: i32) -> std::os::fd::OwnedFd {
    must(
        sys::open(&m.path(rel), flags, 0o644),
        &format!("open {rel}"),
    )
}
