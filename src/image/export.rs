//! A container's upper as changes: `diff` lists them as `docker diff` does (A added, C changed,
//! D deleted), `commit` writes them as an OCI layer tar (whiteouts as `.wh.NAME`, opaque
//! directories with `.wh..wh..opq`) and can store it as a new image over its base. Reads the
//! upper without following symlinks; overlay's private xattrs are never exported.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::store::Store;
use super::{ImageError, Result, normalize_name};
use crate::whiteout::{TRUSTED_PREFIX, USER_PREFIX};

/// One change, by container path (`/etc/motd`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub kind: char,
    pub path: String,
}

fn cpath(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| ImageError::new(format!("{}: NUL in path", p.display())))
}

fn xattr(p: &Path, name: &CStr) -> Option<Vec<u8>> {
    let c = cpath(p).ok()?;
    crate::sys::lgetxattr_vec(&c, name).ok().flatten()
}

fn is_opaque(p: &Path) -> bool {
    [c"trusted.overlay.opaque", c"user.overlay.opaque"]
        .iter()
        .any(|n| xattr(p, n).is_some_and(|v| v == b"y"))
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// Does a copy-up record say this came from a lower (kernel overlay's or ours)?
fn has_origin(p: &Path) -> bool {
    [
        c"trusted.overlay.origin",
        c"user.overlay.origin",
        c"trusted.overlay.unionfuse.origin",
        c"user.overlay.unionfuse.origin",
    ]
    .iter()
    .any(|n| xattr(p, n).is_some())
}

/// Is `rel` visible in the merged view of `lowers` (top-first)?
fn in_lowers(lowers: &[PathBuf], rel: &Path) -> Result<bool> {
    let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
        return Ok(false);
    };
    for (_, dir) in dir_copies(lowers, parent)? {
        if let Ok(m) = std::fs::symlink_metadata(dir.join(name)) {
            return Ok(!is_whiteout(&m));
        }
    }
    Ok(false)
}

/// The copies of the directory at `rel` (a path of the lowers' merged view) in `lowers`
/// (top-first), as kernel overlay merges them: (layer index, path). A whiteout, a
/// non-directory or an opaque copy ends a merge, and a redirect on a copy (an overlay upper
/// used as a lower) moves the layers below it to its target; paths are walked without
/// following symlinks. Empty when the lowers show no directory there.
fn dir_copies(lowers: &[PathBuf], rel: &Path) -> Result<Vec<(usize, PathBuf)>> {
    let mut copies: Vec<(usize, PathBuf)> = lowers.iter().cloned().enumerate().collect();
    for c in rel.components() {
        if copies.is_empty() {
            break;
        }
        copies = child_copies(lowers, &copies, c.as_os_str())?;
    }
    Ok(copies)
}

/// The copies of directory `name` whose parent's copies are `parent` (see `dir_copies`). A
/// relative redirect renames it for the parent's copies below; an absolute one makes the copies
/// below those of its path in the merged view of the layers below (kernel overlay walks that path
/// beneath each layer's root, following the redirects of the directories passed on the way, to
/// the same copies).
fn child_copies(
    lowers: &[PathBuf],
    parent: &[(usize, PathBuf)],
    name: &OsStr,
) -> Result<Vec<(usize, PathBuf)>> {
    let mut out = Vec::new();
    let mut name = name.to_owned();
    let first = parent.first().map_or(lowers.len(), |(i, _)| *i);
    for i in first..lowers.len() {
        let Some((_, dir)) = parent.iter().find(|(pi, _)| *pi == i) else {
            continue;
        };
        let p = dir.join(&name);
        let Ok(m) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if is_whiteout(&m) || !m.is_dir() {
            break;
        }
        out.push((i, p.clone()));
        if i + 1 == lowers.len() || is_opaque(&p) {
            break;
        }
        let Some(v) = redirect(&p) else {
            continue;
        };
        let os = |c: &CString| OsStr::from_bytes(c.to_bytes()).to_owned();
        match crate::lookup::LowerPath::parse(&v) {
            Some(crate::lookup::LowerPath::Name(n)) => name = os(&n),
            Some(crate::lookup::LowerPath::Abs(comps)) => {
                let target: PathBuf = comps.iter().map(os).collect();
                let below = dir_copies(&lowers[i + 1..], &target)?;
                out.extend(below.into_iter().map(|(j, d)| (i + 1 + j, d)));
                break;
            }
            None => {
                return Err(ImageError::new(format!(
                    "{}: redirect {:?} is not a path beneath the layers",
                    p.display(),
                    String::from_utf8_lossy(&v)
                )));
            }
        }
    }
    Ok(out)
}

