//! Open file and directory handles. A file handle holds the real fd; one opened on a lower copy
//! notices a later copy-up (the node's `copy_gen` moved) and reopens the upper copy, so a
//! read-only fd sees writes made through another fd, as with kernel overlay (unless the kernel
//! reads it through passthrough from the lower file: docs/semantics.md, D17).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::RwLock;

use crate::error::{Error, Result};
use crate::inode::Node;
use crate::layer::LayerIdx;

pub struct FileHandle {
    pub node: Arc<Node>,
    /// The real fd and the node's copy generation it was opened at.
    pub fd: RwLock<(Arc<OwnedFd>, u64)>,
    /// The open flags given to the real file (access mode and status flags).
    pub flags: i32,
}

pub struct DirEntry {
    /// This entry's readdir cookie: a hash of its name, the same in every snapshot, so a
    /// listing continued from another snapshot neither repeats nor skips a name that stayed.
    pub off: u64,
    pub name: CString,
    pub ino: u64,
    pub dtype: u8,
    /// The layer of the entry's topmost copy: no lower above it holds the name or a whiteout
    /// of it (see `Union::lookup_listed`). Meaningless for "." and "..".
    pub layer: LayerIdx,
}

pub struct DirHandle {
    pub node: Arc<Node>,
    /// Snapshot taken at the first read (offset 0): offsets index into it, so they stay stable.
    pub entries: parking_lot::Mutex<Option<Arc<Vec<DirEntry>>>>,
}

pub enum Handle {
    File(FileHandle),
    Dir(DirHandle),
}

pub struct Handles {
    map: RwLock<HashMap<u64, Arc<Handle>>>,
    next: AtomicU64,
}

impl Default for Handles {
    fn default() -> Self {
        Handles {
            map: RwLock::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl Handles {
    pub fn insert(&self, h: Handle) -> u64 {
        if let Handle::File(f) = &h {
            f.node.open_files.fetch_add(1, Ordering::Relaxed);
        }
        let fh = self.next.fetch_add(1, Ordering::Relaxed);
        self.map.write().insert(fh, Arc::new(h));
        fh
    }

    pub fn get(&self, fh: u64) -> Result<Arc<Handle>> {
        self.map.read().get(&fh).cloned().ok_or(Error::BadHandle)
    }

    pub fn file(&self, fh: u64) -> Result<Arc<Handle>> {
        let h = self.get(fh)?;
        match *h {
            Handle::File(_) => Ok(h),
            Handle::Dir(_) => Err(Error::IsDir),
        }
    }

    pub fn remove(&self, fh: u64) -> Option<Arc<Handle>> {
        let h = self.map.write().remove(&fh);
        if let Some(Handle::File(f)) = h.as_deref() {
            f.node.open_files.fetch_sub(1, Ordering::Relaxed);
        }
        h
    }

    pub fn len(&self) -> usize {
        self.map.read().len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.read().is_empty()
    }
}

impl Handle {
    pub fn as_file(&self) -> Result<&FileHandle> {
        match self {
            Handle::File(f) => Ok(f),
            Handle::Dir(_) => Err(Error::IsDir),
        }
    }

    pub fn as_dir(&self) -> Result<&DirHandle> {
        match self {
            Handle::Dir(d) => Ok(d),
            Handle::File(_) => Err(Error::NotDir),
        }
    }
}
