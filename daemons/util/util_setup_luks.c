/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The LUKS2 data volume of `dstack-util setup` (spec host-side.md §3.3 step 12), used where
 * device-mapper and cryptsetup exist: `cryptsetup luksFormat --type luks2 --offset 32768
 * --sector-size 512 --cipher aes-xts-plain64 --pbkdf pbkdf2 -d-` with passphrase
 * hex(disk_crypt_key) on stdin, ext4 on /dev/mapper/dstack_data_disk.
 * An existing disk's header area (first 16 MiB) is read into memory and validated the way
 * upstream does before it is trusted — both binary headers (magic, version 2, empty label and
 * subsystem, sha256 checksum recomputed, hdr_offset, size) and the JSON metadata (exactly one
 * pbkdf2/sha256 luks2 keyslot with a 64-byte aes-xts-plain64 key in [2*hdr_size, 16 MiB), no
 * tokens, one crypt segment at 16 MiB of dynamic size with aes-xts-plain64 and 512-byte
 * sectors, one pbkdf2/sha256 digest over keyslot 0 and segment 0, no flags or requirements) —
 * and the validated copy is what `luksOpen --header` uses, so the host cannot swap the header
 * between check and use (a host-made header with e.g. cipher_null or an extra keyslot is
 * refused).
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>

#include "dstack/base.h"
#include "dstack/crypto.h"
#include "log.h"
#include "util_setup.h"

#define LUKS_AREA_END       (16u * 1024 * 1024) /* data segment offset = header area size */
#define LUKS_BIN_HDR_SIZE   4096
#define LUKS_HDR_MIN        4096
#define LUKS_HDR_MAX        (16u * 1024 * 1024)
#define LUKS_MAPPER_NAME    "dstack_data_disk"
#define LUKS_MAPPER_PATH    "/dev/mapper/" LUKS_MAPPER_NAME
#define LUKS_CIPHER         "aes-xts-plain64"
#define LUKS_KEY_BYTES      64
#define LUKS_SECTOR         512
#define LUKS_MAPPER_WAIT_MS 5000

static const uint8_t luks_magic1[6] = {'L', 'U', 'K', 'S', 0xba, 0xbe};
static const uint8_t luks_magic2[6] = {'S', 'K', 'U', 'L', 0xba, 0xbe};

static uint64_t be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | p[i];
    }
    return v;
}

static bool all_zero(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc |= p[i];
    }
    return acc == 0;
}

bool setup_luks_has_header(const uint8_t *buf, size_t len)
{
    return len >= sizeof(luks_magic1) && memcmp(buf, luks_magic1, sizeof(luks_magic1)) == 0;
}

/* One binary header at buf (index 0 primary, 1 secondary); *json gets its JSON text. */
static int check_bin_header(const uint8_t *area, size_t area_len, unsigned index, uint64_t hdr_size,
                            const char **json, char *err, size_t n)
{
    const uint8_t *h = area + (size_t)index * hdr_size;
    if ((size_t)index * hdr_size + hdr_size > area_len) {
        snprintf(err, n, "LUKS2 header %u lies beyond the header area", index);
        return -DS_E_FORMAT;
    }
    if (memcmp(h, index == 0 ? luks_magic1 : luks_magic2, 6) != 0) {
        snprintf(err, n, "LUKS2 header %u: bad magic", index);
        return -DS_E_FORMAT;
    }
    if (h[6] != 0 || h[7] != 2) {
        snprintf(err, n, "LUKS2 header %u: version %u, want 2", index, (h[6] << 8) | h[7]);
        return -DS_E_FORMAT;
    }
    if (be64(h + 8) != hdr_size || be64(h + 256) != (uint64_t)index * hdr_size) {
        snprintf(err, n, "LUKS2 header %u: hdr_size / hdr_offset inconsistent", index);
        return -DS_E_FORMAT;
    }
    if (!all_zero(h + 24, 48) || !all_zero(h + 208, 48)) {
        snprintf(err, n, "LUKS2 header %u: label and subsystem must be empty", index);
        return -DS_E_FORMAT;
    }
    static const char alg[32] = "sha256";
    if (memcmp(h + 72, alg, sizeof(alg)) != 0) {
        snprintf(err, n, "LUKS2 header %u: checksum algorithm must be sha256", index);
        return -DS_E_FORMAT;
    }
    /* checksum: sha256 over the whole header (binary + JSON) with the csum field zeroed */
    uint8_t *copy = malloc(hdr_size);
    if (!copy) {
        return -ENOMEM;
    }
    memcpy(copy, h, hdr_size);
    memset(copy + 448, 0, 64);
    uint8_t d[DS_SHA256_LEN];
    ds_sha256(copy, hdr_size, d);
    free(copy);
    if (!ds_ct_equal(d, h + 448, sizeof(d)) || !all_zero(h + 448 + 32, 32)) {
        snprintf(err, n, "LUKS2 header %u: checksum mismatch", index);
        return -DS_E_FORMAT;
    }
    const char *j = (const char *)h + LUKS_BIN_HDR_SIZE;
    if (!memchr(j, '\0', hdr_size - LUKS_BIN_HDR_SIZE)) {
        snprintf(err, n, "LUKS2 header %u: JSON area not terminated", index);
        return -DS_E_FORMAT;
    }
    *json = j;
    return 0;
}

