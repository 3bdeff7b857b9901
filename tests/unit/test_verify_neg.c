/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Negative tests for DCAP verification (lib/attest/verify.c, spec §2.2): every alteration of
 * a quote, a signature, a certificate, a CRL or the signed collateral is rejected at the step
 * that owns the check, with the specific error. Real Intel samples cover signatures, chains,
 * CRLs and quote format; the simulator's mock PKI (include/dstack/sim.h) re-signs altered
 * collateral and QE reports for the policy checks a real sample cannot reach.
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

#include "dstack/attest.h"
#include "dstack/crypto.h"
#include "dstack/sim.h"
#include "helper_verify_util.h"

#define SIM_NOW 1780000000LL
#define DAY     86400LL
#define TDX_NOW (HELPER_VERIFY_TDX_END - 1)
#define SGX_NOW (HELPER_VERIFY_SGX_END - 1)
#define ZERO96                                                                                     \
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000" \
    "0000"
#define ONE96                                                                                      \
    "01010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101" \
    "0101"

static const uint8_t seed[DS_SIM_SEED_LEN] = {0x6e, 0x65, 0x67};

struct fx {
    /* Intel samples */
    struct ds_verifier *intel;
    uint8_t *tdx;
    size_t tdx_len;
    struct ds_collateral *tdx_coll;
    struct ds_quote tdx_q;
    uint8_t *sgx;
    size_t sgx_len;
    struct ds_collateral *sgx_coll;
    /* mock PKI */
    struct ds_sim_pki *p;
    struct ds_verifier *mock;
    struct ds_collateral *sim_coll;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const uint8_t *der;
    size_t der_len;
    if (!f) {
        return -1;
    }
    helper_verify_load_sample("tdx", &f->tdx, &f->tdx_len, &f->tdx_coll);
    helper_verify_load_sample("sgx", &f->sgx, &f->sgx_len, &f->sgx_coll);
    if (ds_quote_parse(f->tdx, f->tdx_len, &f->tdx_q) < 0 || ds_verifier_new(NULL, 0, &f->intel) ||
        ds_sim_pki_new(seed, &f->p) < 0) {
        return -1;
    }
    ds_sim_pki_root_der(f->p, &der, &der_len);
    if (ds_verifier_new(der, der_len, &f->mock) < 0 ||
        ds_sim_collateral(f->p, SIM_NOW, &f->sim_coll) < 0) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    ds_verifier_free(f->intel);
    ds_verifier_free(f->mock);
    ds_collateral_free(f->tdx_coll);
    ds_collateral_free(f->sgx_coll);
    ds_collateral_free(f->sim_coll);
    ds_sim_pki_free(f->p);
    free(f->tdx);
    free(f->sgx);
    free(f);
    return 0;
}

/* Verify and require failure at step with err; msg (if any) must occur in the message. */
static void expect_fail(struct ds_verifier *v, const uint8_t *raw, size_t len,
                        const struct ds_collateral *c, int64_t now, enum ds_verify_step step,
                        int err, const char *msg)
{
    struct ds_verify_result r;
    int ret = ds_verify_quote(v, raw, len, c, now, &r);
    if (ret != err || r.failed_step != step || (msg && !strstr(r.message, msg))) {
        fail_msg("want %s/%d \"%s\", got %s/%d \"%s\"", ds_verify_step_name(step), err,
                 msg ? msg : "", ds_verify_step_name(r.failed_step), ret, r.message);
    }
    assert_false(r.ok);
    assert_int_equal(r.err, err);
    assert_int_equal(r.advisory_count, 0);
    ds_verify_result_done(&r);
}

static void expect_ok(struct ds_verifier *v, const uint8_t *raw, size_t len,
                      const struct ds_collateral *c, int64_t now)
{
    struct ds_verify_result r;
    int ret = ds_verify_quote(v, raw, len, c, now, &r);
    if (ret != 0) {
        fail_msg("want ok, got %s/%d \"%s\"", ds_verify_step_name(r.failed_step), ret, r.message);
    }
    ds_verify_result_done(&r);
}

static uint8_t *dup_bytes(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n);
    assert_non_null(d);
    memcpy(d, p, n);
    return d;
}

/* The real TDX quote with one bit flipped at off. */
static void tdx_flip(struct fx *f, size_t off, uint8_t mask, enum ds_verify_step step, int err,
                     const char *msg)
{
    uint8_t *q = dup_bytes(f->tdx, f->tdx_len);
    q[off] ^= mask;
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, step, err, msg);
    free(q);
}

static size_t tdx_off(struct fx *f, const uint8_t *p)
{
    return (size_t)(p - f->tdx);
}

/* ---- quote signatures and binding (real sample) ------------------------------------------ */

static void test_quote_signature_bit(void **state)
{
    struct fx *f = *state;
    tdx_flip(f, 636, 0x01, DS_STEP_QUOTE_SIGNATURE, -DS_E_SIGNATURE,
             "ISV enclave report signature is invalid");
    tdx_flip(f, 636 + 63, 0x80, DS_STEP_QUOTE_SIGNATURE, -DS_E_SIGNATURE, NULL);
}

static void test_quote_body_bit(void **state)
{
    struct fx *f = *state;
    tdx_flip(f, 568, 0x01, DS_STEP_QUOTE_SIGNATURE, -DS_E_SIGNATURE, NULL); /* report_data */
    tdx_flip(f, 184, 0x10, DS_STEP_QUOTE_SIGNATURE, -DS_E_SIGNATURE, NULL); /* mr_td */
    tdx_flip(f, 8, 0x01, DS_STEP_QUOTE_SIGNATURE, -DS_E_SIGNATURE, NULL);   /* qe_svn */
}

static void test_qe_report_signature_bit(void **state)
{
    struct fx *f = *state;
    size_t sig = tdx_off(f, f->tdx_q.qe_report_raw) + DS_SGX_REPORT_SIZE;
    /* Warm the verifier first: the PCK cache entry then remembers the genuine QE report as
     * verified, and an altered report or signature must still be checked and rejected. */
    expect_ok(f->intel, f->tdx, f->tdx_len, f->tdx_coll, TDX_NOW);
    tdx_flip(f, sig + 5, 0x04, DS_STEP_QE_REPORT_SIGNATURE, -DS_E_SIGNATURE,
             "Signature is invalid for qe_report in quote");
    /* The QE report itself is covered by that signature. */
    tdx_flip(f, tdx_off(f, f->tdx_q.qe_report_raw) + 130, 0x01, DS_STEP_QE_REPORT_SIGNATURE,
             -DS_E_SIGNATURE, NULL);
}

