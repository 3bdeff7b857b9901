#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Install every dependency dstack-c needs on a fresh Debian 12 machine, idempotently:
# apt packages (compilers, libraries, test tools) and the npm packages the test suite uses
# (official dstack SDK, dcap-qvl as an independent verifier). Safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  clang llvm libclang-rt-14-dev
  libssl-dev openssl libsecp256k1-dev libevent-dev libjansson-dev libfyaml-dev libcbor-dev
  libsqlite3-dev sqlite3 libcurl4-openssl-dev libcmocka-dev libmsgpack-dev
  python3 python3-pycryptodome
  nodejs npm
  curl jq socat iproute2 util-linux e2fsprogs
  # qemu backend: qemu-img creates each VM's qcow2 data disk (hda.img) at first start
  qemu-utils
  # vhd host share (cvm.host_share_mode = "vhd"): shared.img FAT32 built with mkfs.fat + mcopy
  dosfstools mtools
  # gateway benchmark (bench/bench_gateway.sh): HAProxy as the reference proxy, wrk as load
  haproxy wrk
  # dstack-util setup's LUKS2 data volume (header format/validation tests; luksOpen needs dm)
  cryptsetup-bin
  # gateway WireGuard peers (`wg`) and a userspace WireGuard for tests without the kernel module
  wireguard-tools wireguard-go
  # QEMU smoke boot (tests/integration/test_qemu_smoke.sh): QEMU (~9 MB download), a Debian
  # cloud kernel for the guest, busybox-static + cpio for its initramfs
  # (scripts/build-test-guest.sh).
  qemu-system-x86 linux-image-cloud-amd64 busybox-static cpio
  # containers inside a sandbox CVM (scripts/build-guest-image.sh copies them into the guest
  # rootfs; tests/integration/test_sandbox_containers.sh): Debian's Docker engine (dockerd,
  # containerd, runc, docker-proxy), docker-compose v1 (python3) and iptables for its networks
  docker.io docker-compose iptables
)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# node/npm may come from outside Debian on some machines: skip them when already on PATH.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=()
  for p in "${missing[@]}"; do [ "$p" = nodejs ] || [ "$p" = npm ] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# npm packages pinned by package-lock.json; `npm ci` only when node_modules is stale.
if [ -f package.json ]; then
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi
echo "install-deps: ok"
