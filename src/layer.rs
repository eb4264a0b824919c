//! The layers of a union, held as O_PATH directory fds. Index 0 is the upper when there is one;
//! the lowers follow top-first, as in kernel overlay's `lowerdir=`. Lowers are never written:
//! nothing in the crate opens a lower for writing or passes a lower fd to a mutating call.

use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::sys;

/// Index of a layer in its stack (`UPPER` when the stack has one).
pub type LayerIdx = usize;

/// The upper layer's index, in a stack that has one (`LayerStack::has_upper`); lowers follow.
pub const UPPER: LayerIdx = 0;

pub struct Layer {
    pub path: PathBuf,
    pub root: Arc<OwnedFd>,
    /// 1-based index of this layer's filesystem among the stack's distinct st_dev values: the
    /// high bits of node ids (kernel overlay's xino scheme).
    pub fs_index: u64,
    /// The xattr this layer keeps apparent owners and modes in (fuse-overlayfs's
    /// `override_stat`), found on the layer's root, or None.
    pub override_stat: Option<CString>,
}

/// fuse-overlayfs's override_stat xattrs, in the order it looks for them on a layer's root.
/// The value is `UID:GID:MODE[:TYPE]` (mode in octal; TYPE in `override_stat::parse_override`); it
/// applies to directories and regular files.
pub const OVERRIDE_PRIVILEGED: &str = "security.fuseoverlayfs.override_stat";
pub const OVERRIDE_CONTAINERS: &str = "user.containers.override_stat";
pub const OVERRIDE_USER: &str = "user.fuseoverlayfs.override_stat";

fn detect_override(root: BorrowedFd<'_>) -> Option<CString> {
    [OVERRIDE_PRIVILEGED, OVERRIDE_CONTAINERS, OVERRIDE_USER]
        .into_iter()
        .filter_map(|n| CString::new(n).ok())
        .find(|n| matches!(sys::getxattrat_vec(root, c".", n), Ok(Some(_))))
}

pub struct LayerStack {
    pub layers: Vec<Layer>,
    pub has_upper: bool,
    /// The work dir's `work/` subdirectory on the upper's filesystem, for atomic copy-up.
    pub work: Option<OwnedFd>,
    /// Every lower is reached through a private read-only, noatime clone of its mount
    /// (`seal_lowers`), so a lower file may back FUSE passthrough.
    pub lowers_sealed: bool,
}

fn open_root(path: &Path, what: &str) -> Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::config(path, "path contains a NUL byte"))?;
    let fd = sys::open_path(&c, libc::O_PATH | libc::O_DIRECTORY).map_err(|e| {
        let reason = match e.errno() {
            libc::ENOENT => format!("{what} does not exist"),
            libc::ENOTDIR => format!("{what} is not a directory"),
            _ => format!("cannot open {what}: {e}"),
        };
        Error::config(path, reason)
    })?;
    Ok(fd)
}

impl LayerStack {
    /// Open the layers. Paths must already be validated and canonical (see `config`).
    pub fn open(lowers: &[PathBuf], upper: Option<&Path>, work: Option<&Path>) -> Result<Self> {
        let mut roots = Vec::new();
        if let Some(u) = upper {
            roots.push((u.to_path_buf(), open_root(u, "upper layer")?));
        }
        for l in lowers {
            roots.push((l.clone(), open_root(l, "lower layer")?));
        }
        let mut devs: Vec<u64> = Vec::new();
        let mut layers = Vec::new();
        for (path, fd) in roots {
            let st = sys::fstat(fd.as_fd()).map_err(|e| Error::config(&path, e.to_string()))?;
            let fs_index = match devs.iter().position(|d| *d == st.st_dev) {
                Some(i) => i as u64 + 1,
                None => {
                    devs.push(st.st_dev);
                    devs.len() as u64
                }
            };
            let override_stat = detect_override(fd.as_fd());
            layers.push(Layer {
                override_stat,
                path,
                root: Arc::new(fd),
                fs_index,
            });
        }
        let work = match (upper, work) {
            (Some(u), Some(w)) => Some(open_work(u, w, &layers[UPPER])?),
            _ => None,
        };
        Ok(LayerStack {
            layers,
            has_upper: upper.is_some(),
            work,
            lowers_sealed: false,
        })
    }

