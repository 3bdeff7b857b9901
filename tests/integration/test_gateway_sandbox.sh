#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# The guest side of gateway registration end to end (spec host-side.md §3.3 step 17, §3.6,
# §4.3; docs/gateway.md "Guest side"): dstack-tee-sim, dstack-kms --dev under an auth-simple
# policy whose top-level "gatewayAppId" names the gateway app, dstack-gateway on the host with a
# userspace WireGuard interface (wireguard-go) and an RPC certificate minted by
# `dstack-util ratls-cert --app-id` from the KMS's REAL root CA (so the guest's server
# verification: chain to the KMS root CA + gateway app id substring rule, is exercised), and
# dstack-vmm with the sandbox backend. An app whose compose has gateway_enabled (busybox httpd
# from the hello images, port 80) boots; its /init runs `dstack-util gateway-setup` (client
# certificate from the guest agent's GetTlsKey, RegisterCvm, dstack-wg0 via wireguard-go + wg
# setconf + ip + iptables) and `dstack-util gateway-checker` (short intervals through the
# measured cmdline word dstack.gateway_checker=...). Checked:
#   1. the gateway's admin Status lists the instance with the guest's WireGuard address;
#   2. the guest's dstack-wg0 has a handshake; its DSTACK_WG chain accepts only the endpoint;
#   3. https://<app_id>.<base>:<proxy port>/ through the gateway's SNI proxy answers with the
#      app's content (SNI -> WireGuard -> the container in the CVM);
#   4. after Admin RemoveInstance the checker registers the instance again (shortened interval)
#      and, the handshake being stale, forces a tunnel refresh: the route works again;
#   5. negative: a second CVM pointed at a gateway whose certificate carries another app id
#      refuses it: boot_error "dstack-gateway registration failed, ... is not the expected
#      gateway app id" in `dstack info`, and the app still boots (booted, answers on its port).
# Needs root, namespaces, docker.io + docker-compose, wg + wireguard-go + /dev/net/tun (77
# otherwise).
set -u

. "$(dirname "$0")/sandbox_stack.sh"
sbx_preflight
for t in wg wireguard-go openssl curl; do
    command -v "$t" >/dev/null || { echo "SKIP: $t missing"; exit 77; }
done
[ -c /dev/net/tun ] || { echo "SKIP: /dev/net/tun missing"; exit 77; }

sbx_init test_gateway_sandbox
WG_IF="" WG_PID="" GW_PID="" GW2_PID=""
gw_cleanup() {
    local p
    for p in $GW_PID $GW2_PID $WG_PID; do
        kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    [ -n "$WG_IF" ] && ip link del "$WG_IF" 2>/dev/null
    if grep -l -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
        "$WORK"/gateway*.log >/dev/null 2>&1; then
        echo "FAIL: sanitizer report in a gateway log"
        grep -h -A20 -E 'ERROR: .*Sanitizer|runtime error:' "$WORK"/gateway*.log | head -40
    fi
    sbx_cleanup
}
trap gw_cleanup EXIT

gfail() {
    echo "--- gateway.log"; tail -20 "$WORK/gateway.log" 2>/dev/null
    local g="$WORK/run/$VM_ID/sandbox-root"
    [ -n "${GPID:-}" ] && { echo "--- guest gateway logs";
        cat "/proc/$GPID/root/run/dstack-boot/gateway.log" 2>/dev/null;
        tail -20 "/proc/$GPID/root/run/dstack-boot/gateway-checker.log" 2>/dev/null; }
    fail "$@"
}

# The checker's intervals are shortened through the measured cmdline (scripts/build-guest-image.sh).
export GUEST_CMDLINE_EXTRA="dstack.gateway_checker=--interval=1,--refresh-interval=3,--handshake-timeout=15,--force-interval=15,--backoff-min=2,--backoff-max=4"
sbx_build_images
grep -q 'dstack.gateway_checker=--interval=1' "$WORK/images/dstack-guest-0.5.0/metadata.json" ||
    fail "GUEST_CMDLINE_EXTRA not in the image's cmdline"
