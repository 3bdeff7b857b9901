/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/attest/collateral.c (the QuoteCollateralV3 JSON form, spec §2.1):
 * round trips over the real Intel samples in tests/vectors/dcap, byte-exact output, and a
 * negative test for every way a field can be wrong (missing, wrong JSON type, bad hex, too
 * large), plus input that is not a JSON object at all. The fetch (spec §2.8) is tested against
 * a small PCCS stand-in (libevent evhttp on 127.0.0.1, port 0) that serves the same samples
 * the way a PCCS does, so the fetched collateral must equal the sample byte for byte.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "dstack/attest.h"
#include "helper_verify_util.h"

#define SAMPLE_MAX (1024 * 1024)

static const char *const required_fields[] = {
    "pck_crl_issuer_chain",     "root_ca_crl", "pck_crl",
    "tcb_info_issuer_chain",    "tcb_info",    "tcb_info_signature",
    "qe_identity_issuer_chain", "qe_identity", "qe_identity_signature",
};
static const char *const hex_fields[] = {"root_ca_crl", "pck_crl", "tcb_info_signature",
                                         "qe_identity_signature"};

static char *read_sample(const char *name, size_t *len)
{
    char path[4096];
    uint8_t *data;
    snprintf(path, sizeof(path), "%s/%s", helper_dcap_dir(), name);
    int r = ds_read_file(path, SAMPLE_MAX, &data, len);
    if (r < 0) {
        fail_msg("cannot read %s: %s", path, ds_strerror(r));
    }
    return (char *)data;
}

static struct ds_collateral *load_sample(const char *name)
{
    size_t len;
    char *json = read_sample(name, &len);
    struct ds_collateral *c = NULL;
    char err[256];
    int r = ds_collateral_from_json(json, len, &c, err, sizeof(err));
    if (r < 0) {
        fail_msg("%s: %s (%s)", name, err, ds_strerror(r));
    }
    free(json);
    return c;
}

static void assert_bytes_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    assert_int_equal(alen, blen);
    if (alen) {
        assert_memory_equal(a, b, alen);
    }
}

static void assert_str_equal_or_null(const char *a, const char *b)
{
    if (!a || !b) {
        assert_null(a);
        assert_null(b);
        return;
    }
    assert_string_equal(a, b);
}

static void assert_collateral_equal(const struct ds_collateral *a, const struct ds_collateral *b)
{
    assert_string_equal(a->pck_crl_issuer_chain, b->pck_crl_issuer_chain);
    assert_bytes_equal(a->root_ca_crl, a->root_ca_crl_len, b->root_ca_crl, b->root_ca_crl_len);
    assert_bytes_equal(a->pck_crl, a->pck_crl_len, b->pck_crl, b->pck_crl_len);
    assert_string_equal(a->tcb_info_issuer_chain, b->tcb_info_issuer_chain);
    assert_bytes_equal(a->tcb_info, a->tcb_info_len, b->tcb_info, b->tcb_info_len);
    assert_bytes_equal(a->tcb_info_signature, a->tcb_info_signature_len, b->tcb_info_signature,
                       b->tcb_info_signature_len);
    assert_string_equal(a->qe_identity_issuer_chain, b->qe_identity_issuer_chain);
    assert_bytes_equal(a->qe_identity, a->qe_identity_len, b->qe_identity, b->qe_identity_len);
    assert_bytes_equal(a->qe_identity_signature, a->qe_identity_signature_len,
                       b->qe_identity_signature, b->qe_identity_signature_len);
    assert_str_equal_or_null(a->pck_certificate_chain, b->pck_certificate_chain);
}

/* Load a sample as a jansson object, for tests that edit it. */
static json_t *sample_object(const char *name)
{
    size_t len;
    char *json = read_sample(name, &len);
    json_error_t jerr;
    json_t *o = json_loadb(json, len, 0, &jerr);
    free(json);
    assert_non_null(o);
    return o;
}

/* from_json over a jansson value; returns the error and copies the message. */
static int load_value(json_t *o, char *err, size_t err_size)
{
    char *s = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(s);
    struct ds_collateral *c = NULL;
    int r = ds_collateral_from_json(s, strlen(s), &c, err, err_size);
    free(s);
    if (r == 0) {
        assert_non_null(c);
        ds_collateral_free(c);
    } else {
        assert_null(c);
    }
    return r;
}

static void test_sample_fields(void **state)
{
    (void)state;
    struct ds_collateral *t = load_sample("tdx_quote_collateral.json");
    struct ds_collateral *s = load_sample("sgx_quote_collateral.json");

    assert_int_equal(t->tcb_info_signature_len, 64);
    assert_int_equal(t->qe_identity_signature_len, 64);
    assert_int_equal(t->root_ca_crl_len, 292);
    assert_int_equal(t->tcb_info_len, 2934);
    assert_int_equal(t->qe_identity_len, 461);
    assert_true(strncmp(t->tcb_info, "{\"id\":\"TDX\",\"version\":3,", 24) == 0);
    assert_true(strncmp(t->qe_identity, "{\"id\":\"TD_QE\",", 14) == 0);
    assert_int_equal(t->tcb_info[t->tcb_info_len], 0);
    /* DER CRLs start with a SEQUENCE tag */
    assert_int_equal(t->root_ca_crl[0], 0x30);
    assert_int_equal(t->pck_crl[0], 0x30);
    assert_int_equal(t->pck_crl_len, 5326 / 2);
    assert_true(strncmp(t->pck_crl_issuer_chain, "-----BEGIN CERTIFICATE-----\n", 28) == 0);
    assert_null(t->pck_certificate_chain);

    assert_true(strncmp(s->tcb_info, "{\"id\":\"SGX\",", 12) == 0);
    assert_true(strncmp(s->qe_identity, "{\"id\":\"QE\",", 11) == 0);
    assert_int_equal(s->pck_crl_len, 302);
    assert_null(s->pck_certificate_chain);
    ds_collateral_free(t);
    ds_collateral_free(s);
}

