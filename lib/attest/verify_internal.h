/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interfaces of the DCAP verifier (lib/attest/{verify,verify_cache,tcb,pck}.c): the
 * parsed TCB info / QE identity, the facts taken from a PCK certificate, the X.509 helpers
 * and the cache of verified collateral. Nothing here is part of the public API
 * (include/dstack/attest.h); names carry the ds_attest_ prefix only to keep the static
 * library's symbol space clean. Spec: ../shared/spec/attestation.md §2.
 */
#ifndef DSTACK_ATTEST_VERIFY_INTERNAL_H
#define DSTACK_ATTEST_VERIFY_INTERNAL_H

#include <openssl/x509.h>

#include "dstack/attest.h"

/* ---- limits ---------------------------------------------------------------------------------- */

#define DS_ATTEST_MAX_COMPONENTS       32  /* svn vector length accepted in a TCB level (16 used) */
#define DS_ATTEST_TCB_COMPONENTS       16  /* the count a visited level must have */
#define DS_ATTEST_MAX_LEVELS           256 /* tcbLevels entries */
#define DS_ATTEST_MAX_MODULES          32  /* tdxModuleIdentities entries */
#define DS_ATTEST_MAX_ADVISORY_LEN     64
#define DS_ATTEST_MAX_LEVEL_ADVISORIES 1024 /* per level; a verdict holds DS_ADVISORY_MAX */
#define DS_ATTEST_MAX_CHAIN_CERTS      8    /* certificates in one PEM issuer chain */
#define DS_ATTEST_MAX_CHAIN_PEM        (64 * 1024)
#define DS_ATTEST_MAX_CRL              (DS_QUOTE_MAX_SIZE)
#define DS_ATTEST_CACHE_ENTRIES        64 /* per cache kind; the least recently used is evicted */

/* ---- validity windows ------------------------------------------------------------------------ */

/*
 * The interval of `now` values for which every time check made during one successful
 * verification holds (notBefore/notAfter of each certificate, thisUpdate/nextUpdate of each
 * CRL, issueDate/nextUpdate of the signed JSON). A cached result is reused only inside it.
 */
struct ds_attest_window {
    int64_t lo;
    int64_t hi;
};

void ds_attest_window_init(struct ds_attest_window *w);
void ds_attest_window_narrow(struct ds_attest_window *w, int64_t lo, int64_t hi);
bool ds_attest_window_holds(const struct ds_attest_window *w, int64_t now);

/* ---- TCB info / QE identity (tcb.c) ---------------------------------------------------------- */

struct ds_attest_advisories {
    char **ids;
    size_t count;
};

struct ds_attest_tcb_level {
    uint8_t sgx_svn[DS_ATTEST_MAX_COMPONENTS];
    size_t sgx_count;
    uint8_t tdx_svn[DS_ATTEST_MAX_COMPONENTS];
    size_t tdx_count;
    uint16_t pcesvn;
    enum ds_tcb_status status;
    struct ds_attest_advisories adv;
};

/* A TCB level keyed by a single ISV SVN (QE identity levels, TDX module identity levels). */
struct ds_attest_isv_level {
    uint16_t isvsvn;
    enum ds_tcb_status status;
    struct ds_attest_advisories adv;
};

struct ds_attest_module_identity {
    char id[16];
    uint8_t mrsigner[48];
    uint8_t attributes[8];
    uint8_t attributes_mask[8];
    struct ds_attest_isv_level *levels;
    size_t level_count;
};

struct ds_attest_tcb_info {
    char id[8]; /* "SGX" or "TDX" */
    unsigned version;
    int64_t issue_date;
    int64_t next_update;
    uint8_t fmspc[6];
    uint8_t pce_id[2];
    struct ds_attest_tcb_level *levels; /* canonically sorted (§2.5) */
    size_t level_count;
    bool has_module;
    uint8_t module_mrsigner[48];
    uint8_t module_attributes[8];
    uint8_t module_attributes_mask[8];
    struct ds_attest_module_identity *modules;
    size_t module_count;
};

struct ds_attest_qe_identity {
    char id[16]; /* "QE" or "TD_QE" */
    unsigned version;
    int64_t issue_date;
    int64_t next_update;
    uint32_t miscselect; /* little-endian reading of the 4 hex bytes */
    uint32_t miscselect_mask;
    uint8_t attributes[16];
    uint8_t attributes_mask[16];
    uint8_t mrsigner[32];
    uint16_t isvprodid;
    struct ds_attest_isv_level *levels; /* JSON order */
    size_t level_count;
};

