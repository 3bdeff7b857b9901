/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bootstrap and onboarding (spec kms-ratls.md §2.4, §5.4). The `Onboard` service runs on the
 * plain-HTTP onboard listener while the state dir has no keys: Bootstrap (generate the roots
 * and publish bootstrap-info.json), Onboard (fetch the roots from a running KMS),
 * GetAttestationInfo (what an operator allowlists) and Finish (leave onboarding, start the
 * main listener). The onboarding client flow talks to the source KMS with a minimal blocking
 * HTTPS client: the source's server certificate is not chain-verified (as upstream) but must
 * carry a valid attestation, whose BootInfo our own backend must allow (bootAuth/kms); then we
 * present an RA-TLS client certificate minted from the source's temp CA with our attestation,
 * and the source authorizes us before GetKmsKey releases the root keys. They go straight into
 * our key process.
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/err.h>
#include <openssl/pem.h>

#include "kms.h"
#include "log.h"

#define CLIENT_TIMEOUT_S 60
#define CLIENT_RESP_MAX  (4 * 1024 * 1024)
#define CLIENT_HOST_MAX  256
#define TEMP_CERT_CN     "RA-TLS TEMP Cert"
#define FINISH_DELAY_US  200000 /* Finish: reply first, then leave the loop */

/* ---- a minimal HTTP(S) client ------------------------------------------------------------- */

struct url {
    bool tls;
    char host[CLIENT_HOST_MAX];
    char port[8];
    char path[KMS_PATH_MAX];
};

static int parse_url(const char *s, struct url *u)
{
    const char *p;
    memset(u, 0, sizeof(*u));
    if (strncmp(s, "https://", 8) == 0) {
        u->tls = true;
        p = s + 8;
        snprintf(u->port, sizeof(u->port), "443");
    } else if (strncmp(s, "http://", 7) == 0) {
        p = s + 7;
        snprintf(u->port, sizeof(u->port), "80");
    } else {
        return -EINVAL;
    }
    size_t hl = strcspn(p, "/");
    const char *auth_end = p + hl;
    const char *colon = NULL;
    if (*p == '[') {
        const char *rb = memchr(p, ']', hl);
        if (!rb) {
            return -EINVAL;
        }
        if ((size_t)(rb - p - 1) >= sizeof(u->host)) {
            return -EINVAL;
        }
        memcpy(u->host, p + 1, (size_t)(rb - p - 1));
        colon = rb + 1 < auth_end && rb[1] == ':' ? rb + 1 : NULL;
    } else {
        colon = memchr(p, ':', hl);
        size_t n = colon ? (size_t)(colon - p) : hl;
        if (n == 0 || n >= sizeof(u->host)) {
            return -EINVAL;
        }
        memcpy(u->host, p, n);
    }
    if (colon) {
        size_t n = (size_t)(auth_end - colon - 1);
        if (n == 0 || n >= sizeof(u->port)) {
            return -EINVAL;
        }
        memcpy(u->port, colon + 1, n);
        u->port[n] = '\0';
    }
    snprintf(u->path, sizeof(u->path), "%s", *auth_end ? auth_end : "/");
    return 0;
}

static int tcp_connect(const struct url *u)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    if (getaddrinfo(u->host, u->port, &hints, &res) != 0) {
        return -DS_E_NETWORK;
    }
    int fd = -1;
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            continue;
        }
        struct timeval tv = {.tv_sec = CLIENT_TIMEOUT_S};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            break;
        }
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd >= 0 ? fd : -DS_E_NETWORK;
}

struct http_resp {
    long status;
    char *body; /* NUL-terminated */
    size_t len;
    X509 *server_cert;
};

static void http_resp_done(struct http_resp *r)
{
    if (r->body) {
        ds_wipe(r->body, r->len);
        free(r->body);
    }
    X509_free(r->server_cert);
    memset(r, 0, sizeof(*r));
}

