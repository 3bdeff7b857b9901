/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for DCAP verification (lib/attest/verify.c, spec §2): the Intel samples verify
 * with exactly the documented verdicts at window_end - 1 and fail with an expiry error after
 * the window and before it; warm-cache and cleared-cache verifications give identical results;
 * the embedded root is Intel's; simulator quotes verify with the mock root (v4, v5, TD 1.5,
 * OutOfDate with merged advisories, debug allowed by policy); names and status parsing; the
 * cache honours time and is bounded; internal helpers (RFC 3339, merge, canonical sort).
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

#include "attest/verify_internal.h"
#include "dstack/attest.h"
#include "dstack/crypto.h"
#include "dstack/sim.h"
#include "helper_verify_util.h"

#define SIM_NOW 1780000000LL
#define DAY     86400LL

static const uint8_t seed[DS_SIM_SEED_LEN] = {0x76, 0x65, 0x72, 0x69, 0x66, 0x79};

/* Everything of a result that must be identical between runs (not pointers). */
static void assert_same_result(const struct ds_verify_result *a, const struct ds_verify_result *b)
{
    assert_int_equal(a->ok, b->ok);
    assert_int_equal(a->failed_step, b->failed_step);
    assert_int_equal(a->err, b->err);
    assert_string_equal(a->message, b->message);
    assert_int_equal(a->status, b->status);
    assert_int_equal(a->platform_status, b->platform_status);
    assert_int_equal(a->qe_status, b->qe_status);
    assert_int_equal(a->advisory_count, b->advisory_count);
    for (size_t i = 0; i < a->advisory_count; i++) {
        assert_string_equal(a->advisory_ids[i], b->advisory_ids[i]);
    }
    assert_memory_equal(a->fmspc, b->fmspc, 6);
    assert_memory_equal(a->ppid, b->ppid, 16);
    assert_memory_equal(a->pce_id, b->pce_id, 2);
}

static void check_tdx_verdict(const struct ds_verify_result *r)
{
    assert_true(r->ok);
    assert_int_equal(r->failed_step, DS_STEP_NONE);
    assert_int_equal(r->status, DS_TCB_UP_TO_DATE);
    assert_int_equal(r->platform_status, DS_TCB_UP_TO_DATE);
    assert_int_equal(r->qe_status, DS_TCB_UP_TO_DATE);
    assert_int_equal(r->advisory_count, 0);
    assert_memory_equal(r->fmspc, "\xb0\xc0\x6f\x00\x00\x00", 6);
    assert_memory_equal(r->pce_id, "\x00\x00", 2);
    assert_false(ds_is_zero(r->ppid, 16));
    assert_int_equal(r->quote.kind, DS_REPORT_TD10);
}

static void check_sgx_verdict(const struct ds_verify_result *r)
{
    assert_true(r->ok);
    assert_int_equal(r->status, DS_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED);
    assert_int_equal(r->qe_status, DS_TCB_UP_TO_DATE);
    assert_int_equal(r->platform_status, DS_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED);
    assert_int_equal(r->advisory_count, 2);
    assert_string_equal(r->advisory_ids[0], "INTEL-SA-00289");
    assert_string_equal(r->advisory_ids[1], "INTEL-SA-00615");
    assert_memory_equal(r->fmspc, "\x00\xa0\x67\x11\x00\x00", 6);
    assert_int_equal(r->quote.kind, DS_REPORT_SGX);
    assert_memory_equal(r->quote.sgx.report_data, "Hello, world!", 13);
}

