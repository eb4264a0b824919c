//! Lookup and attributes: lookup, forget, getattr, setattr, readlink. setattr copies up first;
//! in an override_stat layer owner and mode are written to the xattr, never to the file.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::handle::Handle;
use crate::inode::Node;
use crate::layer::LayerIdx;
use crate::lookup::Hit;
use crate::override_stat::{Override, read_override_at, store_override};
use crate::sys::{self, Stat, Time};

use super::data::{kill_priv_at, open_object};
use super::{SetAttr, Union, require_dir};

impl Union {
    pub fn lookup(&self, parent_ino: u64, name: &OsStr) -> Result<(Arc<Node>, Stat)> {
        self.lookup_below(parent_ino, name, None)
    }

    /// The lookup of an entry of the parent's merged listing, whose topmost copy the listing
    /// found in `top`: the lowers above `top` hold neither the name nor a whiteout of it (the
    /// listing read them, and lowers never change), so they are not probed. READDIRPLUS looks
    /// up every entry it returns; in a 3-layer directory of 10k names that skips 9,000 of
    /// 19,000 probes, each a negative ext4 lookup. The upper is always probed.
    pub fn lookup_listed(
        &self,
        parent_ino: u64,
        name: &OsStr,
        top: LayerIdx,
    ) -> Result<(Arc<Node>, Stat)> {
        self.lookup_below(parent_ino, name, Some(top))
    }

    fn lookup_below(
        &self,
        parent_ino: u64,
        name: &OsStr,
        top: Option<LayerIdx>,
    ) -> Result<(Arc<Node>, Stat)> {
        let parent = self.nodes.get(parent_ino)?;
        require_dir(&parent)?;
        let name = sys::cname(name)?;
        let Hit::Found(found) = self.resolve_below(&parent, &name, top)? else {
            return Err(Error::NotFound);
        };
        let parent_fd = self.dir_fd(&parent, found.top())?;
        let id = self.id_of(&parent, parent_fd.as_fd(), &name, &found);
        let st = self.overridden_at(found.top(), parent_fd.as_fd(), &name, found.stats[0]);
        let redirect = found.redirect;
        let node = self.nodes.remember(
            id,
            st.st_mode & libc::S_IFMT,
            found.layers,
            (parent_ino, name),
        );
        if node.is_dir {
            node.state.lock().lower = redirect;
        }
        Ok((node.clone(), self.finish_attr(&node, st)))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        // The kernel holds no open file of a node it forgets: its own handle goes too.
        if let Some(node) = self.nodes.forget(ino, n)
            && let Some((fh, _)) = node.own.lock().take()
        {
            self.handles.remove(fh);
            self.own_handles.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Result<Stat> {
        let node = self.nodes.get(ino)?;
        // Through an open file: works after its last name is gone, and costs no path walk.
        if let Some(h) = fh.and_then(|fh| self.handles.get(fh).ok())
            && let Handle::File(f) = &*h
        {
            return Ok(self.attr_of(&node, sys::fstat(self.file_fd(f)?.as_fd())?));
        }
        self.stat_node(&node)
    }

    pub fn setattr(&self, ino: u64, fh: Option<u64>, set: SetAttr) -> Result<Stat> {
        let node = self.nodes.get(ino)?;
        self.copy_up(&node)?;
        // A chown, truncate or kill-priv may drop security.capability; a chmod or utimes
        // changes no xattr name (an ACL's value, at most).
        if set.uid.is_some() || set.gid.is_some() || set.size.is_some() || set.kill_priv {
            self.forget_xattr_names(&node);
        }
        let (fd, name) = self.at(&node)?;
        if let Some(size) = set.size {
            if node.is_dir {
                return Err(Error::IsDir);
            }
            let handle = fh.map(|fh| self.handles.file(fh)).transpose()?;
            let f = match handle.as_deref().map(Handle::as_file).transpose()? {
                Some(f) if f.flags & libc::O_ACCMODE != libc::O_RDONLY => self.file_fd(f)?,
                _ => Arc::new(open_object(fd.as_fd(), &name, libc::O_WRONLY, 0)?),
            };
            sys::ftruncate(f.as_fd(), size)?;
        }
        if set.kill_priv && node.ftype == libc::S_IFREG {
            kill_priv_at(fd.as_fd(), &name)?;
        }
        let ids = &self.opts.ids;
        let mut set = SetAttr {
            uid: set
                .uid
                .map(|u| ids.store_uid(u).ok_or(Error::Invalid))
                .transpose()?,
            gid: set
                .gid
                .map(|g| ids.store_gid(g).ok_or(Error::Invalid))
                .transpose()?,
            ..set
        };
        // In an override_stat layer, owner and mode live in the xattr, not on the file (which
        // may be a regular file standing in for a device: ask the disk, not `node.ftype`).
        let real = match set.uid.is_some() || set.gid.is_some() || set.mode.is_some() {
            true if self.stack.layers[node.top()].override_stat.is_some() => {
                Some(sys::fstatat(fd.as_fd(), &name)?)
            }
            _ => None,
        };
        if let Some(real) = real
            && let Some(x) = self.override_xattr(&node, real.st_mode)
        {
            let cur = read_override_at(fd.as_fd(), &name, x).unwrap_or(Override {
                uid: real.st_uid,
                gid: real.st_gid,
                mode: real.st_mode & 0o7777,
                special: None,
            });
            // A special type already recorded (a device standing in as a regular file) stays.
            let new = Override {
                uid: set.uid.unwrap_or(cur.uid),
                gid: set.gid.unwrap_or(cur.gid),
                mode: set.mode.map_or(cur.mode, |m| m & 0o7777),
                special: cur.special,
            };
            store_override(fd.as_fd(), &name, x, &new)?;
            (set.uid, set.gid, set.mode) = (None, None, None);
        }
        if set.uid.is_some() || set.gid.is_some() {
            sys::fchownat(
                fd.as_fd(),
                &name,
                set.uid.unwrap_or(u32::MAX),
                set.gid.unwrap_or(u32::MAX),
            )?;
        }
        if let Some(mode) = set.mode {
            sys::fchmodat(fd.as_fd(), &name, mode & 0o7777)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            let (a, m) = (
                set.atime.unwrap_or(Time::Omit),
                set.mtime.unwrap_or(Time::Omit),
            );
            sys::utimensat(fd.as_fd(), &name, a, m)?;
        }
        Ok(self.attr_of(&node, sys::fstatat(fd.as_fd(), &name)?))
    }

    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        let (fd, name) = self.at(&node)?;
        sys::readlinkat(fd.as_fd(), &name)
    }
}
