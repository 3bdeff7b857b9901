/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dstack-gateway SNI proxy (spec host-side.md §4.2): per accepted TCP connection, read an
 * optional PROXY header, then the TLS ClientHello up to its SNI within timeouts.handshake; map
 * `<id>[-<port>][s|g].<base>` (or a custom domain via DNS TXT) to backends from the routing
 * table; connect to the freshest candidates at once (first success wins, timeouts.connect);
 * then either terminate TLS with the base domain's wildcard certificate (OpenSSL directly on
 * the socket, ALPN h2 for `g`) and relay plaintext, or pass the buffered ClientHello and all
 * later bytes through untouched: read/write at first, splice(2) through a pipe once
 * tcp_splice.after_bytes / after_duration is reached. Per-connection deadlines (handshake,
 * connect, idle, total, shutdown) are kept in one timer per connection. `workers` event loops
 * (threads) each accept on their own SO_REUSEPORT listeners; connections never block each
 * other (a ClientHello dribbled byte by byte only holds its own slot).
 */

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <dstack/gateway.h>

#include "gw_proxy.h"
#include "log.h"

#define GW_CONN_INBUF_MAX  (DS_GW_HELLO_MAX + 4 * 5 + DS_PP_V2_MAX)
#define GW_CANDIDATES_MAX  8
#define GW_SPLICE_CHUNK    (256 * 1024)
#define GW_SPLICE_SMALL    (16 * 1024) /* a splice that moved less goes back to copying */
#define GW_SPECIAL_REQ_MAX 8192
#define GW_LISTEN_BACKLOG  4096

/* Counters are written by their worker's thread and summed by gw_proxy_get_stats(). */
#define ST_ADD(p, field, n) __atomic_fetch_add(&(p)->st.field, (n), __ATOMIC_RELAXED)

enum conn_state {
    ST_PP,      /* reading the inbound PROXY header */
    ST_HELLO,   /* reading the ClientHello */
    ST_RESOLVE, /* custom domain: waiting for the TXT record */
    ST_CONNECT, /* connecting to the backends */
    ST_RELAY,   /* relaying */
    ST_SPECIAL, /* terminated, answering health/gateway locally */
};

struct gw_conn;

struct splice_dir {
    struct gw_conn *conn;
    int from, to;
    int pipe[2];
    size_t in_pipe;
    struct event *rev, *wev;
    uint8_t *pre; /* bytes not taken by `to` yet (PROXY header + ClientHello, rest of a read) */
    size_t pre_len, pre_off;
    bool eof, done;
    bool tls_from, tls_to; /* `from` / `to` is the TLS side of a terminated connection */
    bool piped;            /* reads go into the pipe (bulk) rather than through buf */
    bool bulk;             /* the last buffered read filled the whole chunk */
};

struct pending_connect {
    int fd;
    struct event *ev;
    struct gw_backend be;
};

struct gw_conn {
    struct gw_proxy *p;
    struct gw_conn *prev, *next;
    enum conn_state state;
    int cfd, bfd;
    struct sockaddr_storage peer, local; /* as reported by PROXY when inbound_pp */
    uint8_t *in;
    size_t in_len, pp_len;
    struct event *rev, *timer;
    struct ds_gw_hello hello;
    struct ds_gw_target target;
    char base[DS_GW_SNI_MAX + 1];
    bool terminate, tls_done, counted;
    bool pp; /* the backend gets a PROXY v2 header (outbound_pp, or the port policy's pp) */
    char instance_id[GW_ID_MAX + 1];
    struct pending_connect pend[GW_CANDIDATES_MAX];
    size_t npend;
    struct gw_dns_req *dns;
    /* relay */
    struct bufferevent *cbev, *bbev;
    bool c_eof, b_eof, closing_after_write, lingering, close_notify_sent;
    size_t linger_left;
    struct splice_dir sd[2]; /* direct relay: [0] client -> backend, [1] backend -> client */
    bool spliced, splice_failed;
    SSL *ssl;                           /* terminated relay: OpenSSL on cfd */
    size_t in_off;                      /* ClientHello bytes handed to OpenSSL so far */
    bool rd_wants_write, wr_wants_read; /* SSL_read needs EV_WRITE / SSL_write EV_READ */
    uint64_t relayed;                   /* bytes moved by the buffered relay */
    /* deadlines, monotonic ms */
    uint64_t t_accept, t_connect, t_activity, t_shutdown;
};

struct gw_proxy {
    struct event_base *base;
    struct gw_proxy_config cfg;
    char *ns_prefix, *backend_override;
    struct gw_routes *routes;
    struct gw_certs *certs;
    struct evconnlistener *ls[GW_LISTEN_MAX * 4];
    uint16_t ports[GW_LISTEN_MAX * 4];
    size_t nls;
    struct gw_conn *conns;
    struct gw_dns_cache *dns_cache;
    struct gw_proxy_stats st;
    bool stopping;
    /* Workers (core.proxy.workers): each is a struct gw_proxy with its own base, SO_REUSEPORT
     * listeners, connections and counters. The root (worker 0, the caller's base) owns the
     * config strings the others' cfg copies point to. */
    struct gw_proxy *root;
    struct gw_proxy **workers; /* root only: [1, nworkers) run on their own threads */
    size_t nworkers;
    pthread_t thread;
    bool thread_started;
    struct event *ev_ctl;  /* activated by the root to pass `ctl` requests */
    unsigned ctl;          /* GW_CTL_* bits, atomic */
    uint64_t total_active; /* root only: live connections of all workers, atomic */
    struct sockaddr_storage ls_addr[GW_LISTEN_MAX * 4]; /* root only: bound addresses */
    socklen_t ls_addr_len[GW_LISTEN_MAX * 4];
};

#define GW_CTL_SHUTDOWN 1u
#define GW_CTL_EXIT     2u

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void gw_proxy_config_defaults(struct gw_proxy_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->tls_versions = GW_TLS_1_2;
    cfg->agent_port = GW_DEFAULT_AGENT_PORT;
    cfg->connect_top_n = 3;
    cfg->max_connections_per_app = 2000;
    cfg->buffer_size = 65536;
    cfg->splice = true;
    cfg->splice_after_bytes = GW_SPLICE_AFTER_BYTES_DEFAULT;
    cfg->workers = 1;
    cfg->app_address_ns_prefix = "_dstack-app-address";
    cfg->app_address_ns_compat = true;
    cfg->timeouts.pp_header_ms = 5000;
    cfg->timeouts.handshake_ms = 5000;
    cfg->timeouts.connect_ms = 5000;
    cfg->timeouts.idle_ms = 10 * 60 * 1000;
    cfg->timeouts.total_ms = 5u * 3600u * 1000u;
    cfg->timeouts.shutdown_ms = 5000;
    cfg->timeouts.dns_ms = 5000;
    cfg->timeouts.stale_handshake_s = 1800;
}

/* ---- connection lifetime -------------------------------------------------------------------- */

static void conn_arm_timer(struct gw_conn *c);
static void linger_check(struct gw_conn *c);

static void splice_dir_done(struct splice_dir *d)
{
    if (d->rev) {
        event_free(d->rev);
    }
    if (d->wev) {
        event_free(d->wev);
    }
    if (d->pipe[0] >= 0) {
        close(d->pipe[0]);
        close(d->pipe[1]);
    }
    free(d->pre);
    memset(d, 0, sizeof(*d));
    d->pipe[0] = d->pipe[1] = -1;
}

static void cancel_pending(struct gw_conn *c)
{
    for (size_t i = 0; i < c->npend; i++) {
        if (c->pend[i].ev) {
            event_free(c->pend[i].ev);
        }
        if (c->pend[i].fd >= 0) {
            close(c->pend[i].fd);
        }
    }
    c->npend = 0;
}

