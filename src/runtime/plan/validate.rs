//! `RunPlan::new`: a `RunRequest` checked and turned into a plan. Every flag error names its
//! flag; the user-namespace choice (rootless, `--userns`, `--uidmap`) and the security settings
//! are settled here, once, so the step lists only read the plan.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::parse::{absolute_clean, parse_tmpfs, parse_user, parse_volume, valid_hostname};
use super::{RunPlan, Tmpfs};
use crate::runtime::idmap::{self, ContainerIds};
use crate::runtime::request::RunRequest;
use crate::runtime::security::Security;
use crate::runtime::sys::{self, RunError, RunResult};

/// `--tmpfs` mounts, then (under `--read-only` with `read_only_tmpfs`) /run, /tmp and /var/tmp
/// where no `--tmpfs` is.
fn plan_tmpfs(args: &RunRequest) -> RunResult<Vec<Tmpfs>> {
    let mut out: Vec<Tmpfs> = args
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<RunResult<_>>()?;
    if args.read_only && args.read_only_tmpfs {
        for (ctr, mode) in [("/run", "0755"), ("/tmp", "1777"), ("/var/tmp", "1777")] {
            if !out.iter().any(|t| t.ctr == Path::new(ctr)) {
                out.push(Tmpfs {
                    ctr: ctr.into(),
                    flags: sys::MS_NOSUID | sys::MS_NODEV,
                    data: format!("mode={mode}"),
                });
            }
        }
    }
    Ok(out)
}

impl RunPlan {
    /// Validate the request. `euid` decides rootless mode (with `--rootless` forcing it).
    pub fn new(args: &RunRequest, euid: u32) -> RunResult<RunPlan> {
        let lowers = args.lowers.clone();
        if lowers.is_empty() {
            return Err(RunError::new("LAYERS: at least one lower layer is needed"));
        }
        if args.cmd.is_empty() {
            return Err(RunError::new(
                "no command given (unionfuse run LAYERS -- CMD...)",
            ));
        }
        let hostname = match &args.hostname {
            Some(h) if valid_hostname(h) => h.clone(),
            Some(h) => {
                return Err(RunError::new(format!(
                    "--hostname {h}: letters, digits, '-', '.', '_', at most 64"
                )));
            }
            None => sys::random_hex(12),
        };
        let mut env = Vec::new();
        for e in &args.env {
            let b = e.as_bytes();
            match b.iter().position(|&c| c == b'=') {
                Some(0) => {
                    return Err(RunError::new(format!(
                        "-e {}: empty variable name",
                        e.to_string_lossy()
                    )));
                }
                Some(_) => env.push(e.clone()),
                None => {
                    // `-e KEY`: copy the caller's value, as docker does; absent stays absent.
                    if let Some(v) = std::env::var_os(e) {
                        let mut kv = e.clone();
                        kv.push("=");
                        kv.push(v);
                        env.push(kv);
                    }
                }
            }
        }
        let workdir = args
            .workdir
            .as_deref()
            .map(|w| absolute_clean(w, "-w"))
            .transpose()?;
        let user = args.user.as_deref().map(parse_user).transpose()?;
        let binds = args
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<RunResult<_>>()?;
        let rootless = args.rootless || euid != 0;
        let auto = args
            .userns
            .as_deref()
            .map(idmap::parse_userns)
            .transpose()
            .map_err(RunError::new)?
            .flatten();
        let explicit = !args.uidmap.is_empty() || !args.gidmap.is_empty();
        let container_ids = match (auto, explicit) {
            (Some(_), true) => {
                return Err(RunError::new(
                    "--userns=auto and --uidmap/--gidmap: give one or the other",
                ));
            }
            (Some(size), false) => Some(ContainerIds::Auto { size }),
            (None, true) if args.userns.is_some() => {
                return Err(RunError::new(
                    "--userns=host and --uidmap/--gidmap: the maps need a user namespace",
                ));
            }
            (None, true) => Some(ContainerIds::Maps(
                idmap::parse_maps(&args.uidmap, &args.gidmap).map_err(RunError::new)?,
            )),
            (None, false) => None,
        };
        if rootless && container_ids.is_some() {
            return Err(RunError::new(
                "--userns/--uidmap/--gidmap: only for a run started as root \
                 (a rootless run has its user namespace already)",
            ));
        }
        let userns = rootless || container_ids.is_some();
        let security = Security::new(args, userns)?;
        Ok(RunPlan {
            lowers,
            upper: args.upper.clone(),
            hostname,
            env,
            workdir,
            user,
            binds,
            net: args.net,
            read_only: args.read_only,
            tty: args.tty,
            userns,
            rootless,
            container_ids,
            cmd: args.cmd.clone(),
            verbose: args.verbose,
            security,
            tmpfs: plan_tmpfs(args)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::plan::fixtures::args;

    #[test]
    fn bad_flags_name_the_flag() {
        let e = RunPlan::new(&args(|a| a.volumes = vec!["/x".into()]), 0).expect_err("bad -v");
        assert!(e.to_string().starts_with("-v /x"), "{e}");
        let e = RunPlan::new(&args(|a| a.volumes = vec!["/nonexistent-x:/y".into()]), 0)
            .expect_err("missing host path");
        assert!(e.to_string().contains("ENOENT"), "{e}");
        let e = RunPlan::new(&args(|a| a.workdir = Some("rel".into())), 0).expect_err("-w");
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = RunPlan::new(&args(|a| a.hostname = Some("a b".into())), 0).expect_err("host");
        assert!(e.to_string().starts_with("--hostname"), "{e}");
        let e = RunPlan::new(&args(|a| a.user = Some("1:".into())), 0).expect_err("-u");
        assert!(e.to_string().starts_with("-u"), "{e}");
    }
}
