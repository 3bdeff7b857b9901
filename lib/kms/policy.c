/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The built-in authorization policy: the same JSON file and the same rules, in the same order
 * and with the same reasons, as upstream's auth-simple webhook (spec kms-ratls.md §5.2), so an
 * operator can move an auth-config.json between the two. Hex values are normalised to
 * lowercase with a 0x prefix on both sides before comparing (auth-simple's normalizeHex).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/kms.h"

#define ZERO_ADDRESS "0x0000000000000000000000000000000000000000"
#define HEX_CMP_MAX  1024 /* longest hex string compared (longer never matches) */
#define DEFAULT_TCB  "UpToDate"

struct ds_kms_policy {
    json_t *root; /* validated auth-simple config object */
};

void ds_kms_policy_free(struct ds_kms_policy *p)
{
    if (!p) {
        return;
    }
    json_decref(p->root);
    free(p);
}

static int type_err(char *err, size_t n, const char *where, const char *what)
{
    snprintf(err, n, "%s must be %s", where, what);
    return -DS_E_FORMAT;
}

static int check_string_list(json_t *v, const char *where, char *err, size_t n)
{
    if (!v) {
        return 0;
    }
    if (!json_is_array(v)) {
        return type_err(err, n, where, "an array of strings");
    }
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (!json_is_string(e)) {
            return type_err(err, n, where, "an array of strings");
        }
    }
    return 0;
}

/* {composeHashes?: [], mrAggregated?: [], devices?: [], allowAnyDevice?: bool} */
static int check_entry(json_t *v, const char *where, const char *list_key, char *err, size_t n)
{
    char path[160];
    if (!json_is_object(v)) {
        return type_err(err, n, where, "an object");
    }
    snprintf(path, sizeof(path), "%s.%s", where, list_key);
    DS_TRY(check_string_list(json_object_get(v, list_key), path, err, n));
    snprintf(path, sizeof(path), "%s.devices", where);
    DS_TRY(check_string_list(json_object_get(v, "devices"), path, err, n));
    json_t *any = json_object_get(v, "allowAnyDevice");
    if (any && !json_is_boolean(any)) {
        snprintf(path, sizeof(path), "%s.allowAnyDevice", where);
        return type_err(err, n, path, "a boolean");
    }
    return 0;
}

static int validate(json_t *root, char *err, size_t n)
{
    static const char *const strings[] = {"gatewayAppId", "kmsContractAddr", "appImplementation"};
    static const char *const lists[] = {"osImages", "allowedTcbStatuses", "allowedAdvisoryIds"};
    if (!json_is_object(root)) {
        return type_err(err, n, "the policy", "a JSON object");
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(strings); i++) {
        json_t *v = json_object_get(root, strings[i]);
        if (v && !json_is_string(v)) {
            return type_err(err, n, strings[i], "a string");
        }
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(lists); i++) {
        DS_TRY(check_string_list(json_object_get(root, lists[i]), lists[i], err, n));
    }
    json_t *chain = json_object_get(root, "chainId");
    if (chain && (!json_is_integer(chain) || json_integer_value(chain) < 0)) {
        return type_err(err, n, "chainId", "a non-negative integer");
    }
    json_t *kms = json_object_get(root, "kms");
    if (kms) {
        DS_TRY(check_entry(kms, "kms", "mrAggregated", err, n));
    }
    json_t *apps = json_object_get(root, "apps");
    if (apps) {
        if (!json_is_object(apps)) {
            return type_err(err, n, "apps", "an object");
        }
        const char *key;
        json_t *v;
        json_object_foreach(apps, key, v)
        {
            char where[96];
            snprintf(where, sizeof(where), "apps[\"%.64s\"]", key);
            DS_TRY(check_entry(v, where, "composeHashes", err, n));
        }
    }
    return 0;
}

int ds_kms_policy_parse(const char *json, size_t len, struct ds_kms_policy **out, char *err,
                        size_t err_size)
{
    if (!json || !out || !err || err_size == 0) {
        return -EINVAL;
    }
    if (len > DS_KMS_POLICY_FILE_MAX) {
        snprintf(err, err_size, "policy file larger than %d bytes", DS_KMS_POLICY_FILE_MAX);
        return -DS_E_LIMIT;
    }
    json_error_t je;
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) {
        snprintf(err, err_size, "not JSON: %s (line %d)", je.text, je.line);
        return -DS_E_FORMAT;
    }
    int r = validate(root, err, err_size);
    if (r < 0) {
        json_decref(root);
        return r;
    }
    struct ds_kms_policy *p = calloc(1, sizeof(*p));
    if (!p) {
        json_decref(root);
        return -ENOMEM;
    }
    p->root = root;
    *out = p;
    return 0;
}

int ds_kms_policy_default(struct ds_kms_policy **out)
{
    char err[64];
    return ds_kms_policy_parse("{}", 2, out, err, sizeof(err));
}

/* "0x" + lowercase(s without a leading 0x). false when too long. */
static bool normalize_hex(const char *s, char *out, size_t size)
{
    if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
    }
    size_t n = strlen(s);
    if (n + 3 > size) {
        return false;
    }
    out[0] = '0';
    out[1] = 'x';
    for (size_t i = 0; i < n; i++) {
        out[2 + i] = (char)tolower((unsigned char)s[i]);
    }
    out[2 + n] = '\0';
    return true;
}

