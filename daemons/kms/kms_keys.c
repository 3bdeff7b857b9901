/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Root key lifecycle seen from the network process (spec kms-ratls.md §3.1, §5.4): whether the
 * state dir holds a key set, bootstrap (the key process generates the roots; we attest their
 * hashes with the "dstack-kms-genereted-keys-v1:" prefix, spelling included, and publish
 * bootstrap-info.json), the public material we cache, and the RPC server certificate that is
 * reissued at every start with a fresh attestation and signed by the root CA in the key
 * process. The RPC key is the TLS key of this process, not a root key.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/err.h>
#include <openssl/pem.h>

#include "dstack/crypto.h"
#include "kms.h"
#include "log.h"

#define BOOTSTRAP_PREFIX "dstack-kms-genereted-keys-v1:" /* upstream's spelling */
#define RPC_KEY_FILE_MAX 8192

static const char *const key_files[] = {"tmp-ca.crt", "tmp-ca.key", "root-ca.crt", "root-ca.key",
                                        "root-k256.key"};

int kms_path(const struct kms *k, const char *name, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s", k->cfg.cert_dir, name);
    return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

/* The roots; rpc.{key,crt} are (re)made at every start, so they are not required here. */
bool kms_keys_exist(const char *cert_dir)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(key_files); i++) {
        char path[KMS_PATH_MAX];
        struct stat st;
        int n = snprintf(path, sizeof(path), "%s/%s", cert_dir, key_files[i]);
        if (n < 0 || (size_t)n >= sizeof(path) || stat(path, &st) != 0) {
            return false;
        }
    }
    return true;
}

static char *blob_str(const struct kms_blob *b)
{
    char *s = malloc(b->len + 1);
    if (s) {
        memcpy(s, b->ptr, b->len);
        s[b->len] = '\0';
    }
    return s;
}

int kms_keys_refresh(struct kms *k)
{
    struct kms_kp_reply rep;
    DS_TRY(kms_keyproc_call(&k->kp, KP_PUBLIC, NULL, 0, &rep));
    int r = rep.status;
    if (r == 0 && (rep.count != 4 || rep.fields[2].len != DS_K256_PUB_SIZE ||
                   rep.fields[3].len != DS_P256_SPKI_SIZE)) {
        r = -DS_E_PROTOCOL;
    }
    if (r == 0) {
        char *ca = blob_str(&rep.fields[0]), *tmp = blob_str(&rep.fields[1]);
        if (!ca || !tmp) {
            free(ca);
            free(tmp);
            r = -ENOMEM;
        } else {
            free(k->root_ca_pem);
            free(k->tmp_ca_pem);
            k->root_ca_pem = ca;
            k->tmp_ca_pem = tmp;
            memcpy(k->k256_pub, rep.fields[2].ptr, DS_K256_PUB_SIZE);
            memcpy(k->ca_spki, rep.fields[3].ptr, DS_P256_SPKI_SIZE);
            k->has_keys = true;
        }
    }
    kms_kp_reply_done(&rep);
    return r;
}

/* Bootstrap info (§5.4): the attestation over keccak256(prefix || hex(caSPKI) ";" hex(k256) ";").
 */
static int bootstrap_info(struct kms *k, json_t **out)
{
    char ca_hex[2 * DS_P256_SPKI_SIZE + 1], k_hex[2 * DS_K256_PUB_SIZE + 1];
    uint8_t rd[64] = {0};
    uint8_t *att = NULL;
    size_t att_len = 0;
    struct ds_keccak kc;
    ds_hex_encode(k->ca_spki, sizeof(k->ca_spki), ca_hex);
    ds_hex_encode(k->k256_pub, sizeof(k->k256_pub), k_hex);
    ds_keccak256_init(&kc);
    ds_keccak256_update(&kc, BOOTSTRAP_PREFIX, strlen(BOOTSTRAP_PREFIX));
    ds_keccak256_update(&kc, ca_hex, strlen(ca_hex));
    ds_keccak256_update(&kc, ";", 1);
    ds_keccak256_update(&kc, k_hex, strlen(k_hex));
    ds_keccak256_update(&kc, ";", 1);
    ds_keccak256_final(&kc, rd);
    DS_TRY(kms_attest(k, rd, &att, &att_len));
    json_t *o = json_object();
    int r = o ? 0 : -ENOMEM;
    if (r == 0) {
        r = kms_json_set_hex(o, "ca_pubkey", k->ca_spki, sizeof(k->ca_spki));
    }
    if (r == 0) {
        r = kms_json_set_hex(o, "k256_pubkey", k->k256_pub, sizeof(k->k256_pub));
    }
    if (r == 0) {
        r = kms_json_set_hex(o, "attestation", att, att_len);
    }
    free(att);
    if (r < 0) {
        json_decref(o);
        return r;
    }
    *out = o;
    return 0;
}

