//! Model test of the core without FUSE: random layer stacks and random op sequences applied to
//! `unionfuse::union::Union` (built directly on temp dirs) and to a plain in-memory reference,
//! a `BTreeMap` of the merged tree. After every step the errno class and the whole merged view
//! (names, types, modes, owners, sizes, contents, symlink targets, user xattrs, link counts) must
//! match.
//!
//! The reference's initial tree comes from a deliberately naive merge of the layers on disk
//! (`reference_merge`: top-down lookup, whiteouts hide, non-directories stop, opaque stops), and
//! its ops are plain tree edits plus the overlay rules a user can see (`EXDEV` for renaming a
//! directory with lower content). The harness plays the kernel's VFS in front of the core: it
//! resolves paths with `lookup` and makes the checks the VFS makes before a request reaches a FUSE
//! filesystem (an existing target for create-like ops, rename's type and ancestor checks), so each
//! core method is called as FUSE would call it.
//!
//! Fast (no mounts): runs in `cargo test` on any machine, as root or not. Env:
//! `UNIONFUSE_MODEL_CASES` (default 200), `UNIONFUSE_MODEL_SEED`, `UNIONFUSE_MODEL_STATS=FILE`
//! (the summary line for scripts/test.sh).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};

use unionfuse::layer::LayerStack;
use unionfuse::union::{Creds, Options, SetAttr, Union};

use common::sys;
use common::{chmod, chown, env_num, make_whiteout, mkfifo, opaque_name, set_xattr};

const ROOT: u64 = 1;

fn creds() -> Creds {
    Creds {
        uid: sys::euid(),
        gid: sys::egid(),
    }
}

// ----- the reference: a plain merged tree ----------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    File(Vec<u8>),
    Dir,
    Symlink(Vec<u8>),
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Obj {
    kind: Kind,
    mode: u32,
    uid: u32,
    gid: u32,
    xattrs: BTreeMap<String, Vec<u8>>,
}

/// The merged view: path -> object id, object id -> object (hard links share an id). For each
/// directory, whether it has lower content (renaming it gives `EXDEV`).
#[derive(Clone, Debug, Default)]
struct Model {
    names: BTreeMap<String, u64>,
    objs: BTreeMap<u64, Obj>,
    lower_dirs: BTreeSet<String>,
    next: u64,
}

type Res<T = ()> = std::result::Result<T, i32>;

fn parent_of(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(d, _)| d)
}

fn is_under(p: &str, dir: &str) -> bool {
    p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/'
}

impl Model {
    fn obj(&self, p: &str) -> Option<&Obj> {
        self.names.get(p).map(|id| &self.objs[id])
    }

    /// ENOENT/ENOTDIR for the directory that should hold `p` (no symlink is followed).
    fn check_parent(&self, p: &str) -> Res {
        let mut prefix = String::new();
        for comp in parent_of(p).split('/').filter(|c| !c.is_empty()) {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(comp);
            match self.obj(&prefix) {
                None => return Err(libc::ENOENT),
                Some(o) if o.kind != Kind::Dir => return Err(libc::ENOTDIR),
                Some(_) => {}
            }
        }
        Ok(())
    }

    fn get(&self, p: &str) -> Res<&Obj> {
        self.check_parent(p)?;
        self.obj(p).ok_or(libc::ENOENT)
    }

    fn get_mut(&mut self, p: &str) -> Res<&mut Obj> {
        self.get(p)?;
        let id = self.names[p];
        Ok(self.objs.get_mut(&id).expect("object of a name"))
    }

    fn children(&self, dir: &str) -> Vec<String> {
        self.names
            .keys()
            .filter(|k| parent_of(k) == dir && !k.is_empty())
            .cloned()
            .collect()
    }

    fn add(&mut self, p: &str, kind: Kind, mode: u32) {
        let c = creds();
        let id = self.next;
        self.next += 1;
        self.objs.insert(
            id,
            Obj {
                kind,
                mode,
                uid: c.uid,
                gid: c.gid,
                xattrs: BTreeMap::new(),
            },
        );
        self.names.insert(p.to_string(), id);
    }

    /// A fresh name: parent must be a directory, the name free.
    fn create_check(&self, p: &str) -> Res {
        self.check_parent(p)?;
        if self.names.contains_key(p) {
            return Err(libc::EEXIST);
        }
        Ok(())
    }

    fn unlink_name(&mut self, p: &str) {
        let id = self.names.remove(p).expect("name");
        if !self.names.values().any(|v| *v == id) {
            self.objs.remove(&id);
        }
    }

    fn nlink(&self, id: u64) -> usize {
        self.names.values().filter(|v| **v == id).count()
    }

