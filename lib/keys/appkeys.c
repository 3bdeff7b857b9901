/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `.appkeys.json` file (kms-ratls.md §3.8, guest-agent-api.md §4.1): the app's keys as
 * dstack-util hands them to the guest agent. Byte fields are lowercase hex, `key_provider` is an
 * externally tagged object with exactly one of None / Local / Tpm / Kms. One table per
 * provider variant drives both parsing and serialization.
 *
 * Parsing uses jansson and reports the path of the offending field. Secret strings jansson
 * holds are wiped in place before the tree is freed (jansson's lexer copy cannot be reached).
 * Serialization is done by hand into a wiped buffer, in upstream's field order, compact and
 * with serde_json's string escapes, so secrets never pass through jansson on the way out.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dstack/keys.h"

#define JSON_ESCAPE_SIZE 7 /* "\u00XX" + NUL */

enum field_kind { FIELD_STR, FIELD_SECRET_STR, FIELD_HEX };

/* One field of a key_provider variant: where the value goes in struct ds_appkeys. */
struct provider_field {
    const char *name;
    enum field_kind kind;
    size_t ptr_off; /* char * or uint8_t * member */
    size_t len_off; /* size_t member for FIELD_HEX */
};

struct provider_variant {
    const char *tag;
    enum ds_key_provider_kind kind;
    const struct provider_field *fields;
    size_t count;
};

#define F_STR(n, k)                                                                                \
    {                                                                                              \
#n, k, offsetof(struct ds_appkeys, n), 0                                                   \
    }
#define F_HEX(n, ln)                                                                               \
    {                                                                                              \
#n, FIELD_HEX, offsetof(struct ds_appkeys, n), offsetof(struct ds_appkeys, ln)             \
    }

static const struct provider_field fields_none[] = {F_STR(key, FIELD_SECRET_STR)};
static const struct provider_field fields_local[] = {F_STR(key, FIELD_SECRET_STR),
                                                     F_HEX(mr, mr_len)};
static const struct provider_field fields_tpm[] = {F_STR(key, FIELD_SECRET_STR),
                                                   F_HEX(pubkey, pubkey_len)};
static const struct provider_field fields_kms[] = {F_STR(url, FIELD_STR), F_HEX(pubkey, pubkey_len),
                                                   F_STR(tmp_ca_key, FIELD_SECRET_STR),
                                                   F_STR(tmp_ca_cert, FIELD_STR)};

static const struct provider_variant variants[] = {
    {"None", DS_KEY_PROVIDER_NONE, fields_none, DS_ARRAY_SIZE(fields_none)},
    {"Local", DS_KEY_PROVIDER_LOCAL, fields_local, DS_ARRAY_SIZE(fields_local)},
    {"Tpm", DS_KEY_PROVIDER_TPM, fields_tpm, DS_ARRAY_SIZE(fields_tpm)},
    {"Kms", DS_KEY_PROVIDER_KMS, fields_kms, DS_ARRAY_SIZE(fields_kms)},
};

static char **str_member(struct ds_appkeys *k, const struct provider_field *f)
{
    return (char **)((char *)k + f->ptr_off);
}

static uint8_t **bytes_member(struct ds_appkeys *k, const struct provider_field *f)
{
    return (uint8_t **)((char *)k + f->ptr_off);
}

static size_t *len_member(struct ds_appkeys *k, const struct provider_field *f)
{
    return (size_t *)((char *)k + f->len_off);
}

static const char *cstr_member(const struct ds_appkeys *k, const struct provider_field *f)
{
    return *(char *const *)((const char *)k + f->ptr_off);
}

static const uint8_t *cbytes_member(const struct ds_appkeys *k, const struct provider_field *f)
{
    return *(uint8_t *const *)((const char *)k + f->ptr_off);
}

static size_t clen_member(const struct ds_appkeys *k, const struct provider_field *f)
{
    return *(const size_t *)((const char *)k + f->len_off);
}

static const struct provider_variant *variant_of(enum ds_key_provider_kind kind)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(variants); i++) {
        if (variants[i].kind == kind)
            return &variants[i];
    }
    return NULL;
}

void ds_appkeys_done(struct ds_appkeys *k)
{
    if (!k)
        return;
    free(k->gateway_app_id);
    free(k->ca_cert);
    ds_keys_free_secret(k->key);
    free(k->mr);
    free(k->pubkey);
    free(k->url);
    ds_keys_free_secret(k->tmp_ca_key);
    free(k->tmp_ca_cert);
    ds_wipe(k, sizeof(*k));
}

/* ---- parsing ----------------------------------------------------------------------------------
 */

static int fail(struct ds_keys_error *err, const char *what, const char *msg)
{
    if (err) {
        snprintf(err->what, sizeof(err->what), "%s", what);
        snprintf(err->msg, sizeof(err->msg), "%s: %s", what, msg);
    }
    return -DS_E_FORMAT;
}

