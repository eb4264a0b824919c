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
    Ls {
        /// `table` (default) or `json` (one object per image: Id, Names, Layers, Size, ...).
        #[arg(long, value_enum, default_value_t = ListFormat::Table)]
        format: ListFormat,
    },
    /// Show an image's config and layers (diff_ids, sizes, which other images share them).
    Inspect { image: String },
    /// Remove image names. A name of an image that has others is untagged; with its last
    /// name (or by id) the image goes, with its layers no other image uses.
    #[command(alias = "remove")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        /// Also remove an image named by id that has several names, or one a running
        /// container uses (its layers stay until that container exits).
        #[arg(short, long)]
        force: bool,
    },
    /// Give an image more names (NAME:TAG; a name another image had moves here).
    Tag {
        image: String,
        #[arg(required = true, value_name = "NAME:TAG")]
        names: Vec<String>,
    },
    /// Remove the layers that no image lists and no running container uses.
    Prune,
    /// Write an image as a docker-archive tar (docker/podman load), or an OCI layout tar or
    /// directory (skopeo copy oci-archive:/oci:).
    Save {
        image: String,
        /// The archive (or, for oci-dir, the new directory) to write.
        #[arg(short = 'o', long = "output", value_name = "PATH")]
        output: PathBuf,
        #[arg(long, value_enum, default_value_t = SaveFormatArg::DockerArchive)]
        format: SaveFormatArg,
    },
}

/// `image save --format`, podman's names.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaveFormatArg {
    DockerArchive,
    OciArchive,
    OciDir,
}

impl From<SaveFormatArg> for image::save::SaveFormat {
    fn from(f: SaveFormatArg) -> Self {
        match f {
            SaveFormatArg::DockerArchive => image::save::SaveFormat::DockerArchive,
            SaveFormatArg::OciArchive => image::save::SaveFormat::OciArchive,
            SaveFormatArg::OciDir => image::save::SaveFormat::OciDir,
        }
    }
}

/// `image ls --format`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListFormat {
    Table,
    Json,
}

pub fn image(root: &Path, cmd: &ImageCommand) -> image::Result<()> {
    match cmd {
        ImageCommand::Import { path, name } => image::cmd::import(root, path, name.as_deref()),
        ImageCommand::Ls { format } => image::cmd::list(root, *format == ListFormat::Json),
        ImageCommand::Inspect { image } => image::cmd::inspect(root, image),
        ImageCommand::Rm { images, force } => image::cmd::remove(root, images, *force),
        ImageCommand::Tag { image, names } => image::cmd::tag(root, image, names),
        ImageCommand::Prune => image::cmd::prune(root),
        ImageCommand::Save {
            image,
            output,
            format,
        } => image::cmd::save(root, image, output, (*format).into()),
    }
}

/// `--lower` of `diff` and `commit`: a lower layer list, read as everywhere else.
fn parse_lower(lower: Option<&OsString>) -> image::Result<Vec<PathBuf>> {
    match lower {
        Some(l) => lowers::parse(l)
            .map_err(|why| ImageError::new(format!("--lower {}: {why}", l.to_string_lossy()))),
        None => Ok(vec![]),
    }
}

pub fn diff(
    root: &Path,
    upper: &Path,
    from: Option<&str>,
    lower: Option<&OsString>,
) -> image::Result<()> {
    image::cmd::diff(root, upper, from, &parse_lower(lower)?)
}

pub fn commit(
    root: &Path,
    upper: &Path,
    (output, tag): (Option<&Path>, Option<&str>),
    from: Option<&str>,
    lower: Option<&OsString>,
) -> image::Result<()> {
    let lowers = parse_lower(lower)?;
    image::cmd::commit(root, upper, output, tag, (from, &lowers))
}
