/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The DstackGuest service on dstack.sock (paths `/<Method>`, spec guest-agent-api.md §3.1):
 * GetTlsKey, GetKey, GetQuote, Attest, Info, GpuInfo, EmitEvent, Sign, Verify, Version. Each
 * handler decodes its request through agent_decode.c and checks what it can on the loop
 * thread; key operations (agent_keys.c) answer at once, TEE work (evidence in agent_state.c,
 * certificates in agent_tls.c) runs as a job on the worker thread (agent_jobs.c). Responses
 * carry every field, in proto order (§2.5). Also the job helpers the other services share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/eventlog.h"
#include "log.h"

/* GpuInfo reads this file verbatim, "" when missing (§3.1). */
#define GPU_ATTESTATION_FILE "/run/nvidia-gpu-attestation/attestation.out"
#define GPU_ATTESTATION_MAX  (4 * 1024 * 1024)

int agent_rpc_decode(struct ds_rpc_call *call, enum agent_req_kind kind, const json_t *params,
                     struct agent_req *req)
{
    char err[AGENT_DECODE_ERR] = "";
    int r = agent_req_decode(kind, params, ds_rpc_call_from_query(call), req, err, sizeof(err));
    if (r < 0) {
        agent_req_done(req);
        if (r == -ENOMEM) {
            return r;
        }
        return ds_rpc_call_error(call, "%s", err[0] ? err : ds_strerror(r));
    }
    return 0;
}

int agent_rpc_fail(struct ds_rpc_call *call, int r, const char *msg)
{
    if (r == -ENOMEM) {
        return r;
    }
    return ds_rpc_call_error(call, "%s", msg && msg[0] ? msg : ds_strerror(r));
}

json_t *agent_version_json(void)
{
    return json_pack("{s:s,s:s}", "version", AGENT_VERSION, "rev", AGENT_REV);
}

int agent_rpc_job(struct ds_rpc_call *call, const json_t *params, struct agent *a,
                  enum agent_req_kind kind, agent_job_fn fn,
                  int (*check)(struct ds_rpc_call *call, struct agent *a, struct agent_job *j),
                  bool flag)
{
    struct agent_job *j = agent_job_new(fn);
    if (!j) {
        return -ENOMEM;
    }
    j->flag = flag;
    int r = 0;
    if (kind != AGENT_REQ_KIND_MAX) {
        r = agent_rpc_decode(call, kind, params, &j->req);
    }
    if (r == 0 && check) {
        r = check(call, a, j);
    }
    if (r < 0) {
        agent_job_free(j);
        return r;
    }
    return agent_job_submit(a, call, j);
}

/* report_data for GetQuote / Attest: at most 64 bytes, right-padded with zeros (§4.7). */
static int check_report_data(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    (void)a;
    if (j->req.report_data.len > DS_REPORT_DATA_SIZE) {
        return ds_rpc_call_error(call, "Report data is too long");
    }
    memset(j->rd, 0, sizeof(j->rd));
    memcpy(j->rd, j->req.report_data.data, j->req.report_data.len);
    return 0;
}

int agent_work_info(struct agent *a, struct agent_job *j)
{
    return agent_info(a, j->flag, &j->result, j->msg, sizeof(j->msg));
}

int agent_work_quote(struct agent *a, struct agent_job *j)
{
    DS_TRY(agent_quote_response(a, j->rd, j->flag, &j->result, j->msg, sizeof(j->msg)));
    if (j->alg) {
        /* TdxQuote / RawQuote echo the algorithm and the tag without its colon (§4.7). */
        json_object_set_new(j->result, "hash_algorithm", json_string(j->alg));
        json_object_set_new(j->result, "prefix", json_string(j->tag ? j->tag : ""));
        if (json_object_size(j->result) != 4) {
            return -ENOMEM;
        }
    }
    return 0;
}

/* GetTlsKey (fresh key) and Tappd DeriveKey (key per path unless random_seed), §4.6. */
int agent_work_tls(struct agent *a, struct agent_job *j)
{
    const struct agent_req *req = &j->req;
    bool derive = req->kind == AGENT_REQ_DERIVE && !req->random_seed;
    uint8_t scalar[32];
    char *pem = NULL;
    json_t *chain = NULL;
    struct agent_cert_opts o = {
        .subject = req->subject,
        .alt_names = (const char *const *)req->alt_names.items,
        .alt_name_count = req->alt_names.count,
        .ra_tls = req->usage_ra_tls,
        .server_auth = req->usage_server_auth,
        .client_auth = req->usage_client_auth,
        .has_not_before = req->not_before.present,
        .has_not_after = req->not_after.present,
        .not_before = req->not_before.value,
        .not_after = req->not_after.value,
        .with_app_info = req->with_app_info,
    };
    int r = agent_keys_tls_scalar(a, derive ? req->path : NULL, scalar);
    if (r == 0) {
        r = agent_keys_key_pem(scalar, &pem);
    }
    if (r == 0) {
        r = agent_tls_issue(a, scalar, &o, &chain, j->msg, sizeof(j->msg));
    }
    if (r == 0) {
        j->result = json_pack("{s:s,s:o}", "key", pem, "certificate_chain", chain);
        chain = NULL;
        r = j->result ? 0 : -ENOMEM;
    } else if (!j->msg[0]) {
        snprintf(j->msg, sizeof(j->msg), "failed to generate key: %s", ds_strerror(r));
    }
    ds_wipe(scalar, sizeof(scalar));
    agent_keys_free_pem(pem);
    json_decref(chain);
    return r;
}