static void test_qe_binding_real(void **state)
{
    struct fx *f = *state;
    /* The attestation key and the QE auth data are bound by the QE report data. */
    tdx_flip(f, 700 + 10, 0x01, DS_STEP_QE_REPORT_BINDING, -DS_E_MISMATCH,
             "QE report hash mismatch");
    tdx_flip(f, tdx_off(f, f->tdx_q.qe_auth_data), 0x01, DS_STEP_QE_REPORT_BINDING, -DS_E_MISMATCH,
             "QE report hash mismatch");
}

/* ---- collateral signatures (real sample) --------------------------------------------------- */

static void test_tcb_info_signature_bit(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    c->tcb_info_signature[10] ^= 0x01;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_SIGNATURE,
                "Signature is invalid for tcb_info");
    c->tcb_info_signature[10] ^= 0x01;
    /* One changed byte of the signed JSON. */
    char *pos = strstr(c->tcb_info, "UpToDate");
    assert_non_null(pos);
    pos[0] = 'u';
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_SIGNATURE,
                "Signature is invalid for tcb_info");
    pos[0] = 'U';
    /* A signature of the wrong size. */
    c->tcb_info_signature_len = 63;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_FORMAT,
                "tcb_info_signature must be 64 bytes");
    c->tcb_info_signature_len = 64;
    expect_ok(f->intel, f->tdx, f->tdx_len, c, TDX_NOW);
    ds_collateral_free(c);
}

static void test_qe_identity_signature_bit(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    c->qe_identity_signature[40] ^= 0x20;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_QE_IDENTITY, -DS_E_SIGNATURE,
                "Signature is invalid for qe_identity");
    ds_collateral_free(c);
}

/* ---- certificates and CRLs (real sample) ------------------------------------------------ */

static void test_pck_leaf_signature(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    char *pem = strndup((const char *)f->tdx_q.cert_data, f->tdx_q.cert_data_len);
    c->pck_certificate_chain = helper_verify_flip_cert_sig(pem, 0);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_PCK_CHAIN, -DS_E_SIGNATURE,
                "certificate signature failure");
    free(c->pck_certificate_chain);
    /* The intermediate (PCK Platform CA) signature. */
    c->pck_certificate_chain = helper_verify_flip_cert_sig(pem, 1);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_PCK_CHAIN, -DS_E_SIGNATURE, NULL);
    free(c->pck_certificate_chain);
    /* Unmodified re-encoding verifies (the flip, not the re-encoding, is what fails). */
    c->pck_certificate_chain = helper_verify_pem_slice(pem, 0, -1);
    expect_ok(f->intel, f->tdx, f->tdx_len, c, TDX_NOW);
    free(pem);
    ds_collateral_free(c);
}

/* The same flip inside the quote's own type-5 PEM (same length, re-encoded in place). */
static void test_pck_leaf_signature_in_quote(void **state)
{
    struct fx *f = *state;
    char *pem = strndup((const char *)f->tdx_q.cert_data, f->tdx_q.cert_data_len);
    char *bad = helper_verify_flip_cert_sig(pem, 0);
    assert_int_equal(strlen(bad), strlen(pem)); /* OpenSSL writes the same 64-column PEM */
    uint8_t *q = dup_bytes(f->tdx, f->tdx_len);
    memcpy(q + tdx_off(f, f->tdx_q.cert_data), bad, strlen(bad));
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_PCK_CHAIN, -DS_E_SIGNATURE,
                "pck_chain: certificate signature failure (depth 0)");
    /* A corrupted base64 character: the chain no longer decodes. */
    memcpy(q + tdx_off(f, f->tdx_q.cert_data), pem, strlen(pem));
    q[tdx_off(f, f->tdx_q.cert_data) + 100] = '*';
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_PCK_CHAIN, -DS_E_FORMAT,
                "not a PEM certificate chain");
    free(q);
    free(bad);
    free(pem);
}

static void test_tcb_signing_cert_signature(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    char *bad = helper_verify_flip_cert_sig(c->tcb_info_issuer_chain, 0);
    free(c->tcb_info_issuer_chain);
    c->tcb_info_issuer_chain = bad;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_SIGNATURE,
                "tcb_info_issuer_chain: certificate signature failure");
    ds_collateral_free(c);
}

static void test_root_crl_signature(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    helper_verify_flip_last(c->root_ca_crl, c->root_ca_crl_len);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_ROOT_CA, -DS_E_SIGNATURE,
                "root_ca_crl signature is invalid");
    ds_collateral_free(c);
}

static void test_pck_crl_signature(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    helper_verify_flip_last(c->pck_crl, c->pck_crl_len);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_PCK_CHAIN, -DS_E_SIGNATURE,
                "CRL signature failure");
    ds_collateral_free(c);
}

static void test_crl_encoding(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    c->root_ca_crl[0] = 0x31; /* SET instead of SEQUENCE */
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_COLLATERAL, -DS_E_FORMAT,
                "root_ca_crl is not a DER CRL");
    c->root_ca_crl[0] = 0x30;
    c->pck_crl_len -= 1;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_COLLATERAL, -DS_E_FORMAT,
                "pck_crl is not a DER CRL");
    c->pck_crl_len += 1;
    /* A valid CRL by the wrong issuer in the root CRL's place. */
    free(c->root_ca_crl);
    c->root_ca_crl = dup_bytes(c->pck_crl, c->pck_crl_len);
    c->root_ca_crl_len = c->pck_crl_len;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_ROOT_CA, -DS_E_CERT,
                "root_ca_crl is not issued by the trusted root CA");
    ds_collateral_free(c);
}

static void test_wrong_root(void **state)
{
    struct fx *f = *state;
    /* Intel-signed quote and collateral with the mock root as anchor. */
    expect_fail(f->mock, f->tdx, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_ROOT_CA, -DS_E_CERT,
                "root_ca_crl is not issued by the trusted root CA");
    /* Mock quote and collateral with Intel's root. */
    struct ds_sim_td td;
    uint8_t *q;
    size_t len;
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(f->p, &td, (uint8_t[64]){0}, NULL, &q, &len), 0);
    expect_fail(f->intel, q, len, f->sim_coll, SIM_NOW, DS_STEP_ROOT_CA, -DS_E_CERT, NULL);
    /* Mock root with the Intel root CRL swapped in: not issued by the anchor. */
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    free(c->root_ca_crl);
    c->root_ca_crl = dup_bytes(f->tdx_coll->root_ca_crl, f->tdx_coll->root_ca_crl_len);
    c->root_ca_crl_len = f->tdx_coll->root_ca_crl_len;
    expect_fail(f->mock, q, len, c, SIM_NOW, DS_STEP_ROOT_CA, -DS_E_CERT, NULL);
    ds_collateral_free(c);
    /* Another seed's root: the chains do not reach the anchor. */
    struct ds_sim_pki *other;
    struct ds_verifier *ov;
    const uint8_t *der;
    size_t der_len;
    uint8_t seed2[DS_SIM_SEED_LEN] = {0x99};
    assert_int_equal(ds_sim_pki_new(seed2, &other), 0);
    ds_sim_pki_root_der(other, &der, &der_len);
    assert_int_equal(ds_verifier_new(der, der_len, &ov), 0);
    expect_fail(ov, q, len, f->sim_coll, SIM_NOW, DS_STEP_ROOT_CA, -DS_E_SIGNATURE, NULL);
    ds_verifier_free(ov);
    ds_sim_pki_free(other);
    free(q);
}

