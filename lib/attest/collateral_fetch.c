/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fetching DCAP collateral for a quote from a PCCS or Intel PCS (v4 API) with libcurl, the
 * way dcap-qvl's collateral.rs does (spec §2.8): the PCK chain comes from the quote (type 5)
 * or from `pckcert` (types 2/3, encrypted PPID); FMSPC and CA type come from the PCK leaf;
 * then pckcrl, tcb, qe/identity and the root CA CRL are downloaded. Every response has a size
 * cap (the PEM chains and the Intel SGX extension are decoded by pck.c's helpers, shared
 * with the verifier). The signed TCB info / QE identity are cut out of the response body as the
 * exact raw byte span of the "tcbInfo" / "enclaveIdentity" value (Intel signs those bytes;
 * re-encoding the JSON could change them). Nothing here is trusted: ds_verify_quote() checks it
 * all.
 *
 * libcurl is initialised implicitly by curl_easy_init(); programs with threads should call
 * curl_global_init() once at start-up, as libcurl documents.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "dstack/attest.h"
#include "verify_internal.h"

#define FETCH_DEFAULT_TIMEOUT_MS 180000L /* dcap-qvl: 180 s */
#define FETCH_BODY_MAX           (1024 * 1024)
#define FETCH_URL_MAX            4096
#define FETCH_HEADER_MAX         (64 * 1024) /* a decoded issuer chain (real: ~2 KiB) */
#define FETCH_SIGNATURE_MAX      512
#define FETCH_JSON_DEPTH_MAX     64
#define FETCH_MAX_REDIRS         5

#define PCK_FMSPC_SIZE  6
#define PCK_CPUSVN_SIZE 16
#define QUOTE_QEID_SIZE 16

/* Certification data types (spec §1.5). */
#define CERT_TYPE_PPID_RSA2048 2
#define CERT_TYPE_PPID_RSA3072 3
#define CERT_TYPE_PCK_CHAIN    5
#define ENC_PPID_RSA2048_SIZE  256
#define ENC_PPID_RSA3072_SIZE  384

static const char intel_pcs_url[] = "https://api.trustedservices.intel.com";
static const char *const cert_path_suffixes[] = {"/sgx/certification/v4", "/tdx/certification/v4"};

struct fetch {
    CURL *curl;
    char curl_err[CURL_ERROR_SIZE];
    char *err;
    size_t err_size;
};

struct sink {
    struct ds_buf *buf;
    bool over;
};

static void set_err(struct fetch *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void set_err(struct fetch *f, const char *fmt, ...)
{
    if (!f->err || f->err_size == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->err, f->err_size, fmt, ap);
    va_end(ap);
}

/* ---- HTTP ---------------------------------------------------------------------------------- */

static size_t sink_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct sink *s = userdata;
    size_t n = size * nmemb;
    if (ds_buf_append(s->buf, ptr, n) < 0) {
        s->over = true;
        return 0; /* aborts the transfer with CURLE_WRITE_ERROR */
    }
    return n;
}

static int fetch_init(struct fetch *f, long timeout_ms)
{
    f->curl = curl_easy_init();
    if (!f->curl) {
        set_err(f, "cannot initialise libcurl");
        return -ENOMEM;
    }
    CURL *c = f->curl;
    /* Collateral is signed; TLS still verified (dcap-qvl turns it off; we do not). */
    if (curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, timeout_ms) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_REDIR_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 1L) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_MAXREDIRS, (long)FETCH_MAX_REDIRS) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)FETCH_BODY_MAX) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, sink_write) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_ERRORBUFFER, f->curl_err) != CURLE_OK ||
        curl_easy_setopt(c, CURLOPT_USERAGENT, "dstack-c/" DS_VERSION) != CURLE_OK) {
        set_err(f, "cannot configure libcurl");
        return -DS_E_NETWORK;
    }
    return 0;
}

