//! Mounting: open the layers, build the core, hand it to a multi-threaded fuser session, and
//! unmount cleanly on SIGTERM/SIGINT/SIGHUP or when someone runs `umount`. `unionfuse mount`
//! mounts /dev/fuse itself as type `fuse.unionfuse` (fuser's own mount(2) says plain `fuse`);
//! the runtime's private mounts go through fuser.

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{OnceLock, Weak};

use fuser::{Config, MountOption, Session, SessionACL};

use crate::config::MountConfig;
use crate::error::{Error, Result};
use crate::fuse::UnionFs;
use crate::idmap::IdMapping;
use crate::layer::LayerStack;
use crate::sys;
use crate::sys::process::{self, Forked};
use crate::union::{Options, Union};

/// The filesystem type shown in /proc/mounts (`fuse.` + the FUSE subtype), the one
/// `mount -t` and fstab name and that `mount.fuse3` turns into running `unionfuse`.
pub const FSTYPE: &str = "fuse.unionfuse";

/// The FUSE device.
const DEV_FUSE: &str = "/dev/fuse";

/// Mount through fuser and return the live session (the mount is up once this returns).
pub fn mount(cfg: &MountConfig) -> Result<Session<UnionFs>> {
    let (fs, config, forgotten) = prepare(cfg)?;
    let dev = fs.dev_slot();
    // Checked here so that the error names the device (and fuser logs nothing of its own).
    drop(open_dev_fuse()?);
    let session = Session::new(fs, &cfg.mountpoint, &config).map_err(|e| mount_failed(cfg, e))?;
    share_dev(&session, &dev);
    mounted(cfg, forgotten);
    Ok(session)
}

/// A session whose mount is ours (`mount_typed`), or fuser's when we may not mount(2).
pub struct Mounted {
    session: Session<UnionFs>,
    /// The mountpoint to unmount at a signal, when the mount is ours.
    ours: Option<CString>,
}

/// Mount /dev/fuse as `fuse.unionfuse` (as libfuse does with a subtype); where mount(2) is
/// not allowed (EPERM: not root), through fuser and fusermount3, which sets the same type
/// from `subtype=`.
pub fn mount_typed(cfg: &MountConfig) -> Result<Mounted> {
    let (fs, config, forgotten) = prepare(cfg)?;
    let slot = fs.dev_slot();
    let dev = open_dev_fuse()?;
    let mnt = cpath(&cfg.mountpoint)?;
    let root_mode = std::fs::metadata(&cfg.mountpoint)
        .map_err(|e| Error::config(&cfg.mountpoint, format!("mountpoint: {e}")))?
        .mode();
    let mut data = format!(
        "fd={},rootmode={:o},user_id={},group_id={}",
        dev.as_raw_fd(),
        root_mode,
        sys::geteuid(),
        sys::getegid()
    );
    if cfg.default_permissions {
        data.push_str(",default_permissions");
    }
    if cfg.allow_other {
        data.push_str(",allow_other");
    }
    let mut flags: u64 = 0;
    if cfg.read_only {
        flags |= libc::MS_RDONLY;
    }
    if !cfg.dev {
        flags |= libc::MS_NODEV;
    }
    if !cfg.suid {
        flags |= libc::MS_NOSUID;
    }
    if !cfg.exec {
        flags |= libc::MS_NOEXEC;
    }
    let source = CString::new(cfg.fsname.as_str())
        .map_err(|_| Error::config(&cfg.mountpoint, "fsname contains a NUL byte"))?;
    let fstype = CString::new(FSTYPE).expect("no NUL in FSTYPE");
    let data = CString::new(data).expect("no NUL in the mount data");
    match process::mount(&source, &mnt, &fstype, flags, &data) {
        Ok(()) => {}
        Err(Error::Sys(libc::EPERM)) => {
            drop(dev);
            let session =
                Session::new(fs, &cfg.mountpoint, &config).map_err(|e| mount_failed(cfg, e))?;
            mounted(cfg, forgotten);
            share_dev(&session, &slot);
            return Ok(Mounted {
                session,
                ours: None,
            });
        }
        Err(e) => return Err(Error::config(&cfg.mountpoint, format!("mount failed: {e}"))),
    }
    let session = match Session::from_fd(fs, dev.into(), config.acl, config) {
        Ok(s) => s,
        Err(e) => {
            let _ = process::umount(&mnt, libc::MNT_DETACH);
            return Err(Error::config(
                &cfg.mountpoint,
                format!("FUSE handshake: {e}"),
            ));
        }
    };
    mounted(cfg, forgotten);
    share_dev(&session, &slot);
    Ok(Mounted {
        session,
        ours: Some(mnt),
    })
}

