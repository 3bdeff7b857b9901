#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# examples/hello's docker-compose services run by a real container engine INSIDE a sandbox CVM
# (docs/containers-in-sandbox.md): dstack-tee-sim (+ its PCCS), dstack-kms --dev in its own
# simulated CVM, dstack-vmm with the sandbox backend and the dstack-guest image
# (scripts/build-guest-image.sh). `dstack deploy` with a port mapping and an encrypted env
# (GREETING) creates the VM stopped; the hello images archive (scripts/build-hello-images.sh)
# goes into its host share; `dstack start`. The guest runs dstack-util setup (keys from the
# KMS over RA-TLS), the guest agent, dockerd + docker-compose, and reports "booted". Then the
# app answers through the mapped port with the GREETING, backend's answer, and SHA-256 of the
# key GetKey returns for that app (read independently from the guest agent's socket). Prints
# the time from deploy to the app answering. The KMS serves under an auth-simple policy
# (--policy) allowing exactly hello's compose hash and the dstack-guest OS image. Also: an env
# var outside allowed_envs is dropped; `dstack verify app` (when the CLI has it) reports the
# deployed compose hash; after `dstack stop --force` / `dstack start` the app's key and the file
# it wrote on its data volume are unchanged, and so is the instance id; the volume's backing
# file (data.img) never holds that file's plaintext; `dstack update --compose` to a compose
# whose hash the policy allows keeps key, note and instance id, and verify app reports the new
# hash; an update to a compose the policy does not list fails the next boot like the denial
# below; `dstack rm` leaves no dstack-guest-<id> cgroups. Negative: the
# app without the archive fails the boot with boot_error "docker-compose up: ..."; a compose
# hash the policy does not allow fails the boot in setup (boot_error names the KMS denial) with
# no container started and no keys written. Needs root and docker.io + docker-compose (exit 77
# otherwise).
set -u

. "$(dirname "$0")/sandbox_stack.sh"
sbx_preflight
sbx_init test_sandbox_containers

# Entries in the root of an ext4 image besides lost+found (debugfs, read-only).
disk_entries() {
    debugfs -R 'ls -p /' "$1" 2>/dev/null | awk -F/ 'NF > 5 && $6 != "." && $6 != ".." && $6 != "lost+found" { print $6 }'
}

sbx_build_images
sbx_start_sim

