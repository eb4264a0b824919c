//! The declarative run plan: `RunPlan::new` validates the flags, and `host_steps` /
//! `container_steps` list what will be done to the kernel, in order, as data. `apply` executes a
//! step list through a `Sys`; with `RecordingSys` the order is unit-tested without privileges.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use super::caps::{self, Caps, ProcessCaps};
use super::idmap::{self, ContainerIds, IdMap};
use super::request::{NetMode, RunRequest};
use super::seccomp::Insn;
use super::security::{self, Security};
use super::sys::{self, RunError, RunResult, Sys};

pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// `--tmpfs` mounts, then (under `--read-only` with `read_only_tmpfs`) /run, /tmp and /var/tmp
/// where no `--tmpfs` is.
fn plan_tmpfs(args: &RunRequest) -> RunResult<Vec<Tmpfs>> {
    let mut out: Vec<Tmpfs> = args
        .tmpfs
        .iter()
        .map(|t| parse_tmpfs(t))
        .collect::<RunResult<_>>()?;
    if args.read_only && args.read_only_tmpfs {
        for (ctr, mode) in [("/run", "0755"), ("/tmp", "1777"), ("/var/tmp", "1777")] {
            if !out.iter().any(|t| t.ctr == Path::new(ctr)) {
                out.push(Tmpfs {
                    ctr: ctr.into(),
                    flags: sys::MS_NOSUID | sys::MS_NODEV,
                    data: format!("mode={mode}"),
                });
            }
        }
    }
    Ok(out)
}

/// `-v HOST:CTR[:ro]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bind {
    pub host: PathBuf,
    pub ctr: PathBuf,
    pub read_only: bool,
    pub is_dir: bool,
}

/// `-u`: ids, or names to resolve in the rootfs's /etc/passwd and /etc/group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserSpec {
    Id(u32),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub user: UserSpec,
    pub group: Option<UserSpec>,
}

/// A validated `unionfuse run`.
#[derive(Clone, Debug)]
pub struct RunPlan {
    pub lowers: Vec<PathBuf>,
    pub upper: Option<PathBuf>,
    pub hostname: String,
    /// `-e` in order (KEY=VAL); defaults are added in the container.
    pub env: Vec<OsString>,
    pub workdir: Option<PathBuf>,
    pub user: Option<User>,
    pub binds: Vec<Bind>,
    pub net: NetMode,
    pub read_only: bool,
    pub tty: bool,
    /// The container has a user namespace of its own (rootless, or asked for as root).
    pub userns: bool,
    /// The supervisor (and the union's daemon) enters it first: a run not started as root, or
    /// `--rootless`.
    pub rootless: bool,
    /// A rootful run's container-only user namespace (`--userns=auto`, `--uidmap`): pid 1 is
    /// cloned into it, the daemon stays host root and the union maps the ids.
    pub container_ids: Option<ContainerIds>,
    pub cmd: Vec<OsString>,
    pub verbose: u8,
    pub security: Security,
    /// `--tmpfs`, and /run, /tmp, /var/tmp under `--read-only` (`read_only_tmpfs`).
    pub tmpfs: Vec<Tmpfs>,
}

/// `--tmpfs CTR[:OPTS]`: mount flags from OPTS' flag words, the rest as tmpfs's data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    pub ctr: PathBuf,
    pub flags: u64,
    pub data: String,
}

/// podman's defaults for `--tmpfs` (rw,noexec,nosuid,nodev) changed by OPTS' flag words;
/// other options (size=, mode=, uid=, ...) go to the kernel, which checks them.
fn parse_tmpfs(v: &str) -> RunResult<Tmpfs> {
    let (ctr, opts) = v.split_once(':').unwrap_or((v, ""));
    let ctr = absolute_clean(Path::new(ctr), "--tmpfs")?;
    if ctr == Path::new("/") {
        return Err(RunError::new(format!("--tmpfs {v}: not on /")));
    }
    let mut flags = sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC;
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "rw" => flags &= !sys::MS_RDONLY,
            "ro" => flags |= sys::MS_RDONLY,
            "exec" => flags &= !sys::MS_NOEXEC,
            "noexec" => flags |= sys::MS_NOEXEC,
            "suid" => flags &= !sys::MS_NOSUID,
            "nosuid" => flags |= sys::MS_NOSUID,
            "dev" => flags &= !sys::MS_NODEV,
            "nodev" => flags |= sys::MS_NODEV,
            _ => data.push(o),
        }
    }
    Ok(Tmpfs {
        ctr,
        flags,
        data: data.join(","),
    })
}

