/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent's key holder: the only file that sees the app's secret keys
 * (.appkeys.json, spec guest-agent-api.md §4.1) and turns lib/keys derivations into RPC
 * results: GetKey / DeriveK256Key (§4.2-4.3), Sign / Verify (§4.4), the P-256 TLS keys of
 * GetTlsKey / DeriveKey (§4.6), the local CA key and the temp CA key of the Kms provider
 * (parsed here, used by agent_kms.c). Every secret copied out of lib/keys is
 * wiped here before returning. Simulator mode gets development keys derived from fixed,
 * PUBLIC development KMS roots, so GetKey results are stable across restarts (and worthless).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/crypto.h"
#include "dstack/keys.h"
#include "log.h"

/* Development KMS roots (simulator only): SHA-256 of these PUBLIC labels. */
#define DEV_ROOT_CA_LABEL   "dstack-c development KMS root CA key v1 (INSECURE)"
#define DEV_ROOT_K256_LABEL "dstack-c development KMS root k256 key v1 (INSECURE)"

/* Purpose the Worker's app-key attestation derives with (§4.5: GetKey("vms") semantics). */
#define APP_KEY_PATH "vms"

static void set_msg(char *msg, size_t msg_size, const struct ds_keys_error *err, int r,
                    const char *fallback)
{
    if (!msg || !msg_size) {
        return;
    }
    if (err && err->msg[0]) {
        snprintf(msg, msg_size, "%s", err->msg);
    } else {
        snprintf(msg, msg_size, "%s: %s", fallback, ds_strerror(r));
    }
}

int agent_keys_load(struct agent *a, const char *path)
{
    struct ds_appkeys *k = calloc(1, sizeof(*k));
    if (!k) {
        return -ENOMEM;
    }
    struct ds_keys_error err;
    memset(&err, 0, sizeof(err));
    int r = ds_appkeys_load(path, k, &err);
    if (r < 0) {
        if (err.what[0]) {
            log_warnx("keys file \"%s\": %s: %s", path, err.what, err.msg);
        } else {
            log_warnx("keys file \"%s\": %s", path, ds_strerror(r));
        }
        free(k);
        return r;
    }
    agent_keys_free(a);
    a->appkeys = k;
    return 0;
}

void agent_keys_free(struct agent *a)
{
    if (a->appkeys) {
        ds_appkeys_done(a->appkeys);
        free(a->appkeys);
        a->appkeys = NULL;
    }
}

static const char *str_or_empty(const char *s)
{
    return s ? s : "";
}

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char *h = ds_hex_strdup(p ? p : (const uint8_t *)"", n);
    if (!h) {
        return NULL;
    }
    json_t *j = json_string(h);
    free(h);
    return j;
}

int agent_keys_get_key(struct agent *a, const struct agent_req *req, bool legacy_names,
                       json_t **out, char *msg, size_t msg_size)
{
    struct ds_get_key_result res;
    struct ds_keys_error err;
    memset(&err, 0, sizeof(err));
    const char *path = str_or_empty(req->path), *purpose = str_or_empty(req->purpose);
    const char *alg = str_or_empty(req->algorithm);
    const struct ds_appkeys *k = a->appkeys;
    int r = ds_guest_get_key(k->k256_key, k->k256_signature, k->k256_signature_len, path,
                             strlen(path), purpose, strlen(purpose), alg, strlen(alg), &res, &err);
    if (r < 0) {
        set_msg(msg, msg_size, &err, r, "failed to derive key");
        return r;
    }
    json_t *chain = json_array();
    json_t *key = hex_json(res.key, sizeof(res.key));
    ds_wipe(&res.key, sizeof(res.key));
    if (chain) {
        json_array_append_new(chain, hex_json(res.signature, sizeof(res.signature)));
        json_array_append_new(chain, hex_json(res.k256_signature, res.k256_signature_len));
    }
    ds_wipe(&res, sizeof(res));
    if (!chain || !key || json_array_size(chain) != 2) {
        json_decref(chain);
        json_decref(key);
        return -ENOMEM;
    }
    /* DeriveK256Key returns the same message under its legacy names (§4.3). */
    *out = json_pack("{s:o,s:o}", legacy_names ? "k256_key" : "key", key,
                     legacy_names ? "k256_signature_chain" : "signature_chain", chain);
    return *out ? 0 : -ENOMEM;
}

