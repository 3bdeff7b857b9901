/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-bench kms`: how many app-key releases (GetAppKey, spec kms-ratls.md §2.3) a KMS
 * serves per second, measured as a guest does it: GetTempCaCert once, one RA-TLS client
 * certificate ("RA-TLS TEMP Cert" signed by the temp CA, quote from --tee), then GetAppKey
 * over mutual TLS from --concurrency threads, each with its own libcurl handle. Modes:
 *   full       a new TCP connection and a full TLS handshake per release (no session cache):
 *              the KMS verifies the client certificate chain and its attestation every time;
 *   resumed    a new TCP connection per release with TLS session resumption (the KMS still
 *              verifies the attestation per request; its collateral cache is warm);
 *   keepalive  one persistent connection per thread (reference: no handshake at all).
 * The client checks the server chain against the KMS root CA and the host name, not the
 * server attestation (that is a per-boot cost of the guest, not of the KMS). Prints one JSON
 * line per mode: releases per second, p50/p99 latency, errors and the fraction of handshakes
 * that were actually resumed.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>

#include "bench.h"
#include "dstack/ratls.h"
#include "dstack/tee.h"

#define KMS_BENCH_DEFAULT_SECONDS 5.0
#define KMS_BENCH_MAX_THREADS     64
#define KMS_BENCH_URL_MAX         2048
#define KMS_BENCH_RESPONSE_MAX    (256u * 1024u)
#define KMS_BENCH_VM_CONFIG_MAX   (64 * 1024)
#define KMS_BENCH_ERR_MAX         256
#define KMS_BENCH_TIMEOUT_MS      30000L
#define KMS_BENCH_CERT_SUBJECT    "RA-TLS TEMP Cert"

enum kms_mode { MODE_FULL, MODE_RESUMED, MODE_KEEPALIVE, MODE_MAX };
static const char *const mode_names[MODE_MAX] = {"full", "resumed", "keepalive"};

/* Shared, read-only during a run. */
struct kms_bench {
    char base[KMS_BENCH_URL_MAX]; /* https://host:port/prpc */
    char *body;                   /* GetAppKey request JSON */
    EVP_PKEY *key;                /* client identity */
    X509 *cert;
    X509 *root; /* KMS root CA: the only anchor for the server */
};

struct kms_worker {
    pthread_t thread;
    const struct kms_bench *b;
    enum kms_mode mode;
    uint64_t deadline_ns;
    struct bench_samples samples;
    size_t errors;
    atomic_size_t handshakes;
    atomic_size_t resumed;
    char first_error[KMS_BENCH_ERR_MAX];
};

/* ---- HTTP plumbing -------------------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct ds_buf *b = ud;
    size_t n = size * nmemb;
    return ds_buf_append(b, p, n) < 0 ? 0 : n;
}

static void on_info(const SSL *ssl, int where, int ret)
{
    if (!(where & SSL_CB_HANDSHAKE_DONE)) {
        return;
    }
    struct kms_worker *w = SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl));
    if (w) {
        atomic_fetch_add(&w->handshakes, 1);
        if (SSL_session_reused((SSL *)ssl)) {
            atomic_fetch_add(&w->resumed, 1);
        }
    }
}

/* Client identity, a store holding only the KMS root, a handshake counter. */
static CURLcode on_ssl_ctx(CURL *curl, void *sslctx, void *parm)
{
    SSL_CTX *ctx = sslctx;
    struct kms_worker *w = parm;
    const struct kms_bench *b = w->b;
    if (b->key &&
        (SSL_CTX_use_certificate(ctx, b->cert) != 1 || SSL_CTX_use_PrivateKey(ctx, b->key) != 1)) {
        return CURLE_SSL_CERTPROBLEM;
    }
    if (b->root) {
        X509_STORE *st = X509_STORE_new();
        if (!st || X509_STORE_add_cert(st, b->root) != 1) {
            X509_STORE_free(st);
            return CURLE_OUT_OF_MEMORY;
        }
        SSL_CTX_set_cert_store(ctx, st);
    }
    SSL_CTX_set_app_data(ctx, w);
    SSL_CTX_set_info_callback(ctx, on_info);
    return CURLE_OK;
}

/*
 * One pRPC JSON call. verify: check the server against b->root and the host name. *out (may
 * be NULL) gets the parsed 200 answer. err gets the pRPC or transport error.
 */
static int call(CURL *h, const struct kms_bench *b, const char *method, const char *body,
                json_t **out, char *err, size_t err_size)
{
    char url[KMS_BENCH_URL_MAX + 64], curl_err[CURL_ERROR_SIZE] = "";
    struct ds_buf resp;
    long status = 0;
    int r = -DS_E_NETWORK;
    ds_buf_init(&resp, KMS_BENCH_RESPONSE_MAX);
    resp.secret = true;
    snprintf(url, sizeof(url), "%s/%s?json", b->base, method);
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "%s", curl_err[0] ? curl_err : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = json_loadb((const char *)resp.data, resp.len, 0, NULL);
    if (status != 200 || !json_is_object(j)) {
        const json_t *e = json_is_object(j) ? json_object_get(j, "error") : NULL;
        snprintf(err, err_size, "%s: %s", method,
                 json_is_string(e) ? json_string_value(e) : "bad answer");
        json_decref(j);
        r = -DS_E_DENIED;
        goto out;
    }
    if (out) {
        *out = j;
    } else {
        json_decref(j);
    }
    r = 0;
out:
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
    ds_buf_done(&resp);
    return r;
}

static CURL *new_handle(struct kms_worker *w, bool verify, struct curl_slist *hdrs)
{
    CURL *h = curl_easy_init();
    if (!h) {
        return NULL;
    }
    bool fresh = w->mode != MODE_KEEPALIVE;
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, KMS_BENCH_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_CAINFO, NULL);
    curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
    curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, w);
    curl_easy_setopt(h, CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_FORBID_REUSE, fresh ? 1L : 0L);
    curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, w->mode == MODE_FULL ? 0L : 1L);
    return h;
}

static void *worker_main(void *arg)
{
    struct kms_worker *w = arg;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *h = hdrs ? new_handle(w, true, hdrs) : NULL;
    char err[KMS_BENCH_ERR_MAX];
    if (!h) {
        snprintf(w->first_error, sizeof(w->first_error), "cannot initialise libcurl");
        w->errors++;
        goto out;
    }
    for (uint64_t t = bench_now_ns(); t < w->deadline_ns;) {
        int r = call(h, w->b, "GetAppKey", w->b->body, NULL, err, sizeof(err));
        uint64_t t1 = bench_now_ns();
        if (r < 0) {
            if (w->errors++ == 0) {
                snprintf(w->first_error, sizeof(w->first_error), "%s", err);
            }
            if (w->errors > 1000 && w->samples.count == 0) {
                break; /* nothing works: stop hammering */
            }
        } else if (bench_samples_add(&w->samples, t1 - t) < 0) {
            break;
        }
        t = t1;
    }
out:
    if (h) {
        curl_easy_cleanup(h);
    }
    curl_slist_free_all(hdrs);
    return NULL;
}

/* ---- set-up: temp CA, client certificate ---------------------------------------------------- */

static int pem_cert(const char *pem, X509 **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    *out = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return *out ? 0 : -DS_E_FORMAT;
}

static int pem_key(const char *pem, EVP_PKEY **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    *out = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    return *out ? 0 : -DS_E_FORMAT;
}

/* The guest's RA-TLS temp certificate: quote bound to the key, signed by the temp CA. */
static int mint(struct ds_tee *tee, EVP_PKEY *ca_key, X509 *ca, const char *config,
                EVP_PKEY **out_key, X509 **out_cert)
{
    EVP_PKEY *key = NULL;
    uint8_t rd[DS_REPORT_DATA_SIZE], *quote = NULL, *att = NULL;
    size_t quote_len = 0, att_len = 0;
    char *log_json = NULL;
    struct ds_event_log *log = NULL;
    int r = ds_ratls_key_generate(&key);
    if (r == 0) {
        r = ds_ratls_report_data(key, rd);
    }
    if (r == 0) {
        r = ds_tee_get_event_log(tee, &log_json);
    }
    if (r == 0) {
        r = ds_eventlog_parse_json(log_json, strlen(log_json), &log);
    }
    if (r == 0) {
        r = ds_tee_get_quote(tee, rd, &quote, &quote_len);
    }
    if (r == 0) {
        r = ds_ratls_attestation_for_key(key, quote, quote_len, log, NULL, config, &att, &att_len);
    }
    if (r == 0) {
        struct ds_ratls_cert_req req = {
            .subject = KMS_BENCH_CERT_SUBJECT,
            .now = (int64_t)time(NULL),
            .attestation = att,
            .attestation_len = att_len,
        };
        r = ds_ratls_cert_build(&req, key, ca_key, ca, out_cert);
    }
    if (r == 0) {
        *out_key = key;
        key = NULL;
    }
    EVP_PKEY_free(key);
    free(quote);
    free(att);
    free(log_json);
    ds_eventlog_free(log);
    return r;
}

static int setup(struct kms_bench *b, const char *tee_spec, const char *config)
{
    struct kms_worker w = {.b = b, .mode = MODE_KEEPALIVE};
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    CURL *h = hdrs ? new_handle(&w, false, hdrs) : NULL;
    struct ds_tee *tee = NULL;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    json_t *j = NULL;
    char err[KMS_BENCH_ERR_MAX];
    int r = -ENOMEM;
    if (!h) {
        goto out;
    }
    r = call(h, b, "GetTempCaCert", "{}", &j, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "dstack-bench kms: GetTempCaCert: %s\n", err);
        goto out;
    }
    const char *tc = json_string_value(json_object_get(j, "temp_ca_cert"));
    const char *tk = json_string_value(json_object_get(j, "temp_ca_key"));
    const char *rc = json_string_value(json_object_get(j, "ca_cert"));
    if (!tc || !tk || !rc || pem_cert(tc, &ca) < 0 || pem_key(tk, &ca_key) < 0 ||
        pem_cert(rc, &b->root) < 0) {
        fprintf(stderr, "dstack-bench kms: GetTempCaCert: unusable answer\n");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    r = ds_tee_open(tee_spec, &tee, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "dstack-bench kms: TEE: %s\n", err);
        goto out;
    }
    r = mint(tee, ca_key, ca, config, &b->key, &b->cert);
    if (r < 0) {
        fprintf(stderr, "dstack-bench kms: RA-TLS certificate: %s\n", ds_strerror(r));
    }
out:
    ERR_clear_error();
    json_decref(j);
    ds_tee_close(tee);
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    if (h) {
        curl_easy_cleanup(h);
    }
    curl_slist_free_all(hdrs);
    return r;
}

/* ---- runs ------------------------------------------------------------------------------------ */

static int run_mode(const struct kms_bench *b, enum kms_mode mode, int threads, double seconds)
{
    struct kms_worker *ws = calloc((size_t)threads, sizeof(*ws));
    if (!ws) {
        return BENCH_EXIT_FAIL;
    }
    uint64_t start = bench_now_ns(), deadline = start + (uint64_t)(seconds * 1e9);
    int started = 0;
    for (; started < threads; started++) {
        ws[started].b = b;
        ws[started].mode = mode;
        ws[started].deadline_ns = deadline;
        if (pthread_create(&ws[started].thread, NULL, worker_main, &ws[started]) != 0) {
            break;
        }
    }
    struct bench_samples all = {0};
    size_t errors = 0, handshakes = 0, resumed = 0;
    const char *first_error = NULL;
    for (int i = 0; i < started; i++) {
        pthread_join(ws[i].thread, NULL);
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    for (int i = 0; i < started; i++) {
        (void)bench_samples_merge(&all, &ws[i].samples); /* at the limit: keep what fits */
        errors += ws[i].errors;
        handshakes += atomic_load(&ws[i].handshakes);
        resumed += atomic_load(&ws[i].resumed);
        if (!first_error && ws[i].first_error[0]) {
            first_error = ws[i].first_error;
        }
    }
    struct bench_stats st;
    bench_stats_compute(&all, elapsed, &st);
    json_t *line =
        json_pack("{s:s, s:s, s:i, s:f, s:I, s:I, s:f, s:f, s:f, s:I, s:I}", "bench", "kms", "mode",
                  mode_names[mode], "concurrency", started, "seconds", elapsed, "releases",
                  (json_int_t)st.count, "errors", (json_int_t)errors, "releases_per_second",
                  st.ops_per_sec, "p50_us", st.p50_us, "p99_us", st.p99_us, "tls_handshakes",
                  (json_int_t)handshakes, "tls_resumed", (json_int_t)resumed);
    if (line && first_error) {
        json_object_set_new(line, "first_error", json_string(first_error));
    }
    char *text = line ? json_dumps(line, JSON_COMPACT | JSON_REAL_PRECISION(6)) : NULL;
    if (text) {
        printf("%s\n", text);
        fflush(stdout);
    }
    free(text);
    json_decref(line);
    int status = (all.count == 0 || started < threads) ? BENCH_EXIT_FAIL : BENCH_EXIT_OK;
    for (int i = 0; i < threads; i++) {
        bench_samples_done(&ws[i].samples);
    }
    bench_samples_done(&all);
    free(ws);
    return status;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-bench kms --kms-url URL [--tee SPEC] [--vm-config FILE]\n"
            "                        [--seconds N] [--concurrency N] [--modes LIST]\n"
            "  --kms-url URL      the KMS (https://host:port, \"/prpc\" is added)\n"
            "  --tee SPEC         TEE for the client certificate's quote (sim:<socket>, ...);\n"
            "                     its runtime events must name an app the KMS allows\n"
            "  --vm-config FILE   vm_config JSON sent with GetAppKey\n"
            "  --seconds N        duration per mode (default %.0f)\n"
            "  --concurrency N    client threads (default 2)\n"
            "  --modes LIST       comma-separated of full,resumed,keepalive (default all)\n",
            KMS_BENCH_DEFAULT_SECONDS);
}

static int parse_modes(const char *s, bool want[MODE_MAX])
{
    memset(want, 0, MODE_MAX * sizeof(bool));
    while (*s) {
        size_t n = strcspn(s, ",");
        int found = -1;
        for (int m = 0; m < MODE_MAX; m++) {
            if (strlen(mode_names[m]) == n && strncmp(s, mode_names[m], n) == 0) {
                found = m;
            }
        }
        if (found < 0) {
            return -EINVAL;
        }
        want[found] = true;
        s += n + (s[n] == ',');
    }
    return 0;
}

int bench_kms_main(int argc, char **argv)
{
    const char *url = NULL, *tee_spec = NULL, *vm_config_path = NULL;
    double seconds = KMS_BENCH_DEFAULT_SECONDS;
    long threads = 2;
    bool want[MODE_MAX] = {true, true, true};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return BENCH_EXIT_OK;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "dstack-bench kms: %s needs a value\n", a);
            return BENCH_EXIT_USAGE;
        }
        const char *v = argv[++i];
        char *end = NULL;
        if (strcmp(a, "--kms-url") == 0) {
            url = v;
        } else if (strcmp(a, "--tee") == 0) {
            tee_spec = v;
        } else if (strcmp(a, "--vm-config") == 0) {
            vm_config_path = v;
        } else if (strcmp(a, "--seconds") == 0) {
            if (bench_parse_seconds(v, &seconds) < 0) {
                fprintf(stderr, "dstack-bench kms: bad --seconds '%s'\n", v);
                return BENCH_EXIT_USAGE;
            }
        } else if (strcmp(a, "--concurrency") == 0) {
            threads = strtol(v, &end, 10);
            if (*end || threads < 1 || threads > KMS_BENCH_MAX_THREADS) {
                fprintf(stderr, "dstack-bench kms: bad --concurrency '%s' (1..%d)\n", v,
                        KMS_BENCH_MAX_THREADS);
                return BENCH_EXIT_USAGE;
            }
        } else if (strcmp(a, "--modes") == 0) {
            if (parse_modes(v, want) < 0) {
                fprintf(stderr, "dstack-bench kms: bad --modes '%s'\n", v);
                return BENCH_EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "dstack-bench kms: unknown option '%s'\n", a);
            usage(stderr);
            return BENCH_EXIT_USAGE;
        }
    }
    if (!url || strncmp(url, "https://", 8) != 0) {
        fprintf(stderr, "dstack-bench kms: --kms-url https://... is required\n");
        return BENCH_EXIT_USAGE;
    }
    struct kms_bench b;
    memset(&b, 0, sizeof(b));
    size_t n = strlen(url);
    while (n > 8 && url[n - 1] == '/') {
        n--;
    }
    bool has_prpc = n >= 5 && strncmp(url + n - 5, "/prpc", 5) == 0;
    if (n + 6 >= sizeof(b.base)) {
        fprintf(stderr, "dstack-bench kms: --kms-url too long\n");
        return BENCH_EXIT_USAGE;
    }
    snprintf(b.base, sizeof(b.base), "%.*s%s", (int)n, url, has_prpc ? "" : "/prpc");
    uint8_t *cfg = NULL;
    size_t cfg_len = 0;
    if (vm_config_path) {
        int r = ds_read_file(vm_config_path, KMS_BENCH_VM_CONFIG_MAX, &cfg, &cfg_len);
        if (r < 0) {
            fprintf(stderr, "dstack-bench kms: --vm-config '%s': %s\n", vm_config_path,
                    ds_strerror(r));
            return BENCH_EXIT_USAGE;
        }
    }
    int status = BENCH_EXIT_FAIL;
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        free(cfg);
        return BENCH_EXIT_FAIL;
    }
    json_t *req =
        json_pack("{s:i, s:s}", "api_version", 1, "vm_config", cfg ? (const char *)cfg : "");
    b.body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    if (b.body && setup(&b, tee_spec, (const char *)cfg) == 0) {
        status = BENCH_EXIT_OK;
        for (int m = 0; m < MODE_MAX; m++) {
            if (want[m] && run_mode(&b, (enum kms_mode)m, (int)threads, seconds) != 0) {
                status = BENCH_EXIT_FAIL;
            }
        }
    }
    free(b.body);
    free(cfg);
    EVP_PKEY_free(b.key);
    X509_free(b.cert);
    X509_free(b.root);
    curl_global_cleanup();
    return status;
}
