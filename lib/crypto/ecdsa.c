/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ECDSA over P-256 and P-384 with raw keys and raw r||s signatures, the forms Intel DCAP
 * quotes carry (attestation key and QE report signature are P-256 r||s). Verification is on
 * the hot path of quote checking, so it builds the EVP_PKEY straight from the uncompressed
 * point with EVP_PKEY_fromdata (OpenSSL decodes it and checks it lies on the curve), encodes
 * the DER signature on the stack and calls EVP_PKEY_verify on the digest: no ASN.1 key
 * encoding, no parameter builder, one key and one context allocation per call.
 *
 * Creating the EC group inside EVP_PKEY_fromdata costs ~11 us of a ~80 us verify, so each
 * curve has a parameters-only template key, built once under pthread_once and never changed
 * afterwards (immutable, so not the mutable global state lib/ forbids). A verify duplicates
 * the template (a cheap EC_GROUP_dup) and sets the public point on the copy; OpenSSL checks
 * the point while decoding it. If the template cannot be built the slower path is used.
 *
 * Signing and key derivation use OpenSSL 3 non-deprecated APIs only (EVP_PKEY, EC_GROUP,
 * EC_POINT, BIGNUM). Private scalars are held in wiped stack buffers and secure BIGNUMs.
 * Every function leaves the OpenSSL error queue as it found it (ERR_set_mark/pop_to_mark),
 * because stale errors there confuse later SSL_get_error() calls in the daemons.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/params.h>

#include "dstack/crypto.h"

/* Largest coordinate/scalar we handle (P-384). */
#define EC_MAX_SIZE 48
/* DER ECDSA-Sig-Value of two integers of at most EC_MAX_SIZE bytes: 30 L (02 L 00 r)(02 L 00 s) */
#define EC_DER_MAX (3 + 2 * (2 + 1 + EC_MAX_SIZE))
/* Raw signatures handled by the DER converters: up to P-521 (66-byte integers). */
#define EC_RAW_INT_MAX 66
/* Attempts at rejection-sampling a private scalar before giving up (P-256 rejects ~2^-32). */
#define EC_KEYGEN_TRIES 16

struct ec_curve_info {
    const char *group_name; /* OSSL_PKEY_PARAM_GROUP_NAME */
    int nid;
    size_t size;
    const uint8_t *order; /* big-endian group order n, size bytes */
};

/* SEC 2 v2, sections 2.4.2 (secp256r1) and 2.5.1 (secp384r1). */
static const uint8_t p256_order[32] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};
static const uint8_t p384_order[48] = {
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf,
    0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0, 0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73};

static const struct ec_curve_info *curve_info(enum ds_ec_curve curve)
{
    static const struct ec_curve_info curves[] = {
        [DS_EC_P256] = {"P-256", NID_X9_62_prime256v1, 32, p256_order},
        [DS_EC_P384] = {"P-384", NID_secp384r1, 48, p384_order},
    };
    if ((unsigned)curve >= DS_ARRAY_SIZE(curves))
        return NULL;
    return &curves[curve];
}

size_t ds_ec_size(enum ds_ec_curve curve)
{
    const struct ec_curve_info *ci = curve_info(curve);
    return ci ? ci->size : 0;
}

/* Big-endian compare of two size-byte numbers (public values only: not constant time). */
static int be_cmp(const uint8_t *a, const uint8_t *b, size_t size)
{
    return memcmp(a, b, size);
}

/* Constant-time check 0 < d < n for a secret scalar d. */
static bool scalar_in_range(const uint8_t *d, const uint8_t *n, size_t size)
{
    /* Compute d - n from the least significant byte; a final borrow means d < n. */
    unsigned borrow = 0;
    uint8_t any = 0;
    for (size_t i = size; i-- > 0;) {
        unsigned diff = (unsigned)d[i] - (unsigned)n[i] - borrow;
        borrow = (diff >> 8) & 1;
        any |= d[i];
    }
    return (borrow == 1) & (any != 0);
}

/* ---- DER <-> raw ------------------------------------------------------------------------------
 */

