#!/usr/bin/env bash
# The fsx soak: millions of operations, not run by CI. Repeats scripts/conformance/fsx.sh with a
# new seed per round (both passthrough modes, lower file + new file + block mode each round).
#
# Usage: scripts/conformance/fsx-soak.sh [ROUNDS]       (as root; default 5 rounds)
# Env:   FSX_OPS=N  operations per exerciser file and round (default 1000000: with the default
#                   5 rounds about 22 million operations, roughly 1.5 h on 2 cores)
#        FSX_SEED=N first seed (default: the time); each round uses the next one
set -euo pipefail
rounds="${1:-5}"
export FSX_OPS="${FSX_OPS:-1000000}"
seed="${FSX_SEED:-$(date +%s)}"
here="$(dirname "${BASH_SOURCE[0]}")"
for ((r = 1; r <= rounds; r++)); do
    echo "soak round $r/$rounds: seed $seed, $FSX_OPS ops per file"
    FSX_SEED=$seed "$here/fsx.sh"
    seed=$((seed + 100))
done
echo "soak: $rounds rounds passed"
