//! Differential tests: the same operation sequences run on unionfuse and on kernel overlayfs over
//! identical copies (`cp -a`) of one layer stack. The errno (and any output) of every step and the
//! final merged trees must match; then the uppers are swapped (unionfuse's upper mounted by the
//! kernel and the reverse) and the views compared again. A generated case whose kernel upper holds
//! a redirect runs once more with that upper stacked as a lower under a new upper.
//!
//! Sequences are plain `Vec<Op>` data run by `differential`, so a generator (proptest) can feed the
//! same runner. `UNIONFUSE_TEST_BACKEND=kernel` runs kernel against kernel (a harness self-check).

mod common;

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::*;

// ---------------------------------------------------------------------------------------------
// Operations
// ---------------------------------------------------------------------------------------------

/// One step. Paths are relative to the mount root, as bytes (non-UTF-8 allowed).
#[derive(Clone, PartialEq, Eq)]
enum Op {
    /// open(O_CREAT|O_EXCL|O_WRONLY, mode)
    Create {
        path: Vec<u8>,
        mode: u32,
    },
    /// open(O_WRONLY) + pwrite
    Write {
        path: Vec<u8>,
        off: i64,
        data: Vec<u8>,
    },
    Truncate {
        path: Vec<u8>,
        len: i64,
    },
    /// open(O_WRONLY|O_APPEND) + write
    Append {
        path: Vec<u8>,
        data: Vec<u8>,
    },
    Unlink {
        path: Vec<u8>,
    },
    Rmdir {
        path: Vec<u8>,
    },
    Mkdir {
        path: Vec<u8>,
        mode: u32,
    },
    /// renameat2 with RENAME_* flags
    Rename {
        from: Vec<u8>,
        to: Vec<u8>,
        flags: u32,
    },
    Link {
        from: Vec<u8>,
        to: Vec<u8>,
    },
    Symlink {
        target: Vec<u8>,
        path: Vec<u8>,
    },
    Chmod {
        path: Vec<u8>,
        mode: u32,
    },
    /// lchown
    Chown {
        path: Vec<u8>,
        uid: u32,
        gid: u32,
    },
    /// utimensat(AT_SYMLINK_NOFOLLOW) with a fixed atime and this mtime
    Utimes {
        path: Vec<u8>,
        mtime: (i64, i64),
    },
    SetXattr {
        path: Vec<u8>,
        name: String,
        value: Vec<u8>,
    },
    RemoveXattr {
        path: Vec<u8>,
        name: String,
    },
    MkFifo {
        path: Vec<u8>,
        mode: u32,
    },
    /// Open `path` read-only, write `data` at 0 through a second (write) fd, then read the whole
    /// file through the first fd: after copy-up the old fd must see the new data.
    OpenRoThenWriteOther {
        path: Vec<u8>,
        data: Vec<u8>,
    },
    /// Read the whole file (following symlinks); output: the contents.
    Read {
        path: Vec<u8>,
    },
    /// List a directory; output: sorted names joined by '/', incl. "." and "..".
    ReadDir {
        path: Vec<u8>,
    },
}

use Op::*;

fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let p = |v: &Vec<u8>| v.escape_ascii().to_string();
        match self {
            Create { path, mode } => write!(f, "create {} {mode:o}", p(path)),
            Write { path, off, data } => write!(f, "write {} @{off} {:?}", p(path), p(data)),
            Truncate { path, len } => write!(f, "truncate {} {len}", p(path)),
            Append { path, data } => write!(f, "append {} {:?}", p(path), p(data)),
            Unlink { path } => write!(f, "unlink {}", p(path)),
            Rmdir { path } => write!(f, "rmdir {}", p(path)),
            Mkdir { path, mode } => write!(f, "mkdir {} {mode:o}", p(path)),
            Rename { from, to, flags } => write!(f, "rename {} {} flags={flags}", p(from), p(to)),
            Link { from, to } => write!(f, "link {} {}", p(from), p(to)),
            Symlink { target, path } => write!(f, "symlink {} -> {}", p(path), p(target)),
            Chmod { path, mode } => write!(f, "chmod {} {mode:o}", p(path)),
            Chown { path, uid, gid } => write!(f, "chown {} {uid}:{gid}", p(path)),
            Utimes { path, mtime } => write!(f, "utimes {} {mtime:?}", p(path)),
            SetXattr { path, name, value } => write!(f, "setxattr {} {name}={}", p(path), p(value)),
            RemoveXattr { path, name } => write!(f, "removexattr {} {name}", p(path)),
            MkFifo { path, mode } => write!(f, "mkfifo {} {mode:o}", p(path)),
            OpenRoThenWriteOther { path, data } => {
                write!(f, "open-ro-then-write-other {} {:?}", p(path), p(data))
            }
            Read { path } => write!(f, "read {}", p(path)),
            ReadDir { path } => write!(f, "readdir {}", p(path)),
        }
    }
}

/// A byte string as Rust source: `b("...")` when plain text, else a byte-string literal.
fn bytes_src(v: &[u8]) -> String {
    match std::str::from_utf8(v) {
        Ok(t)
            if t.chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ') =>
        {
            format!("b({t:?})")
        }
        _ => format!("b\"{}\".to_vec()", v.escape_ascii()),
    }
}

impl Op {
    /// This step as Rust source, as the regression tests below write it.
    fn source(&self) -> String {
        let p = |v: &Vec<u8>| bytes_src(v);
        match self {
            Create { path, mode } => format!("Create {{ path: {}, mode: 0o{mode:o} }}", p(path)),
            Write { path, off, data } => {
                format!(
                    "Write {{ path: {}, off: {off}, data: {} }}",
                    p(path),
                    p(data)
                )
            }
            Truncate { path, len } => format!("Truncate {{ path: {}, len: {len} }}", p(path)),
            Append { path, data } => format!("Append {{ path: {}, data: {} }}", p(path), p(data)),
            Unlink { path } => format!("Unlink {{ path: {} }}", p(path)),
            Rmdir { path } => format!("Rmdir {{ path: {} }}", p(path)),
            Mkdir { path, mode } => format!("Mkdir {{ path: {}, mode: 0o{mode:o} }}", p(path)),
            Rename { from, to, flags } => {
                let flags = match *flags {
                    0 => "0".to_string(),
                    libc::RENAME_NOREPLACE => "libc::RENAME_NOREPLACE".into(),
                    libc::RENAME_EXCHANGE => "libc::RENAME_EXCHANGE".into(),
                    other => other.to_string(),
                };
                format!(
                    "Rename {{ from: {}, to: {}, flags: {flags} }}",
                    p(from),
                    p(to)
                )
            }
            Link { from, to } => format!("Link {{ from: {}, to: {} }}", p(from), p(to)),
            Symlink { target, path } => {
                format!("Symlink {{ target: {}, path: {} }}", p(target), p(path))
            }
            Chmod { path, mode } => format!("Chmod {{ path: {}, mode: 0o{mode:o} }}", p(path)),
            Chown { path, uid, gid } => {
                format!("Chown {{ path: {}, uid: {uid}, gid: {gid} }}", p(path))
            }
            Utimes { path, mtime } => format!("Utimes {{ path: {}, mtime: {mtime:?} }}", p(path)),
            SetXattr { path, name, value } => format!(
                "SetXattr {{ path: {}, name: {name:?}.into(), value: {} }}",
                p(path),
                p(value)
            ),
            RemoveXattr { path, name } => {
                format!("RemoveXattr {{ path: {}, name: {name:?}.into() }}", p(path))
            }
            MkFifo { path, mode } => format!("MkFifo {{ path: {}, mode: 0o{mode:o} }}", p(path)),
            OpenRoThenWriteOther { path, data } => format!(
                "OpenRoThenWriteOther {{ path: {}, data: {} }}",
                p(path),
                p(data)
            ),
            Read { path } => format!("Read {{ path: {} }}", p(path)),
            ReadDir { path } => format!("ReadDir {{ path: {} }}", p(path)),
        }
    }
}

