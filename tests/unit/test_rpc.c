/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/rpc: the HTTP request parser and the query-string decoder directly, and
 * the whole server over real sockets (Unix, TCP, TLS with a client certificate) with libcurl
 * and raw sockets as clients: JSON and query input, route forms, every documented error, size
 * limits, slow and half-closing clients, deferred handlers, keep-alive and pipelining.
 * The server runs on its own event loop thread; clients run on the test thread.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "dstack/rpc.h"
#include "rpc/http.h"

/* ---- the test server --------------------------------------------------------------------- */

struct fixture {
    char dir[64];
    char sock[128];
    char sock2[128];
    char client_cert[128];
    char client_key[128];
    uint16_t tcp_port;
    uint16_t tls_port;
    uint16_t small_port; /* a server with connections_max = 2 */
    struct event_base *base;
    struct ds_rpc_server *srv;
    struct ds_rpc_server *small;
    SSL_CTX *tls;
    pthread_t thread;
    int deferred_done; /* deferred replies delivered (loop thread only) */
};

static struct fixture fx;

static void deferred_cb(evutil_socket_t fd, short what, void *arg)
{
    struct ds_rpc_call *call = arg;
    bool orphaned = ds_rpc_call_orphaned(call);
    fx.deferred_done++;
    ds_rpc_call_reply_json(call, json_pack("{s:b,s:b}", "deferred", 1, "orphaned", orphaned));
}

static int m_echo(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    *out = json_pack("{s:s,s:O,s:b}", "method", ds_rpc_call_method(call), "params", params, "query",
                     ds_rpc_call_from_query(call));
    return 0;
}

static int m_fail(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return ds_rpc_call_error(call, "Unsupported algorithm");
}

static int m_errno(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return -DS_E_NOT_FOUND;
}

static int m_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    *out = json_pack("{s:b,s:i}", "ok", 1, "nparams", (int)json_object_size(params));
    return 0;
}

static int m_null(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    *out = NULL;
    return 0;
}

static int m_unicode(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    *out = json_pack("{s:s}", "s", "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80");
    return 0;
}

static int m_defer(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    const json_t *ms = json_object_get(params, "ms");
    long delay = ms && json_is_string(ms) ? atol(json_string_value(ms)) : 200;
    struct timeval tv = {.tv_sec = delay / 1000, .tv_usec = (delay % 1000) * 1000};
    if (event_base_once(fx.base, -1, EV_TIMEOUT, deferred_cb, call, &tv) < 0) {
        return -ENOMEM;
    }
    return DS_RPC_DEFERRED;
}

static int m_peer(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    const struct ds_rpc_peer *p = ds_rpc_call_peer(call);
    char cn[128] = "none";
    X509 *cert = ds_rpc_call_peer_cert(call);
    if (cert) {
        X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof(cn));
    }
    *out = json_pack("{s:i,s:b,s:b,s:i,s:i,s:s,s:s}", "transport", (int)p->transport, "tls", p->tls,
                     "has_cred", p->has_cred, "uid", (int)p->uid, "pid", (int)p->pid, "name",
                     p->name, "cn", cn);
    return 0;
}

static int m_header(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    const char *v = ds_rpc_call_header(call, "x-test");
    if (ds_rpc_call_add_header(call, "X-Reply", "yes") != 0) {
        return -EINVAL;
    }
    if (ds_rpc_call_add_header(call, "Bad\r\nName", "x") != -EINVAL ||
        ds_rpc_call_add_header(call, "X-Evil", "a\r\nSet-Cookie: x") != -EINVAL) {
        return ds_rpc_call_error(call, "header injection was accepted");
    }
    size_t blen;
    const uint8_t *body = ds_rpc_call_body(call, &blen);
    *out = json_pack("{s:s,s:s,s:s,s:i,s:s}", "x_test", v ? v : "", "http",
                     ds_rpc_call_http_method(call), "path", ds_rpc_call_path(call), "body_len",
                     (int)blen, "body", (const char *)body);
    return 0;
}

struct typed_req {
    char *path;
    struct ds_rpc_bytes data;
    bool flag;
    uint32_t n32;
    uint64_t n64;
    struct ds_rpc_opt_u64 not_before;
    struct ds_rpc_strings alt_names;
    struct ds_rpc_bytes_list sigs;
};

static const struct ds_rpc_field typed_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct typed_req, path, 16),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct typed_req, data, 64),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct typed_req, flag, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct typed_req, n32, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U64, struct typed_req, n64, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct typed_req, not_before, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct typed_req, alt_names, 3),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES_LIST, struct typed_req, sigs, 0),
};

static json_t *typed_json(const struct typed_req *t)
{
    char *hex = ds_hex_strdup(t->data.data, t->data.len);
    json_t *names = json_array();
    for (size_t i = 0; i < t->alt_names.count; i++) {
        json_array_append_new(names, json_string(t->alt_names.items[i]));
    }
    json_t *sigs = json_array();
    for (size_t i = 0; i < t->sigs.count; i++) {
        char *h = ds_hex_strdup(t->sigs.items[i].data, t->sigs.items[i].len);
        json_array_append_new(sigs, json_string(h));
        free(h);
    }
    json_t *j = json_pack(
        "{s:s,s:s,s:b,s:I,s:I,s:o,s:o,s:o}", "path", t->path, "data", hex, "flag", t->flag, "n32",
        (json_int_t)t->n32, "n64", (json_int_t)t->n64, "not_before",
        t->not_before.present ? json_integer((json_int_t)t->not_before.value) : json_null(),
        "alt_names", names, "sigs", sigs);
    free(hex);
    return j;
}

static int m_typed(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct typed_req t;
    int r = ds_rpc_call_decode(call, params, typed_fields, DS_ARRAY_SIZE(typed_fields), &t);
    if (r < 0) {
        return r;
    }
    *out = typed_json(&t);
    ds_rpc_params_free(typed_fields, DS_ARRAY_SIZE(typed_fields), &t);
    return 0;
}

static const struct ds_rpc_method test_methods[] = {
    {"Typed", m_typed, 0, 0},
    {"Echo", m_echo, 0, 0},
    {"Fail", m_fail, 0, 0},
    {"Errno", m_errno, 0, 0},
    {"Info", m_info, DS_RPC_NO_PARAMS, 0},
    {"Null", m_null, 0, 0},
    {"Unicode", m_unicode, 0, 0},
    {"Defer", m_defer, 0, 0},
    {"Peer", m_peer, 0, 0},
    {"Header", m_header, 0, 0},
    {"Small", m_echo, 0, 32},
};
static const struct ds_rpc_service test_service = {"Test", test_methods,
                                                   DS_ARRAY_SIZE(test_methods)};

static int r_root(struct ds_rpc_call *call, void *ctx)
{
    static const char html[] = "<html><body>dashboard</body></html>";
    ds_rpc_call_reply_raw(call, 200, "text/html; charset=utf-8", html, sizeof(html) - 1);
    return 0;
}

static int r_logs(struct ds_rpc_call *call, void *ctx)
{
    char text[256];
    int n = snprintf(text, sizeof(text), "logs of %s?%s\n", ds_rpc_call_path(call) + 6,
                     ds_rpc_call_query(call));
    ds_rpc_call_reply_raw(call, 200, "text/plain", text, (size_t)n);
    return 0;
}

static int r_noreply(struct ds_rpc_call *call, void *ctx)
{
    return 0;
}

static int site_filter(struct ds_rpc_call *call, void *ctx)
{
    const char *tok = ds_rpc_call_header(call, "Authorization");
    if (strcmp(ds_rpc_call_path(call), "/secret") == 0 &&
        (!tok || strcmp(tok, "Bearer good") != 0)) {
        static const char msg[] = "{\"error\":\"unauthorized\"}";
        ds_rpc_call_reply_raw(call, 401, "application/json", msg, sizeof(msg) - 1);
        return 1;
    }
    return 0;
}

/* dstack.sock style: methods at /<Method>, plus the tappd style /prpc/Test.<Method>. */
static const struct ds_rpc_mount unix_mounts[] = {
    {"/", {NULL}, &test_service},
    {"/prpc/", {"Test."}, &test_service},
};
static const struct ds_rpc_site unix_site = {
    unix_mounts, DS_ARRAY_SIZE(unix_mounts), NULL, 0, NULL, NULL, NULL};

static const struct ds_rpc_mount tcp_mounts[] = {
    {"/prpc/", {"Test.", "Legacy."}, &test_service},
};
static const struct ds_rpc_route tcp_routes[] = {
    {"/", DS_RPC_HTTP_GET, r_root},
    {"/logs/", DS_RPC_HTTP_GET, r_logs},
    {"/noreply", DS_RPC_HTTP_GET | DS_RPC_HTTP_POST, r_noreply},
    {"/secret", DS_RPC_HTTP_GET, r_root},
};
static const char *const tcp_headers[] = {"X-App-Version: v0.1.0 (test)", NULL};
static const struct ds_rpc_site tcp_site = {tcp_mounts,  DS_ARRAY_SIZE(tcp_mounts),
                                            tcp_routes,  DS_ARRAY_SIZE(tcp_routes),
                                            tcp_headers, site_filter,
                                            NULL};

