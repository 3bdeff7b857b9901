/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Test helpers for the DCAP verifier tests (test_quote.c, test_verify.c, test_verify_neg.c):
 * loading the Intel-signed samples, copying and editing collateral (string replacement in
 * the signed JSON and re-signing it with the mock TCB key), flipping signature bits inside
 * PEM certificates and DER CRLs, and building complete, validly signed DCAP quotes of shapes
 * the simulator does not produce (TD report 1.5, SGX bodies, other versions and key types).
 */
#ifndef DSTACK_TESTS_HELPER_VERIFY_UTIL_H
#define DSTACK_TESTS_HELPER_VERIFY_UTIL_H

#include "dstack/attest.h"
#include "dstack/sim.h"

/* Window ends of the Intel samples (tests/vectors/dcap/README.md). */
#define HELPER_VERIFY_TDX_START 1750329147LL
#define HELPER_VERIFY_TDX_END   1752919235LL
#define HELPER_VERIFY_SGX_START 1750330571LL
#define HELPER_VERIFY_SGX_END   1752919278LL

/* Load "tdx" or "sgx": the quote bytes and its collateral (aborts the test on failure). */
/* The directory of the Intel DCAP samples: $DS_DCAP, else tests/vectors/dcap from tests/. */
const char *helper_dcap_dir(void);
void helper_verify_load_sample(const char *name, uint8_t **quote, size_t *quote_len,
                               struct ds_collateral **coll);
/* Deep copy of collateral (through its JSON form). */
struct ds_collateral *helper_verify_coll_dup(const struct ds_collateral *c);
/* malloc'd copy of s with every occurrence of from replaced by to; from must occur. */
char *helper_verify_replace(const char *s, const char *from, const char *to);
/* Replace c->tcb_info (or c->qe_identity) by json and re-sign it with DS_SIM_KEY_TCB. */
void helper_verify_set_tcb_info(const struct ds_sim_pki *p, struct ds_collateral *c,
                                char *json_owned);
void helper_verify_set_qe_identity(const struct ds_sim_pki *p, struct ds_collateral *c,
                                   char *json_owned);
/* Edit the signed JSON by replacing from with to and re-sign. */
void helper_verify_edit_tcb_info(const struct ds_sim_pki *p, struct ds_collateral *c,
                                 const char *from, const char *to);
void helper_verify_edit_qe_identity(const struct ds_sim_pki *p, struct ds_collateral *c,
                                    const char *from, const char *to);
/* malloc'd PEM chain equal to pem except that certificate index has a flipped signature bit. */
char *helper_verify_flip_cert_sig(const char *pem, int index);
/* malloc'd PEM of certificates [from, to) of a chain (to = -1: to the end). */
char *helper_verify_pem_slice(const char *pem, int from, int to);
/* Flip the last byte (inside the signature) of a DER structure in place. */
void helper_verify_flip_last(uint8_t *der, size_t len);
/* Serial number of certificate index of a PEM chain. */
uint64_t helper_verify_pem_serial(const char *pem, int index);

/*
 * The mock PKI's PEM chain with the PCK leaf's Intel SGX extension value replaced by ext_der
 * (NULL: extension removed) and the leaf re-signed by the mock PCK CA. malloc'd.
 */
char *helper_verify_pck_chain_with_ext(const struct ds_sim_pki *p, const uint8_t *ext_der,
                                       size_t ext_len);

/* A quote to build and sign (zero fields take the defaults named). */
struct helper_verify_qb {
    uint16_t version;  /* 4 */
    uint16_t ak_type;  /* DS_AK_TYPE_ECDSA_P256 */
    uint32_t tee_type; /* DS_TEE_TYPE_TDX; set has_tee_type to use 0 (SGX) */
    bool has_tee_type;
    uint16_t v5_body_type; /* derived from body_len */
    const uint8_t *body;   /* SGX or TD report bytes (required) */
    size_t body_len;
    size_t qe_auth_len; /* 32; set has_qe_auth_len for 0 */
    bool has_qe_auth_len;
    uint16_t inner_cert_type; /* 5 */
    const char *pem;          /* the PKI's PCK chain */
    bool qe_bind_wrong;       /* QE report data does not bind the attestation key */
};

/*
 * Build a quote signed by a fresh attestation key with a QE report taken from a simulator
 * quote (so it matches the mock QE identity), bound to that key and signed by the mock PCK
 * key. *out is malloc'd.
 */
void helper_verify_build_quote(const struct ds_sim_pki *p, const struct helper_verify_qb *qb,
                               uint8_t **out, size_t *out_len);
/* The TD report 1.0 body of a simulator quote for td (DS_TD10_REPORT_SIZE bytes into out). */
void helper_verify_sim_td_body(const struct ds_sim_pki *p, const struct ds_sim_td *td,
                               uint8_t out[DS_TD10_REPORT_SIZE]);

#endif /* DSTACK_TESTS_HELPER_VERIFY_UTIL_H */
