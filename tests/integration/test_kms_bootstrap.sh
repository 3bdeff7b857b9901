#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# dstack-kms --dev on a fresh state dir: bootstrap writes every key file 0600 and
# bootstrap-info.json whose attestation's report_data is keccak256("dstack-kms-genereted-keys-v1:"
# || hex(ca SPKI) ";" hex(k256) ";") || 0^32; a restart from the same dir serves the same
# GetMeta k256_pubkey / ca_cert; GetAppEnvEncryptPubKey signatures (legacy and v1) recover with
# @noble/curves to GetMeta.k256_pubkey; the key process is in another network namespace with a
# seccomp filter; malformed requests get errors and the daemon keeps serving; the Admin
# listener wants its token; --check validates kms.toml strictly.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"
command -v node >/dev/null || { echo "SKIP: node not installed"; exit 77; }

S="$WORK/state"
start_kms a --dev --state-dir "$S" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
    --admin-token s3cret --metrics || fail "KMS did not start"
grep -q 'DEVELOPMENT MODE' "$WORK/a.log" || fail "no dev-mode warning"
grep -q 'dev implies insecure_allow_simulated' "$WORK/a.log" || fail "no simulated warning"

# --- files and modes
for f in root-ca.key root-k256.key tmp-ca.key rpc.key root-ca.crt tmp-ca.crt bootstrap-info.json; do
    [ -f "$S/$f" ] || fail "missing $f"
done
for f in root-ca.key root-k256.key tmp-ca.key rpc.key; do
    m=$(stat -c %a "$S/$f")
    [ "$m" = 600 ] || fail "$f has mode $m, want 600"
done
[ "$(stat -c %s "$S/root-k256.key")" = 32 ] || fail "root-k256.key is not 32 raw bytes"
grep -q 'BEGIN PRIVATE KEY' "$S/root-ca.key" || fail "root-ca.key not PKCS#8 PEM"
openssl x509 -in "$S/root-ca.crt" -noout -subject | hasre 'Dstack KMS CA' || fail "root subject"
openssl x509 -in "$S/tmp-ca.crt" -noout -subject | hasre 'Dstack Client Temp CA' || fail "tmp subject"
ok "bootstrap files (0600 keys, PEM/raw formats, CA subjects)"

