/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack keys: dstack's key hierarchy. The "RATLS" HKDF and the P-256 / Diffie-Hellman-secret
 * derivations (spec kms-ratls.md §3.2), the per-app keys the KMS derives from its roots and the
 * k256 signatures it issues over them (§3.3-3.6), the non-KMS seed keys (§3.7), the guest
 * agent's GetKey / Sign / Verify / legacy DeriveKey derivations (guest-agent-api.md §4.2-4.4,
 * §4.6 key part) with a verifier for GetKey signature chains, and the `.appkeys.json` file
 * (§3.8). Built only on lib/crypto primitives.
 *
 * Conventions: private scalars are 32 big-endian bytes; secp256k1 public keys are 33-byte
 * compressed SEC1; P-256 public keys are X||Y (64 bytes); k256 signatures are 65 bytes
 * r||s||recid (recid 0/1, low-s, RFC 6979 nonces). Functions return 0 or a negative error
 * (-DS_E_*, -ERANGE, -ENOMEM, -errno); out parameters are written only on success. Every
 * struct holding secrets says how to wipe it; callers own and wipe their input secrets.
 */
#ifndef DSTACK_KEYS_H
#define DSTACK_KEYS_H

#include "dstack/base.h"
#include "dstack/eventlog.h"

#define DS_KEY_SIZE          32 /* every derived secret / scalar */
#define DS_K256_PUB_SIZE     33 /* compressed secp256k1 public key */
#define DS_K256_SIG_SIZE     65 /* r || s || recid */
#define DS_K256_RS_SIZE      64 /* r || s */
#define DS_ED25519_PUB_SIZE  32
#define DS_ED25519_SIG_SIZE  64
#define DS_X25519_PUB_SIZE   32
#define DS_P256_PUB_SIZE     64  /* X || Y */
#define DS_P256_PKCS8_SIZE   138 /* §3.2 canonical PKCS#8 v1 with public key */
#define DS_P256_SPKI_SIZE    91  /* SubjectPublicKeyInfo DER */
#define DS_APP_ID_SIZE       20
#define DS_KDF_SALT          "RATLS"
#define DS_KDF_PARTS_MAX     16          /* context parts per derivation */
#define DS_KDF_OUT_MAX       (255 * 32)  /* RFC 5869 limit for SHA-256 */
#define DS_KDF_INFO_MAX      (64 * 1024) /* total info bytes */
#define DS_KEYS_ERR_MSG_MAX  128
#define DS_KEYS_ERR_WHAT_MAX 64

/*
 * Optional error detail (pass NULL if not wanted). msg is the text a server should return
 * (upstream's wording where the spec lists one, e.g. "Unsupported algorithm"); what names the
 * offending input: the algorithm name as given (truncated), or the JSON field path such as
 * "k256_key" or "key_provider.Kms.url". Both are NUL-terminated and set whenever a function
 * taking this struct fails because of its input (-DS_E_UNSUPPORTED, -DS_E_FORMAT, -DS_E_LIMIT,
 * or a read error in ds_appkeys_load); left untouched for -EINVAL / -ENOMEM / -DS_E_CRYPTO.
 */
struct ds_keys_error {
    char msg[DS_KEYS_ERR_MSG_MAX];
    char what[DS_KEYS_ERR_WHAT_MAX];
};

/* ---- KDF (kms-ratls.md §3.2) ----------------------------------------------------------------- */

/* One context part of the HKDF info; parts are concatenated without separators. */
struct ds_kdf_part {
    const void *ptr;
    size_t len;
};

/*
 * HKDF-SHA256 with salt "RATLS", IKM ikm, info = parts[0] || ... || parts[count-1], output
 * out_len bytes. count <= DS_KDF_PARTS_MAX and the total info size <= DS_KDF_INFO_MAX (else
 * -DS_E_LIMIT); 1 <= out_len <= DS_KDF_OUT_MAX (else -EINVAL). Returns 0, -EINVAL,
 * -DS_E_LIMIT, -ENOMEM or -DS_E_CRYPTO.
 */