static void test_issuer_chains(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    char *orig = c->tcb_info_issuer_chain;
    /* Empty chain. */
    c->tcb_info_issuer_chain = strdup("");
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_CERT,
                "Certificate chain is too short for tcb_info");
    free(c->tcb_info_issuer_chain);
    /* Only the root CA: a CA certificate used as the signing (end-entity) certificate. */
    c->tcb_info_issuer_chain = helper_verify_pem_slice(orig, 1, 2);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_CERT,
                "CaUsedAsEndEntity");
    free(c->tcb_info_issuer_chain);
    /* A valid end-entity chain of the wrong key (the PCK chain). */
    c->tcb_info_issuer_chain = strndup((const char *)f->tdx_q.cert_data, f->tdx_q.cert_data_len);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_SIGNATURE,
                "Signature is invalid for tcb_info");
    free(c->tcb_info_issuer_chain);
    /* Not PEM at all. */
    c->tcb_info_issuer_chain =
        strdup("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_TCB_INFO, -DS_E_FORMAT, NULL);
    free(c->tcb_info_issuer_chain);
    c->tcb_info_issuer_chain = orig;
    /* The QE identity chain: CA as end entity too. */
    orig = c->qe_identity_issuer_chain;
    c->qe_identity_issuer_chain = helper_verify_pem_slice(orig, 1, 2);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_QE_IDENTITY, -DS_E_CERT,
                "CaUsedAsEndEntity");
    free(c->qe_identity_issuer_chain);
    c->qe_identity_issuer_chain = NULL;
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_QE_IDENTITY, -DS_E_CERT,
                "Certificate chain is too short for qe_identity");
    c->qe_identity_issuer_chain = orig;
    ds_collateral_free(c);
}

/* A PCK chain under a CA whose CRL is not in the collateral: revocation status unknown. */
static void test_pck_crl_missing(void **state)
{
    struct fx *f = *state;
    struct ds_collateral *c = helper_verify_coll_dup(f->tdx_coll);
    struct ds_quote sq;
    assert_int_equal(ds_quote_parse(f->sgx, f->sgx_len, &sq), 0);
    c->pck_certificate_chain = strndup((const char *)sq.cert_data, sq.cert_data_len);
    expect_fail(f->intel, f->tdx, f->tdx_len, c, TDX_NOW, DS_STEP_PCK_CHAIN, -DS_E_CERT,
                "unable to get certificate CRL");
    ds_collateral_free(c);
}

/* Collateral of the other TEE type: the QE identity does not fit the quote. */
static void test_mixed_collateral(void **state)
{
    struct fx *f = *state;
    int64_t now = TDX_NOW < SGX_NOW ? TDX_NOW : SGX_NOW;
    expect_fail(f->intel, f->tdx, f->tdx_len, f->sgx_coll, now, DS_STEP_QE_IDENTITY, -DS_E_MISMATCH,
                "QE identity id \"QE\" version 2 does not fit a TDX quote");
    expect_fail(f->intel, f->sgx, f->sgx_len, f->tdx_coll, now, DS_STEP_QE_IDENTITY, -DS_E_MISMATCH,
                "does not fit a SGX quote");
}

/* ---- quote format ------------------------------------------------------------------------ */

static void test_unsupported_header(void **state)
{
    struct fx *f = *state;
    uint8_t *q = dup_bytes(f->tdx, f->tdx_len);
    q[0] = 6;
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_QUOTE_FORMAT,
                -DS_E_UNSUPPORTED, "Unsupported DCAP quote version 6");
    q[0] = 4;
    q[2] = 3; /* ECDSA P-384 */
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_QUOTE_FORMAT,
                -DS_E_UNSUPPORTED, "Unsupported DCAP attestation key type 3");
    q[2] = 2;
    q[4] = 0x42; /* TEE type */
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_QUOTE_FORMAT,
                -DS_E_UNSUPPORTED, NULL);
    q[4] = 0x81;
    q[12 + 15] ^= 0x01; /* QE vendor ID */
    expect_fail(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, DS_STEP_QUOTE_FORMAT,
                -DS_E_UNSUPPORTED, "Unsupported QE vendor ID");
    free(q);
}

static void test_unsupported_cert_type(void **state)
{
    struct fx *f = *state;
    size_t inner = f->tdx_q.signed_len + 4 + 128 + 6 + 384 + 64 + 2 + 32;
    tdx_flip(f, inner, 0x05 ^ 0x03, DS_STEP_PCK_CHAIN, -DS_E_UNSUPPORTED,
             "Unsupported DCAP PCK cert format");
    tdx_flip(f, f->tdx_q.signed_len + 4 + 128, 0x06 ^ 0x05, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED,
             NULL);
}

/* Every truncation of both samples fails at quote_format, without crashing. */
static void test_truncation_sweep(void **state)
{
    struct fx *f = *state;
    const struct {
        const uint8_t *raw;
        size_t len;
        const struct ds_collateral *c;
        int64_t now;
    } s[] = {{f->tdx, f->tdx_len, f->tdx_coll, TDX_NOW},
             {f->sgx, f->sgx_len, f->sgx_coll, SGX_NOW}};
    for (size_t k = 0; k < DS_ARRAY_SIZE(s); k++) {
        struct ds_quote q;
        assert_int_equal(ds_quote_parse(s[k].raw, s[k].len, &q), 0);
        size_t need = s[k].len - q.trailing_len;
        uint8_t *buf = malloc(s[k].len);
        assert_non_null(buf);
        for (size_t n = 0; n < need; n++) {
            /* A fresh heap copy of exactly n bytes lets ASan catch any over-read. */
            uint8_t *t = dup_bytes(s[k].raw, n ? n : 1);
            struct ds_verify_result r;
            int ret = ds_verify_quote(f->intel, t, n, s[k].c, s[k].now, &r);
            if (ret != -DS_E_TRUNCATED || r.failed_step != DS_STEP_QUOTE_FORMAT) {
                fail_msg("truncated to %zu: %s/%d %s", n, ds_verify_step_name(r.failed_step), ret,
                         r.message);
            }
            ds_verify_result_done(&r);
            free(t);
        }
        /* The trailing bytes are not needed. */
        expect_ok(f->intel, s[k].raw, need, s[k].c, s[k].now);
        free(buf);
    }
}

