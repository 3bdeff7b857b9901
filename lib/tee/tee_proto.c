/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dstack-tee-sim wire protocol: request parsing and validation (the one function that
 * sees untrusted request bytes, shared by the daemon and the fuzz harness), framing, and a
 * blocking client call over a Unix socket. See tee_proto.h and docs/tee-sim.md.
 */
#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dstack/crypto.h"
#include "tee/tee_proto.h"

static const char *const op_names[DS_TEE_OP_MAX] = {
    [DS_TEE_OP_GET_QUOTE] = "get_quote",
    [DS_TEE_OP_EXTEND_RTMR] = "extend_rtmr",
    [DS_TEE_OP_READ_REGISTERS] = "read_registers",
    [DS_TEE_OP_GET_EVENT_LOG] = "get_event_log",
    [DS_TEE_OP_INFO] = "info",
    [DS_TEE_OP_CREATE_TD] = "create_td",
    [DS_TEE_OP_REMOVE_TD] = "remove_td",
    [DS_TEE_OP_LIST_TDS] = "list_tds",
};

const char *ds_tee_op_name(enum ds_tee_op op)
{
    if (op <= DS_TEE_OP_NONE || op >= DS_TEE_OP_MAX) {
        return "none";
    }
    return op_names[op];
}

/* Error names on the wire ("error" of a failed response) and the codes they stand for. */
static const struct {
    int code;
    const char *name;
} error_names[] = {
    {-DS_E_FORMAT, "format"},
    {-DS_E_UNSUPPORTED, "unsupported"},
    {-DS_E_LIMIT, "limit"},
    {-DS_E_DENIED, "denied"},
    {-DS_E_NOT_FOUND, "not_found"},
    {-DS_E_STATE, "state"},
    {-DS_E_MISMATCH, "mismatch"},
    {-DS_E_TRUNCATED, "truncated"},
    {-ETIMEDOUT, "timeout"},
    {-EBUSY, "busy"},
    {-EEXIST, "exists"},
};

const char *ds_tee_error_name(int err)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(error_names); i++) {
        if (error_names[i].code == err) {
            return error_names[i].name;
        }
    }
    return "internal";
}

int ds_tee_error_from_name(const char *name)
{
    for (size_t i = 0; name && i < DS_ARRAY_SIZE(error_names); i++) {
        if (strcmp(error_names[i].name, name) == 0) {
            return error_names[i].code;
        }
    }
    return -DS_E_PROTOCOL;
}

static int fail(char *err, size_t err_size, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(char *err, size_t err_size, int code, const char *fmt, ...)
{
    if (err && err_size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_size, fmt, ap);
        va_end(ap);
    }
    return code;
}

bool ds_tee_td_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > DS_TEE_TD_NAME_MAX) {
        return false;
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok) {
            return false;
        }
    }
    return true;
}

int ds_tee_json_hex_field(const json_t *obj, const char *key, void *out, size_t size)
{
    const json_t *v = json_object_get(obj, key);
    if (!json_is_string(v)) {
        return -DS_E_FORMAT;
    }
    int r = ds_hex_decode(json_string_value(v), json_string_length(v), out, size);
    return r < 0 ? r : 0;
}

/* Optional fixed-size hex field: 0 absent, 1 present and decoded, negative malformed. */
static int opt_hex(const json_t *obj, const char *key, void *out, size_t size, char *err,
                   size_t err_size)
{
    const json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (ds_tee_json_hex_field(obj, key, out, size) < 0) {
        return fail(err, err_size, -DS_E_FORMAT, "field \"%s\" must be hex of the right length",
                    key);
    }
    return 1;
}

static int req_hex(const json_t *obj, const char *key, void *out, size_t size, char *err,
                   size_t err_size)
{
    int r = opt_hex(obj, key, out, size, err, err_size);
    if (r == 0) {
        return fail(err, err_size, -DS_E_FORMAT, "missing field \"%s\"", key);
    }
    return r < 0 ? r : 0;
}

