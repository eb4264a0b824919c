//! `image save`: an image of the store as a docker-archive tar (`docker load`, `podman load`),
//! an OCI layout directory or an OCI layout tar (`skopeo copy oci:`/`oci-archive:`). Each
//! stored layer is exported again as a plain tar (`export::write_stored_layer`); its diff_id is
//! that tar's sha256, which need not be the imported one's (tar headers differ), so the config
//! gets the new `rootfs.diff_ids`, hence a new image id. The contents are the same.
//! Written to a temp name beside the output and renamed when complete.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{ImageError, Result, Store, export};

/// The archive formats `image save` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormat {
    DockerArchive,
    OciArchive,
    OciDir,
}

/// What was written: the image's new id (config digest) and its layers' diff_ids.
pub struct Saved {
    pub id: String,
    pub layers: Vec<String>,
}

fn hex(b: &[u8]) -> String {
    Sha256::digest(b)
        .iter()
        .map(|x| format!("{x:02x}"))
        .collect()
}

/// A file the archive holds: its path inside the archive and where its bytes are.
enum Member {
    Bytes(String, Vec<u8>),
    File(String, PathBuf),
}

/// Save image `spec` of `store` to `out` in `format`.
pub fn save(store: &Store, spec: &str, out: &Path, format: SaveFormat) -> Result<Saved> {
    let rec = store.get(spec)?;
    let work = tempdir_beside(out)?;
    let res = build(store, &rec, &work.0, out, format);
    drop(work);
    res
}

fn build(
    store: &Store,
    rec: &super::ImageRecord,
    work: &Path,
    out: &Path,
    format: SaveFormat,
) -> Result<Saved> {
    // The layers, bottom-first, as plain tars in the work dir.
    let mut layers = Vec::new();
    for (i, l) in rec.layers.iter().enumerate() {
        let dir = store.layer_dir(&l.diff_id);
        if !dir.is_dir() {
            return Err(ImageError::new(format!(
                "image {}: layer {} is missing from {}",
                rec.display_name(),
                l.diff_id,
                store.root().display()
            )));
        }
        let path = work.join(format!("layer-{i}.tar"));
        let f = File::create(&path)
            .map_err(|e| ImageError::io(format!("create {}", path.display()), &e))?;
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let (diff_id, size) = export::write_stored_layer(&dir, &mut w)
            .map_err(|e| e.context(format!("export layer {}", l.diff_id)))?;
        w.flush()
            .map_err(|e| ImageError::io(format!("write {}", path.display()), &e))?;
        layers.push((diff_id, size, path));
    }
    let mut config = rec.config.clone();
    let diff_ids: Vec<&str> = layers.iter().map(|(d, _, _)| d.as_str()).collect();
    config["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let config = serde_json::to_vec(&config)
        .map_err(|e| ImageError::new(format!("encode the config: {e}")))?;
    let config_hex = hex(&config);
    let mut members = Vec::new();
    match format {
        SaveFormat::DockerArchive => {
            let mut paths = Vec::new();
            for (diff_id, _, path) in &layers {
                let h = diff_id.trim_start_matches("sha256:");
                let name = format!("{h}/layer.tar");
                members.push(Member::File(name.clone(), path.clone()));
                paths.push(name);
            }
            let cfg_name = format!("{config_hex}.json");
            members.push(Member::Bytes(cfg_name.clone(), config));
            let manifest = json!([{
                "Config": cfg_name,
                "RepoTags": rec.names,
                "Layers": paths,
            }]);
            members.push(Member::Bytes("manifest.json".into(), to_json(&manifest)?));
        }
        SaveFormat::OciArchive | SaveFormat::OciDir => {
            let mut descs = Vec::new();
            for (diff_id, size, path) in &layers {
                let h = diff_id.trim_start_matches("sha256:");
                members.push(Member::File(format!("blobs/sha256/{h}"), path.clone()));
                descs.push(json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": diff_id,
                    "size": size,
                }));
            }
            let manifest = to_json(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": format!("sha256:{config_hex}"),
                    "size": config.len(),
                },
                "layers": descs,
            }))?;
            let manifest_hex = hex(&manifest);
            let manifests: Vec<Value> = index_entries(&rec.names, &manifest_hex, manifest.len());
            members.push(Member::Bytes(format!("blobs/sha256/{config_hex}"), config));
            members.push(Member::Bytes(
                format!("blobs/sha256/{manifest_hex}"),
                manifest,
            ));
            members.push(Member::Bytes(
                "oci-layout".into(),
                to_json(&json!({"imageLayoutVersion": "1.0.0"}))?,
            ));
            members.push(Member::Bytes(
                "index.json".into(),
                to_json(&json!({"schemaVersion": 2, "manifests": manifests}))?,
            ));
        }
    }
    match format {
        SaveFormat::OciDir => write_dir(out, work, &members)?,
        _ => write_tar(out, work, &members)?,
    }
    Ok(Saved {
        id: format!("sha256:{config_hex}"),
        layers: layers.into_iter().map(|(d, _, _)| d).collect(),
    })
}

