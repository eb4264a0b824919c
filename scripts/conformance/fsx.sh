#!/usr/bin/env bash
# fsx (crates.io `fsx`, the Rust port of the File System eXerciser) against live unionfuse mounts.
#
# For each mode (FUSE passthrough, the default as root; `-o nopassthrough`; and
# `-o nopassthrough,noopen`, where the kernel opens files without asking) one mount runs
# three exercisers at once, in a merged directory:
#   lower  - a file that starts in a lower layer: fsx's open(O_RDWR|O_TRUNC) copies it up while
#            the other exercisers are already running;
#   new    - a file created through the mount;
#   block  - a lower file opened without O_TRUNC (fsx's block mode): its whole data is copied up
#            at open (under noopen: at its first write), then overwritten and verified.
# The layers live on a tmpfs, so fsync/msync cost nothing and the ops test unionfuse, not the disk.
# Reads and writes go through pread/pwrite, mmap (read and write, msync, invalidate), truncate,
# fallocate, punch hole, copy_file_range, sendfile, fsync. Any miscompare fails the run; the
# lowers are checksummed before and after and must not change.
#
# Usage: scripts/conformance/fsx.sh            (as root; CI runs this)
# Env:   FSX_OPS=N       operations per exerciser file (default 100000; block gets N/5)
#        FSX_SEED=N      base seed (default fixed, so a CI failure reproduces)
#        FSX_MODES="passthrough nopassthrough noopen"
#        FSX_SUMMARY=F   append the summary line to F
#        CONF_MODE=userns  as root of a user namespace mapped as rootless podman maps it
#                        (lib.sh; modes nopassthrough and noopen only: no passthrough there)
#        UNIONFUSE_BIN   the binary to test (default: cargo build, target/debug/unionfuse)
#        CONF_KEEP=1     keep the temp dir (layers, logs, fsx artifacts) for inspection
# The soak (millions of operations, not in CI): scripts/conformance/fsx-soak.sh
set -euo pipefail
# shellcheck source=scripts/conformance/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_setup fsx

OPS="${FSX_OPS:-100000}"
SEED="${FSX_SEED:-20240601}"
MODES="${FSX_MODES:-passthrough nopassthrough noopen}"
[[ "${CONF_MODE:-root}" != userns ]] || MODES="${FSX_MODES:-nopassthrough noopen}"
BLOCK_OPS=$((OPS / 5))

conf_install fsx 0.3.2
BIN="$(conf_binary)"
# CONF_MODE=userns: as root of a user namespace (see lib.sh), where passthrough is not offered.
conf_userns_reexec "$0" fsx "$@"

cat >"$CONF_TMP/fsx.toml" <<'TOML'
flen = 1048576
[opsize]
# min 1: fsx 0.3.2 can draw a 0-byte posix_fallocate, which every file system refuses (EINVAL) and
# fsx then takes for "posix_fallocate not supported" and exits 1 (seen on plain tmpfs too).
min = 1
max = 65536
[weights]
close_open = 1
read = 10
write = 10
mapread = 10
mapwrite = 10
invalidate = 1
truncate = 5
fsync = 1
fdatasync = 1
posix_fallocate = 2
punch_hole = 2
copy_file_range = 2
sendfile = 2
posix_fadvise = 1
TOML
cat >"$CONF_TMP/fsx-block.toml" <<'TOML'
blockmode = true
nosizechecks = true
[weights]
read = 10
write = 10
mapread = 10
mapwrite = 10
truncate = 0
invalidate = 1
fsync = 1
copy_file_range = 2
TOML

total_ops=0
failures=0
declare -a failed_runs=()

run_mode() {
    local mode=$1 dir="$CONF_TMP/$1"
    conf_tmpfs "$dir" 256m
    mkdir -p "$dir"/{lower0,lower1,upper,work,mnt,art}
    mkdir -p "$dir/lower1/d" "$dir/lower0/d"
    # The test directory is merged: it exists in both lowers, with content.
    head -c 300000 /dev/urandom >"$dir/lower1/d/lower"
    head -c 1048576 /dev/urandom >"$dir/lower1/d/block"
    echo "from lower0" >"$dir/lower0/d/other"
    local before after
    before="$(cd "$dir" && find lower0 lower1 -type f -exec sha256sum {} + | sort)"
    local extra=()
    [[ "$mode" == nopassthrough ]] && extra=(-o nopassthrough)
    [[ "$mode" == noopen ]] && extra=(-o nopassthrough,noopen)
    conf_mount_union "$BIN" "$dir/lower0:$dir/lower1" "$dir/upper" "$dir/mnt" "$dir/work" \
        "$dir/unionfuse.log" "${extra[@]}"
    local pids=() names=() seed=$SEED
    local name ops conf
    for name in lower new block; do
        ops=$OPS
        conf="$CONF_TMP/fsx.toml"
        if [[ "$name" == block ]]; then
            ops=$BLOCK_OPS
            conf="$CONF_TMP/fsx-block.toml"
        fi
        mkdir -p "$dir/art/$name"
        RUST_LOG=warn fsx -q -N "$ops" -S "$seed" -f "$conf" -P "$dir/art/$name" \
            "$dir/mnt/d/$name" >"$dir/fsx-$name.log" 2>&1 &
        pids+=("$!")
        names+=("$name")
        seed=$((seed + 1))
        sleep 0.2 # the next copy-up starts while this exerciser is running
    done
    local i rc
    for i in "${!pids[@]}"; do
        rc=0
        wait "${pids[$i]}" || rc=$?
        name=${names[$i]}
        ops=$OPS
        [[ "$name" == block ]] && ops=$BLOCK_OPS
        if [[ $rc -eq 0 ]]; then
            total_ops=$((total_ops + ops))
        else
            failures=$((failures + 1))
            failed_runs+=("$mode/$name (exit $rc)")
            conf_log "FAILED: $mode/$name (exit $rc); last lines of its log:"
            tail -n 40 "$dir/fsx-$name.log" >&2
        fi
    done
    # The merged view matches the upper's copies, which match what fsx left.
    if [[ ! -f "$dir/upper/d/lower" || ! -f "$dir/upper/d/block" || ! -f "$dir/upper/d/new" ]]; then
        failures=$((failures + 1))
        failed_runs+=("$mode: a file is missing from the upper")
    fi
    conf_unmount "$dir/mnt"
    after="$(cd "$dir" && find lower0 lower1 -type f -exec sha256sum {} + | sort)"
    if [[ "$before" != "$after" ]]; then
        failures=$((failures + 1))
        failed_runs+=("$mode: a lower layer changed")
    fi
}

start=$SECONDS
for mode in $MODES; do
    conf_log "mode $mode: $OPS ops on a lower file and a new file, $BLOCK_OPS in block mode"
    run_mode "$mode"
done

line="fsx: $total_ops ops, $failures failures (modes: ${MODES// /, }; seed $SEED; $((SECONDS - start))s)"
echo "$line"
[[ -n "${FSX_SUMMARY:-}" ]] && echo "$line" >>"$FSX_SUMMARY"
if [[ $failures -ne 0 ]]; then
    printf '  failed: %s\n' "${failed_runs[@]}" >&2
    exit 1
fi
