/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Producing app-compose.json like `vmm-cli.py compose` (spec host-side.md §1.12): the same
 * fields in the same insertion order, written with Python's json.dumps(indent=4,
 * ensure_ascii=False) layout (no trailing newline), or alternatively in the SDK-normalised form
 * whose hash getComposeHash reproduces. Also the variable list type and vmm-cli's .env file
 * rules (strip, skip blank / '#' / no '=' lines, split at the first '=', quotes kept).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compose/compose_internal.h"

#define SWAP_MB_MAX ((uint64_t)INT64_MAX / (1024 * 1024)) /* swap_size bytes fit a JSON int */

bool ds_env_name_valid(const char *name, size_t len)
{
    if (len == 0 || len > DS_ENV_KEY_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        char c = name[i];
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
        if (!alpha && !(i > 0 && c >= '0' && c <= '9')) {
            return false;
        }
    }
    return true;
}

void ds_env_list_free(struct ds_env_list *l)
{
    if (l == NULL) {
        return;
    }
    for (size_t i = 0; i < l->count; i++) {
        free(l->vars[i].key);
        if (l->vars[i].value != NULL) {
            ds_wipe(l->vars[i].value, strlen(l->vars[i].value));
            free(l->vars[i].value);
        }
    }
    free(l->vars);
    l->vars = NULL;
    l->count = 0;
}

