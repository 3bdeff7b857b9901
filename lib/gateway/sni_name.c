/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's SNI grammar (spec host-side.md §4.2 step 3): an SNI `<sub>.<base>` whose base
 * has a wildcard certificate names a backend as `<id>`, `<id>-<port>`, `<id>-s`,
 * `<id>-<port>s`, `<id>-g` or `<id>-<port>g` (s = TLS passthrough, g = HTTP/2 terminated;
 * default port 443 with s, else 80), and the ids `health` and `gateway` are the gateway's own
 * endpoints. Also the custom-domain record `_dstack-app-address.<sni>` TXT `<app_id>:<port>`
 * (step 4), read from a raw DNS answer so the resolver's bytes go through ds_reader too.
 */
#include <string.h>

#include <dstack/gateway.h>

#define PORT_DIGITS_MAX     5
#define DNS_HDR_SIZE        12
#define DNS_TYPE_TXT        16
#define DNS_CLASS_IN        1
#define DNS_NAME_MAX_LABELS 128

static char lower(char c)
{
    return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c;
}

static bool is_id_char(char c)
{
    c = lower(c);
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int ds_gw_sni_split(const char *sni, size_t *sub_len, const char **base)
{
    const char *dot = strchr(sni, '.');
    if (dot == NULL || dot == sni || dot[1] == '\0') {
        return -DS_E_FORMAT;
    }
    *sub_len = (size_t)(dot - sni);
    *base = dot + 1;
    return 0;
}

/* Decimal port 1..65535 without sign or leading '+'; leading zeros refused. */
static int parse_port(const char *p, size_t n, uint16_t *out)
{
    if (n == 0 || n > PORT_DIGITS_MAX || p[0] == '0') {
        return -DS_E_FORMAT;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (p[i] < '0' || p[i] > '9') {
            return -DS_E_FORMAT;
        }
        v = v * 10 + (uint32_t)(p[i] - '0');
    }
    if (v == 0 || v > 65535) {
        return -DS_E_FORMAT;
    }
    *out = (uint16_t)v;
    return 0;
}

int ds_gw_sni_parse_sub(const char *sub, size_t sub_len, struct ds_gw_target *out)
{
    struct ds_gw_target t;
    memset(&t, 0, sizeof(t));
    const char *dash = memchr(sub, '-', sub_len);
    size_t id_len = dash ? (size_t)(dash - sub) : sub_len;
    if (id_len == 0 || id_len > DS_GW_ID_MAX) {
        return -DS_E_FORMAT;
    }
    for (size_t i = 0; i < id_len; i++) {
        if (!is_id_char(sub[i])) {
            return -DS_E_FORMAT;
        }
        t.id[i] = lower(sub[i]);
    }
    t.id[id_len] = '\0';
    t.mode = DS_GW_MODE_TERMINATE;
    if (dash != NULL) {
        const char *rest = dash + 1;
        size_t n = sub_len - id_len - 1;
        if (n == 0) {
            return -DS_E_FORMAT; /* "<id>-" */
        }
        char last = lower(rest[n - 1]);
        if (last == 's') {
            t.mode = DS_GW_MODE_PASSTHROUGH;
            n--;
        } else if (last == 'g') {
            t.mode = DS_GW_MODE_H2;
            n--;
        }
        if (n > 0) {
            /* Anything left must be the port: "443sg", "80-1", "8x" all fail here. */
            if (parse_port(rest, n, &t.port) < 0) {
                return -DS_E_FORMAT;
            }
            t.port_given = true;
        }
    }
    if (!t.port_given) {
        t.port = t.mode == DS_GW_MODE_PASSTHROUGH ? 443 : 80;
    }
    if (strcmp(t.id, "health") == 0) {
        t.special = DS_GW_SPECIAL_HEALTH;
    } else if (strcmp(t.id, "gateway") == 0) {
        t.special = DS_GW_SPECIAL_GATEWAY;
    }
    if (t.special != DS_GW_SPECIAL_NONE && (t.mode != DS_GW_MODE_TERMINATE || t.port != 80)) {
        return -DS_E_FORMAT; /* special ids are terminated and port 80 only */
    }
    *out = t;
    return 0;
}

bool ds_gw_domain_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    if (la > 0 && a[la - 1] == '.') {
        la--;
    }
    if (lb > 0 && b[lb - 1] == '.') {
        lb--;
    }
    if (la != lb || la == 0) {
        return false;
    }
    for (size_t i = 0; i < la; i++) {
        if (lower(a[i]) != lower(b[i])) {
            return false;
        }
    }
    return true;
}

