/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The pRPC server: listeners (TCP, TLS, Unix, inherited fds), one state machine per
 * connection on a bufferevent, routing to method tables and raw routes, calls (synchronous and
 * deferred) and the response writer. See include/dstack/rpc.h for the wire rules.
 *
 * Connection states: IDLE (between requests; idle timeout) -> HEAD (first byte seen; header
 * timeout) -> BODY (body timeout) -> BUSY (handler running or deferred; no read timeout) ->
 * IDLE again, or CLOSING (flush the output) -> LINGER (plain sockets: SHUT_WR, then drain the
 * input briefly so the peer sees our response instead of a reset) -> DEAD (freed at the end
 * of the current libevent callback). Every libevent callback ends in conn_tail(), the only
 * place a connection is freed, so no code path touches a freed connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <linux/vm_sockets.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "rpc/http.h"

#define RPC_LINGER_MS         2000      /* how long a closing connection drains its input */
#define RPC_LINGER_DRAIN_MAX  (1 << 20) /* and how much it drains at most */
#define RPC_READ_WINDOW       (64 * 1024)
#define RPC_OUTPUT_HIGH       (1024 * 1024) /* stop taking requests while this much is unsent */
#define RPC_LISTEN_BACKLOG    128
#define RPC_ACCEPT_BACKOFF_MS 500 /* pause accepting after EMFILE and the like */

enum conn_state {
    CONN_IDLE,
    CONN_HEAD,
    CONN_BODY,
    CONN_BUSY,
    CONN_CLOSING,
    CONN_LINGER,
    CONN_DEAD
};

enum route_kind { ROUTE_NONE, ROUTE_BAD_METHOD, ROUTE_RAW, ROUTE_RPC, ROUTE_RPC_UNKNOWN };

struct rpc_listener {
    struct rpc_listener *next;
    struct ds_rpc_server *srv;
    struct evconnlistener *evl;
    const struct ds_rpc_site *site;
    SSL_CTX *tls;
    enum ds_rpc_transport transport;
    char *unix_path;       /* removed on free */
    struct event *backoff; /* re-enables accepting after an accept() error (EMFILE) */
};

struct ds_rpc_server {
    struct event_base *base;
    struct ds_rpc_limits lim;
    struct rpc_listener *listeners;
    struct rpc_conn *conns;
    size_t conn_count;
};

struct rpc_conn {
    struct rpc_conn *prev, *next;
    struct ds_rpc_server *srv;
    struct rpc_listener *lst;
    struct bufferevent *bev;
    evutil_socket_t fd;
    SSL *ssl; /* owned by bev */
    struct event *timer;
    struct event *resume;
    enum conn_state state;
    size_t scan_off;
    struct rpc_head head;
    enum route_kind kind;
    const struct ds_rpc_route *route;
    const struct ds_rpc_method *method;
    char *method_name;
    struct ds_buf body;
    struct rpc_chunked chunked;
    struct ds_rpc_call *call; /* the call in progress (BUSY) */
    bool peer_eof;
    bool keep_alive;
    bool read_paused;
    bool wait_drain; /* output above RPC_OUTPUT_HIGH: resume from the write callback */
    int http_minor;
    size_t lingered;
    struct ds_rpc_peer peer;
};

struct ds_rpc_call {
    struct rpc_conn *conn; /* NULL once orphaned */
    const struct ds_rpc_site *site;
    struct rpc_head head;
    uint8_t *body;
    size_t body_len;
    json_t *params;
    char *method_name;
    enum route_kind kind;
    struct ds_rpc_peer peer;
    X509 *peer_cert;
    STACK_OF(X509) * peer_chain;
    bool from_query;
    bool json_mode;
    bool head_only;
    bool in_handler;
    bool replied;
    char *error_msg;
    char *hdr_name[DS_RPC_RESPONSE_HEADERS_MAX];
    char *hdr_value[DS_RPC_RESPONSE_HEADERS_MAX];
    size_t hdr_count;
};

static void conn_process(struct rpc_conn *c);

void ds_rpc_limits_default(struct ds_rpc_limits *l)
{
    l->request_line_max = DS_RPC_REQUEST_LINE_MAX;
    l->header_size_max = DS_RPC_HEADER_SIZE_MAX;
    l->header_count_max = DS_RPC_HEADER_COUNT_MAX;
    l->body_size_max = DS_RPC_BODY_SIZE_MAX;
    l->header_timeout_ms = DS_RPC_HEADER_TIMEOUT_MS;
    l->body_timeout_ms = DS_RPC_BODY_TIMEOUT_MS;
    l->idle_timeout_ms = DS_RPC_IDLE_TIMEOUT_MS;
    l->write_timeout_ms = DS_RPC_WRITE_TIMEOUT_MS;
    l->connections_max = DS_RPC_CONNECTIONS_MAX;
}

/* ---- connection plumbing ---------------------------------------------------------------- */

static void conn_arm(struct rpc_conn *c, unsigned ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(c->timer, &tv);
}

static void conn_disarm(struct rpc_conn *c)
{
    evtimer_del(c->timer);
}