static void test_intel_root(void **state)
{
    uint8_t h[32], want[32];
    ds_sha256(ds_intel_sgx_root_ca_der, ds_intel_sgx_root_ca_der_len, h);
    assert_int_equal(
        ds_hex_decode("44A0196B2B99F889B8E149E95B807A350E7424964399E885A7CBB8CCFAB674D3", 64, want,
                      32),
        32);
    assert_memory_equal(h, want, 32);

    /* The third certificate of the sample's PCK chain is byte-identical to it. */
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_quote q;
    struct ds_verifier *v, *v2;
    helper_verify_load_sample("tdx", &raw, &len, &c);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    char *pem = strndup((const char *)q.cert_data, q.cert_data_len);
    char *root_pem = helper_verify_pem_slice(pem, 2, 3);
    assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
    assert_true(ds_verifier_is_intel_root(v));
    assert_int_equal(ds_verifier_new(ds_intel_sgx_root_ca_der, ds_intel_sgx_root_ca_der_len, &v2),
                     0);
    assert_true(ds_verifier_is_intel_root(v2));
    ds_verifier_free(v2);
    assert_non_null(strstr(pem, root_pem));
    /* Garbage or a truncated certificate is not a trust anchor. */
    assert_int_equal(ds_verifier_new((const uint8_t *)"junk", 4, &v2), -DS_E_FORMAT);
    assert_int_equal(
        ds_verifier_new(ds_intel_sgx_root_ca_der, ds_intel_sgx_root_ca_der_len - 1, &v2),
        -DS_E_FORMAT);
    ds_verifier_free(v);
    ds_verifier_free(NULL);
    ds_verifier_clear_cache(NULL);
    free(root_pem);
    free(pem);
    ds_collateral_free(c);
    free(raw);
}

static void run_sample_window(const char *name, int64_t start, int64_t end,
                              void (*check)(const struct ds_verify_result *),
                              enum ds_verify_step after_step, enum ds_verify_step before_step)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_verifier *v;
    struct ds_verify_result cold, warm, again, r;
    helper_verify_load_sample(name, &raw, &len, &c);
    assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);

    assert_int_equal(ds_verify_quote(v, raw, len, c, end - 1, &cold), 0);
    check(&cold);
    assert_int_equal(ds_verify_quote(v, raw, len, c, end - 1, &warm), 0);
    check(&warm);
    assert_same_result(&cold, &warm);
    ds_verifier_clear_cache(v);
    assert_int_equal(ds_verify_quote(v, raw, len, c, end - 1, &again), 0);
    assert_same_result(&cold, &again);
    ds_verify_result_done(&again);
    /* The first second of the window too. */
    assert_int_equal(ds_verify_quote(v, raw, len, c, start, &again), 0);
    assert_same_result(&cold, &again);
    ds_verify_result_done(&again);

    /* After the window and before it: an expiry error, warm (cache hit outside its window)
     * and cold alike, naming the same step. */
    /* Just outside, the first check to lapse names its step; further out an earlier step
     * may lapse first (DS_STEP_MAX: any step). */
    const struct {
        int64_t t;
        enum ds_verify_step step;
    } times[] = {{end + 1, after_step},
                 {end + 30 * DAY, DS_STEP_MAX},
                 {start - 1, before_step},
                 {start - 30 * DAY, DS_STEP_MAX}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(times); i++) {
        struct ds_verify_result cr;
        assert_int_equal(ds_verify_quote(v, raw, len, c, times[i].t, &r), -DS_E_EXPIRED);
        assert_false(r.ok);
        assert_int_equal(r.err, -DS_E_EXPIRED);
        if (times[i].step != DS_STEP_MAX) {
            assert_int_equal(r.failed_step, times[i].step);
        } else {
            assert_true(r.failed_step >= DS_STEP_ROOT_CA && r.failed_step <= DS_STEP_PCK_CHAIN);
        }
        assert_int_equal(r.advisory_count, 0);
        ds_verifier_clear_cache(v);
        assert_int_equal(ds_verify_quote(v, raw, len, c, times[i].t, &cr), -DS_E_EXPIRED);
        assert_same_result(&r, &cr);
        ds_verify_result_done(&cr);
        ds_verify_result_done(&r);
        /* Back inside the window, the verdict is unchanged. */
        assert_int_equal(ds_verify_quote(v, raw, len, c, end - 1, &r), 0);
        assert_same_result(&cold, &r);
        ds_verify_result_done(&r);
    }
    ds_verify_result_done(&cold);
    ds_verify_result_done(&warm);
    ds_verifier_free(v);
    ds_collateral_free(c);
    free(raw);
}

static void test_tdx_sample(void **state)
{
    /* The window ends at the PCK CRL's nextUpdate and starts at the QE identity issueDate. */
    run_sample_window("tdx", HELPER_VERIFY_TDX_START, HELPER_VERIFY_TDX_END, check_tdx_verdict,
                      DS_STEP_PCK_CHAIN, DS_STEP_QE_IDENTITY);
}

