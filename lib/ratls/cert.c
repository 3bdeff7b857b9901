/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The attester side of RA-TLS (spec kms-ratls.md §6.1-6.3, guest-agent-api.md §4.6): P-256
 * keys, the report_data binding SHA-512("ratls-cert:" || SPKI DER), the stripped attestation
 * extension for a key, and certificates in the profile upstream's rcgen produces (serial from
 * the public key hash, critical KeyUsage, EKU only when asked, IP-or-DNS SANs, the dstack
 * private extensions with their payload wrapped in a DER OCTET STRING).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "attest/eventlog_priv.h"
#include "dstack/crypto.h"
#include "dstack/ratls.h"

#define P256_GROUP      "prime256v1"
#define P256_POINT_SIZE 65
#define SERIAL_SIZE     20
#define SECONDS_PER_DAY 86400
#define OID_TEXT_MAX    48
#define PEM_MAX         (64 * 1024)
#define NAME_MAX_LEN    4096

/* ---- keys ----------------------------------------------------------------------------------- */

int ds_ratls_key_generate(EVP_PKEY **out)
{
    EVP_PKEY *k = EVP_EC_gen(P256_GROUP);
    if (!k) {
        return -DS_E_CRYPTO;
    }
    *out = k;
    return 0;
}

int ds_ratls_key_from_scalar(const uint8_t scalar[32], EVP_PKEY **out)
{
    uint8_t point[P256_POINT_SIZE];
    OSSL_PARAM_BLD *bld = NULL;
    OSSL_PARAM *params = NULL;
    EVP_PKEY_CTX *ctx = NULL;
    EVP_PKEY *k = NULL;
    BIGNUM *d = NULL;
    int r;

    point[0] = 0x04;
    r = ds_ec_public_from_private(DS_EC_P256, scalar, point + 1);
    if (r < 0) {
        return -DS_E_FORMAT;
    }
    r = -DS_E_CRYPTO;
    d = BN_secure_new();
    bld = OSSL_PARAM_BLD_new();
    if (!d || !bld || !BN_bin2bn(scalar, 32, d) ||
        !OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME, P256_GROUP, 0) ||
        !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_PRIV_KEY, d) ||
        !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, point, sizeof(point))) {
        goto out;
    }
    params = OSSL_PARAM_BLD_to_param(bld);
    ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!params || !ctx || EVP_PKEY_fromdata_init(ctx) <= 0 ||
        EVP_PKEY_fromdata(ctx, &k, EVP_PKEY_KEYPAIR, params) <= 0) {
        goto out;
    }
    *out = k;
    k = NULL;
    r = 0;
out:
    EVP_PKEY_free(k);
    EVP_PKEY_CTX_free(ctx);
    OSSL_PARAM_free(params);
    OSSL_PARAM_BLD_free(bld);
    BN_clear_free(d);
    return r;
}

static bool is_p256(EVP_PKEY *k)
{
    char group[32];
    size_t glen = 0;
    if (!EVP_PKEY_is_a(k, "EC")) {
        return false;
    }
    if (!EVP_PKEY_get_utf8_string_param(k, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                        &glen)) {
        return false;
    }
    return strcmp(group, P256_GROUP) == 0;
}

int ds_ratls_key_from_spki(const uint8_t *der, size_t len, EVP_PKEY **out)
{
    const unsigned char *p = der;
    if (!der || len == 0 || len > DS_CSR_MAX_PUBKEY) {
        return -DS_E_FORMAT;
    }
    EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);
    if (!k) {
        return -DS_E_FORMAT;
    }
    if (p != der + len || !is_p256(k)) {
        EVP_PKEY_free(k);
        return -DS_E_FORMAT;
    }
    *out = k;
    return 0;
}

int ds_ratls_spki_der(EVP_PKEY *key, uint8_t **out, size_t *out_len)
{
    unsigned char *der = NULL;
    if (!key) {
        return -EINVAL;
    }
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0) {
        return -DS_E_CRYPTO;
    }
    uint8_t *copy = malloc((size_t)n);
    if (!copy) {
        OPENSSL_free(der);
        return -ENOMEM;
    }
    memcpy(copy, der, (size_t)n);
    OPENSSL_free(der);
    *out = copy;
    *out_len = (size_t)n;
    return 0;
}

int ds_ratls_report_data(EVP_PKEY *key, uint8_t out[DS_REPORT_DATA_SIZE])
{
    uint8_t *spki = NULL;
    size_t n = 0;
    DS_TRY(ds_ratls_spki_der(key, &spki, &n));
    int r = ds_report_data_build(DS_REPORT_HASH_SHA512, DS_REPORT_TAG_RATLS_CERT, spki, n, out);
    free(spki);
    return r;
}

