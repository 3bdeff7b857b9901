/* SPDX-License-Identifier: Apache-2.0 */
/*
 * KMS request decoding (spec kms-ratls.md §2.1-2.5): one lib/rpc field table per proto request
 * message, and the per-method checks that upstream does before touching any key (app id length,
 * CSR api version, domain names, URLs, image-cache keys). The daemon's handlers and the fuzz
 * harness both go through ds_kms_req_decode().
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/kms.h"

static const struct ds_rpc_field get_app_key_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct ds_kms_get_app_key_req, api_version, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_get_app_key_req, vm_config,
                 DS_KMS_VM_CONFIG_MAX),
};
static const struct ds_rpc_field app_id_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct ds_kms_app_id_req, app_id, 1024),
};
static const struct ds_rpc_field get_kms_key_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_get_kms_key_req, vm_config,
                 DS_KMS_VM_CONFIG_MAX),
};
static const struct ds_rpc_field sign_cert_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct ds_kms_sign_cert_req, api_version, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct ds_kms_sign_cert_req, csr, DS_KMS_CSR_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct ds_kms_sign_cert_req, signature, DS_KMS_CSR_SIG_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_sign_cert_req, vm_config, DS_KMS_VM_CONFIG_MAX),
};
static const struct ds_rpc_field clear_image_cache_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_clear_image_cache_req, image_hash, 256),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_clear_image_cache_req, config_hash, 256),
};
static const struct ds_rpc_field bootstrap_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_bootstrap_req, domain, DS_KMS_DOMAIN_MAX + 1),
};
static const struct ds_rpc_field onboard_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_onboard_req, source_url, DS_KMS_URL_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct ds_kms_onboard_req, domain, DS_KMS_DOMAIN_MAX + 1),
};

typedef int (*check_fn)(void *req, char *msg, size_t msg_size);

static int check_app_id(void *p, char *msg, size_t n)
{
    struct ds_kms_app_id_req *r = p;
    if (r->app_id.len != DS_KMS_APP_ID_SIZE) {
        snprintf(msg, n, "Invalid app id length: %zu", r->app_id.len);
        return -DS_E_FORMAT;
    }
    return 0;
}

static int check_sign_cert(void *p, char *msg, size_t n)
{
    struct ds_kms_sign_cert_req *r = p;
    if (r->api_version != 1 && r->api_version != 2) {
        snprintf(msg, n, "Unsupported API version: %u", r->api_version);
        return -DS_E_UNSUPPORTED;
    }
    return 0;
}

static bool hex_or_special(const char *s)
{
    if (!*s || strcmp(s, "all") == 0) {
        return true;
    }
    for (const char *c = s; *c; c++) {
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f') || (*c >= 'A' && *c <= 'F'))) {
            return false;
        }
    }
    return true;
}

static int check_clear_cache(void *p, char *msg, size_t n)
{
    struct ds_kms_clear_image_cache_req *r = p;
    if (!hex_or_special(r->image_hash) || !hex_or_special(r->config_hash)) {
        snprintf(msg, n, "Invalid cache key: must be hex, empty or \"all\"");
        return -DS_E_FORMAT;
    }
    return 0;
}

static int check_domain(const char *domain, char *msg, size_t n)
{
    if (!ds_kms_domain_valid(domain)) {
        snprintf(msg, n, "Invalid domain name");
        return -DS_E_FORMAT;
    }
    return 0;
}

static int check_bootstrap(void *p, char *msg, size_t n)
{
    return check_domain(((struct ds_kms_bootstrap_req *)p)->domain, msg, n);
}

static int check_onboard(void *p, char *msg, size_t n)
{
    struct ds_kms_onboard_req *r = p;
    DS_TRY(check_domain(r->domain, msg, n));
    if (strncmp(r->source_url, "https://", 8) != 0 && strncmp(r->source_url, "http://", 7) != 0) {
        snprintf(msg, n, "Invalid source URL: must start with https:// or http://");
        return -DS_E_FORMAT;
    }
    for (const char *c = r->source_url; *c; c++) {
        if ((unsigned char)*c <= ' ' || (unsigned char)*c >= 0x7f) {
            snprintf(msg, n, "Invalid source URL: control, space or non-ASCII character");
            return -DS_E_FORMAT;
        }
    }
    return 0;
}

struct req_kind {
    const struct ds_rpc_field *fields;
    size_t count;
    size_t size;
    check_fn check;
};

static const struct req_kind kinds[DS_KMS_REQ_MAX] = {
    [DS_KMS_REQ_GET_APP_KEY] = {get_app_key_fields, DS_ARRAY_SIZE(get_app_key_fields),
                                sizeof(struct ds_kms_get_app_key_req), NULL},
    [DS_KMS_REQ_APP_ID] = {app_id_fields, DS_ARRAY_SIZE(app_id_fields),
                           sizeof(struct ds_kms_app_id_req), check_app_id},
    [DS_KMS_REQ_GET_KMS_KEY] = {get_kms_key_fields, DS_ARRAY_SIZE(get_kms_key_fields),
                                sizeof(struct ds_kms_get_kms_key_req), NULL},
    [DS_KMS_REQ_SIGN_CERT] = {sign_cert_fields, DS_ARRAY_SIZE(sign_cert_fields),
                              sizeof(struct ds_kms_sign_cert_req), check_sign_cert},
    [DS_KMS_REQ_CLEAR_IMAGE_CACHE] = {clear_image_cache_fields,
                                      DS_ARRAY_SIZE(clear_image_cache_fields),
                                      sizeof(struct ds_kms_clear_image_cache_req),
                                      check_clear_cache},
    [DS_KMS_REQ_BOOTSTRAP] = {bootstrap_fields, DS_ARRAY_SIZE(bootstrap_fields),
                              sizeof(struct ds_kms_bootstrap_req), check_bootstrap},
    [DS_KMS_REQ_ONBOARD] = {onboard_fields, DS_ARRAY_SIZE(onboard_fields),
                            sizeof(struct ds_kms_onboard_req), check_onboard},
};

size_t ds_kms_req_size(enum ds_kms_req which)
{
    return (unsigned)which < DS_KMS_REQ_MAX ? kinds[which].size : 0;
}

int ds_kms_req_decode(enum ds_kms_req which, const json_t *params, bool from_query, void *out,
                      char *msg, size_t msg_size)
{
    if ((unsigned)which >= DS_KMS_REQ_MAX || !out || !msg || msg_size == 0) {
        return -EINVAL;
    }
    const struct req_kind *k = &kinds[which];
    msg[0] = '\0';
    int r = ds_rpc_params_decode(params, from_query, k->fields, k->count, out, msg, msg_size);
    if (r < 0) {
        return r;
    }
    if (k->check) {
        r = k->check(out, msg, msg_size);
        if (r < 0) {
            ds_rpc_params_free(k->fields, k->count, out);
            return r;
        }
    }
    return 0;
}

void ds_kms_req_free(enum ds_kms_req which, void *out)
{
    if ((unsigned)which >= DS_KMS_REQ_MAX || !out) {
        return;
    }
    ds_rpc_params_free(kinds[which].fields, kinds[which].count, out);
}

static bool label_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
}

bool ds_kms_domain_valid(const char *domain)
{
    if (!domain) {
        return false;
    }
    size_t len = strlen(domain);
    if (len == 0 || len > DS_KMS_DOMAIN_MAX) {
        return false;
    }
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && domain[i] != '.') {
            if (!label_char(domain[i])) {
                return false;
            }
            continue;
        }
        size_t n = i - start;
        if (n == 0 || n > DS_KMS_LABEL_MAX || domain[start] == '-' || domain[i - 1] == '-') {
            return false;
        }
        start = i + 1;
    }
    return true;
}
