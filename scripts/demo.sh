#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job, one command (`make demo`, as root on Debian 12): install dependencies, build,
# start the simulated TDX module with its PCCS-compatible collateral service, a KMS in its own
# simulated CVM with an auth-simple allow policy (examples/hello's compose hash + the
# dstack-guest OS image), and dstack-vmm with the sandbox backend; build the dstack-guest image
# and the hello images; `dstack deploy --env-file` examples/hello (GREETING encrypted to the
# KMS's verified env key), deliver the images archive in its host share, start it, wait for the
# app to answer through its mapped port, and verify it (`dstack verify app` when the CLI has it).
# The dstack gateway runs as an app in its own simulated CVM (its keys and its RA-TLS
# certificates from the KMS through its guest agent); the hello CVM registers with it over
# mutual RA-TLS, gets a WireGuard address (wireguard-go on both sides), and the demo curls
# https://<app_id>.<base_domain>/ through it, trusting only the KMS root CA.
# `scripts/demo.sh down` (make demo-down) stops everything it started: VMs removed through the
# VMM (veths, loop devices, mounts, cgroups), then the daemons. Running it twice is safe.
#
# Everything here is SIMULATED: quotes are signed by a mock Intel PKI and only verify because
# the verifier is told --insecure-allow-simulated. Never use these settings in production.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${DSTACK_DEMO_STATE:-$ROOT/demo-state}
# DSTACK_DEMO_BIN: use binaries built elsewhere (skips installing and building).
BIN=${DSTACK_DEMO_BIN:-$ROOT/build/bin}
# A fixed, public seed: the demo's mock Intel PKI is the same on every run.
SEED=${DSTACK_DEMO_SEED:-64656d6f2d736565642d64656d6f2d736565642d64656d6f2d736565642d2d21}
# The sandbox guests reach host services through the VMM's bridge address.
GW=10.213.77.1
IMAGE=dstack-guest-0.5.0
HOST_PORT=${DSTACK_DEMO_PORT:-18080}
GATEWAY_PORT=${DSTACK_DEMO_GATEWAY_PORT:-18443}
BASE_DOMAIN=${DSTACK_DEMO_BASE_DOMAIN:-dstack.localhost}
WG_IF=dsdemo-wg0

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() {
  echo "demo: $*" >&2
  exit 1
}
jfield() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

