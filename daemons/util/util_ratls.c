/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RA-TLS certificates minted from inside the CVM (spec kms-ratls.md §6.1-6.3): a P-256 key,
 * a quote from the TEE provider whose report_data is SHA-512("ratls-cert:" || SPKI DER), the
 * TEE's event log, both stripped into the attestation extension, signed by a given CA or
 * self-signed. util_ratls_mint() is what the KMS client uses for its "RA-TLS TEMP Cert";
 * `dstack-util ratls-cert` exposes it for operators and tests (e.g. a certificate for an
 * existing key, a CA handed out by GetTempCaCert, or a chosen validity window).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>

#include "dstack/ratls.h"
#include "log.h"
#include "util.h"

#define ALT_NAMES_MAX 16

int util_ratls_mint(struct ds_tee *tee, const struct util_mint_req *rq, EVP_PKEY **out_key,
                    X509 **out_cert, char *err, size_t err_size)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    uint8_t rd[DS_REPORT_DATA_SIZE];
    uint8_t *quote = NULL, *att = NULL;
    size_t quote_len = 0, att_len = 0;
    char *log_json = NULL;
    struct ds_event_log *log = NULL;
    int r;
    if (rq->key) {
        if (EVP_PKEY_up_ref(rq->key) != 1) {
            return -ENOMEM;
        }
        key = rq->key;
    } else if ((r = ds_ratls_key_generate(&key)) < 0) {
        snprintf(err, err_size, "key generation: %s", ds_strerror(r));
        goto out;
    }
    r = ds_ratls_report_data(key, rd);
    if (r < 0) {
        snprintf(err, err_size, "report data: %s", ds_strerror(r));
        goto out;
    }
    /* Log first, quote second: nothing else extends RTMR3 while a CVM fetches its keys. */
    r = ds_tee_get_event_log(tee, &log_json);
    if (r == 0) {
        r = ds_eventlog_parse_json(log_json, strlen(log_json), &log);
    }
    if (r < 0) {
        snprintf(err, err_size, "TEE event log: %s", ds_strerror(r));
        goto out;
    }
    r = ds_tee_get_quote(tee, rd, &quote, &quote_len);
    if (r < 0) {
        snprintf(err, err_size, "TEE quote: %s", ds_strerror(r));
        goto out;
    }
    r = ds_ratls_attestation_for_key(key, quote, quote_len, log, NULL, rq->config, &att, &att_len);
    if (r < 0) {
        snprintf(err, err_size, "attestation extension: %s", ds_strerror(r));
        goto out;
    }
    struct ds_ratls_cert_req req = {
        .org = rq->org,
        .subject = rq->subject,
        .alt_names = rq->alt_names,
        .alt_name_count = rq->alt_name_count,
        .server_auth = rq->server_auth,
        .client_auth = rq->client_auth,
        .has_not_before = rq->has_not_before,
        .not_before = rq->not_before,
        .has_not_after = rq->has_not_after,
        .not_after = rq->not_after,
        .now = (int64_t)time(NULL),
        .app_id = rq->app_id,
        .app_id_len = rq->app_id_len,
        .attestation = att,
        .attestation_len = att_len,
    };
    r = ds_ratls_cert_build(&req, key, rq->issuer_key ? rq->issuer_key : key, rq->issuer_cert,
                            &cert);
    if (r < 0) {
        snprintf(err, err_size, "certificate: %s", ds_strerror(r));
        goto out;
    }
    *out_key = key;
    *out_cert = cert;
    key = NULL;
    cert = NULL;
out:
    EVP_PKEY_free(key);
    X509_free(cert);
    free(quote);
    free(att);
    free(log_json);
    ds_eventlog_free(log);
    return r;
}

/* ---- `dstack-util ratls-cert` -------------------------------------------------------------- */

