//! The fuser adapter: `UnionFs` is what fuser serves, `Fs` the state its handlers share. The
//! handlers (`handlers`) translate arguments and call the core through `answer::answer`; this
//! is the only user of fuser's reply types. Which requests may block, and so go to the worker
//! pool, is decided per handler and dispatched here.

mod answer;
mod backing;
mod convert;
mod handlers;
mod init;
mod receive;
mod reply;
mod splice;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::pool::Pool;
use crate::union::Union;
use answer::{ReplyError, answer};
use backing::IoState;

pub use convert::attr;
pub use receive::receive;

/// The filesystem fuser serves: the shared state, and the workers that take the requests
/// which may block (see `pool`). Handlers reach the state through `Deref`.
pub struct UnionFs {
    fs: Arc<Fs>,
    pool: Pool,
}

impl std::ops::Deref for UnionFs {
    type Target = Fs;
    fn deref(&self) -> &Fs {
        &self.fs
    }
}

pub struct Fs {
    pub core: Union,
    /// How long the kernel may cache entries and attributes. Only this daemon changes the
    /// tree while mounted, and it tells the kernel through its replies, so this can be long.
    pub ttl: Duration,
    /// Passthrough was asked for; `passthrough` says whether the kernel agreed.
    pub want_passthrough: bool,
    passthrough: AtomicBool,
    /// The writeback cache was asked for, for when passthrough is not granted; `writeback`
    /// says whether the kernel agreed.
    want_writeback: bool,
    writeback: AtomicBool,
    /// The kernel opens directories without OPENDIR (`init`): READDIRs come without a handle.
    no_opendir: AtomicBool,
    /// `-o noopen`: the kernel opens regular files without OPEN when passthrough is off
    /// (`init`); `no_open` says it was decided so. Their requests then carry handle 0, served
    /// by each node's own handle (`Union::node_handle`).
    want_no_open: bool,
    no_open: AtomicBool,
    /// Fault injection (`-o debug_panic_on=NAME`): a lookup of NAME panics.
    #[cfg_attr(not(feature = "fault-injection"), allow(dead_code))]
    panic_on: Option<std::ffi::OsString>,
    /// A clone of the session's /dev/fuse fd: to see whether requests are waiting (see
    /// `busy`) and to splice READ replies into (`splice`).
    dev: Arc<OnceLock<OwnedFd>>,
    /// More than one CPU to run on (`available_parallelism`: the affinity, or the cgroup's CPU
    /// quota). On one, a worker could not answer beside the session thread, so handing it a
    /// quick request would only add two context switches (see `busy`), and the session thread
    /// does not poll for requests before it sleeps (`receive`).
    spread: bool,
    /// How the kernel does I/O on each open node. It allows one mode per inode at a time
    /// (cached, or passthrough to one backing file), so every open of a node follows the first.
    io: Mutex<IoState>,
}

impl UnionFs {
    /// `workers`: threads for the requests that may block (at least one). `data`: whether
    /// passthrough, the writeback cache and kernel opens are wanted.
    pub fn new(
        core: Union,
        ttl: Duration,
        (want_passthrough, want_writeback, want_no_open): (bool, bool, bool),
        panic_on: Option<std::ffi::OsString>,
        workers: usize,
    ) -> std::io::Result<UnionFs> {
        Ok(UnionFs {
            fs: Arc::new(Fs {
                core,
                ttl,
                want_passthrough,
                passthrough: AtomicBool::new(false),
                want_writeback,
                writeback: AtomicBool::new(false),
                no_opendir: AtomicBool::new(false),
                want_no_open,
                no_open: AtomicBool::new(false),
                panic_on,
                dev: Arc::default(),
                spread: std::thread::available_parallelism().is_ok_and(|n| n.get() > 1),
                io: Mutex::new(IoState::default()),
            }),
            pool: Pool::new(workers)?,
        })
    }

    /// Where a clone of the session's /dev/fuse fd goes once the session exists (see
    /// `Fs::dev`).
    pub fn dev_slot(&self) -> Arc<OnceLock<OwnedFd>> {
        self.fs.dev.clone()
    }

    /// Run `job` with the shared state on a worker thread if it `may_block`, else here and
    /// now.
    fn run(&self, job: impl FnOnce(&Fs) + Send + 'static, may_block: bool) {
        if may_block {
            let fs = self.fs.clone();
            self.pool.run(move || job(&fs));
        } else {
            job(self);
        }
    }

    /// `answer`, where `run` (given the shared state) may block: on a worker thread if
    /// `may_block`, else here and now. `run` and `ok` own what they need, so the handler's
    /// borrowed arguments are copied first.
    fn serve<R: ReplyError + Send + 'static, T>(
        &self,
        op: &'static str,
        ino: u64,
        reply: R,
        may_block: bool,
        run: impl FnOnce(&Fs) -> crate::error::Result<T> + Send + 'static,
        ok: impl FnOnce(&Fs, R, T) + Send + 'static,
    ) {
        let job = move |fs: &Fs| answer(op, ino, reply, || run(fs), |reply, v| ok(fs, reply, v));
        self.run(job, may_block);
    }

    /// `serve` for a request that is over in microseconds: answered here, unless more requests
    /// are already waiting (see `Fs::busy`).
    fn quick<R: ReplyError + Send + 'static, T>(
        &self,
        op: &'static str,
        ino: u64,
        reply: R,
        run: impl FnOnce(&Fs) -> crate::error::Result<T> + Send + 'static,
        ok: impl FnOnce(&Fs, R, T) + Send + 'static,
    ) {
        let busy = self.busy();
        self.serve(op, ino, reply, busy, run, ok);
    }
}

impl Fs {
    fn no_opendir(&self) -> bool {
        self.no_opendir.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn no_open(&self) -> bool {
        self.no_open.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The handle a file request works on, held until the request is answered: its own, or
    /// for handle 0 (the kernel opened the file without asking, see `no_open`) the node's,
    /// writable if the request writes.
    fn fh(&self, ino: u64, fh: u64, write: bool) -> crate::error::Result<crate::union::NodeFh<'_>> {
        match fh {
            0 if self.no_open() => self.core.node_handle(ino, write),
            fh => Ok(crate::union::NodeFh::kept(&self.core, fh)),
        }
    }

    /// The listing a READDIR of `ino` at `offset` reads from: the handle's, or without
    /// handles (`no_opendir`) the one the core keeps for the directory.
    fn listing(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
    ) -> crate::error::Result<crate::listings::Listing> {
        if self.no_opendir() {
            self.core.listing(ino, offset)
        } else {
            self.core.dir_entries(fh, offset)
        }
    }

    /// Are more requests waiting than the one in hand? One session thread answers the quick
    /// requests itself, so a serial client's requests stay on one warm thread and CPU; while
    /// others queue up behind it (parallel clients), the quick ones go to the workers too, if
    /// there is a CPU for them.
    fn busy(&self) -> bool {
        self.spread && self.dev().is_some_and(|fd| crate::sys::has_input(fd))
    }

    fn dev(&self) -> Option<BorrowedFd<'_>> {
        self.dev.get().map(|fd| fd.as_fd())
    }
}
