/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Framed request/response connections for the device and control sockets. Each connection is
 * a libevent bufferevent with read and write timeouts and an input cap, so one slow or hostile
 * client never blocks the others: a frame whose length is 0 or above the socket's limit gets an
 * error response and the connection is closed; a request that does not arrive completely
 * within TEESIM_READ_TIMEOUT_SEC gets a "timeout" error and is closed. Complete frames are
 * parsed by ds_tee_request_parse() (lib/tee/tee_proto.c) and handed to the device or control
 * handler.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>

#include "log.h"
#include "teesim.h"

#define TEESIM_LISTEN_BACKLOG 64

struct teesim_conn {
    TAILQ_ENTRY(teesim_conn) entry;
    struct teesim *sim;
    struct teesim_td *td; /* NULL on the control socket */
    struct teesim_conn_list *list;
    size_t *count;
    struct bufferevent *bev;
    size_t max_request;
    unsigned allowed_ops;
    bool closing;
};

void teesim_conn_free(struct teesim_conn *c)
{
    if (!c) {
        return;
    }
    TAILQ_REMOVE(c->list, c, entry);
    (*c->count)--;
    bufferevent_free(c->bev);
    free(c);
}

void teesim_conn_free_all(struct teesim_conn_list *list)
{
    struct teesim_conn *c;
    while ((c = TAILQ_FIRST(list))) {
        teesim_conn_free(c);
    }
}

json_t *teesim_error_response(int code, const char *msg)
{
    return json_pack("{s:b,s:s,s:s}", "ok", 0, "error", ds_tee_error_name(code), "message",
                     msg ? msg : ds_strerror(code));
}

static void send_json(struct teesim_conn *c, json_t *msg)
{
    struct ds_buf frame;
    ds_buf_init(&frame, DS_TEE_PROTO_MAX_RESPONSE + DS_TEE_PROTO_HEADER_SIZE);
    int r = msg ? ds_tee_frame_json(msg, DS_TEE_PROTO_MAX_RESPONSE, &frame) : -ENOMEM;
    if (r < 0) {
        ds_buf_reset(&frame);
        json_t *e = teesim_error_response(r, "response too large");
        r = e ? ds_tee_frame_json(e, DS_TEE_PROTO_MAX_RESPONSE, &frame) : -ENOMEM;
        json_decref(e);
    }
    if (r == 0) {
        bufferevent_write(c->bev, frame.data, frame.len);
    } else {
        c->closing = true; /* cannot even say why: drop the client */
    }
    ds_buf_done(&frame);
}

/* Stop reading and free the connection once everything queued is written. */
static void close_after_write(struct teesim_conn *c)
{
    c->closing = true;
    bufferevent_disable(c->bev, EV_READ);
}

static void send_error_and_close(struct teesim_conn *c, int code, const char *msg)
{
    json_t *e = teesim_error_response(code, msg);
    send_json(c, e);
    json_decref(e);
    close_after_write(c);
}

static void handle_frame(struct teesim_conn *c, const uint8_t *body, size_t len)
{
    struct ds_tee_request req;
    char err[256] = "";
    int r = ds_tee_request_parse(body, len, c->allowed_ops, &req, err, sizeof(err));
    if (r < 0) {
        log_debug("%s: bad request: %s", c->td ? c->td->name : "control", err);
        json_t *e = teesim_error_response(r, err[0] ? err : NULL);
        send_json(c, e);
        json_decref(e);
        return;
    }
    json_t *resp = c->td ? teesim_device_handle(c->td, &req) : teesim_control_handle(c->sim, &req);
    send_json(c, resp);
    json_decref(resp);
    ds_tee_request_done(&req);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct teesim_conn *c = arg;
    if (c->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0) {
        teesim_conn_free(c);
    }
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct teesim_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    while (!c->closing) {
        size_t avail = evbuffer_get_length(in);
        uint8_t hdr[DS_TEE_PROTO_HEADER_SIZE];
        if (avail < sizeof(hdr)) {
            break;
        }
        evbuffer_copyout(in, hdr, sizeof(hdr));
        struct ds_reader rd;
        uint32_t n = 0;
        ds_rd_init(&rd, hdr, sizeof(hdr));
        if (ds_rd_u32be(&rd, &n) < 0 || n == 0 || n > c->max_request) {
            /* The stream cannot be resynchronized after a bad length: answer and hang up. */
            evbuffer_drain(in, avail);
            send_error_and_close(c, -DS_E_LIMIT, "request length out of range");
            break;
        }
        if (avail - sizeof(hdr) < n) {
            break; /* wait for the rest (bounded by the read timeout and the watermark) */
        }
        evbuffer_drain(in, sizeof(hdr));
        const uint8_t *body = evbuffer_pullup(in, n);
        if (!body) {
            send_error_and_close(c, -ENOMEM, "out of memory");
            break;
        }
        handle_frame(c, body, n);
        evbuffer_drain(in, n);
    }
    /* A client that queued responses and then closed is freed from the write callback. */
    conn_write_cb(bev, c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct teesim_conn *c = arg;
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && !c->closing &&
        evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
        /* A partial request that stalled: say so, then close. */
        send_error_and_close(c, -ETIMEDOUT, "request not completed in time");
        conn_write_cb(bev, c);
        return;
    }
    if ((what & BEV_EVENT_EOF) && evbuffer_get_length(bufferevent_get_output(bev)) > 0) {
        /* The client half-closed after its last request: deliver the answers first. */
        close_after_write(c);
        return;
    }
    /* Error, idle read timeout, write timeout, or EOF with nothing pending: drop it. */
    teesim_conn_free(c);
}

