/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for RA-TLS (lib/ratls, spec kms-ratls.md §6.1-6.6, guest-agent-api.md §4.6):
 * the certificate profile (serial, subject, SANs, KeyUsage, EKU, validity, extension
 * encoding and OID bytes), certificates around simulated quotes verified end to end (bare
 * X509, DER, X509_STORE_CTX, a TLS handshake over a BIO pair with a verify callback), and the
 * negatives each failing at its own step: key swapped (binding), tampered quote, tampered
 * runtime events (RTMR3), no attestation, Intel root (simulated quote rejected), expired and
 * not-yet-valid certificates, oversized / malformed / duplicated extensions, legacy .1.1+.1.2.
 * Also the CA-issued chain, the app-info extension codec and the KMS CSR with the spec's
 * frozen vector, signature and legacy V1 form.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "attest/versioned_priv.h"
#include "dstack/ratls.h"
#include "dstack/sim.h"

#define NOW      1767225600LL /* 2026-01-01 */
#define TEN_DAYS (10LL * 86400)

static const char *const vm_config = "{\"os_image_hash\":\"" /* 32 bytes */
                                     "0102030405060708090a0b0c0d0e0f10"
                                     "1112131415161718191a1b1c1d1e1f20\"}";
static const char kp_json[] = "{\"name\":\"kms\",\"id\":\"abcd\"}";

struct env {
    struct ds_sim_pki *pki;
    struct ds_verifier *v;
    struct ds_collateral *coll;
    struct ds_attestation_verify_opts opts;
};

static int env_setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    uint8_t seed[DS_SIM_SEED_LEN];
    const uint8_t *root;
    size_t root_len;
    memset(seed, 0x24, sizeof(seed));
    assert_int_equal(ds_sim_pki_new(seed, &e->pki), 0);
    ds_sim_pki_root_der(e->pki, &root, &root_len);
    assert_int_equal(ds_verifier_new(root, root_len, &e->v), 0);
    assert_int_equal(ds_sim_collateral(e->pki, NOW, &e->coll), 0);
    e->opts.verifier = e->v;
    e->opts.collateral = e->coll;
    e->opts.now = NOW;
    *state = e;
    return 0;
}

static int env_teardown(void **state)
{
    struct env *e = *state;
    ds_collateral_free(e->coll);
    ds_verifier_free(e->v);
    ds_sim_pki_free(e->pki);
    free(e);
    return 0;
}

/* ---- building blocks ------------------------------------------------------------------------- */

static struct ds_event_log *dstack_log(void)
{
    struct ds_event_log *log = NULL;
    uint8_t app_id[20], compose[32], instance[20];
    struct ds_event ev;
    memset(app_id, 0xA1, sizeof(app_id));
    memset(compose, 0xC0, sizeof(compose));
    memset(instance, 0x1D, sizeof(instance));
    assert_int_equal(ds_eventlog_new(&log), 0);
    memset(&ev, 0, sizeof(ev));
    ev.version = 1;
    ev.event_type = DS_EV_PLATFORM_CONFIG_FLAGS;
    memset(ev.digest, 0x33, 48);
    ev.digest_len = 48;
    ev.payload = (uint8_t *)"ACPI DATA";
    ev.payload_len = 9;
    assert_int_equal(ds_eventlog_append(log, &ev), 0);
    ev.imr = 1;
    ev.event_type = 0x80000003;
    memset(ev.digest, 0x44, 48);
    ev.payload = (uint8_t *)"kernel";
    ev.payload_len = 6;
    assert_int_equal(ds_eventlog_append(log, &ev), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "system-preparing", NULL, 0, 1), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "app-id", app_id, 20, 1), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "compose-hash", compose, 32, 1), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "instance-id", instance, 20, 1), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "boot-mr-done", NULL, 0, 1), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "key-provider", kp_json, strlen(kp_json), 1),
                     0);
    assert_int_equal(ds_eventlog_append_runtime(log, "system-ready", NULL, 0, 1), 0);
    return log;
}

/* A simulated quote for key (report_data = SHA-512("ratls-cert:" || SPKI)) and its log. */
static void sim_quote_for(struct env *e, EVP_PKEY *key, uint8_t **q, size_t *qlen,
                          struct ds_event_log **log_out)
{
    uint8_t rd[64];
    struct ds_sim_td td;
    struct ds_event_log *log = dstack_log();
    assert_int_equal(ds_ratls_report_data(key, rd), 0);
    ds_sim_td_defaults(&td);
    assert_int_equal(ds_eventlog_replay(log, NULL, td.rtmr), 0);
    assert_int_equal(ds_sim_quote(e->pki, &td, rd, NULL, q, qlen), 0);
    *log_out = log;
}

static void attestation_ext(struct env *e, EVP_PKEY *key, uint8_t **ext, size_t *ext_len)
{
    uint8_t *q = NULL;
    size_t qlen = 0;
    struct ds_event_log *log = NULL;
    sim_quote_for(e, key, &q, &qlen, &log);
    assert_int_equal(ds_ratls_attestation_for_key(key, q, qlen, log, NULL, vm_config, ext, ext_len),
                     0);
    free(q);
    ds_eventlog_free(log);
}

static void base_req(struct ds_ratls_cert_req *req)
{
    static const char *const alt[] = {"localhost", "127.0.0.1", "::1"};
    memset(req, 0, sizeof(*req));
    req->subject = "ratls-test";
    req->alt_names = alt;
    req->alt_name_count = 3;
    req->server_auth = true;
    req->now = NOW;
    req->usage = DS_RATLS_USAGE_APP_CUSTOM;
}

static X509 *self_signed(EVP_PKEY *key, const uint8_t *ext, size_t ext_len)
{
    struct ds_ratls_cert_req req;
    X509 *x = NULL;
    base_req(&req);
    req.attestation = ext;
    req.attestation_len = ext_len;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    return x;
}

static EVP_PKEY *new_key(void)
{
    EVP_PKEY *k = NULL;
    assert_int_equal(ds_ratls_key_generate(&k), 0);
    return k;
}

/* Add a raw extension with the given extnValue content (for malformed-extension tests). */
static void add_raw_ext(X509 *x, int which, const uint8_t *content, size_t len)
{
    char oid[64];
    snprintf(oid, sizeof(oid), "%s.%d", DS_RATLS_OID_ARC, which);
    ASN1_OBJECT *obj = OBJ_txt2obj(oid, 1);
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    assert_non_null(obj);
    assert_int_equal(ASN1_OCTET_STRING_set(os, content, (int)len), 1);
    X509_EXTENSION *ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os);
    assert_non_null(ext);
    assert_int_equal(X509_add_ext(x, ext, -1), 1);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
}

