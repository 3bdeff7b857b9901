/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading app-compose.json the way the guest does (spec host-side.md §2.1, §3.3 step 4): the
 * typed fields with their serde defaults (public_tcbinfo and secure_time default to true),
 * gateway_enabled OR'ed with its alias tproxy_enabled, init_script as a string or a list, and
 * the policy checks the guest applies before anything is measured (manifest_version <= 3 and
 * the "3"-only features, snapshotter, storage_fs, event_log_version, requirements with
 * unknown fields refused, verity volume shapes). Unknown top-level fields are ignored; every
 * error names its field. Also the identity helpers of §2.2.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compose/compose_internal.h"
#include "dstack/crypto.h"

#define FIELD_MAX DS_COMPOSE_ERR_FIELD_MAX

static const char *const kp_names[] = {
    [DS_KP_NONE] = "none",
    [DS_KP_LOCAL] = "local",
    [DS_KP_KMS] = "kms",
    [DS_KP_TPM] = "tpm",
};

const char *ds_key_provider_name(enum ds_key_provider kp)
{
    if ((size_t)kp < DS_ARRAY_SIZE(kp_names)) {
        return kp_names[kp];
    }
    return "none";
}

int ds_key_provider_parse(const char *s, enum ds_key_provider *out)
{
    for (size_t i = 0; s != NULL && i < DS_ARRAY_SIZE(kp_names); i++) {
        if (strcmp(s, kp_names[i]) == 0) {
            *out = (enum ds_key_provider)i;
            return 0;
        }
    }
    return -DS_E_FORMAT;
}

static void free_list(char **l, size_t n)
{
    for (size_t i = 0; l != NULL && i < n; i++) {
        free(l[i]);
    }
    free(l);
}

void ds_app_compose_free(struct ds_app_compose *c)
{
    if (c == NULL) {
        return;
    }
    free(c->name);
    free(c->runner);
    free(c->snapshotter);
    free(c->docker_compose_file);
    free(c->bash_script);
    free(c->pre_launch_script);
    free_list(c->init_scripts, c->init_script_count);
    free_list(c->features, c->feature_count);
    free(c->key_provider_id);
    free_list(c->allowed_envs, c->allowed_env_count);
    free(c->storage_fs);
    free(c->ports);
    free(c->requirements.os_version);
    free_list(c->requirements.platforms, c->requirements.platform_count);
    free(c->requirements.gpu_rego);
    for (size_t i = 0; i < c->verity_volume_count; i++) {
        free(c->verity_volumes[i].source);
        free(c->verity_volumes[i].target);
    }
    free(c->verity_volumes);
    free(c);
}

/* ---- typed field readers; each names the field on error ------------------------------------ */

static int str_dup(const json_t *v, const char *field, char **out, struct ds_compose_error *err)
{
    if (!json_is_string(v)) {
        compose_set_err(err, field, "expected a string");
        return -DS_E_FORMAT;
    }
    size_t len = json_string_length(v);
    if (memchr(json_string_value(v), '\0', len) != NULL) {
        compose_set_err(err, field, "string contains U+0000");
        return -DS_E_FORMAT;
    }
    char *s = strdup(json_string_value(v));
    if (s == NULL) {
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

/* Optional string: absent or null leaves *out NULL (serde Option<String>). */
static int opt_str(const json_t *obj, const char *key, char **out, struct ds_compose_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL || json_is_null(v)) {
        return 0;
    }
    return str_dup(v, key, out, err);
}

static int get_bool(const json_t *obj, const char *key, bool dflt, bool *out,
                    struct ds_compose_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        *out = dflt;
        return 0;
    }
    if (!json_is_boolean(v)) {
        compose_set_err(err, key, "expected true or false");
        return -DS_E_FORMAT;
    }
    *out = json_is_true(v);
    return 0;
}