DS_MUST_USE int ds_kdf_derive(const uint8_t *ikm, size_t ikm_len, const struct ds_kdf_part *parts,
                              size_t count, uint8_t *out, size_t out_len);

/* true when s (big-endian) satisfies 1 <= s < n of P-256 (constant time in s). */
bool ds_p256_scalar_valid(const uint8_t s[DS_KEY_SIZE]);

/*
 * derive_p256: d = ds_kdf_derive(parent, parts, 32) as a P-256 scalar. No reduction, no retry:
 * returns -ERANGE when d is 0 or >= n (probability ~2^-32). Other errors as ds_kdf_derive.
 */
DS_MUST_USE int ds_kdf_derive_p256(const uint8_t parent[DS_KEY_SIZE],
                                   const struct ds_kdf_part *parts, size_t count,
                                   uint8_t out_scalar[DS_KEY_SIZE]);

/*
 * derive_dh_secret: SHA-256 of the 138-byte PKCS#8 encoding of ds_kdf_derive_p256(parent,
 * parts). Errors as ds_kdf_derive_p256.
 */
DS_MUST_USE int ds_kdf_derive_dh_secret(const uint8_t parent[DS_KEY_SIZE],
                                        const struct ds_kdf_part *parts, size_t count,
                                        uint8_t out_secret[DS_KEY_SIZE]);

/* ---- P-256 key encodings ----------------------------------------------------------------------
 */

/*
 * The canonical 138-byte PKCS#8 v1 DER of a P-256 scalar (§3.2 layout, ECPrivateKey without
 * [0] parameters, with the [1] public key). Secret output: wipe it. -DS_E_FORMAT when the
 * scalar is out of range.
 */
DS_MUST_USE int ds_p256_pkcs8_der(const uint8_t scalar[DS_KEY_SIZE],
                                  uint8_t out_der[DS_P256_PKCS8_SIZE]);

/*
 * PEM "PRIVATE KEY" of that DER (64-column base64, LF line ends, trailing newline; starts
 * "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg").
 * *out_pem is malloc'd and NUL-terminated, *out_len (may be NULL) its length without the NUL.
 * Release it with ds_keys_free_secret(). Returns 0, -DS_E_FORMAT or -ENOMEM.
 */
DS_MUST_USE int ds_p256_pkcs8_pem(const uint8_t scalar[DS_KEY_SIZE], char **out_pem,
                                  size_t *out_len);

/*
 * The 32-byte scalar of a P-256 private key in PEM, "PRIVATE KEY" (PKCS#8) or "EC PRIVATE
 * KEY" (SEC1), parsed by OpenSSL. Returns 0, -DS_E_FORMAT (not a PEM key), -DS_E_UNSUPPORTED
 * (not a P-256 EC key) or -ENOMEM.
 */
DS_MUST_USE int ds_p256_scalar_from_pem(const char *pem, size_t pem_len,
                                        uint8_t out_scalar[DS_KEY_SIZE]);

/* SubjectPublicKeyInfo DER (91 bytes) of a P-256 public key X||Y. -DS_E_FORMAT if not on curve. */
DS_MUST_USE int ds_p256_spki_der(const uint8_t pub[DS_P256_PUB_SIZE],
                                 uint8_t out_spki[DS_P256_SPKI_SIZE]);

/* Wipe and free a malloc'd NUL-terminated secret string (PEM, JSON). NULL-safe. */
void ds_keys_free_secret(char *s);

/* ---- per-app keys from the KMS roots (kms-ratls.md §3.3-3.6) -----------------------------------
 */

/* All secret fields: wipe the whole struct with ds_wipe(k, sizeof(*k)) when done. */
struct ds_app_keys {
    uint8_t disk_crypt_key[DS_KEY_SIZE];
    uint8_t env_crypt_key[DS_KEY_SIZE];         /* X25519 private, unclamped */
    uint8_t env_public_key[DS_X25519_PUB_SIZE]; /* X25519(env_crypt_key, 9) */
    uint8_t k256_key[DS_KEY_SIZE];              /* app root secp256k1 key */
    uint8_t k256_public_key[DS_K256_PUB_SIZE];  /* compressed */
    uint8_t k256_signature[DS_K256_SIG_SIZE];   /* root_k256 over the issue digest */
};

