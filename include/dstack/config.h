/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack config: a strict TOML v1.0 reader and the schema tables that drive every daemon's
 * configuration (STYLE.md rule 7). kms.toml, vmm.toml and gateway.toml are read by the same
 * code: the TOML text becomes a small document tree (ds_toml_parse), and a schema table (one
 * row per dotted key: type, field offset, default, limits, help, flags) turns the tree into
 * the daemon's config struct (ds_config_load), prints the effective config (ds_config_dump,
 * for --dump-config) and the key reference (ds_config_doc, for docs). Unknown keys are
 * errors. The reader is hand-written because Debian 12 packages no C TOML library.
 *
 * Errors: every failing call fills a struct ds_config_err whose msg reads
 * "<name>:<line>:<col>: <what was expected or wrong>" (line and column 1-based, columns count
 * characters). See docs/config.md.
 */
#ifndef DSTACK_CONFIG_H
#define DSTACK_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dstack/base.h"

/* ---- limits (named here so callers and docs can cite them) --------------------------------- */
#define DS_TOML_FILE_MAX       (1024 * 1024) /* bytes of TOML text */
#define DS_TOML_DEPTH_MAX      32            /* nesting of arrays / inline tables / key parts */
#define DS_TOML_STRING_MAX     (64 * 1024)   /* bytes in one decoded string or key */
#define DS_TOML_TABLE_KEYS_MAX 4096          /* entries in one table or array */
#define DS_TOML_NODES_MAX      200000        /* values in one document */
#define DS_CONFIG_ERR_MAX      512           /* bytes of an error message */

struct ds_config_err {
    char msg[DS_CONFIG_ERR_MAX]; /* "name:line:col: message", NUL-terminated */
    unsigned line;               /* 0 when the error has no position (e.g. a missing key) */
    unsigned col;
};

/* ---- the TOML document tree ------------------------------------------------------------------ */

enum ds_toml_type {
    DS_TOML_TABLE,
    DS_TOML_ARRAY,
    DS_TOML_STRING,
    DS_TOML_INT,
    DS_TOML_FLOAT,
    DS_TOML_BOOL,
};

struct ds_toml_value;

struct ds_toml_entry {
    char *key; /* decoded key part (may contain any UTF-8 except NUL), NUL-terminated */
    size_t key_len;
    size_t key_off; /* byte offset of the key in the source text */
    struct ds_toml_value *value;
};

/*
 * A value in the tree. Read-only for users; owned by the document. Tables keep their keys in
 * document order. Strings are NUL-terminated but may also contain NUL (\u0000): use len.
 */
struct ds_toml_value {
    enum ds_toml_type type;
    size_t off; /* byte offset of the value (tables: of their header or first key) */
    union {
        struct {
            char *ptr;
            size_t len;
        } str;
        int64_t i;
        double f;
        bool b;
        struct {
            struct ds_toml_entry *items;
            size_t count;
            size_t cap;
        } table;
        struct {
            struct ds_toml_value **items;
            size_t count;
            size_t cap;
        } array;
    } u;
    /* parser bookkeeping (how the table was defined), not for users */
    uint8_t origin;
    uint32_t section;
};

/*
 * Parse TOML text (len bytes, need not be NUL-terminated). `name` (e.g. the file name) prefixes
 * error messages. On success *out_root is a table owned by the caller (ds_toml_free).
 * Returns 0; -DS_E_FORMAT (syntax or TOML semantic error: duplicate key, redefined table,
 * invalid UTF-8, bad escape, integer overflow...), -DS_E_UNSUPPORTED (date/time values),
 * -DS_E_LIMIT (a DS_TOML_* limit), -ENOMEM. err (optional) says where and what.
 */
DS_MUST_USE int ds_toml_parse(const char *text, size_t len, const char *name,
                              struct ds_toml_value **out_root, struct ds_config_err *err);
/* Free a document from ds_toml_parse. NULL-safe. */
void ds_toml_free(struct ds_toml_value *root);
/* Look up a direct child of a table by key; NULL when absent or t is not a table. Borrowed. */
const struct ds_toml_value *ds_toml_get(const struct ds_toml_value *t, const char *key);
/*
 * The tree as JSON in the toml-test encoding: tables are objects, arrays are arrays, scalars
 * are {"type": "string"|"integer"|"float"|"bool", "value": "<text>"} (floats as "%.17g",
 * "inf", "-inf", "nan"). Returns a new jansson reference (json_decref) or NULL on ENOMEM.
 */
struct json_t *ds_toml_to_json(const struct ds_toml_value *v);
/* 1-based line and column (in characters) of byte offset off in text. */
void ds_toml_position(const char *text, size_t len, size_t off, unsigned *out_line,
                      unsigned *out_col);

/* ---- schema tables --------------------------------------------------------------------------- */

/*
 * Field types and the C type of the struct member each one fills:
 *   STRING, PATH   char *              (malloc'd; NULL when unset and no default)
 *   BOOL           bool
 *   INT            int64_t             (min/max apply when either is non-zero)
 *   PORT           uint16_t            (0..65535, narrowed by min/max)
 *   SIZE           uint64_t bytes      (integer, or "64K", "10MiB", "4M", "1GB": K/Ki/KiB=1024,
 *                                       KB=1000, same for M, G, T)
 *   DURATION       uint64_t millis     ("500ms", "30s", "2m", "5h", "10d", "1h30m"; units
 *                                       ms s m h d w; an integer is rejected: say the unit)
 *   ENUM           int                 (index into choices, a NULL-terminated list)
 *   STRINGS        struct ds_config_strv
 *   INTS           struct ds_config_intv   (array of integers; min/max apply to each)
 *   STRMAP         struct ds_config_strmap (a table whose values are strings, any keys:
 *                                       vmm.toml `parameters = { ... }`)
 *   TABLES         struct ds_config_tables (array of tables / inline tables, each filled
 *                                       from the sub schema; C elements of sub->size bytes)
 * SIZE and DURATION take the default "unset": the member is then DS_CONFIG_UNSET until the file
 * sets it (upstream's "absent = off" options).
 */