    /// Move `from` (and its subtree) to `to`, which is free.
    fn move_tree(&mut self, from: &str, to: &str) {
        let moved: Vec<String> = self
            .names
            .keys()
            .filter(|k| *k == from || is_under(k, from))
            .cloned()
            .collect();
        let mut lower = Vec::new();
        for k in &moved {
            let id = self.names.remove(k).expect("name");
            let nk = format!("{to}{}", &k[from.len()..]);
            if self.lower_dirs.remove(k) {
                lower.push(nk.clone());
            }
            self.names.insert(nk, id);
        }
        self.lower_dirs.extend(lower);
    }

    fn apply(&mut self, op: &Op) -> Res<Vec<u8>> {
        let none = Ok(Vec::new());
        match op {
            Op::Create { path, mode } => {
                self.create_check(path)?;
                self.add(path, Kind::File(Vec::new()), *mode);
                none
            }
            Op::Mkdir { path, mode } => {
                self.create_check(path)?;
                self.add(path, Kind::Dir, *mode);
                none
            }
            Op::Symlink { target, path } => {
                self.create_check(path)?;
                self.add(path, Kind::Symlink(target.as_bytes().to_vec()), 0o777);
                none
            }
            Op::MkFifo { path } => {
                self.create_check(path)?;
                self.add(path, Kind::Fifo, 0o644);
                none
            }
            Op::Write { path, off, data } => {
                let o = self.get_mut(path)?;
                let Kind::File(content) = &mut o.kind else {
                    return Err(open_errno(&o.kind));
                };
                let end = *off as usize + data.len();
                if content.len() < end && !data.is_empty() {
                    content.resize(end, 0);
                }
                if !data.is_empty() {
                    content[*off as usize..end].copy_from_slice(data);
                }
                none
            }
            Op::Truncate { path, len } => {
                let o = self.get_mut(path)?;
                let Kind::File(content) = &mut o.kind else {
                    return Err(open_errno(&o.kind));
                };
                content.resize(*len as usize, 0);
                none
            }
            Op::Read { path } => {
                let o = self.get(path)?;
                match &o.kind {
                    Kind::File(c) => Ok(c.clone()),
                    k => Err(open_errno(k)),
                }
            }
            Op::ReadDir { path } => {
                let o = self.get(path)?;
                if o.kind != Kind::Dir {
                    return Err(libc::ENOTDIR);
                }
                let names: Vec<String> = self
                    .children(path)
                    .iter()
                    .map(|c| c.rsplit('/').next().unwrap_or(c).to_string())
                    .collect();
                Ok(names.join("/").into_bytes())
            }
            Op::Unlink { path } => {
                if self.get(path)?.kind == Kind::Dir {
                    return Err(libc::EISDIR);
                }
                self.unlink_name(path);
                none
            }
            Op::Rmdir { path } => {
                if self.get(path)?.kind != Kind::Dir {
                    return Err(libc::ENOTDIR);
                }
                if !self.children(path).is_empty() {
                    return Err(libc::ENOTEMPTY);
                }
                self.unlink_name(path);
                self.lower_dirs.remove(path);
                none
            }
            Op::Link { from, to } => {
                let kind = self.get(from)?.kind.clone();
                self.create_check(to)?;
                if kind == Kind::Dir {
                    return Err(libc::EPERM);
                }
                let id = self.names[from];
                self.names.insert(to.clone(), id);
                none
            }
            Op::Rename { from, to, flags } => self.rename(from, to, *flags).map(|()| Vec::new()),
            Op::Chmod { path, mode } => {
                let o = self.get_mut(path)?;
                if matches!(o.kind, Kind::Symlink(_)) {
                    return Err(libc::ELOOP);
                }
                o.mode = *mode;
                none
            }
            Op::Chown { path, uid } => {
                let o = self.get_mut(path)?;
                if !sys::is_root() && *uid != creds().uid {
                    return Err(libc::EPERM);
                }
                o.uid = *uid;
                o.gid = *uid;
                none
            }
            Op::SetXattr { path, name, value } => {
                let o = self.get_mut(path)?;
                if !matches!(o.kind, Kind::File(_) | Kind::Dir) {
                    return Err(libc::EPERM);
                }
                o.xattrs.insert(name.clone(), value.clone());
                none
            }
            Op::RemoveXattr { path, name } => {
                let o = self.get_mut(path)?;
                if !matches!(o.kind, Kind::File(_) | Kind::Dir) {
                    return Err(libc::EPERM);
                }
                o.xattrs.remove(name).ok_or(libc::ENODATA)?;
                none
            }
        }
    }

