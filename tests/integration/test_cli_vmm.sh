#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Integration test of the VMM-facing `dstack` commands (deploy, ls, info, logs, stop, start,
# rm, update) against a real dstack-vmm: a temp run dir and an image dir holding a fake guest
# image (metadata.json, dummy kernel/initrd/firmware/rootfs, digest.txt), token auth on, port
# mapping on, the VMM's kms_url pointing at a mock KMS. The mock KMS (node, @noble/curves) signs
# env-encrypt keys with a secp256k1 root key exactly as kms-ratls.md §3.6 describes, so the
# CLI's signature check is exercised for real: right key accepted, wrong key / missing trust
# anchor refused, and the encrypted env the VMM stores decrypts (X25519 + AES-256-GCM, §7) with
# the mock's secret to the env file's variables. Every command is run with --json and its
# fields checked against independent values (sha256sum of the compose file, ...); usage errors
# must exit 2 and name the option.
set -euo pipefail

BIN=${DS_BIN:-$(dirname "$0")/../../build/bin}
BIN=$(cd "$BIN" && pwd)
SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
SRC=$(cd "$SRC" && pwd)
CLI="$BIN/dstack"
VMMD="$BIN/dstack-vmm"
for tool in jq node sha256sum curl; do
    command -v "$tool" >/dev/null || { echo "SKIP: $tool not installed"; exit 77; }
done
[ -x "$CLI" ] || { echo "FAIL: $CLI not built"; exit 1; }
[ -x "$VMMD" ] || { echo "FAIL: $VMMD not built (daemons/vmm)"; exit 1; }
[ -d "$SRC/node_modules/@noble/curves" ] || { echo "FAIL: node_modules/@noble/curves missing"; exit 1; }

