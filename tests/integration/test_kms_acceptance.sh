#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# KMS acceptance, end to end with real processes (spec kms-ratls.md §1.3, §2.3, §3.3, §5.4, §6.5):
# a simulated TDX module (dstack-tee-sim serve + its PCCS) with one TD per CVM, the KMS under
# test (dstack-kms), and the guest side (`dstack-util get-keys`). Checked:
#   1. an allowed app gets its keys (file 0600, KMS provider fields, k256 signature chain to
#      GetMeta's key, env key = `dstack kms env-pubkey`'s key);
#   2. a compose hash, an OS image or a device not in the policy is denied with the reason;
#   3. a simulated quote is denied unless simulation is explicitly allowed in the KMS config;
#   4. a tampered quote, a replayed certificate from another key, an expired certificate and a
#      client without a certificate are denied (certificates crafted with python3's
#      `cryptography` from one minted by `dstack-util ratls-cert`, sent with python3's ssl);
#   5. two apps get different keys;
#   6. the same app gets the same keys from a second KMS onboarded from the first;
#   7. a KMS restarted from its state directory serves the same keys.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
BIN=$(cd "$DS_BIN" && pwd)
ds_need_bins "$BIN/dstack-tee-sim" "$BIN/dstack-util" "$BIN/dstack-kms" "$BIN/dstack"
ds_need_tools python3
python3 -c 'import cryptography' 2>/dev/null || {
    echo "SKIP: python3 cryptography module missing" >&2; exit 77; }

