/* SPDX-License-Identifier: Apache-2.0 */
/*
 * X.509 side of DCAP verification with OpenSSL (spec: ../shared/spec/attestation.md §2.3,
 * §2.4): strict PEM chain and DER CRL decoding, the explicit check of the trust anchor
 * against the root CA CRL (OpenSSL does not treat the anchor like webpki does), chain
 * verification with CRLs for every certificate at a given time, the leaf checks webpki makes
 * (not a CA, serverAuth when an EKU is present), and the walk over the Intel SGX PCK
 * extension with OpenSSL's ASN.1 decoders (SEQUENCE OF SEQUENCE {OID, value}).
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include "attest/verify_internal.h"

/* The Intel SGX PCK extension and its members (§2.4). */
#define SGX_EXT_OID         "1.2.840.113741.1.13.1"
#define SGX_OID_PPID        SGX_EXT_OID ".1"
#define SGX_OID_TCB         SGX_EXT_OID ".2"
#define SGX_OID_PCESVN      SGX_EXT_OID ".2.17"
#define SGX_OID_CPUSVN      SGX_EXT_OID ".2.18"
#define SGX_OID_PCEID       SGX_EXT_OID ".3"
#define SGX_OID_FMSPC       SGX_EXT_OID ".4"
#define SGX_OID_SGX_TYPE    SGX_EXT_OID ".5"
#define OID_TEXT_MAX        64
#define SGX_EXT_MAX_ENTRIES 64

static void set_msg(char *msg, size_t msg_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msg_size, const char *fmt, ...)
{
    va_list ap;
    if (!msg || msg_size == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, msg_size, fmt, ap);
    va_end(ap);
}

/* ---- times ----------------------------------------------------------------------------------- */

int ds_attest_asn1_time(const ASN1_TIME *t, int64_t *out)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1) {
        return -DS_E_FORMAT;
    }
    *out = ds_attest_unix_from_civil((int64_t)tm.tm_year + 1900, (unsigned)tm.tm_mon + 1,
                                     (unsigned)tm.tm_mday, (unsigned)tm.tm_hour,
                                     (unsigned)tm.tm_min, (unsigned)tm.tm_sec);
    return 0;
}

/*
 * Narrow w by [not_before, not_after) the way OpenSSL compares (X509_cmp_time is "<=": a
 * certificate or CRL is expired at the very second of notAfter / nextUpdate).
 */
static int narrow_asn1(struct ds_attest_window *w, const ASN1_TIME *nb, const ASN1_TIME *na)
{
    int64_t lo, hi;
    DS_TRY(ds_attest_asn1_time(nb, &lo));
    DS_TRY(ds_attest_asn1_time(na, &hi));
    ds_attest_window_narrow(w, lo, hi - 1);
    return 0;
}

/* ---- decoding -------------------------------------------------------------------------------- */

int ds_attest_pem_chain(const char *pem, size_t len, STACK_OF(X509) * *out)
{
    BIO *bio = NULL;
    STACK_OF(X509) *sk = NULL;
    int r = 0;

    if (!pem) {
        return -DS_E_NOT_FOUND;
    }
    /* Real quotes end the PEM text with a NUL byte (§1.5). */
    while (len > 0 && (pem[len - 1] == '\0' || isspace((unsigned char)pem[len - 1]))) {
        len--;
    }
    if (len == 0) {
        return -DS_E_NOT_FOUND;
    }
    if (len > DS_ATTEST_MAX_CHAIN_PEM) {
        return -DS_E_LIMIT;
    }
    if (memchr(pem, '\0', len)) {
        return -DS_E_FORMAT;
    }
    bio = BIO_new_mem_buf(pem, (int)len);
    sk = sk_X509_new_null();
    if (!bio || !sk) {
        r = -ENOMEM;
        goto out;
    }
    for (;;) {
        char *name = NULL, *header = NULL;
        unsigned char *data = NULL;
        long dlen = 0;
        X509 *x = NULL;
        if (PEM_read_bio(bio, &name, &header, &data, &dlen) != 1) {
            unsigned long e = ERR_peek_last_error();
            if (ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE) {
                break; /* no further block */
            }
            r = -DS_E_FORMAT;
            goto out;
        }
        if (strcmp(name, "CERTIFICATE") == 0 && header[0] == '\0' && dlen > 0) {
            const unsigned char *p = data;
            x = d2i_X509(NULL, &p, dlen);
            if (x && p != data + dlen) {
                X509_free(x);
                x = NULL;
            }
        }
        OPENSSL_free(name);
        OPENSSL_free(header);
        OPENSSL_free(data);
        if (!x) {
            r = -DS_E_FORMAT;
            goto out;
        }
        if (sk_X509_num(sk) >= DS_ATTEST_MAX_CHAIN_CERTS || !sk_X509_push(sk, x)) {
            X509_free(x);
            r = sk_X509_num(sk) >= DS_ATTEST_MAX_CHAIN_CERTS ? -DS_E_LIMIT : -ENOMEM;
            goto out;
        }
    }
    if (sk_X509_num(sk) == 0) {
        r = -DS_E_NOT_FOUND;
        goto out;
    }
    *out = sk;
    sk = NULL;
out:
    sk_X509_pop_free(sk, X509_free);
    BIO_free(bio);
    return r;
}