static int parse_response(struct ds_buf *raw, struct http_resp *out)
{
    const char *data = (const char *)raw->data;
    const char *end = memmem(data, raw->len, "\r\n\r\n", 4);
    int major, minor, status;
    if (!end || sscanf(data, "HTTP/%d.%d %d", &major, &minor, &status) != 3) {
        return -DS_E_PROTOCOL;
    }
    size_t off = (size_t)(end - data) + 4;
    size_t len = raw->len - off;
    const char *cl = strcasestr(data, "\r\ncontent-length:");
    if (cl && cl < end) {
        unsigned long v = strtoul(cl + 17, NULL, 10);
        if (v > len) {
            return -DS_E_PROTOCOL;
        }
        len = v;
    }
    out->body = malloc(len + 1);
    if (!out->body) {
        return -ENOMEM;
    }
    memcpy(out->body, data + off, len);
    out->body[len] = '\0';
    out->len = len;
    out->status = status;
    return 0;
}

/* POST json to url (Connection: close), optionally with a client certificate. */
static int http_post(const char *url_s, const char *json, EVP_PKEY *key, X509 *cert,
                     struct http_resp *out, char *err, size_t n)
{
    struct url u;
    struct ds_buf req, raw;
    SSL_CTX *ctx = NULL;
    SSL *ssl = NULL;
    int fd = -1;
    memset(out, 0, sizeof(*out));
    ds_buf_init(&req, CLIENT_RESP_MAX);
    ds_buf_init(&raw, CLIENT_RESP_MAX);
    int r = parse_url(url_s, &u);
    if (r < 0) {
        snprintf(err, n, "invalid URL \"%s\"", url_s);
        goto out;
    }
    r = ds_buf_printf(&req,
                      "POST %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dstack-kms/" KMS_VERSION
                      "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                      "Connection: close\r\n\r\n%s",
                      u.path, u.host, strlen(json), json);
    if (r < 0) {
        goto out;
    }
    fd = tcp_connect(&u);
    if (fd < 0) {
        r = fd;
        snprintf(err, n, "cannot connect to %s:%s", u.host, u.port);
        goto out;
    }
    if (u.tls) {
        ctx = SSL_CTX_new(TLS_client_method());
        ssl = ctx ? SSL_new(ctx) : NULL;
        r = ssl ? 0 : -ENOMEM;
        if (r == 0 && cert && key &&
            (SSL_use_certificate(ssl, cert) != 1 || SSL_use_PrivateKey(ssl, key) != 1)) {
            r = -DS_E_CRYPTO;
        }
        /* the source's certificate is checked through its attestation, not a chain (§6.5) */
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        if (r == 0) {
            SSL_set_tlsext_host_name(ssl, u.host);
            SSL_set_fd(ssl, fd);
            if (SSL_connect(ssl) != 1) {
                snprintf(err, n, "TLS handshake with %s:%s failed", u.host, u.port);
                r = -DS_E_NETWORK;
            }
        }
        if (r == 0) {
            out->server_cert = SSL_get1_peer_certificate(ssl);
        }
    }
    for (size_t off = 0; r == 0 && off < req.len;) {
        int w = ssl ? SSL_write(ssl, req.data + off, (int)(req.len - off))
                    : (int)write(fd, req.data + off, req.len - off);
        if (w <= 0) {
            snprintf(err, n, "write to %s:%s failed", u.host, u.port);
            r = -DS_E_NETWORK;
            break;
        }
        off += (size_t)w;
    }
    while (r == 0) {
        char buf[16384];
        int got = ssl ? SSL_read(ssl, buf, sizeof(buf)) : (int)read(fd, buf, sizeof(buf));
        if (got <= 0) {
            break; /* EOF (Connection: close) */
        }
        r = ds_buf_append(&raw, buf, (size_t)got);
        if (r < 0) {
            snprintf(err, n, "response too large");
        }
    }
    if (r == 0) {
        r = parse_response(&raw, out);
        if (r < 0) {
            snprintf(err, n, "malformed HTTP response from %s:%s", u.host, u.port);
        }
    }
out:
    if (ssl) {
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    if (fd >= 0) {
        close(fd);
    }
    ERR_clear_error();
    ds_buf_done(&req);
    ds_wipe(raw.data, raw.len);
    ds_buf_done(&raw);
    if (r < 0) {
        http_resp_done(out);
    }
    return r;
}

/* A pRPC call: 200 with a JSON object, else the server's {"error"} text in err. */
static int prpc_call(const char *base, const char *method, const char *json, EVP_PKEY *key,
                     X509 *cert, struct http_resp *resp, json_t **out, char *err, size_t n)
{
    char url[KMS_PATH_MAX];
    snprintf(url, sizeof(url), "%s/%s?json", base, method);
    DS_TRY(http_post(url, json, key, cert, resp, err, n));
    json_t *o = json_loadb(resp->body, resp->len, 0, NULL);
    if (resp->status != 200) {
        json_t *e = json_object_get(o, "error");
        snprintf(err, n, "%s: %s", method, json_is_string(e) ? json_string_value(e) : "HTTP error");
        json_decref(o);
        return -DS_E_PROTOCOL;
    }
    if (!json_is_object(o)) {
        snprintf(err, n, "%s: reply is not a JSON object", method);
        json_decref(o);
        return -DS_E_PROTOCOL;
    }
    *out = o;
    return 0;
}

static const char *get_str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int pem_pair(const char *key_pem, const char *cert_pem, EVP_PKEY **key, X509 **cert)
{
    BIO *b = BIO_new_mem_buf(key_pem, -1);
    *key = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    b = BIO_new_mem_buf(cert_pem, -1);
    *cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    if (!*key || !*cert) {
        EVP_PKEY_free(*key);
        X509_free(*cert);
        *key = NULL;
        *cert = NULL;
        return -DS_E_FORMAT;
    }
    return 0;
}

/* Step 2: our RA-TLS client certificate, issued by the source's temp CA. */
static int temp_cert(struct kms *k, EVP_PKEY *ca_key, X509 *ca_cert, EVP_PKEY **out_key,
                     X509 **out_cert)
{
    EVP_PKEY *key = NULL;
    uint8_t *att = NULL;
    size_t att_len = 0;
    X509 *cert = NULL;
    int r = ds_ratls_key_generate(&key);
    if (r == 0) {
        r = kms_attest_for_key(k, key, &att, &att_len);
    }
    if (r == 0) {
        struct ds_ratls_cert_req req = {
            .subject = TEMP_CERT_CN,
            .attestation = att,
            .attestation_len = att_len,
            .now = (int64_t)time(NULL),
        };
        r = ds_ratls_cert_build(&req, key, ca_key, ca_cert, &cert);
    }
    free(att);
    if (r < 0) {
        EVP_PKEY_free(key);
        return r;
    }
    *out_key = key;
    *out_cert = cert;
    return 0;
}

int kms_onboard_from(struct kms *k, const char *source_url, const char *domain, char *err, size_t n)
{
    char base[KMS_PATH_MAX];
    struct http_resp resp = {0};
    json_t *tmp = NULL, *keys = NULL;
    struct ds_kms_boot_info src = {0};
    struct ds_kms_decision d = {0};
    EVP_PKEY *ca_key = NULL, *my_key = NULL;
    X509 *ca_cert = NULL, *my_cert = NULL, *src_cert = NULL;
    uint8_t k256[DS_KEY_SIZE];
    struct kms_kp_reply rep = {0};
    (void)domain;
    size_t len = strlen(source_url);
    while (len > 0 && source_url[len - 1] == '/') {
        len--;
    }
    bool has_prpc = len >= 5 && memcmp(source_url + len - 5, "/prpc", 5) == 0;
    snprintf(base, sizeof(base), "%.*s%s", (int)len, source_url, has_prpc ? "" : "/prpc");

    /* 1. temp CA from the source; its server certificate must carry a valid attestation */
    int r = prpc_call(base, "GetTempCaCert", "{}", NULL, NULL, &resp, &tmp, err, n);
    if (r < 0) {
        goto out;
    }
    if (!resp.server_cert) {
        snprintf(err, n, "the source KMS is not served over TLS");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    r = kms_cert_boot_info(k, resp.server_cert, NULL, &src, err, n);
    if (r < 0) {
        goto out;
    }
    /* The keys come over a second connection: it must reach the attested server, not
     * whoever answers that connection (a network attacker forwarding only the first one). */
    src_cert = resp.server_cert;
    X509_up_ref(src_cert);
    /* 3. is the source allowed (our backend, bootAuth/kms)? */
    if (src.os_image_hash_len == 0) {
        const struct ds_kms_boot_info *self = NULL;
        char e2[KMS_ERR_MAX];
        if (kms_self_boot_info(k, &self, e2, sizeof(e2)) == 0 && self->os_image_hash_len) {
            src.os_image_hash = malloc(self->os_image_hash_len);
            if (src.os_image_hash) {
                memcpy(src.os_image_hash, self->os_image_hash, self->os_image_hash_len);
                src.os_image_hash_len = self->os_image_hash_len;
            }
        }
    }
    r = kms_auth_check(k, DS_KMS_BOOT_KMS, &src, &d, err, n);
    if (r < 0) {
        goto out;
    }
    if (!d.allowed) {
        snprintf(err, n, "the source KMS is not allowed: Boot denied: %s", d.reason);
        r = -DS_E_DENIED;
        goto out;
    }
    /* 2. our RA-TLS client certificate from its temp CA */
    const char *tk = get_str(tmp, "temp_ca_key"), *tc = get_str(tmp, "temp_ca_cert");
    if (!tk || !tc || pem_pair(tk, tc, &ca_key, &ca_cert) < 0) {
        snprintf(err, n, "GetTempCaCert: missing or invalid temp CA");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    r = temp_cert(k, ca_key, ca_cert, &my_key, &my_cert);
    if (r < 0) {
        snprintf(err, n, "cannot make the RA-TLS client certificate: %s", ds_strerror(r));
        goto out;
    }
    /* 4. the keys */
    json_t *req = json_pack("{s:s}", "vm_config", k->vm_config);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    http_resp_done(&resp);
    r = body ? prpc_call(base, "GetKmsKey", body, my_key, my_cert, &resp, &keys, err, n) : -ENOMEM;
    free(body);
    if (r < 0) {
        goto out;
    }
    if (!resp.server_cert || X509_cmp(resp.server_cert, src_cert) != 0) {
        snprintf(err, n,
                 "GetKmsKey: the source KMS presented a different certificate than the "
                 "attested one");
        r = -DS_E_MISMATCH;
        goto out;
    }
    json_t *first = json_array_get(json_object_get(keys, "keys"), 0);
    const char *ca_pem = get_str(first, "ca_key"), *k_hex = get_str(first, "k256_key");
    const char *tmp_pem = get_str(keys, "temp_ca_key");
    if (!ca_pem || !k_hex || !tmp_pem ||
        ds_hex_decode(k_hex, strlen(k_hex), k256, sizeof(k256)) != DS_KEY_SIZE) {
        snprintf(err, n, "GetKmsKey: malformed reply");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    /* 5. store them (key process) */
    struct kms_blob args[] = {
        {ca_pem, strlen(ca_pem)}, {k256, sizeof(k256)}, {tmp_pem, strlen(tmp_pem)}};
    r = kms_keyproc_call(&k->kp, KP_IMPORT, args, 3, &rep);
    r = r < 0 ? r : rep.status;
    if (r < 0) {
        snprintf(err, n, "cannot store the received keys: %s", ds_strerror(r));
        goto out;
    }
    r = kms_keys_refresh(k);
    if (r < 0) {
        snprintf(err, n, "cannot read back the keys: %s", ds_strerror(r));
    }
out:
    ds_wipe(k256, sizeof(k256));
    kms_kp_reply_done(&rep);
    json_decref(keys); /* holds secrets in jansson strings until freed */
    json_decref(tmp);
    EVP_PKEY_free(ca_key);
    X509_free(ca_cert);
    EVP_PKEY_free(my_key);
    X509_free(my_cert);
    X509_free(src_cert);
    ds_kms_decision_done(&d);
    ds_kms_boot_info_done(&src);
    http_resp_done(&resp);
    return r;
}

/* ---- the Onboard service ------------------------------------------------------------------ */

static bool any_root_file(struct kms *k, bool with_info)
{
    static const char *const names[] = {"root-ca.key", "root-k256.key", "bootstrap-info.json"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(names) - (with_info ? 0 : 1); i++) {
        char path[KMS_PATH_MAX];
        if (kms_path(k, names[i], path, sizeof(path)) == 0 && access(path, F_OK) == 0) {
            return true;
        }
    }
    return false;
}

static int write_domain(struct kms *k, const char *domain)
{
    char path[KMS_PATH_MAX];
    DS_TRY(kms_path(k, "rpc-domain", path, sizeof(path)));
    return ds_write_file_atomic(path, domain, strlen(domain), 0600);
}

static int ob_bootstrap(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_bootstrap_req req = {0};
    char msg[DS_KMS_DECODE_MSG_MAX];
    int r = ds_kms_req_decode(DS_KMS_REQ_BOOTSTRAP, params, ds_rpc_call_from_query(call), &req, msg,
                              sizeof(msg));
    if (r < 0) {
        return ds_rpc_call_error(call, "%s", msg);
    }
    if (any_root_file(k, true)) {
        r = ds_rpc_call_error(call, "Already bootstrapped");
    }
    if (r == 0) {
        r = kms_self_authorize(k, call);
    }
    if (r == 0) {
        r = kms_keys_bootstrap(k, req.domain, true, out);
        if (r < 0) {
            r = ds_rpc_call_error(call, "Failed to bootstrap: %s", ds_strerror(r));
        }
    }
    ds_kms_req_free(DS_KMS_REQ_BOOTSTRAP, &req);
    return r;
}

static int ob_onboard(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_onboard_req req = {0};
    char msg[DS_KMS_DECODE_MSG_MAX], err[KMS_ERR_MAX] = "";
    int r = ds_kms_req_decode(DS_KMS_REQ_ONBOARD, params, ds_rpc_call_from_query(call), &req, msg,
                              sizeof(msg));
    if (r < 0) {
        return ds_rpc_call_error(call, "%s", msg);
    }
    if (any_root_file(k, false)) {
        r = ds_rpc_call_error(call, "Already onboarded");
    }
    if (r == 0) {
        r = kms_onboard_from(k, req.source_url, req.domain, err, sizeof(err));
        if (r < 0) {
            log_warnx("onboarding from \"%s\" failed: %s", req.source_url, err);
            r = ds_rpc_call_error(call, "Failed to onboard: %s", err);
        }
    }
    if (r == 0) {
        r = write_domain(k, req.domain);
    }
    if (r == 0) {
        json_t *o = json_object();
        r = o ? kms_json_set_hex(o, "k256_pubkey", k->k256_pub, sizeof(k->k256_pub)) : -ENOMEM;
        if (r == 0) {
            log_info("onboarded from \"%s\"", req.source_url);
            *out = o;
        } else {
            json_decref(o);
        }
    }
    ds_kms_req_free(DS_KMS_REQ_ONBOARD, &req);
    return r;
}

static int ob_attestation_info(struct ds_rpc_call *call, const json_t *params, json_t **out,
                               void *ctx)
{
    struct kms *k = ctx;
    const struct ds_kms_boot_info *bi = NULL;
    struct ds_kms_auth_info info = {0};
    char err[KMS_ERR_MAX] = "";
    (void)params;
    int r = kms_self_boot_info(k, &bi, err, sizeof(err));
    if (r < 0) {
        return ds_rpc_call_error(call, "%s", err);
    }
    if (kms_auth_info(k, &info, err, sizeof(err)) < 0) {
        ds_kms_auth_info_done(&info); /* best effort (§2.4) */
    }
    json_t *o = json_object();
    r = o ? 0 : -ENOMEM;
    if (r == 0) {
        r = kms_json_set_hex(o, "device_id", bi->device_id, sizeof(bi->device_id));
    }
    if (r == 0) {
        r = kms_json_set_hex(o, "mr_aggregated", bi->mr_aggregated, sizeof(bi->mr_aggregated));
    }
    if (r == 0) {
        r = kms_json_set_hex(o, "os_image_hash", bi->os_image_hash, bi->os_image_hash_len);
    }
    if (r == 0) {
        r = json_object_set_new(o, "tee_variant", json_string(bi->tee_variant)) ||
                    json_object_set_new(o, "site_name",
                                        json_string(k->cfg.site_name ? k->cfg.site_name : "")) ||
                    json_object_set_new(o, "eth_rpc_url",
                                        json_string(info.eth_rpc_url ? info.eth_rpc_url : "")) ||
                    json_object_set_new(
                        o, "kms_contract_address",
                        json_string(info.kms_contract_addr ? info.kms_contract_addr : "")) ||
                    json_object_set_new(o, "ppid", json_string(""))
                ? -ENOMEM
                : 0;
    }
    ds_kms_auth_info_done(&info);
    if (r < 0) {
        json_decref(o);
        return r;
    }
    *out = o;
    return 0;
}

static void finish(struct kms *k)
{
    /* leave the loop a moment later, so the reply to Finish is still written */
    struct timeval tv = {.tv_sec = 0, .tv_usec = FINISH_DELAY_US};
    k->onboard_finished = true;
    event_base_loopexit(k->base, &tv);
}

static int ob_finish(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    *out = NULL;
    finish(ctx);
    return 0;
}

int kms_onboard_finish_route(struct ds_rpc_call *call, void *ctx)
{
    ds_rpc_call_reply_raw(call, 200, "text/plain", "OK", 2);
    finish(ctx);
    return 0;
}

int kms_onboard_page(struct ds_rpc_call *call, void *ctx)
{
    static const char page[] =
        "<!doctype html><html><head><title>dstack-kms onboarding</title></head><body>"
        "<h1>dstack-kms onboarding</h1><p>This KMS has no keys yet. Call "
        "<code>/prpc/Onboard.GetAttestationInfo</code> to allowlist it, then either "
        "<code>/prpc/Onboard.Bootstrap {\"domain\":...}</code> or "
        "<code>/prpc/Onboard.Onboard {\"source_url\":...,\"domain\":...}</code>, then "
        "<code>/finish</code>.</p></body></html>";
    (void)ctx;
    ds_rpc_call_reply_raw(call, 200, "text/html; charset=utf-8", page, sizeof(page) - 1);
    return 0;
}

static const struct ds_rpc_method onboard_methods[] = {
    {"Bootstrap", ob_bootstrap, 0, 0},
    {"Onboard", ob_onboard, 0, 0},
    {"GetAttestationInfo", ob_attestation_info, DS_RPC_NO_PARAMS, 0},
    {"Finish", ob_finish, DS_RPC_NO_PARAMS, 0},
};

const struct ds_rpc_service kms_onboard_service = {
    .name = "Onboard",
    .methods = onboard_methods,
    .method_count = DS_ARRAY_SIZE(onboard_methods),
};
