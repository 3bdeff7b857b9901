/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificate store for TLS termination (spec host-side.md §4.2 step 3, §4.6): one wildcard
 * certificate per base domain, either the static `proxy.cert_chain/cert_key` files or PEM
 * handed over by the ACME certbot (gw_certs_set_pem). Each load builds two fresh SSL_CTXs
 * (ALPN http/1.1 and ALPN h2 for the `g` suffix) and swaps them in under the lock; SSLs that
 * are already handshaking hold their own reference to the old context, so a reload never
 * drops a connection. TLS versions come from `tls_versions`; session tickets and a server
 * session cache give resumption.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include <dstack/gateway.h>

#include "gw_proxy.h"

#define GW_PEM_MAX            (256 * 1024)
#define GW_SESSION_CACHE_SIZE 20480

struct gw_cert_entry {
    char domain[GW_CERT_DOMAIN_MAX + 1];
    char *chain_path, *key_path; /* NULL when set from PEM */
    SSL_CTX *ctx_h1, *ctx_h2;
};

struct gw_certs {
    pthread_mutex_t lock;
    unsigned tls_versions;
    struct gw_cert_entry *v;
    size_t count;
};

int gw_certs_new(struct gw_certs **out)
{
    struct gw_certs *cs = calloc(1, sizeof(*cs));
    if (cs == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_init(&cs->lock, NULL);
    cs->tls_versions = GW_TLS_1_2;
    cs->v = calloc(GW_CERTS_MAX, sizeof(*cs->v));
    if (cs->v == NULL) {
        free(cs);
        return -ENOMEM;
    }
    *out = cs;
    return 0;
}

static void entry_done(struct gw_cert_entry *e)
{
    SSL_CTX_free(e->ctx_h1);
    SSL_CTX_free(e->ctx_h2);
    free(e->chain_path);
    free(e->key_path);
    memset(e, 0, sizeof(*e));
}

void gw_certs_free(struct gw_certs *cs)
{
    if (cs == NULL) {
        return;
    }
    for (size_t i = 0; i < cs->count; i++) {
        entry_done(&cs->v[i]);
    }
    free(cs->v);
    pthread_mutex_destroy(&cs->lock);
    free(cs);
}

void gw_certs_set_versions(struct gw_certs *cs, unsigned tls_versions)
{
    pthread_mutex_lock(&cs->lock);
    cs->tls_versions = tls_versions ? tls_versions : GW_TLS_1_2;
    pthread_mutex_unlock(&cs->lock);
}

/* ALPN: the `g` context selects h2 (and refuses clients without it); the other http/1.1. */
static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                       const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    const unsigned char *want = arg; /* wire format: len, bytes */
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, want, (unsigned)want[0] + 1u, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED) {
        return SSL_TLSEXT_ERR_NOACK;
    }
    *out = sel;
    return SSL_TLSEXT_ERR_OK;
}

static const unsigned char alpn_h2[] = "\x02h2";
static const unsigned char alpn_h1[] = "\x08http/1.1";

static int build_ctx(unsigned versions, X509 *leaf, STACK_OF(X509) * chain, EVP_PKEY *key, bool h2,
                     SSL_CTX **out)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        return -DS_E_CRYPTO;
    }
    int rc = -DS_E_CERT;
    int minv = (versions & GW_TLS_1_2) ? TLS1_2_VERSION : TLS1_3_VERSION;
    int maxv = (versions & GW_TLS_1_3) ? TLS1_3_VERSION : TLS1_2_VERSION;
    if (SSL_CTX_set_min_proto_version(ctx, minv) != 1 ||
        SSL_CTX_set_max_proto_version(ctx, maxv) != 1) {
        rc = -DS_E_CRYPTO;
        goto out;
    }
    if (SSL_CTX_use_certificate(ctx, leaf) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        goto out;
    }
    for (int i = 0; i < sk_X509_num(chain); i++) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(chain, i)) != 1) {
            goto out;
        }
    }
    /* Resumption: stateless tickets (default on) plus a server-side cache for TLS 1.2 IDs. */
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, GW_SESSION_CACHE_SIZE);
    static const unsigned char sid_ctx[] = "dstack-gateway";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, (void *)(h2 ? alpn_h2 : alpn_h1));
    *out = ctx;
    ctx = NULL;
    rc = 0;
out:
    SSL_CTX_free(ctx);
    ERR_clear_error();
    return rc;
}

