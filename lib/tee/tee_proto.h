/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dstack-tee-sim wire protocol (private to libdstack and the tee-sim daemon): frames of a
 * u32 big-endian length followed by that many bytes of one JSON object, on the per-TD device
 * sockets and on the control socket. This module has the request parser (one function, also
 * driven by tests/fuzz/fuzz_teesim_request.c), the frame limits, and a blocking client call
 * used by the simulator TEE provider and the daemon's client subcommands. Format and
 * operations are documented in docs/tee-sim.md.
 */
#ifndef DSTACK_TEE_PROTO_H
#define DSTACK_TEE_PROTO_H

#include <jansson.h>

#include "dstack/base.h"
#include "dstack/eventlog.h"

#define DS_TEE_PROTO_HEADER_SIZE         4
#define DS_TEE_PROTO_DEVICE_MAX_REQUEST  (64 * 1024)       /* device socket request body cap */
#define DS_TEE_PROTO_CONTROL_MAX_REQUEST (4 * 1024 * 1024) /* create-td carries a boot log */
#define DS_TEE_PROTO_MAX_RESPONSE        (16 * 1024 * 1024)
#define DS_TEE_PROTO_MAX_PAYLOAD         (16 * 1024) /* extend: event payload bytes */
#define DS_TEE_PROTO_MAX_EVENT_NAME      255         /* extend: event name bytes */
#define DS_TEE_TD_NAME_MAX               63

/* Operations; a socket accepts only its own set (device or control). */
enum ds_tee_op {
    DS_TEE_OP_NONE = 0,
    DS_TEE_OP_GET_QUOTE,      /* device: "get_quote" */
    DS_TEE_OP_EXTEND_RTMR,    /* device: "extend_rtmr" */
    DS_TEE_OP_READ_REGISTERS, /* device: "read_registers" */
    DS_TEE_OP_GET_EVENT_LOG,  /* device: "get_event_log" */
    DS_TEE_OP_INFO,           /* device: "info" */
    DS_TEE_OP_CREATE_TD,      /* control: "create_td" */
    DS_TEE_OP_REMOVE_TD,      /* control: "remove_td" */
    DS_TEE_OP_LIST_TDS,       /* control: "list_tds" */
    DS_TEE_OP_MAX
};

#define DS_TEE_OPS_DEVICE                                                                          \
    ((1u << DS_TEE_OP_GET_QUOTE) | (1u << DS_TEE_OP_EXTEND_RTMR) |                                 \
     (1u << DS_TEE_OP_READ_REGISTERS) | (1u << DS_TEE_OP_GET_EVENT_LOG) | (1u << DS_TEE_OP_INFO))
#define DS_TEE_OPS_CONTROL                                                                         \
    ((1u << DS_TEE_OP_CREATE_TD) | (1u << DS_TEE_OP_REMOVE_TD) | (1u << DS_TEE_OP_LIST_TDS))

const char *ds_tee_op_name(enum ds_tee_op op);

/* A parsed, validated request. Only the fields of its op are set. */
struct ds_tee_request {
    enum ds_tee_op op;
    /* get_quote */
    uint8_t report_data[64];
    uint16_t quote_version; /* 4 or 5 */
    /* extend_rtmr */
    unsigned index; /* 2 or 3 */
    uint8_t digest[48];
    char *event;      /* malloc'd, NUL-terminated, may be "" */
    uint8_t *payload; /* malloc'd, may be empty */
    size_t payload_len;
    /* create_td / remove_td */
    char name[DS_TEE_TD_NAME_MAX + 1];
    bool has_mrtd, has_rtmr[3];
    uint8_t mrtd[48];
    uint8_t rtmr[3][48];
    struct ds_event_log *event_log; /* create_td: parsed boot event log (owned), or NULL */
};

/*
 * Parse one request body (the bytes after the length header). allowed_ops is a bit mask of
 * (1u << op); other ops are rejected. On failure err gets a short reason for the client.
 * Returns 0, -DS_E_FORMAT (not JSON, wrong field type or value), -DS_E_UNSUPPORTED (unknown or
 * disallowed op), -DS_E_LIMIT (a field too large). Release with ds_tee_request_done().
 */
DS_MUST_USE int ds_tee_request_parse(const uint8_t *body, size_t len, unsigned allowed_ops,
                                     struct ds_tee_request *out, char *err, size_t err_size);
void ds_tee_request_done(struct ds_tee_request *req);

/* true when name matches [a-zA-Z0-9._-]{1,63} and is not "." or "..". */
bool ds_tee_td_name_valid(const char *name);

/* Frame one JSON value into buf (u32 BE length + compact JSON). */
DS_MUST_USE int ds_tee_frame_json(const json_t *msg, size_t max_body, struct ds_buf *buf);

/* Short wire name of an error code ("format", "denied", ...; "internal" for others) and back
 * (unknown names give -DS_E_PROTOCOL). */
const char *ds_tee_error_name(int err);
int ds_tee_error_from_name(const char *name);

/*
 * Blocking client call: connect to the Unix socket at path, send req, read one response
 * frame (at most max_response bytes) within timeout_ms, and parse it. A response with
 * "ok": false is returned as the code its "error" names (-DS_E_PROTOCOL when unknown) with
 * its "message" in err. Returns 0 and the response object in *out (caller json_decref()s), or
 * -errno for socket errors, -DS_E_TRUNCATED when the peer closed early, -ETIMEDOUT,
 * -DS_E_FORMAT for a malformed response, -DS_E_LIMIT for an oversized one.
 */
DS_MUST_USE int ds_tee_proto_call(const char *path, const json_t *req, size_t max_response,
                                  int timeout_ms, json_t **out, char *err, size_t err_size);

/* Helpers to read a fixed-size hex field of a response object; -DS_E_FORMAT if wrong. */
DS_MUST_USE int ds_tee_json_hex_field(const json_t *obj, const char *key, void *out, size_t size);

#endif /* DSTACK_TEE_PROTO_H */
