#!/usr/bin/env bash
# Soak test: the mixed load of tests/reliability.rs (8 threads: racing copy-ups of
# shared lower files, cross-directory renames, readdir while others unlink, private data and
# metadata churn) for SOAK_SECS (default 600), then the resource checks at soak size
# (scripts/resources.sh: 1M create/unlink + open/close cycles, find over 1M lower files +
# drop_caches). Prints the operation count, errors by kind, the daemon's fds and RSS
# before/after; exits non-zero on any error, hang (the tests' own timeouts) or leak. Needs root
# and /dev/fuse.
#
# Usage: scripts/soak.sh
# Env:   SOAK_SECS=600  SOAK_CYCLES=1000000  SOAK_FILES=1000000  UNIONFUSE_SEED=N
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

SECS="${SOAK_SECS:-600}"
CYCLES="${SOAK_CYCLES:-1000000}"
FILES="${SOAK_FILES:-1000000}"
[[ $EUID -eq 0 && -e /dev/fuse ]] || { echo "soak.sh: needs root and /dev/fuse" >&2; exit 2; }

status=0
run() {
    local name=$1
    shift
    printf '\n==> %s\n' "$name"
    local start=$SECONDS
    if "$@"; then
        printf '==> %s: PASS (%ss)\n' "$name" $((SECONDS - start))
    else
        printf '==> %s: FAIL (%ss)\n' "$name" $((SECONDS - start))
        status=1
    fi
}

cargo build --release -q --test reliability || exit 1
run "mixed load for ${SECS}s" env UNIONFUSE_LOAD_SECS="$SECS" UNIONFUSE_LOAD_MAX_ERRORS=1000000 \
    cargo test --release -q --test reliability -- --include-ignored --exact \
    load_mixed_with_cross_dir_renames_and_readdir_during_unlink --nocapture
run "crash loop, 100 kills per scenario" env UNIONFUSE_CRASH_ITERS=100 \
    cargo test --release -q --test reliability -- crash_ --nocapture --test-threads=1
run "resources: $CYCLES cycles, find over $FILES files" env RES_CYCLES="$CYCLES" \
    RES_FILES="$FILES" scripts/resources.sh
leaked=$(awk '$3 ~ /^fuse/ && $2 ~ /unionfuse-test-/' /proc/mounts)
if [[ -n "$leaked" ]]; then
    echo "soak.sh: leaked mounts:"; echo "$leaked"; status=1
fi
echo
[[ $status -eq 0 ]] && echo "soak: PASS" || echo "soak: FAIL"
exit $status