static void conn_set_dead(struct rpc_conn *c)
{
    c->state = CONN_DEAD;
    event_active(c->resume, 0, 0);
}

static void call_free(struct ds_rpc_call *call);

static void conn_free(struct rpc_conn *c)
{
    struct ds_rpc_server *s = c->srv;
    if (c->call) {
        /* A deferred call outlives its connection; its reply will be discarded. */
        c->call->conn = NULL;
        c->call = NULL;
    }
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        s->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    s->conn_count--;
    if (c->timer) {
        event_free(c->timer);
    }
    if (c->resume) {
        event_free(c->resume);
    }
    if (c->bev) {
        bufferevent_free(c->bev); /* closes fd and frees the SSL */
    }
    rpc_head_done(&c->head);
    ds_buf_done(&c->body);
    free(c->method_name);
    free(c);
}

/* The end of every libevent callback: the only place a connection is freed. */
static void conn_tail(struct rpc_conn *c)
{
    if (c->state == CONN_DEAD) {
        conn_free(c);
    }
}

/* Output is flushed: finish the close (TLS and half-closed peers close now). */
static void conn_finish_close(struct rpc_conn *c)
{
    conn_disarm(c);
    if (c->ssl || c->peer_eof) {
        if (c->ssl) {
            SSL_shutdown(c->ssl); /* best effort close_notify */
            ERR_clear_error();
        }
        conn_set_dead(c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    bufferevent_enable(c->bev, EV_READ);
    conn_arm(c, RPC_LINGER_MS);
}

static void conn_close_soon(struct rpc_conn *c)
{
    if (c->state == CONN_CLOSING || c->state == CONN_LINGER || c->state == CONN_DEAD) {
        return;
    }
    c->state = CONN_CLOSING;
    conn_disarm(c);
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
        conn_finish_close(c);
    }
}

/* ---- responses ---------------------------------------------------------------------------- */

/* Append one response to the connection's output. */
static void conn_write_response(struct rpc_conn *c, const struct ds_rpc_call *call, int status,
                                const char *ctype, const void *body, size_t len, bool head_only)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                        status, rpc_status_reason(status), ctype, len);
    if (!c->keep_alive) {
        evbuffer_add_printf(out, "Connection: close\r\n");
    } else if (c->http_minor == 0) {
        evbuffer_add_printf(out, "Connection: keep-alive\r\n");
    }
    const char *const *h = c->lst->site->headers;
    for (; h && *h; h++) {
        evbuffer_add_printf(out, "%s\r\n", *h);
    }
    for (size_t i = 0; call && i < call->hdr_count; i++) {
        evbuffer_add_printf(out, "%s: %s\r\n", call->hdr_name[i], call->hdr_value[i]);
    }
    evbuffer_add(out, "\r\n", 2);
    if (!head_only && len > 0) {
        evbuffer_add(out, body, len);
    }
}

/* The JSON error body of §2.7, pretty-printed with a two-space indent, ASCII only. */
static char *error_body(const char *msg, size_t *out_len)
{
    char buf[DS_RPC_ERROR_MESSAGE_MAX + 1];
    snprintf(buf, sizeof(buf), "%s", msg ? msg : "unknown error");
    rpc_utf8_sanitize(buf);
    json_t *obj = json_pack("{s:s}", "error", buf);
    char *s = obj ? json_dumps(obj, JSON_INDENT(2) | JSON_ENSURE_ASCII) : NULL;
    json_decref(obj);
    if (!s) {
        s = strdup("{\n  \"error\": \"out of memory\"\n}");
    }
    *out_len = s ? strlen(s) : 0;
    return s;
}

/* A framing-level error before or outside a call: answer and close the connection. */
static void conn_fail(struct rpc_conn *c, int status, const char *msg)
{
    size_t len;
    char *body = error_body(msg, &len);
    c->keep_alive = false;
    conn_write_response(c, NULL, status, "application/json", body ? body : "", len, false);
    free(body);
    conn_close_soon(c);
}

/* ---- calls ------------------------------------------------------------------------------- */

static void call_free(struct ds_rpc_call *call)
{
    if (!call) {
        return;
    }
    rpc_head_done(&call->head);
    free(call->body);
    json_decref(call->params);
    free(call->method_name);
    X509_free(call->peer_cert);
    if (call->peer_chain) {
        sk_X509_pop_free(call->peer_chain, X509_free);
    }
    free(call->error_msg);
    for (size_t i = 0; i < call->hdr_count; i++) {
        free(call->hdr_name[i]);
        free(call->hdr_value[i]);
    }
    free(call);
}

/*
 * Write the reply of a call and move its connection on. The call itself is freed here unless
 * its handler is still on the stack (the dispatcher frees it then).
 */
static void call_finish(struct ds_rpc_call *call, int status, const char *ctype, const void *body,
                        size_t len)
{
    if (call->replied) {
        return;
    }
    call->replied = true;
    struct rpc_conn *c = call->conn;
    if (c) {
        conn_write_response(c, call, status, ctype, body, len, call->head_only);
        if (!call->in_handler) {
            /* Deferred: the connection continues from its resume event. */
            c->call = NULL;
            c->state = c->keep_alive ? CONN_IDLE : CONN_CLOSING;
            event_active(c->resume, 0, 0);
        }
    }
    if (!call->in_handler) {
        call_free(call);
    }
}

