//! Ownership as the mount presents it: fuse-overlayfs's `uidmapping=`/`gidmapping=` (layers
//! hold host ids, the mount shows container ids) and `squash_to_*` (everything shows one
//! owner). Without options it is the identity and costs nothing.

use crate::config::{IdRange, map_to_container, map_to_host};

/// The id the kernel shows for ids a mapping does not cover (`/proc/sys/kernel/overflowuid`).
const OVERFLOW_ID: u32 = 65534;

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