/* A list of strings; with allow_single a bare string counts as a one-element list. */
static int str_list(const json_t *v, const char *field, bool allow_single, size_t max, char ***out,
                    size_t *out_count, struct ds_compose_error *err)
{
    char fname[FIELD_MAX];
    if (allow_single && json_is_string(v)) {
        char **l = calloc(1, sizeof(*l));
        if (l == NULL) {
            return -ENOMEM;
        }
        int rc = str_dup(v, field, &l[0], err);
        if (rc < 0) {
            free(l);
            return rc;
        }
        *out = l;
        *out_count = 1;
        return 0;
    }
    if (!json_is_array(v)) {
        compose_set_err(err, field,
                        allow_single ? "expected a string or a list of strings"
                                     : "expected a list of strings");
        return -DS_E_FORMAT;
    }
    size_t n = json_array_size(v);
    if (n > max) {
        compose_set_err(err, field, "%zu entries, at most %zu allowed", n, max);
        return -DS_E_LIMIT;
    }
    char **l = calloc(n ? n : 1, sizeof(*l));
    if (l == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        snprintf(fname, sizeof(fname), "%s[%zu]", field, i);
        int rc = str_dup(json_array_get(v, i), fname, &l[i], err);
        if (rc < 0) {
            free_list(l, i);
            return rc;
        }
    }
    *out = l;
    *out_count = n;
    return 0;
}

static int opt_str_list(const json_t *obj, const char *key, size_t max, char ***out,
                        size_t *out_count, struct ds_compose_error *err)
{
    const json_t *v = json_object_get(obj, key);
    if (v == NULL) {
        return 0;
    }
    return str_list(v, key, false, max, out, out_count, err);
}

static bool is_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'))) {
            return false;
        }
    }
    return true;
}

/* manifest_version: canonical positive integer string, or a legacy number 1 or 2. */
static int parse_manifest_version(const json_t *v, struct ds_app_compose *c,
                                  struct ds_compose_error *err)
{
    const char *f = "manifest_version";
    if (v == NULL) {
        compose_set_err(err, f, "missing (required)");
        return -DS_E_FORMAT;
    }
    if (json_is_integer(v)) {
        json_int_t n = json_integer_value(v);
        if (n != 1 && n != 2) {
            compose_set_err(err, f, "a numeric manifest_version must be 1 or 2 (use \"%lld\")",
                            (long long)n);
            return n > 2 ? -DS_E_UNSUPPORTED : -DS_E_FORMAT;
        }
        c->manifest_version = (uint32_t)n;
        c->manifest_is_string = false;
        return 0;
    }
    if (!json_is_string(v)) {
        compose_set_err(err, f, "expected a string such as \"3\" or a number 1 or 2");
        return -DS_E_FORMAT;
    }
    const char *s = json_string_value(v);
    size_t len = json_string_length(v);
    if (len == 0 || len > 9 || s[0] == '0') {
        compose_set_err(err, f, "not a canonical positive integer");
        return -DS_E_FORMAT;
    }
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') {
            compose_set_err(err, f, "not a canonical positive integer");
            return -DS_E_FORMAT;
        }
        n = n * 10 + (uint32_t)(s[i] - '0');
    }
    if (n > DS_COMPOSE_MANIFEST_MAX) {
        compose_set_err(err, f, "version %u is newer than the supported %d", n,
                        DS_COMPOSE_MANIFEST_MAX);
        return -DS_E_UNSUPPORTED;
    }
    c->manifest_version = n;
    c->manifest_is_string = true;
    return 0;
}

