//! What the container's tree needs besides mounts: the generated /etc files (hosts, hostname,
//! resolv.conf) and lookups in the rootfs's /etc/passwd and /etc/group. Pure functions over
//! contents, so they are tested without a container.

use std::path::{Path, PathBuf};

use super::plan::{User, UserSpec};
use super::sys::{RunError, RunResult};

/// Docker's init layer files, for `hostname`.
pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n127.0.1.1\t{hostname}\n"
    )
}

/// The host's resolver configuration. With a network namespace of our own a loopback resolver
/// (systemd-resolved's 127.0.0.53) is unreachable, so use the upstream list it keeps.
pub fn resolv_conf(own_netns: bool) -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    if own_netns
        && host.contains("nameserver 127.")
        && let Ok(up) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
    {
        return up;
    }
    host
}

/// Write hosts, hostname and resolv.conf into `dir` (the run's private directory).
pub fn write_init_files(dir: &Path, hostname: &str, own_netns: bool) -> RunResult<()> {
    for (name, content) in [
        ("hosts", hosts(hostname)),
        ("hostname", format!("{hostname}\n")),
        ("resolv.conf", resolv_conf(own_netns)),
    ] {
        let p = dir.join(name);
        std::fs::write(&p, content)
            .map_err(|e| RunError::io(format!("write {}", p.display()), &e))?;
    }
    Ok(())
}

/// The user the command runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    /// Supplementary groups from /etc/group (the primary gid first).
    pub groups: Vec<u32>,
}

fn find<'a>(content: &'a str, by: &UserSpec, id_field: usize) -> Option<Vec<&'a str>> {
    content
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .filter(|f| f.len() > id_field)
        .find(|f| match by {
            UserSpec::Name(n) => f[0] == n,
            UserSpec::Id(i) => f[id_field].parse::<u32>().ok() == Some(*i),
        })
}

/// Resolve `-u` (or root when absent) through passwd/group contents.
pub fn resolve_user(user: Option<&User>, passwd: &str, group: &str) -> RunResult<Resolved> {
    let root = User {
        user: UserSpec::Id(0),
        group: None,
    };
    let user = user.unwrap_or(&root);
    let entry = find(passwd, &user.user, 2);
    let uid = match (&user.user, &entry) {
        (_, Some(f)) => f[2]
            .parse()
            .map_err(|_| RunError::new(format!("/etc/passwd: bad uid for {}", f[0])))?,
        (UserSpec::Id(i), None) => *i,
        (UserSpec::Name(n), None) => {
            return Err(RunError::new(format!(
                "-u {n}: no such user in the container's /etc/passwd"
            )));
        }
    };
    let gid = match &user.group {
        Some(UserSpec::Id(g)) => *g,
        Some(UserSpec::Name(n)) => find(group, &UserSpec::Name(n.clone()), 2)
            .and_then(|f| f[2].parse().ok())
            .ok_or_else(|| {
                RunError::new(format!("-u: no group {n} in the container's /etc/group"))
            })?,
        None => entry
            .as_ref()
            .and_then(|f| f.get(3)?.parse().ok())
            .unwrap_or(if uid == 0 { 0 } else { uid }),
    };
    let home = entry
        .as_ref()
        .and_then(|f| f.get(5))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(if uid == 0 { "/root" } else { "/" }));
    let mut groups = vec![gid];
    if let Some(f) = &entry {
        let name = f[0];
        for g in group.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
            if g.len() > 3
                && g[3].split(',').any(|m| m == name)
                && let Ok(id) = g[2].parse::<u32>()
                && !groups.contains(&id)
            {
                groups.push(id);
            }
        }
    }
    Ok(Resolved {
        uid,
        gid,
        home,
        groups,
    })
}

/// Find the command as execvp would, but along the *container's* PATH.
pub fn find_program(cmd: &Path, path_env: &str) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if cmd.as_os_str().as_bytes().contains(&b'/') {
        return Some(cmd.to_path_buf());
    }
    path_env
        .split(':')
        .map(|d| Path::new(if d.is_empty() { "." } else { d }).join(cmd))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| {
                    m.is_file()
                        && std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0
                })
                .unwrap_or(false)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:100:A:/home/alice:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:\nwheel:x:10:alice,bob\naudio:x:29:alice\n";

    #[test]
    fn users_resolve_by_name_or_id() {
        let r = resolve_user(None, PASSWD, GROUP).expect("root");
        assert_eq!((r.uid, r.gid, r.home.as_path()), (0, 0, Path::new("/root")));
        let u = User {
            user: UserSpec::Name("alice".into()),
            group: None,
        };
        let r = resolve_user(Some(&u), PASSWD, GROUP).expect("alice");
        assert_eq!((r.uid, r.gid), (1000, 100));
        assert_eq!(r.home, Path::new("/home/alice"));
        assert_eq!(r.groups, [100, 10, 29]);
        let u = User {
            user: UserSpec::Id(4242),
            group: Some(UserSpec::Name("wheel".into())),
        };
        let r = resolve_user(Some(&u), PASSWD, GROUP).expect("numeric");
        assert_eq!((r.uid, r.gid, r.home.as_path()), (4242, 10, Path::new("/")));
        let u = User {
            user: UserSpec::Name("nobody".into()),
            group: None,
        };
        let e = resolve_user(Some(&u), PASSWD, GROUP).expect_err("unknown");
        assert!(e.to_string().contains("-u nobody"), "{e}");
    }

    #[test]
    fn hosts_names_the_container() {
        assert!(hosts("box").ends_with("127.0.1.1\tbox\n"));
        assert!(hosts("box").starts_with("127.0.0.1\tlocalhost\n"));
    }
}
