/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Inputs of the verify commands: option checks (--time, collateral source, simulated mode),
 * reading quotes (binary or hex), loading a root CA (DER or PEM), fetching the simulator's mock
 * root over HTTP, and loading or fetching collateral; plus verify_run_quote(), the quote
 * pipeline both commands share. Input problems the user can fix are reported here, naming the
 * option or file (exit 2); problems of the thing being verified are left to the verdict
 * (exit 1). Only the public libdstack API and libcurl are used.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>

#include "dstack/attest.h"
#include "dstack/crypto.h"

#include "cli.h"
#include "log.h"

/* The simulator serves its mock root here (relative to the PCCS base URL). */
#define SIM_ROOT_CA_PATH "/dstack-sim/v1/root-ca.der"
#define PCCS_URL_MAX     2048

int verify_parse_time(const char *s, int64_t *out)
{
    int64_t v = 0;
    if (s == NULL || *s == '\0') {
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10 + (*p - '0');
        if (v > CLI_TIME_MAX) {
            return -1;
        }
    }
    *out = v;
    return 0;
}

static bool is_http_url(const char *u)
{
    return strncmp(u, "http://", 7) == 0 || strncmp(u, "https://", 8) == 0;
}

int verify_check_opts(const char *prog, struct verify_opts *o)
{
    if (o->collateral_path != NULL && o->pccs_url != NULL) {
        cli_errx("%s: --collateral and --pccs-url: expected exactly one collateral source, "
                 "got both",
                 prog);
        return CLI_EXIT_USAGE;
    }
    if (o->collateral_path == NULL && o->pccs_url == NULL) {
        cli_errx("%s: expected a collateral source: --collateral FILE or --pccs-url URL", prog);
        return CLI_EXIT_USAGE;
    }
    if (o->pccs_url != NULL && (!is_http_url(o->pccs_url) || strlen(o->pccs_url) > PCCS_URL_MAX)) {
        cli_errx("%s: --pccs-url: expected an http:// or https:// URL, got '%s'", prog,
                 o->pccs_url);
        return CLI_EXIT_USAGE;
    }
    if (o->allow_simulated && o->root_ca_path == NULL && o->pccs_url == NULL) {
        cli_errx("%s: --insecure-allow-simulated: expected --pccs-url URL (the mock root is "
                 "fetched from URL%s) or an explicit --root-ca FILE",
                 prog, SIM_ROOT_CA_PATH);
        return CLI_EXIT_USAGE;
    }
    if (o->time_str != NULL) {
        if (verify_parse_time(o->time_str, &o->now) != 0) {
            cli_errx("%s: --time: expected unix seconds (a decimal integer from 0 to %lld), "
                     "got '%s'",
                     prog, (long long)CLI_TIME_MAX, o->time_str);
            return CLI_EXIT_USAGE;
        }
    } else {
        o->now = (int64_t)time(NULL);
    }
    return 0;
}

int verify_hex_decode_loose(const char *text, size_t len, size_t max, uint8_t **out,
                            size_t *out_len)
{
    char *clean = malloc(len + 1);
    size_t n = 0;
    int rc;
    if (clean == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)text[i];
        if (isspace(c)) {
            continue;
        }
        clean[n++] = (char)c;
    }
    clean[n] = '\0';
    const char *h = clean;
    if (n >= 2 && h[0] == '0' && (h[1] == 'x' || h[1] == 'X')) {
        h += 2;
        n -= 2;
    }
    if (n == 0) {
        rc = -DS_E_FORMAT;
        goto out;
    }
    rc = ds_hex_decode_alloc(h, n, max, out, out_len);
out:
    free(clean);
    return rc < 0 ? rc : 0;
}

