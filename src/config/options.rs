//! The raw `-o` option parser: tokenizing an option list (commas, kernel-style backslash
//! escapes and double quotes), and each option's value (paths, ids, id maps, numbers). Pure:
//! no filesystem access; `validate` checks the result against the system.

use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

use super::lowers;
use crate::error::{Error, Result};
use crate::idmap::IdRange;

/// Options given with `-o`, before validation. Later occurrences of an option override
/// earlier ones, as with fuse-overlayfs and mount(8).
#[derive(Clone, Debug, Default)]
pub struct MountOpts {
    pub read_only: bool,
    /// `allow_other` / `noallow_other`; unset: on for root (see `validate`).
    pub allow_other: Option<bool>,
    pub no_default_permissions: bool,
    pub volatile: bool,
    pub userxattr: Option<bool>,
    pub threads: Option<usize>,
    pub ttl: Option<Duration>,
    pub no_passthrough: bool,
    /// `lowerpassthrough` / `nolowerpassthrough`: files still only in a lower may back
    /// passthrough too (readers that opened one before its copy-up keep its old data).
    pub no_lower_passthrough: bool,
    /// `writeback` / `nowriteback`: the kernel's writeback cache when passthrough is off.
    pub no_writeback: bool,
    /// `noopen` / `open`: the kernel opens regular files without asking when passthrough is
    /// off (copy-up at the first change instead of at an open for writing).
    pub no_open: bool,
    pub panic_on: Option<String>,
    /// Also read AUFS-style `.wh.NAME` / `.wh..wh..opq` whiteouts in the layers
    /// (containers-storage writes them for mount programs; fuse-overlayfs reads them).
    pub aufs_whiteouts: bool,
    /// `xattr_permissions=`: the override_stat xattr to keep in the upper.
    pub override_stat: Option<String>,
    /// `lowerdir=`, `upperdir=`, `workdir=`: only in the fuse-overlayfs form
    /// (`unionfuse mount` takes its layers as arguments).
    pub lowerdir: Option<Vec<PathBuf>>,
    pub upperdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub uid_map: Option<Vec<IdRange>>,
    pub gid_map: Option<Vec<IdRange>>,
    pub squash_to_root: bool,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
    pub static_nlink: bool,
    /// `redirect_dir=on|follow|nofollow|off` (kernel overlay's spelling); unset: follow.
    pub redirect_dir: Option<crate::union::RedirectDir>,
    pub noacl: bool,
    pub fsname: Option<String>,
    pub suid: Option<bool>,
    pub dev: Option<bool>,
    pub exec: Option<bool>,
    /// `debug` (fuse-overlayfs's spelling of `-d`): log at debug level.
    pub debug: bool,
    /// Accepted options that have no effect here (logged at debug level once logging is up).
    pub ignored: Vec<String>,
}

impl MountOpts {
    /// Parse one `-o` list. Items are separated by commas; empty items are ignored; a
    /// backslash escapes the next character and double quotes protect commas (SELinux
    /// `context="...:c1,c2"`), as the kernel's overlayfs option parser does. In paths, `\:`
    /// is a literal colon and `\,` a literal comma.
    pub fn parse_into(&mut self, list: &str) -> Result<()> {
        for opt in split_options(list)? {
            self.parse_one(&opt)?;
        }
        Ok(())
    }

