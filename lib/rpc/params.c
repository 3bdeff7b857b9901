/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Typed decoding of pRPC params into C structs, driven by a field table, following the serde
 * rules the upstream Rust types apply (spec/guest-agent-api.md §2.4 for JSON bodies, §2.6 for
 * query strings, where every leaf arrives as a string).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/http.h"

static int field_err(char *msg, size_t msg_size, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int field_err(char *msg, size_t msg_size, int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msg_size, fmt, ap);
    va_end(ap);
    return err;
}

static const char *type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "map";
    case JSON_ARRAY:
        return "sequence";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "floating point";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    default:
        return "null";
    }
}

static int wrong_type(const struct ds_rpc_field *f, const json_t *v, const char *expected,
                      char *msg, size_t msg_size)
{
    return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: invalid type: %s, expected %s",
                     f->name, type_name(v), expected);
}

static size_t size_max(const struct ds_rpc_field *f)
{
    return f->max ? f->max : DS_RPC_FIELD_SIZE_MAX;
}

static int dec_string(const struct ds_rpc_field *f, const json_t *v, char **out, char *msg,
                      size_t msg_size)
{
    if (!json_is_string(v)) {
        return wrong_type(f, v, "a string", msg, msg_size);
    }
    size_t n = json_string_length(v);
    if (n > size_max(f)) {
        return field_err(msg, msg_size, -DS_E_LIMIT, "field `%s`: longer than %zu bytes", f->name,
                         size_max(f));
    }
    if (memchr(json_string_value(v), 0, n)) {
        return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: NUL in string", f->name);
    }
    char *s = strdup(json_string_value(v));
    if (!s) {
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

static int dec_bytes(const struct ds_rpc_field *f, const json_t *v, struct ds_rpc_bytes *out,
                     char *msg, size_t msg_size)
{
    if (!json_is_string(v)) {
        return wrong_type(f, v, "a hex string", msg, msg_size);
    }
    const char *hex = json_string_value(v);
    size_t n = json_string_length(v);
    /* serde-hex as prpc uses it: any number of leading "0x" */
    while (n >= 2 && hex[0] == '0' && hex[1] == 'x') {
        hex += 2;
        n -= 2;
    }
    uint8_t *data;
    size_t len;
    int r = ds_hex_decode_alloc(hex, n, size_max(f), &data, &len);
    if (r == -DS_E_LIMIT) {
        return field_err(msg, msg_size, r, "field `%s`: longer than %zu bytes", f->name,
                         size_max(f));
    }
    if (r < 0) {
        return r == -ENOMEM ? r
                            : field_err(msg, msg_size, -DS_E_FORMAT,
                                        "field `%s`: invalid hex string", f->name);
    }
    out->data = data;
    out->len = len;
    return 0;
}

static int dec_u64(const struct ds_rpc_field *f, const json_t *v, bool from_query, uint64_t max,
                   uint64_t *out, char *msg, size_t msg_size)
{
    uint64_t x = 0;
    if (from_query && json_is_string(v)) {
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (n == 0 || n > 20) {
            return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: invalid integer", f->name);
        }
        for (size_t i = 0; i < n; i++) {
            if (s[i] < '0' || s[i] > '9') {
                return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: invalid integer",
                                 f->name);
            }
            uint64_t d = (uint64_t)(s[i] - '0');
            if (x > (UINT64_MAX - d) / 10) {
                return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: integer out of range",
                                 f->name);
            }
            x = x * 10 + d;
        }
    } else if (json_is_integer(v)) {
        json_int_t i = json_integer_value(v);
        if (i < 0) {
            return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: integer out of range",
                             f->name);
        }
        x = (uint64_t)i;
    } else {
        return wrong_type(f, v, "an unsigned integer", msg, msg_size);
    }
    if (x > max) {
        return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: integer out of range", f->name);
    }
    *out = x;
    return 0;
}

static int dec_bool(const struct ds_rpc_field *f, const json_t *v, bool from_query, bool *out,
                    char *msg, size_t msg_size)
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
        return field_err(msg, msg_size, -DS_E_FORMAT, "field `%s`: expected true or false",
                         f->name);
    }
    return wrong_type(f, v, "a boolean", msg, msg_size);
}

