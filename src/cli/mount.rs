//! `unionfuse mount`'s flags as clap parses them, turned into a validated `MountCommand`
//! (lower list by `config::lowers`, `-o` by `config::MountOpts`, checks by `MountConfig::new`).

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::ExitCode;

use super::Failure;
pub use crate::config::MountCommand;
use crate::config::{MountConfig, MountOpts, lowers};
use crate::error::{Error, Result};
use crate::mount::{self, Daemon};

#[derive(clap::Args, Debug)]
pub struct MountArgs {
    /// Lower layers, top-first, separated by ':' (as overlayfs's lowerdir=).
    pub lowers: OsString,
    /// The writable upper layer, then the mountpoint; with one path it is the mountpoint
    /// and the mount is read-only.
    #[arg(num_args = 1..=2, required = true)]
    pub paths: Vec<PathBuf>,
    /// Where copy-ups are prepared; must be on the upper's filesystem (default
    /// UPPER/../.NAME.unionfuse-work). The older spelling `--workdir` still works (hidden: in
    /// `run` it is the container's working directory, as in podman).
    #[arg(long = "overlay-workdir", alias = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Mount options: ro, allow_other, default_permissions, volatile, userxattr,
    /// timeout=SECS, threads=N.
    #[arg(short = 'o', value_name = "OPT[,OPT...]")]
    pub options: Vec<String>,
    /// Stay in the foreground (logs go to stderr, or to --log-file).
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Log more (repeat for more): -V info, -VV debug, -VVV trace. `-v` is `run`'s --volume,
    /// so it has no meaning here.
    #[arg(short = 'V', long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Append the log to FILE, also after the daemon has detached (without it a background
    /// mount's log is discarded once it is mounted).
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

impl MountArgs {
    pub fn into_command(self) -> Result<MountCommand> {
        mount_command(
            &self.lowers,
            &self.paths,
            self.workdir,
            &self.options,
            self.foreground,
            self.verbose,
        )
    }
}

/// `unionfuse mount LOWERS [UPPER] MNT [--workdir W] [-o OPTS]` as plain values.
pub fn mount_command(
    lowers: &(impl AsRef<OsStr> + ?Sized),
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
        _ => return Err(Error::config("mount", "expected [UPPER] MNT")),
    };
    let list = lowers.as_ref();
    let lowers = lowers::parse(list).map_err(|why| Error::config(list, why))?;
    let config = MountConfig::new(&lowers, upper, workdir.as_deref(), mnt, opts)?;
    Ok(MountCommand {
        config,
        foreground,
        verbose,
    })
}

/// Mount and serve until unmounted. Without `foreground`, the command returns once the daemon
/// has mounted (or failed to: the parent reports the daemon's error, the daemon stays quiet).
pub fn run(cmd: MountCommand) -> std::result::Result<ExitCode, Failure> {
    for opt in &cmd.config.ignored {
        tracing::debug!(option = %opt, "mount option accepted for compatibility; no effect");
    }
    // Fork before any thread exists; the parent returns once the child has mounted.
    let pipe = if cmd.foreground {
        None
    } else {
        match mount::daemonize() {
            Ok(Daemon::Child(pipe)) => Some(pipe),
            Ok(Daemon::Parent(Ok(()))) => return Ok(ExitCode::SUCCESS),
            Ok(Daemon::Parent(Err(msg))) => return Err(Failure::new(1, msg)),
            Err(e) => return Err(Failure::new(1, format!("cannot start the daemon: {e}"))),
        }
    };
    let session = mount::mount_typed(&cmd.config);
    if let Some(pipe) = pipe {
        mount::report(pipe, session.as_ref().map(|_| ()));
        if session.is_err() {
            // The waiting parent prints the error; printing it here too would say it twice.
            return Ok(ExitCode::FAILURE);
        }
    }
    let session = session.map_err(|e| Failure::new(1, e))?;
    match mount::serve(session) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            // Daemonized, stderr is /dev/null by now: the log is where this can be seen.
            tracing::error!(error = %e, "session ended with an error");
            Ok(ExitCode::FAILURE)
        }
    }
}
