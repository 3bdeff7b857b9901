/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON pRPC client for the VMM (and a KMS) over libcurl, and the argv helpers of the VMM
 * subcommands. See vmm_client.h for where the VMM is found and how requests are authorised.
 * Every answer is read into a bounded buffer (VMM_RESPONSE_MAX) and parsed with jansson
 * (duplicate keys rejected); the log stream of `dstack logs` is passed through unbuffered.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

#include "cli.h"
#include "dstack/base.h"
#include "vmm_client.h"

#define VMM_ERR_BODY_MAX 4096 /* bytes of a failed streamed answer kept for the message */

static void errf(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static bool curl_ready(void)
{
    static bool done; /* the CLI is single-threaded; libcurl wants one global init */
    if (!done) {
        done = curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK;
    }
    return done;
}

/* Copy an http(s) URL into c->base without trailing slashes (and without strip_suffix). */
static int set_base(struct vmm_client *c, const char *url, const char *strip_suffix)
{
    size_t scheme = strncmp(url, "http://", 7) == 0 ? 7 : strncmp(url, "https://", 8) == 0 ? 8 : 0;
    if (scheme == 0) {
        return -1;
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') {
        n--;
    }
    size_t sl = strip_suffix ? strlen(strip_suffix) : 0;
    if (sl > 0 && n >= sl && memcmp(url + n - sl, strip_suffix, sl) == 0) {
        n -= sl;
    }
    /* A host must follow the scheme; no query or fragment (paths are appended). */
    if (n >= sizeof(c->base) || n <= scheme || url[scheme] == '/' || memchr(url, '?', n) ||
        memchr(url, '#', n)) {
        return -1;
    }
    memcpy(c->base, url, n);
    c->base[n] = '\0';
    return 0;
}

static int set_auth(struct vmm_client *c, const char *prog, const char *token)
{
    const char *user = getenv("DSTACK_VMM_AUTH_USER");
    const char *pass = getenv("DSTACK_VMM_AUTH_PASSWORD");
    const char *tsrc = "--token";
    if (token == NULL) {
        token = getenv("DSTACK_VMM_TOKEN");
        tsrc = "DSTACK_VMM_TOKEN";
    }
    if (token != NULL && token[0] != '\0') {
        if (strlen(token) > VMM_TOKEN_MAX || strpbrk(token, "\r\n") != NULL) {
            cli_errx("%s: %s: expected a token of at most %d printable characters", prog, tsrc,
                     VMM_TOKEN_MAX);
            return CLI_EXIT_USAGE;
        }
        size_t n = strlen("Authorization: Bearer ") + strlen(token) + 1;
        c->auth_header = malloc(n);
        if (c->auth_header == NULL) {
            return CLI_EXIT_FAIL;
        }
        snprintf(c->auth_header, n, "Authorization: Bearer %s", token);
        return 0;
    }
    if (user != NULL && user[0] != '\0') {
        if (pass == NULL || strlen(user) > VMM_TOKEN_MAX || strlen(pass) > VMM_TOKEN_MAX ||
            strchr(user, ':') != NULL) {
            cli_errx("%s: DSTACK_VMM_AUTH_USER/DSTACK_VMM_AUTH_PASSWORD: expected a user name "
                     "without ':' and a password (both set)",
                     prog);
            return CLI_EXIT_USAGE;
        }
        size_t cl = strlen(user) + 1 + strlen(pass);
        char *cred = malloc(cl + 1);
        if (cred == NULL) {
            return CLI_EXIT_FAIL;
        }
        snprintf(cred, cl + 1, "%s:%s", user, pass);
        char *b64 = ds_base64_encode(cred, cl);
        ds_wipe(cred, cl);
        free(cred);
        if (b64 == NULL) {
            return CLI_EXIT_FAIL;
        }
        size_t n = strlen("Authorization: Basic ") + strlen(b64) + 1;
        c->auth_header = malloc(n);
        if (c->auth_header != NULL) {
            snprintf(c->auth_header, n, "Authorization: Basic %s", b64);
        }
        ds_wipe(b64, strlen(b64));
        free(b64);
        return c->auth_header ? 0 : CLI_EXIT_FAIL;
    }
    return 0;
}

int vmm_client_init(struct vmm_client *c, const char *prog, const char *url, const char *token)
{
    const char *src = "--url";
    memset(c, 0, sizeof(*c));
    c->what = "VMM";
    if (url == NULL) {
        url = getenv("DSTACK_VMM_URL");
        src = "DSTACK_VMM_URL";
        if (url == NULL || url[0] == '\0') {
            url = VMM_DEFAULT_URL;
        }
    }
    if (strncmp(url, "unix:", 5) == 0) {
        const char *path = url + 5;
        if (strncmp(path, "//", 2) == 0) {
            path += 2; /* unix:///run/x.sock */
        }
        if (path[0] != '/' || strlen(path) >= 108) {
            cli_errx("%s: %s: expected unix:/absolute/socket/path (under 108 bytes), got '%s'",
                     prog, src, url);
            return CLI_EXIT_USAGE;
        }
        c->unix_path = strdup(path);
        snprintf(c->base, sizeof(c->base), "http://localhost");
        if (c->unix_path == NULL) {
            return CLI_EXIT_FAIL;
        }
    } else if (set_base(c, url, NULL) != 0) {
        cli_errx("%s: %s: expected http(s)://HOST:PORT or unix:/PATH, got '%s'", prog, src, url);
        return CLI_EXIT_USAGE;
    }
    int r = set_auth(c, prog, token);
    if (r != 0) {
        vmm_client_done(c);
    }
    return r;
}

int vmm_client_init_kms(struct vmm_client *c, const char *prog, const char *url)
{
    memset(c, 0, sizeof(*c));
    c->what = "KMS";
    c->insecure_tls = true;
    if (set_base(c, url, "/prpc") != 0) {
        cli_errx("%s: --kms-url: expected http(s)://HOST:PORT, got '%s'", prog, url);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

void vmm_client_done(struct vmm_client *c)
{
    free(c->unix_path);
    if (c->auth_header != NULL) {
        ds_wipe(c->auth_header, strlen(c->auth_header));
        free(c->auth_header);
    }
    memset(c, 0, sizeof(*c));
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct ds_buf *b = ud;
    size_t n = size * nmemb;
    return ds_buf_append(b, p, n) < 0 ? 0 : n;
}

/* (For unix: URLs libcurl's own message names "localhost port 80"; the generic text is used.) */

/* A configured easy handle for url (common options: timeouts, auth, socket, TLS). */
static CURL *make_handle(const struct vmm_client *c, const char *url, struct curl_slist *hdrs,
                         char *curl_err)
{
    CURL *h = curl_easy_init();
    if (h == NULL) {
        return NULL;
    }
    bool ok = curl_easy_setopt(h, CURLOPT_URL, url) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, VMM_CONNECT_TIMEOUT) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_USERAGENT, "dstack/" DS_VERSION) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err) == CURLE_OK &&
              curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) == CURLE_OK;
    if (ok && c->unix_path != NULL) {
        ok = curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, c->unix_path) == CURLE_OK;
    }
    if (ok && c->insecure_tls) {
        ok = curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L) == CURLE_OK &&
             curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L) == CURLE_OK;
    }
    if (!ok) {
        curl_easy_cleanup(h);
        return NULL;
    }
    return h;
}

