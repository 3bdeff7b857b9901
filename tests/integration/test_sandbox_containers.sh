#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# examples/hello's docker-compose services run by a real container engine INSIDE a sandbox CVM
# (docs/containers-in-sandbox.md): dstack-tee-sim (+ its PCCS), dstack-kms --dev in its own
# simulated CVM, dstack-vmm with the sandbox backend and the dstack-guest image
# (scripts/build-guest-image.sh). `dstack deploy` with a port mapping and an encrypted env
# (GREETING) creates the VM stopped; the hello images archive (scripts/build-hello-images.sh)
# goes into its host share; `dstack start`. The guest runs dstack-util setup (keys from the
# KMS over RA-TLS), the guest agent, dockerd + docker-compose, and reports "booted". Then the
# app answers through the mapped port with the GREETING, backend's answer, and SHA-256 of the
# key GetKey returns for that app (read independently from the guest agent's socket). Prints
# the time from deploy to the app answering. Negative: the app without the archive fails the
# boot with boot_error "docker-compose up: ...". Needs root and docker.io + docker-compose
# (exit 77 otherwise).
set -u

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
unshare -m -p -n -u -i --fork true 2>/dev/null || { echo "SKIP: namespaces unavailable"; exit 77; }
if ! [ -x /usr/sbin/dockerd ] || ! [ -x /usr/bin/docker-compose ]; then
    "$SRC/scripts/install-deps.sh" >/dev/null 2>&1 || true
    [ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker-compose ] ||
        { echo "SKIP: docker.io/docker-compose not installable"; exit 77; }
