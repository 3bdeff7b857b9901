#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Build the "dstack-guest" image for dstack-vmm's sandbox backend (docs/sandbox.md,
# docs/containers-in-sandbox.md): a guest that boots like a dstack CVM and runs the app's
# docker-compose services with a real container engine (Debian docker.io: dockerd, containerd,
# runc; docker-compose v1) inside the sandbox. Its /init runs, in order:
#   1. cgroup v1 hierarchies under /sys/fs/cgroup (tmpfs + one mount per host hierarchy);
#   2. dstack-util setup --host-api /dstack/.host-api.sock --data-disk /dstack/data.img
#      --work-dir /run/dstack (tmpfs: keys never touch the disk) [+ --insecure-allow-simulated
#      when the measured cmdline has dstack.allow_simulated=1];
#   3. dstack-guest-agent on /var/run/dstack.sock with the files setup wrote;
#   3b. dstack-util gateway-setup (host-side.md §3.3 step 17): when app-compose.json enables the
#      gateway, register with it and bring up dstack-wg0 (wg + wireguard-go + iproute2 ip +
#      iptables, no wg-quick); a failure is reported as boot.error and the boot continues; then
#      dstack-util gateway-checker in the background (§3.6; options from the measured cmdline
#      word dstack.gateway_checker=--opt=V,--opt=V, e.g. shorter intervals for tests);
#   4. dockerd (vfs storage on the encrypted data volume), `docker load` of the host share's
#      images.tar when present, then docker-compose up -d on app-compose.json's
#      docker_compose_file with .decrypted-env exported;
#   5. dstack-util notify boot.progress "booted". On SIGTERM: compose down, engine stopped,
#      shutdown.progress "stopping". Any failure: boot.error with the step and the log tail.
# The rootfs is ASSEMBLED (not a bind of the host's /usr; the backend binds only fixed paths,
# and a bind would be unmeasured): busybox-static, the engine binaries, python3 + the modules
# docker-compose needs, dstack-util/dstack-guest-agent from BIN, plus every shared library
# `ldd` names. rootfs.manifest (sha256 of every file, symlink targets) is measured into RTMR2,
# so the measurement covers the engine, compose, our binaries and their libraries.
# Usage: build-guest-image.sh DIR [BIN]  (DIR is replaced; BIN default build/bin)
# GUEST_CMDLINE_EXTRA (env): words appended to the image's (measured) cmdline.
set -euo pipefail

DIR=${1:?usage: build-guest-image.sh DIR [BIN]}
SRC=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(cd "${2:-${DS_BIN:-$SRC/build/bin}}" && pwd)
BUSYBOX=${BUSYBOX:-$(command -v busybox || true)}
[ -n "$BUSYBOX" ] || { echo "busybox (busybox-static) not found" >&2; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then echo "$BUSYBOX is not static" >&2; exit 1; fi
for b in dstack-util dstack-guest-agent; do
    [ -x "$BIN/$b" ] || { echo "$BIN/$b not built" >&2; exit 1; }
done
# The engine and the compose runner (scripts/install-deps.sh: docker.io docker-compose).
HOSTBINS=(/usr/sbin/dockerd /usr/bin/containerd /usr/bin/containerd-shim-runc-v2 /usr/bin/runc
          /usr/bin/docker /usr/bin/docker-init /usr/sbin/docker-proxy /usr/sbin/xtables-legacy-multi
          /usr/bin/python3 /sbin/mke2fs /sbin/e2fsck /usr/bin/docker-compose
          /usr/bin/wg /usr/bin/wireguard-go /usr/sbin/ip)
for b in "${HOSTBINS[@]}"; do
    [ -e "$b" ] || { echo "$b missing (scripts/install-deps.sh installs docker.io, docker-compose, wireguard-tools, wireguard-go, iproute2)" >&2; exit 1; }
done

rm -rf "$DIR"
R="$DIR/rootfs"
mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,usr/lib,usr/lib64,etc,dstack,proc,sys,dev,tmp,run,root,var/lib,var/run}
# merged /usr for libraries, as on Debian 12 (ldd names both /lib and /usr/lib paths)
ln -s usr/lib "$R/lib"
ln -s usr/lib64 "$R/lib64"
cp "$BUSYBOX" "$R/bin/busybox"
for app in $("$BUSYBOX" --list); do
    [ "$app" = busybox ] || [ -e "$R/bin/$app" ] || ln -s busybox "$R/bin/$app"
done