/*
 * GetAppKey's keys for app_id (20 raw bytes) and instance_id (raw bytes, may be empty; at most
 * 64 bytes, else -DS_E_LIMIT), from the root CA P-256 scalar and the root k256 scalar.
 * Returns 0, -ERANGE (a derived scalar out of range), -DS_E_FORMAT (a root key invalid) or
 * -DS_E_CRYPTO.
 */
#define DS_INSTANCE_ID_MAX 64
DS_MUST_USE int ds_app_keys_from_roots(const uint8_t root_ca[DS_KEY_SIZE],
                                       const uint8_t root_k256[DS_KEY_SIZE],
                                       const uint8_t app_id[DS_APP_ID_SIZE],
                                       const uint8_t *instance_id, size_t instance_id_len,
                                       struct ds_app_keys *out);

/* App CA P-256 scalar = derive_p256(root_ca, app_id || "app-ca"). Secret output. */
DS_MUST_USE int ds_app_ca_scalar(const uint8_t root_ca[DS_KEY_SIZE],
                                 const uint8_t app_id[DS_APP_ID_SIZE],
                                 uint8_t out_scalar[DS_KEY_SIZE]);

/* keccak256("dstack-kms-issued" ":" app_id app_pub33): what k256_signature signs. */
void ds_app_k256_issue_digest(const uint8_t app_id[DS_APP_ID_SIZE],
                              const uint8_t app_pub[DS_K256_PUB_SIZE], uint8_t out_digest[32]);

/*
 * keccak256("dstack-env-encrypt-pubkey" ":" app_id [u64_be(timestamp)] env_pub32): the legacy
 * digest when with_timestamp is false, signature_v1's otherwise.
 */
void ds_env_pubkey_digest(const uint8_t app_id[DS_APP_ID_SIZE],
                          const uint8_t env_pub[DS_X25519_PUB_SIZE], bool with_timestamp,
                          uint64_t timestamp, uint8_t out_digest[32]);

/* Sign that digest with root_k256 (65-byte recoverable signature). 0, -DS_E_FORMAT, -DS_E_CRYPTO.
 */
DS_MUST_USE int ds_env_pubkey_sign(const uint8_t root_k256[DS_KEY_SIZE],
                                   const uint8_t app_id[DS_APP_ID_SIZE],
                                   const uint8_t env_pub[DS_X25519_PUB_SIZE], bool with_timestamp,
                                   uint64_t timestamp, uint8_t out_sig[DS_K256_SIG_SIZE]);

/*
 * Recover the signer (compressed) of an env-pubkey signature (what the SDKs'
 * verifyEnvEncryptPublicKey returns as "0x" + hex). No freshness check here (see
 * ds_env_pubkey_check_time). Returns 0 or -DS_E_FORMAT / -DS_E_SIGNATURE.
 */
DS_MUST_USE int ds_env_pubkey_recover(const uint8_t sig[DS_K256_SIG_SIZE],
                                      const uint8_t app_id[DS_APP_ID_SIZE],
                                      const uint8_t env_pub[DS_X25519_PUB_SIZE],
                                      bool with_timestamp, uint64_t timestamp,
                                      uint8_t out_signer[DS_K256_PUB_SIZE]);

#define DS_ENV_PUBKEY_MAX_AGE_DEFAULT 300 /* seconds, the SDKs' default maxAge */
#define DS_ENV_PUBKEY_MAX_SKEW        60  /* seconds a timestamp may lie in the future */

/*
 * The SDKs' freshness rule for signature_v1 (§3.6): -DS_E_EXPIRED when now - timestamp >
 * max_age or timestamp - now > DS_ENV_PUBKEY_MAX_SKEW, else 0. Times are Unix seconds.
 */
DS_MUST_USE int ds_env_pubkey_check_time(uint64_t timestamp, uint64_t now, uint64_t max_age);

