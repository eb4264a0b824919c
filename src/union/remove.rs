//! unlink and rmdir: remove the upper entry and leave a whiteout where a lower still has the
//! name, atomically (the whiteout is made in the work dir and renamed or exchanged in).

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::inode::Node;
use crate::layer::{self, LayerIdx};
use crate::lookup::{Found, Hit, LowerPath};
use crate::readdir;
use crate::sys;
use crate::whiteout;

use super::{Union, require_dir};

impl Union {
    pub fn unlink(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.remove(parent_ino, name, false)
    }

    pub fn rmdir(&self, parent_ino: u64, name: &OsStr) -> Result<()> {
        self.remove(parent_ino, name, true)
    }

    /// unlink/rmdir: remove the upper's entry, and leave a whiteout where a lower still has
    /// the name.
    fn remove(&self, parent_ino: u64, name: &OsStr, dir: bool) -> Result<()> {
        self.upper()?;
        let parent = self.nodes.get(parent_ino)?;
        require_dir(&parent)?;
        let name = sys::cname(name)?;
        self.copy_up(&parent)?;
        let _changing = self.listings.changing(parent_ino);
        let _names = parent.dir_lock.lock();
        let Hit::Found(found) = self.resolve(&parent, &name)? else {
            return Err(Error::NotFound);
        };
        match (dir, found.is_dir) {
            (false, true) => return Err(Error::IsDir),
            (true, false) => return Err(Error::NotDir),
            _ => {}
        }
        let child = self.child_node(&parent, &name, &found);
        // A removed directory's listing goes too (its node id may come back for another).
        let _gone = child
            .as_ref()
            .filter(|c| c.is_dir)
            .map(|c| self.listings.changing(c.ino));
        let pfd = self.dir_fd(&parent, layer::UPPER)?;
        if found.is_dir {
            self.check_empty(&parent, &name, &found)?;
        }
        let whiteout = found.layers.iter().any(|l| !self.stack.is_upper(*l))
            || (self.stack.is_upper(found.top()) && self.lower_positive(&parent, &name)?);
        // Mark the node dead *before* its inode number is freed: a create in another directory
        // may get that number the moment the unlink returns, and must not find this node live.
        let frees_inode =
            self.stack.is_upper(found.top()) && (found.is_dir || found.stats[0].st_nlink <= 1);
        if let Some(child) = &child
            && frees_inode
        {
            child.dead.store(true, Ordering::Release);
        }
        let held = child
            .as_ref()
            .and_then(|c| self.hold_before_remove(c, parent_ino, &name));
        let removed = if self.stack.is_upper(found.top()) {
            self.remove_upper_entry(pfd.as_fd(), &name, found.is_dir, whiteout)
        } else {
            whiteout::make_whiteout(pfd.as_fd(), &name)
        };
        if let Err(e) = removed {
            if let Some(child) = &child {
                child.dead.store(false, Ordering::Release);
            }
            return Err(e);
        }
        if let Some(child) = child {
            child.remove_alias(parent_ino, &name, held);
            if child.is_dir {
                self.nodes.drop_dir_fds(child.ino);
            }
        }
        Ok(())
    }

    /// Remove `name` (in the upper directory `pfd`), replacing it with a whiteout if asked,
    /// atomically: the whiteout is made in the work dir and exchanged or renamed in.
    fn remove_upper_entry(
        &self,
        pfd: BorrowedFd<'_>,
        name: &CStr,
        is_dir: bool,
        whiteout: bool,
    ) -> Result<()> {
        if !whiteout {
            if !is_dir {
                return sys::unlinkat(pfd, name, 0);
            }
            match sys::unlinkat(pfd, name, libc::AT_REMOVEDIR) {
                // It holds whiteouts only (it is empty in the merged view): clear it first.
                Err(e) if e.is(libc::ENOTEMPTY) => {
                    let sub = sys::open_dir_path(pfd, name)?;
                    layer::clear_dir(sub.as_fd())?;
                    return sys::unlinkat(pfd, name, libc::AT_REMOVEDIR);
                }
                r => return r,
            }
        }
        let work = self.work()?;
        let tmp = self.tmp_name();
        whiteout::make_whiteout(work, &tmp)?;
        let flags = if is_dir { libc::RENAME_EXCHANGE } else { 0 };
        if let Err(e) = sys::renameat2(work, &tmp, pfd, name, flags) {
            let _ = sys::unlinkat(work, &tmp, 0);
            return Err(e);
        }
        if is_dir {
            // The old directory (holding only whiteouts) is now in the work dir.
            layer::remove_tree(work, &tmp)?;
        }
        Ok(())
    }

    /// ENOTEMPTY unless the merged directory `parent/name` (as `found` by lookup) lists
    /// nothing, counting the lower copies a redirect leads to.
    pub(super) fn check_empty(&self, parent: &Node, name: &CStr, found: &Found) -> Result<()> {
        let child_fd = |l: LayerIdx| self.child_dir_fd(parent, name, found, l);
        if readdir::list(&self.fmt, &found.layers, child_fd)?.is_empty() {
            Ok(())
        } else {
            Err(Error::NotEmpty)
        }
    }

    /// The copy in layer `l` of the directory `parent/name` that lookup `found`: under its
    /// name, or where the redirect of a copy above it says.
    pub(super) fn child_dir_fd(
        &self,
        parent: &Node,
        name: &CStr,
        found: &Found,
        l: LayerIdx,
    ) -> Result<Arc<OwnedFd>> {
        let at = found.redirect.as_ref().and_then(|r| r.for_layer(l));
        match at {
            Some(LowerPath::Abs(comps)) => {
                let mut fd = self.stack.layers[l].root.clone();
                for c in comps {
                    fd = Arc::new(sys::open_dir_path(fd.as_fd(), c)?);
                }
                Ok(fd)
            }
            Some(LowerPath::Name(n)) => {
                let pfd = self.dir_fd(parent, l)?;
                Ok(Arc::new(sys::open_dir_path(pfd.as_fd(), n)?))
            }
            None => {
                let pfd = self.dir_fd(parent, l)?;
                Ok(Arc::new(sys::open_dir_path(pfd.as_fd(), name)?))
            }
        }
    }
}