/// One index entry per name (an unnamed image gets one without a name), named as podman and
/// skopeo do: `org.opencontainers.image.ref.name` the tag, `io.containerd.image.name` the name.
fn index_entries(names: &[String], manifest_hex: &str, size: usize) -> Vec<Value> {
    let desc = |annotations: Value| {
        json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest_hex}"),
            "size": size,
            "annotations": annotations,
        })
    };
    if names.is_empty() {
        return vec![desc(json!({}))];
    }
    names
        .iter()
        .map(|n| {
            let tag = n.rsplit_once(':').map(|(_, t)| t).unwrap_or("latest");
            desc(json!({
                "io.containerd.image.name": n,
                "org.opencontainers.image.ref.name": tag,
            }))
        })
        .collect()
}

fn to_json(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| ImageError::new(format!("encode: {e}")))
}

/// A temp directory beside `out` (same filesystem: the result is renamed into place), removed
/// on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir_beside(out: &Path) -> Result<TempDir> {
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out.file_name().unwrap_or_default().to_string_lossy();
    let p = dir.join(format!(".{name}.save-{}", std::process::id()));
    std::fs::create_dir(&p).map_err(|e| ImageError::io(format!("create {}", p.display()), &e))?;
    Ok(TempDir(p))
}

fn write_tar(out: &Path, work: &Path, members: &[Member]) -> Result<()> {
    let tmp = work.join("archive.tar");
    let f =
        File::create(&tmp).map_err(|e| ImageError::io(format!("create {}", tmp.display()), &e))?;
    let mut tar = tar::Builder::new(BufWriter::with_capacity(1 << 20, f));
    let io = |e: std::io::Error| ImageError::io(format!("write {}", out.display()), &e);
    let mut dirs = std::collections::BTreeSet::new();
    let mut seen = std::collections::BTreeSet::new();
    for m in members {
        let name = match m {
            Member::Bytes(n, _) | Member::File(n, _) => n,
        };
        // An image may list one layer twice: one member.
        if !seen.insert(name.clone()) {
            continue;
        }
        // Parent directories first, as `docker save` writes them.
        let mut parent = Path::new(name).parent();
        let mut missing = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            if dirs.insert(p.to_path_buf()) {
                missing.push(p.to_path_buf());
            }
            parent = p.parent();
        }
        for d in missing.into_iter().rev() {
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            tar.append_data(&mut h, &d, std::io::empty()).map_err(io)?;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        match m {
            Member::Bytes(n, data) => {
                h.set_size(data.len() as u64);
                tar.append_data(&mut h, n, data.as_slice()).map_err(io)?;
            }
            Member::File(n, path) => {
                let f = File::open(path)
                    .map_err(|e| ImageError::io(format!("open {}", path.display()), &e))?;
                let len = f.metadata().map_err(io)?.len();
                h.set_size(len);
                tar.append_data(&mut h, n, f).map_err(io)?;
            }
        }
    }
    let w = tar.into_inner().map_err(io)?;
    let f = w.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, out).map_err(io)
}

fn write_dir(out: &Path, work: &Path, members: &[Member]) -> Result<()> {
    if out.exists() {
        return Err(ImageError::new(format!(
            "{}: already exists (an OCI layout directory is written new)",
            out.display()
        )));
    }
    let tmp = work.join("layout");
    let io = |e: std::io::Error| ImageError::io(format!("write {}", out.display()), &e);
    for m in members {
        let name = match m {
            Member::Bytes(n, _) | Member::File(n, _) => n,
        };
        let dst = tmp.join(name);
        if dst.exists() {
            continue;
        }
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p).map_err(io)?;
        }
        match m {
            Member::Bytes(_, data) => std::fs::write(&dst, data).map_err(io)?,
            // Same filesystem: the layer tar moves into place.
            Member::File(_, path) => std::fs::rename(path, &dst).map_err(io)?,
        }
    }
    std::fs::rename(&tmp, out).map_err(io)
}