static void test_sgx_sample(void **state)
{
    /* The window ends at the QE identity nextUpdate and starts at the TCB info issueDate. */
    run_sample_window("sgx", HELPER_VERIFY_SGX_START, HELPER_VERIFY_SGX_END, check_sgx_verdict,
                      DS_STEP_QE_IDENTITY, DS_STEP_TCB_INFO);
}

static void test_expiry_messages(void **state)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_verifier *v;
    struct ds_verify_result r;
    helper_verify_load_sample("tdx", &raw, &len, &c);
    assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_TDX_END, &r), -DS_E_EXPIRED);
    assert_string_equal(r.message, "pck_chain: CRL has expired (depth 0)");
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_TDX_START - 1, &r),
                     -DS_E_EXPIRED);
    assert_string_equal(r.message, "QE Identity issue date is in the future");
    ds_verify_result_done(&r);
    /* Years later the root CA CRL (step 0) is the first thing out of date. */
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_TDX_END + 3650 * DAY, &r),
                     -DS_E_EXPIRED);
    assert_int_equal(r.failed_step, DS_STEP_ROOT_CA);
    assert_string_equal(r.message, "root_ca_crl has expired");
    ds_verify_result_done(&r);
    /* And after 2049 the anchor itself. */
    assert_int_equal(ds_verify_quote(v, raw, len, c, 2600000000LL, &r), -DS_E_EXPIRED);
    assert_int_equal(r.failed_step, DS_STEP_ROOT_CA);
    assert_string_equal(r.message, "trusted root CA is not valid at this time");
    ds_verify_result_done(&r);
    ds_verifier_free(v);
    ds_collateral_free(c);
    free(raw);

    helper_verify_load_sample("sgx", &raw, &len, &c);
    assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_SGX_END + 1, &r), -DS_E_EXPIRED);
    assert_string_equal(r.message, "QE Identity expired");
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_SGX_START - 1, &r),
                     -DS_E_EXPIRED);
    assert_string_equal(r.message, "TCBInfo issue date is in the future");
    ds_verify_result_done(&r);
    ds_verifier_free(v);
    ds_collateral_free(c);
    free(raw);
}

/* The collateral's pck_certificate_chain, when present, replaces the quote's type-5 chain. */
static void test_pck_chain_from_collateral(void **state)
{
    uint8_t *raw;
    size_t len;
    struct ds_collateral *c;
    struct ds_verifier *v;
    struct ds_verify_result r;
    struct ds_quote q;
    helper_verify_load_sample("tdx", &raw, &len, &c);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    c->pck_certificate_chain = strndup((const char *)q.cert_data, q.cert_data_len);
    /* Make the quote's own chain unusable: the collateral's must be the one used. */
    size_t inner = q.signed_len + 4 + 128 + 6 + 384 + 64 + 2 + 32;
    raw[inner] = 3;
    assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_TDX_END - 1, &r), 0);
    check_tdx_verdict(&r);
    ds_verify_result_done(&r);
    free(c->pck_certificate_chain);
    c->pck_certificate_chain = NULL;
    assert_int_equal(ds_verify_quote(v, raw, len, c, HELPER_VERIFY_TDX_END - 1, &r),
                     -DS_E_UNSUPPORTED);
    assert_int_equal(r.failed_step, DS_STEP_PCK_CHAIN);
    assert_non_null(strstr(r.message, "Unsupported DCAP PCK cert format"));
    ds_verify_result_done(&r);
    ds_verifier_free(v);
    ds_collateral_free(c);
    free(raw);
}

struct sim_ctx {
    struct ds_sim_pki *p;
    struct ds_verifier *v;
    struct ds_collateral *c;
};

static int sim_setup(void **state)
{
    struct sim_ctx *s = calloc(1, sizeof(*s));
    const uint8_t *der;
    size_t der_len;
    if (!s || ds_sim_pki_new(seed, &s->p) < 0) {
        return -1;
    }
    ds_sim_pki_root_der(s->p, &der, &der_len);
    if (ds_verifier_new(der, der_len, &s->v) < 0 || ds_sim_collateral(s->p, SIM_NOW, &s->c) < 0) {
        return -1;
    }
    *state = s;
    return 0;
}

static int sim_teardown(void **state)
{
    struct sim_ctx *s = *state;
    ds_collateral_free(s->c);
    ds_verifier_free(s->v);
    ds_sim_pki_free(s->p);
    free(s);
    return 0;
}