/// What one step returned: output bytes (for reads) or the errno.
type Outcome = Result<Vec<u8>, i32>;

fn show_outcome(o: &Outcome) -> String {
    match o {
        Ok(v) if v.is_empty() => "ok".into(),
        Ok(v) if v.len() <= 64 => format!("ok {:?}", v.escape_ascii().to_string()),
        Ok(v) => format!(
            "ok {:?}... ({} bytes, hash {:x})",
            v[..48].escape_ascii().to_string(),
            v.len(),
            content_hash(v)
        ),
        Err(e) => sys::errno_name(*e),
    }
}

fn read_all(fd: &std::os::fd::OwnedFd) -> Result<Vec<u8>, i32> {
    let mut out = Vec::new();
    loop {
        let chunk = sys::pread(fd, 65536, out.len() as i64)?;
        if chunk.is_empty() {
            return Ok(out);
        }
        out.extend_from_slice(&chunk);
    }
}

/// Every open is non-blocking, so a generated op that opens a FIFO returns (`ENXIO` for a writer
/// without a reader, an empty read for a reader) instead of hanging; regular files ignore it.
const NB: libc::c_int = libc::O_NONBLOCK;

/// Apply one op under `root` with plain libc calls.
fn apply(root: &Path, op: &Op) -> Outcome {
    let at = |rel: &[u8]| root.join(OsStr::from_bytes(rel));
    let none = |r: Result<(), i32>| r.map(|()| Vec::new());
    match op {
        Create { path, mode } => {
            let flags = libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY | NB;
            sys::open(&at(path), flags, *mode).map(|_| Vec::new())
        }
        Write { path, off, data } => {
            let fd = sys::open(&at(path), libc::O_WRONLY | NB, 0)?;
            sys::pwrite(&fd, data, *off).map(|_| Vec::new())
        }
        Truncate { path, len } => none(sys::truncate(&at(path), *len)),
        Append { path, data } => {
            let fd = sys::open(&at(path), libc::O_WRONLY | libc::O_APPEND | NB, 0)?;
            sys::write(&fd, data).map(|_| Vec::new())
        }
        Unlink { path } => none(sys::unlink(&at(path))),
        Rmdir { path } => none(sys::rmdir(&at(path))),
        Mkdir { path, mode } => none(sys::mkdir(&at(path), *mode)),
        Rename { from, to, flags } => none(sys::renameat2(&at(from), &at(to), *flags)),
        Link { from, to } => none(sys::link(&at(from), &at(to))),
        Symlink { target, path } => none(sys::symlink(OsStr::from_bytes(target), &at(path))),
        Chmod { path, mode } => none(sys::chmod(&at(path), *mode)),
        Chown { path, uid, gid } => none(sys::lchown(&at(path), *uid, *gid)),
        Utimes { path, mtime } => none(sys::utimens(&at(path), (1, 0), *mtime, true)),
        SetXattr { path, name, value } => none(sys::lsetxattr(&at(path), name, value)),
        RemoveXattr { path, name } => none(sys::lremovexattr(&at(path), name)),
        MkFifo { path, mode } => none(sys::mknod(&at(path), libc::S_IFIFO | *mode, 0)),
        OpenRoThenWriteOther { path, data } => {
            let ro = sys::open(&at(path), libc::O_RDONLY | NB, 0)?;
            let wr = sys::open(&at(path), libc::O_WRONLY | NB, 0)?;
            sys::pwrite(&wr, data, 0)?;
            drop(wr);
            if lower_passthrough() {
                // An fd opened on a lower file before its copy-up keeps the old data under
                // lower passthrough (D17, pinned in tests/mount_copy_up.rs): read it, then
                // compare what a new open of the path reads (both sides do the same).
                read_all(&ro)?;
                return read_all(&sys::open(&at(path), libc::O_RDONLY | NB, 0)?);
            }
            read_all(&ro)
        }
        Read { path } => read_all(&sys::open(&at(path), libc::O_RDONLY | NB, 0)?),
        ReadDir { path } => {
            let fd = sys::open(&at(path), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
            let mut names = sys::read_dir_names(&fd, true)?;
            names.sort();
            Ok(names.join(&b'/'))
        }
    }
}

/// Paths whose final mtime was set explicitly by a successful Utimes (and not changed by a later
/// data op), following renames. Only these mtimes are compared.
fn explicit_mtimes(ops: &[Op], outcomes: &[Outcome]) -> BTreeSet<PathBuf> {
    let mut set = BTreeSet::new();
    let pb = |v: &Vec<u8>| PathBuf::from(OsStr::from_bytes(v));
    for (op, out) in ops.iter().zip(outcomes) {
        if out.is_err() {
            continue;
        }
        match op {
            Utimes { path, .. } => {
                set.insert(pb(path));
            }
            Write { path, .. }
            | Truncate { path, .. }
            | Append { path, .. }
            | Unlink { path }
            | Rmdir { path }
            | OpenRoThenWriteOther { path, .. } => {
                set.remove(&pb(path));
            }
            Rename { from, to, flags } => {
                let (had_from, had_to) = (set.remove(&pb(from)), set.remove(&pb(to)));
                if had_from {
                    set.insert(pb(to));
                }
                if had_to && *flags & libc::RENAME_EXCHANGE != 0 {
                    set.insert(pb(from));
                }
            }
            _ => {}
        }
    }
    set
}

// ---------------------------------------------------------------------------------------------
// The layer stack: collisions, whiteouts, opaque dirs, symlinks, hard links, xattrs
// ---------------------------------------------------------------------------------------------

const WEIRD: &[u8] = b"w\xe9ird\xff";

fn build_stack() -> Stack {
    let s = Stack::new(3);
    let (l0, l1, l2, up) = (s.lower(0), s.lower(1), s.lower(2), s.upper());
    // lower2 (bottom)
    write_file(&l2.join("f_all"), b"lower2 f_all\n", 0o644);
    write_file(&l2.join("d/a"), b"l2 a\n", 0o644);
    write_file(&l2.join("d/b"), b"l2 b\n", 0o600);
    write_file(&l2.join("d/sub/deep"), b"deep\n", 0o644);
    write_file(&l2.join("gone"), b"whited out by lower1\n", 0o644);
    write_file(&l2.join("opq/old"), b"hidden by opaque lower1 opq\n", 0o644);
    write_file(&l2.join("hl1"), b"shared\n", 0o644);
    hardlink(&l2.join("hl1"), &l2.join("hl2"));
    write_file(&l2.join("xf"), b"xattrs\n", 0o644);
    set_xattr(&l2.join("xf"), "user.k", b"v2");
    set_xattr(&l2.join("xf"), "user.other", b"o");
    symlink("f_all", &l2.join("sym"));
    mkfifo(&l2.join("fifo"), 0o644);
    write_file(&l2.join("typeflip/child"), b"under a dir\n", 0o644);
    write_file_owned(&l2.join("ro_file"), b"read only\n", 0o444, 1000, 1000);
    // lower1
    write_file(&l1.join("f_all"), b"lower1 f_all\n", 0o640);
    write_file(&l1.join("d/b"), b"l1 b\n", 0o644);
    write_file(&l1.join("d/c"), b"l1 c\n", 0o644);
    make_whiteout(l1, "gone");
    write_file(&l1.join("opq/new"), b"opaque lower1\n", 0o644);
    set_opaque(&l1.join("opq"));
    write_file(&l1.join("typeflip"), b"a file over a dir\n", 0o644);
    symlink("d", &l1.join("dirlink"));
    write_file(&l1.join("h/a"), b"linked in lower1\n", 0o644);
    hardlink(&l1.join("h/a"), &l1.join("h/b"));
    write_file(&at(l1, WEIRD), b"non-utf8\n", 0o644);
    set_xattr(&l1.join("d"), "user.dir", b"l1");
    // lower0 (top lower)
    write_file(&l0.join("f_all"), b"lower0 f_all\n", 0o644);
    set_xattr(&l0.join("f_all"), "user.top", b"0");
    write_file(&l0.join("d/a"), b"l0 a\n", 0o644);
    make_whiteout(&l0.join("d"), "c");
    mkdir(&l0.join("emptydir"), 0o755);
    write_file(&l0.join("suid"), b"setuid\n", 0o4755);
    write_file(&l0.join("wh_up"), b"whited out by upper\n", 0o644);
    write_file(&l0.join("uopq/x"), b"hidden by opaque upper\n", 0o644);
    chown(&l0.join("d"), 10, 20);
    // upper
    write_file(&up.join("d/up"), b"upper up\n", 0o644);
    write_file(&up.join("uonly/f"), b"upper only\n", 0o644);
    make_whiteout(up, "wh_up");
    mkdir(&up.join("uopq"), 0o755);
    set_opaque(&up.join("uopq"));
    write_file(&up.join("uopq/mine"), b"mine\n", 0o644);
    // Fixed times everywhere, so copies and copy-ups are comparable.
    for layer in [l0, l1, l2, up] {
        let tree = Tree::snapshot(layer, SnapOpts::VIEW);
        for p in tree.entries.keys().rev() {
            set_mtime(&layer.join(p), 1_500_000_000);
        }
    }
    s
}

// ---------------------------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Backend {
    Unionfuse,
    Kernel,
}

