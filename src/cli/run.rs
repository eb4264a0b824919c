//! `unionfuse run`'s flags as clap parses them, turned into a plain `runtime::RunRequest`
//! (LAYERS split by `config::lowers`, or an image's layers and config from the store).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::lowers;
use crate::image;
use crate::runtime::{NetMode, RunRequest};

/// `--net`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NetArg {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

impl From<NetArg> for NetMode {
    fn from(n: NetArg) -> NetMode {
        match n {
            NetArg::Host => NetMode::Host,
            NetArg::None => NetMode::None,
        }
    }
}

/// `unionfuse run`'s containment flags (docs/security.md), podman's spellings.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ContainmentArgs {
    /// Add a capability to the default set (CAP_NAME, NAME, or ALL).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from the default set (CAP_NAME, NAME, or ALL).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, /proc and /sys unmasked.
    #[arg(long)]
    pub privileged: bool,
    /// no-new-privileges[=true|false], seccomp=unconfined or seccomp=PROFILE.json.
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Pass the caller's file descriptors 3..3+N to the command (others above 2 are closed).
    #[arg(long = "preserve-fds", value_name = "N", default_value_t = 0)]
    pub preserve_fds: u32,
    /// As root: a user namespace for the container, mapped to unused host ids (auto[:size=N]),
    /// or none (host, the default).
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,
    /// As root: map container ids CONTAINER.. to host ids HOST.. (SIZE of them); repeatable.
    #[arg(long, value_name = "CONTAINER:HOST:SIZE")]
    pub uidmap: Vec<String>,
    /// As --uidmap, for group ids (default: the same ranges as --uidmap).
    #[arg(long, value_name = "CONTAINER:HOST:SIZE")]
    pub gidmap: Vec<String>,
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
    #[arg(long, value_enum, default_value_t = NetArg::Host)]
    pub net: NetArg,
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
    // Containment (docs/security.md): podman's spellings, boxed (the commands' enum stays
    // small).
    #[command(flatten)]
    pub contain: Box<ContainmentArgs>,
    /// With an IMAGE: run this instead of the image's Entrypoint (and drop its Cmd).
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,
    // The union's own options, and podman's flags that have a meaning here.
    /// The union's work dir, where copy-ups are prepared: on --upper's filesystem (default: the
    /// run's private directory when it is, else UPPER/../.NAME.unionfuse-work). Not
    /// -w/--workdir, which is the container's working directory, as in podman.
    #[arg(long, value_name = "DIR", requires = "upper")]
    pub overlay_workdir: Option<PathBuf>,
    /// Read variables from FILE: KEY=VAL or KEY (copied from here) per line, `#` comments;
    /// the image's Env, then the files in order, then -e.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Mount a fresh tmpfs at CTR; OPTS: ro, exec, suid, dev, size=, mode=, uid=, gid=, ...
    /// (default rw,noexec,nosuid,nodev, as podman).
    #[arg(long, value_name = "CTR[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// With --read-only: writable tmpfs on /run, /tmp and /var/tmp (podman's default, true).
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub read_only_tmpfs: bool,
    /// Accepted for podman's command lines: a run never outlives its command (mount,
    /// processes and a temporary container layer go at exit; an --upper DIR stays).
    #[arg(long)]
    pub rm: bool,
    /// Accepted for podman's command lines: the command's stdin is always this one's.
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Lower layers, top-first, separated by ':', or an image name from the store (src/image/).
    #[arg(value_name = "LAYERS|IMAGE")]
    pub layers: OsString,
    /// The command and its arguments (after `--`); with an IMAGE, its Cmd by default.
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub cmd: Vec<OsString>,
}

impl RunArgs {
    /// The request to run. LAYERS may name an image in the store at `root`: its layers and
    /// config then fill the request (`image::apply_run_image`), and the image is marked in use
    /// (`image rm` refuses it) until the returned guard is dropped. The error is for the user.
    pub fn into_request(
        self,
        root: &Path,
    ) -> Result<(RunRequest, Option<image::containers::InUse>), String> {
        let found = image::find_run_image(root, &self.layers).map_err(|e| e.to_string())?;
        let store = image::Store::at(root);
        let in_use = found
            .as_ref()
            .and_then(|img| img.image.as_ref())
            .and_then(|rec| image::containers::hold(&store, rec));
        // Held, the image's layers must still be there (an `image rm` may have run meanwhile).
        if let Some(img) = &found
            && let Some(missing) = img.lowers.iter().find(|l| !l.is_dir())
        {
            return Err(format!("image layer {} was removed", missing.display()));
        }
        let mut env = Vec::new();
        for f in &self.env_file {
            env.extend(read_env_file(f)?);
        }
        env.extend(self.env);
        let mut req = RunRequest {
            lowers: vec![],
            upper: self.upper,
            hostname: self.hostname,
            env,
            workdir: self.workdir,
            user: self.user,
            volumes: self.volumes,
            net: self.net.into(),
            read_only: self.read_only,
            tty: self.tty,
            rootless: self.rootless,
            verbose: self.verbose,
            cap_add: self.contain.cap_add,
            cap_drop: self.contain.cap_drop,
            privileged: self.contain.privileged,
            security_opt: self.contain.security_opt,
            preserve_fds: self.contain.preserve_fds,
            userns: self.contain.userns,
            uidmap: self.contain.uidmap,
            gidmap: self.contain.gidmap,
            cmd: self.cmd,
            overlay_workdir: self.overlay_workdir,
            tmpfs: self.tmpfs,
            read_only_tmpfs: self.read_only_tmpfs,
        };
        match found {
            Some(img) => image::apply_run_image(&img, self.entrypoint.as_deref(), &mut req),
            None => {
                req.lowers = lowers::parse(&self.layers)
                    .map_err(|why| format!("LAYERS {}: {why}", self.layers.to_string_lossy()))?;
            }
        }
        Ok((req, in_use))
    }
}

/// `--env-file FILE`: one `KEY=VAL` or `KEY` per line (as `-e`); blank lines and lines starting
/// with `#` are skipped, as podman does. Values are taken as written (no quotes removed).
fn read_env_file(path: &Path) -> Result<Vec<OsString>, String> {
    use std::os::unix::ffi::OsStrExt;
    let data = std::fs::read(path).map_err(|e| format!("--env-file {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let trimmed = line.trim_ascii_start();
        if trimmed.is_empty() || trimmed.starts_with(b"#") {
            continue;
        }
        let key = trimmed.split(|&b| b == b'=').next().unwrap_or_default();
        if key.is_empty() || key.iter().any(|b| b.is_ascii_whitespace()) {
            return Err(format!(
                "--env-file {}: line {}: expected KEY=VALUE or KEY",
                path.display(),
                n + 1
            ));
        }
        out.push(std::ffi::OsStr::from_bytes(trimmed).to_owned());
    }
    Ok(out)
}
