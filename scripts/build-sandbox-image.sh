#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Build a minimal guest image directory for dstack-vmm's `sandbox` backend (docs/sandbox.md):
# a busybox-static rootfs directory, an /init shell script that reports boot progress to the
# host API and serves HTTP on port 8080 until SIGTERM, and a tiny static helper
# /bin/dstack-notify (busybox has no Unix-socket HTTP client; compiled here from the C source
# below with `cc -static`, so the image needs no host libraries). Image files (host-side §1.6):
#   metadata.json        kernel = rootfs/init (the sandbox's "kernel" is its init),
#                        initrd = rootfs.manifest, bios = sandbox-firmware.bin,
#                        sandbox_rootfs = rootfs, init = /init, cmdline, version, shared_ro
#   sandbox-firmware.bin the file MRTD measures
#   rootfs.manifest      sha256sum of every file under rootfs/ (+ symlink targets), sorted
#   sha256sum.txt        sha256sum of sandbox-firmware.bin, rootfs/init, rootfs.manifest,
#                        metadata.json
#   digest.txt           sha256 of sha256sum.txt (os_image_hash)
# Usage: build-sandbox-image.sh DIR   (DIR is replaced)
set -euo pipefail

DIR=${1:?usage: build-sandbox-image.sh DIR}
BUSYBOX=${BUSYBOX:-$(command -v busybox || true)}
CC=${CC:-cc}
[ -n "$BUSYBOX" ] || { echo "busybox (busybox-static) not found" >&2; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    echo "$BUSYBOX is dynamically linked; install busybox-static" >&2
    exit 1
fi

rm -rf "$DIR"
mkdir -p "$DIR/rootfs"/{bin,sbin,usr/bin,usr/sbin,etc,www,data,dstack,proc,sys,dev,tmp,run,root}
R="$DIR/rootfs"
cp "$BUSYBOX" "$R/bin/busybox"
for app in $("$BUSYBOX" --list); do
    [ "$app" = busybox ] && continue
    [ -e "$R/bin/$app" ] || ln -s busybox "$R/bin/$app"
done

TMPC=$(mktemp -d)
trap 'rm -rf "$TMPC"' EXIT
cat > "$TMPC/notify.c" <<'CEOF'
/* dstack-notify URL EVENT PAYLOAD: POST {"event","payload"} to the host API's
 * /api/Notify over a Unix socket (URL "unix:/path"). Exit 0 on HTTP 200. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static size_t esc(const char *s, char *o, size_t cap)
{
    size_t k = 0;
    for (; *s && k + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') { o[k++] = '\\'; o[k++] = (char)c; }
        else if (c < 0x20) { k += (size_t)snprintf(o + k, cap - k, "\\u%04x", c); }
        else { o[k++] = (char)c; }
    }
    o[k] = 0;
    return k;
}
int main(int argc, char **argv)
{
    if (argc != 4 || strncmp(argv[1], "unix:", 5) != 0) {
        fprintf(stderr, "usage: dstack-notify unix:/path EVENT PAYLOAD\n");
        return 2;
    }
    static char ev[1024], pl[8192], body[10000], req[11000], resp[512];
    esc(argv[2], ev, sizeof(ev));
    esc(argv[3], pl, sizeof(pl));
    int bl = snprintf(body, sizeof(body), "{\"event\":\"%s\",\"payload\":\"%s\"}", ev, pl);
    int rl = snprintf(req, sizeof(req), "POST /api/Notify HTTP/1.1\r\nHost: localhost\r\n"
                      "Content-Type: application/json\r\nContent-Length: %d\r\n"
                      "Connection: close\r\n\r\n%s", bl, body);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    if (strlen(argv[1] + 5) >= sizeof(a.sun_path)) return 2;
    strcpy(a.sun_path, argv[1] + 5);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) { perror("connect"); return 1; }
    for (int off = 0; off < rl;) {
        ssize_t n = write(fd, req + off, (size_t)(rl - off));
        if (n <= 0) { perror("write"); return 1; }
        off += (int)n;
    }
    ssize_t n = read(fd, resp, sizeof(resp) - 1);
    close(fd);
    if (n <= 0) return 1;
    resp[n] = 0;
    return strncmp(resp, "HTTP/1.1 200", 12) == 0 || strncmp(resp, "HTTP/1.0 200", 12) == 0 ? 0 : 1;
}
CEOF
"$CC" -static -O2 -o "$R/bin/dstack-notify" "$TMPC/notify.c"
strip "$R/bin/dstack-notify" 2>/dev/null || true

cat > "$R/init" <<'IEOF'
#!/bin/sh
# dstack sandbox test image init: boot progress to the host API, HTTP on :8080, stay up
# until SIGTERM. Environment from dstack-vmm's sandbox backend (docs/sandbox.md).
notify() { /bin/dstack-notify "$DSTACK_HOST_API" "$1" "$2" || echo "init: notify $1 $2 failed"; }
echo "init: sandbox vm=$DSTACK_VM_ID ip=$DSTACK_GUEST_IP tee=$DSTACK_TEE args=$*"
notify boot.progress "starting"
if [ -n "$DSTACK_DATA_DISK" ] && mount -o loop "$DSTACK_DATA_DISK" /data; then
    echo "init: data disk mounted at /data"
fi
echo "sandbox $DSTACK_VM_ID" > /www/index.html
httpd -f -p 8080 -h /www &
HTTPD=$!
i=0
while [ $i -lt 200 ] && ! netstat -ltn 2>/dev/null | grep -q ':8080 '; do
    usleep 10000
    i=$((i + 1))
done
stop() {
    echo "init: SIGTERM, shutting down"
    notify shutdown.progress "stopping"
    kill $HTTPD 2>/dev/null
    umount /data 2>/dev/null
    exit 0
}
trap stop TERM
echo "init: booted"
notify boot.progress "booted"
while :; do
    sleep 3600 &
    wait $!
done
IEOF
chmod 755 "$R/init"

printf 'dstack sandbox firmware v1\n' > "$DIR/sandbox-firmware.bin"
(cd "$R" && { find . -type f | LC_ALL=C sort | xargs sha256sum;
              find . -type l | LC_ALL=C sort | while read -r l; do echo "link $l -> $(readlink "$l")"; done; }) \
    > "$DIR/rootfs.manifest"
cat > "$DIR/metadata.json" <<MEOF
{
  "kernel": "rootfs/init",
  "initrd": "rootfs.manifest",
  "bios": "sandbox-firmware.bin",
  "sandbox_rootfs": "rootfs",
  "init": "/init",
  "cmdline": "console=stdout dstack.sandbox=1",
  "version": "0.5.0",
  "git_revision": "sandbox-test",
  "shared_ro": true,
  "is_dev": true
}
MEOF
(cd "$DIR" && sha256sum sandbox-firmware.bin rootfs/init rootfs.manifest metadata.json > sha256sum.txt)
sha256sum "$DIR/sha256sum.txt" | cut -d' ' -f1 > "$DIR/digest.txt"
echo "$DIR"