WORK=$(mktemp -d /tmp/test_cli_vmm.XXXXXX)
VMM_PID=""
KMS_PID=""
cleanup() {
    # The VMM leaves VMs running when it exits: stop whatever a failed run left behind.
    if [ -n "$VMM_PID" ] && [ -n "${DSTACK_VMM_TOKEN:-}" ]; then
        for v in $("$CLI" ls --json 2>/dev/null | jq -r '.vms[].id' 2>/dev/null); do
            "$CLI" stop "$v" --force >/dev/null 2>&1 || true
        done
    fi
    for p in "$VMM_PID" "$KMS_PID"; do
        if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; fi
    done
    [ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    for f in "$WORK/err" "$WORK/vmm.log" "$WORK/kms.log"; do
        [ -s "$f" ] && { echo "--- $f"; tail -20 "$f"; }
    done
    exit 1
}
ok() { echo "ok - $*"; }

# run EXPECTED_RC CMD...: stdout -> $WORK/out, stderr -> $WORK/err, exit code must match.
run() {
    local want=$1 rc=0
    shift
    "$@" >"$WORK/out" 2>"$WORK/err" || rc=$?
    # Sanitizer builds: a report must fail the test even when exit code 1 was expected.
    ! grep -qE "ERROR: (Address|Leak)Sanitizer|runtime error:" "$WORK/err" ||
        fail "'$*': sanitizer report"
    [ "$rc" = "$want" ] || fail "'$*' exited $rc, expected $want: $(head -c 600 "$WORK/err")"
}
# usage_err OPTION_TEXT CMD...: exit 2 and the message names the option.
usage_err() {
    local what=$1
    shift
    run 2 "$@"
    grep -qF -- "$what" "$WORK/err" || fail "'$*': message does not name '$what': $(cat "$WORK/err")"
}
jqo() { jq -er "$1" "$WORK/out"; }

# ---- mock KMS ----------------------------------------------------------------------------------
cat >"$WORK/kms.cjs" <<'EOF'
'use strict';
// Mock KMS for the CLI test: GetMeta and GetAppEnvEncryptPubKey (kms-ratls.md §2.3, §3.6) with
// a secp256k1 root key; `decrypt HEX` opens an encrypted env blob (§7) with the X25519 secret.
const http = require('http');
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const nm = path.join(process.env.DS_SRC, 'node_modules');
const { secp256k1 } = require(path.join(nm, '@noble/curves/secp256k1.js'));
const { x25519 } = require(path.join(nm, '@noble/curves/ed25519.js'));
const { keccak_256 } = require(path.join(nm, '@noble/hashes/sha3.js'));
const sha = (s) => crypto.createHash('sha256').update(s).digest();
const root = sha('cli-vmm-test kms root');
const other = sha('cli-vmm-test other key');
const envSecret = sha('cli-vmm-test env secret');
const hex = (b) => Buffer.from(b).toString('hex');
const mode = process.env.MOCK_MODE || 'good';
if (process.argv[2] === 'pubkey') {
  console.log(hex(secp256k1.getPublicKey(process.argv[3] === 'other' ? other : root, true)));
  process.exit(0);
}
if (process.argv[2] === 'decrypt') {
  const blob = Buffer.from(process.argv[3], 'hex');
  const shared = x25519.getSharedSecret(envSecret, blob.subarray(0, 32));
  const d = crypto.createDecipheriv('aes-256-gcm', Buffer.from(shared), blob.subarray(32, 44));
  d.setAuthTag(blob.subarray(blob.length - 16));
  process.stdout.write(Buffer.concat([d.update(blob.subarray(44, blob.length - 16)), d.final()]));
  process.exit(0);
}
function sign(key, parts) {
  const s = secp256k1.sign(keccak_256(Buffer.concat(parts)), key);
  return Buffer.concat([Buffer.from(s.toCompactRawBytes()), Buffer.from([s.recovery])]);
}
const server = http.createServer((req, res) => {
  let body = '';
  req.on('data', (c) => (body += c));
  req.on('end', () => {
    const reply = (code, obj) => {
      res.writeHead(code, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify(obj));
    };
    const m = req.url.match(/^\/prpc\/([A-Za-z]+)\?json$/);
    if (!m) return reply(400, { error: 'Service not found: ' + req.url });
    if (m[1] === 'GetMeta') {
      return reply(200, { ca_cert: '', k256_pubkey: hex(secp256k1.getPublicKey(root, true)),
                          is_dev: true, allow_any_upgrade: true });
    }
    if (m[1] === 'GetAppEnvEncryptPubKey') {
      let appId = Buffer.from(JSON.parse(body || '{}').app_id || '', 'hex');
      if (appId.length !== 20) return reply(400, { error: 'app_id must be 20 bytes' });
      if (mode === 'otherapp') appId = Buffer.alloc(20, 0x42); // another app's key and signature
      const pub = Buffer.from(x25519.getPublicKey(envSecret));
      const key = mode === 'wrongkey' ? other : root;
      const ts = Math.floor(Date.now() / 1000) - (mode === 'stale' ? 3600 : 0);
      const tsb = Buffer.alloc(8);
      tsb.writeBigUInt64BE(BigInt(ts));
      const pre = Buffer.from('dstack-env-encrypt-pubkey:');
      return reply(200, {
        public_key: hex(pub),
        signature: mode === 'stale' ? '' : hex(sign(key, [pre, appId, pub])),
        timestamp: ts,
        signature_v1: hex(sign(key, [pre, appId, tsb, pub])),
      });
    }
    reply(400, { error: 'unknown method ' + m[1] });
  });
});
server.listen(0, '127.0.0.1', () => fs.writeFileSync(process.argv[2], String(server.address().port)));
EOF
export DS_SRC="$SRC"
start_kms() {
    rm -f "$WORK/kms.port"
    MOCK_MODE=$1 node "$WORK/kms.cjs" "$WORK/kms.port" >>"$WORK/kms.log" 2>&1 &
    KMS_PID=$!
    for _ in $(seq 1 200); do
        [ -s "$WORK/kms.port" ] && break
        sleep 0.05
    done
    [ -s "$WORK/kms.port" ] || fail "mock KMS did not start"
    KMS_URL="http://127.0.0.1:$(cat "$WORK/kms.port")"
}
stop_kms() { kill "$KMS_PID"; wait "$KMS_PID" 2>/dev/null || true; KMS_PID=""; }
start_kms good
KMS_PUB=$(node "$WORK/kms.cjs" pubkey)
OTHER_PUB=$(node "$WORK/kms.cjs" pubkey other)

# ---- fake guest image and VMM ------------------------------------------------------------------
IMG="$WORK/images/dstack-test-0.5.9"
mkdir -p "$IMG" "$WORK/run"
cat >"$IMG/metadata.json" <<'EOF'
{"bios":"ovmf.fd","kernel":"bzImage","cmdline":"console=ttyS0 init=/init panic=1","initrd":"initramfs.cpio.gz","rootfs":"rootfs.img.parted.verity","version":"0.5.9","shared_ro":true,"is_dev":true}
EOF
for f in ovmf.fd bzImage initramfs.cpio.gz rootfs.img.parted.verity; do
    head -c 4096 /dev/zero >"$IMG/$f"
done
(cd "$IMG" && sha256sum ovmf.fd bzImage initramfs.cpio.gz metadata.json >sha256sum.txt)
sha256sum "$IMG/sha256sum.txt" | cut -d' ' -f1 >"$IMG/digest.txt"

TOKEN=cli-vmm-test-token-0123456789
SOCK="$WORK/vmm.sock"
HTTP_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
cat >"$WORK/vmm.toml" <<EOF
address = "unix:$SOCK"
listen = ["tcp:127.0.0.1:$HTTP_PORT"]
run_path = "$WORK/run"
kms_url = "$KMS_URL"

[image]
path = "$WORK/images"

[cvm]
kms_urls = []
gateway_urls = []
cid_start = 30000
cid_pool_size = 100

[cvm.port_mapping]
enabled = true
address = "127.0.0.1"
range = [{ protocol = "tcp", from = 20000, to = 29999 }]

[cvm.auto_restart]
enabled = false

[auth]
enabled = true
tokens = ["$TOKEN"]

[key_provider]
enabled = false
EOF
"$VMMD" -c "$WORK/vmm.toml" >>"$WORK/vmm.log" 2>&1 &
VMM_PID=$!
for _ in $(seq 1 300); do
    [ -S "$SOCK" ] && break
    kill -0 "$VMM_PID" 2>/dev/null || fail "dstack-vmm exited early"
    sleep 0.05
done
[ -S "$SOCK" ] || fail "dstack-vmm did not create $SOCK"
export DSTACK_VMM_URL="unix:$SOCK"
ok "dstack-vmm up on unix:$SOCK with a fake image"

# ---- usage errors: exit 2, the option named ----------------------------------------------------
cat >"$WORK/app-compose.json" <<'EOF'
{
    "manifest_version": 2,
    "name": "cli-test",
    "runner": "docker-compose",
    "docker_compose_file": "services:\n  web:\n    image: nginx\n",
    "kms_enabled": true,
    "gateway_enabled": false,
    "public_logs": true,
    "public_sysinfo": true,
    "allowed_envs": ["FOO", "BAR"],
    "no_instance_id": false,
    "secure_time": false
}
EOF
D=(--image dstack-test-0.5.9 --compose "$WORK/app-compose.json")
usage_err "--name" "$CLI" deploy "${D[@]}"
usage_err "--image" "$CLI" deploy --name a --compose "$WORK/app-compose.json"
usage_err "--compose" "$CLI" deploy --name a --image x
usage_err "--compose" "$CLI" deploy --name a --image x --compose "$WORK/nonexistent.json"
echo '{"manifest_version": 2}' >"$WORK/bad-compose.json"
usage_err "--compose" "$CLI" deploy --name a --image x --compose "$WORK/bad-compose.json"
usage_err "--port" "$CLI" deploy --name a "${D[@]}" --port tcp:80
usage_err "--port" "$CLI" deploy --name a "${D[@]}" --port sctp:1:2
usage_err "--port" "$CLI" deploy --name a "${D[@]}" --port tcp:70000:80
usage_err "--port" "$CLI" deploy --name a "${D[@]}" --port
usage_err "--memory" "$CLI" deploy --name a "${D[@]}" --memory 2X
usage_err "--vcpu" "$CLI" deploy --name a "${D[@]}" --vcpu 0
usage_err "--disk" "$CLI" deploy --name a "${D[@]}" --disk -1
usage_err "--app-id" "$CLI" deploy --name a "${D[@]}" --app-id 1234
usage_err "--wait" "$CLI" deploy --name a "${D[@]}" --stopped --wait
usage_err "--kms-url" "$CLI" deploy --name a "${D[@]}" --kms-url ftp://x
usage_err "--kms-pubkey" "$CLI" deploy --name a "${D[@]}" --kms-pubkey 02
usage_err "--bogus" "$CLI" ls --bogus
usage_err "--json" "$CLI" ls --json --json
usage_err "ID" "$CLI" info
usage_err "ID" "$CLI" info 'bad id!'
usage_err "ID" "$CLI" stop a b
usage_err "--timeout" "$CLI" stop abc --timeout 5
usage_err "--timeout" "$CLI" rm abc --wait --timeout x
usage_err "--force" "$CLI" start abc --force
usage_err "--lines" "$CLI" logs abc -n many
usage_err "--channel" "$CLI" logs abc --channel tty
usage_err "expected at least one of --compose" "$CLI" update abc
usage_err "--no-ports" "$CLI" update abc --no-ports --port tcp:1:2
usage_err "--url" "$CLI" ls --url ftp://host
usage_err "DSTACK_VMM_URL" env DSTACK_VMM_URL=unix:relative "$CLI" ls
ok "usage errors exit 2 and name the option"

# ---- auth --------------------------------------------------------------------------------------
run 1 "$CLI" ls --json
grep -qi "unauthorized\|401\|token" "$WORK/err" || fail "no auth error text: $(cat "$WORK/err")"
run 1 "$CLI" ls --token wrong-token
run 0 "$CLI" ls --token "$TOKEN" --json
export DSTACK_VMM_TOKEN="$TOKEN"
run 0 "$CLI" ls --json
[ "$(jqo '.vms | length')" = 0 ] || fail "fresh VMM lists VMs"
ok "token auth: none/wrong refused (exit 1), --token and DSTACK_VMM_TOKEN accepted"

# ---- deploy --stopped, ls, info ------------------------------------------------------------------
HASH=$(sha256sum "$WORK/app-compose.json" | cut -d' ' -f1)
run 0 "$CLI" deploy --name cli-test "${D[@]}" --vcpu 2 --memory 2G --disk 7 \
    --port tcp:20080:80 --port tcp:20443:443:127.0.0.1 --stopped --json
ID=$(jqo .id)
[ "$(jqo .compose_hash)" = "$HASH" ] || fail "deploy compose_hash $(jqo .compose_hash) != $HASH"
[ "$(jqo .app_id)" = "${HASH:0:40}" ] || fail "deploy app_id is not the compose hash prefix"
ok "deploy --stopped --json: id $ID, compose hash = sha256 of the file, app id = its prefix"

run 0 "$CLI" ls --json
[ "$(jq -r --arg id "$ID" '.vms[] | select(.id == $id) | .status' "$WORK/out")" = stopped ] ||
    fail "ls does not show $ID as stopped: $(cat "$WORK/out")"
[ "$(jq -r --arg id "$ID" '.vms[] | select(.id == $id) | .name' "$WORK/out")" = cli-test ] ||
    fail "ls name"
run 0 "$CLI" ls
grep -q "$ID" "$WORK/out" && grep -q "cli-test" "$WORK/out" || fail "ls table lacks the VM"
ok "ls (--json and table) shows the VM stopped"

run 0 "$CLI" info "$ID" --json
[ "$(jqo .id)" = "$ID" ] && [ "$(jqo .name)" = cli-test ] && [ "$(jqo .status)" = stopped ] ||
    fail "info id/name/status: $(cat "$WORK/out")"
[ "$(jqo .app_id)" = "${HASH:0:40}" ] || fail "info app_id"
[ "$(jqo .compose_hash)" = "$HASH" ] || fail "info compose_hash"
[ "$(jqo .configuration.vcpu)" = 2 ] && [ "$(jqo .configuration.memory)" = 2048 ] &&
    [ "$(jqo .configuration.disk_size)" = 7 ] || fail "info resources: $(jq -c .configuration "$WORK/out")"
[ "$(jqo .configuration.image)" = dstack-test-0.5.9 ] || fail "info image"
[ "$(jqo '.configuration.ports | length')" = 2 ] &&
    [ "$(jqo '.configuration.ports[0].host_port')" = 20080 ] &&
    [ "$(jqo '.configuration.ports[0].vm_port')" = 80 ] &&
    [ "$(jqo '.configuration.ports[1].host_address')" = 127.0.0.1 ] || fail "info ports"
cmp -s <(jq -j .configuration.compose_file "$WORK/out") "$WORK/app-compose.json" ||
    fail "the VMM does not hold the compose file byte for byte"
run 0 "$CLI" info "$ID"
grep -q "^App ID: *${HASH:0:40}" "$WORK/out" && grep -q "^Status: *stopped" "$WORK/out" ||
    fail "info text: $(cat "$WORK/out")"
run 1 "$CLI" info nonexistent-vm --json
grep -q "no VM with id 'nonexistent-vm'" "$WORK/err" || fail "info unknown id message"
ok "info --json: name, status, app id, compose hash, resources, ports, compose bytes"

# vmm-cli's port form, memory/disk units, a pinned app id, URLs and user config reach the VMM.
PIN=00112233445566778899aabbccddeeff00112233
echo '{"dstack": {"note": "user config"}}' >"$WORK/user-config.json"
run 0 "$CLI" deploy --name opts "${D[@]}" --port tcp:127.0.0.1:20081:81 --memory 512M --disk 3G \
    --app-id "0x${PIN^^}" --kms-url https://kms.example:8000 --kms-url https://kms2.example:8000 \
    --gateway-url https://gw.example:9000 --user-config "$WORK/user-config.json" --stopped --json
OPTS_ID=$(jqo .id)
[ "$(jqo .app_id)" = "$PIN" ] || fail "deploy --app-id output"
run 0 "$CLI" info "$OPTS_ID" --json
[ "$(jqo .app_id)" = "$PIN" ] || fail "pinned app id not kept: $(jqo .app_id)"
[ "$(jqo .configuration.memory)" = 512 ] && [ "$(jqo .configuration.disk_size)" = 3 ] ||
    fail "512M / 3G"
[ "$(jqo '.configuration.ports[0].host_address'):$(jqo '.configuration.ports[0].host_port'):$(jqo '.configuration.ports[0].vm_port')" = 127.0.0.1:20081:81 ] ||
    fail "vmm-cli port form: $(jq -c .configuration.ports "$WORK/out")"
[ "$(jq -c .configuration.kms_urls "$WORK/out")" = '["https://kms.example:8000","https://kms2.example:8000"]' ] ||
    fail "kms_urls: $(jq -c .configuration.kms_urls "$WORK/out")"
[ "$(jq -c .configuration.gateway_urls "$WORK/out")" = '["https://gw.example:9000"]' ] || fail "gateway_urls"
cmp -s <(jq -j .configuration.user_config "$WORK/out") "$WORK/user-config.json" || fail "user_config"
run 0 "$CLI" rm "$OPTS_ID" --wait --timeout 60
ok "deploy: vmm-cli port form, 512M/3G, pinned --app-id, kms/gateway URLs, user config"

# ---- API errors carry the server's text ----------------------------------------------------------
run 1 "$CLI" deploy --name dup "${D[@]}" --port tcp:20080:8080 --stopped
grep -q "CreateVm: ." "$WORK/err" || fail "no server text for a port conflict"
run 1 "$CLI" deploy --name noimg --image no-such-image --compose "$WORK/app-compose.json" --stopped
grep -q "CreateVm: ." "$WORK/err" || fail "no server text for an unknown image"
ok "VMM errors exit 1 with the server's text ($(head -c 120 "$WORK/err"))"

# ---- update ------------------------------------------------------------------------------------
sed 's/"cli-test"/"cli-test-v2"/' "$WORK/app-compose.json" >"$WORK/app-compose-v2.json"
HASH2=$(sha256sum "$WORK/app-compose-v2.json" | cut -d' ' -f1)
run 0 "$CLI" update "$ID" --compose "$WORK/app-compose-v2.json" --port tcp:21080:8080 --json
[ "$(jqo .compose_hash)" = "$HASH2" ] || fail "update compose_hash"
run 0 "$CLI" info "$ID" --json
[ "$(jqo .compose_hash)" = "$HASH2" ] || fail "info after update: compose hash not changed"
[ "$(jqo .app_id)" = "${HASH:0:40}" ] || fail "update changed the app id"
[ "$(jqo '.configuration.ports | length')" = 1 ] &&
    [ "$(jqo '.configuration.ports[0].host_port')" = 21080 ] || fail "update ports"
run 0 "$CLI" update "$ID" --no-ports --json
run 0 "$CLI" info "$ID" --json
[ "$(jqo '.configuration.ports | length')" = 0 ] || fail "update --no-ports"
run 0 "$CLI" update "$ID" --vcpu 3 --memory 3G --disk 9 --json
run 0 "$CLI" info "$ID" --json
[ "$(jqo .configuration.vcpu)/$(jqo .configuration.memory)/$(jqo .configuration.disk_size)" = 3/3072/9 ] ||
    fail "update resources: $(jq -c .configuration "$WORK/out" | head -c 300)"
usage_err "--vcpu" "$CLI" update "$ID" --vcpu many
usage_err "--memory" "$CLI" update "$ID" --memory 1.5Q
run 1 "$CLI" update "$ID" --disk 1 # disks only grow (host-side.md §1.3)
grep -q "UpdateVm: ." "$WORK/err" || fail "disk shrink: no server text"
run 1 "$CLI" update nonexistent-vm --compose "$WORK/app-compose-v2.json"
grep -q "UpdateVm: ." "$WORK/err" || fail "update unknown VM: no server text"
ok "update: new compose hash $HASH2 (app id kept), ports replaced and cleared, resources"

# ---- env encryption ------------------------------------------------------------------------------
printf 'FOO=bar\n# comment\nBAR=two words\n' >"$WORK/app.env"
expect_env() { # the VM's stored encrypted_env decrypts to the env file's variables
    run 0 "$CLI" info "$1" --json
    local blob
    blob=$(jqo .configuration.encrypted_env)
    node "$WORK/kms.cjs" decrypt "$blob" >"$WORK/plain" || fail "encrypted env does not decrypt"
    [ "$(cat "$WORK/plain")" = "$2" ] || fail "decrypted env: $(cat "$WORK/plain")"
}
PLAIN='{"env":[{"key":"FOO","value":"bar"},{"key":"BAR","value":"two words"}]}'
# Through the VMM (GetAppEnvEncryptPubKey proxied to its kms_url), key pinned.
run 0 "$CLI" deploy --name env-vmm "${D[@]}" --env-file "$WORK/app.env" --kms-pubkey "$KMS_PUB" \
    --stopped --json
ENV_ID=$(jqo .id)
expect_env "$ENV_ID" "$PLAIN"
ok "deploy --env-file via the VMM with --kms-pubkey: stored env decrypts with the KMS secret"
# Directly from --kms-url, trust anchor from its GetMeta (warned).
run 0 "$CLI" deploy --name env-direct "${D[@]}" --env-file "$WORK/app.env" --kms-url "$KMS_URL" \
    --stopped --json
ENV2_ID=$(jqo .id)
grep -q "trusting KMS k256 key 0x$KMS_PUB" "$WORK/err" || fail "no TOFU warning"
expect_env "$ENV2_ID" "$PLAIN"
ok "deploy --env-file --kms-url: key from the KMS, signature checked against its GetMeta key"
# A pinned key that did not sign: refused before CreateVm.
run 1 "$CLI" deploy --name env-wrong "${D[@]}" --env-file "$WORK/app.env" \
    --kms-pubkey "$OTHER_PUB" --stopped
grep -q "not by the trusted KMS key" "$WORK/err" || fail "wrong pinned key: $(cat "$WORK/err")"
# No trust anchor at all: usage error naming --kms-pubkey.
usage_err "--kms-pubkey" "$CLI" deploy --name env-none "${D[@]}" --env-file "$WORK/app.env" --stopped
# The compose does not use the KMS: the env could never be decrypted.
sed 's/"kms_enabled": true/"kms_enabled": false/' "$WORK/app-compose.json" >"$WORK/nokms.json"
usage_err "--env-file" "$CLI" deploy --name env-nokms --image dstack-test-0.5.9 \
    --compose "$WORK/nokms.json" --env-file "$WORK/app.env" --kms-pubkey "$KMS_PUB" --stopped
printf 'FOO=1\nbad-name=2\n' >"$WORK/bad.env"
usage_err "--env-file" "$CLI" deploy --name env-bad "${D[@]}" --env-file "$WORK/bad.env" \
    --kms-pubkey "$KMS_PUB" --stopped
# A KMS signing with another key, and one offering only a stale signature.
stop_kms
start_kms wrongkey
run 1 "$CLI" deploy --name env-forged "${D[@]}" --env-file "$WORK/app.env" --kms-url "$KMS_URL" \
    --kms-pubkey "$KMS_PUB" --stopped
grep -q "not by the trusted KMS key" "$WORK/err" || fail "forged key accepted: $(cat "$WORK/err")"
stop_kms
start_kms stale
run 1 "$CLI" deploy --name env-stale "${D[@]}" --env-file "$WORK/app.env" --kms-url "$KMS_URL" \
    --kms-pubkey "$KMS_PUB" --stopped
grep -q "does not verify" "$WORK/err" || fail "stale signature accepted: $(cat "$WORK/err")"
stop_kms
start_kms otherapp
run 1 "$CLI" deploy --name env-otherapp "${D[@]}" --env-file "$WORK/app.env" --kms-url "$KMS_URL" \
    --kms-pubkey "$KMS_PUB" --stopped
grep -q "not by the trusted KMS key" "$WORK/err" || fail "other app's key accepted: $(cat "$WORK/err")"
run 0 "$CLI" deploy --name env-insecure "${D[@]}" --env-file "$WORK/app.env" --kms-url "$KMS_URL" \
    --insecure-skip-kms-signature-check --stopped --json
grep -q "unverified key" "$WORK/err" || fail "--insecure-skip: no warning"
ENV3_ID=$(jqo .id)
stop_kms
start_kms good
run 0 "$CLI" ls --json
[ "$(jq '[.vms[] | select(.name | test("^env-(wrong|forged|stale|otherapp)$"))] | length' "$WORK/out")" = 0 ] ||
    fail "a refused deploy created a VM"
ok "env key refused when signed by another key, for another app, stale, or unanchored; no VM created"
printf 'FOO=updated\n' >"$WORK/new.env"
run 0 "$CLI" update "$ENV2_ID" --env-file "$WORK/new.env" --kms-url "$KMS_URL" \
    --kms-pubkey "$KMS_PUB" --json
[ "$(jqo .env_updated)" = true ] || fail "update --env-file json"
expect_env "$ENV2_ID" '{"env":[{"key":"FOO","value":"updated"}]}'
ok "update --env-file re-encrypts for the VM's app id"

# ---- start / logs / stop -------------------------------------------------------------------------
rc=0
"$CLI" start "$ID" --json >"$WORK/out" 2>"$WORK/err" || rc=$?
if [ "$rc" = 0 ]; then
    [ "$(jqo .action)" = StartVm ] || fail "start --json"
    run 0 "$CLI" info "$ID" --json
    case "$(jqo .status)" in running | exited | stopping) ;; *) fail "status after start: $(jqo .status)" ;; esac
    ok "start: VM started (status $(jqo .status))"
    rc=0
    "$CLI" logs "$ID" -n 5 >"$WORK/out" 2>"$WORK/err" || rc=$?
    [ "$rc" = 0 ] || grep -q "^dstack: logs: " "$WORK/err" || fail "logs: unclear failure"
    ok "logs -n 5: exit $rc"
    # -f follows until the VM stops (exit 0) or, while it runs, until interrupted.
    rc=0
    timeout -s INT 5 "$CLI" logs "$ID" -f -n 5 >"$WORK/out" 2>"$WORK/err" || rc=$?
    [ "$rc" = 0 ] || [ "$rc" = 124 ] || fail "logs -f exited $rc: $(cat "$WORK/err")"
    ! grep -q "^\[vmm heartbeat\]$" "$WORK/out" || fail "logs -f printed a heartbeat line"
    ok "logs -f: exit $rc (0: VM ended, 124: still following when interrupted)"
    run 0 "$CLI" stop "$ID" --force --wait --timeout 60 --json
    [ "$(jqo .action)" = StopVm ] || fail "stop --force --json"
    run 0 "$CLI" info "$ID" --json
    [ "$(jqo .status)" = stopped ] || fail "status after stop --force: $(jqo .status)"
    ok "stop --force --wait: VM stopped"