static void protobuf_error(struct ds_rpc_call *call, const char *msg)
{
    /* prpc.PrpcError { string message = 1; } */
    uint8_t buf[16 + DS_RPC_ERROR_MESSAGE_MAX];
    size_t n = strnlen(msg, DS_RPC_ERROR_MESSAGE_MAX);
    size_t o = 0;
    buf[o++] = 0x0a;
    for (size_t v = n;; v >>= 7) {
        if (v < 0x80) {
            buf[o++] = (uint8_t)v;
            break;
        }
        buf[o++] = (uint8_t)(v | 0x80);
    }
    memcpy(buf + o, msg, n);
    call_finish(call, 400, "application/octet-stream", buf, o + n);
}

static void reply_error_msg(struct ds_rpc_call *call, int status, const char *msg)
{
    if (!call->json_mode) {
        protobuf_error(call, msg);
        return;
    }
    size_t len;
    char *body = error_body(msg, &len);
    call_finish(call, status, "application/json", body ? body : "", len);
    free(body);
}

void ds_rpc_call_reply_json(struct ds_rpc_call *call, json_t *result)
{
    char *s = json_dumps(result ? result : json_null(),
                         JSON_COMPACT | JSON_ENSURE_ASCII | JSON_ENCODE_ANY);
    json_decref(result);
    if (!s) {
        reply_error_msg(call, 400, "failed to encode the response");
        return;
    }
    call_finish(call, 200, "application/json", s, strlen(s));
    free(s);
}

