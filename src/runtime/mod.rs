//! `unionfuse run`: a command in its own namespaces with the union as its root.
//!
//! The supervisor (this process) enters the namespaces, forks pid 1 of the container, mounts the
//! union through the library, serves it on background threads, and tears everything down when
//! pid 1 exits. See docs/runtime.md for the sequence and the reasons. Knows nothing of FUSE
//! internals: it mounts through `config::MountConfig` and `mount::mount`.

pub mod idmap;
pub mod init;
pub mod plan;
pub mod request;
pub mod rootfs;
#[allow(unsafe_code)]
pub mod sys;

use std::path::{Path, PathBuf};

use idmap::IdMap;
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
    fn create(upper: Option<&Path>) -> RunResult<RunDir> {
        let base = sys::mkdtemp(&std::env::temp_dir().join("unionfuse-run-"))?;
        let mut d = RunDir {
            mnt: base.join("mnt"),
            init: base.join("init"),
            upper: base.join("upper"),
            work: Some(base.join("work")),
            base,
        };
        if let Some(u) = upper {
            d.upper = u.to_path_buf();
            // config::default_workdir, next to the upper.
            d.work = None;
        }
        let mut dirs = vec![&d.mnt, &d.init];
        if upper.is_none() {
            dirs.push(&d.upper);
        }
        for p in dirs {
            std::fs::create_dir(p)
                .map_err(|e| RunError::io(format!("mkdir {}", p.display()), &e))?;
        }
        Ok(d)
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
    let map = if plan.userns {
        idmap::for_caller(sys::getuid(), sys::getgid())
    } else {
        IdMap {
            uids: vec![],
            gids: vec![],
            helper: false,
        }
    };
    let dir = RunDir::create(plan.upper.as_deref())?;
    rootfs::write_init_files(&dir.init, &plan.hostname, plan.net == NetMode::None)?;

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
    let pid1 = match sys::fork_new_pid_ns("the container's init")? {
        Fork::Child => {
            drop(go_w);
            drop(sigfd);
            init::pid1(&plan, &dir.mnt, &dir.init, &map, go_r)
        }
        Fork::Parent(pid) => pid,
    };
    drop(go_r);
    // If anything below fails, closing go_w makes pid 1 exit; wait for it either way.
    let served = mount_and_release(&plan, &dir, go_w);
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
    go: std::os::fd::OwnedFd,
) -> RunResult<fuser::BackgroundSession> {
    let opts = MountOpts {
        // The command may run as any uid (-u); the mount is private to our namespaces anyway.
        allow_other: Some(true),
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
