//! Unit tests of the union rules without FUSE: the library's `Union` is driven directly on
//! layer stacks in temp dirs, and every test checks the result both through the API (what a
//! user would see) and on disk in the upper (what kernel overlayfs would see when mounting the
//! same layers). Each test ends with `Fx::finish`: the work dir must be empty and every lower
//! byte-for-byte unchanged (contents, modes, owners, xattrs, mtimes, ctimes).
//!
//! The tests run as root (overlay metadata in `trusted.overlay.*`) and as an ordinary user
//! (`userxattr`: `user.overlay.*`); the parts that need privilege (chown) only run as root.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use unionfuse::error::Result;
use unionfuse::handle::Handle;
use unionfuse::inode::Node;
use unionfuse::layer::LayerStack;
use unionfuse::sys::Time;
use unionfuse::union::{Creds, Options, SetAttr, Union};

use common::sys;
use common::{
    chmod, chown, content_hash, make_whiteout, mkfifo, opaque_name, set_times, set_xattr,
};

const ROOT: u64 = 1;

fn me() -> Creds {
    Creds {
        uid: sys::euid(),
        gid: sys::egid(),
    }
}

fn list_xattrs(p: &Path) -> Vec<String> {
    sys::llistxattr(p)
        .unwrap_or_else(|e| panic!("llistxattr {}: {}", p.display(), sys::errno_name(e)))
}

// ----- layer builders ----------------------------------------------------------------------------

fn put_file(p: &Path, data: &[u8]) {
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
}

