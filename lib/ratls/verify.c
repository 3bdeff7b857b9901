/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verifier side of RA-TLS (spec kms-ratls.md §6.4): for a peer certificate, check its
 * validity window, take its attestation (.1.8, or the legacy .1.1 + .1.2 pair), require
 * report_data == SHA-512("ratls-cert:" || the certificate's SPKI DER) and hand the rest to
 * ds_attestation_verify (DCAP, RTMR replay, app identity). Entry points for a bare X509, DER
 * bytes, an X509_STORE_CTX (inside a verify callback) and an SSL after the handshake. This
 * proves the key<->evidence binding only; issuer claims need ordinary chain verification.
 */
#include <errno.h>
#include <string.h>

#include <openssl/err.h>

#include "attest/versioned_priv.h"
#include "dstack/ratls.h"

#define CERT_MAX_DER (DS_ATTESTATION_MAX_SIZE + 64 * 1024)

static int check_validity(X509 *cert, int64_t now, struct ds_attestation_result *res)
{
    int before = X509_cmp_time(X509_get0_notBefore(cert), &(time_t){(time_t)now});
    int after = X509_cmp_time(X509_get0_notAfter(cert), &(time_t){(time_t)now});
    /* X509_cmp_time: -1 when the field is earlier than now, 1 when later, 0 on error */
    if (before == 0 || after == 0) {
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_FORMAT,
                           "certificate has a malformed validity time");
    }
    if (before > 0) {
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_EXPIRED,
                           "certificate is not yet valid");
    }
    if (after < 0) {
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_EXPIRED, "certificate has expired");
    }
    return 0;
}

int ds_ratls_verify_cert(X509 *cert, const struct ds_attestation_verify_opts *opts,
                         struct ds_attestation_result *res)
{
    struct ds_attestation *a = NULL;
    struct ds_attestation_verify_opts o;
    uint8_t rd[DS_REPORT_DATA_SIZE];
    EVP_PKEY *pub;
    int r;

    if (!res) {
        return -EINVAL;
    }
    memset(res, 0, sizeof(*res));
    if (!cert || !opts || !opts->verifier) {
        return ds_att_fail(res, DS_ATT_STEP_NONE, -EINVAL, "missing certificate or verifier");
    }
    if (!opts->skip_cert_validity) {
        DS_TRY(check_validity(cert, opts->now, res));
    }
    pub = X509_get0_pubkey(cert);
    if (!pub) {
        ERR_clear_error();
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_FORMAT,
                           "certificate public key cannot be decoded");
    }
    r = ds_ratls_report_data(pub, rd);
    if (r < 0) {
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, r, "cannot encode the certificate SPKI");
    }
    r = ds_ratls_cert_get_attestation(cert, &a);
    if (r == -DS_E_NOT_FOUND) {
        return ds_att_fail(res, DS_ATT_STEP_NO_ATTESTATION, r,
                           "certificate carries no attestation extension");
    }
    if (r < 0) {
        return ds_att_fail(res, DS_ATT_STEP_DECODE, r, "attestation extension: %s", ds_strerror(r));
    }
    o = *opts;
    o.expected_report_data = rd; /* the binding is always to this certificate's key */
    r = ds_attestation_verify(a, &o, res);
    ds_attestation_free(a);
    return r;
}

int ds_ratls_verify_cert_der(const uint8_t *der, size_t len,
                             const struct ds_attestation_verify_opts *opts,
                             struct ds_attestation_result *res)
{
    const unsigned char *p = der;
    X509 *cert;
    int r;

    if (!res) {
        return -EINVAL;
    }
    memset(res, 0, sizeof(*res));
    if (!der || len == 0 || len > CERT_MAX_DER) {
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, len ? -DS_E_LIMIT : -EINVAL,
                           "certificate size out of range");
    }
    cert = d2i_X509(NULL, &p, (long)len);
    if (!cert || p != der + len) {
        X509_free(cert);
        ERR_clear_error();
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_FORMAT,
                           "certificate is not one DER X.509 structure");
    }
    r = ds_ratls_verify_cert(cert, opts, res);
    X509_free(cert);
    return r;
}

int ds_ratls_verify_store_ctx(X509_STORE_CTX *ctx, const struct ds_attestation_verify_opts *opts,
                              struct ds_attestation_result *res)
{
    if (!res) {
        return -EINVAL;
    }
    X509 *leaf = ctx ? X509_STORE_CTX_get0_cert(ctx) : NULL;
    if (!leaf) {
        memset(res, 0, sizeof(*res));
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_NOT_FOUND,
                           "no certificate in the verification context");
    }
    return ds_ratls_verify_cert(leaf, opts, res);
}

int ds_ratls_verify_peer(SSL *ssl, const struct ds_attestation_verify_opts *opts,
                         struct ds_attestation_result *res)
{
    if (!res) {
        return -EINVAL;
    }
    X509 *peer = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    if (!peer) {
        memset(res, 0, sizeof(*res));
        return ds_att_fail(res, DS_ATT_STEP_CERTIFICATE, -DS_E_NOT_FOUND,
                           "the peer presented no certificate");
    }
    return ds_ratls_verify_cert(peer, opts, res);
}
