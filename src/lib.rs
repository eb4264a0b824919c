//! unionfuse: a union filesystem in userspace with kernel overlayfs's rules and on-disk format.
//! See docs/architecture.md for the module map and data flow.

// `unsafe` lives only in the syscall wrappers: `sys` and `runtime::sys`.
#![deny(unsafe_code)]

pub mod cli;
pub mod compat;
pub mod config;
pub mod copyup;
pub mod dirindex;
pub mod error;
pub mod fuse;
pub mod handle;
pub mod idmap;
pub mod image;
pub mod inode;
pub mod layer;
pub mod listings;
pub mod lookup;
pub mod mount;
pub mod override_stat;
pub mod pool;
pub mod readdir;
pub mod runtime;
#[allow(unsafe_code)]
pub mod sys;
pub mod union;
pub mod whiteout;
