//! Reply bodies with more to them than one value: entries (the node id and cache lifetimes
//! fuser and the kernel expect) and negative lookups, directory listings after a cookie, the
//! size-or-data protocol of xattr replies, statfs's numbers. A readdirplus entry that is not
//! sent gives back its lookup.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    Errno, FileAttr, FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry,
    ReplyStatfs, ReplyXattr,
};

use super::Fs;
use super::answer::guard;
use super::convert::{attr, dtype_file_type, negative_attr};
use crate::handle::DirEntry;
use crate::inode::Node;
use crate::sys::Stat;

impl Fs {
    /// Reply to a lookup-like request. fuser takes the node id from `attr.ino`; when st_ino
    /// differs from the node id (a name of a lower hard link), the attributes are sent with
    /// no cache lifetime so the kernel's first stat asks getattr, whose reply sets st_ino.
    pub(super) fn entry(&self, reply: ReplyEntry, node: &Node, st: &Stat) {
        let (a, attr_ttl) = self.entry_attr(node, st);
        reply.entry_with_ttls(&attr_ttl, &self.ttl, &a, Generation(0));
    }

    /// Reply to a lookup: the entry found, or a negative entry the kernel may cache (names
    /// appear only through this daemon, and the kernel replaces the negative dentry when one
    /// is created through it).
    pub(super) fn lookup_reply(
        &self,
        reply: ReplyEntry,
        parent: u64,
        name: &OsStr,
        found: Option<(Arc<Node>, Stat)>,
    ) {
        match found {
            Some((node, st)) => {
                tracing::trace!(parent, ?name, node = node.ino, mode = st.st_mode, "lookup");
                self.entry(reply, &node, &st)
            }
            None => reply.entry(&self.ttl, &negative_attr(), Generation(0)),
        }
    }

    pub(super) fn entry_attr(&self, node: &Node, st: &Stat) -> (FileAttr, Duration) {
        let mut a = attr(st);
        if a.ino.0 == node.ino {
            return (a, self.ttl);
        }
        a.ino = INodeNo(node.ino);
        (a, Duration::ZERO)
    }

    /// The readdirplus listing after cookie `offset`: each entry looked up (a reference the
    /// kernel keeps), or given back when the reply is full.
    pub(super) fn fill_plus(
        &self,
        mut reply: ReplyDirectoryPlus,
        ino: u64,
        entries: &[DirEntry],
        offset: u64,
    ) {
        for e in after(entries, offset) {
            let name = OsStr::from_bytes(e.name.to_bytes());
            let off = e.off;
            let full = if off <= 2 {
                // "." and "..": the kernel takes no reference on them and reads nothing but
                // the entry's inode number and type (`fuse_direntplus_link` stops at their
                // names), so neither do we: no lookup count, no stat of the two directories.
                let dot = FileAttr {
                    ino: INodeNo(e.ino),
                    kind: FileType::Directory,
                    ..negative_attr()
                };
                reply.add(INodeNo(e.ino), off, name, &self.ttl, &dot, Generation(0))
            } else {
                match guard(|| self.core.lookup_listed(ino, name, e.layer)) {
                    Ok((node, st)) => {
                        let (a, ttl) = self.entry_attr(&node, &st);
                        let full = reply.add(INodeNo(node.ino), off, name, &ttl, &a, Generation(0));
                        if full {
                            // Not sent: give back the reference the lookup took.
                            self.core.forget(node.ino, 1);
                        }
                        full
                    }
                    // Gone since opendir: skip it.
                    Err(_) => continue,
                }
            };
            if full {
                break;
            }
        }
        reply.ok();
    }
}

/// The plain readdir listing after cookie `offset`, as much as fits in the reply.
pub(super) fn fill(mut reply: ReplyDirectory, entries: &[DirEntry], offset: u64) {
    for e in after(entries, offset) {
        let name = OsStr::from_bytes(e.name.to_bytes());
        if reply.add(INodeNo(e.ino), e.off, dtype_file_type(e.dtype), name) {
            break;
        }
    }
    reply.ok();
}

/// The entries of a cookie-ordered listing that come after cookie `offset`.
fn after(entries: &[DirEntry], offset: u64) -> &[DirEntry] {
    &entries[entries.partition_point(|e| e.off <= offset)..]
}

pub(super) fn statfs_reply(reply: ReplyStatfs, s: &libc::statvfs) {
    reply.statfs(
        s.f_blocks,
        s.f_bfree,
        s.f_bavail,
        s.f_files,
        s.f_ffree,
        s.f_bsize as u32,
        s.f_namemax as u32,
        s.f_frsize as u32,
    )
}

pub(super) fn xattr_reply(reply: ReplyXattr, value: &[u8], size: u32) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}
