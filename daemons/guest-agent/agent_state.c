/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent's inputs and the evidence built from them: app-compose.json, the
 * sys-config's vm_config string, the DMI vendor strings (spec guest-agent-api.md §4.1), fresh
 * quotes with their event log from the TEE provider, and the compositions every service
 * shares: the AppInfo object (§4.11, cached until RTMR3 changes), the GetQuote response (§3.1,
 * §4.7, §4.9) and the Attest container (§4.12).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/eventlog.h"
#include "dstack/versioned.h"
#include "log.h"

/* ---- inputs ---------------------------------------------------------------------------------- */

static int read_text(const char *path, size_t max, char **out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    DS_TRY(ds_read_file(path, max, &data, &len));
    if (memchr(data, '\0', len)) {
        free(data);
        return -DS_E_FORMAT;
    }
    *out = (char *)data; /* ds_read_file NUL-terminates */
    return 0;
}

/* Trimmed first line of a DMI file, "" when unreadable (§4.11 cloud_vendor/cloud_product). */
static char *read_dmi(const char *dir, const char *name)
{
    char path[4096];
    char *text = NULL;
    int n = snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= sizeof(path) || read_text(path, AGENT_DMI_MAX, &text) < 0) {
        return strdup("");
    }
    size_t len = strlen(text);
    while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == ' ' || text[len - 1] == '\t' ||
                       text[len - 1] == '\r')) {
        text[--len] = '\0';
    }
    size_t lead = strspn(text, " \t");
    memmove(text, text + lead, len - lead + 1);
    return text;
}

/* Apply app-compose.json: keep the raw text, read name and the public_* switches. */
static int apply_compose(struct agent *a)
{
    json_error_t jerr;
    json_t *root = json_loads(a->compose_raw, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        log_warnx("compose file \"%s\": not a JSON object (%s, line %d)", a->cfg.compose_file,
                  jerr.text, jerr.line);
        json_decref(root);
        return -DS_E_FORMAT;
    }
    const json_t *name = json_object_get(root, "name");
    a->app_name = strdup(json_is_string(name) ? json_string_value(name) : "");
    a->public_logs = json_is_true(json_object_get(root, "public_logs"));
    a->public_sysinfo = json_is_true(json_object_get(root, "public_sysinfo"));
    a->public_tcbinfo = json_is_true(json_object_get(root, "public_tcbinfo"));
    const json_t *ver = json_object_get(root, "event_log_version");
    a->event_log_version = json_is_integer(ver) && json_integer_value(ver) == 2 ? 2 : 1;
    json_decref(root);
    return a->app_name ? 0 : -ENOMEM;
}

/* sys-config: the vm_config member is itself a JSON string, returned verbatim (§4.1). */
static int apply_sys_config(struct agent *a, const char *text)
{
    json_error_t jerr;
    json_t *root = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(root)) {
        log_warnx("sys-config \"%s\": not a JSON object (%s, line %d)", a->cfg.sys_config_file,
                  jerr.text, jerr.line);
        json_decref(root);
        return -DS_E_FORMAT;
    }
    const json_t *vm = json_object_get(root, "vm_config");
    a->vm_config = strdup(json_is_string(vm) ? json_string_value(vm) : "");
    json_decref(root);
    return a->vm_config ? 0 : -ENOMEM;
}

int agent_state_set_inputs(struct agent *a, const char *compose_text, const char *sys_config_text)
{
    free(a->compose_raw);
    free(a->app_name);
    free(a->vm_config);
    a->app_name = a->vm_config = NULL;
    a->compose_raw = strdup(compose_text);
    if (!a->compose_raw) {
        return -ENOMEM;
    }
    DS_TRY(apply_compose(a));
    return apply_sys_config(a, sys_config_text);
}

/* Lowercase hex string member, or NULL when absent / not hex. */
static char *hex_member(const json_t *o, const char *key)
{
    const char *v = json_string_value(json_object_get(o, key));
    if (!v || !*v || strlen(v) % 2 || strspn(v, "0123456789abcdefABCDEF") != strlen(v)) {
        return NULL;
    }
    char *d = strdup(v);
    for (char *p = d; p && *p; p++) {
        *p = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
    }
    return d;
}

