#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
#
# The client side of tests/integration/test_vmm_api.sh: talks to dstack-vmm the way upstream's
# vmm-cli.py does (spec host-side.md §1.12): POST /prpc/<Method>?json with a JSON body and
# Content-Type: application/json, Basic auth (user:token), GET /logs?id=..&follow=..&ansi=..&
# lines=..; plus the Unix socket and the per-VM host API socket. Checks every answer against
# independent values (hashlib, the files on disk). Phases: phase1, phase2 (after a restart),
# qemu (real QEMU start/stop).
import base64
import hashlib
import http.client
import json
import os
import socket
import sys
import time
import urllib.error
import urllib.request

URL = os.environ["VMM_URL"]
SOCK = os.environ["VMM_SOCK"]
TOKEN = os.environ["VMM_TOKEN"]
RUN = os.environ["VMM_RUN"]
WORK = os.environ["VMM_WORK"]
IMAGE_DIR = os.environ["VMM_IMAGE_DIR"]
IMAGE = "dstack-0.5.3"
STATE = os.path.join(WORK, "client-state.json")

BASIC = "Basic " + base64.b64encode(f"admin:{TOKEN}".encode()).decode()


def ok(msg):
    print(f"ok - {msg}")


def fail(msg):
    print(f"FAIL: {msg}")
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)