# --- GetMeta and bootstrap info
META=$(rpc "$PORT_a" GetMeta)
K256=$(jget "$META" k256_pubkey)
[ ${#K256} = 66 ] || fail "k256_pubkey not 33 bytes: $META"
[ "$(jget "$META" is_dev)" = True ] || fail "is_dev"
/usr/bin/python3 - "$S/bootstrap-info.json" "$K256" <<'EOF' || fail "bootstrap info"
import json, sys
from Cryptodome.Hash import keccak
info = json.load(open(sys.argv[1]))
assert info["k256_pubkey"] == sys.argv[2], "k256 differs from GetMeta"
ca, k = info["ca_pubkey"], info["k256_pubkey"]
assert len(bytes.fromhex(ca)) == 91, "ca_pubkey is not a P-256 SPKI"
att = bytes.fromhex(info["attestation"])
assert att[0] == 0 and att[1] == 0, "not a V0 TDX attestation"
# SCALE compact length of the quote
b = att[2]
if b & 3 == 0: n, off = b >> 2, 3
elif b & 3 == 1: n, off = int.from_bytes(att[2:4], "little") >> 2, 4
else: n, off = int.from_bytes(att[2:6], "little") >> 2, 6
quote = att[off:off + n]
rd = quote[48 + 520:48 + 584]
h = keccak.new(digest_bits=256)
h.update(b"dstack-kms-genereted-keys-v1:" + ca.encode() + b";" + k.encode() + b";")
assert rd == h.digest() + b"\0" * 32, "report_data is not the key hash"
EOF
ok "bootstrap-info.json: keys match GetMeta, attestation binds the key hashes"

# --- env pubkey signatures recover to the KMS k256 key
APP=1111111111111111111111111111111111111111
R=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "{\"app_id\":\"0x$APP\"}")
PUB=$(jget "$R" public_key)
[ ${#PUB} = 64 ] || fail "env public key: $R"
[ "$(recover_env "$(jget "$R" signature)" $APP "$PUB")" = "$K256" ] || fail "legacy signature"
[ "$(recover_env "$(jget "$R" signature_v1)" $APP "$PUB" "$(jget "$R" timestamp)")" = "$K256" ] ||
    fail "signature_v1"
NOW=$(date +%s)
TS=$(jget "$R" timestamp)
[ $((NOW - TS)) -lt 60 ] || fail "timestamp $TS not current"
ok "GetAppEnvEncryptPubKey: both signatures recover to GetMeta.k256_pubkey"

# --- key process isolation (root only: namespaces)
KP=$(grep -o 'key process [0-9]*' "$WORK/a.log" | awk '{print $3}')
[ -d "/proc/$KP" ] || fail "key process $KP not running"
grep -q 'Seccomp:[[:space:]]*2' "/proc/$KP/status" || fail "key process without seccomp filter"
if [ "$(id -u)" = 0 ]; then
    [ "$(readlink "/proc/$KP/ns/net")" != "$(readlink "/proc/$PID_a/ns/net")" ] ||
        fail "key process shares the network namespace"
    # nothing but loopback (down) in its namespace
    IFACES=$(awk 'NR>2 {print $1}' "/proc/$KP/net/dev" | tr -d ':' | tr '\n' ' ')
    [ "$IFACES" = "lo " ] || fail "key process sees interfaces: $IFACES"
    ok "key process $KP: own network namespace (only lo), seccomp filter"
else
    ok "key process $KP: seccomp filter (not root: namespace check skipped)"
fi

# --- malformed requests
check_err() { # port method body expected
    local got
    got=$(rpc "$1" "$2" "$3")
    [ "$(cat "$WORK/status")" = 400 ] || fail "$2 $3: status $(cat "$WORK/status")"
    echo "$got" | has "$4" || fail "$2 $3: got $got, want $4"
}
check_err "$PORT_a" GetAppEnvEncryptPubKey '{"app_id":"11"}' 'Invalid app id length: 1'
check_err "$PORT_a" GetAppEnvEncryptPubKey '{"app_id":"zz"}' 'app_id'
check_err "$PORT_a" GetAppEnvEncryptPubKey '{"app_id":5}' 'app_id'
check_err "$PORT_a" GetAppEnvEncryptPubKey '[1,2' 'error'
check_err "$PORT_a" GetAppKey '{}' 'No attestation provided'
check_err "$PORT_a" GetAppKey '{"api_version":"x"}' 'api_version'
check_err "$PORT_a" GetKmsKey '{}' 'No attestation provided'
check_err "$PORT_a" SignCert '{"api_version":3}' 'Unsupported API version: 3'
check_err "$PORT_a" SignCert '{"api_version":2,"csr":"00","signature":"00"}' 'invalid CSR'
check_err "$PORT_a" NoSuchMethod '{}' 'Service not found'
head -c 300000 /dev/urandom | base64 -w0 | sed 's/^/{"csr":"/; s/$/"}/' >"$WORK/big.json"
check_err "$PORT_a" SignCert "@$WORK/big.json" 'error'
[ "$(curl -sk "https://127.0.0.1:$PORT_a/health")" = OK ] || fail "health after garbage"
rpc "$PORT_a" KMS.GetMeta >/dev/null
[ "$(cat "$WORK/status")" = 200 ] || fail "KMS.GetMeta prefix"
ok "malformed requests answered with specific errors; daemon alive"

# --- /metrics: GetAppKey, GetKmsKey, SignCert counted; failures = status >= 400
M=$(curl -sk "https://127.0.0.1:$PORT_a/metrics")
echo "$M" | hasre '^dstack_kms_attestation_requests_total 6$' || fail "requests counter: $M"
echo "$M" | hasre '^dstack_kms_attestation_failures_total 6$' || fail "failures counter: $M"
ok "/metrics counts the attested methods and their failures"

# --- Admin
APORT=$(grep -o 'Admin listening on [^ ]*' "$WORK/a.log" | sed 's/.*://')
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "http://127.0.0.1:$APORT/prpc/ClearImageCache?json")
[ "$code" = 401 ] || fail "admin without token: $code"
out=$(curl -s -H 'X-Admin-Token: s3cret' -X POST -d '{"image_hash":"all"}' "http://127.0.0.1:$APORT/prpc/Admin.ClearImageCache?json")
echo "$out" | hasre 'image cache is not implemented' || fail "ClearImageCache: $out"
out=$(curl -s -u 's3cret:' -X POST -d '{"image_hash":"../x"}' "http://127.0.0.1:$APORT/prpc/ClearImageCache?json")
echo "$out" | hasre 'Invalid cache key' || fail "ClearImageCache bad key: $out"
ok "Admin: 401 without token, token/basic accepted, ClearImageCache answers clearly"

# --- restart from the same state dir: same roots
CA1=$(jget "$META" ca_cert)
stop_kms a
start_kms b --dev --state-dir "$S" --listen 127.0.0.1:0 || fail "restart"
grep -q 'bootstrapped new root keys' "$WORK/b.log" && fail "restart bootstrapped again"
META2=$(rpc "$PORT_b" GetMeta)
[ "$(jget "$META2" k256_pubkey)" = "$K256" ] || fail "k256_pubkey changed after restart"
[ "$(jget "$META2" ca_cert)" = "$CA1" ] || fail "ca_cert changed after restart"
R2=$(rpc "$PORT_b" GetAppEnvEncryptPubKey "{\"app_id\":\"$APP\"}")
[ "$(jget "$R2" public_key)" = "$PUB" ] || fail "env public key changed after restart"
ok "restart: same k256_pubkey, ca_cert and env public key"

# --- --check
cat >"$WORK/kms.toml" <<EOF
[rpc]
address = "127.0.0.1"
port = 0
[core]
cert_dir = "$WORK/other"
[core.auth_api]
type = "dev"
EOF
out=$("$KMS" --config "$WORK/kms.toml" --check 2>&1) || fail "--check rejected a valid file: $out"
echo "$out" | hasre 'configuration OK' || fail "--check: $out"
echo 'bogus_key = 1' >>"$WORK/kms.toml"
if out=$("$KMS" --config "$WORK/kms.toml" --check 2>&1); then fail "--check accepted an unknown key"; fi
echo "$out" | hasre 'bogus_key' || fail "--check error does not name the key: $out"
if out=$("$KMS" --auth webhook --check 2>&1); then fail "webhook without URL accepted"; fi
echo "$out" | hasre 'needs a URL' || fail "webhook check: $out"
ok "--check: valid kms.toml OK, unknown key and missing webhook URL rejected"

# --- upstream's [default] section (Rocket settings)
cat >"$WORK/up.toml" <<EOF
[default]
workers = 8
max_blocking = 64
ident = "DStack KMS"
temp_dir = "/tmp"
keep_alive = 1
log_level = "debug"
limits = { json = "1MiB" }

[rpc]
address = "127.0.0.1"
port = 0

[core]
cert_dir = "$WORK/up"

[core.auth_api]
type = "dev"

[core.onboard]
auto_bootstrap_domain = "localhost"
EOF
out=$("$KMS" --config "$WORK/up.toml" --check 2>&1) || fail "--check rejected upstream's [default]: $out"
echo "$out" | has 'workers, max_blocking, ident, temp_dir and limits are accepted and ignored' ||
    fail "no info line for the ignored [default] keys: $out"
sed 's/^workers = 8/wrokers = 8/' "$WORK/up.toml" >"$WORK/bad.toml"
if out=$("$KMS" --config "$WORK/bad.toml" --check 2>&1); then fail "default.wrokers accepted"; fi
echo "$out" | has 'default.wrokers' || fail "unknown [default] key not named: $out"
sed 's/^log_level = "debug"/log_level = "loud"/' "$WORK/up.toml" >"$WORK/bad.toml"
if out=$("$KMS" --config "$WORK/bad.toml" --check 2>&1); then fail "log_level loud accepted"; fi
echo "$out" | has 'default.log_level' || fail "bad log_level not named: $out"
sed 's/^workers = 8/workers = 0/' "$WORK/up.toml" >"$WORK/bad.toml"
if out=$("$KMS" --config "$WORK/bad.toml" --check 2>&1); then fail "workers = 0 accepted"; fi
echo "$out" | has 'default.workers' || fail "workers = 0 not named: $out"
start_kms up --dev --config "$WORK/up.toml" || fail "KMS with [default] did not start"
grep -q 'dstack-kms debug: debug log on' "$WORK/up.log" || fail "log_level = debug: no debug lines"
# keep_alive = 1: an idle TLS connection is closed after about a second (default 10 s)
secs=$(python3 -c '
import socket, ssl, sys, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", int(sys.argv[1]))))
s.settimeout(20)
t = time.monotonic()
try:
    s.recv(1)
except (ssl.SSLError, OSError):
    pass
print(int(time.monotonic() - t))
' "$PORT_up")
[ "$secs" -le 4 ] || fail "keep_alive = 1 not honoured: idle connection closed after ${secs}s"
stop_kms up
ok "upstream [default] accepted: keep_alive and log_level honoured, others ignored (info line); unknown/invalid [default] keys rejected"
echo "all dstack-kms bootstrap tests passed"