int ds_attest_crl_der(const uint8_t *der, size_t len, X509_CRL **out)
{
    const unsigned char *p = der;
    X509_CRL *crl;
    if (!der || len == 0) {
        return -DS_E_NOT_FOUND;
    }
    if (len > DS_ATTEST_MAX_CRL) {
        return -DS_E_LIMIT;
    }
    crl = d2i_X509_CRL(NULL, &p, (long)len);
    if (!crl) {
        return -DS_E_FORMAT;
    }
    if (p != der + len) {
        X509_CRL_free(crl);
        return -DS_E_FORMAT;
    }
    *out = crl;
    return 0;
}

/* ---- anchor and chains ----------------------------------------------------------------------- */

int ds_attest_check_root(X509 *root, X509_CRL *crl, int64_t now, struct ds_attest_window *w,
                         char *msg, size_t msg_size)
{
    int64_t nb, na, tu, nu;
    X509_REVOKED *rev = NULL;
    EVP_PKEY *pk;

    if (ds_attest_asn1_time(X509_get0_notBefore(root), &nb) < 0 ||
        ds_attest_asn1_time(X509_get0_notAfter(root), &na) < 0) {
        set_msg(msg, msg_size, "trusted root CA has malformed validity dates");
        return -DS_E_CERT;
    }
    if (now < nb || now >= na) {
        set_msg(msg, msg_size, "trusted root CA is not valid at this time");
        return -DS_E_EXPIRED;
    }
    if (X509_NAME_cmp(X509_CRL_get_issuer(crl), X509_get_subject_name(root)) != 0) {
        set_msg(msg, msg_size, "root_ca_crl is not issued by the trusted root CA");
        return -DS_E_CERT;
    }
    pk = X509_get0_pubkey(root);
    if (!pk || X509_CRL_verify(crl, pk) != 1) {
        set_msg(msg, msg_size, "root_ca_crl signature is invalid");
        return -DS_E_SIGNATURE;
    }
    if (!X509_CRL_get0_nextUpdate(crl)) {
        set_msg(msg, msg_size, "root_ca_crl has no nextUpdate");
        return -DS_E_CERT;
    }
    if (ds_attest_asn1_time(X509_CRL_get0_lastUpdate(crl), &tu) < 0 ||
        ds_attest_asn1_time(X509_CRL_get0_nextUpdate(crl), &nu) < 0) {
        set_msg(msg, msg_size, "root_ca_crl has malformed dates");
        return -DS_E_CERT;
    }
    if (now < tu) {
        set_msg(msg, msg_size, "root_ca_crl is not yet valid");
        return -DS_E_EXPIRED;
    }
    if (now >= nu) {
        set_msg(msg, msg_size, "root_ca_crl has expired");
        return -DS_E_EXPIRED;
    }
    if (X509_CRL_get0_by_serial(crl, &rev, X509_get0_serialNumber(root)) == 1) {
        set_msg(msg, msg_size, "trusted root CA is revoked by root_ca_crl");
        return -DS_E_CERT;
    }
    ds_attest_window_narrow(w, nb, na - 1);
    ds_attest_window_narrow(w, tu, nu - 1);
    return 0;
}

static int map_x509_error(int e)
{
    switch (e) {
    case X509_V_ERR_CERT_NOT_YET_VALID:
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_CRL_HAS_EXPIRED:
        return -DS_E_EXPIRED;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CERT_SIGNATURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
        return -DS_E_SIGNATURE;
    default:
        return -DS_E_CERT;
    }
}

