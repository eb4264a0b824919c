//! The runtime's error: which step, on which path, and the errno or reason
//! ("pivot_root into /run/x: EINVAL (invalid argument)").

use std::fmt;
use std::io;

/// A runtime failure: which step, on which path, and the errno or reason.
#[derive(Debug)]
pub struct RunError(pub String);

impl RunError {
    pub fn new(msg: impl Into<String>) -> RunError {
        RunError(msg.into())
    }

    /// `"{what}: EINVAL (invalid argument)"` from an errno.
    pub fn errno(what: impl fmt::Display, errno: i32) -> RunError {
        RunError(format!("{what}: {}", errno_text(errno)))
    }

    pub fn last(what: impl fmt::Display) -> RunError {
        RunError::errno(what, last_errno())
    }

    pub fn io(what: impl fmt::Display, e: &io::Error) -> RunError {
        match e.raw_os_error() {
            Some(n) => RunError::errno(what, n),
            None => RunError(format!("{what}: {e}")),
        }
    }
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

pub type RunResult<T> = std::result::Result<T, RunError>;

pub fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The errno's symbolic name and the C library's description, lower-cased.
pub fn errno_text(errno: i32) -> String {
    let name = match errno {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::ESRCH => "ESRCH",
        libc::EINTR => "EINTR",
        libc::EIO => "EIO",
        libc::E2BIG => "E2BIG",
        libc::ENOEXEC => "ENOEXEC",
        libc::EBADF => "EBADF",
        libc::ECHILD => "ECHILD",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EACCES => "EACCES",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EEXIST => "EEXIST",
        libc::EXDEV => "EXDEV",
        libc::ENODEV => "ENODEV",
        libc::ENOTDIR => "ENOTDIR",
        libc::EISDIR => "EISDIR",
        libc::EINVAL => "EINVAL",
        libc::ENFILE => "ENFILE",
        libc::EMFILE => "EMFILE",
        libc::ENOTTY => "ENOTTY",
        libc::ENOSPC => "ENOSPC",
        libc::EROFS => "EROFS",
        libc::ENAMETOOLONG => "ENAMETOOLONG",
        libc::ENOSYS => "ENOSYS",
        libc::ELOOP => "ELOOP",
        libc::ENOTCONN => "ENOTCONN",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EUSERS => "EUSERS",
        _ => "",
    };
    let desc = io::Error::from_raw_os_error(errno).to_string();
    let desc = desc.split(" (os error").next().unwrap_or("").to_lowercase();
    if name.is_empty() {
        format!("errno {errno} ({desc})")
    } else {
        format!("{name} ({desc})")
    }
}
