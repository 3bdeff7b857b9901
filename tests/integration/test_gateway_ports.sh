#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Gateway port policies end to end (spec host-side.md §4.2 step 5, §4.3, §4.4, §4.5).
# Part A, the data plane alone (`dstack-gateway proxy-only`, routes with `policy=` lines):
#   - restrict_mode: a listed port is reachable, an unlisted one is refused and counted
#     (refused_port_policy) and logged with the app/instance and port, by app id and by
#     instance id;
#   - pp = true: the backend receives a PROXY v2 header carrying the client's address and port;
#     pp = false: the backend receives the request as is;
#   - app-id routing filters the candidates per instance policy before connect_top_n: the
#     fresher instance that does not allow the port is skipped;
#   - an instance whose policy is unknown is denied, the gateway asks its agent
#     (POST /prpc/Info?json on <ip>:agent_port, a python3 fake that fails twice first: retries
#     with backoff) and routes by the fetched tcb_info.app_compose.port_policy afterwards;
#     an unreachable agent keeps the instance denied after max_retries.
# Part B, the whole gateway (dstack-tee-sim TDs, RA-TLS client certificates, RegisterCvm with
# curl, WireGuard disabled, the client range on 127.8.0.0/24 so that CVM addresses are
# loopback addresses here):
#   - the reported policy is stored and enforced; Admin.GetInstancePortPolicy shows it;
#   - Admin.SetInstancePortPolicy overrides it, the override survives a gateway restart,
#     Admin.ClearInstancePortPolicy restores the reported one;
#   - re-registration with the same compose hash and no port_policy keeps the policy; with
#     another compose hash it is invalidated, connections are denied until the background
#     fetch from the fake agent brings the new one (stored: GetInstancePortPolicy shows it);
#   - bad policies are refused with the field named (RegisterCvm, SetInstancePortPolicy), an
#     unknown instance is reported.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ds_need_tools openssl curl python3
GW="$DS_BIN/dstack-gateway"
ds_need_bins "$GW" "$DS_BIN/dstack-tee-sim" "$DS_BIN/dstack-util"
ds_tmpdir /tmp/ds-gw-ports.XXXXXX
PIDS=()
ds_stop_on_exit PIDS
ds_on_exit() {
    if [ "$1" -ne 0 ] || [ "$failures" -ne 0 ]; then
        for f in "$TMP"/*.log; do [ -f "$f" ] && { echo "---- $f"; tail -n 25 "$f"; }; done
    fi
}
cd "$TMP"

# ---- certificates --------------------------------------------------------------------------
ds_test_ca "gw ports test CA" -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
mkcert wild "DNS:*.gw.test,DNS:*.gw.example"

# ---- backends ------------------------------------------------------------------------------
mkdir www && echo "hello through the policy" >www/hello.txt
HP=$(free_port)
HP2=$(free_port)
web() { # web ADDR: http.server on ADDR:$HP and ADDR:$HP2
    python3 -m http.server "$HP" --bind "$1" --directory www >>"http-$1.log" 2>&1 &
    PIDS+=($!)
    python3 -m http.server "$HP2" --bind "$1" --directory www >>"http-$1.log" 2>&1 &
    PIDS+=($!)
}
web 127.0.0.1
# Records the first bytes of every connection (rec<PORT>.<n>) and answers HTTP.
cat >recorder.py <<'EOF'
import socket, sys
port = int(sys.argv[1])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen(16)
n = 0
while True:
    c, _ = s.accept(); data = b""
    while b"\r\n\r\n" not in data.split(b"GET ", 1)[-1] or b"GET " not in data:
        d = c.recv(4096)
        if not d: break
        data += d
    if not data:  # a readiness probe
        c.close(); continue
    open("rec%d.%d" % (port, n), "wb").write(data); n += 1
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nrecorded\n"); c.close()
EOF
RP=$(free_port)
RQ=$(free_port)
python3 recorder.py "$RP" >recorder1.log 2>&1 &
PIDS+=($!)
python3 recorder.py "$RQ" >recorder2.log 2>&1 &
PIDS+=($!)
# A fake guest agent: /prpc/Info answers 503 to the first FAILS requests, then the tcb_info of
# an app compose with the policy in POLICY_FILE. Every request is appended to agent.log.
cat >agent.py <<'EOF'
import http.server, json, sys
addr, port, fails, policy_file = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
count = [0]
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        count[0] += 1
        n = int(self.headers.get("Content-Length") or 0)
        if n: self.rfile.read(n)
        print("request", count[0], self.command, self.path, flush=True)
        if not self.path.startswith("/prpc/Info"):
            self.send_response(404); self.end_headers(); return
        if count[0] <= fails:
            self.send_response(503); self.end_headers(); return
        compose = {"manifest_version": 2, "name": "app", "runner": "docker-compose",
                   "port_policy": json.load(open(policy_file))}
        body = json.dumps({"app_id": "00", "tcb_info": json.dumps(
            {"mrtd": "00", "app_compose": json.dumps(compose)})}).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = answer
    def log_message(self, *a): pass
http.server.HTTPServer((addr, port), H).serve_forever()
EOF
AP=$(free_port)
printf '{"ports":[{"port":%s,"pp":false}],"restrict_mode":true}' "$HP" >agent-policy.json
python3 agent.py 127.0.0.1 "$AP" 2 agent-policy.json >agent.log 2>&1 &
PIDS+=($!)
for p in $HP $HP2 $RP $RQ $AP; do
    ds_wait_for 10 "" bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" || fail "backend $p did not start"
done

# ==== Part A: proxy-only ======================================================================
APPR=$(printf 'a1%.0s' $(seq 20))
R1=$(printf '01%.0s' $(seq 20))
APPM=$(printf 'a2%.0s' $(seq 20))
M1=$(printf '02%.0s' $(seq 20))
M2=$(printf '03%.0s' $(seq 20))
APPU=$(printf 'a3%.0s' $(seq 20))
U1=$(printf '04%.0s' $(seq 20))
APPD=$(printf 'a4%.0s' $(seq 20))
U2=$(printf '05%.0s' $(seq 20))
cat >gw.conf <<EOF
listen=127.0.0.1:0
port_file=$TMP/port
cert=gw.test $TMP/wild.pem $TMP/wild.key
connect_top_n=1
connect_timeout_ms=1000
agent_port=$AP
port_policy_fetch_timeout_ms=1000
port_policy_fetch_max_retries=2
port_policy_fetch_backoff_initial_ms=200
port_policy_fetch_backoff_max_ms=300
route=$APPR $R1 127.0.0.1 5
policy=$R1 {"ports":[{"port":$HP,"pp":false},{"port":$RP,"pp":true},{"port":$RQ}],"restrict_mode":true}
# app M: the fresher instance (M1, on an address nobody listens on) does not allow $HP
route=$APPM $M1 127.0.0.9 1
policy=$M1 {"ports":[{"port":$HP2}],"restrict_mode":true}
route=$APPM $M2 127.0.0.1 20
policy=$M2 {"ports":[{"port":$HP}],"restrict_mode":true}
# policy unknown: fetched from the agent at 127.0.0.1:$AP
route=$APPU $U1 127.0.0.1 5
policy=$U1 unknown
# policy unknown, agent unreachable (nothing listens on 127.0.0.5:$AP)
route=$APPD $U2 127.0.0.5 5
policy=$U2 unknown
EOF
"$GW" proxy-only --config gw.conf -v >gw.log 2>&1 &
GWPID=$!
PIDS+=($GWPID)
ds_wait_for 10 "$GWPID" test -s port || { cat gw.log; fail "proxy did not start"; ds_finish x; }
GP=$(cat port)

curl_gw() { # curl_gw HOST PATH [curl args]
    local host=$1 path=$2
    shift 2
    curl -sS --max-time 10 --cacert ca.pem --resolve "$host:$GP:127.0.0.1" "$@" \
        "https://$host:$GP$path"
}
refused() { # refused HOST: the connection is closed before any HTTP answer
    local rc=0
    curl_gw "$1" /hello.txt >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ]
}
stat_of() { ds_gw_stat "$GWPID" gw.log "$1"; } # stat_of NAME: counter from a SIGUSR1 dump

check "restrict_mode: listed port reachable" "$(curl_gw "$APPR-$HP.gw.test" /hello.txt)" \
    "hello through the policy"
refused "$APPR-$HP2.gw.test" && pass "restrict_mode: unlisted port refused" ||
    fail "unlisted port $HP2 reachable"
check "refusal counted" "$(stat_of refused_port_policy)" 1
grep -q "port policy refused app/instance $APPR port $HP2 (instance $R1)" gw.log &&
    pass "refusal logged with app, instance and port" || fail "no refusal log line"
refused "$R1-$HP2.gw.test" && pass "unlisted port refused by instance id too" ||
    fail "instance id route ignored the policy"
check "second refusal counted" "$(stat_of refused_port_policy)" 2

LP=$(free_port)
check "pp=true port answers" "$(curl_gw "$APPR-$RP.gw.test" /pp --local-port "$LP")" "recorded"
hdr=$(python3 - "rec$RP.0" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
sig = b"\r\n\r\n\x00\r\nQUIT\n"
if not d.startswith(sig):
    print("no PROXY v2 header"); sys.exit()
ver, fam, ln = d[12], d[13], struct.unpack(">H", d[14:16])[0]
src, dst = ".".join(map(str, d[16:20])), ".".join(map(str, d[20:24]))
sport, dport = struct.unpack(">HH", d[24:28])
rest = d[16 + ln:]
print("v2 %#x %#x %s:%d -> %s:%d %s" % (ver, fam, src, sport, dst, dport,
      "request follows" if rest.startswith(b"GET /pp ") else "no request"))
EOF
)
check "pp=true: PROXY v2 with the client address" "$hdr" \
    "v2 0x21 0x11 127.0.0.1:$LP -> 127.0.0.1:$GP request follows"
check "pp=false port answers" "$(curl_gw "$APPR-$RQ.gw.test" /nopp)" "recorded"
head -c 8 "rec$RQ.0" | grep -q "^GET /nop" && pass "pp=false: no PROXY header" ||
    fail "pp=false backend got: $(od -c "rec$RQ.0" | head -2)"

check "app routing skips the fresher instance that does not allow the port" \
    "$(curl_gw "$APPM-$HP.gw.test" /hello.txt)" "hello through the policy"
check "no backend failure on the skipped instance" "$(stat_of backend_fail)" 0

# unknown policy -> denied, fetched (two 503s first), then enforced
refused "$APPU-$HP.gw.test" && pass "unknown policy: denied" || fail "unknown policy allowed"
ds_wait_for 10 "$GWPID" grep -q "port policy of instance $U1 fetched" gw.log &&
    pass "policy fetched from the agent" || fail "no fetch: $(cat agent.log)"
check "agent asked three times (two failures retried)" "$(grep -c 'POST /prpc/Info' agent.log)" 3
grep -q "port policy fetch for instance $U1 failed (attempt 1, retry in 200 ms)" gw.log &&
    grep -q "failed (attempt 2, retry in 300 ms)" gw.log && pass "backoff doubles up to the maximum" ||
    fail "backoff log: $(grep 'fetch for' gw.log)"
check "fetched policy: listed port reachable" "$(curl_gw "$APPU-$HP.gw.test" /hello.txt)" \
    "hello through the policy"
refused "$APPU-$HP2.gw.test" && pass "fetched policy: restrict_mode applies" ||
    fail "fetched restrict_mode ignored"
before=$(stat_of refused_port_policy)
refused "$APPD-$HP.gw.test" && pass "unreachable agent: denied" || fail "unreachable agent allowed"
ds_wait_for 10 "$GWPID" grep -q "port policy of instance $U2 stays unknown after 3 attempt(s)" gw.log &&
    pass "fetch gives up after max_retries" || fail "no give-up: $(grep "$U2" gw.log)"
refused "$APPD-$HP.gw.test" && pass "still denied after the fetch gave up" ||
    fail "allowed after giving up"
check "denials counted" "$(stat_of refused_port_policy)" $((before + 2))
ds_stop_pid "$GWPID"

# ==== Part B: the whole gateway ===============================================================
SEED=64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031
"$DS_BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$TMP/sim" --pccs-listen 127.0.0.1:0 \
    >sim.log 2>&1 &
PIDS+=($!)
ds_wait_for 20 "" ds_sim_up "$TMP/sim" || fail "tee-sim did not start"
PCCS="http://$(cat sim/pccs.addr)"
curl -sf -o simroot.der "$PCCS/dstack-sim/v1/root-ca.der" || fail "no mock root"
make_td() { # NAME APP_ID COMPOSE_HASH INSTANCE_ID -> device socket
    local s
    s=$("$DS_BIN/dstack-tee-sim" create-td --state-dir "$TMP/sim" --name "$1")
    "$DS_BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event system-preparing >/dev/null
    "$DS_BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event app-id --payload "$2" >/dev/null
    "$DS_BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event compose-hash --payload "$3" >/dev/null
    "$DS_BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event instance-id --payload "$4" >/dev/null
    "$DS_BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event boot-mr-done >/dev/null
    echo "$s"
}
APP=$(printf 'b1%.0s' $(seq 20))
INST=$(printf '11%.0s' $(seq 20))
CH1=$(printf 'c1%.0s' $(seq 32))
CH2=$(printf 'c2%.0s' $(seq 32))
mint() { # NAME TD
    "$DS_BIN/dstack-util" ratls-cert --tee "sim:$2" --ca-cert ca.pem --ca-key ca.key \
        --client-auth --subject dstack-guest-agent --out-cert "$1.pem" --out-key "$1.key" \
        >"mint-$1.log" 2>&1 || fail "ratls-cert $1: $(tail -2 "mint-$1.log")"
}
mint c1 "$(make_td v1 "$APP" "$CH1" "$INST")"
mint c2 "$(make_td v2 "$APP" "$CH2" "$INST")"
mkcert server "IP:127.0.0.1"

ADMIN_PORT=$(free_port)
PROXY_PORT=$(free_port)
TOKEN=ports-admin-$RANDOM$RANDOM
cat >gateway.toml <<EOF
address = "127.0.0.1"
port = 0
[tls]
key = "$TMP/server.key"
certs = "$TMP/server.pem"
[tls.mutual]
ca_certs = "$TMP/ca.pem"
[core.attestation]
insecure_allow_simulated = true
simulator_root_ca = "$TMP/simroot.der"
[core.attestation.urls]
pccs = "$PCCS"
[core.admin]
enabled = true
address = "127.0.0.1:$ADMIN_PORT"
auth_token = "$TOKEN"
[core.wg]
enabled = false
private_key = "$(python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')"
ip = "127.8.0.1/24"
reserved_net = ["127.8.0.1/32"]
client_ip_range = "127.8.0.0/28"
endpoint = "192.0.2.1:51820"
[core.proxy]
listen_addr = "127.0.0.1"
listen_port = $PROXY_PORT
agent_port = $AP
base_domain = "gw.example"
cert_chain = "$TMP/wild.pem"
cert_key = "$TMP/wild.key"
[core.proxy.port_policy_fetch]
timeout = "1s"
max_retries = 3
backoff_initial = "100ms"
backoff_max = "200ms"
[core.recycle]
enabled = false
[core.sync]
data_dir = "$TMP/data"
EOF
GW_PID=""
start_gw() {
    "$GW" -c gateway.toml -v >>gateway.log 2>&1 &
    GW_PID=$!
    PIDS+=($GW_PID)
    ds_wait_for 20 "$GW_PID" bash -c "[ \$(grep -c 'Admin listening on' gateway.log) -ge $1 ]" ||
        fail "gateway did not start"
    PORT=$(grep -o 'Gateway RPC listening on [^ ]*' gateway.log | tail -1 | sed 's/.*://')
}
start_gw 1

register() { # register CERT BODY -> prints the answer
    curl -sS --max-time 20 --cacert ca.pem --cert "$1.pem" --key "$1.key" \
        -H 'Content-Type: application/json' -d "$2" "https://127.0.0.1:$PORT/prpc/RegisterCvm?json"
}
admin() { # admin METHOD BODY
    curl -sS --max-time 10 -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "$2" "http://127.0.0.1:$ADMIN_PORT/prpc/$1?json"
}
jq_py() { python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"; }
wg_key() { python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())'; }
curl_px() { # curl_px PORT: GET /hello.txt of $INST-PORT through the gateway's proxy
    curl -sS --max-time 10 --cacert ca.pem --resolve "$INST-$1.gw.example:$PROXY_PORT:127.0.0.1" \
        "https://$INST-$1.gw.example:$PROXY_PORT/hello.txt"
}
px_refused() {
    local rc=0
    curl_px "$1" >/dev/null 2>&1 || rc=$?
    [ "$rc" -ne 0 ]
}
pol() { printf '{"ports":[{"port":%s,"pp":false}],"restrict_mode":true}' "$1"; }

out=$(register c1 "{\"client_public_key\":\"$(wg_key)\",\"port_policy\":{\"ports\":[{\"port\":0}]}}" || true)
echo "$out" | grep -q 'invalid port_policy.ports\[0\].port: expected an integer 1..65535' &&
    pass "RegisterCvm refuses port 0, naming the field" || fail "bad policy answer: $out"
out=$(register c1 "{\"client_public_key\":\"$(wg_key)\",\"port_policy\":$(pol "$HP")}")
IP=$(echo "$out" | jq_py 'j["wg"]["client_ip"]' 2>/dev/null || echo none)
[[ $IP == 127.8.0.* ]] && pass "registered with a policy at $IP" || fail "register: $out"
# the CVM's services on its (loopback) address: the web backends and its guest agent
web "$IP"
python3 agent.py "$IP" "$AP" 0 agent-policy.json >agent-cvm.log 2>&1 &
PIDS+=($!)
for p in $HP $HP2 $AP; do
    ds_wait_for 10 "" bash -c "exec 3<>/dev/tcp/$IP/$p" || fail "CVM service $IP:$p did not start"
done
check "reported policy: listed port" "$(curl_px "$HP")" "hello through the policy"
px_refused "$HP2" && pass "reported policy: unlisted port refused" || fail "unlisted port reachable"
got=$(admin GetInstancePortPolicy "{\"instance_id\":\"$INST\"}")
check "Get: source instance" "$(echo "$got" | jq_py 'j["source"], j["effective"]["ports"][0]["port"], "admin_override" in j')" \
    "instance $HP False"

out=$(admin SetInstancePortPolicy "{\"instance_id\":\"$INST\",\"policy\":$(pol "$HP2")}")
check "SetInstancePortPolicy" "$out" "{}"
check "admin override: its port reachable" "$(curl_px "$HP2")" "hello through the policy"
px_refused "$HP" && pass "admin override beats the reported policy" || fail "reported port still open"
got=$(admin GetInstancePortPolicy "{\"instance_id\":\"$INST\"}")
check "Get: admin override and reported" \
    "$(echo "$got" | jq_py 'j["source"], j["effective"]["ports"][0]["port"], j["admin_override"]["ports"][0]["port"], j["instance_reported"]["ports"][0]["port"]')" \
    "admin $HP2 $HP2 $HP"

kill "$GW_PID"
wait "$GW_PID" 2>/dev/null || true
start_gw 2
check "after a restart: override still in force" "$(curl_px "$HP2")" "hello through the policy"
px_refused "$HP" && pass "after a restart: reported port still refused" || fail "restart lost the override"

check "ClearInstancePortPolicy" "$(admin ClearInstancePortPolicy "{\"instance_id\":\"$INST\"}")" "{}"
check "Clear restores the reported policy" "$(curl_px "$HP")" "hello through the policy"
px_refused "$HP2" && pass "after Clear the override's port is refused again" || fail "override left over"

out=$(admin SetInstancePortPolicy "{\"instance_id\":\"$INST\",\"policy\":{\"ports\":[{\"port\":$HP},{\"port\":$HP}]}}")
echo "$out" | grep -q "invalid policy.ports: port $HP is listed twice" &&
    pass "Set refuses a duplicate port, naming the field" || fail "duplicate: $out"
out=$(admin SetInstancePortPolicy "{\"instance_id\":\"$INST\"}")
echo "$out" | grep -q 'port policy is required' && pass "Set without policy refused" ||
    fail "no policy: $out"
out=$(admin GetInstancePortPolicy '{"instance_id":"ffff"}')
echo "$out" | grep -q 'instance ffff not found' && pass "unknown instance reported" ||
    fail "unknown instance: $out"

# same compose hash, no port_policy (an older guest): the stored policy stays
out=$(register c1 "{\"client_public_key\":\"$(wg_key)\"}")
check "re-registration without policy keeps it" \
    "$(admin GetInstancePortPolicy "{\"instance_id\":\"$INST\"}" | jq_py 'j["source"]')" "instance"
check "kept policy enforced" "$(curl_px "$HP")" "hello through the policy"

# another compose hash (an upgrade) without port_policy: invalidated, then fetched
printf '{"ports":[{"port":%s}],"restrict_mode":true}' "$HP2" >agent-policy.json
out=$(register c2 "{\"client_public_key\":\"$(wg_key)\"}")
check "upgrade: same address" "$(echo "$out" | jq_py 'j["wg"]["client_ip"]')" "$IP"
check "upgrade invalidates the reported policy" \
    "$(admin GetInstancePortPolicy "{\"instance_id\":\"$INST\"}" | jq_py 'j["source"], "instance_reported" in j')" \
    "none False"
px_refused "$HP2" && pass "policy unknown after the upgrade: denied" || fail "unknown policy allowed"
ds_wait_for 10 "$GW_PID" grep -q "port policy of instance $INST fetched from its agent" gateway.log &&
    pass "fetched from the agent at $IP:$AP" || fail "no fetch: $(tail -5 agent-cvm.log)"
grep -q 'POST /prpc/Info' agent-cvm.log && pass "the CVM's agent was asked" || fail "agent not asked"
check "fetched policy enforced" "$(curl_px "$HP2")" "hello through the policy"
px_refused "$HP" && pass "fetched policy: old port refused" || fail "old port open"
check "fetched policy stored as instance_reported" \
    "$(admin GetInstancePortPolicy "{\"instance_id\":\"$INST\"}" | jq_py 'j["source"], j["instance_reported"]["ports"][0]["port"]')" \
    "instance $HP2"

# both gateways exited (SIGTERM): any sanitizer report (leaks included) is in their logs
ds_stop_pid "$GW_PID"
if grep -l -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
    gw.log gateway.log >/dev/null 2>&1; then
    fail "sanitizer report in a gateway log"
    grep -h -A20 -E 'ERROR: .*Sanitizer|runtime error:' gw.log gateway.log | head -60
else
    pass "no sanitizer report from the gateways"
fi
ds_finish "gateway port policies"