/* Wrap payload as DER OCTET STRING (the dstack extension encoding). */
static uint8_t *wrap(const uint8_t *p, size_t n, size_t *out_len)
{
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    unsigned char *der = NULL;
    assert_int_equal(ASN1_OCTET_STRING_set(os, p, (int)n), 1);
    int len = i2d_ASN1_OCTET_STRING(os, &der);
    assert_true(len > 0);
    ASN1_OCTET_STRING_free(os);
    *out_len = (size_t)len;
    return der;
}

static void add_wrapped_ext(X509 *x, int which, const uint8_t *p, size_t n)
{
    size_t len;
    uint8_t *der = wrap(p, n, &len);
    add_raw_ext(x, which, der, len);
    OPENSSL_free(der);
}

static int verify(struct env *e, X509 *x, struct ds_attestation_result *res)
{
    return ds_ratls_verify_cert(x, &e->opts, res);
}

/* ---- profile --------------------------------------------------------------------------------- */

static void test_cert_profile(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    attestation_ext(e, key, &ext, &ext_len);
    X509 *x = self_signed(key, ext, ext_len);

    assert_int_equal(X509_get_version(x), X509_VERSION_3);
    assert_int_equal(X509_get_signature_nid(x), NID_ecdsa_with_SHA256);
    /* serial = SHA-256(public point)[0..20], top bit cleared */
    unsigned char *point = NULL;
    size_t plen = EVP_PKEY_get1_encoded_public_key(key, &point);
    assert_int_equal(plen, 65);
    uint8_t h[32];
    ds_sha256(point, plen, h);
    OPENSSL_free(point);
    h[0] &= 0x7f;
    BIGNUM *want = BN_bin2bn(h, 20, NULL);
    BIGNUM *got = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    assert_int_equal(BN_cmp(want, got), 0);
    BN_free(want);
    BN_free(got);
    /* subject: CN only, self-issued */
    char cn[64];
    assert_int_equal(
        X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, cn, sizeof(cn)), 10);
    assert_string_equal(cn, "ratls-test");
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 1);
    assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);
    /* validity: rcgen's 1975-01-01 and now + 3650 days */
    assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notBefore(x), 157766400), 0);
    assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notAfter(x), NOW + 3650LL * 86400), 0);
    /* KeyUsage critical digitalSignature only; no BasicConstraints; EKU serverAuth */
    int ku = X509_get_ext_by_NID(x, NID_key_usage, -1);
    assert_true(ku >= 0);
    assert_int_equal(X509_EXTENSION_get_critical(X509_get_ext(x, ku)), 1);
    assert_int_equal(X509_get_key_usage(x), KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_ext_by_NID(x, NID_basic_constraints, -1), -1);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER);
    /* SANs: DNS localhost, IP 127.0.0.1, IP ::1 */
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    assert_non_null(gens);
    assert_int_equal(sk_GENERAL_NAME_num(gens), 3);
    assert_int_equal(sk_GENERAL_NAME_value(gens, 0)->type, GEN_DNS);
    assert_int_equal(sk_GENERAL_NAME_value(gens, 1)->type, GEN_IPADD);
    assert_int_equal(ASN1_STRING_length(sk_GENERAL_NAME_value(gens, 1)->d.iPAddress), 4);
    assert_int_equal(sk_GENERAL_NAME_value(gens, 2)->type, GEN_IPADD);
    assert_int_equal(ASN1_STRING_length(sk_GENERAL_NAME_value(gens, 2)->d.iPAddress), 16);
    GENERAL_NAMES_free(gens);
    /* the attestation extension: OID bytes, non-critical, double OCTET STRING wrapping */
    bool seen = false;
    for (int i = 0; i < X509_get_ext_count(x); i++) {
        X509_EXTENSION *xe = X509_get_ext(x, i);
        unsigned char *oid_der = NULL;
        int n = i2d_ASN1_OBJECT(X509_EXTENSION_get_object(xe), &oid_der);
        static const uint8_t att_oid[] = {0x06, 0x0A, 0x2B, 0x06, 0x01, 0x04,
                                          0x01, 0x83, 0xE7, 0x3D, 0x01, 0x08};
        if (n == (int)sizeof(att_oid) && memcmp(oid_der, att_oid, sizeof(att_oid)) == 0) {
            const ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(xe);
            const uint8_t *d = ASN1_STRING_get0_data(v);
            assert_int_equal(X509_EXTENSION_get_critical(xe), 0);
            assert_int_equal(d[0], 0x04);
            assert_memory_equal(d + ASN1_STRING_length(v) - ext_len, ext, ext_len);
            seen = true;
        }
        OPENSSL_free(oid_der);
    }
    assert_true(seen);
    /* reading back */
    const uint8_t *p;
    size_t n;
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_ATTESTATION, &p, &n), 0);
    assert_int_equal(n, ext_len);
    assert_memory_equal(p, ext, n);
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_USAGE, &p, &n), 0);
    assert_int_equal(n, strlen("app:custom"));
    assert_memory_equal(p, "app:custom", n);
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_APP_ID, &p, &n), -DS_E_NOT_FOUND);
    /* the embedded attestation is the stripped one */
    struct ds_attestation *a = NULL;
    assert_int_equal(ds_ratls_cert_get_attestation(x, &a), 0);
    assert_int_equal(a->event_log->count, 1 + 7); /* ACPI DATA + runtime, no RTMR1 event */
    assert_int_equal(a->event_log->events[1].digest_len, 0);
    ds_attestation_free(a);
    X509_free(x);

    /* no EKU unless asked; both when both; O= first; explicit validity; no SAN without names */
    struct ds_ratls_cert_req req;
    memset(&req, 0, sizeof(req));
    req.org = "Dstack";
    req.subject = "";
    req.now = NOW;
    req.has_not_before = true;
    req.not_before = NOW - 60;
    req.has_not_after = true;
    req.not_after = NOW + TEN_DAYS;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    assert_int_equal(X509_get_ext_by_NID(x, NID_ext_key_usage, -1), -1);
    assert_int_equal(X509_get_ext_by_NID(x, NID_subject_alt_name, -1), -1);
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(x)), 2);
    assert_int_equal(
        OBJ_obj2nid(X509_NAME_ENTRY_get_object(X509_NAME_get_entry(X509_get_subject_name(x), 0))),
        NID_organizationName);
    assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notBefore(x), NOW - 60), 0);
    assert_int_equal(ASN1_TIME_cmp_time_t(X509_get0_notAfter(x), NOW + TEN_DAYS), 0);
    X509_free(x);
    req.server_auth = req.client_auth = true;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    assert_int_equal(X509_get_extended_key_usage(x), XKU_SSL_SERVER | XKU_SSL_CLIENT);
    X509_free(x);
    /* not_before >= not_after is refused; a foreign key cannot self-sign */
    req.not_after = req.not_before;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), -EINVAL);
    req.not_after = NOW + TEN_DAYS;
    EVP_PKEY *other = new_key();
    assert_int_equal(ds_ratls_cert_build(&req, key, other, NULL, &x), -EINVAL);
    EVP_PKEY_free(other);
    /* the quote must have been made for this key */
    uint8_t *q = NULL;
    size_t qlen = 0;
    struct ds_event_log *log = NULL;
    uint8_t *out = NULL;
    size_t out_len = 0;
    EVP_PKEY *k2 = new_key();
    sim_quote_for(e, key, &q, &qlen, &log);
    assert_int_equal(ds_ratls_attestation_for_key(k2, q, qlen, log, NULL, NULL, &out, &out_len),
                     -DS_E_MISMATCH);
    free(q);
    ds_eventlog_free(log);
    EVP_PKEY_free(k2);
    free(ext);
    EVP_PKEY_free(key);
}

