# SPDX-License-Identifier: Apache-2.0
# Sourced (not a test: the CTest glob only takes test_*.sh): the dstack gateway running as an
# app in its own simulated TD with a guest agent, as in production (spec host-side.md §4.1):
#   dstack-tee-sim (seeded; a TD for the KMS, one for the gateway) -> dstack-kms --dev on its
#   TD with an auth-simple policy allowing the gateway app -> `dstack-util setup --no-data-disk`
#   measures the gateway's app-compose.json into its TD and gets its keys from the KMS ->
#   dstack-guest-agent for that TD on a Unix socket -> dstack-gateway with core.rpc_domain and
#   core.proxy.cert_source = "agent".
# Used by tests/integration/test_gateway_agent_certs.sh and reusable by scripts/demo.sh.
#
# Use:
#   . tests/integration/gateway_agent_stack.sh
#   gas_init NAME          # work dir $GAS (mktemp), cleanup trap (processes, files)
#   gas_start_sim          # PCCS, SIMROOT (mock root DER), KMS_TD, GW_TD
#   gas_start_kms          # KURL (https://localhost:port), ROOT_PEM (KMS root CA), OS, MR
#   gas_setup_gateway_app  # GW_APP_ID, GW_COMPOSE_HASH; policy allows it; setup done
#   gas_start_agent        # AGENT_SOCK
#   gas_write_gateway_config FILE [PROXY_TOML [EXTRA_TOML]]  # RPC_PORT, PROXY_PORT, BASE
#   gas_start_gateway FILE # GW_PID; waits for the RPC listener
# Every daemon logs to $GAS/<name>.log; gas_fail prints the tails. Needs root (setup).