fn put_dir(p: &Path) {
    fs::create_dir_all(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

/// A kernel-overlay whiteout: char device 0/0 (unprivileged since Linux 5.8).
fn put_whiteout(p: &Path) {
    make_whiteout(
        p.parent().expect("whiteout has a parent"),
        p.file_name().expect("a name"),
    );
}

fn put_opaque(p: &Path) {
    set_xattr(p, opaque_name(), b"y");
}

fn is_whiteout(p: &Path) -> bool {
    sys::lstat_opt(p)
        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0)
}

fn is_opaque(p: &Path) -> bool {
    sys::lgetxattr_opt(p, opaque_name()).as_deref() == Some(b"y")
}

fn kind(p: &Path) -> Option<u32> {
    sys::lstat_opt(p).map(|st| st.st_mode & libc::S_IFMT)
}

fn names_on_disk(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(p)
        .unwrap_or_else(|e| panic!("read_dir {}: {e}", p.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ----- layer digest: everything on disk, to prove a lower was not touched -------------------

fn digest(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    digest_walk(root, Path::new(""), &mut out);
    out
}

fn digest_walk(root: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, String>) {
    let p = root.join(rel);
    let st = sys::lstat_opt(&p).expect("digest: object vanished");
    let kind = st.st_mode & libc::S_IFMT;
    let mut d = format!(
        "mode={:o} uid={} gid={} size={} nlink={} rdev={} mtime={}.{} ctime={}.{} ino={}",
        st.st_mode,
        st.st_uid,
        st.st_gid,
        st.st_size,
        st.st_nlink,
        st.st_rdev,
        st.st_mtime,
        st.st_mtime_nsec,
        st.st_ctime,
        st.st_ctime_nsec,
        st.st_ino
    );
    for x in list_xattrs(&p) {
        d += &format!(" xattr {x}={:?}", sys::lgetxattr_opt(&p, &x));
    }
    match kind {
        libc::S_IFREG => {
            let data = fs::read(&p).unwrap();
            d += &format!(" content={:016x}", content_hash(&data));
        }
        libc::S_IFLNK => d += &format!(" target={:?}", fs::read_link(&p).unwrap()),
        _ => {}
    }
    out.insert(rel.to_path_buf(), d);
    if kind == libc::S_IFDIR {
        for name in names_on_disk(&p) {
            digest_walk(root, &rel.join(name), out);
        }
    }
}

// ----- fixture -------------------------------------------------------------------------------------

/// A stack in one temp dir: `l0` (topmost lower) .. `l{n-1}`, `upper`, `work`.
struct Fx {
    _tmp: tempfile::TempDir,
    lowers: Vec<PathBuf>,
    upper: PathBuf,
    work: PathBuf,
    before: std::cell::RefCell<Option<Vec<BTreeMap<PathBuf, String>>>>,
}

impl Fx {
    fn new(n: usize) -> Fx {
        let tmp = tempfile::Builder::new()
            .prefix("unionfuse-core-")
            .tempdir()
            .unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let lowers: Vec<PathBuf> = (0..n).map(|i| base.join(format!("l{i}"))).collect();
        for l in &lowers {
            put_dir(l);
        }
        let upper = base.join("upper");
        let work = base.join("work");
        put_dir(&upper);
        put_dir(&work);
        Fx {
            _tmp: tmp,
            lowers,
            upper,
            work,
            before: std::cell::RefCell::new(None),
        }
    }

    fn l(&self, i: usize, rel: &str) -> PathBuf {
        self.lowers[i].join(rel)
    }

    fn up(&self, rel: &str) -> PathBuf {
        self.upper.join(rel)
    }

    /// Open the union (again: a "remount" on the same layers). The first call records the
    /// lowers' digests, so build the lowers before it.
    fn open(&self) -> Union {
        let mut b = self.before.borrow_mut();
        if b.is_none() {
            *b = Some(self.lowers.iter().map(|l| digest(l)).collect());
        }
        let stack = LayerStack::open(&self.lowers, Some(&self.upper), Some(&self.work))
            .expect("open layer stack");
        Union::new(
            stack,
            Options {
                fsync: false,
                userxattr: !sys::is_root(),
                ..Default::default()
            },
            1024,
        )
    }

    #[track_caller]
    fn work_empty(&self) {
        let w = self.work.join("work");
        if !w.exists() {
            // A stack without an upper never touches the work dir.
            assert_eq!(names_on_disk(&self.work), Vec::<String>::new());
            return;
        }
        let left = names_on_disk(&w);
        assert!(left.is_empty(), "work dir not empty: {left:?}");
        // Nothing of ours next to work/ either.
        assert_eq!(names_on_disk(&self.work), vec!["work".to_string()]);
    }

    #[track_caller]
    fn finish(&self) {
        self.work_empty();
        let b = self.before.borrow();
        let before = b.as_ref().expect("union was never opened");
        for (i, (l, was)) in self.lowers.iter().zip(before).enumerate() {
            let now = digest(l);
            if &now != was {
                let mut diff = String::new();
                for (k, v) in was {
                    if now.get(k) != Some(v) {
                        diff += &format!("  {}: {v}\n   now: {:?}\n", k.display(), now.get(k));
                    }
                }
                for k in now.keys().filter(|k| !was.contains_key(*k)) {
                    diff += &format!("  new: {}\n", k.display());
                }
                panic!("lower l{i} was modified:\n{diff}");
            }
        }
    }
}

// ----- API helpers ----------------------------------------------------------------------------------

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The errno of a call expected to fail.
#[track_caller]
fn errno<T>(r: Result<T>) -> i32 {
    match r {
        Ok(_) => panic!("expected an error, the call succeeded"),
        Err(e) => e.errno(),
    }
}

/// Look up a slash-separated path from the root.
fn walk(u: &Union, path: &str) -> Result<(Arc<Node>, libc::stat)> {
    let mut cur: Option<(Arc<Node>, libc::stat)> = None;
    for comp in path.split('/').filter(|c| !c.is_empty()) {
        let parent = cur.as_ref().map_or(ROOT, |(n, _)| n.ino);
        cur = Some(u.lookup(parent, os(comp))?);
    }
    match cur {
        Some(c) => Ok(c),
        None => Ok((u.nodes.get(ROOT)?, u.getattr(ROOT, None)?)),
    }
}

#[track_caller]
fn ino(u: &Union, path: &str) -> u64 {
    walk(u, path)
        .unwrap_or_else(|e| panic!("lookup {path}: {e}"))
        .0
        .ino
}

#[track_caller]
fn walk_errno(u: &Union, path: &str) -> i32 {
    errno(walk(u, path))
}

/// The merged listing (names and d_types), including `.` and `..`, sorted by name.
#[track_caller]
fn ls_types(u: &Union, path: &str) -> Vec<(String, u8)> {
    let fh = u.opendir(ino(u, path)).expect("opendir");
    assert!(matches!(
        &*u.dir_handle(fh).expect("dir handle"),
        Handle::Dir(_)
    ));
    let entries = u.dir_entries(fh, 0).expect("read the directory");
    let mut v: Vec<(String, u8)> = entries
        .iter()
        .map(|e| (e.name.to_string_lossy().into_owned(), e.dtype))
        .collect();
    u.release(fh);
    v.sort();
    v
}

/// The merged listing without `.` and `..` (asserting they are there, and every name once).
#[track_caller]
fn ls(u: &Union, path: &str) -> Vec<String> {
    let all = ls_types(u, path);
    let names: Vec<String> = all.iter().map(|(n, _)| n.clone()).collect();
    let mut dedup = names.clone();
    dedup.dedup();
    assert_eq!(names, dedup, "a name is listed twice in {path}");
    assert!(
        names.contains(&".".into()) && names.contains(&"..".into()),
        "no . or .. in {path}"
    );
    names
        .into_iter()
        .filter(|n| n != "." && n != "..")
        .collect()
}

#[track_caller]
fn cat(u: &Union, path: &str) -> Vec<u8> {
    let fh = u
        .open(ino(u, path), libc::O_RDONLY)
        .expect("open for reading");
    let mut out = Vec::new();
    loop {
        let chunk = u.read(fh, out.len() as u64, 1 << 20).expect("read");
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(&chunk);
    }
    u.release(fh);
    out
}

/// Open for writing (this copies a lower file up) and close again without writing.
#[track_caller]
fn touch_open(u: &Union, path: &str) {
    let fh = u
        .open(ino(u, path), libc::O_WRONLY)
        .expect("open for writing");
    u.release(fh);
}

#[track_caller]
fn write_at(u: &Union, path: &str, off: u64, data: &[u8]) {
    let fh = u
        .open(ino(u, path), libc::O_WRONLY)
        .expect("open for writing");
    assert_eq!(u.write(fh, off, data, false).expect("write"), data.len());
    u.release(fh);
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

// ===== lookup ==========================================================================================

#[test]
fn lookup_precedence_across_upper_and_three_lowers() {
    let fx = Fx::new(3);
    for (i, tag) in ["l0", "l1", "l2"].iter().enumerate() {
        put_file(&fx.l(i, "all"), tag.as_bytes());
        put_file(&fx.l(i, "d/all"), tag.as_bytes());
    }
    put_file(&fx.up("all"), b"upper");
    put_file(&fx.up("d/all"), b"upper");
    put_file(&fx.l(1, "mid"), b"l1-mid");
    put_file(&fx.l(2, "mid"), b"l2-mid-longer");
    put_file(&fx.l(2, "bottom"), b"l2-bottom");
    put_file(&fx.l(0, "d/from0"), b"0");
    put_file(&fx.l(2, "d/from2"), b"2");
    put_file(&fx.l(1, "d/from1"), b"1");
    put_file(&fx.l(2, "d/from1"), b"2 hidden");
    let u = fx.open();

    assert_eq!(cat(&u, "all"), b"upper");
    assert_eq!(cat(&u, "mid"), b"l1-mid");
    let (_, st) = walk(&u, "mid").unwrap();
    assert_eq!(st.st_size, 6, "stat comes from the winning layer");
    assert_eq!(cat(&u, "bottom"), b"l2-bottom");
    assert_eq!(cat(&u, "d/all"), b"upper");
    assert_eq!(cat(&u, "d/from0"), b"0");
    assert_eq!(cat(&u, "d/from1"), b"1");
    assert_eq!(cat(&u, "d/from2"), b"2");
    assert_eq!(ls(&u, "d"), strs(&["all", "from0", "from1", "from2"]));
    assert_eq!(walk_errno(&u, "nothing"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "d/nothing"), libc::ENOENT);
    fx.finish();
}

#[test]
fn whiteouts_in_upper_and_middle_lower_hide_names() {
    let fx = Fx::new(3);
    put_file(&fx.l(0, "a"), b"a0");
    put_whiteout(&fx.up("a"));
    // A whiteout in l1 hides l2, but l0 above it still shows.
    put_whiteout(&fx.l(1, "b"));
    put_file(&fx.l(2, "b"), b"b2");
    put_file(&fx.l(0, "c"), b"c0");
    put_whiteout(&fx.l(1, "c"));
    put_file(&fx.l(2, "c"), b"c2");
    // A whiteout hides a whole lower directory.
    put_whiteout(&fx.l(1, "dir"));
    put_file(&fx.l(2, "dir/x"), b"x");
    // Whiteouts inside a merged directory.
    put_file(&fx.l(2, "m/keep"), b"k");
    put_file(&fx.l(2, "m/gone"), b"g");
    put_whiteout(&fx.l(1, "m/gone"));
    put_file(&fx.l(0, "m/gone2"), b"g2");
    put_whiteout(&fx.up("m/gone2"));
    let u = fx.open();

    assert_eq!(walk_errno(&u, "a"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "b"), libc::ENOENT);
    assert_eq!(cat(&u, "c"), b"c0");
    assert_eq!(walk_errno(&u, "dir"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "m/gone"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "m/gone2"), libc::ENOENT);
    assert_eq!(cat(&u, "m/keep"), b"k");
    assert_eq!(ls(&u, ""), strs(&["c", "m"]));
    assert_eq!(ls(&u, "m"), strs(&["keep"]));
    fx.finish();
}

#[test]
fn opaque_directory_stops_merging() {
    let fx = Fx::new(3);
    put_file(&fx.l(0, "o/top"), b"t");
    put_opaque(&fx.l(0, "o"));
    put_file(&fx.l(1, "o/below"), b"b");
    put_file(&fx.l(2, "o/top"), b"hidden");
    // Opaque in the middle: the upper and l0 merge with l1 but not l2.
    put_file(&fx.up("p/u"), b"u");
    put_file(&fx.l(0, "p/a"), b"a");
    put_file(&fx.l(1, "p/b"), b"b");
    put_opaque(&fx.l(1, "p"));
    put_file(&fx.l(2, "p/c"), b"c");
    // Opaque in the upper hides every lower.
    put_dir(&fx.up("q"));
    put_opaque(&fx.up("q"));
    put_file(&fx.l(0, "q/x"), b"x");
    let u = fx.open();

    assert_eq!(ls(&u, "o"), strs(&["top"]));
    assert_eq!(cat(&u, "o/top"), b"t");
    assert_eq!(walk_errno(&u, "o/below"), libc::ENOENT);
    assert_eq!(ls(&u, "p"), strs(&["a", "b", "u"]));
    assert_eq!(walk_errno(&u, "p/c"), libc::ENOENT);
    assert_eq!(ls(&u, "q"), Vec::<String>::new());
    assert_eq!(walk_errno(&u, "q/x"), libc::ENOENT);
    // The private xattr does not show through.
    let xs = u.listxattr(ino(&u, "q")).unwrap();
    assert!(
        !xs.windows(b"overlay.opaque".len())
            .any(|w| w == b"overlay.opaque"),
        "opaque xattr visible in listxattr: {:?}",
        String::from_utf8_lossy(&xs)
    );
    fx.finish();
}

#[test]
fn non_directory_hides_directory_and_vice_versa() {
    let fx = Fx::new(2);
    // File in l0 over a dir in l1.
    put_file(&fx.l(0, "n"), b"file");
    put_file(&fx.l(1, "n/x"), b"x");
    // Dir in l0 over a file in l1.
    put_file(&fx.l(0, "m/a"), b"a");
    put_file(&fx.l(1, "m"), b"file");
    // Upper dir over a lower file over a lower dir: no merge past the file.
    put_file(&fx.up("k/u"), b"u");
    put_file(&fx.l(0, "k"), b"file");
    put_file(&fx.l(1, "k/deep"), b"deep");
    // Upper file over a lower dir.
    put_file(&fx.up("q"), b"upper file");
    put_file(&fx.l(0, "q/z"), b"z");
    // Symlink over a dir.
    std::os::unix::fs::symlink("target", fx.l(0, "s")).unwrap();
    put_file(&fx.l(1, "s/y"), b"y");
    let u = fx.open();

    let (_, st) = walk(&u, "n").unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(cat(&u, "n"), b"file");
    assert_eq!(walk_errno(&u, "n/x"), libc::ENOTDIR);
    let (_, st) = walk(&u, "m").unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(ls(&u, "m"), strs(&["a"]));
    assert_eq!(ls(&u, "k"), strs(&["u"]));
    assert_eq!(walk_errno(&u, "k/deep"), libc::ENOENT);
    assert_eq!(cat(&u, "q"), b"upper file");
    assert_eq!(walk_errno(&u, "q/z"), libc::ENOTDIR);
    let (n, st) = walk(&u, "s").unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(u.readlink(n.ino).unwrap(), b"target");

    let root = ls_types(&u, "");
    let want = |name: &str, t: u8| {
        assert!(
            root.contains(&(name.to_string(), t)),
            "{name} should be listed once with d_type {t}: {root:?}"
        );
    };
    want("n", libc::DT_REG);
    want("m", libc::DT_DIR);
    want("k", libc::DT_DIR);
    want("q", libc::DT_REG);
    want("s", libc::DT_LNK);
    fx.finish();
}

// ===== readdir =========================================================================================

#[test]
fn merged_readdir_lists_each_name_once() {
    let fx = Fx::new(3);
    put_file(&fx.l(2, "a"), b"a2");
    put_file(&fx.l(2, "b"), b"b2");
    put_file(&fx.l(2, "c"), b"c2");
    put_file(&fx.l(2, "d/x"), b"x");
    put_file(&fx.l(1, "b"), b"b1");
    put_whiteout(&fx.l(1, "c"));
    put_file(&fx.l(1, "e"), b"e1");
    put_file(&fx.l(1, "d/y"), b"y");
    put_file(&fx.l(0, "a/inner"), b"i"); // a dir over a file
    put_file(&fx.l(0, "o/1"), b"1");
    put_opaque(&fx.l(0, "o"));
    put_file(&fx.l(1, "o/2"), b"2");
    put_file(&fx.l(2, "o/3"), b"3");
    put_file(&fx.up("f"), b"f");
    put_whiteout(&fx.up("e"));
    put_file(&fx.up("d/z"), b"z");
    put_whiteout(&fx.up("d/x"));
    let u = fx.open();

    let root = ls_types(&u, "");
    assert_eq!(
        root,
        vec![
            (".".to_string(), libc::DT_DIR),
            ("..".to_string(), libc::DT_DIR),
            ("a".to_string(), libc::DT_DIR),
            ("b".to_string(), libc::DT_REG),
            ("d".to_string(), libc::DT_DIR),
            ("f".to_string(), libc::DT_REG),
            ("o".to_string(), libc::DT_DIR),
        ]
    );
    assert_eq!(ls(&u, "d"), strs(&["y", "z"]));
    assert_eq!(ls(&u, "o"), strs(&["1"]));
    assert_eq!(ls(&u, "a"), strs(&["inner"]));
    assert_eq!(cat(&u, "b"), b"b1");
    // An empty directory still has its dots.
    put_dir(&fx.up("empty"));
    let u = fx.open();
    assert_eq!(ls(&u, "empty"), Vec::<String>::new());
    fx.finish();
}

// ===== unlink / rmdir =====================================================================================

#[test]
fn unlink_lower_file_leaves_whiteout() {
    let fx = Fx::new(2);
    put_file(&fx.l(0, "f"), b"lower");
    put_file(&fx.l(1, "a/b/g"), b"deep");
    put_file(&fx.l(1, "a/b/keep"), b"keep");
    put_file(&fx.l(0, "shadowed"), b"lower");
    put_file(&fx.up("shadowed"), b"upper");
    let u = fx.open();

    u.unlink(ROOT, os("f")).unwrap();
    fx.work_empty();
    assert!(is_whiteout(&fx.up("f")), "no whiteout for f in the upper");
    assert_eq!(walk_errno(&u, "f"), libc::ENOENT);

    let b = ino(&u, "a/b");
    u.unlink(b, os("g")).unwrap();
    fx.work_empty();
    assert!(is_whiteout(&fx.up("a/b/g")));
    assert_eq!(kind(&fx.up("a")), Some(libc::S_IFDIR));
    assert_eq!(names_on_disk(&fx.up("a/b")), strs(&["g"]));
    assert_eq!(ls(&u, "a/b"), strs(&["keep"]));

    u.unlink(ROOT, os("shadowed")).unwrap();
    assert!(
        is_whiteout(&fx.up("shadowed")),
        "an upper file over a lower one leaves a whiteout"
    );
    assert_eq!(walk_errno(&u, "shadowed"), libc::ENOENT);
    assert_eq!(errno(u.unlink(ROOT, os("f"))), libc::ENOENT);

    // Another union on the same layers (a remount) sees the same.
    let u = fx.open();
    assert_eq!(ls(&u, ""), strs(&["a"]));
    assert_eq!(ls(&u, "a/b"), strs(&["keep"]));
    fx.finish();
}

#[test]
fn unlink_upper_only_file_leaves_nothing() {
    let fx = Fx::new(1);
    put_file(&fx.up("u"), b"upper only");
    put_file(&fx.l(0, "other"), b"x");
    let u = fx.open();
    let (_, _, fh) = u
        .create(ROOT, os("new"), 0o644, libc::O_WRONLY | libc::O_CREAT, me())
        .unwrap();
    u.release(fh);

    u.unlink(ROOT, os("u")).unwrap();
    u.unlink(ROOT, os("new")).unwrap();
    fx.work_empty();
    assert_eq!(
        sys::lstat_opt(&fx.up("u")).map(|s| s.st_mode),
        None,
        "upper-only unlink left something"
    );
    assert_eq!(sys::lstat_opt(&fx.up("new")).map(|s| s.st_mode), None);
    assert_eq!(names_on_disk(&fx.upper), Vec::<String>::new());
    assert_eq!(ls(&u, ""), strs(&["other"]));
    fx.finish();
}

#[test]
fn rmdir_of_dir_empty_only_in_merged_view_leaves_whiteout() {
    let fx = Fx::new(2);
    // Emptied through the API.
    put_file(&fx.l(0, "d/x"), b"x");
    put_file(&fx.l(1, "d/y"), b"y");
    // Emptied on disk already: upper copy holding only a whiteout.
    put_file(&fx.l(0, "e/x"), b"x");
    put_whiteout(&fx.up("e/x"));
    // Lower only: l0's whiteout hides all of l1's copy.
    put_whiteout(&fx.l(0, "g/x"));
    put_file(&fx.l(1, "g/x"), b"x");
    let u = fx.open();

    let d = ino(&u, "d");
    u.unlink(d, os("x")).unwrap();
    u.unlink(d, os("y")).unwrap();
    assert_eq!(ls(&u, "d"), Vec::<String>::new());
    u.rmdir(ROOT, os("d")).unwrap();
    fx.work_empty();
    assert!(is_whiteout(&fx.up("d")), "rmdir d left no whiteout");

    assert_eq!(ls(&u, "e"), Vec::<String>::new());
    u.rmdir(ROOT, os("e")).unwrap();
    fx.work_empty();
    assert!(is_whiteout(&fx.up("e")), "rmdir e left no whiteout");

    assert_eq!(ls(&u, "g"), Vec::<String>::new());
    u.rmdir(ROOT, os("g")).unwrap();
    fx.work_empty();
    assert!(is_whiteout(&fx.up("g")), "rmdir g left no whiteout");

    assert_eq!(ls(&u, ""), Vec::<String>::new());
    assert_eq!(names_on_disk(&fx.upper), strs(&["d", "e", "g"]));
    let u = fx.open();
    assert_eq!(ls(&u, ""), Vec::<String>::new());
    fx.finish();
}

#[test]
fn rmdir_non_empty_is_enotempty() {
    let fx = Fx::new(2);
    put_file(&fx.l(1, "d/x"), b"x");
    put_dir(&fx.l(0, "d"));
    put_file(&fx.up("u/f"), b"f");
    put_file(&fx.l(0, "w/x"), b"x");
    put_whiteout(&fx.up("w/x"));
    put_file(&fx.up("w/y"), b"y");
    let u = fx.open();

    assert_eq!(errno(u.rmdir(ROOT, os("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(u.rmdir(ROOT, os("u"))), libc::ENOTEMPTY);
    assert_eq!(errno(u.rmdir(ROOT, os("w"))), libc::ENOTEMPTY);
    assert_eq!(errno(u.rmdir(ROOT, os("nothing"))), libc::ENOENT);
    assert_eq!(errno(u.unlink(ROOT, os("d"))), libc::EISDIR);
    assert_eq!(errno(u.rmdir(ino(&u, "u"), os("f"))), libc::ENOTDIR);
    fx.work_empty();
    assert_eq!(ls(&u, "d"), strs(&["x"]));
    assert_eq!(ls(&u, "w"), strs(&["y"]));
    assert_eq!(cat(&u, "u/f"), b"f");
    assert!(is_whiteout(&fx.up("w/x")));
    assert_eq!(
        kind(&fx.up("d")),
        None,
        "a failed rmdir must not leave a whiteout"
    );
    fx.finish();
}

// ===== create over whiteout ===============================================================================

#[test]
fn mkdir_over_whiteout_is_opaque() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "d/x"), b"x");
    put_file(&fx.l(0, "d/sub/y"), b"y");
    put_file(&fx.l(0, "f"), b"file");
    let u = fx.open();

    let d = ino(&u, "d");
    u.unlink(d, os("x")).unwrap();
    let sub = ino(&u, "d/sub");
    u.unlink(sub, os("y")).unwrap();
    u.rmdir(d, os("sub")).unwrap();
    u.rmdir(ROOT, os("d")).unwrap();
    assert!(is_whiteout(&fx.up("d")));
    let (_, st) = u.mkdir(ROOT, os("d"), 0o750, me()).unwrap();
    fx.work_empty();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(kind(&fx.up("d")), Some(libc::S_IFDIR));
    assert!(
        is_opaque(&fx.up("d")),
        "mkdir over a whiteout must make an opaque dir"
    );
    assert_eq!(names_on_disk(&fx.up("d")), Vec::<String>::new());
    assert_eq!(ls(&u, "d"), Vec::<String>::new());
    assert_eq!(walk_errno(&u, "d/x"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "d/sub"), libc::ENOENT);

    // A file whited out and recreated as a directory is opaque too (nothing to see below,
    // but kernel overlay marks it all the same).
    u.unlink(ROOT, os("f")).unwrap();
    u.mkdir(ROOT, os("f"), 0o755, me()).unwrap();
    assert_eq!(kind(&fx.up("f")), Some(libc::S_IFDIR));
    fx.work_empty();

    let u = fx.open();
    assert_eq!(ls(&u, "d"), Vec::<String>::new());
    assert_eq!(walk_errno(&u, "d/x"), libc::ENOENT);
    let (_, st) = walk(&u, "f").unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFDIR);
    fx.finish();
}

#[test]
fn create_over_whiteout_is_a_new_file() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "f"), b"lower content");
    put_file(&fx.l(0, "dir/x"), b"x");
    let u = fx.open();

    u.unlink(ROOT, os("f")).unwrap();
    let (_, st, fh) = u
        .create(ROOT, os("f"), 0o600, libc::O_RDWR | libc::O_CREAT, me())
        .unwrap();
    fx.work_empty();
    assert_eq!(st.st_size, 0);
    assert_eq!(st.st_mode & 0o7777, 0o600);
    assert!(
        u.read(fh, 0, 100).unwrap().is_empty(),
        "lower content reappeared"
    );
    u.write(fh, 0, b"new", false).unwrap();
    u.release(fh);
    let ust = sys::lstat_opt(&fx.up("f")).unwrap();
    assert_eq!(ust.st_mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(fs::read(fx.up("f")).unwrap(), b"new");
    assert_eq!(cat(&u, "f"), b"new");

    // Over a whited-out directory.
    let dir = ino(&u, "dir");
    u.unlink(dir, os("x")).unwrap();
    u.rmdir(ROOT, os("dir")).unwrap();
    let (_, _, fh) = u
        .create(ROOT, os("dir"), 0o644, libc::O_WRONLY | libc::O_CREAT, me())
        .unwrap();
    u.release(fh);
    assert_eq!(kind(&fx.up("dir")), Some(libc::S_IFREG));
    fx.work_empty();

    let u = fx.open();
    assert_eq!(cat(&u, "f"), b"new");
    assert_eq!(cat(&u, "dir"), b"");
    assert_eq!(ls(&u, ""), strs(&["dir", "f"]));
    fx.finish();
}

// ===== copy-up ==============================================================================================

#[test]
fn copy_up_preserves_data_mode_owner_times_xattrs() {
    let fx = Fx::new(1);
    let f = fx.l(0, "f");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    put_file(&f, &data);
    if sys::is_root() {
        chown(&f, 1234, 5678);
    }
    chmod(&f, 0o4751);
    set_xattr(&f, "user.test", b"value");
    set_xattr(&f, "user.empty", b"");
    set_times(&f, 1_000_000_000, 123_456_789);
    let lst = sys::lstat_opt(&f).unwrap();
    let u = fx.open();

    touch_open(&u, "f");
    fx.work_empty();
    let ust = sys::lstat_opt(&fx.up("f")).expect("f was not copied up");
    assert_eq!(fs::read(fx.up("f")).unwrap(), data);
    assert_eq!(ust.st_mode, lst.st_mode, "mode");
    assert_eq!((ust.st_uid, ust.st_gid), (lst.st_uid, lst.st_gid), "owner");
    assert_eq!(
        (ust.st_mtime, ust.st_mtime_nsec),
        (1_000_000_000, 123_456_789),
        "mtime"
    );
    assert_eq!(
        sys::lgetxattr_opt(&fx.up("f"), "user.test").as_deref(),
        Some(&b"value"[..])
    );
    assert_eq!(
        sys::lgetxattr_opt(&fx.up("f"), "user.empty").as_deref(),
        Some(&b""[..])
    );

    // The merged view shows the same, and no overlay-private xattr.
    let (n, st) = walk(&u, "f").unwrap();
    assert_eq!(st.st_mode, lst.st_mode);
    assert_eq!((st.st_uid, st.st_gid), (lst.st_uid, lst.st_gid));
    assert_eq!(
        (st.st_mtime, st.st_mtime_nsec),
        (1_000_000_000, 123_456_789)
    );
    assert_eq!(u.getxattr(n.ino, os("user.test")).unwrap(), b"value");
    let names: Vec<String> = String::from_utf8(u.listxattr(n.ino).unwrap())
        .unwrap()
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    assert!(names.contains(&"user.test".to_string()), "{names:?}");
    assert!(
        !names.iter().any(|x| x.starts_with(if sys::is_root() {
            "trusted.overlay."
        } else {
            "user.overlay."
        })),
        "overlay-private xattr visible: {names:?}"
    );
    assert_eq!(cat(&u, "f"), data);
    fx.finish();
}

#[test]
fn metadata_changes_copy_up_files_fifos_and_symlinks_keeping_data_and_times() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "f"), b"data");
    set_times(&fx.l(0, "f"), 1_100_000_000, 0);
    std::os::unix::fs::symlink("some/target", fx.l(0, "link")).unwrap();
    mkfifo(&fx.l(0, "fifo"), 0o640);
    set_times(&fx.l(0, "fifo"), 1_200_000_000, 5);
    let u = fx.open();

    // chmod copies up; data and mtime come along.
    let f = ino(&u, "f");
    u.setattr(
        f,
        None,
        SetAttr {
            mode: Some(0o600),
            ..Default::default()
        },
    )
    .unwrap();
    fx.work_empty();
    let ust = sys::lstat_opt(&fx.up("f")).unwrap();
    assert_eq!(ust.st_mode & 0o7777, 0o600);
    assert_eq!(ust.st_mtime, 1_100_000_000);
    assert_eq!(fs::read(fx.up("f")).unwrap(), b"data");

    // chown to oneself copies up a fifo; its type, mode and times are kept.
    let fifo = ino(&u, "fifo");
    u.setattr(
        fifo,
        None,
        SetAttr {
            uid: Some(me().uid),
            ..Default::default()
        },
    )
    .unwrap();
    fx.work_empty();
    let ust = sys::lstat_opt(&fx.up("fifo")).unwrap();
    assert_eq!(ust.st_mode, libc::S_IFIFO | 0o640);
    assert_eq!((ust.st_mtime, ust.st_mtime_nsec), (1_200_000_000, 5));

    // Changing a symlink's times copies it up with its target.
    let link = ino(&u, "link");
    u.setattr(
        link,
        None,
        SetAttr {
            mtime: Some(Time::At(1_300_000_000, 0)),
            ..Default::default()
        },
    )
    .unwrap();
    fx.work_empty();
    assert_eq!(
        fs::read_link(fx.up("link")).unwrap(),
        Path::new("some/target")
    );
    assert_eq!(
        sys::lstat_opt(&fx.up("link")).unwrap().st_mtime,
        1_300_000_000
    );
    assert_eq!(u.readlink(link).unwrap(), b"some/target");
    fx.finish();
}