    /// Reach every lower through a private clone of its mount that is read-only and `noatime`
    /// (`sys::read_only_clone`): the kernel then refuses any write to a lower, and a reader
    /// passed through to a lower file leaves its atime alone (kernel overlay opens lowers
    /// O_NOATIME; a passthrough backing file is opened with the reader's flags). Needs
    /// CAP_SYS_ADMIN; returns whether every lower is sealed (`lowers_sealed`).
    pub fn seal_lowers(&mut self) -> bool {
        let first = usize::from(self.has_upper);
        for layer in &mut self.layers[first..] {
            match sys::read_only_clone(layer.root.as_fd()) {
                Ok(fd) => layer.root = Arc::new(fd),
                Err(e) => {
                    tracing::info!(layer = %layer.path.display(), error = %e,
                        "no read-only clone of the lower's mount; lower files stay off passthrough");
                    return false;
                }
            }
        }
        self.lowers_sealed = true;
        true
    }

    pub fn root(&self, idx: LayerIdx) -> BorrowedFd<'_> {
        self.layers[idx].root.as_fd()
    }

    pub fn is_upper(&self, idx: LayerIdx) -> bool {
        self.has_upper && idx == UPPER
    }

    pub fn upper_idx(&self) -> Option<LayerIdx> {
        self.has_upper.then_some(UPPER)
    }

    pub fn len(&self) -> usize {
        self.layers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }
}

/// Prepare WORK/work: same filesystem as the upper (renames out of it must not cross devices),
/// emptied of whatever a crashed session left, and private to root (mode 0700), so a copy-up in
/// progress is never reachable by anyone else.
fn open_work(upper: &Path, work: &Path, upper_layer: &Layer) -> Result<OwnedFd> {
    std::fs::create_dir_all(work)
        .map_err(|e| Error::config(work, format!("cannot create work dir: {e}")))?;
    let wfd = open_root(work, "work dir")?;
    let wst = sys::fstat(wfd.as_fd()).map_err(|e| Error::config(work, e.to_string()))?;
    let ust =
        sys::fstat(upper_layer.root.as_fd()).map_err(|e| Error::config(upper, e.to_string()))?;
    if wst.st_dev != ust.st_dev {
        return Err(Error::config(
            work,
            format!(
                "work dir must be on the same filesystem as the upper {}",
                upper.display()
            ),
        ));
    }
    let name = c"work";
    match sys::mkdirat(wfd.as_fd(), name, 0o700) {
        Ok(()) => {}
        Err(e) if e.is(libc::EEXIST) => {}
        Err(e) => return Err(Error::config(work, format!("cannot create work/: {e}"))),
    }
    let fd = sys::open_dir_path(wfd.as_fd(), name)
        .map_err(|e| Error::config(work.join("work"), e.to_string()))?;
    clear_dir(fd.as_fd()).map_err(|e| Error::config(work.join("work"), e.to_string()))?;
    Ok(fd)
}

/// Remove everything inside `dir` (not `dir` itself), without following symlinks.
pub fn clear_dir(dir: BorrowedFd<'_>) -> Result<()> {
    for ent in sys::read_dir(dir)? {
        remove_tree(dir, &ent.name)?;
    }
    Ok(())
}

/// Remove `dir/name` and, if it is a directory, everything below it.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &std::ffi::CStr) -> Result<()> {
    match sys::unlinkat(dir, name, 0) {
        Ok(()) => return Ok(()),
        Err(e) if e.is(libc::EISDIR) || e.is(libc::EPERM) => {}
        Err(e) if e.is(libc::ENOENT) => return Ok(()),
        Err(e) => return Err(e),
    }
    let sub = sys::open_dir_path(dir, name)?;
    clear_dir(sub.as_fd())?;
    sys::unlinkat(dir, name, libc::AT_REMOVEDIR)
}
