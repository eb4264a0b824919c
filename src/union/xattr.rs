//! Extended attributes: names escaped per the whiteout `Format`, override_stat xattrs hidden,
//! ACL owners mapped like stat's owners; a node's names are cached until it changes.

use std::ffi::{CString, OsStr};
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::idmap;
use crate::inode::Node;
use crate::override_stat::is_override_xattr;
use crate::sys;

use super::Union;

/// The SELinux label's name (see `Union::selinux`).
const SELINUX_XATTR: &std::ffi::CStr = c"security.selinux";

/// Does this host run SELinux (selinuxfs mounted where libselinux looks)? Without it no label
/// is ever set for us, and `security.selinux` of an object without one is "not supported".
pub(super) fn host_has_selinux() -> bool {
    std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

impl Union {
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> Result<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        let name = sys::cname(name)?;
        self.fmt.check_name(&name)?;
        let real = self.fmt.escape(&name);
        // Most asks are for names the object lacks (`security.selinux` of every file in
        // `ls -l`): answered from the name cache, without a syscall.
        if is_override_xattr(&real) {
            return Err(Error::NoXattr);
        }
        if !self.xattr_names(&node)?.contains(&real) {
            // `ls -l` asks every file for its SELinux label, one round trip each that the
            // kernel can't cache; told "not supported" once, it stops asking for this device.
            if !self.selinux && real.as_c_str() == SELINUX_XATTR {
                return Err(Error::XattrUnsupported);
            }
            return Err(Error::NoXattr);
        }
        let (dir, at) = self.at(&node)?;
        let value = sys::getxattrat_vec(dir.as_fd(), &at, &real)?.ok_or(Error::NoXattr)?;
        if self.opts.ids.is_identity() || !idmap::is_acl_xattr(real.to_bytes()) {
            return Ok(value);
        }
        // ACL entries name owners: show them as stat shows owners. A layer's ACL the kernel
        // could not parse either is an I/O error, not something to pass on untranslated.
        self.opts.ids.show_acl(&value).map_err(|_| Error::Malformed)
    }

    /// The node's stored xattr names, listed once and then cached (see `NodeState`).
    fn xattr_names(&self, node: &Node) -> Result<Arc<Vec<CString>>> {
        if let Some(names) = &node.state.lock().xattr_names {
            return Ok(names.clone());
        }
        let (dir, at) = self.at(node)?;
        let names = Arc::new(sys::listxattrat_vec(dir.as_fd(), &at)?);
        node.state.lock().xattr_names = Some(names.clone());
        Ok(names)
    }

    pub(super) fn forget_xattr_names(&self, node: &Node) {
        node.state.lock().xattr_names = None;
    }

    pub fn listxattr(&self, ino: u64) -> Result<Vec<u8>> {
        let node = self.nodes.get(ino)?;
        let (dir, at) = self.at(&node)?;
        let mut out = Vec::new();
        for name in sys::listxattrat_vec(dir.as_fd(), &at)? {
            if is_override_xattr(&name) {
                continue;
            }
            if let Some(shown) = self.fmt.unescape(&name) {
                out.extend_from_slice(shown.to_bytes_with_nul());
            }
        }
        Ok(out)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let name = sys::cname(name)?;
        self.fmt.check_name(&name)?;
        if is_override_xattr(&name) {
            return Err(Error::NotPermitted);
        }
        let real = self.fmt.escape(&name);
        // ACL entries name owners: store them as chown stores owners (EINVAL for an id the
        // mapping has no place for, or a value that is not an ACL), before any copy-up.
        let mapped;
        let value = if !self.opts.ids.is_identity() && idmap::is_acl_xattr(real.to_bytes()) {
            mapped = (self.opts.ids)
                .store_acl(value)
                .map_err(|_| Error::Invalid)?;
            &mapped[..]
        } else {
            value
        };
        let node = self.nodes.get(ino)?;
        self.copy_up(&node)?;
        self.forget_xattr_names(&node);
        let (dir, at) = self.at(&node)?;
        sys::setxattrat(dir.as_fd(), &at, &real, value, flags)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Result<()> {
        let node = self.nodes.get(ino)?;
        let name = sys::cname(name)?;
        self.fmt.check_name(&name)?;
        // Hidden like getxattr hides it: removing it would erase the owner and mode it stores.
        if is_override_xattr(&name) {
            return Err(Error::NoXattr);
        }
        let real = self.fmt.escape(&name);
        // Removing a name the object lacks changes nothing, so it needs no copy-up.
        let absent = {
            let (dir, at) = self.at(&node)?;
            sys::getxattrat_vec(dir.as_fd(), &at, &real)?.is_none()
        };
        if absent {
            return Err(Error::NoXattr);
        }
        self.copy_up(&node)?;
        self.forget_xattr_names(&node);
        let (dir, at) = self.at(&node)?;
        sys::removexattrat(dir.as_fd(), &at, &real)
    }
}
