/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/kms: the request decoders (field types, app id length, CSR api version,
 * domains, source URLs, cache keys, failures leave nothing behind), the domain rule of §2.4,
 * BootInfo JSON (camelCase keys, lowercase hex, empty fields), the webhook reply parsers (every
 * required key, wrong types, limits), and the auth-simple policy: defaults, every rule in
 * order with its exact reason, hex normalisation, device rules, the GET / info.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>

#include "dstack/kms.h"

static json_t *js(const char *s)
{
    json_t *j = json_loads(s, 0, NULL);
    assert_non_null(j);
    return j;
}

/* ---- requests -------------------------------------------------------------------------------- */

static int dec(enum ds_kms_req which, const char *body, void *out, char *msg)
{
    json_t *j = js(body);
    int r = ds_kms_req_decode(which, j, false, out, msg, DS_KMS_DECODE_MSG_MAX);
    json_decref(j);
    return r;
}

static void test_req_app_id(void **state)
{
    (void)state;
    struct ds_kms_app_id_req r;
    char msg[DS_KMS_DECODE_MSG_MAX];
    assert_int_equal(dec(DS_KMS_REQ_APP_ID,
                         "{\"app_id\":\"0x1111111111111111111111111111111111111111\"}", &r, msg),
                     0);
    assert_int_equal(r.app_id.len, 20);
    assert_int_equal(r.app_id.data[19], 0x11);
    ds_kms_req_free(DS_KMS_REQ_APP_ID, &r);
    assert_null(r.app_id.data);

    assert_int_equal(dec(DS_KMS_REQ_APP_ID, "{\"app_id\":\"11\"}", &r, msg), -DS_E_FORMAT);
    assert_string_equal(msg, "Invalid app id length: 1");
    assert_null(r.app_id.data);
    assert_int_equal(dec(DS_KMS_REQ_APP_ID, "{}", &r, msg), -DS_E_FORMAT);
    assert_string_equal(msg, "Invalid app id length: 0");
    assert_int_equal(dec(DS_KMS_REQ_APP_ID, "{\"app_id\":\"xyz1\"}", &r, msg), -DS_E_FORMAT);
    assert_non_null(strstr(msg, "app_id"));
    assert_int_equal(dec(DS_KMS_REQ_APP_ID, "{\"app_id\":7}", &r, msg), -DS_E_FORMAT);
    assert_int_equal(dec(DS_KMS_REQ_APP_ID, "{\"app_id\":null}", &r, msg), -DS_E_FORMAT);
}