enum ds_config_type {
    DS_CFG_STRING,
    DS_CFG_PATH,
    DS_CFG_BOOL,
    DS_CFG_INT,
    DS_CFG_PORT,
    DS_CFG_SIZE,
    DS_CFG_DURATION,
    DS_CFG_ENUM,
    DS_CFG_STRINGS,
    DS_CFG_INTS,
    DS_CFG_STRMAP,
    DS_CFG_TABLES,
};

#define DS_CONFIG_UNSET UINT64_MAX /* SIZE / DURATION member when the default is "unset" */

enum ds_config_flags {
    DS_CFG_REQUIRED = 1u << 0, /* the file must set the key */
    DS_CFG_SECRET = 1u << 1,   /* never printed by ds_config_dump */
};

struct ds_config_strv {
    char **items; /* malloc'd strings */
    size_t count;
};

struct ds_config_intv {
    int64_t *items;
    size_t count;
};

struct ds_config_strmap {
    char **keys; /* malloc'd, in file order, unique */
    char **values;
    size_t count;
};

struct ds_config_tables {
    void *items; /* count elements of the sub schema's size */
    size_t count;
};

struct ds_config_schema;

struct ds_config_key {
    const char *key; /* dotted path, e.g. "core.onboard.port" */
    enum ds_config_type type;
    size_t offset; /* offsetof() of the member in the config struct */
    /*
     * Default as text in the key's own syntax ("8000", "true", "2m", "10MiB", "auto",
     * "0.0.0.0"); STRINGS and INTS take a TOML array ("[\"1.2\"]"), STRMAP an inline table
     * ("{ a = \"b\" }"); NULL = zero / NULL / empty.
     */
    const char *def;
    int64_t min, max;                   /* INT, PORT, SIZE, DURATION(ms), STRING length */
    const char *const *choices;         /* ENUM: allowed values, NULL-terminated */
    const struct ds_config_schema *sub; /* TABLES: schema of one element */
    const char *help;                   /* one line for docs and the dump */
    unsigned flags;                     /* enum ds_config_flags */
};

struct ds_config_schema {
    const char *name; /* e.g. "kms.toml", for docs */
    const struct ds_config_key *keys;
    size_t count;
    size_t size; /* sizeof the config struct */
};

/*
 * Fill cfg from defaults, then the TOML text, then validate (ranges, enums, required keys).
 * `name` prefixes errors. cfg is a struct of schema->size bytes that owns nothing (zeroed, or
 * released with ds_config_free): on success all schema->size bytes are overwritten, so keep
 * non-config members elsewhere. On failure cfg is left unchanged and err explains: unknown
 * keys (with a suggestion), type mismatches (key, expected type, got type), out-of-range/enum
 * values, missing required keys.
 * Returns 0, -DS_E_FORMAT, -DS_E_UNSUPPORTED, -DS_E_LIMIT, -DS_E_NOT_FOUND (required key
 * missing), -EINVAL (a default in the schema does not parse: a programming error), -ENOMEM.
 * Release with ds_config_free().
 */
DS_MUST_USE int ds_config_load_text(const struct ds_config_schema *schema, const char *text,
                                    size_t len, const char *name, void *cfg,
                                    struct ds_config_err *err);
/* ds_config_load_text on the contents of path (at most DS_TOML_FILE_MAX bytes); -errno if the
 * file cannot be read. The error name is the path. */
DS_MUST_USE int ds_config_load(const struct ds_config_schema *schema, const char *path, void *cfg,
                               struct ds_config_err *err);
/* Defaults only (no file); -DS_E_NOT_FOUND if a key is DS_CFG_REQUIRED. */
DS_MUST_USE int ds_config_defaults(const struct ds_config_schema *schema, void *cfg,
                                   struct ds_config_err *err);
/* Free every owned string/array of cfg (wiping DS_CFG_SECRET strings) and zero those members.
 * NULL-safe. */
void ds_config_free(const struct ds_config_schema *schema, void *cfg);

/*
 * Print the effective config as TOML that ds_config_load reads back to the same struct
 * (secret keys and unset strings appear as comments, so they come back as their defaults).
 * Returns 0 or -EIO.
 */
DS_MUST_USE int ds_config_dump(const struct ds_config_schema *schema, const void *cfg, FILE *out);
/* Print a Markdown table (key, type, default, description) of the schema. 0 or -EIO. */
DS_MUST_USE int ds_config_doc(const struct ds_config_schema *schema, FILE *out);

/* The unit parsers behind DURATION and SIZE, for daemons that read such values elsewhere.
 * 0 or -DS_E_FORMAT (bad syntax) / -DS_E_LIMIT (overflow). */
DS_MUST_USE int ds_config_parse_duration(const char *s, uint64_t *out_ms);
DS_MUST_USE int ds_config_parse_size(const char *s, uint64_t *out_bytes);

#endif /* DSTACK_CONFIG_H */
