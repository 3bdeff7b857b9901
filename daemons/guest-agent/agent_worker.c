/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The external listener (TCP 8090 on a real guest, spec guest-agent-api.md §3.3): the Worker
 * service at /prpc/Worker.<Method> (Info with TCB details only when the app's compose sets
 * public_tcbinfo, Version, GetAttestationForAppKey per §4.5) and the HTML dashboard at `/`
 * (app and instance ids, compose, TCB registers and the event log, system information when
 * public_sysinfo). Every value that reaches HTML goes through html_escape(): compose files
 * and event names are app-controlled.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/eventlog.h"

#define DASHBOARD_MAX    (8 * 1024 * 1024)
#define PAYLOAD_SHOW_MAX 64 /* payload bytes shown per event */
#define PROC_TEXT_MAX    (64 * 1024)

/* ---- Worker service -------------------------------------------------------------------------- */

static int m_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_KIND_MAX, agent_work_info, NULL, true);
}

static int m_version(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    (void)ctx;
    *out = agent_version_json();
    return *out ? 0 : -ENOMEM;
}

/* report_data = "dip1::<alg>-pk:" + base64url(pubkey), zero-padded to 64 bytes (§4.5). */
static int app_key_report_data(const uint8_t *pub, size_t pub_len, bool ed25519,
                               uint8_t rd[DS_REPORT_DATA_SIZE])
{
    char *b64 = ds_base64_encode(pub, pub_len);
    if (!b64) {
        return -ENOMEM;
    }
    for (char *p = b64; *p; p++) {
        *p = *p == '+' ? '-' : *p == '/' ? '_' : *p;
    }
    char *eq = strchr(b64, '=');
    if (eq) {
        *eq = '\0';
    }
    char text[2 * DS_REPORT_DATA_SIZE];
    int n = snprintf(text, sizeof(text), "dip1::%s-pk:%s", ed25519 ? "ed25519" : "secp256k1c", b64);
    free(b64);
    if (n < 0 || n > DS_REPORT_DATA_SIZE) {
        return -DS_E_LIMIT;
    }
    memset(rd, 0, DS_REPORT_DATA_SIZE);
    memcpy(rd, text, (size_t)n);
    return 0;
}

/* The app key's public half on the loop thread (the keys are read-only once serving), then
 * the quote as a job. */
static int check_app_key(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    uint8_t pub[33];
    size_t pub_len = 0;
    bool ed25519 = false;
    char msg[256] = "";
    int r = agent_keys_app_pubkey(a, j->req.algorithm, pub, &pub_len, &ed25519, msg, sizeof(msg));
    if (r == 0) {
        r = app_key_report_data(pub, pub_len, ed25519, j->rd);
    }
    return r < 0 ? agent_rpc_fail(call, r, msg) : 0;
}

static int m_app_key_attestation(struct ds_rpc_call *call, const json_t *params, json_t **out,
                                 void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_APP_KEY, agent_work_quote, check_app_key,
                         true);
}

static const struct ds_rpc_method worker_methods[] = {
    {"Info", m_info, DS_RPC_NO_PARAMS, 0},
    {"Version", m_version, DS_RPC_NO_PARAMS, 0},
    {"GetAttestationForAppKey", m_app_key_attestation, 0, 0},
};

const struct ds_rpc_service agent_worker_service = {
    .name = "Worker",
    .methods = worker_methods,
    .method_count = DS_ARRAY_SIZE(worker_methods),
};

/* ---- dashboard ------------------------------------------------------------------------------- */

/* Append s with & < > " ' escaped (text and attribute contexts alike). */
static int html_escape(struct ds_buf *b, const char *s)
{
    for (; s && *s; s++) {
        const char *rep = NULL;
        switch (*s) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            break;
        }
        DS_TRY(rep ? ds_buf_append_str(b, rep) : ds_buf_append(b, s, 1));
    }
    return 0;
}

static int row(struct ds_buf *b, const char *key, const char *value)
{
    DS_TRY(ds_buf_append_str(b, "<tr><th>"));
    DS_TRY(html_escape(b, key));
    DS_TRY(ds_buf_append_str(b, "</th><td><code>"));
    DS_TRY(html_escape(b, value));
    return ds_buf_append_str(b, "</code></td></tr>\n");
}

static const char *jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

