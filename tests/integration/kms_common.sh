# SPDX-License-Identifier: Apache-2.0
# Shared helpers of the server-focused dstack-kms integration tests (test_kms_*.sh): start real
# daemons on free ports (port 0, the bound port is read from the log), stop them on EXIT, call
# pRPC methods with curl, and check k256 signatures with @noble/curves. Sourced, not run.

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
KMS="$BIN/dstack-kms"
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done
[ -x "$KMS" ] || { echo "FAIL: $KMS not built"; exit 1; }

WORK=$(mktemp -d /tmp/test_kms.XXXXXX)
PIDS=()
kms_cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    # sanitizer builds: a report in any daemon log fails the test
    if grep -l -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
        "$WORK"/*.log 2>/dev/null; then
        echo "FAIL: sanitizer report in a daemon log"
        grep -h -A20 -E 'ERROR: .*Sanitizer|runtime error:' "$WORK"/*.log | head -60
        rc=1
    fi
    rm -rf "$WORK"
    exit $rc
}
trap kms_cleanup EXIT

LAST_LOG=""
fail() {
    echo "FAIL: $*"
    for f in "$WORK"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -15 "$f"; }; done
    exit 1
}
ok() { echo "ok - $*"; }
# pipeline matchers that read all their input (grep -q may exit early and, under pipefail,
# turn the writer's SIGPIPE into a failure)
has() { grep -F -- "$1" >/dev/null; }
hasre() { grep -E -- "$1" >/dev/null; }

# start_kms NAME ARGS... : run dstack-kms with its log in $WORK/NAME.log; waits until it
# listens (main or onboard listener); sets PID_NAME and PORT_NAME (main) or OPORT_NAME.
start_kms() {
    local name=$1
    shift
    local log="$WORK/$name.log"
    "$KMS" "$@" >"$log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    eval "PID_$name=$pid"
    for _ in $(seq 300); do
        if grep -qs 'KMS listening on' "$log"; then
            eval "PORT_$name=$(grep -o 'KMS listening on [^ ]*' "$log" | tail -1 | sed 's/.*://')"
            return 0
        fi
        if grep -qs 'onboard listener (plain HTTP) on' "$log"; then
            eval "OPORT_$name=$(grep -o 'plain HTTP) on [^ ]*' "$log" | tail -1 | sed 's/.*://')"
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}

stop_kms() {
    local pid
    eval "pid=\$PID_$1"
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# rpc PORT METHOD [JSON]: POST over TLS without a client certificate; prints the body and
# leaves the HTTP status in $WORK/status.
rpc() {
    curl -sk -o "$WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data-binary "${3:-{\}}" "https://127.0.0.1:$1/prpc/$2" >"$WORK/status" || true
    cat "$WORK/body"
}

# jget JSON KEY: one top-level string/number field
jget() { python3 -c 'import json,sys; v=json.loads(sys.argv[1]).get(sys.argv[2]); print("" if v is None else v)' "$1" "$2"; }

# the own BootInfo the daemon logged at start: jself LOGNAME KEY
jself() {
    local line
    line=$(grep -o 'own boot info: .*' "$WORK/$1.log" | head -1 | sed 's/own boot info: //')
    jget "$line" "$2"
}

# recover_env SIGHEX APPIDHEX PUBHEX [TIMESTAMP]: prints the compressed signer of an env-pubkey
# signature (legacy without timestamp, signature_v1 with), computed with @noble/curves.
recover_env() {
    node -e '
const {secp256k1}=require(process.argv[1]+"/node_modules/@noble/curves/secp256k1");
const {keccak_256}=require(process.argv[1]+"/node_modules/@noble/hashes/sha3");
const h=(s)=>Uint8Array.from(Buffer.from(s,"hex"));
const [sig,app,pub,ts]=process.argv.slice(2);
const parts=[Buffer.from("dstack-env-encrypt-pubkey:"),h(app)];
if(ts!==undefined){const b=Buffer.alloc(8);b.writeBigUInt64BE(BigInt(ts));parts.push(b);}
parts.push(h(pub));
const d=keccak_256(Buffer.concat(parts));
const s=h(sig);
const S=secp256k1.Signature.fromCompact(s.slice(0,64)).addRecoveryBit(s[64]);
console.log(Buffer.from(S.recoverPublicKey(d).toRawBytes(true)).toString("hex"));
' "$SRC" "$@"
}