/* GET url into body (reset first). Non-2xx, transport errors -> -DS_E_NETWORK. */
static int http_get(struct fetch *f, const char *url, struct ds_buf *body)
{
    struct sink s = {body, false};
    long status = 0;

    ds_buf_reset(body);
    f->curl_err[0] = 0;
    if (curl_easy_setopt(f->curl, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(f->curl, CURLOPT_WRITEDATA, &s) != CURLE_OK) {
        set_err(f, "GET %s: cannot configure libcurl", url);
        return -DS_E_NETWORK;
    }
    CURLcode rc = curl_easy_perform(f->curl);
    if ((rc == CURLE_WRITE_ERROR && s.over) || rc == CURLE_FILESIZE_EXCEEDED) {
        set_err(f, "GET %s: response larger than %d bytes", url, FETCH_BODY_MAX);
        return -DS_E_LIMIT;
    }
    if (rc != CURLE_OK) {
        set_err(f, "GET %s: %s", url, f->curl_err[0] ? f->curl_err : curl_easy_strerror(rc));
        return -DS_E_NETWORK;
    }
    if (curl_easy_getinfo(f->curl, CURLINFO_RESPONSE_CODE, &status) != CURLE_OK || status < 200 ||
        status > 299) {
        set_err(f, "GET %s: HTTP status %ld", url, status);
        return -DS_E_NETWORK;
    }
    return 0;
}

/* Percent-decode a PEM header value (no '+' -> space: base64 contains '+'). */
static int percent_decode(const char *s, char **out)
{
    struct ds_buf b;
    int r = 0;
    ds_buf_init(&b, FETCH_HEADER_MAX);
    for (size_t i = 0; s[i] && r == 0; i++) {
        uint8_t c = (uint8_t)s[i];
        if (c == '%') {
            int hi = ds_hex_digit_value((uint8_t)s[i + 1]);
            int lo = hi < 0 ? -1 : ds_hex_digit_value((uint8_t)s[i + 2]);
            if (lo < 0) {
                r = -DS_E_FORMAT;
                break;
            }
            c = (uint8_t)(hi << 4 | lo);
            i += 2;
        }
        /* issuer chains are PEM: printable ASCII and line breaks only */
        if (c >= 0x7f || (c < 0x20 && c != '\n' && c != '\r' && c != '\t')) {
            r = -DS_E_FORMAT;
            break;
        }
        r = ds_buf_u8(&b, c);
    }
    if (r == 0 && b.len == 0) {
        r = -DS_E_FORMAT;
    }
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    size_t len;
    uint8_t *p;
    ds_buf_steal(&b, &p, &len);
    *out = (char *)p;
    return 0;
}

static bool http_has_header(struct fetch *f, const char *name)
{
    struct curl_header *h = NULL;
    return curl_easy_header(f->curl, name, 0, CURLH_HEADER, -1, &h) == CURLHE_OK;
}

/* The URL-decoded value of response header `name` of the last request. */
static int http_header(struct fetch *f, const char *url, const char *name, char **out)
{
    struct curl_header *h = NULL;
    CURLHcode hc = curl_easy_header(f->curl, name, 0, CURLH_HEADER, -1, &h);
    if (hc == CURLHE_MISSING || hc == CURLHE_NOHEADERS || hc == CURLHE_NOREQUEST) {
        set_err(f, "GET %s: missing header %s", url, name);
        return -DS_E_PROTOCOL;
    }
    if (hc != CURLHE_OK) {
        set_err(f, "GET %s: cannot read header %s", url, name);
        return -DS_E_PROTOCOL;
    }
    if (h->amount != 1) {
        set_err(f, "GET %s: header %s appears %zu times", url, name, h->amount);
        return -DS_E_PROTOCOL;
    }
    int r = percent_decode(h->value, out);
    if (r == -DS_E_LIMIT) {
        set_err(f, "GET %s: header %s longer than %d bytes", url, name, FETCH_HEADER_MAX);
    } else if (r < 0) {
        set_err(f, "GET %s: header %s: bad percent-encoding", url, name);
        r = -DS_E_PROTOCOL;
    }
    return r;
}

/* ---- exact JSON value spans ------------------------------------------------------------------ */

/* A JSON scanner that only finds where values start and end; validity is jansson's job. */
static int js_peek(const struct ds_reader *r)
{
    return ds_rd_left(r) ? r->data[r->off] : -1;
}

static void js_ws(struct ds_reader *r)
{
    for (int c = js_peek(r); c == ' ' || c == '\t' || c == '\n' || c == '\r'; c = js_peek(r)) {
        if (ds_rd_skip(r, 1) < 0) {
            return;
        }
    }
}

static int js_expect(struct ds_reader *r, int want)
{
    js_ws(r);
    if (js_peek(r) != want) {
        return -DS_E_FORMAT;
    }
    return ds_rd_skip(r, 1);
}

/* A string starting at '"'; body and body_len get the bytes between the quotes. */
static int js_string(struct ds_reader *r, const uint8_t **body, size_t *body_len)
{
    DS_TRY(js_expect(r, '"'));
    size_t start = r->off;
    for (;;) {
        uint8_t c;
        DS_TRY(ds_rd_u8(r, &c));
        if (c == '"') {
            break;
        }
        if (c == '\\') {
            DS_TRY(ds_rd_skip(r, 1)); /* the escaped char; \uXXXX digits are plain bytes */
        } else if (c < 0x20) {
            return -DS_E_FORMAT;
        }
    }
    *body = r->data + start;
    *body_len = r->off - start - 1;
    return 0;
}

static int js_value(struct ds_reader *r, int depth)
{
    const uint8_t *s;
    size_t n;
    if (depth > FETCH_JSON_DEPTH_MAX) {
        return -DS_E_LIMIT;
    }
    js_ws(r);
    int c = js_peek(r);
    if (c == '"') {
        return js_string(r, &s, &n);
    }
    if (c == '{' || c == '[') {
        int close = c == '{' ? '}' : ']';
        DS_TRY(ds_rd_skip(r, 1));
        js_ws(r);
        if (js_peek(r) == close) {
            return ds_rd_skip(r, 1);
        }
        for (;;) {
            if (c == '{') {
                DS_TRY(js_string(r, &s, &n));
                DS_TRY(js_expect(r, ':'));
            }
            DS_TRY(js_value(r, depth + 1));
            js_ws(r);
            if (js_peek(r) == close) {
                return ds_rd_skip(r, 1);
            }
            DS_TRY(js_expect(r, ','));
        }
    }
    /* number or literal */
    size_t start = r->off;
    for (c = js_peek(r); c == '+' || c == '-' || c == '.' || (c >= '0' && c <= '9') ||
                         (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
         c = js_peek(r)) {
        DS_TRY(ds_rd_skip(r, 1));
    }
    return r->off > start ? 0 : -DS_E_FORMAT;
}

/*
 * The exact bytes of the value of top-level member `key` of the JSON object in body. The
 * whole body is scanned, so a second member with the same name is noticed (-DS_E_FORMAT).
 */
static int json_member_span(const uint8_t *body, size_t len, const char *key, const uint8_t **out,
                            size_t *out_len)
{
    struct ds_reader r;
    const uint8_t *found = NULL;
    size_t found_len = 0, klen = strlen(key);

    ds_rd_init(&r, body, len);
    DS_TRY(js_expect(&r, '{'));
    js_ws(&r);
    if (js_peek(&r) == '}') {
        return -DS_E_NOT_FOUND;
    }
    for (;;) {
        const uint8_t *k;
        size_t kl;
        DS_TRY(js_string(&r, &k, &kl));
        DS_TRY(js_expect(&r, ':'));
        js_ws(&r);
        size_t start = r.off;
        DS_TRY(js_value(&r, 1));
        if (kl == klen && memcmp(k, key, klen) == 0) {
            if (found) {
                return -DS_E_FORMAT;
            }
            found = body + start;
            found_len = r.off - start;
        }
        js_ws(&r);
        if (js_peek(&r) == '}') {
            break;
        }
        DS_TRY(js_expect(&r, ','));
    }
    DS_TRY(ds_rd_skip(&r, 1));
    js_ws(&r);
    if (ds_rd_left(&r)) {
        return -DS_E_FORMAT;
    }
    if (!found) {
        return -DS_E_NOT_FOUND;
    }
    *out = found;
    *out_len = found_len;
    return 0;
}

/*
 * A `{"<key>": {...}, "signature": "<hex>"}` response (tcb, qe/identity): the exact bytes of
 * the signed object and the decoded signature.
 */
static int parse_signed_body(struct fetch *f, const char *url, const struct ds_buf *body,
                             const char *key, char **out_json, size_t *out_json_len,
                             uint8_t **out_sig, size_t *out_sig_len)
{
    json_t *root = NULL, *sig;
    json_error_t jerr;
    const uint8_t *span;
    size_t span_len;
    uint8_t *sig_bytes = NULL;
    size_t sig_len = 0;
    char *copy = NULL;
    int r;

    root = json_loadb((const char *)body->data, body->len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        set_err(f, "GET %s: response is not a JSON object", url);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    if (!json_is_object(json_object_get(root, key))) {
        set_err(f, "GET %s: response has no %s object", url, key);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    sig = json_object_get(root, "signature");
    if (!json_is_string(sig) ||
        ds_hex_decode_alloc(json_string_value(sig), json_string_length(sig), FETCH_SIGNATURE_MAX,
                            &sig_bytes, &sig_len) < 0 ||
        sig_len == 0) {
        set_err(f, "GET %s: signature: expected hex string", url);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    r = json_member_span(body->data, body->len, key, &span, &span_len);
    if (r < 0) {
        set_err(f, "GET %s: cannot locate the %s bytes", url, key);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    copy = malloc(span_len + 1);
    if (!copy) {
        r = -ENOMEM;
        goto out;
    }
    memcpy(copy, span, span_len);
    copy[span_len] = 0;
    *out_json = copy;
    *out_json_len = span_len;
    *out_sig = sig_bytes;
    *out_sig_len = sig_len;
    copy = NULL;
    sig_bytes = NULL;
    r = 0;
out:
    free(copy);
    free(sig_bytes);
    json_decref(root);
    return r;
}

/* ---- PCK certificate facts ---------------------------------------------------------------- */

/*
 * FMSPC (from the Intel SGX extension, parsed by pck.c) and CA type ("processor" /
 * "platform", from the issuer DN) of the PCK leaf.
 */
static int pck_leaf_facts(struct fetch *f, X509 *leaf, uint8_t fmspc[PCK_FMSPC_SIZE],
                          const char **ca)
{
    struct ds_attest_pck_info info;
    char issuer[512], msg[128] = "";

    if (!X509_NAME_oneline(X509_get_issuer_name(leaf), issuer, sizeof(issuer))) {
        set_err(f, "PCK certificate: unreadable issuer");
        return -DS_E_CERT;
    }
    /* spec §2.8: "Processor" -> processor, "Platform" -> platform, else processor */
    *ca = strstr(issuer, "Processor")  ? "processor"
          : strstr(issuer, "Platform") ? "platform"
                                       : "processor";
    int r = ds_attest_pck_parse(leaf, &info, msg, sizeof(msg));
    if (r < 0) {
        set_err(f, "PCK certificate: %s", msg[0] ? msg : ds_strerror(r));
        return r == -ENOMEM ? r : -DS_E_CERT;
    }
    memcpy(fmspc, info.fmspc, PCK_FMSPC_SIZE);
    return 0;
}

/* The first URI of the CRL distribution points of cert (malloc'd). */
static int crl_dp_uri(X509 *cert, char **out)
{
    STACK_OF(DIST_POINT) *dps = X509_get_ext_d2i(cert, NID_crl_distribution_points, NULL, NULL);
    int r = -DS_E_NOT_FOUND;
    for (int i = 0; dps && i < sk_DIST_POINT_num(dps) && r == -DS_E_NOT_FOUND; i++) {
        DIST_POINT *dp = sk_DIST_POINT_value(dps, i);
        if (!dp->distpoint || dp->distpoint->type != 0) {
            continue;
        }
        GENERAL_NAMES *names = dp->distpoint->name.fullname;
        for (int k = 0; k < sk_GENERAL_NAME_num(names); k++) {
            GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, k);
            if (gn->type != GEN_URI) {
                continue;
            }
            const unsigned char *s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
            int n = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
            if (n <= 0 || n >= FETCH_URL_MAX || memchr(s, 0, (size_t)n)) {
                r = -DS_E_FORMAT;
                break;
            }
            *out = strndup((const char *)s, (size_t)n);
            r = *out ? 0 : -ENOMEM;
            break;
        }
    }
    CRL_DIST_POINTS_free(dps);
    ERR_clear_error();
    return r;
}

/* ---- the fetch ------------------------------------------------------------------------------ */

/* dcap-qvl's normalisation: trim '/', then "/sgx/certification/v4", then "/tdx/...". */
static int normalize_base(const char *base_url, char **out)
{
    size_t n = strlen(base_url);
    if (n == 0 || n >= FETCH_URL_MAX) {
        return -EINVAL;
    }
    while (n > 0 && base_url[n - 1] == '/') {
        n--;
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(cert_path_suffixes); i++) {
        size_t sl = strlen(cert_path_suffixes[i]);
        while (n >= sl && memcmp(base_url + n - sl, cert_path_suffixes[i], sl) == 0) {
            n -= sl;
        }
    }
    if (n == 0) {
        return -EINVAL;
    }
    *out = strndup(base_url, n);
    return *out ? 0 : -ENOMEM;
}

static int make_url(struct ds_buf *url, const char *base, const char *tee, const char *path)
{
    ds_buf_reset(url);
    return ds_buf_printf(url, "%s/%s/certification/v4/%s", base, tee, path);
}

/* The quote's values that `pckcert` needs (types 2/3, spec §2.8). */
struct ppid_request {
    const uint8_t *enc_ppid;
    size_t enc_ppid_len;
    uint8_t cpusvn[PCK_CPUSVN_SIZE];
    uint8_t pcesvn_le[2];
    uint8_t pceid[2];
};

static int parse_ppid_cert_data(const struct ds_quote *q, struct ppid_request *p)
{
    struct ds_reader r;
    p->enc_ppid_len =
        q->cert_type == CERT_TYPE_PPID_RSA2048 ? ENC_PPID_RSA2048_SIZE : ENC_PPID_RSA3072_SIZE;
    ds_rd_init(&r, q->cert_data, q->cert_data_len);
    DS_TRY(ds_rd_ptr(&r, p->enc_ppid_len, &p->enc_ppid));
    DS_TRY(ds_rd_copy(&r, p->cpusvn, sizeof(p->cpusvn)));
    DS_TRY(ds_rd_copy(&r, p->pcesvn_le, sizeof(p->pcesvn_le)));
    DS_TRY(ds_rd_copy(&r, p->pceid, sizeof(p->pceid)));
    return 0;
}

static void hex_upper(const uint8_t *in, size_t n, char *out)
{
    static const char dig[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = dig[in[i] >> 4];
        out[2 * i + 1] = dig[in[i] & 15];
    }
    out[2 * n] = 0;
}

/*
 * PCK chain for an encrypted-PPID quote: GET pckcert, then leaf PEM + issuer chain. The
 * SGX-TCBm header says which TCB the PCS picked; it must be the quote's own (else the
 * platform was not re-registered after a TCB recovery and the chain would not match).
 */
static int fetch_pck_chain(struct fetch *f, const char *base, const struct ds_quote *q,
                           struct ds_buf *url, struct ds_buf *body, char **out)
{
    struct ppid_request p;
    char *issuer = NULL, *tcbm = NULL;
    char qeid_hex[2 * QUOTE_QEID_SIZE + 1], cpusvn_hex[2 * PCK_CPUSVN_SIZE + 1];
    char pcesvn_hex[5], pceid_hex[5], want_tcbm[2 * (PCK_CPUSVN_SIZE + 2) + 1];
    char *ppid_hex = NULL;
    struct ds_buf chain;
    int r;

    ds_buf_init(&chain, FETCH_BODY_MAX + FETCH_HEADER_MAX);
    if (parse_ppid_cert_data(q, &p) < 0) {
        set_err(f, "quote: certification data type %u is too short", q->cert_type);
        r = -DS_E_FORMAT;
        goto out;
    }
    ppid_hex = malloc(2 * p.enc_ppid_len + 1);
    if (!ppid_hex) {
        r = -ENOMEM;
        goto out;
    }
    hex_upper(p.enc_ppid, p.enc_ppid_len, ppid_hex);
    hex_upper(q->user_data, QUOTE_QEID_SIZE, qeid_hex);
    hex_upper(p.cpusvn, sizeof(p.cpusvn), cpusvn_hex);
    hex_upper(p.pcesvn_le, sizeof(p.pcesvn_le), pcesvn_hex);
    hex_upper(p.pceid, sizeof(p.pceid), pceid_hex);
    ds_buf_reset(url);
    r = ds_buf_printf(url,
                      "%s/sgx/certification/v4/pckcert?qeid=%s&encrypted_ppid=%s&cpusvn=%s"
                      "&pcesvn=%s&pceid=%s",
                      base, qeid_hex, ppid_hex, cpusvn_hex, pcesvn_hex, pceid_hex);
    if (r < 0) {
        set_err(f, "pckcert URL too long");
        goto out;
    }
    r = http_get(f, (char *)url->data, body);
    if (r < 0) {
        goto out;
    }
    r = http_header(f, (char *)url->data, "SGX-PCK-Certificate-Issuer-Chain", &issuer);
    if (r < 0) {
        goto out;
    }
    r = http_header(f, (char *)url->data, "SGX-TCBm", &tcbm);
    if (r < 0) {
        goto out;
    }
    memcpy(want_tcbm, cpusvn_hex, 2 * PCK_CPUSVN_SIZE);
    memcpy(want_tcbm + 2 * PCK_CPUSVN_SIZE, pcesvn_hex, 5);
    if (strcasecmp(tcbm, want_tcbm) != 0) {
        set_err(f, "pckcert: SGX-TCBm %s is not the quote's TCB %s (platform not re-registered?)",
                tcbm, want_tcbm);
        r = -DS_E_MISMATCH;
        goto out;
    }
    if (body->len == 0 || memchr(body->data, 0, body->len)) {
        set_err(f, "GET %s: response is not a PEM certificate", (char *)url->data);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    r = ds_buf_append(&chain, body->data, body->len);
    if (r == 0 && body->data[body->len - 1] != '\n') {
        r = ds_buf_append_str(&chain, "\n");
    }
    if (r == 0) {
        r = ds_buf_append_str(&chain, issuer);
    }
    if (r < 0) {
        goto out;
    }
    size_t len;
    uint8_t *p_out;
    ds_buf_steal(&chain, &p_out, &len);
    *out = (char *)p_out;
    r = 0;
out:
    ds_buf_done(&chain);
    free(ppid_hex);
    free(issuer);
    free(tcbm);
    return r;
}

/* Root CA CRL: PCCS serves it as hex text; Intel PCS does not serve it (spec §2.8). */
static int fetch_root_ca_crl(struct fetch *f, const char *base, const char *qe_issuer_chain,
                             struct ds_buf *url, struct ds_buf *body, uint8_t **out,
                             size_t *out_len)
{
    STACK_OF(X509) *chain = NULL;
    char *cdp = NULL;
    int r;

    if (strncmp(base, intel_pcs_url, strlen(intel_pcs_url)) != 0) {
        r = make_url(url, base, "sgx", "rootcacrl");
        if (r < 0) {
            return r;
        }
        if (http_get(f, (char *)url->data, body) == 0) {
            size_t n = body->len;
            while (n > 0 && strchr(" \t\r\n", body->data[n - 1])) {
                n--;
            }
            r = n ? ds_hex_decode_alloc((char *)body->data, n, FETCH_BODY_MAX, out, out_len)
                  : -DS_E_FORMAT;
            if (r < 0) {
                set_err(f, "GET %s: root CA CRL: expected hex text", (char *)url->data);
                return -DS_E_PROTOCOL;
            }
            return 0;
        }
    }
    r = ds_attest_pem_chain(qe_issuer_chain, strlen(qe_issuer_chain), &chain);
    if (r < 0) {
        set_err(f, "QE identity issuer chain: no certificate");
        goto out;
    }
    r = crl_dp_uri(sk_X509_value(chain, sk_X509_num(chain) - 1), &cdp);
    if (r < 0) {
        set_err(f, "root CA certificate: no CRL distribution point URI");
        goto out;
    }
    r = http_get(f, cdp, body);
    if (r < 0) {
        goto out;
    }
    if (body->len == 0) {
        set_err(f, "GET %s: empty root CA CRL", cdp);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    size_t len;
    uint8_t *p;
    ds_buf_steal(body, &p, &len);
    *out = p;
    *out_len = len;
    r = 0;
out:
    free(cdp);
    sk_X509_pop_free(chain, X509_free);
    return r;
}

int ds_collateral_fetch(const char *base_url, const uint8_t *quote, size_t quote_len,
                        long timeout_ms, struct ds_collateral **out, char *err, size_t err_size)
{
    struct fetch f = {.err = err, .err_size = err_size};
    struct ds_quote q;
    struct ds_collateral *c = NULL;
    struct ds_buf url, body;
    STACK_OF(X509) *pck = NULL;
    char *base = NULL, *pck_chain_fetched = NULL;
    uint8_t fmspc[PCK_FMSPC_SIZE];
    char fmspc_hex[2 * PCK_FMSPC_SIZE + 1];
    const char *ca = NULL, *tee;
    int r;

    ds_buf_init(&url, FETCH_URL_MAX);
    ds_buf_init(&body, FETCH_BODY_MAX);
    set_err(&f, "%s", "");
    if (!base_url || !quote || !out || timeout_ms < 0) {
        return -EINVAL;
    }
    r = normalize_base(base_url, &base);
    if (r < 0) {
        set_err(&f, "bad PCCS base URL");
        goto out;
    }
    r = ds_quote_parse(quote, quote_len, &q);
    if (r < 0) {
        set_err(&f, "quote: %s", ds_strerror(r));
        goto out;
    }
    tee = q.tee_type == DS_TEE_TYPE_TDX ? "tdx" : "sgx";
    r = fetch_init(&f, timeout_ms ? timeout_ms : FETCH_DEFAULT_TIMEOUT_MS);
    if (r < 0) {
        goto out;
    }

    /* PCK chain -> FMSPC and CA type */
    if (q.cert_type == CERT_TYPE_PCK_CHAIN) {
        r = ds_attest_pem_chain((const char *)q.cert_data, q.cert_data_len, &pck);
    } else if (q.cert_type == CERT_TYPE_PPID_RSA2048 || q.cert_type == CERT_TYPE_PPID_RSA3072) {
        r = fetch_pck_chain(&f, base, &q, &url, &body, &pck_chain_fetched);
        if (r < 0) {
            goto out;
        }
        r = ds_attest_pem_chain(pck_chain_fetched, strlen(pck_chain_fetched), &pck);
    } else {
        set_err(&f, "quote: certification data type %u is not supported", q.cert_type);
        r = -DS_E_UNSUPPORTED;
        goto out;
    }
    if (r < 0) {
        set_err(&f, "PCK certificate chain: %s", ds_strerror(r));
        r = r == -ENOMEM ? r : -DS_E_CERT;
        goto out;
    }
    r = pck_leaf_facts(&f, sk_X509_value(pck, 0), fmspc, &ca);
    if (r < 0) {
        goto out;
    }
    hex_upper(fmspc, sizeof(fmspc), fmspc_hex);

    c = calloc(1, sizeof(*c));
    if (!c) {
        r = -ENOMEM;
        goto out;
    }

    /* PCK CRL: DER body */
    char path[128];
    snprintf(path, sizeof(path), "pckcrl?ca=%s&encoding=der", ca);
    r = make_url(&url, base, "sgx", path);
    if (r == 0) {
        r = http_get(&f, (char *)url.data, &body);
    }
    if (r == 0) {
        r = http_header(&f, (char *)url.data, "SGX-PCK-CRL-Issuer-Chain", &c->pck_crl_issuer_chain);
    }
    if (r == 0 && body.len == 0) {
        set_err(&f, "GET %s: empty CRL", (char *)url.data);
        r = -DS_E_PROTOCOL;
    }
    if (r < 0) {
        goto out;
    }
    ds_buf_steal(&body, &c->pck_crl, &c->pck_crl_len);

    /* TCB info */
    snprintf(path, sizeof(path), "tcb?fmspc=%s", fmspc_hex);
    r = make_url(&url, base, tee, path);
    if (r == 0) {
        r = http_get(&f, (char *)url.data, &body);
    }
    if (r == 0) {
        /* Intel's TDX PCS names the header without the SGX- prefix */
        r = http_header(&f, (char *)url.data,
                        http_has_header(&f, "SGX-TCB-Info-Issuer-Chain")
                            ? "SGX-TCB-Info-Issuer-Chain"
                            : "TCB-Info-Issuer-Chain",
                        &c->tcb_info_issuer_chain);
    }
    if (r == 0) {
        r = parse_signed_body(&f, (char *)url.data, &body, "tcbInfo", &c->tcb_info,
                              &c->tcb_info_len, &c->tcb_info_signature, &c->tcb_info_signature_len);
    }
    if (r < 0) {
        goto out;
    }

    /* QE identity */
    r = make_url(&url, base, tee, "qe/identity?update=standard");
    if (r == 0) {
        r = http_get(&f, (char *)url.data, &body);
    }
    if (r == 0) {
        r = http_header(&f, (char *)url.data, "SGX-Enclave-Identity-Issuer-Chain",
                        &c->qe_identity_issuer_chain);
    }
    if (r == 0) {
        r = parse_signed_body(&f, (char *)url.data, &body, "enclaveIdentity", &c->qe_identity,
                              &c->qe_identity_len, &c->qe_identity_signature,
                              &c->qe_identity_signature_len);
    }
    if (r < 0) {
        goto out;
    }

    r = fetch_root_ca_crl(&f, base, c->qe_identity_issuer_chain, &url, &body, &c->root_ca_crl,
                          &c->root_ca_crl_len);
    if (r < 0) {
        goto out;
    }
    /* A chain fetched from PCCS travels with the collateral; a chain in the quote does not. */
    c->pck_certificate_chain = pck_chain_fetched;
    pck_chain_fetched = NULL;
    *out = c;
    c = NULL;
    r = 0;
out:
    ds_collateral_free(c);
    sk_X509_pop_free(pck, X509_free);
    free(pck_chain_fetched);
    free(base);
    ds_buf_done(&url);
    ds_buf_done(&body);
    if (f.curl) {
        curl_easy_cleanup(f.curl);
    }
    return r;
}
