/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Schema-driven configuration loading (STYLE.md rule 7): a daemon describes its config as one
 * table of {dotted key, type, struct offset, default, limits, help, flags}; this file applies
 * the defaults, reads the TOML document (lib/config/toml.c) into the struct and validates it.
 * Every key in the file must be in the table (unknown keys are errors, with an edit-distance
 * suggestion); values must have the declared type, range and enum value; required keys must be
 * present. The caller's struct is written only when everything succeeded.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/config.h"

#define PATH_TEXT_MAX      512 /* bytes of a dotted key path in messages and matching */
#define SUGGEST_LEN_MAX    128 /* longest key the edit-distance suggestion looks at */
#define SUGGEST_TABLE_SIZE (SUGGEST_LEN_MAX + 1)

struct loader {
    const char *name;
    const char *text; /* NULL when loading defaults only */
    size_t len;
    struct ds_config_err *err;
};

#define NO_POS SIZE_MAX

__attribute__((format(printf, 4, 5))) static int lerr(struct loader *l, size_t off, int code,
                                                      const char *fmt, ...)
{
    struct ds_config_err *e = l->err;
    if (!e) {
        return code;
    }
    int n;
    if (off != NO_POS && l->text) {
        ds_toml_position(l->text, l->len, off, &e->line, &e->col);
        n = snprintf(e->msg, sizeof(e->msg), "%s:%u:%u: ", l->name, e->line, e->col);
    } else {
        e->line = e->col = 0;
        n = snprintf(e->msg, sizeof(e->msg), "%s: ", l->name);
    }
    if (n > 0 && (size_t)n < sizeof(e->msg)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg + n, sizeof(e->msg) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

static void *field(void *base, const struct ds_config_key *k)
{
    return (char *)base + k->offset;
}

static const char *toml_type_name(const struct ds_toml_value *v)
{
    switch (v->type) {
    case DS_TOML_TABLE:
        return "table";
    case DS_TOML_ARRAY:
        return "array";
    case DS_TOML_STRING:
        return "string";
    case DS_TOML_INT:
        return "integer";
    case DS_TOML_FLOAT:
        return "float";
    case DS_TOML_BOOL:
        return "boolean";
    }
    return "value";
}

static const char *expected_name(const struct ds_config_key *k)
{
    switch (k->type) {
    case DS_CFG_STRING:
        return "string";
    case DS_CFG_PATH:
        return "path (string)";
    case DS_CFG_BOOL:
        return "boolean";
    case DS_CFG_INT:
        return "integer";
    case DS_CFG_PORT:
        return "port (integer 0..65535)";
    case DS_CFG_SIZE:
        return "size (integer bytes or a string like \"10MiB\")";
    case DS_CFG_DURATION:
        return "duration (a string like \"30s\", \"2m\", \"500ms\")";
    case DS_CFG_ENUM:
        return "string (one of the allowed values)";
    case DS_CFG_STRINGS:
        return "array of strings";
    case DS_CFG_INTS:
        return "array of integers";
    case DS_CFG_STRMAP:
        return "table of strings";
    case DS_CFG_TABLES:
        return "array of tables";
    }
    return "value";
}

/* ---- freeing --------------------------------------------------------------------------------- */

static void free_string(char **s, bool secret)
{
    if (*s && secret) {
        ds_wipe(*s, strlen(*s));
    }
    free(*s);
    *s = NULL;
}

static void free_strv(struct ds_config_strv *v, bool secret)
{
    for (size_t i = 0; i < v->count; i++) {
        free_string(&v->items[i], secret);
    }
    free(v->items);
    v->items = NULL;
    v->count = 0;
}

static void free_strmap(struct ds_config_strmap *m, bool secret)
{
    for (size_t i = 0; i < m->count; i++) {
        free_string(&m->keys[i], false);
        free_string(&m->values[i], secret);
    }
    free(m->keys);
    free(m->values);
    m->keys = m->values = NULL;
    m->count = 0;
}

static void free_intv(struct ds_config_intv *v)
{
    free(v->items);
    v->items = NULL;
    v->count = 0;
}

static void free_tables(const struct ds_config_schema *sub, struct ds_config_tables *t)
{
    for (size_t i = 0; i < t->count; i++) {
        ds_config_free(sub, (char *)t->items + i * sub->size);
    }
    free(t->items);
    t->items = NULL;
    t->count = 0;
}

void ds_config_free(const struct ds_config_schema *schema, void *cfg)
{
    if (!schema || !cfg) {
        return;
    }
    for (size_t i = 0; i < schema->count; i++) {
        const struct ds_config_key *k = &schema->keys[i];
        bool secret = k->flags & DS_CFG_SECRET;
        switch (k->type) {
        case DS_CFG_STRING:
        case DS_CFG_PATH:
            free_string(field(cfg, k), secret);
            break;
        case DS_CFG_STRINGS:
            free_strv(field(cfg, k), secret);
            break;
        case DS_CFG_INTS:
            free_intv(field(cfg, k));
            break;
        case DS_CFG_STRMAP:
            free_strmap(field(cfg, k), secret);
            break;
        case DS_CFG_TABLES:
            free_tables(k->sub, field(cfg, k));
            break;
        default:
            break;
        }
    }
}

/* ---- range checks ---------------------------------------------------------------------------- */

static bool has_range(const struct ds_config_key *k)
{
    return k->min != 0 || k->max != 0;
}

static int check_int(struct loader *l, const struct ds_config_key *k, const char *path, size_t off,
                     int64_t v)
{
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    if (k->type == DS_CFG_PORT) {
        lo = 0, hi = 65535;
    }
    if (has_range(k)) {
        lo = k->min > lo ? k->min : lo;
        hi = k->max < hi ? k->max : hi;
    }
    if (v < lo || v > hi) {
        return lerr(l, off, -DS_E_FORMAT, "%s: %lld is out of range %lld..%lld", path, (long long)v,
                    (long long)lo, (long long)hi);
    }
    return 0;
}

static int check_u64(struct loader *l, const struct ds_config_key *k, const char *path, size_t off,
                     uint64_t v, const char *unit)
{
    if (!has_range(k)) {
        return 0;
    }
    uint64_t lo = k->min > 0 ? (uint64_t)k->min : 0;
    uint64_t hi = k->max > 0 ? (uint64_t)k->max : UINT64_MAX;
    if (v < lo || v > hi) {
        return lerr(l, off, -DS_E_FORMAT, "%s: %llu%s is out of range %llu..%llu%s", path,
                    (unsigned long long)v, unit, (unsigned long long)lo, (unsigned long long)hi,
                    unit);
    }
    return 0;
}

static int check_strlen(struct loader *l, const struct ds_config_key *k, const char *path,
                        size_t off, size_t len)
{
    if (k->max > 0 && len > (uint64_t)k->max) {
        return lerr(l, off, -DS_E_FORMAT, "%s: string longer than %lld bytes", path,
                    (long long)k->max);
    }
    if (k->min > 0 && len < (uint64_t)k->min) {
        return lerr(l, off, -DS_E_FORMAT, "%s: string shorter than %lld bytes", path,
                    (long long)k->min);
    }
    return 0;
}

static int enum_index(const struct ds_config_key *k, const char *s)
{
    for (int i = 0; k->choices && k->choices[i]; i++) {
        if (strcmp(k->choices[i], s) == 0) {
            return i;
        }
    }
    return -1;
}

static int enum_error(struct loader *l, const struct ds_config_key *k, const char *path, size_t off,
                      const char *s)
{
    char list[256];
    size_t o = 0;
    list[0] = 0;
    for (int i = 0; k->choices && k->choices[i] && o + 1 < sizeof(list); i++) {
        int n = snprintf(list + o, sizeof(list) - o, "%s\"%s\"", i ? ", " : "", k->choices[i]);
        if (n < 0) {
            break;
        }
        o += (size_t)n;
    }
    return lerr(l, off, -DS_E_FORMAT, "%s: \"%.64s\" is not one of %s", path, s, list);
}

/* ---- applying values ------------------------------------------------------------------------- */

static int walk_table(struct loader *l, const struct ds_config_schema *schema, void *base,
                      const struct ds_toml_value *t, char *path, size_t match_start, bool *seen);
static int apply_defaults(struct loader *l, const struct ds_config_schema *schema, void *base);
static int check_required(struct loader *l, const struct ds_config_schema *schema, const bool *seen,
                          const char *display_prefix);

static int dup_string(struct loader *l, const struct ds_config_key *k, const char *path,
                      const struct ds_toml_value *v, char **out)
{
    if (memchr(v->u.str.ptr, 0, v->u.str.len)) {
        return lerr(l, v->off, -DS_E_FORMAT, "%s: string contains a NUL character", path);
    }
    char *s = strdup(v->u.str.ptr);
    if (!s) {
        return lerr(l, v->off, -ENOMEM, "out of memory");
    }
    *out = s;
    return 0;
}

static int apply_tables(struct loader *l, const struct ds_config_key *k, void *fp,
                        const struct ds_toml_value *v, char *path)
{
    const struct ds_config_schema *sub = k->sub;
    struct ds_config_tables nt = {NULL, 0};
    bool *seen = NULL;
    int r = 0;
    size_t plen = strlen(path);
    if (v->u.array.count) {
        nt.items = calloc(v->u.array.count, sub->size);
        seen = calloc(sub->count ? sub->count : 1, sizeof(bool));
        if (!nt.items || !seen) {
            r = lerr(l, v->off, -ENOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < v->u.array.count; i++) {
        const struct ds_toml_value *e = v->u.array.items[i];
        void *elem = (char *)nt.items + i * sub->size;
        nt.count++;
        snprintf(path + plen, PATH_TEXT_MAX - plen, "[%zu]", i);
        if (e->type != DS_TOML_TABLE) {
            r = lerr(l, e->off, -DS_E_FORMAT, "%s: expected table, got %s", path,
                     toml_type_name(e));
            goto out;
        }
        memset(seen, 0, sub->count * sizeof(bool));
        if ((r = apply_defaults(l, sub, elem)) < 0) {
            goto out;
        }
        size_t elen = strlen(path);
        /* messages show "range[0].from"; matching sees "from" */
        if ((r = walk_table(l, sub, elem, e, path, elen + 1, seen)) < 0) {
            goto out;
        }
        path[elen] = 0;
        if ((r = check_required(l, sub, seen, path)) < 0) {
            goto out;
        }
    }
    path[plen] = 0;
    free_tables(sub, fp);
    *(struct ds_config_tables *)fp = nt;
    nt.items = NULL;
    nt.count = 0;
out:
    free_tables(sub, &nt);
    free(seen);
    return r;
}

static int apply_ints(struct loader *l, const struct ds_config_key *k, void *fp,
                      const struct ds_toml_value *v, const char *path)
{
    struct ds_config_intv nv = {NULL, 0};
    char epath[PATH_TEXT_MAX + 24];
    if (v->u.array.count) {
        nv.items = calloc(v->u.array.count, sizeof(int64_t));
        if (!nv.items) {
            return lerr(l, v->off, -ENOMEM, "out of memory");
        }
    }
    for (size_t i = 0; i < v->u.array.count; i++) {
        const struct ds_toml_value *e = v->u.array.items[i];
        snprintf(epath, sizeof(epath), "%s[%zu]", path, i);
        int r = e->type == DS_TOML_INT
                    ? check_int(l, k, epath, e->off, e->u.i)
                    : lerr(l, e->off, -DS_E_FORMAT, "%s: expected integer, got %s", epath,
                           toml_type_name(e));
        if (r < 0) {
            free_intv(&nv);
            return r;
        }
        nv.items[nv.count++] = e->u.i;
    }
    free_intv(fp);
    *(struct ds_config_intv *)fp = nv;
    return 0;
}

static int apply_strmap(struct loader *l, const struct ds_config_key *k, void *fp,
                        const struct ds_toml_value *v, const char *path)
{
    struct ds_config_strmap nm = {NULL, NULL, 0};
    bool secret = k->flags & DS_CFG_SECRET;
    char epath[PATH_TEXT_MAX + 80];
    int r = 0;
    size_t n = v->u.table.count;
    if (n) {
        nm.keys = calloc(n, sizeof(char *));
        nm.values = calloc(n, sizeof(char *));
        if (!nm.keys || !nm.values) {
            r = lerr(l, v->off, -ENOMEM, "out of memory");
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct ds_toml_entry *e = &v->u.table.items[i];
        snprintf(epath, sizeof(epath), "%s.%.64s", path, e->key);
        if (memchr(e->key, 0, e->key_len)) {
            r = lerr(l, e->key_off, -DS_E_FORMAT, "%s: key contains a NUL character", path);
            goto out;
        }
        if (e->value->type != DS_TOML_STRING) {
            r = lerr(l, e->value->off, -DS_E_FORMAT, "%s: expected string, got %s", epath,
                     toml_type_name(e->value));
            goto out;
        }
        if ((r = check_strlen(l, k, epath, e->value->off, e->value->u.str.len)) < 0 ||
            (r = dup_string(l, k, epath, e->value, &nm.values[i])) < 0) {
            goto out;
        }
        nm.count++;
        nm.keys[i] = strdup(e->key);
        if (!nm.keys[i]) {
            r = lerr(l, e->key_off, -ENOMEM, "out of memory");
            goto out;
        }
    }
    free_strmap(fp, secret);
    *(struct ds_config_strmap *)fp = nm;
    return 0;
out:
    free_strmap(&nm, secret);
    return r;
}

static int apply_value(struct loader *l, const struct ds_config_key *k, void *base,
                       const struct ds_toml_value *v, char *path)
{
    void *fp = field(base, k);
    bool ok;
    switch (k->type) {
    case DS_CFG_STRING:
    case DS_CFG_PATH:
        ok = v->type == DS_TOML_STRING;
        break;
    case DS_CFG_BOOL:
        ok = v->type == DS_TOML_BOOL;
        break;
    case DS_CFG_INT:
    case DS_CFG_PORT:
        ok = v->type == DS_TOML_INT;
        break;
    case DS_CFG_SIZE:
        ok = v->type == DS_TOML_INT || v->type == DS_TOML_STRING;
        break;
    case DS_CFG_DURATION:
    case DS_CFG_ENUM:
        ok = v->type == DS_TOML_STRING;
        break;
    case DS_CFG_STRINGS:
    case DS_CFG_INTS:
    case DS_CFG_TABLES:
        ok = v->type == DS_TOML_ARRAY;
        break;
    case DS_CFG_STRMAP:
        ok = v->type == DS_TOML_TABLE;
        break;
    default:
        ok = false;
    }
    if (!ok) {
        return lerr(l, v->off, -DS_E_FORMAT, "%s: expected %s, got %s", path, expected_name(k),
                    toml_type_name(v));
    }
    switch (k->type) {
    case DS_CFG_STRING:
    case DS_CFG_PATH: {
        char *s;
        DS_TRY(check_strlen(l, k, path, v->off, v->u.str.len));
        DS_TRY(dup_string(l, k, path, v, &s));
        free_string(fp, k->flags & DS_CFG_SECRET);
        *(char **)fp = s;
        return 0;
    }
    case DS_CFG_BOOL:
        *(bool *)fp = v->u.b;
        return 0;
    case DS_CFG_INT:
        DS_TRY(check_int(l, k, path, v->off, v->u.i));
        *(int64_t *)fp = v->u.i;
        return 0;
    case DS_CFG_PORT:
        DS_TRY(check_int(l, k, path, v->off, v->u.i));
        *(uint16_t *)fp = (uint16_t)v->u.i;
        return 0;
    case DS_CFG_SIZE: {
        uint64_t n;
        if (v->type == DS_TOML_INT) {
            if (v->u.i < 0) {
                return lerr(l, v->off, -DS_E_FORMAT, "%s: a size cannot be negative", path);
            }
            n = (uint64_t)v->u.i;
        } else if (memchr(v->u.str.ptr, 0, v->u.str.len) ||
                   ds_config_parse_size(v->u.str.ptr, &n) < 0) {
            return lerr(l, v->off, -DS_E_FORMAT,
                        "%s: \"%.64s\" is not a size (expected bytes, or a number with K, KiB, "
                        "KB, M, MiB, MB, G, GiB, GB, T...)",
                        path, v->u.str.ptr);
        }
        DS_TRY(check_u64(l, k, path, v->off, n, " bytes"));
        *(uint64_t *)fp = n;
        return 0;
    }
    case DS_CFG_DURATION: {
        uint64_t ms;
        if (memchr(v->u.str.ptr, 0, v->u.str.len) ||
            ds_config_parse_duration(v->u.str.ptr, &ms) < 0) {
            return lerr(l, v->off, -DS_E_FORMAT,
                        "%s: \"%.64s\" is not a duration (expected e.g. \"500ms\", \"30s\", "
                        "\"2m\", \"5h\", \"10d\", \"1h 30m\")",
                        path, v->u.str.ptr);
        }
        DS_TRY(check_u64(l, k, path, v->off, ms, " ms"));
        *(uint64_t *)fp = ms;
        return 0;
    }
    case DS_CFG_ENUM: {
        int idx = memchr(v->u.str.ptr, 0, v->u.str.len) ? -1 : enum_index(k, v->u.str.ptr);
        if (idx < 0) {
            return enum_error(l, k, path, v->off, v->u.str.ptr);
        }
        *(int *)fp = idx;
        return 0;
    }
    case DS_CFG_STRINGS: {
        struct ds_config_strv nv = {NULL, 0};
        int r = 0;
        if (v->u.array.count) {
            nv.items = calloc(v->u.array.count, sizeof(char *));
            if (!nv.items) {
                return lerr(l, v->off, -ENOMEM, "out of memory");
            }
        }
        for (size_t i = 0; i < v->u.array.count; i++) {
            const struct ds_toml_value *e = v->u.array.items[i];
            if (e->type != DS_TOML_STRING) {
                r = lerr(l, e->off, -DS_E_FORMAT, "%s[%zu]: expected string, got %s", path, i,
                         toml_type_name(e));
                break;
            }
            if ((r = check_strlen(l, k, path, e->off, e->u.str.len)) < 0 ||
                (r = dup_string(l, k, path, e, &nv.items[i])) < 0) {
                break;
            }
            nv.count++;
        }
        if (r < 0) {
            free_strv(&nv, k->flags & DS_CFG_SECRET);
            return r;
        }
        free_strv(fp, k->flags & DS_CFG_SECRET);
        *(struct ds_config_strv *)fp = nv;
        return 0;
    }
    case DS_CFG_INTS:
        return apply_ints(l, k, fp, v, path);
    case DS_CFG_STRMAP:
        return apply_strmap(l, k, fp, v, path);
    case DS_CFG_TABLES:
        return apply_tables(l, k, fp, v, path);
    }
    return lerr(l, v->off, -EINVAL, "%s: bad schema type", path);
}

/* ---- defaults -------------------------------------------------------------------------------- */

static int apply_default(struct loader *l, const struct ds_config_key *k, void *base)
{
    void *fp = field(base, k);
    const char *d = k->def;
    char path[PATH_TEXT_MAX];
    snprintf(path, sizeof(path), "%s", k->key);
    switch (k->type) {
    case DS_CFG_STRING:
    case DS_CFG_PATH:
        if (d) {
            char *s = strdup(d);
            if (!s) {
                return lerr(l, NO_POS, -ENOMEM, "out of memory");
            }
            free_string(fp, k->flags & DS_CFG_SECRET);
            *(char **)fp = s;
        }
        return 0;
    case DS_CFG_BOOL:
        if (d && strcmp(d, "true") != 0 && strcmp(d, "false") != 0) {
            break;
        }
        if (d && strcmp(d, "true") == 0 && strstr(k->key, "insecure")) {
            /* STYLE.md rule 7: insecure switches exist, but are never on by default */
            return lerr(l, NO_POS, -EINVAL, "schema: insecure switch %s must default to false",
                        k->key);
        }
        *(bool *)fp = d && strcmp(d, "true") == 0;
        return 0;
    case DS_CFG_INT:
    case DS_CFG_PORT: {
        long long v = 0;
        if (d) {
            char *end;
            errno = 0;
            v = strtoll(d, &end, 0);
            if (errno || *end || end == d) {
                break;
            }
        }
        if (d && check_int(l, k, path, NO_POS, v) < 0) {
            break; /* no default means 0, which need not be in range */
        }
        if (k->type == DS_CFG_INT) {
            *(int64_t *)fp = v;
        } else {
            *(uint16_t *)fp = (uint16_t)v;
        }
        return 0;
    }
    case DS_CFG_SIZE:
    case DS_CFG_DURATION: {
        uint64_t v = 0;
        if (d && strcmp(d, "unset") == 0) {
            *(uint64_t *)fp = DS_CONFIG_UNSET;
            return 0;
        }
        if (d && (k->type == DS_CFG_SIZE ? ds_config_parse_size(d, &v)
                                         : ds_config_parse_duration(d, &v)) < 0) {
            break;
        }
        *(uint64_t *)fp = v;
        return 0;
    }
    case DS_CFG_ENUM: {
        int idx = d ? enum_index(k, d) : 0;
        if (idx < 0 || !k->choices || !k->choices[0]) {
            break;
        }
        *(int *)fp = idx;
        return 0;
    }
    case DS_CFG_STRINGS:
    case DS_CFG_INTS:
    case DS_CFG_STRMAP: {
        if (!d) {
            return 0;
        }
        /* the default is a TOML array / inline table: parse "v = <def>", apply it like the
         * file's content */
        size_t n = strlen(d) + 5;
        char *doc = malloc(n);
        struct ds_toml_value *root = NULL;
        if (!doc) {
            return lerr(l, NO_POS, -ENOMEM, "out of memory");
        }
        snprintf(doc, n, "v = %s", d);
        struct loader dl = {.name = "schema default", .text = NULL, .err = NULL};
        int r = ds_toml_parse(doc, n - 1, "default", &root, NULL);
        const struct ds_toml_value *v = r == 0 ? ds_toml_get(root, "v") : NULL;
        if (v) {
            r = apply_value(&dl, k, base, v, path);
        }
        ds_toml_free(root);
        free(doc);
        if (!v || r < 0) {
            break;
        }
        return 0;
    }
    case DS_CFG_TABLES:
        if (!d && k->sub) {
            return 0;
        }
        break;
    }
    return lerr(l, NO_POS, -EINVAL, "schema: bad default \"%s\" for key %s", d ? d : "(null)",
                k->key);
}

static int apply_defaults(struct loader *l, const struct ds_config_schema *schema, void *base)
{
    for (size_t i = 0; i < schema->count; i++) {
        DS_TRY(apply_default(l, &schema->keys[i], base));
    }
    return 0;
}

/* ---- walking the document -------------------------------------------------------------------- */

/* Optimal string alignment distance (Levenshtein plus adjacent transpositions). */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > SUGGEST_LEN_MAX || lb > SUGGEST_LEN_MAX) {
        return SIZE_MAX;
    }
    size_t rows[3][SUGGEST_TABLE_SIZE];
    size_t *pp = rows[0], *p = rows[1], *c = rows[2];
    for (size_t j = 0; j <= lb; j++) {
        p[j] = j;
    }
    for (size_t i = 1; i <= la; i++) {
        c[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
            size_t best = p[j] + 1;
            if (c[j - 1] + 1 < best) {
                best = c[j - 1] + 1;
            }
            if (p[j - 1] + cost < best) {
                best = p[j - 1] + cost;
            }
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                pp[j - 2] + 1 < best) {
                best = pp[j - 2] + 1;
            }
            c[j] = best;
        }
        size_t *t = pp;
        pp = p;
        p = c;
        c = t;
    }
    return p[lb];
}

static const char *suggest(const struct ds_config_schema *schema, const char *key)
{
    const char *best = NULL;
    size_t best_d = SIZE_MAX;
    size_t len = strlen(key);
    size_t limit = len <= 6 ? 1 : len <= 12 ? 2 : 3;
    for (size_t i = 0; i < schema->count; i++) {
        size_t d = edit_distance(key, schema->keys[i].key);
        if (d < best_d) {
            best_d = d;
            best = schema->keys[i].key;
        }
    }
    return best_d <= limit ? best : NULL;
}

static int find_key(const struct ds_config_schema *schema, const char *key)
{
    for (size_t i = 0; i < schema->count; i++) {
        if (strcmp(schema->keys[i].key, key) == 0) {
            return (int)i;
        }
    }
    return -1;
}

static bool is_prefix_of_some_key(const struct ds_config_schema *schema, const char *prefix)
{
    size_t n = strlen(prefix);
    for (size_t i = 0; i < schema->count; i++) {
        const char *k = schema->keys[i].key;
        if (strncmp(k, prefix, n) == 0 && k[n] == '.') {
            return true;
        }
    }
    return false;
}

static bool plain_key(const struct ds_toml_entry *e)
{
    /* quoted keys containing '.' (or NUL) must not alias a dotted schema path */
    return !memchr(e->key, '.', e->key_len) && !memchr(e->key, 0, e->key_len);
}

static int unknown_key(struct loader *l, const struct ds_config_schema *schema,
                       const struct ds_toml_entry *e, char *path, size_t match_start)
{
    /* name the first leaf under an unknown table: "core.onbaord.port", not "core.onbaord" */
    size_t off = e->key_off;
    const struct ds_toml_value *v = e->value;
    size_t plen = strlen(path);
    while (v->type == DS_TOML_TABLE && v->u.table.count) {
        const struct ds_toml_entry *c = &v->u.table.items[0];
        if (plen + c->key_len + 2 >= PATH_TEXT_MAX || !plain_key(c)) {
            break;
        }
        path[plen++] = '.';
        memcpy(path + plen, c->key, c->key_len);
        plen += c->key_len;
        path[plen] = 0;
        off = c->key_off;
        v = c->value;
    }
    if (!plain_key(e)) {
        return lerr(l, off, -DS_E_FORMAT,
                    "unknown key %s (a quoted key is one key, even with '.' inside)", path);
    }
    const char *s = suggest(schema, path + match_start);
    if (s) {
        return lerr(l, off, -DS_E_FORMAT, "unknown key %s (did you mean %.*s%s?)", path,
                    (int)match_start, path, s);
    }
    return lerr(l, off, -DS_E_FORMAT, "unknown key %s", path);
}

static int walk_table(struct loader *l, const struct ds_config_schema *schema, void *base,
                      const struct ds_toml_value *t, char *path, size_t match_start, bool *seen)
{
    size_t plen = strlen(path);
    for (size_t i = 0; i < t->u.table.count; i++) {
        const struct ds_toml_entry *e = &t->u.table.items[i];
        size_t sep = plen > 0 ? 1 : 0;
        if (plen + sep + e->key_len + 1 >= PATH_TEXT_MAX) {
            return lerr(l, e->key_off, -DS_E_FORMAT, "unknown key (path longer than %d bytes)",
                        PATH_TEXT_MAX);
        }
        if (sep) {
            path[plen] = '.';
        }
        memcpy(path + plen + sep, e->key, e->key_len);
        path[plen + sep + e->key_len] = 0;
        const char *mk = path + match_start;
        int idx = plain_key(e) ? find_key(schema, mk) : -1;
        int r;
        if (idx >= 0) {
            if (seen[idx]) {
                /* cannot happen through the TOML rules, but stay defensive */
                r = lerr(l, e->key_off, -DS_E_FORMAT, "duplicate key %s", path);
            } else {
                seen[idx] = true;
                r = apply_value(l, &schema->keys[idx], base, e->value, path);
            }
        } else if (plain_key(e) && e->value->type == DS_TOML_TABLE &&
                   is_prefix_of_some_key(schema, mk)) {
            r = walk_table(l, schema, base, e->value, path, match_start, seen);
        } else {
            r = unknown_key(l, schema, e, path, match_start);
        }
        if (r < 0) {
            return r;
        }
        path[plen] = 0;
    }
    return 0;
}

static int check_required(struct loader *l, const struct ds_config_schema *schema, const bool *seen,
                          const char *display_prefix)
{
    for (size_t i = 0; i < schema->count; i++) {
        const struct ds_config_key *k = &schema->keys[i];
        if ((k->flags & DS_CFG_REQUIRED) && !seen[i]) {
            return lerr(l, NO_POS, -DS_E_NOT_FOUND, "missing required key %s%s%s", display_prefix,
                        *display_prefix ? "." : "", k->key);
        }
    }
    return 0;
}

/* ---- entry points ---------------------------------------------------------------------------- */

static int load(const struct ds_config_schema *schema, const char *text, size_t len,
                const char *name, void *cfg, struct ds_config_err *err)
{
    struct loader l = {.name = name ? name : "<config>", .text = text, .len = len, .err = err};
    struct ds_toml_value *root = NULL;
    void *tmp = NULL;
    bool *seen = NULL;
    int r;
    if (err) {
        memset(err, 0, sizeof(*err));
    }
    tmp = calloc(1, schema->size ? schema->size : 1);
    seen = calloc(schema->count ? schema->count : 1, sizeof(bool));
    if (!tmp || !seen) {
        r = lerr(&l, NO_POS, -ENOMEM, "out of memory");
        goto out;
    }
    if ((r = apply_defaults(&l, schema, tmp)) < 0) {
        goto out;
    }
    if (text) {
        char path[PATH_TEXT_MAX] = "";
        if ((r = ds_toml_parse(text, len, l.name, &root, err)) < 0) {
            goto out;
        }
        if ((r = walk_table(&l, schema, tmp, root, path, 0, seen)) < 0) {
            goto out;
        }
    }
    if ((r = check_required(&l, schema, seen, "")) < 0) {
        goto out;
    }
    memcpy(cfg, tmp, schema->size);
    free(tmp);
    tmp = NULL;
    r = 0;
out:
    if (tmp) {
        ds_config_free(schema, tmp);
        ds_wipe(tmp, schema->size);
        free(tmp);
    }
    free(seen);
    ds_toml_free(root);
    return r;
}

int ds_config_load_text(const struct ds_config_schema *schema, const char *text, size_t len,
                        const char *name, void *cfg, struct ds_config_err *err)
{
    if (!text) {
        text = "";
        len = 0;
    }
    return load(schema, text, len, name, cfg, err);
}

int ds_config_defaults(const struct ds_config_schema *schema, void *cfg, struct ds_config_err *err)
{
    return load(schema, NULL, 0, schema->name, cfg, err);
}

int ds_config_load(const struct ds_config_schema *schema, const char *path, void *cfg,
                   struct ds_config_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int r = ds_read_file(path, DS_TOML_FILE_MAX, &data, &len);
    if (r < 0) {
        if (err) {
            memset(err, 0, sizeof(*err));
            snprintf(err->msg, sizeof(err->msg), "%s: %s", path,
                     r == -DS_E_LIMIT ? "file larger than the TOML size limit" : ds_strerror(r));
        }
        return r;
    }
    r = load(schema, (const char *)data, len, path, cfg, err);
    ds_wipe(data, len); /* configs can hold secrets (tokens, keys) */
    free(data);
    return r;
}