struct Run {
    outcomes: Vec<Outcome>,
    tree: Tree,
}

/// Mount `stack` with `backend`, apply `ops`, snapshot the merged view, unmount.
fn run_on(stack: &Stack, backend: Backend, ops: &[Op]) -> Run {
    let before = stack.lower_digests();
    let run = match backend {
        Backend::Unionfuse => {
            let m = UnionMount::new(stack);
            let outcomes = ops.iter().map(|op| apply(m.mnt(), op)).collect();
            Run {
                outcomes,
                tree: Tree::snapshot(m.mnt(), SnapOpts::VIEW),
            }
        }
        Backend::Kernel => {
            let m = KernelOverlay::new(stack);
            let outcomes = ops.iter().map(|op| apply(m.mnt(), op)).collect();
            Run {
                outcomes,
                tree: Tree::snapshot(m.mnt(), SnapOpts::VIEW),
            }
        }
    };
    stack.assert_lowers_unchanged(&before);
    run
}

/// A view without what is not compared: mtimes except explicitly set ones.
fn comparable(tree: &Tree, mtimes: &BTreeSet<PathBuf>) -> Tree {
    tree.clone().normalize(|p, e| {
        if e.kind == Kind::Dir || !mtimes.contains(p) {
            e.mtime = None;
        }
    })
}

/// Compare two runs of `ops`: errno/output per step, then the final trees.
fn compare_runs(ops: &[Op], a: &Run, b: &Run, names: (&str, &str)) -> Result<(), String> {
    if a.outcomes != b.outcomes {
        let mut msg = format!("errno differs ({} vs {}):\n", names.0, names.1);
        for (i, op) in ops.iter().enumerate() {
            let (x, y) = (&a.outcomes[i], &b.outcomes[i]);
            let mark = if x == y { " " } else { "*" };
            msg += &format!(
                "{mark} {i:2} {op:?}: {} | {}\n",
                show_outcome(x),
                show_outcome(y)
            );
        }
        return Err(msg);
    }
    let mtimes = explicit_mtimes(ops, &a.outcomes);
    let (ta, tb) = (comparable(&a.tree, &mtimes), comparable(&b.tree, &mtimes));
    // In a user namespace kernel overlay records no origin (it cannot encode file handles
    // there: `user.overlay.origin` is empty), so a new link to a copied-up object gets the
    // upper's st_ino while the old name keeps the lower's: its link groups split what is one
    // inode (nlink still says 2). There b's groups need only refine a's; nlink is compared
    // per entry either way.
    let refine = common::mode() == common::Mode::Userns;
    let split = refine
        && !b.tree.link_groups().iter().all(|g| {
            a.tree
                .link_groups()
                .iter()
                .any(|h| g.iter().all(|p| h.contains(p)))
        });
    let d = match (ta.diff(&tb, !refine), split) {
        (None, false) => None,
        (d, split) => Some(
            d.unwrap_or_default()
                + if split {
                    "  hard-link groups: b links paths that a does not\n"
                } else {
                    ""
                },
        ),
    };
    match d {
        None => Ok(()),
        Some(d) => Err(format!(
            "final trees differ ({} left, {} right):\n{d}\n{} tree:\n{tb:?}",
            names.0, names.1, names.1
        )),
    }
}

/// Views of a stack after a run, compared without hard-link groups: an upper written by one
/// implementation need not carry origin records the other understands, so st_ino may differ.
fn compare_views(
    what: &str,
    want: &Tree,
    got: &Tree,
    mtimes: &BTreeSet<PathBuf>,
) -> Result<(), String> {
    let (w, g) = (comparable(want, mtimes), comparable(got, mtimes));
    match w.diff(&g, false) {
        None => Ok(()),
        Some(d) => Err(format!("{what}: views differ (left: expected):\n{d}")),
    }
}

/// The whole differential check of one sequence: unionfuse vs kernel on copies of the stack,
/// then each upper mounted by the other implementation.
fn differential(ops: &[Op]) -> Result<(), String> {
    let source = build_stack();
    let (ustack, kstack) = (source.duplicate(), source.duplicate());
    for copy in [&ustack, &kstack] {
        for (orig, dup) in source.lowers.iter().zip(&copy.lowers) {
            let d = Tree::layer_digest(orig).diff(&Tree::layer_digest(dup), true);
            assert!(
                d.is_none(),
                "cp -a did not copy {} exactly:\n{d:?}",
                orig.display()
            );
        }
    }
    differential_on(&ustack, &kstack, ops, true)
}

