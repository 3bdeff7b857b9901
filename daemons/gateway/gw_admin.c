/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway Admin service (spec host-side.md §4.4) on its own listener: a token filter that
 * fails closed (Authorization: Bearer, X-Admin-Token, or GET ?token=; compared in constant
 * time; 401 without a valid one, unless core.admin.insecure_no_auth), the methods Status,
 * GetInfo, GetMeta, GetInstanceHandshakes, GetNodeStatuses, SetNodeStatus, SetNodeUrl, and our
 * ListInstances / RemoveInstance (registry + WireGuard peer + route), the port policy methods
 * (gw_policy.c), and an HTML status page
 * at "/" in which every text is escaped. One node: nodes[] holds only this node. The cluster
 * methods (WaveKV, DNS credentials, ZT domains, certbot) are not implemented.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gw_ctl.h"
#include "log.h"

#define TOKEN_MAX 1024
#define PAGE_MAX  (4 * 1024 * 1024)
#define URL_MAX   2048

int gw_admin_filter(struct ds_rpc_call *call, void *ctx)
{
    struct gw *g = ctx;
    static const char denied[] = "{\n  \"error\": \"Unauthorized\"\n}";
    char tmp[TOKEN_MAX];
    const char *given = NULL;
    if (g->cfg.admin_no_auth) {
        return 0;
    }
    const char *want = gw_config_admin_token(&g->cfg);
    bool is_get = strcmp(ds_rpc_call_http_method(call), "POST") != 0;
    if (want && gw_admin_token_of(ds_rpc_call_header(call, "Authorization"),
                                  ds_rpc_call_header(call, "X-Admin-Token"),
                                  ds_rpc_call_query(call), is_get, tmp, sizeof(tmp), &given)) {
        size_t a = strlen(given), b = strlen(want);
        bool ok = a == b && ds_ct_equal(given, want, a);
        ds_wipe(tmp, sizeof(tmp));
        if (ok) {
            return 0;
        }
    }
    if (ds_rpc_call_add_header(call, "WWW-Authenticate", "Bearer") < 0) {
        /* best effort: the 401 below is what matters */
    }
    ds_rpc_call_reply_raw(call, 401, "application/json", denied, sizeof(denied) - 1);
    return 1;
}

static int node_status(struct gw *g, char *out, size_t size)
{
    if (gw_db_meta_get(g->db, "node_status", out, size) < 0) {
        snprintf(out, size, "up");
    }
    return 0;
}

static const char *node_url(struct gw *g, char *buf, size_t size)
{
    return gw_db_meta_get(g->db, "node_url", buf, size) == 0 ? buf : g->cfg.sync_my_url;
}

static json_t *host_json(const struct gw_instance *v, const char *base_domain, uint32_t conns)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I, s:i}", "instance_id", v->instance_id,
                     "ip", v->ip, "app_id", v->app_id, "base_domain", base_domain, "public_key",
                     v->public_key, "reg_time", (json_int_t)v->reg_time, "latest_handshake",
                     (json_int_t)v->last_handshake, "num_connections", (int)conns);
}

/* Live connection counts from the routing table. */
static uint32_t conns_of(struct gw *g, const char *instance_id, struct gw_backend *b, int nb)
{
    (void)g;
    for (int i = 0; i < nb; i++) {
        if (strcmp(b[i].instance_id, instance_id) == 0) {
            return b[i].num_connections;
        }
    }
    return 0;
}

static json_t *nodes_json(struct gw *g)
{
    char st[16], url[URL_MAX];
    node_status(g, st, sizeof(st));
    return json_pack("[{s:I, s:s, s:s, s:s, s:s}]", "id", (json_int_t)g->cfg.sync_node_id, "uuid",
                     g->node_uuid, "url", node_url(g, url, sizeof(url)), "wg_public_key",
                     g->wg_public_key, "status", st);
}

