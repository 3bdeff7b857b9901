#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# dstack-gateway data plane with several worker threads (`workers`, SO_REUSEPORT listeners, one
# event loop each) and splice after N bytes (`splice_after_bytes`), through
# `dstack-gateway proxy-only`:
#   1. connections are spread over the workers (per-worker accepted counters);
#   2. max_connections_per_app is exact across workers: 20 connections opened at once to an app
#      limited to 5 give exactly 5 held connections and 15 refusals; once they close, 5 fit again;
#   3. passthrough: a response smaller than N is relayed without splice (spliced_bytes stays 0),
#      a 3 MB one passes byte-exact and most of it, never the first N bytes, is spliced;
#      terminated HTTPS of the same file is byte-exact too;
#   4. SIGHUP reloads the certificate for the connections of every worker;
#   5. SIGTERM: listeners of every worker close, a running transfer finishes, the process exits.
set -euo pipefail
. "$(dirname "$0")/lib.sh"
ds_need_tools curl openssl python3
GW="$DS_BIN/dstack-gateway"
ds_need_bins "$GW"
ds_tmpdir
PIDS=()
ds_stop_on_exit PIDS
cd "$TMP"
PY=python3

fp() { openssl x509 -noout -fingerprint -sha256 -in "$1" | cut -d= -f2; }
ds_test_ca "test CA"
mkcert wild "DNS:*.gw.test"
mkcert wild2 "DNS:*.gw.test"
mkcert backend "DNS:backend.local"

# ---- backends ------------------------------------------------------------------------------
mkdir www
echo "small" >www/small.txt
"$PY" -c 'import os, sys; sys.stdout.buffer.write(os.urandom(3000000))' >www/big.bin
HP=$(free_port)
"$PY" -m http.server "$HP" --bind 127.0.0.1 --directory www >http.log 2>&1 &
PIDS+=($!)
SP=$(free_port)
(cd www && exec openssl s_server -quiet -accept "$SP" -cert ../backend.pem -key ../backend.key \
    -WWW >../s_server.log 2>&1) &
PIDS+=($!)
QP=$(free_port) # accepts and stays silent: holds connections open
"$PY" -c 'import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64); cs=[]
while True: cs.append(s.accept()[0])' "$QP" >quiet.log 2>&1 &
PIDS+=($!)

APP=0123456789abcdef0123456789abcdef01234567
INST=89abcdef0123456789abcdef0123456789abcdef
LIMITED=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
SPLICE_N=100000
WORKERS=4
cp wild.pem cur.pem
cp wild.key cur.key
cat >gw.conf <<EOF
listen=127.0.0.1:0
port_file=$TMP/port
cert=gw.test $TMP/cur.pem $TMP/cur.key
route=$APP $INST 127.0.0.1 10
route=$LIMITED 2222222222222222222222222222222222222222 127.0.0.1 10
tls_versions=1.2,1.3
max_connections_per_app=5
splice=1
splice_after_bytes=$SPLICE_N
workers=$WORKERS
shutdown_timeout_ms=8000
EOF
"$GW" proxy-only --config gw.conf -v >gw.log 2>&1 &
GWPID=$!
PIDS+=($GWPID)
ds_wait_for 10 "$GWPID" test -s port || { cat gw.log; fail "gateway did not start"; ds_finish x; }
GP=$(cat port)
for p in "$HP" "$SP" "$QP"; do
    ds_wait_for 10 "" bash -c "exec 3<>/dev/tcp/127.0.0.1/$p" || fail "backend $p did not start"
done

curl_gw() { # curl_gw HOST PATH [curl args]
    local host=$1 path=$2
    shift 2
    curl -s --max-time 20 --cacert ca.pem --resolve "$host:$GP:127.0.0.1" "https://$host:$GP$path" "$@"
}
stats() { # stats: the last SIGUSR1 dumps (totals, then per worker)
    local n
    n=$(grep -c 'stats per worker' gw.log || true)
    kill -USR1 "$GWPID"
    ds_wait_for 5 "" bash -c "[ \$(grep -c 'stats per worker' gw.log) -gt $n ]" || true
    grep -o 'stats: .*' gw.log | tail -1 >stats.txt
    grep -o 'stats per worker: .*' gw.log | tail -1 >>stats.txt
}
stat_of() { grep -o "$1=[0-9,]*" stats.txt | head -1 | cut -d= -f2; }

# ---- 1. spread over the workers --------------------------------------------------------------
ok=0
for _ in $(seq 40); do
    [ "$(curl_gw "$APP-$HP.gw.test" /small.txt)" = small ] && ok=$((ok + 1))
done
check "40 requests through $WORKERS workers" "$ok" 40
stats
per=$(grep -o 'stats per worker: accepted=[0-9,]*' stats.txt | cut -d= -f2)
nw=$(tr ',' '\n' <<<"$per" | wc -l)
busy=$(tr ',' '\n' <<<"$per" | awk '$1 > 0' | wc -l)
sum=$(tr ',' '\n' <<<"$per" | awk '{ s += $1 } END { print s }')
check "one counter per worker" "$nw" "$WORKERS"
[ "$busy" -ge 2 ] && pass "connections served by $busy workers ($per)" ||
    fail "all connections on one worker ($per)"
