//! Building the upper copy of a lower object under a temporary name in the work dir: data
//! (reflink, else copy_file_range per data extent so holes stay holes, else read/write), then
//! xattrs, owner, mode and times, then fsync. The caller renames the result into place; until
//! then nobody can see it (the work dir is 0700 and outside the merged view).

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::error::{Error, Result};
use crate::sys::{self, Stat, Time};
use crate::whiteout::Format;

/// An entry of a directory: the directory's fd and the entry's name.
type At<'a> = (BorrowedFd<'a>, &'a CStr);

pub struct CopyOpts {
    pub fsync: bool,
    /// Give the copy the original's owner (needs privilege in our namespace).
    pub chown: bool,
    /// For a non-directory: the node id to record as its origin, so st_ino survives remounts.
    pub origin: Option<u64>,
}

/// Build a copy of `src_dir/name` (stat `st`) at `work/tmp`; an empty `name` copies the object
/// `src_dir` holds.
pub fn build_copy(
    fmt: &Format,
    src_dir: BorrowedFd<'_>,
    name: &CStr,
    st: &Stat,
    work: BorrowedFd<'_>,
    tmp: &CStr,
    opts: CopyOpts,
) -> Result<()> {
    let kind = st.st_mode & libc::S_IFMT;
    // Created with no permissions at all (owner-only when unprivileged: without
    // CAP_DAC_OVERRIDE the owner needs write access to set xattrs); the real mode comes last,
    // after the owner. Either way the copy sits in the 0700 work dir, out of anyone's reach.
    let data_fd: Option<OwnedFd> = match kind {
        libc::S_IFREG => {
            let src = open_source(src_dir, name)?;
            let mode = if opts.chown { 0 } else { 0o600 };
            let dst = sys::openat(
                work,
                tmp,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
                mode,
            )?;
            copy_data(src.as_fd(), dst.as_fd(), st.st_size as u64)?;
            Some(dst)
        }
        libc::S_IFDIR => {
            sys::mkdirat(work, tmp, if opts.chown { 0 } else { 0o700 })?;
            None
        }
        libc::S_IFLNK => {
            let target = sys::readlinkat(src_dir, name)?;
            let target = std::ffi::CString::new(target).map_err(|_| Error::Invalid)?;
            sys::symlinkat(&target, work, tmp)?;
            None
        }
        _ => {
            sys::mknodat(work, tmp, kind, st.st_rdev)?;
            None
        }
    };
    // Owner before xattrs: chown drops security.capability, which must survive the copy.
    if opts.chown {
        sys::fchownat(work, tmp, st.st_uid, st.st_gid)?;
    }
    copy_xattrs(fmt, (src_dir, name), (work, tmp), kind)?;
    if let Some(ino) = opts.origin {
        // Only files and dirs can carry user.* xattrs (userxattr mode): a symlink, fifo or
        // device copied up without privilege keeps its id only until the next mount.
        let special = kind != libc::S_IFREG && kind != libc::S_IFDIR;
        match fmt.set_origin(work, tmp, ino) {
            Err(e) if special && e.is(libc::EPERM) => {}
            r => r?,
        }
    }
    if kind != libc::S_IFLNK {
        sys::fchmodat(work, tmp, st.st_mode & 0o7777)?;
    }
    let atime = Time::At(st.st_atime, st.st_atime_nsec);
    let mtime = Time::At(st.st_mtime, st.st_mtime_nsec);
    sys::utimensat(work, tmp, atime, mtime)?;
    if let Some(fd) = data_fd
        && opts.fsync
    {
        sys::fsync(fd.as_fd(), false)?;
    }
    Ok(())
}

/// The file to copy from, read-only and leaving its atime alone where we may; an empty `name`
/// is `src_dir`'s own object (an O_PATH fd on a file whose name was removed).
fn open_source(src_dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
    if !name.is_empty() {
        return sys::openat_noatime(src_dir, name, libc::O_RDONLY | libc::O_NOFOLLOW);
    }
    match sys::reopen(src_dir, libc::O_RDONLY | libc::O_NOATIME) {
        Err(e) if e.is(libc::EPERM) => sys::reopen(src_dir, libc::O_RDONLY),
        r => r,
    }
}

/// Copy `size` bytes: reflink if the filesystem can, else extent by extent.
fn copy_data(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, size: u64) -> Result<()> {
    if size == 0 || sys::ficlone(dst, src).is_ok() {
        return Ok(());
    }
    let mut off = 0u64;
    while off < size {
        let data = match sys::lseek(src, off as i64, libc::SEEK_DATA) {
            Ok(d) => d as u64,
            Err(e) if e.is(libc::ENXIO) => break, // only a hole remains
            Err(e) if e.is(libc::EINVAL) => off,  // no SEEK_DATA here: treat all as data
            Err(e) => return Err(e),
        };
        let hole = match sys::lseek(src, data as i64, libc::SEEK_HOLE) {
            Ok(h) => (h as u64).min(size),
            Err(_) => size,
        };
        copy_range(src, dst, data, hole)?;
        off = hole;
    }
    // Extends the file over a trailing hole (and fixes the size if the source shrank).
    sys::ftruncate(dst, size)
}

fn copy_range(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, mut from: u64, to: u64) -> Result<()> {
    let mut in_kernel = true;
    let mut buf = Vec::new();
    while from < to {
        let len = (to - from).min(1 << 30) as usize;
        if in_kernel {
            match sys::copy_file_range(src, from, dst, from, len) {
                Ok(0) => return Ok(()), // source shorter than it said
                Ok(n) => {
                    from += n as u64;
                    continue;
                }
                Err(e)
                    if e.is(libc::EXDEV)
                        || e.is(libc::EINVAL)
                        || e.is(libc::ENOSYS)
                        || e.is(libc::EOPNOTSUPP) =>
                {
                    in_kernel = false;
                    buf.resize(1 << 20, 0);
                }
                Err(e) => return Err(e),
            }
        }
        let want = len.min(buf.len());
        let n = sys::pread(src, &mut buf[..want], from)?;
        if n == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < n {
            done += sys::pwrite(dst, &buf[done..n], from + done as u64)?;
        }
        from += n as u64;
    }
    Ok(())
}

/// Copy the xattrs a user can see (and escaped overlay names) from `src` to `dst`, each an
/// entry of a directory.
fn copy_xattrs(fmt: &Format, src: At<'_>, dst: At<'_>, kind: u32) -> Result<()> {
    for name in sys::listxattrat_vec(src.0, src.1)? {
        if !fmt.copies(&name) {
            continue;
        }
        let Some(value) = sys::getxattrat_vec(src.0, src.1, &name)? else {
            continue;
        };
        match sys::setxattrat(dst.0, dst.1, &name, &value, 0) {
            Ok(()) => {}
            // The upper's filesystem lacks this namespace, or it can't go on this file type:
            // kernel overlay ignores these for security.* and ACLs too.
            Err(e) if e.is(libc::ENOTSUP) => {}
            Err(e) if e.is(libc::EPERM) && kind != libc::S_IFREG && kind != libc::S_IFDIR => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