/* Integer field within [lo, hi]; absent gives def (or an error when def < 0). */
static int int_field(const json_t *obj, const char *key, json_int_t lo, json_int_t hi,
                     json_int_t def, json_int_t *out, char *err, size_t err_size)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        if (def < 0) {
            return fail(err, err_size, -DS_E_FORMAT, "missing field \"%s\"", key);
        }
        *out = def;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        return fail(err, err_size, -DS_E_FORMAT, "field \"%s\" out of range", key);
    }
    *out = json_integer_value(v);
    return 0;
}

static int parse_op(const json_t *root, enum ds_tee_op *out, char *err, size_t err_size)
{
    const json_t *op = json_object_get(root, "op");
    if (!json_is_string(op)) {
        return fail(err, err_size, -DS_E_FORMAT, "missing string field \"op\"");
    }
    for (int i = DS_TEE_OP_NONE + 1; i < DS_TEE_OP_MAX; i++) {
        if (strcmp(json_string_value(op), op_names[i]) == 0) {
            *out = (enum ds_tee_op)i;
            return 0;
        }
    }
    return fail(err, err_size, -DS_E_UNSUPPORTED, "unknown op");
}

static int parse_extend(const json_t *root, struct ds_tee_request *req, char *err, size_t err_size)
{
    json_int_t v;
    DS_TRY(int_field(root, "index", 0, 3, -1, &v, err, err_size));
    if (v != 2 && v != 3) {
        /* TDX lets the guest extend RTMR2 and RTMR3 only (spec §4.3). */
        return fail(err, err_size, -DS_E_DENIED, "only RTMR2 and RTMR3 can be extended");
    }
    req->index = (unsigned)v;
    DS_TRY(req_hex(root, "digest", req->digest, sizeof(req->digest), err, err_size));
    const json_t *name = json_object_get(root, "event");
    const char *s = "";
    if (name) {
        if (!json_is_string(name)) {
            return fail(err, err_size, -DS_E_FORMAT, "field \"event\" must be a string");
        }
        if (json_string_length(name) > DS_TEE_PROTO_MAX_EVENT_NAME) {
            return fail(err, err_size, -DS_E_LIMIT, "event name too long");
        }
        s = json_string_value(name);
        if (strlen(s) != json_string_length(name)) {
            return fail(err, err_size, -DS_E_FORMAT, "event name contains NUL");
        }
    }
    req->event = strdup(s);
    if (!req->event) {
        return -ENOMEM;
    }
    const json_t *pl = json_object_get(root, "payload");
    const char *hex = "";
    size_t hex_len = 0;
    if (pl) {
        if (!json_is_string(pl)) {
            return fail(err, err_size, -DS_E_FORMAT, "field \"payload\" must be hex");
        }
        hex = json_string_value(pl);
        hex_len = json_string_length(pl);
    }
    int r = ds_hex_decode_alloc(hex, hex_len, DS_TEE_PROTO_MAX_PAYLOAD, &req->payload,
                                &req->payload_len);
    if (r == -DS_E_LIMIT) {
        return fail(err, err_size, r, "payload too large");
    }
    if (r < 0) {
        return fail(err, err_size, -DS_E_FORMAT, "field \"payload\" must be hex");
    }
    return 0;
}

static int parse_name(const json_t *root, struct ds_tee_request *req, char *err, size_t err_size)
{
    const json_t *name = json_object_get(root, "name");
    if (!json_is_string(name)) {
        return fail(err, err_size, -DS_E_FORMAT, "missing string field \"name\"");
    }
    const char *s = json_string_value(name);
    if (strlen(s) != json_string_length(name) || !ds_tee_td_name_valid(s)) {
        return fail(err, err_size, -DS_E_FORMAT, "TD name must match [a-zA-Z0-9._-]{1,63}");
    }
    memcpy(req->name, s, strlen(s) + 1);
    return 0;
}