static struct curl_slist *make_headers(const struct vmm_client *c, bool json_body)
{
    struct curl_slist *h = NULL, *t;
    if (json_body) {
        h = curl_slist_append(h, "Content-Type: application/json");
        if (h == NULL) {
            return NULL;
        }
    }
    if (c->auth_header != NULL) {
        t = curl_slist_append(h, c->auth_header);
        if (t == NULL) {
            curl_slist_free_all(h);
            return NULL;
        }
        h = t;
    }
    t = curl_slist_append(h, "Expect:");
    if (t == NULL) {
        curl_slist_free_all(h);
        return NULL;
    }
    return t;
}

/* The message for a non-200 answer: the pRPC {"error": ...} text, else the status and body. */
static int status_error(long status, const struct ds_buf *body, char *err, size_t err_size)
{
    json_t *j = json_loadb((const char *)body->data, body->len, JSON_REJECT_DUPLICATES, NULL);
    const json_t *e = json_is_object(j) ? json_object_get(j, "error") : NULL;
    int r = status == 401 || status == 403 ? -DS_E_DENIED : -DS_E_PROTOCOL;
    if (status == 404) {
        r = -DS_E_NOT_FOUND;
    }
    if (json_is_string(e)) {
        errf(err, err_size, "%s", json_string_value(e));
    } else {
        /* Not pRPC's JSON error: show the first line of the body (text only). */
        size_t n = 0;
        while (n < body->len && n < 200 && body->data[n] >= 0x20 && body->data[n] < 0x7f) {
            n++;
        }
        if (status == 401 || status == 403) {
            errf(err, err_size, "HTTP %ld: unauthorized (check --token / DSTACK_VMM_TOKEN)%s%.*s",
                 status, n ? ": " : "", (int)n, (const char *)body->data);
        } else {
            errf(err, err_size, "HTTP %ld%s%.*s", status, n ? ": " : "", (int)n,
                 (const char *)body->data);
        }
    }
    json_decref(j);
    return r;
}

