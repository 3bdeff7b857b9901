/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated TDX module's quoting enclave: builds genuine DCAP TDX quotes (v4, or the v5
 * envelope around a TD report 1.0) for a TD's registers and report_data, signed like Intel's
 * QE does it (spec: ../shared/spec/attestation.md §1, §6.3):
 *   header (48) [+ v5 body descriptor (6)] + TD report 1.0 (584)  -- signed by a fresh P-256
 *   attestation key per quote;
 *   auth data: signature, attestation key, certification data type 6 { QE report (SGX report
 *   layout, report_data[0..32] = SHA-256(attestation key || QE auth data)), its signature by
 *   the PCK key, QE auth data, certification data type 5 (PEM chain PCK, PCK CA, root, NUL) }.
 * The QE report and header carry the QE identity and TCB the mock collateral publishes.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "tee/sim_internal.h"

#define SIM_QE_VENDOR_ID                                                                           \
    {                                                                                              \
        0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9, 0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06,  \
            0x07                                                                                   \
    }
#define SIM_CERT_TYPE_PCK_CHAIN 5
#define SIM_CERT_TYPE_QE_REPORT 6
#define SIM_V5_BODY_TYPE_TD10   2
#define SIM_SIG_LEN             64
#define SIM_AK_LEN              64

void ds_sim_td_defaults(struct ds_sim_td *td)
{
    static const uint8_t tee_tcb_svn[16] = {6, 1, 3};
    static const uint8_t xfam[8] = {0xe7, 0x02, 0x06};

    memset(td, 0, sizeof(*td));
    memcpy(td->tee_tcb_svn, tee_tcb_svn, sizeof(tee_tcb_svn));
    memset(td->mr_seam, 0x22, sizeof(td->mr_seam));
    td->td_attributes[3] = 0x10; /* SEPT_VE_DISABLE (bit 28), no DEBUG */
    memcpy(td->xfam, xfam, sizeof(xfam));
    memset(td->mr_td, 0x11, sizeof(td->mr_td));
}

/* The 384-byte QE report (SGX report layout, spec §1.4). */
static int sim_qe_report(struct ds_buf *b, const uint8_t report_data[64])
{
    static const uint8_t cpu_svn[16] = SIM_CPU_SVN;
    static const uint8_t attributes[16] = SIM_QE_ATTRIBUTES;
    static const uint8_t zero[96];
    uint8_t mr_enclave[DS_SHA256_LEN];
    uint8_t mr_signer[32];
    static const char mr_enclave_label[] = "dstack-sim-td-qe";

    ds_sha256(mr_enclave_label, sizeof(mr_enclave_label) - 1, mr_enclave);
    memset(mr_signer, SIM_QE_MR_SIGNER_BYTE, sizeof(mr_signer));
    DS_TRY(ds_buf_append(b, cpu_svn, 16));
    DS_TRY(ds_buf_u32le(b, SIM_QE_MISC_SELECT));
    DS_TRY(ds_buf_append(b, zero, 28));
    DS_TRY(ds_buf_append(b, attributes, 16));
    DS_TRY(ds_buf_append(b, mr_enclave, 32));
    DS_TRY(ds_buf_append(b, zero, 32));
    DS_TRY(ds_buf_append(b, mr_signer, 32));
    DS_TRY(ds_buf_append(b, zero, 96));
    DS_TRY(ds_buf_u16le(b, SIM_QE_PROD_ID));
    DS_TRY(ds_buf_u16le(b, SIM_QE_ISV_SVN));
    DS_TRY(ds_buf_append(b, zero, 60));
    DS_TRY(ds_buf_append(b, report_data, 64));
    return b->len == DS_SGX_REPORT_SIZE ? 0 : -DS_E_CRYPTO;
}

/* Header (+ v5 descriptor) and TD report 1.0: the region the attestation key signs. */
static int sim_signed_region(struct ds_buf *b, const struct ds_sim_pki *p, uint16_t version,
                             const struct ds_sim_td *td, const uint8_t report_data[64])
{
    static const uint8_t vendor_id[16] = SIM_QE_VENDOR_ID;
    static const uint8_t zero[4];

    DS_TRY(ds_buf_u16le(b, version));
    DS_TRY(ds_buf_u16le(b, DS_AK_TYPE_ECDSA_P256));
    DS_TRY(ds_buf_u32le(b, DS_TEE_TYPE_TDX));
    DS_TRY(ds_buf_u16le(b, SIM_QE_ISV_SVN));
    DS_TRY(ds_buf_u16le(b, SIM_PCE_SVN));
    DS_TRY(ds_buf_append(b, vendor_id, sizeof(vendor_id)));
    DS_TRY(ds_buf_append(b, p->qe_id, sizeof(p->qe_id))); /* user_data: QE ID + 4 zero bytes */
    DS_TRY(ds_buf_append(b, zero, sizeof(zero)));
    if (version == 5) {
        DS_TRY(ds_buf_u16le(b, SIM_V5_BODY_TYPE_TD10));
        DS_TRY(ds_buf_u32le(b, DS_TD10_REPORT_SIZE));
    }
    DS_TRY(ds_buf_append(b, td->tee_tcb_svn, sizeof(td->tee_tcb_svn)));
    DS_TRY(ds_buf_append(b, td->mr_seam, sizeof(td->mr_seam)));
    DS_TRY(ds_buf_append(b, td->mr_signer_seam, sizeof(td->mr_signer_seam)));
    DS_TRY(ds_buf_append(b, td->seam_attributes, sizeof(td->seam_attributes)));
    DS_TRY(ds_buf_append(b, td->td_attributes, sizeof(td->td_attributes)));
    DS_TRY(ds_buf_append(b, td->xfam, sizeof(td->xfam)));
    DS_TRY(ds_buf_append(b, td->mr_td, sizeof(td->mr_td)));
    DS_TRY(ds_buf_append(b, td->mr_config_id, sizeof(td->mr_config_id)));
    DS_TRY(ds_buf_append(b, td->mr_owner, sizeof(td->mr_owner)));
    DS_TRY(ds_buf_append(b, td->mr_owner_config, sizeof(td->mr_owner_config)));
    DS_TRY(ds_buf_append(b, td->rtmr, sizeof(td->rtmr)));
    DS_TRY(ds_buf_append(b, report_data, 64));
    return 0;
}

