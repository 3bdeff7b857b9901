/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Gateway service on the main server (spec host-side.md §4.3, §4.4; kms-ratls.md §6.4-6.5):
 * RegisterCvm over mutual RA-TLS and Info, plus GET /health. Who the caller is comes only from
 * its client certificate, which the TLS layer has already verified to chain to the KMS root
 * CA (tls.mutual.ca_certs): the app-info extension (.1.9, an issuer claim the chain vouches
 * for) and/or the attestation (.1.8 or legacy .1.1/.1.2), which is verified (DCAP, key binding,
 * RTMR replay) whenever present; a present but invalid one refuses the call. With both, and
 * with an app-id extension (.1.3), every app id must agree. Then the optional auth webhook,
 * the node status, the registry transaction (gw_db.c: address allocation, the reported port
 * policy), the WireGuard peer and the routing table (with the effective port policy). start-up
 * restore and the handshake refresh live here too.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "dstack/ratls.h"
#include "gw_ctl.h"
#include "log.h"

#define WEBHOOK_BODY_MAX (64 * 1024)
#define DEFAULT_PCCS     "https://api.trustedservices.intel.com"
#define APP_ID_BYTES     20
#define INSTANCE_BYTES   32
#define COMPOSE_BYTES    32

struct register_req {
    char *client_public_key;
};

static const struct ds_rpc_field register_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct register_req, client_public_key, 256),
};

int gw_health(struct ds_rpc_call *call, void *ctx)
{
    (void)ctx;
    ds_rpc_call_reply_raw(call, 200, "text/plain", "OK", 2);
    return 0;
}

static bool bytes_eq(const uint8_t *a, size_t al, const uint8_t *b, size_t bl)
{
    return al == bl && (al == 0 || memcmp(a, b, al) == 0);
}

/* A refusal message for the RPC answer, written on a worker thread. Returns -EINVAL. */
static int refuse(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

/* The caller's identity from its certificate into *out (owned by the caller). Runs on a worker
 * thread with that thread's verifier; a refusal is written to err and returns -EINVAL. */
static int caller_app_info(struct gw *g, X509 *cert, struct ds_verifier *verifier,
                           struct ds_app_info *out, char *err, size_t err_size)
{
    struct ds_app_info ext = {0};
    struct ds_attestation_result res;
    const uint8_t *p, *ext_app_id = NULL;
    size_t n, ext_app_id_len = 0;
    bool has_ext = false, has_att = false;
    int r;
    memset(&res, 0, sizeof(res));
    if (!cert) {
        return refuse(err, err_size,
                      "client certificate required: connect with mutual TLS and a "
                      "certificate issued by the KMS");
    }
    r = ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_APP_INFO, &p, &n);
    if (r == 0) {
        r = ds_ratls_app_info_decode(p, n, &ext);
        if (r < 0) {
            return refuse(err, err_size, "invalid app info extension: %s", ds_strerror(r));
        }
        has_ext = true;
    } else if (r != -DS_E_NOT_FOUND) {
        return refuse(err, err_size, "invalid app info extension: %s", ds_strerror(r));
    }
    r = ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_APP_ID, &ext_app_id, &ext_app_id_len);
    if (r < 0 && r != -DS_E_NOT_FOUND) {
        r = refuse(err, err_size, "invalid app id extension: %s", ds_strerror(r));
        goto out;
    }
    bool att_present =
        ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_ATTESTATION, &p, &n) != -DS_E_NOT_FOUND ||
        ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_TDX_QUOTE, &p, &n) != -DS_E_NOT_FOUND;
    if (att_present && !g->cfg.dbg_skip_att) {
        struct ds_attestation_verify_opts opts = {
            .verifier = verifier,
            .pccs_url = g->cfg.att_pccs ? g->cfg.att_pccs : DEFAULT_PCCS,
            .now = (int64_t)time(NULL),
        };
        r = ds_ratls_verify_cert(cert, &opts, &res);
        if (r < 0) {
            r = refuse(err, err_size, "invalid quote: %s",
                       res.message[0] ? res.message : ds_strerror(r));
            goto out;
        }
        if (res.simulated && !g->cfg.att_allow_simulated) {
            r = refuse(err, err_size, "invalid quote: simulated attestation not allowed");
            goto out;
        }
        has_att = true;
    }
    const struct ds_app_info *src = has_att ? &res.app_info : has_ext ? &ext : NULL;
    if (!src) {
        r = refuse(err, err_size, "No attestation provided");
        goto out;
    }
    if (has_att && has_ext &&
        !bytes_eq(ext.app_id, ext.app_id_len, res.app_info.app_id, res.app_info.app_id_len)) {
        r = refuse(err, err_size,
                   "app id mismatch: the app info extension does not match the "
                   "attested app id");
        goto out;
    }
    if (ext_app_id && !bytes_eq(ext_app_id, ext_app_id_len, src->app_id, src->app_id_len)) {
        r = refuse(err, err_size,
                   "app id mismatch: the certificate's app id extension does not match the %s "
                   "app id",
                   has_att ? "attested" : "app info");
        goto out;
    }
    /* hand the chosen one over */
    if (has_att) {
        *out = res.app_info;
        memset(&res.app_info, 0, sizeof(res.app_info));
    } else {
        *out = ext;
        memset(&ext, 0, sizeof(ext));
    }
    r = 0;
