/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Request decoding for every agent method: one field table per request message (proto field
 * names, spec guest-agent-api.md §3) drives the serde-compatible JSON rules of §2.4 and the
 * GET query form of §2.6 (where every value arrives as a string). The fuzz harness
 * tests/fuzz/fuzz_agent_requests.c feeds bodies through exactly these functions.
 */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

enum field_type { F_STR, F_BYTES, F_BOOL, F_U64_OPT, F_STR_LIST };

struct field {
    const char *name;
    enum field_type type;
    size_t offset;     /* of the value in struct agent_req */
    size_t has_offset; /* F_U64_OPT: offset of its has_ flag */
};

#define STR(n)                                                                                     \
    {                                                                                              \
#n, F_STR, offsetof(struct agent_req, n), 0                                                \
    }
#define BYTES(n)                                                                                   \
    {                                                                                              \
#n, F_BYTES, offsetof(struct agent_req, n), 0                                              \
    }
#define BOOL(n)                                                                                    \
    {                                                                                              \
#n, F_BOOL, offsetof(struct agent_req, n), 0                                               \
    }
#define STRLIST(n)                                                                                 \
    {                                                                                              \
#n, F_STR_LIST, offsetof(struct agent_req, n), 0                                           \
    }
#define U64OPT(n)                                                                                  \
    {                                                                                              \
#n, F_U64_OPT, offsetof(struct agent_req, n), offsetof(struct agent_req, has_##n)          \
    }

static const struct field f_get_key[] = {STR(path), STR(purpose), STR(algorithm)};
static const struct field f_tls_key[] = {
    STR(subject),
    STRLIST(alt_names),
    BOOL(usage_ra_tls),
    BOOL(usage_server_auth),
    BOOL(usage_client_auth),
    U64OPT(not_before),
    U64OPT(not_after),
    BOOL(with_app_info),
};
static const struct field f_derive[] = {
    STR(path),
    STR(subject),
    STRLIST(alt_names),
    BOOL(usage_ra_tls),
    BOOL(usage_server_auth),
    BOOL(usage_client_auth),
    BOOL(random_seed),
};
static const struct field f_quote[] = {BYTES(report_data)};
static const struct field f_tdx_quote[] = {BYTES(report_data), STR(hash_algorithm), STR(prefix)};
static const struct field f_sign[] = {STR(algorithm), BYTES(data)};
static const struct field f_verify[] = {STR(algorithm), BYTES(data), BYTES(signature),
                                        BYTES(public_key)};
static const struct field f_emit[] = {STR(event), BYTES(payload)};
static const struct field f_app_key[] = {STR(algorithm)};

static const struct {
    const struct field *fields;
    size_t count;
} tables[AGENT_REQ_KIND_MAX] = {
    [AGENT_REQ_GET_KEY] = {f_get_key, DS_ARRAY_SIZE(f_get_key)},
    [AGENT_REQ_TLS_KEY] = {f_tls_key, DS_ARRAY_SIZE(f_tls_key)},
    [AGENT_REQ_DERIVE] = {f_derive, DS_ARRAY_SIZE(f_derive)},
    [AGENT_REQ_QUOTE] = {f_quote, DS_ARRAY_SIZE(f_quote)},
    [AGENT_REQ_TDX_QUOTE] = {f_tdx_quote, DS_ARRAY_SIZE(f_tdx_quote)},
    [AGENT_REQ_SIGN] = {f_sign, DS_ARRAY_SIZE(f_sign)},
    [AGENT_REQ_VERIFY] = {f_verify, DS_ARRAY_SIZE(f_verify)},
    [AGENT_REQ_EMIT_EVENT] = {f_emit, DS_ARRAY_SIZE(f_emit)},
    [AGENT_REQ_APP_KEY] = {f_app_key, DS_ARRAY_SIZE(f_app_key)},
};

static int fail(char *err, size_t err_size, int code, const char *field, const char *what)
{
    if (err && err_size) {
        snprintf(err, err_size, "failed to decode request: field `%s`: %s", field, what);
    }
    return code;
}

static int dup_string(const json_t *v, char **out)
{
    size_t n = json_string_length(v);
    if (n > AGENT_STR_MAX) {
        return -DS_E_LIMIT;
    }
    if (memchr(json_string_value(v), '\0', n)) {
        return -DS_E_FORMAT; /* an embedded NUL would silently truncate paths and names */
    }
    char *s = malloc(n + 1);
    if (!s) {
        return -ENOMEM;
    }
    memcpy(s, json_string_value(v), n + 1);
    *out = s;
    return 0;
}

/* Hex bytes: any number of leading "0x" removed, either case, even length (§2.4). */
static int decode_hex(const json_t *v, struct agent_bytes *out)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    while (n >= 2 && s[0] == '0' && s[1] == 'x') {
        s += 2;
        n -= 2;
    }
    if (n % 2 != 0) {
        return -DS_E_FORMAT;
    }
    if (n / 2 > AGENT_BYTES_MAX) {
        return -DS_E_LIMIT;
    }
    if (n == 0) {
        out->data = NULL;
        out->len = 0;
        return 0;
    }
    return ds_hex_decode_alloc(s, n, AGENT_BYTES_MAX, &out->data, &out->len);
}