/* A human size: a non-negative integer, or a string "<digits>[K|M|G|T][B|iB]" (binary units). */
static int parse_human_size(const json_t *v, const char *field, uint64_t *out,
                            struct ds_compose_error *err)
{
    if (json_is_integer(v)) {
        if (json_integer_value(v) < 0) {
            compose_set_err(err, field, "must not be negative");
            return -DS_E_FORMAT;
        }
        *out = (uint64_t)json_integer_value(v);
        return 0;
    }
    if (!json_is_string(v)) {
        compose_set_err(err, field, "expected bytes or a size such as \"4G\"");
        return -DS_E_FORMAT;
    }
    const char *s = json_string_value(v);
    uint64_t n = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        if (n > (UINT64_MAX - 9) / 10) {
            compose_set_err(err, field, "too large");
            return -DS_E_LIMIT;
        }
        n = n * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == 0) {
        compose_set_err(err, field, "expected bytes or a size such as \"4G\"");
        return -DS_E_FORMAT;
    }
    static const char units[] = "KMGT";
    unsigned shift = 0;
    if (s[i] != '\0') {
        const char *u = strchr(units, s[i] & ~0x20);
        if (u == NULL || s[i] == '\0') {
            compose_set_err(err, field, "unknown unit in \"%s\" (K, M, G or T)", s);
            return -DS_E_FORMAT;
        }
        shift = 10u * (unsigned)(u - units + 1);
        i++;
        if ((s[i] == 'i' || s[i] == 'I') && (s[i + 1] == 'B' || s[i + 1] == 'b')) {
            i += 2;
        } else if (s[i] == 'B' || s[i] == 'b') {
            i++;
        }
        if (s[i] != '\0') {
            compose_set_err(err, field, "unknown unit in \"%s\" (K, M, G or T)", s);
            return -DS_E_FORMAT;
        }
    }
    if (shift > 0 && n > (UINT64_MAX >> shift)) {
        compose_set_err(err, field, "too large");
        return -DS_E_LIMIT;
    }
    *out = n << shift;
    return 0;
}

static int parse_port_policy(const json_t *v, struct ds_app_compose *c,
                             struct ds_compose_error *err)
{
    char f[FIELD_MAX];
    if (!json_is_object(v)) {
        compose_set_err(err, "port_policy", "expected an object");
        return -DS_E_FORMAT;
    }
    const json_t *rm = json_object_get(v, "restrict_mode");
    if (rm != NULL && !json_is_boolean(rm)) {
        compose_set_err(err, "port_policy.restrict_mode", "expected true or false");
        return -DS_E_FORMAT;
    }
    c->port_restrict_mode = json_is_true(rm);
    const json_t *ports = json_object_get(v, "ports");
    if (ports == NULL) {
        return 0;
    }
    if (!json_is_array(ports)) {
        compose_set_err(err, "port_policy.ports", "expected a list");
        return -DS_E_FORMAT;
    }
    size_t n = json_array_size(ports);
    if (n > DS_COMPOSE_LIST_MAX) {
        compose_set_err(err, "port_policy.ports", "%zu entries, at most %d allowed", n,
                        DS_COMPOSE_LIST_MAX);
        return -DS_E_LIMIT;
    }
    c->ports = calloc(n ? n : 1, sizeof(*c->ports));
    if (c->ports == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(ports, i);
        const json_t *port = json_object_get(e, "port");
        snprintf(f, sizeof(f), "port_policy.ports[%zu].port", i);
        if (!json_is_object(e) || !json_is_integer(port) || json_integer_value(port) < 0 ||
            json_integer_value(port) > 65535) {
            compose_set_err(err, f, "expected a port number 0..65535");
            return -DS_E_FORMAT;
        }
        const json_t *pp = json_object_get(e, "pp");
        if (pp != NULL && !json_is_boolean(pp)) {
            snprintf(f, sizeof(f), "port_policy.ports[%zu].pp", i);
            compose_set_err(err, f, "expected true or false");
            return -DS_E_FORMAT;
        }
        c->ports[i].port = (uint16_t)json_integer_value(port);
        c->ports[i].pp = json_is_true(pp);
        c->port_count = i + 1;
    }
    return 0;
}

