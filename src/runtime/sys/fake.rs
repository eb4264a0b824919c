//! The recording fake of `Sys`: each call becomes one line, the kernel is never touched. Only
//! the plan's unit tests use it.

use std::path::Path;

use super::{
    Caps, IdMap, Insn, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_STRICTATIME, ProcessCaps,
    RunResult, Sys, clone_names,
};

// The recording fake.

/// Records each call as one line; never touches the kernel.
#[derive(Default, Debug)]
pub struct RecordingSys {
    pub calls: Vec<String>,
}

impl RecordingSys {
    fn rec(&mut self, s: String) -> RunResult<()> {
        self.calls.push(s);
        Ok(())
    }
}

impl Sys for RecordingSys {
    fn unshare(&mut self, flags: i32) -> RunResult<()> {
        self.rec(format!("unshare {}", clone_names(flags)))
    }
    fn enter_userns(&mut self, extra: i32, map: &IdMap) -> RunResult<()> {
        self.rec(format!(
            "unshare {} + map uid [{}] gid [{}] via {}",
            clone_names(libc::CLONE_NEWUSER | extra),
            map.uid_map_text().trim().replace('\n', ", "),
            map.gid_map_text().trim().replace('\n', ", "),
            if map.helper { "newuidmap" } else { "write" }
        ))
    }
    fn set_propagation(&mut self, host: &Path, flags: u64) -> RunResult<()> {
        let kind = if flags & libc::MS_SLAVE != 0 {
            "rslave"
        } else {
            "rprivate"
        };
        self.rec(format!("propagation {kind} {}", host.display()))
    }
    fn bind(&mut self, host: &Path, ctr: &Path) -> RunResult<()> {
        self.rec(format!("bind {} -> {}", host.display(), ctr.display()))
    }
    fn bind_self(&mut self, host: &Path) -> RunResult<()> {
        self.rec(format!("bind-self {}", host.display()))
    }
    fn mount(&mut self, s: &str, ctr: &Path, t: &str, flags: u64, data: &str) -> RunResult<()> {
        self.rec(format!(
            "mount {t} {s} -> {} [{}] {data}",
            ctr.display(),
            ms_names(flags)
        ))
    }
    fn set_read_only(&mut self, ctr: &Path, recursive: bool) -> RunResult<()> {
        let r = if recursive { "recursive " } else { "" };
        self.rec(format!("read-only {r}{}", ctr.display()))
    }
    fn mkdir_all(&mut self, ctr: &Path, mode: u32) -> RunResult<()> {
        self.rec(format!("mkdir {} {mode:o}", ctr.display()))
    }
    fn touch(&mut self, ctr: &Path) -> RunResult<()> {
        self.rec(format!("touch {}", ctr.display()))
    }
    fn symlink(&mut self, target: &Path, ctr: &Path) -> RunResult<()> {
        self.rec(format!("symlink {} -> {}", ctr.display(), target.display()))
    }
    fn sethostname(&mut self, name: &str) -> RunResult<()> {
        self.rec(format!("sethostname {name}"))
    }
    fn loopback_up(&mut self) -> RunResult<()> {
        self.rec("loopback up".into())
    }
    fn pivot_root(&mut self, new_root: &Path) -> RunResult<()> {
        self.rec(format!("pivot_root {}", new_root.display()))
    }
    fn mask(&mut self, ctr: &Path) -> RunResult<()> {
        self.rec(format!("mask {}", ctr.display()))
    }
    fn read_only_path(&mut self, ctr: &Path) -> RunResult<()> {
        self.rec(format!("read-only-path {}", ctr.display()))
    }
    fn close_fds_from(&mut self, first: u32) -> RunResult<()> {
        self.rec(format!("close fds from {first}"))
    }
    fn bounding(&mut self, keep: Caps) -> RunResult<()> {
        self.rec(format!("bounding {}", keep.names()))
    }
    fn keep_caps(&mut self) -> RunResult<()> {
        self.rec("keep caps".into())
    }
    fn set_ids(&mut self, uid: u32, gid: u32, groups: Option<&[u32]>) -> RunResult<()> {
        self.rec(format!("set ids {uid}:{gid} groups {groups:?}"))
    }
    fn chdir(&mut self, dir: &Path) -> RunResult<()> {
        self.rec(format!("chdir {}", dir.display()))
    }
    fn set_caps(&mut self, c: &ProcessCaps) -> RunResult<()> {
        self.rec(format!(
            "caps eff [{}] prm [{}] inh [{}] amb [{}]",
            c.effective.names(),
            c.permitted.names(),
            c.inheritable.names(),
            c.ambient.names()
        ))
    }
    fn no_new_privs(&mut self) -> RunResult<()> {
        self.rec("no_new_privs".into())
    }
    fn seccomp(&mut self, prog: &[Insn]) -> RunResult<()> {
        self.rec(format!("seccomp {} insns", prog.len()))
    }
}

fn ms_names(flags: u64) -> String {
    let names = [
        (MS_RDONLY, "ro"),
        (MS_NOSUID, "nosuid"),
        (MS_NODEV, "nodev"),
        (MS_NOEXEC, "noexec"),
        (MS_STRICTATIME, "strictatime"),
    ];
    names
        .iter()
        .filter(|(f, _)| flags & f != 0)
        .map(|(_, n)| *n)
        .collect::<Vec<_>>()
        .join(",")
}
