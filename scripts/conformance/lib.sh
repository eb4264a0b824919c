# Shared helpers for the conformance runners (sourced, not executed): tool installation, the
# unionfuse binary, mounts that are always unmounted and daemons that are always reaped.
# shellcheck shell=bash

CONF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# Mount points we made and daemon pids we started; conf_cleanup undoes both.
declare -a CONF_MOUNTS=()
declare -a CONF_PIDS=()
declare -a CONF_TMPFS=()
CONF_TMP=""

conf_log() { printf '%s: %s\n' "${CONF_NAME:-conformance}" "$*" >&2; }

# cargo install --locked NAME@VERSION unless `NAME` is on PATH (cached in ~/.cargo/bin).
conf_install() {
    local name=$1 version=$2
    if command -v "$name" >/dev/null; then
        return 0
    fi
    conf_log "installing $name $version (cargo install --locked)"
    cargo install --locked --quiet "$name" --version "$version"
}

# The unionfuse binary: $UNIONFUSE_BIN, else a fresh `cargo build` (debug, as cargo test uses).
conf_binary() {
    if [[ -n "${UNIONFUSE_BIN:-}" ]]; then
        echo "$UNIONFUSE_BIN"
        return
    fi
    (cd "$CONF_ROOT" && cargo build --quiet --bin unionfuse) >&2
    echo "$CONF_ROOT/target/debug/unionfuse"
}

conf_is_mounted() {
    local mnt
    mnt="$(realpath "$1")"
    awk -v m="$mnt" '$2 == m { found = 1 } END { exit !found }' /proc/mounts
}

# conf_mount_union BIN LOWERS UPPER MNT WORK LOG [extra args]: the daemon runs in the foreground
# as our child, so its pid is ours to reap.
conf_mount_union() {
    local bin=$1 lowers=$2 upper=$3 mnt=$4 work=$5 log=$6
    shift 6
    "$bin" mount "$lowers" "$upper" "$mnt" --workdir "$work" --foreground "$@" >"$log" 2>&1 &
    local pid=$!
    CONF_PIDS+=("$pid")
    CONF_MOUNTS+=("$mnt")
    local i
    for ((i = 0; i < 500; i++)); do
        if conf_is_mounted "$mnt"; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            conf_log "unionfuse exited before mounting $mnt:"
            cat "$log" >&2
            return 1
        fi
        sleep 0.02
    done
    conf_log "unionfuse did not mount $mnt within 10 s"
    return 1
}

# conf_mount_kernel LOWERS UPPER MNT WORK: kernel overlayfs with the reference options.
conf_mount_kernel() {
    local lowers=$1 upper=$2 mnt=$3 work=$4
    CONF_MOUNTS+=("$mnt")
    mount -t overlay overlay \
        -o "lowerdir=$lowers,upperdir=$upper,workdir=$work,redirect_dir=off,index=off,metacopy=off" \
        "$mnt"
}

# Unmount MNT (lazily if busy) and reap every daemon we started that has exited or must.
conf_unmount() {
    local mnt=$1
    if conf_is_mounted "$mnt"; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    conf_reap
}

conf_reap() {
    local pid i
    for pid in "${CONF_PIDS[@]}"; do
        for ((i = 0; i < 250; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.02
        done
        if kill -0 "$pid" 2>/dev/null; then
            conf_log "daemon $pid did not exit after umount; killing it"
            kill -9 "$pid" 2>/dev/null || true
        fi
        wait "$pid" 2>/dev/null || true
    done
    CONF_PIDS=()
}

# EXIT trap: nothing of ours stays mounted or running, the temp dir goes away.
conf_cleanup() {
    local status=$? mnt i
    for ((i = ${#CONF_MOUNTS[@]} - 1; i >= 0; i--)); do
        mnt=${CONF_MOUNTS[$i]}
        if conf_is_mounted "$mnt"; then
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        fi
    done
    conf_reap
    # The tmpfs last: the daemons that had files open on it are gone now.
    for mnt in "${CONF_TMPFS[@]}"; do
        if conf_is_mounted "$mnt"; then
            umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
        fi
    done
    if [[ -n "$CONF_TMP" && -d "$CONF_TMP" && -z "${CONF_KEEP:-}" ]]; then
        rm -rf "$CONF_TMP"
    fi
    exit "$status"
}

# conf_tmpfs DIR SIZE: a tmpfs for the layers (fsync and msync are free there, so the exercisers
# measure unionfuse rather than the disk). Unmounted by conf_cleanup, after the unions on it.
conf_tmpfs() {
    mkdir -p "$1"
    mount -t tmpfs -o "size=$2,mode=0755" "unionfuse-$CONF_NAME" "$1"
    CONF_TMPFS+=("$1")
}

conf_setup() {
    CONF_NAME=$1
    if [[ $EUID -ne 0 ]]; then
        conf_log "must run as root (mounts, kernel overlayfs, user switching)"
        exit 2
    fi
    CONF_TMP="$(mktemp -d "${TMPDIR:-/tmp}/unionfuse-$CONF_NAME.XXXXXX")"
    chmod 0755 "$CONF_TMP" # the dummy users pjdfstest switches to must reach the mount
    trap conf_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