/* The string value of obj[name] (NUL-free), or an error naming path. */
static int get_str(json_t *obj, const char *name, const char *path, const char **out,
                   size_t *out_len, struct ds_keys_error *err)
{
    json_t *v = json_object_get(obj, name);
    if (!v)
        return fail(err, path, "missing field");
    if (!json_is_string(v))
        return fail(err, path, "expected a string");
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (strlen(s) != len)
        return fail(err, path, "string contains NUL");
    *out = s;
    *out_len = len;
    return 0;
}

/* Wipe a secret string jansson owns, just before the tree is released. */
static void wipe_json_str(json_t *obj, const char *name)
{
    json_t *v = json_object_get(obj, name);
    if (json_is_string(v))
        ds_wipe((char *)json_string_value(v), json_string_length(v));
}

static int dup_str(const char *s, size_t len, char **out)
{
    char *p = malloc(len + 1);
    if (!p)
        return -ENOMEM;
    memcpy(p, s, len);
    p[len] = '\0';
    *out = p;
    return 0;
}

/*
 * Hex field into a fixed buffer; the decoded length must be one of sizes[0..nsizes).
 * An empty string decodes to length 0.
 */
static int get_hex_fixed(json_t *obj, const char *name, bool optional, uint8_t *buf,
                         const size_t *sizes, size_t nsizes, size_t *out_len,
                         struct ds_keys_error *err)
{
    const char *s;
    size_t len;
    uint8_t *bytes = NULL;
    size_t n = 0;
    int ret;

    if (optional && !json_object_get(obj, name)) {
        *out_len = 0;
        return 0;
    }
    DS_TRY(get_str(obj, name, name, &s, &len, err));
    ret = ds_hex_decode_alloc(s, len, DS_APPKEYS_BYTES_MAX, &bytes, &n);
    if (ret == -ENOMEM)
        return ret;
    if (ret < 0)
        return fail(err, name, ret == -DS_E_LIMIT ? "too long" : "invalid hex");
    bool ok = false;
    for (size_t i = 0; i < nsizes && !ok; i++)
        ok = n == sizes[i];
    if (ok) {
        memcpy(buf, bytes, n);
        *out_len = n;
        ret = 0;
    } else {
        ret = fail(err, name, "wrong length");
    }
    if (bytes) {
        ds_wipe(bytes, n);
        free(bytes);
    }
    return ret;
}

static int parse_provider(json_t *root, struct ds_appkeys *k, struct ds_keys_error *err)
{
    char path[DS_KEYS_ERR_WHAT_MAX];
    json_t *kp = json_object_get(root, "key_provider");
    const struct provider_variant *var = NULL;
    const char *tag, *given = "";
    json_t *body;

    if (!kp)
        return fail(err, "key_provider", "missing field");
    if (!json_is_object(kp))
        return fail(err, "key_provider", "expected an object");
    if (json_object_size(kp) != 1)
        return fail(err, "key_provider", "expected exactly one of None, Local, Tpm, Kms");
    json_object_foreach(kp, tag, body)
    {
        given = tag;
        for (size_t i = 0; i < DS_ARRAY_SIZE(variants); i++) {
            if (strcmp(tag, variants[i].tag) == 0)
                var = &variants[i];
        }
    }
    if (!var) {
        snprintf(path, sizeof(path), "key_provider.%s", given);
        return fail(err, path, "unknown variant (expected None, Local, Tpm or Kms)");
    }
    body = json_object_get(kp, var->tag);
    snprintf(path, sizeof(path), "key_provider.%s", var->tag);
    if (!json_is_object(body))
        return fail(err, path, "expected an object");
    k->provider = var->kind;
    for (size_t i = 0; i < var->count; i++) {
        const struct provider_field *f = &var->fields[i];
        const char *s;
        size_t len;
        snprintf(path, sizeof(path), "key_provider.%s.%s", var->tag, f->name);
        DS_TRY(get_str(body, f->name, path, &s, &len, err));
        if (f->kind == FIELD_HEX) {
            uint8_t *bytes = NULL;
            size_t n = 0;
            int ret = ds_hex_decode_alloc(s, len, DS_APPKEYS_BYTES_MAX, &bytes, &n);
            if (ret == -ENOMEM)
                return ret;
            if (ret < 0)
                return fail(err, path, ret == -DS_E_LIMIT ? "too long" : "invalid hex");
            *bytes_member(k, f) = bytes;
            *len_member(k, f) = n;
        } else {
            if (len == 0 && f->kind == FIELD_SECRET_STR)
                return fail(err, path, "empty key");
            DS_TRY(dup_str(s, len, str_member(k, f)));
        }
    }
    return 0;
}