#[test]
fn copy_up_keeps_holes() {
    let fx = Fx::new(1);
    let f = fx.l(0, "sparse");
    const SIZE: u64 = 64 << 20;
    {
        let file = fs::File::create(&f).unwrap();
        file.set_len(SIZE).unwrap();
        file.write_all_at(&[b'A'; 4096], 0).unwrap();
        file.write_all_at(&[b'B'; 4096], 32 << 20).unwrap();
        file.write_all_at(&[b'C'; 100], SIZE - 100).unwrap();
    }
    let lower_blocks = sys::lstat_opt(&f).unwrap().st_blocks;
    assert!(
        lower_blocks * 512 < 1 << 20,
        "the temp fs does not make sparse files"
    );
    let u = fx.open();

    write_at(&u, "sparse", 8 << 20, b"written");
    fx.work_empty();
    let ust = sys::lstat_opt(&fx.up("sparse")).unwrap();
    assert_eq!(ust.st_size as u64, SIZE);
    assert!(
        ust.st_blocks * 512 < 1 << 20,
        "copy-up filled the holes: {} blocks allocated for a file with {} blocks of data",
        ust.st_blocks,
        lower_blocks
    );
    let mut want = fs::read(&f).unwrap();
    want[8 << 20..(8 << 20) + 7].copy_from_slice(b"written");
    assert!(
        fs::read(fx.up("sparse")).unwrap() == want,
        "copied data differs"
    );
    let fh = u.open(ino(&u, "sparse"), libc::O_RDONLY).unwrap();
    assert_eq!(u.read(fh, (32 << 20) - 2, 4).unwrap(), b"\0\0BB");
    u.release(fh);
    fx.finish();
}

