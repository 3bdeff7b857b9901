/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulated platform's DCAP collateral (QuoteCollateralV3, spec:
 * ../shared/spec/attestation.md §2.1, §2.5, §6.3): a TDX TCB info v3 and a TD_QE identity v2
 * as compact JSON in Intel's key order, each signed (raw r||s over the exact bytes) by the mock
 * "TCB Signing" key, the issuer chains, and the two CRLs of the mock PKI.
 *
 * Published TCB (must match sim_quote.c and the PCK certificate, see sim_internal.h):
 *   platform levels  UpToDate  {sgx SIM_CPU_SVN, pcesvn 11, tdx SIM_TDX_SVN_UP_TO_DATE}
 *                    OutOfDate {sgx SIM_CPU_SVN, pcesvn 11, tdx SIM_TDX_SVN_OUT_OF_DATE}
 *   tdxModule        mrsigner 0*48, attributes 0, mask FF*8; identity TDX_01 isvsvn 4 / 2
 *   QE identity      mrsigner 0x44*32, isvprodid 2, isvsvn 4 UpToDate, 2 OutOfDate
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstack/crypto.h"
#include "tee/sim_internal.h"

#define SIM_DAY               86400LL
#define SIM_ISSUE_BEFORE      (1 * SIM_DAY)
#define SIM_NEXT_UPDATE_AFTER (30 * SIM_DAY)
#define SIM_JSON_MAX          (64 * 1024)
#define SIM_RFC3339_LEN       20
/* Dates must format as YYYY-MM-DDTHH:MM:SSZ: years 1970..9999. */
#define SIM_TIME_MAX 253402300799LL

struct sim_level {
    const uint8_t *tdx_svn;
    const char *date;
    const char *status;
    const char *advisory; /* NULL: no advisoryIDs key (as Intel for UpToDate) */
};

static int sim_rfc3339(int64_t t, char out[SIM_RFC3339_LEN + 1])
{
    time_t tt = (time_t)t;
    struct tm tm;

    if (t < 0 || t > SIM_TIME_MAX || gmtime_r(&tt, &tm) == NULL ||
        strftime(out, SIM_RFC3339_LEN + 1, "%Y-%m-%dT%H:%M:%SZ", &tm) != SIM_RFC3339_LEN) {
        return -EINVAL;
    }
    return 0;
}

static int sim_hex_upper(struct ds_buf *b, const uint8_t *v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        DS_TRY(ds_buf_printf(b, "%02X", v[i]));
    }
    return 0;
}

static int sim_components(struct ds_buf *b, const char *key, const uint8_t svn[16])
{
    DS_TRY(ds_buf_printf(b, "\"%s\":[", key));
    for (int i = 0; i < 16; i++) {
        DS_TRY(ds_buf_printf(b, "%s{\"svn\":%u}", i > 0 ? "," : "", svn[i]));
    }
    return ds_buf_append_str(b, "]");
}

/* "tcbDate":..,"tcbStatus":..[,"advisoryIDs":[..]] */
static int sim_level_tail(struct ds_buf *b, const char *date, const char *status,
                          const char *advisory)
{
    DS_TRY(ds_buf_printf(b, "\"tcbDate\":\"%s\",\"tcbStatus\":\"%s\"", date, status));
    if (advisory != NULL) {
        DS_TRY(ds_buf_printf(b, ",\"advisoryIDs\":[\"%s\"]", advisory));
    }
    return 0;
}

/* The QE identity's {"tcb":{"isvsvn":N},"tcbDate":..} levels. */
static int sim_qe_levels(struct ds_buf *b)
{
    DS_TRY(ds_buf_append_str(b, "\"tcbLevels\":[{\"tcb\":{\"isvsvn\":"));
    DS_TRY(ds_buf_printf(b, "%d},", SIM_QE_ISV_SVN));
    DS_TRY(sim_level_tail(b, SIM_TCB_DATE, "UpToDate", NULL));
    DS_TRY(ds_buf_printf(b, "},{\"tcb\":{\"isvsvn\":%d},", SIM_QE_ISV_SVN_OUT_OF_DATE));
    DS_TRY(sim_level_tail(b, SIM_TCB_DATE_OLD, "OutOfDate", SIM_ADVISORY_OUT_OF_DATE));
    return ds_buf_append_str(b, "}]");
}

