/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PROXY protocol v1 (text) and v2 (binary) as specified by HAProxy's proxy-protocol.txt: the
 * gateway parses it from a load balancer in front of it (spec host-side.md §4.2 step 1,
 * `inbound_pp_enabled`) and writes v2 to backends whose port policy asks for it (step 5).
 * Parsing is incremental (need more / complete / error) because the header may arrive split.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <dstack/gateway.h>

static const uint8_t pp2_sig[DS_PP_V2_SIG_SIZE] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                                   0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
static const char pp1_prefix[] = "PROXY ";
#define PP1_PREFIX_SIZE      6
#define PP2_HDR_SIZE         16
#define PP2_VERSION          0x20
#define PP2_CMD_LOCAL        0x00
#define PP2_CMD_PROXY        0x01
#define PP2_FAM_INET_STREAM  0x11
#define PP2_FAM_INET6_STREAM 0x21
#define PP2_FAM_UNSPEC       0x00
#define PP2_ADDR_INET_SIZE   12
#define PP2_ADDR_INET6_SIZE  36
#define PP1_FIELD_MAX        46 /* an IPv6 literal */

static void set_addr(struct sockaddr_storage *ss, int family, const uint8_t *addr, uint16_t port)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)ss;
        sin->sin_family = AF_INET;
        memcpy(&sin->sin_addr, addr, 4);
        sin->sin_port = htons(port);
    } else {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
        sin6->sin6_family = AF_INET6;
        memcpy(&sin6->sin6_addr, addr, 16);
        sin6->sin6_port = htons(port);
    }
}

/* Next space-separated field of a v1 line into buf (NUL-terminated). */
static int v1_field(struct ds_reader *r, char *buf, size_t size, char end)
{
    size_t n = 0;
    for (;;) {
        uint8_t c;
        DS_TRY(ds_rd_u8(r, &c));
        if (c == (uint8_t)end) {
            break;
        }
        if (c == ' ' || c == '\r' || c == '\n' || c < 0x21 || c > 0x7e || n + 1 >= size) {
            return -DS_E_FORMAT;
        }
        buf[n++] = (char)c;
    }
    if (n == 0) {
        return -DS_E_FORMAT;
    }
    buf[n] = '\0';
    return 0;
}

static int v1_port(const char *s, uint16_t *out)
{
    size_t n = strlen(s);
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0')) {
        return -DS_E_FORMAT;
    }
    uint32_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return -DS_E_FORMAT;
        }
        v = v * 10 + (uint32_t)(s[i] - '0');
    }
    if (v > 65535) {
        return -DS_E_FORMAT;
    }
    *out = (uint16_t)v;
    return 0;
}

static int parse_v1(const uint8_t *p, size_t len, struct ds_pp_info *out)
{
    /* Find CRLF within the first DS_PP_V1_MAX bytes. */
    size_t lim = len < DS_PP_V1_MAX ? len : DS_PP_V1_MAX;
    size_t eol = 0;
    bool found = false;
    for (size_t i = 0; i + 1 < lim; i++) {
        if (p[i] == '\r' && p[i + 1] == '\n') {
            eol = i;
            found = true;
            break;
        }
    }
    if (!found) {
        return len >= DS_PP_V1_MAX ? -DS_E_LIMIT : 0;
    }
    struct ds_reader r;
    char proto[8], src[PP1_FIELD_MAX], dst[PP1_FIELD_MAX], sp[8], dp[8];
    struct ds_pp_info info;
    memset(&info, 0, sizeof(info));
    info.version = 1;
    info.header_size = eol + 2;
    /* The line without CRLF, plus a terminating space sentinel handled by v1_field's `end`. */
    ds_rd_init(&r, p + PP1_PREFIX_SIZE, eol - PP1_PREFIX_SIZE + 1);
    /* "UNKNOWN" may be followed by anything up to CRLF. */
    if (eol - PP1_PREFIX_SIZE >= 7 && memcmp(p + PP1_PREFIX_SIZE, "UNKNOWN", 7) == 0 &&
        (eol - PP1_PREFIX_SIZE == 7 || p[PP1_PREFIX_SIZE + 7] == ' ')) {
        info.local = true;
        *out = info;
        return 1;
    }
    /* Replace the final '\r' by ' ' logically: read fields ending with ' ' except the last. */
    uint8_t line[DS_PP_V1_MAX];
    size_t ln = eol - PP1_PREFIX_SIZE;
    memcpy(line, p + PP1_PREFIX_SIZE, ln);
    line[ln] = '\n';
    ds_rd_init(&r, line, ln + 1);
    if (v1_field(&r, proto, sizeof(proto), ' ') < 0 || v1_field(&r, src, sizeof(src), ' ') < 0 ||
        v1_field(&r, dst, sizeof(dst), ' ') < 0 || v1_field(&r, sp, sizeof(sp), ' ') < 0 ||
        v1_field(&r, dp, sizeof(dp), '\n') < 0 || ds_rd_left(&r) != 0) {
        return -DS_E_FORMAT;
    }
    int family;
    if (strcmp(proto, "TCP4") == 0) {
        family = AF_INET;
    } else if (strcmp(proto, "TCP6") == 0) {
        family = AF_INET6;
    } else {
        return -DS_E_FORMAT;
    }
    uint8_t a[16], b[16];
    uint16_t sport, dport;
    if (inet_pton(family, src, a) != 1 || inet_pton(family, dst, b) != 1 ||
        v1_port(sp, &sport) < 0 || v1_port(dp, &dport) < 0) {
        return -DS_E_FORMAT;
    }
    set_addr(&info.src, family, a, sport);
    set_addr(&info.dst, family, b, dport);
    *out = info;
    return 1;
}

