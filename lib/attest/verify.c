/* SPDX-License-Identifier: Apache-2.0 */
/*
 * DCAP quote verification (spec: ../shared/spec/attestation.md §2.2), in dcap-qvl's order:
 * root CA and CRLs, quote format, TCB info, QE identity, PCK chain, QE report signature and
 * binding, QE identity policy, quote signature, platform TCB, status merge, attribute policy.
 * Every step either positively verifies or fills the result with the step, the error and
 * the precise reason (fail closed).
 *
 * Speed comes from the cache (verify_cache.c): collateral verified once (steps 0, 2, 3: the
 * X.509 store with both CRLs, the parsed TCB info and QE identity) and PCK chains verified
 * once (step 4) are kept by the SHA-256 of their bytes with the time window in which they
 * stay valid, so a repeat verification does only the per-quote work: parse, two ECDSA
 * verifications, one hash and TCB matching on already parsed levels.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include "attest/verify_internal.h"
#include "dstack/crypto.h"

#define MSG_MAX             256
#define CERT_TYPE_PCK_CHAIN 5
#define QE_AUTH_DATA_SIZE   32
#define SGX_ATTR_DEBUG      0x02

/* td_attributes bits over the little-endian u64 (§1.3). */
#define TD_ATTR_DEBUG           (UINT64_C(1) << 0)
#define TD_ATTR_TUD_RESERVED    UINT64_C(0x00000000000000fe)
#define TD_ATTR_SEC_RESERVED    UINT64_C(0x000000000fffff00) /* bits 8-27 */
#define TD_ATTR_SEPT_VE_DISABLE (UINT64_C(1) << 28)
#define TD_ATTR_RESERVED_29     (UINT64_C(1) << 29)
#define TD_ATTR_OTHER_RESERVED  UINT64_C(0x7fffffff00000000) /* bits 32-62 */

static const uint8_t intel_qe_vendor_id[16] = {0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9,
                                               0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07};

struct ds_verifier {
    X509 *root;
    uint8_t root_hash[DS_SHA256_LEN];
    bool is_intel;
    bool allow_debug;
    struct ds_attest_cache cache;
};

/* ---- names ----------------------------------------------------------------------------------- */

static const char *const step_names[DS_STEP_MAX] = {
    [DS_STEP_NONE] = "none",
    [DS_STEP_COLLATERAL] = "collateral",
    [DS_STEP_ROOT_CA] = "root_ca",
    [DS_STEP_QUOTE_FORMAT] = "quote_format",
    [DS_STEP_TCB_INFO] = "tcb_info",
    [DS_STEP_QE_IDENTITY] = "qe_identity",
    [DS_STEP_PCK_CHAIN] = "pck_chain",
    [DS_STEP_QE_REPORT_SIGNATURE] = "qe_report_signature",
    [DS_STEP_QE_REPORT_BINDING] = "qe_report_binding",
    [DS_STEP_QE_IDENTITY_POLICY] = "qe_identity_policy",
    [DS_STEP_QUOTE_SIGNATURE] = "quote_signature",
    [DS_STEP_PLATFORM_TCB] = "platform_tcb",
    [DS_STEP_TCB_STATUS] = "tcb_status",
    [DS_STEP_ATTRIBUTES] = "attributes",
};

const char *ds_verify_step_name(enum ds_verify_step s)
{
    if ((unsigned)s >= DS_STEP_MAX) {
        return "unknown";
    }
    return step_names[s];
}

/* ---- verifier -------------------------------------------------------------------------------- */