/// One thing done to the kernel. Container paths (`ctr`) are inside the new root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    EnterUserNs {
        extra: i32,
        map: IdMap,
    },
    Unshare(i32),
    /// Propagation of every mount under a host path (MS_SLAVE or MS_PRIVATE, recursive).
    Propagation {
        host: PathBuf,
        flags: u64,
    },
    BindSelf(PathBuf),
    SetHostname(String),
    LoopbackUp,
    MkdirAll {
        ctr: PathBuf,
        mode: u32,
    },
    Touch(PathBuf),
    Symlink {
        target: PathBuf,
        ctr: PathBuf,
    },
    Mount {
        source: String,
        ctr: PathBuf,
        fstype: String,
        flags: u64,
        data: String,
    },
    Bind {
        host: PathBuf,
        ctr: PathBuf,
    },
    /// A generated /etc file bound over `ctr` (created if missing). If the target can't be
    /// created (a rootless root facing a directory owned by an unmapped id), warn and go on:
    /// a container without /etc/hosts beats no container.
    InitFile {
        host: PathBuf,
        ctr: PathBuf,
    },
    ReadOnly {
        ctr: PathBuf,
        recursive: bool,
    },
    PivotRoot(PathBuf),
    /// Hide a path: /dev/null over a file, an empty read-only tmpfs over a directory; nothing
    /// when it does not exist.
    Mask(PathBuf),
    /// Bind a path onto itself read-only; nothing when it does not exist.
    ReadOnlyPath(PathBuf),
    // In the command's process, before exec (`RunPlan::exec_steps`).
    /// Close every fd from this one up.
    CloseFdsFrom(u32),
    /// Drop every capability outside this set from the bounding set.
    Bounding(Caps),
    /// Keep the permitted set across the switch to a non-root uid (PR_SET_KEEPCAPS).
    KeepCaps,
    SetIds {
        uid: u32,
        gid: u32,
        /// None where setgroups is denied (a user namespace mapped without the helper).
        groups: Option<Vec<u32>>,
    },
    /// As the user: a directory it cannot enter is an error.
    Chdir(PathBuf),
    SetCaps(ProcessCaps),
    NoNewPrivs,
    Seccomp(Vec<Insn>),
}

fn absolute_clean(p: &Path, what: &str) -> RunResult<PathBuf> {
    if !p.is_absolute() {
        return Err(RunError::new(format!(
            "{what} {}: must be an absolute path",
            p.display()
        )));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    Ok(out)
}

fn parse_volume(v: &str) -> RunResult<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, ctr, ro) = match parts.as_slice() {
        [h, c] => (*h, *c, false),
        [h, c, "ro"] => (*h, *c, true),
        [h, c, "rw"] => (*h, *c, false),
        _ => {
            return Err(RunError::new(format!(
                "-v {v}: expected HOST:CTR or HOST:CTR:ro"
            )));
        }
    };
    let host = std::fs::canonicalize(host)
        .map_err(|e| RunError::io(format!("-v {v}: host path {host}"), &e))?;
    let is_dir = host.is_dir();
    let ctr = absolute_clean(Path::new(ctr), &format!("-v {v}: container path"))?;
    if ctr == Path::new("/") {
        return Err(RunError::new(format!("-v {v}: cannot bind over /")));
    }
    Ok(Bind {
        host,
        ctr,
        read_only: ro,
        is_dir,
    })
}

fn parse_spec(s: &str) -> UserSpec {
    match s.parse::<u32>() {
        Ok(n) => UserSpec::Id(n),
        Err(_) => UserSpec::Name(s.to_string()),
    }
}

fn parse_user(s: &str) -> RunResult<User> {
    let (u, g) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    if u.is_empty() || g == Some("") {
        return Err(RunError::new(format!(
            "-u {s}: expected UID[:GID] or NAME[:GROUP]"
        )));
    }
    Ok(User {
        user: parse_spec(u),
        group: g.map(parse_spec),
    })
}

fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
}

