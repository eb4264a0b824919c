//! How the session thread waits for requests (fuser calls `receive`, the one patch of
//! vendor/fuser).
//!
//! A request that finds the daemon asleep costs a wakeup across CPUs: an inter-processor
//! interrupt and, for a CPU gone idle, its way out of idle; in a VM each is an exit to the
//! host (this machine: a GETXATTR round trip takes 52 µs across CPUs, 9.5 µs on one). A serial
//! client (tar, find, dpkg) sends its next request a few microseconds after our reply, so the
//! thread polls the connection for up to `SPIN` before it sleeps, and such a request finds it
//! awake (20 µs). It polls only while requests keep coming that soon: after a wait longer than
//! `SPIN` it sleeps at once, until a request comes within `SPIN` again, so a client that sends
//! one now and then costs no polling. And only with more than one CPU to run on: on one,
//! polling would only keep the client from the CPU it needs to send the request
//! (docs/performance.md, "Unpinned, a round trip is a wakeup of an idle vCPU").

use std::cell::Cell;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::sys;

/// How long the session thread polls for the next request before it sleeps.
const SPIN: Duration = Duration::from_micros(50);

/// Poll before sleeping (`enable`). Process-wide: a daemon serves one mount.
static SPINS: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The last request came within `SPIN` of the wait for it.
    static SOON: Cell<bool> = const { Cell::new(true) };
}

/// Poll before sleeping from now on: the daemon has more than one CPU.
pub(super) fn enable() {
    SPINS.store(true, Ordering::Relaxed);
}

/// fuser's `Receiver`: read one request from `dev` into `buf`.
pub fn receive(dev: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<usize> {
    let read = |buf: &mut [u8]| {
        sys::read(dev, buf).map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
    };
    if !SPINS.load(Ordering::Relaxed) {
        return read(buf);
    }
    let start = Instant::now();
    if SOON.get() {
        // Each poll is a syscall, on whose return a task woken on this CPU may run first.
        while !sys::has_input(dev) && start.elapsed() < SPIN {
            std::hint::spin_loop();
        }
    }
    let n = read(buf)?;
    SOON.set(start.elapsed() < SPIN);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// A request already there is read at once, and the next wait polls; one that comes
    /// after the polling gave up is still read (the thread sleeps in read(2)), and the wait
    /// after that does not poll.
    #[test]
    fn requests_are_read_whether_they_come_soon_or_late() {
        enable();
        let (r, w, _) = sys::pipe(4096).unwrap();
        let mut buf = [0u8; 16];
        sys::write(w.as_fd(), b"soon").unwrap();
        assert_eq!(receive(r.as_fd(), &mut buf).unwrap(), 4);
        assert_eq!(&buf[..4], b"soon");
        assert!(SOON.get(), "a request that was waiting came soon");

        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            sys::write(w.as_fd(), b"late!").unwrap();
        });
        let start = Instant::now();
        assert_eq!(receive(r.as_fd(), &mut buf).unwrap(), 5);
        assert_eq!(&buf[..5], b"late!");
        assert!(start.elapsed() >= Duration::from_millis(25));
        assert!(!SOON.get(), "a request 30 ms later did not come soon");
        late.join().unwrap();
    }
}
