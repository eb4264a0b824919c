//! Capabilities as a bit set, their names as podman spells them (`CAP_CHOWN`, or `chown`), the
//! engines' default set, `--cap-add`/`--cap-drop` merged as podman merges them, and the sets a
//! user gets. Pure: `sys::set_caps` applies a `ProcessCaps`.

pub const CHOWN: u32 = 0;
pub const DAC_OVERRIDE: u32 = 1;
pub const DAC_READ_SEARCH: u32 = 2;
pub const FOWNER: u32 = 3;
pub const FSETID: u32 = 4;
pub const KILL: u32 = 5;
pub const SETGID: u32 = 6;
pub const SETUID: u32 = 7;
pub const SETPCAP: u32 = 8;
pub const NET_BIND_SERVICE: u32 = 10;
pub const SYS_MODULE: u32 = 16;
pub const SYS_RAWIO: u32 = 17;
pub const SYS_CHROOT: u32 = 18;
pub const SYS_PTRACE: u32 = 19;
pub const SYS_PACCT: u32 = 20;
pub const SYS_ADMIN: u32 = 21;
pub const SYS_BOOT: u32 = 22;
pub const SYS_TIME: u32 = 25;
pub const SYS_TTY_CONFIG: u32 = 26;
pub const SETFCAP: u32 = 31;

/// Every capability name by number (capability.h, through Linux 6.x).
const NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A set of capabilities, bit N for capability N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Caps(pub u64);