void util_ratls_cert_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-util ratls-cert --out-key FILE --out-cert FILE [--tee SPEC]\n"
            "                              [--ca-cert FILE --ca-key FILE] [--key FILE]\n"
            "                              [--subject CN] [--org O] [--alt-name NAME]\n"
            "                              [--client-auth] [--server-auth] [--vm-config FILE]\n"
            "                              [--not-before UNIX] [--not-after UNIX]\n"
            "                              [--app-id HEX]\n"
            "\n"
            "Mint an RA-TLS certificate: a P-256 key (new, or --key) with an attestation\n"
            "extension whose quote binds the key (report_data = SHA-512(\"ratls-cert:\" ||\n"
            "SPKI)), signed by --ca-cert/--ca-key (e.g. a KMS temp CA) or self-signed.\n"
            "  --tee SPEC      TEE provider: tdx, sim:<socket>, embedded (default: DSTACK_TEE,\n"
            "                  then autodetection)\n"
            "  --subject CN    default \"" UTIL_TEMP_CERT_SUBJECT "\"\n"
            "  --vm-config F   vm_config JSON carried in the attestation\n"
            "  --not-before/--not-after  validity in Unix seconds (default 1975 .. now+10y)\n"
            "  --app-id HEX    app id extension (.1.3, the issuer's claim, e.g. a gateway's\n"
            "                  RPC certificate that guests check against gateway_app_id)\n"
            "The key is written with mode 0600.\n");
}

static int read_text(const char *path, size_t max, char **out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int r = ds_read_file(path, max, &data, &len);
    if (r < 0) {
        return r;
    }
    if (memchr(data, '\0', len)) {
        free(data);
        return -DS_E_FORMAT;
    }
    *out = (char *)data; /* ds_read_file NUL-terminates */
    return 0;
}