#define TEST_HEADER_TIMEOUT_MS 1500
#define TEST_BODY_MAX          (256 * 1024)

/* A self-signed certificate with the given CN (P-256). */
static void make_cert(const char *cn, EVP_PKEY **out_key, X509 **out_cert)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    assert_non_null(key);
    X509 *x = X509_new();
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    *out_key = key;
    *out_cert = x;
}

static int accept_any_cert(int ok, X509_STORE_CTX *ctx)
{
    return 1; /* RA-TLS style: the handler judges the certificate */
}

static void *loop_thread(void *arg)
{
    event_base_loop(fx.base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

static int group_setup(void **state)
{
    signal(SIGPIPE, SIG_IGN);
    assert_int_equal(evthread_use_pthreads(), 0);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/ds-rpc-test-XXXXXX");
    assert_non_null(mkdtemp(fx.dir));
    snprintf(fx.sock, sizeof(fx.sock), "%s/dstack.sock", fx.dir);
    snprintf(fx.sock2, sizeof(fx.sock2), "%s/private.sock", fx.dir);
    snprintf(fx.client_cert, sizeof(fx.client_cert), "%s/client.pem", fx.dir);
    snprintf(fx.client_key, sizeof(fx.client_key), "%s/client.key", fx.dir);

    /* A stale socket file from a previous run must be replaced. */
    int stale = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(fx.sock) < sizeof(sun.sun_path));
    memcpy(sun.sun_path, fx.sock, strlen(fx.sock) + 1);
    assert_int_equal(bind(stale, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(stale);

    fx.base = event_base_new();
    assert_non_null(fx.base);
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    lim.header_timeout_ms = TEST_HEADER_TIMEOUT_MS;
    lim.body_timeout_ms = TEST_HEADER_TIMEOUT_MS;
    lim.idle_timeout_ms = 3000;
    lim.body_size_max = TEST_BODY_MAX;
    assert_int_equal(ds_rpc_server_new(fx.base, &lim, &fx.srv), 0);
    assert_int_equal(ds_rpc_server_listen_unix(fx.srv, fx.sock, 0777, &unix_site), 0);
    assert_int_equal(ds_rpc_server_listen_unix(fx.srv, fx.sock2, 0600, &unix_site), 0);
    assert_int_equal(
        ds_rpc_server_listen_tcp(fx.srv, "127.0.0.1", 0, &tcp_site, NULL, &fx.tcp_port), 0);
    assert_true(fx.tcp_port > 0);

    EVP_PKEY *skey, *ckey;
    X509 *scert, *ccert;
    make_cert("test-server", &skey, &scert);
    make_cert("test-client", &ckey, &ccert);
    fx.tls = SSL_CTX_new(TLS_server_method());
    assert_non_null(fx.tls);
    assert_int_equal(SSL_CTX_use_certificate(fx.tls, scert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(fx.tls, skey), 1);
    SSL_CTX_set_verify(fx.tls, SSL_VERIFY_PEER, accept_any_cert);
    assert_int_equal(
        ds_rpc_server_listen_tcp(fx.srv, "127.0.0.1", 0, &tcp_site, fx.tls, &fx.tls_port), 0);
    FILE *f = fopen(fx.client_cert, "w");
    assert_non_null(f);
    PEM_write_X509(f, ccert);
    fclose(f);
    f = fopen(fx.client_key, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, ckey, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    EVP_PKEY_free(skey);
    EVP_PKEY_free(ckey);
    X509_free(scert);
    X509_free(ccert);

    struct ds_rpc_limits small;
    ds_rpc_limits_default(&small);
    small.connections_max = 2;
    assert_int_equal(ds_rpc_server_new(fx.base, &small, &fx.small), 0);
    assert_int_equal(
        ds_rpc_server_listen_tcp(fx.small, "127.0.0.1", 0, &tcp_site, NULL, &fx.small_port), 0);
    assert_int_equal(pthread_create(&fx.thread, NULL, loop_thread, NULL), 0);
    return 0;
}

static int group_teardown(void **state)
{
    event_base_loopexit(fx.base, NULL);
    pthread_join(fx.thread, NULL);
    ds_rpc_server_free(fx.srv);
    ds_rpc_server_free(fx.small);
    struct stat st;
    assert_int_equal(stat(fx.sock, &st), -1); /* removed on free */
    SSL_CTX_free(fx.tls);
    event_base_free(fx.base);
    unlink(fx.client_cert);
    unlink(fx.client_key);
    rmdir(fx.dir);
    curl_global_cleanup();
    return 0;
}

/* ---- clients -------------------------------------------------------------------------------- */

struct resp {
    long status;
    char body[1 << 16];
    size_t len;
    char headers[8192];
    size_t hlen;
    char ctype[128];
    long connects;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t len = size * n;
    if (len > sizeof(r->body) - 1 - r->len) {
        len = sizeof(r->body) - 1 - r->len;
    }
    memcpy(r->body + r->len, p, len);
    r->len += len;
    r->body[r->len] = 0;
    return size * n;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
    struct resp *r = arg;
    size_t len = size * n;
    if (len > sizeof(r->headers) - 1 - r->hlen) {
        len = sizeof(r->headers) - 1 - r->hlen;
    }
    memcpy(r->headers + r->hlen, p, len);
    r->hlen += len;
    r->headers[r->hlen] = 0;
    return size * n;
}

enum transport { T_UNIX, T_TCP, T_TLS, T_TLS_NOCERT };

/* One request with curl. `curl` may be a reused handle (keep-alive) or NULL. */
static void http_req(CURL *curl, enum transport t, const char *method, const char *path,
                     const char *ctype, const char *body, size_t body_len, struct resp *out)
{
    bool own = curl == NULL;
    if (own) {
        curl = curl_easy_init();
    }
    assert_non_null(curl);
    memset(out, 0, sizeof(*out));
    char url[512];
    struct curl_slist *hdrs = NULL;
    switch (t) {
    case T_UNIX:
        curl_easy_setopt(curl, CURLOPT_UNIX_SOCKET_PATH, fx.sock);
        snprintf(url, sizeof(url), "http://localhost%s", path);
        break;
    case T_TCP:
        snprintf(url, sizeof(url), "http://127.0.0.1:%u%s", fx.tcp_port, path);
        break;
    case T_TLS:
    case T_TLS_NOCERT:
        snprintf(url, sizeof(url), "https://127.0.0.1:%u%s", fx.tls_port, path);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
        if (t == T_TLS) {
            curl_easy_setopt(curl, CURLOPT_SSLCERT, fx.client_cert);
            curl_easy_setopt(curl, CURLOPT_SSLKEY, fx.client_key);
        }
        break;
    }
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, 10000L);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, NULL);
    curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(curl, CURLOPT_NOBODY, 0L);
    if (strcmp(method, "POST") == 0) {
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)body_len);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    char cth[160];
    if (ctype) {
        snprintf(cth, sizeof(cth), "Content-Type: %s", ctype);
        hdrs = curl_slist_append(hdrs, cth);
    } else if (strcmp(method, "POST") == 0) {
        hdrs = curl_slist_append(hdrs, "Content-Type:"); /* remove curl's default */
    }
    hdrs = curl_slist_append(hdrs, "X-Test: hello  ");
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, out);
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK) {
        fail_msg("curl %s %s: %s", method, path, curl_easy_strerror(rc));
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &out->status);
    char *ct = NULL;
    curl_easy_getinfo(curl, CURLINFO_CONTENT_TYPE, &ct);
    snprintf(out->ctype, sizeof(out->ctype), "%s", ct ? ct : "");
    curl_easy_getinfo(curl, CURLINFO_NUM_CONNECTS, &out->connects);
    curl_slist_free_all(hdrs);
    if (own) {
        curl_easy_cleanup(curl);
    }
}

static void post_json(enum transport t, const char *path, const char *body, struct resp *out)
{
    http_req(NULL, t, "POST", path, "application/json", body, strlen(body), out);
}

static void get(enum transport t, const char *path, struct resp *out)
{
    http_req(NULL, t, "GET", path, NULL, NULL, 0, out);
}

static int raw_tcp(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    return fd;
}

static int raw_unix(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    assert_true(strlen(path) < sizeof(sun.sun_path));
    memcpy(sun.sun_path, path, strlen(path) + 1);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    return fd;
}

