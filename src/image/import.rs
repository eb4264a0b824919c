//! `image import`: a docker-archive (`docker save`, `podman save`) or an OCI image layout
//! (directory or tar) into the store. Every blob with a digest in its name or descriptor is
//! checked against it (and its size), every layer against its config's diff_id; layers are
//! gzip, zstd or plain (told by their first bytes). Atomic: layers are unpacked into the
//! store's tmp/, renamed into layers/ only once every one has been verified, and the image
//! records are written last; any failure removes what this import made.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::progress::Progress;
use super::store::{ImageRecord, LayerRecord, Store, check_diff_ids, remove_tree};
use super::unpack::Unpacker;
use super::{ImageError, Result, digest_hex, normalize_name};

/// Manifests and configs are small; refuse absurd ones rather than allocate for them.
const MAX_JSON: u64 = 16 << 20;

#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// `--name NAME:TAG`: the name of the (single) image imported, instead of the archive's.
    pub name: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Imported {
    pub id: String,
    pub names: Vec<String>,
    pub layers: usize,
    pub new_layers: usize,
}

/// Where the files of an archive or layout are.
enum Source {
    Dir(PathBuf),
    /// A tar: each member's data offset and size, and aliases (docker-archive's layer.tar
    /// symlinks to a layer saved once).
    Tar {
        file: File,
        members: HashMap<String, (u64, u64)>,
        links: HashMap<String, String>,
    },
}

/// A byte range of the archive, read with pread (no shared file offset).
struct Slice<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Slice<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// "a/b/../c" -> "a/c", refusing to climb out; "./x" -> "x".
fn clean(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// Is `h` the first header block of a tar (or an empty archive's zero block)? Its checksum
/// field (octal, at 148) must equal the sum of its bytes with that field read as spaces.
fn is_tar_header(h: &[u8; 512]) -> bool {
    if h.iter().all(|&b| b == 0) {
        return true;
    }
    let field = &h[148..156];
    let digits: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let Ok(want) = u32::from_str_radix(digits.trim(), 8) else {
        return false;
    };
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u32
            } else {
                b as u32
            }
        })
        .sum();
    sum == want
}