check "per-worker counters add up to the total" "$sum" "$(stat_of accepted)"

# ---- 2. per-app limit exact across workers ---------------------------------------------------
cat >hold.py <<'EOF'
import socket, ssl, sys, threading, time
port, host, n, hold = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
ctx = ssl.create_default_context(cafile="ca.pem")
barrier = threading.Barrier(n)
ok = []
lock = threading.Lock()
def one():
    s = socket.create_connection(("127.0.0.1", port))
    barrier.wait()
    try:
        t = ctx.wrap_socket(s, server_hostname=host)
        t.sendall(b"x")
        with lock:
            ok.append(t)
    except (OSError, ssl.SSLError):
        s.close()
ts = [threading.Thread(target=one) for _ in range(n)]
for t in ts: t.start()
for t in ts: t.join()
print(len(ok), flush=True)
time.sleep(hold)
for t in ok: t.close()
EOF
"$PY" hold.py "$GP" "$LIMITED-$QP.gw.test" 20 2 >hold1.out
check "20 simultaneous connections to an app limited to 5: 5 held" "$(cat hold1.out)" 5
stats
check "the other 15 refused by the limit" "$(stat_of refused_limit)" 15
ds_wait_for 10 "" bash -c "kill -USR1 $GWPID; sleep 0.2; grep -o 'stats: .*' gw.log | tail -1 | grep -q ' active=0 '" ||
    fail "held connections not released"
"$PY" hold.py "$GP" "$LIMITED-$QP.gw.test" 8 0 >hold2.out
check "after they closed, 5 fit again" "$(cat hold2.out)" 5
stats
check "and 3 more refused" "$(stat_of refused_limit)" 18

# ---- 3. splice after N bytes -----------------------------------------------------------------
stats
check "nothing spliced yet" "$(stat_of spliced_bytes)" 0
small=$(curl_gw "$APP-${SP}s.gw.test" /small.txt -k)
check "passthrough small response" "$small" "small"
stats
check "a response below splice_after_bytes is not spliced" "$(stat_of spliced_bytes)" 0
curl_gw "$APP-${SP}s.gw.test" /big.bin -k -o big.pass
cmp -s big.pass www/big.bin && pass "3 MB passthrough byte-exact" || fail "passthrough body differs"
stats
spliced=$(stat_of spliced_bytes)
[ "$spliced" -gt 0 ] && pass "bulk transfer spliced ($spliced bytes)" || fail "nothing spliced"
# The connection moved 3 MB + TLS overhead. The first SPLICE_N bytes went through buffers, and
# after them the reads that found less than a full chunk waiting (bulk goes through the pipe):
# part of the body is spliced (how much depends on how fast each side runs: under ASan about
# 1.3 of 3 MB, 2-3 MB otherwise), at least one full chunk, never the first N bytes.
[ "$spliced" -le $((3000000 + 200000 - SPLICE_N)) ] && [ "$spliced" -ge 65536 ] &&
    pass "splice started after $SPLICE_N bytes (spliced $spliced of ~3 MB)" ||
    fail "spliced $spliced bytes, expected 3 MB minus the first $SPLICE_N"
curl_gw "$APP-$HP.gw.test" /big.bin -o big.term
cmp -s big.term www/big.bin && pass "3 MB terminated byte-exact" || fail "terminated body differs"
stats
check "terminated connections are never spliced" "$(stat_of spliced_bytes)" "$spliced"

# ---- 4. certificate reload with workers ------------------------------------------------------
served() {
    openssl s_client -connect "127.0.0.1:$GP" -servername "$APP-$HP.gw.test" </dev/null 2>/dev/null |
        openssl x509 -noout -fingerprint -sha256 | cut -d= -f2
}
check "first certificate served" "$(served)" "$(fp wild.pem)"
cp wild2.pem cur.pem
cp wild2.key cur.key
kill -HUP "$GWPID"
ds_wait_for 5 "" grep -q "reloaded 1 certificate" gw.log || fail "no reload logged"
want=$(fp wild2.pem)
good=0
for _ in $(seq 16); do [ "$(served)" = "$want" ] && good=$((good + 1)); done
check "after SIGHUP every worker serves the new certificate (16 connections)" "$good" 16

# ---- 5. SIGTERM drain with workers -----------------------------------------------------------
curl_gw "$APP-$HP.gw.test" /big.bin --limit-rate 1M -o big.slow &
SLOW=$!
sleep 0.5
kill -TERM "$GWPID"
sleep 0.3
rc=0
curl_gw "$APP-$HP.gw.test" /small.txt >/dev/null 2>&1 || rc=$?
[ "$rc" -ne 0 ] && pass "no new connections after SIGTERM (curl rc $rc)" || fail "accepted after SIGTERM"
wait "$SLOW" && cmp -s big.slow www/big.bin && pass "running transfer finished during the drain" ||
    fail "transfer cut by the drain"
ds_wait_for 10 "" bash -c "! kill -0 $GWPID 2>/dev/null" && pass "gateway exited after the drain" ||
    fail "gateway still running"
wait "$GWPID" && pass "exit status 0" || fail "exit status $?"
if ds_sanitizer_report gw.log; then
    fail "sanitizer report in gw.log"
    cat gw.log
fi
ds_finish "gateway workers and splice"