/* ---- keys ----------------------------------------------------------------------------------- */

static void test_keys(void **state)
{
    (void)state;
    /* scalar 1: public key = generator */
    uint8_t one[32] = {0};
    one[31] = 1;
    EVP_PKEY *k = NULL;
    assert_int_equal(ds_ratls_key_from_scalar(one, &k), 0);
    uint8_t *spki = NULL;
    size_t spki_len = 0;
    assert_int_equal(ds_ratls_spki_der(k, &spki, &spki_len), 0);
    assert_int_equal(spki_len, 91);
    char hex[200];
    ds_hex_encode(spki + 27, 64, hex);
    assert_string_equal(hex, "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296"
                             "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5");
    /* report_data = SHA-512("ratls-cert:" || SPKI) */
    uint8_t rd[64], want[64];
    assert_int_equal(ds_ratls_report_data(k, rd), 0);
    ds_sha512_v(want, 2, "ratls-cert:", (size_t)11, spki, spki_len);
    assert_memory_equal(rd, want, 64);
    /* SPKI back to a key; non-P-256 and garbage refused */
    EVP_PKEY *pub = NULL;
    assert_int_equal(ds_ratls_key_from_spki(spki, spki_len, &pub), 0);
    assert_int_equal(EVP_PKEY_eq(pub, k), 1);
    EVP_PKEY_free(pub);
    assert_int_equal(ds_ratls_key_from_spki((const uint8_t *)"\x01\x02\x03", 3, &pub),
                     -DS_E_FORMAT);
    assert_int_equal(ds_ratls_key_from_spki(spki, spki_len - 1, &pub), -DS_E_FORMAT);
    EVP_PKEY *ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    unsigned char *ed_der = NULL;
    int ed_len = i2d_PUBKEY(ed, &ed_der);
    assert_int_equal(ds_ratls_key_from_spki(ed_der, (size_t)ed_len, &pub), -DS_E_FORMAT);
    OPENSSL_free(ed_der);
    EVP_PKEY_free(ed);
    /* PKCS#8 PEM in the layout the SDKs expect */
    char *pem = NULL;
    assert_int_equal(ds_ratls_key_pem(k, &pem), 0);
    assert_non_null(strstr(pem, "-----BEGIN PRIVATE KEY-----\n"
                                "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg"));
    free(pem);
    /* zero and the order are not scalars */
    uint8_t zero[32] = {0};
    assert_int_equal(ds_ratls_key_from_scalar(zero, &pub), -DS_E_FORMAT);
    uint8_t n[32];
    assert_int_equal(
        ds_hex_decode("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551", 64, n,
                      32),
        32);
    assert_int_equal(ds_ratls_key_from_scalar(n, &pub), -DS_E_FORMAT);
    free(spki);
    EVP_PKEY_free(k);
}

/* ---- verification: success ------------------------------------------------------------------ */

static void test_verify_ok(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *ext = NULL, *der = NULL;
    size_t ext_len = 0, der_len = 0;
    struct ds_attestation_result res;
    uint8_t fmspc[6], pce_id[2], ppid[16], dev[32];

    attestation_ext(e, key, &ext, &ext_len);
    X509 *x = self_signed(key, ext, ext_len);
    assert_int_equal(verify(e, x, &res), 0);
    assert_true(res.ok);
    assert_int_equal(res.failed_step, DS_ATT_STEP_NONE);
    assert_true(res.simulated);
    assert_int_equal(res.platform, DS_ATT_TDX);
    assert_int_equal(res.tcb_status, DS_TCB_UP_TO_DATE);
    assert_int_equal(res.app_info.app_id_len, 20);
    assert_int_equal(res.app_info.app_id[0], 0xA1);
    assert_int_equal(res.app_info.compose_hash_len, 32);
    assert_int_equal(res.app_info.compose_hash[5], 0xC0);
    assert_int_equal(res.app_info.instance_id_len, 20);
    assert_string_equal(res.app_info.key_provider_name, "kms");
    assert_int_equal(res.app_info.os_image_hash_len, 32);
    ds_sim_pki_platform(e->pki, fmspc, pce_id, ppid);
    ds_sha256(ppid, sizeof(ppid), dev);
    assert_memory_equal(res.app_info.device_id, dev, 32);
    /* mr_system recomputed from the verified TD report */
    uint8_t mrkp[32], mrs[32];
    ds_sha256(kp_json, strlen(kp_json), mrkp);
    ds_sha256_v(mrs, 5, res.td.mr_td, (size_t)48, res.td.rtmr[0], (size_t)48, res.td.rtmr[1],
                (size_t)48, res.td.rtmr[2], (size_t)48, mrkp, (size_t)32);
    assert_memory_equal(res.app_info.mr_system, mrs, 32);
    uint8_t rd[64];
    assert_int_equal(ds_ratls_report_data(key, rd), 0);
    assert_memory_equal(res.report_data, rd, 64);
    ds_attestation_result_done(&res);

    /* DER entry point */
    assert_int_equal(ds_ratls_cert_der(x, &der, &der_len), 0);
    assert_int_equal(ds_ratls_verify_cert_der(der, der_len, &e->opts, &res), 0);
    assert_true(res.ok);
    ds_attestation_result_done(&res);
    /* DER with a trailing byte, and garbage */
    uint8_t *longer = malloc(der_len + 1);
    memcpy(longer, der, der_len);
    longer[der_len] = 0;
    assert_int_equal(ds_ratls_verify_cert_der(longer, der_len + 1, &e->opts, &res), -DS_E_FORMAT);
    assert_int_equal(res.failed_step, DS_ATT_STEP_CERTIFICATE);
    ds_attestation_result_done(&res);
    assert_int_equal(ds_ratls_verify_cert_der(longer + 1, der_len - 1, &e->opts, &res),
                     -DS_E_FORMAT);
    ds_attestation_result_done(&res);
    free(longer);

    /* no collateral: fetched from the PCCS URL; an unreachable one fails at "collateral" */
    struct ds_attestation_verify_opts o = e->opts;
    o.collateral = NULL;
    o.pccs_url = "http://127.0.0.1:1/sgx/certification/v4";
    o.fetch_timeout_ms = 2000;
    assert_int_equal(ds_ratls_verify_cert(x, &o, &res), -DS_E_NETWORK);
    assert_int_equal(res.failed_step, DS_ATT_STEP_COLLATERAL);
    assert_string_equal(ds_att_step_name(res.failed_step), "collateral");
    ds_attestation_result_done(&res);

    /* X509_STORE_CTX entry point */
    X509_STORE *store = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    assert_int_equal(X509_STORE_CTX_init(ctx, store, x, NULL), 1);
    assert_int_equal(ds_ratls_verify_store_ctx(ctx, &e->opts, &res), 0);
    assert_true(res.ok);
    ds_attestation_result_done(&res);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);

    /* PEM */
    char *pem = NULL;
    assert_int_equal(ds_ratls_cert_pem(x, &pem), 0);
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
    free(pem);
    free(der);
    free(ext);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* ---- verification: negatives ---------------------------------------------------------------- */

