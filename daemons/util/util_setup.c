/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-util setup`: the measured boot of a CVM's app (spec host-side.md §3.3, attestation.md
 * §4.5, kms-ratls.md §3.7-3.8 and §7), in upstream's order:
 *   load the host share (size-capped, O_NOFOLLOW copies into <work>/.host-shared) -> validate
 *   app-compose.json, compose hash, app id, instance id -> RTMR3 events system-preparing,
 *   app-id, compose-hash, init-script-hash*, instance-id, boot-mr-done -> app keys from the
 *   key provider (kms: each sys-config kms_url until one answers; none: random seed, loudly)
 *   -> MR_CONFIG_ID binding and key_provider_id pin -> events os-image-hash (KMS),
 *   key-provider, storage-fs -> encrypted data volume -> decrypted env (allowed_envs only)
 *   -> .appkeys.json (0600) and the files the guest agent reads -> instance.info to the host
 *   -> event system-ready.
 * Progress and errors go to the VMM host API (Notify) when --host-api is given. On failure
 * boot.error carries the reason, the command exits 1 and no key material is written (the
 * keys file and the decrypted env are written only once everything else succeeded).
 * Starting the guest agent and the container runtime is the caller's job (docs/guest-boot.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/pem.h>

#include "dstack/attest.h"
#include "dstack/compose.h"
#include "dstack/crypto.h"
#include "dstack/eventlog.h"
#include "log.h"
#include "util.h"
#include "util_setup.h"

#define DEFAULT_HOST_SHARED "/dstack/.host-shared"
#define DEFAULT_WORK_DIR    "/dstack"
#define SYS_CONFIG_MAX      (32 * 1024)
#define INSTANCE_INFO_MAX   (10 * 1024)
#define USER_CONFIG_MAX     (50u * 1024 * 1024)
#define KMS_URLS_MAX        16
#define MR_CONFIG_V3_PREFIX "dstack-mr-config-v3:"

/* One host-share file: name, cap, required. */
struct share_file {
    const char *name;
    size_t max;
    bool required;
    uint8_t *data;
    size_t len;
    bool present;
};

enum { SF_COMPOSE, SF_SYSCONFIG, SF_INSTANCE, SF_ENV, SF_USER, SF_COUNT };

struct setup {
    /* options */
    const char *host_shared, *work_dir, *tee_spec, *host_api, *data_disk, *mount_point;
    const char *pccs_url, *disk_encryption;
    enum setup_disk_backend backend;
    bool allow_simulated, insecure_plaintext, no_data_disk;
    /* state */
    char share_dir[4096];
    struct share_file files[SF_COUNT];
    struct ds_app_compose *compose;
    json_t *sys_config;
    uint8_t compose_hash[DS_COMPOSE_HASH_SIZE];
    uint8_t app_id[DS_APP_ID_SIZE];
    uint8_t seed[DS_INSTANCE_ID_SIZE];
    uint8_t instance_id[DS_INSTANCE_ID_SIZE];
    size_t instance_id_len;
    enum ds_key_provider kp;
    uint32_t event_version;
    struct ds_tee *tee;
    struct ds_appkeys keys;
    uint8_t *os_image_hash;
    size_t os_image_hash_len;
    char *decrypted_env, *decrypted_env_json;
    size_t decrypted_env_len, decrypted_env_json_len;
    struct setup_disk_state disk;
    char err[SETUP_ERR_MAX];
};

void util_setup_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-util setup [--host-shared DIR] [--work-dir DIR] [--tee SPEC]\n"
            "                         [--host-api SOCKET] [--data-disk PATH] [--mount-point DIR]\n"
            "                         [--pccs-url URL] [--insecure-allow-simulated]\n"
            "                         [--insecure-plaintext-data] [--no-data-disk]\n"
            "\n"
            "Measure and set up this CVM's app (spec host-side.md §3.3): validate the app\n"
            "compose, extend RTMR3 with the boot events, obtain the app keys from the key\n"
            "provider, mount the encrypted data volume, decrypt the env and write the files\n"
            "the guest agent reads. Progress and errors are reported to the host API.\n"
            "  --host-shared DIR  host share (default " DEFAULT_HOST_SHARED ")\n"
            "  --work-dir DIR     default " DEFAULT_WORK_DIR "; files go to DIR/.host-shared\n"
            "  --tee SPEC         tdx, sim:<socket>, embedded (default: DSTACK_TEE, autodetect)\n"
            "  --host-api SOCKET  the VMM host API Unix socket (Notify)\n"
            "  --data-disk PATH   block device or image file of the data volume (required\n"
            "                     unless --no-data-disk)\n"
            "  --mount-point DIR  where the data volume appears (default WORK/persistent)\n"
            "  --pccs-url URL     collateral for the KMS's own attestation (default: sys-config\n"
            "                     pccs_url, else " UTIL_PCCS_DEFAULT_URL ")\n"
            "  --insecure-allow-simulated  accept a KMS with simulated attestation (dev only)\n"
            "  --insecure-plaintext-data   store the data volume UNENCRYPTED (dev only)\n"
            "  --no-data-disk     no persistent volume at all (nothing is stored)\n"
            "  --disk-encryption auto|luks|fscrypt  LUKS2 (device-mapper + cryptsetup) or ext4\n"
            "                     native encryption; auto = LUKS2 where device-mapper exists\n");
}

static void progress(struct setup *s, const char *msg)
{
    log_info("boot progress: %s", msg);
    if (s->host_api && setup_notify(s->host_api, "boot.progress", msg) < 0) {
        log_warnx("host API %s: notify boot.progress failed", s->host_api);
    }
}

static void progress_cb(void *ctx, const char *msg)
{
    progress(ctx, msg);
}

static int fail(struct setup *s, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct setup *s, int r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
    return r < 0 ? r : -DS_E_STATE;
}

/* ---- load ---------------------------------------------------------------------------------- */

/* Read dir/name without following symlinks, regular files only, at most max bytes. */
static int read_nofollow(const char *dir, const char *name, size_t max, uint8_t **out,
                         size_t *out_len)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct stat st;
    int r = 0;
    uint8_t *buf = NULL;
    if (fstat(fd, &st) < 0) {
        r = -errno;
        goto out;
    }
    if (!S_ISREG(st.st_mode)) {
        r = -DS_E_FORMAT;
        goto out;
    }
    if ((uint64_t)st.st_size > max) {
        r = -DS_E_LIMIT;
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            r = n < 0 ? -errno : -DS_E_TRUNCATED;
            goto out;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    *out = buf;
    *out_len = got;
    buf = NULL;
out:
    free(buf);
    close(fd);
    return r;
}

static int load_share(struct setup *s)
{
    const struct share_file defs[SF_COUNT] = {
        [SF_COMPOSE] = {"app-compose.json", DS_COMPOSE_FILE_MAX, true, NULL, 0, false},
        [SF_SYSCONFIG] = {".sys-config.json", SYS_CONFIG_MAX, true, NULL, 0, false},
        [SF_INSTANCE] = {".instance_info", INSTANCE_INFO_MAX, false, NULL, 0, false},
        [SF_ENV] = {".encrypted-env", DS_ENV_BLOB_MAX, false, NULL, 0, false},
        [SF_USER] = {".user-config", USER_CONFIG_MAX, false, NULL, 0, false},
    };
    snprintf(s->share_dir, sizeof(s->share_dir), "%s/.host-shared", s->work_dir);
    if (mkdir(s->work_dir, 0755) < 0 && errno != EEXIST) {
        return fail(s, -errno, "work dir %s: %s", s->work_dir, strerror(errno));
    }
    if (mkdir(s->share_dir, 0700) < 0 && errno != EEXIST) {
        return fail(s, -errno, "%s: %s", s->share_dir, strerror(errno));
    }
    for (int i = 0; i < SF_COUNT; i++) {
        struct share_file *f = &s->files[i];
        *f = defs[i];
        char dst[4200];
        snprintf(dst, sizeof(dst), "%s/%s", s->share_dir, f->name);
        int r = read_nofollow(s->host_shared, f->name, f->max, &f->data, &f->len);
        if (r == -ENOENT && !f->required) {
            unlink(dst); /* no stale copy from an earlier run */
            continue;
        }
        if (r < 0) {
            return fail(s, r, "host share: %s/%s: %s%s", s->host_shared, f->name, ds_strerror(r),
                        r == -DS_E_LIMIT ? " (file too large)" : "");
        }
        f->present = true;
        r = ds_write_file_atomic(dst, f->data, f->len, i == SF_ENV ? 0600 : 0644);
        if (r < 0) {
            return fail(s, r, "copying %s: %s", dst, ds_strerror(r));
        }
    }
    return 0;
}

static int parse_inputs(struct setup *s)
{
    struct ds_compose_error cerr = {{0}, {0}};
    struct share_file *cf = &s->files[SF_COMPOSE];
    int r = ds_app_compose_parse(cf->data, cf->len, &s->compose, &cerr);
    if (r < 0) {
        return fail(s, r, "app-compose.json: %s%s%s", cerr.field, cerr.field[0] ? ": " : "",
                    cerr.msg[0] ? cerr.msg : ds_strerror(r));
    }
    json_error_t jerr;
    struct share_file *sf = &s->files[SF_SYSCONFIG];
    s->sys_config = json_loadb((const char *)sf->data, sf->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(s->sys_config)) {
        return fail(s, -DS_E_FORMAT, ".sys-config.json: not a JSON object (%s)", jerr.text);
    }
    s->kp = ds_app_compose_key_provider(s->compose);
    if (s->compose->secure_time) {
        log_info("secure_time: this dstack-util does not wait for NTS time sync");
    }
    s->event_version = s->compose->event_log_version ? s->compose->event_log_version : 1;
    if (s->compose->has_requirements) {
        /* os_version / platforms / launch token checks are not implemented: fail closed. */
        return fail(s, -DS_E_UNSUPPORTED,
                    "app-compose.json: requirements are not supported by this dstack-util");
    }
    if (s->compose->storage_fs && strcmp(s->compose->storage_fs, SETUP_STORAGE_FS) != 0) {
        return fail(
            s, -DS_E_UNSUPPORTED,
            "app-compose.json: storage_fs '%s' is not supported here (only " SETUP_STORAGE_FS ")",
            s->compose->storage_fs);
    }
    return 0;
}

/* Hex field of .instance_info into out (exactly n bytes); absent or "" leaves *has false. */
static int instance_hex(struct setup *s, json_t *info, const char *key, uint8_t *out, size_t n,
                        bool *has)
{
    *has = false;
    json_t *v = json_object_get(info, key);
    if (!v || json_is_null(v) || (json_is_string(v) && json_string_length(v) == 0)) {
        return 0;
    }
    const char *hex = json_string_value(v);
    if (!hex || json_string_length(v) != 2 * n || ds_hex_decode(hex, 2 * n, out, n) < 0) {
        return fail(s, -DS_E_FORMAT, ".instance_info: %s must be %zu hex bytes", key, n);
    }
    *has = true;
    return 0;
}

/* compose hash, app id, seed and instance id (§2.2). */
static int compute_ids(struct setup *s)
{
    struct share_file *cf = &s->files[SF_COMPOSE];
    ds_compose_hash(cf->data, cf->len, s->compose_hash);
    ds_compose_app_id(s->compose_hash, s->app_id);
    bool has_seed = false, has_app = false;
    json_t *info = NULL;
    struct share_file *inf = &s->files[SF_INSTANCE];
    if (inf->present && inf->len > 0) {
        info = json_loadb((const char *)inf->data, inf->len, JSON_REJECT_DUPLICATES, NULL);
        if (!json_is_object(info)) {
            json_decref(info);
            return fail(s, -DS_E_FORMAT, ".instance_info: not a JSON object");
        }
        uint8_t app[DS_APP_ID_SIZE];
        int r = instance_hex(s, info, "app_id", app, sizeof(app), &has_app);
        if (r == 0) {
            r = instance_hex(s, info, "instance_id_seed", s->seed, sizeof(s->seed), &has_seed);
        }
        json_decref(info);
        if (r < 0) {
            return r;
        }
        if (has_app) {
            memcpy(s->app_id, app, sizeof(app));
        }
    }
    if (!has_seed || s->kp == DS_KP_NONE) {
        int r = ds_random(s->seed, sizeof(s->seed));
        if (r < 0) {
            return fail(s, r, "random instance id seed: %s", ds_strerror(r));
        }
        log_info("new instance id seed (%s)",
                 has_seed ? "key provider none: a fresh instance every boot" : "first boot");
    }
    if (s->compose->no_instance_id) {
        s->instance_id_len = 0;
    } else {
        ds_compose_instance_id(s->seed, s->app_id, NULL, 0, s->instance_id);
        s->instance_id_len = DS_INSTANCE_ID_SIZE;
    }
    return 0;
}

/* ---- RTMR3 --------------------------------------------------------------------------------- */

static int emit(struct setup *s, const char *name, const void *payload, size_t len)
{
    uint8_t d[DS_SHA384_LEN];
    int r = ds_runtime_event_digest_sha384(s->event_version, name, payload, len, d);
    if (r == 0) {
        r = ds_tee_extend_rtmr(s->tee, 3, d, name, payload, len);
    }
    if (r < 0) {
        return fail(s, r, "extending RTMR3 with event '%s': %s", name, ds_strerror(r));
    }
    log_debug("RTMR3 event %s (%zu bytes)", name, len);
    return 0;
}

static int measure_app(struct setup *s)
{
    int r = emit(s, DS_EVENT_SYSTEM_PREPARING, "", 0);
    if (r == 0) {
        r = emit(s, DS_EVENT_APP_ID, s->app_id, sizeof(s->app_id));
    }
    if (r == 0) {
        r = emit(s, DS_EVENT_COMPOSE_HASH, s->compose_hash, sizeof(s->compose_hash));
    }
    for (size_t i = 0; r == 0 && i < s->compose->init_script_count; i++) {
        uint8_t h[DS_SHA256_LEN];
        const char *sc = s->compose->init_scripts[i];
        ds_sha256(sc, strlen(sc), h);
        r = emit(s, DS_EVENT_INIT_SCRIPT_HASH, h, sizeof(h));
    }
    if (r == 0) {
        r = emit(s, DS_EVENT_INSTANCE_ID, s->instance_id, s->instance_id_len);
    }
    if (r == 0) {
        r = emit(s, DS_EVENT_BOOT_MR_DONE, "", 0);
    }
    return r;
}

/* ---- keys ---------------------------------------------------------------------------------- */

static const char *sys_str(const struct setup *s, const char *key)
{
    return json_string_value(json_object_get(s->sys_config, key));
}

static int keys_from_kms(struct setup *s)
{
    json_t *urls = json_object_get(s->sys_config, "kms_urls");
    if (!json_is_array(urls) || json_array_size(urls) == 0) {
        return fail(s, -DS_E_NOT_FOUND,
                    "key provider kms: .sys-config.json has no kms_urls to ask for keys");
    }
    const char *pccs = s->pccs_url ? s->pccs_url : sys_str(s, "pccs_url");
    const char *vm_config = sys_str(s, "vm_config");
    struct ds_verifier *verifier = NULL;
    char err[UTIL_KMS_ERR_MAX] = "";
    int r = util_make_verifier(pccs, s->allow_simulated, &verifier, err, sizeof(err));
    if (r < 0) {
        return fail(s, r, "KMS verifier: %s", err);
    }
    size_t n = json_array_size(urls);
    if (n > KMS_URLS_MAX) {
        n = KMS_URLS_MAX;
    }
    s->err[0] = '\0';
    r = -DS_E_NOT_FOUND;
    for (size_t i = 0; i < n; i++) {
        const char *url = json_string_value(json_array_get(urls, i));
        struct util_kms_client c;
        if (!url || util_kms_client_init(&c, url) < 0) {
            log_warnx("kms_urls[%zu]: not an https URL, skipped", i);
            continue;
        }
        c.verifier = verifier;
        c.pccs_url = pccs;
        log_info("requesting app keys from %s", c.base);
        r = util_kms_fetch_app_keys(&c, s->tee, vm_config, &s->keys, &s->os_image_hash,
                                    &s->os_image_hash_len, err, sizeof(err));
        if (r == 0) {
            break;
        }
        log_warnx("KMS %s: %s", c.base, err);
        size_t used = strlen(s->err);
        int w = snprintf(s->err + used, sizeof(s->err) - used, "%s%s: %s", used ? "; " : "", c.base,
                         err);
        if (w < 0 || (size_t)w >= sizeof(s->err) - used) {
            log_debug("KMS error list truncated");
        }
    }
    ds_verifier_free(verifier);
    if (r < 0) {
        char tmp[SETUP_ERR_MAX];
        snprintf(tmp, sizeof(tmp), "%s", s->err);
        return fail(s, r, "no KMS released the app keys: %s", tmp[0] ? tmp : "no usable kms_urls");
    }
    return 0;
}

static int keys_from_seed(struct setup *s)
{
    uint8_t seed[DS_KEY_SIZE];
    struct ds_seed_keys sk;
    char *pem = NULL;
    size_t pem_len = 0;
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    char err[UTIL_KMS_ERR_MAX] = "";
    int r = ds_random(seed, sizeof(seed));
    if (r == 0) {
        r = ds_app_keys_from_seed(seed, &sk);
    }
    if (r == 0) {
        r = ds_p256_pkcs8_pem(sk.app_key, &pem, &pem_len);
    }
    if (r == 0) {
        r = util_pem_to_key(pem, &key);
    }
    if (r < 0) {
        fail(s, r, "key provider none: deriving keys: %s", ds_strerror(r));
        goto out;
    }
    struct util_mint_req req = {.subject = "App Root Cert", .key = key};
    EVP_PKEY *k2 = NULL;
    r = util_ratls_mint(s->tee, &req, &k2, &cert, err, sizeof(err));
    if (r < 0) {
        fail(s, r, "key provider none: App Root Cert: %s", err);
        goto out;
    }
    EVP_PKEY_free(k2);
    BIO *b = BIO_new(BIO_s_mem());
    char *p = NULL;
    long plen = 0;
    if (!b || !PEM_write_bio_X509(b, cert) || (plen = BIO_get_mem_data(b, &p)) <= 0 ||
        !(s->keys.ca_cert = strndup(p, (size_t)plen))) {
        BIO_free(b);
        r = fail(s, -ENOMEM, "key provider none: encoding the App Root Cert");
        goto out;
    }
    BIO_free(b);
    memcpy(s->keys.disk_crypt_key, sk.disk_crypt_key, DS_KEY_SIZE);
    s->keys.disk_crypt_key_len = DS_KEY_SIZE;
    memcpy(s->keys.k256_key, sk.k256_key, DS_KEY_SIZE);
    s->keys.provider = DS_KEY_PROVIDER_NONE;
    s->keys.key = pem;
    pem = NULL;
    s->keys.gateway_app_id = strdup("");
    if (!s->keys.gateway_app_id) {
        r = fail(s, -ENOMEM, "out of memory");
    }
out:
    if (pem) {
        ds_keys_free_secret(pem);
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    ds_wipe(seed, sizeof(seed));
    ds_wipe(&sk, sizeof(sk));
    return r;
}

static int get_keys(struct setup *s)
{
    switch (s->kp) {
    case DS_KP_KMS: {
        progress(s, "requesting app keys");
        int r = keys_from_kms(s);
        /* upstream measures os-image-hash as part of the KMS key request (before verify_app) */
        return r < 0 ? r
                     : emit(s, DS_EVENT_OS_IMAGE_HASH,
                            s->os_image_hash ? s->os_image_hash : (const uint8_t *)"",
                            s->os_image_hash_len);
    }
    case DS_KP_NONE:
        log_warnx("!!! key provider NONE: the app keys come from a RANDOM seed made inside "
                  "this CVM; they change every boot, nothing encrypted in an earlier boot "
                  "can be read, and no KMS vouches for this app !!!");
        return keys_from_seed(s);
    case DS_KP_LOCAL:
        return fail(s, -DS_E_UNSUPPORTED,
                    "key provider local (SGX local key provider via the host's GetSealingKey) "
                    "is not supported by this dstack-util");
    default:
        return fail(s, -DS_E_UNSUPPORTED, "key provider %s is not supported by this dstack-util",
                    ds_key_provider_name(s->kp));
    }
}

/* The key provider id measured / pinned: the KMS root CA SPKI, else empty. */
static void provider_id(const struct setup *s, const uint8_t **id, size_t *len)
{
    *id = s->kp == DS_KP_KMS ? s->keys.pubkey : NULL;
    *len = s->kp == DS_KP_KMS ? s->keys.pubkey_len : 0;
}

static int hex_field_eq(json_t *doc, const char *key, const uint8_t *want, size_t want_len)
{
    json_t *v = json_object_get(doc, key);
    if (!v) {
        return want_len == 0 ? 0 : -1;
    }
    const char *h = json_string_value(v);
    uint8_t buf[DS_COMPOSE_KP_ID_MAX];
    size_t hl = h ? strlen(h) : 0;
    if (!h || hl != 2 * want_len || hl / 2 > sizeof(buf) ||
        (hl && ds_hex_decode(h, hl, buf, hl / 2) < 0) || memcmp(buf, want, want_len) != 0) {
        return -1;
    }
    return 0;
}

/* MR_CONFIG V3: the sys-config document must hash to the register and match what we measured. */
static int verify_v3(struct setup *s, const uint8_t mr[DS_MR_CONFIG_ID_SIZE])
{
    const char *doc = sys_str(s, "mr_config");
    if (!doc) {
        return fail(s, -DS_E_MISMATCH,
                    "MRCONFIGID is version 3 but .sys-config.json has no mr_config document");
    }
    size_t dl = strlen(doc), pl = strlen(MR_CONFIG_V3_PREFIX);
    uint8_t *buf = malloc(pl + 1 + dl);
    if (!buf) {
        return fail(s, -ENOMEM, "out of memory");
    }
    memcpy(buf, MR_CONFIG_V3_PREFIX, pl);
    buf[pl] = 0;
    memcpy(buf + pl + 1, doc, dl);
    uint8_t h[DS_SHA256_LEN];
    ds_sha256(buf, pl + 1 + dl, h);
    free(buf);
    uint8_t want[DS_MR_CONFIG_ID_SIZE] = {3};
    memcpy(want + 1, h, sizeof(h));
    if (!ds_ct_equal(want, mr, sizeof(want))) {
        return fail(s, -DS_E_MISMATCH, "MRCONFIGID v3 does not match the mr_config document");
    }
    json_t *j = json_loads(doc, JSON_REJECT_DUPLICATES, NULL);
    const char *kpn = json_string_value(json_object_get(j, "key_provider"));
    int bad = !json_is_object(j) || !kpn || strcmp(kpn, ds_key_provider_name(s->kp)) != 0 ||
              hex_field_eq(j, "compose_hash", s->compose_hash, sizeof(s->compose_hash)) < 0 ||
              hex_field_eq(j, "app_id", s->app_id, sizeof(s->app_id)) < 0 ||
              hex_field_eq(j, "instance_id", s->instance_id, s->instance_id_len) < 0 ||
              hex_field_eq(j, "key_provider_id", s->compose->key_provider_id,
                           s->compose->key_provider_id_len) < 0;
    json_t *ish = json_object_get(j, "init_script_hashes");
    if (!bad && ish) {
        bad = !json_is_array(ish) || json_array_size(ish) != s->compose->init_script_count;
        for (size_t i = 0; !bad && i < s->compose->init_script_count; i++) {
            uint8_t sh[DS_SHA256_LEN];
            const char *sc = s->compose->init_scripts[i];
            const char *hx = json_string_value(json_array_get(ish, i));
            uint8_t got[DS_SHA256_LEN];
            ds_sha256(sc, strlen(sc), sh);
            bad = !hx || strlen(hx) != 64 || ds_hex_decode(hx, 64, got, 32) < 0 ||
                  memcmp(got, sh, 32) != 0;
        }
    }
    json_decref(j);
    if (bad) {
        return fail(s, -DS_E_MISMATCH,
                    "the MrConfigV3 document does not match the measured app (compose hash, "
                    "app id, instance id, key provider or init scripts)");
    }
    return 0;
}

/* §3.3 step 9: the launch-time MRCONFIGID binding, then the key_provider_id pin. */
static int verify_app(struct setup *s)
{
    uint8_t rd[DS_TEE_REPORT_DATA_SIZE] = {0};
    uint8_t *raw = NULL;
    size_t raw_len = 0;
    struct ds_quote q;
    int r = ds_tee_get_quote(s->tee, rd, &raw, &raw_len);
    if (r == 0) {
        r = ds_quote_parse(raw, raw_len, &q);
    }
    if (r == 0 && q.kind != DS_REPORT_TD10 && q.kind != DS_REPORT_TD15) {
        r = -DS_E_UNSUPPORTED;
    }
    if (r < 0) {
        free(raw);
        return fail(s, r, "reading MRCONFIGID from a local quote: %s", ds_strerror(r));
    }
    uint8_t mr[DS_MR_CONFIG_ID_SIZE], want[DS_MR_CONFIG_ID_SIZE], zero[DS_MR_CONFIG_ID_SIZE] = {0};
    memcpy(mr, q.td.mr_config_id, sizeof(mr));
    free(raw);
    const uint8_t *kid;
    size_t kid_len;
    provider_id(s, &kid, &kid_len);
    if (memcmp(mr, zero, sizeof(mr)) == 0) {
        log_info("MRCONFIGID is zero: no launch-time config binding to check");
    } else if (mr[0] == 1) {
        ds_mr_config_id_v1(s->compose_hash, want);
        if (!ds_ct_equal(want, mr, sizeof(mr))) {
            return fail(s, -DS_E_MISMATCH, "MRCONFIGID v1 does not match the compose hash");
        }
    } else if (mr[0] == 2) {
        r = ds_mr_config_id_v2(s->compose_hash, s->app_id, (enum ds_key_provider_kind)s->kp,
                               s->compose->key_provider_id, s->compose->key_provider_id_len, want);
        if (r < 0 || !ds_ct_equal(want, mr, sizeof(mr))) {
            return fail(s, -DS_E_MISMATCH,
                        "MRCONFIGID v2 does not match compose hash / app id / key provider");
        }
    } else if (mr[0] == 3) {
        if ((r = verify_v3(s, mr)) < 0) {
            return r;
        }
    } else {
        return fail(s, -DS_E_UNSUPPORTED, "MRCONFIGID has unknown version %u", mr[0]);
    }
    if (s->compose->key_provider_id_len > 0 &&
        (kid_len != s->compose->key_provider_id_len ||
         !ds_ct_equal(kid, s->compose->key_provider_id, kid_len))) {
        char *got = ds_hex_strdup(kid, kid_len);
        char *pin = ds_hex_strdup(s->compose->key_provider_id, s->compose->key_provider_id_len);
        fail(s, -DS_E_MISMATCH,
             "key provider id mismatch: the app pins key_provider_id %s, the key provider is "
             "%s",
             pin ? pin : "?", got && got[0] ? got : "(empty)");
        free(got);
        free(pin);
        return -DS_E_MISMATCH;
    }
    return 0;
}

static int measure_keys(struct setup *s)
{
    int r;
    const uint8_t *kid;
    size_t kid_len;
    provider_id(s, &kid, &kid_len);
    char *hex = ds_hex_strdup(kid, kid_len);
    json_t *j = hex ? json_pack("{s:s,s:s}", "name", ds_key_provider_name(s->kp), "id", hex) : NULL;
    char *payload = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    free(hex);
    if (!payload) {
        return fail(s, -ENOMEM, "out of memory");
    }
    r = emit(s, DS_EVENT_KEY_PROVIDER, payload, strlen(payload));
    free(payload);
    if (r == 0) {
        r = emit(s, DS_EVENT_STORAGE_FS, SETUP_STORAGE_FS, strlen(SETUP_STORAGE_FS));
    }
    return r;
}

/* ---- env ----------------------------------------------------------------------------------- */

static int decrypt_env(struct setup *s)
{
    struct share_file *ef = &s->files[SF_ENV];
    if (!ef->present || ef->len == 0) {
        return 0;
    }
    if (s->keys.env_crypt_key_len != DS_KEY_SIZE) {
        log_warnx("an encrypted env was given but key provider %s has no env key: ignored",
                  ds_key_provider_name(s->kp));
        return 0;
    }
    struct ds_env_list env = {0};
    struct ds_compose_error cerr = {{0}, {0}};
    size_t skipped = 0;
    int r = ds_env_decrypt_for_app(s->compose, s->keys.env_crypt_key, ef->data, ef->len, &env,
                                   &skipped, &cerr);
    if (r < 0) {
        return fail(s, r, "encrypted env: %s%s%s", cerr.field, cerr.field[0] ? ": " : "",
                    cerr.msg[0] ? cerr.msg : ds_strerror(r));
    }
    if (skipped) {
        log_warnx("encrypted env: %zu variable(s) not in allowed_envs were dropped", skipped);
    }
    r = ds_env_render_dotenv(&env, &s->decrypted_env, &s->decrypted_env_len);
    json_t *obj = json_object();
    for (size_t i = 0; r == 0 && obj && i < env.count; i++) {
        if (json_object_set_new(obj, env.vars[i].key, json_string(env.vars[i].value)) < 0) {
            r = -ENOMEM;
        }
    }
    if (r == 0 && obj) {
        s->decrypted_env_json = json_dumps(obj, JSON_COMPACT | JSON_SORT_KEYS);
        r = s->decrypted_env_json ? 0 : -ENOMEM;
        s->decrypted_env_json_len = s->decrypted_env_json ? strlen(s->decrypted_env_json) : 0;
    }
    json_decref(obj);
    /* the count is read before the list is freed (ds_env_list_free zeroes it) */
    size_t n_decrypted = env.count;
    ds_env_list_free(&env);
    if (r < 0 || !obj) {
        return fail(s, r < 0 ? r : -ENOMEM, "encrypted env: rendering: %s", ds_strerror(r));
    }
    log_info("encrypted env: %zu variable(s) decrypted", n_decrypted);
    return 0;
}

/* ---- outputs ------------------------------------------------------------------------------- */

static char *instance_info_json(const struct setup *s)
{
    char seed[2 * DS_INSTANCE_ID_SIZE + 1], iid[2 * DS_INSTANCE_ID_SIZE + 1],
        app[2 * DS_APP_ID_SIZE + 1];
    ds_hex_encode(s->seed, sizeof(s->seed), seed);
    ds_hex_encode(s->instance_id, s->instance_id_len, iid);
    ds_hex_encode(s->app_id, sizeof(s->app_id), app);
    json_t *j =
        json_pack("{s:s,s:s,s:s}", "instance_id_seed", seed, "instance_id", iid, "app_id", app);
    char *out = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return out;
}

static int write_in(struct setup *s, const char *dir, const char *name, const void *data,
                    size_t len, unsigned mode)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    int r = ds_write_file_atomic(path, data, len, mode);
    if (r < 0) {
        return fail(s, r, "writing %s: %s", path, ds_strerror(r));
    }
    return 0;
}

static void symlink_in(const char *dir, const char *target, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    unlink(path);
    if (symlink(target, path) < 0) {
        log_warn("symlink %s", path);
    }
}

static int write_outputs(struct setup *s, const char *info)
{
    int r = write_in(s, s->share_dir, ".instance_info", info, strlen(info), 0644);
    if (r == 0 && s->decrypted_env) {
        r = write_in(s, s->share_dir, ".decrypted-env", s->decrypted_env, s->decrypted_env_len,
                     0600);
        if (r == 0) {
            r = write_in(s, s->share_dir, ".decrypted-env.json", s->decrypted_env_json,
                         s->decrypted_env_json_len, 0600);
        }
    }
    if (r == 0) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/.appkeys.json", s->share_dir);
        r = ds_appkeys_save(path, &s->keys);
        if (r < 0) {
            return fail(s, r, "writing %s: %s", path, ds_strerror(r));
        }
    }
    if (r == 0) {
        json_t *j = json_pack("{s:{s:{s:[s,s]}}}", "default", "core", "data_disks", "/",
                              s->mount_point ? s->mount_point : "/");
        char *agent = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
        json_decref(j);
        r = agent ? write_in(s, s->work_dir, "agent.json", agent, strlen(agent), 0644)
                  : fail(s, -ENOMEM, "out of memory");
        free(agent);
    }
    if (r == 0) {
        symlink_in(s->work_dir, ".host-shared/app-compose.json", "app-compose.json");
        if (s->files[SF_USER].present) {
            symlink_in(s->work_dir, ".host-shared/.user-config", "user_config");
        }
    }
    return r;
}

/*
 * Remove the key material files under <work>/.host-shared: before a run (nothing stale from an
 * earlier boot survives) and after a failure (no key material on failure).
 */
static void remove_outputs_dir(const char *work_dir)
{
    const char *names[] = {".appkeys.json", ".decrypted-env", ".decrypted-env.json"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(names); i++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/.host-shared/%s", work_dir, names[i]);
        unlink(path);
    }
}

/* ---- the command ----------------------------------------------------------------------------- */

static int run(struct setup *s)
{
    int r;
    char *info = NULL;
    remove_outputs_dir(s->work_dir);
    if ((r = load_share(s)) < 0 || (r = parse_inputs(s)) < 0 || (r = compute_ids(s)) < 0) {
        return r;
    }
    char tee_err[256] = "";
    r = ds_tee_open(s->tee_spec, &s->tee, tee_err, sizeof(tee_err));
    if (r < 0) {
        return fail(s, r, "TEE: %s", tee_err[0] ? tee_err : ds_strerror(r));
    }
    if (ds_tee_is_simulated(s->tee)) {
        log_warnx("the TEE is SIMULATED (%s): nothing measured here proves anything",
                  ds_tee_kind(s->tee));
    }
    char app_hex[2 * DS_APP_ID_SIZE + 1], ch_hex[2 * DS_COMPOSE_HASH_SIZE + 1];
    ds_hex_encode(s->app_id, sizeof(s->app_id), app_hex);
    ds_hex_encode(s->compose_hash, sizeof(s->compose_hash), ch_hex);
    log_info("app id %s, compose hash %s, key provider %s, event log v%u", app_hex, ch_hex,
             ds_key_provider_name(s->kp), s->event_version);
    if ((r = measure_app(s)) < 0 || (r = get_keys(s)) < 0) {
        return r;
    }
    if (s->keys.disk_crypt_key_len != DS_KEY_SIZE) {
        return fail(s, -DS_E_PROTOCOL, "the key provider returned no disk key");
    }
    if ((r = verify_app(s)) < 0 || (r = measure_keys(s)) < 0) {
        return r;
    }
    if (s->no_data_disk) {
        log_warnx("--no-data-disk: no persistent storage for this app");
    } else {
        struct setup_disk_opts o = {s->data_disk, s->mount_point, s->work_dir,
                                    s->insecure_plaintext, s->backend};
        char err[SETUP_ERR_MAX] = "";
        r = setup_data_volume(&o, s->keys.disk_crypt_key, progress_cb, s, &s->disk, err,
                              sizeof(err));
        if (r < 0) {
            return fail(s, r, "%s", err);
        }
        log_info("data volume (%s) at %s", s->disk.backend, s->mount_point);
    }
    if ((r = decrypt_env(s)) < 0) {
        return r;
    }
    info = instance_info_json(s);
    if (!info) {
        return fail(s, -ENOMEM, "out of memory");
    }
    r = write_outputs(s, info);
    if (r == 0 && s->host_api && setup_notify(s->host_api, "instance.info", info) < 0) {
        log_warnx("host API: notify instance.info failed (the instance id seed is not "
                  "persisted on the host)");
    }
    if (r == 0) {
        r = emit(s, DS_EVENT_SYSTEM_READY, "", 0);
    }
    free(info);
    if (r == 0) {
        progress(s, "data disk ready");
        char iid[2 * DS_INSTANCE_ID_SIZE + 1];
        ds_hex_encode(s->instance_id, s->instance_id_len, iid);
        log_info("setup done: app id %s, instance id %s, files in %s", app_hex,
                 iid[0] ? iid : "(none)", s->share_dir);
    }
    return r;
}

int util_cmd_setup(int argc, char **argv)
{
    struct setup s;
    memset(&s, 0, sizeof(s));
    bool help = false;
    const struct util_opt opts[] = {
        {"host-shared", UTIL_OPT_STRING, &s.host_shared, "DIR", false},
        {"work-dir", UTIL_OPT_STRING, &s.work_dir, "DIR", false},
        {"tee", UTIL_OPT_STRING, &s.tee_spec, "SPEC", false},
        {"host-api", UTIL_OPT_STRING, &s.host_api, "SOCKET", false},
        {"data-disk", UTIL_OPT_STRING, &s.data_disk, "PATH", false},
        {"mount-point", UTIL_OPT_STRING, &s.mount_point, "DIR", false},
        {"pccs-url", UTIL_OPT_STRING, &s.pccs_url, "URL", false},
        {"insecure-allow-simulated", UTIL_OPT_FLAG, &s.allow_simulated, NULL, false},
        {"insecure-plaintext-data", UTIL_OPT_FLAG, &s.insecure_plaintext, NULL, false},
        {"no-data-disk", UTIL_OPT_FLAG, &s.no_data_disk, NULL, false},
        {"disk-encryption", UTIL_OPT_STRING, &s.disk_encryption, "auto|luks|fscrypt", false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("setup", argc, argv, opts, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        util_setup_usage(stdout);
        return UTIL_EXIT_OK;
    }
    if (!s.host_shared) {
        s.host_shared = DEFAULT_HOST_SHARED;
    }
    if (!s.work_dir) {
        s.work_dir = DEFAULT_WORK_DIR;
    }
    char mp[4096];
    if (!s.mount_point) {
        snprintf(mp, sizeof(mp), "%s/persistent", s.work_dir);
        s.mount_point = mp;
    }
    if (!s.data_disk && !s.no_data_disk) {
        log_warnx("setup: --data-disk PATH is required (or --no-data-disk)");
        return UTIL_EXIT_USAGE;
    }
    if (!s.disk_encryption || strcmp(s.disk_encryption, "auto") == 0) {
        s.backend = SETUP_DISK_AUTO;
    } else if (strcmp(s.disk_encryption, "luks") == 0) {
        s.backend = SETUP_DISK_LUKS;
    } else if (strcmp(s.disk_encryption, "fscrypt") == 0) {
        s.backend = SETUP_DISK_FSCRYPT;
    } else {
        log_warnx("setup: --disk-encryption: expected auto, luks or fscrypt, got '%s'",
                  s.disk_encryption);
        return UTIL_EXIT_USAGE;
    }
    if (s.data_disk && s.no_data_disk) {
        log_warnx("setup: --data-disk and --no-data-disk exclude each other");
        return UTIL_EXIT_USAGE;
    }
    if (s.insecure_plaintext) {
        log_warnx("!!! --insecure-plaintext-data given: the data volume will NOT be encrypted "
                  "!!!");
    }
    int r = run(&s);
    if (r < 0) {
        remove_outputs_dir(s.work_dir);
        setup_data_volume_undo(&s.disk);
        log_warnx("setup failed: %s", s.err);
        if (s.host_api && setup_notify(s.host_api, "boot.error", s.err) < 0) {
            log_warnx("host API %s: notify boot.error failed", s.host_api);
        }
        rc = UTIL_EXIT_FAIL;
    }
    for (int i = 0; i < SF_COUNT; i++) {
        if (s.files[i].data) {
            ds_wipe(s.files[i].data, s.files[i].len);
            free(s.files[i].data);
        }
    }
    if (s.decrypted_env) {
        ds_wipe(s.decrypted_env, s.decrypted_env_len);
        free(s.decrypted_env);
    }
    if (s.decrypted_env_json) {
        ds_wipe(s.decrypted_env_json, s.decrypted_env_json_len);
        free(s.decrypted_env_json);
    }
    ds_appkeys_done(&s.keys);
    free(s.os_image_hash);
    ds_app_compose_free(s.compose);
    json_decref(s.sys_config);
    ds_tee_close(s.tee);
    ds_wipe(s.seed, sizeof(s.seed));
    return rc;
}

/* `dstack-util notify --host-api SOCKET --event NAME [--payload TEXT]`. */
void util_notify_usage(FILE *out)
{
    fprintf(out, "usage: dstack-util notify --host-api SOCKET --event NAME [--payload TEXT]\n"
                 "\nSend Notify{event, payload} to the VMM host API (e.g. boot.progress).\n");
}

int util_cmd_notify(int argc, char **argv)
{
    const char *sock = NULL, *event = NULL, *payload = "";
    bool help = false;
    const struct util_opt opts[] = {
        {"host-api", UTIL_OPT_STRING, &sock, "SOCKET", true},
        {"event", UTIL_OPT_STRING, &event, "NAME", true},
        {"payload", UTIL_OPT_STRING, &payload, "TEXT", false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("notify", argc, argv, opts, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        util_notify_usage(stdout);
        return UTIL_EXIT_OK;
    }
    int r = setup_notify(sock, event, payload);
    if (r < 0) {
        log_warnx("notify %s via %s: %s", event, sock, ds_strerror(r));
        return UTIL_EXIT_FAIL;
    }
    return UTIL_EXIT_OK;
}
