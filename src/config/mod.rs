//! The mount configuration: `options` parses `-o` lists into raw `MountOpts`, `lowers` reads a
//! lower layer list, `validate` turns them into a `MountConfig` (`MountConfig::new`). Everything
//! a user can get wrong is checked before anything is mounted, and reported with the path and
//! the reason.

pub mod lowers;
mod options;
mod validate;

use crate::idmap::IdRange;
use std::path::PathBuf;
use std::time::Duration;

pub use options::{MountOpts, parse_id_map, split_lowerdir, split_options};
pub use validate::{default_workdir, initial_ns_root, is_mountpoint};

/// A validated mount and how to run it: what `unionfuse mount` and the fuse-overlayfs form
/// both produce.
pub struct MountCommand {
    pub config: MountConfig,
    pub foreground: bool,
    pub verbose: u8,
}

#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Lower layers, top-first, canonical.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// fsync copied-up files before linking them in (kernel overlay's default; `volatile` off).
    pub fsync: bool,
    /// Overlay metadata in `user.overlay.*` instead of `trusted.overlay.*`.
    pub userxattr: bool,
    pub threads: usize,
    /// Kernel entry/attribute cache lifetime.
    pub ttl: Duration,
    /// Use FUSE passthrough for file data when the kernel and our privileges allow it.
    pub passthrough: bool,
    /// Let files that are only in a lower back passthrough as well, through a read-only,
    /// noatime clone of the lowers' mounts (root in the initial namespace only; see
    /// docs/semantics.md on readers open across a copy-up).
    pub lower_passthrough: bool,
    /// Let the kernel cache writes and write them back in large batches when file data goes
    /// through the daemon (no passthrough).
    pub writeback: bool,
    /// `-o noopen`: when passthrough is off, let the kernel open regular files itself: no OPEN
    /// or RELEASE round trip per open(2), and a lower file is copied up at its first change
    /// rather than at an open for writing (docs/semantics.md, D18).
    pub kernel_opens: bool,
    /// Fault injection for tests: a lookup of this name panics inside the request handler.
    pub panic_on: Option<String>,
    /// Read `.wh.` whiteout files as whiteouts (fuse-overlayfs compatibility).
    pub aufs_whiteouts: bool,
    /// Keep owner and mode changes in the upper in this xattr (`xattr_permissions=`).
    pub override_stat: Option<String>,
    /// `uidmapping=`: owners as seen through the mount (`container`) <-> owners in the layers
    /// (`host`); written `host:container:count`, fuse-overlayfs's order. Empty: ids pass through unchanged. Validated: no overlap on either side.
    pub uid_map: Vec<IdRange>,
    /// `gidmapping=`, as `uid_map`.
    pub gid_map: Vec<IdRange>,
    /// `squash_to_uid=` (or 0 from `squash_to_root`): every object appears owned by this uid,
    /// and chown requests succeed without changing the layers (fuse-overlayfs's rule).
    pub squash_uid: Option<u32>,
    /// `squash_to_gid=` (or 0 from `squash_to_root`), as `squash_uid`.
    pub squash_gid: Option<u32>,
    /// `static_nlink`: directories report st_nlink 1 instead of a counted value.
    pub static_nlink: bool,
    /// `redirect_dir=`: renames of directories with lower copies, and following redirects.
    pub redirect_dir: crate::union::RedirectDir,
    /// POSIX ACL support was not disabled with `noacl`.
    pub acl: bool,
    /// The mount's source name in /proc/mounts (`fsname=`; "unionfuse" by default).
    pub fsname: String,
    /// Honour setuid bits / device nodes / exec on the mount (mount(8)'s suid, dev, exec).
    pub suid: bool,
    pub dev: bool,
    pub exec: bool,
    /// Options accepted for compatibility that change nothing here, for a debug log line.
    pub ignored: Vec<String>,
}
