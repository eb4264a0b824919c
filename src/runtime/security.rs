//! What contains the command, validated from the request: capabilities, no_new_privs, the
//! seccomp program (compiled here, in the supervisor, where a profile FILE is still reachable),
//! /proc and /sys masking, and the fds passed on. `plan::RunPlan::exec_steps` turns it into steps.

use super::caps::{self, Caps};
use super::request::RunRequest;
use super::seccomp::{self, Insn};
use super::sys::{RunError, RunResult};

/// Files and directories of /proc and /sys hidden from the container (podman's list): a file
/// gets /dev/null bound over it, a directory an empty read-only tmpfs. Missing ones are skipped.
pub const MASKED: &[&str] = &[
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/fs/selinux",
    "/sys/dev/block",
];

/// Made read-only (bound onto themselves, then MOUNT_ATTR_RDONLY), podman's list.
pub const READ_ONLY: &[&str] = &[
    "/proc/asound",
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeccompChoice {
    Default,
    Unconfined,
    Profile(std::path::PathBuf),
}

#[derive(Clone, Debug)]
pub struct Security {
    /// The container's bounding set.
    pub bounding: Caps,
    /// Named in --cap-add: what a non-root user gets.
    pub added: Caps,
    pub no_new_privs: bool,
    pub seccomp_choice: SeccompChoice,
    /// The compiled filter; None: unconfined.
    pub seccomp: Option<Vec<Insn>>,
    /// Mask and make read-only the paths above.
    pub mask: bool,
    pub preserve_fds: u32,
}

fn parse_bool(opt: &str, v: &str) -> RunResult<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(RunError::new(format!(
            "--security-opt {opt}: expected true or false"
        ))),
    }
}

impl Security {
    /// `userns`: the container has a user namespace of its own (rootless, or asked for).
    pub fn new(req: &RunRequest, userns: bool) -> RunResult<Security> {
        let mut no_new_privs = true;
        let mut choice = SeccompChoice::Default;
        for opt in &req.security_opt {
            // podman and docker accept both '=' and ':' after the key.
            let (k, v) = match opt.split_once(['=', ':']) {
                Some((k, v)) => (k, Some(v)),
                None => (opt.as_str(), None),
            };
            match (k, v) {
                ("no-new-privileges", None) => no_new_privs = true,
                ("no-new-privileges", Some(v)) => no_new_privs = parse_bool(opt, v)?,
                ("seccomp", Some("unconfined")) => choice = SeccompChoice::Unconfined,
                ("seccomp", Some(f)) if !f.is_empty() => {
                    choice = SeccompChoice::Profile(f.into());
                }
                _ => {
                    return Err(RunError::new(format!(
                        "--security-opt {opt}: unknown option (no-new-privileges[=true|false], \
                         seccomp=unconfined, seccomp=PROFILE.json)"
                    )));
                }
            }
        }
        let merged =
            caps::merge(caps::default_set(), &req.cap_add, &req.cap_drop).map_err(RunError::new)?;
        let bounding = if req.privileged { caps::all() } else { merged };
        let added = caps::merge(Caps(0), &req.cap_add, &[]).map_err(RunError::new)?;
        if req.privileged && choice == SeccompChoice::Default {
            choice = SeccompChoice::Unconfined;
        }
        let filter = match &choice {
            SeccompChoice::Unconfined => None,
            SeccompChoice::Default => Some(seccomp::default_filter(bounding, userns)),
            SeccompChoice::Profile(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    RunError::io(format!("--security-opt seccomp={}", p.display()), &e)
                })?;
                let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                    .ok()
                    .and_then(|r| seccomp::parse_kernel(r.trim()))
                    .unwrap_or((0, 0));
                let f = seccomp::parse_profile(&text, bounding, kernel).map_err(|why| {
                    RunError::new(format!("--security-opt seccomp={}: {why}", p.display()))
                })?;
                Some(f)
            }
        };
        let seccomp = match filter {
            None => None,
            Some(_) if !cfg!(target_arch = "x86_64") => {
                return Err(RunError::new(
                    "seccomp filters are only built for x86_64 here: \
                     use --security-opt seccomp=unconfined",
                ));
            }
            Some(f) => {
                Some(seccomp::compile(&f).map_err(|why| RunError::new(format!("seccomp: {why}")))?)
            }
        };
        Ok(Security {
            bounding,
            added,
            no_new_privs,
            seccomp_choice: choice,
            seccomp,
            mask: !req.privileged,
            preserve_fds: req.preserve_fds,
        })
    }
}