void ds_rpc_call_reply_error(struct ds_rpc_call *call, const char *fmt, ...)
{
    char msg[DS_RPC_ERROR_MESSAGE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    reply_error_msg(call, 400, msg);
}

void ds_rpc_call_reply_raw(struct ds_rpc_call *call, int status, const char *content_type,
                           const void *body, size_t len)
{
    if (status < 200 || status > 599) {
        status = 500;
    }
    call_finish(call, status, content_type ? content_type : "application/octet-stream", body, len);
}

int ds_rpc_call_error(struct ds_rpc_call *call, const char *fmt, ...)
{
    char msg[DS_RPC_ERROR_MESSAGE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    free(call->error_msg);
    call->error_msg = strdup(msg);
    return -EINVAL;
}

int ds_rpc_call_add_header(struct ds_rpc_call *call, const char *name, const char *value)
{
    if (!name[0] || strpbrk(name, "\r\n: \t") || strpbrk(value, "\r\n")) {
        return -EINVAL;
    }
    if (call->hdr_count >= DS_RPC_RESPONSE_HEADERS_MAX) {
        return -DS_E_LIMIT;
    }
    char *n = strdup(name), *v = strdup(value);
    if (!n || !v) {
        free(n);
        free(v);
        return -ENOMEM;
    }
    call->hdr_name[call->hdr_count] = n;
    call->hdr_value[call->hdr_count] = v;
    call->hdr_count++;
    return 0;
}

const struct ds_rpc_peer *ds_rpc_call_peer(const struct ds_rpc_call *call)
{
    return &call->peer;
}

X509 *ds_rpc_call_peer_cert(const struct ds_rpc_call *call)
{
    return call->peer_cert;
}

STACK_OF(X509) * ds_rpc_call_peer_chain(const struct ds_rpc_call *call)
{
    return call->peer_chain;
}

const char *ds_rpc_call_http_method(const struct ds_rpc_call *call)
{
    return call->head.method_str;
}

const char *ds_rpc_call_path(const struct ds_rpc_call *call)
{
    return call->head.path;
}

const char *ds_rpc_call_query(const struct ds_rpc_call *call)
{
    return call->head.query;
}

const char *ds_rpc_call_method(const struct ds_rpc_call *call)
{
    return call->method_name ? call->method_name : "";
}

const uint8_t *ds_rpc_call_body(const struct ds_rpc_call *call, size_t *out_len)
{
    *out_len = call->body_len;
    return call->body ? call->body : (const uint8_t *)"";
}

const char *ds_rpc_call_header(const struct ds_rpc_call *call, const char *name)
{
    return rpc_head_header(&call->head, name);
}

bool ds_rpc_call_from_query(const struct ds_rpc_call *call)
{
    return call->from_query;
}

bool ds_rpc_call_orphaned(const struct ds_rpc_call *call)
{
    return call->conn == NULL;
}

/* ---- routing ------------------------------------------------------------------------------- */

/* Route the parsed head: fills c->kind, c->route / c->method and c->method_name. */
static int conn_route(struct rpc_conn *c)
{
    const struct ds_rpc_site *site = c->lst->site;
    const char *path = c->head.path;
    enum rpc_http_method m = c->head.method;
    c->kind = ROUTE_NONE;
    if (m == RPC_HTTP_OTHER) {
        c->kind = ROUTE_BAD_METHOD;
        return 0;
    }
    for (size_t i = 0; i < site->route_count; i++) {
        const struct ds_rpc_route *rt = &site->routes[i];
        size_t n = strlen(rt->path);
        bool prefix = n > 1 && rt->path[n - 1] == '/';
        if (prefix ? strncmp(path, rt->path, n) != 0 : strcmp(path, rt->path) != 0) {
            continue;
        }
        unsigned want = m == RPC_HTTP_POST ? DS_RPC_HTTP_POST : DS_RPC_HTTP_GET;
        c->kind = (rt->methods & want) ? ROUTE_RAW : ROUTE_BAD_METHOD;
        c->route = rt;
        return 0;
    }
    for (size_t i = 0; i < site->mount_count; i++) {
        const struct ds_rpc_mount *mt = &site->mounts[i];
        size_t n = strlen(mt->prefix);
        if (strncmp(path, mt->prefix, n) != 0) {
            continue;
        }
        const char *seg = path + n;
        if (seg[0] == 0 || strchr(seg, '/')) {
            continue; /* not exactly one segment */
        }
        size_t slen = strlen(seg);
        char *name = malloc(slen + 1);
        if (!name) {
            return -ENOMEM;
        }
        size_t dlen = rpc_percent_decode(seg, slen, name, false);
        if (strlen(name) != dlen) {
            free(name);
            continue; /* NUL in the method name: no such route */
        }
        rpc_utf8_sanitize(name);
        const char *base = name;
        for (bool trimmed = true; trimmed;) {
            trimmed = false;
            for (size_t t = 0; t < DS_RPC_TRIMS_MAX; t++) {
                const char *tr = mt->trim[t];
                size_t tn = tr ? strlen(tr) : 0;
                if (tn && strncmp(base, tr, tn) == 0) {
                    base += tn;
                    trimmed = true;
                }
            }
        }
        memmove(name, base, strlen(base) + 1);
        c->method_name = name;
        c->kind = ROUTE_RPC_UNKNOWN;
        const struct ds_rpc_service *svc = mt->service;
        for (size_t k = 0; svc && k < svc->method_count; k++) {
            if (strcmp(svc->methods[k].name, name) == 0) {
                c->kind = ROUTE_RPC;
                c->method = &svc->methods[k];
                break;
            }
        }
        return 0;
    }
    return 0;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static void dispatch(struct rpc_conn *c)
{
    const struct ds_rpc_site *site = c->lst->site;
    struct ds_rpc_call *call = calloc(1, sizeof(*call));
    if (!call) {
        conn_fail(c, 500, "out of memory");
        return;
    }
    call->conn = c;
    call->site = site;
    call->head = c->head;
    memset(&c->head, 0, sizeof(c->head));
    size_t blen;
    ds_buf_steal(&c->body, &call->body, &blen);
    call->body_len = call->body ? blen : 0;
    ds_buf_init(&c->body, 0);
    call->method_name = c->method_name;
    c->method_name = NULL;
    call->kind = c->kind;
    call->peer = c->peer;
    call->head_only = call->head.method == RPC_HTTP_HEAD;
    call->from_query = call->head.method != RPC_HTTP_POST;
    call->json_mode = true;
    if (c->ssl) {
        call->peer_cert = SSL_get1_peer_certificate(c->ssl);
        STACK_OF(X509) *chain = SSL_get_peer_cert_chain(c->ssl);
        call->peer_chain = chain ? X509_chain_up_ref(chain) : NULL;
    }
    c->call = call;
    c->state = CONN_BUSY;
    call->in_handler = true;

    int r = 0;
    json_t *result = NULL;
    char msg[RPC_MSG_MAX];
    switch (call->kind) {
    case ROUTE_NONE:
        reply_error_msg(call, 404, "Not Found");
        break;
    case ROUTE_BAD_METHOD:
        reply_error_msg(call, 405, "Method Not Allowed");
        break;
    case ROUTE_RPC_UNKNOWN:
    case ROUTE_RPC: {
        const struct ds_rpc_method *m = c->method;
        struct rpc_input in = {
            .from_query = call->from_query,
            .query = call->head.query,
            .query_len = strlen(call->head.query),
            .content_type = call->head.content_type,
            .body = call->body,
            .body_len = call->body_len,
            .no_params = call->kind == ROUTE_RPC_UNKNOWN || (m->flags & DS_RPC_NO_PARAMS),
        };
        r = rpc_decode_input(&in, &call->params, msg, sizeof(msg));
        if (r == -DS_E_UNSUPPORTED) {
            call->json_mode = false;
        }
        if (call->kind == ROUTE_RPC_UNKNOWN) {
            char nf[DS_RPC_ERROR_MESSAGE_MAX];
            snprintf(nf, sizeof(nf), "Service not found: %s", call->method_name);
            reply_error_msg(call, 400, nf);
            break;
        }
        if (r < 0) {
            reply_error_msg(call, 400, msg);
            break;
        }
        if (site->filter) {
            r = site->filter(call, site->ctx);
            if (r != 0) {
                break;
            }
        }
        r = m->fn(call, call->params, &result, site->ctx);
        break;
    }
    case ROUTE_RAW:
        if (site->filter) {
            r = site->filter(call, site->ctx);
            if (r != 0) {
                break;
            }
        }
        r = c->route->fn(call, site->ctx);
        break;
    }
    /* call->in_handler stays set while the dispatcher replies for the handler, so that
     * call_finish() leaves freeing the call and moving the connection on to us. */
    if (call->replied) {
        json_decref(result);
    } else if (r == DS_RPC_DEFERRED) {
        call->in_handler = false;
        return; /* c->call stays set; ds_rpc_call_reply_*() resumes the connection */
    } else if (r < 0) {
        reply_error_msg(call, 400, call->error_msg ? call->error_msg : ds_strerror(r));
    } else if (r > 0) {
        reply_error_msg(call, 500, "request filter refused without a reply");
    } else if (call->kind == ROUTE_RPC) {
        ds_rpc_call_reply_json(call, result);
    } else {
        reply_error_msg(call, 500, "handler did not reply");
    }
    /* Synchronous completion: the call is done, the connection goes on. */
    if (c->call == call) {
        c->call = NULL;
    }
    call_free(call);
    c->state = c->keep_alive ? CONN_IDLE : CONN_CLOSING;
}

/* ---- the request state machine ------------------------------------------------------------ */

static void conn_reset_request(struct rpc_conn *c)
{
    rpc_head_done(&c->head);
    ds_buf_done(&c->body);
    free(c->method_name);
    c->method_name = NULL;
    c->method = NULL;
    c->route = NULL;
    c->kind = ROUTE_NONE;
    memset(&c->chunked, 0, sizeof(c->chunked));
    c->scan_off = 0;
}

/* Returns true when the head is complete and parsed. */
static bool conn_read_head(struct rpc_conn *c)
{
    const struct ds_rpc_limits *lim = &c->srv->lim;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    size_t avail = evbuffer_get_length(in);
    size_t window = avail < lim->header_size_max + 1 ? avail : lim->header_size_max + 1;
    const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)window);
    size_t end = rpc_head_find_end(p, window, c->scan_off);
    if (end == 0) {
        c->scan_off = window;
        const char *nl = memchr(p, '\n', window);
        if ((nl ? (size_t)(nl - p) : window) > lim->request_line_max) {
            conn_fail(c, 414, "request line too long");
        } else if (window > lim->header_size_max) {
            conn_fail(c, 431, "request header too large");
        } else if (c->peer_eof) {
            conn_close_soon(c); /* half a request and then EOF: nothing to answer */
        }
        return false;
    }
    int status = 400;
    const char *msg = NULL;
    int r = rpc_head_parse(p, end, lim, &c->head, &status, &msg);
    evbuffer_drain(in, end);
    if (r < 0) {
        conn_fail(c, status, msg);
        return false;
    }
    c->keep_alive = c->head.keep_alive;
    c->http_minor = c->head.minor;
    r = conn_route(c);
    if (r < 0) {
        conn_fail(c, 500, "out of memory");
        return false;
    }
    size_t body_max = lim->body_size_max;
    if (c->kind == ROUTE_RPC && c->method->body_size_max) {
        body_max = c->method->body_size_max;
    }
    if (c->head.has_length && c->head.content_length > body_max) {
        conn_fail(c, 400, "request body too large");
        return false;
    }
    ds_buf_init(&c->body, body_max);
    if (c->head.expect_continue && (c->head.chunked || c->head.content_length > 0) &&
        evbuffer_get_length(in) == 0) {
        evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
    }
    return true;
}

/* Returns true when the body is complete. */
static bool conn_read_body(struct rpc_conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    if (!c->head.chunked) {
        size_t need = (size_t)c->head.content_length - c->body.len;
        size_t avail = evbuffer_get_length(in);
        size_t take = avail < need ? avail : need;
        if (take > 0) {
            const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)take);
            if (ds_buf_append(&c->body, p, take) < 0) {
                conn_fail(c, 500, "out of memory");
                return false;
            }
            evbuffer_drain(in, take);
        }
        if (c->body.len == c->head.content_length) {
            return true;
        }
        if (c->peer_eof) {
            conn_close_soon(c);
        }
        return false;
    }
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        size_t window = avail < RPC_READ_WINDOW ? avail : RPC_READ_WINDOW;
        bool done = false;
        const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)window);
        int r =
            rpc_chunked_feed(&c->chunked, p, window, c->srv->lim.header_size_max, &c->body, &done);
        if (r < 0) {
            conn_fail(c, 400,
                      r == -DS_E_LIMIT ? "request body too large" : "malformed chunked body");
            return false;
        }
        evbuffer_drain(in, (size_t)r);
        if (done) {
            return true;
        }
        if (r == 0) {
            break;
        }
    }
    if (c->peer_eof) {
        conn_close_soon(c);
    }
    return false;
}

