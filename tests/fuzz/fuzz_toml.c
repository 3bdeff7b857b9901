/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for lib/config: the input is parsed as TOML (and turned into JSON), then loaded
 * through a schema with every field type. Whatever loads must dump to TOML that loads again
 * to the same dump (abort otherwise), and every error must carry a "name:line:col:" message.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "dstack/config.h"

struct fz_port {
    char *protocol;
    uint16_t from, to;
};

struct fz_cfg {
    char *name;
    char *path;
    bool flag;
    int64_t n;
    uint16_t port;
    uint64_t size;
    uint64_t dur;
    int mode;
    struct ds_config_strv list;
    struct ds_config_tables ranges;
    char *secret;
    struct ds_config_intv uids;
    struct ds_config_strmap params;
    uint64_t after;
};

static const char *const fz_modes[] = {"user", "bridge", "custom", NULL};

#define PF(f) offsetof(struct fz_port, f)
static const struct ds_config_key fz_port_keys[] = {
    {"protocol", DS_CFG_STRING, PF(protocol), "tcp", 0, 0, NULL, NULL, "tcp or udp", 0},
    {"from", DS_CFG_PORT, PF(from), NULL, 1, 65535, NULL, NULL, "first port", DS_CFG_REQUIRED},
    {"to", DS_CFG_PORT, PF(to), NULL, 1, 65535, NULL, NULL, "last port", DS_CFG_REQUIRED},
};
static const struct ds_config_schema fz_port_schema = {
    "range", fz_port_keys, DS_ARRAY_SIZE(fz_port_keys), sizeof(struct fz_port)};

#define F(f) offsetof(struct fz_cfg, f)
static const struct ds_config_key fz_keys[] = {
    {"name", DS_CFG_STRING, F(name), "x", 0, 64, NULL, NULL, "a name", 0},
    {"core.path", DS_CFG_PATH, F(path), NULL, 0, 0, NULL, NULL, "a path", 0},
    {"core.flag", DS_CFG_BOOL, F(flag), "true", 0, 0, NULL, NULL, "a flag", 0},
    {"core.n", DS_CFG_INT, F(n), "-5", -100, 100, NULL, NULL, "a number", 0},
    {"core.onboard.port", DS_CFG_PORT, F(port), "8000", 0, 0, NULL, NULL, "a port", 0},
    {"core.size", DS_CFG_SIZE, F(size), "10MiB", 0, 0, NULL, NULL, "a size", 0},
    {"core.timeout", DS_CFG_DURATION, F(dur), "2m", 0, 0, NULL, NULL, "a duration", 0},
    {"net.mode", DS_CFG_ENUM, F(mode), "user", 0, 0, fz_modes, NULL, "a mode", 0},
    {"net.list", DS_CFG_STRINGS, F(list), "[\"a\", \"b\"]", 0, 0, NULL, NULL, "names", 0},
    {"net.range", DS_CFG_TABLES, F(ranges), NULL, 0, 0, NULL, &fz_port_schema, "ranges", 0},
    {"net.token", DS_CFG_STRING, F(secret), NULL, 0, 0, NULL, NULL, "a token", DS_CFG_SECRET},
    {"net.uids", DS_CFG_INTS, F(uids), "[0]", 0, 65535, NULL, NULL, "uids", 0},
    {"net.params", DS_CFG_STRMAP, F(params), "{ a = \"b\" }", 0, 0, NULL, NULL, "params", 0},
    {"core.after", DS_CFG_DURATION, F(after), "unset", 0, 0, NULL, NULL, "optional", 0},
};
static const struct ds_config_schema fz_schema = {"fuzz.toml", fz_keys, DS_ARRAY_SIZE(fz_keys),
                                                  sizeof(struct fz_cfg)};

static char *dump(const struct fz_cfg *c, size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (!f) {
        abort();
    }
    if (ds_config_dump(&fz_schema, c, f) < 0) {
        abort();
    }
    fclose(f);
    return buf;
}

static void check_err(const struct ds_config_err *err)
{
    if (strncmp(err->msg, "fuzz.toml:", 10) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_toml_value *root = NULL;
    struct ds_config_err err;
    if (ds_toml_parse((const char *)data, size, "fuzz.toml", &root, &err) == 0) {
        json_t *j = ds_toml_to_json(root);
        char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
        free(s);
        json_decref(j);
        ds_toml_free(root);
    } else {
        check_err(&err);
    }

    struct fz_cfg cfg = {0};
    if (ds_config_load_text(&fz_schema, (const char *)data, size, "fuzz.toml", &cfg, &err) < 0) {
        check_err(&err);
        return 0;
    }
    size_t l1, l2;
    char *d1 = dump(&cfg, &l1);
    struct fz_cfg again = {0};
    if (ds_config_load_text(&fz_schema, d1, l1, "fuzz.toml", &again, &err) < 0) {
        fprintf(stderr, "dump does not load: %s\n%s\n", err.msg, d1);
        abort();
    }
    char *d2 = dump(&again, &l2);
    if (l1 != l2 || memcmp(d1, d2, l1) != 0) {
        fprintf(stderr, "dump differs after reload:\n%s\n---\n%s\n", d1, d2);
        abort();
    }
    free(d1);
    free(d2);
    ds_config_free(&fz_schema, &cfg);
    ds_config_free(&fz_schema, &again);
    return 0;
}
