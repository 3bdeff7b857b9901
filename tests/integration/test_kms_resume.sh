#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# TLS session resumption on the KMS main listener (RA-TLS, optional client certificates):
# openssl s_client saves a session (-sess_out) and resumes it (-sess_in) over TLS 1.3 tickets
# and TLS 1.2 session ids, without and with an RA-TLS client certificate. A resumed session
# still carries the client certificate, and every request on it still verifies the
# attestation: GetAppKey over a resumed session answers keys for a valid attestation and
# "invalid quote" for a corrupted one, "No attestation provided" for a session without one.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"
SIM="$BIN/dstack-tee-sim"
PY=/usr/bin/python3
CLIENT="$(dirname "$0")/kms_client.py"
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }
[ -x "$SIM" ] || { echo "FAIL: $SIM not built"; exit 1; }
"$PY" -c 'import cryptography, Cryptodome' 2>/dev/null ||
    { echo "SKIP: python3-cryptography / python3-pycryptodome missing"; exit 77; }

SEED=6b6d732d746573742d73696d2d736565642d3030303030303030303030303032
"$SIM" serve --seed $SEED --state-dir "$WORK/sim" --pccs-listen 127.0.0.1:0 >"$WORK/sim.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do [ -S "$WORK/sim/control.sock" ] && break; sleep 0.1; done
[ -S "$WORK/sim/control.sock" ] || fail "simulator did not start"
PCCS="http://$(cat "$WORK/sim/pccs.addr")"
KS=$("$SIM" create-td --state-dir "$WORK/sim" --name kms)
AS=$("$SIM" create-td --state-dir "$WORK/sim" --name app)
ext() { "$SIM" extend --socket "$AS" --index 3 --event "$1" ${2:+--payload "$2"} >/dev/null; }
ext system-preparing
ext app-id "$(printf 'ab%.0s' $(seq 20))"
ext compose-hash "$(printf 'cd%.0s' $(seq 32))"
ext instance-id "$(printf 'ef%.0s' $(seq 20))"
ext boot-mr-done

start_kms a --dev --tee "sim:$KS" --pccs-url "$PCCS" --state-dir "$WORK/state" \
    --listen 127.0.0.1:0 || fail "KMS did not start"
OS=$(jself a osImageHash)
VMC="{\"os_image_hash\":\"$OS\",\"cpu_count\":1,\"memory_size\":1073741824}"
URL="https://127.0.0.1:$PORT_a"

# mkcert DIR [corrupt]: an RA-TLS client certificate from the KMS's temp CA with the app TD's
# attestation (kms_client.py's helpers), written to DIR/c.pem + DIR/k.pem
mkcert() {
    mkdir -p "$1"
    "$PY" - "$CLIENT" "$URL" "$SIM" "$AS" "$VMC" "$1" "${2:-}" <<'EOF'
import sys
src = open(sys.argv[1]).read().rsplit("main()", 1)[0]
g = {"__name__": "kms_client_lib"}
exec(compile(src, sys.argv[1], "exec"), g)
url, sim, sock, vmc, out, corrupt = sys.argv[2:8]
x509, ec, ser, hashes, dt = g["x509"], g["ec"], g["serialization"], g["hashes"], g["datetime"]
tmp = g["post"](url, "GetTempCaCert", {})
ca_key = ser.load_pem_private_key(tmp["temp_ca_key"].encode(), None)
ca_cert = x509.load_pem_x509_certificate(tmp["temp_ca_cert"].encode())
key = ec.generate_private_key(ec.SECP256R1())
spki = key.public_key().public_bytes(ser.Encoding.DER, ser.PublicFormat.SubjectPublicKeyInfo)
rd = g["hashlib"].sha512(b"ratls-cert:" + spki).digest()
att = g["attestation"](sim, sock, rd, vmc, corrupt=(corrupt == "corrupt"))
now = dt.datetime.now(dt.timezone.utc)
cert = (x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(g["NameOID"].COMMON_NAME, "RA-TLS TEMP Cert")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1)).not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.UnrecognizedExtension(g["ATT_OID"], g["der_octet"](att)), critical=False)
        .sign(ca_key, hashes.SHA256()))
open(out + "/c.pem", "wb").write(cert.public_bytes(ser.Encoding.PEM))
open(out + "/k.pem", "wb").write(key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                                   ser.NoEncryption()))
EOF
}

