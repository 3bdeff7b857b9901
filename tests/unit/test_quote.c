/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the DCAP quote parser (lib/attest/quote.c, spec §1): the Intel samples
 * decode with the documented sizes and fields, v5 envelopes (TD report 1.0 and 1.5 bodies)
 * and SGX bodies in v4/v5 parse, trailing bytes are tolerated, and every truncation,
 * unsupported version/TEE/body type, inconsistent v5 descriptor, wrong outer certification
 * type and over-long length field is rejected with the documented error.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dstack/attest.h"
#include "dstack/sim.h"
#include "helper_verify_util.h"

static const uint8_t seed[DS_SIM_SEED_LEN] = {0x51, 0x75, 0x6f, 0x74, 0x65};

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static void test_tdx_sample(void **state)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_quote q;
    helper_verify_load_sample("tdx", &raw, &len, &c);
    assert_int_equal(len, 5006);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    assert_int_equal(q.version, 4);
    assert_int_equal(q.ak_type, DS_AK_TYPE_ECDSA_P256);
    assert_int_equal(q.tee_type, DS_TEE_TYPE_TDX);
    assert_int_equal(q.kind, DS_REPORT_TD10);
    assert_int_equal(q.signed_len, 632);
    assert_ptr_equal(q.signed_data, raw);
    assert_int_equal(q.outer_cert_type, 6);
    assert_int_equal(q.cert_type, 5);
    assert_int_equal(q.qe_auth_len, 32);
    assert_int_equal(q.trailing_len, 70);
    /* auth_len 4300 = 64 + 64 + 6 + 4166; the type-5 PEM ends with a NUL. */
    assert_int_equal(4 + 4300 + 632 + 70, len);
    assert_ptr_equal(q.qe_report_raw, raw + 632 + 4 + 64 + 64 + 6);
    assert_int_equal(q.cert_data[q.cert_data_len - 1], 0);
    assert_memory_equal(q.cert_data, "-----BEGIN CERTIFICATE-----", 27);
    /* Field offsets of §1.3 (v4 absolute). */
    assert_memory_equal(q.td.mr_td, raw + 184, 48);
    assert_memory_equal(q.td.rtmr[3], raw + 520, 48);
    assert_memory_equal(q.td.report_data, raw + 568, 64);
    assert_ptr_equal(ds_quote_report_data(&q), q.td.report_data);
    assert_true(ds_is_zero(q.td.rtmr[3], 48));
    assert_memory_equal(q.td.td_attributes, "\x00\x00\x00\x10\x00\x00\x00\x00", 8);
    assert_memory_equal(q.signature, raw + 636, 64);
    assert_memory_equal(q.attest_key, raw + 700, 64);
    ds_collateral_free(c);
    free(raw);
}

static void test_sgx_sample(void **state)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_quote q;
    helper_verify_load_sample("sgx", &raw, &len, &c);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    assert_int_equal(q.version, 3);
    assert_int_equal(q.tee_type, DS_TEE_TYPE_SGX);
    assert_int_equal(q.kind, DS_REPORT_SGX);
    assert_int_equal(q.signed_len, 432);
    assert_int_equal(q.outer_cert_type, 5);
    assert_int_equal(q.cert_type, 5);
    assert_memory_equal(q.sgx.report_data, "Hello, world!", 13);
    assert_ptr_equal(ds_quote_report_data(&q), q.sgx.report_data);
    assert_memory_equal(q.sgx.mr_enclave, raw + 48 + 64, 32);
    assert_memory_equal(q.sgx.mr_signer, raw + 48 + 128, 32);
    assert_ptr_equal(q.qe_report_raw, raw + 432 + 4 + 128);
    ds_collateral_free(c);
    free(raw);
}