static void conn_process(struct rpc_conn *c)
{
    const struct ds_rpc_limits *lim = &c->srv->lim;
    struct evbuffer *in = bufferevent_get_input(c->bev);
    for (;;) {
        switch (c->state) {
        case CONN_IDLE: {
            /* A client that pipelines requests but does not read the responses must not make
             * us buffer without bound: wait until the output drains. */
            if (evbuffer_get_length(bufferevent_get_output(c->bev)) > RPC_OUTPUT_HIGH) {
                c->wait_drain = true;
                if (!c->read_paused) {
                    c->read_paused = true;
                    bufferevent_disable(c->bev, EV_READ);
                }
                return;
            }
            if (c->read_paused) {
                c->read_paused = false;
                bufferevent_enable(c->bev, EV_READ);
            }
            /* RFC 9112 §2.2: skip empty lines between requests. */
            size_t skip = 0;
            for (;;) {
                size_t avail = evbuffer_get_length(in);
                size_t window = avail < 64 ? avail : 64;
                const uint8_t *p = evbuffer_pullup(in, (ev_ssize_t)window);
                size_t n = 0;
                while (n < window && (p[n] == '\r' || p[n] == '\n')) {
                    n++;
                }
                evbuffer_drain(in, n);
                skip += n;
                if (n < window || n == 0) {
                    break;
                }
            }
            if (evbuffer_get_length(in) == 0) {
                if (c->peer_eof) {
                    conn_close_soon(c);
                    break;
                }
                if (skip == 0) {
                    conn_arm(c, lim->idle_timeout_ms);
                }
                return;
            }
            conn_reset_request(c);
            c->state = CONN_HEAD;
            conn_arm(c, lim->header_timeout_ms);
            continue;
        }
        case CONN_HEAD:
            if (!conn_read_head(c)) {
                break;
            }
            c->state = CONN_BODY;
            conn_arm(c, lim->body_timeout_ms);
            continue;
        case CONN_BODY:
            if (!conn_read_body(c)) {
                break;
            }
            conn_disarm(c);
            dispatch(c);
            continue;
        case CONN_BUSY: {
            /* Keep reading (to see EOF) but bound what a pipelining client can queue. */
            size_t cap = lim->header_size_max + lim->body_size_max;
            if (evbuffer_get_length(in) > cap && !c->read_paused) {
                c->read_paused = true;
                bufferevent_disable(c->bev, EV_READ);
            }
            return;
        }
        case CONN_CLOSING:
            if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0) {
                conn_finish_close(c);
            }
            return;
        case CONN_LINGER:
            evbuffer_drain(in, evbuffer_get_length(in));
            return;
        case CONN_DEAD:
            return;
        }
        /* A step could not finish: wait for more input unless the connection is closing. */
        if (c->state == CONN_HEAD || c->state == CONN_BODY) {
            return;
        }
    }
}

