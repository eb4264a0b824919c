//! The declarative run plan: `RunPlan` (validated in validate.rs from parsed flags, parse.rs)
//! and `Step`, one kernel action as data. steps.rs and exec.rs list the steps in order; `apply`
//! here executes a list through a `Sys`, so with `RecordingSys` the order is unit-tested
//! without privileges. Nothing here mounts or unshares directly: every kernel action is a
//! `Step` and goes through `Sys`.

use std::ffi::OsString;
use std::path::PathBuf;

use super::caps::{Caps, ProcessCaps};
use super::idmap::{ContainerIds, IdMap};
use super::request::NetMode;
use super::seccomp::Insn;
use super::security::Security;
use super::sys::{RunResult, Sys};

mod exec;
mod parse;
mod steps;
mod validate;

pub use exec::DEFAULT_PATH;
pub use parse::{Bind, Tmpfs, User, UserSpec};

/// A validated `unionfuse run`.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub hostname: String,
    /// `-e` in order (KEY=VAL); defaults are added in the container.
    pub env: Vec<OsString>,
    pub workdir: Option<PathBuf>,
    pub user: Option<User>,
    pub binds: Vec<Bind>,
    pub net: NetMode,
    pub read_only: bool,
    pub tty: bool,
    /// The container has a user namespace of its own (rootless, or asked for as root).
    pub userns: bool,
    /// The supervisor (and the union's daemon) enters it first: a run not started as root, or
    /// `--rootless`.
    pub rootless: bool,
    /// A rootful run's container-only user namespace (`--userns=auto`, `--uidmap`): pid 1 is
    /// cloned into it, the daemon stays host root and the union maps the ids.
    pub container_ids: Option<ContainerIds>,
    pub cmd: Vec<OsString>,
    pub verbose: u8,
    pub security: Security,
    /// `--tmpfs`, and /run, /tmp, /var/tmp under `--read-only` (`read_only_tmpfs`).
    pub tmpfs: Vec<Tmpfs>,
}

/// One thing done to the kernel. Container paths (`ctr`) are inside the new root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    EnterUserNs {
        extra: i32,
        map: IdMap,
    },
    Unshare(i32),
    /// Propagation of every mount under a host path (MS_SLAVE or MS_PRIVATE, recursive).
    Propagation {
        host: PathBuf,
        flags: u64,
    },
    BindSelf(PathBuf),
    SetHostname(String),
    LoopbackUp,
    MkdirAll {
        ctr: PathBuf,
        mode: u32,
    },
    Touch(PathBuf),
    Symlink {
        target: PathBuf,
        ctr: PathBuf,
    },
    Mount {
        source: String,
        ctr: PathBuf,
        fstype: String,
        flags: u64,
        data: String,
    },
    Bind {
        host: PathBuf,
        ctr: PathBuf,
    },
    /// A generated /etc file bound over `ctr` (created if missing). If the target can't be
    /// created (a rootless root facing a directory owned by an unmapped id), warn and go on:
    /// a container without /etc/hosts beats no container.
    InitFile {
        host: PathBuf,
        ctr: PathBuf,
    },
    ReadOnly {
        ctr: PathBuf,
        recursive: bool,
    },
    PivotRoot(PathBuf),
    /// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory; nothing
    /// when it does not exist.
    Mask(PathBuf),
    /// Bind a path onto itself read-only; nothing when it does not exist.
    ReadOnlyPath(PathBuf),
    // In the command's process, before exec (`RunPlan::exec_steps`).
    /// Close every fd from this one up.
    CloseFdsFrom(u32),
    /// Drop every capability outside this set from the bounding set.
    Bounding(Caps),
    /// Keep the permitted set across the switch to a non-root uid (PR_SET_KEEPCAPS).
    KeepCaps,
    SetIds {
        uid: u32,
        gid: u32,
        /// None where setgroups is denied (a user namespace mapped without the helper).
        groups: Option<Vec<u32>>,
    },
    /// As the user: a directory it cannot enter is an error.
    Chdir(PathBuf),
    SetCaps(ProcessCaps),
    NoNewPrivs,
    Seccomp(Vec<Insn>),
}