/*
 * Parse the signed JSON (call only after its signature verified). Errors: -DS_E_FORMAT with a
 * reason naming the field in msg, -ENOMEM.
 */
DS_MUST_USE int ds_attest_tcb_info_parse(const char *json, size_t len,
                                         struct ds_attest_tcb_info **out, char *msg,
                                         size_t msg_size);
void ds_attest_tcb_info_free(struct ds_attest_tcb_info *t);
DS_MUST_USE int ds_attest_qe_identity_parse(const char *json, size_t len,
                                            struct ds_attest_qe_identity **out, char *msg,
                                            size_t msg_size);
void ds_attest_qe_identity_free(struct ds_attest_qe_identity *q);

/* Parse "YYYY-MM-DDTHH:MM:SS[.fff](Z|+hh:mm|-hh:mm)" (RFC 3339) to unix seconds. */
DS_MUST_USE int ds_attest_parse_rfc3339(const char *s, int64_t *out);
/* Unix seconds of a UTC civil date and time (proleptic Gregorian). */
int64_t ds_attest_unix_from_civil(int64_t y, unsigned mon, unsigned d, unsigned h, unsigned mi,
                                  unsigned s);

/* A merged status with borrowed advisory strings (they live in the parsed collateral). */
struct ds_attest_status {
    enum ds_tcb_status status;
    const char *ids[DS_ADVISORY_MAX];
    size_t count;
};

void ds_attest_status_init(struct ds_attest_status *s, enum ds_tcb_status status);
/*
 * merge(a, b) of §2.5 into a: the more severe status (ties keep a), then b's advisories not
 * already in a, appended in order. -DS_E_LIMIT when more than DS_ADVISORY_MAX ids result.
 */
DS_MUST_USE int ds_attest_status_merge(struct ds_attest_status *a, enum ds_tcb_status b,
                                       const char *const *b_ids, size_t b_count);

/* ---- PCK certificate facts (pck.c) ----------------------------------------------------------- */

struct ds_attest_pck_info {
    uint8_t ppid[16];
    uint8_t cpusvn[16];
    uint16_t pcesvn;
    uint8_t pce_id[2];
    uint8_t fmspc[6];
    int sgx_type;    /* -1 when absent */
    uint8_t pub[64]; /* leaf P-256 public key X||Y */
};

/*
 * Platform TCB matching (§2.5): FMSPC and PCE ID, TCB info id/version against the TEE type,
 * the first canonically ordered level the platform meets, the TDX module identity. On success
 * *out holds merge(platform level, module level).
 */
DS_MUST_USE int ds_attest_match_platform(const struct ds_attest_tcb_info *t,
                                         const struct ds_attest_pck_info *pck,
                                         const struct ds_quote *q, struct ds_attest_status *out,
                                         char *msg, size_t msg_size);
/* QE identity policy (§2.2 step 7): on success *out holds the QE TCB level's status. */
DS_MUST_USE int ds_attest_match_qe(const struct ds_attest_qe_identity *qi,
                                   const struct ds_sgx_report *qe, struct ds_attest_status *out,
                                   char *msg, size_t msg_size);

/* ---- X.509 (pck.c) --------------------------------------------------------------------------- */

/* Unix seconds of an ASN1_TIME. */
DS_MUST_USE int ds_attest_asn1_time(const ASN1_TIME *t, int64_t *out);
/*
 * Decode a PEM chain (CERTIFICATE blocks only; trailing NULs and whitespace tolerated; at
 * most DS_ATTEST_MAX_CHAIN_CERTS). An empty chain is -DS_E_NOT_FOUND.
 */
DS_MUST_USE int ds_attest_pem_chain(const char *pem, size_t len, STACK_OF(X509) * *out);
/*
 * Library functions here may leave entries on the OpenSSL error queue; ds_verify_quote()
 * brackets all of them with ERR_set_mark()/ERR_pop_to_mark().
 */