int ds_verifier_new(const uint8_t *root_der, size_t root_len, struct ds_verifier **out)
{
    struct ds_verifier *v = NULL;
    const unsigned char *p;
    int r = 0;

    if (!out) {
        return -EINVAL;
    }
    if (!root_der) {
        root_der = ds_intel_sgx_root_ca_der;
        root_len = ds_intel_sgx_root_ca_der_len;
    }
    if (root_len == 0 || root_len > DS_ATTEST_MAX_CHAIN_PEM) {
        return -DS_E_FORMAT;
    }
    v = calloc(1, sizeof(*v));
    if (!v) {
        return -ENOMEM;
    }
    ERR_set_mark();
    p = root_der;
    v->root = d2i_X509(NULL, &p, (long)root_len);
    ERR_pop_to_mark();
    if (!v->root || p != root_der + root_len) {
        r = -DS_E_FORMAT;
        goto out;
    }
    ds_sha256(root_der, root_len, v->root_hash);
    v->is_intel = root_len == ds_intel_sgx_root_ca_der_len &&
                  memcmp(root_der, ds_intel_sgx_root_ca_der, root_len) == 0;
    *out = v;
    v = NULL;
out:
    ds_verifier_free(v);
    return r;
}

void ds_verifier_free(struct ds_verifier *v)
{
    if (!v) {
        return;
    }
    ds_attest_cache_clear(&v->cache);
    X509_free(v->root);
    free(v);
}

void ds_verifier_clear_cache(struct ds_verifier *v)
{
    if (v) {
        ds_attest_cache_clear(&v->cache);
    }
}

void ds_verifier_allow_debug(struct ds_verifier *v, bool allow)
{
    if (v) {
        v->allow_debug = allow;
    }
}

bool ds_verifier_is_intel_root(const struct ds_verifier *v)
{
    return v && v->is_intel;
}

void ds_verify_result_done(struct ds_verify_result *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->advisory_count && i < DS_ADVISORY_MAX; i++) {
        free(r->advisory_ids[i]);
    }
    memset(r, 0, sizeof(*r));
}

/* ---- verification state ---------------------------------------------------------------------- */

struct vstate {
    struct ds_verifier *v;
    const struct ds_collateral *coll;
    int64_t now;
    struct ds_verify_result *res;
    char msg[MSG_MAX]; /* scratch for helpers that explain a failure */
    /* The issuer chain verified for the TCB info; Intel uses the same one for the QE
     * identity, which then needs no second chain verification in the same call. */
    const char *signer_chain;
    uint8_t signer_pub[64];
};

static int fail(struct vstate *s, enum ds_verify_step step, int err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct vstate *s, enum ds_verify_step step, int err, const char *fmt, ...)
{
    va_list ap;
    s->res->failed_step = step;
    s->res->err = err;
    va_start(ap, fmt);
    vsnprintf(s->res->message, sizeof(s->res->message), fmt, ap);
    va_end(ap);
    return err;
}

static size_t str_len(const char *s)
{
    return s ? strlen(s) : 0;
}

/* ds_sha256_v fills 0xff when hashing itself failed; never key the cache on that. */
static bool key_usable(const uint8_t key[DS_SHA256_LEN])
{
    for (size_t i = 0; i < DS_SHA256_LEN; i++) {
        if (key[i] != 0xff) {
            return true;
        }
    }
    return false;
}

/* Key of the collateral-level cache entry: every byte steps 0, 2 and 3 depend on. */
static bool collateral_key(const struct ds_verifier *v, const struct ds_collateral *c,
                           uint8_t key[DS_SHA256_LEN])
{
    size_t lens[10] = {
        str_len(c->pck_crl_issuer_chain),
        c->root_ca_crl_len,
        c->pck_crl_len,
        str_len(c->tcb_info_issuer_chain),
        c->tcb_info_len,
        c->tcb_info_signature_len,
        str_len(c->qe_identity_issuer_chain),
        c->qe_identity_len,
        c->qe_identity_signature_len,
        DS_SHA256_LEN,
    };
    ds_sha256_v(key, 11, lens, sizeof(lens), v->root_hash, sizeof(v->root_hash),
                c->pck_crl_issuer_chain, lens[0], c->root_ca_crl, lens[1], c->pck_crl, lens[2],
                c->tcb_info_issuer_chain, lens[3], c->tcb_info, lens[4], c->tcb_info_signature,
                lens[5], c->qe_identity_issuer_chain, lens[6], c->qe_identity, lens[7],
                c->qe_identity_signature, lens[8]);
    return key_usable(key);
}