int agent_keys_sign(struct agent *a, const struct agent_req *req, json_t **out, char *msg,
                    size_t msg_size)
{
    struct ds_sign_result res;
    struct ds_keys_error err;
    memset(&err, 0, sizeof(err));
    const char *alg = str_or_empty(req->algorithm);
    const struct ds_appkeys *k = a->appkeys;
    int r = ds_guest_sign(k->k256_key, k->k256_signature, k->k256_signature_len, alg, strlen(alg),
                          req->data.data, req->data.len, &res, &err);
    if (r < 0) {
        set_msg(msg, msg_size, &err, r, "failed to sign");
        return r;
    }
    json_t *chain = json_array();
    if (chain) {
        json_array_append_new(chain, hex_json(res.signature, res.signature_len));
        json_array_append_new(chain, hex_json(res.chain_sig0, sizeof(res.chain_sig0)));
        json_array_append_new(chain, hex_json(res.k256_signature, res.k256_signature_len));
    }
    if (!chain || json_array_size(chain) != 3) {
        json_decref(chain);
        return -ENOMEM;
    }
    *out = json_pack("{s:o,s:o,s:o}", "signature", hex_json(res.signature, res.signature_len),
                     "signature_chain", chain, "public_key",
                     hex_json(res.public_key, res.public_key_len));
    return *out ? 0 : -ENOMEM;
}

int agent_keys_verify(const struct agent_req *req, json_t **out, char *msg, size_t msg_size)
{
    struct ds_keys_error err;
    memset(&err, 0, sizeof(err));
    const char *alg = str_or_empty(req->algorithm);
    bool valid = false;
    int r = ds_guest_verify(alg, strlen(alg), req->data.data, req->data.len, req->signature.data,
                            req->signature.len, req->public_key.data, req->public_key.len, &valid,
                            &err);
    if (r < 0) {
        set_msg(msg, msg_size, &err, r, "failed to verify");
        return r;
    }
    *out = json_pack("{s:b}", "valid", valid);
    return *out ? 0 : -ENOMEM;
}

int agent_keys_tls_scalar(struct agent *a, const char *derive_path, uint8_t out[32])
{
    if (!derive_path) {
        return ds_guest_random_tls_key(out);
    }
    return ds_guest_derive_tls_key(a->appkeys->k256_key, derive_path, strlen(derive_path), out);
}

int agent_keys_key_pem(const uint8_t scalar[32], char **out)
{
    return ds_p256_pkcs8_pem(scalar, out, NULL);
}

void agent_keys_free_pem(char *pem)
{
    ds_keys_free_secret(pem);
}

int agent_keys_ca(struct agent *a, uint8_t out_scalar[32], const char **out_cert_pem)
{
    const struct ds_appkeys *k = a->appkeys;
    if (k->provider == DS_KEY_PROVIDER_KMS) {
        return -DS_E_NOT_FOUND; /* certificates come from the KMS (agent_kms.c) */
    }
    if (!k->key || !k->ca_cert) {
        return -DS_E_UNSUPPORTED;
    }
    DS_TRY(ds_p256_scalar_from_pem(k->key, strlen(k->key), out_scalar));
    *out_cert_pem = k->ca_cert;
    return 0;
}

int agent_keys_kms(struct agent *a, const char **out_url, uint8_t out_tmp_ca[32],
                   const char **out_tmp_ca_cert, const char **out_root_ca)
{
    const struct ds_appkeys *k = a->appkeys;
    if (k->provider != DS_KEY_PROVIDER_KMS || !k->url || !k->tmp_ca_key || !k->tmp_ca_cert ||
        !k->ca_cert) {
        return -DS_E_NOT_FOUND;
    }
    DS_TRY(ds_p256_scalar_from_pem(k->tmp_ca_key, strlen(k->tmp_ca_key), out_tmp_ca));
    *out_url = k->url;
    *out_tmp_ca_cert = k->tmp_ca_cert;
    *out_root_ca = k->ca_cert;
    return 0;
}

