/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack-client calls: one function per DstackGuest method (GetKey, GetTlsKey, GetQuote,
 * Attest, Info, EmitEvent, Sign, Verify, Version), each building the JSON request the
 * official SDKs send (spec guest-agent-api.md §3.1), checking the answer's shape and
 * converting hex fields to bytes. Client-side checks mirror @phala/dstack-sdk 0.5.8: report
 * data over 64 bytes and pre-hashed input that is not 32 bytes are refused before sending,
 * and non-secp256k1 algorithms / new TLS options first probe Version.
 */
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"

#define PREHASHED_DIGEST_SIZE 32
#define KEY_SIZE              32
#define EVENT_LOG_IMR_COUNT   4

static void bytes_wipe_free(struct dstack_bytes *b)
{
    if (b->data != NULL) {
        OPENSSL_cleanse(b->data, b->len);
        free(b->data);
    }
    b->data = NULL;
    b->len = 0;
}

void dstack_bytes_free(struct dstack_bytes *bytes)
{
    if (bytes == NULL) {
        return;
    }
    free(bytes->data);
    bytes->data = NULL;
    bytes->len = 0;
}

static void bytes_array_free(struct dstack_bytes *arr, size_t count)
{
    if (arr == NULL) {
        return;
    }
    for (size_t i = 0; i < count; i++) {
        free(arr[i].data);
    }
    free(arr);
}

/* A hex string field of obj decoded into *out. */
static int get_hex(struct dstack_client *c, json_t *obj, const char *key, struct dstack_bytes *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        return client_fail(c, DSTACK_ERR_PROTOCOL, "answer has no string field \"%s\"", key);
    }
    int r = client_hex_decode(json_string_value(v), out);
    if (r < 0) {
        return client_fail(c, r, "field \"%s\" is not hex", key);
    }
    return 0;
}

/* A string field of obj, copied; a missing field is "" when optional. */
static int get_str(struct dstack_client *c, json_t *obj, const char *key, bool optional, char **out)
{
    json_t *v = json_object_get(obj, key);
    const char *s;
    if (json_is_string(v)) {
        s = json_string_value(v);
    } else if (v == NULL && optional) {
        s = "";
    } else {
        return client_fail(c, DSTACK_ERR_PROTOCOL, "answer has no string field \"%s\"", key);
    }
    char *d = strdup(s);
    if (d == NULL) {
        return client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
    }
    *out = d;
    return 0;
}

/* An array of hex strings decoded into a new array. */
static int get_hex_array(struct dstack_client *c, json_t *obj, const char *key,
                         struct dstack_bytes **out, size_t *out_count)
{
    json_t *arr = json_object_get(obj, key);
    if (!json_is_array(arr)) {
        return client_fail(c, DSTACK_ERR_PROTOCOL, "answer has no array field \"%s\"", key);
    }
    size_t n = json_array_size(arr);
    struct dstack_bytes *items = calloc(n + 1, sizeof(*items));
    if (items == NULL) {
        return client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(arr, i);
        int r = json_is_string(v) ? client_hex_decode(json_string_value(v), &items[i])
                                  : DSTACK_ERR_PROTOCOL;
        if (r < 0) {
            bytes_array_free(items, i);
            return client_fail(c, r, "entry %zu of \"%s\" is not hex", i, key);
        }
    }
    *out = items;
    *out_count = n;
    return 0;
}

/* Set a hex-encoded bytes field in a request object. */
static int set_hex(struct dstack_client *c, json_t *obj, const char *key, const void *data,
                   size_t len)
{
    char *h = client_hex_encode(data, len);
    if (h == NULL || json_object_set_new(obj, key, json_string(h)) != 0) {
        free(h);
        return client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
    }
    free(h);
    return 0;
}

static int set_str(struct dstack_client *c, json_t *obj, const char *key, const char *value)
{
    if (json_object_set_new(obj, key, json_string(value)) != 0) {
        return client_fail(c, DSTACK_ERR_NOMEM, "cannot encode \"%s\" (not UTF-8?)", key);
    }
    return 0;
}

