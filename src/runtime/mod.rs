//! `unionfuse run`: a command in its own namespaces with the union as its root.
//!
//! The supervisor (this process) enters the namespaces, forks pid 1 of the container, mounts the
//! union through the library, serves it on background threads, and tears everything down when
//! pid 1 exits. See docs/runtime.md for the sequence and the reasons. Knows nothing of FUSE
//! internals: it mounts through `config::MountConfig` and `mount::mount`.

pub mod caps;
pub mod idmap;
pub mod init;
pub mod plan;
pub mod request;
pub mod rootfs;
pub mod seccomp;
pub mod security;
#[allow(unsafe_code)]
pub mod sys;
mod syscalls;

use std::path::{Path, PathBuf};

use idmap::{ContainerIds, IdMap};
use plan::RunPlan;
pub use request::{NetMode, RunRequest};
use sys::{Fork, LinuxSys, RunError, RunResult};

use crate::config::{MountConfig, MountOpts};

/// The run's private directory: the mountpoint, the generated /etc files and, without
/// `--upper`, the container layer and its work dir. Removed on drop.
struct RunDir {
    base: PathBuf,
    mnt: PathBuf,
    init: PathBuf,
    upper: PathBuf,
    work: Option<PathBuf>,
}

impl RunDir {
    /// `userns_root`: the container's root is an unprivileged host id (a rootful run with a user
    /// namespace), which must still reach the mount point and the /etc files to bind them:
    /// the base is then searchable by all (0711), and the container layer and work dir are in
    /// a private directory (0700), as files the container owns there are stored with its ids
    /// (setuid-root ones included).
    fn create(
        upper: Option<&Path>,
        overlay_workdir: Option<&Path>,
        userns_root: bool,
    ) -> RunResult<RunDir> {
        let base = sys::mkdtemp(&std::env::temp_dir().join("unionfuse-run-"))?;
        let mut d = RunDir {
            mnt: base.join("mnt"),
            init: base.join("init"),
            upper: base.join("upper"),
            work: Some(base.join("work")),
            base,
        };
        // The layer in a directory of its own, private when the base is searchable (below).
        let private = d.base.join("layer");
        if userns_root {
            d.upper = private.join("upper");
            d.work = Some(private.join("work"));
        }
        if let Some(u) = upper {
            d.upper = u.to_path_buf();
            // The work dir must be on the upper's filesystem: ours (removed at exit, nothing
            // appears next to the upper) when it is, else config::default_workdir next to it.
            if !same_filesystem(&d.base, u) {
                d.work = None;
            }
        }
        if let Some(w) = overlay_workdir {
            d.work = Some(w.to_path_buf());
        }
        let mut dirs = vec![&d.mnt, &d.init];
        if userns_root {
            dirs.push(&private);
        }
        if upper.is_none() {
            dirs.push(&d.upper);
        }
        for p in dirs {
            std::fs::create_dir(p)
                .map_err(|e| RunError::io(format!("mkdir {}", p.display()), &e))?;
        }
        if userns_root {
            use std::os::unix::fs::PermissionsExt;
            let modes = [
                (&d.base, 0o711),
                (&d.mnt, 0o755),
                (&d.init, 0o755),
                (&private, 0o700),
            ];
            for (p, mode) in modes {
                std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| RunError::io(format!("chmod {}", p.display()), &e))?;
            }
        }
        Ok(d)
    }
}

fn same_filesystem(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev(),
        _ => false,
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        // Never delete through a live mount: detach first (a no-op when already gone).
        sys::umount_detach(&self.mnt);
        if let Err(e) = std::fs::remove_dir_all(&self.base) {
            eprintln!("unionfuse run: remove {}: {e}", self.base.display());
        }
    }
}

/// Run the container; returns its exit code (pid 1's status, as a shell reports it).
pub fn run(req: &RunRequest) -> RunResult<i32> {
    supervise(req)
}

