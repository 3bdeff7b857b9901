/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the simulated TDX module's generators (lib/tee/sim_*.c, include/dstack/sim.h):
 * the mock PKI is deterministic per seed and distinct across seeds, its chains and CRLs verify
 * with OpenSSL the way a DCAP verifier checks them (spec ../shared/spec/attestation.md §2.3),
 * the PCK leaf carries the Intel SGX extension (§2.4), quotes are laid out byte for byte as in
 * §1 with every signature and binding valid, collateral is signed over its exact JSON bytes,
 * and the unmodified dcap-qvl verifier (node, @phala/dcap-qvl test_case.js) accepts a sim quote
 * with the mock root and rejects it with Intel's root, with another seed's root, or altered.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>
#include <openssl/core_names.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "dstack/attest.h"
#include "dstack/crypto.h"
#include "dstack/sim.h"

#define NOW           1780000000LL /* 2026-05-28T20:26:40Z */
#define DAY           86400LL
#define V4_SIGNED_LEN (48 + DS_TD10_REPORT_SIZE)
#define V5_SIGNED_LEN (48 + 6 + DS_TD10_REPORT_SIZE)
#define SGX_EXT_OID   "1.2.840.113741.1.13.1"

struct fixture {
    struct ds_sim_pki *a, *a2, *b;
    struct ds_collateral *coll;
};

static const uint8_t seed_a[DS_SIM_SEED_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
static const uint8_t seed_b[DS_SIM_SEED_LEN] = {1, 2, 3, 4, 5, 6, 7, 8, 10};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    if (f == NULL || ds_sim_pki_new(seed_a, &f->a) < 0 || ds_sim_pki_new(seed_a, &f->a2) < 0 ||
        ds_sim_pki_new(seed_b, &f->b) < 0 || ds_sim_collateral(f->a, NOW, &f->coll) < 0) {
        return -1;
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    ds_sim_pki_free(f->a);
    ds_sim_pki_free(f->a2);
    ds_sim_pki_free(f->b);
    ds_collateral_free(f->coll);
    free(f);
    return 0;
}

/* ---- helpers -------------------------------------------------------------------------------- */

static STACK_OF(X509) * pem_certs(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    assert_non_null(bio);
    assert_non_null(sk);
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        assert_true(sk_X509_push(sk, x) > 0);
    }
    BIO_free(bio);
    return sk;
}

static X509 *der_cert(const uint8_t *der, size_t len)
{
    const unsigned char *q = der;
    X509 *x = d2i_X509(NULL, &q, (long)len);
    assert_non_null(x);
    return x;
}

static X509 *root_cert(const struct ds_sim_pki *p)
{
    const uint8_t *der;
    size_t len;
    ds_sim_pki_root_der(p, &der, &len);
    return der_cert(der, len);
}

static X509_CRL *der_crl(const uint8_t *der, size_t len)
{
    const unsigned char *q = der;
    X509_CRL *c = d2i_X509_CRL(NULL, &q, (long)len);
    assert_non_null(c);
    return c;
}

/* X||Y of a certificate's P-256 key. */
static void cert_pub(X509 *x, uint8_t pub[64])
{
    uint8_t buf[65];
    size_t len = 0;
    assert_int_equal(EVP_PKEY_get_octet_string_param(X509_get0_pubkey(x), OSSL_PKEY_PARAM_PUB_KEY,
                                                     buf, sizeof(buf), &len),
                     1);
    assert_int_equal(len, 65);
    assert_int_equal(buf[0], 4);
    memcpy(pub, buf + 1, 64);
}

static void cert_cn(X509 *x, bool issuer, char *out, size_t size)
{
    X509_NAME *n = issuer ? X509_get_issuer_name(x) : X509_get_subject_name(x);
    assert_true(X509_NAME_get_text_by_NID(n, NID_commonName, out, (int)size) > 0);
}

/* OpenSSL chain check as the DCAP verifiers do it: root only trusted, CRL_CHECK_ALL. */
static int verify_chain(X509 *root, X509 *leaf, STACK_OF(X509) * untrusted, X509_CRL *crl1,
                        X509_CRL *crl2, int64_t at)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int ok, err;
    assert_int_equal(X509_STORE_add_cert(store, root), 1);
    assert_int_equal(X509_STORE_add_crl(store, crl1), 1);
    assert_int_equal(X509_STORE_add_crl(store, crl2), 1);
    assert_int_equal(X509_STORE_CTX_init(ctx, store, leaf, untrusted), 1);
    X509_STORE_CTX_set_flags(ctx, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL |
                                      X509_V_FLAG_X509_STRICT);
    X509_STORE_CTX_set_time(ctx, 0, (time_t)at);
    ok = X509_verify_cert(ctx);
    err = X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return ok == 1 ? X509_V_OK : (err == X509_V_OK ? -1 : err);
}

/* A parsed sim quote (own walk with ds_reader so the layout is checked independently). */
struct parsed {
    uint16_t version, ak_type, qe_svn, pce_svn;
    uint32_t tee_type;
    const uint8_t *vendor, *user_data, *body, *sig, *ak, *qe_report, *qe_sig, *qe_auth, *pem;
    uint16_t body_type, outer_type, inner_type, qe_auth_len;
    uint32_t body_size, auth_len, outer_len, inner_len;
    size_t signed_len;
};

static void parse_quote(const uint8_t *q, size_t len, struct parsed *p)
{
    struct ds_reader r;
    memset(p, 0, sizeof(*p));
    ds_rd_init(&r, q, len);
    assert_int_equal(ds_rd_u16le(&r, &p->version), 0);
    assert_int_equal(ds_rd_u16le(&r, &p->ak_type), 0);
    assert_int_equal(ds_rd_u32le(&r, &p->tee_type), 0);
    assert_int_equal(ds_rd_u16le(&r, &p->qe_svn), 0);
    assert_int_equal(ds_rd_u16le(&r, &p->pce_svn), 0);
    assert_int_equal(ds_rd_ptr(&r, 16, &p->vendor), 0);
    assert_int_equal(ds_rd_ptr(&r, 20, &p->user_data), 0);
    if (p->version == 5) {
        assert_int_equal(ds_rd_u16le(&r, &p->body_type), 0);
        assert_int_equal(ds_rd_u32le(&r, &p->body_size), 0);
    }
    assert_int_equal(ds_rd_ptr(&r, DS_TD10_REPORT_SIZE, &p->body), 0);
    p->signed_len = r.off;
    assert_int_equal(ds_rd_u32le(&r, &p->auth_len), 0);
    assert_int_equal(p->auth_len, ds_rd_left(&r)); /* no trailing bytes */
    assert_int_equal(ds_rd_ptr(&r, 64, &p->sig), 0);
    assert_int_equal(ds_rd_ptr(&r, 64, &p->ak), 0);
    assert_int_equal(ds_rd_u16le(&r, &p->outer_type), 0);
    assert_int_equal(ds_rd_u32le(&r, &p->outer_len), 0);
    assert_int_equal(p->outer_len, ds_rd_left(&r));
    assert_int_equal(ds_rd_ptr(&r, DS_SGX_REPORT_SIZE, &p->qe_report), 0);
    assert_int_equal(ds_rd_ptr(&r, 64, &p->qe_sig), 0);
    assert_int_equal(ds_rd_u16le(&r, &p->qe_auth_len), 0);
    assert_int_equal(ds_rd_ptr(&r, p->qe_auth_len, &p->qe_auth), 0);
    assert_int_equal(ds_rd_u16le(&r, &p->inner_type), 0);
    assert_int_equal(ds_rd_u32le(&r, &p->inner_len), 0);
    assert_int_equal(p->inner_len, ds_rd_left(&r));
    assert_int_equal(ds_rd_ptr(&r, p->inner_len, &p->pem), 0);
    assert_int_equal(ds_rd_left(&r), 0);
}

static void make_quote(const struct ds_sim_pki *p, uint16_t version, const uint8_t rd[64],
                       uint8_t **q, size_t *len)
{
    struct ds_sim_td td;
    struct ds_sim_quote_opts opts = {.version = version};
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(p, &td, rd, &opts, q, len), 0);
}