/* Build both contexts from PEM text. */
static int build_pair(unsigned versions, const char *chain_pem, size_t chain_len,
                      const char *key_pem, size_t key_len, SSL_CTX **h1, SSL_CTX **h2)
{
    int rc = -DS_E_CERT;
    BIO *cb = NULL, *kb = NULL;
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = sk_X509_new_null();
    EVP_PKEY *key = NULL;
    SSL_CTX *c1 = NULL, *c2 = NULL;
    if (chain_len > GW_PEM_MAX || key_len > GW_PEM_MAX || chain == NULL) {
        rc = chain == NULL ? -ENOMEM : -DS_E_LIMIT;
        goto out;
    }
    cb = BIO_new_mem_buf(chain_pem, (int)chain_len);
    kb = BIO_new_mem_buf(key_pem, (int)key_len);
    if (cb == NULL || kb == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    leaf = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    if (leaf == NULL || key == NULL) {
        goto out;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(cb, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }
        if (sk_X509_push(chain, x) <= 0) {
            X509_free(x);
            rc = -ENOMEM;
            goto out;
        }
    }
    rc = build_ctx(versions, leaf, chain, key, false, &c1);
    if (rc < 0) {
        goto out;
    }
    rc = build_ctx(versions, leaf, chain, key, true, &c2);
    if (rc < 0) {
        goto out;
    }
    *h1 = c1;
    *h2 = c2;
    c1 = c2 = NULL;
out:
    SSL_CTX_free(c1);
    SSL_CTX_free(c2);
    EVP_PKEY_free(key);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    BIO_free(cb);
    BIO_free(kb);
    ERR_clear_error();
    return rc;
}

static struct gw_cert_entry *find(struct gw_certs *cs, const char *domain)
{
    for (size_t i = 0; i < cs->count; i++) {
        if (ds_gw_domain_equal(cs->v[i].domain, domain)) {
            return &cs->v[i];
        }
    }
    return NULL;
}

/* Swap new contexts in (lock held); paths are taken over when non-NULL. */
static int install(struct gw_certs *cs, const char *domain, SSL_CTX *h1, SSL_CTX *h2,
                   char *chain_path, char *key_path)
{
    struct gw_cert_entry *e = find(cs, domain);
    if (e == NULL) {
        if (cs->count == GW_CERTS_MAX) {
            return -DS_E_LIMIT;
        }
        e = &cs->v[cs->count++];
        memset(e, 0, sizeof(*e));
        size_t n = strlen(domain);
        if (n > 0 && domain[n - 1] == '.') {
            n--;
        }
        for (size_t i = 0; i < n; i++) {
            char c = domain[i];
            e->domain[i] = (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
        }
    }
    SSL_CTX_free(e->ctx_h1);
    SSL_CTX_free(e->ctx_h2);
    e->ctx_h1 = h1;
    e->ctx_h2 = h2;
    if (chain_path != NULL) {
        free(e->chain_path);
        free(e->key_path);
        e->chain_path = chain_path;
        e->key_path = key_path;
    }
    return 0;
}

static int load_files(unsigned versions, const char *chain_path, const char *key_path, SSL_CTX **h1,
                      SSL_CTX **h2)
{
    uint8_t *chain = NULL, *key = NULL;
    size_t chain_len = 0, key_len = 0;
    int rc = ds_read_file(chain_path, GW_PEM_MAX, &chain, &chain_len);
    if (rc < 0) {
        goto out;
    }
    rc = ds_read_file(key_path, GW_PEM_MAX, &key, &key_len);
    if (rc < 0) {
        goto out;
    }
    rc = build_pair(versions, (const char *)chain, chain_len, (const char *)key, key_len, h1, h2);
out:
    free(chain);
    if (key != NULL) {
        ds_wipe(key, key_len);
        free(key);
    }
    return rc;
}

int gw_certs_load_files(struct gw_certs *cs, const char *base_domain, const char *chain_path,
                        const char *key_path)
{
    if (strlen(base_domain) == 0 || strlen(base_domain) > GW_CERT_DOMAIN_MAX) {
        return -EINVAL;
    }
    SSL_CTX *h1 = NULL, *h2 = NULL;
    pthread_mutex_lock(&cs->lock);
    unsigned versions = cs->tls_versions;
    pthread_mutex_unlock(&cs->lock);
    int rc = load_files(versions, chain_path, key_path, &h1, &h2);
    if (rc < 0) {
        return rc;
    }
    char *cp = strdup(chain_path), *kp = strdup(key_path);
    if (cp == NULL || kp == NULL) {
        free(cp);
        free(kp);
        SSL_CTX_free(h1);
        SSL_CTX_free(h2);
        return -ENOMEM;
    }
    pthread_mutex_lock(&cs->lock);
    rc = install(cs, base_domain, h1, h2, cp, kp);
    pthread_mutex_unlock(&cs->lock);
    if (rc < 0) {
        free(cp);
        free(kp);
        SSL_CTX_free(h1);
        SSL_CTX_free(h2);
    }
    return rc;
}

int gw_certs_set_pem(struct gw_certs *cs, const char *base_domain, const char *chain_pem,
                     size_t chain_len, const char *key_pem, size_t key_len)
{
    if (strlen(base_domain) == 0 || strlen(base_domain) > GW_CERT_DOMAIN_MAX) {
        return -EINVAL;
    }
    SSL_CTX *h1 = NULL, *h2 = NULL;
    pthread_mutex_lock(&cs->lock);
    unsigned versions = cs->tls_versions;
    pthread_mutex_unlock(&cs->lock);
    int rc = build_pair(versions, chain_pem, chain_len, key_pem, key_len, &h1, &h2);
    if (rc < 0) {
        return rc;
    }
    pthread_mutex_lock(&cs->lock);
    rc = install(cs, base_domain, h1, h2, NULL, NULL);
    pthread_mutex_unlock(&cs->lock);
    if (rc < 0) {
        SSL_CTX_free(h1);
        SSL_CTX_free(h2);
    }
    return rc;
}

int gw_certs_remove(struct gw_certs *cs, const char *base_domain)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&cs->lock);
    struct gw_cert_entry *e = find(cs, base_domain);
    if (e != NULL) {
        entry_done(e);
        *e = cs->v[--cs->count];
        rc = 0;
    }
    pthread_mutex_unlock(&cs->lock);
    return rc;
}

