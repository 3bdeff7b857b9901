/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to lib/tee/sim_*.c: the mock PKI object and the platform constants that the quote
 * generator (sim_quote.c) and the collateral generator (sim_collateral.c) must agree on. The
 * TCB the collateral publishes has to match the PCK certificate's SGX extension, the TD's
 * tee_tcb_svn and the QE report, otherwise a real DCAP verifier finds no TCB level.
 * Spec: ../shared/spec/attestation.md §2.4-2.5, §6.3.
 */
#ifndef DSTACK_TEE_SIM_INTERNAL_H
#define DSTACK_TEE_SIM_INTERNAL_H

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dstack/sim.h"

#define SIM_KEY_COUNT  4
#define SIM_SCALAR_LEN 32

/* Platform TCB (shape of a real Sapphire Rapids TDX platform, values made up). */
#define SIM_FMSPC                                                                                  \
    {                                                                                              \
        0x00, 0x80, 0x6F, 0x05, 0x00, 0x00                                                         \
    }
#define SIM_FMSPC_HEX "00806F050000"
#define SIM_PCE_ID                                                                                 \
    {                                                                                              \
        0x00, 0x00                                                                                 \
    }
#define SIM_PCE_ID_HEX "0000"
#define SIM_CPU_SVN                                                                                \
    {                                                                                              \
        2, 2, 2, 2, 3, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0                                             \
    }
#define SIM_PCE_SVN 11
/* tdxtcbcomponents of the UpToDate and the OutOfDate platform level. */
#define SIM_TDX_SVN_UP_TO_DATE                                                                     \
    {                                                                                              \
        5, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0                                             \
    }
#define SIM_TDX_SVN_OUT_OF_DATE                                                                    \
    {                                                                                              \
        3, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0                                             \
    }
/* The TDX module identity "TDX_01": isvsvn >= 4 UpToDate, >= 2 OutOfDate. */
#define SIM_TDX_MODULE_ISVSVN_UP_TO_DATE  4
#define SIM_TDX_MODULE_ISVSVN_OUT_OF_DATE 2
#define SIM_TCB_EVAL_NUMBER               17
#define SIM_TCB_DATE                      "2024-03-13T00:00:00Z"
#define SIM_TCB_DATE_OLD                  "2023-08-09T00:00:00Z"
#define SIM_ADVISORY_OUT_OF_DATE          "INTEL-SA-00837"

/* The quoting enclave (QE identity TD_QE v2). */
#define SIM_QE_MR_SIGNER_BYTE      0x44
#define SIM_QE_PROD_ID             2
#define SIM_QE_ISV_SVN             4
#define SIM_QE_ISV_SVN_OUT_OF_DATE 2
#define SIM_QE_MISC_SELECT         0u
/* QE report attributes: INIT|MODE64BIT|PROVISIONKEY, XFRM 0xe7 (as a real TD QE). The
 * identity's mask FBFF.. ignores PROVISIONKEY, so the expected value is 0x11. */
#define SIM_QE_ATTRIBUTES                                                                          \
    {                                                                                              \
        0x15, 0, 0, 0, 0, 0, 0, 0, 0xe7, 0, 0, 0, 0, 0, 0, 0                                       \
    }
#define SIM_QE_ATTRIBUTES_HEX      "11000000000000000000000000000000"
#define SIM_QE_ATTRIBUTES_MASK_HEX "FBFFFFFFFFFFFFFF0000000000000000"
#define SIM_QE_AUTH_DATA_LEN       32

struct ds_sim_pki {
    EC_GROUP *group;
    BIGNUM *priv[SIM_KEY_COUNT];
    uint8_t priv_raw[SIM_KEY_COUNT][SIM_SCALAR_LEN];
    EVP_PKEY *pkey[SIM_KEY_COUNT];
    X509 *cert[SIM_KEY_COUNT];
    uint64_t serial[SIM_KEY_COUNT];
    uint8_t *root_der;
    size_t root_der_len;
    char *pck_chain_pem;    /* PCK leaf, PCK CA, root: the quote's type-5 cert data */
    char *pck_ca_chain_pem; /* PCK CA, root: the PCK CRL issuer chain */
    char *tcb_chain_pem;    /* TCB signing, root: TCB info and QE identity issuer chain */
    uint8_t *root_crl;      /* empty CRL by the root, 2020-01-01 .. 2100-01-01 */
    size_t root_crl_len;
    uint8_t *pck_crl; /* empty CRL by the PCK CA, same dates */
    size_t pck_crl_len;
    uint8_t ppid[16];
    uint8_t qe_id[16];
};

#endif /* DSTACK_TEE_SIM_INTERNAL_H */
