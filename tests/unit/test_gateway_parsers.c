/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the gateway data-plane parsers (include/dstack/gateway.h): real ClientHellos
 * produced by OpenSSL's client (TLS 1.2 and 1.3, with and without SNI/ALPN) through a memory
 * BIO, re-fragmented into 1-byte..N-byte records and truncated at every offset; garbage and
 * hand-made malformed hellos; the SNI grammar table; the app-address TXT record inside DNS
 * answers; PROXY v1/v2 round trips, split headers and malformed headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <pthread.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/ssl.h>

#include <dstack/gateway.h>

/* The proxy's routing table is daemon code without other dependencies: test it here too. */
#include "../../daemons/gateway/gw_portpolicy.c"
#include "../../daemons/gateway/gw_routes.c"

/* Run an OpenSSL client handshake into a memory BIO and return the bytes it wrote. */
static size_t make_hello(const char *sni, const char *alpn_wire, size_t alpn_len, int max_ver,
                         uint8_t *out, size_t cap)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(ctx);
    if (max_ver) {
        assert_int_equal(SSL_CTX_set_max_proto_version(ctx, max_ver), 1);
    }
    SSL *ssl = SSL_new(ctx);
    BIO *rb = BIO_new(BIO_s_mem()), *wb = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rb, wb);
    SSL_set_connect_state(ssl);
    if (sni) {
        assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
    }
    if (alpn_wire) {
        assert_int_equal(
            SSL_set_alpn_protos(ssl, (const unsigned char *)alpn_wire, (unsigned)alpn_len), 0);
    }
    assert_true(SSL_do_handshake(ssl) <= 0); /* wants to read the ServerHello */
    int n = BIO_read(wb, out, (int)cap);
    assert_true(n > 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static void test_hello_openssl(void **state)
{
    (void)state;
    uint8_t buf[DS_GW_HELLO_MAX];
    struct ds_gw_hello h;
    size_t n = make_hello("AbC-443s.Example.COM", "\x02h2\x08http/1.1", 12, 0, buf, sizeof(buf));
    assert_int_equal(ds_gw_clienthello_parse(buf, n, &h), DS_GW_HELLO_COMPLETE);
    assert_true(h.has_sni);
    assert_string_equal(h.sni, "abc-443s.example.com");
    assert_true(h.alpn_h2);
    assert_true(h.alpn_http11);
    assert_true(h.tls13);
    assert_int_equal(h.hello_bytes, n);

    n = make_hello("app.example.com", NULL, 0, TLS1_2_VERSION, buf, sizeof(buf));
    assert_int_equal(ds_gw_clienthello_parse(buf, n, &h), DS_GW_HELLO_COMPLETE);
    assert_string_equal(h.sni, "app.example.com");
    assert_false(h.alpn_h2);
    assert_false(h.tls13);

    n = make_hello(NULL, NULL, 0, 0, buf, sizeof(buf));
    assert_int_equal(ds_gw_clienthello_parse(buf, n, &h), DS_GW_HELLO_COMPLETE);
    assert_false(h.has_sni);
    assert_string_equal(h.sni, "");
}

/* Every prefix is "need more"; trailing bytes after the hello are not part of hello_bytes. */
static void test_hello_truncated(void **state)
{
    (void)state;
    uint8_t buf[DS_GW_HELLO_MAX + 16];
    struct ds_gw_hello h;
    size_t n = make_hello("x.example.com", NULL, 0, 0, buf, sizeof(buf) - 16);
    for (size_t i = 0; i < n; i++) {
        memset(&h, 0x5a, sizeof(h));
        assert_int_equal(ds_gw_clienthello_parse(buf, i, &h), DS_GW_HELLO_NEED_MORE);
        assert_int_equal(h.hello_bytes, 0x5a5a5a5a5a5a5a5aull); /* out untouched */
    }
    memcpy(buf + n, "\x17\x03\x03\x00\x01X", 6); /* early data / next record */
    assert_int_equal(ds_gw_clienthello_parse(buf, n + 6, &h), DS_GW_HELLO_COMPLETE);
    assert_int_equal(h.hello_bytes, n);
}

/* Split the single handshake record into records of `frag` bytes each. */
static size_t refragment(const uint8_t *in, size_t n, size_t frag, uint8_t *out)
{
    const uint8_t *hs = in + 5;
    size_t hs_len = n - 5, o = 0;
    for (size_t off = 0; off < hs_len; off += frag) {
        size_t k = hs_len - off < frag ? hs_len - off : frag;
        out[o++] = 22;
        out[o++] = 3;
        out[o++] = 1;
        out[o++] = (uint8_t)(k >> 8);
        out[o++] = (uint8_t)k;
        memcpy(out + o, hs + off, k);
        o += k;
    }
    return o;
}

static void test_hello_fragmented(void **state)
{
    (void)state;
    uint8_t buf[2048];
    static uint8_t frag[2048 * 6];
    struct ds_gw_hello h;
    size_t n = make_hello("frag-8080g.example.org", "\x02h2", 3, 0, buf, sizeof(buf));
    assert_true(n < sizeof(buf));
    const size_t sizes[] = {1, 2, 3, 7, 64, 100, 1000};
    for (size_t s = 0; s < DS_ARRAY_SIZE(sizes); s++) {
        size_t m = refragment(buf, n, sizes[s], frag);
        assert_int_equal(ds_gw_clienthello_parse(frag, m, &h), DS_GW_HELLO_COMPLETE);
        assert_string_equal(h.sni, "frag-8080g.example.org");
        assert_true(h.alpn_h2);
        assert_int_equal(h.hello_bytes, m);
        if (sizes[s] >= 64) { /* every truncation of a few fragmentations */
            for (size_t i = 0; i < m; i++) {
                assert_int_equal(ds_gw_clienthello_parse(frag, i, &h), DS_GW_HELLO_NEED_MORE);
            }
        }
    }
}

static void test_hello_garbage(void **state)
{
    (void)state;
    struct ds_gw_hello h;
    /* HTTP instead of TLS */
    assert_int_equal(ds_gw_clienthello_parse("GET / HTTP/1.1\r\n", 16, &h), -DS_E_PROTOCOL);
    assert_int_equal(ds_gw_clienthello_parse("G", 1, &h), -DS_E_PROTOCOL);
    /* Alert record, SSLv2-ish, bad version major */
    assert_int_equal(ds_gw_clienthello_parse("\x15\x03\x03\x00\x02\x02\x28", 7, &h),
                     -DS_E_PROTOCOL);
    assert_int_equal(ds_gw_clienthello_parse("\x16\x02", 2, &h), -DS_E_PROTOCOL);
    /* zero-length and oversized records */
    assert_int_equal(ds_gw_clienthello_parse("\x16\x03\x01\x00\x00", 5, &h), -DS_E_FORMAT);
    assert_int_equal(ds_gw_clienthello_parse("\x16\x03\x01\x48\x01", 5, &h), -DS_E_FORMAT);
    /* handshake type ServerHello */
    assert_int_equal(ds_gw_clienthello_parse("\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9, &h),
                     -DS_E_PROTOCOL);
    /* ClientHello claiming 16 MiB */
    assert_int_equal(ds_gw_clienthello_parse("\x16\x03\x01\x00\x04\x01\xff\xff\xff", 9, &h),
                     -DS_E_LIMIT);
    /* empty ClientHello body */
    assert_int_equal(ds_gw_clienthello_parse("\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9, &h),
                     -DS_E_FORMAT);
}

/* Hand-built hello with a chosen SNI extension body, to hit the host-name checks. */
static size_t build_hello(const uint8_t *ext, size_t ext_len, uint8_t *out)
{
    uint8_t body[512];
    size_t b = 0;
    body[b++] = 3;
    body[b++] = 3;
    memset(body + b, 0x11, 32);
    b += 32;
    body[b++] = 0; /* session id */
    body[b++] = 0;
    body[b++] = 2;
    body[b++] = 0x13;
    body[b++] = 0x01;
    body[b++] = 1;
    body[b++] = 0;
    body[b++] = (uint8_t)(ext_len >> 8);
    body[b++] = (uint8_t)ext_len;
    memcpy(body + b, ext, ext_len);
    b += ext_len;
    size_t o = 0;
    out[o++] = 22;
    out[o++] = 3;
    out[o++] = 1;
    out[o++] = (uint8_t)((b + 4) >> 8);
    out[o++] = (uint8_t)(b + 4);
    out[o++] = 1;
    out[o++] = 0;
    out[o++] = (uint8_t)(b >> 8);
    out[o++] = (uint8_t)b;
    memcpy(out + o, body, b);
    return o + b;
}

static size_t sni_ext(const char *name, size_t n, uint8_t *ext)
{
    size_t o = 0;
    ext[o++] = 0;
    ext[o++] = 0;
    ext[o++] = 0;
    ext[o++] = (uint8_t)(n + 5);
    ext[o++] = 0;
    ext[o++] = (uint8_t)(n + 3);
    ext[o++] = 0;
    ext[o++] = 0;
    ext[o++] = (uint8_t)n;
    memcpy(ext + o, name, n);
    return o + n;
}

static void test_hello_bad_names(void **state)
{
    (void)state;
    uint8_t ext[300], msg[600];
    struct ds_gw_hello h;
    const char *bad[] = {"a..b", ".a.b", "a.b.", "a b.c", "a/b.c", "\xc3\xa9.com"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        size_t e = sni_ext(bad[i], strlen(bad[i]), ext);
        size_t m = build_hello(ext, e, msg);
        assert_int_equal(ds_gw_clienthello_parse(msg, m, &h), -DS_E_FORMAT);
    }
    size_t e = sni_ext("ok.example.com", 14, ext);
    size_t m = build_hello(ext, e, msg);
    assert_int_equal(ds_gw_clienthello_parse(msg, m, &h), DS_GW_HELLO_COMPLETE);
    assert_string_equal(h.sni, "ok.example.com");
    /* NUL inside the name */
    e = sni_ext("ok\0x.example.com", 16, ext);
    m = build_hello(ext, e, msg);
    assert_int_equal(ds_gw_clienthello_parse(msg, m, &h), -DS_E_FORMAT);
    /* duplicate SNI extension */
    e = sni_ext("a.b", 3, ext);
    memcpy(ext + e, ext, e);
    m = build_hello(ext, 2 * e, msg);
    assert_int_equal(ds_gw_clienthello_parse(msg, m, &h), -DS_E_FORMAT);
    /* extension length past the end */
    e = sni_ext("a.b", 3, ext);
    ext[3] = 0x40;
    m = build_hello(ext, e, msg);
    assert_int_equal(ds_gw_clienthello_parse(msg, m, &h), -DS_E_FORMAT);
    /* label > 63 */
    char longl[80];
    memset(longl, 'a', 64);
    memcpy(longl + 64, ".com", 4);
    e = sni_ext(longl, 68, ext);
    m = build_hello(ext, e, msg);
    assert_int_equal(ds_gw_clienthello_parse(msg, m, &h), -DS_E_FORMAT);
}

struct sni_case {
    const char *sub;
    int rc;
    const char *id;
    unsigned port;
    enum ds_gw_mode mode;
    enum ds_gw_special special;
};

static void test_sni_grammar(void **state)
{
    (void)state;
    static const struct sni_case cases[] = {
        {"abc123", 0, "abc123", 80, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_NONE},
        {"ABC", 0, "abc", 80, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_NONE},
        {"abc-8080", 0, "abc", 8080, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_NONE},
        {"abc-s", 0, "abc", 443, DS_GW_MODE_PASSTHROUGH, DS_GW_SPECIAL_NONE},
        {"abc-443s", 0, "abc", 443, DS_GW_MODE_PASSTHROUGH, DS_GW_SPECIAL_NONE},
        {"abc-8443s", 0, "abc", 8443, DS_GW_MODE_PASSTHROUGH, DS_GW_SPECIAL_NONE},
        {"abc-50051g", 0, "abc", 50051, DS_GW_MODE_H2, DS_GW_SPECIAL_NONE},
        {"abc-g", 0, "abc", 80, DS_GW_MODE_H2, DS_GW_SPECIAL_NONE},
        {"abc-65535", 0, "abc", 65535, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_NONE},
        {"health", 0, "health", 80, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_HEALTH},
        {"gateway", 0, "gateway", 80, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_GATEWAY},
        {"gateway-80", 0, "gateway", 80, DS_GW_MODE_TERMINATE, DS_GW_SPECIAL_GATEWAY},
        {"health-443s", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"gateway-8080", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"-80", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-0", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-080", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-65536", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-443sg", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-sg", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-80-90", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-8x", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-x", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"ab_c", -DS_E_FORMAT, NULL, 0, 0, 0},
        {"abc-123456", -DS_E_FORMAT, NULL, 0, 0, 0},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(cases); i++) {
        struct ds_gw_target t;
        int rc = ds_gw_sni_parse_sub(cases[i].sub, strlen(cases[i].sub), &t);
        if (rc != cases[i].rc) {
            fail_msg("case %s: got %d want %d", cases[i].sub, rc, cases[i].rc);
        }
        if (rc == 0) {
            assert_string_equal(t.id, cases[i].id);
            assert_int_equal(t.port, cases[i].port);
            assert_int_equal(t.mode, cases[i].mode);
            assert_int_equal(t.special, cases[i].special);
        }
    }
    char id64[70];
    memset(id64, 'a', 64);
    assert_int_equal(ds_gw_sni_parse_sub(id64, 64, &(struct ds_gw_target){0}), -DS_E_FORMAT);

    size_t sub_len;
    const char *base;
    assert_int_equal(ds_gw_sni_split("abc-443s.app.example.com", &sub_len, &base), 0);
    assert_int_equal(sub_len, 8);
    assert_string_equal(base, "app.example.com");
    assert_int_equal(ds_gw_sni_split("localhost", &sub_len, &base), -DS_E_FORMAT);
    assert_int_equal(ds_gw_sni_split(".example.com", &sub_len, &base), -DS_E_FORMAT);
    assert_int_equal(ds_gw_sni_split("abc.", &sub_len, &base), -DS_E_FORMAT);
    assert_true(ds_gw_domain_equal("Example.COM.", "example.com"));
    assert_false(ds_gw_domain_equal("example.com", "example.co"));
    assert_false(ds_gw_domain_equal("", ""));
}

/* DNS answer: header, question, answers (name via compression pointer). */
static size_t dns_answer(const char *const *txt_strings, size_t nstr, uint16_t rcode, uint8_t *out)
{
    size_t o = 0;
    const uint8_t hdr[12] = {0x12, 0x34, 0x81, (uint8_t)(0x80 | rcode), 0, 1, 0, 2, 0, 0, 0, 0};
    memcpy(out, hdr, 12);
    o = 12;
    const uint8_t q[] = "\x13_dstack-app-address\x03"
                        "foo\x03"
                        "com\x00\x00\x10\x00\x01";
    memcpy(out + o, q, sizeof(q) - 1);
    o += sizeof(q) - 1;
    /* answer 1: a CNAME-typed record to skip */
    const uint8_t a1[] = {0xc0, 0x0c, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 0x0c};
    memcpy(out + o, a1, sizeof(a1));
    o += sizeof(a1);
    /* answer 2: TXT */
    size_t rd = 0;
    for (size_t i = 0; i < nstr; i++) {
        rd += 1 + strlen(txt_strings[i]);
    }
    const uint8_t a2[] = {0xc0, 0x0c, 0, 16, 0, 1, 0, 0, 0, 60, (uint8_t)(rd >> 8), (uint8_t)rd};
    memcpy(out + o, a2, sizeof(a2));
    o += sizeof(a2);
    for (size_t i = 0; i < nstr; i++) {
        out[o++] = (uint8_t)strlen(txt_strings[i]);
        memcpy(out + o, txt_strings[i], strlen(txt_strings[i]));
        o += strlen(txt_strings[i]);
    }
    return o;
}

static void test_txt_app_address(void **state)
{
    (void)state;
    char id[DS_GW_ID_MAX + 1];
    uint16_t port;
    assert_int_equal(ds_gw_app_address_parse("ABCdef0123:8443", 15, id, sizeof(id), &port), 0);
    assert_string_equal(id, "abcdef0123");
    assert_int_equal(port, 8443);
    const char *bad[] = {"abc",       ":80",    "abc:",    "abc:0",
                         "abc:70000", "a-b:80", "abc:80x", "abc:80:90"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        assert_int_equal(ds_gw_app_address_parse(bad[i], strlen(bad[i]), id, sizeof(id), &port),
                         -DS_E_FORMAT);
    }
    uint8_t msg[512];
    const char *one[] = {"0123456789abcdef0123456789abcdef01234567:443"};
    size_t n = dns_answer(one, 1, 0, msg);
    assert_int_equal(ds_gw_dns_txt_app_address(msg, n, id, sizeof(id), &port), 0);
    assert_string_equal(id, "0123456789abcdef0123456789abcdef01234567");
    assert_int_equal(port, 443);
    /* split across two character-strings */
    const char *two[] = {"0123456789abcdef", "0123456789abcdef01234567:8080"};
    n = dns_answer(two, 2, 0, msg);
    assert_int_equal(ds_gw_dns_txt_app_address(msg, n, id, sizeof(id), &port), 0);
    assert_int_equal(port, 8080);
    /* every truncation fails without reading past the end */
    for (size_t i = 0; i < n; i++) {
        assert_true(ds_gw_dns_txt_app_address(msg, i, id, sizeof(id), &port) < 0);
    }
    /* NXDOMAIN, unparsable text */
    n = dns_answer(one, 1, 3, msg);
    assert_int_equal(ds_gw_dns_txt_app_address(msg, n, id, sizeof(id), &port), -DS_E_NOT_FOUND);
    const char *junk[] = {"v=spf1 -all"};
    n = dns_answer(junk, 1, 0, msg);
    assert_int_equal(ds_gw_dns_txt_app_address(msg, n, id, sizeof(id), &port), -DS_E_NOT_FOUND);
    /* a query, not a response */
    n = dns_answer(one, 1, 0, msg);
    msg[2] = 0x01;
    assert_int_equal(ds_gw_dns_txt_app_address(msg, n, id, sizeof(id), &port), -DS_E_FORMAT);
}

static void sa4(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    struct sockaddr_in *s = (struct sockaddr_in *)ss;
    memset(ss, 0, sizeof(*ss));
    s->sin_family = AF_INET;
    s->sin_port = htons(port);
    assert_int_equal(inet_pton(AF_INET, ip, &s->sin_addr), 1);
}

static void sa6(struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    struct sockaddr_in6 *s = (struct sockaddr_in6 *)ss;
    memset(ss, 0, sizeof(*ss));
    s->sin6_family = AF_INET6;
    s->sin6_port = htons(port);
    assert_int_equal(inet_pton(AF_INET6, ip, &s->sin6_addr), 1);
}

static void check_roundtrip(int version, const struct sockaddr_storage *src,
                            const struct sockaddr_storage *dst)
{
    struct ds_buf b;
    struct ds_pp_info info;
    ds_buf_init(&b, 4096);
    int n = version == 1
                ? ds_pp_build_v1(&b, (const struct sockaddr *)src, (const struct sockaddr *)dst)
                : ds_pp_build_v2(&b, (const struct sockaddr *)src, (const struct sockaddr *)dst);
    assert_true(n > 0);
    assert_int_equal((size_t)n, b.len);
    assert_int_equal(ds_buf_append(&b, "\x16\x03\x01", 3), 0); /* payload follows */
    for (size_t i = 0; i < (size_t)n; i++) {
        assert_int_equal(ds_pp_parse(b.data, i, &info), 0);
    }
    assert_int_equal(ds_pp_parse(b.data, b.len, &info), 1);
    assert_int_equal(info.version, version);
    assert_false(info.local);
    assert_int_equal(info.header_size, (size_t)n);
    size_t sz =
        src->ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    assert_memory_equal(&info.src, src, sz);
    assert_memory_equal(&info.dst, dst, sz);
    ds_buf_done(&b);
}

static void test_pp_roundtrip(void **state)
{
    (void)state;
    struct sockaddr_storage s, d;
    sa4(&s, "192.0.2.1", 56324);
    sa4(&d, "10.0.0.2", 443);
    check_roundtrip(1, &s, &d);
    check_roundtrip(2, &s, &d);
    sa6(&s, "2001:db8::1", 1);
    sa6(&d, "::ffff:10.0.0.2", 65535);
    check_roundtrip(1, &s, &d);
    check_roundtrip(2, &s, &d);
    /* text check of v1 */
    struct ds_buf b;
    ds_buf_init(&b, 256);
    sa4(&s, "192.0.2.1", 56324);
    sa4(&d, "10.0.0.2", 443);
    assert_true(ds_pp_build_v1(&b, (struct sockaddr *)&s, (struct sockaddr *)&d) > 0);
    assert_string_equal((char *)b.data, "PROXY TCP4 192.0.2.1 10.0.0.2 56324 443\r\n");
    ds_buf_reset(&b);
    /* mixed families refused */
    sa6(&d, "::1", 1);
    assert_int_equal(ds_pp_build_v1(&b, (struct sockaddr *)&s, (struct sockaddr *)&d), -EINVAL);
    assert_int_equal(ds_pp_build_v2(&b, (struct sockaddr *)&s, (struct sockaddr *)&d), -EINVAL);
    /* v2 LOCAL */
    struct ds_pp_info info;
    assert_int_equal(ds_pp_build_v2(&b, NULL, NULL), 16);
    assert_int_equal(ds_pp_parse(b.data, b.len, &info), 1);
    assert_true(info.local);
    assert_int_equal(info.header_size, 16);
    ds_buf_done(&b);
    /* v1 UNKNOWN */
    const char *unk = "PROXY UNKNOWN ffff::1 ffff::2 1 2\r\nX";
    assert_int_equal(ds_pp_parse(unk, strlen(unk), &info), 1);
    assert_true(info.local);
    assert_int_equal(info.header_size, strlen(unk) - 1);
}

static void test_pp_malformed(void **state)
{
    (void)state;
    struct ds_pp_info info;
    const char *bad_v1[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   "PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n", "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
        "PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",     "PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
        "PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",     "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n",
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad_v1); i++) {
        if (ds_pp_parse(bad_v1[i], strlen(bad_v1[i]), &info) != -DS_E_FORMAT) {
            fail_msg("accepted %s", bad_v1[i]);
        }
    }
    assert_int_equal(ds_pp_parse("PROXZ", 5, &info), -DS_E_PROTOCOL);
    assert_int_equal(ds_pp_parse("\x16\x03\x01", 3, &info), -DS_E_PROTOCOL);
    assert_int_equal(ds_pp_parse("PROX", 4, &info), 0);
    char longline[200];
    memset(longline, 'A', sizeof(longline));
    memcpy(longline, "PROXY ", 6);
    assert_int_equal(ds_pp_parse(longline, sizeof(longline), &info), -DS_E_LIMIT);

    uint8_t v2[64] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};
    /* wrong version */
    v2[12] = 0x11;
    v2[13] = 0x11;
    v2[15] = 12;
    assert_int_equal(ds_pp_parse(v2, 28, &info), -DS_E_UNSUPPORTED);
    /* UDP */
    v2[12] = 0x21;
    v2[13] = 0x12;
    assert_int_equal(ds_pp_parse(v2, 28, &info), -DS_E_UNSUPPORTED);
    /* TCP4 with a too short address block */
    v2[13] = 0x11;
    v2[15] = 8;
    assert_int_equal(ds_pp_parse(v2, 24, &info), -DS_E_FORMAT);
    /* length above the limit */
    v2[14] = 0x10;
    v2[15] = 0;
    assert_int_equal(ds_pp_parse(v2, 16, &info), -DS_E_LIMIT);
    /* broken TLV framing */
    v2[14] = 0;
    v2[15] = 12 + 3;
    v2[28] = 0x04;
    v2[29] = 0;
    v2[30] = 9;
    assert_int_equal(ds_pp_parse(v2, 31, &info), -DS_E_FORMAT);
    /* good TLV */
    v2[15] = 12 + 4;
    v2[30] = 1;
    assert_int_equal(ds_pp_parse(v2, 32, &info), 1);
    assert_int_equal(info.header_size, 32);
    /* bad command */
    v2[12] = 0x22;
    assert_int_equal(ds_pp_parse(v2, 32, &info), -DS_E_UNSUPPORTED);
}

static void test_routes(void **state)
{
    (void)state;
    struct gw_routes *rt = NULL;
    struct gw_backend out[GW_ROUTES_LOOKUP_MAX];
    const int64_t now = 1700000000;
    assert_int_equal(gw_routes_new(&rt), 0);
    /* app "a1" with four instances of different freshness, one stale; app "a2" with one. */
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i1", "10.0.0.2", now - 100), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i2", "10.0.0.3", now - 5), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i3", "10.0.0.4", now - 50), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i4", "10.0.0.5", now - 4000), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i5", "fd00::5", now - 10), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a2", "j1", "10.0.0.9", 0), 0);
    /* invalid input */
    assert_int_equal(gw_routes_set_instance(rt, "A1", "i9", "10.0.0.2", now), -EINVAL);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "", "10.0.0.2", now), -EINVAL);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i9", "10.0.0.256", now), -EINVAL);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i9", "host.example", now), -EINVAL);

    /* freshest first, top 3, stale (> 1800 s) excluded */
    int n = gw_routes_lookup(rt, "a1", now, 1800, 3, out, DS_ARRAY_SIZE(out));
    assert_int_equal(n, 3);
    assert_string_equal(out[0].instance_id, "i2");
    assert_string_equal(out[1].instance_id, "i5");
    assert_string_equal(out[2].instance_id, "i3");
    n = gw_routes_lookup(rt, "a1", now, 1800, 10, out, DS_ARRAY_SIZE(out));
    assert_int_equal(n, 4); /* i4 is stale */
    n = gw_routes_lookup(rt, "a1", now, 0, 10, out, DS_ARRAY_SIZE(out));
    assert_int_equal(n, 5); /* no staleness check */
    /* never-handshaken instance is not healthy; by instance id it is still reachable */
    assert_int_equal(gw_routes_lookup(rt, "a2", now, 1800, 3, out, DS_ARRAY_SIZE(out)), 0);
    assert_int_equal(gw_routes_lookup(rt, "j1", now, 1800, 3, out, DS_ARRAY_SIZE(out)), 1);
    assert_string_equal(out[0].app_id, "a2");
    assert_string_equal(out[0].ip, "10.0.0.9");
    /* top_n = 0: one healthy instance at random */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(gw_routes_lookup(rt, "a1", now, 1800, 0, out, 1), 1);
        assert_true(strcmp(out[0].instance_id, "i4") != 0);
    }
    assert_int_equal(gw_routes_lookup(rt, "nope", now, 1800, 3, out, DS_ARRAY_SIZE(out)), 0);
    assert_int_equal(gw_routes_lookup(rt, "a1", now, 1800, 3, out, 0), -EINVAL);

    /* counters survive updates; handshake refresh changes the order */
    gw_routes_conn_inc(rt, "i3");
    gw_routes_conn_inc(rt, "i3");
    gw_routes_conn_dec(rt, "i3");
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i3", "10.0.0.44", now - 50), 0);
    assert_int_equal(gw_routes_set_handshake(rt, "i3", now), 0);
    assert_int_equal(gw_routes_set_handshake(rt, "zz", now), -ENOENT);
    n = gw_routes_lookup(rt, "a1", now, 1800, 1, out, DS_ARRAY_SIZE(out));
    assert_int_equal(n, 1);
    assert_string_equal(out[0].instance_id, "i3");
    assert_string_equal(out[0].ip, "10.0.0.44");
    assert_int_equal(out[0].num_connections, 1);

    assert_int_equal(gw_routes_remove_instance(rt, "i3"), 0);
    assert_int_equal(gw_routes_remove_instance(rt, "i3"), -ENOENT);
    assert_int_equal(gw_routes_list(rt, out, DS_ARRAY_SIZE(out)), 5);
    gw_routes_free(rt);
    gw_routes_free(NULL);
}

