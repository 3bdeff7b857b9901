/* SPDX-License-Identifier: Apache-2.0 */
/*
 * HKDF-SHA256 (RFC 5869) through OpenSSL's EVP_KDF "HKDF" in extract-and-expand mode. The KMS
 * derives application keys, disk keys and per-purpose secrets with it, so the output length
 * is checked against the RFC limit (255 * HashLen) here rather than left to OpenSSL.
 */
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/kdf.h>
#include <openssl/params.h>

#include "dstack/crypto.h"

/* RFC 5869 section 2.3: L <= 255 * HashLen. */
#define HKDF_SHA256_MAX_OUT (255 * DS_SHA256_LEN)

int ds_hkdf_sha256(const void *salt, size_t salt_len, const void *ikm, size_t ikm_len,
                   const void *info, size_t info_len, uint8_t *out, size_t out_len)
{
    EVP_KDF *kdf = NULL;
    EVP_KDF_CTX *ctx = NULL;
    OSSL_PARAM params[5];
    size_t n = 0;
    int ret = -DS_E_CRYPTO;

    if (!out || out_len == 0 || out_len > HKDF_SHA256_MAX_OUT)
        return -DS_E_CRYPTO;
    if ((!ikm && ikm_len) || (!salt && salt_len) || (!info && info_len))
        return -DS_E_CRYPTO;

    /* An absent salt means HashLen zero bytes; an empty one is the same HMAC key. */
    params[n++] = OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0);
    params[n++] =
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)(ikm ? ikm : ""), ikm_len);
    if (salt_len > 0)
        params[n++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)salt, salt_len);
    if (info_len > 0)
        params[n++] =
            OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)info, info_len);
    params[n] = OSSL_PARAM_construct_end();

    ERR_set_mark();
    kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    if (!kdf)
        goto out;
    ctx = EVP_KDF_CTX_new(kdf);
    if (!ctx)
        goto out;
    if (EVP_KDF_derive(ctx, out, out_len, params) != 1) {
        ds_wipe(out, out_len);
        goto out;
    }
    ret = 0;
out:
    EVP_KDF_CTX_free(ctx); /* clears the copied key material */
    EVP_KDF_free(kdf);
    ERR_pop_to_mark();
    return ret;
}