int ds_attest_verify_chain(X509_STORE *store, STACK_OF(X509) * chain, int64_t now,
                           struct ds_attest_window *w, const char *what, char *msg, size_t msg_size)
{
    X509_STORE_CTX *ctx = NULL;
    X509 *leaf;
    uint32_t flags;
    int r = 0;

    if (!chain || sk_X509_num(chain) < 1) {
        set_msg(msg, msg_size, "%s: certificate chain is empty", what);
        return -DS_E_CERT;
    }
    leaf = sk_X509_value(chain, 0);
    flags = X509_get_extension_flags(leaf);
    if (flags & EXFLAG_INVALID) {
        set_msg(msg, msg_size, "%s: leaf certificate has invalid extensions", what);
        return -DS_E_CERT;
    }
    /* webpki's EndEntityCert: a CA certificate cannot sign collateral or QE reports. */
    if (flags & EXFLAG_CA) {
        set_msg(msg, msg_size, "%s: CaUsedAsEndEntity", what);
        return -DS_E_CERT;
    }
    if ((flags & EXFLAG_XKUSAGE) && !(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER)) {
        set_msg(msg, msg_size, "%s: leaf extended key usage does not allow serverAuth", what);
        return -DS_E_CERT;
    }

    ctx = X509_STORE_CTX_new();
    if (!ctx || X509_STORE_CTX_init(ctx, store, leaf, chain) != 1) {
        r = -ENOMEM;
        goto out;
    }
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    X509_VERIFY_PARAM_set_time(param, (time_t)now);
    if (X509_verify_cert(ctx) != 1) {
        int e = X509_STORE_CTX_get_error(ctx);
        set_msg(msg, msg_size, "%s: %s (depth %d)", what, X509_verify_cert_error_string(e),
                X509_STORE_CTX_get_error_depth(ctx));
        r = map_x509_error(e);
        goto out;
    }
    STACK_OF(X509) *built = X509_STORE_CTX_get0_chain(ctx);
    for (int i = 0; built && i < sk_X509_num(built); i++) {
        X509 *x = sk_X509_value(built, i);
        if (narrow_asn1(w, X509_get0_notBefore(x), X509_get0_notAfter(x)) < 0) {
            set_msg(msg, msg_size, "%s: malformed certificate validity", what);
            r = -DS_E_CERT;
            goto out;
        }
    }
out:
    X509_STORE_CTX_free(ctx);
    return r;
}

int ds_attest_crl_window(X509_CRL *crl, struct ds_attest_window *w)
{
    const ASN1_TIME *nu = X509_CRL_get0_nextUpdate(crl);
    if (!nu) {
        return -DS_E_CERT;
    }
    return narrow_asn1(w, X509_CRL_get0_lastUpdate(crl), nu);
}

int ds_attest_cert_p256_pub(X509 *cert, uint8_t pub[64])
{
    EVP_PKEY *pk = X509_get0_pubkey(cert);
    BIGNUM *x = NULL, *y = NULL;
    char group[32];
    int r = -DS_E_UNSUPPORTED;

    if (!pk || !EVP_PKEY_is_a(pk, "EC")) {
        goto out;
    }
    if (EVP_PKEY_get_utf8_string_param(pk, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       NULL) != 1 ||
        (strcmp(group, "prime256v1") != 0 && strcmp(group, "P-256") != 0)) {
        goto out;
    }
    if (EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_X, &x) != 1 ||
        EVP_PKEY_get_bn_param(pk, OSSL_PKEY_PARAM_EC_PUB_Y, &y) != 1 ||
        BN_bn2binpad(x, pub, 32) != 32 || BN_bn2binpad(y, pub + 32, 32) != 32) {
        r = -DS_E_FORMAT;
        goto out;
    }
    r = 0;
out:
    BN_free(x);
    BN_free(y);
    return r;
}

/* ---- Intel SGX extension --------------------------------------------------------------------- */

/* Split one DER SEQUENCE into its elements. */
static STACK_OF(ASN1_TYPE) * der_seq(const unsigned char *der, long len)
{
    const unsigned char *p = der;
    STACK_OF(ASN1_TYPE) *sk = d2i_ASN1_SEQUENCE_ANY(NULL, &p, len);
    if (sk && p != der + len) {
        sk_ASN1_TYPE_pop_free(sk, ASN1_TYPE_free);
        sk = NULL;
    }
    return sk;
}