fi
for b in dstack-vmm dstack-tee-sim dstack-kms dstack dstack-util dstack-guest-agent; do
    [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b not built"; exit 1; }
done

WORK=$(mktemp -d /tmp/test_sandbox_containers.XXXXXX)
VMM_PID="" SIM_PID="" KMS_PID="" VM_ID="" VM2=""
cleanup() {
    if [ -n "$VMM_PID" ]; then
        for id in $VM_ID $VM2; do
            DSTACK_VMM_URL="unix:$WORK/vmm.sock" "$BIN/dstack" rm "$id" >/dev/null 2>&1
        done
    fi
    [ -n "$VMM_PID" ] && kill "$VMM_PID" 2>/dev/null && wait "$VMM_PID" 2>/dev/null
    for f in "$WORK"/run/*/vm.pid "$WORK"/run/*/sandbox/forwarder.pid; do
        [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null
    done
    [ -n "$KMS_PID" ] && kill "$KMS_PID" 2>/dev/null && wait "$KMS_PID" 2>/dev/null
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
    sleep 0.3
    # the guest's dockerd puts its containers under /dstack-guest-<vm id> in each hierarchy
    for id in $VM_ID $VM2; do
        for d in /sys/fs/cgroup/*/dstack-guest-"$id"; do
            [ -d "$d" ] || continue
            find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        done
    done
    if [ -n "${SANDBOX_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() {
    echo "FAIL: $*"
    tail -15 "$WORK/vmm.log" 2>/dev/null
    [ -n "$VM_ID" ] && tail -40 "$WORK/run/$VM_ID/serial.log" 2>/dev/null
    exit 1
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

"$SRC/scripts/build-guest-image.sh" "$WORK/images/dstack-guest-0.5.0" "$BIN" >"$WORK/build.log" 2>&1 ||
    { tail "$WORK/build.log"; fail "build-guest-image.sh"; }
"$SRC/scripts/build-hello-images.sh" "$WORK/hello-images.tar" >>"$WORK/build.log" 2>&1 ||
    { tail "$WORK/build.log"; fail "build-hello-images.sh"; }
echo "ok - dstack-guest image and hello images built"

# The sandbox guests reach host services through the bridge address.
GW=10.213.77.1
SEED=$(printf '6c%.0s' $(seq 32))
mkdir -p "$WORK/sim" "$WORK/run"
"$BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$WORK/sim" --pccs-listen 0.0.0.0:0 \
    >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 200); do [ -s "$WORK/sim/pccs.addr" ] && break; sleep 0.05; done
[ -s "$WORK/sim/pccs.addr" ] || fail "dstack-tee-sim did not start"
PCCS_PORT=$(sed 's/.*://' "$WORK/sim/pccs.addr")

# Its RPC certificate names the bridge address (an IP SAN), which the guest dials.
KMS_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$WORK/sim" --name kms) || fail "create-td kms"
"$BIN/dstack-kms" --dev --tee "sim:$KMS_TD" --pccs-url "http://127.0.0.1:$PCCS_PORT" \
    --domain "$GW" --state-dir "$WORK/kms" --listen 0.0.0.0:0 >"$WORK/kms.log" 2>&1 &
KMS_PID=$!
for _ in $(seq 300); do grep -qs 'KMS listening on' "$WORK/kms.log" && break; sleep 0.1; done
KMS_PORT=$(grep -o 'KMS listening on [^ ]*' "$WORK/kms.log" | tail -1 | sed 's/.*://')
[ -n "$KMS_PORT" ] || { tail -5 "$WORK/kms.log"; fail "the KMS did not start"; }

HOST_PORT=$(free_port)
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
CLI=("$BIN/dstack")
GREETING="hi-from-encrypted-env-$RANDOM"
echo "GREETING=$GREETING" >"$WORK/app.env"
T0=$(date +%s.%N)
"${CLI[@]}" deploy --name hello --image dstack-guest-0.5.0 --compose "$SRC/examples/hello/app-compose.json" \
    --vcpu 2 --memory 1G --disk 1 --port "tcp:$HOST_PORT:8080" --kms-url "https://$GW:$KMS_PORT" \
    --env-file "$WORK/app.env" --stopped --json >"$WORK/deploy.json" 2>"$WORK/deploy.err" ||
    { cat "$WORK/deploy.err"; fail "dstack deploy"; }
VM_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/deploy.json")
APP_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["app_id"])' "$WORK/deploy.json")
# Images are delivered in the host share (read-only in the guest), not in the measured image.
cp "$WORK/hello-images.tar" "$WORK/run/$VM_ID/shared/images.tar" || fail "copy images.tar"
"${CLI[@]}" start "$VM_ID" >/dev/null || fail "dstack start"
echo "ok - deployed $VM_ID (app $APP_ID), images in its host share, started"

booted="" st=""
for _ in $(seq 1 1200); do
    "${CLI[@]}" info "$VM_ID" --json >"$WORK/info.json" 2>/dev/null || true
    st=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]))
print("%s|%s" % (i.get("boot_progress") or "", i.get("boot_error") or ""))' "$WORK/info.json" 2>/dev/null)
    case "$st" in
        "booted|") booted=1; break ;;
        *"|"?*) fail "boot error: $st" ;;
    esac
    sleep 0.1
done
[ -n "$booted" ] || fail "not booted: $st"
T_BOOT=$(date +%s.%N)
echo "ok - boot_progress booted"

ANSWER=""
for _ in $(seq 1 300); do
    ANSWER=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/" 2>/dev/null) && break
    sleep 0.1
done
T_APP=$(date +%s.%N)
[ -n "$ANSWER" ] || fail "the app did not answer on 127.0.0.1:$HOST_PORT"
echo "app answered: $ANSWER"

# The key GetKey returns for this app, read from the guest agent's socket in the sandbox.
PID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
KEY=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" \
    'http://localhost/GetKey?path=hello&purpose=web' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') ||
    fail "GetKey through /proc/$PID/root/var/run/dstack.sock"
WANT=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(bytes.fromhex(sys.argv[1])).hexdigest())' "$KEY")
case "$ANSWER" in
    "$GREETING key-sha256=$WANT backend=backend-ok") echo "ok - answer has GREETING, SHA-256(GetKey) and backend's answer" ;;
    *) fail "unexpected answer: '$ANSWER' (want '$GREETING key-sha256=$WANT backend=backend-ok')" ;;
esac
# The key is the app's: the guest agent reports the deployed app id, and a different path
# gives a different key (so the answer is not a constant).
INFO_APP=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" http://localhost/Info |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')
[ "$INFO_APP" = "$APP_ID" ] || fail "guest agent app_id $INFO_APP != deployed $APP_ID"
OTHER=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" \
    'http://localhost/GetKey?path=other&purpose=web' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
[ -n "$OTHER" ] && [ "$OTHER" != "$KEY" ] || fail "GetKey path=other gave the same key"
echo "ok - guest agent serves app $APP_ID; keys differ per path"
# the containers really run under the guest's engine
nsenter -t "$PID" -m -n -p -u /usr/bin/docker ps --format '{{.Names}} {{.Image}}' >"$WORK/ps.txt" 2>&1 ||
    fail "docker ps in the guest: $(cat "$WORK/ps.txt")"
grep -q "dstack-hello-web" "$WORK/ps.txt" && grep -q "dstack-hello-backend" "$WORK/ps.txt" ||
    fail "containers not running: $(cat "$WORK/ps.txt")"
echo "ok - docker ps in the guest: $(tr '\n' ';' <"$WORK/ps.txt")"

python3 -c 'import sys; t0,b,a=map(float,sys.argv[1:]); print("deploy -> booted: %.1f s, deploy -> app answering: %.1f s" % (b-t0, a-t0))' \
    "$T0" "$T_BOOT" "$T_APP"
grep 'init: \[' "$WORK/run/$VM_ID/serial.log" | sed 's/^/  /'

# Graceful shutdown as the sandbox backend does it (SIGTERM to pid 1; the VMM's ShutdownVm
# needs a guest API endpoint the sandbox does not have): compose down, engine stopped, exit.
kill -TERM "$PID" || fail "SIGTERM to the guest's init"
for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$PID" 2>/dev/null || fail "the guest's init did not exit within 30 s of SIGTERM"
# (the VMM copies the console into serial.log asynchronously)
for _ in $(seq 1 50); do grep -q "engine stopped" "$WORK/run/$VM_ID/serial.log" && break; sleep 0.1; done
grep -q "SIGTERM, shutting down" "$WORK/run/$VM_ID/serial.log" || fail "init did not shut down cleanly"
grep -q "engine stopped" "$WORK/run/$VM_ID/serial.log" || fail "init did not stop the engine"
echo "ok - SIGTERM: compose down, engine stopped, init exited"
# Negative: the same app without the images archive in its share. The guest cannot pull
# (no registry on its localhost), so compose fails and init reports a boot.error naming the step.
"${CLI[@]}" deploy --name hello-noimg --image dstack-guest-0.5.0 \
    --compose "$SRC/examples/hello/app-compose.json" --memory 1G --disk 1 \
    --kms-url "https://$GW:$KMS_PORT" --json >"$WORK/deploy2.json" 2>"$WORK/deploy2.err" ||
    { cat "$WORK/deploy2.err"; fail "dstack deploy (no images)"; }
VM2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/deploy2.json")
err=""
for _ in $(seq 1 600); do
    err=$("${CLI[@]}" info "$VM2" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("boot_error") or "")' 2>/dev/null)
    [ -n "$err" ] && break
    sleep 0.1
done
"${CLI[@]}" rm "$VM2" >/dev/null 2>&1
case "$err" in
    "docker-compose up: "*) echo "ok - without images.tar: boot_error '${err:0:80}...'" ;;
    *) fail "without images.tar: boot_error '$err', want 'docker-compose up: ...'" ;;
esac
echo "PASS"
