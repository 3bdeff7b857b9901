/* SPDX-License-Identifier: Apache-2.0 */
/*
 * App identity from a TDX event log and quote (spec attestation.md §4.6, guest-agent-api.md
 * §4.11): app_id, compose_hash, instance_id, key provider, os_image_hash, device_id, mr_system
 * and mr_aggregated. Also the mr_config_id builders (v1, v2) and the report_data convention
 * (QuoteContentType: H(tag ":" content) zero-padded to 64 bytes) that the KMS, RA-TLS and the
 * guest agent share.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "attest/eventlog_priv.h"
#include "dstack/eventlog.h"

#define VM_CONFIG_MAX_JSON   (1024 * 1024)
#define OS_IMAGE_HASH_MAX    64 /* bytes; a SHA-256 in practice */
#define KEY_PROVIDER_ID_MAX  4096
#define KEY_PROVIDER_MAX     (64 * 1024)
#define MR_CONFIG_PAD_OFFSET (1 + DS_SHA256_LEN) /* version byte + 32-byte hash */

void ds_app_info_done(struct ds_app_info *info)
{
    if (!info) {
        return;
    }
    free(info->app_id);
    free(info->compose_hash);
    free(info->instance_id);
    free(info->os_image_hash);
    free(info->key_provider_info);
    free(info->key_provider_name);
    free(info->key_provider_id);
    for (size_t i = 0; i < info->init_script_count; i++) {
        free(info->init_script_hashes[i]);
    }
    free(info->init_script_hashes);
    free(info->init_script_hash_lens);
    memset(info, 0, sizeof(*info));
}

/* Copy an event's payload (NULL/0 when the event is absent or empty). */
static int dup_payload(const struct ds_event *ev, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!ev || ev->payload_len == 0) {
        return 0;
    }
    uint8_t *p = malloc(ev->payload_len);
    if (!p) {
        return -ENOMEM;
    }
    memcpy(p, ev->payload, ev->payload_len);
    *out = p;
    *out_len = ev->payload_len;
    return 0;
}

int ds_app_info_parse_key_provider(const uint8_t *json, size_t len, char **out_name,
                                   uint8_t **out_id, size_t *out_id_len)
{
    json_t *root = NULL;
    json_error_t jerr;
    char *name = NULL;
    uint8_t *id = NULL;
    size_t id_len = 0;
    int r = -DS_E_FORMAT;

    if (len > KEY_PROVIDER_MAX) {
        return -DS_E_LIMIT;
    }
    root = json_loadb((const char *)json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        goto out;
    }
    const json_t *jn = json_object_get(root, "name");
    const json_t *ji = json_object_get(root, "id");
    if (!json_is_string(jn) || (ji && !json_is_string(ji) && !json_is_null(ji))) {
        goto out;
    }
    name = strdup(json_string_value(jn));
    if (!name) {
        r = -ENOMEM;
        goto out;
    }
    if (json_is_string(ji) && json_string_length(ji) > 0) {
        r = ds_hex_decode_alloc(json_string_value(ji), json_string_length(ji), KEY_PROVIDER_ID_MAX,
                                &id, &id_len);
        if (r < 0) {
            goto out;
        }
    }
    *out_name = name;
    *out_id = id;
    *out_id_len = id_len;
    name = NULL;
    id = NULL;
    r = 0;
out:
    free(name);
    free(id);
    json_decref(root);
    return r;
}

/*
 * os_image_hash from a vm_config JSON object; a whole sys-config whose "vm_config" member is a
 * JSON string is unwrapped once (guest-agent-api §4.11). A missing key gives an empty hash, as
 * serde's `default` does upstream.
 */
static int os_image_hash_from_vm_config(const char *text, uint8_t **out, size_t *out_len)
{
    json_t *root = NULL, *inner = NULL;
    json_error_t jerr;
    int r = -DS_E_FORMAT;
    size_t len = strlen(text);

    *out = NULL;
    *out_len = 0;
    if (len > VM_CONFIG_MAX_JSON) {
        return -DS_E_LIMIT;
    }
    root = json_loadb(text, len, 0, &jerr);
    if (!json_is_object(root)) {
        goto out;
    }
    const json_t *obj = root;
    const json_t *nested = json_object_get(root, "vm_config");
    if (!json_object_get(root, "os_image_hash") && json_is_string(nested)) {
        inner = json_loadb(json_string_value(nested), json_string_length(nested), 0, &jerr);
        if (!json_is_object(inner)) {
            goto out;
        }
        obj = inner;
    }
    const json_t *h = json_object_get(obj, "os_image_hash");
    if (!h || json_is_null(h)) {
        r = 0;
        goto out;
    }
    if (!json_is_string(h)) {
        goto out;
    }
    if (json_string_length(h) == 0) {
        r = 0;
        goto out;
    }
    r = ds_hex_decode_alloc(json_string_value(h), json_string_length(h), OS_IMAGE_HASH_MAX, out,
                            out_len);
out:
    json_decref(inner);
    json_decref(root);
    return r;
}

