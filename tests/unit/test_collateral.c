/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/attest/collateral.c (the QuoteCollateralV3 JSON form, spec §2.1):
 * round trips over the real Intel samples in ../shared/testdata/dcap, byte-exact output, and a
 * negative test for every way a field can be wrong (missing, wrong JSON type, bad hex, too
 * large), plus input that is not a JSON object at all.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "dstack/attest.h"

#define SAMPLE_MAX (1024 * 1024)

static const char *const required_fields[] = {
    "pck_crl_issuer_chain",     "root_ca_crl", "pck_crl",
    "tcb_info_issuer_chain",    "tcb_info",    "tcb_info_signature",
    "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
};
static const char *const hex_fields[] = {"root_ca_crl", "pck_crl", "tcb_info_signature",
                                         "qe_identity_signature"};

static char *read_sample(const char *name, size_t *len)
{
    const char *shared = getenv("DS_SHARED");
    char path[4096];
    uint8_t *data;
    snprintf(path, sizeof(path), "%s/testdata/dcap/%s", shared ? shared : "../../shared", name);
    int r = ds_read_file(path, SAMPLE_MAX, &data, len);
    if (r < 0) {
        fail_msg("cannot read %s: %s", path, ds_strerror(r));
    }
    return (char *)data;
}

static struct ds_collateral *load_sample(const char *name)
{
    size_t len;
    char *json = read_sample(name, &len);
    struct ds_collateral *c = NULL;
    char err[256];
    int r = ds_collateral_from_json(json, len, &c, err, sizeof(err));
    if (r < 0) {
        fail_msg("%s: %s (%s)", name, err, ds_strerror(r));
    }
    free(json);
    return c;
}

static void assert_bytes_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    assert_int_equal(alen, blen);
    if (alen) {
        assert_memory_equal(a, b, alen);
    }
}

static void assert_str_equal_or_null(const char *a, const char *b)
{
    if (!a || !b) {
        assert_null(a);
        assert_null(b);
        return;
    }
    assert_string_equal(a, b);
}

static void assert_collateral_equal(const struct ds_collateral *a, const struct ds_collateral *b)
{
    assert_string_equal(a->pck_crl_issuer_chain, b->pck_crl_issuer_chain);
    assert_bytes_equal(a->root_ca_crl, a->root_ca_crl_len, b->root_ca_crl, b->root_ca_crl_len);
    assert_bytes_equal(a->pck_crl, a->pck_crl_len, b->pck_crl, b->pck_crl_len);
    assert_string_equal(a->tcb_info_issuer_chain, b->tcb_info_issuer_chain);
    assert_bytes_equal(a->tcb_info, a->tcb_info_len, b->tcb_info, b->tcb_info_len);
    assert_bytes_equal(a->tcb_info_signature, a->tcb_info_signature_len, b->tcb_info_signature,
                       b->tcb_info_signature_len);
    assert_string_equal(a->qe_identity_issuer_chain, b->qe_identity_issuer_chain);
    assert_bytes_equal(a->qe_identity, a->qe_identity_len, b->qe_identity, b->qe_identity_len);
    assert_bytes_equal(a->qe_identity_signature, a->qe_identity_signature_len,
                       b->qe_identity_signature, b->qe_identity_signature_len);
    assert_str_equal_or_null(a->pck_certificate_chain, b->pck_certificate_chain);
}

/* Load a sample as a jansson object, for tests that edit it. */
static json_t *sample_object(const char *name)
{
    size_t len;
    char *json = read_sample(name, &len);
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    free(json);
    assert_non_null(o);
    return o;
}

/* from_json over a jansson value; returns the error and copies the message. */
static int load_value(json_t *o, char *err, size_t err_size)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(s);
    struct ds_collateral *c = NULL;
    int r = ds_collateral_from_json(s, strlen(s), &c, err, err_size);
    free(s);
    if (r == 0) {
        assert_non_null(c);
        ds_collateral_free(c);
    } else {
        assert_null(c);
    }
    return r;
}