    fn rename(&mut self, from: &str, to: &str, flags: u32) -> Res {
        let src_dir = self.get(from)?.kind == Kind::Dir;
        self.check_parent(to)?;
        let dst = self.obj(to).map(|o| o.kind == Kind::Dir);
        let exchange = flags & libc::RENAME_EXCHANGE != 0;
        if exchange && dst.is_none() {
            return Err(libc::ENOENT);
        }
        if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(libc::EEXIST);
        }
        if from == to {
            return Ok(());
        }
        if is_under(to, from) || (exchange && is_under(from, to)) {
            return Err(libc::EINVAL);
        }
        if !exchange && is_under(from, to) {
            return Err(libc::ENOTEMPTY);
        }
        if let Some(dst_dir) = dst {
            if !exchange {
                match (src_dir, dst_dir) {
                    (true, false) => return Err(libc::ENOTDIR),
                    (false, true) => return Err(libc::EISDIR),
                    _ => {}
                }
            }
            if self.names[from] == self.names[to] {
                return Ok(()); // two names of one file: nothing happens
            }
        }
        let lower = |p: &str| self.lower_dirs.contains(p);
        if (src_dir && lower(from)) || (exchange && dst == Some(true) && lower(to)) {
            return Err(libc::EXDEV);
        }
        if dst == Some(true) && !exchange && !self.children(to).is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        if exchange {
            let tmp = "\u{0}exchange";
            self.move_tree(from, tmp);
            self.move_tree(to, from);
            self.move_tree(tmp, to);
            return Ok(());
        }
        if dst.is_some() {
            self.unlink_name(to);
            self.lower_dirs.remove(to);
        }
        self.move_tree(from, to);
        Ok(())
    }
}

/// What opening a non-file gives in this harness: a directory `EISDIR` (the VFS refuses writes),
/// a symlink `ELOOP` (the harness opens with O_NOFOLLOW), a FIFO `ENXIO` (never opened: it would
/// block).
fn open_errno(k: &Kind) -> i32 {
    match k {
        Kind::Dir => libc::EISDIR,
        Kind::Symlink(_) => libc::ELOOP,
        _ => libc::ENXIO,
    }
}

/// The naive reference merge of the layers on disk into a `Model`.
fn reference_merge(layers: &[PathBuf], n_lowers: usize) -> Model {
    let mut m = Model::default();
    let all: Vec<usize> = (0..layers.len()).collect();
    m.add("", Kind::Dir, 0);
    let root = sys::lstat(&layers[0]).expect("upper root");
    let rid = m.names[""];
    let r = m.objs.get_mut(&rid).unwrap();
    (r.mode, r.uid, r.gid) = (root.st_mode & 0o7777, root.st_uid, root.st_gid);
    m.lower_dirs.insert(String::new());
    merge_dir(layers, &all, "", n_lowers, &mut m, &mut BTreeMap::new());
    m
}

/// Merge the directory `rel` of the participating `parts` (layer indices, top first; 0 is the
/// upper). Hard links within one layer share an object (`inodes`: (layer, ino) -> id).
fn merge_dir(
    layers: &[PathBuf],
    parts: &[usize],
    rel: &str,
    n_lowers: usize,
    m: &mut Model,
    inodes: &mut BTreeMap<(usize, u64), u64>,
) {
    let mut names = BTreeSet::new();
    for &l in parts {
        for e in fs::read_dir(layers[l].join(rel)).expect("read layer dir") {
            names.insert(e.unwrap().file_name().to_string_lossy().into_owned());
        }
    }
    for name in names {
        let child = if rel.is_empty() {
            name.clone()
        } else {
            format!("{rel}/{name}")
        };
        let mut dir_parts = Vec::new();
        for &l in parts {
            let p = layers[l].join(&child);
            let Some(st) = sys::lstat(&p).ok() else {
                continue;
            };
            let fmt = st.st_mode & libc::S_IFMT;
            let whiteout = fmt == libc::S_IFCHR && st.st_rdev == 0;
            if fmt == libc::S_IFDIR {
                dir_parts.push(l);
                if sys::lgetxattr(&p, opaque_name()).is_ok() {
                    break;
                }
                continue;
            }
            if !dir_parts.is_empty() || whiteout {
                break;
            }
            // The topmost non-directory decides.
            let kind = match fmt {
                libc::S_IFREG => Kind::File(fs::read(&p).expect("read layer file")),
                libc::S_IFLNK => {
                    Kind::Symlink(fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec())
                }
                libc::S_IFIFO => Kind::Fifo,
                other => panic!("unexpected type {other:o} in a layer"),
            };
            if let Some(id) = inodes.get(&(l, st.st_ino)) {
                m.names.insert(child.clone(), *id);
            } else {
                add_obj(m, &child, kind, &st, &p);
                inodes.insert((l, st.st_ino), m.names[&child]);
            }
            break;
        }
        if let Some(&top) = dir_parts.first() {
            let p = layers[top].join(&child);
            add_obj(m, &child, Kind::Dir, &sys::lstat(&p).unwrap(), &p);
            // Layers 1.. are lowers (0 is the upper).
            if dir_parts.iter().any(|&l| l >= 1 && l <= n_lowers) {
                m.lower_dirs.insert(child.clone());
            }
            merge_dir(layers, &dir_parts, &child, n_lowers, m, inodes);
        }
    }
}

