#!/usr/bin/env bash
# Builds a small layer stack in DIR that shows the union rules. Git can't store char-device
# whiteouts or xattrs, so the stack is made here rather than checked in. The format is kernel
# overlayfs's: whiteout = char device 0/0, opaque dir = xattr overlay.opaque=y (trusted.* as root,
# user.* otherwise, as overlayfs's userxattr mode).
#
# Usage: scripts/sample-stack.sh [--force] DIR
#   DIR/lower2   base layer: etc/, bin/, usr/share/doc/, data/
#   DIR/lower1   top lower: new etc/hostname, whiteout of etc/motd, opaque data/, new files
#   DIR/upper    empty;  DIR/work  empty (same filesystem as upper);  DIR/mnt  empty mountpoint
# Mount:  unionfuse mount DIR/lower1:DIR/lower2 DIR/upper DIR/mnt --workdir DIR/work
set -euo pipefail

usage() { echo "usage: $0 [--force] DIR" >&2; exit 2; }
die() { echo "sample-stack.sh: $*" >&2; exit 1; }

force=false
dir=""
for arg in "$@"; do
    case "$arg" in
        --force) force=true ;;
        -h | --help) usage ;;
        -*) usage ;;
        *) [[ -z "$dir" ]] || usage; dir=$arg ;;
    esac
done
[[ -n "$dir" ]] || usage

for tool in mknod setfattr; do
    command -v "$tool" >/dev/null || die "$tool not found (install the attr and coreutils packages)"
done

if [[ -e "$dir" && ! -d "$dir" ]]; then
    die "$dir exists and is not a directory"
fi
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"

if [[ -n "$(ls -A "$dir")" ]]; then
    $force || die "$dir is not empty (use --force to rebuild the stack in it)"
    if mountpoint -q "$dir/mnt" 2>/dev/null; then
        die "$dir/mnt is mounted; unmount it first (fusermount3 -u $dir/mnt)"
    fi
    for sub in lower1 lower2 upper work mnt; do
        rm -rf "${dir:?}/$sub"
    done
    [[ -z "$(ls -A "$dir")" ]] || die "$dir holds files other than a sample stack; not removing them"
fi

# Remove a half-built stack if any step fails, so a rerun starts clean.
done_ok=false
cleanup() {
    if ! $done_ok; then
        for sub in lower1 lower2 upper work mnt; do
            rm -rf "${dir:?}/$sub"
        done
    fi
}
trap cleanup EXIT

if [[ $EUID -eq 0 ]]; then
    xattr_ns=trusted
else
    xattr_ns=user
fi

put() { # put FILE MODE CONTENT...
    local file=$1 mode=$2
    shift 2
    mkdir -p "$(dirname "$file")"
    printf '%s\n' "$@" >"$file"
    chmod "$mode" "$file"
}

# --- lower2: the base layer -------------------------------------------------------------------
l2="$dir/lower2"
put "$l2/etc/os-release" 0644 'NAME="unionfuse sample"' 'ID=sample' 'VERSION_ID=1'
put "$l2/etc/hostname" 0644 'base'
put "$l2/etc/motd" 0644 'this file is deleted by a whiteout in lower1'
put "$l2/etc/shadow" 0600 'root:*:19000:0:99999:7:::'
put "$l2/bin/hello" 0755 '#!/bin/sh' 'echo "hello from lower2"'
put "$l2/bin/greet" 0755 '#!/bin/sh' 'echo "greetings from lower2"'
ln -s hello "$l2/bin/hi"
put "$l2/usr/share/doc/sample/README" 0644 'documentation from the base layer'
put "$l2/data/a.txt" 0644 'a from lower2 (hidden: data/ is opaque in lower1)'
put "$l2/data/b.txt" 0644 'b from lower2 (hidden: data/ is opaque in lower1)'
put "$l2/data/sub/c.txt" 0644 'c from lower2 (hidden: data/ is opaque in lower1)'
# Two names for one inode: the merged view shows one st_ino and st_nlink 2.
ln "$l2/usr/share/doc/sample/README" "$l2/usr/share/doc/sample/README.link"
# A user xattr that copy-up must carry to the upper (skipped if the filesystem has none).
setfattr -n user.sample.origin -v lower2 "$l2/etc/os-release" 2>/dev/null ||
    echo "note: user xattrs unsupported on $dir; skipping user.sample.origin" >&2

# --- lower1: overrides, a whiteout, an opaque directory ---------------------------------------
l1="$dir/lower1"
put "$l1/etc/hostname" 0644 'sample'
# Whiteout: hides lower2's etc/motd. mknod of 0/0 is allowed without root since Linux 5.8.
mknod "$l1/etc/motd" c 0 0
put "$l1/bin/tool" 0755 '#!/bin/sh' 'echo "tool from lower1"'
mkdir -p "$l1/usr/share/doc/sample"
put "$l1/usr/share/doc/sample/CHANGES" 0644 'added by lower1; merges with lower2 README'
# Opaque: lower1's data/ replaces lower2's data/ instead of merging with it.
put "$l1/data/new.txt" 0644 'the only file in data/: lower1 data/ is opaque'
setfattr -n "$xattr_ns.overlay.opaque" -v y "$l1/data"

# --- upper, work, mountpoint ------------------------------------------------------------------
mkdir -p "$dir/upper" "$dir/work" "$dir/mnt"

# Fixed times so listings are reproducible (-h: the symlink itself, not its target).
find "$dir/lower1" "$dir/lower2" -exec touch -h -d '2024-01-01 00:00:00 UTC' {} +

done_ok=true
echo "sample stack in $dir (opaque xattr: $xattr_ns.overlay.opaque)"
echo "mount it: unionfuse mount $dir/lower1:$dir/lower2 $dir/upper $dir/mnt --workdir $dir/work"