sbx_start_sim

GWAPP=$(printf '9a%.0s' $(seq 20))
OTHERAPP=$(printf '9b%.0s' $(seq 20))
OS_IMAGE=$(cat "$WORK/images/dstack-guest-0.5.0/digest.txt")
own_boot() { # LOG KEY
    grep -o 'own boot info: .*' "$WORK/$1" | head -1 | sed 's/own boot info: //' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
write_policy() { # MR [APP_ID COMPOSE_HASH]
    local apps="{}"
    [ $# -ge 3 ] && apps="{\"0x$2\": {\"composeHashes\": [\"0x$3\"], \"allowAnyDevice\": true}}"
    printf '{"gatewayAppId": "%s", "osImages": ["0x%s", "0x%s"], "kms": {"mrAggregated": ["0x%s"], "allowAnyDevice": true}, "apps": %s}\n' \
        "$GWAPP" "$KMS_OS" "$OS_IMAGE" "$1" "$apps" >"$WORK/policy.json.tmp"
    mv "$WORK/policy.json.tmp" "$WORK/policy.json"
}
start_kms kms-bootstrap.log
kill "$KMS_PID" && wait "$KMS_PID" 2>/dev/null
KMS_OS=$(own_boot kms-bootstrap.log osImageHash)
write_policy "$(own_boot kms-bootstrap.log mrAggregated)"
start_kms kms.log --policy "$WORK/policy.json"
KMS_MR=$(own_boot kms.log mrAggregated)
[ ${#KMS_MR} = 64 ] || fail "the KMS did not log its own boot info"
write_policy "$KMS_MR"
[ -s "$WORK/kms/root-ca.crt" ] && [ -s "$WORK/kms/root-ca.key" ] || fail "no root CA in the KMS state dir"

# ---- the gateway's certificates: RPC from the KMS root CA (+ app id), proxy from a test CA ----
GW_TD=$("$BIN/dstack-tee-sim" create-td --state-dir "$WORK/sim" --name gateway) || fail "create-td gateway"
mint_gw() { # NAME APP_ID
    "$BIN/dstack-util" ratls-cert --tee "sim:$GW_TD" --ca-cert "$WORK/kms/root-ca.crt" \
        --ca-key "$WORK/kms/root-ca.key" --server-auth --subject dstack-gateway --alt-name "$GW" \
        --app-id "$2" --out-cert "$WORK/$1.crt" --out-key "$WORK/$1.key" >"$WORK/mint-$1.log" 2>&1 ||
        { cat "$WORK/mint-$1.log"; fail "ratls-cert $1"; }
}
mint_gw gw-rpc "$GWAPP"
mint_gw gw-rpc-other "$OTHERAPP"
openssl x509 -in "$WORK/gw-rpc.crt" -noout -text | grep -q "$(echo "$GWAPP" | cut -c1-8)" ||
    true # (the extension is not decoded by openssl; the guest's check below is the real test)
BASE=gw$$.test
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=test proxy CA" \
    -keyout "$WORK/proxy-ca.key" -out "$WORK/proxy-ca.crt" >/dev/null 2>&1 || fail "proxy CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=*.$BASE" \
    -keyout "$WORK/proxy.key" -out "$WORK/proxy.csr" >/dev/null 2>&1 || fail "proxy CSR"
printf 'subjectAltName=DNS:*.%s\n' "$BASE" >"$WORK/proxy.ext"
openssl x509 -req -in "$WORK/proxy.csr" -CA "$WORK/proxy-ca.crt" -CAkey "$WORK/proxy-ca.key" \
    -CAcreateserial -days 2 -extfile "$WORK/proxy.ext" -out "$WORK/proxy.crt" >/dev/null 2>&1 || fail "proxy cert"
curl -sf -o "$WORK/simroot.der" "http://127.0.0.1:$PCCS_PORT/dstack-sim/v1/root-ca.der" || fail "simulator root"

# ---- host WireGuard (userspace) and the gateway ------------------------------------------------
WG_IF="dsgw$((RANDOM % 100000))"
wireguard-go -f "$WG_IF" >"$WORK/wireguard-go.log" 2>&1 &
WG_PID=$!
for _ in $(seq 100); do wg show "$WG_IF" >/dev/null 2>&1 && break; sleep 0.1; done
wg show "$WG_IF" >/dev/null 2>&1 || { WG_IF=""; fail "wireguard-go did not create the interface"; }
# a /24 that no other test uses: 10.<200..249>.<0..249>.0/24
NET="10.$((200 + RANDOM % 50)).$((RANDOM % 250))"
ip addr add "$NET.1/24" dev "$WG_IF" && ip link set "$WG_IF" up || fail "address on $WG_IF"
WG_PORT=$((20000 + RANDOM % 20000))
PROXY_PORT=$(free_port)
ADMIN_PORT=$(free_port)
ADMIN2_PORT=$(free_port)
TOKEN=gw-admin-$RANDOM$RANDOM
gw_toml() { # FILE CERT KEY ADMIN_PORT PROXY_PORT WG_ENABLED DATA
    cat >"$1" <<EOF
address = "0.0.0.0"
port = 0
[tls]
key = "$3"
certs = "$2"
[tls.mutual]
ca_certs = "$WORK/kms/root-ca.crt"
[core.attestation]
insecure_allow_simulated = true
simulator_root_ca = "$WORK/simroot.der"
[core.attestation.urls]
pccs = "http://127.0.0.1:$PCCS_PORT"
[core.admin]
enabled = true
address = "127.0.0.1:$4"
auth_token = "$TOKEN"
[core.wg]
enabled = $6
private_key = "$(wg genkey)"
interface = "$WG_IF"
listen_port = $WG_PORT
config_path = "$7/wg.conf"
ip = "$NET.1/24"
reserved_net = ["$NET.1/32"]
client_ip_range = "$NET.0/25"
endpoint = "$GW:$WG_PORT"
[core.proxy]
listen_addr = "127.0.0.1"
listen_port = $5
base_domain = "$BASE"
cert_chain = "$WORK/proxy.crt"
cert_key = "$WORK/proxy.key"
[core.sync]
data_dir = "$7"
EOF
}
start_gateway() { # CONF LOG -> sets STARTED_PID, RPC_PORT
    "$BIN/dstack-gateway" -c "$1" >"$2" 2>&1 &
    STARTED_PID=$!
    for _ in $(seq 150); do grep -qs 'Admin listening on' "$2" && break; sleep 0.1; done
    RPC_PORT=$(grep -o 'Gateway RPC listening on [^ ]*' "$2" | tail -1 | sed 's/.*://')
    [ -n "$RPC_PORT" ] || { tail "$2"; fail "dstack-gateway did not start ($1)"; }
}
mkdir -p "$WORK/gwdata" "$WORK/gwdata2"
gw_toml "$WORK/gateway.toml" "$WORK/gw-rpc.crt" "$WORK/gw-rpc.key" "$ADMIN_PORT" "$PROXY_PORT" true "$WORK/gwdata"
start_gateway "$WORK/gateway.toml" "$WORK/gateway.log"
GW_PID=$STARTED_PID GW_RPC=$RPC_PORT
# the second gateway: same CA, another app id in its certificate; registry only
gw_toml "$WORK/gateway2.toml" "$WORK/gw-rpc-other.crt" "$WORK/gw-rpc-other.key" "$ADMIN2_PORT" \
    "$(free_port)" false "$WORK/gwdata2"
start_gateway "$WORK/gateway2.toml" "$WORK/gateway2.log"
GW2_PID=$STARTED_PID GW2_RPC=$RPC_PORT
echo "ok - gateways on :$GW_RPC (app id $GWAPP) and :$GW2_RPC (app id $OTHERAPP), WireGuard $WG_IF $NET.1/24 udp $WG_PORT"

sbx_start_vmm

# ---- the app: busybox httpd (hello's backend image) published on port 80, gateway enabled -----
python3 - "$SRC/examples/hello/app-compose.json" "$WORK/app-compose.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["name"] = "gwapp"
c["gateway_enabled"] = True
c["allowed_envs"] = []
c["docker_compose_file"] = ("services:\n  web:\n    image: localhost/dstack-hello-backend:latest\n"
                            "    ports:\n      - \"80:8081\"\n")
json.dump(c, open(sys.argv[2], "w"), indent=4)
PY
HOST_PORT=$(free_port)
deploy() { # NAME GATEWAY_PORT HOST_PORT -> prints the deploy JSON path
    "$BIN/dstack" deploy --name "$1" --image dstack-guest-0.5.0 --compose "$WORK/app-compose.json" \
        --vcpu 2 --memory 1G --disk 1 --port "tcp:$3:80" --kms-url "https://$GW:$KMS_PORT" \
        --gateway-url "https://$GW:$2" --stopped --json >"$WORK/deploy-$1.json" 2>"$WORK/deploy-$1.err" ||
        { cat "$WORK/deploy-$1.err"; fail "dstack deploy $1"; }
}
jget() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
deploy gwapp "$GW_RPC" "$HOST_PORT"
VM_ID=$(jget "$WORK/deploy-gwapp.json" id)
APP_ID=$(jget "$WORK/deploy-gwapp.json" app_id)
COMPOSE_HASH=$(jget "$WORK/deploy-gwapp.json" compose_hash)
write_policy "$KMS_MR" "$APP_ID" "$COMPOSE_HASH"
cp "$WORK/hello-images.tar" "$WORK/run/$VM_ID/shared/images.tar" || fail "copy images.tar"
T0=$(date +%s.%N)
"$BIN/dstack" start "$VM_ID" >/dev/null || fail "dstack start"

boot_state() { # VM -> "progress|error"
    "$BIN/dstack" info "$1" --json 2>/dev/null | python3 -c 'import json,sys; i=json.load(sys.stdin)
print("%s|%s" % (i.get("boot_progress") or "", i.get("boot_error") or ""))' 2>/dev/null
}
wait_booted() { # VM -> sets ST
    ST=""
    for _ in $(seq 1800); do
        ST=$(boot_state "$1")
        case "$ST" in booted\|*) return 0 ;; esac
        case "$ST" in *"|"?*) case "$ST" in *"dstack-gateway registration failed"*) ;; *) return 1 ;; esac ;; esac
        sleep 0.1
    done
    return 1
}
wait_booted "$VM_ID" || fail "not booted: $ST"
T_BOOT=$(date +%s.%N)
[ "$ST" = "booted|" ] || fail "boot error: $ST"
GPID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
GROOT="/proc/$GPID/root"
echo "ok - booted with the gateway enabled in $(python3 -c "print('%.1f' % ($T_BOOT - $T0))") s, no boot_error"
grep -q 'setting up dstack-gateway' "$WORK/run/$VM_ID/serial.log" ||
    grep -q 'gateway: registered' "$GROOT/run/dstack-boot/gateway.log" || gfail "no gateway step in the guest"