static void roundtrip(const char *name)
{
    size_t len;
    char *json = read_sample(name, &len);
    struct ds_collateral *a = load_sample(name), *b = NULL;
    char *out = NULL, err[256];

    assert_int_equal(ds_collateral_to_json(a, &out), 0);
    /* The saved form is the same bytes as dcap-qvl's sample file. */
    assert_int_equal(strlen(out), len);
    assert_memory_equal(out, json, len);
    assert_int_equal(ds_collateral_from_json(out, strlen(out), &b, err, sizeof(err)), 0);
    assert_collateral_equal(a, b);
    free(out);
    ds_collateral_free(b);

    /* With the optional PCK chain present it survives the round trip too. */
    a->pck_certificate_chain = strdup(a->tcb_info_issuer_chain);
    assert_non_null(a->pck_certificate_chain);
    assert_int_equal(ds_collateral_to_json(a, &out), 0);
    assert_non_null(strstr(out, "\"pck_certificate_chain\""));
    assert_int_equal(ds_collateral_from_json(out, strlen(out), &b, err, sizeof(err)), 0);
    assert_non_null(b->pck_certificate_chain);
    assert_collateral_equal(a, b);
    free(out);
    ds_collateral_free(b);
    ds_collateral_free(a);
    free(json);
}

static void test_roundtrip_tdx(void **state)
{
    (void)state;
    roundtrip("tdx_quote_collateral.json");
}

static void test_roundtrip_sgx(void **state)
{
    (void)state;
    roundtrip("sgx_quote_collateral.json");
}

static void test_uppercase_hex_and_unknown_keys(void **state)
{
    (void)state;
    json_t *o = sample_object("sgx_quote_collateral.json");
    for (size_t i = 0; i < DS_ARRAY_SIZE(hex_fields); i++) {
        const char *v = json_string_value(json_object_get(o, hex_fields[i]));
        char *up = strdup(v);
        for (char *p = up; *p; p++) {
            if (*p >= 'a' && *p <= 'f') {
                *p = (char)(*p - 'a' + 'A');
            }
        }
        json_object_set_new(o, hex_fields[i], json_string(up));
        free(up);
    }
    json_object_set_new(o, "some_future_field", json_pack("{s:i}", "x", 1));
    json_object_set_new(o, "pck_certificate_chain", json_null());
    char *s = json_dumps(o, 0);
    struct ds_collateral *a = NULL, *b = load_sample("sgx_quote_collateral.json");
    char err[256];
    assert_int_equal(ds_collateral_from_json(s, strlen(s), &a, err, sizeof(err)), 0);
    assert_collateral_equal(a, b);
    ds_collateral_free(a);
    ds_collateral_free(b);
    free(s);
    json_decref(o);
}

static void test_missing_field(void **state)
{
    (void)state;
    char err[256], want[128];
    for (size_t i = 0; i < DS_ARRAY_SIZE(required_fields); i++) {
        json_t *o = sample_object("tdx_quote_collateral.json");
        assert_int_equal(json_object_del(o, required_fields[i]), 0);
        assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
        snprintf(want, sizeof(want), "%s: missing", required_fields[i]);
        assert_string_equal(err, want);
        json_decref(o);
    }
}

static bool is_hex_field(const char *name)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(hex_fields); i++) {
        if (strcmp(name, hex_fields[i]) == 0) {
            return true;
        }
    }
    return false;
}

static void test_wrong_type(void **state)
{
    (void)state;
    char err[256], want[128];
    json_t *bad[] = {json_integer(5), json_true(), json_null(), json_array(), json_object()};
    const char *names[DS_ARRAY_SIZE(required_fields) + 1];
    memcpy(names, required_fields, sizeof(required_fields));
    names[DS_ARRAY_SIZE(required_fields)] = "pck_certificate_chain";
    for (size_t i = 0; i < DS_ARRAY_SIZE(names); i++) {
        for (size_t k = 0; k < DS_ARRAY_SIZE(bad); k++) {
            bool optional = i == DS_ARRAY_SIZE(required_fields);
            json_t *o = sample_object("tdx_quote_collateral.json");
            json_object_set(o, names[i], bad[k]);
            int r = load_value(o, err, sizeof(err));
            json_decref(o);
            if (optional && json_is_null(bad[k])) {
                /* null is "absent" (serde's Option), fine for the optional field only */
                assert_int_equal(r, 0);
                continue;
            }
            assert_int_equal(r, -DS_E_FORMAT);
            snprintf(want, sizeof(want), "%s: expected %s", names[i],
                     is_hex_field(names[i]) ? "hex string" : "string");
            assert_string_equal(err, want);
        }
    }
    for (size_t k = 0; k < DS_ARRAY_SIZE(bad); k++) {
        json_decref(bad[k]);
    }
}

static void test_bad_hex(void **state)
{
    (void)state;
    char err[256], want[128];
    const char *cases[] = {"abc", "zz", "0g12", "12 34", "-1"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(hex_fields); i++) {
        for (size_t k = 0; k < DS_ARRAY_SIZE(cases); k++) {
            json_t *o = sample_object("sgx_quote_collateral.json");
            json_object_set_new(o, hex_fields[i], json_string(cases[k]));
            assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
            snprintf(want, sizeof(want), "%s: expected hex string", hex_fields[i]);
            assert_string_equal(err, want);
            json_decref(o);
        }
        /* odd length of an otherwise valid value: drop the last digit */
        json_t *o = sample_object("sgx_quote_collateral.json");
        const char *v = json_string_value(json_object_get(o, hex_fields[i]));
        json_object_set_new(o, hex_fields[i], json_stringn(v, strlen(v) - 1));
        assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
        snprintf(want, sizeof(want), "%s: expected hex string", hex_fields[i]);
        assert_string_equal(err, want);
        json_decref(o);
    }
}

