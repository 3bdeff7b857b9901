/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for dstack-guest-agent's request decoders: the first input byte picks the
 * request message (GetKey, GetTlsKey, DeriveKey, GetQuote, TdxQuote, Sign, Verify, EmitEvent,
 * GetAttestationForAppKey), the rest is tried as a POST JSON body and as a GET query string,
 * decoded by lib/rpc exactly as the server does (rpc_decode_input), then by the agent's own
 * agent_req_decode() (compiled in from daemons/guest-agent/agent_decode.c). Invariants: a
 * successful decode leaves every string and bytes field non-NULL and lists consistent; a
 * failed one explains itself and leaves nothing allocated; agent_req_done() releases all.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemons/guest-agent/agent_decode.c"
#include "rpc/http.h"

#define MSG_MAX RPC_MSG_MAX

static void check_decoded(const struct agent_req *r)
{
    const struct ds_rpc_field *f = tables[r->kind].fields;
    for (size_t i = 0; i < tables[r->kind].count; i++) {
        const void *p = (const uint8_t *)r + f[i].offset;
        if (f[i].type == DS_RPC_FIELD_STRING && !*(char *const *)p) {
            abort();
        }
        if (f[i].type == DS_RPC_FIELD_BYTES && !((const struct ds_rpc_bytes *)p)->data) {
            abort();
        }
        if (f[i].type == DS_RPC_FIELD_STRINGS) {
            const struct ds_rpc_strings *l = p;
            if (l->count > 0 && !l->items) {
                abort();
            }
            for (size_t k = 0; k < l->count; k++) {
                if (!l->items[k]) {
                    abort();
                }
            }
        }
    }
}

static void decode(enum agent_req_kind kind, const json_t *params, bool from_query)
{
    struct agent_req req;
    char err[MSG_MAX] = "";
    int r = agent_req_decode(kind, params, from_query, &req, err, sizeof(err));
    if (r == 0) {
        check_decoded(&req);
    } else if (!err[0] || req.path || req.subject || req.alt_names.items || req.data.data) {
        abort(); /* a failed decode says why and leaves nothing behind */
    }
    agent_req_done(&req);
    static const struct agent_req zero = {0};
    struct agent_req tmp = req;
    tmp.kind = 0;
    if (memcmp(&tmp, &zero, sizeof(tmp)) != 0) {
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    enum agent_req_kind kind = (enum agent_req_kind)(data[0] % AGENT_REQ_KIND_MAX);
    data++;
    size--;
    char *q = malloc(size + 1);
    if (!q) {
        return 0;
    }
    memcpy(q, data, size);
    q[size] = 0;
    char msg[MSG_MAX];
    json_t *v = NULL;
    struct rpc_input body = {
        .query = "", .content_type = "application/json", .body = data, .body_len = size};
    if (rpc_decode_input(&body, &v, msg, sizeof(msg)) == 0) {
        decode(kind, v, false);
        json_decref(v);
    }
    v = NULL;
    struct rpc_input query = {.from_query = true, .query = q, .query_len = size};
    if (rpc_decode_input(&query, &v, msg, sizeof(msg)) == 0) {
        decode(kind, v, true);
        json_decref(v);
    }
    free(q);
    return 0;
}
