/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the pRPC HTTP/1.1 request path: the input is the byte stream a client
 * sends on one connection (then it half-closes). It runs through the real server state
 * machine over a socketpair (head parser, Content-Length and chunked bodies, pipelining,
 * routing, JSON / query input decoding, dispatch, responses, close-after-EOF), and through
 * the pure head and chunked parsers directly. Any crash, leak or hang is a bug.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "dstack/rpc.h"
#include "rpc/http.h"

#define FUZZ_DEADLINE_MS 5000

static int f_echo(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    *out = json_pack("{s:s,s:O}", "method", ds_rpc_call_method(call), "params", params);
    return 0;
}

static int f_fail(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    const char *a = json_string_value(json_object_get(params, "a"));
    return ds_rpc_call_error(call, "failed: %s", a ? a : "no reason");
}

static int f_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    *out = json_object();
    return 0;
}

static int f_raw(struct ds_rpc_call *call, void *ctx)
{
    size_t n;
    const uint8_t *body = ds_rpc_call_body(call, &n);
    ds_rpc_call_reply_raw(call, 200, "text/plain", body, n);
    return 0;
}

static const struct ds_rpc_method f_methods[] = {
    {"Echo", f_echo, 0, 0},
    {"Fail", f_fail, 0, 0},
    {"Info", f_info, DS_RPC_NO_PARAMS, 0},
    {"Small", f_echo, 0, 16},
};
static const struct ds_rpc_service f_service = {"Fuzz", f_methods, DS_ARRAY_SIZE(f_methods)};
static const struct ds_rpc_mount f_mounts[] = {
    {"/prpc/", {"Fuzz."}, &f_service},
    {"/", {NULL}, &f_service},
};
static const struct ds_rpc_route f_routes[] = {
    {"/raw", DS_RPC_HTTP_GET | DS_RPC_HTTP_POST, f_raw},
    {"/logs/", DS_RPC_HTTP_GET, f_raw},
};
static const char *const f_headers[] = {"X-App-Version: fuzz", NULL};
static const struct ds_rpc_site f_site = {
    f_mounts, DS_ARRAY_SIZE(f_mounts), f_routes, DS_ARRAY_SIZE(f_routes), f_headers, NULL, NULL};

struct client {
    struct event_base *base;
    int fd;
    const uint8_t *data;
    size_t size;
    size_t sent;
    bool shut;
};

static void client_cb(evutil_socket_t fd, short what, void *arg)
{
    struct client *c = arg;
    if (what & EV_TIMEOUT) {
        event_base_loopbreak(c->base);
        return;
    }
    if ((what & EV_WRITE) && !c->shut) {
        if (c->sent < c->size) {
            ssize_t w = send(fd, c->data + c->sent, c->size - c->sent, MSG_NOSIGNAL);
            if (w > 0) {
                c->sent += (size_t)w;
            } else if (w < 0 && errno != EAGAIN) {
                c->sent = c->size;
            }
        }
        if (c->sent == c->size) {
            shutdown(fd, SHUT_WR);
            c->shut = true;
        }
    }
    if (what & EV_READ) {
        char buf[65536];
        ssize_t r = recv(fd, buf, sizeof(buf), 0);
        if (r == 0 || (r < 0 && errno != EAGAIN)) {
            event_base_loopbreak(c->base); /* the server closed: done */
        }
    }
}

static void parse_directly(const uint8_t *data, size_t size)
{
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    size_t end = rpc_head_find_end((const char *)data, size, 0);
    if (end > 0) {
        struct rpc_head h;
        int status;
        const char *msg;
        if (rpc_head_parse((const char *)data, end, &lim, &h, &status, &msg) == 0) {
            rpc_head_done(&h);
        }
    }
    struct rpc_chunked ch = {0};
    struct ds_buf out;
    bool done;
    ds_buf_init(&out, 4096);
    size_t off = 0;
    while (off < size) {
        int r = rpc_chunked_feed(&ch, data + off, size - off, 1024, &out, &done);
        if (r <= 0 || done) {
            break;
        }
        off += (size_t)r;
    }
    ds_buf_done(&out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct event_base *base;
    if (!base) {
        signal(SIGPIPE, SIG_IGN);
        base = event_base_new();
        if (!base) {
            abort();
        }
    }
    parse_directly(data, size);

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sv) < 0) {
        abort();
    }
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    lim.header_timeout_ms = lim.body_timeout_ms = lim.idle_timeout_ms = 1000;
    lim.body_size_max = 4096;
    struct ds_rpc_server *srv;
    if (ds_rpc_server_new(base, &lim, &srv) < 0 || rpc_server_adopt_fd(srv, sv[1], &f_site) < 0) {
        abort();
    }
    struct client c = {.base = base, .fd = sv[0], .data = data, .size = size};
    struct event *ev = event_new(base, sv[0], EV_READ | EV_WRITE | EV_PERSIST, client_cb, &c);
    struct timeval deadline = {FUZZ_DEADLINE_MS / 1000, 0};
    event_add(ev, &deadline);
    event_base_dispatch(base);
    event_free(ev);
    ds_rpc_server_free(srv);
    close(sv[0]);
    return 0;
}
