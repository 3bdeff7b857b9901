/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the pRPC input decoders: the input is tried as a GET query string
 * (serde_qs rules, the `json` flag) and as a POST JSON body, through ds_rpc_query_decode()
 * and rpc_decode_input() exactly as the server calls them.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/rpc.h"
#include "rpc/http.h"

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
        json_decref(v);
    }
    struct rpc_input body = {
        .query = "", .content_type = "application/json", .body = data, .body_len = size};
    v = NULL;
    if (rpc_decode_input(&body, &v, err, sizeof(err)) == 0) {
        if (!json_is_object(v)) {
            abort();
        }
        json_decref(v);
    }
    free(q);
    return 0;
}