/* ---- libevent callbacks -------------------------------------------------------------------- */

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
    struct rpc_conn *c = arg;
    if (c->state == CONN_LINGER) {
        struct evbuffer *in = bufferevent_get_input(bev);
        c->lingered += evbuffer_get_length(in);
        evbuffer_drain(in, evbuffer_get_length(in));
        if (c->lingered > RPC_LINGER_DRAIN_MAX) {
            conn_set_dead(c);
        }
    } else if (c->state == CONN_CLOSING) {
        struct evbuffer *in = bufferevent_get_input(bev);
        evbuffer_drain(in, evbuffer_get_length(in));
    } else {
        conn_process(c);
    }
    conn_tail(c);
}

static void conn_write_cb(struct bufferevent *bev, void *arg)
{
    struct rpc_conn *c = arg;
    if (c->state == CONN_CLOSING) {
        conn_finish_close(c);
    } else if (c->wait_drain) {
        c->wait_drain = false;
        conn_process(c);
    }
    conn_tail(c);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct rpc_conn *c = arg;
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        ERR_clear_error();
        conn_set_dead(c);
    } else if (what & BEV_EVENT_EOF) {
        c->peer_eof = true;
        if (c->state == CONN_LINGER) {
            conn_set_dead(c);
        } else if (c->state == CONN_CLOSING) {
            /* Flush what is left, then close (conn_finish_close sees peer_eof). */
        } else {
            conn_process(c);
        }
    }
    conn_tail(c);
}

static void conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rpc_conn *c = arg;
    switch (c->state) {
    case CONN_HEAD:
    case CONN_BODY:
        conn_fail(c, 408, "request timeout");
        break;
    case CONN_IDLE:
    case CONN_LINGER:
        conn_set_dead(c);
        break;
    default:
        break;
    }
    conn_tail(c);
}

static void conn_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rpc_conn *c = arg;
    if (c->state != CONN_DEAD) {
        conn_process(c);
    }
    conn_tail(c);
}