else
    [ "$rc" = 1 ] || fail "start exited $rc"
    grep -q "^dstack: start: StartVm: ." "$WORK/err" || fail "start failure without server text"
    ok "start: no backend here, clear error: $(head -c 160 "$WORK/err")"
fi
run 1 "$CLI" logs nonexistent-vm
grep -q "no VM with id 'nonexistent-vm'" "$WORK/err" || fail "logs unknown id: $(cat "$WORK/err")"
run 1 "$CLI" stop nonexistent-vm --force
grep -q "StopVm: ." "$WORK/err" || fail "stop unknown id: no server text"
ok "logs/stop of an unknown VM exit 1 with a message"

# ---- rm ----------------------------------------------------------------------------------------
for v in "$ID" "$ENV_ID" "$ENV2_ID" "$ENV3_ID"; do
    run 0 "$CLI" rm "$v" --wait --timeout 60 --json
    [ "$(jqo .id)" = "$v" ] && [ "$(jqo .waited)" = true ] || fail "rm --json"
done
run 0 "$CLI" ls --json
[ "$(jqo '.vms | length')" = 0 ] || fail "VMs left after rm: $(jq -c '[.vms[].id]' "$WORK/out")"
run 1 "$CLI" info "$ID"
ok "rm --wait removes the VMs; ls is empty again"