# The KMS (start_kms, sandbox_stack.sh): the first
# start bootstraps the KMS's keys; then it serves under an auth-simple policy file it re-reads
# on change: its own measurement and the OS image now, hello's compose hash once deployed.
OS_IMAGE=$(cat "$WORK/images/dstack-guest-0.5.0/digest.txt")
own_boot() { # LOG KEY
    grep -o 'own boot info: .*' "$WORK/$1" | head -1 | sed 's/own boot info: //' |
        python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$2"
}
write_policy() { # MR [APP_ID COMPOSE_HASH...]
    local apps="{}" hashes="" h
    for h in "${@:3}"; do hashes="$hashes${hashes:+, }\"0x$h\""; done
    [ $# -ge 3 ] && apps="{\"0x$2\": {\"composeHashes\": [$hashes], \"allowAnyDevice\": true}}"
    printf '{"osImages": ["0x%s", "0x%s"], "kms": {"mrAggregated": ["0x%s"], "allowAnyDevice": true}, "apps": %s}\n' \
        "$KMS_OS" "$OS_IMAGE" "$1" "$apps" >"$WORK/policy.json.tmp"
    mv "$WORK/policy.json.tmp" "$WORK/policy.json"
}
start_kms kms-bootstrap.log
kill "$KMS_PID" && wait "$KMS_PID" 2>/dev/null
KMS_OS=$(own_boot kms-bootstrap.log osImageHash)
write_policy "$(own_boot kms-bootstrap.log mrAggregated)"
start_kms kms.log --policy "$WORK/policy.json"
KMS_MR=$(own_boot kms.log mrAggregated)
[ ${#KMS_MR} = 64 ] || fail "the KMS did not log its own boot info"
write_policy "$KMS_MR"

HOST_PORT=$(free_port)
sbx_start_vmm
sbx_hello_compose

CLI=("$BIN/dstack")
GREETING="hi-from-encrypted-env-$RANDOM"
NOT_ALLOWED="not-allowed-secret-$RANDOM$RANDOM"
printf 'GREETING=%s\nNOT_ALLOWED_VAR=%s\n' "$GREETING" "$NOT_ALLOWED" >"$WORK/app.env"
T0=$(date +%s.%N)
"${CLI[@]}" deploy --name hello --image dstack-guest-0.5.0 --compose "$HELLO" \
    --vcpu 2 --memory 1G --disk 1 --port "tcp:$HOST_PORT:8080" --kms-url "https://$GW:$KMS_PORT" \
    --env-file "$WORK/app.env" --stopped --json >"$WORK/deploy.json" 2>"$WORK/deploy.err" ||
    { cat "$WORK/deploy.err"; fail "dstack deploy"; }
VM_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/deploy.json")
APP_ID=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["app_id"])' "$WORK/deploy.json")
COMPOSE_HASH=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["compose_hash"])' "$WORK/deploy.json")
[ "$COMPOSE_HASH" = "$(sha256sum "$HELLO" | cut -c1-64)" ] ||
    fail "deploy reported compose hash $COMPOSE_HASH, not the file's SHA-256"
write_policy "$KMS_MR" "$APP_ID" "$COMPOSE_HASH"
# Images are delivered in the host share (read-only in the guest), not in the measured image.
cp "$WORK/hello-images.tar" "$WORK/run/$VM_ID/shared/images.tar" || fail "copy images.tar"
"${CLI[@]}" start "$VM_ID" >/dev/null || fail "dstack start"
echo "ok - deployed $VM_ID (app $APP_ID), images in its host share, started"

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
T_BOOT=$(date +%s.%N)
echo "ok - boot_progress booted"

ANSWER=""
for _ in $(seq 1 300); do
    ANSWER=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/" 2>/dev/null) && break
    sleep 0.1
done
T_APP=$(date +%s.%N)
[ -n "$ANSWER" ] || fail "the app did not answer on 127.0.0.1:$HOST_PORT"
echo "app answered: $ANSWER"

# The key GetKey returns for this app, read from the guest agent's socket in the sandbox.
PID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
KEY=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" \
    'http://localhost/GetKey?path=hello&purpose=web' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])') ||
    fail "GetKey through /proc/$PID/root/var/run/dstack.sock"
WANT=$(python3 -c 'import hashlib,sys; print(hashlib.sha256(bytes.fromhex(sys.argv[1])).hexdigest())' "$KEY")
case "$ANSWER" in
    "$GREETING key-sha256=$WANT backend=backend-ok") echo "ok - answer has GREETING, SHA-256(GetKey) and backend's answer" ;;
    *) fail "unexpected answer: '$ANSWER' (want '$GREETING key-sha256=$WANT backend=backend-ok')" ;;
esac
# The key is the app's: the guest agent reports the deployed app id, and a different path
# gives a different key (so the answer is not a constant).
INFO_APP=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" http://localhost/Info |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["app_id"])')
[ "$INFO_APP" = "$APP_ID" ] || fail "guest agent app_id $INFO_APP != deployed $APP_ID"
OTHER=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" \
    'http://localhost/GetKey?path=other&purpose=web' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
[ -n "$OTHER" ] && [ "$OTHER" != "$KEY" ] || fail "GetKey path=other gave the same key"
echo "ok - guest agent serves app $APP_ID; keys differ per path"
# the containers really run under the guest's engine
nsenter -t "$PID" -m -n -p -u /usr/bin/docker ps --format '{{.Names}} {{.Image}}' >"$WORK/ps.txt" 2>&1 ||
    fail "docker ps in the guest: $(cat "$WORK/ps.txt")"
grep -q "dstack-hello-web" "$WORK/ps.txt" && grep -q "dstack-hello-backend" "$WORK/ps.txt" ||
    fail "containers not running: $(cat "$WORK/ps.txt")"
echo "ok - docker ps in the guest: $(tr '\n' ';' <"$WORK/ps.txt")"