/* ---- step 0: root CA and CRLs ---------------------------------------------------------------- */

static int step_root(struct vstate *s, struct ds_attest_coll_entry *e)
{
    const struct ds_collateral *c = s->coll;
    int r = ds_attest_crl_der(c->root_ca_crl, c->root_ca_crl_len, &e->root_crl);
    if (r < 0) {
        return fail(s, DS_STEP_COLLATERAL, r, "root_ca_crl is not a DER CRL (%s)", ds_strerror(r));
    }
    r = ds_attest_crl_der(c->pck_crl, c->pck_crl_len, &e->pck_crl);
    if (r < 0) {
        return fail(s, DS_STEP_COLLATERAL, r, "pck_crl is not a DER CRL (%s)", ds_strerror(r));
    }
    r = ds_attest_check_root(s->v->root, e->root_crl, s->now, &e->window, s->msg, sizeof(s->msg));
    if (r < 0) {
        return fail(s, DS_STEP_ROOT_CA, r, "%s", s->msg);
    }
    /* Conservative: the collateral entry also lapses with the PCK CRL. A PCK CRL without
     * nextUpdate leaves the window as is; step 4 refuses such a CRL. */
    if (ds_attest_crl_window(e->pck_crl, &e->window) < 0) {
        /* no nextUpdate: nothing to narrow by, and step 4 refuses this CRL */
    }
    e->store = X509_STORE_new();
    if (!e->store || X509_STORE_add_cert(e->store, s->v->root) != 1 ||
        X509_STORE_add_crl(e->store, e->root_crl) != 1 ||
        X509_STORE_add_crl(e->store, e->pck_crl) != 1 ||
        X509_STORE_set_flags(e->store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL) != 1) {
        return fail(s, DS_STEP_ROOT_CA, -ENOMEM, "cannot build the X.509 store");
    }
    return 0;
}

/* ---- step 1: quote format -------------------------------------------------------------------- */

static int step_quote(struct vstate *s, const uint8_t *raw, size_t len, struct ds_quote *q)
{
    int r = ds_quote_parse(raw, len, q);
    if (r < 0) {
        struct ds_reader rd;
        uint16_t version = 0;
        ds_rd_init(&rd, raw, len);
        if (ds_rd_u16le(&rd, &version) == 0 && (version < 3 || version > 5)) {
            return fail(s, DS_STEP_QUOTE_FORMAT, r, "Unsupported DCAP quote version %u", version);
        }
        return fail(s, DS_STEP_QUOTE_FORMAT, r, "quote cannot be decoded: %s", ds_strerror(r));
    }
    s->res->quote = *q;
    if (memcmp(q->qe_vendor_id, intel_qe_vendor_id, sizeof(intel_qe_vendor_id)) != 0) {
        return fail(s, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED, "Unsupported QE vendor ID");
    }
    if (q->tee_type == DS_TEE_TYPE_SGX && q->version != 3) {
        return fail(s, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED,
                    "SGX TEE quote must have version 3");
    }
    if (q->tee_type == DS_TEE_TYPE_TDX && q->version != 4 && q->version != 5) {
        return fail(s, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED,
                    "TDX TEE quote must have version 4 or 5");
    }
    if (q->ak_type != DS_AK_TYPE_ECDSA_P256) {
        return fail(s, DS_STEP_QUOTE_FORMAT, -DS_E_UNSUPPORTED,
                    "Unsupported DCAP attestation key type %u", q->ak_type);
    }
    return 0;
}

/* ---- steps 2 and 3: signed JSON -------------------------------------------------------------- */

