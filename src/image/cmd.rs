//! The image subcommands as the CLI runs them: `image import|ls|inspect|rm|tag|prune`, `diff`,
//! `commit`.
//! Output formatting lives here; the work is in store, import and export.

use std::io::Write;
use std::path::{Path, PathBuf};

/// println! that gives up quietly when stdout is gone (`image inspect | head`).
macro_rules! say {
    ($($t:tt)*) => {{
        let _ = writeln!(std::io::stdout(), $($t)*);
    }};
}

use super::export;
use super::import::{self, ImportOptions};
use super::{ImageError, Result, Store};

/// `image import PATH [--name NAME[:TAG]]`.
pub fn import(root: &Path, path: &Path, name: Option<&str>) -> Result<()> {
    let store = Store::open(root)?;
    let opts = ImportOptions {
        name: name.map(str::to_string),
    };
    for im in import::import(&store, path, &opts)? {
        let hex = im.id.strip_prefix("sha256:").unwrap_or(&im.id);
        let names = if im.names.is_empty() {
            "<none>".to_string()
        } else {
            im.names.join(", ")
        };
        say!(
            "imported {names} ({}): {} layers, {} new, {} already stored",
            &hex[..12.min(hex.len())],
            im.layers,
            im.new_layers,
            im.layers - im.new_layers
        );
    }
    Ok(())
}

/// `image ls [--format json]`.
pub fn list(root: &Path, json: bool) -> Result<()> {
    let store = Store::at(root);
    if json {
        let v = store.list_json()?;
        let s = serde_json::to_string_pretty(&v)
            .map_err(|e| ImageError::new(format!("encode: {e}")))?;
        say!("{s}");
    } else {
        let _ = write!(std::io::stdout(), "{}", store.list()?);
    }
    Ok(())
}

/// `image inspect IMAGE`.
pub fn inspect(root: &Path, image: &str) -> Result<()> {
    let v = Store::at(root).inspect(image)?;
    let s =
        serde_json::to_string_pretty(&v).map_err(|e| ImageError::new(format!("encode: {e}")))?;
    say!("{s}");
    Ok(())
}

/// `image rm [--force] IMAGE...`: every name removed is printed, then the layers.
pub fn remove(root: &Path, images: &[String], force: bool) -> Result<()> {
    let store = Store::open(root)?;
    for spec in images {
        let done = store.remove_image(spec, force)?;
        for n in &done.untagged {
            say!("untagged {n}");
        }
        if let Some(rec) = &done.image {
            if rec.names.is_empty() {
                say!("removed {}", rec.short_id());
            }
            for n in &rec.names {
                say!("removed {n} ({})", rec.short_id());
            }
        }
        for l in done.layers {
            say!("removed layer {l}");
        }
    }
    Ok(())
}

/// `image tag IMAGE NAME...`.
pub fn tag(root: &Path, image: &str, names: &[String]) -> Result<()> {
    let store = Store::open(root)?;
    for name in names {
        let rec = store.tag(image, name)?;
        say!(
            "tagged {} ({})",
            super::normalize_name(name),
            rec.short_id()
        );
    }
    Ok(())
}

/// `image save IMAGE -o PATH [--format F]`.
pub fn save(root: &Path, image: &str, out: &Path, format: super::save::SaveFormat) -> Result<()> {
    let store = Store::at(root);
    let saved = super::save::save(&store, image, out, format)?;
    let hex = saved.id.strip_prefix("sha256:").unwrap_or(&saved.id);
    say!(
        "saved {image} to {} ({}): {} layers",
        out.display(),
        &hex[..12.min(hex.len())],
        saved.layers.len()
    );
    Ok(())
}

/// `image prune`: layers no image uses.
pub fn prune(root: &Path) -> Result<()> {
    let store = Store::open(root)?;
    let removed = store.prune()?;
    for l in &removed {
        say!("removed layer {l}");
    }
    say!("{} layers removed", removed.len());
    Ok(())
}

/// `diff UPPER [--from IMAGE | --lower LAYERS]`: `from` names an image, `lowers` are layer
/// directories; with neither, A and C are told apart by copy-up origin xattrs.
pub fn diff(root: &Path, upper: &Path, from: Option<&str>, lowers: &[PathBuf]) -> Result<()> {
    let lowers = export_lowers(root, upper, from, lowers)?;
    for c in export::diff(upper, &lowers)? {
        say!("{} {}", c.kind, c.path);
    }
    Ok(())
}

/// The lower layers `upper` ran on, for `diff` and `commit`: those of image `from`, else
/// `lowers` (directories), else the ones the last `run --upper UPPER` mounted, when the store
/// remembers them; else none.
fn export_lowers(
    root: &Path,
    upper: &Path,
    from: Option<&str>,
    lowers: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    Ok(match from {
        Some(img) => {
            let store = Store::at(root);
            let rec = store.get(img)?;
            store.run_image(&rec)?.lowers
        }
        None if lowers.is_empty() => {
            super::containers::recorded_lowers(&Store::at(root), upper).unwrap_or_default()
        }
        None => {
            for l in lowers {
                match std::fs::metadata(l) {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => {
                        let why = format!("lower layer {}: not a directory", l.display());
                        return Err(ImageError::new(why));
                    }
                    Err(e) => {
                        return Err(ImageError::io(format!("lower layer {}", l.display()), &e));
                    }
                }
            }
            lowers.to_vec()
        }
    })
}

/// `commit UPPER [-o FILE] [--tag NAME:TAG [--from IMAGE]] [--lower LAYERS]`: the lowers are
/// found as for `diff`.
pub fn commit(
    root: &Path,
    upper: &Path,
    output: Option<&Path>,
    tag: Option<&str>,
    (from, lowers): (Option<&str>, &[PathBuf]),
) -> Result<()> {
    if output.is_none() && tag.is_none() {
        return Err(ImageError::new(
            "commit: give -o FILE, --tag NAME:TAG, or both",
        ));
    }
    // Without -o the tar is a temp file outside the store (the store's tmp/ is emptied by
    // whoever takes its lock).
    let tmp;
    let path = match output {
        Some(p) => p.to_path_buf(),
        None => {
            tmp = TempFile(
                std::env::temp_dir().join(format!("unionfuse-commit-{}.tar", std::process::id())),
            );
            tmp.0.clone()
        }
    };
    let lowers = export_lowers(root, upper, from, lowers)?;
    let (diff_id, size) = export::write_layer_file(upper, &lowers, &path)?;
    if output.is_some() {
        say!(
            "wrote {} ({diff_id}, {})",
            path.display(),
            super::store::human(size)
        );
    }
    if let Some(tag) = tag {
        if from.is_none() {
            eprintln!(
                "unionfuse: warning: {tag} holds only the container layer (the diff), not the \
                 image it ran on; give --from IMAGE for an image that runs on its own"
            );
        }
        let store = Store::open(root)?;
        let im = export::commit_image(&store, &path, &diff_id, from, tag)?;
        let hex = im.id.strip_prefix("sha256:").unwrap_or(&im.id);
        say!(
            "committed {} ({}): {} layers, top {diff_id}",
            im.names.join(", "),
            &hex[..12.min(hex.len())],
            im.layers
        );
    }
    Ok(())
}

struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