/// `ops` on unionfuse over `ustack` and on the kernel over `kstack` (identical layers), then,
/// when `swap`, each upper mounted by the other implementation.
fn differential_on(ustack: &Stack, kstack: &Stack, ops: &[Op], swap: bool) -> Result<(), String> {
    let u = run_on(ustack, Backend::Unionfuse, ops);
    let k = run_on(kstack, Backend::Kernel, ops);
    // Printed by the test harness only on failure (or with --nocapture).
    if !quiet() {
        for (i, (op, out)) in ops.iter().zip(&k.outcomes).enumerate() {
            eprintln!("kernel step {i:2} {op:?}: {}", show_outcome(out));
        }
    }
    compare_runs(ops, &u, &k, ("unionfuse", "kernel"))?;
    if !swap {
        return Ok(());
    }
    let mtimes = explicit_mtimes(ops, &k.outcomes);
    // Swap: unionfuse's upper under the kernel, the kernel's upper under unionfuse.
    let k_on_u = run_on(ustack, Backend::Kernel, &[]);
    compare_views(
        "kernel overlay over unionfuse's upper",
        &k.tree,
        &k_on_u.tree,
        &mtimes,
    )?;
    let u_on_k = run_on(kstack, Backend::Unionfuse, &[]);
    compare_views(
        "unionfuse over kernel overlay's upper",
        &k.tree,
        &u_on_k.tree,
        &mtimes,
    )?;
    Ok(())
}