static int verify_td(struct sim_ctx *s, const struct ds_sim_td *td, uint16_t version,
                     struct ds_verify_result *r)
{
    uint8_t *raw, rd[64];
    size_t len;
    struct ds_sim_quote_opts o = {.version = version};
    memset(rd, 0x42, sizeof(rd));
    assert_int_equal(ds_sim_quote(s->p, td, rd, &o, &raw, &len), 0);
    int ret = ds_verify_quote(s->v, raw, len, s->c, SIM_NOW, r);
    assert_int_equal(r->ok, ret == 0);
    if (ret == 0) {
        assert_memory_equal(ds_quote_report_data(&r->quote), rd, 64);
    }
    memset(&r->quote, 0, sizeof(r->quote)); /* its pointers die with raw */
    free(raw);
    return ret;
}

static void test_sim_quotes(void **state)
{
    struct sim_ctx *s = *state;
    struct ds_sim_td td;
    struct ds_verify_result r;
    uint8_t fmspc[6], pce_id[2], ppid[16];
    ds_sim_pki_platform(s->p, fmspc, pce_id, ppid);
    assert_false(ds_verifier_is_intel_root(s->v));
    ds_sim_td_defaults(&td);
    for (uint16_t ver = 4; ver <= 5; ver++) {
        assert_int_equal(verify_td(s, &td, ver, &r), 0);
        assert_int_equal(r.status, DS_TCB_UP_TO_DATE);
        assert_int_equal(r.advisory_count, 0);
        assert_memory_equal(r.fmspc, fmspc, 6);
        assert_memory_equal(r.ppid, ppid, 16);
        assert_memory_equal(r.pce_id, pce_id, 2);
        ds_verify_result_done(&r);
    }
    /* Allowed attribute bits: PKS (30), KL (31), PERFMON (63). */
    td.td_attributes[3] |= 0xc0;
    td.td_attributes[7] |= 0x80;
    assert_int_equal(verify_td(s, &td, 4, &r), 0);
    ds_verify_result_done(&r);

    /* An Intel verifier rejects the mock PKI at the anchor. */
    struct ds_verifier *intel;
    uint8_t *raw;
    size_t len;
    assert_int_equal(ds_verifier_new(NULL, 0, &intel), 0);
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(s->p, &td, (uint8_t[64]){0}, NULL, &raw, &len), 0);
    assert_int_equal(ds_verify_quote(intel, raw, len, s->c, SIM_NOW, &r), -DS_E_CERT);
    assert_int_equal(r.failed_step, DS_STEP_ROOT_CA);
    ds_verify_result_done(&r);
    ds_verifier_free(intel);
    free(raw);
}

/* OutOfDate platform + OutOfDate module: merged status, advisories de-duplicated. */
static void test_sim_out_of_date(void **state)
{
    struct sim_ctx *s = *state;
    struct ds_sim_td td;
    struct ds_verify_result r;
    ds_sim_td_defaults(&td);
    td.tee_tcb_svn[0] = 3; /* >= 03 00 02 level; module isvsvn 3 >= 2 */
    assert_int_equal(verify_td(s, &td, 4, &r), 0);
    assert_int_equal(r.status, DS_TCB_OUT_OF_DATE);
    assert_int_equal(r.platform_status, DS_TCB_OUT_OF_DATE);
    assert_int_equal(r.qe_status, DS_TCB_UP_TO_DATE);
    assert_int_equal(r.advisory_count, 1);
    assert_string_equal(r.advisory_ids[0], "INTEL-SA-00837");
    ds_verify_result_done(&r);

    /* QE OutOfDate too (its second level, re-signed): merged list keeps platform's first. */
    struct ds_collateral *c = helper_verify_coll_dup(s->c);
    struct ds_collateral *orig = s->c;
    helper_verify_edit_qe_identity(s->p, c, "{\"isvsvn\":4}", "{\"isvsvn\":5}");
    helper_verify_edit_qe_identity(s->p, c, "\"INTEL-SA-00837\"",
                                   "\"INTEL-SA-00001\",\"INTEL-SA-00837\"");
    s->c = c;
    assert_int_equal(verify_td(s, &td, 4, &r), 0);
    assert_int_equal(r.status, DS_TCB_OUT_OF_DATE);
    assert_int_equal(r.qe_status, DS_TCB_OUT_OF_DATE);
    assert_int_equal(r.advisory_count, 2);
    assert_string_equal(r.advisory_ids[0], "INTEL-SA-00837");
    assert_string_equal(r.advisory_ids[1], "INTEL-SA-00001");
    ds_verify_result_done(&r);
    s->c = orig;
    ds_collateral_free(c);
}

