//! The kernel actions of a run as data, in order: `host_steps` in the supervisor, before the
//! union is mounted; `container_steps` in pid 1 up to the switch of root. Pure: the lists are
//! built from the plan alone and executed by `apply` elsewhere.

use std::path::{Path, PathBuf};

use super::{RunPlan, Step};
use crate::runtime::idmap::IdMap;
use crate::runtime::request::NetMode;
use crate::runtime::security;
use crate::runtime::sys;

impl RunPlan {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::idmap::{self, ContainerIds};
    use crate::runtime::plan::fixtures::{args, pos, record, single_map};
    use crate::runtime::request::NetMode;

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
}
