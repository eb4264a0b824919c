//! fuse-overlayfs's command line, `unionfuse -o lowerdir=L1:L2,upperdir=U,workdir=W [-o ...]
//! [-f] MNT` (also when started through a link named `fuse-overlayfs`), turned into the same
//! validated `MountConfig` as `unionfuse mount`, so podman/containers-storage's `mount_program`
//! and fuse-overlayfs users can drive unionfuse unchanged. Parsing only: no filesystem access
//! beyond `MountConfig::new`'s checks. The `-o` options themselves are parsed in `config.rs`.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use crate::config::{MountCommand, MountConfig, MountOpts};
use crate::error::{Error, Result};

/// What the fuse-overlayfs form asks for.
pub enum CompatAction {
    Mount(Box<MountCommand>),
    Help,
    Version,
}

impl std::fmt::Debug for CompatAction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CompatAction::Mount(m) => f
                .debug_struct("Mount")
                .field("config", &m.config)
                .field("foreground", &m.foreground)
                .field("verbose", &m.verbose)
                .finish(),
            CompatAction::Help => f.write_str("Help"),
            CompatAction::Version => f.write_str("Version"),
        }
    }
}

/// Flags of the fuse-overlayfs form that are not `-o` options, for `--help`.
pub const USAGE: &str = "\
usage: unionfuse -o lowerdir=L1[:L2...][,upperdir=U,workdir=W][,OPT...] [-o OPT...] [-f] [-d] MNT
       (fuse-overlayfs's command line; also when run through a link named fuse-overlayfs)

  -o OPTS        comma-separated mount options (see README, \"Using unionfuse with podman\")
  -f             stay in the foreground
  -d, --debug    stay in the foreground and log at debug level
  -s             one worker thread
  -v             log more (repeat for more)
  -h, --help     this text
  -V, --version  print the version

The subcommands (`unionfuse mount ...`, ...) are listed by `unionfuse help`.";

/// Should this command line be read as fuse-overlayfs's? `args` is the whole argv (argv[0]
/// included); `subcommands` are the names `unionfuse` knows (from clap).
///
/// Yes when argv[0]'s file name is `fuse-overlayfs`, or when the first argument is an `-o`
/// (joined or not), one of fuse-overlayfs's flags (`-f`, `-d`, `--debug`, `-s`), or a word that
/// is not a subcommand (fuse-overlayfs also accepts `SOURCE MNT -o ...`, as mount.fuse3 calls
/// it). `--help`, `--version` and the subcommands stay with clap.
pub fn is_compat_invocation(args: &[OsString], subcommands: &[&str]) -> bool {
    if let Some(argv0) = args.first()
        && Path::new(argv0).file_name() == Some(OsStr::new("fuse-overlayfs"))
    {
        return true;
    }
    let Some(first) = args.get(1) else {
        return false;
    };
    let first = first.as_encoded_bytes();
    if first.starts_with(b"-o") {
        return true;
    }
    if [&b"-f"[..], b"-d", b"--debug", b"-s"].contains(&first) {
        return true;
    }
    !first.starts_with(b"-") && !subcommands.iter().any(|s| s.as_bytes() == first)
}

/// Parse fuse-overlayfs's arguments (argv without argv[0]) into a mount command.
///
/// As fuse-overlayfs: `upperdir=` needs `workdir=`, without `upperdir=` the mount is read-only,
/// and when run as root `allow_other` is on (containers run processes as other users).
pub fn parse(args: &[OsString]) -> Result<CompatAction> {
    // fuse-overlayfs prepends "-o default_permissions,allow_other,suid" when run as root.
    let mut opts = MountOpts {
        allow_other: Some(crate::sys::geteuid() == 0),
        ..MountOpts::default()
    };
    let mut foreground = false;
    let mut verbose: u8 = 0;
    let mut positional: Vec<PathBuf> = Vec::new();
    let mut any_option = false;
    let mut it = args.iter();
    let mut only_positional = false;
    while let Some(arg) = it.next() {
        let bytes = arg.as_encoded_bytes();
        if only_positional || !bytes.starts_with(b"-") || bytes == b"-" {
            positional.push(PathBuf::from(arg));
            continue;
        }
        match bytes {
            b"--" => only_positional = true,
            b"-o" => {
                let list = it
                    .next()
                    .ok_or_else(|| Error::config("-o", "needs a list of options"))?;
                opts.parse_into(utf8(list)?)?;
                any_option = true;
            }
            b"-f" | b"--foreground" => foreground = true,
            b"-d" | b"--debug" => {
                foreground = true;
                verbose = verbose.max(2);
            }
            b"-s" => opts.threads = Some(1),
            b"-h" | b"--help" => return Ok(CompatAction::Help),
            b"-V" | b"--version" => return Ok(CompatAction::Version),
            _ if bytes.starts_with(b"-o") => {
                opts.parse_into(&utf8(arg)?[2..])?;
                any_option = true;
            }
            _ if bytes.len() > 1 && bytes[1..].iter().all(|&b| b == b'v') => {
                verbose = verbose.saturating_add((bytes.len() - 1) as u8);
            }
            _ => {
                return Err(Error::config(
                    arg,
                    "unknown flag (fuse-overlayfs form: -o OPTS, -f, -d, -s, -v, -h, -V)",
                ));
            }
        }
    }
    if opts.debug {
        foreground = true;
        verbose = verbose.max(2);
    }
    // fuse-overlayfs keeps the last non-option as the mountpoint; mount.fuse3 passes
    // `SOURCE MNT`. The source becomes the name shown in /proc/mounts.
    if !any_option {
        return Err(Error::config(
            positional
                .first()
                .map(PathBuf::as_path)
                .unwrap_or(Path::new("")),
            "expected -o lowerdir=...[,upperdir=...,workdir=...] MNT (fuse-overlayfs form), \
             or a subcommand (`unionfuse help` lists them)",
        ));
    }
    let mnt = match positional.as_slice() {
        [mnt] => mnt.clone(),
        [source, mnt] => {
            if opts.fsname.is_none() {
                opts.fsname = Some(source.to_string_lossy().into_owned());
            }
            mnt.clone()
        }
        [] => return Err(Error::config("MNT", "no mountpoint given")),
        [_, _, extra, ..] => return Err(Error::config(extra, "unexpected extra argument")),
    };
    let lowers = opts
        .lowerdir
        .take()
        .ok_or_else(|| Error::config(&mnt, "-o lowerdir=... is required"))?;
    let upper = opts.upperdir.take();
    let workdir = opts.workdir.take();
    if upper.is_some() && workdir.is_none() {
        // fuse-overlayfs and kernel overlay both refuse this; guessing a work dir could put
        // it on another filesystem than the one the caller prepared.
        return Err(Error::config(
            &mnt,
            "-o workdir=... is required with upperdir= (on the upper's filesystem)",
        ));
    }
    // Layers that containers-storage prepared for a mount program may hold AUFS-style
    // `.wh.` whiteouts, which fuse-overlayfs honours.
    opts.aufs_whiteouts = true;
    let config = MountConfig::new(&lowers, upper.as_deref(), workdir.as_deref(), &mnt, opts)?;
    Ok(CompatAction::Mount(Box::new(MountCommand {
        config,
        foreground,
        verbose,
    })))
}

fn utf8(s: &OsStr) -> Result<&str> {
    s.to_str()
        .ok_or_else(|| Error::config(s, "options must be valid UTF-8"))
}
