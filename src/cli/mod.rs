//! The command line: clap's types and their conversion into plain requests for the layers
//! below (`config::MountCommand`, `runtime::RunRequest`, `image::cmd`'s arguments). Only this
//! module knows clap; nothing below it imports from here.

pub mod image;
pub mod mount;
pub mod run;

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use crate::compat::{self, CompatAction};

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
    /// Manage the image store: import, ls, inspect, rm, tag, prune, save.
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
        #[arg(long, value_name = "IMAGE", requires = "tag", conflicts_with = "lower")]
        from: Option<String>,
        /// The lower layers it ran on (top-first, ':'-separated), without --from.
        #[arg(long, value_name = "LAYERS")]
        lower: Option<OsString>,
    },
}

/// A command that failed: its error, printed once by `main` as `PROG: error: cause...`, and the
/// exit status.
#[derive(Debug)]
pub struct Failure {
    pub status: u8,
    prog: &'static str,
    error: Box<dyn std::error::Error + Send + Sync>,
}

impl Failure {
    pub fn new(status: u8, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure {
            status,
            prog: "unionfuse",
            error: error.into(),
        }
    }

    /// The same, printed as `unionfuse run: ...`.
    fn run(status: u8, error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Failure {
        Failure {
            prog: "unionfuse run",
            ..Failure::new(status, error)
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.prog, self.error)?;
        let mut cause = self.error.source();
        while let Some(c) = cause {
            write!(f, ": {c}")?;
            cause = c.source();
        }
        Ok(())
    }
}

/// Exit status of a refused command line (as clap's own usage errors).
const USAGE: u8 = 2;
/// Exit status of `run` when the container could not be set up (docker's and podman's).
const RUN_SETUP: u8 = 125;

/// Run the command line `args` (argv, argv[0] included): either fuse-overlayfs's form or a
/// subcommand. Returns the exit code; a failure is for the caller to print, once.
pub fn run(args: Vec<OsString>) -> Result<ExitCode, Failure> {
    let clap_cmd = Cli::command();
    let mut subcommands: Vec<&str> = vec!["help"];
    for sc in clap_cmd.get_subcommands() {
        subcommands.push(sc.get_name());
        subcommands.extend(sc.get_all_aliases());
    }
    if compat::is_compat_invocation(&args, &subcommands) {
        return run_compat(&args[1..]);
    }
    let cli = Cli::parse_from(args);
    let root = cli.root.clone().unwrap_or_else(crate::image::default_root);
    let image_failed = |e: crate::image::ImageError| Failure::new(1, e);
    match cli.command {
        Command::Run(args) => {
            init_logging(args.verbose, LogTo::Stderr);
            // LAYERS may name an image: its layers and config fill the request.
            let (req, in_use) = args
                .into_request(&root)
                .map_err(|e| Failure::run(RUN_SETUP, e))?;
            let code = crate::runtime::run(&req).map_err(|e| {
                let mut msg = e.to_string();
                if req.overlay_workdir.is_none() && msg.contains(".unionfuse-work") {
                    msg.push_str(" (give --overlay-workdir DIR, on the upper's filesystem)");
                }
                Failure::run(RUN_SETUP, msg)
            });
            drop(in_use);
            // `diff` and `commit` without --from find the lowers of this container layer here.
            if let Some(upper) = &req.upper {
                let store = crate::image::Store::at(&root);
                crate::image::containers::record_upper(&store, upper, &req.lowers);
            }
            Ok(ExitCode::from(code?.clamp(0, 255) as u8))
        }
        Command::Image(cmd) => {
            init_logging(0, LogTo::Stderr);
            image::image(&root, &cmd).map_err(image_failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Diff { upper, from, lower } => {
            init_logging(0, LogTo::Stderr);
            image::diff(&root, &upper, from.as_deref(), lower.as_ref()).map_err(image_failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Commit {
            upper,
            output,
            tag,
            from,
            lower,
        } => {
            init_logging(0, LogTo::Stderr);
            let out = (output.as_deref(), tag.as_deref());
            image::commit(&root, &upper, out, from.as_deref(), lower.as_ref())
                .map_err(image_failed)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Mount(args) => {
            let to = match &args.log_file {
                Some(path) => LogTo::File(open_log(path)?),
                None => LogTo::Stderr,
            };
            init_logging(args.verbose, to);
            let cmd = args.into_command().map_err(|e| Failure::new(USAGE, e))?;
            mount::run(cmd)
        }
    }
}

/// fuse-overlayfs's command line (podman's `mount_program`): same mount, other argv.
fn run_compat(args: &[OsString]) -> Result<ExitCode, Failure> {
    let cmd = match compat::parse(args).map_err(|e| Failure::new(USAGE, e))? {
        CompatAction::Mount(cmd) => cmd,
        CompatAction::Help => {
            println!("{}", compat::USAGE);
            return Ok(ExitCode::SUCCESS);
        }
        CompatAction::Version => {
            println!(
                "unionfuse {} (fuse-overlayfs compatible command line)",
                env!("CARGO_PKG_VERSION")
            );
            return Ok(ExitCode::SUCCESS);
        }
    };
    init_logging(cmd.verbose, LogTo::Stderr);
    mount::run(*cmd)
}

/// Where log lines go: stderr, or a file (`mount --log-file`), which a daemon keeps writing to
/// after it has let go of the terminal.
pub enum LogTo {
    Stderr,
    File(std::fs::File),
}

/// The environment variable holding a log filter (`tracing_subscriber::EnvFilter` syntax,
/// e.g. `UNIONFUSE_LOG=debug` or `UNIONFUSE_LOG=unionfuse=trace`); it overrides `-V`.
/// `RUST_LOG` is not read: it is meant for whatever Rust program the user runs in a container.
pub const LOG_ENV: &str = "UNIONFUSE_LOG";

/// Install the log subscriber: level from `verbose` (warn, info, debug, trace) unless
/// `UNIONFUSE_LOG` says otherwise; colours only when writing to a terminal.
fn init_logging(verbose: u8, to: LogTo) {
    use std::io::IsTerminal;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env(LOG_ENV)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match to {
        LogTo::Stderr => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
        LogTo::File(file) => builder
            .with_ansi(false)
            .with_writer(std::sync::Mutex::new(file))
            .init(),
    }
}

/// Open `--log-file PATH` for appending (created 0600).
fn open_log(path: &std::path::Path) -> Result<std::fs::File, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::new(USAGE, format!("--log-file {}: {e}", path.display())))
}