/* Any bit flipped in the signed region, the signatures, the key or the QE report fails. */
static void test_bit_flip_sweep(void **state)
{
    struct fx *f = *state;
    size_t end = tdx_off(f, f->tdx_q.qe_report_raw) + DS_SGX_REPORT_SIZE + 64 + 2 + 32;
    uint8_t *q = dup_bytes(f->tdx, f->tdx_len);
    for (size_t off = 0; off < end; off++) {
        struct ds_verify_result r;
        uint8_t mask = (uint8_t)(1u << (off % 8));
        q[off] ^= mask;
        int ret = ds_verify_quote(f->intel, q, f->tdx_len, f->tdx_coll, TDX_NOW, &r);
        if (ret == 0 || r.ok || r.failed_step < DS_STEP_QUOTE_FORMAT) {
            fail_msg("flip at %zu accepted or misattributed (%s)", off,
                     ds_verify_step_name(r.failed_step));
        }
        ds_verify_result_done(&r);
        q[off] ^= mask;
    }
    free(q);
}

/* ---- mock PKI: quotes with chosen TD fields ------------------------------------------- */

static void sim_expect(struct fx *f, const struct ds_sim_td *td, const struct ds_collateral *c,
                       int64_t now, enum ds_verify_step step, int err, const char *msg)
{
    uint8_t *q;
    size_t len;
    assert_int_equal(ds_sim_quote(f->p, td, (uint8_t[64]){7}, NULL, &q, &len), 0);
    if (step == DS_STEP_NONE) {
        expect_ok(f->mock, q, len, c, now);
    } else {
        expect_fail(f->mock, q, len, c, now, step, err, msg);
    }
    free(q);
}

static void test_debug_td(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_NONE, 0, NULL);
    td.td_attributes[0] = 0x01;
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_ATTRIBUTES, -DS_E_POLICY,
               "Debug mode is enabled");
}

static void test_sept_ve_disable_clear(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    assert_int_equal(td.td_attributes[3] & 0x10, 0x10);
    td.td_attributes[3] &= (uint8_t)~0x10;
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_ATTRIBUTES, -DS_E_POLICY,
               "SEPT_VE_DISABLE is not enabled");
}

static void test_reserved_attribute_bits(void **state)
{
    struct fx *f = *state;
    const struct {
        size_t byte;
        uint8_t bit;
    } bits[] = {{0, 0x02}, {0, 0x80}, {1, 0x01}, {2, 0x80}, {3, 0x01},
                {3, 0x08}, {3, 0x20}, {4, 0x01}, {6, 0x10}, {7, 0x40}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bits); i++) {
        struct ds_sim_td td;
        ds_sim_td_defaults(&td);
        td.td_attributes[bits[i].byte] |= bits[i].bit;
        sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_ATTRIBUTES, -DS_E_POLICY,
                   "Reserved bits in TD attributes are set");
    }
}

static void test_service_td(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    uint8_t body[DS_TD15_REPORT_SIZE], *q;
    size_t len;
    ds_sim_td_defaults(&td);
    helper_verify_sim_td_body(f->p, &td, body);
    memset(body + DS_TD10_REPORT_SIZE, 0, 64);
    body[DS_TD15_REPORT_SIZE - 1] = 0x01; /* mr_service_td */
    struct helper_verify_qb qb = {.version = 5, .body = body, .body_len = sizeof(body)};
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_ATTRIBUTES, -DS_E_POLICY,
                "Invalid MR service TD");
    free(q);
}

static void test_mr_signer_seam(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    memset(td.mr_signer_seam, 0x01, 48);
    /* Against Intel-shaped collateral (module mrsigner zero) the module identity fails... */
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_MISMATCH,
               "TDX module mrsigner");
    /* ...and with collateral that expects that signer, dstack's own check still refuses. */
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, ZERO96, ONE96);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_ATTRIBUTES, -DS_E_POLICY, "mr_signer_seam is not zero");
    ds_collateral_free(c);
}

static void test_seam_attributes(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    td.seam_attributes[2] = 0x04;
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_MISMATCH,
               "TDX module attributes");
}

static void test_module_identity(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    td.tee_tcb_svn[1] = 2; /* module major version 2: no TDX_02 identity */
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_NOT_FOUND,
               "TDX module identity TDX_02 not found");
    /* Module levels demanding a higher ISVSVN (re-signed). */
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "{\"isvsvn\":4}", "{\"isvsvn\":9}");
    helper_verify_edit_tcb_info(f->p, c, "{\"isvsvn\":2}", "{\"isvsvn\":8}");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
               "TDX module ISVSVN 6 is below the minimum of TDX_01");
    ds_collateral_free(c);
}

static void test_no_matching_level(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    td.tee_tcb_svn[2] = 1; /* below both levels' 2 */
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
               "No matching TCB level found");
    /* Levels requiring a higher PCESVN than the PCK certificate's 11 (re-signed). */
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"pcesvn\":11", "\"pcesvn\":12");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
               "No matching TCB level found");
    ds_collateral_free(c);
    /* Levels requiring higher SGX component SVNs. */
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"sgxtcbcomponents\":[{\"svn\":2}",
                                "\"sgxtcbcomponents\":[{\"svn\":3}");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
               "No matching TCB level found");
    ds_collateral_free(c);
    /* No levels at all. */
    c = helper_verify_coll_dup(f->sim_coll);
    char *j = strdup(c->tcb_info);
    char *lv = strstr(j, ",\"tcbLevels\":[{\"tcb\":{\"sgx");
    assert_non_null(lv);
    strcpy(lv, ",\"tcbLevels\":[]}");
    helper_verify_set_tcb_info(f->p, c, j);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
               "No matching TCB level found");
    ds_collateral_free(c);
}

static void test_component_count(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"tdxtcbcomponents\":[{\"svn\":5},{\"svn\":0},",
                                "\"tdxtcbcomponents\":[{\"svn\":5},");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_FORMAT,
               "TDX component count mismatch");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"sgxtcbcomponents\":[{\"svn\":2},",
                                "\"sgxtcbcomponents\":[");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_FORMAT,
               "SGX component count mismatch");
    ds_collateral_free(c);
}

static void test_fmspc_pceid_mismatch(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"fmspc\":\"00806F050000\"",
                                "\"fmspc\":\"00806F050001\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_MISMATCH, "Fmspc mismatch");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"pceId\":\"0000\"", "\"pceId\":\"0100\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_MISMATCH, "PCE ID mismatch");
    ds_collateral_free(c);
    /* An SGX TCB info for a TDX quote. */
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"id\":\"TDX\"", "\"id\":\"SGX\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_MISMATCH,
               "TDX quote with non-TDX TCB info");
    ds_collateral_free(c);
}