static void conn_free(struct gw_conn *c)
{
    struct gw_proxy *p = c->p;
    if (c->prev) {
        c->prev->next = c->next;
    } else {
        p->conns = c->next;
    }
    if (c->next) {
        c->next->prev = c->prev;
    }
    ST_ADD(p, active, (uint64_t)-1);
    __atomic_fetch_sub(&p->root->total_active, 1, __ATOMIC_RELAXED);
    gw_dns_lookup_cancel(c->dns);
    cancel_pending(c);
    if (c->rev) {
        event_free(c->rev);
    }
    if (c->timer) {
        event_free(c->timer);
    }
    splice_dir_done(&c->sd[0]);
    splice_dir_done(&c->sd[1]);
    if (c->cbev) {
        bufferevent_free(c->cbev); /* closes cfd (and frees the SSL) */
        c->cfd = -1;
    }
    if (c->bbev) {
        bufferevent_free(c->bbev);
        c->bfd = -1;
    }
    SSL_free(c->ssl); /* and its BIO; the socket is closed below */
    if (c->cfd >= 0) {
        close(c->cfd);
    }
    if (c->bfd >= 0) {
        close(c->bfd);
    }
    if (c->counted) {
        gw_routes_conn_dec(p->routes, c->instance_id);
    }
    free(c->in);
    free(c);
}

static void refuse(struct gw_conn *c, uint64_t *counter, const char *why)
{
    if (counter) {
        __atomic_fetch_add(counter, 1, __ATOMIC_RELAXED);
    }
    char host[INET6_ADDRSTRLEN] = "?";
    if (c->peer.ss_family == AF_INET) {
        inet_ntop(AF_INET, &((struct sockaddr_in *)&c->peer)->sin_addr, host, sizeof(host));
    } else if (c->peer.ss_family == AF_INET6) {
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&c->peer)->sin6_addr, host, sizeof(host));
    }
    log_debug("proxy: refused %s (sni \"%s\"): %s", host, c->hello.sni, why);
    conn_free(c);
}

/* ---- timers --------------------------------------------------------------------------------- */

static uint64_t conn_deadline(struct gw_conn *c)
{
    const struct gw_proxy_timeouts *t = &c->p->cfg.timeouts;
    uint64_t d = UINT64_MAX;
    /* The ClientHello and the TLS handshake share timeouts.handshake, after the PROXY header. */
    uint64_t hs_budget = (uint64_t)t->handshake_ms + (c->p->cfg.inbound_pp ? t->pp_header_ms : 0);
#define MIN_D(x)                                                                                   \
    do {                                                                                           \
        uint64_t v_ = (x);                                                                         \
        if (v_ < d) {                                                                              \
            d = v_;                                                                                \
        }                                                                                          \
    } while (0)
    switch (c->state) {
    case ST_PP:
        MIN_D(c->t_accept + t->pp_header_ms);
        break;
    case ST_HELLO:
        MIN_D(c->t_accept + hs_budget);
        break;
    case ST_RESOLVE:
        MIN_D(c->t_connect + t->dns_ms);
        break;
    case ST_CONNECT:
        MIN_D(c->t_connect + t->connect_ms);
        break;
    case ST_RELAY:
    case ST_SPECIAL:
        if (t->total_ms) {
            MIN_D(c->t_accept + t->total_ms);
        }
        if (t->idle_ms) {
            MIN_D(c->t_activity + t->idle_ms);
        }
        if (c->t_shutdown) {
            /* After one side closed, the rest must keep moving: shutdown_ms without data. */
            MIN_D((c->t_activity > c->t_shutdown ? c->t_activity : c->t_shutdown) + t->shutdown_ms);
        }
        break;
    }
    /* The TLS handshake of a terminated connection counts against the handshake timeout. */
    if (c->terminate && !c->tls_done) {
        MIN_D(c->t_accept + hs_budget);
    }
#undef MIN_D
    return d;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_conn *c = arg;
    uint64_t now = now_ms();
    if (c->lingering) {
        uint64_t since = c->t_activity > c->t_shutdown ? c->t_activity : c->t_shutdown;
        if (now >= since + c->p->cfg.timeouts.shutdown_ms) {
            conn_free(c);
        } else {
            linger_check(c);
        }
        return;
    }
    if (now >= conn_deadline(c)) {
        const char *why = c->state == ST_HELLO || c->state == ST_PP ? "handshake timeout"
                          : c->state == ST_CONNECT                  ? "connect timeout"
                          : c->state == ST_RESOLVE                  ? "dns timeout"
                          : (c->terminate && !c->tls_done)          ? "tls handshake timeout"
                                                                    : "idle/total/shutdown timeout";
        refuse(c, &c->p->st.refused_timeout, why);
        return;
    }
    conn_arm_timer(c); /* activity moved the deadline */
}

static void conn_arm_timer(struct gw_conn *c)
{
    if (c->lingering) {
        return;
    }
    uint64_t d = conn_deadline(c);
    if (d == UINT64_MAX) {
        event_del(c->timer);
        return;
    }
    uint64_t now = now_ms();
    uint64_t ms = d > now ? d - now : 0;
    /* COARSE clock granularity: wake a little late rather than early. */
    ms += 5;
    struct timeval tv = {.tv_sec = (time_t)(ms / 1000), .tv_usec = (suseconds_t)(ms % 1000) * 1000};
    event_add(c->timer, &tv);
}

static void touch(struct gw_conn *c)
{
    c->t_activity = now_ms();
}

/* ---- buffered relay (TLS terminated, or passthrough without splice) ------------------------- */

static void relay_check_done(struct gw_conn *c);

static void bev_read(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    struct bufferevent *other = bev == c->cbev ? c->bbev : c->cbev;
    if (other == NULL) {
        return; /* backend not connected yet: keep the plaintext buffered */
    }
    struct evbuffer *in = bufferevent_get_input(bev), *out = bufferevent_get_output(other);
    touch(c);
    evbuffer_add_buffer(out, in);
    if (evbuffer_get_length(out) >= c->p->cfg.buffer_size) {
        /* Backpressure: stop reading until the other side drained to half. */
        bufferevent_disable(bev, EV_READ);
        bufferevent_setwatermark(other, EV_WRITE, c->p->cfg.buffer_size / 2, 0);
    }
}

static void bev_write(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    struct bufferevent *other = bev == c->cbev ? c->bbev : c->cbev;
    touch(c);
    if (other != NULL && !(bev == c->cbev ? c->b_eof : c->c_eof)) {
        bufferevent_enable(other, EV_READ);
    }
    relay_check_done(c);
}

#define GW_LINGER_POLL_MS 10

/*
 * Closing a TLS-terminated connection: the filter's output being empty only means OpenSSL
 * took the bytes; they may still sit in the socket bufferevent below. Send close_notify, then
 * poll until the lower output is empty too (bounded by timeouts.shutdown).
 */
static void linger_check(struct gw_conn *c)
{
    struct bufferevent *under = bufferevent_get_underlying(c->cbev);
    if (evbuffer_get_length(bufferevent_get_output(c->cbev)) == 0 && !c->close_notify_sent) {
        SSL *ssl = bufferevent_openssl_get_ssl(c->cbev);
        if (ssl != NULL && c->tls_done) {
            (void)SSL_shutdown(ssl);
        }
        c->close_notify_sent = true;
    }
    size_t left = under ? evbuffer_get_length(bufferevent_get_output(under)) : 0;
    if (c->close_notify_sent && left == 0) {
        conn_free(c);
        return;
    }
    if (left != c->linger_left) {
        c->linger_left = left;
        touch(c); /* still draining to a slow client */
    }
    struct timeval tv = {0, GW_LINGER_POLL_MS * 1000};
    event_add(c->timer, &tv);
}

static void conn_close(struct gw_conn *c)
{
    if (!c->terminate || c->cbev == NULL) {
        conn_free(c);
        return;
    }
    if (!c->lingering) {
        c->lingering = true;
        bufferevent_disable(c->cbev, EV_READ);
        if (c->bbev != NULL) {
            bufferevent_free(c->bbev);
            c->bbev = NULL;
        }
        if (!c->t_shutdown) {
            c->t_shutdown = now_ms();
        }
    }
    linger_check(c);
}

