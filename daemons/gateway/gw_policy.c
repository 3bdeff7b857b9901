/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Port policies on the control plane (spec host-side.md §4.2 step 5, §4.4, §4.5): the registry
 * holds per instance the policy it reported (RegisterCvm or the background fetch) and the
 * operator's override; gw_policy_apply() resolves the effective one (admin override >
 * instance-reported > unknown) into the routing table the proxy reads. Instances without a
 * known policy are denied by the proxy, which asks the fetcher (gw_portfetch.c, configured by
 * [core.proxy.port_policy_fetch]) for it; the fetched policy is stored here unless a
 * registration reported one meanwhile. The Admin methods SetInstancePortPolicy,
 * ClearInstancePortPolicy and GetInstancePortPolicy (upstream's request and response field
 * names) live here too and are listed in gw_admin.c's method table.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_ctl.h"
#include "log.h"

#define POLICY_ERR_MAX 256

/* Parse a stored policy (NULL text = none). Returns the policy in *out (malloc'd) or NULL. */
static struct gw_port_policy *load(const char *text, const char *what, const char *instance_id)
{
    char err[POLICY_ERR_MAX];
    if (text == NULL) {
        return NULL;
    }
    struct gw_port_policy *p = malloc(sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    if (gw_port_policy_parse(text, strlen(text), what, p, err, sizeof(err)) < 0) {
        log_warnx("registry: instance %s: unreadable %s ignored: %s", instance_id, what, err);
        free(p);
        return NULL;
    }
    return p;
}

void gw_policy_apply(struct gw *g, const char *instance_id)
{
    struct gw_db_policies dbp;
    struct gw_port_policy *admin = NULL, *reported = NULL;
    if (g->routes == NULL) {
        return;
    }
    int r = gw_db_get_policies(g->db, instance_id, &dbp);
    if (r < 0) {
        log_warnx("registry: port policy of %s: %s", instance_id, ds_strerror(r));
        return;
    }
    admin = load(dbp.admin, "admin_port_policy", instance_id);
    reported = load(dbp.reported, "port_policy", instance_id);
    const char *source;
    const struct gw_port_policy *eff = gw_port_policy_effective(admin, reported, &source);
    r = gw_routes_set_policy(g->routes, instance_id, eff);
    if (r < 0) {
        log_warnx("routing table: port policy of %s: %s", instance_id, ds_strerror(r));
    } else {
        log_debug("instance %s: port policy from %s", instance_id, source);
    }
    free(admin);
    free(reported);
    gw_db_policies_done(&dbp);
}

static void on_fetched(const char *instance_id, int rc, const struct gw_port_policy *p,
                       unsigned attempts, const char *err, void *arg)
{
    struct gw *g = arg;
    if (rc < 0) {
        log_warnx("port policy of instance %s stays unknown (connections denied) after %u "
                  "attempt(s): %s",
                  instance_id, attempts, err);
        return;
    }
    char *text = gw_port_policy_dump(p);
    if (text == NULL) {
        return;
    }
    int r = gw_db_set_fetched_policy(g->db, instance_id, text);
    if (r == 0) {
        log_info("port policy of instance %s fetched from its agent: %s", instance_id, text);
    } else if (r != -ENOENT) {
        log_warnx("registry: cannot store the fetched port policy of %s: %s", instance_id,
                  ds_strerror(r));
    }
    free(text);
    gw_policy_apply(g, instance_id);
}

int gw_policy_start(struct gw *g)
{
    struct gw_pfetch_config pc = {
        .agent_port = g->cfg.px_agent_port,
        .timeout_ms = (uint32_t)g->cfg.ppf_timeout,
        .max_retries = (uint32_t)g->cfg.ppf_retries,
        .backoff_initial_ms = (uint32_t)g->cfg.ppf_backoff_initial,
        .backoff_max_ms = (uint32_t)g->cfg.ppf_backoff_max,
    };
    int r = gw_pfetch_new(g->base, &pc, on_fetched, g, &g->pfetch);
    if (r < 0) {
        log_warnx("port policy fetcher: %s", ds_strerror(r));
        return r;
    }
    gw_routes_set_fetch_hook(g->routes, gw_pfetch_hook, g->pfetch);
    return 0;
}

void gw_policy_stop(struct gw *g)
{
    if (g->routes != NULL) {
        gw_routes_set_fetch_hook(g->routes, NULL, NULL);
    }
    gw_pfetch_free(g->pfetch);
    g->pfetch = NULL;
}

/* ---- Admin methods -------------------------------------------------------------------------- */

struct instance_req {
    char *instance_id;
};
static const struct ds_rpc_field instance_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct instance_req, instance_id, 128),
};

