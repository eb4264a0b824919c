//! rename: the checks shared by both forms, then `exchange` (RENAME_EXCHANGE) or `replace`.
//! A non-directory is copied up and moved in the upper. A directory with lower copies is
//! copied up and moved too, and its upper copy records where its lower copies are in a
//! redirect xattr (kernel overlay's `redirect_dir=on`), also in an exchange; with redirects
//! off it answers EXDEV. Sources are copied up before the two parents' `dir_lock`s are taken, in
//! node id order.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use parking_lot::MutexGuard;

use crate::error::{Error, Result};
use crate::inode::Node;
use crate::layer;
use crate::lookup::{self, Hit, LowerPath};
use crate::sys;

use super::{RedirectDir, Union, require_dir};

/// Both ends of a rename, resolved under the two parents' `dir_lock`s.
struct Ends<'a> {
    parent: &'a Node,
    name: &'a CString,
    /// The parent's upper copy.
    pfd: BorrowedFd<'a>,
    newparent: &'a Node,
    newname: &'a CString,
    npfd: BorrowedFd<'a>,
    /// The source: in the upper (anything else answered EXDEV); a directory may have lower
    /// copies.
    src: lookup::Found,
    /// What the target name resolves to.
    dst: Hit,
}

impl Union {
    pub fn rename(
        &self,
        parent_ino: u64,
        name: &OsStr,
        newparent_ino: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.upper()?;
        let parent = self.nodes.get(parent_ino)?;
        let newparent = self.nodes.get(newparent_ino)?;
        require_dir(&parent)?;
        require_dir(&newparent)?;
        let name = sys::cname(name)?;
        let newname = sys::cname(newname)?;
        let _changing = (
            self.listings.changing(parent_ino),
            self.listings.changing(newparent_ino),
        );
        if flags & !(libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE) != 0 {
            return Err(Error::Invalid);
        }
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if exchange && flags & libc::RENAME_NOREPLACE != 0 {
            return Err(Error::Invalid);
        }
        // Refuse what is bound to fail before copying anything up, as kernel overlay does: a
        // failed rename must not leave a copy-up behind (it would split a lower hard link).
        self.check_rename(&parent, &name, &newparent, &newname, flags)?;
        // Copy up first (before any directory lock): the source, the target when exchanging,
        // and both parents.
        let src = self
            .prepare_rename_side(&parent, &name)?
            .ok_or(Error::NotFound)?;
        let dst = if exchange {
            Some(
                self.prepare_rename_side(&newparent, &newname)?
                    .ok_or(Error::NotFound)?,
            )
        } else {
            None
        };
        // A directory moved lists another "..".
        let _moved = (
            self.listings.changing(src.ino),
            dst.as_ref().map(|d| self.listings.changing(d.ino)),
        );
        self.copy_up(&newparent)?;
        let _locks = lock_two(&parent, &newparent);
        let Hit::Found(sfound) = self.resolve(&parent, &name)? else {
            return Err(Error::NotFound);
        };
        if !self.movable(&sfound) {
            return Err(Error::CrossLayerRename);
        }
        if parent_ino == newparent_ino && name == newname {
            return Ok(());
        }
        let dhit = self.resolve(&newparent, &newname)?;
        let pfd = self.dir_fd(&parent, layer::UPPER)?;
        let npfd = self.dir_fd(&newparent, layer::UPPER)?;
        let ends = Ends {
            parent: &parent,
            name: &name,
            pfd: pfd.as_fd(),
            newparent: &newparent,
            newname: &newname,
            npfd: npfd.as_fd(),
            src: sfound,
            dst: dhit,
        };
        match dst {
            Some(dst) => self.exchange(&ends, &src, &dst),
            None => self.replace(&ends, &src, flags & libc::RENAME_NOREPLACE != 0),
        }
    }

    fn creates_redirects(&self) -> bool {
        self.opts.redirect_dir == RedirectDir::On
    }

