#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# dstack-vmm + qemu backend end to end under TCG: builds the minimal test guest with
# `scripts/build-test-guest.sh --prpc` (Debian kernel + busybox initramfs whose /init sends a
# real pRPC `POST /api/Notify?json {"event":"boot.progress","payload":"booted"}` over the
# host-API virtio-serial port), packs it as a guest image directory (metadata.json with
# kernel/initrd direct boot, sha256sum.txt, digest.txt, version 0.5.3), starts dstack-vmm with
# `[cvm] backend = "qemu"`, `accel = "tcg"`, creates a VM through the API (upstream vmm-cli.py
# style: POST /prpc/CreateVm?json, Basic auth) and polls GetInfo until boot_progress is
# "booted" — the guest's bytes went guest -> virtio-serial -> QEMU chardev -> the VM's
# host-api.sock -> the VMM's HTTP server. Then checks the serial log (kernel banner, the guest's
# own trace including the 200 it read back), the qcow2 data disk created at first start, that
# the guest's heartbeat Notify calls keep arriving, also after a dstack-vmm restart (QEMU
# redials the socket), StopVm (QEMU gone), RemoveVm (workdir gone). A second VM under
# `host_share_mode = "vhd"` must see shared.img (FAT32, DSTACKSHR) with the host's
# .sys-config.json (the guest mounts it and reports its SHA-256). Prints CreateVm -> "booted" time.
# Exit 77 only when qemu-system-x86_64 or a guest kernel is genuinely unavailable.
set -u

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
VMMD="$BIN/dstack-vmm"
TIMEOUT=${DS_QEMU_BOOT_TIMEOUT:-120}
[ -x "$VMMD" ] || { echo "FAIL: $VMMD not built"; exit 1; }
command -v python3 >/dev/null || { echo "FAIL: python3 missing"; exit 1; }
if ! command -v qemu-system-x86_64 >/dev/null; then
    echo "SKIP: qemu-system-x86_64 not installed (scripts/install-deps.sh installs qemu-system-x86)"
    exit 77
fi
if [ -z "${DS_TEST_KERNEL:-}" ] && ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
    echo "SKIP: no guest kernel (install-deps installs linux-image-cloud-amd64)"
    exit 77
fi
command -v qemu-img >/dev/null || {
    echo "FAIL: qemu-img missing (scripts/install-deps.sh installs qemu-utils)"
    exit 1
}