# copy_file SRC: copy to the same path in the rootfs (resolving symlinked parents once).
copy_file() {
    local src=$1
    [ -e "$R$src" ] && return 0
    mkdir -p "$R$(dirname "$src")"
    cp -L --preserve=mode "$src" "$R$src"
}
# copy_libs FILE...: every shared library ldd names (and the dynamic loader).
copy_libs() {
    { ldd "$@" 2>/dev/null || true; } | awk '/=> \//{print $3} /^[ \t]+\//{print $1}' | sort -u |
        while read -r lib; do copy_file "$lib"; copy_file "$(readlink -f "$lib")"; done
}
for b in "${HOSTBINS[@]}"; do copy_file "$b"; done
copy_libs "${HOSTBINS[@]}"
cp "$BIN/dstack-util" "$BIN/dstack-guest-agent" "$R/usr/bin/"
copy_libs "$BIN/dstack-util" "$BIN/dstack-guest-agent"
ln -s mke2fs "$R/sbin/mkfs.ext4"
# iptables loads its match/target extensions (libxt_*.so, "standard" too) at run time.
XT=$(dirname "$(readlink -f /usr/sbin/xtables-legacy-multi)")/../lib/x86_64-linux-gnu/xtables
XT=$(readlink -f "$XT")
mkdir -p "$R$XT"
cp -a "$XT/." "$R$XT/"
copy_libs $(find "$R$XT" -name '*.so' | sed "s|^$R||")
for t in iptables iptables-save iptables-restore ip6tables ip6tables-save ip6tables-restore; do
    ln -s xtables-legacy-multi "$R/usr/sbin/$t"
done
# python3: the standard library and the modules docker-compose imports (the whole
# dist-packages directory: compose, docker, yaml, requests, jsonschema, ...), with the
# libraries their C extensions link.
PYLIB=$(python3 -c 'import sys; print("/usr/lib/python%d.%d" % sys.version_info[:2])')
mkdir -p "$R$PYLIB" "$R/usr/lib/python3"
cp -a "$PYLIB/." "$R$PYLIB/"
rm -rf "$R$PYLIB/test" "$R$PYLIB"/config-* 
cp -a /usr/lib/python3/dist-packages "$R/usr/lib/python3/"
find "$R/usr/lib" -name __pycache__ -prune -exec rm -rf {} +
copy_libs $(find "$R$PYLIB/lib-dynload" "$R/usr/lib/python3/dist-packages" -name '*.so' | sed "s|^$R||")

cat >"$R/etc/passwd" <<'P'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
P
printf 'root:x:0:\ndocker:x:999:\nnogroup:x:65534:\n' >"$R/etc/group"
printf 'hosts: files dns\n' >"$R/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n' >"$R/etc/hosts"
: >"$R/etc/resolv.conf"
mkdir -p "$R/etc/docker"
echo '{}' >"$R/etc/docker/daemon.json"

cat >"$R/init" <<'IEOF'
#!/bin/sh
# dstack-guest init (scripts/build-guest-image.sh): setup -> guest agent -> container engine ->
# docker-compose up -> "booted". Environment from dstack-vmm's sandbox backend.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
API=/dstack/.host-api.sock
WORK=/run/dstack
HS=$WORK/.host-shared
LOG=/run/dstack-boot
SIMFLAG=""
for a in "$@"; do [ "$a" = dstack.allow_simulated=1 ] && SIMFLAG=--insecure-allow-simulated; done
notify() { dstack-util notify --host-api "$API" --event "$1" --payload "$2" >/dev/null 2>&1 ||
    echo "init: notify $1 $2 failed"; }
fail() {
    echo "init: FAILED: $1"
    [ -n "${2:-}" ] && [ -f "$2" ] && tail -n 20 "$2"
    notify boot.error "$1: $(tail -n 3 "${2:-/dev/null}" 2>/dev/null | tr '\n' ' ' | cut -c1-400)"
    while :; do sleep 3600; done
}
t0=$(cut -d' ' -f1 /proc/uptime)
stamp() { echo "init: [$(awk -v t="$t0" '{printf "%.2f", $1 - t}' /proc/uptime)s] $*"; }
mkdir -p "$LOG" "$WORK" /var/run /var/lib
stamp "dstack-guest vm=$DSTACK_VM_ID ip=$DSTACK_GUEST_IP tee=${DSTACK_TEE:-none}"

# cgroup v1 hierarchies as on the host (one per hierarchy id in /proc/cgroups).
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup || fail "mount /sys/fs/cgroup"
for h in $(awk 'NR > 1 && $2 != 0 && $4 == 1 { a[$2] = a[$2] ? a[$2] "," $1 : $1 }
                END { for (k in a) print a[k] }' /proc/cgroups); do
    mkdir -p "/sys/fs/cgroup/$h" && mount -t cgroup -o "$h" cgroup "/sys/fs/cgroup/$h" ||
        echo "init: cgroup $h not mounted"
done
mkdir -p /sys/fs/cgroup/systemd && mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd 2>/dev/null

stamp "dstack-util setup"
dstack-util setup --host-shared /dstack/.host-shared --work-dir "$WORK" --host-api "$API" \
    --data-disk /dstack/data.img $SIMFLAG >"$LOG/setup.log" 2>&1 || fail "dstack-util setup" "$LOG/setup.log"
cat "$LOG/setup.log"

stamp "guest agent"
dstack-guest-agent --keys-file "$HS/.appkeys.json" --compose-file "$HS/app-compose.json" \
    --sys-config-file "$HS/.sys-config.json" --instance-info-file "$HS/.instance_info" \
    --socket /var/run/dstack.sock --tappd-socket "" --http "" >"$LOG/agent.log" 2>&1 &
AGENT=$!
i=0
while [ ! -S /var/run/dstack.sock ]; do
    kill -0 $AGENT 2>/dev/null || fail "dstack-guest-agent exited" "$LOG/agent.log"
    i=$((i + 1)); [ $i -gt 500 ] && fail "dstack-guest-agent: no socket" "$LOG/agent.log"
    usleep 20000
done

# Gateway registration (host-side.md §3.3 step 17): gateway-setup does nothing (exit 0) unless
# app-compose.json enables the gateway; a failure is reported by it as boot.error
# "dstack-gateway registration failed, ..." and the boot continues (the checker retries).
GWCHECK_ARGS=""
for a in "$@"; do
    case "$a" in
        dstack.gateway_checker=*)
            v=${a#dstack.gateway_checker=}
            case "$v" in *[!-a-z0-9=,]*) echo "init: ignoring $a (allowed: -a-z0-9=,)" ;;
                *) GWCHECK_ARGS=$(echo "$v" | tr ',' ' ') ;; esac ;;
    esac
