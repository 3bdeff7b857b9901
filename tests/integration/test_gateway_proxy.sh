#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The dstack-gateway data plane end to end (spec host-side.md §4.2), through
# `dstack-gateway proxy-only --config FILE` on 127.0.0.1 with a test CA and a wildcard
# certificate for *.gw.test:
#   - terminated HTTPS `<app_id>-<port>.gw.test` to a python3 http.server backend (curl
#     --resolve with the test CA), by app id and by instance id;
#   - passthrough `<app_id>-<port>s.gw.test` to an `openssl s_server`: the client sees the
#     backend's own certificate (SHA-256 fingerprint compared);
#   - `g` suffix negotiates ALPN h2; `health.gw.test` answers 200 OK;
#   - refusals, each counted under its own reason and within its timeout while a parallel normal
#     request succeeds: unknown app, malformed SNI, no SNI, plaintext HTTP, a ClientHello
#     dribbled one byte per second;
#   - PROXY v2 towards a backend port (port policy pp=true), PROXY v1 from a load balancer (curl --haproxy-protocol),
#     per-app connection limit, idle timeout, certificate reload on SIGHUP.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ds_need_tools openssl curl python3
GW="$DS_BIN/dstack-gateway"
ds_need_bins "$GW"
ds_tmpdir
failures=0
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
PIDS=()
ds_stop_on_exit PIDS
cd "$TMP"


# ---- certificates --------------------------------------------------------------------------
ds_test_ca "gw test CA"
mkcert wild "DNS:*.gw.test"
mkcert backend "DNS:backend.local"
fp() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }

# ---- backends ------------------------------------------------------------------------------
mkdir www && echo "hello from the backend" >www/hello.txt
HP=$(free_port)
"$PY" -m http.server "$HP" --bind 127.0.0.1 --directory www >http.log 2>&1 &
PIDS+=($!)
SP=$(free_port)
openssl s_server -quiet -accept "$SP" -cert backend.pem -key backend.key -www >s_server.log 2>&1 &
PIDS+=($!)
# A backend that records the first bytes it receives (to see the PROXY header) and answers HTTP.
RP=$(free_port)
cat >recorder.py <<'EOF'
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16)
n = 0
while True:
    c, _ = s.accept(); data = b""
    while data.count(b"\r\n\r\n") < 2:  # the PROXY v2 signature holds one
        d = c.recv(4096)
        if not d: break
        data += d
    open(sys.argv[2] + str(n), "wb").write(data); n += 1
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nrecorded\n"); c.close()
EOF
"$PY" recorder.py "$RP" rec >recorder.log 2>&1 &
PIDS+=($!)
# A backend that accepts and stays silent (idle timeout).
QP=$(free_port)
"$PY" -c 'import socket,sys,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(16); cs=[]
while True: cs.append(s.accept()[0])' "$QP" >quiet.log 2>&1 &
PIDS+=($!)

# A blackhole at 127.0.0.2:$HP: listen(0), accept queue filled, so further connects hang.
"$PY" -c 'import socket, sys, time
s = socket.socket(); s.bind(("127.0.0.2", int(sys.argv[1]))); s.listen(0); held = []
for _ in range(4):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(("127.0.0.2", int(sys.argv[1])))
    except BlockingIOError: pass
    held.append(c)
open("blackhole.ready", "w").write("1")
time.sleep(3600)' "$HP" >blackhole.log 2>&1 &
PIDS+=($!)
ds_wait_for 10 "" test -s blackhole.ready || fail "blackhole did not start"
rc=0
timeout 1 bash -c "exec 3<>/dev/tcp/127.0.0.2/$HP" 2>/dev/null || rc=$?
check "blackhole connects hang" "$rc" 124

