//! Passthrough backing files: which I/O mode each open node is in (cached, or passthrough to
//! one backing file) and which backing file each open handle pins. The `Fs.io` lock guards
//! only these map updates: finding, opening, registering and unregistering a backing file
//! happen outside it.

use std::collections::HashMap;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use fuser::{BackingId, FileHandle, FopenFlags, Generation, ReplyCreate, ReplyOpen};

use super::Fs;
use crate::inode::Node;
use crate::layer::LayerIdx;
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
    /// Handles share this backing file (held strongly by each handle); `lower`: it is the
    /// file in that lower layer, for readers only (`union::Backing::lower`).
    Passthrough(Weak<BackingId>, Option<LowerFile>),
}

/// A lower file that backs passthrough for readers, and its layer.
type LowerFile = (LayerIdx, Arc<OwnedFd>);

/// What an open finds in the node's I/O mode.
enum Joined {
    /// Settled: the handle joined it (with this backing file, or cached).
    Mode(Option<Arc<BackingId>>),
    /// Not settled yet: this open chooses.
    Unset,
    /// Readers have the node passed through to its lower file and this open needs the upper
    /// copy: the node must be parted from its name first (`Union::part_readers`).
    Part(LayerIdx, Arc<OwnedFd>),
}

/// How an open is answered: its flags and backing file, or ESTALE after the node was parted
/// from its name (the kernel then looks the name up again and opens the new node).
pub(super) type OpenMode = Option<(FopenFlags, Option<Arc<BackingId>>)>;

impl Fs {
    /// How to answer an open of `ino` as handle `fh`. Files in the upper go through
    /// passthrough (one read-write backing file per node). A file only in a lower is passed
    /// through to the lower file when the lowers are sealed (read-only, noatime; as root),
    /// else cached. The kernel can't move a live backing file, so once such a file is copied
    /// up (or a writer comes to copy it up) while readers hold the lower one, the node is
    /// parted from its name: those readers keep the old data, as after a rename over the file,
    /// and the opener gets ESTALE and, through the kernel's new lookup, a new node on the copy
    /// (docs/semantics.md, D17). A node already open in one mode stays in it until its last
    /// handle is released.
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
    ) -> OpenMode {
        // Without passthrough every handle is cached I/O: nothing to settle per node (and a
        // created file's handle may never see a RELEASE, see `adopt_own`).
        if !self.passthrough.load(Ordering::Relaxed) {
            return Some((self.cached_fopen(fh, flags, new_mode), None));
        }
        let needs_copy = crate::union::open_writes(flags) || self.core.in_upper(ino);
        let mut joined = self.io.lock().join(ino, fh, needs_copy);
        if let Joined::Unset = joined {
            let fresh = self.new_backing(ino, fh, register);
            let mut io = self.io.lock();
            joined = io.join(ino, fh, needs_copy);
            // Else another open settled the node first; `fresh` (if any) is unregistered
            // when dropped, after the lock is released.
            if let Joined::Unset = joined {
                let (mode, backing) = match fresh {
                    Some((b, lower)) => (IoMode::Passthrough(Arc::downgrade(&b), lower), Some(b)),
                    None => (IoMode::Cached(1), None),
                };
                io.nodes.insert(ino, mode);
                io.handles.insert(fh, (ino, backing.clone()));
                joined = Joined::Mode(backing);
            }
        }
        let backing = match joined {
            Joined::Mode(b) => b,
            Joined::Part(layer, fd) => {
                self.core.release(fh);
                if let Err(e) = self.core.part_readers(ino, layer, fd) {
                    tracing::debug!(ino, error = %e, "parting a node from its name");
                }
                return None;
            }
            // Settled just above.
            Joined::Unset => None,
        };
        let fopen = match backing {
            Some(_) => FopenFlags::empty(),
            None => self.cached_fopen(fh, flags, new_mode),
        };
        Some((fopen, backing))
    }

    /// The open flags of a handle without passthrough.
    fn cached_fopen(&self, fh: u64, flags: i32, new_mode: Option<u32>) -> FopenFlags {
        if flags & libc::O_ACCMODE == libc::O_WRONLY
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
        }
    }

    /// Answer an open of `ino` as handle `fh`, in the node's I/O mode (see `open_mode`).
    pub(super) fn opened(&self, reply: ReplyOpen, ino: u64, fh: u64, flags: i32) {
        match self.open_mode(ino, fh, (flags, None), |fd| reply.open_backing(fd)) {
            Some((f, Some(b))) => reply.opened_passthrough(FileHandle(fh), f, &b),
            Some((f, None)) => reply.opened(FileHandle(fh), f),
            None => reply.error(fuser::Errno::from_i32(libc::ESTALE)),
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
            Some((f, Some(b))) => {
                reply.created_passthrough(&ttl, &a, Generation(0), FileHandle(fh), f, &b)
            }
            Some((f, None)) => reply.created(&ttl, &a, Generation(0), FileHandle(fh), f),
            // A new file has no lower readers; should its id still lead to a parted node,
            // the kernel looks the name up again.
            None => reply.error(fuser::Errno::from_i32(libc::ESTALE)),
        }
    }

    fn new_backing(
        &self,
        ino: u64,
        fh: u64,
        register: impl FnOnce(BorrowedFd<'_>) -> std::io::Result<BackingId>,
    ) -> Option<(Arc<BackingId>, Option<LowerFile>)> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let backing = match self.core.backing_file(ino, fh) {
            Ok(Some(b)) => b,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(ino, error = %e, "no backing file; cached I/O");
                return None;
            }
        };
        match register(backing.fd.as_fd()) {
            Ok(b) => Some((Arc::new(b), backing.lower.map(|l| (l, backing.fd)))),
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
                Some(IoMode::Passthrough(w, _)) => {
                    w.strong_count() <= usize::from(backing.is_some())
                }
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
    /// Open `fh` in the mode `ino` already has, if it has one (see `Joined`). `needs_copy`:
    /// the open writes, or the file is in the upper now, so a lower backing file won't do.
    fn join(&mut self, ino: u64, fh: u64, needs_copy: bool) -> Joined {
        let backing = match self.nodes.get_mut(&ino) {
            Some(IoMode::Cached(n)) if *n > 0 => {
                *n += 1;
                None
            }
            Some(IoMode::Passthrough(_, Some((layer, fd)))) if needs_copy => {
                return Joined::Part(*layer, fd.clone());
            }
            Some(IoMode::Passthrough(w, _)) => match w.upgrade() {
                Some(b) => Some(b),
                None => return Joined::Unset,
            },
            _ => return Joined::Unset,
        };
        self.handles.insert(fh, (ino, backing.clone()));
        Joined::Mode(backing)
    }
}