/// What `unionfuse run` itself leaves in a container layer: the mount points it creates (empty
/// `/dev`, `/proc`, `/sys`, `/tmp`) and the empty targets of its /etc/hosts, /etc/hostname and
/// /etc/resolv.conf binds. Not the command's changes: diff and commit leave them out when the
/// image did not have them (docker keeps them in a separate init layer).
fn run_artifact(upper: &Path, rel: &Path, m: &std::fs::Metadata) -> bool {
    let s = rel.as_os_str().as_bytes();
    if m.is_dir() && [&b"dev"[..], b"proc", b"sys", b"tmp"].contains(&s) {
        return std::fs::read_dir(upper.join(rel)).is_ok_and(|mut d| d.next().is_none());
    }
    m.is_file()
        && m.len() == 0
        && [&b"etc/hosts"[..], b"etc/hostname", b"etc/resolv.conf"].contains(&s)
}

/// The entries of a directory, sorted by name (bytes).
fn sorted_dir(p: &Path) -> Result<Vec<std::fs::DirEntry>> {
    let mut v: Vec<_> = std::fs::read_dir(p)
        .map_err(|e| ImageError::io(format!("read {}", p.display()), &e))?
        .collect::<std::io::Result<_>>()
        .map_err(|e| ImageError::io(format!("read {}", p.display()), &e))?;
    v.sort_by(|a, b| a.file_name().as_bytes().cmp(b.file_name().as_bytes()));
    Ok(v)
}

/// `unionfuse diff`: changes in `upper`, sorted by path. With `lowers` (top-first) a name in
/// the upper is C when the lowers show it, else A; without, C when a copy-up left an origin
/// xattr. Below an opaque directory everything is A.
pub fn diff(upper: &Path, lowers: &[PathBuf]) -> Result<Vec<Change>> {
    let mut out = Vec::new();
    walk_diff(upper, Path::new(""), lowers, false, &mut out)?;
    Ok(out)
}

fn walk_diff(
    upper: &Path,
    rel: &Path,
    lowers: &[PathBuf],
    hidden: bool,
    out: &mut Vec<Change>,
) -> Result<()> {
    for ent in sorted_dir(&upper.join(rel))? {
        let r = rel.join(ent.file_name());
        let full = upper.join(&r);
        let m = std::fs::symlink_metadata(&full)
            .map_err(|e| ImageError::io(format!("stat {}", full.display()), &e))?;
        let path = format!("/{}", r.display());
        if is_whiteout(&m) {
            out.push(Change { kind: 'D', path });
            continue;
        }
        let existed = !hidden
            && if lowers.is_empty() {
                has_origin(&full)
            } else {
                in_lowers(lowers, &r)?
            };
        if !existed && run_artifact(upper, &r, &m) {
            continue;
        }
        if m.is_dir()
            && let Some(v) = redirect(&full)
        {
            // A moved lower directory: exported whole (opaque), so it is new with all it holds.
            let low = redirect_target(&full, (!hidden).then_some(rel), &v, lowers)?;
            let low = if is_opaque(&full) { None } else { low };
            out.push(Change { kind: 'A', path });
            diff_merged(&r, Some(&full), low.as_deref(), lowers, out)?;
            continue;
        }
        out.push(Change {
            kind: if existed { 'C' } else { 'A' },
            path,
        });
        if m.is_dir() {
            walk_diff(upper, &r, lowers, hidden || is_opaque(&full), out)?;
        }
    }
    Ok(())
}

/// The redirect an upper directory carries (kernel overlay's `redirect_dir`), either prefix.
fn redirect(p: &Path) -> Option<Vec<u8>> {
    [c"trusted.overlay.redirect", c"user.overlay.redirect"]
        .iter()
        .find_map(|n| xattr(p, n))
}

