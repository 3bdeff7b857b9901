/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack attestation core: Intel DCAP quote parsing (TDX v4/v5, SGX v3), collateral
 * (QuoteCollateralV3 JSON form, PCCS/PCS v4 fetch) and full DCAP verification with a cache
 * of verified chains and collateral. Spec: ../shared/spec/attestation.md §1-2.
 *
 * The verifier is an attester-independent API (Gramine RA-TLS style): it fills a result that
 * names the failed step. It fails closed: anything not positively verified is an error.
 */
#ifndef DSTACK_ATTEST_H
#define DSTACK_ATTEST_H

#include "dstack/base.h"

/* ---- quotes (spec §1) ---------------------------------------------------------------------- */

#define DS_QUOTE_MAX_SIZE     (1024 * 1024) /* dcap-qvl caps each variable field at 1 MiB */
#define DS_TEE_TYPE_SGX       0x00000000u
#define DS_TEE_TYPE_TDX       0x00000081u
#define DS_AK_TYPE_ECDSA_P256 2
#define DS_AK_TYPE_ECDSA_P384 3
#define DS_SGX_REPORT_SIZE    384
#define DS_TD10_REPORT_SIZE   584
#define DS_TD15_REPORT_SIZE   648

enum ds_report_kind { DS_REPORT_SGX = 1, DS_REPORT_TD10 = 2, DS_REPORT_TD15 = 3 };

struct ds_sgx_report {
    uint8_t cpu_svn[16];
    uint32_t misc_select;
    uint8_t attributes[16];
    uint8_t mr_enclave[32];
    uint8_t mr_signer[32];
    uint16_t isv_prod_id;
    uint16_t isv_svn;
    uint8_t report_data[64];
};

struct ds_td_report {
    uint8_t tee_tcb_svn[16];
    uint8_t mr_seam[48];
    uint8_t mr_signer_seam[48];
    uint8_t seam_attributes[8];
    uint8_t td_attributes[8];
    uint8_t xfam[8];
    uint8_t mr_td[48];
    uint8_t mr_config_id[48];
    uint8_t mr_owner[48];
    uint8_t mr_owner_config[48];
    uint8_t rtmr[4][48];
    uint8_t report_data[64];
    /* TD report 1.5 only (zero otherwise) */
    uint8_t tee_tcb_svn2[16];
    uint8_t mr_service_td[48];
};

/*
 * A parsed quote. Pointer fields borrow from the raw bytes given to ds_quote_parse() and are
 * valid as long as those bytes are.
 */
struct ds_quote {
    uint16_t version;
    uint16_t ak_type;
    uint32_t tee_type;
    uint16_t qe_svn;
    uint16_t pce_svn;
    uint8_t qe_vendor_id[16];
    uint8_t user_data[20];
    enum ds_report_kind kind;
    struct ds_sgx_report sgx;   /* when kind == DS_REPORT_SGX */
    struct ds_td_report td;     /* when kind is TD10 or TD15 */
    const uint8_t *signed_data; /* header (+ v5 descriptor) + body */
    size_t signed_len;
    uint8_t signature[64];        /* r||s over signed_data */
    uint8_t attest_key[64];       /* P-256 X||Y */
    const uint8_t *qe_report_raw; /* 384 bytes */
    struct ds_sgx_report qe_report;
    uint8_t qe_report_signature[64];
    const uint8_t *qe_auth_data;
    size_t qe_auth_len;
    uint16_t outer_cert_type; /* 6 for v4/v5; for v3 equal to cert_type */
    uint16_t cert_type;       /* inner certification data type (5 = PEM PCK chain) */
    const uint8_t *cert_data;
    size_t cert_data_len;
    size_t trailing_len; /* bytes after the auth data (tolerated) */
};

/*
 * Parse a DCAP quote (spec §1). Every length is bounds-checked; trailing bytes after the
 * signature data are tolerated. Returns 0, -DS_E_TRUNCATED, -DS_E_FORMAT or -DS_E_UNSUPPORTED
 * (unknown version / TEE type / body type). Does not check signatures or policy.
 */
DS_MUST_USE int ds_quote_parse(const uint8_t *raw, size_t len, struct ds_quote *out);

/* Pointer to the 64 report-data bytes of a parsed quote (SGX or TD). */
const uint8_t *ds_quote_report_data(const struct ds_quote *q);

/* ---- collateral (spec §2.1, §2.8) ---------------------------------------------------------- */

struct ds_collateral {
    char *pck_crl_issuer_chain; /* PEM */
    uint8_t *root_ca_crl;       /* DER */
    size_t root_ca_crl_len;
    uint8_t *pck_crl; /* DER */
    size_t pck_crl_len;
    char *tcb_info_issuer_chain; /* PEM */
    char *tcb_info;              /* exact signed JSON bytes */
    size_t tcb_info_len;
    uint8_t *tcb_info_signature; /* raw r||s */
    size_t tcb_info_signature_len;
    char *qe_identity_issuer_chain;
    char *qe_identity; /* exact signed JSON bytes */
    size_t qe_identity_len;
    uint8_t *qe_identity_signature;
    size_t qe_identity_signature_len;
    char *pck_certificate_chain; /* optional PEM, NULL when absent */
};

#define DS_COLLATERAL_MAX_JSON (4 * 1024 * 1024)

/* Load the JSON form (../shared/testdata/dcap/ *_collateral.json files). Errors name the field in
 * err (NUL-terminated, may be NULL). */
DS_MUST_USE int ds_collateral_from_json(const char *json, size_t len, struct ds_collateral **out,
                                        char *err, size_t err_size);
