/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack kms`: read-only queries of a KMS (spec kms-ratls.md §2.3, §3.6, §7).
 *   kms meta URL        GetMeta: root CA, root k256 public key, dev flag, gateway app id, ...
 *   kms env-pubkey URL APP_ID
 *                       GetAppEnvEncryptPubKey: the X25519 key deployers encrypt env vars
 *                       to, with its two k256 signatures. Both signatures are checked
 *                       (recovered signer == the KMS k256 key, signature_v1 fresh per the
 *                       SDKs' rule) before anything is printed.
 * Trust: KMS server certificates chain to the KMS's own root CA, so without --ca-cert the TLS
 * peer is not authenticated and the signature check only proves consistency with the same
 * KMS's GetMeta answer; --kms-pubkey pins the k256 key (e.g. from the DstackKms contract) and
 * --ca-cert pins the TLS root. Requests use pRPC's JSON mode (`POST {URL}/prpc/{Method}?json`).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/pem.h>

#include "cli.h"
#include "dstack/keys.h"
#include "dstack/ratls.h"

#define KMS_URL_MAX         2048
#define KMS_RESPONSE_MAX    (1024 * 1024)
#define KMS_TIMEOUT_MS      30000L
#define KMS_CONNECT_TIMEOUT 5000L
#define KMS_ERR_MAX         512
#define KMS_MAX_AGE_MAX     (10LL * 365 * 24 * 3600)

struct kms_conn {
    char base[KMS_URL_MAX]; /* ".../prpc" */
    const char *ca_cert;    /* file: the only trust anchor for the server (NULL: not verified) */
};

/* ---- transport ----------------------------------------------------------------------------- */

/* snprintf into an error buffer; truncation of long messages is fine. */
static void errf(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t err_size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static int kms_conn_init(struct kms_conn *c, const char *url, const char *ca_cert)
{
    memset(c, 0, sizeof(*c));
    c->ca_cert = ca_cert;
    if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) {
        return -EINVAL;
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/') {
        n--;
    }
    const char *suffix = "/prpc";
    bool has = n >= 5 && strncmp(url + n - 5, suffix, 5) == 0;
    if (n + 6 >= sizeof(c->base)) {
        return -EINVAL;
    }
    memcpy(c->base, url, n);
    c->base[n] = '\0';
    if (!has) {
        strcat(c->base, suffix);
    }
    return 0;
}

static size_t on_body(char *p, size_t size, size_t nmemb, void *ud)
{
    struct ds_buf *b = ud;
    size_t n = size * nmemb;
    return ds_buf_append(b, p, n) < 0 ? 0 : n;
}

/* POST {base}/{method}?json; *out = the answer object (200) or err = the pRPC error. */
static int kms_call(const struct kms_conn *c, const char *method, const char *body, json_t **out,
                    char *err, size_t err_size)
{
    char url[KMS_URL_MAX + 64], curl_err[CURL_ERROR_SIZE] = "";
    struct ds_buf resp;
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    json_t *j = NULL;
    long status = 0;
    int r = -DS_E_NETWORK;
    ds_buf_init(&resp, KMS_RESPONSE_MAX);
    snprintf(url, sizeof(url), "%s/%s?json", c->base, method);
    CURL *h = curl_easy_init();
    if (!h || !hdrs) {
        errf(err, err_size, "cannot initialise libcurl");
        r = -ENOMEM;
        goto out;
    }
    bool verify = c->ca_cert != NULL;
    if (curl_easy_setopt(h, CURLOPT_URL, url) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, KMS_CONNECT_TIMEOUT) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, KMS_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_USERAGENT, "dstack/" DS_VERSION) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_cert) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, verify ? 1L : 0L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L) != CURLE_OK) {
        errf(err, err_size, "cannot configure libcurl");
        goto out;
    }
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        errf(err, err_size, "%s: %s", url, curl_err[0] ? curl_err : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    j = json_loadb((const char *)resp.data, resp.len, JSON_REJECT_DUPLICATES, NULL);
    if (status != 200) {
        const json_t *e = json_is_object(j) ? json_object_get(j, "error") : NULL;
        if (json_is_string(e)) {
            errf(err, err_size, "%s", json_string_value(e));
            r = -DS_E_DENIED;
        } else {
            errf(err, err_size, "HTTP status %ld without a pRPC error", status);
            r = -DS_E_PROTOCOL;
        }
        goto out;
    }
    if (!json_is_object(j)) {
        errf(err, err_size, "the answer is not a JSON object");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    *out = j;
    j = NULL;
    r = 0;
out:
    json_decref(j);
    curl_slist_free_all(hdrs);
    if (h) {
        curl_easy_cleanup(h);
    }
    ds_buf_done(&resp);
    return r;
}

/* A hex field of exactly n bytes (optional 0x). */
static int field_hex(const json_t *o, const char *name, uint8_t *out, size_t n, char *err,
                     size_t err_size)
{
    const json_t *v = json_object_get(o, name);
    const char *s = json_is_string(v) ? json_string_value(v) : NULL;
    if (!s || ds_hex_decode(s, strlen(s), out, n) < 0) {
        errf(err, err_size, "answer field \"%s\" is not hex of %zu bytes", name, n);
        return -DS_E_PROTOCOL;
    }
    return 0;
}

/* GetMeta and its k256 public key (checked: 33-byte compressed). */
static int get_meta(const struct kms_conn *c, json_t **out, uint8_t k256[DS_K256_PUB_SIZE],
                    char *err, size_t err_size)
{
    json_t *j = NULL;
    char msg[KMS_ERR_MAX];
    int r = kms_call(c, "GetMeta", "{}", &j, msg, sizeof(msg));
    if (r < 0) {
        errf(err, err_size, "GetMeta: %s", msg);
        return r;
    }
    r = field_hex(j, "k256_pubkey", k256, DS_K256_PUB_SIZE, msg, sizeof(msg));
    if (r == 0 && (k256[0] != 0x02 && k256[0] != 0x03)) {
        errf(msg, sizeof(msg), "k256_pubkey is not a compressed secp256k1 key");
        r = -DS_E_PROTOCOL;
    }
    if (r < 0) {
        errf(err, err_size, "GetMeta: %s", msg);
        json_decref(j);
        return r;
    }
    *out = j;
    return 0;
}

/* ---- usage --------------------------------------------------------------------------------- */

void cmd_kms_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack kms meta URL [--ca-cert FILE] [--json]\n"
            "       dstack kms env-pubkey URL APP_ID [--ca-cert FILE] [--kms-pubkey HEX]\n"
            "                                [--max-age SECONDS] [--json]\n"
            "\n"
            "  meta        GetMeta: the KMS root CA, root k256 public key and settings\n"
            "  env-pubkey  GetAppEnvEncryptPubKey: the X25519 public key to encrypt an app's\n"
            "              environment to; its signature and signature_v1 must recover to the\n"
            "              KMS k256 key and signature_v1 must be fresh, or nothing is printed\n"
            "\n"
            "  URL              the KMS, e.g. https://kms.example:8000 (\"/prpc\" is added)\n"
            "  APP_ID           20-byte app id in hex (0x optional)\n"
            "  --ca-cert FILE   verify the TLS server against this KMS root CA (PEM) only;\n"
            "                   without it the TLS peer is NOT authenticated\n"
            "  --kms-pubkey HEX the trusted KMS k256 public key (33 bytes compressed, e.g.\n"
            "                   from the DstackKms contract); default: GetMeta's k256_pubkey\n"
            "  --max-age S      freshness window for signature_v1 (default %d)\n"
            "  --json           machine-readable output (byte fields are lowercase hex)\n"
            "\n"
            "exit codes: 0 ok, 1 request or signature check failed, 2 usage error\n",
            DS_ENV_PUBKEY_MAX_AGE_DEFAULT);
}

/* ---- kms meta ------------------------------------------------------------------------------ */

static void print_field(const json_t *j, const char *name)
{
    const json_t *v = json_object_get(j, name);
    if (json_is_string(v)) {
        printf("%-24s %s\n", name, json_string_value(v));
    } else if (json_is_boolean(v)) {
        printf("%-24s %s\n", name, json_is_true(v) ? "true" : "false");
    } else if (json_is_integer(v)) {
        printf("%-24s %lld\n", name, (long long)json_integer_value(v));
    } else {
        printf("%-24s -\n", name);
    }
}

static int print_ca(const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!x) {
        return -DS_E_FORMAT;
    }
    char subject[256] = "";
    X509_NAME_oneline(X509_get_subject_name(x), subject, sizeof(subject));
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    int r = ds_ratls_spki_der(X509_get0_pubkey(x), &spki, &spki_len);
    X509_free(x);
    if (r < 0) {
        return r;
    }
    char *hex = ds_hex_strdup(spki, spki_len);
    free(spki);
    printf("%-24s %s\n", "ca_subject", subject);
    printf("%-24s %s\n", "ca_pubkey (provider id)", hex ? hex : "?");
    free(hex);
    return 0;
}

static int kms_meta(const struct kms_conn *c, bool json)
{
    json_t *j = NULL;
    uint8_t k256[DS_K256_PUB_SIZE];
    char err[KMS_ERR_MAX];
    int r = get_meta(c, &j, k256, err, sizeof(err));
    if (r < 0) {
        cli_errx("kms meta: %s", err);
        return CLI_EXIT_FAIL;
    }
    const json_t *ca = json_object_get(j, "ca_cert");
    int rc = CLI_EXIT_OK;
    if (json) {
        rc = cli_print_json(j);
    } else {
        print_field(j, "k256_pubkey");
        print_field(j, "is_dev");
        print_field(j, "allow_any_upgrade");
        print_field(j, "gateway_app_id");
        print_field(j, "kms_contract_address");
        print_field(j, "chain_id");
        print_field(j, "app_auth_implementation");
        if (!json_is_string(ca) || print_ca(json_string_value(ca)) < 0) {
            cli_errx("kms meta: GetMeta: ca_cert is not a PEM certificate");
            rc = CLI_EXIT_FAIL;
        }
    }
    json_decref(j);
    return rc;
}

/* ---- kms env-pubkey ------------------------------------------------------------------------ */

/* Recover the signer of one env-pubkey signature and compare it with the trusted key. */
static int check_sig(const char *which, const uint8_t sig[DS_K256_SIG_SIZE],
                     const uint8_t app_id[DS_APP_ID_SIZE], const uint8_t pub[DS_X25519_PUB_SIZE],
                     bool with_ts, uint64_t ts, const uint8_t want[DS_K256_PUB_SIZE])
{
    uint8_t signer[DS_K256_PUB_SIZE];
    int r = ds_env_pubkey_recover(sig, app_id, pub, with_ts, ts, signer);
    if (r < 0) {
        cli_errx("kms env-pubkey: %s does not verify: %s", which, ds_strerror(r));
        return -1;
    }
    if (!ds_ct_equal(signer, want, DS_K256_PUB_SIZE)) {
        char got[2 * DS_K256_PUB_SIZE + 1], exp[2 * DS_K256_PUB_SIZE + 1];
        ds_hex_encode(signer, DS_K256_PUB_SIZE, got);
        ds_hex_encode(want, DS_K256_PUB_SIZE, exp);
        cli_errx("kms env-pubkey: %s was made by %s, not by the KMS k256 key %s", which, got, exp);
        return -1;
    }
    return 0;
}

static int kms_env_pubkey(const struct kms_conn *c, const char *app_id_hex, const char *pin_hex,
                          const char *max_age_str, bool json)
{
    uint8_t app_id[DS_APP_ID_SIZE], want[DS_K256_PUB_SIZE], pub[DS_X25519_PUB_SIZE];
    uint8_t sig[DS_K256_SIG_SIZE], sig_v1[DS_K256_SIG_SIZE];
    char err[KMS_ERR_MAX], msg[KMS_ERR_MAX];
    long long max_age = DS_ENV_PUBKEY_MAX_AGE_DEFAULT;
    if (ds_hex_decode(app_id_hex, strlen(app_id_hex), app_id, sizeof(app_id)) < 0) {
        cli_errx("kms env-pubkey: APP_ID: expected %d bytes of hex, got '%s'", DS_APP_ID_SIZE,
                 app_id_hex);
        return CLI_EXIT_USAGE;
    }
    if (pin_hex && (ds_hex_decode(pin_hex, strlen(pin_hex), want, sizeof(want)) < 0 ||
                    (want[0] != 0x02 && want[0] != 0x03))) {
        cli_errx("kms env-pubkey: --kms-pubkey: expected a 33-byte compressed secp256k1 key");
        return CLI_EXIT_USAGE;
    }
    if (max_age_str) {
        char *end = NULL;
        errno = 0;
        max_age = strtoll(max_age_str, &end, 10);
        if (errno || end == max_age_str || *end || max_age < 0 || max_age > KMS_MAX_AGE_MAX) {
            cli_errx("kms env-pubkey: --max-age: expected seconds, got '%s'", max_age_str);
            return CLI_EXIT_USAGE;
        }
    }
    if (!pin_hex) {
        json_t *meta = NULL;
        if (get_meta(c, &meta, want, err, sizeof(err)) < 0) {
            cli_errx("kms env-pubkey: %s", err);
            return CLI_EXIT_FAIL;
        }
        json_decref(meta);
    }
    char app_hex[2 * DS_APP_ID_SIZE + 1];
    ds_hex_encode(app_id, sizeof(app_id), app_hex);
    json_t *req = json_pack("{s:s}", "app_id", app_hex);
    char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    json_decref(req);
    json_t *j = NULL;
    int rc = CLI_EXIT_FAIL;
    if (!body) {
        cli_errx("kms env-pubkey: out of memory");
        goto out;
    }
    if (kms_call(c, "GetAppEnvEncryptPubKey", body, &j, msg, sizeof(msg)) < 0) {
        cli_errx("kms env-pubkey: GetAppEnvEncryptPubKey: %s", msg);
        goto out;
    }
    const json_t *tsj = json_object_get(j, "timestamp");
    if (field_hex(j, "public_key", pub, sizeof(pub), msg, sizeof(msg)) < 0 ||
        field_hex(j, "signature", sig, sizeof(sig), msg, sizeof(msg)) < 0 ||
        field_hex(j, "signature_v1", sig_v1, sizeof(sig_v1), msg, sizeof(msg)) < 0) {
        cli_errx("kms env-pubkey: GetAppEnvEncryptPubKey: %s", msg);
        goto out;
    }
    if (!json_is_integer(tsj) || json_integer_value(tsj) < 0) {
        cli_errx("kms env-pubkey: GetAppEnvEncryptPubKey: timestamp is not a non-negative "
                 "integer");
        goto out;
    }
    uint64_t ts = (uint64_t)json_integer_value(tsj);
    if (check_sig("signature", sig, app_id, pub, false, 0, want) < 0 ||
        check_sig("signature_v1", sig_v1, app_id, pub, true, ts, want) < 0) {
        goto out;
    }
    if (ds_env_pubkey_check_time(ts, (uint64_t)time(NULL), (uint64_t)max_age) < 0) {
        cli_errx("kms env-pubkey: signature_v1 timestamp %llu is outside the freshness window "
                 "(max age %lld s, %d s of clock skew)",
                 (unsigned long long)ts, max_age, DS_ENV_PUBKEY_MAX_SKEW);
        goto out;
    }
    char pub_hex[2 * DS_X25519_PUB_SIZE + 1], sig_hex[2 * DS_K256_SIG_SIZE + 1],
        sig1_hex[2 * DS_K256_SIG_SIZE + 1], k_hex[2 * DS_K256_PUB_SIZE + 1];
    ds_hex_encode(pub, sizeof(pub), pub_hex);
    ds_hex_encode(sig, sizeof(sig), sig_hex);
    ds_hex_encode(sig_v1, sizeof(sig_v1), sig1_hex);
    ds_hex_encode(want, sizeof(want), k_hex);
    if (json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I, s:s}", "app_id", app_hex, "public_key",
                              pub_hex, "signature", sig_hex, "signature_v1", sig1_hex, "timestamp",
                              (json_int_t)ts, "kms_k256_pubkey", k_hex);
        rc = o ? cli_print_json(o) : CLI_EXIT_FAIL;
        json_decref(o);
    } else {
        printf("%-16s %s\n%-16s %s\n%-16s %s\n%-16s %s\n%-16s %llu\n%-16s %s (%s)\n", "app_id",
               app_hex, "public_key", pub_hex, "signature", sig_hex, "signature_v1", sig1_hex,
               "timestamp", (unsigned long long)ts, "signed by", k_hex,
               pin_hex ? "pinned with --kms-pubkey" : "GetMeta k256_pubkey");
        rc = CLI_EXIT_OK;
    }
out:
    free(body);
    json_decref(j);
    return rc;
}

/* ---- entry --------------------------------------------------------------------------------- */

int cmd_kms(int argc, char **argv)
{
    const char *ca_cert = NULL, *pin = NULL, *max_age = NULL;
    bool json = false, help = false;
    const struct cli_opt opts[] = {
        {"ca-cert", CLI_OPT_STRING, &ca_cert, "FILE"},
        {"kms-pubkey", CLI_OPT_STRING, &pin, "HEX"},
        {"max-age", CLI_OPT_STRING, &max_age, "SECONDS"},
        {"json", CLI_OPT_FLAG, &json, NULL},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[CLI_MAX_POSITIONAL];
    int npos = 0;
    int rc = cli_parse_opts("kms", argc - 1, argv + 1, opts, pos, &npos, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        cmd_kms_usage(stdout);
        return CLI_EXIT_OK;
    }
    if (npos < 1) {
        cmd_kms_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    const char *sub = pos[0];
    bool is_meta = strcmp(sub, "meta") == 0, is_env = strcmp(sub, "env-pubkey") == 0;
    if (!is_meta && !is_env) {
        cli_errx("kms: unknown subcommand '%s' (meta, env-pubkey)", sub);
        return CLI_EXIT_USAGE;
    }
    if (npos != (is_meta ? 2 : 3)) {
        cli_errx("kms %s: expected %s", sub, is_meta ? "URL" : "URL APP_ID");
        return CLI_EXIT_USAGE;
    }
    if (is_meta && (pin || max_age)) {
        cli_errx("kms meta: --kms-pubkey and --max-age apply to env-pubkey only");
        return CLI_EXIT_USAGE;
    }
    struct kms_conn c;
    if (kms_conn_init(&c, pos[1], ca_cert) < 0) {
        cli_errx("kms %s: URL: expected http(s)://HOST[:PORT][/prpc], got '%s'", sub, pos[1]);
        return CLI_EXIT_USAGE;
    }
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        cli_errx("kms: cannot initialise libcurl");
        return CLI_EXIT_FAIL;
    }
    rc = is_meta ? kms_meta(&c, json) : kms_env_pubkey(&c, pos[2], pin, max_age, json);
    curl_global_cleanup();
    return rc;
}
