#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# GetAppKey and SignCert end to end with real processes: a dstack-tee-sim with two TDs (the
# KMS's and an app's, the app with dstack-util's boot-time events), dstack-kms --dev on its TD
# trusting the simulator's root fetched from its PCCS, and an independent Python client
# (kms_client.py) that makes the RA-TLS client certificate and the CSR itself. Checks: the keys
# equal the spec's formulas recomputed from the root key files, k256_signature recovers to
# GetMeta.k256_pubkey, the SignCert chain verifies with the derived App CA key, invalid quotes
# and missing attestations are refused, the built-in policy denies apps with auth-simple's
# reasons, and dstack-bench kms measures releases per second.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"
SIM="$BIN/dstack-tee-sim"
PY=/usr/bin/python3
CLIENT="$(dirname "$0")/kms_client.py"
[ -x "$SIM" ] || { echo "FAIL: $SIM not built"; exit 1; }
command -v node >/dev/null || { echo "SKIP: node not installed"; exit 77; }
"$PY" -c 'import cryptography, Cryptodome' 2>/dev/null ||
    { echo "SKIP: python3-cryptography / python3-pycryptodome missing"; exit 77; }

SEED=6b6d732d746573742d73696d2d736565642d3030303030303030303030303031
"$SIM" serve --seed $SEED --state-dir "$WORK/sim" --pccs-listen 127.0.0.1:0 >"$WORK/sim.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do [ -S "$WORK/sim/control.sock" ] && break; sleep 0.1; done
[ -S "$WORK/sim/control.sock" ] || fail "simulator did not start"
PCCS="http://$(cat "$WORK/sim/pccs.addr")"
KS=$("$SIM" create-td --state-dir "$WORK/sim" --name kms)
AS=$("$SIM" create-td --state-dir "$WORK/sim" --name app)
APP_ID=$(printf 'ab%.0s' $(seq 20))
INST=$(printf 'ef%.0s' $(seq 20))
COMPOSE=$(printf 'cd%.0s' $(seq 32))
ext() { "$SIM" extend --socket "$AS" --index 3 --event "$1" ${2:+--payload "$2"} >/dev/null; }
ext system-preparing
ext app-id "$APP_ID"
ext compose-hash "$COMPOSE"
ext instance-id "$INST"
ext boot-mr-done

S="$WORK/state"
start_kms a --dev --tee "sim:$KS" --pccs-url "$PCCS" --state-dir "$S" --listen 127.0.0.1:0 ||
    fail "KMS did not start"
grep -q 'SIMULATED quotes are ACCEPTED' "$WORK/a.log" || fail "no simulated-quotes warning"
OS=$(jself a osImageHash)
MR=$(jself a mrAggregated)
VMC="{\"os_image_hash\":\"$OS\",\"cpu_count\":1,\"memory_size\":1073741824}"
URL="https://127.0.0.1:$PORT_a"
K256=$(jget "$(rpc "$PORT_a" GetMeta)" k256_pubkey)

# --- GetAppKey
R=$("$PY" "$CLIENT" getappkey "$URL" "$SIM" "$AS" "$VMC" "$S" "$APP_ID" "$INST") ||
    fail "GetAppKey: $R"
for c in disk_ok env_ok k256_ok; do
    [ "$(jget "$R" $c)" = True ] || fail "GetAppKey $c: $R"
