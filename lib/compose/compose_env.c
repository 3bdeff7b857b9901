/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Encrypted environment variables (spec kms-ratls.md §7, host-side.md §2.5): the deployer
 * encrypts {"env":[{"key":K,"value":V},...]} for the app's X25519 env public key with an
 * ephemeral key pair, using the raw X25519 shared secret as the AES-256-GCM key (no KDF, no
 * AAD, 12-byte random IV, 16-byte tag): blob = eph_pub || iv || ciphertext || tag, sent as hex.
 * The guest decrypts with env_crypt_key, refuses an all-zero shared secret, applies its limits,
 * keeps only the names listed in allowed_envs and writes `.decrypted-env`. Also the
 * env-encrypt public key signature check (§3.6) over lib/keys.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "compose/compose_internal.h"
#include "dstack/crypto.h"

#define GCM_IV_SIZE  12
#define X25519_SIZE  32
#define ENV_OVERHEAD (DS_ENV_HEADER_SIZE + DS_ENV_TAG_SIZE)

/* AES-256-GCM one shot; enc selects the direction. tag is written (enc) or checked. */
static int aes_gcm(bool enc, const uint8_t key[32], const uint8_t iv[GCM_IV_SIZE],
                   const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[DS_ENV_TAG_SIZE])
{
    if (len > (size_t)INT32_MAX) {
        return -DS_E_LIMIT;
    }
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int rc = -DS_E_CRYPTO;
    int n = 0;
    if (ctx == NULL) {
        return -ENOMEM;
    }
    if (EVP_CipherInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, enc ? 1 : 0) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, GCM_IV_SIZE, NULL) != 1 ||
        EVP_CipherInit_ex(ctx, NULL, NULL, key, iv, -1) != 1) {
        goto out;
    }
    if (len > 0 && EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1) {
        goto out;
    }
    if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, DS_ENV_TAG_SIZE, tag) != 1) {
        goto out;
    }
    if (EVP_CipherFinal_ex(ctx, out + n, &n) != 1) {
        rc = enc ? -DS_E_CRYPTO : -DS_E_SIGNATURE; /* decrypt: the tag did not verify */
        goto out;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, DS_ENV_TAG_SIZE, tag) != 1) {
        goto out;
    }
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    return rc;
}

/* X25519 with the all-zero result refused (a small-order peer point). */
static int shared_secret(const uint8_t priv[32], const uint8_t peer[32], uint8_t out[32])
{
    if (ds_x25519(priv, peer, out) < 0) {
        return -DS_E_CRYPTO;
    }
    if (ds_is_zero(out, 32)) {
        ds_wipe(out, 32);
        return -DS_E_CRYPTO;
    }
    return 0;
}

int ds_env_encrypt_with(const uint8_t app_pub[DS_X25519_PUB_SIZE], const uint8_t eph_secret[32],
                        const uint8_t iv[12], const void *plaintext, size_t len, uint8_t **out,
                        size_t *out_len)
{
    if (len > DS_ENV_PLAINTEXT_MAX) {
        return -DS_E_LIMIT;
    }
    uint8_t shared[X25519_SIZE];
    uint8_t *blob = malloc(ENV_OVERHEAD + len);
    if (blob == NULL) {
        return -ENOMEM;
    }
    int rc = ds_x25519_public(eph_secret, blob);
    if (rc < 0) {
        rc = -DS_E_CRYPTO;
        goto out;
    }
    rc = shared_secret(eph_secret, app_pub, shared);
    if (rc < 0) {
        goto out;
    }
    memcpy(blob + X25519_SIZE, iv, GCM_IV_SIZE);
    rc = aes_gcm(true, shared, iv, plaintext, len, blob + DS_ENV_HEADER_SIZE,
                 blob + DS_ENV_HEADER_SIZE + len);
    if (rc == 0) {
        *out = blob;
        *out_len = ENV_OVERHEAD + len;
        blob = NULL;
    }
out:
    ds_wipe(shared, sizeof(shared));
    free(blob);
    return rc;
}

