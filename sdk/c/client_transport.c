/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack-client transport: endpoint resolution (explicit endpoint, DSTACK_SIMULATOR_ENDPOINT,
 * then the default socket paths in the official SDKs' order), the client object, and one pRPC
 * call as HTTP: `POST /<Method>` with `Content-Type: application/json` (JSON mode, spec
 * guest-agent-api.md §2.2), over a Unix socket (CURLOPT_UNIX_SOCKET_PATH) or TCP. The curl
 * handle is kept in the client so keep-alive connections are reused.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "client_internal.h"

/* Default agent sockets, in the order the official SDKs probe them (spec §1). */
static const char *const default_sockets[] = {
    "/var/run/dstack.sock",
    "/run/dstack.sock",
    "/var/run/dstack/dstack.sock",
    "/run/dstack/dstack.sock",
};

#define ENDPOINT_ENV "DSTACK_SIMULATOR_ENDPOINT"

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int client_fail(struct dstack_client *c, int err, const char *fmt, ...)
{
    if (c != NULL) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->errmsg, sizeof(c->errmsg), fmt, ap);
        va_end(ap);
    }
    return err;
}

const char *dstack_strerror(int err)
{
    switch (err) {
    case DSTACK_OK:
        return "success";
    case DSTACK_ERR_ARG:
        return "invalid argument";
    case DSTACK_ERR_NOMEM:
        return "out of memory";
    case DSTACK_ERR_NO_ENDPOINT:
        return "no dstack agent endpoint";
    case DSTACK_ERR_TRANSPORT:
        return "cannot reach the dstack agent";
    case DSTACK_ERR_SERVER:
        return "the dstack agent returned an error";
    case DSTACK_ERR_PROTOCOL:
        return "malformed answer from the dstack agent";
    case DSTACK_ERR_TOO_LONG:
        return "report data is longer than 64 bytes";
    case DSTACK_ERR_UNSUPPORTED:
        return "not supported by this dstack agent version";
    default:
        return "unknown error";
    }
}

const char *dstack_client_endpoint(const struct dstack_client *client)
{
    return client != NULL && client->endpoint != NULL ? client->endpoint : "";
}

const char *dstack_client_errmsg(const struct dstack_client *client)
{
    return client != NULL ? client->errmsg : "";
}

static bool is_url(const char *s)
{
    return strncmp(s, "http://", 7) == 0 || strncmp(s, "https://", 8) == 0;
}

static bool path_exists(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0;
}

int dstack_client_new(const char *endpoint, struct dstack_client **out_client)
{
    struct dstack_client *c = NULL;
    int r;

    if (out_client == NULL) {
        return DSTACK_ERR_ARG;
    }
    if (endpoint == NULL) {
        const char *env = getenv(ENDPOINT_ENV);
        if (env != NULL && env[0] != '\0') {
            endpoint = env;
        } else {
            for (size_t i = 0; i < sizeof(default_sockets) / sizeof(default_sockets[0]); i++) {
                if (path_exists(default_sockets[i])) {
                    endpoint = default_sockets[i];
                    break;
                }
            }
            if (endpoint == NULL) {
                return DSTACK_ERR_NO_ENDPOINT;
            }
        }
    }
    if (strncmp(endpoint, "unix:", 5) == 0) {
        endpoint += 5;
    }
    if (endpoint[0] == '\0') {
        return DSTACK_ERR_ARG;
    }
    pthread_once(&curl_once, curl_init_once);
    if (curl_init_result != CURLE_OK) {
        return DSTACK_ERR_TRANSPORT;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return DSTACK_ERR_NOMEM;
    }
    c->endpoint = strdup(endpoint);
    if (c->endpoint == NULL) {
        r = DSTACK_ERR_NOMEM;
        goto out;
    }
    if (is_url(endpoint)) {
        c->base_url = strdup(endpoint);
        if (c->base_url == NULL) {
            r = DSTACK_ERR_NOMEM;
            goto out;
        }
        size_t n = strlen(c->base_url);
        while (n > 0 && c->base_url[n - 1] == '/') {
            c->base_url[--n] = '\0';
        }
    } else {
        /* The JS and Python SDKs refuse a socket path that does not exist. */
        if (!path_exists(endpoint)) {
            r = DSTACK_ERR_NO_ENDPOINT;
            goto out;
        }
        c->socket_path = strdup(endpoint);
        c->base_url = strdup("http://localhost");
        if (c->socket_path == NULL || c->base_url == NULL) {
            r = DSTACK_ERR_NOMEM;
            goto out;
        }
    }
    c->curl = curl_easy_init();
    if (c->curl == NULL) {
        r = DSTACK_ERR_TRANSPORT;
        goto out;
    }
    *out_client = c;
    c = NULL;
    r = 0;
out:
    dstack_client_free(c);
    return r;
}

void dstack_client_free(struct dstack_client *client)
{
    if (client == NULL) {
        return;
    }
    if (client->curl != NULL) {
        curl_easy_cleanup(client->curl);
    }
    free(client->endpoint);
    free(client->socket_path);
    free(client->base_url);
    free(client);
}

/* Response body accumulator with a hard maximum. */
struct body {
    char *data;
    size_t len;
    size_t cap;
    bool too_big;
};

