//! User namespace id maps. Rootless runs: the caller becomes root in the container, and with
//! /etc/subuid + /etc/subgid ranges (through the setuid newuidmap/newgidmap) the ids 1..N map to
//! the caller's subordinate range so `chown` and package managers work. Rootful runs with
//! `--userns=auto` or `--uidmap`/`--gidmap`: the container's ids map to a range of unused host
//! ids (`parse_maps`, `allocate`), and the union shows the layers' ids through the same map
//! (`mount_ranges`). The maps as data; writing them is `sys::enter_userns` (rootless) and
//! `sys::write_child_maps` (rootful).

use std::path::PathBuf;

/// One line of a uid_map/gid_map: `inside outside count`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Range {
    pub inside: u32,
    pub outside: u32,
    pub count: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdMap {
    pub uids: Vec<Range>,
    pub gids: Vec<Range>,
    /// Write the maps through newuidmap/newgidmap (needed for more than our own id).
    pub helper: bool,
}

impl IdMap {
    pub fn uid_map_text(&self) -> String {
        text(&self.uids)
    }
    pub fn gid_map_text(&self) -> String {
        text(&self.gids)
    }
    /// Is `gid` (inside) mapped? (devpts' gid=5 option needs it.)
    pub fn has_gid(&self, gid: u32) -> bool {
        self.gids
            .iter()
            .any(|r| gid >= r.inside && gid - r.inside < r.count)
    }
}

fn text(r: &[Range]) -> String {
    r.iter()
        .map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count))
        .collect()
}

/// A subordinate range from /etc/subuid-style content for a user (by name or numeric id).
pub fn sub_range(content: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    content.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        let matches = Some(who) == name || who.parse::<u32>().ok() == Some(id);
        if !matches {
            return None;
        }
        Some((start.parse().ok()?, count.parse().ok()?))
    })
}

fn find_in_path(prog: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
}

fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
    })
}

/// Decide the maps for `uid`/`gid` (the caller's host ids).
pub fn for_caller(uid: u32, gid: u32) -> IdMap {
    let one = |id| {
        vec![Range {
            inside: 0,
            outside: id,
            count: 1,
        }]
    };
    if uid == 0 {
        // Root asked for a user namespace: identity over the usual 16-bit range.
        let r = vec![Range {
            inside: 0,
            outside: 0,
            count: 65536,
        }];
        return IdMap {
            uids: r.clone(),
            gids: r,
            helper: false,
        };
    }
    let name = user_name(uid);
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let subs = (
        sub_range(&read("/etc/subuid"), name.as_deref(), uid),
        sub_range(&read("/etc/subgid"), name.as_deref(), uid),
    );
    let helpers = find_in_path("newuidmap").is_some() && find_in_path("newgidmap").is_some();
    match subs {
        (Some((us, uc)), Some((gs, gc))) if helpers && uc > 0 && gc > 0 => {
            let with = |id, start, count| {
                vec![
                    Range {
                        inside: 0,
                        outside: id,
                        count: 1,
                    },
                    Range {
                        inside: 1,
                        outside: start,
                        count,
                    },
                ]
            };
            IdMap {
                uids: with(uid, us, uc),
                gids: with(gid, gs, gc),
                helper: true,
            }
        }
        _ => IdMap {
            uids: one(uid),
            gids: one(gid),
            helper: false,
        },
    }
}

/// The user namespace asked of a rootful run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerIds {
    /// `--userns=auto[:size=N]`: N ids (65536 by default) nobody else uses, found at start.
    Auto { size: u32 },
    /// `--uidmap`/`--gidmap` as given.
    Maps(IdMap),
}

/// The default size of an automatic range: every 16-bit id, `nobody` (65534) included.
pub const AUTO_SIZE: u32 = 65536;
/// Where automatic ranges come from without a `containers` entry in /etc/subuid and
/// /etc/subgid: ids from 2^31 up, far above the ranges `useradd` hands out (100000 + 65536 n).
pub const AUTO_POOL: (u32, u32) = (1 << 31, (1 << 31) - 1);

/// `--userns`: `host` (None), `auto` or `auto:size=N`.
pub fn parse_userns(v: &str) -> Result<Option<u32>, String> {
    let bad = || format!("--userns={v}: expected host, auto or auto:size=N");
    match v {
        "host" | "" => Ok(None),
        "auto" => Ok(Some(AUTO_SIZE)),
        _ => {
            let size = v
                .strip_prefix("auto:size=")
                .ok_or_else(bad)?
                .parse::<u32>()
                .map_err(|_| bad())?;
            if size == 0 || size > AUTO_POOL.1 {
                return Err(format!("--userns={v}: size must be 1 to {}", AUTO_POOL.1));
            }
            Ok(Some(size))
        }
    }
}