static void accept_conn(struct teesim *sim, struct teesim_td *td, evutil_socket_t fd)
{
    struct teesim_conn *c = calloc(1, sizeof(*c));
    struct bufferevent *bev =
        bufferevent_socket_new(sim->base, fd, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
    if (!c || !bev) {
        free(c);
        if (bev) {
            bufferevent_free(bev);
        } else {
            evutil_closesocket(fd);
        }
        log_warnx("out of memory accepting a connection");
        return;
    }
    c->sim = sim;
    c->td = td;
    c->bev = bev;
    if (td) {
        c->list = &td->conns;
        c->count = &td->conn_count;
        c->max_request = DS_TEE_PROTO_DEVICE_MAX_REQUEST;
        c->allowed_ops = DS_TEE_OPS_DEVICE;
    } else {
        c->list = &sim->control_conns;
        c->count = &sim->control_conn_count;
        c->max_request = DS_TEE_PROTO_CONTROL_MAX_REQUEST;
        c->allowed_ops = DS_TEE_OPS_CONTROL;
    }
    TAILQ_INSERT_TAIL(c->list, c, entry);
    (*c->count)++;
    struct timeval rtv = {.tv_sec = TEESIM_READ_TIMEOUT_SEC};
    struct timeval wtv = {.tv_sec = TEESIM_WRITE_TIMEOUT_SEC};
    bufferevent_set_timeouts(bev, &rtv, &wtv);
    /* Never buffer more than one maximal frame; the header check rejects larger ones. */
    bufferevent_setwatermark(bev, EV_READ, 0, c->max_request + DS_TEE_PROTO_HEADER_SIZE);
    bufferevent_setcb(bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    size_t limit = td ? TEESIM_MAX_CONNS_PER_TD : TEESIM_MAX_CONTROL_CONNS;
    if (*c->count > limit) {
        send_error_and_close(c, -EBUSY, "too many connections");
        bufferevent_enable(bev, EV_WRITE);
        return;
    }
    bufferevent_enable(bev, EV_READ | EV_WRITE);
}

static void accept_device_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                             int len, void *arg)
{
    struct teesim_td *td = arg;
    accept_conn(td->sim, td, fd);
}

static void accept_control_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                              int len, void *arg)
{
    accept_conn(arg, NULL, fd);
}

int teesim_listen(struct teesim *sim, struct teesim_td *td, const char *path,
                  struct evconnlistener **out)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return -EEXIST; /* never remove something that is not our socket */
        }
        if (unlink(path) < 0) {
            return -errno;
        }
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    /* The daemon runs with umask 077, so the socket is created 0600; chmod states it. */
    int r = 0;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0600) < 0 ||
        listen(fd, TEESIM_LISTEN_BACKLOG) < 0) {
        r = -errno;
        close(fd);
        return r;
    }
    struct evconnlistener *l =
        td ? evconnlistener_new(sim->base, accept_device_cb, td,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd)
           : evconnlistener_new(sim->base, accept_control_cb, sim,
                                LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
    if (!l) {
        close(fd);
        unlink(path);
        return -ENOMEM;
    }
    *out = l;
    return 0;
}
