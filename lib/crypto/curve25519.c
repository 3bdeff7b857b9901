/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Ed25519 signatures (RFC 8032, pure Ed25519, no prehash) and X25519 key agreement
 * (RFC 7748) through OpenSSL's raw-key EVP interface. Keys are the raw 32-byte strings of the
 * RFCs: an Ed25519 private key is the 32-byte seed, an X25519 private key the 32-byte scalar
 * (OpenSSL clamps it). OpenSSL keeps its copy of a private key in secure memory and clears
 * it on free; intermediate secrets here are wiped before returning.
 *
 * Errors: -DS_E_SIGNATURE for a signature that does not verify (including an undecodable
 * public key or a non-canonical S, which OpenSSL rejects during verification);
 * -DS_E_FORMAT from ds_x25519 when the peer key is a small-order point (the shared secret
 * would be all zero, RFC 7748 section 6.1); -DS_E_CRYPTO when OpenSSL itself fails.
 */
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "dstack/crypto.h"

#define ED25519_KEY_LEN 32
#define ED25519_SIG_LEN 64
#define X25519_KEY_LEN  32

static int raw_public(const char *alg, const uint8_t priv[32], uint8_t out[32])
{
    uint8_t pub[32];
    size_t len = sizeof(pub);
    int ret = -DS_E_CRYPTO;
    if (!priv)
        return -DS_E_FORMAT;
    ERR_set_mark();
    EVP_PKEY *pkey = EVP_PKEY_new_raw_private_key_ex(NULL, alg, NULL, priv, 32);
    if (!pkey || EVP_PKEY_get_raw_public_key(pkey, pub, &len) != 1 || len != sizeof(pub))
        goto out;
    memcpy(out, pub, sizeof(pub));
    ret = 0;
out:
    EVP_PKEY_free(pkey);
    ERR_pop_to_mark();
    return ret;
}

int ds_ed25519_public(const uint8_t seed[32], uint8_t out_pub[32])
{
    return raw_public("ED25519", seed, out_pub);
}

int ds_x25519_public(const uint8_t priv[32], uint8_t out_pub[32])
{
    return raw_public("X25519", priv, out_pub);
}

int ds_ed25519_sign(const uint8_t seed[32], const void *msg, size_t len, uint8_t out_sig[64])
{
    uint8_t sig[ED25519_SIG_LEN];
    size_t sig_len = sizeof(sig);
    EVP_PKEY *pkey = NULL;
    EVP_MD_CTX *md = NULL;
    int ret = -DS_E_CRYPTO;
    if (!seed || (!msg && len))
        return -DS_E_FORMAT;
    ERR_set_mark();
    pkey = EVP_PKEY_new_raw_private_key_ex(NULL, "ED25519", NULL, seed, ED25519_KEY_LEN);
    md = EVP_MD_CTX_new();
    if (!pkey || !md)
        goto out;
    /* Ed25519 hashes internally: no digest is named (RFC 8032 section 5.1.6). */
    if (EVP_DigestSignInit_ex(md, NULL, NULL, NULL, NULL, pkey, NULL) != 1)
        goto out;
    if (EVP_DigestSign(md, sig, &sig_len, msg ? msg : (const void *)"", len) != 1 ||
        sig_len != sizeof(sig))
        goto out;
    memcpy(out_sig, sig, sizeof(sig));
    ret = 0;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    ERR_pop_to_mark();
    return ret;
}

int ds_ed25519_verify(const uint8_t pub[32], const void *msg, size_t len, const uint8_t sig[64])
{
    EVP_PKEY *pkey = NULL;
    EVP_MD_CTX *md = NULL;
    int ret = -DS_E_CRYPTO;
    if (!pub || !sig || (!msg && len))
        return -DS_E_FORMAT;
    ERR_set_mark();
    pkey = EVP_PKEY_new_raw_public_key_ex(NULL, "ED25519", NULL, pub, ED25519_KEY_LEN);
    md = EVP_MD_CTX_new();
    if (!pkey || !md)
        goto out;
    if (EVP_DigestVerifyInit_ex(md, NULL, NULL, NULL, NULL, pkey, NULL) != 1)
        goto out;
    int v = EVP_DigestVerify(md, sig, ED25519_SIG_LEN, msg ? msg : (const void *)"", len);
    /* 0 is a bad signature; OpenSSL also reports an undecodable key as a failed verify. */
    ret = v == 1 ? 0 : v == 0 ? -DS_E_SIGNATURE : -DS_E_CRYPTO;
out:
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pkey);
    ERR_pop_to_mark();
    return ret;
}

int ds_x25519(const uint8_t priv[32], const uint8_t peer_pub[32], uint8_t out_shared[32])
{
    uint8_t shared[X25519_KEY_LEN];
    size_t shared_len = sizeof(shared);
    EVP_PKEY *key = NULL, *peer = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    int ret = -DS_E_CRYPTO;
    if (!priv || !peer_pub)
        return -DS_E_FORMAT;
    ERR_set_mark();
    key = EVP_PKEY_new_raw_private_key_ex(NULL, "X25519", NULL, priv, X25519_KEY_LEN);
    peer = EVP_PKEY_new_raw_public_key_ex(NULL, "X25519", NULL, peer_pub, X25519_KEY_LEN);
    if (!key || !peer)
        goto out;
    ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
    if (!ctx || EVP_PKEY_derive_init(ctx) != 1 || EVP_PKEY_derive_set_peer(ctx, peer) != 1)
        goto out;
    /* OpenSSL refuses an all-zero result, i.e. a small-order peer point. */
    if (EVP_PKEY_derive(ctx, shared, &shared_len) != 1 || shared_len != sizeof(shared)) {
        ret = -DS_E_FORMAT;
        goto out;
    }
    memcpy(out_shared, shared, sizeof(shared));
    ret = 0;
out:
    ds_wipe(shared, sizeof(shared));
    EVP_PKEY_CTX_free(ctx);
    EVP_PKEY_free(peer);
    EVP_PKEY_free(key);
    ERR_pop_to_mark();
    return ret;
}
