//! Which lower layers hold which names, for one merged directory of a deep stack. Built once
//! (one read of each lower copy) so that a lookup probes only the layers that have the name
//! instead of every layer: lookup cost stays flat as stacks grow to hundreds of layers. Only
//! lowers are indexed (they never change under the mount); the upper is always probed.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use crate::error::Result;
use crate::layer::LayerIdx;
use crate::sys;
use crate::whiteout::AUFS_PREFIX;

/// Below this many lower copies, probing each layer costs less than building an index.
pub const MIN_LOWERS: usize = 8;

#[derive(Debug)]
pub struct DirIndex {
    names: HashMap<CString, Vec<LayerIdx>>,
}

impl DirIndex {
    /// Index the lower copies `lowers` of a directory (`dir_fd(layer)` gives each copy).
    pub fn build(
        lowers: &[LayerIdx],
        aufs: bool,
        mut dir_fd: impl FnMut(LayerIdx) -> Result<Arc<OwnedFd>>,
    ) -> Result<DirIndex> {
        let mut names: HashMap<CString, Vec<LayerIdx>> = HashMap::new();
        for &layer in lowers {
            let fd = dir_fd(layer)?;
            for ent in sys::read_dir(fd.as_fd())? {
                // An AUFS whiteout `.wh.X` is something to find at this layer for X too.
                if aufs
                    && let Some(x) = ent.name.to_bytes().strip_prefix(AUFS_PREFIX)
                    && let Ok(x) = CString::new(x)
                {
                    names.entry(x).or_default().push(layer);
                }
                names.entry(ent.name).or_default().push(layer);
            }
        }
        Ok(DirIndex { names })
    }

    /// Can `layer` hold anything (an entry or a whiteout) named `name`?
    pub fn may_have(&self, name: &std::ffi::CStr, layer: LayerIdx) -> bool {
        self.names.get(name).is_some_and(|l| l.contains(&layer))
    }
}