#[track_caller]
fn check(ops: Vec<Op>) {
    // Kernel overlay is the oracle: not mountable by an ordinary user (mode `user`).
    if !require_fuse() || !common::overlay_available() {
        return;
    }
    if let Err(e) = differential(&ops) {
        panic!("{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Harness self-checks: a difference must be caught
// ---------------------------------------------------------------------------------------------

#[test]
fn harness_catches_errno_and_tree_differences() {
    // Kernel overlay is the oracle: not mountable by an ordinary user (mode `user`).
    if !require_fuse() || !common::overlay_available() {
        return;
    }
    let source = build_stack();
    let (a, b2) = (source.duplicate(), source.duplicate());
    write_file(&b2.lower(0).join("extra"), b"only in b\n", 0o644);
    write_file(&b2.lower(2).join("d/a"), b"changed but hidden\n", 0o644);
    let ops = vec![Create {
        path: b("extra"),
        mode: 0o644,
    }];
    let (ra, rb) = (
        run_on(&a, Backend::Kernel, &ops),
        run_on(&b2, Backend::Kernel, &ops),
    );
    let err = compare_runs(&ops, &ra, &rb, ("a", "b")).expect_err("errno difference missed");
    assert!(err.contains("EEXIST"), "{err}");

    let (c, d) = (source.duplicate(), source.duplicate());
    write_file(&d.lower(1).join("d/b"), b"visible change\n", 0o644);
    let ops = vec![Read { path: b("f_all") }];
    let (rc, rd) = (
        run_on(&c, Backend::Kernel, &ops),
        run_on(&d, Backend::Kernel, &ops),
    );
    let err = compare_runs(&ops, &rc, &rd, ("c", "d")).expect_err("tree difference missed");
    assert!(err.contains("d/b") && err.contains("content"), "{err}");
    // A hidden lower change (d/a is shadowed by lower0) is not a difference of the views.
    let e = source.duplicate();
    write_file(&e.lower(2).join("d/a"), b"changed but hidden\n", 0o644);
    let re = run_on(&e, Backend::Kernel, &ops);
    assert_eq!(compare_runs(&ops, &rc, &re, ("c", "e")), Ok(()));
}

#[test]
fn harness_compares_mtimes_only_where_set_explicitly() {
    let ops = vec![
        Utimes {
            path: b("a"),
            mtime: (5, 0),
        },
        Utimes {
            path: b("b"),
            mtime: (5, 0),
        },
        Write {
            path: b("b"),
            off: 0,
            data: b("x"),
        },
        Utimes {
            path: b("c"),
            mtime: (5, 0),
        },
        Rename {
            from: b("c"),
            to: b("e"),
            flags: 0,
        },
        Utimes {
            path: b("f"),
            mtime: (5, 0),
        },
    ];
    let outcomes = vec![
        Ok(vec![]),
        Ok(vec![]),
        Ok(vec![]),
        Ok(vec![]),
        Ok(vec![]),
        Err(2),
    ];
    let want: BTreeSet<PathBuf> = ["a", "e"].iter().map(PathBuf::from).collect();
    assert_eq!(explicit_mtimes(&ops, &outcomes), want);
}

// ---------------------------------------------------------------------------------------------
// Sequences
// ---------------------------------------------------------------------------------------------

#[test]
fn write_into_lower_file_then_read_matches_the_kernel() {
    check(vec![
        Write {
            path: b("f_all"),
            off: 0,
            data: b("X"),
        },
        Read { path: b("f_all") },
        Write {
            path: b("d/sub/deep"),
            off: 100,
            data: b("past the end"),
        },
        Read {
            path: b("d/sub/deep"),
        },
    ]);
}

#[test]
fn append_and_truncate_lower_files_matches_the_kernel() {
    check(vec![
        Append {
            path: b("d/sub/deep"),
            data: b("more\n"),
        },
        Truncate {
            path: b("f_all"),
            len: 3,
        },
        Truncate {
            path: b("f_all"),
            len: 10_000,
        },
        Truncate {
            path: b("d/c"),
            len: 0,
        },
        Read { path: b("f_all") },
    ]);
}

#[test]
fn unlink_lower_file_then_recreate_matches_the_kernel() {
    check(vec![
        Unlink { path: b("d/a") },
        Read { path: b("d/a") },
        ReadDir { path: b("d") },
        Create {
            path: b("d/a"),
            mode: 0o600,
        },
        Write {
            path: b("d/a"),
            off: 0,
            data: b("new a"),
        },
        ReadDir { path: b("d") },
    ]);
}

#[test]
fn rmdir_merged_dir_then_mkdir_is_opaque_matches_the_kernel() {
    check(vec![
        Rmdir { path: b("d") },
        Unlink { path: b("d/a") },
        Unlink { path: b("d/b") },
        Unlink { path: b("d/up") },
        Rmdir { path: b("d") },
        Rmdir { path: b("d/sub") },
        Unlink {
            path: b("d/sub/deep"),
        },
        Rmdir { path: b("d/sub") },
        Rmdir { path: b("d") },
        ReadDir { path: b("d") },
        Mkdir {
            path: b("d"),
            mode: 0o700,
        },
        ReadDir { path: b("d") },
        Create {
            path: b("d/c"),
            mode: 0o644,
        },
    ]);
}

#[test]
fn create_over_lower_whiteouts_matches_the_kernel() {
    check(vec![
        Read { path: b("gone") },
        Mkdir {
            path: b("gone"),
            mode: 0o755,
        },
        ReadDir { path: b("gone") },
        Create {
            path: b("gone/x"),
            mode: 0o644,
        },
        Create {
            path: b("d/c"),
            mode: 0o644,
        },
        Create {
            path: b("wh_up"),
            mode: 0o644,
        },
        ReadDir { path: b("") },
    ]);
}

#[test]
fn rename_file_over_lower_file_matches_the_kernel() {
    check(vec![
        Rename {
            from: b("d/a"),
            to: b("f_all"),
            flags: 0,
        },
        Read { path: b("f_all") },
        ReadDir { path: b("d") },
        Rename {
            from: b("d/up"),
            to: b("gone"),
            flags: 0,
        },
        Rename {
            from: b("xf"),
            to: b("d/sub/xf"),
            flags: 0,
        },
    ]);
}

#[test]
fn rename_dirs_with_lower_content_matches_the_kernel() {
    let mv = |from: &str, to: &str, flags: u32| Rename {
        from: b(from),
        to: b(to),
        flags,
    };
    check(vec![
        // A merged directory (three lowers and the upper), renamed in place: a relative
        // redirect, then moved into an upper-only one: absolute.
        mv("d", "e", 0),
        ReadDir { path: b("e") },
        Read {
            path: b("e/sub/deep"),
        },
        mv("e", "uonly/e2", 0),
        ReadDir {
            path: b("uonly/e2"),
        },
        // Its subdirectory (lower only) moves to the root, then back to its old name.
        mv("uonly/e2/sub", "sub2", 0),
        Read {
            path: b("sub2/deep"),
        },
        mv("sub2", "uonly/e2/sub", 0),
        // An opaque lower directory and an empty one.
        mv("opq", "opq2", 0),
        ReadDir { path: b("opq2") },
        mv("emptydir", "uopq/emptydir", 0),
        // Onto a directory name a lower still has, and an exchange of two lower directories.
        Mkdir {
            path: b("h2"),
            mode: 0o755,
        },
        mv("h", "h2", 0),
        ReadDir { path: b("h2") },
        mv("h2", "opq2", libc::RENAME_EXCHANGE),
        ReadDir { path: b("h2") },
        ReadDir { path: b("opq2") },
        // An upper-only directory still moves as before; rmdir of a moved one counts its lower
        // entries.
        mv("uonly", "d", 0),
        Rmdir { path: b("opq2") },
        Unlink { path: b("opq2/a") },
        Unlink { path: b("opq2/b") },
        Rmdir { path: b("opq2") },
        ReadDir { path: b("") },
    ]);
}

#[test]
fn rename_noreplace_and_exchange_matches_the_kernel() {
    check(vec![
        Rename {
            from: b("f_all"),
            to: b("d/a"),
            flags: libc::RENAME_NOREPLACE,
        },
        Rename {
            from: b("f_all"),
            to: b("new"),
            flags: libc::RENAME_NOREPLACE,
        },
        Rename {
            from: b("new"),
            to: b("d/a"),
            flags: libc::RENAME_EXCHANGE,
        },
        Read { path: b("new") },
        Read { path: b("d/a") },
        Rename {
            from: b("d/up"),
            to: b("nope"),
            flags: libc::RENAME_EXCHANGE,
        },
        Rename {
            from: b("uonly/f"),
            to: b("d/b"),
            flags: libc::RENAME_EXCHANGE,
        },
        Rename {
            from: b("new"),
            to: b("emptydir"),
            flags: libc::RENAME_EXCHANGE,
        },
    ]);
}

#[test]
fn rename_type_mismatch_errors_matches_the_kernel() {
    check(vec![
        Rename {
            from: b("f_all"),
            to: b("emptydir"),
            flags: 0,
        },
        Rename {
            from: b("uonly"),
            to: b("f_all"),
            flags: 0,
        },
        Rename {
            from: b("uonly"),
            to: b("uopq"),
            flags: 0,
        },
        Rename {
            from: b("uonly"),
            to: b("uonly/sub"),
            flags: 0,
        },
    ]);
}

#[test]
fn write_to_one_lower_hard_link_matches_the_kernel() {
    check(vec![
        Write {
            path: b("hl1"),
            off: 0,
            data: b("CHANGED"),
        },
        Read { path: b("hl2") },
        Append {
            path: b("h/b"),
            data: b("more"),
        },
        Read { path: b("h/a") },
    ]);
}

#[test]
fn link_then_unlink_original_matches_the_kernel() {
    check(vec![
        Link {
            from: b("f_all"),
            to: b("d/newlink"),
        },
        Unlink { path: b("f_all") },
        Read {
            path: b("d/newlink"),
        },
        Link {
            from: b("d"),
            to: b("dlink"),
        },
        Link {
            from: b("sym"),
            to: b("symlink2"),
        },
        Link {
            from: b("fifo"),
            to: b("fifo2"),
        },
        Link {
            from: b("missing"),
            to: b("x"),
        },
    ]);
}

#[test]
fn symlinks_create_chown_and_follow_matches_the_kernel() {
    check(vec![
        Symlink {
            target: b("d"),
            path: b("sl"),
        },
        ReadDir { path: b("sl") },
        Chown {
            path: b("sym"),
            uid: 3,
            gid: 4,
        },
        Read { path: b("sym") },
        ReadDir { path: b("dirlink") },
        Symlink {
            target: b("x"),
            path: b("f_all"),
        },
        Unlink { path: b("sym") },
        Symlink {
            target: WEIRD.to_vec(),
            path: b("sym"),
        },
    ]);
}

#[test]
fn chmod_chown_utimes_of_lower_objects_matches_the_kernel() {
    check(vec![
        Chmod {
            path: b("ro_file"),
            mode: 0o600,
        },
        Chown {
            path: b("ro_file"),
            uid: 5,
            gid: 6,
        },
        Utimes {
            path: b("ro_file"),
            mtime: (1_234_567, 890),
        },
        Utimes {
            path: b("d/b"),
            mtime: (42, 0),
        },
        Chmod {
            path: b("d"),
            mode: 0o700,
        },
        Chown {
            path: b("emptydir"),
            uid: 7,
            gid: 8,
        },
        Chmod {
            path: b("fifo"),
            mode: 0o600,
        },
        Utimes {
            path: b("sym"),
            mtime: (99, 0),
        },
    ]);
}

#[test]
fn chown_clears_setuid_matches_the_kernel() {
    check(vec![
        Write {
            path: b("suid"),
            off: 0,
            data: b("S"),
        },
        Chown {
            path: b("suid"),
            uid: 1,
            gid: 1,
        },
        Chmod {
            path: b("f_all"),
            mode: 0o6755,
        },
        Chown {
            path: b("f_all"),
            uid: 0,
            gid: 0,
        },
    ]);
}

#[test]
fn xattrs_set_remove_and_copy_up_matches_the_kernel() {
    check(vec![
        SetXattr {
            path: b("xf"),
            name: "user.new".into(),
            value: b("1"),
        },
        RemoveXattr {
            path: b("xf"),
            name: "user.k".into(),
        },
        RemoveXattr {
            path: b("xf"),
            name: "user.missing".into(),
        },
        SetXattr {
            path: b("d"),
            name: "user.dirx".into(),
            value: b("dx"),
        },
        RemoveXattr {
            path: b("d"),
            name: "user.dir".into(),
        },
        RemoveXattr {
            path: b("f_all"),
            name: "user.top".into(),
        },
        SetXattr {
            path: b("d/sub/deep"),
            name: "user.deep".into(),
            value: vec![0, 1, 255],
        },
    ]);
}

#[test]
fn mkfifo_and_fifo_copy_up_matches_the_kernel() {
    check(vec![
        MkFifo {
            path: b("d/fifo2"),
            mode: 0o640,
        },
        MkFifo {
            path: b("fifo"),
            mode: 0o640,
        },
        Chmod {
            path: b("fifo"),
            mode: 0o600,
        },
        MkFifo {
            path: b("gone"),
            mode: 0o600,
        },
    ]);
}

#[test]
fn open_ro_then_write_other_sees_copy_up_matches_the_kernel() {
    check(vec![
        OpenRoThenWriteOther {
            path: b("f_all"),
            data: b("NEW"),
        },
        OpenRoThenWriteOther {
            path: b("xf"),
            data: b("XATTRS"),
        },
        OpenRoThenWriteOther {
            path: b("d/up"),
            data: b("UP"),
        },
    ]);
}

#[test]
fn file_over_dir_and_dir_over_file_matches_the_kernel() {
    check(vec![
        ReadDir {
            path: b("typeflip"),
        },
        Read {
            path: b("typeflip/child"),
        },
        Unlink {
            path: b("typeflip"),
        },
        Mkdir {
            path: b("typeflip"),
            mode: 0o755,
        },
        ReadDir {
            path: b("typeflip"),
        },
    ]);
}

#[test]
fn opaque_dirs_in_lower_and_upper_matches_the_kernel() {
    check(vec![
        ReadDir { path: b("opq") },
        Create {
            path: b("opq/old"),
            mode: 0o644,
        },
        Unlink { path: b("opq/new") },
        ReadDir { path: b("opq") },
        ReadDir { path: b("uopq") },
        Unlink {
            path: b("uopq/mine"),
        },
        Rmdir { path: b("uopq") },
        Mkdir {
            path: b("uopq"),
            mode: 0o755,
        },
        ReadDir { path: b("uopq") },
    ]);
}

#[test]
fn non_utf8_names_matches_the_kernel() {
    let mut other = WEIRD.to_vec();
    other.extend_from_slice(b"-\x80");
    check(vec![
        Write {
            path: WEIRD.to_vec(),
            off: 0,
            data: b("W"),
        },
        Rename {
            from: WEIRD.to_vec(),
            to: other.clone(),
            flags: 0,
        },
        Mkdir {
            path: WEIRD.to_vec(),
            mode: 0o755,
        },
        Create {
            path: [WEIRD, b"/\xfe"].concat(),
            mode: 0o644,
        },
        ReadDir { path: b("") },
        Read { path: other },
    ]);
}

#[test]
fn deep_copy_up_of_parent_chain_matches_the_kernel() {
    check(vec![
        Create {
            path: b("d/sub/deep2"),
            mode: 0o644,
        },
        Chmod {
            path: b("d/sub"),
            mode: 0o700,
        },
        Mkdir {
            path: b("d/sub/new"),
            mode: 0o755,
        },
        Mkdir {
            path: b("d/sub/new/x"),
            mode: 0o755,
        },
        Rename {
            from: b("d/sub/new"),
            to: b("d/new"),
            flags: 0,
        },
    ]);
}

#[test]
fn error_cases_matches_the_kernel() {
    check(vec![
        Unlink { path: b("missing") },
        Unlink { path: b("d") },
        Rmdir { path: b("f_all") },
        Rmdir { path: b("gone") },
        Mkdir {
            path: b("f_all"),
            mode: 0o755,
        },
        Create {
            path: b("f_all"),
            mode: 0o644,
        },
        Create {
            path: b("d/a/x"),
            mode: 0o644,
        },
        Truncate {
            path: b("d"),
            len: 0,
        },
        Write {
            path: b("emptydir"),
            off: 0,
            data: b("x"),
        },
        Read { path: b("gone") },
        ReadDir { path: b("f_all") },
        Chmod {
            path: b("gone"),
            mode: 0o600,
        },
        SetXattr {
            path: b("missing"),
            name: "user.x".into(),
            value: b("1"),
        },
        Rename {
            from: b("gone"),
            to: b("x"),
            flags: 0,
        },
        Rmdir { path: b("") },
    ]);
}

#[test]
fn remove_and_recreate_in_upper_only_dir_matches_the_kernel() {
    check(vec![
        Unlink { path: b("uonly/f") },
        Rmdir { path: b("uonly") },
        Create {
            path: b("uonly"),
            mode: 0o644,
        },
        Append {
            path: b("uonly"),
            data: b("was a dir"),
        },
        Unlink { path: b("d/up") },
        ReadDir { path: b("d") },
    ]);
}

#[test]
fn whiteout_then_rename_onto_it_matches_the_kernel() {
    check(vec![
        Unlink { path: b("d/b") },
        Rename {
            from: b("f_all"),
            to: b("d/b"),
            flags: 0,
        },
        Unlink { path: b("hl2") },
        Rename {
            from: b("hl1"),
            to: b("hl2"),
            flags: libc::RENAME_NOREPLACE,
        },
        Read { path: b("hl2") },
        ReadDir { path: b("") },
    ]);
}

// ---------------------------------------------------------------------------------------------
// Generated: random layer stacks and random sequences (proptest)
// ---------------------------------------------------------------------------------------------
//
// Stacks are built from a small universe of names (`a`, `b`, `c`, up to three levels deep), so
// names collide across layers and ops often hit existing objects of every kind. CI runs a fixed
// seed and budget; `UNIONFUSE_DIFF_LONG=1` runs thousands of sequences, `UNIONFUSE_DIFF_CASES=N`
// and `UNIONFUSE_DIFF_SEED=N` pick the budget and seed, `UNIONFUSE_DIFF_STATS=FILE` receives the
// counts for scripts/test.sh's summary line. A failing case is shrunk and printed; keep it as a
// named `regression_*` test below.

use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestError, TestRunner};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

static QUIET: AtomicBool = AtomicBool::new(false);

/// Generated sequences after which the kernel's upper holds a redirect (a directory with lower
/// copies was renamed): the generator must keep reaching that.
static REDIRECTED: AtomicUsize = AtomicUsize::new(0);

/// Does the upper hold any `overlay.redirect` xattr?
fn has_redirects(upper: &Path) -> bool {
    let name = format!("{}redirect", overlay_prefix());
    list_rel(upper)
        .iter()
        .any(|rel| sys::lgetxattr_opt(&upper.join(rel), &name).is_some())
}

/// Generated runs do not print every step of every passing case.
fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// One object of a generated layer.
#[derive(Clone, Debug)]
enum Obj {
    File {
        data: Vec<u8>,
        mode: u32,
    },
    Dir {
        mode: u32,
        opaque: bool,
    },
    Symlink {
        target: &'static str,
    },
    Fifo,
    Whiteout,
    /// A hard link to `to` in the same layer (skipped unless `to` is a regular file there).
    Link {
        to: &'static str,
    },
}

#[derive(Clone, Debug)]
struct Item {
    path: &'static str,
    obj: Obj,
    uid: u32,
    /// `user.x{n}` = `v{value}` on files and directories.
    xattr: Option<(u8, u8)>,
}

/// Lowers top-first, then the upper.
#[derive(Clone, Debug)]
struct StackSpec {
    lowers: Vec<Vec<Item>>,
    upper: Vec<Item>,
}

impl Item {
    /// This item as Rust source.
    fn source(&self) -> String {
        let obj = match &self.obj {
            Obj::File { data, mode } => {
                format!(
                    "Obj::File {{ data: {}, mode: 0o{mode:o} }}",
                    bytes_src(data)
                )
            }
            Obj::Dir { mode, opaque } => {
                format!("Obj::Dir {{ mode: 0o{mode:o}, opaque: {opaque} }}")
            }
            Obj::Symlink { target } => format!("Obj::Symlink {{ target: {target:?} }}"),
            Obj::Fifo => "Obj::Fifo".into(),
            Obj::Whiteout => "Obj::Whiteout".into(),
            Obj::Link { to } => format!("Obj::Link {{ to: {to:?} }}"),
        };
        format!(
            "Item {{ path: {:?}, obj: {obj}, uid: {}, xattr: {:?} }}",
            self.path, self.uid, self.xattr
        )
    }
}

/// A shrunk failing case as a regression test to paste at the end of this file.
fn regression_source(spec: &StackSpec, ops: &[Op]) -> String {
    let items = |layer: &[Item], indent: &str| {
        layer
            .iter()
            .map(|i| format!("{indent}{},\n", i.source()))
            .collect::<String>()
    };
    let lowers: String = spec
        .lowers
        .iter()
        .map(|l| {
            format!(
                "                vec![\n{}                ],\n",
                items(l, "                    ")
            )
        })
        .collect();
    let ops: String = ops
        .iter()
        .map(|o| format!("            {},\n", o.source()))
        .collect();
    format!(
        "/// Found by generated_sequences_match_the_kernel: WHAT DIFFERS.\n\
         #[test]\n\
         fn regression_NAME() {{\n\
         \x20   check_generated(\n\
         \x20       StackSpec {{\n\
         \x20           lowers: vec![\n{lowers}            ],\n\
         \x20           upper: vec![\n{}            ],\n\
         \x20       }},\n\
         \x20       vec![\n{ops}        ],\n\
         \x20   );\n\
         }}\n",
        items(&spec.upper, "                ")
    )
}

const UNIVERSE: &[&str] = &[
    "a", "b", "c", "a/a", "a/b", "a/c", "b/a", "b/b", "b/c", "c/a", "c/b", "c/c", "a/a/a", "a/a/b",
    "a/b/a", "a/b/b", "b/a/a", "b/b/b", "c/c/c", "c/a/b",
];

/// Names of `UNIVERSE` that have children there (so usually directories), and new names.
const DIRS: &[&str] = &[
    "a", "b", "c", "a/a", "a/b", "b/a", "c/c", "n", "a/n", "c/a/n",
];

fn any_path() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(UNIVERSE)
}

fn any_data(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(b'a'..=b'e', 0..max)
}

fn any_obj() -> impl Strategy<Value = Obj> {
    prop_oneof![
        4 => (any_data(12), proptest::sample::select(&[0o644u32, 0o600, 0o755, 0o444, 0o4755][..]))
            .prop_map(|(data, mode)| Obj::File { data, mode }),
        4 => (proptest::sample::select(&[0o755u32, 0o700, 0o555][..]), proptest::bool::weighted(0.3))
            .prop_map(|(mode, opaque)| Obj::Dir { mode, opaque }),
        1 => proptest::sample::select(&["a", "b", "a/b", "zz", "c/c/c"][..])
            .prop_map(|target| Obj::Symlink { target }),
        1 => Just(Obj::Fifo),
        2 => Just(Obj::Whiteout),
        1 => any_path().prop_map(|to| Obj::Link { to }),
    ]
}

fn any_item() -> impl Strategy<Value = Item> {
    (
        any_path(),
        any_obj(),
        proptest::sample::select(&[0u32, 0, 1000][..]),
        proptest::option::weighted(0.3, (0u8..2, 0u8..3)),
    )
        .prop_map(|(path, obj, uid, xattr)| Item {
            path,
            obj,
            uid,
            xattr,
        })
}

fn any_stack() -> impl Strategy<Value = StackSpec> {
    (
        proptest::collection::vec(proptest::collection::vec(any_item(), 0..8), 1..=4),
        proptest::collection::vec(any_item(), 0..5),
    )
        .prop_map(|(lowers, upper)| StackSpec { lowers, upper })
}

fn p(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn any_op() -> impl Strategy<Value = Op> {
    let path = || any_path().prop_map(p);
    let file_mode = || proptest::sample::select(&[0o644u32, 0o600, 0o755, 0o4755][..]);
    let xname = || (0u8..3).prop_map(|n| format!("user.x{n}"));
    prop_oneof![
        3 => (path(), file_mode()).prop_map(|(path, mode)| Create { path, mode }),
        3 => (path(), 0i64..40, any_data(10)).prop_map(|(path, off, data)| Write { path, off, data }),
        2 => (path(), 0i64..50).prop_map(|(path, len)| Truncate { path, len }),
        2 => (path(), any_data(10)).prop_map(|(path, data)| Append { path, data }),
        3 => path().prop_map(|path| Unlink { path }),
        2 => path().prop_map(|path| Rmdir { path }),
        2 => (path(), proptest::sample::select(&[0o755u32, 0o700][..]))
            .prop_map(|(path, mode)| Mkdir { path, mode }),
        4 => (
            path(),
            path(),
            proptest::sample::select(
                &[0u32, 0, libc::RENAME_NOREPLACE, libc::RENAME_EXCHANGE][..]
            ),
        )
            .prop_map(|(from, to, flags)| Rename { from, to, flags }),
        // Directory renames: these names are directories in most generated layers, so lower,
        // merged and upper-only directories move (through redirects, as on kernel overlay
        // with redirect_dir=on), also into and out of each other.
        5 => (
            proptest::sample::select(DIRS),
            proptest::sample::select(DIRS),
            proptest::sample::select(&[0u32, 0, libc::RENAME_EXCHANGE][..]),
        )
            .prop_map(|(from, to, flags)| Rename { from: p(from), to: p(to), flags }),
        2 => (path(), path()).prop_map(|(from, to)| Link { from, to }),
        1 => (proptest::sample::select(&["a", "b/c", "zz"][..]), path())
            .prop_map(|(t, path)| Symlink { target: p(t), path }),
        2 => (path(), proptest::sample::select(&[0o600u32, 0o755, 0o4755, 0o1777][..]))
            .prop_map(|(path, mode)| Chmod { path, mode }),
        1 => (path(), proptest::sample::select(&[0u32, 1, 1000][..]), 0u32..2)
            .prop_map(|(path, uid, gid)| Chown { path, uid, gid }),
        1 => (path(), 0i64..1000).prop_map(|(path, s)| Utimes { path, mtime: (s, 500) }),
        2 => (path(), xname(), any_data(4))
            .prop_map(|(path, name, value)| SetXattr { path, name, value }),
        1 => (path(), xname()).prop_map(|(path, name)| RemoveXattr { path, name }),
        1 => path().prop_map(|path| MkFifo { path, mode: 0o644 }),
        2 => (path(), any_data(6)).prop_map(|(path, data)| OpenRoThenWriteOther { path, data }),
        3 => path().prop_map(|path| Read { path }),
        2 => path().prop_map(|path| ReadDir { path }),
    ]
}

fn any_ops() -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(any_op(), 1..16)
}

/// True when every existing ancestor of `rel` under `root` is a directory (missing ones are made,
/// 0755) and `rel` itself is free.
fn prepare_parents(root: &Path, rel: &str) -> bool {
    let mut cur = root.to_path_buf();
    let comps: Vec<&str> = rel.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        cur.push(c);
        match sys::lstat(&cur) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {}
            Err(libc::ENOENT) => mkdir(&cur, 0o755),
            _ => return false,
        }
    }
    sys::lstat(&root.join(rel)).is_err()
}

