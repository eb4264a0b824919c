//! Randomised (fuzz) property tests without FUSE, time-bounded: each target runs for
//! `UNIONFUSE_FUZZ_SECS` seconds (default 10; scripts/fuzz.sh runs longer) with a seed printed
//! at the start (`UNIONFUSE_SEED=N` replays it). Inputs are random bytes plus random mixes of
//! the tokens each parser cares about, so both garbage and near-valid input are covered.
//!
//! Targets and properties:
//! - `MountOpts::parse_into`, `split_options`, `split_lowerdir`, `parse_id_map`: never panic;
//!   deterministic; an accepted id map is a bijection over its ranges.
//! - `compat::parse` (fuse-overlayfs's argv, non-UTF-8 bytes included) and
//!   `is_compat_invocation`: never panic. Paths are random names under a temp dir that has no
//!   such entries, so nothing is created.
//! - `whiteout::Format` escaping: `unescape(escape(n)) == n` for every name, and no name set
//!   through the mount can be stored as overlay metadata (escape never yields a private name).
//! - Tar import (`image::unpack::Unpacker`): random archives (hostile paths, `..`, absolute
//!   names, symlinks followed by entries through them, hard links out of the layer, whiteouts,
//!   devices, truncated and bit-flipped archives): never panics, never writes outside the
//!   target directory (a canary next to it is unchanged).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Rng, env_num};
use unionfuse::config::{self, MountOpts};
use unionfuse::idmap;
use unionfuse::whiteout::Format;

mod common;

fn budget() -> Duration {
    Duration::from_secs(env_num("UNIONFUSE_FUZZ_SECS", 10))
}

/// Run `f` with fresh random input until the budget is spent; returns the iteration count.
fn fuzz(what: &str, mut f: impl FnMut(&mut Rng)) -> u64 {
    let mut rng = Rng::from_env(what);
    let stop = Instant::now() + budget();
    let mut n = 0;
    while Instant::now() < stop {
        // A per-iteration seed, so a failure names the one input to replay.
        let seed = rng.next();
        let mut r = Rng::new(seed);
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut r)));
        if let Err(p) = res {
            eprintln!("{what}: failed on iteration {n}, input seed {seed}");
            std::panic::resume_unwind(p);
        }
        n += 1;
    }
    eprintln!("{what}: {n} inputs");
    n
}

const OPT_TOKENS: &[&str] = &[
    "ro",
    "rw",
    "allow_other",
    "default_permissions",
    "volatile",
    "userxattr",
    "nouserxattr",
    "threads=",
    "timeout=",
    "lowerdir=",
    "upperdir=",
    "workdir=",
    "uidmapping=",
    "gidmapping=",
    "squash_to_root",
    "squash_to_uid=",
    "squash_to_gid=",
    "static_nlink",
    "noacl",
    "fsname=",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "debug",
    "passthrough",
    "nopassthrough",
    "lowerpassthrough",
    "nolowerpassthrough",
    "context=\"system_u:object_r:c1,c2\"",
    "0:1000:1",
    "0:4294967294:1",
    "4294967295",
    "18446744073709551616",
    "-1",
    ":",
    "::",
    ",",
    ",,",
    "\\",
    "\\,",
    "\\:",
    "\"",
    "=",
    "==",
    "/tmp",
    "/",
    "..",
    "\u{0}",
    "é",
    "\u{202e}",
];

/// A random option string: tokens, numbers and random chars.
fn opt_string(r: &mut Rng) -> String {
    let mut s = String::new();
    for _ in 0..r.below(12) {
        match r.below(5) {
            0 | 1 => {
                let t = *r.pick::<&str>(OPT_TOKENS);
                s.push_str(t)
            }
            2 => s.push_str(&r.next().to_string()[..(1 + r.below(10) as usize).min(19)]),
            3 => s.push(char::from_u32(r.below(0x80) as u32).unwrap_or('x')),
            _ => s.push(char::from_u32(r.below(0x11_0000) as u32).unwrap_or('\u{fffd}')),
        }
        if r.below(3) == 0 {
            s.push(',');
        }
    }
    s
}

