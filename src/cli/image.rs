//! The image subcommands' clap types (`image ...`, `diff`, `commit`) and their dispatch to
//! `image::cmd`, which takes plain values.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::Subcommand;

use crate::config::lowers;
use crate::image::{self, ImageError};

/// `unionfuse image ...`.
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Import a docker-archive tar (docker/podman save) or an OCI layout (directory or tar).
    Import {
        path: PathBuf,
        /// Name the image NAME[:TAG] instead of the archive's names.
        #[arg(long, value_name = "NAME:TAG")]
        name: Option<String>,
    },
    /// List the images in the store.
    #[command(alias = "list")]
    Ls,
    /// Show an image's config and layers (diff_ids, sizes, which other images share them).
    Inspect { image: String },
    /// Remove an image name; the image and its unshared layers go with its last name.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
}

pub fn image(root: &Path, cmd: &ImageCommand) -> image::Result<()> {
    match cmd {
        ImageCommand::Import { path, name } => image::cmd::import(root, path, name.as_deref()),
        ImageCommand::Ls => image::cmd::list(root),
        ImageCommand::Inspect { image } => image::cmd::inspect(root, image),
        ImageCommand::Rm { images } => image::cmd::remove(root, images),
    }
}

/// `diff`: `--lower` is a lower layer list, read as everywhere else.
pub fn diff(
    root: &Path,
    upper: &Path,
    from: Option<&str>,
    lower: Option<&OsString>,
) -> image::Result<()> {
    let lowers = match lower {
        Some(l) => lowers::parse(l)
            .map_err(|why| ImageError::new(format!("--lower {}: {why}", l.to_string_lossy())))?,
        None => vec![],
    };
    image::cmd::diff(root, upper, from, &lowers)
}
