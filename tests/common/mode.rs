//! The mode a test binary runs in (`UNIONFUSE_TEST_MODE`, set by scripts/modes.sh):
//!
//! - `root`: root of the initial user namespace (the default);
//! - `user`: an ordinary user in the initial namespace: FUSE mounts go through fusermount3,
//!   layers use `user.overlay.*`, no passthrough, no kernel overlay to compare with;
//! - `userns`: root of a user namespace mapped as rootless podman maps it (0 is the user,
//!   1..65536 a subordinate range), with its own mount namespace: FUSE and kernel overlay
//!   (`userxattr`) mount there, layers use `user.overlay.*`.
//!
//! Unset, the mode is read from the process: not uid 0 is `user`, uid 0 without the full
//! identity map is `userns`.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Root,
    User,
    Userns,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Root => "root",
            Mode::User => "user",
            Mode::Userns => "userns",
        }
    }
}

pub fn mode() -> Mode {
    match std::env::var("UNIONFUSE_TEST_MODE").as_deref() {
        Ok("root") => Mode::Root,
        Ok("user") => Mode::User,
        Ok("userns") => Mode::Userns,
        Ok(other) if !other.is_empty() => {
            panic!("UNIONFUSE_TEST_MODE={other}: expected root, user or userns")
        }
        _ if super::sys::euid() != 0 => Mode::User,
        _ if initial_uid_map() => Mode::Root,
        _ => Mode::Userns,
    }
}

/// Does this process see the initial namespace's identity map?
fn initial_uid_map() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
}

/// The overlay xattr namespace of layers built by this test: `trusted.overlay.` as root of
/// the initial namespace, `user.overlay.` otherwise (trusted.* needs CAP_SYS_ADMIN there;
/// unionfuse and kernel overlay then use `userxattr`).
pub fn overlay_prefix() -> &'static str {
    if mode() == Mode::Root {
        "trusted.overlay."
    } else {
        "user.overlay."
    }
}

/// True in the modes where this test's `what` is possible; elsewhere prints why it is skipped
/// (a property of the mode, not of the machine, so never a CI failure).
#[track_caller]
pub fn runs_in(modes: &[Mode], what: &str) -> bool {
    let m = mode();
    if modes.contains(&m) {
        return true;
    }
    note_skip(&format!("skipping in mode {}: {what}", m.name()));
    false
}

/// Print a skip reason, and append it (with the test's name) to `UNIONFUSE_SKIP_LOG` when set:
/// scripts/modes.sh counts the skips per mode from it.
pub fn note_skip(reason: &str) {
    eprintln!("{reason}");
    if let Some(path) = std::env::var_os("UNIONFUSE_SKIP_LOG") {
        use std::io::Write;
        let suite = std::env::args()
            .next()
            .and_then(|a| Path::new(&a).file_name()?.to_str().map(str::to_owned))
            .map(|f| f.rsplit_once('-').map_or(f.clone(), |(s, _)| s.to_owned()))
            .unwrap_or_default();
        let test = std::thread::current().name().unwrap_or("?").to_owned();
        // One write of the whole line: O_APPEND keeps parallel tests' lines apart.
        let line = format!("{suite}::{test}: {reason}\n");
        if let Ok(mut f) = std::fs::OpenOptions::new().append(true).open(path) {
            let _ = f.write_all(line.as_bytes());
        }
    }
}

/// Skips (with `why`) outside root of the initial namespace.
#[track_caller]
pub fn needs_initial_root(why: &str) -> bool {
    runs_in(
        &[Mode::Root],
        &format!("needs root of the initial namespace: {why}"),
    )
}

/// True where this test can give files other owners (root of the initial namespace, or of a
/// user namespace, within its map); an ordinary user skips, saying so.
#[track_caller]
pub fn can_chown() -> bool {
    runs_in(
        &[Mode::Root, Mode::Userns],
        "builds layers with files of other owners (chown needs CAP_CHOWN)",
    )
}

/// Can this process open /dev/fuse itself (userns mode, or root)?
pub fn dev_fuse_usable() -> bool {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(Path::new("/dev/fuse"))
        .is_ok()
}

/// Does file data go through the kernel's writeback cache on this test's mounts? It does
/// whenever FUSE passthrough is off (every mode but root, or `UNIONFUSE_TEST_OPTS=nopassthrough`)
/// unless the options turn it off.
pub fn writeback_cache() -> bool {
    (mode() != Mode::Root || test_opt("nopassthrough")) && !test_opt("nowriteback")
}

/// Is `o` one of the options in `UNIONFUSE_TEST_OPTS`?
fn test_opt(o: &str) -> bool {
    let opts = std::env::var("UNIONFUSE_TEST_OPTS").unwrap_or_default();
    opts.split(',').any(|x| x == o)
}

/// Are files that are only in a lower passed through to the lower file on this test's mounts
/// (root of the initial namespace, passthrough and lower passthrough not turned off)? Readers
/// that opened one then keep its old data across a copy-up (docs/semantics.md, D17).
pub fn lower_passthrough() -> bool {
    mode() == Mode::Root
        && !super::mount::kernel_backend()
        && !test_opt("nopassthrough")
        && !test_opt("nolowerpassthrough")
}