static int parse_v2(const uint8_t *p, size_t len, struct ds_pp_info *out)
{
    struct ds_reader r;
    uint8_t ver_cmd, fam;
    uint16_t alen;
    if (len < PP2_HDR_SIZE) {
        return 0;
    }
    ds_rd_init(&r, p, len);
    DS_TRY(ds_rd_skip(&r, DS_PP_V2_SIG_SIZE));
    DS_TRY(ds_rd_u8(&r, &ver_cmd));
    DS_TRY(ds_rd_u8(&r, &fam));
    DS_TRY(ds_rd_u16be(&r, &alen));
    if ((ver_cmd & 0xf0) != PP2_VERSION) {
        return -DS_E_UNSUPPORTED;
    }
    if ((size_t)alen > DS_PP_V2_MAX - PP2_HDR_SIZE) {
        return -DS_E_LIMIT;
    }
    struct ds_reader body;
    if (ds_rd_sub(&r, alen, &body) < 0) {
        return 0;
    }
    struct ds_pp_info info;
    memset(&info, 0, sizeof(info));
    info.version = 2;
    info.header_size = PP2_HDR_SIZE + alen;
    uint8_t cmd = ver_cmd & 0x0f;
    if (cmd == PP2_CMD_LOCAL) {
        info.local = true; /* health checks from the balancer: addresses ignored */
        *out = info;
        return 1;
    }
    if (cmd != PP2_CMD_PROXY) {
        return -DS_E_UNSUPPORTED;
    }
    const uint8_t *a;
    uint16_t sport, dport;
    if (fam == PP2_FAM_INET_STREAM) {
        if (ds_rd_ptr(&body, 8, &a) < 0 || ds_rd_u16be(&body, &sport) < 0 ||
            ds_rd_u16be(&body, &dport) < 0) {
            return -DS_E_FORMAT;
        }
        set_addr(&info.src, AF_INET, a, sport);
        set_addr(&info.dst, AF_INET, a + 4, dport);
    } else if (fam == PP2_FAM_INET6_STREAM) {
        if (ds_rd_ptr(&body, 32, &a) < 0 || ds_rd_u16be(&body, &sport) < 0 ||
            ds_rd_u16be(&body, &dport) < 0) {
            return -DS_E_FORMAT;
        }
        set_addr(&info.src, AF_INET6, a, sport);
        set_addr(&info.dst, AF_INET6, a + 16, dport);
    } else if (fam == PP2_FAM_UNSPEC) {
        info.local = true;
    } else {
        return -DS_E_UNSUPPORTED; /* UDP, AF_UNIX */
    }
    /* TLVs (remaining body) are skipped; their framing is checked. */
    while (ds_rd_left(&body) > 0) {
        uint8_t type;
        uint16_t n;
        if (ds_rd_u8(&body, &type) < 0 || ds_rd_u16be(&body, &n) < 0 || ds_rd_skip(&body, n) < 0) {
            return -DS_E_FORMAT;
        }
    }
    *out = info;
    return 1;
}

