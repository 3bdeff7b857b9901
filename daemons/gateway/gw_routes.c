/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy's routing table: instance_id -> {app_id, WireGuard ip, latest handshake, live
 * connection count}. The control plane writes it (RegisterCvm, recycle, handshake refresh);
 * the proxy reads it once per connection to pick backends (spec host-side.md §4.2 step 5:
 * instance_id match, else the app's instances with a handshake younger than handshake_stale,
 * freshest first, top connect_top_n; connect_top_n = 0 picks one at random). Each instance
 * also carries its effective port policy (admin override > instance-reported, resolved by the
 * control plane; none = unknown, fail closed), which gw_routes_lookup_port applies per port and
 * which asks the fetch hook for the policy of an instance that has none. A mutex makes it safe
 * to fill from another thread; lookups copy entries out so nothing is borrowed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "gw_proxy.h"

#define GW_ROUTES_MAX 65536

struct route {
    struct gw_backend be;
    struct gw_port_policy *policy; /* effective policy; NULL = unknown */
};

struct gw_routes {
    pthread_mutex_t lock;
    struct route *v;
    size_t count, cap;
    gw_routes_fetch_fn fetch;
    void *fetch_arg;
};

int gw_routes_new(struct gw_routes **out)
{
    struct gw_routes *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_init(&rt->lock, NULL);
    *out = rt;
    return 0;
}

void gw_routes_free(struct gw_routes *rt)
{
    if (rt == NULL) {
        return;
    }
    pthread_mutex_destroy(&rt->lock);
    for (size_t i = 0; i < rt->count; i++) {
        free(rt->v[i].policy);
    }
    free(rt->v);
    free(rt);
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'))) {
            return false;
        }
    }
    return true;
}

static bool valid_ip(const char *s)
{
    unsigned char buf[16];
    return strlen(s) <= GW_IP_TEXT_MAX &&
           (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1);
}

static struct route *find(struct gw_routes *rt, const char *instance_id)
{
    for (size_t i = 0; i < rt->count; i++) {
        if (strcmp(rt->v[i].be.instance_id, instance_id) == 0) {
            return &rt->v[i];
        }
    }
    return NULL;
}

static struct gw_backend *find_be(struct gw_routes *rt, const char *instance_id)
{
    struct route *r = find(rt, instance_id);
    return r != NULL ? &r->be : NULL;
}

