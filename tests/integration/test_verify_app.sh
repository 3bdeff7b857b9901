#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# `dstack verify app` end to end (docs/verify.md): the setup of test_sandbox_containers.sh
# (dstack-tee-sim + PCCS, dstack-kms --dev, dstack-vmm with the sandbox backend and the
# dstack-guest image, examples/hello with its images in the host share). Once the app is
# booted, `dstack verify app APP_ID --insecure-allow-simulated --json` fetches the attestation
# through the VMM (ProxiedGuestApi GetAttestation) with a fresh nonce and verifies it: exit 0,
# its compose_hash is SHA-256 of the deployed app-compose.json, app_id and vm_id match, the
# quote's report_data is SHA-512("dstack-verify-app:" || nonce), and the readable form prints the chain of trust and the loud
# simulated warning. Negative: without --insecure-allow-simulated it fails closed at root_ca;
# an unknown app id fails naming the find step; an attestation replayed by a fake VMM (a
# recorded GetQuote answer for another nonce) fails at report_data; a VMM that lies about the
# app id fails at app_id. Needs root and docker.io + docker-compose (exit 77 otherwise).
set -u

. "$(dirname "$0")/sandbox_stack.sh"
sbx_preflight
sbx_init test_verify_app

sbx_build_images
sbx_start_sim
start_kms kms.log

HOST_PORT=$(free_port)
sbx_start_vmm
sbx_hello_compose

CLI=("$BIN/dstack")
GREETING="hi-from-encrypted-env-$RANDOM"
echo "GREETING=$GREETING" >"$WORK/app.env"
T0=$(date +%s.%N)
"${CLI[@]}" deploy --name hello --image dstack-guest-0.5.0 --compose "$HELLO" \
    --vcpu 2 --memory 1G --disk 1 --port "tcp:$HOST_PORT:8080" --kms-url "https://$GW:$KMS_PORT" \
    --env-file "$WORK/app.env" --stopped --json >"$WORK/deploy.json" 2>"$WORK/deploy.err" ||
    { cat "$WORK/deploy.err"; fail "dstack deploy"; }
VM_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/deploy.json")
APP_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["app_id"])' "$WORK/deploy.json")
# Images are delivered in the host share (read-only in the guest), not in the measured image.
cp "$WORK/hello-images.tar" "$WORK/run/$VM_ID/shared/images.tar" || fail "copy images.tar"
"${CLI[@]}" start "$VM_ID" >/dev/null || fail "dstack start"
echo "ok - deployed $VM_ID (app $APP_ID), started"

PCCS="http://127.0.0.1:$PCCS_PORT"
booted="" st=""
for _ in $(seq 1 1200); do
    "${CLI[@]}" info "$VM_ID" --json >"$WORK/info.json" 2>/dev/null || true
    st=$(python3 -c 'import json,sys; i=json.load(open(sys.argv[1]))
print("%s|%s" % (i.get("boot_progress") or "", i.get("boot_error") or ""))' "$WORK/info.json" 2>/dev/null)
    case "$st" in
        "booted|") booted=1; break ;;
        *"|"?*) fail "boot error: $st" ;;
    esac
    sleep 0.1
done
[ -n "$booted" ] || fail "not booted: $st"
echo "ok - boot_progress booted"

# 1. verify app, JSON
T1=$(date +%s.%N)
"${CLI[@]}" verify app "$APP_ID" --vmm-url "unix:$WORK/vmm.sock" --pccs-url "$PCCS" \
    --insecure-allow-simulated --json >"$WORK/v.json" 2>"$WORK/v.err"