static void test_key_swapped(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key(), *other = new_key();
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    struct ds_attestation_result res;
    attestation_ext(e, key, &ext, &ext_len);
    /* same attestation extension, certificate for (and signed by) another key */
    X509 *x = self_signed(other, ext, ext_len);
    assert_int_equal(verify(e, x, &res), -DS_E_MISMATCH);
    assert_false(res.ok);
    assert_int_equal(res.failed_step, DS_ATT_STEP_BINDING);
    assert_string_equal(ds_att_step_name(res.failed_step), "binding");
    ds_attestation_result_done(&res);
    X509_free(x);
    free(ext);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

/* Decode the cert's attestation, let fn alter it, re-encode into a new cert for the same key. */
static X509 *rebuild(EVP_PKEY *key, X509 *x, void (*fn)(struct ds_attestation *))
{
    struct ds_attestation *a = NULL;
    uint8_t *enc = NULL;
    size_t len = 0;
    assert_int_equal(ds_ratls_cert_get_attestation(x, &a), 0);
    fn(a);
    assert_int_equal(ds_attestation_encode(a, DS_ATT_WIRE_AUTO, &enc, &len), 0);
    X509 *y = self_signed(key, enc, len);
    free(enc);
    ds_attestation_free(a);
    return y;
}

static void flip_mrtd(struct ds_attestation *a)
{
    a->quote[48 + 136] ^= 1; /* MRTD in a v4 TD10 quote starts at body offset 136 */
}

static void flip_compose(struct ds_attestation *a)
{
    struct ds_event *ev = &a->runtime_events->events[2];
    assert_string_equal(ev->name, "compose-hash");
    ev->payload[0] ^= 1;
}

static void drop_last_runtime(struct ds_attestation *a)
{
    struct ds_event_log *log = a->runtime_events;
    log->count--;
    free(log->events[log->count].name);
    free(log->events[log->count].payload);
    free(log->events[log->count].preimage);
}

static void test_tampered(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    struct ds_attestation_result res;
    attestation_ext(e, key, &ext, &ext_len);
    X509 *x = self_signed(key, ext, ext_len);

    X509 *y = rebuild(key, x, flip_mrtd);
    assert_int_equal(verify(e, y, &res), -DS_E_SIGNATURE);
    assert_int_equal(res.failed_step, DS_ATT_STEP_QUOTE);
    assert_int_equal(res.dcap_step, DS_STEP_QUOTE_SIGNATURE);
    ds_attestation_result_done(&res);
    X509_free(y);

    y = rebuild(key, x, flip_compose);
    assert_int_equal(verify(e, y, &res), -DS_E_MISMATCH);
    assert_int_equal(res.failed_step, DS_ATT_STEP_EVENT_LOG);
    assert_non_null(strstr(res.message, "RTMR3"));
    ds_attestation_result_done(&res);
    X509_free(y);

    y = rebuild(key, x, drop_last_runtime);
    assert_int_equal(verify(e, y, &res), -DS_E_MISMATCH);
    assert_int_equal(res.failed_step, DS_ATT_STEP_EVENT_LOG);
    ds_attestation_result_done(&res);
    X509_free(y);

    /* undecodable attestation bytes */
    static const uint8_t junk[] = {0x00, 0x07, 0x01};
    y = self_signed(key, junk, sizeof(junk));
    assert_int_equal(verify(e, y, &res), -DS_E_FORMAT);
    assert_int_equal(res.failed_step, DS_ATT_STEP_DECODE);
    ds_attestation_result_done(&res);
    X509_free(y);

    X509_free(x);
    free(ext);
    EVP_PKEY_free(key);
}

static void test_no_attestation(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    struct ds_attestation_result res;
    X509 *x = self_signed(key, NULL, 0);
    assert_int_equal(verify(e, x, &res), -DS_E_NOT_FOUND);
    assert_int_equal(res.failed_step, DS_ATT_STEP_NO_ATTESTATION);
    ds_attestation_result_done(&res);
    X509_free(x);
    EVP_PKEY_free(key);
}

static void test_intel_root(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    struct ds_attestation_result res;
    struct ds_verifier *intel = NULL;
    attestation_ext(e, key, &ext, &ext_len);
    X509 *x = self_signed(key, ext, ext_len);
    assert_int_equal(ds_verifier_new(NULL, 0, &intel), 0);
    struct ds_attestation_verify_opts o = e->opts;
    o.verifier = intel;
    assert_int_equal(ds_ratls_verify_cert(x, &o, &res), -DS_E_CERT);
    assert_false(res.ok);
    assert_int_equal(res.failed_step, DS_ATT_STEP_QUOTE);
    assert_int_equal(res.dcap_step, DS_STEP_ROOT_CA);
    ds_attestation_result_done(&res);
    ds_verifier_free(intel);
    X509_free(x);
    free(ext);
    EVP_PKEY_free(key);
}

static void test_validity(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    struct ds_attestation_result res;
    struct ds_ratls_cert_req req;
    X509 *x = NULL;
    attestation_ext(e, key, &ext, &ext_len);
    base_req(&req);
    req.attestation = ext;
    req.attestation_len = ext_len;
    req.has_not_before = true;
    req.not_before = NOW - 2 * TEN_DAYS;
    req.has_not_after = true;
    req.not_after = NOW - TEN_DAYS;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    assert_int_equal(verify(e, x, &res), -DS_E_EXPIRED);
    assert_int_equal(res.failed_step, DS_ATT_STEP_CERTIFICATE);
    assert_non_null(strstr(res.message, "expired"));
    ds_attestation_result_done(&res);
    /* the attestation itself is fine: skipping the window verifies */
    struct ds_attestation_verify_opts o = e->opts;
    o.skip_cert_validity = true;
    assert_int_equal(ds_ratls_verify_cert(x, &o, &res), 0);
    ds_attestation_result_done(&res);
    X509_free(x);
    req.not_before = NOW + TEN_DAYS;
    req.not_after = NOW + 2 * TEN_DAYS;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    assert_int_equal(verify(e, x, &res), -DS_E_EXPIRED);
    assert_non_null(strstr(res.message, "not yet valid"));
    ds_attestation_result_done(&res);
    X509_free(x);
    free(ext);
    EVP_PKEY_free(key);
}

static void test_ext_parsing(void **state)
{
    (void)state;
    EVP_PKEY *key = new_key();
    const uint8_t *p;
    size_t n;

    /* unwrap: exact DER only */
    static const uint8_t ok_short[] = {0x04, 0x02, 'h', 'i'};
    assert_int_equal(ds_ratls_ext_unwrap(ok_short, sizeof(ok_short), 16, &p, &n), 0);
    assert_int_equal(n, 2);
    static const uint8_t ok_long[] = {0x04, 0x81, 0x80};
    uint8_t buf[3 + 0x80];
    memcpy(buf, ok_long, 3);
    memset(buf + 3, 'x', 0x80);
    assert_int_equal(ds_ratls_ext_unwrap(buf, sizeof(buf), 0x80, &p, &n), 0);
    assert_int_equal(n, 0x80);
    assert_int_equal(ds_ratls_ext_unwrap(buf, sizeof(buf), 0x7f, &p, &n), -DS_E_LIMIT);
    static const uint8_t not_minimal[] = {0x04, 0x81, 0x02, 'h', 'i'};
    assert_int_equal(ds_ratls_ext_unwrap(not_minimal, sizeof(not_minimal), 16, &p, &n),
                     -DS_E_FORMAT);
    static const uint8_t indefinite[] = {0x04, 0x80, 'h', 'i', 0, 0};
    assert_int_equal(ds_ratls_ext_unwrap(indefinite, sizeof(indefinite), 16, &p, &n), -DS_E_FORMAT);
    static const uint8_t constructed[] = {0x24, 0x02, 'h', 'i'};
    assert_int_equal(ds_ratls_ext_unwrap(constructed, sizeof(constructed), 16, &p, &n),
                     -DS_E_FORMAT);
    static const uint8_t trailing[] = {0x04, 0x01, 'h', 'i'};
    assert_int_equal(ds_ratls_ext_unwrap(trailing, sizeof(trailing), 16, &p, &n), -DS_E_FORMAT);
    static const uint8_t truncated[] = {0x04, 0x05, 'h', 'i'};
    assert_int_equal(ds_ratls_ext_unwrap(truncated, sizeof(truncated), 16, &p, &n),
                     -DS_E_TRUNCATED);
    /* a header claiming 16 MiB: over the attestation cap before any byte is read */
    static const uint8_t huge[] = {0x04, 0x84, 0x01, 0x00, 0x00, 0x01};
    assert_int_equal(ds_ratls_ext_unwrap(huge, sizeof(huge), DS_RATLS_MAX_ATTESTATION, &p, &n),
                     -DS_E_LIMIT);
    static const uint8_t too_many_len_bytes[] = {0x04, 0x85, 1, 0, 0, 0, 0};
    assert_int_equal(
        ds_ratls_ext_unwrap(too_many_len_bytes, sizeof(too_many_len_bytes), SIZE_MAX, &p, &n),
        -DS_E_FORMAT);

    /* in certificates: oversized app id, bare (unwrapped) payload, duplicate extension */
    struct ds_ratls_cert_req req;
    X509 *x = NULL;
    uint8_t big_id[65];
    memset(big_id, 0xAB, sizeof(big_id));
    base_req(&req);
    req.app_id = big_id;
    req.app_id_len = sizeof(big_id);
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), -DS_E_LIMIT);
    req.app_id_len = 20;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_APP_ID, &p, &n), 0);
    assert_int_equal(n, 20);
    X509_free(x);

    base_req(&req);
    req.usage = NULL;
    assert_int_equal(ds_ratls_cert_build(&req, key, key, NULL, &x), 0);
    add_wrapped_ext(x, DS_RATLS_EXT_APP_ID, big_id, sizeof(big_id));
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_APP_ID, &p, &n), -DS_E_LIMIT);
    add_raw_ext(x, DS_RATLS_EXT_USAGE, (const uint8_t *)"app:ca", 6); /* not wrapped */
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_USAGE, &p, &n), -DS_E_FORMAT);
    add_wrapped_ext(x, DS_RATLS_EXT_APP_INFO, (const uint8_t *)"\x90", 1);
    add_wrapped_ext(x, DS_RATLS_EXT_APP_INFO, (const uint8_t *)"\x90", 1);
    assert_int_equal(ds_ratls_cert_get_ext(x, DS_RATLS_EXT_APP_INFO, &p, &n), -DS_E_FORMAT);
    /* not a dstack extension number */
    assert_int_equal(ds_ratls_cert_get_ext(x, (enum ds_ratls_ext)5, &p, &n), -EINVAL);
    X509_free(x);
    EVP_PKEY_free(key);
}