impl Caps {
    pub fn has(self, cap: u32) -> bool {
        self.0 & (1u64 << cap) != 0
    }
    pub fn with(self, cap: u32) -> Caps {
        Caps(self.0 | 1u64 << cap)
    }
    pub fn without(self, cap: u32) -> Caps {
        Caps(self.0 & !(1u64 << cap))
    }
    /// `CAP_CHOWN,CAP_KILL` (for messages and the plan's record).
    pub fn names(self) -> String {
        (0..64u32)
            .filter(|c| self.has(*c))
            .map(|c| match NAMES.get(c as usize) {
                Some(n) => format!("CAP_{n}"),
                None => format!("CAP_{c}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// podman's default set (containers.conf `default_capabilities`): what a package manager and a
/// service dropping root need; none of the system-wide ones (SYS_ADMIN, NET_ADMIN, SYS_MODULE,
/// MKNOD, NET_RAW, AUDIT_WRITE: docker's set adds the last three).
pub fn default_set() -> Caps {
    [
        CHOWN,
        DAC_OVERRIDE,
        FOWNER,
        FSETID,
        KILL,
        NET_BIND_SERVICE,
        SETFCAP,
        SETGID,
        SETPCAP,
        SETUID,
        SYS_CHROOT,
    ]
    .iter()
    .fold(Caps(0), |c, n| c.with(*n))
}

/// Every capability this program knows by name.
pub fn all() -> Caps {
    Caps((1u64 << NAMES.len()) - 1)
}

/// `CAP_SYS_ADMIN`, `SYS_ADMIN` or `sys_admin`.
pub fn by_name(name: &str) -> Option<u32> {
    let up = name.to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    NAMES.iter().position(|n| *n == bare).map(|p| p as u32)
}

/// The bounding set from `--cap-add`/`--cap-drop` over `base`, as podman merges them: `ALL` in
/// --cap-add gives every capability (minus the named drops); `ALL` in --cap-drop starts from
/// none (plus the named adds); a capability both added and dropped is an error.
pub fn merge(base: Caps, add: &[String], drop: &[String]) -> Result<Caps, String> {
    let is_all = |s: &String| s.eq_ignore_ascii_case("all");
    let parse = |flag: &str, list: &[String]| -> Result<Caps, String> {
        let mut c = Caps(0);
        for n in list.iter().filter(|s| !is_all(s)) {
            let b = by_name(n).ok_or_else(|| format!("{flag} {n}: unknown capability"))?;
            c = c.with(b);
        }
        Ok(c)
    };
    let (adds, drops) = (parse("--cap-add", add)?, parse("--cap-drop", drop)?);
    if adds.0 & drops.0 != 0 {
        return Err(format!(
            "--cap-add and --cap-drop both name {}",
            Caps(adds.0 & drops.0).names()
        ));
    }
    if add.iter().any(is_all) {
        if drop.iter().any(is_all) {
            return Err("--cap-add ALL and --cap-drop ALL contradict each other".into());
        }
        return Ok(Caps(all().0 & !drops.0));
    }
    if drop.iter().any(is_all) {
        return Ok(adds);
    }
    Ok(Caps((base.0 | adds.0) & !drops.0))
}

/// The capability sets the command starts with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessCaps {
    pub bounding: Caps,
    pub effective: Caps,
    pub permitted: Caps,
    pub inheritable: Caps,
    pub ambient: Caps,
}

/// As podman (4.x, with runc or crun) gives them: root gets `bounding` as its effective and
/// permitted sets and an empty inheritable set (CVE-2022-27650/27652: an inheritable set lets
/// file capabilities of an image's binary gain more); any other uid gets nothing but the
/// capabilities added by name with `--cap-add`, in every set including the ambient one, so
/// that they survive the exec. The bounding set is the same for both.
pub fn for_user(bounding: Caps, added: Caps, uid: u32) -> ProcessCaps {
    if uid == 0 {
        ProcessCaps {
            bounding,
            effective: bounding,
            permitted: bounding,
            inheritable: Caps(0),
            ambient: Caps(0),
        }
    } else {
        let c = Caps(added.0 & bounding.0);
        ProcessCaps {
            bounding,
            effective: c,
            permitted: c,
            inheritable: c,
            ambient: c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_default_set_is_podmans() {
        // podman's CapBnd as seen in a container: 00000000800405fb.
        assert_eq!(default_set().0, 0x8004_05fb);
        assert_eq!(by_name("cap_sys_admin"), Some(SYS_ADMIN));
        assert_eq!(by_name("NET_RAW"), Some(13));
        assert_eq!(by_name("CAP_NOPE"), None);
    }

    #[test]
    fn add_and_drop_merge_as_podman() {
        let d = default_set();
        assert_eq!(
            merge(d, &s(&["SYS_ADMIN"]), &s(&["CHOWN"])).expect("merge"),
            d.with(SYS_ADMIN).without(CHOWN)
        );
        assert_eq!(
            merge(d, &s(&["kill"]), &s(&["all"])).expect("merge"),
            Caps(0).with(KILL)
        );
        assert_eq!(
            merge(d, &s(&["ALL"]), &s(&["SYS_ADMIN"])).expect("merge"),
            all().without(SYS_ADMIN)
        );
        let e = merge(d, &s(&["CHOWN"]), &s(&["CAP_CHOWN"])).expect_err("both");
        assert!(e.contains("CAP_CHOWN"), "{e}");
        let e = merge(d, &s(&["CAP_FLY"]), &[]).expect_err("unknown");
        assert_eq!(e, "--cap-add CAP_FLY: unknown capability");
    }

    #[test]
    fn a_non_root_user_gets_only_the_added_capabilities() {
        let b = default_set().with(SYS_ADMIN);
        let root = for_user(b, Caps(0).with(SYS_ADMIN), 0);
        assert_eq!((root.effective, root.inheritable), (b, Caps(0)));
        let user = for_user(b, Caps(0).with(SYS_ADMIN), 1000);
        assert_eq!(user.bounding, b);
        assert_eq!(user.effective, Caps(0).with(SYS_ADMIN));
        assert_eq!(user.ambient, Caps(0).with(SYS_ADMIN));
        assert_eq!(for_user(b, Caps(0), 1000).permitted, Caps(0));
    }
}
