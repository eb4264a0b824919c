//! Concurrency through a real mount of the unionfuse binary: racing first writes to lower files
//! (copy-up must happen exactly once and lose no write), and a few seconds of mixed namespace
//! and data operations from several threads, checked against a per-thread model; directory
//! listings read while names come and go. Needs root
//! and /dev/fuse (see `common::require_fuse`). Run with `--test-threads=1`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::sys::{errno_name, io_errno};
use common::{Rng, Stack, UnionMount, pattern, require_fuse};

/// The whole test must finish within this, or it is declared hung.
const GLOBAL_TIMEOUT: Duration = Duration::from_secs(60);

/// Every work dir of the stack (one per mount, `base/work*`) holds nothing but empty dirs.
#[track_caller]
fn assert_work_dirs_empty(stack: &Stack) {
    if common::kernel_backend() {
        // Kernel overlay keeps a whiteout in its work dir for reuse: not our rule to check.
        return;
    }
    for ent in fs::read_dir(stack.base.path()).unwrap() {
        let ent = ent.unwrap();
        let name = ent.file_name().to_string_lossy().into_owned();
        if !name.starts_with("work") {
            continue;
        }
        for sub in fs::read_dir(ent.path()).unwrap() {
            let sub = sub.unwrap();
            let p = sub.path();
            assert!(
                sub.file_type().unwrap().is_dir(),
                "stray file {} in the work dir",
                p.display()
            );
            let left: Vec<_> = fs::read_dir(&p)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(left.is_empty(), "{} not empty: {left:?}", p.display());
        }
    }
}

/// All paths (relative) under `root`, directories included.
fn all_paths(root: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for ent in fs::read_dir(root.join(&rel)).unwrap() {
            let ent = ent.unwrap();
            let r = rel.join(ent.file_name());
            if ent.file_type().unwrap().is_dir() {
                todo.push(r.clone());
            }
            out.insert(r);
        }
    }
    out
}

/// Join `rx`'s `n` results, or fail if they do not all arrive by `deadline`.
fn collect<T>(rx: &mpsc::Receiver<T>, n: usize, deadline: Instant, what: &str) -> Vec<T> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(v) => out.push(v),
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "{what}: only {} of {n} threads finished within {GLOBAL_TIMEOUT:?}: hang or deadlock",
                out.len()
            ),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!(
                    "{what}: a worker thread panicked ({} of {n} reported)",
                    out.len()
                )
            }
        }
    }
    out
}

// ===== (a) racing first writes ============================================================

const BIG: usize = 4 << 20;
const REGION: usize = 4096;
const WRITERS: usize = 8;

/// Where writer `k` writes (unaligned, so partial pages are involved) and what.
fn region(k: usize) -> (u64, Vec<u8>) {
    let off = k * (BIG / WRITERS) + 1234 + k * 17;
    (off as u64, vec![0xa0 + k as u8; REGION])
}