static void test_sim_debug_policy(void **state)
{
    struct sim_ctx *s = *state;
    struct ds_sim_td td;
    struct ds_verify_result r;
    ds_sim_td_defaults(&td);
    td.td_attributes[0] |= 0x01;
    assert_int_equal(verify_td(s, &td, 4, &r), -DS_E_POLICY);
    assert_int_equal(r.failed_step, DS_STEP_ATTRIBUTES);
    assert_string_equal(r.message, "Debug mode is enabled");
    ds_verify_result_done(&r);
    ds_verifier_allow_debug(s->v, true);
    assert_int_equal(verify_td(s, &td, 4, &r), 0);
    ds_verify_result_done(&r);
    ds_verifier_allow_debug(s->v, false);
    ds_verifier_allow_debug(NULL, true);
}

/* TD report 1.5 in a v5 quote verifies; its service TD must be zero. */
static void test_sim_td15(void **state)
{
    struct sim_ctx *s = *state;
    struct ds_sim_td td;
    struct ds_verify_result r;
    uint8_t body[DS_TD15_REPORT_SIZE], *raw;
    size_t len;
    ds_sim_td_defaults(&td);
    helper_verify_sim_td_body(s->p, &td, body);
    memset(body + DS_TD10_REPORT_SIZE, 0, 16); /* tee_tcb_svn2 (below every level) is not matched */
    memset(body + DS_TD10_REPORT_SIZE + 16, 0, 48);
    struct helper_verify_qb qb = {.version = 5, .body = body, .body_len = sizeof(body)};
    helper_verify_build_quote(s->p, &qb, &raw, &len);
    assert_int_equal(ds_verify_quote(s->v, raw, len, s->c, SIM_NOW, &r), 0);
    assert_int_equal(r.quote.kind, DS_REPORT_TD15);
    assert_int_equal(r.status, DS_TCB_UP_TO_DATE);
    ds_verify_result_done(&r);
    free(raw);
}

/* A cache hit re-checks time: a verdict never outlives the collateral it came from. */
static void test_cache_time(void **state)
{
    struct sim_ctx *s = *state;
    struct ds_sim_td td;
    struct ds_verify_result r;
    uint8_t *raw;
    size_t len;
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(s->p, &td, (uint8_t[64]){0}, NULL, &raw, &len), 0);
    ds_verifier_clear_cache(s->v);
    assert_int_equal(ds_verify_quote(s->v, raw, len, s->c, SIM_NOW, &r), 0);
    ds_verify_result_done(&r);
    /* Sim TCB info: issueDate now-1d, nextUpdate now+30d (inclusive). */
    assert_int_equal(ds_verify_quote(s->v, raw, len, s->c, SIM_NOW + 30 * DAY, &r), 0);
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(s->v, raw, len, s->c, SIM_NOW + 30 * DAY + 1, &r),
                     -DS_E_EXPIRED);
    assert_int_equal(r.failed_step, DS_STEP_TCB_INFO);
    assert_string_equal(r.message, "TCBInfo expired");
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(s->v, raw, len, s->c, SIM_NOW - DAY - 1, &r), -DS_E_EXPIRED);
    assert_int_equal(r.failed_step, DS_STEP_TCB_INFO);
    assert_string_equal(r.message, "TCBInfo issue date is in the future");
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(s->v, raw, len, s->c, SIM_NOW - DAY, &r), 0);
    ds_verify_result_done(&r);
    free(raw);
}

/* More distinct collaterals than cache slots: eviction frees entries (ASan) and verdicts
 * stay right for evicted and resident entries alike. */