/// l0/a/b/c/f with distinct modes, owners (as root), mtimes and an xattr on the directories.
fn deep_chain() -> (Fx, [(&'static str, u32); 3]) {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "a/b/c/f"), b"deep");
    put_file(&fx.l(0, "a/b/sibling"), b"s");
    set_xattr(&fx.l(0, "a/b"), "user.dir", b"b");
    let modes = [("a", 0o750), ("a/b", 0o711), ("a/b/c", 0o2755)];
    if sys::is_root() {
        chown(&fx.l(0, "a"), 1001, 1002);
        chown(&fx.l(0, "a/b/c"), 1003, 1004);
    }
    for (i, (rel, mode)) in modes.iter().enumerate().rev() {
        chmod(&fx.l(0, rel), *mode);
        set_times(
            &fx.l(0, rel),
            1_000_000_000 + i as i64 * 1000,
            1000 + i as i64,
        );
    }
    set_times(&fx.l(0, "a/b/c/f"), 900_000_000, 7);
    (fx, modes)
}

#[test]
fn copy_up_creates_parent_chain_with_same_attributes() {
    let (fx, modes) = deep_chain();
    let u = fx.open();

    touch_open(&u, "a/b/c/f");
    fx.work_empty();
    for (rel, _) in modes {
        let (l, up) = (
            sys::lstat_opt(&fx.l(0, rel)).unwrap(),
            sys::lstat_opt(&fx.up(rel)),
        );
        let up = up.unwrap_or_else(|| panic!("{rel} not copied up"));
        assert_eq!(up.st_mode, l.st_mode, "mode of {rel}");
        assert_eq!(
            (up.st_uid, up.st_gid),
            (l.st_uid, l.st_gid),
            "owner of {rel}"
        );
    }
    assert_eq!(
        sys::lgetxattr_opt(&fx.up("a/b"), "user.dir").as_deref(),
        Some(&b"b"[..])
    );
    let fst = sys::lstat_opt(&fx.up("a/b/c/f")).unwrap();
    assert_eq!((fst.st_mtime, fst.st_mtime_nsec), (900_000_000, 7));
    assert_eq!(fs::read(fx.up("a/b/c/f")).unwrap(), b"deep");
    assert_eq!(
        names_on_disk(&fx.up("a/b")),
        strs(&["c"]),
        "only the chain is copied"
    );
    assert_eq!(ls(&u, "a/b"), strs(&["c", "sibling"]));
    fx.finish();
}

/// Kernel overlay restores the upper parent's timestamps after linking a copy in (the "Restore
/// timestamps on parent" step of ovl_copy_up), so a copy-up changes no directory's mtime:
/// neither a freshly copied-up ancestor (which keeps the lower's mtime) nor an upper dir that
/// already existed.
#[test]
fn copy_up_keeps_parent_chain_mtimes() {
    let (fx, modes) = deep_chain();
    put_file(&fx.l(0, "e/g"), b"g");
    put_dir(&fx.up("e"));
    set_times(&fx.up("e"), 1_100_000_000, 11);
    let u = fx.open();

    touch_open(&u, "a/b/c/f");
    touch_open(&u, "e/g");
    fx.work_empty();
    for (rel, _) in modes {
        let (l, up) = (
            sys::lstat_opt(&fx.l(0, rel)).unwrap(),
            sys::lstat_opt(&fx.up(rel)).unwrap(),
        );
        assert_eq!(
            (up.st_mtime, up.st_mtime_nsec),
            (l.st_mtime, l.st_mtime_nsec),
            "upper mtime of {rel}"
        );
        let (_, merged) = walk(&u, rel).unwrap();
        assert_eq!(
            (merged.st_mtime, merged.st_mtime_nsec),
            (l.st_mtime, l.st_mtime_nsec),
            "merged mtime of {rel}"
        );
    }
    let e = sys::lstat_opt(&fx.up("e")).unwrap();
    assert_eq!(
        (e.st_mtime, e.st_mtime_nsec),
        (1_100_000_000, 11),
        "upper mtime of e"
    );
    fx.finish();
}

// ===== rename ===============================================================================================

#[test]
fn rename_file_replaces_target_noreplace_gives_eexist_exchange_swaps() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "src"), b"S");
    put_file(&fx.l(0, "dst"), b"D");
    put_file(&fx.l(0, "a"), b"A");
    put_file(&fx.l(0, "b"), b"B");
    put_file(&fx.l(0, "n1"), b"N1");
    put_file(&fx.l(0, "n2"), b"N2");
    put_file(&fx.l(0, "dir/in"), b"in");
    let u = fx.open();

    u.rename(ROOT, os("src"), ROOT, os("dst"), 0).unwrap();
    fx.work_empty();
    assert_eq!(cat(&u, "dst"), b"S");
    assert_eq!(walk_errno(&u, "src"), libc::ENOENT);
    assert!(
        is_whiteout(&fx.up("src")),
        "old name of a lower file must be whited out"
    );
    assert_eq!(fs::read(fx.up("dst")).unwrap(), b"S");

    assert_eq!(
        errno(u.rename(ROOT, os("n1"), ROOT, os("n2"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    fx.work_empty();
    assert_eq!(cat(&u, "n1"), b"N1");
    assert_eq!(cat(&u, "n2"), b"N2");
    u.rename(ROOT, os("n1"), ROOT, os("n3"), libc::RENAME_NOREPLACE)
        .unwrap();
    assert_eq!(cat(&u, "n3"), b"N1");
    assert!(is_whiteout(&fx.up("n1")));

    u.rename(ROOT, os("a"), ROOT, os("b"), libc::RENAME_EXCHANGE)
        .unwrap();
    fx.work_empty();
    assert_eq!(cat(&u, "a"), b"B");
    assert_eq!(cat(&u, "b"), b"A");
    assert_eq!(fs::read(fx.up("a")).unwrap(), b"B");
    assert_eq!(fs::read(fx.up("b")).unwrap(), b"A");
    assert_eq!(
        errno(u.rename(ROOT, os("a"), ROOT, os("missing"), libc::RENAME_EXCHANGE)),
        libc::ENOENT
    );

    // Into a lower directory: the directory is copied up, the file lands in it.
    let dir = ino(&u, "dir");
    u.rename(ROOT, os("b"), dir, os("moved"), 0).unwrap();
    assert_eq!(ls(&u, "dir"), strs(&["in", "moved"]));
    assert_eq!(fs::read(fx.up("dir/moved")).unwrap(), b"A");
    assert!(is_whiteout(&fx.up("b")));
    fx.work_empty();

    let u = fx.open();
    assert_eq!(ls(&u, ""), strs(&["a", "dir", "dst", "n2", "n3"]));
    fx.finish();
}

#[test]
fn rename_dir_with_lower_content_is_exdev() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "low/x"), b"x");
    put_file(&fx.l(0, "merged/x"), b"x");
    put_file(&fx.up("merged/y"), b"y");
    put_file(&fx.up("up/z"), b"z");
    let u = fx.open();

    assert_eq!(
        errno(u.rename(ROOT, os("low"), ROOT, os("low2"), 0)),
        libc::EXDEV
    );
    assert_eq!(
        errno(u.rename(ROOT, os("merged"), ROOT, os("m2"), 0)),
        libc::EXDEV
    );
    fx.work_empty();
    assert_eq!(ls(&u, ""), strs(&["low", "merged", "up"]));
    // An upper-only directory moves freely, with no whiteout left behind.
    u.rename(ROOT, os("up"), ROOT, os("up2"), 0).unwrap();
    assert_eq!(cat(&u, "up2/z"), b"z");
    assert_eq!(kind(&fx.up("up")), None);
    assert_eq!(fs::read(fx.up("up2/z")).unwrap(), b"z");
    fx.work_empty();
    fx.finish();
}

