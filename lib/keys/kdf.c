/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The "RATLS" key derivation function of dstack (kms-ratls.md §3.2) and the P-256 private-key
 * encodings it depends on: HKDF-SHA256 with salt "RATLS" over concatenated context parts,
 * derive_p256 (range-checked, never reduced), derive_dh_secret (SHA-256 of the frozen 138-byte
 * PKCS#8 layout), the PEM form the guest agent returns, scalar extraction from PEM (OpenSSL)
 * and the 91-byte SubjectPublicKeyInfo of a P-256 public key.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/obj_mac.h>
#include <openssl/pem.h>

#include "dstack/crypto.h"
#include "dstack/keys.h"

/* §3.2: the PKCS#8 header up to the scalar, and the [1] public-key header before X||Y. */
static const uint8_t pkcs8_head[] = {0x30, 0x81, 0x87, 0x02, 0x01, 0x00, 0x30, 0x13, 0x06,
                                     0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06,
                                     0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07,
                                     0x04, 0x6d, 0x30, 0x6b, 0x02, 0x01, 0x01, 0x04, 0x20};
static const uint8_t pkcs8_pub_head[] = {0xa1, 0x44, 0x03, 0x42, 0x00, 0x04};
/* SEQUENCE { AlgorithmIdentifier ecPublicKey prime256v1, BIT STRING 04 ... } */
static const uint8_t spki_head[] = {0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48,
                                    0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a, 0x86, 0x48,
                                    0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00, 0x04};
/* Order n of P-256, big-endian. */
static const uint8_t p256_order[DS_KEY_SIZE] = {
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51};

#define PEM_BEGIN      "-----BEGIN PRIVATE KEY-----\n"
#define PEM_END        "-----END PRIVATE KEY-----\n"
#define PEM_LINE       64
#define PEM_INPUT_MAX  (16 * 1024)
#define RANDOM_RETRIES 4

_Static_assert(sizeof(pkcs8_head) + DS_KEY_SIZE + sizeof(pkcs8_pub_head) + DS_P256_PUB_SIZE ==
                   DS_P256_PKCS8_SIZE,
               "PKCS#8 layout is 138 bytes");
_Static_assert(sizeof(spki_head) + DS_P256_PUB_SIZE == DS_P256_SPKI_SIZE, "SPKI is 91 bytes");

int ds_kdf_derive(const uint8_t *ikm, size_t ikm_len, const struct ds_kdf_part *parts, size_t count,
                  uint8_t *out, size_t out_len)
{
    uint8_t *info = NULL;
    size_t total = 0, off = 0;
    int ret;

    if ((!ikm && ikm_len) || !out || out_len == 0 || out_len > DS_KDF_OUT_MAX || (!parts && count))
        return -EINVAL;
    if (count > DS_KDF_PARTS_MAX)
        return -DS_E_LIMIT;
    for (size_t i = 0; i < count; i++) {
        if (!parts[i].ptr && parts[i].len)
            return -EINVAL;
        if (parts[i].len > DS_KDF_INFO_MAX - total)
            return -DS_E_LIMIT;
        total += parts[i].len;
    }
    /* One byte more so malloc(0) is never asked for. */
    info = malloc(total + 1);
    if (!info)
        return -ENOMEM;
    for (size_t i = 0; i < count; i++) {
        if (parts[i].len)
            memcpy(info + off, parts[i].ptr, parts[i].len);
        off += parts[i].len;
    }
    ret = ds_hkdf_sha256(DS_KDF_SALT, strlen(DS_KDF_SALT), ikm, ikm_len, info, total, out, out_len);
    ds_wipe(info, total);
    free(info);
    return ret < 0 ? ret : 0;
}

bool ds_p256_scalar_valid(const uint8_t s[DS_KEY_SIZE])
{
    unsigned borrow = 0, nonzero = 0;
    if (!s)
        return false;
    /* s - n from the least significant byte; a final borrow means s < n. */
    for (size_t i = DS_KEY_SIZE; i-- > 0;) {
        unsigned d = (unsigned)s[i] - (unsigned)p256_order[i] - borrow;
        borrow = (d >> 8) & 1u;
        nonzero |= s[i];
    }
    return (borrow & (unsigned)(nonzero != 0)) != 0;
}

int ds_kdf_derive_p256(const uint8_t parent[DS_KEY_SIZE], const struct ds_kdf_part *parts,
                       size_t count, uint8_t out_scalar[DS_KEY_SIZE])
{
    uint8_t d[DS_KEY_SIZE];
    int ret;
    if (!parent || !out_scalar)
        return -EINVAL;
    ret = ds_kdf_derive(parent, DS_KEY_SIZE, parts, count, d, sizeof(d));
    if (ret < 0)
        goto out;
    /* §3.2: no reduction and no retry. */
    if (!ds_p256_scalar_valid(d)) {
        ret = -ERANGE;
        goto out;
    }
    memcpy(out_scalar, d, sizeof(d));
    ret = 0;
out:
    ds_wipe(d, sizeof(d));
    return ret;
}

int ds_p256_pkcs8_der(const uint8_t scalar[DS_KEY_SIZE], uint8_t out_der[DS_P256_PKCS8_SIZE])
{
    uint8_t pub[DS_P256_PUB_SIZE];
    size_t off = 0;
    if (!scalar || !out_der)
        return -EINVAL;
    if (!ds_p256_scalar_valid(scalar))
        return -DS_E_FORMAT;
    DS_TRY(ds_ec_public_from_private(DS_EC_P256, scalar, pub));
    memcpy(out_der + off, pkcs8_head, sizeof(pkcs8_head));
    off += sizeof(pkcs8_head);
    memcpy(out_der + off, scalar, DS_KEY_SIZE);
    off += DS_KEY_SIZE;
    memcpy(out_der + off, pkcs8_pub_head, sizeof(pkcs8_pub_head));
    off += sizeof(pkcs8_pub_head);
    memcpy(out_der + off, pub, sizeof(pub));
    return 0;
}

int ds_kdf_derive_dh_secret(const uint8_t parent[DS_KEY_SIZE], const struct ds_kdf_part *parts,
                            size_t count, uint8_t out_secret[DS_KEY_SIZE])
{
    uint8_t d[DS_KEY_SIZE], der[DS_P256_PKCS8_SIZE];
    int ret;
    if (!out_secret)
        return -EINVAL;
    ret = ds_kdf_derive_p256(parent, parts, count, d);
    if (ret < 0)
        goto out;
    ret = ds_p256_pkcs8_der(d, der);
    if (ret < 0)
        goto out;
    ds_sha256(der, sizeof(der), out_secret);
    ret = 0;
out:
    ds_wipe(d, sizeof(d));
    ds_wipe(der, sizeof(der));
    return ret;
}

void ds_keys_free_secret(char *s)
{
    if (!s)
        return;
    ds_wipe(s, strlen(s));
    free(s);
}

int ds_p256_pkcs8_pem(const uint8_t scalar[DS_KEY_SIZE], char **out_pem, size_t *out_len)
{
    uint8_t der[DS_P256_PKCS8_SIZE];
    char *b64 = NULL;
    struct ds_buf pem;
    int ret;

    ds_buf_init(&pem, PEM_INPUT_MAX);
    pem.secret = true;
    if (!out_pem) {
        ret = -EINVAL;
        goto out;
    }
    ret = ds_p256_pkcs8_der(scalar, der);
    if (ret < 0)
        goto out;
    b64 = ds_base64_encode(der, sizeof(der));
    if (!b64) {
        ret = -ENOMEM;
        goto out;
    }
    size_t b64_len = strlen(b64);
    ret = ds_buf_append_str(&pem, PEM_BEGIN);
    for (size_t off = 0; ret >= 0 && off < b64_len; off += PEM_LINE) {
        size_t n = b64_len - off < PEM_LINE ? b64_len - off : PEM_LINE;
        ret = ds_buf_append(&pem, b64 + off, n);
        if (ret >= 0)
            ret = ds_buf_u8(&pem, '\n');
    }
    if (ret >= 0)
        ret = ds_buf_append_str(&pem, PEM_END);
    if (ret < 0)
        goto out;
    uint8_t *data;
    size_t len;
    ds_buf_steal(&pem, &data, &len);
    *out_pem = (char *)data;
    if (out_len)
        *out_len = len;
    ret = 0;
out:
    ds_wipe(der, sizeof(der));
    ds_keys_free_secret(b64);
    ds_buf_done(&pem);
    return ret;
}

/* Never prompt for a pass phrase: encrypted keys are simply not supported. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf;
    (void)size;
    (void)rwflag;
    (void)u;
    return -1;
}

int ds_p256_scalar_from_pem(const char *pem, size_t pem_len, uint8_t out_scalar[DS_KEY_SIZE])
{
    BIO *bio = NULL;
    EVP_PKEY *pkey = NULL;
    BIGNUM *priv = NULL;
    uint8_t d[DS_KEY_SIZE];
    char group[32];
    size_t group_len = 0;
    int ret = -DS_E_FORMAT;

    if (!pem || !out_scalar)
        return -EINVAL;
    if (pem_len > PEM_INPUT_MAX)
        return -DS_E_LIMIT;
    ERR_set_mark();
    bio = BIO_new_mem_buf(pem, (int)pem_len);
    if (!bio) {
        ret = -ENOMEM;
        goto out;
    }
    pkey = PEM_read_bio_PrivateKey(bio, NULL, no_password, NULL);
    if (!pkey)
        goto out;
    ret = -DS_E_UNSUPPORTED;
    if (EVP_PKEY_get_base_id(pkey) != EVP_PKEY_EC ||
        EVP_PKEY_get_utf8_string_param(pkey, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &group_len) != 1 ||
        strcmp(group, SN_X9_62_prime256v1) != 0)
        goto out;
    ret = -DS_E_FORMAT;
    if (EVP_PKEY_get_bn_param(pkey, OSSL_PKEY_PARAM_PRIV_KEY, &priv) != 1 ||
        BN_bn2binpad(priv, d, sizeof(d)) != (int)sizeof(d) || !ds_p256_scalar_valid(d))
        goto out;
    memcpy(out_scalar, d, sizeof(d));
    ret = 0;
out:
    ds_wipe(d, sizeof(d));
    BN_clear_free(priv);
    EVP_PKEY_free(pkey);
    BIO_free(bio);
    ERR_pop_to_mark();
    return ret;
}

int ds_p256_spki_der(const uint8_t pub[DS_P256_PUB_SIZE], uint8_t out_spki[DS_P256_SPKI_SIZE])
{
    EC_GROUP *grp = NULL;
    EC_POINT *pt = NULL;
    uint8_t oct[1 + DS_P256_PUB_SIZE];
    int ret = -DS_E_FORMAT;

    if (!pub || !out_spki)
        return -EINVAL;
    oct[0] = 0x04;
    memcpy(oct + 1, pub, DS_P256_PUB_SIZE);
    ERR_set_mark();
    grp = EC_GROUP_new_by_curve_name(NID_X9_62_prime256v1);
    pt = grp ? EC_POINT_new(grp) : NULL;
    if (!pt) {
        ret = -DS_E_CRYPTO;
        goto out;
    }
    /* oct2point rejects points that are not on the curve. */
    if (EC_POINT_oct2point(grp, pt, oct, sizeof(oct), NULL) != 1)
        goto out;
    memcpy(out_spki, spki_head, sizeof(spki_head));
    memcpy(out_spki + sizeof(spki_head), pub, DS_P256_PUB_SIZE);
    ret = 0;
out:
    EC_POINT_free(pt);
    EC_GROUP_free(grp);
    ERR_pop_to_mark();
    return ret;
}

int ds_guest_random_tls_key(uint8_t out_scalar[DS_KEY_SIZE])
{
    uint8_t seed[DS_KEY_SIZE], d[DS_KEY_SIZE];
    int ret = -DS_E_CRYPTO;
    if (!out_scalar)
        return -EINVAL;
    /* §4.6: sk = HKDF(salt "RATLS", seed, ""); a fresh seed on the ~2^-32 out-of-range case. */
    for (int i = 0; i < RANDOM_RETRIES; i++) {
        ret = ds_random(seed, sizeof(seed));
        if (ret < 0)
            goto out;
        ret = ds_kdf_derive_p256(seed, NULL, 0, d);
        if (ret != -ERANGE)
            break;
    }
    if (ret < 0)
        goto out;
    memcpy(out_scalar, d, sizeof(d));
    ret = 0;
out:
    ds_wipe(seed, sizeof(seed));
    ds_wipe(d, sizeof(d));
    return ret;
}
