/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated TDX module's mock Intel PKI (spec: ../shared/spec/attestation.md §6.3).
 *
 * Every P-256 key is derived from the 32-byte seed: scalar = SHA-256("dstack-mock-p256-v1" ||
 * seed || label || be32(counter)), counter 0, 1, ... until the scalar is in [1, n-1]; labels
 * tdx-root, tdx-pck-ca, tdx-pck, tdx-tcb. The certificates ("Mock Intel SGX Root CA" -> "Mock
 * Intel SGX PCK Platform CA" -> "Mock Intel SGX PCK Certificate" with the Intel SGX extension;
 * "Mock Intel SGX TCB Signing" under the root) and the two empty CRLs are built with OpenSSL's
 * X509 API. OpenSSL 3.0 has no deterministic ECDSA, so every signature made with a mock key uses
 * a nonce derived from the key and the digest (k = HMAC-SHA256(d, digest || be32(i)), first i
 * with k in [1, n-1]) and is computed here with BIGNUM/EC_POINT arithmetic; the certificate and
 * CRL signatures are then swapped into the X509 objects. Same seed -> byte-identical DER.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/hmac.h>
#include <openssl/obj_mac.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "dstack/crypto.h"
#include "tee/sim_internal.h"

#define SIM_KEY_DOMAIN      "dstack-mock-p256-v1"
#define SIM_MAX_KEY_TRIES   64 /* a P-256 scalar is out of range with probability ~2^-32 */
#define SIM_MAX_NONCE_TRIES 64 /* likewise for nonces */
#define SIM_NOT_BEFORE      1577836800LL /* 2020-01-01T00:00:00Z */
#define SIM_NOT_AFTER       4102444800LL /* 2100-01-01T00:00:00Z */
#define SIM_PEM_MAX         (64 * 1024)
#define SIM_CRL_MAX_REVOKED 100000

#define SGX_EXT_OID "1.2.840.113741.1.13.1"

/* One row per certificate; built in enum order so every issuer exists before its subjects. */
struct sim_cert_spec {
    const char *label;
    const char *cn;
    const char *basic_constraints;
    const char *key_usage;
    enum ds_sim_key issuer;
    bool sgx_extension;
};

static const struct sim_cert_spec sim_certs[SIM_KEY_COUNT] = {
    [DS_SIM_KEY_ROOT] = {"tdx-root", "Mock Intel SGX Root CA", "critical,CA:TRUE,pathlen:1",
                         "critical,keyCertSign,cRLSign", DS_SIM_KEY_ROOT, false},
    [DS_SIM_KEY_PCK_CA] = {"tdx-pck-ca", "Mock Intel SGX PCK Platform CA",
                           "critical,CA:TRUE,pathlen:0", "critical,keyCertSign,cRLSign",
                           DS_SIM_KEY_ROOT, false},
    [DS_SIM_KEY_PCK] = {"tdx-pck", "Mock Intel SGX PCK Certificate", "critical,CA:FALSE",
                        "critical,digitalSignature,nonRepudiation", DS_SIM_KEY_PCK_CA, true},
    [DS_SIM_KEY_TCB] = {"tdx-tcb", "Mock Intel SGX TCB Signing", "critical,CA:FALSE",
                        "critical,digitalSignature,nonRepudiation", DS_SIM_KEY_ROOT, false},
};

/* ---- keys and deterministic ECDSA ----------------------------------------------------------- */

static int sim_derive_key(struct ds_sim_pki *p, const uint8_t seed[DS_SIM_SEED_LEN],
                          enum ds_sim_key key)
{
    const char *label = sim_certs[key].label;
    const BIGNUM *order = EC_GROUP_get0_order(p->group);
    BIGNUM *d = BN_secure_new();
    uint8_t scalar[SIM_SCALAR_LEN];
    int rc = -DS_E_CRYPTO;

    if (d == NULL) {
        return -ENOMEM;
    }
    for (uint32_t counter = 0; counter < SIM_MAX_KEY_TRIES; counter++) {
        uint8_t ctr_be[4] = {(uint8_t)(counter >> 24), (uint8_t)(counter >> 16),
                             (uint8_t)(counter >> 8), (uint8_t)counter};
        ds_sha256_v(scalar, 4, SIM_KEY_DOMAIN, strlen(SIM_KEY_DOMAIN), seed,
                    (size_t)DS_SIM_SEED_LEN, label, strlen(label), ctr_be, sizeof(ctr_be));
        if (BN_bin2bn(scalar, sizeof(scalar), d) == NULL) {
            goto out;
        }
        if (!BN_is_zero(d) && BN_cmp(d, order) < 0) {
            BN_set_flags(d, BN_FLG_CONSTTIME);
            memcpy(p->priv_raw[key], scalar, sizeof(scalar));
            p->priv[key] = d;
            d = NULL;
            rc = 0;
            break;
        }
    }
out:
    ds_wipe(scalar, sizeof(scalar));
    BN_clear_free(d);
    return rc;
}

