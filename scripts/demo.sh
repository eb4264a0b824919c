#!/usr/bin/env bash
# Mounts the sample layer stack with unionfuse and shows the union rules at work: the merged view,
# a copy-up, a whiteout. Builds the release binary first. Always unmounts, even on failure.
#
# Usage: scripts/demo.sh [--keep]     (--keep: leave the stack's temp dir for a look afterwards)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

keep=false
case "${1:-}" in
    --keep) keep=true ;;
    "") ;;
    *) echo "usage: $0 [--keep]" >&2; exit 2 ;;
esac

dir="$(mktemp -d "${TMPDIR:-/tmp}/unionfuse-demo.XXXXXX")"
mnt="$dir/mnt"

cleanup() {
    local status=$?
    if mountpoint -q "$mnt" 2>/dev/null; then
        fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
    fi
    if $keep; then
        echo "stack kept in $dir"
    else
        rm -rf "$dir"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Prints the command, then runs it: the demo's output reads as a transcript.
show() {
    printf '\n$ %s\n' "$*"
    "$@"
}
say() { printf '\n# %s\n' "$*"; }

[[ -c /dev/fuse ]] || { echo "demo.sh: /dev/fuse is missing; FUSE is needed" >&2; exit 1; }
command -v fusermount3 >/dev/null || { echo "demo.sh: fusermount3 missing (apt-get install fuse3)" >&2; exit 1; }

scripts/sample-stack.sh "$dir"
cargo build --release --quiet
bin="$PWD/target/release/unionfuse"

say "mount two lowers (lower1 on top of lower2), an empty upper and a work dir"
show "$bin" mount "$dir/lower1:$dir/lower2" "$dir/upper" "$mnt" --workdir "$dir/work"
cd "$dir"

say "the merged view: lower1 and lower2 merge; etc/motd is whited out by lower1; data/ is opaque"
show ls -la mnt mnt/etc mnt/data
show cat mnt/etc/hostname

say "copy-up: appending to a lower file copies it to the upper first; the lower is untouched"
show stat -c '%n ino=%i size=%s' mnt/etc/os-release
show sh -c 'echo "PRETTY_NAME=\"changed through unionfuse\"" >> mnt/etc/os-release'
show stat -c '%n ino=%i size=%s' mnt/etc/os-release
show ls -l upper/etc/os-release lower2/etc/os-release
show cat upper/etc/os-release

say "delete: removing a lower file leaves a whiteout (char device 0/0) in the upper"
show rm mnt/bin/greet
show ls -l mnt/bin upper/bin

say "unmount"
show fusermount3 -u "$mnt"
show ls -lR upper