int vmm_call(struct vmm_client *c, const char *method, json_t *req, json_t **out, char *err,
             size_t err_size)
{
    char url[VMM_URL_MAX + 128], curl_err[CURL_ERROR_SIZE] = "";
    struct ds_buf resp;
    struct curl_slist *hdrs = NULL;
    CURL *h = NULL;
    char *body = NULL;
    json_t *j = NULL;
    long status = 0;
    int r = -ENOMEM;
    ds_buf_init(&resp, VMM_RESPONSE_MAX);
    err[0] = '\0';
    if (!curl_ready()) {
        errf(err, err_size, "cannot initialise libcurl");
        goto out;
    }
    if (method[0] == '/') { /* a full path, e.g. "/guest/GetQuote" (ProxiedGuestApi) */
        snprintf(url, sizeof(url), "%s%s?json", c->base, method);
    } else {
        snprintf(url, sizeof(url), "%s/prpc/%s?json", c->base, method);
    }
    body = req ? json_dumps(req, JSON_COMPACT) : strdup("{}");
    hdrs = make_headers(c, true);
    if (body == NULL || hdrs == NULL || (h = make_handle(c, url, hdrs, curl_err)) == NULL ||
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, VMM_CALL_TIMEOUT) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp) != CURLE_OK) {
        errf(err, err_size, "cannot set up the request");
        goto out;
    }
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        r = -DS_E_NETWORK;
        if (cc == CURLE_WRITE_ERROR) {
            errf(err, err_size, "answer larger than %u bytes", VMM_RESPONSE_MAX);
            r = -DS_E_LIMIT;
        } else {
            errf(err, err_size, "cannot reach the %s at %s%s: %s", c->what,
                 c->unix_path ? "unix:" : c->base, c->unix_path ? c->unix_path : "",
                 curl_err[0] && !c->unix_path ? curl_err : curl_easy_strerror(cc));
        }
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        r = status_error(status, &resp, err, err_size);
        goto out;
    }
    if (resp.len == 0) {
        j = json_object(); /* Empty answers may come as an empty body */
    } else {
        json_error_t je;
        j = json_loadb((const char *)resp.data, resp.len, JSON_REJECT_DUPLICATES, &je);
        if (!json_is_object(j)) {
            errf(err, err_size, "the %s answered with invalid JSON (%s)", c->what,
                 j ? "not an object" : je.text);
            r = -DS_E_PROTOCOL;
            goto out;
        }
    }
    if (j == NULL) {
        goto out;
    }
    *out = j;
    j = NULL;
    r = 0;
out:
    json_decref(j);
    free(body);
    curl_slist_free_all(hdrs);
    if (h != NULL) {
        curl_easy_cleanup(h);
    }
    ds_buf_done(&resp);
    return r;
}

struct stream_ctx {
    CURL *h;
    vmm_sink_fn sink;
    void *ctx;
    bool checked, ok, stopped;
    struct ds_buf errbody;
};

static size_t on_stream(char *p, size_t size, size_t nmemb, void *ud)
{
    struct stream_ctx *s = ud;
    size_t n = size * nmemb;
    if (!s->checked) {
        long status = 0;
        curl_easy_getinfo(s->h, CURLINFO_RESPONSE_CODE, &status);
        s->ok = status == 200;
        s->checked = true;
    }
    if (!s->ok) {
        /* Keep the head of an error body for the message; drop the rest. */
        size_t room = s->errbody.max - s->errbody.len;
        if (ds_buf_append(&s->errbody, p, n < room ? n : room) < 0) {
            return 0;
        }
        return n;
    }
    if (!s->sink(p, n, s->ctx)) {
        s->stopped = true;
        return 0;
    }
    return n;
}