/* A certificate in the legacy form: raw quote in .1.1 and the JSON event log in .1.2. */
static void test_legacy_ext(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *q = NULL;
    size_t qlen = 0;
    struct ds_event_log *log = NULL;
    char *json = NULL;
    size_t json_len = 0;
    struct ds_attestation_result res;
    X509 *x = NULL;
    sim_quote_for(e, key, &q, &qlen, &log);
    assert_int_equal(ds_eventlog_to_json(log, DS_EVENTLOG_JSON_STRIPPED, &json, &json_len), 0);

    x = self_signed(key, NULL, 0);
    add_wrapped_ext(x, DS_RATLS_EXT_TDX_QUOTE, q, qlen);
    /* quote alone: the log is required */
    assert_int_equal(verify(e, x, &res), -DS_E_FORMAT);
    assert_int_equal(res.failed_step, DS_ATT_STEP_DECODE);
    ds_attestation_result_done(&res);
    add_wrapped_ext(x, DS_RATLS_EXT_EVENT_LOG, (const uint8_t *)json, json_len);
    assert_int_equal(verify(e, x, &res), 0);
    assert_true(res.ok);
    assert_int_equal(res.app_info.app_id[0], 0xA1);
    ds_attestation_result_done(&res);
    X509_free(x);
    free(json);
    free(q);
    ds_eventlog_free(log);
    EVP_PKEY_free(key);
}

/* ---- CA-issued certificates ------------------------------------------------------------------ */