/// True if the directory `rel` of the layer `this` (which exists) merges with a directory of
/// one of the layers `below` (top-first), as kernel overlay's lookup decides it.
fn merges_below(this: &Path, below: &[PathBuf], rel: &Path) -> bool {
    let mut layers: Vec<&Path> = std::iter::once(this)
        .chain(below.iter().map(PathBuf::as_path))
        .collect();
    let mut prefix = PathBuf::new();
    for comp in rel.components() {
        prefix.push(comp);
        let mut next = Vec::new();
        for l in layers {
            let at = l.join(&prefix);
            match sys::lstat(&at) {
                Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                    next.push(l);
                    if opaque_xattr(&at).is_some() {
                        break;
                    }
                }
                Err(libc::ENOENT) => {}
                _ => break,
            }
        }
        layers = next;
    }
    layers.len() > 1
}

/// Build one layer from its items; an item whose place is taken (or under a non-directory) is
/// skipped, so any generated list is a valid layer. Whiteouts are only made in directories that
/// merge with `below` (the layers under this one, already built, top-first): kernel overlay lists
/// a whiteout in a directory of a single layer as a broken entry, and never writes one there.
fn build_layer(root: &Path, items: &[Item], below: &[PathBuf]) {
    for it in items {
        if !prepare_parents(root, it.path) {
            continue;
        }
        if matches!(it.obj, Obj::Whiteout) {
            let parent = Path::new(it.path).parent().unwrap_or(Path::new(""));
            if !merges_below(root, below, parent) {
                continue;
            }
        }
        let at = root.join(it.path);
        match &it.obj {
            Obj::File { data, mode } => write_file_owned(&at, data, *mode, it.uid, it.uid),
            Obj::Dir { mode, opaque } => {
                mkdir(&at, *mode);
                chown(&at, it.uid, it.uid);
                if *opaque {
                    set_opaque(&at);
                }
            }
            Obj::Symlink { target } => symlink(target, &at),
            Obj::Fifo => mkfifo(&at, 0o644),
            Obj::Whiteout => make_whiteout(root, it.path),
            Obj::Link { to } => {
                let src = root.join(to);
                match sys::lstat(&src) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFREG => hardlink(&src, &at),
                    _ => continue,
                }
            }
        }
        if let (Some((n, v)), Obj::File { .. } | Obj::Dir { .. }) = (it.xattr, &it.obj) {
            set_xattr(&at, &format!("user.x{n}"), format!("v{v}").as_bytes());
        }
    }
    let tree = Tree::snapshot(root, SnapOpts::VIEW);
    for rel in tree.entries.keys().rev() {
        set_mtime(&root.join(rel), 1_500_000_000);
    }
}

