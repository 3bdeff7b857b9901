/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack crypto: hashes (SHA-2 via OpenSSL, Keccak-256/384/512 by hand because OpenSSL 3.0
 * lacks them), HKDF-SHA256, ECDSA P-256/P-384 with the raw r||s signature form DCAP uses,
 * secp256k1 recoverable signatures (libsecp256k1), Ed25519 and X25519 (OpenSSL).
 *
 * Keys are passed as raw bytes: private scalars big-endian (32 or 48 bytes), public keys
 * uncompressed without the 0x04 prefix (X||Y, 64 or 96 bytes) unless a function says
 * otherwise. Callers wipe private keys with ds_wipe() when done.
 */
#ifndef DSTACK_CRYPTO_H
#define DSTACK_CRYPTO_H

#include "dstack/base.h"

#define DS_SHA256_LEN    32
#define DS_SHA384_LEN    48
#define DS_SHA512_LEN    64
#define DS_KECCAK256_LEN 32
#define DS_KECCAK384_LEN 48
#define DS_KECCAK512_LEN 64

void ds_sha256(const void *data, size_t len, uint8_t out[DS_SHA256_LEN]);
void ds_sha384(const void *data, size_t len, uint8_t out[DS_SHA384_LEN]);
void ds_sha512(const void *data, size_t len, uint8_t out[DS_SHA512_LEN]);

/*
 * Multi-part SHA-2 over `count` (const void *ptr, size_t len) pairs, e.g.
 * ds_sha384_v(out, 2, a, (size_t)48, b, b_len). Lengths are read as size_t: cast literals.
 * out may alias an input (RTMR extension does this).
 */
void ds_sha256_v(uint8_t out[DS_SHA256_LEN], int count, ...);
void ds_sha384_v(uint8_t out[DS_SHA384_LEN], int count, ...);
void ds_sha512_v(uint8_t out[DS_SHA512_LEN], int count, ...);

/* Keccak-256 as Ethereum uses it (original padding 0x01, not SHA3's 0x06). */
void ds_keccak256(const void *data, size_t len, uint8_t out[DS_KECCAK256_LEN]);
struct ds_keccak {
    uint64_t st[25];
    size_t pos;
    size_t rate;       /* bytes per block: 200 - 2 * digest_len (set by the init functions) */
    size_t digest_len; /* DS_KECCAK256_LEN, DS_KECCAK384_LEN or DS_KECCAK512_LEN */
};
void ds_keccak256_init(struct ds_keccak *k);
void ds_keccak256_update(struct ds_keccak *k, const void *data, size_t len);
void ds_keccak256_final(struct ds_keccak *k, uint8_t out[DS_KECCAK256_LEN]);

/* Keccak-384 and Keccak-512 (original padding 0x01; rates 104 and 72 bytes), the variants the
 * SDK's report-data hash algorithms "keccak384" / "keccak512" name (pycryptodome
 * keccak.new(digest_bits=384/512), not SHA3-384/512). */
void ds_keccak384(const void *data, size_t len, uint8_t out[DS_KECCAK384_LEN]);
void ds_keccak512(const void *data, size_t len, uint8_t out[DS_KECCAK512_LEN]);
/* Streaming form for any of the three sizes: digest_len is 32, 48 or 64 (else -EINVAL).
 * ds_keccak_final writes k->digest_len bytes to out and wipes the state. */
DS_MUST_USE int ds_keccak_init(struct ds_keccak *k, size_t digest_len);
void ds_keccak_update(struct ds_keccak *k, const void *data, size_t len);
void ds_keccak_final(struct ds_keccak *k, uint8_t *out);

/* HKDF-SHA256 (RFC 5869). salt may be NULL/0. Returns 0 or -DS_E_CRYPTO. */
DS_MUST_USE int ds_hkdf_sha256(const void *salt, size_t salt_len, const void *ikm, size_t ikm_len,
                               const void *info, size_t info_len, uint8_t *out, size_t out_len);

/* Cryptographically secure random bytes. Returns 0 or -DS_E_CRYPTO. */
DS_MUST_USE int ds_random(void *out, size_t len);

/* ---- ECDSA over NIST curves ------------------------------------------------------------------ */

enum ds_ec_curve { DS_EC_P256, DS_EC_P384 };

/* Size in bytes of one coordinate / scalar: 32 for P-256, 48 for P-384. */
size_t ds_ec_size(enum ds_ec_curve curve);