static void test_cache_bounded(void **state)
{
    struct sim_ctx *s = *state;
    struct ds_sim_td td;
    struct ds_verify_result r;
    uint8_t *raw;
    size_t len;
    struct ds_collateral *cs[DS_ATTEST_CACHE_ENTRIES + 8];
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(s->p, &td, (uint8_t[64]){0}, NULL, &raw, &len), 0);
    for (size_t i = 0; i < DS_ARRAY_SIZE(cs); i++) {
        assert_int_equal(ds_sim_collateral(s->p, SIM_NOW - (int64_t)i * 60, &cs[i]), 0);
    }
    for (int round = 0; round < 2; round++) {
        for (size_t i = 0; i < DS_ARRAY_SIZE(cs); i++) {
            assert_int_equal(ds_verify_quote(s->v, raw, len, cs[i], SIM_NOW, &r), 0);
            ds_verify_result_done(&r);
        }
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(cs); i++) {
        ds_collateral_free(cs[i]);
    }
    free(raw);
}

static void test_names(void **state)
{
    const char *steps[] = {"none",
                           "collateral",
                           "root_ca",
                           "quote_format",
                           "tcb_info",
                           "qe_identity",
                           "pck_chain",
                           "qe_report_signature",
                           "qe_report_binding",
                           "qe_identity_policy",
                           "quote_signature",
                           "platform_tcb",
                           "tcb_status",
                           "attributes"};
    assert_int_equal(DS_ARRAY_SIZE(steps), DS_STEP_MAX);
    for (int i = 0; i < DS_STEP_MAX; i++) {
        assert_string_equal(ds_verify_step_name((enum ds_verify_step)i), steps[i]);
    }
    assert_string_equal(ds_verify_step_name(DS_STEP_MAX), "unknown");
    const char *st[] = {"UpToDate",
                        "SWHardeningNeeded",
                        "ConfigurationNeeded",
                        "ConfigurationAndSWHardeningNeeded",
                        "OutOfDate",
                        "OutOfDateConfigurationNeeded",
                        "Revoked"};
    assert_int_equal(DS_ARRAY_SIZE(st), DS_TCB_STATUS_MAX);
    for (int i = 0; i < DS_TCB_STATUS_MAX; i++) {
        enum ds_tcb_status out = DS_TCB_STATUS_MAX;
        assert_string_equal(ds_tcb_status_name((enum ds_tcb_status)i), st[i]);
        assert_int_equal(ds_tcb_status_parse(st[i], &out), 0);
        assert_int_equal(out, i);
    }
    enum ds_tcb_status out = DS_TCB_REVOKED;
    assert_int_equal(ds_tcb_status_parse("uptodate", &out), -DS_E_FORMAT);
    assert_int_equal(ds_tcb_status_parse("", &out), -DS_E_FORMAT);
    assert_int_equal(ds_tcb_status_parse(NULL, &out), -DS_E_FORMAT);
    assert_int_equal(out, DS_TCB_REVOKED);
    assert_string_equal(ds_tcb_status_name(DS_TCB_STATUS_MAX), "Unknown");
}

static void test_bad_arguments(void **state)
{
    struct ds_verifier *v;
    struct ds_verify_result r;
    struct ds_collateral c;
    memset(&c, 0, sizeof(c));
    assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
    assert_int_equal(ds_verify_quote(v, (const uint8_t *)"x", 1, NULL, 0, &r), -DS_E_NOT_FOUND);
    assert_int_equal(r.failed_step, DS_STEP_COLLATERAL);
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(v, NULL, 0, &c, 0, &r), -DS_E_FORMAT);
    assert_int_equal(r.failed_step, DS_STEP_QUOTE_FORMAT);
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(NULL, (const uint8_t *)"x", 1, &c, 0, &r), -EINVAL);
    ds_verify_result_done(&r);
    assert_int_equal(ds_verify_quote(v, (const uint8_t *)"x", 1, &c, 0, NULL), -EINVAL);
    /* Empty collateral fails at its first use. */
    assert_int_equal(ds_verify_quote(v, (const uint8_t *)"x", 1, &c, 0, &r), -DS_E_NOT_FOUND);
    assert_int_equal(r.failed_step, DS_STEP_COLLATERAL);
    ds_verify_result_done(&r);
    ds_verify_result_done(NULL);
    ds_verifier_free(v);
}

