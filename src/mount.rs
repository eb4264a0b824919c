//! Mounting: open the layers, build the core, hand it to a multi-threaded fuser session, and
//! unmount cleanly on SIGTERM/SIGINT/SIGHUP or when someone runs `umount`.

use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Weak;
use std::sync::atomic::{AtomicU64, Ordering};

use fuser::{Config, MountOption, Session, SessionACL};

use crate::config::MountConfig;
use crate::error::{Error, Result};
use crate::fuse::UnionFs;
use crate::idmap::IdMapping;
use crate::layer::LayerStack;
use crate::sys;
use crate::sys::process::{self, Forked};
use crate::union::{Options, Union};

/// Mount and return the live session (the mount is up once this returns).
pub fn mount(cfg: &MountConfig) -> Result<Session<UnionFs>> {
    // Mode bits come from the kernel (already masked by the caller's umask); ours must not
    // mask them again.
    sys::set_umask(0);
    let nofile = sys::raise_nofile();
    let upper = if cfg.read_only {
        None
    } else {
        cfg.upper.as_deref()
    };
    let mut stack = LayerStack::open(&cfg.lowers, upper, cfg.workdir.as_deref())?;
    if let (Some(name), Some(u)) = (&cfg.override_stat, stack.upper_idx()) {
        stack.layers[u].override_stat = std::ffi::CString::new(name.as_str()).ok();
    }
    // Half the fd budget for cached directory fds; the rest for open files and the session.
    let fd_cache = (nofile.saturating_sub(256) / 2).min(65536) as usize;
    let core = Union::new(
        stack,
        Options {
            fsync: cfg.fsync,
            userxattr: cfg.userxattr,
            ids: IdMapping {
                uid_map: cfg.uid_map.clone(),
                gid_map: cfg.gid_map.clone(),
                squash_uid: cfg.squash_uid,
                squash_gid: cfg.squash_gid,
            },
            static_nlink: cfg.static_nlink,
            aufs_whiteouts: cfg.aufs_whiteouts,
        },
        fd_cache,
    );
    let forgotten = core.nodes.forgotten();
    let panic_on = cfg.panic_on.as_ref().map(std::ffi::OsString::from);
    let fs = UnionFs::new(core, cfg.ttl, cfg.passthrough, panic_on, cfg.threads)
        .map_err(|e| Error::config(&cfg.mountpoint, format!("no worker threads: {e}")))?;

    let mut opts = vec![
        MountOption::FSName(cfg.fsname.clone()),
        MountOption::Subtype("unionfuse".into()),
    ];
    if cfg.default_permissions {
        opts.push(MountOption::DefaultPermissions);
    }
    if cfg.read_only {
        opts.push(MountOption::RO);
    }
    // By default (config.rs) a root mount honours device nodes and setuid binaries, as a
    // container root needs on kernel overlay; `-o nodev,nosuid,noexec` turn them off.
    opts.push(if cfg.dev {
        MountOption::Dev
    } else {
        MountOption::NoDev
    });
    opts.push(if cfg.suid {
        MountOption::Suid
    } else {
        MountOption::NoSuid
    });
    if !cfg.exec {
        opts.push(MountOption::NoExec);
    }
    let mut config = Config::default();
    config.mount_options = opts;
    config.acl = if cfg.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    // One thread reads and answers; requests that may block go to `cfg.threads` workers
    // (see `pool`).
    config.n_threads = Some(1);
    config.clone_fd = true;
    let session = Session::new(fs, &cfg.mountpoint, &config)
        .map_err(|e| Error::config(&cfg.mountpoint, format!("mount failed: {e}")))?;
    spawn_trimmer(forgotten);
    tracing::info!(
        mountpoint = %cfg.mountpoint.display(),
        lowers = cfg.lowers.len(),
        upper = ?cfg.upper,
        threads = cfg.threads,
        "mounted"
    );
    Ok(session)
}

/// Forgotten nodes after which freed memory is worth returning to the OS (a node with its
/// name and layer list is a few hundred bytes, so this is about a MiB).
const TRIM_BATCH: u64 = 4096;

/// Return the memory of forgotten nodes to the OS. glibc keeps freed small blocks in its
/// arenas, so after the kernel drops a million nodes (drop_caches) the daemon's RSS would stay
/// at its peak. At most once a second, and only after a batch of forgets, trim on this
/// thread, which holds no lock of the table. Ends once the node table is gone.
fn spawn_trimmer(forgotten: Weak<AtomicU64>) {
    // Spawned before `serve` blocks SIGTERM & co., so it must block them itself.
    let spawned = sys::spawn_signal_free("trim", move || {
        let mut trimmed = 0;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let Some(count) = forgotten.upgrade() else {
                return;
            };
            let now = count.load(Ordering::Relaxed);
            drop(count);
            if now - trimmed >= TRIM_BATCH {
                sys::malloc_trim();
                trimmed = now;
            }
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the memory trim thread; RSS may stay at its peak");
    }
}

/// Serve until unmounted. SIGTERM, SIGINT and SIGHUP unmount; `umount` ends the session too.
pub fn serve(mut session: Session<UnionFs>) -> Result<()> {
    let mut unmounter = session.unmount_callable();
    let signals = process::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_signal(&signals);
            tracing::info!(sig, "signal: unmounting");
            if let Err(e) = unmounter.unmount() {
                tracing::warn!(error = %e, "unmount failed");
            }
        })
        .map_err(Error::from)?;
    session.run().map_err(Error::from)
}

/// Where `daemonize` returns.
pub enum Daemon {
    /// In the daemon: report how mounting went on this pipe (`report`).
    Child(std::fs::File),
    /// In the parent, once the daemon reported: mounted, or the daemon's error message.
    Parent(std::result::Result<(), String>),
}

/// Detach into the background: the parent waits until the child reports that the mount is
/// live (or why it failed), so `unionfuse mount` returns only once the mount can be used.
pub fn daemonize() -> Result<Daemon> {
    let (rd, wr) = process::pipe()?;
    // Single-threaded at this point (called before any thread is spawned).
    match process::fork()? {
        Forked::Child => {
            drop(rd);
            process::setsid();
            Ok(Daemon::Child(std::fs::File::from(wr)))
        }
        Forked::Parent(_) => {
            drop(wr);
            let mut msg = String::new();
            let _ = std::io::Read::read_to_string(&mut std::fs::File::from(rd), &mut msg);
            Ok(Daemon::Parent(match msg.as_str() {
                "ok" => Ok(()),
                "" => Err("daemon exited before mounting".into()),
                _ => Err(msg),
            }))
        }
    }
}

/// In the daemon: tell the waiting parent how mounting went; once mounted, drop stdio.
pub fn report(mut pipe: std::fs::File, result: std::result::Result<(), &Error>) {
    let msg = match result {
        Ok(()) => "ok".to_string(),
        Err(e) => e.to_string(),
    };
    let _ = pipe.write_all(msg.as_bytes());
    drop(pipe);
    if result.is_ok() {
        redirect_stdio();
    }
}

fn redirect_stdio() {
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        process::redirect_stdio(null.as_fd());
    }
}