static int status(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct gw_instance *v = NULL;
    struct gw_backend *b = NULL;
    size_t n = 0;
    int nb = 0, r;
    char url[URL_MAX];
    (void)params;
    if ((r = gw_db_list(g->db, &v, &n)) < 0) {
        return ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
    }
    if (g->routes && n > 0 && (b = calloc(n, sizeof(*b))) != NULL) {
        nb = gw_routes_list(g->routes, b, n);
    }
    json_t *hosts = json_array();
    for (size_t i = 0; hosts && i < n; i++) {
        json_array_append_new(hosts,
                              host_json(&v[i], g->cfg.px_base_domain ? g->cfg.px_base_domain : "",
                                        conns_of(g, v[i].instance_id, b, nb)));
    }
    uint64_t total = 0;
    for (int i = 0; i < nb; i++) {
        total += b[i].num_connections;
    }
    *out = json_pack("{s:I, s:s, s:s, s:s, s:I, s:o, s:o, s:I, s:s}", "id",
                     (json_int_t)g->cfg.sync_node_id, "url", node_url(g, url, sizeof(url)), "uuid",
                     g->node_uuid, "bootnode_url", g->cfg.sync_bootnode, "num_connections",
                     (json_int_t)total, "hosts", hosts, "nodes", nodes_json(g), "registrations",
                     (json_int_t)g->registrations, "version", GW_VERSION);
    if (*out && json_object_set_new(*out, "app_id", json_string(g->app_id)) < 0) {
        json_decref(*out);
        *out = NULL;
    }
    free(b);
    free(v);
    return *out ? 0 : -ENOMEM;
}

struct id_req {
    char *id;
};
static const struct ds_rpc_field id_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct id_req, id, 128),
};

static int get_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct id_req req = {0};
    struct gw_instance v;
    int r = ds_rpc_call_decode(call, params, id_fields, DS_ARRAY_SIZE(id_fields), &req);
    if (r < 0) {
        return r;
    }
    r = gw_db_get(g->db, req.id, &v);
    if (r == -ENOENT) {
        *out = json_pack("{s:b}", "found", 0);
        r = *out ? 0 : -ENOMEM;
    } else if (r < 0) {
        r = ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
    } else {
        *out = json_pack("{s:b, s:o}", "found", 1, "info",
                         host_json(&v, g->cfg.px_base_domain ? g->cfg.px_base_domain : "", 0));
        r = *out ? 0 : -ENOMEM;
    }
    ds_rpc_params_free(id_fields, DS_ARRAY_SIZE(id_fields), &req);
    return r;
}

static int get_meta(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct gw_instance *v = NULL;
    size_t n = 0, online = 0;
    int64_t now = (int64_t)time(NULL);
    (void)params;
    int r = gw_db_list(g->db, &v, &n);
    if (r < 0) {
        return ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
    }
    for (size_t i = 0; i < n; i++) {
        online += v[i].last_handshake > 0 && now - v[i].last_handshake < GW_ONLINE_SECS;
    }
    free(v);
    *out = json_pack("{s:I, s:I}", "registered", (json_int_t)n, "online", (json_int_t)online);
    return *out ? 0 : -ENOMEM;
}

static int list_instances(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct gw_instance *v = NULL;
    size_t n = 0;
    (void)params;
    int r = gw_db_list(g->db, &v, &n);
    if (r < 0) {
        return ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
    }
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_t *h = host_json(&v[i], g->cfg.px_base_domain ? g->cfg.px_base_domain : "", 0);
        json_object_set_new(h, "compose_hash", json_string(v[i].compose_hash));
        json_array_append_new(a, h);
    }
    free(v);
    *out = json_pack("{s:o}", "instances", a);
    return *out ? 0 : -ENOMEM;
}

struct remove_req {
    char *instance_id;
};
static const struct ds_rpc_field remove_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct remove_req, instance_id, 128),
};