static void wipe_provider_secrets(json_t *root)
{
    json_t *kp = json_object_get(root, "key_provider");
    const char *tag;
    json_t *body;
    if (!json_is_object(kp))
        return;
    json_object_foreach(kp, tag, body)
    {
        if (!json_is_object(body))
            continue;
        wipe_json_str(body, "key");
        wipe_json_str(body, "tmp_ca_key");
    }
}

int ds_appkeys_parse(const char *json, size_t len, struct ds_appkeys *out,
                     struct ds_keys_error *err)
{
    static const size_t size_key[] = {DS_KEY_SIZE};
    static const size_t size_opt_key[] = {0, DS_KEY_SIZE};
    static const size_t size_opt_sig[] = {0, DS_K256_SIG_SIZE};
    struct ds_appkeys k;
    json_error_t jerr;
    json_t *root = NULL;
    const char *s;
    size_t slen;
    int ret;

    if (!json || !out)
        return -EINVAL;
    memset(&k, 0, sizeof(k));
    if (len > DS_APPKEYS_FILE_MAX) {
        if (err) {
            snprintf(err->what, sizeof(err->what), "%s", "");
            snprintf(err->msg, sizeof(err->msg), "keys file larger than %d bytes",
                     DS_APPKEYS_FILE_MAX);
        }
        ret = -DS_E_LIMIT;
        goto out;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        if (err) {
            snprintf(err->what, sizeof(err->what), "%s", "");
            snprintf(err->msg, sizeof(err->msg), "invalid JSON at line %d column %d: %.80s",
                     jerr.line, jerr.column, jerr.text);
        }
        ret = -DS_E_FORMAT;
        goto out;
    }
    if (!json_is_object(root)) {
        ret = fail(err, "(root)", "expected an object");
        goto out;
    }
    ret = get_hex_fixed(root, "disk_crypt_key", false, k.disk_crypt_key, size_key, 1,
                        &k.disk_crypt_key_len, err);
    if (ret < 0)
        goto out;
    ret = get_hex_fixed(root, "env_crypt_key", true, k.env_crypt_key, size_opt_key, 2,
                        &k.env_crypt_key_len, err);
    if (ret < 0)
        goto out;
    size_t k256_len = 0;
    ret = get_hex_fixed(root, "k256_key", false, k.k256_key, size_key, 1, &k256_len, err);
    if (ret < 0)
        goto out;
    ret = get_hex_fixed(root, "k256_signature", false, k.k256_signature, size_opt_sig, 2,
                        &k.k256_signature_len, err);
    if (ret < 0)
        goto out;
    ret = get_str(root, "gateway_app_id", "gateway_app_id", &s, &slen, err);
    if (ret < 0)
        goto out;
    ret = dup_str(s, slen, &k.gateway_app_id);
    if (ret < 0)
        goto out;
    ret = get_str(root, "ca_cert", "ca_cert", &s, &slen, err);
    if (ret < 0)
        goto out;
    ret = dup_str(s, slen, &k.ca_cert);
    if (ret < 0)
        goto out;
    ret = parse_provider(root, &k, err);
    if (ret < 0)
        goto out;
    memcpy(out, &k, sizeof(k));
    memset(&k, 0, sizeof(k));
    ret = 0;
out:
    if (root) {
        wipe_json_str(root, "disk_crypt_key");
        wipe_json_str(root, "env_crypt_key");
        wipe_json_str(root, "k256_key");
        wipe_provider_secrets(root);
        json_decref(root);
    }
    ds_appkeys_done(&k);
    return ret;
}

int ds_appkeys_load(const char *path, struct ds_appkeys *out, struct ds_keys_error *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int ret;
    if (!path || !out)
        return -EINVAL;
    ret = ds_read_file(path, DS_APPKEYS_FILE_MAX, &data, &len);
    if (ret < 0) {
        if (err) {
            snprintf(err->what, sizeof(err->what), "%s", "");
            snprintf(err->msg, sizeof(err->msg), "cannot read keys file: %s", ds_strerror(ret));
        }
        return ret;
    }
    ret = ds_appkeys_parse((const char *)data, len, out, err);
    ds_wipe(data, len);
    free(data);
    return ret;
}

/* ---- serialization ------------------------------------------------------------------------------
 */

/* A JSON string literal with serde_json's escapes (short forms, else \u00xx). */
static int put_json_str(struct ds_buf *b, const char *s, size_t len)
{
    DS_TRY(ds_buf_u8(b, '"'));
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[JSON_ESCAPE_SIZE];
        const char *e = NULL;
        switch (c) {
        case '"':
            e = "\\\"";
            break;
        case '\\':
            e = "\\\\";
            break;
        case '\b':
            e = "\\b";
            break;
        case '\f':
            e = "\\f";
            break;
        case '\n':
            e = "\\n";
            break;
        case '\r':
            e = "\\r";
            break;
        case '\t':
            e = "\\t";
            break;
        default:
            if (c < 0x20) {
                snprintf(esc, sizeof(esc), "\\u%04x", c);
                e = esc;
            }
            break;
        }
        if (e)
            DS_TRY(ds_buf_append_str(b, e));
        else
            DS_TRY(ds_buf_u8(b, c));
    }
    return ds_buf_u8(b, '"');
}

