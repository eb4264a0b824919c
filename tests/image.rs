//! Images end to end through the binary: docker-archive and OCI layout (directory and tar)
//! imports with plain, gzip and zstd layers built here, the store on disk (whiteouts, opaque
//! dirs, modes, owners, times, xattrs, links, devices), shared layers, `image ls|inspect|rm`,
//! failures that must leave the store as it was (corrupted blob, truncated layer, hostile
//! entries), `run IMAGE` (merged view, config), `diff` and a commit/import round trip, and
//! images made by umoci and skopeo. Mounted tests need root and /dev/fuse: under CI=true their
//! absence is a failure, elsewhere a skip.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use common::skip_or_fail_in_ci;
use common::sys::is_root;

const BIN: &str = env!("CARGO_BIN_EXE_unionfuse");

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

// ---- building layers and images ----

#[derive(Clone)]
enum Ent {
    Dir(&'static str, u32),
    File(&'static str, &'static [u8], u32),
    Owned(&'static str, &'static [u8], u32, u64, u64),
    Symlink(&'static str, &'static str),
    Link(&'static str, &'static str),
    Char(&'static str, u32, u32),
    Fifo(&'static str),
    Xattr(&'static str, &'static str, &'static [u8]),
    /// A name written as is into the header (hostile names the tar crate would refuse).
    RawFile(&'static [u8]),
    RawLink(&'static str, &'static [u8]),
    /// A host file's contents (busybox).
    Host(&'static str, PathBuf, u32),
}

const MTIME: u64 = 1_600_000_000;

fn raw_name(h: &mut tar::Header, name: &[u8]) {
    let b = h.as_mut_bytes();
    b[..100].fill(0);
    b[..name.len()].copy_from_slice(name);
}

fn layer_tar(ents: &[Ent]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in ents {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(0);
        match e {
            Ent::Dir(p, m) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*m);
                b.append_data(&mut h, p, std::io::empty()).expect("dir");
            }
            Ent::File(p, d, m) | Ent::Owned(p, d, m, _, _) => {
                if let Ent::Owned(_, _, _, u, g) = e {
                    h.set_uid(*u);
                    h.set_gid(*g);
                }
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, p, *d).expect("file");
            }
            Ent::Host(p, src, m) => {
                let d = std::fs::read(src).expect("host file");
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*m);
                h.set_size(d.len() as u64);
                b.append_data(&mut h, p, d.as_slice()).expect("file");
            }
            Ent::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                b.append_link(&mut h, p, t).expect("symlink");
            }
            Ent::Link(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                b.append_link(&mut h, p, t).expect("link");
            }
            Ent::Char(p, maj, min) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_mode(0o666);
                h.set_device_major(*maj).expect("major");
                h.set_device_minor(*min).expect("minor");
                b.append_data(&mut h, p, std::io::empty()).expect("char");
            }
            Ent::Fifo(p) => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_mode(0o600);
                b.append_data(&mut h, p, std::io::empty()).expect("fifo");
            }
            Ent::Xattr(p, k, v) => {
                b.append_pax_extensions([(format!("SCHILY.xattr.{k}").as_str(), *v)])
                    .expect("pax");
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                b.append_data(&mut h, p, std::io::empty()).expect("file");
            }
            Ent::RawFile(name) => {
                raw_name(&mut h, name);
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(4);
                h.set_cksum();
                b.append(&h, &b"evil"[..]).expect("raw");
            }
            Ent::RawLink(name, target) => {
                raw_name(&mut h, name.as_bytes());
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                {
                    let lb = &mut h.as_old_mut().linkname;
                    lb.fill(0);
                    lb[..target.len()].copy_from_slice(target);
                }
                h.set_cksum();
                b.append(&h, std::io::empty()).expect("raw link");
            }
        }
    }
    b.into_inner().expect("finish tar")
}

#[derive(Clone, Copy, PartialEq)]
enum Comp {
    Plain,
    Gzip,
    Zstd,
}

fn compress(data: &[u8], c: Comp) -> Vec<u8> {
    match c {
        Comp::Plain => data.to_vec(),
        Comp::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).expect("gzip");
            e.finish().expect("gzip")
        }
        Comp::Zstd => zstd::encode_all(data, 3).expect("zstd"),
    }
}

fn media(c: Comp) -> &'static str {
    match c {
        Comp::Plain => "application/vnd.oci.image.layer.v1.tar",
        Comp::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
        Comp::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
    }
}

struct Image {
    name: &'static str,
    layers: Vec<(Vec<u8>, Comp)>,
    config: Value,
}

impl Image {
    fn new(name: &'static str, layers: Vec<(Vec<u8>, Comp)>) -> Image {
        Image {
            name,
            layers,
            config: json!({}),
        }
    }

    fn diff_ids(&self) -> Vec<String> {
        self.layers
            .iter()
            .map(|(t, _)| format!("sha256:{}", hex(t)))
            .collect()
    }

    fn config_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": self.config,
            "rootfs": {"type": "layers", "diff_ids": self.diff_ids()},
        }))
        .expect("config")
    }
}

/// Files of an archive, in order.
type Files = Vec<(String, Vec<u8>)>;

fn write_tar(path: &Path, files: &Files) {
    let mut b = tar::Builder::new(std::fs::File::create(path).expect("create archive"));
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(MTIME);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, name, data.as_slice())
            .expect("member");
    }
    b.finish().expect("finish");
}

/// `docker save` format (legacy: `<id>/layer.tar`, `<config hex>.json`, manifest.json).
fn docker_files(images: &[Image]) -> Files {
    let mut files: Files = Vec::new();
    let mut manifest = Vec::new();
    for img in images {
        let cfg = img.config_bytes();
        let cfg_name = format!("{}.json", hex(&cfg));
        let mut layers = Vec::new();
        for (t, c) in &img.layers {
            let blob = compress(t, *c);
            let name = format!("{}/layer.tar", hex(&blob));
            if !files.iter().any(|(n, _)| *n == name) {
                files.push((name.clone(), blob));
            }
            layers.push(name);
        }
        files.push((cfg_name.clone(), cfg));
        manifest.push(json!({"Config": cfg_name, "RepoTags": [img.name], "Layers": layers}));
    }
    files.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).expect("manifest"),
    ));
    files
}