static void test_empty_values(void **state)
{
    (void)state;
    char err[256];
    for (size_t i = 0; i < DS_ARRAY_SIZE(required_fields); i++) {
        json_t *o = sample_object("tdx_quote_collateral.json");
        json_object_set_new(o, required_fields[i], json_string(""));
        assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_FORMAT);
        assert_true(strncmp(err, required_fields[i], strlen(required_fields[i])) == 0);
        assert_non_null(strstr(err, "expected non-empty"));
        json_decref(o);
    }
}

static void test_field_too_large(void **state)
{
    (void)state;
    char err[256];
    /* a 2 KiB signature: far beyond any r||s */
    size_t n = 4096;
    char *hex = malloc(n + 1);
    memset(hex, 'a', n);
    hex[n] = 0;
    json_t *o = sample_object("tdx_quote_collateral.json");
    json_object_set_new(o, "tcb_info_signature", json_string(hex));
    assert_int_equal(load_value(o, err, sizeof(err)), -DS_E_LIMIT);
    assert_string_equal(err, "tcb_info_signature: longer than 512 bytes");
    json_decref(o);
    free(hex);
}

static void test_oversized_input(void **state)
{
    (void)state;
    size_t len;
    char *json = read_sample("tdx_quote_collateral.json", &len);
    /* valid JSON followed by whitespace up to one byte past the cap */
    size_t big = (size_t)DS_COLLATERAL_MAX_JSON + 1;
    char *buf = malloc(big);
    assert_non_null(buf);
    memcpy(buf, json, len);
    memset(buf + len, ' ', big - len);
    struct ds_collateral *c = NULL;
    char err[256];
    assert_int_equal(ds_collateral_from_json(buf, big, &c, err, sizeof(err)), -DS_E_LIMIT);
    assert_null(c);
    assert_non_null(strstr(err, "longer than"));
    /* exactly at the cap it is accepted */
    assert_int_equal(ds_collateral_from_json(buf, big - 1, &c, err, sizeof(err)), 0);
    ds_collateral_free(c);
    free(buf);
    free(json);
}

static void test_not_an_object(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[256];
    const char *not_json[] = {"", "hello", "{\"pck_crl\":", "{} trailing", "\xff\xfe"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(not_json); i++) {
        assert_int_equal(
            ds_collateral_from_json(not_json[i], strlen(not_json[i]), &c, err, sizeof(err)),
            -DS_E_FORMAT);
        assert_null(c);
        assert_non_null(strstr(err, "not valid JSON"));
    }
    const char *not_obj[] = {"[]", "[{\"pck_crl\":\"00\"}]", "\"x\"", "42", "null"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(not_obj); i++) {
        int r = ds_collateral_from_json(not_obj[i], strlen(not_obj[i]), &c, err, sizeof(err));
        assert_int_equal(r, -DS_E_FORMAT);
        assert_null(c);
        /* jansson refuses bare scalars at top level; arrays reach our object check */
        assert_true(strstr(err, "expected a JSON object") || strstr(err, "not valid JSON"));
    }
    assert_int_equal(ds_collateral_from_json("[]", 2, &c, err, sizeof(err)), -DS_E_FORMAT);
    assert_string_equal(err, "collateral: expected a JSON object");
    /* a NUL byte inside the input is not JSON */
    assert_int_equal(ds_collateral_from_json("{}\0", 3, &c, err, sizeof(err)), -DS_E_FORMAT);
    /* the error buffer is optional */
    assert_int_equal(ds_collateral_from_json("[]", 2, &c, NULL, 0), -DS_E_FORMAT);
}

static void test_duplicate_and_nul(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[256];
    /* duplicate keys are ambiguous (which tcb_info is signed?): rejected */
    const char *dup = "{\"tcb_info\":\"a\",\"tcb_info\":\"b\"}";
    assert_int_equal(ds_collateral_from_json(dup, strlen(dup), &c, err, sizeof(err)), -DS_E_FORMAT);
    assert_non_null(strstr(err, "duplicate"));
    /* an escaped NUL inside a PEM string */
    json_t *o = sample_object("tdx_quote_collateral.json");
    char *s = json_dumps(o, JSON_COMPACT);
    json_decref(o);
    char *p = strstr(s, "-----BEGIN");
    assert_non_null(p);
    size_t plen = strlen(s) + 8;
    char *t = malloc(plen);
    snprintf(t, plen, "%.*s\\u0000%s", (int)(p - s), s, p);
    assert_int_equal(ds_collateral_from_json(t, strlen(t), &c, err, sizeof(err)), -DS_E_FORMAT);
    assert_null(c);
    free(t);
    free(s);
}

static void test_to_json_requires_fields(void **state)
{
    (void)state;
    struct ds_collateral *a = load_sample("tdx_quote_collateral.json");
    char *out = NULL;
    free(a->qe_identity);
    a->qe_identity = NULL;
    a->qe_identity_len = 0;
    assert_int_equal(ds_collateral_to_json(a, &out), -EINVAL);
    assert_null(out);
    ds_collateral_free(a);
    ds_collateral_free(NULL);
}

/* ---- the PCCS stand-in ------------------------------------------------------------------- */

/*
 * The first path segment selects how the server misbehaves, so one server covers every case:
 * http://127.0.0.1:PORT/<mode>/sgx/certification/v4/...
 */
#define SRV_LOG_MAX 32

struct srv {
    struct event_base *base;
    struct evhttp *http;
    pthread_t thread;
    int port;
    struct ds_collateral *tdx, *sgx;
    char *pck_leaf, *pck_issuer; /* the SGX sample quote's chain, for pckcert */
    char *cdp_chain;             /* a root whose CRL DP points at this server */
    pthread_mutex_t lock;
    char log[SRV_LOG_MAX][1024];
    size_t log_count;
};

