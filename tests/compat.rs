//! fuse-overlayfs's command line: the `-o` option parser (every option, escapes, bad values),
//! argv dispatch and the conversion to a `MountConfig`; then mounted runs of the binary in that
//! form: through a link named `fuse-overlayfs`, id mappings and squash (owners and ACLs),
//! override_stat as root and as a rootless user in a user namespace (compared with
//! fuse-overlayfs). The mounted tests need FUSE; the rootless one also uid 4242's subuid range.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use unionfuse::compat::{self, CompatAction};
use unionfuse::config::{MountOpts, parse_id_map, split_lowerdir, split_options};
use unionfuse::idmap::{IdRange, map_to_container, map_to_host};

fn opts(list: &str) -> MountOpts {
    let mut o = MountOpts::default();
    o.parse_into(list)
        .unwrap_or_else(|e| panic!("-o {list}: {e}"));
    o
}

#[track_caller]
fn opt_err(list: &str) -> String {
    let mut o = MountOpts::default();
    match o.parse_into(list) {
        Ok(()) => panic!("-o {list} was accepted: {o:?}"),
        Err(e) => e.to_string(),
    }
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

/// A range in `uidmapping=`'s order: the id in the layers, the id the mount shows, the count.
fn r(layer: u32, shown: u32, count: u32) -> IdRange {
    IdRange {
        host: layer,
        container: shown,
        count,
    }
}

// ---- option splitting and escapes -------------------------------------------------------

#[test]
fn empty_options_are_skipped() {
    assert_eq!(split_options(",,ro,,,rw,").unwrap(), vec!["ro", "rw"]);
    assert!(split_options("").unwrap().is_empty());
    let o = opts(",,ro,,");
    assert!(o.read_only);
}

#[test]
fn escaped_and_quoted_commas_do_not_split() {
    assert_eq!(
        split_options(r"lowerdir=/a\,b,ro").unwrap(),
        vec![r"lowerdir=/a\,b", "ro"]
    );
    // An SELinux MCS label has commas; containers-storage quotes the whole value.
    assert_eq!(
        split_options(r#"context="system_u:object_r:container_file_t:s0:c1,c2",ro"#).unwrap(),
        vec![
            r#"context="system_u:object_r:container_file_t:s0:c1,c2""#,
            "ro"
        ]
    );
    let err = split_options(r#"context="a,b"#).unwrap_err().to_string();
    assert!(err.contains("quote"), "{err}");
}

#[test]
fn lowerdir_is_top_first_with_colon_escapes() {
    let o = opts("lowerdir=/l1:/l2:/l3");
    assert_eq!(
        o.lowerdir.unwrap(),
        vec![
            PathBuf::from("/l1"),
            PathBuf::from("/l2"),
            PathBuf::from("/l3")
        ]
    );
    let o = opts(r"lowerdir=/a\:b:/c\,d:/e\\f");
    assert_eq!(
        o.lowerdir.unwrap(),
        vec![
            PathBuf::from("/a:b"),
            PathBuf::from("/c,d"),
            PathBuf::from(r"/e\f")
        ]
    );
    // Relative paths are kept relative: containers-storage runs the mount program in its
    // storage root and may pass `l/ABC` links.
    assert_eq!(
        split_lowerdir("l/AAA:l/BBB").unwrap(),
        vec![PathBuf::from("l/AAA"), PathBuf::from("l/BBB")]
    );
}

#[test]
fn bad_lowerdir_values_are_refused() {
    for bad in [
        "lowerdir=",
        "lowerdir",
        "lowerdir=/a::/b",
        "lowerdir=/a:",
        "lowerdir=:/a",
    ] {
        opt_err(bad);
    }
    assert!(opt_err("lowerdir=/a::/data").contains("data-only"));
    assert!(opt_err("lowerdir=//plugin/data/path").contains("plugin"));
}

#[test]
fn upper_and_work_paths_unescape() {
    let o = opts(r"upperdir=/u\:x,workdir=/w\,y");
    assert_eq!(o.upperdir.unwrap(), PathBuf::from("/u:x"));
    assert_eq!(o.workdir.unwrap(), PathBuf::from("/w,y"));
    for bad in ["upperdir=", "workdir=", "upperdir", "workdir"] {
        let e = opt_err(bad);
        assert!(e.contains("upperdir") || e.contains("workdir"), "{e}");
    }
}

#[test]
fn later_options_override_earlier_ones() {
    let mut o = MountOpts::default();
    o.parse_into("lowerdir=/a,ro").unwrap();
    o.parse_into("lowerdir=/b,rw").unwrap();
    assert_eq!(o.lowerdir.unwrap(), vec![PathBuf::from("/b")]);
    assert!(!o.read_only);
}

// ---- each option ----------------------------------------------------------------------------

#[test]
fn flags_and_values_set_their_options() {
    let o = opts(
        "ro,allow_other,default_permissions,noacl,static_nlink,squash_to_root,\
         timeout=0,threaded=0,userxattr,nosuid,nodev,noexec,fsname=myfs",
    );
    assert!(o.read_only && o.allow_other == Some(true) && !o.no_default_permissions);
    assert!(o.noacl && o.static_nlink && o.squash_to_root && o.userxattr == Some(true));
    assert_eq!(o.ttl, Some(Duration::ZERO));
    assert_eq!(o.threads, Some(1));
    assert_eq!(
        (o.suid, o.dev, o.exec),
        (Some(false), Some(false), Some(false))
    );
    assert_eq!(o.fsname.as_deref(), Some("myfs"));
    let o = opts("suid,dev,exec,rw,threaded=1,timeout=2.5");
    assert_eq!(
        (o.suid, o.dev, o.exec),
        (Some(true), Some(true), Some(true))
    );
    assert!(!o.read_only);
    assert_eq!(o.threads, None);
    assert_eq!(o.ttl, Some(Duration::from_millis(2500)));
    assert!(opts("debug").debug);
}

#[test]
fn volatile_or_fsync_0_turn_fsync_off_and_bad_fsync_is_refused() {
    assert!(opts("volatile").volatile);
    assert!(opts("fsync=0").volatile);
    assert!(!opts("volatile,fsync=1").volatile);
    opt_err("fsync=2");
    opt_err("fsync");
}

#[test]
fn bad_timeout_threaded_xino_are_refused_and_valid_xino_is_ignored() {
    for bad in [
        "timeout=x",
        "timeout=-1",
        "timeout=nan",
        "timeout=1e10",
        "timeout",
        "threaded=2",
        "threaded",
        "xino=maybe",
        "xino",
    ] {
        opt_err(bad);
    }
    for ok in ["xino=on", "xino=off", "xino=auto"] {
        assert_eq!(opts(ok).ignored, vec![ok.to_string()]);
    }
}

#[test]
fn accepted_without_effect_are_recorded() {
    let list = r#"context="system_u:object_r:container_file_t:s0:c1,c2",index=off,metacopy=off,noatime,xattr_permissions=0"#;
    let o = opts(list);
    assert_eq!(o.ignored.len(), 4, "{:?}", o.ignored);
    assert_eq!(o.override_stat, None);
    assert!(o.ignored[0].starts_with("context="));
}

#[test]
fn overlay_features_we_lack_are_refused_by_name() {
    for (opt, word) in [
        ("index=on", "index"),
        ("metacopy=on", "metacopy"),
        ("nfs_export=on", "nfs_export"),
    ] {
        let e = opt_err(opt);
        assert!(e.contains(word) && e.contains("unsupported"), "{opt}: {e}");
    }
}

#[test]
fn redirect_dir_takes_kernel_overlays_values() {
    use unionfuse::union::RedirectDir;
    assert_eq!(
        MountOpts::default().redirect_dir,
        None,
        "unset: the default (on)"
    );
    for (v, want) in [
        ("on", RedirectDir::On),
        ("follow", RedirectDir::Follow),
        ("off", RedirectDir::Follow),
        ("nofollow", RedirectDir::NoFollow),
    ] {
        assert_eq!(
            opts(&format!("redirect_dir={v}")).redirect_dir,
            Some(want),
            "{v}"
        );
    }
    let e = opt_err("redirect_dir=yes");
    assert!(e.contains("redirect_dir") && e.contains("nofollow"), "{e}");
}

#[test]
fn xattr_permissions_selects_the_override_stat_xattr() {
    assert_eq!(
        opts("xattr_permissions=2").override_stat.as_deref(),
        Some("user.containers.override_stat")
    );
    assert_eq!(
        opts("xattr_permissions=1").override_stat.as_deref(),
        Some("security.fuseoverlayfs.override_stat")
    );
    assert!(opt_err("xattr_permissions=3").contains("xattr_permissions"));
}

#[test]
fn unknown_options_are_named() {
    for bad in [
        "bogus",
        "writeback=1",
        "ro=1",
        "allow_other=yes",
        "squash_to_root=1",
    ] {
        let e = opt_err(&format!("ro,{bad},rw"));
        assert!(e.contains(bad), "{bad}: {e}");
    }
}

// ---- id mappings and squash -------------------------------------------------------------

#[test]
fn uid_and_gid_mappings_parse_as_triples() {
    let o = opts("uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1");
    assert_eq!(o.uid_map.unwrap(), vec![r(0, 1000, 1), r(1, 100000, 65536)]);
    assert_eq!(o.gid_map.unwrap(), vec![r(0, 1000, 1)]);
    assert_eq!(
        parse_id_map("0:0:4294967295").unwrap(),
        vec![r(0, 0, u32::MAX)]
    );
}

#[test]
fn bad_id_mappings_are_refused_naming_the_problem() {
    for (bad, word) in [
        ("uidmapping=", "uidmapping"),
        ("uidmapping", "uidmapping"),
        ("uidmapping=0:1000", "triples"),
        ("uidmapping=0:1000:1:1", "triples"),
        ("uidmapping=0:x:1", "not a number"),
        ("uidmapping=0:-1:1", "not a number"),
        ("uidmapping=0: 1:1", "not a number"),
        ("uidmapping=0:1:0", "at least 1"),
        ("uidmapping=0:4294967296:1", "out of range"),
        ("uidmapping=0:4294967295:1", "past"),
        ("uidmapping=1:0:4294967295", "past"),
        ("gidmapping=0:1000:10:5:2000:1", "ids in the layers overlap"),
        (
            "gidmapping=0:1000:10:10:1005:1",
            "ids seen through the mount overlap",
        ),
        (
            "gidmapping=10:1000:10:0:2000:11",
            "ids in the layers overlap",
        ),
    ] {
        let e = opt_err(bad);
        assert!(e.contains(word), "{bad}: {e}");
    }
    // Adjacent ranges touch but do not overlap.
    opts("uidmapping=0:1000:10:10:1010:10");
}

#[test]
fn id_mappings_translate_both_ways_and_unmapped_ids_give_none() {
    let map = parse_id_map("0:1000:1:1:100000:65536").unwrap();
    // fuse-overlayfs's order: layer id 0 shows as 1000, layer ids 1.. as 100000..
    assert_eq!(map_to_container(&map, 0), Some(1000));
    assert_eq!(map_to_container(&map, 1), Some(100000));
    assert_eq!(map_to_container(&map, 65536), Some(165535));
    assert_eq!(map_to_container(&map, 65537), None);
    assert_eq!(map_to_host(&map, 1000), Some(0));
    assert_eq!(map_to_host(&map, 165535), Some(65536));
    assert_eq!(map_to_host(&map, 0), None);
    assert_eq!(map_to_host(&map, 1001), None);
    let full = parse_id_map("0:0:4294967295").unwrap();
    assert_eq!(map_to_host(&full, 4294967294), Some(4294967294));
    assert_eq!(map_to_host(&full, u32::MAX), None);
}

#[test]
fn squash_ids_parse_and_bad_values_are_refused() {
    let o = opts("squash_to_uid=1000,squash_to_gid=100");
    assert_eq!((o.squash_uid, o.squash_gid), (Some(1000), Some(100)));
    for bad in [
        "squash_to_uid=",
        "squash_to_uid",
        "squash_to_uid=-1",
        "squash_to_uid=4294967295",
        "squash_to_gid=abc",
        "squash_to_gid=+5",
    ] {
        opt_err(bad);
    }
}

// ---- argv and the resulting configuration ------------------------------------------------

struct Dirs {
    t: tempfile::TempDir,
}

impl Dirs {
    fn new() -> Dirs {
        let t = tempfile::tempdir().expect("tempdir");
        for d in ["l1", "l2", "u", "w", "m", "a:b"] {
            std::fs::create_dir(t.path().join(d)).expect("mkdir");
        }
        Dirs { t }
    }
    fn p(&self, name: &str) -> String {
        self.t.path().join(name).display().to_string()
    }
    fn canon(&self, name: &str) -> PathBuf {
        self.t
            .path()
            .join(name)
            .canonicalize()
            .expect("canonicalize")
    }
}

fn mount_cmd(args: &[String]) -> unionfuse::cli::MountCommand {
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    match compat::parse(&args) {
        Ok(CompatAction::Mount(m)) => *m,
        other => panic!("{args:?}: {other:?}"),
    }
}

#[track_caller]
fn parse_err(args: &[String]) -> String {
    let a: Vec<OsString> = args.iter().map(OsString::from).collect();
    compat::parse(&a)
        .expect_err("should be refused")
        .to_string()
}

#[test]
fn fuse_overlayfs_argv_builds_the_config() {
    let d = Dirs::new();
    let o = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        d.p("l1"),
        d.p("l2"),
        d.p("u"),
        d.p("w")
    );
    let m = mount_cmd(&[
        "-o".into(),
        o.clone(),
        "-o".into(),
        "uidmapping=0:1000:1:1:100000:65536,gidmapping=0:1000:1,static_nlink,noacl,timeout=0"
            .into(),
        "-f".into(),
        d.p("m"),
    ]);
    let c = &m.config;
    assert!(m.foreground);
    assert_eq!(c.lowers, vec![d.canon("l1"), d.canon("l2")]);
    assert_eq!(c.upper.as_deref(), Some(d.canon("u").as_path()));
    assert_eq!(c.workdir.as_deref(), Some(d.canon("w").as_path()));
    assert_eq!(c.mountpoint, d.canon("m"));
    assert!(!c.read_only && c.static_nlink && !c.acl);
    assert_eq!(c.ttl, Duration::ZERO);
    assert_eq!(c.uid_map, vec![r(0, 1000, 1), r(1, 100000, 65536)]);
    assert_eq!(c.gid_map, vec![r(0, 1000, 1)]);
    assert_eq!((c.squash_uid, c.squash_gid), (None, None));
    assert_eq!(c.fsname, "unionfuse");
    // fuse-overlayfs as root: allow_other by default, so container users other than the
    // caller can use the mount.
    assert_eq!(c.allow_other, common::sys::is_root());

    // Joined `-oOPTS`, options after the mountpoint, no -f: background.
    let m = mount_cmd(&[d.p("m"), format!("-o{o}"), "-osquash_to_root".into()]);
    assert!(!m.foreground);
    assert_eq!(
        (m.config.squash_uid, m.config.squash_gid),
        (Some(0), Some(0))
    );
    // squash_to_uid/gid win over squash_to_root.
    let m = mount_cmd(&[format!("-o{o},squash_to_root,squash_to_uid=7"), d.p("m")]);
    assert_eq!(
        (m.config.squash_uid, m.config.squash_gid),
        (Some(7), Some(0))
    );
    // mount.fuse3 style: SOURCE MNT; the source names the mount.
    let m = mount_cmd(&["overlay".into(), d.p("m"), "-o".into(), o.clone()]);
    assert_eq!(m.config.fsname, "overlay");
    // -d is foreground + debug logging.
    let m = mount_cmd(&["-d".into(), "-o".into(), o.clone(), d.p("m")]);
    assert!(m.foreground && m.verbose >= 2);
    let m = mount_cmd(&["-o".into(), format!("{o},debug"), d.p("m")]);
    assert!(m.foreground && m.verbose >= 2);
}

#[test]
fn escaped_colon_reaches_the_filesystem() {
    let d = Dirs::new();
    let l = d.p("a:b").replace(':', r"\:");
    let m = mount_cmd(&[format!("-olowerdir={l}:{}", d.p("l2")), d.p("m")]);
    assert_eq!(m.config.lowers, vec![d.canon("a:b"), d.canon("l2")]);
}

#[test]
fn without_upper_the_mount_is_read_only() {
    let d = Dirs::new();
    let m = mount_cmd(&[format!("-olowerdir={}:{}", d.p("l1"), d.p("l2")), d.p("m")]);
    assert!(m.config.read_only && m.config.upper.is_none() && m.config.workdir.is_none());
    let m = mount_cmd(&[
        format!(
            "-olowerdir={},upperdir={},workdir={},ro",
            d.p("l1"),
            d.p("u"),
            d.p("w")
        ),
        d.p("m"),
    ]);
    assert!(m.config.read_only);
}

#[test]
fn bad_argv_is_refused_naming_what_is_wrong() {
    let d = Dirs::new();
    let lo = format!("lowerdir={}", d.p("l1"));
    let e = parse_err(&[format!("-o{lo},upperdir={}", d.p("u")), d.p("m")]);
    assert!(e.contains("workdir"), "{e}");
    let e = parse_err(&["-o".into(), format!("upperdir={}", d.p("u")), d.p("m")]);
    assert!(e.contains("lowerdir"), "{e}");
    let e = parse_err(&["-o".into(), lo.clone()]);
    assert!(e.contains("mountpoint"), "{e}");
    let e = parse_err(&["-o".into()]);
    assert!(e.contains("-o"), "{e}");
    let e = parse_err(&["-o".into(), lo.clone(), "a".into(), "b".into(), d.p("m")]);
    assert!(e.contains("extra"), "{e}");
    let e = parse_err(&["-o".into(), lo.clone(), "--frobnicate".into(), d.p("m")]);
    assert!(e.contains("--frobnicate"), "{e}");
    let e = parse_err(&[d.p("m")]);
    assert!(e.contains("subcommand"), "{e}");
    let e = parse_err(&["-o".into(), format!("{}/missing", d.p("l1")), d.p("m")]);
    assert!(e.contains("unknown mount option"), "{e}");
    let e = parse_err(&[
        "-o".into(),
        format!("lowerdir={}/missing", d.p("l1")),
        d.p("m"),
    ]);
    assert!(e.contains("does not exist"), "{e}");
    // The checks of `unionfuse mount` still apply: here the upper is inside a lower.
    let e = parse_err(&[
        "-o".into(),
        format!(
            "lowerdir={},upperdir={}/l1,workdir={}",
            d.t.path().display(),
            d.t.path().display(),
            d.p("w")
        ),
        d.p("m"),
    ]);
    assert!(e.contains("overlaps"), "{e}");
    assert!(matches!(
        compat::parse(&os(&["--help"])),
        Ok(CompatAction::Help)
    ));
    assert!(matches!(
        compat::parse(&os(&["-V"])),
        Ok(CompatAction::Version)
    ));
}

#[test]
fn layer_options_are_refused_by_unionfuse_mount() {
    let d = Dirs::new();
    let e = unionfuse::cli::mount_command(
        &d.p("l1"),
        &[PathBuf::from(d.p("m"))],
        None,
        &[format!("lowerdir={}", d.p("l2"))],
        false,
        0,
    )
    .err()
    .expect("lowerdir= with `unionfuse mount`")
    .to_string();
    assert!(e.contains("fuse-overlayfs form"), "{e}");
}

#[test]
fn only_fuse_overlayfs_style_argv_takes_the_compat_path() {
    let subs = ["mount", "help"];
    let yes = |a: &[&str]| compat::is_compat_invocation(&os(a), &subs);
    assert!(yes(&["/usr/bin/fuse-overlayfs", "mount"]));
    assert!(yes(&["fuse-overlayfs"]));
    assert!(yes(&["unionfuse", "-o", "lowerdir=/a", "/m"]));
    assert!(yes(&["unionfuse", "-olowerdir=/a", "/m"]));
    assert!(yes(&["unionfuse", "-f", "-o", "lowerdir=/a", "/m"]));
    assert!(yes(&["unionfuse", "/m", "-o", "lowerdir=/a"]));
    assert!(!yes(&["unionfuse"]));
    assert!(!yes(&["unionfuse", "mount", "/a", "/m"]));
    assert!(!yes(&["unionfuse", "help"]));
    assert!(!yes(&["unionfuse", "--help"]));
    assert!(!yes(&["unionfuse", "-V"]));
    assert!(!yes(&["/bin/fuse-overlayfs-not", "mount"]));
}

// ---- the binary, through a link named fuse-overlayfs --------------------------------------

/// A mount made by the binary in the background, as containers-storage runs it
/// (`fuse-overlayfs -o ... MNT` returns once the mount is live; the daemon is not our child).
/// On drop: unmount, then wait for every process whose command line names the mountpoint to
/// exit, killing any that outlive the wait, so no mount and no daemon survive a failed test.
struct BackgroundMount {
    mnt: PathBuf,
}

impl Drop for BackgroundMount {
    fn drop(&mut self) {
        if !common::mount::force_unmount(&self.mnt) {
            eprintln!("warning: could not unmount {}", self.mnt.display());
        }
        let start = std::time::Instant::now();
        loop {
            let pids = daemons_of(&self.mnt);
            if pids.is_empty() {
                return;
            }
            if start.elapsed() > Duration::from_secs(10) {
                eprintln!("daemons {pids:?} did not exit after umount; killing them");
                for pid in pids {
                    // SAFETY: kill has no memory preconditions; the pid was just read from /proc.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Pids of live processes with `mnt` as an argument.
fn daemons_of(mnt: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    let want = mnt.as_os_str().as_bytes();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true);
        if !zombie && cmdline.split(|&b| b == 0).any(|a| a == want) {
            out.push(pid);
        }
    }
    out
}

fn run(cmd: &mut Command) -> std::process::Output {
    cmd.stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

#[test]
fn mount_through_a_fuse_overlayfs_link_shows_the_merged_view() {
    if !common::require_fuse() {
        return;
    }
    let stack = common::Stack::new(2);
    std::fs::write(stack.lower(0).join("top"), "top").unwrap();
    std::fs::write(stack.lower(1).join("top"), "hidden").unwrap();
    std::fs::write(stack.lower(1).join("gone"), "gone").unwrap();
    std::fs::create_dir(stack.lower(1).join("d")).unwrap();
    std::fs::write(stack.lower(1).join("d/f"), "f").unwrap();
    let before = stack.lower_digests();
    let link = stack.base.path().join("fuse-overlayfs");
    std::os::unix::fs::symlink(common::mount::binary(), &link).expect("symlink");
    let work = stack.new_workdir();
    let opts = format!(
        "lowerdir={}:{},upperdir={},workdir={}",
        stack.lower(0).display(),
        stack.lower(1).display(),
        stack.upper().display(),
        work.display()
    );
    {
        // Background mode, as podman uses it: the command returns once the mount is live.
        let out = run(Command::new(&link)
            .args([
                "-o",
                &opts,
                "-o",
                ",,volatile,noacl,nodev,fsname=compat-test",
            ])
            .arg(&stack.mnt));
        let guard = BackgroundMount {
            mnt: stack.mnt.clone(),
        };
        assert!(
            out.status.success(),
            "fuse-overlayfs link failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            common::mount::is_mounted(&stack.mnt),
            "not mounted after return"
        );
        let mounts = std::fs::read_to_string("/proc/mounts").expect("read /proc/mounts");
        let line = mounts
            .lines()
            .find(|l| l.split(' ').nth(1) == Some(&*stack.mnt.to_string_lossy()))
            .expect("mount in /proc/mounts");
        assert!(
            line.starts_with("compat-test "),
            "fsname= not applied: {line}"
        );
        let flags = line.split(' ').nth(3).unwrap_or("");
        assert!(
            flags.split(',').any(|f| f == "nodev"),
            "nodev not applied: {line}"
        );
        let m = &stack.mnt;
        assert_eq!(std::fs::read_to_string(m.join("top")).unwrap(), "top");
        assert_eq!(std::fs::read_to_string(m.join("d/f")).unwrap(), "f");
        std::fs::write(m.join("new"), "new").unwrap();
        std::fs::remove_file(m.join("gone")).unwrap();
        assert!(!m.join("gone").exists());
        drop(guard);
    }
    // What landed in the upper is kernel overlay's format: the new file and a whiteout.
    assert_eq!(
        std::fs::read_to_string(stack.upper().join("new")).unwrap(),
        "new"
    );
    let wh = common::sys::lstat(&stack.upper().join("gone")).expect("whiteout in upper");
    assert_eq!(wh.st_mode & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(wh.st_rdev, 0);
    assert!(
        daemons_of(&stack.mnt).is_empty(),
        "daemon outlived its mount"
    );
    stack.assert_lowers_unchanged(&before);
}

/// Mount `stack` through the fuse-overlayfs form with `extra` options, run `f` on the mount.
fn with_compat_mount(stack: &common::Stack, extra: &str, f: impl FnOnce(&Path)) {
    let work = stack.new_workdir();
    let lowers: Vec<String> = (0..stack.lowers.len())
        .map(|i| stack.lower(i).display().to_string())
        .collect();
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}{extra}",
        lowers.join(":"),
        stack.upper().display(),
        work.display()
    );
    let out = run(Command::new(common::mount::binary())
        .args(["-o", &opts])
        .arg(&stack.mnt));
    let guard = BackgroundMount {
        mnt: stack.mnt.clone(),
    };
    assert!(
        out.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    f(&stack.mnt);
    drop(guard);
}

#[test]
fn uidmapping_shows_container_ids_and_stores_host_ids() {
    if !common::require_fuse() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let stack = common::Stack::new(1);
    let f = stack.lower(0).join("owned");
    std::fs::write(&f, "x").unwrap();
    std::os::unix::fs::lchown(&f, Some(1234), Some(1234)).unwrap();
    std::fs::write(stack.lower(0).join("unmapped"), "y").unwrap();
    std::os::unix::fs::lchown(stack.lower(0).join("unmapped"), Some(7), Some(7)).unwrap();
    with_compat_mount(
        &stack,
        ",uidmapping=1234:0:1:100000:1:1000,gidmapping=1234:0:1:100000:1:1000",
        |m| {
            let md = std::fs::symlink_metadata(m.join("owned")).unwrap();
            assert_eq!(
                (md.uid(), md.gid()),
                (0, 0),
                "host 1234 shows as container 0"
            );
            let md = std::fs::symlink_metadata(m.join("unmapped")).unwrap();
            assert_eq!(
                (md.uid(), md.gid()),
                (65534, 65534),
                "unmapped ids overflow"
            );
            // chown to container id 5 stores host id 100004.
            std::os::unix::fs::lchown(m.join("owned"), Some(5), Some(5)).unwrap();
            let md = std::fs::symlink_metadata(m.join("owned")).unwrap();
            assert_eq!((md.uid(), md.gid()), (5, 5));
        },
    );
    let md = std::fs::symlink_metadata(stack.upper().join("owned")).unwrap();
    assert_eq!(
        (md.uid(), md.gid()),
        (100004, 100004),
        "upper holds host ids"
    );
}

#[test]
fn squash_and_static_nlink_change_what_stat_shows() {
    if !common::require_fuse() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let stack = common::Stack::new(1);
    std::fs::create_dir_all(stack.lower(0).join("d/a/b")).unwrap();
    std::os::unix::fs::lchown(stack.lower(0).join("d"), Some(42), Some(43)).unwrap();
    with_compat_mount(
        &stack,
        ",squash_to_uid=9,squash_to_gid=8,static_nlink",
        |m| {
            let md = std::fs::symlink_metadata(m.join("d")).unwrap();
            assert_eq!((md.uid(), md.gid(), md.nlink()), (9, 8, 1));
        },
    );
}

/// containers-storage prepares layers for mount programs with AUFS-style whiteouts; podman
/// commit showed deleted files again before unionfuse read them.
#[test]
fn regression_aufs_whiteout_files_hide_lower_names_in_compat_mode() {
    if !common::require_fuse() {
        return;
    }
    let stack = common::Stack::new(2);
    std::fs::create_dir_all(stack.lower(0).join("etc")).unwrap();
    std::fs::create_dir_all(stack.lower(0).join("d")).unwrap();
    std::fs::create_dir_all(stack.lower(1).join("etc")).unwrap();
    std::fs::create_dir_all(stack.lower(1).join("d")).unwrap();
    std::fs::write(stack.lower(1).join("etc/gone"), "x").unwrap();
    std::fs::write(stack.lower(1).join("etc/kept"), "k").unwrap();
    std::fs::write(stack.lower(1).join("d/old"), "o").unwrap();
    std::fs::write(stack.lower(0).join("etc/.wh.gone"), "").unwrap();
    std::fs::write(stack.lower(0).join("d/.wh..wh..opq"), "").unwrap();
    std::fs::write(stack.lower(0).join("d/new"), "n").unwrap();
    with_compat_mount(&stack, "", |m| {
        let names = |p: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&m.join("etc")), ["kept"]);
        assert_eq!(names(&m.join("d")), ["new"]);
        assert!(!m.join("etc/gone").exists());
        assert!(!m.join("etc/.wh.gone").exists());
        std::fs::write(m.join("etc/gone"), "again").unwrap();
        assert_eq!(
            std::fs::read_to_string(m.join("etc/gone")).unwrap(),
            "again"
        );
    });
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: buf is writable for its length; path and name are NUL-terminated.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| buf[..n as usize].to_vec())
}

fn setxattr(p: &Path, name: &str, value: &[u8]) {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = std::ffi::CString::new(name).unwrap();
    // SAFETY: value is readable for its length; path and name are NUL-terminated.
    let r = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "setxattr {name:?} on {}", p.display());
}

/// containers-storage's force_mask keeps real owners and modes in user.containers.override_stat;
/// a mount program must show those, and keep chown/chmod there instead of on the file.
#[test]
fn override_stat_is_shown_and_chown_chmod_are_kept_in_it() {
    if !common::require_fuse() {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    const X: &str = "user.containers.override_stat";
    let stack = common::Stack::new(1);
    let lower = stack.lower(0);
    setxattr(lower, X, b"0:0:0755");
    std::fs::write(lower.join("f"), "x").unwrap();
    std::fs::set_permissions(lower.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
    setxattr(&lower.join("f"), X, b"1234:1235:0644");
    with_compat_mount(&stack, ",xattr_permissions=2", |m| {
        let md = std::fs::symlink_metadata(m.join("f")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (1234, 1235, 0o644)
        );
        assert_eq!(
            getxattr(&m.join("f"), X),
            None,
            "override_stat is not shown"
        );
        std::os::unix::fs::lchown(m.join("f"), Some(4321), None).unwrap();
        std::fs::set_permissions(m.join("f"), std::fs::Permissions::from_mode(0o640)).unwrap();
        let md = std::fs::symlink_metadata(m.join("f")).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (4321, 1235, 0o640)
        );
    });
    let up = stack.upper().join("f");
    assert_eq!(getxattr(&up, X).as_deref(), Some(&b"4321:1235:0640"[..]));
    let md = std::fs::symlink_metadata(&up).unwrap();
    assert_eq!(
        (md.uid(), md.mode() & 0o7777),
        (0, 0o600),
        "the file itself is unchanged"
    );
}

/// The override_stat xattr is the mount's own bookkeeping: getxattr hides it, setxattr refuses
/// it, and removexattr answers ENODATA as for a name the file lacks, before and after a
/// copy-up, so the stored owner, mode and type stay.
#[test]
fn override_stat_xattr_cannot_be_removed_through_the_mount() {
    if !common::require_fuse() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    const X: &str = "user.containers.override_stat";
    let stack = common::Stack::new(1);
    let lower = stack.lower(0);
    setxattr(lower, X, b"0:0:0755");
    std::fs::write(lower.join("f"), "x").unwrap();
    setxattr(&lower.join("f"), X, b"1234:1235:0644");
    let owner = |p: &Path| {
        let md = std::fs::symlink_metadata(p).unwrap();
        (md.uid(), md.gid(), md.mode() & 0o7777)
    };
    with_compat_mount(&stack, ",xattr_permissions=2", |m| {
        let f = m.join("f");
        assert_eq!(
            common::sys::lremovexattr(&f, X),
            Err(libc::ENODATA),
            "lower file"
        );
        assert_eq!(owner(&f), (1234, 1235, 0o644));
        common::sys::lsetxattr(&f, "user.other", b"1").expect("setxattr copies up");
        assert_eq!(
            common::sys::lremovexattr(&f, X),
            Err(libc::ENODATA),
            "upper file"
        );
        assert_eq!(
            common::sys::lsetxattr(&f, X, b"0:0:0777"),
            Err(libc::EPERM),
            "setxattr refuses it"
        );
        assert_eq!(owner(&f), (1234, 1235, 0o644));
    });
    let up = stack.upper().join("f");
    assert_eq!(getxattr(&up, X).as_deref(), Some(&b"1234:1235:0644"[..]));
}

/// `getfacl -n` of `p`, the entry lines only (no comments), or the error text.
fn getfacl(p: &Path) -> Result<Vec<String>, String> {
    let out = run(Command::new("getfacl").args(["-n", "-p"]).arg(p));
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// `setfacl ARGS`; Err with setfacl's message when it fails.
fn setfacl(args: &[&str], p: &Path) -> Result<(), String> {
    let out = run(Command::new("setfacl").args(args).arg(p));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// True when setfacl/getfacl are installed; under CI=true their absence fails the test.
fn require_acl_tools() -> bool {
    if Command::new("setfacl").arg("--version").output().is_ok() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("setfacl is not installed (package acl; scripts/test.sh installs it)");
    }
    eprintln!("skipping: setfacl (package acl) is not installed");
    false
}

#[track_caller]
fn assert_acl_has(acl: &[String], want: &[&str]) {
    for w in want {
        assert!(acl.iter().any(|l| l == w), "missing {w:?} in {acl:?}");
    }
}

/// ACL entries name users and groups, so under uidmapping/gidmapping they translate as owners
/// do: an ACL set through the mount holds host ids in the upper, one in a lower shows
/// container ids, and an id outside the mapping can't be set (EINVAL, as chown).
#[test]
fn acl_ids_follow_the_uid_and_gid_mapping() {
    if !common::require_fuse() || !require_acl_tools() {
        return;
    }
    let stack = common::Stack::new(1);
    let lower = stack.lower(0);
    std::fs::write(lower.join("f"), "f").unwrap();
    std::fs::create_dir(lower.join("d")).unwrap();
    std::fs::write(lower.join("lowacl"), "l").unwrap();
    setfacl(&["-m", "u:101000:r,g:101001:rx"], &lower.join("lowacl")).unwrap();
    let before = stack.lower_digests();
    with_compat_mount(
        &stack,
        ",uidmapping=100000:0:65536,gidmapping=100000:0:65536",
        |m| {
            // A lower file's ACL shows container ids.
            let acl = getfacl(&m.join("lowacl")).unwrap();
            assert_acl_has(&acl, &["user:1000:r--", "group:1001:r-x"]);
            setfacl(&["-m", "u:1000:rw,g:2000:r"], &m.join("f")).unwrap();
            let acl = getfacl(&m.join("f")).unwrap();
            assert_acl_has(&acl, &["user:1000:rw-", "group:2000:r--"]);
            setfacl(&["-d", "-m", "u:1000:rwx"], &m.join("d")).unwrap();
            let acl = getfacl(&m.join("d")).unwrap();
            assert_acl_has(&acl, &["default:user:1000:rwx"]);
            // Container id 70000 has no host id: refused, and nothing changes.
            let e = setfacl(&["-m", "u:70000:r"], &m.join("f")).unwrap_err();
            assert!(e.contains("Invalid argument"), "{e}");
            assert!(
                !getfacl(&m.join("f"))
                    .unwrap()
                    .iter()
                    .any(|l| l.contains("70000"))
            );
            // Changing the lower file's ACL copies it up with host ids kept.
            setfacl(&["-m", "g:1002:w"], &m.join("lowacl")).unwrap();
        },
    );
    let up = stack.upper();
    assert_acl_has(
        &getfacl(&up.join("f")).unwrap(),
        &["user:101000:rw-", "group:102000:r--"],
    );
    assert_acl_has(
        &getfacl(&up.join("d")).unwrap(),
        &["default:user:101000:rwx"],
    );
    assert_acl_has(
        &getfacl(&up.join("lowacl")).unwrap(),
        &["user:101000:r--", "group:101001:r-x", "group:101002:-w-"],
    );
    stack.assert_lowers_unchanged(&before);
}

// ---- rootless: the mount program in a user namespace, as rootless podman runs it ---------

/// Runs `ops` (sh, in the mountpoint) against `prog` mounted in the fuse-overlayfs form on
/// `stack` with `-o extra`, as `common::rootless::ROOTLESS_UID` inside new user and mount
/// namespaces mapped as rootless podman maps them: 0 is the user, 1.. its subordinate ids
/// (`unshare --map-auto --map-root-user`). The daemon believes it is root; on disk it is the
/// user. The script unmounts and waits for the daemon on every exit; the guard kills a daemon
/// that outlives it. Returns stdout; panics with stderr and the daemon's log on failure.
fn rootless_mounted(stack: &common::Stack, prog: &Path, extra: &str, ops: &str) -> String {
    use common::rootless::{ROOTLESS_UID, chown_tree};
    let work = stack.new_workdir();
    let log = stack.base.path().join("daemon.log");
    chown_tree(stack.base.path(), ROOTLESS_UID);
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}{extra}",
        stack.lower(0).display(),
        stack.upper().display(),
        work.display()
    );
    let script = format!(
        r#"set -u
"$PROG" -o "$OPTS" -f "$MNT" 2>>"$LOG" &
daemon=$!
trap 'cd /; umount "$MNT" 2>/dev/null; wait $daemon' EXIT
i=0
until grep -q " $MNT " /proc/self/mounts; do
    i=$((i+1)); [ $i -lt 200 ] || {{ echo "$PROG did not mount" >&2; exit 1; }}; sleep 0.05
done
cd "$MNT"
{ops}
"#
    );
    let guard = BackgroundMount {
        mnt: stack.mnt.clone(),
    };
    let out = run(Command::new("setpriv")
        .arg(format!("--reuid={ROOTLESS_UID}"))
        .arg(format!("--regid={ROOTLESS_UID}"))
        .args(["--clear-groups", "unshare", "--map-auto", "--map-root-user"])
        .args(["--mount", "sh", "-c", &script])
        .env("PROG", prog)
        .env("OPTS", &opts)
        .env("MNT", &stack.mnt)
        .env("LOG", &log)
        .env("LC_ALL", "C")
        .current_dir("/"));
    drop(guard);
    assert!(
        out.status.success(),
        "{} as uid {ROOTLESS_UID} in a user namespace failed ({}): {}\n--- log ---\n{}",
        prog.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `uid:gid:mode` of an override_stat value, mode without the file type: fuse-overlayfs 1.10
/// writes `1234:1234:100644` (st_mode in octal), containers-storage and unionfuse
/// `1234:1234:0644` (permission bits); both read either.
fn parse_override(v: &[u8]) -> (u32, u32, u32) {
    let s = std::str::from_utf8(v).expect("utf-8 override_stat");
    let f: Vec<&str> = s.split(':').collect();
    assert!(f.len() >= 3, "override_stat {s:?}");
    let n = |x: &str| x.parse::<u32>().unwrap_or_else(|_| panic!("{s:?}"));
    let mode = u32::from_str_radix(f[2], 8).unwrap_or_else(|_| panic!("{s:?}"));
    (n(f[0]), n(f[1]), mode & 0o7777)
}

/// The lower of the rootless tests: files and directories owned by the user (root in its
/// namespace), one of each to be chowned, chmodded, chowned and chmodded.
fn rootless_stack() -> common::Stack {
    let stack = common::Stack::new(1);
    let l = stack.lower(0);
    for f in ["f", "g", "h"] {
        std::fs::write(l.join(f), f).unwrap();
    }
    for d in ["d", "e"] {
        std::fs::create_dir(l.join(d)).unwrap();
    }
    stack
}

/// What the rootless tests do through the mount: chown (to ids the user can't own on disk),
/// chmod, a device node (refused: mknod of a device needs CAP_MKNOD in the initial namespace,
/// which the kernel checks before FUSE sees the request), then `stat` of each.
const ROOTLESS_OPS: &str = "chown 1234:1234 f; chmod 640 g; chown 1234:2345 d; chmod 711 e; \
                            mknod dev c 1 3 2>&1 | sed 's/.*: //'; \
                            stat -c '%u:%g %a %n' f g d e";
const ROOTLESS_STAT: &str = "stat -c '%u:%g %a %n' f g d e";

/// A rootless user's chown and chmod (daemon in a user namespace, as rootless podman runs its
/// mount program, with containers-storage's `xattr_permissions=2`) succeed, show in stat,
/// persist across a remount, and live in the upper's `user.containers.override_stat` while
/// the real owner and mode stay the user's. fuse-overlayfs 1.10 run the same way is the
/// reference: same stat results, same values in its override xattr, and unionfuse reads the
/// upper it wrote.
#[test]
fn rootless_chown_chmod_persist_as_override_stat() {
    use std::os::unix::fs::MetadataExt;
    if !common::require_fuse() {
        return;
    }
    let Some(_setup) = common::rootless::require_rootless() else {
        return;
    };
    const X: &str = "user.containers.override_stat";
    let stack = rootless_stack();
    let prog = stack.base.path().join("unionfuse");
    std::fs::copy(common::mount::binary(), &prog).expect("copy unionfuse for the user");
    let ours = rootless_mounted(&stack, &prog, ",xattr_permissions=2", ROOTLESS_OPS);
    let want = "Operation not permitted\n1234:1234 644 f\n0:0 640 g\n1234:2345 755 d\n0:0 711 e\n";
    assert_eq!(ours, want);
    let up = stack.upper();
    for (name, value) in [
        ("f", "1234:1234:0644"),
        ("g", "0:0:0640"),
        ("d", "1234:2345:0755"),
        ("e", "0:0:0711"),
    ] {
        assert_eq!(
            getxattr(&up.join(name), X).as_deref(),
            Some(value.as_bytes()),
            "{X} of {name}"
        );
        let md = std::fs::symlink_metadata(up.join(name)).unwrap();
        let mode = if md.is_dir() { 0o755 } else { 0o644 };
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            (
                common::rootless::ROOTLESS_UID,
                common::rootless::ROOTLESS_UID,
                mode
            ),
            "{name}: the real owner and mode are unchanged"
        );
    }
    assert!(!up.join("dev").exists(), "a refused mknod left {up:?}/dev");
    // Remounted the same way, the owners and modes are still there; so are new changes
    // combining chown and chmod, and a new file's owner.
    let again = rootless_mounted(
        &stack,
        &prog,
        ",xattr_permissions=2",
        &format!(
            "{ROOTLESS_STAT}; chown 1234:1234 h; chmod 600 h; touch new; chown 77:88 new; \
             stat -c '%u:%g %a %n' h new"
        ),
    );
    assert_eq!(
        again,
        format!(
            "{}1234:1234 600 h\n77:88 644 new\n",
            &want[want.find('\n').unwrap() + 1..]
        )
    );
    assert_eq!(
        getxattr(&up.join("h"), X).as_deref(),
        Some(&b"1234:1234:0600"[..])
    );
    assert_eq!(
        getxattr(&up.join("new"), X).as_deref(),
        Some(&b"77:88:0644"[..])
    );

    if !Path::new("/usr/bin/fuse-overlayfs").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("fuse-overlayfs is not installed (scripts/test.sh installs it)");
        }
        eprintln!("skipping the fuse-overlayfs comparison: it is not installed");
        return;
    }
    // fuse-overlayfs 1.10 with the same option: the same results through the mount. It keeps
    // them in user.fuseoverlayfs.override_stat (1.14 moved to user.containers.*), as
    // `uid:gid:st_mode` in octal; the values are the same.
    let fo = rootless_stack();
    let theirs = rootless_mounted(
        &fo,
        Path::new("/usr/bin/fuse-overlayfs"),
        ",xattr_permissions=2",
        ROOTLESS_OPS,
    );
    assert_eq!(theirs, want, "fuse-overlayfs 1.10 shows something else");
    for name in ["f", "g", "d", "e"] {
        let fo_value = getxattr(&fo.upper().join(name), "user.fuseoverlayfs.override_stat")
            .unwrap_or_else(|| panic!("fuse-overlayfs stored no override for {name}"));
        let ours = getxattr(&up.join(name), X).expect("ours");
        assert_eq!(
            parse_override(&ours),
            parse_override(&fo_value),
            "{name}: {:?} vs fuse-overlayfs's {:?}",
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&fo_value)
        );
    }
    // Storage written by fuse-overlayfs reads the same through unionfuse (the upper's root
    // names the xattr, so no option is needed).
    let read_back = rootless_mounted(&fo, &prog, "", ROOTLESS_STAT);
    assert_eq!(read_back, &want[want.find('\n').unwrap() + 1..]);
}

