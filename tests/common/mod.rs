//! Shared helpers for the mounted integration tests: libc wrappers (`sys`), layer builders in
//! kernel overlayfs format (`layers`), tree snapshots and diffs (`tree`), and mount guards that
//! always unmount (`mount`). Each test binary uses a different subset, hence the allow.
#![allow(dead_code, unused_imports)]

pub mod layers;
pub mod mount;
pub mod rootless;
pub mod sys;
pub mod tree;

pub use layers::*;
pub use mount::{KernelOverlay, Stack, UnionMount, kernel_backend, mounted, require_fuse};
pub use tree::{Entry, Kind, SnapOpts, Tree, assert_trees_eq, content_hash};
