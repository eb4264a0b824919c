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

# conf_mount_kernel LOWERS UPPER MNT WORK: kernel overlayfs with the reference options. In a
# user namespace: `userxattr` (trusted.* is out of reach), which implies redirect_dir=nofollow
# and refuses "off" (neither creates redirects).
conf_mount_kernel() {
    local lowers=$1 upper=$2 mnt=$3 work=$4 opts=redirect_dir=off
    [[ "${CONF_MODE:-root}" != userns ]] || opts=userxattr
    CONF_MOUNTS+=("$mnt")
    mount -t overlay overlay \
        -o "lowerdir=$lowers,upperdir=$upper,workdir=$work,$opts,index=off,metacopy=off" \
        "$mnt"
}

# With CONF_MODE=userns (and not yet inside): run SCRIPT again, with the same arguments, as root
# of a user namespace mapped as rootless podman maps it (0 = uid 4242, 1..65535 = its
# /etc/subuid range, through newuidmap/newgidmap) with its own mount namespace, then exit
# with its status. TOOLS (on PATH here) and the unionfuse binary are copied where that user
# reaches them; the summary lines come back prefixed "mode userns: ".
# Usage: conf_userns_reexec SCRIPT "TOOL..." ARGS...
CONF_MODE_UID=4242
conf_userns_reexec() {
    [[ "${CONF_MODE:-root}" == userns && -z "${CONF_INSIDE:-}" ]] || return 0
    local script tools=$2 tool f rc=0 fuse_mode
    script="$(realpath "$1")"
    shift 2
    for tool in setpriv unshare newuidmap newgidmap; do
        command -v "$tool" >/dev/null || { conf_log "$tool is missing (util-linux, uidmap)"; exit 2; }
    done
    getent passwd "$CONF_MODE_UID" >/dev/null ||
        useradd -M -s /usr/sbin/nologin -u "$CONF_MODE_UID" podtest
    local user
    user="$(getent passwd "$CONF_MODE_UID" | cut -d: -f1)"
    for f in /etc/subuid /etc/subgid; do
        grep -q "^$user:" "$f" 2>/dev/null || echo "$user:100000:65536" >>"$f"
    done
    mkdir -p "$CONF_TMP/bin" "$CONF_TMP/inner"
    for tool in $tools; do
        cp "$(command -v "$tool")" "$CONF_TMP/bin/"
    done
    cp "$BIN" "$CONF_TMP/bin/unionfuse"
    : >"$CONF_TMP/summary"
    chown -R "$CONF_MODE_UID:$CONF_MODE_UID" "$CONF_TMP/inner" "$CONF_TMP/summary"
    chmod -R a+rX "$CONF_TMP/bin"
    # The daemon opens /dev/fuse as that user: open it to users meanwhile (as distributions
    # have it), under the lock the rootless tests take (tests/common/rootless.rs).
    exec 9>/tmp/unionfuse-podman-rootless.lock
    flock 9
    fuse_mode="$(stat -c %a /dev/fuse)"
    chmod 0666 /dev/fuse
    conf_log "running as root of a user namespace (uid $CONF_MODE_UID, subordinate ids)"
    (cd / && setpriv --reuid="$CONF_MODE_UID" --regid="$CONF_MODE_UID" --clear-groups \
        unshare --user --map-auto --map-root-user --mount --propagation private \
        env CONF_INSIDE=1 CONF_MODE=userns TMPDIR="$CONF_TMP/inner" PATH="$CONF_TMP/bin:$PATH" \
        UNIONFUSE_BIN="$CONF_TMP/bin/unionfuse" PJDFSTEST_SUMMARY="$CONF_TMP/summary" \
        FSX_SUMMARY="$CONF_TMP/summary" bash "$script" "$@" 9>&-) || rc=$?
    chmod "$fuse_mode" /dev/fuse
    exec 9>&-
    for f in PJDFSTEST_SUMMARY FSX_SUMMARY; do
        if [[ -n "${!f:-}" ]]; then
            sed 's/^/mode userns: /' "$CONF_TMP/summary" >>"${!f}"
            break
        fi
    done
    exit "$rc"
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
    # Inside a user namespace the mount and the dummy users must reach it too.
    [[ -z "${CONF_INSIDE:-}" ]] || chmod 0755 "${TMPDIR:-/tmp}"
    chmod 0755 "$CONF_TMP" # the dummy users pjdfstest switches to must reach the mount
    trap conf_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
