/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Authorization (spec kms-ratls.md §2.2, §5.1-5.2): three backends behind one call.
 *   dev      everything allowed, gateway_app_id from the configuration;
 *   webhook  POST {url}/bootAuth/app or /bootAuth/kms with the BootInfo JSON, GET {url}/ for
 *            GetMeta; any transport error, non-2xx status or malformed reply fails closed;
 *   policy   the auth-simple JSON file evaluated in process (lib/kms/policy.c), re-read when
 *            its size, mtime or inode changes; a missing or invalid file means the all-default
 *            policy, which denies everything (as auth-simple does).
 * The self-authorization gate asks the backend about this KMS's own BootInfo on every trusted
 * call (no decision cache, as upstream).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <curl/curl.h>

#include "kms.h"
#include "log.h"

#define HTTP_TIMEOUT_MS 10000
#define HTTP_CONNECT_MS 5000
#define WEBHOOK_URL_MAX 2048
#define USER_AGENT      "dstack-kms/" KMS_VERSION

struct sink {
    struct ds_buf buf;
    bool over;
};

static size_t on_data(char *p, size_t size, size_t nmemb, void *arg)
{
    struct sink *s = arg;
    size_t n = size * nmemb;
    if (ds_buf_append(&s->buf, p, n) < 0) {
        s->over = true;
        return 0;
    }
    return n;
}

int kms_http(const char *url, const char *content_type, const void *body, size_t body_len,
             size_t max, long *out_status, uint8_t **out, size_t *out_len, char *err, size_t n)
{
    struct sink s = {0};
    struct curl_slist *hdrs = NULL;
    char ct[128];
    ds_buf_init(&s.buf, max);
    CURL *c = curl_easy_init();
    if (!c) {
        return -ENOMEM;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_USERAGENT, USER_AGENT);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)HTTP_CONNECT_MS);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &s);
    if (body) {
        snprintf(ct, sizeof(ct), "Content-Type: %s",
                 content_type ? content_type : "application/json");
        hdrs = curl_slist_append(hdrs, ct);
        curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(c, CURLOPT_POST, 1L);
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)body_len);
    }
    CURLcode cr = curl_easy_perform(c);
    int r = 0;
    if (s.over) {
        snprintf(err, n, "response larger than %zu bytes", max);
        r = -DS_E_LIMIT;
    } else if (cr != CURLE_OK) {
        snprintf(err, n, "%s", curl_easy_strerror(cr));
        r = -DS_E_NETWORK;
    }
    if (r == 0) {
        long status = 0;
        curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
        r = ds_buf_u8(&s.buf, 0);
        if (r == 0) {
            *out_status = status;
            ds_buf_steal(&s.buf, out, out_len);
            (*out_len)--;
        }
    }
    ds_buf_done(&s.buf);
    curl_slist_free_all(hdrs);
    curl_easy_cleanup(c);
    return r;
}

const char *kms_auth_name(enum kms_auth_type t)
{
    switch (t) {
    case KMS_AUTH_DEV:
        return "dev";
    case KMS_AUTH_WEBHOOK:
        return "webhook";
    case KMS_AUTH_POLICY:
        return "policy";
    }
    return "?";
}

/* {url}/path with exactly one '/' between them. */
static int webhook_url(const struct kms *k, const char *path, char *out, size_t size)
{
    const char *u = k->cfg.webhook_url;
    size_t n = strlen(u);
    int w = snprintf(out, size, "%s%s%s", u, n && u[n - 1] == '/' ? "" : "/", path);
    return w < 0 || (size_t)w >= size ? -ENAMETOOLONG : 0;
}

static int webhook_check(struct kms *k, enum ds_kms_boot_kind kind,
                         const struct ds_kms_boot_info *bi, struct ds_kms_decision *out, char *err,
                         size_t n)
{
    char url[WEBHOOK_URL_MAX], perr[KMS_ERR_MAX] = "";
    json_t *body = NULL;
    char *text = NULL;
    uint8_t *resp = NULL;
    size_t resp_len = 0;
    long status = 0;
    int r =
        webhook_url(k, kind == DS_KMS_BOOT_KMS ? "bootAuth/kms" : "bootAuth/app", url, sizeof(url));
    if (r == 0) {
        r = ds_kms_boot_info_to_json(bi, &body);
    }
    if (r == 0) {
        text = json_dumps(body, JSON_COMPACT);
        r = text ? 0 : -ENOMEM;
    }
    if (r == 0) {
        r = kms_http(url, "application/json", text, strlen(text), DS_KMS_WEBHOOK_BODY_MAX, &status,
                     &resp, &resp_len, perr, sizeof(perr));
        if (r < 0) {
            snprintf(err, n, "auth webhook request failed: %s", perr);
        }
    }
    if (r == 0 && (status < 200 || status > 299)) {
        snprintf(err, n, "auth webhook answered HTTP %ld", status);
        r = -DS_E_PROTOCOL;
    }
    if (r == 0) {
        r = ds_kms_decision_parse((const char *)resp, resp_len, out, perr, sizeof(perr));
        if (r < 0) {
            snprintf(err, n, "invalid auth webhook reply: %s", perr);
        }
    }
    free(resp);
    free(text);
    json_decref(body);
    return r;
}