/* Every proper prefix shorter than the declared structure fails with TRUNCATED. */
static void sweep_truncation(const uint8_t *raw, size_t len)
{
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    size_t need = len - q.trailing_len;
    for (size_t n = 0; n < need; n++) {
        struct ds_quote t;
        memset(&t, 0xa5, sizeof(t));
        int r = ds_quote_parse(raw, n, &t);
        if (r != -DS_E_TRUNCATED) {
            fail_msg("prefix %zu of %zu: %d", n, len, r);
        }
        assert_int_equal(t.version, 0xa5a5); /* out untouched on failure */
    }
    for (size_t n = need; n <= len; n++) {
        assert_int_equal(ds_quote_parse(raw, n, &q), 0);
        assert_int_equal(q.trailing_len, n - need);
    }
}

static void test_truncation(void **state)
{
    const char *names[] = {"tdx", "sgx"};
    for (size_t i = 0; i < 2; i++) {
        uint8_t *raw;
        size_t len;
        struct ds_collateral *c;
        helper_verify_load_sample(names[i], &raw, &len, &c);
        sweep_truncation(raw, len);
        ds_collateral_free(c);
        free(raw);
    }
}

static void test_trailing_bytes(void **state)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_quote q;
    helper_verify_load_sample("sgx", &raw, &len, &c);
    uint8_t *big = calloc(1, len + 1000);
    assert_non_null(big);
    memcpy(big, raw, len);
    memset(big + len, 0xee, 1000);
    assert_int_equal(ds_quote_parse(big, len + 1000, &q), 0);
    assert_int_equal(q.trailing_len, 1000);
    free(big);
    ds_collateral_free(c);
    free(raw);
}

static void test_header_rejects(void **state)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_quote q;
    helper_verify_load_sample("tdx", &raw, &len, &c);
    const uint16_t bad_versions[] = {0, 1, 2, 6, 0xffff};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad_versions); i++) {
        put_u16(raw, bad_versions[i]);
        assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_UNSUPPORTED);
    }
    put_u16(raw, 4);
    put_u32(raw + 4, 0x42);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_UNSUPPORTED);
    /* v3 bodies are SGX only. */
    put_u32(raw + 4, DS_TEE_TYPE_TDX);
    put_u16(raw, 3);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_FORMAT);
    put_u16(raw, 4);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    /* The attestation key type and QE vendor are the verifier's business, not the parser's. */
    put_u16(raw + 2, 3);
    raw[12] ^= 0xff;
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    assert_int_equal(q.ak_type, 3);
    /* Outer certification data type other than 6 in a v4 quote. */
    put_u16(raw + 2, 2);
    size_t outer = 632 + 4 + 128;
    put_u16(raw + outer, 5);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_UNSUPPORTED);
    put_u16(raw + outer, 6);
    /* Length fields above the 1 MiB cap or beyond the data. */
    put_u32(raw + 632, DS_QUOTE_MAX_SIZE + 1);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_FORMAT);
    put_u32(raw + 632, 4300 + 71);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_TRUNCATED);
    /* Slack inside the auth data or the type-6 body is not tolerated (only after it). */
    put_u32(raw + 632, 4301);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_FORMAT);
    put_u32(raw + 632, 4300);
    put_u32(raw + outer + 2, DS_QUOTE_MAX_SIZE + 1);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_FORMAT);
    put_u32(raw + outer + 2, 4167);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_TRUNCATED);
    put_u32(raw + outer + 2, 4165);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_TRUNCATED);
    put_u32(raw + outer + 2, 4166);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    /* Inner cert data length beyond the type-6 body. */
    size_t inner = outer + 6 + 384 + 64 + 2 + 32;
    assert_int_equal(raw[inner], 5);
    put_u32(raw + inner + 2, 4166);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_TRUNCATED);
    assert_int_equal(ds_quote_parse(NULL, len, &q), -DS_E_FORMAT);
    assert_null(ds_quote_report_data(NULL));
    ds_collateral_free(c);
    free(raw);
}