static int bio_to_string(BIO *bio, char **out)
{
    char *data = NULL;
    long n = BIO_get_mem_data(bio, &data);
    if (n <= 0 || n > PEM_MAX) {
        return -DS_E_CRYPTO;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        return -ENOMEM;
    }
    memcpy(s, data, (size_t)n);
    s[n] = 0;
    *out = s;
    return 0;
}

int ds_ratls_key_pem(EVP_PKEY *key, char **out)
{
    BIO *bio = BIO_new(BIO_s_secmem());
    int r = -DS_E_CRYPTO;
    if (!bio) {
        return -ENOMEM;
    }
    if (PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1) {
        r = bio_to_string(bio, out);
    }
    BIO_free(bio); /* secure memory BIO: cleansed on free */
    return r;
}

int ds_ratls_cert_pem(X509 *cert, char **out)
{
    BIO *bio = BIO_new(BIO_s_mem());
    int r = -DS_E_CRYPTO;
    if (!bio) {
        return -ENOMEM;
    }
    if (PEM_write_bio_X509(bio, cert) == 1) {
        r = bio_to_string(bio, out);
    }
    BIO_free(bio);
    return r;
}

int ds_ratls_cert_der(X509 *cert, uint8_t **out, size_t *out_len)
{
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der);
    if (n <= 0) {
        return -DS_E_CRYPTO;
    }
    uint8_t *copy = malloc((size_t)n);
    if (!copy) {
        OPENSSL_free(der);
        return -ENOMEM;
    }
    memcpy(copy, der, (size_t)n);
    OPENSSL_free(der);
    *out = copy;
    *out_len = (size_t)n;
    return 0;
}

/* ---- the attestation extension for a key ------------------------------------------------------
 */

int ds_ratls_attestation_for_key(EVP_PKEY *key, const uint8_t *quote, size_t quote_len,
                                 const struct ds_event_log *event_log,
                                 const struct ds_event_log *runtime_events, const char *config,
                                 uint8_t **out, size_t *out_len)
{
    uint8_t rd[DS_REPORT_DATA_SIZE];
    struct ds_quote q;
    struct ds_attestation *full = NULL, *stripped = NULL;
    int r;

    if (!key || !quote || !out || !out_len) {
        return -EINVAL;
    }
    DS_TRY(ds_ratls_report_data(key, rd));
    DS_TRY(ds_quote_parse(quote, quote_len, &q));
    if (!ds_ct_equal(ds_quote_report_data(&q), rd, sizeof(rd))) {
        return -DS_E_MISMATCH; /* the quote was made for another key */
    }
    r = ds_attestation_new_tdx(quote, quote_len, event_log, runtime_events, rd, config, &full);
    if (r == 0) {
        r = ds_attestation_strip(full, &stripped);
    }
    if (r == 0) {
        r = ds_attestation_encode(stripped, DS_ATT_WIRE_AUTO, out, out_len);
    }
    ds_attestation_free(full);
    ds_attestation_free(stripped);
    return r;
}

/* ---- certificate building -----------------------------------------------------------------------
 */

/* rcgen's default serial: SHA-256 of the public key bytes (the EC point), 20 bytes, MSB 0. */
static int set_serial(X509 *x, EVP_PKEY *key)
{
    unsigned char *point = NULL;
    uint8_t h[DS_SHA256_LEN];
    BIGNUM *bn = NULL;
    int r = -DS_E_CRYPTO;

    size_t n = EVP_PKEY_get1_encoded_public_key(key, &point);
    if (n == 0) {
        return -DS_E_CRYPTO;
    }
    ds_sha256(point, n, h);
    OPENSSL_free(point);
    h[0] &= 0x7f;
    bn = BN_bin2bn(h, SERIAL_SIZE, NULL);
    if (bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x))) {
        r = 0;
    }
    BN_free(bn);
    return r;
}

/* UTF8String entries set directly (not through OpenSSL's string table, whose size bounds
 * refuse the empty CN the SDKs' default subject "" needs). */
static int add_name_entry(X509_NAME *name, const char *field, const char *value)
{
    size_t n = strlen(value);
    if (n > NAME_MAX_LEN || !ds_evl_utf8_valid(value, n)) {
        return -EINVAL;
    }
    if (!X509_NAME_add_entry_by_txt(name, field, V_ASN1_UTF8STRING, (const unsigned char *)value,
                                    (int)n, -1, 0)) {
        return -DS_E_CRYPTO;
    }
    return 0;
}