# The env var outside allowed_envs was dropped by setup: not in the guest's decrypted env, not
# in the web container's environment; GREETING is in both.
GUEST="/proc/$PID/root"
grep -q "encrypted env: 1 variable(s) not in allowed_envs were dropped" "$WORK/run/$VM_ID/serial.log" ||
    fail "setup did not report the dropped variable"
grep -q "encrypted env: 1 variable(s) decrypted" "$WORK/run/$VM_ID/serial.log" ||
    fail "setup did not report 1 decrypted variable"
[ -s "$GUEST/run/dstack/.host-shared/.decrypted-env" ] || fail "no decrypted env in the guest"
grep -q "GREETING" "$GUEST/run/dstack/.host-shared/.decrypted-env" || fail "GREETING not in the decrypted env"
! grep -rqs "NOT_ALLOWED_VAR\|$NOT_ALLOWED" "$GUEST/run/dstack/" || fail "NOT_ALLOWED_VAR reached the guest's files"
nsenter -t "$PID" -m -n -p -u /usr/bin/docker inspect -f '{{json .Config.Env}}' app_web_1 app-web-1 \
    >"$WORK/webenv.txt" 2>/dev/null
grep -q "GREETING=$GREETING" "$WORK/webenv.txt" || fail "GREETING not in web's env: $(cat "$WORK/webenv.txt")"
! grep -q "NOT_ALLOWED" "$WORK/webenv.txt" || fail "NOT_ALLOWED_VAR in web's env"
echo "ok - GREETING decrypted and in web's env; NOT_ALLOWED_VAR (not in allowed_envs) dropped"

if "$BIN/dstack" verify app --help >/dev/null 2>&1; then
    "$BIN/dstack" verify app "$APP_ID" --vmm-url "$DSTACK_VMM_URL" \
        --pccs-url "http://127.0.0.1:$PCCS_PORT" --insecure-allow-simulated --json \
        >"$WORK/verify.json" 2>"$WORK/verify.err" || fail "dstack verify app: $(cat "$WORK/verify.err")"
    grep -qi "$COMPOSE_HASH" "$WORK/verify.json" || fail "verify app: compose hash $COMPOSE_HASH not reported"
    echo "ok - dstack verify app (SIMULATED quotes accepted): compose hash $COMPOSE_HASH"
else
    echo "# dstack verify app not in this CLI yet: that assertion is left out"
fi