impl RunPlan {
    /// Validate the request. `euid` decides rootless mode (with `--rootless` forcing it).
    pub fn new(args: &RunRequest, euid: u32) -> RunResult<RunPlan> {
        let lowers = args.lowers.clone();
        if lowers.is_empty() {
            return Err(RunError::new("LAYERS: at least one lower layer is needed"));
        }
        if args.cmd.is_empty() {
            return Err(RunError::new(
                "no command given (unionfuse run LAYERS -- CMD...)",
            ));
        }
        let hostname = match &args.hostname {
            Some(h) if valid_hostname(h) => h.clone(),
            Some(h) => {
                return Err(RunError::new(format!(
                    "--hostname {h}: letters, digits, '-', '.', '_', at most 64"
                )));
            }
            None => sys::random_hex(12),
        };
        let mut env = Vec::new();
        for e in &args.env {
            let b = e.as_bytes();
            match b.iter().position(|&c| c == b'=') {
                Some(0) => {
                    return Err(RunError::new(format!(
                        "-e {}: empty variable name",
                        e.to_string_lossy()
                    )));
                }
                Some(_) => env.push(e.clone()),
                None => {
                    // `-e KEY`: copy the caller's value, as docker does; absent stays absent.
                    if let Some(v) = std::env::var_os(e) {
                        let mut kv = e.clone();
                        kv.push("=");
                        kv.push(v);
                        env.push(kv);
                    }
                }
            }
        }
        let workdir = args
            .workdir
            .as_deref()
            .map(|w| absolute_clean(w, "-w"))
            .transpose()?;
        let user = args.user.as_deref().map(parse_user).transpose()?;
        let binds = args
            .volumes
            .iter()
            .map(|v| parse_volume(v))
            .collect::<RunResult<_>>()?;
        let rootless = args.rootless || euid != 0;
        let auto = args
            .userns
            .as_deref()
            .map(idmap::parse_userns)
            .transpose()
            .map_err(RunError::new)?
            .flatten();
        let explicit = !args.uidmap.is_empty() || !args.gidmap.is_empty();
        let container_ids = match (auto, explicit) {
            (Some(_), true) => {
                return Err(RunError::new(
                    "--userns=auto and --uidmap/--gidmap: give one or the other",
                ));
            }
            (Some(size), false) => Some(ContainerIds::Auto { size }),
            (None, true) if args.userns.is_some() => {
                return Err(RunError::new(
                    "--userns=host and --uidmap/--gidmap: the maps need a user namespace",
                ));
            }
            (None, true) => Some(ContainerIds::Maps(
                idmap::parse_maps(&args.uidmap, &args.gidmap).map_err(RunError::new)?,
            )),
            (None, false) => None,
        };
        if rootless && container_ids.is_some() {
            return Err(RunError::new(
                "--userns/--uidmap/--gidmap: only for a run started as root \
                 (a rootless run has its user namespace already)",
            ));
        }
        let userns = rootless || container_ids.is_some();
        let security = Security::new(args, userns)?;
        Ok(RunPlan {
            lowers,
            upper: args.upper.clone(),
            hostname,
            env,
            workdir,
            user,
            binds,
            net: args.net,
            read_only: args.read_only,
            tty: args.tty,
            userns,
            rootless,
            container_ids,
            cmd: args.cmd.clone(),
            verbose: args.verbose,
            security,
            tmpfs: plan_tmpfs(args)?,
        })
    }

    /// In the supervisor, before the union is mounted and before pid 1 is forked.
    pub fn host_steps(&self, map: &IdMap) -> Vec<Step> {
        let mut s = Vec::new();
        if self.rootless {
            // The user namespace first: it owns every namespace made after it, which is what
            // lets an unprivileged caller mount FUSE, proc and tmpfs below.
            s.push(Step::EnterUserNs {
                extra: libc::CLONE_NEWNS,
                map: map.clone(),
            });
        } else {
            s.push(Step::Unshare(libc::CLONE_NEWNS));
        }
        // The FUSE mount and everything after it stays in our namespace; host mounts and
        // unmounts still reach us (rslave), so an unmounted host disk is not pinned.
        s.push(Step::Propagation {
            host: "/".into(),
            flags: libc::MS_SLAVE,
        });
        // The pid namespace comes with pid 1's clone (sys::fork_new_pid_ns), not here.
        s
    }