static int remove_instance(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct remove_req req = {0};
    struct gw_instance v;
    char err[GW_ERR_MAX];
    int r = ds_rpc_call_decode(call, params, remove_fields, DS_ARRAY_SIZE(remove_fields), &req);
    if (r < 0) {
        return r;
    }
    r = gw_db_get(g->db, req.instance_id, &v);
    if (r == 0) {
        r = gw_db_remove(g->db, req.instance_id);
    }
    if (r == -ENOENT) {
        r = ds_rpc_call_error(call, "instance not found: %s", req.instance_id);
        goto out;
    }
    if (r < 0) {
        r = ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
        goto out;
    }
    if (g->wg.enabled && gw_wg_remove_peer(&g->wg, v.public_key, err, sizeof(err)) < 0) {
        log_warnx("%s", err);
    }
    if (g->routes) {
        if (gw_routes_remove_instance(g->routes, v.instance_id) < 0) {
            log_debug("routing table: %s was not present", v.instance_id);
        }
    }
    log_info("admin: removed instance %s (%s)", v.instance_id, v.ip);
    *out = json_object();
    r = *out ? 0 : -ENOMEM;
out:
    ds_rpc_params_free(remove_fields, DS_ARRAY_SIZE(remove_fields), &req);
    return r;
}

static int get_handshakes(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct gw *g = ctx;
    struct gw_instance *v = NULL;
    size_t n = 0;
    (void)params;
    gw_refresh_handshakes(g);
    int r = gw_db_list(g->db, &v, &n);
    if (r < 0) {
        return ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
    }
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++) {
        json_array_append_new(a, json_pack("{s:s, s:I}", "instance_id", v[i].instance_id,
                                           "latest_handshake", (json_int_t)v[i].last_handshake));
    }
    free(v);
    *out = json_pack("{s:o}", "handshakes", a);
    return *out ? 0 : -ENOMEM;
}

static int get_node_statuses(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx)
{
    (void)call;
    (void)params;
    *out = json_pack("{s:o}", "nodes", nodes_json(ctx));
    return *out ? 0 : -ENOMEM;
}

struct node_req {
    uint64_t id;
    char *status;
    char *url;
};
static const struct ds_rpc_field node_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_U64, struct node_req, id, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct node_req, status, 16),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct node_req, url, URL_MAX - 1),
};

static int node_write(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx,
                      bool is_status)
{
    struct gw *g = ctx;
    struct node_req req = {0};
    int r = ds_rpc_call_decode(call, params, node_fields, DS_ARRAY_SIZE(node_fields), &req);
    if (r < 0) {
        return r;
    }
    if ((int64_t)req.id != g->cfg.sync_node_id) {
        r = ds_rpc_call_error(call,
                              "unknown node %llu (this gateway is node %lld; cluster sync "
                              "is not implemented)",
                              (unsigned long long)req.id, (long long)g->cfg.sync_node_id);
        goto out;
    }
    if (is_status) {
        if (strcmp(req.status, "up") != 0 && strcmp(req.status, "down") != 0) {
            r = ds_rpc_call_error(call, "status must be \"up\" or \"down\"");
            goto out;
        }
        r = gw_db_meta_set(g->db, "node_status", req.status);
    } else {
        if (strncmp(req.url, "https://", 8) != 0 && strncmp(req.url, "http://", 7) != 0) {
            r = ds_rpc_call_error(call, "url must be http(s)://...");
            goto out;
        }
        r = gw_db_meta_set(g->db, "node_url", req.url);
    }
    if (r < 0) {
        r = ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
        goto out;
    }
    *out = json_object();
    r = *out ? 0 : -ENOMEM;
out:
    ds_rpc_params_free(node_fields, DS_ARRAY_SIZE(node_fields), &req);
    return r;
}

static int set_node_status(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return node_write(call, params, out, ctx, true);
}

static int set_node_url(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return node_write(call, params, out, ctx, false);
}