impl Source {
    fn open(path: &Path) -> Result<Source> {
        let meta = std::fs::metadata(path)
            .map_err(|e| ImageError::io(format!("{}", path.display()), &e))?;
        if meta.is_dir() {
            return Ok(Source::Dir(path.to_path_buf()));
        }
        let file =
            File::open(path).map_err(|e| ImageError::io(format!("open {}", path.display()), &e))?;
        let mut magic = [0u8; 4];
        let n = file.read_at(&mut magic, 0).unwrap_or(0);
        if n >= 2 && magic[..2] == [0x1f, 0x8b] || n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd] {
            return Err(ImageError::new(format!(
                "{}: a compressed archive; decompress it first (docker save and OCI layout \
                 tars are plain tar)",
                path.display()
            )));
        }
        let mut header = [0u8; 512];
        let n = file.read_at(&mut header, 0).unwrap_or(0);
        if n < header.len() || !is_tar_header(&header) {
            return Err(ImageError::new(format!(
                "{}: not a tar archive (expected a docker-archive or OCI layout tar, as \
                 `podman save` writes, or an OCI layout directory)",
                path.display()
            )));
        }
        let mut members = HashMap::new();
        let mut links = HashMap::new();
        let bad =
            |e: std::io::Error| ImageError::io(format!("read archive {}", path.display()), &e);
        let mut ar = tar::Archive::new(&file);
        for ent in ar.entries_with_seek().map_err(bad)? {
            let ent = ent.map_err(bad)?;
            let name = String::from_utf8_lossy(&ent.path_bytes()).into_owned();
            let Some(name) = clean(&name) else { continue };
            match ent.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    members.insert(name, (ent.raw_file_position(), ent.size()));
                }
                tar::EntryType::Symlink => {
                    if let Some(t) = ent.link_name_bytes() {
                        let t = String::from_utf8_lossy(&t).into_owned();
                        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        if let Some(t) = clean(&format!("{dir}/{t}")) {
                            links.insert(name, t);
                        }
                    }
                }
                tar::EntryType::Link => {
                    if let Some(t) = ent
                        .link_name_bytes()
                        .and_then(|t| clean(&String::from_utf8_lossy(&t)))
                    {
                        links.insert(name, t);
                    }
                }
                _ => {}
            }
        }
        Ok(Source::Tar {
            file,
            members,
            links,
        })
    }

    /// A member's reader and size. `name` comes from a manifest: it may not climb out.
    fn open_member(&self, name: &str) -> Result<(Box<dyn Read + '_>, u64)> {
        let Some(mut key) = clean(name).filter(|k| !k.is_empty() && !name.starts_with('/')) else {
            return Err(ImageError::new(format!("{name}: bad path in the manifest")));
        };
        match self {
            Source::Dir(d) => {
                let p = d.join(&key);
                let f =
                    File::open(&p).map_err(|e| ImageError::io(format!("{}", p.display()), &e))?;
                let size = f
                    .metadata()
                    .map_err(|e| ImageError::io(format!("{}", p.display()), &e))?
                    .len();
                Ok((Box::new(std::io::BufReader::new(f)), size))
            }
            Source::Tar {
                file,
                members,
                links,
            } => {
                for _ in 0..16 {
                    if let Some(&(off, size)) = members.get(&key) {
                        return Ok((
                            Box::new(Slice {
                                file,
                                pos: off,
                                end: off + size,
                            }),
                            size,
                        ));
                    }
                    match links.get(&key) {
                        Some(t) => key = t.clone(),
                        None => break,
                    }
                }
                Err(ImageError::new(format!("{name}: not in the archive")))
            }
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir(d) => d.join(name).is_file(),
            Source::Tar { members, .. } => members.contains_key(name),
        }
    }

    /// A small member, read whole; with a digest, verified.
    fn read_json(&self, name: &str, digest: Option<&str>) -> Result<(Vec<u8>, Value)> {
        let (r, size) = self.open_member(name)?;
        if size > MAX_JSON {
            return Err(ImageError::new(format!("{name}: {size} bytes, too big")));
        }
        let mut data = Vec::with_capacity(size as usize);
        r.take(MAX_JSON)
            .read_to_end(&mut data)
            .map_err(|e| ImageError::io(name, &e))?;
        if let Some(hex) = digest {
            let got = hex_of(&Sha256::digest(&data));
            if got != hex {
                return Err(ImageError::new(format!(
                    "{name}: digest mismatch: expected sha256:{hex}, got sha256:{got}"
                )));
            }
        }
        let v = serde_json::from_slice(&data)
            .map_err(|e| ImageError::new(format!("{name}: bad JSON: {e}")))?;
        Ok((data, v))
    }
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A blob to read and what it must be.
#[derive(Clone, Debug)]
struct Blob {
    path: String,
    digest: Option<String>,
    size: Option<u64>,
}

struct Plan {
    names: Vec<String>,
    config: Value,
    id: String,
    layers: Vec<(Blob, String)>,
}

fn blob_of_descriptor(d: &Value, what: &str) -> Result<Blob> {
    let digest = d["digest"].as_str().unwrap_or("");
    let hex = digest_hex(digest)
        .ok_or_else(|| ImageError::new(format!("{what}: unsupported or bad digest {digest:?}")))?;
    Ok(Blob {
        path: format!("blobs/sha256/{hex}"),
        digest: Some(hex.to_string()),
        size: d["size"].as_u64(),
    })
}

/// docker-archive blobs named by digest (`blobs/sha256/HEX`, `HEX.json`) are checked too.
fn digest_in_path(p: &str) -> Option<String> {
    let last = p.rsplit('/').next()?;
    let stem = last.strip_suffix(".json").unwrap_or(last);
    (super::is_hex64(stem) && (p.starts_with("blobs/sha256/") || last.ends_with(".json")))
        .then(|| stem.to_string())
}

fn config_plan(src: &Source, cfg: &Blob, layers: Vec<Blob>, names: Vec<String>) -> Result<Plan> {
    let (data, config) = src.read_json(&cfg.path, cfg.digest.as_deref())?;
    if let Some(s) = cfg.size
        && s != data.len() as u64
    {
        return Err(ImageError::new(format!(
            "{}: size {} differs from the manifest's {s}",
            cfg.path,
            data.len()
        )));
    }
    let diff_ids = check_diff_ids(&config).map_err(|e| e.context(&cfg.path))?;
    if diff_ids.len() != layers.len() {
        return Err(ImageError::new(format!(
            "{}: {} diff_ids for {} layers in the manifest",
            cfg.path,
            diff_ids.len(),
            layers.len()
        )));
    }
    Ok(Plan {
        names,
        id: format!("sha256:{}", hex_of(&Sha256::digest(&data))),
        config,
        layers: layers.into_iter().zip(diff_ids).collect(),
    })
}

