#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The gateway's own attested certificates from its guest agent (spec host-side.md §4.1, §4.2;
# docs/gateway.md "Own certificates"), with the gateway as an app in a simulated TD
# (gateway_agent_stack.sh: tee-sim, dstack-kms with a policy allowing the gateway app,
# `dstack-util setup --no-data-disk`, dstack-guest-agent, dstack-gateway). Checked:
#   1. a missing agent socket: start-up fails and the error names the socket; --check refuses
#      cert_source "acme" and "agent" without base_domain;
#   2. core.rpc_domain: the RPC server certificate chains to the KMS root CA (from
#      `dstack kms meta`), names rpc_domain and the my_url host, carries the gateway's app id
#      (.1.3) and an attestation (.1.8); the [tls] files are 0600 and the CA file is the KMS
#      root; Info shows the app id;
#   3. cert_source = "agent": the proxy serves *.<base> chaining to the KMS root (RA-TLS leaf),
#      gateway.<base>/health, /app-info (the agent's Info: the gateway's app id and compose
#      hash), /acme-info a 404 JSON error;
#   4. renewal (agent_cert_validity = 12s, renewed with a third left) switches the certificate
#      while a slow download through the proxy that started before keeps going and completes;
#   5. Admin RenewCert answers {"renewed":true} once the new certificate is served, ReloadCert
#      {}, Status shows the app id; the agent gone: renewal fails (RenewCert says why), the
#      current certificate stays, retries back off (1 s, 2 s, ...), and the next renewal after
#      the agent is back succeeds;
#   6. RegisterCvm whose collateral fetch is slow (a PCCS proxy that sleeps 4 s) does not
#      block /health on the RPC server or a proxied request; the registration then succeeds;
#   7. no private key in the gateway log;
#   8. rpc_domain with cert_source "files": the RPC certificate only; RenewCert refuses.
#   9. the agent's default validity (backdated notBefore): renewed after 2/3 of the time left.
set -uo pipefail
. "$(dirname "$0")/gateway_agent_stack.sh"
gas_preflight
gas_init test_gw_agent_certs
ok() { echo "ok - $*"; }
fail() { gas_fail "$@"; }
PY=$GAS_PY

gas_start_sim
gas_start_kms
gas_setup_gateway_app
gas_start_agent
ok "tee-sim, KMS ($KURL), gateway app $GW_APP_ID measured by dstack-util setup, guest agent"

# ---- helpers ----------------------------------------------------------------------------------
# certs_of HOST:PORT SNI OUT: the chain the server sends, leaf first, as PEM
certs_of() {
    openssl s_client -connect "$1" -servername "$2" -showcerts </dev/null 2>/dev/null |
        sed -n '/-----BEGIN CERTIFICATE-----/,/-----END CERTIFICATE-----/p' >"$3"
    [ -s "$3" ]
}
# check_chain PEM APP_ID SAN...: the leaf chains to the KMS root (openssl verify, only the root
# trusted); app id (.1.3, "-" = not checked), attestation (.1.8), SANs
check_chain() {
    "$PY" - "$1" "$GAS/leaf.pem" "$GAS/rest.pem" <<'EOF'
import re, sys
pems = re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", open(sys.argv[1]).read(), re.S)
open(sys.argv[2], "w").write(pems[0] + "\n")
open(sys.argv[3], "w").write("\n".join(pems[1:]) + "\n")
EOF
    openssl verify -CAfile "$ROOT_PEM" -untrusted "$GAS/rest.pem" "$GAS/leaf.pem" >/dev/null || return 1
    "$PY" - "$@" <<'EOF'
import sys
from cryptography import x509
leaf = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
app, sans = sys.argv[2], sys.argv[3:]
names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
for s in sans:
    assert s in names, ("SAN", s, names)
ext = {e.oid.dotted_string: e.value for e in leaf.extensions}
assert "1.3.6.1.4.1.62397.1.8" in ext, "no attestation extension (.1.8)"
if app != "-":
    v = ext["1.3.6.1.4.1.62397.1.3"].value
    assert v in (bytes.fromhex(app), b"\x04\x14" + bytes.fromhex(app)), ("app id", v.hex())
print(leaf.serial_number)
EOF
}
serial_of() { # HOST:PORT SNI
    certs_of "$1" "$2" "$GAS/s.pem" && openssl x509 -in "$GAS/s.pem" -noout -serial
}
loaded_count() { grep -c "proxy certificate for \*\.$BASE from the guest agent loaded" "$GAS/gateway.log"; }
renewed_since() { [ "$(loaded_count)" -gt "$1" ]; }

