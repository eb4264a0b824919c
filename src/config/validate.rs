//! Validation of a mount: canonical layer paths, no overlap between layers, work dir and
//! mountpoint, a mountpoint not already in use, and the defaults that depend on who we are.
//! No side effects: nothing is created here (the work dir is made by `layer::LayerStack::open`).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use super::{MountConfig, MountOpts};
use crate::error::{Error, Result};

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

/// `path` made absolute and free of symlinks, as `canonical`, when it may not exist yet: each
/// existing prefix is canonicalized, the missing rest is taken by name (as `mkdir -p` would
/// create it).
fn canonical_to_be(path: &Path, what: &str) -> Result<PathBuf> {
    if path.exists() {
        return canonical(path, what);
    }
    let abs = std::path::absolute(path).map_err(|e| Error::config(path, e.to_string()))?;
    let mut out = PathBuf::from("/");
    for comp in abs.components() {
        match comp {
            Component::Normal(name) => {
                out.push(name);
                if out.exists() {
                    out = std::fs::canonicalize(&out)
                        .map_err(|e| Error::config(path, format!("cannot resolve {what}: {e}")))?;
                }
            }
            // `out` is canonical, so its parent is the real `..`.
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Ok(out)
}

/// Is `a` inside `b` (or the same)?
fn within(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// Kernel overlay refuses a lower given twice ("conflicting lowerdir path") or one inside
/// another ("overlapping lowerdir path") with ELOOP: a layer seen through itself has no single
/// place in the stack, and a change to the outer one is a change under the inner. `lowers` are
/// canonical; the error names both paths.
fn check_lowers_disjoint(lowers: &[PathBuf]) -> Result<()> {
    for (i, a) in lowers.iter().enumerate() {
        for b in &lowers[i + 1..] {
            let reason = if a == b {
                "lower layer is given twice".to_owned()
            } else if within(b, a) {
                format!("lower layer contains lower layer {}", b.display())
            } else if within(a, b) {
                format!("lower layer is inside lower layer {}", b.display())
            } else {
                continue;
            };
            return Err(Error::config(a, reason));
        }
    }
    Ok(())
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
        check_lowers_disjoint(&lowers)?;
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
                // Made (if missing) when the layers are opened, not here.
                let w = canonical_to_be(&w, "work dir")?;
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
            // As kernel overlay, a mount serves every user (the kernel checks permissions:
            // default_permissions). An ordinary user's daemon only where fusermount3 allows
            // it (`user_allow_other` in /etc/fuse.conf); otherwise it would refuse to mount.
            allow_other: opts
                .allow_other
                .unwrap_or_else(|| root || fuse_conf_allows_other()),
            default_permissions: !opts.no_default_permissions,
            fsync: !opts.volatile,
            userxattr: opts.userxattr.unwrap_or(!privileged),
            threads: opts.threads.unwrap_or_else(default_threads),
            ttl: opts.ttl.unwrap_or(Duration::from_secs(86400)),
            passthrough: !opts.no_passthrough,
            lower_passthrough: !opts.no_passthrough && !opts.no_lower_passthrough && privileged,
            writeback: !opts.no_writeback,
            kernel_opens: opts.no_open,
            panic_on: opts.panic_on.clone(),
            aufs_whiteouts: opts.aufs_whiteouts,
            override_stat: opts.override_stat.clone(),
            uid_map: opts.uid_map.unwrap_or_default(),
            gid_map: opts.gid_map.unwrap_or_default(),
            squash_uid: opts.squash_uid.or(squash_root),
            squash_gid: opts.squash_gid.or(squash_root),
            static_nlink: opts.static_nlink,
            // `follow`, kernel overlay's module default: redirects written by others are followed,
            // none are made (a lower directory's rename answers EXDEV), as with fuse-overlayfs,
            // whose uppers podman's storage reads as a mount program's.
            redirect_dir: opts
                .redirect_dir
                .unwrap_or(crate::union::RedirectDir::Follow),
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

/// Does /etc/fuse.conf let ordinary users mount with `allow_other` (a `user_allow_other`
/// line)? fusermount3 refuses `allow_other` from them otherwise.
fn fuse_conf_allows_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf").is_ok_and(|conf| {
        conf.lines()
            .any(|l| l.split('#').next().unwrap_or("").trim() == "user_allow_other")
    })
}

/// `UPPER/../.<name>.unionfuse-work`: on the upper's filesystem in the common case, and outside
/// the merged view. Built from bytes: an upper whose name is not UTF-8 gets its own work dir.
pub fn default_workdir(upper: &Path) -> PathBuf {
    let mut name = std::ffi::OsString::from(".");
    name.push(upper.file_name().unwrap_or_default());
    name.push(".unionfuse-work");
    upper.parent().unwrap_or(Path::new("/")).join(name)
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

    #[test]
    fn a_lower_given_twice_or_nested_is_refused_naming_both() {
        let t = tempfile::tempdir().expect("tempdir");
        let base = t.path().canonicalize().expect("canonical");
        let (l1, l2, sub) = (base.join("l1"), base.join("l2"), base.join("l1/sub"));
        let mnt = base.join("mnt");
        for d in [&l2, &sub, &mnt] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        let refused = |lowers: &[&PathBuf]| {
            let lowers: Vec<PathBuf> = lowers.iter().map(|p| p.to_path_buf()).collect();
            MountConfig::new(&lowers, None, None, &mnt, MountOpts::default())
                .expect_err("overlapping lowers")
                .to_string()
        };
        let e = refused(&[&l1, &l2, &l1]);
        assert!(
            e.contains(&format!("{}: lower layer is given twice", l1.display())),
            "{e}"
        );
        let e = refused(&[&l1, &sub]);
        let both = format!(
            "{}: lower layer contains lower layer {}",
            l1.display(),
            sub.display()
        );
        assert!(e.contains(&both), "{e}");
        let e = refused(&[&sub, &l2, &l1]);
        let both = format!(
            "{}: lower layer is inside lower layer {}",
            sub.display(),
            l1.display()
        );
        assert!(e.contains(&both), "{e}");
        // The same directory through another spelling (a symlink, `..`) is the same layer.
        std::os::unix::fs::symlink(&l1, base.join("alias")).expect("symlink");
        let e = refused(&[&l1, &base.join("l2/../alias")]);
        assert!(e.contains("given twice"), "{e}");
        // Siblings whose names share a prefix do not overlap.
        let l1b = base.join("l1b");
        std::fs::create_dir(&l1b).expect("mkdir");
        MountConfig::new(&[l1.clone(), l1b], None, None, &mnt, MountOpts::default())
            .expect("l1 and l1b are disjoint");
    }

    #[test]
    fn validation_creates_no_work_dir() {
        let t = tempfile::tempdir().expect("tempdir");
        for d in ["lower", "upper", "mnt"] {
            std::fs::create_dir(t.path().join(d)).expect("mkdir");
        }
        let work = t.path().join("w/x/../work");
        let cfg = MountConfig::new(
            &[t.path().join("lower")],
            Some(&t.path().join("upper")),
            Some(&work),
            &t.path().join("mnt"),
            MountOpts::default(),
        )
        .expect("valid");
        let base = t.path().canonicalize().expect("canonical");
        assert_eq!(cfg.workdir, Some(base.join("w/work")));
        assert!(
            !t.path().join("w").exists(),
            "validation must not create the work dir"
        );
    }

    #[test]
    fn default_workdir_keeps_non_utf8_names() {
        use std::os::unix::ffi::OsStrExt;
        let upper = Path::new(std::ffi::OsStr::from_bytes(b"/x/up\xff"));
        assert_eq!(
            default_workdir(upper).as_os_str().as_bytes(),
            b"/x/.up\xff.unionfuse-work"
        );
        assert_eq!(
            default_workdir(Path::new("/x/up")),
            Path::new("/x/.up.unionfuse-work")
        );
    }
}
