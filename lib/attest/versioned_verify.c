/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Verification of a VersionedAttestation (spec kms-ratls.md §6.4 steps 2-4, attestation.md
 * §4.6): optional report_data binding, DCAP verification of the TDX quote, quote report_data ==
 * attestation report_data, V2 preimages, RTMR3 == replay of the runtime events (and RTMR0-2 ==
 * replay of the boot log when the log is a full one), then the app identity. The result names
 * the failed step; anything not positively verified is a failure. Only TDX is verifiable here;
 * other platforms decode but fail at the "platform" step with -DS_E_UNSUPPORTED.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/versioned_priv.h"

static const char *const step_names[DS_ATT_STEP_MAX] = {
    [DS_ATT_STEP_NONE] = "none",
    [DS_ATT_STEP_CERTIFICATE] = "certificate",
    [DS_ATT_STEP_NO_ATTESTATION] = "no_attestation",
    [DS_ATT_STEP_DECODE] = "decode",
    [DS_ATT_STEP_BINDING] = "binding",
    [DS_ATT_STEP_PLATFORM] = "platform",
    [DS_ATT_STEP_COLLATERAL] = "collateral",
    [DS_ATT_STEP_QUOTE] = "quote",
    [DS_ATT_STEP_REPORT_DATA] = "report_data",
    [DS_ATT_STEP_EVENT_LOG] = "event_log",
    [DS_ATT_STEP_APP_INFO] = "app_info",
};

const char *ds_att_step_name(enum ds_att_step s)
{
    if ((unsigned)s >= DS_ATT_STEP_MAX) {
        return "unknown";
    }
    return step_names[s];
}

void ds_attestation_result_done(struct ds_attestation_result *r)
{
    if (!r) {
        return;
    }
    for (size_t i = 0; i < r->advisory_count && i < DS_ADVISORY_MAX; i++) {
        free(r->advisory_ids[i]);
    }
    ds_app_info_done(&r->app_info);
    memset(r, 0, sizeof(*r));
}

/* Record a failure (first one wins) and return err. Used by ratls verification too. */
int ds_att_fail(struct ds_attestation_result *res, enum ds_att_step step, int err, const char *fmt,
                ...)
{
    va_list ap;
    res->ok = false;
    res->failed_step = step;
    res->err = err;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof(res->message), fmt, ap);
    va_end(ap);
    return err;
}

/* A full boot log carries RTMR1/RTMR2 events; a stripped one (certificates) does not. */
static bool log_has_boot_registers(const struct ds_event_log *log)
{
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if ((ev->imr == 1 || ev->imr == 2) && !ds_event_is_runtime(ev)) {
            return true;
        }
    }
    return false;
}

static int verify_event_log(const struct ds_attestation *a, const struct ds_td_report *td,
                            struct ds_attestation_result *res)
{
    size_t bad = 0;
    int r = ds_eventlog_validate_v2_preimages(a->runtime_events, &bad);
    if (r < 0) {
        return ds_att_fail(res, DS_ATT_STEP_EVENT_LOG, r, "runtime event %zu: bad V2 preimage: %s",
                           bad, ds_strerror(r));
    }
    r = ds_eventlog_validate_v2_preimages(a->event_log, &bad);
    if (r < 0) {
        return ds_att_fail(res, DS_ATT_STEP_EVENT_LOG, r,
                           "event log entry %zu: bad V2 preimage: %s", bad, ds_strerror(r));
    }
    r = ds_eventlog_verify_rtmr3(a->runtime_events, td);
    if (r < 0) {
        return ds_att_fail(res, DS_ATT_STEP_EVENT_LOG, r,
                           "RTMR3 does not match the replayed runtime events: %s", ds_strerror(r));
    }
    if (log_has_boot_registers(a->event_log)) {
        uint8_t mr[DS_RTMR_COUNT][DS_RTMR_SIZE];
        r = ds_eventlog_replay(a->event_log, NULL, mr);
        if (r < 0) {
            return ds_att_fail(res, DS_ATT_STEP_EVENT_LOG, r, "event log replay failed: %s",
                               ds_strerror(r));
        }
        for (int i = 0; i < 3; i++) {
            if (!ds_ct_equal(mr[i], td->rtmr[i], DS_RTMR_SIZE)) {
                return ds_att_fail(res, DS_ATT_STEP_EVENT_LOG, -DS_E_MISMATCH,
                                   "RTMR%d does not match the replayed event log", i);
            }
        }
    }
    return 0;
}

int ds_attestation_verify(const struct ds_attestation *a,
                          const struct ds_attestation_verify_opts *opts,
                          struct ds_attestation_result *res)
{
    struct ds_collateral *fetched = NULL;
    const struct ds_collateral *coll;
    struct ds_verify_result vr;
    char err[160] = "";
    int r;