out:
    ds_app_info_done(&ext);
    ds_attestation_result_done(&res);
    return r;
}

static char *hex_or_empty(const uint8_t *p, size_t n)
{
    return n ? ds_hex_strdup(p, n) : strdup("");
}

static size_t discard(char *ptr, size_t size, size_t nmemb, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * nmemb;
}

/* POST the AppInfo JSON to core.auth.url; 2xx = allowed (spec §4.3). */
static int webhook(struct gw *g, const struct ds_app_info *ai, char *err, size_t err_size)
{
    json_t *j = json_object();
    char *body = NULL;
    long status = 0;
    int r = -ENOMEM;
    CURL *h = NULL;
    struct curl_slist *hdr = NULL;
    if (!j) {
        goto out;
    }
    struct {
        const char *name;
        const uint8_t *p;
        size_t n;
    } f[] = {
        {"app_id", ai->app_id, ai->app_id_len},
        {"compose_hash", ai->compose_hash, ai->compose_hash_len},
        {"instance_id", ai->instance_id, ai->instance_id_len},
        {"device_id", ai->device_id, sizeof(ai->device_id)},
        {"mr_system", ai->mr_system, sizeof(ai->mr_system)},
        {"mr_aggregated", ai->mr_aggregated, sizeof(ai->mr_aggregated)},
        {"os_image_hash", ai->os_image_hash, ai->os_image_hash_len},
        {"key_provider_info", ai->key_provider_info, ai->key_provider_info_len},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(f); i++) {
        char *hx = hex_or_empty(f[i].p, f[i].n);
        if (!hx || json_object_set_new(j, f[i].name, json_string(hx)) < 0) {
            free(hx);
            goto out;
        }
        free(hx);
    }
    body = json_dumps(j, JSON_COMPACT);
    h = curl_easy_init();
    hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (!body || !h || !hdr) {
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, g->cfg.auth_url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)g->cfg.auth_timeout_ms);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        r = refuse(err, err_size, "auth webhook failed: %s", curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        r = refuse(err, err_size, "denied by the auth webhook (HTTP %ld)", status);
        goto out;
    }
    r = 0;
out:
    curl_slist_free_all(hdr);
    if (h) {
        curl_easy_cleanup(h);
    }
    free(body);
    json_decref(j);
    return r;
}

static json_t *node_info(struct gw *g)
{
    char gwip[GW_IP4_TEXT_MAX];
    gw_ip4_text(g->net.wg.addr, gwip);
    return json_pack("{s:I, s:s, s:s, s:I, s:s, s:s, s:s}", "id", (json_int_t)g->cfg.sync_node_id,
                     "uuid", g->node_uuid, "url", g->cfg.sync_my_url, "last_seen",
                     (json_int_t)time(NULL), "wg_public_key", g->wg_public_key, "wg_ip", gwip,
                     "wg_endpoint", g->cfg.wg_endpoint);
}

/*
 * RegisterCvm in two halves (spec §4.3). The identity check (certificate extensions, DCAP
 * verification with a collateral fetch) and the auth webhook may take seconds, so they run on
 * a worker thread (gw_jobs.c) while the event loop goes on serving the proxy and other RPCs;
 * the registry transaction, WireGuard and the routing table stay on the loop thread, so they
 * are serialized as before. The call is answered when both halves are done (deferred call).
 */
struct register_job {
    struct gw *g;
    struct ds_rpc_call *call;
    X509 *cert; /* own reference: the worker never touches the call */
    char *client_public_key;
    char *policy_text; /* the reported port policy, canonical JSON; NULL = none reported */
    struct ds_app_info ai;
    int rc;
    char err[GW_ERR_MAX];
};