static int render_event_log(struct ds_buf *b, const json_t *log)
{
    DS_TRY(ds_buf_append_str(b, "<h2>Event log</h2>\n<table class=\"log\"><tr><th>imr</th>"
                                "<th>type</th><th>event</th><th>digest</th><th>payload</th>"
                                "</tr>\n"));
    size_t i;
    const json_t *ev;
    json_array_foreach(log, i, ev)
    {
        char num[64];
        const char *payload = jstr(ev, "event_payload");
        size_t plen = strlen(payload);
        snprintf(num, sizeof(num), "%lld",
                 (long long)json_integer_value(json_object_get(ev, "imr")));
        DS_TRY(ds_buf_append_str(b, "<tr><td>"));
        DS_TRY(html_escape(b, num));
        snprintf(num, sizeof(num), "0x%llx",
                 (unsigned long long)json_integer_value(json_object_get(ev, "event_type")));
        DS_TRY(ds_buf_append_str(b, "</td><td>"));
        DS_TRY(html_escape(b, num));
        DS_TRY(ds_buf_append_str(b, "</td><td>"));
        DS_TRY(html_escape(b, jstr(ev, "event")));
        DS_TRY(ds_buf_append_str(b, "</td><td><code>"));
        DS_TRY(html_escape(b, jstr(ev, "digest")));
        DS_TRY(ds_buf_append_str(b, "</code></td><td><code>"));
        /* Payload hex, cut for display (the full log is in Info / GetQuote). */
        char cut[2 * PAYLOAD_SHOW_MAX + 1];
        snprintf(cut, sizeof(cut), "%s", payload);
        DS_TRY(html_escape(b, cut));
        DS_TRY(ds_buf_append_str(b, plen > 2 * PAYLOAD_SHOW_MAX ? "&hellip;" : ""));
        DS_TRY(ds_buf_append_str(b, "</code></td></tr>\n"));
    }
    return ds_buf_append_str(b, "</table>\n");
}

