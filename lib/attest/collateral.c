/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DCAP collateral in its JSON form (dcap-qvl's QuoteCollateralV3, spec §2.1): load, save and
 * free. Loading is strict because the JSON may come from an untrusted cache or peer: every
 * required key must be present with the right JSON type, byte fields must be hex, every field
 * has a size cap, and the error text names the field. Unknown keys are ignored (forward
 * compatibility with newer dcap-qvl versions). tcb_info and qe_identity are kept as the exact
 * bytes of the JSON string value, because Intel's signature covers those bytes.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dstack/attest.h"

/* Caps on decoded field sizes. Real values: chains ~2-4 KiB, PCK CRLs a few KiB, TCB info
 * ~3-5 KiB, signatures 64 bytes; the caps leave ample room without admitting abuse. */
#define COLL_PEM_MAX       (256 * 1024)
#define COLL_CRL_MAX       (1024 * 1024)
#define COLL_SIGNED_MAX    (1024 * 1024)
#define COLL_SIGNATURE_MAX 512

/* The fields, in the order of the JSON form (and of the sample files). */
enum coll_index {
    COLL_PCK_CRL_ISSUER_CHAIN,
    COLL_ROOT_CA_CRL,
    COLL_PCK_CRL,
    COLL_TCB_INFO_ISSUER_CHAIN,
    COLL_TCB_INFO,
    COLL_TCB_INFO_SIGNATURE,
    COLL_QE_IDENTITY_ISSUER_CHAIN,
    COLL_QE_IDENTITY,
    COLL_QE_IDENTITY_SIGNATURE,
    COLL_PCK_CERTIFICATE_CHAIN,
    COLL_FIELD_COUNT
};

enum coll_kind {
    COLL_TEXT, /* JSON string, kept as its exact bytes */
    COLL_HEX,  /* JSON string of hex digits, kept decoded */
};

struct coll_field {
    const char *name;
    enum coll_kind kind;
    bool optional;
    size_t max; /* bytes after decoding */
};

static const struct coll_field coll_fields[COLL_FIELD_COUNT] = {
    [COLL_PCK_CRL_ISSUER_CHAIN] = {"pck_crl_issuer_chain", COLL_TEXT, false, COLL_PEM_MAX},
    [COLL_ROOT_CA_CRL] = {"root_ca_crl", COLL_HEX, false, COLL_CRL_MAX},
    [COLL_PCK_CRL] = {"pck_crl", COLL_HEX, false, COLL_CRL_MAX},
    [COLL_TCB_INFO_ISSUER_CHAIN] = {"tcb_info_issuer_chain", COLL_TEXT, false, COLL_PEM_MAX},
    [COLL_TCB_INFO] = {"tcb_info", COLL_TEXT, false, COLL_SIGNED_MAX},
    [COLL_TCB_INFO_SIGNATURE] = {"tcb_info_signature", COLL_HEX, false, COLL_SIGNATURE_MAX},
    [COLL_QE_IDENTITY_ISSUER_CHAIN] = {"qe_identity_issuer_chain", COLL_TEXT, false, COLL_PEM_MAX},
    [COLL_QE_IDENTITY] = {"qe_identity", COLL_TEXT, false, COLL_SIGNED_MAX},
    [COLL_QE_IDENTITY_SIGNATURE] = {"qe_identity_signature", COLL_HEX, false, COLL_SIGNATURE_MAX},
    [COLL_PCK_CERTIFICATE_CHAIN] = {"pck_certificate_chain", COLL_TEXT, true, COLL_PEM_MAX},
};

/* One field's value while loading or saving: malloc'd bytes (NUL-terminated) or NULL. */
struct coll_value {
    uint8_t *data;
    size_t len;
};

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

void ds_collateral_free(struct ds_collateral *c)
{
    if (!c) {
        return;
    }
    free(c->pck_crl_issuer_chain);
    free(c->root_ca_crl);
    free(c->pck_crl);
    free(c->tcb_info_issuer_chain);
    free(c->tcb_info);
    free(c->tcb_info_signature);
    free(c->qe_identity_issuer_chain);
    free(c->qe_identity);
    free(c->qe_identity_signature);
    free(c->pck_certificate_chain);
    free(c);
}

/* Move the loaded values into the struct (the struct takes ownership). */
static void coll_assign(struct ds_collateral *c, struct coll_value *v)
{
    c->pck_crl_issuer_chain = (char *)v[COLL_PCK_CRL_ISSUER_CHAIN].data;
    c->root_ca_crl = v[COLL_ROOT_CA_CRL].data;
    c->root_ca_crl_len = v[COLL_ROOT_CA_CRL].len;
    c->pck_crl = v[COLL_PCK_CRL].data;
    c->pck_crl_len = v[COLL_PCK_CRL].len;
    c->tcb_info_issuer_chain = (char *)v[COLL_TCB_INFO_ISSUER_CHAIN].data;
    c->tcb_info = (char *)v[COLL_TCB_INFO].data;
    c->tcb_info_len = v[COLL_TCB_INFO].len;
    c->tcb_info_signature = v[COLL_TCB_INFO_SIGNATURE].data;
    c->tcb_info_signature_len = v[COLL_TCB_INFO_SIGNATURE].len;
    c->qe_identity_issuer_chain = (char *)v[COLL_QE_IDENTITY_ISSUER_CHAIN].data;
    c->qe_identity = (char *)v[COLL_QE_IDENTITY].data;
    c->qe_identity_len = v[COLL_QE_IDENTITY].len;
    c->qe_identity_signature = v[COLL_QE_IDENTITY_SIGNATURE].data;
    c->qe_identity_signature_len = v[COLL_QE_IDENTITY_SIGNATURE].len;
    c->pck_certificate_chain = (char *)v[COLL_PCK_CERTIFICATE_CHAIN].data;
    for (size_t i = 0; i < COLL_FIELD_COUNT; i++) {
        v[i].data = NULL;
    }
}

/* Borrowed views of the struct's fields, for saving. PEM fields are C strings. */
static void coll_collect(const struct ds_collateral *c, struct coll_value *v)
{
#define COLL_STR(idx, s) v[idx] = (struct coll_value){(uint8_t *)(s), (s) ? strlen(s) : 0}
    COLL_STR(COLL_PCK_CRL_ISSUER_CHAIN, c->pck_crl_issuer_chain);
    v[COLL_ROOT_CA_CRL] = (struct coll_value){c->root_ca_crl, c->root_ca_crl_len};
    v[COLL_PCK_CRL] = (struct coll_value){c->pck_crl, c->pck_crl_len};
    COLL_STR(COLL_TCB_INFO_ISSUER_CHAIN, c->tcb_info_issuer_chain);
    v[COLL_TCB_INFO] = (struct coll_value){(uint8_t *)c->tcb_info, c->tcb_info_len};
    v[COLL_TCB_INFO_SIGNATURE] =
        (struct coll_value){c->tcb_info_signature, c->tcb_info_signature_len};
    COLL_STR(COLL_QE_IDENTITY_ISSUER_CHAIN, c->qe_identity_issuer_chain);
    v[COLL_QE_IDENTITY] = (struct coll_value){(uint8_t *)c->qe_identity, c->qe_identity_len};
    v[COLL_QE_IDENTITY_SIGNATURE] =
        (struct coll_value){c->qe_identity_signature, c->qe_identity_signature_len};
    COLL_STR(COLL_PCK_CERTIFICATE_CHAIN, c->pck_certificate_chain);
#undef COLL_STR
}

/* Decode one field's JSON value into out (malloc'd, NUL-terminated). */
static int coll_load_field(const struct coll_field *f, json_t *j, struct coll_value *out, char *err,
                           size_t err_size)
{
    if (!json_is_string(j)) {
        set_err(err, err_size, "%s: expected %s", f->name,
                f->kind == COLL_HEX ? "hex string" : "string");
        return -DS_E_FORMAT;
    }
    const char *s = json_string_value(j);
    size_t n = json_string_length(j);
    if (n == 0) {
        set_err(err, err_size, "%s: expected non-empty %s", f->name,
                f->kind == COLL_HEX ? "hex string" : "string");
        return -DS_E_FORMAT;
    }
    if (f->kind == COLL_HEX) {
        int r = ds_hex_decode_alloc(s, n, f->max, &out->data, &out->len);
        if (r == -DS_E_LIMIT) {
            set_err(err, err_size, "%s: longer than %zu bytes", f->name, f->max);
        } else if (r < 0) {
            set_err(err, err_size, "%s: expected hex string", f->name);
        }
        if (r < 0) {
            return r;
        }
        if (out->len == 0) {
            free(out->data);
            out->data = NULL;
            set_err(err, err_size, "%s: expected non-empty hex string", f->name);
            return -DS_E_FORMAT;
        }
        return 0;
    }
    if (n > f->max) {
        set_err(err, err_size, "%s: longer than %zu bytes", f->name, f->max);
        return -DS_E_LIMIT;
    }
    /* PEM fields become C strings, so a NUL inside would silently truncate them. jansson
     * rejects \u0000 unless asked otherwise; check anyway so this never depends on flags. */
    if (memchr(s, 0, n)) {
        set_err(err, err_size, "%s: contains a NUL character", f->name);
        return -DS_E_FORMAT;
    }
    out->data = malloc(n + 1);
    if (!out->data) {
        return -ENOMEM;
    }
    memcpy(out->data, s, n);
    out->data[n] = 0;
    out->len = n;
    return 0;
}

int ds_collateral_from_json(const char *json, size_t len, struct ds_collateral **out, char *err,
                            size_t err_size)
{
    struct coll_value v[COLL_FIELD_COUNT] = {0};
    struct ds_collateral *c = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    int r;

    set_err(err, err_size, "%s", "");
    if (!json || !out) {
        return -EINVAL;
    }
    if (len > DS_COLLATERAL_MAX_JSON) {
        set_err(err, err_size, "collateral JSON is longer than %d bytes", DS_COLLATERAL_MAX_JSON);
        return -DS_E_LIMIT;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        set_err(err, err_size, "collateral is not valid JSON: line %d column %d: %s", jerr.line,
                jerr.column, jerr.text);
        r = -DS_E_FORMAT;
        goto out;
    }
    if (!json_is_object(root)) {
        set_err(err, err_size, "collateral: expected a JSON object");
        r = -DS_E_FORMAT;
        goto out;
    }
    for (size_t i = 0; i < COLL_FIELD_COUNT; i++) {
        const struct coll_field *f = &coll_fields[i];
        json_t *j = json_object_get(root, f->name);
        if (!j || (f->optional && json_is_null(j))) {
            if (f->optional) {
                continue;
            }
            set_err(err, err_size, "%s: missing", f->name);
            r = -DS_E_FORMAT;
            goto out;
        }
        r = coll_load_field(f, j, &v[i], err, err_size);
        if (r < 0) {
            goto out;
        }
    }
    c = calloc(1, sizeof(*c));
    if (!c) {
        r = -ENOMEM;
        goto out;
    }
    coll_assign(c, v);
    *out = c;
    r = 0;
out:
    for (size_t i = 0; i < COLL_FIELD_COUNT; i++) {
        free(v[i].data);
    }
    json_decref(root);
    return r;
}

int ds_collateral_to_json(const struct ds_collateral *c, char **out)
{
    struct coll_value v[COLL_FIELD_COUNT];
    json_t *root = NULL;
    char *s = NULL;
    int r;

    if (!c || !out) {
        return -EINVAL;
    }
    coll_collect(c, v);
    root = json_object();
    if (!root) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < COLL_FIELD_COUNT; i++) {
        const struct coll_field *f = &coll_fields[i];
        json_t *j;
        if (!v[i].data) {
            if (f->optional) {
                continue;
            }
            r = -EINVAL;
            goto out;
        }
        if (f->kind == COLL_HEX) {
            char *hex = ds_hex_strdup(v[i].data, v[i].len);
            if (!hex) {
                r = -ENOMEM;
                goto out;
            }
            j = json_stringn(hex, 2 * v[i].len);
            free(hex);
        } else {
            /* NULL also when the bytes are not valid UTF-8: JSON cannot carry them. */
            j = json_stringn((const char *)v[i].data, v[i].len);
            if (!j) {
                r = -DS_E_FORMAT;
                goto out;
            }
        }
        if (!j || json_object_set_new(root, f->name, j) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    /* Same layout as dcap-qvl's sample files (two-space indent, ASCII, key order kept). */
    s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
    if (!s) {
        r = -ENOMEM;
        goto out;
    }
    *out = s;
    r = 0;
out:
    json_decref(root);
    return r;
}
