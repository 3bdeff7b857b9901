/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the pRPC input decoders: the input is tried as a GET query string
 * (serde_qs rules, the `json` flag) and as a POST JSON body, through ds_rpc_query_decode()
 * and rpc_decode_input() exactly as the server calls them, and each decoded object through the
 * typed params decoder.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/rpc.h"
#include "rpc/http.h"

struct fuzz_req {
    char *path;
    struct ds_rpc_bytes report_data;
    bool usage_ra_tls;
    uint32_t n32;
    uint64_t n64;
    struct ds_rpc_opt_u64 not_after;
    struct ds_rpc_strings alt_names;
    struct ds_rpc_bytes_list chain;
};

static const struct ds_rpc_field fuzz_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct fuzz_req, path, 64),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct fuzz_req, report_data, 64),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct fuzz_req, usage_ra_tls, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct fuzz_req, n32, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U64, struct fuzz_req, n64, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct fuzz_req, not_after, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct fuzz_req, alt_names, 8),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES_LIST, struct fuzz_req, chain, 8),
};

static void decode_typed(const json_t *params, bool from_query)
{
    struct fuzz_req req;
    char msg[RPC_MSG_MAX];
    if (ds_rpc_params_decode(params, from_query, fuzz_fields, DS_ARRAY_SIZE(fuzz_fields), &req, msg,
                             sizeof(msg)) == 0) {
        if (!req.path || !req.report_data.data || req.report_data.len > 64 ||
            req.alt_names.count > 8) {
            abort();
        }
        ds_rpc_params_free(fuzz_fields, DS_ARRAY_SIZE(fuzz_fields), &req);
    } else if (req.path || req.alt_names.items || msg[0] == 0) {
        abort(); /* a failed decode leaves nothing behind and says why */
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *q = malloc(size + 1);
    if (!q) {
        return 0;
    }
    memcpy(q, data, size);
    q[size] = 0;

    json_t *v = NULL;
    const char *msg = NULL;
    if (ds_rpc_query_decode(q, size, &v, &msg) == 0) {
        if (!json_is_object(v)) {
            abort();
        }
        char *s = json_dumps(v, JSON_COMPACT | JSON_ENSURE_ASCII);
        free(s);
        json_decref(v);
    } else if (!msg) {
        abort(); /* every failure explains itself */
    }
    (void)ds_rpc_query_json_flag(q, size);

    char err[RPC_MSG_MAX];
    struct rpc_input in = {.from_query = true, .query = q, .query_len = size};
    v = NULL;
    if (rpc_decode_input(&in, &v, err, sizeof(err)) == 0) {
        decode_typed(v, true);
        json_decref(v);
    }
    struct rpc_input body = {
        .query = "", .content_type = "application/json", .body = data, .body_len = size};
    v = NULL;
    if (rpc_decode_input(&body, &v, err, sizeof(err)) == 0) {
        if (!json_is_object(v)) {
            abort();
        }
        decode_typed(v, false);
        json_decref(v);
    }
    free(q);
    return 0;
}