static void test_req_others(void **state)
{
    (void)state;
    char msg[DS_KMS_DECODE_MSG_MAX];
    struct ds_kms_get_app_key_req g;
    assert_int_equal(
        dec(DS_KMS_REQ_GET_APP_KEY, "{\"api_version\":1,\"vm_config\":\"{}\",\"x\":1}", &g, msg),
        0);
    assert_int_equal(g.api_version, 1);
    assert_string_equal(g.vm_config, "{}");
    ds_kms_req_free(DS_KMS_REQ_GET_APP_KEY, &g);
    assert_int_equal(dec(DS_KMS_REQ_GET_APP_KEY, "{}", &g, msg), 0);
    assert_string_equal(g.vm_config, "");
    ds_kms_req_free(DS_KMS_REQ_GET_APP_KEY, &g);
    assert_int_equal(dec(DS_KMS_REQ_GET_APP_KEY, "{\"api_version\":-1}", &g, msg), -DS_E_FORMAT);
    assert_int_equal(dec(DS_KMS_REQ_GET_APP_KEY, "{\"api_version\":\"1\"}", &g, msg), -DS_E_FORMAT);

    struct ds_kms_sign_cert_req s;
    assert_int_equal(dec(DS_KMS_REQ_SIGN_CERT,
                         "{\"api_version\":2,\"csr\":\"00ff\",\"signature\":\"01\"}", &s, msg),
                     0);
    assert_int_equal(s.csr.len, 2);
    ds_kms_req_free(DS_KMS_REQ_SIGN_CERT, &s);
    assert_int_equal(dec(DS_KMS_REQ_SIGN_CERT, "{\"api_version\":3}", &s, msg), -DS_E_UNSUPPORTED);
    assert_string_equal(msg, "Unsupported API version: 3");
    assert_null(s.csr.data);
    assert_int_equal(dec(DS_KMS_REQ_SIGN_CERT, "{\"api_version\":0}", &s, msg), -DS_E_UNSUPPORTED);

    struct ds_kms_bootstrap_req b;
    assert_int_equal(dec(DS_KMS_REQ_BOOTSTRAP, "{\"domain\":\"kms.example.com\"}", &b, msg), 0);
    ds_kms_req_free(DS_KMS_REQ_BOOTSTRAP, &b);
    assert_int_equal(dec(DS_KMS_REQ_BOOTSTRAP, "{\"domain\":\"\"}", &b, msg), -DS_E_FORMAT);
    assert_string_equal(msg, "Invalid domain name");
    assert_null(b.domain);

    struct ds_kms_onboard_req o;
    assert_int_equal(dec(DS_KMS_REQ_ONBOARD,
                         "{\"source_url\":\"https://a:1/prpc\",\"domain\":\"b.c\"}", &o, msg),
                     0);
    ds_kms_req_free(DS_KMS_REQ_ONBOARD, &o);
    assert_int_equal(
        dec(DS_KMS_REQ_ONBOARD, "{\"source_url\":\"file:///etc\",\"domain\":\"b.c\"}", &o, msg),
        -DS_E_FORMAT);
    assert_non_null(strstr(msg, "Invalid source URL"));
    assert_int_equal(
        dec(DS_KMS_REQ_ONBOARD, "{\"source_url\":\"https://a b\",\"domain\":\"b.c\"}", &o, msg),
        -DS_E_FORMAT);
    assert_int_equal(
        dec(DS_KMS_REQ_ONBOARD, "{\"source_url\":\"https://a\",\"domain\":\"b_c\"}", &o, msg),
        -DS_E_FORMAT);

    struct ds_kms_clear_image_cache_req c;
    assert_int_equal(dec(DS_KMS_REQ_CLEAR_IMAGE_CACHE,
                         "{\"image_hash\":\"all\",\"config_hash\":\"AbCd\"}", &c, msg),
                     0);
    ds_kms_req_free(DS_KMS_REQ_CLEAR_IMAGE_CACHE, &c);
    assert_int_equal(dec(DS_KMS_REQ_CLEAR_IMAGE_CACHE, "{\"image_hash\":\"../x\"}", &c, msg),
                     -DS_E_FORMAT);

    /* query strings: every leaf is a string */
    json_t *q = NULL;
    assert_int_equal(ds_rpc_query_decode("api_version=1&vm_config=a", 25, &q, NULL), 0);
    assert_int_equal(ds_kms_req_decode(DS_KMS_REQ_GET_APP_KEY, q, true, &g, msg, sizeof(msg)), 0);
    assert_int_equal(g.api_version, 1);
    ds_kms_req_free(DS_KMS_REQ_GET_APP_KEY, &g);
    json_decref(q);
    assert_int_equal(ds_kms_req_decode(DS_KMS_REQ_MAX, q, false, &g, msg, sizeof(msg)), -EINVAL);
}

static void test_domain(void **state)
{
    (void)state;
    char long_label[80], long_name[300];
    assert_true(ds_kms_domain_valid("a"));
    assert_true(ds_kms_domain_valid("kms-1.Example.COM"));
    assert_true(ds_kms_domain_valid("127.0.0.1"));
    assert_false(ds_kms_domain_valid(""));
    assert_false(ds_kms_domain_valid(NULL));
    assert_false(ds_kms_domain_valid("a..b"));
    assert_false(ds_kms_domain_valid(".a"));
    assert_false(ds_kms_domain_valid("a."));
    assert_false(ds_kms_domain_valid("-a.b"));
    assert_false(ds_kms_domain_valid("a-.b"));
    assert_false(ds_kms_domain_valid("a_b"));
    assert_false(ds_kms_domain_valid("\xc3\xa9.com"));
    memset(long_label, 'a', 64);
    long_label[64] = '\0';
    assert_false(ds_kms_domain_valid(long_label));
    long_label[63] = '\0';
    assert_true(ds_kms_domain_valid(long_label));
    for (size_t i = 0; i < 254; i++) {
        long_name[i] = (i % 2) ? '.' : 'a';
    }
    long_name[253] = '\0';
    assert_true(ds_kms_domain_valid(long_name));
    long_name[253] = 'a';
    long_name[254] = '\0';
    assert_false(ds_kms_domain_valid(long_name));
}

/* ---- BootInfo -------------------------------------------------------------------------------- */

static uint8_t compose[32], os_image[32], instance[20];
static char adv0[] = "INTEL-SA-00837";
static char *advs[] = {adv0};

