/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's own identity from its guest agent (spec host-side.md §4.1, §4.2): the gateway
 * runs as an app in a CVM and asks the agent on core.agent_socket (libdstack-client, sdk/c)
 * for
 *   - the RA-TLS certificate of the RPC server (GetTlsKey, subject "dstack-gateway", alt names
 *     rpc_domain and the host of core.sync.my_url, RA-TLS + server + client auth, app info),
 *     written to the [tls] key / certs / mutual.ca_certs paths; with a KMS key provider the
 *     chain ends with the KMS root CA, which becomes the CA client certificates must chain to;
 *   - its own app id (Info), shown by Info / Status, and the Info JSON served at
 *     gateway.<base>/app-info (cached, refreshed every core.proxy.app_info_refresh);
 *   - with core.proxy.cert_source = "agent", the proxy's wildcard certificate for
 *     core.proxy.base_domain, renewed when a third of its validity is left; a failed renewal
 *     keeps the current certificate and retries with exponential backoff.
 * Agent calls after start-up run on the worker pool (gw_jobs.c), never on the event loop.
 * Private keys are wiped after use and never logged.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <dstack/client.h>
#include <event2/event.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "gw_ctl.h"
#include "log.h"

#define RENEW_MIN_S       1   /* never renew sooner than this after a load */
#define BACKOFF_INITIAL_S 1   /* first retry after a failed renewal */
#define BACKOFF_MAX_S     300 /* retries never wait longer */
#define HOST_MAX          256 /* host part of core.sync.my_url */
#define PEM_CHAIN_MAX     (256 * 1024)
#define RENEW_WAITERS_MAX 16 /* Admin RenewCert calls waiting for one renewal */

struct gw_agent {
    struct gw *g;
    pthread_mutex_t mu;
    char *info_json; /* guarded by mu; NULL until the first successful Info */
    /* loop thread only */
    struct event *renew_ev, *info_ev;
    bool renew_busy, info_busy;
    unsigned backoff_s;
    struct ds_rpc_call *waiters[RENEW_WAITERS_MAX]; /* Admin RenewCert, answered when done */
    size_t waiter_count;
};

/* A job's view of one agent call (owned by the job, filled on the worker). */
struct agent_job {
    struct gw_agent *a;
    char *socket;
    char *domain;
    uint64_t validity_ms;
    char *chain_pem;      /* renewal result */
    struct ds_buf key;    /* renewal result (secret) */
    char *info_json;      /* Info result */
    char err[GW_ERR_MAX]; /* failure reason */
};

bool gw_agent_needed(const struct gw_config *cfg)
{
    return (cfg->rpc_domain && cfg->rpc_domain[0]) ||
           (cfg->px_cert_source && strcmp(cfg->px_cert_source, "agent") == 0);
}

/* ---- blocking agent calls (start-up and worker threads) ------------------------------------ */

static int agent_open(const char *sock, struct dstack_client **out, char *err, size_t err_size)
{
    int r = dstack_client_new(sock, out);
    if (r < 0) {
        snprintf(err, err_size, "guest agent at core.agent_socket \"%s\": %s", sock,
                 r == DSTACK_ERR_NO_ENDPOINT ? "no such socket" : dstack_strerror(r));
        return -DS_E_NOT_FOUND;
    }
    return 0;
}

static void agent_fail(struct dstack_client *c, const char *what, int r, char *err, size_t err_size)
{
    const char *m = dstack_client_errmsg(c);
    snprintf(err, err_size, "guest agent at core.agent_socket \"%s\": %s failed: %s%s%s",
             dstack_client_endpoint(c), what, dstack_strerror(r), m[0] ? ": " : "", m);
}

/* GetTlsKey: the PEM key into *key (secret buffer) and the chain, leaf first, as one PEM text
 * into *chain; *ca (may be NULL) gets the last certificate of the chain. */
