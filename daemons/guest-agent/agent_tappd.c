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
    struct agent *a = ctx;
    struct agent_req req;
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_DERIVE, params, &req));
    uint8_t scalar[32];
    char msg[256] = "", *pem = NULL;
    json_t *chain = NULL;
    struct agent_cert_opts o = {
        .subject = req.subject,
        .alt_names = (const char *const *)req.alt_names.items,
        .alt_name_count = req.alt_names.count,
        .ra_tls = req.usage_ra_tls,
        .server_auth = req.usage_server_auth,
        .client_auth = req.usage_client_auth,
    };
    int r = agent_keys_tls_scalar(a, req.random_seed ? NULL : (req.path ? req.path : ""), scalar);
    if (r == 0) {
        r = agent_keys_key_pem(scalar, &pem);
    }
    if (r == 0) {
        r = agent_tls_issue(a, scalar, &o, &chain, msg, sizeof(msg));
    }
    if (r < 0) {
        r = agent_rpc_fail(call, r, msg[0] ? msg : "failed to derive key");
        goto out;
    }
    *out = json_pack("{s:s,s:o}", "key", pem, "certificate_chain", chain);
    chain = NULL;
    r = *out ? 0 : -ENOMEM;
out:
    ds_wipe(scalar, sizeof(scalar));
    agent_keys_free_pem(pem);
    json_decref(chain);
    agent_req_done(&req);
    return r;
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

static int tdx_quote(struct ds_rpc_call *call, struct agent *a, const struct agent_req *req,
                     const char *alg, const char *tag, json_t **out)
{
    enum ds_report_hash hash;
    uint8_t rd[DS_REPORT_DATA_SIZE];
    char msg[256] = "";
    bool raw = strcmp(alg, TDX_QUOTE_RAW) == 0;
    if (ds_report_hash_parse(alg, &hash) < 0) {
        return ds_rpc_call_error(call, "invalid hash algorithm");
    }
    if (raw && req->report_data.len != DS_REPORT_DATA_SIZE) {
        return ds_rpc_call_error(call, "invalid content length");
    }
    int r = ds_report_data_build(
        hash, tag, req->report_data.data ? req->report_data.data : (const uint8_t *)"",
        req->report_data.len, rd);
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to build report data: %s", ds_strerror(r));
    }
    json_t *res = NULL;
    r = agent_quote_response(a, rd, false, &res, msg, sizeof(msg));
    if (r < 0) {
        return agent_rpc_fail(call, r, msg);
    }
    /* Echo the algorithm and the tag without its colon; raw has no prefix (§4.7). */
    json_object_set_new(res, "hash_algorithm", json_string(alg));
    json_object_set_new(res, "prefix", json_string(raw ? "" : tag));
    if (json_object_size(res) != 4) {
        json_decref(res);
        return -ENOMEM;
    }
    *out = res;
    return 0;
}

static int m_tdx_quote(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct agent_req req;
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_TDX_QUOTE, params, &req));
    const char *alg =
        req.hash_algorithm && *req.hash_algorithm ? req.hash_algorithm : TDX_QUOTE_DEFAULT_HASH;
    const char *tag = req.prefix && *req.prefix ? req.prefix : DS_REPORT_TAG_APP_DATA;
    int r = tdx_quote(call, ctx, &req, alg, tag, out);
    agent_req_done(&req);
    return r;
}

static int m_raw_quote(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct agent_req req;
    DS_TRY(agent_rpc_decode(call, AGENT_REQ_QUOTE, params, &req));
    int r = tdx_quote(call, ctx, &req, TDX_QUOTE_RAW, "", out);
    agent_req_done(&req);
    return r;
}

static int m_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)params;
    char msg[256] = "";
    int r = agent_info(ctx, false, out, msg, sizeof(msg));
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
