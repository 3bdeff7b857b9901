/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The key process (acme-client keyproc.c / relayd ca.c pattern, STYLE.md): forked at start
 * before any listener exists, it alone reads and writes the root key files of the state dir
 * (root-ca.key, root-k256.key, tmp-ca.key and their certificates, spec kms-ratls.md §3.1) and
 * answers the network process over a socketpair with a small framed request/response protocol
 * (ops in kms.h). It has no network: every other descriptor is closed, it moves into a new
 * network namespace (unshare(CLONE_NEWNET), through a user namespace when not root), sets
 * no_new_privs and non-dumpable, and a seccomp filter makes socket/connect/bind/listen/accept
 * fail with EPERM. Key material never leaves except derived keys, signatures and certificates,
 * and the roots themselves for KP_EXPORT (which the network process asks for only after
 * authorizing a GetKmsKey caller). Secrets are wiped after use and never logged.
 *
 * Frame: u32le length || payload. Request payload: u8 op, u8 field count, fields as
 * u32le length || bytes. Reply payload: u32le status (a negative int), u8 count, fields.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "dstack/crypto.h"
#include "kms.h"
#include "log.h"

#define KP_FD          3    /* the socketpair end in the child */
#define KP_KEY_FILE    8192 /* largest PEM key file */
#define KP_CERT_FILE   65536
#define KP_GEN_TRIES   16
#define KP_ORG         "Dstack"
#define KP_ROOT_CN     "Dstack KMS CA"
#define KP_TMP_CN      "Dstack Client Temp CA"
#define KP_APP_CA_CN   "Dstack App CA"
#define KP_FLAG_SERVER 0x1u
#define KP_FLAG_CLIENT 0x2u

/* ---- framing (both sides) -------------------------------------------------------------------- */

static int write_all(int fd, const void *p, size_t n)
{
    const uint8_t *b = p;
    while (n > 0) {
        ssize_t w = write(fd, b, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return w < 0 ? -errno : -EPIPE;
        }
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    uint8_t *b = p;
    while (n > 0) {
        ssize_t r = read(fd, b, n);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r <= 0) {
            return r < 0 ? -errno : -EPIPE;
        }
        b += r;
        n -= (size_t)r;
    }
    return 0;
}

/* Send head (op or status) + fields as one frame. */
static int send_frame(int fd, const uint8_t *head, size_t head_len, const struct kms_blob *f,
                      size_t count)
{
    struct ds_buf b;
    ds_buf_init(&b, KP_MESSAGE_MAX);
    int r = ds_buf_u32le(&b, 0);
    if (r == 0) {
        r = ds_buf_append(&b, head, head_len);
    }
    if (r == 0) {
        r = ds_buf_u8(&b, (uint8_t)count);
    }
    for (size_t i = 0; r == 0 && i < count; i++) {
        r = ds_buf_u32le(&b, (uint32_t)f[i].len);
        if (r == 0 && f[i].len) {
            r = ds_buf_append(&b, f[i].ptr, f[i].len);
        }
    }
    if (r == 0) {
        uint32_t len = (uint32_t)(b.len - 4);
        for (int i = 0; i < 4; i++) {
            b.data[i] = (uint8_t)(len >> (8 * i));
        }
        r = write_all(fd, b.data, b.len);
    }
    ds_wipe(b.data, b.len);
    ds_buf_done(&b);
    return r;
}

/* Read one frame into *out (malloc'd). */
static int recv_frame(int fd, uint8_t **out, size_t *out_len)
{
    uint8_t hdr[4];
    DS_TRY(read_all(fd, hdr, sizeof(hdr)));
    uint32_t len =
        (uint32_t)hdr[0] | (uint32_t)hdr[1] << 8 | (uint32_t)hdr[2] << 16 | (uint32_t)hdr[3] << 24;
    if (len == 0 || len > KP_MESSAGE_MAX) {
        return -DS_E_LIMIT;
    }
    uint8_t *p = malloc(len);
    if (!p) {
        return -ENOMEM;
    }
    int r = read_all(fd, p, len);
    if (r < 0) {
        free(p);
        return r;
    }
    *out = p;
    *out_len = len;
    return 0;
}