APP=0123456789abcdef0123456789abcdef01234567
INST=89abcdef0123456789abcdef0123456789abcdef
LIMITED=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
STALE=bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
TWO=cccccccccccccccccccccccccccccccccccccccc
DEAD=dddddddddddddddddddddddddddddddddddddddd
cat >gw.conf <<EOF
# proxy-only test configuration
listen=127.0.0.1:0
port_file=$TMP/port
cert=gw.test $TMP/wild.pem $TMP/wild.key
route=$APP $INST 127.0.0.1 10
# a second, stale instance of the same app on an address nobody listens on
route=$APP 1111111111111111111111111111111111111111 127.0.0.9 100000
route=$LIMITED 2222222222222222222222222222222222222222 127.0.0.1
# an app whose only instance has not handshaken for 100000 s (> 30 min): not routable by app id
route=$STALE 3333333333333333333333333333333333333333 127.0.0.1 100000
# an app with two fresh instances: the freshest on a blackhole (127.0.0.2:$HP, a listener whose
# accept queue is full, so SYNs go unanswered), then the real one
route=$TWO 4444444444444444444444444444444444444444 127.0.0.2 1
route=$TWO 5555555555555555555555555555555555555555 127.0.0.1 20
# an app whose instance refuses connections
route=$DEAD 6666666666666666666666666666666666666666 127.0.0.1
tls_versions=1.2,1.3
handshake_timeout_ms=1500
connect_timeout_ms=1000
idle_timeout_ms=1500
shutdown_timeout_ms=1000
dns_timeout_ms=2000
# the port policy of $INST asks for a PROXY v2 header on the recorder's port only
policy=$INST {"ports":[{"port":$RP,"pp":true}],"restrict_mode":false}
EOF
"$GW" proxy-only --config gw.conf -v >gw.log 2>&1 &
GWPID=$!
PIDS+=($GWPID)
ds_wait_for 10 "$GWPID" test -s port || { cat gw.log; fail "gateway did not start"; ds_finish x; }
GP=$(cat port)
ds_wait_for 10 "" bash -c "exec 3<>/dev/tcp/127.0.0.1/$HP" || fail "http backend did not start"
ds_wait_for 10 "" bash -c "exec 3<>/dev/tcp/127.0.0.1/$SP" || fail "s_server did not start"

curl_gw() { # curl_gw HOST PATH [curl args]
    local host=$1 path=$2
    shift 2
    curl -sS --max-time 10 --cacert ca.pem --resolve "$host:$GP:127.0.0.1" "$@" \
        "https://$host:$GP$path"
}
stat_of() { ds_gw_stat "$GWPID" gw.log "$1"; } # stat_of NAME: counter from a SIGUSR1 dump

# ---- terminated -----------------------------------------------------------------------------
check "terminated HTTPS by app id" "$(curl_gw "$APP-$HP.gw.test" /hello.txt)" \
    "hello from the backend"
check "terminated HTTPS by instance id" "$(curl_gw "$INST-$HP.gw.test" /hello.txt)" \
    "hello from the backend"
check "TLS 1.2 client" "$(curl_gw "$APP-$HP.gw.test" /hello.txt --tlsv1.2 --tls-max 1.2)" \
    "hello from the backend"
check "health" "$(curl_gw health.gw.test /)" "OK"
check "gateway /health" "$(curl_gw gateway.gw.test /health)" "OK"
alpn=$(openssl s_client -connect "127.0.0.1:$GP" -servername "$APP-${HP}g.gw.test" -alpn h2 \
    -CAfile ca.pem </dev/null 2>/dev/null | grep -a "ALPN protocol" || true)
check "g suffix negotiates h2" "$alpn" "ALPN protocol: h2"
served=$(openssl s_client -connect "127.0.0.1:$GP" -servername "$APP-$HP.gw.test" -CAfile ca.pem \
    </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)
check "terminated mode serves the wildcard cert" "$served" "$(fp wild.pem)"

# ---- backend selection ---------------------------------------------------------------------
rc=0
curl_gw "$STALE-$HP.gw.test" /hello.txt >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "app with only a stale instance refused" || fail "stale instance used"
check "stale app counted as unknown" "$(stat_of refused_unknown_app)" 1
check "stale instance still reachable by instance id" \
    "$(curl_gw "3333333333333333333333333333333333333333-$HP.gw.test" /hello.txt)" \
    "hello from the backend"
s0=$(date +%s%N)
check "concurrent connect: the reachable instance wins" "$(curl_gw "$TWO-$HP.gw.test" /hello.txt)" \
    "hello from the backend"
