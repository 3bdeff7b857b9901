#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Differential test: `dstack verify quote --json` against the independent JavaScript verifier
# @phala/dcap-qvl on the same quote, collateral, time and trust anchor. For every case both
# must agree on ok/fail, on the TCB status and advisory ids, and (when ok) on the report fields
# mr_td, rtmr0-3, report_data and fmspc. dcap-qvl's own CLI (test_case.js verify) gives the
# verdict and the status; since it prints nothing else, a few lines of node calling the same
# library's exported verify() give the advisories and report fields.
# Cases: both Intel samples at window_end-1 and after their window; a simulated quote from
# dstack-tee-sim (when built) with the mock root (both accept) and without it (both reject).
# Known divergence, asserted as such: between the PCK CRL's nextUpdate and the TCB info's
# nextUpdate the JS port accepts (it does not check CRL expiry) while dstack rejects, as the
# Rust dcap-qvl does (spec attestation.md §2.3).
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DS_SRC="${DS_SRC:-.}"
DCAP="${DS_DCAP:-$(dirname "${BASH_SOURCE[0]}")/../vectors/dcap}"
DSTACK="$DS_BIN/dstack"
QVL="$DS_SRC/node_modules/@phala/dcap-qvl"

ds_need_tools node jq
[ -f "$QVL/test_case.js" ] || { echo "SKIP: $QVL missing (npm ci)"; exit 77; }
ds_need_bins "$DSTACK"

ds_tmpdir
SIM_PID=""
ds_stop_on_exit SIM_PID

# The JS side as JSON: {ok, status, advisory_ids, error, report: {mr_td, rtmr0-3, report_data,
# fmspc}} through the library's exported verify / QuoteVerifier and intel.getFmspc.
cat >"$TMP/js_verify.cjs" <<'EOF'
'use strict';
const fs = require('fs');
const qvl = require(process.env.QVL);
const [quotePath, collPath, time, rootPath] = process.argv.slice(2);
const quote = new Uint8Array(fs.readFileSync(quotePath));
const coll = JSON.parse(fs.readFileSync(collPath, 'utf8'));
const hex = (b) => Buffer.from(b).toString('hex');
let out;
try {
    const r = rootPath
        ? qvl.QuoteVerifier.newWithRootCa(fs.readFileSync(rootPath)).verify(quote, coll, +time)
        : qvl.verify(quote, coll, +time);
    const d = r.report.data;
    const report = r.report.type === 'sgx'
        ? { report_data: hex(d.reportData), mr_enclave: hex(d.mrEnclave) }
        : { mr_td: hex(d.mrTd), rtmr0: hex(d.rtMr0), rtmr1: hex(d.rtMr1), rtmr2: hex(d.rtMr2),
            rtmr3: hex(d.rtMr3), report_data: hex(d.reportData) };
    report.fmspc = hex(qvl.intel.getFmspc(qvl.Quote.parse(quote)));
    out = { ok: true, status: r.status, advisory_ids: r.advisory_ids, report };
} catch (e) {
    out = { ok: false, status: null, advisory_ids: [], error: e.message };
}
console.log(JSON.stringify(out));
EOF

# Map a dcap-qvl error message to our failed_step where the correspondence is unambiguous.
step_of_js_error() {
    case "$1" in
    *"TCBInfo"* | *"tcb_info"* | *"TCB Info"*) echo tcb_info ;;
    *"QE Identity"* | *"qe_identity"*) echo qe_identity ;;
    *"ISV enclave report signature"*) echo quote_signature ;;
    *"qe_report"*) echo qe_report_signature ;;
    *"QE report hash"*) echo qe_report_binding ;;
    *) echo "" ;;
    esac
}