/* .instance_info is optional: a missing file is normal (first boot, simulator), anything else
 * unreadable is worth a warning but not fatal, since the event log is the primary source. */
static void load_instance_info(struct agent *a)
{
    char *text = NULL;
    int r = read_text(a->cfg.instance_info_file, AGENT_INSTANCE_INFO_MAX, &text);
    if (r == -ENOENT) {
        return;
    }
    json_t *root = r == 0 ? json_loads(text, JSON_REJECT_DUPLICATES, NULL) : NULL;
    free(text);
    if (!json_is_object(root)) {
        log_warnx("instance info \"%s\": %s", a->cfg.instance_info_file,
                  r < 0 ? ds_strerror(r) : "not a JSON object");
        json_decref(root);
        return;
    }
    a->ii_app_id = hex_member(root, "app_id");
    a->ii_instance_id = hex_member(root, "instance_id");
    json_decref(root);
}

int agent_state_load(struct agent *a)
{
    char *compose = NULL, *sys = NULL;
    int r;
    if (!a->cfg.simulator) {
        r = agent_keys_load(a, a->cfg.keys_file);
        if (r < 0) {
            return r;
        }
        r = read_text(a->cfg.compose_file, AGENT_COMPOSE_MAX, &compose);
        if (r < 0) {
            log_warnx("compose file \"%s\": %s", a->cfg.compose_file, ds_strerror(r));
            goto out;
        }
        r = read_text(a->cfg.sys_config_file, AGENT_SYS_CONFIG_MAX, &sys);
        if (r < 0) {
            log_warnx("sys-config \"%s\": %s", a->cfg.sys_config_file, ds_strerror(r));
            goto out;
        }
        r = agent_state_set_inputs(a, compose, sys);
        if (r < 0) {
            goto out;
        }
        load_instance_info(a);
    }
    a->cloud_vendor = read_dmi(a->cfg.dmi_dir, "sys_vendor");
    a->cloud_product = read_dmi(a->cfg.dmi_dir, "product_name");
    r = (a->cloud_vendor && a->cloud_product) ? 0 : -ENOMEM;
out:
    free(compose);
    free(sys);
    return r;
}

void agent_state_free(struct agent *a)
{
    agent_keys_free(a);
    ds_tee_close(a->tee);
    free(a->compose_raw);
    free(a->app_name);
    free(a->vm_config);
    free(a->cloud_vendor);
    free(a->cloud_product);
    free(a->ii_app_id);
    free(a->ii_instance_id);
    free(a->app_cert);
    json_decref(a->info_cache);
    memset(a, 0, sizeof(*a));
}

/* ---- evidence -------------------------------------------------------------------------------- */

int agent_evidence_get(struct agent *a, const uint8_t rd[64], struct agent_evidence *out, char *msg,
                       size_t msg_size)
{
    struct agent_evidence e;
    memset(&e, 0, sizeof(e));
    char *log_json = NULL;
    struct ds_quote q;
    int r = ds_tee_get_quote(a->tee, rd, &e.quote, &e.quote_len);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to get quote: %s", ds_strerror(r));
        goto out;
    }
    r = ds_quote_parse(e.quote, e.quote_len, &q);
    if (r == 0 && q.kind != DS_REPORT_TD10 && q.kind != DS_REPORT_TD15) {
        r = -DS_E_UNSUPPORTED;
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to parse quote: %s", ds_strerror(r));
        goto out;
    }
    e.td = q.td;
    r = ds_tee_get_event_log(a->tee, &log_json);
    if (r == 0) {
        r = ds_eventlog_parse_json(log_json, strlen(log_json), &e.log);
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to read event log: %s", ds_strerror(r));
        goto out;
    }
    *out = e;
    memset(&e, 0, sizeof(e));
out:
    free(log_json);
    agent_evidence_done(&e);
    return r;
}

void agent_evidence_done(struct agent_evidence *e)
{
    free(e->quote);
    ds_eventlog_free(e->log);
    memset(e, 0, sizeof(*e));
}

/* ---- Info (§4.11) ---------------------------------------------------------------------------- */

static json_t *hexj(const uint8_t *p, size_t n)
{
    char *h = ds_hex_strdup(p ? p : (const uint8_t *)"", n);
    json_t *j = h ? json_string(h) : NULL;
    free(h);
    return j;
}