/* Chain of the signing certificate and the signature over the exact JSON bytes. */
static int signer_key(struct vstate *s, struct ds_attest_coll_entry *e, enum ds_verify_step step,
                      const char *what, const char *chain_pem, uint8_t pub[64])
{
    STACK_OF(X509) *chain = NULL;
    char label[48];
    if (chain_pem && s->signer_chain && strcmp(chain_pem, s->signer_chain) == 0) {
        memcpy(pub, s->signer_pub, 64); /* same bytes, same time: same verdict and window */
        return 0;
    }
    int r = ds_attest_pem_chain(chain_pem, str_len(chain_pem), &chain);
    if (r == -DS_E_NOT_FOUND) {
        r = fail(s, step, -DS_E_CERT, "Certificate chain is too short for %s", what);
        goto out;
    }
    if (r < 0) {
        r = fail(s, step, r, "%s_issuer_chain is not a PEM certificate chain (%s)", what,
                 ds_strerror(r));
        goto out;
    }
    snprintf(label, sizeof(label), "%s_issuer_chain", what);
    r = ds_attest_verify_chain(e->store, chain, s->now, &e->window, label, s->msg, sizeof(s->msg));
    if (r < 0) {
        r = fail(s, step, r, "%s", s->msg);
        goto out;
    }
    r = ds_attest_cert_p256_pub(sk_X509_value(chain, 0), pub);
    if (r < 0) {
        r = fail(s, step, r, "%s signing certificate key is not ECDSA P-256", what);
        goto out;
    }
    s->signer_chain = chain_pem;
    memcpy(s->signer_pub, pub, 64);
out:
    sk_X509_pop_free(chain, X509_free);
    return r;
}

/* Chain of the signing certificate and the signature over the exact JSON bytes. */
static int check_signed_json(struct vstate *s, struct ds_attest_coll_entry *e,
                             enum ds_verify_step step, const char *what, const char *chain_pem,
                             const char *json, size_t json_len, const uint8_t *sig, size_t sig_len)
{
    uint8_t pub[64];
    DS_TRY(signer_key(s, e, step, what, chain_pem, pub));
    if (!json || json_len == 0) {
        return fail(s, step, -DS_E_NOT_FOUND, "%s is missing", what);
    }
    if (!sig || sig_len != 64) {
        return fail(s, step, -DS_E_FORMAT, "%s_signature must be 64 bytes (r||s)", what);
    }
    if (ds_ecdsa_verify_raw(DS_EC_P256, pub, sizeof(pub), json, json_len, sig, sig_len) != 0) {
        return fail(s, step, -DS_E_SIGNATURE, "Signature is invalid for %s", what);
    }
    return 0;
}

/* issueDate <= now <= nextUpdate (dcap-qvl's comparison for the JSON dates). */
static int check_dates(struct vstate *s, struct ds_attest_window *w, enum ds_verify_step step,
                       const char *name, int64_t issue, int64_t next)
{
    if (s->now < issue) {
        return fail(s, step, -DS_E_EXPIRED, "%s issue date is in the future", name);
    }
    if (s->now > next) {
        return fail(s, step, -DS_E_EXPIRED, "%s expired", name);
    }
    ds_attest_window_narrow(w, issue, next);
    return 0;
}

static int step_tcb_info(struct vstate *s, struct ds_attest_coll_entry *e)
{
    const struct ds_collateral *c = s->coll;
    DS_TRY(check_signed_json(s, e, DS_STEP_TCB_INFO, "tcb_info", c->tcb_info_issuer_chain,
                             c->tcb_info, c->tcb_info_len, c->tcb_info_signature,
                             c->tcb_info_signature_len));
    int r = ds_attest_tcb_info_parse(c->tcb_info, c->tcb_info_len, &e->tcb, s->msg, sizeof(s->msg));
    if (r < 0) {
        return fail(s, DS_STEP_TCB_INFO, r, "%s", r == -ENOMEM ? "out of memory" : s->msg);
    }
    return check_dates(s, &e->window, DS_STEP_TCB_INFO, "TCBInfo", e->tcb->issue_date,
                       e->tcb->next_update);
}