static bool jstr_is(json_t *o, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(o, key));
    return v && strcmp(v, want) == 0;
}

static bool jint_is(json_t *o, const char *key, json_int_t want)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) == want;
}

/* A decimal u64 in a JSON string (LUKS2 writes offsets/sizes as strings). */
static bool jnum_str(json_t *o, const char *key, uint64_t *out)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v || !v[0] || strlen(v) > 20) {
        return false;
    }
    uint64_t r = 0;
    for (const char *p = v; *p; p++) {
        if (*p < '0' || *p > '9' || r > (UINT64_MAX - 9) / 10) {
            return false;
        }
        r = r * 10 + (uint64_t)(*p - '0');
    }
    *out = r;
    return true;
}

/* Only the listed keys may appear in o. */
static bool only_keys(json_t *o, const char *const *keys, size_t n)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        bool ok = false;
        for (size_t i = 0; i < n && !ok; i++) {
            ok = strcmp(k, keys[i]) == 0;
        }
        if (!ok) {
            return false;
        }
    }
    (void)v;
    return true;
}

static bool str_list_is_0(json_t *a)
{
    const char *v = json_string_value(json_array_get(a, 0));
    return json_is_array(a) && json_array_size(a) == 1 && v && strcmp(v, "0") == 0;
}

static int check_json(const char *text, uint64_t hdr_size, char *err, size_t n)
{
    int r = -DS_E_FORMAT;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
    const char *why = NULL;
    json_t *ks, *k0, *area, *kdf, *af, *segs, *s0, *digs, *d0, *cfg;
    uint64_t a_off, a_size, s_off;
    static const char *const top[] = {"keyslots", "tokens", "segments", "digests", "config"};
    static const char *const cfg_keys[] = {"json_size", "keyslots_size"};
    static const char *const k_keys[] = {"type", "key_size", "af", "area", "kdf"};
    static const char *const a_keys[] = {"type", "offset", "size", "encryption", "key_size"};
    static const char *const s_keys[] = {"type",     "offset",     "size",
                                         "iv_tweak", "encryption", "sector_size"};
    if (!json_is_object(root) || !only_keys(root, top, DS_ARRAY_SIZE(top))) {
        why = "metadata is not an object of keyslots/tokens/segments/digests/config";
        goto out;
    }
    ks = json_object_get(root, "keyslots");
    k0 = json_object_get(ks, "0");
    if (!json_is_object(ks) || json_object_size(ks) != 1 || !json_is_object(k0) ||
        !only_keys(k0, k_keys, DS_ARRAY_SIZE(k_keys))) {
        why = "exactly one keyslot (0) without priority is allowed";
        goto out;
    }
    area = json_object_get(k0, "area");
    kdf = json_object_get(k0, "kdf");
    af = json_object_get(k0, "af");
    if (!jstr_is(k0, "type", "luks2") || !jint_is(k0, "key_size", LUKS_KEY_BYTES) ||
        !only_keys(area, a_keys, DS_ARRAY_SIZE(a_keys)) || !jstr_is(area, "type", "raw") ||
        !jstr_is(area, "encryption", LUKS_CIPHER) || !jint_is(area, "key_size", LUKS_KEY_BYTES) ||
        !jnum_str(area, "offset", &a_off) || !jnum_str(area, "size", &a_size) ||
        a_off < 2 * hdr_size || a_size > LUKS_AREA_END || a_off > LUKS_AREA_END - a_size) {
        why = "keyslot 0 must be luks2, 64-byte aes-xts-plain64, inside [2*hdr_size, 16 MiB)";
        goto out;
    }
    if (!jstr_is(kdf, "type", "pbkdf2") || !jstr_is(kdf, "hash", "sha256") ||
        !jstr_is(af, "type", "luks1") || !jstr_is(af, "hash", "sha256") ||
        !jint_is(af, "stripes", 4000)) {
        why = "keyslot 0 must use pbkdf2/sha256 and the luks1 AF (sha256, 4000 stripes)";
        goto out;
    }
    if (!json_is_object(json_object_get(root, "tokens")) ||
        json_object_size(json_object_get(root, "tokens")) != 0) {
        why = "tokens are not allowed";
        goto out;
    }
    segs = json_object_get(root, "segments");
    s0 = json_object_get(segs, "0");
    if (!json_is_object(segs) || json_object_size(segs) != 1 || !json_is_object(s0) ||
        !only_keys(s0, s_keys, DS_ARRAY_SIZE(s_keys)) || !jstr_is(s0, "type", "crypt") ||
        !jnum_str(s0, "offset", &s_off) || s_off != LUKS_AREA_END ||
        !jstr_is(s0, "size", "dynamic") || !jstr_is(s0, "iv_tweak", "0") ||
        !jstr_is(s0, "encryption", LUKS_CIPHER) || !jint_is(s0, "sector_size", LUKS_SECTOR)) {
        why = "exactly one crypt segment at 16 MiB, dynamic size, aes-xts-plain64, 512-byte "
              "sectors, no integrity or flags is allowed";
        goto out;
    }
    digs = json_object_get(root, "digests");
    d0 = json_object_get(digs, "0");
    if (!json_is_object(digs) || json_object_size(digs) != 1 || !json_is_object(d0) ||
        !jstr_is(d0, "type", "pbkdf2") || !jstr_is(d0, "hash", "sha256") ||
        !str_list_is_0(json_object_get(d0, "keyslots")) ||
        !str_list_is_0(json_object_get(d0, "segments"))) {
        why = "exactly one pbkdf2/sha256 digest over keyslot 0 and segment 0 is allowed";
        goto out;
    }
    cfg = json_object_get(root, "config");
    if (!json_is_object(cfg) || !only_keys(cfg, cfg_keys, DS_ARRAY_SIZE(cfg_keys))) {
        why = "config flags / requirements are not allowed";
        goto out;
    }
    r = 0;
out:
    if (why) {
        snprintf(err, n, "LUKS2 metadata refused: %s", why);
    }
    json_decref(root);
    return r;
}