/* First line of a /proc file matching prefix, for the sysinfo section. */
static void proc_line(const char *path, const char *prefix, char *out, size_t out_size)
{
    uint8_t *data = NULL;
    size_t len = 0;
    out[0] = '\0';
    if (ds_read_file(path, PROC_TEXT_MAX, &data, &len) < 0) {
        return;
    }
    const char *p = (const char *)data;
    while (p && *p) {
        if (strncmp(p, prefix, strlen(prefix)) == 0) {
            size_t n = strcspn(p, "\n");
            snprintf(out, out_size, "%.*s", (int)n, p);
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    free(data);
}

static int render_sysinfo(struct ds_buf *b)
{
    char line[256];
    DS_TRY(ds_buf_append_str(b, "<h2>System</h2>\n<table>\n"));
    proc_line("/proc/loadavg", "", line, sizeof(line));
    DS_TRY(row(b, "load average", line));
    proc_line("/proc/uptime", "", line, sizeof(line));
    DS_TRY(row(b, "uptime (s)", line));
    proc_line("/proc/meminfo", "MemTotal:", line, sizeof(line));
    DS_TRY(row(b, "memory", line));
    proc_line("/proc/meminfo", "MemAvailable:", line, sizeof(line));
    DS_TRY(row(b, "available", line));
    return ds_buf_append_str(b, "</table>\n");
}

static int render_dashboard(struct agent *a, struct ds_buf *b, char *msg, size_t msg_size)
{
    json_t *info = NULL, *tcb = NULL;
    int r = agent_info(a, true, &info, msg, msg_size);
    if (r < 0) {
        return r;
    }
    const char *tcb_text = jstr(info, "tcb_info");
    if (*tcb_text) {
        tcb = json_loads(tcb_text, 0, NULL);
    }
    r = ds_buf_append_str(b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
                             "<title>dstack app: ");
    if (r == 0) {
        r = html_escape(b, jstr(info, "app_name"));
    }
    if (r == 0) {
        r = ds_buf_append_str(
            b, "</title><style>body{font-family:sans-serif;margin:2em}th{text-align:left;"
               "padding-right:1em;vertical-align:top}code,pre{font-size:90%;word-break:break-all}"
               "table.log td{border-top:1px solid #ddd;padding:2px 6px}.warn{color:#b00}</style>"
               "</head><body>\n<h1>");
    }
    if (r == 0) {
        r = html_escape(b, jstr(info, "app_name"));
    }
    if (r == 0) {
        r = ds_buf_append_str(b, "</h1>\n");
    }
    if (r == 0 && ds_tee_is_simulated(a->tee)) {
        r = ds_buf_append_str(b, "<p class=\"warn\"><b>SIMULATED TEE: this instance proves "
                                 "nothing; development keys only.</b></p>\n");
    }
    if (r == 0) {
        r = ds_buf_append_str(b, "<h2>App</h2>\n<table>\n");
    }
    static const char *const fields[] = {
        "app_id",        "instance_id",       "device_id",    "compose_hash", "os_image_hash",
        "mr_aggregated", "key_provider_info", "cloud_vendor", "cloud_product"};
    for (size_t i = 0; r == 0 && i < DS_ARRAY_SIZE(fields); i++) {
        r = row(b, fields[i], jstr(info, fields[i]));
    }
    if (r == 0) {
        r = ds_buf_append_str(b, "</table>\n<h2>Compose</h2>\n<pre>");
    }
    if (r == 0) {
        r = html_escape(b, a->compose_raw);
    }
    if (r == 0) {
        r = ds_buf_append_str(b, "</pre>\n");
    }
    if (r == 0 && tcb) {
        static const char *const regs[] = {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"};
        r = ds_buf_append_str(b, "<h2>TCB info</h2>\n<table>\n");
        for (size_t i = 0; r == 0 && i < DS_ARRAY_SIZE(regs); i++) {
            r = row(b, regs[i], jstr(tcb, regs[i]));
        }
        if (r == 0) {
            r = ds_buf_append_str(b, "</table>\n");
        }
        if (r == 0) {
            r = render_event_log(b, json_object_get(tcb, "event_log"));
        }
    } else if (r == 0) {
        r = ds_buf_append_str(b, "<p>TCB info is private (set <code>public_tcbinfo</code> in "
                                 "app-compose.json to publish it).</p>\n");
    }
    if (r == 0 && a->public_sysinfo) {
        r = render_sysinfo(b);
    }
    if (r == 0 && a->public_logs) {
        r = ds_buf_append_str(b, "<p>Container logs: <code>/logs/&lt;container&gt;</code></p>\n");
    }
    if (r == 0) {
        r = ds_buf_append_str(b, "</body></html>\n");
    }
    json_decref(tcb);
    json_decref(info);
    return r;
}

static int w_dashboard(struct agent *a, struct agent_job *j)
{
    j->is_html = true;
    return render_dashboard(a, &j->html, j->msg, sizeof(j->msg));
}

static int r_dashboard(struct ds_rpc_call *call, void *ctx)
{
    struct agent_job *j = agent_job_new(w_dashboard);
    if (!j) {
        return -ENOMEM;
    }
    return agent_job_submit(ctx, call, j);
}

/* /metrics (Prometheus text) exists only with public_sysinfo (§3.3). */
static int r_metrics(struct ds_rpc_call *call, void *ctx)
{
    struct agent *a = ctx;
    if (!a->public_sysinfo) {
        static const char nf[] = "not found\n";
        ds_rpc_call_reply_raw(call, 404, "text/plain", nf, sizeof(nf) - 1);
        return 0;
    }
    char load[256], mem[256], avail[256], text[1024];
    double l1 = 0;
    unsigned long long total = 0, free_kb = 0;
    proc_line("/proc/loadavg", "", load, sizeof(load));
    proc_line("/proc/meminfo", "MemTotal:", mem, sizeof(mem));
    proc_line("/proc/meminfo", "MemAvailable:", avail, sizeof(avail));
    (void)sscanf(load, "%lf", &l1);
    (void)sscanf(mem, "MemTotal: %llu", &total);
    (void)sscanf(avail, "MemAvailable: %llu", &free_kb);
    int n = snprintf(text, sizeof(text),
                     "# TYPE node_load1 gauge\nnode_load1 %g\n"
                     "# TYPE node_memory_MemTotal_bytes gauge\nnode_memory_MemTotal_bytes %llu\n"
                     "# TYPE node_memory_MemAvailable_bytes gauge\n"
                     "node_memory_MemAvailable_bytes %llu\n",
                     l1, total * 1024, free_kb * 1024);
    ds_rpc_call_reply_raw(call, 200, "text/plain; version=0.0.4", text, n > 0 ? (size_t)n : 0);
    return 0;
}

/* /logs/<container>: Docker log streaming is not part of this agent (yet); say so clearly. */
static int r_logs(struct ds_rpc_call *call, void *ctx)
{
    struct agent *a = ctx;
    static const char nf[] = "not found\n";
    static const char ni[] = "container logs are not available from this agent\n";
    if (!a->public_logs) {
        ds_rpc_call_reply_raw(call, 404, "text/plain", nf, sizeof(nf) - 1);
    } else {
        ds_rpc_call_reply_raw(call, 501, "text/plain", ni, sizeof(ni) - 1);
    }
    return 0;
}

const struct ds_rpc_route agent_worker_routes[] = {
    {"/", DS_RPC_HTTP_GET, r_dashboard},
    {"/metrics", DS_RPC_HTTP_GET, r_metrics},
    {"/logs/", DS_RPC_HTTP_GET, r_logs},
};
const size_t agent_worker_route_count = DS_ARRAY_SIZE(agent_worker_routes);
