/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The two outputs a config schema drives besides loading: ds_config_dump() prints the
 * effective configuration as TOML for --dump-config (it reads back to the same struct; secret
 * keys are replaced by a comment so they never reach a terminal or a log), and ds_config_doc()
 * prints the key reference as a Markdown table for the daemon docs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "dstack/config.h"

#define PREFIX_TEXT_MAX 256

static const void *cfield(const void *base, const struct ds_config_key *k)
{
    return (const char *)base + k->offset;
}

/* Length of the table part of a dotted key ("core.onboard" of "core.onboard.port"). */
static size_t prefix_len(const char *key)
{
    const char *dot = strrchr(key, '.');
    return dot ? (size_t)(dot - key) : 0;
}

static const char *leaf(const char *key)
{
    const char *dot = strrchr(key, '.');
    return dot ? dot + 1 : key;
}

static void put_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            fputs("\\\"", out);
            break;
        case '\\':
            fputs("\\\\", out);
            break;
        case '\n':
            fputs("\\n", out);
            break;
        case '\t':
            fputs("\\t", out);
            break;
        case '\r':
            fputs("\\r", out);
            break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                fprintf(out, "\\u%04x", *p);
            } else {
                fputc(*p, out);
            }
        }
    }
    fputc('"', out);
}

static void put_duration(FILE *out, uint64_t ms)
{
    static const struct {
        const char *unit;
        uint64_t ms;
    } units[] = {{"d", 86400000}, {"h", 3600000}, {"m", 60000}, {"s", 1000}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(units); i++) {
        if (ms && ms % units[i].ms == 0) {
            fprintf(out, "\"%" PRIu64 "%s\"", ms / units[i].ms, units[i].unit);
            return;
        }
    }
    fprintf(out, ms ? "\"%" PRIu64 "ms\"" : "\"0s\"", ms);
}