/* After EOF from one side, flush to the other and half-close it; close when both are done. */
static void relay_check_done(struct gw_conn *c)
{
    if (c->lingering) {
        return; /* the timer polls */
    }
    if (c->closing_after_write) {
        if (evbuffer_get_length(bufferevent_get_output(c->cbev)) == 0) {
            conn_close(c);
        }
        return;
    }
    if (c->c_eof && c->bbev && evbuffer_get_length(bufferevent_get_output(c->bbev)) == 0) {
        shutdown(bufferevent_getfd(c->bbev), SHUT_WR);
    }
    if (c->b_eof && c->cbev && evbuffer_get_length(bufferevent_get_output(c->cbev)) == 0) {
        if (c->terminate) {
            /* No half-close through TLS: the backend is done, so is the connection. */
            conn_close(c);
            return;
        }
        shutdown(bufferevent_getfd(c->cbev), SHUT_WR);
    }
    if (c->c_eof && c->b_eof) {
        bool flushed =
            (c->bbev == NULL || evbuffer_get_length(bufferevent_get_output(c->bbev)) == 0) &&
            (c->cbev == NULL || evbuffer_get_length(bufferevent_get_output(c->cbev)) == 0);
        if (flushed) {
            conn_close(c);
        }
    }
}

static void bev_event(struct bufferevent *bev, short what, void *arg)
{
    struct gw_conn *c = arg;
    if (what & BEV_EVENT_CONNECTED) {
        /* TLS handshake with the client completed. */
        c->tls_done = true;
        touch(c);
        conn_arm_timer(c);
        return;
    }
    if (what & BEV_EVENT_ERROR) {
        if (bev == c->cbev && c->terminate && !c->tls_done) {
            unsigned long e = bufferevent_get_openssl_error(bev);
            log_debug("proxy: TLS handshake failed for \"%s\": %s", c->hello.sni,
                      e ? ERR_reason_error_string(e) : "connection error");
        }
        conn_free(c);
        return;
    }
    if (what & (BEV_EVENT_EOF | BEV_EVENT_TIMEOUT)) {
        if (bev == c->cbev) {
            c->c_eof = true;
            if (c->bbev == NULL) { /* client left before the backend was there */
                conn_free(c);
                return;
            }
            /* Move whatever is left. */
            bev_read(bev, c);
        } else {
            c->b_eof = true;
            bev_read(bev, c);
        }
        if (!c->t_shutdown) {
            c->t_shutdown = now_ms();
            conn_arm_timer(c);
        }
        relay_check_done(c);
    }
}

/* ---- direct relay (terminate and passthrough) ----------------------------------------------- */

/*
 * Each direction reads a chunk (recv, SSL_read on the client side of a terminated connection,
 * or splice into a pipe) and writes it on at once (send, SSL_write, splice out of the pipe).
 * Only what the peer does not take is kept (`pre`), and only then does the direction wait for
 * EV_WRITE and stop reading (backpressure: at most one chunk per direction in user space, the
 * rest stays in the socket buffers). Otherwise the read events stay armed, so a request and its
 * response cost one read and one write per hop and no epoll_ctl. Passthrough switches to splice
 * after tcp_splice.after_bytes / after_duration, so small exchanges never pay the two extra
 * syscalls per chunk that a pipe costs.
 */

#define GW_RELAY_CHUNK_MAX (64 * 1024)
#define GW_RELAY_ROUNDS    16 /* reads per wakeup before yielding to other connections */

static int relay_pump(struct splice_dir *d);

static bool dir_pending(const struct splice_dir *d)
{
    return d->pre_off < d->pre_len || d->in_pipe > 0;
}

/* Write to d->to (SSL_write on the TLS side). Returns the bytes taken (fewer than len when the
 * peer blocks) or -1 on error. */
static ssize_t dir_write(struct splice_dir *d, const uint8_t *buf, size_t len)
{
    struct gw_conn *c = d->conn;
    size_t off = 0;
    while (off < len) {
        if (d->tls_to) {
            size_t want = len - off > INT_MAX ? INT_MAX : len - off;
            ERR_clear_error();
            int n = SSL_write(c->ssl, buf + off, (int)want);
            if (n > 0) {
                off += (size_t)n;
                continue;
            }
            int e = SSL_get_error(c->ssl, n);
            if (e == SSL_ERROR_WANT_WRITE) {
                break;
            }
            if (e == SSL_ERROR_WANT_READ) {
                c->wr_wants_read = true;
                event_add(c->sd[0].rev, NULL);
                break;
            }
            return -1;
        }
        ssize_t n = send(d->to, buf + off, len - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN) {
                break;
            }
            return -1;
        }
        off += (size_t)n;
    }
    return (ssize_t)off;
}

/* Keep the part of a chunk the peer did not take. */
static int dir_keep(struct splice_dir *d, const uint8_t *buf, size_t len)
{
    uint8_t *nb = malloc(len);
    if (nb == NULL) {
        return -ENOMEM;
    }
    memcpy(nb, buf, len);
    free(d->pre);
    d->pre = nb;
    d->pre_len = len;
    d->pre_off = 0;
    return 0;
}

/* Move what is buffered (pre bytes, then the pipe) to `to`. Returns 1 drained, 0 blocked,
 * -1 error. */
static int splice_flush(struct splice_dir *d)
{
    if (d->pre_off < d->pre_len) {
        ssize_t n = dir_write(d, d->pre + d->pre_off, d->pre_len - d->pre_off);
        if (n < 0) {
            return -1;
        }
        d->pre_off += (size_t)n;
        if (d->pre_off < d->pre_len) {
            return 0;
        }
        free(d->pre);
        d->pre = NULL;
        d->pre_len = d->pre_off = 0;
    }
    while (d->in_pipe > 0) {
        ssize_t n =
            splice(d->pipe[0], NULL, d->to, NULL, d->in_pipe, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n < 0) {
            return (errno == EAGAIN || errno == EINTR) ? 0 : -1;
        }
        if (n == 0) {
            return -1;
        }
        d->in_pipe -= (size_t)n;
    }
    return 1;
}

/* Everything from `from` was delivered after its EOF: pass the EOF on. Returns -1 when the
 * connection was freed (both directions done). */
static int dir_finish(struct gw_conn *c, struct splice_dir *d)
{
    if (d->tls_to) {
        /* No half-close through TLS: the backend is done, so is the connection. What was
         * written sits in the socket buffer and still reaches the client after close(). */
        ERR_clear_error();
        (void)SSL_shutdown(c->ssl); /* close_notify, best effort */
        conn_free(c);
        return -1;
    }
    shutdown(d->to, SHUT_WR);
    d->done = true;
    if (d->rev) {
        event_del(d->rev);
    }
    if (!c->t_shutdown) {
        c->t_shutdown = now_ms();
        conn_arm_timer(c);
    }
    if (c->sd[0].done && c->sd[1].done) {
        conn_free(c);
        return -1;
    }
    return 0;
}

/* Arm the events after a flush. Returns -1 when the connection was freed. */
static int splice_after_flush(struct gw_conn *c, struct splice_dir *d, int fr)
{
    if (fr < 0) {
        conn_free(c);
        return -1;
    }
    if (fr == 0) {
        if (d->rev && !(d->tls_from && !c->tls_done)) { /* the handshake keeps reading */
            event_del(d->rev);
        }
        event_add(d->wev, NULL);
        return 0;
    }
    if (!(d->tls_to && c->rd_wants_write)) { /* the TLS reader may wait on the same event */
        event_del(d->wev);
    }
    if (d->eof) {
        return dir_finish(c, d);
    }
    if (d->rev && c->state == ST_RELAY && !(d == &c->sd[1] && c->ssl && !c->tls_done)) {
        event_add(d->rev, NULL);
    }
    return 0;
}

static bool splice_due(struct gw_conn *c)
{
    const struct gw_proxy_config *cfg = &c->p->cfg;
    if (c->ssl != NULL || !cfg->splice || c->splice_failed) {
        return false;
    }
    if (cfg->splice_after_bytes == 0 && cfg->splice_after_ms == 0) {
        return true;
    }
    if (cfg->splice_after_bytes > 0 && c->relayed >= cfg->splice_after_bytes) {
        return true;
    }
    return cfg->splice_after_ms > 0 && now_ms() - c->t_accept >= cfg->splice_after_ms;
}

static void dir_open_pipe(struct gw_conn *c, struct splice_dir *d)
{
    if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) < 0) {
        d->pipe[0] = d->pipe[1] = -1;
        c->splice_failed = true; /* no pipes (fd limit): stay buffered */
        return;
    }
    c->spliced = true;
}

