//! Tree snapshots: walk a directory with `*at` calls (never following symlinks, names as bytes,
//! deeper than PATH_MAX is fine) into a `Tree` that can be normalized and diffed readably.
//! `Tree::layer_digest` records everything on disk, to prove a lower layer was not modified.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::sys;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    CharDev,
    BlockDev,
    Socket,
}

impl Kind {
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => Kind::File,
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFCHR => Kind::CharDev,
            libc::S_IFBLK => Kind::BlockDev,
            libc::S_IFSOCK => Kind::Socket,
            other => panic!("unknown file type {other:o}"),
        }
    }
}

/// One object in a snapshot. `None` fields were not recorded (or normalized away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits incl. setuid/setgid/sticky (`mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size for non-directories.
    pub size: Option<u64>,
    /// FNV-1a 64 of the contents of regular files.
    pub content: Option<u64>,
    pub target: Option<Vec<u8>>,
    /// (major, minor) of device nodes.
    pub rdev: Option<(u32, u32)>,
    /// Sorted (name, value) pairs; only `user.*` unless the snapshot asked for all.
    pub xattrs: Vec<(String, Vec<u8>)>,
    /// Link count for non-directories (and directories in a layer digest).
    pub nlink: Option<u64>,
    /// (sec, nsec); recorded for every object, drop it with `Tree::normalize` where unwanted.
    pub mtime: Option<(i64, i64)>,
    /// Real (dev, ino) of the object when snapshotted; never compared, used for link groups.
    pub ino: (u64, u64),
}

/// What a snapshot records beyond the always-compared fields.
#[derive(Debug, Clone, Copy)]
pub struct SnapOpts {
    /// Every xattr (trusted.*, security.* too) instead of only `user.*`.
    pub all_xattrs: bool,
    /// nlink of directories too.
    pub dir_nlink: bool,
}

impl SnapOpts {
    /// What a user of a merged view compares: user.* xattrs (but the overlay's private
    /// user.overlay.* in the unprivileged modes), no directory nlink.
    pub const VIEW: SnapOpts = SnapOpts {
        all_xattrs: false,
        dir_nlink: false,
    };
    /// Everything on disk: for layer digests.
    pub const DISK: SnapOpts = SnapOpts {
        all_xattrs: true,
        dir_nlink: true,
    };
}

#[derive(Clone, PartialEq, Eq)]
pub struct Tree {
    /// Relative paths; the root is the empty path.
    pub entries: BTreeMap<PathBuf, Entry>,
}

/// The content hash `Entry::content` holds for these bytes.
pub fn content_hash(data: &[u8]) -> u64 {
    let mut h = 0xcbf29ce484222325u64;
    fnv1a(&mut h, data);
    h
}

fn fnv1a(hash: &mut u64, data: &[u8]) {
    for b in data {
        *hash ^= u64::from(*b);
        *hash = hash.wrapping_mul(0x100000001b3);
    }
}

fn proc_path(dir: &OwnedFd, name: &OsStr) -> PathBuf {
    Path::new(&format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name)
}

fn read_xattrs(p: &Path, all: bool) -> Vec<(String, Vec<u8>)> {
    let private = super::mode::overlay_prefix();
    let names = match sys::llistxattr(p) {
        Ok(n) => n,
        Err(libc::EOPNOTSUPP) => return Vec::new(),
        Err(e) => panic!("llistxattr {}: {}", p.display(), sys::errno_name(e)),
    };
    names
        .into_iter()
        // Without `all`: what users see, so not the overlay's own user.overlay.* of the
        // unprivileged modes (its trusted.overlay.* as root is outside user.* anyway). That
        // the merged view hides them is checked by listxattr in mount_xattrs and hostile.
        .filter(|n| all || (n.starts_with("user.") && !n.starts_with(private)))
        .map(|n| {
            let v = sys::lgetxattr(p, &n).unwrap_or_else(|e| {
                panic!("lgetxattr {} {n}: {}", p.display(), sys::errno_name(e))
            });
            (n, v)
        })
        .collect()
}

fn hash_file(dir: &OwnedFd, name: &OsStr, rel: &Path) -> u64 {
    let fd = sys::openat(
        dir,
        name,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NOATIME,
        0,
    )
    .or_else(|_| sys::openat(dir, name, libc::O_RDONLY | libc::O_NOFOLLOW, 0))
    .unwrap_or_else(|e| panic!("open {} for hashing: {}", rel.display(), sys::errno_name(e)));
    let mut hash = 0xcbf29ce484222325u64;
    let mut off = 0i64;
    loop {
        let chunk = sys::pread(&fd, 1 << 20, off)
            .unwrap_or_else(|e| panic!("read {}: {}", rel.display(), sys::errno_name(e)));
        if chunk.is_empty() {
            return hash;
        }
        fnv1a(&mut hash, &chunk);
        off += chunk.len() as i64;
    }
}

