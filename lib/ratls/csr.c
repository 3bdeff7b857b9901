/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KMS certificate signing request (spec kms-ratls.md §6.6): CertSigningRequestV2 in SCALE
 *   confirm String ("please sign cert:"), pubkey Vec<u8> (SPKI DER), config CertConfigV2
 *   {org_name Option<String>, subject String, subject_alt_names Vec<String>,
 *    usage_server_auth bool, usage_client_auth bool, ext_quote bool, ext_app_info bool,
 *    not_before Option<u64>, not_after Option<u64>},
 *   attestation = the remaining bytes (a VersionedAttestation, no length prefix),
 * the legacy V1 form (upgraded on decode), and the SignCertRequest signature: DER
 * ECDSA-P256-SHA256 by the CSR key over the entire encoding.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>

#include "attest/versioned_priv.h"
#include "dstack/ratls.h"

#define OPTION_NONE      0
#define OPTION_SOME      1
#define SIG_MAX_DER      256
#define CSR_MAX_JSON_LOG DS_ATTESTATION_MAX_SIZE

void ds_csr_done(struct ds_csr *csr)
{
    if (!csr) {
        return;
    }
    free(csr->confirm);
    free(csr->pubkey);
    free(csr->config.org_name);
    free(csr->config.subject);
    for (size_t i = 0; i < csr->config.alt_name_count; i++) {
        free(csr->config.alt_names[i]);
    }
    free(csr->config.alt_names);
    free(csr->attestation);
    memset(csr, 0, sizeof(*csr));
}

/* ---- encoding ------------------------------------------------------------------------------- */

static int put_string(struct ds_buf *b, const char *s)
{
    return ds_scale_put_bytes(b, s, strlen(s));
}

static int put_opt_u64(struct ds_buf *b, bool has, uint64_t v)
{
    DS_TRY(ds_buf_u8(b, has ? OPTION_SOME : OPTION_NONE));
    return has ? ds_buf_u64le(b, v) : 0;
}

static int encode_v2(const struct ds_csr *csr, struct ds_buf *b)
{
    const struct ds_cert_config *c = &csr->config;
    DS_TRY(put_string(b, csr->confirm ? csr->confirm : DS_CSR_CONFIRM));
    DS_TRY(ds_scale_put_bytes(b, csr->pubkey, csr->pubkey_len));
    if (c->org_name) {
        DS_TRY(ds_buf_u8(b, OPTION_SOME));
        DS_TRY(put_string(b, c->org_name));
    } else {
        DS_TRY(ds_buf_u8(b, OPTION_NONE));
    }
    DS_TRY(put_string(b, c->subject ? c->subject : ""));
    DS_TRY(ds_scale_put_compact(b, c->alt_name_count));
    for (size_t i = 0; i < c->alt_name_count; i++) {
        if (!c->alt_names[i]) {
            return -EINVAL;
        }
        DS_TRY(put_string(b, c->alt_names[i]));
    }
    DS_TRY(ds_buf_u8(b, c->usage_server_auth));
    DS_TRY(ds_buf_u8(b, c->usage_client_auth));
    DS_TRY(ds_buf_u8(b, c->ext_quote));
    DS_TRY(ds_buf_u8(b, c->ext_app_info));
    DS_TRY(put_opt_u64(b, c->has_not_before, c->not_before));
    DS_TRY(put_opt_u64(b, c->has_not_after, c->not_after));
    return ds_buf_append(b, csr->attestation, csr->attestation_len);
}

int ds_csr_encode(const struct ds_csr *csr, uint8_t **out, size_t *out_len)
{
    struct ds_buf b;
    if (!csr || !out || !out_len || (csr->pubkey_len && !csr->pubkey) ||
        (csr->attestation_len && !csr->attestation) ||
        (csr->config.alt_name_count && !csr->config.alt_names)) {
        return -EINVAL;
    }
    ds_buf_init(&b, DS_CSR_MAX_SIZE);
    int r = encode_v2(csr, &b);
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    ds_buf_steal(&b, out, out_len);
    return 0;
}