static bool is_secp256k1_alg(const char *alg)
{
    return strcmp(alg, "secp256k1") == 0 || strcmp(alg, "k256") == 0 || alg[0] == '\0';
}

/* The official SDKs call Version before a feature that old agents lack (spec §3.1). */
static int ensure_version(struct dstack_client *c, const char *what)
{
    struct dstack_version_result *v = NULL;
    int r = dstack_version(c, &v);
    dstack_version_result_free(v);
    if (r < 0) {
        return client_fail(c, DSTACK_ERR_UNSUPPORTED,
                           "%s is not supported: OS version too old (Version RPC unavailable)",
                           what);
    }
    return 0;
}

/* ---- GetKey ------------------------------------------------------------------------------ */

void dstack_key_result_free(struct dstack_key_result *result)
{
    if (result == NULL) {
        return;
    }
    bytes_wipe_free(&result->key);
    bytes_array_free(result->signature_chain, result->signature_chain_count);
    free(result);
}

int dstack_get_key(struct dstack_client *client, const char *path, const char *purpose,
                   const char *algorithm, struct dstack_key_result **out)
{
    struct dstack_key_result *res = NULL;
    json_t *req = NULL, *resp = NULL;
    int r;

    if (client == NULL || out == NULL) {
        return DSTACK_ERR_ARG;
    }
    path = path != NULL ? path : "";
    purpose = purpose != NULL ? purpose : "";
    algorithm = algorithm != NULL ? algorithm : "secp256k1";
    if (!is_secp256k1_alg(algorithm)) {
        r = ensure_version(client, "this algorithm");
        if (r < 0) {
            goto out;
        }
    }
    req = json_object();
    if (req == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = set_str(client, req, "path", path)) < 0 ||
        (r = set_str(client, req, "purpose", purpose)) < 0 ||
        (r = set_str(client, req, "algorithm", algorithm)) < 0) {
        goto out;
    }
    r = client_call(client, "GetKey", req, 0, &resp);
    if (r < 0) {
        goto out;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = get_hex(client, resp, "key", &res->key)) < 0 ||
        (r = get_hex_array(client, resp, "signature_chain", &res->signature_chain,
                           &res->signature_chain_count)) < 0) {
        goto out;
    }
    if (res->key.len != KEY_SIZE) {
        r = client_fail(client, DSTACK_ERR_PROTOCOL, "GetKey: key is %zu bytes, not 32",
                        res->key.len);
        goto out;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    dstack_key_result_free(res);
    json_decref(req);
    json_decref(resp);
    return r;
}

/* ---- GetTlsKey ---------------------------------------------------------------------------- */

void dstack_tls_key_result_free(struct dstack_tls_key_result *result)
{
    if (result == NULL) {
        return;
    }
    if (result->key != NULL) {
        OPENSSL_cleanse(result->key, strlen(result->key));
        free(result->key);
    }
    for (size_t i = 0; i < result->certificate_chain_count; i++) {
        free(result->certificate_chain[i]);
    }
    free(result->certificate_chain);
    free(result);
}

int dstack_get_tls_key(struct dstack_client *client, const struct dstack_tls_key_options *opts,
                       struct dstack_tls_key_result **out)
{
    static const struct dstack_tls_key_options defaults = DSTACK_TLS_KEY_OPTIONS_INIT;
    struct dstack_tls_key_result *res = NULL;
    json_t *req = NULL, *resp = NULL, *names = NULL;
    int r;

