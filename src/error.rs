//! The one error type of the filesystem core. Every failure carries an errno; the FUSE boundary
//! (`fuse/`) converts it with [`Error::errno`] and nowhere else. Configuration errors carry the
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
    /// A file handle the kernel sent is unknown (released, or never opened).
    BadHandle,
    /// No such name in the merged view, or the name went away under a concurrent change.
    NotFound,
    /// The name is taken in the merged view.
    Exists,
    /// A directory was needed.
    NotDir,
    /// A non-directory was needed.
    IsDir,
    /// The merged directory still lists entries.
    NotEmpty,
    /// The union has no upper layer (or no work dir), so nothing can change.
    ReadOnly,
    /// A rename would move an object with copies in a lower layer.
    CrossLayerRename,
    /// Refused whatever the caller's rights: a name that would be a whiteout, a hard link to a
    /// directory, an override_stat xattr.
    NotPermitted,
    /// An argument the core cannot honour: unknown rename flags, an id the id mapping has no
    /// place for, an xattr value that is not what its name says.
    Invalid,
    /// The object has no such extended attribute.
    NoXattr,
    /// An xattr namespace with nothing to serve: `security.selinux` on a host without
    /// SELinux (docs/semantics.md, D16).
    XattrUnsupported,
    /// Data in a layer the core cannot interpret (an ACL no kernel could parse either).
    Malformed,
    /// A broken invariant or a panicked handler: a bug, answered as an I/O error.
    Internal,
    /// Bad configuration, found before mounting: names the path and the reason.
    Config { path: PathBuf, reason: String },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// The errno the kernel is answered with.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Sys(e) => *e,
            Error::Stale => libc::ESTALE,
            Error::BadHandle => libc::EBADF,
            Error::NotFound => libc::ENOENT,
            Error::Exists => libc::EEXIST,
            Error::NotDir => libc::ENOTDIR,
            Error::IsDir => libc::EISDIR,
            Error::NotEmpty => libc::ENOTEMPTY,
            // What kernel overlay answers for a change to a union without an upper.
            Error::ReadOnly => libc::EROFS,
            // Kernel overlay without redirect_dir says EXDEV, so mv(1) and friends fall back
            // to copy and delete (overlayfs.rst, "Renaming directories").
            Error::CrossLayerRename => libc::EXDEV,
            // EPERM, not EACCES: permissions would not change the answer.
            Error::NotPermitted => libc::EPERM,
            Error::Invalid => libc::EINVAL,
            // getxattr(2)'s "no such attribute" (ENOATTR is ENODATA on Linux).
            Error::NoXattr => libc::ENODATA,
            // What a filesystem without that xattr handler says; tools remember it per device.
            Error::XattrUnsupported => libc::EOPNOTSUPP,
            // Both are faults the caller cannot fix by asking differently.
            Error::Malformed | Error::Internal => libc::EIO,
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

    /// Does this error answer `errno`, whether a syscall returned it or the core decided it?
    pub fn is(&self, errno: i32) -> bool {
        self.errno() == errno
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Sys(e.raw_os_error().unwrap_or(libc::EIO))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self {
            Error::Sys(e) => return write!(f, "{}", io::Error::from_raw_os_error(*e)),
            Error::Config { path, reason } => return write!(f, "{}: {}", path.display(), reason),
            Error::Stale => "stale node id",
            Error::BadHandle => "unknown file handle",
            Error::NotFound => "no such entry",
            Error::Exists => "name exists",
            Error::NotDir => "not a directory",
            Error::IsDir => "is a directory",
            Error::NotEmpty => "directory not empty",
            Error::ReadOnly => "read-only union (no upper layer)",
            Error::CrossLayerRename => "rename across layers",
            Error::NotPermitted => "operation not permitted",
            Error::Invalid => "invalid argument",
            Error::NoXattr => "no such xattr",
            Error::XattrUnsupported => "xattr not supported",
            Error::Malformed => "malformed data in a layer",
            Error::Internal => "internal error",
        };
        write!(f, "{what} (errno {})", self.errno())
    }
}

impl std::error::Error for Error {}