int gw_certs_reload(struct gw_certs *cs)
{
    int first_err = 0, reloaded = 0;
    char domain[GW_CERT_DOMAIN_MAX + 1];
    /* Paths are copied under the lock; files are read without it. */
    for (size_t i = 0;; i++) {
        char *cp = NULL, *kp = NULL;
        pthread_mutex_lock(&cs->lock);
        if (i >= cs->count) {
            pthread_mutex_unlock(&cs->lock);
            break;
        }
        unsigned versions = cs->tls_versions;
        bool file_backed = cs->v[i].chain_path != NULL;
        if (file_backed) {
            cp = strdup(cs->v[i].chain_path);
            kp = strdup(cs->v[i].key_path);
        }
        memcpy(domain, cs->v[i].domain, sizeof(domain));
        pthread_mutex_unlock(&cs->lock);
        if (!file_backed) {
            continue;
        }
        SSL_CTX *h1 = NULL, *h2 = NULL;
        int rc = (cp && kp) ? load_files(versions, cp, kp, &h1, &h2) : -ENOMEM;
        free(cp);
        free(kp);
        if (rc == 0) {
            pthread_mutex_lock(&cs->lock);
            rc = install(cs, domain, h1, h2, NULL, NULL);
            pthread_mutex_unlock(&cs->lock);
            if (rc < 0) {
                SSL_CTX_free(h1);
                SSL_CTX_free(h2);
            }
        }
        if (rc < 0 && first_err == 0) {
            first_err = rc;
        } else if (rc == 0) {
            reloaded++;
        }
    }
    return first_err < 0 ? first_err : reloaded;
}

bool gw_certs_has(struct gw_certs *cs, const char *base_domain)
{
    pthread_mutex_lock(&cs->lock);
    bool r = find(cs, base_domain) != NULL;
    pthread_mutex_unlock(&cs->lock);
    return r;
}

struct ssl_ctx_st *gw_certs_get_ctx(struct gw_certs *cs, const char *base_domain, bool h2)
{
    SSL_CTX *ctx = NULL;
    pthread_mutex_lock(&cs->lock);
    struct gw_cert_entry *e = find(cs, base_domain);
    if (e != NULL) {
        ctx = h2 ? e->ctx_h2 : e->ctx_h1;
        if (ctx != NULL) {
            SSL_CTX_up_ref(ctx);
        }
    }
    pthread_mutex_unlock(&cs->lock);
    return ctx;
}
