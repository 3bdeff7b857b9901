/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Certificates from the KMS, for apps whose key provider is Kms (spec guest-agent-api.md
 * §4.6, kms-ratls.md §6.5-6.7): the agent attests the new key (report_data =
 * SHA-512("ratls-cert:" || SPKI)), builds a CertSigningRequestV2 (SCALE, the attestation
 * appended), signs it with the key and calls KMS SignCert over HTTPS. The KMS server must
 * chain to the keys file's root CA and match the URL's host name; the client presents a fresh
 * "RA-TLS TEMP Cert" signed by the temp CA from the keys file (§6.5 table: SignCert needs no
 * client attestation, the evidence is inside the CSR). Reply: [leaf, app CA, root CA].
 * Runs on the TEE worker thread (blocking HTTP is fine there).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/x509.h>

#include "agent.h"
#include "dstack/ratls.h"
#include "log.h"

#define KMS_TIMEOUT_MS         30000
#define KMS_CONNECT_TIMEOUT_MS 10000
#define KMS_RESPONSE_MAX       (1024 * 1024)
#define KMS_CSR_API_VERSION    2
#define KMS_CLIENT_CERT_SECS   3600 /* validity of the TEMP client certificate */
#define KMS_CLIENT_SUBJECT     "RA-TLS TEMP Cert"

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
    struct ds_buf *b = arg;
    return ds_buf_append(b, p, size * n) == 0 ? size * n : 0;
}

static int load_cert(const char *pem, X509 **out)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *c = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (!c) {
        return -DS_E_FORMAT;
    }
    *out = c;
    return 0;
}

/* The TEMP client identity: a fresh key and a short-lived client-auth certificate. */
static int client_identity(const uint8_t tmp_ca[32], const char *tmp_ca_cert, char **cert_pem,
                           char **key_pem)
{
    EVP_PKEY *ca_key = NULL, *key = NULL;
    X509 *ca = NULL, *cert = NULL;
    int64_t now = (int64_t)time(NULL);
    struct ds_ratls_cert_req req = {
        .subject = KMS_CLIENT_SUBJECT,
        .client_auth = true,
        .has_not_before = true,
        .not_before = now - KMS_CLIENT_CERT_SECS,
        .has_not_after = true,
        .not_after = now + KMS_CLIENT_CERT_SECS,
        .now = now,
    };
    int r = ds_ratls_key_from_scalar(tmp_ca, &ca_key);
    if (r == 0) {
        r = load_cert(tmp_ca_cert, &ca);
    }
    if (r == 0) {
        r = ds_ratls_key_generate(&key);
    }
    if (r == 0) {
        r = ds_ratls_cert_build(&req, key, ca_key, ca, &cert);
    }
    if (r == 0) {
        r = ds_ratls_cert_pem(cert, cert_pem);
    }
    if (r == 0) {
        r = ds_ratls_key_pem(key, key_pem);
        if (r < 0) {
            free(*cert_pem);
        }
    }
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(key);
    X509_free(ca);
    X509_free(cert);
    return r;
}

/* The CSR (SCALE) for key with the request's certificate options and its signature. */
static int build_csr(struct agent *a, EVP_PKEY *key, const struct agent_cert_opts *o, uint8_t **csr,
                     size_t *csr_len, uint8_t **sig, size_t *sig_len, char *msg, size_t msg_size)
{
    uint8_t rd[DS_REPORT_DATA_SIZE];
    struct agent_evidence e;
    struct ds_attestation *att = NULL;
    struct ds_csr c;
    memset(&c, 0, sizeof(c));
    memset(&e, 0, sizeof(e));
    int r = ds_ratls_report_data(key, rd);
    if (r == 0) {
        r = agent_evidence_get(a, rd, &e, msg, msg_size);
        if (r < 0) {
            goto out;
        }
    }
    if (r == 0) {
        r = ds_attestation_new_tdx(e.quote, e.quote_len, e.log, NULL, rd, a->vm_config, &att);
    }
    if (r == 0) {
        r = ds_attestation_encode(att, DS_ATT_WIRE_AUTO, &c.attestation, &c.attestation_len);
    }
    if (r == 0) {
        r = ds_ratls_spki_der(key, &c.pubkey, &c.pubkey_len);
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to attest the key: %s", ds_strerror(r));
        goto out;
    }
    /* The borrowed strings are never freed through c (ds_csr_done is not called on them). */
    c.confirm = (char *)DS_CSR_CONFIRM;
    c.config.subject = (char *)(o->subject ? o->subject : "");
    c.config.alt_names = (char **)o->alt_names;
    c.config.alt_name_count = o->alt_name_count;
    c.config.usage_server_auth = o->server_auth;
    c.config.usage_client_auth = o->client_auth;
    c.config.ext_quote = o->ra_tls;
    c.config.ext_app_info = o->with_app_info;
    c.config.has_not_before = o->has_not_before;
    c.config.not_before = o->not_before;
    c.config.has_not_after = o->has_not_after;
    c.config.not_after = o->not_after;
    r = ds_csr_encode(&c, csr, csr_len);
    if (r == 0) {
        r = ds_csr_sign(key, *csr, *csr_len, sig, sig_len);
        if (r < 0) {
            free(*csr);
        }
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to build the CSR: %s", ds_strerror(r));
    }
out:
    free(c.attestation);
    free(c.pubkey);
    ds_attestation_free(att);
    agent_evidence_done(&e);
    return r;
}

