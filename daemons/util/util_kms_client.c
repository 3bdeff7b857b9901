/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's KMS client (spec kms-ratls.md §1.2-1.3, §2.3, §3.8, §6.5; host-side.md §3.5):
 * pRPC calls in JSON mode (`POST {base}/{Method}?json`, errors as HTTP 400 {"error": ...}) over
 * libcurl, GetTempCaCert over TLS that verifies nothing (the upstream design: real authority
 * is the attestation inside the client certificate), then GetAppKey over mutual TLS: the
 * client presents an RA-TLS certificate signed by the temp CA, and the KMS server certificate
 * must chain to the root CA that GetTempCaCert returned (a store holding only that CA, no
 * system roots), match the host name, carry the "kms:rpc" usage extension and, when it carries
 * an attestation, that attestation must verify. TLS identities are installed from memory in
 * curl's SSL_CTX callback; the extra server checks run in OpenSSL's certificate verification
 * callback, so a refused server never sees the request. Responses holding keys are kept in
 * wiped buffers; nothing here logs key material.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "dstack/crypto.h"
#include "dstack/ratls.h"
#include "log.h"
#include "util.h"

#define PRPC_SUFFIX           "/prpc"
#define SIM_ROOT_CA_PATH      "/dstack-sim/v1/root-ca.der"
#define ROOT_CA_DER_MAX       (64 * 1024)
#define OS_IMAGE_HASH_MAX     64
#define COLLATERAL_TIMEOUT_MS 30000L

/* ---- small helpers ------------------------------------------------------------------------- */

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (!err || err_size == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static bool has_prefix(const char *s, const char *p)
{
    return strncmp(s, p, strlen(p)) == 0;
}

static char *secret_strdup(const char *s)
{
    return s ? strdup(s) : NULL;
}

int util_kms_client_init(struct util_kms_client *c, const char *url)
{
    memset(c, 0, sizeof(*c));
    if (!url || !has_prefix(url, "https://") || strlen(url) <= strlen("https://")) {
        return -EINVAL;
    }
    size_t n = strlen(url);
    while (n > strlen("https://") && url[n - 1] == '/') {
        n--;
    }
    size_t sl = strlen(PRPC_SUFFIX);
    bool has_suffix = n >= sl && strncmp(url + n - sl, PRPC_SUFFIX, sl) == 0;
    if (n + (has_suffix ? 0 : sl) >= sizeof(c->base)) {
        return -EINVAL;
    }
    memcpy(c->base, url, n);
    c->base[n] = '\0';
    if (!has_suffix) {
        memcpy(c->base + n, PRPC_SUFFIX, sl + 1);
    }
    return 0;
}

/* ---- PEM ----------------------------------------------------------------------------------- */

int util_pem_to_cert(const char *pem, X509 **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio) {
        return -ENOMEM;
    }
    X509 *c = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!c) {
        return -DS_E_FORMAT;
    }
    *out = c;
    return 0;
}

int util_pem_to_key(const char *pem, EVP_PKEY **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio) {
        return -ENOMEM;
    }
    EVP_PKEY *k = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    ERR_clear_error();
    if (!k) {
        return -DS_E_FORMAT;
    }
    *out = k;
    return 0;
}

/* ---- TLS set-up ---------------------------------------------------------------------------- */

/* What one request's TLS layer uses and learns. */
struct kms_tls {
    EVP_PKEY *key; /* client identity (NULL: none) */
    X509 *cert;
    X509 *root; /* the only trust anchor for the server (NULL: server not verified) */
    const struct util_kms_client *client;
    char why[UTIL_KMS_ERR_MAX]; /* why our server check refused, "" otherwise */
};