static int sim_module_fields(struct ds_buf *b)
{
    static const uint8_t zero[48];
    DS_TRY(ds_buf_append_str(b, "\"mrsigner\":\""));
    DS_TRY(sim_hex_upper(b, zero, sizeof(zero)));
    return ds_buf_append_str(b, "\",\"attributes\":\"0000000000000000\","
                                "\"attributesMask\":\"FFFFFFFFFFFFFFFF\"");
}

static int sim_tcb_info_json(struct ds_buf *b, const char *issue, const char *next)
{
    static const uint8_t cpu_svn[16] = SIM_CPU_SVN;
    static const uint8_t tdx_up[16] = SIM_TDX_SVN_UP_TO_DATE;
    static const uint8_t tdx_old[16] = SIM_TDX_SVN_OUT_OF_DATE;
    const struct sim_level levels[] = {
        {tdx_up, SIM_TCB_DATE, "UpToDate", NULL},
        {tdx_old, SIM_TCB_DATE_OLD, "OutOfDate", SIM_ADVISORY_OUT_OF_DATE},
    };

    DS_TRY(ds_buf_printf(b,
                         "{\"id\":\"TDX\",\"version\":3,\"issueDate\":\"%s\",\"nextUpdate\":\"%s\","
                         "\"fmspc\":\"" SIM_FMSPC_HEX "\",\"pceId\":\"" SIM_PCE_ID_HEX "\","
                         "\"tcbType\":0,\"tcbEvaluationDataNumber\":%d,\"tdxModule\":{",
                         issue, next, SIM_TCB_EVAL_NUMBER));
    DS_TRY(sim_module_fields(b));
    DS_TRY(ds_buf_append_str(b, "},\"tdxModuleIdentities\":[{\"id\":\"TDX_01\","));
    DS_TRY(sim_module_fields(b));
    DS_TRY(ds_buf_printf(b, ",\"tcbLevels\":[{\"tcb\":{\"isvsvn\":%d},",
                         SIM_TDX_MODULE_ISVSVN_UP_TO_DATE));
    DS_TRY(sim_level_tail(b, SIM_TCB_DATE, "UpToDate", NULL));
    DS_TRY(ds_buf_printf(b, "},{\"tcb\":{\"isvsvn\":%d},", SIM_TDX_MODULE_ISVSVN_OUT_OF_DATE));
    DS_TRY(sim_level_tail(b, SIM_TCB_DATE_OLD, "OutOfDate", SIM_ADVISORY_OUT_OF_DATE));
    DS_TRY(ds_buf_append_str(b, "}]}],\"tcbLevels\":["));
    for (size_t i = 0; i < DS_ARRAY_SIZE(levels); i++) {
        DS_TRY(ds_buf_append_str(b, i > 0 ? ",{\"tcb\":{" : "{\"tcb\":{"));
        DS_TRY(sim_components(b, "sgxtcbcomponents", cpu_svn));
        DS_TRY(ds_buf_printf(b, ",\"pcesvn\":%d,", SIM_PCE_SVN));
        DS_TRY(sim_components(b, "tdxtcbcomponents", levels[i].tdx_svn));
        DS_TRY(ds_buf_append_str(b, "},"));
        DS_TRY(sim_level_tail(b, levels[i].date, levels[i].status, levels[i].advisory));
        DS_TRY(ds_buf_append_str(b, "}"));
    }
    return ds_buf_append_str(b, "]}");
}

static int sim_qe_identity_json(struct ds_buf *b, const char *issue, const char *next)
{
    uint8_t mr_signer[32];
    uint8_t misc[4] = {(uint8_t)SIM_QE_MISC_SELECT, (uint8_t)(SIM_QE_MISC_SELECT >> 8),
                       (uint8_t)(SIM_QE_MISC_SELECT >> 16), (uint8_t)(SIM_QE_MISC_SELECT >> 24)};

    memset(mr_signer, SIM_QE_MR_SIGNER_BYTE, sizeof(mr_signer));
    DS_TRY(
        ds_buf_printf(b,
                      "{\"id\":\"TD_QE\",\"version\":2,\"issueDate\":\"%s\",\"nextUpdate\":\"%s\","
                      "\"tcbEvaluationDataNumber\":%d,\"miscselect\":\"",
                      issue, next, SIM_TCB_EVAL_NUMBER));
    DS_TRY(sim_hex_upper(b, misc, sizeof(misc)));
    DS_TRY(ds_buf_append_str(
        b, "\",\"miscselectMask\":\"FFFFFFFF\",\"attributes\":\"" SIM_QE_ATTRIBUTES_HEX
           "\",\"attributesMask\":\"" SIM_QE_ATTRIBUTES_MASK_HEX "\",\"mrsigner\":\""));
    DS_TRY(sim_hex_upper(b, mr_signer, sizeof(mr_signer)));
    DS_TRY(ds_buf_printf(b, "\",\"isvprodid\":%d,", SIM_QE_PROD_ID));
    DS_TRY(sim_qe_levels(b));
    return ds_buf_append_str(b, "}");
}

