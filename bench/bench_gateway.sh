#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Benchmark of the dstack-gateway data plane against HAProxy doing the same job on the same
# machine in the same run (spec host-side.md §4.2): wrk drives HTTPS requests
#   - terminated: TLS ends at the proxy (wildcard cert for *.bench.test), plaintext TCP relay to
#     an HTTP backend (`<app>-<port>.bench.test` on the gateway, `mode tcp` + `ssl crt` on
#     HAProxy);
#   - passthrough: the TLS stream is relayed untouched to a TLS backend, routed on the SNI
#     (`<app>-<port>s.bench.test`, splice on; HAProxy `req.ssl_sni`);
# at 1, 64 and 1000 connections (keep-alive), and prints requests/s, p99 latency and the
# gateway/HAProxy ratios (rps_x > 1: the gateway is faster; p99_x < 1: its p99 is lower), and
# the CPU time each proxy process spent per request (µs, from /proc/PID/stat), which outside
# load disturbs much less than req/s. Both
# proxies get the same thread count (gateway `workers`, HAProxy `nbthread`): 1 and every CPU.
# They share one backend process (HAProxy `http-request return`). Gateway and HAProxy runs
# alternate within each cell; with ROUNDS > 1 the medians are printed.
# wrk takes the SNI from the URL's host, so the run happens in a private mount namespace
# with an /etc/hosts that maps *.bench.test to 127.0.0.1 (needs root; nothing outside changes).
#
# usage: bench/bench_gateway.sh [SECONDS_PER_RUN]     (default 5; DS_BIN = build/bin)
#   DS_BENCH_THREADS="1 2"   thread counts (default: 1 and nproc)
#   DS_BENCH_CONNS="1 64 1000", DS_BENCH_ROUNDS=1 (median of N alternating runs per cell)
#   DS_BENCH_SPLICE=0 never splice; DS_BENCH_SPLICE_AFTER=65536 bytes before splicing (0 = at once)
#   DS_BENCH_KEEP=DIR keeps the raw wrk outputs
set -euo pipefail
DUR="${1:-5}"
THREADS="${DS_BENCH_THREADS:-1 $(nproc)}"
[ "$THREADS" != "1 1" ] || THREADS=1
CONNS="${DS_BENCH_CONNS:-1 64 1000}"
ROUNDS="${DS_BENCH_ROUNDS:-1}"
SPLICE="${DS_BENCH_SPLICE:-1}"
SPLICE_AFTER="${DS_BENCH_SPLICE_AFTER:-65536}"
HERE="$(cd "$(dirname "$0")" && pwd)"
DS_BIN="${DS_BIN:-$HERE/../build/bin}"
GW="$DS_BIN/dstack-gateway"
for t in haproxy wrk openssl unshare curl python3; do
    command -v "$t" >/dev/null || { echo "bench_gateway: $t is not installed" >&2; exit 77; }
done
[ -x "$GW" ] || { echo "bench_gateway: $GW not built" >&2; exit 1; }

if [ "${DS_BENCH_IN_NS:-}" != 1 ]; then
    [ "$(id -u)" -eq 0 ] || { echo "bench_gateway: needs root for unshare -m" >&2; exit 77; }
    exec unshare -m env DS_BENCH_IN_NS=1 DS_BIN="$DS_BIN" bash "$0" "$@"
fi

TMP="$(mktemp -d)"
PIDS=()
cleanup() {
    stop_proxies
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$TMP"
}
trap cleanup EXIT
cd "$TMP"
ulimit -n 65536 2>/dev/null || ulimit -n 8192

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# certificates: a CA, the wildcard cert of the proxies, the TLS backend's own cert
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
    -subj "/CN=bench CA" -days 2 2>/dev/null
mkcert() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" \
        -subj "/CN=$1" 2>/dev/null
    printf 'subjectAltName=%s\n' "$2" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile "$1.ext" -out "$1.pem" 2>/dev/null
    cat "$1.pem" "$1.key" >"$1.combined.pem"
}
mkcert wild "DNS:*.bench.test"
mkcert backend "DNS:*.bench.test"

BP=$(free_port); BTP=$(free_port); HTP=$(free_port); HPP=$(free_port)
APP=0123456789abcdef0123456789abcdef01234567
TERM_HOST="$APP-$BP.bench.test"
PASS_HOST="$APP-${BTP}s.bench.test"

# private /etc/hosts for wrk's name lookups
{ cat /etc/hosts; echo "127.0.0.1 $TERM_HOST $PASS_HOST"; } >hosts
mount --bind hosts /etc/hosts

cat >backend.cfg <<EOC
global
    maxconn 3000
    nbthread 1
defaults
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    maxconn 3000
frontend backend_http
    mode http
    bind 127.0.0.1:$BP
    http-request return status 200 content-type text/plain string "hello from the backend"
frontend backend_tls
    mode http
    bind 127.0.0.1:$BTP ssl crt $TMP/backend.combined.pem
    http-request return status 200 content-type text/plain string "hello from the backend"
EOC
haproxy -f backend.cfg -db >backend.log 2>&1 &
PIDS+=($!)