int ds_pp_parse(const void *data, size_t len, struct ds_pp_info *out)
{
    const uint8_t *p = data;
    if (len == 0) {
        return 0;
    }
    if (p[0] == 'P') {
        size_t n = len < PP1_PREFIX_SIZE ? len : PP1_PREFIX_SIZE;
        if (memcmp(p, pp1_prefix, n) != 0) {
            return -DS_E_PROTOCOL;
        }
        return len < PP1_PREFIX_SIZE ? 0 : parse_v1(p, len, out);
    }
    size_t n = len < DS_PP_V2_SIG_SIZE ? len : DS_PP_V2_SIG_SIZE;
    if (memcmp(p, pp2_sig, n) != 0) {
        return -DS_E_PROTOCOL;
    }
    return len < DS_PP_V2_SIG_SIZE ? 0 : parse_v2(p, len, out);
}

static int addr_parts(const struct sockaddr *sa, const uint8_t **addr, uint16_t *port)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        *addr = (const uint8_t *)&sin->sin_addr;
        *port = ntohs(sin->sin_port);
        return 4;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        *addr = (const uint8_t *)&sin6->sin6_addr;
        *port = ntohs(sin6->sin6_port);
        return 16;
    }
    return -EINVAL;
}

int ds_pp_build_v1(struct ds_buf *b, const struct sockaddr *src, const struct sockaddr *dst)
{
    const uint8_t *sa = NULL, *da = NULL;
    uint16_t sp = 0, dp = 0;
    char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
    if (src == NULL || dst == NULL) {
        return -EINVAL;
    }
    int sn = addr_parts(src, &sa, &sp), dn = addr_parts(dst, &da, &dp);
    if (sn < 0 || sn != dn) {
        return -EINVAL;
    }
    int fam = sn == 4 ? AF_INET : AF_INET6;
    if (inet_ntop(fam, sa, s, sizeof(s)) == NULL || inet_ntop(fam, da, d, sizeof(d)) == NULL) {
        return -EINVAL;
    }
    size_t before = b->len;
    DS_TRY(ds_buf_printf(b, "PROXY %s %s %s %u %u\r\n", sn == 4 ? "TCP4" : "TCP6", s, d,
                         (unsigned)sp, (unsigned)dp));
    return (int)(b->len - before);
}

int ds_pp_build_v2(struct ds_buf *b, const struct sockaddr *src, const struct sockaddr *dst)
{
    uint8_t hdr[PP2_HDR_SIZE + PP2_ADDR_INET6_SIZE];
    size_t n = PP2_HDR_SIZE;
    memcpy(hdr, pp2_sig, DS_PP_V2_SIG_SIZE);
    if (src == NULL) {
        hdr[12] = PP2_VERSION | PP2_CMD_LOCAL;
        hdr[13] = PP2_FAM_UNSPEC;
        hdr[14] = hdr[15] = 0;
    } else {
        const uint8_t *sa = NULL, *da = NULL;
        uint16_t sp = 0, dp = 0;
        if (dst == NULL) {
            return -EINVAL;
        }
        int sn = addr_parts(src, &sa, &sp), dn = addr_parts(dst, &da, &dp);
        if (sn < 0 || sn != dn) {
            return -EINVAL;
        }
        size_t alen = sn == 4 ? PP2_ADDR_INET_SIZE : PP2_ADDR_INET6_SIZE;
        hdr[12] = PP2_VERSION | PP2_CMD_PROXY;
        hdr[13] = sn == 4 ? PP2_FAM_INET_STREAM : PP2_FAM_INET6_STREAM;
        hdr[14] = 0;
        hdr[15] = (uint8_t)alen;
        memcpy(hdr + n, sa, (size_t)sn);
        memcpy(hdr + n + (size_t)sn, da, (size_t)sn);
        hdr[n + 2 * (size_t)sn] = (uint8_t)(sp >> 8);
        hdr[n + 2 * (size_t)sn + 1] = (uint8_t)sp;
        hdr[n + 2 * (size_t)sn + 2] = (uint8_t)(dp >> 8);
        hdr[n + 2 * (size_t)sn + 3] = (uint8_t)dp;
        n += alen;
    }
    DS_TRY(ds_buf_append(b, hdr, n));
    return (int)n;
}