static void test_v5_bodies(void **state)
{
    struct ds_sim_pki *p;
    struct ds_sim_td td;
    uint8_t body[DS_TD15_REPORT_SIZE], *raw;
    size_t len;
    struct ds_quote q;
    assert_int_equal(ds_sim_pki_new(seed, &p), 0);
    ds_sim_td_defaults(&td);
    memset(td.rtmr[2], 0x33, 48);
    helper_verify_sim_td_body(p, &td, body);
    memset(body + DS_TD10_REPORT_SIZE, 0x77, 16);      /* tee_tcb_svn2 */
    memset(body + DS_TD10_REPORT_SIZE + 16, 0x88, 48); /* mr_service_td */
    body[520] = 0xdd;                                  /* report_data[0] */

    /* TD report 1.5 in a v5 quote. */
    struct helper_verify_qb qb = {.version = 5, .body = body, .body_len = DS_TD15_REPORT_SIZE};
    helper_verify_build_quote(p, &qb, &raw, &len);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    assert_int_equal(q.kind, DS_REPORT_TD15);
    assert_int_equal(q.signed_len, 702);
    assert_memory_equal(q.td.rtmr[2], td.rtmr[2], 48);
    assert_int_equal(q.td.report_data[0], 0xdd);
    assert_ptr_equal(ds_quote_report_data(&q), q.td.report_data);
    assert_memory_equal(q.td.report_data, raw + 574, 64);
    assert_memory_equal(q.td.tee_tcb_svn2, raw + 638, 16);
    assert_int_equal(q.td.mr_service_td[47], 0x88);
    assert_int_equal(q.trailing_len, 0);
    /* The v5 descriptor must agree with the body: size, type and TEE type. */
    put_u32(raw + 50, DS_TD10_REPORT_SIZE);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_FORMAT);
    put_u32(raw + 50, DS_TD15_REPORT_SIZE);
    put_u16(raw + 48, 4);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_UNSUPPORTED);
    put_u16(raw + 48, 1);
    assert_int_equal(ds_quote_parse(raw, len, &q), -DS_E_FORMAT);
    free(raw);

    /* TD report 1.0 in v5 (what the simulator makes with version 5). */
    uint8_t *sim;
    size_t sim_len;
    struct ds_sim_quote_opts o = {.version = 5};
    assert_int_equal(ds_sim_quote(p, &td, (uint8_t[64]){1}, &o, &sim, &sim_len), 0);
    assert_int_equal(ds_quote_parse(sim, sim_len, &q), 0);
    assert_int_equal(q.version, 5);
    assert_int_equal(q.kind, DS_REPORT_TD10);
    assert_int_equal(q.signed_len, 638);
    assert_int_equal(q.td.report_data[0], 1);
    assert_memory_equal(q.td.report_data, sim + 574, 64);
    assert_true(ds_is_zero(q.td.tee_tcb_svn2, 16));
    assert_int_equal(q.cert_data[q.cert_data_len - 1], 0);
    sweep_truncation(sim, sim_len);
    free(sim);

    /* SGX bodies in v4 and v5 envelopes parse (verification rejects them later). */
    uint8_t sgx_body[DS_SGX_REPORT_SIZE];
    memset(sgx_body, 0, sizeof(sgx_body));
    memcpy(sgx_body + 320, "sgx-body", 8);
    for (uint16_t v = 4; v <= 5; v++) {
        struct helper_verify_qb sb = {.version = v,
                                      .tee_type = DS_TEE_TYPE_SGX,
                                      .has_tee_type = true,
                                      .body = sgx_body,
                                      .body_len = sizeof(sgx_body)};
        helper_verify_build_quote(p, &sb, &raw, &len);
        assert_int_equal(ds_quote_parse(raw, len, &q), 0);
        assert_int_equal(q.kind, DS_REPORT_SGX);
        assert_int_equal(q.version, v);
        assert_memory_equal(ds_quote_report_data(&q), "sgx-body", 8);
        assert_int_equal(q.signed_len, v == 4 ? 432u : 438u);
        assert_int_equal(q.outer_cert_type, 6);
        free(raw);
    }
    ds_sim_pki_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tdx_sample),     cmocka_unit_test(test_sgx_sample),
        cmocka_unit_test(test_truncation),     cmocka_unit_test(test_trailing_bytes),
        cmocka_unit_test(test_header_rejects), cmocka_unit_test(test_v5_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