/// OCI image layout: oci-layout, index.json, blobs/sha256/*.
fn oci_files(images: &[Image]) -> Files {
    let mut files: Files = vec![(
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    )];
    let add = |files: &mut Files, data: Vec<u8>| -> (String, u64) {
        let h = hex(&data);
        let n = data.len() as u64;
        let name = format!("blobs/sha256/{h}");
        if !files.iter().any(|(x, _)| *x == name) {
            files.push((name, data));
        }
        (format!("sha256:{h}"), n)
    };
    let mut index = Vec::new();
    for img in images {
        let mut layers = Vec::new();
        for (t, c) in &img.layers {
            let (d, n) = add(&mut files, compress(t, *c));
            layers.push(json!({"mediaType": media(*c), "digest": d, "size": n}));
        }
        let (cd, cn) = add(&mut files, img.config_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cn},
            "layers": layers,
        });
        let (md, mn) = add(&mut files, serde_json::to_vec(&manifest).expect("manifest"));
        index.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": mn,
            "annotations": {"io.containerd.image.name": img.name, "org.opencontainers.image.ref.name": "x"},
        }));
    }
    files.push((
        "index.json".into(),
        serde_json::to_vec(&json!({"schemaVersion": 2, "manifests": index})).expect("index"),
    ));
    files
}

fn write_dir(dir: &Path, files: &Files) {
    for (n, d) in files {
        let p = dir.join(n);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(&p, d).expect("write blob");
    }
}