/* Read what `from` has and pass it on. Returns -1 when the connection was freed. */
static int relay_pump(struct splice_dir *d)
{
    struct gw_conn *c = d->conn;
    struct gw_proxy *p = c->p;
    uint8_t buf[GW_RELAY_CHUNK_MAX];
    size_t chunk = p->cfg.buffer_size < sizeof(buf) ? p->cfg.buffer_size : sizeof(buf);
    for (int round = 0; round < GW_RELAY_ROUNDS; round++) {
        if (d->eof || d->done) {
            return 0;
        }
        if (dir_pending(d)) {
            return splice_after_flush(c, d, 0);
        }
        /* Splice only bulk: once due, a read that filled the chunk moves the direction to the
         * pipe, a short splice moves it back (the pipe is empty whenever we read, so the byte
         * order holds). Request/response traffic thus never pays the pipe's extra syscalls. */
        if (!d->piped && d->bulk && splice_due(c)) {
            if (d->pipe[0] < 0) {
                dir_open_pipe(c, d);
            }
            d->piped = d->pipe[0] >= 0;
        }
        ssize_t n;
        bool piped = d->piped;
        if (piped) {
            n = splice(d->from, NULL, d->pipe[1], NULL, GW_SPLICE_CHUNK,
                       SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return 0;
                }
                conn_free(c);
                return -1;
            }
            d->piped = (size_t)n >= GW_SPLICE_SMALL;
            d->in_pipe += (size_t)n;
            ST_ADD(p, spliced_bytes, (uint64_t)n);
        } else if (d->tls_from) {
            ERR_clear_error();
            errno = 0;
            int r = SSL_read(c->ssl, buf, (int)chunk);
            if (r > 0) {
                n = r;
            } else {
                int e = SSL_get_error(c->ssl, r);
                if (e == SSL_ERROR_WANT_READ) {
                    return 0;
                }
                if (e == SSL_ERROR_WANT_WRITE) {
                    c->rd_wants_write = true;
                    event_add(c->sd[1].wev, NULL);
                    return 0;
                }
                if (e != SSL_ERROR_ZERO_RETURN && !(e == SSL_ERROR_SYSCALL && errno == 0)) {
                    conn_free(c);
                    return -1;
                }
                n = 0; /* close_notify, or EOF without it (allowed, as browsers do) */
            }
        } else {
            n = recv(d->from, buf, chunk, 0);
            if (n < 0) {
                if (errno == EAGAIN || errno == EINTR) {
                    return 0;
                }
                conn_free(c);
                return -1;
            }
            d->bulk = (size_t)n == chunk;
        }
        if (n == 0) {
            d->eof = true;
        } else {
            touch(c);
            if (!piped) {
                c->relayed += (uint64_t)n;
                ssize_t w = dir_write(d, buf, (size_t)n);
                if (w < 0 ||
                    ((size_t)w < (size_t)n && dir_keep(d, buf + w, (size_t)n - (size_t)w) < 0)) {
                    conn_free(c);
                    return -1;
                }
            }
        }
        int fr = splice_flush(d);
        if (splice_after_flush(c, d, fr) < 0) {
            return -1;
        }
        if (fr == 0 || d->eof) {
            return 0;
        }
        /* Level-triggered: a short read means the socket is empty; only OpenSSL's own buffer
         * is invisible to epoll. */
        if (d->tls_from ? !SSL_has_pending(c->ssl)
                        : (size_t)n < (piped ? (size_t)GW_SPLICE_CHUNK : chunk)) {
            return 0;
        }
    }
    if (d->tls_from && SSL_has_pending(c->ssl)) {
        event_active(d->rev, EV_READ, 1); /* yield, then come back for the buffered records */
    }
    return 0;
}

/* Returns 1 done, 0 in progress, -1 failed (connection freed). */
static int tls_handshake(struct gw_conn *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        c->tls_done = true;
        touch(c);
        conn_arm_timer(c);
        if (c->state == ST_RELAY) {
            event_add(c->sd[1].rev, NULL); /* backend -> client may flow now */
        }
        return 1;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ) {
        return 0;
    }
    if (e == SSL_ERROR_WANT_WRITE) {
        c->rd_wants_write = true;
        event_add(c->sd[1].wev, NULL);
        return 0;
    }
    unsigned long err = ERR_peek_error();
    log_debug("proxy: TLS handshake failed for \"%s\": %s", c->hello.sni,
              err ? ERR_reason_error_string(err) : "connection error");
    conn_free(c);
    return -1;
}

static void relay_on_read(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct splice_dir *d = arg;
    struct gw_conn *c = d->conn;
    if (d->tls_from) {
        if (c->wr_wants_read) {
            c->wr_wants_read = false;
            if (splice_after_flush(c, &c->sd[1], splice_flush(&c->sd[1])) < 0) {
                return;
            }
        }
        if (!c->tls_done && tls_handshake(c) <= 0) {
            return;
        }
        if (c->state != ST_RELAY) {
            event_del(d->rev); /* plaintext waits until the backend is connected */
            return;
        }
    }
    (void)relay_pump(d);
}

static void relay_on_write(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct splice_dir *d = arg;
    struct gw_conn *c = d->conn;
    touch(c);
    if (d->tls_to && c->rd_wants_write) {
        /* The TLS reader (handshake or SSL_read) needs the socket writable. */
        c->rd_wants_write = false;
        int hr = c->tls_done ? 1 : tls_handshake(c);
        if (hr < 0) {
            return;
        }
        if (hr > 0 && c->state == ST_RELAY && relay_pump(&c->sd[0]) < 0) {
            return;
        }
    }
    if (c->state != ST_RELAY) {
        if (!c->rd_wants_write) {
            event_del(d->wev);
        }
        return;
    }
    (void)splice_after_flush(c, d, splice_flush(d));
}

/* OpenSSL reads the buffered ClientHello first, then the socket (flags MSG_NOSIGNAL on write). */
static BIO_METHOD *conn_bio_method;
static pthread_once_t conn_bio_once = PTHREAD_ONCE_INIT;

static int conn_bio_read(BIO *b, char *buf, int len)
{
    struct gw_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0) {
        return 0;
    }
    if (c->in != NULL && c->in_off < c->in_len) {
        size_t n = c->in_len - c->in_off < (size_t)len ? c->in_len - c->in_off : (size_t)len;
        memcpy(buf, c->in + c->in_off, n);
        c->in_off += n;
        if (c->in_off == c->in_len) {
            free(c->in);
            c->in = NULL;
        }
        return (int)n;
    }
    ssize_t n = recv(c->cfd, buf, (size_t)len, 0);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            BIO_set_retry_read(b);
        }
        return -1;
    }
    return (int)n;
}

static int conn_bio_write(BIO *b, const char *buf, int len)
{
    struct gw_conn *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    ssize_t n = send(c->cfd, buf, (size_t)len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EINTR) {
            BIO_set_retry_write(b);
        }
        return -1;
    }
    return (int)n;
}

static long conn_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void conn_bio_init(void)
{
    conn_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "gw_conn");
    if (conn_bio_method != NULL) {
        BIO_meth_set_read(conn_bio_method, conn_bio_read);
        BIO_meth_set_write(conn_bio_method, conn_bio_write);
        BIO_meth_set_ctrl(conn_bio_method, conn_bio_ctrl);
    }
}

/*
 * TLS termination for a relayed connection: OpenSSL directly on the client socket (no
 * bufferevent layers), started while the backends connect. Read-ahead takes every record the
 * socket has in one recv; the buffers are kept (no SSL_MODE_RELEASE_BUFFERS: a malloc/free per
 * record costs more than the 34 KiB per connection).
 */