fn supervise(args: &RunRequest) -> RunResult<i32> {
    let plan = RunPlan::new(args, sys::geteuid())?;
    if let Some(u) = &plan.upper {
        std::fs::create_dir_all(u)
            .map_err(|e| RunError::io(format!("create --upper {}", u.display()), &e))?;
    }
    // Held from choosing an automatic range until pid 1's maps are written.
    let mut alloc_lock = None;
    let map = match &plan.container_ids {
        _ if plan.rootless => idmap::for_caller(sys::getuid(), sys::getgid()),
        Some(ContainerIds::Maps(m)) => m.clone(),
        Some(ContainerIds::Auto { size }) => {
            let (m, lock) = idmap::allocate(*size).map_err(RunError::new)?;
            alloc_lock = Some(lock);
            m
        }
        None => IdMap {
            uids: vec![],
            gids: vec![],
            helper: false,
        },
    };
    let container_userns = plan.container_ids.is_some();
    let dir = RunDir::create(
        plan.upper.as_deref(),
        args.overlay_workdir.as_deref(),
        container_userns,
    )?;
    rootfs::write_init_files(&dir.init, &plan.hostname, plan.net == NetMode::None)?;
    if container_userns {
        // As podman: the generated /etc files belong to the container's root.
        let root_of = |r: &[idmap::Range]| r.iter().find(|r| r.inside == 0).map(|r| r.outside);
        for f in ["hosts", "hostname", "resolv.conf"] {
            let p = dir.init.join(f);
            std::os::unix::fs::chown(&p, root_of(&map.uids), root_of(&map.gids))
                .map_err(|e| RunError::io(format!("chown {}", p.display()), &e))?;
        }
    }

    // Single-threaded until the session is spawned below: the namespaces and the fork need it.
    plan::apply(
        &plan.host_steps(&map),
        &mut LinuxSys {
            root: dir.mnt.clone(),
        },
    )?;
    // Blocked before the fork and before the session threads exist, so that only this
    // thread's signalfd sees them and pid 1 inherits the mask.
    let sigfd = sys::block_and_signalfd()?;
    let (go_r, go_w) = sys::pipe()?;
    // Fork pid 1 before any thread exists and before the union is mounted: it inherits neither
    // the /dev/fuse fd nor the umask mount() sets; it waits on the pipe for the mount.
    let pid1 = match sys::fork_new_pid_ns("the container's init", container_userns)? {
        Fork::Child => {
            drop(go_w);
            drop(sigfd);
            drop(alloc_lock);
            init::pid1(&plan, &dir.mnt, &dir.init, &map, go_r)
        }
        Fork::Parent(pid) => pid,
    };
    drop(go_r);
    // If anything below fails, closing go_w makes pid 1 exit; wait for it either way.
    let served = if container_userns {
        sys::write_child_maps(pid1, &map)
    } else {
        Ok(())
    }
    .and_then(|()| {
        drop(alloc_lock);
        mount_and_release(&plan, &dir, &map, go_w)
    });
    let session = match served {
        Ok(s) => s,
        Err(e) => {
            sys::kill(pid1, libc::SIGKILL);
            sys::waitpid(pid1, false);
            return Err(e);
        }
    };
    let saved = if plan.tty && sys::isatty(0) {
        sys::make_raw(0)
    } else {
        None
    };
    let status = wait_forwarding(pid1, &sigfd);
    if let Some(t) = &saved {
        sys::restore_termios(0, t);
    }
    if let Err(e) = session.umount_and_join() {
        tracing::warn!(error = %e, "unmounting the union");
    }
    drop(dir);
    Ok(sys::exit_code(status))
}

fn mount_and_release(
    plan: &RunPlan,
    dir: &RunDir,
    map: &IdMap,
    go: std::os::fd::OwnedFd,
) -> RunResult<fuser::BackgroundSession> {
    // A rootful run with a user namespace: the union shows the layers' ids as the host ids the
    // container's map gives them, so the container sees the image's owners (idmap::mount_ranges).
    let ids = |r: &[idmap::Range]| plan.container_ids.is_some().then(|| idmap::mount_ranges(r));
    let opts = MountOpts {
        // The command may run as any uid (-u); the mount is private to our namespaces anyway.
        allow_other: Some(true),
        uid_map: ids(&map.uids),
        gid_map: ids(&map.gids),
        ..MountOpts::default()
    };
    let cfg = MountConfig::new(
        &plan.lowers,
        Some(&dir.upper),
        dir.work.as_deref(),
        &dir.mnt,
        opts,
    )
    .map_err(|e| RunError::new(format!("configure the union: {e}")))?;
    let session = crate::mount::mount(&cfg)
        .map_err(|e| RunError::new(format!("mount the union on {}: {e}", dir.mnt.display())))?;
    let bg = session
        .spawn()
        .map_err(|e| RunError::io("start the union's session threads", &e))?;
    if !sys::write_all(std::os::fd::AsRawFd::as_raw_fd(&go), b"g") {
        return Err(RunError::last("release the container's init"));
    }
    Ok(bg)
}

/// Wait for pid 1, forwarding the signals we get to it. Returns its wait status.
fn wait_forwarding(pid1: i32, sigfd: &std::os::fd::OwnedFd) -> i32 {
    loop {
        let rev = sys::poll(
            &[(std::os::fd::AsRawFd::as_raw_fd(sigfd), libc::POLLIN)],
            -1,
        );
        if rev[0] == 0 {
            continue;
        }
        for sig in sys::read_signals(sigfd) {
            if sig != libc::SIGCHLD {
                tracing::debug!(sig, "forwarding to the container");
                sys::kill(pid1, sig);
            }
        }
        if let Some((_, status)) = sys::waitpid(pid1, true) {
            return status;
        }
    }
}
