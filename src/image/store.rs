//! The image store on disk:
//! ```text
//! ROOT/lock                      flock(2) held by every change (import, rm, commit --tag)
//! ROOT/tmp/                      unpacking in progress (emptied under the lock: leftovers of a kill)
//! ROOT/layers/sha256/<diff_id>/  one unpacked layer, kernel overlay format, shared by images
//! ROOT/images/<config hex>.json  one image: names, layers (bottom-first), its config
//! ```
//! Invariants: a layer directory appears only by rename(2) of a complete unpack; an image record
//! only by rename of a complete file, after all its layers are in place; a layer is removed only
//! when no record names it, and is renamed into tmp/ before being deleted.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use super::{ImageError, Result, RunImage, digest_hex, normalize_name};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LayerRecord {
    /// `sha256:<hex>` of the uncompressed layer tar (the config's `rootfs.diff_ids`).
    pub diff_id: String,
    /// Bytes of the uncompressed layer tar.
    pub size: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `sha256:<hex>` of the config blob, as docker's image id.
    pub id: String,
    /// `NAME:TAG`s (normalized); none for an image whose names moved to another.
    pub names: Vec<String>,
    /// Bottom-first, as `rootfs.diff_ids`.
    pub layers: Vec<LayerRecord>,
    /// The image config (OCI image-spec config.json), as imported.
    pub config: serde_json::Value,
    /// Where it came from (the imported path, or `commit`).
    pub source: String,
}

impl ImageRecord {
    pub fn hex(&self) -> &str {
        self.id.strip_prefix("sha256:").unwrap_or(&self.id)
    }

    pub fn short_id(&self) -> &str {
        let h = self.hex();
        &h[..h.len().min(12)]
    }

    /// The first name, or the short id.
    pub fn display_name(&self) -> String {
        self.names
            .first()
            .cloned()
            .unwrap_or_else(|| self.short_id().to_string())
    }
}

pub struct Store {
    root: PathBuf,
}

/// What `image rm` did: names taken off an image that keeps others, or the image removed
/// (with all its names) and the layers that went with it.
pub struct Removal {
    pub untagged: Vec<String>,
    pub image: Option<ImageRecord>,
    pub layers: Vec<String>,
}

