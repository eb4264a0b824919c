//! How every request is answered: the core's part runs under the panic guard, its error is
//! logged at a level chosen from the errno and sent. This is the only place an [`Error`]
//! becomes an errno, and a failure, even a bug, is a reply.

use fuser::{
    Errno, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty,
    ReplyEntry, ReplyLseek, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
};

use crate::error::Error;

/// Run a core operation, turning a panic into EIO so a bug answers one request with an error
/// instead of killing the worker thread (and, after enough of them, the mount).
pub(super) fn guard<T>(f: impl FnOnce() -> crate::error::Result<T>) -> crate::error::Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|_| {
        tracing::error!("a request handler panicked; answered EIO");
        Err(Error::Internal)
    })
}

/// The one way a handler answers: `run` (the core's part) under the panic guard; its value
/// goes to `ok` with the reply, its error is logged by `log_err` and sent. A panic in `ok`
/// drops the reply unsent, which fuser answers with EIO.
pub(super) fn answer<R: ReplyError, T>(
    op: &'static str,
    ino: u64,
    reply: R,
    run: impl FnOnce() -> crate::error::Result<T>,
    ok: impl FnOnce(R, T),
) {
    let sent = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match guard(run) {
        Ok(v) => ok(reply, v),
        Err(e) => reply.error(log_err(op, ino, &e)),
    }));
    if sent.is_err() {
        tracing::error!(op, ino, "a reply panicked; answered EIO");
    }
}

/// A reply that can carry an errno: every fuser reply type, whose own trait is private.
pub(super) trait ReplyError {
    fn error(self, e: Errno);
}

macro_rules! reply_error {
    ($($t:ty),* $(,)?) => {
        $(impl ReplyError for $t {
            fn error(self, e: Errno) {
                <$t>::error(self, e)
            }
        })*
    };
}

reply_error!(
    ReplyAttr,
    ReplyCreate,
    ReplyData,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyEmpty,
    ReplyEntry,
    ReplyLseek,
    ReplyOpen,
    ReplyStatfs,
    ReplyWrite,
    ReplyXattr,
);

fn errno_of(e: &Error) -> Errno {
    Errno::from_i32(e.errno())
}

/// Log at a level that matches how surprising the errno is, then reply with it.
fn log_err(op: &str, ino: u64, e: &Error) -> Errno {
    match e.errno() {
        libc::ENOENT | libc::ENODATA | libc::EEXIST | libc::ENOTEMPTY | libc::ERANGE => {
            tracing::trace!(op, ino, error = %e)
        }
        libc::EIO | libc::ESTALE => tracing::warn!(op, ino, error = %e),
        _ => tracing::debug!(op, ino, error = %e),
    }
    errno_of(e)
}
