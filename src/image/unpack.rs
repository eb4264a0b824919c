//! Extract one layer tar into a directory, converting OCI whiteouts to kernel overlay's format
//! (`.wh.NAME` -> char device 0/0 NAME, `.wh..wh..opq` -> the opaque xattr on the directory).
//! Hostile archives can't write outside the directory: every entry is created with `*at` calls
//! relative to a directory fd reached one component at a time with O_NOFOLLOW, `..` and
//! absolute names are refused, and no symlink the archive made is ever followed (a path through
//! one is an error naming the entry). Hard links must point at an entry already in the layer.

use std::ffi::{CStr, CString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::sys::{self, Time};
use crate::whiteout::{TRUSTED_PREFIX, USER_PREFIX};

const WH_PREFIX: &[u8] = b".wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";

/// One directory whose mode and times are applied after its contents (creating entries
/// changes its mtime; a read-only mode would stop the extraction).
struct DirMeta {
    path: Vec<CString>,
    mode: u32,
    atime: Time,
    mtime: Time,
}

pub struct Unpacker {
    root: OwnedFd,
    /// The opaque xattr: kernel overlay's `trusted.` form as root of the initial namespace,
    /// its `userxattr` form otherwise (what a mount by the same user reads).
    opaque: CString,
    /// Root of the initial user namespace: owners, devices and trusted.* xattrs are kept.
    privileged: bool,
    dirs: Vec<DirMeta>,
    /// Device nodes not created (no privilege): counted for one warning.
    pub skipped_devices: u64,
    pub skipped_xattrs: u64,
}

type R<T> = std::result::Result<T, String>;

fn errno(e: &crate::error::Error) -> String {
    e.to_string()
}

/// A path from the archive as components. `.` and empty components vanish; `..` and absolute
/// paths are refused (docker strips a leading `/`; we refuse it: no well-formed layer has one).
pub fn components(raw: &[u8]) -> R<Vec<CString>> {
    if raw.first() == Some(&b'/') {
        return Err("absolute path".into());
    }
    let mut out = Vec::new();
    for c in raw.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err("'..' in path".into()),
            c => out.push(CString::new(c).map_err(|_| "NUL byte in path".to_string())?),
        }
    }
    Ok(out)
}

