#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# dstack-vmm API end to end (docs/vmm.md, spec host-side.md §1.3-§1.6, §1.12): a real
# dstack-vmm on a free TCP port and a Unix socket, token auth on, a temp run dir and an image
# dir with a fake guest image (metadata.json + dummy kernel/initrd/bios + digest.txt). A Python
# stdlib client (vmm_api_client.py) sends requests exactly as upstream's vmm-cli.py does
# (POST /prpc/<Method>?json, Content-Type: application/json, Basic auth; GET /logs?...) and
# checks every answer and the files on disk: lsvm, lsimage, compose, deploy (stopped, with
# ports), info, logs, stop, start (the clear no-backend error, with cvm.qemu_path pointing
# nowhere; a real start when QEMU is installed), update-app-compose, remove, host API Notify,
# ReloadVms, a restart; and bad inputs (names, images, port conflicts within and across VMs,
# malformed JSON, oversized compose, disk shrink, ...) must fail with their specific error and
# leave the run dir byte-for-byte unchanged.
set -u

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
VMMD="$BIN/dstack-vmm"
[ -x "$VMMD" ] || { echo "FAIL: $VMMD not built"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }

WORK=$(mktemp -d /tmp/test_vmm_api.XXXXXX)
export XDG_RUNTIME_DIR="$WORK/xdg" # the VMM's discovery file goes here
mkdir -p "$XDG_RUNTIME_DIR"
VMM_PID=""
cleanup() {
    if [ -n "$VMM_PID" ]; then
        kill "$VMM_PID" 2>/dev/null
        wait "$VMM_PID" 2>/dev/null
    fi
    # QEMU processes of the optional real-start step run in their own session
    for f in "$WORK"/run*/*/vm.pid; do
        [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---- fake guest image ---------------------------------------------------------------------------
IMG="$WORK/images/dstack-0.5.3"
mkdir -p "$IMG" "$WORK/images/broken" "$WORK/run"
printf 'kernel' >"$IMG/bzImage"
printf 'initrd' >"$IMG/initramfs.cpio.gz"
printf 'bios' >"$IMG/ovmf.fd"
cat >"$IMG/metadata.json" <<'JSON'
{"bios": "ovmf.fd", "kernel": "bzImage", "cmdline": "console=ttyS0 init=/init panic=1", "initrd": "initramfs.cpio.gz", "version": "0.5.3", "git_revision": "abc", "shared_ro": true, "is_dev": false}
JSON
(cd "$IMG" && sha256sum ovmf.fd bzImage initramfs.cpio.gz metadata.json >sha256sum.txt &&
    sha256sum sha256sum.txt | cut -c1-64 >digest.txt)
# an image whose kernel escapes its directory: must not be listed or deployable
printf '{"kernel": "../dstack-0.5.3/bzImage", "initrd": "x"}' >"$WORK/images/broken/metadata.json"

PORT=$(free_port)
KMS_PORT=$(free_port) # nothing listens there
TOKEN=test-token-$RANDOM$RANDOM
write_config() { # $1 = config path, $2 = extra [cvm] lines
    cat >"$1" <<TOML
address = "unix:$WORK/vmm.sock"
listen = ["tcp:127.0.0.1:$PORT"]
run_path = "$WORK/run"
kms_url = "http://127.0.0.1:$KMS_PORT"
node_name = "test-node"

[image]
path = "$WORK/images"

[cvm]
cid_start = 40000
cid_pool_size = 50
$2

[cvm.port_mapping]
enabled = true
address = "127.0.0.1"
range = [{ protocol = "tcp", from = 20000, to = 20999 }, { protocol = "udp", from = 30000, to = 30010 }]

[cvm.auto_restart]
enabled = false

[auth]
enabled = true
tokens = ["$TOKEN"]
TOML
}
write_config "$WORK/vmm.toml" 'qemu_path = "/nonexistent/qemu-system-x86_64"'

start_vmm() { # $1 = config
    "$VMMD" -c "$1" >>"$WORK/vmm.log" 2>&1 &
    VMM_PID=$!
    for _ in $(seq 1 200); do
        [ -S "$WORK/vmm.sock" ] && python3 -c "import socket;s=socket.socket();s.connect(('127.0.0.1',$PORT))" 2>/dev/null && return 0
        kill -0 "$VMM_PID" 2>/dev/null || { echo "FAIL: dstack-vmm exited"; cat "$WORK/vmm.log"; exit 1; }
        sleep 0.05
    done
    echo "FAIL: dstack-vmm did not come up"
    exit 1
}
stop_vmm() {
    kill "$VMM_PID" && wait "$VMM_PID" 2>/dev/null
    VMM_PID=""
}

# --check: good config passes, unknown key / bad range fails with the key named
"$VMMD" -c "$WORK/vmm.toml" --check >/dev/null || { echo "FAIL: --check on a good config"; exit 1; }
printf 'bogus_key = 1\n' >"$WORK/bad.toml"
out=$("$VMMD" -c "$WORK/bad.toml" --check 2>&1) && { echo "FAIL: unknown key accepted"; exit 1; }
echo "$out" | grep -q bogus_key || { echo "FAIL: unknown key not named: $out"; exit 1; }
printf '[cvm.port_mapping]\nrange = [{protocol = "tcp", from = 9, to = 3}]\n' >"$WORK/bad2.toml"
out=$("$VMMD" -c "$WORK/bad2.toml" --check 2>&1) && { echo "FAIL: from > to accepted"; exit 1; }
echo "$out" | grep -q 'from > to' || { echo "FAIL: bad range message: $out"; exit 1; }
echo "ok - --check validates vmm.toml"

start_vmm "$WORK/vmm.toml"
export VMM_URL="http://127.0.0.1:$PORT" VMM_SOCK="$WORK/vmm.sock" VMM_TOKEN="$TOKEN" \
    VMM_RUN="$WORK/run" VMM_WORK="$WORK" VMM_IMAGE_DIR="$IMG"
python3 "$HERE/vmm_api_client.py" phase1 || { echo "FAIL: phase1"; tail -30 "$WORK/vmm.log"; exit 1; }

# discovery file for vmm-cli `vmm ls` (§1.1): present with our pid and address while running
python3 - "$XDG_RUNTIME_DIR/dstack-vmm" "$VMM_PID" "$WORK/vmm.sock" <<'PY' || { echo "FAIL: discovery file"; exit 1; }
import glob, json, sys
files = glob.glob(sys.argv[1] + "/*.json")
assert len(files) == 1, files
d = json.load(open(files[0]))
assert d["pid"] == int(sys.argv[2]) and d["address"] == "unix:" + sys.argv[3], d
assert d["node_name"] == "test-node" and d["run_path"].endswith("/run") and d["id"] in files[0], d
print("ok - discovery file:", files[0].rsplit("/", 1)[1])
PY

# GetAppEnvEncryptPubKey is forwarded to {kms_url}/prpc/GetAppEnvEncryptPubKey?json: a mock KMS
# on the configured port checks the path and body and answers; the VMM passes the reply through
python3 - "$KMS_PORT" >"$WORK/kms.log" 2>&1 <<'PY' &
import http.server, json, sys, time
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if body == {"app_id": "ef" * 20}:
            time.sleep(2)  # a slow KMS
        ok = self.path == "/prpc/GetAppEnvEncryptPubKey?json" and body == {"app_id": "ab" * 20} \
            and self.headers["Content-Type"] == "application/json"
        out = json.dumps({"public_key": "11" * 32, "signature": "22" * 65, "timestamp": 7,
                          "signature_v1": "33" * 65} if ok else {"error": "mock: bad request " + self.path}).encode()
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
for _ in range(3):
    srv.handle_request()
PY
KMS_PID=$!
sleep 0.5
python3 - <<'PY' || { kill "$KMS_PID" 2>/dev/null; echo "FAIL: GetAppEnvEncryptPubKey"; exit 1; }
import base64, json, os, urllib.request, urllib.error
def call(app_id):
    req = urllib.request.Request(os.environ["VMM_URL"] + "/prpc/GetAppEnvEncryptPubKey?json",
        data=json.dumps({"app_id": app_id}).encode(),
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["VMM_TOKEN"]})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
st, r = call("0x" + "AB" * 20)
assert st == 200 and r == {"public_key": "11" * 32, "signature": "22" * 65, "timestamp": 7, "signature_v1": "33" * 65}, (st, r)
st, r = call("cd" * 20)
assert st == 400 and "mock: bad request" in r["error"] and "KMS" in r["error"], (st, r)
import threading, time
slow = {}
t = threading.Thread(target=lambda: slow.setdefault("r", call("ef" * 20)))
t.start()
time.sleep(0.3)
t0 = time.time()
req = urllib.request.Request(os.environ["VMM_URL"] + "/prpc/Version?json", data=b"{}",
    headers={"Content-Type": "application/json", "Authorization": "Bearer " + os.environ["VMM_TOKEN"]})
urllib.request.urlopen(req, timeout=5).read()
dt = time.time() - t0
t.join()
assert dt < 1.0 and "r" in slow and slow["r"][0] == 400, (dt, slow)
print("ok - GetAppEnvEncryptPubKey forwarded to the KMS (path, JSON body, hex app_id) and its reply / error passed on; "
      f"a slow KMS does not stall other calls (Version in {dt * 1000:.0f} ms)")
PY
wait "$KMS_PID" 2>/dev/null

# restart: every VM comes back with its desired state
stop_vmm
[ -z "$(ls "$XDG_RUNTIME_DIR/dstack-vmm")" ] || { echo "FAIL: discovery file left after exit"; exit 1; }
start_vmm "$WORK/vmm.toml"
python3 "$HERE/vmm_api_client.py" phase2 || { echo "FAIL: phase2"; tail -30 "$WORK/vmm.log"; exit 1; }
stop_vmm

# a real start when QEMU is installed (the guest need not boot: the dummy kernel makes QEMU
# exit or spin; the VMM must track the process and stop it)
if command -v qemu-system-x86_64 >/dev/null; then
    write_config "$WORK/vmm-qemu.toml" ''
    start_vmm "$WORK/vmm-qemu.toml"
    python3 "$HERE/vmm_api_client.py" qemu || { echo "FAIL: qemu phase"; tail -30 "$WORK/vmm.log"; exit 1; }
    stop_vmm
else
    echo "ok - # SKIP real QEMU start (qemu-system-x86_64 not installed)"
fi
# sanitizer builds: the daemon's own reports (it exits cleanly on SIGTERM, so leaks show too)
if grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/vmm.log"; then
    echo "FAIL: sanitizer report in vmm.log"
    exit 1
fi
echo "PASS"