/* Whether the hex of (p, n) is in the string list v (missing list = empty). */
static bool hex_in_list(json_t *v, const uint8_t *p, size_t n)
{
    char want[HEX_CMP_MAX + 3], have[HEX_CMP_MAX + 3];
    if (!v || 2 * n > HEX_CMP_MAX) {
        return false;
    }
    want[0] = '0';
    want[1] = 'x';
    ds_hex_encode(p ? p : (const uint8_t *)"", n, want + 2);
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (normalize_hex(json_string_value(e), have, sizeof(have)) && strcmp(have, want) == 0) {
            return true;
        }
    }
    return false;
}

static bool string_in_list(json_t *v, const char *s)
{
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e)
    {
        if (strcmp(json_string_value(e), s) == 0) {
            return true;
        }
    }
    return false;
}

/* auth-simple's device rule: allowed if allowAnyDevice, or the list is empty, or it matches. */
static bool device_ok(json_t *entry, const uint8_t device_id[32])
{
    json_t *devices = json_object_get(entry, "devices");
    if (json_is_true(json_object_get(entry, "allowAnyDevice"))) {
        return true;
    }
    if (!devices || json_array_size(devices) == 0) {
        return true;
    }
    return hex_in_list(devices, device_id, 32);
}

static const char *evaluate(const struct ds_kms_policy *p, enum ds_kms_boot_kind kind,
                            const struct ds_kms_boot_info *bi)
{
    json_t *root = p->root;
    json_t *tcb = json_object_get(root, "allowedTcbStatuses");
    bool tcb_ok =
        tcb ? string_in_list(tcb, bi->tcb_status) : strcmp(bi->tcb_status, DEFAULT_TCB) == 0;
    if (!tcb_ok) {
        return "TCB status is not allowed";
    }
    json_t *adv = json_object_get(root, "allowedAdvisoryIds");
    for (size_t i = 0; i < bi->advisory_count; i++) {
        if (!adv || !string_in_list(adv, bi->advisory_ids[i])) {
            return "advisory ID is not allowed";
        }
    }
    if (!hex_in_list(json_object_get(root, "osImages"), bi->os_image_hash, bi->os_image_hash_len)) {
        return "OS image is not allowed";
    }
    if (kind == DS_KMS_BOOT_KMS) {
        json_t *kms = json_object_get(root, "kms");
        if (!hex_in_list(json_object_get(kms, "mrAggregated"), bi->mr_aggregated, 32)) {
            return "aggregated MR not allowed";
        }
        if (kms && !device_ok(kms, bi->device_id)) {
            return "KMS is not allowed to boot on this device";
        }
        return NULL;
    }
    json_t *apps = json_object_get(root, "apps");
    json_t *entry = NULL;
    char want[2 * DS_KMS_APP_ID_SIZE + 3], have[HEX_CMP_MAX + 3];
    want[0] = '0';
    want[1] = 'x';
    ds_hex_encode(bi->app_id, sizeof(bi->app_id), want + 2);
    const char *key;
    json_t *v;
    json_object_foreach(apps, key, v)
    {
        if (normalize_hex(key, have, sizeof(have)) && strcmp(have, want) == 0) {
            entry = v;
            break;
        }
    }
    if (!entry) {
        return "app not registered";
    }
    if (!hex_in_list(json_object_get(entry, "composeHashes"), bi->compose_hash,
                     bi->compose_hash_len)) {
        return "compose hash not allowed";
    }
    if (!device_ok(entry, bi->device_id)) {
        return "app is not allowed to boot on this device";
    }
    return NULL;
}

static const char *string_or(json_t *root, const char *key, const char *dflt)
{
    json_t *v = json_object_get(root, key);
    return json_is_string(v) ? json_string_value(v) : dflt;
}

int ds_kms_policy_check(const struct ds_kms_policy *p, enum ds_kms_boot_kind kind,
                        const struct ds_kms_boot_info *bi, struct ds_kms_decision *out)
{
    if (!p || !bi || !out) {
        return -EINVAL;
    }
    struct ds_kms_decision d = {0};
    d.gateway_app_id = strdup(string_or(p->root, "gatewayAppId", ""));
    if (!d.gateway_app_id) {
        return -ENOMEM;
    }
    const char *reason = evaluate(p, kind, bi);
    d.allowed = reason == NULL;
    snprintf(d.reason, sizeof(d.reason), "%s", reason ? reason : "");
    *out = d;
    return 0;
}

int ds_kms_policy_info(const struct ds_kms_policy *p, struct ds_kms_auth_info *out)
{
    if (!p || !out) {
        return -EINVAL;
    }
    struct ds_kms_auth_info i = {0};
    json_t *chain = json_object_get(p->root, "chainId");
    i.status = strdup("ok");
    i.kms_contract_addr = strdup(string_or(p->root, "kmsContractAddr", ZERO_ADDRESS));
    i.gateway_app_id = strdup(string_or(p->root, "gatewayAppId", ""));
    i.app_implementation = strdup(string_or(p->root, "appImplementation", ZERO_ADDRESS));
    i.eth_rpc_url = strdup("");
    i.chain_id = chain ? (uint64_t)json_integer_value(chain) : 0;
    if (!i.status || !i.kms_contract_addr || !i.gateway_app_id || !i.app_implementation ||
        !i.eth_rpc_url) {
        ds_kms_auth_info_done(&i);
        return -ENOMEM;
    }
    *out = i;
    return 0;
}
