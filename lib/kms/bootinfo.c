/* SPDX-License-Identifier: Apache-2.0 */
/*
 * BootInfo (spec kms-ratls.md §4.4): the record the KMS derives from a verified attestation and
 * sends to its authorization backend, and the two reply formats of the webhook API (§5.1):
 * the /bootAuth decision and the `GET /` info. JSON keys are camelCase, byte fields lowercase
 * hex without 0x, exactly as upstream's serde-human-bytes output.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "dstack/kms.h"

#define TEE_VARIANT_TDX "dstack-tdx"

void ds_kms_boot_info_done(struct ds_kms_boot_info *bi)
{
    if (!bi) {
        return;
    }
    free(bi->compose_hash);
    free(bi->instance_id);
    free(bi->key_provider_info);
    free(bi->os_image_hash);
    for (size_t i = 0; i < bi->advisory_count; i++) {
        free(bi->advisory_ids[i]);
    }
    free(bi->advisory_ids);
    memset(bi, 0, sizeof(*bi));
}

static int dup_bytes(const uint8_t *src, size_t len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (len == 0) {
        return 0;
    }
    *out = malloc(len);
    if (!*out) {
        return -ENOMEM;
    }
    memcpy(*out, src, len);
    *out_len = len;
    return 0;
}

int ds_kms_boot_info_build(const struct ds_attestation *a, const struct ds_attestation_result *res,
                           const char *vm_config, bool boottime, struct ds_kms_boot_info *out)
{
    struct ds_app_info info = {0};
    struct ds_kms_boot_info bi = {0};
    if (!a || !res || !out || !res->ok) {
        return -EINVAL;
    }
    if (a->platform != DS_ATT_TDX) {
        return -DS_E_UNSUPPORTED;
    }
    const char *cfg = vm_config && vm_config[0] ? vm_config : (a->config[0] ? a->config : NULL);
    int r = ds_app_info_decode(a->runtime_events, &res->td, NULL, 0, cfg, boottime, &info);
    if (r < 0) {
        goto out;
    }
    if (info.app_id_len != DS_KMS_APP_ID_SIZE) {
        r = -DS_E_FORMAT;
        goto out;
    }
    bi.tee_variant = TEE_VARIANT_TDX;
    memcpy(bi.app_id, info.app_id, DS_KMS_APP_ID_SIZE);
    /* The device id needs the PCK's PPID, which only the verification saw. */
    memcpy(bi.device_id, res->app_info.device_id, sizeof(bi.device_id));
    memcpy(bi.mr_system, info.mr_system, sizeof(bi.mr_system));
    memcpy(bi.mr_aggregated, info.mr_aggregated, sizeof(bi.mr_aggregated));
    r = dup_bytes(info.compose_hash, info.compose_hash_len, &bi.compose_hash, &bi.compose_hash_len);
    if (r == 0) {
        r = dup_bytes(info.instance_id, info.instance_id_len, &bi.instance_id, &bi.instance_id_len);
    }
    if (r == 0) {
        r = dup_bytes(info.key_provider_info, info.key_provider_info_len, &bi.key_provider_info,
                      &bi.key_provider_info_len);
    }
    if (r == 0) {
        r = dup_bytes(info.os_image_hash, info.os_image_hash_len, &bi.os_image_hash,
                      &bi.os_image_hash_len);
    }
    if (r < 0) {
        goto out;
    }
    snprintf(bi.tcb_status, sizeof(bi.tcb_status), "%s", ds_tcb_status_name(res->tcb_status));
    if (res->advisory_count > 0) {
        bi.advisory_ids = calloc(res->advisory_count, sizeof(char *));
        if (!bi.advisory_ids) {
            r = -ENOMEM;
            goto out;
        }
        for (size_t i = 0; i < res->advisory_count; i++) {
            bi.advisory_ids[i] = strdup(res->advisory_ids[i] ? res->advisory_ids[i] : "");
            if (!bi.advisory_ids[i]) {
                r = -ENOMEM;
                goto out;
            }
            bi.advisory_count++;
        }
    }
    *out = bi;
    memset(&bi, 0, sizeof(bi));
    r = 0;
out:
    ds_app_info_done(&info);
    ds_kms_boot_info_done(&bi);
    return r;
}

static int set_hex(json_t *o, const char *key, const uint8_t *p, size_t n)
{
    char *hex = ds_hex_strdup(p ? p : (const uint8_t *)"", n);
    if (!hex) {
        return -ENOMEM;
    }
    int r = json_object_set_new(o, key, json_string(hex)) == 0 ? 0 : -ENOMEM;
    free(hex);
    return r;
}