# ---- 1. agent socket missing -------------------------------------------------------------------
REAL_SOCK=$AGENT_SOCK
AGENT_SOCK="$GAS/no-agent.sock"
gas_write_gateway_config "$GAS/bad.toml"
AGENT_SOCK=$REAL_SOCK
timeout 30 "$BIN/dstack-gateway" -c "$GAS/bad.toml" >"$GAS/bad-start.log" 2>&1
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "the gateway started without its agent (rc $rc)"
grep -q "core.agent_socket \"$GAS/no-agent.sock\": no such socket" "$GAS/bad-start.log" ||
    fail "start-up error does not name the socket: $(cat "$GAS/bad-start.log")"
ok "agent socket missing: start-up fails naming core.agent_socket \"$GAS/no-agent.sock\""

# config checks (--check needs no agent)
sed 's/^cert_source = "agent"/cert_source = "acme"/' "$GAS/bad.toml" >"$GAS/acme.toml"
"$BIN/dstack-gateway" -c "$GAS/acme.toml" --check >"$GAS/check-acme.log" 2>&1 &&
    fail "cert_source = \"acme\" accepted"
grep -q 'cert_source = "acme": ACME is not implemented' "$GAS/check-acme.log" || fail "acme: $(cat "$GAS/check-acme.log")"
grep -v '^base_domain' "$GAS/bad.toml" >"$GAS/nobase.toml"
"$BIN/dstack-gateway" -c "$GAS/nobase.toml" --check >"$GAS/check-nobase.log" 2>&1 &&
    fail "cert_source = \"agent\" without base_domain accepted"
grep -q 'cert_source = "agent" needs core.proxy.base_domain' "$GAS/check-nobase.log" ||
    fail "no base: $(cat "$GAS/check-nobase.log")"
ok "--check refuses cert_source = \"acme\" (not implemented) and \"agent\" without base_domain"

# ---- backends: a slow download and a quick page; a PCCS proxy that sleeps -----------------------
BP=$(gas_free_port)
"$PY" - "$BP" >"$GAS/backend.log" 2>&1 <<'EOF' &
import http.server, socketserver, sys, time, hashlib
CHUNK = bytes(range(256)) * 256  # 64 KiB
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        n, delay = (24, 0.5) if self.path == "/slow" else (1, 0)
        self.send_response(200)
        self.send_header("Content-Length", str(n * len(CHUNK)))
        self.end_headers()
        for _ in range(n):
            self.wfile.write(CHUNK); self.wfile.flush(); time.sleep(delay)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
EOF
GAS_PIDS+=("$!")
SLOW_PORT=$(gas_free_port)
"$PY" - "$SLOW_PORT" "$PCCS" "$GAS/slow-pccs.hits" >"$GAS/slow-pccs.log" 2>&1 <<'EOF' &
import http.server, socketserver, sys, time, urllib.request, urllib.error
port, upstream, hits = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        open(hits, "a").write(self.path + "\n")
        time.sleep(4)
        try:
            r = urllib.request.urlopen(upstream + self.path)
            code, hdrs, body = r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            code, hdrs, body = e.code, e.headers, e.read()
        self.send_response(code)
        for k, v in hdrs.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
S(("127.0.0.1", port), H).serve_forever()
EOF
GAS_PIDS+=("$!")
gas_wait 10 curl -sf "http://127.0.0.1:$BP/" || fail "backend did not start"

# ---- 2. the RPC server certificate -------------------------------------------------------------
GAS_GW_PCCS="http://127.0.0.1:$SLOW_PORT"
ADMIN_PORT=$(gas_free_port)
TOKEN=admin-$$-token
gas_write_gateway_config "$GAS/gateway.toml" 'agent_cert_validity = "12s"' "[core.admin]
enabled = true
address = \"127.0.0.1:$ADMIN_PORT\"
auth_token = \"$TOKEN\""
gas_start_gateway "$GAS/gateway.toml"
certs_of "127.0.0.1:$RPC_PORT" localhost "$GAS/rpc-chain.pem" || fail "no RPC server certificate"
check_chain "$GAS/rpc-chain.pem" "$GW_APP_ID" "gateway.$BASE" localhost >/dev/null ||
    fail "RPC certificate check"