static struct srv srv;

static void srv_header(struct evhttp_request *req, const char *name, const char *value)
{
    char *enc = evhttp_uriencode(value, -1, 0);
    assert_non_null(enc);
    evhttp_add_header(evhttp_request_get_output_headers(req), name, enc);
    free(enc);
}

static void srv_reply(struct evhttp_request *req, int code, const void *body, size_t len)
{
    struct evbuffer *b = evbuffer_new();
    evbuffer_add(b, body, len);
    evhttp_send_reply(req, code, code == 200 ? "OK" : "Error", b);
    evbuffer_free(b);
}

/* {"<key>": <signed>, "signature": "<hex>"} in the PCCS layout, or a harder one. */
static void srv_signed(struct evhttp_request *req, const char *mode, const char *key,
                       const char *signed_json, size_t signed_len, const uint8_t *sig,
                       size_t sig_len)
{
    char *hex = ds_hex_strdup(sig, sig_len);
    struct evbuffer *b = evbuffer_new();
    if (strcmp(mode, "spaced") == 0) {
        /* signature first, whitespace everywhere, a decoy member whose string holds the
         * key name, braces and escaped quotes */
        evbuffer_add_printf(b,
                            "\r\n{ \"decoy\" : [ \"\\\"%s\\\": {\", {\"%s\": 1} ] ,\n"
                            "  \"signature\" :\t\"%s\" ,\n  \"%s\" :  ",
                            key, key, hex, key);
        evbuffer_add(b, signed_json, signed_len);
        evbuffer_add_printf(b, "\n}\n");
    } else if (strcmp(mode, "notcb") == 0) {
        evbuffer_add_printf(b, "{\"%sX\":{},\"signature\":\"%s\"}", key, hex);
    } else {
        evbuffer_add_printf(b, "{\"%s\":", key);
        evbuffer_add(b, signed_json, signed_len);
        evbuffer_add_printf(b, ",\"signature\":\"%s\"}", hex);
    }
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
    free(hex);
}

static void srv_handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *uri = evhttp_request_get_uri(req);
    char mode[32];
    const char *rest = strchr(uri + 1, '/');
    if (uri[0] != '/' || !rest || (size_t)(rest - uri - 1) >= sizeof(mode)) {
        srv_reply(req, 404, "", 0);
        return;
    }
    memcpy(mode, uri + 1, (size_t)(rest - uri - 1));
    mode[rest - uri - 1] = 0;
    pthread_mutex_lock(&srv.lock);
    if (srv.log_count < SRV_LOG_MAX) {
        snprintf(srv.log[srv.log_count++], sizeof(srv.log[0]), "%s", rest);
    }
    pthread_mutex_unlock(&srv.lock);

    if (strcmp(mode, "e404") == 0) {
        srv_reply(req, 404, "not here", 8);
        return;
    }
    if (strcmp(rest, "/sgx/certification/v4/pckcrl?ca=platform&encoding=der") == 0 ||
        strcmp(rest, "/sgx/certification/v4/pckcrl?ca=processor&encoding=der") == 0) {
        const struct ds_collateral *c = strstr(rest, "platform") ? srv.tdx : srv.sgx;
        if (strcmp(mode, "big") == 0) {
            size_t n = 1024 * 1024 + 1;
            char *big = calloc(1, n);
            srv_header(req, "SGX-PCK-CRL-Issuer-Chain", c->pck_crl_issuer_chain);
            srv_reply(req, 200, big, n);
            free(big);
            return;
        }
        if (strcmp(mode, "bigchunked") == 0) {
            /* no Content-Length: only the write callback can stop it */
            static char chunk[64 * 1024];
            srv_header(req, "SGX-PCK-CRL-Issuer-Chain", c->pck_crl_issuer_chain);
            evhttp_send_reply_start(req, 200, "OK");
            for (int i = 0; i < 17; i++) {
                struct evbuffer *b = evbuffer_new();
                evbuffer_add(b, chunk, sizeof(chunk));
                evhttp_send_reply_chunk(req, b);
                evbuffer_free(b);
            }
            evhttp_send_reply_end(req);
            return;
        }
        srv_header(req, "SGX-PCK-CRL-Issuer-Chain", c->pck_crl_issuer_chain);
        srv_reply(req, 200, c->pck_crl, c->pck_crl_len);
        return;
    }
    const struct ds_collateral *by_tee = NULL;
    const char *tail = NULL;
    if (strncmp(rest, "/tdx/certification/v4/", 22) == 0) {
        by_tee = srv.tdx;
        tail = rest + 22;
    } else if (strncmp(rest, "/sgx/certification/v4/", 22) == 0) {
        by_tee = srv.sgx;
        tail = rest + 22;
    }
    if (tail && (strcmp(tail, "tcb?fmspc=B0C06F000000") == 0 ||
                 strcmp(tail, "tcb?fmspc=00A067110000") == 0)) {
        const struct ds_collateral *c = strstr(tail, "B0C06F") ? srv.tdx : srv.sgx;
        if (c != by_tee) {
            srv_reply(req, 404, "", 0);
            return;
        }
        if (strcmp(mode, "spaced") == 0) {
            srv_header(req, "TCB-Info-Issuer-Chain", c->tcb_info_issuer_chain);
        } else if (strcmp(mode, "nohdr") != 0) {
            srv_header(req, "SGX-TCB-Info-Issuer-Chain", c->tcb_info_issuer_chain);
        }
        srv_signed(req, mode, "tcbInfo", c->tcb_info, c->tcb_info_len, c->tcb_info_signature,
                   c->tcb_info_signature_len);
        return;
    }
    if (tail && strcmp(tail, "qe/identity?update=standard") == 0) {
        if (strcmp(mode, "qe404") == 0) {
            srv_reply(req, 404, "", 0);
            return;
        }
        srv_header(req, "SGX-Enclave-Identity-Issuer-Chain",
                   strcmp(mode, "cdp") == 0 ? srv.cdp_chain : by_tee->qe_identity_issuer_chain);
        srv_signed(req, mode, "enclaveIdentity", by_tee->qe_identity, by_tee->qe_identity_len,
                   by_tee->qe_identity_signature, by_tee->qe_identity_signature_len);
        return;
    }
    if (strcmp(rest, "/sgx/certification/v4/rootcacrl") == 0 && strcmp(mode, "cdp") == 0) {
        srv_reply(req, 404, "", 0); /* makes the client follow the root's CRL DP */
        return;
    }
    if (strcmp(rest, "/IntelSGXRootCA.der") == 0) {
        srv_reply(req, 200, srv.sgx->root_ca_crl, srv.sgx->root_ca_crl_len);
        return;
    }
    if (strcmp(rest, "/sgx/certification/v4/rootcacrl") == 0) {
        if (strcmp(mode, "badhex") == 0) {
            srv_reply(req, 200, "30zz", 4);
            return;
        }
        char *hex = ds_hex_strdup(srv.sgx->root_ca_crl, srv.sgx->root_ca_crl_len);
        srv_reply(req, 200, hex, strlen(hex));
        free(hex);
        return;
    }
    if (strncmp(rest, "/sgx/certification/v4/pckcert?", 30) == 0) {
        struct evkeyvalq q;
        char tcbm[64];
        evhttp_parse_query_str(rest + 30, &q);
        const char *cpusvn = evhttp_find_header(&q, "cpusvn");
        const char *pcesvn = evhttp_find_header(&q, "pcesvn");
        snprintf(tcbm, sizeof(tcbm), "%s%s", cpusvn ? cpusvn : "",
                 strcmp(mode, "tcbm") == 0 ? "FFFF" : (pcesvn ? pcesvn : ""));
        evhttp_clear_headers(&q);
        srv_header(req, "SGX-PCK-Certificate-Issuer-Chain", srv.pck_issuer);
        srv_header(req, "SGX-TCBm", tcbm);
        srv_reply(req, 200, srv.pck_leaf, strlen(srv.pck_leaf));
        return;
    }
    srv_reply(req, 404, "", 0);
}