static int sim_make_pkey(struct ds_sim_pki *p, enum ds_sim_key key)
{
    uint8_t pub[65];
    EC_POINT *pt = EC_POINT_new(p->group);
    OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *pctx = NULL;
    EVP_PKEY *pkey = NULL;
    int rc = -DS_E_CRYPTO;

    if (pt == NULL || bld == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    if (EC_POINT_mul(p->group, pt, p->priv[key], NULL, NULL, NULL) != 1 ||
        EC_POINT_point2oct(p->group, pt, POINT_CONVERSION_UNCOMPRESSED, pub, sizeof(pub), NULL) !=
            sizeof(pub)) {
        goto out;
    }
    if (OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, SN_X9_62_prime256v1, 0) !=
            1 ||
        OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, p->priv[key]) != 1 ||
        OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pub, sizeof(pub)) != 1) {
        goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    pctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (params == NULL || pctx == NULL || EVP_PKEY_fromdata_init(pctx) != 1 ||
        EVP_PKEY_fromdata(pctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1) {
        goto out;
    }
    p->pkey[key] = pkey;
    rc = 0;
out:
    EVP_PKEY_CTX_free(pctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    EC_POINT_free(pt);
    return rc;
}

/* ECDSA-P256 over a SHA-256 digest with a nonce derived from (key, digest): r||s. */
static int sim_sign_digest(const struct ds_sim_pki *p, enum ds_sim_key key,
                           const uint8_t digest[DS_SHA256_LEN], uint8_t sig[64])
{
    const BIGNUM *order = EC_GROUP_get0_order(p->group);
    BN_CTX *ctx = BN_CTX_secure_new();
    EC_POINT *pt = EC_POINT_new(p->group);
    BIGNUM *k, *kinv, *x, *r, *s, *z;
    uint8_t kbuf[EVP_MAX_MD_SIZE];
    uint8_t msg[DS_SHA256_LEN + 4];
    int rc = -DS_E_CRYPTO;

    if (ctx == NULL || pt == NULL) {
        EC_POINT_free(pt);
        BN_CTX_free(ctx);
        return -ENOMEM;
    }
    BN_CTX_start(ctx);
    k = BN_CTX_get(ctx);
    kinv = BN_CTX_get(ctx);
    x = BN_CTX_get(ctx);
    r = BN_CTX_get(ctx);
    s = BN_CTX_get(ctx);
    z = BN_CTX_get(ctx);
    if (z == NULL || BN_bin2bn(digest, DS_SHA256_LEN, z) == NULL) {
        goto out;
    }
    BN_set_flags(k, BN_FLG_CONSTTIME);
    memcpy(msg, digest, DS_SHA256_LEN);
    for (uint32_t i = 0; i < SIM_MAX_NONCE_TRIES; i++) {
        unsigned int klen = 0;
        msg[DS_SHA256_LEN] = (uint8_t)(i >> 24);
        msg[DS_SHA256_LEN + 1] = (uint8_t)(i >> 16);
        msg[DS_SHA256_LEN + 2] = (uint8_t)(i >> 8);
        msg[DS_SHA256_LEN + 3] = (uint8_t)i;
        if (HMAC(EVP_sha256(), p->priv_raw[key], SIM_SCALAR_LEN, msg, sizeof(msg), kbuf, &klen) ==
                NULL ||
            klen != DS_SHA256_LEN || BN_bin2bn(kbuf, DS_SHA256_LEN, k) == NULL) {
            goto out;
        }
        if (BN_is_zero(k) || BN_cmp(k, order) >= 0) {
            continue;
        }
        /* r = x(kG) mod n; s = k^-1 (z + r d) mod n */
        if (EC_POINT_mul(p->group, pt, k, NULL, NULL, ctx) != 1 ||
            EC_POINT_get_affine_coordinates(p->group, pt, x, NULL, ctx) != 1 ||
            BN_nnmod(r, x, order, ctx) != 1) {
            goto out;
        }
        if (BN_is_zero(r)) {
            continue;
        }
        if (BN_mod_inverse(kinv, k, order, ctx) == NULL ||
            BN_mod_mul(s, r, p->priv[key], order, ctx) != 1 ||
            BN_mod_add(s, s, z, order, ctx) != 1 || BN_mod_mul(s, s, kinv, order, ctx) != 1) {
            goto out;
        }
        if (BN_is_zero(s)) {
            continue;
        }
        if (BN_bn2binpad(r, sig, 32) != 32 || BN_bn2binpad(s, sig + 32, 32) != 32) {
            goto out;
        }
        rc = 0;
        break;
    }
out:
    ds_wipe(kbuf, sizeof(kbuf));
    BN_CTX_end(ctx);
    EC_POINT_free(pt);
    BN_CTX_free(ctx);
    return rc;
}

int ds_sim_pki_sign(const struct ds_sim_pki *p, enum ds_sim_key key, const void *msg, size_t len,
                    uint8_t sig[64])
{
    uint8_t digest[DS_SHA256_LEN];

    if (p == NULL || (int)key < 0 || (int)key >= SIM_KEY_COUNT || (msg == NULL && len > 0)) {
        return -EINVAL;
    }
    ds_sha256(msg, len, digest);
    return sim_sign_digest(p, key, digest, sig);
}

/* Raw r||s -> DER ECDSA-Sig-Value (OpenSSL-allocated). */
static int sim_sig_to_der(const uint8_t raw[64], unsigned char **out, int *out_len)
{
    ECDSA_SIG *es = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(raw, 32, NULL);
    BIGNUM *s = BN_bin2bn(raw + 32, 32, NULL);
    unsigned char *der = NULL;
    int len, rc = -DS_E_CRYPTO;

    if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1) {
        BN_free(r);
        BN_free(s);
        goto out;
    }
    len = i2d_ECDSA_SIG(es, &der);
    if (len <= 0) {
        goto out;
    }
    *out = der;
    *out_len = len;
    rc = 0;
out:
    ECDSA_SIG_free(es);
    return rc;
}

/*
 * Replace the signature in an already (randomly) signed object's BIT STRING with the
 * deterministic one over tbs. OpenSSL 3.0 has no setter for an X509/X509_CRL signature, but the
 * getter returns the object's own BIT STRING; the caller re-encodes and re-parses the object
 * afterwards so no cached hash or encoding can go stale.
 */
static int sim_swap_signature(const struct ds_sim_pki *p, enum ds_sim_key issuer,
                              const unsigned char *tbs, int tbs_len, const ASN1_BIT_STRING *csig)
{
    ASN1_BIT_STRING *sig = (ASN1_BIT_STRING *)csig;
    uint8_t digest[DS_SHA256_LEN], raw[64];
    unsigned char *der = NULL;
    int der_len = 0;

    ds_sha256(tbs, (size_t)tbs_len, digest);
    DS_TRY(sim_sign_digest(p, issuer, digest, raw));
    DS_TRY(sim_sig_to_der(raw, &der, &der_len));
    if (ASN1_BIT_STRING_set(sig, der, der_len) != 1) {
        OPENSSL_free(der);
        return -DS_E_CRYPTO;
    }
    OPENSSL_free(der);
    sig->flags &= ~(ASN1_STRING_FLAG_BITS_LEFT | 0x07);
    sig->flags |= ASN1_STRING_FLAG_BITS_LEFT;
    return 0;
}

/* ---- the Intel SGX extension (spec §2.4) ---------------------------------------------------- */

/* Wrap value in an ASN1_TYPE, taking ownership (freed on failure). */
static ASN1_TYPE *sim_type_take(int type, void *value)
{
    ASN1_TYPE *t;

    if (value == NULL) {
        return NULL;
    }
    t = ASN1_TYPE_new();
    if (t == NULL) {
        if (type == V_ASN1_OBJECT) {
            ASN1_OBJECT_free(value);
        } else {
            ASN1_STRING_free(value);
        }
        return NULL;
    }
    ASN1_TYPE_set(t, type, value);
    return t;
}

static ASN1_TYPE *sim_type_octets(const uint8_t *b, int n)
{
    ASN1_OCTET_STRING *s = ASN1_OCTET_STRING_new();

    if (s != NULL && ASN1_OCTET_STRING_set(s, b, n) != 1) {
        ASN1_OCTET_STRING_free(s);
        s = NULL;
    }
    return sim_type_take(V_ASN1_OCTET_STRING, s);
}

static ASN1_TYPE *sim_type_integer(long v)
{
    ASN1_INTEGER *i = ASN1_INTEGER_new();

    if (i != NULL && ASN1_INTEGER_set(i, v) != 1) {
        ASN1_INTEGER_free(i);
        i = NULL;
    }
    return sim_type_take(V_ASN1_INTEGER, i);
}

static ASN1_TYPE *sim_type_enumerated(long v)
{
    ASN1_ENUMERATED *e = ASN1_ENUMERATED_new();

    if (e != NULL && ASN1_ENUMERATED_set(e, v) != 1) {
        ASN1_ENUMERATED_free(e);
        e = NULL;
    }
    return sim_type_take(V_ASN1_ENUMERATED, e);
}

/* An ASN1_TYPE holding the DER of a SEQUENCE OF ANY (encoded as-is by i2d). */
static ASN1_TYPE *sim_type_sequence(const ASN1_SEQUENCE_ANY *items)
{
    unsigned char *der = NULL;
    int len = i2d_ASN1_SEQUENCE_ANY(items, &der);
    ASN1_STRING *s = NULL;

    if (len > 0) {
        s = ASN1_STRING_type_new(V_ASN1_SEQUENCE);
        if (s != NULL && ASN1_STRING_set(s, der, len) != 1) {
            ASN1_STRING_free(s);
            s = NULL;
        }
    }
    OPENSSL_free(der);
    return sim_type_take(V_ASN1_SEQUENCE, s);
}

/* Append t (consumed) to seq. */
static int sim_push(ASN1_SEQUENCE_ANY *seq, ASN1_TYPE *t)
{
    if (t == NULL) {
        return -DS_E_CRYPTO;
    }
    if (sk_ASN1_TYPE_push(seq, t) <= 0) {
        ASN1_TYPE_free(t);
        return -ENOMEM;
    }
    return 0;
}

/* SEQUENCE { OID oid, value } with value consumed. */
static ASN1_TYPE *sim_pair(const char *oid, ASN1_TYPE *value)
{
    ASN1_SEQUENCE_ANY *seq = sk_ASN1_TYPE_new_null();
    ASN1_TYPE *t = NULL;

    if (seq == NULL) {
        ASN1_TYPE_free(value);
        return NULL;
    }
    if (sim_push(seq, sim_type_take(V_ASN1_OBJECT, OBJ_txt2obj(oid, 1))) < 0) {
        ASN1_TYPE_free(value);
        goto out;
    }
    if (sim_push(seq, value) < 0) {
        goto out;
    }
    t = sim_type_sequence(seq);
out:
    sk_ASN1_TYPE_pop_free(seq, ASN1_TYPE_free);
    return t;
}

static ASN1_TYPE *sim_tcb_sequence(void)
{
    static const uint8_t cpu_svn[16] = SIM_CPU_SVN;
    ASN1_SEQUENCE_ANY *tcb = sk_ASN1_TYPE_new_null();
    ASN1_TYPE *t = NULL;
    char oid[64];

    if (tcb == NULL) {
        return NULL;
    }
    for (int i = 0; i < 16; i++) {
        snprintf(oid, sizeof(oid), SGX_EXT_OID ".2.%d", i + 1);
        if (sim_push(tcb, sim_pair(oid, sim_type_integer(cpu_svn[i]))) < 0) {
            goto out;
        }
    }
    if (sim_push(tcb, sim_pair(SGX_EXT_OID ".2.17", sim_type_integer(SIM_PCE_SVN))) < 0 ||
        sim_push(tcb, sim_pair(SGX_EXT_OID ".2.18", sim_type_octets(cpu_svn, 16))) < 0) {
        goto out;
    }
    t = sim_type_sequence(tcb);
out:
    sk_ASN1_TYPE_pop_free(tcb, ASN1_TYPE_free);
    return t;
}

static int sim_add_sgx_extension(const struct ds_sim_pki *p, X509 *x)
{
    static const uint8_t fmspc[6] = SIM_FMSPC;
    static const uint8_t pce_id[2] = SIM_PCE_ID;
    ASN1_SEQUENCE_ANY *ext = sk_ASN1_TYPE_new_null();
    ASN1_OCTET_STRING *value = NULL;
    ASN1_OBJECT *oid = NULL;
    X509_EXTENSION *xe = NULL;
    unsigned char *der = NULL;
    int len, rc = -DS_E_CRYPTO;

    if (ext == NULL) {
        return -ENOMEM;
    }
    if (sim_push(ext, sim_pair(SGX_EXT_OID ".1", sim_type_octets(p->ppid, 16))) < 0 ||
        sim_push(ext, sim_pair(SGX_EXT_OID ".2", sim_tcb_sequence())) < 0 ||
        sim_push(ext, sim_pair(SGX_EXT_OID ".3", sim_type_octets(pce_id, 2))) < 0 ||
        sim_push(ext, sim_pair(SGX_EXT_OID ".4", sim_type_octets(fmspc, 6))) < 0 ||
        sim_push(ext, sim_pair(SGX_EXT_OID ".5", sim_type_enumerated(0))) < 0) {
        goto out;
    }
    len = i2d_ASN1_SEQUENCE_ANY(ext, &der);
    value = ASN1_OCTET_STRING_new();
    oid = OBJ_txt2obj(SGX_EXT_OID, 1);
    if (len <= 0 || value == NULL || oid == NULL || ASN1_OCTET_STRING_set(value, der, len) != 1) {
        goto out;
    }
    xe = X509_EXTENSION_create_by_OBJ(NULL, oid, 0, value);
    if (xe == NULL || X509_add_ext(x, xe, -1) != 1) {
        goto out;
    }
    rc = 0;
out:
    X509_EXTENSION_free(xe);
    ASN1_OBJECT_free(oid);
    ASN1_OCTET_STRING_free(value);
    OPENSSL_free(der);
    sk_ASN1_TYPE_pop_free(ext, ASN1_TYPE_free);
    return rc;
}

/* ---- certificates --------------------------------------------------------------------------- */

static X509_NAME *sim_name(const char *cn)
{
    static const char *const fields[][2] = {
        {"CN", NULL}, {"O", "Intel Corporation"}, {"L", "Santa Clara"}, {"ST", "CA"}, {"C", "US"},
    };
    X509_NAME *n = X509_NAME_new();

    for (size_t i = 0; n != NULL && i < DS_ARRAY_SIZE(fields); i++) {
        const char *v = fields[i][1] != NULL ? fields[i][1] : cn;
        if (X509_NAME_add_entry_by_txt(n, fields[i][0], MBSTRING_UTF8, (const unsigned char *)v, -1,
                                       -1, 0) != 1) {
            X509_NAME_free(n);
            n = NULL;
        }
    }
    return n;
}

static int sim_add_ext(X509V3_CTX *ctx, X509 *x, int nid, const char *value)
{
    X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    int ok;

    if (e == NULL) {
        return -DS_E_CRYPTO;
    }
    ok = X509_add_ext(x, e, -1);
    X509_EXTENSION_free(e);
    return ok == 1 ? 0 : -DS_E_CRYPTO;
}

static int sim_set_time(ASN1_TIME *t, int64_t when)
{
    return ASN1_TIME_set(t, (time_t)when) != NULL ? 0 : -DS_E_CRYPTO;
}

/* Re-encode and re-parse so the returned object has fresh caches; *x is replaced. */
static int sim_x509_reparse(X509 **x)
{
    unsigned char *der = NULL;
    const unsigned char *q;
    int len = i2d_X509(*x, &der);
    X509 *fresh;

    if (len <= 0) {
        return -DS_E_CRYPTO;
    }
    q = der;
    fresh = d2i_X509(NULL, &q, len);
    OPENSSL_free(der);
    if (fresh == NULL) {
        return -DS_E_CRYPTO;
    }
    X509_free(*x);
    *x = fresh;
    return 0;
}

static int sim_make_cert(struct ds_sim_pki *p, enum ds_sim_key key)
{
    const struct sim_cert_spec *spec = &sim_certs[key];
    X509 *x = X509_new();
    X509 *issuer_cert;
    X509_NAME *name = sim_name(spec->cn);
    X509V3_CTX ctx;
    unsigned char *tbs = NULL;
    const ASN1_BIT_STRING *sig;
    int tbs_len, rc = -DS_E_CRYPTO;

    if (x == NULL || name == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    issuer_cert = key == spec->issuer ? x : p->cert[spec->issuer];
    if (X509_set_version(x, X509_VERSION_3) != 1 ||
        ASN1_INTEGER_set_uint64(X509_get_serialNumber(x), p->serial[key]) != 1 ||
        X509_set_subject_name(x, name) != 1 ||
        X509_set_issuer_name(x, X509_get_subject_name(issuer_cert)) != 1 ||
        X509_set_pubkey(x, p->pkey[key]) != 1) {
        goto out;
    }
    if ((rc = sim_set_time(X509_getm_notBefore(x), SIM_NOT_BEFORE)) < 0 ||
        (rc = sim_set_time(X509_getm_notAfter(x), SIM_NOT_AFTER)) < 0) {
        goto out;
    }
    X509V3_set_ctx(&ctx, issuer_cert, x, NULL, NULL, 0);
    if ((rc = sim_add_ext(&ctx, x, NID_subject_key_identifier, "hash")) < 0 ||
        (rc = sim_add_ext(&ctx, x, NID_authority_key_identifier, "keyid:always")) < 0 ||
        (rc = sim_add_ext(&ctx, x, NID_basic_constraints, spec->basic_constraints)) < 0 ||
        (rc = sim_add_ext(&ctx, x, NID_key_usage, spec->key_usage)) < 0) {
        goto out;
    }
    if (spec->sgx_extension && (rc = sim_add_sgx_extension(p, x)) < 0) {
        goto out;
    }
    rc = -DS_E_CRYPTO;
    /* X509_sign fills both AlgorithmIdentifiers; its random signature is then replaced. */
    if (X509_sign(x, p->pkey[spec->issuer], EVP_sha256()) <= 0) {
        goto out;
    }
    tbs_len = i2d_re_X509_tbs(x, &tbs);
    if (tbs_len <= 0) {
        goto out;
    }
    X509_get0_signature(&sig, NULL, x);
    if ((rc = sim_swap_signature(p, spec->issuer, tbs, tbs_len, sig)) < 0 ||
        (rc = sim_x509_reparse(&x)) < 0) {
        goto out;
    }
    if (X509_verify(x, p->pkey[spec->issuer]) != 1) {
        rc = -DS_E_CRYPTO;
        goto out;
    }
    p->cert[key] = x;
    x = NULL;
    rc = 0;
out:
    OPENSSL_free(tbs);
    X509_NAME_free(name);
    X509_free(x);
    return rc;
}

static int sim_append_pem(struct ds_buf *b, X509 *x)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *data;
    long len;
    int rc = -DS_E_CRYPTO;

    if (bio == NULL) {
        return -ENOMEM;
    }
    if (PEM_write_bio_X509(bio, x) == 1) {
        len = BIO_get_mem_data(bio, &data);
        rc = len > 0 ? ds_buf_append(b, data, (size_t)len) : -DS_E_CRYPTO;
    }
    BIO_free(bio);
    return rc;
}

/* A malloc'd PEM chain of the given certificates in order. */
static int sim_chain_pem(const struct ds_sim_pki *p, const enum ds_sim_key *keys, size_t count,
                         char **out)
{
    struct ds_buf b;
    uint8_t *data;
    size_t len;

    ds_buf_init(&b, SIM_PEM_MAX);
    for (size_t i = 0; i < count; i++) {
        int rc = sim_append_pem(&b, p->cert[keys[i]]);
        if (rc < 0) {
            ds_buf_done(&b);
            return rc;
        }
    }
    ds_buf_steal(&b, &data, &len);
    ds_buf_done(&b);
    if (data == NULL) {
        return -ENOMEM;
    }
    *out = (char *)data;
    return 0;
}

/* ---- CRLs ----------------------------------------------------------------------------------- */

static int sim_crl_add_revoked(X509_CRL *crl, uint64_t serial, int64_t when)
{
    X509_REVOKED *rev = X509_REVOKED_new();
    ASN1_INTEGER *sn = ASN1_INTEGER_new();
    ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)when);
    int rc = -DS_E_CRYPTO;

    if (rev == NULL || sn == NULL || t == NULL || ASN1_INTEGER_set_uint64(sn, serial) != 1 ||
        X509_REVOKED_set_serialNumber(rev, sn) != 1 ||
        X509_REVOKED_set_revocationDate(rev, t) != 1 || X509_CRL_add0_revoked(crl, rev) != 1) {
        goto out;
    }
    rev = NULL;
    rc = 0;