/* ---- non-KMS providers (kms-ratls.md §3.7) ------------------------------------------------------
 */

/* Secrets: wipe with ds_wipe(k, sizeof(*k)). */
struct ds_seed_keys {
    uint8_t app_key[DS_KEY_SIZE];        /* P-256 scalar: derive_p256(seed, "app-key") */
    uint8_t disk_key[DS_KEY_SIZE];       /* P-256 scalar: derive_p256(seed, "app-disk-key") */
    uint8_t disk_crypt_key[DS_KEY_SIZE]; /* sha256(PKCS#8(disk_key)) */
    uint8_t k256_key[DS_KEY_SIZE];       /* derive_key(seed, "app-k256-key") */
};

/* gen_app_keys_from_seed. Returns 0, -ERANGE (scalar out of range) or -DS_E_CRYPTO. */
DS_MUST_USE int ds_app_keys_from_seed(const uint8_t seed[DS_KEY_SIZE], struct ds_seed_keys *out);

/* ---- guest agent derivations (guest-agent-api.md §4.2-4.4, §4.6) -------------------------------
 */

enum ds_key_alg { DS_KEY_ALG_SECP256K1 = 1, DS_KEY_ALG_ED25519 };
enum ds_sign_alg { DS_SIGN_ED25519 = 1, DS_SIGN_SECP256K1, DS_SIGN_SECP256K1_PREHASHED };

/*
 * GetKey's algorithm: "" / "secp256k1" / "k256" -> SECP256K1, "ed25519" -> ED25519; anything
 * else (secp256k1_prehashed included) -> -DS_E_UNSUPPORTED, err msg "Unsupported algorithm",
 * err what = the name. name is (ptr, len), not necessarily NUL-terminated.
 */
DS_MUST_USE int ds_key_alg_parse(const char *name, size_t len, enum ds_key_alg *out,
                                 struct ds_keys_error *err);
/* Sign/Verify's algorithm: "ed25519", "secp256k1", "k256", "secp256k1_prehashed". Else as above. */
DS_MUST_USE int ds_sign_alg_parse(const char *name, size_t len, enum ds_sign_alg *out,
                                  struct ds_keys_error *err);

/* GetKey result. key is secret: wipe the struct with ds_wipe(r, sizeof(*r)). */
struct ds_get_key_result {
    uint8_t key[DS_KEY_SIZE]; /* the derived bytes (scalar or Ed25519 seed) */
    enum ds_key_alg alg;
    uint8_t pubkey[DS_K256_PUB_SIZE]; /* 33 (secp256k1) or 32 (ed25519) bytes used */
    size_t pubkey_len;
    char pubkey_hex[2 * DS_K256_PUB_SIZE + 1];
    /* signature_chain = [signature, k256_signature (k256_signature_len bytes, 0 or 65)] */
    uint8_t signature[DS_K256_SIG_SIZE]; /* app key over keccak256(purpose ":" pubkey_hex) */
    uint8_t k256_signature[DS_K256_SIG_SIZE];
    size_t k256_signature_len;
};

/*
 * GetKey(path, purpose, algorithm) with the app root key k256_key and the KMS-issued
 * k256_signature (k256_sig_len 0 or 65: copied as the chain's second entry; -EINVAL otherwise).
 * path/purpose/algorithm are (ptr, len) byte strings. Returns 0, -DS_E_UNSUPPORTED (algorithm;
 * err set), -ERANGE (derived secp256k1 scalar out of range, negligible), -DS_E_FORMAT (bad
 * k256_key), -DS_E_CRYPTO. Legacy DeriveK256Key returns exactly these values.
 */
DS_MUST_USE int ds_guest_get_key(const uint8_t k256_key[DS_KEY_SIZE], const uint8_t *k256_sig,
                                 size_t k256_sig_len, const char *path, size_t path_len,
                                 const char *purpose, size_t purpose_len, const char *algorithm,
                                 size_t algorithm_len, struct ds_get_key_result *out,
                                 struct ds_keys_error *err);