int ds_sim_quote(const struct ds_sim_pki *p, const struct ds_sim_td *td,
                 const uint8_t report_data[64], const struct ds_sim_quote_opts *opts, uint8_t **out,
                 size_t *out_len)
{
    uint16_t version = opts != NULL && opts->version != 0 ? opts->version : 4;
    uint8_t ak_priv[32], ak_pub[SIM_AK_LEN], quote_sig[SIM_SIG_LEN], qe_sig[SIM_SIG_LEN];
    uint8_t qe_auth[SIM_QE_AUTH_DATA_LEN], qe_hash[64] = {0};
    struct ds_buf qe = {0}, q = {0};
    size_t pem_len, inner_len, outer_len;
    uint8_t *data;
    size_t len;
    int rc;

    if (p == NULL || td == NULL || report_data == NULL || out == NULL || out_len == NULL) {
        return -EINVAL;
    }
    if (version != 4 && version != 5) {
        return -DS_E_UNSUPPORTED;
    }
    ds_buf_init(&qe, DS_SGX_REPORT_SIZE);
    ds_buf_init(&q, DS_QUOTE_MAX_SIZE);
    if ((rc = ds_ec_generate(DS_EC_P256, ak_priv, ak_pub)) < 0) {
        goto out;
    }
    /* QE auth data as a real TD QE sends it (00 01 .. 1f); the QE report binds it to the AK. */
    for (size_t i = 0; i < sizeof(qe_auth); i++) {
        qe_auth[i] = (uint8_t)i;
    }
    ds_sha256_v(qe_hash, 2, ak_pub, sizeof(ak_pub), qe_auth, sizeof(qe_auth));
    if ((rc = sim_qe_report(&qe, qe_hash)) < 0 ||
        (rc = ds_sim_pki_sign(p, DS_SIM_KEY_PCK, qe.data, qe.len, qe_sig)) < 0) {
        goto out;
    }
    if ((rc = sim_signed_region(&q, p, version, td, report_data)) < 0 ||
        (rc = ds_ecdsa_sign_raw(DS_EC_P256, ak_priv, q.data, q.len, quote_sig)) < 0) {
        goto out;
    }
    /* Certification data: the PEM chain ends with a NUL, as in real quotes (spec §1.5). */
    pem_len = strlen(p->pck_chain_pem) + 1;
    inner_len = pem_len;
    outer_len = DS_SGX_REPORT_SIZE + SIM_SIG_LEN + 2 + sizeof(qe_auth) + 6 + inner_len;
    if ((rc = ds_buf_u32le(&q, (uint32_t)(SIM_SIG_LEN + SIM_AK_LEN + 6 + outer_len))) < 0 ||
        (rc = ds_buf_append(&q, quote_sig, sizeof(quote_sig))) < 0 ||
        (rc = ds_buf_append(&q, ak_pub, sizeof(ak_pub))) < 0 ||
        (rc = ds_buf_u16le(&q, SIM_CERT_TYPE_QE_REPORT)) < 0 ||
        (rc = ds_buf_u32le(&q, (uint32_t)outer_len)) < 0 ||
        (rc = ds_buf_append(&q, qe.data, qe.len)) < 0 ||
        (rc = ds_buf_append(&q, qe_sig, sizeof(qe_sig))) < 0 ||
        (rc = ds_buf_u16le(&q, (uint16_t)sizeof(qe_auth))) < 0 ||
        (rc = ds_buf_append(&q, qe_auth, sizeof(qe_auth))) < 0 ||
        (rc = ds_buf_u16le(&q, SIM_CERT_TYPE_PCK_CHAIN)) < 0 ||
        (rc = ds_buf_u32le(&q, (uint32_t)inner_len)) < 0 ||
        (rc = ds_buf_append(&q, p->pck_chain_pem, pem_len)) < 0) {
        goto out;
    }
    ds_buf_steal(&q, &data, &len);
    if (data == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    *out = data;
    *out_len = len;
    rc = 0;
out:
    ds_wipe(ak_priv, sizeof(ak_priv));
    ds_buf_done(&qe);
    ds_buf_done(&q);
    return rc;
}