/* ---- PKI ------------------------------------------------------------------------------------ */

static void test_pki_deterministic(void **state)
{
    struct fixture *f = *state;
    const uint8_t *d1, *d2;
    size_t l1, l2;
    uint8_t s1[64], s2[64], fm1[6], fm2[6], pce1[2], pce2[2], ppid1[16], ppid2[16];
    uint8_t *crl1, *crl2;
    size_t crl1_len, crl2_len;
    const uint64_t revoked[] = {7, ds_sim_pki_pck_serial(f->a)};

    ds_sim_pki_root_der(f->a, &d1, &l1);
    ds_sim_pki_root_der(f->a2, &d2, &l2);
    assert_true(l1 > 300);
    assert_int_equal(l1, l2);
    assert_memory_equal(d1, d2, l1);
    assert_string_equal(ds_sim_pki_pck_chain_pem(f->a), ds_sim_pki_pck_chain_pem(f->a2));
    assert_int_equal(ds_sim_pki_pck_serial(f->a), ds_sim_pki_pck_serial(f->a2));
    ds_sim_pki_platform(f->a, fm1, pce1, ppid1);
    ds_sim_pki_platform(f->a2, fm2, pce2, ppid2);
    assert_memory_equal(ppid1, ppid2, 16);
    /* signatures with mock keys are deterministic too (derived nonces) */
    for (int k = DS_SIM_KEY_ROOT; k <= DS_SIM_KEY_TCB; k++) {
        assert_int_equal(ds_sim_pki_sign(f->a, (enum ds_sim_key)k, "msg", 3, s1), 0);
        assert_int_equal(ds_sim_pki_sign(f->a2, (enum ds_sim_key)k, "msg", 3, s2), 0);
        assert_memory_equal(s1, s2, 64);
    }
    assert_int_equal(
        ds_sim_pki_crl(f->a, DS_SIM_KEY_PCK_CA, revoked, 2, NOW, NOW + DAY, &crl1, &crl1_len), 0);
    assert_int_equal(
        ds_sim_pki_crl(f->a2, DS_SIM_KEY_PCK_CA, revoked, 2, NOW, NOW + DAY, &crl2, &crl2_len), 0);
    assert_int_equal(crl1_len, crl2_len);
    assert_memory_equal(crl1, crl2, crl1_len);
    free(crl1);
    free(crl2);
}

/* Public keys for seed_a, computed independently (Python + pycryptodome) from the spec formula
 * scalar = SHA-256("dstack-mock-p256-v1" || seed || label || be32(counter)) (counter 0 valid). */
static void test_pki_key_derivation(void **state)
{
    struct fixture *f = *state;
    static const char *const want_hex[] = {
        /* tdx-pck, tdx-pck-ca, tdx-root (chain order), tdx-tcb */
        "b4208047c178d573a7b39c798917af7c5a65319966e3548fddb45ba9ef028991"
        "8e10e4a903065f23ab7e63c0c62bb0efd54c57c57084145d8152131107f18acd",
        "d6ad2908d382b4b2171935c3acb5c81a4cbb3dd1f30a6d904ef28ab027b0663e"
        "9afd09036f4cfaacb7c59fe345c25e7f10ba79539f184a99902122d0ee1fd2c5",
        "10c838b41a84accd40c04ce9c3fb2043878a42554548c2120d25136a434df88e"
        "b027bdd207caf55419681fe4d2e81b69b07dd6ca26a1175c58edb79caf41ec9d",
        "4d00956c3b8b5bdcf01205e0ba2624bc7310e4a47d4100f3bb6a8e10a84ae91a"
        "2bc0b207950ce30eec77916b18e717347017424e811b360e0fdfc25d945993e1",
    };
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    STACK_OF(X509) *tcb = pem_certs(f->coll->tcb_info_issuer_chain);
    uint8_t pub[64], want[64];

    for (int i = 0; i < 4; i++) {
        X509 *x = i < 3 ? sk_X509_value(chain, i) : sk_X509_value(tcb, 0);
        assert_int_equal(ds_hex_decode(want_hex[i], 128, want, sizeof(want)), 64);
        cert_pub(x, pub);
        assert_memory_equal(pub, want, 64);
    }
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(tcb, X509_free);
}

static void test_pki_seeds_differ(void **state)
{
    struct fixture *f = *state;
    const uint8_t *d1, *d2;
    size_t l1, l2;
    uint8_t fm[6], pce[2], ppid_a[16], ppid_b[16];
    STACK_OF(X509) *ca = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    STACK_OF(X509) *cb = pem_certs(ds_sim_pki_pck_chain_pem(f->b));
    STACK_OF(X509) *ta = pem_certs(f->coll->tcb_info_issuer_chain);
    struct ds_collateral *coll_b = NULL;
    STACK_OF(X509) * tb;
    uint8_t pa[64], pb[64];

    ds_sim_pki_root_der(f->a, &d1, &l1);
    ds_sim_pki_root_der(f->b, &d2, &l2);
    assert_false(l1 == l2 && memcmp(d1, d2, l1) == 0);
    assert_int_equal(ds_sim_collateral(f->b, NOW, &coll_b), 0);
    tb = pem_certs(coll_b->tcb_info_issuer_chain);
    assert_int_equal(sk_X509_num(ca), 3);
    assert_int_equal(sk_X509_num(cb), 3);
    assert_int_equal(sk_X509_num(ta), 2);
    assert_int_equal(sk_X509_num(tb), 2);
    /* no key is shared between the two seeds: PCK leaf, PCK CA, root, TCB signing */
    for (int i = 0; i < 3; i++) {
        cert_pub(sk_X509_value(ca, i), pa);
        cert_pub(sk_X509_value(cb, i), pb);
        assert_memory_not_equal(pa, pb, 64);
    }
    cert_pub(sk_X509_value(ta, 0), pa);
    cert_pub(sk_X509_value(tb, 0), pb);
    assert_memory_not_equal(pa, pb, 64);
    /* and the four keys of one PKI are distinct */
    for (int i = 0; i < 3; i++) {
        uint8_t pt[64];
        cert_pub(sk_X509_value(ca, i), pa);
        cert_pub(sk_X509_value(ta, 0), pt);
        assert_memory_not_equal(pa, pt, 64);
    }
    ds_sim_pki_platform(f->a, fm, pce, ppid_a);
    ds_sim_pki_platform(f->b, fm, pce, ppid_b);
    assert_memory_not_equal(ppid_a, ppid_b, 16);
    assert_true(ds_sim_pki_pck_serial(f->a) != ds_sim_pki_pck_serial(f->b));
    sk_X509_pop_free(ca, X509_free);
    sk_X509_pop_free(cb, X509_free);
    sk_X509_pop_free(ta, X509_free);
    sk_X509_pop_free(tb, X509_free);
    ds_collateral_free(coll_b);
}

