/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Intel DCAP quote parser (spec: ../shared/spec/attestation.md §1): the 48-byte header, the
 * body (SGX enclave report, TD report 1.0 or 1.5; v5 adds a body descriptor) and the ECDSA
 * signature data with its certification data (type 6 "QE report certification data" wrapping
 * the QE report, its signature, the QE authentication data and the inner certification data,
 * normally type 5, a PEM PCK chain). Everything is read through struct ds_reader, field by
 * field, in wire order; nothing is cast over the bytes. The parser checks structure only:
 * signatures, identities and policy are the verifier's business (verify.c).
 */
#include <string.h>

#include "dstack/attest.h"

#define QUOTE_HEADER_SIZE       48
#define QUOTE_V5_BODY_DESC_SIZE 6
#define QUOTE_SIG_SIZE          64
#define QUOTE_AK_SIZE           64
/* Every length-prefixed variable field is capped like dcap-qvl does (§1.5). */
#define QUOTE_FIELD_MAX DS_QUOTE_MAX_SIZE

#define QUOTE_V5_BODY_SGX  1
#define QUOTE_V5_BODY_TD10 2
#define QUOTE_V5_BODY_TD15 3

#define CERT_TYPE_PCK_CHAIN 5
#define CERT_TYPE_QE_REPORT 6

/* SGX enclave report (§1.4), also the layout of the QE report. */
static int parse_sgx_report(struct ds_reader *r, struct ds_sgx_report *out)
{
    struct ds_reader b;
    DS_TRY(ds_rd_sub(r, DS_SGX_REPORT_SIZE, &b));
    DS_TRY(ds_rd_copy(&b, out->cpu_svn, sizeof(out->cpu_svn)));
    DS_TRY(ds_rd_u32le(&b, &out->misc_select));
    DS_TRY(ds_rd_skip(&b, 28));
    DS_TRY(ds_rd_copy(&b, out->attributes, sizeof(out->attributes)));
    DS_TRY(ds_rd_copy(&b, out->mr_enclave, sizeof(out->mr_enclave)));
    DS_TRY(ds_rd_skip(&b, 32));
    DS_TRY(ds_rd_copy(&b, out->mr_signer, sizeof(out->mr_signer)));
    DS_TRY(ds_rd_skip(&b, 96));
    DS_TRY(ds_rd_u16le(&b, &out->isv_prod_id));
    DS_TRY(ds_rd_u16le(&b, &out->isv_svn));
    DS_TRY(ds_rd_skip(&b, 60));
    DS_TRY(ds_rd_copy(&b, out->report_data, sizeof(out->report_data)));
    return ds_rd_left(&b) == 0 ? 0 : -DS_E_FORMAT;
}

/* TD report 1.0 (§1.3), followed by tee_tcb_svn2 and mr_service_td for TD report 1.5. */
static int parse_td_report(struct ds_reader *r, enum ds_report_kind kind, struct ds_td_report *out)
{
    struct ds_reader b;
    DS_TRY(ds_rd_sub(r, kind == DS_REPORT_TD15 ? DS_TD15_REPORT_SIZE : DS_TD10_REPORT_SIZE, &b));
    DS_TRY(ds_rd_copy(&b, out->tee_tcb_svn, sizeof(out->tee_tcb_svn)));
    DS_TRY(ds_rd_copy(&b, out->mr_seam, sizeof(out->mr_seam)));
    DS_TRY(ds_rd_copy(&b, out->mr_signer_seam, sizeof(out->mr_signer_seam)));
    DS_TRY(ds_rd_copy(&b, out->seam_attributes, sizeof(out->seam_attributes)));
    DS_TRY(ds_rd_copy(&b, out->td_attributes, sizeof(out->td_attributes)));
    DS_TRY(ds_rd_copy(&b, out->xfam, sizeof(out->xfam)));
    DS_TRY(ds_rd_copy(&b, out->mr_td, sizeof(out->mr_td)));
    DS_TRY(ds_rd_copy(&b, out->mr_config_id, sizeof(out->mr_config_id)));
    DS_TRY(ds_rd_copy(&b, out->mr_owner, sizeof(out->mr_owner)));
    DS_TRY(ds_rd_copy(&b, out->mr_owner_config, sizeof(out->mr_owner_config)));
    for (size_t i = 0; i < DS_ARRAY_SIZE(out->rtmr); i++) {
        DS_TRY(ds_rd_copy(&b, out->rtmr[i], sizeof(out->rtmr[i])));
    }
    DS_TRY(ds_rd_copy(&b, out->report_data, sizeof(out->report_data)));
    if (kind == DS_REPORT_TD15) {
        DS_TRY(ds_rd_copy(&b, out->tee_tcb_svn2, sizeof(out->tee_tcb_svn2)));
        DS_TRY(ds_rd_copy(&b, out->mr_service_td, sizeof(out->mr_service_td)));
    }
    return ds_rd_left(&b) == 0 ? 0 : -DS_E_FORMAT;
}