static void test_rfc3339(void **state)
{
    int64_t t = 0;
    assert_int_equal(ds_attest_parse_rfc3339("2025-06-19T10:16:03Z", &t), 0);
    assert_int_equal(t, 1750328163);
    assert_int_equal(ds_attest_parse_rfc3339("1970-01-01T00:00:00Z", &t), 0);
    assert_int_equal(t, 0);
    assert_int_equal(ds_attest_parse_rfc3339("2024-02-29T23:59:59.999Z", &t), 0);
    assert_int_equal(t, 1709251199);
    assert_int_equal(ds_attest_parse_rfc3339("2025-06-19T12:16:03+02:00", &t), 0);
    assert_int_equal(t, 1750328163);
    assert_int_equal(ds_attest_parse_rfc3339("2025-06-19T08:16:03-02:00", &t), 0);
    assert_int_equal(t, 1750328163);
    const char *bad[] = {"",
                         "2025-06-19",
                         "2025-06-19T10:16:03",
                         "2025-06-19 10:16:03Z",
                         "2025-13-19T10:16:03Z",
                         "2023-02-29T10:16:03Z",
                         "2025-06-19T24:00:00Z",
                         "2025-06-19T10:16:03ZZ",
                         "2025-06-19T10:16:03.Z",
                         "+2025-06-19T10:16:03Z",
                         "2025-06-00T10:16:03Z"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        assert_int_equal(ds_attest_parse_rfc3339(bad[i], &t), -DS_E_FORMAT);
    }
}

static void test_merge(void **state)
{
    struct ds_attest_status a;
    const char *x[] = {"A", "B"}, *y[] = {"B", "C", "A", "D"};
    ds_attest_status_init(&a, DS_TCB_SW_HARDENING_NEEDED);
    assert_int_equal(ds_attest_status_merge(&a, DS_TCB_SW_HARDENING_NEEDED, x, 2), 0);
    assert_int_equal(ds_attest_status_merge(&a, DS_TCB_UP_TO_DATE, y, 4), 0);
    assert_int_equal(a.status, DS_TCB_SW_HARDENING_NEEDED);
    assert_int_equal(a.count, 4);
    assert_string_equal(a.ids[0], "A");
    assert_string_equal(a.ids[1], "B");
    assert_string_equal(a.ids[2], "C");
    assert_string_equal(a.ids[3], "D");
    assert_int_equal(ds_attest_status_merge(&a, DS_TCB_OUT_OF_DATE, NULL, 0), 0);
    assert_int_equal(a.status, DS_TCB_OUT_OF_DATE);
    /* The list is bounded by DS_ADVISORY_MAX. */
    char names[DS_ADVISORY_MAX + 1][8];
    const char *many[DS_ADVISORY_MAX + 1];
    for (int i = 0; i <= DS_ADVISORY_MAX; i++) {
        snprintf(names[i], sizeof(names[i]), "N%d", i);
        many[i] = names[i];
    }
    ds_attest_status_init(&a, DS_TCB_UP_TO_DATE);
    assert_int_equal(ds_attest_status_merge(&a, DS_TCB_UP_TO_DATE, many, DS_ADVISORY_MAX), 0);
    assert_int_equal(ds_attest_status_merge(&a, DS_TCB_UP_TO_DATE, many, DS_ADVISORY_MAX + 1),
                     -DS_E_LIMIT);
}

