/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pure parts of the guest's gateway registration (spec host-side.md §3.6, §4.3): parsing
 * app-compose.json's gateway fields and port_policy, .sys-config.json's gateway_urls and the key
 * cache; reading back the WireGuard config (whose values came from the gateway's answer) into
 * validated addresses; the argument vectors of iptables / ip; `wg show latest-handshakes`; and
 * the gateway checker's decision as a function of time and state. No I/O and no logging: the
 * callers (util_gateway_setup.c) log, the unit tests and the fuzz harness compile this file in.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>

#include "dstack/base.h"
#include "dstack/crypto.h"
#include "util_gateway_setup.h"

#define PLAN_LINE_MAX 512

static json_t *load_obj(const char *text, size_t len, const char *what, char *err, size_t err_size)
{
    json_error_t je;
    json_t *j = json_loadb(text, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(j)) {
        snprintf(err, err_size, "%s: not a JSON object%s%s", what, j ? "" : ": ", j ? "" : je.text);
        json_decref(j);
        return NULL;
    }
    return j;
}

/* An optional boolean field: absent/null = false; another type is an error. */
static int opt_bool(const json_t *o, const char *name, bool *out, char *err, size_t err_size)
{
    const json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) {
        *out = false;
        return 0;
    }
    if (!json_is_boolean(v)) {
        snprintf(err, err_size, "app-compose.json: %s must be a boolean", name);
        return -DS_E_FORMAT;
    }
    *out = json_is_true(v);
    return 0;
}

