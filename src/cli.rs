//! Command-line parsing (clap) into validated configurations. No filesystem logic here.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::{MountConfig, MountOpts};
use crate::error::{Error, Result};

#[derive(Parser, Debug)]
#[command(
    name = "unionfuse",
    version,
    about = "A union filesystem in userspace, overlayfs-compatible"
)]
pub struct Cli {
    /// The image store (default: /var/lib/unionfuse as root, else
    /// $XDG_DATA_HOME/unionfuse or ~/.local/share/unionfuse).
    #[arg(long, global = true, value_name = "DIR")]
    pub root: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a command in its own namespaces with the union as its root (see docs/runtime.md).
    Run(crate::runtime::RunArgs),
    /// Mount LOWER[:LOWER...] (top-first) with an optional writable UPPER at MNT.
    Mount {
        /// Lower layers, top-first, separated by ':' (as overlayfs's lowerdir=).
        lowers: String,
        /// The writable upper layer, then the mountpoint; with one path it is the mountpoint
        /// and the mount is read-only.
        #[arg(num_args = 1..=2, required = true)]
        paths: Vec<PathBuf>,
        /// Where copy-ups are prepared; must be on the upper's filesystem.
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Mount options: ro, allow_other, default_permissions, volatile, userxattr,
        /// timeout=SECS, threads=N.
        #[arg(short = 'o', value_name = "OPT[,OPT...]")]
        options: Vec<String>,
        /// Stay in the foreground and log to stderr.
        #[arg(long, short = 'f')]
        foreground: bool,
        /// Log more (repeat for more).
        #[arg(short, long, action = clap::ArgAction::Count)]
        verbose: u8,
    },
    // Images (src/image/, docs/images.md).
    /// Manage the image store: import, ls, inspect, rm.
    #[command(subcommand)]
    Image(ImageCommand),
    /// List a container layer's changes as `docker diff` does (A added, C changed, D deleted).
    Diff {
        /// The container's upper directory (`run --upper DIR`).
        upper: PathBuf,
        /// Tell A from C with this image's layers (else: copy-up origin xattrs).
        #[arg(long, value_name = "IMAGE", conflicts_with = "lower")]
        from: Option<String>,
        /// Tell A from C with these lower layers (top-first, ':'-separated).
        #[arg(long, value_name = "LAYERS")]
        lower: Option<String>,
    },
    /// Write a container layer as an OCI layer tarball; with --tag, store it as a new image.
    Commit {
        /// The container's upper directory (`run --upper DIR`).
        upper: PathBuf,
        /// The layer tarball to write (plain tar, `.wh.` whiteouts).
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
        /// Store the layer as image NAME:TAG on top of --from.
        #[arg(long, value_name = "NAME:TAG")]
        tag: Option<String>,
        /// The image the container ran (the new image's base).
        #[arg(long, value_name = "IMAGE", requires = "tag")]
        from: Option<String>,
    },
}

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

/// Split a lowerdir list on ':' (a `\:` is a literal colon, as fuse-overlayfs accepts).
pub fn split_layers(s: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            }
            ':' => out.push(PathBuf::from(std::mem::take(&mut cur))),
            c => cur.push(c),
        }
    }
    out.push(PathBuf::from(cur));
    out.into_iter()
        .filter(|p| !p.as_os_str().is_empty())
        .collect()
}

pub struct MountCommand {
    pub config: MountConfig,
    pub foreground: bool,
    pub verbose: u8,
}

pub fn mount_command(
    lowers: &str,
    paths: &[PathBuf],
    workdir: Option<PathBuf>,
    options: &[String],
    foreground: bool,
    verbose: u8,
) -> Result<MountCommand> {
    let mut opts = MountOpts::default();
    for o in options {
        opts.parse_into(o)?;
    }
    let (upper, mnt) = match paths {
        [mnt] => (None, mnt),
        [upper, mnt] => (Some(upper.as_path()), mnt),
        _ => return Err(Error::config("", "expected [UPPER] MNT")),
    };
    let lowers = split_layers(lowers);
    let config = MountConfig::new(&lowers, upper, workdir.as_deref(), mnt, opts)?;
    Ok(MountCommand {
        config,
        foreground,
        verbose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_split_on_colons_with_escapes() {
        assert_eq!(
            split_layers("/a:/b"),
            vec![PathBuf::from("/a"), PathBuf::from("/b")]
        );
        assert_eq!(
            split_layers("/a\\:x:/b"),
            vec![PathBuf::from("/a:x"), PathBuf::from("/b")]
        );
        assert_eq!(split_layers("/a::"), vec![PathBuf::from("/a")]);
    }
}
