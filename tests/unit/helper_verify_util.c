/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers for the DCAP verifier tests; see helper_verify_util.h. Failures abort the
 * calling test through cmocka assertions, so callers need not check results.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dstack/crypto.h"
#include "helper_verify_util.h"

static const uint8_t intel_vendor[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                         0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

const char *helper_dcap_dir(void)
{
    const char *dir = getenv("DS_DCAP");
    return dir ? dir : "vectors/dcap"; /* unit tests run in tests/ */
}

void helper_verify_load_sample(const char *name, uint8_t **quote, size_t *quote_len,
                               struct ds_collateral **coll)
{
    const char *dir = helper_dcap_dir();
    char path[512], err[256] = "";
    uint8_t *json = NULL;
    size_t json_len = 0;
    snprintf(path, sizeof(path), "%s/%s_quote", dir, name);
    assert_int_equal(ds_read_file(path, DS_QUOTE_MAX_SIZE, quote, quote_len), 0);
    snprintf(path, sizeof(path), "%s/%s_quote_collateral.json", dir, name);
    assert_int_equal(ds_read_file(path, DS_COLLATERAL_MAX_JSON, &json, &json_len), 0);
    int r = ds_collateral_from_json((const char *)json, json_len, coll, err, sizeof(err));
    if (r != 0) {
        fail_msg("collateral %s: %s", path, err);
    }
    free(json);
}

struct ds_collateral *helper_verify_coll_dup(const struct ds_collateral *c)
{
    char *json = NULL, err[256] = "";
    struct ds_collateral *out = NULL;
    assert_int_equal(ds_collateral_to_json(c, &json), 0);
    if (ds_collateral_from_json(json, strlen(json), &out, err, sizeof(err)) != 0) {
        fail_msg("collateral round trip: %s", err);
    }
    free(json);
    return out;
}

char *helper_verify_replace(const char *s, const char *from, const char *to)
{
    size_t fl = strlen(from), tl = strlen(to), n = 0;
    for (const char *p = strstr(s, from); p; p = strstr(p + fl, from)) {
        n++;
    }
    if (n == 0) {
        fail_msg("\"%s\" not found", from);
    }
    char *out = malloc(strlen(s) + n * (tl + 1) + 1);
    assert_non_null(out);
    char *w = out;
    const char *p = s;
    for (const char *q = strstr(p, from); q; q = strstr(p, from)) {
        memcpy(w, p, (size_t)(q - p));
        w += q - p;
        memcpy(w, to, tl);
        w += tl;
        p = q + fl;
    }
    strcpy(w, p);
    return out;
}

static void resign(const struct ds_sim_pki *p, char **field, size_t *len, uint8_t **sig,
                   size_t *sig_len, char *json)
{
    free(*field);
    *field = json;
    *len = strlen(json);
    free(*sig);
    *sig = malloc(64);
    assert_non_null(*sig);
    *sig_len = 64;
    assert_int_equal(ds_sim_pki_sign(p, DS_SIM_KEY_TCB, json, *len, *sig), 0);
}

void helper_verify_set_tcb_info(const struct ds_sim_pki *p, struct ds_collateral *c,
                                char *json_owned)
{
    resign(p, &c->tcb_info, &c->tcb_info_len, &c->tcb_info_signature, &c->tcb_info_signature_len,
           json_owned);
}

void helper_verify_set_qe_identity(const struct ds_sim_pki *p, struct ds_collateral *c,
                                   char *json_owned)
{
    resign(p, &c->qe_identity, &c->qe_identity_len, &c->qe_identity_signature,
           &c->qe_identity_signature_len, json_owned);
}

void helper_verify_edit_tcb_info(const struct ds_sim_pki *p, struct ds_collateral *c,
                                 const char *from, const char *to)
{
    helper_verify_set_tcb_info(p, c, helper_verify_replace(c->tcb_info, from, to));
}

void helper_verify_edit_qe_identity(const struct ds_sim_pki *p, struct ds_collateral *c,
                                    const char *from, const char *to)
{
    helper_verify_set_qe_identity(p, c, helper_verify_replace(c->qe_identity, from, to));
}

static STACK_OF(X509) * read_chain(const char *pem)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    assert_non_null(b);
    assert_non_null(sk);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        assert_true(sk_X509_push(sk, x) > 0);
    }
    BIO_free(b);
    assert_true(sk_X509_num(sk) > 0);
    return sk;
}

static char *write_chain(STACK_OF(X509) * sk, int from, int to)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data;
    assert_non_null(b);
    for (int i = from; i < to; i++) {
        assert_int_equal(PEM_write_bio_X509(b, sk_X509_value(sk, i)), 1);
    }
    long n = BIO_get_mem_data(b, &data);
    char *out = malloc((size_t)n + 1);
    assert_non_null(out);
    memcpy(out, data, (size_t)n);
    out[n] = '\0';
    BIO_free(b);
    return out;
}