static const struct ds_rpc_method admin_methods[] = {
    {"Status", status, DS_RPC_NO_PARAMS, 0},
    {"RenewCert", gw_admin_renew_cert, DS_RPC_NO_PARAMS, 0},
    {"ReloadCert", gw_admin_reload_cert, DS_RPC_NO_PARAMS, 0},
    {"GetInfo", get_info, 0, 0},
    {"GetMeta", get_meta, DS_RPC_NO_PARAMS, 0},
    {"ListInstances", list_instances, DS_RPC_NO_PARAMS, 0},
    {"RemoveInstance", remove_instance, 0, 0},
    {"GetInstanceHandshakes", get_handshakes, DS_RPC_NO_PARAMS, 0},
    {"GetNodeStatuses", get_node_statuses, DS_RPC_NO_PARAMS, 0},
    {"SetNodeStatus", set_node_status, 0, 0},
    {"SetNodeUrl", set_node_url, 0, 0},
    {"SetInstancePortPolicy", gw_admin_set_port_policy, 0, 0},
    {"ClearInstancePortPolicy", gw_admin_clear_port_policy, 0, 0},
    {"GetInstancePortPolicy", gw_admin_get_port_policy, 0, 0},
};

const struct ds_rpc_service gw_admin_service = {
    .name = "Admin",
    .methods = admin_methods,
    .method_count = DS_ARRAY_SIZE(admin_methods),
};

/* ---- the status page ---------------------------------------------------------------------- */

static int cell(struct ds_buf *b, const char *s)
{
    DS_TRY(ds_buf_append_str(b, "<td>"));
    DS_TRY(gw_html_escape(b, s));
    return ds_buf_append_str(b, "</td>");
}

static int render(struct gw *g, struct ds_buf *b)
{
    struct gw_instance *v = NULL;
    size_t n = 0;
    char st[16], num[32];
    int r = gw_db_list(g->db, &v, &n);
    if (r < 0) {
        return r;
    }
    node_status(g, st, sizeof(st));
    r = ds_buf_append_str(b, "<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
                             "<title>dstack-gateway</title></head><body><h1>dstack-gateway ");
    r = r ? r : gw_html_escape(b, GW_VERSION);
    r = r ? r : ds_buf_append_str(b, "</h1><p>node ");
    snprintf(num, sizeof(num), "%lld", (long long)g->cfg.sync_node_id);
    r = r ? r : gw_html_escape(b, num);
    r = r ? r : ds_buf_append_str(b, " (");
    r = r ? r : gw_html_escape(b, st);
    r = r ? r : ds_buf_append_str(b, "), WireGuard ");
    r = r ? r : gw_html_escape(b, g->wg_public_key);
    r = r ? r : ds_buf_append_str(b, " at ");
    r = r ? r : gw_html_escape(b, g->cfg.wg_endpoint);
    r = r ? r
          : ds_buf_append_str(b, "</p><table border=\"1\"><tr><th>instance</th><th>app</th>"
                                 "<th>ip</th><th>latest handshake</th></tr>");
    for (size_t i = 0; r == 0 && i < n; i++) {
        snprintf(num, sizeof(num), "%lld", (long long)v[i].last_handshake);
        r = ds_buf_append_str(b, "<tr>");
        r = r ? r : cell(b, v[i].instance_id);
        r = r ? r : cell(b, v[i].app_id);
        r = r ? r : cell(b, v[i].ip);
        r = r ? r : cell(b, num);
        r = r ? r : ds_buf_append_str(b, "</tr>");
    }
    r = r ? r : ds_buf_append_str(b, "</table></body></html>\n");
    free(v);
    return r;
}

int gw_admin_page(struct ds_rpc_call *call, void *ctx)
{
    struct ds_buf b;
    ds_buf_init(&b, PAGE_MAX);
    int r = render(ctx, &b);
    if (r == 0) {
        ds_rpc_call_reply_raw(call, 200, "text/html; charset=utf-8", b.data, b.len);
    }
    ds_buf_done(&b);
    return r;
}