/// Where the lower copies of the upper directory `full` (at `rel`, its parent's lower copies at
/// `parent_low`) are, for a directory with a redirect: the old name in the parent's lower
/// copies (relative) or a path from each lower's root (absolute). Errors without lowers (the
/// layer would lose the moved directory's content) and on a value that is not a path beneath
/// the layers.
fn redirect_target(
    full: &Path,
    parent_low: Option<&Path>,
    value: &[u8],
    lowers: &[PathBuf],
) -> Result<Option<PathBuf>> {
    if lowers.is_empty() {
        return Err(ImageError::new(format!(
            "{}: has a redirect (a moved lower directory); pass --from or --lower so its lower content can be exported",
            full.display()
        )));
    }
    let bad = || {
        ImageError::new(format!(
            "{}: redirect {:?} is not a path beneath the layers",
            full.display(),
            String::from_utf8_lossy(value)
        ))
    };
    let (abs, rest) = match value.strip_prefix(b"/") {
        Some(r) => (true, r),
        None => (false, value),
    };
    if rest.is_empty() || (!abs && rest.contains(&b'/')) {
        return Err(bad());
    }
    let mut p = PathBuf::new();
    for c in rest.split(|&b| b == b'/').filter(|c| !c.is_empty()) {
        if c == b"." || c == b".." {
            return Err(bad());
        }
        p.push(OsStr::from_bytes(c));
    }
    if abs {
        Ok(Some(p))
    } else {
        Ok(parent_low.map(|l| l.join(p)))
    }
}

/// The merged lower entries of the directory at `rel` (top-first `lowers`): name -> the
/// topmost non-whiteout copy.
fn lower_entries(lowers: &[PathBuf], rel: &Path) -> Result<HashMap<Vec<u8>, PathBuf>> {
    let mut seen: HashMap<Vec<u8>, Option<PathBuf>> = HashMap::new();
    for (_, dir) in dir_copies(lowers, rel)? {
        for ent in sorted_dir(&dir)? {
            let name = ent.file_name().as_bytes().to_vec();
            if seen.contains_key(&name) {
                continue;
            }
            let full = dir.join(ent.file_name());
            let wh = std::fs::symlink_metadata(&full).is_ok_and(|m| is_whiteout(&m));
            seen.insert(name, (!wh).then_some(full));
        }
    }
    Ok(seen
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect())
}

/// One entry of a merged directory: its copy in the upper (if any) or in the lowers.
struct Merged {
    name: Vec<u8>,
    full: PathBuf,
    meta: std::fs::Metadata,
    /// Where its own lower copies are, when it is a directory that has some.
    low: Option<PathBuf>,
    /// Its copy is the upper's.
    in_upper: bool,
}

