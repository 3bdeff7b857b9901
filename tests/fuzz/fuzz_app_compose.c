/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for the app-compose.json reader (ds_app_compose_parse) and the other
 * consumers of untrusted JSON / text in lib/compose: the SDK normaliser, the Python
 * re-serialiser, the env plaintext parser and the .env parser. Checked properties: the
 * Python re-serialisation of an accepted manifest is accepted again with the same meaning
 * (name, runner, flags, key provider, allowed_envs), the SDK form is a fixed point of
 * normalisation, and every successful parse yields values inside their documented ranges.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/compose.h"

static void check_same(const struct ds_app_compose *a, const struct ds_app_compose *b)
{
    if (strcmp(a->name, b->name) != 0 || strcmp(a->runner, b->runner) != 0 ||
        a->manifest_version != b->manifest_version ||
        ds_app_compose_key_provider(a) != ds_app_compose_key_provider(b) ||
        a->allowed_env_count != b->allowed_env_count || a->swap_size != b->swap_size ||
        a->secure_time != b->secure_time || a->public_tcbinfo != b->public_tcbinfo ||
        a->key_provider_id_len != b->key_provider_id_len) {
        __builtin_trap();
    }
}

static void fuzz_manifest(const uint8_t *data, size_t size)
{
    struct ds_app_compose *c = NULL;
    struct ds_compose_error err;
    if (ds_app_compose_parse(data, size, &c, &err) != 0) {
        return;
    }
    if (c->manifest_version < 1 || c->manifest_version > DS_COMPOSE_MANIFEST_MAX ||
        c->init_script_count > DS_COMPOSE_INIT_MAX ||
        (c->event_log_version != 1 && c->event_log_version != 2) ||
        (unsigned)ds_app_compose_key_provider(c) > DS_KP_TPM) {
        __builtin_trap();
    }
    for (size_t i = 0; i < c->allowed_env_count; i++) {
        (void)ds_app_compose_env_allowed(c, c->allowed_envs[i]);
    }
    char *py = NULL;
    size_t py_len = 0;
    if (ds_compose_python_dump(data, size, &py, &py_len) == 0) {
        struct ds_app_compose *back = NULL;
        if (ds_app_compose_parse(py, py_len, &back, &err) != 0) {
            __builtin_trap();
        }
        check_same(c, back);
        ds_app_compose_free(back);
        free(py);
    }
    ds_app_compose_free(c);
}

static void fuzz_sdk(const uint8_t *data, size_t size)
{
    char *n1 = NULL, *n2 = NULL;
    size_t l1 = 0, l2 = 0;
    uint8_t h[DS_COMPOSE_HASH_SIZE];
    if (ds_compose_sdk_hash(data, size, true, h) != 0) {
        h[0] = 0; /* only not crashing matters here */
    }
    if (ds_compose_sdk_normalize(data, size, false, &n1, &l1) != 0) {
        return;
    }
    /* Normalising the normal form changes nothing (integers beyond 2^53 are already rounded). */
    if (ds_compose_sdk_normalize(n1, l1, false, &n2, &l2) != 0 || l1 != l2 ||
        memcmp(n1, n2, l1) != 0) {
        __builtin_trap();
    }
    free(n1);
    free(n2);
}

static void fuzz_env(const uint8_t *data, size_t size)
{
    static const char *const allowed[] = {"A", "B", "FOO"};
    struct ds_env_list l = {0};
    size_t skipped = 0;
    if (ds_env_parse_plaintext(data, size, allowed, 3, &l, &skipped, NULL) == 0) {
        char *dot = NULL;
        size_t dl = 0;
        if (ds_env_render_dotenv(&l, &dot, &dl) == 0) {
            free(dot);
        }
        ds_env_list_free(&l);
    }
    if (ds_env_file_parse(data, size, &l, NULL) == 0) {
        for (size_t i = 0; i < l.count; i++) {
            if (!ds_env_name_valid(l.vars[i].key, strlen(l.vars[i].key))) {
                __builtin_trap();
            }
        }
        ds_env_list_free(&l);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_manifest(data, size);
    fuzz_sdk(data, size);
    fuzz_env(data, size);
    return 0;
}