/* A u32 length followed by that many bytes, capped at QUOTE_FIELD_MAX. */
static int read_sized_u32(struct ds_reader *r, struct ds_reader *out)
{
    uint32_t n;
    DS_TRY(ds_rd_u32le(r, &n));
    DS_ENSURE(n <= QUOTE_FIELD_MAX, -DS_E_FORMAT);
    return ds_rd_sub(r, n, out);
}

/* QE report, its signature and the QE authentication data (shared by v3 and type 6). */
static int parse_qe_part(struct ds_reader *r, struct ds_quote *q)
{
    uint16_t auth_len;
    struct ds_reader rep;
    DS_TRY(ds_rd_ptr(r, DS_SGX_REPORT_SIZE, &q->qe_report_raw));
    ds_rd_init(&rep, q->qe_report_raw, DS_SGX_REPORT_SIZE);
    DS_TRY(parse_sgx_report(&rep, &q->qe_report));
    DS_TRY(ds_rd_copy(r, q->qe_report_signature, sizeof(q->qe_report_signature)));
    DS_TRY(ds_rd_u16le(r, &auth_len));
    q->qe_auth_len = auth_len;
    return ds_rd_ptr(r, auth_len, &q->qe_auth_data);
}

/* Certification data: cert_type u16, size u32, body. */
static int parse_cert_data(struct ds_reader *r, uint16_t *type, struct ds_reader *body)
{
    DS_TRY(ds_rd_u16le(r, type));
    return read_sized_u32(r, body);
}

static int parse_auth_data(struct ds_reader *ad, struct ds_quote *q)
{
    struct ds_reader body;
    DS_TRY(ds_rd_copy(ad, q->signature, sizeof(q->signature)));
    DS_TRY(ds_rd_copy(ad, q->attest_key, sizeof(q->attest_key)));
    if (q->version == 3) {
        DS_TRY(parse_qe_part(ad, q));
        DS_TRY(parse_cert_data(ad, &q->cert_type, &body));
        q->outer_cert_type = q->cert_type;
    } else {
        struct ds_reader inner;
        DS_TRY(parse_cert_data(ad, &q->outer_cert_type, &inner));
        /* v4/v5 carry the QE report inside type 6; anything else is not a DCAP ECDSA quote
         * we can verify, so refuse it instead of reading it as type 6 the way dcap-qvl does. */
        DS_ENSURE(q->outer_cert_type == CERT_TYPE_QE_REPORT, -DS_E_UNSUPPORTED);
        DS_TRY(parse_qe_part(&inner, q));
        DS_TRY(parse_cert_data(&inner, &q->cert_type, &body));
        /* The declared sizes must add up exactly: slack inside signed-over-nothing framing
         * would only make quotes malleable (trailing bytes after the auth data are fine). */
        DS_ENSURE(ds_rd_left(&inner) == 0, -DS_E_FORMAT);
    }
    DS_ENSURE(ds_rd_left(ad) == 0, -DS_E_FORMAT);
    q->cert_data_len = ds_rd_left(&body);
    return ds_rd_ptr(&body, q->cert_data_len, &q->cert_data);
}