fn add_obj(m: &mut Model, path: &str, kind: Kind, st: &libc::stat, p: &Path) {
    m.add(path, kind, st.st_mode & 0o7777);
    let id = m.names[path];
    let o = m.objs.get_mut(&id).unwrap();
    (o.uid, o.gid) = (st.st_uid, st.st_gid);
    for x in sys::llistxattr(p)
        .unwrap_or_default()
        .into_iter()
        .filter(|x| x.starts_with("user."))
    {
        if !x.starts_with("user.overlay.") {
            o.xattrs
                .insert(x.clone(), sys::lgetxattr(p, &x).unwrap_or_default());
        }
    }
}

// ----- ops and generators ----------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Op {
    Create {
        path: String,
        mode: u32,
    },
    Write {
        path: String,
        off: u64,
        data: Vec<u8>,
    },
    Truncate {
        path: String,
        len: u64,
    },
    Read {
        path: String,
    },
    ReadDir {
        path: String,
    },
    Unlink {
        path: String,
    },
    Rmdir {
        path: String,
    },
    Mkdir {
        path: String,
        mode: u32,
    },
    Rename {
        from: String,
        to: String,
        flags: u32,
    },
    Link {
        from: String,
        to: String,
    },
    Symlink {
        target: String,
        path: String,
    },
    Chmod {
        path: String,
        mode: u32,
    },
    Chown {
        path: String,
        uid: u32,
    },
    SetXattr {
        path: String,
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: String,
        name: String,
    },
    MkFifo {
        path: String,
    },
}

const UNIVERSE: &[&str] = &[
    "a", "b", "c", "a/a", "a/b", "a/c", "b/a", "b/b", "c/a", "c/c", "a/a/a", "a/b/b", "b/a/a",
    "c/c/c",
];

fn any_path() -> impl Strategy<Value = String> {
    proptest::sample::select(UNIVERSE).prop_map(str::to_string)
}

fn any_data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(b'a'..=b'e', 0..max)
}

fn any_op() -> impl Strategy<Value = Op> {
    let mode = || proptest::sample::select(&[0o644u32, 0o600, 0o755, 0o700][..]);
    let xname = || (0u8..2).prop_map(|n| format!("user.x{n}"));
    prop_oneof![
        3 => (any_path(), mode()).prop_map(|(path, mode)| Op::Create { path, mode }),
        3 => (any_path(), 0u64..30, any_data(8))
            .prop_map(|(path, off, data)| Op::Write { path, off, data }),
        2 => (any_path(), 0u64..40).prop_map(|(path, len)| Op::Truncate { path, len }),
        3 => any_path().prop_map(|path| Op::Read { path }),
        2 => any_path().prop_map(|path| Op::ReadDir { path }),
        3 => any_path().prop_map(|path| Op::Unlink { path }),
        2 => any_path().prop_map(|path| Op::Rmdir { path }),
        2 => (any_path(), mode()).prop_map(|(path, mode)| Op::Mkdir { path, mode }),
        4 => (
            any_path(),
            any_path(),
            proptest::sample::select(
                &[0u32, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][..]
            )
        )
            .prop_map(|(from, to, flags)| Op::Rename { from, to, flags }),
        2 => (any_path(), any_path()).prop_map(|(from, to)| Op::Link { from, to }),
        1 => (proptest::sample::select(&["a", "b/a", "zz"][..]), any_path())
            .prop_map(|(t, path)| Op::Symlink { target: t.to_string(), path }),
        2 => (any_path(), mode()).prop_map(|(path, mode)| Op::Chmod { path, mode }),
        1 => (any_path(), proptest::sample::select(&[0u32, 1000][..]))
            .prop_map(|(path, uid)| Op::Chown { path, uid }),
        2 => (any_path(), xname(), any_data(3))
            .prop_map(|(path, name, value)| Op::SetXattr { path, name, value }),
        1 => (any_path(), xname()).prop_map(|(path, name)| Op::RemoveXattr { path, name }),
        1 => any_path().prop_map(|path| Op::MkFifo { path }),
    ]
}

