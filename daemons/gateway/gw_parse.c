/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Pure helpers of the gateway control plane, free of daemon state so that the fuzz harness
 * (tests/fuzz/fuzz_gateway_requests.c) can compile this file on its own: IPv4 CIDR parsing and
 * the WireGuard address plan (spec host-side.md §4.3: every reserved_net inside the wg
 * network, the gateway address inside a reserved_net, client_ip_range inside the network;
 * never hand out the network, broadcast, gateway or a reserved address), WireGuard key and id
 * syntax, the `wg show <if> dump` parser, admin token extraction and HTML escaping.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/base.h"
#include "gw_ctl.h"

#define CIDR_TEXT_MAX 32
#define DUMP_FIELDS   8

uint32_t gw_cidr_mask(unsigned prefix)
{
    return prefix == 0 ? 0 : (uint32_t)(0xffffffffu << (32 - prefix));
}

int gw_ip4_parse(const char *s, uint32_t *out)
{
    struct in_addr a;
    if (!s || inet_pton(AF_INET, s, &a) != 1) {
        return -DS_E_FORMAT;
    }
    *out = ntohl(a.s_addr);
    return 0;
}

void gw_ip4_text(uint32_t ip, char out[GW_IP4_TEXT_MAX])
{
    struct in_addr a = {.s_addr = htonl(ip)};
    if (!inet_ntop(AF_INET, &a, out, GW_IP4_TEXT_MAX)) {
        out[0] = '\0';
    }
}

int gw_cidr_parse(const char *s, struct gw_cidr *out)
{
    char buf[CIDR_TEXT_MAX];
    unsigned prefix = 32;
    uint32_t ip;
    if (!s) {
        return -DS_E_FORMAT;
    }
    size_t n = strlen(s);
    if (n == 0 || n >= sizeof(buf)) {
        return -DS_E_FORMAT;
    }
    memcpy(buf, s, n + 1);
    char *slash = strchr(buf, '/');
    if (slash) {
        *slash = '\0';
        const char *p = slash + 1;
        size_t digits = strspn(p, "0123456789");
        if (digits == 0 || digits > 2 || p[digits] != '\0') {
            return -DS_E_FORMAT;
        }
        prefix = (unsigned)atoi(p);
        if (prefix > 32) {
            return -DS_E_FORMAT;
        }
    }
    DS_TRY(gw_ip4_parse(buf, &ip));
    out->addr = ip;
    out->prefix = prefix;
    return 0;
}

bool gw_cidr_contains(const struct gw_cidr *net, uint32_t ip)
{
    uint32_t m = gw_cidr_mask(net->prefix);
    return (ip & m) == (net->addr & m);
}

bool gw_cidr_inside(const struct gw_cidr *a, const struct gw_cidr *b)
{
    return a->prefix >= b->prefix && gw_cidr_contains(b, a->addr & gw_cidr_mask(a->prefix));
}

int gw_net_init(struct gw_net *net, const char *ip, const char *const *reserved,
                size_t reserved_count, const char *range, char *err, size_t err_size)
{
    memset(net, 0, sizeof(*net));
    if (gw_cidr_parse(ip, &net->wg) < 0 || net->wg.prefix > 30) {
        snprintf(err, err_size, "core.wg.ip \"%s\": expected an IPv4 address/prefix (<= /30)",
                 ip ? ip : "");
        return -EINVAL;
    }
    if (gw_cidr_parse(range, &net->range) < 0) {
        snprintf(err, err_size, "core.wg.client_ip_range \"%s\": expected an IPv4 CIDR",
                 range ? range : "");
        return -EINVAL;
    }
    if (!gw_cidr_inside(&net->range, &net->wg)) {
        snprintf(err, err_size, "core.wg.client_ip_range %s is not inside the network of %s", range,
                 ip);
        return -EINVAL;
    }
    if (32 - net->range.prefix > 16) {
        snprintf(err, err_size, "core.wg.client_ip_range %s: larger than a /16", range);
        return -EINVAL;
    }
    if (reserved_count > GW_RESERVED_MAX) {
        snprintf(err, err_size, "core.wg.reserved_net: more than %d entries", GW_RESERVED_MAX);
        return -EINVAL;
    }
    bool gateway_reserved = false;
    for (size_t i = 0; i < reserved_count; i++) {
        struct gw_cidr *c = &net->reserved[i];
        if (gw_cidr_parse(reserved[i], c) < 0) {
            snprintf(err, err_size, "core.wg.reserved_net \"%s\": expected an IPv4 CIDR",
                     reserved[i]);
            return -EINVAL;
        }
        if (!gw_cidr_inside(c, &net->wg)) {
            snprintf(err, err_size, "core.wg.reserved_net %s is not inside the network of %s",
                     reserved[i], ip);
            return -EINVAL;
        }
        gateway_reserved = gateway_reserved || gw_cidr_contains(c, net->wg.addr);
    }
    net->reserved_count = reserved_count;
    if (!gateway_reserved) {
        snprintf(err, err_size, "core.wg.reserved_net must contain the gateway address of %s", ip);
        return -EINVAL;
    }
    uint32_t m = gw_cidr_mask(net->wg.prefix);
    if (net->wg.addr == (net->wg.addr & m) || net->wg.addr == ((net->wg.addr & m) | ~m)) {
        snprintf(err, err_size, "core.wg.ip %s is the network or broadcast address", ip);
        return -EINVAL;
    }
    return 0;
}

