/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificates the guest agent issues (spec guest-agent-api.md §4.6): GetTlsKey / DeriveKey
 * leaves signed by the local app CA (key provider None/Local/Tpm), with the RA-TLS attestation
 * extension bound to the new key when asked (report_data = SHA-512("ratls-cert:" || SPKI)),
 * the app-info extension, the demo certificate of Info.app_cert, and the simulator's
 * development CA. Certificate building and the extension encodings are lib/attest's ratls.h;
 * this file only decides what goes in.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>

#include "agent.h"
#include "dstack/ratls.h"
#include "log.h"

#define DEV_CA_ORG     "Dstack"
#define DEV_CA_SUBJECT "Dstack App CA (INSECURE development)"

static int load_cert_pem(const char *pem, X509 **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    if (!bio) {
        return -ENOMEM;
    }
    X509 *c = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (!c) {
        return -DS_E_FORMAT;
    }
    *out = c;
    return 0;
}

/* The .1.8 payload (and optionally .1.9) for key: one quote bound to the key's SPKI. */
static int attest_key(struct agent *a, EVP_PKEY *key, bool ra_tls, bool with_app_info,
                      uint8_t **att, size_t *att_len, uint8_t **app_info, size_t *app_info_len,
                      char *msg, size_t msg_size)
{
    uint8_t rd[DS_REPORT_DATA_SIZE];
    struct agent_evidence e;
    struct ds_app_info info;
    memset(&info, 0, sizeof(info));
    int r = ds_ratls_report_data(key, rd);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to compute report data: %s", ds_strerror(r));
        return r;
    }
    DS_TRY(agent_evidence_get(a, rd, &e, msg, msg_size));
    if (ra_tls) {
        r = ds_ratls_attestation_for_key(key, e.quote, e.quote_len, e.log, NULL, a->vm_config, att,
                                         att_len);
        if (r < 0) {
            snprintf(msg, msg_size, "failed to build the attestation extension: %s",
                     ds_strerror(r));
            goto out;
        }
    }
    if (with_app_info) {
        r = ds_app_info_decode(e.log, &e.td, NULL, 0, a->vm_config, false, &info);
        if (r == 0) {
            r = ds_ratls_app_info_encode(&info, app_info, app_info_len);
        }
        if (r < 0) {
            snprintf(msg, msg_size, "failed to build the app info extension: %s", ds_strerror(r));
            goto out;
        }
    }
out:
    ds_app_info_done(&info);
    agent_evidence_done(&e);
    return r;
}

