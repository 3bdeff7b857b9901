/* SPDX-License-Identifier: Apache-2.0 */
/*
 * From an HTTP request to the pRPC input object (spec/guest-agent-api.md §2.2-§2.4): decide
 * JSON vs protobuf mode, take the input from the body (POST) or the query string (GET), map
 * an empty input to the default message `{}`, and require the body to be one JSON object.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "rpc/http.h"

bool rpc_is_json_content_type(const char *ct)
{
    if (!ct) {
        return false;
    }
    while (*ct == ' ' || *ct == '\t') {
        ct++;
    }
    static const char json_type[] = "application/json";
    size_t n = sizeof(json_type) - 1;
    if (strncasecmp(ct, json_type, n) != 0) {
        return false;
    }
    char c = ct[n];
    return c == 0 || c == ';' || c == ' ' || c == '\t';
}

static const char *json_type_name(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_ARRAY:
        return "sequence";
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "integer";
    case JSON_REAL:
        return "floating point";
    case JSON_TRUE:
    case JSON_FALSE:
        return "boolean";
    case JSON_NULL:
        return "null";
    default:
        return "map";
    }
}

int rpc_decode_input(const struct rpc_input *in, json_t **out, char *msg, size_t msg_size)
{
    bool json_mode = in->from_query || ds_rpc_query_json_flag(in->query, in->query_len) ||
                     rpc_is_json_content_type(in->content_type);
    if (!json_mode) {
        snprintf(msg, msg_size, "%s", RPC_PROTOBUF_UNSUPPORTED);
        return -DS_E_UNSUPPORTED;
    }
    json_t *v = NULL;
    if (in->no_params || (!in->from_query && in->body_len == 0)) {
        /* §2.3: Empty requests are never parsed; an empty input is the default message. */
        v = json_object();
        if (!v) {
            return -ENOMEM;
        }
        *out = v;
        return 0;
    }
    if (in->from_query) {
        const char *qmsg = NULL;
        int r = ds_rpc_query_decode(in->query, in->query_len, &v, &qmsg);
        if (r < 0) {
            snprintf(msg, msg_size, "failed to decode request: %s", qmsg ? qmsg : ds_strerror(r));
            return r;
        }
        *out = v;
        return 0;
    }
    json_error_t err;
    v = json_loadb((const char *)in->body, in->body_len, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES,
                   &err);
    if (!v) {
        snprintf(msg, msg_size, "failed to decode request: %s at line %d column %d", err.text,
                 err.line, err.column);
        return -DS_E_FORMAT;
    }
    if (!json_is_object(v)) {
        snprintf(msg, msg_size, "failed to decode request: invalid type: %s, expected a map",
                 json_type_name(v));
        json_decref(v);
        return -DS_E_FORMAT;
    }
    *out = v;
    return 0;
}
