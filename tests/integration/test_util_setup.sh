#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# `dstack-util setup` end to end (docs/guest-boot.md): a fake host share, a dstack-tee-sim TD
# per boot, dstack-kms --dev on its own TD serving the auth-simple policy of an allowlisted
# app, and a fake VMM host API (python3 HTTP server on a Unix socket recording Notify calls).
# Checks: setup succeeds; the TD's RTMR3 equals the replay of its event log and the events are
# exactly the specified ones in order with the right payloads; .appkeys.json holds the keys the
# KMS releases (env key pair = `dstack kms env-pubkey`, provider id = KMS root CA SPKI); an
# encrypted env (encrypted with @phala/dstack-sdk encryptEnvVars) arrives decrypted, minus a
# variable not in allowed_envs; the data volume survives a restart (same instance id seed) and
# the image never holds the plaintext; another instance's key is refused; a compose hash the
# policy denies fails with the KMS's reason, reported as boot.error, with no .appkeys.json.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (mount, loop devices, fscrypt)"; exit 77; }
. "$(dirname "$0")/kms_common.sh"
SIM="$BIN/dstack-tee-sim"
UTIL="$BIN/dstack-util"
CLI="$BIN/dstack"
PY=/usr/bin/python3
for b in "$SIM" "$UTIL" "$CLI"; do [ -x "$b" ] || fail "$b not built"; done
command -v node >/dev/null || { echo "SKIP: node not installed"; exit 77; }
command -v mkfs.ext4 >/dev/null || { echo "SKIP: mkfs.ext4 not installed"; exit 77; }
"$PY" -c 'import cryptography' 2>/dev/null || { echo "SKIP: python3-cryptography missing"; exit 77; }

umount_all() {
    for m in "$WORK"/work*/persistent "$WORK"/work*/.data-fs; do
        mountpoint -q "$m" 2>/dev/null && umount "$m"
    done
    return 0
}
trap 'rc=$?; umount_all; (exit $rc); kms_cleanup' EXIT

SEED=6b6d732d746573742d73696d2d736565642d3030303030303030303030303031
"$SIM" serve --seed $SEED --state-dir "$WORK/sim" --pccs-listen 127.0.0.1:0 >"$WORK/sim.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do [ -S "$WORK/sim/control.sock" ] && break; sleep 0.1; done
[ -S "$WORK/sim/control.sock" ] || fail "simulator did not start"
PCCS="http://$(cat "$WORK/sim/pccs.addr")"
KS=$("$SIM" create-td --state-dir "$WORK/sim" --name kms)
KS2=$("$SIM" create-td --state-dir "$WORK/sim" --name kms2)

# bootstrap under the dev backend, then serve the same state under a policy file
S="$WORK/state"
POL="$WORK/policy.json"
start_kms boot --dev --tee "sim:$KS" --pccs-url "$PCCS" --state-dir "$S" --listen 127.0.0.1:0 ||
    fail "KMS bootstrap"
stop_kms boot
start_kms a --dev --tee "sim:$KS2" --pccs-url "$PCCS" --state-dir "$S" --listen 127.0.0.1:0 \
    --policy "$POL" || fail "KMS did not start"