static void test_pki_certificates(void **state)
{
    struct fixture *f = *state;
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    STACK_OF(X509) *tcb = pem_certs(f->coll->tcb_info_issuer_chain);
    STACK_OF(X509) *pck_ca_chain = pem_certs(f->coll->pck_crl_issuer_chain);
    X509 *root = root_cert(f->a);
    X509 *leaf = sk_X509_value(chain, 0), *pck_ca = sk_X509_value(chain, 1);
    char cn[128], issuer_dn[512];
    const uint8_t *rd;
    size_t rl;
    unsigned char *der = NULL;
    int len;

    /* the chain's root copy is the root */
    ds_sim_pki_root_der(f->a, &rd, &rl);
    len = i2d_X509(sk_X509_value(chain, 2), &der);
    assert_int_equal((size_t)len, rl);
    assert_memory_equal(der, rd, rl);
    OPENSSL_free(der);
    assert_int_equal(X509_cmp(sk_X509_value(pck_ca_chain, 0), pck_ca), 0);
    assert_int_equal(X509_cmp(sk_X509_value(pck_ca_chain, 1), root), 0);
    assert_int_equal(X509_cmp(sk_X509_value(tcb, 1), root), 0);

    cert_cn(root, false, cn, sizeof(cn));
    assert_string_equal(cn, "Mock Intel SGX Root CA");
    cert_cn(root, true, cn, sizeof(cn));
    assert_string_equal(cn, "Mock Intel SGX Root CA");
    cert_cn(pck_ca, false, cn, sizeof(cn));
    assert_string_equal(cn, "Mock Intel SGX PCK Platform CA");
    cert_cn(leaf, false, cn, sizeof(cn));
    assert_string_equal(cn, "Mock Intel SGX PCK Certificate");
    cert_cn(sk_X509_value(tcb, 0), false, cn, sizeof(cn));
    assert_string_equal(cn, "Mock Intel SGX TCB Signing");
    cert_cn(sk_X509_value(tcb, 0), true, cn, sizeof(cn));
    assert_string_equal(cn, "Mock Intel SGX Root CA");
    /* CA type detection reads the leaf's issuer DN */
    X509_NAME_oneline(X509_get_issuer_name(leaf), issuer_dn, sizeof(issuer_dn));
    assert_non_null(strstr(issuer_dn, "Platform"));
    assert_non_null(strstr(issuer_dn, "O=Intel Corporation"));

    /* CA flags: root and PCK CA are CAs with keyCertSign, the leaves are not */
    assert_int_equal(X509_check_ca(root), 1);
    assert_int_equal(X509_check_ca(pck_ca), 1);
    assert_int_equal(X509_check_ca(leaf), 0);
    assert_int_equal(X509_check_ca(sk_X509_value(tcb, 0)), 0);
    assert_true(X509_get_key_usage(root) & KU_KEY_CERT_SIGN);
    assert_true(X509_get_key_usage(root) & KU_CRL_SIGN);
    assert_true(X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE);
    assert_false(X509_get_key_usage(leaf) & KU_KEY_CERT_SIGN);
    assert_int_equal(X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE, 0); /* no EKU */

    /* validity 2020-01-01 .. 2100-01-01 */
    {
        ASN1_TIME *nb = ASN1_TIME_set(NULL, 1577836800), *na = ASN1_TIME_set(NULL, 4102444800);
        assert_int_equal(ASN1_TIME_compare(X509_get0_notBefore(leaf), nb), 0);
        assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(leaf), na), 0);
        assert_int_equal(ASN1_TIME_compare(X509_get0_notBefore(root), nb), 0);
        assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(root), na), 0);
        ASN1_TIME_free(nb);
        ASN1_TIME_free(na);
    }
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(tcb, X509_free);
    sk_X509_pop_free(pck_ca_chain, X509_free);
    X509_free(root);
}

static void test_pki_chains_verify(void **state)
{
    struct fixture *f = *state;
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    STACK_OF(X509) *tcb = pem_certs(f->coll->tcb_info_issuer_chain);
    STACK_OF(X509) *inter = sk_X509_new_null();
    X509 *root = root_cert(f->a), *root_b = root_cert(f->b);
    X509_CRL *root_crl = der_crl(f->coll->root_ca_crl, f->coll->root_ca_crl_len);
    X509_CRL *pck_crl = der_crl(f->coll->pck_crl, f->coll->pck_crl_len);
    X509 *leaf = sk_X509_value(chain, 0);

    sk_X509_push(inter, sk_X509_value(chain, 1));
    assert_int_equal(verify_chain(root, leaf, inter, root_crl, pck_crl, NOW), X509_V_OK);
    assert_int_equal(verify_chain(root, sk_X509_value(tcb, 0), NULL, root_crl, pck_crl, NOW),
                     X509_V_OK);
    /* another seed's root is not an anchor for this chain */
    assert_int_equal(verify_chain(root_b, leaf, inter, root_crl, pck_crl, NOW),
                     X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
    /* after 2100 the CRLs have expired, and with CRLs valid longer, the certificates */
    assert_int_equal(verify_chain(root, leaf, inter, root_crl, pck_crl, 4102444801LL),
                     X509_V_ERR_CRL_HAS_EXPIRED);
    {
        uint8_t *d1, *d2;
        size_t l1, l2;
        X509_CRL *c1, *c2;
        assert_int_equal(
            ds_sim_pki_crl(f->a, DS_SIM_KEY_ROOT, NULL, 0, 1500000000LL, 4200000000LL, &d1, &l1),
            0);
        assert_int_equal(
            ds_sim_pki_crl(f->a, DS_SIM_KEY_PCK_CA, NULL, 0, 1500000000LL, 4200000000LL, &d2, &l2),
            0);
        c1 = der_crl(d1, l1);
        c2 = der_crl(d2, l2);
        assert_int_equal(verify_chain(root, leaf, inter, c1, c2, 4102444801LL),
                         X509_V_ERR_CERT_HAS_EXPIRED);
        assert_int_equal(verify_chain(root, leaf, inter, c1, c2, 1577836799LL),
                         X509_V_ERR_CERT_NOT_YET_VALID);
        X509_CRL_free(c1);
        X509_CRL_free(c2);
        free(d1);
        free(d2);
    }
    /* the CRLs are issued by the right CAs and signed by them */
    assert_int_equal(X509_NAME_cmp(X509_CRL_get_issuer(root_crl), X509_get_subject_name(root)), 0);
    assert_int_equal(X509_CRL_verify(root_crl, X509_get0_pubkey(root)), 1);
    assert_int_equal(X509_CRL_verify(pck_crl, X509_get0_pubkey(sk_X509_value(chain, 1))), 1);
    assert_int_equal(X509_CRL_verify(pck_crl, X509_get0_pubkey(root)), 0);
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(root_crl)) > 0, 0); /* empty */
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(pck_crl)) > 0, 0);

    sk_X509_free(inter);
    sk_X509_pop_free(chain, X509_free);
    sk_X509_pop_free(tcb, X509_free);
    X509_free(root);
    X509_free(root_b);
    X509_CRL_free(root_crl);
    X509_CRL_free(pck_crl);
}

static void test_pki_custom_crl(void **state)
{
    struct fixture *f = *state;
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    STACK_OF(X509) *inter = sk_X509_new_null();
    X509 *root = root_cert(f->a);
    X509_CRL *root_crl = der_crl(f->coll->root_ca_crl, f->coll->root_ca_crl_len);
    const uint64_t revoked[] = {12345, ds_sim_pki_pck_serial(f->a)};
    X509_REVOKED *entry = NULL;
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    X509_CRL *crl, *expired;
    uint8_t *der;
    size_t len;

    sk_X509_push(inter, sk_X509_value(chain, 1));
    assert_int_equal(
        ds_sim_pki_crl(f->a, DS_SIM_KEY_PCK_CA, revoked, 2, NOW - DAY, NOW + DAY, &der, &len), 0);
    crl = der_crl(der, len);
    free(der);
    assert_int_equal(X509_CRL_verify(crl, X509_get0_pubkey(sk_X509_value(chain, 1))), 1);
    ASN1_INTEGER_set_uint64(sn, ds_sim_pki_pck_serial(f->a));
    assert_int_equal(X509_CRL_get0_by_serial(crl, &entry, sn), 1);
    assert_int_equal(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(crl)), 2);
    assert_int_equal(verify_chain(root, sk_X509_value(chain, 0), inter, root_crl, crl, NOW),
                     X509_V_ERR_CERT_REVOKED);
    /* outside its window the CRL is expired */
    assert_int_equal(
        verify_chain(root, sk_X509_value(chain, 0), inter, root_crl, crl, NOW + 2 * DAY),
        X509_V_ERR_CRL_HAS_EXPIRED);
    /* an empty CRL from the root with an old window */
    assert_int_equal(
        ds_sim_pki_crl(f->a, DS_SIM_KEY_ROOT, NULL, 0, NOW - 3 * DAY, NOW - DAY, &der, &len), 0);
    expired = der_crl(der, len);
    free(der);
    assert_int_equal(X509_CRL_verify(expired, X509_get0_pubkey(root)), 1);
    assert_true(sk_X509_REVOKED_num(X509_CRL_get_REVOKED(expired)) <= 0); /* none revoked */

    /* negative cases */
    assert_int_equal(ds_sim_pki_crl(f->a, DS_SIM_KEY_PCK, NULL, 0, NOW, NOW + 1, &der, &len),
                     -EINVAL);
    assert_int_equal(ds_sim_pki_crl(f->a, DS_SIM_KEY_TCB, NULL, 0, NOW, NOW + 1, &der, &len),
                     -EINVAL);
    assert_int_equal(ds_sim_pki_crl(f->a, DS_SIM_KEY_ROOT, NULL, 1, NOW, NOW + 1, &der, &len),
                     -EINVAL);
    assert_int_equal(ds_sim_pki_crl(f->a, DS_SIM_KEY_ROOT, NULL, 0, NOW, NOW - 1, &der, &len),
                     -EINVAL);

    ASN1_INTEGER_free(sn);
    X509_CRL_free(crl);
    X509_CRL_free(expired);
    X509_CRL_free(root_crl);
    X509_free(root);
    sk_X509_free(inter);
    sk_X509_pop_free(chain, X509_free);
}

