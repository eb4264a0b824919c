#!/usr/bin/env bash
# The mounted suites in the unprivileged modes (tests/common/mode.rs):
#   user:   an ordinary user (uid 4242) in the initial namespace: FUSE through fusermount3,
#           user.overlay.* xattrs, no passthrough, no kernel overlay;
#   userns: root of a user namespace mapped as rootless podman maps it (0 = uid 4242,
#           1..65535 = its /etc/subuid range, through newuidmap/newgidmap), with its own mount
#           namespace; kernel overlay (userxattr) is the reference there.
# The test binaries are built once (as the caller, normally root) and run as that user. A test
# that cannot apply in a mode prints why; those lines are counted per mode. Mode root is
# scripts/test.sh's own `cargo test`.
#
# Usage: scripts/modes.sh [MODE...]      (default: user userns); must run as root.
# Env:   MODES_SUITES="a b"   only these test binaries
#        MODES_KEEP=1         keep the logs (each suite's output per mode)
#        MODES_ARGS="filter"  extra arguments for the test binaries (a test name filter)
#        MODES_SUMMARY=FILE   append one count line per mode (scripts/test.sh's summary)
#        MODES_TIMEOUT=15m    limit per test binary and mode
#        CI=true              a test that cannot run for a reason of the machine fails
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

MODE_UID=4242
MODE_NAME=podtest
SUITES=(mount_copy_up mount_files mount_lifecycle mount_lookup mount_readonly mount_remove
    mount_rename mount_xattrs core_rules differential concurrency hostile permissions redirect)
