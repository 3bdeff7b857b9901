#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Onboarding against a network attacker (spec kms-ratls.md §2.4): the new KMS checks the
# source's attestation on the GetTempCaCert connection and then fetches the root keys with
# GetKmsKey on a second connection. An attacker on the path forwards the first connection to
# the real source (so the attestation verifies) and answers the second one itself with its own
# TLS certificate and its own "root keys". The new KMS must refuse them: the GetKmsKey server
# certificate has to be the attested one.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"
command -v openssl >/dev/null || { echo "SKIP: openssl not installed"; exit 77; }

ob() { # port method json
    curl -s -o "$WORK/body" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
        --data-binary "$3" "http://127.0.0.1:$1/prpc/$2" >"$WORK/status" || true
    cat "$WORK/body"
}

# --- A: the real source, allowing any KMS (dev auth)
start_kms a --dev --state-dir "$WORK/a" --listen 127.0.0.1:0 || fail "A did not start"

# --- the attacker: relay connection 1 to A, answer connection 2 with its own keys
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=mitm \
    -keyout "$WORK/mitm.key" -out "$WORK/mitm.crt" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/evil-ca.key" 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$WORK/evil-tmp.key" 2>/dev/null
EVIL_K256=1111111111111111111111111111111111111111111111111111111111111111
cat >"$WORK/mitm.py" <<'EOF'
import json, socket, ssl, sys, threading
upstream, work, k256 = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(8)
open(work + "/mitm.port", "w").write(str(ls.getsockname()[1]))
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d: break
            b.sendall(d)
    except OSError: pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
def relay(c):
    u = socket.create_connection(("127.0.0.1", upstream))
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)
def fake(c):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(work + "/mitm.crt", work + "/mitm.key")
    ctx.verify_mode = ssl.CERT_NONE  # B's client certificate is not checked
    try:
        t = ctx.wrap_socket(c, server_side=True)
    except (ssl.SSLError, OSError):
        return
    data = b""
    while b"\r\n\r\n" not in data:
        d = t.recv(65536)
        if not d: return
        data += d
    head, body = data.split(b"\r\n\r\n", 1)
    n = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"): n = int(line.split(b":")[1])
    while len(body) < n:
        body += t.recv(65536)
    open(work + "/mitm.hit", "w").write(head.split(b"\r\n")[0].decode())
    resp = json.dumps({"temp_ca_key": open(work + "/evil-tmp.key").read(),
                       "keys": [{"ca_key": open(work + "/evil-ca.key").read(), "k256_key": k256}]})
    t.sendall(("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
               "Connection: close\r\n\r\n%s" % (len(resp), resp)).encode())
    t.close()
count = 0
while True:
    c, _ = ls.accept()
    count += 1
    threading.Thread(target=relay if count == 1 else fake, args=(c,), daemon=True).start()
EOF
python3 "$WORK/mitm.py" "$PORT_a" "$WORK" "$EVIL_K256" >"$WORK/mitm.out" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do [ -s "$WORK/mitm.port" ] && break; sleep 0.1; done
MPORT=$(cat "$WORK/mitm.port")
[ -n "$MPORT" ] || fail "attacker relay did not start"

# --- B: a new KMS onboarding from "A" through the attacker
DSTACK_KMS_DEV_INSTANCE=b start_kms b --dev --state-dir "$WORK/b" --listen 127.0.0.1:0 \
    --onboard-listen 127.0.0.1:0 || fail "B did not start"
out=$(ob "$OPORT_b" Onboard "{\"source_url\":\"https://127.0.0.1:$MPORT\",\"domain\":\"kms-b.example\"}")
[ -s "$WORK/mitm.hit" ] || fail "the attack did not reach its second step: $out"
grep -q 'GetKmsKey' "$WORK/mitm.hit" || fail "second connection was not GetKmsKey"
[ "$(cat "$WORK/status")" = 400 ] || fail "onboarded from an unattested server: $out"
echo "$out" | has 'presented a different certificate than the attested one' ||
    fail "refusal reason: $out"
[ -e "$WORK/b/root-ca.key" ] && fail "B stored the attacker's keys"
[ -e "$WORK/b/root-k256.key" ] && fail "B stored the attacker's k256 key"
ok "keys from a server other than the attested source are refused"

# --- the same source reached directly still onboards (the check pins, it does not break)
out=$(ob "$OPORT_b" Onboard "{\"source_url\":\"https://127.0.0.1:$PORT_a\",\"domain\":\"kms-b.example\"}")
[ "$(cat "$WORK/status")" = 200 ] || fail "direct onboarding: $out"
cmp -s "$WORK/a/root-k256.key" "$WORK/b/root-k256.key" || fail "root k256 keys differ"
ok "direct onboarding from the attested source still works"
echo "all dstack-kms onboarding MitM tests passed"