    fn parse_one(&mut self, opt: &str) -> Result<()> {
        let (key, val) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt, None),
        };
        let bad = |why: &str| Error::config(opt, why.to_string());
        match (key, val) {
            ("ro", None) => self.read_only = true,
            ("rw", None) => self.read_only = false,
            ("allow_other", None) => self.allow_other = Some(true),
            ("noallow_other", None) => self.allow_other = Some(false),
            ("default_permissions", None) => self.no_default_permissions = false,
            ("nodefault_permissions", None) => self.no_default_permissions = true,
            ("volatile", None) => self.volatile = true,
            ("fsync", Some("0")) => self.volatile = true,
            ("fsync", Some("1")) => self.volatile = false,
            ("fsync", _) => return Err(bad("fsync takes 0 or 1")),
            ("userxattr", None) => self.userxattr = Some(true),
            ("passthrough", None) => self.no_passthrough = false,
            ("nopassthrough", None) => self.no_passthrough = true,
            ("lowerpassthrough", None) => self.no_lower_passthrough = false,
            ("nolowerpassthrough", None) => self.no_lower_passthrough = true,
            ("writeback", None) => self.no_writeback = false,
            ("nowriteback", None) => self.no_writeback = true,
            ("noopen", None) => self.no_open = true,
            ("open", None) => self.no_open = false,
            ("threads", Some(v)) => {
                let n: usize = v.parse().map_err(|_| bad("threads takes a number"))?;
                if n == 0 || n > 256 {
                    return Err(bad("threads must be between 1 and 256"));
                }
                self.threads = Some(n);
            }
            // fuse-overlayfs: single-threaded or not. Ours is always thread-safe, so this only
            // picks one worker or the default number.
            ("threaded", Some("0")) => self.threads = Some(1),
            ("threaded", Some("1")) => self.threads = None,
            ("threaded", _) => return Err(bad("threaded takes 0 or 1")),
            ("timeout", Some(v)) => {
                let s: f64 = v.parse().map_err(|_| bad("timeout takes seconds"))?;
                if !(0.0..=1e9).contains(&s) {
                    return Err(bad("timeout must be between 0 and 1e9 seconds"));
                }
                self.ttl = Some(Duration::from_secs_f64(s));
            }
            ("lowerdir", Some(v)) => self.lowerdir = Some(split_lowerdir(v).map_err(|w| bad(&w))?),
            ("upperdir", Some(v)) => self.upperdir = Some(path_value(v).map_err(|w| bad(&w))?),
            ("workdir", Some(v)) => self.workdir = Some(path_value(v).map_err(|w| bad(&w))?),
            ("uidmapping", Some(v)) => self.uid_map = Some(parse_id_map(v).map_err(|w| bad(&w))?),
            ("gidmapping", Some(v)) => self.gid_map = Some(parse_id_map(v).map_err(|w| bad(&w))?),
            ("squash_to_root", None) => self.squash_to_root = true,
            ("squash_to_uid", Some(v)) => self.squash_uid = Some(parse_id(v).map_err(|w| bad(&w))?),
            ("squash_to_gid", Some(v)) => self.squash_gid = Some(parse_id(v).map_err(|w| bad(&w))?),
            ("static_nlink", None) => self.static_nlink = true,
            ("noacl", None) => self.noacl = true,
            ("fsname", Some(v)) if !v.is_empty() => self.fsname = Some(unescape(v)),
            ("suid", None) => self.suid = Some(true),
            ("nosuid", None) => self.suid = Some(false),
            ("dev", None) => self.dev = Some(true),
            ("nodev", None) => self.dev = Some(false),
            ("exec", None) => self.exec = Some(true),
            ("noexec", None) => self.exec = Some(false),
            ("debug", None) => self.debug = true,
            // Testing hook (tests/mount_lifecycle.rs): proves a panicking handler answers EIO and
            // leaves the mount serving. Only in test builds: a user must not crash a daemon.
            #[cfg(feature = "fault-injection")]
            ("debug_panic_on", Some(v)) => self.panic_on = Some(v.to_string()),
            #[cfg(not(feature = "fault-injection"))]
            ("debug_panic_on", _) => {
                return Err(bad(
                    "a test hook, not built into this binary (cargo feature fault-injection)",
                ));
            }
            // Inode numbers are always derived xino-style (docs/architecture.md), which is what
            // every value asks for where the layers allow it.
            ("xino", Some("on" | "off" | "auto")) => self.ignored.push(opt.to_string()),
            ("xino", _) => return Err(bad("xino takes on, off or auto")),
            // SELinux labels come from the layers; a context for the whole mount is not applied.
            ("context" | "fscontext" | "defcontext" | "rootcontext", Some(_)) => {
                self.ignored.push(opt.to_string())
            }
            // Access times are the kernel's business on a FUSE mount; these only restate it.
            (
                "atime" | "noatime" | "relatime" | "strictatime" | "lazytime" | "diratime"
                | "nodiratime",
                None,
            ) => self.ignored.push(opt.to_string()),
            // Renames of directories with lower copies (`on`, the default) and following
            // redirects: kernel overlay's meanings (see `union::RedirectDir`).
            ("redirect_dir", Some(v)) => {
                self.redirect_dir = Some(
                    crate::union::RedirectDir::parse(v)
                        .ok_or_else(|| bad("redirect_dir takes on, follow, nofollow or off"))?,
                )
            }
            // Kernel overlay features unionfuse does not implement: accept only "off".
            ("index" | "metacopy" | "nfs_export", Some("off")) => {
                self.ignored.push(opt.to_string())
            }
            ("index" | "metacopy" | "nfs_export", Some(_)) => {
                return Err(bad(&format!("unsupported: unionfuse only does {key}=off")));
            }
            ("xattr_permissions", Some("0")) => self.override_stat = None,
            // Keep owners and modes the daemon cannot set in an xattr, as fuse-overlayfs
            // does: 1 in `security.fuseoverlayfs.override_stat` (root only), 2 in
            // `user.containers.override_stat`, which containers-storage uses.
            ("xattr_permissions", Some("1")) => {
                self.override_stat = Some(crate::layer::OVERRIDE_PRIVILEGED.to_string())
            }
            ("xattr_permissions", Some("2")) => {
                self.override_stat = Some(crate::layer::OVERRIDE_CONTAINERS.to_string())
            }
            ("xattr_permissions", Some(_)) => {
                return Err(bad("xattr_permissions takes 0, 1 or 2"));
            }
            (
                "lowerdir" | "upperdir" | "workdir" | "uidmapping" | "gidmapping" | "squash_to_uid"
                | "squash_to_gid" | "fsname" | "context",
                _,
            ) => return Err(bad(&format!("{key} needs a value ({key}=...)"))),
            _ => return Err(bad("unknown mount option")),
        }
        Ok(())
    }
}