/* Find value of SEQUENCE{OID oid, value} in a SEQUENCE OF ANY. */
static const ASN1_TYPE *ext_find(const ASN1_SEQUENCE_ANY *seq, const char *oid)
{
    ASN1_OBJECT *want = OBJ_txt2obj(oid, 1);
    const ASN1_TYPE *found = NULL;
    for (int i = 0; i < sk_ASN1_TYPE_num(seq) && found == NULL; i++) {
        const ASN1_TYPE *t = sk_ASN1_TYPE_value(seq, i);
        const unsigned char *q;
        ASN1_SEQUENCE_ANY *pair;
        assert_int_equal(t->type, V_ASN1_SEQUENCE);
        q = t->value.sequence->data;
        pair = d2i_ASN1_SEQUENCE_ANY(NULL, &q, t->value.sequence->length);
        assert_non_null(pair);
        assert_int_equal(sk_ASN1_TYPE_num(pair), 2);
        assert_int_equal(sk_ASN1_TYPE_value(pair, 0)->type, V_ASN1_OBJECT);
        if (OBJ_cmp(sk_ASN1_TYPE_value(pair, 0)->value.object, want) == 0) {
            /* return a copy of the value (the caller frees it), free the pair */
            ASN1_TYPE *copy = ASN1_TYPE_new();
            ASN1_TYPE_set1(copy, sk_ASN1_TYPE_value(pair, 1)->type,
                           sk_ASN1_TYPE_value(pair, 1)->type == V_ASN1_OBJECT
                               ? (const void *)sk_ASN1_TYPE_value(pair, 1)->value.object
                               : (const void *)sk_ASN1_TYPE_value(pair, 1)->value.asn1_string);
            found = copy;
        }
        sk_ASN1_TYPE_pop_free(pair, ASN1_TYPE_free);
    }
    ASN1_OBJECT_free(want);
    assert_non_null(found);
    return found;
}

static void assert_octets(const ASN1_TYPE *t, const uint8_t *want, int len)
{
    assert_int_equal(t->type, V_ASN1_OCTET_STRING);
    assert_int_equal(t->value.octet_string->length, len);
    assert_memory_equal(t->value.octet_string->data, want, (size_t)len);
    ASN1_TYPE_free((ASN1_TYPE *)t);
}

static void test_pck_extension(void **state)
{
    struct fixture *f = *state;
    static const uint8_t cpu_svn[16] = {2, 2, 2, 2, 3, 1, 0, 5};
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    X509 *leaf = sk_X509_value(chain, 0);
    ASN1_OBJECT *oid = OBJ_txt2obj(SGX_EXT_OID, 1);
    int idx = X509_get_ext_by_OBJ(leaf, oid, -1);
    X509_EXTENSION *ext;
    ASN1_OCTET_STRING *val;
    const unsigned char *q;
    ASN1_SEQUENCE_ANY *seq, *tcb;
    const ASN1_TYPE *t;
    uint8_t fmspc[6], pce_id[2], ppid[16];
    char sub[64];

    assert_true(idx >= 0);
    assert_int_equal(X509_get_ext_by_OBJ(leaf, oid, idx), -1); /* exactly one */
    ext = X509_get_ext(leaf, idx);
    assert_int_equal(X509_EXTENSION_get_critical(ext), 0);
    val = X509_EXTENSION_get_data(ext);
    q = val->data;
    seq = d2i_ASN1_SEQUENCE_ANY(NULL, &q, val->length);
    assert_non_null(seq);
    assert_int_equal(sk_ASN1_TYPE_num(seq), 5);
    ds_sim_pki_platform(f->a, fmspc, pce_id, ppid);
    assert_memory_equal(fmspc, "\x00\x80\x6f\x05\x00\x00", 6);
    assert_octets(ext_find(seq, SGX_EXT_OID ".1"), ppid, 16);
    assert_octets(ext_find(seq, SGX_EXT_OID ".3"), pce_id, 2);
    assert_octets(ext_find(seq, SGX_EXT_OID ".4"), fmspc, 6);
    t = ext_find(seq, SGX_EXT_OID ".5");
    assert_int_equal(t->type, V_ASN1_ENUMERATED);
    assert_int_equal(ASN1_ENUMERATED_get(t->value.enumerated), 0);
    ASN1_TYPE_free((ASN1_TYPE *)t);
    t = ext_find(seq, SGX_EXT_OID ".2");
    assert_int_equal(t->type, V_ASN1_SEQUENCE);
    q = t->value.sequence->data;
    tcb = d2i_ASN1_SEQUENCE_ANY(NULL, &q, t->value.sequence->length);
    ASN1_TYPE_free((ASN1_TYPE *)t);
    assert_non_null(tcb);
    assert_int_equal(sk_ASN1_TYPE_num(tcb), 18);
    for (int i = 1; i <= 16; i++) {
        snprintf(sub, sizeof(sub), SGX_EXT_OID ".2.%d", i);
        t = ext_find(tcb, sub);
        assert_int_equal(t->type, V_ASN1_INTEGER);
        assert_int_equal(ASN1_INTEGER_get(t->value.integer), cpu_svn[i - 1]);
        ASN1_TYPE_free((ASN1_TYPE *)t);
    }
    t = ext_find(tcb, SGX_EXT_OID ".2.17");
    assert_int_equal(t->type, V_ASN1_INTEGER);
    assert_int_equal(ASN1_INTEGER_get(t->value.integer), 11);
    ASN1_TYPE_free((ASN1_TYPE *)t);
    assert_octets(ext_find(tcb, SGX_EXT_OID ".2.18"), cpu_svn, 16);

    sk_ASN1_TYPE_pop_free(tcb, ASN1_TYPE_free);
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    ASN1_OBJECT_free(oid);
    sk_X509_pop_free(chain, X509_free);
}

/* ---- quotes --------------------------------------------------------------------------------- */