static void test_ca_chain(void **state)
{
    struct env *e = *state;
    EVP_PKEY *ca_key = NULL, *leaf_key = new_key();
    uint8_t scalar[32];
    memset(scalar, 0x5b, sizeof(scalar));
    assert_int_equal(ds_ratls_key_from_scalar(scalar, &ca_key), 0);
    struct ds_ratls_cert_req req;
    X509 *ca = NULL, *leaf = NULL;
    memset(&req, 0, sizeof(req));
    req.org = "Dstack";
    req.subject = "Dstack App CA";
    req.ca = true;
    req.ca_path_len = 0;
    req.now = NOW;
    req.usage = DS_RATLS_USAGE_APP_CA;
    uint8_t app_id[20];
    memset(app_id, 0x11, sizeof(app_id));
    req.app_id = app_id;
    req.app_id_len = sizeof(app_id);
    assert_int_equal(ds_ratls_cert_build(&req, ca_key, ca_key, NULL, &ca), 0);
    assert_int_equal(X509_get_key_usage(ca), KU_DIGITAL_SIGNATURE | KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_int_equal(X509_check_ca(ca), 1);
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(ca, NID_basic_constraints, NULL, NULL);
    assert_non_null(bc);
    assert_true(bc->ca);
    assert_int_equal(ASN1_INTEGER_get(bc->pathlen), 0);
    BASIC_CONSTRAINTS_free(bc);

    uint8_t *ext = NULL;
    size_t ext_len = 0;
    attestation_ext(e, leaf_key, &ext, &ext_len);
    base_req(&req);
    req.client_auth = true;
    req.attestation = ext;
    req.attestation_len = ext_len;
    /* the issuer key must match the issuer certificate */
    assert_int_equal(ds_ratls_cert_build(&req, leaf_key, leaf_key, ca, &leaf), -EINVAL);
    assert_int_equal(ds_ratls_cert_build(&req, leaf_key, ca_key, ca, &leaf), 0);
    assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(leaf), X509_get_subject_name(ca)), 0);
    assert_int_equal(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(ca)), 0);
    /* chains with OpenSSL */
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, NULL);
    X509_STORE_CTX_set_time(ctx, 0, (time_t)NOW);
    assert_int_equal(X509_verify_cert(ctx), 1);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    /* and the RA-TLS verification is independent of the issuer */
    struct ds_attestation_result res;
    assert_int_equal(verify(e, leaf, &res), 0);
    ds_attestation_result_done(&res);
    X509_free(leaf);
    X509_free(ca);
    free(ext);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(leaf_key);
}

/* ---- TLS ---------------------------------------------------------------------------------------
 */

struct tls_check {
    const struct ds_attestation_verify_opts *opts;
    int calls;
    int last_err;
};

static int tls_verify_cb(int preverify_ok, X509_STORE_CTX *ctx)
{
    (void)preverify_ok; /* the self-signed RA-TLS leaf has no chain: attestation decides */
    SSL *ssl = X509_STORE_CTX_get_ex_data(ctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    struct tls_check *chk = SSL_get_app_data(ssl);
    struct ds_attestation_result res;
    if (X509_STORE_CTX_get_error_depth(ctx) != 0) {
        return 0;
    }
    chk->calls++;
    chk->last_err = ds_ratls_verify_store_ctx(ctx, chk->opts, &res);
    ds_attestation_result_done(&res);
    return chk->last_err == 0;
}

/* Handshake a client and a server over a BIO pair; returns true on success. */
static bool handshake(X509 *cert, EVP_PKEY *key, struct tls_check *chk, SSL **client_out)
{
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    assert_int_equal(SSL_CTX_use_certificate(sctx, cert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(sctx, key), 1);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, tls_verify_cb);
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *b1 = NULL, *b2 = NULL;
    assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
    SSL_set_bio(c, b1, b1);
    SSL_set_bio(s, b2, b2);
    SSL_set_app_data(c, chk);
    SSL_set_connect_state(c);
    SSL_set_accept_state(s);
    bool c_done = false, s_done = false, failed = false;
    for (int i = 0; i < 100 && !(c_done && s_done) && !failed; i++) {
        if (!c_done) {
            int r = SSL_do_handshake(c);
            c_done = r == 1;
            if (r <= 0 && SSL_get_error(c, r) != SSL_ERROR_WANT_READ) {
                failed = true;
            }
        }
        if (!s_done && !failed) {
            int r = SSL_do_handshake(s);
            s_done = r == 1;
            if (r <= 0 && SSL_get_error(s, r) != SSL_ERROR_WANT_READ) {
                failed = true;
            }
        }
    }
    ERR_clear_error();
    SSL_free(s);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    if (client_out && !failed) {
        *client_out = c;
    } else {
        SSL_free(c);
    }
    return !failed && c_done && s_done;
}

static void test_tls_handshake(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key();
    uint8_t *ext = NULL;
    size_t ext_len = 0;
    attestation_ext(e, key, &ext, &ext_len);
    X509 *x = self_signed(key, ext, ext_len);
    struct tls_check chk = {.opts = &e->opts};
    SSL *client = NULL;
    assert_true(handshake(x, key, &chk, &client));
    assert_true(chk.calls >= 1);
    assert_int_equal(chk.last_err, 0);
    struct ds_attestation_result res;
    assert_int_equal(ds_ratls_verify_peer(client, &e->opts, &res), 0);
    assert_true(res.ok);
    ds_attestation_result_done(&res);
    SSL_free(client);

    /* with Intel's root the simulated attestation fails and so does the handshake */
    struct ds_verifier *intel = NULL;
    assert_int_equal(ds_verifier_new(NULL, 0, &intel), 0);
    struct ds_attestation_verify_opts o = e->opts;
    o.verifier = intel;
    struct tls_check bad = {.opts = &o};
    assert_false(handshake(x, key, &bad, NULL));
    assert_int_equal(bad.last_err, -DS_E_CERT);
    ds_verifier_free(intel);

    /* a server without attestation fails too */
    X509 *plain = self_signed(key, NULL, 0);
    struct tls_check none = {.opts = &e->opts};
    assert_false(handshake(plain, key, &none, NULL));
    assert_int_equal(none.last_err, -DS_E_NOT_FOUND);
    X509_free(plain);
    X509_free(x);
    free(ext);
    EVP_PKEY_free(key);
}

/* ---- app info -------------------------------------------------------------------------------- */

static void test_app_info_ext(void **state)
{
    (void)state;
    struct ds_app_info in, out;
    uint8_t app_id[20], ch[32], h1[32], h2[32];
    uint8_t *hashes[2] = {h1, h2};
    size_t lens[2] = {32, 32};
    memset(&in, 0, sizeof(in));
    memset(app_id, 0x11, 20);
    memset(ch, 0x22, 32);
    memset(h1, 0x33, 32);
    memset(h2, 0x44, 32);
    in.app_id = app_id;
    in.app_id_len = 20;
    in.compose_hash = ch;
    in.compose_hash_len = 32;
    memset(in.device_id, 0x55, 32);
    memset(in.mr_system, 0x66, 32);
    memset(in.mr_aggregated, 0x77, 32);
    in.key_provider_info = (uint8_t *)kp_json;
    in.key_provider_info_len = strlen(kp_json);
    in.init_script_hashes = hashes;
    in.init_script_hash_lens = lens;
    in.init_script_count = 2;
    uint8_t *enc = NULL;
    size_t len = 0;
    assert_int_equal(ds_ratls_app_info_encode(&in, &enc, &len), 0);
    /* compact form: array of 9, first field bin8 of 20 bytes */
    assert_int_equal(enc[0], 0x99);
    assert_int_equal(enc[1], 0xc4);
    assert_int_equal(enc[2], 20);
    assert_int_equal(ds_ratls_app_info_decode(enc, len, &out), 0);
    assert_int_equal(out.app_id_len, 20);
    assert_memory_equal(out.app_id, app_id, 20);
    assert_memory_equal(out.compose_hash, ch, 32);
    assert_int_equal(out.instance_id_len, 0);
    assert_memory_equal(out.device_id, in.device_id, 32);
    assert_memory_equal(out.mr_system, in.mr_system, 32);
    assert_memory_equal(out.mr_aggregated, in.mr_aggregated, 32);
    assert_int_equal(out.os_image_hash_len, 0);
    assert_string_equal(out.key_provider_name, "kms");
    assert_int_equal(out.init_script_count, 2);
    assert_memory_equal(out.init_script_hashes[1], h2, 32);
    ds_app_info_done(&out);
    /* truncated, trailing, wrong count */
    for (size_t n = 0; n < len; n++) {
        assert_true(ds_ratls_app_info_decode(enc, n, &out) < 0);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, enc, len);
    longer[len] = 0xc0;
    assert_int_equal(ds_ratls_app_info_decode(longer, len + 1, &out), -DS_E_FORMAT);
    longer[0] = 0x97;
    assert_int_equal(ds_ratls_app_info_decode(longer, len, &out), -DS_E_FORMAT);
    free(longer);
    free(enc);
    /* no init scripts -> nil; integer-array byte fields are accepted */
    in.init_script_count = 0;
    assert_int_equal(ds_ratls_app_info_encode(&in, &enc, &len), 0);
    assert_int_equal(enc[len - 1], 0xc0);
    free(enc);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 8);
    assert_int_equal(ds_mp_pack_int_array(&pk, app_id, 20), 0);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ds_mp_pack_bin(&pk, NULL, 0), 0);
    }
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ds_mp_pack_int_array(&pk, ch, 32), 0);
    }
    assert_int_equal(ds_mp_pack_bin(&pk, NULL, 0), 0);
    assert_int_equal(ds_mp_pack_bin(&pk, NULL, 0), 0);
    assert_int_equal(ds_ratls_app_info_decode((const uint8_t *)sb.data, sb.size, &out), 0);
    assert_memory_equal(out.app_id, app_id, 20);
    assert_memory_equal(out.mr_aggregated, ch, 32);
    assert_null(out.key_provider_name);
    ds_app_info_done(&out);
    msgpack_sbuffer_destroy(&sb);
    /* device_id of the wrong length */
    static const uint8_t short_dev[] = {0x98, 0xc4, 0, 0xc4, 0, 0xc4, 0, 0xc4, 1, 0};
    assert_int_equal(ds_ratls_app_info_decode(short_dev, sizeof(short_dev), &out), -DS_E_FORMAT);
}

