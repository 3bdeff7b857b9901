/* SPDX-License-Identifier: Apache-2.0 */
/*
 * secp256k1 keys and recoverable ECDSA signatures (libsecp256k1), the Ethereum-style
 * signatures dstack's KMS and guest agent exchange (r||s||v, RFC 6979 nonces, low-s).
 *
 * Contexts: verification, recovery, parsing and key checks use libsecp256k1's built-in
 * read-only secp256k1_context_static. Key derivation and signing need a context whose
 * generator-multiplication blinding is randomized (side-channel hardening); creating and
 * randomizing one costs far more than a signature, so one is built lazily under pthread_once
 * and then only ever passed as `const` (libsecp256k1 documents const contexts as safe to share
 * between threads). It is immutable after initialization, so it is not the mutable global
 * state lib/ forbids, and it is never freed (one small allocation for the process lifetime).
 *
 * Malleability: ds_k256_sign_recoverable always produces low-s signatures. ds_k256_verify
 * and ds_k256_recover accept both low- and high-s forms (verify normalizes first), matching
 * Ethereum's ecrecover and the Rust k256 recover; callers that need canonical signatures must
 * check s themselves.
 */
#include <pthread.h>
#include <string.h>

#include <secp256k1.h>
#include <secp256k1_recovery.h>

#include "dstack/crypto.h"

#define K256_PRIV_LEN             32
#define K256_PUB_COMPRESSED_LEN   33
#define K256_PUB_UNCOMPRESSED_LEN 65
#define K256_SIG_LEN              64
/* Ethereum's legacy v offset: v = 27 + recovery id. */
#define K256_V_LEGACY_OFFSET 27

static secp256k1_context *k256_sign_ctx;
static pthread_once_t k256_sign_once = PTHREAD_ONCE_INIT;

static void k256_sign_ctx_init(void)
{
    uint8_t seed[32];
    secp256k1_context *ctx = secp256k1_context_create(SECP256K1_CONTEXT_NONE);
    if (!ctx)
        return;
    if (ds_random(seed, sizeof(seed)) < 0 || !secp256k1_context_randomize(ctx, seed)) {
        secp256k1_context_destroy(ctx);
        ctx = NULL;
    }
    ds_wipe(seed, sizeof(seed));
    k256_sign_ctx = ctx;
}

static const secp256k1_context *sign_ctx(void)
{
    if (pthread_once(&k256_sign_once, k256_sign_ctx_init) != 0)
        return NULL;
    return k256_sign_ctx;
}

bool ds_k256_valid_private(const uint8_t priv[32])
{
    return priv && secp256k1_ec_seckey_verify(secp256k1_context_static, priv) == 1;
}

static int k256_public(const uint8_t priv[32], uint8_t *out, size_t out_len, unsigned flags)
{
    const secp256k1_context *ctx = sign_ctx();
    secp256k1_pubkey pk;
    size_t len = out_len;
    if (!ctx)
        return -DS_E_CRYPTO;
    if (!ds_k256_valid_private(priv))
        return -DS_E_FORMAT;
    if (!secp256k1_ec_pubkey_create(ctx, &pk, priv))
        return -DS_E_FORMAT;
    if (!secp256k1_ec_pubkey_serialize(secp256k1_context_static, out, &len, &pk, flags) ||
        len != out_len)
        return -DS_E_CRYPTO;
    return 0;
}

int ds_k256_public(const uint8_t priv[32], uint8_t out_pub33[33])
{
    uint8_t pub[K256_PUB_COMPRESSED_LEN];
    DS_TRY(k256_public(priv, pub, sizeof(pub), SECP256K1_EC_COMPRESSED));
    memcpy(out_pub33, pub, sizeof(pub));
    return 0;
}

int ds_k256_public_uncompressed(const uint8_t priv[32], uint8_t out_pub65[65])
{
    uint8_t pub[K256_PUB_UNCOMPRESSED_LEN];
    DS_TRY(k256_public(priv, pub, sizeof(pub), SECP256K1_EC_UNCOMPRESSED));
    memcpy(out_pub65, pub, sizeof(pub));
    return 0;
}