static void raw_send(int fd, const void *p, size_t n)
{
    const char *c = p;
    while (n > 0) {
        ssize_t w = send(fd, c, n, MSG_NOSIGNAL);
        assert_true(w > 0);
        c += w;
        n -= (size_t)w;
    }
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Read until EOF (returns bytes, *eof true) or until timeout_ms passes (*eof false). */
static size_t raw_read_until_eof(int fd, char *buf, size_t cap, int timeout_ms, bool *eof)
{
    size_t len = 0;
    long deadline = now_ms() + timeout_ms;
    *eof = false;
    for (;;) {
        long left = deadline - now_ms();
        if (left <= 0) {
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0) {
            break;
        }
        ssize_t r = recv(fd, buf + len, cap - 1 - len, 0);
        if (r <= 0) {
            *eof = true;
            break;
        }
        len += (size_t)r;
        if (len >= cap - 1) {
            break;
        }
    }
    buf[len] = 0;
    return len;
}

/* Read exactly one response (headers + Content-Length body). Returns its length or 0. */
static size_t raw_read_response(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t len = 0;
    long deadline = now_ms() + timeout_ms;
    for (;;) {
        buf[len] = 0;
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            char *cl = strcasestr(buf, "\r\nContent-Length: ");
            assert_non_null(cl);
            size_t need = (size_t)(end + 4 - buf) + (size_t)atol(cl + 18);
            if (len >= need) {
                assert_int_equal(len, need); /* nothing beyond one response was sent */
                return len;
            }
        }
        long left = deadline - now_ms();
        if (left <= 0) {
            return 0;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, (int)left) <= 0) {
            return 0;
        }
        /* Read byte by byte so that a second pipelined response is never consumed. */
        ssize_t r = recv(fd, buf + len, 1, 0);
        if (r <= 0) {
            return 0;
        }
        len += (size_t)r;
        if (len >= cap - 1) {
            return 0;
        }
    }
}

static const char *body_of(const char *resp)
{
    const char *p = strstr(resp, "\r\n\r\n");
    return p ? p + 4 : "";
}

/* ---- parser and decoder unit tests ---------------------------------------------------------- */

static int parse(const char *text, struct rpc_head *h, int *status, const char **msg)
{
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    size_t end = rpc_head_find_end(text, strlen(text), 0);
    if (end == 0) {
        return -DS_E_TRUNCATED;
    }
    return rpc_head_parse(text, end, &lim, h, status, msg);
}

static void test_head_parse(void **state)
{
    struct rpc_head h;
    int status = 0;
    const char *msg = NULL;
    assert_int_equal(parse("\r\nPOST /prpc/Test.Echo?json&x=1 HTTP/1.1\r\nHost: x\r\n"
                           "Content-Type:application/json; charset=utf-8\r\n"
                           "content-length: 12\r\nExpect: 100-continue\r\n\r\n",
                           &h, &status, &msg),
                     0);
    assert_int_equal(h.method, RPC_HTTP_POST);
    assert_string_equal(h.path, "/prpc/Test.Echo");
    assert_string_equal(h.query, "json&x=1");
    assert_true(h.has_length);
    assert_int_equal(h.content_length, 12);
    assert_true(h.keep_alive);
    assert_true(h.expect_continue);
    assert_string_equal(h.content_type, "application/json; charset=utf-8");
    assert_string_equal(rpc_head_header(&h, "HOST"), "x");
    rpc_head_done(&h);

    /* Bare LF lines, HTTP/1.0 defaults to close, keep-alive token honoured. */
    assert_int_equal(parse("GET / HTTP/1.0\n\n", &h, &status, &msg), 0);
    assert_false(h.keep_alive);
    rpc_head_done(&h);
    assert_int_equal(parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &h, &status, &msg),
                     0);
    assert_true(h.keep_alive);
    rpc_head_done(&h);
    assert_int_equal(parse("GET / HTTP/1.1\r\nConnection: foo, close\r\n\r\n", &h, &status, &msg),
                     0);
    assert_false(h.keep_alive);
    rpc_head_done(&h);
    assert_int_equal(
        parse("POST /x HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n", &h, &status, &msg), 0);
    assert_true(h.chunked);
    rpc_head_done(&h);
    /* HTTP/1.0 with Transfer-Encoding: parsed, but the connection is not kept (smuggling). */
    assert_int_equal(parse("POST /x HTTP/1.0\r\nConnection: keep-alive\r\n"
                           "Transfer-Encoding: chunked\r\n\r\n",
                           &h, &status, &msg),
                     0);
    assert_true(h.chunked);
    assert_false(h.keep_alive);
    rpc_head_done(&h);

    static const struct {
        const char *req;
        int status;
        const char *msg;
    } bad[] = {
        {"POST /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", 400,
         "both Content-Length and Transfer-Encoding"},
        {"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400,
         "conflicting Content-Length"},
        {"POST /x HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "invalid Content-Length"},
        {"POST /x HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n", 400, "invalid Content-Length"},
        {"POST /x HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400,
         "invalid Content-Length"},
        {"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
         "unsupported transfer coding"},
        {"GET /x HTTP/1.1\r\nHost : x\r\n\r\n", 400, "malformed header name"},
        {"GET /x HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400, "obsolete header line folding"},
        {"GET /x HTTP/1.1\r\nNoColon\r\n\r\n", 400, "malformed header line"},
        {"GET /x HTTP/2.0\r\n\r\n", 505, "HTTP version not supported"},
        {"GET /x HTTP/1.10\r\n\r\n", 400, "malformed HTTP version"},
        {"GET  /x HTTP/1.1\r\n\r\n", 400, "malformed request line"},
        {"GET http://a/x HTTP/1.1\r\n\r\n", 400, "request target must be an absolute path"},
        {"G(T /x HTTP/1.1\r\n\r\n", 400, "malformed request method"},
        {"GET /x\x7f HTTP/1.1\r\n\r\n", 400, "invalid character in request target"},
        {"GET /x HTTP/1.1\r\nA: b\x01\r\n\r\n", 400, "invalid character in header value"},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        status = 0;
        msg = NULL;
        int r = parse(bad[i].req, &h, &status, &msg);
        if (r >= 0 || status != bad[i].status || strcmp(msg, bad[i].msg) != 0) {
            fail_msg("case %zu: r=%d status=%d msg=%s", i, r, status, msg ? msg : "(null)");
        }
    }
    /* Request line and header count limits. */
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    lim.request_line_max = 16;
    const char *longline = "GET /0123456789abcdef HTTP/1.1\r\n\r\n";
    assert_int_equal(rpc_head_parse(longline, strlen(longline), &lim, &h, &status, &msg),
                     -DS_E_LIMIT);
    assert_int_equal(status, 414);
    ds_rpc_limits_default(&lim);
    lim.header_count_max = 2;
    const char *many = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
    assert_int_equal(rpc_head_parse(many, strlen(many), &lim, &h, &status, &msg), -DS_E_LIMIT);
    assert_int_equal(status, 431);
    /* A terminator split across reads is found from a later scan position. */
    const char *split = "GET / HTTP/1.1\r\nA: 1\r\n\r\n";
    assert_int_equal(rpc_head_find_end(split, strlen(split) - 2, 0), 0);
    assert_int_equal(rpc_head_find_end(split, strlen(split), strlen(split) - 2), strlen(split));
}

static void test_chunked(void **state)
{
    const char *body =
        "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\n";
    struct rpc_chunked c = {0};
    struct ds_buf out;
    bool done = false;
    ds_buf_init(&out, 1024);
    /* Feed one byte more at a time, as a slow client would. */
    size_t off = 0, avail = 0;
    while (!done) {
        assert_true(avail < strlen(body));
        avail++;
        int r = rpc_chunked_feed(&c, (const uint8_t *)body + off, avail - off, 1024, &out, &done);
        assert_true(r >= 0);
        off += (size_t)r;
    }
    assert_int_equal(off, strlen(body));
    assert_string_equal((char *)out.data, "Wikipedia in\r\n\r\nchunks.");
    ds_buf_done(&out);

    static const struct {
        const char *in;
        int err;
    } bad[] = {
        {"x\r\n", -DS_E_FORMAT},
        {"4\r\nWikiX\r\n", -DS_E_FORMAT},
        {"4 x\r\n", -DS_E_FORMAT},
        {"fffffffffffffffff\r\n", -DS_E_LIMIT},
        {"401\r\n", -DS_E_LIMIT},                      /* 1025 > the body limit of 1024 */
        {"4;a\rb\r\nWiki\r\n0\r\n\r\n", -DS_E_FORMAT}, /* bare CR in an extension */
        {"4;a\x01\r\nWiki\r\n0\r\n\r\n", -DS_E_FORMAT},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        struct rpc_chunked cc = {0};
        ds_buf_init(&out, 1024);
        int r =
            rpc_chunked_feed(&cc, (const uint8_t *)bad[i].in, strlen(bad[i].in), 1024, &out, &done);
        if (r != bad[i].err) {
            fail_msg("chunked case %zu: %d", i, r);
        }
        ds_buf_done(&out);
    }
}

static void expect_query(const char *q, const char *json)
{
    json_t *v = NULL;
    const char *msg = NULL;
    int r = ds_rpc_query_decode(q, strlen(q), &v, &msg);
    if (r < 0) {
        fail_msg("query %s: %d %s", q, r, msg ? msg : "");
    }
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII);
    if (strcmp(s, json) != 0) {
        fail_msg("query %s: got %s want %s", q, s, json);
    }
    free(s);
    json_decref(v);
}

