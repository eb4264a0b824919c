#!/usr/bin/env bash
# unionfuse benchmark: ext4, kernel overlayfs, fuse-overlayfs 1.10/2.0 and unionfuse
# (passthrough and not), interleaved, as ratios; then the rootless pass: kernel overlayfs
# (userxattr), both fuse-overlayfs and unionfuse in a user namespace of an ordinary user mapped
# like rootless podman. See docs/performance.md.
#
#   benches/run.sh [--quick|--tiny] [--pin] [--out DIR] [--rev REV] [-- bench.py options]
#
# --quick  small sizes, ~20 minutes for both passes (run it often); default is the full run
# --tiny   minimal sizes, 1 repetition: checks that the harness works, measures nothing
# --pin    run the whole comparison a second time under taskset -c 0 and report both
# --out    where results.json, table.md and ratios-*.svg go (default benches/results/DATE)
# --rev    benchmark that commit (git archive into a cache dir, built there) instead of the
#          working tree, e.g. --rev HEAD while src/ is mid-edit
# Extra options after `--` go to bench.py (--only find,ls  --systems overlay,uf  --reps N
# --rss-files N  --passes root|rootless). Needs root. Leaves no mount and no temp dir behind,
# even on Ctrl-C. The rootless pass runs as the user `ufbench` (UFBENCH_USER), created with a
# subordinate id range when missing. The package install's Debian layers are built once into
# ~/.cache/unionfuse-bench/apt-bookworm (debootstrap; UFBENCH_DEBIAN_MIRROR to pick a mirror).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
quick=()
pin=()
out=""
rev=""
extra=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=(--quick) ;;
        --tiny) quick=(--tiny) ;;
        --pin) pin=(--pin) ;;
        --out) out=${2:?--out needs a directory}; shift ;;
        --out=*) out=${1#--out=} ;;
        --rev) rev=${2:?--rev needs a commit}; shift ;;
        -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
        --) shift; extra=("$@"); break ;;
        *) echo "run.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[[ $(id -u) -eq 0 ]] || { echo "run.sh: needs root (mounts, drop_caches)" >&2; exit 2; }
