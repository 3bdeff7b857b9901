/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The JSON layouts app-compose.json is written in (spec host-side.md §1.12, §2.2):
 * - Python `json.dumps(value, indent=4, ensure_ascii=False)` as vmm-cli.py writes the file:
 *   insertion order, "key": value, items joined by ",\n", empty containers as {} / [], floats
 *   in Python repr (shortest round trip; scientific outside 1e-4 <= |x| < 1e16).
 * - the SDKs' getComposeHash normalisation: JS JSON.stringify of the recursively key-sorted
 *   value. Keys sort by UTF-16 code units, but a JS object enumerates array-index keys first
 *   (numerically), and assigning "__proto__" does not create a property, so both quirks are
 *   reproduced. Numbers are doubles printed by Number::toString.
 * Both escape strings alike for valid Unicode: \" \\ \b \f \n \r \t, other controls \u00xx,
 * everything else raw UTF-8 (ds_json_append_string(), shared with the runtime-event JCS).
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compose/compose_internal.h"
#include "dstack/crypto.h"

#define DBL_DIGITS_MAX 17 /* shortest round trip of an IEEE double never needs more */
#define NUM_TEXT_MAX   64
#define INDENT_WIDTH   4
#define JS_INDEX_MAX   4294967294ULL /* largest array index (2^32 - 2) */

void compose_set_err(struct ds_compose_error *err, const char *field, const char *fmt, ...)
{
    if (err == NULL) {
        return;
    }
    snprintf(err->field, sizeof(err->field), "%s", field ? field : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
}

bool compose_utf8_valid(const char *str, size_t len)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n > len - i - 1) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (s[i + k] & 0x3f);
        }
        if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

int compose_json_load(const void *json, size_t len, bool ints_as_real, bool reject_dups,
                      json_t **out, struct ds_compose_error *err)
{
    if (json == NULL && len > 0) {
        return -EINVAL;
    }
    if (len > DS_COMPOSE_FILE_MAX) {
        compose_set_err(err, "", "JSON text of %zu bytes exceeds the %u-byte limit", len,
                        DS_COMPOSE_FILE_MAX);
        return -DS_E_LIMIT;
    }
    size_t flags = JSON_DECODE_ANY | JSON_ALLOW_NUL;
    if (ints_as_real) {
        flags |= JSON_DECODE_INT_AS_REAL;
    }
    if (reject_dups) {
        flags |= JSON_REJECT_DUPLICATES;
    }
    json_error_t jerr;
    json_t *v = json_loadb(json ? json : "", len, flags, &jerr);
    if (v == NULL) {
        compose_set_err(err, "", "invalid JSON at line %d column %d: %s", jerr.line, jerr.column,
                        jerr.text);
        return -DS_E_FORMAT;
    }
    *out = v;
    return 0;
}

int compose_dump_string(const char *s, size_t len, struct ds_buf *b)
{
    return ds_json_append_string(b, s, len);
}

/*
 * Shortest decimal digits that read back as v (v finite, non-zero, positive): digits into
 * dig (NUL-terminated, no trailing zeros) and the decimal point position n, so that
 * v = 0.d1d2d3... * 10^n.
 */
static void shortest_digits(double v, char dig[DBL_DIGITS_MAX + 1], int *n)
{
    char text[NUM_TEXT_MAX];
    for (int p = 1; p <= DBL_DIGITS_MAX; p++) {
        snprintf(text, sizeof(text), "%.*e", p - 1, v);
        if (strtod(text, NULL) == v || p == DBL_DIGITS_MAX) {
            break;
        }
    }
    /* text is d[.ddd]e[+-]XX */
    size_t k = 0;
    const char *t = text;
    for (; *t != 'e' && *t != '\0'; t++) {
        if (*t >= '0' && *t <= '9' && k < DBL_DIGITS_MAX) {
            dig[k++] = *t;
        }
    }
    while (k > 1 && dig[k - 1] == '0') {
        k--;
    }
    dig[k] = '\0';
    int e = (*t == 'e') ? atoi(t + 1) : 0;
    *n = e + 1;
}