static void register_job_free(struct register_job *j)
{
    X509_free(j->cert);
    free(j->client_public_key);
    free(j->policy_text);
    ds_app_info_done(&j->ai);
    free(j);
}

/* Worker thread: who is calling, and may it register. */
static void register_work(void *arg, unsigned worker)
{
    struct register_job *j = arg;
    struct gw *g = j->g;
    struct ds_app_info *ai = &j->ai;
    j->rc = caller_app_info(g, j->cert, g->verifiers[worker], ai, j->err, sizeof(j->err));
    if (j->rc < 0) {
        return;
    }
    if (ai->app_id_len == 0 || ai->app_id_len > APP_ID_BYTES || ai->instance_id_len == 0 ||
        ai->instance_id_len > GW_ID_MAX / 2 || ai->compose_hash_len > COMPOSE_BYTES) {
        j->rc = refuse(j->err, sizeof(j->err),
                       "invalid app info: app id and instance id must be "
                       "non-empty (at most 20 bytes)");
        return;
    }
    if (!gw_wg_key_valid(j->client_public_key)) {
        j->rc = refuse(j->err, sizeof(j->err),
                       "invalid client_public_key: expected base64 of 32 bytes");
        return;
    }
    if (g->cfg.auth_enabled) {
        j->rc = webhook(g, ai, j->err, sizeof(j->err));
    }
}

/* Loop thread: node status, WireGuard, registry, routes. Returns the answer or NULL (err). */
static json_t *register_finish(struct gw *g, const struct register_job *j, char *err,
                               size_t err_size)
{
    const struct ds_app_info *ai = &j->ai;
    struct gw_instance inst;
    char app_id[GW_ID_MAX + 1], instance_id[2 * INSTANCE_BYTES + 1], compose[65];
    char old_key[GW_WG_KEY_B64_LEN + 1] = "", status[16] = "", gwip[GW_IP4_TEXT_MAX];
    ds_hex_encode(ai->app_id, ai->app_id_len, app_id);
    ds_hex_encode(ai->instance_id, ai->instance_id_len, instance_id);
    ds_hex_encode(ai->compose_hash, ai->compose_hash_len, compose);
    if (gw_db_meta_get(g->db, "node_status", status, sizeof(status)) == 0 &&
        strcmp(status, "down") == 0) {
        snprintf(err, err_size, "this gateway node is marked down");
        return NULL;
    }
    char why[GW_ERR_MAX] = "";
    if (g->wg.enabled && gw_wg_ready(&g->wg, why, sizeof(why)) < 0) {
        snprintf(err, err_size, "WireGuard unavailable: %s", why);
        return NULL;
    }
    if (gw_db_register(g->db, &g->net, app_id, instance_id, compose, j->client_public_key,
                       j->policy_text, (int64_t)time(NULL), &inst, old_key, err, err_size) < 0) {
        return NULL;
    }
    if (g->wg.enabled) {
        if (old_key[0] && gw_wg_remove_peer(&g->wg, old_key, why, sizeof(why)) < 0) {
            log_warnx("%s", why);
        }
        if (gw_wg_set_peer(&g->wg, inst.public_key, inst.ip, err, err_size) < 0) {
            return NULL;
        }
    }
    if (g->routes && gw_routes_set_instance(g->routes, inst.app_id, inst.instance_id, inst.ip,
                                            inst.last_handshake) < 0) {
        log_warnx("routing table: cannot add instance %s", inst.instance_id);
    }
    gw_policy_apply(g, inst.instance_id);
    g->registrations++;
    log_info("registered app %s instance %s at %s", inst.app_id, inst.instance_id, inst.ip);
    gw_ip4_text(g->net.wg.addr, gwip);
    json_t *out = json_pack(
        "{s:{s:s, s:[{s:s, s:s, s:s}]}, s:{s:i, s:i, s:s, s:s}, s:[o]}", "wg", "client_ip", inst.ip,
        "servers", "pk", g->wg_public_key, "ip", gwip, "endpoint", g->cfg.wg_endpoint, "agent",
        "external_port", (int)g->cfg.px_external_port, "internal_port", (int)g->cfg.px_agent_port,
        "domain", g->cfg.px_base_domain ? g->cfg.px_base_domain : "", "app_address_ns_prefix",
        g->cfg.px_ns_prefix, "gateways", node_info(g));
    if (!out) {
        snprintf(err, err_size, "%s", ds_strerror(-ENOMEM));
    }
    return out;
}