static int set_subject(X509 *x, const struct ds_ratls_cert_req *req)
{
    X509_NAME *name = X509_get_subject_name(x);
    if (req->org) {
        DS_TRY(add_name_entry(name, "O", req->org));
    }
    return add_name_entry(name, "CN", req->subject ? req->subject : "");
}

static int add_conf_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ext) {
        return -DS_E_CRYPTO;
    }
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -DS_E_CRYPTO;
}

static int add_sans(X509 *x, const struct ds_ratls_cert_req *req)
{
    GENERAL_NAMES *gens = sk_GENERAL_NAME_new_null();
    int r = -DS_E_CRYPTO;
    if (!gens) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < req->alt_name_count; i++) {
        const char *an = req->alt_names[i];
        GENERAL_NAME *gen = NULL;
        ASN1_OCTET_STRING *ip = an ? a2i_IPADDRESS(an) : NULL;
        if (!an) {
            r = -EINVAL;
            goto out;
        }
        if (ip) {
            gen = GENERAL_NAME_new();
            if (!gen) {
                ASN1_OCTET_STRING_free(ip);
                goto out;
            }
            GENERAL_NAME_set0_value(gen, GEN_IPADD, ip);
        } else {
            ASN1_IA5STRING *dns = ASN1_IA5STRING_new();
            if (!dns || !ASN1_STRING_set(dns, an, (int)strlen(an))) {
                ASN1_IA5STRING_free(dns);
                goto out;
            }
            gen = GENERAL_NAME_new();
            if (!gen) {
                ASN1_IA5STRING_free(dns);
                goto out;
            }
            GENERAL_NAME_set0_value(gen, GEN_DNS, dns);
        }
        if (!sk_GENERAL_NAME_push(gens, gen)) {
            GENERAL_NAME_free(gen);
            goto out;
        }
    }
    r = X509_add1_ext_i2d(x, NID_subject_alt_name, gens, 0, X509V3_ADD_DEFAULT) == 1 ? 0
                                                                                     : -DS_E_CRYPTO;
out:
    GENERAL_NAMES_free(gens);
    return r;
}

/* A dstack private extension: extnValue = DER OCTET STRING(payload) (double wrapping). */
static int add_private_ext(X509 *x, enum ds_ratls_ext which, const void *payload, size_t len)
{
    char oid_text[OID_TEXT_MAX];
    ASN1_OBJECT *obj = NULL;
    ASN1_OCTET_STRING *inner = NULL, *outer = NULL;
    X509_EXTENSION *ext = NULL;
    unsigned char *der = NULL;
    int der_len, r = -DS_E_CRYPTO;

    if (len > ds_ratls_ext_max(which)) {
        return -DS_E_LIMIT;
    }
    snprintf(oid_text, sizeof(oid_text), "%s.%d", DS_RATLS_OID_ARC, (int)which);
    obj = OBJ_txt2obj(oid_text, 1);
    inner = ASN1_OCTET_STRING_new();
    outer = ASN1_OCTET_STRING_new();
    if (!obj || !inner || !outer || !ASN1_OCTET_STRING_set(inner, payload, (int)len)) {
        goto out;
    }
    der_len = i2d_ASN1_OCTET_STRING(inner, &der);
    if (der_len <= 0 || !ASN1_OCTET_STRING_set(outer, der, der_len)) {
        goto out;
    }
    ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, outer);
    if (ext && X509_add_ext(x, ext, -1)) {
        r = 0;
    }
out:
    X509_EXTENSION_free(ext);
    OPENSSL_free(der);
    ASN1_OCTET_STRING_free(outer);
    ASN1_OCTET_STRING_free(inner);
    ASN1_OBJECT_free(obj);
    return r;
}