static int append_zeros(struct ds_buf *b, int count)
{
    for (int i = 0; i < count; i++) {
        DS_TRY(ds_buf_u8(b, '0'));
    }
    return 0;
}

static int append_exponent(struct ds_buf *b, const char *dig, int e, bool python)
{
    DS_TRY(ds_buf_u8(b, (uint8_t)dig[0]));
    if (dig[1] != '\0') {
        DS_TRY(ds_buf_u8(b, '.'));
        DS_TRY(ds_buf_append_str(b, dig + 1));
    }
    if (python) {
        return ds_buf_printf(b, "e%c%02d", e < 0 ? '-' : '+', abs(e));
    }
    return ds_buf_printf(b, "e%c%d", e < 0 ? '-' : '+', abs(e));
}

/* JS Number::toString (ECMA-262 Number::toString, radix 10). */
static int dump_js_number(double v, struct ds_buf *b)
{
    if (!isfinite(v)) {
        return ds_buf_append_str(b, "null"); /* the SDK's replacer maps NaN/Inf to null */
    }
    if (v == 0) {
        return ds_buf_u8(b, '0'); /* -0 prints as 0 */
    }
    if (v < 0) {
        DS_TRY(ds_buf_u8(b, '-'));
        v = -v;
    }
    char dig[DBL_DIGITS_MAX + 1];
    int n;
    shortest_digits(v, dig, &n);
    int k = (int)strlen(dig);
    if (k <= n && n <= 21) {
        DS_TRY(ds_buf_append_str(b, dig));
        return append_zeros(b, n - k);
    }
    if (0 < n && n <= 21) {
        DS_TRY(ds_buf_append(b, dig, (size_t)n));
        DS_TRY(ds_buf_u8(b, '.'));
        return ds_buf_append_str(b, dig + n);
    }
    if (-6 < n && n <= 0) {
        DS_TRY(ds_buf_append_str(b, "0."));
        DS_TRY(append_zeros(b, -n));
        return ds_buf_append_str(b, dig);
    }
    return append_exponent(b, dig, n - 1, false);
}

/* Python float.__repr__ ('r' format: scientific when the exponent is < -4 or >= 16). */
static int dump_python_float(double v, struct ds_buf *b)
{
    if (isnan(v)) {
        return ds_buf_append_str(b, "NaN");
    }
    if (isinf(v)) {
        return ds_buf_append_str(b, v < 0 ? "-Infinity" : "Infinity");
    }
    if (signbit(v)) {
        DS_TRY(ds_buf_u8(b, '-'));
        v = -v;
    }
    if (v == 0) {
        return ds_buf_append_str(b, "0.0");
    }
    char dig[DBL_DIGITS_MAX + 1];
    int n;
    shortest_digits(v, dig, &n);
    int k = (int)strlen(dig);
    if (n > -4 && n <= 16) {
        if (n <= 0) {
            DS_TRY(ds_buf_append_str(b, "0."));
            DS_TRY(append_zeros(b, -n));
            return ds_buf_append_str(b, dig);
        }
        if (n >= k) {
            DS_TRY(ds_buf_append_str(b, dig));
            DS_TRY(append_zeros(b, n - k));
            return ds_buf_append_str(b, ".0");
        }
        DS_TRY(ds_buf_append(b, dig, (size_t)n));
        DS_TRY(ds_buf_u8(b, '.'));
        return ds_buf_append_str(b, dig + n);
    }
    return append_exponent(b, dig, n - 1, true);
}

static int dump_indent(struct ds_buf *b, int level)
{
    DS_TRY(ds_buf_u8(b, '\n'));
    for (int i = 0; i < level * INDENT_WIDTH; i++) {
        DS_TRY(ds_buf_u8(b, ' '));
    }
    return 0;
}