int kms_keys_bootstrap(struct kms *k, const char *domain, bool write_info, json_t **out_info)
{
    struct kms_kp_reply rep;
    json_t *info = NULL;
    char path[KMS_PATH_MAX];
    DS_TRY(kms_keyproc_call(&k->kp, KP_GENERATE, NULL, 0, &rep));
    int r = rep.status;
    kms_kp_reply_done(&rep);
    if (r < 0) {
        log_warnx("key generation failed: %s", ds_strerror(r));
        return r;
    }
    DS_TRY(kms_keys_refresh(k));
    r = bootstrap_info(k, &info);
    if (r < 0) {
        log_warnx("bootstrap attestation failed: %s", ds_strerror(r));
        return r;
    }
    if (write_info) {
        char *text = json_dumps(info, JSON_COMPACT);
        r = text ? kms_path(k, "bootstrap-info.json", path, sizeof(path)) : -ENOMEM;
        if (r == 0) {
            r = ds_write_file_atomic(path, text, strlen(text), 0600);
        }
        free(text);
    }
    if (r == 0) {
        r = kms_path(k, "rpc-domain", path, sizeof(path));
    }
    if (r == 0) {
        r = ds_write_file_atomic(path, domain, strlen(domain), 0600);
    }
    if (r < 0) {
        json_decref(info);
        return r;
    }
    char fp[17];
    ds_hex_encode(k->k256_pub + 1, 8, fp);
    log_info("bootstrapped new root keys (k256 pubkey %02x%s..., fingerprints only)",
             k->k256_pub[0], fp);
    if (out_info) {
        *out_info = info;
    } else {
        json_decref(info);
    }
    return 0;
}