/* port_policy {ports:[{port 1..65535, pp bool}], restrict_mode bool} -> a fresh copy. */
static int parse_port_policy(const json_t *pp, json_t **out, char *err, size_t err_size)
{
    json_t *ports = json_array(), *res = NULL;
    const json_t *in_ports = pp ? json_object_get(pp, "ports") : NULL;
    const json_t *rm = pp ? json_object_get(pp, "restrict_mode") : NULL;
    int r = -DS_E_FORMAT;
    if (!ports) {
        return -ENOMEM;
    }
    if (pp && !json_is_null(pp) && !json_is_object(pp)) {
        snprintf(err, err_size, "app-compose.json: port_policy must be an object");
        goto out;
    }
    if (in_ports && !json_is_null(in_ports) &&
        (!json_is_array(in_ports) || json_array_size(in_ports) > GWS_PORTS_MAX)) {
        snprintf(err, err_size,
                 "app-compose.json: port_policy.ports must be an array of at most %d",
                 GWS_PORTS_MAX);
        goto out;
    }
    if (rm && !json_is_null(rm) && !json_is_boolean(rm)) {
        snprintf(err, err_size, "app-compose.json: port_policy.restrict_mode must be a boolean");
        goto out;
    }
    size_t i;
    const json_t *e;
    json_array_foreach(in_ports, i, e)
    {
        const json_t *port = json_object_get(e, "port"), *ppv = json_object_get(e, "pp");
        json_int_t p = json_is_integer(port) ? json_integer_value(port) : 0;
        if (!json_is_object(e) || p < 1 || p > 65535 || (ppv && !json_is_boolean(ppv))) {
            snprintf(err, err_size,
                     "app-compose.json: port_policy.ports[%zu] must be {port: 1-65535, pp: bool}",
                     i);
            goto out;
        }
        if (json_array_append_new(
                ports, json_pack("{s:I,s:b}", "port", p, "pp", json_is_true(ppv))) != 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    res = json_pack("{s:O,s:b}", "ports", ports, "restrict_mode", json_is_true(rm));
    if (!res) {
        r = -ENOMEM;
        goto out;
    }
    *out = res;
    r = 0;
out:
    json_decref(ports);
    return r;
}

int gws_app_parse(const char *text, size_t len, struct gws_app *out, char *err, size_t err_size)
{
    struct gws_app a = {.enabled = false};
    bool gw = false, tp = false;
    json_t *j = load_obj(text, len, "app-compose.json", err, err_size);
    if (!j) {
        return -DS_E_FORMAT;
    }
    int r = opt_bool(j, "gateway_enabled", &gw, err, err_size);
    if (r == 0) {
        r = opt_bool(j, "tproxy_enabled", &tp, err, err_size);
    }
    if (r == 0) {
        r = opt_bool(j, "no_instance_id", &a.no_instance_id, err, err_size);
    }
    const json_t *f = json_object_get(j, "features");
    if (r == 0 && f && !json_is_null(f) && !json_is_array(f)) {
        snprintf(err, err_size, "app-compose.json: features must be an array of strings");
        r = -DS_E_FORMAT;
    }
    size_t i;
    const json_t *e;
    bool tproxy_net = false;
    json_array_foreach(f, i, e)
    {
        if (json_is_string(e) && strcmp(json_string_value(e), "tproxy-net") == 0) {
            tproxy_net = true;
        }
    }
    a.enabled = gw || tp || tproxy_net;
    if (r == 0) {
        r = parse_port_policy(json_object_get(j, "port_policy"), &a.port_policy, err, err_size);
    }
    json_decref(j);
    if (r == 0) {
        *out = a;
    }
    return r;
}

void gws_app_done(struct gws_app *a)
{
    if (a) {
        json_decref(a->port_policy);
        a->port_policy = NULL;
    }
}

int gws_urls_parse(const char *text, size_t len, struct gws_urls *out, char *err, size_t err_size)
{
    struct gws_urls u = {.count = 0};
    json_t *j = load_obj(text, len, ".sys-config.json", err, err_size);
    if (!j) {
        return -DS_E_FORMAT;
    }
    const json_t *a = json_object_get(j, "gateway_urls"), *e;
    int r = 0;
    size_t i;
    if (a && !json_is_null(a) && (!json_is_array(a) || json_array_size(a) > GWS_URLS_MAX)) {
        snprintf(err, err_size, ".sys-config.json: gateway_urls must be an array of at most %d",
                 GWS_URLS_MAX);
        r = -DS_E_FORMAT;
    }
    json_array_foreach(a, i, e)
    {
        const char *s = json_string_value(e);
        if (r < 0) {
            break;
        }
        if (!s || strncmp(s, "https://", 8) != 0 || strlen(s) >= GWS_URL_MAX ||
            strpbrk(s, " \t\r\n")) {
            snprintf(err, err_size, ".sys-config.json: gateway_urls[%zu] must be an https:// URL",
                     i);
            r = -DS_E_FORMAT;
        } else if (!(u.items[u.count] = strdup(s))) {
            r = -ENOMEM;
        } else {
            u.count++;
        }
    }
    json_decref(j);
    if (r < 0) {
        gws_urls_done(&u);
        return r;
    }
    *out = u;
    return 0;
}

void gws_urls_done(struct gws_urls *u)
{
    for (size_t i = 0; u && i < u->count; i++) {
        free(u->items[i]);
        u->items[i] = NULL;
    }
    if (u) {
        u->count = 0;
    }
}

/* ---- the key cache --------------------------------------------------------------------------- */

static void free_secret(char **s)
{
    if (*s) {
        ds_wipe(*s, strlen(*s));
        free(*s);
        *s = NULL;
    }
}

void gws_cache_done(struct gws_cache *c)
{
    if (!c) {
        return;
    }
    free(c->client_cert);
    free(c->client_cert_with_quote);
    c->client_cert = c->client_cert_with_quote = NULL;
    free_secret(&c->client_key);
    free_secret(&c->client_key_with_quote);
    ds_wipe(c->wg_sk, sizeof(c->wg_sk));
    c->wg_pk[0] = '\0';
}

static int cache_str(const json_t *j, const char *name, char **out, char *err, size_t err_size)
{
    const json_t *v = json_object_get(j, name);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 ||
        strlen(json_string_value(v)) != json_string_length(v)) {
        snprintf(err, err_size, "gateway cache: %s must be a non-empty string", name);
        return -DS_E_FORMAT;
    }
    *out = strdup(json_string_value(v));
    return *out ? 0 : -ENOMEM;
}

/* wg_sk/wg_pk: both or neither; wg_pk must be X25519(wg_sk). */
static int cache_wg(const json_t *j, struct gws_cache *c, char *err, size_t err_size)
{
    const char *sk = json_string_value(json_object_get(j, "wg_sk"));
    const char *pk = json_string_value(json_object_get(j, "wg_pk"));
    uint8_t *raw = NULL, pub[32];
    size_t n = 0;
    if (!sk && !pk) {
        return 0;
    }
    int r = -DS_E_FORMAT;
    if (sk && pk && strlen(sk) == GWS_KEY_B64_LEN && strlen(pk) == GWS_KEY_B64_LEN &&
        ds_base64_decode(sk, GWS_KEY_B64_LEN, 32, &raw, &n) == 0 && n == 32 &&
        ds_x25519_public(raw, pub) == 0) {
        char *want = ds_base64_encode(pub, sizeof(pub));
        r = want && strcmp(want, pk) == 0 ? 0 : want ? -DS_E_FORMAT : -ENOMEM;
        free(want);
    }
    if (raw) {
        ds_wipe(raw, n);
        free(raw);
    }
    if (r == -DS_E_FORMAT) {
        snprintf(err, err_size, "gateway cache: wg_sk/wg_pk must be a WireGuard key pair");
    } else if (r == 0) {
        memcpy(c->wg_sk, sk, GWS_KEY_B64_LEN + 1);
        memcpy(c->wg_pk, pk, GWS_KEY_B64_LEN + 1);
    }
    return r;
}

int gws_cache_parse(const char *text, size_t len, struct gws_cache *out, char *err, size_t err_size)
{
    struct gws_cache c = {.cert_not_after = 0};
    json_t *j = load_obj(text, len, "gateway cache", err, err_size);
    if (!j) {
        return -DS_E_FORMAT;
    }
    const json_t *na = json_object_get(j, "cert_not_after");
    int r = 0;
    if (na && !json_is_null(na) && (!json_is_integer(na) || json_integer_value(na) < 0)) {
        snprintf(err, err_size, "gateway cache: cert_not_after must be Unix seconds");
        r = -DS_E_FORMAT;
    }
    c.cert_not_after = json_is_integer(na) ? (int64_t)json_integer_value(na) : 0;
    if (r == 0) {
        r = cache_str(j, "client_cert", &c.client_cert, err, err_size);
    }
    if (r == 0) {
        r = cache_str(j, "client_key", &c.client_key, err, err_size);
    }
    if (r == 0) {
        r = cache_str(j, "client_cert_with_quote", &c.client_cert_with_quote, err, err_size);
    }
    if (r == 0) {
        r = cache_str(j, "client_key_with_quote", &c.client_key_with_quote, err, err_size);
    }
    if (r == 0) {
        r = cache_wg(j, &c, err, err_size);
    }
    if (r == 0 && (!c.client_cert) != (!c.client_key)) {
        snprintf(err, err_size, "gateway cache: client_cert and client_key go together");
        r = -DS_E_FORMAT;
    }
    if (r == 0 && (!c.client_cert_with_quote) != (!c.client_key_with_quote)) {
        snprintf(err, err_size,
                 "gateway cache: client_cert_with_quote and client_key_with_quote go together");
        r = -DS_E_FORMAT;
    }
    json_decref(j);
    if (r < 0) {
        gws_cache_done(&c);
        return r;
    }
    *out = c;
    return 0;
}

int gws_cache_dump(const struct gws_cache *c, char **out)
{
    json_t *j = json_object();
    int r = j ? 0 : -ENOMEM;
    const struct {
        const char *name, *value;
    } f[] = {{"client_cert", c->client_cert},
             {"client_key", c->client_key},
             {"client_cert_with_quote", c->client_cert_with_quote},
             {"client_key_with_quote", c->client_key_with_quote},
             {"wg_sk", c->wg_sk[0] ? c->wg_sk : NULL},
             {"wg_pk", c->wg_pk[0] ? c->wg_pk : NULL}};
    for (size_t i = 0; r == 0 && i < DS_ARRAY_SIZE(f); i++) {
        if (f[i].value && json_object_set_new(j, f[i].name, json_string(f[i].value)) != 0) {
            r = -ENOMEM;
        }
    }
    if (r == 0 && json_object_set_new(j, "cert_not_after", json_integer(c->cert_not_after)) != 0) {
        r = -ENOMEM;
    }
    char *s = r == 0 ? json_dumps(j, JSON_INDENT(1) | JSON_SORT_KEYS) : NULL;
    json_decref(j); /* the jansson allocator of dstack-util wipes freed strings */
    if (!s) {
        return -ENOMEM;
    }
    *out = s;
    return 0;
}

bool gws_cache_cert_fresh(const struct gws_cache *c, int64_t now)
{
    return c->client_cert && c->client_key && c->cert_not_after - now >= GWS_CACHE_MIN_LEFT;
}

/* ---- the WireGuard config, read back ----------------------------------------------------------
 */

/* s (len n) is an IPv4 literal: copy it NUL-terminated into out. */
static bool ipv4_of(const char *s, size_t n, char out[GWS_IP_MAX])
{
    struct in_addr a;
    if (n == 0 || n >= GWS_IP_MAX) {
        return false;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return inet_pton(AF_INET, out, &a) == 1;
}

/* "a.b.c.d/32" (the only mask util_gateway_wg_config writes) */
static bool host_route(const char *v, char out[GWS_IP_MAX])
{
    size_t n = strlen(v);
    return n > 3 && strcmp(v + n - 3, "/32") == 0 && ipv4_of(v, n - 3, out);
}

int gws_plan_parse(const char *conf, struct gws_plan *out, char *err, size_t err_size)
{
    struct gws_plan p;
    memset(&p, 0, sizeof(p));
    char line[PLAN_LINE_MAX], ip[GWS_IP_MAX];
    const char *s = conf;
    size_t lineno = 0;
    while (*s) {
        size_t n = strcspn(s, "\n");
        lineno++;
        if (n >= sizeof(line)) {
            snprintf(err, err_size, "WireGuard config line %zu too long", lineno);
            return -DS_E_FORMAT;
        }
        memcpy(line, s, n);
        line[n] = '\0';
        s += n + (s[n] == '\n');
        const char *eq = strstr(line, " = ");
        if (!eq) {
            continue; /* section headers, blank lines */
        }
        size_t klen = (size_t)(eq - line);
        const char *v = eq + 3;
        if (klen == 7 && memcmp(line, "Address", 7) == 0) {
            if (p.client_ip[0] || !host_route(v, p.client_ip)) {
                snprintf(err, err_size, "WireGuard config: Address must be one IPv4 /32");
                return -DS_E_FORMAT;
            }
        } else if (klen == 10 && memcmp(line, "AllowedIPs", 10) == 0) {
            if (p.route_count == GWS_SERVERS_MAX || !host_route(v, ip)) {
                snprintf(err, err_size, "WireGuard config: AllowedIPs must be one IPv4 /32");
                return -DS_E_FORMAT;
            }
            snprintf(p.routes[p.route_count++], sizeof(p.routes[0]), "%s/32", ip);
        } else if (klen == 8 && memcmp(line, "Endpoint", 8) == 0) {
            const char *colon = strrchr(v, ':');
            char *end = NULL;
            long port = colon ? strtol(colon + 1, &end, 10) : 0;
            if (!colon || !ipv4_of(v, (size_t)(colon - v), ip) || !end || *end || port < 1 ||
                port > 65535 || colon[1] < '0' || colon[1] > '9') {
                snprintf(err, err_size,
                         "WireGuard config: Endpoint '%.64s' must be IPv4:port (it becomes an "
                         "iptables rule)",
                         v);
                return -DS_E_FORMAT;
            }
            bool seen = false;
            for (size_t i = 0; i < p.endpoint_count; i++) {
                seen = seen || strcmp(p.endpoints[i], ip) == 0;
            }
            if (!seen && p.endpoint_count < GWS_SERVERS_MAX) {
                memcpy(p.endpoints[p.endpoint_count++], ip, GWS_IP_MAX);
            }
        }
    }
    if (!p.client_ip[0] || p.route_count == 0 || p.endpoint_count == 0) {
        snprintf(err, err_size, "WireGuard config: needs Address, AllowedIPs and Endpoint");
        return -DS_E_FORMAT;
    }
    *out = p;
    return 0;
}

int gws_setconf_text(const char *conf, char **out)
{
    static const char *const quick_only[] = {"Address", "DNS",     "MTU",      "Table",     "PreUp",
                                             "PostUp",  "PreDown", "PostDown", "SaveConfig"};
    struct ds_buf b;
    ds_buf_init(&b, GWS_FILE_MAX);
    b.secret = true;
    int r = 0;
    for (const char *s = conf; r == 0 && *s;) {
        size_t n = strcspn(s, "\n");
        bool skip = false;
        for (size_t i = 0; i < DS_ARRAY_SIZE(quick_only); i++) {
            size_t k = strlen(quick_only[i]);
            skip = skip || (n > k && memcmp(s, quick_only[i], k) == 0 &&
                            (s[k] == ' ' || s[k] == '=' || s[k] == '\t'));
        }
        if (!skip) {
            r = ds_buf_append(&b, s, n);
            if (r == 0) {
                r = ds_buf_append(&b, "\n", 1);
            }
        }
        s += n + (s[n] == '\n');
    }
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    size_t len;
    ds_buf_steal(&b, (uint8_t **)out, &len);
    return 0;
}

/* ---- the commands that bring the tunnel up ----------------------------------------------------
 */

static int add_cmd(struct gws_cmd *out, size_t max, size_t *n, bool may_fail,
                   const char *const *argv)
{
    if (*n >= max) {
        return -DS_E_LIMIT;
    }
    struct gws_cmd *c = &out[(*n)++];
    size_t i = 0;
    for (; argv[i] && i + 1 < GWS_ARGV_MAX; i++) {
        c->argv[i] = argv[i];
    }
    c->argv[i] = NULL;
    c->may_fail = may_fail;
    return 0;
}

#define CMD(may_fail, ...)                                                                         \
    do {                                                                                           \
        const char *const a_[] = {__VA_ARGS__, NULL};                                              \
        DS_TRY(add_cmd(out, max, &n, may_fail, a_));                                               \
    } while (0)

int gws_tunnel_cmds(const struct gws_plan *p, const char *iface, struct gws_cmd *out, size_t max)
{
    size_t n = 0;
    /* iptables chain DSTACK_WG (§4.3): flush; jump from INPUT for udp dport 9182 (exactly one:
     * delete a previous jump first); ACCEPT each server endpoint; final DROP */
    CMD(true, "iptables", "-w", "-N", GWS_CHAIN);
    CMD(false, "iptables", "-w", "-F", GWS_CHAIN);
    CMD(true, "iptables", "-w", "-D", "INPUT", "-p", "udp", "--dport", GWS_WG_PORT, "-j",
        GWS_CHAIN);
    CMD(false, "iptables", "-w", "-I", "INPUT", "-p", "udp", "--dport", GWS_WG_PORT, "-j",
        GWS_CHAIN);
    for (size_t i = 0; i < p->endpoint_count; i++) {
        CMD(false, "iptables", "-w", "-A", GWS_CHAIN, "-s", p->endpoints[i], "-j", "ACCEPT");
    }
    CMD(false, "iptables", "-w", "-A", GWS_CHAIN, "-j", "DROP");
    /* what wg-quick up does besides setconf: address, link up, routes for AllowedIPs */
    CMD(false, "ip", "-4", "address", "flush", "dev", iface);
    CMD(false, "ip", "-4", "address", "replace", p->client_ip, "dev", iface);
    CMD(false, "ip", "link", "set", "dev", iface, "up");
    CMD(true, "ip", "-4", "route", "flush", "dev", iface);
    for (size_t i = 0; i < p->route_count; i++) {
        CMD(false, "ip", "-4", "route", "replace", p->routes[i], "dev", iface);
    }
    return (int)n;
}

int gws_latest_handshake(const char *text, size_t len, int64_t *out)
{
    int64_t best = 0;
    size_t off = 0;
    while (off < len) {
        const char *s = text + off;
        const char *nl = memchr(s, '\n', len - off);
        size_t n = nl ? (size_t)(nl - s) : len - off;
        off += n + (nl != NULL);
        if (n == 0) {
            continue;
        }
        const char *tab = memchr(s, '\t', n);
        if (!tab || tab - s != GWS_KEY_B64_LEN) {
            return -DS_E_FORMAT;
        }
        int64_t v = 0;
        const char *d = tab + 1;
        if (d == s + n) {
            return -DS_E_FORMAT;
        }
        for (; d < s + n; d++) {
            if (*d < '0' || *d > '9' || v > (INT64_MAX - 9) / 10) {
                return -DS_E_FORMAT;
            }
            v = v * 10 + (*d - '0');
        }
        best = v > best ? v : best;
    }
    *out = best;
    return 0;
}

/* ---- the checker's decision -------------------------------------------------------------------
 */

enum gws_action gws_check_decide(const struct gws_check_params *p, struct gws_check_state *st,
                                 int64_t now, bool conf_exists, int64_t latest_handshake)
{
    if (now < st->next_retry) {
        return GWS_NOTHING; /* backing off after a failure */
    }
    if (!conf_exists) {
        st->hs_absent_since = 0;
        st->last_forced = now;
        return GWS_FORCE;
    }
    bool stale;
    if (latest_handshake > 0) {
        st->hs_absent_since = 0;
        stale = now - latest_handshake > p->handshake_timeout;
    } else {
        if (st->hs_absent_since == 0) {
            st->hs_absent_since = now;
        }
        stale = now - st->hs_absent_since > p->handshake_timeout;
    }
    if (stale && (st->last_forced == 0 || now - st->last_forced >= p->force_min_interval)) {
        st->last_forced = now;
        return GWS_FORCE;
    }
    if (now - st->last_register >= p->refresh_interval) {
        return GWS_REFRESH;
    }
    return GWS_NOTHING;
}

void gws_check_result(const struct gws_check_params *p, struct gws_check_state *st, int64_t now,
                      bool ok)
{
    if (ok) {
        st->last_register = now;
        st->next_retry = 0;
        st->backoff = 0;
        return;
    }
    int64_t d = st->backoff > 0 ? st->backoff : p->backoff_min;
    st->next_retry = now + d;
    st->backoff = d * 2 > p->backoff_max ? p->backoff_max : d * 2;
}