static void test_revoked_status(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"UpToDate\"", "\"Revoked\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_STATUS, -DS_E_POLICY,
               "TCB status is invalid: Revoked");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_qe_identity(f->p, c, "\"UpToDate\"", "\"Revoked\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_STATUS, -DS_E_POLICY,
               "TCB status is invalid: Revoked");
    ds_collateral_free(c);
}

/* Long advisory lists: accepted in levels that do not match, refused in a verdict. */
static void test_advisory_limit(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    char ids[100 * 20 + 8] = "";
    for (int i = 0; i < 100; i++) {
        char one[24];
        snprintf(one, sizeof(one), "%s\"SA-%03d\"", i ? "," : "", i);
        strcat(ids, one);
    }
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"INTEL-SA-00837\"", ids);
    ds_sim_td_defaults(&td);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_NONE, 0, NULL);
    td.tee_tcb_svn[0] = 3; /* the OutOfDate level */
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PLATFORM_TCB, -DS_E_LIMIT, "too many advisory IDs");
    ds_collateral_free(c);
}

static void test_qe_identity_policy(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    const struct {
        const char *from, *to, *msg;
        enum ds_verify_step step;
        int err;
    } cases[] = {
        {"\"id\":\"TD_QE\"", "\"id\":\"QE\"", "QE identity id \"QE\"", DS_STEP_QE_IDENTITY,
         -DS_E_MISMATCH},
        {"\"version\":2", "\"version\":1", "version 1 does not fit", DS_STEP_QE_IDENTITY,
         -DS_E_MISMATCH},
        {"\"mrsigner\":\"44", "\"mrsigner\":\"45", "QE MRSIGNER mismatch",
         DS_STEP_QE_IDENTITY_POLICY, -DS_E_MISMATCH},
        {"\"isvprodid\":2", "\"isvprodid\":1", "QE ISVPRODID mismatch", DS_STEP_QE_IDENTITY_POLICY,
         -DS_E_MISMATCH},
        {"\"miscselect\":\"00000000\"", "\"miscselect\":\"01000000\"", "QE MISCSELECT mismatch",
         DS_STEP_QE_IDENTITY_POLICY, -DS_E_MISMATCH},
        {"\"attributes\":\"11", "\"attributes\":\"13", "QE ATTRIBUTES mismatch",
         DS_STEP_QE_IDENTITY_POLICY, -DS_E_MISMATCH},
        {"{\"isvsvn\":2}", "{\"isvsvn\":5}", NULL, DS_STEP_NONE, 0}, /* prepares the next */
    };
    for (size_t i = 0; i + 1 < DS_ARRAY_SIZE(cases); i++) {
        struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
        helper_verify_edit_qe_identity(f->p, c, cases[i].from, cases[i].to);
        sim_expect(f, &td, c, SIM_NOW, cases[i].step, cases[i].err, cases[i].msg);
        ds_collateral_free(c);
    }
    /* The QE's ISVSVN (4) below every level. */
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_qe_identity(f->p, c, "{\"isvsvn\":4}", "{\"isvsvn\":9}");
    helper_verify_edit_qe_identity(f->p, c, "{\"isvsvn\":2}", "{\"isvsvn\":5}");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_QE_IDENTITY_POLICY, -DS_E_POLICY,
               "QE ISVSVN 4 is below the minimum");
    ds_collateral_free(c);
}

/* Patch the QE report of a sim quote and re-sign it with the mock PCK key. */
static void patch_qe_report(struct fx *f, uint8_t *q, size_t len, size_t rep_off, uint8_t mask)
{
    struct ds_quote pq;
    assert_int_equal(ds_quote_parse(q, len, &pq), 0);
    size_t off = (size_t)(pq.qe_report_raw - q);
    q[off + rep_off] ^= mask;
    assert_int_equal(ds_sim_pki_sign(f->p, DS_SIM_KEY_PCK, q + off, DS_SGX_REPORT_SIZE,
                                     q + off + DS_SGX_REPORT_SIZE),
                     0);
}

static void test_qe_report_binding(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    uint8_t *q;
    size_t len;
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(f->p, &td, (uint8_t[64]){0}, NULL, &q, &len), 0);
    patch_qe_report(f, q, len, 320 + 31, 0x01); /* report_data[31] */
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QE_REPORT_BINDING, -DS_E_MISMATCH,
                "QE report hash mismatch");
    free(q);
    /* Bytes 32..63 of the QE report data are not part of the binding (dcap-qvl). */
    assert_int_equal(ds_sim_quote(f->p, &td, (uint8_t[64]){0}, NULL, &q, &len), 0);
    patch_qe_report(f, q, len, 320 + 40, 0x01);
    expect_ok(f->mock, q, len, f->sim_coll, SIM_NOW);
    /* A debug QE is never accepted, whatever the TD policy. */
    patch_qe_report(f, q, len, 48, 0x02);
    ds_verifier_allow_debug(f->mock, true);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QE_IDENTITY_POLICY, -DS_E_POLICY,
                "QE is a debug enclave");
    ds_verifier_allow_debug(f->mock, false);
    free(q);
    /* Built quotes: a wrong binding, and QE auth data of another length than 32. */
    uint8_t body[DS_TD10_REPORT_SIZE];
    helper_verify_sim_td_body(f->p, &td, body);
    struct helper_verify_qb qb = {.body = body, .body_len = sizeof(body), .qe_bind_wrong = true};
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QE_REPORT_BINDING, -DS_E_MISMATCH,
                NULL);
    free(q);
    qb.qe_bind_wrong = false;
    qb.qe_auth_len = 16;
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QE_REPORT_BINDING, -DS_E_FORMAT,
                "QE authentication data is 16 bytes");
    free(q);
    qb.qe_auth_len = 32;
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_ok(f->mock, q, len, f->sim_coll, SIM_NOW);
    free(q);
}

