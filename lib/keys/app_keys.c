/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-app keys (kms-ratls.md §3.3-3.7): what the KMS derives for an app from its two roots
 * (root CA P-256 scalar, root k256 scalar), the k256 signature it issues over the app's
 * secp256k1 key, the env-encrypt public-key signatures (legacy and v1 with a timestamp), the
 * app CA scalar, and the keys a CVM without a KMS derives from a 32-byte seed.
 */
#include <errno.h>
#include <string.h>

#include "dstack/crypto.h"
#include "dstack/keys.h"

#define CTX_DISK_CRYPT  "app-disk-crypt-key"
#define CTX_ENV_ENCRYPT "env-encrypt-key"
#define CTX_APP_KEY     "app-key"
#define CTX_APP_CA      "app-ca"
#define CTX_SEED_DISK   "app-disk-key"
#define CTX_SEED_K256   "app-k256-key"
#define MSG_KMS_ISSUED  "dstack-kms-issued"
#define MSG_ENV_ENCRYPT "dstack-env-encrypt-pubkey"
#define MSG_SEPARATOR   ":"
#define U64_BE_SIZE     8

#define PART(p, n)  ((struct ds_kdf_part){(p), (n)})
#define PART_STR(s) PART((s), sizeof(s) - 1)

void ds_app_k256_issue_digest(const uint8_t app_id[DS_APP_ID_SIZE],
                              const uint8_t app_pub[DS_K256_PUB_SIZE], uint8_t out_digest[32])
{
    struct ds_keccak k;
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, MSG_KMS_ISSUED MSG_SEPARATOR, strlen(MSG_KMS_ISSUED MSG_SEPARATOR));
    ds_keccak256_update(&k, app_id, DS_APP_ID_SIZE);
    ds_keccak256_update(&k, app_pub, DS_K256_PUB_SIZE);
    ds_keccak256_final(&k, out_digest);
}

void ds_env_pubkey_digest(const uint8_t app_id[DS_APP_ID_SIZE],
                          const uint8_t env_pub[DS_X25519_PUB_SIZE], bool with_timestamp,
                          uint64_t timestamp, uint8_t out_digest[32])
{
    struct ds_keccak k;
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, MSG_ENV_ENCRYPT MSG_SEPARATOR, strlen(MSG_ENV_ENCRYPT MSG_SEPARATOR));
    ds_keccak256_update(&k, app_id, DS_APP_ID_SIZE);
    if (with_timestamp) {
        uint8_t be[U64_BE_SIZE];
        for (size_t i = 0; i < U64_BE_SIZE; i++)
            be[i] = (uint8_t)(timestamp >> (8 * (U64_BE_SIZE - 1 - i)));
        ds_keccak256_update(&k, be, sizeof(be));
    }
    ds_keccak256_update(&k, env_pub, DS_X25519_PUB_SIZE);
    ds_keccak256_final(&k, out_digest);
}

int ds_env_pubkey_sign(const uint8_t root_k256[DS_KEY_SIZE], const uint8_t app_id[DS_APP_ID_SIZE],
                       const uint8_t env_pub[DS_X25519_PUB_SIZE], bool with_timestamp,
                       uint64_t timestamp, uint8_t out_sig[DS_K256_SIG_SIZE])
{
    uint8_t digest[32];
    if (!root_k256 || !app_id || !env_pub || !out_sig)
        return -EINVAL;
    ds_env_pubkey_digest(app_id, env_pub, with_timestamp, timestamp, digest);
    return ds_k256_sign_recoverable(root_k256, digest, out_sig);
}

int ds_env_pubkey_recover(const uint8_t sig[DS_K256_SIG_SIZE], const uint8_t app_id[DS_APP_ID_SIZE],
                          const uint8_t env_pub[DS_X25519_PUB_SIZE], bool with_timestamp,
                          uint64_t timestamp, uint8_t out_signer[DS_K256_PUB_SIZE])
{
    uint8_t digest[32];
    if (!sig || !app_id || !env_pub || !out_signer)
        return -EINVAL;
    ds_env_pubkey_digest(app_id, env_pub, with_timestamp, timestamp, digest);
    return ds_k256_recover(sig, digest, out_signer);
}

int ds_env_pubkey_check_time(uint64_t timestamp, uint64_t now, uint64_t max_age)
{
    if (now >= timestamp && now - timestamp > max_age)
        return -DS_E_EXPIRED;
    if (timestamp > now && timestamp - now > DS_ENV_PUBKEY_MAX_SKEW)
        return -DS_E_EXPIRED;
    return 0;
}