/* ---- CSR ------------------------------------------------------------------------------------ */

static void test_csr_vector(void **state)
{
    (void)state;
    /* spec §6.6 frozen vector */
    const char *want_hex = "44"
                           "706c65617365207369676e20636572743a" /* "please sign cert:" */
                           "0c010203"
                           "00"
                           "40"
                           "746573742e6578616d706c652e636f6d" /* "test.example.com" */
                           "00010000000000"
                           "0000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000"
                           "0000000000000000000000000000000000000000000000000000000000000000"
                           "00";
    uint8_t zero_rd[64] = {0};
    struct ds_attestation *a = NULL;
    uint8_t *att = NULL;
    size_t att_len = 0;
    assert_int_equal(ds_attestation_new_tdx(NULL, 0, NULL, NULL, zero_rd, NULL, &a), 0);
    assert_int_equal(ds_attestation_encode(a, DS_ATT_WIRE_AUTO, &att, &att_len), 0);
    ds_attestation_free(a);

    struct ds_csr csr;
    memset(&csr, 0, sizeof(csr));
    csr.confirm = (char *)DS_CSR_CONFIRM;
    csr.pubkey = (uint8_t *)"\x01\x02\x03";
    csr.pubkey_len = 3;
    csr.config.subject = (char *)"test.example.com";
    csr.config.usage_server_auth = true;
    csr.attestation = att;
    csr.attestation_len = att_len;
    uint8_t *enc = NULL;
    size_t len = 0;
    assert_int_equal(ds_csr_encode(&csr, &enc, &len), 0);
    char *hex = ds_hex_strdup(enc, len);
    assert_string_equal(hex, want_hex);
    free(hex);

    struct ds_csr d;
    assert_int_equal(ds_csr_decode(enc, len, &d), 0);
    assert_string_equal(d.confirm, DS_CSR_CONFIRM);
    assert_int_equal(d.pubkey_len, 3);
    assert_null(d.config.org_name);
    assert_string_equal(d.config.subject, "test.example.com");
    assert_int_equal(d.config.alt_name_count, 0);
    assert_true(d.config.usage_server_auth);
    assert_false(d.config.usage_client_auth || d.config.ext_quote || d.config.ext_app_info ||
                 d.config.has_not_before || d.config.has_not_after);
    assert_int_equal(d.attestation_len, att_len);
    assert_memory_equal(d.attestation, att, att_len);
    ds_csr_done(&d);

    /* every prefix that ends inside the fixed fields is truncated */
    for (size_t n = 0; n < 47; n++) {
        assert_int_equal(ds_csr_decode(enc, n, &d), -DS_E_TRUNCATED);
    }
    /* a bool that is not 0/1, an option tag that is not 0/1 */
    assert_int_equal(enc[41], 1); /* usage_server_auth */
    enc[41] = 2;
    assert_int_equal(ds_csr_decode(enc, len, &d), -DS_E_FORMAT);
    enc[41] = 1;
    enc[45] = 2; /* not_before option tag */
    assert_int_equal(ds_csr_decode(enc, len, &d), -DS_E_FORMAT);
    enc[45] = 0;
    /* the signature: a P-256 SPKI is needed, so 010203 is refused */
    assert_int_equal(ds_csr_verify(2, enc, len, (const uint8_t *)"\x30\x00", 2, &d), -DS_E_FORMAT);
    assert_int_equal(ds_csr_verify(3, enc, len, (const uint8_t *)"\x30\x00", 2, &d),
                     -DS_E_UNSUPPORTED);
    free(enc);
    free(att);
}

