#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Bootstrap and onboarding between real dstack-kms processes (spec kms-ratls.md §2.4, §5.4):
# Onboard.Bootstrap on the plain-HTTP onboard listener (domain checks, bootstrap info, refusal
# to bootstrap twice), Onboard.Onboard of a second KMS from a running one over mutual RA-TLS
# where the source authorizes the new KMS (bootAuth/kms of the caller's attestation: "Boot
# denied: <reason>") and the new KMS authorizes the source, then identical roots on both
# (same k256 key, root CA key, env public keys). Client certificates that do not chain to the
# temp CA are refused by the TLS layer.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }

ob() { # port method json
    curl -s -o "$WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data-binary "$3" "http://127.0.0.1:$1/prpc/$2" >"$WORK/status" || true
    cat "$WORK/body"
}

# --- D: manual bootstrap through the onboard listener
start_kms d --dev --state-dir "$WORK/d" --listen 127.0.0.1:0 --onboard-listen 127.0.0.1:0 ||
    fail "D did not start"
[ -n "${OPORT_d:-}" ] || fail "D has no onboard listener"
[ "$(curl -s "http://127.0.0.1:$OPORT_d/health")" = OK ] || fail "onboard /health"
curl -s "http://127.0.0.1:$OPORT_d/" | hasre 'onboarding' || fail "onboard page"
out=$(ob "$OPORT_d" Bootstrap '{"domain":"-bad.example"}')
echo "$out" | hasre 'Invalid domain name' || fail "bad domain accepted: $out"
out=$(ob "$OPORT_d" Onboard.Bootstrap '{"domain":"kms-d.example"}')
[ "$(cat "$WORK/status")" = 200 ] || fail "Bootstrap: $out"
K256_D=$(jget "$out" k256_pubkey)
[ ${#K256_D} = 66 ] && [ -n "$(jget "$out" attestation)" ] || fail "bootstrap response: $out"
[ "$(jget "$out" ca_pubkey | wc -c)" = 183 ] || fail "ca_pubkey: $out"
out=$(ob "$OPORT_d" Bootstrap '{"domain":"kms-d.example"}')
echo "$out" | hasre 'Already bootstrapped' || fail "second bootstrap: $out"
out=$(ob "$OPORT_d" Onboard '{"source_url":"https://127.0.0.1:1","domain":"x.example"}')
echo "$out" | hasre 'Already onboarded' || fail "onboard after bootstrap: $out"
ob "$OPORT_d" Finish '{}' >/dev/null
for _ in $(seq 100); do grep -qs 'KMS listening on' "$WORK/d.log" && break; sleep 0.1; done
PORT_d=$(grep -o 'KMS listening on [^ ]*' "$WORK/d.log" | sed 's/.*://')
[ -n "$PORT_d" ] || fail "D did not leave onboarding"
META=$(rpc "$PORT_d" GetMeta)
[ "$(jget "$META" k256_pubkey)" = "$K256_D" ] || fail "GetMeta after bootstrap: $META"
python3 -c 'import json,sys; m=json.loads(sys.argv[1]); assert m["bootstrap_info"]["k256_pubkey"]==sys.argv[2]' \
    "$META" "$K256_D" || fail "GetMeta.bootstrap_info"
openssl x509 -in "$WORK/d/rpc.crt" -noout -subject | hasre 'kms-d.example' || fail "rpc.crt CN"
ok "Onboard.Bootstrap: domain check, bootstrap info, no second bootstrap, Finish starts the KMS"

# --- A: the source (bootstrapped, then served under a policy)
start_kms a0 --dev --state-dir "$WORK/a" --listen 127.0.0.1:0 || fail "A bootstrap"
stop_kms a0
OS=$(jself a0 osImageHash)
MR_A=$(jself a0 mrAggregated)
printf '{"osImages":["%s"],"kms":{"mrAggregated":["%s"]}}' "$OS" "$MR_A" >"$WORK/pa.json"
start_kms a --dev --state-dir "$WORK/a" --listen 127.0.0.1:0 --policy "$WORK/pa.json" ||
    fail "A did not start"
SRC="https://127.0.0.1:$PORT_a"

# --- B: a new KMS in another (simulated) instance
DSTACK_KMS_DEV_INSTANCE=b start_kms b --dev --state-dir "$WORK/b" --listen 127.0.0.1:0 \
    --onboard-listen 127.0.0.1:0 || fail "B did not start"
MR_B=$(jself b mrAggregated)
[ "$MR_B" != "$MR_A" ] || fail "A and B have the same mrAggregated"
INFO=$(ob "$OPORT_b" GetAttestationInfo '{}')
[ "$(jget "$INFO" mr_aggregated)" = "$MR_B" ] || fail "GetAttestationInfo: $INFO"
[ "$(jget "$INFO" tee_variant)" = dstack-tdx ] || fail "tee_variant: $INFO"
ok "GetAttestationInfo reports B's mrAggregated for allowlisting"

out=$(ob "$OPORT_b" Onboard "{\"source_url\":\"ftp://x\",\"domain\":\"kms-b.example\"}")
echo "$out" | hasre 'Invalid source URL' || fail "bad source URL: $out"
out=$(ob "$OPORT_b" Onboard "{\"source_url\":\"$SRC\",\"domain\":\"kms-b.example\"}")
[ "$(cat "$WORK/status")" = 400 ] || fail "onboarded although A's policy lacks B: $out"
echo "$out" | has 'Boot denied: aggregated MR not allowed' || fail "denial reason: $out"
grep -q 'boot denied for KMS' "$WORK/a.log" || fail "A did not log the denial"
[ -e "$WORK/b/root-ca.key" ] && fail "B stored keys although denied"
ok "source KMS denies an unlisted KMS: Boot denied: aggregated MR not allowed"

# --- C: a new KMS whose own policy does not allow the source
DSTACK_KMS_DEV_INSTANCE=c start_kms c --dev --state-dir "$WORK/c" --listen 127.0.0.1:0 \
    --onboard-listen 127.0.0.1:0 --policy "$WORK/nonexistent.json" || fail "C did not start"
out=$(ob "$OPORT_c" Onboard "{\"source_url\":\"$SRC\",\"domain\":\"kms-c.example\"}")
echo "$out" | has 'the source KMS is not allowed: Boot denied: OS image is not allowed' ||
    fail "C accepted the source: $out"
ok "new KMS checks the source with its own backend"

# --- allow B on A, onboard, compare
printf '{"osImages":["%s"],"kms":{"mrAggregated":["%s","%s"]}}' "$OS" "$MR_A" "$MR_B" >"$WORK/pa.tmp"
mv "$WORK/pa.tmp" "$WORK/pa.json"
out=$(ob "$OPORT_b" Onboard "{\"source_url\":\"$SRC/prpc\",\"domain\":\"kms-b.example\"}")
[ "$(cat "$WORK/status")" = 200 ] || fail "onboarding: $out"
K256_A=$(jget "$(rpc "$PORT_a" GetMeta)" k256_pubkey)
[ "$(jget "$out" k256_pubkey)" = "$K256_A" ] || fail "B's k256 differs from A's"
grep -q 'GetKmsKey: root keys released' "$WORK/a.log" || fail "A did not log the release"
curl -s "http://127.0.0.1:$OPORT_b/finish" >/dev/null
for _ in $(seq 100); do grep -qs 'KMS listening on' "$WORK/b.log" && break; sleep 0.1; done
PORT_b=$(grep -o 'KMS listening on [^ ]*' "$WORK/b.log" | sed 's/.*://')
[ -n "$PORT_b" ] || fail "B did not start serving"
cmp -s "$WORK/a/root-ca.key" "$WORK/b/root-ca.key" || fail "root CA keys differ"
cmp -s "$WORK/a/root-k256.key" "$WORK/b/root-k256.key" || fail "root k256 keys differ"
for f in root-ca.key root-k256.key tmp-ca.key; do
    [ "$(stat -c %a "$WORK/b/$f")" = 600 ] || fail "B $f mode"
done
APP='{"app_id":"4444444444444444444444444444444444444444"}'
PA=$(jget "$(rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP")" public_key)
PB=$(jget "$(rpc "$PORT_b" GetAppEnvEncryptPubKey "$APP")" public_key)
[ -n "$PA" ] && [ "$PA" = "$PB" ] || fail "env public keys differ: $PA vs $PB"
[ "$(jget "$(rpc "$PORT_b" GetMeta)" k256_pubkey)" = "$K256_A" ] || fail "B GetMeta"
openssl x509 -in "$WORK/b/rpc.crt" -noout -subject | hasre 'kms-b.example' || fail "B rpc.crt"
ok "onboarded: identical roots (files, k256_pubkey) and app env keys on A and B"

# --- a client certificate not issued by the temp CA is refused by the TLS layer
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=rogue \
    -keyout "$WORK/rogue.key" -out "$WORK/rogue.crt" 2>/dev/null
if curl -sk --cert "$WORK/rogue.crt" --key "$WORK/rogue.key" -X POST -d '{}' \
    "https://127.0.0.1:$PORT_a/prpc/GetKmsKey?json" >/dev/null 2>&1; then
    fail "a rogue client certificate was accepted"
fi
[ "$(curl -sk "https://127.0.0.1:$PORT_a/health")" = OK ] || fail "A died"
ok "client certificate not chaining to tmp-ca: handshake refused"
echo "all dstack-kms onboarding tests passed"