static int parse_gpu_policy(const json_t *v, struct ds_compose_requirements *r,
                            struct ds_compose_error *err)
{
    static const char *const known[] = {"attest_gpu", "rego", "allow_devtools", "allow_debug",
                                        "allow_insecure_boot"};
    char f[FIELD_MAX];
    if (!json_is_object(v)) {
        compose_set_err(err, "requirements.gpu_policy", "expected an object");
        return -DS_E_FORMAT;
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        bool ok = false;
        for (size_t i = 0; i < DS_ARRAY_SIZE(known); i++) {
            ok = ok || strcmp(key, known[i]) == 0;
        }
        snprintf(f, sizeof(f), "requirements.gpu_policy.%s", key);
        if (!ok) {
            compose_set_err(err, f, "unknown field");
            return -DS_E_FORMAT;
        }
        if (strcmp(key, "rego") == 0) {
            if (!json_is_null(val)) {
                DS_TRY(str_dup(val, f, &r->gpu_rego, err));
            }
            continue;
        }
        if (!json_is_boolean(val)) {
            compose_set_err(err, f, "expected true or false");
            return -DS_E_FORMAT;
        }
    }
    r->has_gpu_policy = true;
    const json_t *ag = json_object_get(v, "attest_gpu");
    r->attest_gpu = ag == NULL || json_is_true(ag);
    r->allow_devtools = json_is_true(json_object_get(v, "allow_devtools"));
    r->allow_debug = json_is_true(json_object_get(v, "allow_debug"));
    r->allow_insecure_boot = json_is_true(json_object_get(v, "allow_insecure_boot"));
    return 0;
}

static int parse_requirements(const json_t *v, struct ds_compose_requirements *r,
                              struct ds_compose_error *err)
{
    char f[FIELD_MAX];
    if (!json_is_object(v)) {
        compose_set_err(err, "requirements", "expected an object");
        return -DS_E_FORMAT;
    }
    const char *key;
    const json_t *val;
    json_object_foreach((json_t *)v, key, val)
    {
        snprintf(f, sizeof(f), "requirements.%s", key);
        if (strcmp(key, "os_version") == 0) {
            if (!json_is_null(val)) {
                DS_TRY(str_dup(val, f, &r->os_version, err));
            }
        } else if (strcmp(key, "platforms") == 0) {
            if (!json_is_null(val)) {
                DS_TRY(str_list(val, f, false, DS_COMPOSE_LIST_MAX, &r->platforms,
                                &r->platform_count, err));
                r->has_platforms = true;
            }
        } else if (strcmp(key, "tdx_measure_acpi_tables") == 0) {
            if (!json_is_null(val)) {
                if (!json_is_boolean(val)) {
                    compose_set_err(err, f, "expected true or false");
                    return -DS_E_FORMAT;
                }
                r->has_tdx_measure_acpi_tables = true;
                r->tdx_measure_acpi_tables = json_is_true(val);
            }
        } else if (strcmp(key, "launch_token_hash") == 0) {
            if (json_is_null(val)) {
                continue;
            }
            if (!json_is_string(val) ||
                ds_hex_decode(json_string_value(val), json_string_length(val), r->launch_token_hash,
                              sizeof(r->launch_token_hash)) != 32) {
                compose_set_err(err, f, "expected 64 hex digits (a SHA-256)");
                return -DS_E_FORMAT;
            }
            r->has_launch_token_hash = true;
        } else if (strcmp(key, "gpu_policy") == 0) {
            if (!json_is_null(val)) {
                DS_TRY(parse_gpu_policy(val, r, err));
            }
        } else {
            compose_set_err(err, f, "unknown field");
            return -DS_E_FORMAT;
        }
    }
    return 0;
}