out:
    ASN1_TIME_free(t);
    ASN1_INTEGER_free(sn);
    X509_REVOKED_free(rev);
    return rc;
}

int ds_sim_pki_crl(const struct ds_sim_pki *p, enum ds_sim_key issuer,
                   const uint64_t *revoked_serials, size_t count, int64_t this_update,
                   int64_t next_update, uint8_t **out_der, size_t *out_len)
{
    X509_CRL *crl = NULL;
    X509 *issuer_cert;
    X509V3_CTX ctx;
    ASN1_TIME *t_this = NULL, *t_next = NULL;
    ASN1_INTEGER *number = NULL;
    X509_EXTENSION *aki = NULL;
    unsigned char *tbs = NULL, *der = NULL, *w;
    const ASN1_BIT_STRING *sig;
    int tbs_len, der_len, rc = -EINVAL;

    if (p == NULL || out_der == NULL || out_len == NULL ||
        (issuer != DS_SIM_KEY_ROOT && issuer != DS_SIM_KEY_PCK_CA) ||
        (count > 0 && revoked_serials == NULL) || next_update < this_update) {
        return -EINVAL;
    }
    if (count > SIM_CRL_MAX_REVOKED) {
        return -DS_E_LIMIT;
    }
    rc = -DS_E_CRYPTO;
    issuer_cert = p->cert[issuer];
    crl = X509_CRL_new();
    t_this = ASN1_TIME_set(NULL, (time_t)this_update);
    t_next = ASN1_TIME_set(NULL, (time_t)next_update);
    number = ASN1_INTEGER_new();
    if (crl == NULL || t_this == NULL || t_next == NULL || number == NULL) {
        goto out;
    }
    if (X509_CRL_set_version(crl, X509_CRL_VERSION_2) != 1 ||
        X509_CRL_set_issuer_name(crl, X509_get_subject_name(issuer_cert)) != 1 ||
        X509_CRL_set1_lastUpdate(crl, t_this) != 1 || X509_CRL_set1_nextUpdate(crl, t_next) != 1) {
        goto out;
    }
    for (size_t i = 0; i < count; i++) {
        if ((rc = sim_crl_add_revoked(crl, revoked_serials[i], this_update)) < 0) {
            goto out;
        }
    }
    rc = -DS_E_CRYPTO;
    if (X509_CRL_sort(crl) != 1 || ASN1_INTEGER_set(number, 1) != 1 ||
        X509_CRL_add1_ext_i2d(crl, NID_crl_number, number, 0, 0) != 1) {
        goto out;
    }
    X509V3_set_ctx(&ctx, issuer_cert, NULL, NULL, crl, 0);
    aki = X509V3_EXT_conf_nid(NULL, &ctx, NID_authority_key_identifier, "keyid:always");
    if (aki == NULL || X509_CRL_add_ext(crl, aki, -1) != 1) {
        goto out;
    }
    if (X509_CRL_sign(crl, p->pkey[issuer], EVP_sha256()) <= 0) {
        goto out;
    }
    tbs_len = i2d_re_X509_CRL_tbs(crl, &tbs);
    if (tbs_len <= 0) {
        goto out;
    }
    X509_CRL_get0_signature(crl, &sig, NULL);
    if ((rc = sim_swap_signature(p, issuer, tbs, tbs_len, sig)) < 0) {
        goto out;
    }
    rc = -DS_E_CRYPTO;
    der_len = i2d_X509_CRL(crl, NULL);
    if (der_len <= 0) {
        goto out;
    }
    der = malloc((size_t)der_len);
    if (der == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    w = der;
    if (i2d_X509_CRL(crl, &w) != der_len) {
        goto out;
    }
    *out_der = der;
    *out_len = (size_t)der_len;
    der = NULL;
    rc = 0;
out:
    free(der);
    OPENSSL_free(tbs);
    X509_EXTENSION_free(aki);
    ASN1_INTEGER_free(number);
    ASN1_TIME_free(t_next);
    ASN1_TIME_free(t_this);
    X509_CRL_free(crl);
    return rc;
}

/* ---- the PKI object ------------------------------------------------------------------------- */

/* 62-bit positive serial from the seed and the certificate's label (never zero). */
static uint64_t sim_serial(const uint8_t seed[DS_SIM_SEED_LEN], const char *label)
{
    static const char domain[] = "dstack-sim-serial";
    uint8_t h[DS_SHA256_LEN];
    uint64_t v = 0;

    ds_sha256_v(h, 3, domain, sizeof(domain) - 1, seed, (size_t)DS_SIM_SEED_LEN, label,
                strlen(label));
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | h[i];
    }
    return (v & 0x3fffffffffffffffULL) | 0x4000000000000000ULL;
}

