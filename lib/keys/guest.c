/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent's key operations (guest-agent-api.md §4.2-4.4, §4.6): GetKey derives a key
 * per path from the app root secp256k1 key and signs "purpose:pubkey_hex" with the app key;
 * Sign/Verify use GetKey's "vms" key with Ed25519, ECDSA over SHA-256, or a caller-supplied
 * digest; the legacy DeriveKey P-256 key; and the verifier of GetKey's signature chain
 * (kms-ratls.md §3.4 recipe) that tests and the CLI use.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "dstack/crypto.h"
#include "dstack/keys.h"

#define ALG_SECP256K1              "secp256k1"
#define ALG_K256                   "k256"
#define ALG_ED25519                "ed25519"
#define ALG_PREHASHED              "secp256k1_prehashed"
#define SIGN_PATH                  "vms"
#define SIGN_PURPOSE               "signing"
#define MSG_UNSUPPORTED            "Unsupported algorithm"
#define PURPOSE_SEP                ":"
#define PREHASH_SIZE               32
#define K256_PUB_UNCOMPRESSED_SIZE 65

/* Stands in for a NULL data pointer of length 0, so primitives never see NULL. */
static const uint8_t empty_data[1];

static void set_err(struct ds_keys_error *err, const char *what, size_t what_len, const char *fmt,
                    ...) __attribute__((format(printf, 4, 5)));

static void set_err(struct ds_keys_error *err, const char *what, size_t what_len, const char *fmt,
                    ...)
{
    va_list ap;
    if (!err)
        return;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    if (what_len >= sizeof(err->what))
        what_len = sizeof(err->what) - 1;
    if (what_len)
        memcpy(err->what, what, what_len);
    err->what[what_len] = '\0';
}

static bool name_is(const char *name, size_t len, const char *lit)
{
    return len == strlen(lit) && memcmp(name, lit, len) == 0;
}

int ds_key_alg_parse(const char *name, size_t len, enum ds_key_alg *out, struct ds_keys_error *err)
{
    if ((!name && len) || !out)
        return -EINVAL;
    if (len == 0 || name_is(name, len, ALG_SECP256K1) || name_is(name, len, ALG_K256)) {
        *out = DS_KEY_ALG_SECP256K1;
        return 0;
    }
    if (name_is(name, len, ALG_ED25519)) {
        *out = DS_KEY_ALG_ED25519;
        return 0;
    }
    set_err(err, name, len, MSG_UNSUPPORTED);
    return -DS_E_UNSUPPORTED;
}

int ds_sign_alg_parse(const char *name, size_t len, enum ds_sign_alg *out,
                      struct ds_keys_error *err)
{
    if ((!name && len) || !out)
        return -EINVAL;
    if (name_is(name, len, ALG_ED25519)) {
        *out = DS_SIGN_ED25519;
    } else if (name_is(name, len, ALG_SECP256K1) || name_is(name, len, ALG_K256)) {
        *out = DS_SIGN_SECP256K1;
    } else if (name_is(name, len, ALG_PREHASHED)) {
        *out = DS_SIGN_SECP256K1_PREHASHED;
    } else {
        set_err(err, name, len, MSG_UNSUPPORTED);
        return -DS_E_UNSUPPORTED;
    }
    return 0;
}

/* keccak256(purpose ":" pubkey_hex), the digest of GetKey's signature_chain[0]. */
static void purpose_digest(const char *purpose, size_t purpose_len, const char *pubkey_hex,
                           uint8_t out[32])
{
    struct ds_keccak k;
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, purpose, purpose_len);
    ds_keccak256_update(&k, PURPOSE_SEP, strlen(PURPOSE_SEP));
    ds_keccak256_update(&k, pubkey_hex, strlen(pubkey_hex));
    ds_keccak256_final(&k, out);
}

static int get_key_alg(const uint8_t k256_key[DS_KEY_SIZE], const uint8_t *k256_sig,
                       size_t k256_sig_len, const char *path, size_t path_len, const char *purpose,
                       size_t purpose_len, enum ds_key_alg alg, struct ds_get_key_result *out)
{
    struct ds_get_key_result r;
    uint8_t digest[32];
    int ret;

    if (!ds_k256_valid_private(k256_key))
        return -DS_E_FORMAT;
    memset(&r, 0, sizeof(r));
    r.alg = alg;
    const struct ds_kdf_part parts[] = {{path, path_len}};
    ret = ds_kdf_derive(k256_key, DS_KEY_SIZE, parts, DS_ARRAY_SIZE(parts), r.key, sizeof(r.key));
    if (ret < 0)
        goto out;
    if (alg == DS_KEY_ALG_SECP256K1) {
        if (!ds_k256_valid_private(r.key)) {
            ret = -ERANGE;
            goto out;
        }
        ret = ds_k256_public(r.key, r.pubkey);
        r.pubkey_len = DS_K256_PUB_SIZE;
    } else {
        ret = ds_ed25519_public(r.key, r.pubkey);
        r.pubkey_len = DS_ED25519_PUB_SIZE;
    }
    if (ret < 0)
        goto out;
    ds_hex_encode(r.pubkey, r.pubkey_len, r.pubkey_hex);
    purpose_digest(purpose, purpose_len, r.pubkey_hex, digest);
    ret = ds_k256_sign_recoverable(k256_key, digest, r.signature);
    if (ret < 0)
        goto out;
    if (k256_sig_len)
        memcpy(r.k256_signature, k256_sig, k256_sig_len);
    r.k256_signature_len = k256_sig_len;
    memcpy(out, &r, sizeof(r));
    ret = 0;
out:
    ds_wipe(&r, sizeof(r));
    return ret;
}