/* Append one DER INTEGER holding the unsigned big-endian value v[0..n). Returns bytes written. */
static size_t der_put_uint(uint8_t *out, const uint8_t *v, size_t n)
{
    while (n > 1 && v[0] == 0) {
        v++;
        n--;
    }
    bool pad = (v[0] & 0x80) != 0;
    size_t len = n + (pad ? 1 : 0);
    size_t o = 0;
    out[o++] = 0x02;
    out[o++] = (uint8_t)len;
    if (pad)
        out[o++] = 0x00;
    memcpy(out + o, v, n);
    return o + n;
}

/*
 * DER of r||s (each n bytes, n <= EC_RAW_INT_MAX) into out, which must hold
 * 3 + 2 * (3 + n) bytes. Returns the encoded length.
 */
static size_t der_encode_sig(const uint8_t *r, const uint8_t *s, size_t n, uint8_t *out)
{
    uint8_t body[2 * (3 + EC_RAW_INT_MAX)];
    size_t blen = der_put_uint(body, r, n);
    blen += der_put_uint(body + blen, s, n);
    size_t o = 0;
    out[o++] = 0x30;
    if (blen >= 0x80)
        out[o++] = 0x81;
    out[o++] = (uint8_t)blen;
    memcpy(out + o, body, blen);
    return o + blen;
}

int ds_ecdsa_sig_raw_to_der(const uint8_t *raw, size_t raw_len, uint8_t **out_der, size_t *out_len)
{
    if (!raw || raw_len == 0 || raw_len % 2 != 0 || raw_len > 2 * EC_RAW_INT_MAX)
        return -DS_E_FORMAT;
    size_t n = raw_len / 2;
    uint8_t tmp[3 + 2 * (3 + EC_RAW_INT_MAX)];
    size_t len = der_encode_sig(raw, raw + n, n, tmp);
    uint8_t *der = malloc(len);
    if (!der)
        return -ENOMEM;
    memcpy(der, tmp, len);
    *out_der = der;
    *out_len = len;
    return 0;
}

/* DER length octets: short form or 0x81 (enough for any ECDSA signature up to P-521). */
static int der_get_len(struct ds_reader *r, size_t *out)
{
    uint8_t b;
    DS_ENSURE(ds_rd_u8(r, &b) == 0, -DS_E_FORMAT);
    if (b < 0x80) {
        *out = b;
        return 0;
    }
    DS_ENSURE(b == 0x81, -DS_E_FORMAT);
    DS_ENSURE(ds_rd_u8(r, &b) == 0, -DS_E_FORMAT);
    DS_ENSURE(b >= 0x80, -DS_E_FORMAT); /* DER: minimal length encoding */
    *out = b;
    return 0;
}

/* One strict DER INTEGER, non-negative, minimal, fitting in size bytes; written padded. */
static int der_get_uint(struct ds_reader *r, size_t size, uint8_t *out)
{
    uint8_t tag;
    size_t len;
    const uint8_t *v;
    DS_ENSURE(ds_rd_u8(r, &tag) == 0 && tag == 0x02, -DS_E_FORMAT);
    DS_TRY(der_get_len(r, &len));
    DS_ENSURE(len > 0 && ds_rd_ptr(r, len, &v) == 0, -DS_E_FORMAT);
    DS_ENSURE((v[0] & 0x80) == 0, -DS_E_FORMAT); /* negative */
    if (len > 1 && v[0] == 0) {
        DS_ENSURE((v[1] & 0x80) != 0, -DS_E_FORMAT); /* non-minimal */
        v++;
        len--;
    }
    DS_ENSURE(len <= size, -DS_E_FORMAT);
    memset(out, 0, size - len);
    memcpy(out + size - len, v, len);
    return 0;
}

int ds_ecdsa_sig_der_to_raw(const uint8_t *der, size_t der_len, size_t size, uint8_t *out_raw)
{
    struct ds_reader r, seq;
    uint8_t tag;
    size_t len;
    uint8_t tmp[2 * EC_RAW_INT_MAX];
    if (!der || size == 0 || size > EC_RAW_INT_MAX)
        return -DS_E_FORMAT;
    ds_rd_init(&r, der, der_len);
    DS_ENSURE(ds_rd_u8(&r, &tag) == 0 && tag == 0x30, -DS_E_FORMAT);
    DS_TRY(der_get_len(&r, &len));
    DS_ENSURE(len == ds_rd_left(&r), -DS_E_FORMAT); /* no trailing bytes */
    DS_ENSURE(ds_rd_sub(&r, len, &seq) == 0, -DS_E_FORMAT);
    DS_TRY(der_get_uint(&seq, size, tmp));
    DS_TRY(der_get_uint(&seq, size, tmp + size));
    DS_ENSURE(ds_rd_left(&seq) == 0, -DS_E_FORMAT);
    memcpy(out_raw, tmp, 2 * size);
    return 0;
}