# The app wrote /data/note.txt on its data volume (a docker volume on the encrypted volume).
NOTE=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/note") || fail "GET /note"
case "$NOTE" in hello-note-????????????????????????????????) ;; *) fail "note: '$NOTE'" ;; esac
VOLNOTE=$(cat "$GUEST"/run/dstack/persistent/docker/volumes/*/_data/note.txt 2>/dev/null)
[ "$VOLNOTE" = "$NOTE" ] || fail "the note is not on the data volume (guest sees '$VOLNOTE')"
sync
[ -s "$WORK/run/$VM_ID/data.img" ] || fail "no data.img"
! grep -aqF "$NOTE" "$WORK/run/$VM_ID/data.img" || fail "data.img holds the note's plaintext"
# (the same check as for the denied guest below, here where setup did write: not empty)
[ -n "$(disk_entries "$WORK/run/$VM_ID/data.img")" ] || fail "debugfs sees nothing on the used data.img"
echo "ok - note $NOTE on the data volume (visible in the guest), not in plaintext in data.img"

# The instance id (dstack info, from the guest's .instance_info) and the guest agent's Info.
instance_ids() { # -> "VMM_IID|AGENT_IID"
    local vi ai
    vi=$("${CLI[@]}" info "$VM_ID" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("instance_id") or "")')
    ai=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" http://localhost/Info |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("instance_id") or "")')
    echo "$vi|$ai"
}
IID=$(instance_ids)
case "$IID" in
    ?*"|"?*) [ "${IID%|*}" = "${IID#*|}" ] || fail "dstack info instance_id != guest agent's: $IID" ;;
    *) fail "no instance id (dstack info|guest agent Info): '$IID'" ;;
esac
IID=${IID%|*}
# Waits for VM_ID to report booted again after a start; sets PID.
wait_booted() { # WHAT
    local st=""
    for _ in $(seq 1200); do
        st=$("${CLI[@]}" info "$VM_ID" --json 2>/dev/null | python3 -c 'import json,sys; i=json.load(sys.stdin)
print("%s|%s" % (i.get("boot_progress") or "", i.get("boot_error") or ""))' 2>/dev/null)
        [ "$st" = "booted|" ] && break
        case "$st" in *"|"?*) fail "boot error $1: $st" ;; esac
        sleep 0.1
    done
    [ "$st" = "booted|" ] || fail "not booted $1: $st"
    PID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
}
stop_vm() { # WHAT
    "${CLI[@]}" stop --force "$VM_ID" >/dev/null || fail "dstack stop --force $1"
    for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    ! kill -0 "$PID" 2>/dev/null || fail "the sandbox still runs after stop --force $1"
}
app_answer() {
    local a=""
    for _ in $(seq 300); do
        a=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/" 2>/dev/null) && break
        sleep 0.1
    done
    echo "$a"
}

# stop --force / start: same key, same note, same instance id.
"${CLI[@]}" stop --force "$VM_ID" >/dev/null || fail "dstack stop --force"
for _ in $(seq 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$PID" 2>/dev/null || fail "the sandbox still runs after stop --force"
"${CLI[@]}" start "$VM_ID" >/dev/null || fail "dstack start (again)"
st=""
for _ in $(seq 1200); do
    st=$("${CLI[@]}" info "$VM_ID" --json 2>/dev/null | python3 -c 'import json,sys; i=json.load(sys.stdin)
print("%s|%s" % (i.get("boot_progress") or "", i.get("boot_error") or ""))' 2>/dev/null)
    [ "$st" = "booted|" ] && break
    case "$st" in *"|"?*) fail "boot error after restart: $st" ;; esac
    sleep 0.1
done
[ "$st" = "booted|" ] || fail "not booted after restart: $st"
ANSWER2=""
for _ in $(seq 300); do
    ANSWER2=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/" 2>/dev/null) && break
    sleep 0.1
done
[ "$ANSWER2" = "$ANSWER" ] || fail "after restart: '$ANSWER2', before: '$ANSWER' (key changed?)"
NOTE2=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/note") || fail "GET /note after restart"
[ "$NOTE2" = "$NOTE" ] || fail "note after restart '$NOTE2' != '$NOTE'"
PID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
[ "$(instance_ids)" = "$IID|$IID" ] || fail "instance id after restart '$(instance_ids)', before '$IID'"
echo "ok - after stop --force / start: same key-sha256, same note, same instance id $IID"

# Upgrade: a new compose for the same app (one more name in allowed_envs: another compose
# hash), allowed by the policy. `dstack update --compose` keeps the app id (the manifest pins
# it); on the next start setup asks the KMS again, which now sees the new hash.
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["allowed_envs"].append("UPGRADE_FLAG")
json.dump(c, open(sys.argv[2], "w"), indent=4)' "$HELLO" "$WORK/upgrade.json"
HASH_UP=$(sha256sum "$WORK/upgrade.json" | cut -c1-64)
[ "$HASH_UP" != "$COMPOSE_HASH" ] || fail "the upgrade compose has the old hash"
write_policy "$KMS_MR" "$APP_ID" "$COMPOSE_HASH" "$HASH_UP"
T_UP=$(date +%s.%N)
"${CLI[@]}" update "$VM_ID" --compose "$WORK/upgrade.json" --json >"$WORK/update.json" 2>"$WORK/update.err" ||
    fail "dstack update --compose: $(cat "$WORK/update.err")"
grep -q "$HASH_UP" "$WORK/update.json" || fail "update did not report $HASH_UP: $(cat "$WORK/update.json")"
stop_vm "(upgrade)"
"${CLI[@]}" start "$VM_ID" >/dev/null || fail "dstack start (upgrade)"
wait_booted "after the allowed upgrade"
ANSWER3=$(app_answer)
[ "$ANSWER3" = "$ANSWER" ] || fail "after upgrade: '$ANSWER3', before: '$ANSWER' (key changed?)"
NOTE3=$(curl -sf --max-time 5 "http://127.0.0.1:$HOST_PORT/note") || fail "GET /note after upgrade"
[ "$NOTE3" = "$NOTE" ] || fail "note after upgrade '$NOTE3' != '$NOTE'"
[ "$(instance_ids)" = "$IID|$IID" ] || fail "instance id after upgrade '$(instance_ids)', before '$IID'"
INFO_UP=$(curl -sf --unix-socket "/proc/$PID/root/var/run/dstack.sock" http://localhost/Info) ||
    fail "guest agent Info after upgrade"
python3 -c 'import json,sys; i=json.loads(sys.argv[1])
sys.exit(0 if i.get("app_id") == sys.argv[2] and sys.argv[3] in json.dumps(i) and sys.argv[4] not in json.dumps(i) else 1)' \
    "$INFO_UP" "$APP_ID" "$HASH_UP" "$COMPOSE_HASH" || fail "guest agent Info after upgrade: $INFO_UP"
if "$BIN/dstack" verify app --help >/dev/null 2>&1; then
    "$BIN/dstack" verify app "$APP_ID" --vmm-url "$DSTACK_VMM_URL" \
        --pccs-url "http://127.0.0.1:$PCCS_PORT" --insecure-allow-simulated --json \
        >"$WORK/verify2.json" 2>"$WORK/verify2.err" || fail "dstack verify app (upgrade): $(cat "$WORK/verify2.err")"
    grep -qi "$HASH_UP" "$WORK/verify2.json" || fail "verify app after upgrade: new compose hash $HASH_UP not reported"
    ! grep -qi "$COMPOSE_HASH" "$WORK/verify2.json" || fail "verify app after upgrade still reports $COMPOSE_HASH"
fi
python3 -c 'import sys; a,b=map(float,sys.argv[1:3]); print("ok - upgrade to compose %s (allowed): same app id, instance id, key-sha256 and note; verify app reports the new hash (update -> booted %.1f s)" % (sys.argv[3][:16], b-a))' \
    "$T_UP" "$(date +%s.%N)" "$HASH_UP"

python3 -c 'import sys; t0,b,a=map(float,sys.argv[1:]); print("deploy -> booted: %.1f s, deploy -> app answering: %.1f s" % (b-t0, a-t0))' \
    "$T0" "$T_BOOT" "$T_APP"
grep 'init: \[' "$WORK/run/$VM_ID/serial.log" | sed 's/^/  /'

# Graceful shutdown as the sandbox backend does it (SIGTERM to pid 1; the VMM's ShutdownVm
# needs a guest API endpoint the sandbox does not have): compose down, engine stopped, exit.
kill -TERM "$PID" || fail "SIGTERM to the guest's init"
for _ in $(seq 1 300); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$PID" 2>/dev/null || fail "the guest's init did not exit within 30 s of SIGTERM"
# (the VMM copies the console into serial.log asynchronously)
for _ in $(seq 1 50); do grep -q "engine stopped" "$WORK/run/$VM_ID/serial.log" && break; sleep 0.1; done
grep -q "SIGTERM, shutting down" "$WORK/run/$VM_ID/serial.log" || fail "init did not shut down cleanly"
grep -q "engine stopped" "$WORK/run/$VM_ID/serial.log" || fail "init did not stop the engine"
echo "ok - SIGTERM: compose down, engine stopped, init exited"
# Negative: the same app without the images archive in its share. The guest cannot pull
# (no registry on its localhost), so compose fails and init reports a boot.error naming the step.
"${CLI[@]}" deploy --name hello-noimg --image dstack-guest-0.5.0 \
    --compose "$HELLO" --memory 1G --disk 1 \
    --kms-url "https://$GW:$KMS_PORT" --json >"$WORK/deploy2.json" 2>"$WORK/deploy2.err" ||
    { cat "$WORK/deploy2.err"; fail "dstack deploy (no images)"; }
VM2=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/deploy2.json")
err=""
for _ in $(seq 1 600); do
    err=$("${CLI[@]}" info "$VM2" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("boot_error") or "")' 2>/dev/null)
    [ -n "$err" ] && break
    sleep 0.1
done
"${CLI[@]}" rm "$VM2" >/dev/null 2>&1
case "$err" in
    "docker-compose up: "*) echo "ok - without images.tar: boot_error '${err:0:80}...'" ;;
    *) fail "without images.tar: boot_error '$err', want 'docker-compose up: ...'" ;;
esac
# Denial: the same app id with a compose the policy does not list (another name -> another
# compose hash). setup's GetAppKey is refused, the boot fails with the KMS's reason, no
# engine or container runs, and no keys were written (not in the guest, not on the disk).
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["name"]="hello-denied"
json.dump(c, open(sys.argv[2], "w"), indent=4)' "$HELLO" "$WORK/denied.json"
"${CLI[@]}" deploy --name hello-denied --image dstack-guest-0.5.0 --compose "$WORK/denied.json" \
    --app-id "$APP_ID" --memory 1G --disk 1 --kms-url "https://$GW:$KMS_PORT" --stopped --json \
    >"$WORK/deploy3.json" 2>"$WORK/deploy3.err" || { cat "$WORK/deploy3.err"; fail "dstack deploy (denied)"; }
VM3=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$WORK/deploy3.json")
cp "$WORK/hello-images.tar" "$WORK/run/$VM3/shared/images.tar" || fail "copy images.tar (denied)"
"${CLI[@]}" start "$VM3" >/dev/null || fail "dstack start (denied)"
err=""
for _ in $(seq 600); do
    err=$("${CLI[@]}" info "$VM3" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("boot_error") or "")' 2>/dev/null)
    [ -n "$err" ] && break
    sleep 0.1
done
case "$err" in
    *"compose hash not allowed"*) echo "ok - denied compose: boot_error '${err:0:120}...'" ;;
    *) fail "denied compose: boot_error '$err', want the KMS's 'compose hash not allowed'" ;;
esac
P3=$(cut -d' ' -f1 "$WORK/run/$VM3/vm.pid")
kill -0 "$P3" 2>/dev/null || fail "denied guest's init exited (it should idle in the error state)"
for c in /proc/[0-9]*/comm; do
    case "$(cat "$c" 2>/dev/null)" in dockerd | containerd* | docker-proxy) ;; *) continue ;; esac
    p=${c#/proc/}; p=${p%/comm}
    [ "$(readlink "/proc/$p/ns/pid")" = "$(readlink "/proc/$P3/ns/pid")" ] &&
        fail "denied guest runs $(cat "$c")"
done
! grep -q 'init: \[.*\(guest agent\|container engine\|docker-compose up\)' "$WORK/run/$VM3/serial.log" ||
    fail "denied guest went past setup: $(grep 'init: \[' "$WORK/run/$VM3/serial.log" | tr '\n' ';')"
[ ! -e "/proc/$P3/root/run/dstack/.host-shared/.appkeys.json" ] || fail "denied guest has .appkeys.json"
! grep -q "/run/dstack/persistent" "/proc/$P3/mounts" || fail "denied guest mounted its data volume"
# The VMM formats data.img empty (mkfs.ext4 -O encrypt); setup never got keys to fill it.
[ -z "$(disk_entries "$WORK/run/$VM3/data.img")" ] ||
    fail "denied guest's data.img has: $(disk_entries "$WORK/run/$VM3/data.img" | tr '\n' ' ')"
echo "ok - denied guest: no engine or container, no .appkeys.json, data volume untouched"
"${CLI[@]}" rm "$VM3" >/dev/null 2>&1

# Upgrade denied: VM_ID (shut down above) gets a compose whose hash the policy does not list.
# The next start asks the KMS again and is refused: boot_error with the KMS's reason, no
# engine or container, no .appkeys.json, the data volume not mounted.
python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); c["allowed_envs"].append("DENIED_FLAG")
json.dump(c, open(sys.argv[2], "w"), indent=4)' "$WORK/upgrade.json" "$WORK/upgrade-denied.json"
HASH_DENIED=$(sha256sum "$WORK/upgrade-denied.json" | cut -c1-64)
"${CLI[@]}" stop --force "$VM_ID" >/dev/null 2>&1 # (it already exited on SIGTERM)
"${CLI[@]}" update "$VM_ID" --compose "$WORK/upgrade-denied.json" --json >"$WORK/update2.json" \
    2>"$WORK/update2.err" || fail "dstack update --compose (denied): $(cat "$WORK/update2.err")"