    if (client == NULL || out == NULL) {
        return DSTACK_ERR_ARG;
    }
    opts = opts != NULL ? opts : &defaults;
    if (opts->alt_names_count > 0 && opts->alt_names == NULL) {
        return client_fail(client, DSTACK_ERR_ARG, "alt_names is NULL");
    }
    if (opts->has_not_before || opts->has_not_after || opts->with_app_info) {
        r = ensure_version(client, "TLS key options [notBefore, notAfter, withAppInfo]");
        if (r < 0) {
            goto out;
        }
    }
    req = json_object();
    if (req == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = set_str(client, req, "subject", opts->subject != NULL ? opts->subject : "")) < 0) {
        goto out;
    }
    if (json_object_set_new(req, "usage_ra_tls", json_boolean(opts->usage_ra_tls)) != 0 ||
        json_object_set_new(req, "usage_server_auth", json_boolean(opts->usage_server_auth)) != 0 ||
        json_object_set_new(req, "usage_client_auth", json_boolean(opts->usage_client_auth)) != 0 ||
        (opts->has_not_before &&
         json_object_set_new(req, "not_before", json_integer((json_int_t)opts->not_before)) != 0) ||
        (opts->has_not_after &&
         json_object_set_new(req, "not_after", json_integer((json_int_t)opts->not_after)) != 0) ||
        (opts->with_app_info && json_object_set_new(req, "with_app_info", json_true()) != 0)) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if (opts->alt_names_count > 0) {
        names = json_array();
        if (names == NULL) {
            r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < opts->alt_names_count; i++) {
            if (opts->alt_names[i] == NULL ||
                json_array_append_new(names, json_string(opts->alt_names[i])) != 0) {
                r = client_fail(client, DSTACK_ERR_ARG, "alt_names[%zu] is NULL or not UTF-8", i);
                goto out;
            }
        }
        if (json_object_set(req, "alt_names", names) != 0) {
            r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    r = client_call(client, "GetTlsKey", req, 0, &resp);
    if (r < 0) {
        goto out;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = get_str(client, resp, "key", false, &res->key)) < 0) {
        goto out;
    }
    json_t *chain = json_object_get(resp, "certificate_chain");
    if (!json_is_array(chain)) {
        r = client_fail(client, DSTACK_ERR_PROTOCOL, "GetTlsKey: no certificate_chain");
        goto out;
    }
    size_t n = json_array_size(chain);
    res->certificate_chain = calloc(n + 1, sizeof(char *));
    if (res->certificate_chain == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(chain, i);
        if (!json_is_string(v)) {
            r = client_fail(client, DSTACK_ERR_PROTOCOL, "certificate %zu is not a string", i);
            goto out;
        }
        res->certificate_chain[i] = strdup(json_string_value(v));
        if (res->certificate_chain[i] == NULL) {
            r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
            goto out;
        }
        res->certificate_chain_count = i + 1;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    dstack_tls_key_result_free(res);
    json_decref(names);
    json_decref(req);
    json_decref(resp);
    return r;
}

/* ---- GetQuote / Attest -------------------------------------------------------------------- */

void dstack_quote_result_free(struct dstack_quote_result *result)
{
    if (result == NULL) {
        return;
    }
    free(result->quote.data);
    free(result->event_log);
    free(result->vm_config);
    free(result->attestation.data);
    free(result);
}

static int report_data_request(struct dstack_client *c, const void *report_data, size_t len,
                               json_t **out_req)
{
    if (len > DSTACK_REPORT_DATA_MAX) {
        return client_fail(c, DSTACK_ERR_TOO_LONG,
                           "report data is %zu bytes, at most %d are allowed", len,
                           DSTACK_REPORT_DATA_MAX);
    }
    if (len > 0 && report_data == NULL) {
        return client_fail(c, DSTACK_ERR_ARG, "report_data is NULL");
    }
    json_t *req = json_object();
    if (req == NULL) {
        return client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
    }
    int r = set_hex(c, req, "report_data", report_data, len);
    if (r < 0) {
        json_decref(req);
        return r;
    }
    *out_req = req;
    return 0;
}

int dstack_get_quote(struct dstack_client *client, const void *report_data, size_t len,
                     struct dstack_quote_result **out)
{
    struct dstack_quote_result *res = NULL;
    struct dstack_bytes rd = {0};
    json_t *req = NULL, *resp = NULL;
    int r;

    if (client == NULL || out == NULL) {
        return DSTACK_ERR_ARG;
    }
    r = report_data_request(client, report_data, len, &req);
    if (r < 0) {
        goto out;
    }
    r = client_call(client, "GetQuote", req, 0, &resp);
    if (r < 0) {
        goto out;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = get_hex(client, resp, "quote", &res->quote)) < 0 ||
        (r = get_str(client, resp, "event_log", false, &res->event_log)) < 0 ||
        (r = get_str(client, resp, "vm_config", true, &res->vm_config)) < 0) {
        goto out;
    }
    if (json_object_get(resp, "attestation") != NULL &&
        (r = get_hex(client, resp, "attestation", &res->attestation)) < 0) {
        goto out;
    }
    if (json_object_get(resp, "report_data") != NULL) {
        if ((r = get_hex(client, resp, "report_data", &rd)) < 0) {
            goto out;
        }
        if (rd.len != DSTACK_REPORT_DATA_MAX) {
            r = client_fail(client, DSTACK_ERR_PROTOCOL, "report_data is %zu bytes", rd.len);
            goto out;
        }
        memcpy(res->report_data, rd.data, DSTACK_REPORT_DATA_MAX);
    } else {
        /* Agents before 0.5 do not echo it: it is the request, zero-padded. */
        if (len > 0) {
            memcpy(res->report_data, report_data, len);
        }
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    dstack_quote_result_free(res);
    free(rd.data);
    json_decref(req);
    json_decref(resp);
    return r;
}

int dstack_quote_replay_rtmrs(const struct dstack_quote_result *quote,
                              uint8_t out_rtmrs[4][DSTACK_RTMR_SIZE])
{
    uint8_t mr[EVENT_LOG_IMR_COUNT][DSTACK_RTMR_SIZE] = {{0}};
    json_t *log = NULL;
    struct dstack_bytes digest = {0};
    int r;

    if (quote == NULL || quote->event_log == NULL || out_rtmrs == NULL) {
        return DSTACK_ERR_ARG;
    }
    log = json_loads(quote->event_log, 0, NULL);
    if (!json_is_array(log)) {
        r = DSTACK_ERR_PROTOCOL;
        goto out;
    }
    for (size_t i = 0; i < json_array_size(log); i++) {
        json_t *e = json_array_get(log, i);
        json_t *imr = json_object_get(e, "imr");
        json_t *d = json_object_get(e, "digest");
        if (!json_is_integer(imr) || !json_is_string(d)) {
            r = DSTACK_ERR_PROTOCOL;
            goto out;
        }
        json_int_t idx = json_integer_value(imr);
        if (idx < 0 || idx >= EVENT_LOG_IMR_COUNT) {
            continue; /* the JS SDK replays imr 0..3 only */
        }
        r = client_hex_decode(json_string_value(d), &digest);
        if (r < 0) {
            goto out;
        }
        if (digest.len > DSTACK_RTMR_SIZE) {
            r = DSTACK_ERR_PROTOCOL;
            goto out;
        }
        uint8_t buf[2 * DSTACK_RTMR_SIZE] = {0};
        memcpy(buf, mr[idx], DSTACK_RTMR_SIZE);
        memcpy(buf + DSTACK_RTMR_SIZE, digest.data, digest.len);
        unsigned int outlen = 0;
        if (EVP_Digest(buf, sizeof(buf), mr[idx], &outlen, EVP_sha384(), NULL) != 1) {
            r = DSTACK_ERR_NOMEM;
            goto out;
        }
        dstack_bytes_free(&digest);
    }
    memcpy(out_rtmrs, mr, sizeof(mr));
    r = 0;
out:
    dstack_bytes_free(&digest);
    json_decref(log);
    return r;
}

int dstack_attest(struct dstack_client *client, const void *report_data, size_t len,
                  struct dstack_bytes *out_attestation)
{
    json_t *req = NULL, *resp = NULL;
    struct dstack_bytes att = {0};
    int r;

    if (client == NULL || out_attestation == NULL) {
        return DSTACK_ERR_ARG;
    }
    r = report_data_request(client, report_data, len, &req);
    if (r < 0) {
        goto out;
    }
    r = client_call(client, "Attest", req, 0, &resp);
    if (r < 0) {
        goto out;
    }
    r = get_hex(client, resp, "attestation", &att);
    if (r < 0) {
        goto out;
    }
    *out_attestation = att;
    att.data = NULL;
    r = 0;
out:
    free(att.data);
    json_decref(req);
    json_decref(resp);
    return r;
}

/* ---- Info ---------------------------------------------------------------------------------- */

void dstack_info_result_free(struct dstack_info_result *result)
{
    if (result == NULL) {
        return;
    }
    char **fields[] = {
        &result->app_id,        &result->instance_id,   &result->app_cert,
        &result->tcb_info,      &result->app_name,      &result->device_id,
        &result->mr_aggregated, &result->os_image_hash, &result->key_provider_info,
        &result->compose_hash,  &result->vm_config,     &result->cloud_vendor,
        &result->cloud_product,
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        free(*fields[i]);
    }
    free(result);
}

int dstack_info(struct dstack_client *client, struct dstack_info_result **out)
{
    struct dstack_info_result *res = NULL;
    json_t *resp = NULL;
    int r;

    if (client == NULL || out == NULL) {
        return DSTACK_ERR_ARG;
    }
    r = client_call(client, "Info", NULL, 0, &resp);
    if (r < 0) {
        goto out;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* Required by every SDK: app_id, instance_id, tcb_info; the rest is optional (older OS). */
    const struct {
        const char *key;
        char **dst;
        bool optional;
    } fields[] = {
        {"app_id", &res->app_id, false},
        {"instance_id", &res->instance_id, false},
        {"app_cert", &res->app_cert, true},
        {"tcb_info", &res->tcb_info, false},
        {"app_name", &res->app_name, true},
        {"device_id", &res->device_id, true},
        {"mr_aggregated", &res->mr_aggregated, true},
        {"os_image_hash", &res->os_image_hash, true},
        {"key_provider_info", &res->key_provider_info, true},
        {"compose_hash", &res->compose_hash, true},
        {"vm_config", &res->vm_config, true},
        {"cloud_vendor", &res->cloud_vendor, true},
        {"cloud_product", &res->cloud_product, true},
    };
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        r = get_str(client, resp, fields[i].key, fields[i].optional, fields[i].dst);
        if (r < 0) {
            goto out;
        }
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    dstack_info_result_free(res);
    json_decref(resp);
    return r;
}

/* ---- EmitEvent ------------------------------------------------------------------------------ */

int dstack_emit_event(struct dstack_client *client, const char *event, const void *payload,
                      size_t len)
{
    json_t *req = NULL, *resp = NULL;
    int r;

    if (client == NULL) {
        return DSTACK_ERR_ARG;
    }
    if (event == NULL || event[0] == '\0') {
        return client_fail(client, DSTACK_ERR_ARG, "event name cannot be empty");
    }
    if (len > 0 && payload == NULL) {
        return client_fail(client, DSTACK_ERR_ARG, "payload is NULL");
    }
    req = json_object();
    if (req == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = set_str(client, req, "event", event)) < 0 ||
        (r = set_hex(client, req, "payload", payload, len)) < 0) {
        goto out;
    }
    r = client_call(client, "EmitEvent", req, 0, &resp);
out:
    json_decref(req);
    json_decref(resp);
    return r;
}

/* ---- Sign / Verify -------------------------------------------------------------------------- */

void dstack_sign_result_free(struct dstack_sign_result *result)
{
    if (result == NULL) {
        return;
    }
    free(result->signature.data);
    free(result->public_key.data);
    bytes_array_free(result->signature_chain, result->signature_chain_count);
    free(result);
}

int dstack_sign(struct dstack_client *client, const char *algorithm, const void *data, size_t len,
                struct dstack_sign_result **out)
{
    struct dstack_sign_result *res = NULL;
    json_t *req = NULL, *resp = NULL;
    int r;

    if (client == NULL || algorithm == NULL || out == NULL || (len > 0 && data == NULL)) {
        return DSTACK_ERR_ARG;
    }
    if (strcmp(algorithm, "secp256k1_prehashed") == 0 && len != PREHASHED_DIGEST_SIZE) {
        return client_fail(client, DSTACK_ERR_ARG,
                           "Pre-hashed signing requires a 32-byte digest, but received %zu bytes",
                           len);
    }
    req = json_object();
    if (req == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = set_str(client, req, "algorithm", algorithm)) < 0 ||
        (r = set_hex(client, req, "data", data, len)) < 0) {
        goto out;
    }
    r = client_call(client, "Sign", req, 0, &resp);
    if (r < 0) {
        goto out;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = get_hex(client, resp, "signature", &res->signature)) < 0 ||
        (r = get_hex(client, resp, "public_key", &res->public_key)) < 0 ||
        (r = get_hex_array(client, resp, "signature_chain", &res->signature_chain,
                           &res->signature_chain_count)) < 0) {
        goto out;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    dstack_sign_result_free(res);
    json_decref(req);
    json_decref(resp);
    return r;
}