/// `WRITERS` threads per file open every file O_WRONLY at the same instant and each write its
/// own region; then the upper copy must hold all regions over the lower's original bytes.
fn racing_writers(files: &[&str]) {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    let originals: Vec<Vec<u8>> = files
        .iter()
        .enumerate()
        .map(|(i, rel)| {
            let data = pattern(BIG, i as u64 + 1);
            let p = stack.lower(0).join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, &data).unwrap();
            data
        })
        .collect();
    let before = stack.lower_digests();
    let deadline = Instant::now() + GLOBAL_TIMEOUT;
    {
        let m = UnionMount::new(&stack);
        let n = files.len() * WRITERS;
        let barrier = Arc::new(Barrier::new(n));
        let (tx, rx) = mpsc::channel();
        for rel in files {
            for k in 0..WRITERS {
                let (path, barrier, tx) = (m.path(rel), barrier.clone(), tx.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    let res = (|| -> std::io::Result<()> {
                        let f = OpenOptions::new().write(true).open(&path)?;
                        let (off, data) = region(k);
                        f.write_all_at(&data, off)?;
                        f.sync_all()?;
                        Ok(())
                    })();
                    let _ = tx.send(res.map_err(|e| format!("{} writer {k}: {e}", path.display())));
                });
            }
        }
        drop(tx);
        let errors: Vec<String> = collect(&rx, n, deadline, "racing writers")
            .into_iter()
            .filter_map(Result::err)
            .collect();
        assert!(errors.is_empty(), "writes failed: {errors:#?}");

        let upper = stack.upper();
        let mut want_paths = BTreeSet::new();
        for (rel, orig) in files.iter().zip(&originals) {
            let mut want = orig.clone();
            for k in 0..WRITERS {
                let (off, data) = region(k);
                want[off as usize..off as usize + REGION].copy_from_slice(&data);
            }
            let up = upper.join(rel);
            let meta = fs::symlink_metadata(&up)
                .unwrap_or_else(|e| panic!("{} not copied up: {e}", up.display()));
            assert!(meta.is_file());
            assert_eq!(meta.nlink(), 1, "{rel}: more than one link to the copy");
            let got = fs::read(&up).unwrap();
            assert_eq!(got.len(), BIG, "{rel}: size of the upper copy");
            for k in 0..WRITERS {
                let (off, data) = region(k);
                assert!(
                    got[off as usize..off as usize + REGION] == data[..],
                    "{rel}: region of writer {k} lost"
                );
            }
            if let Some(i) = (0..BIG).find(|i| got[*i] != want[*i]) {
                panic!("{rel}: upper copy differs from lower+regions at byte {i}");
            }
            // What the mount shows is the same.
            assert!(
                fs::read(m.path(rel)).unwrap() == want,
                "{rel}: merged view differs"
            );
            let mut p = PathBuf::new();
            for c in Path::new(rel).components() {
                p.push(c);
                want_paths.insert(p.clone());
            }
        }
        // Exactly one copy of each file and nothing else in the upper.
        assert_eq!(
            all_paths(upper),
            want_paths,
            "upper holds unexpected entries"
        );
        assert_work_dirs_empty(&stack);
    }
    stack.assert_lowers_unchanged(&before);
    assert_work_dirs_empty(&stack);
}

#[test]
fn racing_first_writes_copy_up_once() {
    racing_writers(&["big"]);
}