/* Sign result (no secrets). signature_chain = [signature, chain_sig0, k256_signature]. */
struct ds_sign_result {
    uint8_t signature[DS_ED25519_SIG_SIZE]; /* 64 bytes for every algorithm */
    size_t signature_len;
    uint8_t public_key[DS_K256_PUB_SIZE]; /* 33 (secp256k1) or 32 (ed25519) bytes used */
    size_t public_key_len;
    uint8_t chain_sig0[DS_K256_SIG_SIZE]; /* GetKey("vms", "signing", ...).signature */
    uint8_t k256_signature[DS_K256_SIG_SIZE];
    size_t k256_signature_len;
};

/*
 * Sign (§4.4): key = GetKey("vms", "signing", alg == prehashed ? secp256k1 : alg). ed25519:
 * RFC 8032 over data; secp256k1: ECDSA over SHA-256(data); secp256k1_prehashed: data must be
 * 32 bytes (else -DS_E_FORMAT, msg "Pre-hashed signing requires a 32-byte digest, but received N
 * bytes") and is the digest. secp256k1 signatures are 64-byte r||s, low-s, RFC 6979.
 * Returns 0, -DS_E_UNSUPPORTED (msg "Unsupported algorithm"), -DS_E_FORMAT, -EINVAL (bad
 * arguments), -DS_E_CRYPTO.
 */
DS_MUST_USE int ds_guest_sign(const uint8_t k256_key[DS_KEY_SIZE], const uint8_t *k256_sig,
                              size_t k256_sig_len, const char *algorithm, size_t algorithm_len,
                              const uint8_t *data, size_t data_len, struct ds_sign_result *out,
                              struct ds_keys_error *err);

/*
 * Verify (§4.4). *out_valid = whether the signature verifies (0 returned either way).
 * Malformed input is an error, not false: -DS_E_UNSUPPORTED (algorithm), -DS_E_FORMAT (ed25519
 * public key not 32 bytes or signature not 64; secp256k1 public key not a valid 33/65-byte SEC1
 * point; signature not 64 bytes r||s with 0 < r, s < n; prehashed data not 32 bytes). High-s
 * secp256k1 signatures are accepted.
 */
DS_MUST_USE int ds_guest_verify(const char *algorithm, size_t algorithm_len, const uint8_t *data,
                                size_t data_len, const uint8_t *sig, size_t sig_len,
                                const uint8_t *pub, size_t pub_len, bool *out_valid,
                                struct ds_keys_error *err);

/*
 * Legacy tappd DeriveKey key (§4.6): P-256 scalar HKDF(salt "RATLS", k256_key, path). -ERANGE
 * if out of range. Feed it to ds_p256_pkcs8_pem for the `key` field.
 */
DS_MUST_USE int ds_guest_derive_tls_key(const uint8_t k256_key[DS_KEY_SIZE], const char *path,
                                        size_t path_len, uint8_t out_scalar[DS_KEY_SIZE]);

/*
 * GetTlsKey / DeriveKey(random_seed) key: P-256 scalar HKDF(salt "RATLS", 32 random bytes, "").
 * A fresh key per call. Returns 0 or -DS_E_CRYPTO.
 */
DS_MUST_USE int ds_guest_random_tls_key(uint8_t out_scalar[DS_KEY_SIZE]);

/* What a GetKey signature chain recovers to. */
struct ds_key_chain_info {
    uint8_t app_pubkey[DS_K256_PUB_SIZE]; /* from signature over purpose:hex(pubkey) */
    uint8_t kms_pubkey[DS_K256_PUB_SIZE]; /* from k256_signature over the issue digest */
};

/*
 * Verify a GetKey signature chain (kms-ratls.md §3.4 recipe): recover the app key from sig0
 * over keccak256(purpose ":" hex(pubkey)), then the KMS key from k256_sig over
 * keccak256("dstack-kms-issued:" app_id app_pubkey). pubkey is the derived key's public key (33
 * or 32 bytes). If expected_kms_pub (33 bytes) is non-NULL the KMS key must equal it
 * (-DS_E_MISMATCH otherwise). Returns 0, -EINVAL (pubkey length), -DS_E_FORMAT /
 * -DS_E_SIGNATURE (unrecoverable signature), -DS_E_MISMATCH.
 */