#[test]
fn mount_option_parser_never_panics_and_is_deterministic() {
    fuzz("parse_into", |r| {
        let s = opt_string(r);
        let mut a = MountOpts::default();
        let ra = a.parse_into(&s).map_err(|e| e.to_string());
        let mut b = MountOpts::default();
        let rb = b.parse_into(&s).map_err(|e| e.to_string());
        assert_eq!(ra, rb, "not deterministic on {s:?}");
        assert_eq!(format!("{a:?}"), format!("{b:?}"), "{s:?}");
        if ra.is_ok() {
            for map in [&a.uid_map, &a.gid_map].into_iter().flatten() {
                check_bijection(map, &s);
            }
        }
        let _ = config::split_options(&s);
        let _ = config::split_lowerdir(&s);
        if let Ok(map) = config::parse_id_map(&s) {
            check_bijection(&map, &s);
        }
    });
}

fn check_bijection(map: &[idmap::IdRange], input: &str) {
    for rg in map {
        for k in [0, rg.count / 2, rg.count.saturating_sub(1)] {
            if k >= rg.count {
                continue;
            }
            let (c, h) = (rg.container + k, rg.host + k);
            assert_eq!(idmap::map_to_host(map, c), Some(h), "{input:?}: {rg:?}");
            assert_eq!(
                idmap::map_to_container(map, h),
                Some(c),
                "{input:?}: {rg:?}"
            );
        }
    }
}

#[test]
fn accepted_random_id_maps_are_bijections() {
    fuzz("parse_id_map", |r| {
        let mut s = String::new();
        for i in 0..r.below(6) {
            if i > 0 {
                s.push(':');
            }
            let n = |r: &mut Rng| match r.below(4) {
                0 => r.below(10).to_string(),
                1 => r.below(70000).to_string(),
                2 => (u32::MAX - r.below(3) as u32).to_string(),
                _ => r.next().to_string(),
            };
            s += &format!("{}:{}:{}", n(r), n(r), n(r));
        }
        if let Ok(map) = config::parse_id_map(&s) {
            check_bijection(&map, &s);
        }
    });
}

#[test]
fn compat_argv_parser_never_panics_on_random_input() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().to_path_buf();
    fuzz("compat::parse", |r| {
        let mut args: Vec<OsString> = Vec::new();
        for _ in 0..r.below(8) {
            let a: OsString = match r.below(7) {
                0 => "-o".into(),
                1 => format!("-o{}", opt_string(r)).into(),
                2 => opt_string(r).into(),
                3 => r
                    .pick(&["-f", "-d", "-s", "-v", "-vvv", "--", "-", "-h", "-V", "-x"])
                    .to_string()
                    .into(),
                4 => base.join(format!("n{}", r.below(5))).into_os_string(),
                5 => {
                    let n = r.below(20) as usize;
                    OsString::from_vec(r.bytes(n))
                }
                _ => format!(
                    "-olowerdir={}:{},upperdir={},workdir={}",
                    base.join("a").display(),
                    base.join("b").display(),
                    base.join("u").display(),
                    base.join("w").display()
                )
                .into(),
            };
            args.push(a);
        }
        let _ = unionfuse::compat::parse(&args);
        let mut full = vec![OsString::from("unionfuse")];
        full.extend(args);
        let _ = unionfuse::compat::is_compat_invocation(&full, &["mount", "run", "image"]);
    });
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "parsing created {left:?}");
}