# sclient OUTFILE METHOD BODY OPENSSL-ARGS...: one POST over openssl s_client (Connection:
# close); the transcript (session info + HTTP reply) goes to OUTFILE
sclient() {
    local out=$1 method=$2 body=$3
    shift 3
    printf 'POST /prpc/%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "$method" "${#body}" "$body" |
        timeout 30 openssl s_client -connect "127.0.0.1:$PORT_a" -servername localhost \
            -ign_eof "$@" >"$out" 2>&1 || true
}

GAK="{\"api_version\":1,\"vm_config\":$(printf '%s' "$VMC" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read()))')}"

for proto in -tls1_3 -tls1_2; do
    # --- no client certificate
    sclient "$WORK/s1" GetMeta '{}' $proto -sess_out "$WORK/sess"
    grep -q '^New, ' "$WORK/s1" || fail "$proto first handshake: $(cat "$WORK/s1")"
    grep -q '"k256_pubkey"' "$WORK/s1" || fail "$proto GetMeta: $(cat "$WORK/s1")"
    sclient "$WORK/s2" GetMeta '{}' $proto -sess_in "$WORK/sess"
    grep -q '^Reused, ' "$WORK/s2" || fail "$proto not resumed (no cert): $(cat "$WORK/s2")"
    grep -q 'alert' "$WORK/s2" && fail "$proto alert on resumption: $(cat "$WORK/s2")"
    grep -q '"k256_pubkey"' "$WORK/s2" || fail "$proto GetMeta resumed: $(cat "$WORK/s2")"
    sclient "$WORK/s3" GetAppKey "$GAK" $proto -sess_in "$WORK/sess"
    grep -q '^Reused, ' "$WORK/s3" || fail "$proto not resumed: $(cat "$WORK/s3")"
    grep -q 'No attestation provided' "$WORK/s3" ||
        fail "$proto resumed session without a certificate: $(cat "$WORK/s3")"
    ok "$proto resumption without a client certificate: Reused, GetMeta served, GetAppKey 'No attestation provided'"

    # --- RA-TLS client certificate: the resumed session keeps it, each request verifies it
    mkcert "$WORK/good"
    sclient "$WORK/c1" GetAppKey "$GAK" $proto -cert "$WORK/good/c.pem" -key "$WORK/good/k.pem" \
        -sess_out "$WORK/sess"
    grep -q '^New, ' "$WORK/c1" || fail "$proto first handshake (cert): $(cat "$WORK/c1")"
    grep -q '"disk_crypt_key"' "$WORK/c1" || fail "$proto GetAppKey: $(cat "$WORK/c1")"
    key1=$(grep -o '"disk_crypt_key":"[0-9a-f]*"' "$WORK/c1")
    n1=$(grep -c '"dstack_kms_attestation_requests_total' "$WORK/c1" || true)
    sclient "$WORK/c2" GetAppKey "$GAK" $proto -sess_in "$WORK/sess"
    grep -q '^Reused, ' "$WORK/c2" || fail "$proto not resumed (cert): $(cat "$WORK/c2")"
    grep -q 'alert' "$WORK/c2" && fail "$proto alert on resumption (cert): $(cat "$WORK/c2")"
    key2=$(grep -o '"disk_crypt_key":"[0-9a-f]*"' "$WORK/c2") ||
        fail "$proto GetAppKey on the resumed session: $(cat "$WORK/c2")"
    [ "$key1" = "$key2" ] || fail "$proto keys differ after resumption"

    mkcert "$WORK/bad" corrupt
    sclient "$WORK/b1" GetMeta '{}' $proto -cert "$WORK/bad/c.pem" -key "$WORK/bad/k.pem" \
        -sess_out "$WORK/sess"
    grep -q '^New, ' "$WORK/b1" || fail "$proto handshake (bad cert): $(cat "$WORK/b1")"
    sclient "$WORK/b2" GetAppKey "$GAK" $proto -sess_in "$WORK/sess"
    grep -q '^Reused, ' "$WORK/b2" || fail "$proto not resumed (bad cert): $(cat "$WORK/b2")"
    grep -q 'invalid quote' "$WORK/b2" ||
        fail "$proto corrupted attestation accepted on a resumed session: $(cat "$WORK/b2")"
    ok "$proto resumption with an RA-TLS client certificate: Reused, same keys, attestation verified per request (corrupted quote refused)"
done
echo "all dstack-kms TLS resumption tests passed"