static int start_tls_relay(struct gw_conn *c)
{
    bool h2 = c->target.mode == DS_GW_MODE_H2;
    if (pthread_once(&conn_bio_once, conn_bio_init) != 0 || conn_bio_method == NULL) {
        return -ENOMEM;
    }
    SSL_CTX *ctx = gw_certs_get_ctx(c->p->certs, c->base, h2);
    if (ctx == NULL) {
        return -DS_E_NOT_FOUND;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (ssl == NULL) {
        return -ENOMEM;
    }
    BIO *bio = BIO_new(conn_bio_method);
    if (bio == NULL) {
        SSL_free(ssl);
        return -ENOMEM;
    }
    BIO_set_data(bio, c);
    BIO_set_init(bio, 1);
    SSL_set_bio(ssl, bio, bio);
    SSL_set_accept_state(ssl);
    SSL_set_mode(ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_clear_mode(ssl, SSL_MODE_RELEASE_BUFFERS);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
    SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
    SSL_set_read_ahead(ssl, 1);
    c->ssl = ssl;
    c->in_off = c->pp_len; /* the ClientHello (and anything after it) goes to OpenSSL first */
    struct splice_dir *up = &c->sd[0], *down = &c->sd[1];
    up->conn = down->conn = c;
    up->from = down->to = c->cfd;
    up->tls_from = down->tls_to = true;
    up->rev = event_new(c->p->base, c->cfd, EV_READ | EV_PERSIST, relay_on_read, up);
    down->wev = event_new(c->p->base, c->cfd, EV_WRITE | EV_PERSIST, relay_on_write, down);
    if (up->rev == NULL || down->wev == NULL || event_add(up->rev, NULL) < 0) {
        return -ENOMEM; /* conn_free releases what was made */
    }
    event_active(up->rev, EV_READ, 1); /* the ClientHello is here already */
    return 0;
}

/* Both directions once the backend is connected; `pre` (owned from now on) goes first. */
static int relay_setup(struct gw_conn *c, uint8_t *pre, size_t pre_len)
{
    struct event_base *base = c->p->base;
    struct splice_dir *up = &c->sd[0], *down = &c->sd[1];
    up->pre = pre;
    up->pre_len = pre_len;
    up->conn = down->conn = c;
    up->from = down->to = c->cfd;
    up->to = down->from = c->bfd;
    if (up->rev == NULL) {
        up->rev = event_new(base, c->cfd, EV_READ | EV_PERSIST, relay_on_read, up);
    }
    if (down->wev == NULL) {
        down->wev = event_new(base, c->cfd, EV_WRITE | EV_PERSIST, relay_on_write, down);
    }
    up->wev = event_new(base, c->bfd, EV_WRITE | EV_PERSIST, relay_on_write, up);
    down->rev = event_new(base, c->bfd, EV_READ | EV_PERSIST, relay_on_read, down);
    if (up->rev == NULL || up->wev == NULL || down->rev == NULL || down->wev == NULL) {
        return -ENOMEM;
    }
    if (c->ssl == NULL || c->tls_done) {
        event_add(down->rev, NULL);
    }
    int fr = splice_flush(up);
    if (fr < 0) {
        return -EPIPE;
    }
    if (fr == 0) {
        if (c->ssl == NULL || c->tls_done) { /* the handshake keeps reading */
            event_del(up->rev);
        }
        event_add(up->wev, NULL);
        return 0;
    }
    event_add(up->rev, NULL);
    if (c->ssl != NULL && c->tls_done) {
        event_active(up->rev, EV_READ, 1); /* records OpenSSL read ahead while connecting */
    }
    return 0;
}

/* ---- special ids (health, gateway) ---------------------------------------------------------- */

static void special_read(struct bufferevent *bev, void *arg)
{
    struct gw_conn *c = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > GW_SPECIAL_REQ_MAX) {
            conn_free(c);
        }
        return;
    }
    char line[256] = {0};
    size_t n =
        evbuffer_get_length(in) < sizeof(line) - 1 ? evbuffer_get_length(in) : sizeof(line) - 1;
    evbuffer_copyout(in, line, n);
    char *eol = strstr(line, "\r\n");
    if (eol) {
        *eol = '\0';
    }
    evbuffer_drain(in, evbuffer_get_length(in));
    int status = 404;
    const char *body = "Not Found\n";
    const char *ctype = "text/plain";
    struct ds_buf hook_body = {0};
    bool get = strncmp(line, "GET ", 4) == 0;
    const char *path = get ? line + 4 : "";
    if (c->target.special == DS_GW_SPECIAL_HEALTH) {
        if (get && strncmp(path, "/ ", 2) == 0) {
            status = 200;
            body = "OK\n";
        }
    } else if (get && strncmp(path, "/health ", 8) == 0) {
        status = 200;
        body = "OK\n";
    } else if (get &&
               (strncmp(path, "/index ", 7) == 0 || strncmp(path, "/.dstack/index ", 15) == 0)) {
        status = 200;
        ctype = "application/json";
        body = "{\"type\":\"dstack gateway\",\"paths\":[\"/health\",\"/index\",\"/app-info\","
               "\"/acme-info\"]}\n";
    } else if (get && path[0] == '/' && c->p->cfg.special) {
        /* control-plane answers (/app-info, /acme-info) through the hook */
        char *sp = strchr(path, ' ');
        if (sp) {
            *sp = '\0';
        }
        ds_buf_init(&hook_body, GW_SPECIAL_BODY_MAX);
        status = c->p->cfg.special(path, &hook_body, &ctype, c->p->cfg.special_arg);
        body = hook_body.data ? (const char *)hook_body.data : "";
    }
    evbuffer_add_printf(bufferevent_get_output(bev),
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n%s",
                        status,
                        status == 200   ? "OK"
                        : status == 404 ? "Not Found"
                                        : "Service Unavailable",
                        ctype, strlen(body), body);
    ds_buf_done(&hook_body);
    c->closing_after_write = true;
    bufferevent_disable(bev, EV_READ);
}

static void special_write(struct bufferevent *bev, void *arg)
{
    (void)bev;
    relay_check_done(arg);
}

/* ---- TLS termination ------------------------------------------------------------------------ */

