/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The HTTP/1.1 request parser of the pRPC server (RFC 9112): request line and header fields
 * of a complete head, the chunked transfer coding, and a few text helpers. It is strict where
 * leniency enables request smuggling (no whitespace before ':', no obs-fold, no CL together
 * with TE, no conflicting Content-Length) and bounded everywhere (struct ds_rpc_limits).
 * Pure functions over bytes: the connection code and the fuzz harness use the same code.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "rpc/http.h"

#define RPC_CONTENT_LENGTH_DIGITS_MAX 18 /* < 10^18 fits u64 with no overflow check needed */

static bool is_tchar(unsigned char c)
{
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
        return true;
    }
    return c != 0 && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

size_t rpc_head_find_end(const char *data, size_t len, size_t from)
{
    /* Back up so that a terminator split across two reads is still seen. */
    size_t i = from > 3 ? from - 3 : 0;
    for (; i < len; i++) {
        if (data[i] != '\n') {
            continue;
        }
        /* The line ending here is empty if the previous line ended right before it. */
        if (i >= 1 && data[i - 1] == '\n') {
            return i + 1;
        }
        if (i >= 2 && data[i - 1] == '\r' && data[i - 2] == '\n') {
            return i + 1;
        }
    }
    return 0;
}

/* Cut the line starting at *pos (NUL-terminating it over its CR/LF); NULL at end of buffer. */
static char *next_line(char *buf, size_t len, size_t *pos, size_t *out_len)
{
    if (*pos >= len) {
        return NULL;
    }
    char *start = buf + *pos;
    char *nl = memchr(start, '\n', len - *pos);
    if (!nl) {
        return NULL;
    }
    size_t n = (size_t)(nl - start);
    *pos += n + 1;
    *nl = 0;
    if (n > 0 && start[n - 1] == '\r') {
        start[--n] = 0;
    }
    *out_len = n;
    return start;
}

static char *trim_ows(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) {
        s[--n] = 0;
    }
    return s;
}

/* Does the comma-separated token list contain tok (case-insensitive)? */
static bool list_has_token(const char *list, const char *tok)
{
    size_t tlen = strlen(tok);
    const char *p = list;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        const char *e = p;
        while (*e && *e != ',') {
            e++;
        }
        const char *end = e;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) {
            end--;
        }
        if ((size_t)(end - p) == tlen && strncasecmp(p, tok, tlen) == 0) {
            return true;
        }
        p = e;
    }
    return false;
}

static int fail(int status, const char *msg, int err, int *out_status, const char **out_msg)
{
    *out_status = status;
    *out_msg = msg;
    return err;
}

static int parse_request_line(char *line, size_t n, struct rpc_head *h, int *out_status,
                              const char **out_msg)
{
    char *sp1 = memchr(line, ' ', n);
    if (!sp1 || sp1 == line) {
        return fail(400, "malformed request line", -DS_E_FORMAT, out_status, out_msg);
    }
    *sp1 = 0;
    for (char *p = line; *p; p++) {
        if (!is_tchar((unsigned char)*p)) {
            return fail(400, "malformed request method", -DS_E_FORMAT, out_status, out_msg);
        }
    }
    char *target = sp1 + 1;
    char *sp2 = strchr(target, ' ');
    if (!sp2 || sp2 == target) {
        return fail(400, "malformed request line", -DS_E_FORMAT, out_status, out_msg);
    }
    *sp2 = 0;
    const char *version = sp2 + 1;
    if (strncmp(version, "HTTP/", 5) != 0 || strlen(version) != 8 || version[6] != '.' ||
        version[5] < '0' || version[5] > '9' || version[7] < '0' || version[7] > '9') {
        return fail(400, "malformed HTTP version", -DS_E_FORMAT, out_status, out_msg);
    }
    if (version[5] != '1') {
        return fail(505, "HTTP version not supported", -DS_E_UNSUPPORTED, out_status, out_msg);
    }
    h->minor = version[7] - '0';
    if (target[0] != '/') {
        return fail(400, "request target must be an absolute path", -DS_E_FORMAT, out_status,
                    out_msg);
    }
    for (char *p = target; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if (c <= 0x20 || c >= 0x7f) {
            return fail(400, "invalid character in request target", -DS_E_FORMAT, out_status,
                        out_msg);
        }
    }
    h->method_str = line;
    if (strcmp(line, "GET") == 0) {
        h->method = RPC_HTTP_GET;
    } else if (strcmp(line, "POST") == 0) {
        h->method = RPC_HTTP_POST;
    } else if (strcmp(line, "HEAD") == 0) {
        h->method = RPC_HTTP_HEAD;
    } else {
        h->method = RPC_HTTP_OTHER;
    }
    char *q = strchr(target, '?');
    if (q) {
        *q = 0;
        h->query = q + 1;
    } else {
        h->query = "";
    }
    char *frag = strchr(h->query, '#');
    if (frag) {
        *frag = 0;
    }
    frag = strchr(target, '#');
    if (frag) {
        *frag = 0;
    }
    h->path = target;
    return 0;
}