static void expect_query_error(const char *q, int err, const char *msg_part)
{
    json_t *v = NULL;
    const char *msg = NULL;
    int r = ds_rpc_query_decode(q, strlen(q), &v, &msg);
    if (r != err || !msg || !strstr(msg, msg_part)) {
        fail_msg("query %s: r=%d msg=%s", q, r, msg ? msg : "(null)");
    }
    assert_null(v);
}

static void test_query_decode(void **state)
{
    expect_query("", "{}");
    expect_query("path=my/key/path&purpose=signing&algorithm=ed25519",
                 "{\"path\":\"my/key/path\",\"purpose\":\"signing\",\"algorithm\":\"ed25519\"}");
    expect_query("a=x+y%20z%2B%zz%4", "{\"a\":\"x y z+%zz%4\"}");
    expect_query("json&b=", "{\"json\":\"\",\"b\":\"\"}");
    expect_query("alt_names[1]=b&alt_names[0]=a", "{\"alt_names\":[\"a\",\"b\"]}");
    expect_query("l[]=a&l[]=b&l[]=c", "{\"l\":[\"a\",\"b\",\"c\"]}");
    expect_query("r=1&r=2", "{\"r\":[\"1\",\"2\"]}");
    expect_query("m[x]=1&m[y][z]=2", "{\"m\":{\"x\":\"1\",\"y\":{\"z\":\"2\"}}}");
    expect_query("a[0][k]=1&a[1][k]=2", "{\"a\":[{\"k\":\"1\"},{\"k\":\"2\"}]}");
    expect_query("a[10]=x&a[2]=y", "{\"a\":[\"y\",\"x\"]}");
    expect_query("a[01]=x", "{\"a\":{\"01\":\"x\"}}");
    expect_query("%61%5B0%5D=v", "{\"a[0]\":\"v\"}"); /* strict: encoded brackets are literal */
    expect_query("&&=x&[a]=y&k=%C3%A9", "{\"k\":\"\\u00E9\"}");
    expect_query("a[b][c][d][e][f]=deep",
                 "{\"a\":{\"b\":{\"c\":{\"d\":{\"e\":{\"f\":\"deep\"}}}}}}");

    expect_query_error("a[b][c][d][e][f][g]=x", -DS_E_LIMIT, "deeper than 5");
    expect_query_error("a=1&a[b]=2", -DS_E_FORMAT, "both as a value and as a map");
    expect_query_error("a[b]=1&a[]=2", -DS_E_FORMAT, "both as a value and as a map");
    expect_query_error("a[]=1&a[b]=2", -DS_E_FORMAT, "both as a value and as a map");
    expect_query("a[[b]=1", "{\"a\":{\"[b\":\"1\"}}");
    expect_query_error("a[b=1", -DS_E_FORMAT, "unclosed");
    expect_query_error("a[b]x=1", -DS_E_FORMAT, "text after");
    expect_query_error("a[][b]=1", -DS_E_FORMAT, "only allowed at the end");
    expect_query_error("a=%00", -DS_E_FORMAT, "NUL");
    expect_query_error("a=%ff", -DS_E_FORMAT, "not UTF-8");
    expect_query_error("a[99999]=x", -DS_E_LIMIT, "index too large");
    char big[DS_RPC_QUERY_PAIRS_MAX * 4 + 16];
    size_t n = 0;
    for (int i = 0; i <= DS_RPC_QUERY_PAIRS_MAX; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n, "a=1&");
    }
    expect_query_error(big, -DS_E_LIMIT, "too many pairs");

    assert_true(ds_rpc_query_json_flag("json", 4));
    assert_true(ds_rpc_query_json_flag("x=1&json=", 9));
    assert_true(ds_rpc_query_json_flag("json=1", 6));
    assert_true(ds_rpc_query_json_flag("json=true", 9));
    assert_true(ds_rpc_query_json_flag("%6Ason=tru%65", 13));
    assert_false(ds_rpc_query_json_flag("json=false", 10));
    assert_false(ds_rpc_query_json_flag("json=0", 6));
    assert_false(ds_rpc_query_json_flag("jsonx", 5));
    assert_false(ds_rpc_query_json_flag("", 0));
}

static void test_decode_input(void **state)
{
    char msg[RPC_MSG_MAX];
    json_t *v = NULL;
    struct rpc_input in = {.query = "",
                           .content_type = "Application/JSON ; charset=utf-8",
                           .body = (const uint8_t *)" {\"a\": 1} ",
                           .body_len = 10};
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), 0);
    assert_int_equal(json_integer_value(json_object_get(v, "a")), 1);
    json_decref(v);

    in.content_type = "application/jsonx";
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), -DS_E_UNSUPPORTED);
    assert_string_equal(msg, RPC_PROTOBUF_UNSUPPORTED);
    in.content_type = NULL;
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), -DS_E_UNSUPPORTED);
    in.query = "json";
    in.query_len = 4;
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), 0);
    json_decref(v);

    static const struct {
        const char *body;
        const char *msg;
    } bad[] = {
        {"[1,2]", "failed to decode request: invalid type: sequence, expected a map"},
        {"\"x\"", "failed to decode request: invalid type: string, expected a map"},
        {"null", "failed to decode request: invalid type: null, expected a map"},
        {"{\"a\":1}x", "failed to decode request: end of file expected"},
        {"{\"a\":1,\"a\":2}", "failed to decode request: duplicate object key"},
        {"{\"a\":\"\\u0000\"}", "failed to decode request: "},
        {"   ", "failed to decode request: "},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        in.body = (const uint8_t *)bad[i].body;
        in.body_len = strlen(bad[i].body);
        v = NULL;
        int r = rpc_decode_input(&in, &v, msg, sizeof(msg));
        if (r != -DS_E_FORMAT || strncmp(msg, bad[i].msg, strlen(bad[i].msg)) != 0) {
            fail_msg("body case %zu: %d %s", i, r, msg);
        }
        assert_null(v);
    }
    /* Empty-request methods never parse their input. */
    in.no_params = true;
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), 0);
    assert_int_equal(json_object_size(v), 0);
    json_decref(v);
    /* GET: the query string is the input, the body is ignored. */
    in.no_params = false;
    in.from_query = true;
    in.query = "a[]=1&json";
    in.query_len = strlen(in.query);
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), 0);
    assert_int_equal(json_array_size(json_object_get(v, "a")), 1);
    json_decref(v);
    in.query = "a[=1";
    in.query_len = strlen(in.query);
    assert_int_equal(rpc_decode_input(&in, &v, msg, sizeof(msg)), -DS_E_FORMAT);
    assert_string_equal(msg,
                        "failed to decode request: invalid query string: unclosed '[' in a key");
}

static void expect_typed(const char *json_or_query, bool from_query, const char *want)
{
    json_t *params;
    if (from_query) {
        assert_int_equal(ds_rpc_query_decode(json_or_query, strlen(json_or_query), &params, NULL),
                         0);
    } else {
        params = json_loads(json_or_query, JSON_DECODE_ANY, NULL);
        assert_non_null(params);
    }
    struct typed_req t;
    memset(&t, 0xa5, sizeof(t)); /* the decoder must not rely on a zeroed struct */
    char msg[RPC_MSG_MAX];
    int r = ds_rpc_params_decode(params, from_query, typed_fields, DS_ARRAY_SIZE(typed_fields), &t,
                                 msg, sizeof(msg));
    json_decref(params);
    if (r < 0) {
        fail_msg("%s: %d %s", json_or_query, r, msg);
    }
    json_t *j = typed_json(&t);
    char *s = json_dumps(j, JSON_COMPACT);
    if (strcmp(s, want) != 0) {
        fail_msg("%s: got %s want %s", json_or_query, s, want);
    }
    free(s);
    json_decref(j);
    ds_rpc_params_free(typed_fields, DS_ARRAY_SIZE(typed_fields), &t);
}