static struct ds_kms_boot_info sample(void)
{
    struct ds_kms_boot_info bi = {
        .tee_variant = "dstack-tdx",
        .compose_hash = compose,
        .compose_hash_len = sizeof(compose),
        .instance_id = instance,
        .instance_id_len = sizeof(instance),
        .os_image_hash = os_image,
        .os_image_hash_len = sizeof(os_image),
        .tcb_status = "UpToDate",
    };
    memset(bi.app_id, 0xAB, sizeof(bi.app_id));
    memset(bi.device_id, 0xDE, sizeof(bi.device_id));
    memset(bi.mr_aggregated, 0x4A, sizeof(bi.mr_aggregated));
    memset(compose, 0xC0, sizeof(compose));
    memset(os_image, 0x05, sizeof(os_image));
    memset(instance, 0x1D, sizeof(instance));
    return bi;
}

static void test_boot_info_json(void **state)
{
    (void)state;
    struct ds_kms_boot_info bi = sample();
    bi.advisory_ids = advs;
    bi.advisory_count = 1;
    json_t *j = NULL;
    assert_int_equal(ds_kms_boot_info_to_json(&bi, &j), 0);
    static const char *const keys[] = {
        "teeVariant", "appId",        "composeHash", "instanceId", "deviceId",   "keyProviderInfo",
        "mrSystem",   "mrAggregated", "osImageHash", "tcbStatus",  "advisoryIds"};
    assert_int_equal(json_object_size(j), DS_ARRAY_SIZE(keys));
    for (size_t i = 0; i < DS_ARRAY_SIZE(keys); i++) {
        assert_non_null(json_object_get(j, keys[i]));
    }
    assert_string_equal(json_string_value(json_object_get(j, "appId")),
                        "abababababababababababababababababababab");
    assert_string_equal(json_string_value(json_object_get(j, "keyProviderInfo")), "");
    assert_string_equal(json_string_value(json_object_get(j, "tcbStatus")), "UpToDate");
    assert_string_equal(json_string_value(json_array_get(json_object_get(j, "advisoryIds"), 0)),
                        "INTEL-SA-00837");
    json_decref(j);
    struct ds_attestation_result res = {0};
    assert_int_equal(ds_kms_boot_info_build(NULL, &res, NULL, false, &bi), -EINVAL);
}

/* ---- webhook replies ------------------------------------------------------------------------- */

static void test_decision_parse(void **state)
{
    (void)state;
    struct ds_kms_decision d;
    char err[128];
    const char *ok = "{\"isAllowed\":false,\"gatewayAppId\":\"gw\",\"reason\":\"nope\",\"x\":1}";
    assert_int_equal(ds_kms_decision_parse(ok, strlen(ok), &d, err, sizeof(err)), 0);
    assert_false(d.allowed);
    assert_string_equal(d.reason, "nope");
    assert_string_equal(d.gateway_app_id, "gw");
    ds_kms_decision_done(&d);
    static const struct {
        const char *body, *what;
    } bad[] = {
        {"{\"gatewayAppId\":\"\",\"reason\":\"\"}", "isAllowed"},
        {"{\"isAllowed\":1,\"gatewayAppId\":\"\",\"reason\":\"\"}", "isAllowed"},
        {"{\"isAllowed\":true,\"reason\":\"\"}", "gatewayAppId"},
        {"{\"isAllowed\":true,\"gatewayAppId\":\"\"}", "reason"},
        {"{\"isAllowed\":true,\"gatewayAppId\":null,\"reason\":\"\"}", "gatewayAppId"},
        {"[true]", "JSON object"},
        {"not json", "JSON object"},
        {"{\"isAllowed\":true,\"isAllowed\":false,\"gatewayAppId\":\"\",\"reason\":\"\"}",
         "JSON object"},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        assert_int_equal(
            ds_kms_decision_parse(bad[i].body, strlen(bad[i].body), &d, err, sizeof(err)),
            -DS_E_FORMAT);
        assert_non_null(strstr(err, bad[i].what));
    }
    char *big = malloc(DS_KMS_WEBHOOK_BODY_MAX + 2);
    assert_non_null(big);
    memset(big, ' ', DS_KMS_WEBHOOK_BODY_MAX + 1);
    assert_int_equal(ds_kms_decision_parse(big, DS_KMS_WEBHOOK_BODY_MAX + 1, &d, err, sizeof(err)),
                     -DS_E_LIMIT);
    free(big);
}