#[test]
fn racing_first_writes_to_twenty_lower_files_copy_each_up_once() {
    let names: Vec<String> = (0..20).map(|i| format!("d/e/f{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    racing_writers(&refs);
}

// ===== (b) mixed operations =================================================================

const THREADS: usize = 8;
const RUN_FOR: Duration = Duration::from_secs(5);
const PRIVATE_FILES: u64 = 8;
const PRIVATE_DIRS: u64 = 4;
const SHARED_FILES: u64 = 10;
const SHARED_DIRS: u64 = 4;

/// A self-describing payload: `<writer:iteration:len>` then bytes derived from both, so a
/// file's content can be checked without knowing who wrote it last.
fn payload(writer: u64, iter: u64, len: usize) -> Vec<u8> {
    let mut v = format!("<{writer}:{iter}:{len}>").into_bytes();
    let fill = pattern(len.saturating_sub(v.len()), writer << 32 | iter);
    v.extend_from_slice(&fill);
    v.truncate(len.max(v.len()));
    v
}

/// Is `data` exactly one payload (not torn, not mixed)?
fn well_formed(data: &[u8]) -> bool {
    let Some(end) = data.iter().position(|b| *b == b'>') else {
        return false;
    };
    let Ok(head) = std::str::from_utf8(&data[1..end]) else {
        return false;
    };
    let parts: Vec<u64> = head.split(':').filter_map(|s| s.parse().ok()).collect();
    parts.len() == 3 && data[0] == b'<' && payload(parts[0], parts[1], parts[2] as usize) == data
}

const LOWER_WRITER: u64 = 999;

/// What a thread believes its private dir `p{t}` holds.
#[derive(Default, Clone, Debug)]
struct Model {
    files: BTreeMap<String, Vec<u8>>,
    dirs: BTreeSet<String>,
}

impl Model {
    fn names(&self) -> BTreeSet<String> {
        self.files.keys().chain(self.dirs.iter()).cloned().collect()
    }
}

fn build_mixed_lower(lower: &Path) -> Vec<Model> {
    for k in 0..SHARED_FILES {
        let p = lower.join(format!("shared/s{k}"));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, payload(LOWER_WRITER, k, 100 + k as usize * 997)).unwrap();
    }
    for k in 0..SHARED_DIRS {
        fs::create_dir_all(lower.join(format!("shared/sd{k}"))).unwrap();
    }
    (0..THREADS)
        .map(|t| {
            let mut m = Model::default();
            let dir = lower.join(format!("p{t}"));
            fs::create_dir_all(&dir).unwrap();
            for k in 0..4u64 {
                let data = payload(LOWER_WRITER, 100 * t as u64 + k, 3000 + k as usize * 5000);
                fs::write(dir.join(format!("f{k}")), &data).unwrap();
                m.files.insert(format!("f{k}"), data);
            }
            fs::create_dir(dir.join("d0")).unwrap();
            m.dirs.insert("d0".into());
            m
        })
        .collect()
}

/// One thread's random operations on the mount at `mnt` until `stop`: its private dir `p{t}`
/// (checked against `model`) and the dir `shared` all threads race in. Returns the final model,
/// the unexpected outcomes and the number of operations.
fn worker(t: usize, mnt: PathBuf, mut model: Model, stop: Instant) -> (Model, Vec<String>, u64) {
    let mut rng = Rng::new(0x1234_5678_9abc_def1 ^ (t as u64 + 1));
    let mine = mnt.join(format!("p{t}"));
    let shared = mnt.join("shared");
    let mut bad: Vec<String> = Vec::new();
    let mut ops = 0u64;
    let mut iter = 0u64;
    let tw = t as u64;
    // A private operation: every error is unexpected.
    macro_rules! private {
        ($what:expr, $e:expr) => {
            if let Err(e) = $e {
                bad.push(format!(
                    "t{t} {}: {} ({e})",
                    $what,
                    errno_name(io_errno(&e))
                ));
            }
        };
    }
    // A shared-dir operation: EEXIST/ENOENT are races another thread may win.
    macro_rules! shared {
        ($what:expr, $e:expr) => {
            match $e {
                Ok(_) => {}
                Err(e) if matches!(io_errno(&e), libc::EEXIST | libc::ENOENT) => {}
                Err(e) => bad.push(format!(
                    "t{t} {}: {} ({e})",
                    $what,
                    errno_name(io_errno(&e))
                )),
            }
        };
    }
    while Instant::now() < stop {
        iter += 1;
        ops += 1;
        match rng.below(16) {
            0 | 1 => {
                let name = format!("f{}", rng.below(PRIVATE_FILES));
                if model.dirs.contains(&name) {
                    continue;
                }
                let data = payload(tw, iter, rng.below(70_000) as usize + 1);
                let p = mine.join(&name);
                private!(
                    format!("write {}", p.display()),
                    (|| {
                        let mut f = OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(true)
                            .mode(0o644)
                            .open(&p)?;
                        f.write_all(&data)
                    })()
                );
                model.files.insert(name, data);
            }
            2 => {
                let Some(name) = model
                    .files
                    .keys()
                    .nth(rng.below(16) as usize % model.files.len().max(1))
                    .cloned()
                else {
                    continue;
                };
                let cur = model.files.get_mut(&name).unwrap();
                let off = rng.below(cur.len() as u64 + 1) as usize;
                let patch = format!("[t{t}i{iter}]").into_bytes();
                let p = mine.join(&name);
                private!(
                    format!("pwrite {}", p.display()),
                    OpenOptions::new()
                        .write(true)
                        .open(&p)
                        .and_then(|f| f.write_all_at(&patch, off as u64))
                );
                if cur.len() < off + patch.len() {
                    cur.resize(off + patch.len(), 0);
                }
                cur[off..off + patch.len()].copy_from_slice(&patch);
            }
            3 => {
                let a = format!("f{}", rng.below(PRIVATE_FILES));
                let b = format!("f{}", rng.below(PRIVATE_FILES));
                if a == b || !model.files.contains_key(&a) {
                    continue;
                }
                private!(
                    format!("rename {a} -> {b} in p{t}"),
                    fs::rename(mine.join(&a), mine.join(&b))
                );
                let data = model.files.remove(&a).unwrap();
                model.files.insert(b, data);
            }
            4 => {
                let name = format!("f{}", rng.below(PRIVATE_FILES));
                let r = fs::remove_file(mine.join(&name));
                if model.files.remove(&name).is_some() {
                    private!(format!("unlink p{t}/{name}"), r);
                } else {
                    match r {
                        Err(e) if io_errno(&e) == libc::ENOENT => {}
                        other => bad.push(format!("t{t} unlink of missing p{t}/{name}: {other:?}")),
                    }
                }
            }
            5 => {
                let name = format!("d{}", rng.below(PRIVATE_DIRS));
                let r = fs::create_dir(mine.join(&name));
                if model.dirs.insert(name.clone()) {
                    private!(format!("mkdir p{t}/{name}"), r);
                } else {
                    match r {
                        Err(e) if io_errno(&e) == libc::EEXIST => {}
                        other => bad.push(format!("t{t} mkdir of existing p{t}/{name}: {other:?}")),
                    }
                }
            }
            6 => {
                let name = format!("d{}", rng.below(PRIVATE_DIRS));
                let r = fs::remove_dir(mine.join(&name));
                if model.dirs.remove(&name) {
                    private!(format!("rmdir p{t}/{name}"), r);
                } else {
                    match r {
                        Err(e) if io_errno(&e) == libc::ENOENT => {}
                        other => bad.push(format!("t{t} rmdir of missing p{t}/{name}: {other:?}")),
                    }
                }
            }
            7 => match fs::read_dir(&mine).and_then(|rd| {
                rd.map(|e| e.map(|e| e.file_name()))
                    .collect::<Result<Vec<_>, _>>()
            }) {
                Ok(names) => {
                    let got: Vec<String> = names
                        .iter()
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect();
                    let set: BTreeSet<String> = got.iter().cloned().collect();
                    if set.len() != got.len() || set != model.names() {
                        bad.push(format!(
                            "t{t} readdir p{t}: got {got:?}, want {:?}",
                            model.names()
                        ));
                    }
                }
                Err(e) => bad.push(format!("t{t} readdir p{t}: {e}")),
            },
            8 => {
                let Some((name, want)) = model
                    .files
                    .iter()
                    .nth(rng.below(16) as usize % model.files.len().max(1))
                else {
                    continue;
                };
                match fs::read(mine.join(name)) {
                    Ok(got) if &got == want => {}
                    Ok(got) => bad.push(format!(
                        "t{t} read p{t}/{name}: {} bytes, want {} (content differs)",
                        got.len(),
                        want.len()
                    )),
                    Err(e) => bad.push(format!("t{t} read p{t}/{name}: {e}")),
                }
            }
            9 | 10 => {
                // Each shared file has one writer: O_EXCL, so no two writes ever mix.
                let p = shared.join(format!("s{}", rng.below(SHARED_FILES)));
                let data = payload(tw, iter, rng.below(40_000) as usize + 1);
                let f = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&p);
                match f {
                    Ok(mut f) => private!(format!("write new {}", p.display()), f.write_all(&data)),
                    Err(e) if matches!(io_errno(&e), libc::EEXIST | libc::ENOENT) => {}
                    Err(e) => bad.push(format!(
                        "t{t} create {}: {} ({e})",
                        p.display(),
                        errno_name(io_errno(&e))
                    )),
                }
            }
            11 => {
                let a = shared.join(format!("s{}", rng.below(SHARED_FILES)));
                let b = shared.join(format!("s{}", rng.below(SHARED_FILES)));
                shared!(
                    format!("rename {} -> {}", a.display(), b.display()),
                    fs::rename(&a, &b)
                );
            }
            12 => {
                let p = shared.join(format!("s{}", rng.below(SHARED_FILES)));
                shared!(format!("unlink {}", p.display()), fs::remove_file(&p));
            }
            13 => {
                let p = shared.join(format!("sd{}", rng.below(SHARED_DIRS)));
                if rng.below(2) == 0 {
                    shared!(format!("mkdir {}", p.display()), fs::create_dir(&p));
                } else {
                    shared!(format!("rmdir {}", p.display()), fs::remove_dir(&p));
                }
            }
            14 => match fs::read_dir(&shared) {
                Ok(rd) => {
                    let mut seen = BTreeSet::new();
                    for e in rd {
                        match e {
                            Ok(e) => {
                                let n = e.file_name().to_string_lossy().into_owned();
                                if !seen.insert(n.clone()) {
                                    bad.push(format!("t{t} readdir shared: {n} listed twice"));
                                }
                            }
                            Err(e) => bad.push(format!("t{t} readdir shared entry: {e}")),
                        }
                    }
                }
                Err(e) => bad.push(format!("t{t} readdir shared: {e}")),
            },
            _ => {
                // stat of a shared name: it may have just gone (ENOENT).
                let p = shared.join(format!("s{}", rng.below(SHARED_FILES)));
                shared!(format!("stat {}", p.display()), fs::symlink_metadata(&p));
            }
        }
    }
    (model, bad, ops)
}