static int step_qe_identity(struct vstate *s, struct ds_attest_coll_entry *e)
{
    const struct ds_collateral *c = s->coll;
    DS_TRY(check_signed_json(s, e, DS_STEP_QE_IDENTITY, "qe_identity", c->qe_identity_issuer_chain,
                             c->qe_identity, c->qe_identity_len, c->qe_identity_signature,
                             c->qe_identity_signature_len));
    int r = ds_attest_qe_identity_parse(c->qe_identity, c->qe_identity_len, &e->qe, s->msg,
                                        sizeof(s->msg));
    if (r < 0) {
        return fail(s, DS_STEP_QE_IDENTITY, r, "%s", r == -ENOMEM ? "out of memory" : s->msg);
    }
    return check_dates(s, &e->window, DS_STEP_QE_IDENTITY, "QE Identity", e->qe->issue_date,
                       e->qe->next_update);
}

/* The part of step 3 that depends on the quote: id and version must fit its TEE type. */
static int step_qe_identity_kind(struct vstate *s, const struct ds_attest_qe_identity *qi,
                                 const struct ds_quote *q)
{
    bool ok;
    if (q->tee_type == DS_TEE_TYPE_SGX) {
        ok = strcmp(qi->id, "QE") == 0 && qi->version == 2;
    } else {
        ok = strcmp(qi->id, "TD_QE") == 0 && (qi->version == 2 || qi->version == 3);
    }
    if (!ok) {
        return fail(s, DS_STEP_QE_IDENTITY, -DS_E_MISMATCH,
                    "QE identity id \"%s\" version %u does not fit a %s quote", qi->id, qi->version,
                    q->tee_type == DS_TEE_TYPE_SGX ? "SGX" : "TDX");
    }
    return 0;
}

/* ---- step 4: PCK chain ----------------------------------------------------------------------- */

static int build_pck(struct vstate *s, struct ds_attest_coll_entry *ce, const char *pem,
                     size_t pem_len, struct ds_attest_pck_entry *pe)
{
    STACK_OF(X509) *chain = NULL;
    int r = ds_attest_pem_chain(pem, pem_len, &chain);
    if (r < 0) {
        r = fail(s, DS_STEP_PCK_CHAIN, r == -DS_E_NOT_FOUND ? -DS_E_CERT : r,
                 "PCK certificate chain is not a PEM certificate chain (%s)", ds_strerror(r));
        goto out;
    }
    r = ds_attest_verify_chain(ce->store, chain, s->now, &pe->window, "pck_chain", s->msg,
                               sizeof(s->msg));
    if (r < 0) {
        r = fail(s, DS_STEP_PCK_CHAIN, r, "%s", s->msg);
        goto out;
    }
    /* The CRLs OpenSSL consulted must stay current for a cached verdict to hold. */
    if (ds_attest_crl_window(ce->pck_crl, &pe->window) < 0 ||
        ds_attest_crl_window(ce->root_crl, &pe->window) < 0) {
        r = fail(s, DS_STEP_PCK_CHAIN, -DS_E_CERT, "pck_crl has no nextUpdate");
        goto out;
    }
    r = ds_attest_pck_parse(sk_X509_value(chain, 0), &pe->info, s->msg, sizeof(s->msg));
    if (r < 0) {
        r = fail(s, DS_STEP_PCK_CHAIN, r, "%s", s->msg);
        goto out;
    }
out:
    sk_X509_pop_free(chain, X509_free);
    return r;
}

static int step_pck(struct vstate *s, struct ds_attest_coll_entry *ce, bool cacheable,
                    const struct ds_quote *q, struct ds_attest_pck_info *out,
                    struct ds_attest_pck_entry **out_entry)
{
    const char *pem;
    size_t pem_len;
    struct ds_attest_pck_entry *pe = NULL;
    int r;