static void test_auth_info_parse(void **state)
{
    (void)state;
    struct ds_kms_auth_info i;
    char err[128];
    const char *ok = "{\"status\":\"ok\",\"kmsContractAddr\":\"0x1\",\"gatewayAppId\":\"g\","
                     "\"chainId\":10,\"appImplementation\":\"0x2\"}";
    assert_int_equal(ds_kms_auth_info_parse(ok, strlen(ok), &i, err, sizeof(err)), 0);
    assert_int_equal(i.chain_id, 10);
    assert_string_equal(i.eth_rpc_url, "");
    ds_kms_auth_info_done(&i);
    const char *no_chain = "{\"status\":\"ok\",\"kmsContractAddr\":\"0x1\",\"gatewayAppId\":\"g\","
                           "\"chainId\":-1,\"appImplementation\":\"0x2\"}";
    assert_int_equal(ds_kms_auth_info_parse(no_chain, strlen(no_chain), &i, err, sizeof(err)),
                     -DS_E_FORMAT);
    assert_non_null(strstr(err, "chainId"));
    const char *no_impl = "{\"status\":\"ok\",\"kmsContractAddr\":\"0x1\",\"gatewayAppId\":\"g\","
                          "\"chainId\":1}";
    assert_int_equal(ds_kms_auth_info_parse(no_impl, strlen(no_impl), &i, err, sizeof(err)),
                     -DS_E_FORMAT);
    assert_non_null(strstr(err, "appImplementation"));
}

/* ---- policy ---------------------------------------------------------------------------------- */

static void check(const char *policy, enum ds_kms_boot_kind kind, const struct ds_kms_boot_info *bi,
                  const char *want_reason)
{
    struct ds_kms_policy *p = NULL;
    struct ds_kms_decision d;
    char err[128];
    assert_int_equal(ds_kms_policy_parse(policy, strlen(policy), &p, err, sizeof(err)), 0);
    assert_int_equal(ds_kms_policy_check(p, kind, bi, &d), 0);
    if (want_reason) {
        assert_false(d.allowed);
        assert_string_equal(d.reason, want_reason);
    } else {
        assert_true(d.allowed);
        assert_string_equal(d.reason, "");
    }
    ds_kms_decision_done(&d);
    ds_kms_policy_free(p);
}

#define OS   "\"osImages\":[\"0x0505050505050505050505050505050505050505050505050505050505050505\"]"
#define MR   "4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a4a"
#define APP  "ABABABABABABABABABABABABABABABABABABABAB"
#define COMP "c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0c0"
#define DEV  "dededededededededededededededededededededededededededededededede"

static void test_policy_rules(void **state)
{
    (void)state;
    struct ds_kms_boot_info bi = sample();
    /* defaults: TCB UpToDate passes, no OS image allowed */
    check("{}", DS_KMS_BOOT_KMS, &bi, "OS image is not allowed");
    check("{}", DS_KMS_BOOT_APP, &bi, "OS image is not allowed");
    strcpy(bi.tcb_status, "OutOfDate");
    check("{" OS "}", DS_KMS_BOOT_KMS, &bi, "TCB status is not allowed");
    check("{\"allowedTcbStatuses\":[\"OutOfDate\"]," OS ",\"kms\":{\"mrAggregated\":[\"" MR "\"]}}",
          DS_KMS_BOOT_KMS, &bi, NULL);
    strcpy(bi.tcb_status, "UpToDate");
    bi.advisory_ids = advs;
    bi.advisory_count = 1;
    check("{" OS "}", DS_KMS_BOOT_KMS, &bi, "advisory ID is not allowed");
    check("{\"allowedAdvisoryIds\":[\"INTEL-SA-00837\"]," OS "}", DS_KMS_BOOT_KMS, &bi,
          "aggregated MR not allowed");
    bi.advisory_count = 0;
    /* KMS */
    check("{" OS "}", DS_KMS_BOOT_KMS, &bi, "aggregated MR not allowed");
    check("{" OS ",\"kms\":{\"mrAggregated\":[\"0x" MR "\"]}}", DS_KMS_BOOT_KMS, &bi, NULL);
    check("{" OS ",\"kms\":{\"mrAggregated\":[\"" MR "\"],\"devices\":[\"00\"]}}", DS_KMS_BOOT_KMS,
          &bi, "KMS is not allowed to boot on this device");
    check("{" OS ",\"kms\":{\"mrAggregated\":[\"" MR "\"],\"devices\":[\"0X" DEV "\"]}}",
          DS_KMS_BOOT_KMS, &bi, NULL);
    check("{" OS ",\"kms\":{\"mrAggregated\":[\"" MR
          "\"],\"devices\":[\"00\"],\"allowAnyDevice\":true}}",
          DS_KMS_BOOT_KMS, &bi, NULL);
    /* app */
    check("{" OS "}", DS_KMS_BOOT_APP, &bi, "app not registered");
    check("{" OS ",\"apps\":{\"0x1111111111111111111111111111111111111111\":{}}}", DS_KMS_BOOT_APP,
          &bi, "app not registered");
    check("{" OS ",\"apps\":{\"0x" APP "\":{}}}", DS_KMS_BOOT_APP, &bi, "compose hash not allowed");
    check("{" OS ",\"apps\":{\"" APP "\":{\"composeHashes\":[\"" COMP "\"]}}}", DS_KMS_BOOT_APP,
          &bi, NULL);
    check("{" OS ",\"apps\":{\"" APP "\":{\"composeHashes\":[\"" COMP "\"],\"devices\":[\"01\"]}}}",
          DS_KMS_BOOT_APP, &bi, "app is not allowed to boot on this device");
    /* the KMS entry does not authorize apps and vice versa */
    check("{" OS ",\"kms\":{\"mrAggregated\":[\"" MR "\"]}}", DS_KMS_BOOT_APP, &bi,
          "app not registered");
    check("{" OS ",\"apps\":{\"" APP "\":{\"composeHashes\":[\"" COMP "\"]}}}", DS_KMS_BOOT_KMS,
          &bi, "aggregated MR not allowed");
}