/* Reload the policy file when it changed; a missing or bad file gives the default policy. */
static int policy_current(struct kms *k, const struct ds_kms_policy **out)
{
    struct stat st;
    const char *path = k->cfg.policy_file;
    bool exists = stat(path, &st) == 0;
    if (k->policy_loaded && exists && st.st_size == k->policy_st.st_size &&
        st.st_mtim.tv_sec == k->policy_st.st_mtim.tv_sec &&
        st.st_mtim.tv_nsec == k->policy_st.st_mtim.tv_nsec && st.st_ino == k->policy_st.st_ino) {
        *out = k->policy;
        return 0;
    }
    struct ds_kms_policy *p = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    char err[KMS_ERR_MAX] = "";
    int r = exists ? ds_read_file(path, DS_KMS_POLICY_FILE_MAX, &data, &len) : -ENOENT;
    if (r == 0) {
        r = ds_kms_policy_parse((const char *)data, len, &p, err, sizeof(err));
    }
    free(data);
    if (r < 0) {
        log_warnx("policy \"%s\" unusable (%s%s%s): using the default policy, which denies", path,
                  ds_strerror(r), err[0] ? ": " : "", err);
        DS_TRY(ds_kms_policy_default(&p));
    } else {
        log_info("policy \"%s\" loaded", path);
    }
    ds_kms_policy_free(k->policy);
    k->policy = p;
    k->policy_loaded = exists;
    if (exists) {
        k->policy_st = st;
    }
    *out = p;
    return 0;
}

int kms_auth_check(struct kms *k, enum ds_kms_boot_kind kind, const struct ds_kms_boot_info *bi,
                   struct ds_kms_decision *out, char *err, size_t n)
{
    const struct ds_kms_policy *p = NULL;
    int r;
    switch (k->cfg.auth) {
    case KMS_AUTH_DEV:
        memset(out, 0, sizeof(*out));
        out->allowed = true;
        out->gateway_app_id = strdup(k->cfg.gateway_app_id ? k->cfg.gateway_app_id : "any");
        return out->gateway_app_id ? 0 : -ENOMEM;
    case KMS_AUTH_WEBHOOK:
        return webhook_check(k, kind, bi, out, err, n);
    case KMS_AUTH_POLICY:
        r = policy_current(k, &p);
        if (r == 0) {
            r = ds_kms_policy_check(p, kind, bi, out);
        }
        if (r < 0) {
            snprintf(err, n, "policy evaluation failed: %s", ds_strerror(r));
        }
        return r;
    }
    return -EINVAL;
}

int kms_auth_info(struct kms *k, struct ds_kms_auth_info *out, char *err, size_t n)
{
    const struct ds_kms_policy *p = NULL;
    char url[WEBHOOK_URL_MAX], perr[KMS_ERR_MAX] = "";
    uint8_t *resp = NULL;
    size_t len = 0;
    long status = 0;
    int r;
    memset(out, 0, sizeof(*out));
    switch (k->cfg.auth) {
    case KMS_AUTH_DEV:
        return 0; /* the caller fills dev values */
    case KMS_AUTH_POLICY:
        r = policy_current(k, &p);
        return r < 0 ? r : ds_kms_policy_info(p, out);
    case KMS_AUTH_WEBHOOK:
        break;
    }
    r = webhook_url(k, "", url, sizeof(url));
    if (r == 0) {
        r = kms_http(url, NULL, NULL, 0, DS_KMS_WEBHOOK_BODY_MAX, &status, &resp, &len, perr,
                     sizeof(perr));
        if (r < 0) {
            snprintf(err, n, "auth webhook request failed: %s", perr);
        }
    }
    if (r == 0 && (status < 200 || status > 299)) {
        snprintf(err, n, "auth webhook answered HTTP %ld", status);
        r = -DS_E_PROTOCOL;
    }
    if (r == 0) {
        r = ds_kms_auth_info_parse((const char *)resp, len, out, perr, sizeof(perr));
        if (r < 0) {
            snprintf(err, n, "invalid auth webhook info: %s", perr);
        }
    }
    free(resp);
    return r;
}

int kms_self_authorize(struct kms *k, struct ds_rpc_call *call)
{
    const struct ds_kms_boot_info *bi = NULL;
    struct ds_kms_decision d = {0};
    char err[KMS_ERR_MAX] = "";
    if (!k->cfg.enforce_self_authorization) {
        return 0;
    }
    int r = kms_self_boot_info(k, &bi, err, sizeof(err));
    if (r < 0) {
        return ds_rpc_call_error(call, "KMS self authorization failed: %s", err);
    }
    r = kms_auth_check(k, DS_KMS_BOOT_KMS, bi, &d, err, sizeof(err));
    if (r < 0) {
        log_warnx("self authorization: %s", err);
        return ds_rpc_call_error(call, "KMS self authorization failed: %s", err);
    }
    if (!d.allowed) {
        log_warnx("self authorization denied: %s", d.reason);
        r = ds_rpc_call_error(call, "KMS is not allowed: %s", d.reason);
    }
    ds_kms_decision_done(&d);
    return r;
}