# start_proxies THREADS: the gateway with `workers=THREADS`, HAProxy with `nbthread THREADS`
GWPID=
HAPPID=
start_proxies() {
    stop_proxies
    sed -e "s|@NBTHREAD@|$1|" -e "s|@BACKEND_PORT@|$BP|" -e "s|@BACKEND_TLS_PORT@|$BTP|" \
        -e "s|@HAPROXY_TERM_PORT@|$HTP|" -e "s|@HAPROXY_PASS_PORT@|$HPP|" \
        -e "s|@WILD_PEM@|$TMP/wild.combined.pem|" "$HERE/bench_gateway_haproxy.cfg.in" >haproxy.cfg
    haproxy -f haproxy.cfg -db >haproxy.log 2>&1 &
    HAPPID=$!
    rm -f gw.port
    cat >gw.conf <<EOC
listen=127.0.0.1:0
port_file=$TMP/gw.port
cert=bench.test $TMP/wild.pem $TMP/wild.key
route=$APP 89abcdef0123456789abcdef0123456789abcdef 127.0.0.1
tls_versions=1.2,1.3
max_connections_per_app=0
splice=$SPLICE
splice_after_bytes=$SPLICE_AFTER
workers=$1
EOC
    "$GW" proxy-only --config gw.conf >gw.log 2>&1 &
    GWPID=$!
    for _ in $(seq 100); do [ -s gw.port ] && break; sleep 0.05; done
    GP=$(cat gw.port)
    sleep 0.5
}
stop_proxies() {
    if [ -n "$GWPID" ]; then
        kill -USR1 "$GWPID" 2>/dev/null && sleep 0.2
        GWSTATS=$(grep -o 'stats:.*' gw.log | tail -1)
        kill "$GWPID" "$HAPPID" 2>/dev/null || true
        wait "$GWPID" "$HAPPID" 2>/dev/null || true
    fi
    GWPID=
    HAPPID=
}
GWSTATS=

check_200() {
    curl -s -o /dev/null -w '%{http_code}' --max-time 5 --cacert ca.pem "$1" | grep -q 200 ||
        { echo "bench_gateway: $1 does not answer 200" >&2; cat gw.log haproxy.log >&2; exit 1; }
}
# run_wrk URL CONNS -> "rps p99_ms errors"
run_wrk() {
    local threads=2
    [ "$2" -ge 2 ] || threads=1
    wrk -t"$threads" -c"$2" -d"${DUR}s" --latency --timeout 10s "$1" >wrk.out 2>&1 || true
    local rps p99 errs
    rps=$(awk '/^Requests\/sec:/ {print $2}' wrk.out)
    p99=$(awk '$1 == "99%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' wrk.out)
    errs=$(awk '/Socket errors|Non-2xx/ {print}' wrk.out | tr '\n' ' ')
    echo "${rps:-0} ${p99:-nan} ${errs:-none}"
}

HZ=$(getconf CLK_TCK)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; } # utime + stime of all threads
# median of the arguments
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

echo "bench_gateway: ${DUR}s per run, $ROUNDS round(s) (median), wrk $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)," \
    "$(nproc) CPU(s), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '%-8s %-12s %6s %11s %9s %11s %9s %7s %7s %9s %9s\n' threads mode conns gw_req/s gw_p99ms \
    hap_req/s hap_p99ms rps_x p99_x gw_cpu_us hap_cpu_us
for threads in $THREADS; do
    start_proxies "$threads"
    check_200 "https://$TERM_HOST:$GP/"
    check_200 "https://$TERM_HOST:$HTP/"
    check_200 "https://$PASS_HOST:$GP/"
    check_200 "https://$PASS_HOST:$HPP/"
    for mode in terminate passthrough; do
        if [ "$mode" = terminate ]; then host=$TERM_HOST; hport=$HTP; else host=$PASS_HOST; hport=$HPP; fi
        for c in $CONNS; do
            grs=(); gps=(); gcs=(); hrs=(); hps=(); hcs=(); notes=
            for r in $(seq "$ROUNDS"); do
                # alternate who goes first, so a burst of outside load hits both alike
                if [ $((r % 2)) -eq 1 ]; then order="gw hap"; else order="hap gw"; fi
                for who in $order; do
                    if [ "$who" = gw ]; then url="https://$host:$GP/"; else url="https://$host:$hport/"; fi
                    if [ "$who" = gw ]; then pid=$GWPID; else pid=$HAPPID; fi
                    t0=$(cpu_ticks "$pid")
                    read -r rps p99 err < <(run_wrk "$url" "$c")
                    t1=$(cpu_ticks "$pid")
                    # CPU time of the proxy process per request (µs): robust against outside load
                    cpr=$(awk -v t="$((t1 - t0))" -v hz="$HZ" -v r="$rps" -v d="$DUR" \
                        'BEGIN { n = r * d; if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "nan" }')
                    cp wrk.out "wrk-$who-t$threads-$mode-$c-$r.out"
                    [ "$err" = none ] || notes="$notes $who: $err"
                    if [ "$who" = gw ]; then
                        grs+=("$rps"); gps+=("$p99"); gcs+=("$cpr")
                    else
                        hrs+=("$rps"); hps+=("$p99"); hcs+=("$cpr")
                    fi
                done
            done
            grps=$(median "${grs[@]}"); gp99=$(median "${gps[@]}")
            hrps=$(median "${hrs[@]}"); hp99=$(median "${hps[@]}")
            gcpu=$(median "${gcs[@]}"); hcpu=$(median "${hcs[@]}")
            ratio=$(awk -v a="$grps" -v b="$hrps" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
            pratio=$(awk -v a="$gp99" -v b="$hp99" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
            printf '%-8s %-12s %6s %11.0f %9s %11.0f %9s %7s %7s %9s %9s\n' "$threads" "$mode" "$c" \
                "$grps" "$gp99" "$hrps" "$hp99" "$ratio" "$pratio" "$gcpu" "$hcpu"
            [ -z "$notes" ] || echo "    errors:$notes"
        done
    done
    stop_proxies
    echo "    gateway ($threads worker(s)) $GWSTATS"
done
echo "bench_gateway: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
[ -z "${DS_BENCH_KEEP:-}" ] || cp wrk-*.out "$DS_BENCH_KEEP"/
