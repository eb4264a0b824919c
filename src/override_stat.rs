//! fuse-overlayfs's override_stat codec: an xattr on a file or directory that holds its
//! apparent owner, mode and (for a regular file standing in for a device, FIFO or socket) its
//! type. Parsing never fails loudly: a malformed value is no override.

use std::ffi::CStr;
use std::os::fd::BorrowedFd;

use crate::error::Result;
use crate::layer;
use crate::sys::{self, Stat};

/// An override_stat value: `UID:GID:MODE[:TYPE]`, mode in octal (fuse-overlayfs writes the
/// whole st_mode, containers-storage the permission bits). TYPE, as containers-storage's
/// `FormatContainersOverrideXattrDevice` writes it, is `file`, `dir`, `symlink`, `pipe`,
/// `socket`, `block-MAJOR-MINOR` or `char-MAJOR-MINOR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Override {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits only (`0o7777`).
    pub mode: u32,
    /// A special file that a regular file stands in for: its `S_IFMT` type and rdev.
    pub special: Option<(u32, u64)>,
}

pub fn read_override_at(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr) -> Option<Override> {
    let v = sys::getxattrat_vec(dir, name, xattr).ok()??;
    parse_override(&v)
}

pub fn store_override(dir: BorrowedFd<'_>, name: &CStr, xattr: &CStr, o: &Override) -> Result<()> {
    let value = format_override(o);
    sys::setxattrat(dir, name, xattr, value.as_bytes(), 0)
}

/// Show `st` (a directory or regular file in an override_stat layer) as `o` records it. Only a
/// regular file takes a special type: a directory is never shown as anything else, and a
/// regular file is never shown as a directory or a symlink (it has no entries, no target).
pub fn apply_override(st: &mut Stat, o: &Override) {
    st.st_uid = o.uid;
    st.st_gid = o.gid;
    let mut kind = st.st_mode & libc::S_IFMT;
    if kind == libc::S_IFREG
        && let Some((special, rdev)) = o.special
    {
        kind = special;
        st.st_rdev = rdev;
    }
    st.st_mode = kind | o.mode;
}

/// Parse an override_stat value; None (no override) unless it has a numeric uid, gid and
/// octal mode. An unknown or malformed TYPE is ignored, owner and mode still apply (as
/// fuse-overlayfs, which reads the first three fields only); fields after TYPE are ignored.
pub fn parse_override(v: &[u8]) -> Option<Override> {
    let s = std::str::from_utf8(v).ok()?.trim_end_matches('\0');
    let mut it = s.split(':');
    let uid = it.next()?.parse().ok()?;
    let gid = it.next()?.parse().ok()?;
    let mode = u32::from_str_radix(it.next()?, 8).ok()?;
    Some(Override {
        uid,
        gid,
        mode: mode & 0o7777,
        special: it.next().and_then(parse_override_type),
    })
}

/// The special type of a TYPE field. containers-storage matches on the prefix (`pipe`,
/// `socket`) and splits devices on `-`, ignoring parts after the minor number.
pub fn parse_override_type(t: &str) -> Option<(u32, u64)> {
    if t.starts_with("pipe") {
        return Some((libc::S_IFIFO, 0));
    }
    if t.starts_with("socket") {
        return Some((libc::S_IFSOCK, 0));
    }
    let mut parts = t.split('-');
    let kind = match parts.next()? {
        "char" => libc::S_IFCHR,
        "block" => libc::S_IFBLK,
        _ => return None,
    };
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((kind, libc::makedev(major, minor)))
}

/// The value `parse_override` reads back: `UID:GID:0MODE`, then `:TYPE` for a special file
/// (files and directories keep the three-field form older fuse-overlayfs versions read).
pub fn format_override(o: &Override) -> String {
    let base = format!("{}:{}:0{:o}", o.uid, o.gid, o.mode & 0o7777);
    let Some((kind, rdev)) = o.special else {
        return base;
    };
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    match kind {
        libc::S_IFCHR => format!("{base}:char-{major}-{minor}"),
        libc::S_IFBLK => format!("{base}:block-{major}-{minor}"),
        libc::S_IFIFO => format!("{base}:pipe"),
        libc::S_IFSOCK => format!("{base}:socket"),
        _ => base,
    }
}