void helper_verify_flip_last(uint8_t *der, size_t len)
{
    assert_true(len > 8);
    der[len - 1] ^= 0x01;
}

char *helper_verify_flip_cert_sig(const char *pem, int index)
{
    STACK_OF(X509) *sk = read_chain(pem);
    unsigned char *der = NULL;
    assert_true(index < sk_X509_num(sk));
    int n = i2d_X509(sk_X509_value(sk, index), &der);
    assert_true(n > 0);
    /* The DER ends with the signature BIT STRING: its last byte is the low byte of s. */
    helper_verify_flip_last(der, (size_t)n);
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, n);
    assert_non_null(x);
    X509 *old = sk_X509_value(sk, index);
    assert_non_null(sk_X509_set(sk, index, x));
    X509_free(old);
    OPENSSL_free(der);
    char *out = write_chain(sk, 0, sk_X509_num(sk));
    sk_X509_pop_free(sk, X509_free);
    return out;
}

char *helper_verify_pem_slice(const char *pem, int from, int to)
{
    STACK_OF(X509) *sk = read_chain(pem);
    if (to < 0) {
        to = sk_X509_num(sk);
    }
    char *out = write_chain(sk, from, to);
    sk_X509_pop_free(sk, X509_free);
    return out;
}

uint64_t helper_verify_pem_serial(const char *pem, int index)
{
    STACK_OF(X509) *sk = read_chain(pem);
    uint64_t v = 0;
    assert_int_equal(ASN1_INTEGER_get_uint64(&v, X509_get0_serialNumber(sk_X509_value(sk, index))),
                     1);
    sk_X509_pop_free(sk, X509_free);
    return v;
}

char *helper_verify_pck_chain_with_ext(const struct ds_sim_pki *p, const uint8_t *ext_der,
                                       size_t ext_len)
{
    STACK_OF(X509) *sk = read_chain(ds_sim_pki_pck_chain_pem(p));
    X509 *leaf = sk_X509_value(sk, 0);
    ASN1_OBJECT *oid = OBJ_txt2obj("1.2.840.113741.1.13.1", 1);
    assert_non_null(oid);
    int idx = X509_get_ext_by_OBJ(leaf, oid, -1);
    assert_true(idx >= 0);
    if (ext_der) {
        ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
        assert_non_null(os);
        assert_int_equal(ASN1_OCTET_STRING_set(os, ext_der, (int)ext_len), 1);
        assert_int_equal(X509_EXTENSION_set_data(X509_get_ext(leaf, idx), os), 1);
        ASN1_OCTET_STRING_free(os);
    } else {
        X509_EXTENSION_free(X509_delete_ext(leaf, idx));
    }
    ASN1_OBJECT_free(oid);

    /* Re-sign the re-encoded TBSCertificate with the mock PCK CA key. */
    unsigned char *tbs = NULL;
    int tbs_len = i2d_re_X509_tbs(leaf, &tbs);
    uint8_t raw[64], *der = NULL;
    size_t der_len = 0;
    assert_true(tbs_len > 0);
    assert_int_equal(ds_sim_pki_sign(p, DS_SIM_KEY_PCK_CA, tbs, (size_t)tbs_len, raw), 0);
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw, sizeof(raw), &der, &der_len), 0);
    const ASN1_BIT_STRING *sig = NULL;
    const X509_ALGOR *alg = NULL;
    X509_get0_signature(&sig, &alg, leaf);
    ASN1_BIT_STRING *wsig = (ASN1_BIT_STRING *)sig;
    assert_int_equal(ASN1_BIT_STRING_set(wsig, der, (int)der_len), 1);
    wsig->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
    wsig->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    OPENSSL_free(tbs);
    free(der);
    char *out = write_chain(sk, 0, sk_X509_num(sk));
    sk_X509_pop_free(sk, X509_free);
    return out;
}

/* The QE report of a simulator quote (matches the mock QE identity). */
static void sim_qe_report(const struct ds_sim_pki *p, uint8_t out[DS_SGX_REPORT_SIZE])
{
    struct ds_sim_td td;
    uint8_t rd[64] = {0}, *raw = NULL;
    size_t len = 0;
    struct ds_quote q;
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(p, &td, rd, NULL, &raw, &len), 0);
    assert_int_equal(ds_quote_parse(raw, len, &q), 0);
    memcpy(out, q.qe_report_raw, DS_SGX_REPORT_SIZE);
    free(raw);
}

void helper_verify_sim_td_body(const struct ds_sim_pki *p, const struct ds_sim_td *td,
                               uint8_t out[DS_TD10_REPORT_SIZE])
{
    uint8_t rd[64] = {0}, *raw = NULL;
    size_t len = 0;
    assert_int_equal(ds_sim_quote(p, td, rd, NULL, &raw, &len), 0);
    assert_true(len > 48 + DS_TD10_REPORT_SIZE);
    memcpy(out, raw + 48, DS_TD10_REPORT_SIZE);
    free(raw);
}

