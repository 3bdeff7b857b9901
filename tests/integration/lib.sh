# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# Shared preamble of the integration tests, sourced by test_*.sh (this file is not itself a
# test: the CTest glob only picks up test_*.sh). It gives every scenario the same plumbing:
#   DS_BIN                     where the built programs are (default: build/bin of this checkout)
#   ds_need_tools TOOL...      exit 77 (skip) when an optional tool is not installed
#   ds_need_bins PATH...       exit 1 when a program under test was not built
#   ds_tmpdir [TEMPLATE]       TMP = a new temporary directory, removed at exit (trap)
#   ds_stop_on_exit VAR...     at exit, stop the processes whose pids are in these variables
#                              (scalars or arrays, read at exit time); then ds_on_exit RC runs if
#                              the script defines it, then TMP is removed
#   ds_stop_pid PID...         kill and reap (errors ignored, safe under set -e)
#   ds_wait_for SECONDS PID CMD...
#                              run CMD quietly every 0.05 s until it succeeds: 0; 1 on timeout;
#                              2 as soon as PID (when not empty) has exited
#   ds_sim_up STATE_DIR        a dstack-tee-sim serving STATE_DIR has its control socket and
#                              PCCS address file
#   ds_sanitizer_report FILE   true when FILE holds an ASan/UBSan/LSan report
#   ds_run CMD...              run CMD with stdout/stderr in $TMP/out, $TMP/err; sets rc, out,
#                              err; a sanitizer report in err is a failed check by itself
#   failures, pass MSG, fail MSG, check NAME GOT WANT, ds_finish OK_MSG
#                              counted checks; ds_finish exits 1 when any failed
# Every helper works under `set -euo pipefail` as well as under plain `set -u`.

DS_LIB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DS_BIN="${DS_BIN:-$DS_LIB_DIR/../../build/bin}"
DS_STOP_VARS=()
TMP=""

ds_need_tools() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || { echo "SKIP: $t not installed"; exit 77; }
    done
}

ds_need_bins() {
    local b
    for b in "$@"; do
        [ -x "$b" ] || { echo "FAIL: $b not built"; exit 1; }
    done
}

ds_stop_pid() {
    local p
    for p in "$@"; do
        [ -n "$p" ] || continue
        kill "$p" 2>/dev/null || true
    done
    for p in "$@"; do
        [ -n "$p" ] || continue
        wait "$p" 2>/dev/null || true
    done
}

ds_stop_on_exit() {
    DS_STOP_VARS+=("$@")
}

ds_cleanup() {
    local rc=$? v pids=() more=()
    for v in "${DS_STOP_VARS[@]}"; do
        eval "more=(\"\${${v}[@]}\")"
        pids+=("${more[@]}")
    done
    ds_stop_pid "${pids[@]}"
    if declare -F ds_on_exit >/dev/null; then
        ds_on_exit "$rc" || true
    fi
    if [ -n "$TMP" ]; then
        rm -rf "$TMP"
    fi
}

ds_tmpdir() {
    if [ $# -gt 0 ]; then
        TMP="$(mktemp -d "$1")"
    else
        TMP="$(mktemp -d)"
    fi
    trap ds_cleanup EXIT
}

ds_wait_for() {
    local deadline=$((SECONDS + $1)) pid="$2"
    shift 2
    until "$@" >/dev/null 2>&1; do
        if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
            return 2
        fi
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.05
    done
}

ds_sim_up() {
    [ -S "$1/control.sock" ] && [ -s "$1/pccs.addr" ]
}

ds_sanitizer_report() {
    grep -qE "Sanitizer|runtime error:" "$1"
}

# shellcheck disable=SC2034 # rc, out and err are for the sourcing test
ds_run() {
    rc=0
    "$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
    out="$(cat "$TMP/out")"
    err="$(cat "$TMP/err")"
    if ds_sanitizer_report "$TMP/err"; then
        fail "sanitizer report for: $*"
        echo "$err" | head -30 | sed 's/^/     /'
    fi
}

# free_port: a TCP port on 127.0.0.1 that was free a moment ago
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ds_test_ca CN [openssl req options...]: a P-256 test CA as ca.pem / ca.key in the current dir
ds_test_ca() {
    local cn=$1
    shift
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -subj "/CN=$cn" -days 2 "$@" 2>/dev/null
}

# mkcert NAME SAN: NAME.key / NAME.pem (P-256, subjectAltName SAN) signed by ca.pem / ca.key
mkcert() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
        -subj "/CN=$1" 2>/dev/null
    printf 'subjectAltName=%s\n' "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}

# ds_gw_stat PID LOG NAME: counter NAME from a fresh SIGUSR1 dump ("stats: ...") of the gateway
# PID logging to LOG; waits (up to 5 s) for the new dump instead of a fixed sleep.
ds_gw_stat() {
    local n
    n=$(grep -c 'stats: ' "$2" 2>/dev/null || true)
    kill -USR1 "$1"
    ds_wait_for 5 "" bash -c "[ \$(grep -c 'stats: ' '$2') -gt ${n:-0} ]" || true
    grep -o "stats: .*" "$2" | tail -1 | grep -o "$3=[0-9]*" | head -1 | cut -d= -f2
}

failures=0
pass() { echo "ok   - $*"; }
fail() {
    echo "FAIL - $*"
    failures=$((failures + 1))
}
check() { # check NAME GOT WANT
    if [ "$2" == "$3" ]; then
        pass "$1"
    else
        fail "$1: got '$2', want '$3'"
    fi
}

ds_finish() {
    if [ "$failures" -ne 0 ]; then
        echo "$failures check(s) failed"
        exit 1
    fi
    echo "$1"
}