# crosscheck NAME QUOTE COLLATERAL TIME [ROOT_DER] [EXPECT_OK] [SAME_STEP]
# SAME_STEP (default yes): on rejection, also require that dcap-qvl's error maps to our
# failed_step. Use "no" when several checks fail at once: dcap-qvl-js checks the TCB info dates
# before the root CA CRL, the Rust dcap-qvl (and dstack) the root CA CRL first (spec §2.2).
crosscheck() {
    local name="$1" quote="$2" coll="$3" t="$4" root="${5:-}" want="${6:-}" same="${7:-yes}"
    local ours js tc_out tc_rc root_args=()
    if [ -n "$root" ]; then
        root_args=(--root-ca "$root")
    fi
    ours="$("$DSTACK" verify quote "$quote" --collateral "$coll" --time "$t" "${root_args[@]}" \
        --json 2>"$TMP/ours.err")"
    local ours_rc=$?
    if grep -qE "Sanitizer|runtime error:" "$TMP/ours.err"; then
        fail "$name: sanitizer report: $(head -5 "$TMP/ours.err")"
        return
    fi
    js="$(QVL="$QVL" node "$TMP/js_verify.cjs" "$quote" "$coll" "$t" $root)"
    tc_out="$(node "$QVL/test_case.js" verify --time "$t" "$quote" "$coll" $root 2>&1)"
    tc_rc=$?

    local ours_ok js_ok tc_ok
    ours_ok="$(jq -r '.ok' <<<"$ours")"
    js_ok="$(jq -r '.ok' <<<"$js")"
    [ "$tc_rc" = 0 ] && tc_ok=true || tc_ok=false
    if [ "$tc_rc" != 0 ] && [ "$tc_rc" != 1 ]; then
        fail "$name: test_case.js exited $tc_rc: $tc_out"
        return
    fi
    if [ "$js_ok" != "$tc_ok" ]; then
        fail "$name: dcap-qvl library ($js_ok) and test_case.js ($tc_ok) disagree"
        return
    fi
    if [ "$ours_ok" != "$js_ok" ]; then
        fail "$name: dstack ok=$ours_ok (exit $ours_rc), dcap-qvl ok=$js_ok"
        echo "     dstack:  $(jq -c '{ok, failed_step, error, status}' <<<"$ours")"
        echo "     dcap-qvl: $js"
        return
    fi
    if [ -n "$want" ] && [ "$ours_ok" != "$want" ]; then
        fail "$name: both say ok=$ours_ok, expected $want"
        return
    fi
    if [ "$ours_ok" = true ]; then
        [ "$ours_rc" = 0 ] || { fail "$name: ok but exit $ours_rc"; return; }
        local tc_status
        tc_status="$(sed -n 's/^Status: //p' <<<"$tc_out")"
        if [ "$tc_status" != "$(jq -r .status <<<"$ours")" ]; then
            fail "$name: status: dstack $(jq -r .status <<<"$ours"), test_case.js $tc_status"
            return
        fi
        local fields='{status, advisory_ids,
            report: (.report | {mr_td, rtmr0, rtmr1, rtmr2, rtmr3, report_data, fmspc,
                                mr_enclave} | with_entries(select(.value != null)))}'
        local a b
        a="$(jq -S -c "$fields" <<<"$ours")"
        b="$(jq -S -c "$fields" <<<"$js")"
        if [ "$a" != "$b" ]; then
            fail "$name: fields differ"
            echo "     dstack:   $a"
            echo "     dcap-qvl: $b"
            return
        fi
        pass "$name: both accept, status $(jq -r .status <<<"$ours"), same advisories and report"
    else
        [ "$ours_rc" = 1 ] || { fail "$name: rejected but exit $ours_rc"; return; }
        local js_err js_step ours_step
        js_err="$(jq -r '.error' <<<"$js")"
        js_step="$(step_of_js_error "$js_err")"
        ours_step="$(jq -r '.failed_step' <<<"$ours")"
        if [ "$same" = yes ] && [ -n "$js_step" ] && [ "$js_step" != "$ours_step" ]; then
            fail "$name: both reject, but dstack at $ours_step and dcap-qvl with '$js_err'"
            return
        fi
        pass "$name: both reject (dstack: $ours_step; dcap-qvl: $js_err)"
    fi
}

TDX_END=1752919235 # testdata/dcap/README.md
SGX_END=1752919278

crosscheck "tdx sample at window_end-1" "$DCAP/tdx_quote" "$DCAP/tdx_quote_collateral.json" \
    $((TDX_END - 1)) "" true
crosscheck "sgx sample at window_end-1" "$DCAP/sgx_quote" "$DCAP/sgx_quote_collateral.json" \
    $((SGX_END - 1)) "" true
crosscheck "tdx sample an hour after the window" "$DCAP/tdx_quote" \
    "$DCAP/tdx_quote_collateral.json" $((TDX_END + 3600)) "" false