int dstack_verify(struct dstack_client *client, const char *algorithm, const void *data, size_t len,
                  const void *signature, size_t signature_len, const void *public_key,
                  size_t public_key_len, bool *out_valid)
{
    json_t *req = NULL, *resp = NULL;
    int r;

    if (client == NULL || algorithm == NULL || out_valid == NULL || (len > 0 && data == NULL) ||
        (signature_len > 0 && signature == NULL) || (public_key_len > 0 && public_key == NULL)) {
        return DSTACK_ERR_ARG;
    }
    req = json_object();
    if (req == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = set_str(client, req, "algorithm", algorithm)) < 0 ||
        (r = set_hex(client, req, "data", data, len)) < 0 ||
        (r = set_hex(client, req, "signature", signature, signature_len)) < 0 ||
        (r = set_hex(client, req, "public_key", public_key, public_key_len)) < 0) {
        goto out;
    }
    r = client_call(client, "Verify", req, 0, &resp);
    if (r < 0) {
        goto out;
    }
    json_t *v = json_object_get(resp, "valid");
    if (!json_is_boolean(v)) {
        r = client_fail(client, DSTACK_ERR_PROTOCOL, "Verify: no boolean \"valid\"");
        goto out;
    }
    *out_valid = json_is_true(v);
    r = 0;