/* The KMS server certificate's usage must be "kms:rpc" (§6.5). */
static int check_usage(X509 *leaf, char *why, size_t why_size)
{
    const uint8_t *usage = NULL;
    size_t len = 0;
    int r = ds_ratls_cert_get_ext(leaf, DS_RATLS_EXT_USAGE, &usage, &len);
    if (r == -DS_E_NOT_FOUND) {
        set_err(why, why_size, "KMS server certificate has no usage extension (expected \"%s\")",
                DS_RATLS_USAGE_KMS_RPC);
        return -DS_E_CERT;
    }
    if (r < 0) {
        set_err(why, why_size, "KMS server certificate usage extension: %s", ds_strerror(r));
        return -DS_E_CERT;
    }
    if (len != strlen(DS_RATLS_USAGE_KMS_RPC) || memcmp(usage, DS_RATLS_USAGE_KMS_RPC, len) != 0) {
        set_err(why, why_size, "KMS server certificate usage is \"%.*s\", expected \"%s\"",
                (int)(len > 64 ? 64 : len), (const char *)usage, DS_RATLS_USAGE_KMS_RPC);
        return -DS_E_CERT;
    }
    return 0;
}

/* The server's attestation, when its certificate carries one, must verify (§6.5). */
static int check_server_attestation(const struct util_kms_client *c, X509 *leaf, char *why,
                                    size_t why_size)
{
    struct ds_attestation *att = NULL;
    int r = ds_ratls_cert_get_attestation(leaf, &att);
    ds_attestation_free(att);
    if (r == -DS_E_NOT_FOUND) {
        log_debug("KMS server certificate carries no attestation");
        return 0;
    }
    if (!c->verifier) {
        set_err(why, why_size,
                "KMS server certificate carries an attestation but no verifier "
                "is configured");
        return -DS_E_CERT;
    }
    struct ds_attestation_verify_opts opts = {
        .verifier = c->verifier,
        .pccs_url = c->pccs_url ? c->pccs_url : UTIL_PCCS_DEFAULT_URL,
        .fetch_timeout_ms = COLLATERAL_TIMEOUT_MS,
        .now = (int64_t)time(NULL),
    };
    struct ds_attestation_result res;
    r = ds_ratls_verify_cert(leaf, &opts, &res);
    if (r < 0) {
        set_err(why, why_size, "KMS server attestation does not verify (step %s): %s",
                ds_att_step_name(res.failed_step), res.message[0] ? res.message : ds_strerror(r));
        ds_attestation_result_done(&res);
        return -DS_E_CERT;
    }
    if (res.simulated) {
        log_warnx("KMS server attestation is SIMULATED (verified against a mock root)");
    }
    log_debug("KMS server attestation verified, TCB status %s", ds_tcb_status_name(res.tcb_status));
    ds_attestation_result_done(&res);
    return 0;
}