/// The merged view at `mnt` matches the models and the shared dir holds only whole payloads.
fn check_view(mnt: &Path, models: &[Model], what: &str) {
    let mut bad = Vec::new();
    for (t, m) in models.iter().enumerate() {
        let dir = mnt.join(format!("p{t}"));
        let got: BTreeSet<String> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        if got != m.names() {
            bad.push(format!("p{t}: names {got:?}, want {:?}", m.names()));
        }
        for (name, want) in &m.files {
            match fs::read(dir.join(name)) {
                Ok(data) if &data == want => {}
                Ok(data) => bad.push(format!(
                    "p{t}/{name}: {} bytes, want {} (content differs)",
                    data.len(),
                    want.len()
                )),
                Err(e) => bad.push(format!("p{t}/{name}: {e}")),
            }
        }
        for d in &m.dirs {
            let n = fs::read_dir(dir.join(d)).map(|rd| rd.count());
            if !matches!(n, Ok(0)) {
                bad.push(format!("p{t}/{d}: {n:?}, want an empty dir"));
            }
        }
    }
    for ent in fs::read_dir(mnt.join("shared")).unwrap() {
        let ent = ent.unwrap();
        let name = ent.file_name().to_string_lossy().into_owned();
        let p = ent.path();
        if name.starts_with("sd") {
            let n = fs::read_dir(&p).map(|rd| rd.count());
            if !matches!(n, Ok(0)) {
                bad.push(format!("shared/{name}: {n:?}, want an empty dir"));
            }
        } else if !well_formed(&fs::read(&p).unwrap()) {
            bad.push(format!("shared/{name}: torn or mixed content"));
        }
    }
    assert!(bad.is_empty(), "{what}: {bad:#?}");
}