/* A bare file name: non-empty, no '/', not "." or "..". */
static bool bare_name(const char *s)
{
    return s[0] != '\0' && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static int parse_verity(const json_t *v, struct ds_app_compose *c, struct ds_compose_error *err)
{
    char f[FIELD_MAX];
    if (!json_is_array(v)) {
        compose_set_err(err, "verity_volumes", "expected a list");
        return -DS_E_FORMAT;
    }
    size_t n = json_array_size(v);
    if (n > DS_COMPOSE_LIST_MAX) {
        compose_set_err(err, "verity_volumes", "%zu entries, at most %d allowed", n,
                        DS_COMPOSE_LIST_MAX);
        return -DS_E_LIMIT;
    }
    c->verity_volumes = calloc(n ? n : 1, sizeof(*c->verity_volumes));
    if (c->verity_volumes == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(v, i);
        struct ds_verity_volume *vv = &c->verity_volumes[i];
        c->verity_volume_count = i + 1;
        if (!json_is_object(e)) {
            snprintf(f, sizeof(f), "verity_volumes[%zu]", i);
            compose_set_err(err, f, "expected an object");
            return -DS_E_FORMAT;
        }
        snprintf(f, sizeof(f), "verity_volumes[%zu].source", i);
        DS_TRY(str_dup(json_object_get(e, "source"), f, &vv->source, err));
        if (!bare_name(vv->source)) {
            compose_set_err(err, f, "expected a bare file name");
            return -DS_E_FORMAT;
        }
        snprintf(f, sizeof(f), "verity_volumes[%zu].target", i);
        DS_TRY(str_dup(json_object_get(e, "target"), f, &vv->target, err));
        if (vv->target[0] != '/') {
            compose_set_err(err, f, "expected an absolute path");
            return -DS_E_FORMAT;
        }
        snprintf(f, sizeof(f), "verity_volumes[%zu].verity_root", i);
        const json_t *root = json_object_get(e, "verity_root");
        if (!json_is_string(root) || json_string_length(root) != 64 ||
            ds_hex_decode(json_string_value(root), 64, vv->verity_root, 32) != 32) {
            compose_set_err(err, f, "expected 64 hex digits");
            return -DS_E_FORMAT;
        }
    }
    return 0;
}

static int parse_key_provider(const json_t *obj, struct ds_app_compose *c,
                              struct ds_compose_error *err)
{
    const json_t *kp = json_object_get(obj, "key_provider");
    if (kp != NULL && !json_is_null(kp)) {
        if (!json_is_string(kp) ||
            ds_key_provider_parse(json_string_value(kp), &c->key_provider_field) < 0) {
            compose_set_err(err, "key_provider", "expected none, kms, local or tpm");
            return -DS_E_FORMAT;
        }
        c->has_key_provider = true;
    }
    const json_t *id = json_object_get(obj, "key_provider_id");
    if (id == NULL) {
        return 0;
    }
    size_t len = json_string_length(id);
    if (!json_is_string(id) || len % 2 != 0 || !is_hex(json_string_value(id), len)) {
        compose_set_err(err, "key_provider_id", "expected hex bytes");
        return -DS_E_FORMAT;
    }
    if (len / 2 > DS_COMPOSE_KP_ID_MAX) {
        compose_set_err(err, "key_provider_id", "longer than %d bytes", DS_COMPOSE_KP_ID_MAX);
        return -DS_E_LIMIT;
    }
    if (len == 0) {
        return 0;
    }
    uint8_t *bytes = NULL;
    size_t n = 0;
    DS_TRY(ds_hex_decode_alloc(json_string_value(id), len, DS_COMPOSE_KP_ID_MAX, &bytes, &n));
    c->key_provider_id = bytes;
    c->key_provider_id_len = n;
    return 0;
}

/* The policy checks of §3.3 step 4 that need only the manifest. */
static int check_policy(const struct ds_app_compose *c, struct ds_compose_error *err)
{
    bool v3 = c->manifest_is_string && c->manifest_version >= 3;
    static const char *const runners[] = {"docker-compose", "nerdctl-compose", "bash"};
    bool known = false;
    for (size_t i = 0; i < DS_ARRAY_SIZE(runners); i++) {
        known = known || strcmp(c->runner, runners[i]) == 0;
    }
    if (!known) {
        compose_set_err(err, "runner", "unsupported runner \"%s\"", c->runner);
        return -DS_E_FORMAT;
    }
    if (strcmp(c->runner, "nerdctl-compose") == 0 && !v3) {
        compose_set_err(err, "runner", "nerdctl-compose needs manifest_version \"3\"");
        return -DS_E_FORMAT;
    }
    if (c->snapshotter != NULL) {
        if (strcmp(c->snapshotter, "overlayfs") != 0 && strcmp(c->snapshotter, "stargz") != 0) {
            compose_set_err(err, "snapshotter", "expected overlayfs or stargz");
            return -DS_E_FORMAT;
        }
        if (strcmp(c->runner, "nerdctl-compose") != 0) {
            compose_set_err(err, "snapshotter", "only valid with runner nerdctl-compose");
            return -DS_E_FORMAT;
        }
    }
    if (c->init_script_count > 1 && !v3) {
        compose_set_err(err, "init_script", "more than one script needs manifest_version \"3\"");
        return -DS_E_FORMAT;
    }
    if (c->has_requirements && !v3) {
        compose_set_err(err, "requirements", "needs manifest_version \"3\"");
        return -DS_E_FORMAT;
    }
    if (c->storage_fs != NULL && strcmp(c->storage_fs, "zfs") != 0 &&
        strcmp(c->storage_fs, "ext4") != 0) {
        compose_set_err(err, "storage_fs", "expected zfs or ext4");
        return -DS_E_FORMAT;
    }
    return 0;
}

static int parse_fields(const json_t *o, struct ds_app_compose *c, struct ds_compose_error *err)
{
    DS_TRY(parse_manifest_version(json_object_get(o, "manifest_version"), c, err));
    const json_t *name = json_object_get(o, "name");
    const json_t *runner = json_object_get(o, "runner");
    if (name == NULL || runner == NULL) {
        compose_set_err(err, name == NULL ? "name" : "runner", "missing (required)");
        return -DS_E_FORMAT;
    }
    DS_TRY(str_dup(name, "name", &c->name, err));
    DS_TRY(str_dup(runner, "runner", &c->runner, err));
    DS_TRY(opt_str(o, "snapshotter", &c->snapshotter, err));
    DS_TRY(opt_str(o, "docker_compose_file", &c->docker_compose_file, err));
    DS_TRY(opt_str(o, "bash_script", &c->bash_script, err));
    DS_TRY(opt_str(o, "pre_launch_script", &c->pre_launch_script, err));
    DS_TRY(opt_str(o, "storage_fs", &c->storage_fs, err));
    const json_t *init = json_object_get(o, "init_script");
    if (init != NULL && !json_is_null(init)) {
        DS_TRY(str_list(init, "init_script", true, DS_COMPOSE_INIT_MAX, &c->init_scripts,
                        &c->init_script_count, err));
    }
    DS_TRY(opt_str_list(o, "features", DS_COMPOSE_LIST_MAX, &c->features, &c->feature_count, err));
    DS_TRY(opt_str_list(o, "allowed_envs", DS_COMPOSE_LIST_MAX, &c->allowed_envs,
                        &c->allowed_env_count, err));
    bool tproxy = false;
    DS_TRY(get_bool(o, "public_logs", false, &c->public_logs, err));
    DS_TRY(get_bool(o, "public_sysinfo", false, &c->public_sysinfo, err));
    DS_TRY(get_bool(o, "public_tcbinfo", true, &c->public_tcbinfo, err));
    DS_TRY(get_bool(o, "kms_enabled", false, &c->kms_enabled, err));
    DS_TRY(get_bool(o, "gateway_enabled", false, &c->gateway_enabled, err));
    DS_TRY(get_bool(o, "tproxy_enabled", false, &tproxy, err));
    c->gateway_enabled = c->gateway_enabled || tproxy;
    DS_TRY(get_bool(o, "local_key_provider_enabled", false, &c->local_key_provider_enabled, err));
    DS_TRY(get_bool(o, "no_instance_id", false, &c->no_instance_id, err));
    DS_TRY(get_bool(o, "secure_time", true, &c->secure_time, err));
    DS_TRY(parse_key_provider(o, c, err));
    const json_t *swap = json_object_get(o, "swap_size");
    if (swap != NULL) {
        DS_TRY(parse_human_size(swap, "swap_size", &c->swap_size, err));
    }
    c->event_log_version = 1;
    const json_t *elv = json_object_get(o, "event_log_version");
    if (elv != NULL) {
        json_int_t n = json_integer_value(elv);
        if (!json_is_integer(elv) || (n != 1 && n != 2)) {
            compose_set_err(err, "event_log_version", "expected 1 or 2");
            return -DS_E_FORMAT;
        }
        c->event_log_version = (uint32_t)n;
    }
    const json_t *pp = json_object_get(o, "port_policy");
    if (pp != NULL) {
        DS_TRY(parse_port_policy(pp, c, err));
    }
    const json_t *req = json_object_get(o, "requirements");
    if (req != NULL && !json_is_null(req)) {
        c->has_requirements = true;
        DS_TRY(parse_requirements(req, &c->requirements, err));
    }
    const json_t *vv = json_object_get(o, "verity_volumes");
    if (vv != NULL) {
        DS_TRY(parse_verity(vv, c, err));
    }
    return check_policy(c, err);
}

int ds_app_compose_parse(const void *json, size_t len, struct ds_app_compose **out,
                         struct ds_compose_error *err)
{
    json_t *root = NULL;
    DS_TRY(compose_json_load(json, len, false, true, &root, err));
    int rc;
    struct ds_app_compose *c = NULL;
    if (!json_is_object(root)) {
        compose_set_err(err, "", "app compose must be a JSON object");
        rc = -DS_E_FORMAT;
        goto out;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    rc = parse_fields(root, c, err);
    if (rc == 0) {
        *out = c;
        c = NULL;
    }
out:
    ds_app_compose_free(c);
    json_decref(root);
    return rc;
}

enum ds_key_provider ds_app_compose_key_provider(const struct ds_app_compose *c)
{
    if (c->has_key_provider) {
        return c->key_provider_field;
    }
    if (c->kms_enabled) {
        return DS_KP_KMS;
    }
    return c->local_key_provider_enabled ? DS_KP_LOCAL : DS_KP_NONE;
}

bool ds_app_compose_gateway_enabled(const struct ds_app_compose *c)
{
    for (size_t i = 0; i < c->feature_count; i++) {
        if (strcmp(c->features[i], "tproxy-net") == 0) {
            return true;
        }
    }
    return c->gateway_enabled;
}

bool ds_app_compose_env_allowed(const struct ds_app_compose *c, const char *name)
{
    for (size_t i = 0; i < c->allowed_env_count; i++) {
        if (strcmp(c->allowed_envs[i], name) == 0) {
            return true;
        }
    }
    return false;
}

void ds_compose_hash(const void *bytes, size_t len, uint8_t out[DS_COMPOSE_HASH_SIZE])
{
    ds_sha256(bytes, len, out);
}

void ds_compose_app_id(const uint8_t compose_hash[DS_COMPOSE_HASH_SIZE],
                       uint8_t out[DS_APP_ID_SIZE])
{
    memcpy(out, compose_hash, DS_APP_ID_SIZE);
}

void ds_compose_instance_id(const uint8_t seed[DS_INSTANCE_ID_SIZE],
                            const uint8_t app_id[DS_APP_ID_SIZE], const uint8_t *platform_binding,
                            size_t binding_len, uint8_t out[DS_INSTANCE_ID_SIZE])
{
    uint8_t h[DS_SHA256_LEN];
    ds_sha256_v(h, 3, seed, (size_t)DS_INSTANCE_ID_SIZE, app_id, (size_t)DS_APP_ID_SIZE,
                platform_binding, platform_binding ? binding_len : (size_t)0);
    memcpy(out, h, DS_INSTANCE_ID_SIZE);
}