int ds_kms_boot_info_to_json(const struct ds_kms_boot_info *bi, json_t **out)
{
    if (!bi || !out) {
        return -EINVAL;
    }
    json_t *o = json_object();
    json_t *adv = json_array();
    int r = o && adv ? 0 : -ENOMEM;
    if (r == 0) {
        r = json_object_set_new(o, "teeVariant",
                                json_string(bi->tee_variant ? bi->tee_variant : ""))
                ? -ENOMEM
                : 0;
    }
    if (r == 0) {
        r = set_hex(o, "appId", bi->app_id, sizeof(bi->app_id));
    }
    if (r == 0) {
        r = set_hex(o, "composeHash", bi->compose_hash, bi->compose_hash_len);
    }
    if (r == 0) {
        r = set_hex(o, "instanceId", bi->instance_id, bi->instance_id_len);
    }
    if (r == 0) {
        r = set_hex(o, "deviceId", bi->device_id, sizeof(bi->device_id));
    }
    if (r == 0) {
        r = set_hex(o, "keyProviderInfo", bi->key_provider_info, bi->key_provider_info_len);
    }
    if (r == 0) {
        r = set_hex(o, "mrSystem", bi->mr_system, sizeof(bi->mr_system));
    }
    if (r == 0) {
        r = set_hex(o, "mrAggregated", bi->mr_aggregated, sizeof(bi->mr_aggregated));
    }
    if (r == 0) {
        r = set_hex(o, "osImageHash", bi->os_image_hash, bi->os_image_hash_len);
    }
    if (r == 0) {
        r = json_object_set_new(o, "tcbStatus", json_string(bi->tcb_status)) ? -ENOMEM : 0;
    }
    for (size_t i = 0; r == 0 && i < bi->advisory_count; i++) {
        r = json_array_append_new(adv, json_string(bi->advisory_ids[i])) ? -ENOMEM : 0;
    }
    if (r == 0) {
        r = json_object_set(o, "advisoryIds", adv) ? -ENOMEM : 0;
    }
    json_decref(adv);
    if (r < 0) {
        json_decref(o);
        return r;
    }
    *out = o;
    return 0;
}

/* ---- webhook replies ------------------------------------------------------------------------- */

void ds_kms_decision_done(struct ds_kms_decision *d)
{
    if (!d) {
        return;
    }
    free(d->gateway_app_id);
    memset(d, 0, sizeof(*d));
}

static int load_object(const char *body, size_t len, json_t **out, char *err, size_t n)
{
    if (!body) {
        return -EINVAL;
    }
    if (len > DS_KMS_WEBHOOK_BODY_MAX) {
        snprintf(err, n, "reply larger than %d bytes", DS_KMS_WEBHOOK_BODY_MAX);
        return -DS_E_LIMIT;
    }
    json_error_t je;
    json_t *o = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!o || !json_is_object(o)) {
        snprintf(err, n, "reply is not a JSON object");
        json_decref(o);
        return -DS_E_FORMAT;
    }
    *out = o;
    return 0;
}

static int req_string(json_t *o, const char *key, char **out, bool optional, char *err, size_t n)
{
    json_t *v = json_object_get(o, key);
    if (!v && optional) {
        *out = strdup("");
        return *out ? 0 : -ENOMEM;
    }
    if (!json_is_string(v)) {
        snprintf(err, n, "\"%s\" missing or not a string", key);
        return -DS_E_FORMAT;
    }
    *out = strdup(json_string_value(v));
    return *out ? 0 : -ENOMEM;
}

int ds_kms_decision_parse(const char *body, size_t len, struct ds_kms_decision *out, char *err,
                          size_t err_size)
{
    json_t *o = NULL;
    struct ds_kms_decision d = {0};
    char *reason = NULL;
    if (!out || !err || err_size == 0) {
        return -EINVAL;
    }
    int r = load_object(body, len, &o, err, err_size);
    if (r < 0) {
        return r;
    }
    json_t *allowed = json_object_get(o, "isAllowed");
    if (!json_is_boolean(allowed)) {
        snprintf(err, err_size, "\"isAllowed\" missing or not a boolean");
        r = -DS_E_FORMAT;
        goto out;
    }
    d.allowed = json_is_true(allowed);
    r = req_string(o, "gatewayAppId", &d.gateway_app_id, false, err, err_size);
    if (r == 0) {
        r = req_string(o, "reason", &reason, false, err, err_size);
    }
    if (r < 0) {
        goto out;
    }
    snprintf(d.reason, sizeof(d.reason), "%s", reason);
    *out = d;
    memset(&d, 0, sizeof(d));
out:
    free(reason);
    ds_kms_decision_done(&d);
    json_decref(o);
    return r;
}

void ds_kms_auth_info_done(struct ds_kms_auth_info *i)
{
    if (!i) {
        return;
    }
    free(i->status);
    free(i->kms_contract_addr);
    free(i->gateway_app_id);
    free(i->app_implementation);
    free(i->eth_rpc_url);
    memset(i, 0, sizeof(*i));
}

int ds_kms_auth_info_parse(const char *body, size_t len, struct ds_kms_auth_info *out, char *err,
                           size_t err_size)
{
    json_t *o = NULL;
    struct ds_kms_auth_info i = {0};
    if (!out || !err || err_size == 0) {
        return -EINVAL;
    }
    int r = load_object(body, len, &o, err, err_size);
    if (r < 0) {
        return r;
    }
    r = req_string(o, "status", &i.status, false, err, err_size);
    if (r == 0) {
        r = req_string(o, "kmsContractAddr", &i.kms_contract_addr, false, err, err_size);
    }
    if (r == 0) {
        r = req_string(o, "gatewayAppId", &i.gateway_app_id, false, err, err_size);
    }
    if (r == 0) {
        r = req_string(o, "appImplementation", &i.app_implementation, false, err, err_size);
    }
    if (r == 0) {
        r = req_string(o, "ethRpcUrl", &i.eth_rpc_url, true, err, err_size);
    }
    if (r == 0) {
        json_t *c = json_object_get(o, "chainId");
        if (!json_is_integer(c) || json_integer_value(c) < 0) {
            snprintf(err, err_size, "\"chainId\" missing or not a non-negative integer");
            r = -DS_E_FORMAT;
        } else {
            i.chain_id = (uint64_t)json_integer_value(c);
        }
    }
    if (r == 0) {
        *out = i;
        memset(&i, 0, sizeof(i));
    }
    ds_kms_auth_info_done(&i);
    json_decref(o);
    return r;
}