static void test_built_quote_formats(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    uint8_t td_body[DS_TD10_REPORT_SIZE], sgx_body[DS_SGX_REPORT_SIZE], *q;
    size_t len;
    ds_sim_td_defaults(&td);
    helper_verify_sim_td_body(f->p, &td, td_body);
    memset(sgx_body, 0, sizeof(sgx_body));
    /* SGX bodies in v4 and v5 envelopes are validly signed but not accepted. */
    for (uint16_t v = 4; v <= 5; v++) {
        struct helper_verify_qb qb = {.version = v,
                                      .tee_type = DS_TEE_TYPE_SGX,
                                      .has_tee_type = true,
                                      .body = sgx_body,
                                      .body_len = sizeof(sgx_body)};
        helper_verify_build_quote(f->p, &qb, &q, &len);
        expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED,
                    "SGX TEE quote must have version 3");
        free(q);
    }
    /* A properly signed quote with a P-384 key type. */
    struct helper_verify_qb qb = {.ak_type = 3, .body = td_body, .body_len = sizeof(td_body)};
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED,
                "Unsupported DCAP attestation key type 3");
    free(q);
    /* A v5 quote with a TD body and an SGX TEE type. */
    struct helper_verify_qb mix = {.version = 5,
                                   .tee_type = DS_TEE_TYPE_SGX,
                                   .has_tee_type = true,
                                   .body = td_body,
                                   .body_len = sizeof(td_body)};
    helper_verify_build_quote(f->p, &mix, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_QUOTE_FORMAT, -DS_E_FORMAT, NULL);
    free(q);
    /* A PCK chain that is not PEM, and one whose leaf is the PCK CA. */
    qb = (struct helper_verify_qb){.body = td_body, .body_len = sizeof(td_body), .pem = "xyz"};
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_CERT, NULL);
    free(q);
    /* An oversized chain is refused before any work on it. */
    size_t base = strlen(ds_sim_pki_pck_chain_pem(f->p));
    char *big = malloc(base + 70000 + 1);
    assert_non_null(big);
    memcpy(big, ds_sim_pki_pck_chain_pem(f->p), base);
    memset(big + base, '\n', 70000);
    big[base + 70000] = '\0';
    qb.pem = big;
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_LIMIT, "too large");
    free(q);
    free(big);
    char *ca_chain = helper_verify_pem_slice(ds_sim_pki_pck_chain_pem(f->p), 1, -1);
    qb.pem = ca_chain;
    helper_verify_build_quote(f->p, &qb, &q, &len);
    expect_fail(f->mock, q, len, f->sim_coll, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_CERT,
                "CaUsedAsEndEntity");
    free(q);
    free(ca_chain);
}

/* ---- the Intel SGX PCK extension ---------------------------------------------------------- */

static void tlv(struct ds_buf *b, uint8_t tag, const void *v, size_t n)
{
    assert_int_equal(ds_buf_u8(b, tag), 0);
    if (n >= 256) {
        assert_int_equal(ds_buf_u8(b, 0x82), 0);
        assert_int_equal(ds_buf_u8(b, (uint8_t)(n >> 8)), 0);
    } else if (n >= 128) {
        assert_int_equal(ds_buf_u8(b, 0x81), 0);
    }
    assert_int_equal(ds_buf_u8(b, (uint8_t)n), 0);
    assert_int_equal(ds_buf_append(b, v, n), 0);
}

/* SEQUENCE { OID 1.2.840.113741.1.13.1.<arc>, <tag> value } appended to b. */
static void member(struct ds_buf *b, const char *arc, uint8_t tag, const void *v, size_t n)
{
    static const uint8_t base[] = {0x2a, 0x86, 0x48, 0x86, 0xf8, 0x4d, 0x01, 0x0d, 0x01};
    struct ds_buf m, o;
    ds_buf_init(&m, 4096);
    ds_buf_init(&o, 64);
    assert_int_equal(ds_buf_append(&o, base, sizeof(base)), 0);
    for (const char *p = arc; *p;) {
        assert_int_equal(ds_buf_u8(&o, (uint8_t)strtoul(p, (char **)&p, 10)), 0);
        if (*p == '.') {
            p++;
        }
    }
    tlv(&m, 0x06, o.data, o.len);
    tlv(&m, tag, v, n);
    tlv(b, 0x30, m.data, m.len);
    ds_buf_done(&m);
    ds_buf_done(&o);
}

enum ext_change {
    EXT_AS_IS,
    EXT_NO_FMSPC,
    EXT_SHORT_PPID,
    EXT_DUP_FMSPC,
    EXT_NO_CPUSVN,
    EXT_BIG_PCESVN,
    EXT_PCESVN_OCTETS,
    EXT_EXTRA_MEMBER,
    EXT_OTHER_FMSPC,
    EXT_LOW_CPUSVN,
    EXT_LOW_PCESVN,
    EXT_NOT_SEQUENCE,
    EXT_TRAILING,
};

/* The mock platform's SGX extension (sim.h: FMSPC 00806F050000, PCE ID 0000, PCESVN 11,
 * CPUSVN 02 02 02 02 03 01 00 05 00..) with one change. */
static void build_ext(struct fx *f, enum ext_change ch, struct ds_buf *out)
{
    uint8_t fmspc[6], pce_id[2], ppid[16];
    uint8_t cpusvn[16] = {2, 2, 2, 2, 3, 1, 0, 5};
    uint8_t pcesvn[3] = {0x00, 0x00, 11};
    size_t pcesvn_len = 1;
    struct ds_buf tcb, all;
    ds_sim_pki_platform(f->p, fmspc, pce_id, ppid);
    if (ch == EXT_OTHER_FMSPC) {
        fmspc[5] ^= 1;
    }
    if (ch == EXT_LOW_CPUSVN) {
        cpusvn[7] = 4;
    }
    if (ch == EXT_LOW_PCESVN) {
        pcesvn[2] = 10;
    }
    if (ch == EXT_BIG_PCESVN) {
        pcesvn[0] = 0x01; /* 0x01000b: above 16 bits */
        pcesvn_len = 3;
    }
    ds_buf_init(&tcb, 4096);
    ds_buf_init(&all, 4096);
    for (int i = 1; i <= 16; i++) {
        char arc[8];
        snprintf(arc, sizeof(arc), "2.%d", i);
        member(&tcb, arc, 0x02, &cpusvn[i - 1], 1);
    }
    if (ch == EXT_PCESVN_OCTETS) {
        member(&tcb, "2.17", 0x04, pcesvn + 3 - pcesvn_len, pcesvn_len);
    } else {
        member(&tcb, "2.17", 0x02, pcesvn + 3 - pcesvn_len, pcesvn_len);
    }
    if (ch != EXT_NO_CPUSVN) {
        member(&tcb, "2.18", 0x04, cpusvn, sizeof(cpusvn));
    }
    member(&all, "1", 0x04, ppid, ch == EXT_SHORT_PPID ? 15 : 16);
    member(&all, "2", 0x30, tcb.data, tcb.len);
    member(&all, "3", 0x04, pce_id, 2);
    if (ch != EXT_NO_FMSPC) {
        member(&all, "4", 0x04, fmspc, 6);
    }
    if (ch == EXT_DUP_FMSPC) {
        member(&all, "4", 0x04, fmspc, 6);
    }
    member(&all, "5", 0x0a, "\x00", 1);
    if (ch == EXT_EXTRA_MEMBER) {
        member(&all, "7", 0x30, "\x01\x01\xff", 3); /* a newer member we do not use */
    }
    ds_buf_init(out, 8192);
    tlv(out, ch == EXT_NOT_SEQUENCE ? 0x31 : 0x30, all.data, all.len);
    if (ch == EXT_TRAILING) {
        assert_int_equal(ds_buf_u8(out, 0), 0);
    }
    ds_buf_done(&tcb);
    ds_buf_done(&all);
}