ms=$((($(date +%s%N) - s0) / 1000000))
[ "$ms" -lt 900 ] && pass "no wait for the blackholed candidate (${ms} ms)" ||
    fail "took ${ms} ms (connect timeout 1000 ms)"
DEADP=$(free_port)
rc=0
curl_gw "$DEAD-$DEADP.gw.test" / >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "backend refusing connections: client closed" || fail "dead backend"
check "backend failure counted" "$(stat_of backend_fail)" 1

# ---- passthrough ----------------------------------------------------------------------------
seen=$(openssl s_client -connect "127.0.0.1:$GP" -servername "$APP-${SP}s.gw.test" \
    </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)
check "passthrough reaches the backend's own certificate" "$seen" "$(fp backend.pem)"
page=$(curl -sk --max-time 10 --resolve "$APP-${SP}s.gw.test:$GP:127.0.0.1" \
    "https://$APP-${SP}s.gw.test:$GP/" | grep -c "s_server" || true)
[ "$page" -ge 1 ] && pass "passthrough HTTPS round trip" || fail "passthrough page: $page"
"$PY" -c 'import os,base64,sys; sys.stdout.write(base64.b64encode(os.urandom(1500000)).decode())' >www/big.txt
big=$(sha256sum <www/big.txt)
check "terminated 2 MB body intact" "$(curl_gw "$APP-$HP.gw.test" /big.txt | sha256sum)" "$big"

# ---- PROXY protocol out ---------------------------------------------------------------------
check "backend with pp port answers" "$(curl_gw "$APP-$RP.gw.test" /pp)" "recorded"
hdr=$(od -An -tx1 -N16 rec0 | tr -d ' \n')
check "PROXY v2 header sent to the pp port" "$hdr" "0d0a0d0a000d0a515549540a2111000c"
grep -aq "GET /pp HTTP/1.1" rec0 && pass "request follows the header" ||
    { fail "no request after the PROXY header"; od -c rec0 | head -5; }

# ---- refusals -------------------------------------------------------------------------------
# a parallel normal request (slow body) runs during the refusals
"$PY" -c 'import sys; sys.stdout.write("x"*20000000)' >www/slow.bin
curl_gw "$INST-$HP.gw.test" /slow.bin --limit-rate 4M -o slow.out &
SLOWPID=$!
t0=$SECONDS
rc=0
curl_gw "ffffffffffffffffffffffffffffffffffffffff.gw.test" / >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "unknown app refused (curl rc $rc)" || fail "unknown app accepted"
check "unknown app counted" "$(stat_of refused_unknown_app)" 2
rc=0
curl_gw "$APP-80sg.gw.test" / >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "malformed SNI refused" || fail "malformed SNI accepted"
check "malformed SNI counted" "$(stat_of refused_bad_sni)" 1
rc=0
openssl s_client -connect "127.0.0.1:$GP" -noservername </dev/null >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "no SNI refused" || fail "no SNI accepted"
check "no SNI counted" "$(stat_of refused_no_sni)" 1
rc=0
curl -s --max-time 5 "http://127.0.0.1:$GP/" >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "plaintext HTTP refused" || fail "plaintext accepted"
check "plaintext counted as bad hello" "$(stat_of refused_bad_sni)" 2
[ $((SECONDS - t0)) -le 3 ] && pass "refusals were immediate" || fail "refusals took $((SECONDS - t0)) s"

# ClientHello dribbled one byte per second: closed at the handshake timeout (1.5 s).
cat >dribble.py <<'EOF'
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(i, o, server_hostname=sys.argv[2])
try: obj.do_handshake()
except ssl.SSLWantReadError: pass
hello = o.read()
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
t0 = time.time()
try:
    for b in hello:
        s.send(bytes([b])); time.sleep(1.0)
        s.settimeout(0.001)
        try:
            if s.recv(1) == b"": break
        except socket.timeout: pass
        except OSError: break
        s.settimeout(None)
except OSError:
    pass