int ds_env_encrypt(const uint8_t app_pub[DS_X25519_PUB_SIZE], const void *plaintext, size_t len,
                   uint8_t **out, size_t *out_len)
{
    uint8_t eph[X25519_SIZE];
    uint8_t iv[GCM_IV_SIZE];
    int rc = ds_random(eph, sizeof(eph));
    if (rc == 0) {
        rc = ds_random(iv, sizeof(iv));
    }
    if (rc == 0) {
        rc = ds_env_encrypt_with(app_pub, eph, iv, plaintext, len, out, out_len);
    }
    ds_wipe(eph, sizeof(eph));
    return rc;
}

int ds_env_plaintext(const struct ds_env_list *l, char **out, size_t *out_len)
{
    struct ds_buf b;
    ds_buf_init(&b, DS_ENV_PLAINTEXT_MAX);
    b.secret = true;
    int rc = ds_buf_append_str(&b, "{\"env\":[");
    for (size_t i = 0; rc == 0 && i < l->count; i++) {
        const char *k = l->vars[i].key;
        const char *v = l->vars[i].value;
        rc = ds_buf_append_str(&b, i > 0 ? ",{\"key\":" : "{\"key\":");
        if (rc == 0) {
            rc = compose_dump_string(k, strlen(k), &b);
        }
        if (rc == 0) {
            rc = ds_buf_append_str(&b, ",\"value\":");
        }
        if (rc == 0) {
            rc = compose_dump_string(v, strlen(v), &b);
        }
        if (rc == 0) {
            rc = ds_buf_u8(&b, '}');
        }
    }
    if (rc == 0) {
        rc = ds_buf_append_str(&b, "]}");
    }
    if (rc < 0) {
        ds_buf_done(&b);
        return rc;
    }
    uint8_t *data;
    size_t len;
    ds_buf_steal(&b, &data, &len);
    if (data == NULL) {
        return -ENOMEM;
    }
    *out = (char *)data;
    *out_len = len;
    return 0;
}

int ds_env_encrypt_hex(const uint8_t app_pub[DS_X25519_PUB_SIZE], const struct ds_env_list *l,
                       char **out_hex)
{
    char *pt = NULL;
    size_t pt_len = 0;
    uint8_t *blob = NULL;
    size_t blob_len = 0;
    DS_TRY(ds_env_plaintext(l, &pt, &pt_len));
    int rc = ds_env_encrypt(app_pub, pt, pt_len, &blob, &blob_len);
    ds_wipe(pt, pt_len);
    free(pt);
    if (rc < 0) {
        return rc;
    }
    char *hex = ds_hex_strdup(blob, blob_len);
    free(blob);
    if (hex == NULL) {
        return -ENOMEM;
    }
    *out_hex = hex;
    return 0;
}

int ds_env_decrypt(const uint8_t env_crypt_key[DS_KEY_SIZE], const uint8_t *blob, size_t blob_len,
                   uint8_t **out, size_t *out_len)
{
    struct ds_reader r;
    const uint8_t *eph, *iv, *ct;
    uint8_t tag[DS_ENV_TAG_SIZE];
    if (blob_len > DS_ENV_BLOB_MAX) {
        return -DS_E_LIMIT;
    }
    if (blob_len < ENV_OVERHEAD) {
        return -DS_E_TRUNCATED;
    }
    size_t ct_len = blob_len - ENV_OVERHEAD;
    ds_rd_init(&r, blob, blob_len);
    DS_TRY(ds_rd_ptr(&r, X25519_SIZE, &eph));
    DS_TRY(ds_rd_ptr(&r, GCM_IV_SIZE, &iv));
    DS_TRY(ds_rd_ptr(&r, ct_len, &ct));
    DS_TRY(ds_rd_copy(&r, tag, sizeof(tag)));
    uint8_t shared[X25519_SIZE];
    DS_TRY(shared_secret(env_crypt_key, eph, shared));
    uint8_t *pt = malloc(ct_len + 1);
    if (pt == NULL) {
        ds_wipe(shared, sizeof(shared));
        return -ENOMEM;
    }
    int rc = aes_gcm(false, shared, iv, ct, ct_len, pt, tag);
    ds_wipe(shared, sizeof(shared));
    if (rc < 0) {
        ds_wipe(pt, ct_len + 1);
        free(pt);
        return rc;
    }
    pt[ct_len] = '\0';
    *out = pt;
    *out_len = ct_len;
    return 0;
}

