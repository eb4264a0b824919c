//! READ replies spliced from the file into `/dev/fuse`: the header is written into a pipe, the
//! data spliced from the file behind it (references to its page cache, no copy), and the pipe
//! spliced into the connection, where the kernel copies the data into the request's pages. One
//! copy of the data instead of two (a `pread` into our buffer, then `writev` from it), and no
//! pinning of our buffer's pages (measured in docs/performance.md, "Sequential reads").
//!
//! fuser 0.18 replies only from a buffer, so the reply is written here and fuser's `ReplyData`
//! is then forgotten: it holds the request id and one reference to the channel, and dropping it
//! would answer the request a second time, with EIO.

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use fuser::ReplyData;

use crate::error::{Error, Result};
use crate::sys;

/// Below this a READ is copied: splicing costs four syscalls (fstat, header, file into the
/// pipe, pipe into the connection) where copying costs two, which the copy it saves pays for
/// only when it is large.
const SPLICE_MIN: usize = 32 * 1024;
/// The reply header: length, error, request id.
const HEADER: usize = 16;
const NONBLOCK: u32 = libc::SPLICE_F_NONBLOCK;

struct Pipe {
    r: OwnedFd,
    w: OwnedFd,
    /// How many buffers it holds: each holds at most one page, the header one of its own.
    slots: usize,
}

#[derive(Default)]
struct Pipes {
    /// Empty between two replies (one that may not be is dropped), grown to the largest reply
    /// it has carried.
    pipe: Option<Pipe>,
    /// The fewest buffers a pipe was refused (above `/proc/sys/fs/pipe-max-size` without
    /// CAP_SYS_RESOURCE: a 1 MiB direct READ of a rootless mount); 0: none yet.
    refused: usize,
}

thread_local! {
    /// Each answering thread's pipe.
    static PIPES: RefCell<Pipes> = RefCell::default();
}

/// Answer READ `unique` of up to `len` bytes at `off` of `file` by splicing it to `dev`.
/// `Ok(false)`: not answered, nothing reached the kernel (too small, at the end of the file, or
/// the pipe could not hold it): answer by copying.
pub(super) fn reply_read(
    dev: BorrowedFd<'_>,
    unique: u64,
    file: BorrowedFd<'_>,
    off: u64,
    len: usize,
) -> Result<bool> {
    if len < SPLICE_MIN {
        return Ok(false);
    }
    // The header goes first and carries the length, so the data must be known to be there: a
    // read that reaches the end of the file, or races a truncate, is copied instead.
    let st = sys::fstat(file)?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || size < off + len as u64 {
        return Ok(false);
    }
    let total = HEADER + len;
    let page = sys::page_size();
    let end = off as usize + len;
    let slots = 1 + end.div_ceil(page) - off as usize / page;
    PIPES.with_borrow_mut(|pipes| {
        let pipe = match pipes.pipe.take() {
            Some(p) if p.slots >= slots => p,
            // Too small for this READ: it stays for the next one unless a bigger one replaces it.
            small => {
                if pipes.refused != 0 && slots >= pipes.refused {
                    pipes.pipe = small;
                    return Ok(false);
                }
                match sys::pipe(slots * page) {
                    Ok((r, w, cap)) => Pipe {
                        r,
                        w,
                        slots: cap / page,
                    },
                    Err(_) => {
                        pipes.refused = slots;
                        pipes.pipe = small;
                        return Ok(false);
                    }
                }
            }
        };
        // A failure before the last splice leaves part of a reply in the pipe: the pipe is
        // dropped with it, and the READ is answered by copying.
        if !fill(&pipe, unique, file, off, len).unwrap_or(false) {
            return Ok(false);
        }
        match sys::splice(pipe.r.as_fd(), None, dev, total, 0) {
            Ok(n) if n == total => pipes.pipe = Some(pipe),
            // The request is gone (interrupted): there is nobody left to answer.
            Err(e) if e.is(libc::ENOENT) => {}
            Ok(_) => return Err(Error::Sys(libc::EIO)),
            Err(e) => return Err(e),
        }
        Ok(true)
    })
}

/// Put the reply to `unique`, its header and `len` bytes of `file` at `off`, into `pipe`.
fn fill(pipe: &Pipe, unique: u64, file: BorrowedFd<'_>, off: u64, len: usize) -> Result<bool> {
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&((HEADER + len) as u32).to_ne_bytes());
    header[8..].copy_from_slice(&unique.to_ne_bytes());
    if sys::write(pipe.w.as_fd(), &header)? != HEADER {
        return Ok(false);
    }
    let mut at = off as i64;
    let mut got = 0;
    while got < len {
        // Never waits for room: a pipe that turns out too small fails this with EAGAIN, and
        // the READ is copied.
        match sys::splice(file, Some(&mut at), pipe.w.as_fd(), len - got, NONBLOCK)? {
            0 => return Ok(false),
            n => got += n,
        }
    }
    Ok(true)
}

/// The request was answered by `reply_read`: forget fuser's reply object, which would answer
/// it again (see the module's comment). It leaks one reference count of the channel.
pub(super) fn answered(reply: ReplyData) {
    std::mem::forget(reply);
}