/* ---- decoding ------------------------------------------------------------------------------- */

static int get_bool(struct ds_reader *r, bool *out)
{
    uint8_t v;
    DS_TRY(ds_rd_u8(r, &v));
    if (v > 1) {
        return -DS_E_FORMAT;
    }
    *out = v == 1;
    return 0;
}

static int get_option_tag(struct ds_reader *r, bool *out)
{
    return get_bool(r, out); /* Option: 0x00 None, 0x01 Some */
}

static int get_opt_u64(struct ds_reader *r, bool *has, uint64_t *v)
{
    DS_TRY(get_option_tag(r, has));
    if (*has) {
        DS_TRY(ds_rd_u64le(r, v));
    }
    return 0;
}

static int dup_bytes(const uint8_t *p, size_t n, uint8_t **out)
{
    *out = NULL;
    if (n == 0) {
        return 0;
    }
    *out = malloc(n);
    if (!*out) {
        return -ENOMEM;
    }
    memcpy(*out, p, n);
    return 0;
}

/* Fields common to V1 and V2 up to and including ext_quote. */
static int decode_head(struct ds_reader *r, struct ds_csr *csr)
{
    struct ds_cert_config *c = &csr->config;
    const uint8_t *p;
    size_t n;
    bool has_org;

    DS_TRY(ds_scale_get_string(r, DS_CSR_MAX_STRING, &csr->confirm));
    DS_TRY(ds_scale_get_bytes(r, DS_CSR_MAX_PUBKEY, &p, &n));
    DS_TRY(dup_bytes(p, n, &csr->pubkey));
    csr->pubkey_len = n;
    DS_TRY(get_option_tag(r, &has_org));
    if (has_org) {
        DS_TRY(ds_scale_get_string(r, DS_CSR_MAX_STRING, &c->org_name));
    }
    DS_TRY(ds_scale_get_string(r, DS_CSR_MAX_STRING, &c->subject));
    DS_TRY(ds_scale_get_len(r, DS_RATLS_MAX_ALT_NAMES, &n));
    if (n) {
        c->alt_names = calloc(n, sizeof(*c->alt_names));
        if (!c->alt_names) {
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        DS_TRY(ds_scale_get_string(r, DS_CSR_MAX_STRING, &c->alt_names[i]));
        c->alt_name_count = i + 1;
    }
    DS_TRY(get_bool(r, &c->usage_server_auth));
    DS_TRY(get_bool(r, &c->usage_client_auth));
    DS_TRY(get_bool(r, &c->ext_quote));
    return 0;
}

static int decode_v2(struct ds_reader *r, struct ds_csr *csr)
{
    struct ds_cert_config *c = &csr->config;
    DS_TRY(decode_head(r, csr));
    DS_TRY(get_bool(r, &c->ext_app_info));
    DS_TRY(get_opt_u64(r, &c->has_not_before, &c->not_before));
    DS_TRY(get_opt_u64(r, &c->has_not_after, &c->not_after));
    size_t n = ds_rd_left(r);
    if (n > DS_ATTESTATION_MAX_SIZE) {
        return -DS_E_LIMIT;
    }
    DS_TRY(dup_bytes(r->data + r->off, n, &csr->attestation));
    csr->attestation_len = n;
    r->off += n;
    return 0;
}

int ds_csr_decode(const uint8_t *data, size_t len, struct ds_csr *out)
{
    struct ds_csr csr;
    struct ds_reader r;

    if (!data || !out) {
        return -EINVAL;
    }
    if (len > DS_CSR_MAX_SIZE) {
        return -DS_E_LIMIT;
    }
    memset(&csr, 0, sizeof(csr));
    ds_rd_init(&r, data, len);
    int rc = decode_v2(&r, &csr);
    if (rc < 0) {
        ds_csr_done(&csr);
        return rc;
    }
    *out = csr;
    return 0;
}

static int decode_v1(struct ds_reader *r, struct ds_csr *csr)
{
    const uint8_t *quote, *log;
    size_t quote_len, log_len;
    struct ds_attestation *a = NULL;

    DS_TRY(decode_head(r, csr));
    DS_TRY(ds_scale_get_bytes(r, DS_QUOTE_MAX_SIZE, &quote, &quote_len));
    DS_TRY(ds_scale_get_bytes(r, CSR_MAX_JSON_LOG, &log, &log_len));
    if (ds_rd_left(r) != 0) {
        return -DS_E_FORMAT;
    }
    if (quote_len == 0) {
        return 0; /* no attestation */
    }
    DS_TRY(ds_attestation_from_legacy(quote, quote_len, (const char *)log, log_len, &a));
    int rc = ds_attestation_encode(a, DS_ATT_WIRE_V0, &csr->attestation, &csr->attestation_len);
    ds_attestation_free(a);
    return rc;
}

int ds_csr_decode_v1(const uint8_t *data, size_t len, struct ds_csr *out)
{
    struct ds_csr csr;
    struct ds_reader r;

    if (!data || !out) {
        return -EINVAL;
    }
    if (len > DS_CSR_MAX_SIZE) {
        return -DS_E_LIMIT;
    }
    memset(&csr, 0, sizeof(csr));
    ds_rd_init(&r, data, len);
    int rc = decode_v1(&r, &csr);
    if (rc < 0) {
        ds_csr_done(&csr);
        return rc;
    }
    *out = csr;
    return 0;
}

/* ---- signature ------------------------------------------------------------------------------ */

int ds_csr_sign(EVP_PKEY *key, const uint8_t *encoded, size_t len, uint8_t **out, size_t *out_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t *sig = NULL;
    size_t sig_len = 0;
    int r = -DS_E_CRYPTO;

    if (!md) {
        return -ENOMEM;
    }
    if (!key || !encoded || !out || !out_len) {
        r = -EINVAL;
        goto out;
    }
    if (EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, key) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, encoded, len) != 1) {
        goto out;
    }
    sig = malloc(sig_len);
    if (!sig) {
        r = -ENOMEM;
        goto out;
    }
    if (EVP_DigestSign(md, sig, &sig_len, encoded, len) != 1) {
        goto out;
    }
    *out = sig;
    *out_len = sig_len;
    sig = NULL;
    r = 0;