static void test_policy_parse(void **state)
{
    (void)state;
    struct ds_kms_policy *p = NULL;
    char err[128];
    static const struct {
        const char *json, *where;
    } bad[] = {
        {"[]", "the policy"},
        {"{\"osImages\":\"x\"}", "osImages"},
        {"{\"osImages\":[1]}", "osImages"},
        {"{\"gatewayAppId\":1}", "gatewayAppId"},
        {"{\"chainId\":\"1\"}", "chainId"},
        {"{\"chainId\":-2}", "chainId"},
        {"{\"kms\":[]}", "kms"},
        {"{\"kms\":{\"allowAnyDevice\":1}}", "kms.allowAnyDevice"},
        {"{\"apps\":{\"x\":{\"composeHashes\":\"y\"}}}", "composeHashes"},
        {"{\"apps\":[]}", "apps"},
        {"{", "not JSON"},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        err[0] = '\0';
        assert_int_equal(
            ds_kms_policy_parse(bad[i].json, strlen(bad[i].json), &p, err, sizeof(err)),
            -DS_E_FORMAT);
        assert_non_null(strstr(err, bad[i].where));
    }
    struct ds_kms_auth_info info;
    assert_int_equal(ds_kms_policy_default(&p), 0);
    assert_int_equal(ds_kms_policy_info(p, &info), 0);
    assert_string_equal(info.status, "ok");
    assert_string_equal(info.kms_contract_addr, "0x0000000000000000000000000000000000000000");
    assert_string_equal(info.gateway_app_id, "");
    assert_int_equal(info.chain_id, 0);
    ds_kms_auth_info_done(&info);
    ds_kms_policy_free(p);
    const char *full = "{\"gatewayAppId\":\"gw\",\"chainId\":5,\"kmsContractAddr\":\"0xk\","
                       "\"appImplementation\":\"0xa\"}";
    assert_int_equal(ds_kms_policy_parse(full, strlen(full), &p, err, sizeof(err)), 0);
    assert_int_equal(ds_kms_policy_info(p, &info), 0);
    assert_string_equal(info.gateway_app_id, "gw");
    assert_string_equal(info.app_implementation, "0xa");
    assert_int_equal(info.chain_id, 5);
    ds_kms_auth_info_done(&info);
    struct ds_kms_boot_info bi = sample();
    struct ds_kms_decision d;
    assert_int_equal(ds_kms_policy_check(p, DS_KMS_BOOT_APP, &bi, &d), 0);
    assert_string_equal(d.gateway_app_id, "gw");
    ds_kms_decision_done(&d);
    ds_kms_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_req_app_id),     cmocka_unit_test(test_req_others),
        cmocka_unit_test(test_domain),         cmocka_unit_test(test_boot_info_json),
        cmocka_unit_test(test_decision_parse), cmocka_unit_test(test_auth_info_parse),
        cmocka_unit_test(test_policy_rules),   cmocka_unit_test(test_policy_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
