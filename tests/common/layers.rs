//! Builders for layer contents on disk, in kernel overlayfs format: whiteouts are char devices
//! 0/0, opaque directories carry `trusted.overlay.opaque=y` (`user.overlay.opaque` for stacks
//! an unprivileged process builds, see `opaque_name`). Every helper panics with the path.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::sys;

#[track_caller]
fn ok<T>(r: Result<T, i32>, what: &str, p: &Path) -> T {
    r.unwrap_or_else(|e| panic!("{what} {}: {}", p.display(), sys::errno_name(e)))
}

/// Create parent directories (mode 0755) of `p` as needed.
pub fn mkparents(p: &Path) {
    if let Some(parent) = p.parent() {
        std::fs::create_dir_all(parent)
            .unwrap_or_else(|e| panic!("create_dir_all {}: {e}", parent.display()));
    }
}

/// Write a regular file with exact contents and mode (umask does not apply).
pub fn write_file(p: &Path, data: &[u8], mode: u32) {
    mkparents(p);
    std::fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    ok(sys::chmod(p, mode), "chmod", p);
}

pub fn write_file_owned(p: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) {
    write_file(p, data, mode);
    ok(sys::lchown(p, uid, gid), "chown", p);
    ok(sys::chmod(p, mode), "chmod", p); // chown clears setuid bits
}

/// A directory with exact mode (parents created 0755).
pub fn mkdir(p: &Path, mode: u32) {
    mkparents(p);
    match sys::mkdir(p, 0o700) {
        Ok(()) | Err(libc::EEXIST) => {}
        Err(e) => panic!("mkdir {}: {}", p.display(), sys::errno_name(e)),
    }
    ok(sys::chmod(p, mode), "chmod", p);
}

pub fn symlink(target: impl AsRef<OsStr>, p: &Path) {
    mkparents(p);
    ok(sys::symlink(target.as_ref(), p), "symlink", p);
}

pub fn hardlink(existing: &Path, new: &Path) {
    mkparents(new);
    ok(sys::link(existing, new), "link", new);
}

pub fn mkfifo(p: &Path, mode: u32) {
    mkparents(p);
    ok(sys::mknod(p, libc::S_IFIFO | 0o600, 0), "mknod fifo", p);
    ok(sys::chmod(p, mode), "chmod", p);
}

/// A kernel overlayfs whiteout: character device 0/0 named `name` in `dir`.
pub fn make_whiteout(dir: &Path, name: impl AsRef<OsStr>) {
    let p = dir.join(name.as_ref());
    mkparents(&p);
    ok(
        sys::mknod(&p, libc::S_IFCHR, sys::makedev(0, 0)),
        "mknod whiteout",
        &p,
    );
}

/// Mark a directory opaque (kernel overlayfs form: trusted.* as root, user.* in the
/// unprivileged modes).
pub fn set_opaque(dir: &Path) {
    ok(
        sys::lsetxattr(dir, opaque_name(), b"y"),
        "set opaque xattr on",
        dir,
    );
}

pub fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    ok(
        sys::lsetxattr(p, name, value),
        &format!("setxattr {name} on"),
        p,
    );
}

/// The opaque xattr of a stack this process builds and mounts without FUSE: kernel overlay's
/// `trusted.*` form as root, its `userxattr` form otherwise.
pub fn opaque_name() -> &'static str {
    if super::mode::mode() == super::mode::Mode::Root {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

/// Change the owner, not following a final symlink.
pub fn chown(p: &Path, uid: u32, gid: u32) {
    ok(sys::lchown(p, uid, gid), "chown", p);
}

pub fn chmod(p: &Path, mode: u32) {
    ok(sys::chmod(p, mode), "chmod", p);
}

/// Set mtime (and atime) to a fixed second, not following symlinks.
pub fn set_mtime(p: &Path, sec: i64) {
    set_times(p, sec, 0);
}

/// Set atime and mtime to the same (sec, nsec), not following symlinks.
pub fn set_times(p: &Path, sec: i64, nsec: i64) {
    ok(
        sys::utimens(p, (sec, nsec), (sec, nsec), true),
        "utimensat",
        p,
    );
}

/// True if `p` is a kernel overlayfs whiteout (char device 0/0).
pub fn is_whiteout(p: &Path) -> bool {
    match sys::lstat(p) {
        Ok(st) => {
            st.st_mode & libc::S_IFMT == libc::S_IFCHR
                && libc::major(st.st_rdev) == 0
                && libc::minor(st.st_rdev) == 0
        }
        Err(_) => false,
    }
}

/// The opaque xattr value on a directory on disk (None if absent).
pub fn opaque_xattr(p: &Path) -> Option<Vec<u8>> {
    sys::lgetxattr(p, opaque_name()).ok()
}

/// A non-UTF-8 file name for tests.
pub fn non_utf8_name() -> &'static OsStr {
    OsStr::from_bytes(b"caf\xe9-\xff\xfe")
}

/// Copy a directory tree with `cp -a` (keeps whiteouts, xattrs, hard links, times, owners).
pub fn copy_tree(from: &Path, to: &Path) {
    let st = std::process::Command::new("cp")
        .arg("-a")
        .arg("--")
        .arg(from)
        .arg(to)
        .status()
        .expect("spawn cp -a");
    assert!(
        st.success(),
        "cp -a {} {} failed: {st}",
        from.display(),
        to.display()
    );
}

/// `dir/rel` where `rel` may be given as bytes.
pub fn at(dir: &Path, rel: &[u8]) -> PathBuf {
    dir.join(OsStr::from_bytes(rel))
}