/* malloc'd copy with a NUL after len bytes (ds_collateral_free frees fields with free()). */
static void *sim_dup(const void *src, size_t len)
{
    uint8_t *d = malloc(len + 1);

    if (d != NULL) {
        memcpy(d, src, len);
        d[len] = 0;
    }
    return d;
}

/* Sign the JSON text in b with the TCB key and move it into *json / *sig. */
static int sim_signed_json(const struct ds_sim_pki *p, struct ds_buf *b, char **json,
                           size_t *json_len, uint8_t **sig, size_t *sig_len)
{
    uint8_t raw[64];
    uint8_t *data;
    size_t len;

    DS_TRY(ds_sim_pki_sign(p, DS_SIM_KEY_TCB, b->data, b->len, raw));
    *sig = sim_dup(raw, sizeof(raw));
    if (*sig == NULL) {
        return -ENOMEM;
    }
    *sig_len = sizeof(raw);
    ds_buf_steal(b, &data, &len);
    if (data == NULL) {
        return -ENOMEM;
    }
    *json = (char *)data;
    *json_len = len;
    return 0;
}

int ds_sim_collateral(const struct ds_sim_pki *p, int64_t now, struct ds_collateral **out)
{
    char issue[SIM_RFC3339_LEN + 1], next[SIM_RFC3339_LEN + 1];
    struct ds_collateral *c = NULL;
    struct ds_buf b;
    int rc;

    if (p == NULL || out == NULL) {
        return -EINVAL;
    }
    if (now < SIM_ISSUE_BEFORE || now > SIM_TIME_MAX - SIM_NEXT_UPDATE_AFTER) {
        return -EINVAL;
    }
    DS_TRY(sim_rfc3339(now - SIM_ISSUE_BEFORE, issue));
    DS_TRY(sim_rfc3339(now + SIM_NEXT_UPDATE_AFTER, next));
    ds_buf_init(&b, SIM_JSON_MAX);
    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    c->pck_crl_issuer_chain = sim_dup(p->pck_ca_chain_pem, strlen(p->pck_ca_chain_pem));
    c->tcb_info_issuer_chain = sim_dup(p->tcb_chain_pem, strlen(p->tcb_chain_pem));
    c->qe_identity_issuer_chain = sim_dup(p->tcb_chain_pem, strlen(p->tcb_chain_pem));
    c->root_ca_crl = sim_dup(p->root_crl, p->root_crl_len);
    c->pck_crl = sim_dup(p->pck_crl, p->pck_crl_len);
    if (c->pck_crl_issuer_chain == NULL || c->tcb_info_issuer_chain == NULL ||
        c->qe_identity_issuer_chain == NULL || c->root_ca_crl == NULL || c->pck_crl == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    c->root_ca_crl_len = p->root_crl_len;
    c->pck_crl_len = p->pck_crl_len;
    if ((rc = sim_tcb_info_json(&b, issue, next)) < 0 ||
        (rc = sim_signed_json(p, &b, &c->tcb_info, &c->tcb_info_len, &c->tcb_info_signature,
                              &c->tcb_info_signature_len)) < 0) {
        goto out;
    }
    ds_buf_reset(&b);
    if ((rc = sim_qe_identity_json(&b, issue, next)) < 0 ||
        (rc = sim_signed_json(p, &b, &c->qe_identity, &c->qe_identity_len,
                              &c->qe_identity_signature, &c->qe_identity_signature_len)) < 0) {
        goto out;
    }
    *out = c;
    c = NULL;
    rc = 0;
out:
    ds_buf_done(&b);
    ds_collateral_free(c);
    return rc;
}