int agent_tls_issue(struct agent *a, const uint8_t scalar[32], const struct agent_cert_opts *o,
                    json_t **out_chain, char *msg, size_t msg_size)
{
    EVP_PKEY *key = NULL, *ca_key = NULL;
    X509 *ca = NULL, *cert = NULL;
    uint8_t ca_scalar[32];
    const char *ca_pem = NULL;
    uint8_t *att = NULL, *app_info = NULL;
    size_t att_len = 0, app_info_len = 0;
    char *leaf_pem = NULL;
    int r = agent_keys_ca(a, ca_scalar, &ca_pem);
    if (r == -DS_E_NOT_FOUND) {
        /* Key provider Kms: the KMS issues the certificate (SignCert). */
        r = ds_ratls_key_from_scalar(scalar, &key);
        if (r == 0) {
            r = agent_kms_sign_cert(a, key, o, out_chain, msg, msg_size);
        } else {
            snprintf(msg, msg_size, "failed to load keys: %s", ds_strerror(r));
        }
        goto out;
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to load the app CA key: %s", ds_strerror(r));
        goto out;
    }
    r = ds_ratls_key_from_scalar(ca_scalar, &ca_key);
    if (r == 0) {
        r = load_cert_pem(ca_pem, &ca);
    }
    if (r == 0) {
        r = ds_ratls_key_from_scalar(scalar, &key);
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to load keys: %s", ds_strerror(r));
        goto out;
    }
    if (o->ra_tls || o->with_app_info) {
        r = attest_key(a, key, o->ra_tls, o->with_app_info, &att, &att_len, &app_info,
                       &app_info_len, msg, msg_size);
        if (r < 0) {
            goto out;
        }
    }
    struct ds_ratls_cert_req req = {
        .subject = o->subject ? o->subject : "",
        .alt_names = o->alt_names,
        .alt_name_count = o->alt_name_count,
        .server_auth = o->server_auth,
        .client_auth = o->client_auth,
        .has_not_before = o->has_not_before,
        .not_before = (int64_t)o->not_before,
        .has_not_after = o->has_not_after,
        .not_after = (int64_t)o->not_after,
        .now = (int64_t)time(NULL),
        .usage = DS_RATLS_USAGE_APP_CUSTOM,
        .attestation = att,
        .attestation_len = att_len,
        .app_info = app_info,
        .app_info_len = app_info_len,
    };
    r = ds_ratls_cert_build(&req, key, ca_key, ca, &cert);
    if (r == 0) {
        r = ds_ratls_cert_pem(cert, &leaf_pem);
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to build the certificate: %s", ds_strerror(r));
        goto out;
    }
    json_t *chain = json_pack("[s,s]", leaf_pem, ca_pem);
    r = chain ? 0 : -ENOMEM;
    if (chain) {
        *out_chain = chain;
    }
out:
    ds_wipe(ca_scalar, sizeof(ca_scalar));
    EVP_PKEY_free(key);
    EVP_PKEY_free(ca_key);
    X509_free(ca);
    X509_free(cert);
    free(att);
    free(app_info);
    free(leaf_pem);
    return r;
}

int agent_tls_dev_ca(const uint8_t ca_scalar[32], char **out_pem)
{
    EVP_PKEY *key = NULL;
    X509 *cert = NULL;
    struct ds_ratls_cert_req req = {
        .org = DEV_CA_ORG,
        .subject = DEV_CA_SUBJECT,
        .ca = true,
        .ca_path_len = 1,
        .now = (int64_t)time(NULL),
        .usage = DS_RATLS_USAGE_APP_CA,
    };
    int r = ds_ratls_key_from_scalar(ca_scalar, &key);
    if (r == 0) {
        r = ds_ratls_cert_build(&req, key, key, NULL, &cert);
    }
    if (r == 0) {
        r = ds_ratls_cert_pem(cert, out_pem);
    }
    EVP_PKEY_free(key);
    X509_free(cert);
    return r;
}

int agent_issue_demo_cert(struct agent *a)
{
    /* §4.6 demo certificate: random key, subject demo-cert, no SANs, client auth, RA-TLS. */
    uint8_t scalar[32];
    char msg[256] = "";
    json_t *chain = NULL;
    struct agent_cert_opts o = {.subject = "demo-cert", .ra_tls = true, .client_auth = true};
    int r = agent_keys_tls_scalar(a, NULL, scalar);
    if (r == 0) {
        r = agent_tls_issue(a, scalar, &o, &chain, msg, sizeof(msg));
    }
    ds_wipe(scalar, sizeof(scalar));
    if (r < 0) {
        log_warnx("cannot issue the demo certificate: %s", msg[0] ? msg : ds_strerror(r));
        return r;
    }
    /* app_cert = the chain's PEMs joined with "\n". */
    const char *leaf = json_string_value(json_array_get(chain, 0));
    const char *ca = json_string_value(json_array_get(chain, 1));
    size_t n = strlen(leaf) + 1 + strlen(ca) + 1;
    char *joined = malloc(n);
    if (joined) {
        snprintf(joined, n, "%s\n%s", leaf, ca);
        free(a->app_cert);
        a->app_cert = joined;
        agent_info_invalidate(a);
    }
    json_decref(chain);
    return joined ? 0 : -ENOMEM;
}