fn docker_plans(src: &Source) -> Result<Vec<Plan>> {
    let (_, manifest) = src.read_json("manifest.json", None)?;
    let entries = manifest
        .as_array()
        .ok_or_else(|| ImageError::new("manifest.json: not a list"))?;
    let mut plans = Vec::new();
    for m in entries {
        let cfg = m["Config"]
            .as_str()
            .ok_or_else(|| ImageError::new("manifest.json: an entry without Config"))?;
        let layers = m["Layers"]
            .as_array()
            .ok_or_else(|| ImageError::new("manifest.json: an entry without Layers"))?
            .iter()
            .map(|l| {
                let p = l.as_str().unwrap_or_default().to_string();
                Blob {
                    digest: digest_in_path(&p),
                    path: p,
                    size: None,
                }
            })
            .collect();
        let names = m["RepoTags"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n.as_str())
                    .map(normalize_name)
                    .collect()
            })
            .unwrap_or_default();
        let cfg = Blob {
            path: cfg.to_string(),
            digest: digest_in_path(cfg),
            size: None,
        };
        plans.push(config_plan(src, &cfg, layers, names)?);
    }
    Ok(plans)
}

pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        a => a,
    }
}

fn oci_plans(src: &Source, stem: &str) -> Result<Vec<Plan>> {
    let (_, index) = src.read_json("index.json", None)?;
    let mut plans = Vec::new();
    let top = index["manifests"].as_array().cloned().unwrap_or_default();
    for desc in &top {
        let ann = &desc["annotations"];
        let name = ann["io.containerd.image.name"]
            .as_str()
            .map(normalize_name)
            .or_else(|| {
                ann["org.opencontainers.image.ref.name"].as_str().map(|r| {
                    if r.contains(':') || r.contains('/') {
                        normalize_name(r)
                    } else {
                        format!("{stem}:{r}")
                    }
                })
            });
        let mut d = desc.clone();
        // Follow nested indexes to this platform's manifest (or the only one).
        for _ in 0..4 {
            let mt = d["mediaType"].as_str().unwrap_or_default();
            if !(mt.ends_with("image.index.v1+json") || mt.ends_with("manifest.list.v2+json")) {
                break;
            }
            let b = blob_of_descriptor(&d, "index.json")?;
            let (_, sub) = src.read_json(&b.path, b.digest.as_deref())?;
            let ms = sub["manifests"].as_array().cloned().unwrap_or_default();
            let pick = ms
                .iter()
                .find(|m| {
                    m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_arch()
                })
                .or(if ms.len() == 1 { ms.first() } else { None })
                .cloned()
                .ok_or_else(|| {
                    ImageError::new(format!("{}: no manifest for linux/{}", b.path, host_arch()))
                })?;
            d = pick;
        }
        let b = blob_of_descriptor(&d, "index.json")?;
        let (data, manifest) = src.read_json(&b.path, b.digest.as_deref())?;
        if let Some(s) = b.size
            && s != data.len() as u64
        {
            return Err(ImageError::new(format!(
                "{}: size {} differs from the index's {s}",
                b.path,
                data.len()
            )));
        }
        let cfg = blob_of_descriptor(&manifest["config"], &b.path)?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| ImageError::new(format!("{}: no layers", b.path)))?
            .iter()
            .map(|l| blob_of_descriptor(l, &b.path))
            .collect::<Result<Vec<_>>>()?;
        plans.push(config_plan(src, &cfg, layers, name.into_iter().collect())?);
    }
    if plans.is_empty() {
        return Err(ImageError::new("index.json: no manifests"));
    }
    Ok(plans)
}

/// Bytes read through it go into a shared hash and count.
#[derive(Default)]
struct HashState {
    h: Sha256,
    n: u64,
}

struct Hashing<Rd> {
    inner: Rd,
    state: Rc<RefCell<HashState>>,
}

impl<Rd: Read> Read for Hashing<Rd> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.state.borrow_mut();
        s.h.update(&buf[..n]);
        s.n += n as u64;
        Ok(n)
    }
}

/// A reader shared between the decompressor and the final drain.
struct Shared<Rd>(Rc<RefCell<Rd>>);

impl<Rd: Read> Read for Shared<Rd> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