static int cmp_vars(const void *a, const void *b)
{
    return strcmp(((const struct ds_env_var *)a)->key, ((const struct ds_env_var *)b)->key);
}

static bool listed(const char *const *allowed, size_t n, const char *key)
{
    for (size_t i = 0; allowed != NULL && i < n; i++) {
        if (allowed[i] != NULL && strcmp(allowed[i], key) == 0) {
            return true;
        }
    }
    return false;
}

static int parse_env_item(const json_t *item, size_t i, const char *const *allowed,
                          size_t allowed_count, struct ds_env_list *l, size_t *skipped,
                          struct ds_compose_error *err)
{
    char f[DS_COMPOSE_ERR_FIELD_MAX];
    const json_t *k = json_object_get(item, "key");
    const json_t *v = json_object_get(item, "value");
    if (!json_is_object(item) || !json_is_string(k) || !json_is_string(v)) {
        snprintf(f, sizeof(f), "env[%zu]", i);
        compose_set_err(err, f, "expected {\"key\": string, \"value\": string}");
        return -DS_E_FORMAT;
    }
    const char *key = json_string_value(k);
    size_t key_len = json_string_length(k);
    /* Not allowed by the measured manifest: skipped before anything else, as the guest does. */
    if (memchr(key, '\0', key_len) != NULL || !listed(allowed, allowed_count, key)) {
        (*skipped)++;
        return 0;
    }
    snprintf(f, sizeof(f), "env[%zu].key", i);
    if (!ds_env_name_valid(key, key_len)) {
        compose_set_err(err, f, "invalid variable name");
        return -DS_E_FORMAT;
    }
    snprintf(f, sizeof(f), "env[%zu].value", i);
    size_t vlen = json_string_length(v);
    if (vlen > DS_ENV_VALUE_MAX) {
        compose_set_err(err, f, "longer than %u bytes", DS_ENV_VALUE_MAX);
        return -DS_E_LIMIT;
    }
    if (memchr(json_string_value(v), '\0', vlen) != NULL) {
        compose_set_err(err, f, "contains U+0000");
        return -DS_E_FORMAT;
    }
    return ds_env_list_set(l, key, key_len, json_string_value(v), vlen);
}

int ds_env_parse_plaintext(const void *json, size_t len, const char *const *allowed,
                           size_t allowed_count, struct ds_env_list *out, size_t *out_skipped,
                           struct ds_compose_error *err)
{
    if (len > DS_ENV_TOTAL_MAX) {
        compose_set_err(err, "env", "plaintext larger than %u bytes", DS_ENV_TOTAL_MAX);
        return -DS_E_LIMIT;
    }
    json_t *root = NULL;
    DS_TRY(compose_json_load(json, len, false, false, &root, err));
    struct ds_env_list l = {0};
    size_t skipped = 0;
    int rc = 0;
    const json_t *env = json_object_get(root, "env");
    if (!json_is_object(root) || !json_is_array(env)) {
        compose_set_err(err, "env", "expected {\"env\": [...]}");
        rc = -DS_E_FORMAT;
        goto out;
    }
    if (json_array_size(env) > DS_ENV_ITEMS_MAX) {
        compose_set_err(err, "env", "%zu items, at most %d allowed", json_array_size(env),
                        DS_ENV_ITEMS_MAX);
        rc = -DS_E_LIMIT;
        goto out;
    }
    for (size_t i = 0; rc == 0 && i < json_array_size(env); i++) {
        rc = parse_env_item(json_array_get(env, i), i, allowed, allowed_count, &l, &skipped, err);
    }
    if (rc < 0) {
        goto out;
    }
    if (l.count > 1) {
        qsort(l.vars, l.count, sizeof(*l.vars), cmp_vars);
    }
    *out = l;
    l.vars = NULL;
    l.count = 0;
    if (out_skipped != NULL) {
        *out_skipped = skipped;
    }
out:
    ds_env_list_free(&l);
    json_decref(root);
    return rc;
}