ds_tmpdir /tmp/ds-kms-acc.XXXXXX
T=$TMP
PIDS=()
ds_stop_on_exit PIDS
# On failure, show the end of every daemon log (after the daemons were stopped).
ds_on_exit() {
    if [[ $1 -ne 0 ]]; then
        for f in "$T"/*.log; do [[ -f $f ]] && { echo "---- $f"; tail -n 40 "$f"; }; done
    fi
    return 0
}
die() { echo "FATAL: $*" >&2; exit 1; }

# The embedded TEE's public development seed (lib/tee/tee_embedded.c): the simulator uses the
# same one, so a --dev KMS (embedded TEE) and the TDs chain to one mock root and the
# simulator's PCCS serves collateral for both.
SEED=64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031
hexrep() { python3 -c "print('$1' * $2)"; }

# ---- simulated TDX module --------------------------------------------------------------------
"$BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$T/sim" --pccs-listen 127.0.0.1:0 \
    >"$T/sim.log" 2>&1 &
PIDS+=($!)
ds_wait_for 20 "" test -S "$T/sim/control.sock" || die "tee-sim did not start"
PCCS="http://$(cat "$T/sim/pccs.addr")"

# make_td NAME APP_ID COMPOSE_HASH INSTANCE_ID -> prints the TD's device socket
make_td() {
    local s
    s=$("$BIN/dstack-tee-sim" create-td --state-dir "$T/sim" --name "$1")
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event system-preparing >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event app-id --payload "$2" >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event compose-hash --payload "$3" >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event instance-id --payload "$4" >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event boot-mr-done >/dev/null
    echo "$s"
}

APP1=$(hexrep a1 20); APP2=$(hexrep a2 20); APP3=$(hexrep a3 20)
CH1=$(hexrep c1 32); CH2=$(hexrep c2 32); CH3=$(hexrep c3 32); CHBAD=$(hexrep cf 32)
INST1=$(hexrep 01 20); INST2=$(hexrep 02 20); INST3=$(hexrep 03 20); INST4=$(hexrep 04 20)
OSIMG=$(hexrep 0e 32); OSBAD=$(hexrep 0b 32)
OTHER_DEVICE=$(hexrep dd 32)

TD1=$(make_td app1 "$APP1" "$CH1" "$INST1")
TD2=$(make_td app2 "$APP2" "$CH2" "$INST2")
TD3=$(make_td app3 "$APP3" "$CH3" "$INST3")
TDBAD=$(make_td badcompose "$APP1" "$CHBAD" "$INST4")

printf '{"os_image_hash":"%s","cpu_count":2,"memory_size":2147483648}' "$OSIMG" >"$T/vm.json"
printf '{"os_image_hash":"%s","cpu_count":2,"memory_size":2147483648}' "$OSBAD" >"$T/vm-bad.json"

# ---- the test-only client: crafted certificates and raw mutual-TLS calls ---------------------
cat >"$T/craft.py" <<'PY'
"""Raw pRPC calls over (mutual) TLS and RA-TLS certificates crafted from a valid one."""
import datetime, http.client, json, ssl, sys
from cryptography import x509
from cryptography.x509.oid import ObjectIdentifier
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ATT = ObjectIdentifier('1.3.6.1.4.1.62397.1.8')


def load_cert(p):
    return x509.load_pem_x509_certificate(open(p, 'rb').read())


def load_key(p):
    return serialization.load_pem_private_key(open(p, 'rb').read(), None)


def der_octets(raw):
    """(header length, payload) of one DER OCTET STRING."""
    assert raw[0] == 0x04
    n = raw[1]
    if n < 0x80:
        return 2, raw[2:2 + n]
    k = n & 0x7f
    return 2 + k, raw[2 + k:2 + k + int.from_bytes(raw[2:2 + k], 'big')]


def compact(b, off):
    """SCALE compact integer at off -> (value, size)."""
    mode = b[off] & 3
    if mode == 0:
        return b[off] >> 2, 1
    if mode == 1:
        return int.from_bytes(b[off:off + 2], 'little') >> 2, 2
    if mode == 2:
        return int.from_bytes(b[off:off + 4], 'little') >> 2, 4
    raise ValueError('big compact')


def rebuild(src, pub, ext_value, ca_cert, ca_key, out, not_after=None):
    """src's subject/validity/extensions on key pub, attestation ext replaced, signed by CA."""
    b = (x509.CertificateBuilder().subject_name(src.subject).issuer_name(ca_cert.subject)
         .public_key(pub).serial_number(x509.random_serial_number())
         .not_valid_before(src.not_valid_before)
         .not_valid_after(not_after or src.not_valid_after))
    for e in src.extensions:
        if e.oid == ATT:
            b = b.add_extension(x509.UnrecognizedExtension(ATT, ext_value), critical=False)
        elif isinstance(e.value, (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)):
            continue
        else:
            b = b.add_extension(e.value, critical=e.critical)
    cert = b.sign(ca_key, hashes.SHA256())
    open(out, 'wb').write(cert.public_bytes(serialization.Encoding.PEM))


def attestation_ext(cert):
    return cert.extensions.get_extension_for_oid(ATT).value.value


def cmd_tamper(src_p, ca_p, cakey_p, out_p):
    """Flip one byte of the quote's ECDSA signature inside the attestation (V0, TDX)."""
    src = load_cert(src_p)
    raw = bytearray(attestation_ext(src))
    hlen, payload = der_octets(bytes(raw))
    assert payload[0] == 0x00 and payload[1] == 0x00, 'expected a V0 TDX attestation'
    qlen, csize = compact(payload, 2)
    quote_off = hlen + 2 + csize
    assert qlen > 700
    raw[quote_off + 640] ^= 0x01  # quote header 48 + TD report 584 + u32 = 636: the signature
    rebuild(src, src.public_key(), bytes(raw), load_cert(ca_p), load_key(cakey_p), out_p)


def cmd_replay(src_p, ca_p, cakey_p, out_p, outkey_p):
    """The attestation of src (bound to src's key) on a certificate for a fresh key."""
    src = load_cert(src_p)
    key = ec.generate_private_key(ec.SECP256R1())
    open(outkey_p, 'wb').write(key.private_bytes(serialization.Encoding.PEM,
                               serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    rebuild(src, key.public_key(), attestation_ext(src), load_cert(ca_p), load_key(cakey_p), out_p)


def cmd_call(url, method, body, cert=None, key=None):
    """POST url/prpc/method?json over TLS (server not verified); print the outcome."""
    hostport = url.split('://', 1)[1].rstrip('/')
    host, port = hostport.rsplit(':', 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(cert, key)
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    try:
        conn.request('POST', '/prpc/%s?json' % method, body, {'Content-Type': 'application/json'})
        r = conn.getresponse()
        data = r.read().decode(errors='replace')
        try:
            j = json.loads(data)
        except ValueError:
            j = None
        if isinstance(j, dict) and 'error' in j:
            print('HTTP %d error: %s' % (r.status, str(j['error']).replace('\n', ' ')))
        elif isinstance(j, dict):  # never print the keys themselves
            print('HTTP %d fields: %s' % (r.status, ','.join(sorted(j))))
        else:
            print('HTTP %d %s' % (r.status, data[:200]))
    except (ssl.SSLError, OSError, http.client.HTTPException) as e:
        print('TLS %s' % e)


def cmd_temp_ca(url, outdir):
    hostport = url.split('://', 1)[1].rstrip('/')
    host, port = hostport.rsplit(':', 1)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, int(port), context=ctx, timeout=30)
    conn.request('POST', '/prpc/GetTempCaCert?json', '{}', {'Content-Type': 'application/json'})
    r = conn.getresponse()
    j = json.loads(r.read())
    assert r.status == 200, j
    for name, field in (('tmp.pem', 'temp_ca_cert'), ('tmp.key', 'temp_ca_key'),
                        ('root.pem', 'ca_cert')):
        open('%s/%s' % (outdir, name), 'w').write(j[field])


{'tamper': cmd_tamper, 'replay': cmd_replay, 'call': cmd_call,
 'temp-ca': cmd_temp_ca}[sys.argv[1]](*sys.argv[2:])
PY
craft() { python3 "$T/craft.py" "$@"; }

# ---- KMS helpers --------------------------------------------------------------------------------
# start_kms NAME PORT ARGS... : run dstack-kms in the background, log to $T/NAME.log
declare -A KMS_PID
start_kms() {
    local name=$1 port=$2; shift 2
    "$BIN/dstack-kms" --listen "127.0.0.1:$port" "$@" >>"$T/$name.log" 2>&1 &
    KMS_PID[$name]=$!
    PIDS+=($!)
    ds_wait_for 60 "" "$BIN/dstack" kms meta "https://127.0.0.1:$port" ||
        die "KMS $name did not answer GetMeta on port $port"
}
stop_kms() {
    ds_stop_pid "${KMS_PID[$1]}"
}

# get_keys NAME URL TD_SOCKET APP_ID [VM_CONFIG] : keys into $T/NAME.keys, output in $T/NAME.out
get_keys() {
    local name=$1 url=$2 td=$3 app=$4 vm=${5:-$T/vm.json}
    set +e
    "$BIN/dstack-util" get-keys --kms-url "$url" --app-id "$app" --vm-config "$vm" \
        --tee "sim:$td" --pccs-url "$PCCS" --insecure-allow-simulated \
        --output "$T/$name.keys" >"$T/$name.out" 2>&1
    local rc=$?
    set -e
    return $rc
}

# expect_denied WHAT NAME URL TD APP VM REGEX : get-keys must fail and name the reason
expect_denied() {
    local what=$1 name=$2 url=$3 td=$4 app=$5 vm=$6 re=$7
    if get_keys "$name" "$url" "$td" "$app" "$vm"; then
        fail "$what: keys were released"
    elif [[ -e $T/$name.keys ]]; then
        fail "$what: a keys file was written"
    elif grep -Eq -- "$re" "$T/$name.out"; then
        pass "$what: $(grep -Eo -- "$re" "$T/$name.out" | head -1)"
    else
        fail "$what: error does not match /$re/: $(tail -n 1 "$T/$name.out")"
    fi
}

# Field of a keys file (hex / string); key_provider fields with a dotted path.
kf() { python3 -c "import json,sys; j=json.load(open('$1'))
for k in '$2'.split('.'): j=j[k]
print(j)"; }

# ---- 1. an allowed app gets its keys -------------------------------------------------------------
cat >"$T/policy.json" <<JSON
{
  "gatewayAppId": "gw-acceptance",
  "osImages": ["0x$OSIMG"],
  "allowedTcbStatuses": ["UpToDate"],
  "kms": {"mrAggregated": [], "devices": [], "allowAnyDevice": true},
  "apps": {
    "0x$APP1": {"composeHashes": ["0x$CH1"], "devices": [], "allowAnyDevice": true},
    "0x$APP2": {"composeHashes": ["0x$CH2"], "devices": [], "allowAnyDevice": true},
    "0x$APP3": {"composeHashes": ["0x$CH3"], "devices": ["0x$OTHER_DEVICE"],
                "allowAnyDevice": false}
  }
}
JSON
PA=$(free_port)
URLA="https://127.0.0.1:$PA"
start_kms kmsA "$PA" --dev --state-dir "$T/kmsA" --domain 127.0.0.1 --policy "$T/policy.json" \
    --no-self-authorization --vm-config "$(cat "$T/vm.json")"
"$BIN/dstack" kms meta "$URLA" --json >"$T/metaA.json"
K256A=$(python3 -c "import json; print(json.load(open('$T/metaA.json'))['k256_pubkey'])")

if get_keys app1A "$URLA" "$TD1" "$APP1"; then
    mode=$(stat -c %a "$T/app1A.keys")
    [[ $mode == 600 ]] && pass "allowed app: keys file written with mode 0600" ||
        fail "allowed app: keys file mode $mode"
    python3 - "$T/app1A.keys" "$T/metaA.json" "$URLA" <<'PY' && pass "allowed app: .appkeys.json fields (KMS provider, root CA, key lengths)" || fail "allowed app: .appkeys.json fields"
import json, sys
from cryptography import x509
from cryptography.hazmat.primitives import serialization
k = json.load(open(sys.argv[1])); meta = json.load(open(sys.argv[2]))
assert len(bytes.fromhex(k['disk_crypt_key'])) == 32
assert len(bytes.fromhex(k['env_crypt_key'])) == 32
assert len(bytes.fromhex(k['k256_key'])) == 32
assert len(bytes.fromhex(k['k256_signature'])) == 65
assert k['gateway_app_id'] == 'gw-acceptance', k['gateway_app_id']
assert k['ca_cert'] == meta['ca_cert']
kms = k['key_provider']['Kms']
assert set(k['key_provider']) == {'Kms'}
assert kms['url'] == sys.argv[3] + '/prpc', kms['url']
root = x509.load_pem_x509_certificate(meta['ca_cert'].encode())
spki = root.public_key().public_bytes(serialization.Encoding.DER,
                                      serialization.PublicFormat.SubjectPublicKeyInfo)
assert kms['pubkey'] == spki.hex()
assert 'BEGIN PRIVATE KEY' in kms['tmp_ca_key'] and 'BEGIN CERTIFICATE' in kms['tmp_ca_cert']
PY
    # k256_signature = root k256 over keccak("dstack-kms-issued:" app_id app_pub) (§3.4)
    if (cd "${DS_SRC:-.}" && node -e '
        const { secp256k1 } = require("@noble/curves/secp256k1");
        const { keccak_256 } = require("@noble/hashes/sha3");
        const [keyHex, sigHex, appHex, kmsHex] = process.argv.slice(1);
        const appPub = secp256k1.getPublicKey(Buffer.from(keyHex, "hex"), true);
        const msg = Buffer.concat([Buffer.from("dstack-kms-issued:"), Buffer.from(appHex, "hex"),
                                   Buffer.from(appPub)]);
        const sig = Buffer.from(sigHex, "hex");
        const pub = secp256k1.Signature.fromCompact(sig.subarray(0, 64)).addRecoveryBit(sig[64])
            .recoverPublicKey(keccak_256(msg)).toHex(true);
        if (pub !== kmsHex) { console.error(pub, "!=", kmsHex); process.exit(1); }' \
        "$(kf "$T/app1A.keys" k256_key)" "$(kf "$T/app1A.keys" k256_signature)" "$APP1" \
        "$K256A"); then
        pass "allowed app: k256_signature recovers to GetMeta's k256_pubkey"
    else
        fail "allowed app: k256_signature does not recover to GetMeta's k256_pubkey"
    fi
    # env_crypt_key's X25519 public key is what deployers get from GetAppEnvEncryptPubKey
    ENVPUB=$("$BIN/dstack" kms env-pubkey "$URLA" "$APP1" --json |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
    MYPUB=$(python3 -c "
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives import serialization as s
k = X25519PrivateKey.from_private_bytes(bytes.fromhex('$(kf "$T/app1A.keys" env_crypt_key)'))
print(k.public_key().public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex())")
    [[ $ENVPUB == "$MYPUB" ]] && pass "allowed app: env key matches dstack kms env-pubkey" ||
        fail "allowed app: X25519(env_crypt_key) $MYPUB != env-pubkey $ENVPUB"
    grep -q "$(kf "$T/app1A.keys" disk_crypt_key)" "$T/app1A.out" &&
        fail "allowed app: key material in the output" || pass "allowed app: no key material logged"
else
    fail "allowed app: get-keys failed: $(tail -n 1 "$T/app1A.out")"
fi

# ---- 1b. the client's own checks of the KMS (§6.5) -------------------------------------------
# expect_util_fail WHAT REGEX ARGS... : dstack-util get-keys must fail (exit 1) naming the reason
expect_util_fail() {
    local what=$1 re=$2 rc=0
    shift 2
    "$BIN/dstack-util" get-keys --vm-config "$T/vm.json" --tee "sim:$TD1" \
        --output "$T/client-check.keys" "$@" >"$T/client-check.out" 2>&1 || rc=$?
    if [[ $rc -ne 1 ]]; then
        fail "$what: exit $rc, expected 1"
    elif [[ -e $T/client-check.keys ]]; then
        fail "$what: a keys file was written"
    elif grep -Eq -- "$re" "$T/client-check.out"; then
        pass "$what: $(grep -Eo -- "$re" "$T/client-check.out" | head -1)"
    else
        fail "$what: error does not match /$re/: $(tail -n 1 "$T/client-check.out")"
    fi
}
expect_util_fail "KMS host name not in its certificate" \
    "GetAppKey: .*no alternative certificate subject name matches target host name 'localhost'" \
    --kms-url "https://localhost:$PA" --pccs-url "$PCCS" --insecure-allow-simulated --app-id "$APP1"
expect_util_fail "simulated KMS attestation without --insecure-allow-simulated" \
    'GetAppKey: KMS server attestation does not verify \(step quote\)' \
    --kms-url "$URLA" --pccs-url "$PCCS" --app-id "$APP1"
expect_util_fail "--app-id differing from the measured app-id" \
    "--app-id does not match the TEE's measured 'app-id' event" \
    --kms-url "$URLA" --pccs-url "$PCCS" --insecure-allow-simulated --app-id "$APP2"

# ---- 2. policy denials with the reason ---------------------------------------------------------
expect_denied "compose hash not in the policy" badcompose "$URLA" "$TDBAD" "$APP1" "$T/vm.json" \
    'GetAppKey: Boot denied: compose hash not allowed'
expect_denied "OS image not in the policy" badimage "$URLA" "$TD1" "$APP1" "$T/vm-bad.json" \
    'GetAppKey: Boot denied: OS image is not allowed'
expect_denied "device not in the policy" baddevice "$URLA" "$TD3" "$APP3" "$T/vm.json" \
    'GetAppKey: Boot denied: app is not allowed to boot on this device'

# ---- 5. two apps get different keys ------------------------------------------------------------
if get_keys app2A "$URLA" "$TD2" "$APP2" && [[ -f $T/app1A.keys ]]; then
    same=0
    for f in disk_crypt_key env_crypt_key k256_key; do
        [[ $(kf "$T/app1A.keys" $f) == "$(kf "$T/app2A.keys" $f)" ]] && same=1
    done
    [[ $same == 0 ]] && pass "two apps get different disk, env and k256 keys" ||
        fail "two apps share a key"
else
    fail "second app: get-keys failed: $(tail -n 1 "$T/app2A.out")"
fi

# ---- 4. forged client certificates ---------------------------------------------------------------
craft temp-ca "$URLA" "$T"
# `dstack kms --ca-cert` pins the TLS root: the KMS root CA verifies, another CA does not.
if "$BIN/dstack" kms meta "$URLA" --ca-cert "$T/root.pem" >/dev/null 2>"$T/pin.err"; then
    pass "dstack kms meta --ca-cert <KMS root CA>: server verified"
else
    fail "dstack kms meta --ca-cert <KMS root CA>: $(cat "$T/pin.err")"
fi
rc=0
"$BIN/dstack" kms meta "$URLA" --ca-cert "$T/tmp.pem" >/dev/null 2>"$T/pin.err" || rc=$?
if [[ $rc -eq 1 ]] && grep -q 'SSL certificate problem' "$T/pin.err"; then
    pass "dstack kms meta --ca-cert <other CA>: refused ($(grep -o 'SSL certificate problem: [^"]*' "$T/pin.err" | head -1))"
else
    fail "dstack kms meta --ca-cert <other CA>: exit $rc: $(cat "$T/pin.err")"
fi
"$BIN/dstack-util" ratls-cert --tee "sim:$TD1" --ca-cert "$T/tmp.pem" --ca-key "$T/tmp.key" \
    --vm-config "$T/vm.json" --out-key "$T/good.key" --out-cert "$T/good.pem" 2>>"$T/craft.log"
BODY=$(python3 -c "import json; print(json.dumps({'api_version': 1, 'vm_config': open('$T/vm.json').read()}))")
# raw_call WHAT REGEX CERT KEY : GetAppKey through python's ssl; the outcome must match REGEX
raw_call() {
    local what=$1 re=$2 out
    shift 2
    out=$(craft call "$URLA" GetAppKey "$BODY" "$@" 2>&1 | head -c 2000)
    if [[ $out =~ $re ]]; then
        pass "$what: ${BASH_REMATCH[0]}"
    else
        fail "$what: got '$out', expected /$re/"
    fi
}
# The control: the genuine certificate through the same raw client gets the keys.
raw_call "raw client, genuine RA-TLS certificate" '^HTTP 200 fields: .*disk_crypt_key' \
    "$T/good.pem" "$T/good.key"
craft tamper "$T/good.pem" "$T/tmp.pem" "$T/tmp.key" "$T/tampered.pem"
raw_call "tampered quote" '^HTTP 400 error: invalid quote: .*quote_signature.*' \
    "$T/tampered.pem" "$T/good.key"
craft replay "$T/good.pem" "$T/tmp.pem" "$T/tmp.key" "$T/replayed.pem" "$T/replayed.key"
raw_call "certificate replayed onto another key" '^HTTP 400 error: invalid quote: binding.*' \
    "$T/replayed.pem" "$T/replayed.key"
"$BIN/dstack-util" ratls-cert --tee "sim:$TD1" --ca-cert "$T/tmp.pem" --ca-key "$T/tmp.key" \
    --not-before 1000000000 --not-after 1100000000 \
    --out-key "$T/expired.key" --out-cert "$T/expired.pem" 2>>"$T/craft.log"
# Refused in the TLS handshake (no HTTP answer); offline, expiry is its only defect.
raw_call "expired certificate, refused in the handshake" '^TLS .*' "$T/expired.pem" "$T/expired.key"
vout=$(openssl verify -CAfile "$T/tmp.pem" "$T/expired.pem" 2>&1 || true)
if [[ $vout == *"certificate has expired"* ]] &&
    openssl verify -no_check_time -CAfile "$T/tmp.pem" "$T/expired.pem" >/dev/null 2>&1; then
    pass "expired certificate: expiry is its only defect (openssl verify)"
else
    fail "expired certificate: not a cleanly expired temp-CA certificate"
fi
raw_call "client without a certificate" '^HTTP 400 error: .*No attestation provided.*'
# A genuine RA-TLS certificate not issued by the KMS temp CA.
"$BIN/dstack-util" ratls-cert --tee "sim:$TD1" --out-key "$T/selfsigned.key" \
    --out-cert "$T/selfsigned.pem" 2>>"$T/craft.log"
raw_call "certificate not issued by the temp CA" \
    '^TLS .*' \
    "$T/selfsigned.pem" "$T/selfsigned.key"

# ---- 3. simulated quotes need insecure_allow_simulated in the KMS config -----------------------
TDK=$(make_td kmsC "$(hexrep 4c 20)" "$(hexrep 4c 32)" "$(hexrep 4c 20)")
PC=$(free_port)
URLC="https://127.0.0.1:$PC"
write_kms_toml() { # write_kms_toml FILE ALLOW_SIMULATED
    cat >"$1" <<TOML
[rpc]
address = "127.0.0.1"
port = $PC

[core]
cert_dir = "$T/kmsC"
enforce_self_authorization = false
tee = "sim:$TDK"
vm_config = '$(cat "$T/vm.json")'

[core.attestation]
insecure_allow_simulated = $2

[core.attestation.urls]
pccs = "$PCCS"

[core.auth_api]
type = "policy"

[core.auth_api.policy]
file = "$T/policy.json"

[core.onboard]
auto_bootstrap_domain = "127.0.0.1"
TOML
}
write_kms_toml "$T/kmsC-strict.toml" false
start_kms kmsC "$PC" --config "$T/kmsC-strict.toml"
expect_denied "simulated quote, insecure_allow_simulated = false" simdenied "$URLC" "$TD1" \
    "$APP1" "$T/vm.json" 'GetAppKey: .*(simulat|[Mm]ock|Intel|root CA|pck_chain)'
stop_kms kmsC
write_kms_toml "$T/kmsC-sim.toml" true
start_kms kmsC "$PC" --config "$T/kmsC-sim.toml"
if get_keys simallowed "$URLC" "$TD1" "$APP1"; then
    pass "simulated quote, insecure_allow_simulated = true: keys released"
else
    fail "simulated quote allowed by config: get-keys failed: $(tail -n 1 "$T/simallowed.out")"
fi
stop_kms kmsC

# ---- 6. a second KMS onboarded from the first serves the same keys -----------------------------
TDKB=$(make_td kmsB "$(hexrep 4b 20)" "$(hexrep 4b 32)" "$(hexrep 4b 20)")
PB=$(free_port)
POB=$(free_port)
URLB="https://127.0.0.1:$PB"
"$BIN/dstack-kms" --state-dir "$T/kmsB" --listen "127.0.0.1:$PB" \
    --onboard-listen "127.0.0.1:$POB" --tee "sim:$TDKB" --auth dev --no-self-authorization \
    --insecure-allow-simulated --pccs-url "$PCCS" --vm-config "$(cat "$T/vm.json")" \
    >>"$T/kmsB.log" 2>&1 &
KMS_PID[kmsB]=$!
PIDS+=($!)
onboard_rpc() { # onboard_rpc METHOD JSON
    curl -sS --max-time 60 -X POST -H 'Content-Type: application/json' -d "$2" \
        "http://127.0.0.1:$POB/prpc/$1?json"
}
ds_wait_for 30 "" curl -sf "http://127.0.0.1:$POB/health" || die "KMS B onboard listener did not start"
onboard_rpc GetAttestationInfo '{}' >"$T/kmsB-info.json" || die "GetAttestationInfo on KMS B failed"
# Before the operator allows it, A refuses to hand its root keys to B (bootAuth/kms).
onboard_rpc Onboard "{\"source_url\":\"$URLA\",\"domain\":\"127.0.0.1\"}" >"$T/onboard-denied.json" || true
if grep -q 'aggregated MR not allowed' "$T/onboard-denied.json"; then
    pass "onboarding: a KMS not in the policy is refused (aggregated MR not allowed)"
else
    fail "onboarding before allowlisting: $(cat "$T/onboard-denied.json")"
fi
# Allow KMS B in A's policy the way an operator does: its aggregated MR and OS image.
python3 - "$T/policy.json" "$T/kmsB-info.json" <<'PY'
import json, sys
p = json.load(open(sys.argv[1])); info = json.load(open(sys.argv[2]))
p['kms']['mrAggregated'] = ['0x' + info['mr_aggregated']]
p['osImages'].append('0x' + info['os_image_hash'])
json.dump(p, open(sys.argv[1] + '.tmp', 'w'))
PY
mv "$T/policy.json.tmp" "$T/policy.json"
onboard_rpc Onboard "{\"source_url\":\"$URLA\",\"domain\":\"127.0.0.1\"}" >"$T/onboard.json"
if python3 -c "import json,sys; j=json.load(open('$T/onboard.json')); sys.exit(0 if j.get('k256_pubkey') == '$K256A' else 1)"; then
    pass "onboarding: KMS B reports KMS A's k256 public key"
else
    fail "onboarding failed: $(cat "$T/onboard.json")"
fi
curl -sS --max-time 10 "http://127.0.0.1:$POB/finish" >/dev/null || true
if ds_wait_for 30 "" "$BIN/dstack" kms meta "$URLB" && get_keys app1B "$URLB" "$TD1" "$APP1"; then
    same=1
    # ca_cert bytes differ between replicas (B re-issues it, §5.4); its key must not.
    for f in disk_crypt_key env_crypt_key k256_key k256_signature; do
        [[ $(kf "$T/app1A.keys" $f) == "$(kf "$T/app1B.keys" $f)" ]] || { same=0; echo "  $f differs"; }
    done
    [[ $(kf "$T/app1A.keys" key_provider.Kms.pubkey) == "$(kf "$T/app1B.keys" key_provider.Kms.pubkey)" ]] || same=0
    [[ $same == 1 ]] && pass "same app, same keys from KMS A and the onboarded KMS B" ||
        fail "KMS B derived different keys"
else
    fail "KMS B: get-keys failed: $(tail -n 1 "$T/app1B.out" 2>/dev/null)"
fi

# ---- 7. a restarted KMS serves the same keys ---------------------------------------------------
stop_kms kmsA
start_kms kmsA "$PA" --dev --state-dir "$T/kmsA" --domain 127.0.0.1 --policy "$T/policy.json" \
    --no-self-authorization --vm-config "$(cat "$T/vm.json")"
if get_keys app1A2 "$URLA" "$TD1" "$APP1"; then
    same=1
    for f in disk_crypt_key env_crypt_key k256_key k256_signature ca_cert; do
        [[ $(kf "$T/app1A.keys" $f) == "$(kf "$T/app1A2.keys" $f)" ]] || { same=0; echo "  $f differs"; }
    done
    [[ $same == 1 ]] && pass "restarted KMS serves the same keys" ||
        fail "restarted KMS derived different keys"
else
    fail "restarted KMS: get-keys failed: $(tail -n 1 "$T/app1A2.out")"
fi

echo
ds_finish "all KMS acceptance checks passed"