static int parse_fields(struct ds_reader *rd, struct kms_blob *f, size_t *count)
{
    uint8_t n;
    DS_TRY(ds_rd_u8(rd, &n));
    if (n > KP_FIELDS_MAX) {
        return -DS_E_LIMIT;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        const uint8_t *p;
        DS_TRY(ds_rd_u32le(rd, &len));
        DS_TRY(ds_rd_ptr(rd, len, &p));
        f[i].ptr = p;
        f[i].len = len;
    }
    if (ds_rd_left(rd) != 0) {
        return -DS_E_FORMAT;
    }
    *count = n;
    return 0;
}

void kms_kp_reply_done(struct kms_kp_reply *r)
{
    if (!r) {
        return;
    }
    if (r->data) {
        ds_wipe(r->data, r->data_len);
        free(r->data);
    }
    memset(r, 0, sizeof(*r));
}

int kms_keyproc_call(struct kms_keyproc *kp, enum kms_kp_op op, const struct kms_blob *args,
                     size_t nargs, struct kms_kp_reply *rep)
{
    uint8_t head = (uint8_t)op;
    memset(rep, 0, sizeof(*rep));
    if (nargs > KP_FIELDS_MAX) {
        return -EINVAL;
    }
    if (kp->fd < 0) {
        return -EPIPE;
    }
    int t = send_frame(kp->fd, &head, 1, args, nargs);
    if (t == -DS_E_LIMIT) {
        return t; /* nothing was written */
    }
    if (t == 0) {
        t = recv_frame(kp->fd, &rep->data, &rep->data_len);
    }
    if (t < 0) {
        /* the stream may be out of step now: never use it again */
        log_warnx("key process channel failed: %s", ds_strerror(t));
        close(kp->fd);
        kp->fd = -1;
        return t;
    }
    struct ds_reader rd;
    uint32_t status;
    ds_rd_init(&rd, rep->data, rep->data_len);
    int r = ds_rd_u32le(&rd, &status);
    if (r == 0) {
        r = parse_fields(&rd, rep->fields, &rep->count);
    }
    if (r < 0) {
        kms_kp_reply_done(rep);
        return -DS_E_PROTOCOL;
    }
    rep->status = (int)status;
    return 0;
}

/* ---- the key process ------------------------------------------------------------------------- */

struct kp {
    char dir[KMS_PATH_MAX];
    bool loaded;
    uint8_t root_ca[DS_KEY_SIZE];
    uint8_t root_k256[DS_KEY_SIZE];
    uint8_t tmp_ca[DS_KEY_SIZE];
    EVP_PKEY *ca_key;
    X509 *ca_cert;
    char *ca_pem;
    char *tmp_pem;
};

