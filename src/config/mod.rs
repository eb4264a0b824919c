//! A validated mount configuration. Everything a user can get wrong is checked here, before
//! anything is mounted, and reported with the path and the reason.

pub mod lowers;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// A validated mount and how to run it: what `unionfuse mount` and the fuse-overlayfs form
/// both produce.
pub struct MountCommand {
    pub config: MountConfig,
    pub foreground: bool,
    pub verbose: u8,
}

#[derive(Clone, Debug)]
pub struct MountConfig {
    /// Lower layers, top-first, canonical.
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub mountpoint: PathBuf,
    pub read_only: bool,
    pub allow_other: bool,
    pub default_permissions: bool,
    /// fsync copied-up files before linking them in (kernel overlay's default; `volatile` off).
    pub fsync: bool,
    /// Overlay metadata in `user.overlay.*` instead of `trusted.overlay.*`.
    pub userxattr: bool,
    pub threads: usize,
    /// Kernel entry/attribute cache lifetime.
    pub ttl: Duration,
    /// Use FUSE passthrough for file data when the kernel and our privileges allow it.
    pub passthrough: bool,
    /// Fault injection for tests: a lookup of this name panics inside the request handler.
    pub panic_on: Option<String>,
    /// Read `.wh.` whiteout files as whiteouts (fuse-overlayfs compatibility).
    pub aufs_whiteouts: bool,
    /// Keep owner and mode changes in the upper in this xattr (`xattr_permissions=`).
    pub override_stat: Option<String>,
    /// `uidmapping=`: owners as seen through the mount (container ids) <-> owners in the layers
    /// (host ids). Empty: ids pass through unchanged. Validated: no overlap on either side.
    pub uid_map: Vec<IdRange>,
    /// `gidmapping=`, as `uid_map`.
    pub gid_map: Vec<IdRange>,
    /// `squash_to_uid=` (or 0 from `squash_to_root`): every object appears owned by this uid,
    /// and chown requests succeed without changing the layers (fuse-overlayfs's rule).
    pub squash_uid: Option<u32>,
    /// `squash_to_gid=` (or 0 from `squash_to_root`), as `squash_uid`.
    pub squash_gid: Option<u32>,
    /// `static_nlink`: directories report st_nlink 1 instead of a counted value.
    pub static_nlink: bool,
    /// POSIX ACL support was not disabled with `noacl`.
    pub acl: bool,
    /// The mount's source name in /proc/mounts (`fsname=`; "unionfuse" by default).
    pub fsname: String,
    /// Honour setuid bits / device nodes / exec on the mount (mount(8)'s suid, dev, exec).
    pub suid: bool,
    pub dev: bool,
    pub exec: bool,
    /// Options accepted for compatibility that change nothing here, for a debug log line.
    pub ignored: Vec<String>,
}

/// One range of an id mapping: `count` ids from `container` (as seen through the mount) are
/// the ids from `host` in the layers. fuse-overlayfs's and containers-storage's
/// `container:host:count` triple; the same shape as a line of /proc/PID/uid_map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub count: u32,
}

/// The container id of a layer's `host` id, if the mapping covers it.
pub fn map_to_container(map: &[IdRange], host: u32) -> Option<u32> {
    map.iter()
        .find(|r| host >= r.host && u64::from(host) < u64::from(r.host) + u64::from(r.count))
        .map(|r| host - r.host + r.container)
}

/// The layer (host) id of a `container` id, if the mapping covers it.
pub fn map_to_host(map: &[IdRange], container: u32) -> Option<u32> {
    map.iter()
        .find(|r| {
            container >= r.container
                && u64::from(container) < u64::from(r.container) + u64::from(r.count)
        })
        .map(|r| container - r.container + r.host)
}

