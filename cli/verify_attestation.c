/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack verify attestation FILE`: verify a GetQuote-style JSON response {"quote": hex,
 * "event_log": JSON string, "vm_config": JSON string (optional)}. Three checks must all pass:
 * the DCAP quote verifies (verify_run_quote), the event log replays to RTMR0-3 of the quote
 * (spec attestation.md §4.3; runtime-event digests are recomputed, §4.2), and V2 runtime events
 * carry valid preimages (§4.4). The app identity the log declares (§4.6: app_id, compose_hash,
 * instance_id, key provider, mr_system, mr_aggregated, device_id, os_image_hash) and the list of
 * runtime events are reported either way, so a failing attestation can be diagnosed.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/eventlog.h"

#include "cli.h"
#include "log.h"

/* What the attestation file holds, decoded. */
struct attest_input {
    uint8_t *quote;
    size_t quote_len;
    char *event_log; /* JSON text of the event array */
    char *vm_config; /* JSON text or NULL */
};

static void attest_input_done(struct attest_input *in)
{
    free(in->quote);
    free(in->event_log);
    free(in->vm_config);
}

/* A field that is either a JSON string holding JSON text (the GetQuote form) or, leniently, the
 * JSON value itself: returns malloc'd text, NULL when absent; *bad set for other types. */
static char *json_text_field(json_t *root, const char *key, bool *bad)
{
    json_t *f = json_object_get(root, key);
    *bad = false;
    if (f == NULL || json_is_null(f)) {
        return NULL;
    }
    if (json_is_string(f)) {
        return strndup(json_string_value(f), json_string_length(f));
    }
    if (json_is_array(f) || json_is_object(f)) {
        return json_dumps(f, JSON_COMPACT | JSON_PRESERVE_ORDER);
    }
    *bad = true;
    return NULL;
}

/* Decode a parsed GetQuote JSON object (what names it in messages). 0 or CLI_EXIT_USAGE. */
static int decode_attestation(json_t *root, const char *what, struct attest_input *in)
{
    bool bad = false;
    if (!json_is_object(root)) {
        cli_errx("%s: expected a JSON object {\"quote\", \"event_log\"}", what);
        return CLI_EXIT_USAGE;
    }
    json_t *q = json_object_get(root, "quote");
    if (!json_is_string(q)) {
        cli_errx("%s: expected \"quote\" (a hex string)", what);
        return CLI_EXIT_USAGE;
    }
    if (verify_hex_decode_loose(json_string_value(q), json_string_length(q), DS_QUOTE_MAX_SIZE,
                                &in->quote, &in->quote_len) < 0) {
        cli_errx("%s: \"quote\": expected hex (optional 0x)", what);
        return CLI_EXIT_USAGE;
    }
    in->event_log = json_text_field(root, "event_log", &bad);
    if (in->event_log == NULL) {
        cli_errx("%s: expected \"event_log\" (a string holding the JSON event array)", what);
        return CLI_EXIT_USAGE;
    }
    in->vm_config = json_text_field(root, "vm_config", &bad);
    if (bad) {
        cli_errx("%s: \"vm_config\": expected a JSON string", what);
        return CLI_EXIT_USAGE;
    }
    return 0;
}

static int read_attestation(const char *path, struct attest_input *in)
{
    uint8_t *data = NULL;
    size_t len = 0;
    json_t *root = NULL;
    json_error_t jerr;
    char what[256];
    int rc = ds_read_file(path, CLI_ATTESTATION_MAX_SIZE, &data, &len);
    if (rc < 0) {
        cli_errx("cannot read attestation file '%s': %s", path,
                 rc == -DS_E_LIMIT ? "too large" : ds_strerror(rc));
        return CLI_EXIT_USAGE;
    }
    rc = CLI_EXIT_USAGE;
    root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        cli_errx("attestation file '%s': not JSON (line %d column %d: %s)", path, jerr.line,
                 jerr.column, jerr.text);
        goto out;
    }
    snprintf(what, sizeof(what), "attestation file '%s'", path);
    rc = decode_attestation(root, what, in);
out:
    json_decref(root);
    free(data);
    return rc;
}

static bool is_printable(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if ((p[i] < 0x20 || p[i] > 0x7e) && p[i] != '\n' && p[i] != '\t' && p[i] != '\r') {
            return false;
        }
    }
    return true;
}

/* Everything the attestation check found, for both output formats. */
struct attest_outcome {
    bool ok;
    char error[512];
    const char *failed_step; /* the first failing step (reported by `verify app`) */
    struct verify_verdict verdict;
    struct ds_event_log *log;
    bool replayed;
    uint8_t rtmr[DS_RTMR_COUNT][DS_RTMR_SIZE];
    bool rtmr_ok[DS_RTMR_COUNT];
    bool have_app_info;
    struct ds_app_info app;
};

static void set_error_step(struct attest_outcome *r, const char *step, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_error_step(struct attest_outcome *r, const char *step, const char *fmt, ...)
{
    r->ok = false;
    if (r->error[0] != '\0') {
        return; /* keep the first reason */
    }
    r->failed_step = step;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->error, sizeof(r->error), fmt, ap);
    va_end(ap);
}

static void check_event_log(const struct attest_input *in, struct attest_outcome *r)
{
    const struct ds_quote *q = &r->verdict.quote;
    size_t bad_idx = 0;
    int rc = ds_eventlog_parse_json(in->event_log, strlen(in->event_log), &r->log);
    if (rc < 0) {
        r->log = NULL;
        set_error_step(r, "event_log", "event log: cannot parse the JSON event array: %s",
                       ds_strerror(rc));
        return;
    }
    rc = ds_eventlog_validate_v2_preimages(r->log, &bad_idx);
    if (rc < 0) {
        set_error_step(
            r, "event_log", "event log: V2 runtime event #%zu (\"%s\"): bad preimage: %s", bad_idx,
            bad_idx < r->log->count ? r->log->events[bad_idx].name : "?", ds_strerror(rc));
    }
    if (!r->verdict.parsed || q->kind == DS_REPORT_SGX) {
        set_error_step(r, "event_log", "event log: %s",
                       r->verdict.parsed
                           ? "the quote is an SGX quote; only TDX quotes carry RTMRs"
                           : "the quote could not be parsed, nothing to replay against");
        return;
    }
    rc = ds_eventlog_replay(r->log, NULL, r->rtmr);
    if (rc < 0) {
        set_error_step(r, "event_log", "event log: replay failed: %s", ds_strerror(rc));
        return;
    }
    r->replayed = true;
    for (int i = 0; i < DS_RTMR_COUNT; i++) {
        r->rtmr_ok[i] = ds_ct_equal(r->rtmr[i], q->td.rtmr[i], DS_RTMR_SIZE);
        if (!r->rtmr_ok[i]) {
            set_error_step(
                r, "event_log",
                "event log: RTMR%d mismatch: the log does not replay to the quote's value", i);
        }
    }
    const uint8_t *ppid = r->verdict.ok ? r->verdict.res.ppid : NULL;
    rc = ds_app_info_decode(r->log, &q->td, ppid, ppid != NULL ? sizeof(r->verdict.res.ppid) : 0,
                            in->vm_config, false, &r->app);
    if (rc < 0) {
        set_error_step(r, "app_info", "app info: %s", ds_strerror(rc));
        return;
    }
    r->have_app_info = true;
}

static json_t *hex_json(const void *p, size_t n)
{
    char *h = ds_hex_strdup(p, n);
    json_t *j = h != NULL ? json_string(h) : json_null();
    free(h);
    return j;
}

static json_t *app_info_json(const struct ds_app_info *a)
{
    json_t *o = json_object();
    json_t *scripts = json_array();
    if (o == NULL || scripts == NULL) {
        json_decref(o);
        json_decref(scripts);
        return NULL;
    }
    json_object_set_new(o, "app_id", hex_json(a->app_id, a->app_id_len));
    json_object_set_new(o, "compose_hash", hex_json(a->compose_hash, a->compose_hash_len));
    json_object_set_new(o, "instance_id", hex_json(a->instance_id, a->instance_id_len));
    json_object_set_new(o, "os_image_hash", hex_json(a->os_image_hash, a->os_image_hash_len));
    if (a->key_provider_info_len > 0) {
        json_t *kp = json_object();
        json_object_set_new(kp, "name",
                            a->key_provider_name != NULL ? json_string(a->key_provider_name)
                                                         : json_null());
        json_object_set_new(kp, "id", hex_json(a->key_provider_id, a->key_provider_id_len));
        json_object_set_new(o, "key_provider", kp);
    } else {
        json_object_set_new(o, "key_provider", json_null());
    }
    json_object_set_new(o, "key_provider_info",
                        hex_json(a->key_provider_info, a->key_provider_info_len));
    json_object_set_new(o, "mr_system", hex_json(a->mr_system, sizeof(a->mr_system)));
    json_object_set_new(o, "mr_aggregated", hex_json(a->mr_aggregated, sizeof(a->mr_aggregated)));
    json_object_set_new(o, "device_id", hex_json(a->device_id, sizeof(a->device_id)));
    for (size_t i = 0; i < a->init_script_count; i++) {
        json_array_append_new(scripts,
                              hex_json(a->init_script_hashes[i], a->init_script_hash_lens[i]));
    }
    json_object_set_new(o, "init_script_hashes", scripts);
    return o;
}

static json_t *runtime_events_json(const struct ds_event_log *log)
{
    json_t *arr = json_array();
    if (arr == NULL || log == NULL) {
        return arr;
    }
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if (!ds_event_is_runtime(ev)) {
            continue;
        }
        json_t *e = json_object();
        json_object_set_new(e, "name", json_string(ev->name));
        json_object_set_new(e, "payload", hex_json(ev->payload, ev->payload_len));
        if (is_printable(ev->payload, ev->payload_len)) {
            json_object_set_new(e, "text",
                                json_stringn((const char *)ev->payload, ev->payload_len));
        }
        json_object_set_new(e, "version", json_integer(ev->version));
        json_array_append_new(arr, e);
    }
    return arr;
}

static json_t *outcome_json(const struct attest_outcome *r)
{
    json_t *o = json_object();
    json_t *rtmrs = json_array();
    if (o == NULL || rtmrs == NULL) {
        json_decref(o);
        json_decref(rtmrs);
        return NULL;
    }
    json_object_set_new(o, "ok", json_boolean(r->ok));
    json_t *q = verify_verdict_json(&r->verdict);
    json_object_set_new(o, "quote", q != NULL ? q : json_null());
    if (r->replayed) {
        for (int i = 0; i < DS_RTMR_COUNT; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "index", json_integer(i));
            json_object_set_new(e, "expected", hex_json(r->verdict.quote.td.rtmr[i], DS_RTMR_SIZE));
            json_object_set_new(e, "replayed", hex_json(r->rtmr[i], DS_RTMR_SIZE));
            json_object_set_new(e, "ok", json_boolean(r->rtmr_ok[i]));
            json_array_append_new(rtmrs, e);
        }
    }
    json_object_set_new(o, "rtmrs", rtmrs);
    json_t *app = r->have_app_info ? app_info_json(&r->app) : NULL;
    json_object_set_new(o, "app_info", app != NULL ? app : json_null());
    json_object_set_new(o, "runtime_events", runtime_events_json(r->log));
    if (!r->ok) {
        json_object_set_new(o, "error", json_string(r->error));
    }
    return o;
}

static void print_hex(FILE *out, const char *label, const void *p, size_t n)
{
    char *h = ds_hex_strdup(p, n);
    fprintf(out, "  %-16s %s\n", label, h != NULL ? (n > 0 ? h : "(empty)") : "(out of memory)");
    free(h);
}

static void outcome_print(FILE *out, const struct attest_outcome *r)
{
    fprintf(out, "attestation verification: %s\n", r->ok ? "OK" : "FAILED");
    if (!r->ok) {
        fprintf(out, "  %-16s %s\n", "reason:", r->error);
    }
    fputc('\n', out);
    verify_verdict_print(out, &r->verdict);
    if (r->replayed) {
        fprintf(out, "\nevent log replay (%zu events):\n", r->log->count);
        for (int i = 0; i < DS_RTMR_COUNT; i++) {
            char *h = ds_hex_strdup(r->rtmr[i], DS_RTMR_SIZE);
            fprintf(out, "  RTMR%d %-9s %s\n", i, r->rtmr_ok[i] ? "replayed" : "MISMATCH",
                    h != NULL ? h : "");
            free(h);
        }
    }
    if (r->have_app_info) {
        const struct ds_app_info *a = &r->app;
        fprintf(out, "\napp identity:\n");
        print_hex(out, "app_id:", a->app_id, a->app_id_len);
        print_hex(out, "compose_hash:", a->compose_hash, a->compose_hash_len);
        print_hex(out, "instance_id:", a->instance_id, a->instance_id_len);
        print_hex(out, "os_image_hash:", a->os_image_hash, a->os_image_hash_len);
        if (a->key_provider_info_len > 0) {
            char *id = ds_hex_strdup(a->key_provider_id, a->key_provider_id_len);
            fprintf(out, "  %-16s %s (id %s)\n", "key_provider:",
                    a->key_provider_name != NULL ? a->key_provider_name : "(unparsable)",
                    id != NULL && a->key_provider_id_len > 0 ? id : "none");
            free(id);
        } else {
            fprintf(out, "  %-16s (none)\n", "key_provider:");
        }
        print_hex(out, "mr_system:", a->mr_system, sizeof(a->mr_system));
        print_hex(out, "mr_aggregated:", a->mr_aggregated, sizeof(a->mr_aggregated));
        print_hex(out, "device_id:", a->device_id, sizeof(a->device_id));
    }
    if (r->log != NULL) {
        fprintf(out, "\nruntime events:\n");
        size_t n = 0;
        for (size_t i = 0; i < r->log->count; i++) {
            const struct ds_event *ev = &r->log->events[i];
            if (!ds_event_is_runtime(ev)) {
                continue;
            }
            n++;
            if (ev->payload_len == 0) {
                fprintf(out, "  %-20s (empty)\n", ev->name);
            } else if (is_printable(ev->payload, ev->payload_len)) {
                fprintf(out, "  %-20s \"%.*s\"\n", ev->name, (int)ev->payload_len,
                        (const char *)ev->payload);
            } else {
                char *h = ds_hex_strdup(ev->payload, ev->payload_len);
                fprintf(out, "  %-20s %s\n", ev->name, h != NULL ? h : "");
                free(h);
            }
        }
        if (n == 0) {
            fprintf(out, "  (none)\n");
        }
    }
}

/* `verify app`'s extra checks: the fresh nonce in report_data and the requested app id. */
static void check_expect(const struct verify_app_expect *exp, struct attest_outcome *r)
{
    if (!r->verdict.parsed) {
        set_error_step(r, "report_data", "report_data: the quote could not be parsed");
        return;
    }
    const uint8_t *rd = ds_quote_report_data(&r->verdict.quote);
    if (rd == NULL || !ds_ct_equal(rd, exp->report_data, DS_REPORT_DATA_SIZE)) {
        set_error_step(r, "report_data",
                       "report_data: the quote does not carry this request's fresh nonce "
                       "(a replayed or foreign attestation)");
    }
    if (!r->have_app_info) {
        return; /* the event log step already failed */
    }
    char *got = ds_hex_strdup(r->app.app_id, r->app.app_id_len);
    if (got == NULL || strcmp(got, exp->app_id) != 0) {
        set_error_step(r, "app_id", "app_id: the event log declares app %s, not %s",
                       got != NULL ? got : "?", exp->app_id);
    }
    free(got);
}

/* The chain of trust, one line per link, after the detailed report. */
static void chain_print(FILE *out, const struct verify_app_expect *exp,
                        const struct attest_outcome *r)
{
    const struct verify_verdict *v = &r->verdict;
    fprintf(out, "\nchain of trust for app %s (VM %s):\n", exp->app_id, exp->vm_id);
    fprintf(out, "  1. quote signature and TCB:   %s%s%s\n",
            v->ok ? "verified, TCB " : "FAILED at ",
            v->ok ? ds_tcb_status_name(v->res.status) : (v->failed_step ? v->failed_step : "quote"),
            v->simulated ? " (SIMULATED root: proves nothing)" : " (Intel SGX Root CA)");
    bool rd_ok = r->failed_step == NULL || strcmp(r->failed_step, "report_data") != 0;
    fprintf(out, "  2. fresh nonce in report_data: %s\n",
            !v->parsed ? "not checked"
            : rd_ok    ? "bound"
                       : "MISMATCH");
    bool rtmr_ok = r->replayed;
    for (int i = 0; i < DS_RTMR_COUNT && r->replayed; i++) {
        rtmr_ok = rtmr_ok && r->rtmr_ok[i];
    }
    fprintf(out, "  3. event log -> RTMR0-3:      %s\n", rtmr_ok ? "replayed" : "FAILED");
    if (r->have_app_info) {
        const struct ds_app_info *a = &r->app;
        char *os = ds_hex_strdup(a->os_image_hash, a->os_image_hash_len);
        char *ch = ds_hex_strdup(a->compose_hash, a->compose_hash_len);
        char *inst = ds_hex_strdup(a->instance_id, a->instance_id_len);
        char *kp = ds_hex_strdup(a->key_provider_id, a->key_provider_id_len);
        fprintf(out, "  4. OS image hash:             %s\n", os != NULL ? os : "");
        fprintf(
            out, "  5. compose hash / app id:     %s / %s%s\n", ch != NULL ? ch : "", exp->app_id,
            r->failed_step != NULL && strcmp(r->failed_step, "app_id") == 0 ? " (MISMATCH)" : "");
        fprintf(out, "  6. instance id:               %s\n",
                inst != NULL && a->instance_id_len > 0 ? inst : "(none)");
        fprintf(out, "  7. key provider (KMS id):     %s (%s)\n",
                a->key_provider_name != NULL ? a->key_provider_name : "(none)",
                kp != NULL && a->key_provider_id_len > 0 ? kp : "no id");
        free(os);
        free(ch);
        free(inst);
        free(kp);
    } else {
        fprintf(out, "  4-7. app identity:            not available (%s)\n", r->error);
    }
    fprintf(out, "result: %s\n", r->ok ? "VERIFIED" : "FAILED");
    if (r->ok && v->simulated) {
        fprintf(out, "WARNING: the quote is signed by a SIMULATED TEE; this result proves NOTHING "
                     "about real hardware.\n");
    }
}

/* DCAP verification of the quote, then the event log replayed against it: the outcome in *r.
 * Returns CLI_EXIT_USAGE for a usage error (nothing verified), else 0. */
static int verify_quote_and_log(const struct verify_opts *o, struct attest_input *in,
                                struct attest_outcome *r)
{
    if (verify_run_quote(o, in->quote, in->quote_len, &r->verdict) == CLI_EXIT_USAGE) {
        return CLI_EXIT_USAGE;
    }
    r->ok = r->verdict.ok;
    if (!r->verdict.ok) {
        const char *step = r->verdict.failed_step ? r->verdict.failed_step : "quote";
        set_error_step(r, step, "quote: %s: %s",
                       r->verdict.failed_step ? r->verdict.failed_step : "unknown",
                       r->verdict.error);
    }
    check_event_log(in, r);
    return 0;
}

int verify_attestation_run_app(const struct verify_opts *o, json_t *root, const char *what,
                               const struct verify_app_expect *exp)
{
    struct attest_input in = {0};
    struct attest_outcome r = {0};
    int rc = decode_attestation(root, what, &in);
    if (rc != 0) {
        goto out;
    }
    if (verify_quote_and_log(o, &in, &r) != 0) {
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    check_expect(exp, &r);
    rc = r.ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    if (o->json) {
        json_t *j = outcome_json(&r);
        if (j != NULL) {
            json_object_set_new(j, "app_id", json_string(exp->app_id));
            json_object_set_new(j, "vm_id", json_string(exp->vm_id));
            json_object_set_new(j, "nonce", hex_json(exp->nonce, exp->nonce_len));
            json_object_set_new(j, "expected_report_data",
                                hex_json(exp->report_data, DS_REPORT_DATA_SIZE));
            json_object_set_new(j, "simulated", json_boolean(r.verdict.simulated));
            if (r.have_app_info) {
                json_object_set_new(j, "compose_hash",
                                    hex_json(r.app.compose_hash, r.app.compose_hash_len));
            }
            if (!r.ok) {
                json_object_set_new(j, "failed_step", json_string(r.failed_step));
            }
        }
        int prc = cli_print_json(j);
        json_decref(j);
        if (prc != 0) {
            rc = prc;
        }
    } else {
        outcome_print(stdout, &r);
        chain_print(stdout, exp, &r);
    }
    if (!r.ok) {
        cli_errx("verify app: FAILED at step %s: %s", r.failed_step ? r.failed_step : "?", r.error);
    } else if (r.verdict.simulated) {
        cli_errx("verify app: WARNING: SIMULATED TEE: the verification passed against a mock "
                 "root; it proves NOTHING about real hardware");
    }
out:
    if (r.have_app_info) {
        ds_app_info_done(&r.app);
    }
    ds_eventlog_free(r.log);
    verify_verdict_done(&r.verdict);
    attest_input_done(&in);
    return rc;
}

int verify_attestation_run(const struct verify_opts *o)
{
    struct attest_input in = {0};
    struct attest_outcome r = {0};
    int rc = read_attestation(o->file, &in);
    if (rc != 0) {
        goto out;
    }
    if (verify_quote_and_log(o, &in, &r) != 0) {
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    rc = r.ok ? CLI_EXIT_OK : CLI_EXIT_FAIL;
    if (o->json) {
        json_t *j = outcome_json(&r);
        int prc = cli_print_json(j);
        json_decref(j);
        if (prc != 0) {
            rc = prc;
        }
    } else {
        outcome_print(stdout, &r);
    }
out:
    if (r.have_app_info) {
        ds_app_info_done(&r.app);
    }
    ds_eventlog_free(r.log);
    verify_verdict_done(&r.verdict);
    attest_input_done(&in);
    return rc;
}
