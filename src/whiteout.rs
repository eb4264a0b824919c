//! Kernel overlayfs's on-disk encodings: whiteouts (char device 0/0), opaque directories
//! (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` in userxattr mode) and the private
//! xattr namespace that never shows through the mount. Both xattr forms are read; the one
//! chosen at mount is written. See Documentation/filesystems/overlayfs.rst in the kernel.

use std::ffi::{CStr, CString};
use std::os::fd::BorrowedFd;

use crate::error::Result;
use crate::sys;

pub const TRUSTED_PREFIX: &str = "trusted.overlay.";
pub const USER_PREFIX: &str = "user.overlay.";

/// Which xattr namespace this mount writes its overlay metadata in.
#[derive(Clone, Debug)]
pub struct Format {
    /// Also honour AUFS-style whiteouts: a file `.wh.NAME` hides NAME in the layers below,
    /// and `.wh..wh..opq` in a directory makes it opaque. containers-storage writes these
    /// for mount programs; kernel overlay does not read them.
    pub aufs: bool,
    prefix: &'static str,
    opaque: CString,
    origin: CString,
    redirect: CString,
}

impl Format {
    /// `userxattr`: the `user.overlay.*` names kernel overlay uses inside user namespaces.
    pub fn new(userxattr: bool, aufs: bool) -> Format {
        let prefix = if userxattr {
            USER_PREFIX
        } else {
            TRUSTED_PREFIX
        };
        let mk = |s: &str| CString::new(format!("{prefix}{s}")).unwrap_or_default();
        Format {
            aufs,
            prefix,
            opaque: mk("opaque"),
            origin: mk("unionfuse.origin"),
            redirect: mk("redirect"),
        }
    }

    /// EINVAL for the bare private prefix (`trusted.overlay.`, or `user.overlay.` under
    /// userxattr): kernel overlay refuses to get, set or remove an empty name in its namespace.
    pub fn check_name(&self, name: &CStr) -> Result<()> {
        if name.to_bytes() == self.prefix.as_bytes() {
            return Err(crate::error::Error::Invalid);
        }
        Ok(())
    }

    /// The name an xattr set through the mount is stored under. Overlay's own namespace is
    /// escaped, as kernel overlay (6.7+) does: `trusted.overlay.foo` is stored as
    /// `trusted.overlay.overlay.foo`, so users can't forge overlay metadata.
    pub fn escape(&self, name: &CStr) -> CString {
        let b = name.to_bytes();
        match b.strip_prefix(self.prefix.as_bytes()) {
            Some(rest) => {
                let mut v = format!("{}overlay.", self.prefix).into_bytes();
                v.extend_from_slice(rest);
                CString::new(v).unwrap_or_default()
            }
            None => name.to_owned(),
        }
    }

    /// The name a stored xattr shows as through the mount; None for overlay's own.
    pub fn unescape(&self, stored: &CStr) -> Option<CString> {
        let b = stored.to_bytes();
        let Some(rest) = b.strip_prefix(self.prefix.as_bytes()) else {
            return Some(stored.to_owned());
        };
        let rest = rest.strip_prefix(b"overlay.")?;
        let mut v = self.prefix.as_bytes().to_vec();
        v.extend_from_slice(rest);
        CString::new(v).ok()
    }

    /// Should this stored xattr be carried along by copy-up? Overlay's own metadata of the
    /// lower (its opaque flag, origin, ...) describes the lower, not the copy.
    pub fn copies(&self, stored: &CStr) -> bool {
        self.unescape(stored).is_some()
    }

    /// Mark `dir/name` (a directory in the upper) opaque.
    pub fn set_opaque(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        sys::setxattrat(dir, name, &self.opaque, b"y", 0)
    }

    /// Record the node id a copied-up object had, so st_ino survives remounts. Kernel overlay
    /// ignores overlay xattrs it does not know.
    pub fn set_origin(&self, dir: BorrowedFd<'_>, name: &CStr, ino: u64) -> Result<()> {
        sys::setxattrat(dir, name, &self.origin, ino.to_string().as_bytes(), 0)
    }