int ds_evl_app_info_alloc_init_scripts(struct ds_app_info *info, size_t n)
{
    if (n > DS_APP_INFO_MAX_INIT_SCRIPTS) {
        return -DS_E_LIMIT;
    }
    if (n == 0) {
        return 0;
    }
    info->init_script_hashes = calloc(n, sizeof(*info->init_script_hashes));
    info->init_script_hash_lens = calloc(n, sizeof(*info->init_script_hash_lens));
    if (!info->init_script_hashes || !info->init_script_hash_lens) {
        return -ENOMEM;
    }
    return 0;
}

static int collect_init_scripts(const struct ds_event_log *log, struct ds_app_info *info)
{
    size_t n = 0;
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if (!ds_event_is_runtime(ev)) {
            continue;
        }
        if (strcmp(ev->name, DS_EVENT_SYSTEM_READY) == 0) {
            break;
        }
        if (strcmp(ev->name, DS_EVENT_INIT_SCRIPT_HASH) == 0) {
            n++;
        }
    }
    DS_TRY(ds_evl_app_info_alloc_init_scripts(info, n));
    for (size_t i = 0; i < log->count && info->init_script_count < n; i++) {
        const struct ds_event *ev = &log->events[i];
        if (!ds_event_is_runtime(ev) || strcmp(ev->name, DS_EVENT_INIT_SCRIPT_HASH) != 0) {
            continue;
        }
        size_t k = info->init_script_count;
        uint8_t *p = malloc(ev->payload_len ? ev->payload_len : 1);
        if (!p) {
            return -ENOMEM;
        }
        if (ev->payload_len) {
            memcpy(p, ev->payload, ev->payload_len);
        }
        info->init_script_hashes[k] = p;
        info->init_script_hash_lens[k] = ev->payload_len;
        info->init_script_count++;
    }
    return 0;
}

/*
 * A V1 runtime digest is H(type ":" name ":" payload), so a name containing ':' splits the same
 * bytes differently: a log may re-label a genuine event whose payload holds a ':' (an app-id
 * starting with ':' read as the event "app-id:", a key-provider JSON as "key-provider:{...")
 * and so hide it, letting a later event of that name stand as the identity. dstack never emits
 * such names before system-ready, which is where the identity is read: refuse them there.
 */
static int check_identity_names(const struct ds_event_log *log)
{
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if (!ds_event_is_runtime(ev)) {
            continue;
        }
        if (strcmp(ev->name, DS_EVENT_SYSTEM_READY) == 0) {
            break;
        }
        if (ev->version == 1 && strchr(ev->name, ':')) {
            return -DS_E_FORMAT;
        }
    }
    return 0;
}

int ds_app_info_decode(const struct ds_event_log *log, const struct ds_td_report *td,
                       const uint8_t *ppid, size_t ppid_len, const char *vm_config, bool boottime,
                       struct ds_app_info *out)
{
    struct ds_app_info info;
    uint8_t mr_key_provider[DS_SHA256_LEN];
    uint8_t rtmr3[DS_SHA384_LEN];
    int r;

    memset(&info, 0, sizeof(info));
    r = check_identity_names(log);
    if (r == 0) {
        r = dup_payload(ds_eventlog_find_event(log, DS_EVENT_APP_ID), &info.app_id,
                        &info.app_id_len);
    }
    if (r == 0) {
        r = dup_payload(ds_eventlog_find_event(log, DS_EVENT_COMPOSE_HASH), &info.compose_hash,
                        &info.compose_hash_len);
    }
    if (r == 0) {
        r = dup_payload(ds_eventlog_find_event(log, DS_EVENT_INSTANCE_ID), &info.instance_id,
                        &info.instance_id_len);
    }
    if (r == 0 && !boottime) {
        r = dup_payload(ds_eventlog_find_event(log, DS_EVENT_KEY_PROVIDER), &info.key_provider_info,
                        &info.key_provider_info_len);
    }
    if (r < 0) {
        goto out;
    }
    if (info.key_provider_info_len) {
        /* Informational: an unparsable payload still counts for mr_key_provider. */
        char *name;
        uint8_t *id;
        size_t id_len;
        r = ds_app_info_parse_key_provider(info.key_provider_info, info.key_provider_info_len,
                                           &name, &id, &id_len);
        if (r == -ENOMEM) {
            goto out;
        }
        if (r == 0) {
            info.key_provider_name = name;
            info.key_provider_id = id;
            info.key_provider_id_len = id_len;
        }
        ds_sha256(info.key_provider_info, info.key_provider_info_len, mr_key_provider);
    } else {
        memset(mr_key_provider, 0, sizeof(mr_key_provider));
    }

