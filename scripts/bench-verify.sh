#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Benchmark DCAP quote verification: libdstack (dstack-bench verify, warm and cold caches)
# against the pure-JavaScript @phala/dcap-qvl verifying the same quote, collateral and time
# in-process for the same number of seconds (bench/dcapqvl_loop.cjs). Prints JSON lines on
# stdout (ours warm, ours cold, dcap-qvl-js, and a summary line with the ratios) and a readable
# summary on stderr. Builds nothing: expects build/bin/dstack-bench (override with DS_BIN).
#
# usage: scripts/bench-verify.sh [--seconds N]     (default 3 seconds per mode)
# Goals (docs/verify.md): >= 5,000 warm verifications/s on one core, >= 50x the JS rate.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DS_BIN="${DS_BIN:-$ROOT/build/bin}"
QUOTE="$ROOT/tests/vectors/dcap/tdx_quote"
COLLATERAL="$ROOT/tests/vectors/dcap/tdx_quote_collateral.json"
AT=1752919234 # window_end - 1 of the TDX sample (testdata/dcap/README.md)
BENCH_SECONDS=3

while [ $# -gt 0 ]; do
    case "$1" in
    --seconds)
        [ $# -ge 2 ] || { echo "bench-verify.sh: --seconds: expected a number" >&2; exit 2; }
        BENCH_SECONDS="$2"
        shift 2
        ;;
    -h | --help)
        sed -n '3,10p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "bench-verify.sh: unknown argument '$1'" >&2
        exit 2
        ;;
    esac
done
if ! [[ "$BENCH_SECONDS" =~ ^[0-9]+([.][0-9]+)?$ ]]; then
    echo "bench-verify.sh: --seconds: expected a number, got '$BENCH_SECONDS'" >&2
    exit 2
fi
if [ ! -x "$DS_BIN/dstack-bench" ]; then
    echo "bench-verify.sh: $DS_BIN/dstack-bench not found; build first (cmake --build build)" >&2
    exit 2
fi
if ! command -v node >/dev/null || [ ! -d "$ROOT/node_modules/@phala/dcap-qvl" ]; then
    echo "bench-verify.sh: node and node_modules/@phala/dcap-qvl are needed (npm ci)" >&2
    exit 2
fi
for f in "$QUOTE" "$COLLATERAL"; do
    [ -r "$f" ] || { echo "bench-verify.sh: cannot read '$f'" >&2; exit 2; }
done

ours="$("$DS_BIN/dstack-bench" verify --quote "$QUOTE" --collateral "$COLLATERAL" --time "$AT" \
    --seconds "$BENCH_SECONDS")"
js="$(cd "$ROOT" && node bench/dcapqvl_loop.cjs --quote "$QUOTE" --collateral "$COLLATERAL" \
    --time "$AT" --seconds "$BENCH_SECONDS")"

echo "$ours"
echo "$js"
printf '%s\n%s\n' "$ours" "$js" | python3 -c '
import json, sys
rows = {r["mode"]: r for r in (json.loads(l) for l in sys.stdin if l.strip())}
warm, cold, js = rows["warm"], rows["cold"], rows["dcap-qvl-js"]
ratio_warm = warm["ops_per_sec"] / js["ops_per_sec"]
ratio_cold = cold["ops_per_sec"] / js["ops_per_sec"]
print(json.dumps({"mode": "summary", "warm_ops_per_sec": warm["ops_per_sec"],
                  "cold_ops_per_sec": cold["ops_per_sec"], "js_ops_per_sec": js["ops_per_sec"],
                  "ratio_warm_vs_js": round(ratio_warm, 1), "ratio_cold_vs_js": round(ratio_cold, 1),
                  "goal_warm_5000": warm["ops_per_sec"] >= 5000, "goal_ratio_50x": ratio_warm >= 50}))
sys.stdout.flush()
def line(name, r):
    return "  %-22s %10.1f verifications/s  p50 %9.1f us  p99 %9.1f us  (n=%d)" % (
        name, r["ops_per_sec"], r["p50_us"], r["p99_us"], r["count"])
print("DCAP verification of testdata/dcap/tdx_quote at 1752919234:", file=sys.stderr)
print(line("libdstack warm", warm), file=sys.stderr)
print(line("libdstack cold", cold), file=sys.stderr)
print(line("@phala/dcap-qvl (JS)", js), file=sys.stderr)
print("  ratio warm/JS %.1fx (goal >= 50x: %s), warm rate goal >= 5000/s: %s" % (
    ratio_warm, "met" if ratio_warm >= 50 else "NOT met",
    "met" if warm["ops_per_sec"] >= 5000 else "NOT met"), file=sys.stderr)
print("  ratio cold/JS %.1fx" % ratio_cold, file=sys.stderr)
'