print("%.1f" % (time.time() - t0))
EOF
dribble=$("$PY" dribble.py "$GP" "$APP-$HP.gw.test")
awk -v t="$dribble" 'BEGIN { exit !(t >= 1.0 && t <= 4.0) }' &&
    pass "dribbled ClientHello closed after ${dribble}s (handshake timeout 1.5 s)" ||
    fail "dribbled ClientHello closed after ${dribble}s"
check "dribble counted as timeout" "$(stat_of refused_timeout)" 1
# 200 connections that send one byte of a hello and stall: all closed at the handshake timeout,
# while a normal request goes through.
"$PY" - "$GP" <<'EOF' >slowloris.out &
import socket, sys, time
socks = []
for _ in range(200):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.sendall(b"\x16"); socks.append(s)
t0 = time.time(); closed = 0
for s in socks:
    s.settimeout(max(0.1, 6 - (time.time() - t0)))
    try:
        if s.recv(1) == b"": closed += 1
    except OSError:
        closed += 1
print(closed, "%.1f" % (time.time() - t0))
EOF
LORISPID=$!
sleep 0.5
check "normal request during 200 stalled hellos" "$(curl_gw "$INST-$HP.gw.test" /hello.txt)" \
    "hello from the backend"
wait "$LORISPID" || true
read -r lclosed ltime <slowloris.out
check "all stalled hellos closed" "$lclosed" 200
awk -v t="$ltime" 'BEGIN { exit !(t <= 3.0) }' && pass "stalled hellos closed within ${ltime}s" ||
    fail "stalled hellos took ${ltime}s"
check "stalled hellos counted as timeouts" "$(stat_of refused_timeout)" 201
wait "$SLOWPID" && check "parallel transfer unaffected" "$(wc -c <slow.out)" 20000000 ||
    fail "parallel transfer failed"

# ---- per-app limit and idle timeout (a third gateway with max_connections_per_app=1) ---------
sed -e 's/^port_file=.*/port_file=port3/' -e '$a max_connections_per_app=1' \
    -e '$a total_timeout_ms=3000' gw.conf >gw3.conf
"$GW" proxy-only --config gw3.conf >gw3.log 2>&1 &
GW3PID=$!
PIDS+=($GW3PID)
ds_wait_for 10 "" test -s port3 || fail "third gateway did not start"
GP3=$(cat port3)
stat3_of() { ds_gw_stat "$GW3PID" gw3.log "$1"; }
"$PY" - "$GP3" "$LIMITED-${QP}s.gw.test" <<'EOF' >idle.out &
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(i, o, server_hostname=sys.argv[2])
try: obj.do_handshake()
except ssl.SSLWantReadError: pass
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.sendall(o.read())
t0 = time.time(); s.settimeout(10)
try: s.recv(1)
except OSError: pass
print("%.1f" % (time.time() - t0))
EOF
IDLEPID=$!
sleep 0.5
rc=0
curl -sS --max-time 5 --cacert ca.pem --resolve "$LIMITED-$HP.gw.test:$GP3:127.0.0.1" \
    "https://$LIMITED-$HP.gw.test:$GP3/hello.txt" >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "second connection to a limited app refused" || fail "limit not applied"
check "limit counted" "$(stat3_of refused_limit)" 1
wait "$IDLEPID" || true
idle=$(cat idle.out)
awk -v t="$idle" 'BEGIN { exit !(t >= 1.2 && t <= 4.0) }' &&
    pass "silent connection closed after ${idle}s (idle timeout 1.5 s)" ||
    fail "silent connection closed after ${idle}s"
check "idle close counted" "$(stat3_of refused_timeout)" 1
# A connection that keeps trickling data is never idle but ends at total_timeout (3 s).
chatty=$("$PY" - "$GP3" "$LIMITED-${QP}s.gw.test" <<'EOF'
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
i, o = ssl.MemoryBIO(), ssl.MemoryBIO()
obj = ctx.wrap_bio(i, o, server_hostname=sys.argv[2])
try: obj.do_handshake()
except ssl.SSLWantReadError: pass
s = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s.sendall(o.read())
t0 = time.time()
try:
    while time.time() - t0 < 10:
        s.sendall(b"x"); time.sleep(0.4)
        s.settimeout(0.001)
        try:
            if s.recv(1) == b"": break
        except socket.timeout: pass
        s.settimeout(None)
except OSError:
    pass
print("%.1f" % (time.time() - t0))
EOF
)
awk -v t="$chatty" 'BEGIN { exit !(t >= 2.5 && t <= 5.0) }' &&
    pass "busy connection closed after ${chatty}s (total timeout 3 s, idle 1.5 s)" ||
    fail "busy connection closed after ${chatty}s"
