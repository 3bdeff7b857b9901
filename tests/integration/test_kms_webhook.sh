#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# dstack-kms with the webhook backend (spec kms-ratls.md §5.1) against a tiny python3
# http.server: the KMS POSTs its BootInfo (camelCase, lowercase hex) to /bootAuth/kms for the
# self-authorization gate and GETs / for GetMeta; allow passes, deny fails with
# "KMS is not allowed: <reason>", HTTP 500, a reply missing a required key, and an unreachable
# webhook all fail closed.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"

MODE="$WORK/mode"
echo allow >"$MODE"
cat >"$WORK/hook.py" <<'EOF'
import http.server, json, sys
mode_file, log_file, port_file = sys.argv[1], sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def reply(self, code, obj):
        body = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        if self.path != "/":
            return self.reply(404, {})
        self.reply(200, {"status": "ok", "kmsContractAddr": "0x1234", "gatewayAppId": "gw-hook",
                         "chainId": 31337, "appImplementation": "0x5678",
                         "appAuthImplementation": "0x5678"})
    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        with open(log_file, "a") as f:
            f.write(json.dumps({"path": self.path, "ua": self.headers.get("User-Agent"),
                                "body": json.loads(body)}) + "\n")
        mode = open(mode_file).read().strip()
        if mode == "allow":
            self.reply(200, {"isAllowed": True, "gatewayAppId": "gw-hook", "reason": ""})
        elif mode == "deny":
            self.reply(200, {"isAllowed": False, "gatewayAppId": "", "reason": "not on the list"})
        elif mode == "500":
            self.reply(500, {"isAllowed": True, "gatewayAppId": "", "reason": ""})
        elif mode == "nokey":
            self.reply(200, {"isAllowed": True, "reason": ""})
        else:
            self.reply(200, b"not json")
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(port_file, "w").write(str(s.server_address[1]))
s.serve_forever()
EOF
python3 "$WORK/hook.py" "$MODE" "$WORK/hook.jsonl" "$WORK/hook.port" &
PIDS+=("$!")
for _ in $(seq 50); do [ -s "$WORK/hook.port" ] && break; sleep 0.1; done
HOOK="http://127.0.0.1:$(cat "$WORK/hook.port")"

start_kms a --dev --state-dir "$WORK/state" --listen 127.0.0.1:0 --webhook "$HOOK" ||
    fail "KMS did not start"
APP='{"app_id":"3333333333333333333333333333333333333333"}'

out=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP")
[ "$(cat "$WORK/status")" = 200 ] || fail "allow: $out"
python3 - "$WORK/hook.jsonl" "$(jself a mrAggregated)" <<'EOF' || fail "webhook request body"
import json, re, sys
reqs = [json.loads(l) for l in open(sys.argv[1])]
r = reqs[-1]
assert r["path"] == "/bootAuth/kms", r["path"]
assert r["ua"].startswith("dstack-kms/"), r["ua"]
b = r["body"]
keys = ["teeVariant", "appId", "composeHash", "instanceId", "deviceId", "keyProviderInfo",
        "mrSystem", "mrAggregated", "osImageHash", "tcbStatus", "advisoryIds"]
assert sorted(b) == sorted(keys), sorted(b)
assert b["teeVariant"] == "dstack-tdx"
for k in keys[1:9]:
    assert re.fullmatch(r"[0-9a-f]*", b[k]), (k, b[k])
assert len(b["appId"]) == 40 and len(b["mrAggregated"]) == 64 and len(b["deviceId"]) == 64
assert b["mrAggregated"] == sys.argv[2]
assert bytes.fromhex(b["keyProviderInfo"]).startswith(b'{"name":')
assert b["tcbStatus"] == "UpToDate" and b["advisoryIds"] == []
EOF
ok "allow: POST /bootAuth/kms with the BootInfo (camelCase keys, lowercase hex, User-Agent)"

META=$(rpc "$PORT_a" GetMeta)
[ "$(jget "$META" gateway_app_id)" = gw-hook ] || fail "GetMeta gateway_app_id: $META"
[ "$(jget "$META" chain_id)" = 31337 ] || fail "GetMeta chain_id: $META"
[ "$(jget "$META" kms_contract_address)" = 0x1234 ] || fail "GetMeta contract: $META"
[ "$(jget "$META" app_auth_implementation)" = 0x5678 ] || fail "GetMeta impl: $META"
ok "GetMeta takes gateway/contract/chain from GET /"

denied() { # mode expected
    echo "$1" >"$MODE"
    local out
    out=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP")
    [ "$(cat "$WORK/status")" = 400 ] || fail "$1: not refused: $out"
    echo "$out" | has "$2" || fail "$1: want '$2', got $out"
}
denied deny "KMS is not allowed: not on the list"
denied 500 "auth webhook answered HTTP 500"
denied nokey "\\\"gatewayAppId\\\" missing"
denied garbage "invalid auth webhook reply"
out=$(rpc "$PORT_a" GetTempCaCert)
echo "$out" | has "invalid auth webhook reply" || fail "GetTempCaCert not gated: $out"
ok "deny carries the reason; HTTP 500, missing key, non-JSON fail closed"

echo allow >"$MODE"
rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP" >/dev/null
[ "$(cat "$WORK/status")" = 200 ] || fail "no decision cache: allow again"
kill "${PIDS[0]}"
wait "${PIDS[0]}" 2>/dev/null || true
out=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP")
echo "$out" | has "auth webhook request failed" || fail "unreachable webhook: $out"
out=$(rpc "$PORT_a" GetMeta)
echo "$out" | has "failed to get auth info" || fail "GetMeta with the webhook down: $out"
ok "unreachable webhook: trusted calls and GetMeta fail closed"
echo "all dstack-kms webhook tests passed"