static int start_tls(struct gw_conn *c)
{
    bool h2 = c->target.mode == DS_GW_MODE_H2;
    SSL_CTX *ctx = gw_certs_get_ctx(c->p->certs, c->base, h2);
    if (ctx == NULL) {
        return -DS_E_NOT_FOUND;
    }
    SSL *ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (ssl == NULL) {
        return -ENOMEM;
    }
    struct bufferevent *under = bufferevent_socket_new(c->p->base, c->cfd, BEV_OPT_CLOSE_ON_FREE);
    if (under == NULL) {
        SSL_free(ssl);
        return -ENOMEM;
    }
    c->cfd = -1; /* owned by `under` now */
    /* The ClientHello (and anything after it) was read already: give it back to OpenSSL. */
    /* (A socket bufferevent freezes the end of its input buffer; open it for this one add.) */
    struct evbuffer *uin = bufferevent_get_input(under);
    evbuffer_unfreeze(uin, 0);
    int arc = evbuffer_add(uin, c->in + c->pp_len, c->in_len - c->pp_len);
    evbuffer_freeze(uin, 0);
    if (arc < 0) {
        bufferevent_free(under);
        SSL_free(ssl);
        return -ENOMEM;
    }
    struct bufferevent *tls = bufferevent_openssl_filter_new(
        c->p->base, under, ssl, BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
    if (tls == NULL) {
        bufferevent_free(under);
        SSL_free(ssl);
        return -ENOMEM;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(tls, 1);
    /* Backpressure through TLS: the filter stops encrypting into the socket bufferevent above
     * this many bytes, so its own output (which bev_read watches) fills up instead. */
    bufferevent_setwatermark(under, EV_WRITE, 0, c->p->cfg.buffer_size);
    c->cbev = tls;
    if (c->state == ST_SPECIAL) {
        bufferevent_setcb(tls, special_read, special_write, bev_event, c);
    } else {
        bufferevent_setcb(tls, bev_read, bev_write, bev_event, c);
    }
    bufferevent_enable(tls, EV_READ | EV_WRITE);
    /* Data already sits in the underlying input: run the handshake on it now. */
    bufferevent_trigger(under, EV_READ, BEV_TRIG_IGNORE_WATERMARKS);
    return 0;
}

/* ---- backend connect ------------------------------------------------------------------------ */

static int start_relay(struct gw_conn *c)
{
    struct ds_buf pre;
    ds_buf_init(&pre, GW_CONN_INBUF_MAX + DS_PP_V2_MAX);
    uint8_t *data = NULL;
    size_t len = 0;
    int rc = 0;
    if (c->pp) {
        rc = gw_pp_backend_header(&pre, &c->peer, &c->local);
        if (rc < 0) {
            goto out;
        }
    }
    c->state = ST_RELAY;
    touch(c);
    if (c->terminate) {
        ST_ADD(c->p, terminated, 1);
    } else {
        rc = ds_buf_append(&pre, c->in + c->pp_len, c->in_len - c->pp_len);
        if (rc < 0) {
            goto out;
        }
        ST_ADD(c->p, passthrough, 1);
        free(c->in); /* copied into pre */
        c->in = NULL;
    }
    if (pre.len > 0) {
        ds_buf_steal(&pre, &data, &len);
    }
    rc = relay_setup(c, data, len);
out:
    ds_buf_done(&pre);
    if (rc >= 0) {
        conn_arm_timer(c);
    }
    return rc;
}

static void on_connected(evutil_socket_t fd, short what, void *arg);

static int backend_addr(const struct gw_proxy *p, const char *ip, uint16_t port,
                        struct sockaddr_storage *ss, socklen_t *len)
{
    const char *host = p->backend_override ? p->backend_override : ip;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        *len = sizeof(*s4);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        *len = sizeof(*s6);
        return 0;
    }
    return -EINVAL;
}

static void connect_backends(struct gw_conn *c, const struct gw_backend *be, size_t n)
{
    c->state = ST_CONNECT;
    c->t_connect = now_ms();
    for (size_t i = 0; i < n && c->npend < GW_CANDIDATES_MAX; i++) {
        struct sockaddr_storage ss;
        socklen_t sl;
        if (backend_addr(c->p, be[i].ip, c->target.port, &ss, &sl) < 0) {
            continue;
        }
        int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS) {
            close(fd);
            continue;
        }
        struct pending_connect *pc = &c->pend[c->npend];
        pc->fd = fd;
        pc->be = be[i];
        pc->ev = event_new(c->p->base, fd, EV_WRITE, on_connected, c);
        if (pc->ev == NULL || event_add(pc->ev, NULL) < 0) {
            if (pc->ev) {
                event_free(pc->ev);
            }
            close(fd);
            continue;
        }
        c->npend++;
    }
    if (c->npend == 0) {
        refuse(c, &c->p->st.backend_fail, "no backend could be tried");
        return;
    }
    conn_arm_timer(c);
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct gw_conn *c = arg;
    int err = 0;
    socklen_t el = sizeof(err);
    size_t i;
    for (i = 0; i < c->npend && c->pend[i].fd != fd; i++) {
    }
    if (i == c->npend) {
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0) {
        err = errno;
    }
    if (err != 0) {
        /* This candidate failed; the others may still win. */
        event_free(c->pend[i].ev);
        close(c->pend[i].fd);
        c->pend[i] = c->pend[--c->npend];
        if (c->npend == 0) {
            refuse(c, &c->p->st.backend_fail, "every backend refused the connection");
        }
        return;
    }
    /* First success wins: keep it, close the rest. */
    c->bfd = fd;
    event_free(c->pend[i].ev);
    c->pend[i].ev = NULL;
    c->pend[i].fd = -1;
    /* The connection was counted on the first candidate (route_to_app): move it. */
    gw_routes_conn_move(c->p->routes, c->instance_id, c->pend[i].be.instance_id);
    snprintf(c->instance_id, sizeof(c->instance_id), "%s", c->pend[i].be.instance_id);
    c->pp = c->p->cfg.outbound_pp || c->pend[i].be.pp;
    cancel_pending(c);
    if (start_relay(c) < 0) {
        conn_free(c);
    }
}

/* ---- routing -------------------------------------------------------------------------------- */

static void route_to_app(struct gw_conn *c)
{
    struct gw_proxy *p = c->p;
    struct gw_backend be[GW_CANDIDATES_MAX];
    int n;
    if (p->cfg.insecure_localhost_backend && strcmp(c->target.id, "localhost") == 0) {
        memset(&be[0], 0, sizeof(be[0]));
        strcpy(be[0].ip, "127.0.0.1");
        strcpy(be[0].instance_id, "localhost");
        n = 1;
    } else {
        unsigned top =
            p->cfg.connect_top_n < GW_CANDIDATES_MAX ? p->cfg.connect_top_n : GW_CANDIDATES_MAX;
        struct gw_routes_denial deny;
        n = gw_routes_lookup_port(p->routes, c->target.id, c->target.port, (int64_t)time(NULL),
                                  (int64_t)p->cfg.timeouts.stale_handshake_s, top, be,
                                  GW_CANDIDATES_MAX, &deny);
        if (n == 0 && deny.denied > 0) {
            log_info("proxy: port policy refused app/instance %s port %u (instance %s%s)",
                     c->target.id, (unsigned)c->target.port, deny.instance_id,
                     deny.unknown ? ", policy unknown: fetching it" : "");
            refuse(c, &p->st.refused_port_policy, "port policy");
            return;
        }
    }
    if (n <= 0) {
        refuse(c, &p->st.refused_unknown_app, "unknown app or no healthy instance");
        return;
    }
    /* Check and count in one step under the routing table's lock: exact across workers. */
    if (gw_routes_conn_reserve(p->routes, be, (size_t)n, p->cfg.max_connections_per_app) < 0) {
        refuse(c, &p->st.refused_limit, "max_connections_per_app reached");
        return;
    }
    snprintf(c->instance_id, sizeof(c->instance_id), "%s", be[0].instance_id);
    c->counted = true;
    if (c->terminate) {
        int trc = start_tls_relay(c);
        if (trc < 0) {
            log_debug("proxy: TLS setup: %s", ds_strerror(trc));
            refuse(c, NULL, "TLS setup failed");
            return;
        }
    }
    connect_backends(c, be, (size_t)n);
}

static void on_dns(int rc, const char *app_id, uint16_t port, void *arg)
{
    struct gw_conn *c = arg;
    c->dns = NULL;
    gw_dns_cache_put(c->p->dns_cache, c->hello.sni, rc, app_id, port, now_ms());
    if (rc < 0) {
        refuse(c, &c->p->st.refused_unknown_app, "no app address record for the custom domain");
        return;
    }
    memset(&c->target, 0, sizeof(c->target));
    snprintf(c->target.id, sizeof(c->target.id), "%s", app_id);
    c->target.port = port;
    c->target.port_given = true;
    c->target.mode = DS_GW_MODE_PASSTHROUGH;
    c->terminate = false;
    route_to_app(c);
}

static void route(struct gw_conn *c)
{
    struct gw_proxy *p = c->p;
    size_t sub_len;
    const char *base;
    if (!c->hello.has_sni) {
        refuse(c, &p->st.refused_no_sni, "no SNI");
        return;
    }
    event_free(c->rev); /* stop reading: the rest belongs to TLS / the backend */
    c->rev = NULL;
    if (ds_gw_sni_split(c->hello.sni, &sub_len, &base) == 0 && gw_certs_has(p->certs, base)) {
        snprintf(c->base, sizeof(c->base), "%s", base);
        if (ds_gw_sni_parse_sub(c->hello.sni, sub_len, &c->target) < 0) {
            refuse(c, &p->st.refused_bad_sni, "malformed SNI");
            return;
        }
        c->terminate = c->target.mode != DS_GW_MODE_PASSTHROUGH;
        if (c->target.special != DS_GW_SPECIAL_NONE) {
            c->state = ST_SPECIAL;
            c->terminate = true;
            touch(c);
            int trc = start_tls(c);
            if (trc < 0) {
                log_debug("proxy: TLS setup: %s", ds_strerror(trc));
                refuse(c, NULL, "TLS setup failed");
                return;
            }
            free(c->in);
            c->in = NULL;
            conn_arm_timer(c);
            return;
        }
        route_to_app(c);
        return;
    }
    /* Custom domain: TXT lookup, then passthrough. */
    if (p->cfg.app_address_ns_prefix == NULL || p->cfg.app_address_ns_prefix[0] == '\0') {
        refuse(c, &p->st.refused_unknown_app, "no certificate for the SNI's domain");
        return;
    }
    char app_id[DS_GW_ID_MAX + 1];
    uint16_t port;
    int hit = gw_dns_cache_get(p->dns_cache, c->hello.sni, now_ms(), app_id, &port);
    if (hit < 0) {
        refuse(c, &p->st.refused_unknown_app, "no app address record (cached)");
        return;
    }
    c->state = ST_RESOLVE;
    c->t_connect = now_ms();
    if (hit > 0) {
        c->dns = NULL;
        memset(&c->target, 0, sizeof(c->target));
        snprintf(c->target.id, sizeof(c->target.id), "%s", app_id);
        c->target.port = port;
        c->target.port_given = true;
        c->target.mode = DS_GW_MODE_PASSTHROUGH;
        c->terminate = false;
        route_to_app(c);
        return;
    }
    int rc = gw_dns_lookup_start(p->base, c->hello.sni, p->cfg.app_address_ns_prefix,
                                 p->cfg.app_address_ns_compat, on_dns, c, &c->dns);
    if (rc < 0) {
        refuse(c, &p->st.refused_unknown_app, "DNS lookup could not start");
        return;
    }
    conn_arm_timer(c);
}