int gw_routes_set_instance(struct gw_routes *rt, const char *app_id, const char *instance_id,
                           const char *ip, int64_t last_handshake)
{
    if (!valid_id(app_id) || !valid_id(instance_id) || !valid_ip(ip)) {
        return -EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r == NULL) {
        if (rt->count == rt->cap) {
            size_t cap = rt->cap ? rt->cap * 2 : 16;
            if (cap > GW_ROUTES_MAX) {
                rc = -ENOSPC;
                goto out;
            }
            struct route *nv = realloc(rt->v, cap * sizeof(*nv));
            if (nv == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            rt->v = nv;
            rt->cap = cap;
        }
        r = &rt->v[rt->count++];
        memset(r, 0, sizeof(*r)); /* policy unknown until the control plane sets it */
        strcpy(r->be.instance_id, instance_id);
    }
    strcpy(r->be.app_id, app_id);
    strcpy(r->be.ip, ip);
    r->be.last_handshake = last_handshake;
out:
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int gw_routes_set_handshake(struct gw_routes *rt, const char *instance_id, int64_t last_handshake)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r != NULL) {
        r->be.last_handshake = last_handshake;
        rc = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int gw_routes_remove_instance(struct gw_routes *rt, const char *instance_id)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r != NULL) {
        free(r->policy);
        *r = rt->v[--rt->count];
        rc = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int gw_routes_set_policy(struct gw_routes *rt, const char *instance_id,
                         const struct gw_port_policy *p)
{
    struct gw_port_policy *copy = NULL;
    if (p != NULL) {
        copy = malloc(sizeof(*copy));
        if (copy == NULL) {
            return -ENOMEM;
        }
        *copy = *p;
    }
    int rc = -ENOENT;
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r != NULL) {
        free(r->policy);
        r->policy = copy;
        copy = NULL;
        rc = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    free(copy);
    return rc;
}

int gw_routes_get_policy(struct gw_routes *rt, const char *instance_id, struct gw_port_policy *out)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r != NULL) {
        rc = r->policy != NULL;
        if (rc) {
            *out = *r->policy;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

void gw_routes_set_fetch_hook(struct gw_routes *rt, gw_routes_fetch_fn fn, void *arg)
{
    pthread_mutex_lock(&rt->lock);
    rt->fetch = fn;
    rt->fetch_arg = arg;
    pthread_mutex_unlock(&rt->lock);
}

/* The port policy filter for one route (under the lock). Fills be->pp when allowed. */
static bool policy_admits(struct gw_routes *rt, const struct route *r, uint16_t port,
                          struct gw_backend *be, struct gw_routes_denial *d)
{
    bool ok = r->policy != NULL && gw_port_policy_allows(r->policy, port);
    if (!ok) {
        if (d->denied++ == 0) {
            strcpy(d->instance_id, r->be.instance_id);
        }
        if (r->policy == NULL) {
            d->unknown++;
            if (rt->fetch != NULL) {
                rt->fetch(r->be.instance_id, r->be.ip, rt->fetch_arg);
            }
        }
        return false;
    }
    *be = r->be;
    be->pp = gw_port_policy_wants_pp(r->policy, port);
    return true;
}

static int by_freshness(const void *a, const void *b)
{
    const struct gw_backend *x = a, *y = b;
    if (x->last_handshake != y->last_handshake) {
        return x->last_handshake > y->last_handshake ? -1 : 1;
    }
    return strcmp(x->instance_id, y->instance_id);
}

/* d == NULL: no port policy filter (gw_routes_lookup). */
static int lookup(struct gw_routes *rt, const char *id, uint16_t port, int64_t now,
                  int64_t stale_secs, unsigned top_n, struct gw_backend *out, size_t max,
                  struct gw_routes_denial *d)
{
    if (id == NULL || out == NULL || max == 0) {
        return -EINVAL;
    }
    struct gw_backend cand[GW_ROUTES_LOOKUP_MAX], be;
    size_t n = 0;
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, id);
    if (r != NULL) {
        /* an instance id names exactly that instance, healthy or not */
        int found = 1;
        if (d == NULL) {
            out[0] = r->be;
        } else if (policy_admits(rt, r, port, &be, d)) {
            out[0] = be;
        } else {
            found = 0;
        }
        pthread_mutex_unlock(&rt->lock);
        return found;
    }
    for (size_t i = 0; i < rt->count; i++) {
        const struct route *e = &rt->v[i];
        if (strcmp(e->be.app_id, id) != 0) {
            continue;
        }
        if (stale_secs > 0 &&
            (e->be.last_handshake <= 0 || now - e->be.last_handshake >= stale_secs)) {
            continue;
        }
        if (d == NULL) {
            be = e->be;
        } else if (!policy_admits(rt, e, port, &be, d)) {
            continue;
        }
        if (n < GW_ROUTES_LOOKUP_MAX) {
            cand[n++] = be;
        } else {
            /* Keep the freshest GW_ROUTES_LOOKUP_MAX: replace the stalest if fresher. */
            size_t worst = 0;
            for (size_t k = 1; k < n; k++) {
                if (cand[k].last_handshake < cand[worst].last_handshake) {
                    worst = k;
                }
            }
            if (be.last_handshake > cand[worst].last_handshake) {
                cand[worst] = be;
            }
        }
    }
    pthread_mutex_unlock(&rt->lock);
    if (n == 0) {
        return 0;
    }
    if (top_n == 0) {
        uint32_t rnd = 0;
        if (RAND_bytes((unsigned char *)&rnd, sizeof(rnd)) != 1) {
            rnd = (uint32_t)now;
        }
        out[0] = cand[rnd % n];
        return 1;
    }
    qsort(cand, n, sizeof(cand[0]), by_freshness);
    size_t k = n < top_n ? n : top_n;
    if (k > max) {
        k = max;
    }
    memcpy(out, cand, k * sizeof(cand[0]));
    return (int)k;
}

int gw_routes_lookup(struct gw_routes *rt, const char *id, int64_t now, int64_t stale_secs,
                     unsigned top_n, struct gw_backend *out, size_t max)
{
    return lookup(rt, id, 0, now, stale_secs, top_n, out, max, NULL);
}

int gw_routes_lookup_port(struct gw_routes *rt, const char *id, uint16_t port, int64_t now,
                          int64_t stale_secs, unsigned top_n, struct gw_backend *out, size_t max,
                          struct gw_routes_denial *denial)
{
    if (denial == NULL) {
        return -EINVAL;
    }
    memset(denial, 0, sizeof(*denial));
    return lookup(rt, id, port, now, stale_secs, top_n, out, max, denial);
}

int gw_routes_list(struct gw_routes *rt, struct gw_backend *out, size_t max)
{
    pthread_mutex_lock(&rt->lock);
    size_t n = rt->count < max ? rt->count : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = rt->v[i].be;
    }
    pthread_mutex_unlock(&rt->lock);
    return (int)n;
}

void gw_routes_conn_inc(struct gw_routes *rt, const char *instance_id)
{
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r != NULL) {
        r->be.num_connections++;
    }
    pthread_mutex_unlock(&rt->lock);
}

void gw_routes_conn_dec(struct gw_routes *rt, const char *instance_id)
{
    pthread_mutex_lock(&rt->lock);
    struct route *r = find(rt, instance_id);
    if (r != NULL && r->be.num_connections > 0) {
        r->be.num_connections--;
    }
    pthread_mutex_unlock(&rt->lock);
}

int gw_routes_conn_reserve(struct gw_routes *rt, const struct gw_backend *cand, size_t n,
                           uint32_t limit)
{
    if (cand == NULL || n == 0) {
        return -EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&rt->lock);
    if (limit > 0) {
        /* Re-read the counters under the lock: the copies in cand may be stale, and another
         * worker may be reserving for the same app right now. */
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++) {
            const struct gw_backend *b = find_be(rt, cand[i].instance_id);
            sum += b != NULL ? b->num_connections : 0;
        }
        if (sum >= limit) {
            rc = -DS_E_LIMIT;
            goto out;
        }
    }
    struct gw_backend *b = find_be(rt, cand[0].instance_id);
    if (b != NULL) {
        b->num_connections++;
    }
out:
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

void gw_routes_conn_move(struct gw_routes *rt, const char *from_instance, const char *to_instance)
{
    if (strcmp(from_instance, to_instance) == 0) {
        return;
    }
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *f = find_be(rt, from_instance), *t = find_be(rt, to_instance);
    if (f != NULL && f->num_connections > 0) {
        f->num_connections--;
    }
    if (t != NULL) {
        t->num_connections++;
    }
    pthread_mutex_unlock(&rt->lock);
}