int verify_read_quote(const char *path, bool hex, uint8_t **out, size_t *out_len)
{
    /* Hex text is at most twice the binary limit plus generous whitespace. */
    size_t max = hex ? 3 * (size_t)DS_QUOTE_MAX_SIZE : (size_t)DS_QUOTE_MAX_SIZE;
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = ds_read_file(path, max, &data, &len);
    if (rc == -DS_E_LIMIT) {
        cli_errx("quote file '%s': larger than %zu bytes", path, max);
        return CLI_EXIT_USAGE;
    }
    if (rc < 0) {
        cli_errx("cannot read quote file '%s': %s", path, ds_strerror(rc));
        return CLI_EXIT_USAGE;
    }
    if (len == 0) {
        cli_errx("quote file '%s': empty", path);
        free(data);
        return CLI_EXIT_USAGE;
    }
    if (!hex) {
        *out = data;
        *out_len = len;
        return 0;
    }
    uint8_t *bin = NULL;
    size_t bin_len = 0;
    rc = verify_hex_decode_loose((const char *)data, len, DS_QUOTE_MAX_SIZE, &bin, &bin_len);
    free(data);
    if (rc < 0) {
        cli_errx("quote file '%s': --hex: expected hex text (optional 0x, whitespace ignored): "
                 "%s",
                 path, ds_strerror(rc));
        return CLI_EXIT_USAGE;
    }
    *out = bin;
    *out_len = bin_len;
    return 0;
}

/* A PEM certificate's DER bytes (the first CERTIFICATE block), or a copy of DER input. */
static int root_to_der(const uint8_t *data, size_t len, uint8_t **out, size_t *out_len)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    const char *text = (const char *)data;
    const char *b = memmem(text, len, begin, sizeof(begin) - 1);
    if (b == NULL) {
        if (len > 0 && data[0] != 0x30) { /* DER starts with a SEQUENCE */
            return -DS_E_FORMAT;
        }
        uint8_t *copy = malloc(len);
        if (copy == NULL) {
            return -ENOMEM;
        }
        memcpy(copy, data, len);
        *out = copy;
        *out_len = len;
        return 0;
    }
    b += sizeof(begin) - 1;
    const char *e = memmem(b, len - (size_t)(b - text), end, sizeof(end) - 1);
    if (e == NULL) {
        return -DS_E_FORMAT;
    }
    size_t n = (size_t)(e - b);
    char *b64 = malloc(n + 1);
    size_t m = 0;
    if (b64 == NULL) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isspace((unsigned char)b[i])) {
            b64[m++] = b[i];
        }
    }
    b64[m] = '\0';
    int rc = ds_base64_decode(b64, m, CLI_ROOT_CA_MAX_SIZE, out, out_len);
    free(b64);
    return rc < 0 ? rc : 0;
}

struct http_body {
    uint8_t *data;
    size_t len;
    size_t max;
    bool overflow;
};

static size_t http_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct http_body *b = ud;
    size_t n = size * nmemb;
    if (n > b->max - b->len) {
        b->overflow = true;
        return 0; /* abort the transfer */
    }
    uint8_t *p = realloc(b->data, b->len + n);
    if (p == NULL) {
        return 0;
    }
    memcpy(p + b->len, ptr, n);
    b->data = p;
    b->len += n;
    return n;
}

/* Base URL without a trailing '/' or a trailing /sgx|tdx/certification/v4 (like the collateral
 * fetcher), so users can pass either form. */
static void normalize_base(const char *url, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s", url);
    size_t n = strlen(out);
    while (n > 0 && out[n - 1] == '/') {
        out[--n] = '\0';
    }
    static const char *const suffixes[] = {"/sgx/certification/v4", "/tdx/certification/v4"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(suffixes); i++) {
        size_t sl = strlen(suffixes[i]);
        if (n >= sl && strcmp(out + n - sl, suffixes[i]) == 0) {
            out[n - sl] = '\0';
            n -= sl;
        }
    }
}