/* Set (policy non-NULL) or clear the override of instance_id. */
static int write_override(struct ds_rpc_call *call, struct gw *g, const char *instance_id,
                          const json_t *policy, json_t **out)
{
    char err[POLICY_ERR_MAX], *text = NULL;
    struct gw_port_policy *p = NULL;
    int r;
    if (instance_id[0] == '\0') {
        return ds_rpc_call_error(call, "instance_id is required");
    }
    if (policy != NULL) {
        p = malloc(sizeof(*p));
        if (p == NULL) {
            return -ENOMEM;
        }
        r = gw_port_policy_from_json(policy, "policy", p, err, sizeof(err));
        if (r < 0) {
            r = ds_rpc_call_error(call, "invalid %s", err);
            goto out;
        }
        if ((text = gw_port_policy_dump(p)) == NULL) {
            r = -ENOMEM;
            goto out;
        }
    }
    r = gw_db_set_admin_policy(g->db, instance_id, text);
    if (r == -ENOENT) {
        r = ds_rpc_call_error(call, "instance %s not found", instance_id);
        goto out;
    }
    if (r < 0) {
        r = ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
        goto out;
    }
    gw_policy_apply(g, instance_id);
    log_info("admin: port policy override of instance %s %s%s", instance_id,
             text ? "set to " : "cleared", text ? text : "");
    *out = json_object();
    r = *out ? 0 : -ENOMEM;
out:
    free(text);
    free(p);
    return r;
}

int gw_admin_set_port_policy(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx)
{
    struct instance_req req = {0};
    int r = ds_rpc_call_decode(call, params, instance_fields, DS_ARRAY_SIZE(instance_fields), &req);
    if (r < 0) {
        return r;
    }
    const json_t *policy = json_is_object(params) ? json_object_get(params, "policy") : NULL;
    if (policy == NULL || json_is_null(policy)) {
        r = ds_rpc_call_error(call, "port policy is required (field \"policy\")");
    } else {
        r = write_override(call, ctx, req.instance_id, policy, out);
    }
    ds_rpc_params_free(instance_fields, DS_ARRAY_SIZE(instance_fields), &req);
    return r;
}

int gw_admin_clear_port_policy(struct ds_rpc_call *call, const json_t *params, json_t **out,
                               void *ctx)
{
    struct instance_req req = {0};
    int r = ds_rpc_call_decode(call, params, instance_fields, DS_ARRAY_SIZE(instance_fields), &req);
    if (r < 0) {
        return r;
    }
    r = write_override(call, ctx, req.instance_id, NULL, out);
    ds_rpc_params_free(instance_fields, DS_ARRAY_SIZE(instance_fields), &req);
    return r;
}

/* Set key to the policy's JSON when p is non-NULL. Returns 0 or -ENOMEM. */
static int put_policy(json_t *o, const char *key, const struct gw_port_policy *p)
{
    if (p == NULL) {
        return 0;
    }
    json_t *j = gw_port_policy_to_json(p);
    return j != NULL && json_object_set_new(o, key, j) == 0 ? 0 : -ENOMEM;
}

int gw_admin_get_port_policy(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx)
{
    struct gw *g = ctx;
    struct instance_req req = {0};
    struct gw_db_policies dbp = {0};
    struct gw_port_policy *admin = NULL, *reported = NULL;
    json_t *o = NULL;
    int r = ds_rpc_call_decode(call, params, instance_fields, DS_ARRAY_SIZE(instance_fields), &req);
    if (r < 0) {
        return r;
    }
    r = gw_db_get_policies(g->db, req.instance_id, &dbp);
    if (r == -ENOENT) {
        r = ds_rpc_call_error(call, "instance %s not found", req.instance_id);
        goto out;
    }
    if (r < 0) {
        r = ds_rpc_call_error(call, "registry: %s", ds_strerror(r));
        goto out;
    }
    admin = load(dbp.admin, "admin_port_policy", req.instance_id);
    reported = load(dbp.reported, "port_policy", req.instance_id);
    const char *source;
    const struct gw_port_policy *eff = gw_port_policy_effective(admin, reported, &source);
    o = json_pack("{s:s}", "source", source);
    r = o ? 0 : -ENOMEM;
    r = r ? r : put_policy(o, "effective", eff);
    r = r ? r : put_policy(o, "instance_reported", reported);
    r = r ? r : put_policy(o, "admin_override", admin);
    if (r == 0) {
        *out = o;
        o = NULL;
    }
out:
    json_decref(o);
    free(admin);
    free(reported);
    gw_db_policies_done(&dbp);
    ds_rpc_params_free(instance_fields, DS_ARRAY_SIZE(instance_fields), &req);
    return r;
}