BIN=${DS_BIN:-$(dirname "${BASH_SOURCE[0]}")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
GAS_PY=/usr/bin/python3

gas_fail() {
    echo "FAIL: $*"
    local f
    for f in "$GAS"/*.log; do [ -f "$f" ] && { echo "--- $f"; tail -n 20 "$f"; }; done
    exit 1
}

gas_preflight() {
    local b
    [ "$(id -u)" = 0 ] || { echo "SKIP: needs root (dstack-util setup)"; exit 77; }
    for b in dstack-tee-sim dstack-kms dstack-util dstack-guest-agent dstack-gateway dstack; do
        [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b not built"; exit 1; }
    done
    for b in curl openssl; do
        command -v "$b" >/dev/null || { echo "SKIP: $b not installed"; exit 77; }
    done
    "$GAS_PY" -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography missing"; exit 77; }
}

gas_cleanup() {
    local rc=$? p
    for p in "${GAS_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${GAS_PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if grep -l -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
        "$GAS"/*.log >/dev/null 2>&1; then
        echo "FAIL: sanitizer report in a daemon log"
        grep -h -A30 -E 'ERROR: .*Sanitizer|runtime error:' "$GAS"/*.log | head -80
        rc=1
    fi
    if [ -n "${GAS_KEEP:-}" ]; then echo "kept $GAS"; else rm -rf "$GAS"; fi
    exit $rc
}

gas_init() {
    GAS=$(mktemp -d "/tmp/$1.XXXXXX")
    GAS_PIDS=()
    trap gas_cleanup EXIT
}

gas_free_port() {
    "$GAS_PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# gas_wait SECONDS CMD...: poll until CMD succeeds
gas_wait() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.1
    done
}

gas_start_sim() {
    local seed=6761732d737461636b2d73696d2d736565642d30303030303030303030303031
    "$BIN/dstack-tee-sim" serve --seed "$seed" --state-dir "$GAS/sim" --pccs-listen 127.0.0.1:0 \
        >"$GAS/sim.log" 2>&1 &
    GAS_PIDS+=("$!")
    gas_wait 20 test -S "$GAS/sim/control.sock" -a -s "$GAS/sim/pccs.addr" || gas_fail "tee-sim did not start"
    PCCS="http://$(cat "$GAS/sim/pccs.addr")"
    curl -sf -o "$GAS/simroot.der" "$PCCS/dstack-sim/v1/root-ca.der" || gas_fail "no mock root at $PCCS"
    SIMROOT="$GAS/simroot.der"
    KMS_TD0=$("$BIN/dstack-tee-sim" create-td --state-dir "$GAS/sim" --name kms0) || gas_fail "create-td kms0"
    KMS_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$GAS/sim" --name kms) || gas_fail "create-td kms"
    GW_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$GAS/sim" --name gateway) || gas_fail "create-td gateway"
}

# _gas_kms NAME ARGS...: start dstack-kms, wait for its listener; sets GAS_KMS_PID, KMS_PORT
_gas_kms() {
    local name=$1
    shift
    "$BIN/dstack-kms" "$@" >"$GAS/$name.log" 2>&1 &
    GAS_KMS_PID=$!
    GAS_PIDS+=("$GAS_KMS_PID")
    gas_wait 60 grep -q 'KMS listening on' "$GAS/$name.log" || gas_fail "the KMS ($name) did not start"
    KMS_PORT=$(grep -o 'KMS listening on [^ ]*' "$GAS/$name.log" | tail -1 | sed 's/.*://')
}

# Bootstrap the KMS keys on one TD, then serve them under the policy file from a fresh TD.
gas_start_kms() {
    local line
    _gas_kms kms-boot --dev --tee "sim:$KMS_TD0" --pccs-url "$PCCS" --state-dir "$GAS/kms" \
        --listen 127.0.0.1:0
    kill "$GAS_KMS_PID" && wait "$GAS_KMS_PID" 2>/dev/null
    GAS_POLICY="$GAS/policy.json"
    _gas_kms kms --dev --tee "sim:$KMS_TD" --pccs-url "$PCCS" --state-dir "$GAS/kms" \
        --listen 127.0.0.1:0 --policy "$GAS_POLICY"
    line=$(grep -o 'own boot info: .*' "$GAS/kms.log" | head -1 | sed 's/own boot info: //')
    OS=$("$GAS_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["osImageHash"])' "$line")
    MR=$("$GAS_PY" -c 'import json,sys; print(json.loads(sys.argv[1])["mrAggregated"])' "$line")
    KURL="https://localhost:$KMS_PORT"
    "$BIN/dstack" kms meta "$KURL" --json >"$GAS/kms-meta.json" || gas_fail "dstack kms meta"
    ROOT_PEM="$GAS/kms-root.pem"
    "$GAS_PY" -c 'import json,sys; open(sys.argv[2],"w").write(json.load(open(sys.argv[1]))["ca_cert"])' \
        "$GAS/kms-meta.json" "$ROOT_PEM"
}

# The gateway's app: a bash runner that execs the gateway (what the compose describes; here
# the test starts the gateway itself). setup measures it into GW_TD and gets its keys.
gas_setup_gateway_app() {
    local share="$GAS/share"
    mkdir -p "$share"
    cat >"$share/app-compose.json" <<'EOF'
{
    "manifest_version": 2,
    "name": "dstack-gateway",
    "runner": "bash",
    "bash_script": "exec dstack-gateway -c /data/gateway/gateway.toml",
    "kms_enabled": true,
    "public_tcbinfo": true,
    "secure_time": false
}
EOF
    GW_COMPOSE_HASH=$(sha256sum "$share/app-compose.json" | cut -c1-64)
    GW_APP_ID=${GW_COMPOSE_HASH:0:40}
    "$GAS_PY" -c 'import json,sys; print(json.dumps({"kms_urls":[sys.argv[1]],"pccs_url":sys.argv[2],"vm_config":sys.argv[3]}))' \
        "$KURL" "$PCCS" "{\"os_image_hash\":\"$OS\",\"cpu_count\":1,\"memory_size\":1073741824}" \
        >"$share/.sys-config.json"
    printf '%s' "{\"osImages\":[\"$OS\"],\"gatewayAppId\":\"$GW_APP_ID\",\"kms\":{\"mrAggregated\":[\"$MR\"],\"allowAnyDevice\":true},\"apps\":{\"$GW_APP_ID\":{\"composeHashes\":[\"$GW_COMPOSE_HASH\"],\"allowAnyDevice\":true}}}" \
        >"$GAS_POLICY.tmp" && mv "$GAS_POLICY.tmp" "$GAS_POLICY"
    "$BIN/dstack-util" setup --host-shared "$share" --work-dir "$GAS/gwwork" --tee "sim:$GW_TD" \
        --no-data-disk --insecure-allow-simulated >"$GAS/setup.log" 2>&1 ||
        gas_fail "dstack-util setup of the gateway app"
    GAS_HS="$GAS/gwwork/.host-shared"
}

gas_start_agent() {
    AGENT_SOCK="$GAS/agent.sock"
    "$BIN/dstack-guest-agent" --tee "sim:$GW_TD" --keys-file "$GAS_HS/.appkeys.json" \
        --compose-file "$GAS_HS/app-compose.json" --sys-config-file "$GAS_HS/.sys-config.json" \
        --instance-info-file "$GAS_HS/.instance_info" --socket "$AGENT_SOCK" --tappd-socket "" \
        --http "" >"$GAS/agent.log" 2>&1 &
    GAS_AGENT_PID=$!
    GAS_PIDS+=("$GAS_AGENT_PID")
    gas_wait 30 test -S "$AGENT_SOCK" || gas_fail "the guest agent did not start"
}

# gas_write_gateway_config FILE [PROXY_TOML [EXTRA_TOML]]: rpc_domain + cert_source "agent";
# registry only (no WireGuard); PROXY_TOML = more [core.proxy] lines, EXTRA_TOML = more tables
# at the end (e.g. [core.admin]); sets RPC_PORT, PROXY_PORT, BASE.
gas_write_gateway_config() {
    RPC_PORT=$(gas_free_port)
    PROXY_PORT=$(gas_free_port)
    BASE=${BASE:-gw.test}
    mkdir -p "$GAS/gwdata" "$GAS/gwtls"
    cat >"$1" <<EOF
address = "127.0.0.1"
port = $RPC_PORT

[tls]
key = "$GAS/gwtls/rpc.key"
certs = "$GAS/gwtls/rpc.pem"

[tls.mutual]
ca_certs = "$GAS/gwtls/ca.pem"

[core]
rpc_domain = "gateway.$BASE"
agent_socket = "$AGENT_SOCK"

[core.attestation]
insecure_allow_simulated = true
simulator_root_ca = "$SIMROOT"

[core.attestation.urls]
pccs = "${GAS_GW_PCCS:-$PCCS}"

[core.wg]
enabled = false
private_key = "$("$GAS_PY" -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
ip = "10.9.0.1/24"
reserved_net = ["10.9.0.1/32"]
client_ip_range = "10.9.0.0/25"

[core.proxy]
listen_addr = "127.0.0.1"
listen_port = $PROXY_PORT
base_domain = "$BASE"
cert_source = "agent"
${2:-}

[core.sync]
my_url = "https://localhost:$RPC_PORT"
data_dir = "$GAS/gwdata"

[core.debug]
insecure_localhost_backend = true

${3:-}
EOF
}

gas_start_gateway() {
    "$BIN/dstack-gateway" -c "$1" >"$GAS/gateway.log" 2>&1 &
    GW_PID=$!
    GAS_PIDS+=("$GW_PID")
    gas_wait 60 grep -q 'Gateway RPC listening' "$GAS/gateway.log" ||
        gas_fail "the gateway did not start"
}