void helper_verify_build_quote(const struct ds_sim_pki *p, const struct helper_verify_qb *qb,
                               uint8_t **out, size_t *out_len)
{
    uint16_t version = qb->version ? qb->version : 4;
    uint16_t ak_type = qb->ak_type ? qb->ak_type : DS_AK_TYPE_ECDSA_P256;
    uint32_t tee = qb->has_tee_type ? qb->tee_type : DS_TEE_TYPE_TDX;
    size_t auth_len = (qb->has_qe_auth_len || qb->qe_auth_len) ? qb->qe_auth_len : 32;
    uint16_t inner_type = qb->inner_cert_type ? qb->inner_cert_type : 5;
    const char *pem = qb->pem ? qb->pem : ds_sim_pki_pck_chain_pem(p);
    size_t pem_len = strlen(pem) + 1; /* with the NUL, as real quotes */
    uint8_t priv[32], pub[64], sig[64], qe_sig[64], qe_report[DS_SGX_REPORT_SIZE], h[32];
    uint8_t auth[256];
    struct ds_buf q, cert;

    assert_non_null(qb->body);
    assert_true(auth_len <= sizeof(auth));
    memset(auth, 0x5a, sizeof(auth));
    assert_int_equal(ds_ec_generate(DS_EC_P256, priv, pub), 0);

    /* QE report bound to the attestation key, signed by the PCK key. */
    sim_qe_report(p, qe_report);
    ds_sha256_v(h, 2, pub, sizeof(pub), auth, auth_len);
    memset(qe_report + 320, 0, 64);
    memcpy(qe_report + 320, h, sizeof(h));
    if (qb->qe_bind_wrong) {
        qe_report[320] ^= 0x01;
    }
    assert_int_equal(ds_sim_pki_sign(p, DS_SIM_KEY_PCK, qe_report, sizeof(qe_report), qe_sig), 0);

    ds_buf_init(&q, DS_QUOTE_MAX_SIZE);
    ds_buf_init(&cert, DS_QUOTE_MAX_SIZE);
    assert_int_equal(ds_buf_u16le(&q, version), 0);
    assert_int_equal(ds_buf_u16le(&q, ak_type), 0);
    assert_int_equal(ds_buf_u32le(&q, tee), 0);
    assert_int_equal(ds_buf_u16le(&q, 4), 0);  /* qe_svn */
    assert_int_equal(ds_buf_u16le(&q, 11), 0); /* pce_svn */
    assert_int_equal(ds_buf_append(&q, intel_vendor, sizeof(intel_vendor)), 0);
    assert_int_equal(ds_buf_append(&q, (uint8_t[20]){0}, 20), 0);
    if (version == 5) {
        uint16_t bt = qb->v5_body_type;
        if (bt == 0) {
            bt = qb->body_len == DS_SGX_REPORT_SIZE    ? 1
                 : qb->body_len == DS_TD10_REPORT_SIZE ? 2
                                                       : 3;
        }
        assert_int_equal(ds_buf_u16le(&q, bt), 0);
        assert_int_equal(ds_buf_u32le(&q, (uint32_t)qb->body_len), 0);
    }
    assert_int_equal(ds_buf_append(&q, qb->body, qb->body_len), 0);
    assert_int_equal(ds_ecdsa_sign_raw(DS_EC_P256, priv, q.data, q.len, sig), 0);

    /* QE report, its signature, auth data and the PCK chain (type 5). */
    assert_int_equal(ds_buf_append(&cert, qe_report, sizeof(qe_report)), 0);
    assert_int_equal(ds_buf_append(&cert, qe_sig, sizeof(qe_sig)), 0);
    assert_int_equal(ds_buf_u16le(&cert, (uint16_t)auth_len), 0);
    assert_int_equal(ds_buf_append(&cert, auth, auth_len), 0);
    assert_int_equal(ds_buf_u16le(&cert, inner_type), 0);
    assert_int_equal(ds_buf_u32le(&cert, (uint32_t)pem_len), 0);
    assert_int_equal(ds_buf_append(&cert, pem, pem_len), 0);

    size_t ad_len = 64 + 64 + (version == 3 ? 0 : 6) + cert.len;
    assert_int_equal(ds_buf_u32le(&q, (uint32_t)ad_len), 0);
    assert_int_equal(ds_buf_append(&q, sig, sizeof(sig)), 0);
    assert_int_equal(ds_buf_append(&q, pub, sizeof(pub)), 0);
    if (version != 3) {
        assert_int_equal(ds_buf_u16le(&q, 6), 0);
        assert_int_equal(ds_buf_u32le(&q, (uint32_t)cert.len), 0);
    }
    assert_int_equal(ds_buf_append(&q, cert.data, cert.len), 0);
    ds_wipe(priv, sizeof(priv));
    ds_buf_done(&cert);
    ds_buf_steal(&q, out, out_len);
}