static void check_quote(const struct fixture *f, uint16_t version)
{
    static const uint8_t vendor[16] = {0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9,
                                       0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07};
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    uint8_t rd[64], pck_pub[64], hash[32], mr_signer[32];
    struct ds_sim_td td;
    struct ds_sim_quote_opts opts = {.version = version};
    struct parsed p;
    uint8_t *q;
    size_t len;
    uint16_t v16;

    for (int i = 0; i < 64; i++) {
        rd[i] = (uint8_t)(0xa0 + i);
    }
    ds_sim_td_defaults(&td);
    for (int i = 0; i < 4; i++) {
        memset(td.rtmr[i], 0x30 + i, 48);
    }
    memset(td.mr_config_id, 0x55, 48);
    memset(td.mr_owner, 0x66, 48);
    memset(td.mr_owner_config, 0x77, 48);
    assert_int_equal(ds_sim_quote(f->a, &td, rd, &opts, &q, &len), 0);
    parse_quote(q, len, &p);

    assert_int_equal(p.version, version);
    assert_int_equal(p.ak_type, 2);
    assert_int_equal(p.tee_type, 0x81);
    assert_int_equal(p.qe_svn, 4);
    assert_int_equal(p.pce_svn, 11);
    assert_memory_equal(p.vendor, vendor, 16);
    assert_true(ds_is_zero(p.user_data + 16, 4));
    assert_false(ds_is_zero(p.user_data, 16));
    if (version == 5) {
        assert_int_equal(p.body_type, 2);
        assert_int_equal(p.body_size, DS_TD10_REPORT_SIZE);
        assert_int_equal(p.signed_len, V5_SIGNED_LEN);
    } else {
        assert_int_equal(p.signed_len, V4_SIGNED_LEN);
    }
    /* TD report 1.0 (spec §1.3) */
    assert_memory_equal(p.body + 0, td.tee_tcb_svn, 16);
    assert_memory_equal(p.body + 16, td.mr_seam, 48);
    assert_memory_equal(p.body + 64, td.mr_signer_seam, 48);
    assert_memory_equal(p.body + 112, td.seam_attributes, 8);
    assert_memory_equal(p.body + 120, "\x00\x00\x00\x10\x00\x00\x00\x00", 8);
    assert_memory_equal(p.body + 128, td.xfam, 8);
    assert_memory_equal(p.body + 136, td.mr_td, 48);
    assert_int_equal(p.body[136], 0x11);
    assert_memory_equal(p.body + 184, td.mr_config_id, 48);
    assert_memory_equal(p.body + 232, td.mr_owner, 48);
    assert_memory_equal(p.body + 280, td.mr_owner_config, 48);
    for (int i = 0; i < 4; i++) {
        assert_memory_equal(p.body + 328 + 48 * i, td.rtmr[i], 48);
    }
    assert_memory_equal(p.body + 520, rd, 64);
    if (version == 4) {
        assert_memory_equal(q + 568, rd, 64); /* where dstack patches v4 report_data */
    }
    /* quote signature by the attestation key over header+body */
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, p.ak, 64, q, p.signed_len, p.sig, 64), 0);
    /* certification data: type 6 around type 5 */
    assert_int_equal(p.outer_type, 6);
    assert_int_equal(p.inner_type, 5);
    assert_int_equal(p.qe_auth_len, 32);
    for (int i = 0; i < 32; i++) {
        assert_int_equal(p.qe_auth[i], i);
    }
    assert_int_equal(p.inner_len, strlen(ds_sim_pki_pck_chain_pem(f->a)) + 1);
    assert_memory_equal(p.pem, ds_sim_pki_pck_chain_pem(f->a), p.inner_len); /* incl. NUL */
    /* QE report: identity fields, binding, PCK signature */
    memset(mr_signer, 0x44, sizeof(mr_signer));
    assert_memory_equal(p.qe_report + 0, "\x02\x02\x02\x02\x03\x01\x00\x05", 8);
    assert_true(ds_is_zero(p.qe_report + 16, 4)); /* misc_select */
    assert_int_equal(p.qe_report[48] & 0x02, 0);  /* not debug */
    assert_memory_equal(p.qe_report + 128, mr_signer, 32);
    memcpy(&v16, p.qe_report + 256, 2);
    assert_int_equal(v16, 2);
    memcpy(&v16, p.qe_report + 258, 2);
    assert_int_equal(v16, 4);
    ds_sha256_v(hash, 2, p.ak, (size_t)64, p.qe_auth, (size_t)32);
    assert_memory_equal(p.qe_report + 320, hash, 32);
    assert_true(ds_is_zero(p.qe_report + 352, 32));
    cert_pub(sk_X509_value(chain, 0), pck_pub);
    assert_int_equal(
        ds_ecdsa_verify_raw(DS_EC_P256, pck_pub, 64, p.qe_report, DS_SGX_REPORT_SIZE, p.qe_sig, 64),
        0);
    /* altering one register byte breaks the quote signature */
    q[V4_SIGNED_LEN - 64 - 48 - 1] ^= 1;
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, p.ak, 64, q, p.signed_len, p.sig, 64),
                     -DS_E_SIGNATURE);
    free(q);
    sk_X509_pop_free(chain, X509_free);
}

static void test_quote_v4_layout(void **state)
{
    check_quote(*state, 4);
}

static void test_quote_v5_layout(void **state)
{
    check_quote(*state, 5);
}

static void test_quote_fresh_key_and_options(void **state)
{
    struct fixture *f = *state;
    uint8_t rd[64] = {0}, *q1, *q2, *q3;
    size_t l1, l2, l3;
    struct ds_sim_td td;
    struct ds_sim_quote_opts bad = {.version = 3};
    struct parsed p1, p2;

    make_quote(f->a, 4, rd, &q1, &l1);
    make_quote(f->a, 4, rd, &q2, &l2);
    parse_quote(q1, l1, &p1);
    parse_quote(q2, l2, &p2);
    assert_int_equal(l1, l2);
    assert_memory_equal(q1, q2, V4_SIGNED_LEN); /* same signed region */
    assert_memory_not_equal(p1.ak, p2.ak, 64);  /* a fresh attestation key per quote */
    assert_memory_not_equal(p1.qe_report, p2.qe_report, 384);
    /* NULL options mean v4 */
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q3, &l3), 0);
    assert_int_equal(q3[0], 4);
    assert_int_equal(l3, l1);
    /* a quote of seed b is not signed by seed a's PCK */
    {
        struct parsed pb;
        uint8_t *qb, pub_a[64];
        size_t lb;
        STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
        make_quote(f->b, 4, rd, &qb, &lb);
        parse_quote(qb, lb, &pb);
        cert_pub(sk_X509_value(chain, 0), pub_a);
        assert_int_equal(
            ds_ecdsa_verify_raw(DS_EC_P256, pub_a, 64, pb.qe_report, 384, pb.qe_sig, 64),
            -DS_E_SIGNATURE);
        assert_memory_not_equal(pb.user_data, p1.user_data, 16); /* QE ID per seed */
        free(qb);
        sk_X509_pop_free(chain, X509_free);
    }
    {
        uint8_t *none = NULL;
        size_t none_len = 0;
        assert_int_equal(ds_sim_quote(f->a, &td, rd, &bad, &none, &none_len), -DS_E_UNSUPPORTED);
        bad.version = 6;
        assert_int_equal(ds_sim_quote(f->a, &td, rd, &bad, &none, &none_len), -DS_E_UNSUPPORTED);
        assert_int_equal(ds_sim_quote(NULL, &td, rd, NULL, &none, &none_len), -EINVAL);
        assert_int_equal(ds_sim_quote(f->a, NULL, rd, NULL, &none, &none_len), -EINVAL);
        assert_null(none); /* out_* untouched on failure */
        assert_int_equal(none_len, 0);
    }
    free(q1);
    free(q2);
    free(q3);
}

/* Several threads quoting with one PKI (the daemon may do that): every quote is intact. */
#define THREADS           4
#define QUOTES_PER_THREAD 25

struct thread_arg {
    const struct ds_sim_pki *p;
    const uint8_t *pck_pub;
    int failures;
};

static void *quote_thread(void *opaque)
{
    struct thread_arg *a = opaque;
    struct ds_sim_td td;
    uint8_t rd[64] = {0}, *q;
    size_t len;
    struct ds_quote pq;

    ds_sim_td_defaults(&td);
    for (int i = 0; i < QUOTES_PER_THREAD; i++) {
        rd[0] = (uint8_t)i;
        if (ds_sim_quote(a->p, &td, rd, NULL, &q, &len) < 0) {
            a->failures++;
            continue;
        }
        if (ds_quote_parse(q, len, &pq) < 0 ||
            ds_ecdsa_verify_raw(DS_EC_P256, pq.attest_key, 64, pq.signed_data, pq.signed_len,
                                pq.signature, 64) < 0 ||
            ds_ecdsa_verify_raw(DS_EC_P256, a->pck_pub, 64, pq.qe_report_raw, DS_SGX_REPORT_SIZE,
                                pq.qe_report_signature, 64) < 0) {
            a->failures++;
        }
        free(q);
    }
    return NULL;
}