stop_pid() {
  local pidfile=$1 pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

stop_all() {
  [ -d "$STATE" ] || return 0
  # VMs first, through the VMM: it stops each sandbox and removes its veth, loop device,
  # mounts and cgroups (including the guest engine's dstack-guest-<id> groups).
  if [ -f "$STATE/vmm.pid" ] && kill -0 "$(cat "$STATE/vmm.pid")" 2>/dev/null; then
    for id in $(cat "$STATE"/vm-ids 2>/dev/null); do
      DSTACK_VMM_URL="unix:$STATE/vmm.sock" "$BIN/dstack" rm "$id" >/dev/null 2>&1 || true
    done
    # removal is asynchronous (stop, then the backend's cleanup, then the run dir goes)
    for id in $(cat "$STATE"/vm-ids 2>/dev/null); do
      for _ in $(seq 300); do [ -d "$STATE/run/$id" ] || break; sleep 0.1; done
    done
  fi
  stop_pid "$STATE/vmm.pid"
  stop_pid "$STATE/gateway.pid"
  stop_pid "$STATE/gw-agent.pid"
  stop_pid "$STATE/wireguard-go.pid"
  ip link del "$WG_IF" 2>/dev/null || true
  # anything a crashed VMM left: sandbox inits and port forwarders, then mounts and loops
  for f in "$STATE"/run/*/vm.pid "$STATE"/run/*/sandbox/forwarder.pid; do
    [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null || true
  done
  stop_pid "$STATE/kms.pid"
  stop_pid "$STATE/tee-sim.pid"
  awk -v s="$STATE/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
  if command -v losetup >/dev/null; then
    { losetup -a 2>/dev/null || true; } | { grep -F "$STATE/" || true; } | cut -d: -f1 |
      while read -r dev; do losetup -d "$dev" 2>/dev/null || true; done
  fi
  for id in $(cat "$STATE"/vm-ids 2>/dev/null); do
    for d in /sys/fs/cgroup/*/dstack-guest-"$id" /sys/fs/cgroup/dstack-guest-"$id"; do
      [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
    done
  done
  rm -f "$STATE/vm-ids"
}

if [ "${1:-}" = "down" ]; then
  stop_all
  echo "demo: stopped"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "run as root (the sandbox backend needs namespaces, veths, loop devices)"

if [ -z "${DSTACK_DEMO_BIN:-}" ]; then
  say "Installing dependencies"
  scripts/install-deps.sh
  say "Building"
  make build >/dev/null
fi

stop_all
rm -rf "$STATE"
mkdir -p "$STATE/run" "$STATE/images"

say "Building the dstack-guest OS image and the hello app images (docker-archive)"
scripts/build-guest-image.sh "$STATE/images/$IMAGE" "$BIN" >"$STATE/build.log" 2>&1 ||
  { tail "$STATE/build.log" >&2; die "build-guest-image.sh failed"; }
scripts/build-hello-images.sh "$STATE/hello-images.tar" >>"$STATE/build.log" 2>&1 ||
  { tail "$STATE/build.log" >&2; die "build-hello-images.sh failed"; }
OS_IMAGE=$(cat "$STATE/images/$IMAGE/digest.txt")

say "Starting the simulated TDX module (dstack-tee-sim) and its PCCS"
"$BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$STATE/tee" --pccs-listen 0.0.0.0:0 \
  >"$STATE/tee-sim.log" 2>&1 &
echo $! >"$STATE/tee-sim.pid"
for _ in $(seq 100); do [ -s "$STATE/tee/pccs.addr" ] && break; sleep 0.1; done
[ -s "$STATE/tee/pccs.addr" ] || die "dstack-tee-sim did not start"
PCCS_PORT=$(sed 's/.*://' "$STATE/tee/pccs.addr")

start_kms() { # LOG [ARGS...]
  local log=$1
  shift
  "$BIN/dstack-kms" --dev --tee "sim:$KMS_TD" --pccs-url "http://127.0.0.1:$PCCS_PORT" \
    --domain "$GW" --state-dir "$STATE/kms" --listen 0.0.0.0:0 "$@" >"$STATE/$log" 2>&1 &
  echo $! >"$STATE/kms.pid"
  for _ in $(seq 300); do grep -qs 'KMS listening on' "$STATE/$log" && break; sleep 0.1; done
  KMS_PORT=$(grep -o 'KMS listening on [^ ]*' "$STATE/$log" | tail -1 | sed 's/.*://')
  [ -n "$KMS_PORT" ] || { tail -5 "$STATE/$log" >&2; die "the KMS did not start"; }
}
own_boot() { # LOG KEY: the KMS's own BootInfo as it logged it
  grep -o 'own boot info: .*' "$STATE/$1" | head -1 | sed 's/own boot info: //' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
write_policy() { # MR [APP_ID COMPOSE_HASH]: the KMS, the gateway app once known, the app
  local apps=""
  [ -n "${GW_APP_ID:-}" ] &&
    apps="\"0x$GW_APP_ID\": {\"composeHashes\": [\"0x$GW_COMPOSE_HASH\"], \"allowAnyDevice\": true}"
  [ $# -ge 3 ] && apps="$apps${apps:+, }\"0x$2\": {\"composeHashes\": [\"0x$3\"], \"allowAnyDevice\": true}"
  cat >"$STATE/policy.json.tmp" <<JSON
{
  "osImages": ["0x$KMS_OS", "0x$OS_IMAGE"],
  "gatewayAppId": "${GW_APP_ID:-}",
  "kms": {"mrAggregated": ["0x$1"], "allowAnyDevice": true},
  "apps": {$apps}
}
JSON
  mv "$STATE/policy.json.tmp" "$STATE/policy.json"
}

say "Starting the KMS in its own simulated CVM, with an auth-simple allow policy"
KMS_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$STATE/tee" --name kms)
# First start bootstraps its keys (dev authorization), then it serves under the policy file,
# which it re-reads when it changes: its own measurement, then the app once deployed.
start_kms kms-bootstrap.log
stop_pid "$STATE/kms.pid"
KMS_OS=$(own_boot kms-bootstrap.log osImageHash)
write_policy "$(own_boot kms-bootstrap.log mrAggregated)"
start_kms kms.log --policy "$STATE/policy.json"
KMS_MR=$(own_boot kms.log mrAggregated)
write_policy "$KMS_MR"
KMS_URL="https://$GW:$KMS_PORT"

say "Starting dstack-vmm with the sandbox backend"
cat >"$STATE/vmm.toml" <<TOML
address = "unix:$STATE/vmm.sock"
run_path = "$STATE/run"

[image]
path = "$STATE/images"

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
DSTACK_TEE_SIM_DIR="$STATE/tee" "$BIN/dstack-vmm" -c "$STATE/vmm.toml" >"$STATE/vmm.log" 2>&1 &
echo $! >"$STATE/vmm.pid"
for _ in $(seq 100); do [ -S "$STATE/vmm.sock" ] && break; sleep 0.1; done
[ -S "$STATE/vmm.sock" ] || die "dstack-vmm did not come up"
export DSTACK_VMM_URL="unix:$STATE/vmm.sock"

say "Starting the dstack gateway in its own simulated CVM (certificates from the KMS via its guest agent)"
# Its app: examples/gateway/app-compose.json, measured into its own TD by dstack-util setup,
# which fetches its keys from the KMS (the policy allows it and names it as gatewayAppId).
GW_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$STATE/tee" --name gateway)
mkdir -p "$STATE/gateway/share" "$STATE/gateway/data" "$STATE/gateway/tls"
cp examples/gateway/app-compose.json "$STATE/gateway/share/app-compose.json"
GW_COMPOSE_HASH=$(sha256sum "$STATE/gateway/share/app-compose.json" | cut -c1-64)
GW_APP_ID=${GW_COMPOSE_HASH:0:40}
write_policy "$KMS_MR"
python3 -c 'import json,sys; print(json.dumps({"kms_urls": [sys.argv[1]], "pccs_url": sys.argv[2],
  "vm_config": json.dumps({"os_image_hash": sys.argv[3], "cpu_count": 1, "memory_size": 1 << 30})}))' \
  "$KMS_URL" "http://127.0.0.1:$PCCS_PORT" "$KMS_OS" >"$STATE/gateway/share/.sys-config.json"
"$BIN/dstack-util" setup --host-shared "$STATE/gateway/share" --work-dir "$STATE/gateway/work" \
  --tee "sim:$GW_TD" --no-data-disk --insecure-allow-simulated >"$STATE/gateway-setup.log" 2>&1 ||
  { tail "$STATE/gateway-setup.log" >&2; die "dstack-util setup of the gateway app failed"; }
GW_HS="$STATE/gateway/work/.host-shared"
"$BIN/dstack-guest-agent" --tee "sim:$GW_TD" --keys-file "$GW_HS/.appkeys.json" \
  --compose-file "$GW_HS/app-compose.json" --sys-config-file "$GW_HS/.sys-config.json" \
  --instance-info-file "$GW_HS/.instance_info" --socket "$STATE/gateway/agent.sock" \
  --tappd-socket "" --http "" >"$STATE/gw-agent.log" 2>&1 &
echo $! >"$STATE/gw-agent.pid"
for _ in $(seq 100); do [ -S "$STATE/gateway/agent.sock" ] && break; sleep 0.1; done
[ -S "$STATE/gateway/agent.sock" ] || die "the gateway's guest agent did not start"
# WireGuard: userspace wireguard-go here (no kernel module on this kind of machine).
ip link del "$WG_IF" 2>/dev/null || true
WG_PROCESS_FOREGROUND=1 wireguard-go -f "$WG_IF" >"$STATE/wireguard-go.log" 2>&1 &
echo $! >"$STATE/wireguard-go.pid"
for _ in $(seq 100); do wg show "$WG_IF" >/dev/null 2>&1 && break; sleep 0.1; done
wg show "$WG_IF" >/dev/null 2>&1 || die "wireguard-go did not create $WG_IF"
ip addr replace 10.213.78.1/24 dev "$WG_IF" && ip link set "$WG_IF" up
WG_PORT=$(python3 -c 'import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("", 0)); print(s.getsockname()[1])')
RPC_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])')
ADMIN_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
(umask 077 && head -c 24 /dev/urandom | base64 >"$STATE/gateway/admin-token")
cat >"$STATE/gateway.toml" <<TOML
# The demo gateway (scripts/demo.sh). SIMULATED TEE: insecure_allow_simulated is for the demo only.
address = "$GW"
port = $RPC_PORT

[tls]
key = "$STATE/gateway/tls/rpc.key"
certs = "$STATE/gateway/tls/rpc.pem"

[tls.mutual]
ca_certs = "$STATE/gateway/tls/ca.pem"

[core]
rpc_domain = "gateway.$BASE_DOMAIN"
agent_socket = "$STATE/gateway/agent.sock"

[core.attestation]
insecure_allow_simulated = true
simulator_root_ca = "$STATE/sim-root.der"

[core.attestation.urls]
pccs = "http://127.0.0.1:$PCCS_PORT"

[core.admin]
enabled = true
address = "127.0.0.1:$ADMIN_PORT"
auth_token = "$(cat "$STATE/gateway/admin-token")"

[core.wg]
private_key = "$(wg genkey)"
interface = "$WG_IF"
listen_port = $WG_PORT
ip = "10.213.78.1/24"
reserved_net = ["10.213.78.1/32"]
client_ip_range = "10.213.78.0/25"
endpoint = "$GW:$WG_PORT"

[core.proxy]
listen_addr = "127.0.0.1"
listen_port = $GATEWAY_PORT
external_port = $GATEWAY_PORT
base_domain = "$BASE_DOMAIN"
cert_source = "agent"

[core.sync]
my_url = "https://$GW:$RPC_PORT"
data_dir = "$STATE/gateway/data"
TOML
chmod 600 "$STATE/gateway.toml"
curl -sf -o "$STATE/sim-root.der" "http://127.0.0.1:$PCCS_PORT/dstack-sim/v1/root-ca.der" ||
  die "no mock root CA from the simulator's PCCS"
"$BIN/dstack-gateway" -c "$STATE/gateway.toml" >"$STATE/gateway.log" 2>&1 &
echo $! >"$STATE/gateway.pid"
for _ in $(seq 300); do grep -qs 'Admin listening on' "$STATE/gateway.log" && break; sleep 0.1; done
grep -qs 'Admin listening on' "$STATE/gateway.log" || { tail "$STATE/gateway.log" >&2; die "the gateway did not start"; }
GATEWAY_CA="$STATE/gateway/tls/ca.pem"
echo "gateway app id $GW_APP_ID, proxy 127.0.0.1:$GATEWAY_PORT for *.$BASE_DOMAIN, RPC https://$GW:$RPC_PORT"

say "Deploying examples/hello (GREETING encrypted to the KMS's env key, which deploy verifies)"
GREETING="hello-from-an-encrypted-env"
echo "GREETING=$GREETING" >"$STATE/app.env"
T0=$(date +%s.%N)
"$BIN/dstack" deploy --name hello --image "$IMAGE" --compose examples/hello/app-compose.json \
  --vcpu 2 --memory 1G --disk 1 --port "tcp:$HOST_PORT:8080" --kms-url "$KMS_URL" \
  --gateway-url "https://$GW:$RPC_PORT" --env-file "$STATE/app.env" --stopped --json >"$STATE/deploy.json"
VM_ID=$(jfield "$STATE/deploy.json" id)
echo "$VM_ID" >>"$STATE/vm-ids"
APP_ID=$(jfield "$STATE/deploy.json" app_id)
COMPOSE_HASH=$(jfield "$STATE/deploy.json" compose_hash)
write_policy "$KMS_MR" "$APP_ID" "$COMPOSE_HASH"
# The images archive goes into the host share (read-only in the guest; docs/containers-in-sandbox.md).
cp "$STATE/hello-images.tar" "$STATE/run/$VM_ID/shared/images.tar"
"$BIN/dstack" start "$VM_ID" >/dev/null

say "Waiting for the CVM to boot (setup -> keys from the KMS over RA-TLS -> dockerd -> compose up)"
st=""
for _ in $(seq 1200); do
  st=$("$BIN/dstack" info "$VM_ID" --json 2>/dev/null | python3 -c 'import json,sys; i=json.load(sys.stdin)
print("%s|%s" % (i.get("boot_progress") or "", i.get("boot_error") or ""))' 2>/dev/null || true)
  case "$st" in
    "booted|") break ;;
    *"|"?*) tail -20 "$STATE/run/$VM_ID/serial.log" >&2; die "boot error: $st" ;;
  esac
  sleep 0.1
done
[ "$st" = "booted|" ] || die "not booted: $st"
ANSWER=""
for _ in $(seq 300); do
  ANSWER=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/" 2>/dev/null) && break
  sleep 0.1
done
[ -n "$ANSWER" ] || die "the app did not answer on 127.0.0.1:$HOST_PORT"
T1=$(date +%s.%N)
echo "app answered: $ANSWER"
python3 -c 'import sys; print("deploy -> app answering: %.1f s" % (float(sys.argv[2]) - float(sys.argv[1])))' "$T0" "$T1"

say "Reaching the app through the gateway: https://$APP_ID.$BASE_DOMAIN/ (SNI -> WireGuard -> port 80)"
GW_ANSWER=""
for _ in $(seq 300); do
  GW_ANSWER=$(curl -sf --max-time 5 --cacert "$GATEWAY_CA" \
    --resolve "$APP_ID.$BASE_DOMAIN:$GATEWAY_PORT:127.0.0.1" "https://$APP_ID.$BASE_DOMAIN:$GATEWAY_PORT/" 2>/dev/null) && break
  sleep 0.1
done
[ -n "$GW_ANSWER" ] || { tail -5 "$STATE/gateway.log" >&2; die "the app did not answer through the gateway"; }
echo "app answered through the gateway (certificate verified against the KMS root CA only): $GW_ANSWER"

if "$BIN/dstack" verify app --help >/dev/null 2>&1; then
  say "Verifying the app from outside (SIMULATED quotes accepted: --insecure-allow-simulated)"
  "$BIN/dstack" verify app "$APP_ID" --vmm-url "$DSTACK_VMM_URL" \
    --pccs-url "http://127.0.0.1:$PCCS_PORT" --insecure-allow-simulated
else
  echo "demo: this dstack CLI has no 'verify app' yet; skipped the external verification"
fi

cat <<EOF

The demo is running (simulated TEE, sandbox CVM). Try next:
  curl -s http://127.0.0.1:$HOST_PORT/
  curl -s --cacert $GATEWAY_CA --resolve $APP_ID.$BASE_DOMAIN:$GATEWAY_PORT:127.0.0.1 https://$APP_ID.$BASE_DOMAIN:$GATEWAY_PORT/
  curl -s -H "Authorization: Bearer \$(cat $STATE/gateway/admin-token)" http://127.0.0.1:$ADMIN_PORT/prpc/Status
  DSTACK_VMM_URL=$DSTACK_VMM_URL $BIN/dstack ls
  DSTACK_VMM_URL=$DSTACK_VMM_URL $BIN/dstack info $VM_ID
  DSTACK_VMM_URL=$DSTACK_VMM_URL $BIN/dstack logs $VM_ID
  DSTACK_VMM_URL=$DSTACK_VMM_URL $BIN/dstack verify app $APP_ID --pccs-url http://127.0.0.1:$PCCS_PORT --insecure-allow-simulated --json
  $BIN/dstack kms meta https://127.0.0.1:$KMS_PORT
  make demo-down
EOF
echo "DSTACK_VMM_URL=$DSTACK_VMM_URL"
echo "KMS_URL=$KMS_URL"
echo "APP_ID=$APP_ID"
echo "APP_URL=http://127.0.0.1:$HOST_PORT/"
echo "GATEWAY_ADDR=127.0.0.1:$GATEWAY_PORT"
echo "GATEWAY_BASE_DOMAIN=$BASE_DOMAIN"
echo "GATEWAY_CA=$GATEWAY_CA"
echo "GATEWAY_APP_URL=https://$APP_ID.$BASE_DOMAIN:$GATEWAY_PORT/"