static int fetch_sim_root(const char *pccs_url, char *url, size_t url_size, uint8_t **out,
                          size_t *out_len, char *err, size_t err_size)
{
    char base[PCCS_URL_MAX + 1];
    struct http_body body = {.max = CLI_ROOT_CA_MAX_SIZE};
    int rc = -DS_E_NETWORK;
    long status = 0;
    normalize_base(pccs_url, base, sizeof(base));
    snprintf(url, url_size, "%s%s", base, SIM_ROOT_CA_PATH);
    CURL *c = curl_easy_init();
    if (c == NULL) {
        snprintf(err, err_size, "cannot initialise libcurl");
        return -ENOMEM;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, CLI_HTTP_TIMEOUT_MS);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, http_write);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    CURLcode cc = curl_easy_perform(c);
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "fetching the mock root CA from %s: %s", url,
                 body.overflow ? "response too large" : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        snprintf(err, err_size, "fetching the mock root CA from %s: HTTP status %ld", url, status);
        goto out;
    }
    if (body.len == 0) {
        snprintf(err, err_size, "fetching the mock root CA from %s: empty response", url);
        goto out;
    }
    rc = root_to_der(body.data, body.len, out, out_len);
    if (rc < 0) {
        snprintf(err, err_size, "mock root CA from %s: not a DER or PEM certificate", url);
    }
out:
    free(body.data);
    curl_easy_cleanup(c);
    return rc;
}

static void warn_fingerprint(const uint8_t *der, size_t len, char hex[2 * DS_SHA256_LEN + 1])
{
    uint8_t fp[DS_SHA256_LEN];
    ds_sha256(der, len, fp);
    ds_hex_encode(fp, sizeof(fp), hex);
}