/* The items of a list field: a JSON array (also what the query decoder builds). */
static int list_check(const struct ds_rpc_field *f, const json_t *v, char *msg, size_t msg_size)
{
    if (!json_is_array(v)) {
        return wrong_type(f, v, "a sequence", msg, msg_size);
    }
    size_t max = f->max ? f->max : DS_RPC_FIELD_COUNT_MAX;
    if (json_array_size(v) > max) {
        return field_err(msg, msg_size, -DS_E_LIMIT, "field `%s`: more than %zu items", f->name,
                         max);
    }
    return 0;
}

static size_t field_size(enum ds_rpc_field_type t)
{
    switch (t) {
    case DS_RPC_FIELD_STRING:
        return sizeof(char *);
    case DS_RPC_FIELD_BYTES:
        return sizeof(struct ds_rpc_bytes);
    case DS_RPC_FIELD_BOOL:
        return sizeof(bool);
    case DS_RPC_FIELD_U32:
        return sizeof(uint32_t);
    case DS_RPC_FIELD_U64:
        return sizeof(uint64_t);
    case DS_RPC_FIELD_OPT_U64:
        return sizeof(struct ds_rpc_opt_u64);
    case DS_RPC_FIELD_STRINGS:
        return sizeof(struct ds_rpc_strings);
    case DS_RPC_FIELD_BYTES_LIST:
        return sizeof(struct ds_rpc_bytes_list);
    }
    return 0;
}

static void free_field(const struct ds_rpc_field *f, void *out)
{
    uint8_t *p = (uint8_t *)out + f->offset;
    switch (f->type) {
    case DS_RPC_FIELD_STRING:
        free(*(char **)p);
        *(char **)p = NULL;
        break;
    case DS_RPC_FIELD_BYTES: {
        struct ds_rpc_bytes *b = (struct ds_rpc_bytes *)p;
        free(b->data);
        memset(b, 0, sizeof(*b));
        break;
    }
    case DS_RPC_FIELD_STRINGS: {
        struct ds_rpc_strings *l = (struct ds_rpc_strings *)p;
        for (size_t i = 0; l->items && i < l->count; i++) {
            free(l->items[i]);
        }
        free(l->items);
        memset(l, 0, sizeof(*l));
        break;
    }
    case DS_RPC_FIELD_BYTES_LIST: {
        struct ds_rpc_bytes_list *l = (struct ds_rpc_bytes_list *)p;
        for (size_t i = 0; l->items && i < l->count; i++) {
            free(l->items[i].data);
        }
        free(l->items);
        memset(l, 0, sizeof(*l));
        break;
    }
    case DS_RPC_FIELD_BOOL:
        *(bool *)p = false;
        break;
    case DS_RPC_FIELD_U32:
        *(uint32_t *)p = 0;
        break;
    case DS_RPC_FIELD_U64:
        *(uint64_t *)p = 0;
        break;
    case DS_RPC_FIELD_OPT_U64:
        memset(p, 0, sizeof(struct ds_rpc_opt_u64));
        break;
    }
}

void ds_rpc_params_free(const struct ds_rpc_field *fields, size_t count, void *out)
{
    if (!out) {
        return;
    }
    for (size_t i = 0; i < count; i++) {
        free_field(&fields[i], out);
    }
}