/* Levels are matched in canonical order (highest SVNs first) whatever the JSON order. */
static void test_canonical_sort(void **state)
{
    const char *json =
        "{\"id\":\"SGX\",\"version\":3,\"issueDate\":\"2025-01-01T00:00:00Z\","
        "\"nextUpdate\":\"2025-02-01T00:00:00Z\",\"fmspc\":\"00A067110000\",\"pceId\":\"0000\","
        "\"tcbType\":0,\"tcbEvaluationDataNumber\":17,\"tcbLevels\":["
        "{\"tcb\":{\"sgxtcbcomponents\":[{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},"
        "{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},"
        "{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1}],\"pcesvn\":5},"
        "\"tcbDate\":\"x\",\"tcbStatus\":\"OutOfDate\",\"advisoryIDs\":[\"SA-1\"]},"
        "{\"tcb\":{\"sgxtcbcomponents\":[{\"svn\":2},{\"svn\":1},{\"svn\":1},{\"svn\":1},"
        "{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},"
        "{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1}],\"pcesvn\":5},"
        "\"tcbDate\":\"x\",\"tcbStatus\":\"UpToDate\"},"
        "{\"tcb\":{\"sgxtcbcomponents\":[{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},"
        "{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},"
        "{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1},{\"svn\":1}],\"pcesvn\":7},"
        "\"tcbDate\":\"x\",\"tcbStatus\":\"SWHardeningNeeded\"}]}";
    struct ds_attest_tcb_info *t = NULL;
    char msg[256];
    assert_int_equal(ds_attest_tcb_info_parse(json, strlen(json), &t, msg, sizeof(msg)), 0);
    assert_int_equal(t->level_count, 3);
    assert_int_equal(t->levels[0].status, DS_TCB_UP_TO_DATE);
    assert_int_equal(t->levels[1].status, DS_TCB_SW_HARDENING_NEEDED);
    assert_int_equal(t->levels[2].status, DS_TCB_OUT_OF_DATE);
    assert_string_equal(t->levels[2].adv.ids[0], "SA-1");

    struct ds_attest_pck_info pck;
    struct ds_quote q;
    struct ds_attest_status st;
    memset(&pck, 0, sizeof(pck));
    memset(&q, 0, sizeof(q));
    q.tee_type = DS_TEE_TYPE_SGX;
    memcpy(pck.fmspc, "\x00\xa0\x67\x11\x00\x00", 6);
    memset(pck.cpusvn, 1, 16);
    pck.pcesvn = 7;
    assert_int_equal(ds_attest_match_platform(t, &pck, &q, &st, msg, sizeof(msg)), 0);
    assert_int_equal(st.status, DS_TCB_SW_HARDENING_NEEDED);
    pck.pcesvn = 6;
    assert_int_equal(ds_attest_match_platform(t, &pck, &q, &st, msg, sizeof(msg)), 0);
    assert_int_equal(st.status, DS_TCB_OUT_OF_DATE);
    assert_int_equal(st.count, 1);
    pck.cpusvn[0] = 2;
    assert_int_equal(ds_attest_match_platform(t, &pck, &q, &st, msg, sizeof(msg)), 0);
    assert_int_equal(st.status, DS_TCB_UP_TO_DATE);
    pck.pcesvn = 4;
    assert_int_equal(ds_attest_match_platform(t, &pck, &q, &st, msg, sizeof(msg)), -DS_E_POLICY);
    assert_string_equal(msg, "No matching TCB level found");
    ds_attest_tcb_info_free(t);

    /* Malformed documents name the field. */
    char *bad = helper_verify_replace(json, "\"pcesvn\":7", "\"pcesvn\":\"7\"");
    assert_int_equal(ds_attest_tcb_info_parse(bad, strlen(bad), &t, msg, sizeof(msg)),
                     -DS_E_FORMAT);
    assert_non_null(strstr(msg, "pcesvn"));
    free(bad);
    bad = helper_verify_replace(json, "UpToDate", "Fine");
    assert_int_equal(ds_attest_tcb_info_parse(bad, strlen(bad), &t, msg, sizeof(msg)),
                     -DS_E_FORMAT);
    assert_non_null(strstr(msg, "tcbStatus"));
    free(bad);
    bad = helper_verify_replace(json, "{\"svn\":2}", "{\"svn\":256}");
    assert_int_equal(ds_attest_tcb_info_parse(bad, strlen(bad), &t, msg, sizeof(msg)),
                     -DS_E_FORMAT);
    free(bad);
    assert_int_equal(ds_attest_tcb_info_parse(json, strlen(json) - 1, &t, msg, sizeof(msg)),
                     -DS_E_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_intel_root),
        cmocka_unit_test(test_tdx_sample),
        cmocka_unit_test(test_sgx_sample),
        cmocka_unit_test(test_expiry_messages),
        cmocka_unit_test(test_pck_chain_from_collateral),
        cmocka_unit_test_setup_teardown(test_sim_quotes, sim_setup, sim_teardown),
        cmocka_unit_test_setup_teardown(test_sim_out_of_date, sim_setup, sim_teardown),
        cmocka_unit_test_setup_teardown(test_sim_debug_policy, sim_setup, sim_teardown),
        cmocka_unit_test_setup_teardown(test_sim_td15, sim_setup, sim_teardown),
        cmocka_unit_test_setup_teardown(test_cache_time, sim_setup, sim_teardown),
        cmocka_unit_test_setup_teardown(test_cache_bounded, sim_setup, sim_teardown),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_rfc3339),
        cmocka_unit_test(test_merge),
        cmocka_unit_test(test_canonical_sort),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
