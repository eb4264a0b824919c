//! Directory handles: opendir and the merged listing a handle reads from, snapshotted at
//! offset 0 so cookies stay stable across readdir calls.

use std::ffi::CStr;
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::error::Result;
use crate::handle::{DirEntry, DirHandle, Handle};
use crate::inode::{Node, ROOT};
use crate::listings::Listing;
use crate::override_stat::read_override_at;
use crate::readdir;
use crate::sys;

use super::{Union, require_dir};

impl Union {
    pub fn opendir(&self, ino: u64) -> Result<u64> {
        let node = self.nodes.get(ino)?;
        require_dir(&node)?;
        // The listing is built on the first readdir, not here: with a cached directory the
        // kernel opens and releases it without ever reading.
        Ok(self.handles.insert(Handle::Dir(DirHandle {
            node,
            entries: parking_lot::Mutex::new(None),
        })))
    }

    /// The snapshot a directory handle reads from; taken anew at offset 0 (opendir, rewinddir).
    pub fn dir_entries(&self, fh: u64, offset: u64) -> Result<Listing> {
        let h = self.handles.get(fh)?;
        let d = h.as_dir()?;
        if offset != 0
            && let Some(e) = &*d.entries.lock()
        {
            return Ok(e.clone());
        }
        // Listed without the snapshot's lock held (it walks every layer). The kernel reads one
        // open directory from one thread at a time (f_pos_lock); were two listings to race,
        // each is a whole snapshot and cookies are name hashes, so either may win.
        let entries = Arc::new(self.list_dir(&d.node)?);
        *d.entries.lock() = Some(entries.clone());
        Ok(entries)
    }

    /// A merged listing ordered by cookie. Cookies are name hashes (as ext4's htree offsets),
    /// not positions: the kernel's directory cache may be filled from several handles'
    /// snapshots taken at different moments, and positions would shift between them.
    fn list_dir(&self, node: &Node) -> Result<Vec<DirEntry>> {
        // Removed while open: nothing is left in it, not even "." and ".." (as a removed
        // directory reads on a local filesystem).
        if node.is_removed() {
            return Ok(Vec::new());
        }
        let layers = node.layers();
        let entries = readdir::list(&self.fmt, &layers, |l| self.dir_fd(node, l))?;
        let mut out = Vec::with_capacity(entries.len() + 2);
        let parent = node.alias().map(|(p, _)| p).unwrap_or(ROOT);
        out.push(DirEntry {
            off: 1,
            name: c".".to_owned(),
            ino: node.ino,
            dtype: libc::DT_DIR,
            layer: node.top(),
        });
        out.push(DirEntry {
            off: 2,
            name: c"..".to_owned(),
            ino: parent,
            dtype: libc::DT_DIR,
            layer: node.top(),
        });
        for e in entries {
            let layer = &self.stack.layers[e.layer];
            // d_ino as the layer sees it, in node-id form (st_ino may differ for a merged
            // directory or a copied-up file; kernel overlay without xino has the same gap).
            let ino = self.nodes.id_for(layer.fs_index, 0, e.ino);
            let mut dtype = e.dtype;
            // A regular file may stand in for a special file: d_type says what lookup will.
            if dtype == libc::DT_REG
                && let Some(x) = layer.override_stat.as_deref()
                && let Some((kind, _)) =
                    read_override_at(self.dir_fd(node, e.layer)?.as_fd(), &e.name, x)
                        .and_then(|o| o.special)
            {
                dtype = readdir::dtype_of(kind);
            }
            out.push(DirEntry {
                off: name_cookie(&e.name),
                name: e.name,
                ino,
                dtype,
                layer: e.layer,
            });
        }
        out[2..].sort_by(|a, b| (a.off, &a.name).cmp(&(b.off, &b.name)));
        Ok(out)
    }

    /// The listing a READDIR without a handle reads from (the kernel opened the directory
    /// itself, see `listings`): taken anew at offset 0, else the one kept since, if current.
    pub fn listing(&self, ino: u64, offset: u64) -> Result<Listing> {
        if offset != 0
            && let Some(l) = self.listings.get(ino)
        {
            return Ok(l);
        }
        let node = self.nodes.get(ino)?;
        require_dir(&node)?;
        let stamp = self.listings.stamp();
        let entries = Arc::new(self.list_dir(&node)?);
        self.listings.keep(ino, stamp, entries.clone());
        Ok(entries)
    }

    /// fsync of a directory the kernel opened itself: the upper's, where it has one.
    pub fn fsync_dir(&self, ino: u64, datasync: bool) -> Result<()> {
        let node = self.nodes.get(ino)?;
        require_dir(&node)?;
        self.fsync_dir_node(&node, datasync)
    }

    pub(super) fn fsync_dir_node(&self, node: &Node, datasync: bool) -> Result<()> {
        let fd = self.dir_fd(node, node.top())?;
        let real = sys::openat(fd.as_fd(), c".", libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
        sys::fsync(real.as_fd(), datasync)
    }

    pub fn dir_handle(&self, fh: u64) -> Result<Arc<Handle>> {
        let h = self.handles.get(fh)?;
        h.as_dir()?;
        Ok(h)
    }
}

/// A readdir cookie for a name: 63 bits of a fixed-key hash, above the cookies of "." and "..".
fn name_cookie(name: &CStr) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.to_bytes().hash(&mut h);
    (h.finish() >> 1).max(3)
}