static int parse_content_length(const char *v, uint64_t *out)
{
    size_t n = strlen(v);
    if (n == 0 || n > RPC_CONTENT_LENGTH_DIGITS_MAX) {
        return -DS_E_FORMAT;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9') {
            return -DS_E_FORMAT;
        }
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    *out = x;
    return 0;
}

static int parse_header_line(char *line, struct rpc_head *h, int *out_status, const char **out_msg)
{
    if (line[0] == ' ' || line[0] == '\t') {
        return fail(400, "obsolete header line folding", -DS_E_FORMAT, out_status, out_msg);
    }
    char *colon = strchr(line, ':');
    if (!colon || colon == line) {
        return fail(400, "malformed header line", -DS_E_FORMAT, out_status, out_msg);
    }
    *colon = 0;
    for (char *p = line; *p; p++) {
        if (!is_tchar((unsigned char)*p)) {
            return fail(400, "malformed header name", -DS_E_FORMAT, out_status, out_msg);
        }
    }
    char *value = trim_ows(colon + 1);
    for (char *p = value; *p; p++) {
        unsigned char c = (unsigned char)*p;
        if ((c < 0x20 && c != '\t') || c == 0x7f) {
            return fail(400, "invalid character in header value", -DS_E_FORMAT, out_status,
                        out_msg);
        }
    }
    h->headers[h->header_count].name = line;
    h->headers[h->header_count].value = value;
    h->header_count++;

    if (strcasecmp(line, "Content-Length") == 0) {
        uint64_t cl;
        if (parse_content_length(value, &cl) < 0) {
            return fail(400, "invalid Content-Length", -DS_E_FORMAT, out_status, out_msg);
        }
        if (h->has_length && cl != h->content_length) {
            return fail(400, "conflicting Content-Length", -DS_E_FORMAT, out_status, out_msg);
        }
        h->has_length = true;
        h->content_length = cl;
    } else if (strcasecmp(line, "Transfer-Encoding") == 0) {
        if (strcasecmp(value, "chunked") != 0 || h->chunked) {
            return fail(501, "unsupported transfer coding", -DS_E_UNSUPPORTED, out_status, out_msg);
        }
        h->chunked = true;
    } else if (strcasecmp(line, "Content-Type") == 0) {
        if (!h->content_type) {
            h->content_type = value;
        }
    } else if (strcasecmp(line, "Expect") == 0) {
        if (strcasecmp(value, "100-continue") == 0) {
            h->expect_continue = true;
        }
    }
    return 0;
}

int rpc_head_parse(const char *data, size_t len, const struct ds_rpc_limits *lim,
                   struct rpc_head *out, int *out_status, const char **out_msg)
{
    struct rpc_head h;
    int r;
    memset(&h, 0, sizeof(h));
    if (len > lim->header_size_max) {
        r = fail(431, "request header too large", -DS_E_LIMIT, out_status, out_msg);
        goto out;
    }
    h.buf = malloc(len + 1);
    h.headers = calloc(lim->header_count_max ? lim->header_count_max : 1, sizeof(*h.headers));
    if (!h.buf || !h.headers) {
        r = fail(500, "out of memory", -ENOMEM, out_status, out_msg);
        goto out;
    }
    memcpy(h.buf, data, len);
    h.buf[len] = 0;