out:
    json_decref(req);
    json_decref(resp);
    return r;
}

/* ---- Version / reachability ----------------------------------------------------------------- */

void dstack_version_result_free(struct dstack_version_result *result)
{
    if (result == NULL) {
        return;
    }
    free(result->version);
    free(result->rev);
    free(result);
}

int dstack_version(struct dstack_client *client, struct dstack_version_result **out)
{
    struct dstack_version_result *res = NULL;
    json_t *resp = NULL;
    int r;

    if (client == NULL || out == NULL) {
        return DSTACK_ERR_ARG;
    }
    r = client_call(client, "Version", NULL, 0, &resp);
    if (r < 0) {
        goto out;
    }
    res = calloc(1, sizeof(*res));
    if (res == NULL) {
        r = client_fail(client, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    if ((r = get_str(client, resp, "version", false, &res->version)) < 0 ||
        (r = get_str(client, resp, "rev", true, &res->rev)) < 0) {
        goto out;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    dstack_version_result_free(res);
    json_decref(resp);
    return r;
}

bool dstack_is_reachable(struct dstack_client *client)
{
    json_t *resp = NULL;
    if (client == NULL) {
        return false;
    }
    int r = client_call(client, "Info", NULL, DSTACK_REACHABLE_TIMEOUT_MS, &resp);
    json_decref(resp);
    return r == 0;
}