/// Unpack one layer blob into `dir`, checking blob digest, size and diff_id. Returns the
/// uncompressed size.
fn unpack_blob(
    src: &Source,
    blob: &Blob,
    diff_id: &str,
    dir: &Path,
    progress: &mut Progress,
) -> Result<u64> {
    let (r, _) = src.open_member(&blob.path)?;
    let blob_state = Rc::new(RefCell::new(HashState::default()));
    let raw = Rc::new(RefCell::new(Hashing {
        inner: r,
        state: blob_state.clone(),
    }));
    let mut buf = BufReader::with_capacity(256 << 10, Shared(raw.clone()));
    let head = buf
        .fill_buf()
        .map_err(|e| ImageError::io("read", &e))?
        .to_vec();
    let decoded: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buf))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(buf)
                .map_err(|e| ImageError::io("zstd", &e))?,
        )
    } else {
        Box::new(buf)
    };
    let diff_state = Rc::new(RefCell::new(HashState::default()));
    let mut ar = tar::Archive::new(Hashing {
        inner: decoded,
        state: diff_state.clone(),
    });
    let privileged = crate::config::initial_ns_root();
    let mut unp = Unpacker::new(dir, privileged).map_err(ImageError::new)?;
    let mut last = String::from("(start)");
    let entries = ar
        .entries()
        .map_err(|e| ImageError::io("read the layer tar", &e))?;
    for ent in entries {
        let mut ent =
            ent.map_err(|e| ImageError::io(format!("layer tar, after entry {last}"), &e))?;
        last = String::from_utf8_lossy(&ent.path_bytes()).into_owned();
        unp.entry(&mut ent)
            .map_err(|why| ImageError::new(format!("entry {last}: {why}")))?;
        progress.update(blob_state.borrow().n);
    }
    unp.finish().map_err(ImageError::new)?;
    if unp.skipped_devices > 0 {
        eprintln!(
            "unionfuse: warning: {} device node(s) not created (needs root)",
            unp.skipped_devices
        );
    }
    // The whole stream counts for the digests: the tar's padding after its end and any bytes
    // after the compressed stream.
    let mut rest = ar.into_inner();
    std::io::copy(&mut rest, &mut std::io::sink())
        .map_err(|e| ImageError::io("read the layer (truncated?)", &e))?;
    drop(rest);
    std::io::copy(&mut Shared(raw), &mut std::io::sink())
        .map_err(|e| ImageError::io("read the layer blob", &e))?;
    let blob_st = blob_state.borrow();
    if let Some(hex) = &blob.digest {
        let got = hex_of(&blob_st.h.clone().finalize());
        if &got != hex {
            return Err(ImageError::new(format!(
                "blob digest mismatch: expected sha256:{hex}, got sha256:{got}"
            )));
        }
    }
    if let Some(s) = blob.size
        && s != blob_st.n
    {
        return Err(ImageError::new(format!(
            "blob size {} differs from the manifest's {s}",
            blob_st.n
        )));
    }
    let diff = diff_state.borrow();
    let got = hex_of(&diff.h.clone().finalize());
    let want = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
    if got != want {
        return Err(ImageError::new(format!(
            "diff_id mismatch: expected {diff_id}, got sha256:{got} (corrupted or truncated layer)"
        )));
    }
    Ok(diff.n)
}

/// Import everything in `path`.
pub fn import(store: &Store, path: &Path, opts: &ImportOptions) -> Result<Vec<Imported>> {
    let src = Source::open(path)?;
    let stem = path
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    let stem = stem
        .strip_suffix(".tar")
        .unwrap_or(&stem)
        .to_ascii_lowercase();
    let mut plans = if src.exists("oci-layout") && src.exists("index.json") {
        oci_plans(&src, &stem)?
    } else if src.exists("manifest.json") {
        docker_plans(&src)?
    } else {
        return Err(ImageError::new(format!(
            "{}: neither a docker-archive (no manifest.json) nor an OCI layout (no oci-layout)",
            path.display()
        )));
    };
    if let Some(n) = &opts.name {
        if plans.len() != 1 {
            return Err(ImageError::new(format!(
                "--name: {} holds {} images",
                path.display(),
                plans.len()
            )));
        }
        plans[0].names = vec![normalize_name(n)];
    }
    let source = std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string();
    import_plans(store, &src, plans, &source)
}