    if (vm_config && vm_config[0]) {
        r = os_image_hash_from_vm_config(vm_config, &info.os_image_hash, &info.os_image_hash_len);
    } else {
        r = dup_payload(ds_eventlog_find_event(log, DS_EVENT_OS_IMAGE_HASH), &info.os_image_hash,
                        &info.os_image_hash_len);
    }
    if (r < 0) {
        goto out;
    }
    r = collect_init_scripts(log, &info);
    if (r < 0) {
        goto out;
    }

    ds_sha256(ppid ? (const void *)ppid : (const void *)"", ppid ? ppid_len : 0, info.device_id);

    ds_sha256_v(info.mr_system, 5, td->mr_td, (size_t)48, td->rtmr[0], (size_t)48, td->rtmr[1],
                (size_t)48, td->rtmr[2], (size_t)48, mr_key_provider, sizeof(mr_key_provider));

    r = ds_eventlog_replay_runtime_sha384(log, boottime ? DS_EVENT_BOOT_MR_DONE : NULL, rtmr3);
    if (r < 0) {
        goto out;
    }
    if (ds_is_zero(td->mr_config_id, 48) && ds_is_zero(td->mr_owner, 48) &&
        ds_is_zero(td->mr_owner_config, 48)) {
        ds_sha256_v(info.mr_aggregated, 5, td->mr_td, (size_t)48, td->rtmr[0], (size_t)48,
                    td->rtmr[1], (size_t)48, td->rtmr[2], (size_t)48, rtmr3, sizeof(rtmr3));
    } else {
        ds_sha256_v(info.mr_aggregated, 8, td->mr_td, (size_t)48, td->rtmr[0], (size_t)48,
                    td->rtmr[1], (size_t)48, td->rtmr[2], (size_t)48, rtmr3, sizeof(rtmr3),
                    td->mr_config_id, (size_t)48, td->mr_owner, (size_t)48, td->mr_owner_config,
                    (size_t)48);
    }
    *out = info;
    memset(&info, 0, sizeof(info));
    r = 0;
out:
    ds_app_info_done(&info);
    return r;
}

/* ---- mr_config_id ------------------------------------------------------------------------- */

void ds_mr_config_id_v1(const uint8_t compose_hash[DS_SHA256_LEN],
                        uint8_t out[DS_MR_CONFIG_ID_SIZE])
{
    memset(out, 0, DS_MR_CONFIG_ID_SIZE);
    out[0] = 1;
    memcpy(out + 1, compose_hash, DS_SHA256_LEN);
}

int ds_mr_config_id_v2(const uint8_t compose_hash[DS_SHA256_LEN],
                       const uint8_t app_id[DS_APP_ID_SIZE], enum ds_key_provider_kind kind,
                       const uint8_t *key_provider_id, size_t key_provider_id_len,
                       uint8_t out[DS_MR_CONFIG_ID_SIZE])
{
    struct ds_keccak k;
    uint8_t kind_byte;
    uint8_t h[DS_KECCAK256_LEN];

    switch (kind) {
    case DS_KEY_PROVIDER_NONE:
    case DS_KEY_PROVIDER_LOCAL:
    case DS_KEY_PROVIDER_KMS:
    case DS_KEY_PROVIDER_TPM:
        kind_byte = (uint8_t)kind;
        break;
    default:
        return -DS_E_FORMAT;
    }
    if (key_provider_id_len && !key_provider_id) {
        return -EINVAL;
    }
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, compose_hash, DS_SHA256_LEN);
    ds_keccak256_update(&k, app_id, DS_APP_ID_SIZE);
    ds_keccak256_update(&k, &kind_byte, 1);
    if (key_provider_id_len) {
        ds_keccak256_update(&k, key_provider_id, key_provider_id_len);
    }
    ds_keccak256_final(&k, h);
    memset(out, 0, DS_MR_CONFIG_ID_SIZE);
    out[0] = 2;
    memcpy(out + 1, h, sizeof(h));
    _Static_assert(MR_CONFIG_PAD_OFFSET + 15 == DS_MR_CONFIG_ID_SIZE, "mr_config_id layout");
    return 0;
}

