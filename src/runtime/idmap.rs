//! User namespace id maps for rootless runs: the caller becomes root in the container, and with
//! /etc/subuid + /etc/subgid ranges (through the setuid newuidmap/newgidmap) the ids 1..N map to
//! the caller's subordinate range so `chown` and package managers work. The maps as data;
//! writing them (unshare, the helpers) is `sys::enter_userns`.

use std::path::PathBuf;

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

/// newuidmap/newgidmap's arguments: the pid, then `inside outside count` triples.
pub fn helper_args(pid: i32, r: &[Range]) -> Vec<String> {
    let mut a = vec![pid.to_string()];
    for r in r {
        a.extend([r.inside, r.outside, r.count].map(|x| x.to_string()));
    }
    a
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