/// The daemon's warnings and errors (its panics among them), at most 40 lines.
fn log_warnings(m: &UnionMount) -> String {
    let log = m.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("panicked"))
        .take(40)
        .collect();
    lines.join("\n")
}

#[test]
fn mixed_operations_from_many_threads_match_each_threads_model() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    let models = build_mixed_lower(stack.lower(0));
    let before = stack.lower_digests();
    let deadline = Instant::now() + GLOBAL_TIMEOUT;
    let results = {
        let m = UnionMount::new(&stack);
        let stop = Instant::now() + RUN_FOR;
        let (tx, rx) = mpsc::channel();
        for (t, model) in models.into_iter().enumerate() {
            let (tx, mnt) = (tx.clone(), m.mnt().to_path_buf());
            std::thread::spawn(move || {
                let r = worker(t, mnt, model, stop);
                let _ = tx.send((t, r));
            });
        }
        drop(tx);
        let mut results = collect(&rx, THREADS, deadline, "mixed operations");
        results.sort_by_key(|(t, _)| *t);
        let errors: Vec<String> = results.iter().flat_map(|(_, r)| r.1.clone()).collect();
        let ops: u64 = results.iter().map(|(_, r)| r.2).sum();
        eprintln!("mixed operations: {ops} operations by {THREADS} threads");
        assert!(
            errors.is_empty(),
            "unexpected errors ({}): {errors:#?}\n--- daemon warnings ---\n{}",
            errors.len(),
            log_warnings(&m)
        );
        let models: Vec<Model> = results.iter().map(|(_, r)| r.0.clone()).collect();
        check_view(m.mnt(), &models, "live mount");
        assert_work_dirs_empty(&stack);
        let log = m.log_text();
        assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
        models
    };
    stack.assert_lowers_unchanged(&before);
    assert_work_dirs_empty(&stack);
    // What landed on disk: a fresh mount, and kernel overlay on the same layers, agree.
    {
        let m = UnionMount::new(&stack);
        check_view(m.mnt(), &results, "after remount");
    }
    if common::overlay_available() && !common::kernel_backend() {
        let k = common::KernelOverlay::new(&stack);
        check_view(k.mnt(), &results, "kernel overlay on the same layers");
    }
    assert!(
        Instant::now() < deadline,
        "the test took longer than {GLOBAL_TIMEOUT:?}"
    );
}