#[test]
fn rename_upper_dir_over_merged_empty_dir_makes_it_opaque() {
    let fx = Fx::new(2);
    put_file(&fx.l(0, "t/x"), b"x");
    put_file(&fx.l(1, "t/y"), b"y");
    put_file(&fx.l(0, "t2/x"), b"x");
    let u = fx.open();

    // t is merged (upper copy with whiteouts over two lowers) and empty in the merged view.
    let t = ino(&u, "t");
    u.unlink(t, os("x")).unwrap();
    u.unlink(t, os("y")).unwrap();
    assert_eq!(ls(&u, "t"), Vec::<String>::new());
    let (s, _) = u.mkdir(ROOT, os("s"), 0o755, me()).unwrap();
    let (_, _, fh) = u
        .create(
            s.ino,
            os("new"),
            0o644,
            libc::O_WRONLY | libc::O_CREAT,
            me(),
        )
        .unwrap();
    u.release(fh);

    u.rename(ROOT, os("s"), ROOT, os("t"), 0).unwrap();
    fx.work_empty();
    assert_eq!(ls(&u, "t"), strs(&["new"]));
    assert_eq!(walk_errno(&u, "t/x"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "t/y"), libc::ENOENT);
    assert_eq!(walk_errno(&u, "s"), libc::ENOENT);
    assert_eq!(kind(&fx.up("s")), None, "s had no lower: no whiteout");
    assert!(
        is_opaque(&fx.up("t")),
        "the moved dir must be opaque over the lower t"
    );
    assert_eq!(names_on_disk(&fx.up("t")), strs(&["new"]));

    // Over a lower-only dir that is empty in the merged view (l0's whiteout hides x).
    let t2 = ino(&u, "t2");
    u.unlink(t2, os("x")).unwrap();
    u.mkdir(ROOT, os("s2"), 0o700, me()).unwrap();
    u.rename(ROOT, os("s2"), ROOT, os("t2"), 0).unwrap();
    fx.work_empty();
    assert!(is_opaque(&fx.up("t2")));
    assert_eq!(ls(&u, "t2"), Vec::<String>::new());

    // After a remount the lower content of the old targets still does not reappear.
    let u = fx.open();
    assert_eq!(ls(&u, "t"), strs(&["new"]));
    assert_eq!(ls(&u, "t2"), Vec::<String>::new());
    assert_eq!(ls(&u, ""), strs(&["t", "t2"]));
    fx.finish();
}