DS_MUST_USE int ds_key_chain_verify(const uint8_t *pubkey, size_t pubkey_len, const char *purpose,
                                    size_t purpose_len, const uint8_t sig0[DS_K256_SIG_SIZE],
                                    const uint8_t app_id[DS_APP_ID_SIZE],
                                    const uint8_t k256_sig[DS_K256_SIG_SIZE],
                                    const uint8_t *expected_kms_pub, struct ds_key_chain_info *out);

/* ---- .appkeys.json (kms-ratls.md §3.8)
 * ------------------------------------------------------------ */

#define DS_APPKEYS_FILE_MAX  (256 * 1024)
#define DS_APPKEYS_BYTES_MAX 4096 /* any hex field, decoded */

/* The key provider kinds are enum ds_key_provider_kind of eventlog.h (their values are the
 * wire kind bytes of mr_config_id v2). */

/*
 * The parsed file. All pointers are owned (malloc'd, NUL-terminated strings); release with
 * ds_appkeys_done(), which wipes the secrets. Unused fields of the provider are NULL / 0.
 * Lengths: disk_crypt_key 32; env_crypt_key 0 or 32; k256_key 32; k256_signature 0 or 65.
 */
struct ds_appkeys {
    uint8_t disk_crypt_key[DS_KEY_SIZE];
    size_t disk_crypt_key_len;
    uint8_t env_crypt_key[DS_KEY_SIZE];
    size_t env_crypt_key_len;
    uint8_t k256_key[DS_KEY_SIZE];
    uint8_t k256_signature[DS_K256_SIG_SIZE];
    size_t k256_signature_len;
    char *gateway_app_id;
    char *ca_cert;
    enum ds_key_provider_kind provider;
    char *key;   /* None / Local / Tpm: app key PEM (secret) */
    uint8_t *mr; /* Local */
    size_t mr_len;
    uint8_t *pubkey; /* Tpm: TPM pubkey; Kms: root CA SPKI DER */
    size_t pubkey_len;
    char *url;         /* Kms */
    char *tmp_ca_key;  /* Kms (secret) */
    char *tmp_ca_cert; /* Kms */
};

/* Wipe secrets, free everything, zero the struct. NULL-safe; safe on a zeroed struct. */
void ds_appkeys_done(struct ds_appkeys *k);

/*
 * Parse the JSON text. Top-level fields: disk_crypt_key, k256_key, k256_signature,
 * gateway_app_id, ca_cert, key_provider required; env_crypt_key optional (absent = empty).
 * key_provider must be an object with exactly one of None/Local/Tpm/Kms, each with its
 * required fields. Unknown other fields are ignored (serde's default). Returns 0,
 * -DS_E_FORMAT (err->what = the field path, err->msg says why), -DS_E_LIMIT, -ENOMEM.
 */
DS_MUST_USE int ds_appkeys_parse(const char *json, size_t len, struct ds_appkeys *out,
                                 struct ds_keys_error *err);
/* Read (at most DS_APPKEYS_FILE_MAX bytes) and parse. -errno / -DS_E_LIMIT from reading. */
DS_MUST_USE int ds_appkeys_load(const char *path, struct ds_appkeys *out,
                                struct ds_keys_error *err);
/*
 * Serialize to compact JSON with the §3.8 field names (lowercase hex bytes). *out_json is
 * malloc'd; release with ds_keys_free_secret(). -EINVAL for an inconsistent struct
 * (missing provider field, bad lengths), -ENOMEM.
 */
DS_MUST_USE int ds_appkeys_serialize(const struct ds_appkeys *k, char **out_json, size_t *out_len);
/* Serialize and write atomically with mode 0600. */
DS_MUST_USE int ds_appkeys_save(const char *path, const struct ds_appkeys *k);

#endif /* DSTACK_KEYS_H */