static char *mem_strdup(const char *s, size_t len)
{
    char *d = malloc(len + 1);
    if (d != NULL) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

int ds_env_list_set(struct ds_env_list *l, const char *key, size_t key_len, const char *value,
                    size_t value_len)
{
    char *v = mem_strdup(value, value_len);
    if (v == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < l->count; i++) {
        if (strlen(l->vars[i].key) == key_len && memcmp(l->vars[i].key, key, key_len) == 0) {
            ds_wipe(l->vars[i].value, strlen(l->vars[i].value));
            free(l->vars[i].value);
            l->vars[i].value = v;
            return 0;
        }
    }
    if (l->count >= DS_ENV_ITEMS_MAX) {
        ds_wipe(v, value_len);
        free(v);
        return -DS_E_LIMIT;
    }
    char *k = mem_strdup(key, key_len);
    struct ds_env_var *nv = k ? realloc(l->vars, (l->count + 1) * sizeof(*nv)) : NULL;
    if (nv == NULL) {
        free(k);
        ds_wipe(v, value_len);
        free(v);
        return -ENOMEM;
    }
    l->vars = nv;
    l->vars[l->count].key = k;
    l->vars[l->count].value = v;
    l->count++;
    return 0;
}

/* Python str.strip() whitespace that can occur in ASCII text. */
static bool py_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

static void strip(const char **s, size_t *len)
{
    while (*len > 0 && py_space((unsigned char)(*s)[0])) {
        (*s)++;
        (*len)--;
    }
    while (*len > 0 && py_space((unsigned char)(*s)[*len - 1])) {
        (*len)--;
    }
}

int ds_env_file_parse(const void *text, size_t len, struct ds_env_list *out,
                      struct ds_compose_error *err)
{
    const char *t = text;
    char field[DS_COMPOSE_ERR_FIELD_MAX];
    if (len > DS_ENV_FILE_MAX) {
        compose_set_err(err, "", "env file larger than %u bytes", DS_ENV_FILE_MAX);
        return -DS_E_LIMIT;
    }
    if (!compose_utf8_valid(t, len) || (len > 0 && memchr(t, '\0', len) != NULL)) {
        compose_set_err(err, "", "env file is not UTF-8 text");
        return -DS_E_FORMAT;
    }
    struct ds_env_list l = {0};
    size_t lineno = 0;
    size_t pos = 0;
    int rc = 0;
    while (pos < len) {
        /* Python universal newlines: \n, \r\n and \r all end a line. */
        size_t end = pos;
        while (end < len && t[end] != '\n' && t[end] != '\r') {
            end++;
        }
        size_t next = end;
        if (next < len) {
            next += (t[next] == '\r' && next + 1 < len && t[next + 1] == '\n') ? 2 : 1;
        }
        lineno++;
        const char *line = t + pos;
        size_t n = end - pos;
        pos = next;
        strip(&line, &n);
        if (n == 0 || line[0] == '#') {
            continue;
        }
        const char *eq = memchr(line, '=', n);
        if (eq == NULL) {
            continue;
        }
        const char *key = line;
        size_t key_len = (size_t)(eq - line);
        const char *val = eq + 1;
        size_t val_len = n - key_len - 1;
        strip(&key, &key_len);
        strip(&val, &val_len);
        snprintf(field, sizeof(field), "line %zu", lineno);
        if (!ds_env_name_valid(key, key_len)) {
            compose_set_err(err, field, "invalid variable name \"%.*s\"",
                            (int)(key_len > 64 ? 64 : key_len), key);
            rc = -DS_E_FORMAT;
            goto out;
        }
        if (val_len > DS_ENV_VALUE_MAX) {
            compose_set_err(err, field, "value longer than %u bytes", DS_ENV_VALUE_MAX);
            rc = -DS_E_LIMIT;
            goto out;
        }
        rc = ds_env_list_set(&l, key, key_len, val, val_len);
        if (rc < 0) {
            if (rc == -DS_E_LIMIT) {
                compose_set_err(err, field, "more than %d variables", DS_ENV_ITEMS_MAX);
            }
            goto out;
        }
    }
    *out = l;
    l.vars = NULL;
    l.count = 0;
out:
    ds_env_list_free(&l);
    return rc;
}

/* ---- the manifest builder -------------------------------------------------------------- */

static int set_new(json_t *obj, const char *key, json_t *v)
{
    if (v == NULL) {
        return -ENOMEM;
    }
    return json_object_set_new(obj, key, v) == 0 ? 0 : -ENOMEM;
}

static int check_text(const char *s, size_t len, const char *field, struct ds_compose_error *err)
{
    if (s == NULL || !compose_utf8_valid(s, len)) {
        compose_set_err(err, field, s == NULL ? "missing (required)" : "not valid UTF-8");
        return -DS_E_FORMAT;
    }
    return 0;
}

static int check_options(const struct ds_compose_options *o, struct ds_compose_error *err)
{
    DS_TRY(check_text(o->name, o->name ? strlen(o->name) : 0, "name", err));
    DS_TRY(check_text(o->docker_compose, o->docker_compose_len, "docker-compose", err));
    if (o->pre_launch_script != NULL) {
        DS_TRY(check_text(o->pre_launch_script, o->pre_launch_script_len, "prelaunch-script", err));
    }
    if (o->key_provider_id != NULL) {
        uint8_t *tmp = NULL;
        size_t n = 0;
        size_t len = strlen(o->key_provider_id);
        /* Written as given (vmm-cli copies the text); the guest decodes plain hex. */
        if ((len >= 2 && o->key_provider_id[0] == '0' && (o->key_provider_id[1] | 0x20) == 'x') ||
            ds_hex_decode_alloc(o->key_provider_id, len, DS_COMPOSE_KP_ID_MAX, &tmp, &n) < 0) {
            compose_set_err(err, "key-provider-id", "expected hex bytes without 0x");
            return -DS_E_FORMAT;
        }
        free(tmp);
    }
    if (o->allowed_env_count > 0 && !o->kms) {
        /* vmm-cli: the env file is only useful when the KMS can hand out the env key. */
        compose_set_err(err, "env-file", "requires --kms (env decryption needs the KMS key)");
        return -DS_E_FORMAT;
    }
    if (o->allowed_env_count > DS_ENV_ITEMS_MAX) {
        compose_set_err(err, "env-file", "more than %d variables", DS_ENV_ITEMS_MAX);
        return -DS_E_LIMIT;
    }
    for (size_t i = 0; i < o->allowed_env_count; i++) {
        const char *k = o->allowed_envs[i];
        if (k == NULL || !ds_env_name_valid(k, strlen(k))) {
            compose_set_err(err, "env-file", "invalid variable name \"%.64s\"", k ? k : "");
            return -DS_E_FORMAT;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(o->allowed_envs[j], k) == 0) {
                compose_set_err(err, "env-file", "variable \"%s\" listed twice", k);
                return -DS_E_FORMAT;
            }
        }
    }
    if (o->event_log_version > 2) {
        compose_set_err(err, "event-log-version", "expected 1 or 2");
        return -DS_E_FORMAT;
    }
    if (o->swap_mb > SWAP_MB_MAX) {
        compose_set_err(err, "swap", "too large");
        return -DS_E_LIMIT;
    }
    return 0;
}