    /// In pid 1, once the union is mounted at `root` (a host path). `init_dir` holds the
    /// generated /etc files.
    pub fn container_steps(&self, root: &Path, init_dir: &Path, map: &IdMap) -> Vec<Step> {
        let mut s = Vec::new();
        let ctr = |p: &str| PathBuf::from(p);
        if self.container_ids.is_some() {
            // Cloned into its user namespace as host root (unmapped there), pid 1 becomes the
            // container's root before anything else, and drops the host's groups.
            s.push(Step::SetIds {
                uid: 0,
                gid: 0,
                groups: Some(vec![]),
            });
        }
        let mut flags = libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        if self.net == NetMode::None {
            flags |= libc::CLONE_NEWNET;
        }
        // Our own mount namespace: pivot_root moves every process of a namespace whose root is
        // the old root, so doing it in the supervisor's would move the FUSE daemon too.
        s.push(Step::Unshare(flags));
        // Nothing mounted from here on may propagate back to the supervisor (or the host).
        s.push(Step::Propagation {
            host: "/".into(),
            flags: libc::MS_PRIVATE,
        });
        // pivot_root needs the new root to be a mount point whose parent is not shared.
        s.push(Step::BindSelf(root.to_path_buf()));
        s.push(Step::SetHostname(self.hostname.clone()));
        if self.net == NetMode::None {
            s.push(Step::LoopbackUp);
        }
        // A proc of the new pid namespace. Must happen before the old root is detached: in a
        // user namespace the kernel only allows it while a full proc is visible.
        s.push(Step::MkdirAll {
            ctr: ctr("/proc"),
            mode: 0o555,
        });
        s.push(Step::Mount {
            source: "proc".into(),
            ctr: ctr("/proc"),
            fstype: "proc".into(),
            flags: sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
            data: String::new(),
        });
        // /dev: a small tmpfs, never the image's /dev (device nodes in an image are not ours).
        s.push(Step::MkdirAll {
            ctr: ctr("/dev"),
            mode: 0o755,
        });
        s.push(Step::Mount {
            source: "tmpfs".into(),
            ctr: ctr("/dev"),
            fstype: "tmpfs".into(),
            flags: sys::MS_NOSUID | sys::MS_STRICTATIME,
            data: "mode=755,size=65536k".into(),
        });
        // Device nodes are bind mounts of the host's: mknod is not allowed in a user namespace,
        // and binding keeps one code path for both modes (as bubblewrap).
        for dev in ["null", "zero", "full", "random", "urandom", "tty"] {
            let p = PathBuf::from("/dev").join(dev);
            s.push(Step::Touch(p.clone()));
            s.push(Step::Bind {
                host: PathBuf::from("/dev").join(dev),
                ctr: p,
            });
        }
        s.push(Step::MkdirAll {
            ctr: ctr("/dev/pts"),
            mode: 0o755,
        });
        // A private devpts instance: the container sees only its own ptys. gid=5 (tty) only
        // where that gid exists inside, else the mount is refused.
        let gid = if !self.userns || map.has_gid(5) {
            ",gid=5"
        } else {
            ""
        };
        s.push(Step::Mount {
            source: "devpts".into(),
            ctr: ctr("/dev/pts"),
            fstype: "devpts".into(),
            flags: sys::MS_NOSUID | sys::MS_NOEXEC,
            data: format!("newinstance,ptmxmode=0666,mode=0620{gid}"),
        });
        s.push(Step::Symlink {
            target: "pts/ptmx".into(),
            ctr: ctr("/dev/ptmx"),
        });
        s.push(Step::MkdirAll {
            ctr: ctr("/dev/shm"),
            mode: 0o1777,
        });
        s.push(Step::Mount {
            source: "shm".into(),
            ctr: ctr("/dev/shm"),
            fstype: "tmpfs".into(),
            flags: sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
            data: "mode=1777,size=65536k".into(),
        });
        for (link, target) in [
            ("/dev/fd", "/proc/self/fd"),
            ("/dev/stdin", "/proc/self/fd/0"),
            ("/dev/stdout", "/proc/self/fd/1"),
            ("/dev/stderr", "/proc/self/fd/2"),
        ] {
            s.push(Step::Symlink {
                target: target.into(),
                ctr: link.into(),
            });
        }
        // /sys read-only. A fresh sysfs needs the network namespace to be ours; in a user
        // namespace sharing the host's network, bind the host's instead (as rootless runc).
        s.push(Step::MkdirAll {
            ctr: ctr("/sys"),
            mode: 0o555,
        });
        if !self.userns || self.net == NetMode::None {
            s.push(Step::Mount {
                source: "sysfs".into(),
                ctr: ctr("/sys"),
                fstype: "sysfs".into(),
                flags: sys::MS_RDONLY | sys::MS_NOSUID | sys::MS_NODEV | sys::MS_NOEXEC,
                data: String::new(),
            });
        } else {
            s.push(Step::Bind {
                host: "/sys".into(),
                ctr: ctr("/sys"),
            });
            s.push(Step::ReadOnly {
                ctr: ctr("/sys"),
                recursive: true,
            });
        }
        if self.security.mask {
            // As the engines: what /proc and /sys tell of the host's hardware and kernel, or
            // let the container change in it, is hidden or read-only (docs/security.md).
            for p in security::MASKED {
                s.push(Step::Mask(ctr(p)));
            }
            for p in security::READ_ONLY {
                s.push(Step::ReadOnlyPath(ctr(p)));
            }
        }
        s.push(Step::MkdirAll {
            ctr: ctr("/tmp"),
            mode: 0o1777,
        });
        // The generated /etc files are bind-mounted from the run's private directory, so they
        // never land in the container layer (see docs/runtime.md).
        for f in ["hosts", "hostname", "resolv.conf"] {
            s.push(Step::InitFile {
                host: init_dir.join(f),
                ctr: PathBuf::from("/etc").join(f),
            });
        }
        for b in &self.binds {
            if b.is_dir {
                s.push(Step::MkdirAll {
                    ctr: b.ctr.clone(),
                    mode: 0o755,
                });
            } else {
                s.push(Step::Touch(b.ctr.clone()));
            }
            s.push(Step::Bind {
                host: b.host.clone(),
                ctr: b.ctr.clone(),
            });
            if b.read_only {
                s.push(Step::ReadOnly {
                    ctr: b.ctr.clone(),
                    recursive: true,
                });
            }
        }
        for t in &self.tmpfs {
            s.push(Step::MkdirAll {
                ctr: t.ctr.clone(),
                mode: 0o755,
            });
            s.push(Step::Mount {
                source: "tmpfs".into(),
                ctr: t.ctr.clone(),
                fstype: "tmpfs".into(),
                flags: t.flags,
                data: t.data.clone(),
            });
        }
        // The switch: afterwards the host's tree is unreachable (old root detached).
        s.push(Step::PivotRoot(root.to_path_buf()));
        if self.read_only {
            // Only the root mount: /dev, /proc, /dev/shm and -v binds keep their own modes.
            s.push(Step::ReadOnly {
                ctr: ctr("/"),
                recursive: false,
            });
        }
        s
    }

