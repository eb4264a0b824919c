//! Listings of directories read without a handle. Where the kernel supports it
//! (`FUSE_NO_OPENDIR_SUPPORT`), it opens and releases directories without asking us, which
//! saves two round trips per directory walked (find, git status); its READDIRs then name only
//! the directory. The listing taken for a READDIR at offset 0 is kept here for the batches
//! after it. Cookies are name hashes, so a batch served from a newer listing than the one
//! before it still returns every unchanged name exactly once; but a listing older than a change
//! to its directory must not be served (a reader whose first batches came from the kernel's
//! own cache may ask for the rest long after). So each change forgets its directory's listing,
//! and a listing taken while its directory changed is not kept.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

use crate::handle::DirEntry;

/// Listings kept: a few readers at once, each between two batches of one directory.
const KEPT: usize = 16;
/// Changes remembered, to tell whether one touched a listing taken before it.
const CHANGES: usize = 64;

pub type Listing = Arc<Vec<DirEntry>>;

#[derive(Default)]
pub struct Listings {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Counts changes; a listing is stamped with its value before it is taken.
    clock: u64,
    /// (directory, listing), most recently kept first.
    kept: VecDeque<(u64, Listing)>,
    /// (directory, clock after its change) of the latest changes, oldest first.
    changes: VecDeque<(u64, u64)>,
}

/// Forgets its directory's listing when dropped, after the change it guards is made.
pub struct Changing<'a> {
    listings: &'a Listings,
    dir: u64,
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        let mut g = self.listings.inner.lock();
        g.clock += 1;
        let clock = g.clock;
        if g.changes.len() == CHANGES {
            g.changes.pop_front();
        }
        g.changes.push_back((self.dir, clock));
        g.kept.retain(|(d, _)| *d != self.dir);
    }
}

impl Listings {
    /// The listing of `dir` kept from an earlier READDIR, if it is still current.
    pub fn get(&self, dir: u64) -> Option<Listing> {
        let g = self.inner.lock();
        g.kept
            .iter()
            .find(|(d, _)| *d == dir)
            .map(|(_, l)| l.clone())
    }

    /// The stamp to take before listing a directory, for `keep`.
    pub fn stamp(&self) -> u64 {
        self.inner.lock().clock
    }

    /// Keep `listing` of `dir`, taken after `stamp`, unless `dir` changed since (or too many
    /// changes went by to tell).
    pub fn keep(&self, dir: u64, stamp: u64, listing: Listing) {
        let mut g = self.inner.lock();
        let overrun = g.changes.len() == CHANGES && g.changes[0].1 > stamp;
        let touched = g.changes.iter().any(|&(d, c)| d == dir && c > stamp);
        if overrun || touched {
            return;
        }
        g.kept.retain(|(d, _)| *d != dir);
        if g.kept.len() == KEPT {
            g.kept.pop_back();
        }
        g.kept.push_front((dir, listing));
    }

    /// Hold while changing the entries of `dir`.
    pub fn changing(&self, dir: u64) -> Changing<'_> {
        Changing {
            listings: self,
            dir,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing() -> Listing {
        Arc::new(Vec::new())
    }

    #[test]
    fn a_listing_is_kept_until_its_directory_changes() {
        let l = Listings::default();
        let s = l.stamp();
        l.keep(7, s, listing());
        assert!(l.get(7).is_some());
        drop(l.changing(8));
        assert!(l.get(7).is_some(), "another directory's change");
        drop(l.changing(7));
        assert!(l.get(7).is_none());
    }

    #[test]
    fn a_listing_taken_while_its_directory_changed_is_not_kept() {
        let l = Listings::default();
        let s = l.stamp();
        let change = l.changing(7);
        drop(change);
        l.keep(7, s, listing());
        assert!(l.get(7).is_none());
        // Taken after the change: kept.
        let s = l.stamp();
        l.keep(7, s, listing());
        assert!(l.get(7).is_some());
    }

    #[test]
    fn too_many_changes_to_tell_and_the_listing_is_not_kept() {
        let l = Listings::default();
        let s = l.stamp();
        for d in 100..100 + CHANGES as u64 + 1 {
            drop(l.changing(d));
        }
        l.keep(7, s, listing());
        assert!(l.get(7).is_none());
    }

    #[test]
    fn only_the_latest_listings_are_kept() {
        let l = Listings::default();
        for d in 0..KEPT as u64 + 1 {
            let s = l.stamp();
            l.keep(d, s, listing());
        }
        assert!(l.get(0).is_none());
        assert!(l.get(KEPT as u64).is_some());
    }
}
