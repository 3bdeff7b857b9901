/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated TDX module's generator library (lib/tee/sim_*.c): a mock Intel PKI derived
 * deterministically from a 32-byte seed, genuine DCAP TDX v4/v5 quotes signed by it, and the
 * matching collateral. Used by dstack-tee-sim, by tests that need signed inputs the real
 * Intel samples cannot provide, and by development modes of the daemons.
 *
 * NOTHING produced here is trusted by default: verifiers only accept it when given the mock
 * root explicitly (spec: ../shared/DESIGN.md §3, ../shared/spec/attestation.md §6.3).
 *
 * Determinism: keys are SHA-256("dstack-mock-p256-v1" || seed || label || be32(counter)) with
 * labels tdx-root, tdx-pck-ca, tdx-pck, tdx-tcb; every signature made with a mock key uses a
 * nonce derived from the key and the digest, so the same seed gives byte-identical
 * certificates, CRLs and collateral signatures (only the per-quote attestation key is random).
 *
 * The mock platform (what the PCK certificate, quotes and collateral agree on):
 *   FMSPC 00806F050000, PCE ID 0000, PCESVN 11, CPUSVN 02 02 02 02 03 01 00 05 00..;
 *   platform TCB levels: UpToDate for tee_tcb_svn >= 05 00 02 00.., OutOfDate
 *   (INTEL-SA-00837) for >= 03 00 02 00.., none below (a real verifier then fails);
 *   TDX module: mrsigner 0*48, seam attributes 0 (mask FF*8), identity TDX_01 (tee_tcb_svn[1]
 *   == 1): isvsvn (tee_tcb_svn[0]) >= 4 UpToDate, >= 2 OutOfDate;
 *   QE identity TD_QE v2: mrsigner 0x44*32, isvprodid 2, isvsvn 4 (UpToDate).
 * Serial numbers are 62-bit values derived from the seed and the certificate's label.
 */
#ifndef DSTACK_SIM_H
#define DSTACK_SIM_H

#include "dstack/attest.h"

#define DS_SIM_SEED_LEN 32

struct ds_sim_pki;

/* Which mock key signs (all P-256). */
enum ds_sim_key {
    DS_SIM_KEY_ROOT,   /* "Mock Intel SGX Root CA": signs root CA CRL, PCK CA, TCB signing */
    DS_SIM_KEY_PCK_CA, /* "Mock Intel SGX PCK Platform CA": signs PCK leaf and PCK CRL */
    DS_SIM_KEY_PCK,    /* PCK leaf: signs QE reports */
    DS_SIM_KEY_TCB,    /* "Mock Intel SGX TCB Signing": signs TCB info and QE identity */
};

/* Derive the PKI from seed. Same seed -> same keys and certificates (byte-identical DER).
 * Returns 0, -EINVAL, -ENOMEM or -DS_E_CRYPTO. Free with ds_sim_pki_free (NULL-safe).
 * The PKI is read-only after creation: concurrent ds_sim_quote calls on one PKI are safe. */
DS_MUST_USE int ds_sim_pki_new(const uint8_t seed[DS_SIM_SEED_LEN], struct ds_sim_pki **out);
void ds_sim_pki_free(struct ds_sim_pki *p);
/* Borrowed DER of the mock root certificate (valid for the PKI's lifetime). */
void ds_sim_pki_root_der(const struct ds_sim_pki *p, const uint8_t **der, size_t *len);
/* Borrowed PEM chain: PCK leaf, PCK Platform CA, root (the quote's type-5 cert data). */
const char *ds_sim_pki_pck_chain_pem(const struct ds_sim_pki *p);
/* The FMSPC / PCE ID / PPID the PCK leaf carries. */
void ds_sim_pki_platform(const struct ds_sim_pki *p, uint8_t fmspc[6], uint8_t pce_id[2],
                         uint8_t ppid[16]);
/* Raw r||s ECDSA-P256-SHA256 signature of msg with one of the mock keys (for tests that
 * re-sign altered collateral or QE reports). Deterministic for (key, msg). Returns 0, -EINVAL
 * or -DS_E_CRYPTO. */
DS_MUST_USE int ds_sim_pki_sign(const struct ds_sim_pki *p, enum ds_sim_key key, const void *msg,
                                size_t len, uint8_t sig[64]);
/* A DER CRL (v2, CRL number 1, AKI) issued by DS_SIM_KEY_ROOT or DS_SIM_KEY_PCK_CA revoking
 * the given serials (revocation date = this_update). *out_der is malloc'd. Returns 0, -EINVAL
 * (other issuer, NULL serials with count > 0, next_update < this_update), -DS_E_LIMIT (more
 * than 100000 serials), -ENOMEM or -DS_E_CRYPTO. The collateral carries the default CRLs:
 * empty, 2020-01-01 .. 2100-01-01. */
DS_MUST_USE int ds_sim_pki_crl(const struct ds_sim_pki *p, enum ds_sim_key issuer,
                               const uint64_t *revoked_serials, size_t count, int64_t this_update,
                               int64_t next_update, uint8_t **out_der, size_t *out_len);
/* Serial number of the PCK leaf certificate (for revocation tests). */
uint64_t ds_sim_pki_pck_serial(const struct ds_sim_pki *p);

/* The TD registers and fields that go into a simulated quote. */
struct ds_sim_td {
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
};
/* Defaults a production-like TD has: SEPT_VE_DISABLE set, no debug, MRTD 0x11*48, zero RTMRs,
 * tee_tcb_svn 06 01 03 00.. (UpToDate under the mock collateral), mr_seam 0x22*48, zero
 * mr_signer_seam / seam attributes, xfam e7 02 06 00... */
void ds_sim_td_defaults(struct ds_sim_td *td);

struct ds_sim_quote_opts {
    uint16_t version; /* 4 (default when 0) or 5 (TD report 1.0 body in a v5 envelope) */
};

/* Build and sign a quote for report_data (opts may be NULL: v4). Header: ak type 2, TEE type
 * TDX, qe_svn 4, pce_svn 11, Intel QE vendor ID, user_data = 16-byte QE ID (per seed) + 4 zero
 * bytes. A fresh random attestation key per quote; certification data type 6 with the QE
 * report (signed by the PCK key), 32 bytes of QE auth data and type 5 = the PEM chain followed
 * by a NUL, as in real quotes. No trailing bytes. *out is malloc'd. Returns 0, -EINVAL,
 * -DS_E_UNSUPPORTED (version not 4/5), -ENOMEM or -DS_E_CRYPTO. */
DS_MUST_USE int ds_sim_quote(const struct ds_sim_pki *p, const struct ds_sim_td *td,
                             const uint8_t report_data[64], const struct ds_sim_quote_opts *opts,
                             uint8_t **out, size_t *out_len);

/* Collateral for the mock platform valid around now (issueDate now-1d, nextUpdate now+30d):
 * compact TCB info (TDX v3) and QE identity (TD_QE v2) JSON signed raw r||s by
 * DS_SIM_KEY_TCB ("Mock Intel SGX TCB Signing", which issues both), issuer chains (TCB
 * signing + root; PCK CA + root for the PCK CRL), both CRLs; pck_certificate_chain NULL.
 * Free with ds_collateral_free. Returns 0, -EINVAL (NULL, or now outside 1970-01-02 .. 9999),
 * -ENOMEM or -DS_E_CRYPTO. */
DS_MUST_USE int ds_sim_collateral(const struct ds_sim_pki *p, int64_t now,
                                  struct ds_collateral **out);

#endif /* DSTACK_SIM_H */