    size_t pos = 0, n = 0;
    char *line;
    /* RFC 9112 §2.2: ignore empty lines before the request line. */
    do {
        line = next_line(h.buf, len, &pos, &n);
    } while (line && n == 0);
    if (!line) {
        r = fail(400, "empty request", -DS_E_FORMAT, out_status, out_msg);
        goto out;
    }
    if (n > lim->request_line_max) {
        r = fail(414, "request line too long", -DS_E_LIMIT, out_status, out_msg);
        goto out;
    }
    if (memchr(line, 0, n)) {
        r = fail(400, "NUL byte in request line", -DS_E_FORMAT, out_status, out_msg);
        goto out;
    }
    r = parse_request_line(line, n, &h, out_status, out_msg);
    if (r < 0) {
        goto out;
    }
    for (;;) {
        line = next_line(h.buf, len, &pos, &n);
        if (!line) {
            r = fail(400, "unterminated request header", -DS_E_FORMAT, out_status, out_msg);
            goto out;
        }
        if (n == 0) {
            break;
        }
        if (memchr(line, 0, n)) {
            r = fail(400, "NUL byte in header", -DS_E_FORMAT, out_status, out_msg);
            goto out;
        }
        if (h.header_count >= lim->header_count_max) {
            r = fail(431, "too many header fields", -DS_E_LIMIT, out_status, out_msg);
            goto out;
        }
        r = parse_header_line(line, &h, out_status, out_msg);
        if (r < 0) {
            goto out;
        }
    }
    if (h.chunked && h.has_length) {
        r = fail(400, "both Content-Length and Transfer-Encoding", -DS_E_FORMAT, out_status,
                 out_msg);
        goto out;
    }
    const char *conn = rpc_head_header(&h, "Connection");
    if (h.minor >= 1) {
        h.keep_alive = !(conn && list_has_token(conn, "close"));
    } else {
        h.keep_alive = conn && list_has_token(conn, "keep-alive");
        h.expect_continue = false;
        /* RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing for
         * a 1.0 intermediary, which may see the chunked body as the next request: close. */
        if (h.chunked) {
            h.keep_alive = false;
        }
    }
    *out = h;
    memset(&h, 0, sizeof(h));
    r = 0;
out:
    rpc_head_done(&h);
    return r;
}

void rpc_head_done(struct rpc_head *h)
{
    if (!h) {
        return;
    }
    free(h->buf);
    free(h->headers);
    memset(h, 0, sizeof(*h));
}

const char *rpc_head_header(const struct rpc_head *h, const char *name)
{
    for (size_t i = 0; i < h->header_count; i++) {
        if (strcasecmp(h->headers[i].name, name) == 0) {
            return h->headers[i].value;
        }
    }
    return NULL;
}

/* A chunk-size line: hex digits, then optional ";ext" and whitespace. */
static int parse_chunk_size(const uint8_t *p, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    for (; i < n; i++) {
        int d = ds_hex_digit_value(p[i]);
        if (d < 0) {
            break;
        }
        if (v > (UINT64_MAX >> 4)) {
            return -DS_E_LIMIT;
        }
        v = (v << 4) | (uint64_t)d;
    }
    if (i == 0) {
        return -DS_E_FORMAT;
    }
    for (; i < n; i++) {
        if (p[i] == ';') {
            break;
        }
        if (p[i] != ' ' && p[i] != '\t') {
            return -DS_E_FORMAT;
        }
    }
    /* Extensions are ignored but may hold no control characters: a bare CR in one ends the
     * line for some intermediaries, which then frame the body differently (smuggling). */
    for (; i < n; i++) {
        if ((p[i] < 0x20 && p[i] != '\t') || p[i] == 0x7f) {
            return -DS_E_FORMAT;
        }
    }
    *out = v;
    return 0;
}