static void register_done(void *arg, bool ran)
{
    struct register_job *j = arg;
    char err[GW_ERR_MAX] = "";
    json_t *out = NULL;
    if (!ran) {
        ds_rpc_call_reply_error(j->call, "the gateway is shutting down");
    } else if (j->rc < 0) {
        ds_rpc_call_reply_error(j->call, "%s", j->err[0] ? j->err : ds_strerror(j->rc));
    } else if ((out = register_finish(j->g, j, err, sizeof(err))) != NULL) {
        ds_rpc_call_reply_json(j->call, out);
    } else {
        ds_rpc_call_reply_error(j->call, "%s", err[0] ? err : "registration failed");
    }
    register_job_free(j);
}

static int register_cvm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct register_req req = {0};
    (void)out;
    int r = ds_rpc_call_decode(call, params, register_fields, DS_ARRAY_SIZE(register_fields), &req);
    if (r < 0) {
        return r;
    }
    /* port_policy (spec §4.3): absent or null = an older guest, fetched later (§4.2 step 5) */
    char *policy_text = NULL, perr[GW_ERR_MAX] = "";
    const json_t *ppj = json_is_object(params) ? json_object_get(params, "port_policy") : NULL;
    if (ppj != NULL && !json_is_null(ppj)) {
        struct gw_port_policy *pp = malloc(sizeof(*pp));
        r = pp ? gw_port_policy_from_json(ppj, "port_policy", pp, perr, sizeof(perr)) : -ENOMEM;
        if (r == 0 && (policy_text = gw_port_policy_dump(pp)) == NULL) {
            r = -ENOMEM;
        }
        free(pp);
        if (r < 0) {
            ds_rpc_params_free(register_fields, DS_ARRAY_SIZE(register_fields), &req);
            return r == -ENOMEM ? r : ds_rpc_call_error(call, "invalid %s", perr);
        }
    }
    struct register_job *j = calloc(1, sizeof(*j));
    if (!j) {
        free(policy_text);
        ds_rpc_params_free(register_fields, DS_ARRAY_SIZE(register_fields), &req);
        return -ENOMEM;
    }
    j->policy_text = policy_text;
    j->g = g;
    j->call = call;
    j->client_public_key = req.client_public_key; /* taken over */
    req.client_public_key = NULL;
    j->cert = ds_rpc_call_peer_cert(call);
    if (j->cert) {
        X509_up_ref(j->cert);
    }
    r = gw_jobs_submit(g->jobs, register_work, register_done, j);
    if (r < 0) {
        register_job_free(j);
        return r == -EAGAIN ? ds_rpc_call_error(call, "too many registrations in progress; retry "
                                                      "later")
                            : r;
    }
    return DS_RPC_DEFERRED;
}

static int info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    (void)call;
    (void)params;
    *out = json_pack("{s:s, s:i, s:s, s:s, s:s}", "base_domain",
                     g->cfg.px_base_domain ? g->cfg.px_base_domain : "", "external_port",
                     (int)g->cfg.px_external_port, "app_address_ns_prefix", g->cfg.px_ns_prefix,
                     "version", GW_VERSION, "app_id", g->app_id);
    return *out ? 0 : -ENOMEM;
}

static const struct ds_rpc_method gateway_methods[] = {
    {"RegisterCvm", register_cvm, 0, 0},
    {"Info", info, DS_RPC_NO_PARAMS, 0},
};

const struct ds_rpc_service gw_gateway_service = {
    .name = "Gateway",
    .methods = gateway_methods,
    .method_count = DS_ARRAY_SIZE(gateway_methods),
};

/* ---- start-up and handshakes ---------------------------------------------------------------- */

struct wg_seen {
    char (*keys)[GW_WG_KEY_B64_LEN + 1];
    size_t count, cap;
};

static void collect_peer(const struct gw_wg_peer *p, void *ctx)
{
    struct wg_seen *s = ctx;
    if (s->count == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        void *nk = realloc(s->keys, nc * sizeof(*s->keys));
        if (!nk) {
            return;
        }
        s->keys = nk;
        s->cap = nc;
    }
    memcpy(s->keys[s->count++], p->public_key, GW_WG_KEY_B64_LEN + 1);
}

