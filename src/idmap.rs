//! Ownership as the mount presents it: fuse-overlayfs's `uidmapping=`/`gidmapping=` (layers
//! hold host ids, the mount shows container ids) and `squash_to_*` (everything shows one
//! owner). Without options it is the identity and costs nothing. The same translation applies
//! to the ids inside POSIX ACL xattrs (`system.posix_acl_access`/`_default`).

/// The id the kernel shows for ids a mapping does not cover (`/proc/sys/kernel/overflowuid`).
const OVERFLOW_ID: u32 = 65534;

/// One range of an id mapping: `count` ids from `container` (as seen through the mount) are
/// the ids from `host` in the layers. fuse-overlayfs's and containers-storage's
/// `container:host:count` triple; the same shape as a line of /proc/PID/uid_map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub container: u32,
    pub host: u32,
    pub count: u32,
}

/// The container id of a layer's `host` id, if the mapping covers it.
pub fn map_to_container(map: &[IdRange], host: u32) -> Option<u32> {
    map.iter()
        .find(|r| host >= r.host && u64::from(host) < u64::from(r.host) + u64::from(r.count))
        .map(|r| host - r.host + r.container)
}

/// The layer (host) id of a `container` id, if the mapping covers it.
pub fn map_to_host(map: &[IdRange], container: u32) -> Option<u32> {
    map.iter()
        .find(|r| {
            container >= r.container
                && u64::from(container) < u64::from(r.container) + u64::from(r.count)
        })
        .map(|r| container - r.container + r.host)
}

#[derive(Clone, Debug, Default)]
pub struct IdMapping {
    pub uid_map: Vec<IdRange>,
    pub gid_map: Vec<IdRange>,
    pub squash_uid: Option<u32>,
    pub squash_gid: Option<u32>,
}

fn show(map: &[IdRange], squash: Option<u32>, host: u32) -> u32 {
    match (squash, map.is_empty()) {
        (Some(id), _) => id,
        (None, true) => host,
        (None, false) => map_to_container(map, host).unwrap_or(OVERFLOW_ID),
    }
}

fn store(map: &[IdRange], container: u32) -> Option<u32> {
    if map.is_empty() {
        Some(container)
    } else {
        map_to_host(map, container)
    }
}

impl IdMapping {
    pub fn is_identity(&self) -> bool {
        self.uid_map.is_empty()
            && self.gid_map.is_empty()
            && self.squash_uid.is_none()
            && self.squash_gid.is_none()
    }

    /// The owner a layer's (uid, gid) shows as through the mount.
    pub fn show(&self, uid: u32, gid: u32) -> (u32, u32) {
        (
            show(&self.uid_map, self.squash_uid, uid),
            show(&self.gid_map, self.squash_gid, gid),
        )
    }

    /// The layer uid for a uid given through the mount; None if the mapping has no place
    /// for it (chown then fails with EINVAL, as chown(2) in a user namespace does).
    pub fn store_uid(&self, uid: u32) -> Option<u32> {
        store(&self.uid_map, uid)
    }

    pub fn store_gid(&self, gid: u32) -> Option<u32> {
        store(&self.gid_map, gid)
    }

    /// A POSIX ACL xattr read from a layer, with its user and group entries as the mount
    /// shows owners (ids the mapping does not cover become the overflow id, as the kernel
    /// shows them outside a user namespace's map).
    pub fn show_acl(&self, value: &[u8]) -> Result<Vec<u8>, AclError> {
        map_acl(
            value,
            |uid| Some(show(&self.uid_map, self.squash_uid, uid)),
            |gid| Some(show(&self.gid_map, self.squash_gid, gid)),
        )
    }

    /// A POSIX ACL xattr given through the mount, with its ids as the layers store them. An
    /// id the mapping has no place for is `AclError::Unmapped` (EINVAL, as chown).
    pub fn store_acl(&self, value: &[u8]) -> Result<Vec<u8>, AclError> {
        map_acl(value, |uid| self.store_uid(uid), |gid| self.store_gid(gid))
    }
}

/// The xattrs that hold POSIX ACLs in the kernel's xattr format (`posix_acl_xattr.h`).
pub fn is_acl_xattr(name: &[u8]) -> bool {
    name == b"system.posix_acl_access" || name == b"system.posix_acl_default"
}

/// Why an ACL value could not be translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AclError {
    /// Not version 2 with a whole number of 8-byte entries.
    Malformed,
    /// A user or group entry names an id the mapping does not cover.
    Unmapped,
}

const ACL_XATTR_VERSION: u32 = 2;
const ACL_HEADER_LEN: usize = 4;
const ACL_ENTRY_LEN: usize = 8;
/// `e_tag` of entries whose `e_id` is a uid (ACL_USER) or a gid (ACL_GROUP); the other tags
/// (owner, owning group, mask, other) carry ACL_UNDEFINED_ID and are left alone.
const ACL_USER: u16 = 0x02;
const ACL_GROUP: u16 = 0x08;