/*
 * Verify a raw r||s signature (2*size bytes) over the SHA-256 (P-256) or SHA-384 (P-384)
 * hash of msg, with public key X||Y (2*size bytes, no 0x04 prefix; a 65/97-byte key starting
 * with 0x04 is accepted too). Returns 0 when valid, -DS_E_SIGNATURE when the signature does
 * not verify or is malformed (wrong length, r or s zero or >= the order), -DS_E_FORMAT for a
 * malformed public key (wrong length, not on the curve).
 */
DS_MUST_USE int ds_ecdsa_verify_raw(enum ds_ec_curve curve, const uint8_t *pub, size_t pub_len,
                                    const void *msg, size_t msg_len, const uint8_t *sig,
                                    size_t sig_len);
/* Same, with the digest already computed (digest_len = 32, 48 or 64). */
DS_MUST_USE int ds_ecdsa_verify_digest(enum ds_ec_curve curve, const uint8_t *pub, size_t pub_len,
                                       const uint8_t *digest, size_t digest_len, const uint8_t *sig,
                                       size_t sig_len);
/*
 * Sign SHA-256/384(msg) with private scalar priv (size bytes); writes r||s (2*size bytes) to
 * sig. Deterministic nonces are not required; OpenSSL's randomized ECDSA is used.
 */
DS_MUST_USE int ds_ecdsa_sign_raw(enum ds_ec_curve curve, const uint8_t *priv, const void *msg,
                                  size_t msg_len, uint8_t *sig);
/* Public key X||Y (2*size bytes) from a private scalar. -DS_E_FORMAT for an invalid scalar. */
DS_MUST_USE int ds_ec_public_from_private(enum ds_ec_curve curve, const uint8_t *priv,
                                          uint8_t *pub);
/* Generate a fresh key pair: priv (size bytes), pub X||Y (2*size bytes). */
DS_MUST_USE int ds_ec_generate(enum ds_ec_curve curve, uint8_t *priv, uint8_t *pub);

/* Convert between raw r||s (2*size) and DER ECDSA-Sig-Value. */
DS_MUST_USE int ds_ecdsa_sig_raw_to_der(const uint8_t *raw, size_t raw_len, uint8_t **out_der,
                                        size_t *out_len);
DS_MUST_USE int ds_ecdsa_sig_der_to_raw(const uint8_t *der, size_t der_len, size_t size,
                                        uint8_t *out_raw);

/* ---- secp256k1 (libsecp256k1) ---------------------------------------------------------------- */

/* Compressed (33 bytes) public key of a 32-byte private key. */
DS_MUST_USE int ds_k256_public(const uint8_t priv[32], uint8_t out_pub33[33]);
/* Uncompressed (65 bytes, 0x04 prefix) public key of a 32-byte private key. */
DS_MUST_USE int ds_k256_public_uncompressed(const uint8_t priv[32], uint8_t out_pub65[65]);
/* Recoverable signature over a 32-byte digest: r||s||v (65 bytes, v in {0,1}), low-s. */
DS_MUST_USE int ds_k256_sign_recoverable(const uint8_t priv[32], const uint8_t digest[32],
                                         uint8_t out_sig65[65]);
/* Recover the compressed public key from r||s||v over digest. v may be 0/1 or 27/28. */
DS_MUST_USE int ds_k256_recover(const uint8_t sig65[65], const uint8_t digest[32],
                                uint8_t out_pub33[33]);
/* Verify a 64-byte compact r||s signature over digest with a 33- or 65-byte public key. */
DS_MUST_USE int ds_k256_verify(const uint8_t *pub, size_t pub_len, const uint8_t digest[32],
                               const uint8_t sig64[64]);
/* true when priv is a valid secp256k1 scalar (non-zero, below the order). */
bool ds_k256_valid_private(const uint8_t priv[32]);

/* ---- Ed25519 / X25519 (OpenSSL) ----------------------------------------------------------------
 */

DS_MUST_USE int ds_ed25519_public(const uint8_t seed[32], uint8_t out_pub[32]);
DS_MUST_USE int ds_ed25519_sign(const uint8_t seed[32], const void *msg, size_t len,
                                uint8_t out_sig[64]);
/* 0 when valid, -DS_E_SIGNATURE when not. */
DS_MUST_USE int ds_ed25519_verify(const uint8_t pub[32], const void *msg, size_t len,
                                  const uint8_t sig[64]);
DS_MUST_USE int ds_x25519_public(const uint8_t priv[32], uint8_t out_pub[32]);
DS_MUST_USE int ds_x25519(const uint8_t priv[32], const uint8_t peer_pub[32],
                          uint8_t out_shared[32]);

#endif /* DSTACK_CRYPTO_H */