static int dump_python_at(const json_t *v, struct ds_buf *b, int level)
{
    if (level > DS_COMPOSE_JSON_DEPTH) {
        return -DS_E_LIMIT;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        if (json_object_size(v) == 0) {
            return ds_buf_append_str(b, "{}");
        }
        DS_TRY(ds_buf_u8(b, '{'));
        const char *key;
        const json_t *val;
        bool first = true;
        json_object_foreach((json_t *)v, key, val)
        {
            if (!first) {
                DS_TRY(ds_buf_u8(b, ','));
            }
            first = false;
            DS_TRY(dump_indent(b, level + 1));
            DS_TRY(compose_dump_string(key, strlen(key), b));
            DS_TRY(ds_buf_append_str(b, ": "));
            DS_TRY(dump_python_at(val, b, level + 1));
        }
        DS_TRY(dump_indent(b, level));
        return ds_buf_u8(b, '}');
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(v);
        if (n == 0) {
            return ds_buf_append_str(b, "[]");
        }
        DS_TRY(ds_buf_u8(b, '['));
        for (size_t i = 0; i < n; i++) {
            if (i > 0) {
                DS_TRY(ds_buf_u8(b, ','));
            }
            DS_TRY(dump_indent(b, level + 1));
            DS_TRY(dump_python_at(json_array_get(v, i), b, level + 1));
        }
        DS_TRY(dump_indent(b, level));
        return ds_buf_u8(b, ']');
    }
    case JSON_STRING:
        return compose_dump_string(json_string_value(v), json_string_length(v), b);
    case JSON_INTEGER:
        return ds_buf_printf(b, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    case JSON_REAL:
        return dump_python_float(json_real_value(v), b);
    case JSON_TRUE:
        return ds_buf_append_str(b, "true");
    case JSON_FALSE:
        return ds_buf_append_str(b, "false");
    case JSON_NULL:
        return ds_buf_append_str(b, "null");
    }
    return -EINVAL;
}

int compose_dump_python(const json_t *v, struct ds_buf *b)
{
    return dump_python_at(v, b, 0);
}

/* Next UTF-16 code unit of a UTF-8 string (valid input): *pending holds a low surrogate. */
static unsigned next_utf16(const unsigned char **p, unsigned *pending)
{
    if (*pending != 0) {
        unsigned u = *pending;
        *pending = 0;
        return u;
    }
    const unsigned char *s = *p;
    uint32_t cp;
    if (s[0] < 0x80) {
        cp = s[0];
        *p += 1;
    } else if (s[0] < 0xe0) {
        cp = ((uint32_t)(s[0] & 0x1f) << 6) | (s[1] & 0x3f);
        *p += 2;
    } else if (s[0] < 0xf0) {
        cp = ((uint32_t)(s[0] & 0x0f) << 12) | ((uint32_t)(s[1] & 0x3f) << 6) | (s[2] & 0x3f);
        *p += 3;
    } else {
        cp = ((uint32_t)(s[0] & 0x07) << 18) | ((uint32_t)(s[1] & 0x3f) << 12) |
             ((uint32_t)(s[2] & 0x3f) << 6) | (s[3] & 0x3f);
        *p += 4;
    }
    if (cp >= 0x10000) {
        cp -= 0x10000;
        *pending = 0xdc00 | (cp & 0x3ff);
        return 0xd800 | (cp >> 10);
    }
    return cp;
}

/* JS default Array.prototype.sort order for strings: UTF-16 code units. */
static int cmp_utf16(const char *a, const char *b)
{
    const unsigned char *pa = (const unsigned char *)a;
    const unsigned char *pb = (const unsigned char *)b;
    unsigned qa = 0, qb = 0;
    for (;;) {
        bool ea = (*pa == '\0' && qa == 0);
        bool eb = (*pb == '\0' && qb == 0);
        if (ea || eb) {
            return ea && eb ? 0 : (ea ? -1 : 1);
        }
        unsigned ua = next_utf16(&pa, &qa);
        unsigned ub = next_utf16(&pb, &qb);
        if (ua != ub) {
            return ua < ub ? -1 : 1;
        }
    }
}

/* A canonical array index ("0", or no leading zero, value <= 2^32 - 2). */
static bool js_array_index(const char *k, unsigned long long *out)
{
    size_t len = strlen(k);
    if (len == 0 || len > 10 || (len > 1 && k[0] == '0')) {
        return false;
    }
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (k[i] < '0' || k[i] > '9') {
            return false;
        }
        v = v * 10 + (unsigned)(k[i] - '0');
    }
    if (v > JS_INDEX_MAX) {
        return false;
    }
    *out = v;
    return true;
}