int ds_guest_get_key(const uint8_t k256_key[DS_KEY_SIZE], const uint8_t *k256_sig,
                     size_t k256_sig_len, const char *path, size_t path_len, const char *purpose,
                     size_t purpose_len, const char *algorithm, size_t algorithm_len,
                     struct ds_get_key_result *out, struct ds_keys_error *err)
{
    enum ds_key_alg alg;
    if (!k256_key || !out || (!path && path_len) || (!purpose && purpose_len) ||
        (k256_sig_len != 0 && k256_sig_len != DS_K256_SIG_SIZE) || (!k256_sig && k256_sig_len))
        return -EINVAL;
    if (path_len > DS_KDF_INFO_MAX)
        return -DS_E_LIMIT;
    DS_TRY(ds_key_alg_parse(algorithm, algorithm_len, &alg, err));
    return get_key_alg(k256_key, k256_sig, k256_sig_len, path, path_len, purpose, purpose_len, alg,
                       out);
}

int ds_guest_sign(const uint8_t k256_key[DS_KEY_SIZE], const uint8_t *k256_sig, size_t k256_sig_len,
                  const char *algorithm, size_t algorithm_len, const uint8_t *data, size_t data_len,
                  struct ds_sign_result *out, struct ds_keys_error *err)
{
    struct ds_get_key_result key;
    struct ds_sign_result r;
    enum ds_sign_alg alg;
    uint8_t digest[32], sig65[DS_K256_SIG_SIZE];
    int ret;

    if (!k256_key || !out || (!data && data_len) ||
        (k256_sig_len != 0 && k256_sig_len != DS_K256_SIG_SIZE) || (!k256_sig && k256_sig_len))
        return -EINVAL;
    DS_TRY(ds_sign_alg_parse(algorithm, algorithm_len, &alg, err));
    if (!data)
        data = empty_data;
    memset(&r, 0, sizeof(r));
    memset(&key, 0, sizeof(key));
    /* §4.4: GetKey("vms", "signing", secp256k1 for the prehashed form, else the algorithm). */
    ret = get_key_alg(k256_key, k256_sig, k256_sig_len, SIGN_PATH, strlen(SIGN_PATH), SIGN_PURPOSE,
                      strlen(SIGN_PURPOSE),
                      alg == DS_SIGN_ED25519 ? DS_KEY_ALG_ED25519 : DS_KEY_ALG_SECP256K1, &key);
    if (ret < 0)
        goto out;
    switch (alg) {
    case DS_SIGN_ED25519:
        ret = ds_ed25519_sign(key.key, data, data_len, r.signature);
        break;
    case DS_SIGN_SECP256K1:
        ds_sha256(data, data_len, digest);
        ret = ds_k256_sign_recoverable(key.key, digest, sig65);
        break;
    case DS_SIGN_SECP256K1_PREHASHED:
        if (data_len != PREHASH_SIZE) {
            set_err(err, ALG_PREHASHED, strlen(ALG_PREHASHED),
                    "Pre-hashed signing requires a 32-byte digest, but received %zu bytes",
                    data_len);
            ret = -DS_E_FORMAT;
            goto out;
        }
        ret = ds_k256_sign_recoverable(key.key, data, sig65);
        break;
    default:
        ret = -EINVAL;
        break;
    }
    if (ret < 0)
        goto out;
    if (alg != DS_SIGN_ED25519)
        memcpy(r.signature, sig65, DS_K256_RS_SIZE); /* r||s, no recovery byte */
    r.signature_len = DS_ED25519_SIG_SIZE;
    memcpy(r.public_key, key.pubkey, key.pubkey_len);
    r.public_key_len = key.pubkey_len;
    memcpy(r.chain_sig0, key.signature, sizeof(r.chain_sig0));
    memcpy(r.k256_signature, key.k256_signature, key.k256_signature_len);
    r.k256_signature_len = key.k256_signature_len;
    memcpy(out, &r, sizeof(r));
    ret = 0;
out:
    ds_wipe(&key, sizeof(key));
    ds_wipe(digest, sizeof(digest));
    return ret;
}

