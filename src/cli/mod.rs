//! The command line: clap's types and their conversion into plain requests for the layers
//! below (`config::MountCommand`, `runtime::RunRequest`, `image::cmd`'s arguments). Only this
//! module knows clap; nothing below it imports from here.

pub mod image;
pub mod mount;
pub mod run;

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub use image::ImageCommand;
pub use mount::{MountArgs, MountCommand, mount_command};
pub use run::{NetArg, RunArgs};

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
    Run(RunArgs),
    /// Mount LOWER[:LOWER...] (top-first) with an optional writable UPPER at MNT.
    Mount(MountArgs),
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
        lower: Option<OsString>,
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