fn import_plans(
    store: &Store,
    src: &Source,
    plans: Vec<Plan>,
    source: &str,
) -> Result<Vec<Imported>> {
    let _lock = store.lock()?;
    // Each missing layer once, in order.
    let mut todo: Vec<(Blob, String)> = Vec::new();
    for p in &plans {
        for (b, d) in &p.layers {
            if !store.has_layer(d) && !todo.iter().any(|(_, x)| x == d) {
                todo.push((b.clone(), d.clone()));
            }
        }
    }
    let mut total = 0;
    for (b, _) in &todo {
        total += b
            .size
            .or_else(|| src.open_member(&b.path).ok().map(|x| x.1))
            .unwrap_or(0);
    }
    let mut progress = Progress::new(total);
    let mut unpacked: Vec<(PathBuf, String)> = Vec::new();
    let mut sizes: HashMap<String, u64> = HashMap::new();
    let mut done = 0u64;
    let n = todo.len();
    let result = (|| -> Result<()> {
        for (i, (b, d)) in todo.iter().enumerate() {
            let dir = store.temp_dir("layer")?;
            unpacked.push((dir.clone(), d.clone()));
            progress.stage(
                format!("layer {}/{n} {}", i + 1, &d[..d.len().min(19)]),
                done,
            );
            let size = unpack_blob(src, b, d, &dir, &mut progress)
                .map_err(|e| e.context(format!("layer {} ({d}, {})", i + 1, b.path)))?;
            done += b.size.unwrap_or(0);
            sizes.insert(d.clone(), size);
        }
        Ok(())
    })();
    progress.done();
    if let Err(e) = result {
        for (dir, _) in &unpacked {
            let _ = remove_tree(dir);
        }
        return Err(e);
    }
    let known: HashMap<String, u64> = store
        .images()?
        .into_iter()
        .flat_map(|r| r.layers)
        .map(|l| (l.diff_id, l.size))
        .collect();
    let mut placed = Vec::new();
    let commit = (|| -> Result<Vec<Imported>> {
        for (dir, d) in &unpacked {
            if store.commit_layer(dir, d)? {
                placed.push(d.clone());
            }
        }
        let mut out = Vec::new();
        for p in plans {
            let layers: Vec<LayerRecord> = p
                .layers
                .iter()
                .map(|(_, d)| LayerRecord {
                    diff_id: d.clone(),
                    size: sizes.get(d).or(known.get(d)).copied().unwrap_or(0),
                })
                .collect();
            let new_layers = p
                .layers
                .iter()
                .filter(|(_, d)| sizes.contains_key(d))
                .count();
            let rec = ImageRecord {
                id: p.id.clone(),
                names: p.names.clone(),
                layers,
                config: p.config,
                source: source.to_string(),
            };
            store.put_image(&rec)?;
            out.push(Imported {
                id: p.id,
                names: p.names,
                layers: rec.layers.len(),
                new_layers,
            });
        }
        Ok(out)
    })();
    if commit.is_err() {
        for (dir, _) in &unpacked {
            let _ = remove_tree(dir);
        }
        for d in &placed {
            let _ = store.remove_layer(d);
        }
    }
    commit
}

/// Import one layer tar (from `commit`) as a new image on top of `base`.
pub fn import_layer_on(
    store: &Store,
    layer_tar: &Path,
    diff_id: &str,
    config: Value,
    names: Vec<String>,
) -> Result<Imported> {
    let data = serde_json::to_vec(&config).map_err(|e| ImageError::new(e.to_string()))?;
    let diff_ids = check_diff_ids(&config)?;
    let base_dir = layer_tar
        .parent()
        .ok_or_else(|| ImageError::new("layer path has no parent"))?;
    let src = Source::Dir(base_dir.to_path_buf());
    let name = layer_tar
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let top = Blob {
        path: name,
        digest: None,
        size: None,
    };
    // Lower layers are already stored; only the top one is read (the others are never opened).
    let layers = diff_ids
        .iter()
        .map(|d| {
            if d == diff_id {
                (top.clone(), d.clone())
            } else {
                (
                    Blob {
                        path: "(stored)".into(),
                        digest: None,
                        size: None,
                    },
                    d.clone(),
                )
            }
        })
        .collect();
    let plan = Plan {
        names,
        id: format!("sha256:{}", hex_of(&Sha256::digest(&data))),
        config,
        layers,
    };
    let mut out = import_plans(store, &src, vec![plan], "commit")?;
    out.pop()
        .ok_or_else(|| ImageError::new("commit: nothing imported"))
}
