#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# dstack-vmm crash safety (docs/vmm.md "State on disk", spec host-side.md §1.4/§1.5): in each
# of ITER iterations a client fires a random mix of CreateVm (stopped and started), StopVm,
# StartVm and RemoveVm at a real dstack-vmm and the VMM is killed with SIGKILL after a random
# short delay, mid-request. The client journals (fsync'd) every request the VMM acknowledged.
# After each restart:
#  - no `.creating-*` / `.removing-*` leftovers, every VM dir complete (manifest, state, compose);
#  - the VMs listed == the VM dirs, ids and names unique (nothing lost, duplicated or
#    half-created); every acknowledged creation is present unless its removal was requested,
#    every acknowledged removal is gone;
#  - desired state honoured: started VMs run, stopped VMs do not; acknowledged StopVm/StartVm
#    are reflected in vm-state.json;
#  - exactly one guest process per running VM and none for any other (no orphans, no doubles).
# Then auto-restart (§1.5): a guest killed behind the VMM's back is restarted max_retries
# times, then the budget is exhausted (event, status "exited"), and StartVm resets it; the
# ProxiedGuestApi and ShutdownVm against a mock guest agent (and a silent one that must not
# stall the VMM); GET /logs follow on a running VM.
# The guest processes come from a stand-in QEMU binary (cvm.qemu_path: a script answering
# --version and then sleeping) so that starts succeed on any host; the real QEMU path is
# covered by test_vmm_api.sh.
set -u

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
VMMD="$BIN/dstack-vmm"
ITER=${VMM_CRASH_ITER:-20}
[ -x "$VMMD" ] || { echo "FAIL: $VMMD not built"; exit 1; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
PY=python3
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3 # pyenv shims take ~0.5 s to start

WORK=$(mktemp -d /tmp/test_vmm_crash.XXXXXX)
export XDG_RUNTIME_DIR="$WORK" # discovery files of the killed VMMs stay in the temp dir
MARK="fakeqemu-$(basename "$WORK")"
VMM_PID=""
CLIENT_PID=""
kill_guests() {
    for d in /proc/[0-9]*; do
        if tr '\0' ' ' <"$d/cmdline" 2>/dev/null | grep -qF "$MARK"; then
            kill -9 "${d#/proc/}" 2>/dev/null
        fi
    done
}
cleanup() {
    [ -n "$CLIENT_PID" ] && kill "$CLIENT_PID" 2>/dev/null
    [ -n "$VMM_PID" ] && kill -9 "$VMM_PID" 2>/dev/null
    wait 2>/dev/null
    kill_guests
    rm -rf "$WORK"
}
trap cleanup EXIT

IMG="$WORK/images/dstack-0.5.3"
mkdir -p "$IMG" "$WORK/run"
printf 'k' >"$IMG/bzImage"
printf 'i' >"$IMG/initramfs.cpio.gz"
printf 'b' >"$IMG/ovmf.fd"
echo '{"bios": "ovmf.fd", "kernel": "bzImage", "initrd": "initramfs.cpio.gz", "cmdline": "console=ttyS0", "version": "0.5.3", "shared_ro": true}' >"$IMG/metadata.json"
sha256sum "$IMG/metadata.json" | cut -c1-64 >"$IMG/digest.txt"

cat >"$WORK/fake-qemu" <<SH
#!/bin/bash
# stand-in for qemu-system-x86_64: answers --version, then idles like a running guest
if [ "\${1:-}" = "--version" ]; then echo "QEMU emulator version 8.2.2 (stand-in)"; exit 0; fi
exec -a "$MARK" sleep 3600
SH
chmod +x "$WORK/fake-qemu"

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/vmm.toml" <<TOML
address = "tcp:127.0.0.1:$PORT"
run_path = "$WORK/run"
[image]
path = "$WORK/images"
[cvm]
qemu_path = "$WORK/fake-qemu"
cid_start = 50000
cid_pool_size = 100
[cvm.port_mapping]
enabled = true
range = [{ protocol = "tcp", from = 21000, to = 21999 }]
[cvm.auto_restart]
enabled = false
TOML

cat >"$WORK/client.py" <<'PY'
import json, os, random, sys, time, urllib.request, urllib.error
URL, JOURNAL, SEED, PREFIX, READY = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
rnd = random.Random(SEED)
jf = open(JOURNAL, "a")
def journal(rec):
    jf.write(json.dumps(rec) + "\n"); jf.flush(); os.fsync(jf.fileno())
def rpc(m, p):
    req = urllib.request.Request(f"{URL}/prpc/{m}?json", data=json.dumps(p).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")
COMPOSE = json.dumps({"manifest_version": 2, "name": "crash", "runner": "docker-compose", "docker_compose_file": "x"})
known = []
try:
    known = [v["id"] for v in rpc("Status", {"brief": True})["vms"] if v["status"] != "removing"]
except Exception:
    sys.exit(0)
open(READY, "w").close()
n = 0
while True:
    n += 1
    op = rnd.random()
    try:
        if op < 0.45 or len(known) < 2:
            name = f"{PREFIX}-{n}"
            stopped = rnd.random() < 0.5
            port = 21000 + rnd.randrange(1000)
            journal({"op": "create-sent", "name": name})
            try:
                vid = rpc("CreateVm", {"name": name, "image": "dstack-0.5.3", "compose_file": COMPOSE, "vcpu": 1, "memory": 256, "disk_size": 1, "stopped": stopped,
                                       "ports": [{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": port, "vm_port": 80}]})["id"]
            except urllib.error.HTTPError as e:
                body = e.read()
                if b"already in use" in body:
                    continue
                raise
            known.append(vid)
            journal({"op": "create", "id": vid, "name": name, "started": not stopped})
        elif op < 0.65:
            vid = rnd.choice(known)
            journal({"op": "stop-sent", "id": vid})
            rpc("StopVm", {"id": vid}); journal({"op": "stop", "id": vid})
        elif op < 0.8:
            vid = rnd.choice(known)
            journal({"op": "start-sent", "id": vid})
            rpc("StartVm", {"id": vid}); journal({"op": "start", "id": vid})
        else:
            vid = rnd.choice(known)
            journal({"op": "remove-sent", "id": vid})
            rpc("RemoveVm", {"id": vid}); known.remove(vid); journal({"op": "remove", "id": vid})
        if len(known) > 8:
            vid = known[0]
            journal({"op": "remove-sent", "id": vid})
            rpc("RemoveVm", {"id": vid}); known.remove(vid); journal({"op": "remove", "id": vid})
    except Exception as e:
        if "VM not found" in str(getattr(e, "read", lambda: b"")()):
            continue
        sys.exit(0)  # the VMM is gone
PY

cat >"$WORK/verify.py" <<'PY'
import json, os, sys, time, urllib.request
URL, RUN, JOURNAL, MARK = sys.argv[1:5]
def rpc(m, p):
    req = urllib.request.Request(f"{URL}/prpc/{m}?json", data=json.dumps(p).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")
def fail(msg):
    print("FAIL:", msg); sys.exit(1)
# wait for resumed removals
for _ in range(100):
    vms = rpc("Status", {"brief": True})["vms"]
    if not any(v["status"] == "removing" for v in vms):
        break
    time.sleep(0.1)
else:
    fail("removals did not finish")
time.sleep(0.2)
vms = rpc("Status", {"brief": True})["vms"]
ids = [v["id"] for v in vms]
names = [v["name"] for v in vms]
if len(set(ids)) != len(ids) or len(set(names)) != len(names):
    fail(f"duplicated VMs: {ids} {names}")
entries = os.listdir(RUN)
left = [e for e in entries if e.startswith(".creating-") or e.startswith(".removing-")]
if left:
    fail(f"leftovers in the run dir: {left}")
dirs = sorted(e for e in entries if not e.startswith("."))
if dirs != sorted(ids):
    fail(f"run dir {dirs} != listed {sorted(ids)}")
for d in dirs:
    for f in ("vm-manifest.json", "vm-state.json", "shared/app-compose.json", "shared/.instance_info"):
        if not os.path.isfile(os.path.join(RUN, d, f)):
            fail(f"half-created VM {d}: {f} missing")
    m = json.load(open(os.path.join(RUN, d, "vm-manifest.json")))
    if m["id"] != d:
        fail(f"manifest id {m['id']} in dir {d}")
# the journal: acknowledged operations, in order
created, removed, remove_sent, desired = {}, set(), set(), {}
for line in open(JOURNAL):
    try:
        r = json.loads(line)
    except ValueError:
        continue  # a torn last line
    if r["op"] == "create":
        created[r["id"]] = r["name"]; desired[r["id"]] = r["started"]
    elif r["op"] == "remove":
        removed.add(r["id"])
    elif r["op"] == "remove-sent":
        remove_sent.add(r["id"])
    elif r["op"] == "stop":
        desired[r["id"]] = False
    elif r["op"] == "start":
        desired[r["id"]] = True
    elif r["op"] in ("start-sent", "stop-sent"):
        desired[r["id"]] = None  # unknown until acknowledged
for vid in created:
    if vid not in remove_sent and vid not in ids:
        fail(f"acknowledged VM {vid} ({created[vid]}) lost")
for vid in removed:
    if vid in ids:
        fail(f"acknowledged removal of {vid} not honoured")
# desired state and processes
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            cmd = open(f"/proc/{p}/cmdline", "rb").read()
            stat = open(f"/proc/{p}/stat").read()
        except OSError:
            continue
        if int(p) != os.getpid() and MARK.encode() in cmd and stat.split(")")[1].split()[0] != "Z":
            procs[int(p)] = True
running_pids = set()
for v in vms:
    st = json.load(open(os.path.join(RUN, v["id"], "vm-state.json")))["started"]
    want = desired.get(v["id"])
    if want is not None and st != want:
        fail(f"VM {v['id']}: vm-state.json started={st}, last acknowledged {want}")
    if st and v["status"] != "running":
        fail(f"VM {v['id']} desired running but {v['status']}")
    if not st and v["status"] != "stopped":
        fail(f"VM {v['id']} desired stopped but {v['status']}")
    if st:
        pid = int(open(os.path.join(RUN, v["id"], "vm.pid")).read().split()[0])
        if pid not in procs:
            fail(f"VM {v['id']}: pid {pid} is not its guest process")
        running_pids.add(pid)
extra = set(procs) - running_pids
if extra:
    fail(f"orphan or duplicate guest processes: {sorted(extra)}")
print(f"ok - {len(vms)} VMs ({len(running_pids)} running), journal {len(created)} created / {len(removed)} removed")
PY

start_vmm() {
    "$VMMD" -c "$WORK/vmm.toml" >>"$WORK/vmm.log" 2>&1 &
    VMM_PID=$!
    for _ in $(seq 1 400); do
        $PY -c "import socket;s=socket.socket();s.connect(('127.0.0.1',$PORT))" 2>/dev/null && return 0
        kill -0 "$VMM_PID" 2>/dev/null || { echo "FAIL: dstack-vmm exited"; tail -20 "$WORK/vmm.log"; exit 1; }
        sleep 0.025
    done
    echo "FAIL: dstack-vmm did not come up"
    exit 1
}

URL="http://127.0.0.1:$PORT"
JOURNAL="$WORK/journal"
start_vmm
for i in $(seq 1 "$ITER"); do
    rm -f "$WORK/ready"
    $PY "$WORK/client.py" "$URL" "$JOURNAL" "$i$RANDOM" "it$i" "$WORK/ready" &
    CLIENT_PID=$!
    for _ in $(seq 1 400); do
        [ -e "$WORK/ready" ] && break
        sleep 0.01
    done
    # a random point in the middle of the client's requests
    sleep "0.$(printf '%03d' $((RANDOM % 400 + 20)))"
    kill -9 "$VMM_PID"
    wait "$VMM_PID" 2>/dev/null
    VMM_PID=""
    wait "$CLIENT_PID" 2>/dev/null
    CLIENT_PID=""
    start_vmm
    if ! $PY "$WORK/verify.py" "$URL" "$WORK/run" "$JOURNAL" "$MARK" | sed "s/^/iteration $i: /"; then
        echo "FAIL: iteration $i"
        tail -30 "$WORK/vmm.log"
        exit 1
    fi
    [ "${PIPESTATUS[0]}" = 0 ] || { echo "FAIL: iteration $i"; tail -30 "$WORK/vmm.log"; exit 1; }
done
if grep -E 'ERROR: AddressSanitizer|runtime error:' "$WORK/vmm.log"; then
    echo "FAIL: sanitizer report in vmm.log"
    exit 1
fi
# the run must have exercised every operation, or it proved nothing
$PY - "$JOURNAL" <<'PY' || exit 1
import json, sys
ops = {}
for line in open(sys.argv[1]):
    try:
        op = json.loads(line)["op"]
    except ValueError:
        continue
    ops[op] = ops.get(op, 0) + 1
print("acknowledged:", ops)
need = {"create": 10, "stop": 3, "remove": 3, "start": 1}
short = {k: ops.get(k, 0) for k in need if ops.get(k, 0) < need[k]}
if short:
    print("FAIL: too few acknowledged operations:", short)
    sys.exit(1)
PY

# ---- auto-restart (§1.5): a guest that dies is restarted max_retries times, then given up ----
kill -9 "$VMM_PID"
wait "$VMM_PID" 2>/dev/null
VMM_PID=""
sed -e 's/^enabled = false$/enabled = true\ninterval = 1\ninitial_backoff = 0\nmax_backoff = 0\nmax_retries = 2/' \
    "$WORK/vmm.toml" >"$WORK/vmm-ar.toml"
grep -q 'max_retries = 2' "$WORK/vmm-ar.toml" || { echo "FAIL: auto-restart config"; exit 1; }
"$VMMD" -c "$WORK/vmm-ar.toml" >>"$WORK/vmm.log" 2>&1 &
VMM_PID=$!
for _ in $(seq 1 400); do
    $PY -c "import socket;s=socket.socket();s.connect(('127.0.0.1',$PORT))" 2>/dev/null && break
    sleep 0.025
done
$PY - "$URL" "$WORK/run" <<'PY' || { echo "FAIL: auto-restart"; tail -20 "$WORK/vmm.log"; exit 1; }
import json, os, signal, sys, time, urllib.request
URL, RUN = sys.argv[1:3]
def rpc(m, p):
    req = urllib.request.Request(f"{URL}/prpc/{m}?json", data=json.dumps(p).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read() or b"{}")
for v in rpc("Status", {"brief": True})["vms"]:
    rpc("RemoveVm", {"id": v["id"]})
compose = json.dumps({"manifest_version": 2, "name": "ar", "runner": "docker-compose", "docker_compose_file": "x"})
vid = rpc("CreateVm", {"name": "ar", "image": "dstack-0.5.3", "compose_file": compose, "vcpu": 1, "memory": 256, "disk_size": 1})["id"]
def pid():
    try:
        return int(open(os.path.join(RUN, vid, "vm.pid")).read().split()[0])
    except (OSError, ValueError):
        return 0
def info():
    return rpc("GetInfo", {"id": vid})["info"]
def wait_for(cond, what, secs=8):
    end = time.time() + secs
    while time.time() < end:
        if cond():
            return
        time.sleep(0.1)
    print(f"FAIL: {what}: {info()}"); sys.exit(1)
for attempt in (1, 2):
    old = pid()
    wait_for(lambda: info()["status"] == "running", "not running before kill")
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: pid() != old and info()["status"] == "running", f"not restarted (attempt {attempt})")
    events = [e["event"] for e in info()["events"]]
    if events.count("vmm.auto_restart") != attempt:
        print(f"FAIL: events after attempt {attempt}: {events}"); sys.exit(1)
os.kill(pid(), signal.SIGKILL)
wait_for(lambda: "vmm.auto_restart.exhausted" in [e["event"] for e in info()["events"]], "budget not exhausted")
if info()["status"] != "exited":
    print(f"FAIL: status after giving up: {info()['status']}"); sys.exit(1)
rpc("StartVm", {"id": vid})
wait_for(lambda: info()["status"] == "running", "StartVm after exhaustion")
print("ok - auto-restart: restarted twice (max_retries = 2), then exhausted and left exited; StartVm resets")
# ProxiedGuestApi / ShutdownVm: a mock guest agent on <workdir>/guest-api.sock (the sandbox
# form of the guest API endpoint)
import socket, threading, urllib.error
gsock = os.path.join(RUN, vid, "guest-api.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(gsock)
srv.listen(8)
seen = []
def agent():
    while True:
        try:
            c, _ = srv.accept()
        except OSError:
            return
        data = b""
        while b"\r\n\r\n" not in data:
            data += c.recv(4096)
        line = data.split(b"\r\n")[0].decode()
        seen.append(line)
        if "/api/Hang" in line or "/api/NetworkInfo" in line:
            time.sleep(7)  # longer than the VMM's 5 s guest timeout
            c.close()
            continue
        body = json.dumps({"version": "mock-agent", "app_id": "00" * 20}).encode() if "/api/Info" in line else b"{}"
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        c.close()
threading.Thread(target=agent, daemon=True).start()
req = urllib.request.Request(f"{URL}/guest/Info?json", data=json.dumps({"id": vid}).encode(), headers={"Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as resp:
    gi = json.loads(resp.read())
if gi != {"version": "mock-agent", "app_id": "00" * 20} or seen[-1] != "POST /api/Info?json HTTP/1.1":
    print(f"FAIL: guest Info {gi} {seen}"); sys.exit(1)
# an agent that does not answer: a clear error after the timeout, other calls unaffected
hang = {}
def slow():
    r2 = urllib.request.Request(f"{URL}/guest/NetworkInfo?json", data=json.dumps({"id": vid}).encode(), headers={"Content-Type": "application/json"})
    try:
        urllib.request.urlopen(r2, timeout=20)
    except urllib.error.HTTPError as e:
        hang["err"] = json.loads(e.read())["error"]
th = threading.Thread(target=slow)
th.start()
time.sleep(0.3)
t0 = time.time()
rpc("Status", {"brief": True})
dt = time.time() - t0
th.join()
if dt > 1.0 or "not" not in hang.get("err", "") and "no valid reply" not in hang.get("err", ""):
    print(f"FAIL: hanging guest: Status took {dt:.2f}s, error {hang}"); sys.exit(1)
rpc("ShutdownVm", {"id": vid})
if seen[-1] != "POST /api/Shutdown?json HTTP/1.1":
    print(f"FAIL: ShutdownVm did not reach the agent: {seen}"); sys.exit(1)
srv.close()
os.unlink(gsock)
print(f"ok - ProxiedGuestApi and ShutdownVm reach the guest agent; a silent agent fails clearly ({hang['err']}) without stalling the VMM")
# GET /logs?follow=true on a running VM: held until the guest ends, then carries what was added
import threading
got = {}
def follow():
    with urllib.request.urlopen(f"{URL}/logs?id={vid}&follow=true&ansi=false&lines=1", timeout=30) as r:
        got["body"] = r.read().decode()
t = threading.Thread(target=follow)
t.start()
time.sleep(0.5)
if "body" in got:
    print("FAIL: follow answered while the VM runs"); sys.exit(1)
with open(os.path.join(RUN, vid, "serial.log"), "a") as f:
    f.write("guest says hello\n")
time.sleep(0.6)
rpc("StopVm", {"id": vid})
t.join(10)
if info()["status"] != "stopped":
    print("FAIL: StopVm"); sys.exit(1)
lines = got.get("body", "").splitlines()
if len(lines) != 2 or not lines[0].startswith("===== boot @") or lines[1] != "guest says hello":
    print(f"FAIL: follow body {got}"); sys.exit(1)
print("ok - logs follow: held while running, returned with the new output when the VM stopped")
PY
echo "PASS ($ITER SIGKILLs)"