static void expect_typed_error(const char *json_or_query, bool from_query, int err,
                               const char *want)
{
    json_t *params;
    if (from_query) {
        assert_int_equal(ds_rpc_query_decode(json_or_query, strlen(json_or_query), &params, NULL),
                         0);
    } else {
        params = json_loads(json_or_query, JSON_DECODE_ANY, NULL);
        assert_non_null(params);
    }
    struct typed_req t;
    char msg[RPC_MSG_MAX];
    int r = ds_rpc_params_decode(params, from_query, typed_fields, DS_ARRAY_SIZE(typed_fields), &t,
                                 msg, sizeof(msg));
    json_decref(params);
    if (r != err || strcmp(msg, want) != 0) {
        fail_msg("%s: r=%d msg=%s", json_or_query, r, msg);
    }
    /* Everything was freed and zeroed. */
    assert_null(t.path);
    assert_null(t.data.data);
    assert_null(t.alt_names.items);
    assert_null(t.sigs.items);
}

static void test_params_decode(void **state)
{
    const char *empty = "{\"path\":\"\",\"data\":\"\",\"flag\":false,\"n32\":0,\"n64\":0,"
                        "\"not_before\":null,\"alt_names\":[],\"sigs\":[]}";
    expect_typed("{}", false, empty);
    expect_typed("", true, empty);
    expect_typed("{\"unknown\":[1,{}],\"not_before\":null}", false, empty);
    expect_typed("{\"path\":\"a/b\",\"data\":\"0x0xABff\",\"flag\":true,\"n32\":4294967295,"
                 "\"n64\":9223372036854775807,\"not_before\":5,\"alt_names\":[\"x\",\"y\"],"
                 "\"sigs\":[\"00\",\"0x01\"]}",
                 false,
                 "{\"path\":\"a/b\",\"data\":\"abff\",\"flag\":true,\"n32\":4294967295,"
                 "\"n64\":9223372036854775807,\"not_before\":5,\"alt_names\":[\"x\",\"y\"],"
                 "\"sigs\":[\"00\",\"01\"]}");
    expect_typed("path=a%2Fb&data=0x00ff&flag=true&n32=7&n64=18446744073709551615&not_before=9&"
                 "alt_names[1]=y&alt_names[0]=x&sigs[]=aa&json",
                 true,
                 "{\"path\":\"a/b\",\"data\":\"00ff\",\"flag\":true,\"n32\":7,\"n64\":-1,"
                 "\"not_before\":9,\"alt_names\":[\"x\",\"y\"],\"sigs\":[\"aa\"]}");
    expect_typed("flag=false&not_before=", true, empty);

    expect_typed_error("[]", false, -DS_E_FORMAT, "invalid type: sequence, expected a map");
    expect_typed_error("{\"path\":1}", false, -DS_E_FORMAT,
                       "field `path`: invalid type: integer, expected a string");
    expect_typed_error("{\"path\":null}", false, -DS_E_FORMAT,
                       "field `path`: invalid type: null, expected a value");
    expect_typed_error("{\"path\":\"0123456789abcdefX\"}", false, -DS_E_LIMIT,
                       "field `path`: longer than 16 bytes");
    expect_typed_error("{\"flag\":\"true\"}", false, -DS_E_FORMAT,
                       "field `flag`: invalid type: string, expected a boolean");
    expect_typed_error("{\"flag\":1}", false, -DS_E_FORMAT,
                       "field `flag`: invalid type: integer, expected a boolean");
    expect_typed_error("{\"n32\":\"5\"}", false, -DS_E_FORMAT,
                       "field `n32`: invalid type: string, expected an unsigned integer");
    expect_typed_error("{\"n32\":4294967296}", false, -DS_E_FORMAT,
                       "field `n32`: integer out of range");
    expect_typed_error("{\"n64\":-1}", false, -DS_E_FORMAT, "field `n64`: integer out of range");
    expect_typed_error("{\"n64\":1.5}", false, -DS_E_FORMAT,
                       "field `n64`: invalid type: floating point, expected an unsigned integer");
    expect_typed_error("{\"data\":\"abc\"}", false, -DS_E_FORMAT,
                       "field `data`: invalid hex string");
    expect_typed_error("{\"data\":\"zz\"}", false, -DS_E_FORMAT,
                       "field `data`: invalid hex string");
    expect_typed_error("{\"data\":5}", false, -DS_E_FORMAT,
                       "field `data`: invalid type: integer, expected a hex string");
    expect_typed_error("{\"alt_names\":\"x\"}", false, -DS_E_FORMAT,
                       "field `alt_names`: invalid type: string, expected a sequence");
    expect_typed_error("{\"alt_names\":null}", false, -DS_E_FORMAT,
                       "field `alt_names`: invalid type: null, expected a sequence");
    expect_typed_error("{\"alt_names\":[\"a\",\"b\",\"c\",\"d\"]}", false, -DS_E_LIMIT,
                       "field `alt_names`: more than 3 items");
    expect_typed_error("{\"path\":\"ok\",\"alt_names\":[\"a\",2]}", false, -DS_E_FORMAT,
                       "field `alt_names`: invalid type: integer, expected a string");
    expect_typed_error("{\"sigs\":[\"00\",\"0\"]}", false, -DS_E_FORMAT,
                       "field `sigs`: invalid hex string");
    expect_typed_error("flag=yes", true, -DS_E_FORMAT, "field `flag`: expected true or false");
    expect_typed_error("n32=12a", true, -DS_E_FORMAT, "field `n32`: invalid integer");
    expect_typed_error("n64=18446744073709551616", true, -DS_E_FORMAT,
                       "field `n64`: integer out of range");
    expect_typed_error("path[a]=1", true, -DS_E_FORMAT,
                       "field `path`: invalid type: map, expected a string");
    expect_typed_error("path=a&path=b", true, -DS_E_FORMAT,
                       "field `path`: invalid type: sequence, expected a string");
    expect_typed_error("alt_names=x", true, -DS_E_FORMAT,
                       "field `alt_names`: invalid type: string, expected a sequence");
}

/* ---- server tests -------------------------------------------------------------------------- */

