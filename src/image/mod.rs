//! Images: a content-addressed store of unpacked layers (`store`), import of docker-archive and
//! OCI layout images into it (`import`, extraction in `unpack`), and export of a container's
//! upper as a layer (`export`). Layers are stored in kernel overlay's format, so a stack of them
//! is a valid `lowerdir=`. Knows nothing of FUSE; `run` gets plain layer directories from here.

pub mod cmd;
pub mod containers;
pub mod export;
pub mod import;
mod progress;
pub mod save;
pub mod store;
mod unpack;

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::runtime::RunRequest;

pub use store::{ImageRecord, LayerRecord, Store};

/// Every failure of the image commands: a message naming the file, entry or step.
#[derive(Debug)]
pub struct ImageError(pub String);

pub type Result<T> = std::result::Result<T, ImageError>;

impl ImageError {
    pub fn new(msg: impl Into<String>) -> ImageError {
        ImageError(msg.into())
    }

    pub fn io(what: impl fmt::Display, e: &std::io::Error) -> ImageError {
        ImageError(format!("{what}: {e}"))
    }

    pub fn sys(what: impl fmt::Display, e: &crate::error::Error) -> ImageError {
        ImageError(format!("{what}: {e}"))
    }

    /// Prefix the message with more context ("layer 2/3: ...").
    pub fn context(self, what: impl fmt::Display) -> ImageError {
        ImageError(format!("{what}: {}", self.0))
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ImageError {}

/// The store's default place: /var/lib/unionfuse for root, else $XDG_DATA_HOME/unionfuse
/// (~/.local/share/unionfuse).
pub fn default_root() -> PathBuf {
    if crate::sys::geteuid() == 0 {
        return PathBuf::from("/var/lib/unionfuse");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("unionfuse");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| OsString::from("/"));
    PathBuf::from(home).join(".local/share/unionfuse")
}

/// `NAME[:TAG]` as stored: docker's default registry prefixes dropped, `:latest` added.
pub fn normalize_name(name: &str) -> String {
    let n = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .or_else(|| name.strip_prefix("localhost/"))
        .unwrap_or(name);
    let last = n.rsplit('/').next().unwrap_or(n);
    if last.contains(':') || last.contains('@') {
        n.to_string()
    } else {
        format!("{n}:latest")
    }
}

/// `sha256:` + 64 lowercase hex digits -> the hex part.
pub fn digest_hex(d: &str) -> Option<&str> {
    let h = d.strip_prefix("sha256:")?;
    is_hex64(h).then_some(h)
}

pub fn is_hex64(h: &str) -> bool {
    h.len() == 64
        && h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What `run IMAGE` needs: the layer directories (top-first) and the image's process config.
#[derive(Clone, Debug, Default)]
pub struct RunImage {
    pub lowers: Vec<PathBuf>,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// The image's record (for `containers::hold`).
    pub image: Option<ImageRecord>,
}

/// The image `run LAYERS` names, if LAYERS names one in the store at `root`. A path (starting
/// with `/` or `.`) is never an image name; a name that is neither an image nor a list of
/// existing layer directories is an error naming both.
pub fn find_run_image(root: &Path, spec: &OsStr) -> Result<Option<RunImage>> {
    let bytes = spec.as_bytes();
    if bytes.starts_with(b"/") || bytes.starts_with(b".") || bytes.is_empty() {
        return Ok(None);
    }
    // Image names are text; a non-UTF-8 argument can only be a layer list.
    let found = match spec.to_str() {
        Some(name) if root.join("images").is_dir() => Store::at(root).find(name)?,
        _ => None,
    };
    let Some(rec) = found else {
        // Not an image: relative layer directories, if they exist. A malformed list is left
        // to the caller's parser, which says what is wrong with it.
        match crate::config::lowers::parse(spec) {
            Err(_) => return Ok(None),
            Ok(layers) if layers.iter().all(|p| p.exists()) => return Ok(None),
            Ok(_) => {}
        }
        return Err(ImageError::new(format!(
            "{}: no such image in {} and no such layer directory",
            spec.to_string_lossy(),
            root.display()
        )));
    };
    let mut img = Store::at(root).run_image(&rec)?;
    img.image = Some(rec);
    Ok(Some(img))
}

/// Fill a run request from an image, as docker does: the layers become the image's, and its
/// config fills what the flags leave open: `-e` overrides the image's Env, `-w` its
/// WorkingDir, `-u` its User; a CMD after `--` replaces the image's Cmd, `--entrypoint` its
/// Entrypoint (and then its Cmd too). Separate from the store so it can be unit-tested.
pub fn apply_run_image(img: &RunImage, entrypoint: Option<&str>, req: &mut RunRequest) {
    req.lowers = img.lowers.clone();
    let ep: Vec<OsString> = match entrypoint {
        Some("") => vec![],
        Some(e) => vec![e.into()],
        None => img.entrypoint.iter().map(Into::into).collect(),
    };
    // docker: --entrypoint resets the image's Cmd; a CMD given replaces it.
    let cmd: Vec<OsString> = if !req.cmd.is_empty() || entrypoint.is_some() {
        std::mem::take(&mut req.cmd)
    } else {
        img.cmd.iter().map(Into::into).collect()
    };
    req.cmd = ep.into_iter().chain(cmd).collect();
    let user_env = std::mem::take(&mut req.env);
    req.env = img.env.iter().map(Into::into).chain(user_env).collect();
    if req.workdir.is_none() {
        req.workdir = img
            .workdir
            .as_ref()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from);
    }
    if req.user.is_none() {
        req.user = img.user.clone().filter(|u| !u.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize_name("busybox"), "busybox:latest");
        assert_eq!(normalize_name("docker.io/library/alpine:3"), "alpine:3");
        assert_eq!(
            normalize_name("localhost:5000/x/y"),
            "localhost:5000/x/y:latest"
        );
        assert_eq!(normalize_name("quay.io/a/b:v1"), "quay.io/a/b:v1");
    }

    fn image() -> RunImage {
        RunImage {
            lowers: vec!["/s/l/b".into(), "/s/l/a:x".into()],
            entrypoint: vec!["/ep".into(), "-x".into()],
            cmd: vec!["default".into()],
            env: vec!["PATH=/img".into(), "A=img".into()],
            workdir: Some("/work".into()),
            user: Some("1000".into()),
            image: None,
        }
    }

    #[test]
    fn image_config_fills_what_flags_leave_open() {
        let mut a = RunRequest::default();
        apply_run_image(&image(), None, &mut a);
        assert_eq!(
            a.lowers,
            image().lowers,
            "store paths kept as paths, ':' and all"
        );
        assert_eq!(a.cmd, ["/ep", "-x", "default"]);
        assert_eq!(a.env, ["PATH=/img", "A=img"]);
        assert_eq!(a.workdir.as_deref(), Some(Path::new("/work")));
        assert_eq!(a.user.as_deref(), Some("1000"));
    }

    #[test]
    fn flags_override_the_image_config() {
        let mut a = RunRequest {
            cmd: vec!["echo".into(), "hi".into()],
            env: vec!["A=flag".into()],
            workdir: Some("/w".into()),
            user: Some("0".into()),
            ..Default::default()
        };
        apply_run_image(&image(), None, &mut a);
        assert_eq!(a.cmd, ["/ep", "-x", "echo", "hi"]);
        // Later wins in RunPlan::environment: the flag's A after the image's.
        assert_eq!(a.env, ["PATH=/img", "A=img", "A=flag"]);
        assert_eq!(a.workdir.as_deref(), Some(Path::new("/w")));
        assert_eq!(a.user.as_deref(), Some("0"));

        let mut a = RunRequest::default();
        apply_run_image(&image(), Some("/bin/sh"), &mut a);
        assert_eq!(a.cmd, ["/bin/sh"], "--entrypoint drops the image's Cmd");
        let mut a = RunRequest {
            cmd: vec!["ls".into()],
            ..Default::default()
        };
        apply_run_image(&image(), Some(""), &mut a);
        assert_eq!(a.cmd, ["ls"], "an empty --entrypoint clears it");
    }
}
