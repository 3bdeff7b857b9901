#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# QEMU smoke boot: builds the minimal test guest (scripts/build-test-guest.sh: Debian kernel +
# busybox initramfs), asks the QEMU argv builder (lib/vmm, via test_qemu_argv --smoke-argv) for
# a no-TEE TCG command line with the host-API channel as a virtio-serial port backed by a Unix
# socket, listens on that socket with python3, boots, and asserts the guest's JSON boot report
# arrives within the timeout. Prints the boot-to-report time. Exit 77 only when qemu or a kernel
# is genuinely unavailable (scripts/install-deps.sh installs both).
set -euo pipefail

SRC=${DS_SRC:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${DS_BUILD:-${DS_BIN:+$(dirname "$DS_BIN")}}
TIMEOUT=${DS_QEMU_SMOKE_TIMEOUT:-120}

qemu=$(command -v qemu-system-x86_64 || true)
if [ -z "$qemu" ]; then
  echo "SKIP: qemu-system-x86_64 not installed (scripts/install-deps.sh installs qemu-system-x86)"
  exit 77
fi
if [ -z "${DS_TEST_KERNEL:-}" ] && ! ls /boot/vmlinuz-* >/dev/null 2>&1; then
  echo "SKIP: no guest kernel (/boot/vmlinuz-* absent; install-deps installs linux-image-cloud-amd64)"
  exit 77
fi
helper=$BUILD/tests/test_qemu_argv
[ -x "$helper" ] || { echo "FAIL: $helper not built"; exit 1; }

wd=$(mktemp -d /tmp/ds-qemu-smoke.XXXXXX)
qpid=""
cleanup() {
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  rm -rf "$wd"
}
trap cleanup EXIT
mkdir -p "$wd/guest" "$wd/shared"
echo '{"smoke":true}' >"$wd/shared/.sys-config.json"

rc=0
"$SRC/scripts/build-test-guest.sh" "$wd/guest" || rc=$?
if [ "$rc" -eq 2 ]; then
  echo "SKIP: no usable guest kernel"
  exit 77
elif [ "$rc" -ne 0 ]; then
  echo "FAIL: build-test-guest.sh failed ($rc); run scripts/install-deps.sh (busybox-static, cpio)"
  exit 1
fi

qver=$("$qemu" --version | head -n1 | sed -E 's/.*version ([0-9]+\.[0-9]+(\.[0-9]+)?).*/\1/')
cmdline="console=ttyS0 panic=1 net.ifnames=0 biosdevname=0 mce=off oops=panic pci=noearly"
mapfile -d '' args < <("$helper" --smoke-argv "$qemu" "$qver" "$wd/guest/vmlinuz" \
  "$wd/guest/initramfs.cpio.gz" "$wd" "$cmdline")
[ "${#args[@]}" -gt 10 ] || { echo "FAIL: builder produced no argv"; exit 1; }
[ "${args[0]}" = "$qemu" ] || { echo "FAIL: argv[0] is ${args[0]}"; exit 1; }
printf '%s\n' "${args[@]}" >"$wd/qemu.argv"

# The host side of the channel: listen, start QEMU (which connects as a client), read one JSON
# line, report the elapsed time from QEMU start to the line.
set +e
python3 - "$wd" "$TIMEOUT" "${args[@]}" <<'EOF'
import json, os, socket, subprocess, sys, time
wd, timeout, argv = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
path = os.path.join(wd, "host-api.sock")
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(path)
srv.listen(1)
t0 = time.monotonic()
with open(os.path.join(wd, "qemu.stdout"), "wb") as out, \
        open(os.path.join(wd, "qemu.stderr"), "wb") as err:
    q = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
open(os.path.join(wd, "qemu.pid"), "w").write(str(q.pid))
report = None
try:
    srv.settimeout(timeout)
    conn, _ = srv.accept()
    deadline = t0 + timeout
    buf = b""
    while report is None:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        conn.settimeout(left)
        chunk = conn.recv(4096)
        if not chunk:
            break
        buf += chunk
        while b"\n" in buf and report is None:
            line, buf = buf.split(b"\n", 1)
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if obj.get("event") == "boot.progress":
                report = obj
    elapsed = time.monotonic() - t0
except socket.timeout:
    elapsed = time.monotonic() - t0
finally:
    # Give the guest a moment to power off on its own, then stop QEMU.
    try:
        q.wait(timeout=10 if report else 0.1)
    except subprocess.TimeoutExpired:
        q.kill()
        q.wait()
if report is None:
    print(f"FAIL: no boot report within {timeout:.0f} s (qemu rc={q.returncode})")
    sys.exit(1)
if report.get("payload") != "smoke-ok":
    print(f"FAIL: unexpected report {report}")
    sys.exit(1)
print(f"boot report: {json.dumps(report)}")
print(f"boot-to-report: {elapsed:.2f} s (TCG; guest uptime at report {report.get('uptime')} s); "
      f"qemu exit {q.returncode}")
EOF
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
  echo "---- qemu argv"; cat "$wd/qemu.argv"
  echo "---- qemu stderr"; cat "$wd/qemu.stderr" 2>/dev/null || true
  echo "---- serial.log (tail)"; tail -n 40 "$wd/serial.log" 2>/dev/null || true
  exit 1
fi
grep -q "smoke: reporting on /dev/vport" "$wd/serial.log" || {
  echo "FAIL: serial log lacks the guest's own trace"; tail -n 20 "$wd/serial.log"; exit 1; }
echo "PASS: qemu smoke boot (QEMU $qver, -accel tcg, host-API over virtio-serial)"