static json_t *strnj(const uint8_t *p, size_t n)
{
    return json_stringn(p ? (const char *)p : "", p ? n : 0);
}

static int build_info(struct agent *a, json_t **out, char *msg, size_t msg_size)
{
    static const uint8_t zero_rd[DS_REPORT_DATA_SIZE];
    struct agent_evidence e;
    struct ds_app_info info;
    memset(&info, 0, sizeof(info));
    json_t *tcb = NULL, *res = NULL, *log = NULL;
    char *log_json = NULL, *tcb_text = NULL;
    int r = agent_evidence_get(a, zero_rd, &e, msg, msg_size);
    if (r < 0) {
        return r;
    }
    r = ds_app_info_decode(e.log, &e.td, NULL, 0, a->vm_config, false, &info);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to decode app info: %s", ds_strerror(r));
        goto out;
    }
    r = ds_eventlog_to_json(e.log, 0, &log_json, NULL);
    if (r < 0 || !(log = json_loads(log_json, 0, NULL))) {
        snprintf(msg, msg_size, "failed to encode event log");
        r = r < 0 ? r : -ENOMEM;
        goto out;
    }
    r = -ENOMEM;
    tcb = json_object();
    if (!tcb) {
        goto out;
    }
    static const char *const rtmr_keys[4] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    json_object_set_new(tcb, "mrtd", hexj(e.td.mr_td, 48));
    for (int i = 0; i < 4; i++) {
        json_object_set_new(tcb, rtmr_keys[i], hexj(e.td.rtmr[i], 48));
    }
    json_object_set_new(tcb, "mr_aggregated", hexj(info.mr_aggregated, 32));
    json_object_set_new(tcb, "os_image_hash", hexj(info.os_image_hash, info.os_image_hash_len));
    json_object_set_new(tcb, "compose_hash", hexj(info.compose_hash, info.compose_hash_len));
    json_object_set_new(tcb, "device_id", hexj(info.device_id, 32));
    json_object_set(tcb, "event_log", log);
    json_object_set_new(tcb, "app_compose", json_string(a->compose_raw ? a->compose_raw : ""));
    /* serde_json's pretty printer: two-space indent (§4.11). */
    tcb_text = json_dumps(tcb, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!tcb_text) {
        goto out;
    }
    res = json_object();
    if (!res) {
        goto out;
    }
    /* The event log is authoritative; .instance_info only fills ids it does not carry. */
    json_object_set_new(res, "app_id",
                        info.app_id_len || !a->ii_app_id ? hexj(info.app_id, info.app_id_len)
                                                         : json_string(a->ii_app_id));
    json_object_set_new(res, "instance_id",
                        info.instance_id_len || !a->ii_instance_id
                            ? hexj(info.instance_id, info.instance_id_len)
                            : json_string(a->ii_instance_id));
    json_object_set_new(res, "app_cert", json_string(a->app_cert ? a->app_cert : ""));
    json_object_set_new(res, "tcb_info", json_string(tcb_text));
    json_object_set_new(res, "app_name", json_string(a->app_name ? a->app_name : ""));
    json_object_set_new(res, "device_id", hexj(info.device_id, 32));
    json_object_set_new(res, "mr_aggregated", hexj(info.mr_aggregated, 32));
    json_object_set_new(res, "os_image_hash", hexj(info.os_image_hash, info.os_image_hash_len));
    json_object_set_new(res, "key_provider_info",
                        strnj(info.key_provider_info, info.key_provider_info_len));
    json_object_set_new(res, "compose_hash", hexj(info.compose_hash, info.compose_hash_len));
    json_object_set_new(res, "vm_config", json_string(a->vm_config ? a->vm_config : ""));
    json_object_set_new(res, "cloud_vendor", json_string(a->cloud_vendor ? a->cloud_vendor : ""));
    json_object_set_new(res, "cloud_product",
                        json_string(a->cloud_product ? a->cloud_product : ""));
    /* Every set_new above fails only on allocation failure or an invalid UTF-8 string (the
     * compose text and key-provider payload are checked by json_string*): count the keys. */
    if (json_object_size(res) != 13 || json_object_size(tcb) != 11) {
        snprintf(msg, msg_size, "failed to build app info (invalid UTF-8 in an input?)");
        r = -DS_E_FORMAT;
        goto out;
    }
    *out = res;
    res = NULL;
    r = 0;