static void test_csr_sign(void **state)
{
    struct env *e = *state;
    EVP_PKEY *key = new_key(), *other = new_key();
    uint8_t *spki = NULL, *att = NULL, *enc = NULL, *sig = NULL;
    size_t spki_len = 0, att_len = 0, len = 0, sig_len = 0;
    char *alts[] = {(char *)"app.example", (char *)"10.0.0.1"};
    assert_int_equal(ds_ratls_spki_der(key, &spki, &spki_len), 0);
    attestation_ext(e, key, &att, &att_len);

    struct ds_csr csr;
    memset(&csr, 0, sizeof(csr));
    csr.confirm = (char *)DS_CSR_CONFIRM;
    csr.pubkey = spki;
    csr.pubkey_len = spki_len;
    csr.config.org_name = (char *)"Org";
    csr.config.subject = (char *)"dstack-guest-agent";
    csr.config.alt_names = alts;
    csr.config.alt_name_count = 2;
    csr.config.usage_client_auth = true;
    csr.config.ext_quote = true;
    csr.config.ext_app_info = true;
    csr.config.has_not_after = true;
    csr.config.not_after = (uint64_t)(NOW + TEN_DAYS);
    csr.attestation = att;
    csr.attestation_len = att_len;
    assert_int_equal(ds_csr_encode(&csr, &enc, &len), 0);
    assert_int_equal(ds_csr_sign(key, enc, len, &sig, &sig_len), 0);

    struct ds_csr d;
    assert_int_equal(ds_csr_verify(2, enc, len, sig, sig_len, &d), 0);
    assert_string_equal(d.config.org_name, "Org");
    assert_int_equal(d.config.alt_name_count, 2);
    assert_string_equal(d.config.alt_names[1], "10.0.0.1");
    assert_true(d.config.has_not_after);
    assert_true(d.config.not_after == (uint64_t)(NOW + TEN_DAYS));
    /* the trailing attestation verifies and is bound to the CSR key */
    struct ds_attestation *a = NULL;
    struct ds_attestation_result res;
    uint8_t rd[64];
    assert_int_equal(ds_attestation_decode(d.attestation, d.attestation_len, &a), 0);
    assert_int_equal(ds_ratls_report_data(key, rd), 0);
    struct ds_attestation_verify_opts o = e->opts;
    o.expected_report_data = rd;
    assert_int_equal(ds_attestation_verify(a, &o, &res), 0);
    ds_attestation_result_done(&res);
    ds_attestation_free(a);
    ds_csr_done(&d);

    /* signature by another key, altered body, wrong confirm word */
    uint8_t *sig2 = NULL;
    size_t sig2_len = 0;
    assert_int_equal(ds_csr_sign(other, enc, len, &sig2, &sig2_len), 0);
    assert_int_equal(ds_csr_verify(2, enc, len, sig2, sig2_len, &d), -DS_E_SIGNATURE);
    enc[len - 1] ^= 1;
    assert_int_equal(ds_csr_verify(2, enc, len, sig, sig_len, &d), -DS_E_SIGNATURE);
    enc[len - 1] ^= 1;
    assert_int_equal(ds_csr_verify(2, enc, len, sig, 0, &d), -DS_E_SIGNATURE);
    free(enc);
    free(sig);
    csr.confirm = (char *)"please sign cert?";
    assert_int_equal(ds_csr_encode(&csr, &enc, &len), 0);
    assert_int_equal(ds_csr_sign(key, enc, len, &sig, &sig_len), 0);
    assert_int_equal(ds_csr_verify(2, enc, len, sig, sig_len, &d), -DS_E_MISMATCH);
    free(enc);
    free(sig);
    free(sig2);

    /* legacy V1: CertConfig without ext_app_info/validity, then quote and JSON event log */
    uint8_t *q = NULL;
    size_t qlen = 0;
    struct ds_event_log *log = NULL;
    char *json = NULL;
    size_t json_len = 0;
    sim_quote_for(e, key, &q, &qlen, &log);
    assert_int_equal(ds_eventlog_to_json(log, 0, &json, &json_len), 0);
    struct ds_buf b;
    ds_buf_init(&b, 1 << 20);
    assert_int_equal(ds_scale_put_bytes(&b, DS_CSR_CONFIRM, strlen(DS_CSR_CONFIRM)), 0);
    assert_int_equal(ds_scale_put_bytes(&b, spki, spki_len), 0);
    assert_int_equal(ds_buf_u8(&b, 0), 0);
    assert_int_equal(ds_scale_put_bytes(&b, "legacy", 6), 0);
    assert_int_equal(ds_scale_put_compact(&b, 0), 0);
    assert_int_equal(ds_buf_u8(&b, 1), 0);
    assert_int_equal(ds_buf_u8(&b, 0), 0);
    assert_int_equal(ds_buf_u8(&b, 1), 0);
    assert_int_equal(ds_scale_put_bytes(&b, q, qlen), 0);
    assert_int_equal(ds_scale_put_bytes(&b, json, json_len), 0);
    assert_int_equal(ds_csr_sign(key, b.data, b.len, &sig, &sig_len), 0);
    assert_int_equal(ds_csr_verify(1, b.data, b.len, sig, sig_len, &d), 0);
    assert_string_equal(d.config.subject, "legacy");
    assert_true(d.config.ext_quote);
    assert_false(d.config.ext_app_info);
    assert_true(d.attestation_len > qlen);
    assert_int_equal(d.attestation[0], 0x00);
    assert_int_equal(ds_attestation_decode(d.attestation, d.attestation_len, &a), 0);
    assert_int_equal(ds_attestation_verify(a, &o, &res), 0);
    ds_attestation_result_done(&res);
    ds_attestation_free(a);
    ds_csr_done(&d);
    /* V1 with a trailing byte */
    assert_int_equal(ds_buf_u8(&b, 0), 0);
    assert_int_equal(ds_csr_decode_v1(b.data, b.len, &d), -DS_E_FORMAT);
    ds_buf_done(&b);
    free(sig);
    free(json);
    free(q);
    ds_eventlog_free(log);
    free(att);
    free(spki);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_ext_parsing),
        cmocka_unit_test(test_app_info_ext),
        cmocka_unit_test(test_csr_vector),
        cmocka_unit_test_setup_teardown(test_cert_profile, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_verify_ok, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_key_swapped, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_tampered, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_no_attestation, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_intel_root, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_validity, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_legacy_ext, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_ca_chain, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_tls_handshake, env_setup, env_teardown),
        cmocka_unit_test_setup_teardown(test_csr_sign, env_setup, env_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