    if (s->coll->pck_certificate_chain) {
        pem = s->coll->pck_certificate_chain;
        pem_len = strlen(pem);
    } else {
        if (q->cert_type != CERT_TYPE_PCK_CHAIN) {
            return fail(s, DS_STEP_PCK_CHAIN, -DS_E_UNSUPPORTED,
                        "Unsupported DCAP PCK cert format (certification data type %u)",
                        q->cert_type);
        }
        pem = (const char *)q->cert_data;
        pem_len = q->cert_data_len;
    }
    if (pem_len > DS_ATTEST_MAX_CHAIN_PEM + 1) {
        /* refuse before hashing: a real chain is ~4 KB (+ a NUL) */
        return fail(s, DS_STEP_PCK_CHAIN, -DS_E_LIMIT, "PCK certificate chain is too large");
    }
    pe = calloc(1, sizeof(*pe));
    if (!pe) {
        return fail(s, DS_STEP_PCK_CHAIN, -ENOMEM, "out of memory");
    }
    ds_sha256_v(pe->key, 2, ce->key, sizeof(ce->key), pem, pem_len);
    cacheable = cacheable && key_usable(pe->key);
    if (cacheable) {
        const struct ds_attest_pck_entry *hit = ds_attest_cache_find_pck(&s->v->cache, pe->key);
        if (hit && ds_attest_window_holds(&hit->window, s->now)) {
            *out = hit->info;
            *out_entry = (struct ds_attest_pck_entry *)hit;
            r = 0;
            goto out;
        }
    }
    ds_attest_window_init(&pe->window);
    r = build_pck(s, ce, pem, pem_len, pe);
    if (r < 0) {
        goto out;
    }
    *out = pe->info;
    if (cacheable) {
        *out_entry = ds_attest_cache_put_pck(&s->v->cache, &pe);
    }
out:
    free(pe);
    return r;
}

/* ---- steps 5 and 6: QE report ---------------------------------------------------------------- */

static int step_qe_report(struct vstate *s, const struct ds_quote *q,
                          const struct ds_attest_pck_info *pck, struct ds_attest_pck_entry *pe)
{
    uint8_t h[DS_SHA256_LEN], seen[DS_SHA256_LEN];
    ds_sha256_v(seen, 2, q->qe_report_raw, (size_t)DS_SGX_REPORT_SIZE, q->qe_report_signature,
                sizeof(q->qe_report_signature));
    if (!(pe && pe->qe_report_ok_set && ds_ct_equal(seen, pe->qe_report_ok, sizeof(seen)))) {
        if (ds_ecdsa_verify_raw(DS_EC_P256, pck->pub, sizeof(pck->pub), q->qe_report_raw,
                                DS_SGX_REPORT_SIZE, q->qe_report_signature,
                                sizeof(q->qe_report_signature)) != 0) {
            return fail(s, DS_STEP_QE_REPORT_SIGNATURE, -DS_E_SIGNATURE,
                        "Signature is invalid for qe_report in quote");
        }
        if (pe) {
            memcpy(pe->qe_report_ok, seen, sizeof(seen));
            pe->qe_report_ok_set = true;
        }
    }
    /* dcap-qvl requires exactly 32 bytes of QE authentication data (Intel allows any). */
    if (q->qe_auth_len != QE_AUTH_DATA_SIZE) {
        return fail(s, DS_STEP_QE_REPORT_BINDING, -DS_E_FORMAT,
                    "QE authentication data is %zu bytes, expected %d", q->qe_auth_len,
                    QE_AUTH_DATA_SIZE);
    }
    ds_sha256_v(h, 2, q->attest_key, sizeof(q->attest_key), q->qe_auth_data, q->qe_auth_len);
    if (!ds_ct_equal(h, q->qe_report.report_data, sizeof(h))) {
        return fail(s, DS_STEP_QE_REPORT_BINDING, -DS_E_MISMATCH, "QE report hash mismatch");
    }
    return 0;
}

/* ---- step 10: merged status -------------------------------------------------------------------
 */

static int step_status(struct vstate *s, const struct ds_attest_status *platform,
                       const struct ds_attest_status *qe, struct ds_attest_status *final)
{
    *final = *platform;
    if (ds_attest_status_merge(final, qe->status, qe->ids, qe->count) < 0) {
        return fail(s, DS_STEP_TCB_STATUS, -DS_E_LIMIT, "too many advisory IDs");
    }
    s->res->platform_status = platform->status;
    s->res->qe_status = qe->status;
    s->res->status = final->status;
    if (final->status == DS_TCB_REVOKED) {
        return fail(s, DS_STEP_TCB_STATUS, -DS_E_POLICY, "TCB status is invalid: Revoked");
    }
    return 0;
}