// ---- running the binary ----

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        World {
            dir: tempfile::Builder::new()
                .prefix("uf-image-")
                .tempdir()
                .expect("tempdir"),
        }
    }
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn root(&self) -> PathBuf {
        self.p("store")
    }
    fn uf(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(self.root())
            .args(args)
            .env("TMPDIR", self.dir.path())
            .stdin(Stdio::null())
            .output()
            .expect("spawn unionfuse")
    }
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let o = self.uf(args);
        assert!(
            o.status.success(),
            "unionfuse {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    #[track_caller]
    fn fails(&self, args: &[&str]) -> String {
        let o = self.uf(args);
        assert!(!o.status.success(), "unionfuse {args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    }
    fn layer(&self, diff_id: &str) -> PathBuf {
        self.root()
            .join("layers/sha256")
            .join(diff_id.strip_prefix("sha256:").expect("digest"))
    }
    /// A store holding one small image, so failures have something to leave as it was.
    fn seed(&self) {
        let img = Image::new(
            "seed:1",
            vec![(layer_tar(&[Ent::File("s", b"s", 0o644)]), Comp::Gzip)],
        );
        write_tar(&self.p("seed.tar"), &docker_files(&[img]));
        self.ok(&[
            "image",
            "import",
            self.p("seed.tar").to_str().expect("utf8"),
        ]);
    }

    /// Every path in the store with its type and size: "the store as it was".
    fn snapshot(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        fn walk(base: &Path, p: &Path, out: &mut BTreeMap<String, String>) {
            let Ok(rd) = std::fs::read_dir(p) else { return };
            for e in rd.flatten() {
                let m = std::fs::symlink_metadata(e.path()).expect("stat");
                let rel = e
                    .path()
                    .strip_prefix(base)
                    .expect("rel")
                    .display()
                    .to_string();
                out.insert(rel, format!("{:o} {}", m.mode(), m.len()));
                if m.is_dir() {
                    walk(base, &e.path(), out);
                }
            }
        }
        walk(&self.root(), &self.root(), &mut out);
        out.remove("lock");
        out
    }
}

fn xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    let n = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the size given.
    let r = unsafe { libc::lgetxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn opaque_name() -> &'static str {
    let initial = std::fs::read_to_string("/proc/self/uid_map")
        .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
        .unwrap_or(true);
    if is_root() && initial {
        "trusted.overlay.opaque"
    } else {
        "user.overlay.opaque"
    }
}

fn base_layer() -> Vec<u8> {
    layer_tar(&[
        Ent::Dir("./", 0o755),
        Ent::Dir("etc", 0o755),
        Ent::File("etc/motd", b"base motd\n", 0o644),
        Ent::File("etc/gone", b"to be deleted\n", 0o644),
        Ent::Dir("data", 0o750),
        Ent::File("data/old", b"old\n", 0o600),
        Ent::Owned("srv/owned", b"owned\n", 0o4755, 1234, 5678),
        Ent::Symlink("etc/link", "motd"),
        Ent::Link("etc/motd-hard", "etc/motd"),
        Ent::Fifo("run/fifo"),
        Ent::Char("dev/null", 1, 3),
        Ent::Xattr("etc/tagged", "user.mime", b"text/plain"),
        Ent::Xattr("etc/forged", "trusted.overlay.redirect", b"/x"),
    ])
}

fn top_layer() -> Vec<u8> {
    layer_tar(&[
        Ent::File("etc/.wh.gone", b"", 0o644),
        Ent::Dir("data", 0o755),
        Ent::File("data/.wh..wh..opq", b"", 0o644),
        Ent::File("data/new", b"new\n", 0o644),
        Ent::File("etc/motd", b"top motd\n", 0o640),
    ])
}

#[test]
fn docker_archive_lands_in_the_store_in_overlay_format() {
    let w = World::new();
    let img = Image::new(
        "demo:1",
        vec![(base_layer(), Comp::Plain), (top_layer(), Comp::Plain)],
    );
    let ids = img.diff_ids();
    write_tar(&w.p("demo.tar"), &docker_files(&[img]));
    let out = w.ok(&["image", "import", w.p("demo.tar").to_str().expect("utf8")]);
    assert!(out.contains("demo:1") && out.contains("2 new"), "{out}");

    let base = w.layer(&ids[0]);
    let top = w.layer(&ids[1]);
    assert_eq!(
        std::fs::read(base.join("etc/motd")).expect("motd"),
        b"base motd\n"
    );
    let m = std::fs::symlink_metadata(base.join("etc/motd")).expect("stat");
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o644, MTIME as i64));
    assert_eq!(
        std::fs::read_link(base.join("etc/link"))
            .expect("link")
            .to_str(),
        Some("motd")
    );
    let hard = std::fs::symlink_metadata(base.join("etc/motd-hard")).expect("hard");
    assert_eq!(hard.ino(), m.ino(), "hard link kept");
    assert!(
        std::fs::symlink_metadata(base.join("run/fifo"))
            .expect("fifo")
            .file_type()
            .is_fifo()
    );
    assert_eq!(
        std::fs::symlink_metadata(base.join("data"))
            .expect("data")
            .mode()
            & 0o7777,
        0o750,
        "directory mode applied after its contents"
    );
    assert_eq!(
        xattr(&base.join("etc/tagged"), "user.mime").as_deref(),
        Some(&b"text/plain"[..])
    );
    assert!(xattr(&base.join("etc/forged"), "trusted.overlay.redirect").is_none());
    if is_root() {
        let o = std::fs::symlink_metadata(base.join("srv/owned")).expect("owned");
        assert_eq!((o.uid(), o.gid(), o.mode() & 0o7777), (1234, 5678, 0o4755));
        let d = std::fs::symlink_metadata(base.join("dev/null")).expect("dev");
        assert!(d.file_type().is_char_device());
        assert_eq!(d.rdev(), libc::makedev(1, 3));
    }
    // The top layer: whiteout, opaque dir, replaced file.
    let wh = std::fs::symlink_metadata(top.join("etc/gone")).expect("whiteout");
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "char 0/0 whiteout"
    );
    assert!(!top.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr(&top.join("data"), opaque_name()).as_deref(),
        Some(&b"y"[..])
    );
    assert!(!top.join("data/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(top.join("data/new")).expect("new"), b"new\n");

    // The record and ls.
    let ls = w.ok(&["image", "ls"]);
    assert!(ls.contains("demo:1"), "{ls}");
    let rec = w.root().join("images").read_dir().expect("images").count();
    assert_eq!(rec, 1);
    let tmp = w.root().join("tmp").read_dir().expect("tmp").count();
    assert_eq!(tmp, 0, "nothing left in tmp/");
}

#[test]
fn oci_layouts_share_base_layers_and_rm_keeps_what_is_shared() {
    let w = World::new();
    let base = (base_layer(), Comp::Gzip);
    let a = Image::new("a:1", vec![base.clone(), (top_layer(), Comp::Zstd)]);
    let top_b = layer_tar(&[Ent::File("b.txt", b"b\n", 0o644)]);
    let b = Image::new(
        "b:1",
        vec![(base_layer(), Comp::Zstd), (top_b, Comp::Plain)],
    );
    let (ida, idb) = (a.diff_ids(), b.diff_ids());
    assert_eq!(ida[0], idb[0], "same base tar, other compression");
    write_dir(&w.p("a-oci"), &oci_files(&[a]));
    write_tar(&w.p("b-oci.tar"), &oci_files(&[b]));
    let out = w.ok(&["image", "import", w.p("a-oci").to_str().expect("utf8")]);
    assert!(out.contains("a:1") && out.contains("2 new"), "{out}");
    let out = w.ok(&["image", "import", w.p("b-oci.tar").to_str().expect("utf8")]);
    assert!(
        out.contains("b:1") && out.contains("1 new, 1 already stored"),
        "{out}"
    );
    // Importing again changes nothing.
    let before = w.snapshot();
    let out = w.ok(&["image", "import", w.p("b-oci.tar").to_str().expect("utf8")]);
    assert!(out.contains("0 new"), "{out}");
    assert_eq!(before, w.snapshot());

    let insp: Value = serde_json::from_str(&w.ok(&["image", "inspect", "a:1"])).expect("json");
    assert_eq!(insp["RootFS"]["Layers"][0], ida[0].as_str());
    assert_eq!(insp["Layers"][0]["SharedWith"], json!(["b:1"]));
    assert_eq!(insp["Layers"][1]["SharedWith"], json!([]));
    assert_eq!(insp["Layers"][0]["Size"], base_layer().len() as u64);

    w.ok(&["image", "rm", "a:1"]);
    assert!(w.layer(&ida[0]).is_dir(), "shared base kept");
    assert!(!w.layer(&ida[1]).exists(), "a's own layer removed");
    w.ok(&["image", "rm", "b:1"]);
    assert!(w.fails(&["image", "rm", "b:1"]).contains("no such image"));
    let left = w
        .root()
        .join("layers/sha256")
        .read_dir()
        .expect("layers")
        .count();
    assert_eq!(left, 0, "every layer gone with the last image");
}

#[test]
fn a_corrupted_blob_fails_and_leaves_the_store_as_it_was() {
    let w = World::new();
    let good = Image::new("good:1", vec![(base_layer(), Comp::Gzip)]);
    write_dir(&w.p("good"), &oci_files(&[good]));
    w.ok(&["image", "import", w.p("good").to_str().expect("utf8")]);
    let before = w.snapshot();

    let bad = Image::new(
        "bad:1",
        vec![(base_layer(), Comp::Gzip), (top_layer(), Comp::Gzip)],
    );
    let mut files = oci_files(&[bad]);
    let top_gz = compress(&top_layer(), Comp::Gzip);
    let name = format!("blobs/sha256/{}", hex(&top_gz));
    let f = files.iter_mut().find(|(n, _)| *n == name).expect("blob");
    // A flipped byte in the gzip's stored CRC: still decodes, digest differs.
    let n = f.1.len();
    f.1[n - 6] ^= 0xff;
    write_dir(&w.p("bad"), &files);
    let err = w.fails(&["image", "import", w.p("bad").to_str().expect("utf8")]);
    assert!(
        err.contains("mismatch") || err.contains("corrupt") || err.contains("crc"),
        "{err}"
    );
    assert_eq!(before, w.snapshot(), "store unchanged");
}

#[test]
fn truncated_layers_fail_and_leave_the_store_as_it_was() {
    let w = World::new();
    w.seed();
    let before = w.snapshot();
    for comp in [Comp::Plain, Comp::Gzip] {
        let img = Image::new(
            "t:1",
            vec![(base_layer(), Comp::Plain), (top_layer(), comp)],
        );
        let mut files = docker_files(&[img]);
        let blob = compress(&top_layer(), comp);
        let name = format!("{}/layer.tar", hex(&blob));
        let f = files.iter_mut().find(|(n, _)| *n == name).expect("layer");
        f.1.truncate(f.1.len() / 2 + 100);
        let path = w.p("trunc.tar");
        write_tar(&path, &files);
        let err = w.fails(&["image", "import", path.to_str().expect("utf8")]);
        assert!(err.contains("layer 2"), "{err}");
        assert_eq!(before, w.snapshot(), "store unchanged");
    }
}

#[test]
fn hostile_entries_fail_naming_the_entry_and_write_nothing_outside() {
    let w = World::new();
    let outside = w.p("outside");
    std::fs::create_dir(&outside).expect("outside");
    w.seed();
    let outside_s: &'static str = Box::leak(outside.display().to_string().into_boxed_str());
    let cases: Vec<(&str, Vec<Ent>)> = vec![
        ("../evil", vec![Ent::RawFile(b"../evil")]),
        ("a/../../evil", vec![Ent::RawFile(b"a/../../evil")]),
        ("/abs-evil", vec![Ent::RawFile(b"/abs-evil")]),
        (
            "esc/evil",
            vec![Ent::Symlink("esc", outside_s), Ent::RawFile(b"esc/evil")],
        ),
        (
            "d/esc/evil",
            vec![
                Ent::Dir("d", 0o755),
                Ent::Symlink("d/esc", "../.."),
                Ent::RawFile(b"d/esc/evil"),
            ],
        ),
        ("pw", vec![Ent::RawLink("pw", b"../../../../etc/passwd")]),
        ("pw2", vec![Ent::RawLink("pw2", b"/etc/passwd")]),
        (
            "pw3",
            vec![
                Ent::Symlink("etc", "/etc"),
                Ent::RawLink("pw3", b"etc/passwd"),
            ],
        ),
    ];
    let before = w.snapshot();
    for (entry, ents) in cases {
        let img = Image::new("evil:1", vec![(layer_tar(&ents), Comp::Plain)]);
        let path = w.p("evil.tar");
        write_tar(&path, &docker_files(&[img]));
        let err = w.fails(&["image", "import", path.to_str().expect("utf8")]);
        assert!(err.contains(&format!("entry {entry}")), "{entry}: {err}");
        assert_eq!(before, w.snapshot(), "{entry}: store unchanged");
        assert_eq!(
            outside.read_dir().expect("outside").count(),
            0,
            "{entry}: wrote outside"
        );
        assert!(!w.p("evil").exists() && !w.dir.path().join("../evil").exists());
        assert!(!Path::new("/abs-evil").exists());
    }
}

// ---- mounted: run, diff, commit ----

fn can_mount() -> bool {
    if !common::require_fuse() {
        return false;
    }
    if !Path::new("/bin/busybox").is_file() {
        return skip_or_fail_in_ci("/bin/busybox is missing (apt-get install busybox-static)");
    }
    true
}

/// A busybox base layer with the applets the tests use.
fn busybox_layer() -> Vec<u8> {
    let mut ents = vec![
        Ent::Dir("bin", 0o755),
        Ent::Host("bin/busybox", "/bin/busybox".into(), 0o755),
        Ent::Dir("etc", 0o755),
        Ent::File(
            "etc/passwd",
            b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n",
            0o644,
        ),
        Ent::File("etc/group", b"root:x:0:\napp:x:1000:\n", 0o644),
        Ent::File("etc/hosts", b"", 0o644),
        Ent::File("etc/hostname", b"", 0o644),
        Ent::File("etc/resolv.conf", b"", 0o644),
        Ent::File("etc/motd", b"base motd\n", 0o644),
        Ent::File("etc/gone", b"gone\n", 0o644),
        Ent::Dir("data", 0o755),
        Ent::File("data/old", b"old\n", 0o644),
        Ent::Dir("tmp", 0o1777),
        Ent::Dir("root", 0o700),
    ];
    for a in [
        "sh", "cat", "ls", "echo", "rm", "mkdir", "pwd", "id", "env", "sleep",
    ] {
        let p: &'static str = Box::leak(format!("bin/{a}").into_boxed_str());
        ents.push(Ent::Symlink(p, "busybox"));
    }
    layer_tar(&ents)
}

fn run_image_world() -> (World, Vec<String>) {
    let w = World::new();
    let mut img = Image::new(
        "app:1",
        vec![(busybox_layer(), Comp::Gzip), (top_layer(), Comp::Zstd)],
    );
    img.config = json!({
        "Env": ["PATH=/bin", "GREETING=from-image"],
        "Cmd": ["sh", "-c", "echo cmd $GREETING; pwd; id -u"],
        "WorkingDir": "/data",
        "User": "1000",
    });
    let ids = img.diff_ids();
    write_dir(&w.p("app"), &oci_files(&[img]));
    w.ok(&["image", "import", w.p("app").to_str().expect("utf8")]);
    (w, ids)
}

#[test]
fn run_image_shows_the_merged_layers_and_applies_its_config() {
    if !can_mount() {
        return;
    }
    let (w, _) = run_image_world();
    // As root: the top layer's motd is 0640 and the image's User is 1000.
    let out = w.ok(&[
        "run",
        "-u",
        "0",
        "app:1",
        "--",
        "sh",
        "-c",
        "cat /etc/motd; ls /data; ls /etc",
    ]);
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("top motd"), "{out}");
    assert_eq!(
        lines.next(),
        Some("new"),
        "opaque /data hides the base's old: {out}"
    );
    assert!(!out.contains("gone"), "whiteout hides /etc/gone: {out}");
    // No command: the image's Cmd, in its WorkingDir, as its User, with its Env.
    let out = w.ok(&["run", "app:1"]);
    assert_eq!(out, "cmd from-image\n/data\n1000\n");
    // Flags win: -e, -w, -u, and a command replaces Cmd.
    let out = w.ok(&[
        "run",
        "-e",
        "GREETING=flag",
        "-w",
        "/tmp",
        "-u",
        "0",
        "app:1",
        "--",
        "sh",
        "-c",
        "echo $GREETING; pwd; id -u",
    ]);
    assert_eq!(out, "flag\n/tmp\n0\n");
    let err = w.fails(&["run", "nosuch:1", "--", "true"]);
    assert!(err.contains("no such image"), "{err}");
}

