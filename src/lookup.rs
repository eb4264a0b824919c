//! The lookup rule of a merged directory, as a pure function of layer contents: walk the
//! parent's layers top-down; the first layer with the name wins; a whiteout there means absent;
//! a non-directory hides everything below; a directory merges with directories of the same name
//! below it until one is opaque or a non-directory or whiteout stops the merge.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::Result;
use crate::layer::LayerIdx;
use crate::sys::{self, Stat};
use crate::whiteout::Format;

#[derive(Debug)]
pub struct Found {
    /// Layers holding the object, top-down (one unless it is a merged directory).
    pub layers: Vec<LayerIdx>,
    /// The stat of the object in each of those layers.
    pub stats: Vec<Stat>,
    pub is_dir: bool,
    /// The directory's topmost copy is opaque.
    pub opaque: bool,
}

impl Found {
    pub fn top(&self) -> LayerIdx {
        self.layers[0]
    }
}

#[derive(Debug)]
pub enum Hit {
    Found(Found),
    /// Not in the merged view; `whiteout_layer` is where a whiteout stopped the search.
    Absent {
        whiteout_layer: Option<LayerIdx>,
    },
}

/// Resolve `name` in a merged directory whose copies are `parent_layers` (top-down), with
/// `dir_fd(layer)` giving the directory's fd in a layer.
/// `absent(layer)` may say that a layer certainly has no such name (see `dirindex`); the layer
/// is then not probed.
pub fn resolve(
    fmt: &Format,
    parent_layers: &[LayerIdx],
    mut dir_fd: impl FnMut(LayerIdx) -> Result<Arc<OwnedFd>>,
    absent: impl Fn(LayerIdx) -> bool,
    name: &CStr,
) -> Result<Hit> {
    if fmt.aufs && name.to_bytes().starts_with(crate::whiteout::AUFS_PREFIX) {
        return Ok(Hit::Absent {
            whiteout_layer: None,
        });
    }
    let mut found: Option<Found> = None;
    for (pos, &layer) in parent_layers.iter().enumerate() {
        if absent(layer) {
            continue;
        }
        let fd = dir_fd(layer)?;
        let st = match sys::fstatat_opt(fd.as_fd(), name)? {
            Some(st) => st,
            None if fmt.has_aufs_whiteout(fd.as_fd(), name)? => {
                if found.is_none() {
                    return Ok(Hit::Absent {
                        whiteout_layer: Some(layer),
                    });
                }
                break;
            }
            None => continue,
        };
        if sys::is_whiteout_stat(&st) {
            if found.is_none() {
                return Ok(Hit::Absent {
                    whiteout_layer: Some(layer),
                });
            }
            break;
        }
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let last = pos + 1 == parent_layers.len();
        match &mut found {
            None => {
                let opaque = is_dir && fmt.is_opaque(fd.as_fd(), name);
                found = Some(Found {
                    layers: vec![layer],
                    stats: vec![st],
                    is_dir,
                    opaque,
                });
                if !is_dir || opaque || last {
                    break;
                }
            }
            Some(f) => {
                if !is_dir {
                    break;
                }
                f.layers.push(layer);
                f.stats.push(st);
                if last || fmt.is_opaque(fd.as_fd(), name) {
                    break;
                }
            }
        }
    }
    Ok(found.map_or(
        Hit::Absent {
            whiteout_layer: None,
        },
        Hit::Found,
    ))
}

/// Does any lower copy of the parent (layers after the upper) hold `name`, so that removing
/// the upper's entry would let it show through? (Kernel overlay's `ovl_lower_positive`.)
pub fn lower_positive(
    fmt: &Format,
    parent_layers: &[LayerIdx],
    upper: Option<LayerIdx>,
    mut dir_fd: impl FnMut(LayerIdx) -> Result<Arc<OwnedFd>>,
    name: &CStr,
) -> Result<bool> {
    for &layer in parent_layers.iter().filter(|l| Some(**l) != upper) {
        let fd = dir_fd(layer)?;
        if let Some(st) = sys::fstatat_opt(fd.as_fd(), name)? {
            return Ok(!sys::is_whiteout_stat(&st));
        }
        if fmt.has_aufs_whiteout(fd.as_fd(), name)? {
            return Ok(false);
        }
    }
    Ok(false)
}
