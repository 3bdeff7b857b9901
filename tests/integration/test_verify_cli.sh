#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `dstack verify quote` / `dstack verify attestation`: exit codes, JSON shape and error
# messages for good and bad inputs (docs/verify.md is the contract):
#  - both Intel samples verify at window_end-1 with their exact status and advisories;
#  - expired collateral fails and failed_step names the step whose item expired;
#  - --hex input; a corrupted quote fails at quote_signature;
#  - usage/input errors exit 2 and name the option or file;
#  - with the simulator (dstack-tee-sim in $DS_BIN): fail closed without the mock root, and
#    `verify attestation` on a GetQuote JSON whose RTMR3 is the replay of a runtime-event log
#    succeeds, and fails when the event log is tampered with.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DCAP="${DS_DCAP:-$(dirname "${BASH_SOURCE[0]}")/../vectors/dcap}"
DSTACK="$DS_BIN/dstack"
TDX_AT=1752919234 # window_end - 1 (testdata/dcap/README.md)
SGX_AT=1752919277

ds_need_tools jq
ds_need_bins "$DSTACK"

ds_tmpdir
SIM_PID=""
ds_stop_on_exit SIM_PID

# run ARGS...: runs dstack, sets $rc, $out (stdout) and $err (stderr). Under ASan/UBSan a
# memory error can exit 1 like a verification failure: ds_run counts it as a failure.
run() { ds_run "$DSTACK" "$@"; }

# expect NAME RC JQ-FILTER: the last run exited RC and its stdout satisfies the filter.
expect() {
    local name="$1" want_rc="$2" filter="$3"
    if [ "$rc" != "$want_rc" ]; then
        fail "$name: exit $rc, expected $want_rc (stderr: $err) (stdout: ${out:0:400})"
        return
    fi
    if ! echo "$out" | jq -e "$filter" >/dev/null 2>&1; then
        fail "$name: JSON does not satisfy: $filter"
        echo "$out" | head -40 | sed 's/^/     /'
        return
    fi
    pass "$name"
}

# expect_usage NAME PATTERN...: the last run exited 2 and stderr matches every pattern.
expect_usage() {
    local name="$1"
    shift
    if [ "$rc" != 2 ]; then
        fail "$name: exit $rc, expected 2 (stderr: $err)"
        return
    fi
    for p in "$@"; do
        if ! grep -qF -- "$p" <<<"$err"; then
            fail "$name: stderr does not mention '$p': $err"
            return
        fi
    done
    pass "$name"
}

TDX_MRTD=91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7
TDX_RTMR0=44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0
ZERO48=$(printf '0%.0s' $(seq 1 96))

# ---- Intel samples ------------------------------------------------------------------------------

