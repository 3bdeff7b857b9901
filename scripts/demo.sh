#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The main job, one command (`make demo`): install dependencies, build, start the simulated TDX
# module with its PCCS-compatible collateral service, boot a simulated CVM's measurement
# sequence (the runtime events dstack-util extends into RTMR3), serve it through the guest
# agent, fetch an attestation over the dstack.sock API and verify it from outside.
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

say "Creating a CVM (its MRTD/RTMR0-2 come from the measured image; fixed values here)"
MRTD=$(printf '%096d' 0 | tr 0 1)
TD_SOCK=$("$BIN/dstack-tee-sim" create-td --state-dir "$STATE/tee" --name demo-app --mrtd "$MRTD")

say "Measuring the boot as dstack-util does (runtime events into RTMR3)"
COMPOSE=examples/hello/app-compose.json
COMPOSE_HASH=$(sha256sum "$COMPOSE" | cut -c1-64)
APP_ID=${COMPOSE_HASH:0:40}
INSTANCE_ID=$(printf 'demo-instance' | sha256sum | cut -c1-40)
KEY_PROVIDER=$(printf '{"name":"none","id":""}' | od -An -tx1 | tr -d ' \n')
ext() { "$BIN/dstack-tee-sim" extend --socket "$TD_SOCK" --index 3 --event "$1" ${2:+--payload "$2"} >/dev/null; }
ext system-preparing
ext app-id "$APP_ID"
ext compose-hash "$COMPOSE_HASH"
ext instance-id "$INSTANCE_ID"
ext boot-mr-done
ext key-provider "$KEY_PROVIDER"
ext system-ready

say "Starting the guest agent on the CVM's TEE (dstack.sock API)"
DSTACK_TEE="sim:$TD_SOCK" "$BIN/dstack-guest-agent" --socket "$STATE/dstack.sock" \
  --app-compose "$COMPOSE" --app-id "$APP_ID" --instance-id "$INSTANCE_ID" \
  >"$STATE/guest-agent.log" 2>&1 &
echo $! >"$STATE/guest-agent.pid"
for _ in $(seq 100); do [ -S "$STATE/dstack.sock" ] && break; sleep 0.1; done

say "An app asks for its attestation: GetQuote over /var/run/dstack.sock"
REPORT_DATA=$(printf 'hello from the demo' | od -An -tx1 | tr -d ' \n')
curl -sf --unix-socket "$STATE/dstack.sock" "http://localhost/GetQuote?report_data=$REPORT_DATA" \
  >"$STATE/attestation.json"

say "Verifying it from outside: quote (DCAP against the simulator's PCCS), event log, app identity"
"$BIN/dstack" verify attestation "$STATE/attestation.json" --pccs-url "$PCCS_URL" \
  --insecure-allow-simulated

cat <<EOF

The demo is running (simulated TEE). Try next:
  curl -s --unix-socket $STATE/dstack.sock http://localhost/Info | jq .
  curl -s --unix-socket $STATE/dstack.sock 'http://localhost/GetKey?path=demo&purpose=signing'
  $BIN/dstack verify attestation $STATE/attestation.json --pccs-url $PCCS_URL --insecure-allow-simulated --json
  make demo-down
EOF
echo "PCCS_URL=$PCCS_URL"
echo "DSTACK_SOCKET=$STATE/dstack.sock"
echo "APP_ID=$APP_ID"