int setup_luks_validate(const uint8_t *area, size_t len, char *err, size_t n)
{
    if (len < LUKS_BIN_HDR_SIZE || !setup_luks_has_header(area, len)) {
        snprintf(err, n, "no LUKS2 header");
        return -DS_E_FORMAT;
    }
    uint64_t hdr_size = be64(area + 8);
    if (hdr_size < LUKS_HDR_MIN || hdr_size > LUKS_HDR_MAX || (hdr_size & (hdr_size - 1)) != 0 ||
        2 * hdr_size > len) {
        snprintf(err, n, "LUKS2 header: hdr_size %llu out of range", (unsigned long long)hdr_size);
        return -DS_E_FORMAT;
    }
    const char *j0 = NULL, *j1 = NULL;
    int r = check_bin_header(area, len, 0, hdr_size, &j0, err, n);
    if (r == 0) {
        r = check_bin_header(area, len, 1, hdr_size, &j1, err, n);
    }
    if (r == 0 && strcmp(j0, j1) != 0) {
        snprintf(err, n, "LUKS2 headers: primary and secondary metadata differ");
        r = -DS_E_FORMAT;
    }
    if (r == 0) {
        r = check_json(j0, hdr_size, err, n);
    }
    return r;
}

/* Run argv with `in` on stdin; returns the exit status or a negative error. */
static int run_with_stdin(char *const argv[], const char *in, size_t in_len)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        return -errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(p[0]);
        close(p[1]);
        return -e;
    }
    if (pid == 0) {
        dup2(p[0], STDIN_FILENO);
        dup2(STDERR_FILENO, STDOUT_FILENO);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(p[0]);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    size_t off = 0;
    while (off < in_len) {
        ssize_t w = write(p[1], in + off, in_len - off);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            break;
        }
        off += (size_t)w;
    }
    close(p[1]);
    signal(SIGPIPE, old);
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -DS_E_IO;
}