/* ---- keys -------------------------------------------------------------------------------------
 */

/*
 * Public EVP_PKEY from 0x04||X||Y. OpenSSL rejects coordinates >= p and points off the curve
 * while decoding (EC_POINT_oct2point); both curves have cofactor 1, so that is a full check.
 */
static int pkey_from_point(const struct ec_curve_info *ci, const uint8_t *point, size_t point_len,
                           EVP_PKEY **out)
{
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *pkey = NULL;
    int ret = -DS_E_CRYPTO;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)ci->group_name, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, point_len),
        OSSL_PARAM_construct_end(),
    };
    if (!kctx || EVP_PKEY_fromdata_init(kctx) != 1)
        goto out;
    if (EVP_PKEY_fromdata(kctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        ret = -DS_E_FORMAT;
        goto out;
    }
    *out = pkey;
    ret = 0;
out:
    EVP_PKEY_CTX_free(kctx);
    return ret;
}

/* Parameters-only template keys, indexed by enum ds_ec_curve; written once by templates_init. */
static EVP_PKEY *ec_templates[2];
static pthread_once_t ec_templates_once = PTHREAD_ONCE_INIT;

static void templates_init(void)
{
    ERR_set_mark();
    for (size_t i = 0; i < DS_ARRAY_SIZE(ec_templates); i++) {
        const struct ec_curve_info *ci = curve_info((enum ds_ec_curve)i);
        EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
        EVP_PKEY *pkey = NULL;
        OSSL_PARAM params[] = {
            OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)ci->group_name, 0),
            OSSL_PARAM_construct_end(),
        };
        if (kctx && EVP_PKEY_fromdata_init(kctx) == 1 &&
            EVP_PKEY_fromdata(kctx, &pkey, EVP_PKEY_KEY_PARAMETERS, params) == 1)
            ec_templates[i] = pkey;
        EVP_PKEY_CTX_free(kctx);
    }
    ERR_pop_to_mark();
}

/* Public key via the template: dup (shares nothing mutable with it), then set the point. */
static int pkey_from_point_fast(EVP_PKEY *tmpl, const uint8_t *point, size_t point_len,
                                EVP_PKEY **out)
{
    EVP_PKEY *pkey = EVP_PKEY_dup(tmpl);
    if (!pkey)
        return -DS_E_CRYPTO;
    if (EVP_PKEY_set_octet_string_param(pkey, OSSL_PKEY_PARAM_ENCODED_PUBLIC_KEY, point,
                                        point_len) != 1) {
        EVP_PKEY_free(pkey);
        return -DS_E_FORMAT;
    }
    *out = pkey;
    return 0;
}

/* Copy big-endian src (n bytes) to dst in the native byte order OSSL_PARAM integers use. */
static void be_to_native(uint8_t *dst, const uint8_t *src, size_t n)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    memcpy(dst, src, n);
#else
    for (size_t i = 0; i < n; i++)
        dst[i] = src[n - 1 - i];
#endif
}

/* Key pair EVP_PKEY from a private scalar and its public point 0x04||X||Y. */
static int pkey_from_private(const struct ec_curve_info *ci, const uint8_t *priv,
                             const uint8_t *point, size_t point_len, EVP_PKEY **out)
{
    uint8_t native[EC_MAX_SIZE];
    EVP_PKEY_CTX *kctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    EVP_PKEY *pkey = NULL;
    int ret = -DS_E_CRYPTO;
    be_to_native(native, priv, ci->size);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)ci->group_name, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point, point_len),
        OSSL_PARAM_construct_BN(OSSL_PKEY_PARAM_PRIV_KEY, native, ci->size),
        OSSL_PARAM_construct_end(),
    };
    if (!kctx || EVP_PKEY_fromdata_init(kctx) != 1)
        goto out;
    if (EVP_PKEY_fromdata(kctx, &pkey, EVP_PKEY_KEYPAIR, params) != 1)
        goto out;
    *out = pkey;
    ret = 0;