/* The elements of an ASN1_TYPE that is itself a SEQUENCE. */
static STACK_OF(ASN1_TYPE) * type_seq(const ASN1_TYPE *t)
{
    if (!t || t->type != V_ASN1_SEQUENCE || !t->value.sequence) {
        return NULL;
    }
    return der_seq(ASN1_STRING_get0_data(t->value.sequence), ASN1_STRING_length(t->value.sequence));
}

/* A {OID, value} pair: oid text into buf, *value borrowed from the pair stack. */
static int pair_split(STACK_OF(ASN1_TYPE) * pair, char *buf, size_t buf_size,
                      const ASN1_TYPE **value)
{
    const ASN1_TYPE *o;
    if (!pair || sk_ASN1_TYPE_num(pair) != 2) {
        return -DS_E_FORMAT;
    }
    o = sk_ASN1_TYPE_value(pair, 0);
    if (o->type != V_ASN1_OBJECT || OBJ_obj2txt(buf, (int)buf_size, o->value.object, 1) <= 0 ||
        strlen(buf) >= buf_size - 1) {
        return -DS_E_FORMAT;
    }
    *value = sk_ASN1_TYPE_value(pair, 1);
    return 0;
}

static int octets(const ASN1_TYPE *v, uint8_t *out, size_t n)
{
    if (v->type != V_ASN1_OCTET_STRING || ASN1_STRING_length(v->value.octet_string) != (int)n) {
        return -DS_E_FORMAT;
    }
    memcpy(out, ASN1_STRING_get0_data(v->value.octet_string), n);
    return 0;
}

/* Members of the TCB SEQUENCE: PCESVN and CPUSVN are used; component SVNs are checked for form. */
static int parse_tcb_seq(const ASN1_TYPE *v, struct ds_attest_pck_info *out, unsigned *seen)
{
    STACK_OF(ASN1_TYPE) *items = type_seq(v);
    char oid[OID_TEXT_MAX];
    int r = 0;
    if (!items || sk_ASN1_TYPE_num(items) > SGX_EXT_MAX_ENTRIES) {
        r = -DS_E_FORMAT;
        goto out;
    }
    for (int i = 0; i < sk_ASN1_TYPE_num(items) && r == 0; i++) {
        STACK_OF(ASN1_TYPE) *pair = type_seq(sk_ASN1_TYPE_value(items, i));
        const ASN1_TYPE *val = NULL;
        r = pair_split(pair, oid, sizeof(oid), &val);
        if (r == 0 && strcmp(oid, SGX_OID_PCESVN) == 0) {
            int64_t n = -1;
            if (*seen & 1u || val->type != V_ASN1_INTEGER ||
                ASN1_INTEGER_get_int64(&n, val->value.integer) != 1 || n < 0 || n > 0xffff) {
                r = -DS_E_FORMAT;
            } else {
                out->pcesvn = (uint16_t)n;
                *seen |= 1u;
            }
        } else if (r == 0 && strcmp(oid, SGX_OID_CPUSVN) == 0) {
            if (*seen & 2u || octets(val, out->cpusvn, sizeof(out->cpusvn)) < 0) {
                r = -DS_E_FORMAT;
            }
            *seen |= 2u;
        } else if (r == 0 && val->type != V_ASN1_INTEGER) {
            r = -DS_E_FORMAT; /* comp01..16 SVNs are INTEGERs */
        }
        sk_ASN1_TYPE_pop_free(pair, ASN1_TYPE_free);
    }
out:
    sk_ASN1_TYPE_pop_free(items, ASN1_TYPE_free);
    return r;
}

enum sgx_seen {
    SEEN_PPID = 1u << 0,
    SEEN_TCB = 1u << 1,
    SEEN_PCEID = 1u << 2,
    SEEN_FMSPC = 1u << 3,
    SEEN_TYPE = 1u << 4,
};