/// The store's exclusive lock; released on drop (close).
pub struct StoreLock {
    _file: File,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl Store {
    /// The store at `root`, not created (for read-only commands).
    pub fn at(root: &Path) -> Store {
        Store {
            root: root.to_path_buf(),
        }
    }

    /// The store at `root`, created if missing (0700: layers hold other users' files).
    pub fn open(root: &Path) -> Result<Store> {
        let s = Store::at(root);
        if !root.exists() {
            std::fs::create_dir_all(root)
                .map_err(|e| ImageError::io(format!("create store {}", root.display()), &e))?;
            std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| ImageError::io(format!("chmod {}", root.display()), &e))?;
        }
        for d in [s.tmp(), s.root.join("layers/sha256"), s.images_dir()] {
            std::fs::create_dir_all(&d)
                .map_err(|e| ImageError::io(format!("create {}", d.display()), &e))?;
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    pub fn layer_dir(&self, diff_id: &str) -> PathBuf {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        self.root.join("layers/sha256").join(hex)
    }

    pub fn has_layer(&self, diff_id: &str) -> bool {
        std::fs::symlink_metadata(self.layer_dir(diff_id)).is_ok_and(|m| m.is_dir())
    }

    /// Take the store's lock (waiting for another import or rm), then clear tmp/: whatever is
    /// there was left by a process killed while holding the lock.
    pub fn lock(&self) -> Result<StoreLock> {
        let p = self.root.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&p)
            .map_err(|e| ImageError::io(format!("open {}", p.display()), &e))?;
        file.lock()
            .map_err(|e| ImageError::io(format!("lock {}", p.display()), &e))?;
        if let Ok(rd) = std::fs::read_dir(self.tmp()) {
            for ent in rd.flatten() {
                let _ = remove_tree(&ent.path());
            }
        }
        Ok(StoreLock { _file: file })
    }

    /// A fresh directory in tmp/ (same filesystem as layers/, so it can be renamed there).
    pub fn temp_dir(&self, what: &str) -> Result<PathBuf> {
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let p = self
            .tmp()
            .join(format!("{what}-{}-{n}", std::process::id()));
        std::fs::create_dir(&p)
            .map_err(|e| ImageError::io(format!("create {}", p.display()), &e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| ImageError::io(format!("chmod {}", p.display()), &e))?;
        Ok(p)
    }

    /// Move a complete unpack into place. Returns false (and removes `tmp`) when the layer is
    /// already there.
    pub fn commit_layer(&self, tmp: &Path, diff_id: &str) -> Result<bool> {
        let dst = self.layer_dir(diff_id);
        if self.has_layer(diff_id) {
            remove_tree(tmp)?;
            return Ok(false);
        }
        std::fs::rename(tmp, &dst).map_err(|e| {
            ImageError::io(format!("rename {} to {}", tmp.display(), dst.display()), &e)
        })?;
        Ok(true)
    }

    /// Remove a layer directory (rename into tmp/ first, so no half-deleted layer is visible).
    pub fn remove_layer(&self, diff_id: &str) -> Result<()> {
        let src = self.layer_dir(diff_id);
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let dst = self.tmp().join(format!("rm-{}-{n}", std::process::id()));
        std::fs::rename(&src, &dst)
            .map_err(|e| ImageError::io(format!("rename {}", src.display()), &e))?;
        remove_tree(&dst)
    }

    /// Every image record, sorted by first name.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let dir = self.images_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(ImageError::io(format!("read {}", dir.display()), &e)),
        };
        let mut out = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io(format!("read {}", dir.display()), &e))?;
            let p = ent.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let data = std::fs::read(&p)
                .map_err(|e| ImageError::io(format!("read {}", p.display()), &e))?;
            let rec: ImageRecord = serde_json::from_slice(&data)
                .map_err(|e| ImageError::new(format!("{}: {e}", p.display())))?;
            out.push(rec);
        }
        out.sort_by_key(|r| (r.names.is_empty(), r.display_name()));
        Ok(out)
    }

    /// The image called `spec`: a name (`NAME` means `NAME:latest`) or an id prefix (at least
    /// 6 hex digits, with or without `sha256:`).
    pub fn find(&self, spec: &str) -> Result<Option<ImageRecord>> {
        let images = self.images()?;
        let norm = normalize_name(spec);
        if let Some(r) = images
            .iter()
            .find(|r| r.names.iter().any(|n| n == spec || *n == norm))
        {
            return Ok(Some(r.clone()));
        }
        let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
        if hex.len() < 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let hits: Vec<&ImageRecord> = images.iter().filter(|r| r.hex().starts_with(hex)).collect();
        match hits.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some((*one).clone())),
            _ => Err(ImageError::new(format!(
                "{spec}: ambiguous image id ({} images match)",
                hits.len()
            ))),
        }
    }

    pub fn get(&self, spec: &str) -> Result<ImageRecord> {
        self.find(spec)?.ok_or_else(|| {
            ImageError::new(format!("{spec}: no such image in {}", self.root.display()))
        })
    }

    fn record_path(&self, id: &str) -> PathBuf {
        let hex = id.strip_prefix("sha256:").unwrap_or(id);
        self.images_dir().join(format!("{hex}.json"))
    }

    /// Write (or replace) a record atomically; its names are taken away from other images
    /// (as `docker tag` moves a tag). Call with the lock held.
    pub fn put_image(&self, rec: &ImageRecord) -> Result<()> {
        let mut rec = rec.clone();
        if let Ok(Some(old)) = self.read_record(&rec.id) {
            for n in old.names {
                if !rec.names.contains(&n) {
                    rec.names.push(n);
                }
            }
        }
        for mut other in self.images()? {
            if other.id == rec.id {
                continue;
            }
            let before = other.names.len();
            other.names.retain(|n| !rec.names.contains(n));
            if other.names.len() != before {
                self.write_record(&other)?;
            }
        }
        self.write_record(&rec)
    }

    fn read_record(&self, id: &str) -> Result<Option<ImageRecord>> {
        let p = self.record_path(id);
        match std::fs::read(&p) {
            Ok(d) => serde_json::from_slice(&d)
                .map(Some)
                .map_err(|e| ImageError::new(format!("{}: {e}", p.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ImageError::io(format!("read {}", p.display()), &e)),
        }
    }

    fn write_record(&self, rec: &ImageRecord) -> Result<()> {
        let dst = self.record_path(&rec.id);
        let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .tmp()
            .join(format!("record-{}-{n}.json", std::process::id()));
        let data = serde_json::to_vec_pretty(rec)
            .map_err(|e| ImageError::new(format!("encode image record: {e}")))?;
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(&data)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dst)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            ImageError::io(format!("write {}", dst.display()), &e)
        })
    }

    /// `image rm`: untag `spec` if it is one of the image's names and the image has others;
    /// else remove the image and every layer no other image (and no running container) uses.
    /// Without `force`, refuses an image named by id that has several names, and an image a
    /// running container uses (`containers::hold`).
    pub fn remove_image(&self, spec: &str, force: bool) -> Result<Removal> {
        let _lock = self.lock()?;
        let mut rec = self.get(spec)?;
        let norm = normalize_name(spec);
        let by_name = rec.names.iter().any(|n| *n == norm || n == spec);
        if by_name && rec.names.len() > 1 {
            let untagged: Vec<String> = rec
                .names
                .iter()
                .filter(|n| **n == norm || *n == spec)
                .cloned()
                .collect();
            rec.names.retain(|n| *n != norm && n != spec);
            self.write_record(&rec)?;
            return Ok(Removal {
                untagged,
                image: None,
                layers: vec![],
            });
        }
        if rec.names.len() > 1 && !force {
            return Err(ImageError::new(format!(
                "{spec}: image {} has {} names ({}): remove them by name, or use --force",
                rec.short_id(),
                rec.names.len(),
                rec.names.join(", ")
            )));
        }
        let users = super::containers::users(self, &rec.id);
        if !users.is_empty() && !force {
            let pids: Vec<String> = users.iter().map(u32::to_string).collect();
            return Err(ImageError::new(format!(
                "{spec}: image {} is in use by a running container (unionfuse run, pid {}): \
                 stop it, or use --force (its layers stay until it exits)",
                rec.short_id(),
                pids.join(", ")
            )));
        }
        let p = self.record_path(&rec.id);
        std::fs::remove_file(&p)
            .map_err(|e| ImageError::io(format!("remove {}", p.display()), &e))?;
        let others = self.images()?;
        let busy = super::containers::layers_in_use(self);
        let mut removed = Vec::new();
        for l in &rec.layers {
            let used = busy.contains(&l.diff_id)
                || others
                    .iter()
                    .any(|o| o.layers.iter().any(|x| x.diff_id == l.diff_id));
            if !used && self.has_layer(&l.diff_id) && !removed.contains(&l.diff_id) {
                self.remove_layer(&l.diff_id)?;
                removed.push(l.diff_id.clone());
            }
        }
        Ok(Removal {
            untagged: vec![],
            image: Some(rec),
            layers: removed,
        })
    }

    /// `image tag IMAGE NAME`: add a name (taken from the image that had it).
    pub fn tag(&self, spec: &str, name: &str) -> Result<ImageRecord> {
        let _lock = self.lock()?;
        let mut rec = self.get(spec)?;
        let name = normalize_name(name);
        if name.is_empty() || name.starts_with(':') || name.contains(char::is_whitespace) {
            return Err(ImageError::new(format!("{name}: not an image name")));
        }
        if !rec.names.contains(&name) {
            rec.names.push(name);
        }
        self.put_image(&rec)?;
        Ok(rec)
    }

    /// `image prune`: remove every layer directory no image lists and no running container
    /// uses. Returns their diff_ids.
    pub fn prune(&self) -> Result<Vec<String>> {
        let _lock = self.lock()?;
        let listed: std::collections::BTreeSet<String> = self
            .images()?
            .into_iter()
            .flat_map(|r| r.layers.into_iter().map(|l| l.diff_id))
            .collect();
        let busy = super::containers::layers_in_use(self);
        let dir = self.root.join("layers/sha256");
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(ImageError::io(format!("read {}", dir.display()), &e)),
        };
        let mut orphans = Vec::new();
        for ent in rd {
            let ent = ent.map_err(|e| ImageError::io(format!("read {}", dir.display()), &e))?;
            let id = format!("sha256:{}", ent.file_name().to_string_lossy());
            if !listed.contains(&id) && !busy.contains(&id) {
                orphans.push(id);
            }
        }
        orphans.sort();
        for id in &orphans {
            self.remove_layer(id)?;
        }
        Ok(orphans)
    }

    /// The layer directories (top-first) and process config of an image, for `run`.
    pub fn run_image(&self, rec: &ImageRecord) -> Result<RunImage> {
        let mut lowers = Vec::new();
        for l in rec.layers.iter().rev() {
            if !self.has_layer(&l.diff_id) {
                return Err(ImageError::new(format!(
                    "image {}: layer {} is missing from {}",
                    rec.display_name(),
                    l.diff_id,
                    self.root.display()
                )));
            }
            // A diff_id the image repeats (identical empty layers do) is one directory: its top
            // copy hides the lower ones completely, and a layer may appear only once in a stack.
            let dir = self.layer_dir(&l.diff_id);
            if !lowers.contains(&dir) {
                lowers.push(dir);
            }
        }
        if lowers.is_empty() {
            return Err(ImageError::new(format!(
                "image {} has no layers",
                rec.display_name()
            )));
        }
        let c = &rec.config["config"];
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let string = |v: &serde_json::Value| v.as_str().map(str::to_string);
        Ok(RunImage {
            lowers,
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            env: strings(&c["Env"]),
            workdir: string(&c["WorkingDir"]),
            user: string(&c["User"]),
            image: None,
        })
    }

    /// `image inspect`: the record, its layers with sizes and paths, and for each layer the
    /// other images sharing it.
    pub fn inspect(&self, spec: &str) -> Result<serde_json::Value> {
        let rec = self.get(spec)?;
        let others = self.images()?;
        let layers: Vec<serde_json::Value> = rec
            .layers
            .iter()
            .map(|l| {
                let shared: Vec<String> = others
                    .iter()
                    .filter(|o| o.id != rec.id && o.layers.iter().any(|x| x.diff_id == l.diff_id))
                    .map(ImageRecord::display_name)
                    .collect();
                serde_json::json!({
                    "DiffID": l.diff_id,
                    "Size": l.size,
                    "Path": self.layer_dir(&l.diff_id),
                    "Present": self.has_layer(&l.diff_id),
                    "SharedWith": shared,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "Id": rec.id,
            "RepoTags": rec.names,
            "Source": rec.source,
            "Created": rec.config.get("created"),
            "Architecture": rec.config.get("architecture"),
            "Os": rec.config.get("os"),
            "Config": rec.config.get("config"),
            "RootFS": {"Type": "layers", "Layers": rec.layers.iter().map(|l| &l.diff_id).collect::<Vec<_>>()},
            "Size": rec.layers.iter().map(|l| l.size).sum::<u64>(),
            "Layers": layers,
        }))
    }

    /// `image ls --format json`: one object per image, as `podman images --format json`
    /// names them where they mean the same.
    pub fn list_json(&self) -> Result<serde_json::Value> {
        let images = self.images()?;
        let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &images {
            for l in &r.layers {
                *uses.entry(&l.diff_id).or_default() += 1;
            }
        }
        let list: Vec<serde_json::Value> = images
            .iter()
            .map(|r| {
                let shared = r
                    .layers
                    .iter()
                    .filter(|l| uses.get(l.diff_id.as_str()).copied().unwrap_or(0) > 1)
                    .count();
                serde_json::json!({
                    "Id": r.hex(),
                    "Names": r.names,
                    "Layers": r.layers.len(),
                    "Size": r.layers.iter().map(|l| l.size).sum::<u64>(),
                    "SharedLayers": shared,
                    "Created": r.config.get("created"),
                    "Containers": super::containers::users(self, &r.id).len(),
                })
            })
            .collect();
        Ok(serde_json::Value::Array(list))
    }

    /// `image ls`: one line per image.
    pub fn list(&self) -> Result<String> {
        let images = self.images()?;
        let mut uses: BTreeMap<&str, usize> = BTreeMap::new();
        for r in &images {
            for l in &r.layers {
                *uses.entry(&l.diff_id).or_default() += 1;
            }
        }
        let mut out = format!(
            "{:<32} {:<12} {:>6} {:>10} {:>7}\n",
            "NAME", "ID", "LAYERS", "SIZE", "SHARED"
        );
        for r in &images {
            let size: u64 = r.layers.iter().map(|l| l.size).sum();
            let shared = r
                .layers
                .iter()
                .filter(|l| uses.get(l.diff_id.as_str()).copied().unwrap_or(0) > 1)
                .count();
            let names = if r.names.is_empty() {
                vec!["<none>".to_string()]
            } else {
                r.names.clone()
            };
            for n in names {
                out.push_str(&format!(
                    "{:<32} {:<12} {:>6} {:>10} {:>7}\n",
                    n,
                    r.short_id(),
                    r.layers.len(),
                    human(size),
                    shared
                ));
            }
        }
        Ok(out)
    }
}