static void peer_name(struct ds_rpc_peer *p)
{
    const struct sockaddr *sa = (const struct sockaddr *)&p->addr;
    char ip[INET6_ADDRSTRLEN];
    p->name[0] = 0;
    if (p->addr_len == 0) {
        snprintf(p->name, sizeof(p->name), "%s",
                 p->transport == DS_RPC_TRANSPORT_UNIX ? "unix" : "");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof(ip));
        snprintf(p->name, sizeof(p->name), "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof(ip));
        snprintf(p->name, sizeof(p->name), "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_VSOCK) {
        const struct sockaddr_vm *vm = (const struct sockaddr_vm *)sa;
        snprintf(p->name, sizeof(p->name), "vsock:%u:%u", vm->svm_cid, vm->svm_port);
    } else if (sa->sa_family == AF_UNIX) {
        snprintf(p->name, sizeof(p->name), "unix");
    }
}

static void conn_start(struct rpc_listener *l, evutil_socket_t fd, struct sockaddr *sa, int salen)
{
    struct ds_rpc_server *s = l->srv;
    if (s->conn_count >= s->lim.connections_max) {
        size_t blen;
        char *body = l->tls ? NULL : error_body("too many connections", &blen);
        if (body) {
            char msg[256];
            int n = snprintf(msg, sizeof(msg),
                             "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                             "\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                             blen, body);
            if (n > 0 && (size_t)n < sizeof(msg)) {
                (void)!send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
            }
            free(body);
        }
        evutil_closesocket(fd);
        return;
    }
    struct rpc_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->srv = s;
    c->lst = l;
    c->fd = fd;
    c->keep_alive = true;
    c->peer.transport = l->transport;
    c->peer.tls = l->tls != NULL;
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0 && ss.ss_family == AF_UNIX) {
        c->peer.transport = DS_RPC_TRANSPORT_UNIX;
    }
    if (c->peer.transport == DS_RPC_TRANSPORT_UNIX) {
        struct ucred cred;
        socklen_t clen = sizeof(cred);
        if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0) {
            c->peer.has_cred = true;
            c->peer.pid = cred.pid;
            c->peer.uid = cred.uid;
            c->peer.gid = cred.gid;
        }
    } else {
        if (sa && salen > 0 && (size_t)salen <= sizeof(c->peer.addr)) {
            memcpy(&c->peer.addr, sa, (size_t)salen);
            c->peer.addr_len = (socklen_t)salen;
        }
        if (c->peer.addr.ss_family == AF_INET || c->peer.addr.ss_family == AF_INET6) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
    }
    peer_name(&c->peer);

    /* Link first so conn_free() can always unlink. */
    c->next = s->conns;
    if (s->conns) {
        s->conns->prev = c;
    }
    s->conns = c;
    s->conn_count++;

    if (l->tls) {
        c->ssl = SSL_new(l->tls);
        if (!c->ssl) {
            ERR_clear_error();
            evutil_closesocket(fd);
            conn_free(c);
            return;
        }
        c->bev = bufferevent_openssl_socket_new(s->base, fd, c->ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) {
            /* libevent frees the SSL (and may close fd) on this failure path. */
            c->ssl = NULL;
        } else {
            bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
        }
    } else {
        c->bev = bufferevent_socket_new(s->base, fd, BEV_OPT_CLOSE_ON_FREE);
        if (!c->bev) {
            evutil_closesocket(fd);
        }
    }
    c->timer = evtimer_new(s->base, conn_timer_cb, c);
    c->resume = event_new(s->base, -1, 0, conn_resume_cb, c);
    if (!c->bev || !c->timer || !c->resume) {
        conn_free(c);
        return;
    }
    struct timeval wt = {.tv_sec = s->lim.write_timeout_ms / 1000,
                         .tv_usec = (s->lim.write_timeout_ms % 1000) * 1000};
    bufferevent_set_timeouts(c->bev, NULL, &wt);
    bufferevent_setcb(c->bev, conn_read_cb, conn_write_cb, conn_event_cb, c);
    bufferevent_enable(c->bev, EV_READ | EV_WRITE);
    c->state = CONN_IDLE;
    conn_arm(c, s->lim.idle_timeout_ms);
}

static void accept_cb(struct evconnlistener *evl, evutil_socket_t fd, struct sockaddr *sa,
                      int salen, void *arg)
{
    conn_start(arg, fd, sa, salen);
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct rpc_listener *l = arg;
    evconnlistener_enable(l->evl);
}

/* accept() failed (out of descriptors, ...): stop accepting for a moment instead of spinning. */
static void accept_error_cb(struct evconnlistener *evl, void *arg)
{
    struct rpc_listener *l = arg;
    struct timeval tv = {0, RPC_ACCEPT_BACKOFF_MS * 1000};
    evconnlistener_disable(evl);
    evtimer_add(l->backoff, &tv);
}

/* ---- server and listeners ------------------------------------------------------------------ */

int ds_rpc_server_new(struct event_base *base, const struct ds_rpc_limits *limits,
                      struct ds_rpc_server **out_server)
{
    if (!base) {
        return -EINVAL;
    }
    struct ds_rpc_server *s = calloc(1, sizeof(*s));
    if (!s) {
        return -ENOMEM;
    }
    s->base = base;
    if (limits) {
        s->lim = *limits;
    } else {
        ds_rpc_limits_default(&s->lim);
    }
    if (s->lim.header_size_max == 0 || s->lim.request_line_max == 0 ||
        s->lim.header_count_max == 0 || s->lim.connections_max == 0) {
        free(s);
        return -EINVAL;
    }
    *out_server = s;
    return 0;
}

