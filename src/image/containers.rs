//! What the store knows of containers, written by `run`:
//! ```text
//! ROOT/containers/<image hex>-<pid>.json   an image in use: held with a shared flock(2) while
//!                                          the run lives; lists the image's layers
//! ROOT/uppers/<sha256 of the upper path>.json  the lowers the last `run --upper DIR` used
//! ```
//! A record in use is one whose flock cannot be taken: a run that died (even by SIGKILL) lost
//! its lock with its fds, so its record is stale whatever its pid now names, and is deleted by
//! whoever finds it. Nothing here is needed for `run` to work: failing to write is not an error.

use std::collections::BTreeSet;
use std::fs::{File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{ImageRecord, Store};

#[derive(Serialize, Deserialize)]
struct InUseRecord {
    pid: u32,
    image: String,
    layers: Vec<String>,
}

/// The image of a running container, held until dropped (the process's exit releases it too).
#[derive(Debug)]
pub struct InUse {
    _file: File,
    path: PathBuf,
}

impl Drop for InUse {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn dir(store: &Store) -> PathBuf {
    store.root().join("containers")
}

/// Mark `rec` as in use by this process. `None` when the store cannot record it (read-only
/// store, another user's): `image rm` then cannot see this run.
pub fn hold(store: &Store, rec: &ImageRecord) -> Option<InUse> {
    let d = dir(store);
    std::fs::create_dir_all(&d).ok()?;
    let pid = std::process::id();
    let path = d.join(format!("{}-{pid}.json", rec.hex()));
    // Locked and written under another name, then renamed: a record is never seen unlocked.
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp).ok()?;
    let body = InUseRecord {
        pid,
        image: rec.id.clone(),
        layers: rec.layers.iter().map(|l| l.diff_id.clone()).collect(),
    };
    let ok = file.lock_shared().is_ok()
        && serde_json::to_vec(&body)
            .ok()
            .is_some_and(|d| file.write_all(&d).is_ok())
        && std::fs::rename(&tmp, &path).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        return None;
    }
    Some(InUse { _file: file, path })
}

/// The records of running containers (stale ones are deleted on the way).
fn live(store: &Store) -> Vec<InUseRecord> {
    let Ok(rd) = std::fs::read_dir(dir(store)) else {
        return vec![];
    };
    let mut out = Vec::new();
    for ent in rd.flatten() {
        let p = ent.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let Ok(file) = File::open(&p) else { continue };
        match file.try_lock() {
            Err(TryLockError::WouldBlock) => {
                if let Ok(data) = std::fs::read(&p)
                    && let Ok(rec) = serde_json::from_slice::<InUseRecord>(&data)
                {
                    out.push(rec);
                }
            }
            // Locked by nobody: its run is gone.
            Ok(()) => {
                let _ = std::fs::remove_file(&p);
            }
            Err(TryLockError::Error(_)) => {}
        }
    }
    out
}

/// The pids of the running containers of image `id`.
pub fn users(store: &Store, id: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = live(store)
        .into_iter()
        .filter(|r| r.image == id)
        .map(|r| r.pid)
        .collect();
    pids.sort_unstable();
    pids
}

/// The layers under running containers (also those of an image removed with --force).
pub fn layers_in_use(store: &Store) -> BTreeSet<String> {
    live(store).into_iter().flat_map(|r| r.layers).collect()
}

fn upper_record(store: &Store, upper: &Path) -> Option<PathBuf> {
    let canon = upper.canonicalize().ok()?;
    let h = Sha256::digest(canon.as_os_str().as_encoded_bytes());
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    Some(store.root().join("uppers").join(format!("{hex}.json")))
}

#[derive(Serialize, Deserialize)]
struct UpperRecord {
    upper: PathBuf,
    lowers: Vec<PathBuf>,
}

/// Remember the lowers (top-first) a `run --upper` mounted under `upper`, for `diff` and
/// `commit` without `--from`. Only in a store that exists already.
pub fn record_upper(store: &Store, upper: &Path, lowers: &[PathBuf]) {
    if !store.root().is_dir() {
        return;
    }
    let Some(p) = upper_record(store, upper) else {
        return;
    };
    let body = UpperRecord {
        upper: upper.canonicalize().unwrap_or_else(|_| upper.to_path_buf()),
        lowers: lowers
            .iter()
            .map(|l| l.canonicalize().unwrap_or_else(|_| l.clone()))
            .collect(),
    };
    let tmp = p.with_extension(format!("tmp{}", std::process::id()));
    let ok = std::fs::create_dir_all(p.parent().unwrap_or(store.root())).is_ok()
        && serde_json::to_vec(&body)
            .ok()
            .is_some_and(|d| std::fs::write(&tmp, d).is_ok())
        && std::fs::rename(&tmp, &p).is_ok();
    if !ok {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!(upper = %upper.display(), "cannot record the upper's lowers");
    }
}

/// The lowers the last `run --upper UPPER` used, if recorded and all still there.
pub fn recorded_lowers(store: &Store, upper: &Path) -> Option<Vec<PathBuf>> {
    let data = std::fs::read(upper_record(store, upper)?).ok()?;
    let rec: UpperRecord = serde_json::from_slice(&data).ok()?;
    (!rec.lowers.is_empty() && rec.lowers.iter().all(|l| l.is_dir())).then_some(rec.lowers)
}