fn build_spec(spec: &StackSpec) -> Stack {
    let s = Stack::new(spec.lowers.len());
    for (i, items) in spec.lowers.iter().enumerate().rev() {
        build_layer(s.lower(i), items, &s.lowers[i + 1..]);
    }
    build_layer(s.upper(), &spec.upper, &s.lowers);
    s
}

/// The differential check of one generated case: two identical stacks built from `spec`.
fn run_generated(spec: &StackSpec, ops: &[Op], swap: bool) -> Result<(), String> {
    let (ustack, kstack) = (build_spec(spec), build_spec(spec));
    differential_on(&ustack, &kstack, ops, swap)?;
    if has_redirects(kstack.upper()) {
        REDIRECTED.fetch_add(1, Ordering::Relaxed);
        // The kernel's upper, redirects and all, becomes the middle layer under a new upper
        // (as a container's upper becomes an image layer), and the sequence runs again on
        // identical copies: lookups through redirects found in a lower layer.
        let (u2, k2) = (kstack.upper_as_lower(true), kstack.upper_as_lower(true));
        differential_on(&u2, &k2, ops, swap)
            .map_err(|e| format!("with the kernel's upper as a lower, a second run: {e}"))?;
    }
    Ok(())
}

#[test]
fn generated_sequences_match_the_kernel() {
    // Kernel overlay is the oracle: not mountable by an ordinary user (mode `user`).
    if !require_fuse() || !common::overlay_available() {
        return;
    }
    QUIET.store(true, Ordering::Relaxed);
    let long = std::env::var("UNIONFUSE_DIFF_LONG").as_deref() == Ok("1");
    let cases = env_num("UNIONFUSE_DIFF_CASES", if long { 3000 } else { 300 });
    let seed = env_num("UNIONFUSE_DIFF_SEED", 0x0075_6e69_6f6e);
    let config = Config {
        cases: cases as u32,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        max_shrink_iters: 400,
        ..Config::default()
    };
    let (seqs, steps) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let start = std::time::Instant::now();
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(any_stack(), any_ops()), |(spec, ops)| {
        seqs.fetch_add(1, Ordering::Relaxed);
        steps.fetch_add(ops.len(), Ordering::Relaxed);
        run_generated(&spec, &ops, true).map_err(TestCaseError::fail)
    });
    let (seqs, steps) = (seqs.into_inner(), steps.into_inner());
    let divergences = usize::from(result.is_err());
    let redirected = REDIRECTED.load(Ordering::Relaxed);
    let line = format!(
        "differential: {seqs} sequences, {steps} steps, {divergences} divergences, \
         {redirected} with directory renames through redirects (each run again over that \
         upper as a lower) \
         (seed {seed}, {cases} cases, {:.0}s)",
        start.elapsed().as_secs_f64()
    );
    eprintln!("{line}");
    if let Ok(f) = std::env::var("UNIONFUSE_DIFF_STATS") {
        let _ = std::fs::write(f, format!("{line}\n"));
    }
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (spec, ops))) => panic!(
            "divergence; minimal case, as a regression test for the end of \
             tests/differential.rs:\n\n{}\n{why}",
            regression_source(&spec, &ops)
        ),
        Err(e) => panic!("{e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Regressions found by the generator (shrunk cases)
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn check_generated(spec: StackSpec, ops: Vec<Op>) {
    // Kernel overlay is the oracle: not mountable by an ordinary user (mode `user`).
    if !require_fuse() || !common::overlay_available() {
        return;
    }
    if let Err(e) = run_generated(&spec, &ops, true) {
        panic!("{e}");
    }
}

fn file(path: &'static str) -> Item {
    Item {
        path,
        obj: Obj::File {
            data: Vec::new(),
            mode: 0o644,
        },
        uid: 0,
        xattr: None,
    }
}

/// Found with UNIONFUSE_DIFF_SEED=7. A RENAME_EXCHANGE that fails with EXDEV (the target is a
/// directory with lower content) has already copied up its source: the lower hard link a/a/b,
/// a/c is broken (a/a/b shows st_nlink 1 and its own st_ino) although nothing was renamed.
/// Kernel overlay refuses before copying anything up (the upper stays empty).
#[test]
fn regression_exchange_exdev_copies_up_source() {
    let lower = vec![
        file("a/b/a"),
        file("a/a/b"),
        Item {
            path: "a/c",
            obj: Obj::Link { to: "a/a/b" },
            uid: 0,
            xattr: None,
        },
    ];
    check_generated(
        StackSpec {
            lowers: vec![lower],
            upper: vec![],
        },
        vec![Rename {
            from: b("a/a/b"),
            to: b("a/b"),
            flags: libc::RENAME_EXCHANGE,
        }],
    );
}

/// The generator's failure path, without mounts: a property that fails on any sequence with a
/// rename shrinks to one rename on a near-empty stack, and the case prints as a regression
/// test in the form of those above.
#[test]
fn a_divergence_shrinks_and_prints_a_ready_to_paste_regression() {
    let config = Config {
        cases: 200,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(1),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&(any_stack(), any_ops()), |(_, ops)| {
        match ops.iter().any(|o| matches!(o, Rename { .. })) {
            true => Err(TestCaseError::fail("a rename")),
            false => Ok(()),
        }
    });
    let Err(TestError::Fail(_, (spec, ops))) = result else {
        panic!("no sequence with a rename in 200 cases: {result:?}");
    };
    assert_eq!(ops.len(), 1, "not shrunk to one step: {ops:?}");
    let items: usize = spec.lowers.iter().map(Vec::len).sum::<usize>() + spec.upper.len();
    assert_eq!(items, 0, "stack not shrunk: {spec:?}");
    let src = regression_source(&spec, &ops);
    eprintln!("{src}");
    assert!(
        src.contains("fn regression_NAME() {\n    check_generated(\n"),
        "{src}"
    );
    assert!(src.contains("            Rename { from: b(\""), "{src}");
}
