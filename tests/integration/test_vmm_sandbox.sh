#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# dstack-vmm's `sandbox` backend end to end (docs/sandbox.md): dstack-tee-sim and dstack-vmm
# with [cvm] backend = "sandbox", a busybox image from scripts/build-sandbox-image.sh, then
# CreateVm with a TCP port mapping -> boot_progress "booted" (reported by the guest's init over
# the bind-mounted host API socket), the TD's MRTD/RTMR0-2 equal the sandbox measurement
# recomputed here independently and the TD's boot event log replays to them, the port mapping
# reaches busybox httpd in the guest, the host share is read-only inside, a udp mapping is
# refused with its specific error, StopVm/StartVm, SIGKILL of the VMM (the sandbox keeps
# running and serving, the restarted VMM finds it and the guest's host API works again),
# RemoveVm cleans up (workdir, veth, loop device, TD, forwarder, processes). Finally CreateVm ->
# "booted" latency over N VMs (SANDBOX_BENCH_VMS, default 20; p50/p99) and the VMM's RSS per VM.
# Needs root and namespaces (exit 77 otherwise).
set -u

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root"; exit 77; }
unshare -m -p -n -u -i --fork true 2>/dev/null || { echo "SKIP: namespaces unavailable"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 not installed"; exit 77; }
for b in dstack-vmm dstack-tee-sim; do
    [ -x "$BIN/$b" ] || { echo "FAIL: $BIN/$b not built"; exit 1; }
done

WORK=$(mktemp -d /tmp/test_vmm_sandbox.XXXXXX)
VMM_PID="" SIM_PID=""
cleanup() {
    [ -n "$VMM_PID" ] && kill "$VMM_PID" 2>/dev/null && wait "$VMM_PID" 2>/dev/null
    for f in "$WORK"/run/*/vm.pid "$WORK"/run/*/sandbox/forwarder.pid; do
        [ -f "$f" ] && kill -9 "$(cut -d' ' -f1 "$f")" 2>/dev/null
    done
    [ -n "$SIM_PID" ] && kill "$SIM_PID" 2>/dev/null && wait "$SIM_PID" 2>/dev/null
    sleep 0.2
    if [ -n "${SANDBOX_KEEP:-}" ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; tail -20 "$WORK/vmm.log" 2>/dev/null; exit 1; }

"$SRC/scripts/build-sandbox-image.sh" "$WORK/images/dstack-sandbox-0.5.0" >/dev/null ||
    fail "build-sandbox-image.sh"
echo "ok - image built"

SEED=$(printf '5a%.0s' $(seq 32))
mkdir -p "$WORK/sim" "$WORK/run"
"$BIN/dstack-tee-sim" serve --seed "$SEED" --state-dir "$WORK/sim" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
for _ in $(seq 1 100); do [ -S "$WORK/sim/control.sock" ] && break; sleep 0.05; done
[ -S "$WORK/sim/control.sock" ] || fail "dstack-tee-sim did not start"

HOST_PORT=$(python3 -c 'import socket,random
for p in random.sample(range(20000,21000),1000):
    s=socket.socket(); 
    try: s.bind(("127.0.0.1",p)); print(p); break
    except OSError: pass
    finally: s.close()')
cat >"$WORK/vmm.toml" <<TOML
address = "unix:$WORK/vmm.sock"
run_path = "$WORK/run"

[image]
path = "$WORK/images"

[cvm]
backend = "sandbox"

[cvm.port_mapping]
enabled = true
address = "127.0.0.1"
range = [{ protocol = "tcp", from = 20000, to = 20999 }, { protocol = "udp", from = 30000, to = 30010 }]

[cvm.auto_restart]
enabled = false
TOML

start_vmm() {
    rm -f "$WORK/vmm.sock"
    DSTACK_TEE_SIM_DIR="$WORK/sim" "$BIN/dstack-vmm" -c "$WORK/vmm.toml" >>"$WORK/vmm.log" 2>&1 &
    VMM_PID=$!
    for _ in $(seq 1 200); do
        [ -S "$WORK/vmm.sock" ] && return 0
        kill -0 "$VMM_PID" 2>/dev/null || fail "dstack-vmm exited"
        sleep 0.05
    done
    fail "dstack-vmm did not come up"
}
start_vmm

cat >"$WORK/t.py" <<'PY'
import hashlib, http.client, json, os, socket, subprocess, sys, time, urllib.request

W = os.environ["W"]; BIN = os.environ["BIN"]; PORT = int(os.environ["HOST_PORT"])
IMG = W + "/images/dstack-sandbox-0.5.0"
SOCK = W + "/vmm.sock"

def die(msg):
    print("FAIL: " + msg); sys.exit(1)

def ok(msg):
    print("ok - " + msg)

class UC(http.client.HTTPConnection):
    def __init__(s, path): super().__init__("localhost", timeout=30); s.p = path
    def connect(s):
        s.sock = socket.socket(socket.AF_UNIX); s.sock.connect(s.p)

def rpc(method, params=None):
    c = UC(SOCK)
    c.request("POST", "/prpc/%s?json" % method, json.dumps(params or {}),
              {"Content-Type": "application/json"})
    r = c.getresponse(); body = r.read(); c.close()
    return r.status, json.loads(body or b"{}")

def must(method, params=None):
    st, b = rpc(method, params)
    if st != 200: die("%s: %s %s" % (method, st, b))
    return b

def compose(name):
    return json.dumps({"manifest_version": 2, "name": name, "runner": "docker-compose",
        "docker_compose_file": "services: {}\n", "kms_enabled": False, "gateway_enabled": False,
        "local_key_provider_enabled": False, "key_provider_id": "", "public_logs": True,
        "public_sysinfo": True, "allowed_envs": [], "no_instance_id": False, "secure_time": False})

def create(name, ports=(), stopped=False, vcpu=1, memory=256, disk=1):
    return rpc("CreateVm", {"name": name, "image": "dstack-sandbox-0.5.0",
        "compose_file": compose(name), "vcpu": vcpu, "memory": memory, "disk_size": disk,
        "ports": list(ports), "stopped": stopped})

def info(vid):
    b = must("GetInfo", {"id": vid})
    if not b.get("found"): die("GetInfo: %s not found" % vid)
    return b["info"]

def wait_booted(vid, timeout=20):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        i = info(vid)
        if i["boot_progress"] == "booted" and i["status"] == "running":
            return time.monotonic() - t0
        time.sleep(0.005)
    die("%s did not boot: %s\n%s" % (vid, info(vid), open(W + "/run/%s/serial.log" % vid).read()))

def http_get(port, timeout=5):
    return urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=timeout).read().decode()

def pid_of(vid):
    return int(open(W + "/run/%s/vm.pid" % vid).read().split()[0])

def alive(pid):
    try:
        st = open("/proc/%d/stat" % pid).read()
        return st.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False

def ifname(vid):
    return "dsv" + hashlib.sha256(vid.encode()).hexdigest()[:10]

def sim(*args):
    return subprocess.run([BIN + "/dstack-tee-sim"] + list(args), capture_output=True, text=True)

def nsenter(pid, *cmd):
    return subprocess.run(["nsenter", "-t", str(pid), "-m", "-n", "-p", "-u"] + list(cmd),
                          capture_output=True, text=True)

def loops_of(path):
    st = os.stat(path)
    out = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-INO"], capture_output=True,
                         text=True).stdout.split("\n")
    return [l for l in out if l.split() and l.split()[-1] == str(st.st_ino)]

def expected_registers(vcpu, memory, disk):
    meta = json.load(open(IMG + "/metadata.json"))
    mrtd = hashlib.sha384(open(IMG + "/" + meta["bios"], "rb").read()).hexdigest()
    z = bytes(48)
    ext = lambda r, d: hashlib.sha384(r + d).digest()
    cfg = ('{"backend":"sandbox","vcpu":%d,"memory_mb":%d,"disk_gb":%d,"devices":["net:veth",'
           '"host-share:dir","data-disk:file","tee:sim"]}' % (vcpu, memory, disk)).encode()
    r0 = ext(z, hashlib.sha384(cfg).digest())
    r1 = ext(z, hashlib.sha384(open(IMG + "/rootfs" + meta["init"], "rb").read()).digest())
    r2 = ext(z, hashlib.sha384(meta["cmdline"].encode()).digest())
    r2 = ext(r2, hashlib.sha384(open(IMG + "/" + meta["initrd"], "rb").read()).digest())
    return mrtd, r0.hex(), r1.hex(), r2.hex()

def main():
    # ---- create with a port mapping, boot ----
    t0 = time.monotonic()
    st, b = create("web", ports=[{"protocol": "tcp", "host_port": PORT, "vm_port": 8080,
                                 "host_address": "127.0.0.1"}], vcpu=2, memory=384, disk=1)
    if st != 200: die("CreateVm: %s" % b)
    vid = b["id"]
    wait_booted(vid)
    ok("CreateVm -> booted in %.0f ms" % ((time.monotonic() - t0) * 1000))
    serial = open(W + "/run/%s/serial.log" % vid).read()
    if "init: booted" not in serial or "data disk mounted" not in serial:
        die("serial.log lacks the init's output:\n" + serial)
    if "tee=sim:/dstack/.tee/tdx.sock" not in serial: die("DSTACK_TEE not set in the guest")
    ok("init's console in serial.log, DSTACK_TEE=sim:/dstack/.tee/tdx.sock, data disk mounted")
    # ---- resource limits from vcpu/memory (cgroup v2, or the v1 cpu + memory hierarchies) ----
    limits = open(W + "/run/%s/sandbox/limits" % vid).read()
    V1 = "/sys/fs/cgroup/%s/dstack-vmm/" + vid
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        cg = "/sys/fs/cgroup/dstack-vmm/" + vid
        if open(cg + "/cpu.max").read().split() != ["200000", "100000"]: die("cpu.max")
        if int(open(cg + "/memory.max").read()) != 384 << 20: die("memory.max")
        if not open(cg + "/cgroup.procs").read().split(): die("sandbox not in its cgroup")
    elif os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if int(open(V1 % "cpu" + "/cpu.cfs_quota_us").read()) != 200000: die("cfs quota")
        if int(open(V1 % "memory" + "/memory.limit_in_bytes").read()) != 384 << 20:
            die("memory limit")
        for c in ("cpu", "memory"):
            if not open(V1 % c + "/cgroup.procs").read().split(): die("sandbox not in %s group" % c)
    else:
        if not limits.startswith("not enforced"): die("limits claimed without cgroups: " + limits)
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers") or \
            os.path.exists("/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        if not limits.startswith("enforced"): die("limits not enforced: " + limits)
    ok("vcpu/memory limits: " + limits.strip())
    # ---- TD registers ----
    tdsock = W + "/sim/tds/%s/tdx.sock" % vid
    r = sim("read", "--socket", tdsock)
    if r.returncode != 0: die("tee-sim read: " + r.stderr)
    regs = json.loads(r.stdout)
    mrtd, r0, r1, r2 = expected_registers(2, 384, 1)
    for k, want in (("mrtd", mrtd), ("rtmr0", r0), ("rtmr1", r1), ("rtmr2", r2)):
        if regs[k] != want: die("%s = %s, want %s" % (k, regs[k], want))
    if regs["rtmr3"] != "00" * 48: die("rtmr3 not empty at boot")
    r = sim("event-log", "--socket", tdsock)
    log = json.loads(r.stdout)
    rep = [bytes(48)] * 4
    for ev in log:
        rep[ev["imr"]] = hashlib.sha384(rep[ev["imr"]] + bytes.fromhex(ev["digest"])).digest()
    if [x.hex() for x in rep[:3]] != [r0, r1, r2]: die("event log does not replay to RTMR0-2")
    names = [ev["event"] for ev in log]
    if names != ["sandbox-vm-config", "sandbox-init", "sandbox-cmdline", "sandbox-rootfs"]:
        die("event names: %s" % names)
    ok("MRTD/RTMR0-2 equal the recomputed sandbox measurement; boot event log replays")
    # ---- port mapping ----
    body = http_get(PORT)
    if body.strip() != "sandbox " + vid: die("port mapping answered %r" % body)
    ok("port mapping 127.0.0.1:%d -> guest:8080 reaches httpd in the sandbox" % PORT)
    # ---- inside the sandbox ----
    pid = pid_of(vid)
    r = nsenter(pid, "/bin/sh", "-c",
                "touch /dstack/.host-shared/x 2>/dev/null && echo WRITABLE; "
                "test -f /dstack/.host-shared/app-compose.json && echo SHARE; "
                "test -S /dstack/.tee/tdx.sock && echo TEE; test -S /dstack/.host-api.sock && echo API; "
                "cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname")
    out = r.stdout
    if "WRITABLE" in out or "SHARE" not in out or "TEE" not in out or "API" not in out:
        die("sandbox view wrong: %r %r" % (out, r.stderr))
    if "/init console=stdout dstack.sandbox=1" not in out: die("pid 1 is not the image init: %r" % out)
    leaked = [os.readlink("/proc/%d/fd/%s" % (pid, f)) for f in os.listdir("/proc/%d/fd" % pid)]
    leaked = [l for l in leaked if l.startswith("socket:") or l.startswith("anon_inode:") or
              (l.startswith(W) and not l.endswith("/serial.log"))]
    if leaked: die("VMM descriptors leaked into the guest's init: %s" % leaked)
    # the TD device as the guest sees it (through the sandbox's root)
    r = sim("read", "--socket", "/proc/%d/root/dstack/.tee/tdx.sock" % pid)
    if r.returncode != 0 or json.loads(r.stdout) != regs:
        die("TD socket inside the sandbox: %s %s" % (r.stdout, r.stderr))
    ok("host share read-only at /dstack/.host-shared, TD socket inside answers with the VM's "
       "registers, host API socket present, pid 1 = /init")
    # ---- udp mapping refused ----
    st, b = create("udp", ports=[{"protocol": "udp", "host_port": 30001, "vm_port": 53,
                                 "host_address": "127.0.0.1"}])
    udp_id = b.get("id")
    if st == 200 and udp_id:
        st, b = rpc("StartVm", {"id": udp_id})
    if st == 200 or "udp is not supported" not in json.dumps(b):
        die("udp mapping not refused with its error: %s %s" % (st, b))
    if udp_id:
        must("RemoveVm", {"id": udp_id})
    ok("udp port mapping refused: %s" % b.get("error", b))
    # ---- stop / start ----
    fwd = int(open(W + "/run/%s/sandbox/forwarder.pid" % vid).read().split()[0])
    must("StopVm", {"id": vid})
    time.sleep(0.2)
    if info(vid)["status"] != "stopped": die("status after StopVm: %s" % info(vid)["status"])
    if alive(pid): die("sandbox pid %d survived StopVm" % pid)
    if alive(fwd): die("forwarder %d survived StopVm" % fwd)
    if os.path.exists("/sys/class/net/" + ifname(vid)): die("veth left after StopVm")
    try:
        http_get(PORT, timeout=1); die("port still forwarded after StopVm")
    except OSError:
        pass
    must("StartVm", {"id": vid})
    wait_booted(vid)
    if http_get(PORT).strip() != "sandbox " + vid: die("port mapping after restart")
    regs2 = json.loads(sim("read", "--socket", tdsock).stdout)
    if regs2 != regs: die("registers differ after StartVm")
    ok("StopVm (process, veth, forwarder gone) / StartVm (booted, same registers, port works)")
    # ---- the guest's init ends on SIGTERM (what a graceful stop sends) ----
    pid = pid_of(vid)
    fwd = int(open(W + "/run/%s/sandbox/forwarder.pid" % vid).read().split()[0])
    os.kill(pid, 15)
    t0 = time.time()
    while info(vid)["status"] == "running" and time.time() - t0 < 10:
        time.sleep(0.05)
    i = info(vid)
    if i["status"] == "running": die("sandbox still running after SIGTERM to its init")
    if i["shutdown_progress"] != "stopping": die("init's SIGTERM trap did not report: %s" % i)
    t0 = time.time()
    while alive(fwd) and time.time() - t0 < 5:
        time.sleep(0.05)
    if alive(fwd): die("forwarder did not exit with the sandbox")
    if os.path.exists("/sys/class/net/" + ifname(vid)): die("veth left after the guest exited")
    must("StartVm", {"id": vid})
    wait_booted(vid)
    ok("SIGTERM to the sandbox's pid 1: init traps it, reports, exits; forwarder and veth follow")
    with open(W + "/vm1", "w") as f:
        f.write("%d %s\n" % (pid_of(vid), vid))

def after_restart():
    vid = open(W + "/vm1").read().split()[1]
    pid = pid_of(vid)
    i = info(vid)
    if i["status"] != "running": die("restarted VMM sees %s" % i["status"])
    r = nsenter(pid, "/bin/dstack-notify", "unix:/dstack/.host-api.sock", "boot.progress",
                "after-vmm-restart")
    if r.returncode != 0: die("guest host API after VMM restart: %s" % r.stderr)
    if info(vid)["boot_progress"] != "after-vmm-restart": die("notify not seen after restart")
    if http_get(PORT).strip() != "sandbox " + vid: die("port mapping after VMM restart")
    ok("restarted VMM finds the sandbox running; guest host API and port mapping still work")
    # ---- remove ----
    img = W + "/run/%s/data.img" % vid
    if not loops_of(img): die("no loop device for the data disk while running")
    ino_loops = loops_of(img)
    fwd = int(open(W + "/run/%s/sandbox/forwarder.pid" % vid).read().split()[0])
    must("RemoveVm", {"id": vid})
    t0 = time.time()
    while os.path.exists(W + "/run/" + vid) and time.time() - t0 < 10:
        time.sleep(0.05)
    if os.path.exists(W + "/run/" + vid): die("workdir left after RemoveVm")
    if alive(pid): die("sandbox alive after RemoveVm")
    if alive(fwd): die("forwarder alive after RemoveVm")
    if os.path.exists("/sys/class/net/" + ifname(vid)): die("veth left after RemoveVm")
    for l in ino_loops:
        name = l.split()[0]
        bf = "/sys/block/%s/loop/backing_file" % os.path.basename(name)
        if os.path.exists(bf): die("loop device %s still attached" % name)
    if vid in sim("list-tds", "--state-dir", W + "/sim").stdout: die("TD left after RemoveVm")
    if os.path.exists("/sys/fs/cgroup/dstack-vmm/" + vid): die("cgroup left after RemoveVm")
    for c in ("cpu", "memory"):
        if os.path.exists("/sys/fs/cgroup/%s/dstack-vmm/%s" % (c, vid)):
            die("cgroup v1 %s group left after RemoveVm" % c)
    if vid in open("/proc/self/mountinfo").read(): die("a mount of the VM left on the host")
    leases = "/run/dstack-sandbox/ip"
    if any(open(os.path.join(leases, f)).read().endswith(vid) for f in os.listdir(leases)):
        die("address lease left after RemoveVm")
    ok("RemoveVm: workdir, sandbox, forwarder, veth, loop device, TD, cgroup, mounts and "
       "address lease gone")

def rss_kb(pid):
    for l in open("/proc/%d/status" % pid):
        if l.startswith("VmRSS:"): return int(l.split()[1])
    return 0

def bench():
    n = int(os.environ.get("SANDBOX_BENCH_VMS", "20"))
    vmm = int(os.environ["VMM_PID"])
    rss0 = rss_kb(vmm)
    times, ids, rpcs = [], [], []
    for k in range(n):
        t0 = time.monotonic()
        st, b = create("bench%d" % k)
        rpcs.append((time.monotonic() - t0) * 1000)
        if st != 200: die("bench CreateVm: %s" % b)
        ids.append(b["id"])
        wait_booted(b["id"])
        times.append((time.monotonic() - t0) * 1000)
    rss1 = rss_kb(vmm)
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(round(q * (len(times) - 1))))]
    ok("bench: %d VMs CreateVm->booted p50 %.0f ms p99 %.0f ms max %.0f ms; VMM RSS %d -> %d KiB "
       "(%.1f KiB/VM); the CreateVm call itself (VMM side, incl. mkfs and namespace setup) "
       "p50 %.0f ms" % (n, p(0.5), p(0.99), times[-1], rss0, rss1, (rss1 - rss0) / n,
                        sorted(rpcs)[len(rpcs) // 2]))
    for vid in ids:
        must("RemoveVm", {"id": vid})
    t0 = time.time()
    while any(os.path.exists(W + "/run/" + v) for v in ids) and time.time() - t0 < 30:
        time.sleep(0.1)
    if any(os.path.exists(W + "/run/" + v) for v in ids): die("bench VMs not removed")
    left = [l for l in os.listdir("/sys/class/net") if l in {ifname(v) for v in ids}]
    if left: die("veths left: %s" % left)
    ok("bench VMs removed")

{"main": main, "after_restart": after_restart, "bench": bench}[sys.argv[1]]()
PY
export W="$WORK" BIN HOST_PORT
python3 "$WORK/t.py" main || fail "main phase"

# SIGKILL the VMM: the sandbox keeps running and serving; a new VMM finds it
SBX_PID=$(cut -d' ' -f1 "$WORK/vm1")
kill -9 "$VMM_PID"; wait "$VMM_PID" 2>/dev/null; VMM_PID=""
sleep 0.2
kill -0 "$SBX_PID" 2>/dev/null || fail "sandbox died with the VMM"
python3 -c "import urllib.request;urllib.request.urlopen('http://127.0.0.1:$HOST_PORT/',timeout=5)" ||
    fail "port mapping died with the VMM"
echo "ok - sandbox and port forwarder survive SIGKILL of the VMM"
start_vmm
python3 "$WORK/t.py" after_restart || fail "after-restart phase"
VMM_PID=$VMM_PID python3 "$WORK/t.py" bench || fail "bench"

kill "$VMM_PID"; wait "$VMM_PID" 2>/dev/null; VMM_PID=""
if grep -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$WORK/vmm.log"; then
    fail "sanitizer report in vmm.log"
fi
echo "PASS"
