//! Images: a content-addressed store of unpacked layers (`store`), import of docker-archive and
//! OCI layout images into it (`import`, extraction in `unpack`), and export of a container's
//! upper as a layer (`export`). Layers are stored in kernel overlay's format, so a stack of them
//! is a valid `lowerdir=`. Knows nothing of FUSE; `run` gets plain layer directories from here.

pub mod cmd;
pub mod export;
pub mod import;
mod progress;
pub mod store;
mod unpack;

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

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
}

/// Rewrite `run`'s arguments when its LAYERS argument names an image in the store at `root`:
/// the layers become the image's, and its config fills what the flags leave open, as docker
/// does: `-e` overrides the image's Env, `-w` its WorkingDir, `-u` its User; a CMD after `--`
/// replaces the image's Cmd, `--entrypoint` its Entrypoint (and then its Cmd too). Returns
/// whether an image was used. A path (starting with `/` or `.`) is never an image name.
pub fn resolve_run(root: &Path, args: &mut crate::runtime::RunArgs) -> Result<bool> {
    let spec = args.layers.clone();
    if spec.starts_with('/') || spec.starts_with('.') || spec.is_empty() {
        return Ok(false);
    }
    let found = if root.join("images").is_dir() {
        Store::at(root).find(&spec)?
    } else {
        None
    };
    let Some(rec) = found else {
        // Not an image: relative layer directories, if they exist.
        if crate::cli::split_layers(&spec).iter().all(|p| p.exists()) {
            return Ok(false);
        }
        return Err(ImageError::new(format!(
            "{spec}: no such image in {} and no such layer directory",
            root.display()
        )));
    };
    let img = Store::at(root).run_image(&rec)?;
    apply_run_image(&img, args);
    Ok(true)
}

/// The override rules, separate from the store so they can be unit-tested.
pub fn apply_run_image(img: &RunImage, args: &mut crate::runtime::RunArgs) {
    let escaped: Vec<String> = img
        .lowers
        .iter()
        .map(|p| {
            p.to_string_lossy()
                .replace('\\', "\\\\")
                .replace(':', "\\:")
        })
        .collect();
    args.layers = escaped.join(":");
    let entrypoint: Vec<OsString> = match &args.entrypoint {
        Some(e) if e.is_empty() => vec![],
        Some(e) => vec![e.into()],
        None => img.entrypoint.iter().map(Into::into).collect(),
    };
    // docker: --entrypoint resets the image's Cmd; a CMD given replaces it.
    let cmd: Vec<OsString> = if !args.cmd.is_empty() || args.entrypoint.is_some() {
        std::mem::take(&mut args.cmd)
    } else {
        img.cmd.iter().map(Into::into).collect()
    };
    args.cmd = entrypoint.into_iter().chain(cmd).collect();
    let user_env = std::mem::take(&mut args.env);
    args.env = img.env.iter().map(Into::into).chain(user_env).collect();
    if args.workdir.is_none() {
        args.workdir = img
            .workdir
            .as_ref()
            .filter(|w| !w.is_empty())
            .map(PathBuf::from);
    }
    if args.user.is_none() {
        args.user = img.user.clone().filter(|u| !u.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::RunArgs;

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
        }
    }

    #[test]
    fn image_config_fills_what_flags_leave_open() {
        let mut a = RunArgs::default();
        apply_run_image(&image(), &mut a);
        assert_eq!(a.layers, "/s/l/b:/s/l/a\\:x");
        assert_eq!(
            crate::cli::split_layers(&a.layers)[1],
            Path::new("/s/l/a:x")
        );
        assert_eq!(a.cmd, ["/ep", "-x", "default"]);
        assert_eq!(a.env, ["PATH=/img", "A=img"]);
        assert_eq!(a.workdir.as_deref(), Some(Path::new("/work")));
        assert_eq!(a.user.as_deref(), Some("1000"));
    }

    #[test]
    fn flags_override_the_image_config() {
        let mut a = RunArgs {
            cmd: vec!["echo".into(), "hi".into()],
            env: vec!["A=flag".into()],
            workdir: Some("/w".into()),
            user: Some("0".into()),
            ..Default::default()
        };
        apply_run_image(&image(), &mut a);
        assert_eq!(a.cmd, ["/ep", "-x", "echo", "hi"]);
        // Later wins in RunPlan::environment: the flag's A after the image's.
        assert_eq!(a.env, ["PATH=/img", "A=img", "A=flag"]);
        assert_eq!(a.workdir.as_deref(), Some(Path::new("/w")));
        assert_eq!(a.user.as_deref(), Some("0"));

        let mut a = RunArgs {
            entrypoint: Some("/bin/sh".into()),
            ..Default::default()
        };
        apply_run_image(&image(), &mut a);
        assert_eq!(a.cmd, ["/bin/sh"], "--entrypoint drops the image's Cmd");
        let mut a = RunArgs {
            entrypoint: Some(String::new()),
            cmd: vec!["ls".into()],
            ..Default::default()
        };
        apply_run_image(&image(), &mut a);
        assert_eq!(a.cmd, ["ls"], "an empty --entrypoint clears it");
    }
}