static int dec_field(const struct ds_rpc_field *f, const json_t *v, bool from_query, void *out,
                     char *msg, size_t msg_size)
{
    uint8_t *p = (uint8_t *)out + f->offset;
    if (json_is_null(v) && f->type != DS_RPC_FIELD_OPT_U64) {
        return wrong_type(f, v,
                          f->type == DS_RPC_FIELD_STRINGS || f->type == DS_RPC_FIELD_BYTES_LIST
                              ? "a sequence"
                              : "a value",
                          msg, msg_size);
    }
    switch (f->type) {
    case DS_RPC_FIELD_STRING: {
        char *s;
        DS_TRY(dec_string(f, v, &s, msg, msg_size));
        free(*(char **)p);
        *(char **)p = s;
        return 0;
    }
    case DS_RPC_FIELD_BYTES: {
        struct ds_rpc_bytes b;
        DS_TRY(dec_bytes(f, v, &b, msg, msg_size));
        free(((struct ds_rpc_bytes *)p)->data);
        *(struct ds_rpc_bytes *)p = b;
        return 0;
    }
    case DS_RPC_FIELD_BOOL:
        return dec_bool(f, v, from_query, (bool *)p, msg, msg_size);
    case DS_RPC_FIELD_U32: {
        uint64_t x;
        DS_TRY(dec_u64(f, v, from_query, UINT32_MAX, &x, msg, msg_size));
        *(uint32_t *)p = (uint32_t)x;
        return 0;
    }
    case DS_RPC_FIELD_U64:
        return dec_u64(f, v, from_query, UINT64_MAX, (uint64_t *)p, msg, msg_size);
    case DS_RPC_FIELD_OPT_U64: {
        struct ds_rpc_opt_u64 *o = (struct ds_rpc_opt_u64 *)p;
        if (json_is_null(v) || (from_query && json_is_string(v) && json_string_length(v) == 0)) {
            o->present = false;
            o->value = 0;
            return 0;
        }
        DS_TRY(dec_u64(f, v, from_query, UINT64_MAX, &o->value, msg, msg_size));
        o->present = true;
        return 0;
    }
    case DS_RPC_FIELD_STRINGS: {
        DS_TRY(list_check(f, v, msg, msg_size));
        struct ds_rpc_strings *l = (struct ds_rpc_strings *)p;
        size_t n = json_array_size(v);
        char **items = calloc(n ? n : 1, sizeof(*items));
        if (!items) {
            return -ENOMEM;
        }
        free_field(f, out);
        l->items = items;
        for (size_t i = 0; i < n; i++) {
            DS_TRY(dec_string(f, json_array_get(v, i), &items[i], msg, msg_size));
            l->count = i + 1;
        }
        return 0;
    }
    case DS_RPC_FIELD_BYTES_LIST: {
        DS_TRY(list_check(f, v, msg, msg_size));
        struct ds_rpc_bytes_list *l = (struct ds_rpc_bytes_list *)p;
        size_t n = json_array_size(v);
        struct ds_rpc_bytes *items = calloc(n ? n : 1, sizeof(*items));
        if (!items) {
            return -ENOMEM;
        }
        free_field(f, out);
        l->items = items;
        for (size_t i = 0; i < n; i++) {
            DS_TRY(dec_bytes(f, json_array_get(v, i), &items[i], msg, msg_size));
            l->count = i + 1;
        }
        return 0;
    }
    }
    return -EINVAL;
}

int ds_rpc_params_decode(const json_t *params, bool from_query, const struct ds_rpc_field *fields,
                         size_t count, void *out, char *msg, size_t msg_size)
{
    int r = 0;
    if (msg_size > 0) {
        msg[0] = 0;
    }
    /* Defaults first, so that every field is valid and freeable whatever happens next. */
    for (size_t i = 0; i < count; i++) {
        memset((uint8_t *)out + fields[i].offset, 0, field_size(fields[i].type));
    }
    if (!json_is_object(params)) {
        return field_err(msg, msg_size, -DS_E_FORMAT, "invalid type: %s, expected a map",
                         params ? type_name(params) : "null");
    }
    for (size_t i = 0; i < count; i++) {
        const struct ds_rpc_field *f = &fields[i];
        const json_t *v = json_object_get(params, f->name);
        if (v) {
            r = dec_field(f, v, from_query, out, msg, msg_size);
            if (r < 0) {
                goto out;
            }
        }
    }
    /* Absent strings and bytes become "" / empty, never NULL. */
    for (size_t i = 0; i < count; i++) {
        const struct ds_rpc_field *f = &fields[i];
        uint8_t *p = (uint8_t *)out + f->offset;
        if (f->type == DS_RPC_FIELD_STRING && !*(char **)p) {
            *(char **)p = strdup("");
            if (!*(char **)p) {
                r = -ENOMEM;
                goto out;
            }
        } else if (f->type == DS_RPC_FIELD_BYTES && !((struct ds_rpc_bytes *)p)->data) {
            ((struct ds_rpc_bytes *)p)->data = malloc(1);
            if (!((struct ds_rpc_bytes *)p)->data) {
                r = -ENOMEM;
                goto out;
            }
        }
    }
out:
    if (r < 0) {
        if (r == -ENOMEM) {
            snprintf(msg, msg_size, "out of memory");
        }
        ds_rpc_params_free(fields, count, out);
    }
    return r;
}

int ds_rpc_call_decode(struct ds_rpc_call *call, const json_t *params,
                       const struct ds_rpc_field *fields, size_t count, void *out)
{
    char msg[RPC_MSG_MAX];
    int r = ds_rpc_params_decode(params, ds_rpc_call_from_query(call), fields, count, out, msg,
                                 sizeof(msg));
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to decode request: %s", msg);
    }
    return 0;
}
