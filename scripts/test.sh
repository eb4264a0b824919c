#!/usr/bin/env bash
# The test command: installs missing system packages, then runs format, lint and all tests, then
# the conformance suites (pjdfstest, fsx: scripts/conformance/), then checks that no FUSE mount
# was left behind. The summary ends with one count line per suite (model, differential,
# pjdfstest, fsx). Mounted tests need root and /dev/fuse; with CI=true a
# missing /dev/fuse (or not being root) is an error, elsewhere those tests skip with a reason.
#
# Usage: scripts/test.sh [extra args for the test binaries, e.g. a test name filter]
# Env:   CI=true                       fail instead of skipping when FUSE is unavailable
#        UNIONFUSE_TEST_TIMEOUT=40m    limit for `cargo test` (a hung mount must not eat the CI budget)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-auto}"

PACKAGES=(fuse3 attr acl fuse-overlayfs busybox-static podman runc uidmap)
PACKAGES+=(make)  # tests/cli.rs runs `make install`
PACKAGES+=(skopeo umoci)  # tests/image.rs: image save round trips, images made by umoci
PACKAGES+=(jq) # scripts/modes.sh reads cargo's JSON
CI="${CI:-false}"
TEST_TIMEOUT="${UNIONFUSE_TEST_TIMEOUT:-40m}"

baseline="$(mktemp)"
after="$(mktemp)"
# Each suite appends its one-line count here; printed in the summary.
suite_lines="$(mktemp)"
export UNIONFUSE_DIFF_STATS="$suite_lines.differential" UNIONFUSE_MODEL_STATS="$suite_lines.model"
export PJDFSTEST_SUMMARY="$suite_lines" FSX_SUMMARY="$suite_lines"
export UNIONFUSE_SKIP_LOG="$suite_lines.skips"
: >"$UNIONFUSE_SKIP_LOG"
declare -a results=()
failed=0

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'test.sh: %s\n' "$*" >&2; exit 1; }

fuse_mounts() { awk '$3 ~ /^fuse/ { print $2, $3 }' /proc/mounts | sort; }

# Mounts that appeared while we ran (on CI the baseline is empty, so: any FUSE mount).
new_fuse_mounts() {
    fuse_mounts >"$after"
    comm -13 "$baseline" "$after"
}