/// Readers list a big directory (half its names in a lower, half in the upper) over and over
/// while a writer creates, removes and renames other names in it. Every listing must hold each
/// name that stays the whole time exactly once, nothing twice, and only names the writer ever
/// made. The kernel reads a directory in batches, each batch from whichever listing the daemon
/// has (kept between batches, retaken on change): this is what keeps them consistent.
#[test]
fn listings_under_churn_hold_every_stable_name_once() {
    if !require_fuse() {
        return;
    }
    let stack = Stack::new(1);
    let stable: BTreeSet<String> = (0..2000).map(|i| format!("stable-{i:04}")).collect();
    for (i, n) in stable.iter().enumerate() {
        let layer = if i % 2 == 0 {
            stack.lower(0)
        } else {
            stack.upper()
        };
        common::write_file(&layer.join("d").join(n), b"", 0o644);
    }
    let deadline = Instant::now() + GLOBAL_TIMEOUT;
    let m = UnionMount::new(&stack);
    let dir = m.path("d");
    let stop = Instant::now() + Duration::from_secs(3);
    let writer = {
        let dir = dir.clone();
        std::thread::spawn(move || {
            let mut rng = Rng::new(7);
            let mut n = 0u64;
            while Instant::now() < stop {
                let a = dir.join(format!("churn-{}", rng.below(200)));
                let b = dir.join(format!("churn-{}", rng.below(200)));
                let _ = match rng.below(3) {
                    0 => fs::write(&a, b"x"),
                    1 => fs::remove_file(&a),
                    _ => fs::rename(&a, &b),
                };
                n += 1;
            }
            n
        })
    };
    let (tx, rx) = mpsc::channel();
    for r in 0..3 {
        let (tx, dir, stable) = (tx.clone(), dir.clone(), stable.clone());
        std::thread::spawn(move || {
            let mut bad = Vec::new();
            let mut listings = 0;
            while Instant::now() < stop && bad.is_empty() {
                let mut seen = BTreeMap::<String, u32>::new();
                match fs::read_dir(&dir) {
                    Ok(rd) => {
                        for e in rd {
                            match e {
                                Ok(e) => {
                                    let name = e.file_name().into_string().unwrap();
                                    *seen.entry(name).or_default() += 1;
                                }
                                Err(e) => bad.push(format!("reader {r}: entry: {e}")),
                            }
                        }
                    }
                    Err(e) => bad.push(format!("reader {r}: read_dir: {e}")),
                }
                for (name, count) in &seen {
                    if *count > 1 {
                        bad.push(format!("reader {r}: {name} listed {count} times"));
                    }
                    if !stable.contains(name) && !name.starts_with("churn-") {
                        bad.push(format!("reader {r}: {name} was never made"));
                    }
                }
                let missing: Vec<_> = stable.iter().filter(|n| !seen.contains_key(*n)).collect();
                if !missing.is_empty() {
                    bad.push(format!(
                        "reader {r}: {} stable names missing, e.g. {:?}",
                        missing.len(),
                        &missing[..missing.len().min(3)]
                    ));
                }
                listings += 1;
            }
            let _ = tx.send((listings, bad));
        });
    }
    drop(tx);
    let results = collect(&rx, 3, deadline, "readers");
    let ops = writer.join().unwrap();
    let bad: Vec<String> = results.iter().flat_map(|(_, b)| b.clone()).collect();
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    let listings: u32 = results.iter().map(|(l, _)| l).sum();
    assert!(
        listings >= 3 && ops > 0,
        "{listings} listings, {ops} writer ops"
    );
}
