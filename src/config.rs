//! A validated mount configuration. Everything a user can get wrong is checked here, before
//! anything is mounted, and reported with the path and the reason.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

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
}

/// Options given with `-o`, before validation.
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
}

impl MountOpts {
    /// Parse one `-o` list (comma separated; empty items are ignored).
    pub fn parse_into(&mut self, list: &str) -> Result<()> {
        for opt in list.split(',').filter(|o| !o.is_empty()) {
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
                ("timeout", Some(v)) => {
                    let s: f64 = v.parse().map_err(|_| bad("timeout takes seconds"))?;
                    if !(0.0..=1e9).contains(&s) {
                        return Err(bad("timeout must be between 0 and 1e9 seconds"));
                    }
                    self.ttl = Some(Duration::from_secs_f64(s));
                }
                _ => return Err(bad("unknown mount option")),
            }
        }
        Ok(())
    }
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
        if lowers.is_empty() {
            return Err(Error::config("", "at least one lower layer is needed"));
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
fn initial_ns_root() -> bool {
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