    /// The redirect a directory with lower copies (`found`) needs once it moves from `parent/name`
    /// (to `newparent` when not `samedir`), as kernel overlay's `ovl_set_redirect` computes
    /// it: an existing one is kept when it still holds (same parent, or absolute); otherwise
    /// the old name within the same parent, or the absolute path of its lower copies, built
    /// from the names (or redirects) of it and its ancestors.
    fn redirect_for(
        &self,
        found: &lookup::Found,
        parent: &Node,
        name: &CStr,
        samedir: bool,
    ) -> Result<Option<LowerPath>> {
        // Only the upper copy's redirect counts, as kernel overlay's `ovl_get_redirect` reads
        // only that: the copies below the upper are where it (or the names) lead.
        let own = found
            .redirect
            .as_ref()
            .and_then(|r| r.carried_by(layer::UPPER));
        if let Some(r) = own
            && (samedir || matches!(r, LowerPath::Abs(_)))
        {
            return Ok(None);
        }
        if samedir {
            return Ok(Some(LowerPath::Name(name.to_owned())));
        }
        let mut comps = vec![match own {
            Some(LowerPath::Name(n)) => n.clone(),
            _ => name.to_owned(),
        }];
        let mut cur = self.nodes.get(parent.ino)?;
        while cur.ino != crate::inode::ROOT {
            let lower =
                (cur.state.lock().lower.as_ref()).and_then(|r| r.carried_by(layer::UPPER).cloned());
            match lower {
                Some(LowerPath::Abs(prefix)) => {
                    let mut all = prefix;
                    all.extend(comps.into_iter().rev());
                    return Ok(Some(LowerPath::Abs(all)));
                }
                Some(LowerPath::Name(n)) => comps.push(n),
                None => comps.push(cur.alias()?.1),
            }
            cur = self.nodes.get(cur.alias()?.0)?;
        }
        comps.reverse();
        Ok(Some(LowerPath::Abs(comps)))
    }

    /// Is the object in the upper only (so a rename of it stays within one layer)?
    fn upper_only(&self, found: &lookup::Found) -> bool {
        self.stack.is_upper(found.top()) && found.layers.len() == 1
    }

    /// Can this object be moved within the upper: upper-only, or a directory copied up whose
    /// lower copies a redirect will point to?
    fn movable(&self, found: &lookup::Found) -> bool {
        self.upper_only(found)
            || (found.is_dir && self.stack.is_upper(found.top()) && self.creates_redirects())
    }