done
stamp "dstack-gateway"
dstack-util gateway-setup --work-dir "$WORK" --host-api "$API" >"$LOG/gateway.log" 2>&1 ||
    echo "init: dstack-gateway registration failed (reported; the boot continues)"
cat "$LOG/gateway.log"
dstack-util gateway-checker --work-dir "$WORK" $GWCHECK_ARGS >"$LOG/gateway-checker.log" 2>&1 &
GWCHECK=$!

stamp "container engine"
DATA=$WORK/persistent
mkdir -p "$DATA/docker"
# vfs: the data volume is ext4 with fscrypt, and overlayfs is not stacked on the sandbox's own
# overlay root; the app's images are a few MB, so copying layers costs little.
dockerd --data-root "$DATA/docker" --storage-driver vfs --exec-root /run/docker \
    --pidfile /run/docker.pid --host unix:///var/run/docker.sock --log-level warn \
    --cgroup-parent "/dstack-guest-$DSTACK_VM_ID" \
    >"$LOG/dockerd.log" 2>&1 &
DOCKERD=$!
i=0
until docker version >/dev/null 2>&1; do
    kill -0 $DOCKERD 2>/dev/null || fail "dockerd exited" "$LOG/dockerd.log"
    i=$((i + 1)); [ $i -gt 600 ] && fail "dockerd did not answer" "$LOG/dockerd.log"
    usleep 50000
done
if [ -f /dstack/.host-shared/images.tar ]; then
    stamp "docker load images.tar"
    docker load -i /dstack/.host-shared/images.tar >"$LOG/load.log" 2>&1 || fail "docker load" "$LOG/load.log"
    cat "$LOG/load.log"
fi

stamp "docker-compose up"
mkdir -p "$WORK/app"
python3 -c 'import json, sys; sys.stdout.write(json.load(open(sys.argv[1]))["docker_compose_file"])' \
    "$HS/app-compose.json" >"$WORK/app/docker-compose.yaml" || fail "docker_compose_file missing"
stop() {
    stamp "SIGTERM, shutting down"
    notify shutdown.progress "stopping"
    (cd "$WORK/app" && docker-compose -p app down -t 3 >/dev/null 2>&1)
    kill $DOCKERD 2>/dev/null
    wait $DOCKERD 2>/dev/null
    stamp "engine stopped"
    kill $GWCHECK $AGENT 2>/dev/null
    umount "$DATA" 2>/dev/null
    exit 0
}
trap stop TERM
(
    set -a
    [ -f "$HS/.decrypted-env" ] && . "$HS/.decrypted-env"
    set +a
    cd "$WORK/app" && exec docker-compose -p app up -d --no-build
) >"$LOG/compose.log" 2>&1 || fail "docker-compose up" "$LOG/compose.log"
cat "$LOG/compose.log"
stamp "booted"
notify boot.progress "booted"
while :; do
    sleep 3600 &
    wait $!
done
IEOF
chmod 755 "$R/init"

printf 'dstack sandbox firmware v1\n' >"$DIR/sandbox-firmware.bin"
(cd "$R" && { find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum;
              find . -type l | LC_ALL=C sort | while read -r l; do echo "link $l -> $(readlink "$l")"; done; }) \
    >"$DIR/rootfs.manifest"
cat >"$DIR/metadata.json" <<MEOF
{
  "kernel": "rootfs/init",
  "initrd": "rootfs.manifest",
  "bios": "sandbox-firmware.bin",
  "sandbox_rootfs": "rootfs",
  "init": "/init",
  "cmdline": "console=stdout dstack.sandbox=1 dstack.allow_simulated=1${GUEST_CMDLINE_EXTRA:+ $GUEST_CMDLINE_EXTRA}",
  "version": "0.5.0",
  "git_revision": "dstack-guest",
  "shared_ro": true,
  "is_dev": true
}
MEOF
(cd "$DIR" && sha256sum sandbox-firmware.bin rootfs/init rootfs.manifest metadata.json >sha256sum.txt)
sha256sum "$DIR/sha256sum.txt" | cut -d' ' -f1 >"$DIR/digest.txt"
echo "$DIR"