crosscheck "sgx sample an hour after the window" "$DCAP/sgx_quote" \
    "$DCAP/sgx_quote_collateral.json" $((SGX_END + 3600)) "" false
crosscheck "sgx sample one second after the window" "$DCAP/sgx_quote" \
    "$DCAP/sgx_quote_collateral.json" $((SGX_END + 1)) "" false
# A year later the root CA CRL has expired too (nextUpdate 2026-04-03): several checks fail.
crosscheck "tdx sample a year after the window" "$DCAP/tdx_quote" \
    "$DCAP/tdx_quote_collateral.json" $((TDX_END + 365 * 86400)) "" false no
crosscheck "tdx sample before the window" "$DCAP/tdx_quote" "$DCAP/tdx_quote_collateral.json" \
    1750329146 "" false
cp "$DCAP/tdx_quote" "$TMP/tdx_corrupt"
printf '\xff' | dd of="$TMP/tdx_corrupt" bs=1 seek=600 conv=notrunc status=none
crosscheck "tdx sample with corrupted report_data" "$TMP/tdx_corrupt" \
    "$DCAP/tdx_quote_collateral.json" $((TDX_END - 1)) "" false

# The known divergence (see the header): the PCK CRL expired, the TCB info has not.
ours_rc=0
"$DSTACK" verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $((TDX_END + 1)) --json >"$TMP/div.json" 2>/dev/null || ours_rc=$?
if [ "$ours_rc" = 1 ] && [ "$(jq -r .failed_step "$TMP/div.json")" = pck_chain ]; then
    pass "expired PCK CRL: dstack rejects at pck_chain (stricter than the JS port, like Rust)"
else
    fail "expired PCK CRL: dstack exit $ours_rc, $(jq -c '{ok, failed_step}' "$TMP/div.json")"
fi

# ---- simulated quotes ---------------------------------------------------------------------------

# Simulated quotes are genuine DCAP quotes signed by a mock PKI: with the mock root both tools
# must accept them with identical fields; with Intel's root (the default) both must reject.
SIM="$DS_BIN/dstack-tee-sim"
if [ -x "$SIM" ]; then
    SEED="$(printf 'c3%.0s' $(seq 1 32))"
    NOW="$(date +%s)"
    RD="$(printf 'ab%.0s' $(seq 1 32))$(printf '01%.0s' $(seq 1 32))"
    R3="$(printf '7e%.0s' $(seq 1 48))"
    if "$SIM" root-ca --seed "$SEED" >"$TMP/sim_root.der" &&
        "$SIM" collateral --seed "$SEED" --time "$NOW" >"$TMP/sim_coll.json" &&
        "$SIM" quote --seed "$SEED" --report-data "$RD" --rtmr3 "$R3" >"$TMP/sim_q4" &&
        "$SIM" quote --seed "$SEED" --report-data "$RD" --version 5 >"$TMP/sim_q5"; then
        crosscheck "simulated v4 quote with the mock root" "$TMP/sim_q4" "$TMP/sim_coll.json" \
            "$NOW" "$TMP/sim_root.der" true
        crosscheck "simulated v5 quote with the mock root" "$TMP/sim_q5" "$TMP/sim_coll.json" \
            "$NOW" "$TMP/sim_root.der" true
        crosscheck "simulated v4 quote with the Intel root" "$TMP/sim_q4" "$TMP/sim_coll.json" \
            "$NOW" "" false
        crosscheck "simulated v4 quote, mock root, collateral expired" "$TMP/sim_q4" \
            "$TMP/sim_coll.json" $((NOW + 31 * 86400)) "$TMP/sim_root.der" false
        if [ "$(jq -r .report.rtmr3 <<<"$("$DSTACK" verify quote "$TMP/sim_q4" \
            --collateral "$TMP/sim_coll.json" --time "$NOW" --root-ca "$TMP/sim_root.der" \
            --json 2>/dev/null)")" = "$R3" ]; then
            pass "simulated quote carries the requested RTMR3"
        else
            fail "simulated quote RTMR3 differs from --rtmr3"
        fi
    else
        fail "dstack-tee-sim root-ca/collateral/quote failed"
    fi
else
    echo "note: $SIM not built; simulated-quote cases not run"
fi

ds_finish "all checks passed"