    /// Before `found` (a directory at `dir/name`, in the upper) moves: record where its lower
    /// copies are, or, for an upper-only one arriving where a lower has `newname` under
    /// `newparent`, make it opaque so it does not merge with that. Returns the redirect the
    /// node takes after the move.
    fn mark_moving_dir(
        &self,
        found: &lookup::Found,
        (parent, dir, name): (&Node, BorrowedFd<'_>, &CStr),
        (newparent, newname): (&Node, &CStr),
    ) -> Result<Option<LowerPath>> {
        if !found.is_dir {
            return Ok(None);
        }
        if !self.upper_only(found) {
            // Its lower copies stay where they are: the redirect says where, and it hides
            // whatever a lower has under the new name (no opaque flag, as kernel overlay).
            let samedir = parent.ino == newparent.ino;
            let r = self.redirect_for(found, parent, name, samedir)?;
            if let Some(r) = &r {
                let v = r.to_xattr();
                if v.len() > lookup::REDIRECT_MAX {
                    return Err(Error::CrossLayerRename);
                }
                self.fmt.set_redirect(dir, name, &v)?;
            }
            return Ok(r);
        }
        if !found.opaque && self.lower_positive(newparent, newname)? {
            self.fmt.set_opaque(dir, name)?;
        }
        Ok(None)
    }

    /// RENAME_EXCHANGE: both ends exist and are in the upper; each name keeps hiding what a
    /// lower has under it.
    fn exchange(&self, e: &Ends<'_>, src: &Node, dst: &Node) -> Result<()> {
        let Hit::Found(dfound) = &e.dst else {
            return Err(Error::NotFound);
        };
        if !self.movable(dfound) {
            return Err(Error::CrossLayerRename);
        }
        let src_lower =
            self.mark_moving_dir(&e.src, (e.parent, e.pfd, e.name), (e.newparent, e.newname))?;
        let dst_lower =
            self.mark_moving_dir(dfound, (e.newparent, e.npfd, e.newname), (e.parent, e.name))?;
        sys::renameat2(e.pfd, e.name, e.npfd, e.newname, libc::RENAME_EXCHANGE)?;
        src.remove_alias(e.parent.ino, e.name, None);
        dst.remove_alias(e.newparent.ino, e.newname, None);
        src.add_alias(e.newparent.ino, e.newname);
        dst.add_alias(e.parent.ino, e.name);
        if let Some(r) = src_lower {
            self.refresh_redirects(src, (e.newparent, e.newname), r);
        }
        if let Some(r) = dst_lower {
            self.refresh_redirects(dst, (e.parent, e.name), r);
        }
        Ok(())
    }

    /// A plain rename (or RENAME_NOREPLACE): the source replaces whatever the target name
    /// shows, and a whiteout stays at the old name where a lower still has it.
    fn replace(&self, e: &Ends<'_>, src: &Node, noreplace: bool) -> Result<()> {
        let mut upper_whiteout_at_dst = false;
        let mut dst_node = None;
        let mut dst_held = None;
        match &e.dst {
            Hit::Found(d) => {
                if noreplace {
                    return Err(Error::Exists);
                }
                match (e.src.is_dir, d.is_dir) {
                    (true, false) => return Err(Error::NotDir),
                    (false, true) => return Err(Error::IsDir),
                    _ => {}
                }
                // A target only in lowers has nothing in the upper to replace: the moved
                // object covers it.
                if d.is_dir {
                    self.check_empty(e.newparent, e.newname, d)?;
                    if self.stack.is_upper(d.top()) {
                        // Only whiteouts remain in the target's upper copy: clear them so the
                        // rename can replace it (the moved dir is made opaque below).
                        let sub = sys::open_dir_path(e.npfd, e.newname)?;
                        layer::clear_dir(sub.as_fd())?;
                    }
                }
                dst_node = self.child_node(e.newparent, e.newname, d);
                dst_held = dst_node
                    .as_ref()
                    .and_then(|n| self.hold_before_remove(n, e.newparent.ino, e.newname));
                // The target's upper object is about to be replaced: if that was its last
                // link, its inode number is free for reuse.
                if let Some(n) = &dst_node
                    && self.stack.is_upper(d.top())
                    && (d.is_dir || d.stats[0].st_nlink <= 1)
                {
                    n.dead.store(true, Ordering::Release);
                }
            }
            Hit::Absent { whiteout_layer } => {
                upper_whiteout_at_dst = *whiteout_layer == Some(layer::UPPER)
            }
        }
        let src_whiteout = self.lower_positive(e.parent, e.name)?;
        let new_lower =
            self.mark_moving_dir(&e.src, (e.parent, e.pfd, e.name), (e.newparent, e.newname))?;
        if e.src.is_dir && upper_whiteout_at_dst {
            // A directory cannot replace the whiteout (a char device) by rename: exchange them,
            // then keep the whiteout at the old name if a lower still has it.
            sys::renameat2(e.pfd, e.name, e.npfd, e.newname, libc::RENAME_EXCHANGE)?;
            if !src_whiteout {
                sys::unlinkat(e.pfd, e.name, 0)?;
            }
        } else {
            let flags = if src_whiteout {
                libc::RENAME_WHITEOUT
            } else {
                0
            };
            sys::renameat2(e.pfd, e.name, e.npfd, e.newname, flags)?;
        }
        if let Some(d) = dst_node {
            d.remove_alias(e.newparent.ino, e.newname, dst_held);
            if d.is_dir {
                self.nodes.drop_dir_fds(d.ino);
            }
        }
        src.remove_alias(e.parent.ino, e.name, None);
        src.add_alias(e.newparent.ino, e.newname);
        if let Some(r) = new_lower {
            self.refresh_redirects(src, (e.newparent, e.newname), r);
        }
        Ok(())
    }

    /// A directory moved to `parent/name` with the new upper redirect `r`: the redirects met
    /// below it are read again from there, as a later lookup (or kernel overlay after a
    /// remount) finds them (a relative one in a lower copy now counts from the new path).
    fn refresh_redirects(&self, node: &Node, (parent, name): (&Node, &CStr), r: LowerPath) {
        let found = match self.resolve(parent, name) {
            Ok(Hit::Found(f)) => f.redirect,
            _ => None,
        };
        node.state.lock().lower =
            Some(found.unwrap_or_else(|| lookup::Redirects(vec![(layer::UPPER, r)])));
    }

    /// The errors a rename can be told apart by from the names alone (they are checked again
    /// under the directory locks).
    fn check_rename(
        &self,
        parent: &Node,
        name: &CStr,
        newparent: &Node,
        newname: &CStr,
        flags: u32,
    ) -> Result<()> {
        let has_lower = |f: &lookup::Found| f.layers.iter().any(|l| !self.stack.is_upper(*l));
        let Hit::Found(src) = self.resolve(parent, name)? else {
            return Err(Error::NotFound);
        };
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        let fixed = |f: &lookup::Found| f.is_dir && has_lower(f) && !self.creates_redirects();
        if fixed(&src) {
            return Err(Error::CrossLayerRename);
        }
        match self.resolve(newparent, newname)? {
            Hit::Absent { .. } if exchange => Err(Error::NotFound),
            Hit::Absent { .. } => Ok(()),
            Hit::Found(_) if flags & libc::RENAME_NOREPLACE != 0 => Err(Error::Exists),
            Hit::Found(dst) if exchange => {
                if fixed(&dst) {
                    Err(Error::CrossLayerRename)
                } else {
                    Ok(())
                }
            }
            Hit::Found(dst) => match (src.is_dir, dst.is_dir) {
                (true, false) => Err(Error::NotDir),
                (false, true) => Err(Error::IsDir),
                (true, true) => self.check_empty(newparent, newname, &dst),
                (false, false) => Ok(()),
            },
        }
    }

    /// The node at `parent/name`, copied up (a directory with lower copies only when
    /// redirects are created; otherwise EXDEV).
    fn prepare_rename_side(&self, parent: &Arc<Node>, name: &CString) -> Result<Option<Arc<Node>>> {
        let Hit::Found(found) = self.resolve(parent, name)? else {
            return Ok(None);
        };
        let pfd = self.dir_fd(parent, found.top())?;
        let ids = self.id_of(parent, pfd.as_fd(), name, &found);
        let id = ids.0;
        let node = match self.nodes.peek_object(id) {
            Some(n) => n,
            None => {
                // Not known to the kernel (rare: rename without a prior lookup); track it
                // without a kernel reference.
                let st = self.overridden_at(found.top(), pfd.as_fd(), name, found.stats[0]);
                let n = self.nodes.remember(
                    ids,
                    st.st_mode & libc::S_IFMT,
                    found.layers.clone(),
                    (parent.ino, name.clone()),
                );
                self.nodes.forget(n.ino, 1);
                n
            }
        };
        node.add_alias(parent.ino, name);
        let has_lower = found.layers.iter().any(|l| !self.stack.is_upper(*l));
        if found.is_dir {
            if has_lower && !self.creates_redirects() {
                return Err(Error::CrossLayerRename);
            }
            if found.redirect.is_some() {
                node.state.lock().lower = found.redirect.clone();
            }
        }
        self.copy_up(&node)?;
        Ok(Some(node))
    }
}

fn lock_two<'a>(a: &'a Node, b: &'a Node) -> (MutexGuard<'a, ()>, Option<MutexGuard<'a, ()>>) {
    if a.ino == b.ino {
        return (a.dir_lock.lock(), None);
    }
    let (first, second) = if a.ino < b.ino { (a, b) } else { (b, a) };
    let g1 = first.dir_lock.lock();
    let g2 = second.dir_lock.lock();
    (g1, Some(g2))
}