done
[ "$(jget "$R" os_image_hash)" = "$OS" ] || fail "os_image_hash: $R"
[ "$(jget "$R" gateway_app_id)" = any ] && [ "$(jget "$R" tproxy_app_id)" = any ] || fail "gateway: $R"
jget "$R" ca_cert | hasre 'BEGIN CERTIFICATE' || fail "ca_cert: $R"
SIGNER=$(node -e '
const {secp256k1}=require(process.argv[1]+"/node_modules/@noble/curves/secp256k1");
const {keccak_256}=require(process.argv[1]+"/node_modules/@noble/hashes/sha3");
const h=(s)=>Uint8Array.from(Buffer.from(s,"hex"));
const [key,sig,app]=process.argv.slice(2);
const pub=secp256k1.getPublicKey(h(key),true);
const d=keccak_256(Buffer.concat([Buffer.from("dstack-kms-issued:"),h(app),pub]));
const s=h(sig);
const S=secp256k1.Signature.fromCompact(s.slice(0,64)).addRecoveryBit(s[64]);
console.log(Buffer.from(S.recoverPublicKey(d).toRawBytes(true)).toString("hex"));
' "$SRC" "$(jget "$R" k256_key)" "$(jget "$R" k256_signature)" "$APP_ID")
[ "$SIGNER" = "$K256" ] || fail "k256_signature recovers to $SIGNER, want $K256"
E=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "{\"app_id\":\"$APP_ID\"}")
EPUB=$("$PY" -c 'import sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives import serialization as s
k=X25519PrivateKey.from_private_bytes(bytes.fromhex(sys.argv[1]))
print(k.public_key().public_bytes(s.Encoding.Raw,s.PublicFormat.Raw).hex())' "$(jget "$R" env_crypt_key)")
[ "$EPUB" = "$(jget "$E" public_key)" ] || fail "env_crypt_key does not match GetAppEnvEncryptPubKey"
ok "GetAppKey: keys equal the spec formulas from the root files; k256_signature recovers to GetMeta; env key pair consistent"

# --- refusals
out=$("$PY" "$CLIENT" getappkey-noatt "$URL" "$SIM" "$AS" "$VMC") && fail "no attestation accepted"
echo "$out" | hasre 'No attestation provided' || fail "no attestation: $out"
out=$("$PY" "$CLIENT" getappkey-badquote "$URL" "$SIM" "$AS" "$VMC") && fail "bad quote accepted"
echo "$out" | hasre 'invalid quote' || fail "bad quote: $out"
ok "GetAppKey refuses a certificate without attestation and one with a corrupted quote"

# --- SignCert
R=$("$PY" "$CLIENT" signcert "$URL" "$SIM" "$AS" "$VMC" "$S") || fail "SignCert: $R"
for c in leaf_key_is_csr_key chain_verifies leaf_has_attestation app_ca_key_derived; do
    [ "$(jget "$R" $c)" = True ] || fail "SignCert $c: $R"
done
[ "$(jget "$R" leaf_app_id)" = "$APP_ID" ] || fail "leaf app id: $R"
jget "$R" app_ca_subject | hasre 'CN=Dstack App CA' || fail "app CA subject: $R"
ok "SignCert: [leaf, App CA, root] verifies, leaf key = CSR key, app-id ext, App CA key = derive_p256(root, app_id||app-ca)"

# --- dstack-bench kms (numbers for the report)
if [ -x "$BIN/dstack-bench" ]; then
    "$BIN/dstack-bench" kms --kms-url "https://localhost:$PORT_a" --tee "sim:$AS" \
        --vm-config <(echo "$VMC") --seconds 1 --concurrency 2 --modes keepalive,full \
        >"$WORK/bench.out" 2>&1 || fail "bench: $(cat "$WORK/bench.out")"
    grep -q '"errors":0' "$WORK/bench.out" || fail "bench errors: $(cat "$WORK/bench.out")"
    cat "$WORK/bench.out"
    ok "dstack-bench kms: releases without errors"
fi

# --- without insecure_allow_simulated only Intel's root is trusted
stop_kms a
start_kms n --tee "sim:$KS" --pccs-url "$PCCS" --state-dir "$WORK/n" --listen 127.0.0.1:0 \
    --domain localhost --auth dev --no-self-authorization || fail "non-dev KMS did not start"
grep -q 'SIMULATED quotes are ACCEPTED' "$WORK/n.log" && fail "non-dev KMS accepts simulated quotes"
grep -q "trusting only Intel's SGX root CA" "$WORK/n.log" || fail "no Intel-only notice"
out=$("$PY" "$CLIENT" getappkey "https://127.0.0.1:$PORT_n" "$SIM" "$AS" "$VMC") &&
    fail "simulated quote accepted without insecure_allow_simulated"
echo "$out" | has 'invalid quote' || fail "simulated quote: $out"
stop_kms n
ok "without insecure_allow_simulated a simulated quote is an invalid quote"

# --- kms.toml: [core.attestation] insecure_allow_simulated with the root as a file
cat >"$WORK/kms.toml" <<EOF
[rpc]
address = "127.0.0.1"
port = 0

[core]
cert_dir = "$WORK/t"
tee = "sim:$KS"
enforce_self_authorization = false

[core.attestation]
insecure_allow_simulated = true
simulator_root_ca = "$WORK/sim/root-ca.der"

[core.attestation.urls]
pccs = "$PCCS"

[core.auth_api]
type = "dev"

[core.onboard]
auto_bootstrap_domain = "localhost"
EOF
start_kms t --config "$WORK/kms.toml" || fail "KMS from kms.toml did not start"
grep -q 'insecure_allow_simulated = true: SIMULATED quotes are ACCEPTED' "$WORK/t.log" ||
    fail "no insecure_allow_simulated warning"
R=$("$PY" "$CLIENT" getappkey "https://127.0.0.1:$PORT_t" "$SIM" "$AS" "$VMC" "$WORK/t" "$APP_ID" "$INST") ||
    fail "GetAppKey with the file root: $R"
[ "$(jget "$R" disk_ok)" = True ] || fail "keys (kms.toml KMS): $R"
stop_kms t
ok "kms.toml [core.attestation] insecure_allow_simulated + simulator_root_ca: simulated quotes accepted"

# --- app policy
POL="$WORK/policy.json"
set_policy() { printf '%s' "$1" >"$POL.tmp" && mv "$POL.tmp" "$POL"; }
BASE="\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\"]}"
set_policy "{$BASE}"
start_kms b --dev --tee "sim:$KS" --pccs-url "$PCCS" --state-dir "$S" --listen 127.0.0.1:0 \
    --policy "$POL" || fail "KMS with policy did not start"
# a restarted KMS emitted its dev events again into the same TD: take the current MR
MR2=$(jself b mrAggregated)
BASE="\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\",\"$MR2\"]}"
set_policy "{$BASE}"
URL="https://127.0.0.1:$PORT_b"
app_denied() { # policy reason
    set_policy "$1"
    local out
    out=$("$PY" "$CLIENT" getappkey "$URL" "$SIM" "$AS" "$VMC") && fail "allowed: $1"
    echo "$out" | has "Boot denied: $2" || fail "want 'Boot denied: $2', got $out"
}
app_denied "{$BASE}" "app not registered"
app_denied "{$BASE,\"apps\":{\"0x$APP_ID\":{\"composeHashes\":[\"00\"]}}}" "compose hash not allowed"
app_denied "{$BASE,\"apps\":{\"$APP_ID\":{\"composeHashes\":[\"$COMPOSE\"],\"devices\":[\"00\"]}}}" \
    "app is not allowed to boot on this device"
BADVMC="{\"os_image_hash\":\"$(printf '99%.0s' $(seq 32))\"}"
set_policy "{$BASE,\"apps\":{\"$APP_ID\":{\"composeHashes\":[\"$COMPOSE\"]}}}"
out=$("$PY" "$CLIENT" getappkey "$URL" "$SIM" "$AS" "$BADVMC") && fail "foreign OS image allowed"
echo "$out" | has "Boot denied: OS image is not allowed" || fail "os image: $out"
R=$("$PY" "$CLIENT" getappkey "$URL" "$SIM" "$AS" "$VMC" "$S" "$APP_ID" "$INST") ||
    fail "registered app refused: $R"
[ "$(jget "$R" disk_ok)" = True ] || fail "keys after policy: $R"
out=$("$PY" "$CLIENT" signcert "$URL" "$SIM" "$AS" "$BADVMC") && fail "SignCert foreign image"
echo "$out" | has "Boot denied: OS image is not allowed" || fail "SignCert policy: $out"
grep -q 'boot denied for app abab' "$WORK/b.log" || fail "denials not logged"
ok "policy: app not registered / compose hash / device / OS image denied with reasons; registered app served"
echo "all dstack-kms app key tests passed"