static int parse_sgx_member(const char *oid, const ASN1_TYPE *val, struct ds_attest_pck_info *out,
                            unsigned *seen)
{
    unsigned bit = 0;
    int r = 0;
    if (strcmp(oid, SGX_OID_PPID) == 0) {
        bit = SEEN_PPID;
        r = octets(val, out->ppid, sizeof(out->ppid));
    } else if (strcmp(oid, SGX_OID_TCB) == 0) {
        unsigned tcb_seen = 0;
        bit = SEEN_TCB;
        r = parse_tcb_seq(val, out, &tcb_seen);
        if (r == 0 && tcb_seen != 3u) {
            r = -DS_E_FORMAT; /* PCESVN and CPUSVN are required */
        }
    } else if (strcmp(oid, SGX_OID_PCEID) == 0) {
        bit = SEEN_PCEID;
        r = octets(val, out->pce_id, sizeof(out->pce_id));
    } else if (strcmp(oid, SGX_OID_FMSPC) == 0) {
        bit = SEEN_FMSPC;
        r = octets(val, out->fmspc, sizeof(out->fmspc));
    } else if (strcmp(oid, SGX_OID_SGX_TYPE) == 0) {
        int64_t n = -1;
        bit = SEEN_TYPE;
        if (val->type != V_ASN1_ENUMERATED ||
            ASN1_ENUMERATED_get_int64(&n, val->value.enumerated) != 1 || n < 0 || n > 255) {
            r = -DS_E_FORMAT;
        } else {
            out->sgx_type = (int)n;
        }
    }
    /* Other members (platform instance id, configuration) are not used. */
    if (bit && (*seen & bit)) {
        return -DS_E_FORMAT; /* duplicate member */
    }
    *seen |= bit;
    return r;
}

int ds_attest_pck_parse(X509 *leaf, struct ds_attest_pck_info *out, char *msg, size_t msg_size)
{
    struct ds_attest_pck_info info;
    ASN1_OBJECT *ext_oid = NULL;
    STACK_OF(ASN1_TYPE) *items = NULL;
    unsigned seen = 0;
    char oid[OID_TEXT_MAX];
    int r = -DS_E_FORMAT;

    memset(&info, 0, sizeof(info));
    info.sgx_type = -1;
    ext_oid = OBJ_txt2obj(SGX_EXT_OID, 1);
    if (!ext_oid) {
        r = -ENOMEM;
        goto out;
    }
    int idx = X509_get_ext_by_OBJ(leaf, ext_oid, -1);
    if (idx < 0) {
        set_msg(msg, msg_size, "PCK certificate has no Intel SGX extension");
        r = -DS_E_NOT_FOUND;
        goto out;
    }
    if (X509_get_ext_by_OBJ(leaf, ext_oid, idx) >= 0) {
        set_msg(msg, msg_size, "PCK certificate has two Intel SGX extensions");
        goto out;
    }
    const ASN1_OCTET_STRING *data = X509_EXTENSION_get_data(X509_get_ext(leaf, idx));
    items = der_seq(ASN1_STRING_get0_data(data), ASN1_STRING_length(data));
    if (!items || sk_ASN1_TYPE_num(items) > SGX_EXT_MAX_ENTRIES) {
        set_msg(msg, msg_size, "Intel SGX extension is not a SEQUENCE of members");
        goto out;
    }
    for (int i = 0; i < sk_ASN1_TYPE_num(items); i++) {
        STACK_OF(ASN1_TYPE) *pair = type_seq(sk_ASN1_TYPE_value(items, i));
        const ASN1_TYPE *val = NULL;
        int pr = pair_split(pair, oid, sizeof(oid), &val);
        if (pr == 0) {
            pr = parse_sgx_member(oid, val, &info, &seen);
        }
        sk_ASN1_TYPE_pop_free(pair, ASN1_TYPE_free);
        if (pr < 0) {
            set_msg(msg, msg_size, "Intel SGX extension member %d is malformed", i);
            goto out;
        }
    }
    const unsigned required = SEEN_PPID | SEEN_TCB | SEEN_PCEID | SEEN_FMSPC;
    if ((seen & required) != required) {
        set_msg(msg, msg_size, "Intel SGX extension lacks PPID, TCB, PCE-ID or FMSPC");
        goto out;
    }
    r = ds_attest_cert_p256_pub(leaf, info.pub);
    if (r < 0) {
        set_msg(msg, msg_size, "PCK certificate key is not an ECDSA P-256 key");
        goto out;
    }
    *out = info;
out:
    sk_ASN1_TYPE_pop_free(items, ASN1_TYPE_free);
    ASN1_OBJECT_free(ext_oid);
    return r;
}
