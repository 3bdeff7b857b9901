/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Incremental TLS ClientHello reader for the gateway's SNI routing (spec host-side.md §4.2
 * step 2). The proxy calls it each time more bytes arrive: it walks the TLS records at the
 * start of the buffer, reassembles the handshake message across records (a ClientHello may be
 * fragmented over several records; RFC 8446 §5.1) and, once the whole ClientHello is present,
 * reads the server_name, ALPN and supported_versions extensions. Every length comes from the
 * peer and is checked through struct ds_reader; nothing is trusted before it is bounded.
 */
#include <string.h>

#include <dstack/gateway.h>

#define TLS_CT_HANDSHAKE           22
#define TLS_HS_CLIENT_HELLO        1
#define TLS_RECORD_HDR             5
#define TLS_HS_HDR                 4
#define TLS_RANDOM_SIZE            32
#define TLS_SESSION_ID_MAX         32
#define TLS_EXT_SERVER_NAME        0
#define TLS_EXT_ALPN               16
#define TLS_EXT_SUPPORTED_VERSIONS 43
#define TLS_SNI_HOST_NAME          0

/* Host name syntax: LDH labels of 1..63 bytes; lowercased into out. */
static int copy_host_name(const uint8_t *p, size_t n, char *out)
{
    if (n == 0 || n > DS_GW_SNI_MAX) {
        return -DS_E_FORMAT;
    }
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = p[i];
        if (c >= 'A' && c <= 'Z') {
            c = (uint8_t)(c - 'A' + 'a');
        }
        if (c == '.') {
            if (label == 0) {
                return -DS_E_FORMAT;
            }
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_') {
            if (++label > 63) {
                return -DS_E_FORMAT;
            }
        } else {
            return -DS_E_FORMAT;
        }
        out[i] = (char)c;
    }
    if (label == 0) { /* trailing dot or empty last label */
        return -DS_E_FORMAT;
    }
    out[n] = '\0';
    return 0;
}

static int parse_sni_ext(struct ds_reader *ext, struct ds_gw_hello *h)
{
    uint16_t list_len;
    struct ds_reader list;
    DS_TRY(ds_rd_u16be(ext, &list_len));
    DS_TRY(ds_rd_sub(ext, list_len, &list));
    DS_ENSURE(ds_rd_left(ext) == 0 && list_len > 0, -DS_E_FORMAT);
    while (ds_rd_left(&list) > 0) {
        uint8_t type;
        uint16_t n;
        const uint8_t *name;
        DS_TRY(ds_rd_u8(&list, &type));
        DS_TRY(ds_rd_u16be(&list, &n));
        DS_TRY(ds_rd_ptr(&list, n, &name));
        if (type == TLS_SNI_HOST_NAME) {
            /* RFC 6066 §3: at most one host_name. */
            DS_ENSURE(!h->has_sni, -DS_E_FORMAT);
            DS_TRY(copy_host_name(name, n, h->sni));
            h->has_sni = true;
        }
    }
    return 0;
}

static int parse_alpn_ext(struct ds_reader *ext, struct ds_gw_hello *h)
{
    uint16_t list_len;
    struct ds_reader list;
    DS_TRY(ds_rd_u16be(ext, &list_len));
    DS_TRY(ds_rd_sub(ext, list_len, &list));
    DS_ENSURE(ds_rd_left(ext) == 0, -DS_E_FORMAT);
    while (ds_rd_left(&list) > 0) {
        uint8_t n;
        const uint8_t *proto;
        DS_TRY(ds_rd_u8(&list, &n));
        DS_ENSURE(n > 0, -DS_E_FORMAT);
        DS_TRY(ds_rd_ptr(&list, n, &proto));
        if (n == 2 && memcmp(proto, "h2", 2) == 0) {
            h->alpn_h2 = true;
        } else if (n == 8 && memcmp(proto, "http/1.1", 8) == 0) {
            h->alpn_http11 = true;
        }
    }
    return 0;
}

static int parse_versions_ext(struct ds_reader *ext, struct ds_gw_hello *h)
{
    uint8_t n;
    DS_TRY(ds_rd_u8(ext, &n));
    DS_ENSURE(n % 2 == 0 && n == ds_rd_left(ext), -DS_E_FORMAT);
    while (ds_rd_left(ext) > 0) {
        uint16_t v;
        DS_TRY(ds_rd_u16be(ext, &v));
        if (v == 0x0304) {
            h->tls13 = true;
        }
    }
    return 0;
}