out=${out:-$repo/benches/results/$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out"
out=$(cd "$out" && pwd)

tmp=""
fuse_mode=""
scratch_mnt=""
scratch_dev=""
scratch_img=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [[ -z $fuse_mode ]] || chmod "$fuse_mode" /dev/fuse || true
    if [[ -n $tmp && -d $tmp ]]; then
        # unmount everything under the scratch dir, deepest first; abort dead FUSE connections
        local mnt dev
        while read -r dev mnt; do
            if ! umount "$mnt" 2>/dev/null; then
                if [[ -e /sys/fs/fuse/connections/${dev#*:}/abort ]]; then
                    echo 1 > "/sys/fs/fuse/connections/${dev#*:}/abort" || true
                fi
                umount -l "$mnt" 2>/dev/null || true
            fi
            echo "cleanup: unmounted $mnt" >&2
        done < <(awk -v t="$tmp/" 'index($5, t) == 1 { print $3, $5 }' /proc/self/mountinfo | sort -k2 -r)
        # daemons still holding a mountpoint under it
        local pid
        for pid in $(pgrep -f -- "$tmp/" || true); do
            [[ $pid == "$$" ]] || kill -KILL "$pid" 2>/dev/null || true
        done
        if awk -v t="$tmp/" 'index($5, t) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
            echo "cleanup: mounts remain under $tmp; not removing it" >&2
        else
            rm -rf --one-file-system "$tmp"
        fi
    fi
    if [[ -n $scratch_mnt ]]; then
        umount "$scratch_mnt" 2>/dev/null && rmdir "$scratch_mnt" \
            || echo "cleanup: $scratch_mnt still mounted" >&2
    fi
    [[ -z $scratch_dev ]] || losetup -d "$scratch_dev" 2>/dev/null || true
    [[ -z $scratch_img ]] || rm -f "$scratch_img"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log() { echo "run.sh: $*" >&2; }

# peers and tools (installed when missing; a failed install only skips that peer)
apt_install() {
    command -v apt-get >/dev/null || return 1
    apt-get install -y -qq "$@" >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }
}
command -v fio >/dev/null || apt_install fio || log "fio unavailable: fio workloads skipped"
[[ -x /usr/bin/fuse-overlayfs ]] || apt_install fuse-overlayfs || log "fuse-overlayfs 1.10 unavailable"
command -v fusermount3 >/dev/null || apt_install fuse3 || true
command -v git >/dev/null || apt_install git || log "git unavailable: git workloads fail"
command -v make >/dev/null && command -v cc >/dev/null || apt_install make gcc \
    || log "make/gcc unavailable: compile-c fails"
command -v newuidmap >/dev/null || apt_install uidmap || log "newuidmap unavailable: no rootless pass"
command -v bwrap >/dev/null || apt_install bubblewrap || log "bwrap unavailable: package install skipped"
command -v debootstrap >/dev/null || apt_install debootstrap || log "debootstrap unavailable: package install skipped"

# The rootless pass's user: an ordinary user with 65536 subordinate uids and gids (after the
# highest range in use), as rootless podman needs them.
bench_user=${UFBENCH_USER:-ufbench}
ensure_subids() { # FILE
    local f=$1 end
    grep -q "^$bench_user:[0-9]*:[0-9]*$" "$f" 2>/dev/null && return 0
    end=$(awk -F: 'NF == 3 { e = $2 + $3; if (e > m) m = e } END { print (m > 100000 ? m : 100000) }' "$f" 2>/dev/null || echo 100000)
    echo "$bench_user:$end:65536" >> "$f"
    log "gave $bench_user the subordinate range $end:65536 in $f"
}
user_args=()
if command -v newuidmap >/dev/null && command -v newgidmap >/dev/null && command -v setpriv >/dev/null; then
    if ! id -u "$bench_user" >/dev/null 2>&1; then
        useradd -M -s /usr/sbin/nologin "$bench_user" && log "created user $bench_user"
    fi
    if id -u "$bench_user" >/dev/null 2>&1; then
        ensure_subids /etc/subuid
        ensure_subids /etc/subgid
        user_args=(--bench-user "$bench_user")
        # FUSE mounts in a user namespace open /dev/fuse as the user
        mode=$(stat -c %a /dev/fuse)
        if [[ $((8#$mode & 8#006)) -ne 6 ]]; then
            fuse_mode=$mode
            chmod o+rw /dev/fuse
        fi
    fi
else
    log "newuidmap/newgidmap/setpriv missing: no rootless pass"
fi

fo2_root=${UFBENCH_FO2_ROOT:-${XDG_CACHE_HOME:-$HOME/.cache}/unionfuse-bench/fo2}
fo2=$fo2_root/bin/fuse-overlayfs
if [[ ! -x $fo2 ]] && command -v cargo >/dev/null; then
    log "building fuse-overlayfs 2.0 into $fo2_root (once; log in $fo2_root.log)"
    mkdir -p "$(dirname "$fo2_root")"
    cargo install fuse-overlayfs --locked --root "$fo2_root" >"$fo2_root.log" 2>&1 \
        || log "cargo install fuse-overlayfs failed: fuse-overlayfs 2.0 skipped (see $fo2_root.log)"
fi

cache=${XDG_CACHE_HOME:-$HOME/.cache}/unionfuse-bench
if [[ -n $rev ]]; then
    commit=$(git -C "$repo" rev-parse --verify "$rev^{commit}")
    src=$cache/src-$commit
    if [[ ! -d $src ]]; then
        mkdir -p "$src.part"
        git -C "$repo" archive "$commit" | tar -x -C "$src.part"
        mv "$src.part" "$src"
    fi
    log "cargo build --release of $commit (in $src)"
    (cd "$src" && CARGO_TARGET_DIR=$cache/target cargo build --release --quiet)
    bin=$cache/target/release/unionfuse
    commit_args=(--commit "$commit")
else
    log "cargo build --release (working tree)"
    (cd "$repo" && cargo build --release --quiet) \
        || { log "the working tree does not build; try --rev HEAD"; exit 1; }
    bin=$repo/target/release/unionfuse
    commit_args=()
fi

# The layers, uppers and mounts live on an ext4 made for the run: with a journal, on a loop
# device with direct I/O (each block cached once, and cold reads still reach the disk). ext4
# without a journal, as some VMs' root filesystems are, skips the inodes freed in the last
# minute when it allocates one and reads each one's inode table block to see that: an untar
# right after the previous repetition's rm -rf then costs 0.5-1 ms more per file, a cost that
# grows run by run and drowns the union's (docs/performance.md, "The scratch filesystem").
# UFBENCH_SCRATCH=0 keeps everything on /tmp's filesystem.
scratch_base=/tmp
if [[ ${UFBENCH_SCRATCH:-1} != 0 ]] && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null; then
    scratch_img=$(mktemp /var/tmp/ufbench-fs.XXXXXX)
    scratch_mnt=$(mktemp -d /tmp/ufbench-fs.XXXXXX)
    truncate -s "${UFBENCH_SCRATCH_SIZE:-40G}" "$scratch_img"
    # inode tables and journal written now, not by ext4lazyinit in the background of the run
    mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 "$scratch_img"
    scratch_dev=$(losetup --find --show --direct-io=on "$scratch_img")
    mount "$scratch_dev" "$scratch_mnt"
    scratch_base=$scratch_mnt
    log "scratch filesystem: ext4 with a journal on $scratch_dev ($scratch_img) at $scratch_mnt"
else
    log "scratch filesystem: none (UFBENCH_SCRATCH=0 or no mkfs.ext4/losetup): layers on /tmp"
fi
tmp=$(mktemp -d "$scratch_base/ufbench.XXXXXX")
python=${PYTHON:-python3}
log "results -> $out"
"$python" "$here/bench.py" "${quick[@]}" "${pin[@]}" --out "$out" --tmp "$tmp" \
    --bin "$bin" --fo2 "$fo2" --repo "$repo" --cache "$cache" "${user_args[@]}" "${commit_args[@]}" "${extra[@]}"
log "table: $out/table.md"