int vmm_get_stream(struct vmm_client *c, const char *path_query, vmm_sink_fn sink, void *ctx,
                   char *err, size_t err_size)
{
    char url[VMM_URL_MAX + 1024], curl_err[CURL_ERROR_SIZE] = "";
    struct stream_ctx s = {.sink = sink, .ctx = ctx};
    struct curl_slist *hdrs = NULL;
    int r = -ENOMEM;
    ds_buf_init(&s.errbody, VMM_ERR_BODY_MAX);
    err[0] = '\0';
    if (!curl_ready()) {
        errf(err, err_size, "cannot initialise libcurl");
        goto out;
    }
    if (strlen(c->base) + strlen(path_query) >= sizeof(url)) {
        errf(err, err_size, "URL too long");
        r = -DS_E_LIMIT;
        goto out;
    }
    size_t bl = strlen(c->base), pl = strlen(path_query);
    memcpy(url, c->base, bl);
    memcpy(url + bl, path_query, pl + 1);
    hdrs = make_headers(c, false);
    if (hdrs == NULL || (s.h = make_handle(c, url, hdrs, curl_err)) == NULL ||
        curl_easy_setopt(s.h, CURLOPT_WRITEFUNCTION, on_stream) != CURLE_OK ||
        curl_easy_setopt(s.h, CURLOPT_WRITEDATA, &s) != CURLE_OK) {
        errf(err, err_size, "cannot set up the request");
        goto out;
    }
    CURLcode cc = curl_easy_perform(s.h);
    long status = 0;
    curl_easy_getinfo(s.h, CURLINFO_RESPONSE_CODE, &status);
    if (cc != CURLE_OK && !s.stopped) {
        if (status != 0 && status != 200) {
            r = status_error(status, &s.errbody, err, err_size);
        } else {
            errf(err, err_size, "cannot reach the %s at %s%s: %s", c->what,
                 c->unix_path ? "unix:" : c->base, c->unix_path ? c->unix_path : "",
                 curl_err[0] && !c->unix_path ? curl_err : curl_easy_strerror(cc));
            r = -DS_E_NETWORK;
        }
        goto out;
    }
    if (status != 200) {
        r = status_error(status, &s.errbody, err, err_size);
        goto out;
    }
    r = 0;
out:
    curl_slist_free_all(hdrs);
    if (s.h != NULL) {
        curl_easy_cleanup(s.h);
    }
    ds_buf_done(&s.errbody);
    return r;
}

int vmm_report(const char *prog, const char *method, const char *err)
{
    cli_errx("%s: %s: %s", prog, method, err[0] ? err : "failed");
    return CLI_EXIT_FAIL;
}

const char *vmm_json_str(const json_t *o, const char *key)
{
    const json_t *v = json_is_object(o) ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : "";
}

/* ---- argv helpers -------------------------------------------------------------------------- */

int vmm_take_multi(const char *prog, int *argc, char **argv, struct vmm_multi *multi,
                   size_t multi_count, const char *const *aliases)
{
    int w = 0;
    bool rest = false;
    for (int i = 0; i < *argc; i++) {
        char *a = argv[i];
        if (rest || strcmp(a, "--") == 0) {
            rest = true;
            argv[w++] = a;
            continue;
        }
        if (aliases != NULL) {
            for (size_t k = 0; aliases[k] != NULL; k += 2) {
                if (strcmp(a, aliases[k]) == 0) {
                    a = (char *)aliases[k + 1];
                    break;
                }
            }
        }
        struct vmm_multi *m = NULL;
        const char *val = NULL;
        if (strncmp(a, "--", 2) == 0) {
            const char *name = a + 2;
            const char *eq = strchr(name, '=');
            size_t nl = eq ? (size_t)(eq - name) : strlen(name);
            for (size_t k = 0; k < multi_count; k++) {
                if (strlen(multi[k].name) == nl && memcmp(multi[k].name, name, nl) == 0) {
                    m = &multi[k];
                    val = eq ? eq + 1 : NULL;
                    break;
                }
            }
        }
        if (m == NULL) {
            argv[w++] = a;
            continue;
        }
        if (val == NULL) {
            if (i + 1 >= *argc) {
                cli_errx("%s: --%s: expected %s, got nothing", prog, m->name, m->metavar);
                return CLI_EXIT_USAGE;
            }
            val = argv[++i];
        }
        if (val[0] == '\0') {
            cli_errx("%s: --%s: expected %s, got an empty string", prog, m->name, m->metavar);
            return CLI_EXIT_USAGE;
        }
        if (m->count >= VMM_MULTI_MAX) {
            cli_errx("%s: --%s: given more than %d times", prog, m->name, VMM_MULTI_MAX);
            return CLI_EXIT_USAGE;
        }
        m->values[m->count++] = val;
    }
    *argc = w;
    return 0;
}