int gw_restore(struct gw *g)
{
    struct gw_instance *v = NULL;
    struct wg_seen seen = {0};
    char err[GW_ERR_MAX], *dump = NULL;
    size_t n = 0;
    DS_TRY(gw_db_list(g->db, &v, &n));
    for (size_t i = 0; i < n; i++) {
        if (g->routes && gw_routes_set_instance(g->routes, v[i].app_id, v[i].instance_id, v[i].ip,
                                                v[i].last_handshake) < 0) {
            log_warnx("routing table: cannot add instance %s", v[i].instance_id);
        }
        gw_policy_apply(g, v[i].instance_id);
        if (g->wg.enabled &&
            gw_wg_set_peer(&g->wg, v[i].public_key, v[i].ip, err, sizeof(err)) < 0) {
            log_warnx("%s", err);
        }
    }
    /* peers on the interface that the registry does not know: remove */
    if (g->wg.enabled && gw_wg_dump(&g->wg, &dump, err, sizeof(err)) == 0 &&
        gw_wg_dump_parse(dump, strlen(dump), collect_peer, &seen) >= 0) {
        for (size_t k = 0; k < seen.count; k++) {
            bool known = false;
            for (size_t i = 0; i < n && !known; i++) {
                known = strcmp(v[i].public_key, seen.keys[k]) == 0;
            }
            if (!known && gw_wg_remove_peer(&g->wg, seen.keys[k], err, sizeof(err)) < 0) {
                log_warnx("%s", err);
            }
        }
    }
    log_info("restored %zu instance(s) from the registry", n);
    free(seen.keys);
    free(dump);
    free(v);
    return 0;
}

struct hs_ctx {
    struct gw *g;
    struct gw_instance *v;
    size_t n;
};

static void apply_handshake(const struct gw_wg_peer *p, void *ctx)
{
    struct hs_ctx *h = ctx;
    for (size_t i = 0; i < h->n; i++) {
        if (strcmp(h->v[i].public_key, p->public_key) != 0) {
            continue;
        }
        if (h->v[i].last_handshake != p->latest_handshake) {
            if (gw_db_set_handshake(h->g->db, p->public_key, p->latest_handshake) < 0) {
                log_warnx("registry: cannot store a handshake time");
            }
        }
        if (h->g->routes) {
            if (gw_routes_set_handshake(h->g->routes, h->v[i].instance_id, p->latest_handshake) <
                0) {
                log_debug("routing table: %s missing", h->v[i].instance_id);
            }
        }
        return;
    }
}

void gw_refresh_handshakes(struct gw *g)
{
    struct hs_ctx h = {.g = g};
    char err[GW_ERR_MAX], *dump = NULL;
    if (!g->wg.enabled) {
        return;
    }
    if (gw_wg_dump(&g->wg, &dump, err, sizeof(err)) < 0) {
        log_debug("%s", err);
        return;
    }
    if (gw_db_list(g->db, &h.v, &h.n) == 0 &&
        gw_wg_dump_parse(dump, strlen(dump), apply_handshake, &h) < 0) {
        log_warnx("cannot parse `wg show %s dump`", g->wg.iface);
    }
    free(h.v);
    free(dump);
}

void gw_recycle(struct gw *g)
{
    struct gw_instance *v = NULL;
    size_t n = 0, removed = 0;
    char err[GW_ERR_MAX];
    int64_t now = (int64_t)time(NULL);
    int64_t timeout = (int64_t)(g->cfg.rc_timeout / 1000);
    gw_refresh_handshakes(g);
    if (gw_db_list(g->db, &v, &n) < 0) {
        log_warnx("recycle: cannot list the registry");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        if (now - v[i].reg_time <= timeout || now - v[i].last_handshake <= timeout) {
            continue;
        }
        if (gw_db_remove(g->db, v[i].instance_id) < 0) {
            continue;
        }
        if (g->wg.enabled && gw_wg_remove_peer(&g->wg, v[i].public_key, err, sizeof(err)) < 0) {
            log_warnx("%s", err);
        }
        if (g->routes && gw_routes_remove_instance(g->routes, v[i].instance_id) < 0) {
            log_debug("routing table: %s was not present", v[i].instance_id);
        }
        log_info("recycled instance %s (%s): no handshake for %llds", v[i].instance_id, v[i].ip,
                 (long long)timeout);
        removed++;
    }
    if (removed) {
        log_info("recycle: removed %zu stale instance(s)", removed);
    }
    free(v);
}