grep -q "$HASH_DENIED" "$WORK/update2.json" || fail "update did not report $HASH_DENIED"
SERIAL_OFF=$(stat -c %s "$WORK/run/$VM_ID/serial.log" 2>/dev/null || echo 0)
"${CLI[@]}" start "$VM_ID" >/dev/null || fail "dstack start (denied upgrade)"
err=""
for _ in $(seq 600); do
    err=$("${CLI[@]}" info "$VM_ID" --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin).get("boot_error") or "")' 2>/dev/null)
    [ -n "$err" ] && break
    sleep 0.1
done
case "$err" in
    *"compose hash not allowed"*) ;;
    *) fail "denied upgrade: boot_error '$err', want the KMS's 'compose hash not allowed'" ;;
esac
PID=$(cut -d' ' -f1 "$WORK/run/$VM_ID/vm.pid")
kill -0 "$PID" 2>/dev/null || fail "denied upgrade: the guest's init exited"
for c in /proc/[0-9]*/comm; do
    case "$(cat "$c" 2>/dev/null)" in dockerd | containerd* | docker-proxy) ;; *) continue ;; esac
    p=${c#/proc/}; p=${p%/comm}
    [ "$(readlink "/proc/$p/ns/pid")" = "$(readlink "/proc/$PID/ns/pid")" ] &&
        fail "denied upgrade: the guest runs $(cat "$c")"
done
# this boot's part of the console (the log is appended to across starts)
[ "$(stat -c %s "$WORK/run/$VM_ID/serial.log")" -ge "$SERIAL_OFF" ] || SERIAL_OFF=0
tail -c +"$((SERIAL_OFF + 1))" "$WORK/run/$VM_ID/serial.log" >"$WORK/serial-denied.log"
! grep -q 'init: \[.*\(guest agent\|container engine\|docker-compose up\)' "$WORK/serial-denied.log" ||
    fail "denied upgrade went past setup: $(grep 'init: \[' "$WORK/serial-denied.log" | tr '\n' ';')"
[ ! -e "/proc/$PID/root/run/dstack/.host-shared/.appkeys.json" ] || fail "denied upgrade: .appkeys.json in the guest"
[ ! -e "$WORK/run/$VM_ID/shared/.appkeys.json" ] || fail "denied upgrade: .appkeys.json in the host share"
! grep -q "/run/dstack/persistent" "/proc/$PID/mounts" || fail "denied upgrade: data volume mounted"
! curl -sf --max-time 2 "http://127.0.0.1:$HOST_PORT/" >/dev/null 2>&1 || fail "denied upgrade: the app answers"
echo "ok - upgrade to compose ${HASH_DENIED:0:16} (not in the policy): boot_error '${err:0:100}...', no engine, no keys, volume not mounted"

# dstack rm removes the sandbox and the containers' cgroups the guest's engine created.
"${CLI[@]}" rm "$VM_ID" >/dev/null || fail "dstack rm"
for _ in $(seq 300); do [ -d "$WORK/run/$VM_ID" ] || break; sleep 0.1; done
[ ! -d "$WORK/run/$VM_ID" ] || fail "run dir of $VM_ID still there after rm"
left=$(ls -d /sys/fs/cgroup/*/dstack-guest-"$VM_ID" /sys/fs/cgroup/*/dstack-vmm/"$VM_ID" 2>/dev/null)
[ -z "$left" ] || fail "cgroups left after rm: $left"
! grep -q "AddressSanitizer\|LeakSanitizer\|runtime error:" "$WORK/vmm.log" "$WORK/kms.log" ||
    fail "sanitizer report in vmm.log/kms.log"
echo "ok - dstack rm: no dstack-guest-$VM_ID / dstack-vmm/$VM_ID cgroups left"
echo "PASS"