/* Serialize to the same JSON form (malloc'd, NUL-terminated). */
DS_MUST_USE int ds_collateral_to_json(const struct ds_collateral *c, char **out);
void ds_collateral_free(struct ds_collateral *c);
/*
 * Fetch collateral for a quote from a PCCS or Intel PCS v4 base URL (spec §2.8) with libcurl.
 * timeout_ms 0 = default (180 s). pck_certificate_chain is set only for quotes with
 * certification data type 2/3 (encrypted PPID), whose chain is fetched from the PCCS.
 * Returns 0, or -EINVAL (bad argument or base URL), the quote parser's errors, -DS_E_CERT
 * (unusable PCK chain or leaf), -DS_E_UNSUPPORTED (certification data type not 2, 3 or 5),
 * -DS_E_NETWORK (transport failure, non-2xx), -DS_E_LIMIT (oversized response),
 * -DS_E_PROTOCOL (missing header, bad body, bad percent-encoding), -DS_E_MISMATCH (SGX-TCBm
 * differs from the quote) or -ENOMEM.
 */
DS_MUST_USE int ds_collateral_fetch(const char *base_url, const uint8_t *quote, size_t quote_len,
                                    long timeout_ms, struct ds_collateral **out, char *err,
                                    size_t err_size);

/* ---- verification (spec §2.2-2.7) ---------------------------------------------------------- */

enum ds_tcb_status {
    DS_TCB_UP_TO_DATE = 0,
    DS_TCB_SW_HARDENING_NEEDED,
    DS_TCB_CONFIGURATION_NEEDED,
    DS_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED,
    DS_TCB_OUT_OF_DATE,
    DS_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED,
    DS_TCB_REVOKED,
    DS_TCB_STATUS_MAX
};
const char *ds_tcb_status_name(enum ds_tcb_status s);
/* Parse an Intel status string; -DS_E_FORMAT for anything unknown. */
DS_MUST_USE int ds_tcb_status_parse(const char *s, enum ds_tcb_status *out);

/* The step that failed, in verification order; names are stable (JSON `failed_step`). */
enum ds_verify_step {
    DS_STEP_NONE = 0,
    DS_STEP_COLLATERAL,          /* "collateral": CRL/JSON decode */
    DS_STEP_ROOT_CA,             /* "root_ca": anchor validity and root CA CRL */
    DS_STEP_QUOTE_FORMAT,        /* "quote_format" */
    DS_STEP_TCB_INFO,            /* "tcb_info": dates, chain, signature, JSON */
    DS_STEP_QE_IDENTITY,         /* "qe_identity": dates, chain, signature, JSON, id/version */
    DS_STEP_PCK_CHAIN,           /* "pck_chain": chain to root with CRLs, SGX extension */
    DS_STEP_QE_REPORT_SIGNATURE, /* "qe_report_signature" */
    DS_STEP_QE_REPORT_BINDING,   /* "qe_report_binding" */
    DS_STEP_QE_IDENTITY_POLICY,  /* "qe_identity_policy": mrsigner/prodid/misc/attrs/isvsvn */
    DS_STEP_QUOTE_SIGNATURE,     /* "quote_signature" */
    DS_STEP_PLATFORM_TCB,        /* "platform_tcb": fmspc, pceid, level match, module identity */
    DS_STEP_TCB_STATUS,          /* "tcb_status": Revoked */
    DS_STEP_ATTRIBUTES,          /* "attributes": debug, reserved bits, SEPT_VE, service TD */
    DS_STEP_MAX
};
const char *ds_verify_step_name(enum ds_verify_step s);

#define DS_ADVISORY_MAX 64

struct ds_verify_result {
    bool ok;
    enum ds_verify_step failed_step;
    int err;                   /* negative code on failure */
    char message[256];         /* precise reason on failure */
    enum ds_tcb_status status; /* final merged status (valid when ok) */
    enum ds_tcb_status platform_status;
    enum ds_tcb_status qe_status;
    char *advisory_ids[DS_ADVISORY_MAX]; /* malloc'd strings, final merged list */
    size_t advisory_count;
    uint8_t fmspc[6];
    uint8_t ppid[16];
    uint8_t pce_id[2];
    struct ds_quote quote; /* parsed quote; borrowed pointers into the caller's bytes */
};
void ds_verify_result_done(struct ds_verify_result *r);

struct ds_verifier;

/*
 * Create a verifier trusting root_der (DER X.509), or Intel's SGX Root CA when root_der is
 * NULL. The verifier owns caches of verified chains and collateral keyed by their bytes; it is
 * not thread-safe (use one per thread).
 */
DS_MUST_USE int ds_verifier_new(const uint8_t *root_der, size_t root_len, struct ds_verifier **out);
void ds_verifier_free(struct ds_verifier *v);
void ds_verifier_clear_cache(struct ds_verifier *v);
/* Policy switches (default false: fail closed). */
void ds_verifier_allow_debug(struct ds_verifier *v, bool allow);
/* true when the verifier's anchor is the genuine Intel SGX Root CA. */
bool ds_verifier_is_intel_root(const struct ds_verifier *v);

/*
 * Verify quote against collateral at time now (unix seconds). Returns 0 when the quote
 * verifies (res->ok), or the negative error of the failed step (res->failed_step, res->message
 * say which and why). res must be released with ds_verify_result_done() either way.
 */
DS_MUST_USE int ds_verify_quote(struct ds_verifier *v, const uint8_t *quote, size_t quote_len,
                                const struct ds_collateral *coll, int64_t now,
                                struct ds_verify_result *res);

/* The embedded Intel SGX Root CA (DER). */
extern const uint8_t ds_intel_sgx_root_ca_der[];
extern const size_t ds_intel_sgx_root_ca_der_len;

#endif /* DSTACK_ATTEST_H */