static int read_area(const char *dev, uint8_t **out, size_t *out_len)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    uint8_t *buf = malloc(LUKS_AREA_END);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < LUKS_AREA_END) {
        ssize_t r = pread(fd, buf + got, LUKS_AREA_END - got, (off_t)got);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    *out = buf;
    *out_len = got;
    return 0;
}

int setup_luks_probe(const char *dev, bool *out_luks)
{
    uint8_t m[6];
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    ssize_t r = pread(fd, m, sizeof(m), 0);
    int e = errno;
    close(fd);
    if (r < 0) {
        return -e;
    }
    *out_luks = r == (ssize_t)sizeof(m) && setup_luks_has_header(m, sizeof(m));
    return 0;
}

int setup_luks_open(const char *dev, const char *work_dir, const uint8_t key[DS_KEY_SIZE],
                    bool format, char *err, size_t n)
{
    char hex[2 * DS_KEY_SIZE + 1];
    char hdr_path[4200];
    char dev_copy[4096];
    uint8_t *area = NULL;
    size_t area_len = 0;
    int r;
    ds_hex_encode(key, DS_KEY_SIZE, hex);
    snprintf(dev_copy, sizeof(dev_copy), "%s", dev);
    snprintf(hdr_path, sizeof(hdr_path), "%s/.luks-header", work_dir);
    if (format) {
        char *fmt[] = {"cryptsetup", "luksFormat",    "-q",     "--type",   "luks2",     "--offset",
                       "32768",      "--sector-size", "512",    "--cipher", LUKS_CIPHER, "--pbkdf",
                       "pbkdf2",     "-d-",           dev_copy, NULL};
        r = run_with_stdin(fmt, hex, strlen(hex));
        if (r != 0) {
            snprintf(err, n, "data disk: cryptsetup luksFormat %s failed (%s %d)", dev,
                     r < 0 ? "error" : "exit", r);
            r = r < 0 ? r : -DS_E_IO;
            goto out;
        }
    }
    if ((r = read_area(dev, &area, &area_len)) < 0) {
        snprintf(err, n, "data disk: reading the LUKS2 header of %s: %s", dev, ds_strerror(r));
        goto out;
    }
    char why[512] = "";
    if ((r = setup_luks_validate(area, area_len, why, sizeof(why))) < 0) {
        snprintf(err, n, "data disk %s: %s", dev, why);
        goto out;
    }
    /* luksOpen with the validated bytes (header + keyslot area), not the host's disk copy */
    if ((r = ds_write_file_atomic(hdr_path, area, area_len, 0600)) < 0) {
        snprintf(err, n, "data disk: writing %s: %s", hdr_path, ds_strerror(r));
        goto out;
    }
    char *open_argv[] = {"cryptsetup", "luksOpen", "--type", "luks2",          "--header",
                         hdr_path,     "-d-",      dev_copy, LUKS_MAPPER_NAME, NULL};
    r = run_with_stdin(open_argv, hex, strlen(hex));
    unlink(hdr_path);
    if (r != 0) {
        snprintf(err, n,
                 "data disk: cryptsetup luksOpen %s failed (%s %d): wrong disk key, or no "
                 "device-mapper",
                 dev, r < 0 ? "error" : "exit", r);
        r = r < 0 ? r : -DS_E_IO;
        goto out;
    }
    r = -ETIMEDOUT;
    for (int waited = 0; waited < LUKS_MAPPER_WAIT_MS; waited += 100) {
        if (access(LUKS_MAPPER_PATH, F_OK) == 0) {
            r = 0;
            break;
        }
        usleep(100 * 1000);
    }
    if (r < 0) {
        snprintf(err, n, "data disk: %s did not appear", LUKS_MAPPER_PATH);
    }
out:
    ds_wipe(hex, sizeof(hex));
    free(area);
    return r;
}

void setup_luks_close(void)
{
    char *argv[] = {"cryptsetup", "close", LUKS_MAPPER_NAME, NULL};
    if (run_with_stdin(argv, "", 0) != 0) {
        log_warnx("cryptsetup close %s failed", LUKS_MAPPER_NAME);
    }
}

const char *setup_luks_mapper_path(void)
{
    return LUKS_MAPPER_PATH;
}
