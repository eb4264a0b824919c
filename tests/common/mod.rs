//! Shared helpers for the integration tests: libc wrappers (`sys`), layer builders in kernel
//! overlayfs format (`layers`), tree snapshots and diffs (`tree`), mount guards that always
//! unmount (`mount`, `daemon`), process probes and watchdogs (`process`), the one seeded random
//! generator (`rng`) and rootless setup (`rootless`). Each test binary uses a different subset,
//! hence the allow.
#![allow(dead_code, unused_imports)]

pub mod daemon;
pub mod layers;
pub mod mode;
pub mod mount;
pub mod process;
pub mod rng;
pub mod rootless;
pub mod sys;
pub mod tree;
pub mod view;

pub use daemon::Daemon;
pub use layers::*;
pub use mode::{
    Mode, can_chown, lower_passthrough, mode, needs_initial_root, overlay_prefix, runs_in,
};
pub use mount::{
    KernelOverlay, Stack, UnionMount, kernel_backend, mounted, overlay_available, require_fuse,
    skip_or_fail_in_ci,
};
pub use process::{as_nobody, drop_caches, fd_count, rss_kib, within};
pub use rng::{Rng, pattern};
pub use tree::{Entry, Kind, SnapOpts, Tree, assert_trees_eq, content_hash, list_rel};

/// An environment variable as a number (a test's budget, seed or size), or `default`.
pub fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