/* Enumeration order of an object built by inserting keys in sorted order. */
static int cmp_js_keys(const void *pa, const void *pb)
{
    const char *a = *(const char *const *)pa;
    const char *b = *(const char *const *)pb;
    unsigned long long ia, ib;
    bool xa = js_array_index(a, &ia);
    bool xb = js_array_index(b, &ib);
    if (xa && xb) {
        return ia < ib ? -1 : (ia > ib ? 1 : 0);
    }
    if (xa != xb) {
        return xa ? -1 : 1;
    }
    return cmp_utf16(a, b);
}

static int dump_sdk_at(const json_t *v, struct ds_buf *b, int level)
{
    if (level > DS_COMPOSE_JSON_DEPTH) {
        return -DS_E_LIMIT;
    }
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        size_t n = json_object_size(v);
        const char **keys = calloc(n ? n : 1, sizeof(*keys));
        if (keys == NULL) {
            return -ENOMEM;
        }
        size_t k = 0;
        const char *key;
        const json_t *val;
        json_object_foreach((json_t *)v, key, val)
        {
            if (strcmp(key, "__proto__") != 0) {
                keys[k++] = key;
            }
        }
        qsort(keys, k, sizeof(*keys), cmp_js_keys);
        int rc = ds_buf_u8(b, '{');
        for (size_t i = 0; rc == 0 && i < k; i++) {
            if (i > 0) {
                rc = ds_buf_u8(b, ',');
            }
            if (rc == 0) {
                rc = compose_dump_string(keys[i], strlen(keys[i]), b);
            }
            if (rc == 0) {
                rc = ds_buf_u8(b, ':');
            }
            if (rc == 0) {
                rc = dump_sdk_at(json_object_get(v, keys[i]), b, level + 1);
            }
        }
        free(keys);
        DS_TRY(rc);
        return ds_buf_u8(b, '}');
    }
    case JSON_ARRAY: {
        DS_TRY(ds_buf_u8(b, '['));
        for (size_t i = 0; i < json_array_size(v); i++) {
            if (i > 0) {
                DS_TRY(ds_buf_u8(b, ','));
            }
            DS_TRY(dump_sdk_at(json_array_get(v, i), b, level + 1));
        }
        return ds_buf_u8(b, ']');
    }
    case JSON_STRING:
        return compose_dump_string(json_string_value(v), json_string_length(v), b);
    case JSON_INTEGER:
        return dump_js_number((double)json_integer_value(v), b);
    case JSON_REAL:
        return dump_js_number(json_real_value(v), b);
    case JSON_TRUE:
        return ds_buf_append_str(b, "true");
    case JSON_FALSE:
        return ds_buf_append_str(b, "false");
    case JSON_NULL:
        return ds_buf_append_str(b, "null");
    }
    return -EINVAL;
}

int compose_dump_sdk(const json_t *v, struct ds_buf *b)
{
    return dump_sdk_at(v, b, 0);
}

/* A JS-falsy value (pre_launch_script is dropped when falsy). */
static bool js_falsy(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_STRING:
        return json_string_length(v) == 0;
    case JSON_INTEGER:
        return json_integer_value(v) == 0;
    case JSON_REAL:
        return json_real_value(v) == 0 || isnan(json_real_value(v));
    case JSON_FALSE:
    case JSON_NULL:
        return true;
    default:
        return false;
    }
}

/*
 * A top-level string under preprocessing: JS `{ ...str }` makes an object of its UTF-16 code
 * units keyed "0", "1", ...; a lone surrogate half prints as a \udXXX escape.
 */
