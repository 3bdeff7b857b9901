#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# Build examples/hello's two container images without any container engine or registry on the
# host (there is no internet to pull a base image from), as ONE `docker save`-format archive
# (docker-archive: manifest.json + per-image config JSON + one layer tar each) that
# `docker load` / `podman load` read inside the guest:
#   localhost/dstack-hello-web:latest      /hello-web (examples/hello/src/hello-web.c, cc -static
#                                          -lcrypto): HTTP :8080, GetKey over /var/run/dstack.sock,
#                                          answers "<GREETING> key-sha256=<..> backend=<..>"
#   localhost/dstack-hello-backend:latest  busybox-static httpd on :8081 answering "backend-ok"
# Layers are written with fixed mtimes/owners, so the same inputs give the same image ids.
# Usage: build-hello-images.sh OUT.tar
set -euo pipefail
OUT=${1:?usage: build-hello-images.sh OUT.tar}
SRC=$(cd "$(dirname "$0")/.." && pwd)
CC=${CC:-cc}
BUSYBOX=${BUSYBOX:-$(command -v busybox || true)}
[ -n "$BUSYBOX" ] || { echo "busybox (busybox-static) not found" >&2; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then echo "$BUSYBOX is not static" >&2; exit 1; fi

T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T/web/etc" "$T/web/tmp" "$T/backend/bin" "$T/backend/www" "$T/backend/etc"
# libcrypto.a pulls in glibc's NSS/dlopen warnings for functions hello-web never calls.
"$CC" -static -O2 -o "$T/web/hello-web" "$SRC/examples/hello/src/hello-web.c" -lcrypto 2>"$T/cc.log" ||
    { cat "$T/cc.log" >&2; exit 1; }
strip "$T/web/hello-web"
cp "$BUSYBOX" "$T/backend/bin/busybox"
for a in sh httpd; do ln -s busybox "$T/backend/bin/$a"; done
echo "backend-ok" >"$T/backend/www/index.html"

python3 - "$T" "$OUT" <<'PY'
import hashlib, io, json, os, sys, tarfile
T, OUT = sys.argv[1], sys.argv[2]

def layer(root):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                p = os.path.join(d, name)
                ti = tf.gettarinfo(p, os.path.relpath(p, root))
                ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
                if ti.isfile():
                    with open(p, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
    return buf.getvalue()

IMAGES = [
    ("localhost/dstack-hello-web:latest", "web",
     {"Cmd": ["/hello-web"], "ExposedPorts": {"8080/tcp": {}}, "Env": ["GREETING=hello"]}),
    ("localhost/dstack-hello-backend:latest", "backend",
     {"Cmd": ["/bin/httpd", "-f", "-p", "8081", "-h", "/www"], "ExposedPorts": {"8081/tcp": {}},
      "Env": ["PATH=/bin"]}),
]
manifest, files = [], {}
for tag, d, cfg in IMAGES:
    lt = layer(os.path.join(T, d))
    lid = hashlib.sha256(lt).hexdigest()
    conf = json.dumps({"architecture": "amd64", "os": "linux", "created": "1970-01-01T00:00:00Z",
                       "config": cfg, "rootfs": {"type": "layers", "diff_ids": ["sha256:" + lid]},
                       "history": [{"created": "1970-01-01T00:00:00Z",
                                    "created_by": "scripts/build-hello-images.sh"}]},
                      sort_keys=True).encode()
    cid = hashlib.sha256(conf).hexdigest()
    files[lid + "/layer.tar"] = lt
    files[cid + ".json"] = conf
    manifest.append({"Config": cid + ".json", "RepoTags": [tag], "Layers": [lid + "/layer.tar"]})
    print("%s sha256:%s" % (tag, cid))
files["manifest.json"] = json.dumps(manifest).encode()
with tarfile.open(OUT + ".tmp", "w", format=tarfile.PAX_FORMAT) as tf:
    for name in sorted(files):
        ti = tarfile.TarInfo(name)
        ti.size, ti.mtime, ti.mode = len(files[name]), 0, 0o644
        tf.addfile(ti, io.BytesIO(files[name]))
os.rename(OUT + ".tmp", OUT)
PY