static void pck_ext_expect(struct fx *f, enum ext_change ch, bool remove, enum ds_verify_step step,
                           int err, const char *msg)
{
    struct ds_sim_td td;
    struct ds_buf ext;
    ds_sim_td_defaults(&td);
    build_ext(f, ch, &ext);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    c->pck_certificate_chain =
        helper_verify_pck_chain_with_ext(f->p, remove ? NULL : ext.data, ext.len);
    sim_expect(f, &td, c, SIM_NOW, step, err, msg);
    ds_collateral_free(c);
    ds_buf_done(&ext);
}

static void test_pck_extension(void **state)
{
    struct fx *f = *state;
    const char *bad = "Intel SGX extension";
    /* The rebuilt extension verifies: the builder, the re-signing and the walk agree. */
    pck_ext_expect(f, EXT_AS_IS, false, DS_STEP_NONE, 0, NULL);
    pck_ext_expect(f, EXT_EXTRA_MEMBER, false, DS_STEP_NONE, 0, NULL);
    pck_ext_expect(f, EXT_AS_IS, true, DS_STEP_PCK_CHAIN, -DS_E_NOT_FOUND,
                   "PCK certificate has no Intel SGX extension");
    pck_ext_expect(f, EXT_NO_FMSPC, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_SHORT_PPID, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_DUP_FMSPC, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_NO_CPUSVN, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_BIG_PCESVN, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_PCESVN_OCTETS, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_NOT_SEQUENCE, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    pck_ext_expect(f, EXT_TRAILING, false, DS_STEP_PCK_CHAIN, -DS_E_FORMAT, bad);
    /* Values from the extension drive platform matching. */
    pck_ext_expect(f, EXT_OTHER_FMSPC, false, DS_STEP_PLATFORM_TCB, -DS_E_MISMATCH,
                   "Fmspc mismatch");
    pck_ext_expect(f, EXT_LOW_CPUSVN, false, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
                   "No matching TCB level found");
    pck_ext_expect(f, EXT_LOW_PCESVN, false, DS_STEP_PLATFORM_TCB, -DS_E_POLICY,
                   "No matching TCB level found");
    /* A certificate without the extension at all as the PCK leaf (the TCB signing cert). */
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    c->pck_certificate_chain = strdup(c->tcb_info_issuer_chain);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_NOT_FOUND,
               "PCK certificate has no Intel SGX extension");
    ds_collateral_free(c);
}

/* ---- mock PKI: collateral dates, revocation ------------------------------------------- */

static void test_collateral_dates(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    /* Sim collateral issued SIM_NOW - 1 day, next update SIM_NOW + 30 days. */
    sim_expect(f, &td, f->sim_coll, SIM_NOW + 31 * DAY, DS_STEP_TCB_INFO, -DS_E_EXPIRED,
               "TCBInfo expired");
    sim_expect(f, &td, f->sim_coll, SIM_NOW - 2 * DAY, DS_STEP_TCB_INFO, -DS_E_EXPIRED,
               "TCBInfo issue date is in the future");
    /* QE identity alone out of date / not yet valid (re-signed), TCB info still current. */
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    char *j = strdup(c->qe_identity);
    char *nu = strstr(j, "\"nextUpdate\":\"");
    assert_non_null(nu);
    memcpy(nu + 14, "2026-01-01T00:00:00Z", 20); /* before SIM_NOW (2026-05-28) */
    helper_verify_set_qe_identity(f->p, c, j);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_QE_IDENTITY, -DS_E_EXPIRED, "QE Identity expired");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    j = strdup(c->qe_identity);
    char *is = strstr(j, "\"issueDate\":\"");
    assert_non_null(is);
    memcpy(is + 13, "2026-06-01T00:00:00Z", 20);
    helper_verify_set_qe_identity(f->p, c, j);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_QE_IDENTITY, -DS_E_EXPIRED,
               "QE Identity issue date is in the future");
    ds_collateral_free(c);
    /* TCB info expired before the QE identity: its own step. */
    c = helper_verify_coll_dup(f->sim_coll);
    j = strdup(c->tcb_info);
    nu = strstr(j, "\"nextUpdate\":\"");
    assert_non_null(nu);
    memcpy(nu + 14, "2026-05-28T20:26:39Z", 20); /* SIM_NOW - 1 */
    helper_verify_set_tcb_info(f->p, c, j);
    sim_expect(f, &td, c, SIM_NOW - 1, DS_STEP_NONE, 0, NULL);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_INFO, -DS_E_EXPIRED, "TCBInfo expired");
    ds_collateral_free(c);
    /* A date that is not RFC 3339 is a format error of the signed document. */
    c = helper_verify_coll_dup(f->sim_coll);
    j = strdup(c->tcb_info);
    is = strstr(j, "\"issueDate\":\"");
    is[13 + 10] = ' ';
    helper_verify_set_tcb_info(f->p, c, j);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_INFO, -DS_E_FORMAT, "issueDate");
    ds_collateral_free(c);
}

static void test_signed_json_malformed(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_set_tcb_info(f->p, c, strdup("{\"id\":\"TDX\",\"version\":3"));
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_INFO, -DS_E_FORMAT, "invalid JSON");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"tcbType\":0,", "");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_INFO, -DS_E_FORMAT, "tcbType");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_qe_identity(f->p, c, "\"OutOfDate\"", "\"Stale\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_QE_IDENTITY, -DS_E_FORMAT, "tcbStatus");
    ds_collateral_free(c);
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_qe_identity(f->p, c, "\"mrsigner\":\"44", "\"mrsigner\":\"4");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_QE_IDENTITY, -DS_E_FORMAT, "mrsigner");
    ds_collateral_free(c);
    /* A JSON value repeated: refused rather than picking one. */
    c = helper_verify_coll_dup(f->sim_coll);
    helper_verify_edit_tcb_info(f->p, c, "\"pceId\":\"0000\"",
                                "\"pceId\":\"0000\",\"pceId\":\"0000\"");
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_INFO, -DS_E_FORMAT, "invalid JSON");
    ds_collateral_free(c);
}