/// The full merged content of a directory whose upper copy is `up` (None: lower only) and whose
/// lower copies are at `low` in `lowers`, sorted by name: upper entries over the lower ones,
/// upper whiteouts hiding lower names, nested redirects followed.
fn merged_entries(
    up: Option<&Path>,
    low: Option<&Path>,
    lowers: &[PathBuf],
) -> Result<Vec<Merged>> {
    let mut lower = match low {
        Some(l) => lower_entries(lowers, l)?,
        None => HashMap::new(),
    };
    let mut out = Vec::new();
    if let Some(up) = up {
        for ent in sorted_dir(up)? {
            let name = ent.file_name().as_bytes().to_vec();
            let below = lower.remove(&name);
            let full = up.join(ent.file_name());
            let meta = std::fs::symlink_metadata(&full)
                .map_err(|e| ImageError::io(format!("stat {}", full.display()), &e))?;
            if is_whiteout(&meta) {
                continue;
            }
            let mut sub = None;
            if meta.is_dir() {
                let own = low.map(|l| l.join(ent.file_name()));
                sub = match redirect(&full) {
                    Some(v) => redirect_target(&full, low, &v, lowers)?,
                    None if below
                        .as_ref()
                        .and_then(|b| std::fs::symlink_metadata(b).ok())
                        .is_some_and(|m| m.is_dir()) =>
                    {
                        own
                    }
                    None => None,
                };
                if is_opaque(&full) {
                    sub = None;
                }
            }
            out.push(Merged {
                name,
                full,
                meta,
                low: sub,
                in_upper: true,
            });
        }
    }
    for (name, full) in lower {
        let meta = std::fs::symlink_metadata(&full)
            .map_err(|e| ImageError::io(format!("stat {}", full.display()), &e))?;
        let sub = meta
            .is_dir()
            .then(|| low.map(|l| l.join(OsStr::from_bytes(&name))))
            .flatten();
        out.push(Merged {
            name,
            full,
            meta,
            low: sub,
            in_upper: false,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// diff below a redirected directory: everything in its merged content is new.
fn diff_merged(
    rel: &Path,
    up: Option<&Path>,
    low: Option<&Path>,
    lowers: &[PathBuf],
    out: &mut Vec<Change>,
) -> Result<()> {
    for e in merged_entries(up, low, lowers)? {
        let r = rel.join(OsStr::from_bytes(&e.name));
        out.push(Change {
            kind: 'A',
            path: format!("/{}", r.display()),
        });
        if e.meta.is_dir() {
            let up = e.in_upper.then_some(e.full.as_path());
            diff_merged(&r, up, e.low.as_deref(), lowers, out)?;
        }
    }
    Ok(())
}

/// Counts and hashes what goes through it: the layer's diff_id.
struct HashWriter<W> {
    inner: W,
    h: Sha256,
    n: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.h.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Xattrs of `p` to export: everything except overlay's own; escaped user names
/// (`trusted.overlay.overlay.x`) are stored as what the user set (`trusted.overlay.x`).
fn export_xattrs(p: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let c = cpath(p)?;
    let names = crate::sys::llistxattr_vec(&c).unwrap_or_default();
    let mut out = Vec::new();
    for n in names {
        let Some(shown) = unescape(n.to_bytes()) else {
            continue;
        };
        if let Ok(Some(v)) = crate::sys::lgetxattr_vec(&c, &n) {
            out.push((
                format!("SCHILY.xattr.{}", String::from_utf8_lossy(&shown)),
                v,
            ));
        }
    }
    Ok(out)
}

/// The name a stored xattr had when set through a mount: overlay's escaping undone
/// (`trusted.overlay.overlay.x` -> `trusted.overlay.x`, as whiteout::Format::unescape in either
/// mode); None for overlay's own metadata (opaque, origin, redirect...).
fn unescape(stored: &[u8]) -> Option<Vec<u8>> {
    for prefix in [TRUSTED_PREFIX, USER_PREFIX] {
        if let Some(rest) = stored.strip_prefix(prefix.as_bytes()) {
            let rest = rest.strip_prefix(b"overlay.")?;
            let mut v = prefix.as_bytes().to_vec();
            v.extend_from_slice(rest);
            return Some(v);
        }
    }
    Some(stored.to_vec())
}

struct Exporter<W: Write> {
    tar: tar::Builder<HashWriter<W>>,
    links: HashMap<(u64, u64), PathBuf>,
    /// The image's layers (top-first), to keep run's artifacts out; empty: origin xattrs decide.
    lowers: Vec<PathBuf>,
    /// A stored image layer, not a container's: everything in it is content (`image save`).
    whole: bool,
}

fn header(m: &std::fs::Metadata, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(m.mode() & 0o7777);
    h.set_uid(m.uid() as u64);
    h.set_gid(m.gid() as u64);
    h.set_mtime(m.mtime().max(0) as u64);
    h.set_size(0);
    h
}

fn empty_file(mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_size(0);
    h
}

impl<W: Write> Exporter<W> {
    fn io(&self, what: &Path, e: std::io::Error) -> ImageError {
        ImageError::io(format!("write {}", what.display()), &e)
    }

    fn walk(&mut self, upper: &Path, rel: &Path) -> Result<()> {
        if is_opaque(&upper.join(rel)) {
            let mt = std::fs::symlink_metadata(upper.join(rel))
                .map(|m| m.mtime().max(0) as u64)
                .unwrap_or(0);
            let p = rel.join(".wh..wh..opq");
            let mut h = empty_file(mt);
            self.tar
                .append_data(&mut h, &p, std::io::empty())
                .map_err(|e| self.io(&p, e))?;
        }
        for ent in sorted_dir(&upper.join(rel))? {
            let r = rel.join(ent.file_name());
            let full = upper.join(&r);
            let m = std::fs::symlink_metadata(&full)
                .map_err(|e| ImageError::io(format!("stat {}", full.display()), &e))?;
            if !self.whole && run_artifact(upper, &r, &m) {
                let existed = if self.lowers.is_empty() {
                    has_origin(&full)
                } else {
                    in_lowers(&self.lowers, &r)?
                };
                if !existed {
                    continue;
                }
            }
            self.entry(upper, &r, &full, &m)?;
        }
        Ok(())
    }

    /// A redirected directory's content, written whole below an opaque marker (as
    /// containers-storage's naive diff would): its upper entries over its lower copies at `low`.
    fn merged(&mut self, r: &Path, up: Option<&Path>, low: Option<&Path>) -> Result<()> {
        let mt = match up {
            Some(u) => std::fs::symlink_metadata(u)
                .map(|m| m.mtime().max(0) as u64)
                .unwrap_or(0),
            None => 0,
        };
        let p = r.join(".wh..wh..opq");
        let mut h = empty_file(mt);
        self.tar
            .append_data(&mut h, &p, std::io::empty())
            .map_err(|e| self.io(&p, e))?;
        self.merged_content(r, up, low)
    }

    fn merged_content(&mut self, r: &Path, up: Option<&Path>, low: Option<&Path>) -> Result<()> {
        let lowers = self.lowers.clone();
        for e in merged_entries(up, low, &lowers)? {
            let er = r.join(OsStr::from_bytes(&e.name));
            if e.meta.is_dir() {
                self.dir_header(&er, &e.full, &e.meta)?;
                let up = e.in_upper.then_some(e.full.as_path());
                self.merged_content(&er, up, e.low.as_deref())?;
            } else {
                self.entry(Path::new(""), &er, &e.full, &e.meta)?;
            }
        }
        Ok(())
    }

    fn dir_header(&mut self, r: &Path, full: &Path, m: &std::fs::Metadata) -> Result<()> {
        let xattrs = export_xattrs(full)?;
        if !xattrs.is_empty() {
            self.tar
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.io(r, e))?;
        }
        let mut h = header(m, tar::EntryType::Directory);
        let mut p = r.as_os_str().to_os_string();
        p.push("/");
        self.tar
            .append_data(&mut h, Path::new(&p), std::io::empty())
            .map_err(|e| self.io(r, e))
    }

    fn entry(&mut self, upper: &Path, r: &Path, full: &Path, m: &std::fs::Metadata) -> Result<()> {
        use tar::EntryType as T;
        let ft = m.file_type();
        if is_whiteout(m) {
            let mut name = OsStr::new(".wh.").to_os_string();
            name.push(r.file_name().unwrap_or_default());
            let p = r.with_file_name(name);
            let mut h = empty_file(m.mtime().max(0) as u64);
            h.set_mode(0);
            return self
                .tar
                .append_data(&mut h, &p, std::io::empty())
                .map_err(|e| self.io(&p, e));
        }
        let xattrs = export_xattrs(full)?;
        if !xattrs.is_empty() {
            self.tar
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(|e| self.io(r, e))?;
        }
        if !ft.is_dir() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())).cloned() {
                let mut h = header(m, T::Link);
                return self
                    .tar
                    .append_link(&mut h, r, &first)
                    .map_err(|e| self.io(r, e));
            }
            self.links.insert((m.dev(), m.ino()), r.to_path_buf());
        }
        if ft.is_dir() {
            let mut h = header(m, T::Directory);
            let mut p = r.as_os_str().to_os_string();
            p.push("/");
            self.tar
                .append_data(&mut h, Path::new(&p), std::io::empty())
                .map_err(|e| self.io(r, e))?;
            if self.whole {
                return self.walk(upper, r);
            }
            return match redirect(full) {
                Some(v) => {
                    let parent = r.parent().unwrap_or(Path::new(""));
                    let low = redirect_target(full, Some(parent), &v, &self.lowers)?;
                    let low = if is_opaque(full) { None } else { low };
                    self.merged(r, Some(full), low.as_deref())
                }
                None => self.walk(upper, r),
            };
        }
        if ft.is_symlink() {
            let target = std::fs::read_link(full)
                .map_err(|e| ImageError::io(format!("readlink {}", full.display()), &e))?;
            let mut h = header(m, T::Symlink);
            return self
                .tar
                .append_link(&mut h, r, &target)
                .map_err(|e| self.io(r, e));
        }
        if ft.is_file() {
            let f = File::open(full)
                .map_err(|e| ImageError::io(format!("open {}", full.display()), &e))?;
            let mut h = header(m, T::Regular);
            h.set_size(m.len());
            return self
                .tar
                .append_data(&mut h, r, f)
                .map_err(|e| self.io(r, e));
        }
        let kind = if ft.is_char_device() {
            T::Char
        } else if ft.is_block_device() {
            T::Block
        } else if ft.is_fifo() {
            T::Fifo
        } else {
            // Sockets have no tar form (docker skips them too).
            return Ok(());
        };
        let mut h = header(m, kind);
        if kind != T::Fifo {
            let _ = h.set_device_major(libc::major(m.rdev()));
            let _ = h.set_device_minor(libc::minor(m.rdev()));
        }
        self.tar
            .append_data(&mut h, r, std::io::empty())
            .map_err(|e| self.io(r, e))
    }
}

/// Write `upper` as a layer tar to `out`. Returns (diff_id, size). `lowers` (top-first) are the
/// layers it ran on, if known.
pub fn write_layer<W: Write>(upper: &Path, lowers: &[PathBuf], out: W) -> Result<(String, u64)> {
    export_dir(upper, lowers, false, out)
}

/// Write a stored layer directory (overlay format) as a layer tar, all of it. Returns
/// (diff_id, size).
pub fn write_stored_layer<W: Write>(layer: &Path, out: W) -> Result<(String, u64)> {
    export_dir(layer, &[], true, out)
}

fn export_dir<W: Write>(
    upper: &Path,
    lowers: &[PathBuf],
    whole: bool,
    out: W,
) -> Result<(String, u64)> {
    let meta = std::fs::symlink_metadata(upper)
        .map_err(|e| ImageError::io(format!("{}", upper.display()), &e))?;
    if !meta.is_dir() {
        return Err(ImageError::new(format!(
            "{}: not a directory",
            upper.display()
        )));
    }
    let mut ex = Exporter {
        tar: tar::Builder::new(HashWriter {
            inner: out,
            h: Sha256::new(),
            n: 0,
        }),
        links: HashMap::new(),
        lowers: lowers.to_vec(),
        whole,
    };
    ex.tar.mode(tar::HeaderMode::Complete);
    ex.walk(upper, Path::new(""))?;
    let mut w = ex
        .tar
        .into_inner()
        .map_err(|e| ImageError::io("finish the layer tar", &e))?;
    w.flush()
        .map_err(|e| ImageError::io("finish the layer tar", &e))?;
    let hex: String = w.h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Ok((format!("sha256:{hex}"), w.n))
}

/// Write the layer to `path` atomically (a temp file beside it, renamed when complete).
pub fn write_layer_file(upper: &Path, lowers: &[PathBuf], path: &Path) -> Result<(String, u64)> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let res = (|| {
        let f = File::create(&tmp)
            .map_err(|e| ImageError::io(format!("create {}", tmp.display()), &e))?;
        let mut buf = std::io::BufWriter::with_capacity(1 << 20, f);
        let r = write_layer(upper, lowers, &mut buf)?;
        let f = buf
            .into_inner()
            .map_err(|e| ImageError::io(format!("write {}", tmp.display()), e.error()))?;
        f.sync_all()
            .map_err(|e| ImageError::io(format!("sync {}", tmp.display()), &e))?;
        std::fs::rename(&tmp, path)
            .map_err(|e| ImageError::io(format!("rename to {}", path.display()), &e))?;
        Ok(r)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Seconds since the epoch as RFC 3339 UTC (the config's `created`).
fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `commit --tag NAME:TAG [--from IMAGE]`: the layer in `tar_path` (diff_id `diff_id`) stored
/// as a new image whose config is the base's with this layer added.
pub fn commit_image(
    store: &Store,
    tar_path: &Path,
    diff_id: &str,
    from: Option<&str>,
    tag: &str,
) -> Result<super::import::Imported> {
    let mut config = match from {
        Some(f) => store.get(f)?.config,
        None => serde_json::json!({
            "architecture": super::import::host_arch(),
            "os": "linux",
            "config": {},
            "rootfs": {"type": "layers", "diff_ids": []},
        }),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let created = rfc3339(now);
    let ids = config["rootfs"]["diff_ids"]
        .as_array_mut()
        .ok_or_else(|| ImageError::new("base image config has no rootfs.diff_ids"))?;
    if ids.iter().any(|d| d == diff_id) {
        return Err(ImageError::new(format!(
            "the layer {diff_id} is already in the base image (nothing changed?)"
        )));
    }
    ids.push(diff_id.into());
    config["created"] = created.clone().into();
    if !config["history"].is_array() {
        config["history"] = serde_json::json!([]);
    }
    if let Some(h) = config["history"].as_array_mut() {
        h.push(serde_json::json!({"created": created, "created_by": "unionfuse commit"}));
    }
    super::import::import_layer_on(store, tar_path, diff_id, config, vec![normalize_name(tag)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_xattrs_are_not_exported() {
        assert_eq!(unescape(b"user.mime"), Some(b"user.mime".to_vec()));
        assert_eq!(unescape(b"trusted.overlay.opaque"), None);
        assert_eq!(unescape(b"user.overlay.unionfuse.origin"), None);
        assert_eq!(
            unescape(b"trusted.overlay.overlay.x"),
            Some(b"trusted.overlay.x".to_vec())
        );
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_767_225_599), "2025-12-31T23:59:59Z");
    }
}