/* POST url/KMS.SignCert with JSON body; *out = the parsed reply object (HTTP 200 only). */
static int kms_post(const char *url, const char *body, const char *root_ca, const char *cert_pem,
                    const char *key_pem, json_t **out, char *msg, size_t msg_size)
{
    char full[2048], curl_err[CURL_ERROR_SIZE] = "";
    struct ds_buf resp;
    struct curl_slist *hdrs = NULL;
    long status = 0;
    int r = -DS_E_NETWORK;
    ds_buf_init(&resp, KMS_RESPONSE_MAX);
    size_t ulen = strlen(url);
    while (ulen > 0 && url[ulen - 1] == '/') {
        ulen--;
    }
    int n = snprintf(full, sizeof(full), "%.*s/KMS.SignCert?json", (int)ulen, url);
    CURL *h = curl_easy_init();
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    struct curl_blob ca = {.data = (void *)root_ca, .len = strlen(root_ca), .flags = 0};
    struct curl_blob crt = {.data = (void *)cert_pem, .len = strlen(cert_pem), .flags = 0};
    struct curl_blob key = {.data = (void *)key_pem, .len = strlen(key_pem), .flags = 0};
    if (n < 0 || (size_t)n >= sizeof(full) || !h || !hdrs ||
        curl_easy_setopt(h, CURLOPT_URL, full) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)KMS_CONNECT_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)KMS_TIMEOUT_MS) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_POSTFIELDS, body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)strlen(body)) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err) != CURLE_OK ||
        /* Only the app's root CA: no system trust store (§6.5). */
        curl_easy_setopt(h, CURLOPT_CAINFO, NULL) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &ca) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &crt) != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM") != CURLE_OK ||
        curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &key) != CURLE_OK) {
        snprintf(msg, msg_size, "SignCert: cannot set up the HTTPS request");
        r = -ENOMEM;
        goto out;
    }
    CURLcode cr = curl_easy_perform(h);
    if (cr != CURLE_OK) {
        snprintf(msg, msg_size, "SignCert: %s: %s", full,
                 curl_err[0] ? curl_err : curl_easy_strerror(cr));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    json_t *j = json_loadb((const char *)resp.data, resp.len, 0, NULL);
    if (status != 200) {
        const char *e = json_string_value(json_object_get(j, "error"));
        snprintf(msg, msg_size, "SignCert: %s", e ? e : "HTTP error");
        json_decref(j);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    if (!json_is_object(j)) {
        snprintf(msg, msg_size, "SignCert: the KMS answered no JSON object");
        json_decref(j);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    *out = j;
    r = 0;
out:
    curl_slist_free_all(hdrs);
    if (h) {
        curl_easy_cleanup(h);
    }
    ds_buf_done(&resp);
    return r;
}

int agent_kms_sign_cert(struct agent *a, void *key_ptr, const struct agent_cert_opts *o,
                        json_t **out_chain, char *msg, size_t msg_size)
{
    EVP_PKEY *key = key_ptr;
    const char *url = NULL, *tmp_ca_cert = NULL, *root_ca = NULL;
    uint8_t tmp_ca[32];
    uint8_t *csr = NULL, *sig = NULL;
    size_t csr_len = 0, sig_len = 0;
    char *cert_pem = NULL, *key_pem = NULL, *csr_hex = NULL, *sig_hex = NULL, *body = NULL;
    json_t *req = NULL, *reply = NULL;
    int r = agent_keys_kms(a, &url, tmp_ca, &tmp_ca_cert, &root_ca);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to load the KMS settings: %s", ds_strerror(r));
        goto out;
    }
    r = build_csr(a, key, o, &csr, &csr_len, &sig, &sig_len, msg, msg_size);
    if (r < 0) {
        goto out;
    }
    r = client_identity(tmp_ca, tmp_ca_cert, &cert_pem, &key_pem);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to build the KMS client certificate: %s", ds_strerror(r));
        goto out;
    }
    csr_hex = ds_hex_strdup(csr, csr_len);
    sig_hex = ds_hex_strdup(sig, sig_len);
    req = csr_hex && sig_hex
              ? json_pack("{s:i,s:s,s:s,s:s}", "api_version", KMS_CSR_API_VERSION, "csr", csr_hex,
                          "signature", sig_hex, "vm_config", a->vm_config ? a->vm_config : "")
              : NULL;
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    r = -ENOMEM;
    if (!body) {
        goto out;
    }
    r = kms_post(url, body, root_ca, cert_pem, key_pem, &reply, msg, msg_size);
    if (r < 0) {
        goto out;
    }
    json_t *chain = json_object_get(reply, "certificate_chain");
    size_t i;
    json_t *v;
    bool ok = json_is_array(chain) && json_array_size(chain) >= 1;
    json_array_foreach(chain, i, v)
    {
        ok = ok && json_is_string(v);
    }
    if (!ok) {
        snprintf(msg, msg_size, "SignCert: the KMS answered no certificate chain");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    *out_chain = json_incref(chain);
    log_debug("KMS %s signed a certificate (%zu in chain)", url, json_array_size(chain));
    r = 0;
out:
    ds_wipe(tmp_ca, sizeof(tmp_ca));
    free(csr);
    free(sig);
    free(cert_pem);
    if (key_pem) {
        ds_wipe(key_pem, strlen(key_pem));
        free(key_pem);
    }
    free(csr_hex);
    free(sig_hex);
    free(body);
    json_decref(req);
    json_decref(reply);
    return r;
}
