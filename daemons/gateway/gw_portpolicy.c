/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Port policies of the gateway (spec host-side.md §2.1 `port_policy`, §4.2 step 5, §4.3), as
 * pure functions so the fuzz harness (tests/fuzz/fuzz_gateway_requests.c) and the unit tests
 * compile this file alone: validation of `{ports: [{port, pp}], restrict_mode}` as a CVM
 * reports it in RegisterCvm, as an operator sets it through Admin.SetInstancePortPolicy and as
 * the gateway reads it back from its registry; extraction from a guest agent's Info answer
 * (tcb_info.app_compose.port_policy, the background fetch for CVMs that registered without
 * one); the decisions the proxy takes per connection (is the port reachable, does it get a
 * PROXY v2 header) and which policy is in force (admin override > instance-reported > none).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_proxy.h"

#define FIELD_MAX 96

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (err == NULL || err_size == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static int by_port(const void *a, const void *b)
{
    const struct gw_port_attr *x = a, *y = b;
    return (int)x->port - (int)y->port;
}

int gw_port_policy_from_json(const json_t *v, const char *field, struct gw_port_policy *out,
                             char *err, size_t err_size)
{
    struct gw_port_policy *p = calloc(1, sizeof(*p));
    int r = -DS_E_FORMAT;
    if (p == NULL) {
        return -ENOMEM;
    }
    if (!json_is_object(v)) {
        set_err(err, err_size, "%s: expected an object {ports, restrict_mode}", field);
        goto out;
    }
    const json_t *rm = json_object_get(v, "restrict_mode");
    if (rm != NULL && !json_is_boolean(rm)) {
        set_err(err, err_size, "%s.restrict_mode: expected true or false", field);
        goto out;
    }
    p->restrict_mode = json_is_true(rm);
    const json_t *ports = json_object_get(v, "ports");
    if (ports != NULL && !json_is_array(ports)) {
        set_err(err, err_size, "%s.ports: expected a list of {port, pp}", field);
        goto out;
    }
    size_t n = json_array_size(ports);
    if (n > GW_PORT_POLICY_PORTS_MAX) {
        set_err(err, err_size, "%s.ports: %zu entries, at most %d allowed", field, n,
                GW_PORT_POLICY_PORTS_MAX);
        r = -DS_E_LIMIT;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(ports, i);
        const json_t *port = json_object_get(e, "port");
        const json_t *pp = json_object_get(e, "pp");
        if (!json_is_object(e)) {
            set_err(err, err_size, "%s.ports[%zu]: expected an object {port, pp}", field, i);
            goto out;
        }
        if (!json_is_integer(port) || json_integer_value(port) < 1 ||
            json_integer_value(port) > 65535) {
            set_err(err, err_size, "%s.ports[%zu].port: expected an integer 1..65535", field, i);
            goto out;
        }
        if (pp != NULL && !json_is_boolean(pp)) {
            set_err(err, err_size, "%s.ports[%zu].pp: expected true or false", field, i);
            goto out;
        }
        p->ports[i].port = (uint16_t)json_integer_value(port);
        p->ports[i].pp = json_is_true(pp);
    }
    p->count = n;
    qsort(p->ports, n, sizeof(p->ports[0]), by_port);
    for (size_t i = 1; i < n; i++) {
        if (p->ports[i].port == p->ports[i - 1].port) {
            set_err(err, err_size, "%s.ports: port %u is listed twice", field,
                    (unsigned)p->ports[i].port);
            goto out;
        }
    }
    *out = *p;
    r = 0;
out:
    free(p);
    return r;
}

int gw_port_policy_parse(const char *text, size_t len, const char *field,
                         struct gw_port_policy *out, char *err, size_t err_size)
{
    if (len > GW_PORT_POLICY_TEXT_MAX) {
        set_err(err, err_size, "%s: %zu bytes, at most %d allowed", field, len,
                GW_PORT_POLICY_TEXT_MAX);
        return -DS_E_LIMIT;
    }
    json_error_t je;
    json_t *v = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (v == NULL) {
        set_err(err, err_size, "%s: not JSON: %s", field, je.text);
        return -DS_E_FORMAT;
    }
    int r = gw_port_policy_from_json(v, field, out, err, err_size);
    json_decref(v);
    return r;
}

json_t *gw_port_policy_to_json(const struct gw_port_policy *p)
{
    json_t *ports = json_array();
    for (size_t i = 0; ports && i < p->count; i++) {
        if (json_array_append_new(ports, json_pack("{s:i, s:b}", "port", (int)p->ports[i].port,
                                                   "pp", (int)p->ports[i].pp)) < 0) {
            json_decref(ports);
            return NULL;
        }
    }
    return ports ? json_pack("{s:o, s:b}", "ports", ports, "restrict_mode", (int)p->restrict_mode)
                 : NULL;
}

char *gw_port_policy_dump(const struct gw_port_policy *p)
{
    json_t *j = gw_port_policy_to_json(p);
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    return s;
}

static const struct gw_port_attr *find_port(const struct gw_port_policy *p, uint16_t port)
{
    struct gw_port_attr key = {.port = port};
    return bsearch(&key, p->ports, p->count, sizeof(p->ports[0]), by_port);
}

bool gw_port_policy_allows(const struct gw_port_policy *p, uint16_t port)
{
    return !p->restrict_mode || find_port(p, port) != NULL;
}

bool gw_port_policy_wants_pp(const struct gw_port_policy *p, uint16_t port)
{
    const struct gw_port_attr *a = find_port(p, port);
    return a != NULL && a->pp;
}

const struct gw_port_policy *gw_port_policy_effective(const struct gw_port_policy *admin,
                                                      const struct gw_port_policy *reported,
                                                      const char **source)
{
    const char *src = admin ? "admin" : reported ? "instance" : "none";
    if (source != NULL) {
        *source = src;
    }
    return admin ? admin : reported;
}

int gw_port_policy_from_agent_info(const char *body, size_t len, struct gw_port_policy *out,
                                   char *err, size_t err_size)
{
    json_error_t je;
    json_t *info = NULL, *tcb = NULL, *compose = NULL;
    int r = -DS_E_FORMAT;
    if (len > GW_AGENT_INFO_MAX) {
        set_err(err, err_size, "agent Info answer: %zu bytes is too large", len);
        return -DS_E_LIMIT;
    }
    info = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(info)) {
        set_err(err, err_size, "agent Info answer: expected a JSON object");
        goto out;
    }
    const json_t *t = json_object_get(info, "tcb_info");
    if (t != NULL && !json_is_string(t)) {
        set_err(err, err_size, "agent Info: tcb_info: expected a string");
        goto out;
    }
    if (t == NULL || json_string_length(t) == 0) {
        /* public_tcbinfo = false: nothing to inspect; upstream caches the open policy. */
        memset(out, 0, sizeof(*out));
        r = 0;
        goto out;
    }
    tcb = json_loadb(json_string_value(t), json_string_length(t), JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(tcb)) {
        set_err(err, err_size, "agent Info: tcb_info: expected a JSON object text");
        goto out;
    }
    const json_t *ac = json_object_get(tcb, "app_compose");
    if (!json_is_string(ac)) {
        set_err(err, err_size, "agent Info: tcb_info.app_compose: expected a string");
        goto out;
    }
    compose = json_loadb(json_string_value(ac), json_string_length(ac), 0, &je);
    if (!json_is_object(compose)) {
        set_err(err, err_size, "agent Info: tcb_info.app_compose: not a JSON object");
        goto out;
    }
    const json_t *pp = json_object_get(compose, "port_policy");
    if (pp == NULL || json_is_null(pp)) {
        memset(out, 0, sizeof(*out));
        r = 0;
        goto out;
    }
    r = gw_port_policy_from_json(pp, "app_compose.port_policy", out, err, err_size);
out:
    json_decref(compose);
    json_decref(tcb);
    json_decref(info);
    return r;
}