    if (!res) {
        return -EINVAL;
    }
    memset(res, 0, sizeof(*res));
    memset(&vr, 0, sizeof(vr));
    if (!a || !opts || !opts->verifier) {
        return ds_att_fail(res, DS_ATT_STEP_NONE, -EINVAL, "missing attestation or verifier");
    }
    res->platform = a->platform;
    memcpy(res->report_data, a->report_data, DS_REPORT_DATA_SIZE);

    if (opts->expected_report_data &&
        !ds_ct_equal(opts->expected_report_data, a->report_data, DS_REPORT_DATA_SIZE)) {
        return ds_att_fail(res, DS_ATT_STEP_BINDING, -DS_E_MISMATCH,
                           "report_data is not bound to the expected content");
    }
    if (a->platform != DS_ATT_TDX) {
        return ds_att_fail(res, DS_ATT_STEP_PLATFORM, -DS_E_UNSUPPORTED,
                           "platform '%s' cannot be verified here",
                           ds_att_platform_name(a->platform));
    }
    if (a->pod) {
        uint8_t expect[DS_REPORT_DATA_SIZE];
        const char *payload = a->report_data_payload ? a->report_data_payload : "";
        r = ds_report_data_build(DS_REPORT_HASH_SHA512, DS_REPORT_TAG_APP_DATA, payload,
                                 strlen(payload), expect);
        if (r < 0 || !ds_ct_equal(expect, a->report_data, DS_REPORT_DATA_SIZE)) {
            return ds_att_fail(res, DS_ATT_STEP_BINDING, -DS_E_MISMATCH,
                               "dstack-pod report_data != SHA-512(\"app-data:\" || payload)");
        }
    }

    coll = opts->collateral;
    if (!coll) {
        if (!opts->pccs_url) {
            return ds_att_fail(res, DS_ATT_STEP_COLLATERAL, -EINVAL,
                               "no collateral and no PCCS URL");
        }
        r = ds_collateral_fetch(opts->pccs_url, a->quote, a->quote_len, opts->fetch_timeout_ms,
                                &fetched, err, sizeof(err));
        if (r < 0) {
            return ds_att_fail(res, DS_ATT_STEP_COLLATERAL, r, "collateral fetch failed: %s (%s)",
                               ds_strerror(r), err);
        }
        coll = fetched;
    }

    r = ds_verify_quote(opts->verifier, a->quote, a->quote_len, coll, opts->now, &vr);
    if (r < 0 || !vr.ok) {
        res->dcap_step = vr.failed_step;
        r = ds_att_fail(res, DS_ATT_STEP_QUOTE, r < 0 ? r : -DS_E_CRYPTO,
                        "quote verification failed at %s: %s", ds_verify_step_name(vr.failed_step),
                        vr.message);
        goto out;
    }
    if (vr.quote.kind != DS_REPORT_TD10 && vr.quote.kind != DS_REPORT_TD15) {
        r = ds_att_fail(res, DS_ATT_STEP_QUOTE, -DS_E_FORMAT, "not a TDX quote");
        goto out;
    }
    res->td = vr.quote.td;
    res->tcb_status = vr.status;
    res->simulated = !ds_verifier_is_intel_root(opts->verifier);

    if (!ds_ct_equal(vr.quote.td.report_data, a->report_data, DS_REPORT_DATA_SIZE)) {
        r = ds_att_fail(res, DS_ATT_STEP_REPORT_DATA, -DS_E_MISMATCH,
                        "quote report_data differs from the attestation's");
        goto out;
    }
    r = verify_event_log(a, &vr.quote.td, res);
    if (r < 0) {
        goto out;
    }
    r = ds_app_info_decode(a->runtime_events, &vr.quote.td, vr.ppid, sizeof(vr.ppid),
                           a->config[0] ? a->config : NULL, false, &res->app_info);
    if (r < 0) {
        r = ds_att_fail(res, DS_ATT_STEP_APP_INFO, r, "app info: %s", ds_strerror(r));
        goto out;
    }
    for (size_t i = 0; i < vr.advisory_count && i < DS_ADVISORY_MAX; i++) {
        res->advisory_ids[i] = vr.advisory_ids[i];
        vr.advisory_ids[i] = NULL;
    }
    res->advisory_count = vr.advisory_count < DS_ADVISORY_MAX ? vr.advisory_count : DS_ADVISORY_MAX;
    vr.advisory_count = 0;
    res->ok = true;
    r = 0;
out:
    ds_verify_result_done(&vr);
    ds_collateral_free(fetched);
    return r;
}