int ds_k256_sign_recoverable(const uint8_t priv[32], const uint8_t digest[32],
                             uint8_t out_sig65[65])
{
    const secp256k1_context *ctx = sign_ctx();
    secp256k1_ecdsa_recoverable_signature sig;
    uint8_t raw[K256_SIG_LEN];
    int recid = -1;
    if (!ctx)
        return -DS_E_CRYPTO;
    if (!digest || !ds_k256_valid_private(priv))
        return -DS_E_FORMAT;
    /* NULL nonce function = RFC 6979; libsecp256k1 signs with low s. */
    if (!secp256k1_ecdsa_sign_recoverable(ctx, &sig, digest, priv, NULL, NULL))
        return -DS_E_CRYPTO;
    if (!secp256k1_ecdsa_recoverable_signature_serialize_compact(secp256k1_context_static, raw,
                                                                 &recid, &sig) ||
        recid < 0 || recid > 3)
        return -DS_E_CRYPTO;
    memcpy(out_sig65, raw, K256_SIG_LEN);
    out_sig65[K256_SIG_LEN] = (uint8_t)recid;
    return 0;
}

int ds_k256_recover(const uint8_t sig65[65], const uint8_t digest[32], uint8_t out_pub33[33])
{
    secp256k1_ecdsa_recoverable_signature sig;
    secp256k1_pubkey pk;
    uint8_t pub[K256_PUB_COMPRESSED_LEN];
    size_t len = sizeof(pub);
    if (!sig65 || !digest)
        return -DS_E_FORMAT;
    int v = sig65[K256_SIG_LEN];
    if (v >= K256_V_LEGACY_OFFSET)
        v -= K256_V_LEGACY_OFFSET;
    /* Ids 2 and 3 (r >= n) have probability ~2^-127 and Ethereum does not use them. */
    if (v != 0 && v != 1)
        return -DS_E_FORMAT;
    /* Fails when r or s >= n. */
    if (!secp256k1_ecdsa_recoverable_signature_parse_compact(secp256k1_context_static, &sig, sig65,
                                                             v))
        return -DS_E_SIGNATURE;
    if (!secp256k1_ecdsa_recover(secp256k1_context_static, &pk, &sig, digest))
        return -DS_E_SIGNATURE;
    if (!secp256k1_ec_pubkey_serialize(secp256k1_context_static, pub, &len, &pk,
                                       SECP256K1_EC_COMPRESSED) ||
        len != sizeof(pub))
        return -DS_E_CRYPTO;
    memcpy(out_pub33, pub, sizeof(pub));
    return 0;
}

int ds_k256_verify(const uint8_t *pub, size_t pub_len, const uint8_t digest[32],
                   const uint8_t sig64[64])
{
    secp256k1_pubkey pk;
    secp256k1_ecdsa_signature sig;
    if (!pub || !digest || !sig64)
        return -DS_E_FORMAT;
    if (pub_len != K256_PUB_COMPRESSED_LEN && pub_len != K256_PUB_UNCOMPRESSED_LEN)
        return -DS_E_FORMAT;
    /* Rejects bad prefixes, x >= p and points not on the curve. */
    if (!secp256k1_ec_pubkey_parse(secp256k1_context_static, &pk, pub, pub_len))
        return -DS_E_FORMAT;
    if (!secp256k1_ecdsa_signature_parse_compact(secp256k1_context_static, &sig, sig64))
        return -DS_E_SIGNATURE;
    /* Accept high s too (see the file comment): verify checks the low-s form only. */
    (void)secp256k1_ecdsa_signature_normalize(secp256k1_context_static, &sig, &sig);
    if (!secp256k1_ecdsa_verify(secp256k1_context_static, &sig, digest, &pk))
        return -DS_E_SIGNATURE;
    return 0;
}