static int parse_create(const json_t *root, struct ds_tee_request *req, char *err, size_t err_size)
{
    static const char *const rtmr_keys[3] = {"rtmr0", "rtmr1", "rtmr2"};
    DS_TRY(parse_name(root, req, err, err_size));
    int r = opt_hex(root, "mrtd", req->mrtd, sizeof(req->mrtd), err, err_size);
    DS_TRY(r);
    req->has_mrtd = r == 1;
    for (int i = 0; i < 3; i++) {
        r = opt_hex(root, rtmr_keys[i], req->rtmr[i], sizeof(req->rtmr[i]), err, err_size);
        DS_TRY(r);
        req->has_rtmr[i] = r == 1;
    }
    /* The boot log is a JSON array in the dstack event form (spec attestation.md §4.2); the
     * event-log library is its one parser. */
    json_t *log = json_object_get(root, "event_log");
    if (!log || json_is_null(log)) {
        return 0;
    }
    if (!json_is_array(log)) {
        return fail(err, err_size, -DS_E_FORMAT, "field \"event_log\" must be an array");
    }
    char *text = json_dumps(log, JSON_COMPACT);
    if (!text) {
        return -ENOMEM;
    }
    r = ds_eventlog_parse_json(text, strlen(text), &req->event_log);
    free(text);
    if (r < 0) {
        return fail(err, err_size, r, "field \"event_log\": %s", ds_strerror(r));
    }
    return 0;
}

int ds_tee_request_parse(const uint8_t *body, size_t len, unsigned allowed_ops,
                         struct ds_tee_request *out, char *err, size_t err_size)
{
    struct ds_tee_request req;
    memset(&req, 0, sizeof(req));
    json_error_t jerr;
    json_t *root = json_loadb((const char *)body, len, JSON_REJECT_DUPLICATES, &jerr);
    int r = 0;
    if (!root || !json_is_object(root)) {
        r = fail(err, err_size, -DS_E_FORMAT, "request is not a JSON object");
        goto out;
    }
    r = parse_op(root, &req.op, err, err_size);
    if (r < 0) {
        goto out;
    }
    if (!(allowed_ops & (1u << req.op))) {
        r = fail(err, err_size, -DS_E_UNSUPPORTED, "op \"%s\" not available on this socket",
                 ds_tee_op_name(req.op));
        goto out;
    }
    json_int_t v;
    switch (req.op) {
    case DS_TEE_OP_GET_QUOTE:
        r = req_hex(root, "report_data", req.report_data, sizeof(req.report_data), err, err_size);
        if (r == 0) {
            r = int_field(root, "version", 4, 5, 4, &v, err, err_size);
            req.quote_version = (uint16_t)v;
        }
        break;
    case DS_TEE_OP_EXTEND_RTMR:
        r = parse_extend(root, &req, err, err_size);
        break;
    case DS_TEE_OP_CREATE_TD:
        r = parse_create(root, &req, err, err_size);
        break;
    case DS_TEE_OP_REMOVE_TD:
        r = parse_name(root, &req, err, err_size);
        break;
    default:
        break;
    }
out:
    json_decref(root);
    if (r < 0) {
        ds_tee_request_done(&req);
        return r;
    }
    *out = req;
    return 0;
}

void ds_tee_request_done(struct ds_tee_request *req)
{
    if (!req) {
        return;
    }
    free(req->event);
    free(req->payload);
    ds_eventlog_free(req->event_log);
    memset(req, 0, sizeof(*req));
}

int ds_tee_frame_json(const json_t *msg, size_t max_body, struct ds_buf *buf)
{
    char *s = json_dumps(msg, JSON_COMPACT);
    if (!s) {
        return -ENOMEM;
    }
    size_t n = strlen(s);
    int r = 0;
    if (n > max_body || n > UINT32_MAX) {
        r = -DS_E_LIMIT;
        goto out;
    }
    r = ds_buf_u32be(buf, (uint32_t)n);
    if (r == 0) {
        r = ds_buf_append(buf, s, n);
    }
out:
    free(s);
    return r;
}