int ds_app_ca_scalar(const uint8_t root_ca[DS_KEY_SIZE], const uint8_t app_id[DS_APP_ID_SIZE],
                     uint8_t out_scalar[DS_KEY_SIZE])
{
    if (!root_ca || !app_id || !out_scalar)
        return -EINVAL;
    const struct ds_kdf_part parts[] = {PART(app_id, DS_APP_ID_SIZE), PART_STR(CTX_APP_CA)};
    return ds_kdf_derive_p256(root_ca, parts, DS_ARRAY_SIZE(parts), out_scalar);
}

int ds_app_keys_from_roots(const uint8_t root_ca[DS_KEY_SIZE], const uint8_t root_k256[DS_KEY_SIZE],
                           const uint8_t app_id[DS_APP_ID_SIZE], const uint8_t *instance_id,
                           size_t instance_id_len, struct ds_app_keys *out)
{
    struct ds_app_keys k;
    uint8_t digest[32];
    int ret;

    if (!root_ca || !root_k256 || !app_id || !out || (!instance_id && instance_id_len))
        return -EINVAL;
    if (instance_id_len > DS_INSTANCE_ID_MAX)
        return -DS_E_LIMIT;
    if (!ds_p256_scalar_valid(root_ca) || !ds_k256_valid_private(root_k256))
        return -DS_E_FORMAT;
    memset(&k, 0, sizeof(k));

    const struct ds_kdf_part disk[] = {
        PART(app_id, DS_APP_ID_SIZE), PART(instance_id, instance_id_len), PART_STR(CTX_DISK_CRYPT)};
    ret = ds_kdf_derive_dh_secret(root_ca, disk, DS_ARRAY_SIZE(disk), k.disk_crypt_key);
    if (ret < 0)
        goto out;
    const struct ds_kdf_part env[] = {PART(app_id, DS_APP_ID_SIZE), PART_STR(CTX_ENV_ENCRYPT)};
    ret = ds_kdf_derive_dh_secret(root_ca, env, DS_ARRAY_SIZE(env), k.env_crypt_key);
    if (ret < 0)
        goto out;
    /* Unclamped bytes; X25519 clamps at use (§3.3). */
    ret = ds_x25519_public(k.env_crypt_key, k.env_public_key);
    if (ret < 0)
        goto out;
    const struct ds_kdf_part app[] = {PART(app_id, DS_APP_ID_SIZE), PART_STR(CTX_APP_KEY)};
    ret = ds_kdf_derive(root_k256, DS_KEY_SIZE, app, DS_ARRAY_SIZE(app), k.k256_key,
                        sizeof(k.k256_key));
    if (ret < 0)
        goto out;
    if (!ds_k256_valid_private(k.k256_key)) {
        ret = -ERANGE;
        goto out;
    }
    ret = ds_k256_public(k.k256_key, k.k256_public_key);
    if (ret < 0)
        goto out;
    ds_app_k256_issue_digest(app_id, k.k256_public_key, digest);
    ret = ds_k256_sign_recoverable(root_k256, digest, k.k256_signature);
    if (ret < 0)
        goto out;
    memcpy(out, &k, sizeof(k));
    ret = 0;
out:
    ds_wipe(&k, sizeof(k));
    return ret;
}

int ds_app_keys_from_seed(const uint8_t seed[DS_KEY_SIZE], struct ds_seed_keys *out)
{
    struct ds_seed_keys k;
    uint8_t der[DS_P256_PKCS8_SIZE];
    int ret;

    if (!seed || !out)
        return -EINVAL;
    memset(&k, 0, sizeof(k));
    const struct ds_kdf_part app[] = {PART_STR(CTX_APP_KEY)};
    ret = ds_kdf_derive_p256(seed, app, DS_ARRAY_SIZE(app), k.app_key);
    if (ret < 0)
        goto out;
    const struct ds_kdf_part disk[] = {PART_STR(CTX_SEED_DISK)};
    ret = ds_kdf_derive_p256(seed, disk, DS_ARRAY_SIZE(disk), k.disk_key);
    if (ret < 0)
        goto out;
    ret = ds_p256_pkcs8_der(k.disk_key, der);
    if (ret < 0)
        goto out;
    ds_sha256(der, sizeof(der), k.disk_crypt_key);
    const struct ds_kdf_part k256[] = {PART_STR(CTX_SEED_K256)};
    ret =
        ds_kdf_derive(seed, DS_KEY_SIZE, k256, DS_ARRAY_SIZE(k256), k.k256_key, sizeof(k.k256_key));
    if (ret < 0)
        goto out;
    if (!ds_k256_valid_private(k.k256_key)) {
        ret = -ERANGE;
        goto out;
    }
    memcpy(out, &k, sizeof(k));
    ret = 0;
out:
    ds_wipe(der, sizeof(der));
    ds_wipe(&k, sizeof(k));
    return ret;
}