static void test_quote_threads(void **state)
{
    struct fixture *f = *state;
    STACK_OF(X509) *chain = pem_certs(ds_sim_pki_pck_chain_pem(f->a));
    pthread_t th[THREADS];
    struct thread_arg args[THREADS];
    uint8_t pck_pub[64];

    cert_pub(sk_X509_value(chain, 0), pck_pub);
    for (int i = 0; i < THREADS; i++) {
        args[i] = (struct thread_arg){.p = f->a, .pck_pub = pck_pub};
        assert_int_equal(pthread_create(&th[i], NULL, quote_thread, &args[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        assert_int_equal(args[i].failures, 0);
    }
    sk_X509_pop_free(chain, X509_free);
}

/* ---- collateral ----------------------------------------------------------------------------- */

static void check_signed_json(const char *chain_pem, const char *json, size_t json_len,
                              const uint8_t *sig, size_t sig_len)
{
    STACK_OF(X509) *chain = pem_certs(chain_pem);
    uint8_t pub[64];
    char *tampered;

    assert_int_equal(sig_len, 64);
    assert_int_equal(strlen(json), json_len);
    cert_pub(sk_X509_value(chain, 0), pub);
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, pub, 64, json, json_len, sig, 64), 0);
    tampered = strdup(json);
    tampered[json_len - 2] ^= 1;
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, pub, 64, tampered, json_len, sig, 64),
                     -DS_E_SIGNATURE);
    free(tampered);
    sk_X509_pop_free(chain, X509_free);
}

static void test_collateral(void **state)
{
    struct fixture *f = *state;
    struct ds_collateral *c = f->coll, *back = NULL, *late = NULL;
    json_error_t jerr;
    json_t *tcb, *qe, *level;
    char *text = NULL, err[128];

    assert_null(c->pck_certificate_chain);
    check_signed_json(c->tcb_info_issuer_chain, c->tcb_info, c->tcb_info_len, c->tcb_info_signature,
                      c->tcb_info_signature_len);
    check_signed_json(c->qe_identity_issuer_chain, c->qe_identity, c->qe_identity_len,
                      c->qe_identity_signature, c->qe_identity_signature_len);
    assert_non_null(strstr(c->pck_crl_issuer_chain, "BEGIN CERTIFICATE"));

    tcb = json_loadb(c->tcb_info, c->tcb_info_len, 0, &jerr);
    assert_non_null(tcb);
    assert_string_equal(json_string_value(json_object_get(tcb, "id")), "TDX");
    assert_int_equal(json_integer_value(json_object_get(tcb, "version")), 3);
    assert_string_equal(json_string_value(json_object_get(tcb, "issueDate")),
                        "2026-05-27T20:26:40Z");
    assert_string_equal(json_string_value(json_object_get(tcb, "nextUpdate")),
                        "2026-06-27T20:26:40Z");
    assert_string_equal(json_string_value(json_object_get(tcb, "fmspc")), "00806F050000");
    assert_string_equal(json_string_value(json_object_get(tcb, "pceId")), "0000");
    assert_int_equal(json_integer_value(json_object_get(tcb, "tcbType")), 0);
    assert_int_equal(json_array_size(json_object_get(tcb, "tcbLevels")), 2);
    level = json_array_get(json_object_get(tcb, "tcbLevels"), 0);
    assert_string_equal(json_string_value(json_object_get(level, "tcbStatus")), "UpToDate");
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(level, "tcb"), "sgxtcbcomponents")), 16);
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(level, "tcb"), "tdxtcbcomponents")), 16);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(level, "tcb"), "pcesvn")),
                     11);
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(tcb, "tdxModule"), "mrsigner")),
        "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
        "000000000");
    json_decref(tcb);

    qe = json_loadb(c->qe_identity, c->qe_identity_len, 0, &jerr);
    assert_non_null(qe);
    assert_string_equal(json_string_value(json_object_get(qe, "id")), "TD_QE");
    assert_int_equal(json_integer_value(json_object_get(qe, "version")), 2);
    assert_int_equal(json_integer_value(json_object_get(qe, "isvprodid")), 2);
    assert_string_equal(json_string_value(json_object_get(qe, "mrsigner")),
                        "4444444444444444444444444444444444444444444444444444444444444444");
    assert_string_equal(json_string_value(json_object_get(qe, "issueDate")),
                        "2026-05-27T20:26:40Z");
    json_decref(qe);

    /* the JSON form round-trips through the collateral module */
    assert_int_equal(ds_collateral_to_json(c, &text), 0);
    assert_int_equal(ds_collateral_from_json(text, strlen(text), &back, err, sizeof(err)), 0);
    assert_int_equal(back->tcb_info_len, c->tcb_info_len);
    assert_memory_equal(back->tcb_info, c->tcb_info, c->tcb_info_len);
    assert_int_equal(back->pck_crl_len, c->pck_crl_len);
    assert_memory_equal(back->pck_crl, c->pck_crl, c->pck_crl_len);
    free(text);
    ds_collateral_free(back);

    /* a different `now` moves the dates; bad times are rejected */
    assert_int_equal(ds_sim_collateral(f->a, NOW + 10 * DAY, &late), 0);
    assert_null(strstr(late->tcb_info, "2026-05-27T20:26:40Z"));
    assert_non_null(strstr(late->tcb_info, "\"issueDate\":\"2026-06-06T20:26:40Z\""));
    ds_collateral_free(late);
    assert_int_equal(ds_sim_collateral(f->a, -5, &late), -EINVAL);
    assert_int_equal(ds_sim_collateral(f->a, 300000000000LL, &late), -EINVAL);
    assert_int_equal(ds_sim_collateral(NULL, NOW, &late), -EINVAL);
}

/* ---- the library's own parser and verifier -------------------------------------------------- */

static void check_parsed(const struct fixture *f, uint16_t version)
{
    static const uint8_t vendor[16] = {0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9,
                                       0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07};
    struct ds_sim_td td;
    struct ds_sim_quote_opts opts = {.version = version};
    struct ds_quote pq;
    struct parsed p;
    uint8_t rd[64], mr_signer[32], hash[32];
    uint8_t *q;
    size_t len;

    for (int i = 0; i < 64; i++) {
        rd[i] = (uint8_t)(255 - i);
    }
    ds_sim_td_defaults(&td);
    memset(td.mr_config_id, 0x12, 48);
    memset(td.mr_owner, 0x34, 48);
    memset(td.mr_owner_config, 0x56, 48);
    memset(td.rtmr[3], 0x78, 48);
    td.seam_attributes[7] = 0;
    assert_int_equal(ds_sim_quote(f->a, &td, rd, &opts, &q, &len), 0);
    parse_quote(q, len, &p);
    assert_int_equal(ds_quote_parse(q, len, &pq), 0);
    assert_int_equal(pq.version, version);
    assert_int_equal(pq.ak_type, DS_AK_TYPE_ECDSA_P256);
    assert_int_equal(pq.tee_type, DS_TEE_TYPE_TDX);
    assert_int_equal(pq.qe_svn, 4);
    assert_int_equal(pq.pce_svn, 11);
    assert_memory_equal(pq.qe_vendor_id, vendor, 16);
    assert_memory_equal(pq.user_data, p.user_data, 20);
    assert_int_equal(pq.kind, DS_REPORT_TD10);
    assert_memory_equal(pq.td.tee_tcb_svn, td.tee_tcb_svn, 16);
    assert_memory_equal(pq.td.mr_seam, td.mr_seam, 48);
    assert_memory_equal(pq.td.mr_signer_seam, td.mr_signer_seam, 48);
    assert_memory_equal(pq.td.seam_attributes, td.seam_attributes, 8);
    assert_memory_equal(pq.td.td_attributes, td.td_attributes, 8);
    assert_memory_equal(pq.td.xfam, td.xfam, 8);
    assert_memory_equal(pq.td.mr_td, td.mr_td, 48);
    assert_memory_equal(pq.td.mr_config_id, td.mr_config_id, 48);
    assert_memory_equal(pq.td.mr_owner, td.mr_owner, 48);
    assert_memory_equal(pq.td.mr_owner_config, td.mr_owner_config, 48);
    assert_memory_equal(pq.td.rtmr, td.rtmr, sizeof(td.rtmr));
    assert_memory_equal(pq.td.report_data, rd, 64);
    assert_true(ds_is_zero(pq.td.tee_tcb_svn2, 16));
    assert_true(ds_is_zero(pq.td.mr_service_td, 48));
    assert_ptr_equal(ds_quote_report_data(&pq), pq.td.report_data);
    assert_ptr_equal(pq.signed_data, q);
    assert_int_equal(pq.signed_len, version == 5 ? V5_SIGNED_LEN : V4_SIGNED_LEN);
    assert_memory_equal(pq.signature, p.sig, 64);
    assert_memory_equal(pq.attest_key, p.ak, 64);
    assert_ptr_equal(pq.qe_report_raw, p.qe_report);
    memset(mr_signer, 0x44, sizeof(mr_signer));
    assert_memory_equal(pq.qe_report.cpu_svn, "\x02\x02\x02\x02\x03\x01\x00\x05", 8);
    assert_int_equal(pq.qe_report.misc_select, 0);
    assert_int_equal(pq.qe_report.attributes[0], 0x15);
    assert_int_equal(pq.qe_report.attributes[8], 0xe7);
    assert_memory_equal(pq.qe_report.mr_signer, mr_signer, 32);
    assert_int_equal(pq.qe_report.isv_prod_id, 2);
    assert_int_equal(pq.qe_report.isv_svn, 4);
    ds_sha256_v(hash, 2, pq.attest_key, (size_t)64, pq.qe_auth_data, pq.qe_auth_len);
    assert_memory_equal(pq.qe_report.report_data, hash, 32);
    assert_memory_equal(pq.qe_report_signature, p.qe_sig, 64);
    assert_int_equal(pq.qe_auth_len, 32);
    assert_ptr_equal(pq.qe_auth_data, p.qe_auth);
    assert_int_equal(pq.outer_cert_type, 6);
    assert_int_equal(pq.cert_type, 5);
    assert_int_equal(pq.cert_data_len, strlen(ds_sim_pki_pck_chain_pem(f->a)) + 1);
    assert_memory_equal(pq.cert_data, ds_sim_pki_pck_chain_pem(f->a), pq.cert_data_len);
    assert_int_equal(pq.trailing_len, 0);
    free(q);
}

