/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Rendering of a quote verdict for `dstack verify`: the JSON object (ok, status, advisory_ids,
 * failed_step, error, simulated, report) whose shape docs/verify.md documents and the tests
 * rely on, and the readable summary. Report fields are lowercase hex named after the quote
 * layout (spec attestation.md §1.3/§1.4, dcap-qvl's VerifiedReport §2.7).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

int cli_print_json(json_t *j)
{
    if (j == NULL) {
        cli_errx("out of memory building the JSON output");
        return CLI_EXIT_FAIL;
    }
    if (json_dumpf(j, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER) != 0) {
        cli_errx("cannot write the JSON output");
        return CLI_EXIT_FAIL;
    }
    fputc('\n', stdout);
    return 0;
}

/* Set key to the hex of n bytes; json_object_set_new steals the new string (NULL-safe). */
static void set_hex(json_t *o, const char *key, const void *p, size_t n)
{
    char *h = ds_hex_strdup(p, n);
    json_object_set_new(o, key, h != NULL ? json_string(h) : json_null());
    free(h);
}

static const char *tee_name(uint32_t tee_type)
{
    switch (tee_type) {
    case DS_TEE_TYPE_TDX:
        return "tdx";
    case DS_TEE_TYPE_SGX:
        return "sgx";
    default:
        return "unknown";
    }
}

json_t *verify_report_json(const struct ds_quote *q, const uint8_t *fmspc)
{
    json_t *o = json_object();
    if (o == NULL) {
        return NULL;
    }
    json_object_set_new(o, "tee_type", json_string(tee_name(q->tee_type)));
    json_object_set_new(o, "quote_version", json_integer(q->version));
    if (fmspc != NULL) {
        set_hex(o, "fmspc", fmspc, 6);
    } else {
        json_object_set_new(o, "fmspc", json_null());
    }
    if (q->kind == DS_REPORT_SGX) {
        const struct ds_sgx_report *s = &q->sgx;
        set_hex(o, "mr_enclave", s->mr_enclave, sizeof(s->mr_enclave));
        set_hex(o, "mr_signer", s->mr_signer, sizeof(s->mr_signer));
        json_object_set_new(o, "isv_prod_id", json_integer(s->isv_prod_id));
        json_object_set_new(o, "isv_svn", json_integer(s->isv_svn));
        set_hex(o, "report_data", s->report_data, sizeof(s->report_data));
        return o;
    }
    const struct ds_td_report *t = &q->td;
    json_object_set_new(o, "td_report", json_string(q->kind == DS_REPORT_TD15 ? "1.5" : "1.0"));
    set_hex(o, "mr_td", t->mr_td, sizeof(t->mr_td));
    for (int i = 0; i < 4; i++) {
        char key[8];
        snprintf(key, sizeof(key), "rtmr%d", i);
        set_hex(o, key, t->rtmr[i], sizeof(t->rtmr[i]));
    }
    set_hex(o, "mr_config_id", t->mr_config_id, sizeof(t->mr_config_id));
    set_hex(o, "mr_owner", t->mr_owner, sizeof(t->mr_owner));
    set_hex(o, "mr_owner_config", t->mr_owner_config, sizeof(t->mr_owner_config));
    set_hex(o, "tee_tcb_svn", t->tee_tcb_svn, sizeof(t->tee_tcb_svn));
    set_hex(o, "td_attributes", t->td_attributes, sizeof(t->td_attributes));
    set_hex(o, "xfam", t->xfam, sizeof(t->xfam));
    set_hex(o, "mr_seam", t->mr_seam, sizeof(t->mr_seam));
    set_hex(o, "mr_signer_seam", t->mr_signer_seam, sizeof(t->mr_signer_seam));
    if (q->kind == DS_REPORT_TD15) {
        set_hex(o, "tee_tcb_svn2", t->tee_tcb_svn2, sizeof(t->tee_tcb_svn2));
        set_hex(o, "mr_service_td", t->mr_service_td, sizeof(t->mr_service_td));
    }
    set_hex(o, "report_data", t->report_data, sizeof(t->report_data));
    return o;
}

/* The TCB status is reported when it is meaningful: on success, and when the verification
 * failed because of the status itself (Revoked). */
static bool have_status(const struct verify_verdict *v)
{
    return v->have_result && (v->ok || v->res.failed_step == DS_STEP_TCB_STATUS);
}

json_t *verify_verdict_json(const struct verify_verdict *v)
{
    json_t *o = json_object();
    json_t *adv = json_array();
    if (o == NULL || adv == NULL) {
        json_decref(o);
        json_decref(adv);
        return NULL;
    }
    json_object_set_new(o, "ok", json_boolean(v->ok));
    json_object_set_new(
        o, "status", have_status(v) ? json_string(ds_tcb_status_name(v->res.status)) : json_null());
    if (have_status(v)) {
        for (size_t i = 0; i < v->res.advisory_count; i++) {
            json_array_append_new(adv, json_string(v->res.advisory_ids[i]));
        }
    }
    json_object_set_new(o, "advisory_ids", adv);
    if (!v->ok) {
        json_object_set_new(o, "failed_step",
                            json_string(v->failed_step != NULL ? v->failed_step : "unknown"));
        json_object_set_new(o, "error", json_string(v->error));
    }
    json_object_set_new(o, "simulated", json_boolean(v->simulated));
    if (v->parsed) {
        json_t *r = verify_report_json(&v->quote, v->ok ? v->res.fmspc : NULL);
        json_object_set_new(o, "report", r != NULL ? r : json_null());
    } else {
        json_object_set_new(o, "report", json_null());
    }
    return o;
}

static void print_hex_line(FILE *out, const char *label, const void *p, size_t n)
{
    char *h = ds_hex_strdup(p, n);
    fprintf(out, "  %-16s %s\n", label, h != NULL ? h : "(out of memory)");
    free(h);
}

void verify_verdict_print(FILE *out, const struct verify_verdict *v)
{
    fprintf(out, "quote verification: %s\n", v->ok ? "OK" : "FAILED");
    if (!v->ok) {
        fprintf(out, "  %-16s %s\n", "failed step:", v->failed_step ? v->failed_step : "unknown");
        fprintf(out, "  %-16s %s\n", "reason:", v->error);
    }
    fprintf(out, "  %-16s %s\n", "trust anchor:",
            v->simulated ? "NON-INTEL root (simulated / custom)" : "Intel SGX Root CA");
    if (have_status(v)) {
        fprintf(out, "  %-16s %s\n", "tcb status:", ds_tcb_status_name(v->res.status));
        fprintf(out, "  %-16s", "advisories:");
        if (v->res.advisory_count == 0) {
            fprintf(out, " (none)");
        }
        for (size_t i = 0; i < v->res.advisory_count; i++) {
            fprintf(out, "%s%s", i == 0 ? " " : ", ", v->res.advisory_ids[i]);
        }
        fputc('\n', out);
    }
    if (!v->parsed) {
        return;
    }
    const struct ds_quote *q = &v->quote;
    fprintf(out, "  %-16s %s, quote v%u\n", "tee:", q->tee_type == DS_TEE_TYPE_TDX ? "TDX" : "SGX",
            (unsigned)q->version);
    if (v->ok) {
        print_hex_line(out, "fmspc:", v->res.fmspc, sizeof(v->res.fmspc));
    }
    if (q->kind == DS_REPORT_SGX) {
        print_hex_line(out, "mr_enclave:", q->sgx.mr_enclave, sizeof(q->sgx.mr_enclave));
        print_hex_line(out, "mr_signer:", q->sgx.mr_signer, sizeof(q->sgx.mr_signer));
        fprintf(out, "  %-16s %u\n", "isv_prod_id:", (unsigned)q->sgx.isv_prod_id);
        fprintf(out, "  %-16s %u\n", "isv_svn:", (unsigned)q->sgx.isv_svn);
        print_hex_line(out, "report_data:", q->sgx.report_data, sizeof(q->sgx.report_data));
        return;
    }
    const struct ds_td_report *t = &q->td;
    print_hex_line(out, "mr_td:", t->mr_td, sizeof(t->mr_td));
    for (int i = 0; i < 4; i++) {
        char label[16];
        snprintf(label, sizeof(label), "rtmr%d:", i);
        print_hex_line(out, label, t->rtmr[i], sizeof(t->rtmr[i]));
    }
    print_hex_line(out, "mr_config_id:", t->mr_config_id, sizeof(t->mr_config_id));
    print_hex_line(out, "mr_owner:", t->mr_owner, sizeof(t->mr_owner));
    print_hex_line(out, "mr_owner_config:", t->mr_owner_config, sizeof(t->mr_owner_config));
    print_hex_line(out, "tee_tcb_svn:", t->tee_tcb_svn, sizeof(t->tee_tcb_svn));
    print_hex_line(out, "td_attributes:", t->td_attributes, sizeof(t->td_attributes));
    print_hex_line(out, "xfam:", t->xfam, sizeof(t->xfam));
    print_hex_line(out, "report_data:", t->report_data, sizeof(t->report_data));
}