openssl x509 -in "$GAS/rpc-chain.pem" -noout -subject | grep -q 'CN *= *dstack-gateway' ||
    fail "RPC certificate subject: $(openssl x509 -in "$GAS/rpc-chain.pem" -noout -subject)"
for f in rpc.key rpc.pem ca.pem; do
    [ "$(stat -c %a "$GAS/gwtls/$f")" = 600 ] || fail "$f mode $(stat -c %a "$GAS/gwtls/$f")"
done
[ "$(openssl x509 -in "$GAS/gwtls/ca.pem" -noout -fingerprint -sha256)" = \
    "$(openssl x509 -in "$ROOT_PEM" -noout -fingerprint -sha256)" ] || fail "tls.mutual.ca_certs is not the KMS root"
INFO=$(curl -sf --cacert "$ROOT_PEM" "https://localhost:$RPC_PORT/prpc/Info") || fail "Info over the agent-issued certificate"
[ "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["app_id"])' "$INFO")" = "$GW_APP_ID" ] ||
    fail "Info app_id: $INFO"
ST=$(curl -sf -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/prpc/Status?json") ||
    fail "Admin Status"
[ "$("$PY" -c 'import json,sys; print(json.loads(sys.argv[1])["app_id"])' "$ST")" = "$GW_APP_ID" ] ||
    fail "Status app_id: $ST"
ok "RPC certificate: chains to the KMS root (dstack kms meta), CN dstack-gateway, SANs gateway.$BASE + localhost, app id $GW_APP_ID (.1.3), attestation (.1.8); [tls] files 0600, CA = KMS root; Info.app_id, Status.app_id"

# ---- 3. the proxy certificate and gateway.<base> -------------------------------------------------
PX="127.0.0.1:$PROXY_PORT"
RES=(--resolve "gateway.$BASE:$PROXY_PORT:127.0.0.1" --resolve "localhost-$BP.$BASE:$PROXY_PORT:127.0.0.1")
certs_of "$PX" "gateway.$BASE" "$GAS/px-chain.pem" || fail "no proxy certificate"
check_chain "$GAS/px-chain.pem" - "*.$BASE" "$BASE" >/dev/null || fail "proxy certificate check"
[ "$(curl -sf --cacert "$ROOT_PEM" "${RES[@]}" "https://gateway.$BASE:$PROXY_PORT/health")" = OK ] ||
    fail "gateway.$BASE/health"
curl -sf --cacert "$ROOT_PEM" "${RES[@]}" "https://gateway.$BASE:$PROXY_PORT/app-info" >"$GAS/app-info.json" ||
    fail "gateway.$BASE/app-info"
"$PY" - "$GAS/app-info.json" "$GW_APP_ID" "$GW_COMPOSE_HASH" <<'EOF' || fail "app-info: $(head -c 300 "$GAS/app-info.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["app_id"] == sys.argv[2] and j["compose_hash"] == sys.argv[3], j
assert json.loads(j["tcb_info"])["compose_hash"] == sys.argv[3]
EOF
code=$(curl -s -o "$GAS/acme.json" -w '%{http_code}' --cacert "$ROOT_PEM" "${RES[@]}" "https://gateway.$BASE:$PROXY_PORT/acme-info")
[ "$code" = 404 ] && grep -q '"error":"ACME is not configured"' "$GAS/acme.json" ||
    fail "acme-info: $code $(cat "$GAS/acme.json")"
ok "proxy: *.$BASE chains to the KMS root (RA-TLS leaf); /health OK; /app-info = agent Info (app id, compose hash); /acme-info 404 \"ACME is not configured\""

# ---- 4. renewal during a slow download ----------------------------------------------------------
S0=$(serial_of "$PX" "gateway.$BASE") || fail "serial"
N0=$(loaded_count)
curl -sf --cacert "$ROOT_PEM" "${RES[@]}" -o "$GAS/slow.bin" "https://localhost-$BP.$BASE:$PROXY_PORT/slow" &
DL=$!
gas_wait 20 renewed_since "$N0" || fail "no renewal within 20 s"
S1=$(serial_of "$PX" "gateway.$BASE") || fail "serial after renewal"
[ "$S0" != "$S1" ] || fail "the served certificate did not change ($S0)"
kill -0 $DL 2>/dev/null || fail "the download finished before the renewal (test too fast)"
wait $DL || fail "the slow download broke across the certificate switch"
[ "$(stat -c %s "$GAS/slow.bin")" = $((24 * 65536)) ] || fail "download size $(stat -c %s "$GAS/slow.bin")"
certs_of "$PX" "gateway.$BASE" "$GAS/px-chain2.pem" && check_chain "$GAS/px-chain2.pem" - "*.$BASE" >/dev/null ||
    fail "renewed certificate check"
ok "renewal: served certificate $S0 -> $S1 while a 12 s download through the proxy (started before) completed intact"

# Admin RenewCert answers when the new certificate is in; ReloadCert re-reads file-backed ones
admin() { curl -s -o "$GAS/admin.json" -w '%{http_code}' -X POST -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN_PORT/prpc/$1?json"; }
S2=$(serial_of "$PX" "gateway.$BASE")
N2=$(loaded_count)
[ "$(admin RenewCert)" = 200 ] && grep -q '"renewed":true' "$GAS/admin.json" || fail "RenewCert: $(cat "$GAS/admin.json")"
[ "$(loaded_count)" -gt "$N2" ] || fail "RenewCert answered before the certificate was loaded"
[ "$(serial_of "$PX" "gateway.$BASE")" != "$S2" ] || fail "RenewCert: same certificate served"
[ "$(admin ReloadCert)" = 200 ] && [ "$(cat "$GAS/admin.json")" = "{}" ] || fail "ReloadCert: $(cat "$GAS/admin.json")"
ok "Admin RenewCert: {\"renewed\":true} once the new certificate is served; ReloadCert: {}"

# ---- 5. renewal failures keep the certificate and back off --------------------------------------
kill "$GAS_AGENT_PID"
wait "$GAS_AGENT_PID" 2>/dev/null
gas_wait 20 grep -q 'retry in 2s' "$GAS/gateway.log" || fail "no backoff after failed renewals"
grep -q 'proxy certificate renewal failed (the current certificate stays): guest agent at core.agent_socket' "$GAS/gateway.log" ||
    fail "renewal failure not logged"
SF=$(serial_of "$PX" "gateway.$BASE") || fail "no certificate served while the agent is gone"
[ "$(curl -sf --cacert "$ROOT_PEM" "${RES[@]}" "https://gateway.$BASE:$PROXY_PORT/health")" = OK ] ||
    fail "health while the agent is gone"
[ "$(admin RenewCert)" = 400 ] &&
    grep -q 'renewal failed (the current certificate stays): guest agent at core.agent_socket' "$GAS/admin.json" ||
    fail "RenewCert without the agent: $(cat "$GAS/admin.json")"
N1=$(loaded_count)
gas_start_agent
gas_wait 30 renewed_since "$N1" || fail "no renewal after the agent came back"
[ "$(serial_of "$PX" "gateway.$BASE")" != "$SF" ] || fail "certificate not replaced after recovery"
ok "agent gone: renewal failed (RenewCert says why), the certificate stayed ($SF), retries backed off (1 s, 2 s); renewed once the agent was back"

# ---- 6. a slow collateral fetch does not stall the loop ------------------------------------------
curl -sf --unix-socket "$AGENT_SOCK" -X POST -H 'Content-Type: application/json' \
    -d '{"subject":"cvm","usage_client_auth":true,"usage_ra_tls":true,"with_app_info":true}' \
    http://localhost/GetTlsKey >"$GAS/client.json" || fail "GetTlsKey for a client certificate"
"$PY" - "$GAS/client.json" "$GAS/client.pem" "$GAS/client.key" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write("".join(j["certificate_chain"]))
open(sys.argv[3], "w").write(j["key"])
EOF
WGPUB=$("$PY" -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
rm -f "$GAS/slow-pccs.hits"
T0=$(date +%s.%N)
curl -s --cacert "$ROOT_PEM" --cert "$GAS/client.pem" --key "$GAS/client.key" -X POST \
    -H 'Content-Type: application/json' -d "{\"client_public_key\":\"$WGPUB\"}" \
    "https://localhost:$RPC_PORT/prpc/RegisterCvm" >"$GAS/register.json" &
REG=$!
gas_wait 10 test -s "$GAS/slow-pccs.hits" || fail "the gateway did not fetch collateral from the slow PCCS"
H=$(curl -s -o "$GAS/h.txt" -w '%{time_total}' --cacert "$ROOT_PEM" "https://localhost:$RPC_PORT/health")
P=$(curl -s -o "$GAS/p.txt" -w '%{time_total}' --cacert "$ROOT_PEM" "${RES[@]}" "https://localhost-$BP.$BASE:$PROXY_PORT/")
"$PY" -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 1.5 and float(sys.argv[2]) < 1.5 else 1)' "$H" "$P" ||
    fail "/health took ${H}s, the proxied request ${P}s while RegisterCvm waited on collateral"
kill -0 $REG 2>/dev/null || fail "RegisterCvm finished before the checks (test too fast)"
[ "$(cat "$GAS/h.txt")" = OK ] || fail "/health: $(cat "$GAS/h.txt")"
[ "$(stat -c %s "$GAS/p.txt")" = 65536 ] || fail "proxied request: $(stat -c %s "$GAS/p.txt") bytes"
wait $REG
T1=$(date +%s.%N)
"$PY" - "$GAS/register.json" <<'EOF' || fail "RegisterCvm: $(cat "$GAS/register.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["wg"]["client_ip"] == "10.9.0.2", j
EOF
REG_S=$("$PY" -c "print(round($T1 - $T0, 2))")
"$PY" -c "import sys; sys.exit(0 if $REG_S >= 4 else 1)" || fail "RegisterCvm took only ${REG_S}s"
ok "RegisterCvm waiting ${REG_S}s on a slow collateral fetch: meanwhile /health ${H}s, proxied request ${P}s; then registered at 10.9.0.2"

# ---- 7. no key material in the log ---------------------------------------------------------------
grep -q 'PRIVATE KEY' "$GAS/gateway.log" && fail "a private key in the gateway log"
ok "no private key in the gateway log"

# ---- 8. rpc_domain alone (cert_source "files", no proxy certificate) ---------------------------------
kill "$GW_PID" && wait "$GW_PID" 2>/dev/null
mv "$GAS/gateway.log" "$GAS/gateway1.log"
sed -e 's/^cert_source = "agent"/cert_source = "files"/' -e '/^agent_cert_validity/d' \
    "$GAS/gateway.toml" >"$GAS/gateway-files.toml"
gas_start_gateway "$GAS/gateway-files.toml"
curl -sf --cacert "$ROOT_PEM" "https://localhost:$RPC_PORT/health" >/dev/null || fail "RPC with rpc_domain only"
[ "$(admin RenewCert)" = 400 ] && grep -q 'nothing to renew' "$GAS/admin.json" ||
    fail "RenewCert with cert_source files: $(cat "$GAS/admin.json")"
grep -q 'proxy certificate' "$GAS/gateway.log" && fail "a proxy certificate was requested with cert_source files"
ok "rpc_domain with cert_source = \"files\": RPC certificate from the agent, no proxy certificate, RenewCert \"nothing to renew\""

# ---- 9. the agent's own validity (no agent_cert_validity): backdated notBefore (1975) -----------
# A third of 1975..now+10y is already over; the renewal must count from now, not loop.
kill "$GW_PID" && wait "$GW_PID" 2>/dev/null
mv "$GAS/gateway.log" "$GAS/gateway2.log"
sed -e '/^agent_cert_validity/d' "$GAS/gateway.toml" >"$GAS/gateway-default.toml"
gas_start_gateway "$GAS/gateway-default.toml"
gas_wait 10 grep -q 'from the guest agent loaded; renewal in' "$GAS/gateway.log" || fail "no proxy certificate (default validity)"
sleep 3
[ "$(loaded_count)" = 1 ] || fail "default validity: the certificate was loaded $(loaded_count) times in 3 s (renewal loop)"
DELAY=$(grep -o 'renewal in [0-9]*s' "$GAS/gateway.log" | head -1 | tr -dc 0-9)
[ "${DELAY:-0}" -gt 86400 ] || fail "default validity: renewal in ${DELAY}s, want more than a day"
ok "the agent's default validity (notBefore 1975): one load, renewal in ${DELAY}s"
echo "PASS"
