/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Custom-domain routing for SNIs outside every certificate's base domain (spec host-side.md
 * §4.2 step 4): the app address comes from DNS TXT `_dstack-app-address.<sni>` (with
 * `app_address_ns_compat` also `_tapp-address.<sni>`, the prefixed record winning), falling
 * back to `<prefix>-wildcard.<parent of sni>`; the record text is `<app_id>:<port>` and the
 * connection is then passed through. res_query(3) blocks, so each lookup runs on a short-lived
 * detached thread that hands its answer back to the event loop through a socketpair; the
 * request is reference-counted so a connection that times out can cancel and go away while
 * the thread finishes on its own. The answer bytes are parsed by lib/gateway.
 */
#include <arpa/nameser.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <resolv.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include <dstack/gateway.h>

#include "gw_proxy.h"

#define GW_DNS_NAME_MAX   400
#define GW_DNS_ANSWER_MAX 8192
#define GW_COMPAT_PREFIX  "_tapp-address"

static atomic_int inflight; /* daemon-wide count of running lookup threads */

struct gw_dns_req {
    atomic_int refs;
    int sv[2]; /* sv[0]: event loop side, sv[1]: thread side */
    struct event *ev;
    gw_dns_cb cb;
    void *arg;
    char sni[DS_GW_SNI_MAX + 1];
    char prefix[64];
    bool compat;
    /* result, written by the thread before it signals */
    int rc;
    char app_id[DS_GW_ID_MAX + 1];
    uint16_t port;
};

static void req_unref(struct gw_dns_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1) {
        free(r);
    }
}

static int query_txt(struct __res_state *rs, const char *name, char *app_id, uint16_t *port)
{
    uint8_t answer[GW_DNS_ANSWER_MAX];
    int n = res_nquery(rs, name, ns_c_in, ns_t_txt, answer, sizeof(answer));
    if (n < 0) {
        return -DS_E_NOT_FOUND;
    }
    if ((size_t)n > sizeof(answer)) {
        n = (int)sizeof(answer); /* truncated answer: parse what fits */
    }
    return ds_gw_dns_txt_app_address(answer, (size_t)n, app_id, DS_GW_ID_MAX + 1, port);
}

static void *lookup_thread(void *arg)
{
    struct gw_dns_req *r = arg;
    struct __res_state rs;
    char name[GW_DNS_NAME_MAX];
    memset(&rs, 0, sizeof(rs));
    r->rc = -DS_E_NOT_FOUND;
    if (res_ninit(&rs) == 0) {
        snprintf(name, sizeof(name), "%s.%s", r->prefix, r->sni);
        r->rc = query_txt(&rs, name, r->app_id, &r->port);
        if (r->rc < 0 && r->compat) {
            snprintf(name, sizeof(name), "%s.%s", GW_COMPAT_PREFIX, r->sni);
            r->rc = query_txt(&rs, name, r->app_id, &r->port);
        }
        const char *dot = strchr(r->sni, '.');
        if (r->rc < 0 && dot != NULL && dot[1] != '\0') {
            snprintf(name, sizeof(name), "%s-wildcard.%s", r->prefix, dot + 1);
            r->rc = query_txt(&rs, name, r->app_id, &r->port);
        }
        res_nclose(&rs);
    }
    char one = 1;
    (void)!send(r->sv[1], &one, 1, MSG_NOSIGNAL);
    close(r->sv[1]);
    atomic_fetch_sub(&inflight, 1);
    req_unref(r);
    return NULL;
}

static void on_answer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct gw_dns_req *r = arg;
    gw_dns_cb cb = r->cb;
    void *cb_arg = r->arg;
    int rc = r->rc;
    char app_id[DS_GW_ID_MAX + 1];
    uint16_t port = r->port;
    memcpy(app_id, r->app_id, sizeof(app_id));
    gw_dns_lookup_cancel(r); /* releases the loop side; cb may free its owner */
    cb(rc, app_id, port, cb_arg);
}