rc=$?
T2=$(date +%s.%N)
[ $rc = 0 ] || { cat "$WORK/v.err"; head -c 2000 "$WORK/v.json"; fail "verify app: exit $rc, want 0"; }
WANT_HASH=$(sha256sum "$WORK/run/$VM_ID/shared/app-compose.json" | cut -d' ' -f1)
python3 - "$WORK/v.json" "$APP_ID" "$VM_ID" "$WANT_HASH" <<'PY' || fail "verify app JSON"
import json, sys
v = json.load(open(sys.argv[1]))
app, vm, want = sys.argv[2].lower(), sys.argv[3], sys.argv[4]
assert v["ok"] is True, v.get("error")
assert "failed_step" not in v, v["failed_step"]
assert v["simulated"] is True and v["quote"]["simulated"] is True
assert v["app_id"] == app and v["app_info"]["app_id"] == app, (v["app_id"], v["app_info"]["app_id"])
assert v["vm_id"] == vm
assert v["compose_hash"] == want and v["app_info"]["compose_hash"] == want, (v["compose_hash"], want)
import hashlib
assert len(v["nonce"]) == 64
rd = hashlib.sha512(b"dstack-verify-app:" + bytes.fromhex(v["nonce"])).hexdigest()
assert v["quote"]["report"]["report_data"] == rd == v["expected_report_data"]
assert all(r["ok"] for r in v["rtmrs"]) and len(v["rtmrs"]) == 4
assert v["app_info"]["key_provider"]["name"] == "kms", v["app_info"]["key_provider"]
assert len(v["app_info"]["instance_id"]) > 0 and len(v["app_info"]["os_image_hash"]) == 64
PY
grep -q "SIMULATED TEE" "$WORK/v.err" || fail "no loud simulated warning on stderr: $(cat "$WORK/v.err")"
echo "ok - verify app --json: ok, compose_hash = sha256(app-compose.json), app/vm id, nonce in report_data, RTMRs replayed, key provider kms"
python3 -c 'import sys; a,b=map(float,sys.argv[1:]); print("verify app took %.0f ms" % ((b-a)*1000))' "$T1" "$T2"

# 2. readable form: the chain of trust; two runs use different nonces
"${CLI[@]}" verify app "$APP_ID" --vmm-url "unix:$WORK/vmm.sock" --pccs-url "$PCCS" \
    --insecure-allow-simulated >"$WORK/v.txt" 2>"$WORK/v2.err" || { cat "$WORK/v.txt" "$WORK/v2.err"; fail "verify app (text)"; }
for want in "chain of trust for app $APP_ID" "fresh nonce in report_data: bound" "compose hash / app id:     $WANT_HASH / $APP_ID" \
    "key provider (KMS id):     kms" "result: VERIFIED" "proves NOTHING"; do
    grep -qF "$want" "$WORK/v.txt" || { cat "$WORK/v.txt"; fail "text output lacks '$want'"; }
done
"${CLI[@]}" verify app "$APP_ID" --pccs-url "$PCCS" --insecure-allow-simulated --json >"$WORK/v3.json" 2>/dev/null ||
    fail "verify app with DSTACK_VMM_URL"
N1=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nonce"])' "$WORK/v.json")
N3=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["nonce"])' "$WORK/v3.json")
[ "$N1" != "$N3" ] || fail "two runs used the same nonce"
echo "ok - text output shows the chain of trust; DSTACK_VMM_URL works; nonces differ per run"

# 3. fail closed without --insecure-allow-simulated: the root CA step
"${CLI[@]}" verify app "$APP_ID" --pccs-url "$PCCS" --json >"$WORK/n.json" 2>"$WORK/n.err"
rc=$?
[ $rc = 1 ] || fail "without --insecure-allow-simulated: exit $rc, want 1"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["ok"] is False and v["failed_step"]=="root_ca", v.get("failed_step")' \
    "$WORK/n.json" || fail "without --insecure-allow-simulated: failed_step not root_ca"
grep -q "FAILED at step root_ca" "$WORK/n.err" || fail "stderr does not name root_ca: $(cat "$WORK/n.err")"
echo "ok - without --insecure-allow-simulated: exit 1, failed_step root_ca"

# 4. unknown app id; malformed app id
"${CLI[@]}" verify app 00112233445566778899aabbccddeeff00112233 --pccs-url "$PCCS" \
    --insecure-allow-simulated >/dev/null 2>"$WORK/u.err"
rc=$?
[ $rc = 1 ] && grep -q "find VM: no VM of app 00112233445566778899aabbccddeeff00112233 on the VMM" "$WORK/u.err" ||
    fail "unknown app: exit $rc, $(cat "$WORK/u.err")"