static void *srv_main(void *arg)
{
    (void)arg;
    event_base_dispatch(srv.base);
    return NULL;
}

static uint8_t *read_bin(const char *name, size_t *len)
{
    return (uint8_t *)read_sample(name, len);
}

/*
 * A throw-away self-signed "root" (PEM) whose CRL distribution point is this server, standing
 * in for Intel's root (whose CDP is certificates.trustedservices.intel.com): the fetch takes
 * the root CA CRL from there when the PCCS has no rootcacrl.
 */
static char *make_cdp_root(int port)
{
    char uri[128];
    snprintf(uri, sizeof(uri), "URI:http://127.0.0.1:%d/cdp/IntelSGXRootCA.der", port);
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(key);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), 0);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_NAME *name = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"Test Root CA", -1,
                               -1, 0);
    X509_set_issuer_name(x, name);
    X509_set_pubkey(x, key);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, NULL, NID_crl_distribution_points, uri);
    assert_non_null(ext);
    X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    assert_true(X509_sign(x, key, EVP_sha256()) > 0);
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, x);
    char *p;
    long n = BIO_get_mem_data(bio, &p);
    char *pem = strndup(p, (size_t)n);
    BIO_free(bio);
    X509_free(x);
    EVP_PKEY_free(key);
    return pem;
}

static int srv_setup(void **state)
{
    (void)state;
    size_t len;
    uint8_t *quote = read_bin("sgx_quote", &len);
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(quote, len, &q), 0);
    assert_int_equal(q.cert_type, 5);
    /* split the quote's PEM chain into the leaf and its issuers */
    char *pem = strndup((const char *)q.cert_data, q.cert_data_len);
    char *second = strstr(pem + 1, "-----BEGIN CERTIFICATE-----");
    assert_non_null(second);
    srv.pck_issuer = strdup(second);
    *second = 0;
    srv.pck_leaf = pem;
    free(quote);

    srv.tdx = load_sample("tdx_quote_collateral.json");
    srv.sgx = load_sample("sgx_quote_collateral.json");
    pthread_mutex_init(&srv.lock, NULL);
    assert_int_equal(evthread_use_pthreads(), 0);
    srv.base = event_base_new();
    srv.http = evhttp_new(srv.base);
    assert_non_null(srv.http);
    evhttp_set_gencb(srv.http, srv_handle, NULL);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(srv.http, "127.0.0.1", 0);
    assert_non_null(bs);
    struct sockaddr_in sin;
    socklen_t sl = sizeof(sin);
    assert_int_equal(getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&sin, &sl), 0);
    srv.port = ntohs(sin.sin_port);
    srv.cdp_chain = make_cdp_root(srv.port);
    assert_int_equal(pthread_create(&srv.thread, NULL, srv_main, NULL), 0);
    return 0;
}

static int srv_teardown(void **state)
{
    (void)state;
    event_base_loopbreak(srv.base);
    pthread_join(srv.thread, NULL);
    evhttp_free(srv.http);
    event_base_free(srv.base);
    ds_collateral_free(srv.tdx);
    ds_collateral_free(srv.sgx);
    free(srv.pck_leaf);
    free(srv.pck_issuer);
    free(srv.cdp_chain);
    pthread_mutex_destroy(&srv.lock);
    libevent_global_shutdown();
    return 0;
}

static void srv_log_reset(void)
{
    pthread_mutex_lock(&srv.lock);
    srv.log_count = 0;
    pthread_mutex_unlock(&srv.lock);
}