/* rpc.key: reuse the stored key or make a new one (PEM PKCS#8, 0600). */
static int rpc_key(struct kms *k, EVP_PKEY **out)
{
    char path[KMS_PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    char *pem = NULL;
    DS_TRY(kms_path(k, "rpc.key", path, sizeof(path)));
    int r = ds_read_file(path, RPC_KEY_FILE_MAX, &data, &len);
    if (r == 0) {
        uint8_t scalar[DS_KEY_SIZE];
        r = ds_p256_scalar_from_pem((const char *)data, len, scalar);
        if (r == 0) {
            r = ds_ratls_key_from_scalar(scalar, out);
        }
        ds_wipe(scalar, sizeof(scalar));
        ds_wipe(data, len);
        free(data);
        if (r == 0) {
            return 0;
        }
        log_warnx("rpc.key unusable (%s): making a new one", ds_strerror(r));
    }
    EVP_PKEY *key = NULL;
    r = ds_ratls_key_generate(&key);
    if (r == 0) {
        r = ds_ratls_key_pem(key, &pem);
    }
    if (r == 0) {
        r = ds_write_file_atomic(path, pem, strlen(pem), 0600);
    }
    ds_keys_free_secret(pem);
    if (r < 0) {
        EVP_PKEY_free(key);
        return r;
    }
    *out = key;
    return 0;
}

static int tls_ctx(struct kms *k, EVP_PKEY *key, const char *cert_pem, SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *bio = NULL;
    X509 *cert = NULL, *ca = NULL, *tmp = NULL;
    int r = -DS_E_CRYPTO;
    if (!ctx) {
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    bio = BIO_new_mem_buf(cert_pem, -1);
    cert = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    bio = BIO_new_mem_buf(k->root_ca_pem, -1);
    ca = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    bio = BIO_new_mem_buf(k->tmp_ca_pem, -1);
    tmp = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!cert || !ca || !tmp || SSL_CTX_use_certificate(ctx, cert) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        goto out;
    }
    if (SSL_CTX_add1_chain_cert(ctx, ca) != 1) {
        goto out;
    }
    /* Client certificates are optional, but when sent they must chain to the temp CA (§1.1). */
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    if (X509_STORE_add_cert(store, tmp) != 1) {
        goto out;
    }
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    if (names) {
        sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(tmp)));
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_verify_depth(ctx, 2);
    /* Session resumption (TLS 1.2 session IDs, TLS 1.3 tickets). A server that asks for client
     * certificates must name a session id context, else OpenSSL fails every resumption with an
     * internal error alert. A resumed session keeps the client certificate (it is part of the
     * session), and every request still verifies its attestation: resumption only saves the
     * handshake. */
    if (SSL_CTX_set_session_id_context(ctx, (const unsigned char *)KMS_TLS_SESSION_CTX,
                                       sizeof(KMS_TLS_SESSION_CTX) - 1) != 1) {
        goto out;
    }
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, KMS_TLS_SESSION_CACHE);
    SSL_CTX_set_timeout(ctx, KMS_TLS_SESSION_TTL);
    /* Stateful resumption only (TLS 1.2 session ids, TLS 1.3 tickets that name a cached
     * session): a stateless ticket makes OpenSSL 3.0 serialize, re-parse and serialize the
     * session on every full handshake, and re-parse it on every resumption, and the session
     * holds the client certificate with its quote (a tenth of the server's CPU per release). */
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(ctx, 1);
    *out = ctx;
    ctx = NULL;
    r = 0;
out:
    ERR_clear_error();
    X509_free(cert);
    X509_free(ca);
    X509_free(tmp);
    SSL_CTX_free(ctx);
    return r;
}

int kms_keys_setup_rpc(struct kms *k, const char *domain)
{
    EVP_PKEY *key = NULL;
    uint8_t *spki = NULL, *att = NULL;
    size_t spki_len = 0, att_len = 0;
    char path[KMS_PATH_MAX];
    char *pem = NULL;
    struct kms_kp_reply rep = {0};
    int r = rpc_key(k, &key);
    if (r == 0) {
        r = ds_ratls_spki_der(key, &spki, &spki_len);
    }
    if (r == 0 && k->cfg.attest_rpc_cert) {
        r = kms_attest_for_key(k, key, &att, &att_len);
        if (r < 0) {
            log_warnx("cannot attest the RPC certificate: %s", ds_strerror(r));
        }
    }
    if (r == 0) {
        struct kms_blob args[] = {{domain, strlen(domain)}, {spki, spki_len}, {att, att_len}};
        r = kms_keyproc_call(&k->kp, KP_SIGN_RPC, args, DS_ARRAY_SIZE(args), &rep);
        if (r == 0) {
            r = rep.status;
        }
        if (r == 0 && rep.count != 1) {
            r = -DS_E_PROTOCOL;
        }
    }
    if (r == 0) {
        pem = blob_str(&rep.fields[0]);
        r = pem ? kms_path(k, "rpc.crt", path, sizeof(path)) : -ENOMEM;
    }
    if (r == 0) {
        r = ds_write_file_atomic(path, pem, strlen(pem), 0644);
    }
    if (r == 0) {
        SSL_CTX *ctx = NULL;
        r = tls_ctx(k, key, pem, &ctx);
        if (r == 0) {
            SSL_CTX_free(k->tls);
            k->tls = ctx;
        }
    }
    if (r == 0) {
        free(k->domain);
        k->domain = strdup(domain);
        r = k->domain ? 0 : -ENOMEM;
    }
    kms_kp_reply_done(&rep);
    free(pem);
    free(spki);
    free(att);
    EVP_PKEY_free(key);
    return r;
}