    /// In the command's process, after the fork, before exec: close the fds not passed on,
    /// shrink the capabilities, switch to the user, no_new_privs, and the seccomp filter last,
    /// so that none of the runtime's own calls meet it. Without no_new_privs the kernel wants
    /// CAP_SYS_ADMIN to install a filter: then it comes first, while every capability is
    /// still held (as runc), and the calls after it are ones the filter must allow.
    pub fn exec_steps(&self, uid: u32, gid: u32, groups: Option<&[u32]>, dir: &Path) -> Vec<Step> {
        let sec = &self.security;
        let mut s = vec![Step::CloseFdsFrom(3 + sec.preserve_fds)];
        let filter = sec.seccomp.clone().map(Step::Seccomp);
        if !sec.no_new_privs {
            s.extend(filter.clone());
        }
        s.push(Step::Bounding(sec.bounding));
        if uid != 0 {
            s.push(Step::KeepCaps);
        }
        s.push(Step::SetIds {
            uid,
            gid,
            groups: groups.map(<[u32]>::to_vec),
        });
        s.push(Step::Chdir(dir.to_path_buf()));
        s.push(Step::SetCaps(caps::for_user(sec.bounding, sec.added, uid)));
        if sec.no_new_privs {
            s.push(Step::NoNewPrivs);
            s.extend(filter);
        }
        s
    }

    /// The environment for the command: defaults, then `-e` (later wins), then nothing else.
    pub fn environment(&self, home: &Path) -> Vec<OsString> {
        let mut env: Vec<OsString> = vec![
            format!("PATH={DEFAULT_PATH}").into(),
            format!("HOSTNAME={}", self.hostname).into(),
        ];
        let mut h = OsString::from("HOME=");
        h.push(home.as_os_str());
        env.push(h);
        if self.tty {
            env.push("TERM=xterm".into());
        }
        for e in &self.env {
            let key = key_of(e);
            env.retain(|x| key_of(x) != key);
            env.push(e.clone());
        }
        env
    }
}

fn key_of(kv: &OsStr) -> &[u8] {
    let b = kv.as_bytes();
    &b[..b.iter().position(|&c| c == b'=').unwrap_or(b.len())]
}