# ---- deploy --wait: progress display, and a clear end whatever the backend does ----------------
rc=0
"$CLI" deploy --name wait-test "${D[@]}" --wait --timeout 20 --json >"$WORK/out" 2>"$WORK/err" || rc=$?
grep -q "^waiting for the guest to boot" "$WORK/err" || grep -q "CreateVm: ." "$WORK/err" ||
    fail "deploy --wait: no progress lines: $(cat "$WORK/err")"
if [ "$rc" = 0 ]; then
    grep -q "boot: booted" "$WORK/err" || fail "deploy --wait succeeded without 'booted'"
else
    [ "$rc" = 1 ] || fail "deploy --wait exited $rc"
    grep -Eq "failed to boot|before it booted|no result after 20 s|CreateVm: ." "$WORK/err" ||
        fail "deploy --wait: unclear failure: $(cat "$WORK/err")"
fi
WAIT_MSG=$(tail -1 "$WORK/err" | head -c 160)
WAIT_ID=$(jq -r '.id // empty' "$WORK/out")
[ -z "$WAIT_ID" ] || run 0 "$CLI" rm "$WAIT_ID" --wait --timeout 60
ok "deploy --wait: exit $rc, $WAIT_MSG"

# On a terminal the progress line is redrawn in place ('\r', spinner); `script` gives a pty.
if command -v script >/dev/null; then
    script -qec "'$CLI' deploy --name tty-test --image dstack-test-0.5.9 \
        --compose '$WORK/app-compose.json' --wait --timeout 10 --json" /dev/null \
        >"$WORK/tty.out" 2>&1 || true
    grep -q $'\r. waiting for the guest to boot: ' "$WORK/tty.out" ||
        fail "no spinner line on a tty: $(od -c "$WORK/tty.out" | head -5)"
    TTY_ID=$(tr -d '\r' <"$WORK/tty.out" | sed -n 's/^ *"id": "\([^"]*\)".*/\1/p')
    [ -n "$TTY_ID" ] || fail "deploy on a tty: no id"
    run 0 "$CLI" rm "$TTY_ID" --wait --timeout 60
    ok "progress on a tty: spinner line redrawn with \\r"
fi

# ---- http URL form and Basic auth -------------------------------------------------------------
run 0 env -u DSTACK_VMM_URL "$CLI" ls --url "http://127.0.0.1:$HTTP_PORT/" --json
[ "$(jqo '.vms | length')" = 0 ] || fail "ls over http"
run 0 env -u DSTACK_VMM_TOKEN DSTACK_VMM_AUTH_USER=admin DSTACK_VMM_AUTH_PASSWORD="$TOKEN" \
    "$CLI" ls --url "http://127.0.0.1:$HTTP_PORT" --json
run 1 env -u DSTACK_VMM_TOKEN DSTACK_VMM_AUTH_USER=admin DSTACK_VMM_AUTH_PASSWORD=wrong \
    "$CLI" ls --url "http://127.0.0.1:$HTTP_PORT"
ok "http:// URL with Bearer token and with Basic auth (wrong password refused)"
run 1 "$CLI" ls --url http://127.0.0.1:9
grep -q "cannot reach the VMM at http://127.0.0.1:9" "$WORK/err" || fail "unreachable VMM message"
ok "unreachable VMM: exit 1, named"

echo "all CLI/VMM checks passed"