OS=$(jself a osImageHash)
MR=$(jself a mrAggregated)
[ ${#OS} = 64 ] && [ ${#MR} = 64 ] || fail "KMS boot info not logged"
KURL="https://localhost:$PORT_a"

# --- the fake host API: records every request body as one JSON line
HAPI="$WORK/host-api.sock"
"$PY" - "$HAPI" "$WORK/notify.jsonl" >"$WORK/hostapi.log" 2>&1 <<'EOF' &
import http.server, json, os, socketserver, sys
sock, out = sys.argv[1], sys.argv[2]
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with open(out, "a") as f:
            f.write(json.dumps({"path": self.path, "body": json.loads(body)}) + "\n")
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"{}")
    def log_message(self, *a): pass
class S(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    def get_request(self):
        r, _ = super().get_request(); return r, ("local", 0)
if os.path.exists(sock): os.unlink(sock)
S(sock, H).serve_forever()
EOF
PIDS+=("$!")
for _ in $(seq 50); do [ -S "$HAPI" ] && break; sleep 0.1; done
[ -S "$HAPI" ] || fail "fake host API did not start"

# --- the host share
SHARE="$WORK/share"
mkdir -p "$SHARE"
cat >"$SHARE/app-compose.json" <<'EOF'
{
    "manifest_version": 2,
    "name": "setup-test",
    "runner": "docker-compose",
    "docker_compose_file": "services:\n  app:\n    image: busybox\n",
    "kms_enabled": true,
    "init_script": "echo measured init",
    "allowed_envs": ["FOO", "BAR"],
    "secure_time": false
}
EOF
COMPOSE_HASH=$(sha256sum "$SHARE/app-compose.json" | cut -c1-64)
APP_ID=${COMPOSE_HASH:0:40}
INIT_HASH=$(printf '%s' 'echo measured init' | sha256sum | cut -c1-64)
VMC="{\"os_image_hash\":\"$OS\",\"cpu_count\":1,\"memory_size\":1073741824}"
"$PY" -c 'import json,sys; print(json.dumps({"kms_urls":[sys.argv[1]],"pccs_url":sys.argv[2],"vm_config":sys.argv[3]}))' \
    "$KURL" "$PCCS" "$VMC" >"$SHARE/.sys-config.json"
set_policy() { printf '%s' "$1" >"$POL.tmp" && mv "$POL.tmp" "$POL"; }
set_policy "{\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\"],\"allowAnyDevice\":true},\"apps\":{\"$APP_ID\":{\"composeHashes\":[\"$COMPOSE_HASH\"],\"allowAnyDevice\":true}}}"

# the encrypted env, for the public key the KMS publishes for this app
EPUB=$("$CLI" kms env-pubkey "$KURL" "$APP_ID" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["public_key"])')
[ ${#EPUB} = 64 ] || fail "env-pubkey: '$EPUB'"
ENC=$(node -e '
const {encryptEnvVars}=require(process.argv[1]+"/node_modules/@phala/dstack-sdk/dist/encrypt-env-vars.js");
encryptEnvVars([{key:"FOO",value:"hello world $x"},{key:"BAR",value:"2"},{key:"NOT_ALLOWED",value:"leak"}],process.argv[2])
  .then((h)=>console.log(h));' "$SRC" "$EPUB")
"$PY" -c 'import sys; open(sys.argv[1],"wb").write(bytes.fromhex(sys.argv[2].removeprefix("0x")))' \
    "$SHARE/.encrypted-env" "$ENC"
ok "host share: compose $COMPOSE_HASH, app $APP_ID, encrypted env of $(stat -c %s "$SHARE/.encrypted-env") bytes"

DISK="$WORK/data.img"
truncate -s 64M "$DISK"
BOOT=0
# boot: a fresh TD (RTMR3 starts at zero), then setup; sets TD to its socket
boot() {
    BOOT=$((BOOT + 1))
    TD=$("$SIM" create-td --state-dir "$WORK/sim" --name "app$BOOT")
    "$UTIL" setup --host-shared "$SHARE" --work-dir "$WORK/work" --tee "sim:$TD" \
        --host-api "$HAPI" --data-disk "$DISK" --insecure-allow-simulated "$@" \
        >"$WORK/setup$BOOT.log" 2>&1
}

# --- first boot
boot || fail "setup failed: $(tail -5 "$WORK/setup1.log")"
HS="$WORK/work/.host-shared"
[ "$(stat -c %a "$HS/.appkeys.json")" = 600 ] || fail ".appkeys.json mode"
[ "$(stat -c %a "$HS/.decrypted-env")" = 600 ] || fail ".decrypted-env mode"
cmp -s "$HS/app-compose.json" "$SHARE/app-compose.json" || fail "app-compose.json copy"
cmp -s "$HS/.sys-config.json" "$SHARE/.sys-config.json" || fail "sys-config copy"
ok "setup succeeded; .appkeys.json and .decrypted-env are mode 0600"

# RTMR3 replay and event order / payloads
"$SIM" event-log --socket "$TD" >"$WORK/evlog.json"
"$SIM" read --socket "$TD" >"$WORK/regs.json"
"$PY" - "$WORK/evlog.json" "$WORK/regs.json" "$APP_ID" "$COMPOSE_HASH" "$INIT_HASH" "$OS" \
    "$HS/.instance_info" "$HS/.appkeys.json" <<'EOF' || fail "event log check"
import hashlib, json, struct, sys
log = json.load(open(sys.argv[1])); regs = json.load(open(sys.argv[2]))
app, ch, ih, os_hash = sys.argv[3:7]
info = json.load(open(sys.argv[7])); keys = json.load(open(sys.argv[8]))
rt = [e for e in log if e["imr"] == 3]
mr = bytes(48)
for e in rt:
    d = hashlib.sha384(struct.pack("<I", 0x08000001) + b":" + e["event"].encode() + b":" +
                       bytes.fromhex(e["event_payload"])).digest()
    assert e["event_type"] == 0x08000001
    assert e["digest"] == d.hex(), ("digest", e["event"])
    mr = hashlib.sha384(mr + d).digest()
assert mr.hex() == regs["rtmr3"], ("replay", mr.hex(), regs["rtmr3"])
kms_id = keys["key_provider"]["Kms"]["pubkey"]
want = [("system-preparing", ""), ("app-id", app), ("compose-hash", ch), ("init-script-hash", ih),
        ("instance-id", info["instance_id"]), ("boot-mr-done", ""), ("os-image-hash", os_hash),
        ("key-provider", json.dumps({"name": "kms", "id": kms_id}, separators=(",", ":")).encode().hex()),
        ("storage-fs", b"ext4".hex()), ("system-ready", "")]
got = [(e["event"], e["event_payload"]) for e in rt]
assert got == want, ("events", got, want)
assert info["app_id"] == app and len(info["instance_id_seed"]) == 40
seed = bytes.fromhex(info["instance_id_seed"])
assert hashlib.sha256(seed + bytes.fromhex(app)).hexdigest()[:40] == info["instance_id"]
EOF
ok "RTMR3 = replay of the TD event log; events in the specified order with the right payloads"

# .appkeys.json = what the KMS releases for this app
"$PY" - "$HS/.appkeys.json" "$EPUB" "$KURL/prpc" "$("$CLI" kms meta "$KURL" --json)" <<'EOF' || fail "appkeys check"
import json, sys
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives import serialization as s
from cryptography import x509
k = json.load(open(sys.argv[1])); meta = json.loads(sys.argv[4])
pub = X25519PrivateKey.from_private_bytes(bytes.fromhex(k["env_crypt_key"])).public_key()
assert pub.public_bytes(s.Encoding.Raw, s.PublicFormat.Raw).hex() == sys.argv[2], "env key"
assert k["key_provider"]["Kms"]["url"] == sys.argv[3], k["key_provider"]["Kms"]["url"]
ca = x509.load_pem_x509_certificate(meta["ca_cert"].encode())
spki = ca.public_key().public_bytes(s.Encoding.DER, s.PublicFormat.SubjectPublicKeyInfo).hex()
assert k["key_provider"]["Kms"]["pubkey"] == spki, "provider id"
assert len(k["disk_crypt_key"]) == 64 and len(k["k256_key"]) == 64 and len(k["k256_signature"]) == 130
assert "BEGIN CERTIFICATE" in k["ca_cert"]
EOF
ok ".appkeys.json: env key pair = dstack kms env-pubkey, provider id = KMS root CA SPKI"

# the guest agent accepts what setup wrote (docs/guest-boot.md "After setup")
if [ -x "$BIN/dstack-guest-agent" ]; then
    "$BIN/dstack-guest-agent" --check --tee "sim:$TD" --keys-file "$HS/.appkeys.json" \
        --compose-file "$HS/app-compose.json" --sys-config-file "$HS/.sys-config.json" \
        --instance-info-file "$HS/.instance_info" --socket "" --tappd-socket "" --http "" \
        >"$WORK/agent-check.log" 2>&1 || fail "guest agent --check: $(tail -3 "$WORK/agent-check.log")"
    grep -q 'configuration OK' "$WORK/agent-check.log" || fail "guest agent --check output"
    ok "dstack-guest-agent --check accepts the files setup wrote"
else
    echo "note: dstack-guest-agent not built, agent check not run"
fi

grep -qx 'FOO="hello world \\$x"' "$HS/.decrypted-env" || fail "FOO: $(cat "$HS/.decrypted-env")"
grep -qx 'BAR=2' "$HS/.decrypted-env" || fail "BAR: $(cat "$HS/.decrypted-env")"
grep -q NOT_ALLOWED "$HS/.decrypted-env" "$HS/.decrypted-env.json" && fail "a var outside allowed_envs arrived"
"$PY" -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d=={"BAR":"2","FOO":"hello world $x"}, d' \
    "$HS/.decrypted-env.json" || fail ".decrypted-env.json"
ok "encrypted env decrypted; NOT_ALLOWED (not in allowed_envs) dropped"

grep -q '"event": "instance.info"' "$WORK/notify.jsonl" || fail "no instance.info notify"
grep -q '"payload": "requesting app keys"' "$WORK/notify.jsonl" || fail "no boot.progress"
grep -q '"path": "/api/Notify"' "$WORK/notify.jsonl" || fail "Notify path"
ok "host API got boot.progress and instance.info"

# --- data volume: restart with the reported instance info
MARK="PLAINTEXT-MARKER-$RANDOM-$RANDOM-dstack"
echo "$MARK" >"$WORK/work/persistent/hello.txt"
umount_all
grep -qa "$MARK" "$DISK" && fail "the image holds the plaintext"
"$PY" - "$WORK/notify.jsonl" "$SHARE/.instance_info" <<'EOF'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
info = [l["body"]["payload"] for l in lines if l["body"]["event"] == "instance.info"][-1]
open(sys.argv[2], "w").write(info)  # what the VMM persists for the next boot
EOF
boot || fail "second setup failed: $(tail -5 "$WORK/setup2.log")"
grep -q 'mounting data disk' "$WORK/setup2.log" || fail "second boot re-initialized the disk"
[ "$(cat "$WORK/work/persistent/hello.txt")" = "$MARK" ] || fail "file not readable after restart"
ok "data volume: file readable after restart (same instance id); image has no plaintext"
umount_all

# another instance (fresh seed => other disk key) is refused, never reformatted or read in clear
echo '{}' >"$SHARE/.instance_info"
if boot; then fail "a different instance's key opened the volume"; fi
grep -q 'encrypted with another key' "$WORK/setup3.log" || fail "wrong-key reason: $(tail -3 "$WORK/setup3.log")"
[ -e "$HS/.appkeys.json" ] && fail ".appkeys.json written on failure"
tail -1 "$WORK/notify.jsonl" | grep -q '"event": "boot.error"' || fail "no boot.error for the wrong key"
ok "another instance's disk key is refused (boot.error), no keys written"
umount_all

# --- a compose hash the policy denies
"$PY" - "$SHARE/app-compose.json" "$APP_ID" "$SHARE/.instance_info" <<'EOF'
import json, sys
c = open(sys.argv[1]).read().replace('"setup-test"', '"setup-test-v2"')
open(sys.argv[1], "w").write(c)
open(sys.argv[3], "w").write(json.dumps({"app_id": sys.argv[2]}))
EOF
NOTIFIES=$(wc -l <"$WORK/notify.jsonl")
if boot; then fail "setup succeeded with a denied compose hash"; fi
grep -q 'compose hash not allowed' "$WORK/setup4.log" || fail "denial reason: $(tail -3 "$WORK/setup4.log")"
[ -e "$HS/.appkeys.json" ] && fail ".appkeys.json written on denial"
"$PY" - "$WORK/notify.jsonl" "$NOTIFIES" <<'EOF' || fail "boot.error not reported: $(tail -2 "$WORK/notify.jsonl")"
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])][int(sys.argv[2]):]
errs = [l["body"]["payload"] for l in lines if l["body"]["event"] == "boot.error"]
assert errs and "compose hash not allowed" in errs[-1], errs
assert not [l for l in lines if l["body"]["event"] == "instance.info"]
EOF
mountpoint -q "$WORK/work/persistent" && fail "data volume mounted after a denied boot"
ok "denied compose hash: setup fails with 'compose hash not allowed', boot.error reported, no keys"

# --- key provider none with event_log_version 2: random keys (loud warning), V2 digests
SHARE2="$WORK/share2"
mkdir -p "$SHARE2"
printf '%s' '{"manifest_version":2,"name":"none-test","runner":"docker-compose","docker_compose_file":"x","key_provider":"none","event_log_version":2,"secure_time":false}' \
    >"$SHARE2/app-compose.json"
echo '{}' >"$SHARE2/.sys-config.json"
cp "$SHARE/.encrypted-env" "$SHARE2/"
truncate -s 32M "$WORK/data2.img"
TD=$("$SIM" create-td --state-dir "$WORK/sim" --name none1)
"$UTIL" setup --host-shared "$SHARE2" --work-dir "$WORK/work2" --tee "sim:$TD" \
    --data-disk "$WORK/data2.img" >"$WORK/none.log" 2>&1 || fail "none setup: $(tail -3 "$WORK/none.log")"
grep -q 'key provider NONE' "$WORK/none.log" || fail "no loud warning for key provider none"
grep -q 'no env key: ignored' "$WORK/none.log" || fail "encrypted env not reported as ignored"
[ -e "$WORK/work2/.host-shared/.decrypted-env" ] && fail "env decrypted without a KMS"
"$SIM" event-log --socket "$TD" >"$WORK/evlog2.json"
"$SIM" read --socket "$TD" >"$WORK/regs2.json"
"$PY" - "$WORK/evlog2.json" "$WORK/regs2.json" "$WORK/work2/.host-shared/.appkeys.json" <<'EOF2' || fail "none/v2 check"
import hashlib, json, sys
log = json.load(open(sys.argv[1])); regs = json.load(open(sys.argv[2])); k = json.load(open(sys.argv[3]))
mr = bytes(48)
for e in log:
    pre = json.dumps({"name": e["event"], "payload": e["event_payload"], "type": 134217729},
                     separators=(",", ":"), sort_keys=True).encode()
    d = hashlib.sha384(pre).digest()
    assert e["digest"] == d.hex(), ("v2 digest", e["event"])
    mr = hashlib.sha384(mr + d).digest()
assert mr.hex() == regs["rtmr3"]
names = [e["event"] for e in log]
assert names == ["system-preparing", "app-id", "compose-hash", "instance-id", "boot-mr-done",
                 "key-provider", "storage-fs", "system-ready"], names
kp = [e for e in log if e["event"] == "key-provider"][0]
assert bytes.fromhex(kp["event_payload"]) == b'{"name":"none","id":""}', kp
assert "BEGIN PRIVATE KEY" in k["key_provider"]["None"]["key"] and k.get("env_crypt_key", "") == ""
assert "BEGIN CERTIFICATE" in k["ca_cert"]
EOF2
ok "key provider none + event_log_version 2: V2 digests replay to RTMR3, no os-image-hash, None keys"
umount_all

# --- LUKS2 backend (--disk-encryption luks): format parameters and header validation. Without
# device-mapper (as on a sandbox host) luksOpen cannot work, so the validated open is expected
# to fail at luksOpen, after validation; every refusal below happens before it.
if command -v cryptsetup >/dev/null; then
    NL=0
    luks_setup() { # IMAGE [extra args]
        NL=$((NL + 1))
        local td
        td=$("$SIM" create-td --state-dir "$WORK/sim" --name "luks$NL")
        local img=$1
        shift
        "$UTIL" setup --host-shared "$SHARE2" --work-dir "$WORK/work-luks" --tee "sim:$td" \
            --data-disk "$img" --disk-encryption luks "$@" >"$WORK/luks$NL.log" 2>&1
    }
    fmt() { # IMAGE cryptsetup-args...
        local img=$1
        shift
        rm -f "$img"
        truncate -s 40M "$img"
        printf '%s' 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff |
            cryptsetup luksFormat -q --type luks2 --offset 32768 --pbkdf pbkdf2 --iter-time 10 \
                "$@" -d- "$img" >/dev/null 2>&1 || fail "cryptsetup luksFormat $*"
    }
    L="$WORK/luks.img"
    truncate -s 40M "$L"
    if grep -q ' device-mapper' /proc/misc && [ -e /dev/mapper/control ]; then
        luks_setup "$L" || fail "LUKS setup: $(tail -3 "$WORK/luks$NL.log")"
        umount_all
        cryptsetup close dstack_data_disk
    else
        luks_setup "$L" && fail "LUKS setup succeeded without device-mapper?"
        grep -q 'luksOpen .* failed' "$WORK/luks$NL.log" || fail "luksOpen: $(tail -3 "$WORK/luks$NL.log")"
        grep -q 'LUKS2 metadata refused\|checksum' "$WORK/luks$NL.log" && fail "own header refused"
    fi
    cryptsetup luksDump --dump-json-metadata "$L" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)
s = m["segments"]["0"]; k = m["keyslots"]["0"]
assert s["offset"] == "16777216" and s["sector_size"] == 512 and s["encryption"] == "aes-xts-plain64", s
assert k["kdf"]["type"] == "pbkdf2" and k["area"]["encryption"] == "aes-xts-plain64", k
assert len(m["keyslots"]) == 1 and not m["tokens"]' || fail "setup's luksFormat parameters"
    ok "LUKS2: setup formats with upstream's parameters (offset 16 MiB, aes-xts-plain64, pbkdf2, 512-byte sectors) and accepts its own header"

    fmt "$L" --sector-size 512 --cipher aes-cbc-essiv:sha256
    luks_setup "$L" && fail "aes-cbc header accepted"
    grep -q 'LUKS2 metadata refused: keyslot 0 must be luks2, 64-byte aes-xts-plain64' "$WORK/luks$NL.log" ||
        fail "cbc: $(tail -2 "$WORK/luks$NL.log")"
    fmt "$L" --sector-size 4096 --cipher aes-xts-plain64
    luks_setup "$L" && fail "4096-byte sector header accepted"
    grep -q 'LUKS2 metadata refused: exactly one crypt segment at 16 MiB' "$WORK/luks$NL.log" ||
        fail "sector: $(tail -2 "$WORK/luks$NL.log")"
    fmt "$L" --sector-size 512 --cipher aes-xts-plain64
    printf '%s' 00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff >"$WORK/k1"
    printf '%s' ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100 >"$WORK/k2"
    cryptsetup luksAddKey -q --pbkdf pbkdf2 --iter-time 10 --key-file "$WORK/k1" "$L" "$WORK/k2" >/dev/null 2>&1 ||
        fail "luksAddKey"
    luks_setup "$L" && fail "two-keyslot header accepted"
    grep -q 'LUKS2 metadata refused: exactly one keyslot' "$WORK/luks$NL.log" ||
        fail "keyslots: $(tail -2 "$WORK/luks$NL.log")"
    fmt "$L" --sector-size 512 --cipher aes-xts-plain64
    # flip one byte of the primary JSON area: the recomputed sha256 checksum must catch it
    "$PY" -c 'import sys
f = open(sys.argv[1], "r+b"); f.seek(4096 + 3); b = f.read(1); f.seek(4096 + 3); f.write(bytes([b[0] ^ 1]))' "$L"
    luks_setup "$L" && fail "tampered header accepted"
    grep -q 'LUKS2 header 0: checksum mismatch' "$WORK/luks$NL.log" || fail "checksum: $(tail -2 "$WORK/luks$NL.log")"
    fmt "$L" --sector-size 512 --cipher aes-xts-plain64
    NL=$((NL + 1))
    TD=$("$SIM" create-td --state-dir "$WORK/sim" --name "luks$NL")
    "$UTIL" setup --host-shared "$SHARE2" --work-dir "$WORK/work-luks" --tee "sim:$TD" \
        --data-disk "$L" --disk-encryption fscrypt >"$WORK/luks$NL.log" 2>&1 && fail "fscrypt reformatted a LUKS disk"
    grep -q 'is a LUKS2 volume but this guest has no device-mapper' "$WORK/luks$NL.log" ||
        fail "fscrypt on LUKS: $(tail -2 "$WORK/luks$NL.log")"
    cryptsetup isLuks "$L" || fail "the LUKS header was overwritten"
    ok "LUKS2 header validation refuses aes-cbc, 4096-byte sectors, a second keyslot, a bad checksum; fscrypt never reformats a LUKS disk"
else
    echo "note: cryptsetup not installed, LUKS2 checks not run"
fi

# key_provider_id pin: an app pinning a provider id cannot boot with another provider
SHARE3="$WORK/share3"
mkdir -p "$SHARE3"
printf '%s' '{"manifest_version":2,"name":"pin-test","runner":"docker-compose","docker_compose_file":"x","key_provider":"none","key_provider_id":"abcdef","secure_time":false}' \
    >"$SHARE3/app-compose.json"
echo '{}' >"$SHARE3/.sys-config.json"
TD=$("$SIM" create-td --state-dir "$WORK/sim" --name pin1)
NOTIFIES=$(wc -l <"$WORK/notify.jsonl")
"$UTIL" setup --host-shared "$SHARE3" --work-dir "$WORK/work3" --tee "sim:$TD" --host-api "$HAPI" \
    --no-data-disk >"$WORK/pin.log" 2>&1 && fail "a pinned key_provider_id accepted key provider none"
grep -q 'key provider id mismatch: the app pins key_provider_id abcdef, the key provider is (empty)' "$WORK/pin.log" ||
    fail "pin: $(tail -2 "$WORK/pin.log")"
tail -n +"$((NOTIFIES + 1))" "$WORK/notify.jsonl" | grep -q 'key provider id mismatch' || fail "pin: no boot.error"
[ -e "$WORK/work3/.host-shared/.appkeys.json" ] && fail "pin: keys written"
"$SIM" event-log --socket "$TD" | "$PY" -c 'import json,sys; n=[e["event"] for e in json.load(sys.stdin)]; assert "key-provider" not in n and n[-1]=="boot-mr-done", n' ||
    fail "pin: events after the refusal"
ok "key_provider_id pin mismatch refused before the key-provider event (boot.error, no keys)"

# dstack-util notify
"$UTIL" notify --host-api "$HAPI" --event boot.progress --payload done || fail "notify"
tail -1 "$WORK/notify.jsonl" | grep -q '"event": "boot.progress", "payload": "done"' || fail "notify body: $(tail -1 "$WORK/notify.jsonl")"
rc=0
"$UTIL" notify --host-api "$WORK/nope.sock" --event boot.progress >/dev/null 2>&1 || rc=$?
[ $rc = 1 ] || fail "notify to a missing socket: exit $rc"
ok "dstack-util notify sends Notify; a missing host API socket fails with exit 1"

# usage errors
rc=0
"$UTIL" setup --work-dir "$WORK/x" >/dev/null 2>&1 || rc=$?
[ $rc = 2 ] || fail "setup without --data-disk: exit $rc, want 2"
ok "usage: --data-disk or --no-data-disk required"