int verify_make_verifier(const struct verify_opts *o, struct ds_verifier **out, char *err,
                         size_t err_size)
{
    uint8_t *raw = NULL, *der = NULL;
    size_t raw_len = 0, der_len = 0;
    struct ds_verifier *v = NULL;
    char url[PCCS_URL_MAX + 64];
    char fp[2 * DS_SHA256_LEN + 1];
    int rc;

    if (o->root_ca_path != NULL) {
        rc = ds_read_file(o->root_ca_path, CLI_ROOT_CA_MAX_SIZE, &raw, &raw_len);
        if (rc < 0) {
            cli_errx("--root-ca: cannot read root CA file '%s': %s", o->root_ca_path,
                     rc == -DS_E_LIMIT ? "larger than 64 KiB" : ds_strerror(rc));
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        if (root_to_der(raw, raw_len, &der, &der_len) < 0) {
            cli_errx("--root-ca: root CA file '%s': expected a DER or PEM certificate",
                     o->root_ca_path);
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        rc = ds_verifier_new(der, der_len, &v);
        if (rc < 0) {
            cli_errx("--root-ca: root CA file '%s': not a usable certificate (%s)", o->root_ca_path,
                     ds_strerror(rc));
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        if (!ds_verifier_is_intel_root(v)) {
            warn_fingerprint(der, der_len, fp);
            log_warnx("trusting a NON-Intel root CA from '%s' (SHA-256 %s): only quotes it "
                      "signed will verify",
                      o->root_ca_path, fp);
        }
    } else if (o->allow_simulated) {
        rc = fetch_sim_root(o->pccs_url, url, sizeof(url), &der, &der_len, err, err_size);
        if (rc < 0) {
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        rc = ds_verifier_new(der, der_len, &v);
        if (rc < 0) {
            snprintf(err, err_size, "mock root CA from %s: not a usable certificate (%s)", url,
                     ds_strerror(rc));
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        if (!ds_verifier_is_intel_root(v)) {
            warn_fingerprint(der, der_len, fp);
            fprintf(stderr,
                    "dstack: ***********************************************************\n"
                    "dstack: WARNING: --insecure-allow-simulated is set.\n"
                    "dstack: WARNING: trusting the MOCK root CA served by %s\n"
                    "dstack: WARNING: (SHA-256 %s).\n"
                    "dstack: WARNING: A quote that verifies against it comes from a simulator\n"
                    "dstack: WARNING: and proves NOTHING about genuine Intel TDX/SGX hardware.\n"
                    "dstack: ***********************************************************\n",
                    url, fp);
        }
    } else {
        rc = ds_verifier_new(NULL, 0, &v);
        if (rc < 0) {
            snprintf(err, err_size, "cannot create the verifier: %s", ds_strerror(rc));
            rc = CLI_EXIT_FAIL;
            goto out;
        }
    }
    *out = v;
    v = NULL;
    rc = 0;
out:
    ds_verifier_free(v);
    free(raw);
    free(der);
    return rc;
}

int verify_get_collateral(const struct verify_opts *o, const uint8_t *quote, size_t quote_len,
                          struct ds_collateral **out, char *err, size_t err_size)
{
    char detail[256] = "";
    int rc;
    if (o->collateral_path != NULL) {
        uint8_t *json = NULL;
        size_t len = 0;
        rc = ds_read_file(o->collateral_path, DS_COLLATERAL_MAX_JSON, &json, &len);
        if (rc < 0) {
            cli_errx("--collateral: cannot read collateral file '%s': %s", o->collateral_path,
                     rc == -DS_E_LIMIT ? "too large" : ds_strerror(rc));
            return CLI_EXIT_USAGE;
        }
        rc = ds_collateral_from_json((const char *)json, len, out, detail, sizeof(detail));
        free(json);
        if (rc < 0) {
            cli_errx("--collateral: collateral file '%s': %s", o->collateral_path,
                     detail[0] != '\0' ? detail : ds_strerror(rc));
            return CLI_EXIT_USAGE;
        }
        return 0;
    }
    rc = ds_collateral_fetch(o->pccs_url, quote, quote_len, 0, out, detail, sizeof(detail));
    if (rc < 0) {
        snprintf(err, err_size, "fetching collateral from %s: %s", o->pccs_url,
                 detail[0] != '\0' ? detail : ds_strerror(rc));
        return CLI_EXIT_FAIL;
    }
    return 0;
}

int verify_run_quote(const struct verify_opts *o, const uint8_t *quote, size_t quote_len,
                     struct verify_verdict *v)
{
    struct ds_verifier *ver = NULL;
    struct ds_collateral *coll = NULL;
    int rc;

    memset(v, 0, sizeof(*v));
    v->parsed = ds_quote_parse(quote, quote_len, &v->quote) == 0;
    rc = verify_make_verifier(o, &ver, v->error, sizeof(v->error));
    if (rc == CLI_EXIT_FAIL) {
        v->failed_step = "root_ca";
    }
    if (rc != 0) {
        goto out;
    }
    v->simulated = !ds_verifier_is_intel_root(ver);
    rc = verify_get_collateral(o, quote, quote_len, &coll, v->error, sizeof(v->error));
    if (rc == CLI_EXIT_FAIL) {
        v->failed_step = "collateral";
    }
    if (rc != 0) {
        goto out;
    }
    log_debug("verifying %zu quote bytes at %lld", quote_len, (long long)o->now);
    int vr = ds_verify_quote(ver, quote, quote_len, coll, o->now, &v->res);
    v->have_result = true;
    if (vr == 0 && v->res.ok) {
        v->ok = true;
        rc = CLI_EXIT_OK;
        goto out;
    }
    v->failed_step = ds_verify_step_name(v->res.failed_step);
    if (v->res.message[0] != '\0') {
        snprintf(v->error, sizeof(v->error), "%s", v->res.message);
    } else {
        snprintf(v->error, sizeof(v->error), "%s", ds_strerror(vr < 0 ? vr : -DS_E_STATE));
    }
    rc = CLI_EXIT_FAIL;
out:
    if (rc != CLI_EXIT_OK) {
        v->ok = false;
    }
    ds_collateral_free(coll);
    ds_verifier_free(ver);
    return rc;
}

void verify_verdict_done(struct verify_verdict *v)
{
    if (v->have_result) {
        ds_verify_result_done(&v->res);
        v->have_result = false;
    }
}