static int parse_time(const char *opt, const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < 0 || v > 253402300799LL) {
        log_warnx("--%s: expected Unix seconds, got '%s'", opt, s);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

int util_cmd_ratls_cert(int argc, char **argv)
{
    const char *tee_spec = NULL, *out_key = NULL, *out_cert = NULL, *ca_cert_path = NULL,
               *ca_key_path = NULL, *key_path = NULL, *subject = NULL, *org = NULL,
               *alt_name = NULL, *vm_config_path = NULL, *not_before = NULL, *not_after = NULL,
               *app_id_hex = NULL;
    bool client_auth = false, server_auth = false, help = false;
    const struct util_opt opts[] = {
        {"tee", UTIL_OPT_STRING, &tee_spec, "SPEC", false},
        {"out-key", UTIL_OPT_STRING, &out_key, "FILE", true},
        {"out-cert", UTIL_OPT_STRING, &out_cert, "FILE", true},
        {"ca-cert", UTIL_OPT_STRING, &ca_cert_path, "FILE", false},
        {"ca-key", UTIL_OPT_STRING, &ca_key_path, "FILE", false},
        {"key", UTIL_OPT_STRING, &key_path, "FILE", false},
        {"subject", UTIL_OPT_STRING, &subject, "CN", false},
        {"org", UTIL_OPT_STRING, &org, "O", false},
        {"alt-name", UTIL_OPT_STRING, &alt_name, "NAME", false},
        {"vm-config", UTIL_OPT_STRING, &vm_config_path, "FILE", false},
        {"not-before", UTIL_OPT_STRING, &not_before, "UNIX", false},
        {"not-after", UTIL_OPT_STRING, &not_after, "UNIX", false},
        {"client-auth", UTIL_OPT_FLAG, &client_auth, NULL, false},
        {"server-auth", UTIL_OPT_FLAG, &server_auth, NULL, false},
        {"app-id", UTIL_OPT_STRING, &app_id_hex, "HEX", false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("ratls-cert", argc, argv, opts, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        util_ratls_cert_usage(stdout);
        return UTIL_EXIT_OK;
    }
    if ((ca_cert_path == NULL) != (ca_key_path == NULL)) {
        log_warnx("--ca-cert and --ca-key go together");
        return UTIL_EXIT_USAGE;
    }
    struct util_mint_req rq = {
        .org = org,
        .subject = subject ? subject : UTIL_TEMP_CERT_SUBJECT,
        .client_auth = client_auth,
        .server_auth = server_auth,
    };
    const char *alts[1] = {alt_name};
    if (alt_name) {
        rq.alt_names = alts;
        rq.alt_name_count = 1;
    }
    if ((not_before && parse_time("not-before", not_before, &rq.not_before) < 0) ||
        (not_after && parse_time("not-after", not_after, &rq.not_after) < 0)) {
        return UTIL_EXIT_USAGE;
    }
    rq.has_not_before = not_before != NULL;
    rq.has_not_after = not_after != NULL;
    uint8_t app_id[DS_RATLS_MAX_APP_ID];
    if (app_id_hex) {
        size_t hl = strlen(app_id_hex);
        if (hl == 0 || hl % 2 || hl / 2 > sizeof(app_id) ||
            ds_hex_decode(app_id_hex, hl, app_id, hl / 2) < 0) {
            log_warnx("--app-id: expected 2-%zu hex digits, got '%s'", 2 * sizeof(app_id),
                      app_id_hex);
            return UTIL_EXIT_USAGE;
        }
        rq.app_id = app_id;
        rq.app_id_len = hl / 2;
    }

    char *vm_config = NULL, *pem = NULL, *kpem = NULL, *out_pem = NULL;
    struct ds_tee *tee = NULL;
    EVP_PKEY *key = NULL, *ca_key = NULL, *given_key = NULL;
    X509 *cert = NULL, *ca_cert = NULL;
    char err[UTIL_KMS_ERR_MAX];
    int r;
    rc = UTIL_EXIT_USAGE;
    if (vm_config_path && (r = read_text(vm_config_path, UTIL_VM_CONFIG_MAX, &vm_config)) < 0) {
        log_warnx("--vm-config '%s': %s", vm_config_path, ds_strerror(r));
        goto out;
    }
    if (ca_cert_path) {
        if ((r = read_text(ca_cert_path, UTIL_PEM_MAX, &pem)) < 0 ||
            (r = util_pem_to_cert(pem, &ca_cert)) < 0) {
            log_warnx("--ca-cert '%s': %s", ca_cert_path, ds_strerror(r));
            goto out;
        }
        if ((r = read_text(ca_key_path, UTIL_PEM_MAX, &kpem)) < 0 ||
            (r = util_pem_to_key(kpem, &ca_key)) < 0) {
            log_warnx("--ca-key '%s': %s", ca_key_path, ds_strerror(r));
            goto out;
        }
        if (X509_check_private_key(ca_cert, ca_key) != 1) {
            ERR_clear_error();
            log_warnx("--ca-key does not match --ca-cert");
            goto out;
        }
        rq.issuer_cert = ca_cert;
        rq.issuer_key = ca_key;
        ds_keys_free_secret(kpem);
        kpem = NULL;
    }
    if (key_path) {
        if ((r = read_text(key_path, UTIL_PEM_MAX, &kpem)) < 0 ||
            (r = util_pem_to_key(kpem, &given_key)) < 0) {
            log_warnx("--key '%s': %s", key_path, ds_strerror(r));
            goto out;
        }
        rq.key = given_key;
    }
    rq.config = vm_config;
    rc = UTIL_EXIT_FAIL;
    r = ds_tee_open(tee_spec, &tee, err, sizeof(err));
    if (r < 0) {
        log_warnx("TEE: %s", err[0] ? err : ds_strerror(r));
        goto out;
    }
    if (ds_tee_is_simulated(tee)) {
        log_warnx("the TEE is SIMULATED (%s): this certificate proves nothing about hardware",
                  ds_tee_kind(tee));
    }
    r = util_ratls_mint(tee, &rq, &key, &cert, err, sizeof(err));
    if (r < 0) {
        log_warnx("ratls-cert: %s", err);
        goto out;
    }
    if ((r = ds_ratls_key_pem(key, &out_pem)) < 0 ||
        (r = ds_write_file_atomic(out_key, out_pem, strlen(out_pem), 0600)) < 0) {
        log_warnx("writing the key to '%s': %s", out_key, ds_strerror(r));
        goto out;
    }
    ds_keys_free_secret(out_pem);
    out_pem = NULL;
    if ((r = ds_ratls_cert_pem(cert, &out_pem)) < 0 ||
        (r = ds_write_file_atomic(out_cert, out_pem, strlen(out_pem), 0644)) < 0) {
        log_warnx("writing the certificate to '%s': %s", out_cert, ds_strerror(r));
        goto out;
    }
    rc = UTIL_EXIT_OK;
out:
    ds_keys_free_secret(out_pem);
    ds_keys_free_secret(kpem);
    free(pem);
    free(vm_config);
    ds_tee_close(tee);
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(given_key);
    X509_free(cert);
    X509_free(ca_cert);
    return rc;
}
