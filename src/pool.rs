//! Worker threads for the requests that may block for long: data I/O without passthrough,
//! fsync, and anything that copies a regular file up. The FUSE session itself reads and answers
//! with one thread, so the requests that are over in microseconds (lookup, getattr, getxattr,
//! create in the upper...) are answered by the thread the kernel woke last, on a warm cache,
//! instead of going round-robin across threads and CPUs (measured in docs/performance.md);
//! they come here too only while other requests queue behind them (`fuse::Fs::busy`).

use std::sync::mpsc::{self, Receiver, SendError, Sender};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send + 'static>;

pub struct Pool {
    tx: Sender<Job>,
}

impl Pool {
    /// Start `n` workers (at least one). They live as long as the process: a job left running
    /// at unmount answers a connection that is gone, which fuser ignores.
    pub fn new(n: usize) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let rx = rx.clone();
            // Workers start before the daemon blocks its signals: they must never take one.
            crate::sys::spawn_signal_free(&format!("unionfuse-io-{i}"), move || work(&rx))?;
        }
        Ok(Pool { tx })
    }

    /// Run `job` on a worker; on the caller's thread if no worker is left to take it.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(SendError(job)) = self.tx.send(Box::new(job)) {
            job();
        }
    }
}

fn work(rx: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match rx.lock() {
            Ok(rx) => rx.recv(),
            Err(_) => return,
        };
        match job {
            // Jobs catch their own panics (they answer EIO, see `fuse::answer`).
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_run_on_workers_concurrently() {
        let pool = Pool::new(2).unwrap();
        let (tx, rx) = mpsc::channel();
        let barrier = Arc::new(std::sync::Barrier::new(2));
        for _ in 0..2 {
            let (tx, barrier) = (tx.clone(), barrier.clone());
            // Both jobs must be running at once to pass the barrier.
            pool.run(move || {
                barrier.wait();
                tx.send(std::thread::current().name().map(str::to_owned))
                    .unwrap();
            });
        }
        let mut names: Vec<_> = (0..2).map(|_| rx.recv().unwrap().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["unionfuse-io-0", "unionfuse-io-1"]);
    }
}