run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "tdx sample verifies, UpToDate, full report" 0 "
    .ok == true and .status == \"UpToDate\" and .advisory_ids == [] and .simulated == false
    and (has(\"failed_step\") | not) and (has(\"error\") | not)
    and .report.tee_type == \"tdx\" and .report.quote_version == 4
    and .report.fmspc == \"b0c06f000000\" and .report.mr_td == \"$TDX_MRTD\"
    and .report.rtmr0 == \"$TDX_RTMR0\" and .report.rtmr3 == \"$ZERO48\"
    and .report.td_attributes == \"0000001000000000\"
    and .report.tee_tcb_svn == \"06010300000000000000000000000000\"
    and .report.xfam == \"e702060000000000\"
    and (.report.report_data | test(\"^9a9d48e7f6799642[0-9a-f]{112}$\"))
    and ([.report.rtmr1, .report.rtmr2, .report.mr_config_id, .report.mr_owner,
          .report.mr_owner_config] | all(test(\"^[0-9a-f]{96}$\")))"

run verify quote "$DCAP/sgx_quote" --collateral "$DCAP/sgx_quote_collateral.json" \
    --time $SGX_AT --json
expect "sgx sample verifies with its advisories" 0 "
    .ok == true and .status == \"ConfigurationAndSWHardeningNeeded\"
    and .advisory_ids == [\"INTEL-SA-00289\", \"INTEL-SA-00615\"] and .simulated == false
    and .report.tee_type == \"sgx\" and .report.quote_version == 3
    and .report.fmspc == \"00a067110000\"
    and .report.mr_enclave == \"33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb\"
    and .report.mr_signer == \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"
    and .report.isv_prod_id == 0 and .report.isv_svn == 0
    and (.report.report_data | startswith(\"48656c6c6f2c20776f726c6421\"))"

run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT
if [ "$rc" = 0 ] && grep -q "quote verification: OK" <<<"$out" && grep -q "UpToDate" <<<"$out" &&
    grep -q "$TDX_MRTD" <<<"$out"; then
    pass "readable summary names verdict, status and measurements"
else
    fail "readable summary (rc $rc): $out"
fi

# ---- time ---------------------------------------------------------------------------------------

# The TDX window ends when the PCK CRL expires (2025-07-19T10:00:35Z); the TCB info expires at
# 10:16:03Z. Expiry of each must be reported by the step that checks it.
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time 1752919236 --json
expect "pck crl expired one second after the window: pck_chain" 1 '
    .ok == false and .failed_step == "pck_chain" and (.error | test("expire"; "i"))
    and .status == null and .report.mr_td != null'
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time 1752922835 --json
expect "tcb info expired an hour after the window: tcb_info" 1 '
    .ok == false and .failed_step == "tcb_info" and (.error | test("expire"; "i"))'
run verify quote "$DCAP/sgx_quote" --collateral "$DCAP/sgx_quote_collateral.json" \
    --time 1752919279 --json
expect "sgx qe identity expired after the window: qe_identity" 1 '
    .ok == false and .failed_step == "qe_identity" and (.error | test("expire"; "i"))'
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time 1750329146 --json
expect "before the window: qe identity not yet valid" 1 '
    .ok == false and .failed_step == "qe_identity"'
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" --json
expect "default time is now (collateral long expired)" 1 '.ok == false and .failed_step != null'

# ---- --hex --------------------------------------------------------------------------------------

{
    printf '0x'
    od -An -v -tx1 "$DCAP/tdx_quote" | tr -d ' \n' | fold -w 64
    echo
} >"$TMP/tdx_quote.hex"
run verify quote "$TMP/tdx_quote.hex" --hex --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "--hex with 0x prefix and line breaks" 0 ".ok == true and .report.mr_td == \"$TDX_MRTD\""
tr 'a-f' 'A-F' <"$TMP/tdx_quote.hex" | sed 's/^0X/0x/' >"$TMP/tdx_quote.HEX"
run verify quote "$TMP/tdx_quote.HEX" --hex --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "--hex upper case" 0 ".ok == true"
printf 'zz' >"$TMP/bad.hex"
run verify quote "$TMP/bad.hex" --hex --collateral "$DCAP/tdx_quote_collateral.json" --time 1
expect_usage "--hex on non-hex text is an input error" "$TMP/bad.hex" "hex"
run verify quote "$DCAP/tdx_quote" --hex --collateral "$DCAP/tdx_quote_collateral.json" --time 1
expect_usage "--hex on a binary quote is an input error" "$DCAP/tdx_quote" "--hex"

# ---- corrupted quotes ---------------------------------------------------------------------------

# Flip one byte of report_data (offset 568, inside the signed region of a v4 TDX quote).
cp "$DCAP/tdx_quote" "$TMP/tdx_corrupt"
printf '\xff' | dd of="$TMP/tdx_corrupt" bs=1 seek=600 conv=notrunc status=none
run verify quote "$TMP/tdx_corrupt" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "corrupted report_data fails at quote_signature" 1 '
    .ok == false and .failed_step == "quote_signature" and (.error | length > 0)
    and .status == null and .advisory_ids == []'
run verify quote "$TMP/tdx_corrupt" --collateral "$DCAP/tdx_quote_collateral.json" --time $TDX_AT
if [ "$rc" = 1 ] && grep -q "FAILED" <<<"$out" && grep -q "quote_signature" <<<"$out"; then
    pass "readable summary of a failure names the step"
else
    fail "readable failure summary (rc $rc): $out"
fi
head -c 100 "$DCAP/tdx_quote" >"$TMP/tdx_trunc"
run verify quote "$TMP/tdx_trunc" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "truncated quote fails at quote_format" 1 '
    .ok == false and .failed_step == "quote_format" and .report == null'
# The SGX quote against the TDX collateral: the collateral is for another TEE/platform.
run verify quote "$DCAP/sgx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "sgx quote with tdx collateral fails" 1 '.ok == false and .failed_step != null'

# ---- usage and input errors (exit 2, naming the option or file) --------------------------------

run verify quote "$TMP/does-not-exist" --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "missing quote file" "$TMP/does-not-exist"
run verify quote "$DCAP/tdx_quote" --collateral "$TMP/no-collateral.json"
expect_usage "missing collateral file" "--collateral" "$TMP/no-collateral.json"
echo '{"tcb_info": 1}' >"$TMP/bad_collateral.json"
run verify quote "$DCAP/tdx_quote" --collateral "$TMP/bad_collateral.json"
expect_usage "malformed collateral file" "$TMP/bad_collateral.json"
for t in abc -5 1.5 "" 99999999999999999999 253402300800; do
    run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" --time "$t"
    expect_usage "bad --time '$t'" "--time" "unix seconds"
done
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" --time
expect_usage "--time without a value" "--time"
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --pccs-url http://127.0.0.1:9
expect_usage "both --collateral and --pccs-url" "--collateral" "--pccs-url"
run verify quote "$DCAP/tdx_quote"
expect_usage "neither --collateral nor --pccs-url" "--collateral" "--pccs-url"
run verify quote "$DCAP/tdx_quote" --pccs-url ftp://example.invalid
expect_usage "--pccs-url must be http(s)" "--pccs-url" "http"
run verify quote --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "no FILE" "FILE"
run verify quote "$DCAP/tdx_quote" "$DCAP/sgx_quote" --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "two FILEs" "exactly one FILE"
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" --frobnicate
expect_usage "unknown option" "--frobnicate"
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" --json=yes
expect_usage "flag with a value" "--json"
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --insecure-allow-simulated
expect_usage "--insecure-allow-simulated needs --pccs-url or --root-ca" \
    "--insecure-allow-simulated" "--pccs-url"
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --root-ca "$TMP/no-root.der"
expect_usage "missing --root-ca file" "--root-ca" "$TMP/no-root.der"
echo "not a certificate" >"$TMP/junk.pem"
run verify quote "$DCAP/tdx_quote" --collateral "$DCAP/tdx_quote_collateral.json" \
    --root-ca "$TMP/junk.pem"
expect_usage "--root-ca that is not a certificate" "--root-ca" "$TMP/junk.pem"
run verify attestation "$DCAP/tdx_quote" --hex --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "--hex is not an option of verify attestation" "--hex"
run verify frob
expect_usage "unknown verify command" "frob"
run frobnicate
expect_usage "unknown command" "frobnicate"
run verify attestation "$TMP/missing.json" --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "missing attestation file" "$TMP/missing.json"
echo '[1,2' >"$TMP/notjson.json"
run verify attestation "$TMP/notjson.json" --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "attestation file that is not JSON" "$TMP/notjson.json" "not JSON"
echo '{"event_log": "[]"}' >"$TMP/noquote.json"
run verify attestation "$TMP/noquote.json" --collateral "$DCAP/tdx_quote_collateral.json"
expect_usage "attestation file without a quote" "quote"
run verify --help
if [ "$rc" = 0 ] && grep -q -- "--insecure-allow-simulated" <<<"$out"; then
    pass "verify --help"
else
    fail "verify --help (rc $rc)"
fi

# ---- Intel quote as an attestation (real RTMR0-2 without their boot log) ------------------------

TDX_HEX="$(od -An -v -tx1 "$DCAP/tdx_quote" | tr -d ' \n')"
jq -n --arg q "$TDX_HEX" '{quote: $q, event_log: "[]"}' >"$TMP/intel_att.json"
run verify attestation "$TMP/intel_att.json" --collateral "$DCAP/tdx_quote_collateral.json" \
    --time $TDX_AT --json
expect "intel quote with an empty event log: quote ok, RTMR0 mismatch" 1 "
    .ok == false and .quote.ok == true and .quote.status == \"UpToDate\"
    and (.rtmrs | length == 4) and .rtmrs[0].ok == false and .rtmrs[0].expected == \"$TDX_RTMR0\"
    and .rtmrs[0].replayed == \"$ZERO48\" and .rtmrs[3].ok == true
    and (.error | test(\"RTMR0\")) and .runtime_events == []"

# ---- simulator: fail closed, and verify attestation -------------------------------------------

SIM="$DS_BIN/dstack-tee-sim"
if [ ! -x "$SIM" ]; then
    echo "note: $SIM not built; simulator cases not run"
    [ "$failures" -eq 0 ] || { echo "$failures check(s) failed"; exit 1; }
    exit 0
fi
command -v python3 >/dev/null || { echo "SKIP: python3 needed for the simulator cases"; exit 77; }

SEED="$(printf '5e%.0s' $(seq 1 32))"
NOW="$(date +%s)"
ZERO64="$(printf '00%.0s' $(seq 1 64))"
"$SIM" root-ca --seed "$SEED" >"$TMP/sim_root.der" &&
    "$SIM" collateral --seed "$SEED" --time "$NOW" >"$TMP/sim_coll.json" &&
    "$SIM" quote --seed "$SEED" --report-data "$ZERO64" >"$TMP/sim_quote" ||
    { fail "dstack-tee-sim root-ca/collateral/quote"; exit 1; }

run verify quote "$TMP/sim_quote" --collateral "$TMP/sim_coll.json" --time "$NOW" --json
expect "simulated quote against the Intel root fails closed" 1 '
    .ok == false and .simulated == false and .failed_step != null and .status == null'
run verify quote "$TMP/sim_quote" --collateral "$TMP/sim_coll.json" --time "$NOW" \
    --root-ca "$TMP/sim_root.der" --json
expect "simulated quote with --root-ca (DER) verifies, simulated" 0 "
    .ok == true and .simulated == true and .status == \"UpToDate\"
    and .report.mr_td == \"$(printf '11%.0s' $(seq 1 48))\" and .report.report_data == \"$ZERO64\""
if grep -q "NON-Intel" <<<"$err"; then
    pass "--root-ca with a non-Intel root warns on stderr"
else
    fail "--root-ca non-Intel warning missing: $err"
fi
{
    echo "-----BEGIN CERTIFICATE-----"
    base64 -w 64 "$TMP/sim_root.der"
    echo "-----END CERTIFICATE-----"
} >"$TMP/sim_root.pem"
run verify quote "$TMP/sim_quote" --collateral "$TMP/sim_coll.json" --time "$NOW" \
    --root-ca "$TMP/sim_root.pem" --json
expect "simulated quote with --root-ca (PEM) verifies" 0 '.ok == true and .simulated == true'

# An attestation built independently of the simulator's TD state: python computes RTMR0-3 from
# a log of boot events (given digests) and runtime events (digest = SHA-384(le32(0x08000001) ||
# ":" || name || ":" || payload), spec §4.4; stripped to "" as GetQuote does), and the app
# identity an honest verifier must derive from it (spec §4.6). The simulator signs a quote
# carrying those registers.
python3 - "$TMP" <<'PY'
import hashlib, json, sys
tmp = sys.argv[1]
sha384 = lambda b: hashlib.sha384(b).digest()
sha256 = lambda b: hashlib.sha256(b).digest()
mrtd = bytes([0x5a]) * 48
boot = [(0, sha384(b"td-hob")), (0, sha384(b"cfv")), (1, sha384(b"kernel")),
        (2, sha384(b"cmdline")), (2, sha384(b"initrd"))]
app_id = bytes(range(1, 21))
compose_hash = sha256(b"services: {}")
instance_id = bytes([0xab]) * 20
key_provider = b'{"name":"kms","id":"0badc0de"}'
runtime = [("system-preparing", b""), ("app-id", app_id), ("compose-hash", compose_hash),
           ("instance-id", instance_id), ("boot-mr-done", b""), ("key-provider", key_provider),
           ("storage-fs", b"ext4"), ("system-ready", b""), ("app-event", b"\x00\x01binary")]
rtmr = [bytes(48)] * 4
log = []
for imr, d in boot:
    rtmr[imr] = sha384(rtmr[imr] + d)
    log.append({"imr": imr, "event_type": 0x80000001, "digest": d.hex(), "event": "",
                "event_payload": ""})
for name, payload in runtime:
    d = sha384((0x08000001).to_bytes(4, "little") + b":" + name.encode() + b":" + payload)
    rtmr[3] = sha384(rtmr[3] + d)
    log.append({"imr": 3, "event_type": 0x08000001, "digest": "", "event": name,
                "event_payload": payload.hex()})
os_image_hash = sha256(b"os image")
expected = {
    "mrtd": mrtd.hex(), "rtmr": [r.hex() for r in rtmr],
    "app_id": app_id.hex(), "compose_hash": compose_hash.hex(), "instance_id": instance_id.hex(),
    "os_image_hash": os_image_hash.hex(),
    "mr_system": sha256(mrtd + rtmr[0] + rtmr[1] + rtmr[2] + sha256(key_provider)).hex(),
    "mr_aggregated": sha256(mrtd + rtmr[0] + rtmr[1] + rtmr[2] + rtmr[3]).hex(),
    "names": [n for n, _ in runtime],
}
json.dump(expected, open(tmp + "/expected.json", "w"))
open(tmp + "/event_log.json", "w").write(json.dumps(log))
open(tmp + "/vm_config.json", "w").write(json.dumps({"os_image_hash": os_image_hash.hex(),
                                                     "cpu_count": 2}))
# A tampered copy: the compose-hash payload differs by one bit.
bad = json.loads(json.dumps(log))
for e in bad:
    if e["event"] == "compose-hash":
        p = bytearray(bytes.fromhex(e["event_payload"])); p[0] ^= 1
        e["event_payload"] = p.hex()
open(tmp + "/event_log_tampered.json", "w").write(json.dumps(bad))
# Another: a boot event digest changed (RTMR1).
bad2 = json.loads(json.dumps(log))
bad2[2]["digest"] = sha384(b"other kernel").hex()
open(tmp + "/event_log_rtmr1.json", "w").write(json.dumps(bad2))
PY
X() { jq -r "$1" "$TMP/expected.json"; }
"$SIM" quote --seed "$SEED" --report-data "$ZERO64" --mrtd "$(X .mrtd)" --rtmr0 "$(X '.rtmr[0]')" \
    --rtmr1 "$(X '.rtmr[1]')" --rtmr2 "$(X '.rtmr[2]')" --rtmr3 "$(X '.rtmr[3]')" \
    >"$TMP/att_quote" || { fail "dstack-tee-sim quote --rtmr0..3"; exit 1; }
QHEX="$(od -An -v -tx1 "$TMP/att_quote" | tr -d ' \n')"
mkatt() { # mkatt EVENT_LOG_FILE OUT
    jq -n --arg q "$QHEX" --rawfile el "$1" --rawfile vm "$TMP/vm_config.json" \
        '{quote: $q, event_log: $el, vm_config: $vm}' >"$2"
}
mkatt "$TMP/event_log.json" "$TMP/att.json"
mkatt "$TMP/event_log_tampered.json" "$TMP/att_tampered.json"
mkatt "$TMP/event_log_rtmr1.json" "$TMP/att_rtmr1.json"

SIMOPTS=(--collateral "$TMP/sim_coll.json" --time "$NOW" --root-ca "$TMP/sim_root.der")
run verify attestation "$TMP/att.json" "${SIMOPTS[@]}" --json
expect "attestation: quote ok, RTMR0-3 replayed, app identity as computed independently" 0 "
    .ok == true and (has(\"error\") | not) and .quote.ok == true and .quote.simulated == true
    and ([.rtmrs[] | .ok] == [true, true, true, true])
    and ([.rtmrs[] | .replayed] == $(jq -c .rtmr "$TMP/expected.json"))
    and ([.rtmrs[] | .expected] == $(jq -c .rtmr "$TMP/expected.json"))
    and .app_info.app_id == \"$(X .app_id)\" and .app_info.compose_hash == \"$(X .compose_hash)\"
    and .app_info.instance_id == \"$(X .instance_id)\"
    and .app_info.os_image_hash == \"$(X .os_image_hash)\"
    and .app_info.key_provider == {name: \"kms\", id: \"0badc0de\"}
    and .app_info.mr_system == \"$(X .mr_system)\"
    and .app_info.mr_aggregated == \"$(X .mr_aggregated)\"
    and (.app_info.device_id | test(\"^[0-9a-f]{64}$\"))
    and .app_info.device_id != \"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"
    and ([.runtime_events[] | .name] == $(jq -c .names "$TMP/expected.json"))
    and (.runtime_events[] | select(.name == \"key-provider\") | .text)
        == \"{\\\"name\\\":\\\"kms\\\",\\\"id\\\":\\\"0badc0de\\\"}\"
    and (.runtime_events[] | select(.name == \"storage-fs\") | .text) == \"ext4\"
    and (.runtime_events[] | select(.name == \"app-event\") | (.payload == \"000162696e617279\"
         and (has(\"text\") | not)))"
run verify attestation "$TMP/att.json" "${SIMOPTS[@]}"
if [ "$rc" = 0 ] && grep -q "attestation verification: OK" <<<"$out" &&
    grep -q "RTMR3 replayed" <<<"$out" && grep -q "kms (id 0badc0de)" <<<"$out" &&
    grep -q '"ext4"' <<<"$out" && grep -q "$(X .app_id)" <<<"$out"; then
    pass "attestation: readable summary (verdict, RTMRs, app identity, runtime events)"
else
    fail "attestation readable summary (rc $rc): $out"
fi
run verify attestation "$TMP/att_tampered.json" "${SIMOPTS[@]}" --json
expect "attestation with a tampered runtime event fails at RTMR3" 1 '
    .ok == false and .quote.ok == true and ([.rtmrs[] | .ok] == [true, true, true, false])
    and (.error | test("RTMR3"))'
run verify attestation "$TMP/att_rtmr1.json" "${SIMOPTS[@]}" --json
expect "attestation with a tampered boot event fails at RTMR1" 1 '
    .ok == false and ([.rtmrs[] | .ok] == [true, false, true, true]) and (.error | test("RTMR1"))'
run verify attestation "$TMP/att.json" --collateral "$TMP/sim_coll.json" --time "$NOW" --json
expect "attestation without the mock root fails closed (log itself replays)" 1 '
    .ok == false and .quote.ok == false and .quote.simulated == false
    and ([.rtmrs[] | .ok] == [true, true, true, true]) and (.error | startswith("quote: "))'
jq -n --arg q "$QHEX" '{quote: $q, event_log: "[{\"imr\": 9}]"}' >"$TMP/att_badlog.json"
run verify attestation "$TMP/att_badlog.json" "${SIMOPTS[@]}" --json
expect "attestation with an unparsable event log fails" 1 '
    .ok == false and .quote.ok == true and .rtmrs == [] and (.error | test("event log"))'

# ---- the served simulator: PCCS routes, mock root over HTTP, a TD's own GetQuote --------------

STATE="$TMP/sim-state"
"$SIM" serve --seed "$SEED" --state-dir "$STATE" --pccs-listen 127.0.0.1:0 2>"$TMP/sim.log" &
SIM_PID=$!
ds_wait_for 10 "$SIM_PID" ds_sim_up "$STATE"
if [ ! -s "$STATE/pccs.addr" ]; then
    fail "dstack-tee-sim serve did not start: $(cat "$TMP/sim.log")"
else
    PCCS="http://$(cat "$STATE/pccs.addr")"
    run verify quote "$TMP/sim_quote" --pccs-url "$PCCS" --insecure-allow-simulated --json
    expect "--pccs-url + --insecure-allow-simulated: fetched collateral and mock root" 0 '
        .ok == true and .simulated == true and .status == "UpToDate"'
    if grep -q "WARNING" <<<"$err" && grep -q "MOCK root" <<<"$err" &&
        grep -qF "$PCCS/dstack-sim/v1/root-ca.der" <<<"$err"; then
        pass "--insecure-allow-simulated prints a loud warning naming the root's URL"
    else
        fail "--insecure-allow-simulated warning: $err"
    fi
    run verify quote "$TMP/sim_quote" --pccs-url "$PCCS/sgx/certification/v4/" \
        --insecure-allow-simulated --json
    expect "--pccs-url with a /sgx/certification/v4/ suffix" 0 '.ok == true'
    run verify quote "$TMP/sim_quote" --pccs-url "$PCCS" --json
    expect "--pccs-url without the opt-in fails closed" 1 '.ok == false and .simulated == false'

    # A TD of the served simulator: runtime events extended through its device socket, its
    # own event log and quote packed as a GetQuote response.
    if "$SIM" create-td --state-dir "$STATE" --name cli >/dev/null 2>"$TMP/td.err"; then
        SOCK="$STATE/tds/cli/tdx.sock"
        ok_ext=true
        "$SIM" extend --socket "$SOCK" --index 3 --event app-id \
            --payload "$(X .app_id)" >/dev/null 2>>"$TMP/td.err" || ok_ext=false
        "$SIM" extend --socket "$SOCK" --index 3 --event compose-hash \
            --payload "$(X .compose_hash)" >/dev/null 2>>"$TMP/td.err" || ok_ext=false
        "$SIM" extend --socket "$SOCK" --index 3 --event system-ready >/dev/null \
            2>>"$TMP/td.err" || ok_ext=false
        "$SIM" event-log --socket "$SOCK" >"$TMP/td_log.json" 2>>"$TMP/td.err" || ok_ext=false
        "$SIM" tdx-quote --socket "$SOCK" --report-data "$ZERO64" >"$TMP/td_quote" \
            2>>"$TMP/td.err" || ok_ext=false
        if $ok_ext; then
            jq -n --arg q "$(od -An -v -tx1 "$TMP/td_quote" | tr -d ' \n')" \
                --rawfile el "$TMP/td_log.json" '{quote: $q, event_log: $el}' >"$TMP/td_att.json"
            run verify attestation "$TMP/td_att.json" --pccs-url "$PCCS" \
                --insecure-allow-simulated --json
            expect "served TD: GetQuote JSON verifies, RTMR3 replays" 0 "
                .ok == true and .rtmrs[3].ok == true and .app_info.app_id == \"$(X .app_id)\"
                and ([.runtime_events[] | .name] == [\"app-id\", \"compose-hash\", \"system-ready\"])"
            jq '.event_log |= (fromjson | map(if .event == "app-id"
                    then .event_payload = "00" + .event_payload[2:] else . end) | tojson)' \
                "$TMP/td_att.json" >"$TMP/td_att_bad.json"
            run verify attestation "$TMP/td_att_bad.json" --pccs-url "$PCCS" \
                --insecure-allow-simulated --json
            expect "served TD: tampered app-id payload fails at RTMR3" 1 '
                .ok == false and .quote.ok == true and .rtmrs[3].ok == false'
        else
            fail "dstack-tee-sim TD commands: $(cat "$TMP/td.err")"
        fi
    else
        fail "dstack-tee-sim create-td: $(cat "$TMP/td.err")"
    fi
    kill "$SIM_PID" 2>/dev/null
    wait "$SIM_PID" 2>/dev/null
    SIM_PID=""
fi

# Nothing listens on port 9 of localhost: fetch failures are verification failures (exit 1).
run verify quote "$TMP/sim_quote" --pccs-url http://127.0.0.1:9 --json
expect "unreachable PCCS: failed_step collateral" 1 '.ok == false and .failed_step == "collateral"'
run verify quote "$TMP/sim_quote" --pccs-url http://127.0.0.1:9 --insecure-allow-simulated --json
expect "unreachable mock root: failed_step root_ca" 1 '.ok == false and .failed_step == "root_ca"'

ds_finish "all checks passed"