/* ---- accept and the ClientHello ------------------------------------------------------------- */

static void on_client_read(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct gw_conn *c = arg;
    if (c->in_len >= GW_CONN_INBUF_MAX) {
        refuse(c, &c->p->st.refused_bad_sni, "ClientHello too large");
        return;
    }
    ssize_t n = recv(fd, c->in + c->in_len, GW_CONN_INBUF_MAX - c->in_len, 0);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
        conn_free(c); /* client gone */
        return;
    }
    if (n < 0) {
        return;
    }
    c->in_len += (size_t)n;
    if (c->state == ST_PP) {
        struct ds_pp_info info;
        int rc = ds_pp_parse(c->in, c->in_len, &info);
        if (rc == 0) {
            return;
        }
        if (rc < 0) {
            refuse(c, &c->p->st.refused_bad_sni, "bad PROXY header");
            return;
        }
        c->pp_len = info.header_size;
        if (!info.local) {
            c->peer = info.src;
            c->local = info.dst;
        }
        c->state = ST_HELLO;
        conn_arm_timer(c);
    }
    int rc = ds_gw_clienthello_parse(c->in + c->pp_len, c->in_len - c->pp_len, &c->hello);
    if (rc == DS_GW_HELLO_NEED_MORE) {
        return;
    }
    if (rc < 0) {
        refuse(c, &c->p->st.refused_bad_sni, "not a TLS ClientHello");
        return;
    }
    route(c);
}

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int salen,
                      void *arg)
{
    (void)l;
    struct gw_proxy *p = arg;
    ST_ADD(p, accepted, 1);
    /* Global cap over all workers: count first, back out when over. */
    uint64_t total = __atomic_add_fetch(&p->root->total_active, 1, __ATOMIC_RELAXED);
    if (p->stopping || (p->cfg.max_connections && total > p->cfg.max_connections)) {
        __atomic_fetch_sub(&p->root->total_active, 1, __ATOMIC_RELAXED);
        close(fd);
        return;
    }
    struct gw_conn *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        __atomic_fetch_sub(&p->root->total_active, 1, __ATOMIC_RELAXED);
        close(fd);
        return;
    }
    c->p = p;
    c->cfd = fd;
    c->bfd = -1;
    c->sd[0].pipe[0] = c->sd[0].pipe[1] = c->sd[1].pipe[0] = c->sd[1].pipe[1] = -1;
    memcpy(&c->peer, sa, (size_t)salen < sizeof(c->peer) ? (size_t)salen : sizeof(c->peer));
    socklen_t ll = sizeof(c->local);
    getsockname(fd, (struct sockaddr *)&c->local, &ll);
    c->t_accept = c->t_activity = now_ms();
    c->state = p->cfg.inbound_pp ? ST_PP : ST_HELLO;
    c->next = p->conns;
    if (p->conns) {
        p->conns->prev = c;
    }
    p->conns = c;
    ST_ADD(p, active, 1);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->in = malloc(GW_CONN_INBUF_MAX);
    c->rev = event_new(p->base, fd, EV_READ | EV_PERSIST, on_client_read, c);
    c->timer = evtimer_new(p->base, on_timer, c);
    if (c->in == NULL || c->rev == NULL || c->timer == NULL || event_add(c->rev, NULL) < 0) {
        conn_free(c);
        return;
    }
    conn_arm_timer(c);
}

/* ---- listeners and lifecycle ---------------------------------------------------------------- */

/* "host:port", "[v6]:port", port "a-b". */
static int parse_listen(const char *s, char *host, size_t host_size, unsigned *lo, unsigned *hi)
{
    const char *colon;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (rb == NULL || rb[1] != ':' || (size_t)(rb - s - 1) >= host_size) {
            return -EINVAL;
        }
        memcpy(host, s + 1, (size_t)(rb - s - 1));
        host[rb - s - 1] = '\0';
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (colon == NULL || (size_t)(colon - s) >= host_size) {
            return -EINVAL;
        }
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
    }
    char *end;
    unsigned long a = strtoul(colon + 1, &end, 10), b = a;
    if (end == colon + 1) {
        return -EINVAL;
    }
    if (*end == '-') {
        char *e2;
        b = strtoul(end + 1, &e2, 10);
        if (e2 == end + 1 || *e2 != '\0') {
            return -EINVAL;
        }
    } else if (*end != '\0') {
        return -EINVAL;
    }
    if (a > 65535 || b > 65535 || b < a || b - a >= GW_LISTEN_MAX * 4) {
        return -EINVAL;
    }
    *lo = (unsigned)a;
    *hi = (unsigned)b;
    return 0;
}

static int bind_listener(struct gw_proxy *p, const struct sockaddr_storage *ss, socklen_t sl)
{
    if (p->nls >= DS_ARRAY_SIZE(p->ls)) {
        return -DS_E_LIMIT;
    }
    unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC;
    if (p->cfg.workers > 1) {
        flags |= LEV_OPT_REUSEABLE_PORT; /* one listener per worker, the kernel spreads */
    }
    struct evconnlistener *l = evconnlistener_new_bind(
        p->base, on_accept, p, flags, GW_LISTEN_BACKLOG, (const struct sockaddr *)ss, (int)sl);
    if (l == NULL) {
        return errno ? -errno : -EADDRINUSE;
    }
    struct sockaddr_storage bound;
    socklen_t bl = sizeof(bound);
    getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&bound, &bl);
    p->ports[p->nls] =
        ntohs(bound.ss_family == AF_INET ? ((struct sockaddr_in *)&bound)->sin_port
                                         : ((struct sockaddr_in6 *)&bound)->sin6_port);
    /* Port 0: the other workers bind the port the kernel picked for worker 0. */
    p->ls_addr[p->nls] = bound;
    p->ls_addr_len[p->nls] = bl;
    p->ls[p->nls++] = l;
    return 0;
}

static int add_listener(struct gw_proxy *p, const char *host, unsigned port)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
        s4->sin_family = AF_INET;
        s4->sin_port = htons((uint16_t)port);
        sl = sizeof(*s4);
    } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        sl = sizeof(*s6);
    } else {
        return -EINVAL;
    }
    return bind_listener(p, &ss, sl);
}

/* ---- workers -------------------------------------------------------------------------------- */

/* Stop accepting; live connections get shutdown_ms to finish. On the worker's thread. */
static void worker_shutdown(struct gw_proxy *p)
{
    if (p->stopping) {
        return;
    }
    p->stopping = true;
    for (size_t i = 0; i < p->nls; i++) {
        evconnlistener_free(p->ls[i]);
        p->ls[i] = NULL;
    }
    uint64_t now = now_ms();
    for (struct gw_conn *c = p->conns; c; c = c->next) {
        if (!c->t_shutdown) {
            c->t_shutdown = now;
        }
        if (c->state != ST_RELAY && c->state != ST_SPECIAL) {
            c->t_accept = now - c->p->cfg.timeouts.handshake_ms; /* handshakes end now */
        }
        conn_arm_timer(c);
    }
}

static void on_ctl(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_proxy *w = arg;
    unsigned req = __atomic_exchange_n(&w->ctl, 0u, __ATOMIC_ACQ_REL);
    if (req & (GW_CTL_SHUTDOWN | GW_CTL_EXIT)) {
        worker_shutdown(w);
    }
    if (req & GW_CTL_EXIT) {
        while (w->conns) {
            conn_free(w->conns);
        }
        event_base_loopbreak(w->base);
    }
}