/* Fetch for a quote file from base http://127.0.0.1:PORT/<suffix>. */
static int fetch_sample(const char *quote_name, const char *suffix, struct ds_collateral **out,
                        char *err, size_t err_size)
{
    size_t len;
    uint8_t *quote = read_bin(quote_name, &len);
    char base[256];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/%s", srv.port, suffix);
    srv_log_reset();
    int r = ds_collateral_fetch(base, quote, len, 10000, out, err, err_size);
    free(quote);
    return r;
}

static void assert_equals_sample(const struct ds_collateral *c, const char *json_name)
{
    size_t len;
    char *json = read_sample(json_name, &len), *out = NULL;
    struct ds_collateral *want = load_sample(json_name);
    assert_collateral_equal(c, want);
    assert_int_equal(ds_collateral_to_json(c, &out), 0);
    assert_int_equal(strlen(out), len);
    assert_memory_equal(out, json, len);
    free(out);
    free(json);
    ds_collateral_free(want);
}

static void test_fetch_tdx(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[512];
    int r = fetch_sample("tdx_quote", "ok", &c, err, sizeof(err));
    if (r < 0) {
        fail_msg("fetch: %s (%s)", err, ds_strerror(r));
    }
    assert_equals_sample(c, "tdx_quote_collateral.json");
    ds_collateral_free(c);
    /* the exact requests of spec §2.8: Platform CA, TDX paths, FMSPC uppercase */
    const char *want[] = {
        "/sgx/certification/v4/pckcrl?ca=platform&encoding=der",
        "/tdx/certification/v4/tcb?fmspc=B0C06F000000",
        "/tdx/certification/v4/qe/identity?update=standard",
        "/sgx/certification/v4/rootcacrl",
    };
    assert_int_equal(srv.log_count, DS_ARRAY_SIZE(want));
    for (size_t i = 0; i < DS_ARRAY_SIZE(want); i++) {
        assert_string_equal(srv.log[i], want[i]);
    }
}

static void test_fetch_sgx(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[512];
    int r = fetch_sample("sgx_quote", "ok", &c, err, sizeof(err));
    if (r < 0) {
        fail_msg("fetch: %s (%s)", err, ds_strerror(r));
    }
    assert_equals_sample(c, "sgx_quote_collateral.json");
    ds_collateral_free(c);
    const char *want[] = {
        "/sgx/certification/v4/pckcrl?ca=processor&encoding=der",
        "/sgx/certification/v4/tcb?fmspc=00A067110000",
        "/sgx/certification/v4/qe/identity?update=standard",
        "/sgx/certification/v4/rootcacrl",
    };
    assert_int_equal(srv.log_count, DS_ARRAY_SIZE(want));
    for (size_t i = 0; i < DS_ARRAY_SIZE(want); i++) {
        assert_string_equal(srv.log[i], want[i]);
    }
}

static void test_fetch_base_normalised(void **state)
{
    (void)state;
    const char *bases[] = {"ok/", "ok///", "ok/tdx/certification/v4", "ok/sgx/certification/v4/",
                           "ok/tdx/certification/v4/sgx/certification/v4"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bases); i++) {
        struct ds_collateral *c = NULL;
        char err[512];
        int r = fetch_sample("tdx_quote", bases[i], &c, err, sizeof(err));
        if (r < 0) {
            fail_msg("%s: %s (%s)", bases[i], err, ds_strerror(r));
        }
        assert_equals_sample(c, "tdx_quote_collateral.json");
        ds_collateral_free(c);
        assert_string_equal(srv.log[0], "/sgx/certification/v4/pckcrl?ca=platform&encoding=der");
    }
}

/* Whitespace, member order, a decoy string and Intel's TDX header name: same exact bytes. */
static void test_fetch_exact_span(void **state)
{
    (void)state;
    const char *quotes[] = {"tdx_quote", "sgx_quote"};
    const char *jsons[] = {"tdx_quote_collateral.json", "sgx_quote_collateral.json"};
    const int64_t window_end[] = {1752919235, 1752919278}; /* testdata/dcap/README.md */
    for (size_t i = 0; i < 2; i++) {
        struct ds_collateral *c = NULL;
        char err[512];
        int r = fetch_sample(quotes[i], "spaced", &c, err, sizeof(err));
        if (r < 0) {
            fail_msg("%s: %s (%s)", quotes[i], err, ds_strerror(r));
        }
        assert_equals_sample(c, jsons[i]);
        /* and the verifier accepts what was fetched (signatures cover the cut bytes) */
        struct ds_verifier *v = NULL;
        struct ds_verify_result res;
        size_t qlen;
        uint8_t *quote = read_bin(quotes[i], &qlen);
        assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
        r = ds_verify_quote(v, quote, qlen, c, window_end[i] - 1, &res);
        if (r < 0) {
            fail_msg("verify %s: %s: %s", quotes[i], ds_verify_step_name(res.failed_step),
                     res.message);
        }
        assert_true(res.ok);
        ds_verify_result_done(&res);
        /* one flipped byte inside the cut TCB info breaks its signature */
        c->tcb_info[c->tcb_info_len / 2] ^= 1;
        ds_verifier_clear_cache(v);
        assert_true(ds_verify_quote(v, quote, qlen, c, window_end[i] - 1, &res) < 0);
        assert_int_equal(res.failed_step, DS_STEP_TCB_INFO);
        ds_verify_result_done(&res);
        ds_verifier_free(v);
        free(quote);
        ds_collateral_free(c);
    }
}

/* No rootcacrl at the PCCS: the root CA CRL comes from the root's CRL distribution point. */
static void test_fetch_root_crl_from_cdp(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[512];
    int r = fetch_sample("tdx_quote", "cdp", &c, err, sizeof(err));
    if (r < 0) {
        fail_msg("fetch: %s (%s)", err, ds_strerror(r));
    }
    assert_string_equal(c->qe_identity_issuer_chain, srv.cdp_chain);
    assert_bytes_equal(c->root_ca_crl, c->root_ca_crl_len, srv.tdx->root_ca_crl,
                       srv.tdx->root_ca_crl_len);
    assert_int_equal(srv.log_count, 5);
    assert_string_equal(srv.log[3], "/sgx/certification/v4/rootcacrl");
    assert_string_equal(srv.log[4], "/IntelSGXRootCA.der");
    ds_collateral_free(c);
}

