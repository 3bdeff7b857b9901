/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The legacy Tappd service on tappd.sock (paths `/prpc/Tappd.<Method>` and `/prpc/<Method>`,
 * spec guest-agent-api.md §3.2): DeriveKey (deterministic P-256 key per path unless
 * random_seed), DeriveK256Key (GetKey under legacy names), TdxQuote (report data hashed as
 * H(prefix ":" data), §4.7), RawQuote, Info and Version.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/eventlog.h"

#define TDX_QUOTE_DEFAULT_HASH "sha512"
#define TDX_QUOTE_RAW          "raw"

static int m_derive_key(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_DERIVE, agent_work_tls, NULL, false);
}

static int m_derive_k256_key(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx)
{
    struct agent_req req;
    char msg[256] = "";
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_GET_KEY, params, &req));
    int r = agent_keys_get_key(ctx, &req, true, out, msg, sizeof(msg));
    agent_req_done(&req);
    return r < 0 ? agent_rpc_fail(call, r, msg) : 0;
}

/* Report data per §4.7 on the loop thread (pure hashing), then the quote as a job. */
static int check_tdx_quote(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    (void)a;
    enum ds_report_hash hash;
    if (ds_report_hash_parse(j->alg, &hash) < 0) {
        return ds_rpc_call_error(call, "invalid hash algorithm");
    }
    bool raw = hash == DS_REPORT_HASH_RAW;
    if (raw && j->req.report_data.len != DS_REPORT_DATA_SIZE) {
        return ds_rpc_call_error(call, "invalid content length");
    }
    if (raw) {
        j->tag = "";
    }
    int r = ds_report_data_build(hash, raw ? "" : j->tag, j->req.report_data.data,
                                 j->req.report_data.len, j->rd);
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to build report data: %s", ds_strerror(r));
    }
    return 0;
}

static int check_tdx_quote_defaults(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    (void)a;
    j->alg = j->req.hash_algorithm[0] ? j->req.hash_algorithm : TDX_QUOTE_DEFAULT_HASH;
    j->tag = j->req.prefix[0] ? j->req.prefix : DS_REPORT_TAG_APP_DATA;
    return check_tdx_quote(call, a, j);
}

static int check_raw_quote(struct ds_rpc_call *call, struct agent *a, struct agent_job *j)
{
    (void)a;
    j->alg = TDX_QUOTE_RAW;
    return check_tdx_quote(call, a, j);
}

static int m_tdx_quote(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_TDX_QUOTE, agent_work_quote,
                         check_tdx_quote_defaults, false);
}

static int m_raw_quote(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_QUOTE, agent_work_quote, check_raw_quote,
                         false);
}

static int m_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    return agent_rpc_job(call, params, ctx, AGENT_REQ_KIND_MAX, agent_work_info, NULL, false);
}

static int m_version(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    (void)ctx;
    *out = agent_version_json();
    return *out ? 0 : -ENOMEM;
}

static const struct ds_rpc_method tappd_methods[] = {
    {"DeriveKey", m_derive_key, 0, 0},     {"DeriveK256Key", m_derive_k256_key, 0, 0},
    {"TdxQuote", m_tdx_quote, 0, 0},       {"RawQuote", m_raw_quote, 0, 0},
    {"Info", m_info, DS_RPC_NO_PARAMS, 0}, {"Version", m_version, DS_RPC_NO_PARAMS, 0},
};

const struct ds_rpc_service agent_tappd_service = {
    .name = "Tappd",
    .methods = tappd_methods,
    .method_count = DS_ARRAY_SIZE(tappd_methods),
};