static void worker_request(struct gw_proxy *w, unsigned req)
{
    __atomic_fetch_or(&w->ctl, req, __ATOMIC_ACQ_REL);
    event_active(w->ev_ctl, EV_READ, 0); /* thread-safe: the worker base has locking on */
}

static void *worker_main(void *arg)
{
    struct gw_proxy *w = arg;
    event_base_loop(w->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* Free a worker other than the root after its thread ended (or never started). */
static void worker_free(struct gw_proxy *w)
{
    if (w == NULL) {
        return;
    }
    for (size_t i = 0; i < w->nls; i++) {
        if (w->ls[i]) {
            evconnlistener_free(w->ls[i]);
        }
    }
    while (w->conns) {
        conn_free(w->conns);
    }
    if (w->ev_ctl) {
        event_free(w->ev_ctl);
    }
    gw_dns_cache_free(w->dns_cache);
    if (w->base) {
        event_base_free(w->base);
    }
    free(w);
}

/* Worker i > 0: a copy of the root's config on a new base, listening on the root's addresses. */
static int worker_new(struct gw_proxy *root, struct gw_proxy **out)
{
    struct gw_proxy *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        return -ENOMEM;
    }
    int rc = -ENOMEM;
    w->root = root;
    w->cfg = root->cfg;
    w->routes = root->routes;
    w->certs = root->certs;
    w->base = event_base_new();
    if (w->base == NULL || gw_dns_cache_new(&w->dns_cache) < 0) {
        goto fail;
    }
    w->ev_ctl = event_new(w->base, -1, 0, on_ctl, w);
    if (w->ev_ctl == NULL) {
        goto fail;
    }
    for (size_t i = 0; i < root->nls; i++) {
        rc = bind_listener(w, &root->ls_addr[i], root->ls_addr_len[i]);
        if (rc < 0) {
            goto fail;
        }
    }
    *out = w;
    return 0;
fail:
    worker_free(w);
    return rc;
}

/* Start workers 1..n-1; signals stay with the caller's thread. */
static int workers_start(struct gw_proxy *root, unsigned n)
{
    if (evthread_use_pthreads() < 0) {
        return -ENOSYS;
    }
    root->workers = calloc(n, sizeof(*root->workers));
    if (root->workers == NULL) {
        return -ENOMEM;
    }
    root->workers[0] = root;
    root->nworkers = 1;
    sigset_t all, old;
    sigfillset(&all);
    int rc = 0;
    for (unsigned i = 1; i < n; i++) {
        struct gw_proxy *w = NULL;
        rc = worker_new(root, &w);
        if (rc < 0) {
            break;
        }
        root->workers[root->nworkers++] = w;
        pthread_sigmask(SIG_BLOCK, &all, &old);
        int prc = pthread_create(&w->thread, NULL, worker_main, w);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (prc != 0) {
            rc = -prc;
            break;
        }
        w->thread_started = true;
    }
    return rc;
}

static void workers_stop(struct gw_proxy *root)
{
    if (root->workers == NULL) {
        return;
    }
    for (size_t i = 1; i < root->nworkers; i++) {
        struct gw_proxy *w = root->workers[i];
        if (w->thread_started) {
            worker_request(w, GW_CTL_EXIT);
            pthread_join(w->thread, NULL);
        }
        worker_free(w);
    }
    free(root->workers);
    root->workers = NULL;
    root->nworkers = 0;
}

int gw_proxy_new(struct event_base *base, const struct gw_proxy_config *cfg,
                 struct gw_routes *routes, struct gw_certs *certs, struct gw_proxy **out)
{
    if (base == NULL || cfg == NULL || routes == NULL || certs == NULL || cfg->listen_count == 0 ||
        cfg->listen_count > GW_LISTEN_MAX || cfg->workers > GW_WORKERS_MAX) {
        return -EINVAL;
    }
    int rc = -ENOMEM;
    struct gw_proxy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    p->base = base;
    p->cfg = *cfg;
    p->root = p;
    p->nworkers = cfg->workers > 1 ? cfg->workers : 1; /* decides SO_REUSEPORT below */
    if (gw_dns_cache_new(&p->dns_cache) < 0) {
        free(p);
        return -ENOMEM;
    }
    p->routes = routes;
    p->certs = certs;
    if (p->cfg.buffer_size == 0) {
        p->cfg.buffer_size = 65536;
    }
    if (cfg->app_address_ns_prefix && (p->ns_prefix = strdup(cfg->app_address_ns_prefix)) == NULL) {
        goto fail;
    }
    p->cfg.app_address_ns_prefix = p->ns_prefix;
    if (cfg->insecure_backend_override &&
        (p->backend_override = strdup(cfg->insecure_backend_override)) == NULL) {
        goto fail;
    }
    p->cfg.insecure_backend_override = p->backend_override;
    for (size_t i = 0; i < GW_LISTEN_MAX; i++) {
        p->cfg.listen[i] = NULL; /* borrowed only during this call */
    }
    gw_certs_set_versions(certs, cfg->tls_versions);
    for (size_t i = 0; i < cfg->listen_count; i++) {
        char host[INET6_ADDRSTRLEN];
        unsigned lo, hi;
        rc = parse_listen(cfg->listen[i], host, sizeof(host), &lo, &hi);
        if (rc < 0) {
            goto fail;
        }
        for (unsigned port = lo; port <= hi; port++) {
            rc = add_listener(p, host, port);
            if (rc < 0) {
                goto fail;
            }
        }
    }
    if (p->nworkers > 1) {
        rc = workers_start(p, (unsigned)p->nworkers);
        if (rc < 0) {
            goto fail;
        }
    }
    *out = p;
    return 0;
fail:
    workers_stop(p);
    for (size_t i = 0; i < p->nls; i++) {
        evconnlistener_free(p->ls[i]);
    }
    free(p->ns_prefix);
    free(p->backend_override);
    gw_dns_cache_free(p->dns_cache);
    free(p);
    return rc;
}

void gw_proxy_shutdown(struct gw_proxy *p)
{
    if (p == NULL || p->stopping) {
        return;
    }
    worker_shutdown(p);
    for (size_t i = 1; i < p->nworkers; i++) {
        worker_request(p->workers[i], GW_CTL_SHUTDOWN);
    }
}

void gw_proxy_free(struct gw_proxy *p)
{
    if (p == NULL) {
        return;
    }
    gw_proxy_shutdown(p);
    workers_stop(p);
    while (p->conns) {
        conn_free(p->conns);
    }
    gw_dns_cache_free(p->dns_cache);
    free(p->ns_prefix);
    free(p->backend_override);
    free(p);
}

int gw_proxy_reload_certs(struct gw_proxy *p)
{
    return gw_certs_reload(p->certs);
}

static void stats_add(struct gw_proxy_stats *sum, const struct gw_proxy *w)
{
    const uint64_t *src = (const uint64_t *)&w->st;
    uint64_t *dst = (uint64_t *)sum;
    for (size_t k = 0; k < sizeof(*sum) / sizeof(uint64_t); k++) {
        dst[k] += __atomic_load_n(&src[k], __ATOMIC_RELAXED);
    }
}

void gw_proxy_get_stats(struct gw_proxy *p, struct gw_proxy_stats *out)
{
    struct gw_proxy_stats sum;
    memset(&sum, 0, sizeof(sum));
    stats_add(&sum, p);
    for (size_t i = 1; i < p->nworkers && p->workers != NULL; i++) {
        stats_add(&sum, p->workers[i]);
    }
    *out = sum;
}

int gw_proxy_get_worker_stats(struct gw_proxy *p, size_t i, struct gw_proxy_stats *out)
{
    if (i > 0 && (p->workers == NULL || i >= p->nworkers)) {
        return -EINVAL;
    }
    struct gw_proxy_stats one;
    memset(&one, 0, sizeof(one));
    stats_add(&one, i == 0 ? p : p->workers[i]);
    *out = one;
    return 0;
}

int gw_proxy_listen_port(struct gw_proxy *p, size_t i)
{
    if (i >= p->nls || p->ls[i] == NULL) {
        return -EINVAL;
    }
    return p->ports[i];
}
