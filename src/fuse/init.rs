//! Negotiation with the kernel at mount: the optional capabilities asked for, and whether
//! passthrough was granted (the one answer the rest of the adapter depends on, read through
//! `Fs.passthrough`). Every capability is optional; the mount works without any of them.

use std::sync::atomic::Ordering;

use fuser::{InitFlags, KernelConfig};

use super::Fs;

/// Background requests in flight under the writeback cache (see `negotiate`).
const WRITEBACK_BACKGROUND: u16 = 256;

impl Fs {
    /// Ask the kernel for what `config` may grant; record whether passthrough is on.
    pub(super) fn negotiate(&self, config: &mut KernelConfig) {
        // Each is an optimisation the kernel may refuse; the mount works without any of them.
        for flag in [
            InitFlags::FUSE_PARALLEL_DIROPS,
            InitFlags::FUSE_CACHE_SYMLINKS,
            InitFlags::FUSE_ASYNC_DIO,
            InitFlags::FUSE_DO_READDIRPLUS,
            InitFlags::FUSE_READDIRPLUS_AUTO,
            // The kernel enforces POSIX ACLs (as on kernel overlay) and caches them, so
            // `ls -l` does not cost two getxattr round trips per file.
            InitFlags::FUSE_POSIX_ACL,
            // Dropping setuid bits and capabilities on write is ours to do (see
            // `Union::write`); otherwise the kernel asks for security.capability before
            // every single write, one round trip each.
            InitFlags::FUSE_HANDLE_KILLPRIV_V2,
        ] {
            let _ = config.add_capabilities(flag);
        }
        // The kernel may open directories without asking: the first OPENDIR is answered
        // ENOSYS, and no OPENDIR or RELEASEDIR follows (two round trips per directory walked).
        if config
            .add_capabilities(InitFlags::FUSE_NO_OPENDIR_SUPPORT)
            .is_ok()
        {
            self.no_opendir.store(true, Ordering::Relaxed);
        }
        if self.want_passthrough
            && crate::config::initial_ns_root()
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough.store(true, Ordering::Relaxed);
            self.core.set_widen_write_only();
        }
        // Without passthrough every write(2) would be a round trip to us. The writeback cache
        // lets the kernel keep writes in the page cache and send them in batches (and the
        // kernel refuses passthrough when it is on, so it is asked for only after that).
        // The kernel then reads through write-only handles too (to fill partial pages), and
        // trusts its own size and times of regular files over ours.
        let writeback = !self.passthrough.load(Ordering::Relaxed)
            && self.want_writeback
            && config
                .add_capabilities(InitFlags::FUSE_WRITEBACK_CACHE)
                .is_ok();
        if writeback {
            // Writeback sends its WRITEs as background requests, 12 in flight by default:
            // with more the daemon finds the next one queued instead of sleeping and being
            // woken between two (fio 4k random writes: ~1.3x the IOPS with 256, unpinned). An
            // ordinary user's mount is capped by the kernel's `max_user_bgreq`.
            let _ = config.set_max_background(WRITEBACK_BACKGROUND);
            let _ = config.set_congestion_threshold(WRITEBACK_BACKGROUND / 4 * 3);
            self.writeback.store(true, Ordering::Relaxed);
            self.core.set_widen_write_only();
        }
        // `-o noopen`, without passthrough (whose backing file is chosen at OPEN): the first
        // OPEN answers ENOSYS and the kernel opens regular files itself from then on, no OPEN
        // or RELEASE per open(2) (an exec'd program opens its binary and each library). Lower
        // files then copy up at their first change, not at an open for writing (D18).
        let no_open = self.want_no_open && !self.passthrough.load(Ordering::Relaxed);
        if no_open {
            self.no_open.store(true, Ordering::Relaxed);
            self.core.set_kernel_opens();
        }
        // Poll for the next request before sleeping (`receive`), with a CPU for the client.
        if self.spread {
            super::receive::enable();
        }
        tracing::info!(
            passthrough = self.passthrough.load(Ordering::Relaxed),
            writeback,
            no_open,
            poll_before_sleep = self.spread,
            "data path"
        );
    }
}