    /// Is `dir/name` (a directory) opaque? Only this mount's namespace counts, as in kernel
    /// overlay; a value other than "y" ("x" marks a dir holding xattr whiteouts) does not.
    pub fn is_opaque(&self, dir: BorrowedFd<'_>, name: &CStr) -> bool {
        let xattr = sys::getxattrat_vec(dir, name, &self.opaque);
        if matches!(xattr, Ok(Some(v)) if v == b"y") {
            return true;
        }
        // `name` was just seen to be a directory, so walking through it follows no symlink.
        self.aufs && {
            let mut p = name.to_bytes().to_vec();
            p.extend_from_slice(b"/.wh..wh..opq");
            CString::new(p).is_ok_and(|p| matches!(sys::fstatat_opt(dir, &p), Ok(Some(_))))
        }
    }

    /// In AUFS mode: does `dir` hold a `.wh.NAME` whiteout file for `name`?
    pub fn has_aufs_whiteout(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<bool> {
        if !self.aufs {
            return Ok(false);
        }
        let Some(wh) = aufs_whiteout_name(name.to_bytes()) else {
            return Ok(false);
        };
        Ok(sys::fstatat_opt(dir, &wh)?.is_some())
    }

    /// The raw redirect of `dir/name` (a directory), if it has one.
    pub fn redirect(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<Option<Vec<u8>>> {
        sys::getxattrat_vec(dir, name, &self.redirect)
    }

    /// Record where the directory `dir/name` (in the upper) has its lower copies.
    pub fn set_redirect(&self, dir: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> Result<()> {
        sys::setxattrat(dir, name, &self.redirect, value, 0)
    }

    pub fn origin(&self, dir: BorrowedFd<'_>, name: &CStr) -> Option<u64> {
        let v = sys::getxattrat_vec(dir, name, &self.origin).ok()??;
        std::str::from_utf8(&v).ok()?.parse().ok()
    }
}

/// `.wh.NAME`, or None when that is longer than a name may be.
fn aufs_whiteout_name(name: &[u8]) -> Option<CString> {
    if name.len() + AUFS_PREFIX.len() > 255 {
        return None;
    }
    let mut v = AUFS_PREFIX.to_vec();
    v.extend_from_slice(name);
    CString::new(v).ok()
}

/// The AUFS whiteout prefix: `.wh.NAME` hides NAME; such names never show in AUFS mode.
pub const AUFS_PREFIX: &[u8] = b".wh.";

/// Make a whiteout named `name` in `dir`.
pub fn make_whiteout(dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
    sys::mknodat(dir, name, libc::S_IFCHR, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_hides_private_names() {
        let f = Format::new(false, false);
        assert_eq!(
            f.escape(c"trusted.overlay.foo").as_bytes(),
            b"trusted.overlay.overlay.foo"
        );
        assert_eq!(f.escape(c"user.foo").as_bytes(), b"user.foo");
        let shown = f
            .unescape(c"trusted.overlay.overlay.foo")
            .expect("escaped name shows");
        assert_eq!(shown.as_bytes(), b"trusted.overlay.foo");
        assert!(f.unescape(c"trusted.overlay.opaque").is_none());
        // In trusted mode user.overlay.* is an ordinary user xattr, as in kernel overlay.
        assert!(f.unescape(c"user.overlay.opaque").is_some());
        assert!(
            Format::new(true, false)
                .unescape(c"user.overlay.opaque")
                .is_none()
        );
    }

    #[test]
    fn format_names_follow_the_mode() {
        assert_eq!(
            Format::new(false, false).opaque.as_bytes(),
            b"trusted.overlay.opaque"
        );
        assert_eq!(
            Format::new(true, false).origin.as_bytes(),
            b"user.overlay.unionfuse.origin"
        );
    }
}