static size_t body_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct body *b = userdata;
    size_t n = size * nmemb;
    if (n > DSTACK_RESPONSE_MAX - b->len) {
        b->too_big = true;
        return 0;
    }
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap == 0 ? 4096 : b->cap;
        while (ncap < b->len + n + 1) {
            ncap *= 2;
        }
        char *p = realloc(b->data, ncap);
        if (p == NULL) {
            return 0;
        }
        b->data = p;
        b->cap = ncap;
    }
    memcpy(b->data + b->len, ptr, n);
    b->len += n;
    b->data[b->len] = '\0';
    return n;
}

int client_call(struct dstack_client *c, const char *method, json_t *request, long timeout_ms,
                json_t **out_response)
{
    CURL *h = c->curl;
    struct curl_slist *headers = NULL;
    struct body body = {0};
    char *payload = NULL;
    char *url = NULL;
    json_t *resp = NULL;
    json_error_t jerr;
    long status = 0;
    int r;

    c->errmsg[0] = '\0';
    payload = request != NULL ? json_dumps(request, JSON_COMPACT) : strdup("{}");
    if (payload == NULL) {
        r = client_fail(c, DSTACK_ERR_NOMEM, "cannot encode the request");
        goto out;
    }
    size_t url_len = strlen(c->base_url) + 1 + strlen(method) + 1;
    url = malloc(url_len);
    if (url == NULL) {
        r = client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    snprintf(url, url_len, "%s/%s", c->base_url, method);
    headers = curl_slist_append(NULL, "Content-Type: application/json");
    if (headers == NULL) {
        r = client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    /* curl would otherwise wait for "100 Continue" on bodies over 1 KiB. */
    struct curl_slist *h2 = curl_slist_append(headers, "Expect:");
    if (h2 == NULL) {
        r = client_fail(c, DSTACK_ERR_NOMEM, "out of memory");
        goto out;
    }
    headers = h2;

    curl_easy_reset(h);
    curl_easy_setopt(h, CURLOPT_URL, url);
    if (c->socket_path != NULL) {
        curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->socket_path);
    }
    curl_easy_setopt(h, CURLOPT_POST, 1L);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, payload);
    curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(payload));
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, body_write);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms > 0 ? timeout_ms : (long)DSTACK_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_USERAGENT, "dstack-sdk-c/" DSTACK_CLIENT_VERSION);

    CURLcode cr = curl_easy_perform(h);
    if (cr != CURLE_OK) {
        if (body.too_big) {
            r = client_fail(c, DSTACK_ERR_PROTOCOL, "%s: response larger than %u bytes", method,
                            DSTACK_RESPONSE_MAX);
        } else {
            r = client_fail(c, DSTACK_ERR_TRANSPORT, "%s: %s (%s)", method, curl_easy_strerror(cr),
                            c->endpoint);
        }
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    resp = body.data != NULL ? json_loadb(body.data, body.len, JSON_DECODE_ANY, &jerr) : NULL;
    if (status != 200) {
        json_t *e = json_is_object(resp) ? json_object_get(resp, "error") : NULL;
        if (json_is_string(e)) {
            r = client_fail(c, DSTACK_ERR_SERVER, "%s", json_string_value(e));
        } else {
            r = client_fail(c, DSTACK_ERR_SERVER, "%s: HTTP status %ld", method, status);
        }
        goto out;
    }
    if (resp == NULL) {
        r = client_fail(c, DSTACK_ERR_PROTOCOL, "%s: response is not JSON", method);
        goto out;
    }
    if (json_is_object(resp) && json_is_string(json_object_get(resp, "error"))) {
        r = client_fail(c, DSTACK_ERR_SERVER, "%s",
                        json_string_value(json_object_get(resp, "error")));
        goto out;
    }
    *out_response = resp;
    resp = NULL;
    r = 0;
out:
    json_decref(resp);
    curl_slist_free_all(headers);
    free(body.data);
    free(payload);
    free(url);
    return r;
}

char *client_hex_encode(const void *data, size_t len)
{
    static const char digits[] = "0123456789abcdef";
    const uint8_t *p = data;
    if (len > (SIZE_MAX - 1) / 2) {
        return NULL;
    }
    char *s = malloc(2 * len + 1);
    if (s == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        s[2 * i] = digits[p[i] >> 4];
        s[2 * i + 1] = digits[p[i] & 15];
    }
    s[2 * len] = '\0';
    return s;
}

static int hex_nibble(char ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    return -1;
}

int client_hex_decode(const char *hex, struct dstack_bytes *out)
{
    if (strncmp(hex, "0x", 2) == 0) {
        hex += 2;
    }
    size_t n = strlen(hex);
    if (n % 2 != 0) {
        return DSTACK_ERR_PROTOCOL;
    }
    /* malloc(0) may return NULL; keep one byte so an empty result is still a buffer. */
    uint8_t *p = malloc(n / 2 + 1);
    if (p == NULL) {
        return DSTACK_ERR_NOMEM;
    }
    for (size_t i = 0; i < n / 2; i++) {
        int hi = hex_nibble(hex[2 * i]);
        int lo = hex_nibble(hex[2 * i + 1]);
        if (hi < 0 || lo < 0) {
            free(p);
            return DSTACK_ERR_PROTOCOL;
        }
        p[i] = (uint8_t)(hi << 4 | lo);
    }
    out->data = p;
    out->len = n / 2;
    return 0;
}