static int decode_bool(const json_t *v, bool from_query, bool *out)
{
    if (json_is_boolean(v)) {
        *out = json_is_true(v);
        return 0;
    }
    if (from_query && json_is_string(v)) {
        if (strcmp(json_string_value(v), "true") == 0) {
            *out = true;
            return 0;
        }
        if (strcmp(json_string_value(v), "false") == 0) {
            *out = false;
            return 0;
        }
    }
    return -DS_E_FORMAT;
}

static int decode_u64(const json_t *v, bool from_query, uint64_t *out)
{
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) {
            return -DS_E_FORMAT;
        }
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (from_query && json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (n == 0 || n > 20 || strspn(s, "0123456789") != n) {
            return -DS_E_FORMAT;
        }
        errno = 0;
        unsigned long long x = strtoull(s, NULL, 10);
        if (errno == ERANGE) {
            return -DS_E_FORMAT;
        }
        *out = (uint64_t)x;
        return 0;
    }
    return -DS_E_FORMAT;
}

static int decode_list(const json_t *v, struct agent_strlist *out)
{
    if (!json_is_array(v)) {
        return -DS_E_FORMAT;
    }
    size_t n = json_array_size(v);
    if (n > AGENT_LIST_MAX) {
        return -DS_E_LIMIT;
    }
    if (n == 0) {
        return 0;
    }
    out->items = calloc(n, sizeof(char *));
    if (!out->items) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        if (!json_is_string(e)) {
            return -DS_E_FORMAT;
        }
        DS_TRY(dup_string(e, &out->items[i]));
        out->count = i + 1;
    }
    return 0;
}

static const char *type_name(enum field_type t)
{
    switch (t) {
    case F_STR:
        return "expected a string";
    case F_BYTES:
        return "expected a hex string";
    case F_BOOL:
        return "expected a boolean";
    case F_U64_OPT:
        return "expected an unsigned integer or null";
    case F_STR_LIST:
        return "expected a list of strings";
    }
    return "invalid value";
}

static int decode_field(const struct field *f, const json_t *v, bool from_query,
                        struct agent_req *out)
{
    uint8_t *base = (uint8_t *)out;
    if (json_is_null(v)) {
        /* null only means "absent" for optional integers (§2.4). */
        return f->type == F_U64_OPT ? 0 : -DS_E_FORMAT;
    }
    switch (f->type) {
    case F_STR:
        if (!json_is_string(v)) {
            return -DS_E_FORMAT;
        }
        return dup_string(v, (char **)(base + f->offset));
    case F_BYTES:
        if (!json_is_string(v)) {
            return -DS_E_FORMAT;
        }
        return decode_hex(v, (struct agent_bytes *)(base + f->offset));
    case F_BOOL:
        return decode_bool(v, from_query, (bool *)(base + f->offset));
    case F_U64_OPT:
        DS_TRY(decode_u64(v, from_query, (uint64_t *)(base + f->offset)));
        *(bool *)(base + f->has_offset) = true;
        return 0;
    case F_STR_LIST:
        return decode_list(v, (struct agent_strlist *)(base + f->offset));
    }
    return -DS_E_FORMAT;
}

int agent_req_decode(enum agent_req_kind kind, const json_t *params, bool from_query,
                     struct agent_req *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof(*out));
    if (kind < 0 || kind >= AGENT_REQ_KIND_MAX) {
        return -EINVAL;
    }
    if (params && !json_is_object(params)) {
        if (err && err_size) {
            snprintf(err, err_size, "failed to decode request: expected a JSON object");
        }
        return -DS_E_FORMAT;
    }
    for (size_t i = 0; i < tables[kind].count; i++) {
        const struct field *f = &tables[kind].fields[i];
        const json_t *v = params ? json_object_get(params, f->name) : NULL;
        if (!v) {
            continue;
        }
        int r = decode_field(f, v, from_query, out);
        if (r == -ENOMEM) {
            return r;
        }
        if (r == -DS_E_LIMIT) {
            return fail(err, err_size, r, f->name, "value too large");
        }
        if (r < 0) {
            if (f->type == F_BYTES && json_is_string(v)) {
                return fail(err, err_size, -DS_E_FORMAT, f->name, "invalid hex string");
            }
            return fail(err, err_size, -DS_E_FORMAT, f->name, type_name(f->type));
        }
    }
    return 0;
}

static void bytes_done(struct agent_bytes *b, bool secret)
{
    if (b->data && secret) {
        ds_wipe(b->data, b->len);
    }
    free(b->data);
    b->data = NULL;
    b->len = 0;
}

void agent_req_done(struct agent_req *r)
{
    if (!r) {
        return;
    }
    free(r->path);
    free(r->purpose);
    free(r->algorithm);
    free(r->subject);
    free(r->event);
    free(r->hash_algorithm);
    free(r->prefix);
    for (size_t i = 0; i < r->alt_names.count; i++) {
        free(r->alt_names.items[i]);
    }
    free(r->alt_names.items);
    bytes_done(&r->report_data, false);
    bytes_done(&r->data, true); /* Sign data may be a secret the app hashes itself */
    bytes_done(&r->signature, false);
    bytes_done(&r->public_key, false);
    bytes_done(&r->payload, false);
    memset(r, 0, sizeof(*r));
}