# ---- 1. the gateway's registry has the instance with the guest's WireGuard address --------------
GUEST_WG_IP=$(sed -n 's#^Address = \(.*\)/32$#\1#p' "$GROOT/etc/wireguard/dstack-wg0.conf" 2>/dev/null)
[ -n "$GUEST_WG_IP" ] || gfail "no /etc/wireguard/dstack-wg0.conf in the guest"
[ "$(stat -c %a "$GROOT/etc/wireguard/dstack-wg0.conf")" = 600 ] || gfail "the WireGuard config is not 0600"
[ "$(stat -c %a "$GROOT/run/dstack/gateway-cache.json")" = 600 ] || gfail "the key cache is not 0600"
INSTANCE_ID=$("$BIN/dstack" info "$VM_ID" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["instance_id"])')
admin() { # PORT METHOD [JSON] -> body on stdout
    curl -sf -X POST -H 'Content-Type: application/json' -H "Authorization: Bearer $TOKEN" \
        --data-binary "${3:-{\}}" "http://127.0.0.1:$1/prpc/$2"
}
status_ip() { # instance id -> its ip in the gateway's Status ("" when absent)
    admin "$ADMIN_PORT" Status | python3 -c 'import json,sys
for h in json.load(sys.stdin).get("hosts", []):
    if h["instance_id"] == sys.argv[1]: print(h["ip"])' "$1"
}
[ "$(status_ip "$INSTANCE_ID")" = "$GUEST_WG_IP" ] ||
    gfail "Status does not list instance $INSTANCE_ID with $GUEST_WG_IP: $(admin "$ADMIN_PORT" Status)"