/// Execute steps in order, stopping at the first failure (which names the step and path).
pub fn apply(steps: &[Step], sys: &mut dyn Sys) -> RunResult<()> {
    for step in steps {
        tracing::debug!(?step, "run step");
        match step {
            Step::EnterUserNs { extra, map } => sys.enter_userns(*extra, map)?,
            Step::Unshare(f) => sys.unshare(*f)?,
            Step::Propagation { host, flags } => sys.set_propagation(host, *flags)?,
            Step::BindSelf(p) => sys.bind_self(p)?,
            Step::SetHostname(h) => sys.sethostname(h)?,
            Step::LoopbackUp => sys.loopback_up()?,
            Step::MkdirAll { ctr, mode } => sys.mkdir_all(ctr, *mode)?,
            Step::Touch(p) => sys.touch(p)?,
            Step::Symlink { target, ctr } => sys.symlink(target, ctr)?,
            Step::Mount {
                source,
                ctr,
                fstype,
                flags,
                data,
            } => sys.mount(source, ctr, fstype, *flags, data)?,
            Step::Bind { host, ctr } => sys.bind(host, ctr)?,
            Step::InitFile { host, ctr } => {
                if let Err(e) = sys.touch(ctr) {
                    eprintln!(
                        "unionfuse run: warning: no {} in the container: {e}",
                        ctr.display()
                    );
                    continue;
                }
                sys.bind(host, ctr)?;
            }
            Step::ReadOnly { ctr, recursive } => sys.set_read_only(ctr, *recursive)?,
            Step::PivotRoot(p) => sys.pivot_root(p)?,
            Step::Mask(p) => sys.mask(p)?,
            Step::ReadOnlyPath(p) => sys.read_only_path(p)?,
            Step::CloseFdsFrom(n) => sys.close_fds_from(*n)?,
            Step::Bounding(c) => sys.bounding(*c)?,
            Step::KeepCaps => sys.keep_caps()?,
            Step::SetIds { uid, gid, groups } => sys.set_ids(*uid, *gid, groups.as_deref())?,
            Step::Chdir(d) => sys.chdir(d)?,
            Step::SetCaps(c) => sys.set_caps(c)?,
            Step::NoNewPrivs => sys.no_new_privs()?,
            Step::Seccomp(prog) => sys.seccomp(prog)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::idmap::Range;
    use super::*;
    use crate::runtime::sys::RecordingSys;

    fn args(extra: impl FnOnce(&mut RunRequest)) -> RunRequest {
        let mut a = RunRequest {
            lowers: vec!["/".into()],
            cmd: vec!["sh".into()],
            hostname: Some("box".into()),
            ..Default::default()
        };
        extra(&mut a);
        a
    }

    fn single_map() -> IdMap {
        let r = vec![Range {
            inside: 0,
            outside: 1000,
            count: 1,
        }];
        IdMap {
            uids: r.clone(),
            gids: r,
            helper: false,
        }
    }

    fn record(plan: &RunPlan, map: &IdMap) -> Vec<String> {
        let mut rec = RecordingSys::default();
        apply(&plan.host_steps(map), &mut rec).expect("host steps");
        apply(
            &plan.container_steps(Path::new("/run/u/mnt"), Path::new("/run/u/init"), map),
            &mut rec,
        )
        .expect("container steps");
        rec.calls
    }

    fn pos(calls: &[String], prefix: &str) -> usize {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:#?}"))
    }

    #[test]
    fn rootful_plan_order() {
        let plan = RunPlan::new(&args(|_| {}), 0).expect("plan");
        let c = record(&plan, &single_map());
        assert_eq!(c[0], "unshare mnt");
        assert_eq!(c[1], "propagation rslave /");
        assert_eq!(c[2], "unshare mnt+uts+ipc");
        assert_eq!(c[3], "propagation rprivate /");
        assert_eq!(c[4], "bind-self /run/u/mnt");
        assert_eq!(c[5], "sethostname box");
        assert!(!c.iter().any(|x| x.contains("user")), "{c:#?}");
        // proc before the switch (needed in a user ns); the switch after every mount.
        let pivot = pos(&c, "pivot_root");
        assert!(pos(&c, "mount proc") < pivot);
        assert!(c[..pivot].iter().all(|x| !x.starts_with("read-only /")));
        assert_eq!(pivot, c.len() - 1, "nothing after pivot_root: {c:#?}");
        assert!(c.contains(&"mount sysfs sysfs -> /sys [ro,nosuid,nodev,noexec] ".to_string()));
        assert!(
            c.iter()
                .any(|x| x.ends_with("newinstance,ptmxmode=0666,mode=0620,gid=5"))
        );
        for d in ["null", "zero", "full", "random", "urandom", "tty"] {
            let t = pos(&c, &format!("touch /dev/{d}"));
            assert_eq!(c[t + 1], format!("bind /dev/{d} -> /dev/{d}"));
            assert!(pos(&c, "mount tmpfs tmpfs -> /dev ") < t);
        }
        for f in ["hosts", "hostname", "resolv.conf"] {
            let b = pos(&c, &format!("bind /run/u/init/{f} -> /etc/{f}"));
            assert_eq!(c[b - 1], format!("touch /etc/{f}"));
        }
        assert!(c.contains(&"symlink /dev/ptmx -> pts/ptmx".to_string()));
        assert!(c.contains(&"symlink /dev/stderr -> /proc/self/fd/2".to_string()));
    }

    #[test]
    fn rootless_plan_enters_the_user_namespace_first() {
        let plan = RunPlan::new(&args(|_| {}), 1000).expect("plan");
        assert!(plan.userns);
        let c = record(&plan, &single_map());
        assert_eq!(
            c[0],
            "unshare user+mnt + map uid [0 1000 1] gid [0 1000 1] via write"
        );
        assert_eq!(c[1], "propagation rslave /");
        // No gid 5 inside with a single mapping; sysfs of the host's network is bound.
        assert!(
            c.iter()
                .any(|x| x.ends_with("newinstance,ptmxmode=0666,mode=0620"))
        );
        let b = pos(&c, "bind /sys -> /sys");
        assert_eq!(c[b + 1], "read-only recursive /sys");
        assert!(!c.iter().any(|x| x.starts_with("mount sysfs")));
    }

    #[test]
    fn a_rootful_user_namespace_is_pid_1s_alone() {
        let plan =
            RunPlan::new(&args(|a| a.uidmap = vec!["0:100000:65536".into()]), 0).expect("plan");
        assert!(plan.userns && !plan.rootless);
        let map = idmap::parse_maps(&["0:100000:65536".into()], &[]).expect("map");
        let c = record(&plan, &map);
        // The supervisor stays in the host's user namespace; pid 1 becomes the container's
        // root before its first mount, without the host's groups.
        assert_eq!(c[0], "unshare mnt");
        assert_eq!(c[2], "set ids 0:0 groups Some([])");
        assert_eq!(c[3], "unshare mnt+uts+ipc");
        assert!(c.iter().any(|x| x.ends_with("mode=0620,gid=5")), "{c:#?}");
        assert!(pos(&c, "bind /sys -> /sys") < pos(&c, "pivot_root"));
        let e =
            RunPlan::new(&args(|a| a.userns = Some("auto".into())), 1000).expect_err("rootless");
        assert!(
            e.to_string().contains("only for a run started as root"),
            "{e}"
        );
        let e = RunPlan::new(
            &args(|a| {
                a.userns = Some("auto".into());
                a.gidmap = vec!["0:1:1".into()];
            }),
            0,
        )
        .expect_err("both");
        assert!(e.to_string().contains("one or the other"), "{e}");
        let plan =
            RunPlan::new(&args(|a| a.userns = Some("auto:size=1024".into())), 0).expect("auto");
        assert_eq!(plan.container_ids, Some(ContainerIds::Auto { size: 1024 }));
    }

    #[test]
    fn net_none_adds_a_network_namespace_with_loopback() {
        let plan = RunPlan::new(&args(|a| a.net = NetMode::None), 1000).expect("plan");
        let c = record(&plan, &single_map());
        assert_eq!(c[2], "unshare mnt+uts+ipc+net");
        assert!(pos(&c, "loopback up") < pos(&c, "pivot_root"));
        // Our own network namespace: a fresh sysfs is allowed even in a user namespace.
        assert!(c.iter().any(|x| x.starts_with("mount sysfs")));
    }

    #[test]
    fn volumes_are_bound_before_the_switch_and_ro_after_binding() {
        let t = std::env::temp_dir();
        let plan = RunPlan::new(
            &args(|a| {
                a.volumes = vec![
                    format!("{}:/data/../mnt/x:ro", t.display()),
                    "/etc/hostname:/h".into(),
                ];
                a.read_only = true;
            }),
            0,
        )
        .expect("plan");
        let c = record(&plan, &single_map());
        let host = std::fs::canonicalize(&t).expect("tmp");
        let b = pos(&c, &format!("bind {} -> /mnt/x", host.display()));
        assert_eq!(c[b - 1], "mkdir /mnt/x 755");
        assert_eq!(c[b + 1], "read-only recursive /mnt/x");
        let f = pos(&c, "bind /etc/hostname -> /h");
        assert_eq!(c[f - 1], "touch /h");
        assert!(f < pos(&c, "pivot_root"));
        assert_eq!(c.last().map(String::as_str), Some("read-only /"));
    }

    #[test]
    fn bad_flags_name_the_flag() {
        let e = RunPlan::new(&args(|a| a.volumes = vec!["/x".into()]), 0).expect_err("bad -v");
        assert!(e.to_string().starts_with("-v /x"), "{e}");
        let e = RunPlan::new(&args(|a| a.volumes = vec!["/nonexistent-x:/y".into()]), 0)
            .expect_err("missing host path");
        assert!(e.to_string().contains("ENOENT"), "{e}");
        let e = RunPlan::new(&args(|a| a.workdir = Some("rel".into())), 0).expect_err("-w");
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = RunPlan::new(&args(|a| a.hostname = Some("a b".into())), 0).expect_err("host");
        assert!(e.to_string().starts_with("--hostname"), "{e}");
        let e = RunPlan::new(&args(|a| a.user = Some("1:".into())), 0).expect_err("-u");
        assert!(e.to_string().starts_with("-u"), "{e}");
    }

    fn exec_calls(plan: &RunPlan, uid: u32) -> Vec<String> {
        let mut rec = RecordingSys::default();
        apply(
            &plan.exec_steps(uid, uid, Some(&[uid]), Path::new("/w")),
            &mut rec,
        )
        .expect("exec steps");
        rec.calls
    }

    #[test]
    fn the_filter_is_installed_last_after_no_new_privs() {
        let plan = RunPlan::new(&args(|_| {}), 0).expect("plan");
        let c = exec_calls(&plan, 0);
        assert_eq!(c[0], "close fds from 3");
        assert!(
            c[1].starts_with("bounding CAP_CHOWN,CAP_DAC_OVERRIDE,CAP_FOWNER"),
            "{c:#?}"
        );
        assert_eq!(c[2], "set ids 0:0 groups Some([0])");
        assert_eq!(c[3], "chdir /w");
        assert!(c[4].starts_with("caps eff [CAP_CHOWN"), "{c:#?}");
        assert!(c[4].ends_with("inh [] amb []"), "{c:#?}");
        assert_eq!(c[5], "no_new_privs");
        assert!(c[6].starts_with("seccomp "), "{c:#?}");
        assert_eq!(c.len(), 7);
        // A non-root user keeps its permitted set over setuid, then gets the added caps only.
        let plan = RunPlan::new(
            &args(|a| {
                a.cap_add = vec!["NET_RAW".into()];
                a.preserve_fds = 2;
            }),
            0,
        )
        .expect("plan");
        let c = exec_calls(&plan, 1000);
        assert_eq!(c[0], "close fds from 5");
        assert_eq!(c[2], "keep caps");
        assert_eq!(
            c[5],
            "caps eff [CAP_NET_RAW] prm [CAP_NET_RAW] inh [CAP_NET_RAW] amb [CAP_NET_RAW]"
        );
    }

    #[test]
    fn without_no_new_privs_the_filter_comes_first_and_unconfined_has_none() {
        let opt = |o: &str| {
            let o = o.to_string();
            RunPlan::new(&args(move |a| a.security_opt = vec![o]), 0).expect("plan")
        };
        let c = exec_calls(&opt("no-new-privileges=false"), 0);
        assert!(c[1].starts_with("seccomp "), "{c:#?}");
        assert!(!c.contains(&"no_new_privs".to_string()));
        let c = exec_calls(&opt("seccomp=unconfined"), 0);
        assert!(!c.iter().any(|x| x.starts_with("seccomp")), "{c:#?}");
        let e = RunPlan::new(&args(|a| a.security_opt = vec!["label=x".into()]), 0)
            .expect_err("unknown");
        assert!(
            e.to_string()
                .starts_with("--security-opt label=x: unknown option"),
            "{e}"
        );
        let e = RunPlan::new(
            &args(|a| a.security_opt = vec!["seccomp=/no/such.json".into()]),
            0,
        )
        .expect_err("missing profile");
        assert!(e.to_string().contains("/no/such.json: ENOENT"), "{e}");
    }

    #[test]
    fn proc_and_sys_are_masked_before_the_switch_unless_privileged() {
        let plan = RunPlan::new(&args(|_| {}), 0).expect("plan");
        let c = record(&plan, &single_map());
        let pivot = pos(&c, "pivot_root");
        for p in [
            "mask /proc/kcore",
            "mask /sys/firmware",
            "read-only-path /proc/sys",
        ] {
            let i = pos(&c, p);
            assert!(pos(&c, "mount sysfs") < i && i < pivot, "{p}: {c:#?}");
        }
        let plan = RunPlan::new(&args(|a| a.privileged = true), 0).expect("plan");
        let c = record(&plan, &single_map());
        assert!(!c.iter().any(|x| x.starts_with("mask")), "{c:#?}");
    }

    #[test]
    fn environment_defaults_then_overrides() {
        let plan = RunPlan::new(
            &args(|a| {
                a.tty = true;
                a.env = vec!["PATH=/x".into(), "A=1".into(), "A=2".into()];
            }),
            0,
        )
        .expect("plan");
        let env = plan.environment(Path::new("/root"));
        let env: Vec<String> = env.iter().map(|e| e.to_string_lossy().into()).collect();
        assert_eq!(
            env,
            ["HOSTNAME=box", "HOME=/root", "TERM=xterm", "PATH=/x", "A=2"]
        );
    }

    #[test]
    fn users_parse_as_ids_or_names() {
        assert_eq!(
            parse_user("1000:50").expect("ids"),
            User {
                user: UserSpec::Id(1000),
                group: Some(UserSpec::Id(50))
            }
        );
        assert_eq!(
            parse_user("nobody").expect("name"),
            User {
                user: UserSpec::Name("nobody".into()),
                group: None
            }
        );
    }
}