"${CLI[@]}" verify app not-hex --pccs-url "$PCCS" >/dev/null 2>"$WORK/u2.err"
rc=$?
[ $rc = 2 ] && grep -q "APP_ID: expected hex" "$WORK/u2.err" || fail "bad app id: exit $rc, $(cat "$WORK/u2.err")"
"${CLI[@]}" verify app "$APP_ID" --insecure-allow-simulated >/dev/null 2>"$WORK/u3.err"
rc=$?
[ $rc = 2 ] && grep -q "needs --pccs-url" "$WORK/u3.err" || fail "simulated without pccs: exit $rc, $(cat "$WORK/u3.err")"
echo "ok - unknown app id: exit 1 naming the find step; bad APP_ID / missing --pccs-url: exit 2"

# 5. ProxiedGuestApi GetAttestation input checks; the report data is derived from the nonce,
# never the caller's bytes (no quotes over arbitrary report data for VMM API clients)
ga() { curl -s --unix-socket "$WORK/vmm.sock" -X POST "http://localhost/guest/GetAttestation?json" -d "$1"; }
OUT=$(ga "{\"id\":\"$VM_ID\",\"nonce\":\"$(printf 'ab%.0s' $(seq 65))\"}")
case "$OUT" in *"nonce: expected hex of 1 to 64 bytes"*) ;; *) fail "GetAttestation 65 bytes: $OUT" ;; esac
OUT=$(ga "{\"id\":\"$VM_ID\",\"report_data\":\"00\"}")
case "$OUT" in *"nonce: expected hex"*) ;; *) fail "GetAttestation without nonce: $OUT" ;; esac
OUT=$(ga '{"id":"nope","nonce":"00"}')
case "$OUT" in *"VM not found"*) ;; *) fail "GetAttestation unknown VM: $OUT" ;; esac
OUT=$(curl -s --unix-socket "$WORK/vmm.sock" -X POST "http://localhost/guest/GetQuote?json" -d "{\"id\":\"$VM_ID\",\"report_data\":\"00\"}")
case "$OUT" in *'"quote"'*) fail "the VMM relays raw GetQuote: ${OUT:0:100}" ;; esac
ga "{\"id\":\"$VM_ID\",\"nonce\":\"$(printf '22%.0s' $(seq 64))\"}" >"$WORK/ga.json"
python3 -c 'import json,sys,hashlib; v=json.load(open(sys.argv[1])); assert v["report_data"] == hashlib.sha512(b"dstack-verify-app:" + b"\x22"*64).hexdigest(), v.get("report_data")' \
    "$WORK/ga.json" || fail "GetAttestation report_data is not SHA-512(tag:nonce)"
echo "ok - GetAttestation: report_data = SHA-512(\"dstack-verify-app:\" || nonce); refuses bad nonces and unknown VMs; no raw GetQuote"

# 6. replay: a fake VMM that answers with an attestation recorded for another nonce, and one
# that lies about which VM runs the app.
curl -sf --unix-socket "$WORK/vmm.sock" -X POST "http://localhost/guest/GetAttestation?json" \
    -d "{\"id\":\"$VM_ID\",\"nonce\":\"$(printf '11%.0s' $(seq 32))\"}" >"$WORK/old.json" ||
    fail "recording an attestation"
