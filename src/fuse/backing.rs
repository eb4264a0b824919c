//! Passthrough backing files: which I/O mode each open node is in (cached, or passthrough to
//! one backing file) and which backing file each open handle pins. The `Fs.io` lock guards
//! only these map updates: finding, opening, registering and unregistering a backing file
//! happen outside it.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use fuser::{BackingId, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

use super::Fs;
use crate::inode::Node;
use crate::sys::Stat;

#[derive(Default)]
pub(super) struct IoState {
    nodes: HashMap<u64, IoMode>,
    /// Open handle -> its node and the backing file it pins (None when cached).
    handles: HashMap<u64, (u64, Option<Arc<BackingId>>)>,
}

enum IoMode {
    /// This many handles are open in cached mode.
    Cached(usize),
    /// Handles share this backing file (held strongly by each handle).
    Passthrough(Weak<BackingId>),
}

impl Fs {
    /// How to answer an open of `ino` as handle `fh`. Files in the upper go through
    /// passthrough (one read-write backing file per node). Lower files are cached instead: a
    /// copy-up would need to switch a live backing file to the copy, which the kernel can't,
    /// and kernel overlay's rule that read-only fds see later writes would break. A node
    /// already open in one mode stays in it until its last handle is released.
    ///
    /// The `io` lock is held only to read and update the maps: finding, opening and
    /// registering a backing file happen outside it, and an open that loses the race to
    /// settle the node's mode follows the winner and drops its own backing file.
    pub(super) fn open_mode(
        &self,
        ino: u64,
        fh: u64,
        (flags, new_mode): (i32, Option<u32>),
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> (FopenFlags, Option<Arc<BackingId>>) {
        let joined = self.io.lock().join(ino, fh);
        let backing = match joined {
            Some(b) => b,
            None => {
                let fresh = self.new_backing(ino, fh, register);
                let mut io = self.io.lock();
                match io.join(ino, fh) {
                    // Another open settled the node first; `fresh` (if any) is unregistered
                    // when dropped, after the lock is released.
                    Some(b) => b,
                    None => {
                        let mode = match &fresh {
                            Some(b) => IoMode::Passthrough(Arc::downgrade(b)),
                            None => IoMode::Cached(1),
                        };
                        io.nodes.insert(ino, mode);
                        io.handles.insert(fh, (ino, fresh.clone()));
                        fresh
                    }
                }
            }
        };
        let fopen = if backing.is_some() {
            FopenFlags::empty()
        } else if flags & libc::O_ACCMODE == libc::O_WRONLY
            && self.writeback.load(Ordering::Relaxed)
            && !match new_mode {
                // A file just made has no capability yet; only its mode can make it special.
                Some(mode) => crate::union::mode_has_privileges(mode),
                None => self.core.handle_has_privileges(fh).unwrap_or(true),
            }
        {
            // A write-only stream (tar, cp, a compiler's output) under the writeback cache:
            // its data would be written back at close anyway, one synchronous round trip
            // later than a direct WRITE; direct I/O sends each write(2) as it comes. Not for a
            // file with setuid/setgid bits or capabilities: the kernel flags a writer without
            // CAP_FSETID only on cached writes, and the daemon must drop them then.
            FopenFlags::FOPEN_DIRECT_IO
        } else {
            FopenFlags::FOPEN_KEEP_CACHE
        };
        (fopen, backing)
    }

    /// Answer an open of `ino` as handle `fh`, in the node's I/O mode (see `open_mode`).
    pub(super) fn opened(&self, reply: ReplyOpen, ino: u64, fh: u64, flags: i32) {
        match self.open_mode(ino, fh, (flags, None), |fd| reply.open_backing(fd)) {
            (f, Some(b)) => reply.opened_passthrough(FileHandle(fh), f, &b),
            (f, None) => reply.opened(FileHandle(fh), f),
        }
    }

    /// Answer a create: the entry (as for lookups, see `entry`: when st_ino differs from the
    /// node id nothing is cached, so the next stat asks getattr) and the open handle `fh`.
    pub(super) fn created(
        &self,
        reply: ReplyCreate,
        (node, st, fh): (&Node, &Stat, u64),
        flags: i32,
    ) {
        let (a, ttl) = self.entry_attr(node, st);
        match self.open_mode(node.ino, fh, (flags, Some(st.st_mode)), |fd| {
            reply.open_backing(fd)
        }) {
            (f, Some(b)) => {
                reply.created_passthrough(&ttl, &a, Generation(0), FileHandle(fh), f, &b)
            }
            (f, None) => reply.created(&ttl, &a, Generation(0), FileHandle(fh), f),
        }
    }

    fn new_backing(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let fd = match self.core.backing_file(ino, fh) {
            Ok(Some(fd)) => fd,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(ino, error = %e, "no backing file; cached I/O");
                return None;
            }
        };
        match register(fd.as_fd()) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                // Most likely no CAP_SYS_ADMIN for the backing ioctl: say so once, carry on.
                if self.passthrough.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "passthrough unavailable; using the read/write path");
                }
                None
            }
        }
    }

    pub(super) fn release_io(&self, fh: u64) {
        let backing = {
            let mut io = self.io.lock();
            let Some((ino, backing)) = io.handles.remove(&fh) else {
                return;
            };
            let last = match io.nodes.get_mut(&ino) {
                Some(IoMode::Cached(n)) if backing.is_none() => {
                    *n = n.saturating_sub(1);
                    *n == 0
                }
                // Ours is the only reference left: no open can take another once the entry
                // is gone (they upgrade under this lock).
                Some(IoMode::Passthrough(w)) => w.strong_count() <= usize::from(backing.is_some()),
                _ => false,
            };
            if last {
                io.nodes.remove(&ino);
            }
            backing
        };
        // The last reference unregisters the backing file (an ioctl): outside the lock.
        drop(backing);
    }
}

impl IoState {
    /// Open `fh` in the mode `ino` already has, if it has one: `Some(backing)`, `Some(None)`
    /// meaning cached. `None` when the node's mode is still to be chosen.
    fn join(&mut self, ino: u64, fh: u64) -> Option<Option<Arc<BackingId>>> {
        let backing = match self.nodes.get_mut(&ino) {
            Some(IoMode::Cached(n)) if *n > 0 => {
                *n += 1;
                None
            }
            Some(IoMode::Passthrough(w)) => Some(w.upgrade()?),
            _ => return None,
        };
        self.handles.insert(fh, (ino, backing.clone()));
        Some(backing)
    }
}
