//! Create-like operations (create, mknod, mkdir, symlink, link) through one `create_entry`:
//! the parent is copied up, the name checked and made under the parent's `dir_lock`; over an
//! upper whiteout the object is built in the work dir and renamed in.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::handle::{FileHandle, Handle};
use crate::inode::Node;
use crate::layer;
use crate::lookup::{self, Hit};
use crate::override_stat::{Override, store_override};
use crate::sys::{self, Stat};

use super::{Creds, Union, is_dir_mode, require_dir};

/// What a create-like operation makes.
enum NewObject<'a> {
    File { mode: u32, flags: i32 },
    Dir { mode: u32 },
    Node { mode: u32, rdev: u64 },
    Symlink { target: &'a CStr },
    Link { dir: Arc<OwnedFd>, name: CString },
}

impl Union {
    /// Create a new name in `parent`. Over an upper whiteout the object is built in the work
    /// dir and renamed into place (a directory then is opaque, hiding what the whiteout hid).
    fn create_entry(
        &self,
        parent_ino: u64,
        name: &OsStr,
        creds: Creds,
        what: NewObject<'_>,
    ) -> Result<(Arc<Node>, Stat, Option<OwnedFd>)> {
        self.upper()?;
        let parent = self.nodes.get(parent_ino)?;
        require_dir(&parent)?;
        let name = sys::cname(name)?;
        self.copy_up(&parent)?;
        let _changing = self.listings.changing(parent_ino);
        let _names = parent.dir_lock.lock();
        let over_whiteout = match self.resolve(&parent, &name)? {
            Hit::Found(_) => return Err(Error::Exists),
            Hit::Absent { whiteout_layer } => whiteout_layer == Some(layer::UPPER),
        };
        let pfd = self.dir_fd(&parent, layer::UPPER)?;
        let (dir, tmp) = if over_whiteout {
            (self.work()?, self.tmp_name())
        } else {
            (pfd.as_fd(), name.clone())
        };
        let file = self.make_object(dir, &tmp, pfd.as_fd(), creds, &what);
        let file = file.and_then(|file| {
            if !over_whiteout {
                return Ok(file);
            }
            if matches!(what, NewObject::Dir { .. }) {
                self.fmt.set_opaque(dir, &tmp)?;
                sys::renameat2(dir, &tmp, pfd.as_fd(), &name, libc::RENAME_EXCHANGE)?;
                // The whiteout now sits at the temporary name.
                let _ = sys::unlinkat(dir, &tmp, 0);
            } else {
                sys::renameat2(dir, &tmp, pfd.as_fd(), &name, 0)?;
            }
            Ok(file)
        });
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                // Never remove a name someone else made (EEXIST: the name was taken).
                if over_whiteout || !e.is(libc::EEXIST) {
                    let _ = layer::remove_tree(dir, &tmp);
                }
                return Err(e);
            }
        };
        let st = sys::fstatat(pfd.as_fd(), &name)?;
        let is_dir = is_dir_mode(st.st_mode);
        // An override_stat upper records the apparent owner and mode of what is created, and
        // the type and device number of a special file made as a regular stand-in.
        if let Some(x) = self.override_xattr_in(layer::UPPER, st.st_mode) {
            let special = match what {
                NewObject::Link { .. } => None,
                NewObject::Node { mode, rdev } => Some(Some((mode & libc::S_IFMT, rdev))),
                _ => Some(None),
            };
            if let Some(special) = special {
                let o = Override {
                    uid: creds.uid,
                    gid: creds.gid,
                    mode: st.st_mode & 0o7777,
                    special,
                };
                store_override(pfd.as_fd(), &name, x, &o)?;
            }
        }
        let st = self.overridden_at(layer::UPPER, pfd.as_fd(), &name, st);
        let id = match &what {
            // A new link is another name of an existing node.
            NewObject::Link { .. } => {
                let found = lookup::Found {
                    layers: vec![layer::UPPER],
                    stats: vec![st],
                    is_dir,
                    opaque: false,
                    redirect: None,
                };
                self.id_of(&parent, pfd.as_fd(), &name, &found)
            }
            _ => {
                let id = self.nodes.id_for(
                    self.stack.layers[layer::UPPER].fs_index,
                    st.st_dev,
                    st.st_ino,
                );
                (id, id)
            }
        };
        let node = self.nodes.remember(
            id,
            st.st_mode & libc::S_IFMT,
            vec![layer::UPPER],
            (parent_ino, name),
        );
        Ok((node.clone(), self.finish_attr(&node, st), file))
    }

    fn make_object(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        parent_fd: BorrowedFd<'_>,
        creds: Creds,
        what: &NewObject<'_>,
    ) -> Result<Option<OwnedFd>> {
        let chown = |mode: u32| -> Result<()> {
            let (uid, gid, _) = self.new_owner(parent_fd, creds, mode)?;
            self.chown_new(dir, name, uid, gid)
        };
        match what {
            NewObject::File { mode, flags } => {
                let (uid, gid, mode) = self.new_owner(parent_fd, creds, libc::S_IFREG | mode)?;
                // A new file may be opened read-write whatever its mode: no fallback needed.
                let flags = self.handle_flags(*flags) | libc::O_CREAT | libc::O_EXCL;
                let fd = sys::openat(dir, name, flags, mode & 0o7777)?;
                self.chown_new(dir, name, uid, gid)?;
                Ok(Some(fd))
            }
            NewObject::Dir { mode } => {
                let (uid, gid, mode) = self.new_owner(parent_fd, creds, libc::S_IFDIR | mode)?;
                sys::mkdirat(dir, name, mode & 0o7777)?;
                self.chown_new(dir, name, uid, gid)?;
                if mode & libc::S_ISGID != 0 {
                    // mkdir(2) may drop S_ISGID when the creator is not in the group.
                    sys::fchmodat(dir, name, mode & 0o7777)?;
                }
                Ok(None)
            }
            NewObject::Node { mode, .. } if self.stands_in(*mode) => {
                // Kept as a regular file; create_entry records the type in override_stat.
                let (uid, gid, mode) = self.new_owner(parent_fd, creds, libc::S_IFREG | mode)?;
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW;
                drop(sys::openat(dir, name, flags, mode & 0o7777)?);
                self.chown_new(dir, name, uid, gid)?;
                Ok(None)
            }
            NewObject::Node { mode, rdev } => {
                sys::mknodat(dir, name, *mode, *rdev)?;
                chown(*mode)?;
                Ok(None)
            }
            NewObject::Symlink { target } => {
                sys::symlinkat(target, dir, name)?;
                chown(libc::S_IFLNK)?;
                Ok(None)
            }
            NewObject::Link {
                dir: src_dir,
                name: src,
            } => {
                sys::linkat(src_dir.as_fd(), src, dir, name)?;
                Ok(None)
            }
        }
    }

    /// A device, FIFO or socket made in an override_stat upper is a regular file there, its
    /// type in the override xattr (containers-storage's `force_mask` rule): the daemon may not
    /// be allowed to make a device, and only files and directories carry `user.*` xattrs.
    fn stands_in(&self, mode: u32) -> bool {
        self.stack.layers[layer::UPPER].override_stat.is_some()
            && matches!(
                mode & libc::S_IFMT,
                libc::S_IFCHR | libc::S_IFBLK | libc::S_IFIFO | libc::S_IFSOCK
            )
    }

    pub fn mknod(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        // A char device 0/0 would be a whiteout in the upper: refused, as by kernel overlay.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return Err(Error::NotPermitted);
        }
        let what = if mode & libc::S_IFMT == libc::S_IFREG {
            NewObject::File {
                mode,
                flags: libc::O_RDONLY,
            }
        } else {
            NewObject::Node {
                mode,
                rdev: rdev as u64,
            }
        };
        let (node, st, _) = self.create_entry(parent, name, creds, what)?;
        Ok((node, st))
    }

    pub fn mkdir(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        let (node, st, _) = self.create_entry(parent, name, creds, NewObject::Dir { mode })?;
        Ok((node, st))
    }

    pub fn symlink(
        &self,
        parent: u64,
        name: &OsStr,
        target: &OsStr,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat)> {
        let target = sys::cname(target)?;
        let (node, st, _) =
            self.create_entry(parent, name, creds, NewObject::Symlink { target: &target })?;
        Ok((node, st))
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Result<(Arc<Node>, Stat)> {
        let node = self.nodes.get(ino)?;
        if node.is_dir {
            return Err(Error::NotPermitted);
        }
        self.copy_up(&node)?;
        let (dir, name) = self.at(&node)?;
        // A link records no owner of its own: the daemon's ids stand in.
        let creds = Creds {
            uid: self.euid,
            gid: self.egid,
        };
        let (new, st, _) =
            self.create_entry(newparent, newname, creds, NewObject::Link { dir, name })?;
        Ok((new, st))
    }

    pub fn create(
        &self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        flags: i32,
        creds: Creds,
    ) -> Result<(Arc<Node>, Stat, u64)> {
        let (node, st, fd) =
            self.create_entry(parent, name, creds, NewObject::File { mode, flags })?;
        let fd = Arc::new(fd.ok_or(Error::Internal)?);
        let cgen = node.copy_gen.load(Ordering::Acquire);
        let fh = self.handles.insert(Handle::File(FileHandle {
            node: node.clone(),
            fd: parking_lot::RwLock::new((fd, cgen)),
            flags: self.handle_flags(flags),
        }));
        Ok((node, st, fh))
    }
}
