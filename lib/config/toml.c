/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A strict TOML v1.0 reader for the configuration files of the KMS, VMM and gateway. Debian 12
 * packages no C TOML library, so this one is hand-written (DESIGN.md §5). It covers the whole
 * language except date/time values, which fail with "unsupported: datetime": comments, bare,
 * quoted and dotted keys, [tables], [[arrays of tables]], all four string forms with every
 * escape, integers (decimal with '_', hex/octal/binary, overflow detected), floats (exponent,
 * inf, nan), booleans, arrays (mixed types, nested, newlines and comments inside) and inline
 * tables. TOML's definition rules are enforced: duplicate keys, tables defined twice, dotted
 * keys reaching into a table another section defined, and additions to inline tables or static
 * arrays are errors. The whole input must be valid UTF-8. Every error names line:column and
 * what was expected. Limits (DS_TOML_*) bound size, depth, string length and node count.
 */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dstack/config.h"

/* How a table or array came to exist; decides what may later add to it (TOML 1.0 "Table"). */
enum origin {
    ORIGIN_VALUE = 0, /* scalar */
    ORIGIN_HEADER,    /* table named by a [header] or an [[array]] element */
    ORIGIN_IMPLICIT,  /* table created as a parent of a [a.b.c] header */
    ORIGIN_DOTTED,    /* table created by a dotted key (a.b = 1) in section `section` */
    ORIGIN_INLINE,    /* inline table or a table inside a value: sealed */
    ORIGIN_AOT,       /* array of tables: [[x]] may append */
    ORIGIN_STATIC,    /* array value: sealed */
};

struct key_part {
    char *s;
    size_t len;
    size_t off;
};

struct keypath {
    struct key_part parts[DS_TOML_DEPTH_MAX];
    size_t count;
};

struct parser {
    const char *s;
    size_t len;
    size_t pos;
    const char *name;
    struct ds_config_err *err;
    size_t nodes;
    uint32_t next_section;
    char section_path[256]; /* dotted path of the current [header], for messages */
};

/* ---- errors ---------------------------------------------------------------------------------- */

void ds_toml_position(const char *text, size_t len, size_t off, unsigned *out_line,
                      unsigned *out_col)
{
    unsigned line = 1, col = 1;
    if (off > len) {
        off = len;
    }
    for (size_t i = 0; i < off; i++) {
        unsigned char c = (unsigned char)text[i];
        if (c == '\n') {
            line++;
            col = 1;
        } else if ((c & 0xc0) != 0x80) {
            col++;
        }
    }
    *out_line = line;
    *out_col = col;
}