static int build_object(const struct ds_compose_options *o, json_t *c)
{
    json_t *envs = json_array();
    if (envs == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < o->allowed_env_count; i++) {
        if (json_array_append_new(envs, json_string(o->allowed_envs[i])) != 0) {
            json_decref(envs);
            return -ENOMEM;
        }
    }
    /* The key order is vmm-cli's dict literal, then its conditional additions. */
    DS_TRY(set_new(c, "manifest_version", json_integer(2)));
    DS_TRY(set_new(c, "name", json_string(o->name)));
    DS_TRY(set_new(c, "runner", json_string("docker-compose")));
    DS_TRY(
        set_new(c, "docker_compose_file", json_stringn(o->docker_compose, o->docker_compose_len)));
    DS_TRY(set_new(c, "kms_enabled", json_boolean(o->kms)));
    DS_TRY(set_new(c, "gateway_enabled", json_boolean(o->gateway)));
    DS_TRY(set_new(c, "local_key_provider_enabled", json_boolean(o->local_key_provider)));
    DS_TRY(
        set_new(c, "key_provider_id", json_string(o->key_provider_id ? o->key_provider_id : "")));
    DS_TRY(set_new(c, "public_logs", json_boolean(o->public_logs)));
    DS_TRY(set_new(c, "public_sysinfo", json_boolean(o->public_sysinfo)));
    DS_TRY(set_new(c, "allowed_envs", envs));
    DS_TRY(set_new(c, "no_instance_id", json_boolean(o->no_instance_id)));
    DS_TRY(set_new(c, "secure_time", json_boolean(o->secure_time)));
    if (o->has_key_provider) {
        DS_TRY(set_new(c, "key_provider", json_string(ds_key_provider_name(o->key_provider))));
    }
    if (o->pre_launch_script != NULL) {
        DS_TRY(set_new(c, "pre_launch_script",
                       json_stringn(o->pre_launch_script, o->pre_launch_script_len)));
    }
    if (o->swap_mb > 0) {
        DS_TRY(set_new(c, "swap_size", json_integer((json_int_t)(o->swap_mb * 1024 * 1024))));
    }
    if (o->event_log_version == 2) {
        DS_TRY(set_new(c, "event_log_version", json_integer(2)));
    }
    if (o->sdk_normalized && o->pre_launch_script_len == 0) {
        /* getComposeHash(normalize = true) drops an empty script: keep both hashes equal. */
        (void)json_object_del(c, "pre_launch_script");
    }
    return 0;
}

int ds_compose_build(const struct ds_compose_options *o, char **out, size_t *out_len,
                     struct ds_compose_error *err)
{
    DS_TRY(check_options(o, err));
    json_t *c = json_object();
    if (c == NULL) {
        return -ENOMEM;
    }
    struct ds_buf b;
    ds_buf_init(&b, DS_COMPOSE_FILE_MAX);
    int rc = build_object(o, c);
    if (rc == 0) {
        rc = o->sdk_normalized ? compose_dump_sdk(c, &b) : compose_dump_python(c, &b);
    }
    json_decref(c);
    if (rc == -DS_E_LIMIT) {
        compose_set_err(err, "docker-compose", "app compose larger than %u bytes",
                        DS_COMPOSE_FILE_MAX);
    }
    if (rc < 0) {
        ds_buf_done(&b);
        return rc;
    }
    uint8_t *data;
    size_t len;
    ds_buf_steal(&b, &data, &len);
    if (data == NULL) {
        return -ENOMEM;
    }
    *out = (char *)data;
    *out_len = len;
    return 0;
}