/// One object of a generated layer.
#[derive(Clone, Debug)]
enum Item {
    File(&'static str, Vec<u8>, u32),
    Dir(&'static str, bool),
    Symlink(&'static str),
    Fifo(&'static str),
    Whiteout(&'static str),
    Link(&'static str, &'static str),
    Xattr(&'static str, u8),
    Owner(&'static str),
}

fn any_item() -> impl Strategy<Value = Item> {
    let path = || proptest::sample::select(UNIVERSE);
    prop_oneof![
        4 => (path(), any_data(10), proptest::sample::select(&[0o644u32, 0o600, 0o755][..]))
            .prop_map(|(p, d, m)| Item::File(p, d, m)),
        4 => (path(), proptest::bool::weighted(0.3)).prop_map(|(p, o)| Item::Dir(p, o)),
        1 => path().prop_map(Item::Symlink),
        1 => path().prop_map(Item::Fifo),
        2 => path().prop_map(Item::Whiteout),
        1 => (path(), path()).prop_map(|(a, b)| Item::Link(a, b)),
        1 => (path(), 0u8..2).prop_map(|(p, n)| Item::Xattr(p, n)),
        1 => path().prop_map(Item::Owner),
    ]
}

#[derive(Clone, Debug)]
struct Case {
    /// Top-first.
    lowers: Vec<Vec<Item>>,
    upper: Vec<Item>,
    ops: Vec<Op>,
}

fn any_case() -> impl Strategy<Value = Case> {
    (
        proptest::collection::vec(proptest::collection::vec(any_item(), 0..8), 1..=3),
        proptest::collection::vec(any_item(), 0..5),
        proptest::collection::vec(any_op(), 1..20),
    )
        .prop_map(|(lowers, upper, ops)| Case { lowers, upper, ops })
}

/// Make every missing ancestor of `rel` a directory; false if one is not a directory or `rel`
/// itself exists.
fn prepare(root: &Path, rel: &str) -> bool {
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match sys::lstat(&cur).ok() {
            Some(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Some(_) => return false,
            None => fs::create_dir(&cur).expect("mkdir parent"),
        }
    }
    sys::lstat(&root.join(rel)).is_err()
}

/// Hard links only in the upper: copy-up breaks a lower hard link (kernel overlay without
/// `index`), which this reference does not model.
fn build_layer(root: &Path, items: &[Item], upper: bool) {
    for it in items {
        match it {
            Item::Xattr(p, n) => {
                let at = root.join(p);
                if sys::lstat(&at).ok().is_some_and(|st| {
                    matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR)
                }) {
                    set_xattr(&at, &format!("user.x{n}"), b"layer");
                }
            }
            Item::Owner(p) => {
                let at = root.join(p);
                if sys::is_root() && sys::lstat(&at).is_ok() {
                    chown(&at, 1000, 1000);
                }
            }
            Item::File(p, data, mode) if prepare(root, p) => {
                let at = root.join(p);
                fs::write(&at, data).unwrap();
                chmod(&at, *mode);
            }
            Item::Dir(p, opaque) if prepare(root, p) => {
                let at = root.join(p);
                fs::create_dir(&at).unwrap();
                if *opaque {
                    set_xattr(&at, opaque_name(), b"y");
                }
            }
            Item::Symlink(p) if prepare(root, p) => {
                std::os::unix::fs::symlink("a", root.join(p)).unwrap();
            }
            Item::Fifo(p) if prepare(root, p) => {
                let at = root.join(p);
                mkfifo(&at, 0o644);
            }
            Item::Whiteout(p) if prepare(root, p) => make_whiteout(root, p),
            Item::Link(p, to) if upper && prepare(root, p) => {
                let src = root.join(to);
                if sys::lstat(&src)
                    .ok()
                    .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
                {
                    fs::hard_link(&src, root.join(p)).unwrap();
                }
            }
            _ => {}
        }
    }
}

// ----- the core side ---------------------------------------------------------------------------

struct Core {
    u: Union,
}

fn err(e: unionfuse::error::Error) -> i32 {
    e.errno()
}

impl Core {
    /// Resolve a path with lookups (no symlink followed): the node id and its stat.
    fn walk(&self, p: &str) -> Res<(u64, libc::stat)> {
        let mut cur = (ROOT, self.u.getattr(ROOT, None).map_err(err)?);
        for comp in p.split('/').filter(|c| !c.is_empty()) {
            if cur.1.st_mode & libc::S_IFMT != libc::S_IFDIR {
                return Err(libc::ENOTDIR);
            }
            let (node, st) = self.u.lookup(cur.0, OsStr::new(comp)).map_err(err)?;
            cur = (node.ino, st);
        }
        Ok(cur)
    }

    fn parent(&self, p: &str) -> Res<u64> {
        let (ino, st) = self.walk(parent_of(p))?;
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return Err(libc::ENOTDIR);
        }
        Ok(ino)
    }

    fn name(p: &str) -> &OsStr {
        OsStr::new(p.rsplit('/').next().unwrap_or(p))
    }

    /// The VFS's check before a create-like request: the parent resolves, the name is free.
    fn create_check(&self, p: &str) -> Res<u64> {
        let parent = self.parent(p)?;
        match self.u.lookup(parent, Self::name(p)) {
            Ok(_) => Err(libc::EEXIST),
            Err(e) if e.errno() == libc::ENOENT => Ok(parent),
            Err(e) => Err(e.errno()),
        }
    }

    /// A regular file to open (other types as `open_errno` says).
    fn file(&self, p: &str) -> Res<u64> {
        let (ino, st) = self.walk(p)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => Ok(ino),
            libc::S_IFDIR => Err(libc::EISDIR),
            libc::S_IFLNK => Err(libc::ELOOP),
            _ => Err(libc::ENXIO),
        }
    }

    /// The VFS refuses to change `user.*` xattrs of anything but files and directories (`EPERM`)
    /// before asking the filesystem.
    fn xattr_target(&self, p: &str) -> Res<u64> {
        let (ino, st) = self.walk(p)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG | libc::S_IFDIR => Ok(ino),
            _ => Err(libc::EPERM),
        }
    }

    fn read_all(&self, ino: u64) -> Res<Vec<u8>> {
        let fh = self.u.open(ino, libc::O_RDONLY).map_err(err)?;
        let mut out = Vec::new();
        loop {
            let chunk = self.u.read(fh, out.len() as u64, 1 << 16);
            match chunk {
                Ok(c) if c.is_empty() => break,
                Ok(c) => out.extend_from_slice(&c),
                Err(e) => {
                    self.u.release(fh);
                    return Err(e.errno());
                }
            }
        }
        self.u.release(fh);
        Ok(out)
    }

    fn list(&self, ino: u64) -> Res<Vec<String>> {
        let fh = self.u.opendir(ino).map_err(err)?;
        let entries = self.u.dir_entries(fh, 0).map_err(err);
        self.u.release(fh);
        let mut names: Vec<String> = entries?
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        names.sort();
        Ok(names)
    }

    fn setattr(&self, p: &str, set: SetAttr) -> Res {
        let (ino, _) = self.walk(p)?;
        self.u.setattr(ino, None, set).map(drop).map_err(err)
    }

    fn apply(&self, op: &Op) -> Res<Vec<u8>> {
        let c = creds();
        let none = Ok(Vec::new());
        match op {
            Op::Create { path, mode } => {
                let parent = self.create_check(path)?;
                let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY;
                let (_, _, fh) = self
                    .u
                    .create(parent, Self::name(path), libc::S_IFREG | mode, flags, c)
                    .map_err(err)?;
                self.u.release(fh);
                none
            }
            Op::Mkdir { path, mode } => {
                let parent = self.create_check(path)?;
                self.u
                    .mkdir(parent, Self::name(path), *mode, c)
                    .map_err(err)?;
                none
            }
            Op::Symlink { target, path } => {
                let parent = self.create_check(path)?;
                self.u
                    .symlink(parent, Self::name(path), OsStr::new(target), c)
                    .map_err(err)?;
                none
            }
            Op::MkFifo { path } => {
                let parent = self.create_check(path)?;
                self.u
                    .mknod(parent, Self::name(path), libc::S_IFIFO | 0o644, 0, c)
                    .map_err(err)?;
                none
            }
            Op::Write { path, off, data } => {
                let ino = self.file(path)?;
                let fh = self.u.open(ino, libc::O_WRONLY).map_err(err)?;
                let r = self.u.write(fh, *off, data, false);
                self.u.release(fh);
                r.map_err(err)?;
                none
            }
            Op::Truncate { path, len } => {
                let ino = self.file(path)?;
                let set = SetAttr {
                    size: Some(*len),
                    ..SetAttr::default()
                };
                self.u.setattr(ino, None, set).map_err(err)?;
                none
            }
            Op::Read { path } => self.read_all(self.file(path)?),
            Op::ReadDir { path } => {
                let (ino, st) = self.walk(path)?;
                if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
                    return Err(libc::ENOTDIR);
                }
                Ok(self.list(ino)?.join("/").into_bytes())
            }
            Op::Unlink { path } => {
                let parent = self.parent(path)?;
                self.u.unlink(parent, Self::name(path)).map_err(err)?;
                none
            }
            Op::Rmdir { path } => {
                let parent = self.parent(path)?;
                self.u.rmdir(parent, Self::name(path)).map_err(err)?;
                none
            }
            Op::Link { from, to } => {
                let (ino, _) = self.walk(from)?;
                let parent = self.create_check(to)?;
                self.u.link(ino, parent, Self::name(to)).map_err(err)?;
                none
            }
            Op::Rename { from, to, flags } => {
                // The VFS's checks first, as for rename(2) through a mount.
                let (src, sst) = self.walk(from)?;
                let tparent = self.parent(to)?;
                let dst = match self.u.lookup(tparent, Self::name(to)) {
                    Ok((n, st)) => Some((n.ino, st)),
                    Err(e) if e.errno() == libc::ENOENT => None,
                    Err(e) => return Err(e.errno()),
                };
                let exchange = flags & libc::RENAME_EXCHANGE != 0;
                if exchange && dst.is_none() {
                    return Err(libc::ENOENT);
                }
                if flags & libc::RENAME_NOREPLACE != 0 && dst.is_some() {
                    return Err(libc::EEXIST);
                }
                if from == to {
                    return none;
                }
                if is_under(to, from) || (exchange && is_under(from, to)) {
                    return Err(libc::EINVAL);
                }
                if !exchange && is_under(from, to) {
                    return Err(libc::ENOTEMPTY);
                }
                let is_dir = |st: &libc::stat| st.st_mode & libc::S_IFMT == libc::S_IFDIR;
                if let Some((dino, dst_st)) = dst {
                    if !exchange {
                        match (is_dir(&sst), is_dir(&dst_st)) {
                            (true, false) => return Err(libc::ENOTDIR),
                            (false, true) => return Err(libc::EISDIR),
                            _ => {}
                        }
                    }
                    if dino == src {
                        return none;
                    }
                }
                let sparent = self.parent(from)?;
                self.u
                    .rename(sparent, Self::name(from), tparent, Self::name(to), *flags)
                    .map_err(err)?;
                none
            }
            Op::Chmod { path, mode } => {
                let (_, st) = self.walk(path)?;
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    return Err(libc::ELOOP); // chmod follows; the harness does not
                }
                self.setattr(
                    path,
                    SetAttr {
                        mode: Some(*mode),
                        ..SetAttr::default()
                    },
                )?;
                none
            }
            Op::Chown { path, uid } => {
                self.setattr(
                    path,
                    SetAttr {
                        uid: Some(*uid),
                        gid: Some(*uid),
                        ..SetAttr::default()
                    },
                )?;
                none
            }
            Op::SetXattr { path, name, value } => {
                let ino = self.xattr_target(path)?;
                self.u
                    .setxattr(ino, OsStr::new(name), value, 0)
                    .map_err(err)?;
                none
            }
            Op::RemoveXattr { path, name } => {
                let ino = self.xattr_target(path)?;
                self.u.removexattr(ino, OsStr::new(name)).map_err(err)?;
                none
            }
        }
    }

    /// The whole merged view as the reference records it, for comparison.
    fn view(&self) -> Res<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        self.view_dir("", ROOT, &mut out, &mut groups)?;
        for (ino, names) in groups {
            if names.len() > 1 {
                out.insert(format!("links {ino}"), names.join(" "));
            }
        }
        Ok(out)
    }