fn entry_of(dir: &OwnedFd, name: &OsStr, rel: &Path, st: &libc::stat, opts: SnapOpts) -> Entry {
    let kind = Kind::from_mode(st.st_mode);
    let p = proc_path(dir, name);
    Entry {
        kind,
        mode: st.st_mode & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        size: (kind != Kind::Dir).then_some(st.st_size as u64),
        content: (kind == Kind::File).then(|| hash_file(dir, name, rel)),
        target: (kind == Kind::Symlink).then(|| {
            sys::readlinkat(dir, name)
                .unwrap_or_else(|e| panic!("readlink {}: {}", rel.display(), sys::errno_name(e)))
        }),
        rdev: matches!(kind, Kind::CharDev | Kind::BlockDev)
            .then(|| (libc::major(st.st_rdev), libc::minor(st.st_rdev))),
        xattrs: read_xattrs(&p, opts.all_xattrs),
        nlink: (kind != Kind::Dir || opts.dir_nlink).then_some(st.st_nlink),
        mtime: Some((st.st_mtime, st.st_mtime_nsec)),
        ino: (st.st_dev, st.st_ino),
    }
}

fn walk(dir: &OwnedFd, rel: &Path, opts: SnapOpts, out: &mut BTreeMap<PathBuf, Entry>) {
    let mut names = sys::read_dir_names(dir, false)
        .unwrap_or_else(|e| panic!("readdir {}: {}", rel.display(), sys::errno_name(e)));
    names.sort();
    for name in names {
        let name = OsStr::from_bytes(&name);
        let child = rel.join(name);
        let st = sys::fstatat(dir, name)
            .unwrap_or_else(|e| panic!("lstat {}: {}", child.display(), sys::errno_name(e)));
        let entry = entry_of(dir, name, &child, &st, opts);
        let is_dir = entry.kind == Kind::Dir;
        out.insert(child.clone(), entry);
        if is_dir {
            let sub = sys::openat(
                dir,
                name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            )
            .unwrap_or_else(|e| panic!("open dir {}: {}", child.display(), sys::errno_name(e)));
            walk(&sub, &child, opts, out);
        }
    }
}

impl Tree {
    /// Snapshot the tree under `root` (the root directory itself is the entry at "").
    pub fn snapshot(root: &Path, opts: SnapOpts) -> Tree {
        let fd = sys::open(root, libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .unwrap_or_else(|e| panic!("open {}: {}", root.display(), sys::errno_name(e)));
        let parent = sys::open(Path::new("/"), libc::O_RDONLY | libc::O_DIRECTORY, 0)
            .expect("open / for the root entry");
        let st = sys::fstat(&fd).expect("fstat snapshot root");
        let abs = root.canonicalize().expect("canonicalize snapshot root");
        let rel_to_slash = abs
            .strip_prefix("/")
            .expect("absolute path")
            .as_os_str()
            .to_owned();
        let mut root_entry = entry_of(&parent, &rel_to_slash, Path::new(""), &st, opts);
        root_entry.ino = (st.st_dev, st.st_ino);
        let mut entries = BTreeMap::new();
        entries.insert(PathBuf::new(), root_entry);
        walk(&fd, Path::new(""), opts, &mut entries);
        Tree { entries }
    }

    /// Everything about a layer on disk (all xattrs, whiteouts, mtimes, nlinks). Reading files
    /// uses O_NOATIME, so taking a digest does not itself change the layer.
    pub fn layer_digest(root: &Path) -> Tree {
        Tree::snapshot(root, SnapOpts::DISK)
    }

    pub fn get(&self, rel: impl AsRef<Path>) -> Option<&Entry> {
        self.entries.get(rel.as_ref())
    }

    /// Names directly under the root, in order.
    pub fn paths(&self) -> Vec<&Path> {
        self.entries.keys().map(PathBuf::as_path).collect()
    }

    /// Groups of paths (non-directories) that share one (dev, ino), each sorted, only groups of
    /// two or more.
    pub fn link_groups(&self) -> BTreeSet<Vec<PathBuf>> {
        let mut by_ino: BTreeMap<(u64, u64), Vec<PathBuf>> = BTreeMap::new();
        for (p, e) in &self.entries {
            if e.kind != Kind::Dir {
                by_ino.entry(e.ino).or_default().push(p.clone());
            }
        }
        by_ino.into_values().filter(|g| g.len() > 1).collect()
    }

    /// Apply `f` to every entry (to drop fields a comparison must not look at).
    pub fn normalize(mut self, mut f: impl FnMut(&Path, &mut Entry)) -> Tree {
        for (p, e) in self.entries.iter_mut() {
            f(p, e);
        }
        self
    }

    /// Readable description of every difference, or None if the trees are equal (link groups
    /// included when `links`).
    pub fn diff(&self, other: &Tree, links: bool) -> Option<String> {
        let mut out = String::new();
        let keys: BTreeSet<&PathBuf> = self.entries.keys().chain(other.entries.keys()).collect();
        for k in keys {
            match (self.entries.get(k), other.entries.get(k)) {
                (Some(a), None) => out += &format!("  only in left:  {}  {a}\n", show(k)),
                (None, Some(b)) => out += &format!("  only in right: {}  {b}\n", show(k)),
                (Some(a), Some(b)) => {
                    let fields = a.differences(b);
                    if !fields.is_empty() {
                        out += &format!("  differs: {}\n", show(k));
                        for f in fields {
                            out += &format!("      {f}\n");
                        }
                    }
                }
                (None, None) => unreachable!(),
            }
        }
        if links {
            let (la, lb) = (self.link_groups(), other.link_groups());
            if la != lb {
                out +=
                    &format!("  hard-link groups differ:\n    left:  {la:?}\n    right: {lb:?}\n");
            }
        }
        if out.is_empty() { None } else { Some(out) }
    }
}

impl fmt::Debug for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (p, e) in &self.entries {
            writeln!(f, "{}  {e}", show(p))?;
        }
        Ok(())
    }
}