static int add_extensions(X509 *x, X509 *issuer, const struct ds_ratls_cert_req *req)
{
    X509V3_CTX ctx;
    char bc[64];

    X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
    if (req->ca) {
        snprintf(bc, sizeof(bc), "critical,CA:TRUE,pathlen:%d", req->ca_path_len);
        DS_TRY(add_conf_ext(x, &ctx, NID_basic_constraints, bc));
        DS_TRY(
            add_conf_ext(x, &ctx, NID_key_usage, "critical,digitalSignature,keyCertSign,cRLSign"));
    } else {
        DS_TRY(add_conf_ext(x, &ctx, NID_key_usage, "critical,digitalSignature"));
    }
    if (req->server_auth || req->client_auth) {
        const char *eku = req->server_auth && req->client_auth ? "serverAuth,clientAuth"
                          : req->server_auth                   ? "serverAuth"
                                                               : "clientAuth";
        DS_TRY(add_conf_ext(x, &ctx, NID_ext_key_usage, eku));
    }
    if (req->alt_name_count) {
        DS_TRY(add_sans(x, req));
    }
    DS_TRY(add_conf_ext(x, &ctx, NID_subject_key_identifier, "hash"));
    if (issuer && X509_get0_subject_key_id(issuer)) {
        DS_TRY(add_conf_ext(x, &ctx, NID_authority_key_identifier, "keyid"));
    }
    if (req->app_id) {
        DS_TRY(add_private_ext(x, DS_RATLS_EXT_APP_ID, req->app_id, req->app_id_len));
    }
    if (req->usage) {
        DS_TRY(add_private_ext(x, DS_RATLS_EXT_USAGE, req->usage, strlen(req->usage)));
    }
    if (req->attestation) {
        DS_TRY(
            add_private_ext(x, DS_RATLS_EXT_ATTESTATION, req->attestation, req->attestation_len));
    }
    if (req->app_info) {
        DS_TRY(add_private_ext(x, DS_RATLS_EXT_APP_INFO, req->app_info, req->app_info_len));
    }
    return 0;
}

static int check_req(const struct ds_ratls_cert_req *req, EVP_PKEY *subject_key,
                     EVP_PKEY *issuer_key, X509 *issuer_cert)
{
    if (!req || !subject_key || !issuer_key) {
        return -EINVAL;
    }
    if (req->alt_name_count > DS_RATLS_MAX_ALT_NAMES || (req->alt_name_count && !req->alt_names) ||
        (req->ca && req->ca_path_len < 0) || (req->app_id_len && !req->app_id) ||
        (req->attestation_len && !req->attestation) || (req->app_info_len && !req->app_info)) {
        return -EINVAL;
    }
    int64_t nb = req->has_not_before ? req->not_before : DS_RATLS_DEFAULT_NOT_BEFORE;
    int64_t na = req->has_not_after
                     ? req->not_after
                     : req->now + (int64_t)DS_RATLS_DEFAULT_VALIDITY_DAYS * SECONDS_PER_DAY;
    if (nb >= na) {
        return -EINVAL;
    }
    if (issuer_cert) {
        if (X509_check_private_key(issuer_cert, issuer_key) != 1) {
            ERR_clear_error();
            return -EINVAL;
        }
    } else if (EVP_PKEY_eq(subject_key, issuer_key) != 1) {
        return -EINVAL; /* self-signed: the subject key signs */
    }
    return 0;
}

int ds_ratls_cert_build(const struct ds_ratls_cert_req *req, EVP_PKEY *subject_key,
                        EVP_PKEY *issuer_key, X509 *issuer_cert, X509 **out)
{
    X509 *x = NULL;
    int r;

    r = check_req(req, subject_key, issuer_key, issuer_cert);
    if (r < 0) {
        return r;
    }
    int64_t nb = req->has_not_before ? req->not_before : DS_RATLS_DEFAULT_NOT_BEFORE;
    int64_t na = req->has_not_after
                     ? req->not_after
                     : req->now + (int64_t)DS_RATLS_DEFAULT_VALIDITY_DAYS * SECONDS_PER_DAY;
    r = -DS_E_CRYPTO;
    x = X509_new();
    if (!x || !X509_set_version(x, X509_VERSION_3) || !X509_set_pubkey(x, subject_key) ||
        !ASN1_TIME_set(X509_getm_notBefore(x), (time_t)nb) ||
        !ASN1_TIME_set(X509_getm_notAfter(x), (time_t)na)) {
        goto out;
    }
    r = set_serial(x, subject_key);
    if (r == 0) {
        r = set_subject(x, req);
    }
    if (r < 0) {
        goto out;
    }
    if (!X509_set_issuer_name(x, issuer_cert ? X509_get_subject_name(issuer_cert)
                                             : X509_get_subject_name(x))) {
        r = -DS_E_CRYPTO;
        goto out;
    }
    r = add_extensions(x, issuer_cert, req);
    if (r < 0) {
        goto out;
    }
    if (X509_sign(x, issuer_key, EVP_sha256()) <= 0) {
        r = -DS_E_CRYPTO;
        goto out;
    }
    *out = x;
    x = NULL;
    r = 0;
out:
    X509_free(x);
    ERR_clear_error();
    return r;
}