/* The ClientHello body (after the 4-byte handshake header). Truncation here is malformed. */
static int parse_body(const uint8_t *body, size_t len, struct ds_gw_hello *h)
{
    struct ds_reader r;
    uint8_t sid_len, comp_len;
    uint16_t suites_len, ext_len;
    ds_rd_init(&r, body, len);
    if (ds_rd_u16be(&r, &h->version) < 0 || ds_rd_skip(&r, TLS_RANDOM_SIZE) < 0 ||
        ds_rd_u8(&r, &sid_len) < 0 || sid_len > TLS_SESSION_ID_MAX || ds_rd_skip(&r, sid_len) < 0 ||
        ds_rd_u16be(&r, &suites_len) < 0 || suites_len < 2 || suites_len % 2 != 0 ||
        ds_rd_skip(&r, suites_len) < 0 || ds_rd_u8(&r, &comp_len) < 0 || comp_len < 1 ||
        ds_rd_skip(&r, comp_len) < 0) {
        return -DS_E_FORMAT;
    }
    if ((h->version >> 8) != 3) {
        return -DS_E_FORMAT;
    }
    if (ds_rd_left(&r) == 0) {
        return 0; /* no extensions: no SNI */
    }
    struct ds_reader exts;
    if (ds_rd_u16be(&r, &ext_len) < 0 || ds_rd_sub(&r, ext_len, &exts) < 0 || ds_rd_left(&r) != 0) {
        return -DS_E_FORMAT;
    }
    uint64_t seen = 0; /* duplicate detection for the extensions we read */
    while (ds_rd_left(&exts) > 0) {
        uint16_t type, n;
        struct ds_reader ext;
        if (ds_rd_u16be(&exts, &type) < 0 || ds_rd_u16be(&exts, &n) < 0 ||
            ds_rd_sub(&exts, n, &ext) < 0) {
            return -DS_E_FORMAT;
        }
        int rc = 0;
        unsigned bit;
        switch (type) {
        case TLS_EXT_SERVER_NAME:
            bit = 0;
            break;
        case TLS_EXT_ALPN:
            bit = 1;
            break;
        case TLS_EXT_SUPPORTED_VERSIONS:
            bit = 2;
            break;
        default:
            continue;
        }
        if (seen & (1ull << bit)) {
            return -DS_E_FORMAT; /* RFC 8446 §4.2: no duplicate extensions */
        }
        seen |= 1ull << bit;
        if (type == TLS_EXT_SERVER_NAME) {
            rc = parse_sni_ext(&ext, h);
        } else if (type == TLS_EXT_ALPN) {
            rc = parse_alpn_ext(&ext, h);
        } else {
            rc = parse_versions_ext(&ext, h);
        }
        if (rc < 0) {
            return -DS_E_FORMAT;
        }
    }
    return 0;
}

int ds_gw_clienthello_parse(const void *data, size_t len, struct ds_gw_hello *out)
{
    /* Reassembled handshake bytes: at most DS_GW_HELLO_MAX. */
    uint8_t hs[DS_GW_HELLO_MAX];
    size_t hs_len = 0;
    struct ds_reader r;
    ds_rd_init(&r, data, len);

    for (;;) {
        /* Need the record header: a valid prefix so far means "need more". */
        uint8_t type;
        uint16_t ver, rec_len;
        const uint8_t *frag;
        size_t start = r.off;
        if (ds_rd_left(&r) < TLS_RECORD_HDR) {
            /* Check what is there of the header so garbage fails early. */
            const uint8_t *p = (const uint8_t *)data + start;
            size_t n = ds_rd_left(&r);
            if (n >= 1 && p[0] != TLS_CT_HANDSHAKE) {
                return -DS_E_PROTOCOL;
            }
            if (n >= 2 && p[1] != 3) {
                return -DS_E_PROTOCOL;
            }
            return len >= DS_GW_HELLO_MAX + TLS_RECORD_HDR ? -DS_E_LIMIT : DS_GW_HELLO_NEED_MORE;
        }
        if (ds_rd_u8(&r, &type) < 0 || ds_rd_u16be(&r, &ver) < 0 || ds_rd_u16be(&r, &rec_len) < 0) {
            return -DS_E_PROTOCOL;
        }
        if (type != TLS_CT_HANDSHAKE || (ver >> 8) != 3) {
            return -DS_E_PROTOCOL;
        }
        if (rec_len == 0 || rec_len > DS_GW_TLS_RECORD_MAX) {
            return -DS_E_FORMAT;
        }
        if (ds_rd_ptr(&r, rec_len, &frag) < 0) {
            return DS_GW_HELLO_NEED_MORE;
        }
        if (rec_len > sizeof(hs) - hs_len) {
            return -DS_E_LIMIT;
        }
        memcpy(hs + hs_len, frag, rec_len);
        hs_len += rec_len;

        /* Enough for the handshake header? */
        if (hs_len < TLS_HS_HDR) {
            continue;
        }
        if (hs[0] != TLS_HS_CLIENT_HELLO) {
            return -DS_E_PROTOCOL;
        }
        size_t body_len = ((size_t)hs[1] << 16) | ((size_t)hs[2] << 8) | hs[3];
        if (body_len > sizeof(hs) - TLS_HS_HDR) {
            return -DS_E_LIMIT;
        }
        if (hs_len < TLS_HS_HDR + body_len) {
            continue;
        }
        /* A record may not carry bytes past the ClientHello (the next message needs the
         * server's reply first). */
        if (hs_len != TLS_HS_HDR + body_len) {
            return -DS_E_FORMAT;
        }
        struct ds_gw_hello h;
        memset(&h, 0, sizeof(h));
        int rc = parse_body(hs + TLS_HS_HDR, body_len, &h);
        if (rc < 0) {
            return rc;
        }
        h.hello_bytes = r.off;
        *out = h;
        return DS_GW_HELLO_COMPLETE;
    }
}