/// `--uidmap`/`--gidmap CONTAINER:HOST:SIZE` (each repeatable). A missing side takes the other's
/// ranges, as podman does. The container's root (uid 0 and gid 0) must be mapped: pid 1 runs
/// as it.
pub fn parse_maps(uidmap: &[String], gidmap: &[String]) -> Result<IdMap, String> {
    let one = |flag: &str, given: &[String]| -> Result<Vec<Range>, String> {
        let mut out = Vec::new();
        for v in given {
            if v.split(':').count() != 3 {
                return Err(format!("--{flag} {v}: expected CONTAINER:HOST:SIZE"));
            }
        }
        // One parse of every range together: each well-formed, none overlapping another.
        let ranges = crate::config::parse_id_map(&given.join(":"))
            .map_err(|why| format!("--{flag} {}: {why}", given.join(" --{flag} ")))?;
        // parse_id_map reads a triple in uidmapping='s order, first field into `host`; here the
        // first field is podman's CONTAINER id.
        for r in ranges {
            out.push(Range {
                inside: r.host,
                outside: r.container,
                count: r.count,
            });
        }
        if out.len() > 340 {
            return Err(format!("--{flag}: at most 340 ranges (the kernel's limit)"));
        }
        if !out.iter().any(|r| r.inside == 0) {
            return Err(format!(
                "--{flag} {}: container id 0 must be mapped (the container's init runs as it)",
                given.join(" --{flag} ")
            ));
        }
        Ok(out)
    };
    let (uids, gids) = match (uidmap.is_empty(), gidmap.is_empty()) {
        (false, false) => (one("uidmap", uidmap)?, one("gidmap", gidmap)?),
        (false, true) => {
            let u = one("uidmap", uidmap)?;
            (u.clone(), u)
        }
        (true, false) => {
            let g = one("gidmap", gidmap)?;
            (g.clone(), g)
        }
        (true, true) => return Err("--uidmap/--gidmap: no range given".into()),
    };
    Ok(IdMap {
        uids,
        gids,
        helper: false,
    })
}

/// The union's `uidmapping=`/`gidmapping=` for a rootful run in a user namespace: a layer's id
/// N shows as the host id that is N inside, so the container sees the image's owners, and what
/// it creates is stored with its own (inside) ids, as an image layer holds them.
pub fn mount_ranges(r: &[Range]) -> Vec<crate::idmap::IdRange> {
    r.iter()
        .map(|r| crate::idmap::IdRange {
            container: r.outside,
            host: r.inside,
            count: r.count,
        })
        .collect()
}

/// Host id ranges `(start, count)` in use: every process's user namespace map (the `outside`
/// column of /proc/PID/uid_map or gid_map, as the initial namespace sees it, skipping the
/// initial namespace's own identity map), and the subordinate ranges of /etc/subuid or
/// /etc/subgid (`file`) but the one named `skip`.
pub fn used_ranges(map_file: &str, file: &str, skip: Option<&str>) -> Vec<(u32, u32)> {
    let mut used = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e
            .file_name()
            .as_encoded_bytes()
            .iter()
            .all(u8::is_ascii_digit)
        {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(e.path().join(map_file)) else {
            continue;
        };
        for l in text.lines() {
            let f: Vec<u32> = l
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if let [inside, outside, count] = f[..]
                && !(inside == 0 && outside == 0 && count == u32::MAX)
            {
                used.push((outside, count));
            }
        }
    }
    let subs = std::fs::read_to_string(file).unwrap_or_default();
    for l in subs.lines() {
        let f: Vec<&str> = l.trim().split(':').collect();
        if let [who, start, count] = f[..]
            && Some(who) != skip
            && let (Ok(s), Ok(c)) = (start.parse(), count.parse())
        {
            used.push((s, c));
        }
    }
    used
}

/// The first `size`-aligned slot of `size` ids in `pool` (start, count) that overlaps no range
/// of `used`.
pub fn pick_free(pool: (u32, u32), size: u32, used: &[(u32, u32)]) -> Option<u32> {
    let (start, count) = (u64::from(pool.0), u64::from(pool.1));
    let size = u64::from(size);
    let mut at = start;
    while at + size <= start + count && at + size < u64::from(u32::MAX) {
        let clash = used
            .iter()
            .find(|(s, c)| u64::from(*s) < at + size && at < u64::from(*s) + u64::from(*c));
        match clash {
            None => return Some(at as u32),
            // Past the clash, on the next multiple of `size` from the pool's start.
            Some((s, c)) => {
                let end = u64::from(*s) + u64::from(*c);
                at = start + (end - start).div_ceil(size) * size;
            }
        }
    }
    None
}