static void test_post_and_get_unix(void **state)
{
    struct resp r;
    post_json(T_UNIX, "/Echo", "{\"path\":\"k\",\"n\":1}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(
        r.body, "{\"method\":\"Echo\",\"params\":{\"path\":\"k\",\"n\":1},\"query\":false}");
    assert_non_null(strcasestr(r.headers, "\r\nContent-Length: "));

    get(T_UNIX, "/Echo?path=my%2Fkey&alt_names[0]=a&alt_names[1]=b", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body,
                        "{\"method\":\"Echo\",\"params\":{\"path\":\"my/key\",\"alt_names\":"
                        "[\"a\",\"b\"]},\"query\":true}");

    /* tappd style on the same socket: /prpc/Test.<Method> and /prpc/<Method>. */
    post_json(T_UNIX, "/prpc/Test.Echo", "{}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"method\":\"Echo\",\"params\":{},\"query\":false}");
    post_json(T_UNIX, "/prpc/Echo", "", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"method\":\"Echo\",\"params\":{},\"query\":false}");

    /* dstack.sock trims nothing: /Test.Echo is not found, /prpc/a/b matches no route. */
    post_json(T_UNIX, "/Test.Echo", "{}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\n  \"error\": \"Service not found: Test.Echo\"\n}");
    post_json(T_UNIX, "/prpc/a/b", "{}", &r);
    assert_int_equal(r.status, 404);
    assert_string_equal(r.body, "{\n  \"error\": \"Not Found\"\n}");

    /* Unix peer credentials. */
    post_json(T_UNIX, "/Peer", "{}", &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_int_equal(json_integer_value(json_object_get(j, "transport")), DS_RPC_TRANSPORT_UNIX);
    assert_true(json_is_true(json_object_get(j, "has_cred")));
    assert_int_equal(json_integer_value(json_object_get(j, "uid")), (int)getuid());
    assert_int_equal(json_integer_value(json_object_get(j, "pid")), (int)getpid());
    assert_false(json_is_true(json_object_get(j, "tls")));
    json_decref(j);

    struct stat st;
    assert_int_equal(stat(fx.sock, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0777);
    assert_int_equal(stat(fx.sock2, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_post_and_get_tcp(void **state)
{
    struct resp r;
    post_json(T_TCP, "/prpc/Test.Echo", "{\"a\":[1,2]}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"method\":\"Echo\",\"params\":{\"a\":[1,2]},\"query\":false}");
    assert_non_null(strstr(r.headers, "\r\nX-App-Version: v0.1.0 (test)\r\n"));
    /* Trims apply repeatedly and in any order. */
    post_json(T_TCP, "/prpc/Legacy.Test.Legacy.Echo", "{}", &r);
    assert_int_equal(r.status, 200);
    get(T_TCP, "/prpc/Echo?x=1&json", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"method\":\"Echo\",\"params\":{\"x\":\"1\",\"json\":\"\"},"
                                "\"query\":true}");
    get(T_TCP, "/prpc/Info", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"ok\":true,\"nparams\":0}");
    get(T_TCP, "/prpc/Null", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "null");
    post_json(T_TCP, "/prpc/Peer", "{}", &r);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_int_equal(json_integer_value(json_object_get(j, "transport")), DS_RPC_TRANSPORT_TCP);
    assert_false(json_is_true(json_object_get(j, "has_cred")));
    assert_int_equal(strncmp(json_string_value(json_object_get(j, "name")), "127.0.0.1:", 10), 0);
    json_decref(j);

    /* Request headers, response headers, the raw body. */
    post_json(T_TCP, "/prpc/Header?json", "{\"k\":\"v\"}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"x_test\":\"hello\",\"http\":\"POST\",\"path\":\"/prpc/Header\","
                                "\"body_len\":9,\"body\":\"{\\\"k\\\":\\\"v\\\"}\"}");
    assert_non_null(strstr(r.headers, "\r\nX-Reply: yes\r\n"));

    /* HEAD: the headers of the GET, no body. */
    http_req(NULL, T_TCP, "HEAD", "/prpc/Info", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.len, 0);
    assert_non_null(strstr(r.headers, "Content-Length: 23\r\n"));
}

static void test_errors(void **state)
{
    struct resp r;
    post_json(T_TCP, "/prpc/Nope", "{}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.ctype, "application/json");
    assert_string_equal(r.body, "{\n  \"error\": \"Service not found: Nope\"\n}");
    post_json(T_UNIX, "/EmitEvent", "{\"event\":\"x\"}", &r);
    assert_string_equal(r.body, "{\n  \"error\": \"Service not found: EmitEvent\"\n}");
    /* Method names are case-sensitive. */
    post_json(T_UNIX, "/echo", "{}", &r);
    assert_string_equal(r.body, "{\n  \"error\": \"Service not found: echo\"\n}");

    get(T_TCP, "/prpc/Typed?flag=maybe", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\n  \"error\": \"failed to decode request: field `flag`: "
                                "expected true or false\"\n}");
    get(T_UNIX, "/Typed?flag=true&alt_names[0]=a", &r);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"flag\":true"));
    post_json(T_TCP, "/prpc/Fail", "{}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\n  \"error\": \"Unsupported algorithm\"\n}");
    post_json(T_TCP, "/prpc/Errno", "{}", &r);
    assert_int_equal(r.status, 400);
    char want[256];
    snprintf(want, sizeof(want), "{\n  \"error\": \"%s\"\n}", ds_strerror(-DS_E_NOT_FOUND));
    assert_string_equal(r.body, want);

    post_json(T_TCP, "/prpc/Echo", "{\"a\":", &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "\"error\": \"failed to decode request: "));
    post_json(T_UNIX, "/Echo", "[1,2]", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\n  \"error\": \"failed to decode request: invalid type: "
                                "sequence, expected a map\"\n}");
    get(T_TCP, "/prpc/Echo?a=1&a[b]=2", &r);
    assert_int_equal(r.status, 400);
    assert_non_null(strstr(r.body, "invalid query string: a key is used both"));
    /* Empty-request methods ignore even a broken body. */
    post_json(T_TCP, "/prpc/Info", "not json", &r);
    assert_int_equal(r.status, 200);

    /* Protobuf mode (no JSON Content-Type, no ?json): a PrpcError, field 1 = message. */
    http_req(NULL, T_TCP, "POST", "/prpc/Echo", NULL, "\x0a\x00", 2, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.ctype, "application/octet-stream");
    assert_int_equal((uint8_t)r.body[0], 0x0a);
    assert_int_equal((uint8_t)r.body[1], strlen(RPC_PROTOBUF_UNSUPPORTED));
    assert_string_equal(r.body + 2, RPC_PROTOBUF_UNSUPPORTED);
    http_req(NULL, T_TCP, "POST", "/prpc/Nope", "application/octet-stream", "", 0, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body + 2, "Service not found: Nope");
    http_req(NULL, T_TCP, "POST", "/prpc/Echo?json=1", NULL, "{\"z\":true}", 10, &r);
    assert_int_equal(r.status, 200);

    /* Raw routes, 404, 405, the filter, a raw handler that forgot to reply. */
    get(T_TCP, "/", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.ctype, "text/html; charset=utf-8");
    assert_string_equal(r.body, "<html><body>dashboard</body></html>");
    get(T_TCP, "/logs/web?tail=10", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "logs of web?tail=10\n");
    post_json(T_TCP, "/", "{}", &r);
    assert_int_equal(r.status, 405);
    http_req(NULL, T_TCP, "DELETE", "/prpc/Echo", NULL, NULL, 0, &r);
    assert_int_equal(r.status, 405);
    get(T_TCP, "/nothing/here", &r);
    assert_int_equal(r.status, 404);
    get(T_TCP, "/secret", &r);
    assert_int_equal(r.status, 401);
    assert_string_equal(r.body, "{\"error\":\"unauthorized\"}");
    get(T_TCP, "/noreply", &r);
    assert_int_equal(r.status, 500);
    assert_string_equal(r.body, "{\n  \"error\": \"handler did not reply\"\n}");
}

static void test_ascii_json(void **state)
{
    struct resp r;
    get(T_UNIX, "/Unicode", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"s\":\"h\\u00E9llo \\u2713 \\uD83D\\uDE00\"}");
    for (size_t i = 0; i < r.len; i++) {
        assert_true((unsigned char)r.body[i] < 0x80);
    }
    /* Non-ASCII input comes back escaped too, and error messages are ASCII. */
    post_json(T_UNIX, "/Echo", "{\"k\":\"\xc3\xa9\"}", &r);
    assert_string_equal(r.body,
                        "{\"method\":\"Echo\",\"params\":{\"k\":\"\\u00E9\"},\"query\":false}");
    post_json(T_UNIX, "/\xc3\xa9", "{}", &r);
    assert_string_equal(r.body, "{\n  \"error\": \"Service not found: \\u00E9\"\n}");
}

static void test_body_limits(void **state)
{
    struct resp r;
    size_t n = TEST_BODY_MAX + 100;
    char *big = malloc(n + 1);
    assert_non_null(big);
    memset(big, ' ', n);
    big[0] = '{';
    big[n - 1] = '}';
    big[n] = 0;
    /* curl sends Expect: 100-continue; the server answers 400 before the body is sent. */
    http_req(NULL, T_TCP, "POST", "/prpc/Echo", "application/json", big, n, &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\n  \"error\": \"request body too large\"\n}");
    assert_non_null(strstr(r.headers, "Connection: close"));
    /* Just under the limit works (and exercises 100-continue). */
    big[TEST_BODY_MAX - 1] = '}';
    http_req(NULL, T_UNIX, "POST", "/Info", "application/json", big, TEST_BODY_MAX, &r);
    assert_int_equal(r.status, 200);

    /* A raw client that sends the whole oversized body still gets the answer, not a reset. */
    int fd = raw_tcp(fx.tcp_port);
    char head[256];
    int hn = snprintf(head, sizeof(head),
                      "POST /prpc/Echo HTTP/1.1\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      n);
    raw_send(fd, head, (size_t)hn);
    raw_send(fd, big, n);
    char buf[4096];
    bool eof;
    raw_read_until_eof(fd, buf, sizeof(buf), 5000, &eof);
    assert_true(eof);
    assert_int_equal(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
    assert_string_equal(body_of(buf), "{\n  \"error\": \"request body too large\"\n}");
    close(fd);
    free(big);

    /* A per-method limit (Small: 32 bytes), also for chunked bodies. */
    post_json(T_TCP, "/prpc/Small", "{\"a\":\"0123456789012345678901234567890123456789\"}", &r);
    assert_int_equal(r.status, 400);
    assert_string_equal(r.body, "{\n  \"error\": \"request body too large\"\n}");
    fd = raw_tcp(fx.tcp_port);
    const char *chunked = "POST /prpc/Small HTTP/1.1\r\nContent-Type: application/json\r\n"
                          "Transfer-Encoding: chunked\r\n\r\n10\r\n{\"a\":\"0123456789\r\n"
                          "20\r\n0123456789012345678901234567890\"}\r\n0\r\n\r\n";
    raw_send(fd, chunked, strlen(chunked));
    raw_read_until_eof(fd, buf, sizeof(buf), 5000, &eof);
    assert_true(eof);
    assert_string_equal(body_of(buf), "{\n  \"error\": \"request body too large\"\n}");
    close(fd);
}

static void test_header_limits(void **state)
{
    /* Oversized headers: 431 and close. */
    int fd = raw_tcp(fx.tcp_port);
    const char *start = "GET /prpc/Info HTTP/1.1\r\nX-Big: ";
    raw_send(fd, start, strlen(start));
    char *filler = malloc(DS_RPC_HEADER_SIZE_MAX + 10);
    memset(filler, 'a', DS_RPC_HEADER_SIZE_MAX + 10);
    raw_send(fd, filler, DS_RPC_HEADER_SIZE_MAX + 10);
    char buf[4096];
    bool eof;
    raw_read_until_eof(fd, buf, sizeof(buf), 5000, &eof);
    assert_true(eof);
    assert_int_equal(strncmp(buf, "HTTP/1.1 431 Request Header Fields Too Large\r\n", 46), 0);
    assert_string_equal(body_of(buf), "{\n  \"error\": \"request header too large\"\n}");
    close(fd);

    /* A request line over the limit: 414. */
    fd = raw_unix(fx.sock);
    raw_send(fd, "GET /", 5);
    raw_send(fd, filler, DS_RPC_REQUEST_LINE_MAX + 10);
    raw_read_until_eof(fd, buf, sizeof(buf), 5000, &eof);
    assert_true(eof);
    assert_int_equal(strncmp(buf, "HTTP/1.1 414 URI Too Long\r\n", 27), 0);
    close(fd);
    free(filler);

    /* Malformed head: 400 with the parser's reason, then close. */
    fd = raw_unix(fx.sock);
    const char *smuggle = "POST /Echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked"
                          "\r\n\r\n0\r\n\r\n";
    raw_send(fd, smuggle, strlen(smuggle));
    raw_read_until_eof(fd, buf, sizeof(buf), 5000, &eof);
    assert_true(eof);
    assert_int_equal(strncmp(buf, "HTTP/1.1 400 Bad Request\r\n", 26), 0);
    assert_string_equal(body_of(buf),
                        "{\n  \"error\": \"both Content-Length and Transfer-Encoding\"\n}");
    close(fd);
}

struct slow_arg {
    long dropped_after_ms;
    bool got_408;
};

static void *slow_client(void *arg)
{
    struct slow_arg *sa = arg;
    int fd = raw_tcp(fx.tcp_port);
    const char *req = "GET /prpc/Info HTTP/1.1\r\nHost: x\r\n\r\n";
    long t0 = now_ms();
    sa->dropped_after_ms = -1;
    for (size_t i = 0; i < strlen(req); i++) {
        if (send(fd, req + i, 1, MSG_NOSIGNAL) != 1) {
            break;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) > 0) {
            char buf[1024];
            bool eof;
            raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
            sa->got_408 = strncmp(buf, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0 && eof;
            sa->dropped_after_ms = now_ms() - t0;
            break;
        }
    }
    close(fd);
    return NULL;
}

static void test_slow_client(void **state)
{
    struct slow_arg sa = {0};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, slow_client, &sa), 0);
    usleep(300 * 1000);
    /* Other clients are served promptly while the slow one dribbles. */
    for (int i = 0; i < 5; i++) {
        long t0 = now_ms();
        struct resp r;
        get(T_TCP, "/prpc/Info", &r);
        assert_int_equal(r.status, 200);
        assert_true(now_ms() - t0 < 500);
        usleep(100 * 1000);
    }
    pthread_join(t, NULL);
    assert_true(sa.got_408);
    assert_true(sa.dropped_after_ms >= TEST_HEADER_TIMEOUT_MS - 100);
    assert_true(sa.dropped_after_ms < TEST_HEADER_TIMEOUT_MS + 1500);

    /* A client that connects and never sends anything is dropped after the idle timeout. */
    int fd = raw_unix(fx.sock);
    char buf[64];
    bool eof;
    long t0 = now_ms();
    size_t n = raw_read_until_eof(fd, buf, sizeof(buf), 6000, &eof);
    assert_true(eof);
    assert_int_equal(n, 0);
    assert_true(now_ms() - t0 >= 2500);
    close(fd);
}

static void test_half_close(void **state)
{
    /* The JS SDK: request, end(), wait for FIN. The response must be complete, then EOF. */
    const char *req = "POST /GetKey HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json"
                      "\r\nContent-Length: 2\r\n\r\n{}";
    char buf[4096];
    bool eof;
    int fd = raw_unix(fx.sock);
    char req2[512];
    snprintf(req2, sizeof(req2),
             "POST /Echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             "Content-Length: 11\r\n\r\n{\"p\":\"abc\"}");
    raw_send(fd, req2, strlen(req2));
    shutdown(fd, SHUT_WR);
    long t0 = now_ms();
    size_t n = raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_true(now_ms() - t0 < 1000);
    assert_true(n > 0);
    assert_string_equal(body_of(buf),
                        "{\"method\":\"Echo\",\"params\":{\"p\":\"abc\"},\"query\":false}");
    assert_non_null(strstr(buf, "Content-Length: 52\r\n"));
    close(fd);

    /* Two pipelined requests then half-close: both answered, in order, then EOF. */
    fd = raw_unix(fx.sock);
    raw_send(fd, req2, strlen(req2));
    raw_send(fd, req, strlen(req));
    shutdown(fd, SHUT_WR);
    raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    const char *second = strstr(body_of(buf), "HTTP/1.1 400 Bad Request\r\n");
    assert_non_null(second);
    assert_string_equal(body_of(second), "{\n  \"error\": \"Service not found: GetKey\"\n}");
    close(fd);

    /* Half-close while a deferred handler is still working. */
    fd = raw_tcp(fx.tcp_port);
    const char *dreq = "GET /prpc/Defer?ms=300 HTTP/1.1\r\n\r\n";
    raw_send(fd, dreq, strlen(dreq));
    shutdown(fd, SHUT_WR);
    raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_string_equal(body_of(buf), "{\"deferred\":true,\"orphaned\":false}");
    close(fd);

    /* Half of a request and then EOF: closed without an answer. */
    fd = raw_unix(fx.sock);
    raw_send(fd, "POST /Echo HTTP/1.1\r\nContent-Length: 10\r\n\r\n{}", 46);
    shutdown(fd, SHUT_WR);
    n = raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_int_equal(n, 0);
    close(fd);
}

static void test_tls(void **state)
{
    struct resp r;
    post_json(T_TLS, "/prpc/Peer", "{}", &r);
    assert_int_equal(r.status, 200);
    json_t *j = json_loads(r.body, 0, NULL);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "tls")));
    assert_string_equal(json_string_value(json_object_get(j, "cn")), "test-client");
    json_decref(j);
    post_json(T_TLS_NOCERT, "/prpc/Peer", "{}", &r);
    assert_int_equal(r.status, 200);
    j = json_loads(r.body, 0, NULL);
    assert_string_equal(json_string_value(json_object_get(j, "cn")), "none");
    json_decref(j);
    get(T_TLS, "/prpc/Echo?a[]=1", &r);
    assert_string_equal(r.body, "{\"method\":\"Echo\",\"params\":{\"a\":[\"1\"]},\"query\":true}");
    /* Plain HTTP on the TLS port fails the handshake and is closed. */
    int fd = raw_tcp(fx.tls_port);
    const char *req = "GET /prpc/Info HTTP/1.1\r\n\r\n";
    raw_send(fd, req, strlen(req));
    char buf[256];
    bool eof;
    raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_null(strstr(buf, "HTTP/1.1 200"));
    close(fd);
}

static void *defer_client(void *arg)
{
    struct resp *r = arg;
    http_req(NULL, T_TCP, "GET", "/prpc/Defer?ms=500", NULL, NULL, 0, r);
    return NULL;
}

static void test_deferred(void **state)
{
    struct resp r;
    long t0 = now_ms();
    post_json(T_UNIX, "/Defer", "{\"ms\":\"200\"}", &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"deferred\":true,\"orphaned\":false}");
    assert_true(now_ms() - t0 >= 190);

    /* While a call is deferred, other connections are served. */
    static struct resp dr;
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, defer_client, &dr), 0);
    usleep(100 * 1000);
    t0 = now_ms();
    get(T_TCP, "/prpc/Info", &r);
    assert_int_equal(r.status, 200);
    assert_true(now_ms() - t0 < 300);
    pthread_join(t, NULL);
    assert_int_equal(dr.status, 200);
    assert_string_equal(dr.body, "{\"deferred\":true,\"orphaned\":false}");

    /* The client goes away before the reply: the call is orphaned and its reply dropped. */
    int fd = raw_tcp(fx.tcp_port);
    const char *req = "GET /prpc/Defer?ms=200 HTTP/1.1\r\n\r\n";
    raw_send(fd, req, strlen(req));
    usleep(50 * 1000);
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)); /* reset, not FIN */
    close(fd);
    usleep(400 * 1000);
    /* The server is still fine. */
    get(T_TCP, "/prpc/Info", &r);
    assert_int_equal(r.status, 200);
}