/// Check a stored record's layer list against its config's `rootfs.diff_ids`.
pub fn check_diff_ids(config: &serde_json::Value) -> Result<Vec<String>> {
    let ids = config["rootfs"]["diff_ids"]
        .as_array()
        .ok_or_else(|| ImageError::new("image config has no rootfs.diff_ids"))?;
    ids.iter()
        .map(|v| {
            v.as_str()
                .filter(|s| digest_hex(s).is_some())
                .map(str::to_string)
                .ok_or_else(|| ImageError::new(format!("image config: bad diff_id {v}")))
        })
        .collect()
}

pub fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i + 1 < U.len() {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Remove a tree without following symlinks. A non-root owner may have unpacked read-only
/// directories (0555 /proc in an image): make them writable on the way down.
pub fn remove_tree(p: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(ImageError::io(format!("stat {}", p.display()), &e)),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(p)
            .map_err(|e| ImageError::io(format!("remove {}", p.display()), &e));
    }
    if meta.mode() & 0o700 != 0o700 {
        let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
    }
    let rd =
        std::fs::read_dir(p).map_err(|e| ImageError::io(format!("read {}", p.display()), &e))?;
    for ent in rd {
        let ent = ent.map_err(|e| ImageError::io(format!("read {}", p.display()), &e))?;
        remove_tree(&ent.path())?;
    }
    std::fs::remove_dir(p).map_err(|e| ImageError::io(format!("remove {}", p.display()), &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_diff_id_is_one_lower_at_its_top_position() {
        let root = std::env::temp_dir().join(format!("uf-store-test-{}", std::process::id()));
        let store = Store::open(&root).unwrap();
        let layer = |d: &str| LayerRecord {
            diff_id: format!("sha256:{d}"),
            size: 0,
        };
        for d in ["aa", "bb"] {
            std::fs::create_dir_all(store.layer_dir(d)).unwrap();
        }
        let rec = ImageRecord {
            id: "sha256:cc".into(),
            names: vec!["t:1".into()],
            layers: vec![layer("aa"), layer("bb"), layer("aa")],
            config: serde_json::json!({}),
            source: "test".into(),
        };
        let run = store.run_image(&rec);
        std::fs::remove_dir_all(&root).unwrap();
        let lowers = run.unwrap().lowers;
        assert_eq!(lowers, vec![store.layer_dir("aa"), store.layer_dir("bb")]);
    }
}