/* ---- blocking client ------------------------------------------------------------------------ */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            return -ETIMEDOUT;
        }
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0) {
            return -errno;
        }
        if (n > 0) {
            return 0;
        }
    }
}

static int send_all(int fd, const uint8_t *p, size_t n, int64_t deadline)
{
    while (n) {
        DS_TRY(wait_fd(fd, POLLOUT, deadline));
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int recv_all(int fd, uint8_t *p, size_t n, int64_t deadline)
{
    while (n) {
        DS_TRY(wait_fd(fd, POLLIN, deadline));
        ssize_t got = recv(fd, p, n, 0);
        if (got < 0) {
            if (errno == EINTR || errno == EAGAIN) {
                continue;
            }
            return -errno;
        }
        if (got == 0) {
            return -DS_E_TRUNCATED;
        }
        p += got;
        n -= (size_t)got;
    }
    return 0;
}

static int connect_unix(const char *path, int *out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    *out = fd;
    return 0;
}

int ds_tee_proto_call(const char *path, const json_t *req, size_t max_response, int timeout_ms,
                      json_t **out, char *err, size_t err_size)
{
    struct ds_buf frame;
    ds_buf_init(&frame, DS_TEE_PROTO_CONTROL_MAX_REQUEST + DS_TEE_PROTO_HEADER_SIZE);
    uint8_t *body = NULL;
    json_t *resp = NULL;
    int fd = -1;
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 30000);
    int r = ds_tee_frame_json(req, DS_TEE_PROTO_CONTROL_MAX_REQUEST, &frame);
    if (r < 0) {
        fail(err, err_size, r, "request too large");
        goto out;
    }
    r = connect_unix(path, &fd);
    if (r < 0) {
        fail(err, err_size, r, "cannot connect to %s", path);
        goto out;
    }
    r = send_all(fd, frame.data, frame.len, deadline);
    if (r < 0) {
        fail(err, err_size, r, "sending request: %s", ds_strerror(r));
        goto out;
    }
    uint8_t hdr[DS_TEE_PROTO_HEADER_SIZE];
    r = recv_all(fd, hdr, sizeof(hdr), deadline);
    if (r < 0) {
        fail(err, err_size, r, "reading response: %s", ds_strerror(r));
        goto out;
    }
    struct ds_reader rd;
    uint32_t n;
    ds_rd_init(&rd, hdr, sizeof(hdr));
    r = ds_rd_u32be(&rd, &n);
    if (r < 0) {
        goto out;
    }
    if (n == 0 || n > max_response) {
        r = fail(err, err_size, -DS_E_LIMIT, "response length out of range");
        goto out;
    }
    body = malloc(n);
    if (!body) {
        r = -ENOMEM;
        goto out;
    }
    r = recv_all(fd, body, n, deadline);
    if (r < 0) {
        fail(err, err_size, r, "reading response: %s", ds_strerror(r));
        goto out;
    }
    json_error_t jerr;
    resp = json_loadb((const char *)body, n, JSON_REJECT_DUPLICATES, &jerr);
    if (!json_is_object(resp) || !json_is_boolean(json_object_get(resp, "ok"))) {
        r = fail(err, err_size, -DS_E_FORMAT, "malformed response");
        goto out;
    }
    if (!json_is_true(json_object_get(resp, "ok"))) {
        const char *msg = json_string_value(json_object_get(resp, "message"));
        r = fail(err, err_size,
                 ds_tee_error_from_name(json_string_value(json_object_get(resp, "error"))), "%s",
                 msg ? msg : "request failed");
        goto out;
    }
    *out = resp;
    resp = NULL;
out:
    if (fd >= 0) {
        close(fd);
    }
    json_decref(resp);
    free(body);
    ds_buf_done(&frame);
    return r;
}