#[test]
fn diff_and_commit_round_trip_through_the_store() {
    if !can_mount() {
        return;
    }
    let (w, ids) = run_image_world();
    let upper = w.p("upper");
    w.ok(&[
        "run",
        "--upper",
        upper.to_str().expect("utf8"),
        "-u",
        "0",
        "app:1",
        "--",
        "sh",
        "-c",
        "echo added > /etc/added; echo changed >> /etc/motd; rm /data/new; \
         rm -r /data; mkdir /data; echo fresh > /data/fresh; rm /bin/ls",
    ]);
    let diff = w.ok(&["diff", upper.to_str().expect("utf8"), "--from", "app:1"]);
    for line in [
        "C /etc",
        "A /etc/added",
        "C /etc/motd",
        "C /data",
        "A /data/fresh",
        "D /bin/ls",
    ] {
        assert!(
            diff.lines().any(|l| l == line),
            "missing {line:?} in\n{diff}"
        );
    }
    // Without --from: the lowers `run --upper` recorded in the store give the same answer.
    let plain = w.ok(&["diff", upper.to_str().expect("utf8")]);
    assert_eq!(
        plain, diff,
        "diff without --from differs from diff --from app:1"
    );
    // run's own mount points are not the command's changes.
    for artifact in ["A /dev", "A /proc", "A /sys"] {
        assert!(
            !diff.lines().any(|l| l == artifact),
            "{artifact} in\n{diff}"
        );
    }
    let layer = w.p("layer.tar");
    let out = w.ok(&[
        "commit",
        upper.to_str().expect("utf8"),
        "-o",
        layer.to_str().expect("utf8"),
        "--tag",
        "app:2",
        "--from",
        "app:1",
    ]);
    assert!(out.contains("app:2") && out.contains("3 layers"), "{out}");
    // --tag without --from: an image of the diff alone, said so on stderr.
    let o = w.uf(&[
        "commit",
        upper.to_str().expect("utf8"),
        "--tag",
        "app:diff-only",
    ]);
    assert!(o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.starts_with("unionfuse: warning: app:diff-only holds only the container layer"),
        "{err}"
    );
    let o = w.uf(&[
        "commit",
        upper.to_str().expect("utf8"),
        "--tag",
        "app:3",
        "--from",
        "app:1",
    ]);
    assert!(
        o.status.success() && o.stderr.is_empty(),
        "warned with --from"
    );
    // The tarball: OCI whiteouts, an opaque marker, no overlay xattrs.
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(&layer).expect("layer"));
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        names.push(String::from_utf8_lossy(&e.path_bytes()).into_owned());
        if let Some(pax) = e.pax_extensions().expect("pax") {
            for x in pax {
                let k = x.expect("pax").key().expect("key").to_string();
                assert!(!k.contains(".overlay."), "overlay xattr exported: {k}");
            }
        }
    }
    for n in ["etc/added", "bin/.wh.ls", "data/.wh..wh..opq", "data/fresh"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }
    let insp: Value = serde_json::from_str(&w.ok(&["image", "inspect", "app:2"])).expect("json");
    assert_eq!(insp["RootFS"]["Layers"][0], ids[0].as_str());
    assert_eq!(insp["Config"]["WorkingDir"], "/data", "base config carried");
    let out = w.ok(&[
        "run",
        "-u",
        "0",
        "app:2",
        "--",
        "sh",
        "-c",
        "cat /etc/added /etc/motd /data/fresh; ls /data; test -e /bin/ls || echo no-ls",
    ]);
    assert_eq!(out, "added\ntop motd\nchanged\nfresh\nfresh\nno-ls\n");
    // The stored top layer came from the tarball: overlay format again.
    let top = PathBuf::from(insp["Layers"][2]["Path"].as_str().expect("path"));
    let wh = std::fs::symlink_metadata(top.join("bin/ls")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(
        xattr(&top.join("data"), opaque_name()).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        std::fs::read(top.join("etc/added")).expect("added"),
        b"added\n"
    );
}

