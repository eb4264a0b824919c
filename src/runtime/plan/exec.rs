//! What happens in the command's process between fork and exec, as steps (`exec_steps`: fds,
//! capabilities, user, no_new_privs, seccomp, in that order), and the command's environment.
//! Pure: the steps are executed by `apply` elsewhere.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::{RunPlan, Step};
use crate::runtime::caps;

/// The command's PATH unless `-e` sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

impl RunPlan {
    /// In the command's process, after the fork, before exec: close the fds not passed on,
    /// shrink the capabilities, switch to the user, no_new_privs, and the seccomp filter last,
    /// so that none of the runtime's own calls meet it. Without no_new_privs the kernel wants
    /// CAP_SYS_ADMIN to install a filter: then it comes first, while every capability is
    /// still held (as runc), and the calls after it are ones the filter must allow.
    pub fn exec_steps(&self, uid: u32, gid: u32, groups: Option<&[u32]>, dir: &Path) -> Vec<Step> {
        let sec = &self.security;
        let mut s = vec![Step::CloseFdsFrom(3 + sec.preserve_fds)];
        let filter = sec.seccomp.clone().map(Step::Seccomp);
        if !sec.no_new_privs {
            s.extend(filter.clone());
        }
        s.push(Step::Bounding(sec.bounding));
        if uid != 0 {
            s.push(Step::KeepCaps);
        }
        s.push(Step::SetIds {
            uid,
            gid,
            groups: groups.map(<[u32]>::to_vec),
        });
        s.push(Step::Chdir(dir.to_path_buf()));
        s.push(Step::SetCaps(caps::for_user(sec.bounding, sec.added, uid)));
        if sec.no_new_privs {
            s.push(Step::NoNewPrivs);
            s.extend(filter);
        }
        s
    }

    /// The environment for the command: defaults, then `-e` (later wins), then nothing else.
    pub fn environment(&self, home: &Path) -> Vec<OsString> {
        let mut env: Vec<OsString> = vec![
            format!("PATH={DEFAULT_PATH}").into(),
            format!("HOSTNAME={}", self.hostname).into(),
        ];
        let mut h = OsString::from("HOME=");
        h.push(home.as_os_str());
        env.push(h);
        if self.tty {
            env.push("TERM=xterm".into());
        }
        for e in &self.env {
            let key = key_of(e);
            env.retain(|x| key_of(x) != key);
            env.push(e.clone());
        }
        env
    }
}

fn key_of(kv: &OsStr) -> &[u8] {
    let b = kv.as_bytes();
    &b[..b.iter().position(|&c| c == b'=').unwrap_or(b.len())]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::plan::apply;
    use crate::runtime::plan::fixtures::args;
    use crate::runtime::sys::RecordingSys;

    fn exec_calls(plan: &RunPlan, uid: u32) -> Vec<String> {
        let mut rec = RecordingSys::default();
        apply(
            &plan.exec_steps(uid, uid, Some(&[uid]), Path::new("/w")),
            &mut rec,
        )
        .expect("exec steps");
        rec.calls
    }

    #[test]
    fn the_filter_is_installed_last_after_no_new_privs() {
        let plan = RunPlan::new(&args(|_| {}), 0).expect("plan");
        let c = exec_calls(&plan, 0);
        assert_eq!(c[0], "close fds from 3");
        assert!(
            c[1].starts_with("bounding CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER"),
            "{c:#?}"
        );
        assert_eq!(c[2], "set ids 0:0 groups Some([0])");
        assert_eq!(c[3], "chdir /w");
        assert!(c[4].starts_with("caps eff [CAP_CHOWN"), "{c:#?}");
        assert!(c[4].ends_with("inh [] amb []"), "{c:#?}");
        assert_eq!(c[5], "no_new_privs");
        assert!(c[6].starts_with("seccomp "), "{c:#?}");
        assert_eq!(c.len(), 7);
        // A non-root user keeps its permitted set over setuid, then gets the added caps only.
        let plan = RunPlan::new(
            &args(|a| {
                a.cap_add = vec!["NET_RAW".into()];
                a.preserve_fds = 2;
            }),
            0,
        )
        .expect("plan");
        let c = exec_calls(&plan, 1000);
        assert_eq!(c[0], "close fds from 5");
        assert_eq!(c[2], "keep caps");
        assert_eq!(
            c[5],
            "caps eff [CAP_NET_RAW] prm [CAP_NET_RAW] inh [CAP_NET_RAW] amb [CAP_NET_RAW]"
        );
    }

    #[test]
    fn without_no_new_privs_the_filter_comes_first_and_unconfined_has_none() {
        let opt = |o: &str| {
            let o = o.to_string();
            RunPlan::new(&args(move |a| a.security_opt = vec![o]), 0).expect("plan")
        };
        let c = exec_calls(&opt("no-new-privileges=false"), 0);
        assert!(c[1].starts_with("seccomp "), "{c:#?}");
        assert!(!c.contains(&"no_new_privs".to_string()));
        let c = exec_calls(&opt("seccomp=unconfined"), 0);
        assert!(!c.iter().any(|x| x.starts_with("seccomp")), "{c:#?}");
        let e = RunPlan::new(&args(|a| a.security_opt = vec!["label=x".into()]), 0)
            .expect_err("unknown");
        assert!(
            e.to_string()
                .starts_with("--security-opt label=x: unknown option"),
            "{e}"
        );
        let e = RunPlan::new(
            &args(|a| a.security_opt = vec!["seccomp=/no/such.json".into()]),
            0,
        )
        .expect_err("missing profile");
        assert!(e.to_string().contains("/no/such.json: ENOENT"), "{e}");
    }

    #[test]
    fn environment_defaults_then_overrides() {
        let plan = RunPlan::new(
            &args(|a| {
                a.tty = true;
                a.env = vec!["PATH=/x".into(), "A=1".into(), "A=2".into()];
            }),
            0,
        )
        .expect("plan");
        let env = plan.environment(Path::new("/root"));
        let env: Vec<String> = env.iter().map(|e| e.to_string_lossy().into()).collect();
        assert_eq!(
            env,
            ["HOSTNAME=box", "HOME=/root", "TERM=xterm", "PATH=/x", "A=2"]
        );
    }
}