static void test_fetch_http_errors(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[512], want[256];

    assert_int_equal(fetch_sample("tdx_quote", "e404", &c, err, sizeof(err)), -DS_E_NETWORK);
    assert_null(c);
    snprintf(want, sizeof(want),
             "GET http://127.0.0.1:%d/e404/sgx/certification/v4/pckcrl?ca=platform&encoding=der: "
             "HTTP status 404",
             srv.port);
    assert_string_equal(err, want);

    assert_int_equal(fetch_sample("sgx_quote", "qe404", &c, err, sizeof(err)), -DS_E_NETWORK);
    snprintf(want, sizeof(want),
             "GET http://127.0.0.1:%d/qe404/sgx/certification/v4/qe/identity?update=standard: "
             "HTTP status 404",
             srv.port);
    assert_string_equal(err, want);

    /* nobody listening: a transport error names the URL too */
    size_t len;
    uint8_t *quote = read_bin("tdx_quote", &len);
    assert_int_equal(
        ds_collateral_fetch("http://127.0.0.1:1", quote, len, 5000, &c, err, sizeof(err)),
        -DS_E_NETWORK);
    assert_non_null(strstr(err, "GET http://127.0.0.1:1/sgx/certification/v4/pckcrl"));
    /* only http(s) */
    assert_int_equal(ds_collateral_fetch("file:///etc", quote, len, 5000, &c, err, sizeof(err)),
                     -DS_E_NETWORK);
    assert_int_equal(ds_collateral_fetch("", quote, len, 5000, &c, err, sizeof(err)), -EINVAL);
    assert_null(c);
    free(quote);
}

static void test_fetch_oversized(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[512];
    const char *modes[] = {"big", "bigchunked"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(modes); i++) {
        assert_int_equal(fetch_sample("tdx_quote", modes[i], &c, err, sizeof(err)), -DS_E_LIMIT);
        assert_null(c);
        assert_non_null(strstr(err, "pckcrl?ca=platform&encoding=der: response larger than "
                                    "1048576 bytes"));
    }
}

static void test_fetch_bad_responses(void **state)
{
    (void)state;
    struct ds_collateral *c = NULL;
    char err[512];

    assert_int_equal(fetch_sample("tdx_quote", "nohdr", &c, err, sizeof(err)), -DS_E_PROTOCOL);
    assert_null(c);
    assert_non_null(strstr(err, "/tdx/certification/v4/tcb?fmspc=B0C06F000000: missing header "
                                "TCB-Info-Issuer-Chain"));

    assert_int_equal(fetch_sample("tdx_quote", "notcb", &c, err, sizeof(err)), -DS_E_PROTOCOL);
    assert_null(c);
    assert_non_null(strstr(err, "tcb?fmspc=B0C06F000000: response has no tcbInfo object"));

    assert_int_equal(fetch_sample("sgx_quote", "badhex", &c, err, sizeof(err)), -DS_E_PROTOCOL);
    assert_null(c);
    assert_non_null(strstr(err, "/rootcacrl: root CA CRL: expected hex text"));

    /* a quote that does not parse never reaches the network */
    srv_log_reset();
    uint8_t junk[100] = {4, 0, 2, 0};
    char base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/ok", srv.port);
    assert_int_equal(ds_collateral_fetch(base, junk, sizeof(junk), 5000, &c, err, sizeof(err)),
                     -DS_E_TRUNCATED);
    assert_int_equal(srv.log_count, 0);
}

/* The SGX sample (v3) with its certification data replaced by (type, body). */
static uint8_t *make_v3_quote(uint16_t type, const uint8_t *body, size_t body_len, size_t *out_len)
{
    size_t len;
    uint8_t *quote = read_bin("sgx_quote", &len);
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(quote, len, &q), 0);
    /* the 6-byte cert data header (type u16, size u32) sits right before cert_data */
    size_t cert_hdr = (size_t)(q.cert_data - quote) - 6;
    size_t n = cert_hdr + 6 + body_len;
    uint8_t *out = calloc(1, n);
    memcpy(out, quote, cert_hdr);
    uint8_t *p = out + cert_hdr;
    p[0] = (uint8_t)type;
    p[1] = (uint8_t)(type >> 8);
    for (int i = 0; i < 4; i++) {
        p[2 + i] = (uint8_t)(body_len >> (8 * i));
    }
    memcpy(p + 6, body, body_len);
    /* auth_len (u32 at 432, after the 48-byte header and the 384-byte report) */
    uint32_t auth = (uint32_t)(n - 432 - 4);
    for (int i = 0; i < 4; i++) {
        out[432 + i] = (uint8_t)(auth >> (8 * i));
    }
    assert_int_equal(ds_quote_parse(out, n, &q), 0);
    assert_int_equal(q.cert_type, type);
    free(quote);
    *out_len = n;
    return out;
}

/* Type 3 (encrypted PPID, RSA-3072): ppid 0xAB.., cpusvn 10..1F, pcesvn 13, pceid 0. */
static uint8_t *make_type3_quote(size_t *out_len)
{
    uint8_t body[384 + 16 + 2 + 2];
    memset(body, 0xab, 384);
    for (int i = 0; i < 16; i++) {
        body[384 + i] = (uint8_t)(0x10 + i);
    }
    body[400] = 0x0d;
    body[401] = 0;
    body[402] = 0;
    body[403] = 0;
    return make_v3_quote(3, body, sizeof(body), out_len);
}