static void sim_derive_id(const uint8_t seed[DS_SIM_SEED_LEN], const char *domain, uint8_t out[16])
{
    uint8_t h[DS_SHA256_LEN];

    ds_sha256_v(h, 2, domain, strlen(domain), seed, (size_t)DS_SIM_SEED_LEN);
    memcpy(out, h, 16);
}

int ds_sim_pki_new(const uint8_t seed[DS_SIM_SEED_LEN], struct ds_sim_pki **out)
{
    static const enum ds_sim_key pck_chain[] = {DS_SIM_KEY_PCK, DS_SIM_KEY_PCK_CA, DS_SIM_KEY_ROOT};
    static const enum ds_sim_key pck_ca_chain[] = {DS_SIM_KEY_PCK_CA, DS_SIM_KEY_ROOT};
    static const enum ds_sim_key tcb_chain[] = {DS_SIM_KEY_TCB, DS_SIM_KEY_ROOT};
    struct ds_sim_pki *p;
    unsigned char *der = NULL;
    int len, rc;

    if (seed == NULL || out == NULL) {
        return -EINVAL;
    }
    p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->group = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    if (p->group == NULL) {
        rc = -DS_E_CRYPTO;
        goto out;
    }
    sim_derive_id(seed, "dstack-sim-ppid", p->ppid);
    sim_derive_id(seed, "dstack-sim-qe-id", p->qe_id);
    for (int k = 0; k < SIM_KEY_COUNT; k++) {
        p->serial[k] = sim_serial(seed, sim_certs[k].label);
        if ((rc = sim_derive_key(p, seed, (enum ds_sim_key)k)) < 0 ||
            (rc = sim_make_pkey(p, (enum ds_sim_key)k)) < 0) {
            goto out;
        }
    }
    for (int k = 0; k < SIM_KEY_COUNT; k++) {
        if ((rc = sim_make_cert(p, (enum ds_sim_key)k)) < 0) {
            goto out;
        }
    }
    len = i2d_X509(p->cert[DS_SIM_KEY_ROOT], &der);
    if (len <= 0) {
        rc = -DS_E_CRYPTO;
        goto out;
    }
    p->root_der = malloc((size_t)len);
    if (p->root_der == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    memcpy(p->root_der, der, (size_t)len);
    p->root_der_len = (size_t)len;
    if ((rc = sim_chain_pem(p, pck_chain, DS_ARRAY_SIZE(pck_chain), &p->pck_chain_pem)) < 0 ||
        (rc = sim_chain_pem(p, pck_ca_chain, DS_ARRAY_SIZE(pck_ca_chain), &p->pck_ca_chain_pem)) <
            0 ||
        (rc = sim_chain_pem(p, tcb_chain, DS_ARRAY_SIZE(tcb_chain), &p->tcb_chain_pem)) < 0) {
        goto out;
    }
    if ((rc = ds_sim_pki_crl(p, DS_SIM_KEY_ROOT, NULL, 0, SIM_NOT_BEFORE, SIM_NOT_AFTER,
                             &p->root_crl, &p->root_crl_len)) < 0 ||
        (rc = ds_sim_pki_crl(p, DS_SIM_KEY_PCK_CA, NULL, 0, SIM_NOT_BEFORE, SIM_NOT_AFTER,
                             &p->pck_crl, &p->pck_crl_len)) < 0) {
        goto out;
    }
    *out = p;
    p = NULL;
    rc = 0;
out:
    OPENSSL_free(der);
    ds_sim_pki_free(p);
    return rc;
}

void ds_sim_pki_free(struct ds_sim_pki *p)
{
    if (p == NULL) {
        return;
    }
    for (int k = 0; k < SIM_KEY_COUNT; k++) {
        BN_clear_free(p->priv[k]);
        EVP_PKEY_free(p->pkey[k]);
        X509_free(p->cert[k]);
    }
    ds_wipe(p->priv_raw, sizeof(p->priv_raw));
    EC_GROUP_free(p->group);
    free(p->root_der);
    free(p->pck_chain_pem);
    free(p->pck_ca_chain_pem);
    free(p->tcb_chain_pem);
    free(p->root_crl);
    free(p->pck_crl);
    free(p);
}

void ds_sim_pki_root_der(const struct ds_sim_pki *p, const uint8_t **der, size_t *len)
{
    *der = p->root_der;
    *len = p->root_der_len;
}

const char *ds_sim_pki_pck_chain_pem(const struct ds_sim_pki *p)
{
    return p->pck_chain_pem;
}

void ds_sim_pki_platform(const struct ds_sim_pki *p, uint8_t fmspc[6], uint8_t pce_id[2],
                         uint8_t ppid[16])
{
    static const uint8_t sim_fmspc[6] = SIM_FMSPC;
    static const uint8_t sim_pce_id[2] = SIM_PCE_ID;

    memcpy(fmspc, sim_fmspc, sizeof(sim_fmspc));
    memcpy(pce_id, sim_pce_id, sizeof(sim_pce_id));
    memcpy(ppid, p->ppid, sizeof(p->ppid));
}

uint64_t ds_sim_pki_pck_serial(const struct ds_sim_pki *p)
{
    return p->serial[DS_SIM_KEY_PCK];
}