int rpc_chunked_feed(struct rpc_chunked *c, const uint8_t *data, size_t len, size_t trailer_max,
                     struct ds_buf *out, bool *done)
{
    size_t off = 0;
    *done = c->state == RPC_CHUNK_DONE;
    while (off < len && c->state != RPC_CHUNK_DONE) {
        const uint8_t *p = data + off;
        size_t left = len - off;
        if (c->state == RPC_CHUNK_DATA) {
            size_t take = left < c->remaining ? left : (size_t)c->remaining;
            DS_TRY(ds_buf_append(out, p, take));
            c->remaining -= take;
            off += take;
            if (c->remaining == 0) {
                c->state = RPC_CHUNK_DATA_END;
            }
            continue;
        }
        /* Every other state consumes whole lines. */
        const uint8_t *nl = memchr(p, '\n', left);
        size_t line_max = c->state == RPC_CHUNK_TRAILER ? trailer_max : RPC_CHUNK_LINE_MAX;
        if (!nl) {
            if (left > line_max) {
                return -DS_E_LIMIT;
            }
            break;
        }
        size_t n = (size_t)(nl - p);
        if (n > line_max) {
            return -DS_E_LIMIT;
        }
        size_t consumed = n + 1;
        if (n > 0 && p[n - 1] == '\r') {
            n--;
        }
        switch (c->state) {
        case RPC_CHUNK_SIZE: {
            uint64_t size;
            DS_TRY(parse_chunk_size(p, n, &size));
            if (size > out->max - out->len) {
                return -DS_E_LIMIT;
            }
            c->remaining = size;
            c->state = size == 0 ? RPC_CHUNK_TRAILER : RPC_CHUNK_DATA;
            break;
        }
        case RPC_CHUNK_DATA_END:
            if (n != 0) {
                return -DS_E_FORMAT;
            }
            c->state = RPC_CHUNK_SIZE;
            break;
        case RPC_CHUNK_TRAILER:
            /* Trailer fields are read and ignored; their total size is bounded. */
            c->trailer_size += consumed;
            if (c->trailer_size > trailer_max) {
                return -DS_E_LIMIT;
            }
            if (n == 0) {
                c->state = RPC_CHUNK_DONE;
            }
            break;
        default:
            return -DS_E_FORMAT;
        }
        off += consumed;
    }
    *done = c->state == RPC_CHUNK_DONE;
    return (int)off;
}

const char *rpc_status_reason(int status)
{
    static const struct {
        int status;
        const char *reason;
    } reasons[] = {
        {100, "Continue"},
        {200, "OK"},
        {201, "Created"},
        {204, "No Content"},
        {301, "Moved Permanently"},
        {302, "Found"},
        {303, "See Other"},
        {304, "Not Modified"},
        {307, "Temporary Redirect"},
        {400, "Bad Request"},
        {401, "Unauthorized"},
        {403, "Forbidden"},
        {404, "Not Found"},
        {405, "Method Not Allowed"},
        {408, "Request Timeout"},
        {413, "Payload Too Large"},
        {414, "URI Too Long"},
        {429, "Too Many Requests"},
        {431, "Request Header Fields Too Large"},
        {500, "Internal Server Error"},
        {501, "Not Implemented"},
        {502, "Bad Gateway"},
        {503, "Service Unavailable"},
        {504, "Gateway Timeout"},
        {505, "HTTP Version Not Supported"},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(reasons); i++) {
        if (reasons[i].status == status) {
            return reasons[i].reason;
        }
    }
    return "Unknown";
}

size_t rpc_percent_decode(const char *src, size_t len, char *dst, bool plus)
{
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        char c = src[i];
        if (c == '%' && i + 2 < len && ds_hex_digit_value((unsigned char)src[i + 1]) >= 0 &&
            ds_hex_digit_value((unsigned char)src[i + 2]) >= 0) {
            dst[o++] = (char)(ds_hex_digit_value((unsigned char)src[i + 1]) * 16 +
                              ds_hex_digit_value((unsigned char)src[i + 2]));
            i += 2;
        } else if (c == '+' && plus) {
            dst[o++] = ' ';
        } else {
            dst[o++] = c;
        }
    }
    dst[o] = 0;
    return o;
}

/* Length of the valid UTF-8 sequence at s (1-4), or 0 if invalid. */
static size_t utf8_seq(const unsigned char *s)
{
    unsigned char c = s[0];
    if (c < 0x80) {
        return 1;
    }
    size_t n;
    uint32_t cp;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff)) {
        return 0;
    }
    return n;
}

void rpc_utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    while (*p) {
        size_t n = utf8_seq(p);
        if (n == 0) {
            *p++ = '?';
        } else {
            p += n;
        }
    }
}
