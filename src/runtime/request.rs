//! What `unionfuse run` is asked to do, as plain values: the command line (`cli::run`) or a
//! test builds it; `plan::RunPlan::new` validates it. No clap type reaches the runtime.

use std::ffi::OsString;
use std::path::PathBuf;

/// The container's network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum NetMode {
    /// Share the host's network namespace.
    #[default]
    Host,
    /// A new network namespace with only the loopback interface, up.
    None,
}

/// A run as requested, before validation.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Lower layers, top-first (already split, or an image's layers).
    pub lowers: Vec<PathBuf>,
    /// Keep the container layer here; None: a temporary one, deleted at exit.
    pub upper: Option<PathBuf>,
    pub hostname: Option<String>,
    /// `KEY=VAL`, or `KEY` alone to copy the caller's value; later entries win.
    pub env: Vec<OsString>,
    pub workdir: Option<PathBuf>,
    /// `UID[:GID]` or `NAME[:GROUP]`.
    pub user: Option<String>,
    /// `HOST:CTR[:ro]`.
    pub volumes: Vec<String>,
    pub net: NetMode,
    pub read_only: bool,
    pub tty: bool,
    /// Use a user namespace even as root.
    pub rootless: bool,
    pub verbose: u8,
    // Containment (docs/security.md).
    /// `--cap-add`, `--cap-drop`: capability names (`CAP_X`, `x`) or `ALL`.
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// Every capability, no seccomp filter, nothing masked.
    pub privileged: bool,
    /// `--security-opt`: `no-new-privileges[=true|false]`, `seccomp=unconfined|FILE`.
    pub security_opt: Vec<String>,
    /// Keep the caller's fds 3..3+N open in the command.
    pub preserve_fds: u32,
    /// `--userns`: `host`, `auto` or `auto:size=N` (a rootful run only).
    pub userns: Option<String>,
    /// `--uidmap`, `--gidmap`: `CONTAINER:HOST:SIZE` each (a rootful run only).
    pub uidmap: Vec<String>,
    pub gidmap: Vec<String>,
    /// The command and its arguments.
    pub cmd: Vec<OsString>,
    /// The union's work dir (`--overlay-workdir`); None: the run's private directory when it
    /// is on the upper's filesystem, else next to the upper (`config::default_workdir`).
    pub overlay_workdir: Option<PathBuf>,
    /// `--tmpfs CTR[:OPTS]`: a fresh tmpfs at CTR.
    pub tmpfs: Vec<String>,
    /// With `read_only`: writable tmpfs on /run, /tmp and /var/tmp (podman's --read-only-tmpfs).
    pub read_only_tmpfs: bool,
}
