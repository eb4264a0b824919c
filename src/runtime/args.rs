//! `unionfuse run`'s flags as clap parses them. Raw: validation happens in `plan::RunPlan`.

use std::ffi::OsString;
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NetMode {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RunArgs {
    /// Keep the container layer (changes) in DIR; without it a temporary one is deleted at exit.
    #[arg(long, value_name = "DIR")]
    pub upper: Option<PathBuf>,
    /// The container's hostname (default: 12 random hex digits).
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Set an environment variable (KEY alone copies it from here).
    #[arg(short = 'e', long = "env", value_name = "KEY=VAL")]
    pub env: Vec<OsString>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Run as UID[:GID] or NAME[:GROUP] (resolved through the rootfs's /etc/passwd and group).
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Bind-mount a host path: HOST:CTR[:ro].
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    pub volumes: Vec<String>,
    /// Network: share the host's (host) or only a loopback interface (none).
    #[arg(long, value_enum, default_value_t = NetMode::Host)]
    pub net: NetMode,
    /// Mount the container's root read-only (/dev, /proc, /tmp mounts and -v binds stay as given).
    #[arg(long)]
    pub read_only: bool,
    /// Give the command a pseudo-terminal with this terminal's size.
    #[arg(short = 't', long = "tty")]
    pub tty: bool,
    /// Use a user namespace even when started as root (automatic when not root).
    #[arg(long)]
    pub rootless: bool,
    /// Log more (repeat for more).
    #[arg(long, short = 'V', action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// With an IMAGE: run this instead of the image's Entrypoint (and drop its Cmd).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    /// Lower layers, top-first, separated by ':', or an image name from the store (src/image/).
    #[arg(value_name = "LAYERS|IMAGE")]
    pub layers: String,
    /// The command and its arguments (after `--`); with an IMAGE, its Cmd by default.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub cmd: Vec<OsString>,
}