static int dump_sdk_spread_string(const json_t *v, struct ds_buf *b)
{
    const unsigned char *p = (const unsigned char *)json_string_value(v);
    const unsigned char *end = p + json_string_length(v);
    unsigned pending = 0;
    size_t i = 0;
    DS_TRY(ds_buf_u8(b, '{'));
    while (p < end || pending != 0) {
        const unsigned char *start = p;
        unsigned u = next_utf16(&p, &pending);
        DS_TRY(ds_buf_printf(b, "%s\"%zu\":", i > 0 ? "," : "", i));
        if (u >= 0xd800 && u <= 0xdfff) {
            DS_TRY(ds_buf_printf(b, "\"\\u%04x\"", u));
        } else {
            DS_TRY(compose_dump_string((const char *)start, (size_t)(p - start), b));
        }
        i++;
    }
    return ds_buf_u8(b, '}');
}

/*
 * getComposeHash(..., normalize = true)'s preprocessAppCompose. It starts with `{ ...dic }`:
 * an array becomes an object keyed by index, a scalar other than a string an empty object
 * (strings are handled by dump_sdk_spread_string). Returns 0 or -ENOMEM; *v may be replaced.
 */
static int sdk_preprocess(json_t **v)
{
    json_t *obj = *v;
    if (json_is_array(obj)) {
        json_t *o = json_object();
        char key[24];
        for (size_t i = 0; o != NULL && i < json_array_size(obj); i++) {
            snprintf(key, sizeof(key), "%zu", i);
            if (json_object_set(o, key, json_array_get(obj, i)) != 0) {
                json_decref(o);
                o = NULL;
            }
        }
        if (o == NULL) {
            return -ENOMEM;
        }
        json_decref(obj);
        *v = obj = o;
    } else if (!json_is_object(obj) && !json_is_string(obj)) {
        json_t *o = json_object();
        if (o == NULL) {
            return -ENOMEM;
        }
        json_decref(obj);
        *v = o;
        return 0;
    }
    if (!json_is_object(obj)) {
        return 0;
    }
    const char *runner = json_string_value(json_object_get(obj, "runner"));
    if (runner != NULL && strcmp(runner, "bash") == 0) {
        (void)json_object_del(obj, "docker_compose_file");
    } else if (runner != NULL && strcmp(runner, "docker-compose") == 0) {
        (void)json_object_del(obj, "bash_script");
    }
    const json_t *pls = json_object_get(obj, "pre_launch_script");
    if (pls != NULL && js_falsy(pls)) {
        (void)json_object_del(obj, "pre_launch_script");
    }
    return 0;
}

static int finish_buf(struct ds_buf *b, int rc, char **out, size_t *out_len)
{
    if (rc < 0) {
        ds_buf_done(b);
        return rc;
    }
    uint8_t *data;
    size_t len;
    ds_buf_steal(b, &data, &len);
    if (data == NULL) {
        return -ENOMEM;
    }
    *out = (char *)data;
    if (out_len != NULL) {
        *out_len = len;
    }
    return 0;
}

int ds_compose_sdk_normalize(const void *json, size_t len, bool preprocess, char **out,
                             size_t *out_len)
{
    json_t *v = NULL;
    DS_TRY(compose_json_load(json, len, true, false, &v, NULL));
    struct ds_buf b;
    ds_buf_init(&b, DS_COMPOSE_FILE_MAX);
    int rc = preprocess ? sdk_preprocess(&v) : 0;
    if (rc == 0) {
        rc = (preprocess && json_is_string(v)) ? dump_sdk_spread_string(v, &b)
                                               : compose_dump_sdk(v, &b);
    }
    json_decref(v);
    return finish_buf(&b, rc, out, out_len);
}

int ds_compose_sdk_hash(const void *json, size_t len, bool preprocess,
                        uint8_t out[DS_COMPOSE_HASH_SIZE])
{
    char *s = NULL;
    size_t n = 0;
    DS_TRY(ds_compose_sdk_normalize(json, len, preprocess, &s, &n));
    ds_sha256(s, n, out);
    free(s);
    return 0;
}

int ds_compose_python_dump(const void *json, size_t len, char **out, size_t *out_len)
{
    json_t *v = NULL;
    DS_TRY(compose_json_load(json, len, false, false, &v, NULL));
    struct ds_buf b;
    ds_buf_init(&b, DS_COMPOSE_FILE_MAX);
    int rc = compose_dump_python(v, &b);
    json_decref(v);
    return finish_buf(&b, rc, out, out_len);
}