cat >"$WORK/fake_vmm.py" <<'PY'
# A lying VMM. replay: answers GetAttestation with a recorded attestation. proxy: forwards it
# (with the caller's nonce) to the real VMM's VM, but claims it runs app_id.
import http.server, json, socket, sys
port_file, mode, old, app_id, real_sock, real_vm = sys.argv[1], sys.argv[2], open(sys.argv[3]).read(), sys.argv[4], sys.argv[5], sys.argv[6]
def real_get_quote(req):
    req["id"] = real_vm
    body = json.dumps(req).encode()
    s = socket.socket(socket.AF_UNIX); s.connect(real_sock)
    s.sendall(b"POST /guest/GetAttestation?json HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
    data = b""
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
    return data.split(b"\r\n\r\n", 1)[1].decode()
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def do_POST(self):
        req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
        if self.path.startswith("/prpc/Status"):
            body = json.dumps({"vms": [{"id": "fake", "app_id": app_id, "status": "running"}]})
        elif self.path.startswith("/guest/GetAttestation"):
            body = old if mode == "replay" else real_get_quote(req)
        else:
            self.send_response(404); self.end_headers(); return
        b = body.encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(port_file, "w").write(str(s.server_address[1]))
s.serve_forever()
PY
start_fake() {
    rm -f "$WORK/fake.port"
    python3 "$WORK/fake_vmm.py" "$WORK/fake.port" "$1" "$WORK/old.json" "$2" "$WORK/vmm.sock" "$VM_ID" &
    FAKE_PID=$!
    for _ in $(seq 100); do [ -s "$WORK/fake.port" ] && break; sleep 0.05; done
    FAKE="http://127.0.0.1:$(cat "$WORK/fake.port")"
}
stop_fake() { kill "$FAKE_PID"; wait "$FAKE_PID" 2>/dev/null; FAKE_PID=""; }
start_fake replay "$APP_ID"
"${CLI[@]}" verify app "$APP_ID" --vmm-url "$FAKE" --pccs-url "$PCCS" --insecure-allow-simulated \
    --json >"$WORK/r.json" 2>"$WORK/r.err"
rc=$?
stop_fake
[ $rc = 1 ] || fail "replayed attestation: exit $rc, want 1"
python3 -c 'import json,sys; v=json.load(open(sys.argv[1])); assert v["ok"] is False and v["failed_step"]=="report_data", v.get("failed_step"); assert v["quote"]["ok"] is True' \
    "$WORK/r.json" || fail "replayed attestation: failed_step not report_data"
grep -q "FAILED at step report_data" "$WORK/r.err" || fail "replay: stderr $(cat "$WORK/r.err")"
OTHER_APP=00112233445566778899aabbccddeeff00112233
start_fake proxy "$OTHER_APP"
"${CLI[@]}" verify app "$OTHER_APP" --vmm-url "$FAKE" --pccs-url "$PCCS" --insecure-allow-simulated \
    --json >"$WORK/a.json" 2>/dev/null
rc=$?
stop_fake
[ $rc = 1 ] || fail "wrong app: exit $rc, want 1"
python3 - "$WORK/a.json" "$APP_ID" "$OTHER_APP" <<'PY' || fail "wrong app: $(head -c 400 "$WORK/a.json")"
import json, sys
v = json.load(open(sys.argv[1]))
assert v["ok"] is False and v["failed_step"] == "app_id", v.get("failed_step")
assert v["error"] == "app_id: the event log declares app %s, not %s" % (sys.argv[2], sys.argv[3]), v["error"]
assert v["quote"]["report"]["report_data"] == v["expected_report_data"]
PY
echo "ok - a replayed attestation fails at report_data (its quote valid); a VMM lying about the app fails at app_id"

# 7. ShutdownVm of a sandbox (`dstack stop`): init stops the app and exits, the VM stays stopped
PID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
"${CLI[@]}" stop "$VM_ID" --wait --timeout 40 >/dev/null 2>"$WORK/stop.err" || fail "dstack stop: $(cat "$WORK/stop.err")"
! kill -0 "$PID" 2>/dev/null || fail "the guest's init still runs after ShutdownVm"
for _ in $(seq 1 50); do grep -q "engine stopped" "$WORK/run/$VM_ID/serial.log" && break; sleep 0.1; done
grep -q "engine stopped" "$WORK/run/$VM_ID/serial.log" || fail "ShutdownVm: init did not stop the engine"
python3 -c 'import json,sys; assert json.load(open(sys.argv[1])) == {"started": False}' "$WORK/run/$VM_ID/vm-state.json" ||
    fail "ShutdownVm: vm-state.json $(cat "$WORK/run/$VM_ID/vm-state.json")"
"${CLI[@]}" verify app "$APP_ID" --pccs-url "$PCCS" --insecure-allow-simulated >/dev/null 2>"$WORK/s.err"
rc=$?
[ $rc = 1 ] && grep -q "find VM: app $APP_ID has 1 VM(s) but none is running" "$WORK/s.err" ||
    fail "verify app of a stopped app: exit $rc, $(cat "$WORK/s.err")"
echo "ok - ShutdownVm (dstack stop): graceful, engine stopped, state stopped; verify app then names the find step"
echo "PASS"