/* Decode one DER CRL that must span all len bytes. */
DS_MUST_USE int ds_attest_crl_der(const uint8_t *der, size_t len, X509_CRL **out);
/*
 * Check the anchor against the root CA CRL (§2.2 step 0): the CRL must be issued and signed by
 * the root, current at now (nextUpdate required) and must not list the root; the root must
 * be within its validity period. Narrows w. Errors: -DS_E_EXPIRED, -DS_E_SIGNATURE, -DS_E_CERT.
 */
DS_MUST_USE int ds_attest_check_root(X509 *root, X509_CRL *root_crl, int64_t now,
                                     struct ds_attest_window *w, char *msg, size_t msg_size);
/*
 * Verify chain (leaf first) to the store's anchor at now with CRL checks on every certificate
 * (X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL); the leaf must not be a CA and, if it
 * has an EKU, must allow serverAuth. Narrows w by every certificate of the built chain.
 * Errors: -DS_E_EXPIRED (a certificate or CRL outside its validity), -DS_E_SIGNATURE,
 * -DS_E_CERT (anything else, message says what).
 */
DS_MUST_USE int ds_attest_verify_chain(X509_STORE *store, STACK_OF(X509) * chain, int64_t now,
                                       struct ds_attest_window *w, const char *what, char *msg,
                                       size_t msg_size);
/* Narrow w by a CRL's [thisUpdate, nextUpdate); -DS_E_CERT when it has no nextUpdate. */
DS_MUST_USE int ds_attest_crl_window(X509_CRL *crl, struct ds_attest_window *w);
/* The P-256 public key of a certificate as X||Y. */
DS_MUST_USE int ds_attest_cert_p256_pub(X509 *cert, uint8_t pub[64]);
/* Walk the Intel SGX extension (OID 1.2.840.113741.1.13.1) of a PCK leaf (§2.4). */
DS_MUST_USE int ds_attest_pck_parse(X509 *leaf, struct ds_attest_pck_info *out, char *msg,
                                    size_t msg_size);

/* ---- cache (verify_cache.c) ------------------------------------------------------------------ */

/*
 * Collateral verified at step 0, 2 and 3: the store (anchor + both CRLs) used to verify PCK
 * chains, and the parsed TCB info and QE identity.
 */
struct ds_attest_coll_entry {
    uint8_t key[32];
    uint64_t used;
    struct ds_attest_window window;
    X509_STORE *store;
    X509_CRL *root_crl;
    X509_CRL *pck_crl;
    struct ds_attest_tcb_info *tcb;
    struct ds_attest_qe_identity *qe;
};

/* A PCK chain verified against one collateral entry's store. */
struct ds_attest_pck_entry {
    uint8_t key[32];
    uint64_t used;
    struct ds_attest_window window;
    struct ds_attest_pck_info info;
    /*
     * SHA-256(QE report || QE report signature) of the last QE report whose signature verified
     * under this entry's PCK key. A platform's QE report is the same in every quote it makes
     * (it binds the long-lived attestation key), so repeat quotes skip one ECDSA verification.
     * The fact does not depend on time; the entry's window still gates every hit.
     */
    uint8_t qe_report_ok[32];
    bool qe_report_ok_set;
};

struct ds_attest_cache {
    struct ds_attest_coll_entry *coll[DS_ATTEST_CACHE_ENTRIES];
    struct ds_attest_pck_entry *pck[DS_ATTEST_CACHE_ENTRIES];
    uint64_t tick;
};

void ds_attest_coll_entry_free(struct ds_attest_coll_entry *e);
void ds_attest_cache_clear(struct ds_attest_cache *c);
/* Borrowed entry with this key, or NULL. Marks it used. */
struct ds_attest_coll_entry *ds_attest_cache_find_coll(struct ds_attest_cache *c,
                                                       const uint8_t key[32]);
struct ds_attest_pck_entry *ds_attest_cache_find_pck(struct ds_attest_cache *c,
                                                     const uint8_t key[32]);
/*
 * Insert, taking ownership (*e is set to NULL) and returning the borrowed entry. An entry
 * with the same key is replaced; when full, the least recently used entry is evicted.
 */
struct ds_attest_coll_entry *ds_attest_cache_put_coll(struct ds_attest_cache *c,
                                                      struct ds_attest_coll_entry **e);
struct ds_attest_pck_entry *ds_attest_cache_put_pck(struct ds_attest_cache *c,
                                                    struct ds_attest_pck_entry **e);

#endif /* DSTACK_ATTEST_VERIFY_INTERNAL_H */
