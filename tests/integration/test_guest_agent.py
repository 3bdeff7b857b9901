# SPDX-License-Identifier: Apache-2.0
"""Method-level checks of dstack-guest-agent, driven by test_guest_agent.sh.

Mode "sim" (default): the agent runs with --simulator; every DstackGuest, Tappd and Worker
method is called over its real listener and checked for real properties (report data inside
the quote, event-log replay equal to the quote's RTMRs, RTMR3 extension by EmitEvent,
certificate contents, error status and messages, robustness against malformed and slow
clients). Responses needed by the shell part are written to $OUT_DIR.
Mode "guest": the agent runs on real-guest input files; GetKey / Sign reproduce the spec's
vectors (guest-agent-api.md §4.3) and the TLS chain ends in the keys file's CA.
Standard library only (plus the openssl binary).
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

AGENT = os.environ["AGENT_SOCK"]
TAPPD = os.environ.get("TAPPD_SOCK", "")
PORT = int(os.environ.get("HTTP_PORT") or 0)
OUT = os.environ.get("OUT_DIR", tempfile.gettempdir())
MODE = sys.argv[1] if len(sys.argv) > 1 else "sim"

failures = 0


def check(cond, name, detail=""):
    global failures
    if cond:
        print("  ok   - " + name)
    else:
        failures += 1
        print("  FAIL - " + name + (": " + str(detail)[:400] if detail else ""))


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=10):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.unix_path)
        self.sock = s


def request(sock, path, body=None, method="POST", ctype="application/json", raw=None,
            headers=None):
    conn = UnixHTTP(sock) if isinstance(sock, str) else http.client.HTTPConnection(
        "127.0.0.1", sock, timeout=10)
    data = raw if raw is not None else ("" if body is None else json.dumps(body))
    h = dict(headers or {})
    if ctype:
        h["Content-Type"] = ctype
    conn.request(method, path, body=data if method != "GET" else None, headers=h)
    resp = conn.getresponse()
    payload = resp.read()
    hdrs = {k.lower(): v for k, v in resp.getheaders()}
    conn.close()
    return resp.status, payload, hdrs


def call(sock, path, body=None, **kw):
    status, payload, _ = request(sock, path, body, **kw)
    try:
        obj = json.loads(payload) if payload else None
    except ValueError:
        obj = None
    return status, obj, payload


def expect_error(sock, path, body, message, name, **kw):
    status, obj, raw = call(sock, path, body, **kw)
    ok = (status == 400 and isinstance(obj, dict) and list(obj) == ["error"] and
          message in obj["error"] and raw.startswith(b'{\n  "error": '))
    check(ok, name, (status, raw[:200]))


def sha384(b):
    return hashlib.sha384(b).digest()


def quote_regs(q):
    """MRTD, RTMR0-3 and report data of a TDX v4 quote (spec §4.8 offsets)."""
    return {"mrtd": q[184:232], "rtmr": [q[376 + 48 * i:424 + 48 * i] for i in range(4)],
            "report_data": q[568:632]}


def replay(log):
    rtmr = [b"\0" * 48 for _ in range(4)]
    for ev in log:
        d = bytes.fromhex(ev["digest"])
        d = d + b"\0" * (48 - len(d))
        rtmr[ev["imr"]] = sha384(rtmr[ev["imr"]] + d)
    return rtmr


def runtime_digest(name, payload):
    return sha384(b"\x01\x00\x00\x08:" + name.encode() + b":" + payload)


def openssl(args, data):
    return subprocess.run(["openssl"] + args, input=data, capture_output=True)


def pem_der(pem, label):
    body = pem.split("-----BEGIN %s-----" % label)[1].split("-----END")[0]
    return base64.b64decode("".join(body.split()))


def cert_text(pem):
    return openssl(["x509", "-noout", "-text"], pem.encode()).stdout.decode()


def hkdf_ratls(ikm, info):
    prk = hmac.new(b"RATLS", ikm, hashlib.sha256).digest()
    return hmac.new(prk, info + b"\x01", hashlib.sha256).digest()


PKCS8_P256_PREFIX = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"


# ---------------------------------------------------------------------------------------------
def test_version_and_info():
    st, v, _ = call(AGENT, "/Version", {})
    check(st == 200 and v["version"] and "rev" in v, "Version", v)
    # rev is the build's git revision (CMake DS_GIT_REV): in a git checkout it names a commit
    # of this repository (HEAD may have moved since configure, so not compared to HEAD).
    src = os.environ.get("DS_SRC", "")
    if src and subprocess.run(["git", "-C", src, "rev-parse", "--git-dir"],
                              capture_output=True).returncode == 0:
        ok = v.get("rev", "unknown") != "unknown" and subprocess.run(
            ["git", "-C", src, "cat-file", "-e", v["rev"] + "^{commit}"],
            capture_output=True).returncode == 0
        check(ok, "Version.rev is a commit of this checkout", v.get("rev"))
    st, info, raw = call(AGENT, "/Info", {})
    keys = ["app_id", "instance_id", "app_cert", "tcb_info", "app_name", "device_id",
            "mr_aggregated", "os_image_hash", "key_provider_info", "compose_hash", "vm_config",
            "cloud_vendor", "cloud_product"]
    check(st == 200 and list(info) == keys, "Info has every field in proto order", list(info))
    check(raw.decode() == json.dumps(info, separators=(",", ":")), "Info is compact ASCII JSON")
    check(len(info["app_id"]) == 40 and len(info["instance_id"]) == 40, "app_id / instance_id")
    check(info["app_cert"].startswith("-----BEGIN CERTIFICATE-----"), "app_cert issued")
    check(info["device_id"] == hashlib.sha256(b"").hexdigest(), "device_id = sha256('')")
    tcb = json.loads(info["tcb_info"])
    check(info["tcb_info"].startswith('{\n  "mrtd": '), "tcb_info pretty-printed, 2 spaces")
    check(list(tcb) == ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3", "mr_aggregated",
                        "os_image_hash", "compose_hash", "device_id", "event_log",
                        "app_compose"], "tcb_info keys", list(tcb))
    check(all(len(tcb[k]) == 96 for k in ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"]),
          "tcb_info registers are 96 hex")
    check(hashlib.sha256(tcb["app_compose"].encode()).hexdigest() == info["compose_hash"] ==
          tcb["compose_hash"], "compose_hash = sha256(app_compose)")
    check(len(tcb["event_log"]) > 10 and all(
        list(e)[:5] == ["imr", "event_type", "digest", "event", "event_payload"]
        for e in tcb["event_log"]), "tcb_info.event_log entries")
    check([bytes.fromhex(tcb["rtmr%d" % i]) for i in range(4)] == replay(tcb["event_log"]),
          "tcb_info.event_log replays to tcb_info RTMRs")
    agg = hashlib.sha256(b"".join(bytes.fromhex(tcb[k]) for k in
                                  ["mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"])).hexdigest()
    check(info["mr_aggregated"] == agg, "mr_aggregated = sha256(mrtd||rtmr0..3)")
    vm = json.loads(info["vm_config"])
    check(vm["os_image_hash"] == info["os_image_hash"], "os_image_hash from vm_config")
    kp = json.loads(info["key_provider_info"])
    check(kp["name"] == "kms" and len(kp["id"]) == 182, "key_provider_info", kp)
    check(info["app_name"] == "dstack-dev-app", "app_name from compose")
    # GET, empty POST body and any body give the same answer (Empty request, §2.3).
    st2, info2, _ = call(AGENT, "/Info", method="GET")
    st3, info3, _ = call(AGENT, "/Info", raw="garbage that is never parsed")
    check(st2 == 200 and st3 == 200 and info2 == info == info3, "Info via GET / any body")
    st, tinfo, _ = call(TAPPD, "/prpc/Tappd.Info", {})
    check(st == 200 and tinfo["app_id"] == info["app_id"], "Tappd.Info")
    json.dump(info, open(os.path.join(OUT, "info.json"), "w"))
    return info


def test_get_quote():
    st, r, raw = call(AGENT, "/GetQuote", {"report_data": b"test".hex()})
    check(st == 200 and list(r) == ["quote", "event_log", "report_data", "vm_config"],
          "GetQuote fields (attestation omitted)", list(r) if r else raw)
    q = bytes.fromhex(r["quote"])
    regs = quote_regs(q)
    check(q[0:2] == b"\x04\x00" and q[4:8] == b"\x81\0\0\0", "TDX v4 quote")
    check(regs["report_data"] == b"test" + b"\0" * 60, "quote report_data = test + 60 zeros")
    check(r["report_data"] == (b"test" + b"\0" * 60).hex(), "response report_data padded")
    log = json.loads(r["event_log"])
    check(replay(log) == regs["rtmr"], "replayRtmrs(event_log) == quote RTMRs")
    check(any(e["event"] == "system-ready" for e in log), "runtime events in the log")
    check(json.loads(r["vm_config"])["cpu_count"] == 1, "vm_config")
    json.dump(r, open(os.path.join(OUT, "getquote.json"), "w"))
    # GET with the query string, 0x prefixes, upper case hex.
    rd = "AB" * 64
    st, g, _ = call(AGENT, "/GetQuote?report_data=0x0x" + rd, method="GET")
    check(st == 200 and quote_regs(bytes.fromhex(g["quote"]))["report_data"] == b"\xab" * 64,
          "GET /GetQuote?report_data=0x0x<HEX>")
    st, e, _ = call(AGENT, "/GetQuote", {})
    check(st == 200 and e["report_data"] == "00" * 64, "empty body = default request")
    expect_error(AGENT, "/GetQuote", {"report_data": "00" * 65}, "Report data is too long",
                 "65-byte report data")
    expect_error(AGENT, "/Attest", {"report_data": "00" * 65}, "Report data is too long",
                 "Attest: 65-byte report data")
    expect_error(AGENT, "/GetQuote", {"report_data": "abc"}, "report_data", "odd-length hex")
    expect_error(AGENT, "/GetQuote", {"report_data": "zz"}, "report_data", "non-hex")
    expect_error(AGENT, "/GetQuote", {"report_data": None}, "report_data", "null bytes field")
    return regs


def test_attest():
    st, r, _ = call(AGENT, "/Attest", {"report_data": b"test".hex()})
    a = bytes.fromhex(r["attestation"])
    check(st == 200 and a[0] == 0 and a[1] == 0, "Attest: V0 SCALE, DstackTdx")
    # compact length of the quote, then the quote itself
    mode = a[2] & 3
    if mode == 1:
        n, off = int.from_bytes(a[2:4], "little") >> 2, 4
    elif mode == 2:
        n, off = int.from_bytes(a[2:6], "little") >> 2, 6
    else:
        n, off = a[2] >> 2, 3
    q = a[off:off + n]
    check(quote_regs(q)["report_data"] == b"test" + b"\0" * 60,
          "Attest: embedded quote carries the report data")
    check((b"test" + b"\0" * 60) in a[off + n:], "Attest: stack report_data")


def test_emit_event(before):
    payload = bytes.fromhex("cafe00")
    st, r, raw = call(AGENT, "/EmitEvent", {"event": "test-event", "payload": payload.hex()})
    check(st == 200 and raw == b"null", "EmitEvent answers null", raw)
    st, q, _ = call(AGENT, "/GetQuote", {"report_data": ""})
    after = quote_regs(bytes.fromhex(q["quote"]))
    want = sha384(before["rtmr"][3] + runtime_digest("test-event", payload))
    check(after["rtmr"][3] == want, "EmitEvent: RTMR3' = sha384(RTMR3 || V1 digest)")
    check(after["rtmr"][:3] == before["rtmr"][:3], "EmitEvent leaves RTMR0-2")
    log = json.loads(q["event_log"])
    check(log[-1]["event"] == "test-event" and log[-1]["event_payload"] == payload.hex() and
          log[-1]["imr"] == 3 and log[-1]["event_type"] == 0x08000001, "event appended to log")
    check(replay(log) == after["rtmr"], "log still replays after EmitEvent")
    st, info, _ = call(AGENT, "/Info", {})
    check(json.loads(info["tcb_info"])["rtmr3"] == want.hex(), "Info sees the new RTMR3")
    expect_error(AGENT, "/EmitEvent", {"payload": "00"}, "event name is empty", "EmitEvent: no name")
    json.dump(q, open(os.path.join(OUT, "getquote.json"), "w"))  # now with the app event


def test_get_key():
    st, k, _ = call(AGENT, "/GetKey", {"path": "/test/path", "purpose": "test-purpose"})
    check(st == 200 and len(bytes.fromhex(k["key"])) == 32 and len(k["signature_chain"]) == 2 and
          all(len(s) == 130 for s in k["signature_chain"]), "GetKey shape")
    json.dump(k, open(os.path.join(OUT, "getkey.json"), "w"))
    st, d, _ = call(AGENT, "/GetKey", raw="")
    check(st == 200 and len(d["key"]) == 64, "GetKey with an empty body")
    same = [call(AGENT, "/GetKey", {"path": "p", "algorithm": a})[1]["key"]
            for a in ["secp256k1", "k256", "", "ed25519"]]
    check(len(set(same)) == 1, "secp256k1 / k256 / '' / ed25519 give the same 32 bytes")
    st, g, _ = call(AGENT, "/GetKey?path=p&purpose=signing&algorithm=ed25519", method="GET")
    check(st == 200 and g["key"] == same[0], "GET /GetKey?path=..&algorithm=ed25519")
    expect_error(AGENT, "/GetKey", {"algorithm": "rsa"}, "Unsupported algorithm", "GetKey rsa")
    expect_error(AGENT, "/GetKey", {"algorithm": "secp256k1_prehashed"}, "Unsupported algorithm",
                 "GetKey secp256k1_prehashed")
    expect_error(AGENT, "/GetKey", {"path": 1}, "path", "GetKey path not a string")
    st, _, _ = call(AGENT, "/GetKey", {"path": "x", "unknown_field": [1, {"a": None}]})
    check(st == 200, "unknown keys are ignored")
    st, dk, _ = call(TAPPD, "/prpc/Tappd.DeriveK256Key", {"path": "/test/path",
                                                          "purpose": "test-purpose"})
    check(st == 200 and list(dk) == ["k256_key", "k256_signature_chain"] and
          dk["k256_key"] == k["key"] and dk["k256_signature_chain"] == k["signature_chain"],
          "DeriveK256Key = GetKey under legacy names")
    return k


def test_sign_verify():
    data = b"hello dstack"
    for alg, msg in [("ed25519", data), ("secp256k1", data),
                     ("secp256k1_prehashed", hashlib.sha256(data).digest())]:
        st, s, raw = call(AGENT, "/Sign", {"algorithm": alg, "data": msg.hex()})
        ok = st == 200 and list(s) == ["signature", "signature_chain", "public_key"]
        check(ok and len(s["signature_chain"]) == 3 and len(s["signature"]) == 128 and
              s["signature_chain"][0] == s["signature"], "Sign %s" % alg, raw[:200])
        if not ok:
            continue
        if alg == "secp256k1":
            json.dump(s, open(os.path.join(OUT, "sign.json"), "w"))
        v = {"algorithm": alg, "data": msg.hex(), "signature": s["signature"],
             "public_key": s["public_key"]}
        st, r, _ = call(AGENT, "/Verify", v)
        check(st == 200 and r == {"valid": True}, "Verify %s: valid" % alg)
        bad = dict(v, data=(b"X" + msg[1:]).hex())
        st, r, _ = call(AGENT, "/Verify", bad)
        check(st == 200 and r == {"valid": False}, "Verify %s: tampered data is false" % alg)
    expect_error(AGENT, "/Sign", {"algorithm": "secp256k1_prehashed", "data": "00" * 31},
                 "Pre-hashed signing requires a 32-byte digest, but received 31 bytes",
                 "prehashed with 31 bytes")
    expect_error(AGENT, "/Sign", {"algorithm": "rsa", "data": "00"}, "Unsupported algorithm",
                 "Sign rsa")
    expect_error(AGENT, "/Verify", {"algorithm": "ed25519", "data": "00", "signature": "00" * 64,
                                    "public_key": "00" * 31}, "", "Verify: bad key length is 400")


def test_tls_keys():
    base = {"subject": "", "usage_ra_tls": False, "usage_server_auth": True,
            "usage_client_auth": False}
    st, a, _ = call(AGENT, "/GetTlsKey", base)
    st2, b, _ = call(AGENT, "/GetTlsKey", base)
    check(st == 200 and a["key"].startswith(PKCS8_P256_PREFIX), "GetTlsKey PKCS#8 PEM layout")
    check(len(pem_der(a["key"], "PRIVATE KEY")) == 138, "PKCS#8 DER is 138 bytes")
    check(st2 == 200 and a["key"] != b["key"], "GetTlsKey keys are fresh per call")
    leaf, ca = a["certificate_chain"]
    text = cert_text(leaf)
    check("Subject Alternative Name" not in text, "no SAN extension without alt names")
    check("TLS Web Server Authentication" in text and "Client Authentication" not in text,
          "EKU serverAuth only")
    check("Digital Signature" in text and "1.3.6.1.4.1.62397.1.4" in text and
          "1.3.6.1.4.1.62397.1.8" not in text, "KeyUsage, app:custom usage, no attestation")
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as caf:
        caf.write(ca)
        caf.flush()
        v = openssl(["verify", "-CAfile", caf.name], leaf.encode())
        check(v.returncode == 0, "leaf verifies against the chain's CA", v.stdout + v.stderr)
    # The certificate's public key is the returned key's.
    pub_leaf = openssl(["x509", "-noout", "-pubkey"], leaf.encode()).stdout
    pub_key = openssl(["pkey", "-pubout"], a["key"].encode()).stdout
    check(pub_leaf and pub_leaf == pub_key, "certificate is for the returned key")

    req = {"subject": "test-subject", "usage_ra_tls": True, "usage_server_auth": True,
           "usage_client_auth": True, "alt_names": ["localhost", "127.0.0.1", "::1"],
           "with_app_info": True}
    st, r, raw = call(AGENT, "/GetTlsKey", req)
    check(st == 200, "GetTlsKey RA-TLS + alt names + app info", raw[:200])
    leaf = r["certificate_chain"][0]
    text = cert_text(leaf)
    check("CN = test-subject" in text or "CN=test-subject" in text, "subject CN")
    check("DNS:localhost" in text and "IP Address:127.0.0.1" in text and
          "IP Address:0:0:0:0:0:0:0:1" in text, "DNS and IP SANs")
    check("TLS Web Server Authentication" in text and "TLS Web Client Authentication" in text,
          "EKU server + client")
    check("1.3.6.1.4.1.62397.1.8" in text and "1.3.6.1.4.1.62397.1.9" in text,
          "attestation and app-info extensions")
    spki = openssl(["pkey", "-pubin", "-outform", "DER"], pub_of(leaf)).stdout
    rd = hashlib.sha512(b"ratls-cert:" + spki).digest()
    check(len(spki) == 91 and rd in pem_der(leaf, "CERTIFICATE"),
          "attestation quote bound to SHA-512('ratls-cert:' || SPKI)")
    st, v, _ = call(AGENT, "/GetTlsKey", {"not_before": 1700000000, "not_after": 1800000000,
                                          "usage_client_auth": True})
    text = cert_text(v["certificate_chain"][0])
    check("Nov 14 22:13:20 2023 GMT" in text and "Jan 15 08:00:00 2027 GMT" in text and
          "TLS Web Server Authentication" not in text, "explicit validity, client-only EKU")
    st, n, _ = call(AGENT, "/GetTlsKey", {"not_before": None, "not_after": None})
    text = cert_text(n["certificate_chain"][0])
    check(st == 200 and "Jan  1 00:00:00 1975 GMT" in text and "Extended Key Usage" not in text,
          "null validity = defaults (1975), no EKU")
    expect_error(AGENT, "/GetTlsKey", {"not_before": 5, "not_after": 5},
                 "not_before must be earlier than not_after", "not_before >= not_after")
    expect_error(AGENT, "/GetTlsKey", {"usage_ra_tls": "yes"}, "usage_ra_tls", "bool as string")
    expect_error(AGENT, "/GetTlsKey", {"alt_names": "localhost"}, "alt_names", "list as string")


def pub_of(cert_pem):
    return openssl(["x509", "-noout", "-pubkey"], cert_pem.encode()).stdout


def test_tappd():
    st, a, _ = call(TAPPD, "/prpc/Tappd.DeriveKey", {"path": "/", "subject": "test"})
    st2, b, _ = call(TAPPD, "/prpc/DeriveKey", {"path": "/", "subject": "test"})
    check(st == 200 and st2 == 200 and a["key"] == b["key"] and
          a["key"].startswith(PKCS8_P256_PREFIX), "DeriveKey deterministic per path, both routes")
    st, c, _ = call(TAPPD, "/prpc/Tappd.DeriveKey", {"path": "/", "random_seed": True})
    check(st == 200 and c["key"] != a["key"], "DeriveKey random_seed")
    st, q, _ = call(TAPPD, "/prpc/Tappd.TdxQuote", {"report_data": b"test data".hex()})
    check(st == 200 and q["hash_algorithm"] == "sha512" and q["prefix"] == "app-data" and
          list(q) == ["quote", "event_log", "hash_algorithm", "prefix"], "TdxQuote defaults")
    check(quote_regs(bytes.fromhex(q["quote"]))["report_data"] ==
          hashlib.sha512(b"app-data:test data").digest(), "TdxQuote rd = sha512(app-data:..)")
    check(json.loads(q["event_log"]), "TdxQuote event_log")
    st, q, _ = call(TAPPD, "/prpc/Tappd.TdxQuote", {"report_data": b"test data".hex(),
                                                   "hash_algorithm": "sha256", "prefix": "p"})
    check(quote_regs(bytes.fromhex(q["quote"]))["report_data"] ==
          hashlib.sha256(b"p:test data").digest() + b"\0" * 32 and q["prefix"] == "p",
          "TdxQuote sha256 with a prefix, zero-padded")
    st, q, _ = call(TAPPD, "/prpc/Tappd.TdxQuote", {"report_data": "11" * 64,
                                                   "hash_algorithm": "raw"})
    check(st == 200 and q["prefix"] == "" and
          quote_regs(bytes.fromhex(q["quote"]))["report_data"] == b"\x11" * 64, "TdxQuote raw")
    expect_error(TAPPD, "/prpc/Tappd.TdxQuote", {"report_data": "11", "hash_algorithm": "raw"},
                 "invalid content length", "TdxQuote raw with 1 byte")
    expect_error(TAPPD, "/prpc/Tappd.TdxQuote", {"report_data": "11", "hash_algorithm": "md5"},
                 "invalid hash algorithm", "TdxQuote md5")
    st, q, _ = call(TAPPD, "/prpc/Tappd.RawQuote?report_data=" + "22" * 64, method="GET")
    check(st == 200 and q["hash_algorithm"] == "raw" and
          quote_regs(bytes.fromhex(q["quote"]))["report_data"] == b"\x22" * 64, "GET RawQuote")
    expect_error(TAPPD, "/prpc/Tappd.RawQuote", {"report_data": "22" * 63},
                 "invalid content length", "RawQuote 63 bytes")
    expect_error(TAPPD, "/prpc/Tappd.GetQuote", {}, "Service not found: GetQuote",
                 "tappd has no GetQuote")
    st, _, _ = call(TAPPD, "/GetKey", {})
    check(st == 404, "tappd: /GetKey is no route (404)")


def test_routing_and_errors():
    expect_error(AGENT, "/Nope", {}, "Service not found: Nope", "unknown method")
    expect_error(AGENT, "/DstackGuest.GetKey", {}, "Service not found: DstackGuest.GetKey",
                 "no trimming on dstack.sock")
    st, _, _ = call(AGENT, "/prpc/GetKey", {})
    check(st == 404, "/prpc/GetKey on dstack.sock is 404")
    expect_error(AGENT, "/GetKey", None, "", "invalid JSON", raw="{not json")
    expect_error(AGENT, "/GetKey", None, "", "JSON array body", raw="[1,2]")
    expect_error(AGENT, "/GetKey", None, "", "trailing garbage", raw='{"path":"a"} x')
    st, obj, raw = call(AGENT, "/GetKey", None, raw='{"path":"a"}', ctype=None)
    check(st == 400, "protobuf mode (no content type) is refused with 400", raw[:100])
    st, obj, _ = call(AGENT, "/GetKey?json", None, raw='{"path":"a"}', ctype=None)
    check(st == 200 and len(obj["key"]) == 64, "?json selects JSON mode")
    big = '{"path":"' + "a" * (3 * 1024 * 1024) + '"}'
    try:
        st, obj, raw = call(AGENT, "/GetKey", None, raw=big)
        check(st in (400, 413) and "error" in (obj or {"error": 1}), "oversized body refused",
              (st, raw[:100]))
    except (ConnectionError, OSError) as e:  # closed while we were still sending
        check(True, "oversized body refused (connection closed: %s)" % type(e).__name__)
    st, v, _ = call(AGENT, "/Version", {})
    check(st == 200, "server alive after bad requests")


def test_robustness():
    # A slow client that never finishes its headers must not block others.
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(AGENT)
    slow.sendall(b"POST /GetKey HTTP/1.1\r\nHost: x\r\nContent-Le")
    garbage = socket.socket(socket.AF_UNIX)
    garbage.connect(AGENT)
    garbage.sendall(os.urandom(512))
    t0 = time.time()
    st, _, _ = call(AGENT, "/Info", {})
    dt = time.time() - t0
    check(st == 200 and dt < 0.5, "Info within 500 ms while a slow client holds a connection",
          dt)
    # Half-close after the request (the JS SDK's pattern): full answer, then FIN.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(AGENT)
    body = b'{"path":"x"}'
    s.sendall(b"POST /GetKey HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
    s.shutdown(socket.SHUT_WR)
    data = b""
    t0 = time.time()
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    check(data.startswith(b"HTTP/1.1 200") and b'"key"' in data and time.time() - t0 < 2,
          "half-closed client gets the answer and our FIN")
    s.close()
    # Keep-alive: two requests over one connection, pipelined.
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(AGENT)
    req = (b"POST /Version HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
           b"Content-Length: 2\r\n\r\n{}")
    s.sendall(req + req)
    data = b""
    while data.count(b"HTTP/1.1 200") < 2:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    check(data.count(b"HTTP/1.1 200") == 2, "pipelined keep-alive requests")
    s.close()
    slow.close()
    garbage.close()
    # Clients that vanish while their TEE job is queued or running: replies are dropped.
    body = b'{"usage_ra_tls":true,"subject":"gone"}'
    for _ in range(20):
        g = socket.socket(socket.AF_UNIX)
        g.connect(AGENT)
        g.sendall(b"POST /GetTlsKey HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        g.close()
    st, r, _ = call(AGENT, "/GetQuote", {"report_data": "0102"})
    check(st == 200 and quote_regs(bytes.fromhex(r["quote"]))["report_data"][:2] == b"\1\2",
          "agent fine after 20 clients left before their TEE reply")


def test_concurrency():
    """Many clients at once: TEE work is queued on the worker thread, keys answered inline;
    every answer must belong to its own request."""
    import threading
    results = []

    def quote(i):
        rd = bytes([i]) * 8
        st, r, _ = call(AGENT, "/GetQuote", {"report_data": rd.hex()})
        results.append(st == 200 and
                       quote_regs(bytes.fromhex(r["quote"]))["report_data"][:8] == rd)

    def key(i):
        st, r, _ = call(AGENT, "/GetKey", {"path": "c%d" % i})
        results.append(st == 200 and len(r["key"]) == 64)

    def tls(i):
        st, r, _ = call(AGENT, "/GetTlsKey", {"subject": "c%d" % i, "usage_ra_tls": True})
        results.append(st == 200 and "CN = c%d" % i in cert_text(r["certificate_chain"][0]))

    def info(i):
        st, r, _ = call(TAPPD, "/prpc/Tappd.Info", {})
        results.append(st == 200 and len(r["app_id"]) == 40)

    threads = [threading.Thread(target=f, args=(i,)) for i in range(12)
               for f in (quote, key, tls, info)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(len(results) == 48 and all(results), "48 concurrent mixed requests answered correctly",
          (len(results), results.count(False), time.time() - t0))


def test_external():
    st, page, h = request(PORT, "/", method="GET", ctype=None)
    text = page.decode()
    st_i, info, _ = call(AGENT, "/Info", {})
    check(st == 200 and h.get("content-type", "").startswith("text/html"), "dashboard renders")
    check(info["app_id"] in text and "system-ready" in text and "rtmr3" in text,
          "dashboard shows app id, TCB info and event log")
    check("&quot;docker_compose_file&quot;" in text and '"docker_compose_file"' not in text,
          "compose is HTML-escaped")
    check(h.get("x-app-version", "").startswith("v"), "X-App-Version header", h)
    st, v, _ = call(PORT, "/prpc/Worker.Version", {})
    check(st == 200 and v["version"], "Worker.Version")
    st, wi, _ = call(PORT, "/prpc/Worker.Info", {})
    check(st == 200 and wi["tcb_info"] == info["tcb_info"], "Worker.Info (public_tcbinfo)")
    for alg, prefix, n in [("secp256k1", b"dip1::secp256k1c-pk:", 33),
                           ("ed25519", b"dip1::ed25519-pk:", 32)]:
        st, r, raw = call(PORT, "/prpc/Worker.GetAttestationForAppKey", {"algorithm": alg})
        rd = bytes.fromhex(r["report_data"]) if st == 200 else b""
        ok = st == 200 and rd.startswith(prefix)
        if ok:
            b64 = rd[len(prefix):].rstrip(b"\0")
            key = base64.urlsafe_b64decode(b64 + b"=" * (-len(b64) % 4))
            ok = len(key) == n and quote_regs(bytes.fromhex(r["quote"]))["report_data"] == rd
        check(ok, "GetAttestationForAppKey %s" % alg, raw[:200])
    st, m, _ = request(PORT, "/metrics", method="GET", ctype=None)
    check(st == 200 and b"node_load1" in m, "/metrics with public_sysinfo")
    st, _, _ = request(PORT, "/logs/app", method="GET", ctype=None)
    check(st == 501, "/logs/<container> says not available")
    st, _, _ = request(PORT, "/prpc/GetKey", {}, ctype="application/json")
    check(st == 400, "external: GetKey is not a Worker method")
    # Simulator mode: the same listener also serves the DstackGuest API at /<Method> (so SDKs
    # can use DSTACK_SIMULATOR_ENDPOINT=http://...), GET (query) and POST, with the same keys
    # as dstack.sock; the dashboard above and /prpc/Worker.* still answer.
    args = {"path": "/test/path", "purpose": "test-purpose"}
    _, want, _ = call(AGENT, "/GetKey", args)
    st, got, raw = call(PORT, "/GetKey", args)
    check(st == 200 and got == want, "simulator external: POST /GetKey = dstack.sock", raw[:200])
    st, got, raw = call(PORT, "/GetKey?path=/test/path&purpose=test-purpose", method="GET",
                        ctype=None)
    check(st == 200 and got == want, "simulator external: GET /GetKey?query = dstack.sock",
          raw[:200])
    st, hd_body, h = request(PORT, "/Info", {})
    check(st == 200 and json.loads(hd_body)["app_id"] == info["app_id"] and
          h.get("x-app-version", "").startswith("v"), "simulator external: /Info", hd_body[:200])
    st, q, raw = call(PORT, "/GetQuote", {"report_data": "ab" * 64})
    check(st == 200 and quote_regs(bytes.fromhex(q["quote"]))["report_data"] == b"\xab" * 64,
          "simulator external: /GetQuote binds the report data", raw[:200])
    st, e, _ = call(PORT, "/NoSuchMethod", {})
    check(st == 400 and e == {"error": "Service not found: NoSuchMethod"},
          "simulator external: unknown method", e)
    st, _, _ = request(PORT, "/", {}, method="POST")
    check(st == 405, "simulator external: POST / is the dashboard route (405), not a method", st)


# ---------------------------------------------------------------------------------------------
def guest_mode():
    st, k, _ = call(AGENT, "/GetKey", {"path": "/test/path", "purpose": "test-purpose"})
    check(k["key"] == "b9fbb7171185c421c58610a2acba8ceae93623ae47815618cbad1e98fc042cb7",
          "spec vector: GetKey(/test/path) key")
    check(k["signature_chain"][0] == (
        "f50c51735a97072f0c98125ed61fc84e2fdb36e95990b9e57337dadc0e2a9712"
        "227f04e07209faecb8891d59ec144a6c13e411dc90b3423f28071bd3fe11978d01"),
        "spec vector: RFC 6979 sig0")
    check(k["signature_chain"][1] == "11" * 64 + "00", "k256_signature copied from the keys file")
    for path, key in [("", "aa221ae548b5a8f52fcb8687cfd873712f6a1232b2717e5ee3d58ab74f21905b"),
                      ("/", "f6c1ed94488394d78e0a4e5ab75d62e9f085d73b0b555d0614fb90ca13d9464d")]:
        check(call(AGENT, "/GetKey", {"path": path})[1]["key"] == key, "GetKey(%r)" % path)
    st, s, _ = call(AGENT, "/Sign", {"algorithm": "ed25519", "data": "00"})
    check(s["public_key"] == "698f56bd587d8ce3ca8db0e1c361ba9d190089f98dc4d9df800ff92ed073a65d",
          "Sign ed25519 key = GetKey(vms)")
    st, s, _ = call(AGENT, "/Sign", {"algorithm": "secp256k1", "data": "00"})
    check(s["public_key"] ==
          "036105f01d1fd781568f7c208b087b1c4f522601410ed7e9c7870d573de7c46d54",
          "Sign secp256k1 key = GetKey(vms)")
    st, d, _ = call(TAPPD, "/prpc/Tappd.DeriveKey", {"path": "/"})
    k256 = bytes.fromhex("d6e88992cdeeee35fe70b5db61ab66cdb191fb9b6ec9313757ef162dd7214d5d")
    check(pem_der(d["key"], "PRIVATE KEY")[36:68] == hkdf_ratls(k256, b"/"),
          "DeriveKey scalar = HKDF-SHA256(salt RATLS, k256_key, path)")
    st, t, _ = call(AGENT, "/GetTlsKey", {"subject": "svc"})
    ca = open(os.environ["CA_CERT"]).read()
    check(t["certificate_chain"][1].strip() == ca.strip(), "chain ends in the keys file's CA")
    v = openssl(["verify", "-CAfile", os.environ["CA_CERT"]], t["certificate_chain"][0].encode())
    check(v.returncode == 0, "leaf verifies against the local CA", v.stderr)
    st, info, _ = call(AGENT, "/Info", {})
    check(info["app_name"] == "guest-agent" and info["cloud_vendor"] == "Dstack Test Vendor" and
          info["cloud_product"] == "Product X", "app_name, DMI strings (trimmed)")
    check(json.loads(info["vm_config"])["os_image_hash"] == "64f0d154", "vm_config verbatim")
    check(info["app_id"] == "00112233445566778899aabbccddeeff00112233" and
          info["instance_id"] == "abcdef0123456789abcdef0123456789abcdef01",
          "ids from .instance_info when the event log has none", (info["app_id"],
                                                                 info["instance_id"]))
    check(len(json.loads(info["tcb_info"])["mrtd"]) == 96, "tcb_info on dstack.sock")
    st, wi, _ = call(PORT, "/prpc/Worker.Info", {})
    check(st == 200 and wi["tcb_info"] == "" and wi["vm_config"] == "" and
          wi["app_name"] == "guest-agent", "Worker.Info hides TCB info without public_tcbinfo")
    st, page, _ = request(PORT, "/", method="GET", ctype=None)
    check(st == 200 and b"TCB info is private" in page and b"rtmr3" not in page,
          "dashboard honours public_tcbinfo = false")
    st, _, _ = request(PORT, "/metrics", method="GET", ctype=None)
    check(st == 404, "/metrics absent without public_sysinfo")
    # Real guest: the external listener must not expose the dstack API (the app's private API
    # stays on dstack.sock; only simulator mode serves it over HTTP).
    for method, path in [("POST", "/GetKey"), ("GET", "/GetKey?path=/test/path"),
                         ("POST", "/Info"), ("POST", "/GetQuote"), ("POST", "/Sign"),
                         ("POST", "/GetTlsKey")]:
        st, e, raw = call(PORT, path, {} if method == "POST" else None, method=method,
                          ctype="application/json" if method == "POST" else None)
        check(st == 404 and b"key" not in raw and b"quote" not in raw,
              "real guest: %s %s on the external listener is 404" % (method, path), raw[:200])
    # event_log_version 2: EmitEvent records a V2 event (canonical JSON preimage) and Attest
    # switches to the V1 MessagePack container (§4.10, §4.12).
    st, q0, _ = call(AGENT, "/GetQuote", {})
    r3 = quote_regs(bytes.fromhex(q0["quote"]))["rtmr"][3]
    st, _, raw = call(AGENT, "/EmitEvent", {"event": "v2-event", "payload": "00ff"})
    check(st == 200 and raw == b"null", "EmitEvent (V2)")
    st, q, _ = call(AGENT, "/GetQuote", {})
    last = json.loads(q["event_log"])[-1]
    pre = b'{"name":"v2-event","payload":"00ff","type":134217729}'
    check(last.get("version") == 2 and last.get("preimage") == pre.hex(), "V2 event + preimage",
          last)
    check(quote_regs(bytes.fromhex(q["quote"]))["rtmr"][3] == sha384(r3 + sha384(pre)),
          "RTMR3 extended with SHA-384(canonical JSON)")
    st, at, _ = call(AGENT, "/Attest", {"report_data": "01"})
    first = bytes.fromhex(at["attestation"])[0]
    check(st == 200 and (0x80 <= first <= 0x8f or first in (0xde, 0xdf)),
          "Attest uses the V1 MessagePack container with V2 events", hex(first))


def run(fn, *args):
    """One group; an exception (e.g. a missing field after an error reply) fails the group
    but lets the others run."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - report and continue
        check(False, "%s raised %s: %s" % (fn.__name__, type(e).__name__, e))
        return None


def main():
    if MODE == "guest":
        run(guest_mode)
    else:
        run(test_version_and_info)
        regs = run(test_get_quote)
        run(test_attest)
        run(test_get_key)
        run(test_sign_verify)
        run(test_tls_keys)
        run(test_tappd)
        run(test_routing_and_errors)
        run(test_robustness)
        run(test_concurrency)
        run(test_external)
        if regs:
            run(test_emit_event, regs)
    print("  %d failure(s)" % failures)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