static void test_keep_alive(void **state)
{
    /* curl reuses one connection for many sequential requests. */
    CURL *curl = curl_easy_init();
    struct resp r;
    long connects = 0;
    for (int i = 0; i < 100; i++) {
        char body[64];
        snprintf(body, sizeof(body), "{\"i\":%d}", i);
        http_req(curl, i % 2 ? T_UNIX : T_UNIX, "POST", "/Echo", "application/json", body,
                 strlen(body), &r);
        assert_int_equal(r.status, 200);
        char want[128];
        snprintf(want, sizeof(want), "{\"method\":\"Echo\",\"params\":{\"i\":%d},\"query\":false}",
                 i);
        assert_string_equal(r.body, want);
        connects += r.connects;
    }
    assert_int_equal(connects, 1);
    curl_easy_cleanup(curl);

    /* Raw: sequential requests on one socket, errors included, split across writes. */
    int fd = raw_tcp(fx.tcp_port);
    char buf[8192];
    for (int i = 0; i < 50; i++) {
        const char *path = i % 5 == 4 ? "/prpc/Nope" : "/prpc/Info";
        char req[256];
        int n = snprintf(req, sizeof(req),
                         "POST %s HTTP/1.1\r\nContent-Type: application/json\r\n"
                         "Content-Length: 2\r\n\r\n{}",
                         path);
        raw_send(fd, req, 10);
        usleep(1000);
        raw_send(fd, req + 10, (size_t)n - 10);
        size_t len = raw_read_response(fd, buf, sizeof(buf), 3000);
        assert_true(len > 0);
        assert_int_equal(strncmp(buf, i % 5 == 4 ? "HTTP/1.1 400" : "HTTP/1.1 200", 12), 0);
        assert_null(strstr(buf, "Connection: close"));
    }
    /* Chunked request body on the same connection, then many pipelined requests. */
    const char *chunked =
        "POST /prpc/Echo HTTP/1.1\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n3\r\n{\"a\r\n6\r\n\":\"b\"}\r\n0\r\n\r\n";
    raw_send(fd, chunked, strlen(chunked));
    assert_true(raw_read_response(fd, buf, sizeof(buf), 3000) > 0);
    assert_string_equal(body_of(buf),
                        "{\"method\":\"Echo\",\"params\":{\"a\":\"b\"},\"query\":false}");
    char pipe[32 * 64];
    size_t pn = 0;
    for (int i = 0; i < 30; i++) {
        pn += (size_t)snprintf(pipe + pn, sizeof(pipe) - pn,
                               "GET /prpc/Echo?i=%02d HTTP/1.1\r\n\r\n", i);
    }
    raw_send(fd, pipe, pn);
    for (int i = 0; i < 30; i++) {
        assert_true(raw_read_response(fd, buf, sizeof(buf), 3000) > 0);
        char want[128];
        snprintf(want, sizeof(want),
                 "{\"method\":\"Echo\",\"params\":{\"i\":\"%02d\"},\"query\":true}", i);
        assert_string_equal(body_of(buf), want);
    }
    /* Connection: close is honoured. */
    const char *last = "GET /prpc/Info HTTP/1.1\r\nConnection: close\r\n\r\n";
    raw_send(fd, last, strlen(last));
    bool eof;
    raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
    close(fd);

    /* HTTP/1.0 closes after the response. */
    fd = raw_unix(fx.sock);
    const char *old = "GET /Info HTTP/1.0\r\n\r\n";
    raw_send(fd, old, strlen(old));
    raw_read_until_eof(fd, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    close(fd);
}

struct flood {
    int fd;
    size_t count;
};

static void *flood_writer(void *arg)
{
    struct flood *f = arg;
    const char *req = "GET /prpc/Info HTTP/1.1\r\n\r\n";
    size_t n = strlen(req);
    char *buf = malloc(n * f->count);
    for (size_t i = 0; i < f->count; i++) {
        memcpy(buf + i * n, req, n);
    }
    raw_send(f->fd, buf, n * f->count);
    free(buf);
    return NULL;
}

static void test_pipeline_flood(void **state)
{
    /* A deferred call first, then far more pipelined requests than the read cap, from a client
     * that does not read for a while: the server pauses reading and writing, nothing is lost. */
    struct flood f = {.fd = raw_tcp(fx.tcp_port), .count = 40000};
    const char *d = "GET /prpc/Defer?ms=300 HTTP/1.1\r\n\r\n";
    raw_send(f.fd, d, strlen(d));
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, flood_writer, &f), 0);
    usleep(800 * 1000);
    const char *want = "HTTP/1.1 200 OK\r\n";
    size_t seen = 0, matched = 0, total = 0;
    char buf[65536];
    long deadline = now_ms() + 20000;
    while (seen < f.count + 1 && now_ms() < deadline) {
        struct pollfd p = {.fd = f.fd, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0) {
            continue;
        }
        ssize_t r = recv(f.fd, buf, sizeof(buf), 0);
        assert_true(r > 0);
        for (ssize_t i = 0; i < r; i++) {
            /* count status lines with a tiny matcher that survives buffer boundaries */
            matched = buf[i] == want[matched] ? matched + 1 : (buf[i] == want[0] ? 1 : 0);
            if (matched == strlen(want)) {
                seen++;
                matched = 0;
            }
        }
        total += (size_t)r;
    }
    pthread_join(t, NULL);
    assert_int_equal(seen, f.count + 1);
    assert_true(total > f.count * 60);
    close(f.fd);
}