/* ---- report_data (QuoteContentType) ------------------------------------------------------- */

static const struct {
    const char *name;
    enum ds_report_hash hash;
} report_hash_names[] = {
    {"", DS_REPORT_HASH_SHA512},
    {"sha512", DS_REPORT_HASH_SHA512},
    {"sha256", DS_REPORT_HASH_SHA256},
    {"sha384", DS_REPORT_HASH_SHA384},
    {"sha3-256", DS_REPORT_HASH_SHA3_256},
    {"sha3-384", DS_REPORT_HASH_SHA3_384},
    {"sha3-512", DS_REPORT_HASH_SHA3_512},
    {"keccak256", DS_REPORT_HASH_KECCAK256},
    {"keccak384", DS_REPORT_HASH_KECCAK384},
    {"keccak512", DS_REPORT_HASH_KECCAK512},
    {"raw", DS_REPORT_HASH_RAW},
};

/* Digest size of the Keccak variants (original padding, lib/crypto/keccak.c); 0 for others. */
static size_t report_keccak_len(enum ds_report_hash hash)
{
    switch (hash) {
    case DS_REPORT_HASH_KECCAK256:
        return DS_KECCAK256_LEN;
    case DS_REPORT_HASH_KECCAK384:
        return DS_KECCAK384_LEN;
    case DS_REPORT_HASH_KECCAK512:
        return DS_KECCAK512_LEN;
    default:
        return 0;
    }
}

int ds_report_hash_parse(const char *name, enum ds_report_hash *out)
{
    if (!name) {
        name = "";
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(report_hash_names); i++) {
        if (strcmp(name, report_hash_names[i].name) == 0) {
            *out = report_hash_names[i].hash;
            return 0;
        }
    }
    return -DS_E_UNSUPPORTED;
}

static const EVP_MD *report_md(enum ds_report_hash hash)
{
    switch (hash) {
    case DS_REPORT_HASH_SHA512:
        return EVP_sha512();
    case DS_REPORT_HASH_SHA256:
        return EVP_sha256();
    case DS_REPORT_HASH_SHA384:
        return EVP_sha384();
    case DS_REPORT_HASH_SHA3_256:
        return EVP_sha3_256();
    case DS_REPORT_HASH_SHA3_384:
        return EVP_sha3_384();
    case DS_REPORT_HASH_SHA3_512:
        return EVP_sha3_512();
    default:
        return NULL;
    }
}

int ds_report_data_build(enum ds_report_hash hash, const char *tag, const void *content,
                         size_t content_len, uint8_t out[DS_REPORT_DATA_SIZE])
{
    uint8_t h[DS_REPORT_DATA_SIZE];
    EVP_MD_CTX *ctx = NULL;
    unsigned int hlen = 0;
    int r = -DS_E_CRYPTO;

    if (content_len && !content) {
        return -EINVAL;
    }
    if (hash == DS_REPORT_HASH_RAW) {
        if (content_len != DS_REPORT_DATA_SIZE) {
            return -DS_E_FORMAT;
        }
        memcpy(out, content, DS_REPORT_DATA_SIZE);
        return 0;
    }
    if (!tag) {
        return -DS_E_FORMAT;
    }
    memset(h, 0, sizeof(h));
    size_t keccak_len = report_keccak_len(hash);
    if (keccak_len) {
        struct ds_keccak k;
        DS_TRY(ds_keccak_init(&k, keccak_len));
        ds_keccak_update(&k, tag, strlen(tag));
        ds_keccak_update(&k, ":", 1);
        if (content_len) {
            ds_keccak_update(&k, content, content_len);
        }
        ds_keccak_final(&k, h);
        memcpy(out, h, sizeof(h));
        return 0;
    }
    const EVP_MD *md = report_md(hash);
    if (!md) {
        return -DS_E_UNSUPPORTED;
    }
    ctx = EVP_MD_CTX_new();
    if (!ctx || EVP_DigestInit_ex(ctx, md, NULL) != 1 ||
        EVP_DigestUpdate(ctx, tag, strlen(tag)) != 1 || EVP_DigestUpdate(ctx, ":", 1) != 1 ||
        (content_len && EVP_DigestUpdate(ctx, content, content_len) != 1) ||
        EVP_DigestFinal_ex(ctx, h, &hlen) != 1 || hlen > sizeof(h)) {
        goto out;
    }
    memcpy(out, h, sizeof(h));
    r = 0;
out:
    EVP_MD_CTX_free(ctx);
    return r;
}