static int kp_path(const struct kp *s, const char *name, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s", s->dir, name);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

static void kp_unload(struct kp *s)
{
    ds_wipe(s->root_ca, sizeof(s->root_ca));
    ds_wipe(s->root_k256, sizeof(s->root_k256));
    ds_wipe(s->tmp_ca, sizeof(s->tmp_ca));
    EVP_PKEY_free(s->ca_key);
    X509_free(s->ca_cert);
    free(s->ca_pem);
    free(s->tmp_pem);
    s->ca_key = NULL;
    s->ca_cert = NULL;
    s->ca_pem = s->tmp_pem = NULL;
    s->loaded = false;
}

static int read_pem_scalar(const struct kp *s, const char *name, uint8_t out[DS_KEY_SIZE])
{
    char path[KMS_PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    DS_TRY(kp_path(s, name, path, sizeof(path)));
    DS_TRY(ds_read_file(path, KP_KEY_FILE, &data, &len));
    int r = ds_p256_scalar_from_pem((const char *)data, len, out);
    ds_wipe(data, len);
    free(data);
    return r;
}

static int read_text(const struct kp *s, const char *name, char **out)
{
    char path[KMS_PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    DS_TRY(kp_path(s, name, path, sizeof(path)));
    DS_TRY(ds_read_file(path, KP_CERT_FILE, &data, &len));
    char *t = realloc(data, len + 1);
    if (!t) {
        free(data);
        return -ENOMEM;
    }
    t[len] = '\0';
    *out = t;
    return 0;
}

static int kp_load(struct kp *s)
{
    char path[KMS_PATH_MAX];
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    kp_unload(s);
    int r = read_pem_scalar(s, "root-ca.key", s->root_ca);
    if (r == 0) {
        r = read_pem_scalar(s, "tmp-ca.key", s->tmp_ca);
    }
    if (r == 0) {
        r = kp_path(s, "root-k256.key", path, sizeof(path));
    }
    if (r == 0) {
        r = ds_read_file(path, DS_KEY_SIZE + 1, &raw, &raw_len);
    }
    if (r == 0 && (raw_len != DS_KEY_SIZE || !ds_k256_valid_private(raw))) {
        r = -DS_E_FORMAT;
    }
    if (r == 0) {
        memcpy(s->root_k256, raw, DS_KEY_SIZE);
        r = read_text(s, "root-ca.crt", &s->ca_pem);
    }
    if (r == 0) {
        r = read_text(s, "tmp-ca.crt", &s->tmp_pem);
    }
    if (r == 0) {
        r = ds_ratls_key_from_scalar(s->root_ca, &s->ca_key);
    }
    if (r == 0) {
        BIO *bio = BIO_new_mem_buf(s->ca_pem, -1);
        s->ca_cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (!s->ca_cert || X509_check_private_key(s->ca_cert, s->ca_key) != 1) {
            r = -DS_E_FORMAT;
        }
    }
    if (raw) {
        ds_wipe(raw, raw_len);
        free(raw);
    }
    if (r < 0) {
        kp_unload(s);
        return r;
    }
    s->loaded = true;
    return 0;
}

static bool kp_file_exists(const struct kp *s, const char *name)
{
    char path[KMS_PATH_MAX];
    struct stat st;
    return kp_path(s, name, path, sizeof(path)) == 0 && stat(path, &st) == 0;
}

static int kp_random_p256(uint8_t out[DS_KEY_SIZE])
{
    for (int i = 0; i < KP_GEN_TRIES; i++) {
        DS_TRY(ds_random(out, DS_KEY_SIZE));
        if (ds_p256_scalar_valid(out)) {
            return 0;
        }
    }
    return -DS_E_CRYPTO;
}

static int kp_random_k256(uint8_t out[DS_KEY_SIZE])
{
    for (int i = 0; i < KP_GEN_TRIES; i++) {
        DS_TRY(ds_random(out, DS_KEY_SIZE));
        if (ds_k256_valid_private(out)) {
            return 0;
        }
    }
    return -DS_E_CRYPTO;
}

/* Self-signed CA certificate PEM for scalar (§5.4). */
static int kp_ca_cert(const uint8_t scalar[DS_KEY_SIZE], const char *cn, int path_len, char **out)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    struct ds_ratls_cert_req req = {
        .org = KP_ORG,
        .subject = cn,
        .ca = true,
        .ca_path_len = path_len,
        .now = (int64_t)time(NULL),
    };
    int r = ds_ratls_key_from_scalar(scalar, &key);
    if (r == 0) {
        r = ds_ratls_cert_build(&req, key, key, NULL, &cert);
    }
    if (r == 0) {
        r = ds_ratls_cert_pem(cert, out);
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    return r;
}

static int kp_write_pem_key(const struct kp *s, const char *name, const uint8_t scalar[32])
{
    char path[KMS_PATH_MAX];
    char *pem = NULL;
    size_t len = 0;
    DS_TRY(kp_path(s, name, path, sizeof(path)));
    DS_TRY(ds_p256_pkcs8_pem(scalar, &pem, &len));
    int r = ds_write_file_atomic(path, pem, len, 0600);
    ds_keys_free_secret(pem);
    return r;
}

static int kp_write_text(const struct kp *s, const char *name, const char *text)
{
    char path[KMS_PATH_MAX];
    DS_TRY(kp_path(s, name, path, sizeof(path)));
    return ds_write_file_atomic(path, text, strlen(text), 0600);
}

/* Store a key set (fresh or imported): keys first, then certificates, then reload. */
static int kp_store(struct kp *s, const uint8_t ca[32], const uint8_t k256[32],
                    const uint8_t tmp[32])
{
    char path[KMS_PATH_MAX];
    char *ca_pem = NULL, *tmp_pem = NULL;
    int r = kp_ca_cert(ca, KP_ROOT_CN, 1, &ca_pem);
    if (r == 0) {
        r = kp_ca_cert(tmp, KP_TMP_CN, 0, &tmp_pem);
    }
    if (r == 0) {
        r = kp_write_pem_key(s, "tmp-ca.key", tmp);
    }
    if (r == 0) {
        r = kp_write_text(s, "tmp-ca.crt", tmp_pem);
    }
    if (r == 0) {
        r = kp_write_pem_key(s, "root-ca.key", ca);
    }
    if (r == 0) {
        r = kp_write_text(s, "root-ca.crt", ca_pem);
    }
    if (r == 0) {
        r = kp_path(s, "root-k256.key", path, sizeof(path));
    }
    if (r == 0) {
        r = ds_write_file_atomic(path, k256, DS_KEY_SIZE, 0600);
    }
    free(ca_pem);
    free(tmp_pem);
    return r < 0 ? r : kp_load(s);
}

static int op_generate(struct kp *s)
{
    uint8_t ca[32], k256[32], tmp[32];
    if (kp_file_exists(s, "root-ca.key") || kp_file_exists(s, "root-k256.key")) {
        return -EEXIST;
    }
    int r = kp_random_p256(ca);
    if (r == 0) {
        r = kp_random_p256(tmp);
    }
    if (r == 0) {
        r = kp_random_k256(k256);
    }
    if (r == 0) {
        r = kp_store(s, ca, k256, tmp);
    }
    ds_wipe(ca, sizeof(ca));
    ds_wipe(k256, sizeof(k256));
    ds_wipe(tmp, sizeof(tmp));
    return r;
}

static int op_import(struct kp *s, const struct kms_blob *f, size_t n)
{
    uint8_t ca[32], tmp[32];
    if (n != 3 || f[1].len != DS_KEY_SIZE || !ds_k256_valid_private(f[1].ptr)) {
        return -DS_E_FORMAT;
    }
    if (kp_file_exists(s, "root-ca.key") || kp_file_exists(s, "root-k256.key")) {
        return -EEXIST;
    }
    int r = ds_p256_scalar_from_pem(f[0].ptr, f[0].len, ca);
    if (r == 0) {
        r = ds_p256_scalar_from_pem(f[2].ptr, f[2].len, tmp);
    }
    if (r == 0) {
        r = kp_store(s, ca, f[1].ptr, tmp);
    }
    ds_wipe(ca, sizeof(ca));
    ds_wipe(tmp, sizeof(tmp));
    return r;
}

/* Reply buffers: up to KP_FIELDS_MAX fields, some owned (freed + wiped after sending). */
struct kp_out {
    struct kms_blob f[KP_FIELDS_MAX];
    void *owned[KP_FIELDS_MAX];
    size_t owned_len[KP_FIELDS_MAX];
    size_t count;
};

static void out_add(struct kp_out *o, const void *p, size_t len, bool owned)
{
    o->f[o->count].ptr = p;
    o->f[o->count].len = len;
    o->owned[o->count] = owned ? (void *)p : NULL;
    o->owned_len[o->count] = len;
    o->count++;
}

static void out_done(struct kp_out *o)
{
    for (size_t i = 0; i < o->count; i++) {
        if (o->owned[i]) {
            ds_wipe(o->owned[i], o->owned_len[i]);
            free(o->owned[i]);
        }
    }
    memset(o, 0, sizeof(*o));
}

static void *dup_mem(const void *p, size_t n)
{
    void *d = malloc(n ? n : 1);
    if (d && n) {
        memcpy(d, p, n);
    }
    return d;
}

static int op_public(struct kp *s, struct kp_out *o)
{
    uint8_t pub[DS_K256_PUB_SIZE];
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    DS_TRY(ds_k256_public(s->root_k256, pub));
    DS_TRY(ds_ratls_spki_der(s->ca_key, &spki, &spki_len));
    void *p = dup_mem(pub, sizeof(pub));
    if (!p) {
        free(spki);
        return -ENOMEM;
    }
    out_add(o, s->ca_pem, strlen(s->ca_pem), false);
    out_add(o, s->tmp_pem, strlen(s->tmp_pem), false);
    out_add(o, p, sizeof(pub), true);
    out_add(o, spki, spki_len, true);
    return 0;
}

static int op_app_keys(struct kp *s, const struct kms_blob *f, size_t n, struct kp_out *o)
{
    if (n != 2 || f[0].len != DS_APP_ID_SIZE || f[1].len > DS_INSTANCE_ID_MAX) {
        return -DS_E_FORMAT;
    }
    struct ds_app_keys *k = malloc(sizeof(*k));
    if (!k) {
        return -ENOMEM;
    }
    int r = ds_app_keys_from_roots(s->root_ca, s->root_k256, f[0].ptr, f[1].ptr, f[1].len, k);
    if (r < 0) {
        ds_wipe(k, sizeof(*k));
        free(k);
        return r;
    }
    out_add(o, k, sizeof(*k), true); /* the owner of the pieces below */
    out_add(o, k->disk_crypt_key, DS_KEY_SIZE, false);
    out_add(o, k->env_crypt_key, DS_KEY_SIZE, false);
    out_add(o, k->env_public_key, DS_X25519_PUB_SIZE, false);
    out_add(o, k->k256_key, DS_KEY_SIZE, false);
    out_add(o, k->k256_public_key, DS_K256_PUB_SIZE, false);
    out_add(o, k->k256_signature, DS_K256_SIG_SIZE, false);
    return 0;
}

static int op_env_pubkey(struct kp *s, const struct kms_blob *f, size_t n, struct kp_out *o)
{
    uint8_t env_priv[DS_KEY_SIZE];
    uint8_t *buf = NULL;
    if (n != 2 || f[0].len != DS_APP_ID_SIZE || f[1].len != 8) {
        return -DS_E_FORMAT;
    }
    uint64_t ts = 0;
    for (size_t i = 0; i < 8; i++) {
        ts = ts << 8 | ((const uint8_t *)f[1].ptr)[i];
    }
    struct ds_kdf_part parts[] = {{f[0].ptr, f[0].len}, {"env-encrypt-key", 15}};
    buf = malloc(DS_X25519_PUB_SIZE + 2 * DS_K256_SIG_SIZE);
    int r = buf ? 0 : -ENOMEM;
    if (r == 0) {
        r = ds_kdf_derive_dh_secret(s->root_ca, parts, DS_ARRAY_SIZE(parts), env_priv);
    }
    if (r == 0) {
        r = ds_x25519_public(env_priv, buf);
    }
    if (r == 0) {
        r = ds_env_pubkey_sign(s->root_k256, f[0].ptr, buf, false, 0, buf + DS_X25519_PUB_SIZE);
    }
    if (r == 0) {
        r = ds_env_pubkey_sign(s->root_k256, f[0].ptr, buf, true, ts,
                               buf + DS_X25519_PUB_SIZE + DS_K256_SIG_SIZE);
    }
    ds_wipe(env_priv, sizeof(env_priv));
    if (r < 0) {
        free(buf);
        return r;
    }
    out_add(o, buf, DS_X25519_PUB_SIZE + 2 * DS_K256_SIG_SIZE, true);
    out_add(o, buf, DS_X25519_PUB_SIZE, false);
    out_add(o, buf + DS_X25519_PUB_SIZE, DS_K256_SIG_SIZE, false);
    out_add(o, buf + DS_X25519_PUB_SIZE + DS_K256_SIG_SIZE, DS_K256_SIG_SIZE, false);
    return 0;
}

/* NUL-terminated copy of a field (strings on the wire carry no NUL). */
static char *field_str(const struct kms_blob *f)
{
    if (memchr(f->ptr, '\0', f->len)) {
        return NULL;
    }
    char *s = malloc(f->len + 1);
    if (s) {
        memcpy(s, f->ptr, f->len);
        s[f->len] = '\0';
    }
    return s;
}

static int op_sign_rpc(struct kp *s, const struct kms_blob *f, size_t n, struct kp_out *o)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    char *pem = NULL;
    if (n != 3) {
        return -DS_E_FORMAT;
    }
    char *domain = field_str(&f[0]);
    if (!domain) {
        return -DS_E_FORMAT;
    }
    const char *alt[] = {domain};
    struct ds_ratls_cert_req req = {
        .subject = domain,
        .alt_names = alt,
        .alt_name_count = 1,
        .usage = DS_RATLS_USAGE_KMS_RPC,
        .attestation = f[2].len ? f[2].ptr : NULL,
        .attestation_len = f[2].len,
        .now = (int64_t)time(NULL),
    };
    int r = ds_ratls_key_from_spki(f[1].ptr, f[1].len, &key);
    if (r == 0) {
        r = ds_ratls_cert_build(&req, key, s->ca_key, s->ca_cert, &cert);
    }
    if (r == 0) {
        r = ds_ratls_cert_pem(cert, &pem);
    }
    if (r == 0) {
        out_add(o, pem, strlen(pem), true);
    }
    X509_free(cert);
    EVP_PKEY_free(key);
    free(domain);
    return r;
}

/* The App CA for app_id (§3.5): derived key, fresh certificate signed by the root CA. */
static int app_ca(struct kp *s, const uint8_t app_id[DS_APP_ID_SIZE], EVP_PKEY **out_key,
                  X509 **out_cert)
{
    uint8_t scalar[DS_KEY_SIZE];
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    struct ds_ratls_cert_req req = {
        .org = KP_ORG,
        .subject = KP_APP_CA_CN,
        .ca = true,
        .ca_path_len = 0,
        .app_id = app_id,
        .app_id_len = DS_APP_ID_SIZE,
        .usage = DS_RATLS_USAGE_APP_CA,
        .now = (int64_t)time(NULL),
    };
    int r = ds_app_ca_scalar(s->root_ca, app_id, scalar);
    if (r == 0) {
        r = ds_ratls_key_from_scalar(scalar, &key);
    }
    ds_wipe(scalar, sizeof(scalar));
    if (r == 0) {
        r = ds_ratls_cert_build(&req, key, s->ca_key, s->ca_cert, &cert);
    }
    if (r < 0) {
        EVP_PKEY_free(key);
        return r;
    }
    *out_key = key;
    *out_cert = cert;
    return 0;
}

/* u8 present || u64be value */
static int opt_u64(const struct kms_blob *f, bool *has, int64_t *v)
{
    const uint8_t *p = f->ptr;
    if (f->len != 9 || p[0] > 1) {
        return -DS_E_FORMAT;
    }
    uint64_t x = 0;
    for (size_t i = 1; i < 9; i++) {
        x = x << 8 | p[i];
    }
    if (x > INT64_MAX) {
        return -DS_E_FORMAT;
    }
    *has = p[0] == 1;
    *v = (int64_t)x;
    return 0;
}

static int op_sign_app(struct kp *s, const struct kms_blob *f, size_t n, struct kp_out *o)
{
    EVP_PKEY *ca_key = NULL, *leaf_key = NULL;
    X509 *ca_cert = NULL, *leaf = NULL;
    char *org = NULL, *subject = NULL, *names = NULL, *leaf_pem = NULL, *ca_pem = NULL;
    const char *alt[DS_RATLS_MAX_ALT_NAMES];
    size_t alt_count = 0;
    struct ds_ratls_cert_req req = {.now = (int64_t)time(NULL)};
    if (n != 10 || f[0].len != DS_APP_ID_SIZE || f[4].len != 1) {
        return -DS_E_FORMAT;
    }
    int r = 0;
    org = f[1].len ? field_str(&f[1]) : NULL;
    subject = field_str(&f[2]);
    /* alt names: '\n'-separated (the network process refuses names with control chars) */
    names = field_str(&f[3]);
    if ((f[1].len && !org) || !subject || !names) {
        r = -DS_E_FORMAT;
        goto out;
    }
    for (char *save = NULL, *t = strtok_r(names, "\n", &save); t; t = strtok_r(NULL, "\n", &save)) {
        if (alt_count == DS_RATLS_MAX_ALT_NAMES) {
            r = -DS_E_LIMIT;
            goto out;
        }
        alt[alt_count++] = t;
    }
    uint8_t flags = ((const uint8_t *)f[4].ptr)[0];
    r = opt_u64(&f[5], &req.has_not_before, &req.not_before);
    if (r == 0) {
        r = opt_u64(&f[6], &req.has_not_after, &req.not_after);
    }
    if (r < 0) {
        goto out;
    }
    req.org = org;
    req.subject = subject;
    req.alt_names = alt;
    req.alt_name_count = alt_count;
    req.server_auth = flags & KP_FLAG_SERVER;
    req.client_auth = flags & KP_FLAG_CLIENT;
    req.app_id = f[0].ptr;
    req.app_id_len = DS_APP_ID_SIZE;
    req.usage = DS_RATLS_USAGE_APP_CUSTOM;
    req.attestation = f[8].len ? f[8].ptr : NULL;
    req.attestation_len = f[8].len;
    req.app_info = f[9].len ? f[9].ptr : NULL;
    req.app_info_len = f[9].len;
    r = ds_ratls_key_from_spki(f[7].ptr, f[7].len, &leaf_key);
    if (r == 0) {
        r = app_ca(s, f[0].ptr, &ca_key, &ca_cert);
    }
    if (r == 0) {
        r = ds_ratls_cert_build(&req, leaf_key, ca_key, ca_cert, &leaf);
    }
    if (r == 0) {
        r = ds_ratls_cert_pem(leaf, &leaf_pem);
    }
    if (r == 0) {
        r = ds_ratls_cert_pem(ca_cert, &ca_pem);
    }
    if (r == 0) {
        out_add(o, leaf_pem, strlen(leaf_pem), true);
        out_add(o, ca_pem, strlen(ca_pem), true);
        leaf_pem = ca_pem = NULL;
    }
out:
    free(leaf_pem);
    free(ca_pem);
    X509_free(leaf);
    X509_free(ca_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
    free(org);
    free(subject);
    free(names);
    return r;
}

static int op_export(struct kp *s, struct kp_out *o)
{
    char *ca = NULL, *tmp = NULL;
    size_t ca_len = 0, tmp_len = 0;
    int r = ds_p256_pkcs8_pem(s->root_ca, &ca, &ca_len);
    if (r == 0) {
        r = ds_p256_pkcs8_pem(s->tmp_ca, &tmp, &tmp_len);
    }
    void *k = r == 0 ? dup_mem(s->root_k256, DS_KEY_SIZE) : NULL;
    if (r == 0 && !k) {
        r = -ENOMEM;
    }
    if (r < 0) {
        ds_keys_free_secret(ca);
        ds_keys_free_secret(tmp);
        return r;
    }
    out_add(o, ca, ca_len, true);
    out_add(o, k, DS_KEY_SIZE, true);
    out_add(o, tmp, tmp_len, true);
    return 0;
}

static int op_tmp_ca(struct kp *s, struct kp_out *o)
{
    char *tmp = NULL;
    size_t len = 0;
    DS_TRY(ds_p256_pkcs8_pem(s->tmp_ca, &tmp, &len));
    out_add(o, tmp, len, true);
    out_add(o, s->tmp_pem, strlen(s->tmp_pem), false);
    return 0;
}

static int kp_dispatch(struct kp *s, uint8_t op, const struct kms_blob *f, size_t n,
                       struct kp_out *o)
{
    uint8_t has;
    switch (op) {
    case KP_STATUS:
        has = s->loaded ? 1 : 0;
        out_add(o, dup_mem(&has, 1), 1, true);
        return o->f[0].ptr ? 0 : -ENOMEM;
    case KP_GENERATE:
        return op_generate(s);
    case KP_IMPORT:
        return op_import(s, f, n);
    default:
        break;
    }
    if (!s->loaded) {
        return -DS_E_STATE;
    }
    switch (op) {
    case KP_PUBLIC:
        return op_public(s, o);
    case KP_APP_KEYS:
        return op_app_keys(s, f, n, o);
    case KP_ENV_PUBKEY:
        return op_env_pubkey(s, f, n, o);
    case KP_SIGN_RPC:
        return op_sign_rpc(s, f, n, o);
    case KP_SIGN_APP:
        return op_sign_app(s, f, n, o);
    case KP_EXPORT:
        return op_export(s, o);
    case KP_TMP_CA:
        return op_tmp_ca(s, o);
    default:
        return -DS_E_UNSUPPORTED;
    }
}

/* The key process never needs a socket of its own: refuse creating or using one. */
static int kp_seccomp(void)
{
#if defined(__x86_64__)
#define KP_AUDIT_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define KP_AUDIT_ARCH AUDIT_ARCH_AARCH64
#endif
#ifdef KP_AUDIT_ARCH
#define DENY(nr)                                                                                   \
    BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (nr), 0, 1),                                               \
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (EPERM & SECCOMP_RET_DATA))
    struct sock_filter filter[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, KP_AUDIT_ARCH, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        DENY(__NR_socket),
        DENY(__NR_connect),
        DENY(__NR_bind),
        DENY(__NR_listen),
        DENY(__NR_accept),
        DENY(__NR_accept4),
        DENY(__NR_socketpair),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
#undef DENY
    struct sock_fprog prog = {.len = (unsigned short)DS_ARRAY_SIZE(filter), .filter = filter};
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
        return -errno;
    }
    return 0;
#else
    return -ENOSYS;
#endif
}

static void kp_sandbox(void)
{
    if (unshare(CLONE_NEWNET) != 0 && unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
        log_warn("key process: cannot enter a new network namespace (seccomp still applies)");
    }
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        log_warn("key process: no_new_privs");
    }
    (void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    int r = kp_seccomp();
    if (r < 0) {
        log_warnx("key process: seccomp filter not installed: %s", ds_strerror(r));
    }
}

static void kp_close_fds(int keep)
{
    if (keep != KP_FD) {
        if (dup2(keep, KP_FD) < 0) {
            _exit(1);
        }
        close(keep);
    }
    if (syscall(SYS_close_range, KP_FD + 1, ~0U, 0) != 0) {
        for (int fd = KP_FD + 1; fd < 4096; fd++) {
            close(fd);
        }
    }
}

static void __attribute__((noreturn)) kp_main(const char *dir)
{
    struct kp s = {0};
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_DFL);
    snprintf(s.dir, sizeof(s.dir), "%s", dir);
    kp_sandbox();
    if (kms_keys_exist(s.dir)) {
        int r = kp_load(&s);
        if (r < 0) {
            log_warnx("key process: cannot load the keys in \"%s\": %s", s.dir, ds_strerror(r));
        }
    }
    for (;;) {
        uint8_t *msg = NULL;
        size_t len = 0;
        int r = recv_frame(KP_FD, &msg, &len);
        if (r < 0) {
            break; /* the network process is gone */
        }
        struct ds_reader rd;
        struct kms_blob f[KP_FIELDS_MAX];
        struct kp_out o = {0};
        size_t n = 0;
        uint8_t op = 0;
        ds_rd_init(&rd, msg, len);
        r = ds_rd_u8(&rd, &op);
        if (r == 0) {
            r = parse_fields(&rd, f, &n);
        }
        if (r == 0) {
            r = kp_dispatch(&s, op, f, n, &o);
        }
        if (r < 0) {
            out_done(&o);
        }
        uint32_t st = (uint32_t)r;
        uint8_t head[4] = {(uint8_t)st, (uint8_t)(st >> 8), (uint8_t)(st >> 16),
                           (uint8_t)(st >> 24)};
        /* the first field of app keys / env pubkey replies is the owner blob: skip it */
        size_t skip = (r == 0 && (op == KP_APP_KEYS || op == KP_ENV_PUBKEY)) ? 1 : 0;
        int w = send_frame(KP_FD, head, sizeof(head), o.f + skip, o.count - skip);
        out_done(&o);
        ds_wipe(msg, len);
        free(msg);
        if (w < 0) {
            break;
        }
    }
    kp_unload(&s);
    _exit(0);
}

int kms_keyproc_start(const char *cert_dir, struct kms_keyproc *out)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        return -errno;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(sv[0]);
        close(sv[1]);
        return e;
    }
    if (pid == 0) {
        close(sv[0]);
        kp_close_fds(sv[1]);
        kp_main(cert_dir);
    }
    close(sv[1]);
    out->fd = sv[0];
    out->pid = pid;
    return 0;
}

void kms_keyproc_stop(struct kms_keyproc *kp)
{
    if (kp->fd >= 0) {
        close(kp->fd); /* the key process exits on EOF */
        kp->fd = -1;
    }
    if (kp->pid > 0) {
        int st;
        while (waitpid(kp->pid, &st, 0) < 0 && errno == EINTR) {
        }
        kp->pid = 0;
    }
}