fn show(comps: &[CString]) -> String {
    comps
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

impl Unpacker {
    pub fn new(dir: &std::path::Path, privileged: bool) -> R<Unpacker> {
        let c = CString::new(dir.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
        let root = sys::open_path(&c, libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .map_err(|e| format!("open {}: {e}", dir.display()))?;
        let prefix = if privileged {
            TRUSTED_PREFIX
        } else {
            USER_PREFIX
        };
        let opaque = CString::new(format!("{prefix}opaque")).map_err(|e| e.to_string())?;
        Ok(Unpacker {
            root,
            opaque,
            privileged,
            // The root's mode when the archive has no "./" entry (one later overrides it).
            dirs: vec![DirMeta {
                path: vec![],
                mode: 0o755,
                atime: Time::Omit,
                mtime: Time::Omit,
            }],
            skipped_devices: 0,
            skipped_xattrs: 0,
        })
    }

    /// Open the directory at `comps` below the root, creating missing ones (0755) when `create`.
    /// Refuses symlinks and non-directories on the way.
    fn walk(&self, comps: &[CString], create: bool) -> R<OwnedFd> {
        let mut cur = sys::openat(
            self.root.as_fd(),
            sys::DOT,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
        .map_err(|e| errno(&e))?;
        for (i, c) in comps.iter().enumerate() {
            let next = match sys::open_dir_path(cur.as_fd(), c) {
                Ok(fd) => fd,
                Err(e) if e.is(libc::ENOENT) && create => {
                    sys::mkdirat(cur.as_fd(), c, 0o755)
                        .map_err(|e| format!("mkdir {}: {e}", show(&comps[..=i])))?;
                    sys::open_dir_path(cur.as_fd(), c).map_err(|e| errno(&e))?
                }
                Err(e) if e.is(libc::ENOENT) => {
                    return Err(format!(
                        "{} does not exist in the layer",
                        show(&comps[..=i])
                    ));
                }
                Err(e) => {
                    let st = sys::fstatat(cur.as_fd(), c).map_err(|e| errno(&e))?;
                    return Err(match st.st_mode & libc::S_IFMT {
                        libc::S_IFLNK => {
                            format!("path goes through the symlink {}", show(&comps[..=i]))
                        }
                        libc::S_IFDIR => format!("open {}: {e}", show(&comps[..=i])),
                        _ => format!("{} is not a directory", show(&comps[..=i])),
                    });
                }
            };
            cur = next;
        }
        Ok(cur)
    }

    /// Make room for a new entry `name` in `dir`: remove what is there, unless both are
    /// directories (a later entry of the same archive replaces an earlier one, as tar does).
    fn clear(&self, dir: BorrowedFd<'_>, name: &CStr, keep_dir: bool) -> R<bool> {
        match sys::fstatat_opt(dir, name).map_err(|e| errno(&e))? {
            None => Ok(false),
            Some(st) if keep_dir && st.st_mode & libc::S_IFMT == libc::S_IFDIR => Ok(true),
            Some(_) => crate::layer::remove_tree(dir, name)
                .map(|()| false)
                .map_err(|e| format!("remove the earlier entry: {e}")),
        }
    }

    /// Extract one entry. The error (without the entry's name: the caller adds it) says why.
    pub fn entry<Rd: Read>(&mut self, e: &mut tar::Entry<'_, Rd>) -> R<()> {
        let path = e.path_bytes().into_owned();
        let comps = components(&path)?;
        let kind = e.header().entry_type();
        let meta = Meta::of(e)?;
        let Some((name, parents)) = comps.split_last() else {
            // "./": the layer's root directory itself.
            if kind.is_dir() {
                let root = sys::openat(self.root.as_fd(), sys::DOT, libc::O_PATH, 0)
                    .map_err(|e| errno(&e))?;
                self.apply_owner_xattrs(root.as_fd(), sys::DOT, &meta)?;
                self.dirs.push(DirMeta {
                    path: vec![],
                    mode: meta.mode,
                    atime: meta.atime,
                    mtime: meta.mtime,
                });
            }
            return Ok(());
        };
        let parent = self.walk(parents, true)?;
        let pfd = parent.as_fd();
        let nb = name.to_bytes();

        if nb == WH_OPAQUE {
            sys::setxattrat(pfd, sys::DOT, &self.opaque, b"y", 0)
                .map_err(|e| format!("set the opaque xattr on {}: {e}", show(parents)))?;
            return Ok(());
        }
        if nb.starts_with(b".wh..wh.") {
            // aufs metadata (.wh..wh.plnk, .wh..wh.aufs): not part of the tree.
            return Ok(());
        }
        if let Some(hidden) = nb.strip_prefix(WH_PREFIX) {
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err("bad whiteout name".into());
            }
            let hidden = CString::new(hidden).map_err(|_| "NUL in name".to_string())?;
            self.clear(pfd, &hidden, false)?;
            crate::whiteout::make_whiteout(pfd, &hidden)
                .map_err(|e| format!("make whiteout {}: {e}", hidden.to_string_lossy()))?;
            return Ok(());
        }

        use tar::EntryType as T;
        match kind {
            T::Directory => {
                if !self.clear(pfd, name, true)? {
                    sys::mkdirat(pfd, name, 0o700).map_err(|e| format!("mkdir: {e}"))?;
                }
                self.apply_owner_xattrs(pfd, name, &meta)?;
                let mut p = parents.to_vec();
                p.push(name.clone());
                self.dirs.push(DirMeta {
                    path: p,
                    mode: meta.mode,
                    atime: meta.atime,
                    mtime: meta.mtime,
                });
            }
            T::Regular | T::Continuous | T::GNUSparse => {
                self.clear(pfd, name, false)?;
                let fd = sys::openat(
                    pfd,
                    name,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                    0o600,
                )
                .map_err(|e| format!("create: {e}"))?;
                let mut f = std::fs::File::from(fd);
                std::io::copy(e, &mut f).map_err(|e| format!("write data: {e}"))?;
                self.apply_owner_xattrs(pfd, name, &meta)?;
                sys::fchmodat(pfd, name, meta.mode).map_err(|e| format!("chmod: {e}"))?;
                sys::futimens(f.as_fd(), meta.atime, meta.mtime)
                    .map_err(|e| format!("set times: {e}"))?;
            }
            T::Symlink => {
                let target = e
                    .link_name_bytes()
                    .ok_or("symlink without a target")?
                    .into_owned();
                let target = CString::new(target).map_err(|_| "NUL in symlink target")?;
                self.clear(pfd, name, false)?;
                sys::symlinkat(&target, pfd, name).map_err(|e| format!("symlink: {e}"))?;
                self.apply_owner_xattrs(pfd, name, &meta)?;
                sys::utimensat(pfd, name, meta.atime, meta.mtime)
                    .map_err(|e| format!("set times: {e}"))?;
            }
            T::Link => {
                let target = e
                    .link_name_bytes()
                    .ok_or("hard link without a target")?
                    .into_owned();
                let tcomps = components(&target).map_err(|r| format!("hard link target: {r}"))?;
                let Some((tname, tparents)) = tcomps.split_last() else {
                    return Err("hard link to the layer's root".into());
                };
                let tdir = self
                    .walk(tparents, false)
                    .map_err(|r| format!("hard link target {}: {r}", show(&tcomps)))?;
                let st = sys::fstatat_opt(tdir.as_fd(), tname)
                    .map_err(|e| errno(&e))?
                    .ok_or_else(|| {
                        format!("hard link target {} is not in the layer", show(&tcomps))
                    })?;
                if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    return Err(format!("hard link to the directory {}", show(&tcomps)));
                }
                if let Some(cur) = sys::fstatat_opt(pfd, name).map_err(|e| errno(&e))? {
                    if cur.st_ino == st.st_ino && cur.st_dev == st.st_dev {
                        return Ok(());
                    }
                    self.clear(pfd, name, false)?;
                }
                sys::linkat(tdir.as_fd(), tname, pfd, name).map_err(|e| format!("link: {e}"))?;
            }
            T::Char | T::Block | T::Fifo => {
                let major = e.header().device_major().ok().flatten().unwrap_or(0);
                let minor = e.header().device_minor().ok().flatten().unwrap_or(0);
                let fmt = match kind {
                    T::Char => libc::S_IFCHR,
                    T::Block => libc::S_IFBLK,
                    _ => libc::S_IFIFO,
                };
                // char 0/0 is a whiteout: allowed without privilege (Linux 5.8+).
                let whiteout = kind == T::Char && major == 0 && minor == 0;
                if kind != T::Fifo && !whiteout && !self.privileged {
                    self.skipped_devices += 1;
                    return Ok(());
                }
                self.clear(pfd, name, false)?;
                let dev = libc::makedev(major, minor);
                sys::mknodat(pfd, name, fmt | (meta.mode & 0o7777), dev)
                    .map_err(|e| format!("mknod: {e}"))?;
                self.apply_owner_xattrs(pfd, name, &meta)?;
                sys::fchmodat(pfd, name, meta.mode).map_err(|e| format!("chmod: {e}"))?;
                sys::utimensat(pfd, name, meta.atime, meta.mtime)
                    .map_err(|e| format!("set times: {e}"))?;
            }
            other => {
                tracing::debug!(kind = ?other, "skipping a tar entry of this type");
            }
        }
        Ok(())
    }

    fn apply_owner_xattrs(&mut self, dir: BorrowedFd<'_>, name: &CStr, m: &Meta) -> R<()> {
        if self.privileged {
            sys::fchownat(dir, name, m.uid, m.gid).map_err(|e| format!("chown: {e}"))?;
        }
        for (k, v) in &m.xattrs {
            let kb = k.to_bytes();
            // Overlay's own metadata comes only from .wh. markers: a layer must not forge an
            // opaque flag, a redirect or an origin.
            if kb.starts_with(TRUSTED_PREFIX.as_bytes()) || kb.starts_with(USER_PREFIX.as_bytes()) {
                self.skipped_xattrs += 1;
                continue;
            }
            match sys::setxattrat(dir, name, k, v, 0) {
                Ok(()) => {}
                Err(e) if !self.privileged || e.is(libc::EOPNOTSUPP) || e.is(libc::EPERM) => {
                    tracing::debug!(xattr = %k.to_string_lossy(), error = %e, "xattr not kept");
                    self.skipped_xattrs += 1;
                }
                Err(e) => return Err(format!("set xattr {}: {e}", k.to_string_lossy())),
            }
        }
        Ok(())
    }

    /// Apply directory modes and times, deepest first, once everything is extracted.
    pub fn finish(&mut self) -> R<()> {
        let mut dirs = std::mem::take(&mut self.dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.path.len()));
        for d in dirs {
            let (dir, name): (OwnedFd, CString) = match d.path.split_last() {
                None => (
                    sys::openat(
                        self.root.as_fd(),
                        sys::DOT,
                        libc::O_PATH | libc::O_DIRECTORY,
                        0,
                    )
                    .map_err(|e| errno(&e))?,
                    sys::DOT.to_owned(),
                ),
                Some((n, p)) => (self.walk(p, false)?, n.clone()),
            };
            let what = if d.path.is_empty() {
                ".".into()
            } else {
                show(&d.path)
            };
            // A directory replaced by a later entry is no longer one: nothing to do.
            match sys::fstatat_opt(dir.as_fd(), &name).map_err(|e| errno(&e))? {
                Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
                _ => continue,
            }
            sys::fchmodat(dir.as_fd(), &name, d.mode).map_err(|e| format!("{what}: chmod: {e}"))?;
            sys::utimensat(dir.as_fd(), &name, d.atime, d.mtime)
                .map_err(|e| format!("{what}: set times: {e}"))?;
        }
        Ok(())
    }
}

/// An entry's metadata, PAX records winning over the header (large ids, sub-second times).
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    atime: Time,
    mtime: Time,
    xattrs: Vec<(CString, Vec<u8>)>,
}

