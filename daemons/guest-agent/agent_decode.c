/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Request decoding for every agent method: one field table per request message (proto field
 * names and tags of spec guest-agent-api.md §3) handed to lib/rpc's table-driven serde decoder
 * (ds_rpc_params_decode: defaults for missing fields, unknown keys ignored, null only for
 * optional u64, hex bytes with leading "0x"s, GET query strings). The fuzz harness
 * tests/fuzz/fuzz_agent_requests.c feeds bodies through exactly these functions.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "agent.h"

#define F(type, member) DS_RPC_FIELD(DS_RPC_FIELD_##type, struct agent_req, member, 0)

static const struct ds_rpc_field f_get_key[] = {F(STRING, path), F(STRING, purpose),
                                                F(STRING, algorithm)};
static const struct ds_rpc_field f_tls_key[] = {
    F(STRING, subject),         F(STRINGS, alt_names),      F(BOOL, usage_ra_tls),
    F(BOOL, usage_server_auth), F(BOOL, usage_client_auth), F(OPT_U64, not_before),
    F(OPT_U64, not_after),      F(BOOL, with_app_info),
};
static const struct ds_rpc_field f_derive[] = {
    F(STRING, path),       F(STRING, subject),         F(STRINGS, alt_names),
    F(BOOL, usage_ra_tls), F(BOOL, usage_server_auth), F(BOOL, usage_client_auth),
    F(BOOL, random_seed),
};
static const struct ds_rpc_field f_quote[] = {F(BYTES, report_data)};
static const struct ds_rpc_field f_tdx_quote[] = {F(BYTES, report_data), F(STRING, hash_algorithm),
                                                  F(STRING, prefix)};
static const struct ds_rpc_field f_sign[] = {F(STRING, algorithm), F(BYTES, data)};
static const struct ds_rpc_field f_verify[] = {F(STRING, algorithm), F(BYTES, data),
                                               F(BYTES, signature), F(BYTES, public_key)};
static const struct ds_rpc_field f_emit[] = {F(STRING, event), F(BYTES, payload)};
static const struct ds_rpc_field f_app_key[] = {F(STRING, algorithm)};

static const struct {
    const struct ds_rpc_field *fields;
    size_t count;
} tables[AGENT_REQ_KIND_MAX] = {
    [AGENT_REQ_GET_KEY] = {f_get_key, DS_ARRAY_SIZE(f_get_key)},
    [AGENT_REQ_TLS_KEY] = {f_tls_key, DS_ARRAY_SIZE(f_tls_key)},
    [AGENT_REQ_DERIVE] = {f_derive, DS_ARRAY_SIZE(f_derive)},
    [AGENT_REQ_QUOTE] = {f_quote, DS_ARRAY_SIZE(f_quote)},
    [AGENT_REQ_TDX_QUOTE] = {f_tdx_quote, DS_ARRAY_SIZE(f_tdx_quote)},
    [AGENT_REQ_SIGN] = {f_sign, DS_ARRAY_SIZE(f_sign)},
    [AGENT_REQ_VERIFY] = {f_verify, DS_ARRAY_SIZE(f_verify)},
    [AGENT_REQ_EMIT_EVENT] = {f_emit, DS_ARRAY_SIZE(f_emit)},
    [AGENT_REQ_APP_KEY] = {f_app_key, DS_ARRAY_SIZE(f_app_key)},
};

int agent_req_decode(enum agent_req_kind kind, const json_t *params, bool from_query,
                     struct agent_req *out, char *err, size_t err_size)
{
    memset(out, 0, sizeof(*out));
    if ((unsigned)kind >= AGENT_REQ_KIND_MAX) {
        return -EINVAL;
    }
    out->kind = kind;
    char msg[AGENT_DECODE_ERR] = "";
    int r = ds_rpc_params_decode(params, from_query, tables[kind].fields, tables[kind].count, out,
                                 msg, sizeof(msg));
    if (r < 0 && err && err_size) {
        snprintf(err, err_size, "failed to decode request: %s", msg[0] ? msg : ds_strerror(r));
    }
    return r;
}

void agent_req_done(struct agent_req *r)
{
    if (!r) {
        return;
    }
    /* Sign data may be a secret the app hashes itself. */
    if (r->data.data) {
        ds_wipe(r->data.data, r->data.len);
    }
    if ((unsigned)r->kind < AGENT_REQ_KIND_MAX) {
        ds_rpc_params_free(tables[r->kind].fields, tables[r->kind].count, r);
    }
}
