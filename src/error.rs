//! The one error type of the filesystem core. Every failure carries an errno; the FUSE boundary
//! (`fuse.rs`) converts it with [`Error::errno`] and nowhere else. Configuration errors carry the
//! path and a reason for the user.

use std::fmt;
use std::io;
use std::path::PathBuf;

#[derive(Debug)]
pub enum Error {
    /// A syscall failed; the raw errno is kept so callers see exactly what the layer said.
    Sys(i32),
    /// A node id the kernel sent is unknown (forgotten or never looked up).
    Stale,
    /// Bad configuration, found before mounting: names the path and the reason.
    Config { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn errno(&self) -> i32 {
        match self {
            Error::Sys(e) => *e,
            Error::Stale => libc::ESTALE,
            // Only reachable before a session exists; EINVAL is what mount(2) would say.
            Error::Config { .. } => libc::EINVAL,
        }
    }

    pub fn config(path: impl Into<PathBuf>, reason: impl Into<String>) -> Error {
        Error::Config {
            path: path.into(),
            reason: reason.into(),
        }
    }

    pub fn last() -> Error {
        Error::Sys(
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    pub fn is(&self, errno: i32) -> bool {
        matches!(self, Error::Sys(e) if *e == errno)
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Sys(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Sys(e) => write!(f, "{}", io::Error::from_raw_os_error(*e)),
            Error::Stale => write!(f, "stale node id"),
            Error::Config { path, reason } => write!(f, "{}: {}", path.display(), reason),
        }
    }
}

impl std::error::Error for Error {}
