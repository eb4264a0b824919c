//! The merged listing of a directory: each name once, from its topmost layer; whiteouts and
//! the names they hide left out. The caller snapshots it per opendir so offsets stay stable.

use std::collections::HashSet;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::Result;
use crate::layer::LayerIdx;
use crate::sys;
use crate::whiteout::{AUFS_PREFIX, Format};

#[derive(Clone, Debug)]
pub struct Entry {
    pub name: CString,
    /// The entry's inode number in `layer` (not yet a node id).
    pub ino: u64,
    pub layer: LayerIdx,
    pub dtype: u8,
}

/// List a merged directory whose copies are `layers` (top-down, already cut at opaque).
pub fn list(
    fmt: &Format,
    layers: &[LayerIdx],
    mut dir_fd: impl FnMut(LayerIdx) -> Result<Arc<OwnedFd>>,
) -> Result<Vec<Entry>> {
    let mut seen: HashSet<CString> = HashSet::new();
    let mut out = Vec::new();
    for &layer in layers {
        let fd = dir_fd(layer)?;
        let mut aufs_hidden = Vec::new();
        for ent in sys::read_dir(fd.as_fd())? {
            if fmt.aufs
                && let Some(hidden) = ent.name.to_bytes().strip_prefix(AUFS_PREFIX)
            {
                // `.wh.X` hides X in the layers below this one; it never shows itself.
                if let Ok(x) = CString::new(hidden) {
                    aufs_hidden.push(x);
                }
                continue;
            }
            if seen.contains(&ent.name) {
                continue;
            }
            let mut dtype = ent.dtype;
            if dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                match sys::fstatat_opt(fd.as_fd(), &ent.name)? {
                    None => continue,
                    Some(st) if sys::is_whiteout_stat(&st) => {
                        seen.insert(ent.name);
                        continue;
                    }
                    Some(st) => dtype = dtype_of(st.st_mode),
                }
            }
            seen.insert(ent.name.clone());
            out.push(Entry {
                name: ent.name,
                ino: ent.ino,
                layer,
                dtype,
            });
        }
        seen.extend(aufs_hidden);
    }
    Ok(out)
}

pub fn dtype_of(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFREG => libc::DT_REG,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        _ => libc::DT_UNKNOWN,
    }
}