out:
    free(sig);
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return r;
}

static int verify_sig(EVP_PKEY *key, const uint8_t *msg, size_t len, const uint8_t *sig,
                      size_t sig_len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int r = -DS_E_SIGNATURE;
    if (!md) {
        return -ENOMEM;
    }
    if (EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
        EVP_DigestVerify(md, sig, sig_len, msg, len) == 1) {
        r = 0;
    }
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return r;
}

int ds_csr_verify(uint32_t api_version, const uint8_t *encoded, size_t len, const uint8_t *sig,
                  size_t sig_len, struct ds_csr *out)
{
    struct ds_csr csr;
    EVP_PKEY *key = NULL;
    int r;

    if (!encoded || !out || (!sig && sig_len)) {
        return -EINVAL;
    }
    if (api_version == 2) {
        r = ds_csr_decode(encoded, len, &csr);
    } else if (api_version == 1) {
        r = ds_csr_decode_v1(encoded, len, &csr);
    } else {
        return -DS_E_UNSUPPORTED;
    }
    if (r < 0) {
        return r;
    }
    r = ds_ratls_key_from_spki(csr.pubkey, csr.pubkey_len, &key);
    if (r < 0) {
        goto out;
    }
    if (sig_len == 0 || sig_len > SIG_MAX_DER) {
        r = -DS_E_SIGNATURE;
        goto out;
    }
    r = verify_sig(key, encoded, len, sig, sig_len);
    if (r < 0) {
        goto out;
    }
    if (strcmp(csr.confirm, DS_CSR_CONFIRM) != 0) {
        r = -DS_E_MISMATCH;
        goto out;
    }
    *out = csr;
    memset(&csr, 0, sizeof(csr));
    r = 0;
out:
    EVP_PKEY_free(key);
    ds_csr_done(&csr);
    return r;
}