int ds_gw_app_address_parse(const char *text, size_t len, char *app_id_out, size_t app_id_size,
                            uint16_t *port_out)
{
    const char *colon = memchr(text, ':', len);
    if (colon == NULL) {
        return -DS_E_FORMAT;
    }
    size_t id_len = (size_t)(colon - text);
    if (id_len == 0 || id_len > DS_GW_ID_MAX || id_len >= app_id_size) {
        return -DS_E_FORMAT;
    }
    for (size_t i = 0; i < id_len; i++) {
        if (!is_id_char(text[i])) {
            return -DS_E_FORMAT;
        }
    }
    uint16_t port;
    if (parse_port(colon + 1, len - id_len - 1, &port) < 0) {
        return -DS_E_FORMAT;
    }
    for (size_t i = 0; i < id_len; i++) {
        app_id_out[i] = lower(text[i]);
    }
    app_id_out[id_len] = '\0';
    *port_out = port;
    return 0;
}

/* Skip a possibly compressed name (RFC 1035 §4.1.4). A pointer ends the name in place. */
static int skip_name(struct ds_reader *r)
{
    for (unsigned labels = 0; labels < DNS_NAME_MAX_LABELS; labels++) {
        uint8_t n;
        DS_TRY(ds_rd_u8(r, &n));
        if (n == 0) {
            return 0;
        }
        if ((n & 0xc0) == 0xc0) {
            return ds_rd_skip(r, 1);
        }
        if ((n & 0xc0) != 0) {
            return -DS_E_FORMAT;
        }
        DS_TRY(ds_rd_skip(r, n));
    }
    return -DS_E_FORMAT;
}

int ds_gw_dns_txt_app_address(const void *msg, size_t len, char *app_id_out, size_t app_id_size,
                              uint16_t *port_out)
{
    struct ds_reader r;
    uint16_t id, flags, qd, an, ns, ar;
    ds_rd_init(&r, msg, len);
    DS_TRY(ds_rd_u16be(&r, &id));
    DS_TRY(ds_rd_u16be(&r, &flags));
    DS_TRY(ds_rd_u16be(&r, &qd));
    DS_TRY(ds_rd_u16be(&r, &an));
    DS_TRY(ds_rd_u16be(&r, &ns));
    DS_TRY(ds_rd_u16be(&r, &ar));
    (void)id;
    (void)ns;
    (void)ar;
    if ((flags & 0x8000) == 0) {
        return -DS_E_FORMAT; /* not a response */
    }
    if ((flags & 0x000f) != 0) {
        return -DS_E_NOT_FOUND; /* rcode: NXDOMAIN, SERVFAIL, ... */
    }
    for (uint16_t i = 0; i < qd; i++) {
        DS_TRY(skip_name(&r));
        DS_TRY(ds_rd_skip(&r, 4));
    }
    for (uint16_t i = 0; i < an; i++) {
        uint16_t type, klass, rdlen;
        uint32_t ttl;
        struct ds_reader rd;
        DS_TRY(skip_name(&r));
        DS_TRY(ds_rd_u16be(&r, &type));
        DS_TRY(ds_rd_u16be(&r, &klass));
        DS_TRY(ds_rd_u32be(&r, &ttl));
        DS_TRY(ds_rd_u16be(&r, &rdlen));
        DS_TRY(ds_rd_sub(&r, rdlen, &rd));
        if (type != DNS_TYPE_TXT || klass != DNS_CLASS_IN) {
            continue; /* CNAMEs in the chain */
        }
        /* A TXT record is a sequence of <len><bytes> strings, concatenated (RFC 7208 §3.3). */
        char text[DS_GW_TXT_MAX];
        size_t tlen = 0;
        bool ok = true;
        while (ds_rd_left(&rd) > 0) {
            uint8_t n;
            const uint8_t *p;
            DS_TRY(ds_rd_u8(&rd, &n));
            DS_TRY(ds_rd_ptr(&rd, n, &p));
            if (n > sizeof(text) - tlen) {
                ok = false;
                break;
            }
            memcpy(text + tlen, p, n);
            tlen += n;
        }
        if (ok && ds_gw_app_address_parse(text, tlen, app_id_out, app_id_size, port_out) == 0) {
            return 0;
        }
    }
    return -DS_E_NOT_FOUND;
}