#[test]
fn xattr_name_escaping_round_trips_and_never_yields_private_names() {
    for userxattr in [false, true] {
        let f = Format::new(userxattr, false);
        let prefixes: &[&[u8]] = &[
            b"trusted.overlay.",
            b"user.overlay.",
            b"trusted.overlay.overlay.",
            b"user.overlay.overlay.",
            b"trusted.",
            b"user.",
            b"security.",
            b"overlay.",
            b"",
        ];
        fuzz(&format!("whiteout::Format userxattr={userxattr}"), |r| {
            let mut name = (*r.pick(prefixes)).to_vec();
            for _ in 0..r.below(3) {
                let p = *r.pick::<&[u8]>(prefixes);
                name.extend_from_slice(p);
            }
            let n = r.below(12) as usize;
            name.extend(r.bytes(n).into_iter().map(|b| b.max(1)));
            let name = CString::new(name).unwrap();
            let stored = f.escape(&name);
            // Whatever a user sets shows back under the same name, and is never private.
            let shown = f.unescape(&stored);
            assert_eq!(
                shown.as_deref(),
                Some(name.as_c_str()),
                "escape/unescape of {name:?} (stored as {stored:?})"
            );
            assert!(f.copies(&stored), "{stored:?} would be dropped by copy-up");
            // Any stored name: unescape and copies agree, and never panic.
            assert_eq!(f.copies(&name), f.unescape(&name).is_some());
        });
    }
}

// ===== tar import ===========================================================================

const TAR_NAMES: &[&str] = &[
    "a",
    "b",
    "d",
    "d/x",
    "d/e/f",
    "..",
    "../escape",
    "d/../../escape",
    "/abs",
    "/etc/passwd",
    "./a",
    "link",
    "link/through",
    "link/../x",
    ".wh.a",
    "d/.wh.x",
    "d/.wh..wh..opq",
    ".wh..wh..opq",
    ".wh.",
    "d/.wh.e",
    "dev",
    "fifo",
    "",
    ".",
    "//",
];

fn tar_path(r: &mut Rng) -> Vec<u8> {
    match r.below(6) {
        0 => {
            let n = r.below(40) as usize;
            let mut p = r.bytes(n);
            p.retain(|&b| b != 0);
            p
        }
        1 => format!("{}/{}", r.pick(TAR_NAMES), r.pick(TAR_NAMES)).into_bytes(),
        2 => vec![b'n'; 1 + r.below(300) as usize],
        _ => r.pick(TAR_NAMES).as_bytes().to_vec(),
    }
}

/// A random archive built header by header (so invalid paths and types get in).
fn random_tar(r: &mut Rng, canary: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..r.below(12) {
        let mut h = tar::Header::new_gnu();
        let path = tar_path(r);
        // Write the name bytes raw (set_path refuses `..`, which a hostile archive won't).
        {
            let gnu = h.as_gnu_mut().unwrap();
            let n = path.len().min(gnu.name.len());
            gnu.name[..n].copy_from_slice(&path[..n]);
        }
        let kinds = [
            tar::EntryType::Regular,
            tar::EntryType::Directory,
            tar::EntryType::Symlink,
            tar::EntryType::Link,
            tar::EntryType::Char,
            tar::EntryType::Block,
            tar::EntryType::Fifo,
            tar::EntryType::XHeader,
            tar::EntryType::GNULongName,
            tar::EntryType::new(b'Z'),
        ];
        let kind = *r.pick(&kinds);
        h.set_entry_type(kind);
        h.set_mode(r.below(0o10000) as u32);
        h.set_uid(r.below(70000));
        h.set_gid(r.below(70000));
        h.set_mtime(r.next() % 4_000_000_000);
        let target: Vec<u8> = match r.below(5) {
            0 => canary.as_os_str().as_encoded_bytes().to_vec(),
            1 => b"../../../canary".to_vec(),
            2 => tar_path(r),
            _ => r.pick(TAR_NAMES).as_bytes().to_vec(),
        };
        if matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
            let gnu = h.as_gnu_mut().unwrap();
            let n = target.len().min(gnu.linkname.len());
            gnu.linkname[..n].copy_from_slice(&target[..n]);
        }
        if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
            let _ = h.set_device_major(r.below(3) as u32);
            let _ = h.set_device_minor(r.below(4) as u32);
        }
        let data: Vec<u8> = match kind {
            tar::EntryType::Regular => {
                let n = r.below(3000) as usize;
                r.bytes(n)
            }
            tar::EntryType::XHeader => {
                let rec = |k: &str, v: &[u8]| {
                    let body = k.len() + v.len() + 3;
                    let mut len = body + 1;
                    while len != body + len.to_string().len() {
                        len = body + len.to_string().len();
                    }
                    let mut out = format!("{len} {k}=").into_bytes();
                    out.extend_from_slice(v);
                    out.push(b'\n');
                    out
                };
                let mut d = rec("path", &tar_path(r));
                d.extend(rec("SCHILY.xattr.trusted.overlay.opaque", b"y"));
                d.extend(rec("SCHILY.xattr.user.x", &r.bytes(8)));
                d.extend(rec("linkpath", &target));
                d
            }
            tar::EntryType::GNULongName => {
                let mut p = tar_path(r);
                p.push(0);
                p
            }
            _ => Vec::new(),
        };
        h.set_size(data.len() as u64);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    // Sometimes corrupt it: flip bytes, truncate.
    match r.below(4) {
        0 => {
            for _ in 0..1 + r.below(8) {
                if !out.is_empty() {
                    let i = r.below(out.len() as u64) as usize;
                    out[i] ^= 1 << r.below(8);
                }
            }
        }
        1 => {
            let n = r.below(out.len() as u64 + 1) as usize;
            out.truncate(n);
        }
        _ => {}
    }
    out
}