int ds_guest_verify(const char *algorithm, size_t algorithm_len, const uint8_t *data,
                    size_t data_len, const uint8_t *sig, size_t sig_len, const uint8_t *pub,
                    size_t pub_len, bool *out_valid, struct ds_keys_error *err)
{
    enum ds_sign_alg alg;
    uint8_t digest[32];
    int ret;

    if (!out_valid || (!data && data_len) || (!sig && sig_len) || (!pub && pub_len))
        return -EINVAL;
    DS_TRY(ds_sign_alg_parse(algorithm, algorithm_len, &alg, err));
    if (!data)
        data = empty_data;
    if (alg == DS_SIGN_ED25519) {
        if (pub_len != DS_ED25519_PUB_SIZE) {
            set_err(err, "public_key", strlen("public_key"),
                    "Invalid ed25519 public key length: %zu", pub_len);
            return -DS_E_FORMAT;
        }
        if (sig_len != DS_ED25519_SIG_SIZE) {
            set_err(err, "signature", strlen("signature"), "Invalid ed25519 signature length: %zu",
                    sig_len);
            return -DS_E_FORMAT;
        }
        ret = ds_ed25519_verify(pub, data, data_len, sig);
        if (ret < 0 && ret != -DS_E_SIGNATURE)
            return ret;
        *out_valid = ret == 0;
        return 0;
    }
    if (pub_len != DS_K256_PUB_SIZE && pub_len != K256_PUB_UNCOMPRESSED_SIZE) {
        set_err(err, "public_key", strlen("public_key"), "Invalid secp256k1 public key length: %zu",
                pub_len);
        return -DS_E_FORMAT;
    }
    /* r and s must each be a valid non-zero scalar below n: exactly a valid private key. */
    if (sig_len != DS_K256_RS_SIZE || !ds_k256_valid_private(sig) ||
        !ds_k256_valid_private(sig + DS_KEY_SIZE)) {
        set_err(err, "signature", strlen("signature"), "Invalid secp256k1 signature");
        return -DS_E_FORMAT;
    }
    if (alg == DS_SIGN_SECP256K1_PREHASHED) {
        if (data_len != PREHASH_SIZE) {
            set_err(err, "data", strlen("data"),
                    "Pre-hashed signing requires a 32-byte digest, but received %zu bytes",
                    data_len);
            return -DS_E_FORMAT;
        }
        memcpy(digest, data, PREHASH_SIZE);
    } else {
        ds_sha256(data, data_len, digest);
    }
    ret = ds_k256_verify(pub, pub_len, digest, sig);
    if (ret == -DS_E_FORMAT) {
        set_err(err, "public_key", strlen("public_key"), "Invalid secp256k1 public key");
        return ret;
    }
    if (ret < 0 && ret != -DS_E_SIGNATURE)
        return ret;
    *out_valid = ret == 0;
    return 0;
}

int ds_guest_derive_tls_key(const uint8_t k256_key[DS_KEY_SIZE], const char *path, size_t path_len,
                            uint8_t out_scalar[DS_KEY_SIZE])
{
    if (!k256_key || !out_scalar || (!path && path_len))
        return -EINVAL;
    const struct ds_kdf_part parts[] = {{path, path_len}};
    return ds_kdf_derive_p256(k256_key, parts, DS_ARRAY_SIZE(parts), out_scalar);
}

int ds_key_chain_verify(const uint8_t *pubkey, size_t pubkey_len, const char *purpose,
                        size_t purpose_len, const uint8_t sig0[DS_K256_SIG_SIZE],
                        const uint8_t app_id[DS_APP_ID_SIZE],
                        const uint8_t k256_sig[DS_K256_SIG_SIZE], const uint8_t *expected_kms_pub,
                        struct ds_key_chain_info *out)
{
    struct ds_key_chain_info info;
    char hex[2 * DS_K256_PUB_SIZE + 1];
    uint8_t digest[32];

    if (!pubkey || (pubkey_len != DS_K256_PUB_SIZE && pubkey_len != DS_ED25519_PUB_SIZE) ||
        (!purpose && purpose_len) || !sig0 || !app_id || !k256_sig || !out)
        return -EINVAL;
    ds_hex_encode(pubkey, pubkey_len, hex);
    purpose_digest(purpose, purpose_len, hex, digest);
    DS_TRY(ds_k256_recover(sig0, digest, info.app_pubkey));
    ds_app_k256_issue_digest(app_id, info.app_pubkey, digest);
    DS_TRY(ds_k256_recover(k256_sig, digest, info.kms_pubkey));
    if (expected_kms_pub && !ds_ct_equal(expected_kms_pub, info.kms_pubkey, DS_K256_PUB_SIZE))
        return -DS_E_MISMATCH;
    memcpy(out, &info, sizeof(info));
    return 0;
}
