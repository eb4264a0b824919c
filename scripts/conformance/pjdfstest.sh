#!/usr/bin/env bash
# pjdfstest (crates.io `pjdfstest`, the Rust port of the POSIX file system test suite) as root
# against unionfuse and, in the same run, against kernel overlayfs on identical layers.
#
# The suite runs in a *merged* directory: `t/` exists in both lowers with content, so every file
# pjdfstest makes lives next to lower objects and its directory is copied up first. A test that
# fails on unionfuse but passes on kernel overlay fails this script, unless it is listed in
# scripts/conformance/pjdfstest-known-failures.txt (each with its reason, mirrored in
# docs/testing.md). Failures both share are reported, not fatal.
#
# Usage: scripts/conformance/pjdfstest.sh [TEST_PATTERNS...]   (as root; CI runs it without args)
# Env:   CONF_MODE=userns     both run as root of a user namespace mapped as rootless podman
#                             maps it (kernel overlay with userxattr), see lib.sh
#        PJDFSTEST_SUMMARY=F  append the summary line to F
#        UNIONFUSE_BIN        the binary to test (default: cargo build, target/debug/unionfuse)
#        CONF_KEEP=1          keep the temp dir (layers, logs) for inspection
set -euo pipefail
# shellcheck source=scripts/conformance/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
conf_setup pjdfstest
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
KNOWN="$HERE/pjdfstest-known-failures.txt"

conf_install pjdfstest 0.2.2
BIN="$(conf_binary)"

# The dummy users pjdfstest switches to (nobody exists on Debian; its group is nogroup).
if ! id tests >/dev/null 2>&1; then
    conf_log "creating the dummy user 'tests'"
    useradd --no-create-home --user-group --shell /usr/sbin/nologin tests
fi
nobody_group="$(id -gn nobody)"
# CONF_MODE=userns: everything below, both mounts included, as root of a user namespace.
conf_userns_reexec "$0" pjdfstest "$@"

# Linux features: no chflags, no NFSv4 ACLs, no st_birthtime in struct stat.
cat >"$CONF_TMP/pjdfstest.toml" <<TOML
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.01
allow_remount = false

[dummy_auth]
entries = [["nobody", "$nobody_group"], ["tests", "tests"]]
TOML

# build_layers DIR: two lowers with a merged test directory t/, an empty upper.
build_layers() {
    local d=$1
    mkdir -p "$d"/{lower0,lower1,upper,work,mnt}
    mkdir -p "$d/lower1/t/sub" "$d/lower0/t/sub2"
    echo "bottom" >"$d/lower1/t/from_lower1"
    echo "deep" >"$d/lower1/t/sub/deep"
    ln -s from_lower1 "$d/lower1/t/link"
    echo "top" >"$d/lower0/t/from_lower0"
    chmod 0755 "$d"/lower*/t
}

# run_suite IMPL: mounts, runs pjdfstest in mnt/t, unmounts; log in $CONF_TMP/IMPL.log.
run_suite() {
    local impl=$1 d="$CONF_TMP/$1"
    shift
    build_layers "$d"
    if [[ "$impl" == unionfuse ]]; then
        conf_mount_union "$BIN" "$d/lower0:$d/lower1" "$d/upper" "$d/mnt" "$d/work" "$d/daemon.log" \
            -o allow_other # FUSE refuses other users without it; pjdfstest switches users
    else
        conf_mount_kernel "$d/lower0:$d/lower1" "$d/upper" "$d/mnt" "$d/work"
    fi
    local rc=0
    (cd "$d/mnt/t" && pjdfstest -c "$CONF_TMP/pjdfstest.toml" -p "$d/mnt/t" \
        -s "$CONF_TMP/secondary" "$@") \
        >"$CONF_TMP/$impl.log" 2>&1 || rc=$?
    conf_unmount "$d/mnt"
    if ! grep -q '^Summary:' "$CONF_TMP/$impl.log"; then
        conf_log "pjdfstest on $impl did not finish (exit $rc):"
        tail -n 30 "$CONF_TMP/$impl.log" >&2
        return 1
    fi
}

# counts LOG: "P passed, F failed, S skipped" from pjdfstest's summary line.
counts() {
    sed -n 's/^Summary: \([0-9]*\) failed, \([0-9]*\) skipped, \([0-9]*\) passed.*/\3 passed, \1 failed, \2 skipped/p' "$1"
}

# failed_tests LOG: names of failed tests, sorted.
failed_tests() {
    awk '$NF == "FAILED" { print $1 }' "$1" | sort -u
}

# A second file system, for the rename/link EXDEV tests.
conf_tmpfs "$CONF_TMP/secondary" 16m

start=$SECONDS
run_suite unionfuse "$@"
run_suite kernel "$@"

u_failed="$(failed_tests "$CONF_TMP/unionfuse.log")"
k_failed="$(failed_tests "$CONF_TMP/kernel.log")"
known="$(sed -e 's/#.*//' -e 's/[[:space:]]*$//' "$KNOWN" 2>/dev/null | awk 'NF { print $1 }' | sort -u)"
# Failing on unionfuse only, and not a known failure.
only_union="$(comm -23 <(echo "$u_failed" | sed '/^$/d') <(echo "$k_failed" | sed '/^$/d'))"
new="$(comm -23 <(echo "$only_union" | sed '/^$/d') <(echo "$known" | sed '/^$/d'))"

line="pjdfstest: unionfuse $(counts "$CONF_TMP/unionfuse.log"); kernel overlay $(counts "$CONF_TMP/kernel.log") ($((SECONDS - start))s)"
echo "$line"
[[ -n "${PJDFSTEST_SUMMARY:-}" ]] && echo "$line" >>"$PJDFSTEST_SUMMARY"

show_failures() {
    local log=$1 name
    shift
    for name in "$@"; do
        # The test's line and the indented reason lines after it.
        awk -v n="$name" '$1 == n && $NF == "FAILED" { p = 1; print "  " $0; next }
            p && /^[ \t]/ { print "    " $0; next } { p = 0 }' "$log"
    done
}
if [[ -n "$u_failed" ]]; then
    echo "failing on unionfuse:"
    # shellcheck disable=SC2086
    show_failures "$CONF_TMP/unionfuse.log" $u_failed
fi
# shellcheck disable=SC2086 # test names have no spaces: one word each
if [[ -n "$k_failed" ]]; then
    echo "failing on kernel overlay:"
    printf '  %s\n' $k_failed
fi
# shellcheck disable=SC2086
if [[ -n "$new" ]]; then
    echo "FAIL: these pass on kernel overlay but fail on unionfuse (and are not in $KNOWN):" >&2
    printf '  %s\n' $new >&2
    exit 1
fi