out:
    json_decref(res);
    json_decref(tcb);
    json_decref(log);
    free(log_json);
    free(tcb_text);
    ds_app_info_done(&info);
    agent_evidence_done(&e);
    return r;
}

int agent_info(struct agent *a, bool external, json_t **out, char *msg, size_t msg_size)
{
    struct ds_tee_registers regs;
    int r = ds_tee_read_rtmrs(a->tee, &regs);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to read registers: %s", ds_strerror(r));
        return r;
    }
    if (a->info_cache && !ds_ct_equal(regs.rtmr[3], a->info_rtmr3, sizeof(a->info_rtmr3))) {
        agent_info_invalidate(a);
    }
    if (!a->info_cache) {
        DS_TRY(build_info(a, &a->info_cache, msg, msg_size));
        /* The quote inside build_info saw these registers or later ones; a later change is
         * caught by the next call's comparison. */
        memcpy(a->info_rtmr3, regs.rtmr[3], sizeof(a->info_rtmr3));
    }
    if (!external || a->public_tcbinfo) {
        *out = json_incref(a->info_cache);
        return 0;
    }
    /* The external listener hides the TCB details unless the app opted in (§3.3). */
    json_t *copy = json_copy(a->info_cache);
    if (!copy) {
        return -ENOMEM;
    }
    json_object_set_new(copy, "tcb_info", json_string(""));
    json_object_set_new(copy, "vm_config", json_string(""));
    *out = copy;
    return 0;
}

void agent_info_invalidate(struct agent *a)
{
    json_decref(a->info_cache);
    a->info_cache = NULL;
}

/* ---- GetQuote / Attest ----------------------------------------------------------------------- */

int agent_quote_response(struct agent *a, const uint8_t rd[64], bool with_vm_config, json_t **out,
                         char *msg, size_t msg_size)
{
    struct agent_evidence e;
    char *log_json = NULL;
    DS_TRY(agent_evidence_get(a, rd, &e, msg, msg_size));
    /* Simulated TEEs return the full log (as upstream's simulator, so replayRtmrs() equals the
     * quote); real TDX the stripped form, keeping runtime digests (newer upstream). */
    unsigned flags = ds_tee_is_simulated(a->tee)
                         ? DS_EVENTLOG_JSON_PREIMAGE
                         : DS_EVENTLOG_JSON_STRIPPED | DS_EVENTLOG_JSON_PREIMAGE |
                               DS_EVENTLOG_JSON_RUNTIME_DIGESTS;
    int r = ds_eventlog_to_json(e.log, flags, &log_json, NULL);
    if (r < 0) {
        snprintf(msg, msg_size, "failed to encode event log: %s", ds_strerror(r));
        goto out;
    }
    json_t *res = json_object();
    r = -ENOMEM;
    if (!res) {
        goto out;
    }
    json_object_set_new(res, "quote", hexj(e.quote, e.quote_len));
    json_object_set_new(res, "event_log", json_string(log_json));
    if (with_vm_config) {
        json_object_set_new(res, "report_data", hexj(rd, DS_REPORT_DATA_SIZE));
        json_object_set_new(res, "vm_config", json_string(a->vm_config ? a->vm_config : ""));
    }
    if (json_object_size(res) != (with_vm_config ? 4u : 2u)) {
        json_decref(res);
        goto out;
    }
    *out = res;
    r = 0;
out:
    free(log_json);
    agent_evidence_done(&e);
    return r;
}

int agent_attest(struct agent *a, const uint8_t rd[64], uint8_t **out, size_t *out_len, char *msg,
                 size_t msg_size)
{
    struct agent_evidence e;
    struct ds_attestation *att = NULL;
    DS_TRY(agent_evidence_get(a, rd, &e, msg, msg_size));
    int r = ds_attestation_new_tdx(e.quote, e.quote_len, e.log, NULL, rd, a->vm_config, &att);
    if (r == 0) {
        r = ds_attestation_encode(att, DS_ATT_WIRE_AUTO, out, out_len);
    }
    if (r < 0) {
        snprintf(msg, msg_size, "failed to build attestation: %s", ds_strerror(r));
    }
    ds_attestation_free(att);
    agent_evidence_done(&e);
    return r;
}
