/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the guest gateway step's parsers of untrusted or semi-trusted input
 * (daemons/util/util_gateway_plan.c, compiled in). The first byte picks the target:
 *   0: app-compose.json's gateway fields (gws_app_parse): a parsed port_policy holds only
 *      ports 1-65535 and booleans;
 *   1: .sys-config.json's gateway_urls (gws_urls_parse): every URL is https:// without blanks;
 *   2: the key cache (gws_cache_parse): a parsed cache dumps and parses back to the same fields;
 *   3: the WireGuard config read back (gws_plan_parse + gws_tunnel_cmds): every address that
 *      reaches a command line is an IPv4 literal, no argument starts with '-' unless it is one
 *      of the fixed options;
 *   4: `wg show latest-handshakes` (gws_latest_handshake);
 *   5: the `wg setconf` text (gws_setconf_text): no Address line survives.
 */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemons/util/util_gateway_plan.c"

static bool is_ipv4(const char *s)
{
    char buf[GWS_IP_MAX + 3];
    struct in_addr a;
    size_t n = strcspn(s, "/");
    if (n >= GWS_IP_MAX) {
        return false;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    return inet_pton(AF_INET, buf, &a) == 1 && (s[n] == '\0' || strcmp(s + n, "/32") == 0);
}

static void check_cmds(const struct gws_plan *p)
{
    struct gws_cmd cmds[GWS_CMDS_MAX];
    int n = gws_tunnel_cmds(p, GWS_IFACE, cmds, DS_ARRAY_SIZE(cmds));
    if (n < 0) {
        abort();
    }
    if (!is_ipv4(p->client_ip)) {
        abort();
    }
    for (size_t i = 0; i < p->route_count; i++) {
        if (!is_ipv4(p->routes[i])) {
            abort();
        }
    }
    for (size_t i = 0; i < p->endpoint_count; i++) {
        if (!is_ipv4(p->endpoints[i])) {
            abort();
        }
    }
    for (int i = 0; i < n; i++) {
        for (size_t k = 1; cmds[i].argv[k]; k++) {
            const char *a = cmds[i].argv[k];
            /* variable arguments are addresses: they start with a digit; the rest is fixed */
            static const char *const fixed[] = {GWS_IFACE, GWS_CHAIN, GWS_WG_PORT, "INPUT", "udp",
                                                "ACCEPT",  "DROP",    "address",   "flush", "dev",
                                                "replace", "set",     "up",        "route", "link"};
            bool ok = a[0] == '-' || (a[0] >= '0' && a[0] <= '9');
            for (size_t f = 0; !ok && f < DS_ARRAY_SIZE(fixed); f++) {
                ok = strcmp(a, fixed[f]) == 0;
            }
            if (!ok) {
                abort();
            }
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    char err[256];
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    char *z = malloc(len + 1);
    if (!z) {
        return 0;
    }
    memcpy(z, text, len);
    z[len] = '\0';
    switch (data[0] % 6) {
    case 0: {
        struct gws_app a;
        if (gws_app_parse(text, len, &a, err, sizeof(err)) == 0) {
            size_t i;
            const json_t *e;
            json_array_foreach(json_object_get(a.port_policy, "ports"), i, e)
            {
                json_int_t p = json_integer_value(json_object_get(e, "port"));
                if (p < 1 || p > 65535 || !json_is_boolean(json_object_get(e, "pp"))) {
                    abort();
                }
            }
            gws_app_done(&a);
        }
        break;
    }
    case 1: {
        struct gws_urls u;
        if (gws_urls_parse(text, len, &u, err, sizeof(err)) == 0) {
            for (size_t i = 0; i < u.count; i++) {
                if (strncmp(u.items[i], "https://", 8) != 0 || strpbrk(u.items[i], " \t\r\n")) {
                    abort();
                }
            }
            gws_urls_done(&u);
        }
        break;
    }
    case 2: {
        struct gws_cache c, d;
        char *dump = NULL;
        if (gws_cache_parse(text, len, &c, err, sizeof(err)) == 0) {
            if (gws_cache_dump(&c, &dump) == 0) {
                if (gws_cache_parse(dump, strlen(dump), &d, err, sizeof(err)) != 0 ||
                    d.cert_not_after != c.cert_not_after || strcmp(d.wg_pk, c.wg_pk) != 0 ||
                    (!c.client_cert) != (!d.client_cert) ||
                    (c.client_cert && strcmp(c.client_cert, d.client_cert) != 0)) {
                    abort();
                }
                gws_cache_done(&d);
                free(dump);
            }
            gws_cache_done(&c);
        }
        break;
    }
    case 3: {
        struct gws_plan p;
        if (gws_plan_parse(z, &p, err, sizeof(err)) == 0) {
            check_cmds(&p);
        }
        break;
    }
    case 4: {
        int64_t hs;
        if (gws_latest_handshake(text, len, &hs) == 0 && hs < 0) {
            abort();
        }
        break;
    }
    case 5: {
        char *out = NULL;
        if (gws_setconf_text(z, &out) == 0) {
            if (strncmp(out, "Address ", 8) == 0 || strncmp(out, "Address=", 8) == 0 ||
                strstr(out, "\nAddress ") || strstr(out, "\nAddress=")) {
                abort();
            }
            free(out);
        }
        break;
    }
    }
    free(z);
    return 0;
}
