//! The user-facing values of `run`'s flags, parsed: `-v HOST:CTR[:ro]`, `--tmpfs CTR[:OPTS]`,
//! `-u USER[:GROUP]`, the hostname, and the absolute, `..`-free container paths they name.
//! Pure except for `-v`, which resolves its host path; the kernel is never asked anything.

use std::path::{Component, Path, PathBuf};

use crate::runtime::sys::{self, RunError, RunResult};

/// `-v HOST:CTR[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub ctr: PathBuf,
    pub read_only: bool,
    pub is_dir: bool,
}

/// `-u`: ids, or names to resolve in the rootfs's /etc/passwd and /etc/group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    Id(u32),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user: UserSpec,
    pub group: Option<UserSpec>,
}

/// `--tmpfs CTR[:OPTS]`: mount flags from OPTS' flag words, the rest as tmpfs's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    pub ctr: PathBuf,
    pub flags: u64,
    pub data: String,
}

/// podman's defaults for `--tmpfs` (rw,noexec,nosuid,nodev) changed by OPTS' flag words;
/// other options (size=, mode=, uid=, ...) go to the kernel, which checks them.
pub(super) fn parse_tmpfs(v: &str) -> RunResult<Tmpfs> {
    let (ctr, opts) = v.split_once(':').unwrap_or((v, ""));
    let ctr = absolute_clean(Path::new(ctr), "--tmpfs")?;
    if ctr == Path::new("/") {
        return Err(RunError::new(format!("--tmpfs {v}: not on /")));
    }
    let mut flags = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "rw" => flags &= !sys::MS_RDONLY,
            "ro" => flags |= sys::MS_RDONLY,
            "exec" => flags &= !sys::MS_NOEXEC,
            "noexec" => flags |= sys::MS_NOEXEC,
            "suid" => flags &= !sys::MS_NOSUID,
            "nosuid" => flags |= sys::MS_NOSUID,
            "dev" => flags &= !sys::MS_NODEV,
            "nodev" => flags |= sys::MS_NODEV,
            _ => data.push(o),
        }
    }
    Ok(Tmpfs {
        ctr,
        flags,
        data: data.join(","),
    })
}

pub(super) fn absolute_clean(p: &Path, what: &str) -> RunResult<PathBuf> {
    if !p.is_absolute() {
        return Err(RunError::new(format!(
            "{what} {}: must be an absolute path",
            p.display()
        )));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

pub(super) fn parse_volume(v: &str) -> RunResult<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, ctr, ro) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => {
            return Err(RunError::new(format!(
                "-v {v}: expected HOST:CTR or HOST:CTR:ro"
            )));
        }
    };
    let host = std::fs::canonicalize(host)
        .map_err(|e| RunError::io(format!("-v {v}: host path {host}"), &e))?;
    let is_dir = host.is_dir();
    let ctr = absolute_clean(Path::new(ctr), &format!("-v {v}: container path"))?;
    if ctr == Path::new("/") {
        return Err(RunError::new(format!("-v {v}: cannot bind over /")));
    }
    Ok(Bind {
        host,
        ctr,
        read_only: ro,
        is_dir,
    })
}

fn parse_spec(s: &str) -> UserSpec {
    match s.parse::<u32>() {
        Ok(n) => UserSpec::Id(n),
        Err(_) => UserSpec::Name(s.to_string()),
    }
}

pub(super) fn parse_user(s: &str) -> RunResult<User> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if u.is_empty() || g == Some("") {
        return Err(RunError::new(format!(
            "-u {s}: expected UID[:GID] or NAME[:GROUP]"
        )));
    }
    Ok(User {
        user: parse_spec(u),
        group: g.map(parse_spec),
    })
}

pub(super) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_parse_as_ids_or_names() {
        assert_eq!(
            parse_user("1000:50").expect("ids"),
            User {
                user: UserSpec::Id(1000),
                group: Some(UserSpec::Id(50))
            }
        );
        assert_eq!(
            parse_user("nobody").expect("name"),
            User {
                user: UserSpec::Name("nobody".into()),
                group: None
            }
        );
    }
}