/* SSL_CTX_set_cert_verify_callback: the usual chain check against our store, then ours. */
static int verify_server(X509_STORE_CTX *xs, void *arg)
{
    struct kms_tls *t = arg;
    if (X509_verify_cert(xs) <= 0) {
        int e = X509_STORE_CTX_get_error(xs);
        set_err(t->why, sizeof(t->why),
                "KMS server certificate does not chain to the KMS root CA: %s",
                X509_verify_cert_error_string(e));
        return 0;
    }
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    if (!leaf || check_usage(leaf, t->why, sizeof(t->why)) < 0 ||
        check_server_attestation(t->client, leaf, t->why, sizeof(t->why)) < 0) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static CURLcode on_ssl_ctx(CURL *curl, void *sslctx, void *parm)
{
    SSL_CTX *ctx = sslctx;
    struct kms_tls *t = parm;
    if (t->key && t->cert) {
        if (SSL_CTX_use_certificate(ctx, t->cert) != 1 ||
            SSL_CTX_use_PrivateKey(ctx, t->key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
            set_err(t->why, sizeof(t->why), "cannot install the client certificate");
            return CURLE_SSL_CERTPROBLEM;
        }
    }
    if (t->root) {
        X509_STORE *st = X509_STORE_new();
        if (!st || X509_STORE_add_cert(st, t->root) != 1) {
            X509_STORE_free(st);
            return CURLE_OUT_OF_MEMORY;
        }
        SSL_CTX_set_cert_store(ctx, st); /* takes ownership; drops curl's default store */
        SSL_CTX_set_cert_verify_callback(ctx, verify_server, t);
    }
    return CURLE_OK;
}

/* ---- pRPC over HTTPS ----------------------------------------------------------------------- */

/* A response body with a hard cap; overflow is remembered to report it as such. */
struct body {
    struct ds_buf buf;
    bool overflow;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct body *b = ud;
    size_t n = size * nmemb;
    if (ds_buf_append(&b->buf, ptr, n) < 0) {
        b->overflow = true;
        return 0;
    }
    return n;
}

/* The "error" of a pRPC failure body, or NULL. */
static const char *prpc_error(const json_t *j)
{
    const json_t *e = json_is_object(j) ? json_object_get(j, "error") : NULL;
    return json_is_string(e) ? json_string_value(e) : NULL;
}

/*
 * POST {base}/{method}?json with body; *out gets the JSON object of a 200 answer. The body
 * buffer is secret (answers carry keys) and wiped.
 */
static int kms_call(const struct util_kms_client *c, const char *method, const char *body,
                    struct kms_tls *tls, json_t **out, char *err, size_t err_size)
{
    char url[UTIL_KMS_URL_MAX + 64];
    char curl_err[CURL_ERROR_SIZE] = "";
    struct body resp = {.overflow = false};
    struct curl_slist *hdrs = NULL;
    json_t *j = NULL;
    long status = 0;
    int r = -ENOMEM;
    ds_buf_init(&resp.buf, UTIL_KMS_RESPONSE_MAX);
    resp.buf.secret = true;
    snprintf(url, sizeof(url), "%s/%s?json", c->base, method);
    CURL *h = curl_easy_init();
    if (!h) {
        set_err(err, err_size, "cannot initialise libcurl");
        goto out;
    }
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!hdrs) {
        goto out;
    }
    bool verify = tls->root != NULL;
    long timeout = c->timeout_ms > 0 ? c->timeout_ms : UTIL_KMS_TIMEOUT_MS;
    if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, UTIL_KMS_CONNECT_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_POST, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body)) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_USERAGENT, "dstack-util/" DS_VERSION) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAINFO, NULL) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, tls) != CURLE_OK) {
        set_err(err, err_size, "cannot configure libcurl (needs the OpenSSL backend)");
        r = -DS_E_NETWORK;
        goto out;
    }
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        if (tls->why[0]) {
            set_err(err, err_size, "%s", tls->why);
            r = -DS_E_CERT;
        } else if (resp.overflow) {
            set_err(err, err_size, "response larger than %d bytes", UTIL_KMS_RESPONSE_MAX);
            r = -DS_E_LIMIT;
        } else {
            set_err(err, err_size, "%s: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
            r = (cc == CURLE_PEER_FAILED_VERIFICATION) ? -DS_E_CERT : -DS_E_NETWORK;
        }
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    j = json_loadb((const char *)resp.buf.data, resp.buf.len, JSON_REJECT_DUPLICATES, NULL);
    if (status != 200) {
        const char *e = prpc_error(j);
        if (e) {
            set_err(err, err_size, "%s", e);
            r = -DS_E_DENIED;
        } else {
            set_err(err, err_size, "HTTP status %ld without a pRPC error", status);
            r = -DS_E_PROTOCOL;
        }
        goto out;
    }
    if (!json_is_object(j)) {
        set_err(err, err_size, "answer is not a JSON object");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    *out = j;
    j = NULL;
    r = 0;
out:
    json_decref(j);
    curl_slist_free_all(hdrs);
    if (h) {
        curl_easy_cleanup(h);
    }
    ds_buf_done(&resp.buf);
    return r;
}

/* ---- answer fields ------------------------------------------------------------------------- */

/* A string field; optional ones absent or null give NULL. */
static int get_str(const json_t *o, const char *name, bool required, char **out, char *err,
                   size_t err_size)
{
    const json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) {
        if (required) {
            set_err(err, err_size, "answer lacks \"%s\"", name);
            return -DS_E_PROTOCOL;
        }
        *out = NULL;
        return 0;
    }
    if (!json_is_string(v)) {
        set_err(err, err_size, "answer field \"%s\" is not a string", name);
        return -DS_E_PROTOCOL;
    }
    char *s = strdup(json_string_value(v));
    if (!s) {
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

/*
 * A hex bytes field of one of the accepted lengths (len_a or len_b; a missing field counts as
 * empty). *out_len gets the decoded length.
 */
static int get_hex(const json_t *o, const char *name, uint8_t *out, size_t len_a, size_t len_b,
                   size_t *out_len, char *err, size_t err_size)
{
    const json_t *v = json_object_get(o, name);
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    if (v && !json_is_string(v) && !json_is_null(v)) {
        set_err(err, err_size, "answer field \"%s\" is not a hex string", name);
        return -DS_E_PROTOCOL;
    }
    size_t sl = strlen(s);
    if (sl >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
        s += 2;
        sl -= 2;
    }
    size_t n = sl / 2;
    if (sl % 2 != 0 || (n != len_a && n != len_b)) {
        set_err(err, err_size, "answer field \"%s\" has %zu hex digits, expected %zu or %zu", name,
                sl, 2 * len_a, 2 * len_b);
        return -DS_E_PROTOCOL;
    }
    if (n > 0 && ds_hex_decode(s, sl, out, n) < 0) {
        set_err(err, err_size, "answer field \"%s\" is not hex", name);
        return -DS_E_PROTOCOL;
    }
    *out_len = n;
    return 0;
}

/* ---- GetTempCaCert ------------------------------------------------------------------------- */

void util_kms_temp_ca_done(struct util_kms_temp_ca *t)
{
    if (!t) {
        return;
    }
    free(t->temp_ca_cert);
    ds_keys_free_secret(t->temp_ca_key);
    free(t->ca_cert);
    memset(t, 0, sizeof(*t));
}

int util_kms_get_temp_ca(const struct util_kms_client *c, struct util_kms_temp_ca *out, char *err,
                         size_t err_size)
{
    struct kms_tls tls = {.client = c};
    struct util_kms_temp_ca t = {0};
    json_t *j = NULL;
    int r = kms_call(c, "GetTempCaCert", "{}", &tls, &j, err, err_size);
    if (r < 0) {
        goto out;
    }
    if ((r = get_str(j, "temp_ca_cert", true, &t.temp_ca_cert, err, err_size)) < 0 ||
        (r = get_str(j, "temp_ca_key", true, &t.temp_ca_key, err, err_size)) < 0 ||
        (r = get_str(j, "ca_cert", true, &t.ca_cert, err, err_size)) < 0) {
        goto out;
    }
    *out = t;
    memset(&t, 0, sizeof(t));
out:
    json_decref(j);
    util_kms_temp_ca_done(&t);
    return r;
}

/* ---- GetAppKey ----------------------------------------------------------------------------- */

void util_kms_app_key_done(struct util_kms_app_key *k)
{
    if (!k) {
        return;
    }
    free(k->ca_cert);
    free(k->gateway_app_id);
    free(k->os_image_hash);
    ds_wipe(k, sizeof(*k));
}

static int parse_app_key(const json_t *j, struct util_kms_app_key *k, char *err, size_t err_size)
{
    size_t n = 0;
    uint8_t hash[OS_IMAGE_HASH_MAX];
    DS_TRY(get_str(j, "ca_cert", true, &k->ca_cert, err, err_size));
    DS_TRY(get_hex(j, "disk_crypt_key", k->disk_crypt_key, DS_KEY_SIZE, DS_KEY_SIZE, &n, err,
                   err_size));
    DS_TRY(get_hex(j, "env_crypt_key", k->env_crypt_key, DS_KEY_SIZE, 0, &k->env_crypt_key_len, err,
                   err_size));
    DS_TRY(get_hex(j, "k256_key", k->k256_key, DS_KEY_SIZE, DS_KEY_SIZE, &n, err, err_size));
    DS_TRY(get_hex(j, "k256_signature", k->k256_signature, DS_K256_SIG_SIZE, 0,
                   &k->k256_signature_len, err, err_size));
    DS_TRY(get_str(j, "gateway_app_id", false, &k->gateway_app_id, err, err_size));
    if (!k->gateway_app_id || !k->gateway_app_id[0]) {
        /* Older KMSs fill only the legacy name. */
        free(k->gateway_app_id);
        k->gateway_app_id = NULL;
        DS_TRY(get_str(j, "tproxy_app_id", false, &k->gateway_app_id, err, err_size));
    }
    if (!k->gateway_app_id && !(k->gateway_app_id = strdup(""))) {
        return -ENOMEM;
    }
    /* os_image_hash: any length up to OS_IMAGE_HASH_MAX (32 in practice, may be empty). */
    const json_t *v = json_object_get(j, "os_image_hash");
    const char *s = json_is_string(v) ? json_string_value(v) : "";
    size_t sl = strlen(s);
    if (sl % 2 != 0 || sl / 2 > sizeof(hash) ||
        (sl > 0 && ds_hex_decode(s, sl, hash, sl / 2) < 0)) {
        set_err(err, err_size, "answer field \"os_image_hash\" is not hex of at most %d bytes",
                OS_IMAGE_HASH_MAX);
        return -DS_E_PROTOCOL;
    }
    if (sl > 0) {
        k->os_image_hash = malloc(sl / 2);
        if (!k->os_image_hash) {
            return -ENOMEM;
        }
        memcpy(k->os_image_hash, hash, sl / 2);
        k->os_image_hash_len = sl / 2;
    }
    return 0;
}

int util_kms_get_app_key(const struct util_kms_client *c, const char *root_ca_pem, EVP_PKEY *key,
                         X509 *cert, const char *vm_config, struct util_kms_app_key *out, char *err,
                         size_t err_size)
{
    struct kms_tls tls = {.client = c, .key = key, .cert = cert};
    struct util_kms_app_key k;
    memset(&k, 0, sizeof(k));
    json_t *j = NULL;
    char *body = NULL;
    int r = util_pem_to_cert(root_ca_pem, &tls.root);
    if (r < 0) {
        set_err(err, err_size, "the KMS root CA is not a PEM certificate");
        goto out;
    }
    json_t *req =
        json_pack("{s:i, s:s}", "api_version", 1, "vm_config", vm_config ? vm_config : "");
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (!body) {
        r = -ENOMEM;
        goto out;
    }
    r = kms_call(c, "GetAppKey", body, &tls, &j, err, err_size);
    if (r < 0) {
        goto out;
    }
    r = parse_app_key(j, &k, err, err_size);
    if (r < 0) {
        goto out;
    }
    *out = k;
    memset(&k, 0, sizeof(k));
out:
    json_decref(j);
    free(body);
    X509_free(tls.root);
    util_kms_app_key_done(&k);
    return r;
}

/* ---- the whole fetch ----------------------------------------------------------------------- */

/* SubjectPublicKeyInfo DER of a PEM certificate's key (the KMS key-provider id). */
static int cert_spki(const char *pem, uint8_t **out, size_t *out_len)
{
    X509 *x = NULL;
    DS_TRY(util_pem_to_cert(pem, &x));
    EVP_PKEY *pk = X509_get0_pubkey(x);
    int r = pk ? ds_ratls_spki_der(pk, out, out_len) : -DS_E_FORMAT;
    X509_free(x);
    return r;
}

int util_kms_fetch_app_keys(const struct util_kms_client *c, struct ds_tee *tee,
                            const char *vm_config, struct ds_appkeys *out,
                            uint8_t **out_os_image_hash, size_t *out_os_image_hash_len, char *err,
                            size_t err_size)
{
    char msg[UTIL_KMS_ERR_MAX] = "";
    struct util_kms_temp_ca tca = {0};
    struct util_kms_app_key ak;
    struct ds_appkeys keys;
    EVP_PKEY *ca_key = NULL, *key = NULL;
    X509 *ca_cert = NULL, *cert = NULL;
    uint8_t *spki_a = NULL, *spki_b = NULL;
    size_t spki_a_len = 0, spki_b_len = 0;
    memset(&ak, 0, sizeof(ak));
    memset(&keys, 0, sizeof(keys));

    int r = util_kms_get_temp_ca(c, &tca, msg, sizeof(msg));
    if (r < 0) {
        set_err(err, err_size, "GetTempCaCert: %s", msg);
        goto out;
    }
    if (util_pem_to_cert(tca.temp_ca_cert, &ca_cert) < 0 ||
        util_pem_to_key(tca.temp_ca_key, &ca_key) < 0 ||
        X509_check_private_key(ca_cert, ca_key) != 1) {
        ERR_clear_error();
        set_err(err, err_size, "GetTempCaCert: the temp CA certificate and key are unusable");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    struct util_mint_req mint = {
        .subject = UTIL_TEMP_CERT_SUBJECT,
        .config = vm_config,
        .issuer_key = ca_key,
        .issuer_cert = ca_cert,
    };
    r = util_ratls_mint(tee, &mint, &key, &cert, msg, sizeof(msg));
    if (r < 0) {
        set_err(err, err_size, "RA-TLS certificate: %s", msg);
        goto out;
    }
    r = util_kms_get_app_key(c, tca.ca_cert, key, cert, vm_config, &ak, msg, sizeof(msg));
    if (r < 0) {
        set_err(err, err_size, "GetAppKey: %s", msg);
        goto out;
    }
    /* The root the TLS layer trusted and the one GetAppKey reports must be the same key. */
    if (cert_spki(tca.ca_cert, &spki_a, &spki_a_len) < 0 ||
        cert_spki(ak.ca_cert, &spki_b, &spki_b_len) < 0 || spki_a_len != spki_b_len ||
        memcmp(spki_a, spki_b, spki_a_len) != 0) {
        set_err(err, err_size, "GetAppKey: the returned root CA differs from GetTempCaCert's");
        r = -DS_E_MISMATCH;
        goto out;
    }

    memcpy(keys.disk_crypt_key, ak.disk_crypt_key, DS_KEY_SIZE);
    keys.disk_crypt_key_len = DS_KEY_SIZE;
    memcpy(keys.env_crypt_key, ak.env_crypt_key, ak.env_crypt_key_len);
    keys.env_crypt_key_len = ak.env_crypt_key_len;
    memcpy(keys.k256_key, ak.k256_key, DS_KEY_SIZE);
    memcpy(keys.k256_signature, ak.k256_signature, ak.k256_signature_len);
    keys.k256_signature_len = ak.k256_signature_len;
    keys.provider = DS_KEY_PROVIDER_KMS;
    keys.pubkey = spki_a;
    keys.pubkey_len = spki_a_len;
    spki_a = NULL;
    keys.gateway_app_id = strdup(ak.gateway_app_id);
    keys.ca_cert = strdup(tca.ca_cert);
    keys.url = strdup(c->base);
    keys.tmp_ca_key = secret_strdup(tca.temp_ca_key);
    keys.tmp_ca_cert = strdup(tca.temp_ca_cert);
    if (!keys.gateway_app_id || !keys.ca_cert || !keys.url || !keys.tmp_ca_key ||
        !keys.tmp_ca_cert) {
        set_err(err, err_size, "out of memory");
        r = -ENOMEM;
        goto out;
    }
    if (out_os_image_hash) {
        *out_os_image_hash = ak.os_image_hash;
        *out_os_image_hash_len = ak.os_image_hash_len;
        ak.os_image_hash = NULL;
    }
    *out = keys;
    memset(&keys, 0, sizeof(keys));
    r = 0;
out:
    ds_appkeys_done(&keys);
    util_kms_app_key_done(&ak);
    util_kms_temp_ca_done(&tca);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    X509_free(ca_cert);
    X509_free(cert);
    free(spki_a);
    free(spki_b);
    return r;
}

/* ---- the server attestation's verifier ----------------------------------------------------- */

/* pccs_url without trailing '/' or /sgx|tdx/certification/v4, then the mock root's path. */
static void sim_root_url(const char *pccs_url, char *out, size_t out_size)
{
    char base[UTIL_KMS_URL_MAX];
    snprintf(base, sizeof(base), "%s", pccs_url);
    size_t n = strlen(base);
    while (n > 0 && base[n - 1] == '/') {
        base[--n] = '\0';
    }
    static const char *const suffixes[] = {"/sgx/certification/v4", "/tdx/certification/v4"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(suffixes); i++) {
        size_t sl = strlen(suffixes[i]);
        if (n >= sl && strcmp(base + n - sl, suffixes[i]) == 0) {
            base[n - sl] = '\0';
            n -= sl;
        }
    }
    snprintf(out, out_size, "%s%s", base, SIM_ROOT_CA_PATH);
}

int util_make_verifier(const char *pccs_url, bool allow_simulated, struct ds_verifier **out,
                       char *err, size_t err_size)
{
    if (!allow_simulated) {
        int r = ds_verifier_new(NULL, 0, out);
        if (r < 0) {
            set_err(err, err_size, "cannot create the verifier: %s", ds_strerror(r));
        }
        return r;
    }
    if (!pccs_url) {
        set_err(err, err_size,
                "--insecure-allow-simulated needs --pccs-url (the simulator's "
                "collateral service serves the mock root)");
        return -EINVAL;
    }
    char url[UTIL_KMS_URL_MAX + 64];
    char curl_err[CURL_ERROR_SIZE] = "";
    struct body der = {.overflow = false};
    long status = 0;
    int r = -DS_E_NETWORK;
    ds_buf_init(&der.buf, ROOT_CA_DER_MAX);
    sim_root_url(pccs_url, url, sizeof(url));
    CURL *h = curl_easy_init();
    if (!h) {
        r = -ENOMEM;
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, COLLATERAL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &der);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        set_err(err, err_size, "fetching the mock root CA from %s: %s", url,
                curl_err[0] ? curl_err : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200 || der.buf.len == 0) {
        set_err(err, err_size, "fetching the mock root CA from %s: HTTP status %ld", url, status);
        goto out;
    }
    r = ds_verifier_new(der.buf.data, der.buf.len, out);
    if (r < 0) {
        set_err(err, err_size, "mock root CA from %s: %s", url, ds_strerror(r));
        goto out;
    }
    uint8_t fp[DS_SHA256_LEN];
    char fp_hex[2 * DS_SHA256_LEN + 1];
    ds_sha256(der.buf.data, der.buf.len, fp);
    ds_hex_encode(fp, sizeof(fp), fp_hex);
    log_warnx("WARNING: --insecure-allow-simulated: trusting the MOCK root CA sha256:%s from %s; "
              "simulated attestations prove nothing about hardware",
              fp_hex, url);
out:
    if (h) {
        curl_easy_cleanup(h);
    }
    ds_buf_done(&der.buf);
    return r;
}