/// Split an option list on commas that are neither escaped by a backslash nor inside double
/// quotes. Escapes and quotes are kept: each option's value is unescaped by its own parser,
/// so `lowerdir=/a\:b` can still tell an escaped colon from a separator.
pub fn split_options(list: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(Error::config(list, "unterminated double quote in options"));
    }
    out.push(cur);
    out.retain(|o| !o.is_empty());
    Ok(out)
}

/// Remove backslash escapes: `\x` is `x`.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

fn path_value(v: &str) -> std::result::Result<PathBuf, String> {
    let p = unescape(v);
    if p.is_empty() {
        return Err("empty path".into());
    }
    Ok(PathBuf::from(p))
}

/// `lowerdir=L1:L2:...`: the lower layer list (`lowers::parse`), minus fuse-overlayfs's
/// `//plugin/data/path` layers, which are refused.
pub fn split_lowerdir(v: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let layers = lowers::parse(std::ffi::OsStr::new(v))?;
    if let Some(p) = layers
        .iter()
        .find(|p| p.as_os_str().as_bytes().starts_with(b"//"))
    {
        return Err(format!(
            "{}: fuse-overlayfs plugin layers (//plugin/data/path) are not supported",
            p.display()
        ));
    }
    Ok(layers)
}

/// A uid or gid in decimal. 4294967295 is (uid_t)-1, "no change" to chown(2), never an owner.
fn parse_id(v: &str) -> std::result::Result<u32, String> {
    match v.parse::<u32>() {
        Ok(id) if id != u32::MAX && v.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(format!("{v:?} is not a valid id (0 to 4294967294)")),
    }
}

/// `container:host:count[:container:host:count...]`, fuse-overlayfs's and containers-storage's
/// form (all triples joined by ':'). Each range must be non-empty, stay below 4294967295 on both
/// sides, and overlap no other range on either side, so the mapping is a bijection as the
/// kernel requires of /proc/PID/uid_map.
pub fn parse_id_map(v: &str) -> std::result::Result<Vec<IdRange>, String> {
    let fields: Vec<&str> = v.split(':').collect();
    if v.is_empty() || !fields.len().is_multiple_of(3) {
        return Err(format!(
            "{v:?}: expected layer-id:mount-id:count triples joined by ':'"
        ));
    }
    let num = |f: &str| -> std::result::Result<u32, String> {
        if f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{f:?} is not a number"));
        }
        f.parse::<u32>().map_err(|_| format!("{f} is out of range"))
    };
    let mut map: Vec<IdRange> = Vec::new();
    for t in fields.chunks(3) {
        // fuse-overlayfs's order (containers-storage's ContainerID:HostID:Size): the id a
        // layer holds, then the id the mount shows for it.
        let r = IdRange {
            host: num(t[0])?,
            container: num(t[1])?,
            count: num(t[2])?,
        };
        let what = format!("{}:{}:{}", r.host, r.container, r.count);
        if r.count == 0 {
            return Err(format!("{what}: a range needs a count of at least 1"));
        }
        let end = |start: u32| u64::from(start) + u64::from(r.count);
        if end(r.container) > u64::from(u32::MAX) || end(r.host) > u64::from(u32::MAX) {
            return Err(format!("{what}: the range goes past id 4294967294"));
        }
        let overlaps = |a: u32, b: u32, n: u32| {
            u64::from(a) < u64::from(b) + u64::from(n)
                && u64::from(b) < u64::from(a) + u64::from(r.count)
        };
        for o in &map {
            if overlaps(r.container, o.container, o.count) {
                return Err(format!(
                    "{what}: ids seen through the mount overlap the range {}:{}:{}",
                    o.host, o.container, o.count
                ));
            }
            if overlaps(r.host, o.host, o.count) {
                return Err(format!(
                    "{what}: ids in the layers overlap the range {}:{}:{}",
                    o.host, o.container, o.count
                ));
            }
        }
        map.push(r);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject_unknown() {
        let mut o = MountOpts::default();
        o.parse_into("ro,,allow_other,volatile,timeout=0.5,threads=4")
            .expect("valid options");
        assert!(o.read_only && o.allow_other == Some(true) && o.volatile);
        assert_eq!(o.ttl, Some(Duration::from_millis(500)));
        assert_eq!(o.threads, Some(4));
        assert!(
            !o.no_open,
            "the kernel asks for every open unless told otherwise"
        );
        o.parse_into("noopen").expect("noopen");
        assert!(o.no_open);
        o.parse_into("open").expect("open");
        assert!(!o.no_open);
        let err = MountOpts::default()
            .parse_into("bogus")
            .expect_err("unknown option");
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(MountOpts::default().parse_into("threads=0").is_err());
        assert!(MountOpts::default().parse_into("timeout=x").is_err());
    }
}