/// The entry names of a layer tar.
fn tar_names(path: &Path) -> Vec<String> {
    let mut ar = tar::Archive::new(std::fs::File::open(path).expect("layer tar"));
    ar.entries()
        .expect("entries")
        .map(|e| String::from_utf8_lossy(&e.expect("entry").path_bytes()).into_owned())
        .collect()
}

/// `commit` finds the lowers as `diff` does (--lower, or those `run --upper` recorded): an
/// upper holding a directory moved with a redirect commits it whole, with the content of the
/// lower copy it was moved from, instead of refusing.
#[test]
fn commit_takes_the_lowers_as_diff_does() {
    if !can_mount() {
        return;
    }
    let (w, ids) = run_image_world();
    let upper = w.p("upper");
    let u = upper.to_str().expect("utf8");
    // Records the image's layers as the upper's lowers.
    w.ok(&[
        "run", "--upper", u, "-u", "0", "app:1", "--", "sh", "-c", "true",
    ]);
    let lowers = vec![w.layer(&ids[1]), w.layer(&ids[0])];
    let list = format!("{}:{}", lowers[0].display(), lowers[1].display());
    {
        let base = tempfile::Builder::new()
            .prefix("uf-image-mnt-")
            .tempdir()
            .expect("tempdir");
        let mnt = base.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mkdir mnt");
        let s = common::Stack {
            base,
            lowers: lowers.clone(),
            upper: Some(upper.clone()),
            mnt,
        };
        let m = common::UnionMount::with_args(&s, &["-o", "redirect_dir=on"]);
        common::view::must(
            common::sys::renameat2(&m.path("data"), &m.path("moved"), 0),
            "mv data moved",
        );
    }
    let redirect = format!("{}redirect", common::overlay_prefix());
    assert!(
        xattr(&upper.join("moved"), &redirect).is_some(),
        "no redirect"
    );
    let (recorded, given) = (w.p("recorded.tar"), w.p("given.tar"));
    w.ok(&["commit", u, "-o", recorded.to_str().expect("utf8")]);
    w.ok(&[
        "commit",
        u,
        "-o",
        given.to_str().expect("utf8"),
        "--lower",
        &list,
    ]);
    let names = tar_names(&recorded);
    for n in ["moved/.wh..wh..opq", "moved/new", ".wh.data"] {
        assert!(names.iter().any(|x| x == n), "{n} not in {names:?}");
    }
    assert_eq!(
        std::fs::read(&recorded).expect("tar"),
        std::fs::read(&given).expect("tar"),
        "commit with the recorded lowers and with --lower differ"
    );
    let diff = w.ok(&["diff", u]);
    assert_eq!(diff, w.ok(&["diff", u, "--lower", &list]));
    for line in ["A /moved", "A /moved/new", "D /data"] {
        assert!(diff.lines().any(|l| l == line), "{line:?} not in\n{diff}");
    }
    // A lower that is not a directory is named; without known lowers commit refuses.
    let err = w.fails(&["commit", u, "-o", "/dev/null", "--lower", "/nonexistent"]);
    assert!(err.contains("lower layer /nonexistent"), "{err}");
    let copy = w.p("copy");
    common::layers::copy_tree(&upper, &copy);
    let err = w.fails(&["commit", copy.to_str().expect("utf8"), "-o", "/dev/null"]);
    assert!(err.contains("pass --from or --lower"), "{err}");
}