/// Wrap a layer tar in a docker-archive (manifest.json, config.json with the layer's diff_id,
/// layer.tar) and import it into a store at `store`: the public import path, digests right.
fn import_layer(layer: &[u8], store: &Path, n: u64) -> bool {
    use sha2::Digest;
    let hex: String = sha2::Sha256::digest(layer)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["sha256:{hex}"]}}}}"#
    );
    let manifest =
        format!(r#"[{{"Config":"config.json","RepoTags":["fuzz:{n}"],"Layers":["layer.tar"]}}]"#);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("manifest.json", manifest.as_bytes()),
        ("config.json", config.as_bytes()),
        ("layer.tar", layer),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    }
    let archive = store.with_extension("tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let Ok(st) = unionfuse::image::store::Store::open(store) else {
        return false;
    };
    unionfuse::image::import::import(
        &st,
        &archive,
        &unionfuse::image::import::ImportOptions { name: None },
    )
    .is_ok()
}

fn snapshot(p: &Path) -> Vec<(std::path::PathBuf, u64, u32)> {
    use std::os::unix::fs::MetadataExt;
    common::list_rel(p)
        .into_iter()
        .map(|rel| {
            let m = std::fs::symlink_metadata(p.join(&rel)).unwrap();
            (rel, m.len(), m.mode())
        })
        .collect()
}

#[test]
fn tar_import_never_panics_or_writes_outside_the_target() {
    if !common::sys::is_root() {
        eprintln!("skipping: tar import fuzzing runs privileged (devices, trusted xattrs)");
        return;
    }
    let base = tempfile::tempdir().unwrap();
    let canary = base.path().join("canary");
    std::fs::create_dir_all(canary.join("dir")).unwrap();
    std::fs::write(canary.join("secret"), b"canary").unwrap();
    let before = snapshot(&canary);
    let store = base.path().join("store");
    let mut i = 0u64;
    let mut imported = 0u64;
    fuzz("tar import", |r| {
        i += 1;
        if i.is_multiple_of(20) {
            let _ = std::fs::remove_dir_all(&store);
        }
        let bytes = random_tar(r, &canary);
        if import_layer(&bytes, &store, i) {
            imported += 1;
        }
        // Nothing outside the store changed.
        assert_eq!(
            snapshot(&canary),
            before,
            "the archive wrote outside the store"
        );
        assert_eq!(std::fs::read(canary.join("secret")).unwrap(), b"canary");
    });
    eprintln!("tar import: {imported} of {i} archives imported, the rest refused");
}