    fn view_dir(
        &self,
        rel: &str,
        ino: u64,
        out: &mut BTreeMap<String, String>,
        groups: &mut BTreeMap<u64, Vec<String>>,
    ) -> Res {
        for name in self.list(ino)? {
            let child = if rel.is_empty() {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            let (node, st) = self.u.lookup(ino, OsStr::new(&name)).map_err(err)?;
            let kind = match st.st_mode & libc::S_IFMT {
                libc::S_IFREG => Kind::File(self.read_all(node.ino)?),
                libc::S_IFDIR => Kind::Dir,
                libc::S_IFLNK => Kind::Symlink(self.u.readlink(node.ino).map_err(err)?),
                libc::S_IFIFO => Kind::Fifo,
                other => panic!("{child}: unexpected type {other:o} in the merged view"),
            };
            let mut xattrs = BTreeMap::new();
            let names = self.u.listxattr(node.ino).map_err(err)?;
            for x in names.split(|b| *b == 0).filter(|s| !s.is_empty()) {
                let x = String::from_utf8_lossy(x).into_owned();
                if x.starts_with("user.") {
                    let v = self.u.getxattr(node.ino, OsStr::new(&x)).map_err(err)?;
                    xattrs.insert(x, v);
                }
            }
            let is_dir = kind == Kind::Dir;
            let obj = Obj {
                kind,
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
                xattrs,
            };
            let nlink = if is_dir { 0 } else { st.st_nlink as usize };
            out.insert(child.clone(), describe(&obj, nlink));
            if is_dir {
                self.view_dir(&child, node.ino, out, groups)?;
            } else {
                groups.entry(st.st_ino).or_default().push(child);
            }
        }
        Ok(())
    }
}

fn describe(o: &Obj, nlink: usize) -> String {
    let kind = match &o.kind {
        Kind::File(d) => format!("file {:?}", d.escape_ascii().to_string()),
        Kind::Dir => "dir".into(),
        Kind::Symlink(t) => format!("symlink -> {}", t.escape_ascii()),
        Kind::Fifo => "fifo".into(),
    };
    // Symlink modes are always 0777 on Linux; not compared.
    let mode = if matches!(o.kind, Kind::Symlink(_)) {
        0o777
    } else {
        o.mode
    };
    format!(
        "{kind} {mode:04o} {}:{} nlink={nlink} xattrs={:?}",
        o.uid, o.gid, o.xattrs
    )
}

impl Model {
    fn view(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut groups: BTreeMap<u64, Vec<String>> = BTreeMap::new();
        for (p, id) in &self.names {
            if p.is_empty() {
                continue;
            }
            let o = &self.objs[id];
            let nlink = if o.kind == Kind::Dir {
                0
            } else {
                self.nlink(*id)
            };
            out.insert(p.clone(), describe(o, nlink));
            if o.kind != Kind::Dir {
                groups.entry(*id).or_default().push(p.clone());
            }
        }
        // Link groups compared as sets of names (the keys differ: object ids vs st_ino).
        let mut by_names: Vec<String> = groups
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|g| g.join(" "))
            .collect();
        by_names.sort();
        for g in by_names {
            out.insert(format!("links {g}"), g);
        }
        out
    }
}