void ds_rpc_server_free(struct ds_rpc_server *s)
{
    if (!s) {
        return;
    }
    while (s->conns) {
        conn_free(s->conns);
    }
    struct rpc_listener *l = s->listeners;
    while (l) {
        struct rpc_listener *next = l->next;
        if (l->evl) {
            evconnlistener_free(l->evl);
        }
        if (l->backoff) {
            event_free(l->backoff);
        }
        if (l->unix_path) {
            unlink(l->unix_path);
            free(l->unix_path);
        }
        SSL_CTX_free(l->tls);
        free(l);
        l = next;
    }
    free(s);
}

size_t ds_rpc_server_connection_count(const struct ds_rpc_server *s)
{
    return s->conn_count;
}

/* Wrap a listening fd (owned; closed on failure). */
static int add_listener(struct ds_rpc_server *s, int fd, const struct ds_rpc_site *site,
                        SSL_CTX *tls, enum ds_rpc_transport transport, struct rpc_listener **out)
{
    struct rpc_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    if (evutil_make_socket_nonblocking(fd) < 0) {
        close(fd);
        free(l);
        return -EIO;
    }
    l->srv = s;
    l->site = site;
    l->transport = transport;
    l->backoff = evtimer_new(s->base, accept_resume_cb, l);
    l->evl = l->backoff ? evconnlistener_new(s->base, accept_cb, l,
                                             LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)
                        : NULL;
    if (!l->evl) {
        if (l->backoff) {
            event_free(l->backoff);
        }
        close(fd);
        free(l);
        return -ENOMEM;
    }
    evconnlistener_set_error_cb(l->evl, accept_error_cb);
    if (tls) {
        SSL_CTX_up_ref(tls);
        l->tls = tls;
    }
    l->next = s->listeners;
    s->listeners = l;
    if (out) {
        *out = l;
    }
    return 0;
}

int ds_rpc_server_listen_tcp(struct ds_rpc_server *s, const char *addr, uint16_t port,
                             const struct ds_rpc_site *site, SSL_CTX *tls, uint16_t *out_port)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (!site) {
        return -EINVAL;
    }
    if (!addr || inet_pton(AF_INET, addr, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons(port);
        if (!addr) {
            in4->sin_addr.s_addr = htonl(INADDR_ANY);
        }
        sslen = sizeof(*in4);
    } else if (inet_pton(AF_INET6, addr, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        sslen = sizeof(*in6);
    } else {
        return -EINVAL;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        return -errno;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ss.ss_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 || listen(fd, RPC_LISTEN_BACKLOG) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    uint16_t bport = bound.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&bound)->sin_port)
                                                : ntohs(((struct sockaddr_in6 *)&bound)->sin6_port);
    DS_TRY(add_listener(s, fd, site, tls, DS_RPC_TRANSPORT_TCP, NULL));
    if (out_port) {
        *out_port = bport;
    }
    return 0;
}

int ds_rpc_server_listen_unix(struct ds_rpc_server *s, const char *path, unsigned mode,
                              const struct ds_rpc_site *site)
{
    struct sockaddr_un sun;
    memset(&sun, 0, sizeof(sun));
    sun.sun_family = AF_UNIX;
    if (!site || !path || !path[0]) {
        return -EINVAL;
    }
    if (strlen(path) >= sizeof(sun.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            return -EEXIST;
        }
        if (unlink(path) < 0) {
            return -errno;
        }
    }
    char *copy = strdup(path);
    if (!copy) {
        return -ENOMEM;
    }
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        int e = -errno;
        free(copy);
        return e;
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = -errno;
        close(fd);
        free(copy);
        return e;
    }
    if (chmod(path, (mode_t)mode) < 0 || listen(fd, RPC_LISTEN_BACKLOG) < 0) {
        int e = -errno;
        close(fd);
        unlink(path);
        free(copy);
        return e;
    }
    struct rpc_listener *l;
    int r = add_listener(s, fd, site, NULL, DS_RPC_TRANSPORT_UNIX, &l);
    if (r < 0) {
        unlink(path);
        free(copy);
        return r;
    }
    l->unix_path = copy;
    return 0;
}

int ds_rpc_server_listen_fd(struct ds_rpc_server *s, int fd, const struct ds_rpc_site *site,
                            SSL_CTX *tls)
{
    if (!site || fd < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    enum ds_rpc_transport t = DS_RPC_TRANSPORT_OTHER;
    if (getsockname(fd, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_UNIX) {
            t = DS_RPC_TRANSPORT_UNIX;
        } else if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
            t = DS_RPC_TRANSPORT_TCP;
        }
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return add_listener(s, fd, site, tls, t, NULL);
}

int rpc_server_adopt_fd(struct ds_rpc_server *s, int fd, const struct ds_rpc_site *site)
{
    struct rpc_listener *l = calloc(1, sizeof(*l));
    if (!l) {
        close(fd);
        return -ENOMEM;
    }
    if (evutil_make_socket_nonblocking(fd) < 0) {
        close(fd);
        free(l);
        return -EIO;
    }
    l->srv = s;
    l->site = site;
    l->transport = DS_RPC_TRANSPORT_OTHER;
    l->next = s->listeners;
    s->listeners = l;
    conn_start(l, fd, NULL, 0);
    return 0;
}