static void test_sample_fields(void **state)
{
    (void)state;
    struct ds_collateral *t = load_sample("tdx_quote_collateral.json");
    struct ds_collateral *s = load_sample("sgx_quote_collateral.json");

    assert_int_equal(t->tcb_info_signature_len, 64);
    assert_int_equal(t->qe_identity_signature_len, 64);
    assert_int_equal(t->root_ca_crl_len, 292);
    assert_int_equal(t->tcb_info_len, 2934);
    assert_int_equal(t->qe_identity_len, 461);
    assert_true(strncmp(t->tcb_info, "{\"id\":\"TDX\",\"version\":3,", 24) == 0);
    assert_true(strncmp(t->qe_identity, "{\"id\":\"TD_QE\",", 14) == 0);
    assert_int_equal(t->tcb_info[t->tcb_info_len], 0);
    /* DER CRLs start with a SEQUENCE tag */
    assert_int_equal(t->root_ca_crl[0], 0x30);
    assert_int_equal(t->pck_crl[0], 0x30);
    assert_int_equal(t->pck_crl_len, 5326 / 2);
    assert_true(strncmp(t->pck_crl_issuer_chain, "-----BEGIN CERTIFICATE-----\n", 28) == 0);
    assert_null(t->pck_certificate_chain);

    assert_true(strncmp(s->tcb_info, "{\"id\":\"SGX\",", 12) == 0);
    assert_true(strncmp(s->qe_identity, "{\"id\":\"QE\",", 11) == 0);
    assert_int_equal(s->pck_crl_len, 302);
    assert_null(s->pck_certificate_chain);
    ds_collateral_free(t);
    ds_collateral_free(s);
}

static void roundtrip(const char *name)
{
    size_t len;
    char *json = read_sample(name, &len);
    struct ds_collateral *a = load_sample(name), *b = NULL;
    char *out = NULL, err[256];

    assert_int_equal(ds_collateral_to_json(a, &out), 0);
    /* The saved form is the same bytes as dcap-qvl's sample file. */
    assert_int_equal(strlen(out), len);
    assert_memory_equal(out, json, len);
    assert_int_equal(ds_collateral_from_json(out, strlen(out), &b, err, sizeof(err)), 0);
    assert_collateral_equal(a, b);
    free(out);
    ds_collateral_free(b);

    /* With the optional PCK chain present it survives the round trip too. */
    a->pck_certificate_chain = strdup(a->tcb_info_issuer_chain);
    assert_non_null(a->pck_certificate_chain);
    assert_int_equal(ds_collateral_to_json(a, &out), 0);
    assert_non_null(strstr(out, "\"pck_certificate_chain\""));
    assert_int_equal(ds_collateral_from_json(out, strlen(out), &b, err, sizeof(err)), 0);
    assert_non_null(b->pck_certificate_chain);
    assert_collateral_equal(a, b);
    free(out);
    ds_collateral_free(b);
    ds_collateral_free(a);
    free(json);
}

static void test_roundtrip_tdx(void **state)
{
    (void)state;
    roundtrip("tdx_quote_collateral.json");
}

static void test_roundtrip_sgx(void **state)
{
    (void)state;
    roundtrip("sgx_quote_collateral.json");
}

static void test_uppercase_hex_and_unknown_keys(void **state)
{
    (void)state;
    json_t *o = sample_object("sgx_quote_collateral.json");
    for (size_t i = 0; i < DS_ARRAY_SIZE(hex_fields); i++) {
        const char *v = json_string_value(json_object_get(o, hex_fields[i]));
        char *up = strdup(v);
        for (char *p = up; *p; p++) {
            if (*p >= 'a' && *p <= 'f') {
                *p = (char)(*p - 'a' + 'A');
            }
        }
        json_object_set_new(o, hex_fields[i], json_string(up));
        free(up);
    }
    json_object_set_new(o, "some_future_field", json_pack("{s:i}", "x", 1));
    json_object_set_new(o, "pck_certificate_chain", json_null());
    char *s = json_dumps(o, 0);
    struct ds_collateral *a = NULL, *b = load_sample("sgx_quote_collateral.json");
    char err[256];
    assert_int_equal(ds_collateral_from_json(s, strlen(s), &a, err, sizeof(err)), 0);
    assert_collateral_equal(a, b);
    ds_collateral_free(a);
    ds_collateral_free(b);
    free(s);
    json_decref(o);
}

