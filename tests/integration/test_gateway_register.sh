#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# dstack-gateway control plane end to end with real processes (spec host-side.md §4.3, §4.4,
# kms-ratls.md §6.4-6.5): a simulated TDX module (dstack-tee-sim) with one TD per CVM, a test
# "KMS root CA" (python3 cryptography) that signs the gateway's server certificate and the
# CVMs' RA-TLS client certificates (`dstack-util ratls-cert --client-auth`), dstack-gateway,
# and the guest client `dstack-util gateway-register`. WireGuard: a userspace interface from
# wireguard-go when it can be created here (peers checked with `wg show dump`), else the
# gateway runs with core.wg.enabled = false and only the registry is checked (printed; force
# that mode with GW_TEST_NO_WG=1).
# Checked:
#   1. a CVM with a valid certificate registers, gets the first non-reserved address and a
#      WireGuard config (0600) that names the gateway; the peer is on the interface;
#   2. the same instance registering again gets the same address (new key replaces the old
#      peer); other instances get other addresses; reserved / network / gateway addresses
#      are never handed out;
#   3. after the gateway is SIGKILLed and restarted the registry is intact: old instances keep
#      their addresses and peers, a removed instance's address is reused, a full range refuses;
#   4. refused: tampered quote, certificate from another CA, app id extension that does not
#      match the attestation, certificate without attestation or app info;
#   5. Admin: no token / wrong token -> 401, with the token Status/GetMeta/GetInfo work,
#      RemoveInstance removes the instance (and its peer); status page is HTML;
#   6. Info and /health on the main server; --check and --dump-config.
set -euo pipefail

BIN=${DS_BIN:-build/bin}
BIN=$(cd "$BIN" && pwd)
for b in dstack-tee-sim dstack-util dstack-gateway; do
    [[ -x $BIN/$b ]] || { echo "missing $BIN/$b (build first)" >&2; exit 1; }
done
for tool in python3 curl; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool missing" >&2; exit 77; }
done
python3 -c 'import cryptography' 2>/dev/null || {
    echo "SKIP: python3 cryptography module missing" >&2; exit 77; }

