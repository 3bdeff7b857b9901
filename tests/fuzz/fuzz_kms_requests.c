/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for dstack-kms's request decoders and the authorization inputs it parses (all
 * in lib/kms): the first input byte picks the target, the rest is the untrusted text.
 *   0..6  a KMS/Onboard/Admin request message (enum ds_kms_req), tried as a POST JSON body and
 *         as a GET query string, decoded exactly as the daemon does (ds_kms_req_decode);
 *   7     a webhook /bootAuth reply (ds_kms_decision_parse);
 *   8     a webhook GET / reply (ds_kms_auth_info_parse);
 *   9     an auth-simple policy file, evaluated for a fixed BootInfo as app and as KMS.
 * Invariants: a failed decode says why and leaves the output all zero; a successful one has
 * non-NULL strings and bytes, AppId exactly 20 bytes and valid domains; everything is freed.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/kms.h"

#define MSG_MAX  256
#define OUT_SIZE 128 /* >= every request struct */

static bool all_zero(const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) {
        if (b[i]) {
            return false;
        }
    }
    return true;
}

static void check_ok(enum ds_kms_req which, const void *out)
{
    const struct ds_kms_app_id_req *a = out;
    const struct ds_kms_bootstrap_req *b = out;
    const struct ds_kms_onboard_req *o = out;
    const struct ds_kms_sign_cert_req *s = out;
    switch (which) {
    case DS_KMS_REQ_APP_ID:
        if (!a->app_id.data || a->app_id.len != DS_KMS_APP_ID_SIZE) {
            abort();
        }
        break;
    case DS_KMS_REQ_BOOTSTRAP:
        if (!b->domain || !ds_kms_domain_valid(b->domain)) {
            abort();
        }
        break;
    case DS_KMS_REQ_ONBOARD:
        if (!o->domain || !o->source_url || !ds_kms_domain_valid(o->domain)) {
            abort();
        }
        break;
    case DS_KMS_REQ_SIGN_CERT:
        if (!s->csr.data || !s->signature.data || !s->vm_config ||
            (s->api_version != 1 && s->api_version != 2)) {
            abort();
        }
        break;
    default:
        break;
    }
}

static void decode(enum ds_kms_req which, const json_t *params, bool from_query)
{
    _Alignas(max_align_t) uint8_t out[OUT_SIZE];
    char msg[MSG_MAX] = "";
    if (ds_kms_req_size(which) > sizeof(out)) {
        abort();
    }
    memset(out, 0, sizeof(out)); /* padding stays zero; fields must come back zero */
    int r = ds_kms_req_decode(which, params, from_query, out, msg, sizeof(msg));
    if (r == 0) {
        check_ok(which, out);
    } else if (!msg[0] || !all_zero(out, ds_kms_req_size(which))) {
        abort();
    }
    ds_kms_req_free(which, out);
    if (!all_zero(out, ds_kms_req_size(which))) {
        abort();
    }
}

static void fuzz_request(enum ds_kms_req which, const uint8_t *data, size_t size)
{
    json_t *body = json_loadb((const char *)data, size, 0, NULL);
    if (json_is_object(body)) {
        decode(which, body, false);
    }
    json_decref(body);
    json_t *q = NULL;
    if (ds_rpc_query_decode((const char *)data, size, &q, NULL) == 0) {
        decode(which, q, true);
        json_decref(q);
    }
}

static void fuzz_policy(const uint8_t *data, size_t size)
{
    struct ds_kms_policy *p = NULL;
    char err[MSG_MAX];
    if (ds_kms_policy_parse((const char *)data, size, &p, err, sizeof(err)) < 0) {
        return;
    }
    static uint8_t compose[32] = {1}, os[32] = {2}, inst[20] = {3};
    static char adv0[] = "INTEL-SA-00837";
    static char *adv[] = {adv0};
    struct ds_kms_boot_info bi = {
        .tee_variant = "dstack-tdx",
        .compose_hash = compose,
        .compose_hash_len = sizeof(compose),
        .instance_id = inst,
        .instance_id_len = sizeof(inst),
        .os_image_hash = os,
        .os_image_hash_len = sizeof(os),
        .tcb_status = "UpToDate",
        .advisory_ids = adv,
        .advisory_count = size % 2,
    };
    for (int kind = DS_KMS_BOOT_APP; kind <= DS_KMS_BOOT_KMS; kind++) {
        struct ds_kms_decision d = {0};
        if (ds_kms_policy_check(p, (enum ds_kms_boot_kind)kind, &bi, &d) == 0) {
            if (!d.gateway_app_id || d.allowed != (d.reason[0] == '\0')) {
                abort();
            }
            ds_kms_decision_done(&d);
        }
    }
    struct ds_kms_auth_info info = {0};
    if (ds_kms_policy_info(p, &info) == 0) {
        ds_kms_auth_info_done(&info);
    }
    ds_kms_policy_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t which = data[0] % 10;
    data++;
    size--;
    char err[MSG_MAX];
    if (which < DS_KMS_REQ_MAX) {
        fuzz_request((enum ds_kms_req)which, data, size);
    } else if (which == 7) {
        struct ds_kms_decision d = {0};
        if (ds_kms_decision_parse((const char *)data, size, &d, err, sizeof(err)) == 0) {
            ds_kms_decision_done(&d);
        }
    } else if (which == 8) {
        struct ds_kms_auth_info i = {0};
        if (ds_kms_auth_info_parse((const char *)data, size, &i, err, sizeof(err)) == 0) {
            ds_kms_auth_info_done(&i);
        }
    } else {
        fuzz_policy(data, size);
    }
    return 0;
}