#[test]
fn rename_dir_over_non_empty_dir_or_file_gives_enotempty_enotdir_eisdir() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "full/x"), b"x");
    put_file(&fx.l(0, "file"), b"f");
    let u = fx.open();
    u.mkdir(ROOT, os("s"), 0o755, me()).unwrap();
    assert_eq!(
        errno(u.rename(ROOT, os("s"), ROOT, os("full"), 0)),
        libc::ENOTEMPTY
    );
    assert_eq!(
        errno(u.rename(ROOT, os("s"), ROOT, os("file"), 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        errno(u.rename(ROOT, os("file"), ROOT, os("s"), 0)),
        libc::EISDIR
    );
    fx.work_empty();
    assert_eq!(ls(&u, "full"), strs(&["x"]));
    assert_eq!(cat(&u, "file"), b"f");
    fx.finish();
}

// ===== link =================================================================================================

#[test]
fn link_of_lower_file_copies_up_once() {
    let fx = Fx::new(1);
    put_file(&fx.l(0, "f"), b"shared");
    put_dir(&fx.l(0, "d"));
    let u = fx.open();

    let (f, _) = walk(&u, "f").unwrap();
    let (g, gst) = u.link(f.ino, ROOT, os("g")).unwrap();
    fx.work_empty();
    assert_eq!(gst.st_nlink, 2);
    let (fst_up, gst_up) = (
        sys::lstat_opt(&fx.up("f")).unwrap(),
        sys::lstat_opt(&fx.up("g")).unwrap(),
    );
    assert_eq!(
        fst_up.st_ino, gst_up.st_ino,
        "f and g are one inode in the upper"
    );
    assert_eq!(fst_up.st_nlink, 2, "copied up once");
    assert_eq!(names_on_disk(&fx.upper), strs(&["f", "g"]));
    assert_eq!(g.ino, f.ino, "both names are one node");
    let d = ino(&u, "d");
    let (h, _) = u.link(g.ino, d, os("h")).unwrap();
    assert_eq!(h.ino, f.ino);
    assert_eq!(sys::lstat_opt(&fx.up("f")).unwrap().st_nlink, 3);
    fx.work_empty();

    write_at(&u, "g", 0, b"SHARED");
    assert_eq!(cat(&u, "f"), b"SHARED");
    assert_eq!(cat(&u, "d/h"), b"SHARED");
    let (a, ast) = walk(&u, "f").unwrap();
    let (b, bst) = walk(&u, "g").unwrap();
    assert_eq!(a.ino, b.ino);
    assert_eq!(ast.st_ino, bst.st_ino);
    assert_eq!(ast.st_nlink, 3);
    assert_eq!(errno(u.link(d, ROOT, os("dirlink"))), libc::EPERM);
    assert_eq!(errno(u.link(a.ino, ROOT, os("g"))), libc::EEXIST);

    let u = fx.open();
    let (a, _) = walk(&u, "f").unwrap();
    let (b, _) = walk(&u, "d/h").unwrap();
    assert_eq!(a.ino, b.ino, "after a remount too");
    fx.finish();
}

// ===== read-only stack ======================================================================================

#[test]
fn no_upper_means_erofs() {
    let fx = Fx::new(2);
    put_file(&fx.l(0, "f"), b"f");
    put_file(&fx.l(1, "d/x"), b"x");
    put_dir(&fx.l(1, "empty"));
    *fx.before.borrow_mut() = Some(fx.lowers.iter().map(|l| digest(l)).collect());
    let stack = LayerStack::open(&fx.lowers, None, None).unwrap();
    let u = Union::new(
        stack,
        Options {
            fsync: false,
            userxattr: !sys::is_root(),
            ..Default::default()
        },
        64,
    );

    assert_eq!(cat(&u, "f"), b"f");
    assert_eq!(ls(&u, "d"), strs(&["x"]));
    let f = ino(&u, "f");
    let d = ino(&u, "d");
    let c = me();
    let ro = libc::EROFS;
    assert_eq!(
        errno(u.create(ROOT, os("new"), 0o644, libc::O_WRONLY | libc::O_CREAT, c)),
        ro
    );
    assert_eq!(errno(u.mkdir(ROOT, os("newd"), 0o755, c)), ro);
    assert_eq!(
        errno(u.mknod(ROOT, os("fifo"), libc::S_IFIFO | 0o644, 0, c)),
        ro
    );
    assert_eq!(errno(u.symlink(ROOT, os("sl"), os("f"), c)), ro);
    assert_eq!(errno(u.link(f, ROOT, os("hl"))), ro);
    assert_eq!(errno(u.unlink(ROOT, os("f"))), ro);
    assert_eq!(errno(u.rmdir(ROOT, os("empty"))), ro);
    assert_eq!(errno(u.rename(ROOT, os("f"), d, os("f2"), 0)), ro);
    assert_eq!(errno(u.open(f, libc::O_WRONLY)), ro);
    assert_eq!(errno(u.open(f, libc::O_RDWR)), ro);
    assert_eq!(errno(u.open(f, libc::O_RDONLY | libc::O_TRUNC)), ro);
    assert_eq!(
        errno(u.setattr(
            f,
            None,
            SetAttr {
                mode: Some(0o600),
                ..Default::default()
            }
        )),
        ro
    );
    assert_eq!(
        errno(u.setattr(
            f,
            None,
            SetAttr {
                size: Some(0),
                ..Default::default()
            }
        )),
        ro
    );
    assert_eq!(errno(u.setxattr(f, os("user.x"), b"1", 0)), ro);
    assert_eq!(cat(&u, "f"), b"f");
    fx.finish();
}

/// An ordinary user (no CAP_DAC_OVERRIDE, `userxattr`) owning every layer copies up a file.
/// The copy is built with mode 0 and its xattrs (user.* and the user.overlay origin) are set
/// before the mode, which a non-root owner may not do (user.* needs write permission): EACCES.
/// Kernel overlay in `userxattr` mode (mounted in a user namespace) copies such files up.
#[test]
fn copy_up_as_unprivileged_owner_succeeds() {
    if sys::is_root() {
        eprintln!("skipping: run as an ordinary user to test unprivileged copy-up");
        return;
    }
    let fx = Fx::new(1);
    put_file(&fx.l(0, "f"), b"data");
    put_file(&fx.l(0, "d/g"), b"g");
    set_xattr(&fx.l(0, "d"), "user.x", b"1");
    let u = fx.open();
    write_at(&u, "f", 4, b"+more");
    assert_eq!(fs::read(fx.up("f")).unwrap(), b"data+more");
    touch_open(&u, "d/g");
    assert_eq!(
        sys::lgetxattr_opt(&fx.up("d"), "user.x").as_deref(),
        Some(&b"1"[..])
    );
    fx.finish();
}