// ---- images made by real tools ----

fn tool(name: &str) -> bool {
    let have = || {
        Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !have() && is_root() {
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-qq", name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    have()
}

#[track_caller]
fn sh(cmd: &mut Command) {
    let o = cmd.output().expect("spawn");
    assert!(
        o.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn images_made_by_umoci_and_converted_by_skopeo_import_in_overlay_format() {
    if !tool("umoci") || !tool("skopeo") {
        skip_or_fail_in_ci("umoci or skopeo missing (apt-get install umoci skopeo)");
        return;
    }
    let w = World::new();
    let layout = w.p("layout");
    let l = layout.to_str().expect("utf8");
    sh(Command::new("umoci").args(["init", "--layout", l]));
    sh(Command::new("umoci").args(["new", "--image", &format!("{l}:t")]));
    // Two layers: files, then a delete (umoci writes a .wh. whiteout).
    let bundle = w.p("bundle");
    let b = bundle.to_str().expect("utf8");
    sh(Command::new("umoci").args(["unpack", "--rootless", "--image", &format!("{l}:t"), b]));
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("etc")).expect("mkdir");
    std::fs::write(rootfs.join("etc/a"), "a\n").expect("a");
    std::fs::write(rootfs.join("etc/b"), "b\n").expect("b");
    sh(Command::new("umoci").args([
        "repack",
        "--refresh-bundle",
        "--image",
        &format!("{l}:t"),
        b,
    ]));
    std::fs::remove_file(rootfs.join("etc/b")).expect("rm b");
    sh(Command::new("umoci").args(["repack", "--image", &format!("{l}:t"), b]));
    sh(Command::new("umoci").args([
        "config",
        "--image",
        &format!("{l}:t"),
        "--config.workingdir",
        "/etc",
    ]));

    let out = w.ok(&["image", "import", l]);
    assert!(out.contains("layout:t"), "{out}");
    let insp: Value = serde_json::from_str(&w.ok(&["image", "inspect", "layout:t"])).expect("json");
    assert_eq!(insp["Config"]["WorkingDir"], "/etc");
    let layers = insp["Layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 2, "{insp}");
    let top = PathBuf::from(layers[1]["Path"].as_str().expect("path"));
    let wh = std::fs::symlink_metadata(top.join("etc/b")).expect("whiteout");
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    let bottom = PathBuf::from(layers[0]["Path"].as_str().expect("path"));
    assert_eq!(std::fs::read(bottom.join("etc/a")).expect("a"), b"a\n");

    // skopeo: the same image as a docker-archive (layers shared with the OCI import).
    let arch = w.p("conv.tar");
    let o = Command::new("skopeo")
        .args([
            "copy",
            "--insecure-policy",
            &format!("oci:{l}:t"),
            &format!("docker-archive:{}:conv:1", arch.display()),
        ])
        .output()
        .expect("skopeo");
    if !o.status.success() {
        skip_or_fail_in_ci(&format!(
            "skopeo copy failed offline: {}",
            String::from_utf8_lossy(&o.stderr)
        ));
        return;
    }
    let out = w.ok(&["image", "import", arch.to_str().expect("utf8")]);
    assert!(out.contains("conv:1") && out.contains("0 new"), "{out}");
    // And back to an OCI tar archive.
    let oci_tar = w.p("back.tar");
    sh(Command::new("skopeo").args([
        "copy",
        "--insecure-policy",
        &format!("docker-archive:{}", arch.display()),
        &format!("oci-archive:{}:back", oci_tar.display()),
    ]));
    let out = w.ok(&[
        "image",
        "import",
        "--name",
        "back:1",
        oci_tar.to_str().expect("utf8"),
    ]);
    assert!(out.contains("back:1") && out.contains("0 new"), "{out}");
}

// ---- the store's names, layers and users ----

#[test]
fn image_tag_rm_by_id_needs_force_with_several_names_and_prints_every_name() {
    let w = World::new();
    w.seed();
    let id = serde_json::from_str::<Value>(&w.ok(&["image", "inspect", "seed:1"])).unwrap()["Id"]
        .as_str()
        .unwrap()
        .to_string();
    let short = &id["sha256:".len().."sha256:".len() + 12];
    assert_eq!(
        w.ok(&["image", "tag", "seed:1", "alias", "other:2"]),
        format!("tagged alias:latest ({short})\ntagged other:2 ({short})\n")
    );
    let err = w.fails(&["image", "rm", short]);
    assert_eq!(
        err,
        format!(
            "unionfuse: {short}: image {short} has 3 names (seed:1, alias:latest, other:2): \
             remove them by name, or use --force\n"
        )
    );
    assert_eq!(w.ok(&["image", "rm", "other:2"]), "untagged other:2\n");
    let layer = w
        .snapshot()
        .into_keys()
        .find(|k| k.starts_with("layers/sha256/"))
        .unwrap();
    let out = w.ok(&["image", "rm", "--force", short]);
    let diff_id = format!("sha256:{}", layer.trim_start_matches("layers/sha256/"));
    assert_eq!(
        out,
        format!(
            "removed seed:1 ({short})\nremoved alias:latest ({short})\nremoved layer {diff_id}\n"
        )
    );
    assert!(
        w.fails(&["image", "inspect", "alias"])
            .contains("no such image")
    );
}

#[test]
fn image_prune_removes_only_layers_no_image_lists() {
    let w = World::new();
    w.seed();
    let kept = w
        .snapshot()
        .into_keys()
        .find(|k| k.starts_with("layers/sha256/"))
        .unwrap();
    let orphan = "ab".repeat(32);
    let odir = w.root().join("layers/sha256").join(&orphan);
    std::fs::create_dir_all(odir.join("usr")).unwrap();
    std::fs::write(odir.join("usr/f"), b"x").unwrap();
    assert_eq!(
        w.ok(&["image", "prune"]),
        format!("removed layer sha256:{orphan}\n1 layers removed\n")
    );
    assert!(!odir.exists());
    assert!(
        w.root().join(&kept).is_dir(),
        "the seed image's layer was pruned"
    );
    assert_eq!(w.ok(&["image", "prune"]), "0 layers removed\n");
}

#[test]
fn image_ls_format_json_lists_every_image() {
    let w = World::new();
    w.seed();
    w.ok(&["image", "tag", "seed:1", "seed:2"]);
    let v: Value = serde_json::from_str(&w.ok(&["image", "ls", "--format", "json"])).unwrap();
    let list = v.as_array().expect("an array");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["Names"], json!(["seed:1", "seed:2"]));
    assert_eq!(list[0]["Layers"], 1);
    assert_eq!(list[0]["Containers"], 0);
    assert!(is_hex64(list[0]["Id"].as_str().unwrap()));
    let table = w.ok(&["image", "ls"]);
    assert!(table.starts_with("NAME "), "{table}");
    assert!(
        w.fails(&["image", "ls", "--format", "yaml"])
            .contains("invalid value")
    );
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Kills and reaps a background `unionfuse run` if the test fails before it ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

#[test]
fn image_rm_refuses_an_image_a_running_container_uses() {
    if !can_mount() {
        return;
    }
    let (w, ids) = run_image_world();
    // A record left by a run that died: unlocked, it does not count (and is cleaned up).
    let containers = w.root().join("containers");
    std::fs::create_dir_all(&containers).unwrap();
    let id = serde_json::from_str::<Value>(&w.ok(&["image", "inspect", "app:1"])).unwrap()["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let stale = containers.join(format!("{id}-999999.json"));
    std::fs::write(
        &stale,
        json!({"pid": 999999, "image": format!("sha256:{id}"), "layers": ids}).to_string(),
    )
    .unwrap();
    let mut run = Reap(
        Command::new(BIN)
            .arg("--root")
            .arg(w.root())
            .args([
                "run",
                "-u",
                "0",
                "app:1",
                "--",
                "sh",
                "-c",
                "sleep 3; ls /data",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn run"),
    );
    let pid = run.0.id();
    let mine = containers.join(format!("{id}-{pid}.json"));
    let start = std::time::Instant::now();
    while !mine.exists() {
        assert!(start.elapsed().as_secs() < 10, "run wrote no in-use record");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let err = w.fails(&["image", "rm", "app:1"]);
    assert_eq!(
        err,
        format!(
            "unionfuse: app:1: image {} is in use by a running container (unionfuse run, pid \
             {pid}): stop it, or use --force (its layers stay until it exits)\n",
            &id[..12]
        )
    );
    assert!(!stale.exists(), "the stale record was not cleaned up");
    let v: Value = serde_json::from_str(&w.ok(&["image", "ls", "--format", "json"])).unwrap();
    assert_eq!(v[0]["Containers"], 1);
    let out = std::mem::replace(
        &mut run.0,
        Command::new("true").spawn().expect("spawn true"),
    )
    .wait_with_output()
    .expect("wait run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "new\n",
        "the container's ls"
    );
    assert!(!mine.exists(), "the record outlived the run");
    let out = w.ok(&["image", "rm", "app:1"]);
    assert!(
        out.starts_with(&format!("removed app:1 ({})\n", &id[..12])),
        "{out}"
    );
    assert_eq!(
        w.root().join("layers/sha256").read_dir().unwrap().count(),
        0
    );
}

// ---- image save: round trips through podman and skopeo ----

/// The stored layers of `image` in store `root`, as trees (whiteouts, opaque dirs, modes,
/// owners, times, xattrs).
fn layer_trees(root: &Path, image: &str) -> Vec<common::Tree> {
    let o = Command::new(BIN)
        .arg("--root")
        .arg(root)
        .args(["image", "inspect", image])
        .output()
        .expect("inspect");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    v["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| {
            let mut t = common::Tree::layer_digest(Path::new(l["Path"].as_str().expect("path")));
            // The layer directory itself is the store's (made at unpack), not in the tar.
            t.entries.remove(Path::new(""));
            // What the formats carry: whole-second times (tar headers); a whiteout's time is
            // the unpack's.
            for e in t.entries.values_mut() {
                let whiteout = e.rdev == Some((0, 0)) && e.kind == common::Kind::CharDev;
                e.mtime = e.mtime.filter(|_| !whiteout);
                e.mtime = e.mtime.map(|(s, _)| (s, 0));
            }
            t
        })
        .collect()
}

#[track_caller]
fn assert_same_layers(a: &[common::Tree], b: &[common::Tree]) {
    assert_eq!(a.len(), b.len(), "layer count");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        if let Some(d) = x.diff(y, true) {
            panic!("layer {i} differs after the round trip:\n{d}");
        }
    }
}

#[test]
fn image_save_round_trips_through_podman_load_and_skopeo() {
    if !is_root() {
        skip_or_fail_in_ci("podman load into a private store needs root here");
        return;
    }
    if !tool("podman") || !tool("skopeo") {
        skip_or_fail_in_ci("podman or skopeo missing (apt-get install podman skopeo)");
        return;
    }
    // Two layers with a whiteout, an opaque directory, modes and owners.
    let (w, _) = run_image_world();
    let original = layer_trees(&w.root(), "app:1");
    let dk = w.p("app-docker.tar");
    let out = w.ok(&["image", "save", "app:1", "-o", dk.to_str().unwrap()]);
    let id = out
        .split_once('(')
        .and_then(|(_, r)| r.split_once(')'))
        .map(|(id, _)| id.to_string())
        .expect("an id in the output");
    assert_eq!(
        out,
        format!("saved app:1 to {} ({id}): 2 layers\n", dk.display())
    );

    // podman load (a private store), then podman save, then import: the same image.
    let proot = w.p("podman");
    let podman = |args: &[&str]| {
        let o = Command::new("podman")
            .arg("--root")
            .arg(proot.join("root"))
            .arg("--runroot")
            .arg(proot.join("run"))
            .args(["--storage-driver", "vfs", "--events-backend", "none"])
            .args(["--cgroup-manager", "cgroupfs"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("spawn podman");
        assert!(
            o.status.success(),
            "podman {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let loaded = podman(&["load", "-i", dk.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: localhost/app:1"), "{loaded}");
    let pid = podman(&["image", "inspect", "localhost/app:1", "--format", "{{.Id}}"]);
    assert!(pid.starts_with(&id), "podman's id {pid} is not {id}");
    // An archive another tool wrote, imported into a fresh store: the same image id, the same
    // layer trees.
    let reimport = |root: &Path, archive: &Path| {
        let o = Command::new(BIN)
            .arg("--root")
            .arg(root)
            .args(["image", "import", archive.to_str().unwrap()])
            .output()
            .expect("import");
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && out.contains(&format!("({id})")),
            "{out}"
        );
        assert_same_layers(&original, &layer_trees(root, "app:1"));
    };
    let back = w.p("back.tar");
    podman(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        back.to_str().unwrap(),
        "app:1",
    ]);
    reimport(&w.p("store2"), &back);

    // OCI layout directory: skopeo reads it and converts it to a docker-archive we import.
    let oci = w.p("app-oci");
    w.ok(&[
        "image",
        "save",
        "app:1",
        "-o",
        oci.to_str().unwrap(),
        "--format",
        "oci-dir",
    ]);
    let conv = w.p("via-skopeo.tar");
    sh(Command::new("skopeo").args([
        "copy",
        &format!("oci:{}:1", oci.display()),
        &format!("docker-archive:{}:app:1", conv.display()),
    ]));
    reimport(&w.p("store3"), &conv);

    // OCI layout tar: skopeo inspects it, podman loads it.
    let ocitar = w.p("app-oci.tar");
    w.ok(&[
        "image",
        "save",
        "app:1",
        "-o",
        ocitar.to_str().unwrap(),
        "--format",
        "oci-archive",
    ]);
    let o = Command::new("skopeo")
        .args([
            "inspect",
            "--config",
            &format!("oci-archive:{}", ocitar.display()),
        ])
        .output()
        .expect("skopeo");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg: Value = serde_json::from_slice(&o.stdout).expect("config json");
    assert_eq!(cfg["config"]["WorkingDir"], "/data");
    assert_eq!(cfg["rootfs"]["diff_ids"].as_array().map(Vec::len), Some(2));
    podman(&["rmi", "localhost/app:1"]);
    let loaded = podman(&["load", "-i", ocitar.to_str().unwrap()]);
    assert!(loaded.contains("app:1"), "{loaded}");
    let pid = podman(&["image", "inspect", "localhost/app:1", "--format", "{{.Id}}"]);
    assert!(pid.starts_with(&id), "podman's id {pid} is not {id}");
}