/* max_connections_per_app: check and count in one step, exact under concurrent reservers. */
struct reserve_arg {
    struct gw_routes *rt;
    struct gw_backend cand[2];
    int granted;
};

static void *reserve_thread(void *p)
{
    struct reserve_arg *a = p;
    for (int i = 0; i < 500; i++) {
        if (gw_routes_conn_reserve(a->rt, a->cand, 2, 50) == 0) {
            a->granted++;
        }
    }
    return NULL;
}

static void test_routes_reserve(void **state)
{
    (void)state;
    struct gw_routes *rt = NULL;
    struct gw_backend out[4];
    const int64_t now = 1700000000;
    assert_int_equal(gw_routes_new(&rt), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i1", "10.0.0.2", now - 5), 0);
    assert_int_equal(gw_routes_set_instance(rt, "a1", "i2", "10.0.0.3", now - 9), 0);
    assert_int_equal(gw_routes_lookup(rt, "a1", now, 1800, 3, out, DS_ARRAY_SIZE(out)), 2);
    assert_int_equal(gw_routes_conn_reserve(rt, out, 0, 2), -EINVAL);
    /* limit 2 over both candidates: two reservations, then -DS_E_LIMIT with nothing counted */
    assert_int_equal(gw_routes_conn_reserve(rt, out, 2, 2), 0);
    assert_int_equal(gw_routes_conn_reserve(rt, out, 2, 2), 0);
    assert_int_equal(gw_routes_conn_reserve(rt, out, 2, 2), -DS_E_LIMIT);
    assert_int_equal(gw_routes_lookup(rt, "i1", now, 1800, 3, out, 1), 1);
    assert_int_equal(out[0].num_connections, 2); /* counted on the first candidate */
    /* the connect race was won by i2: the count moves, the app's sum stays */
    gw_routes_conn_move(rt, "i1", "i2");
    gw_routes_conn_move(rt, "i1", "i1"); /* no-op */
    assert_int_equal(gw_routes_lookup(rt, "i1", now, 1800, 3, out, 1), 1);
    assert_int_equal(out[0].num_connections, 1);
    assert_int_equal(gw_routes_lookup(rt, "i2", now, 1800, 3, out, 1), 1);
    assert_int_equal(out[0].num_connections, 1);
    assert_int_equal(gw_routes_lookup(rt, "a1", now, 1800, 3, out, DS_ARRAY_SIZE(out)), 2);
    assert_int_equal(gw_routes_conn_reserve(rt, out, 2, 2), -DS_E_LIMIT);
    assert_int_equal(gw_routes_conn_reserve(rt, out, 2, 0), 0); /* 0 = unlimited, still counted */
    gw_routes_conn_dec(rt, "i1");
    gw_routes_conn_dec(rt, "i1");
    gw_routes_conn_dec(rt, "i2");
    /* four threads race for 50 slots: exactly 50 granted */
    struct reserve_arg args[4];
    pthread_t th[4];
    assert_int_equal(gw_routes_lookup(rt, "a1", now, 1800, 3, out, DS_ARRAY_SIZE(out)), 2);
    for (int i = 0; i < 4; i++) {
        args[i].rt = rt;
        memcpy(args[i].cand, out, sizeof(args[i].cand));
        args[i].granted = 0;
        assert_int_equal(pthread_create(&th[i], NULL, reserve_thread, &args[i]), 0);
    }
    int granted = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        granted += args[i].granted;
    }
    assert_int_equal(granted, 50);
    assert_int_equal(gw_routes_list(rt, out, DS_ARRAY_SIZE(out)), 2);
    assert_int_equal(out[0].num_connections + out[1].num_connections, 50);
    gw_routes_free(rt);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hello_openssl),    cmocka_unit_test(test_hello_truncated),
        cmocka_unit_test(test_hello_fragmented), cmocka_unit_test(test_hello_garbage),
        cmocka_unit_test(test_hello_bad_names),  cmocka_unit_test(test_sni_grammar),
        cmocka_unit_test(test_txt_app_address),  cmocka_unit_test(test_pp_roundtrip),
        cmocka_unit_test(test_pp_malformed),     cmocka_unit_test(test_routes),
        cmocka_unit_test(test_routes_reserve),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
