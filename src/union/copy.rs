//! Copy-up orchestration: the parent chain top-down, one object at a time under its
//! `copy_lock`, built in the work dir by `copyup` and renamed into place; and the owner of new
//! upper objects. Lower layers are only read here.

use std::ffi::CStr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::inode::{Node, ROOT};
use crate::layer;
use crate::sys::{self, Time};

use super::{Creds, Union, is_dir_mode};

impl Union {
    /// Make sure `node` has an upper copy, copying up its missing ancestors first (top-down).
    pub(crate) fn copy_up(&self, node: &Arc<Node>) -> Result<()> {
        self.upper()?;
        if node.ino == ROOT || self.has_upper(node) {
            return Ok(());
        }
        if node.is_removed() {
            return self.copy_up_removed(node);
        }
        let mut chain = vec![node.clone()];
        loop {
            let (parent, _) = chain[chain.len() - 1].alias()?;
            let parent = self.nodes.get(parent)?;
            if parent.ino == ROOT || self.has_upper(&parent) {
                break;
            }
            chain.push(parent);
        }
        for n in chain.iter().rev() {
            self.copy_up_one(n)?;
        }
        Ok(())
    }

    /// Copy one object whose parent already has an upper copy: build it in the work dir with
    /// everything but its name, then rename it into place, so a crash leaves the old view or
    /// the whole copy and never a partial file.
    fn copy_up_one(&self, node: &Arc<Node>) -> Result<()> {
        let _copying = node.copy_lock.lock();
        if self.has_upper(node) {
            return Ok(());
        }
        let (parent_ino, name) = node.alias()?;
        let parent = self.nodes.get(parent_ino)?;
        let src_dir = self.dir_fd(&parent, node.top())?;
        let st = sys::fstatat(src_dir.as_fd(), &name)?;
        let work = self.work()?;
        let tmp = self.tmp_name();
        let built = crate::copyup::build_copy(
            &self.fmt,
            src_dir.as_fd(),
            &name,
            &st,
            work,
            &tmp,
            crate::copyup::CopyOpts {
                fsync: self.opts.fsync,
                chown: self.privileged,
                // A lower file with several links is split by its copy-up, as in kernel
                // overlay: the copy gets an inode number of its own, recorded nowhere.
                origin: (!node.is_dir && st.st_nlink == 1).then_some(node.ino),
            },
        );
        let result = built.and_then(|()| {
            let upper_parent = self.dir_fd(&parent, layer::UPPER)?;
            let _names = parent.dir_lock.lock();
            // A copy-up changes nothing the user did: keep the parent's times, as kernel
            // overlay does.
            let pst = sys::fstat(upper_parent.as_fd())?;
            sys::renameat2(
                work,
                &tmp,
                upper_parent.as_fd(),
                &name,
                libc::RENAME_NOREPLACE,
            )?;
            let atime = Time::At(pst.st_atime, pst.st_atime_nsec);
            let mtime = Time::At(pst.st_mtime, pst.st_mtime_nsec);
            sys::utimensat(upper_parent.as_fd(), c".", atime, mtime)
        });
        if let Err(e) = result {
            let _ = layer::remove_tree(work, &tmp);
            return Err(e);
        }
        if !node.is_dir && st.st_nlink > 1 {
            let upper_parent = self.dir_fd(&parent, layer::UPPER)?;
            let ust = sys::fstatat(upper_parent.as_fd(), &name)?;
            let own = self.nodes.id_for(
                self.stack.layers[layer::UPPER].fs_index,
                ust.st_dev,
                ust.st_ino,
            );
            node.st_ino.store(own, Ordering::Relaxed);
            self.nodes.adopt(own, node.ino);
        }
        {
            let mut state = node.state.lock();
            if node.is_dir {
                state.layers.insert(0, layer::UPPER);
            } else {
                // The copy is a new file: other lower names of a lower hard link stay behind.
                state.layers = vec![layer::UPPER];
                state
                    .aliases
                    .retain(|(p, n)| *p == parent_ino && *n == name);
                if state.aliases.is_empty() {
                    state.aliases.push((parent_ino, name.clone()));
                }
            }
        }
        node.copy_gen.fetch_add(1, Ordering::Release);
        self.forget_xattr_names(node);
        tracing::debug!(ino = node.ino, name = ?name, "copied up");
        Ok(())
    }

    /// Copy up an object removed while open and still only in a lower: there is no name to
    /// copy it to. Kernel overlay answers EEXIST here (*observed*: its copy-up meets the
    /// whiteout), and so do we for an object the kernel opened through OPEN: a writer's open
    /// copied it up before its name could go. A regular file the kernel opens without asking
    /// (`set_kernel_opens`) may have been opened for writing all the same; it is copied to an
    /// unnamed file in the upper's filesystem, as kernel overlay's copy at the open is left once
    /// unlinked, and the node keeps that (docs/semantics.md, D18). Nothing of it is reachable
    /// by name, so a crash leaves at most a temporary in the work dir, cleared at mount.
    fn copy_up_removed(&self, node: &Arc<Node>) -> Result<()> {
        if node.ftype != libc::S_IFREG || !self.kernel_opens.load(Ordering::Relaxed) {
            return Err(Error::Exists);
        }
        let _copying = node.copy_lock.lock();
        if self.has_upper(node) {
            return Ok(());
        }
        let held = node.removed.lock().clone().ok_or(Error::Exists)?;
        let st = sys::fstat(held.as_fd())?;
        let work = self.work()?;
        let tmp = self.tmp_name();
        let opts = crate::copyup::CopyOpts {
            fsync: false,
            chown: self.privileged,
            origin: None,
        };
        let built = crate::copyup::build_copy(&self.fmt, held.as_fd(), c"", &st, work, &tmp, opts)
            .and_then(|()| sys::openat(work, &tmp, libc::O_PATH | libc::O_NOFOLLOW, 0));
        // Built or not, the name goes: the copy lives on as the fd.
        let _ = layer::remove_tree(work, &tmp);
        *node.removed.lock() = Some(Arc::new(built?));
        node.state.lock().layers = vec![layer::UPPER];
        node.copy_gen.fetch_add(1, Ordering::Release);
        self.forget_xattr_names(node);
        tracing::debug!(ino = node.ino, "copied up to an unnamed file");
        Ok(())
    }

    /// Owner and mode of a new object in `parent_fd` (an upper directory): the caller's ids,
    /// with BSD group semantics when the parent is setgid, as ext4 does.
    pub(super) fn new_owner(
        &self,
        parent_fd: BorrowedFd<'_>,
        creds: Creds,
        mode: u32,
    ) -> Result<(u32, u32, u32)> {
        let pst = sys::fstat(parent_fd)?;
        if pst.st_mode & libc::S_ISGID != 0 {
            let mode = if is_dir_mode(mode) {
                mode | libc::S_ISGID
            } else {
                mode
            };
            return Ok((
                creds.uid,
                self.opts.ids.show(pst.st_uid, pst.st_gid).1,
                mode,
            ));
        }
        Ok((creds.uid, creds.gid, mode))
    }

    pub(super) fn chown_new(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        uid: u32,
        gid: u32,
    ) -> Result<()> {
        // Caller ids are the mount's (container) ids; the layer stores mapped ones.
        let uid = self.opts.ids.store_uid(uid).unwrap_or(self.euid);
        let gid = self.opts.ids.store_gid(gid).unwrap_or(self.egid);
        if self.privileged && (uid != self.euid || gid != self.egid) {
            sys::fchownat(dir, name, uid, gid)?;
        }
        Ok(())
    }
}