/* ---- step 11: attributes --------------------------------------------------------------------- */

static uint64_t le64(const uint8_t b[8])
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | b[i];
    }
    return v;
}

static int step_attributes(struct vstate *s, const struct ds_quote *q)
{
    const enum ds_verify_step st = DS_STEP_ATTRIBUTES;
    if (q->kind == DS_REPORT_SGX) {
        if ((q->sgx.attributes[0] & SGX_ATTR_DEBUG) && !s->v->allow_debug) {
            return fail(s, st, -DS_E_POLICY, "Debug mode is enabled");
        }
        return 0;
    }
    if (q->kind == DS_REPORT_TD15 && !ds_is_zero(q->td.mr_service_td, 48)) {
        return fail(s, st, -DS_E_POLICY, "Invalid MR service TD");
    }
    uint64_t a = le64(q->td.td_attributes);
    if (a & TD_ATTR_TUD_RESERVED) {
        return fail(s, st, -DS_E_POLICY, "Reserved bits in TD attributes are set (TUD)");
    }
    if ((a & TD_ATTR_DEBUG) && !s->v->allow_debug) {
        return fail(s, st, -DS_E_POLICY, "Debug mode is enabled");
    }
    if (a & (TD_ATTR_SEC_RESERVED | TD_ATTR_RESERVED_29 | TD_ATTR_OTHER_RESERVED)) {
        return fail(s, st, -DS_E_POLICY, "Reserved bits in TD attributes are set");
    }
    if (!(a & TD_ATTR_SEPT_VE_DISABLE)) {
        return fail(s, st, -DS_E_POLICY, "SEPT_VE_DISABLE is not enabled");
    }
    /* dstack's validate_tcb: only Intel's TDX module (zero MRSIGNER) is accepted. */
    if (!ds_is_zero(q->td.mr_signer_seam, 48)) {
        return fail(s, st, -DS_E_POLICY, "mr_signer_seam is not zero");
    }
    return 0;
}

/* The verdict's advisory IDs, owned by the result. */
static int fill_advisories(struct vstate *s, const struct ds_attest_status *final)
{
    struct ds_verify_result *res = s->res;
    for (size_t i = 0; i < final->count; i++) {
        res->advisory_ids[i] = strdup(final->ids[i]);
        if (!res->advisory_ids[i]) {
            return fail(s, DS_STEP_TCB_STATUS, -ENOMEM, "out of memory");
        }
        res->advisory_count = i + 1;
    }
    return 0;
}

/* ---- the algorithm --------------------------------------------------------------------------- */