out:
    ds_wipe(native, sizeof(native));
    EVP_PKEY_CTX_free(kctx);
    return ret;
}

/* 0x04||X||Y of d*G into point (1 + 2*size bytes); d must already be range-checked. */
static int point_from_private(const struct ec_curve_info *ci, const uint8_t *priv, uint8_t *point)
{
    EC_GROUP *group = EC_GROUP_new_by_curve_name(ci->nid);
    BN_CTX *bnctx = BN_CTX_secure_new();
    BIGNUM *d = BN_secure_new();
    EC_POINT *pt = NULL;
    int ret = -DS_E_CRYPTO;
    if (!group || !bnctx || !d)
        goto out;
    BN_set_flags(d, BN_FLG_CONSTTIME);
    if (!BN_bin2bn(priv, (int)ci->size, d))
        goto out;
    pt = EC_POINT_new(group);
    if (!pt || EC_POINT_mul(group, pt, d, NULL, NULL, bnctx) != 1)
        goto out;
    if (EC_POINT_point2oct(group, pt, POINT_CONVERSION_UNCOMPRESSED, point, 1 + 2 * ci->size,
                           bnctx) != 1 + 2 * ci->size)
        goto out;
    ret = 0;
out:
    EC_POINT_free(pt);
    BN_clear_free(d);
    BN_CTX_free(bnctx);
    EC_GROUP_free(group);
    return ret;
}

int ds_ec_public_from_private(enum ds_ec_curve curve, const uint8_t *priv, uint8_t *pub)
{
    const struct ec_curve_info *ci = curve_info(curve);
    uint8_t point[1 + 2 * EC_MAX_SIZE];
    if (!ci || !priv)
        return -DS_E_FORMAT;
    if (!scalar_in_range(priv, ci->order, ci->size))
        return -DS_E_FORMAT;
    ERR_set_mark();
    int ret = point_from_private(ci, priv, point);
    ERR_pop_to_mark();
    if (ret == 0)
        memcpy(pub, point + 1, 2 * ci->size);
    return ret;
}

int ds_ec_generate(enum ds_ec_curve curve, uint8_t *priv, uint8_t *pub)
{
    const struct ec_curve_info *ci = curve_info(curve);
    uint8_t d[EC_MAX_SIZE];
    uint8_t q[2 * EC_MAX_SIZE];
    int ret = -DS_E_CRYPTO;
    if (!ci)
        return -DS_E_FORMAT;
    /* Rejection sampling gives a uniform scalar in [1, n-1] (FIPS 186-5 A.2.2). */
    for (int i = 0; i < EC_KEYGEN_TRIES; i++) {
        ret = ds_random(d, ci->size);
        if (ret < 0)
            goto out;
        if (scalar_in_range(d, ci->order, ci->size))
            break;
        ret = -DS_E_CRYPTO;
    }
    if (ret < 0)
        goto out;
    ret = ds_ec_public_from_private(curve, d, q);
    if (ret < 0)
        goto out;
    memcpy(priv, d, ci->size);
    memcpy(pub, q, 2 * ci->size);
out:
    ds_wipe(d, sizeof(d));
    return ret;
}

/* ---- sign / verify ----------------------------------------------------------------------------
 */