def hreq(method, path, body=None, headers=None, raw=None):
    hdrs = {"Authorization": BASIC}
    if headers is not None:
        hdrs = headers
    data = raw
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(URL + path, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def rpc(method, params=None):
    """vmm-cli.py's rpc_call: raises on non-200."""
    st, data, _ = hreq("POST", f"/prpc/{method}?json", params or {}, {"Authorization": BASIC, "Content-Type": "application/json"})
    if st != 200:
        raise RuntimeError(json.loads(data)["error"] if data.startswith(b"{") else data.decode())
    return json.loads(data) if data else {}


def rpc_err(method, params, want, raw=None):
    """The call must fail with HTTP 400 and an error containing `want`."""
    if raw is not None:
        st, data, _ = hreq("POST", f"/prpc/{method}?json", None, {"Authorization": BASIC, "Content-Type": "application/json"}, raw)
    else:
        st, data, _ = hreq("POST", f"/prpc/{method}?json", params, {"Authorization": BASIC, "Content-Type": "application/json"})
    check(st == 400, f"{method}: expected 400, got {st}: {data[:200]!r}")
    err = json.loads(data)["error"]
    check(want in err, f"{method}: error {err!r} does not contain {want!r}")
    return err


class UnixConn(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=10)
        self.path_ = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(self.path_)
        self.sock = s


def unix_post(sock, path, body, auth=True):
    c = UnixConn(sock)
    hdrs = {"Content-Type": "application/json"}
    if auth:
        hdrs["Authorization"] = BASIC
    c.request("POST", path, body=json.dumps(body).encode(), headers=hdrs)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def snapshot():
    """Recursive listing + sha256 of every file under the run dir (sockets by name only)."""
    out = {}
    for root, dirs, files in os.walk(RUN):
        for d in dirs:
            out[os.path.relpath(os.path.join(root, d), RUN) + "/"] = "dir"
        for f in files:
            p = os.path.join(root, f)
            if os.path.islink(p) or not os.path.isfile(p):
                out[os.path.relpath(p, RUN)] = "special"
                continue
            with open(p, "rb") as fh:
                out[os.path.relpath(p, RUN)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def compose(name, extra=None):
    c = {
        "manifest_version": 2,
        "name": name,
        "runner": "docker-compose",
        "docker_compose_file": "services:\n  web:\n    image: nginx\n",
        "kms_enabled": False,
        "gateway_enabled": True,
        "local_key_provider_enabled": False,
        "key_provider_id": "",
        "public_logs": True,
        "public_sysinfo": True,
        "allowed_envs": [],
        "no_instance_id": False,
        "secure_time": False,
    }
    c.update(extra or {})
    return json.dumps(c, indent=4, ensure_ascii=False)


def deploy(name, compose_text, ports=(), stopped=True, **kw):
    """vmm-cli.py `deploy` request body."""
    params = {
        "name": name,
        "image": IMAGE,
        "compose_file": compose_text,
        "vcpu": 1,
        "memory": 1024,
        "disk_size": 20,
        "app_id": None,
        "user_config": "",
        "ports": list(ports),
        "hugepages": False,
        "pin_numa": False,
        "stopped": stopped,
        "no_tee": False,
    }
    params.update(kw)
    return params


def read(path, mode="r"):
    with open(path, mode) as f:
        return f.read()


def vm_dir(vid):
    return os.path.join(RUN, vid)


def status_of(vid):
    info = rpc("GetInfo", {"id": vid})
    check(info["found"], f"GetInfo {vid}: not found")
    return info["info"]["status"]


def phase1():
    # ---- auth --------------------------------------------------------------------------------
    st, _, _ = hreq("POST", "/prpc/Status?json", {}, {"Content-Type": "application/json"})
    check(st == 401, f"no credentials: expected 401, got {st}")
    st, _, _ = hreq("POST", "/prpc/Status?json", {}, {"Authorization": "Bearer wrong", "Content-Type": "application/json"})
    check(st == 401, f"wrong bearer: expected 401, got {st}")
    bad_basic = "Basic " + base64.b64encode(b"admin:nope").decode()
    st, _, _ = hreq("POST", "/prpc/Status?json", {}, {"Authorization": bad_basic, "Content-Type": "application/json"})
    check(st == 401, f"wrong basic: expected 401, got {st}")
    for hdr in ({"Authorization": f"Bearer {TOKEN}"}, {"X-Admin-Token": TOKEN}, {"Authorization": BASIC}):
        hdr["Content-Type"] = "application/json"
        st, data, headers = hreq("POST", "/prpc/Status?json", {}, hdr)
        check(st == 200, f"auth {list(hdr)[0]}: {st} {data[:100]!r}")
    check(headers.get("X-App-Version", "").startswith("v"), f"X-App-Version missing: {headers}")
    st, _, _ = hreq("GET", f"/prpc/Version?token={TOKEN}", headers={})
    check(st == 200, f"GET ?token=: {st}")
    st, _ = unix_post(SOCK, "/prpc/Status?json", {}, auth=False)
    check(st == 401, f"unix socket without auth: {st}")
    ok("auth: Bearer, X-Admin-Token, Basic and GET ?token= accepted; missing/wrong refused (401)")

    # ---- Version / GetMeta -------------------------------------------------------------------
    v = rpc("Version")
    check(v["version"] and "rev" in v, f"Version: {v}")
    m = rpc("GetMeta")
    check(m["resources"]["max_cvm_number"] == 50, f"GetMeta resources: {m}")
    check(m["networking"]["supported_modes"] == ["user"] and m["networking"]["default_mode"] == "user", f"GetMeta networking: {m}")
    check(m["gateway"]["base_domain"] == "localhost" and m["gateway"]["agent_port"] == 8090, f"GetMeta gateway: {m}")
    rpc_err("NoSuchMethod", {}, "Service not found")
    ok("Version, GetMeta, unknown method")

    # ---- lsimage ---------------------------------------------------------------------------
    imgs = rpc("ListImages")["images"]
    check([i["name"] for i in imgs] == [IMAGE], f"ListImages: {imgs}")
    check(imgs[0]["version"] == "0.5.3" and imgs[0]["is_dev"] is False, f"ListImages fields: {imgs}")
    check(imgs[0]["description"] == read(os.path.join(IMAGE_DIR, "metadata.json")), "description != metadata.json")
    ok("lsimage: the valid image only (the escaping one is not listed), description = metadata.json")

    # ---- compose ---------------------------------------------------------------------------
    c1 = compose("app-one")
    h = rpc("GetComposeHash", {"name": "app-one", "compose_file": c1})["hash"]
    check(h == hashlib.sha256(c1.encode()).hexdigest(), "GetComposeHash != sha256(compose bytes)")
    rpc_err("GetComposeHash", {"name": "app-one", "compose_file": "{not json"}, "Invalid compose file")
    rpc_err("GetComposeHash", {"name": "bad/name", "compose_file": c1}, "Invalid VM name")
    ok("compose: GetComposeHash = sha256 of the exact bytes; bad compose / name refused")

    # ---- deploy (stopped, with ports) --------------------------------------------------------
    empty = snapshot()
    check(empty == {}, f"run dir not empty at start: {empty}")
    ports = [{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": 20080, "vm_port": 80},
             {"protocol": "udp", "host_address": "127.0.0.1", "host_port": 30001, "vm_port": 53}]
    p = deploy("app-one", c1, ports, user_config='{"x": 1}')
    vid = rpc("CreateVm", p)["id"]
    check(len(vid) == 36 and vid.count("-") == 4, f"id not a uuid: {vid}")
    d = vm_dir(vid)
    man = json.loads(read(os.path.join(d, "vm-manifest.json")))
    app_id = hashlib.sha256(c1.encode()).hexdigest()[:40]
    check(man["id"] == vid and man["name"] == "app-one" and man["image"] == IMAGE, f"manifest: {man}")
    check(man["app_id"] == app_id, f"manifest app_id {man['app_id']} != {app_id}")
    check(man["vcpu"] == 1 and man["memory"] == 1024 and man["disk_size"] == 20, f"manifest sizes: {man}")
    check(man["port_map"] == [{"address": "127.0.0.1", "protocol": "tcp", "from": 20080, "to": 80},
                              {"address": "127.0.0.1", "protocol": "udp", "from": 30001, "to": 53}], f"port_map: {man['port_map']}")
    check(json.loads(read(os.path.join(d, "vm-state.json"))) == {"started": False}, "vm-state.json")
    check(read(os.path.join(d, "shared/app-compose.json"), "rb") == c1.encode(), "shared/app-compose.json bytes")
    check(json.loads(read(os.path.join(d, "shared/.instance_info"))) == {"app_id": app_id}, ".instance_info")
    check(read(os.path.join(d, "shared/.user-config")) == '{"x": 1}', ".user-config")
    check(not any(n.startswith(".creating-") for n in os.listdir(RUN)), "a .creating- dir was left")
    ok("deploy --stopped with ports: manifest, vm-state, shared files on disk")

    # explicit app_id (0x, upper case) and encrypted env
    c2 = compose("app-two")
    vid2 = rpc("CreateVm", deploy("app-two", c2, [], app_id="0x" + "AB" * 20, encrypted_env="00ff10"))["id"]
    man2 = json.loads(read(os.path.join(vm_dir(vid2), "vm-manifest.json")))
    check(man2["app_id"] == "ab" * 20, f"app_id normalisation: {man2['app_id']}")
    check(read(os.path.join(vm_dir(vid2), "shared/.encrypted-env"), "rb") == b"\x00\xff\x10", ".encrypted-env bytes")
    vid3 = rpc("CreateVm", deploy("other three", compose("app-three"), []))["id"]
    ok("deploy: app_id normalised, encrypted_env stored raw")

    # ---- lsvm (Status) -----------------------------------------------------------------------
    s = rpc("Status")
    check(s["total"] == 3 and [x["id"] for x in s["vms"]] == [vid, vid2, vid3], f"Status order: {s}")
    check(all(x["status"] == "stopped" for x in s["vms"]), "status not stopped")
    check(s["port_mapping_enabled"] is True, "port_mapping_enabled")
    check("configuration" in s["vms"][0], "full Status lacks configuration")
    b = rpc("Status", {"brief": True})
    check("configuration" not in b["vms"][0], "brief Status has configuration")
    k = rpc("Status", {"keyword": "three"})
    check(k["total"] == 1 and k["vms"][0]["id"] == vid3, f"keyword filter: {k}")
    k = rpc("Status", {"keyword": app_id[:12]})
    check([x["id"] for x in k["vms"]] == [vid], f"keyword app_id filter: {k}")
    i = rpc("Status", {"ids": [vid2]})
    check([x["id"] for x in i["vms"]] == [vid2], f"ids filter: {i}")
    pg = rpc("Status", {"page": 2, "page_size": 2})
    check(pg["total"] == 3 and [x["id"] for x in pg["vms"]] == [vid3], f"paging: {pg}")
    st, data = unix_post(SOCK, "/prpc/Status?json", {"brief": True})
    check(st == 200 and json.loads(data)["total"] == 3, f"Status over the unix socket: {st}")
    st, data, _ = hreq("POST", "/prpc/Vmm.Status?json", {}, {"Authorization": BASIC, "Content-Type": "application/json"})
    check(st == 200, "Vmm.Status prefix not accepted")
    ok("lsvm: order by creation, filters ids/keyword, paging, brief, unix socket, Vmm. prefix")

    # ---- info -----------------------------------------------------------------------------
    info = rpc("GetInfo", {"id": vid})
    check(info["found"] is True, "GetInfo found")
    inf = info["info"]
    cfg = inf["configuration"]
    check(inf["status"] == "stopped" and inf["uptime"] == "never" and inf["app_id"] == app_id, f"info: {inf}")
    check(inf["image_version"] == "0.5.3", "image_version")
    check(cfg["compose_file"] == c1 and cfg["user_config"] == '{"x": 1}' and cfg["stopped"] is True, f"configuration: {cfg}")
    check(cfg["ports"][0] == {"protocol": "tcp", "host_port": 20080, "vm_port": 80, "host_address": "127.0.0.1"}, f"ports: {cfg['ports']}")
    mac = inf["interfaces"][0]["mac"]
    hh = hashlib.sha256(vid.encode()).digest()
    want_mac = ":".join("%02x" % x for x in bytes([(hh[0] & 0xFE) | 0x02]) + hh[1:6])
    check(mac == want_mac, f"MAC {mac} != {want_mac}")
    check(rpc("GetInfo", {"id": "no-such-vm"}) == {"found": False}, "GetInfo unknown id")
    ok("info: status, configuration read back from shared/, MAC = sha256(id) rule, unknown id")

    # ---- logs ------------------------------------------------------------------------------
    with open(os.path.join(vm_dir(vid), "serial.log"), "w") as f:
        for n in range(30):
            f.write(f"line {n} \x1b[1;32mgreen\x1b[0m\n")
    st, data, _ = hreq("GET", f"/logs?id={vid}&follow=false&ansi=false&lines=20", headers={"Authorization": BASIC, "Content-Type": "application/json"})
    lines = data.decode().splitlines()
    check(st == 200 and len(lines) == 20 and lines[0] == "line 10 green" and lines[-1] == "line 29 green", f"logs tail: {st} {lines[:2]}")
    st, data, _ = hreq("GET", f"/logs?id={vid}&follow=false&ansi=true&lines=1", headers={"Authorization": BASIC})
    check(data == b"line 29 \x1b[1;32mgreen\x1b[0m\n", f"logs ansi=true: {data!r}")
    st, data, _ = hreq("GET", f"/logs?id={vid}&follow=true&ansi=false&lines=2", headers={"Authorization": BASIC})
    check(st == 200 and data.decode().splitlines() == ["line 28 green", "line 29 green"], f"follow on a stopped VM: {data!r}")
    st, _, _ = hreq("GET", f"/logs?id={vid}&lines=5", headers={})
    check(st == 401, f"logs without credentials: {st}")
    st, _, _ = hreq("POST", "/guest/Info?json", {"id": vid}, {"Content-Type": "application/json"})
    check(st == 401, f"guest API without credentials: {st}")
    st, _, _ = hreq("GET", "/logs?id=nope&lines=5", headers={"Authorization": BASIC})
    check(st == 404, f"logs unknown VM: {st}")
    st, data, _ = hreq("GET", f"/logs?id={vid}&ch=stderr", headers={"Authorization": BASIC})
    check(st == 200 and data == b"", f"logs ch=stderr: {st} {data!r}")
    st, _, _ = hreq("GET", f"/logs?id={vid}&ch=bogus", headers={"Authorization": BASIC})
    check(st == 400, "logs bad channel")
    ok("logs: tail N lines, ANSI stripped unless ansi=true, follow on a stopped VM, 404, channels")

    # ---- start without a usable backend / stop -----------------------------------------------
    before = snapshot()
    err = rpc_err("StartVm", {"id": vid}, "no backend can start VMs here")
    check("qemu not found" in err, f"start error names qemu: {err}")
    check(snapshot() == before, "failed StartVm changed the run dir")
    check(status_of(vid) == "stopped", "status after failed start")
    rpc("StopVm", {"id": vid})
    check(json.loads(read(os.path.join(vm_dir(vid), "vm-state.json"))) == {"started": False}, "StopVm state")
    check(status_of(vid) == "stopped", "status after stop")
    rpc_err("ShutdownVm", {"id": vid}, "VM is not running")
    rpc_err("StartVm", {"id": "nope"}, "VM not found")
    before = snapshot()
    rpc_err("CreateVm", deploy("will-fail", compose("will-fail"), [], stopped=False), "no backend can start VMs here")
    check(snapshot() == before, "CreateVm with a failed start left files")
    check(rpc("Status")["total"] == 3, "CreateVm with a failed start left a VM")
    ok("start: clear no-backend error, nothing changed; stop; shutdown of a stopped VM; create+start failure leaves nothing")

    # an image older than 0.5.0 deploys but cannot start (host-side.md §1.4)
    old_img = os.path.join(os.path.dirname(IMAGE_DIR), "dstack-0.4.2")
    os.makedirs(old_img)
    for f in ("bzImage", "initramfs.cpio.gz", "ovmf.fd"):
        with open(os.path.join(old_img, f), "w") as fh:
            fh.write("x")
    with open(os.path.join(old_img, "metadata.json"), "w") as fh:
        json.dump({"kernel": "bzImage", "initrd": "initramfs.cpio.gz", "bios": "ovmf.fd", "cmdline": ""}, fh)
    check([i["version"] for i in rpc("ListImages")["images"] if i["name"] == "dstack-0.4.2"] == ["0.4.2"], "version guessed from the dir name")
    import shutil
    shutil.rmtree(old_img)

    # ---- bad inputs change nothing -----------------------------------------------------------
    before = snapshot()
    rpc_err("CreateVm", deploy("bad/name", c1), "Invalid VM name")
    rpc_err("CreateVm", deploy("", c1), "Invalid VM name")
    rpc_err("CreateVm", deploy("ok", c1, image="no-such-image"), "Image not found")
    rpc_err("CreateVm", deploy("ok", c1, image="../images"), "Invalid image name")
    rpc_err("CreateVm", deploy("ok", c1, image="broken"), "not a file inside the image")
    rpc_err("CreateVm", deploy("ok", "{}"), "Invalid compose file")
    rpc_err("CreateVm", deploy("ok", c1, vcpu=0), "must be greater than 0")
    rpc_err("CreateVm", deploy("ok", c1, app_id="xyz"), "Invalid app_id")
    rpc_err("CreateVm", deploy("ok", c1, simulated_tee="dstack-foo"), "Invalid simulated_tee")
    rpc_err("CreateVm", deploy("ok", c1, kms_urls=["ftp://x"]), "Invalid kms_urls")
    rpc_err("CreateVm", deploy("ok", c1, gpus={"attach_mode": "all"}), "GPU passthrough")
    rpc_err("CreateVm", deploy("ok", c1, networking={"mode": "passt"}), "Invalid networking mode")
    dup = [{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": 20100, "vm_port": 80},
           {"protocol": "tcp", "host_address": "0.0.0.0", "host_port": 20100, "vm_port": 81}]
    rpc_err("CreateVm", deploy("ok", c1, dup), "mapped twice")
    across = [{"protocol": "tcp", "host_address": "", "host_port": 20080, "vm_port": 8080}]
    e = rpc_err("CreateVm", deploy("ok", c1, across), "already in use by VM")
    check(vid in e, f"conflict error does not name the VM: {e}")
    rpc_err("CreateVm", deploy("ok", c1, [{"protocol": "tcp", "host_port": 8080, "vm_port": 80}]), "not allowed")
    rpc_err("CreateVm", deploy("ok", c1, [{"protocol": "sctp", "host_port": 20200, "vm_port": 80}]), "Invalid protocol")
    rpc_err("CreateVm", None, "", raw=b'{"name": "x", ')
    rpc_err("CreateVm", None, "", raw=b'[1, 2]')
    rpc_err("CreateVm", deploy("ok", c1, vcpu="many"), "failed to decode request")
    big = compose("big", {"docker_compose_file": "x" * (5 * 1024 * 1024)})
    st, data, _ = hreq("POST", "/prpc/CreateVm?json", deploy("big", big), {"Authorization": BASIC, "Content-Type": "application/json"})
    check(st == 400 and b"compose_file" in data, f"oversized compose: {st} {data[:200]!r}")
    rpc_err("ResizeVm", {"id": vid, "disk_size": 10}, "Cannot shrink disk")
    rpc_err("ResizeVm", {"id": vid}, "at least one of")
    rpc_err("ResizeVm", {"id": vid, "image": "no-such-image"}, "Image not found")
    rpc_err("UpgradeApp", {"id": vid, "compose_file": "[]"}, "Invalid compose file")
    rpc_err("UpgradeApp", {"id": vid, "update_ports": True, "ports": [{"protocol": "tcp", "host_port": 20300, "vm_port": 1}]}, "host_address is required")
    rpc_err("UpgradeApp", {"id": vid2, "update_ports": True, "ports": [{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": 20080, "vm_port": 1}]}, "already in use by VM")
    rpc_err("UpgradeApp", {"id": "missing", "compose_file": c1}, "VM not found")
    rpc_err("GetAppEnvEncryptPubKey", {"app_id": app_id}, "failed to get the app env pubkey from the KMS")
    st, data, _ = hreq("POST", "/guest/Info?json", {"id": vid}, {"Authorization": BASIC, "Content-Type": "application/json"})
    check(st == 400 and b"VM is not running" in data, f"guest Info on a stopped VM: {data!r}")
    check(snapshot() == before, "a refused request changed the run dir")
    ok("bad inputs: names, images, compose, sizes, app_id, ports (range, protocol, dup, across VMs), "
       "malformed JSON, oversized compose, disk shrink, update errors, KMS down, guest API: "
       "specific errors and the run dir unchanged")

    # ---- update-app-compose / ports / resize -------------------------------------------------
    c1b = compose("app-one", {"public_logs": False})
    r = rpc("UpgradeApp", {"id": vid, "compose_file": c1b})
    check(r["id"] == hashlib.sha256(c1b.encode()).hexdigest()[:40], f"UpgradeApp id: {r}")
    check(read(os.path.join(vm_dir(vid), "shared/app-compose.json"), "rb") == c1b.encode(), "compose not replaced")
    man = json.loads(read(os.path.join(vm_dir(vid), "vm-manifest.json")))
    check(man["app_id"] == app_id, "UpdateVm changed app_id")
    r = rpc("UpdateVm", {"id": vid, "update_ports": True, "ports": [{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": 20081, "vm_port": 8080}],
                         "user_config": "new-config", "update_kms_urls": True, "kms_urls": ["https://kms.example:8000"]})
    check(r["id"] == "", f"UpdateVm without compose: id {r}")
    man = json.loads(read(os.path.join(vm_dir(vid), "vm-manifest.json")))
    check(man["port_map"] == [{"address": "127.0.0.1", "protocol": "tcp", "from": 20081, "to": 8080}], f"ports not updated: {man['port_map']}")
    check(man["kms_urls"] == ["https://kms.example:8000"], "kms_urls not updated")
    check(read(os.path.join(vm_dir(vid), "shared/.user-config")) == "new-config", "user_config not updated")
    # the freed port is usable by another VM now
    rpc("UpgradeApp", {"id": vid2, "update_ports": True, "ports": [{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": 20080, "vm_port": 1}]})
    rpc("ResizeVm", {"id": vid, "vcpu": 2, "memory": 2048, "disk_size": 30})
    man = json.loads(read(os.path.join(vm_dir(vid), "vm-manifest.json")))
    check(man["vcpu"] == 2 and man["memory"] == 2048 and man["disk_size"] == 30, f"resize: {man}")
    ok("update-app-compose (id = compose hash prefix, app_id kept), update ports/user_config/kms_urls, resize")

    # ---- host API (per-VM unix socket) ---------------------------------------------------------
    hs = os.path.join(vm_dir(vid), "host-api.sock")
    st, data = unix_post(hs, "/api/Info?json", {}, auth=False)
    check(st == 200 and json.loads(data)["name"] == "dstack VMM", f"host API Info: {data!r}")
    st, _ = unix_post(hs, "/api/Notify?json", {"event": "boot.progress", "payload": "starting containers"}, auth=False)
    check(st == 200, "Notify boot.progress")
    iid = "11" * 20
    ii = json.dumps({"instance_id_seed": "22" * 20, "instance_id": iid, "app_id": app_id})
    st, _ = unix_post(hs, "/api/Notify?json", {"event": "instance.info", "payload": ii}, auth=False)
    check(st == 200, "Notify instance.info")
    st, _ = unix_post(hs, "/api/Notify?json", {"event": "boot.error", "payload": "x" * 5000}, auth=False)
    check(st == 200, "Notify oversized payload")
    st, data = unix_post(hs, "/api/GetSealingKey?json", {"quote": "00"}, auth=False)
    check(st == 400 and b"not supported" in data, f"GetSealingKey: {data!r}")
    inf = rpc("GetInfo", {"id": vid})["info"]
    check(inf["boot_progress"] == "starting containers", f"boot_progress: {inf['boot_progress']}")
    check(inf["boot_error"] == "", "oversized payload was not dropped")
    check(inf.get("instance_id") == iid, f"instance_id: {inf.get('instance_id')}")
    check(inf.get("app_url") == f"https://{iid}-8090.localhost:8082", f"app_url: {inf.get('app_url')}")
    check([e["event"] for e in inf["events"]] == ["boot.progress", "instance.info"], f"events: {inf['events']}")
    check(read(os.path.join(vm_dir(vid), "shared/.instance_info")) == ii, ".instance_info not replaced")
    ok("host API: Info, Notify (boot.progress, instance.info -> .instance_info, app_url), 4 KiB cap, GetSealingKey error")

    # ---- remove -----------------------------------------------------------------------------
    rpc("RemoveVm", {"id": vid3})
    for _ in range(50):
        if not os.path.exists(vm_dir(vid3)):
            break
        time.sleep(0.1)
    check(not os.path.exists(vm_dir(vid3)), "removed VM dir still there")
    check(vid3 not in [x["id"] for x in rpc("Status")["vms"]], "removed VM still listed")
    check(not any(n.startswith(".removing-") for n in os.listdir(RUN)), ".removing- dir left")
    ok("remove: directory and record gone")

    # ---- ReloadVms: a VM directory that appears on disk is picked up -------------------------
    import shutil
    clone = "0a0b0c0d-1111-4222-8333-444455556666"
    shutil.copytree(vm_dir(vid2), vm_dir(clone), ignore=shutil.ignore_patterns("*.sock"))
    mf = os.path.join(vm_dir(clone), "vm-manifest.json")
    m = json.loads(read(mf))
    m["id"] = clone
    m["name"] = "cloned"
    m["port_map"] = []
    m["created_at_ms"] += 1000
    with open(mf, "w") as f:
        json.dump(m, f)
    r = rpc("ReloadVms")
    check(r == {"loaded": 1, "updated": 0, "removed": 0}, f"ReloadVms: {r}")
    check(rpc("GetInfo", {"id": clone})["info"]["name"] == "cloned", "reloaded VM")
    ok("ReloadVms picks up a new VM directory")

    with open(STATE, "w") as f:
        json.dump({"vid": vid, "vid2": vid2, "clone": clone}, f)


def phase2():
    s = json.load(open(STATE))
    vms = rpc("Status")["vms"]
    ids = sorted(x["id"] for x in vms)
    check(ids == sorted([s["vid"], s["vid2"], s["clone"]]), f"after restart: {ids}")
    check(all(x["status"] == "stopped" for x in vms), "desired state stopped not kept")
    inf = rpc("GetInfo", {"id": s["vid"]})["info"]
    check(inf["configuration"]["vcpu"] == 2 and inf.get("instance_id") == "11" * 20, f"state after restart: {inf}")
    ok("restart: every VM back, desired state honoured, manifests and shared files intact")
    for vid in (s["vid"], s["vid2"], s["clone"]):
        rpc("RemoveVm", {"id": vid})
    time.sleep(0.3)
    check(rpc("Status")["total"] == 0 and snapshot() == {}, f"run dir not empty: {snapshot()}")
    ok("remove all: run dir empty")


def phase3_qemu():
    # an image older than 0.5.0 cannot start (§1.4), whatever the backend can do
    old_img = os.path.join(os.path.dirname(IMAGE_DIR), "dstack-0.4.2")
    os.makedirs(old_img, exist_ok=True)
    for f in ("bzImage", "initramfs.cpio.gz", "ovmf.fd"):
        with open(os.path.join(old_img, f), "w") as fh:
            fh.write("x")
    with open(os.path.join(old_img, "metadata.json"), "w") as fh:
        json.dump({"kernel": "bzImage", "initrd": "initramfs.cpio.gz", "bios": "ovmf.fd", "cmdline": ""}, fh)
    vold = rpc("CreateVm", deploy("old-image", compose("old"), [], image="dstack-0.4.2"))["id"]
    err = rpc_err("StartVm", {"id": vold}, "need >= 0.5.0")
    check(status_of(vold) == "stopped", "old image: state changed")
    rpc("RemoveVm", {"id": vold})
    ok(f"image 0.4.2 refused at start: {err}")
    c = compose("qemu-app")
    vid = rpc("CreateVm", deploy("qemu-app", c, [], stopped=True))["id"]
    try:
        rpc("StartVm", {"id": vid})
    except RuntimeError as e:
        check("qemu" in str(e).lower() or "QEMU" in str(e), f"StartVm error not clear: {e}")
        check(status_of(vid) == "stopped", "failed start changed state")
        ok(f"real QEMU start refused clearly: {e}")
        rpc("RemoveVm", {"id": vid})
        return
    st = status_of(vid)
    check(st in ("running", "exited"), f"status after start: {st}")
    check(json.loads(read(os.path.join(vm_dir(vid), "vm-state.json"))) == {"started": True}, "started not persisted")
    sc = json.loads(read(os.path.join(vm_dir(vid), "shared/.sys-config.json")))
    vmc = json.loads(sc["vm_config"])
    check(vmc["os_image_hash"] == read(os.path.join(IMAGE_DIR, "digest.txt")).strip(), f"vm_config os_image_hash: {vmc}")
    pid = int(read(os.path.join(vm_dir(vid), "vm.pid")).split()[0])
    check("===== boot @" in read(os.path.join(vm_dir(vid), "serial.log")), "boot separator missing")
    rpc("StopVm", {"id": vid})
    time.sleep(0.2)
    check(status_of(vid) == "stopped", "status after StopVm")
    check(not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(")")[1].split()[0] == "Z", "QEMU still alive after StopVm")
    rpc("RemoveVm", {"id": vid})
    ok(f"real QEMU: started (status {st}), .sys-config.json written, stopped with SIGKILL, removed")


if __name__ == "__main__":
    {"phase1": phase1, "phase2": phase2, "qemu": phase3_qemu}[sys.argv[1]]()