static void test_ds_quote_parse(void **state)
{
    check_parsed(*state, 4);
    check_parsed(*state, 5);
}

static struct ds_verifier *mock_verifier(const struct ds_sim_pki *p)
{
    const uint8_t *der;
    size_t len;
    struct ds_verifier *v = NULL;
    ds_sim_pki_root_der(p, &der, &len);
    assert_int_equal(ds_verifier_new(der, len, &v), 0);
    assert_false(ds_verifier_is_intel_root(v));
    return v;
}

/* Verify and return the error; on failure check the step that failed. */
static int verify_step(struct ds_verifier *v, const uint8_t *q, size_t len,
                       const struct ds_collateral *c, int64_t at, enum ds_verify_step step,
                       enum ds_tcb_status *status)
{
    struct ds_verify_result res;
    int rc;
    memset(&res, 0, sizeof(res));
    rc = ds_verify_quote(v, q, len, c, at, &res);
    if (getenv("TEST_SIM_VERBOSE") != NULL) {
        fprintf(stderr, "verify: %d %s: %s\n", rc, ds_verify_step_name(res.failed_step),
                res.message);
    }
    if (rc == 0) {
        assert_true(res.ok);
        assert_int_equal(res.failed_step, DS_STEP_NONE);
        if (status != NULL) {
            *status = res.status;
        }
    } else {
        assert_false(res.ok);
        if (res.failed_step != step) {
            fail_msg("failed at step %s (%s), expected %s", ds_verify_step_name(res.failed_step),
                     res.message, ds_verify_step_name(step));
        }
    }
    ds_verify_result_done(&res);
    return rc;
}

static void test_verify_mock(void **state)
{
    struct fixture *f = *state;
    struct ds_verifier *v = mock_verifier(f->a);
    struct ds_verify_result res;
    uint8_t rd[64], fmspc[6], pce_id[2], ppid[16];
    uint8_t *q;
    size_t len;

    memset(rd, 0x42, sizeof(rd));
    for (uint16_t version = 4; version <= 5; version++) {
        make_quote(f->a, version, rd, &q, &len);
        memset(&res, 0, sizeof(res));
        assert_int_equal(ds_verify_quote(v, q, len, f->coll, NOW, &res), 0);
        assert_true(res.ok);
        assert_int_equal(res.status, DS_TCB_UP_TO_DATE);
        assert_int_equal(res.platform_status, DS_TCB_UP_TO_DATE);
        assert_int_equal(res.qe_status, DS_TCB_UP_TO_DATE);
        assert_int_equal(res.advisory_count, 0);
        ds_sim_pki_platform(f->a, fmspc, pce_id, ppid);
        assert_memory_equal(res.fmspc, fmspc, 6);
        assert_memory_equal(res.pce_id, pce_id, 2);
        assert_memory_equal(res.ppid, ppid, 16);
        assert_memory_equal(ds_quote_report_data(&res.quote), rd, 64);
        ds_verify_result_done(&res);
        free(q);
    }
    ds_verifier_free(v);
}

static void test_verify_rejects(void **state)
{
    struct fixture *f = *state;
    struct ds_verifier *v = mock_verifier(f->a), *intel = NULL, *other = mock_verifier(f->b);
    struct ds_collateral *coll_b = NULL;
    struct ds_sim_td td;
    enum ds_tcb_status status;
    uint8_t rd[64] = {1}, *q;
    size_t len;

    assert_int_equal(ds_verifier_new(NULL, 0, &intel), 0);
    assert_true(ds_verifier_is_intel_root(intel));
    make_quote(f->a, 4, rd, &q, &len);
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_NONE, NULL), 0);
    /* Intel's root and another seed's root do not anchor the mock PKI: the root CA CRL is not
     * Intel's; seed b's root has the same name but another key */
    assert_int_equal(verify_step(intel, q, len, f->coll, NOW, DS_STEP_ROOT_CA, NULL), -DS_E_CERT);
    assert_int_equal(verify_step(other, q, len, f->coll, NOW, DS_STEP_ROOT_CA, NULL),
                     -DS_E_SIGNATURE);
    /* seed b's complete collateral does not make seed a's quote verify under root b */
    assert_int_equal(ds_sim_collateral(f->b, NOW, &coll_b), 0);
    assert_int_equal(verify_step(other, q, len, coll_b, NOW, DS_STEP_PCK_CHAIN, NULL), -DS_E_CERT);
    /* collateral outside its window */
    assert_int_equal(verify_step(v, q, len, f->coll, NOW + 31 * DAY, DS_STEP_TCB_INFO, NULL),
                     -DS_E_EXPIRED);
    /* one register byte (RTMR3) or one report_data byte altered after signing */
    q[520] ^= 0x80;
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_QUOTE_SIGNATURE, NULL),
                     -DS_E_SIGNATURE);
    q[520] ^= 0x80;
    q[V4_SIGNED_LEN - 64] ^= 0x01;
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_QUOTE_SIGNATURE, NULL),
                     -DS_E_SIGNATURE);
    q[V4_SIGNED_LEN - 64] ^= 0x01;
    /* a QE report byte (isv_svn) altered: its PCK signature fails */
    q[V4_SIGNED_LEN + 4 + 128 + 6 + 258] ^= 0x01;
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_QE_REPORT_SIGNATURE, NULL),
                     -DS_E_SIGNATURE);
    free(q);

    /* TCB: an older module matches the OutOfDate level, a much older one no level */
    ds_sim_td_defaults(&td);
    td.tee_tcb_svn[0] = 4;
    assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q, &len), 0);
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_NONE, &status), 0);
    assert_int_equal(status, DS_TCB_OUT_OF_DATE);
    free(q);
    td.tee_tcb_svn[0] = 2;
    assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q, &len), 0);
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_PLATFORM_TCB, NULL),
                     -DS_E_POLICY);
    free(q);
    /* a debug TD */
    ds_sim_td_defaults(&td);
    td.td_attributes[0] = 1;
    assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q, &len), 0);
    assert_int_equal(verify_step(v, q, len, f->coll, NOW, DS_STEP_ATTRIBUTES, NULL), -DS_E_POLICY);
    free(q);

    ds_collateral_free(coll_b);
    ds_verifier_free(v);
    ds_verifier_free(other);
    ds_verifier_free(intel);
}

