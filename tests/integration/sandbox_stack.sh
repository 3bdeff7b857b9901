# SPDX-License-Identifier: Apache-2.0
# Sourced by the sandbox end-to-end tests (test_sandbox_containers.sh, test_verify_app.sh): the
# shared stack of dstack-tee-sim (+ PCCS), dstack-kms in its own simulated CVM, dstack-vmm with
# the sandbox backend and the dstack-guest image, plus the cleanup that leaves no VM, process or
# cgroup behind. Not a test itself (the CTest glob only takes test_*.sh).
#
# Use: sbx_preflight; sbx_init NAME; sbx_build_images; sbx_start_sim; start_kms LOG [ARGS...];
# sbx_start_vmm. The test sets VM_ID / VM2 / VM3 (VM ids to remove) and FAKE_PID (an extra
# process to stop) as it goes.

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
# The sandbox guests reach host services through the bridge address.
GW=10.213.77.1

# Skip (77) without root, namespaces or an installable container engine; fail without binaries.
sbx_preflight() {
    [ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
    unshare -m -p -n -u -i --fork true 2>/dev/null || { echo "SKIP: namespaces unavailable"; exit 77; }
    if ! [ -x /usr/sbin/dockerd ] || ! [ -x /usr/bin/docker-compose ]; then
        "$SRC/scripts/install-deps.sh" >/dev/null 2>&1 || true
        [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker-compose ] ||
            { echo "SKIP: docker.io/docker-compose not installable"; exit 77; }
    fi
    local b
    for b in dstack-vmm dstack-tee-sim dstack-kms dstack dstack-util dstack-guest-agent; do
        [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b not built"; exit 1; }
    done
}

sbx_cleanup() {
    local id f d
    if [ -n "$VMM_PID" ]; then
        for id in $VM_ID $VM2 $VM3; do
            DSTACK_VMM_URL="unix:$WORK/vmm.sock" "$BIN/dstack" rm "$id" >/dev/null 2>&1
        done
        for id in $VM_ID $VM2 $VM3; do # removal is asynchronous
            for _ in $(seq 100); do [ -d "$WORK/run/$id" ] || break; sleep 0.1; done
        done
    fi
    [ -n "$VMM_PID" ] && kill "$VMM_PID" 2>/dev/null && wait "$VMM_PID" 2>/dev/null
    for f in "$WORK"/run/*/vm.pid "$WORK"/run/*/sandbox/forwarder.pid; do
        [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null
    done
    [ -n "$FAKE_PID" ] && kill "$FAKE_PID" 2>/dev/null && wait "$FAKE_PID" 2>/dev/null
    [ -n "$KMS_PID" ] && kill "$KMS_PID" 2>/dev/null && wait "$KMS_PID" 2>/dev/null
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
    sleep 0.3
    # the guest's dockerd puts its containers under /dstack-guest-<vm id> in each hierarchy
    for id in $VM_ID $VM2 $VM3; do
        for d in /sys/fs/cgroup/*/dstack-guest-"$id"; do
            [ -d "$d" ] || continue
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
    done
    if [ -n "${SANDBOX_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}

# A fresh work dir /tmp/NAME.XXXXXX and the cleanup trap.
sbx_init() {
    WORK=$(mktemp -d "/tmp/$1.XXXXXX")
    VMM_PID="" SIM_PID="" KMS_PID="" VM_ID="" VM2="" VM3="" FAKE_PID=""
    trap sbx_cleanup EXIT
}

fail() {
    echo "FAIL: $*"
    tail -15 "$WORK/vmm.log" 2>/dev/null
    [ -n "$VM_ID" ] && tail -40 "$WORK/run/$VM_ID/serial.log" 2>/dev/null
    exit 1
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

sbx_build_images() {
    "$SRC/scripts/build-guest-image.sh" "$WORK/images/dstack-guest-0.5.0" "$BIN" >"$WORK/build.log" 2>&1 ||
        { tail "$WORK/build.log"; fail "build-guest-image.sh"; }
    "$SRC/scripts/build-hello-images.sh" "$WORK/hello-images.tar" >>"$WORK/build.log" 2>&1 ||
        { tail "$WORK/build.log"; fail "build-hello-images.sh"; }
    echo "ok - dstack-guest image and hello images built"
}

# dstack-tee-sim with its PCCS on all addresses (guests dial it at $GW); sets PCCS_PORT, KMS_TD.
sbx_start_sim() {
    local seed
    seed=$(printf '6c%.0s' $(seq 32))
    mkdir -p "$WORK/sim" "$WORK/run"
    "$BIN/dstack-tee-sim" serve --seed "$seed" --state-dir "$WORK/sim" --pccs-listen 0.0.0.0:0 \
        >"$WORK/sim.log" 2>&1 &
    SIM_PID=$!
    for _ in $(seq 1 200); do [ -s "$WORK/sim/pccs.addr" ] && break; sleep 0.05; done
    [ -s "$WORK/sim/pccs.addr" ] || fail "dstack-tee-sim did not start"
    PCCS_PORT=$(sed 's/.*://' "$WORK/sim/pccs.addr")
    KMS_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$WORK/sim" --name kms) || fail "create-td kms"
}

# start_kms LOG [ARGS...]: dstack-kms --dev on its own TD; its RPC certificate names the bridge
# address (an IP SAN), which the guest dials. Sets KMS_PID, KMS_PORT.
start_kms() {
    "$BIN/dstack-kms" --dev --tee "sim:$KMS_TD" --pccs-url "http://127.0.0.1:$PCCS_PORT" \
        --domain "$GW" --state-dir "$WORK/kms" --listen 0.0.0.0:0 "${@:2}" >"$WORK/$1" 2>&1 &
    KMS_PID=$!
    for _ in $(seq 300); do grep -qs 'KMS listening on' "$WORK/$1" && break; sleep 0.1; done
    KMS_PORT=$(grep -o 'KMS listening on [^ ]*' "$WORK/$1" | tail -1 | sed 's/.*://')
    [ -n "$KMS_PORT" ] || { tail -5 "$WORK/$1"; fail "the KMS did not start"; }
}

# dstack-vmm with the sandbox backend on $WORK/vmm.sock; exports DSTACK_VMM_URL.
sbx_start_vmm() {
    cat >"$WORK/vmm.toml" <<TOML
address = "unix:$WORK/vmm.sock"
run_path = "$WORK/run"

[image]
path = "$WORK/images"

[cvm]
backend = "sandbox"
pccs_url = "http://$GW:$PCCS_PORT"

[cvm.port_mapping]
enabled = true
address = "127.0.0.1"
range = [{ protocol = "tcp", from = 1024, to = 65535 }]

[cvm.auto_restart]
enabled = false
TOML
    DSTACK_TEE_SIM_DIR="$WORK/sim" "$BIN/dstack-vmm" -c "$WORK/vmm.toml" >"$WORK/vmm.log" 2>&1 &
    VMM_PID=$!
    for _ in $(seq 1 200); do [ -S "$WORK/vmm.sock" ] && break; sleep 0.05; done
    [ -S "$WORK/vmm.sock" ] || fail "dstack-vmm did not come up"
    echo "ok - tee-sim, KMS (:$KMS_PORT), VMM (sandbox backend) running"
    export DSTACK_VMM_URL="unix:$WORK/vmm.sock"
}

# examples/hello's compose without the gateway, as $HELLO: these tests run no gateway (the
# guest would report "dstack-gateway registration failed"); test_gateway_sandbox.sh and the
# demo cover the gateway path.
sbx_hello_compose() {
    HELLO="$WORK/hello-compose.json"
    python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["gateway_enabled"]=False
json.dump(c, open(sys.argv[2], "w"), indent=4)' "$SRC/examples/hello/app-compose.json" "$HELLO"
}
