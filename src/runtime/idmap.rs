//! User namespace id maps for rootless runs: the caller becomes root in the container, and with
//! /etc/subuid + /etc/subgid ranges (through the setuid newuidmap/newgidmap) the ids 1..N map to
//! the caller's subordinate range so `chown` and package managers work.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::sys::{self, Fork, RunError, RunResult};

/// One line of a uid_map/gid_map: `inside outside count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<Range>,
    pub gids: Vec<Range>,
    /// Write the maps through newuidmap/newgidmap (needed for more than our own id).
    pub helper: bool,
}

impl IdMap {
    pub fn uid_map_text(&self) -> String {
        text(&self.uids)
    }
    pub fn gid_map_text(&self) -> String {
        text(&self.gids)
    }
    /// Is `gid` (inside) mapped? (devpts' gid=5 option needs it.)
    pub fn has_gid(&self, gid: u32) -> bool {
        self.gids
            .iter()
            .any(|r| gid >= r.inside && gid - r.inside < r.count)
    }
}

fn text(r: &[Range]) -> String {
    r.iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// A subordinate range from /etc/subuid-style content for a user (by name or numeric id).
pub fn sub_range(content: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    content.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(id);
        if !matches {
            return None;
        }
        Some((start.parse().ok()?, count.parse().ok()?))
    })
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

/// Decide the maps for `uid`/`gid` (the caller's host ids).
pub fn for_caller(uid: u32, gid: u32) -> IdMap {
    let one = |id| {
        vec![Range {
            inside: 0,
            outside: id,
            count: 1,
        }]
    };
    if uid == 0 {
        // Root asked for a user namespace: identity over the usual 16-bit range.
        let r = vec![Range {
            inside: 0,
            outside: 0,
            count: 65536,
        }];
        return IdMap {
            uids: r.clone(),
            gids: r,
            helper: false,
        };
    }
    let name = user_name(uid);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let subs = (
        sub_range(&read("/etc/subuid"), name.as_deref(), uid),
        sub_range(&read("/etc/subgid"), name.as_deref(), uid),
    );
    let helpers = find_in_path("newuidmap").is_some() && find_in_path("newgidmap").is_some();
    match subs {
        (Some((us, uc)), Some((gs, gc))) if helpers && uc > 0 && gc > 0 => {
            let with = |id, start, count| {
                vec![
                    Range {
                        inside: 0,
                        outside: id,
                        count: 1,
                    },
                    Range {
                        inside: 1,
                        outside: start,
                        count,
                    },
                ]
            };
            IdMap {
                uids: with(uid, us, uc),
                gids: with(gid, gs, gc),
                helper: true,
            }
        }
        _ => IdMap {
            uids: one(uid),
            gids: one(gid),
            helper: false,
        },
    }
}

fn helper_args(pid: i32, r: &[Range]) -> Vec<String> {
    let mut a = vec![pid.to_string()];
    for r in r {
        a.extend([r.inside, r.outside, r.count].map(|x| x.to_string()));
    }
    a
}

/// unshare(CLONE_NEWUSER | extra) and write the maps. With the helpers, a process forked
/// *before* the unshare (so it stays in the host namespace, where the setuid bit counts) runs
/// newuidmap/newgidmap on us once we have unshared.
pub fn enter(extra: i32, map: &IdMap) -> RunResult<()> {
    let flags = libc::CLONE_NEWUSER | extra;
    if !map.helper {
        sys::unshare(flags)?;
        let write = |p: &str, s: &str| {
            std::fs::write(p, s).map_err(|e| RunError::io(format!("write {p} ({})", s.trim()), &e))
        };
        if write("/proc/self/setgroups", "deny").is_err() {
            // Kernels without the file (< 3.19) allow gid_map without it.
        }
        write("/proc/self/uid_map", &map.uid_map_text())?;
        write("/proc/self/gid_map", &map.gid_map_text())?;
        return Ok(());
    }
    let me = sys::getpid();
    let (rd, wr) = sys::pipe()?;
    match sys::fork("the id map helper")? {
        Fork::Child => {
            drop(wr);
            if sys::read_byte(&rd).is_none() {
                sys::exit_now(1);
            }
            for (prog, r) in [("newuidmap", &map.uids), ("newgidmap", &map.gids)] {
                match Command::new(prog).args(helper_args(me, r)).status() {
                    Ok(s) if s.success() => {}
                    Ok(s) => {
                        eprintln!("unionfuse: {prog} {me} failed: {s}");
                        sys::exit_now(1);
                    }
                    Err(e) => {
                        eprintln!("unionfuse: run {prog}: {e}");
                        sys::exit_now(1);
                    }
                }
            }
            sys::exit_now(0);
        }
        Fork::Parent(helper) => {
            drop(rd);
            let unshared = sys::unshare(flags);
            if unshared.is_ok() {
                sys::write_all(std::os::fd::AsRawFd::as_raw_fd(&wr), b"g");
            }
            drop(wr);
            let status = sys::waitpid(helper, false).map(|(_, s)| s).unwrap_or(1);
            unshared?;
            if sys::exit_code(status) != 0 {
                return Err(RunError::new(format!(
                    "map ids through newuidmap/newgidmap (uid [{}] gid [{}]): helper failed",
                    map.uid_map_text().trim().replace('\n', ", "),
                    map.gid_map_text().trim().replace('\n', ", ")
                )));
            }
            Ok(())
        }
    }
}

/// Is this process in a user namespace other than the initial one?
pub fn in_child_userns() -> bool {
    std::fs::read_to_string(Path::new("/proc/self/uid_map"))
        .map(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_id() {
        let c = "alice:100000:65536\n1001:200000:1000\n";
        assert_eq!(sub_range(c, Some("alice"), 1000), Some((100000, 65536)));
        assert_eq!(sub_range(c, Some("bob"), 1001), Some((200000, 1000)));
        assert_eq!(sub_range(c, Some("carol"), 7), None);
    }

    #[test]
    fn helper_arguments_are_triples_after_the_pid() {
        let r = [
            Range {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            Range {
                inside: 1,
                outside: 100000,
                count: 65536,
            },
        ];
        assert_eq!(
            helper_args(42, &r),
            ["42", "0", "1000", "1", "1", "100000", "65536"]
        );
    }
}