static void test_connection_limit(void **state)
{
    int a = raw_tcp(fx.small_port);
    int b = raw_tcp(fx.small_port);
    usleep(100 * 1000);
    int c = raw_tcp(fx.small_port);
    char buf[1024];
    bool eof;
    raw_read_until_eof(c, buf, sizeof(buf), 3000, &eof);
    assert_true(eof);
    assert_int_equal(strncmp(buf, "HTTP/1.1 503 Service Unavailable\r\n", 34), 0);
    assert_string_equal(body_of(buf), "{\n  \"error\": \"too many connections\"\n}");
    close(c);
    /* The two admitted connections still work. */
    const char *req = "GET /prpc/Info HTTP/1.1\r\n\r\n";
    raw_send(a, req, strlen(req));
    assert_true(raw_read_response(a, buf, sizeof(buf), 3000) > 0);
    assert_int_equal(strncmp(buf, "HTTP/1.1 200 OK\r\n", 17), 0);
    close(a);
    close(b);
}

static void test_listen_errors(void **state)
{
    struct event_base *base = event_base_new();
    struct ds_rpc_server *s = NULL;
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    lim.header_size_max = 0;
    assert_int_equal(ds_rpc_server_new(base, &lim, &s), -EINVAL);
    assert_int_equal(ds_rpc_server_new(NULL, NULL, &s), -EINVAL);
    assert_int_equal(ds_rpc_server_new(base, NULL, &s), 0);
    char path[160];
    snprintf(path, sizeof(path), "%s/regular-file", fx.dir);
    assert_int_equal(ds_write_file_atomic(path, "x", 1, 0600), 0);
    assert_int_equal(ds_rpc_server_listen_unix(s, path, 0600, &unix_site), -EEXIST);
    unlink(path);
    char longp[200];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[0] = '/';
    longp[sizeof(longp) - 1] = 0;
    assert_int_equal(ds_rpc_server_listen_unix(s, longp, 0600, &unix_site), -ENAMETOOLONG);
    assert_int_equal(ds_rpc_server_listen_tcp(s, "not-an-ip", 0, &tcp_site, NULL, NULL), -EINVAL);
    assert_int_equal(ds_rpc_server_listen_tcp(s, "127.0.0.1", fx.tcp_port, &tcp_site, NULL, NULL),
                     -EADDRINUSE);
    uint16_t p6 = 0;
    int r = ds_rpc_server_listen_tcp(s, "::1", 0, &tcp_site, NULL, &p6);
    assert_true(r == 0 || r == -EADDRNOTAVAIL || r == -EAFNOSUPPORT);
    /* An inherited listening socket (socket activation). */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(listen(fd, 8), 0);
    assert_int_equal(ds_rpc_server_listen_fd(s, fd, &tcp_site, NULL), 0);
    assert_int_equal(ds_rpc_server_listen_fd(s, -1, &tcp_site, NULL), -EINVAL);
    assert_int_equal(ds_rpc_server_connection_count(s), 0);
    ds_rpc_server_free(s);
    ds_rpc_server_free(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_head_parse),       cmocka_unit_test(test_chunked),
        cmocka_unit_test(test_query_decode),     cmocka_unit_test(test_decode_input),
        cmocka_unit_test(test_params_decode),    cmocka_unit_test(test_post_and_get_unix),
        cmocka_unit_test(test_post_and_get_tcp), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_ascii_json),       cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_header_limits),    cmocka_unit_test(test_slow_client),
        cmocka_unit_test(test_half_close),       cmocka_unit_test(test_tls),
        cmocka_unit_test(test_deferred),         cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_pipeline_flood),   cmocka_unit_test(test_connection_limit),
        cmocka_unit_test(test_listen_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