echo "ok - gateway Status lists instance $INSTANCE_ID at $GUEST_WG_IP (the guest's dstack-wg0 address)"

# The commands' configuration errors, on the host with the guest's files: gateway disabled =>
# exit 0; no gateway_urls => checker exit 3 (RestartPreventExitStatus); no_instance_id and an
# empty gateway_app_id => gateway-setup fails naming the field (exit 1).
C="$WORK/chk/.host-shared"
mkdir -p "$C"
cp "$GROOT/run/dstack/.host-shared/.appkeys.json" "$C/" || gfail "no .appkeys.json in the guest"
echo '{"gateway_urls": []}' >"$C/.sys-config.json"
chk_compose() { python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c.update(json.loads(sys.argv[2]))
json.dump(c, open(sys.argv[3], "w"))' "$WORK/app-compose.json" "$1" "$C/app-compose.json"; }
chk_compose '{"gateway_enabled": false}'
"$BIN/dstack-util" gateway-checker --work-dir "$WORK/chk" >"$WORK/chk.out" 2>&1; rc=$?
[ $rc = 0 ] && grep -q 'not enabled' "$WORK/chk.out" || fail "checker, gateway disabled: rc $rc $(cat "$WORK/chk.out")"
chk_compose '{}'
"$BIN/dstack-util" gateway-checker --work-dir "$WORK/chk" >"$WORK/chk.out" 2>&1; rc=$?
[ $rc = 3 ] && grep -q 'has no gateway_urls' "$WORK/chk.out" || fail "checker without URLs: rc $rc $(cat "$WORK/chk.out")"
echo '{"gateway_urls": ["https://127.0.0.1:9"]}' >"$C/.sys-config.json"
chk_compose '{"no_instance_id": true}'
"$BIN/dstack-util" gateway-setup --work-dir "$WORK/chk" --cache "$WORK/chk/cache.json" \
    --wg-config "$WORK/chk/wg.conf" >"$WORK/chk.out" 2>&1; rc=$?
[ $rc = 1 ] && grep -q 'registration failed, the app has no ingress route: app-compose.json sets no_instance_id' "$WORK/chk.out" ||
    fail "gateway-setup with no_instance_id: rc $rc $(cat "$WORK/chk.out")"
chk_compose '{"port_policy": {"ports": [{"port": 99999}]}}'
"$BIN/dstack-util" gateway-setup --work-dir "$WORK/chk" --cache "$WORK/chk/cache.json" \
    --wg-config "$WORK/chk/wg.conf" >"$WORK/chk.out" 2>&1; rc=$?
[ $rc = 1 ] && grep -q 'port_policy.ports\[0\] must be' "$WORK/chk.out" ||
    fail "gateway-setup with a bad port_policy: rc $rc $(cat "$WORK/chk.out")"
[ ! -e "$WORK/chk/wg.conf" ] || fail "a refused gateway-setup wrote a WireGuard config"
! "$BIN/dstack-util" ratls-cert --app-id 9z --out-key "$WORK/x.key" --out-cert "$WORK/x.crt" >"$WORK/chk.out" 2>&1 &&
    grep -q -- '--app-id: expected 2-128 hex digits' "$WORK/chk.out" || fail "ratls-cert --app-id 9z: $(cat "$WORK/chk.out")"
echo "ok - disabled: exit 0; no gateway_urls: checker exit 3; no_instance_id / bad port_policy / bad --app-id refused by name"

# ---- 2. the tunnel in the guest ------------------------------------------------------------------
gwg() { nsenter -t "$GPID" -m -n /usr/bin/wg "$@"; }
HS=0
for _ in $(seq 100); do
    HS=$(gwg show dstack-wg0 latest-handshakes 2>/dev/null | awk '{ if ($2 > m) m = $2 } END { print m + 0 }')
    [ "$HS" -gt 0 ] && break
    sleep 0.2
done
[ "$HS" -gt 0 ] || gfail "no handshake on the guest's dstack-wg0: $(gwg show dstack-wg0 2>&1 | grep -v private)"
nsenter -t "$GPID" -n ip -4 addr show dev dstack-wg0 | grep -q "inet $GUEST_WG_IP/32" ||
    gfail "dstack-wg0 lacks $GUEST_WG_IP/32"
nsenter -t "$GPID" -n ip -4 route show dev dstack-wg0 | grep -q "^$NET.1 " ||
    gfail "no /32 route to $NET.1 on dstack-wg0: $(nsenter -t "$GPID" -n ip -4 route)"
nsenter -t "$GPID" -m -n /usr/sbin/iptables -S DSTACK_WG >"$WORK/chain.txt" 2>&1
nsenter -t "$GPID" -m -n /usr/sbin/iptables -S INPUT >>"$WORK/chain.txt" 2>&1
grep -q -- "-A DSTACK_WG -s $GW/32 -j ACCEPT" "$WORK/chain.txt" &&
    grep -q -- "-A DSTACK_WG -j DROP" "$WORK/chain.txt" &&
    [ "$(grep -c -- '-A INPUT -p udp -m udp --dport 9182 -j DSTACK_WG' "$WORK/chain.txt")" = 1 ] ||
    gfail "DSTACK_WG chain: $(cat "$WORK/chain.txt")"
echo "ok - guest dstack-wg0: handshake at $HS, $GUEST_WG_IP/32, route to $NET.1, DSTACK_WG accepts only $GW"

# ---- 3. through the gateway: SNI -> WireGuard -> the container ----------------------------------
ANSWER=""
for _ in $(seq 50); do
    ANSWER=$(curl -sf --max-time 5 --cacert "$WORK/proxy-ca.crt" \
        --resolve "$APP_ID.$BASE:$PROXY_PORT:127.0.0.1" "https://$APP_ID.$BASE:$PROXY_PORT/" 2>"$WORK/curl.err") && break
    sleep 0.2
done
[ "$ANSWER" = "backend-ok" ] || gfail "through the gateway: '$ANSWER' $(cat "$WORK/curl.err")"
echo "ok - https://$APP_ID.$BASE:$PROXY_PORT/ through the gateway answers '$ANSWER'"

# ---- 4. the checker registers again after the gateway removed the instance ---------------------
admin "$ADMIN_PORT" RemoveInstance "{\"instance_id\":\"$INSTANCE_ID\"}" >/dev/null || gfail "RemoveInstance"
[ -z "$(status_ip "$INSTANCE_ID")" ] || gfail "RemoveInstance left the instance in Status"
T_RM=$(date +%s.%N)
BACK=""
for _ in $(seq 150); do
    BACK=$(status_ip "$INSTANCE_ID")
    [ -n "$BACK" ] && break
    sleep 0.2
done
[ "$BACK" = "$GUEST_WG_IP" ] || gfail "the checker did not register again (Status: '$BACK')"
grep -q 'periodic re-registration' "$GROOT/run/dstack-boot/gateway-checker.log" ||
    gfail "the checker log has no re-registration"
echo "ok - after RemoveInstance the checker registered again in $(python3 -c "print('%.1f' % ($(date +%s.%N) - $T_RM))") s, same address $BACK"
# The gateway re-added our peer without a session or endpoint: the route is back once the guest
# handshakes again, which the checker forces when the handshake is older than its timeout
# (15 s here, 180 s by default; the forced refresh restarts the WireGuard sessions).
ANSWER=""
for _ in $(seq 60); do
    ANSWER=$(curl -sf --max-time 3 --cacert "$WORK/proxy-ca.crt" \
        --resolve "$APP_ID.$BASE:$PROXY_PORT:127.0.0.1" "https://$APP_ID.$BASE:$PROXY_PORT/" 2>/dev/null) && break
    sleep 1
done
[ "$ANSWER" = "backend-ok" ] || gfail "through the gateway after re-registration: '$ANSWER'"
echo "ok - the route works again $(python3 -c "print('%.1f' % ($(date +%s.%N) - $T_RM))") s after RemoveInstance"

# The checker stops on SIGTERM (as at shutdown) and, under ASan, its exit reports no leak; no
# sanitizer report from gateway-setup either (its log is on the serial console).
CHK=$(nsenter -t "$GPID" -p -m /bin/sh -c 'for p in /proc/[0-9]*; do
    case "$(tr "\0" " " <"$p/cmdline" 2>/dev/null)" in
        "dstack-util gateway-checker "*) echo "${p#/proc/}" ;; esac; done')
[ "$(echo "$CHK" | wc -w)" = 1 ] || gfail "expected one gateway-checker in the guest, found '$CHK'"
nsenter -t "$GPID" -p -m /bin/kill -TERM "$CHK"
for _ in $(seq 100); do grep -q 'gateway-checker: stopping' "$GROOT/run/dstack-boot/gateway-checker.log" && break; sleep 0.1; done
sleep 0.5
grep -q 'gateway-checker: stopping' "$GROOT/run/dstack-boot/gateway-checker.log" || gfail "the checker did not stop on SIGTERM"
! grep -E -A15 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
    "$GROOT/run/dstack-boot/gateway-checker.log" "$WORK/run/$VM_ID/serial.log" || gfail "sanitizer report in the guest"
echo "ok - the checker stops on SIGTERM; no sanitizer report from gateway-setup / gateway-checker"

# ---- 5. a gateway whose certificate has another app id is refused; the app still boots --------
HOST_PORT2=$(free_port)
deploy gwapp2 "$GW2_RPC" "$HOST_PORT2"
VM2=$(jget "$WORK/deploy-gwapp2.json" id)
[ "$(jget "$WORK/deploy-gwapp2.json" app_id)" = "$APP_ID" ] || fail "the second deploy has another app id"
cp "$WORK/hello-images.tar" "$WORK/run/$VM2/shared/images.tar" || fail "copy images.tar (2)"
"$BIN/dstack" start "$VM2" >/dev/null || fail "dstack start (2)"
wait_booted "$VM2" || fail "VM2 not booted: $ST"
case "$ST" in
    "booted|dstack-gateway registration failed, the app has no ingress route: "*"is not the expected gateway app id"*) ;;
    *) tail -30 "$WORK/run/$VM2/serial.log"; fail "VM2: expected booted + the app id refusal, got '$ST'" ;;
esac
ANSWER=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT2/" 2>&1)
[ "$ANSWER" = "backend-ok" ] || fail "VM2's app does not answer on its port: '$ANSWER'"
admin "$ADMIN2_PORT" GetMeta | grep -q '"registered":0' || fail "the refused gateway registered something"
echo "ok - a gateway with app id $OTHERAPP is refused: '${ST#booted|}'; the app still boots and answers"

echo "# boot with gateway registration: $(python3 -c "print('%.1f' % ($T_BOOT - $T0))") s"
echo "PASS"