__attribute__((format(printf, 4, 5))) static int perr(struct parser *p, size_t off, int code,
                                                      const char *fmt, ...)
{
    if (!p->err) {
        return code;
    }
    ds_toml_position(p->s, p->len, off, &p->err->line, &p->err->col);
    int n = snprintf(p->err->msg, sizeof(p->err->msg), "%s:%u:%u: ", p->name, p->err->line,
                     p->err->col);
    if (n > 0 && (size_t)n < sizeof(p->err->msg)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->err->msg + n, sizeof(p->err->msg) - (size_t)n, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* A printable description of the character at pos for "found ..." messages. */
static const char *found(const struct parser *p, size_t pos, char buf[16])
{
    if (pos >= p->len) {
        return "end of file";
    }
    unsigned char c = (unsigned char)p->s[pos];
    if (c == '\n' || c == '\r') {
        return "end of line";
    }
    if (c < 0x20 || c == 0x7f) {
        snprintf(buf, 16, "control U+%04X", c);
    } else if (c >= 0x80) {
        return "a non-ASCII character";
    } else {
        snprintf(buf, 16, "'%c'", c);
    }
    return buf;
}

/* Key for messages: shown quoted, truncated, control characters replaced. */
static void quote_key(const char *k, size_t len, char *out, size_t out_size)
{
    size_t o = 0;
    out[o++] = '"';
    for (size_t i = 0; i < len && o + 5 < out_size; i++) {
        unsigned char c = (unsigned char)k[i];
        out[o++] = (c < 0x20 || c == 0x7f || c == '"') ? '?' : (char)c;
    }
    out[o++] = '"';
    out[o] = 0;
}

static void join_path(const struct keypath *kp, size_t upto, char *out, size_t out_size)
{
    size_t o = 0;
    out[0] = 0;
    for (size_t i = 0; i < upto && o + 2 < out_size; i++) {
        if (i) {
            out[o++] = '.';
        }
        for (size_t j = 0; j < kp->parts[i].len && o + 1 < out_size; j++) {
            unsigned char c = (unsigned char)kp->parts[i].s[j];
            out[o++] = (c < 0x20 || c == 0x7f) ? '?' : (char)c;
        }
        out[o] = 0;
    }
}

static const char *type_name(const struct ds_toml_value *v)
{
    switch (v->type) {
    case DS_TOML_TABLE:
        return v->origin == ORIGIN_INLINE ? "inline table" : "table";
    case DS_TOML_ARRAY:
        return v->origin == ORIGIN_AOT ? "array of tables" : "array";
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

/* ---- tree ------------------------------------------------------------------------------------ */

void ds_toml_free(struct ds_toml_value *v)
{
    if (!v) {
        return;
    }
    switch (v->type) {
    case DS_TOML_TABLE:
        for (size_t i = 0; i < v->u.table.count; i++) {
            free(v->u.table.items[i].key);
            ds_toml_free(v->u.table.items[i].value);
        }
        free(v->u.table.items);
        break;
    case DS_TOML_ARRAY:
        for (size_t i = 0; i < v->u.array.count; i++) {
            ds_toml_free(v->u.array.items[i]);
        }
        free(v->u.array.items);
        break;
    case DS_TOML_STRING:
        free(v->u.str.ptr);
        break;
    default:
        break;
    }
    free(v);
}

static int new_value(struct parser *p, enum ds_toml_type type, size_t off,
                     struct ds_toml_value **out)
{
    if (p->nodes >= DS_TOML_NODES_MAX) {
        return perr(p, off, -DS_E_LIMIT, "too many values (limit %d)", DS_TOML_NODES_MAX);
    }
    struct ds_toml_value *v = calloc(1, sizeof(*v));
    if (!v) {
        return perr(p, off, -ENOMEM, "out of memory");
    }
    p->nodes++;
    v->type = type;
    v->off = off;
    *out = v;
    return 0;
}

static struct ds_toml_entry *table_find(const struct ds_toml_value *t, const char *k, size_t len)
{
    for (size_t i = 0; i < t->u.table.count; i++) {
        struct ds_toml_entry *e = &t->u.table.items[i];
        if (e->key_len == len && memcmp(e->key, k, len) == 0) {
            return e;
        }
    }
    return NULL;
}

const struct ds_toml_value *ds_toml_get(const struct ds_toml_value *t, const char *key)
{
    if (!t || t->type != DS_TOML_TABLE || !key) {
        return NULL;
    }
    struct ds_toml_entry *e = table_find(t, key, strlen(key));
    return e ? e->value : NULL;
}

/* Add (k, v) to table t; takes v on success. The key is copied. */
static int table_add(struct parser *p, struct ds_toml_value *t, const struct key_part *k,
                     struct ds_toml_value *v)
{
    if (t->u.table.count >= DS_TOML_TABLE_KEYS_MAX) {
        return perr(p, k->off, -DS_E_LIMIT, "too many keys in one table (limit %d)",
                    DS_TOML_TABLE_KEYS_MAX);
    }
    if (t->u.table.count == t->u.table.cap) {
        size_t cap = t->u.table.cap ? t->u.table.cap * 2 : 8;
        struct ds_toml_entry *n = realloc(t->u.table.items, cap * sizeof(*n));
        if (!n) {
            return perr(p, k->off, -ENOMEM, "out of memory");
        }
        t->u.table.items = n;
        t->u.table.cap = cap;
    }
    char *key = malloc(k->len + 1);
    if (!key) {
        return perr(p, k->off, -ENOMEM, "out of memory");
    }
    memcpy(key, k->s, k->len);
    key[k->len] = 0;
    t->u.table.items[t->u.table.count++] =
        (struct ds_toml_entry){.key = key, .key_len = k->len, .key_off = k->off, .value = v};
    return 0;
}

static int array_add(struct parser *p, struct ds_toml_value *a, struct ds_toml_value *v)
{
    if (a->u.array.count >= DS_TOML_TABLE_KEYS_MAX) {
        return perr(p, v->off, -DS_E_LIMIT, "too many elements in one array (limit %d)",
                    DS_TOML_TABLE_KEYS_MAX);
    }
    if (a->u.array.count == a->u.array.cap) {
        size_t cap = a->u.array.cap ? a->u.array.cap * 2 : 8;
        struct ds_toml_value **n = realloc(a->u.array.items, cap * sizeof(*n));
        if (!n) {
            return perr(p, v->off, -ENOMEM, "out of memory");
        }
        a->u.array.items = n;
        a->u.array.cap = cap;
    }
    a->u.array.items[a->u.array.count++] = v;
    return 0;
}

/* ---- lexical helpers ------------------------------------------------------------------------- */

static bool at_eof(const struct parser *p)
{
    return p->pos >= p->len;
}

static int cur(const struct parser *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static int peek(const struct parser *p, size_t ahead)
{
    return p->pos + ahead < p->len ? (unsigned char)p->s[p->pos + ahead] : -1;
}

static void skip_ws(struct parser *p)
{
    while (!at_eof(p) && (p->s[p->pos] == ' ' || p->s[p->pos] == '\t')) {
        p->pos++;
    }
}

/* A newline at pos: LF or CRLF. Returns its length or 0. */
static size_t newline_len(const struct parser *p, size_t pos)
{
    if (pos < p->len && p->s[pos] == '\n') {
        return 1;
    }
    if (pos + 1 < p->len && p->s[pos] == '\r' && p->s[pos + 1] == '\n') {
        return 2;
    }
    return 0;
}

/* Control characters TOML forbids in comments and strings (tab is allowed). */
static bool is_bad_control(unsigned char c)
{
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

static int skip_comment(struct parser *p)
{
    /* at '#': runs to the end of the line; no control characters but tab (TOML "Comment") */
    p->pos++;
    while (!at_eof(p) && p->s[p->pos] != '\n') {
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == '\r' && newline_len(p, p->pos) == 2) {
            break;
        }
        if (is_bad_control(c)) {
            return perr(p, p->pos, -DS_E_FORMAT, "control character U+%04X in comment", c);
        }
        p->pos++;
    }
    return 0;
}

/* After a value or header: whitespace, an optional comment, then a newline or end of file. */
static int expect_eol(struct parser *p, const char *after)
{
    skip_ws(p);
    if (cur(p) == '#') {
        DS_TRY(skip_comment(p));
    }
    if (at_eof(p)) {
        return 0;
    }
    size_t nl = newline_len(p, p->pos);
    if (nl) {
        p->pos += nl;
        return 0;
    }
    char b[16];
    return perr(p, p->pos, -DS_E_FORMAT, "expected end of line after %s, found %s", after,
                found(p, p->pos, b));
}

/* Whitespace, newlines and comments (inside arrays). */
static int skip_ws_nl(struct parser *p)
{
    for (;;) {
        skip_ws(p);
        if (cur(p) == '#') {
            DS_TRY(skip_comment(p));
        }
        size_t nl = newline_len(p, p->pos);
        if (!nl) {
            return 0;
        }
        p->pos += nl;
    }
}

/* Strict UTF-8 (no overlongs, no surrogates, at most U+10FFFF). Returns the length of the
 * sequence at s[0..len) or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s, size_t len)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t n;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
        n = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        n = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return n;
}

static int check_utf8(struct parser *p)
{
    const unsigned char *s = (const unsigned char *)p->s;
    for (size_t i = 0; i < p->len;) {
        size_t n = utf8_seq(s + i, p->len - i);
        if (!n) {
            return perr(p, i, -DS_E_FORMAT, "invalid UTF-8 (byte 0x%02x)", s[i]);
        }
        i += n;
    }
    return 0;
}

/* UTF-8 encoding of a scalar value into o (4 bytes); returns the length. */
static size_t encode_utf8(uint32_t cp, uint8_t o[4])
{
    if (cp < 0x80) {
        o[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (uint8_t)(0xc0 | (cp >> 6));
        o[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (uint8_t)(0xe0 | (cp >> 12));
        o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (uint8_t)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (uint8_t)(0xf0 | (cp >> 18));
    o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (uint8_t)(0x80 | (cp & 0x3f));
    return 4;
}

/* ---- strings --------------------------------------------------------------------------------- */

static int append(struct parser *p, struct ds_buf *b, const void *d, size_t n, size_t start)
{
    int r = ds_buf_append(b, d, n);
    if (r == -DS_E_LIMIT) {
        return perr(p, start, -DS_E_LIMIT, "string longer than %d bytes", DS_TOML_STRING_MAX);
    }
    if (r < 0) {
        return perr(p, start, -ENOMEM, "out of memory");
    }
    return 0;
}

static int parse_escape(struct parser *p, struct ds_buf *b, size_t start)
{
    /* at '\\' (multi-line line-ending backslashes are handled by the caller) */
    size_t esc = p->pos;
    int c = peek(p, 1);
    char ch;
    switch (c) {
    case 'b':
        ch = '\b';
        break;
    case 't':
        ch = '\t';
        break;
    case 'n':
        ch = '\n';
        break;
    case 'f':
        ch = '\f';
        break;
    case 'r':
        ch = '\r';
        break;
    case '"':
        ch = '"';
        break;
    case '\\':
        ch = '\\';
        break;
    case 'u':
    case 'U': {
        size_t n = c == 'u' ? 4 : 8;
        uint32_t cp = 0;
        for (size_t i = 0; i < n; i++) {
            int h = ds_hex_digit_value(peek(p, 2 + i));
            if (h < 0) {
                return perr(p, esc, -DS_E_FORMAT, "bad escape: \\%c needs %zu hex digits", c, n);
            }
            cp = (cp << 4) | (uint32_t)h;
        }
        if (cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) {
            return perr(p, esc, -DS_E_FORMAT, "bad escape: U+%04X is not a Unicode scalar value",
                        (unsigned)cp);
        }
        p->pos += 2 + n;
        uint8_t o[4];
        return append(p, b, o, encode_utf8(cp, o), start);
    }
    default: {
        char fb[16];
        return perr(p, esc, -DS_E_FORMAT,
                    "bad escape: \\ followed by %s (valid: \\b \\t \\n \\f \\r \\\" \\\\ "
                    "\\uXXXX \\UXXXXXXXX)",
                    found(p, esc + 1, fb));
    }
    }
    p->pos += 2;
    return append(p, b, &ch, 1, start);
}

/* One-line basic ("...") or literal ('...') string; used for values and keys. */
static int parse_line_string(struct parser *p, struct ds_buf *b)
{
    size_t start = p->pos;
    char q = p->s[p->pos++];
    for (;;) {
        if (at_eof(p)) {
            return perr(p, start, -DS_E_FORMAT, "unterminated string");
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == (unsigned char)q) {
            p->pos++;
            return 0;
        }
        if (c == '\n' || c == '\r') {
            return perr(p, p->pos, -DS_E_FORMAT,
                        "unterminated string (newline before the closing %c)", q);
        }
        if (is_bad_control(c)) {
            return perr(p, p->pos, -DS_E_FORMAT, "control character U+%04X in string", c);
        }
        if (c == '\\' && q == '"') {
            DS_TRY(parse_escape(p, b, start));
            continue;
        }
        DS_TRY(append(p, b, &p->s[p->pos], 1, start));
        p->pos++;
    }
}

/* Multi-line """...""" or '''...''' (at the opening triple quote). */
static int parse_ml_string(struct parser *p, struct ds_buf *b)
{
    size_t start = p->pos;
    char q = p->s[p->pos];
    p->pos += 3;
    /* a newline right after the opening delimiter is trimmed */
    p->pos += newline_len(p, p->pos);
    for (;;) {
        if (at_eof(p)) {
            return perr(p, start, -DS_E_FORMAT, "unterminated multi-line string");
        }
        unsigned char c = (unsigned char)p->s[p->pos];
        if (c == (unsigned char)q) {
            size_t run = 0;
            while (p->pos + run < p->len && p->s[p->pos + run] == q) {
                run++;
            }
            if (run < 3) {
                DS_TRY(append(p, b, &p->s[p->pos], run, start));
                p->pos += run;
                continue;
            }
            if (run > 5) {
                return perr(p, p->pos + 5, -DS_E_FORMAT,
                            "too many quotes at the end of a multi-line string");
            }
            /* up to two quotes may sit just before the closing delimiter */
            DS_TRY(append(p, b, &p->s[p->pos], run - 3, start));
            p->pos += run;
            return 0;
        }
        size_t nl = newline_len(p, p->pos);
        if (nl) {
            DS_TRY(append(p, b, &p->s[p->pos], nl, start));
            p->pos += nl;
            continue;
        }
        if (is_bad_control(c)) {
            return perr(p, p->pos, -DS_E_FORMAT, "control character U+%04X in string", c);
        }
        if (c == '\\' && q == '"') {
            /* line-ending backslash: trims whitespace and newlines up to the next content */
            size_t i = p->pos + 1;
            while (i < p->len && (p->s[i] == ' ' || p->s[i] == '\t')) {
                i++;
            }
            if (newline_len(p, i)) {
                p->pos = i;
                for (;;) {
                    size_t n2 = newline_len(p, p->pos);
                    if (n2) {
                        p->pos += n2;
                    } else if (cur(p) == ' ' || cur(p) == '\t') {
                        p->pos++;
                    } else {
                        break;
                    }
                }
                continue;
            }
            DS_TRY(parse_escape(p, b, start));
            continue;
        }
        DS_TRY(append(p, b, &p->s[p->pos], 1, start));
        p->pos++;
    }
}

static int parse_string_value(struct parser *p, struct ds_toml_value **out)
{
    size_t start = p->pos;
    struct ds_buf b;
    ds_buf_init(&b, DS_TOML_STRING_MAX);
    char q = p->s[p->pos];
    int r;
    if (peek(p, 1) == q && peek(p, 2) == q) {
        r = parse_ml_string(p, &b);
    } else {
        r = parse_line_string(p, &b);
    }
    struct ds_toml_value *v = NULL;
    if (r == 0) {
        r = new_value(p, DS_TOML_STRING, start, &v);
    }
    if (r == 0) {
        r = append(p, &b, "", 0, start); /* allocates the empty string */
    }
    if (r < 0) {
        ds_toml_free(v);
        ds_buf_done(&b);
        return r;
    }
    size_t n;
    uint8_t *d;
    ds_buf_steal(&b, &d, &n);
    v->u.str.ptr = (char *)d;
    v->u.str.len = n;
    *out = v;
    return 0;
}

/* ---- keys ------------------------------------------------------------------------------------ */

static bool is_bare(int c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

static void keypath_done(struct keypath *kp)
{
    for (size_t i = 0; i < kp->count; i++) {
        free(kp->parts[i].s);
    }
    kp->count = 0;
}

static int parse_key_part(struct parser *p, struct key_part *kpart)
{
    size_t start = p->pos;
    int c = cur(p);
    struct ds_buf b;
    ds_buf_init(&b, DS_TOML_STRING_MAX);
    int r = 0;
    if (c == '"' || c == '\'') {
        if (peek(p, 1) == c && peek(p, 2) == c) {
            return perr(p, start, -DS_E_FORMAT, "multi-line strings cannot be keys");
        }
        r = parse_line_string(p, &b);
    } else if (is_bare(c)) {
        while (is_bare(cur(p))) {
            p->pos++;
        }
        r = append(p, &b, p->s + start, p->pos - start, start);
    } else {
        char fb[16];
        r = perr(p, start, -DS_E_FORMAT, "expected a key, found %s", found(p, start, fb));
    }
    if (r == 0) {
        r = append(p, &b, "", 0, start); /* allocates the empty key */
    }
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    uint8_t *d;
    size_t n;
    ds_buf_steal(&b, &d, &n);
    kpart->s = (char *)d;
    kpart->len = n;
    kpart->off = start;
    return 0;
}

/* key = simple-key *( ws "." ws simple-key ) */
static int parse_key(struct parser *p, struct keypath *kp)
{
    kp->count = 0;
    for (;;) {
        if (kp->count >= DS_TOML_DEPTH_MAX) {
            keypath_done(kp);
            return perr(p, p->pos, -DS_E_LIMIT, "key has more than %d parts", DS_TOML_DEPTH_MAX);
        }
        int r = parse_key_part(p, &kp->parts[kp->count]);
        if (r < 0) {
            keypath_done(kp);
            return r;
        }
        kp->count++;
        size_t save = p->pos;
        skip_ws(p);
        if (cur(p) != '.') {
            p->pos = save;
            return 0;
        }
        p->pos++;
        skip_ws(p);
    }
}

/* ---- numbers and other bare values --------------------------------------------------------- */

static bool is_digit_base(int c, int base)
{
    switch (base) {
    case 2:
        return c == '0' || c == '1';
    case 8:
        return c >= '0' && c <= '7';
    case 16:
        return ds_hex_digit_value(c) >= 0;
    default:
        return c >= '0' && c <= '9';
    }
}

/* Digits of `base` with single '_' between digits, from t[*i]; at least one digit. Digits
 * (without '_') are appended to dig. */
static int scan_digits(struct parser *p, size_t off, const char *t, size_t n, size_t *i, int base,
                       char *dig, size_t *dn, size_t dmax)
{
    size_t start = *i;
    while (*i < n) {
        char c = t[*i];
        if (c == '_') {
            if (*i == start || *i + 1 >= n || !is_digit_base((unsigned char)t[*i + 1], base)) {
                return perr(p, off + *i, -DS_E_FORMAT,
                            "'_' in a number must sit between two digits");
            }
            (*i)++;
            continue;
        }
        if (!is_digit_base((unsigned char)c, base)) {
            break;
        }
        if (*dn + 1 >= dmax) {
            return perr(p, off, -DS_E_LIMIT, "number too long");
        }
        dig[(*dn)++] = c;
        (*i)++;
    }
    if (*i == start) {
        return perr(p, off + *i, -DS_E_FORMAT, "expected a digit in number");
    }
    dig[*dn] = 0;
    return 0;
}

#define NUMBER_TEXT_MAX 128

static int parse_number(struct parser *p, size_t off, const char *t, size_t n,
                        struct ds_toml_value **out)
{
    size_t i = 0;
    bool neg = false, sign = false;
    char dig[NUMBER_TEXT_MAX];
    size_t dn = 0;
    if (t[0] == '+' || t[0] == '-') {
        neg = t[0] == '-';
        sign = true;
        i++;
    }
    if (i < n && t[i] == '0' && i + 1 < n &&
        (t[i + 1] == 'x' || t[i + 1] == 'o' || t[i + 1] == 'b')) {
        int base = t[i + 1] == 'x' ? 16 : t[i + 1] == 'o' ? 8 : 2;
        if (sign) {
            return perr(p, off, -DS_E_FORMAT, "a sign is not allowed on hex/octal/binary integers");
        }
        i += 2;
        DS_TRY(scan_digits(p, off, t, n, &i, base, dig, &dn, sizeof(dig)));
        if (i != n) {
            return perr(p, off + i, -DS_E_FORMAT, "invalid character '%c' in integer", t[i]);
        }
        uint64_t v = 0;
        for (size_t k = 0; k < dn; k++) {
            uint64_t d = (uint64_t)ds_hex_digit_value(dig[k]);
            if (v > (UINT64_MAX - d) / (uint64_t)base) {
                return perr(p, off, -DS_E_FORMAT, "integer overflow (64-bit signed)");
            }
            v = v * (uint64_t)base + d;
        }
        if (v > (uint64_t)INT64_MAX) {
            return perr(p, off, -DS_E_FORMAT, "integer overflow (64-bit signed)");
        }
        DS_TRY(new_value(p, DS_TOML_INT, off, out));
        (*out)->u.i = (int64_t)v;
        return 0;
    }
    if (i >= n || !(t[i] >= '0' && t[i] <= '9')) {
        return perr(p, off, -DS_E_FORMAT, "expected a value, found '%.*s'", (int)(n > 40 ? 40 : n),
                    t);
    }
    if (t[i] == '0' && i + 1 < n && (t[i + 1] == '_' || (t[i + 1] >= '0' && t[i + 1] <= '9'))) {
        return perr(p, off + i, -DS_E_FORMAT, "leading zeros are not allowed in decimal numbers");
    }
    if (sign) {
        dig[dn++] = t[0];
    }
    DS_TRY(scan_digits(p, off, t, n, &i, 10, dig, &dn, sizeof(dig)));
    bool is_float = false;
    if (i < n && t[i] == '.') {
        is_float = true;
        dig[dn++] = '.';
        i++;
        if (i >= n || !(t[i] >= '0' && t[i] <= '9')) {
            return perr(p, off + i, -DS_E_FORMAT, "expected a digit after '.' in float");
        }
        DS_TRY(scan_digits(p, off, t, n, &i, 10, dig, &dn, sizeof(dig)));
    }
    if (i < n && (t[i] == 'e' || t[i] == 'E')) {
        is_float = true;
        if (dn + 2 >= sizeof(dig)) {
            return perr(p, off, -DS_E_LIMIT, "number too long");
        }
        dig[dn++] = 'e';
        i++;
        if (i < n && (t[i] == '+' || t[i] == '-')) {
            dig[dn++] = t[i++];
        }
        if (i >= n || !(t[i] >= '0' && t[i] <= '9')) {
            return perr(p, off + i, -DS_E_FORMAT, "expected a digit in the exponent");
        }
        DS_TRY(scan_digits(p, off, t, n, &i, 10, dig, &dn, sizeof(dig)));
    }
    if (i != n) {
        return perr(p, off + i, -DS_E_FORMAT, "invalid character '%c' in number", t[i]);
    }
    if (is_float) {
        errno = 0;
        char *end;
        double d = strtod(dig, &end);
        if (*end) {
            return perr(p, off, -DS_E_FORMAT, "invalid float");
        }
        if (errno == ERANGE && isinf(d)) {
            return perr(p, off, -DS_E_FORMAT, "float out of range");
        }
        DS_TRY(new_value(p, DS_TOML_FLOAT, off, out));
        (*out)->u.f = d;
        return 0;
    }
    uint64_t v = 0;
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    for (size_t k = sign ? 1 : 0; k < dn; k++) {
        uint64_t d = (uint64_t)(dig[k] - '0');
        if (v > (lim - d) / 10) {
            return perr(p, off, -DS_E_FORMAT, "integer overflow (64-bit signed)");
        }
        v = v * 10 + d;
    }
    DS_TRY(new_value(p, DS_TOML_INT, off, out));
    (*out)->u.i = neg ? (v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v) : (int64_t)v;
    return 0;
}

static bool is_delim(int c)
{
    return c < 0 || c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',' || c == ']' ||
           c == '}' || c == '#';
}

static bool isd(char c)
{
    return c >= '0' && c <= '9';
}

static int parse_bare_value(struct parser *p, struct ds_toml_value **out)
{
    size_t off = p->pos;
    while (!is_delim(cur(p))) {
        p->pos++;
    }
    const char *t = p->s + off;
    size_t n = p->pos - off;
    if (n == 0) {
        char fb[16];
        return perr(p, off, -DS_E_FORMAT, "expected a value, found %s", found(p, off, fb));
    }
    if ((n == 4 && memcmp(t, "true", 4) == 0) || (n == 5 && memcmp(t, "false", 5) == 0)) {
        DS_TRY(new_value(p, DS_TOML_BOOL, off, out));
        (*out)->u.b = n == 4;
        return 0;
    }
    const char *u = t;
    size_t un = n;
    if (un && (u[0] == '+' || u[0] == '-')) {
        u++, un--;
    }
    if (un == 3 && (memcmp(u, "inf", 3) == 0 || memcmp(u, "nan", 3) == 0)) {
        DS_TRY(new_value(p, DS_TOML_FLOAT, off, out));
        double d = u[0] == 'i' ? INFINITY : NAN;
        (*out)->u.f = t[0] == '-' ? -d : d;
        return 0;
    }
    /* 1979-05-27, 1979-05-27T07:32:00Z, 07:32:00: TOML dates and times */
    if ((n >= 5 && isd(t[0]) && isd(t[1]) && isd(t[2]) && isd(t[3]) && t[4] == '-') ||
        (n >= 3 && isd(t[0]) && isd(t[1]) && t[2] == ':')) {
        return perr(p, off, -DS_E_UNSUPPORTED,
                    "unsupported: datetime (dates and times are not used in dstack configs; "
                    "quote the value as a string)");
    }
    return parse_number(p, off, t, n, out);
}

/* ---- insertion rules ------------------------------------------------------------------------- */

/* Seal a value: inline tables and everything inside them can no longer be extended. */
static void seal(struct ds_toml_value *v)
{
    if (v->type == DS_TOML_TABLE) {
        v->origin = ORIGIN_INLINE;
        for (size_t i = 0; i < v->u.table.count; i++) {
            seal(v->u.table.items[i].value);
        }
    } else if (v->type == DS_TOML_ARRAY) {
        v->origin = ORIGIN_STATIC;
        for (size_t i = 0; i < v->u.array.count; i++) {
            seal(v->u.array.items[i]);
        }
    }
}

/* key = value inside table t (a section or an inline table) whose dotted keys belong to
 * `section`. Takes v on success. */
static int insert_dotted(struct parser *p, struct ds_toml_value *t, const struct keypath *kp,
                         struct ds_toml_value *v, uint32_t section, const char *prefix)
{
    char rel[256], path[520];
    for (size_t i = 0; i + 1 < kp->count; i++) {
        struct ds_toml_entry *e = table_find(t, kp->parts[i].s, kp->parts[i].len);
        const struct key_part *k = &kp->parts[i];
        if (!e) {
            struct ds_toml_value *nt;
            DS_TRY(new_value(p, DS_TOML_TABLE, k->off, &nt));
            nt->origin = ORIGIN_DOTTED;
            nt->section = section;
            int r = table_add(p, t, k, nt);
            if (r < 0) {
                ds_toml_free(nt);
                return r;
            }
            t = nt;
            continue;
        }
        struct ds_toml_value *x = e->value;
        join_path(kp, i + 1, rel, sizeof(rel));
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", rel);
        if (x->type != DS_TOML_TABLE) {
            return perr(p, k->off, -DS_E_FORMAT,
                        "cannot add keys to %s: it is already defined as %s", path, type_name(x));
        }
        if (x->origin == ORIGIN_INLINE) {
            return perr(p, k->off, -DS_E_FORMAT, "cannot add keys to inline table %s", path);
        }
        if (x->origin == ORIGIN_HEADER) {
            return perr(p, k->off, -DS_E_FORMAT,
                        "cannot add to table %s with dotted keys: it has its own [header]", path);
        }
        if (x->origin == ORIGIN_DOTTED && x->section != section) {
            return perr(p, k->off, -DS_E_FORMAT,
                        "cannot add to table %s: its dotted keys were defined in another section",
                        path);
        }
        if (x->origin == ORIGIN_IMPLICIT) {
            x->origin = ORIGIN_DOTTED;
            x->section = section;
        }
        t = x;
    }
    const struct key_part *last = &kp->parts[kp->count - 1];
    if (table_find(t, last->s, last->len)) {
        join_path(kp, kp->count, rel, sizeof(rel));
        snprintf(path, sizeof(path), "%s%s%s", prefix, *prefix ? "." : "", rel);
        return perr(p, last->off, -DS_E_FORMAT, "duplicate key %s", path);
    }
    return table_add(p, t, last, v);
}

static int parse_value(struct parser *p, int depth, struct ds_toml_value **out);

static int parse_array(struct parser *p, int depth, struct ds_toml_value **out)
{
    size_t start = p->pos;
    struct ds_toml_value *a;
    DS_TRY(new_value(p, DS_TOML_ARRAY, start, &a));
    a->origin = ORIGIN_STATIC;
    p->pos++;
    int r;
    for (;;) {
        if ((r = skip_ws_nl(p)) < 0) {
            goto out;
        }
        if (at_eof(p)) {
            r = perr(p, start, -DS_E_FORMAT, "unterminated array (expected ']')");
            goto out;
        }
        if (cur(p) == ']') {
            p->pos++;
            break;
        }
        struct ds_toml_value *v = NULL;
        if ((r = parse_value(p, depth + 1, &v)) < 0) {
            goto out;
        }
        if ((r = array_add(p, a, v)) < 0) {
            ds_toml_free(v);
            goto out;
        }
        if ((r = skip_ws_nl(p)) < 0) {
            goto out;
        }
        if (cur(p) == ',') {
            p->pos++;
            continue;
        }
        if (cur(p) == ']') {
            p->pos++;
            break;
        }
        if (at_eof(p)) {
            r = perr(p, start, -DS_E_FORMAT, "unterminated array (expected ']')");
            goto out;
        }
        char fb[16];
        r = perr(p, p->pos, -DS_E_FORMAT, "expected ',' or ']' in array, found %s",
                 found(p, p->pos, fb));
        goto out;
    }
    seal(a);
    *out = a;
    return 0;
out:
    ds_toml_free(a);
    return r;
}

static int parse_inline_table(struct parser *p, int depth, struct ds_toml_value **out)
{
    size_t start = p->pos;
    struct ds_toml_value *t;
    DS_TRY(new_value(p, DS_TOML_TABLE, start, &t));
    uint32_t section = ++p->next_section;
    struct keypath kp = {.count = 0};
    int r;
    char fb[16];
    p->pos++;
    skip_ws(p);
    if (cur(p) == '}') {
        p->pos++;
        goto done;
    }
    for (;;) {
        skip_ws(p);
        if (at_eof(p) || newline_len(p, p->pos) || cur(p) == '\r') {
            r = perr(p, at_eof(p) ? start : p->pos, -DS_E_FORMAT,
                     at_eof(p) ? "unterminated inline table (expected '}')"
                               : "newline inside an inline table (TOML 1.0 keeps them on "
                                 "one line)");
            goto out;
        }
        if (cur(p) == '}') {
            r = perr(p, p->pos, -DS_E_FORMAT, "trailing ',' is not allowed in an inline table");
            goto out;
        }
        if ((r = parse_key(p, &kp)) < 0) {
            goto out;
        }
        skip_ws(p);
        if (cur(p) != '=') {
            char qk[96];
            quote_key(kp.parts[kp.count - 1].s, kp.parts[kp.count - 1].len, qk, sizeof(qk));
            r = perr(p, p->pos, -DS_E_FORMAT, "expected '=' after key %s, found %s", qk,
                     found(p, p->pos, fb));
            goto out;
        }
        p->pos++;
        skip_ws(p);
        struct ds_toml_value *v = NULL;
        if ((r = parse_value(p, depth + 1, &v)) < 0) {
            goto out;
        }
        if ((r = insert_dotted(p, t, &kp, v, section, "")) < 0) {
            ds_toml_free(v);
            goto out;
        }
        keypath_done(&kp);
        skip_ws(p);
        if (cur(p) == ',') {
            p->pos++;
            continue;
        }
        if (cur(p) == '}') {
            p->pos++;
            break;
        }
        r = perr(p, at_eof(p) ? start : p->pos, -DS_E_FORMAT,
                 at_eof(p) ? "unterminated inline table (expected '}')"
                           : "expected ',' or '}' in inline table, found %s",
                 found(p, p->pos, fb));
        goto out;
    }
done:
    seal(t);
    *out = t;
    return 0;
out:
    keypath_done(&kp);
    ds_toml_free(t);
    return r;
}

static int parse_value(struct parser *p, int depth, struct ds_toml_value **out)
{
    if (depth > DS_TOML_DEPTH_MAX) {
        return perr(p, p->pos, -DS_E_LIMIT, "values nested deeper than %d", DS_TOML_DEPTH_MAX);
    }
    switch (cur(p)) {
    case '"':
    case '\'':
        return parse_string_value(p, out);
    case '[':
        return parse_array(p, depth, out);
    case '{':
        return parse_inline_table(p, depth, out);
    default:
        return parse_bare_value(p, out);
    }
}

/* ---- document -------------------------------------------------------------------------------- */

static int parse_header(struct parser *p, struct ds_toml_value *root, struct ds_toml_value **cur_t)
{
    size_t start = p->pos;
    bool aot = peek(p, 1) == '[';
    struct keypath kp = {.count = 0};
    char path[256];
    char fb[16];
    int r;
    p->pos += aot ? 2 : 1;
    skip_ws(p);
    if ((r = parse_key(p, &kp)) < 0) {
        return r;
    }
    skip_ws(p);
    if (cur(p) != ']' || (aot && peek(p, 1) != ']')) {
        size_t at = cur(p) == ']' ? p->pos + 1 : p->pos;
        r = perr(p, at, -DS_E_FORMAT, "expected '%s' to close the table header, found %s",
                 aot ? "]]" : "]", found(p, at, fb));
        goto out;
    }
    p->pos += aot ? 2 : 1;
    if ((r = expect_eol(p, "table header")) < 0) {
        goto out;
    }
    struct ds_toml_value *t = root;
    for (size_t i = 0; i + 1 < kp.count; i++) {
        const struct key_part *k = &kp.parts[i];
        struct ds_toml_entry *e = table_find(t, k->s, k->len);
        if (!e) {
            struct ds_toml_value *nt;
            if ((r = new_value(p, DS_TOML_TABLE, k->off, &nt)) < 0) {
                goto out;
            }
            nt->origin = ORIGIN_IMPLICIT;
            if ((r = table_add(p, t, k, nt)) < 0) {
                ds_toml_free(nt);
                goto out;
            }
            t = nt;
            continue;
        }
        struct ds_toml_value *x = e->value;
        join_path(&kp, i + 1, path, sizeof(path));
        if (x->type == DS_TOML_TABLE && x->origin != ORIGIN_INLINE) {
            t = x;
        } else if (x->type == DS_TOML_ARRAY && x->origin == ORIGIN_AOT) {
            t = x->u.array.items[x->u.array.count - 1];
        } else {
            r = perr(p, k->off, -DS_E_FORMAT, "cannot define a table under %s: it is defined as %s",
                     path, type_name(x));
            goto out;
        }
    }
    const struct key_part *last = &kp.parts[kp.count - 1];
    struct ds_toml_entry *e = table_find(t, last->s, last->len);
    join_path(&kp, kp.count, path, sizeof(path));
    struct ds_toml_value *nt = NULL;
    if (aot) {
        struct ds_toml_value *arr;
        if (!e) {
            if ((r = new_value(p, DS_TOML_ARRAY, start, &arr)) < 0) {
                goto out;
            }
            arr->origin = ORIGIN_AOT;
            if ((r = table_add(p, t, last, arr)) < 0) {
                ds_toml_free(arr);
                goto out;
            }
        } else if (e->value->type == DS_TOML_ARRAY && e->value->origin == ORIGIN_AOT) {
            arr = e->value;
        } else {
            r = perr(p, start, -DS_E_FORMAT,
                     "cannot define array of tables [[%s]]: %s is already defined as %s", path,
                     path, type_name(e->value));
            goto out;
        }
        if ((r = new_value(p, DS_TOML_TABLE, start, &nt)) < 0) {
            goto out;
        }
        nt->origin = ORIGIN_HEADER;
        if ((r = array_add(p, arr, nt)) < 0) {
            ds_toml_free(nt);
            goto out;
        }
    } else if (!e) {
        if ((r = new_value(p, DS_TOML_TABLE, start, &nt)) < 0) {
            goto out;
        }
        nt->origin = ORIGIN_HEADER;
        if ((r = table_add(p, t, last, nt)) < 0) {
            ds_toml_free(nt);
            goto out;
        }
    } else if (e->value->type == DS_TOML_TABLE && e->value->origin == ORIGIN_IMPLICIT) {
        nt = e->value;
        nt->origin = ORIGIN_HEADER;
        nt->off = start;
    } else if (e->value->type == DS_TOML_TABLE && e->value->origin == ORIGIN_HEADER) {
        r = perr(p, start, -DS_E_FORMAT, "table [%s] defined twice", path);
        goto out;
    } else if (e->value->type == DS_TOML_TABLE && e->value->origin == ORIGIN_DOTTED) {
        r = perr(p, start, -DS_E_FORMAT, "table [%s] already defined by dotted keys", path);
        goto out;
    } else {
        r = perr(p, start, -DS_E_FORMAT, "cannot define table [%s]: it is already defined as %s",
                 path, type_name(e->value));
        goto out;
    }
    *cur_t = nt;
    join_path(&kp, kp.count, p->section_path, sizeof(p->section_path));
    r = 0;
out:
    keypath_done(&kp);
    return r;
}

static int parse_keyval(struct parser *p, struct ds_toml_value *t, uint32_t section)
{
    struct keypath kp = {.count = 0};
    struct ds_toml_value *v = NULL;
    char fb[16];
    int r = parse_key(p, &kp);
    if (r < 0) {
        return r;
    }
    skip_ws(p);
    if (cur(p) != '=') {
        char qk[96];
        quote_key(kp.parts[kp.count - 1].s, kp.parts[kp.count - 1].len, qk, sizeof(qk));
        r = perr(p, p->pos, -DS_E_FORMAT, "expected '=' after key %s, found %s", qk,
                 found(p, p->pos, fb));
        goto out;
    }
    p->pos++;
    skip_ws(p);
    if (at_eof(p) || newline_len(p, p->pos) || cur(p) == '#') {
        r = perr(p, p->pos, -DS_E_FORMAT, "expected a value after '=', found %s",
                 found(p, p->pos, fb));
        goto out;
    }
    if ((r = parse_value(p, 1, &v)) < 0) {
        goto out;
    }
    if ((r = insert_dotted(p, t, &kp, v, section, p->section_path)) < 0) {
        ds_toml_free(v);
        goto out;
    }
    r = expect_eol(p, "value");
out:
    keypath_done(&kp);
    return r;
}

int ds_toml_parse(const char *text, size_t len, const char *name, struct ds_toml_value **out_root,
                  struct ds_config_err *err)
{
    struct parser p = {.s = text, .len = len, .name = name ? name : "<input>", .err = err};
    struct ds_toml_value *root = NULL;
    int r;
    if (err) {
        memset(err, 0, sizeof(*err));
    }
    if (len > DS_TOML_FILE_MAX) {
        return perr(&p, 0, -DS_E_LIMIT, "file larger than %d bytes", DS_TOML_FILE_MAX);
    }
    if ((r = check_utf8(&p)) < 0) {
        return r;
    }
    if ((r = new_value(&p, DS_TOML_TABLE, 0, &root)) < 0) {
        return r;
    }
    root->origin = ORIGIN_HEADER;
    struct ds_toml_value *t = root;
    uint32_t section = ++p.next_section;
    /* a UTF-8 byte order mark is allowed at the start */
    if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0) {
        p.pos = 3;
    }
    for (;;) {
        skip_ws(&p);
        if (at_eof(&p)) {
            break;
        }
        int c = cur(&p);
        size_t nl = newline_len(&p, p.pos);
        if (nl) {
            p.pos += nl;
        } else if (c == '#') {
            if ((r = expect_eol(&p, "comment")) < 0) {
                goto out;
            }
        } else if (c == '[') {
            if ((r = parse_header(&p, root, &t)) < 0) {
                goto out;
            }
            section = ++p.next_section;
        } else if (c == '\r') {
            r = perr(&p, p.pos, -DS_E_FORMAT, "carriage return without a line feed");
            goto out;
        } else {
            if ((r = parse_keyval(&p, t, section)) < 0) {
                goto out;
            }
        }
    }
    *out_root = root;
    return 0;
out:
    ds_toml_free(root);
    return r;
}

/* ---- JSON view (tests, cross-checks, debugging) ---------------------------------------------- */

static json_t *tagged(const char *type, const char *value)
{
    return json_pack("{s:s, s:s}", "type", type, "value", value);
}

struct json_t *ds_toml_to_json(const struct ds_toml_value *v)
{
    char buf[64];
    json_t *j = NULL;
    switch (v->type) {
    case DS_TOML_TABLE:
        j = json_object();
        for (size_t i = 0; j && i < v->u.table.count; i++) {
            const struct ds_toml_entry *e = &v->u.table.items[i];
            json_t *c = ds_toml_to_json(e->value);
            /* keys may contain NUL: jansson keys are C strings, so such keys are cut there */
            if (!c || json_object_set_new(j, e->key, c) < 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    case DS_TOML_ARRAY:
        j = json_array();
        for (size_t i = 0; j && i < v->u.array.count; i++) {
            if (json_array_append_new(j, ds_toml_to_json(v->u.array.items[i])) < 0) {
                json_decref(j);
                return NULL;
            }
        }
        return j;
    case DS_TOML_STRING: {
        json_t *s = json_stringn(v->u.str.ptr, v->u.str.len);
        j = s ? json_pack("{s:s, s:o}", "type", "string", "value", s) : NULL;
        return j;
    }
    case DS_TOML_INT:
        snprintf(buf, sizeof(buf), "%lld", (long long)v->u.i);
        return tagged("integer", buf);
    case DS_TOML_FLOAT:
        if (isnan(v->u.f)) {
            snprintf(buf, sizeof(buf), "nan");
        } else if (isinf(v->u.f)) {
            snprintf(buf, sizeof(buf), "%s", v->u.f < 0 ? "-inf" : "inf");
        } else {
            snprintf(buf, sizeof(buf), "%.17g", v->u.f);
        }
        return tagged("float", buf);
    case DS_TOML_BOOL:
        return tagged("bool", v->u.b ? "true" : "false");
    }
    return NULL;
}