/// Options given with `-o`, before validation. Later occurrences of an option override
/// earlier ones, as with fuse-overlayfs and mount(8).
#[derive(Clone, Debug, Default)]
pub struct MountOpts {
    pub read_only: bool,
    pub allow_other: bool,
    pub no_default_permissions: bool,
    pub volatile: bool,
    pub userxattr: Option<bool>,
    pub threads: Option<usize>,
    pub ttl: Option<Duration>,
    pub no_passthrough: bool,
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
            ("allow_other", None) => self.allow_other = true,
            ("default_permissions", None) => self.no_default_permissions = false,
            ("nodefault_permissions", None) => self.no_default_permissions = true,
            ("volatile", None) => self.volatile = true,
            ("fsync", Some("0")) => self.volatile = true,
            ("fsync", Some("1")) => self.volatile = false,
            ("fsync", _) => return Err(bad("fsync takes 0 or 1")),
            ("userxattr", None) => self.userxattr = Some(true),
            ("passthrough", None) => self.no_passthrough = false,
            ("nopassthrough", None) => self.no_passthrough = true,
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
            // Testing hook (tests/mount_basic.rs): proves a panicking handler answers EIO and
            // leaves the mount serving.
            ("debug_panic_on", Some(v)) => self.panic_on = Some(v.to_string()),
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
            // Kernel overlay features unionfuse does not implement: accept only "off".
            ("redirect_dir", Some("off" | "nofollow")) => self.ignored.push(opt.to_string()),
            ("index" | "metacopy" | "nfs_export", Some("off")) => {
                self.ignored.push(opt.to_string())
            }
            ("redirect_dir", Some(_)) => {
                return Err(bad(
                    "unsupported: unionfuse does not write or follow redirects \
                     (use redirect_dir=off; renaming a merged directory gives EXDEV)",
                ));
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
            "{v:?}: expected container:host:count triples joined by ':'"
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
        let r = IdRange {
            container: num(t[0])?,
            host: num(t[1])?,
            count: num(t[2])?,
        };
        let what = format!("{}:{}:{}", r.container, r.host, r.count);
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
                    "{what}: container ids overlap the range {}:{}:{}",
                    o.container, o.host, o.count
                ));
            }
            if overlaps(r.host, o.host, o.count) {
                return Err(format!(
                    "{what}: host ids overlap the range {}:{}:{}",
                    o.container, o.host, o.count
                ));
            }
        }
        map.push(r);
    }
    Ok(map)
}

fn canonical(path: &Path, what: &str) -> Result<PathBuf> {
    let p = std::fs::canonicalize(path).map_err(|e| {
        let reason = match e.raw_os_error() {
            Some(libc::ENOENT) => format!("{what} does not exist"),
            _ => format!("cannot resolve {what}: {e}"),
        };
        Error::config(path, reason)
    })?;
    let md = std::fs::metadata(&p).map_err(|e| Error::config(path, e.to_string()))?;
    if !md.is_dir() {
        return Err(Error::config(path, format!("{what} is not a directory")));
    }
    Ok(p)
}

/// Is `a` inside `b` (or the same)?
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

impl MountConfig {
    pub fn new(
        lowers: &[PathBuf],
        upper: Option<&Path>,
        workdir: Option<&Path>,
        mountpoint: &Path,
        opts: MountOpts,
    ) -> Result<MountConfig> {
        if opts.lowerdir.is_some() || opts.upperdir.is_some() || opts.workdir.is_some() {
            return Err(Error::config(
                "-o",
                "lowerdir=, upperdir= and workdir= belong to the fuse-overlayfs form \
                 (unionfuse -o lowerdir=L1:L2,upperdir=U,workdir=W MNT); \
                 `unionfuse mount` takes the layers as arguments",
            ));
        }
        if lowers.is_empty() {
            return Err(Error::config(
                "lowerdir",
                "at least one lower layer is needed",
            ));
        }
        let lowers: Vec<PathBuf> = lowers
            .iter()
            .map(|l| canonical(l, "lower layer"))
            .collect::<Result<_>>()?;
        let upper = upper.map(|u| canonical(u, "upper layer")).transpose()?;
        let mountpoint = canonical(mountpoint, "mountpoint")?;
        for l in &lowers {
            if let Some(u) = &upper
                && (within(u, l) || within(l, u))
            {
                return Err(Error::config(
                    u,
                    format!("upper layer overlaps lower layer {}", l.display()),
                ));
            }
        }
        // The daemon must never touch its own mountpoint: a layer below it would deadlock.
        for layer in lowers.iter().chain(upper.iter()) {
            if within(&mountpoint, layer) || within(layer, &mountpoint) {
                return Err(Error::config(
                    &mountpoint,
                    format!("mountpoint overlaps layer {}", layer.display()),
                ));
            }
        }
        if is_mountpoint(&mountpoint)? {
            return Err(Error::config(
                &mountpoint,
                "mountpoint is already a mount (in use)",
            ));
        }
        let workdir = match &upper {
            None => None,
            Some(u) => {
                let w = match workdir {
                    Some(w) => w.to_path_buf(),
                    None => default_workdir(u),
                };
                std::fs::create_dir_all(&w)
                    .map_err(|e| Error::config(&w, format!("cannot create work dir: {e}")))?;
                let w = canonical(&w, "work dir")?;
                for layer in lowers.iter().chain(std::iter::once(u)).chain([&mountpoint]) {
                    if within(&w, layer) || within(layer, &w) {
                        return Err(Error::config(
                            &w,
                            format!("work dir overlaps {}", layer.display()),
                        ));
                    }
                }
                Some(w)
            }
        };
        let privileged = initial_ns_root();
        let read_only = opts.read_only || upper.is_none();
        let root = crate::sys::geteuid() == 0;
        // squash_to_uid/gid win over squash_to_root, as in fuse-overlayfs.
        let squash_root = opts.squash_to_root.then_some(0);
        Ok(MountConfig {
            lowers,
            upper,
            workdir,
            mountpoint,
            read_only,
            allow_other: opts.allow_other,
            default_permissions: !opts.no_default_permissions,
            fsync: !opts.volatile,
            userxattr: opts.userxattr.unwrap_or(!privileged),
            threads: opts.threads.unwrap_or_else(default_threads),
            ttl: opts.ttl.unwrap_or(Duration::from_secs(86400)),
            passthrough: !opts.no_passthrough,
            panic_on: opts.panic_on.clone(),
            aufs_whiteouts: opts.aufs_whiteouts,
            override_stat: opts.override_stat.clone(),
            uid_map: opts.uid_map.unwrap_or_default(),
            gid_map: opts.gid_map.unwrap_or_default(),
            squash_uid: opts.squash_uid.or(squash_root),
            squash_gid: opts.squash_gid.or(squash_root),
            static_nlink: opts.static_nlink,
            acl: !opts.noacl,
            fsname: opts.fsname.unwrap_or_else(|| "unionfuse".into()),
            // A container root needs device nodes and setuid binaries, as on kernel overlay;
            // only root may ask for them.
            suid: opts.suid.unwrap_or(root),
            dev: opts.dev.unwrap_or(root),
            exec: opts.exec.unwrap_or(true),
            ignored: opts.ignored,
        })
    }
}