/// `mknod(2)` of `p`.
fn mknod(p: &Path, mode: u32, dev: libc::dev_t) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    // SAFETY: path is NUL-terminated.
    if unsafe { libc::mknod(path.as_ptr(), mode, dev) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// containers-storage with force_mask stores a device, FIFO or socket as a regular file whose
/// `user.containers.override_stat` names the type (`0:0:0666:char-1-3`): through the mount it
/// is that device (stat, `ls -l`, readdir's d_type) and opens as the device; a mknod through
/// an override_stat mount makes such a stand-in, and a remount shows the same.
#[test]
fn override_stat_type_shows_devices_and_mknod_stores_it() {
    if !common::require_fuse() {
        return;
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    const X: &str = "user.containers.override_stat";
    let stack = common::Stack::new(1);
    let lower = stack.lower(0);
    setxattr(lower, X, b"0:0:0755:dir");
    for (name, value) in [
        ("null", "0:0:0666:char-1-3"),
        ("sda1", "0:6:0660:block-8-1"),
        ("fifo", "1234:1234:0640:pipe"),
        ("sock", "0:0:0755:socket"),
        ("plain", "0:0:0644:file"),
        ("odd", "0:0:0644:disk-1-2"),
    ] {
        std::fs::write(lower.join(name), "").unwrap();
        setxattr(&lower.join(name), X, value.as_bytes());
    }
    let check = |m: &Path| {
        let md = |n: &str| std::fs::symlink_metadata(m.join(n)).unwrap();
        let null = md("null");
        assert!(null.file_type().is_char_device(), "null: {null:?}");
        assert_eq!(
            (null.mode() & 0o7777, null.rdev()),
            (0o666, libc::makedev(1, 3))
        );
        let sda1 = md("sda1");
        assert!(sda1.file_type().is_block_device(), "sda1: {sda1:?}");
        assert_eq!((sda1.gid(), sda1.rdev()), (6, libc::makedev(8, 1)));
        assert!(md("fifo").file_type().is_fifo());
        assert_eq!(
            (md("fifo").uid(), md("fifo").mode() & 0o7777),
            (1234, 0o640)
        );
        assert!(md("sock").file_type().is_socket());
        assert!(md("plain").is_file());
        assert!(md("odd").is_file(), "an unknown type leaves a regular file");
        let ls = run(Command::new("ls").arg("-l").arg(m.join("null")));
        assert!(
            String::from_utf8_lossy(&ls.stdout).starts_with("crw-rw-rw-"),
            "ls -l: {}",
            String::from_utf8_lossy(&ls.stdout)
        );
        // readdir's d_type (std's DirEntry::file_type uses it) says what stat says.
        for e in std::fs::read_dir(m).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let ft = e.file_type().unwrap();
            assert_eq!(ft, md(&name).file_type(), "d_type of {name}");
        }
    };
    with_compat_mount(&stack, ",xattr_permissions=2", |m| {
        check(m);
        // The kernel opens a device node itself: this is /dev/null, the stand-in stays empty.
        std::fs::write(m.join("null"), "gone").unwrap();
        assert_eq!(std::fs::read(m.join("null")).unwrap(), b"");
        mknod(&m.join("tty1"), libc::S_IFCHR | 0o600, libc::makedev(4, 1)).unwrap();
        mknod(&m.join("p"), libc::S_IFIFO | 0o600, 0).unwrap();
        let tty = std::fs::symlink_metadata(m.join("tty1")).unwrap();
        assert!(tty.file_type().is_char_device());
        assert_eq!(
            (tty.mode() & 0o7777, tty.rdev()),
            (0o600, libc::makedev(4, 1))
        );
        assert!(
            std::fs::symlink_metadata(m.join("p"))
                .unwrap()
                .file_type()
                .is_fifo()
        );
        // chmod and chown keep the recorded type.
        std::fs::set_permissions(m.join("tty1"), std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::lchown(m.join("tty1"), Some(0), Some(5)).unwrap();
    });
    let up = stack.upper();
    assert_eq!(
        std::fs::read(lower.join("null")).unwrap(),
        b"",
        "lower untouched"
    );
    for (name, value) in [("tty1", "0:5:0640:char-4-1"), ("p", "0:0:0600:pipe")] {
        assert!(std::fs::symlink_metadata(up.join(name)).unwrap().is_file());
        assert_eq!(
            getxattr(&up.join(name), X).as_deref(),
            Some(value.as_bytes()),
            "{X} of {name}"
        );
    }
    with_compat_mount(&stack, ",xattr_permissions=2", |m| {
        check(m);
        let tty = std::fs::symlink_metadata(m.join("tty1")).unwrap();
        assert!(tty.file_type().is_char_device());
        assert_eq!(
            (tty.gid(), tty.mode() & 0o7777, tty.rdev()),
            (5, 0o640, libc::makedev(4, 1))
        );
    });
}