/// Held while a range is chosen and until the container's maps are written, so that two runs
/// starting together do not pick the same one.
pub struct AllocLock(#[allow(dead_code)] std::fs::File);

/// `--userns=auto`: a range of `size` ids, the same for uids and gids, from the `containers`
/// entry of /etc/subuid and /etc/subgid (podman's convention) or else from `AUTO_POOL`, that no
/// running process's user namespace and no user's subordinate range uses. The lock is to be
/// dropped once the maps are written (then the next run sees them in /proc).
pub fn allocate(size: u32) -> Result<(IdMap, AllocLock), String> {
    let dir = ["/run/lock", "/run"]
        .iter()
        .map(std::path::Path::new)
        .find(|d| d.is_dir())
        .map_or_else(std::env::temp_dir, |d| d.to_path_buf());
    let path = dir.join("unionfuse-userns.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("--userns=auto: open {}: {e}", path.display()))?;
    f.lock()
        .map_err(|e| format!("--userns=auto: lock {}: {e}", path.display()))?;
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let pool = match (
        sub_range(&read("/etc/subuid"), Some("containers"), u32::MAX),
        sub_range(&read("/etc/subgid"), Some("containers"), u32::MAX),
    ) {
        (Some((us, uc)), Some((gs, gc))) if us == gs && uc == gc => (us, uc),
        _ => AUTO_POOL,
    };
    let mut used = used_ranges("uid_map", "/etc/subuid", Some("containers"));
    used.extend(used_ranges("gid_map", "/etc/subgid", Some("containers")));
    let start = pick_free(pool, size, &used).ok_or_else(|| {
        format!(
            "--userns=auto: no free range of {size} ids left in {}..{}",
            pool.0,
            u64::from(pool.0) + u64::from(pool.1)
        )
    })?;
    let r = vec![Range {
        inside: 0,
        outside: start,
        count: size,
    }];
    Ok((
        IdMap {
            uids: r.clone(),
            gids: r,
            helper: false,
        },
        AllocLock(f),
    ))
}

/// newuidmap/newgidmap's arguments: the pid, then `inside outside count` triples.
pub fn helper_args(pid: i32, r: &[Range]) -> Vec<String> {
    let mut a = vec![pid.to_string()];
    for r in r {
        a.extend([r.inside, r.outside, r.count].map(|x| x.to_string()));
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_match_by_name_or_id() {
        let c = "alice:100000:65536\n1001:200000:1000\n";
        assert_eq!(sub_range(c, Some("alice"), 1000), Some((100000, 65536)));
        assert_eq!(sub_range(c, Some("bob"), 1001), Some((200000, 1000)));
        assert_eq!(sub_range(c, Some("carol"), 7), None);
    }

    #[test]
    fn free_slots_skip_used_ranges_and_stay_aligned() {
        let pool = (1 << 31, 1 << 20);
        let b: u32 = 1 << 31;
        assert_eq!(pick_free(pool, 65536, &[]), Some(b));
        assert_eq!(pick_free(pool, 65536, &[(b + 10, 1)]), Some(b + 65536));
        assert_eq!(
            pick_free(pool, 65536, &[(b, 65536), (b + 65536, 70000)]),
            Some(b + 3 * 65536)
        );
        assert_eq!(pick_free((b, 65536), 65536, &[(b, 1)]), None);
        // The end of the id space is never reached (4294967295 is no id).
        assert_eq!(pick_free((u32::MAX - 10, 10), 10, &[]), None);
    }

    #[test]
    fn maps_parse_with_the_missing_side_copied() {
        let m = parse_maps(&["0:100000:65536".into()], &[]).expect("uidmap");
        assert_eq!(m.uid_map_text(), "0 100000 65536\n");
        assert_eq!(m.gid_map_text(), m.uid_map_text());
        let m = parse_maps(
            &["0:5000:1".into(), "1:6000:10".into()],
            &["0:7000:1".into()],
        )
        .expect("both");
        assert_eq!(m.uid_map_text(), "0 5000 1\n1 6000 10\n");
        assert_eq!(m.gid_map_text(), "0 7000 1\n");
        let e = parse_maps(&["1:100000:10".into()], &[]).expect_err("no root");
        assert!(e.contains("container id 0 must be mapped"), "{e}");
        let e = parse_maps(&["0:100000".into()], &[]).expect_err("two fields");
        assert!(
            e.starts_with("--uidmap 0:100000: expected CONTAINER:HOST:SIZE"),
            "{e}"
        );
        let e = parse_maps(&["0:100:10".into(), "5:200:10".into()], &[]).expect_err("overlap");
        assert!(e.contains("overlap"), "{e}");
        assert_eq!(parse_userns("auto"), Ok(Some(AUTO_SIZE)));
        assert_eq!(parse_userns("auto:size=1024"), Ok(Some(1024)));
        assert_eq!(parse_userns("host"), Ok(None));
        assert!(parse_userns("keep-id").is_err());
        assert!(parse_userns("auto:size=0").is_err());
    }

    #[test]
    fn the_mount_shows_layer_ids_as_their_host_ids() {
        let r = [Range {
            inside: 0,
            outside: 1 << 31,
            count: 65536,
        }];
        let m = mount_ranges(&r);
        assert_eq!(crate::idmap::map_to_container(&m, 0), Some(1 << 31));
        assert_eq!(crate::idmap::map_to_host(&m, (1 << 31) + 1000), Some(1000));
    }

    #[test]
    fn helper_arguments_are_triples_after_the_pid() {
        let r = [
            Range {
                inside: 0,
                outside: 1000,
                count: 1,
            },
            Range {
                inside: 1,
                outside: 100000,
                count: 65536,
            },
        ];
        assert_eq!(
            helper_args(42, &r),
            ["42", "0", "1000", "1", "1", "100000", "65536"]
        );
    }
}