int ds_quote_parse(const uint8_t *raw, size_t len, struct ds_quote *out)
{
    struct ds_quote q;
    struct ds_reader r, ad;
    memset(&q, 0, sizeof(q));
    if (!raw || !out) {
        return -DS_E_FORMAT;
    }
    ds_rd_init(&r, raw, len);

    DS_TRY(ds_rd_u16le(&r, &q.version));
    DS_TRY(ds_rd_u16le(&r, &q.ak_type));
    DS_TRY(ds_rd_u32le(&r, &q.tee_type));
    DS_TRY(ds_rd_u16le(&r, &q.qe_svn));
    DS_TRY(ds_rd_u16le(&r, &q.pce_svn));
    DS_TRY(ds_rd_copy(&r, q.qe_vendor_id, sizeof(q.qe_vendor_id)));
    DS_TRY(ds_rd_copy(&r, q.user_data, sizeof(q.user_data)));
    if (q.tee_type != DS_TEE_TYPE_SGX && q.tee_type != DS_TEE_TYPE_TDX) {
        return -DS_E_UNSUPPORTED;
    }

    switch (q.version) {
    case 3:
        /* v3 bodies are always SGX enclave reports (§1.2). */
        DS_ENSURE(q.tee_type == DS_TEE_TYPE_SGX, -DS_E_FORMAT);
        q.kind = DS_REPORT_SGX;
        break;
    case 4:
        q.kind = q.tee_type == DS_TEE_TYPE_SGX ? DS_REPORT_SGX : DS_REPORT_TD10;
        break;
    case 5: {
        uint16_t body_type;
        uint32_t body_size;
        DS_TRY(ds_rd_u16le(&r, &body_type));
        DS_TRY(ds_rd_u32le(&r, &body_size));
        if (body_type == QUOTE_V5_BODY_SGX) {
            q.kind = DS_REPORT_SGX;
        } else if (body_type == QUOTE_V5_BODY_TD10) {
            q.kind = DS_REPORT_TD10;
        } else if (body_type == QUOTE_V5_BODY_TD15) {
            q.kind = DS_REPORT_TD15;
        } else {
            return -DS_E_UNSUPPORTED;
        }
        /* The body type must agree with the header's TEE type and its declared size. */
        DS_ENSURE((q.kind == DS_REPORT_SGX) == (q.tee_type == DS_TEE_TYPE_SGX), -DS_E_FORMAT);
        size_t want = q.kind == DS_REPORT_SGX    ? DS_SGX_REPORT_SIZE
                      : q.kind == DS_REPORT_TD10 ? DS_TD10_REPORT_SIZE
                                                 : DS_TD15_REPORT_SIZE;
        DS_ENSURE(body_size == want, -DS_E_FORMAT);
        break;
    }
    default:
        return -DS_E_UNSUPPORTED;
    }

    if (q.kind == DS_REPORT_SGX) {
        DS_TRY(parse_sgx_report(&r, &q.sgx));
    } else {
        DS_TRY(parse_td_report(&r, q.kind, &q.td));
    }
    q.signed_data = raw;
    q.signed_len = r.off;

    DS_TRY(read_sized_u32(&r, &ad));
    DS_TRY(parse_auth_data(&ad, &q));
    q.trailing_len = ds_rd_left(&r);
    *out = q;
    return 0;
}

const uint8_t *ds_quote_report_data(const struct ds_quote *q)
{
    if (!q) {
        return NULL;
    }
    return q->kind == DS_REPORT_SGX ? q->sgx.report_data : q->td.report_data;
}