/// Give the handlers a clone of the session's /dev/fuse fd (see `Fs::dev`); without one,
/// every quick request is answered by the session thread and every READ by copying.
fn share_dev(session: &Session<UnionFs>, dev: &OnceLock<OwnedFd>) {
    match session.as_fd().try_clone_to_owned() {
        Ok(fd) => {
            let _ = dev.set(fd);
        }
        Err(e) => tracing::warn!(error = %e, "no second session fd: one thread answers"),
    }
}

fn cpath(path: &std::path::Path) -> Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| Error::config(path, "path contains a NUL byte"))
}

/// Open /dev/fuse; the error names it, with the usual remedy.
fn open_dev_fuse() -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(DEV_FUSE)
        .map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => " (load the fuse module: modprobe fuse)",
                std::io::ErrorKind::PermissionDenied => " (a container needs --device /dev/fuse)",
                _ => "",
            };
            Error::config(DEV_FUSE, format!("cannot open the FUSE device: {e}{hint}"))
        })
}

fn mount_failed(cfg: &MountConfig, e: std::io::Error) -> Error {
    Error::config(&cfg.mountpoint, format!("mount failed: {e}"))
}

/// Once mounted: start the trimmer and log it.
fn mounted(cfg: &MountConfig, forgotten: Weak<AtomicU64>) {
    spawn_trimmer(forgotten);
    tracing::info!(
        mountpoint = %cfg.mountpoint.display(),
        lowers = cfg.lowers.len(),
        upper = ?cfg.upper,
        threads = cfg.threads,
        "mounted"
    );
}

/// The filesystem and fuser's session configuration for `cfg`.
fn prepare(cfg: &MountConfig) -> Result<(UnionFs, Config, Weak<AtomicU64>)> {
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
    if cfg.lower_passthrough {
        stack.seal_lowers();
    }
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
            redirect_dir: cfg.redirect_dir,
        },
        fd_cache,
    );
    let forgotten = core.nodes.forgotten();
    let panic_on = cfg.panic_on.as_ref().map(std::ffi::OsString::from);
    let fs = UnionFs::new(
        core,
        cfg.ttl,
        (cfg.passthrough, cfg.writeback, cfg.kernel_opens),
        panic_on,
        cfg.threads,
    )
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
    // It polls for a while before it sleeps (`fuse::receive`).
    config.receiver = Some(crate::fuse::receive);
    Ok((fs, config, forgotten))
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
pub fn serve(mounted: Mounted) -> Result<()> {
    let Mounted { mut session, ours } = mounted;
    let mut unmounter = session.unmount_callable();
    let signals = process::block_signals(&[libc::SIGTERM, libc::SIGINT, libc::SIGHUP]);
    let at_signal = ours.clone();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let sig = process::wait_signal(&signals);
            tracing::info!(sig, "signal: unmounting");
            let done = match &at_signal {
                Some(mnt) => process::umount(mnt, 0).map_err(|e| e.to_string()),
                None => unmounter.unmount().map_err(|e| e.to_string()),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "unmount failed");
            }
        })
        .map_err(Error::from)?;
    let served = session.run().map_err(Error::from);
    if served.is_err()
        && let Some(mnt) = &ours
    {
        // The session broke while mounted: leave no dead mount behind (EINVAL: already gone).
        let _ = process::umount(mnt, libc::MNT_DETACH);
    }
    served
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