int ds_env_decrypt_for_app(const struct ds_app_compose *c, const uint8_t env_crypt_key[DS_KEY_SIZE],
                           const uint8_t *blob, size_t blob_len, struct ds_env_list *out,
                           size_t *out_skipped, struct ds_compose_error *err)
{
    uint8_t *pt = NULL;
    size_t pt_len = 0;
    int rc = ds_env_decrypt(env_crypt_key, blob, blob_len, &pt, &pt_len);
    if (rc < 0) {
        compose_set_err(err, "encrypted_env", "%s", ds_strerror(rc));
        return rc;
    }
    rc = ds_env_parse_plaintext(pt, pt_len, (const char *const *)c->allowed_envs,
                                c->allowed_env_count, out, out_skipped, err);
    ds_wipe(pt, pt_len);
    free(pt);
    return rc;
}

static bool needs_quotes(const char *v)
{
    return strpbrk(v, " \t|&;<>()$`\\\"'\n") != NULL;
}

int ds_env_render_dotenv(const struct ds_env_list *l, char **out, size_t *out_len)
{
    struct ds_buf b;
    ds_buf_init(&b, DS_ENV_TOTAL_MAX * 2 + DS_ENV_ITEMS_MAX * (DS_ENV_KEY_MAX + 4));
    b.secret = true;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < l->count; i++) {
        const char *v = l->vars[i].value;
        bool q = needs_quotes(v);
        rc = ds_buf_printf(&b, "%s=%s", l->vars[i].key, q ? "\"" : "");
        for (const char *p = v; rc == 0 && *p != '\0'; p++) {
            if (*p == '\n') {
                rc = ds_buf_append_str(&b, "\\n");
            } else if (*p == '"' || *p == '$' || *p == '`') {
                char e[2] = {'\\', *p};
                rc = ds_buf_append(&b, e, 2);
            } else {
                rc = ds_buf_u8(&b, (uint8_t)*p);
            }
        }
        if (rc == 0) {
            rc = ds_buf_append_str(&b, q ? "\"\n" : "\n");
        }
    }
    if (rc < 0) {
        ds_buf_done(&b);
        return rc;
    }
    uint8_t *data;
    size_t len;
    ds_buf_steal(&b, &data, &len);
    if (data == NULL) {
        data = calloc(1, 1); /* an empty list renders as an empty file */
        if (data == NULL) {
            return -ENOMEM;
        }
    }
    *out = (char *)data;
    *out_len = len;
    return 0;
}

int ds_env_pubkey_verify(const struct ds_env_pubkey_response *r,
                         const uint8_t app_id[DS_APP_ID_SIZE], uint64_t now, uint64_t max_age,
                         uint8_t out_signer[DS_K256_PUB_SIZE], bool *out_legacy)
{
    uint8_t signer[DS_K256_PUB_SIZE];
    int rc = -DS_E_NOT_FOUND;
    if (r->has_signature_v1) {
        rc = ds_env_pubkey_check_time(r->timestamp, now,
                                      max_age ? max_age : DS_ENV_PUBKEY_MAX_AGE_DEFAULT);
        if (rc == 0) {
            rc = ds_env_pubkey_recover(r->signature_v1, app_id, r->public_key, true, r->timestamp,
                                       signer);
        }
        if (rc == 0) {
            memcpy(out_signer, signer, sizeof(signer));
            if (out_legacy != NULL) {
                *out_legacy = false;
            }
            return 0;
        }
    }
    /* vmm-cli falls back to the legacy signature when v1 is absent or fails. */
    if (r->has_signature) {
        int lrc = ds_env_pubkey_recover(r->signature, app_id, r->public_key, false, 0, signer);
        if (lrc == 0) {
            memcpy(out_signer, signer, sizeof(signer));
            if (out_legacy != NULL) {
                *out_legacy = true;
            }
            return 0;
        }
        if (rc != -DS_E_EXPIRED) {
            rc = -DS_E_SIGNATURE;
        }
    }
    if (rc != -DS_E_EXPIRED && rc != -DS_E_NOT_FOUND) {
        rc = -DS_E_SIGNATURE;
    }
    return rc;
}