WORK=$(mktemp -d /tmp/test_vmm_qemu_boot.XXXXXX)
export XDG_RUNTIME_DIR="$WORK/xdg"
mkdir -p "$XDG_RUNTIME_DIR" "$WORK/run"
VMM_PID=""
cleanup() {
    if [ -n "$VMM_PID" ]; then
        kill "$VMM_PID" 2>/dev/null
        wait "$VMM_PID" 2>/dev/null
    fi
    # the VMM restarted by the client (heartbeat-across-restart step)
    [ -f "$WORK/vmm2.pid" ] && kill "$(cat "$WORK/vmm2.pid")" 2>/dev/null
    # QEMU runs in its own session: kill any left behind by a failed step
    for f in "$WORK"/run/*/vm.pid; do
        [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null
    done
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- guest image directory ----------------------------------------------------------------------
IMG="$WORK/images/dstack-test-0.5.3"
mkdir -p "$IMG"
rc=0
"$SRC/scripts/build-test-guest.sh" --prpc "$IMG" 2>"$WORK/build-guest.log" || rc=$?
if [ "$rc" -eq 2 ]; then
    echo "SKIP: no usable guest kernel"
    cat "$WORK/build-guest.log"
    exit 77
elif [ "$rc" -ne 0 ]; then
    echo "FAIL: build-test-guest.sh --prpc failed ($rc)"
    cat "$WORK/build-guest.log"
    exit 1
fi
cat >"$IMG/metadata.json" <<'JSON'
{"kernel": "vmlinuz", "initrd": "initramfs.cpio.gz", "cmdline": "console=ttyS0 panic=1 net.ifnames=0 biosdevname=0 mce=off oops=panic pci=noearly", "version": "0.5.3", "git_revision": "test", "shared_ro": true, "is_dev": true}
JSON
(cd "$IMG" && sha256sum vmlinuz initramfs.cpio.gz metadata.json >sha256sum.txt &&
    sha256sum sha256sum.txt | cut -c1-64 >digest.txt)

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
PORT=$(free_port)
TOKEN=qemu-boot-$RANDOM$RANDOM
cat >"$WORK/vmm.toml" <<TOML
address = "unix:$WORK/vmm.sock"
listen = ["tcp:127.0.0.1:$PORT"]
run_path = "$WORK/run"
kms_url = "http://127.0.0.1:1"

[image]
path = "$WORK/images"

[cvm]
backend = "qemu"
accel = "tcg"
cid_start = 41000
cid_pool_size = 10

[cvm.auto_restart]
enabled = false

[auth]
enabled = true
tokens = ["$TOKEN"]
TOML

start_vmm() {
    "$VMMD" -c "$WORK/vmm.toml" >>"$WORK/vmm.log" 2>&1 &
    VMM_PID=$!
    local up=0
    for _ in $(seq 1 200); do
        if python3 -c "import socket;s=socket.socket();s.connect(('127.0.0.1',$PORT))" 2>/dev/null; then
            up=1
            break
        fi
        kill -0 "$VMM_PID" 2>/dev/null || break
        sleep 0.05
    done
    [ "$up" = 1 ] || { echo "FAIL: dstack-vmm did not come up"; cat "$WORK/vmm.log"; exit 1; }
}
start_vmm

cat >"$WORK/client.py" <<'EOF'
import base64, hashlib, json, os, subprocess, sys, time, urllib.error, urllib.request

URL, RUN, IMG = os.environ["VMM_URL"], os.environ["RUN"], os.environ["IMG"]
TIMEOUT = float(os.environ["TIMEOUT"])
AUTH = "Basic " + base64.b64encode(f"admin:{os.environ['VMM_TOKEN']}".encode()).decode()


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def rpc(method, params=None):
    req = urllib.request.Request(f"{URL}/prpc/{method}?json", data=json.dumps(params or {}).encode(),
                                 method="POST",
                                 headers={"Authorization": AUTH, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            data = r.read()
    except urllib.error.HTTPError as e:
        fail(f"{method}: HTTP {e.code}: {e.read()[:300]!r}")
    return json.loads(data) if data else {}


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


compose = json.dumps({"manifest_version": 2, "name": "qemu-boot", "runner": "docker-compose",
                      "docker_compose_file": "services: {}\n", "kms_enabled": False,
                      "gateway_enabled": False, "local_key_provider_enabled": False,
                      "public_logs": True, "public_sysinfo": True, "allowed_envs": [],
                      "no_instance_id": False, "secure_time": False})
PHASE = sys.argv[1]  # "9p": boot, heartbeats, VMM restart; "vhd": the FAT32 host share
imgs = [i["name"] for i in rpc("ListImages")["images"]]
check("dstack-test-0.5.3" in imgs, f"test image not listed: {imgs}")

t0 = time.monotonic()
vid = rpc("CreateVm", {"name": "qemu-boot", "image": "dstack-test-0.5.3", "compose_file": compose,
                       "vcpu": 1, "memory": 512, "disk_size": 2, "ports": [], "stopped": False,
                       "user_config": "", "hugepages": False, "pin_numa": False})["id"]
wd = os.path.join(RUN, vid)
info = None
while time.monotonic() - t0 < TIMEOUT:
    info = rpc("GetInfo", {"id": vid})["info"]
    if info.get("boot_progress") == "booted":
        break
    check(info["status"] == "running", f"VM left running before booting: {info['status']}")
    time.sleep(0.1)
elapsed = time.monotonic() - t0
serial = read(os.path.join(wd, "serial.log")) if os.path.exists(os.path.join(wd, "serial.log")) else ""
if info is None or info.get("boot_progress") != "booted":
    print("---- serial.log (tail)")
    print("\n".join(serial.splitlines()[-30:]))
    print("---- stderr.log")
    print(read(os.path.join(wd, "stderr.log")) if os.path.exists(os.path.join(wd, "stderr.log")) else "")
    fail(f"no boot.progress=booted within {TIMEOUT:.0f} s (GetInfo: {info})")
print(f"ok - CreateVm -> boot_progress \"booted\" in {elapsed:.2f} s (TCG)")
check(info["status"] == "running", f"status after boot: {info['status']}")
check(info["boot_error"] == "", f"boot_error set: {info['boot_error']!r}")

# the serial console log: kernel banner and the guest's own trace, including the HTTP answer it
# read back over the same port (give the guest a moment to print it)
deadline = time.monotonic() + 30
while "guest: host-api answered" not in serial and time.monotonic() < deadline:
    time.sleep(0.2)
    serial = read(os.path.join(wd, "serial.log"))
check("Linux version" in serial, "serial.log lacks the kernel banner")
check("guest: host-api Notify on /dev/vport" in serial, "serial.log lacks the guest's trace")
check("guest: host-api answered: HTTP/1.1 200" in serial,
      "guest did not read a 200 back: " + "\n".join(l for l in serial.splitlines() if "guest:" in l))
print("ok - serial.log has the kernel banner and the guest's trace (Notify answered 200)")

# the data disk was created at first start (host-side §1.4): qcow2 of disk_size GiB
hda = os.path.join(wd, "hda.img")
check(os.path.exists(hda), "hda.img not created at first start")
qi = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", hda], check=True,
                               capture_output=True, text=True).stdout)
check(qi["format"] == "qcow2" and qi["virtual-size"] == 2 << 30, f"hda.img: {qi}")
print("ok - hda.img is a 2 GiB qcow2 data disk")

def events(name):
    ev = rpc("GetInfo", {"id": vid})["info"]["events"]
    return [e["body"] for e in ev if e["event"] == name]


# the guest reports the SHA-256 of .sys-config.json from the DSTACKSHR disk it mounted
# ("none" without one: 9p guests have no such disk)
sc_path = os.path.join(wd, "shared", ".sys-config.json")
sc_hash = hashlib.sha256(open(sc_path, "rb").read()).hexdigest()
share = events("guest.share")
vmc = json.loads(json.loads(read(sc_path))["vm_config"])
check(vmc["host_share_mode"] == PHASE, f"vm_config.host_share_mode: {vmc['host_share_mode']}")
if PHASE == "vhd":
    check(share == [sc_hash], f"guest.share {share}, host .sys-config.json sha256 {sc_hash}")
    check(os.path.exists(os.path.join(wd, "shared.img")), "shared.img missing")
    print(f"ok - vhd: the guest mounted the DSTACKSHR disk, its .sys-config.json sha256 matches "
          f"({sc_hash[:16]}...)")
else:
    check(share == ["none"], f"9p guest found a DSTACKSHR disk: {share}")
    check(not os.path.exists(os.path.join(wd, "shared.img")), "shared.img built in 9p mode")


def heartbeats():
    ev = rpc("GetInfo", {"id": vid})["info"]["events"]
    return [e["body"] for e in ev if e["event"] == "guest.heartbeat"]


# the channel stays usable: heartbeats keep arriving, and across a VMM restart (QEMU's
# chardev redials the new host-api.sock, reconnect=1)
if PHASE == "9p":
    deadline = time.monotonic() + 30
    while not heartbeats() and time.monotonic() < deadline:
        time.sleep(0.2)
    check(heartbeats(), "no guest.heartbeat event before the restart")
    os.kill(int(os.environ["VMM_PID"]), 15)
    for _ in range(200):
        try:
            os.kill(int(os.environ["VMM_PID"]), 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    with open(os.environ["VMM_LOG"], "ab") as log:
        vmm2 = subprocess.Popen([os.environ["VMMD"], "-c", os.environ["VMM_CONF"]], stdout=log,
                                stderr=log, stdin=subprocess.DEVNULL)
    with open(os.environ["VMM_PID2"], "w") as f:
        f.write(str(vmm2.pid))
    t1 = time.monotonic()
    while time.monotonic() - t1 < 10:
        try:
            if rpc("GetInfo", {"id": vid})["found"]:
                break
        except (SystemExit, OSError):
            pass
        time.sleep(0.1)
    hb = []
    while not hb and time.monotonic() - t1 < 30:
        try:
            hb = heartbeats()
        except (SystemExit, OSError):
            pass
        time.sleep(0.2)
    check(hb, "no guest.heartbeat reached the restarted VMM within 30 s")
    check(rpc("GetInfo", {"id": vid})["info"]["status"] == "running", "VM not running after restart")
    print(f"ok - heartbeats reach the restarted VMM ({time.monotonic() - t1:.1f} s after restart, "
          f"heartbeat {hb[0]})")

pid = int(read(os.path.join(wd, "vm.pid")).split()[0])
cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
check(b"tcg" in cmd and any(a.startswith(b"socket,id=hostapi,path=" + wd.encode()) for a in cmd),
      f"QEMU argv lacks tcg or the host-API chardev: {cmd}")
if PHASE == "vhd":
    want = f"file={wd}/shared.img,if=none,id=hd2,format=raw,readonly=on".encode()
    check(want in cmd, f"QEMU argv lacks {want!r}: {cmd}")

rpc("StopVm", {"id": vid})
deadline = time.monotonic() + 10
st = None
while time.monotonic() < deadline:
    st = rpc("GetInfo", {"id": vid})["info"]["status"]
    if st == "stopped":
        break
    time.sleep(0.1)
check(st == "stopped", f"status after StopVm: {st}")
alive = os.path.exists(f"/proc/{pid}") and read(f"/proc/{pid}/stat").split(")")[1].split()[0] != "Z"
check(not alive, "QEMU still alive after StopVm")
print("ok - StopVm stopped QEMU")
rpc("RemoveVm", {"id": vid})
deadline = time.monotonic() + 10
while os.path.exists(wd) and time.monotonic() < deadline:
    time.sleep(0.1)
check(not os.path.exists(wd), "workdir left after RemoveVm")
check(rpc("GetInfo", {"id": vid}) == {"found": False}, "VM still listed after RemoveVm")
print("ok - RemoveVm removed the VM")
print(f"boot time ({PHASE}): CreateVm -> \"booted\" {elapsed:.2f} s")
EOF

run_client() { # $1 = phase
    VMM_URL="http://127.0.0.1:$PORT" VMM_TOKEN="$TOKEN" RUN="$WORK/run" IMG="$IMG" \
        TIMEOUT="$TIMEOUT" VMM_PID="$VMM_PID" VMMD="$VMMD" VMM_CONF="$WORK/vmm.toml" \
        VMM_LOG="$WORK/vmm.log" VMM_PID2="$WORK/vmm2.pid" python3 "$WORK/client.py" "$1" || {
        echo "---- vmm.log (tail)"
        tail -n 30 "$WORK/vmm.log"
        exit 1
    }
}
run_client 9p
# the client restarted the VMM; stop that one and start again with the vhd host share
wait "$VMM_PID" 2>/dev/null
VMM_PID=$(cat "$WORK/vmm2.pid")
rm -f "$WORK/vmm2.pid"
kill "$VMM_PID"
while kill -0 "$VMM_PID" 2>/dev/null; do sleep 0.05; done
VMM_PID=""
sed -i 's/^accel = "tcg"$/accel = "tcg"\nhost_share_mode = "vhd"/' "$WORK/vmm.toml"
start_vmm
run_client vhd
kill "$VMM_PID" && wait "$VMM_PID" 2>/dev/null
VMM_PID=""
if grep -q "Sanitizer" "$WORK/vmm.log"; then
    echo "FAIL: sanitizer report in vmm.log"
    grep -A20 "Sanitizer" "$WORK/vmm.log" | head -40
    exit 1
fi
echo "PASS: dstack-vmm qemu backend boots a TCG guest that reports back over the host API"