int gw_dns_lookup_start(struct event_base *base, const char *sni, const char *prefix, bool compat,
                        gw_dns_cb cb, void *arg, struct gw_dns_req **out)
{
    if (strlen(sni) > DS_GW_SNI_MAX || strlen(prefix) >= sizeof(((struct gw_dns_req *)0)->prefix)) {
        return -EINVAL;
    }
    if (atomic_fetch_add(&inflight, 1) >= GW_DNS_INFLIGHT_MAX) {
        atomic_fetch_sub(&inflight, 1);
        return -EAGAIN;
    }
    int rc = -ENOMEM;
    struct gw_dns_req *r = calloc(1, sizeof(*r));
    if (r == NULL) {
        goto fail;
    }
    atomic_init(&r->refs, 2);
    r->cb = cb;
    r->arg = arg;
    r->compat = compat;
    strcpy(r->sni, sni);
    strcpy(r->prefix, prefix);
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, r->sv) < 0) {
        rc = -errno;
        free(r);
        goto fail;
    }
    r->ev = event_new(base, r->sv[0], EV_READ, on_answer, r);
    if (r->ev == NULL || event_add(r->ev, NULL) < 0) {
        goto fail_fds;
    }
    pthread_attr_t attr;
    pthread_t tid;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int prc = pthread_create(&tid, &attr, lookup_thread, r);
    pthread_attr_destroy(&attr);
    if (prc != 0) {
        rc = -prc;
        goto fail_fds;
    }
    *out = r;
    return 0;
fail_fds:
    if (r->ev != NULL) {
        event_free(r->ev);
    }
    close(r->sv[0]);
    close(r->sv[1]);
    free(r);
fail:
    atomic_fetch_sub(&inflight, 1);
    return rc;
}

void gw_dns_lookup_cancel(struct gw_dns_req *r)
{
    if (r == NULL) {
        return;
    }
    event_free(r->ev);
    r->ev = NULL;
    close(r->sv[0]);
    req_unref(r);
}

/* ---- answer cache (event-loop thread only) -------------------------------------------------- */

struct gw_dns_cache_entry {
    char sni[DS_GW_SNI_MAX + 1];
    int rc;
    char app_id[DS_GW_ID_MAX + 1];
    uint16_t port;
    uint64_t expires_ms;
    uint64_t used_ms;
};

struct gw_dns_cache {
    struct gw_dns_cache_entry e[GW_DNS_CACHE_SIZE];
};

int gw_dns_cache_new(struct gw_dns_cache **out)
{
    struct gw_dns_cache *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    *out = c;
    return 0;
}

void gw_dns_cache_free(struct gw_dns_cache *c)
{
    free(c);
}

int gw_dns_cache_get(struct gw_dns_cache *c, const char *sni, uint64_t now_ms, char *app_id,
                     uint16_t *port)
{
    for (size_t i = 0; i < GW_DNS_CACHE_SIZE; i++) {
        struct gw_dns_cache_entry *e = &c->e[i];
        if (e->sni[0] == '\0' || strcmp(e->sni, sni) != 0) {
            continue;
        }
        if (now_ms >= e->expires_ms) {
            e->sni[0] = '\0';
            return 0;
        }
        e->used_ms = now_ms;
        if (e->rc < 0) {
            return e->rc;
        }
        memcpy(app_id, e->app_id, sizeof(e->app_id));
        *port = e->port;
        return 1;
    }
    return 0;
}

void gw_dns_cache_put(struct gw_dns_cache *c, const char *sni, int rc, const char *app_id,
                      uint16_t port, uint64_t now_ms)
{
    if (strlen(sni) > DS_GW_SNI_MAX) {
        return;
    }
    /* Same name, else a free slot, else the least recently used. */
    size_t slot = 0;
    for (size_t i = 0; i < GW_DNS_CACHE_SIZE; i++) {
        struct gw_dns_cache_entry *e = &c->e[i];
        if (e->sni[0] != '\0' && strcmp(e->sni, sni) == 0) {
            slot = i;
            break;
        }
        if (e->sni[0] == '\0' || now_ms >= e->expires_ms) {
            slot = i;
        } else if (c->e[slot].sni[0] != '\0' && now_ms < c->e[slot].expires_ms &&
                   e->used_ms < c->e[slot].used_ms) {
            slot = i;
        }
    }
    struct gw_dns_cache_entry *e = &c->e[slot];
    strcpy(e->sni, sni);
    e->rc = rc < 0 ? rc : 0;
    if (rc == 0) {
        snprintf(e->app_id, sizeof(e->app_id), "%s", app_id);
        e->port = port;
    }
    e->used_ms = now_ms;
    e->expires_ms = now_ms + (rc < 0 ? GW_DNS_NEGATIVE_TTL_MS : GW_DNS_POSITIVE_TTL_MS);
}