static void test_missing_field(void **state)
{
    (void)state;
    char err[256], want[128];
    for (size_t i = 0; i < DS_ARRAY_SIZE(required_fields); i++) {
        json_t *o = sample_object("tdx_quote_collateral.json");
        assert_int_equal(json_object_del(o, required_fields[i]), 0);
        assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
        snprintf(want, sizeof(want), "%s: missing", required_fields[i]);
        assert_string_equal(err, want);
        json_decref(o);
    }
}

static bool is_hex_field(const char *name)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(hex_fields); i++) {
        if (strcmp(name, hex_fields[i]) == 0) {
            return true;
        }
    }
    return false;
}

static void test_wrong_type(void **state)
{
    (void)state;
    char err[256], want[128];
    json_t *bad[] = {json_integer(5), json_true(), json_null(), json_array(), json_object()};
    const char *names[DS_ARRAY_SIZE(required_fields) + 1];
    memcpy(names, required_fields, sizeof(required_fields));
    names[DS_ARRAY_SIZE(required_fields)] = "pck_certificate_chain";
    for (size_t i = 0; i < DS_ARRAY_SIZE(names); i++) {
        for (size_t k = 0; k < DS_ARRAY_SIZE(bad); k++) {
            bool optional = i == DS_ARRAY_SIZE(required_fields);
            json_t *o = sample_object("tdx_quote_collateral.json");
            json_object_set(o, names[i], bad[k]);
            int r = load_value(o, err, sizeof(err));
            json_decref(o);
            if (optional && json_is_null(bad[k])) {
                /* null is "absent" (serde's Option), fine for the optional field only */
                assert_int_equal(r, 0);
                continue;
            }
            assert_int_equal(r, -DS_E_FORMAT);
            snprintf(want, sizeof(want), "%s: expected %s", names[i],
                     is_hex_field(names[i]) ? "hex string" : "string");
            assert_string_equal(err, want);
        }
    }
    for (size_t k = 0; k < DS_ARRAY_SIZE(bad); k++) {
        json_decref(bad[k]);
    }
}

static void test_bad_hex(void **state)
{
    (void)state;
    char err[256], want[128];
    const char *cases[] = {"abc", "zz", "0g12", "12 34", "-1"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(hex_fields); i++) {
        for (size_t k = 0; k < DS_ARRAY_SIZE(cases); k++) {
            json_t *o = sample_object("sgx_quote_collateral.json");
            json_object_set_new(o, hex_fields[i], json_string(cases[k]));
            assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
            snprintf(want, sizeof(want), "%s: expected hex string", hex_fields[i]);
            assert_string_equal(err, want);
            json_decref(o);
        }
        /* odd length of an otherwise valid value: drop the last digit */
        json_t *o = sample_object("sgx_quote_collateral.json");
        const char *v = json_string_value(json_object_get(o, hex_fields[i]));
        json_object_set_new(o, hex_fields[i], json_stringn(v, strlen(v) - 1));
        assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
        snprintf(want, sizeof(want), "%s: expected hex string", hex_fields[i]);
        assert_string_equal(err, want);
        json_decref(o);
    }
}

static void test_empty_values(void **state)
{
    (void)state;
    char err[256];
    for (size_t i = 0; i < DS_ARRAY_SIZE(required_fields); i++) {
        json_t *o = sample_object("tdx_quote_collateral.json");
        json_object_set_new(o, required_fields[i], json_string(""));
        assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
        assert_true(strncmp(err, required_fields[i], strlen(required_fields[i])) == 0);
        assert_non_null(strstr(err, "expected non-empty"));
        json_decref(o);
    }
}

static void test_field_too_large(void **state)
{
    (void)state;
    char err[256];
    /* a 2 KiB signature: far beyond any r||s */
    size_t n = 4096;
    char *hex = malloc(n + 1);
    memset(hex, 'a', n);
    hex[n] = 0;
    json_t *o = sample_object("tdx_quote_collateral.json");
    json_object_set_new(o, "tcb_info_signature", json_string(hex));
    assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_LIMIT);
    assert_string_equal(err, "tcb_info_signature: longer than 512 bytes");
    json_decref(o);
    free(hex);
}