/// fuse-overlayfs's override_stat xattrs are its metadata, never shown through the mount.
pub fn is_override_xattr(name: &CStr) -> bool {
    let n = name.to_bytes();
    [
        layer::OVERRIDE_PRIVILEGED,
        layer::OVERRIDE_CONTAINERS,
        layer::OVERRIDE_USER,
    ]
    .iter()
    .any(|o| o.as_bytes() == n)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn ov(uid: u32, gid: u32, mode: u32, special: Option<(u32, u64)>) -> Override {
        Override {
            uid,
            gid,
            mode,
            special,
        }
    }

    #[test]
    fn override_values_of_every_type_parse() {
        let dev = |kind, ma, mi| Some((kind, libc::makedev(ma, mi)));
        for (v, want) in [
            ("1234:1235:0644", ov(1234, 1235, 0o644, None)),
            // fuse-overlayfs 1.10's form: the whole st_mode.
            ("1234:1235:100644", ov(1234, 1235, 0o644, None)),
            ("0:0:4755:file", ov(0, 0, 0o4755, None)),
            ("1:2:0755:dir", ov(1, 2, 0o755, None)),
            ("1:2:0777:symlink", ov(1, 2, 0o777, None)),
            ("1:2:0666:pipe", ov(1, 2, 0o666, Some((libc::S_IFIFO, 0)))),
            (
                "1:2:0700:socket",
                ov(1, 2, 0o700, Some((libc::S_IFSOCK, 0))),
            ),
            (
                "0:0:0666:char-1-3",
                ov(0, 0, 0o666, dev(libc::S_IFCHR, 1, 3)),
            ),
            (
                "0:6:0660:block-8-1",
                ov(0, 6, 0o660, dev(libc::S_IFBLK, 8, 1)),
            ),
            // Large numbers need glibc's split encoding.
            (
                "0:0:0600:char-4095-1048575",
                ov(0, 0, 0o600, dev(libc::S_IFCHR, 4095, 1048575)),
            ),
            // containers-storage ignores device parts after the minor, and fields after TYPE.
            (
                "0:0:0600:block-3-4-future",
                ov(0, 0, 0o600, dev(libc::S_IFBLK, 3, 4)),
            ),
            (
                "0:0:0600:char-5-1:more",
                ov(0, 0, 0o600, dev(libc::S_IFCHR, 5, 1)),
            ),
            ("0:0:0644\0", ov(0, 0, 0o644, None)),
        ] {
            assert_eq!(parse_override(v.as_bytes()), Some(want), "{v:?}");
        }
    }

    #[test]
    fn malformed_override_values_are_ignored() {
        for v in ["", "1000:1001", "x:1:0644", "1:-2:0644", "1:2:0689", "1:2:"] {
            assert_eq!(parse_override(v.as_bytes()), None, "{v:?}");
        }
        // A malformed type field leaves owner and mode in force (fuse-overlayfs never reads
        // it); the file keeps its own type.
        for t in [
            "disk-1-2",
            "block800",
            "block-abc-0",
            "char-1-xyz",
            "char-1",
            "",
        ] {
            let v = format!("7:8:0640:{t}");
            assert_eq!(
                parse_override(v.as_bytes()),
                Some(ov(7, 8, 0o640, None)),
                "{v:?}"
            );
        }
        assert_eq!(parse_override(&[0xff, b':', b'1']), None);
    }

    #[test]
    fn override_values_round_trip() {
        for o in [
            ov(1234, 1234, 0o644, None),
            ov(0, 0, 0o2755, None),
            ov(1, 2, 0o666, Some((libc::S_IFIFO, 0))),
            ov(1, 2, 0o777, Some((libc::S_IFSOCK, 0))),
            ov(0, 0, 0o666, Some((libc::S_IFCHR, libc::makedev(1, 3)))),
            ov(
                0,
                0,
                0o660,
                Some((libc::S_IFBLK, libc::makedev(259, 70000))),
            ),
        ] {
            assert_eq!(parse_override(format_override(&o).as_bytes()), Some(o));
        }
        assert_eq!(
            format_override(&ov(1234, 1234, 0o644, None)),
            "1234:1234:0644"
        );
        let null = ov(0, 0, 0o666, Some((libc::S_IFCHR, libc::makedev(1, 3))));
        assert_eq!(format_override(&null), "0:0:0666:char-1-3");
    }

    /// A real stat (unsafe stays in sys.rs), its type and mode replaced.
    fn stat_of(mode: u32) -> Stat {
        let root = sys::open_path(c"/", libc::O_PATH).expect("open /");
        let mut st = sys::fstat(root.as_fd()).expect("fstat /");
        (st.st_mode, st.st_rdev) = (mode, 0);
        st
    }

    #[test]
    fn only_a_regular_file_takes_a_special_type() {
        let null = ov(0, 0, 0o666, Some((libc::S_IFCHR, libc::makedev(1, 3))));
        let mut st = stat_of(libc::S_IFREG | 0o600);
        apply_override(&mut st, &null);
        assert_eq!(st.st_mode, libc::S_IFCHR | 0o666);
        assert_eq!((libc::major(st.st_rdev), libc::minor(st.st_rdev)), (1, 3));
        let mut st = stat_of(libc::S_IFDIR | 0o700);
        apply_override(&mut st, &null);
        assert_eq!((st.st_mode, st.st_rdev), (libc::S_IFDIR | 0o666, 0));
    }
}