# MODES_SUITES="differential hostile": only those.
[[ -z "${MODES_SUITES:-}" ]] || read -r -a SUITES <<<"$MODES_SUITES"
TIMEOUT="${MODES_TIMEOUT:-15m}"
modes=("$@")
[[ ${#modes[@]} -gt 0 ]] || modes=(user userns)

die() { printf 'modes.sh: %s\n' "$*" >&2; exit 1; }
[[ $EUID -eq 0 ]] || die "must run as root (it sets up the user, its subordinate ids and /dev/fuse)"
for bin in setpriv unshare newuidmap newgidmap fusermount3 jq; do
    command -v "$bin" >/dev/null || die "$bin is missing (packages util-linux, uidmap, fuse3, jq)"
done

# The user and its subordinate range (as tests/common/rootless.rs sets them up).
if ! getent passwd "$MODE_UID" >/dev/null; then
    useradd -M -s /usr/sbin/nologin -u "$MODE_UID" "$MODE_NAME"
fi
user="$(getent passwd "$MODE_UID" | cut -d: -f1)"
for f in /etc/subuid /etc/subgid; do
    grep -q "^$user:" "$f" 2>/dev/null || echo "$user:100000:65536" >>"$f"
done

# /dev/fuse's mode is machine-wide: hold the lock the rootless tests take before changing it
# (tests/common/rootless.rs), so none of them restores it under us.
exec 9>/tmp/unionfuse-podman-rootless.lock
flock 9
base="$(mktemp -d /tmp/unionfuse-modes.XXXXXX)"
fuse_mode="$(stat -c %a /dev/fuse)"
cleanup() {
    chmod "$fuse_mode" /dev/fuse
    if [[ -n "${MODES_KEEP:-}" ]]; then
        echo "logs kept in $base"
    else
        rm -rf "$base" 2>/dev/null || true
    fi
}
trap cleanup EXIT
# Distributions make /dev/fuse 0666 (udev); the daemon of an ordinary user opens it itself.
chmod 0666 /dev/fuse
chmod 0755 "$base"

echo "building the test binaries"
declare -A exe=()
while read -r name path; do
    exe[$name]=$path
done < <(cargo test --features fault-injection --no-run --message-format=json 2>/dev/null |
    jq -r 'select(.reason == "compiler-artifact" and .executable != null
                  and .target.kind == ["test"]) | "\(.target.name) \(.executable)"')
unionfuse_bin="$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)/debug/unionfuse"
[[ -x "$unionfuse_bin" ]] || die "$unionfuse_bin was not built"
# The user must reach the binaries; a checkout under a private home is copied out.
reachable() { setpriv --reuid="$MODE_UID" --regid="$MODE_UID" --clear-groups test -x "$1"; }
mkdir -p "$base/bin"
if ! reachable "$unionfuse_bin"; then
    cp "$unionfuse_bin" "$base/bin/unionfuse"
    unionfuse_bin="$base/bin/unionfuse"
fi
for s in "${SUITES[@]}"; do
    [[ -n "${exe[$s]:-}" ]] || die "test binary $s was not built"
    if ! reachable "${exe[$s]}"; then
        cp "${exe[$s]}" "$base/bin/$s"
        exe[$s]="$base/bin/$s"
    fi
done
chmod -R a+rX "$base/bin"

failed=0
for mode in "${modes[@]}"; do
    case $mode in
    user) wrap=() ;;
    # Root of a new user namespace (newuidmap/newgidmap: 0 = the user, 1.. = subordinate ids)
    # with its own mount namespace, as rootless podman runs its mount program.
    userns) wrap=(unshare --user --map-auto --map-root-user --mount --propagation private) ;;
    *) die "unknown mode $mode (user or userns)" ;;
    esac
    dir="$base/$mode"
    mkdir -p "$dir/tmp"
    chown -R "$MODE_UID:$MODE_UID" "$dir"
    # Traversable, so that the tests' other users (uid 65534 via setpriv in the user
    # namespace) reach the stacks they open up.
    chmod 0711 "$dir/tmp"
    skips="$dir/skips"
    : >"$skips"
    chmod 0666 "$skips"
    passed=0 nfailed=0 ignored=0 bad=()
    printf '\n==> mode %s (uid %s%s)\n' "$mode" "$MODE_UID" "${wrap:+, user namespace}"
    for s in "${SUITES[@]}"; do
        log="$dir/$s.log"
        set +e
        (cd / && timeout --kill-after=30s "$TIMEOUT" \
            setpriv --reuid="$MODE_UID" --regid="$MODE_UID" --clear-groups "${wrap[@]}" \
            env HOME="$dir" TMPDIR="$dir/tmp" UNIONFUSE_TEST_MODE="$mode" UNIONFUSE_BIN="$unionfuse_bin" \
            UNIONFUSE_SKIP_LOG="$skips" UNIONFUSE_DIFF_STATS="$dir/differential.stats" \
            CI="${CI:-false}" RUST_BACKTRACE=1 \
            "${exe[$s]}" --test-threads=2 ${MODES_ARGS:-} 9>&-) >"$log" 2>&1
        status=$?
        set -e
        line="$(grep -E '^test result:' "$log" | tail -1)"
        p=$(sed -E 's/.* ([0-9]+) passed.*/\1/' <<<"$line")
        f=$(sed -E 's/.* ([0-9]+) failed.*/\1/' <<<"$line")
        i=$(sed -E 's/.* ([0-9]+) ignored.*/\1/' <<<"$line")
        if [[ $status -ne 0 || -z "$line" ]]; then
            bad+=("$s")
            echo "FAIL  $s (exit $status): ${line:-no result line}"
            # Each failing test: its name, where it panicked and the message's first line.
            grep -E -A1 "^thread '.*' \([0-9]+\) panicked at" "$log" | grep -v '^--$' | head -80
            [[ -n "$line" ]] || tail -30 "$log"
        else
            echo "ok    $s: $line"
        fi
        passed=$((passed + ${p:-0})) nfailed=$((nfailed + ${f:-0})) ignored=$((ignored + ${i:-0}))
    done
    nskip=$(sort -u "$skips" | wc -l)
    echo "-- skipped in mode $mode (each says why; counted among the passed):"
    sort -u "$skips" | sed 's/^/   /'
    summary="mode $mode: $((passed - nskip)) tests ran and passed, $nskip skipped (cannot apply), $nfailed failed, in ${#SUITES[@]} suites"
    [[ ${#bad[@]} -eq 0 ]] || { summary+=" (failing: ${bad[*]})"; failed=1; }
    # The generated differential sequences' own count line.
    [[ ! -s "$dir/differential.stats" ]] || summary+=$'\n'"mode $mode: $(cat "$dir/differential.stats")"
    echo "$summary"
    [[ -z "${MODES_SUMMARY:-}" ]] || echo "$summary" >>"$MODES_SUMMARY"
done
exit "$failed"