/// A path for messages ("." for the root; non-UTF-8 bytes escaped).
pub fn show(p: &Path) -> String {
    if p.as_os_str().is_empty() {
        ".".to_string()
    } else {
        p.as_os_str().as_bytes().escape_ascii().to_string()
    }
}

impl Entry {
    /// Field-by-field differences (`ino` is never compared).
    pub fn differences(&self, o: &Entry) -> Vec<String> {
        let mut d = Vec::new();
        macro_rules! cmp {
            ($field:ident, $fmt:expr) => {
                if self.$field != o.$field {
                    d.push(format!(
                        "{}: {} != {}",
                        stringify!($field),
                        $fmt(&self.$field),
                        $fmt(&o.$field)
                    ));
                }
            };
        }
        cmp!(kind, |k: &Kind| format!("{k:?}"));
        cmp!(mode, |m: &u32| format!("{m:04o}"));
        cmp!(uid, |v: &u32| v.to_string());
        cmp!(gid, |v: &u32| v.to_string());
        cmp!(size, |v: &Option<u64>| format!("{v:?}"));
        cmp!(content, |v: &Option<u64>| format!("{v:x?}"));
        cmp!(target, |v: &Option<Vec<u8>>| format!(
            "{:?}",
            v.as_deref().map(lossy)
        ));
        cmp!(rdev, |v: &Option<(u32, u32)>| format!("{v:?}"));
        cmp!(xattrs, |v: &Vec<(String, Vec<u8>)>| format!(
            "{:?}",
            xattr_list(v)
        ));
        cmp!(nlink, |v: &Option<u64>| format!("{v:?}"));
        cmp!(mtime, |v: &Option<(i64, i64)>| format!("{v:?}"));
        d
    }
}

fn lossy(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

fn xattr_list(v: &[(String, Vec<u8>)]) -> Vec<String> {
    v.iter()
        .map(|(n, val)| format!("{n}={}", lossy(val)))
        .collect()
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} {:04o} {}:{}",
            self.kind, self.mode, self.uid, self.gid
        )?;
        if let Some(s) = self.size {
            write!(f, " size={s}")?;
        }
        if let Some(t) = &self.target {
            write!(f, " -> {}", lossy(t))?;
        }
        if let Some((ma, mi)) = self.rdev {
            write!(f, " rdev={ma}:{mi}")?;
        }
        if let Some(n) = self.nlink {
            write!(f, " nlink={n}")?;
        }
        if !self.xattrs.is_empty() {
            write!(f, " xattrs={:?}", xattr_list(&self.xattrs))?;
        }
        Ok(())
    }
}

/// Panic with a readable diff unless two trees are equal.
#[track_caller]
pub fn assert_trees_eq(what: &str, left: &Tree, right: &Tree, links: bool) {
    if let Some(d) = left.diff(right, links) {
        panic!("{what}: trees differ\n{d}\nleft tree:\n{left:?}\nright tree:\n{right:?}");
    }
}
/// Every entry under a directory (recursive, not following symlinks), as relative paths.
pub fn list_rel(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap_or(&p).to_path_buf());
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}