static void test_oversized_input(void **state)
{
    (void)state;
    size_t len;
    char *json = read_sample("tdx_quote_collateral.json", &len);
    /* valid JSON followed by whitespace up to one byte past the cap */
    size_t big = (size_t)DS_COLLATERAL_MAX_JSON + 1;
    char *buf = malloc(big);
    assert_non_null(buf);
    memcpy(buf, json, len);
    memset(buf + len, ' ', big - len);
    struct ds_collateral *c = NULL;
    char err[256];
    assert_int_equal(ds_collateral_from_json(buf, big, &c, err, sizeof(err)), -DS_E_LIMIT);
    assert_null(c);
    assert_non_null(strstr(err, "longer than"));
    /* exactly at the cap it is accepted */
    assert_int_equal(ds_collateral_from_json(buf, big - 1, &c, err, sizeof(err)), 0);
    ds_collateral_free(c);
    free(buf);
    free(json);
}

static void test_not_an_object(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[256];
    const char *not_json[] = {"", "hello", "{\"pck_crl\":", "{} trailing", "\xff\xfe"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(not_json); i++) {
        assert_int_equal(
            ds_collateral_from_json(not_json[i], strlen(not_json[i]), &c, err, sizeof(err)),
            -DS_E_FORMAT);
        assert_null(c);
        assert_non_null(strstr(err, "not valid JSON"));
    }
    const char *not_obj[] = {"[]", "[{\"pck_crl\":\"00\"}]", "\"x\"", "42", "null"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(not_obj); i++) {
        int r = ds_collateral_from_json(not_obj[i], strlen(not_obj[i]), &c, err, sizeof(err));
        assert_int_equal(r, -DS_E_FORMAT);
        assert_null(c);
        /* jansson refuses bare scalars at top level; arrays reach our object check */
        assert_true(strstr(err, "expected a JSON object") || strstr(err, "not valid JSON"));
    }
    assert_int_equal(ds_collateral_from_json("[]", 2, &c, err, sizeof(err)), -DS_E_FORMAT);
    assert_string_equal(err, "collateral: expected a JSON object");
    /* a NUL byte inside the input is not JSON */
    assert_int_equal(ds_collateral_from_json("{}\0", 3, &c, err, sizeof(err)), -DS_E_FORMAT);
    /* the error buffer is optional */
    assert_int_equal(ds_collateral_from_json("[]", 2, &c, NULL, 0), -DS_E_FORMAT);
}

static void test_duplicate_and_nul(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[256];
    /* duplicate keys are ambiguous (which tcb_info is signed?): rejected */
    const char *dup = "{\"tcb_info\":\"a\",\"tcb_info\":\"b\"}";
    assert_int_equal(ds_collateral_from_json(dup, strlen(dup), &c, err, sizeof(err)), -DS_E_FORMAT);
    assert_non_null(strstr(err, "duplicate"));
    /* an escaped NUL inside a PEM string */
    json_t *o = sample_object("tdx_quote_collateral.json");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *p = strstr(s, "-----BEGIN");
    assert_non_null(p);
    size_t plen = strlen(s) + 8;
    char *t = malloc(plen);
    snprintf(t, plen, "%.*s\\u0000%s", (int)(p - s), s, p);
    assert_int_equal(ds_collateral_from_json(t, strlen(t), &c, err, sizeof(err)), -DS_E_FORMAT);
    assert_null(c);
    free(t);
    free(s);
}

static void test_to_json_requires_fields(void **state)
{
    (void)state;
    struct ds_collateral *a = load_sample("tdx_quote_collateral.json");
    char *out = NULL;
    free(a->qe_identity);
    a->qe_identity = NULL;
    a->qe_identity_len = 0;
    assert_int_equal(ds_collateral_to_json(a, &out), -EINVAL);
    assert_null(out);
    ds_collateral_free(a);
    ds_collateral_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_fields),
        cmocka_unit_test(test_roundtrip_tdx),
        cmocka_unit_test(test_roundtrip_sgx),
        cmocka_unit_test(test_uppercase_hex_and_unknown_keys),
        cmocka_unit_test(test_missing_field),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_bad_hex),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_field_too_large),
        cmocka_unit_test(test_oversized_input),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_duplicate_and_nul),
        cmocka_unit_test(test_to_json_requires_fields),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