static void test_verify_revoked_pck(void **state)
{
    struct fixture *f = *state;
    struct ds_verifier *v = mock_verifier(f->a);
    struct ds_collateral *c = NULL;
    const uint64_t revoked[] = {ds_sim_pki_pck_serial(f->a)};
    uint8_t rd[64] = {2}, *q, *crl;
    size_t len, crl_len;

    assert_int_equal(ds_sim_collateral(f->a, NOW, &c), 0);
    assert_int_equal(
        ds_sim_pki_crl(f->a, DS_SIM_KEY_PCK_CA, revoked, 1, NOW - DAY, NOW + DAY, &crl, &crl_len),
        0);
    free(c->pck_crl);
    c->pck_crl = crl;
    c->pck_crl_len = crl_len;
    make_quote(f->a, 4, rd, &q, &len);
    assert_int_equal(verify_step(v, q, len, c, NOW, DS_STEP_PCK_CHAIN, NULL), -DS_E_CERT);
    free(q);
    ds_collateral_free(c);
    ds_verifier_free(v);
}

/* ---- dcap-qvl acceptance -------------------------------------------------------------------- */

struct qvl_dir {
    char dir[64];
    char quote[128], coll[128], root[128], root_b[128];
};

static void write_file(const char *path, const void *data, size_t len)
{
    FILE *fp = fopen(path, "wb");
    assert_non_null(fp);
    assert_int_equal(fwrite(data, 1, len, fp), len);
    assert_int_equal(fclose(fp), 0);
}

/* Run test_case.js verify; returns its exit status, output (stdout+stderr) in out. */
static int run_qvl(const char *script, const struct qvl_dir *d, const char *root, int64_t at,
                   char *out, size_t out_size)
{
    char cmd[1024];
    size_t n = 0;
    FILE *pp;
    int st;
    snprintf(cmd, sizeof(cmd), "node '%s' verify --time %lld '%s' '%s' %s%s%s 2>&1", script,
             (long long)at, d->quote, d->coll, root ? "'" : "", root ? root : "", root ? "'" : "");
    pp = popen(cmd, "r");
    assert_non_null(pp);
    while (n + 1 < out_size && fgets(out + n, (int)(out_size - n), pp) != NULL) {
        n += strlen(out + n);
    }
    out[n] = 0;
    st = pclose(pp);
    assert_true(WIFEXITED(st));
    return WEXITSTATUS(st);
}

static void test_dcap_qvl(void **state)
{
    struct fixture *f = *state;
    const char *src = getenv("DS_SRC");
    char script[512], out[4096];
    struct qvl_dir d;
    uint8_t rd[64], *q;
    size_t qlen;
    const uint8_t *der;
    size_t der_len;
    char *json = NULL;

    snprintf(script, sizeof(script), "%s/node_modules/@phala/dcap-qvl/test_case.js",
             src ? src : "..");
    if (system("command -v node >/dev/null 2>&1") != 0 || access(script, R_OK) != 0) {
        skip(); /* node or the dcap-qvl package is not installed */
    }
    snprintf(d.dir, sizeof(d.dir), "/tmp/test_sim.XXXXXX");
    assert_non_null(mkdtemp(d.dir));
    snprintf(d.quote, sizeof(d.quote), "%s/quote.bin", d.dir);
    snprintf(d.coll, sizeof(d.coll), "%s/collateral.json", d.dir);
    snprintf(d.root, sizeof(d.root), "%s/root.der", d.dir);
    snprintf(d.root_b, sizeof(d.root_b), "%s/root_b.der", d.dir);
    memset(rd, 0x5a, sizeof(rd));
    make_quote(f->a, 4, rd, &q, &qlen);
    write_file(d.quote, q, qlen);
    assert_int_equal(ds_collateral_to_json(f->coll, &json), 0);
    write_file(d.coll, json, strlen(json));
    free(json);
    ds_sim_pki_root_der(f->a, &der, &der_len);
    write_file(d.root, der, der_len);
    ds_sim_pki_root_der(f->b, &der, &der_len);
    write_file(d.root_b, der, der_len);

    /* accepted with the mock root */
    assert_int_equal(run_qvl(script, &d, d.root, NOW, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "Status: UpToDate"));
    /* rejected with Intel's root, and with another seed's root */
    assert_int_equal(run_qvl(script, &d, NULL, NOW, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "Verification failed"));
    assert_int_equal(run_qvl(script, &d, d.root_b, NOW, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "Verification failed"));
    /* rejected after the collateral's nextUpdate */
    assert_int_equal(run_qvl(script, &d, d.root, NOW + 31 * DAY, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "TCBInfo expired"));
    /* rejected when one report_data byte is altered after signing */
    q[V4_SIGNED_LEN - 1] ^= 0x01;
    write_file(d.quote, q, qlen);
    assert_int_equal(run_qvl(script, &d, d.root, NOW, out, sizeof(out)), 1);
    assert_non_null(strstr(out, "ISV enclave report signature is invalid"));
    free(q);
    /* a v5 quote passes too */
    make_quote(f->a, 5, rd, &q, &qlen);
    write_file(d.quote, q, qlen);
    assert_int_equal(run_qvl(script, &d, d.root, NOW, out, sizeof(out)), 0);
    assert_non_null(strstr(out, "Status: UpToDate"));
    free(q);
    /* an older TDX module TCB matches the published OutOfDate level */
    {
        struct ds_sim_td td;
        ds_sim_td_defaults(&td);
        td.tee_tcb_svn[0] = 4;
        assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q, &qlen), 0);
        write_file(d.quote, q, qlen);
        assert_int_equal(run_qvl(script, &d, d.root, NOW, out, sizeof(out)), 0);
        assert_non_null(strstr(out, "Status: OutOfDate"));
        free(q);
        /* below every level: no match */
        td.tee_tcb_svn[0] = 2;
        assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q, &qlen), 0);
        write_file(d.quote, q, qlen);
        assert_int_equal(run_qvl(script, &d, d.root, NOW, out, sizeof(out)), 1);
        assert_non_null(strstr(out, "No matching TCB level found"));
        free(q);
        /* a debug TD is refused */
        ds_sim_td_defaults(&td);
        td.td_attributes[0] = 1;
        assert_int_equal(ds_sim_quote(f->a, &td, rd, NULL, &q, &qlen), 0);
        write_file(d.quote, q, qlen);
        assert_int_equal(run_qvl(script, &d, d.root, NOW, out, sizeof(out)), 1);
        assert_non_null(strstr(out, "Debug mode is enabled"));
        free(q);
    }

    unlink(d.quote);
    unlink(d.coll);
    unlink(d.root);
    unlink(d.root_b);
    rmdir(d.dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pki_deterministic),
        cmocka_unit_test(test_pki_key_derivation),
        cmocka_unit_test(test_pki_seeds_differ),
        cmocka_unit_test(test_pki_certificates),
        cmocka_unit_test(test_pki_chains_verify),
        cmocka_unit_test(test_pki_custom_crl),
        cmocka_unit_test(test_pck_extension),
        cmocka_unit_test(test_quote_v4_layout),
        cmocka_unit_test(test_quote_v5_layout),
        cmocka_unit_test(test_quote_fresh_key_and_options),
        cmocka_unit_test(test_quote_threads),
        cmocka_unit_test(test_collateral),
        cmocka_unit_test(test_ds_quote_parse),
        cmocka_unit_test(test_verify_mock),
        cmocka_unit_test(test_verify_rejects),
        cmocka_unit_test(test_verify_revoked_pck),
        cmocka_unit_test(test_dcap_qvl),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