cleanup() {
    local status=$?
    # Never leave a mount behind, even after a failure or Ctrl-C; the leak was already reported.
    local mnt _type
    while read -r mnt _type; do
        [[ -n "$mnt" ]] || continue
        mnt="$(printf '%b' "$mnt")" # /proc/mounts escapes spaces as \040
        fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    done < <(new_fuse_mounts 2>/dev/null || true)
    rm -f "$baseline" "$after" "$suite_lines" "$suite_lines".*
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Runs one named step, records pass/fail and its duration; later steps still run.
step() {
    local name=$1
    shift
    log "$name: $*"
    local start=$SECONDS
    if "$@"; then
        results+=("PASS  $name ($((SECONDS - start))s)")
    else
        results+=("FAIL  $name ($((SECONDS - start))s, exit $?)")
        failed=1
    fi
}

as_root() {
    if [[ $EUID -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo "$@"
    else
        return 1
    fi
}

install_packages() {
    local missing=() pkg
    for pkg in "${PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "system packages present: ${PACKAGES[*]}"
        return 0
    fi
    echo "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! as_root apt-get update -qq ||
        ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        if [[ "$CI" == true ]]; then
            die "could not install ${missing[*]} (need root or passwordless sudo)"
        fi
        echo "warning: could not install ${missing[*]}; tests needing them will skip" >&2
    fi
}

check_fuse() {
    local reason=""
    if [[ ! -c /dev/fuse ]]; then
        reason="/dev/fuse is missing"
    elif [[ $EUID -ne 0 ]]; then
        reason="not root (mounted tests and kernel-overlay comparisons need root)"
    elif ! command -v fusermount3 >/dev/null; then
        reason="fusermount3 is not installed"
    fi
    if [[ -z "$reason" ]]; then
        echo "FUSE available: mounted tests will run"
    elif [[ "$CI" == true ]]; then
        die "CI=true but $reason: mounted tests must run in CI"
    else
        echo "warning: $reason: mounted tests will skip (each prints why)" >&2
    fi
}

# Test binaries get --test-threads=2 (the CI machine has 2 cores) plus any filter given to us.
# Built with the test hooks (`fault-injection`: -o debug_panic_on) that release builds lack.
run_tests() {
    # --no-fail-fast: one failing test binary must not hide the others' results (and counts).
    # The output is kept for the per-mode count (`count_root_mode`).
    timeout --kill-after=30s "$TEST_TIMEOUT" cargo test --features fault-injection --no-fail-fast \
        -- --test-threads=2 "$@" 2>&1 | tee "$suite_lines.rootlog"
    return "${PIPESTATUS[0]}"
}

# Mode root's line of the summary: tests run and passed, skipped (each printed its reason),
# failed, over every test binary of `cargo test`.
count_root_mode() {
    [[ -s "$suite_lines.rootlog" ]] || return 0
    local p f skipped
    p=$(grep -E '^test result:' "$suite_lines.rootlog" | sed -E 's/.* ([0-9]+) passed.*/\1/' |
        awk '{ s += $1 } END { print s + 0 }')
    f=$(grep -E '^test result:' "$suite_lines.rootlog" | sed -E 's/.* ([0-9]+) failed.*/\1/' |
        awk '{ s += $1 } END { print s + 0 }')
    skipped=$(sort -u "$UNIONFUSE_SKIP_LOG" 2>/dev/null | wc -l)
    echo "mode root: $((p - skipped)) tests ran and passed, $skipped skipped, $f failed (all test binaries)" \
        >>"$suite_lines.modes"
}

# Modes user and userns (scripts/modes.sh): the mounted suites as an ordinary user and as
# root of a user namespace mapped as rootless podman maps it. Needs root to set them up.
unprivileged_modes() {
    if [[ $EUID -ne 0 ]]; then
        echo "skipped: setting up the unprivileged modes needs root"
        return 0
    fi
    MODES_SUMMARY="$suite_lines.modes" scripts/modes.sh user userns
}

# The external suites need root, /dev/fuse and kernel overlayfs (check_fuse already refused to
# start under CI without them); elsewhere they skip with the reason.
conformance() {
    if [[ $EUID -ne 0 || ! -c /dev/fuse ]]; then
        echo "skipped: conformance suites need root and /dev/fuse"
        return 0
    fi
    "$@"
}

check_no_mount_left() {
    local leaked
    leaked="$(new_fuse_mounts)"
    if [[ -n "$leaked" ]]; then
        echo "FUSE mounts left behind by the tests (a test did not unmount):" >&2
        printf '  %s\n' "$leaked" >&2
        return 1
    fi
    echo "no FUSE mount left behind"
}

log "environment"
echo "CI=$CI  user=$(id -un)  kernel=$(uname -r)  cores=$(nproc)"
cargo --version
rustc --version
fuse_mounts >"$baseline"
if [[ -s "$baseline" ]]; then
    echo "FUSE mounts present before the run (ignored by the leak check):"
    sed 's/^/  /' "$baseline"
fi

log "system packages"
install_packages
check_fuse

step "format" cargo fmt --all --check
step "clippy" cargo clippy --all-targets --features fault-injection -- -D warnings
step "tests" run_tests "$@"
count_root_mode
# The same mounted suites on the other data path (no passthrough: reads and writes through the
# daemon, as for rootless users).
if [[ $# -eq 0 ]]; then
    step "tests (nopassthrough)" env UNIONFUSE_TEST_OPTS=nopassthrough \
        timeout --kill-after=30s "$TEST_TIMEOUT" \
        cargo test --features fault-injection --test 'mount_*' --test concurrency \
        -- --test-threads=2
    # And with `-o noopen`: requests without a handle, served by each node's own (D18).
    step "tests (nopassthrough,noopen)" env UNIONFUSE_TEST_OPTS=nopassthrough,noopen \
        timeout --kill-after=30s "$TEST_TIMEOUT" \
        cargo test --features fault-injection --test 'mount_*' --test concurrency \
        -- --test-threads=2
    # A daemon with one CPU to run on answers every quick request on its session thread
    # (`Fs::busy` in src/fuse/mod.rs): the parallel clients again, with the tests on CPU 0.
    step "tests (one CPU)" env UNIONFUSE_TEST_OPTS=nopassthrough \
        timeout --kill-after=30s "$TEST_TIMEOUT" \
        taskset -c 0 cargo test --features fault-injection --test concurrency \
        -- --test-threads=2
    step "modes user, userns" unprivileged_modes
fi
# Conformance: the external suites against live mounts, compared with kernel overlayfs.
# They run the whole suite; a name filter given to this script applies to the tests above only.
if [[ $# -eq 0 ]]; then
    step "pjdfstest" conformance scripts/conformance/pjdfstest.sh
    step "fsx" conformance scripts/conformance/fsx.sh
    # Again as root of a user namespace mapped as rootless podman maps it (lib.sh): pjdfstest
    # side by side with kernel overlay (userxattr) there, fsx without passthrough.
    step "pjdfstest (userns)" conformance env CONF_MODE=userns scripts/conformance/pjdfstest.sh
    step "fsx (userns)" conformance env CONF_MODE=userns scripts/conformance/fsx.sh
fi
step "mount leak check" check_no_mount_left

log "summary"
printf '  %s\n' "${results[@]}"
for f in "$suite_lines.modes" "$suite_lines.model" "$suite_lines.differential" "$suite_lines"; do
    [[ -s "$f" ]] && sed 's/^/  /' "$f"
done
if [[ $failed -ne 0 ]]; then
    echo "FAILED"
    exit 1
fi
echo "all passed"