/// `UPPER/../.<name>.unionfuse-work`: on the upper's filesystem in the common case, and outside
/// the merged view.
pub fn default_workdir(upper: &Path) -> PathBuf {
    let name = upper
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    upper
        .parent()
        .unwrap_or(Path::new("/"))
        .join(format!(".{name}.unionfuse-work"))
}

/// Overlay's metadata goes in trusted.* when we are root in the initial user namespace (the
/// only place trusted.* is writable), else in user.* as kernel overlay's `userxattr` does.
pub fn initial_ns_root() -> bool {
    if crate::sys::geteuid() != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(m) => m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"],
        Err(_) => true,
    }
}

fn default_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2)
        .clamp(2, 8)
}

/// Is `path` the mount point of some mount? (`/proc/self/mountinfo`, octal escapes decoded.)
pub fn is_mountpoint(path: &Path) -> Result<bool> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::config("/proc/self/mountinfo", e.to_string()))?;
    let want = path.as_os_str().as_encoded_bytes();
    Ok(info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| unescape_mount(m) == want))
}

fn unescape_mount(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject_unknown() {
        let mut o = MountOpts::default();
        o.parse_into("ro,,allow_other,volatile,timeout=0.5,threads=4")
            .expect("valid options");
        assert!(o.read_only && o.allow_other && o.volatile);
        assert_eq!(o.ttl, Some(Duration::from_millis(500)));
        assert_eq!(o.threads, Some(4));
        let err = MountOpts::default()
            .parse_into("bogus")
            .expect_err("unknown option");
        assert!(err.to_string().contains("bogus"), "{err}");
        assert!(MountOpts::default().parse_into("threads=0").is_err());
        assert!(MountOpts::default().parse_into("timeout=x").is_err());
    }

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mount("/a\\040b"), b"/a b");
        assert_eq!(unescape_mount("/plain"), b"/plain");
    }

    #[test]
    fn overlapping_layers_are_refused_with_the_path() {
        let t = tempfile::tempdir().expect("tempdir");
        let lower = t.path().join("lower");
        let mnt = t.path().join("mnt");
        std::fs::create_dir_all(lower.join("up")).expect("mkdir");
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let err = MountConfig::new(
            std::slice::from_ref(&lower),
            Some(&lower.join("up")),
            None,
            &mnt,
            MountOpts::default(),
        )
        .expect_err("upper inside lower");
        assert!(err.to_string().contains("overlaps"), "{err}");
        let err = MountConfig::new(
            &[t.path().join("missing")],
            None,
            None,
            &mnt,
            MountOpts::default(),
        )
        .expect_err("missing lower");
        assert!(err.to_string().contains("missing") && err.to_string().contains("does not exist"));
        let err = MountConfig::new(
            std::slice::from_ref(&lower),
            None,
            None,
            &lower.join("up"),
            MountOpts::default(),
        )
        .expect_err("mountpoint inside a layer");
        assert!(err.to_string().contains("overlaps"), "{err}");
    }
}