int ds_ecdsa_verify_digest(enum ds_ec_curve curve, const uint8_t *pub, size_t pub_len,
                           const uint8_t *digest, size_t digest_len, const uint8_t *sig,
                           size_t sig_len)
{
    const struct ec_curve_info *ci = curve_info(curve);
    uint8_t point[1 + 2 * EC_MAX_SIZE];
    uint8_t der[EC_DER_MAX];
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *vctx = NULL;
    int ret;

    if (!ci || !pub || !digest || (!sig && sig_len))
        return -DS_E_FORMAT;
    size_t n = ci->size;
    if (pub_len == 2 * n) {
        point[0] = 0x04;
        memcpy(point + 1, pub, 2 * n);
    } else if (pub_len == 1 + 2 * n && pub[0] == 0x04) {
        memcpy(point, pub, pub_len);
    } else {
        return -DS_E_FORMAT;
    }
    if (digest_len != DS_SHA256_LEN && digest_len != DS_SHA384_LEN && digest_len != DS_SHA512_LEN)
        return -DS_E_FORMAT;
    /* Signature checks that need no key: length, and 0 < r, s < n (SEC 1 v2, 4.1.4 step 1). */
    if (sig_len != 2 * n)
        return -DS_E_SIGNATURE;
    const uint8_t *r = sig, *s = sig + n;
    if (ds_is_zero(r, n) || ds_is_zero(s, n) || be_cmp(r, ci->order, n) >= 0 ||
        be_cmp(s, ci->order, n) >= 0)
        return -DS_E_SIGNATURE;
    size_t der_len = der_encode_sig(r, s, n, der);

    ERR_set_mark();
    (void)pthread_once(&ec_templates_once, templates_init);
    EVP_PKEY *tmpl = ec_templates[curve];
    if (tmpl)
        ret = pkey_from_point_fast(tmpl, point, 1 + 2 * n, &pkey);
    else
        ret = pkey_from_point(ci, point, 1 + 2 * n, &pkey);
    if (ret < 0)
        goto out;
    ret = -DS_E_CRYPTO;
    vctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!vctx || EVP_PKEY_verify_init(vctx) != 1)
        goto out;
    int v = EVP_PKEY_verify(vctx, der, der_len, digest, digest_len);
    if (v == 1)
        ret = 0;
    else if (v == 0)
        ret = -DS_E_SIGNATURE;
out:
    EVP_PKEY_CTX_free(vctx);
    EVP_PKEY_free(pkey);
    ERR_pop_to_mark();
    return ret;
}

/* SHA-256 for P-256, SHA-384 for P-384 (the pairing DCAP and X.509 use). */
static size_t curve_hash(enum ds_ec_curve curve, const void *msg, size_t msg_len, uint8_t *out)
{
    if (curve == DS_EC_P384) {
        ds_sha384(msg, msg_len, out);
        return DS_SHA384_LEN;
    }
    ds_sha256(msg, msg_len, out);
    return DS_SHA256_LEN;
}

int ds_ecdsa_verify_raw(enum ds_ec_curve curve, const uint8_t *pub, size_t pub_len, const void *msg,
                        size_t msg_len, const uint8_t *sig, size_t sig_len)
{
    uint8_t digest[DS_SHA384_LEN];
    if (!curve_info(curve) || (!msg && msg_len))
        return -DS_E_FORMAT;
    size_t dlen = curve_hash(curve, msg, msg_len, digest);
    return ds_ecdsa_verify_digest(curve, pub, pub_len, digest, dlen, sig, sig_len);
}

int ds_ecdsa_sign_raw(enum ds_ec_curve curve, const uint8_t *priv, const void *msg, size_t msg_len,
                      uint8_t *sig)
{
    const struct ec_curve_info *ci = curve_info(curve);
    uint8_t digest[DS_SHA384_LEN];
    uint8_t point[1 + 2 * EC_MAX_SIZE];
    uint8_t der[EC_DER_MAX];
    size_t der_len = sizeof(der);
    uint8_t raw[2 * EC_MAX_SIZE];
    EVP_PKEY *pkey = NULL;
    EVP_PKEY_CTX *sctx = NULL;
    int ret;

    if (!ci || !priv || (!msg && msg_len))
        return -DS_E_FORMAT;
    if (!scalar_in_range(priv, ci->order, ci->size))
        return -DS_E_FORMAT;
    size_t dlen = curve_hash(curve, msg, msg_len, digest);

    ERR_set_mark();
    ret = point_from_private(ci, priv, point);
    if (ret < 0)
        goto out;
    ret = pkey_from_private(ci, priv, point, 1 + 2 * ci->size, &pkey);
    if (ret < 0)
        goto out;
    ret = -DS_E_CRYPTO;
    sctx = EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
    if (!sctx || EVP_PKEY_sign_init(sctx) != 1)
        goto out;
    if (EVP_PKEY_sign(sctx, der, &der_len, digest, dlen) != 1)
        goto out;
    ret = ds_ecdsa_sig_der_to_raw(der, der_len, ci->size, raw);
    if (ret < 0) {
        ret = -DS_E_CRYPTO;
        goto out;
    }
    memcpy(sig, raw, 2 * ci->size);
out:
    EVP_PKEY_CTX_free(sctx);
    EVP_PKEY_free(pkey);
    ERR_pop_to_mark();
    return ret;
}