bool gw_net_assignable(const struct gw_net *net, uint32_t ip)
{
    uint32_t m = gw_cidr_mask(net->wg.prefix);
    if (!gw_cidr_contains(&net->range, ip) || !gw_cidr_contains(&net->wg, ip)) {
        return false;
    }
    if (ip == (net->wg.addr & m) || ip == ((net->wg.addr & m) | ~m) || ip == net->wg.addr) {
        return false;
    }
    for (size_t i = 0; i < net->reserved_count; i++) {
        if (gw_cidr_contains(&net->reserved[i], ip)) {
            return false;
        }
    }
    return true;
}

int gw_net_allocate(const struct gw_net *net, bool (*in_use)(uint32_t ip, void *ctx), void *ctx,
                    uint32_t *out)
{
    uint32_t m = gw_cidr_mask(net->range.prefix);
    uint32_t first = net->range.addr & m;
    uint64_t count = (uint64_t)1 << (32 - net->range.prefix);
    for (uint64_t i = 0; i < count; i++) {
        uint32_t ip = first + (uint32_t)i;
        if (gw_net_assignable(net, ip) && !in_use(ip, ctx)) {
            *out = ip;
            return 0;
        }
    }
    return -DS_E_LIMIT;
}

bool gw_wg_key_valid(const char *b64)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    if (!b64 || strlen(b64) != GW_WG_KEY_B64_LEN || b64[GW_WG_KEY_B64_LEN - 1] != '=') {
        return false;
    }
    if (ds_base64_decode(b64, GW_WG_KEY_B64_LEN, 32, &raw, &len) < 0) {
        return false;
    }
    free(raw);
    return len == 32;
}

bool gw_hex_id_valid(const char *s, size_t max_bytes)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n % 2 || n > 2 * max_bytes) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* Split one line into tab-separated fields (in place). Returns the field count. */
static size_t split_tabs(char *line, char **fields, size_t max)
{
    size_t n = 0;
    char *p = line;
    while (n < max) {
        fields[n++] = p;
        char *t = strchr(p, '\t');
        if (!t) {
            break;
        }
        *t = '\0';
        p = t + 1;
    }
    return strchr(p, '\t') ? max + 1 : n;
}

int gw_wg_dump_parse(const char *text, size_t len,
                     void (*cb)(const struct gw_wg_peer *p, void *ctx), void *ctx)
{
    if (memchr(text, '\0', len)) {
        return -DS_E_FORMAT;
    }
    char *copy = strndup(text, len);
    if (!copy) {
        return -ENOMEM;
    }
    int r = 0, peers = 0;
    bool first = true;
    char *save = NULL;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        char *f[DUMP_FIELDS + 1];
        size_t n = split_tabs(line, f, DUMP_FIELDS);
        if (first) {
            first = false;
            if (n != 4) {
                r = -DS_E_FORMAT;
                goto out;
            }
            continue;
        }
        if (n != DUMP_FIELDS || !gw_wg_key_valid(f[0])) {
            r = -DS_E_FORMAT;
            goto out;
        }
        size_t d = strspn(f[4], "0123456789");
        if (d == 0 || d > 18 || f[4][d] != '\0') {
            r = -DS_E_FORMAT;
            goto out;
        }
        struct gw_wg_peer p;
        memcpy(p.public_key, f[0], GW_WG_KEY_B64_LEN + 1);
        p.latest_handshake = strtoll(f[4], NULL, 10);
        if (cb) {
            cb(&p, ctx);
        }
        peers++;
    }
    r = first ? -DS_E_FORMAT : peers;
out:
    free(copy);
    return r;
}

bool gw_admin_token_of(const char *authorization, const char *x_admin_token, const char *query,
                       bool is_get, char *tmp, size_t tmp_size, const char **out)
{
    if (authorization && strncasecmp(authorization, "Bearer ", 7) == 0) {
        const char *t = authorization + 7;
        while (*t == ' ') {
            t++;
        }
        *out = t;
        return true;
    }
    if (x_admin_token) {
        *out = x_admin_token;
        return true;
    }
    if (!is_get || !query) {
        return false;
    }
    for (const char *p = query; *p;) {
        const char *end = strchr(p, '&');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        if (n > 6 && strncmp(p, "token=", 6) == 0 && n - 6 < tmp_size) {
            /* percent-decode the value */
            size_t o = 0;
            for (size_t i = 6; i < n; i++) {
                int hi, lo;
                if (p[i] == '%' && i + 2 < n && (hi = ds_hex_digit_value(p[i + 1])) >= 0 &&
                    (lo = ds_hex_digit_value(p[i + 2])) >= 0) {
                    tmp[o++] = (char)(hi * 16 + lo);
                    i += 2;
                } else {
                    tmp[o++] = p[i] == '+' ? ' ' : p[i];
                }
            }
            tmp[o] = '\0';
            *out = tmp;
            return true;
        }
        if (!end) {
            break;
        }
        p = end + 1;
    }
    return false;
}

int gw_html_escape(struct ds_buf *b, const char *s)
{
    for (const char *p = s; *p; p++) {
        const char *rep = NULL;
        switch (*p) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        DS_TRY(rep ? ds_buf_append_str(b, rep) : ds_buf_append(b, p, 1));
    }
    return 0;
}