int agent_keys_app_pubkey(struct agent *a, const char *alg, uint8_t out[33], size_t *out_len,
                          bool *out_ed25519, char *msg, size_t msg_size)
{
    struct ds_get_key_result res;
    struct ds_keys_error err;
    memset(&err, 0, sizeof(err));
    const struct ds_appkeys *k = a->appkeys;
    int r = ds_guest_get_key(k->k256_key, k->k256_signature, k->k256_signature_len, APP_KEY_PATH,
                             strlen(APP_KEY_PATH), "", 0, alg, strlen(alg), &res, &err);
    if (r < 0) {
        set_msg(msg, msg_size, &err, r, "failed to derive key");
        return r;
    }
    memcpy(out, res.pubkey, res.pubkey_len);
    *out_len = res.pubkey_len;
    *out_ed25519 = res.alg == DS_KEY_ALG_ED25519;
    ds_wipe(&res, sizeof(res));
    return 0;
}

int agent_keys_dev(struct agent *a, const uint8_t app_id[20], const uint8_t *instance_id,
                   size_t instance_id_len, uint8_t out_ca[32], char out_kms_id_hex[183])
{
    uint8_t root_ca[DS_KEY_SIZE], root_k256[DS_KEY_SIZE], root_pub[DS_P256_PUB_SIZE];
    uint8_t spki[DS_P256_SPKI_SIZE];
    struct ds_app_keys keys;
    struct ds_appkeys *k = calloc(1, sizeof(*k));
    int r = -ENOMEM;
    if (!k) {
        goto out;
    }
    ds_sha256(DEV_ROOT_CA_LABEL, strlen(DEV_ROOT_CA_LABEL), root_ca);
    ds_sha256(DEV_ROOT_K256_LABEL, strlen(DEV_ROOT_K256_LABEL), root_k256);
    r = ds_app_keys_from_roots(root_ca, root_k256, app_id, instance_id, instance_id_len, &keys);
    if (r < 0) {
        goto out;
    }
    r = ds_app_ca_scalar(root_ca, app_id, out_ca);
    if (r < 0) {
        goto out;
    }
    r = ds_ec_public_from_private(DS_EC_P256, root_ca, root_pub);
    if (r == 0) {
        r = ds_p256_spki_der(root_pub, spki);
    }
    if (r < 0) {
        goto out;
    }
    ds_hex_encode(spki, sizeof(spki), out_kms_id_hex);
    memcpy(k->disk_crypt_key, keys.disk_crypt_key, DS_KEY_SIZE);
    k->disk_crypt_key_len = DS_KEY_SIZE;
    memcpy(k->env_crypt_key, keys.env_crypt_key, DS_KEY_SIZE);
    k->env_crypt_key_len = DS_KEY_SIZE;
    memcpy(k->k256_key, keys.k256_key, DS_KEY_SIZE);
    memcpy(k->k256_signature, keys.k256_signature, DS_K256_SIG_SIZE);
    k->k256_signature_len = DS_K256_SIG_SIZE;
    k->provider = DS_KEY_PROVIDER_NONE;
    r = ds_p256_pkcs8_pem(out_ca, &k->key, NULL);
    if (r < 0) {
        goto out;
    }
    agent_keys_free(a);
    a->appkeys = k;
    k = NULL;
out:
    ds_wipe(root_ca, sizeof(root_ca));
    ds_wipe(root_k256, sizeof(root_k256));
    ds_wipe(&keys, sizeof(keys));
    if (k) {
        ds_appkeys_done(k);
        free(k);
    }
    return r;
}

int agent_keys_set_ca_cert(struct agent *a, const char *pem)
{
    char *c = strdup(pem);
    if (!c) {
        return -ENOMEM;
    }
    free(a->appkeys->ca_cert);
    a->appkeys->ca_cert = c;
    return 0;
}