static int agent_tls_key(const char *sock, const struct dstack_tls_key_options *o,
                         struct ds_buf *key, char **chain, char **ca, char *err, size_t err_size)
{
    struct dstack_client *c = NULL;
    struct dstack_tls_key_result *t = NULL;
    struct ds_buf pem;
    int r = agent_open(sock, &c, err, err_size);
    ds_buf_init(&pem, PEM_CHAIN_MAX);
    if (r < 0) {
        goto out;
    }
    r = dstack_get_tls_key(c, o, &t);
    if (r < 0) {
        agent_fail(c, "GetTlsKey", r, err, err_size);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    if (t->certificate_chain_count == 0 || !t->key || !t->key[0]) {
        snprintf(err, err_size,
                 "guest agent at core.agent_socket \"%s\": GetTlsKey returned "
                 "no key or an empty certificate_chain",
                 sock);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    for (size_t i = 0; i < t->certificate_chain_count; i++) {
        const char *cert = t->certificate_chain[i];
        size_t n = strlen(cert);
        if ((r = ds_buf_append(&pem, cert, n)) < 0 ||
            (n && cert[n - 1] != '\n' && (r = ds_buf_append_str(&pem, "\n")) < 0)) {
            snprintf(err, err_size, "GetTlsKey: certificate chain too large");
            goto out;
        }
    }
    char *ca_copy = NULL;
    if (ca && !(ca_copy = strdup(t->certificate_chain[t->certificate_chain_count - 1]))) {
        r = -ENOMEM;
        goto out;
    }
    key->secret = true;
    if ((r = ds_buf_append_str(key, t->key)) < 0) {
        free(ca_copy);
        snprintf(err, err_size, "GetTlsKey: key too large");
        goto out;
    }
    *chain = strdup((const char *)pem.data);
    if (!*chain) {
        free(ca_copy);
        r = -ENOMEM;
        goto out;
    }
    if (ca) {
        *ca = ca_copy;
    }
    r = 0;
out:
    ds_buf_done(&pem);
    dstack_tls_key_result_free(t); /* wipes the key */
    dstack_client_free(c);
    return r;
}

/* Info as JSON text (the agent's fields, proto order) and the app id. */
static int agent_info(const char *sock, char **out_json, char app_id[GW_ID_MAX + 1], char *err,
                      size_t err_size)
{
    struct dstack_client *c = NULL;
    struct dstack_info_result *i = NULL;
    json_t *j = NULL;
    int r = agent_open(sock, &c, err, err_size);
    if (r < 0) {
        goto out;
    }
    r = dstack_info(c, &i);
    if (r < 0) {
        agent_fail(c, "Info", r, err, err_size);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    j = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "app_id",
                  i->app_id, "instance_id", i->instance_id, "app_cert", i->app_cert, "tcb_info",
                  i->tcb_info, "app_name", i->app_name, "device_id", i->device_id, "mr_aggregated",
                  i->mr_aggregated, "os_image_hash", i->os_image_hash, "key_provider_info",
                  i->key_provider_info, "compose_hash", i->compose_hash, "vm_config", i->vm_config,
                  "cloud_vendor", i->cloud_vendor, "cloud_product", i->cloud_product);
    char *text = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!text) {
        r = -ENOMEM;
        goto out;
    }
    if (strlen(text) > GW_APP_INFO_MAX) {
        snprintf(err, err_size,
                 "guest agent at core.agent_socket \"%s\": Info larger than %d bytes", sock,
                 GW_APP_INFO_MAX);
        free(text);
        r = -DS_E_LIMIT;
        goto out;
    }
    if (app_id) {
        if (!gw_hex_id_valid(i->app_id, GW_ID_MAX / 2)) {
            snprintf(err, err_size,
                     "guest agent at core.agent_socket \"%s\": Info app_id \"%.64s\" "
                     "is not hex of at most 20 bytes",
                     sock, i->app_id);
            free(text);
            r = -DS_E_FORMAT;
            goto out;
        }
        snprintf(app_id, GW_ID_MAX + 1, "%s", i->app_id);
    }
    *out_json = text;
    r = 0;
out:
    json_decref(j);
    dstack_info_result_free(i);
    dstack_client_free(c);
    return r;
}

/* The proxy certificate request: *.<base> and <base>, server auth, RA-TLS. */
static int agent_proxy_cert(const char *sock, const char *domain, uint64_t validity_ms,
                            struct ds_buf *key, char **chain, char *err, size_t err_size)
{
    char wild[GW_CERT_DOMAIN_MAX + 3];
    snprintf(wild, sizeof(wild), "*.%s", domain);
    const char *names[] = {wild, domain};
    struct dstack_tls_key_options o = DSTACK_TLS_KEY_OPTIONS_INIT;
    o.subject = wild;
    o.alt_names = names;
    o.alt_names_count = 2;
    o.usage_ra_tls = true;
    o.usage_server_auth = true;
    if (validity_ms) {
        uint64_t now = (uint64_t)time(NULL);
        o.has_not_before = o.has_not_after = true;
        o.not_before = now;
        o.not_after = now + (validity_ms + 999) / 1000;
    }
    return agent_tls_key(sock, &o, key, chain, NULL, err, err_size);
}

/* ---- start-up helpers ------------------------------------------------------------------------ */

/* The host of core.sync.my_url (libcurl's URL parser; IPv6 without brackets); "" when none. */
static void url_host(const char *url, char out[HOST_MAX])
{
    CURLU *u = curl_url();
    char *host = NULL;
    out[0] = '\0';
    if (u && url && url[0] && curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK) {
        size_t n = strlen(host);
        const char *h = host;
        if (n >= 2 && h[0] == '[' && h[n - 1] == ']') {
            h++;
            n -= 2;
        }
        if (n > 0 && n < HOST_MAX) {
            memcpy(out, h, n);
            out[n] = '\0';
        }
    }
    curl_free(host);
    curl_url_cleanup(u);
}

static int write_secret_file(const char *what, const char *path, const void *data, size_t len)
{
    int r = ds_write_file_atomic(path, data, len, 0600);
    if (r < 0) {
        log_warnx("%s \"%s\": cannot write: %s", what, path, ds_strerror(r));
    }
    return r;
}

/* §4.1: the RPC server's RA-TLS certificate into the [tls] files. */
static int rpc_certs(struct gw *g)
{
    const struct gw_config *c = &g->cfg;
    char host[HOST_MAX], err[GW_ERR_MAX] = "";
    const char *names[2] = {c->rpc_domain, NULL};
    struct ds_buf key;
    char *chain = NULL, *ca = NULL;
    ds_buf_init(&key, PEM_CHAIN_MAX);
    url_host(c->sync_my_url, host);
    struct dstack_tls_key_options o = DSTACK_TLS_KEY_OPTIONS_INIT;
    o.subject = GW_AGENT_CERT_SUBJECT;
    o.alt_names = names;
    o.alt_names_count = 1;
    if (host[0] && strcmp(host, c->rpc_domain) != 0) {
        names[1] = host;
        o.alt_names_count = 2;
    }
    o.usage_ra_tls = o.usage_server_auth = o.usage_client_auth = o.with_app_info = true;
    int r = agent_tls_key(c->agent_socket, &o, &key, &chain, &ca, err, sizeof(err));
    if (r < 0) {
        log_warnx("RPC certificate for core.rpc_domain \"%s\": %s", c->rpc_domain, err);
        goto out;
    }
    if ((r = write_secret_file("tls.key", c->tls_key, key.data, key.len)) < 0 ||
        (r = write_secret_file("tls.certs", c->tls_certs, chain, strlen(chain))) < 0 ||
        (r = write_secret_file("tls.mutual.ca_certs", c->tls_ca_certs, ca, strlen(ca))) < 0) {
        goto out;
    }
    log_info("RPC certificate for \"%s\"%s%s%s from the guest agent written to \"%s\" (CA: last "
             "certificate of the chain, \"%s\")",
             c->rpc_domain, names[1] ? " and \"" : "", names[1] ? names[1] : "",
             names[1] ? "\"" : "", c->tls_certs, c->tls_ca_certs);
out:
    ds_buf_done(&key);
    free(chain);
    free(ca);
    return r;
}

/* Seconds until a third of the leaf's validity is left (at least RENEW_MIN_S). The validity
 * counts from now when notBefore is earlier: the agent backdates its certificates (notBefore
 * 1975), and a third of that span would already be over, renewing in a loop. */
static int renew_delay(const char *chain_pem, unsigned *out)
{
    BIO *b = BIO_new_mem_buf(chain_pem, -1);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int r = -DS_E_CERT, d1, s1, d2, s2;
    if (x && ASN1_TIME_diff(&d1, &s1, X509_get0_notBefore(x), X509_get0_notAfter(x)) == 1 &&
        ASN1_TIME_diff(&d2, &s2, NULL, X509_get0_notAfter(x)) == 1) {
        int64_t total = (int64_t)d1 * 86400 + s1, left = (int64_t)d2 * 86400 + s2;
        if (total > left) {
            total = left;
        }
        int64_t wait = left - total / 3;
        *out = wait < RENEW_MIN_S ? RENEW_MIN_S : wait > UINT32_MAX ? UINT32_MAX : (unsigned)wait;
        r = 0;
    }
    X509_free(x);
    BIO_free(b);
    return r;
}

static void arm(struct event *ev, unsigned secs)
{
    struct timeval tv = {(time_t)secs, 0};
    if (event_add(ev, &tv) < 0) {
        log_warnx("cannot arm a timer");
    }
}

/* Load an agent-issued proxy certificate; schedule its renewal. Returns 0 or negative. */
static int install_proxy_cert(struct gw_agent *a, const char *chain, const struct ds_buf *key)
{
    struct gw *g = a->g;
    unsigned delay = 0;
    int r = gw_certs_set_pem(g->certs, g->cfg.px_base_domain, chain, strlen(chain),
                             (const char *)key->data, key->len);
    if (r == 0) {
        r = renew_delay(chain, &delay);
    }
    if (r < 0) {
        return r;
    }
    a->backoff_s = 0;
    log_info("proxy certificate for *.%s from the guest agent loaded; renewal in %us",
             g->cfg.px_base_domain, delay);
    if (a->renew_ev) {
        arm(a->renew_ev, delay);
    }
    return 0;
}

/* ---- renewal and refresh on the worker pool ------------------------------------------------ */

static void job_free(struct agent_job *j)
{
    free(j->socket);
    free(j->domain);
    free(j->chain_pem);
    ds_buf_done(&j->key);
    free(j->info_json);
    free(j);
}

static struct agent_job *job_new(struct gw_agent *a)
{
    struct agent_job *j = calloc(1, sizeof(*j));
    if (!j) {
        return NULL;
    }
    j->a = a;
    ds_buf_init(&j->key, PEM_CHAIN_MAX);
    j->socket = strdup(a->g->cfg.agent_socket);
    j->domain = strdup(a->g->cfg.px_base_domain ? a->g->cfg.px_base_domain : "");
    j->validity_ms = a->g->cfg.px_agent_cert_validity;
    if (!j->socket || !j->domain) {
        job_free(j);
        return NULL;
    }
    return j;
}

static void renew_work(void *arg, unsigned worker)
{
    struct agent_job *j = arg;
    (void)worker;
    if (agent_proxy_cert(j->socket, j->domain, j->validity_ms, &j->key, &j->chain_pem, j->err,
                         sizeof(j->err)) < 0 &&
        !j->err[0]) {
        snprintf(j->err, sizeof(j->err), "GetTlsKey failed");
    }
}

/* Answer the Admin RenewCert calls waiting for this renewal (why = NULL: success). */
static void answer_waiters(struct gw_agent *a, const char *why)
{
    for (size_t i = 0; i < a->waiter_count; i++) {
        if (why) {
            ds_rpc_call_reply_error(a->waiters[i],
                                    "renewal failed (the current certificate stays): %s", why);
        } else {
            ds_rpc_call_reply_json(a->waiters[i], json_pack("{s:b}", "renewed", 1));
        }
    }
    a->waiter_count = 0;
}

static void renew_retry(struct gw_agent *a, const char *why)
{
    answer_waiters(a, why);
    a->backoff_s = a->backoff_s ? a->backoff_s * 2 : BACKOFF_INITIAL_S;
    if (a->backoff_s > BACKOFF_MAX_S) {
        a->backoff_s = BACKOFF_MAX_S;
    }
    log_warnx("proxy certificate renewal failed (the current certificate stays): %s; retry in %us",
              why, a->backoff_s);
    arm(a->renew_ev, a->backoff_s);
}

static void renew_done(void *arg, bool ran)
{
    struct agent_job *j = arg;
    struct gw_agent *a = j->a;
    a->renew_busy = false;
    if (!ran) {
        answer_waiters(a, "the gateway is shutting down");
        job_free(j);
        return;
    }
    if (!j->chain_pem) {
        renew_retry(a, j->err);
    } else {
        int r = install_proxy_cert(a, j->chain_pem, &j->key);
        if (r < 0) {
            renew_retry(a, ds_strerror(r));
        } else {
            answer_waiters(a, NULL);
        }
    }
    job_free(j);
}

static void on_renew(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_agent *a = arg;
    if (a->renew_busy) {
        return;
    }
    struct agent_job *j = job_new(a);
    if (!j || gw_jobs_submit(a->g->jobs, renew_work, renew_done, j) < 0) {
        if (j) {
            job_free(j);
        }
        renew_retry(a, "cannot queue the request");
        return;
    }
    a->renew_busy = true;
    log_info("renewing the proxy certificate for *.%s", a->g->cfg.px_base_domain);
}

int gw_admin_renew_cert(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct gw_agent *a = g->agent;
    (void)params;
    (void)out;
    if (!a || !a->renew_ev) {
        return ds_rpc_call_error(call, "nothing to renew: core.proxy.cert_source is not \"agent\"");
    }
    if (a->waiter_count == RENEW_WAITERS_MAX) {
        return ds_rpc_call_error(call, "too many RenewCert calls in progress; retry later");
    }
    a->waiters[a->waiter_count++] = call;
    if (!a->renew_busy) {
        on_renew(-1, EV_TIMEOUT, a);
    }
    return DS_RPC_DEFERRED;
}

int gw_admin_reload_cert(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    (void)params;
    int r = g->certs ? gw_certs_reload(g->certs) : 0;
    if (r < 0) {
        return ds_rpc_call_error(
            call, "certificate reload failed (the previous certificates stay): %s", ds_strerror(r));
    }
    *out = json_object();
    return *out ? 0 : -ENOMEM;
}

void gw_agent_renew_now(struct gw *g)
{
    if (g->agent && g->agent->renew_ev) {
        event_active(g->agent->renew_ev, EV_TIMEOUT, 0);
    }
}

static void info_work(void *arg, unsigned worker)
{
    struct agent_job *j = arg;
    (void)worker;
    if (agent_info(j->socket, &j->info_json, NULL, j->err, sizeof(j->err)) < 0 && !j->err[0]) {
        snprintf(j->err, sizeof(j->err), "Info failed");
    }
}

static void info_done(void *arg, bool ran)
{
    struct agent_job *j = arg;
    struct gw_agent *a = j->a;
    a->info_busy = false;
    if (ran && j->info_json) {
        pthread_mutex_lock(&a->mu);
        free(a->info_json);
        a->info_json = j->info_json;
        j->info_json = NULL;
        pthread_mutex_unlock(&a->mu);
    } else if (ran) {
        log_warnx("app info refresh: %s (the cached answer stays)", j->err);
    }
    job_free(j);
}

static void on_info(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_agent *a = arg;
    struct agent_job *j = a->info_busy ? NULL : job_new(a);
    if (j && gw_jobs_submit(a->g->jobs, info_work, info_done, j) == 0) {
        a->info_busy = true;
    } else if (j) {
        job_free(j);
    }
}

/* ---- start-up -------------------------------------------------------------------------------- */

int gw_agent_start(struct gw *g)
{
    char err[GW_ERR_MAX] = "";
    char *json = NULL;
    int r = 0;
    struct gw_agent *a = calloc(1, sizeof(*a));
    if (!a) {
        return -ENOMEM;
    }
    pthread_mutex_init(&a->mu, NULL);
    a->g = g;
    g->agent = a;
    if (!gw_agent_needed(&g->cfg)) {
        return 0;
    }
    log_info("guest agent: %s", g->cfg.agent_socket);
    uint64_t ms = g->cfg.px_app_info_refresh;
    struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
    bool proxy_cert = strcmp(g->cfg.px_cert_source, "agent") == 0;
    a->info_ev = event_new(g->base, -1, EV_PERSIST, on_info, a);
    /* renew_ev exists only with cert_source "agent" (RenewCert / SIGHUP check it) */
    a->renew_ev = proxy_cert ? event_new(g->base, -1, 0, on_renew, a) : NULL;
    if (!a->info_ev || (proxy_cert && !a->renew_ev) || event_add(a->info_ev, &tv) < 0) {
        return -ENOMEM;
    }
    if (g->cfg.rpc_domain && g->cfg.rpc_domain[0] && (r = rpc_certs(g)) < 0) {
        return r;
    }
    r = agent_info(g->cfg.agent_socket, &json, g->app_id, err, sizeof(err));
    if (r < 0 && !g->cfg.dbg_skip_att) {
        log_warnx("own app id: %s", err);
        return r;
    }
    if (r < 0) {
        log_warnx("own app id unknown (insecure_skip_attestation): %s", err);
        g->app_id[0] = '\0';
        r = 0;
    } else {
        log_info("own app id %s (guest agent Info)", g->app_id);
        a->info_json = json;
    }
    if (proxy_cert && g->certs) {
        struct ds_buf key;
        char *chain = NULL;
        ds_buf_init(&key, PEM_CHAIN_MAX);
        r = agent_proxy_cert(g->cfg.agent_socket, g->cfg.px_base_domain,
                             g->cfg.px_agent_cert_validity, &key, &chain, err, sizeof(err));
        if (r < 0) {
            log_warnx("proxy certificate for *.%s: %s", g->cfg.px_base_domain, err);
        } else if ((r = install_proxy_cert(a, chain, &key)) < 0) {
            log_warnx("proxy certificate for *.%s from the guest agent: %s", g->cfg.px_base_domain,
                      ds_strerror(r));
        }
        ds_buf_done(&key);
        free(chain);
    }
    return r;
}

void gw_agent_free(struct gw_agent *a)
{
    if (!a) {
        return;
    }
    if (a->renew_ev) {
        event_free(a->renew_ev);
    }
    if (a->info_ev) {
        event_free(a->info_ev);
    }
    free(a->info_json);
    pthread_mutex_destroy(&a->mu);
    free(a);
}

/* ---- gateway.<base> control-plane paths (proxy hook) ------------------------------------------
 */

int gw_agent_special(const char *path, struct ds_buf *body, const char **content_type, void *arg)
{
    struct gw_agent *a = arg;
    *content_type = "application/json";
    if (strcmp(path, "/acme-info") == 0) {
        return ds_buf_append_str(body, "{\"error\":\"ACME is not configured\"}\n") < 0 ? 503 : 404;
    }
    if (strcmp(path, "/app-info") != 0) {
        *content_type = "text/plain";
        return ds_buf_append_str(body, "Not Found\n") < 0 ? 503 : 404;
    }
    pthread_mutex_lock(&a->mu);
    int status = 200;
    int r = a->info_json ? ds_buf_append_str(body, a->info_json) : 0;
    pthread_mutex_unlock(&a->mu);
    if (r < 0) {
        ds_buf_reset(body);
        status = 503;
        r = ds_buf_append_str(body, "{\"error\":\"app info too large\"}\n");
    } else if (body->len == 0) {
        status = a->g && gw_agent_needed(&a->g->cfg) ? 503 : 404;
        r = ds_buf_append_str(
            body, status == 503 ? "{\"error\":\"app info not available yet from the guest "
                                  "agent\"}\n"
                                : "{\"error\":\"no guest agent in use (set core.rpc_domain or "
                                  "core.proxy.cert_source = \\\"agent\\\")\"}\n");
    } else {
        r = ds_buf_append_str(body, "\n");
    }
    (void)r;
    return status;
}