T=$(mktemp -d /tmp/ds-gw-reg.XXXXXX)
PIDS=()
WG_IF=""
cleanup() {
    local rc=$?
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    [[ -n $WG_IF ]] && ip link del "$WG_IF" 2>/dev/null || true
    if grep -l -E 'ERROR: (Address|Leak|UndefinedBehavior)Sanitizer|runtime error:' \
        "$T"/*.log >/dev/null 2>&1; then
        echo "FAIL - sanitizer report in a daemon log"
        grep -h -A20 -E 'ERROR: .*Sanitizer|runtime error:' "$T"/*.log | head -60
        rc=1
    fi
    if [[ $rc -ne 0 ]]; then
        for f in "$T"/*.log; do [[ -f $f ]] && { echo "---- $f"; tail -n 30 "$f"; }; done
    fi
    rm -rf "$T"
    exit $rc
}
trap cleanup EXIT

FAILS=0
pass() { echo "ok   - $*"; }
fail() { echo "FAIL - $*"; FAILS=$((FAILS + 1)); }
die() { echo "FATAL: $*" >&2; exit 1; }
hexrep() { python3 -c "print('$1' * $2)"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [[ $SECONDS -lt $deadline ]] || return 1
        sleep 0.2
    done
}
jf() { python3 -c "import json,sys; j=json.load(open('$1'))
for k in '$2'.split('.'): j=j[int(k)] if isinstance(j,list) else j[k]
print(j)"; }

# ---- simulated TDX module and TDs --------------------------------------------------------------
SEED=64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031
"$BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$T/sim" --pccs-listen 127.0.0.1:0 \
    >"$T/sim.log" 2>&1 &
PIDS+=($!)
wait_for 20 test -S "$T/sim/control.sock" || die "tee-sim did not start"
PCCS="http://$(cat "$T/sim/pccs.addr")"
curl -sf -o "$T/simroot.der" "$PCCS/dstack-sim/v1/root-ca.der" || die "no mock root from $PCCS"

make_td() { # NAME APP_ID COMPOSE_HASH INSTANCE_ID -> device socket
    local s
    s=$("$BIN/dstack-tee-sim" create-td --state-dir "$T/sim" --name "$1")
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event system-preparing >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event app-id --payload "$2" >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event compose-hash --payload "$3" >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event instance-id --payload "$4" >/dev/null
    "$BIN/dstack-tee-sim" extend --socket "$s" --index 3 --event boot-mr-done >/dev/null
    echo "$s"
}
APP1=$(hexrep a1 20); APP2=$(hexrep a2 20)
CH=$(hexrep c1 32)
INST1=$(hexrep 01 20); INST2=$(hexrep 02 20); INST3=$(hexrep 03 20); INST4=$(hexrep 04 20)
TD1=$(make_td cvm1 "$APP1" "$CH" "$INST1")
TD2=$(make_td cvm2 "$APP1" "$CH" "$INST2")
TD3=$(make_td cvm3 "$APP2" "$CH" "$INST3")
TD4=$(make_td cvm4 "$APP2" "$CH" "$INST4")

# ---- certificates -----------------------------------------------------------------------------
cat >"$T/pki.py" <<'PY'
"""Test KMS root CAs, the gateway server certificate, and crafted client certificates."""
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier, ExtendedKeyUsageOID
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

ATT = ObjectIdentifier('1.3.6.1.4.1.62397.1.8')
APPID = ObjectIdentifier('1.3.6.1.4.1.62397.1.3')
NOW = datetime.datetime.now(datetime.timezone.utc)


def save(cert, key, cp, kp):
    open(cp, 'wb').write(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        open(kp, 'wb').write(key.private_bytes(serialization.Encoding.PEM,
                             serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


def load(cp, kp=None):
    c = x509.load_pem_x509_certificate(open(cp, 'rb').read())
    k = serialization.load_pem_private_key(open(kp, 'rb').read(), None) if kp else None
    return c, k


def ca(name, cp, kp):
    key = ec.generate_private_key(ec.SECP256R1())
    n = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (x509.CertificateBuilder().subject_name(n).issuer_name(n).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False,
                                         False), critical=True)
            .sign(key, hashes.SHA256()))
    save(cert, key, cp, kp)


def server(cacp, cakp, cp, kp, app=None):
    cac, cak = load(cacp, cakp)
    key = ec.generate_private_key(ec.SECP256R1())
    b = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, 'dstack-gateway')]))
            .issuer_name(cac.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(days=1))
            .not_valid_after(NOW + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address('127.0.0.1')), x509.DNSName('localhost')]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False))
    if app:
        raw = bytes.fromhex(app)
        b = b.add_extension(x509.UnrecognizedExtension(APPID, bytes([4, len(raw)]) + raw),
                            critical=False)
    save(b.sign(cak, hashes.SHA256()), key, cp, kp)


def rebuild(src, cac, cak, out, drop_att=False, ext_value=None, app_id=None):
    b = (x509.CertificateBuilder().subject_name(src.subject).issuer_name(cac.subject)
         .public_key(src.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(src.not_valid_before).not_valid_after(src.not_valid_after))
    for e in src.extensions:
        if isinstance(e.value, (x509.SubjectKeyIdentifier, x509.AuthorityKeyIdentifier)):
            continue
        if e.oid == ATT:
            if drop_att:
                continue
            if ext_value is not None:
                b = b.add_extension(x509.UnrecognizedExtension(ATT, ext_value), critical=False)
                continue
        b = b.add_extension(e.value, critical=e.critical)
    if app_id is not None:
        raw = bytes.fromhex(app_id)
        b = b.add_extension(x509.UnrecognizedExtension(APPID, bytes([4, len(raw)]) + raw),
                            critical=False)
    save(b.sign(cak, hashes.SHA256()), None, out, None)


def tamper(srcp, cacp, cakp, out):
    """Flip one byte of the quote's signature inside the attestation extension (V0, TDX)."""
    src, _ = load(srcp)
    cac, cak = load(cacp, cakp)
    raw = bytearray(src.extensions.get_extension_for_oid(ATT).value.value)
    hlen = 2 if raw[1] < 0x80 else 2 + (raw[1] & 0x7f)
    payload = raw[hlen:]
    assert payload[0] == 0 and payload[1] == 0, 'expected a V0 TDX attestation'
    mode = payload[2] & 3
    csize = {0: 1, 1: 2, 2: 4}[mode]
    raw[hlen + 2 + csize + 640] ^= 1
    rebuild(src, cac, cak, out, ext_value=bytes(raw))


def appid(srcp, cacp, cakp, app, out):
    src, _ = load(srcp)
    cac, cak = load(cacp, cakp)
    rebuild(src, cac, cak, out, app_id=app)


def noatt(srcp, cacp, cakp, out):
    src, _ = load(srcp)
    cac, cak = load(cacp, cakp)
    rebuild(src, cac, cak, out, drop_att=True)


{'ca': ca, 'server': server, 'tamper': tamper, 'appid': appid,
 'noatt': noatt}[sys.argv[1]](*sys.argv[2:])
PY
pki() { python3 "$T/pki.py" "$@"; }
pki ca "test KMS root CA" "$T/root.pem" "$T/root.key"
pki ca "another CA" "$T/other.pem" "$T/other.key"
GWAPP=$(hexrep 9a 20)
pki server "$T/root.pem" "$T/root.key" "$T/server.pem" "$T/server.key" "$GWAPP"

mint() { # NAME TD [CA CAKEY]: client certificate NAME.{pem,key} from TD signed by CA
    "$BIN/dstack-util" ratls-cert --tee "sim:$2" --ca-cert "${3:-$T/root.pem}" \
        --ca-key "${4:-$T/root.key}" --client-auth --subject dstack-guest-agent \
        --out-cert "$T/$1.pem" --out-key "$T/$1.key" >"$T/mint-$1.log" 2>&1 ||
        die "ratls-cert $1 failed: $(tail -n 2 "$T/mint-$1.log")"
}
mint c1 "$TD1"; mint c2 "$TD2"; mint c3 "$TD3"; mint c4 "$TD4"
mint cother "$TD2" "$T/other.pem" "$T/other.key"
pki tamper "$T/c2.pem" "$T/root.pem" "$T/root.key" "$T/ctamper.pem"; cp "$T/c2.key" "$T/ctamper.key"
pki appid "$T/c2.pem" "$T/root.pem" "$T/root.key" "$APP2" "$T/cappid.pem"; cp "$T/c2.key" "$T/cappid.key"
pki appid "$T/c1.pem" "$T/root.pem" "$T/root.key" "$APP1" "$T/cappok.pem"; cp "$T/c1.key" "$T/cappok.key"
pki noatt "$T/c2.pem" "$T/root.pem" "$T/root.key" "$T/cnoatt.pem"; cp "$T/c2.key" "$T/cnoatt.key"

# ---- WireGuard: userspace interface if possible -----------------------------------------------
WG_ENABLED=false
if [[ ${GW_TEST_NO_WG:-} != 1 ]] && command -v wg >/dev/null && command -v wireguard-go >/dev/null && [[ -c /dev/net/tun ]]; then
    cand="dsgw$((RANDOM % 10000))"
    wireguard-go -f "$cand" >"$T/wireguard-go.log" 2>&1 &
    WGPID=$!
    PIDS+=($WGPID)
    if wait_for 10 wg show "$cand"; then
        WG_IF=$cand
        WG_ENABLED=true
    else
        kill "$WGPID" 2>/dev/null || true
    fi
fi
if $WG_ENABLED; then
    echo "# WireGuard: wireguard-go interface $WG_IF (peers checked with wg show dump)"
    GW_PRIV=$(wg genkey)
else
    echo "# WireGuard: not available here; core.wg.enabled = false (registry checks only)"
    GW_PRIV=$(python3 -c 'import os,base64; print(base64.b64encode(os.urandom(32)).decode())')
    WG_IF=""
fi

ADMIN_PORT=$(free_port)
PROXY_PORT=$(free_port)
TOKEN=test-admin-token-$RANDOM$RANDOM
cat >"$T/gateway.toml" <<EOF
address = "127.0.0.1"
port = 0
[tls]
key = "$T/server.key"
certs = "$T/server.pem"
[tls.mutual]
ca_certs = "$T/root.pem"
[core.attestation]
insecure_allow_simulated = true
simulator_root_ca = "$T/simroot.der"
[core.attestation.urls]
pccs = "$PCCS"
[core.admin]
enabled = true
address = "127.0.0.1:$ADMIN_PORT"
auth_token = "$TOKEN"
[core.wg]
enabled = $WG_ENABLED
private_key = "$GW_PRIV"
interface = "${WG_IF:-wgunused0}"
ip = "10.8.0.1/24"
reserved_net = ["10.8.0.1/32", "10.8.0.2/31"]
client_ip_range = "10.8.0.0/29"
endpoint = "192.0.2.1:51820"
[core.proxy]
listen_addr = "127.0.0.1"
listen_port = $PROXY_PORT
base_domain = "gw.example"
[core.sync]
data_dir = "$T/data"
EOF

# ---- 6a. --check and --dump-config --------------------------------------------------------------
if "$BIN/dstack-gateway" --check -c "$T/gateway.toml" >"$T/check.out" 2>&1; then
    pass "--check accepts the config"
else
    fail "--check: $(cat "$T/check.out")"
fi
"$BIN/dstack-gateway" --dump-config -c "$T/gateway.toml" >"$T/dump.toml" 2>"$T/dump.err" || true
if grep -q 'client_ip_range = "10.8.0.0/29"' "$T/dump.toml" && ! grep -q "$GW_PRIV" "$T/dump.toml" &&
    ! grep -q "$TOKEN" "$T/dump.toml"; then
    pass "--dump-config prints the effective config without secrets"
else
    fail "--dump-config output wrong"
fi
sed 's#reserved_net = .*#reserved_net = ["10.8.0.3/32"]#' "$T/gateway.toml" >"$T/bad.toml"
if ! "$BIN/dstack-gateway" --check -c "$T/bad.toml" >"$T/bad.out" 2>&1 &&
    grep -q 'reserved_net must contain the gateway address' "$T/bad.out"; then
    pass "--check refuses a reserved_net without the gateway address"
else
    fail "--check accepted a bad reserved_net: $(cat "$T/bad.out")"
fi
sed 's#^ca_certs = .*##' "$T/gateway.toml" >"$T/bad2.toml"
if ! "$BIN/dstack-gateway" --check -c "$T/bad2.toml" >"$T/bad2.out" 2>&1 &&
    grep -q 'tls.mutual.ca_certs is required' "$T/bad2.out"; then
    pass "--check refuses a config without the KMS root CA"
else
    fail "--check without ca_certs: $(cat "$T/bad2.out")"
fi

# ---- start the gateway --------------------------------------------------------------------------
GW_PID=""
start_gw() {
    "$BIN/dstack-gateway" -c "$T/gateway.toml" >>"$T/gateway.log" 2>&1 &
    GW_PID=$!
    PIDS+=($GW_PID)
    local n
    for n in $(seq 150); do
        if [[ $(grep -c 'Admin listening on' "$T/gateway.log") -ge $1 ]]; then
            PORT=$(grep -o 'Gateway RPC listening on [^ ]*' "$T/gateway.log" | tail -1 | sed 's/.*://')
            return 0
        fi
        kill -0 "$GW_PID" 2>/dev/null || die "gateway exited"
        sleep 0.1
    done
    die "gateway did not start"
}
stop_gw() { kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; }
start_gw 1
URL="https://127.0.0.1:$PORT"

register() { # NAME CERTNAME [CA [OPTIONS...]] -> $T/NAME.{json,conf,err}; returns the exit code
    set +e
    "$BIN/dstack-util" gateway-register --gateway-url "$URL" --cert "$T/$2.pem" \
        --key "$T/$2.key" --ca "${3:-$T/root.pem}" --wg-config-out "$T/$1.conf" "${@:4}" \
        >"$T/$1.json" 2>"$T/$1.err"
    local rc=$?
    set -e
    return $rc
}
ip_of() { jf "$T/$1.json" wg.client_ip; }
peer_ip() { # PUBKEY -> allowed ips on the interface
    wg show "$WG_IF" dump | awk -v k="$1" '$1 == k {print $4}'
}
conf_pub() { # CONF -> public key of its private key
    sed -n 's/^PrivateKey = //p' "$1" | wg pubkey
}

# ---- 1. a valid CVM registers -------------------------------------------------------------------
if register r1 c1; then
    IP1=$(ip_of r1)
    if [[ $IP1 == 10.8.0.4 ]]; then
        pass "CVM 1 registered: $IP1 (first address after network, gateway and reserved 10.8.0.2/31)"
    else
        fail "CVM 1 got $IP1, expected 10.8.0.4"
    fi
    if [[ $(stat -c %a "$T/r1.conf") == 600 ]] && grep -q "^Address = $IP1/32$" "$T/r1.conf" &&
        grep -q '^AllowedIPs = 10.8.0.1/32$' "$T/r1.conf" &&
        grep -q '^Endpoint = 192.0.2.1:51820$' "$T/r1.conf" &&
        grep -q '^ListenPort = 9182$' "$T/r1.conf" &&
        grep -q '^PersistentKeepalive = 25$' "$T/r1.conf"; then
        pass "WireGuard config written 0600 with address, gateway peer and endpoint"
    else
        fail "WireGuard config wrong: $(cat "$T/r1.conf" | grep -v PrivateKey)"
    fi
    if [[ $(jf "$T/r1.json" agent.domain) == gw.example && $(jf "$T/r1.json" agent.internal_port) == 8090 ]]; then
        pass "response carries agent.domain and internal_port"
    else
        fail "response agent fields: $(cat "$T/r1.json")"
    fi
    if $WG_ENABLED; then
        PUB1=$(conf_pub "$T/r1.conf")
        if [[ $(peer_ip "$PUB1") == "$IP1/32" ]]; then
            pass "peer $PUB1 on $WG_IF with allowed-ips $IP1/32"
        else
            fail "peer not on the interface: $(wg show "$WG_IF" dump)"
        fi
    fi
else
    fail "CVM 1 could not register: $(cat "$T/r1.err")"
    IP1=none
fi

# ---- 2. same instance again, other instances ----------------------------------------------------
if register r1b c1 && [[ $(ip_of r1b) == "$IP1" ]]; then
    pass "same instance registering again keeps $IP1"
    if $WG_ENABLED; then
        PUB1B=$(conf_pub "$T/r1b.conf")
        if [[ $(peer_ip "$PUB1B") == "$IP1/32" && -z $(peer_ip "$PUB1") ]]; then
            pass "the new key replaced the old peer on $WG_IF"
        else
            fail "peers after re-registration: $(wg show "$WG_IF" dump)"
        fi
    fi
else
    fail "re-registration: $(cat "$T/r1b.err") $(cat "$T/r1b.json")"
fi
if register r1c cappok && [[ $(ip_of r1c) == "$IP1" ]]; then
    pass "a matching app id extension is accepted (same address)"
else
    fail "matching app id extension: $(cat "$T/r1c.err")"
fi
# the guest's checks of the gateway certificate (§4.3, kms-ratls §6.5)
if register r1d c1 "$T/root.pem" --gateway-app-id "00${GWAPP^^}ff" && [[ $(ip_of r1d) == "$IP1" ]]; then
    pass "guest: gateway app id contained (case-insensitive) in --gateway-app-id"
else
    fail "guest app id check: $(cat "$T/r1d.err")"
fi
if ! register r1e c1 "$T/root.pem" --gateway-app-id "$(hexrep 9b 20)" &&
    grep -q 'is not the expected gateway app id' "$T/r1e.err"; then
    pass "guest: refuses a gateway with another app id"
else
    fail "guest accepted a gateway with another app id: $(cat "$T/r1e.err")"
fi
if ! register r1f c1 "$T/other.pem" && grep -q 'does not chain to the CA' "$T/r1f.err"; then
    pass "guest: refuses a gateway certificate not from the KMS root CA"
else
    fail "guest trusted another CA: $(cat "$T/r1f.err")"
fi
if register r1g c1 "$T/other.pem" --gateway-app-id any && [[ $(ip_of r1g) == "$IP1" ]]; then
    pass "guest: --gateway-app-id any skips server verification (upstream's rule)"
else
    fail "guest any: $(cat "$T/r1g.err")"
fi
register r2 c2 || fail "CVM 2: $(cat "$T/r2.err")"
register r3 c3 || fail "CVM 3: $(cat "$T/r3.err")"
IP2=$(ip_of r2 2>/dev/null || echo none); IP3=$(ip_of r3 2>/dev/null || echo none)
if [[ $IP2 != "$IP1" && $IP3 != "$IP1" && $IP2 != "$IP3" && $IP2 == 10.8.0.5 && $IP3 == 10.8.0.6 ]]; then
    pass "different instances get different addresses ($IP1, $IP2, $IP3)"
else
    fail "addresses: $IP1 $IP2 $IP3"
fi
# the /29 has 10.8.0.0-7: .0 network, .1 gateway, .2-.3 reserved, .4-.6 used, .7 is left
# (the broadcast of the /29 but a host of the /24 network); then the range is exhausted
register r4 c4 || fail "CVM 4: $(cat "$T/r4.err")"
IP4=$(ip_of r4 2>/dev/null || echo none)
[[ $IP4 == 10.8.0.7 ]] && pass "fourth instance gets 10.8.0.7" || fail "fourth instance got $IP4"

# ---- 5. admin ------------------------------------------------------------------------------------
admin() { # METHOD [JSON] [AUTH-HEADER] -> body in $T/admin.out, prints status
    curl -s -o "$T/admin.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        ${3:+-H "$3"} --data-binary "${2:-{\}}" "http://127.0.0.1:$ADMIN_PORT/prpc/$1"
}
[[ $(admin Status) == 401 ]] && pass "Admin Status without a token: 401" || fail "Admin without token not refused"
[[ $(admin Status '{}' "Authorization: Bearer wrong") == 401 ]] && pass "Admin with a wrong token: 401" ||
    fail "Admin with a wrong token not refused"
[[ $(admin Status '{}' "Authorization: Bearer $TOKEN") == 200 ]] &&
    [[ $(python3 -c "import json; print(len(json.load(open('$T/admin.out'))['hosts']))") == 4 ]] &&
    pass "Admin Status with the token lists 4 hosts" || fail "Admin Status: $(cat "$T/admin.out")"
[[ $(admin GetMeta '{}' "X-Admin-Token: $TOKEN") == 200 ]] && grep -q '"registered":4' "$T/admin.out" &&
    pass "Admin GetMeta (X-Admin-Token): registered 4" || fail "GetMeta: $(cat "$T/admin.out")"
code=$(curl -s -o "$T/page.html" -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/?token=$TOKEN")
[[ $code == 200 ]] && grep -q "$INST1" "$T/page.html" && pass "status page with ?token=" ||
    fail "status page: $code"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/")
[[ $code == 401 ]] && pass "status page without a token: 401" || fail "status page without token: $code"

# ---- 6b. Info and /health ------------------------------------------------------------------------
info=$(curl -sk -X POST -H 'Content-Type: application/json' -d '{}' "$URL/prpc/Info")
[[ $(python3 -c "import json,sys; j=json.loads(sys.argv[1]); print(j['base_domain'], j['external_port'])" "$info") == "gw.example 443" ]] &&
    pass "Info: $info" || fail "Info: $info"
[[ $(curl -sk "$URL/health") == OK ]] && pass "/health" || fail "/health"

# ---- 4. refused callers ---------------------------------------------------------------------------
expect_refused() { # WHAT CERTNAME REGEX
    if register "neg-$2" "$2"; then
        fail "$1: registered ($(cat "$T/neg-$2.json"))"
    elif grep -Eq -- "$3" "$T/neg-$2.err"; then
        pass "$1: $(grep -Eo -- "$3" "$T/neg-$2.err" | head -1)"
    else
        fail "$1: error does not match /$3/: $(tail -n 1 "$T/neg-$2.err")"
    fi
}
expect_refused "tampered quote" ctamper 'invalid quote'
expect_refused "certificate from another CA (TLS handshake refused)" cother 'SSL|certificate|alert|handshake|not connected|reset by peer|Recv failure'
expect_refused "app id extension not matching the attestation" cappid 'app id mismatch'
expect_refused "no attestation and no app info" cnoatt 'No attestation provided'
curl -sk -o "$T/nocert.out" -X POST -H 'Content-Type: application/json' \
    -d '{"client_public_key":"'"$(python3 -c 'import base64;print(base64.b64encode(bytes(32)).decode())')"'"}' \
    "$URL/prpc/RegisterCvm" || true
grep -q 'client certificate required' "$T/nocert.out" && pass "no client certificate: refused" ||
    fail "no client certificate: $(cat "$T/nocert.out")"
# after all that, the registry still has exactly the 4 instances
[[ $(admin GetMeta '{}' "Authorization: Bearer $TOKEN") == 200 ]] && grep -q '"registered":4' "$T/admin.out" &&
    pass "refused callers left the registry unchanged" || fail "registry changed: $(cat "$T/admin.out")"

# ---- 3. restart: persisted (the gateway is SIGKILLed: committed registrations must survive) ---
kill -9 "$GW_PID" 2>/dev/null || true
wait "$GW_PID" 2>/dev/null || true
start_gw 2
URL="https://127.0.0.1:$PORT"
if register r2b c2 && [[ $(ip_of r2b) == "$IP2" ]]; then
    pass "after a restart instance 2 keeps $IP2"
else
    fail "after restart: $(cat "$T/r2b.err") $(cat "$T/r2b.json" 2>/dev/null)"
fi
if $WG_ENABLED; then
    n=$(wg show "$WG_IF" dump | tail -n +2 | wc -l)
    [[ $n == 4 ]] && pass "after a restart the interface has the 4 registered peers" ||
        fail "peers after restart: $(wg show "$WG_IF" dump)"
fi
# remove instance 3, then a new CVM (instance 3 again, fresh) gets the freed .6 and nothing else
[[ $(admin RemoveInstance "{\"instance_id\":\"$INST3\"}" "Authorization: Bearer $TOKEN") == 200 ]] &&
    pass "Admin RemoveInstance" || fail "RemoveInstance: $(cat "$T/admin.out")"
[[ $(admin GetInfo "{\"id\":\"$INST3\"}" "Authorization: Bearer $TOKEN") == 200 ]] &&
    grep -q '"found":false' "$T/admin.out" && pass "removed instance is gone" ||
    fail "GetInfo after remove: $(cat "$T/admin.out")"
if $WG_ENABLED; then
    PUB3=$(conf_pub "$T/r3.conf")
    [[ -z $(peer_ip "$PUB3") ]] && pass "removed instance's peer is off the interface" ||
        fail "peer of the removed instance still there"
fi
register r3b c3 && IP3B=$(ip_of r3b) || IP3B=none
[[ $IP3B == 10.8.0.6 ]] && pass "the freed address is reused ($IP3B), never a reserved one" ||
    fail "re-added instance 3 got $IP3B"
# all addresses ever handed out: distinct and never reserved
all="$IP1 $IP2 $IP3B $IP4"
if [[ $(echo $all | tr ' ' '\n' | sort -u | wc -l) == 4 ]] &&
    ! echo " $all " | grep -Eq ' 10\.8\.0\.(0|1|2|3) '; then
    pass "addresses distinct and not reserved: $all"
else
    fail "addresses: $all"
fi
# the range is full now: a fifth instance is refused with a clear error
TD5=$(make_td cvm5 "$APP2" "$CH" "$(hexrep 05 20)")
mint c5 "$TD5"
expect_refused "range exhausted" c5 'no free WireGuard address'
# a node marked down refuses registrations
[[ $(admin SetNodeStatus '{"id":0,"status":"down"}' "Authorization: Bearer $TOKEN") == 200 ]] || fail "SetNodeStatus"
expect_refused "node marked down" c1 'marked down'
[[ $(admin SetNodeStatus '{"id":0,"status":"up"}' "Authorization: Bearer $TOKEN") == 200 ]] || fail "SetNodeStatus up"
stop_gw

# ---- auth webhook: allows app 1, denies app 2 ----------------------------------------------------
HOOK_PORT=$(free_port)
cat >"$T/hook.py" <<PY
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        open('$T/hook.last', 'w').write(json.dumps(body))
        self.send_response(403 if body['app_id'] == '$APP2' else 200)
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(('127.0.0.1', $HOOK_PORT), H).serve_forever()
PY
python3 "$T/hook.py" >"$T/hook.log" 2>&1 &
PIDS+=($!)
wait_for 10 curl -s -o /dev/null "http://127.0.0.1:$HOOK_PORT/" || die "webhook did not start"
printf '[core.auth]\nenabled = true\nurl = "http://127.0.0.1:%s/"\n' "$HOOK_PORT" >>"$T/gateway.toml"
start_gw 3
URL="https://127.0.0.1:$PORT"
if register r1w c1 && [[ $(ip_of r1w) == "$IP1" ]] && [[ $(jf "$T/hook.last" instance_id) == "$INST1" ]]; then
    pass "auth webhook allows app 1 (it saw the instance id)"
else
    fail "webhook allow: $(cat "$T/r1w.err")"
fi
expect_refused "auth webhook denies app 2" c4 'denied by the auth webhook \(HTTP 403\)'
if $WG_ENABLED; then # the interface disappears under a running gateway: a clear error
    kill "$WGPID" 2>/dev/null || true
    wait "$WGPID" 2>/dev/null || true
    expect_refused "WireGuard interface gone" c1 'WireGuard unavailable: .*'"$WG_IF"
fi
stop_gw

# ---- recycle: instances without a handshake for longer than the timeout are removed -----------
python3 - "$T/gateway.toml" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read().replace('[core.wg]\nenabled = true', '[core.wg]\nenabled = false')
open(p, 'w').write(s + '[core.recycle]\ninterval = "1s"\ntimeout = "2s"\n')
PY
start_gw 4
n=0
until [[ $(admin GetMeta '{}' "Authorization: Bearer $TOKEN") == 200 ]] &&
    grep -q '"registered":0' "$T/admin.out"; do
    n=$((n + 1)); [[ $n -lt 50 ]] || break
    sleep 0.2
done
if grep -q '"registered":0' "$T/admin.out" && grep -q 'recycled instance' "$T/gateway.log"; then
    pass "recycle removed the instances that never had a handshake"
else
    fail "recycle: $(cat "$T/admin.out")"
fi
stop_gw

echo "# $FAILS failure(s)"
[[ $FAILS -eq 0 ]]