static void test_revoked_certificates(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    uint8_t *crl;
    size_t crl_len;
    const int64_t from = SIM_NOW - 10 * DAY, to = SIM_NOW + 10 * DAY;
    ds_sim_td_defaults(&td);

    /* The PCK leaf revoked by the PCK CA. */
    uint64_t pck_serial = ds_sim_pki_pck_serial(f->p);
    assert_int_equal(
        ds_sim_pki_crl(f->p, DS_SIM_KEY_PCK_CA, &pck_serial, 1, from, to, &crl, &crl_len), 0);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    free(c->pck_crl);
    c->pck_crl = crl;
    c->pck_crl_len = crl_len;
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_CERT,
               "pck_chain: certificate revoked (depth 0)");
    ds_collateral_free(c);

    /* An empty PCK CRL of the same period verifies; once expired it does not. */
    assert_int_equal(ds_sim_pki_crl(f->p, DS_SIM_KEY_PCK_CA, NULL, 0, from, to, &crl, &crl_len), 0);
    c = helper_verify_coll_dup(f->sim_coll);
    free(c->pck_crl);
    c->pck_crl = crl;
    c->pck_crl_len = crl_len;
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_NONE, 0, NULL);
    sim_expect(f, &td, c, to, DS_STEP_PCK_CHAIN, -DS_E_EXPIRED, "CRL has expired");
    ds_collateral_free(c);

    /* The TCB signing certificate revoked by the root. */
    uint64_t tcb_serial = helper_verify_pem_serial(f->sim_coll->tcb_info_issuer_chain, 0);
    assert_int_equal(
        ds_sim_pki_crl(f->p, DS_SIM_KEY_ROOT, &tcb_serial, 1, from, to, &crl, &crl_len), 0);
    c = helper_verify_coll_dup(f->sim_coll);
    free(c->root_ca_crl);
    c->root_ca_crl = crl;
    c->root_ca_crl_len = crl_len;
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_TCB_INFO, -DS_E_CERT,
               "tcb_info_issuer_chain: certificate revoked");
    ds_collateral_free(c);

    /* The PCK CA revoked by the root. */
    uint64_t ca_serial = helper_verify_pem_serial(ds_sim_pki_pck_chain_pem(f->p), 1);
    assert_int_equal(ds_sim_pki_crl(f->p, DS_SIM_KEY_ROOT, &ca_serial, 1, from, to, &crl, &crl_len),
                     0);
    c = helper_verify_coll_dup(f->sim_coll);
    free(c->root_ca_crl);
    c->root_ca_crl = crl;
    c->root_ca_crl_len = crl_len;
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_CERT,
               "pck_chain: certificate revoked (depth 1)");
    ds_collateral_free(c);

    /* The anchor itself listed by its own CRL. */
    uint64_t root_serial = helper_verify_pem_serial(ds_sim_pki_pck_chain_pem(f->p), 2);
    assert_int_equal(
        ds_sim_pki_crl(f->p, DS_SIM_KEY_ROOT, &root_serial, 1, from, to, &crl, &crl_len), 0);
    c = helper_verify_coll_dup(f->sim_coll);
    free(c->root_ca_crl);
    c->root_ca_crl = crl;
    c->root_ca_crl_len = crl_len;
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_ROOT_CA, -DS_E_CERT,
               "trusted root CA is revoked by root_ca_crl");
    /* Root CRL not yet valid / expired. */
    sim_expect(f, &td, c, from - 1, DS_STEP_ROOT_CA, -DS_E_EXPIRED, "root_ca_crl is not yet valid");
    sim_expect(f, &td, c, to, DS_STEP_ROOT_CA, -DS_E_EXPIRED, "root_ca_crl has expired");
    ds_collateral_free(c);
}

/* A verdict cached for good collateral is not reused for altered collateral. */
static void test_cache_keyed_by_bytes(void **state)
{
    struct fx *f = *state;
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_NONE, 0, NULL);
    struct ds_collateral *c = helper_verify_coll_dup(f->sim_coll);
    c->qe_identity_signature[3] ^= 0x10;
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_QE_IDENTITY, -DS_E_SIGNATURE, NULL);
    c->qe_identity_signature[3] ^= 0x10;
    helper_verify_flip_last(c->pck_crl, c->pck_crl_len);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_SIGNATURE, NULL);
    ds_collateral_free(c);
    /* A different PCK chain in the collateral: verified on its own, not taken from cache. */
    c = helper_verify_coll_dup(f->sim_coll);
    c->pck_certificate_chain = helper_verify_flip_cert_sig(ds_sim_pki_pck_chain_pem(f->p), 0);
    sim_expect(f, &td, c, SIM_NOW, DS_STEP_PCK_CHAIN, -DS_E_SIGNATURE, NULL);
    ds_collateral_free(c);
    sim_expect(f, &td, f->sim_coll, SIM_NOW, DS_STEP_NONE, 0, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quote_signature_bit),
        cmocka_unit_test(test_quote_body_bit),
        cmocka_unit_test(test_qe_report_signature_bit),
        cmocka_unit_test(test_qe_binding_real),
        cmocka_unit_test(test_tcb_info_signature_bit),
        cmocka_unit_test(test_qe_identity_signature_bit),
        cmocka_unit_test(test_pck_leaf_signature),
        cmocka_unit_test(test_pck_leaf_signature_in_quote),
        cmocka_unit_test(test_tcb_signing_cert_signature),
        cmocka_unit_test(test_root_crl_signature),
        cmocka_unit_test(test_pck_crl_signature),
        cmocka_unit_test(test_crl_encoding),
        cmocka_unit_test(test_wrong_root),
        cmocka_unit_test(test_issuer_chains),
        cmocka_unit_test(test_pck_crl_missing),
        cmocka_unit_test(test_mixed_collateral),
        cmocka_unit_test(test_unsupported_header),
        cmocka_unit_test(test_unsupported_cert_type),
        cmocka_unit_test(test_truncation_sweep),
        cmocka_unit_test(test_bit_flip_sweep),
        cmocka_unit_test(test_debug_td),
        cmocka_unit_test(test_sept_ve_disable_clear),
        cmocka_unit_test(test_reserved_attribute_bits),
        cmocka_unit_test(test_service_td),
        cmocka_unit_test(test_mr_signer_seam),
        cmocka_unit_test(test_seam_attributes),
        cmocka_unit_test(test_module_identity),
        cmocka_unit_test(test_no_matching_level),
        cmocka_unit_test(test_component_count),
        cmocka_unit_test(test_fmspc_pceid_mismatch),
        cmocka_unit_test(test_revoked_status),
        cmocka_unit_test(test_advisory_limit),
        cmocka_unit_test(test_qe_identity_policy),
        cmocka_unit_test(test_qe_report_binding),
        cmocka_unit_test(test_built_quote_formats),
        cmocka_unit_test(test_pck_extension),
        cmocka_unit_test(test_collateral_dates),
        cmocka_unit_test(test_signed_json_malformed),
        cmocka_unit_test(test_revoked_certificates),
        cmocka_unit_test(test_cache_keyed_by_bytes),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
