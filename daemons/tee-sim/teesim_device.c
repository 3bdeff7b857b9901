/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The per-TD device interface: what a guest can do with its own registers through its own
 * socket (<state-dir>/tds/<name>/tdx.sock): get a quote over 64 bytes of report data, extend
 * RTMR2/3, read MRTD and RTMR0-3, read the event log. RTMR0/1 and MRTD are read-only for the
 * guest, as on TDX (spec attestation.md §4.3). Requests arrive parsed (tee_proto.c).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "teesim.h"

static json_t *op_get_quote(struct teesim_td *td, const struct ds_tee_request *req)
{
    struct ds_sim_quote_opts opts = {.version = req->quote_version};
    uint8_t *quote = NULL;
    size_t len = 0;
    int r = ds_sim_quote(td->sim->pki, &td->regs, req->report_data, &opts, &quote, &len);
    if (r < 0) {
        log_warnx("TD \"%s\": quote generation failed: %s", td->name, ds_strerror(r));
        return teesim_error_response(r, "quote generation failed");
    }
    char *hex = ds_hex_strdup(quote, len);
    free(quote);
    if (!hex) {
        return NULL;
    }
    json_t *resp = json_pack("{s:b,s:s}", "ok", 1, "quote", hex);
    free(hex);
    return resp;
}

static json_t *op_extend(struct teesim_td *td, const struct ds_tee_request *req)
{
    char err[256] = "";
    int r = teesim_td_extend(td, req, err, sizeof(err));
    if (r < 0) {
        return teesim_error_response(r, err[0] ? err : NULL);
    }
    char hex[2 * 48 + 1];
    ds_hex_encode(td->regs.rtmr[req->index], 48, hex);
    log_debug("TD \"%s\": RTMR%u extended (event \"%s\")", td->name, req->index, req->event);
    return json_pack("{s:b,s:i,s:s}", "ok", 1, "index", (int)req->index, "rtmr", hex);
}

static json_t *op_read(struct teesim_td *td)
{
    char mrtd[2 * 48 + 1], r[4][2 * 48 + 1];
    ds_hex_encode(td->regs.mr_td, 48, mrtd);
    for (int i = 0; i < 4; i++) {
        ds_hex_encode(td->regs.rtmr[i], 48, r[i]);
    }
    return json_pack("{s:b,s:s,s:s,s:s,s:s,s:s}", "ok", 1, "mrtd", mrtd, "rtmr0", r[0], "rtmr1",
                     r[1], "rtmr2", r[2], "rtmr3", r[3]);
}

static json_t *op_event_log(struct teesim_td *td)
{
    char *text = NULL;
    int r = ds_eventlog_to_json(td->log, DS_EVENTLOG_JSON_PREIMAGE, &text, NULL);
    if (r < 0) {
        return teesim_error_response(r, "cannot serialize the event log");
    }
    json_error_t jerr;
    json_t *log = json_loads(text, 0, &jerr);
    free(text);
    if (!log) {
        return NULL;
    }
    return json_pack("{s:b,s:o}", "ok", 1, "event_log", log);
}

json_t *teesim_device_handle(struct teesim_td *td, const struct ds_tee_request *req)
{
    switch (req->op) {
    case DS_TEE_OP_GET_QUOTE:
        return op_get_quote(td, req);
    case DS_TEE_OP_EXTEND_RTMR:
        return op_extend(td, req);
    case DS_TEE_OP_READ_REGISTERS:
        return op_read(td);
    case DS_TEE_OP_GET_EVENT_LOG:
        return op_event_log(td);
    case DS_TEE_OP_INFO:
        return json_pack("{s:b,s:b,s:s,s:s}", "ok", 1, "simulated", 1, "name", td->name, "provider",
                         "dstack-tee-sim");
    default:
        return teesim_error_response(-DS_E_UNSUPPORTED, "operation not available");
    }
}