static int check_validity(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    (void)a;
    if (j->req.not_before.present && j->req.not_after.present &&
        j->req.not_before.value >= j->req.not_after.value) {
        return ds_rpc_call_error(call, "not_before must be earlier than not_after");
    }
    return 0;
}

static int m_get_tls_key(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_TLS_KEY, agent_work_tls, check_validity,
                         false);
}

static int m_get_key(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct agent_req req;
    char msg[256] = "";
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_GET_KEY, params, &req));
    int r = agent_keys_get_key(ctx, &req, false, out, msg, sizeof(msg));
    agent_req_done(&req);
    return r < 0 ? agent_rpc_fail(call, r, msg) : 0;
}

static int m_get_quote(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_QUOTE, agent_work_quote, check_report_data,
                         true);
}

static int w_attest(struct agent *a, struct agent_job *j)
{
    uint8_t *att = NULL;
    size_t att_len = 0;
    DS_TRY(agent_attest(a, j->rd, &att, &att_len, j->msg, sizeof(j->msg)));
    char *hex = ds_hex_strdup(att, att_len);
    free(att);
    j->result = hex ? json_pack("{s:s}", "attestation", hex) : NULL;
    free(hex);
    return j->result ? 0 : -ENOMEM;
}

static int m_attest(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_QUOTE, w_attest, check_report_data, false);
}

static int m_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_KIND_MAX, agent_work_info, NULL, false);
}

static int m_gpu_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    (void)ctx;
    uint8_t *data = NULL;
    size_t len = 0;
    int r = ds_read_file(GPU_ATTESTATION_FILE, GPU_ATTESTATION_MAX, &data, &len);
    /* Verbatim; a file that is not valid UTF-8 cannot be a JSON string and is reported empty. */
    json_t *s = r == 0 ? json_stringn((const char *)data, len) : NULL;
    free(data);
    *out = json_pack("{s:o}", "attestation", s ? s : json_string(""));
    return *out ? 0 : -ENOMEM;
}

/* EmitEvent (npm SDK 0.5.8, §4.10): a runtime event (V1, or V2 when the compose file says
 * event_log_version 2) extended into RTMR3, then logged. */
static int w_emit_event(struct agent *a, struct agent_job *j)
{
    uint8_t digest[DS_SHA384_LEN];
    const char *name = j->req.event;
    int r = ds_runtime_event_digest_sha384(a->event_log_version, name, j->req.payload.data,
                                           j->req.payload.len, digest);
    if (r == 0) {
        r = ds_tee_extend_rtmr(a->tee, 3, digest, name, j->req.payload.data, j->req.payload.len);
    }
    if (r < 0) {
        snprintf(j->msg, sizeof(j->msg), "failed to emit event: %s", ds_strerror(r));
        return r;
    }
    agent_info_invalidate(a);
    log_info("runtime event \"%s\" (%zu payload bytes) extended into RTMR3", name,
             j->req.payload.len);
    j->result = NULL; /* google.protobuf.Empty answers `null` (§2.5) */
    return 0;
}

static int check_event(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    (void)a;
    return j->req.event[0] ? 0 : ds_rpc_call_error(call, "event name is empty");
}

static int m_emit_event(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_EMIT_EVENT, w_emit_event, check_event, false);
}

static int m_sign(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct agent_req req;
    char msg[256] = "";
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_SIGN, params, &req));
    int r = agent_keys_sign(ctx, &req, out, msg, sizeof(msg));
    agent_req_done(&req);
    return r < 0 ? agent_rpc_fail(call, r, msg) : 0;
}

static int m_verify(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)ctx;
    struct agent_req req;
    char msg[256] = "";
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_VERIFY, params, &req));
    int r = agent_keys_verify(&req, out, msg, sizeof(msg));
    agent_req_done(&req);
    return r < 0 ? agent_rpc_fail(call, r, msg) : 0;
}

static int m_version(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    (void)ctx;
    *out = agent_version_json();
    return *out ? 0 : -ENOMEM;
}

static const struct ds_rpc_method dstack_methods[] = {
    {"GetTlsKey", m_get_tls_key, 0, 0},
    {"GetKey", m_get_key, 0, 0},
    {"GetQuote", m_get_quote, 0, 0},
    {"Attest", m_attest, 0, 0},
    {"Info", m_info, DS_RPC_NO_PARAMS, 0},
    {"GpuInfo", m_gpu_info, DS_RPC_NO_PARAMS, 0},
    {"EmitEvent", m_emit_event, 0, 0},
    {"Sign", m_sign, 0, 0},
    {"Verify", m_verify, 0, 0},
    {"Version", m_version, DS_RPC_NO_PARAMS, 0},
};

const struct ds_rpc_service agent_dstack_service = {
    .name = "DstackGuest",
    .methods = dstack_methods,
    .method_count = DS_ARRAY_SIZE(dstack_methods),
};