check "total timeout counted" "$(stat3_of refused_timeout)" 2
check "after idle close, the app takes connections again" \
    "$(curl -sS --max-time 5 --cacert ca.pem --resolve "$LIMITED-$HP.gw.test:$GP3:127.0.0.1" \
        "https://$LIMITED-$HP.gw.test:$GP3/hello.txt")" "hello from the backend"

# ---- custom domain without an app-address record --------------------------------------------
# No certificate for example.invalid: the gateway looks up TXT _dstack-app-address.<sni>; with a
# reachable resolver the answer is NXDOMAIN (unknown app), without one the lookup hits
# dns_timeout_ms (2 s). Either way the connection is refused within the DNS timeout.
u0=$(stat_of refused_unknown_app)
t0=$(stat_of refused_timeout)
s0=$SECONDS
rc=0
curl -sk --max-time 6 --resolve "custom.example.invalid:$GP:127.0.0.1" \
    "https://custom.example.invalid:$GP/" >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && [ $((SECONDS - s0)) -le 4 ] && pass "custom domain without a record refused" ||
    fail "custom domain: rc $rc after $((SECONDS - s0)) s"
u1=$(stat_of refused_unknown_app)
t1=$(stat_of refused_timeout)
check "custom domain refusal counted once" "$((u1 - u0 + t1 - t0))" 1

# ---- certificate reload ---------------------------------------------------------------------
mkcert wild2 "DNS:*.gw.test"
cp wild2.pem wild.pem
cp wild2.key wild.key
kill -HUP "$GWPID"
sleep 0.3
served=$(openssl s_client -connect "127.0.0.1:$GP" -servername "$APP-$HP.gw.test" </dev/null \
    2>/dev/null | openssl x509 -noout -fingerprint -sha256 | cut -d= -f2)
check "SIGHUP reloads the wildcard certificate" "$served" "$(fp wild2.pem)"

# ---- PROXY protocol in ----------------------------------------------------------------------
sed -e 's/^port_file=.*/port_file=port2/' -e '$a inbound_pp=1' gw.conf >gw2.conf
"$GW" proxy-only --config gw2.conf >gw2.log 2>&1 &
GW2PID=$!
PIDS+=($GW2PID)
ds_wait_for 10 "" test -s port2 || fail "second gateway did not start"
GP2=$(cat port2)
out=$(curl -sS --max-time 10 --cacert ca.pem --haproxy-protocol \
    --resolve "$APP-$RP.gw.test:$GP2:127.0.0.1" "https://$APP-$RP.gw.test:$GP2/in" || true)
check "PROXY v1 from a balancer accepted" "$out" "recorded"
rc=0
curl -sS --max-time 5 --cacert ca.pem --resolve "$APP-$HP.gw.test:$GP2:127.0.0.1" \
    "https://$APP-$HP.gw.test:$GP2/" >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "missing PROXY header refused when inbound_pp" || fail "accepted w/o PROXY"

# ---- shutdown -------------------------------------------------------------------------------
kill -TERM "$GWPID" "$GW2PID" "$GW3PID"
for p in "$GWPID" "$GW2PID" "$GW3PID"; do
    ds_wait_for 5 "" bash -c "! kill -0 $p" && pass "SIGTERM drains and exits ($p)" ||
        fail "gateway $p still running after SIGTERM"
done
for l in gw.log gw2.log gw3.log; do
    if ds_sanitizer_report "$l"; then
        fail "sanitizer report in $l"
        cat "$l"
    fi
done
ds_finish "gateway proxy: all checks passed"