/// Rewrite the ids of an ACL xattr value: a little-endian u32 version (2), then entries of
/// {u16 tag, u16 perm, u32 id}. Everything but the ids of ACL_USER/ACL_GROUP entries is
/// copied unchanged.
fn map_acl(
    value: &[u8],
    uid: impl Fn(u32) -> Option<u32>,
    gid: impl Fn(u32) -> Option<u32>,
) -> Result<Vec<u8>, AclError> {
    let (header, entries) = value
        .split_first_chunk::<ACL_HEADER_LEN>()
        .ok_or(AclError::Malformed)?;
    if u32::from_le_bytes(*header) != ACL_XATTR_VERSION || entries.len() % ACL_ENTRY_LEN != 0 {
        return Err(AclError::Malformed);
    }
    let mut out = value.to_vec();
    for (i, e) in entries.chunks_exact(ACL_ENTRY_LEN).enumerate() {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        let mapped = match tag {
            ACL_USER => uid(id).ok_or(AclError::Unmapped)?,
            ACL_GROUP => gid(id).ok_or(AclError::Unmapped)?,
            _ => continue,
        };
        let at = ACL_HEADER_LEN + i * ACL_ENTRY_LEN + 4;
        out[at..at + 4].copy_from_slice(&mapped.to_le_bytes());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(container: u32, host: u32, count: u32) -> IdRange {
        IdRange {
            container,
            host,
            count,
        }
    }

    #[test]
    fn mapping_translates_both_ways_and_overflows_outside() {
        let m = IdMapping {
            uid_map: vec![r(0, 1000, 1), r(1, 100000, 65536)],
            gid_map: vec![r(0, 1000, 1)],
            ..Default::default()
        };
        assert_eq!(m.show(1000, 1000), (0, 0));
        assert_eq!(m.show(100004, 5), (5, OVERFLOW_ID));
        assert_eq!(m.store_uid(0), Some(1000));
        assert_eq!(m.store_uid(70000), None);
        assert!(IdMapping::default().is_identity());
    }

    /// An ACL value as `setfacl` passes it: (tag, perm, id) entries after the version.
    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = ACL_XATTR_VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    const UNDEF: u32 = u32::MAX;

    #[test]
    fn acl_ids_translate_both_ways_and_round_trip() {
        let m = IdMapping {
            uid_map: vec![r(0, 100000, 65536)],
            gid_map: vec![r(0, 200000, 65536)],
            ..Default::default()
        };
        // user::rw- user:1000:rw- group::r-- group:50:r-x mask::rwx other::---
        let shown = acl(&[
            (0x01, 6, UNDEF),
            (ACL_USER, 6, 1000),
            (0x04, 4, UNDEF),
            (ACL_GROUP, 5, 50),
            (0x10, 7, UNDEF),
            (0x20, 0, UNDEF),
        ]);
        let stored = m.store_acl(&shown).unwrap();
        assert_eq!(
            stored,
            acl(&[
                (0x01, 6, UNDEF),
                (ACL_USER, 6, 101000),
                (0x04, 4, UNDEF),
                (ACL_GROUP, 5, 200050),
                (0x10, 7, UNDEF),
                (0x20, 0, UNDEF),
            ])
        );
        assert_eq!(m.show_acl(&stored).unwrap(), shown);
        // The identity changes nothing; an empty ACL (header only) is valid.
        assert_eq!(IdMapping::default().store_acl(&stored).unwrap(), stored);
        assert_eq!(m.show_acl(&acl(&[])).unwrap(), acl(&[]));
    }

    #[test]
    fn acl_ids_outside_the_mapping() {
        let m = IdMapping {
            uid_map: vec![r(0, 100000, 10)],
            gid_map: vec![r(0, 100000, 10)],
            ..Default::default()
        };
        // Stored ids the mapping doesn't cover show as the overflow id, as stat shows owners.
        assert_eq!(
            m.show_acl(&acl(&[(ACL_USER, 4, 7), (ACL_GROUP, 4, 100003)]))
                .unwrap(),
            acl(&[(ACL_USER, 4, OVERFLOW_ID), (ACL_GROUP, 4, 3)])
        );
        // Setting one is refused, as chown to such an id is.
        assert_eq!(
            m.store_acl(&acl(&[(ACL_USER, 4, 10)])),
            Err(AclError::Unmapped)
        );
        assert_eq!(
            m.store_acl(&acl(&[(ACL_GROUP, 4, 11)])),
            Err(AclError::Unmapped)
        );
        // Squash shows every entry as the squash id, as stat shows every owner.
        let sq = IdMapping {
            squash_uid: Some(0),
            squash_gid: Some(5),
            ..Default::default()
        };
        assert_eq!(
            sq.show_acl(&acl(&[(ACL_USER, 4, 1234), (ACL_GROUP, 4, 99)]))
                .unwrap(),
            acl(&[(ACL_USER, 4, 0), (ACL_GROUP, 4, 5)])
        );
    }

    #[test]
    fn malformed_acls_are_errors() {
        let m = IdMapping {
            uid_map: vec![r(0, 100000, 65536)],
            ..Default::default()
        };
        let good = acl(&[(ACL_USER, 6, 1)]);
        let mut v1 = good.clone();
        v1[0] = 1;
        for bad in [
            &[][..],
            &[2, 0, 0][..],
            &good[..good.len() - 1],
            &[good.as_slice(), &[0]].concat()[..],
            &v1[..],
        ] {
            assert_eq!(m.show_acl(bad), Err(AclError::Malformed), "{bad:?}");
            assert_eq!(m.store_acl(bad), Err(AclError::Malformed), "{bad:?}");
        }
        assert!(is_acl_xattr(b"system.posix_acl_access"));
        assert!(is_acl_xattr(b"system.posix_acl_default"));
        assert!(!is_acl_xattr(b"user.posix_acl_access"));
    }

    #[test]
    fn squash_wins_over_mapping() {
        let m = IdMapping {
            uid_map: vec![r(0, 1000, 1)],
            squash_uid: Some(0),
            squash_gid: Some(7),
            ..Default::default()
        };
        assert_eq!(m.show(1234, 1234), (0, 7));
    }
}