static void test_fetch_bad_pck(void **state)
{
    (void)state;
    char err[512], base[64];
    struct ds_collateral *c = NULL;
    size_t len;
    uint8_t *quote;
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/ok", srv.port);

    /* a real chain whose leaf is no PCK certificate (the TCB signing chain) */
    const char *chain = srv.sgx->tcb_info_issuer_chain;
    quote = make_v3_quote(5, (const uint8_t *)chain, strlen(chain) + 1, &len);
    srv_log_reset();
    assert_int_equal(ds_collateral_fetch(base, quote, len, 5000, &c, err, sizeof(err)), -DS_E_CERT);
    assert_string_equal(err, "PCK certificate: PCK certificate has no Intel SGX extension");
    free(quote);

    /* type 5 that is not PEM */
    quote = make_v3_quote(5, (const uint8_t *)"not a certificate", 17, &len);
    assert_int_equal(ds_collateral_fetch(base, quote, len, 5000, &c, err, sizeof(err)), -DS_E_CERT);
    assert_non_null(strstr(err, "PCK certificate chain: "));
    free(quote);

    /* type 1 (plain PPID) cannot be fetched for */
    uint8_t ppid[16] = {0};
    quote = make_v3_quote(1, ppid, sizeof(ppid), &len);
    assert_int_equal(ds_collateral_fetch(base, quote, len, 5000, &c, err, sizeof(err)),
                     -DS_E_UNSUPPORTED);
    assert_string_equal(err, "quote: certification data type 1 is not supported");
    free(quote);

    /* type 3 whose body is too short for PPID ‖ CPUSVN ‖ PCESVN ‖ PCEID */
    uint8_t shortb[100] = {0};
    quote = make_v3_quote(3, shortb, sizeof(shortb), &len);
    assert_int_equal(ds_collateral_fetch(base, quote, len, 5000, &c, err, sizeof(err)),
                     -DS_E_FORMAT);
    assert_string_equal(err, "quote: certification data type 3 is too short");
    free(quote);
    assert_null(c);
    assert_int_equal(srv.log_count, 0); /* all refused before any request */
}

static void test_fetch_encrypted_ppid(void **state)
{
    (void)state;
    size_t len;
    uint8_t *quote = make_type3_quote(&len);
    struct ds_collateral *c = NULL;
    char err[512], base[64];
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/ok", srv.port);
    srv_log_reset();
    int r = ds_collateral_fetch(base, quote, len, 10000, &c, err, sizeof(err));
    if (r < 0) {
        fail_msg("fetch: %s (%s)", err, ds_strerror(r));
    }
    /* the fetched chain travels in the collateral; the rest is the SGX sample */
    assert_non_null(c->pck_certificate_chain);
    char *chain = malloc(strlen(srv.pck_leaf) + strlen(srv.pck_issuer) + 1);
    strcpy(chain, srv.pck_leaf);
    strcat(chain, srv.pck_issuer);
    assert_string_equal(c->pck_certificate_chain, chain);
    free(chain);
    free(c->pck_certificate_chain);
    c->pck_certificate_chain = NULL;
    assert_equals_sample(c, "sgx_quote_collateral.json");
    ds_collateral_free(c);
    c = NULL;
    char want[1400], ppid[769];
    for (int i = 0; i < 768; i += 2) {
        ppid[i] = 'A';
        ppid[i + 1] = 'B';
    }
    ppid[768] = 0;
    /* qeid is the first 16 bytes of the header's user_data, uppercase */
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(quote, len, &q), 0);
    char qeid[33];
    for (int i = 0; i < 16; i++) {
        snprintf(qeid + 2 * i, 3, "%02X", q.user_data[i]);
    }
    snprintf(want, sizeof(want),
             "/sgx/certification/v4/pckcert?qeid=%s&encrypted_ppid=%s"
             "&cpusvn=101112131415161718191A1B1C1D1E1F&pcesvn=0D00&pceid=0000",
             qeid, ppid);
    assert_string_equal(srv.log[0], want);
    assert_string_equal(srv.log[1], "/sgx/certification/v4/pckcrl?ca=processor&encoding=der");

    /* PCS answered for another TCB: the platform is not registered for this one */
    snprintf(base, sizeof(base), "http://127.0.0.1:%d/tcbm", srv.port);
    assert_int_equal(ds_collateral_fetch(base, quote, len, 10000, &c, err, sizeof(err)),
                     -DS_E_MISMATCH);
    assert_null(c);
    assert_non_null(strstr(err, "SGX-TCBm"));
    free(quote);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sample_fields),
        cmocka_unit_test(test_roundtrip_tdx),
        cmocka_unit_test(test_roundtrip_sgx),
        cmocka_unit_test(test_uppercase_hex_and_unknown_keys),
        cmocka_unit_test(test_missing_field),
        cmocka_unit_test(test_wrong_type),
        cmocka_unit_test(test_bad_hex),
        cmocka_unit_test(test_empty_values),
        cmocka_unit_test(test_field_too_large),
        cmocka_unit_test(test_oversized_input),
        cmocka_unit_test(test_not_an_object),
        cmocka_unit_test(test_duplicate_and_nul),
        cmocka_unit_test(test_to_json_requires_fields),
    };
    const struct CMUnitTest fetch_tests[] = {
        cmocka_unit_test(test_fetch_tdx),
        cmocka_unit_test(test_fetch_sgx),
        cmocka_unit_test(test_fetch_base_normalised),
        cmocka_unit_test(test_fetch_exact_span),
        cmocka_unit_test(test_fetch_root_crl_from_cdp),
        cmocka_unit_test(test_fetch_http_errors),
        cmocka_unit_test(test_fetch_oversized),
        cmocka_unit_test(test_fetch_bad_responses),
        cmocka_unit_test(test_fetch_encrypted_ppid),
        cmocka_unit_test(test_fetch_bad_pck),
    };
    int failed = cmocka_run_group_tests(tests, NULL, NULL);
    failed += cmocka_run_group_tests_name("fetch", fetch_tests, srv_setup, srv_teardown);
    return failed;
}