fn pax_time(v: &[u8]) -> Option<Time> {
    let s = std::str::from_utf8(v).ok()?;
    let (sec, frac) = s.split_once('.').unwrap_or((s, ""));
    let sec: i64 = sec.parse().ok()?;
    let mut ns: i64 = 0;
    if !frac.is_empty() {
        let digits: String = frac.chars().take(9).collect();
        ns = format!("{digits:0<9}").parse().ok()?;
    }
    Some(Time::At(sec, ns))
}

impl Meta {
    fn of<Rd: Read>(e: &mut tar::Entry<'_, Rd>) -> R<Meta> {
        let h = e.header();
        let mode = h.mode().map_err(|e| format!("bad mode: {e}"))? & 0o7777;
        let mut uid = h.uid().map_err(|e| format!("bad uid: {e}"))?;
        let mut gid = h.gid().map_err(|e| format!("bad gid: {e}"))?;
        let mtime = Time::At(h.mtime().unwrap_or(0) as i64, 0);
        let mut m = Meta {
            mode,
            uid: 0,
            gid: 0,
            atime: mtime,
            mtime,
            xattrs: Vec::new(),
        };
        let mut atime = None;
        if let Some(pax) = e
            .pax_extensions()
            .map_err(|e| format!("bad PAX header: {e}"))?
        {
            for ext in pax {
                let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
                let key = ext.key_bytes();
                let v = ext.value_bytes();
                match key {
                    b"uid" => uid = parse_u64(v).ok_or("bad PAX uid")?,
                    b"gid" => gid = parse_u64(v).ok_or("bad PAX gid")?,
                    b"mtime" => m.mtime = pax_time(v).ok_or("bad PAX mtime")?,
                    b"atime" => atime = pax_time(v),
                    k => {
                        if let Some(name) = k.strip_prefix(b"SCHILY.xattr.") {
                            let name = CString::new(name).map_err(|_| "NUL in xattr name")?;
                            m.xattrs.push((name, v.to_vec()));
                        }
                    }
                }
            }
        }
        m.atime = atime.unwrap_or(m.mtime);
        m.uid = u32::try_from(uid).map_err(|_| "uid out of range")?;
        m.gid = u32::try_from(gid).map_err(|_| "gid out of range")?;
        Ok(m)
    }
}

fn parse_u64(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_paths_are_refused() {
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"..").is_err());
        let c = components(b"./a//b/./c").expect("plain path");
        assert_eq!(show(&c), "a/b/c");
        assert!(components(b"./").expect("root").is_empty());
    }

    #[test]
    fn pax_times_keep_nanoseconds() {
        assert!(matches!(pax_time(b"12.5"), Some(Time::At(12, 500_000_000))));
        assert!(matches!(pax_time(b"7"), Some(Time::At(7, 0))));
        assert!(pax_time(b"x").is_none());
    }
}
