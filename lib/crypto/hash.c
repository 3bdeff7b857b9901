/* SPDX-License-Identifier: Apache-2.0 */
/*
 * SHA-2 hashes and the CSPRNG for libdstack, thin wrappers over OpenSSL 3. The one-shot forms
 * use OpenSSL's SHA256()/SHA384()/SHA512(), which allocate nothing and so cannot fail; the
 * multi-part (_v) forms feed a list of (pointer, length) pieces through one EVP_MD_CTX so
 * callers hash concatenations (quote header || body, report data preimages) without copying.
 * Each length must be passed as a size_t (cast literals: `(size_t)48`), because va_arg reads
 * size_t. out may alias one of the inputs (RTMR extension hashes the old value into itself):
 * it is written only after every piece has been absorbed.
 */
#include <limits.h>
#include <stdarg.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "dstack/crypto.h"

void ds_sha256(const void *data, size_t len, uint8_t out[DS_SHA256_LEN])
{
    SHA256(data, len, out);
}

void ds_sha384(const void *data, size_t len, uint8_t out[DS_SHA384_LEN])
{
    SHA384(data, len, out);
}

void ds_sha512(const void *data, size_t len, uint8_t out[DS_SHA512_LEN])
{
    SHA512(data, len, out);
}

/*
 * The _v functions return void by their contract. EVP can only fail here when allocating the
 * context fails; then out is filled with 0xff bytes (no known preimage) instead of being left
 * uninitialised, so a comparison against it fails rather than reading stack garbage.
 */
static void sha_v(const EVP_MD *md, uint8_t *out, size_t out_len, int count, va_list ap)
{
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    bool ok = ctx && EVP_DigestInit_ex(ctx, md, NULL) == 1;
    for (int i = 0; i < count; i++) {
        const void *p = va_arg(ap, const void *);
        size_t n = va_arg(ap, size_t);
        if (ok && n > 0 && EVP_DigestUpdate(ctx, p, n) != 1)
            ok = false;
    }
    unsigned int got = 0;
    if (ok && (EVP_DigestFinal_ex(ctx, out, &got) != 1 || got != out_len))
        ok = false;
    if (!ok)
        memset(out, 0xff, out_len);
    EVP_MD_CTX_free(ctx);
}

void ds_sha256_v(uint8_t out[DS_SHA256_LEN], int count, ...)
{
    va_list ap;
    va_start(ap, count);
    sha_v(EVP_sha256(), out, DS_SHA256_LEN, count, ap);
    va_end(ap);
}

void ds_sha384_v(uint8_t out[DS_SHA384_LEN], int count, ...)
{
    va_list ap;
    va_start(ap, count);
    sha_v(EVP_sha384(), out, DS_SHA384_LEN, count, ap);
    va_end(ap);
}

void ds_sha512_v(uint8_t out[DS_SHA512_LEN], int count, ...)
{
    va_list ap;
    va_start(ap, count);
    sha_v(EVP_sha512(), out, DS_SHA512_LEN, count, ap);
    va_end(ap);
}

int ds_random(void *out, size_t len)
{
    uint8_t *p = out;
    while (len > 0) {
        int n = len > INT_MAX ? INT_MAX : (int)len;
        if (RAND_bytes(p, n) != 1)
            return -DS_E_CRYPTO;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}