static int put_key(struct ds_buf *b, const char *name, bool first)
{
    if (!first)
        DS_TRY(ds_buf_u8(b, ','));
    DS_TRY(put_json_str(b, name, strlen(name)));
    return ds_buf_u8(b, ':');
}

static int put_hex(struct ds_buf *b, const uint8_t *p, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    DS_TRY(ds_buf_u8(b, '"'));
    for (size_t i = 0; i < n; i++) {
        DS_TRY(ds_buf_u8(b, (uint8_t)digits[p[i] >> 4]));
        DS_TRY(ds_buf_u8(b, (uint8_t)digits[p[i] & 0xf]));
    }
    return ds_buf_u8(b, '"');
}

static int put_field_str(struct ds_buf *b, const char *name, const char *v, bool first)
{
    DS_TRY(put_key(b, name, first));
    return put_json_str(b, v, strlen(v));
}

static int put_field_hex(struct ds_buf *b, const char *name, const uint8_t *p, size_t n, bool first)
{
    DS_TRY(put_key(b, name, first));
    return put_hex(b, p, n);
}

static int serialize(const struct ds_appkeys *k, const struct provider_variant *var,
                     struct ds_buf *b)
{
    DS_TRY(ds_buf_u8(b, '{'));
    DS_TRY(put_field_hex(b, "disk_crypt_key", k->disk_crypt_key, k->disk_crypt_key_len, true));
    DS_TRY(put_field_hex(b, "env_crypt_key", k->env_crypt_key, k->env_crypt_key_len, false));
    DS_TRY(put_field_hex(b, "k256_key", k->k256_key, DS_KEY_SIZE, false));
    DS_TRY(put_field_hex(b, "k256_signature", k->k256_signature, k->k256_signature_len, false));
    DS_TRY(put_field_str(b, "gateway_app_id", k->gateway_app_id, false));
    DS_TRY(put_field_str(b, "ca_cert", k->ca_cert, false));
    DS_TRY(put_key(b, "key_provider", false));
    DS_TRY(ds_buf_u8(b, '{'));
    DS_TRY(put_key(b, var->tag, true));
    DS_TRY(ds_buf_u8(b, '{'));
    for (size_t i = 0; i < var->count; i++) {
        const struct provider_field *f = &var->fields[i];
        if (f->kind == FIELD_HEX)
            DS_TRY(put_field_hex(b, f->name, cbytes_member(k, f), clen_member(k, f), i == 0));
        else
            DS_TRY(put_field_str(b, f->name, cstr_member(k, f), i == 0));
    }
    return ds_buf_append_str(b, "}}}");
}

int ds_appkeys_serialize(const struct ds_appkeys *k, char **out_json, size_t *out_len)
{
    const struct provider_variant *var;
    struct ds_buf b;
    uint8_t *data;
    size_t len;
    int ret;

    if (!k || !out_json)
        return -EINVAL;
    var = variant_of(k->provider);
    if (!var || !k->gateway_app_id || !k->ca_cert || k->disk_crypt_key_len != DS_KEY_SIZE ||
        (k->env_crypt_key_len != 0 && k->env_crypt_key_len != DS_KEY_SIZE) ||
        (k->k256_signature_len != 0 && k->k256_signature_len != DS_K256_SIG_SIZE))
        return -EINVAL;
    for (size_t i = 0; i < var->count; i++) {
        const struct provider_field *f = &var->fields[i];
        if (f->kind == FIELD_HEX) {
            if (!cbytes_member(k, f) && clen_member(k, f))
                return -EINVAL;
        } else if (!cstr_member(k, f)) {
            return -EINVAL;
        }
    }
    ds_buf_init(&b, 2 * DS_APPKEYS_FILE_MAX);
    b.secret = true;
    ret = serialize(k, var, &b);
    if (ret < 0)
        goto out;
    ds_buf_steal(&b, &data, &len);
    *out_json = (char *)data;
    if (out_len)
        *out_len = len;
    ret = 0;
out:
    ds_buf_done(&b);
    return ret;
}

int ds_appkeys_save(const char *path, const struct ds_appkeys *k)
{
    char *json = NULL;
    size_t len = 0;
    int ret;
    if (!path)
        return -EINVAL;
    ret = ds_appkeys_serialize(k, &json, &len);
    if (ret < 0)
        return ret;
    ret = ds_write_file_atomic(path, json, len, 0600);
    ds_keys_free_secret(json);
    return ret;
}