static void put_size(FILE *out, uint64_t n)
{
    static const struct {
        const char *unit;
        uint64_t mult;
    } units[] = {
        {"TiB", 1ull << 40}, {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(units); i++) {
        if (n && n % units[i].mult == 0) {
            fprintf(out, "\"%" PRIu64 "%s\"", n / units[i].mult, units[i].unit);
            return;
        }
    }
    fprintf(out, "%" PRIu64, n);
}

/* Print the value of k (not secret, not an unset string). Returns false if it cannot be
 * written as a value (unset string, bad enum index): the caller writes a comment instead. */
static bool printable(const struct ds_config_key *k, const void *base)
{
    const void *fp = cfield(base, k);
    if (k->flags & DS_CFG_SECRET) {
        return false;
    }
    if (k->type == DS_CFG_STRING || k->type == DS_CFG_PATH) {
        return *(char *const *)fp != NULL;
    }
    if (k->type == DS_CFG_SIZE || k->type == DS_CFG_DURATION) {
        return *(const uint64_t *)fp != DS_CONFIG_UNSET;
    }
    if (k->type == DS_CFG_ENUM) {
        int idx = *(const int *)fp;
        int n = 0;
        while (k->choices && k->choices[n]) {
            n++;
        }
        return idx >= 0 && idx < n;
    }
    return true;
}

static void put_value(FILE *out, const struct ds_config_key *k, const void *base);

static void put_inline_table(FILE *out, const struct ds_config_schema *sub, const void *elem)
{
    bool first = true;
    fputc('{', out);
    for (size_t i = 0; i < sub->count; i++) {
        const struct ds_config_key *k = &sub->keys[i];
        if (!printable(k, elem)) {
            continue;
        }
        fprintf(out, "%s %s = ", first ? "" : ",", k->key);
        put_value(out, k, elem);
        first = false;
    }
    fputs(first ? "}" : " }", out);
}

static void put_value(FILE *out, const struct ds_config_key *k, const void *base)
{
    const void *fp = cfield(base, k);
    switch (k->type) {
    case DS_CFG_STRING:
    case DS_CFG_PATH:
        put_string(out, *(char *const *)fp);
        break;
    case DS_CFG_BOOL:
        fputs(*(const bool *)fp ? "true" : "false", out);
        break;
    case DS_CFG_INT:
        fprintf(out, "%" PRId64, *(const int64_t *)fp);
        break;
    case DS_CFG_PORT:
        fprintf(out, "%u", (unsigned)*(const uint16_t *)fp);
        break;
    case DS_CFG_SIZE:
        put_size(out, *(const uint64_t *)fp);
        break;
    case DS_CFG_DURATION:
        put_duration(out, *(const uint64_t *)fp);
        break;
    case DS_CFG_ENUM:
        put_string(out, k->choices[*(const int *)fp]);
        break;
    case DS_CFG_STRINGS: {
        const struct ds_config_strv *v = fp;
        fputc('[', out);
        for (size_t i = 0; i < v->count; i++) {
            fputs(i ? ", " : "", out);
            put_string(out, v->items[i]);
        }
        fputc(']', out);
        break;
    }
    case DS_CFG_INTS: {
        const struct ds_config_intv *v = fp;
        fputc('[', out);
        for (size_t i = 0; i < v->count; i++) {
            fprintf(out, "%s%" PRId64, i ? ", " : "", v->items[i]);
        }
        fputc(']', out);
        break;
    }
    case DS_CFG_STRMAP: {
        const struct ds_config_strmap *m = fp;
        fputc('{', out);
        for (size_t i = 0; i < m->count; i++) {
            fputs(i ? ", " : " ", out);
            put_string(out, m->keys[i]);
            fputs(" = ", out);
            put_string(out, m->values[i]);
        }
        fputs(m->count ? " }" : "}", out);
        break;
    }
    case DS_CFG_TABLES: {
        const struct ds_config_tables *t = fp;
        fputc('[', out);
        for (size_t i = 0; i < t->count; i++) {
            fputs(i ? ", " : "", out);
            put_inline_table(out, k->sub, (const char *)t->items + i * k->sub->size);
        }
        fputc(']', out);
        break;
    }
    }
}

static void put_key(FILE *out, const struct ds_config_key *k, const void *cfg)
{
    if (k->help) {
        /* one comment line, whatever the help text holds */
        fputs("# ", out);
        for (const char *h = k->help; *h; h++) {
            fputc(*h == '\n' || *h == '\r' ? ' ' : *h, out);
        }
        fputc('\n', out);
    }
    if (k->flags & DS_CFG_SECRET) {
        fprintf(out, "# %s = (secret, not shown)\n", leaf(k->key));
    } else if (!printable(k, cfg)) {
        fprintf(out, "# %s = (unset)\n", leaf(k->key));
    } else {
        fprintf(out, "%s = ", leaf(k->key));
        put_value(out, k, cfg);
        fputc('\n', out);
    }
}

int ds_config_dump(const struct ds_config_schema *schema, const void *cfg, FILE *out)
{
    /* top-level keys first: once a [table] header is out, bare keys would land in it */
    for (size_t i = 0; i < schema->count; i++) {
        if (prefix_len(schema->keys[i].key) == 0) {
            put_key(out, &schema->keys[i], cfg);
        }
    }
    /* then one [section] per distinct table, in the schema's order of first appearance */
    for (size_t i = 0; i < schema->count; i++) {
        const char *ki = schema->keys[i].key;
        size_t pl = prefix_len(ki);
        bool first = pl > 0;
        for (size_t j = 0; first && j < i; j++) {
            const char *kj = schema->keys[j].key;
            if (prefix_len(kj) == pl && strncmp(kj, ki, pl) == 0) {
                first = false;
            }
        }
        if (!first) {
            continue;
        }
        fprintf(out, "\n[%.*s]\n", (int)pl, ki);
        for (size_t j = i; j < schema->count; j++) {
            const char *kj = schema->keys[j].key;
            if (prefix_len(kj) == pl && strncmp(kj, ki, pl) == 0) {
                put_key(out, &schema->keys[j], cfg);
            }
        }
    }
    return ferror(out) ? -EIO : 0;
}

/* ---- docs ------------------------------------------------------------------------------------ */

static void md_text(FILE *out, const char *s)
{
    for (; s && *s; s++) {
        if (*s == '|') {
            fputs("\\|", out);
        } else if (*s == '\n' || *s == '\r') {
            fputc(' ', out); /* a row is one line */
        } else {
            fputc(*s, out);
        }
    }
}

static void doc_type(FILE *out, const struct ds_config_key *k)
{
    bool range = k->min != 0 || k->max != 0;
    switch (k->type) {
    case DS_CFG_STRING:
        fputs("string", out);
        break;
    case DS_CFG_PATH:
        fputs("path", out);
        break;
    case DS_CFG_BOOL:
        fputs("bool", out);
        break;
    case DS_CFG_INT:
        fputs("integer", out);
        break;
    case DS_CFG_PORT:
        fputs("port", out);
        break;
    case DS_CFG_SIZE:
        fputs("size (`10MiB`)", out);
        break;
    case DS_CFG_DURATION:
        fputs("duration (`30s`)", out);
        break;
    case DS_CFG_ENUM:
        fputs("one of", out);
        for (int i = 0; k->choices && k->choices[i]; i++) {
            fprintf(out, "%s `%s`", i ? "," : "", k->choices[i]);
        }
        break;
    case DS_CFG_STRINGS:
        fputs("array of strings", out);
        break;
    case DS_CFG_INTS:
        fputs("array of integers", out);
        break;
    case DS_CFG_STRMAP:
        fputs("table of strings", out);
        break;
    case DS_CFG_TABLES:
        fputs("array of tables", out);
        break;
    }
    if (range && k->type == DS_CFG_DURATION) {
        fprintf(out, ", %" PRId64 "..%" PRId64 " ms", k->min, k->max);
    } else if (range &&
               (k->type == DS_CFG_STRING || k->type == DS_CFG_PATH || k->type == DS_CFG_STRINGS)) {
        fprintf(out, ", length %" PRId64 "..%" PRId64, k->min, k->max);
    } else if (range) {
        fprintf(out, ", %" PRId64 "..%" PRId64, k->min, k->max);
    }
}

static void doc_table(FILE *out, const struct ds_config_schema *schema, const char *prefix)
{
    fputs("| Key | Type | Default | Description |\n|---|---|---|---|\n", out);
    for (size_t i = 0; i < schema->count; i++) {
        const struct ds_config_key *k = &schema->keys[i];
        fprintf(out, "| `%s%s` | ", prefix, k->key);
        doc_type(out, k);
        fputs(" | ", out);
        if (k->flags & DS_CFG_REQUIRED) {
            fputs("(required)", out);
        } else if (k->def) {
            fputc('`', out);
            md_text(out, k->def);
            fputc('`', out);
        } else if (k->type == DS_CFG_ENUM && k->choices && k->choices[0]) {
            fprintf(out, "`%s`", k->choices[0]);
        } else {
            fputs("—", out);
        }
        fputs(" | ", out);
        md_text(out, k->help);
        if (k->flags & DS_CFG_SECRET) {
            fputs(" (secret: never printed)", out);
        }
        fputs(" |\n", out);
    }
}

int ds_config_doc(const struct ds_config_schema *schema, FILE *out)
{
    doc_table(out, schema, "");
    for (size_t i = 0; i < schema->count; i++) {
        const struct ds_config_key *k = &schema->keys[i];
        if (k->type == DS_CFG_TABLES && k->sub) {
            char prefix[PREFIX_TEXT_MAX];
            snprintf(prefix, sizeof(prefix), "%s[].", k->key);
            fprintf(out, "\nEach element of `%s`:\n\n", k->key);
            doc_table(out, k->sub, prefix);
        }
    }
    return ferror(out) ? -EIO : 0;
}
