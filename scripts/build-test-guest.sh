#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Build the minimal guest used by the QEMU smoke boot (tests/integration/test_qemu_smoke.sh):
# a Debian kernel (from /boot, normally linux-image-cloud-amd64 installed by install-deps.sh,
# or $DS_TEST_KERNEL) and a busybox-static initramfs whose /init mounts /proc, /sys and /dev,
# loads the virtio modules, writes one JSON boot notification line to the host-API
# virtio-serial port (named org.dstack.host-api, see include/dstack/vmm_qemu.h) and powers off.
#
# With --prpc the guest instead speaks the VMM's real host API over that port (the byte stream
# reaches dstack-vmm's per-VM host-API server through QEMU's chardev connection): it sends
# `POST /api/Notify?json` (pRPC as upstream's ra-rpc client sends it; JSON body
# {"event":"boot.progress","payload":"booted"}, host-side.md §1.7), logs the HTTP status line it
# reads back to the serial console, then sends a guest.heartbeat Notify every 2 s until the host
# stops it (tests/integration/test_vmm_qemu_boot.sh). Before that it mounts the vhd host share
# (block device labelled DSTACKSHR) if there is one and sends Notify guest.share with the SHA-256
# of its .sys-config.json ("none" without such a disk).
#
# Usage: build-test-guest.sh [--prpc] OUT_DIR
# Writes OUT_DIR/vmlinuz and OUT_DIR/initramfs.cpio.gz. Exit 2 = no kernel found, 3 = missing
# build tool (busybox-static, cpio, gzip); messages on stderr.
set -euo pipefail

mode=line
if [ "${1:-}" = "--prpc" ]; then
  mode=prpc
  shift
fi
out=${1:?usage: build-test-guest.sh [--prpc] OUT_DIR}
mkdir -p "$out"

# ---- kernel -----------------------------------------------------------------------------------
kernel=${DS_TEST_KERNEL:-}
if [ -z "$kernel" ]; then
  # Newest readable /boot/vmlinuz-* (version sort).
  kernel=$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
fi
if [ -z "$kernel" ] || [ ! -r "$kernel" ]; then
  echo "build-test-guest: no kernel (install linux-image-cloud-amd64 or set DS_TEST_KERNEL)" >&2
  exit 2
fi
kver=${DS_TEST_KERNEL_VERSION:-$(basename "$kernel" | sed 's/^vmlinuz-//')}
moddir=/lib/modules/$kver

for tool in busybox cpio gzip; do
  command -v "$tool" >/dev/null || { echo "build-test-guest: $tool missing" >&2; exit 3; }
done
bb=$(command -v busybox)
# A dynamically linked busybox would need its libraries inside the initramfs.
ldd_out=$(LC_ALL=C ldd "$bb" 2>&1 || true) # ldd exits 1 on static binaries
if ! grep -q "not a dynamic" <<<"$ldd_out"; then
  echo "build-test-guest: $bb is not static (install busybox-static)" >&2
  exit 3
fi

# ---- initramfs tree -------------------------------------------------------------------------
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp "$bb" "$root/bin/busybox"

# Modules the guest needs when they are not built in: virtio PCI transport and virtio-console.
# Dependencies come from modules.dep (each line: module: deps, deps to be loaded first).
declare -a order=()
add_mod() {
  local m=$1 line deps d i
  for d in "${order[@]+"${order[@]}"}"; do [ "$d" = "$m" ] && return 0; done
  line=$(grep -E "^${m//./\\.}:" "$moddir/modules.dep" || true)
  [ -n "$line" ] || { echo "build-test-guest: $m not in modules.dep" >&2; exit 2; }
  deps=${line#*:}
  # modules.dep lists the deepest dependency last: load in reverse.
  local -a arr=($deps)
  for ((i = ${#arr[@]} - 1; i >= 0; i--)); do add_mod "${arr[$i]}"; done
  order+=("$m")
}
if [ -f "$moddir/modules.dep" ]; then
  # --prpc also mounts the vhd host share (virtio-blk, FAT32 labelled DSTACKSHR)
  wants="virtio_pci virtio_console"
  [ "$mode" = prpc ] && wants="$wants virtio_blk vfat nls_cp437 nls_ascii nls_utf8"
  for want in $wants; do
    if ! grep -qE "/${want}\.ko" "$moddir/modules.builtin" 2>/dev/null; then
      path=$(grep -oE "^[^:]*/${want}\.ko(\.[a-z]+)?:" "$moddir/modules.dep" | tr -d : || true)
      [ -n "$path" ] && add_mod "$path"
    fi
  done
fi
: >"$root/modules.order"
for m in "${order[@]+"${order[@]}"}"; do
  case $m in
    *.ko) cp "$moddir/$m" "$root/lib/modules/" ;;
    *.ko.xz) xz -dc "$moddir/$m" >"$root/lib/modules/$(basename "${m%.xz}")"; m=${m%.xz} ;;
    *.ko.zst) zstd -qdc "$moddir/$m" >"$root/lib/modules/$(basename "${m%.zst}")"; m=${m%.zst} ;;
    *) echo "build-test-guest: unsupported module $m" >&2; exit 3 ;;
  esac
  basename "$m" >>"$root/modules.order"