/// Execute steps in order, stopping at the first failure (which names the step and path).
pub fn apply(steps: &[Step], sys: &mut dyn Sys) -> RunResult<()> {
    for step in steps {
        tracing::debug!(?step, "run step");
        match step {
            Step::EnterUserNs { extra, map } => sys.enter_userns(*extra, map)?,
            Step::Unshare(f) => sys.unshare(*f)?,
            Step::Propagation { host, flags } => sys.set_propagation(host, *flags)?,
            Step::BindSelf(p) => sys.bind_self(p)?,
            Step::SetHostname(h) => sys.sethostname(h)?,
            Step::LoopbackUp => sys.loopback_up()?,
            Step::MkdirAll { ctr, mode } => sys.mkdir_all(ctr, *mode)?,
            Step::Touch(p) => sys.touch(p)?,
            Step::Symlink { target, ctr } => sys.symlink(target, ctr)?,
            Step::Mount {
                source,
                ctr,
                fstype,
                flags,
                data,
            } => sys.mount(source, ctr, fstype, *flags, data)?,
            Step::Bind { host, ctr } => sys.bind(host, ctr)?,
            Step::InitFile { host, ctr } => {
                if let Err(e) = sys.touch(ctr) {
                    eprintln!(
                        "unionfuse run: warning: no {} in the container: {e}",
                        ctr.display()
                    );
                    continue;
                }
                sys.bind(host, ctr)?;
            }
            Step::ReadOnly { ctr, recursive } => sys.set_read_only(ctr, *recursive)?,
            Step::PivotRoot(p) => sys.pivot_root(p)?,
            Step::Mask(p) => sys.mask(p)?,
            Step::ReadOnlyPath(p) => sys.read_only_path(p)?,
            Step::CloseFdsFrom(n) => sys.close_fds_from(*n)?,
            Step::Bounding(c) => sys.bounding(*c)?,
            Step::KeepCaps => sys.keep_caps()?,
            Step::SetIds { uid, gid, groups } => sys.set_ids(*uid, *gid, groups.as_deref())?,
            Step::Chdir(d) => sys.chdir(d)?,
            Step::SetCaps(c) => sys.set_caps(c)?,
            Step::NoNewPrivs => sys.no_new_privs()?,
            Step::Seccomp(prog) => sys.seccomp(prog)?,
        }
    }
    Ok(())
}

/// What the unit tests of every part share: a minimal request and a recorded step list.
#[cfg(test)]
mod fixtures {
    use std::path::Path;

    use super::{IdMap, RunPlan, apply};
    use crate::runtime::idmap::Range;
    use crate::runtime::request::RunRequest;
    use crate::runtime::sys::RecordingSys;

    pub(super) fn args(extra: impl FnOnce(&mut RunRequest)) -> RunRequest {
        let mut a = RunRequest {
            lowers: vec!["/".into()],
            cmd: vec!["sh".into()],
            hostname: Some("box".into()),
            ..Default::default()
        };
        extra(&mut a);
        a
    }

    pub(super) fn single_map() -> IdMap {
        let r = vec![Range {
            inside: 0,
            outside: 1000,
            count: 1,
        }];
        IdMap {
            uids: r.clone(),
            gids: r,
            helper: false,
        }
    }

    pub(super) fn record(plan: &RunPlan, map: &IdMap) -> Vec<String> {
        let mut rec = RecordingSys::default();
        apply(&plan.host_steps(map), &mut rec).expect("host steps");
        apply(
            &plan.container_steps(Path::new("/run/u/mnt"), Path::new("/run/u/init"), map),
            &mut rec,
        )
        .expect("container steps");
        rec.calls
    }

    pub(super) fn pos(calls: &[String], prefix: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
    }
}
