#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job, one command (`make demo`): install dependencies, build, start the simulated TDX
# module with its PCCS-compatible collateral service and a KMS in its own simulated CVM, boot
# examples/hello's CVM with dstack-util setup (measurement into RTMR3, keys from the KMS over
# RA-TLS, encrypted data volume when run as root), serve it through the guest agent, and verify
# its attestation from outside. Deployment through the VMM with running containers is the next
# step (see the README's status table).
# `scripts/demo.sh down` (make demo-down) stops everything it started. Running it twice is safe.
#
# Everything here is SIMULATED: quotes are signed by a mock Intel PKI and only verify because
# the verifier is told --insecure-allow-simulated. Never use these settings in production.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
STATE=${DSTACK_DEMO_STATE:-$ROOT/demo-state}
BIN=$ROOT/build/bin
# A fixed, public seed: the demo's mock Intel PKI is the same on every run.
SEED=${DSTACK_DEMO_SEED:-64656d6f2d736565642d64656d6f2d736565642d64656d6f2d736565642d2d21}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }

stop_all() {
  for pidfile in "$STATE"/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$pidfile"
  done
  # The app's encrypted data volume: unmount (deepest first) and detach its loop device.
  if [ -d "$STATE" ]; then
    awk -v s="$STATE/" 'index($2, s) == 1 { print $2 }' /proc/mounts | sort -r |
      while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    if command -v losetup >/dev/null; then
      losetup -j "$STATE/hello/data.img" 2>/dev/null | cut -d: -f1 |
        while read -r dev; do losetup -d "$dev" 2>/dev/null || true; done
    fi
  fi
}

wait_for_file() {
  for _ in $(seq 100); do [ -s "$1" ] && return 0; sleep 0.1; done
  echo "demo: timed out waiting for $1" >&2
  return 1
}

if [ "${1:-}" = "down" ]; then
  stop_all
  echo "demo: stopped"
  exit 0
fi

say "Installing dependencies"
scripts/install-deps.sh
say "Building"
make build >/dev/null

stop_all
rm -rf "$STATE"
mkdir -p "$STATE"

say "Starting the simulated TDX module (dstack-tee-sim) and its PCCS"
"$BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$STATE/tee" --pccs-listen 127.0.0.1:0 \
  >"$STATE/tee-sim.log" 2>&1 &
echo $! >"$STATE/tee-sim.pid"
wait_for_file "$STATE/tee/pccs.addr"
PCCS_URL="http://$(cat "$STATE/tee/pccs.addr")"

say "Starting the KMS in its own simulated CVM (dstack-kms --dev: allows every app)"
KMS_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$STATE/tee" --name kms)
"$BIN/dstack-kms" --dev --tee "sim:$KMS_TD" --pccs-url "$PCCS_URL" --state-dir "$STATE/kms" \
  --listen 127.0.0.1:0 >"$STATE/kms.log" 2>&1 &
echo $! >"$STATE/kms.pid"
for _ in $(seq 300); do grep -qs 'KMS listening on' "$STATE/kms.log" && break; sleep 0.1; done
KMS_PORT=$(grep -o 'KMS listening on [^ ]*' "$STATE/kms.log" | tail -1 | sed 's/.*://')
[ -n "$KMS_PORT" ] || { echo "demo: the KMS did not start:" >&2; tail -5 "$STATE/kms.log" >&2; exit 1; }
KMS_URL="https://localhost:$KMS_PORT"

say "Creating the app's CVM and its host share (examples/hello)"
APP_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$STATE/tee" --name hello)
SHARE="$STATE/hello/share"
mkdir -p "$SHARE"
cp examples/hello/app-compose.json "$SHARE/app-compose.json"
COMPOSE_HASH=$(sha256sum "$SHARE/app-compose.json" | cut -c1-64)
APP_ID=${COMPOSE_HASH:0:40}
printf '{"kms_urls":["%s"],"pccs_url":"%s","vm_config":"{\\"cpu_count\\":1,\\"memory_size\\":1073741824}"}\n' \
  "$KMS_URL" "$PCCS_URL" >"$SHARE/.sys-config.json"

say "Booting it: dstack-util setup measures the app into RTMR3, gets its keys from the KMS over RA-TLS"
DISK_ARGS=(--no-data-disk)
if [ "$(id -u)" -eq 0 ]; then
  truncate -s 64M "$STATE/hello/data.img"
  DISK_ARGS=(--data-disk "$STATE/hello/data.img")
else
  echo "demo: not root, so no encrypted data volume (ext4 encryption needs a loop mount)"
fi
"$BIN/dstack-util" setup --host-shared "$SHARE" --work-dir "$STATE/hello/work" --tee "sim:$APP_TD" \
  "${DISK_ARGS[@]}" --insecure-allow-simulated >"$STATE/setup.log" 2>&1 ||
  { echo "demo: setup failed:" >&2; tail -5 "$STATE/setup.log" >&2; exit 1; }
HS="$STATE/hello/work/.host-shared"

say "Starting the guest agent (the app-facing dstack.sock API)"
"$BIN/dstack-guest-agent" --tee "sim:$APP_TD" --keys-file "$HS/.appkeys.json" \
  --compose-file "$HS/app-compose.json" --sys-config-file "$HS/.sys-config.json" \
  --instance-info-file "$HS/.instance_info" --socket "$STATE/dstack.sock" --tappd-socket "" \
  --http 127.0.0.1:0 >"$STATE/guest-agent.log" 2>&1 &
echo $! >"$STATE/guest-agent.pid"
for _ in $(seq 100); do [ -S "$STATE/dstack.sock" ] && break; sleep 0.1; done
[ -S "$STATE/dstack.sock" ] || { echo "demo: the guest agent did not start" >&2; tail -5 "$STATE/guest-agent.log" >&2; exit 1; }

say "The app derives a key through dstack.sock (GetKey)"
curl -sf --unix-socket "$STATE/dstack.sock" "http://localhost/GetKey?path=hello&purpose=demo" |
  tee "$STATE/getkey.json" | head -c 300; echo

say "The app asks for its attestation (GetQuote)"
REPORT_DATA=$(printf 'hello from the demo' | od -An -tx1 | tr -d ' \n')
curl -sf --unix-socket "$STATE/dstack.sock" "http://localhost/GetQuote?report_data=$REPORT_DATA" \
  >"$STATE/attestation.json"

say "Verifying it from outside: DCAP quote against the simulator's PCCS, event log, app identity"
"$BIN/dstack" verify attestation "$STATE/attestation.json" --pccs-url "$PCCS_URL" \
  --insecure-allow-simulated

cat <<EOF

The demo is running (simulated TEE). Try next:
  curl -s --unix-socket $STATE/dstack.sock http://localhost/Info | jq .
  curl -s --unix-socket $STATE/dstack.sock 'http://localhost/GetKey?path=demo&purpose=signing'
  $BIN/dstack kms meta $KMS_URL
  $BIN/dstack verify attestation $STATE/attestation.json --pccs-url $PCCS_URL --insecure-allow-simulated --json
  make demo-down
EOF
echo "PCCS_URL=$PCCS_URL"
echo "KMS_URL=$KMS_URL"
echo "DSTACK_SOCKET=$STATE/dstack.sock"
echo "APP_ID=$APP_ID"