/// Link groups keyed by their names, so both views use the same keys.
fn normalize_links(v: BTreeMap<String, String>) -> BTreeMap<String, String> {
    v.into_iter()
        .map(|(k, val)| {
            if k.starts_with("links ") {
                (format!("links {val}"), val)
            } else {
                (k, val)
            }
        })
        .collect()
}

/// Errno classes: POSIX lets rename over a non-empty directory give either of these.
fn class(r: &Res<Vec<u8>>) -> Res<Vec<u8>> {
    match r {
        Err(libc::EEXIST) | Err(libc::ENOTEMPTY) => Err(libc::ENOTEMPTY),
        other => other.clone(),
    }
}

fn diff_views(a: &BTreeMap<String, String>, b: &BTreeMap<String, String>) -> String {
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = String::new();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (x, y) if x == y => {}
            (x, y) => out += &format!("  {k}: core {x:?} | model {y:?}\n"),
        }
    }
    out
}

/// Run one case: build the layers, open the union, apply each op to both sides and compare.
fn run_case(case: &Case) -> std::result::Result<usize, String> {
    let tmp = tempfile::Builder::new()
        .prefix("unionfuse-model-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let base = tmp.path().canonicalize().unwrap();
    let upper = base.join("upper");
    let work = base.join("work");
    fs::create_dir(&upper).unwrap();
    fs::create_dir(&work).unwrap();
    let lowers: Vec<PathBuf> = (0..case.lowers.len())
        .map(|i| base.join(format!("l{i}")))
        .collect();
    for (l, items) in lowers.iter().zip(&case.lowers).rev() {
        fs::create_dir(l).unwrap();
        build_layer(l, items, false);
    }
    build_layer(&upper, &case.upper, true);
    let layers: Vec<PathBuf> = std::iter::once(upper.clone())
        .chain(lowers.iter().cloned())
        .collect();
    let mut model = reference_merge(&layers, lowers.len());
    let stack = LayerStack::open(&lowers, Some(&upper), Some(&work)).map_err(|e| e.to_string())?;
    let core = Core {
        u: Union::new(
            stack,
            Options {
                fsync: false,
                userxattr: !sys::is_root(),
                ..Default::default()
            },
            64,
        ),
    };
    let mut log = String::new();
    let start_view = normalize_links(core.view().map_err(|e| format!("initial view: {e}"))?);
    let want = normalize_links(model.view());
    if start_view != want {
        return Err(format!(
            "initial views differ:\n{}",
            diff_views(&start_view, &want)
        ));
    }
    for (i, op) in case.ops.iter().enumerate() {
        let got = core.apply(op);
        let expect = model.apply(op);
        log += &format!("{i:2} {op:?}: core {got:?} model {expect:?}\n");
        if class(&got) != class(&expect) {
            return Err(format!("step {i}: result differs\n{log}"));
        }
        let v = normalize_links(
            core.view()
                .map_err(|e| format!("view after step {i}: {e}"))?,
        );
        let w = normalize_links(model.view());
        if v != w {
            return Err(format!(
                "step {i}: views differ\n{log}{}",
                diff_views(&v, &w)
            ));
        }
    }
    Ok(case.ops.len())
}

#[test]
fn random_sequences_match_the_reference_model() {
    // The reference records modes as given: no umask in this process.
    sys::umask(0);
    let cases = env_num("UNIONFUSE_MODEL_CASES", 200);
    let seed = env_num("UNIONFUSE_MODEL_SEED", 0x6d6f64656c);
    let config = Config {
        cases: cases as u32,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 2000,
        ..Config::default()
    };
    let (seqs, steps) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&any_case(), |case| {
        seqs.fetch_add(1, Ordering::Relaxed);
        let n = run_case(&case).map_err(TestCaseError::fail)?;
        steps.fetch_add(n, Ordering::Relaxed);
        Ok(())
    });
    let line = format!(
        "model: {} sequences, {} steps, {} divergences (seed {seed}, {:.1}s)",
        seqs.into_inner(),
        steps.into_inner(),
        usize::from(result.is_err()),
        start.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    if let Ok(f) = std::env::var("UNIONFUSE_MODEL_STATS") {
        let _ = fs::write(f, format!("{line}\n"));
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, case)) => panic!("minimal case: {case:#?}\n{why}"),
        Err(e) => panic!("{e}"),
    }
}