done

cat >"$root/init" <<'EOF'
#!/bin/busybox sh
# dstack-c smoke-test guest: report boot over the host-API virtio-serial port, then power off.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/lib/modules/$m" || echo "smoke: insmod $m failed"; done
port=""
i=0
while [ -z "$port" ] && [ $i -lt 100 ]; do
  for d in /sys/class/virtio-ports/*; do
    [ -r "$d/name" ] || continue
    if [ "$(cat "$d/name")" = "org.dstack.host-api" ] && [ -e "/dev/$(basename "$d")" ]; then
      port="/dev/$(basename "$d")"
    fi
  done
  [ -n "$port" ] || { sleep 0.1; i=$((i + 1)); }
done
up=$(cut -d' ' -f1 /proc/uptime)
if [ -n "$port" ] && [ "$(cat /report-mode)" = prpc ]; then
  # pRPC calls over the port, exactly as an HTTP client sends them on the host-API socket.
  cr=$(printf '\r')
  exec 3<>"$port"
  # notify EVENT PAYLOAD: one POST /api/Notify?json; prints the status line, drains the reply
  notify() {
    body="{\"event\":\"$1\",\"payload\":\"$2\"}"
    printf 'POST /api/Notify?json HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s' \
      "${#body}" "$body" >&3
    read -t 5 -r status <&3 || { echo "no answer within 5 s"; return 1; }
    len=0
    while read -t 5 -r h <&3; do
      h=${h%"$cr"}
      [ -z "$h" ] && break
      case $h in [Cc]ontent-[Ll]ength:*) len=${h#*:}; len=${len# } ;; esac
    done
    [ "$len" -gt 0 ] && read -t 5 -r -n "$len" reply <&3
    echo "${status%"$cr"}"
  }
  echo "guest: host-api Notify on $port at uptime $up"
  # vhd host share (host-side.md §1.7): report the hash of the .sys-config.json it carries
  share=$(findfs LABEL=DSTACKSHR 2>/dev/null || true)
  if [ -n "$share" ] && mkdir -p /share && mount -t vfat -o ro "$share" /share; then
    echo "guest: host share $share mounted: $(ls -A /share | tr '\n' ' ')"
    echo "guest: share report answered: $(notify guest.share "$(sha256sum /share/.sys-config.json | cut -c1-64)")"
  else
    echo "guest: share report answered: $(notify guest.share none)"
  fi
  echo "guest: host-api answered: $(notify boot.progress booted)"
  # Heartbeats (unknown events: the VMM logs them and keeps them in the VM's event ring) show
  # the channel keeps working, e.g. across a VMM restart (QEMU redials the socket).
  n=0
  while :; do
    sleep 2
    n=$((n + 1))
    echo "guest: heartbeat $n answered: $(notify guest.heartbeat "$n")"
  done
elif [ -n "$port" ]; then
  echo "smoke: reporting on $port at uptime $up"
  printf '{"event":"boot.progress","payload":"smoke-ok","uptime":%s,"kernel":"%s","port":"%s"}\n' \
    "$up" "$(uname -r)" "$port" >"$port"
  sleep 1
else
  echo "smoke: host-api port not found"
fi
sync
poweroff -f
EOF
chmod 755 "$root/init"
echo "$mode" >"$root/report-mode"

(cd "$root" && find . -print0 | cpio --null -o -H newc --quiet | gzip -9) >"$out/initramfs.cpio.gz"
cp "$kernel" "$out/vmlinuz"
echo "build-test-guest: kernel $kernel ($kver), modules: ${order[*]:-none}" >&2
