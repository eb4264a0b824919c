#!/usr/bin/env bash
# Longer fuzzing runs of tests/fuzz.rs (option parser, id maps, fuse-overlayfs argv, overlay
# xattr escaping, tar import): each target runs FUZZ_SECS (default 600) with a fresh seed per
# round; ROUNDS rounds (default 1). A failure prints UNIONFUSE_SEED and the input seed, so
# `UNIONFUSE_SEED=N cargo test --test fuzz NAME` replays it. CI runs the same targets for 10 s each.
#
# Usage: scripts/fuzz.sh [target-name-filter]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
SECS="${FUZZ_SECS:-600}"
ROUNDS="${ROUNDS:-1}"
for ((i = 1; i <= ROUNDS; i++)); do
    echo "==> fuzz round $i of $ROUNDS, ${SECS}s per target"
    UNIONFUSE_FUZZ_SECS="$SECS" cargo test --release --test fuzz -- --nocapture --test-threads=2 "$@"
done