static int verify_steps(struct vstate *s, const uint8_t *raw, size_t len)
{
    struct ds_verify_result *res = s->res;
    struct ds_attest_coll_entry *ce = NULL, *tmp = NULL;
    struct ds_attest_pck_info pck;
    struct ds_attest_pck_entry *pe = NULL;
    struct ds_attest_status platform, qe, final;
    struct ds_quote q;
    uint8_t ckey[DS_SHA256_LEN];
    int r;

    /* Steps 0-3: collateral (reused from the cache inside its window) and quote format. */
    bool cacheable = collateral_key(s->v, s->coll, ckey);
    if (cacheable) {
        ce = ds_attest_cache_find_coll(&s->v->cache, ckey);
        if (ce && !ds_attest_window_holds(&ce->window, s->now)) {
            ce = NULL; /* verify in full; that names the check that no longer holds */
        }
    }
    if (!ce) {
        tmp = calloc(1, sizeof(*tmp));
        if (!tmp) {
            r = fail(s, DS_STEP_COLLATERAL, -ENOMEM, "out of memory");
            goto out;
        }
        memcpy(tmp->key, ckey, sizeof(ckey));
        ds_attest_window_init(&tmp->window);
        r = step_root(s, tmp);
        if (r < 0) {
            goto out;
        }
    }
    r = step_quote(s, raw, len, &q);
    if (r < 0) {
        goto out;
    }
    if (!ce) {
        r = step_tcb_info(s, tmp);
        if (r < 0) {
            goto out;
        }
        r = step_qe_identity(s, tmp);
        if (r < 0) {
            goto out;
        }
        if (cacheable) {
            ce = ds_attest_cache_put_coll(&s->v->cache, &tmp);
        } else {
            ce = tmp;
        }
    }
    r = step_qe_identity_kind(s, ce->qe, &q);
    if (r < 0) {
        goto out;
    }

    /* Step 4: PCK chain (cached per chain bytes and collateral); 5-6: QE report. */
    r = step_pck(s, ce, cacheable, &q, &pck, &pe);
    if (r < 0) {
        goto out;
    }
    memcpy(res->fmspc, pck.fmspc, sizeof(res->fmspc));
    memcpy(res->ppid, pck.ppid, sizeof(res->ppid));
    memcpy(res->pce_id, pck.pce_id, sizeof(res->pce_id));
    r = step_qe_report(s, &q, &pck, pe);
    if (r < 0) {
        goto out;
    }
    /* Step 7: QE identity policy; 8: quote signature; 9: platform TCB. */
    r = ds_attest_match_qe(ce->qe, &q.qe_report, &qe, s->msg, sizeof(s->msg));
    if (r < 0) {
        r = fail(s, DS_STEP_QE_IDENTITY_POLICY, r, "%s", s->msg);
        goto out;
    }
    if (ds_ecdsa_verify_raw(DS_EC_P256, q.attest_key, sizeof(q.attest_key), q.signed_data,
                            q.signed_len, q.signature, sizeof(q.signature)) != 0) {
        r = fail(s, DS_STEP_QUOTE_SIGNATURE, -DS_E_SIGNATURE,
                 "ISV enclave report signature is invalid");
        goto out;
    }
    r = ds_attest_match_platform(ce->tcb, &pck, &q, &platform, s->msg, sizeof(s->msg));
    if (r < 0) {
        r = fail(s, DS_STEP_PLATFORM_TCB, r, "%s", s->msg);
        goto out;
    }
    /* Step 10: merged status, Revoked refused; 11: attribute policy. */
    r = step_status(s, &platform, &qe, &final);
    if (r < 0) {
        goto out;
    }
    r = step_attributes(s, &q);
    if (r < 0) {
        goto out;
    }
    r = fill_advisories(s, &final);
out:
    /* Not inserted: failed, or uncacheable and used for this call only. */
    ds_attest_coll_entry_free(tmp);
    return r;
}

int ds_verify_quote(struct ds_verifier *v, const uint8_t *quote, size_t quote_len,
                    const struct ds_collateral *coll, int64_t now, struct ds_verify_result *res)
{
    struct vstate s;
    int r;

    if (!res) {
        return -EINVAL;
    }
    memset(res, 0, sizeof(*res));
    memset(&s, 0, sizeof(s));
    s.v = v;
    s.coll = coll;
    s.now = now;
    s.res = res;
    if (!v) {
        return fail(&s, DS_STEP_NONE, -EINVAL, "no verifier");
    }
    if (!coll) {
        return fail(&s, DS_STEP_COLLATERAL, -DS_E_NOT_FOUND, "no collateral");
    }
    if (!quote) {
        return fail(&s, DS_STEP_QUOTE_FORMAT, -DS_E_FORMAT, "no quote");
    }
    ERR_set_mark();
    r = verify_steps(&s, quote, quote_len);
    ERR_pop_to_mark();
    res->ok = r == 0;
    if (r < 0) {
        for (size_t i = 0; i < res->advisory_count; i++) {
            free(res->advisory_ids[i]);
            res->advisory_ids[i] = NULL;
        }
        res->advisory_count = 0;
    } else {
        res->failed_step = DS_STEP_NONE;
        res->err = 0;
        res->message[0] = '\0';
    }
    return r;
}
